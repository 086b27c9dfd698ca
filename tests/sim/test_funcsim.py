"""Functional simulator: more instruction forms against the golden ops, run-time errors, cycle model."""

import dataclasses

import numpy as np
import pytest

from accelml.hdl.config import preset
from accelml.hdl.errors import ExecutionError, NumericsError
from accelml.hdl.program import assemble_program
from accelml.sim import bfp, golden
from accelml.sim.cycles import load_phase, memory_timing, mfu_cycles
from accelml.sim.funcsim import FuncSim
from accelml.sim.layout import MemoryImage, read_bfp, weight_tiles

CFG = preset("tiny")


def run(text, image, cfg=CFG, extra=0x10000):
    mem = image.build(extra=extra)
    sim = FuncSim(cfg, mem)
    stats = sim.run(assemble_program(text, cfg))
    return sim, mem, stats


def conv_program(h, w, cb, kh, kw, stride, pads, out_w, npix, cob, *, gi=0, go=0, tiles, extra=""):
    return f"""
seti r1, 0
ld   vrf, r0, r1, 1, {h * w * cb}
seti r2, 0x8000
ld   mrf, r0, r2, 1, {tiles}
cfg in_h, r0, {h}
cfg in_w, r0, {w}
cfg in_cb, r0, {cb}
cfg kh, r0, {kh}
cfg kw, r0, {kw}
cfg stride_h, r0, {stride}
cfg stride_w, r0, {stride}
cfg pad_t, r0, {pads[0]}
cfg pad_l, r0, {pads[1]}
cfg pad_b, r0, {pads[2]}
cfg pad_r, r0, {pads[3]}
cfg out_w, r0, {out_w}
cfg npix, r0, {npix}
cfg cob, r0, {cob}
cfg gi, r0, {gi}
cfg go, r0, {go}
mvc r0, r0, r0, 0
{extra}
seti r5, 4000
qnt r5, r0, {npix * cob}
seti r6, 0x20000
st vrf, r5, r6, 1, {npix * cob}
halt
"""


@pytest.mark.parametrize(
    "groups,cin,cout,gi,go",
    [(8, 8, 8, 1, 1), (2, 8, 8, 1, 1), (2, 16, 16, 2, 2), (4, 16, 8, 0, 0)],
    ids=["dw", "g2-block", "g2-two-blocks", "g4-dense-fallback"],
)
def test_grouped_conv_skips_zero_tiles_and_matches_golden(groups, cin, cout, gi, go):
    """gi/go select the group's blocks; gi=0 runs the zero-expanded dense form. Both equal golden."""
    rng = np.random.default_rng(groups)
    n = CFG.native_dim
    x = bfp.quantize(rng.standard_normal((6, 5, cin)), CFG)
    w = rng.standard_normal((cout, cin // groups, 3, 3)) * 0.3
    wq = golden.quantize_conv_weights(w, CFG, groups)
    cb, cob = cin // n, cout // n
    tiles_m, tiles_e = weight_tiles(wq, 9, cb, gi=gi, go=go)
    img = MemoryImage(CFG)
    img.put_bfp("x", x, at=0)
    img.put_bfp("w", (tiles_m, tiles_e), at=0x8000)
    geom = golden.ConvGeom(6, 5, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1))
    text = conv_program(6, 5, cb, 3, 3, 1, (1, 1, 1, 1), 5, 30, cob, gi=gi, go=go, tiles=len(tiles_m))
    _, mem, stats = run(text, img, extra=0x30000)
    expected = bfp.quantize(golden.conv2d(x, wq, geom, CFG), CFG)
    mant, exp = read_bfp(mem, 0x20000, 30 * cob, CFG)
    np.testing.assert_array_equal(mant.reshape(expected.mant.shape), expected.mant)
    np.testing.assert_array_equal(exp.reshape(expected.exp.shape), expected.exp)
    assert stats.tile_ops == 30 * cob * 9 * (gi or cb)  # with gi set, only the group's tiles


def test_k_split_accumulation_continues_the_sum_exactly():
    """Two MVCs over halves of the input channels (acc=1) equal one MVC over all of them."""
    rng = np.random.default_rng(11)
    x = bfp.quantize(rng.standard_normal((1, 1, 16)), CFG)
    wq = golden.quantize_dense_weights(rng.standard_normal((8, 16)), CFG)
    tiles_m, tiles_e = weight_tiles(wq, 1, 4)
    img = MemoryImage(CFG)
    img.put_bfp("x", x, at=0)
    img.put_bfp("w", (tiles_m, tiles_e), at=0x8000)
    # halves: blocks 0-1 for both output blocks, then blocks 2-3; tiles are (ob, block)
    text = """
seti r1, 0
ld vrf, r0, r1, 1, 4
seti r2, 0x8000
cfg mem_stride, r0, 80
cfg chip_stride, r0, 2
ld mrf, r0, r2, 2, 2          ; tiles (0,0),(0,1),(1,0),(1,1) -> mrf 0..3
seti r3, 0x8028
ld mrf, r0, r3, 1, 0          ; no-op load: zero rows
seti r4, 4
ld mrf, r4, r3, 2, 2          ; tiles (0,2),(0,3),(1,2),(1,3) -> mrf 4..7
cfg mem_stride, r0, 0
cfg chip_stride, r0, 0
cfg in_cb, r0, 2
cfg cob, r0, 2
mvc r0, r0, r0, 0
seti r5, 2
mvc r0, r5, r4, 1
seti r6, 0x20000
st fvrf, r0, r6, 1, 2
halt
"""
    _, mem, _ = run(text, img, extra=0x30000)
    got = np.frombuffer(mem.read(0x20000, 32).tobytes(), "<f4")
    np.testing.assert_array_equal(got, golden.dense(bfp.BfpTensor(x.mant.reshape(16), x.exp.reshape(4), 16, 4, 7),
                                                    wq, CFG))


@pytest.mark.parametrize("mode,incl", [("avg", False), ("avg_pad", True)])
def test_average_pool_modes(mode, incl):
    rng = np.random.default_rng(3)
    x = bfp.quantize(rng.standard_normal((5, 5, 4)), CFG)
    img = MemoryImage(CFG)
    img.put_bfp("x", x, at=0)
    text = f"""
seti r1, 0
ld vrf, r0, r1, 1, 25
cfg in_h, r0, 5
cfg in_w, r0, 5
cfg kh, r0, 3
cfg kw, r0, 3
cfg stride_h, r0, 2
cfg stride_w, r0, 2
cfg pad_t, r0, 1
cfg pad_l, r0, 1
cfg pad_b, r0, 1
cfg pad_r, r0, 1
cfg out_w, r0, 3
cfg npix, r0, 9
pool {mode}, r0, r0
seti r6, 0x1000
st fvrf, r0, r6, 1, 9
halt
"""
    _, mem, _ = run(text, img)
    got = np.frombuffer(mem.read(0x1000, 9 * 16).tobytes(), "<f4").reshape(3, 3, 4)
    geom = golden.ConvGeom(5, 5, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1))
    want = golden.avg_pool(golden.dequantize_internal(x), geom, count_include_pad=incl)
    np.testing.assert_array_equal(got, want)
    assert got[0, 0, 0] != golden.avg_pool(golden.dequantize_internal(x), geom, count_include_pad=not incl)[0, 0, 0]


def test_clip_and_leaky_relu():
    vals = bfp.internal_const(np.linspace(-9, 9, 16))
    img = MemoryImage(CFG)
    img.put_fp("v", vals, at=0)
    text = """
seti r1, 0
ld fvrf, r0, r1, 1, 4
cfg clip_lo, r0, 0.0
cfg clip_hi, r0, 6.0
cfg alpha, r0, 0.1
seti r2, 10
vact clip, r2, r0, 4
seti r3, 20
vact lrelu, r3, r0, 4
seti r6, 0x1000
st fvrf, r2, r6, 1, 4
seti r6, 0x1100
st fvrf, r3, r6, 1, 4
halt
"""
    _, mem, _ = run(text, img)
    clip = np.frombuffer(mem.read(0x1000, 64).tobytes(), "<f4")
    lrelu = np.frombuffer(mem.read(0x1100, 64).tobytes(), "<f4")
    np.testing.assert_array_equal(clip, np.clip(vals, 0, 6))
    np.testing.assert_array_equal(lrelu, bfp.mfu_leaky_relu(vals, np.float32(0.1)))


@pytest.mark.parametrize(
    "text,match",
    [
        ("nop", "ran past the end of the program without HALT"),
        ("seti r1, 9000\nld vrf, r1, r0, 1, 1\nhalt", "VRF access up to entry 9000 outside its 8192 entries"),
        ("seti r1, 0xFFFF00\nld vrf, r0, r1, 1, 1\nhalt", "outside the .*-byte image"),
        ("loop r0, 2, 5\nhalt", "loop body of 5 instructions does not fit"),
        ("loop r0, 2, 5\nloop r0, 2, 4\nloop r0, 2, 3\nloop r0, 2, 2\nloop r0, 2, 1\nnop\nhalt",
         "loops nested deeper than 4"),
        ("cfg kh, r0, 0\nmvc r0, r0, r0, 0\nhalt", "instruction 1 \\(mvc\\): window geometry has a zero dimension"),
        ("seti r1, 8190\ncfg npix, r0, 4\nqnt r1, r0, 4\nhalt", "VRF access \\[8190, 8194\\)"),
        ("loop r0, 60000, 2\nloop r0, 60000, 1\nnop\nhalt", "more than 1000000 instructions"),
        ("cfg pad_l, r0, 1\npool max, r0, r0\nhalt",
         "instruction 1 \\(pool\\): max_pool: a window lies entirely in the padding"),
        ("cfg pad_l, r0, 1\npool avg, r0, r0\nhalt",
         "instruction 1 \\(pool\\): avg_pool: a window lies entirely in the padding \\(divisor 0\\)"),
        ("cfg pad_t, r0, 0xFFFFFFFF\npool avg_pad, r0, r0\nhalt",
         "avg_pool: a window lies entirely outside the input and its pads"),
        ("cfg in_cb, r0, 2\ncfg gi, r0, 3\nmvc r0, r0, r0, 0\nhalt", "group 0 needs input blocks \\[0, 3\\)"),
    ],
)
def test_run_time_errors_are_typed_and_name_the_instruction(text, match):
    sim = FuncSim(CFG, 0x10000)
    with pytest.raises(ExecutionError, match=match):
        sim.run(assemble_program(text, CFG), max_steps=1_000_000)


def test_loops_nest_and_execute_the_right_number_of_times():
    sim = FuncSim(CFG, 0x1000)
    stats = sim.run(assemble_program("loop r0, 3, 3\naddi r1, r1, 1\nloop r0, 4, 1\naddi r2, r2, 1\nhalt", CFG))
    assert sim.regs[1] == 3 and sim.regs[2] == 12
    assert stats.by_opcode["ADDI"] == 15
    # a zero-count loop skips its body; r0 stays zero
    sim = FuncSim(CFG, 0x1000)
    sim.run(assemble_program("seti r0, 5\nloop r0, 0, 1\naddi r1, r1, 1\nhalt", CFG))
    assert sim.regs[1] == 0 and sim.reg(0) == 0


def test_zero_count_loop_ending_with_its_enclosing_body_closes_that_loop():
    # the outer body is instructions 1..3; the skipped inner body is instruction 3, the outer's last:
    # skipping it reaches the outer loop's end, which repeats (docs/isa.md)
    sim = FuncSim(CFG, 0x1000)
    sim.run(assemble_program("loop r0, 3, 3\naddi r1, r1, 1\nloop r0, 0, 1\naddi r2, r2, 1\nhalt", CFG))
    assert sim.regs[1] == 3 and sim.regs[2] == 0
    # two levels closed at once, then the instruction after them
    sim = FuncSim(CFG, 0x1000)
    sim.run(assemble_program("loop r0, 2, 4\nloop r0, 3, 3\naddi r1, r1, 1\nloop r0, 0, 1\naddi r2, r2, 1\n"
                             "addi r3, r3, 1\nhalt", CFG))
    assert (sim.regs[1], sim.regs[2], sim.regs[3]) == (6, 0, 1)


def test_overflow_in_the_mfu_is_a_numerics_fault():
    img = MemoryImage(CFG)
    img.put_fp("v", np.full(4, 3e38, np.float32), at=0)
    sim = FuncSim(CFG, img.build(extra=0x100))
    with pytest.raises(NumericsError, match="instruction 2 \\(vop\\).*overflow"):
        sim.run(assemble_program("seti r1, 0\nld fvrf, r0, r1, 1, 1\nvop add, r0, r0, r0, 1, 0\nhalt", CFG))



def test_vector_subtract_is_exact_negation_then_the_adds_rounding():
    rng = np.random.default_rng(5)
    a = rng.standard_normal(12).astype(np.float32)
    b = (rng.standard_normal(4) * 1e-3).astype(np.float32)
    img = MemoryImage(CFG)
    img.put_fp("a", a, at=0)
    img.put_fp("b", b, at=0x100)
    sim = FuncSim(CFG, img.build(extra=0x100))
    sim.run(assemble_program("seti r1, 0\nld fvrf, r0, r1, 1, 3\nseti r2, 0x100\nseti r3, 3\n"
                             "ld fvrf, r3, r2, 1, 1\nseti r4, 4\n"
                             "vop sub, r4, r0, r3, 3, 1\nvop sub, r0, r0, r0, 3, 0\nhalt", CFG))
    # period 1 broadcasts b's one vector; binary32 RNE of the exact difference
    want = (a.astype(np.float64) - np.tile(b, 3)).astype(np.float32)
    np.testing.assert_array_equal(sim.fvrf[4:7].ravel(), want)
    assert not sim.fvrf[0:3].any() and not np.signbit(sim.fvrf[0:3]).any()  # x - x = +0
    with pytest.raises(NumericsError, match="overflow"):
        bfp.mfu_sub(np.float32([3e38]), np.float32([-3e38]))

@pytest.mark.parametrize("preset_name", ["tiny", "a10"])  # N = 4: numpy; N = 16: the native kernel for add
@pytest.mark.parametrize("fn", ["add", "sub", "mul", "max"])
@pytest.mark.parametrize("act", ["copy", "relu", "clip", "lrelu"])
def test_fused_vop_is_the_op_then_the_activation_then_the_quantisation(preset_name, fn, act):
    """``vop fn, ..., act, vrf`` and ``..., act`` (FVRF) give bit for bit what ``vop``, ``vact`` and
    ``qnt`` give one after the other, with a periodic second operand, each fused one an MFU pass."""
    cfg = preset(preset_name)
    n = cfg.native_dim
    rng = np.random.default_rng(11)
    a = (rng.standard_normal((10, n)) * 2.0 ** rng.integers(-8, 8, (10, n))).astype(np.float32)
    b = rng.standard_normal((5, n)).astype(np.float32)
    a[0] = -b[0]  # sums to zero
    img = MemoryImage(cfg)
    img.put_fp("a", a, at=0)
    img.put_fp("b", b, at=0x1000)
    head = ("seti r1, 0x1000\nld fvrf, r0, r0, 1, 10\nseti r2, 16\nld fvrf, r2, r1, 1, 5\n"
            "cfg clip_lo, r0, -0.5\ncfg clip_hi, r0, 0.75\ncfg alpha, r0, 0.125\nseti r3, 32\nseti r4, 64\n")
    fused = head + f"vop {fn}, r3, r0, r2, 10, 5, {act}, vrf\nvop {fn}, r4, r0, r2, 10, 5, {act}\nhalt"
    apart = head + (f"vop {fn}, r4, r0, r2, 10, 5\nvact {act}, r4, r4, 10\nqnt r3, r4, 10\nhalt")
    one, two = FuncSim(cfg, img.build(extra=0x100)), FuncSim(cfg, img.build(extra=0x100))
    got, want = one.run(assemble_program(fused, cfg)), two.run(assemble_program(apart, cfg))
    np.testing.assert_array_equal(one.vrf_mant[32:42], two.vrf_mant[32:42])
    np.testing.assert_array_equal(one.vrf_exp[32:42], two.vrf_exp[32:42])
    np.testing.assert_array_equal(one.fvrf[64:74], two.fvrf[64:74])
    assert one.vrf_exp[32:42].any() and one.fvrf[64:74].any()
    width = cfg.mfu_width
    units = "vop" + ("+vact" if act != "copy" else "")
    assert got.busy["mfu"] == mfu_cycles(units + "+qnt", 10, 5, width) + mfu_cycles(units, 10, 5, width)
    assert want.busy["mfu"] == sum(mfu_cycles(u, 10, 5 if u == "vop" else 0, width) for u in ("vop", "vact", "qnt"))


@pytest.mark.parametrize("preset_name", ["tiny", "a10"])
@pytest.mark.parametrize("tail", ["", ", relu, vrf"])
def test_fused_vop_with_its_second_operand_from_the_vrf_is_dequantise_then_vop(preset_name, tail):
    """``bfile`` vrf: the second operand dequantised from the VRF (periodic here), bit for bit
    ``deq`` then ``vop``, in one MFU pass."""
    cfg = preset(preset_name)
    n = cfg.native_dim
    rng = np.random.default_rng(12)
    a = (rng.standard_normal((10, n)) * 4).astype(np.float32)
    img = MemoryImage(cfg)
    img.put_fp("a", a, at=0)
    img.put_bfp("q", bfp.quantize(rng.standard_normal((5, n)), cfg), at=0x1000)
    head = "seti r1, 0x1000\nld fvrf, r0, r0, 1, 10\nseti r2, 16\nld vrf, r2, r1, 1, 5\nseti r3, 32\nseti r4, 64\n"
    act, dest = (tail.split(", ")[1:] if tail else ["copy", "fvrf"])
    rd = "r3" if dest == "vrf" else "r4"
    fused = head + f"vop add, {rd}, r0, r2, 10, 5, {act}, {dest}, vrf\nhalt"
    apart = head + (f"seti r5, 100\ndeq r5, r2, 5\nvop add, r4, r0, r5, 10, 5\nvact {act}, r4, r4, 10\n"
                    + ("qnt r3, r4, 10\n" if dest == "vrf" else "") + "halt")
    one, two = FuncSim(cfg, img.build(extra=0x100)), FuncSim(cfg, img.build(extra=0x100))
    got = one.run(assemble_program(fused, cfg))
    two.run(assemble_program(apart, cfg))
    if dest == "vrf":
        np.testing.assert_array_equal(one.vrf_mant[32:42], two.vrf_mant[32:42])
        np.testing.assert_array_equal(one.vrf_exp[32:42], two.vrf_exp[32:42])
        assert one.vrf_exp[32:42].any()
    else:
        np.testing.assert_array_equal(one.fvrf[64:74], two.fvrf[64:74])
        assert one.fvrf[64:74].any()
    units = "deq+vop" + ("+vact+qnt" if dest == "vrf" else "")
    assert got.busy["mfu"] == mfu_cycles(units, 10, 5, cfg.mfu_width)


def _mvc_setup(cfg, weight_rows: int, tiles: int) -> tuple[MemoryImage, str]:
    """A 16x16x4 image of ones at 0 and ``weight_rows`` x 4 weights of ones at 0x4000, and the
    assembly that loads the image and ``tiles`` weight tiles and runs one MVC over every pixel."""
    img = MemoryImage(cfg)
    img.put_bfp("x", bfp.quantize(np.ones((16, 16, 4)), cfg), at=0)
    img.put_bfp("w", bfp.quantize(np.ones((weight_rows, 4)), cfg), at=0x4000)
    text = f"""
seti r1, 0
ld vrf, r0, r1, 1, 256
seti r2, 0x4000
ld mrf, r0, r2, 1, {tiles}
cfg in_h, r0, 16
cfg in_w, r0, 16
cfg out_w, r0, 16
cfg npix, r0, 256
cfg cob, r0, {tiles}
mvc r0, r0, r0, 0
"""
    return img, text


def test_cycle_model_overlaps_dma_with_compute_when_buffers_differ():
    """Loading the next weights into a different MRF region overlaps the MVC; the same region waits
    for the MVC to finish (a write of what an instruction in flight reads)."""
    cfg = preset("tiny")
    img, first = _mvc_setup(cfg, 64 * 4, 32)

    def program(second_region):
        return first + f"""
seti r3, {second_region}
ld mrf, r3, r2, 1, 32
mvc r0, r0, r3, 0
halt
"""

    cycles = {}
    for region in (0, 32):
        sim = FuncSim(cfg, img.build(extra=0x100))
        cycles[region] = sim.run(assemble_program(program(region), cfg)).cycles
    t = memory_timing(cfg)
    mvc = -(-(64 * 4) // cfg.tiles) * 32  # 1x1 window over 32 input blocks, one output block
    # the weights' DRAM row is open (the first load read it); + SETUP, DONE, the slot freeing
    dma = load_phase(t, cfg.tile_bytes, 0x4000 % t.row_bytes, 1, 32, 32 * cfg.tile_bytes, 0)[0] + 3
    assert dma < mvc and cycles[0] - cycles[32] == dma  # the reload, hidden behind the first MVC


def test_cycle_model_starts_a_vector_op_after_the_products_it_consumes():
    """An MFU op on an MVC's results is dispatched the cycle the MVC's slot frees (no chaining)."""
    cfg = preset("tiny")
    img, text = _mvc_setup(cfg, 4, 1)
    sim = FuncSim(cfg, img.build(extra=0x100))
    text += """
seti r5, 3000
vact relu, r5, r0, 256
halt
"""
    prog = assemble_program(text, cfg)
    sim.run(prog)
    ops = [i.op.name for i in prog.instructions]
    mvc_end, vact_end = sim.insn_end[ops.index("MVC")], sim.insn_end[ops.index("VACT")]
    assert vact_end - mvc_end == 1 + 1 + mfu_cycles("vact", 256)  # slot free, IDLE, the vectors


def _layer_program(cfg, h, w, cb, cob, addrs) -> str:
    """A conv layer as the compiler emits it (bias, ReLU, quantise, store; then a residual add of a
    loaded shortcut), then forms the multi-function unit chains cannot take (a destination over
    the second operand, subtract, clip) and a loop of strided stores."""
    p = h * w
    return f"""
seti r1, {addrs['x']}
ld vrf, r0, r1, 1, {h * w * cb}
seti r2, {addrs['w']}
ld mrf, r0, r2, 1, {cob * 9 * cb}
seti r3, {addrs['b']}
seti r4, 100
ld fvrf, r4, r3, 1, {cob}
cfg in_h, r0, {h}
cfg in_w, r0, {w}
cfg in_cb, r0, {cb}
cfg kh, r0, 3
cfg kw, r0, 3
cfg pad_t, r0, 1
cfg pad_l, r0, 1
cfg pad_b, r0, 1
cfg pad_r, r0, 1
cfg out_w, r0, {w}
cfg npix, r0, {p}
cfg cob, r0, {cob}
seti r5, 200
mvc r5, r0, r0, 0
vop add, r5, r5, r4, {p * cob}, {cob}
vact relu, r5, r5, {p * cob}
seti r6, 300
qnt r6, r5, {p * cob}
seti r7, {addrs['out1']}
st vrf, r6, r7, 1, {p * cob}
seti r8, {addrs['short']}
seti r9, 1000
ld vrf, r9, r8, 1, {p * cob}
seti r10, 600
deq r10, r9, {p * cob}
vop add, r5, r5, r10, {p * cob}, 0
qnt r6, r5, {p * cob}
seti r11, {addrs['out2']}
st vrf, r6, r11, 1, {p * cob}
vop add, r10, r5, r10, {p * cob}, 0
vop sub, r5, r5, r4, {p * cob}, {cob}
cfg clip_lo, r0, -1.5
cfg clip_hi, r0, 2.0
vact clip, r5, r5, {p * cob}
seti r12, {addrs['out3']}
st fvrf, r5, r12, 1, {cob}
seti r12, {addrs['out4']}
seti r13, 300
cfg mem_stride, r0, {3 * cob * cfg.bfp_vector_bytes}
loop r0, 4, 3
st vrf, r13, r12, 2, {cob}
addi r12, r12, {cob * cfg.bfp_vector_bytes}
addi r13, r13, {2 * cob}
halt
"""


def _layer_image(cfg, h, w, cb, cob, seed, *, huge_bias=False, bad_shortcut=False):
    rng = np.random.default_rng(seed)
    n = cfg.native_dim
    img = MemoryImage(cfg)
    addrs = {"x": img.put_bfp("x", bfp.quantize(rng.standard_normal((h * w, cb * n)), cfg))}
    wq = golden.quantize_conv_weights(rng.standard_normal((cob * n, cb * n, 3, 3)) * 0.05, cfg)
    addrs["w"] = img.put_bfp("w", weight_tiles(wq, 9, cb))
    bias = np.full(cob * n, 3e38) if huge_bias else rng.standard_normal(cob * n) * 0.1
    addrs["b"] = img.put_fp("b", bfp.internal_const(bias))
    scale = 1e38 if huge_bias else 1e37  # with the huge bias the residual add overflows (a fused chain)
    short = np.frombuffer(encode_bfp_rows(bfp.quantize(rng.standard_normal((h * w, cob * n)) * scale, cfg), cfg),
                          np.uint8).copy()
    if bad_shortcut:
        short[7 * cfg.bfp_vector_bytes - 1] = 0xFF  # the reserved exponent field
    addrs["short"] = img.put("short", short.tobytes())
    vb = cfg.bfp_vector_bytes
    for name, size in (("out1", h * w * cob * vb), ("out2", h * w * cob * vb), ("out3", cob * 64),
                       ("out4", 12 * cob * vb)):
        addrs[name] = img.reserve(name, size)
    return img, addrs


def encode_bfp_rows(t, cfg):
    from accelml.sim.memory import encode_bfp
    return encode_bfp(t.mant.reshape(-1, cfg.native_dim), t.exp.reshape(-1), cfg)


def _state(sim, mem):
    return (sim.vrf_mant.tobytes(), sim.vrf_exp.tobytes(), sim.mrf_mant.tobytes(), sim.mrf_exp.tobytes(),
            sim.fvrf.tobytes(), mem.data.tobytes(), list(sim.regs), dict(sim.cfgr), sim.stats.instructions,
            dict(sim.stats.by_opcode), sim.stats._counts())


@pytest.mark.parametrize("preset_name", ["a10", "ecp5"])
def test_a_replayed_run_is_the_instruction_by_instruction_run(preset_name):
    """A program's second run without the cycle model replays the first run's data work (with the
    multi-function unit chains fused); every bit of state and every counter equals a run that
    executes the instructions one by one, on other data, with the constant image frozen or not."""
    cfg = preset(preset_name)
    h, w, cb, cob = 5, 6, 2, 3
    img, addrs = _layer_image(cfg, h, w, cb, cob, 1)
    program = assemble_program(_layer_program(cfg, h, w, cb, cob, addrs), cfg)
    for frozen in (0, addrs["b"] + 64):
        first = FuncSim(cfg, img.build(extra=0x100))
        first.mem.freeze(frozen)
        first.run(program)
        for seed in (2, 3):
            other, _ = _layer_image(cfg, h, w, cb, cob, seed)
            replay = FuncSim(cfg, other.build(extra=0x100), timing=False)
            replay.mem.freeze(frozen)
            replay.run(program)
            one_by_one = FuncSim(cfg, other.build(extra=0x100), timing=False)
            one_by_one.mem.freeze(frozen)
            one_by_one.run(list(program.instructions))  # a list is never replayed
            assert _state(replay, replay.mem) == _state(one_by_one, one_by_one.mem)
            assert replay.stats.cycles == 0 and not replay.insn_end.any()


@pytest.mark.parametrize("bad", ["overflow", "encoding"])
def test_a_replayed_run_raises_the_same_errors_with_the_same_state(bad):
    """Data-dependent errors in a replayed run (an overflow inside a fused chain, an invalid
    encoding in a load) name the same instruction and leave the same state and counters."""
    cfg = preset("a10")
    h, w, cb, cob = 5, 6, 2, 3
    img, addrs = _layer_image(cfg, h, w, cb, cob, 1)
    program = assemble_program(_layer_program(cfg, h, w, cb, cob, addrs), cfg)
    FuncSim(cfg, img.build(extra=0x100)).run(program)
    broken, _ = _layer_image(cfg, h, w, cb, cob, 4, huge_bias=bad == "overflow", bad_shortcut=bad == "encoding")
    errors, states = [], []
    for prog in (program, list(program.instructions)):
        sim = FuncSim(cfg, broken.build(extra=0x100), timing=False)
        with pytest.raises((NumericsError, ExecutionError)) as e:
            sim.run(prog)
        errors.append((type(e.value), str(e.value)))
        states.append(_state(sim, sim.mem))
    assert errors[0] == errors[1]
    assert errors[0][1].startswith("instruction 32 (vop): vop add: overflow" if bad == "overflow" else
                                   "instruction 29 (ld): load to VRF")
    assert states[0] == states[1]


def test_replayed_weight_loads_are_decoded_when_read_and_checked_when_executed():
    """Weight loads from the constant image are deferred in a replay: later loads over the same
    tiles, an MVC reading them, a store of MRF tiles and a load from writable memory in between
    all see (and leave) what the instruction-by-instruction run does; an invalid encoding in the
    constant image still fails at its load."""
    cfg = preset("a10")
    rng = np.random.default_rng(9)
    n = cfg.native_dim
    img = MemoryImage(cfg)
    tiles = [weight_tiles(golden.quantize_dense_weights(rng.standard_normal((3 * n, 2 * n)), cfg), 1, 2)
             for _ in range(3)]
    waddr = [img.put_bfp(f"w{i}", t) for i, t in enumerate(tiles)]
    xaddr = img.put_bfp("x", bfp.quantize(rng.standard_normal((1, 2 * n)), cfg))
    frozen = -(-img.top // 64) * 64
    out = img.reserve("out", 0x4000, at=frozen)
    text = f"""
seti r1, {waddr[0]}
ld mrf, r0, r1, 1, 6
seti r1, {waddr[1]}
seti r2, 3
ld mrf, r2, r1, 1, 6          ; overlaps the first load's tiles 3..5
seti r1, {xaddr}
ld vrf, r0, r1, 1, 2
cfg in_cb, r0, 2
cfg cob, r0, 3
seti r3, 100
mvc r3, r0, r0, 0             ; reads tiles 0..5
seti r1, {waddr[2]}
seti r2, 20
ld mrf, r2, r1, 1, 6          ; tiles 20..25, overwritten below
seti r4, {out}
st mrf, r2, r4, 1, 2          ; stores tiles 20..21
seti r2, 22
ld mrf, r2, r4, 1, 2          ; tiles 22..23 from writable memory (tiles 20..21)
seti r1, {waddr[0]}
seti r2, 40
ld mrf, r2, r1, 1, 6          ; tiles 40..45
ld mrf, r2, r1, 1, 6          ; the same tiles again: the first of the two is never needed
seti r1, {waddr[1]}
seti r2, 43
ld mrf, r2, r1, 1, 2          ; tiles 43..44: inside the last load
seti r1, {waddr[2]}
seti r2, 38
ld mrf, r2, r1, 1, 4          ; tiles 38..41: over the start of tiles 40..45 only
halt
"""
    program = assemble_program(text, cfg)

    def memory(bad=False):
        mem = img.build(extra=0x4000)
        if bad:
            mem.data[waddr[1] + 5 * cfg.tile_bytes + cfg.bfp_vector_bytes - 1] = 0xFF  # a reserved exponent
        mem.freeze(frozen)
        return mem

    FuncSim(cfg, memory()).run(program)
    for bad in (False, True):
        states, errors = [], []
        for prog in (program, list(program.instructions)):
            sim = FuncSim(cfg, memory(bad), timing=False)
            try:
                sim.run(prog)
                errors.append(None)
            except ExecutionError as e:
                errors.append(str(e))
            states.append(_state(sim, sim.mem))
        assert errors[0] == errors[1]
        assert (errors[0] or "").startswith("instruction 4 (ld): load to MRF" if bad else "")
        assert states[0] == states[1]


BANKED = dataclasses.replace(CFG, tiles=3, mrf_tiles=510, mrf_banked=True, name="tiny-b3")


def _banked(tiles_m, tiles_e, cob, kb, t):
    """Unbanked tiles (output block, step) laid out as a banked MRF reads them (isa.md): rows of T,
    block ``set * T + bank`` (cob a multiple of T) or ``bank mod cob`` (a divisor) in bank ``bank``."""
    sets = cob // t if cob >= t else 1
    bank = np.arange(t)
    ob = np.arange(sets)[:, None] * t + bank if cob >= t else (bank % cob)[None, :]
    idx = (ob[:, None, :] * kb + np.arange(kb)[None, :, None]).reshape(-1)
    return tiles_m[idx], tiles_e[idx]


def _banked_conv(cout: int):
    """A 3x3 convolution of 8 channels to ``cout`` on a 6 x 5 image, its tiles laid out by bank:
    (input, quantised weights, image, program)."""
    rng = np.random.default_rng(cout)
    x = bfp.quantize(rng.standard_normal((6, 5, 8)), BANKED)
    wq = golden.quantize_conv_weights(rng.standard_normal((cout, 8, 3, 3)) * 0.3, BANKED, 1)
    cob = cout // BANKED.native_dim
    banked = _banked(*weight_tiles(wq, 9, 2), cob, 9 * 2, BANKED.tiles)
    img = MemoryImage(BANKED)
    img.put_bfp("x", x, at=0)
    img.put_bfp("w", banked, at=0x8000)
    return x, wq, img, conv_program(6, 5, 2, 3, 3, 1, (1, 1, 1, 1), 5, 30, cob, tiles=len(banked[0]))


@pytest.mark.parametrize("cout", [12, 24, 4], ids=["cob-T", "cob-2T", "cob-divisor"])
def test_banked_mrf_reads_each_engines_bank_as_the_isa_says(cout):
    """A banked MRF holding the layer's tiles by bank gives the golden convolution, the tiles of a
    divisor cob copied into every bank that reads them."""
    x, wq, img, text = _banked_conv(cout)
    cob = cout // BANKED.native_dim
    _, mem, _ = run(text, img, cfg=BANKED, extra=0x30000)
    expected = bfp.quantize(golden.conv2d(x, wq, golden.ConvGeom(6, 5, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)), BANKED),
                            BANKED)
    mant, exp = read_bfp(mem, 0x20000, 30 * cob, BANKED)
    np.testing.assert_array_equal(mant.reshape(expected.mant.shape), expected.mant)
    np.testing.assert_array_equal(exp.reshape(expected.exp.shape), expected.exp)


def test_banked_mrf_copies_that_differ_serve_their_own_pixels():
    """cob = 1 on three engines: pixel p's pair runs on engine p mod 3, which reads its own bank, so
    three different copies give three convolutions, each on its class of pixels."""
    rng = np.random.default_rng(5)
    n, t, kb = BANKED.native_dim, BANKED.tiles, 9 * 2
    x = bfp.quantize(rng.standard_normal((6, 5, 8)), BANKED)
    wqs = [golden.quantize_conv_weights(rng.standard_normal((n, 8, 3, 3)) * 0.3, BANKED, 1) for _ in range(t)]
    per = [weight_tiles(wq, 9, 2) for wq in wqs]  # kb tiles each
    mant = np.stack([m for m, _ in per], axis=1).reshape(kb * t, n, n)  # row k: bank b holds copy b's tile k
    exp = np.stack([e for _, e in per], axis=1).reshape(kb * t, n)
    img = MemoryImage(BANKED)
    img.put_bfp("x", x, at=0)
    img.put_bfp("w", (mant, exp), at=0x8000)
    _, mem, _ = run(conv_program(6, 5, 2, 3, 3, 1, (1, 1, 1, 1), 5, 30, 1, tiles=kb * t), img, cfg=BANKED,
                    extra=0x30000)
    geom = golden.ConvGeom(6, 5, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1))
    outs = [bfp.quantize(golden.conv2d(x, wq, geom, BANKED), BANKED) for wq in wqs]
    got_m, got_e = read_bfp(mem, 0x20000, 30, BANKED)
    for p in range(30):
        want = outs[p % t]
        np.testing.assert_array_equal(got_m[p], want.mant.reshape(30, n)[p])
        np.testing.assert_array_equal(got_e[p], want.exp.reshape(30)[p])
    assert not np.array_equal(outs[0].mant, outs[1].mant)  # the copies differ, so the classes do


@pytest.mark.parametrize("cob,tbase,match", [(2, 0, "cob = 2 output blocks is neither a multiple nor a divisor"),
                                             (3, 1, "start at tile 1, not a multiple of the 3")])
def test_banked_mrf_refuses_a_cob_or_start_off_its_banks(cob, tbase, match):
    img = MemoryImage(BANKED)
    img.put_bfp("x", bfp.quantize(np.ones((6, 5, 8)), BANKED), at=0)
    text = conv_program(6, 5, 2, 3, 3, 1, (1, 1, 1, 1), 5, 30, cob, tiles=54).replace(
        "mvc r0, r0, r0, 0", f"seti r7, {tbase}\nmvc r0, r0, r7, 0")
    with pytest.raises(ExecutionError, match=rf"instruction \d+ \(mvc\): banked MRF: .*{match}"):
        run(text, img, cfg=BANKED, extra=0x30000)


def test_a_load_with_copies_writes_each_row_side_by_side():
    """COPIES = 3 on the banked MRF: row r's tiles at rc + r * chip_stride and again one row length
    and two on; entries between the copies are left as they were."""
    rng = np.random.default_rng(7)
    n = BANKED.native_dim
    tiles = bfp.quantize(rng.standard_normal((4, n * n)), BANKED)  # 4 tiles: 4 rows of one tile
    img = MemoryImage(BANKED)
    img.put_bfp("t", (tiles.mant.reshape(4, n, n), tiles.exp.reshape(4, n)), at=0)
    text = """
seti r1, 6
cfg chip_stride, r0, 3
cfg copies, r0, 3
ld mrf, r1, r0, 4, 1
halt
"""
    sim, _, stats = run(text, img, cfg=BANKED)
    for r in range(4):
        for k in range(3):
            np.testing.assert_array_equal(sim.mrf_mant[6 + 3 * r + k], tiles.mant.reshape(4, n, n)[r])
    assert stats.dma_load_bytes == 4 * BANKED.tile_bytes  # read once
    assert not sim.mrf_mant[:6].any() and not sim.mrf_mant[18:].any()


@pytest.mark.parametrize("cfg,copies,length,match", [
    (CFG, 2, 1, "copies = 2 on an MRF that is not banked"),
    (BANKED, 2, 2, "2 copies of rows of 2 tiles need more than the 3 banks"),
])
def test_copies_the_banks_cannot_write_in_one_cycle_are_refused(cfg, copies, length, match):
    img = MemoryImage(cfg)
    img.put("z", bytes(64 * cfg.tile_bytes), at=0)
    text = f"cfg chip_stride, r0, 3\ncfg copies, r0, {copies}\nld mrf, r0, r0, 2, {length}\nhalt\n"
    with pytest.raises(ExecutionError, match=rf"instruction 2 \(ld\): banked MRF: {match}"):
        run(text, img, cfg=cfg)


@pytest.mark.parametrize("cout,ds", [(4, 3), (12, 5)], ids=["divisor", "multiple"])
def test_banked_mvc_results_at_a_pixel_stride_of_their_own(cout, ds):
    """dstride: pixel p's results at rd + p * dstride + ob, the entries between them untouched, the
    same sums as without it."""
    _, _, img, text = _banked_conv(cout)
    n, cob = BANKED.native_dim, cout // BANKED.native_dim
    plain, _, plain_stats = run(text, img, cfg=BANKED, extra=0x30000)
    strided, _, stats = run(text.replace("mvc r0, r0, r0, 0", f"cfg dstride, r0, {ds}\nmvc r0, r0, r0, 0"), img,
                            cfg=BANKED, extra=0x30000)
    want = plain.fvrf[:30 * cob].reshape(30, cob, n)
    got = strided.fvrf[np.arange(30)[:, None] * ds + np.arange(cob)]
    np.testing.assert_array_equal(got, want)
    between = np.setdiff1d(np.arange(29 * ds + cob), (np.arange(30)[:, None] * ds + np.arange(cob)).ravel())
    assert not strided.fvrf[between].any() and between.size == 29 * (ds - cob)
    assert stats.busy["mvu"] >= plain_stats.busy["mvu"]  # a divisor's runs take more write cycles


@pytest.mark.parametrize("cfg,ds,match", [(CFG, 4, "dstride = 4 on an MRF that is not banked"),
                                          (BANKED, 2, "dstride = 2 is less than cob = 3")])
def test_a_dstride_off_the_banks_is_refused(cfg, ds, match):
    img = MemoryImage(cfg)
    img.put_bfp("x", bfp.quantize(np.ones((6, 5, 8)), cfg), at=0)
    text = conv_program(6, 5, 2, 3, 3, 1, (1, 1, 1, 1), 5, 30, 3, tiles=54).replace(
        "mvc r0, r0, r0, 0", f"cfg dstride, r0, {ds}\nmvc r0, r0, r0, 0")
    with pytest.raises(ExecutionError, match=rf"instruction \d+ \(mvc\): banked MRF: {match}"):
        run(text, img, cfg=cfg, extra=0x30000)


def test_a_one_row_load_with_copies_writes_them_side_by_side():
    """One row (a contiguous transfer) with COPIES = 3: the row and two copies after it."""
    n = BANKED.native_dim
    tiles = bfp.quantize(np.random.default_rng(8).standard_normal((1, n * n)), BANKED)
    img = MemoryImage(BANKED)
    img.put_bfp("t", (tiles.mant.reshape(1, n, n), tiles.exp.reshape(1, n)), at=0)
    sim, _, _ = run("seti r1, 3\ncfg copies, r0, 3\nld mrf, r1, r0, 1, 1\nhalt\n", img, cfg=BANKED)
    for k in range(3):
        np.testing.assert_array_equal(sim.mrf_mant[3 + k], tiles.mant.reshape(n, n))
    assert not sim.mrf_mant[:3].any() and not sim.mrf_mant[6:].any()
