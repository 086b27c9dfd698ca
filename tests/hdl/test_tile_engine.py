# amaranth: UnusedElaboratable=no
"""hdl/tile_engine.py: parameter checks, a short run in Amaranth's simulator, and cocotb + Verilator runs.

Every output bit is compared with the golden ``accelml.sim.bfp.block_matmul`` (see
tile_engine_vectors.Scoreboard).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
from stream_ready import drive_stream
from tile_engine_vectors import Scoreboard, corner_steps, pack_step, random_jobs, step_value, unpack_result

from accelml.hdl.config import EngineConfig, preset
from accelml.hdl.tile_engine import DOT_VERILOG, MAX_NATIVE_DIM, TileEngine, dot_width, result_layout, step_layout
from accelml.sim import rtl

COCOTB_MODULE = Path(__file__).with_name("cocotb_tile_engine.py")

RTL_CONFIGS = {
    "tiny": preset("tiny"),  # N=4, M=7, E=8
    "n8": dataclasses.replace(preset("ecp5"), native_dim=8),  # N=8, M=7, E=8 (the earlier ecp5)
    "msfp12": preset("tiny").with_format("msfp12"),  # N=16, M=3, E=8
}


# -- parameters and layouts ----------------------------------------------------------------------

def test_rejects_non_config():
    with pytest.raises(TypeError, match=r"TileEngine cfg must be an EngineConfig, got dict"):
        TileEngine(preset("tiny").to_dict())


def test_rejects_unsupported_native_dim():
    cfg = dataclasses.replace(preset("tiny"), native_dim=2 * MAX_NATIVE_DIM)
    with pytest.raises(ValueError, match=rf"cfg.native_dim up to {MAX_NATIVE_DIM} .*native_dim=128"):
        TileEngine(cfg)


@pytest.mark.parametrize("name", ["tiny", "ecp5", "a10", "wide"])
def test_layout_widths(name):
    cfg = preset(name)
    n, m, e = cfg.native_dim, cfg.mantissa_bits, cfg.exponent_bits
    assert step_layout(cfg).size == n * n * (m + 1) + n * (e + 1) + n * (m + 1) + (e + 1) + 2 + 32 * n
    assert result_layout(cfg).size == 32 * n + 1
    assert dot_width(cfg) == 2 * m + (n.bit_length() - 1) + 1
    # the widest exact block dot product fits
    assert n * ((1 << m) - 1) ** 2 < 1 << (dot_width(cfg) - 1)


def test_pack_matches_amaranth_layouts():
    """The fast payload packer used by the testbenches agrees with Amaranth's own ``Layout.const``."""
    rng = random.Random(11)
    for cfg in RTL_CONFIGS.values():
        for step in random_jobs(cfg, rng, 3, max_blocks=2):
            value = step_value(step)
            bits = step_layout(cfg).const(value).as_value().value
            assert pack_step(cfg, step) == bits
            assert rtl.unpack(step_layout(cfg), bits) == value
        res = {"acc": [rng.getrandbits(32) for _ in range(cfg.native_dim)], "overflow": 1}
        bits = result_layout(cfg).const(res).as_value().value
        assert rtl.pack(result_layout(cfg), res) == bits
        assert unpack_result(cfg, bits) == (res["acc"], True)


# -- Amaranth simulator: fast, in the default suite ----------------------------------------------

def run_python_sim(cfg: EngineConfig, steps, seed: int, gap: float, stall: float):
    """Drive ``steps`` with random input gaps and output stalls; return results and cycle count."""
    dut = TileEngine(cfg)
    raw, cycles = drive_stream(dut, dut.step, dut.result, [pack_step(cfg, s) for s in steps],
                               sum(s.last for s in steps), seed=seed, gap=gap, stall=stall)
    return [unpack_result(cfg, r) for r in raw], cycles


def check_results(cfg, steps, results):
    expected = Scoreboard(cfg).expected(steps)
    assert len(results) == len(expected)
    for k, (exp, (acc, overflow)) in enumerate(zip(expected, results, strict=True)):
        assert overflow == exp.overflow, f"result {k}: overflow {overflow}, expected {exp.overflow}"
        for j, want in enumerate(exp.rows):
            if want is not None:
                assert acc[j] == want, f"result {k} row {j}: {acc[j]:#010x} != {want:#010x}"
    return expected


def test_tile_engine_python_sim():
    cfg = preset("tiny")
    rng = random.Random(7)
    steps = corner_steps(cfg, rng)[:40] + random_jobs(cfg, rng, 12, max_blocks=4)
    steps[40] = dataclasses.replace(steps[40], first=True)  # a cut-off job must start cleanly
    results, _ = run_python_sim(cfg, steps, seed=1, gap=0.3, stall=0.4)
    expected = check_results(cfg, steps, results)
    assert any(e.overflow for e in expected) and any(not e.overflow for e in expected)


def test_tile_engine_python_sim_exponent_field_limits():
    """Exponents beyond [exp_min, exp_max], at the limits of their signed(E+1) fields, still compute."""
    cfg = preset("tiny")
    n, lo, hi = cfg.native_dim, -(1 << cfg.exponent_bits), (1 << cfg.exponent_bits) - 1
    rng = random.Random(5)
    steps = []
    for w_e, a_e in [(lo, lo), (hi, hi), (lo, hi), (hi, lo), (hi, -hi + 3), (lo, -lo - 140)]:
        for s in random_jobs(cfg, rng, 1, max_blocks=1):
            steps.append(dataclasses.replace(s, w_exp=np.full(n, w_e), a_exp=a_e, first=True, last=True))
    results, _ = run_python_sim(cfg, steps, seed=3, gap=0.0, stall=0.0)
    expected = check_results(cfg, steps, results)
    assert [e.overflow for e in expected[:2]] == [False, True]


def test_tile_engine_python_sim_full_rate():
    """Without gaps or stalls the engine takes one step per cycle (4 cycles of latency)."""
    cfg = preset("tiny")
    steps = random_jobs(cfg, random.Random(3), 10, max_blocks=3)
    results, cycles = run_python_sim(cfg, steps, seed=2, gap=0.0, stall=0.0)
    check_results(cfg, steps, results)
    assert cycles == len(steps) + 4  # the last result is taken 4 cycles after the last step


# -- cocotb + Verilator --------------------------------------------------------------------------

@pytest.mark.rtl
@pytest.mark.parametrize("verilog_dots", [False, True], ids=["amaranth", "accelml_dot"])
@pytest.mark.parametrize("name", list(RTL_CONFIGS))
def test_tile_engine_rtl(name, verilog_dots):
    """Every cocotb test of the tile engine, with its dot products as Amaranth adder trees and as
    the ``accelml_dot`` instances of the emitted engine."""
    rtl.require_tools()
    cfg = RTL_CONFIGS[name]
    design = TileEngine(cfg, verilog_dots=verilog_dots)
    if verilog_dots:
        design = rtl.to_verilog(design, "tile_engine") + DOT_VERILOG
    result = rtl.run_cocotb(
        design, toplevel="tile_engine", test_module=COCOTB_MODULE,
        extra_env={"TILE_ENGINE_CFG": cfg.to_json()}, seed=1234,
    )
    print(f"{name}: build {result.build_seconds:.1f} s, run {result.run_seconds:.1f} s")
    assert result.passed, result.summary()
    assert result.tests >= 4
