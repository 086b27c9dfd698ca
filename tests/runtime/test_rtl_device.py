"""runtime/device.py RtlDevice: packages on the Verilated engine, bit-exact against the functional
simulator, and every kind of bad input a typed one-line error in bounded time.

The packages are compiled for ``tiny`` from small graphs: an elementwise one (ReLU, a per-channel
bias, a residual add: ``ld``/``st``/``deq``/``qnt``/``vop``/``vact`` only, which this RTL executes)
and a small CNN (``mvc``/``pool``), which must match as soon as the engine executes those; until
then it is an expected failure, and only while ``mvc`` stops the engine with ``UNIMPLEMENTED``.
Broken packages are made by replacing a compiled package's program and re-signing its manifest,
so the package loader accepts them and the engine meets the fault.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from serve_util import small_cnn_onnx

from accelml.compiler import compile_model
from accelml.hdl.config import preset
from accelml.hdl.engine.status import ErrorCode
from accelml.hdl.errors import DestinationError, DeviceError, RtlError
from accelml.hdl.program import Program, assemble
from accelml.runtime import cli
from accelml.runtime.device import RtlDevice, RtlStats, is_fst
from accelml.runtime.package import MANIFEST, MANIFEST_HASH, load, manifest_digest, save_package
from accelml.sim import rtl
from accelml.sim.memory import ExternalMemory

pytestmark = pytest.mark.rtl
CFG = preset("tiny")


def elementwise_onnx() -> onnx.ModelProto:
    """y = relu(x) + b (per channel) + x on a (1, 8, 4, 4) input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])
    b = numpy_helper.from_array(np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8, 1, 1), "b")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "b"], ["a"]),
             helper.make_node("Add", ["a", "x"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "elt", [x], [y], [b]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def tools():
    rtl.require_tools()


@pytest.fixture(scope="module")
def elt_pkg(tmp_path_factory):
    path = tmp_path_factory.mktemp("rtl") / "elt.accel"
    save_package(compile_model(elementwise_onnx(), config=CFG, name="elt"), path)
    return path


@pytest.fixture(scope="module")
def x_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rtl") / "x.npy"
    np.save(path, np.random.default_rng(3).standard_normal((1, 8, 4, 4)).astype(np.float32) * 4)
    return path


def with_program(src: Path, dst: Path, text: str) -> Path:
    """A copy of package ``src`` whose (only) engine segment runs ``text`` instead, manifest re-signed."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / MANIFEST).read_text())
    (seg,) = [s for s in manifest["segments"] if s["kind"] == "engine"]
    blob = Program(assemble(text), CFG.hash).to_bytes()
    (dst / seg["program"]).write_bytes(blob)
    manifest["files"][seg["program"]] = hashlib.sha256(blob).hexdigest()
    manifest[MANIFEST_HASH] = manifest_digest(manifest)
    (dst / MANIFEST).write_text(json.dumps(manifest))
    return dst


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["run", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The CLI's error line (the build's progress lines may precede it); never a traceback."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("accelml:")]
    assert len(lines) == 1, err
    return lines[0]


# -- the same outputs as the functional simulator --------------------------------------------------

def test_cli_rtl_equals_funcsim(tools, elt_pkg, x_file, tmp_path, capsys):
    outs = {}
    for device in ("funcsim", "rtl"):
        out = tmp_path / f"{device}.npz"
        code, text, err = run_cli(capsys, elt_pkg, "--input", f"x={x_file}", "-o", out, "--device", device)
        assert code == 0, err
        outs[device] = dict(np.load(out))
    assert "RTL cycles" in text and "RTL busy cycles" in text and "mfu" in text
    # the run's progress line (capsys is no terminal: a line at its start and one at its end)
    assert re.search(r"^simulating the engine \([\d,]+ modelled cycles\): done in \d+ s$", err, re.M), err
    assert outs["rtl"].keys() == outs["funcsim"].keys() == {"y"}
    for name, ref in outs["funcsim"].items():
        assert outs["rtl"][name].tobytes() == ref.tobytes(), name


def test_python_api_rtl_stats(tools, elt_pkg, x_file):
    x = np.load(x_file)
    ref_model = load(elt_pkg)
    ref = ref_model.run({"x": x})
    model = load(elt_pkg, device="rtl")
    got = model.run({"x": x})
    assert got["y"].tobytes() == ref["y"].tobytes()
    stats = model.device.last_stats
    assert isinstance(stats, RtlStats)
    assert stats.instructions == ref_model.device.last_stats.instructions  # the RTL's own step count
    assert stats.modelled_cycles == ref_model.device.last_stats.cycles
    assert stats.cycles > 0 and stats.busy["mfu"] > 0 and stats.busy["dma_load"] > 0
    assert sum(stats.busy.values()) <= stats.cycles * len(stats.busy)
    again = model.run({"x": -x})  # a second run reuses the build and the cycle model's run
    assert again["y"].tobytes() == ref_model.run({"x": -x})["y"].tobytes()


def test_engine_on_two_threads_gives_the_same_outputs_and_cycles(tools, elt_pkg, x_file, tmp_path, capsys):
    x = np.load(x_file)
    one = load(elt_pkg, device="rtl")
    ref = one.run({"x": x})
    two = load(elt_pkg, device="rtl", threads=2)  # a build of its own (Verilator --threads 2)
    got = two.run({"x": x})
    assert got["y"].tobytes() == ref["y"].tobytes()
    assert two.device.last_stats.cycles == one.device.last_stats.cycles
    assert two.device.last_stats.busy == one.device.last_stats.busy
    out = tmp_path / "y.npz"
    code, _, err = run_cli(capsys, elt_pkg, "--input", f"x={x_file}", "-o", out, "--device", "rtl",
                           "--sim-threads", "2")
    assert code == 0, err
    assert np.load(out)["y"].tobytes() == ref["y"].tobytes()


@pytest.mark.parametrize("threads", [0, -1, 2.0, True, 65])
def test_bad_thread_count_is_a_device_error(threads):
    from accelml.hdl.errors import DeviceError

    with pytest.raises(DeviceError, match="threads"):
        RtlDevice(CFG, threads=threads)


def test_sim_threads_only_with_the_rtl_device(elt_pkg, x_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, elt_pkg, "--input", f"x={x_file}", "-o", tmp_path / "y.npz", "--sim-threads", "2")
    assert code != 0 and "--sim-threads" in one_error_line(err)
    assert not (tmp_path / "y.npz").exists()


@pytest.fixture(scope="module")
def cnn_pkg(tmp_path_factory):
    path = tmp_path_factory.mktemp("rtl") / "cnn.accel"
    save_package(compile_model(small_cnn_onnx(), config=CFG, name="cnn"), path)
    return path


def test_compiled_cnn_rtl_equals_funcsim(tools, cnn_pkg):
    """Every layer kind on the RTL (mvc, pool, the MFU, both DMAs): outputs byte for byte the
    functional simulator's, and the RTL's cycles and busy counts the cycle model's."""
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref_model = load(cnn_pkg)
    ref = ref_model.run({"input": x})
    model = load(cnn_pkg, device="rtl")
    got = model.run({"input": x})
    for name, v in ref.items():
        assert got[name].tobytes() == v.tobytes(), name
    stats, want = model.device.last_stats, ref_model.device.last_stats
    assert stats.busy["mvu"] > 0 and stats.busy["pool"] > 0
    assert stats.cycles == stats.modelled_cycles == want.cycles
    assert stats.busy == {k: want.busy.get(k, 0) for k in stats.busy}


# -- waveform --------------------------------------------------------------------------------------

def test_trace_refuses_a_foreign_file(tools, elt_pkg, x_file, tmp_path, capsys):
    mine = tmp_path / "notes.fst"
    mine.write_text("my notes")
    code, _, err = run_cli(capsys, elt_pkg, "--input", f"x={x_file}", "-o", tmp_path / "y.npz", "--device", "rtl",
                           "--trace", mine)
    assert code == DestinationError.exit_code
    assert "notes.fst" in one_error_line(err) and mine.read_text() == "my notes"
    assert not (tmp_path / "y.npz").exists()


def test_trace_writes_fst(tools, elt_pkg, x_file, tmp_path, capsys):
    trace = tmp_path / "run.fst"
    missing = rtl.fst_missing()  # Verilator's FST writer compiles against the LZ4 and zlib headers
    if missing:  # then --trace is a typed one-line error that names what is missing, and nothing is written
        code, _, err = run_cli(capsys, elt_pkg, "--input", f"x={x_file}", "-o", tmp_path / "y.npz", "--device",
                               "rtl", "--trace", trace)
        assert code == DeviceError.exit_code
        assert "FST" in one_error_line(err) and missing in one_error_line(err)
        assert list(tmp_path.iterdir()) == []
        pytest.skip(f"FST waveforms cannot be built here: {missing}")
    for _ in range(2):  # the second run replaces the waveform the first wrote
        code, _, err = run_cli(capsys, elt_pkg, "--input", f"x={x_file}", "-o", tmp_path / "y.npz", "--device",
                               "rtl", "--trace", trace)
        assert code == 0, err
        assert is_fst(trace.read_bytes()[:64]) and trace.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.fst", "y.npz"]  # no temporaries left


# -- bad input -------------------------------------------------------------------------------------

def test_refuses_package_for_another_preset(elt_pkg, x_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, elt_pkg, "--input", f"x={x_file}", "-o", tmp_path / "y.npz", "--device", "rtl",
                           "--preset", "ecp5")
    assert code == 12
    assert "built for EngineConfig tiny" in one_error_line(err) and "not for ecp5" in err


def test_refuses_config_the_rtl_cannot_build(tools, tmp_path, x_file, capsys):
    import dataclasses

    odd = dataclasses.replace(CFG, mem_port_bits=24, name="odd-port")
    pkg = tmp_path / "odd.accel"
    save_package(compile_model(elementwise_onnx(), config=odd, name="elt"), pkg)
    code, _, err = run_cli(capsys, pkg, "--input", f"x={x_file}", "-o", tmp_path / "y.npz", "--device", "rtl")
    assert code == RtlError.exit_code
    line = one_error_line(err)
    assert "cannot build EngineConfig odd-port" in line and "mem_port_bits" in line


def test_truncated_program_refused_by_loader(elt_pkg, x_file, tmp_path, capsys):
    pkg = shutil.copytree(elt_pkg, tmp_path / "cut.accel")
    prog = pkg / "seg0.prog"
    prog.write_bytes(prog.read_bytes()[:-8])
    code, _, err = run_cli(capsys, pkg, "--input", f"x={x_file}", "-o", tmp_path / "y.npz", "--device", "rtl")
    assert code == 12 and "seg0.prog does not match its hash" in one_error_line(err)


def test_program_without_halt_stops_past_end(tools, elt_pkg, x_file, tmp_path, capsys):
    pkg = with_program(elt_pkg, tmp_path / "nohalt.accel", "seti r1, 3\naddi r1, r1, 1\n")
    code, _, err = run_cli(capsys, pkg, "--input", f"x={x_file}", "-o", tmp_path / "y.npz", "--device", "rtl")
    assert code == RtlError.exit_code
    line = one_error_line(err)
    assert "instruction 2 (past the end of the 2-instruction program): PAST_END" in line


def test_illegal_word_stops_the_engine(tools):
    """A word no decoder accepts (the package loader refuses such a program; the device, given raw
    words, lets the engine meet it)."""
    device = RtlDevice(CFG)
    words = [int.from_bytes(b"\x02\x10" + bytes(6), "little"), 0x3F]  # seti r?, then opcode 63
    with pytest.raises(RtlError, match=r"instruction 1 \(undecodable word 0x000000000000003f\): ILLEGAL_INSN") as e:
        device.execute(words, ExternalMemory(CFG, 4096))
    assert (e.value.code, e.value.pc) == (ErrorCode.ILLEGAL_INSN, 1)


NEVER_HALTS = """
loop r0, 65535, 3
loop r0, 65535, 2
loop r0, 65535, 1
nop
halt
"""


def test_never_halting_program_cycle_budget(tools, elt_pkg, x_file, tmp_path, capsys):
    pkg = with_program(elt_pkg, tmp_path / "forever.accel", NEVER_HALTS)
    code, _, err = run_cli(capsys, pkg, "--input", f"x={x_file}", "-o", tmp_path / "y.npz", "--device", "rtl",
                           "--max-cycles", "20000")
    assert code == RtlError.exit_code
    line = one_error_line(err)
    assert "CYCLE_BUDGET" in line and "RTL engine stopped at instruction" in line


def test_never_halting_program_step_budget(tools, elt_pkg, x_file, tmp_path, capsys):
    """Without --max-cycles the cycle model's run, bounded by --max-steps, refuses it first."""
    pkg = with_program(elt_pkg, tmp_path / "forever.accel", NEVER_HALTS)
    code, _, err = run_cli(capsys, pkg, "--input", f"x={x_file}", "-o", tmp_path / "y.npz", "--device", "rtl",
                           "--max-steps", "10000")
    assert code == RtlError.exit_code
    line = one_error_line(err)
    assert "does not halt within 10000 instructions" in line


def test_overflow_names_instruction_mnemonic_and_code(tools, elt_pkg, tmp_path, capsys):
    big = tmp_path / "big.npy"
    np.save(big, np.full((1, 8, 4, 4), 3e38, np.float32))  # relu(x) + b + x overflows binary32
    code, _, err = run_cli(capsys, elt_pkg, "--input", f"x={big}", "-o", tmp_path / "f.npz")
    assert code == 3  # funcsim: NumericsError, naming the instruction
    ref = one_error_line(err)
    index = ref.split("instruction ")[1].split(" ")[0]
    code, _, err = run_cli(capsys, elt_pkg, "--input", f"x={big}", "-o", tmp_path / "r.npz", "--device", "rtl")
    assert code == RtlError.exit_code
    line = one_error_line(err)
    assert f"instruction {index} (vop add, " in line and "OVERFLOW" in line
