"""The CLI: asm / disasm / sim round trips, and one-line typed errors with exit codes."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import accelml.sim
from accelml.runtime import cli, demo

PROGRAMS = Path(accelml.sim.__file__).parent / "programs"


def test_asm_disasm_sim_round_trip(tmp_path, capsys):
    src = PROGRAMS / "dense_bias.s"
    binary = tmp_path / "dense.bin"
    assert cli.main(["asm", str(src), "-o", str(binary), "--preset", "tiny"]) == 0
    assert cli.main(["disasm", str(binary), "-o", str(tmp_path / "d.s")]) == 0
    again = tmp_path / "again.bin"
    assert cli.main(["asm", str(tmp_path / "d.s"), "-o", str(again)]) == 0
    assert again.read_bytes() == binary.read_bytes()

    # sim with memory loaded from files and dumped after the run
    from accelml.hdl.config import preset
    from accelml.sim import bfp
    from accelml.sim.layout import MemoryImage, weight_tiles

    cfg = preset("tiny")
    rng = np.random.default_rng(0)
    img = MemoryImage(cfg)
    img.put_bfp("x", bfp.quantize(rng.standard_normal(12), cfg), at=0)
    img.put_bfp("w", weight_tiles(bfp.quantize(rng.standard_normal((8, 12)), cfg), 1, 3), at=0x100)
    mem = img.build(extra=0x1000)
    (tmp_path / "mem.bin").write_bytes(mem.data.tobytes())
    capsys.readouterr()
    rc = cli.main(["sim", str(binary), "--load", f"0={tmp_path / 'mem.bin'}",
                   "--dump", f"0x800:10={tmp_path / 'y.bin'}"])
    out = capsys.readouterr().out
    assert rc == 0 and "instructions executed : 16" in out and "MACs                  : 96" in out
    assert len((tmp_path / "y.bin").read_bytes()) == 10
    assert (tmp_path / "y.bin").read_bytes() != bytes(10)


@pytest.mark.parametrize(
    "argv,code,message",
    [
        (["asm", "{bad}"], 4, "bad.s:2:1: unknown mnemonic 'bogus'"),
        (["asm", "{missing}"], 74, "missing.s: No such file or directory"),
        (["config", "--preset", "tiny", "--format", "fp8"], 2, "unknown format 'fp8'"),
        (["config", "--preset", "nope"], 2, "unknown preset 'nope'"),
        (["disasm", "{garbage}"], 5, "not an accelml program"),
        (["sim", "{prog}", "--preset", "a10"], 5, "but this engine is a10"),
        (["sim", "{nohalt}"], 6, "ran past the end of the program without HALT"),
        (["sim", "{prog}", "--load", "zz=x"], 2, "--load address: 'zz' is not an integer"),
    ],
)
def test_errors_are_one_line_with_exit_codes(tmp_path, capsys, argv, code, message):
    (tmp_path / "bad.s").write_text("seti r1, 2\nbogus\n")
    (tmp_path / "garbage.bin").write_bytes(b"\x00\x01garbage")
    (tmp_path / "nohalt.s").write_text("nop\n")
    prog = tmp_path / "prog.bin"
    cli.main(["asm", str(PROGRAMS / "maxpool.s"), "-o", str(prog)])
    capsys.readouterr()
    paths = {"bad": tmp_path / "bad.s", "missing": tmp_path / "missing.s", "garbage": tmp_path / "garbage.bin",
             "prog": prog, "nohalt": tmp_path / "nohalt.s"}
    rc = cli.main([a.format(**paths) for a in argv])
    err = capsys.readouterr().err
    assert rc == code
    assert message in err and err.startswith("accelml: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_console_script_runs_without_traceback(tmp_path):
    bad = tmp_path / "bad.s"
    bad.write_text("ld vrf, r0\n")
    exe = Path(sys.executable).parent / "accelml"
    r = subprocess.run([str(exe), "asm", str(bad)], capture_output=True, text=True)
    assert r.returncode == 4 and "bad.s:1:11: ld takes 5 operand(s)" in r.stderr and "Traceback" not in r.stderr


def test_demo_photos_are_real_jpegs(tmp_path):
    from PIL import Image

    paths = demo.write_jpegs(demo.photos(), tmp_path / "photos")
    assert len(paths) >= 6 and "chelsea" in paths
    for p in paths.values():
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.size == (224, 224)
    assert demo.top([0.1, 0.5, 0.2, 0.5], k=3) == [1, 3, 2]


def test_demo_refuses_an_existing_work_directory(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert demo.main(["--workdir", str(tmp_path)]) == 2
    assert (tmp_path / "keep.txt").read_text() == "mine" and "exists" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_the_workflow_end_to_end(capsys):
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "Egyptian cat" in out and "top-1 agreement with FP32" in out and "deleted model" in out
