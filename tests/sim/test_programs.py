"""Hand-written assembly programs run on the functional simulator equal the golden ops bit for bit."""

from pathlib import Path

import numpy as np
import pytest

import accelml.sim
from accelml.hdl.config import preset
from accelml.hdl.program import Program, assemble_program
from accelml.sim import bfp, golden
from accelml.sim.funcsim import FuncSim
from accelml.sim.layout import MemoryImage, read_bfp, weight_tiles

CFG = preset("tiny")
PROGRAMS = Path(accelml.sim.__file__).parent / "programs"


def load(name: str) -> Program:
    return assemble_program((PROGRAMS / name).read_text(), CFG, source=name)


def run(name: str, image: MemoryImage):
    mem = image.build(extra=0x4000)
    sim = FuncSim(CFG, mem)
    stats = sim.run(load(name))
    return mem, stats


def act(shape, rng, scale=1.0):
    return bfp.quantize(rng.standard_normal(shape) * scale, CFG, name="x")


def assert_bfp_equal(mem, addr, expected: bfp.BfpTensor):
    mant, exp = read_bfp(mem, addr, expected.exp.size, CFG)
    np.testing.assert_array_equal(mant.reshape(expected.mant.shape), expected.mant)
    np.testing.assert_array_equal(exp.reshape(expected.exp.shape), expected.exp)


def test_dense_bias():
    rng = np.random.default_rng(1)
    x = act((12,), rng)
    w = rng.standard_normal((8, 12)) * 0.3
    b = rng.standard_normal(8)
    wq = golden.quantize_dense_weights(w, CFG)
    img = MemoryImage(CFG)
    img.put_bfp("x", x, at=0x0000)
    img.put_bfp("W", weight_tiles(wq, 1, 3), at=0x0100)
    img.put_fp("b", bfp.internal_const(b), at=0x0400)
    mem, stats = run("dense_bias.s", img)
    expected = bfp.quantize(golden.dense(x, wq, CFG, bias=b), CFG)
    assert_bfp_equal(mem, 0x0800, expected)
    assert stats.macs == 6 * 16 and stats.tile_ops == 6
    # and the result is close to float: the golden model is not trivially equal to itself
    assert np.abs(bfp.dequantize(expected) - (w @ x.values() + b)).max() < 0.1


def test_conv3x3_stride2_padding_loop():
    rng = np.random.default_rng(2)
    x = act((7, 6, 8), rng)
    w = rng.standard_normal((8, 8, 3, 3)) * 0.2
    b = rng.standard_normal(8) * 0.1
    wq = golden.quantize_conv_weights(w, CFG)
    img = MemoryImage(CFG)
    img.put_bfp("x", x, at=0x0000)
    img.put_bfp("W", weight_tiles(wq, 9, 2), at=0x1000)
    img.put_fp("b", bfp.internal_const(b), at=0x2000)
    mem, stats = run("conv3x3_s2.s", img)
    geom = golden.ConvGeom(7, 6, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1))
    expected = bfp.quantize(golden.conv2d(x, wq, geom, CFG, bias=b), CFG)
    assert expected.mant.shape == (4, 3, 8)
    assert_bfp_equal(mem, 0x3000, expected)
    assert stats.by_opcode["MVC"] == 4  # one per output row, from the hardware loop
    assert stats.macs == 12 * 2 * 9 * 2 * 16


def test_conv1x1_relu():
    rng = np.random.default_rng(3)
    x = act((5, 5, 8), rng)
    w = rng.standard_normal((12, 8, 1, 1)) * 0.4
    b = rng.standard_normal(12) * 0.1
    wq = golden.quantize_conv_weights(w, CFG)
    img = MemoryImage(CFG)
    img.put_bfp("x", x, at=0x0000)
    img.put_bfp("W", weight_tiles(wq, 1, 2), at=0x1000)
    img.put_fp("b", bfp.internal_const(b), at=0x2000)
    mem, _ = run("conv1x1_relu.s", img)
    y = bfp.mfu_relu(golden.conv2d(x, wq, golden.ConvGeom(5, 5, 1, 1), CFG, bias=b))
    expected = bfp.quantize(y, CFG)
    assert_bfp_equal(mem, 0x3000, expected)
    assert (bfp.dequantize(expected) >= 0).all() and (bfp.dequantize(expected) > 0).any()


def test_maxpool():
    rng = np.random.default_rng(4)
    x = act((7, 7, 8), rng)
    img = MemoryImage(CFG)
    img.put_bfp("x", x, at=0x0000)
    mem, _ = run("maxpool.s", img)
    geom = golden.ConvGeom(7, 7, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1))
    expected = bfp.quantize(golden.max_pool(golden.dequantize_internal(x), geom), CFG)
    assert_bfp_equal(mem, 0x1000, expected)


def test_residual_add_relu():
    rng = np.random.default_rng(5)
    x = act((4, 4, 8), rng)
    s = act((4, 4, 8), rng)
    w = rng.standard_normal((8, 8, 1, 1)) * 0.4
    b = rng.standard_normal(8) * 0.1
    wq = golden.quantize_conv_weights(w, CFG)
    img = MemoryImage(CFG)
    img.put_bfp("x", x, at=0x0000)
    img.put_bfp("s", s, at=0x0400)
    img.put_bfp("W", weight_tiles(wq, 1, 2), at=0x0800)
    img.put_fp("b", bfp.internal_const(b), at=0x0C00)
    mem, _ = run("residual_relu.s", img)
    y = bfp.mfu_relu(golden.residual_add(golden.conv2d(x, wq, golden.ConvGeom(4, 4, 1, 1), CFG, bias=b), s))
    assert_bfp_equal(mem, 0x1000, bfp.quantize(y, CFG))


@pytest.mark.parametrize("name", sorted(p.name for p in PROGRAMS.glob("*.s")))
def test_fixture_round_trips_through_binary_and_disassembly(name):
    prog = load(name)
    blob = prog.to_bytes()
    again = Program.from_bytes(blob, config=CFG)
    assert again.instructions == prog.instructions
    assert assemble_program(again.to_asm(), CFG).instructions == prog.instructions
