# amaranth: UnusedElaboratable=no
"""hdl/engine: whole programs on the Verilated engine, bit-exact against the functional simulator.

One build of the ``tiny`` engine serves every program (programs are loaded into the instruction
memory at run time). Each run is compared with ``rtl_engine.funcsim_outcome``: the same error code
and faulting instruction, and the same external memory, byte for byte.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import pytest
from engine_programs import bfp_bytes, pool_program, random_dma_program, random_window_program, valid_image

import accelml.sim
from accelml.hdl.config import preset
from accelml.hdl.emit import engine_verilog
from accelml.hdl.engine.control import Control
from accelml.hdl.engine.status import ErrorCode
from accelml.hdl.engine.top import Engine
from accelml.hdl.errors import ConfigError, RtlError
from accelml.hdl.isa import Act, Cfg, Dest, Instruction, Opcode, PoolMode, Space, VecOp
from accelml.hdl.program import assemble
from accelml.sim import golden, rtl
from accelml.sim.funcsim import FuncSim
from accelml.sim.layout import pixel_grid
from accelml.sim.memory import encode_bfp
from accelml.sim.rtl_engine import EngineSim, engine_text, engine_text_path, funcsim_outcome, timing_mismatch

PROGRAMS = Path(accelml.sim.__file__).parent / "programs"
CFG = preset("tiny")


# -- parameters ----------------------------------------------------------------------------------

def test_engine_rejects_non_config():
    with pytest.raises(TypeError, match="Engine cfg must be an EngineConfig, got dict"):
        Engine(CFG.to_dict())


def test_engine_rejects_port_width_not_a_power_of_two():
    with pytest.raises(ValueError, match="mem_port_bits must be 8 times a power of two, got 24"):
        Engine(dataclasses.replace(CFG, mem_port_bits=24))


def test_engine_rejects_mfu_width_not_a_power_of_two():
    with pytest.raises(ValueError, match="mfu_width must be a power of two, got 6"):
        Engine(dataclasses.replace(CFG, mfu_width=6))


def test_mvu_refuses_rounds_whose_sums_take_longer_to_read_than_the_window_divides():
    """An accumulating mvc's first round's sums are read while the window generator divides
    (mvu.prefetch_parts, DIV_CYCLES): 32 one-entry parts still fit, 40 do not."""
    from accelml.hdl.engine.mvu import Mvu

    Mvu(dataclasses.replace(CFG, tiles=32))
    with pytest.raises(ConfigError, match="up to 40 cycles to read .* raise mfu_width"):
        Mvu(dataclasses.replace(CFG, tiles=40))
    with pytest.raises(ConfigError, match="up to 36 cycles"):  # strided divisor runs of one lane
        Mvu(dataclasses.replace(CFG, tiles=36, mfu_width=4, mrf_tiles=36 * 8, mrf_banked=True))


@pytest.mark.parametrize("depth", [1, 3.0, True])
def test_control_rejects_bad_imem_depth(depth):
    with pytest.raises(ValueError, match="imem_depth must be an integer"):
        Control(CFG, imem_depth=depth)


def test_config_itself_is_validated():
    with pytest.raises(ConfigError, match="native_dim"):
        dataclasses.replace(CFG, native_dim=3)


def test_instruction_memory_depth_does_not_grow_the_verilog():
    small, _ = engine_verilog(CFG, imem_depth=4096)
    deep, manifest = engine_verilog(CFG, imem_depth=1 << 20)
    assert manifest["imem_depth"] == 1 << 20 and ".DEPTH(32'd1048576)" in deep
    assert abs(len(deep) - len(small)) < 200  # no initial value per word
    assert "module accelml_imem" in deep


def test_register_file_depths_do_not_grow_the_verilog():
    """The files are ``accelml_ram`` instances, zeroed by a loop: no initial value per entry."""
    from dataclasses import replace

    small, _ = engine_verilog(CFG)
    big = replace(CFG, vrf_vectors=4 * CFG.vrf_vectors, mrf_tiles=4 * CFG.mrf_tiles, fvrf_vectors=4 * CFG.fvrf_vectors)
    deep, _ = engine_verilog(big)
    assert abs(len(deep) - len(small)) < 4000  # wider addresses only; a line per entry would be 400 K+
    assert "module accelml_ram" in deep and f".DEPTH(32'd{big.vrf_vectors})" in deep


def test_engine_verilog_does_not_depend_on_the_string_hash_seed():
    """The emitted Verilog is a function of the sources and the EngineConfig alone (its SHA-256 keys
    the build cache and names what a synthesis record measured): no iteration over a set of
    strings decides the order of anything emitted."""
    import subprocess
    import sys

    code = ("from accelml.hdl.emit import engine_verilog; from accelml.hdl.config import preset; "
            "print(engine_verilog(preset('tiny'))[1]['verilog_sha256'])")
    shas = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(seed)},
                           capture_output=True, text=True, check=True).stdout.strip() for seed in (1, 2, 3, 4)}
    assert len(shas) == 1, shas


def test_engine_verilog_is_kept_in_the_user_cache(tmp_path):
    text, _ = engine_verilog(CFG, imem_depth=4096)
    path = engine_text_path(CFG, 4096, tmp_path)
    assert not path.exists()
    assert engine_text(CFG, 4096, tmp_path) == text and path.read_text() == text
    assert engine_text_path(CFG, 8192, tmp_path) != path
    assert engine_text_path(dataclasses.replace(CFG, mfu_width=2), 4096, tmp_path) != path
    path.write_text(text + "// kept\n")  # a later call reads the file instead of emitting
    assert engine_text(CFG, 4096, tmp_path).endswith("// kept\n")


# -- whole programs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine():
    rtl.require_tools()
    return EngineSim(CFG)


# four MFU lanes on W-banked VRF and FVRF (the DMAs on one-entry ports onto the banks); five tile
# engines, so the MVU writes a round's results in two cycles of up to four entries
WIDE = dataclasses.replace(CFG, mfu_width=4, tiles=5)


@pytest.fixture(scope="module")
def wide_engine():
    rtl.require_tools()
    return EngineSim(WIDE)


ENGINES = ["engine", "wide_engine"]  # the MFU tests run on both


def test_a_torn_memory_dump_is_an_rtl_error():
    """A dump that is not whole words (a run stopped while writing it) is refused, never read as
    a shorter memory."""
    from accelml.sim.rtl_engine import _dumped_words

    assert _dumped_words(bytes(range(8)), 2) == bytes([0, 1, 4, 5])  # 2-byte words padded to 4
    with pytest.raises(RtlError, match="not whole 2-byte words"):
        _dumped_words(bytes(6), 2)


@pytest.fixture(scope="module")
def narrow_engine():
    """A 2-byte memory port: the memory model's dump pads each word to 4 bytes ("%u")."""
    rtl.require_tools()
    return EngineSim(dataclasses.replace(CFG, mem_port_bits=16, name="tiny-w16"))


def _same(engine, program, image, *, ro_bytes=0, max_steps=50_000_000, stall_mask=0):
    """The RTL run ends as funcsim's (error code, instruction, memory byte for byte) and, for a run
    that ends without an error and without injected stalls (which the cycle model does not know),
    the cycle model's total and per-unit busy cycles match the RTL's counters
    (rtl_engine.timing_mismatch: 1 % and 2 %)."""
    ref = funcsim_outcome(engine.cfg, program, image, ro_bytes=ro_bytes, max_steps=max_steps)
    got = engine.run(program, image, ro_bytes=ro_bytes, max_steps=max_steps, stall_mask=stall_mask)
    assert (got.error, got.error_pc) == (ref.error, ref.error_pc), ref.message
    if ref.error is not ErrorCode.ILLEGAL_INSN:  # funcsim refuses such a program before running it
        diff = np.nonzero(got.memory != ref.memory)[0]
        assert diff.size == 0, f"{diff.size} bytes differ, first at {diff[:8]}"
    if ref.error is ErrorCode.NONE and not stall_mask:
        assert timing_mismatch(ref, got) is None, timing_mismatch(ref, got)
    return ref, got


def _dma_loops_image() -> bytearray:
    rng = np.random.default_rng(7)
    img = bytearray(0xC00)
    for r in range(6):  # the image rows, 40 bytes apart
        img[40 * r:40 * r + 25] = encode_bfp(rng.integers(-127, 128, (5, 4)), rng.integers(-127, 128, 5), CFG)
    img[0x600:0x600 + 60] = encode_bfp(rng.integers(-127, 128, (12, 4)), rng.integers(-127, 128, 12), CFG)
    img[0x800:0x840] = rng.standard_normal(16).astype("<f4").tobytes()
    return img


@pytest.mark.rtl
@pytest.mark.parametrize(("which", "stall_mask"), [("engine", 0), ("engine", 0x0303), ("wide_engine", 0x0303),
                                                  ("narrow_engine", 0)])
def test_dma_loops_program(request, which, stall_mask):
    """Also on banked files (wide_engine), through the DMA's one-entry ports, and through a memory
    port narrower than the memory model's 4-byte dump unit (narrow_engine)."""
    engine = request.getfixturevalue(which)
    program = assemble((PROGRAMS / "dma_loops.s").read_text())
    img = _dma_loops_image()
    ref, got = _same(engine, program, img, stall_mask=stall_mask)
    assert got.error is ErrorCode.NONE
    assert bytes(got.memory[0x400:0x400 + 150]) != bytes(150)  # the program did write
    assert got.busy["dma_load"] > 0 and got.busy["dma_store"] > 0 and got.cycles >= sum(got.busy.values()) // 2
    if stall_mask:  # the stalls did happen
        assert got.cycles > engine.run(program, img).cycles
    else:  # the cycle model is exact here, not only within _same's tolerance
        assert (ref.cycles, ref.busy) == (got.cycles, got.busy)


@pytest.mark.rtl
def test_dram_page_misses_and_turnarounds_are_timed_as_modelled(engine):
    """Rows 8 KB apart (a DRAM row each: a page miss per row) and loads and stores alternating on
    one port (read/write turnarounds): the RTL's cycles equal the model's (_same), and those costs
    are in them."""
    size = 5 * 8192
    program = assemble("cfg mem_stride, r0, 8195\nseti r1, 3\nld vrf, r0, r1, 5, 6\nseti r2, 16384\n"
                       "loop r0, 4, 4\nst vrf, r0, r2, 2, 6\nld fvrf, r0, r1, 2, 2\nst fvrf, r0, r2, 1, 2\n"
                       "addi r2, r2, 12\nhalt")
    ref, got = _same(engine, program, valid_image(size, 9))
    assert got.error is ErrorCode.NONE
    from accelml.sim.cycles import memory_timing

    t = memory_timing(CFG)
    assert t.page_miss and t.write_to_read and t.read_to_write
    plain = FuncSim(dataclasses.replace(CFG, mem_bandwidth_gbps=100.0), size).run(program)  # no DRAM costs
    assert got.cycles > plain.cycles


SHARED_PORT_PROGRAMS = {
    # qnt writes vrf[0..32) while a load would write vrf[100..116): one VRF write port
    "write": "seti r1, 0\nseti r2, 64\nld fvrf, r2, r1, 1, 32\nqnt r0, r2, 32\nseti r3, 0x400\nseti r4, 100\n"
             "ld vrf, r4, r3, 1, 16\nseti r5, 0x800\nst vrf, r4, r5, 1, 16\nseti r6, 0xA00\n"
             "st vrf, r0, r6, 1, 32\nhalt",
    # a store reads vrf[0..32) while deq would read it too: one VRF read port beside the MVU's
    "read": "seti r1, 0\nld vrf, r0, r1, 1, 32\nseti r2, 0x800\nst vrf, r0, r2, 1, 32\nseti r3, 64\n"
            "deq r3, r0, 32\nseti r4, 0xA00\nst fvrf, r3, r4, 1, 32\nhalt",
}


@pytest.mark.rtl
@pytest.mark.parametrize("name", sorted(SHARED_PORT_PROGRAMS))
def test_units_sharing_a_file_port_take_turns_as_modelled(engine, name):
    """tiny has ``file_ports="shared"``: two units that would use one port of a file, on entries
    that do not overlap, run one after the other. The RTL's cycles equal the model's, and are more
    than the model gives when it lets them run at once (no shared port; the units' own work is
    the same)."""
    assert CFG.file_ports == "shared"
    program = assemble(SHARED_PORT_PROGRAMS[name])
    ref, got = _same(engine, program, valid_image(0x1000, 3))
    assert got.error is ErrorCode.NONE
    assert (ref.cycles, ref.busy) == (got.cycles, got.busy)
    at_once = FuncSim(CFG, 0x1000, numerics=False)
    at_once.model.shared = {}
    free = at_once.run(program)
    assert {k: free.busy.get(k, 0) for k in got.busy} == got.busy and free.cycles < got.cycles


def _mfu_image(seed: int) -> bytearray:
    rng = np.random.default_rng(seed)
    img = bytearray(0xC00)
    mant = rng.integers(-127, 128, (8, 4))
    mant[0] = 0  # a zero block
    exp = rng.integers(-127, 128, 8)
    exp[1], exp[2], exp[3] = -127, 127, -120  # exponent extremes: flushed to zero, the largest
    img[0:40] = encode_bfp(mant, exp, CFG)
    b = (rng.standard_normal((4, 4)) * 2.0 ** rng.integers(-20, 20, (4, 4))).astype(np.float32)
    a = (rng.standard_normal((12, 4)) * 2.0 ** rng.integers(-20, 20, (12, 4))).astype(np.float32)
    a[0] = -b[0]  # a + b cancels to +0
    a[5] = b[1]  # max of equal values
    a[2, :2] = 0.0
    a[3] = np.ldexp(1.0, -126) * np.array([1, -1, 1.5, -3])  # smallest normals: sums flush to zero
    img[0x100:0x100 + a.nbytes] = a.astype("<f4").tobytes()
    img[0x300:0x300 + b.nbytes] = b.astype("<f4").tobytes()
    return img




def _qnt_image(seed: int) -> bytearray:
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal((16, 4)) * 2.0 ** rng.integers(-30, 30, (16, 4))).astype(np.float32)
    v[0] = 0.0  # an all-zero block
    v[1] = [127.5, 1.0, -0.25, 3.0]  # the maximum rounds up to 2**M: exponent bumped
    v[2] = [np.finfo(np.float32).max, -1e38, 5e37, 1.0]  # bumped past exp_max: clipped, saturated
    v[3] = np.ldexp(np.float32(1.0), -126) * np.array([1, -1.5, 3, 0.5], np.float32)  # below exp_min
    v[4] = [2.5, -2.5, 0.5, -1.5]  # ties to even
    v[5] = [1e-30, 1e-35, -1e-40 * 0, 3e-31]
    img = bytearray(0x400 + 24 * CFG.bfp_vector_bytes + 8)
    img[:v.nbytes] = v.astype("<f4").tobytes()
    return img


@pytest.mark.rtl
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("name", "make_image"), [("mfu_ops.s", _mfu_image), ("qnt_ops.s", _qnt_image),
                                                  ("mfu_fused.s", _mfu_image)])
@pytest.mark.parametrize("which", ENGINES)
def test_mfu_programs(request, which, name, make_image, seed):
    """deq, vop, vact (mfu_ops.s), qnt (qnt_ops.s) and fused vops (mfu_fused.s) on random data and
    corners; results stored at 0x400."""
    engine = request.getfixturevalue(which)
    ref, got = _same(engine, assemble((PROGRAMS / name).read_text()), make_image(seed))
    assert got.error is ErrorCode.NONE and got.busy["mfu"] > 0
    assert (ref.cycles, ref.busy) == (got.cycles, got.busy)  # the cycle model is exact
    assert bytes(got.memory[0x400:0x400 + 80]) != bytes(80)


@pytest.mark.rtl
@pytest.mark.parametrize("which", ENGINES)
def test_mfu_destination_in_place_or_before_its_source_reads_every_operand_first(request, which):
    """Overlaps the pipelined MFU reads ahead of: in place, and a destination starting before its
    source (with a periodic second operand beside it)."""
    engine = request.getfixturevalue(which)
    img = bytearray(512)
    img[0:192] = np.random.default_rng(3).standard_normal(48).astype("<f4").tobytes()
    program = assemble("seti r1, 4\nld fvrf, r1, r0, 1, 12\nvop add, r1, r1, r1, 12, 0\n"
                       "vact relu, r0, r1, 12\nseti r2, 2\nseti r5, 12\nvop mul, r2, r1, r5, 9, 3\n"
                       "seti r3, 256\nst fvrf, r0, r3, 1, 16\nhalt")
    ref, got = _same(engine, program, img)
    assert got.error is ErrorCode.NONE and bytes(got.memory[256:512]) != bytes(256)


@pytest.mark.rtl
@pytest.mark.parametrize("which", ENGINES)
def test_qnt_of_nan_stops_the_engine(request, which):
    engine = request.getfixturevalue(which)
    img = bytearray(512)
    img[0:16] = np.array([1, 2, 3, 4], "<f4").tobytes()
    program = assemble("ld fvrf, r0, r0, 1, 1\nseti r1, 0x7fc00000\ncfg clip_lo, r1, 0\nvact clip, r0, r0, 1\n"
                       "qnt r0, r0, 1\nhalt")
    ref, got = _same(engine, program, img)
    assert (got.error, got.error_pc) == (ErrorCode.NAN, 4)


@pytest.mark.rtl
@pytest.mark.parametrize("which", ENGINES)
def test_fused_vop_fails_as_its_first_failing_group(request, which):
    """Vector 0 reaches the quantiser as NaN (max keeps it, leaky relu passes it), vector 1's
    leaky-relu product overflows: one MFU lane (tiny) stops at vector 0 with NAN, four lanes (one
    group) with OVERFLOW, the earlier stage's error; funcsim says the same."""
    engine = request.getfixturevalue(which)
    img = bytearray(512)
    img[0:16] = np.array([1.5, -3e38, 0.0, -1e-3], "<f4").tobytes()
    program = assemble(_SPECIALS + "seti r5, 3\nvop max, r5, r0, r0, 1, 0\ncfg alpha, r0, 10.0\n"
                       "seti r6, 8\nvop max, r6, r4, r4, 2, 0, lrelu, vrf\nhalt")
    ref, got = _same(engine, program, img)
    assert (got.error, got.error_pc) == (ErrorCode.NAN if engine.cfg.mfu_width == 1 else ErrorCode.OVERFLOW, 14)


@pytest.mark.rtl
@pytest.mark.parametrize(("op", "code"), [("vop add, r6, r0, r0, 1, 0, relu, vrf", ErrorCode.OVERFLOW),
                                          ("vop max, r6, r4, r0, 1, 0, copy, vrf", ErrorCode.NAN),
                                          ("vop add, r6, r0, r0, 1, 0, clip", ErrorCode.OVERFLOW)])
def test_fused_vop_errors_name_the_instruction(engine, op, code):
    img = bytearray(512)
    img[0:16] = np.array([3e38, -2.0, 0.0, 1.0], "<f4").tobytes()
    ref, got = _same(engine, assemble(_SPECIALS + f"seti r6, 8\n{op}\nhalt"), img)
    assert (got.error, got.error_pc) == (code, 11)


OVERFLOWS = {
    "add": ("vop add, r1, r0, r0, 1, 0", 3e38),
    "mul": ("vop mul, r1, r0, r0, 1, 0", 3e38),
    "lrelu": ("vact lrelu, r1, r0, 1", -3e38),  # a negative lane's product overflows
}


@pytest.mark.rtl
@pytest.mark.parametrize("name", sorted(OVERFLOWS))
@pytest.mark.parametrize("which", ENGINES)
def test_mfu_overflow_names_the_instruction(request, which, name):
    engine = request.getfixturevalue(which)
    op, big = OVERFLOWS[name]
    img = bytearray(512)
    img[0:16] = np.array([big, 1, -1, 2], "<f4").tobytes()
    program = assemble(f"ld fvrf, r0, r0, 1, 1\ncfg alpha, r0, 10.0\nseti r1, 1\n{op}\nhalt")
    ref, got = _same(engine, program, img)
    assert (got.error, got.error_pc) == (ErrorCode.OVERFLOW, 3)


# Infinities and NaNs reach the FVRF only through clip bounds (a load refuses them); alpha is any
# binary32 pattern. Program prefix: x at FVRF 0, +Inf in every lane at 1, NaN at 2.
_SPECIALS = ("ld fvrf, r0, r0, 1, 1\nseti r1, 0x7f800000\ncfg clip_lo, r1, 0\ncfg clip_hi, r1, 0\nseti r2, 1\n"
             "vact clip, r2, r0, 1\nseti r3, 0x7fc00000\ncfg clip_lo, r3, 0\nseti r4, 2\nvact clip, r4, r0, 1\n")


@pytest.mark.rtl
@pytest.mark.parametrize("which", ENGINES)
def test_mfu_passes_inf_and_nan_through_max_and_relu_and_takes_a_subnormal_alpha(request, which):
    """numpy's maximum keeps a NaN or Inf operand without an error; a subnormal alpha is exact."""
    engine = request.getfixturevalue(which)
    img = bytearray(512)
    img[0:16] = np.array([1.5, -3e38, 0.0, -1e-3], "<f4").tobytes()
    program = assemble(_SPECIALS + "seti r5, 3\nvop max, r5, r2, r0, 1, 0\nseti r5, 4\nvop max, r5, r0, r4, 1, 0\n"
                       "seti r5, 5\nvact relu, r5, r4, 1\nseti r6, 1\ncfg alpha, r6, 0\nseti r5, 6\n"
                       "vact lrelu, r5, r0, 1\nseti r7, 64\nst fvrf, r2, r7, 1, 6\nhalt")
    ref, got = _same(engine, program, img)
    assert got.error is ErrorCode.NONE
    out = np.frombuffer(bytes(got.memory[64:160]), "<f4").reshape(6, 4)
    assert np.isinf(out[2]).all() and np.isnan(out[3]).all() and np.isnan(out[4]).all()
    assert out[5, 1] == np.float32(-3e38 * 2.0**-149) != 0  # a subnormal alpha, not read as zero


@pytest.mark.rtl
@pytest.mark.parametrize("op", ["vop add, r5, r0, r2, 1, 0", "vop mul, r5, r4, r0, 1, 0"])
def test_mfu_inf_or_nan_operand_of_add_or_mul_is_an_overflow(engine, op):
    img = bytearray(512)
    img[0:16] = np.array([1.5, -2.0, 0.0, 1.0], "<f4").tobytes()
    ref, got = _same(engine, assemble(_SPECIALS + f"seti r5, 3\n{op}\nhalt"), img)
    assert (got.error, got.error_pc) == (ErrorCode.OVERFLOW, 11)


@pytest.mark.rtl
def test_lrelu_keeps_a_positive_lane_whose_product_would_overflow(engine):
    """x < 0 ? x * alpha : x (docs/numerics.md): a positive lane is never multiplied."""
    img = bytearray(512)
    img[0:16] = np.array([3e38, 1, -1, 2], "<f4").tobytes()
    program = assemble("ld fvrf, r0, r0, 1, 1\ncfg alpha, r0, 10.0\nseti r1, 1\nvact lrelu, r1, r0, 1\n"
                       "seti r2, 64\nst fvrf, r1, r2, 1, 1\nhalt")
    ref, got = _same(engine, program, img)
    assert got.error is ErrorCode.NONE
    np.testing.assert_array_equal(np.frombuffer(bytes(got.memory[64:80]), "<f4"),
                                  np.array([3e38, 1, -10, 2], np.float32))


@pytest.mark.rtl
@pytest.mark.parametrize(("seed", "stall_mask"), [(0, 0), (1, 0), (2, 0x0001), (3, 0x0101), (4, 0x0003), (5, 0x8001)])
def test_random_dma_programs(engine, seed, stall_mask):
    """Memory-port back-pressure (stall_mask) changes the timing, never the result."""
    rnd = random.Random(seed)
    size = rnd.choice([1500, 2048, 3001])
    ro = rnd.choice([0, 128, 301])
    program = random_dma_program(CFG, rnd, mem_size=size, ro_bytes=ro)
    _same(engine, program, valid_image(size, seed), ro_bytes=ro, stall_mask=stall_mask)


def _bad_bfp_image():
    img = valid_image(512, 1)
    img[4] = 0xFF  # the exponent byte of the first vector: the reserved field
    return img


def _bad_fp_image():
    img = valid_image(512, 2)
    img[16 + 3] = 0x7F
    img[16 + 2] = 0x80  # vector 1, element 0: exponent 255 (an infinity)
    return img


ERROR_CASES = {
    "past_end": ("seti r1, 4\nnop", ErrorCode.PAST_END, 2),
    "loop_fit": ("nop\nloop r0, 2, 3\nnop\nhalt", ErrorCode.LOOP_FIT, 1),
    "loop_overlap": ("loop r0, 2, 2\nloop r0, 2, 2\nnop\nnop\nhalt", ErrorCode.LOOP_OVERLAP, 1),
    "loop_depth": ("loop r0, 2, 5\n" "loop r0, 2, 4\n" "loop r0, 2, 3\n" "loop r0, 2, 2\n" "loop r0, 2, 1\n"
                   "nop\nhalt", ErrorCode.LOOP_DEPTH, 4),
    "chip_range": ("seti r1, 8190\nld vrf, r1, r0, 1, 3\nhalt", ErrorCode.CHIP_RANGE, 1),
    "chip_range_strided": ("cfg chip_stride, r0, 600\nld mrf, r0, r0, 2, 1\nhalt", ErrorCode.CHIP_RANGE, 1),
    "mem_range": ("seti r1, 500\nld fvrf, r0, r1, 1, 1\nhalt", ErrorCode.MEM_RANGE, 1),
    "mem_stride": ("cfg mem_stride, r0, 9\nld vrf, r0, r0, 2, 2\nhalt", ErrorCode.MEM_STRIDE, 1),
    "read_only": ("seti r1, 100\nst vrf, r0, r1, 1, 1\nhalt", ErrorCode.READ_ONLY, 1),
    "bad_bfp": ("ld vrf, r0, r0, 1, 2\nhalt", ErrorCode.BAD_BFP, 0),
    "bad_fp": ("ld fvrf, r0, r0, 1, 2\nhalt", ErrorCode.BAD_FP, 0),
    "mfu_range": ("seti r1, 8190\nvop add, r0, r0, r1, 4, 3\nhalt", ErrorCode.CHIP_RANGE, 1),
    "deq_range": ("seti r1, 8191\ndeq r0, r1, 2\nhalt", ErrorCode.CHIP_RANGE, 1),
    "vact_overlap": ("seti r1, 1\nvact relu, r1, r0, 4\nhalt", ErrorCode.MFU_OVERLAP, 1),
    "vop_overlap": ("seti r1, 3\nvop max, r1, r0, r1, 4, 0\nhalt", ErrorCode.MFU_OVERLAP, 1),
    "vop_periodic_overlap": ("seti r1, 2\nvop add, r0, r0, r1, 4, 2\nhalt", ErrorCode.MFU_OVERLAP, 1),
    # a fused vop's operands in the VRF: ranges against the VRF, overlaps only within one file
    "vop_vrf_b_range": ("seti r1, 8190\nvop add, r0, r0, r1, 4, 0, copy, fvrf, vrf\nhalt", ErrorCode.CHIP_RANGE, 1),
    "vop_vrf_dest_range": ("seti r1, 8190\nvop add, r1, r0, r0, 4, 0, relu, vrf\nhalt", ErrorCode.CHIP_RANGE, 1),
    "vop_vrf_overlap": ("seti r1, 2\nvop add, r1, r0, r0, 4, 0, copy, vrf, vrf\nhalt", ErrorCode.MFU_OVERLAP, 1),
    "vop_other_file_no_overlap": ("seti r1, 2\nvop add, r1, r0, r0, 4, 0, copy, vrf\nseti r3, 100\n"
                                  "vop max, r1, r3, r0, 4, 0, copy, fvrf, vrf\nseti r2, 100\n"
                                  "st vrf, r0, r2, 1, 1\nhalt",
                                  ErrorCode.READ_ONLY, 5),
    "step_budget": ("loop r0, 60000, 2\nloop r0, 60000, 1\nnop\nhalt", ErrorCode.STEP_BUDGET, 2),
    "zero_count_skips": ("loop r0, 0, 1\nseti r1, 300\nst vrf, r0, r1, 1, 1\nhalt", ErrorCode.READ_ONLY, 2),
    # mvc / pool: FuncSim._window, then the spans in its order, then the groups, then the data
    "mvc_window": ("cfg kh, r0, 0\nmvc r0, r0, r0, 0\nhalt", ErrorCode.WINDOW, 1),
    "pool_window": ("cfg in_cb, r0, 0\npool max, r0, r0\nhalt", ErrorCode.WINDOW, 1),
    "mvc_window_before_range": ("seti r1, 9000\ncfg dil_w, r0, 0\nmvc r0, r1, r0, 0\nhalt", ErrorCode.WINDOW, 2),
    "mvc_vrf_range": ("seti r1, 8191\ncfg in_cb, r0, 2\nmvc r0, r1, r0, 0\nhalt", ErrorCode.CHIP_RANGE, 2),
    "mvc_mrf_range": ("seti r1, 511\ncfg kh, r0, 2\nmvc r0, r0, r1, 0\nhalt", ErrorCode.CHIP_RANGE, 2),
    "mvc_fvrf_range": ("seti r1, 8191\ncfg npix, r0, 2\nmvc r1, r0, r0, 1\nhalt", ErrorCode.CHIP_RANGE, 2),
    "pool_fvrf_range": ("seti r1, 8190\ncfg npix, r0, 3\npool avg, r1, r0\nhalt", ErrorCode.CHIP_RANGE, 2),
    # spans whose products wrap at 32 and 64 bits (control saturates them: still out of range)
    "mvc_vrf_span_wraps": ("cfg in_h, r0, 0x10000\ncfg in_w, r0, 0x10000\nmvc r0, r0, r0, 0\nhalt",
                           ErrorCode.CHIP_RANGE, 2),
    "mvc_mrf_span_wraps": ("cfg kh, r0, 0x10000\ncfg kw, r0, 0x10000\ncfg npix, r0, 0\ncfg gi, r0, 0x10000\n"
                           "mvc r0, r0, r0, 0\nhalt", ErrorCode.CHIP_RANGE, 4),
    "pool_fvrf_span_wraps": ("cfg npix, r0, 0x80000000\ncfg in_cb, r0, 2\npool max, r0, r0\nhalt",
                             ErrorCode.CHIP_RANGE, 2),
    "mvc_group_range": ("cfg in_cb, r0, 2\ncfg gi, r0, 1\ncfg go, r0, 1\ncfg cob, r0, 2\ncfg ob0, r0, 1\n"
                        "mvc r0, r0, r0, 0\nhalt", ErrorCode.GROUP_RANGE, 5),
    "mvc_group_range_no_pixels": ("cfg in_cb, r0, 2\ncfg gi, r0, 3\ncfg npix, r0, 0\nmvc r0, r0, r0, 0\nhalt",
                                  ErrorCode.GROUP_RANGE, 3),
    "pool_max_empty": ("cfg pad_l, r0, 1\npool max, r0, r0\nhalt", ErrorCode.EMPTY_WINDOW, 1),
    "pool_avg_empty": ("cfg in_w, r0, 2\ncfg npix, r0, 2\ncfg pad_t, r0, 0xFFFFFFFF\ncfg in_h, r0, 1\n"
                       "pool avg, r0, r0\nhalt", ErrorCode.EMPTY_WINDOW, 4),
    "pool_avg_pad_empty": ("cfg pad_t, r0, 0xFFFFFFFF\npool avg_pad, r0, r0\nhalt", ErrorCode.EMPTY_WINDOW, 1),
}


@pytest.mark.rtl
@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_error_paths_name_code_and_instruction(engine, name):
    text, code, pc = ERROR_CASES[name]
    image = {"bad_bfp": _bad_bfp_image, "bad_fp": _bad_fp_image}.get(name, lambda: valid_image(512, 0))()
    ref, got = _same(engine, assemble(text), image, ro_bytes=128, max_steps=1000)
    assert (got.error, got.error_pc) == (code, pc)


@pytest.mark.rtl
def test_zero_count_loop_ending_with_its_enclosing_body_closes_that_loop(engine):
    """The skipped body ends where the outer body does: the outer loop repeats (r1 = 3 * 50), so the
    store lands at 150, past the read-only image, not at 50 inside it."""
    program = assemble("loop r0, 3, 3\naddi r1, r1, 50\nloop r0, 0, 1\nnop\nst vrf, r0, r1, 1, 1\nhalt")
    ref, got = _same(engine, program, valid_image(512, 6), ro_bytes=128)
    assert got.error is ErrorCode.NONE and got.steps == ref_steps(program)


def ref_steps(program) -> int:
    return FuncSim(CFG, 512, numerics=False, timing=False).run(program).instructions


def _late_bad_bfp_image():
    img = valid_image(1024, 8)
    img[39 * 5 + 4] = 0xFF  # the exponent byte of vector 39: a 40-vector load fails at its end
    img[512:528] = np.array([3e38, 1, 2, 3], "<f4").tobytes()  # x + x overflows
    return img


ORDER_CASES = {
    # a range error found at issue in a later instruction while the load is still in flight
    "range_error_after_a_faulting_load": ("ld vrf, r0, r0, 1, 40\nseti r1, 8190\nld vrf, r1, r0, 1, 3\nhalt",
                                          ErrorCode.BAD_BFP, 0),
    # the MFU's overflow in a younger instruction is reported first; the older load's fault wins
    "younger_unit_fault_first": ("seti r2, 512\nld fvrf, r0, r2, 1, 1\nld vrf, r0, r0, 1, 40\n"
                                 "vop add, r3, r0, r0, 1, 0\nhalt", ErrorCode.BAD_BFP, 2),
    # and with the load faultless, the younger instruction's overflow is the error
    "unit_fault_alone": ("seti r2, 512\nld fvrf, r0, r2, 1, 1\nld vrf, r0, r0, 1, 39\n"
                         "vop add, r3, r0, r0, 1, 0\nhalt", ErrorCode.OVERFLOW, 3),
}


@pytest.mark.rtl
@pytest.mark.parametrize("name", sorted(ORDER_CASES))
def test_the_oldest_faulting_instruction_names_the_error(engine, name):
    """Units run concurrently, so faults arrive out of program order; the engine reports the one
    funcsim stops at (the first in program order), with that instruction's PC."""
    text, code, pc = ORDER_CASES[name]
    ref, got = _same(engine, assemble(text), _late_bad_bfp_image())
    assert (got.error, got.error_pc) == (code, pc)


ILLEGAL_WORDS = {
    "opcode": 0x3F,  # opcode 63
    "high_bits": Instruction.make(Opcode.NOP).op.value | 1 << 40,
    "cfg_key": Opcode.CFG.value | 30 << 6,  # Cfg has 25 keys
    "space": Opcode.LD.value | 3 << 6,
    "halt_high_bits": Opcode.HALT.value | 1 << 63,
}


@pytest.mark.rtl
@pytest.mark.parametrize("name", sorted(ILLEGAL_WORDS))
def test_illegal_word_stops_at_its_index(engine, name):
    from accelml.hdl.isa import encode

    words = [encode(Instruction.make(Opcode.SETI, rd=1, imm=7)), encode(Instruction.make(Opcode.NOP)),
             ILLEGAL_WORDS[name], encode(Instruction.make(Opcode.HALT))]
    _, got = _same(engine, words, valid_image(256, 3))
    assert (got.error, got.error_pc) == (ErrorCode.ILLEGAL_INSN, 2)


@pytest.mark.rtl
def test_cycle_budget_stops_a_long_transfer(engine):
    prog = [Instruction.make(Opcode.CFG, key=Cfg.MEM_STRIDE, rs=0, imm=0),
            Instruction.make(Opcode.LD, space=Space.FVRF, rc=0, rm=0, rows=8, length=16),
            Instruction.make(Opcode.HALT)]
    got = engine.run(prog, valid_image(4096, 4), max_cycles=40)
    assert (got.error, got.error_pc) == (ErrorCode.CYCLE_BUDGET, 1)
    assert got.cycles == 41
    assert funcsim_outcome(CFG, prog, valid_image(4096, 4)).error is ErrorCode.NONE  # no budget there


OTHER_MEMORIES = {
    "ecp5": preset("ecp5"),  # 4-byte words, BFP vectors wider than a word, latency 12
    # a10's memory system (64-byte words, latency 100, DDR4 costs at 300 MHz) on small files and one
    # MFU lane (its 8 x 16 binary32 lanes would make the build far longer; wide_engine tests W lanes)
    "a10-memory": dataclasses.replace(preset("a10"), vrf_vectors=256, mrf_tiles=64, fvrf_vectors=256, tiles=1,
                                      mfu_width=1, vrf_reads=0),
}


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OTHER_MEMORIES))
def test_cycle_model_is_exact_on_other_memory_systems(name):
    """Random DMA programs on engines of other word widths, latencies and DRAM costs: the RTL's
    cycles and busy counts equal the cycle model's (builds one engine each: slow)."""
    rtl.require_tools()
    cfg = OTHER_MEMORIES[name]
    engine = EngineSim(cfg)
    timed = 0
    for seed in range(8):
        rnd = random.Random(seed)
        size = rnd.choice([15000, 20480, 30001])
        ro = rnd.choice([0, 128, 301])
        program = random_dma_program(cfg, rnd, mem_size=size, ro_bytes=ro)
        image = valid_image(size, seed)
        ref = funcsim_outcome(cfg, program, image, ro_bytes=ro)
        got = engine.run(program, image, ro_bytes=ro)
        assert (got.error, got.error_pc) == (ref.error, ref.error_pc) and (got.memory == ref.memory).all()
        if ref.error is ErrorCode.NONE:  # a program that stops on a range error is not timed
            assert (ref.cycles, ref.busy) == (got.cycles, got.busy)
            timed += 1
    assert timed >= 2, "too few of the random programs ran to their end to check the cycles"


# -- mvc and pool --------------------------------------------------------------------------------

@pytest.mark.rtl
@pytest.mark.parametrize(("seed", "stall_mask"), [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0x0101), (5, 0), (6, 0),
                                                  (7, 0)])
def test_random_window_programs(engine, seed, stall_mask):
    """mvc (dense, grouped, depthwise, acc = 0 / 1) and pool (max, avg, avg_pad) with padding,
    stride 2, dilation 2, negative top pads, odd sizes, zero blocks and exponent extremes."""
    program, image = random_window_program(CFG, random.Random(seed), instructions=4)
    ref, got = _same(engine, program, image, stall_mask=stall_mask)
    assert got.error is ErrorCode.NONE and got.busy["mvu"] + got.busy["pool"] > 0


# a banked MRF on three tile engines (isa.md, "Banked MRF"): engine t reads bank t only; the
# compiled CNN runs on the same build in test_engine_cnn.py
BANKED = dataclasses.replace(CFG, tiles=3, mrf_tiles=510, mrf_banked=True, name="tiny-b3")
# six banked engines writing four results a cycle: a divisor's runs of 1, 2 or 3 results a pixel
# (dstride) cross the windows of four lanes
BANKED_WIDE = dataclasses.replace(CFG, tiles=6, mrf_tiles=510, mrf_banked=True, mfu_width=4, name="tiny-b6w4")


@pytest.mark.rtl
@pytest.mark.parametrize("cfg", [BANKED, BANKED_WIDE], ids=["b3", "b6w4"])
def test_random_window_programs_on_a_banked_mrf(cfg):
    """Chunks of a multiple and of a divisor of T, whose copies in the banks differ (random tiles)
    or come from one load with copies: each class of pixels reads its own engine's bank, in funcsim
    as in the RTL, in the modelled cycles; results at a pixel stride of their own (dstride); now
    and then a cob or a start the banks refuse (MRF_BANK at that mvc, in both)."""
    rtl.require_tools()
    engine = EngineSim(cfg)
    outcomes = collections.Counter()
    for seed in range(16):
        program, image = random_window_program(cfg, random.Random(900 + seed), instructions=4)
        _, got = _same(engine, program, image)
        outcomes[got.error] += 1
    assert outcomes[ErrorCode.NONE] >= 10, outcomes
    assert outcomes[ErrorCode.MRF_BANK] >= (cfg is BANKED), outcomes  # these seeds refuse one on three banks


# the VRF read through fewer ports than tile engines (EngineConfig.vrf_reads): five engines on two
# VRF reads; six banked engines writing four results a cycle on one
FEW_READS = dataclasses.replace(CFG, tiles=5, vrf_reads=2, name="tiny-t5-v2")
FEW_READS_BANKED = dataclasses.replace(BANKED_WIDE, vrf_reads=1, name="tiny-b6w4-v1")


@pytest.mark.rtl
@pytest.mark.parametrize("cfg", [FEW_READS, FEW_READS_BANKED], ids=["t5v2", "b6w4v1"])
def test_random_window_programs_read_the_vrf_through_fewer_ports(cfg):
    """A step's distinct VRF entries (lanes of one pixel's block share one; a tap outside the input
    reads none) are read V a cycle and handed to the engines that read them: dense, grouped and
    depthwise mvc bit for bit as funcsim, in exactly the modelled cycles
    (cycles.mvu_round_cycles), which are more than with a read port per engine."""
    rtl.require_tools()
    engine = EngineSim(cfg)
    full = dataclasses.replace(cfg, vrf_reads=0)
    outcomes, slower = collections.Counter(), 0
    for seed in range(12):
        program, image = random_window_program(cfg, random.Random(1200 + seed), instructions=4)
        ref, got = _same(engine, program, image)
        outcomes[got.error] += 1
        if got.error is ErrorCode.NONE:
            assert (ref.cycles, ref.busy) == (got.cycles, got.busy)
            slower += FuncSim(full, len(image), numerics=False).run(program).busy["mvu"] < got.busy["mvu"]
    assert outcomes[ErrorCode.NONE] >= 8, outcomes
    assert slower >= 4, slower


@pytest.mark.rtl
@pytest.mark.parametrize("cfg", [BANKED, BANKED_WIDE], ids=["b3", "b6w4"])
def test_a_store_from_a_banked_mrf_reads_through_the_mvus_bank_ports(cfg):
    """A banked MRF's banks have one read port each, the MVU's; a store of the MRF shares them, so
    it waits for the mvc before it (layouts.shared_ports). The tiles stored are funcsim's, byte for
    byte; the RTL's cycles are the model's exactly, and more than the model gives when it lets the
    two run at once."""
    rtl.require_tools()
    engine = EngineSim(cfg)
    assert (Space.MRF, False) in FuncSim(cfg, 64, numerics=False).model.shared
    waited = 0
    for seed in range(4):
        program, image = random_window_program(cfg, random.Random(950 + seed), instructions=3, store_tiles=True)
        assert any(i.op is Opcode.ST and i.space is Space.MRF for i in program)
        ref, got = _same(engine, program, image)
        if got.error is ErrorCode.NONE:
            assert (ref.cycles, ref.busy) == (got.cycles, got.busy)
            at_once = FuncSim(cfg, len(image), numerics=False)
            at_once.model.shared = {}
            waited += at_once.run(program).cycles < got.cycles
    assert waited >= 2


@pytest.mark.rtl
@pytest.mark.parametrize("seed", range(3))
def test_window_programs_at_the_exponent_extremes(engine, seed):
    """Half the blocks at the ends of the exponent range: terms flushed to zero, sums that overflow
    (the run then stops at that mvc with OVERFLOW, as the functional simulator does)."""
    program, image = random_window_program(CFG, random.Random(100 + seed), instructions=4, extreme=0.5)
    _same(engine, program, image)


@pytest.mark.rtl
def test_mvc_overflow_names_the_instruction(engine):
    n = CFG.native_dim
    img = bytearray(512)
    blob = encode_bfp(np.full((1 + n, n), 127), np.full(1 + n, CFG.exp_max), CFG)  # a block, a tile
    img[0:len(blob)] = blob
    program = assemble(f"ld vrf, r0, r0, 1, 1\nseti r1, {CFG.bfp_vector_bytes}\nld mrf, r0, r1, 1, 1\n"
                       "mvc r0, r0, r0, 0\nhalt")
    ref, got = _same(engine, program, img)
    assert (got.error, got.error_pc) == (ErrorCode.OVERFLOW, 3)


MVC_SHAPES = {  # taps * gi >= T = 2
    "3x3": {"in_h": 4, "in_w": 4, "kh": 3, "kw": 3, "out_w": 2, "npix": 4, "in_cb": 2, "cob": 3},
    "1x1_two_blocks": {"in_h": 4, "in_w": 4, "out_w": 4, "npix": 16, "in_cb": 2, "cob": 2},
    "depthwise": {"in_h": 6, "in_w": 6, "kh": 3, "kw": 3, "out_w": 4, "npix": 16, "in_cb": 4, "cob": 4, "gi": 1,
                  "go": 1},
    "groups_of_two": {"in_h": 6, "in_w": 6, "kh": 3, "kw": 3, "out_w": 4, "npix": 15, "in_cb": 4, "cob": 3,
                      "gi": 2, "go": 2, "ob0": 1},
}


MVC_SHAPES.update({  # taps * gi < T: each round after the first waits for the writes (W = 1: T of them)
    "1x1_one_block": {"in_h": 4, "in_w": 4, "out_w": 4, "npix": 15, "in_cb": 1, "cob": 1},
    "depthwise_1x1": {"in_h": 4, "in_w": 4, "out_w": 4, "npix": 16, "in_cb": 4, "cob": 4, "gi": 1, "go": 1},
    "no_pixels": {"in_h": 4, "in_w": 4, "out_w": 4, "npix": 0, "in_cb": 1, "cob": 1},
})


@pytest.mark.rtl
@pytest.mark.parametrize("name", sorted(MVC_SHAPES))
def test_mvc_cycles_are_modelled_exactly(engine, name):
    """busy_mvu = cycles.mvu_busy: the rounds of T pairs back to back (or every ceil(T / W) cycles,
    here T, when taps * gi is less), plus the window's divisions, the pipeline and the last round's
    writes; the whole run's cycles too (_same asserts the tolerance, this the equality)."""
    from accelml.sim.cycles import mvu_busy

    cfgs = MVC_SHAPES[name]
    gi = cfgs.get("gi") or cfgs["in_cb"]
    kb = cfgs.get("kh", 1) * cfgs.get("kw", 1) * gi
    text = "".join(f"cfg {k}, r0, {v}\n" for k, v in cfgs.items())
    for acc in (0, 1):
        ref, got = _same(engine, assemble(text + f"mvc r0, r0, r0, {acc}\nhalt"), valid_image(256, 9))
        assert got.busy["mvu"] == mvu_busy(CFG.tiles, cfgs["cob"] * cfgs["npix"], kb, width=CFG.mfu_width)
        assert (ref.cycles, ref.busy) == (got.cycles, got.busy)


WIDE_MVC = {  # (in_cb, cob, npix, kh): T = 5 results a round written 4 at a time, in 2 cycles
    "kb1_13_pairs": (1, 1, 13, 1),  # kb = 1 < 2: the writes pace the rounds; the last round of 3
    "kb1_14_pairs": (1, 2, 7, 1),  # the last round of 4: its second write has no live lane
    "kb3_9_pairs": (3, 1, 9, 1),  # kb = 3: back to back
    "3x3_kb9": (1, 2, 4, 3),
}


@pytest.mark.rtl
@pytest.mark.parametrize("name", sorted(WIDE_MVC))
def test_mvc_writes_its_results_w_at_a_time(wide_engine, name):
    """T = 5 tile engines on a 4-banked FVRF: each round's results are written 4 consecutive entries
    a cycle from a start in any bank (dbase not a multiple of 4), the last round's lanes beyond the
    pairs masked; the whole FVRF around the destination is stored, so a stray write shows, and
    busy_mvu is cycles.mvu_busy exactly (a round every max(kb, 2) cycles, not every T)."""
    from accelml.sim.cycles import mvu_busy

    cfg = WIDE
    in_cb, cob, npix, k = WIDE_MVC[name]
    rnd = random.Random(name)
    side = max(k, 4)
    out_w = side - k + 1
    vectors, tiles = side * side * in_cb, cob * k * k * in_cb
    pairs, kb = cob * npix, k * k * in_cb
    span = 64  # FVRF entries stored: the destination and what lies around it
    vaddr = 0
    taddr = vaddr + -(-vectors * cfg.bfp_vector_bytes // 16) * 16
    faddr = taddr + -(-tiles * cfg.tile_bytes // 16) * 16
    oaddr = faddr + span * cfg.fp_vector_bytes
    rng = np.random.default_rng(rnd.getrandbits(32))
    img = bytearray(bfp_bytes(cfg, rnd, vectors, extreme=0.0, high=False))
    img.extend(bytes(taddr - len(img)))
    img.extend(bfp_bytes(cfg, rnd, tiles * cfg.native_dim, extreme=0.0, high=False))
    img.extend(bytes(faddr - len(img)))
    img.extend((rng.standard_normal((span, cfg.native_dim)) * 8).astype("<f4").tobytes())
    img.extend(bytes(span * cfg.fp_vector_bytes + 64))
    geometry = {"in_h": side, "in_w": side, "kh": k, "kw": k, "out_w": out_w, "npix": npix, "in_cb": in_cb,
                "cob": cob}
    assert npix <= out_w * out_w and pairs % cfg.tiles  # the shape: a last round short of T pairs
    for dbase, acc in ((1, 0), (3, 1), (6, 1)):
        text = "".join(f"cfg {key}, r0, {v}\n" for key, v in geometry.items())
        text += (f"seti r1, {taddr}\nld vrf, r0, r0, 1, {vectors}\nld mrf, r0, r1, 1, {tiles}\n"
                 f"seti r2, {faddr}\nld fvrf, r0, r2, 1, {span}\nseti r3, {dbase}\nmvc r3, r0, r0, {acc}\n"
                 f"seti r4, {oaddr}\nst fvrf, r0, r4, 1, {span}\nhalt")
        ref, got = _same(wide_engine, assemble(text), img)
        assert got.error is ErrorCode.NONE
        out = np.frombuffer(bytes(got.memory[oaddr:oaddr + span * cfg.fp_vector_bytes]), "<f4")
        before = np.frombuffer(bytes(img[faddr:faddr + span * cfg.fp_vector_bytes]), "<f4")
        per = cfg.native_dim
        assert (out[:dbase * per] == before[:dbase * per]).all()  # around the destination: untouched
        assert (out[(dbase + pairs) * per:] == before[(dbase + pairs) * per:]).all()
        assert (out[dbase * per:(dbase + pairs) * per] != before[dbase * per:(dbase + pairs) * per]).any()
        assert got.busy["mvu"] == mvu_busy(cfg.tiles, pairs, kb, width=cfg.mfu_width)
        assert (ref.cycles, ref.busy) == (got.cycles, got.busy)
    if kb < cfg.tiles:  # the rounds no longer wait for T one-entry writes
        assert mvu_busy(cfg.tiles, pairs, kb, width=cfg.mfu_width) < mvu_busy(cfg.tiles, pairs, kb, width=1)


# (cfg, cob, dstride): an accumulating 1x1 mvc of one input block (kb = 1), so a round's sums are read
# in as many cycles as a round takes (its writes': 2 on tiny, up to 6 parts strided on six banks)
ACC_AHEAD = {"tiny_cob1": (CFG, 1, 0), "tiny_cob3": (CFG, 3, 0), "b6w4_cob1_strided": (BANKED_WIDE, 1, 3),
             "b6w4_cob2_strided": (BANKED_WIDE, 2, 3), "b6w4_cob3_strided": (BANKED_WIDE, 3, 5),
             "b6w4_cob6": (BANKED_WIDE, 6, 8), "b6w4_cob12": (BANKED_WIDE, 12, 0),
             # one tile engine: a round's sums in one read, a round every cycle (the build of
             # test_random_window_programs_on_other_configs, in the slow set)
             "tiles1_cob2": (dataclasses.replace(CFG, tiles=1), 2, 0)}


@pytest.mark.rtl
@pytest.mark.parametrize("name", [pytest.param(k, marks=[pytest.mark.slow] if k.startswith("tiles1") else [])
                                  for k in sorted(ACC_AHEAD)])
def test_an_accumulating_mvc_reads_its_sums_ahead_at_no_cost(name):
    """The MVU reads an accumulating mvc's sums through its W-wide FVRF port, a round's in the parts
    its results are written in, ahead of the rounds (three slots): rounds of one step each, the
    tightest case, run in the same cycles as without accumulating (cycles.mvu_busy, exactly), and
    each pair continues its own sum (the FVRF stored whole, against funcsim)."""
    from accelml.sim.cycles import mvu_busy

    cfg, cob, ds = ACC_AHEAD[name]
    rtl.require_tools()
    engine = EngineSim(cfg)
    rnd = random.Random(name)
    npix, span, dbase = 16, 200, 5
    tiles = -(-cob // cfg.tiles) * cfg.tiles if cfg.mrf_banked else cob
    vaddr, taddr, faddr = 0, 16 * cfg.bfp_vector_bytes, 16 * cfg.bfp_vector_bytes + tiles * cfg.tile_bytes
    oaddr = faddr + span * cfg.fp_vector_bytes
    img = bytearray(bfp_bytes(cfg, rnd, 16, extreme=0.0, high=False))
    img.extend(bfp_bytes(cfg, rnd, tiles * cfg.native_dim, extreme=0.0, high=False))
    rng = np.random.default_rng(rnd.getrandbits(32))
    img.extend((rng.standard_normal((span, cfg.native_dim)) * 8).astype("<f4").tobytes())
    img.extend(bytes(span * cfg.fp_vector_bytes + 64))
    assert len(img) >= oaddr + span * cfg.fp_vector_bytes and vaddr == 0
    busy = {}
    for acc in (0, 1):
        text = "".join(f"cfg {key}, r0, {v}\n" for key, v in {
            "in_h": 4, "in_w": 4, "out_w": 4, "npix": npix, "in_cb": 1, "cob": cob,
            **({"dstride": ds} if cfg.mrf_banked else {})}.items())
        text += (f"seti r1, {taddr}\nld vrf, r0, r0, 1, 16\nld mrf, r0, r1, 1, {tiles}\n"
                 f"seti r2, {faddr}\nld fvrf, r0, r2, 1, {span}\nseti r3, {dbase}\nmvc r3, r0, r0, {acc}\n"
                 f"seti r4, {oaddr}\nst fvrf, r0, r4, 1, {span}\nhalt")
        ref, got = _same(engine, assemble(text), img)
        assert got.error is ErrorCode.NONE
        assert (ref.cycles, ref.busy) == (got.cycles, got.busy)
        busy[acc] = got.busy["mvu"]
        group = cob if cfg.mrf_banked and ds and ds != cob and cob < cfg.tiles else 0
        assert busy[acc] == mvu_busy(cfg.tiles, cob * npix, 1, width=cfg.mfu_width, group=group)
    assert busy[0] == busy[1]


def _image_for_one_mvc(cfg, rnd, span: int, room: int) -> tuple[bytearray, int, int, int]:
    """A memory image of 16 BFP vectors at 0, one weight tile, ``span`` binary32 vectors and
    ``room`` bytes (and a word more) for the stores: (image, tile's, vectors', room's address)."""
    taddr, faddr = 16 * cfg.bfp_vector_bytes, 16 * cfg.bfp_vector_bytes + cfg.tile_bytes
    img = bytearray(bfp_bytes(cfg, rnd, 16, extreme=0.0, high=False))
    img.extend(bfp_bytes(cfg, rnd, cfg.native_dim, extreme=0.0, high=False))
    rng = np.random.default_rng(rnd.getrandbits(32))
    img.extend((rng.standard_normal((span, cfg.native_dim)) * 8).astype("<f4").tobytes())
    img.extend(bytes(room + 64))
    return img, taddr, faddr, faddr + span * cfg.fp_vector_bytes


# the MVU's FVRF read shares the MFU's port on shared ports (tiny) and on a port per unit
SUMS_BESIDE_MFU = {"shared": CFG, "unit": dataclasses.replace(CFG, file_ports="unit", name="tiny-unit")}


@pytest.mark.rtl
@pytest.mark.parametrize("name", sorted(SUMS_BESIDE_MFU))
def test_an_accumulating_mvc_reads_its_sums_through_the_mfus_port(request, name):
    """The MVU reads an accumulating mvc's sums through the MFU's FVRF read port
    (layouts.SHARED_READS): a qnt reading other FVRF entries and an accumulating mvc take turns,
    a non-accumulating one runs beside it, in the cycles the model gives, the results byte for byte
    funcsim's; the model with the MVU's read on a port of its own runs both at once."""
    from accelml.bitstreams.banking import own_fvrf_read

    cfg = SUMS_BESIDE_MFU[name]
    rtl.require_tools()
    engine = request.getfixturevalue("engine") if cfg is CFG else EngineSim(cfg)
    npix, span, qn = 16, 64, 40
    img, taddr, faddr, oaddr = _image_for_one_mvc(cfg, random.Random(name), span,
                                                  span * cfg.fp_vector_bytes + qn * cfg.bfp_vector_bytes)
    runs = {}
    for acc in (0, 1):
        # qnt: FVRF [20, 60) -> VRF [100, 140); mvc: VRF [0, 16) -> FVRF [0, 16), read too with acc
        text = "".join(f"cfg {key}, r0, {v}\n" for key, v in {
            "in_h": 4, "in_w": 4, "out_w": 4, "npix": npix, "in_cb": 1, "cob": 1}.items())
        text += (f"seti r1, {taddr}\nld vrf, r0, r0, 1, 16\nld mrf, r0, r1, 1, 1\n"
                 f"seti r2, {faddr}\nld fvrf, r0, r2, 1, {span}\nseti r5, 100\nseti r6, 20\n"
                 f"qnt r5, r6, {qn}\nmvc r0, r0, r0, {acc}\n"
                 f"seti r4, {oaddr}\nst fvrf, r0, r4, 1, 16\nseti r7, {oaddr + span * cfg.fp_vector_bytes}\n"
                 f"st vrf, r5, r7, 1, {qn}\nhalt")
        program = assemble(text)
        ref, got = _same(engine, program, img)
        assert got.error is ErrorCode.NONE
        assert (ref.cycles, ref.busy) == (got.cycles, got.busy)
        own = FuncSim(cfg, len(img), numerics=False)
        own.model.shared = own_fvrf_read(own.model.shared)
        runs[acc] = got.cycles, own.run(program).cycles
    # without acc the two run at once either way; with it they take turns, longer than the qnt alone
    assert runs[0][0] == runs[0][1] == runs[1][1] < runs[1][0]


# tiny, and four MFU lanes on five tile engines (WIDE), with the VRF and FVRF in two parts each
# (EngineConfig.file_parts): entries [0, 4096) and [4096, 8192)
IN_PARTS = {"tiny": ("engine", dataclasses.replace(CFG, file_parts=2, name="tiny-parts2")),
            "wide": ("wide_engine", dataclasses.replace(WIDE, file_parts=2, name="tiny-w4t5-parts2"))}


@pytest.mark.rtl
@pytest.mark.parametrize("acc", [0, 1])
@pytest.mark.parametrize("which", [pytest.param(k, marks=[pytest.mark.slow] if k != "tiny" else [])
                                   for k in IN_PARTS])
def test_units_on_different_parts_of_a_file_share_its_ports_at_once(request, which, acc):
    """Files in parts (EngineConfig.file_parts): each part has its own shared write and read port,
    so a qnt writing VRF part 1 runs beside a load into part 0, and an mvc writing (and,
    accumulating, reading) FVRF part 0 beside a vop reading and writing part 1; a vop writing part 0 takes turns
    with the mvc, and one writes across the two parts. With whole files they take turns. The RTL
    of both matches funcsim byte for byte in the cycles the model gives."""
    rnd = random.Random(acc)
    rtl.require_tools()
    fixture, parted = IN_PARTS[which]
    engines = {"whole": request.getfixturevalue(fixture), "parts": EngineSim(parted)}
    cfg = parted
    span, n = 64, 40
    img, taddr, faddr, oaddr = _image_for_one_mvc(cfg, rnd, span, (16 + 2 * n) * cfg.fp_vector_bytes
                                                  + (n + 16) * cfg.bfp_vector_bytes)
    o2, o3 = oaddr + 16 * cfg.fp_vector_bytes, oaddr + (16 + n) * cfg.fp_vector_bytes
    o4 = o3 + (n + 16) * cfg.bfp_vector_bytes
    cycles = {}
    for dst in (4300, 300):  # the vop's destination: FVRF part 1, or part 0 beside the mvc's sums
        text = "".join(f"cfg {key}, r0, {v}\n" for key, v in {
            "in_h": 4, "in_w": 4, "out_w": 4, "npix": 16, "in_cb": 1, "cob": 1}.items())
        text += (f"seti r1, {taddr}\nld vrf, r0, r0, 1, 16\nld mrf, r0, r1, 1, 1\n"
                 f"seti r2, {faddr}\nseti r8, 4200\nld fvrf, r8, r2, 1, {span}\n"
                 f"seti r11, 16\nld vrf, r11, r0, 1, 16\nseti r10, 4500\nqnt r10, r8, {n}\n"
                 f"seti r9, {dst}\nvop add, r9, r8, r8, {n}, 0\nmvc r0, r0, r0, {acc}\n"
                 f"seti r4, {oaddr}\nst fvrf, r0, r4, 1, 16\nseti r5, {o2}\nst fvrf, r9, r5, 1, {n}\n"
                 f"seti r6, {o3}\nst vrf, r10, r6, 1, {n}\nseti r7, {o3 + n * cfg.bfp_vector_bytes}\n"
                 f"st vrf, r11, r7, 1, 16\nseti r12, 4076\nvop add, r12, r8, r8, {n}, 0\n"
                 f"seti r13, {o4}\nst fvrf, r12, r13, 1, {n}\nhalt")
        program = assemble(text)
        for name, engine in engines.items():
            ref, got = _same(engine, program, img)
            assert got.error is ErrorCode.NONE
            assert (ref.cycles, ref.busy) == (got.cycles, got.busy)
            cycles[name, dst] = got.cycles
    assert cycles["parts", 4300] < cycles["parts", 300]  # the vop and the mvc at once on two parts
    assert cycles["whole", 4300] == cycles["whole", 300]  # one port: they take turns either way
    assert cycles["parts", 300] < cycles["whole", 300]  # the load and the qnt at once on two VRF parts


POOL_SHAPES = {
    "3x3": {"in_h": 4, "in_w": 4, "kh": 3, "kw": 3, "out_w": 2, "npix": 4, "in_cb": 2},
    "2x2_stride_2": {"in_h": 4, "in_w": 4, "kh": 2, "kw": 2, "stride_h": 2, "stride_w": 2, "out_w": 2, "npix": 4,
                     "in_cb": 3},
    "padded": {"in_h": 4, "in_w": 4, "kh": 3, "kw": 3, "pad_t": 1, "pad_l": 1, "out_w": 4, "npix": 16, "in_cb": 1},
    # rounds of two pairs of different pixels and different divisors, the last pair alone
    "padded_stride_2": {"in_h": 5, "in_w": 5, "kh": 3, "kw": 3, "stride_h": 2, "stride_w": 2, "pad_t": 1,
                        "pad_l": 1, "pad_b": 1, "pad_r": 1, "out_w": 3, "npix": 9, "in_cb": 3},
    "1x1_odd": {"in_h": 4, "in_w": 4, "out_w": 4, "npix": 5, "in_cb": 1},
    "one_pair": {"in_h": 4, "in_w": 4, "kh": 2, "kw": 2, "out_w": 3, "npix": 1, "in_cb": 1},
    "no_pixels": {"in_h": 4, "in_w": 4, "out_w": 4, "npix": 0, "in_cb": 1},
    # jobs of four, two and one channel blocks on four lanes (cycles.pool_group), a padded average
    "4_blocks_padded": {"in_h": 3, "in_w": 3, "kh": 3, "kw": 3, "stride_h": 2, "stride_w": 2, "pad_t": 1,
                        "pad_l": 1, "pad_b": 1, "pad_r": 1, "out_w": 2, "npix": 4, "in_cb": 4},
    "6_blocks": {"in_h": 3, "in_w": 3, "kh": 2, "kw": 2, "out_w": 2, "npix": 3, "in_cb": 6},
    "8_blocks_one_pixel": {"in_h": 2, "in_w": 2, "kh": 2, "kw": 2, "out_w": 1, "npix": 1, "in_cb": 8},
}


def _pool_reciprocals(cfgs: dict, mode: PoolMode) -> int:
    """cycles.pool_reciprocals of the window's output pixels' divisors (0 for max)."""
    from accelml.sim.cycles import pool_reciprocals

    if mode == PoolMode.MAX:
        return 0
    g = {"in_h": 1, "in_w": 1, "kh": 1, "kw": 1, "stride_h": 1, "stride_w": 1, "dil_h": 1, "dil_w": 1, "pad_t": 0,
         "pad_l": 0, "pad_b": 0, "pad_r": 0, "pix0": 0, **cfgs}
    geom = golden.ConvGeom(g["in_h"], g["in_w"], g["kh"], g["kw"], (g["stride_h"], g["stride_w"]),
                           (g["dil_h"], g["dil_w"]), (g["pad_t"], g["pad_l"], g["pad_b"], g["pad_r"]))
    grid = pixel_grid((g["pix0"], g["npix"], g["out_w"]))
    return pool_reciprocals(golden.avg_divisors(geom, mode == PoolMode.AVG_PAD, *grid))


@pytest.mark.rtl
@pytest.mark.parametrize("which", ENGINES)
@pytest.mark.parametrize("name", sorted(POOL_SHAPES))
def test_pool_cycles_are_modelled_exactly(request, which, name):
    """Every pool mode on random blocks, its results stored: the RTL's equal funcsim's (so the
    golden model's) bit for bit, and busy_pool = cycles.pool_busy (the jobs of pool_group
    channel blocks two at a time, their taps interleaved, a last job alone, each round's scaling
    and each output pixel's reciprocal for the averages, the setup); the run's cycles equal the
    model's. On four lanes a job folds up to four blocks of a pixel at once."""
    from accelml.sim.cycles import pool_busy, pool_group

    engine = request.getfixturevalue(which)
    cfgs = POOL_SHAPES[name]
    taps = cfgs.get("kh", 1) * cfgs.get("kw", 1)
    group = pool_group(cfgs["in_cb"], engine.cfg.mfu_width)
    assert group == min(engine.cfg.mfu_width, cfgs["in_cb"] & -cfgs["in_cb"])
    for mode in PoolMode:
        program, image = pool_program(engine.cfg, random.Random(f"{name} {mode.name}"), cfgs, mode, extreme=0.0)
        ref, got = _same(engine, program, image)
        assert got.error is ErrorCode.NONE
        assert got.busy["pool"] == pool_busy(mode.name.lower(), cfgs["npix"] * cfgs["in_cb"] // group, taps,
                                             _pool_reciprocals(cfgs, mode))
        assert (ref.cycles, ref.busy) == (got.cycles, got.busy)


@pytest.mark.rtl
@pytest.mark.parametrize("which", ENGINES)
def test_pool_between_mfu_commands_on_the_mfus_lanes(request, which):
    """The pool runs on the MFU's ports and lanes: a fused vop (relu, quantised to the VRF) before
    it leaves the MFU's chain set up, and a qnt after it reads its results; neither sees the
    other's beats (the chain's last stages counted the pool's results before they were held idle)."""
    engine = request.getfixturevalue(which)
    cfgs = POOL_SHAPES["4_blocks_padded"]
    program, image = pool_program(engine.cfg, random.Random(f"lend {which}"), cfgs, PoolMode.MAX, extreme=0.0)
    vectors = cfgs["in_h"] * cfgs["in_w"] * cfgs["in_cb"]
    results = cfgs["npix"] * cfgs["in_cb"]
    body, halt = program[:-1], program[-1]
    pool_at = next(k for k, insn in enumerate(body) if insn.op is Opcode.POOL)
    vb = engine.cfg.bfp_vector_bytes
    out = -(-len(image) // 16) * 16
    image.extend(bytes(out - len(image) + (vectors + results) * vb + 64))

    def seti(reg, value):
        return Instruction.make(Opcode.SETI, rd=reg, imm=value)

    before = [seti(8, 1000), seti(9, 0), Instruction.make(Opcode.DEQ, rd=8, rs=9, count=vectors),
              seti(10, 2000), Instruction.make(Opcode.VOP, fn=VecOp.ADD, rd=10, ra=8, rb=8, count=vectors, period=0,
                                               act=Act.RELU, dest=Dest.VRF), seti(11, 3000)]
    qnt = [Instruction.make(Opcode.QNT, rd=11, rs=0, count=results)]  # at once: the pool's last beats are near
    after = [Instruction.make(Opcode.CFG, key=Cfg.MEM_STRIDE, rs=0, imm=0), seti(12, out),
             Instruction.make(Opcode.ST, space=Space.VRF, rc=10, rm=12, rows=1, length=vectors),
             seti(13, out + vectors * vb),
             Instruction.make(Opcode.ST, space=Space.VRF, rc=11, rm=13, rows=1, length=results)]
    program = body[:pool_at] + before + body[pool_at:pool_at + 1] + qnt + body[pool_at + 1:] + after + [halt]
    ref, got = _same(engine, program, image)
    assert got.error is ErrorCode.NONE and got.busy["pool"] > 0 and got.busy["mfu"] > 0


OTHER_CONFIGS = {"tiles1": dataclasses.replace(CFG, tiles=1), "tiles3": dataclasses.replace(CFG, tiles=3),
                 "ecp5": preset("ecp5"),
                 "n8": dataclasses.replace(preset("ecp5"), native_dim=8, vrf_vectors=8192, fvrf_vectors=1024),
                 "banked4": dataclasses.replace(CFG, tiles=4, mrf_banked=True, name="tiny-b4")}


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OTHER_CONFIGS))
def test_random_window_programs_on_other_configs(name):
    """The MVU's rounds, lockstep and write-back with one and with three tile engines, the ecp5
    preset and an N = 8 engine (the earlier ecp5); a build each."""
    cfg = OTHER_CONFIGS[name]
    sim = EngineSim(cfg)
    for seed in range(6):
        program, image = random_window_program(cfg, random.Random(200 + seed), instructions=4)
        ref = funcsim_outcome(cfg, program, image)
        got = sim.run(program, image)
        assert (got.error, got.error_pc) == (ref.error, ref.error_pc), ref.message
        assert np.array_equal(got.memory, ref.memory)
        if ref.error is ErrorCode.NONE:
            assert (ref.cycles, ref.busy) == (got.cycles, got.busy)
