"""Every instruction kind round-trips through assembler, binary and disassembler; bad binaries are refused."""

import dataclasses
import random

import pytest
from amaranth.lib import enum

from accelml.hdl.config import preset
from accelml.hdl.errors import AssemblyError, ProgramFormatError
from accelml.hdl.isa import (
    FLOAT_CFG,
    INSN_LAYOUT,
    SPEC,
    Cfg,
    Instruction,
    Opcode,
    Reg,
    decode,
    encode,
    encode_reference,
)
from accelml.hdl.program import HEADER_BYTES, Program, assemble, assemble_program, disassemble

CFG = preset("tiny")


def random_instruction(op: Opcode, rng: random.Random) -> Instruction:
    values = {}
    for name, kind in SPEC[op]:
        if kind is Reg:
            values[name] = rng.randrange(16)
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            values[name] = rng.choice(list(kind))
        else:
            lo = -(1 << (kind.width - 1)) if kind.signed else 0
            hi = (1 << (kind.width - 1)) - 1 if kind.signed else (1 << kind.width) - 1
            values[name] = rng.choice([lo, hi, rng.randint(lo, hi)])
    return Instruction.make(op, **values)


@pytest.mark.parametrize("op", list(Opcode), ids=lambda o: o.name)
def test_every_instruction_round_trips(op):
    rng = random.Random(op.value)
    insns = [random_instruction(op, rng) for _ in range(40)]
    for insn in insns:
        word = encode(insn)
        assert word == encode_reference(insn)  # the packing equals the layout's own
        assert 0 <= word < 2**64 and word & 0x3F == op.value
        assert decode(word) == insn
    text = disassemble(insns)
    assert assemble(text) == insns
    prog = Program(insns, CFG.hash)
    assert Program.from_bytes(prog.to_bytes(), config=CFG).instructions == insns


@pytest.mark.parametrize("op, name, value", [
    (Opcode.SETI, "rd", 16), (Opcode.SETI, "rd", -1), (Opcode.VOP, "count", 1 << 16), (Opcode.VOP, "fn", 1),
    (Opcode.VOP, "period", True), (Opcode.VOP, "period", 1.0), (Opcode.LOOP, "count", -1),
])
def test_a_field_that_does_not_fit_is_refused_by_name(op, name, value):
    insn = random_instruction(op, random.Random(0))
    bad = dataclasses.replace(insn, fields=tuple((k, value if k == name else v) for k, v in insn.fields))
    for enc in (encode, encode_reference):
        with pytest.raises(ValueError, match=rf"{op.name}\.{name} must be"):
            enc(bad)


def test_union_layout_is_one_word():
    assert INSN_LAYOUT.size <= 64


def test_float_configuration_values_print_as_floats():
    insns = assemble("cfg clip_hi, r0, 6.0\ncfg alpha, r0, 0.1\ncfg pad_t, r0, -2")
    text = disassemble(insns)
    assert "clip_hi, r0, 6.0" in text and "alpha, r0, 0.1" in text and "pad_t, r0, -2" in text
    assert assemble(text) == insns
    assert Cfg.ALPHA in FLOAT_CFG


@pytest.mark.parametrize(
    "text,line,col,match",
    [
        ("nop\nfrob r1", 2, 1, "unknown mnemonic 'frob'"),
        ("seti r1", 1, 8, r"seti takes 2 operand\(s\) \(rd, imm\), got 1"),
        ("halt\n  seti r17, 1", 2, 8, "expected a register r0..r15, got 'r17'"),
        ("ld dram, r0, r1, 1, 1", 1, 4, "expected one of vrf, mrf, fvrf, got 'dram'"),
        ("seti r1, 0x1_0000_0000", 1, 10, r"does not fit \[0, 4294967295\]"),
        ("addi r1, r1, twelve", 1, 14, "expected an integer, got 'twelve'"),
        ("vop add, r1, , r2, 3, 0", 1, 14, "empty operand"),
        ("loop r0, 5, 1, 7", 1, 16, r"loop takes 3 operand\(s\)"),
    ],
)
def test_malformed_assembly_names_line_and_column(text, line, col, match):
    with pytest.raises(AssemblyError, match=match) as e:
        assemble(text, source="prog.s")
    assert (e.value.line, e.value.column) == (line, col)
    assert str(e.value).startswith(f"prog.s:{line}:{col}: ")


def program_blob():
    return assemble_program("seti r1, 5\ncfg npix, r1, 2\nhalt\n", CFG).to_bytes()


def test_corrupt_truncated_foreign_and_wrong_config_binaries_are_refused():
    blob = program_blob()
    with pytest.raises(ProgramFormatError, match="bad magic"):
        Program.from_bytes(b"\x7fELF" + blob[4:])
    with pytest.raises(ProgramFormatError, match="truncated header"):
        Program.from_bytes(blob[:20])
    with pytest.raises(ProgramFormatError, match="truncated: header says 3 instructions"):
        Program.from_bytes(blob[:-3])
    with pytest.raises(ProgramFormatError, match="trailing bytes"):
        Program.from_bytes(blob + b"\0" * 8)
    flipped = bytearray(blob)
    flipped[HEADER_BYTES + 9] ^= 0x10
    with pytest.raises(ProgramFormatError, match="checksum mismatch"):
        Program.from_bytes(bytes(flipped))
    version = bytearray(blob)
    version[4] = 9
    with pytest.raises(ProgramFormatError, match="unsupported program format version 9"):
        Program.from_bytes(bytes(version))
    other = dataclasses.replace(CFG, tiles=4, name="tiny4")
    with pytest.raises(ProgramFormatError, match="but this engine is tiny4"):
        Program.from_bytes(blob, config=other)
    assert len(Program.from_bytes(blob, config=CFG).instructions) == 3


def test_illegal_words_are_refused():
    with pytest.raises(ProgramFormatError, match="illegal opcode 0x3f"):
        decode(0x3F)
    with pytest.raises(ProgramFormatError, match="non-zero unused bits"):
        decode(Opcode.HALT.value | (1 << 40))
    # an enum field holding an undefined value (Space is 2 bits, 3 is not a space)
    with pytest.raises(ProgramFormatError, match="LD.space holds an illegal value"):
        decode(Opcode.LD.value | (3 << 6))
