"""The resource model: fitted to the recorded synthesis, monotone in what it counts, and the presets'
verdicts against their devices; a synth-marked test re-synthesises one calibration point."""

import dataclasses
import json

import pytest

from accelml.bitstreams import resources
from accelml.bitstreams.calibrate import engine_config
from accelml.hdl.config import PRESETS, preset
from accelml.hdl.engine.top import file_plan
from accelml.hdl.isa import Space


def test_fit_follows_every_calibration_point():
    """Four sizes per width over-determine a*N^2 + b*N + c: the fit stays within 5 % of each."""
    cal = resources.calibration()
    for (flow, n, m), v in cal.items():
        if flow.endswith("nodsp"):
            continue
        for key in ("logic", "ffs", "mult"):
            assert resources._fit(flow, key, n, m) == pytest.approx(v[key], rel=0.05, abs=2), (flow, n, m, key)


def test_costs_grow_with_macs_mantissa_and_register_files():
    a10 = preset("a10")
    small = resources.estimate(dataclasses.replace(a10, tiles=8, mrf_tiles=1536))
    big = resources.estimate(dataclasses.replace(a10, tiles=16, mrf_tiles=3072))
    assert big.logic > small.logic and big.multipliers >= small.multipliers and big.ram_blocks > small.ram_blocks
    narrow = resources.estimate(dataclasses.replace(a10, tiles=8, mrf_tiles=1536, mantissa_bits=3))
    assert narrow.logic < small.logic
    more_vrf = resources.estimate(dataclasses.replace(a10, tiles=8, mrf_tiles=1536, vrf_vectors=4 * a10.vrf_vectors))
    assert more_vrf.ram_blocks > small.ram_blocks


def test_products_beyond_the_hard_multipliers_cost_logic():
    a10 = preset("a10")
    dev = resources.DEVICES["10AX115"]
    parts = resources.estimate(a10).parts  # the MFU's, pool's and control's multipliers do not depend on T
    left = dev.multipliers - round(parts["mfu"]["mult"] + parts["control"]["mult"] + parts["pool"]["mult"])
    t_at_limit = left // (a10.native_dim ** 2)
    at = resources.estimate(resources.scaled(a10, t_at_limit))
    over = resources.estimate(resources.scaled(a10, t_at_limit + 1))
    assert at.lut_multiplied_macs == 0 and over.lut_multiplied_macs > 0
    one_tile = over.parts["tiles"]["logic"] / (t_at_limit + 1)
    assert over.logic - at.logic > one_tile  # more than one tile engine's own logic


def test_device_presets_fit_their_devices_with_files_counted_as_built():
    """ecp5, a10 and s10 fit their devices whole. ecp5 is the largest engine that fits with its MRF
    scaled per tile engine (resources.scaled); a10 and s10 are the fastest on ResNet-50 of the tile
    counts measured (bitstreams/README.md: more tile engines fit, whose divisors cut its powers of
    two worse), no smaller than the largest by more than a third. Their register files are counted
    as the RTL builds them: a banked MRF, the VRF read through ``vrf_reads`` ports (copies, not T
    banks), one write port per file part."""
    for name in resources.PRESET_DEVICES:
        cfg = PRESETS[name]
        assert resources.estimate(cfg).fits, name
        largest = resources.largest_tiles(cfg)
        assert largest == cfg.tiles if name == "ecp5" else cfg.tiles <= largest < 1.34 * cfg.tiles, name
    for name in ("a10", "s10"):
        cfg = PRESETS[name]
        dev = resources.DEVICES[resources.PRESET_DEVICES[name]]
        assert cfg.file_ports == "shared" and cfg.mrf_banked and 0 < cfg.vrf_reads < cfg.tiles, name
        counted, built = resources.file_blocks(cfg, dev), resources.file_blocks(cfg, dev, banked=False)
        assert counted[Space.VRF] == built[Space.VRF] and counted[Space.FVRF] == built[Space.FVRF], name
        assert file_plan(cfg).write_ports() == {space: 1 for space in Space}, name


def test_mfu_cost_is_per_lane():
    """The MFU synthesised at two native dimensions costs the same per lane (within 5 %)."""
    cal = resources.calibration(block="Mfu")
    pts = sorted((n, v) for (f, n, _), v in cal.items() if f == "ecp5")
    assert len(pts) >= 2
    (n0, a), (n1, b) = pts[0], pts[-1]
    for key in ("logic", "mult"):
        assert b[key] / n1 == pytest.approx(a[key] / n0, rel=0.05), key


def test_engine_record_ram_is_register_files_and_instruction_memory():
    """The whole-engine synthesis's DP16KD are exactly the model's register files (a copy per read
    port the RTL builds) and the instruction memory: the RAM part of the model agrees with Yosys."""
    ecp5 = resources.DEVICES["LFE5U-85F"]
    recs = resources._engine_records()
    assert len(recs) >= 2
    for cfg, cells in recs:
        want = resources.register_file_blocks(cfg, ecp5) + resources.control_overhead(cfg, ecp5)["ram"]
        assert cells["ram"] == want, cfg.name


def test_the_model_reproduces_the_whole_engine_it_is_calibrated_on():
    """At each whole-engine record's configuration the model's logic, flip-flops and (before any
    spill to LUTs) multipliers are the measured ones: the rest of the engine is what the tile
    engines and MFU do not explain, and nothing is counted twice. So the ecp5 preset's verdict is
    its synthesis's."""
    ecp5 = resources.DEVICES["LFE5U-85F"]
    for cfg, cells in resources._engine_records():
        big = dataclasses.replace(ecp5, logic=10**9, ffs=10**9, multipliers=10**6, ram_blocks=10**6)
        est = resources.estimate(cfg, big)
        assert est.logic == pytest.approx(cells["logic"], rel=1e-9), cfg.name
        assert est.ffs == pytest.approx(cells["ffs"], rel=1e-9), cfg.name
        assert est.multipliers == cells["mult"] and est.ram_blocks == cells["ram"], cfg.name
    from accelml.bitstreams import engine_synth

    rec = engine_synth.recorded()["ecp5"]
    measured = all(used <= avail for used, avail in engine_synth.fit(rec).values())
    assert resources.estimate(PRESETS["ecp5"]).fits == measured


def test_replicated_files_cost_a_copy_per_read_port_and_banks_do_not():
    """A copy per read port the RTL builds: with shared ports, T for the MVU on the VRF and MRF and
    one for the rest, and on the FVRF one for the MFU's second operand beside the one the rest share
    (the MVU's sums read ahead among them); with a port per unit, one per reader, the MVU's FVRF read
    on the MFU's (layouts.SHARED_READS)."""
    from accelml.hdl.engine.top import file_plan
    from accelml.hdl.isa import Space

    ecp5 = resources.DEVICES["LFE5U-85F"]
    cfg = dataclasses.replace(preset("ecp5"), tiles=2)
    assert cfg.file_ports == "shared"
    assert file_plan(cfg).read_ports() == {Space.VRF: 3, Space.MRF: 3, Space.FVRF: 2}
    vec = cfg.native_dim * (cfg.mantissa_bits + 1) + cfg.exponent_bits
    copy = {Space.VRF: resources._ram_blocks(vec, cfg.vrf_vectors, ecp5),
            Space.MRF: resources._ram_blocks(cfg.native_dim * vec, cfg.mrf_tiles, ecp5),
            Space.FVRF: resources._ram_blocks(32 * cfg.native_dim, cfg.fvrf_vectors, ecp5)}
    total = resources.register_file_blocks(cfg, ecp5)
    assert total == 3 * copy[Space.VRF] + 3 * copy[Space.MRF] + 2 * copy[Space.FVRF]
    assert resources.register_file_blocks(cfg, ecp5, read_ports=1) == sum(copy.values())
    # VRF: store, mfu (the pool reads through the MFU's port), the MVU's T; FVRF: store, mfu with mvu, mfu_b
    per_unit = dataclasses.replace(cfg, file_ports="unit")
    assert resources.register_file_blocks(per_unit, ecp5) == 4 * copy[Space.VRF] + 3 * copy[Space.MRF] + 3 * copy[
        Space.FVRF]
    assert resources.register_file_blocks(cfg, ecp5, banked=True) < total
    # on Intel the VRF and MRF are counted banked; the FVRF, which the MVU no longer reads T times a
    # cycle, as built: a copy per read port (store, the MFU's shared with the MVU's sums, mfu_b; one
    # fewer when the store shares the MFU's too)
    shared = dataclasses.replace(preset("a10"), file_parts=1)
    dev = resources.DEVICES[resources.PRESET_DEVICES["a10"]]
    unit = dataclasses.replace(shared, file_ports="unit")
    assert file_plan(unit).read_ports()[Space.FVRF] == 3 and file_plan(shared).read_ports()[Space.FVRF] == 2
    fvrf = resources._ram_blocks(32 * shared.native_dim * shared.mfu_width, shared.fvrf_vectors // shared.mfu_width,
                                 dev)
    assert resources.file_blocks(unit, dev)[Space.FVRF] - resources.file_blocks(shared, dev)[Space.FVRF] == fvrf


def test_largest_tiles_fits_and_one_more_does_not():
    for name in resources.PRESET_DEVICES:
        cfg = PRESETS[name]
        t = resources.largest_tiles(cfg)
        assert t >= 1, name
        assert resources.estimate(resources.scaled(cfg, t)).fits
        assert not resources.estimate(resources.scaled(cfg, t + 1)).fits


def test_table_names_every_device_preset_and_its_verdict():
    text = resources.table()
    for name, dev in resources.PRESET_DEVICES.items():
        row = next(r for r in text.splitlines() if r.startswith(f"| {name} |"))
        assert resources.DEVICES[dev].name in row
        assert ("yes" in row) == resources.estimate(PRESETS[name]).fits


def test_a_preset_without_a_device_is_refused():
    with pytest.raises(ValueError, match="names no device"):
        resources.estimate(preset("tiny"))


@pytest.mark.synth
def test_recorded_calibration_matches_a_fresh_synthesis():
    from accelml.bitstreams.synth import synthesize
    from accelml.hdl.tile_engine import TileEngine

    rec = next(r for r in json.loads(resources._CAL.read_text())["records"]
               if (r["flow"], r["native_dim"], r["mantissa_bits"]) == ("alm", 4, 7))
    got = synthesize(TileEngine(engine_config(4, 7)), flow="alm")
    assert got.cells == rec["cells"]


def test_readme_table_is_the_models_output():
    readme = (resources._CAL.parent / "README.md").read_text()
    table = readme.split("<!-- table -->\n", 1)[1].split("\n<!-- /table -->", 1)[0]
    assert table == resources.table()


def test_mux_bits_count_the_crossbars_the_register_files_build():
    """One wide user reading and writing W entries: two crossbars of W lanes x the entry's bits; a
    one-entry reader of the banked file adds one entry's select; no wide user, no multiplexers
    (``FilePlan``: the ports ``RegisterFiles`` builds, counted without building them)."""
    from accelml.hdl.engine.regfiles import FilePlan
    from accelml.hdl.isa import Space

    cfg = engine_config(2, 7, 4)
    entry = 32 * cfg.native_dim
    assert FilePlan(cfg, {"u": {Space.FVRF: "rw"}}, {"u": 4}).mux_bits() == 2 * 4 * entry
    assert FilePlan(cfg, {"u": {Space.FVRF: "rw"}, "r": {Space.FVRF: "r"}, "w": {Space.FVRF: "w"}},
                    {"u": 4}).mux_bits() == 2 * 4 * entry + entry
    three = FilePlan(cfg, {"u": {Space.FVRF: "rw"}}, {"u": 4}, wide={"t": 3})
    assert three.mux_bits() == 2 * 4 * entry + 3 * entry
    assert FilePlan(cfg, {"u": {Space.FVRF: "rw"}}).mux_bits() == 0


def test_crossbars_cost_what_one_wide_port_measured():
    """At a measured width the crossbars cost the engine's multiplexer bits at the measured per-bit
    cost; none at W = 1; more per bit as W grows (a W:1 multiplexer per bit)."""
    from accelml.hdl.engine.top import file_plan

    a10 = dataclasses.replace(preset("a10"), file_parts=1)  # whole files: no part selects
    dev = resources.DEVICES["10AX115"]
    per = resources.wide_port_costs("alm")
    assert sorted(per) == [2, 4, 8, 16]
    assert [per[w]["logic"] for w in sorted(per)] == sorted(per[w]["logic"] for w in per)
    bits = file_plan(a10).mux_bits()
    assert resources.crossbar_cost(a10, dev)["logic"] == pytest.approx(bits * per[a10.mfu_width]["logic"])
    assert resources.crossbar_cost(dataclasses.replace(a10, mfu_width=1), dev) == {"logic": 0.0, "ffs": 0.0}
    assert resources.estimate(a10).parts["crossbars"]["logic"] > 0


def test_parts_count_their_selects_and_the_model_follows_the_ecp5_synthesis_in_two_parts():
    """A file in P parts: each read port selects each bank's entry from P parts, each shared write
    port of k writers selects a writer for every part beyond the first (``part_mux_bits``); the
    reads' selects cost what the ``FileParts`` records measured, rising with P. The logic they add
    to the ecp5 engine in two parts is within 20 % of what its synthesis added."""
    from accelml.bitstreams import engine_synth
    from accelml.hdl.config import EngineConfig
    from accelml.hdl.engine.regfiles import FilePlan
    from accelml.hdl.isa import Space

    cfg = dataclasses.replace(engine_config(2, 7, 4), file_parts=4)
    entry = 32 * cfg.native_dim
    users = {"u": {Space.FVRF: "rw"}, "a": {Space.FVRF: "rw"}, "b": {Space.FVRF: "w"}}
    plan = FilePlan(cfg, users, {"u": 4}, shared={(Space.FVRF, True): ("a", "b")})
    assert plan.part_mux_bits() == {"read": {4: 2 * 4 * entry}, "write": {2: 3 * 4 * entry}}
    assert FilePlan(engine_config(2, 7, 4), users, {"u": 4}).part_mux_bits() == {"read": {}, "write": {}}
    for flow in ("ecp5", "alm"):
        per = resources.part_select_costs(flow)
        assert sorted(per) == [2, 4, 8]
        assert 0 < per[2]["logic"] < per[4]["logic"] < per[8]["logic"], flow
    recs = engine_synth.recorded()
    two, whole = EngineConfig.from_dict(recs["ecp5-parts2"]["config"]), EngineConfig.from_dict(recs["ecp5"]["config"])
    measured = [resources._cells("ecp5", recs[k]["cells"])["logic"] for k in ("ecp5-parts2", "ecp5")]
    modelled = [resources.estimate(c, resources.DEVICES["LFE5U-85F"]).logic for c in (two, whole)]
    added, model_added = measured[0] - measured[1], modelled[0] - modelled[1]
    assert 0.8 * added <= model_added <= 1.2 * added, (added, model_added)
