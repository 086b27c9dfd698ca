"""``accelml hdl emit``: the engine's Verilog and manifest, written atomically, never over what
the tool did not write."""

from __future__ import annotations

import hashlib
import json

from accelml.hdl.config import EngineConfig, preset
from accelml.hdl.emit import ENGINE_TOP
from accelml.runtime import cli


def emit(capsys, *argv):
    code = cli.main(["hdl", "emit", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_emit_writes_verilog_and_manifest(tmp_path, capsys):
    out = tmp_path / "tiny-rtl"
    code, text, err = emit(capsys, "--preset", "tiny", "-o", out, "--imem-depth", "512")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [f"{ENGINE_TOP}.v", "manifest.json"]
    m = json.loads((out / "manifest.json").read_text())
    verilog = (out / f"{ENGINE_TOP}.v").read_bytes()
    assert m["verilog_sha256"] == hashlib.sha256(verilog).hexdigest()
    assert f"module {ENGINE_TOP}(" in verilog.decode() or f"module {ENGINE_TOP} (" in verilog.decode()
    assert EngineConfig.from_dict(m["engine_config"]) == preset("tiny") and m["config_hash"] == preset("tiny").hash
    assert m["imem_depth"] == 512
    ports = {p["name"]: p for p in m["ports"]}
    assert ports["clk"] == {"name": "clk", "direction": "input", "width": 1}
    assert ports["mem__req__valid"]["direction"] == "output" and ports["mem__resp__payload"]["width"] == 64
    assert ports["imem_waddr"]["width"] == 9 and ports["imem_wdata"]["width"] == 64
    for p in m["ports"]:  # every port is declared in the Verilog with that width
        assert p["name"] in verilog.decode()
    # an earlier emit is replaced
    code, _, err = emit(capsys, "--preset", "tiny", "-o", out)
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["imem_depth"] == 4096


def test_emit_with_config_file(tmp_path, capsys):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(preset("tiny").to_json())
    code, _, err = emit(capsys, "--config", cfg_file, "-o", tmp_path / "out")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["config_hash"] == preset("tiny").hash


def test_emit_refuses_what_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = emit(capsys, "--preset", "tiny", "-o", mine)
    assert code == 19 and "mine: exists and is not an accelml hdl emit directory" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = emit(capsys, "--preset", "tiny", "-o", afile)
    assert code == 19 and afile.read_text() == "x"
    # an emit directory with something added is not replaced either
    out = tmp_path / "out"
    assert emit(capsys, "--preset", "tiny", "-o", out)[0] == 0
    (out / "extra.v").write_text("// mine")
    code, _, err = emit(capsys, "--preset", "tiny", "-o", out)
    assert code == 19 and "extra.v" in err and (out / "extra.v").read_text() == "// mine"


def test_emit_bad_parameters_are_one_line_errors(tmp_path, capsys):
    code, _, err = emit(capsys, "--preset", "nosuch", "-o", tmp_path / "a")
    assert code == 2 and err.count("\n") == 1 and "unknown preset 'nosuch'" in err
    code, _, err = emit(capsys, "--preset", "tiny", "-o", tmp_path / "b", "--imem-depth", "2000000")
    assert code == 2 and err.count("\n") == 1 and "imem_depth" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
