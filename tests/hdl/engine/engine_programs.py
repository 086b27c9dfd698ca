"""Programs and memory images for the engine's RTL tests (tests/hdl/engine).

``random_dma_program`` draws constrained-random programs of ``seti``/``cfg``/``ld``/``st``/``loop``
(unaligned addresses, strides of exactly a row and more, overlapping on-chip rows, empty
transfers, every file); ``valid_image`` fills an image with bytes every load decodes in every
encoding (no exponent field all ones), so that errors come only from the addresses.
"""

from __future__ import annotations

import random

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.engine.layouts import file_depth, item_bytes
from accelml.hdl.isa import Cfg, Instruction, Opcode, Space


def valid_image(size: int, seed: int) -> bytearray:
    """Random bytes without 0x7F / 0xFF: a BFP exponent byte is never the reserved all-ones field and a
    binary32 exponent never 255, whichever encoding reads them."""
    a = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    a[(a & 0x7F) == 0x7F] ^= 1
    return bytearray(a.tobytes())


def _i(op: Opcode, **fields) -> Instruction:
    return Instruction.make(op, **fields)


def random_dma_program(cfg: EngineConfig, rnd: random.Random, *, mem_size: int, ro_bytes: int,
                       transfers: int = 24) -> list[Instruction]:
    """Transfers mostly in range; now and then one that is not (the run then stops there)."""
    prog: list[Instruction] = []
    for _ in range(transfers):
        space = rnd.choice(list(Space))
        item = item_bytes(cfg, space)
        depth = min(file_depth(cfg, space), 64)
        rows = rnd.choice([0, 1, 1, 2, 3, 5])
        length = rnd.choice([0, 1, 2, 3, 4, 7])
        chip_stride = rnd.choice([0, 0, length, length + rnd.randint(1, 3), max(1, length - 1)])
        mem_stride = rnd.choice([0, 0, length * item, length * item + rnd.randint(1, 9)])
        span = (max(rows, 1) - 1) * (mem_stride or length * item) + length * item
        store = rnd.random() < 0.5
        lo = ro_bytes if store else 0
        addr = rnd.randint(lo, max(lo, mem_size - span))
        base = rnd.randint(0, max(0, depth - (max(rows, 1) - 1) * (chip_stride or length) - length))
        if rnd.random() < 0.04:  # out of range, somewhere
            addr = rnd.choice([mem_size - span + 1, mem_size + 7, ro_bytes - 1 if store and ro_bytes else mem_size])
        prog += [
            _i(Opcode.SETI, rd=1, imm=base), _i(Opcode.SETI, rd=2, imm=addr),
            _i(Opcode.CFG, key=Cfg.CHIP_STRIDE, rs=0, imm=chip_stride),
            _i(Opcode.CFG, key=Cfg.MEM_STRIDE, rs=0, imm=mem_stride),
            _i(Opcode.ST if store else Opcode.LD, space=space, rc=1, rm=2, rows=rows, length=length),
        ]
    # a loop that walks the VRF out to memory, one vector a row, past the read-only image
    prog += [
        _i(Opcode.SETI, rd=3, imm=ro_bytes + rnd.randint(0, 7)), _i(Opcode.SETI, rd=4, imm=0),
        _i(Opcode.CFG, key=Cfg.CHIP_STRIDE, rs=0, imm=0), _i(Opcode.CFG, key=Cfg.MEM_STRIDE, rs=0, imm=0),
        _i(Opcode.LOOP, rs=0, count=rnd.randint(1, 6), body=3),
        _i(Opcode.ST, space=Space.VRF, rc=4, rm=3, rows=1, length=2),
        _i(Opcode.ADDI, rd=3, rs=3, imm=cfg.bfp_vector_bytes * 2 + 1),
        _i(Opcode.ADDI, rd=4, rs=4, imm=2),
        _i(Opcode.HALT),
    ]
    return prog
