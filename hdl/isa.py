"""The accelml instruction set, defined once.

Every instruction is one 64-bit word: a 6-bit opcode in bits [5:0], then the opcode's fields
packed upwards in the order listed in ``SPEC``; bits above the last field are zero. The layouts are
``amaranth.lib.data`` structs: the compiler and assembler encode with ``Layout.const``, the
functional simulator decodes with ``Layout.from_bits`` and the RTL decodes the same layouts
(``INSN_LAYOUT`` is the union the hardware decoder views an instruction word through).

Architectural state (see docs/isa.md): 16 scalar registers r0..r15 (32-bit, r0 reads as 0), the
configuration registers of ``Cfg`` (window geometry, strides, MFU constants), the BFP vector register
file (VRF, N-element BFP blocks), the matrix register file (MRF, N x N weight tiles, one shared
exponent per row), the internal-format vector file (FVRF, N binary32 values) and external memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

from .errors import ProgramFormatError

__all__ = [
    "INSN_BITS", "NUM_REGS", "MAX_LOOP_DEPTH", "Opcode", "Cfg", "Space", "PoolMode", "VecOp", "Act", "Dest",
    "Reg", "SPEC", "DEFAULTS", "LAYOUTS", "INSN_LAYOUT", "Instruction", "encode", "encode_reference", "decode",
    "FLOAT_CFG", "field_range",
]

INSN_BITS = 64
NUM_REGS = 16
MAX_LOOP_DEPTH = 4


class Opcode(enum.Enum, shape=6):
    NOP = 0
    HALT = 1
    SETI = 2  # rd = imm
    ADDI = 3  # rd = rs + imm
    ADD = 4  # rd = rs + rt
    CFG = 5  # cfg[key] = rs + imm
    LOOP = 6  # repeat the next `body` instructions (rs + count) times
    LD = 7  # external memory -> on-chip file (2-D DMA)
    ST = 8  # on-chip file -> external memory (2-D DMA)
    MVC = 9  # matrix-vector over a window: the convolution / dense workhorse
    POOL = 10  # max / average pooling over a window, VRF -> FVRF
    VOP = 11  # FVRF elementwise binary op, optional periodic (broadcast) second operand
    VACT = 12  # FVRF activation function
    DEQ = 13  # VRF (BFP) -> FVRF (internal)
    QNT = 14  # FVRF (internal) -> VRF (BFP)


class Cfg(enum.Enum, shape=6):
    """Configuration registers read by LD/ST, MVC, POOL and VACT."""

    IN_H = 0  # input rows held in the VRF window
    IN_W = 1  # input columns
    IN_CB = 2  # channel blocks per input pixel (VRF layout: pixel-major, blocks minor)
    KH = 3
    KW = 4
    STRIDE_H = 5
    STRIDE_W = 6
    DIL_H = 7
    DIL_W = 8
    PAD_T = 9  # signed: rows above the window that read as padding (negative for bands)
    PAD_L = 10
    PAD_B = 11  # only for average-pool divisors that count padding
    PAD_R = 12
    OUT_W = 13  # output row length: pixel q sits at (q // OUT_W, q % OUT_W)
    PIX0 = 14  # first output pixel of the instruction
    NPIX = 15  # output pixels of the instruction
    COB = 16  # output channel blocks of an MVC
    OB0 = 17  # global index of the MVC's first output block (selects groups)
    GI = 18  # input blocks per group (0: all IN_CB blocks, a dense layer)
    GO = 19  # output blocks per group
    MEM_STRIDE = 20  # DMA: bytes between rows in external memory (0: packed)
    CHIP_STRIDE = 21  # DMA: entries between rows on chip (0: packed)
    CLIP_LO = 22  # binary32 bits
    CLIP_HI = 23  # binary32 bits
    ALPHA = 24  # binary32 bits: leaky-ReLU slope
    COPIES = 25  # ld into a banked MRF: each row written this many times side by side (0, 1: once)
    DSTRIDE = 26  # mvc on a banked MRF: FVRF entries between its output pixels' results (0: cob)


FLOAT_CFG = frozenset({Cfg.CLIP_LO, Cfg.CLIP_HI, Cfg.ALPHA})
SIGNED_CFG = frozenset({Cfg.PAD_T, Cfg.PAD_L, Cfg.PAD_B, Cfg.PAD_R})


class Space(enum.Enum, shape=2):
    VRF = 0  # BFP vectors
    MRF = 1  # BFP weight tiles (N row vectors each)
    FVRF = 2  # internal-format vectors


class PoolMode(enum.Enum, shape=2):
    MAX = 0
    AVG = 1  # divisor: taps inside the input
    AVG_PAD = 2  # divisor: taps inside input + explicit pads (count_include_pad)


class VecOp(enum.Enum, shape=2):
    ADD = 0
    MUL = 1
    MAX = 2
    SUB = 3


class Act(enum.Enum, shape=2):
    COPY = 0
    RELU = 1
    CLIP = 2  # clamp to [CLIP_LO, CLIP_HI]
    LRELU = 3  # x < 0 ? x * ALPHA : x


class Dest(enum.Enum, shape=1):
    """Where a ``vop`` writes its result: the FVRF, or quantised into the VRF (``dest``); where it
    reads its second operand: the FVRF, or the VRF, dequantised (``bfile``)."""

    FVRF = 0
    VRF = 1


class Reg:
    """Marker for a 4-bit register-number field."""

    shape = unsigned(4)


# Field lists, in encoding order. Kinds: Reg, an amaranth shape, or an amaranth enum.
SPEC: dict[Opcode, tuple[tuple[str, object], ...]] = {
    Opcode.NOP: (),
    Opcode.HALT: (),
    Opcode.SETI: (("rd", Reg), ("imm", unsigned(32))),
    Opcode.ADDI: (("rd", Reg), ("rs", Reg), ("imm", signed(24))),
    Opcode.ADD: (("rd", Reg), ("rs", Reg), ("rt", Reg)),
    Opcode.CFG: (("key", Cfg), ("rs", Reg), ("imm", unsigned(32))),
    Opcode.LOOP: (("rs", Reg), ("count", unsigned(16)), ("body", unsigned(12))),
    Opcode.LD: (("space", Space), ("rc", Reg), ("rm", Reg), ("rows", unsigned(16)), ("length", unsigned(16))),
    Opcode.ST: (("space", Space), ("rc", Reg), ("rm", Reg), ("rows", unsigned(16)), ("length", unsigned(16))),
    Opcode.MVC: (("rd", Reg), ("rs", Reg), ("rm", Reg), ("acc", unsigned(1))),
    Opcode.POOL: (("mode", PoolMode), ("rd", Reg), ("rs", Reg)),
    Opcode.VOP: (("fn", VecOp), ("rd", Reg), ("ra", Reg), ("rb", Reg), ("count", unsigned(16)),
                 ("period", unsigned(12)), ("act", Act), ("dest", Dest), ("bfile", Dest)),
    Opcode.VACT: (("act", Act), ("rd", Reg), ("rs", Reg), ("count", unsigned(16))),
    Opcode.DEQ: (("rd", Reg), ("rs", Reg), ("count", unsigned(16))),
    Opcode.QNT: (("rd", Reg), ("rs", Reg), ("count", unsigned(16))),
}


# Trailing fields that may be left out (of Instruction.make and of assembly text), with the value
# they then take: a ``vop`` without them is the plain operation, and its word is the one from before
# they existed (their bits zero).
DEFAULTS: dict[Opcode, dict[str, object]] = {Opcode.VOP: {"act": Act.COPY, "dest": Dest.FVRF, "bfile": Dest.FVRF}}


def _shape(kind):
    return Reg.shape if kind is Reg else kind


LAYOUTS: dict[Opcode, data.StructLayout] = {
    op: data.StructLayout({"opcode": Opcode, **{name: _shape(kind) for name, kind in fields}})
    for op, fields in SPEC.items()
}
for _op, _layout in LAYOUTS.items():
    assert _layout.size <= INSN_BITS, f"{_op.name} does not fit {INSN_BITS} bits"

# The hardware decoder's view: one word, read through the layout its opcode selects.
INSN_LAYOUT = data.UnionLayout({op.name.lower(): layout for op, layout in LAYOUTS.items()})


@dataclass(frozen=True)
class Instruction:
    """A decoded instruction: the opcode and its fields (ints, or enum members for enum fields)."""

    op: Opcode
    fields: tuple[tuple[str, object], ...] = ()

    def __getattr__(self, name):
        for key, value in object.__getattribute__(self, "fields"):
            if key == name:
                return value
        raise AttributeError(name)

    def as_dict(self) -> dict:
        return dict(self.fields)

    @classmethod
    def make(cls, op: Opcode, **values) -> Instruction:
        names = [name for name, _ in SPEC[op]]
        values = {**{k: v for k, v in DEFAULTS.get(op, {}).items() if k not in values}, **values}
        if set(values) != set(names):
            raise ValueError(f"{op.name} takes fields {names}, got {sorted(values)}")
        return cls(op, tuple((name, values[name]) for name in names))


def field_range(kind) -> tuple[int, int]:
    """Smallest and largest value an integer (or register) field holds."""
    shape = _shape(kind)
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


def _check_field(op: Opcode, name: str, kind, value) -> None:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        if not isinstance(value, kind):
            raise ValueError(f"{op.name}.{name} must be a {kind.__name__}, got {value!r}")
        return
    lo, hi = field_range(kind)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{op.name}.{name} must be an integer in [{lo}, {hi}], got {value!r}")


def encode_reference(insn: Instruction) -> int:
    """Instruction -> 64-bit word through ``Layout.const``: the definition :func:`encode` keeps."""
    spec = SPEC[insn.op]
    values = insn.as_dict()
    for name, kind in spec:
        _check_field(insn.op, name, kind, values[name])
    return LAYOUTS[insn.op].const({"opcode": insn.op, **values}).as_value().value


def _packing(op: Opcode) -> tuple[int, tuple]:
    """(the opcode's bits, per field (name, kind, is an enum, offset, mask, lo, hi)) from its layout."""
    layout = LAYOUTS[op]
    fields = []
    for name, kind in SPEC[op]:
        f = layout[name]
        is_enum = isinstance(kind, type) and issubclass(kind, enum.Enum)
        lo, hi = (0, 0) if is_enum else field_range(kind)
        fields.append((name, kind, is_enum, f.offset, (1 << f.width) - 1, lo, hi))
    return op.value << layout["opcode"].offset, tuple(fields)


_PACKING = {op: _packing(op) for op in SPEC}


def encode(insn: Instruction) -> int:
    """Instruction -> 64-bit word. Raises ValueError naming the field that does not fit.

    Packs the fields at their layout offsets directly (a compiled ResNet-50 encodes tens of
    thousands of words; ``Layout.const`` costs about half a millisecond each); tests/hdl/test_isa.py
    checks it against :func:`encode_reference` on every instruction kind."""
    word, fields = _PACKING[insn.op]
    if len(fields) != len(insn.fields):
        return encode_reference(insn)  # its error names the missing field
    for (name, kind, is_enum, offset, mask, lo, hi), (key, value) in zip(fields, insn.fields, strict=True):
        if key != name:
            return encode_reference(insn)
        if is_enum:
            if not isinstance(value, kind):
                _check_field(insn.op, name, kind, value)
            value = value.value
        elif isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            _check_field(insn.op, name, kind, value)
        word |= (value & mask) << offset
    return word


def decode(word: int, index: int = 0) -> Instruction:
    """64-bit word -> Instruction. Raises ProgramFormatError for an illegal word."""
    if not 0 <= word < (1 << INSN_BITS):
        raise ProgramFormatError(f"instruction {index}: word {word:#x} is not {INSN_BITS} bits")
    try:
        op = Opcode(word & 0x3F)
    except ValueError:
        raise ProgramFormatError(f"instruction {index}: illegal opcode {word & 0x3F:#x}") from None
    layout = LAYOUTS[op]
    if word >> layout.size:
        raise ProgramFormatError(f"instruction {index}: {op.name} has non-zero unused bits ({word:#018x})")
    view = layout.from_bits(word)
    fields = []
    for name, _ in SPEC[op]:
        try:
            fields.append((name, getattr(view, name)))
        except ValueError:
            raise ProgramFormatError(f"instruction {index}: {op.name}.{name} holds an illegal value") from None
    return Instruction(op, tuple(fields))
