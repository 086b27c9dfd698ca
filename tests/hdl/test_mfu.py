# amaranth: UnusedElaboratable=no
"""hdl/mfu.py: parameter checks, short runs in Amaranth's simulator, and cocotb + Verilator runs.

Every output bit is compared with the golden ``accelml.sim.bfp`` (mfu_vectors.check_results).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from mfu_vectors import Checked, beat_value, check_results, pack_beat, random_beats, unpack_result
from stream_ready import drive_stream

from accelml.hdl.config import preset
from accelml.hdl.errors import ConfigError
from accelml.hdl.mfu import MAX_LANES, UNITS, Mfu
from accelml.sim import rtl

COCOTB_MODULE = Path(__file__).with_name("cocotb_mfu.py")

RTL_CONFIGS = {
    "tiny": preset("tiny"),  # N=4, M=7, E=8, one vector per beat
    "msfp9_w2": dataclasses.replace(preset("tiny").with_format("ms-fp9"), mfu_width=2),  # E=5, M=3
}


def test_rejects_non_config():
    with pytest.raises(TypeError, match=r"Quantise cfg must be an EngineConfig, got dict"):
        UNITS["qnt"](preset("tiny").to_dict())


def test_rejects_too_many_lanes():
    cfg = dataclasses.replace(preset("a10"), mfu_width=MAX_LANES)
    with pytest.raises(ConfigError, match=r"VectorOp: EngineConfig.mfu_width=1024 times native_dim=16"):
        UNITS["vop"](cfg)


@pytest.mark.parametrize("unit", list(UNITS))
def test_pack_matches_amaranth_layouts(unit):
    cfg = RTL_CONFIGS["msfp9_w2"]
    beat_layout, _ = UNITS[unit].layouts(cfg)
    for beat in random_beats(cfg, unit, random.Random(3), 4):
        value = beat_value(cfg, unit, beat)
        assert pack_beat(cfg, unit, beat) == beat_layout.const(value).as_value().value


def run_python_sim(cfg, unit: str, beats, seed: int, gap: float, stall: float):
    """Drive ``beats`` into one unit with random input gaps and output stalls; return results, cycles."""
    dut = UNITS[unit](cfg)

    def params(ctx, k):
        if unit == "vact":
            for port, value in beats[k].params.items():
                ctx.set(getattr(dut, port), value)

    raw, cycles = drive_stream(dut, dut.i, dut.o, [pack_beat(cfg, unit, b) for b in beats], len(beats),
                               seed=seed, gap=gap, stall=stall, on_offer=params)
    return [unpack_result(cfg, unit, r) for r in raw], cycles


@pytest.mark.parametrize("unit", list(UNITS))
def test_unit_python_sim(unit):
    """Golden-exact with back-pressure; here ``qnt`` is checked against quantize's native fast path
    when it is built (the cocotb runs use the numpy definition)."""
    cfg = RTL_CONFIGS["msfp9_w2"]
    beats = random_beats(cfg, unit, random.Random(17), 60)
    results, _ = run_python_sim(cfg, unit, beats, seed=1, gap=0.3, stall=0.4)
    tally = Checked()
    check_results(cfg, unit, beats, results, tally)
    assert 0 < tally.errors < tally.beats
    results, cycles = run_python_sim(cfg, unit, beats[:20], seed=2, gap=0.0, stall=0.0)
    check_results(cfg, unit, beats[:20], results, Checked())
    assert cycles == 20 + UNITS[unit].latency  # one beat per cycle


@pytest.mark.rtl
@pytest.mark.parametrize("name", list(RTL_CONFIGS))
def test_mfu_rtl(name):
    rtl.require_tools()
    cfg = RTL_CONFIGS[name]
    result = rtl.run_cocotb(
        Mfu(cfg), toplevel="mfu", test_module=COCOTB_MODULE,
        extra_env={"MFU_CFG": cfg.to_json(), "ACCELML_NATIVE": "0"}, seed=4321,
    )
    print(f"{name}: build {result.build_seconds:.1f} s, run {result.run_seconds:.1f} s")
    assert result.passed, result.summary()
    assert result.tests == 4
