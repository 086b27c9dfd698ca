# amaranth: UnusedElaboratable=no
"""hdl/engine/dma.py under cocotb: random commands, random back-pressure on every stream.

The DMA and its register files are driven alone (cocotb_dma.py): commands with random gaps,
``done`` taken late, the memory port answered with random ready, latency and response gaps. Loads
then stores move every entry through the files and back to memory; the final image must equal the
functional simulator's after the same ``ld``/``st`` sequence, and each command's completion code
must be NONE, or BAD_BFP / BAD_FP for the loads of refused data.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from accelml.hdl.config import preset
from accelml.hdl.engine.dma import SHIFT_VERILOG, Dma, byte_shift
from accelml.hdl.engine.layouts import dma_cmd_layout, file_depth, item_bytes, mem_port_signature
from accelml.hdl.engine.regfiles import RegisterFiles
from accelml.hdl.engine.status import ErrorCode
from accelml.hdl.isa import Cfg, Instruction, Opcode, Space
from accelml.sim import rtl
from accelml.sim.rtl_engine import funcsim_outcome

COCOTB_MODULE = Path(__file__).with_name("cocotb_dma.py")
SMALL = dict(vrf_vectors=48, mrf_tiles=12, fvrf_vectors=40)
CONFIGS = {
    "tiny-w8": dataclasses.replace(preset("tiny"), **SMALL),  # 5-byte vectors on 8-byte words
    "msfp9-w4": dataclasses.replace(preset("tiny"), mantissa_bits=3, exponent_bits=5, mem_port_bits=32,
                                    **SMALL),  # exponent field 31 reserved, 4-byte words
}


class DmaWithFiles(wiring.Component):
    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "cmd": In(stream.Signature(dma_cmd_layout(cfg))),
            "done": Out(stream.Signature(ErrorCode)),
            "mem": Out(mem_port_signature(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma = dma = Dma(self.cfg)
        files = RegisterFiles(self.cfg, {"": {space: "rw" for space in Space}, **dma.lane_users("lane")})
        m.submodules.files = files
        wiring.connect(m, wiring.flipped(self.cmd), dma.cmd)
        wiring.connect(m, dma.done, wiring.flipped(self.done))
        wiring.connect(m, wiring.flipped(self.mem), dma.mem)
        for space in Space:
            wiring.connect(m, getattr(dma, space.name.lower()), getattr(files, space.name.lower()))
        dma.connect_lanes(m, files, "lane")
        return m


def _image(cfg, size, seed) -> bytearray:
    """Bytes every load decodes in every encoding: magnitudes within M bits, exponent fields below
    the reserved one (signs only where E = 8), no binary32 NaN or infinity."""
    a = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    sign = 0x80 if cfg.exponent_bits == 8 else 0  # an exponent byte with bit 7 set is refused below E=8
    a &= sign | ((1 << cfg.mantissa_bits) - 1)
    a[(a & 0x7F) == 0x7F] ^= 1
    return bytearray(a.tobytes())


def _commands(cfg, rnd, size):
    """(command dicts for the DMA, the same as ld/st instructions for funcsim)."""
    cmds, prog = [], []
    for k in range(36):
        space = list(Space)[k % 3]
        item = item_bytes(cfg, space)
        depth = file_depth(cfg, space)
        store = k % 6 >= 3  # three loads, then three stores, and so on
        rows = rnd.choice([1, 1, 2, 3, 4])
        length = rnd.choice([1, 2, 3, 5])
        chip_stride = rnd.choice([length, length, length + 2, max(1, length - 1)])
        mem_stride = rnd.choice([length * item, length * item + rnd.randint(1, 11)])
        while (rows - 1) * chip_stride + length > depth:
            rows -= 1
        span = (rows - 1) * mem_stride + length * item
        base = rnd.randint(0, depth - ((rows - 1) * chip_stride + length))
        lo = size // 2 if store else 64  # stores to the upper half, loads above the refused bytes
        addr = rnd.randint(lo, size - span)
        cmds.append(dict(store=int(store), space=space.value, base=base, chip_stride=chip_stride, addr=addr,
                         mem_stride=mem_stride, rows=rows, length=length))
        prog += [Instruction.make(Opcode.SETI, rd=1, imm=base), Instruction.make(Opcode.SETI, rd=2, imm=addr),
                 Instruction.make(Opcode.CFG, key=Cfg.CHIP_STRIDE, rs=0, imm=chip_stride),
                 Instruction.make(Opcode.CFG, key=Cfg.MEM_STRIDE, rs=0, imm=mem_stride),
                 Instruction.make(Opcode.ST if store else Opcode.LD, space=space, rc=1, rm=2, rows=rows,
                                  length=length)]
    return cmds, prog + [Instruction.make(Opcode.HALT)]


@pytest.mark.rtl
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_dma_matches_funcsim_under_back_pressure(name, stall):
    rtl.require_tools()
    cfg = CONFIGS[name]
    rnd = random.Random(f"{name}{stall}")
    size = 1536
    image = _image(cfg, size, 11)
    cmds, prog = _commands(cfg, rnd, size)
    # two refused loads at the end: a reserved BFP exponent, a binary32 infinity
    bad = bytearray(image)
    bad[8 + cfg.bfp_vector_bytes - 1] = (1 << cfg.exponent_bits) - 1
    bad[40 + 3], bad[40 + 2] = 0x7F, 0x80
    cmds += [dict(store=0, space=Space.VRF.value, base=0, chip_stride=1, addr=8, mem_stride=cfg.bfp_vector_bytes,
                  rows=1, length=1),
             dict(store=0, space=Space.FVRF.value, base=0, chip_stride=1, addr=40, mem_stride=16, rows=1,
                  length=1)]
    ref = funcsim_outcome(cfg, prog, bad)  # the random commands never read the refused bytes
    assert ref.error is ErrorCode.NONE, ref.message
    job = dict(cfg=cfg.to_dict(), seed=rnd.randint(0, 1 << 30), stall=stall, image=bad.hex(), cmds=cmds)
    result = rtl.run_cocotb(DmaWithFiles(cfg), "dma_with_files", COCOTB_MODULE,
                            inputs={"dma_job.json": json.dumps(job)}, outputs=("mem_out.hex", "codes.json"))
    assert result.passed, result.summary()
    codes = [ErrorCode(c) for c in json.loads(result.outputs["codes.json"])]
    assert codes == [ErrorCode.NONE] * (len(cmds) - 2) + [ErrorCode.BAD_BFP, ErrorCode.BAD_FP]
    got = np.frombuffer(bytes.fromhex(result.outputs["mem_out.hex"]), np.uint8)
    assert bytes(got[size // 2:]) != bytes(bad[size // 2:])  # the stores did write
    diff = np.nonzero(got != ref.memory)[0]
    assert diff.size == 0, f"{diff.size} bytes differ, first at {diff[:8]}"


class _ByteShifts(wiring.Component):
    """``byte_shift`` both ways at two result widths, as Amaranth expressions or as instances."""

    def __init__(self, bits: int, widths: tuple[int, ...], verilog: bool):
        self.widths, self.verilog = widths, verilog
        super().__init__({"value": In(bits), "amount": In(4),
                          **{f"{d}{w}": Out(w) for d in ("left", "right") for w in widths}})

    def elaborate(self, platform):
        m = Module()
        for w in self.widths:
            for d in ("left", "right"):
                out = byte_shift(m, self.value, self.amount, w, left=d == "left", verilog=self.verilog)
                m.d.comb += getattr(self, f"{d}{w}").eq(out)
        return m


@pytest.mark.rtl
@pytest.mark.parametrize("verilog", [False, True], ids=["amaranth", "accelml_byte_shift"])
def test_byte_shifts_equal_pythons(verilog):
    """The gearbox's byte shifts, in either form, equal ``(x << 8 s)[:w]`` and ``(x >> 8 s)[:w]``
    for every amount (also past both widths), an operand that is not whole bytes, and results
    narrower and wider than it."""
    rtl.require_tools()
    bits, widths = 37, (24, 64)
    rng = random.Random(5)
    values = [0, (1 << bits) - 1] + [rng.getrandbits(bits) for _ in range(6)]
    design = rtl.to_verilog(_ByteShifts(bits, widths, verilog), "byte_shifts") + (SHIFT_VERILOG if verilog else "")
    job = {"values": values, "widths": list(widths)}
    result = rtl.run_cocotb(design, "byte_shifts", Path(__file__).with_name("cocotb_byte_shift.py"),
                            inputs={"shift_job.json": json.dumps(job)}, outputs=("checked.txt",))
    assert result.passed, result.summary()
    assert int(result.outputs["checked.txt"]) == len(values) * 16
