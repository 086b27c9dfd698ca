"""Programs: the versioned binary container and the text assembler / disassembler.

Binary layout (little-endian)::

    offset  size  field
    0       4     magic b"ACLP"
    4       2     format version (1)
    6       2     instruction width in bits (64)
    8       4     instruction count
    12      4     reserved, zero
    16      32    SHA-256 of the EngineConfig the program was built for (EngineConfig.hash)
    48      32    SHA-256 of the instruction words (checksum)
    80      8*n   instruction words

Assembly text: one instruction per line, ``mnemonic op, op, ...`` with the operands in the order
of ``isa.SPEC``; registers ``r0``..``r15``; enum operands by name (``vrf``, ``max``, ``in_h``);
integers in Python syntax; a ``cfg`` of a float register (clip_lo, clip_hi, alpha) also takes a
float literal. ``;`` or ``#`` starts a comment.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import enum

from .config import EngineConfig
from .errors import AssemblyError, ProgramFormatError
from .isa import (
    DEFAULTS,
    FLOAT_CFG,
    INSN_BITS,
    NUM_REGS,
    SIGNED_CFG,
    SPEC,
    Cfg,
    Instruction,
    Opcode,
    Reg,
    decode,
    encode,
    field_range,
)

MAGIC = b"ACLP"
VERSION = 1
_HEADER = struct.Struct("<4sHHII32s32s")
HEADER_BYTES = _HEADER.size


@dataclass
class Program:
    """A list of instructions bound to one EngineConfig (by hash)."""

    instructions: list[Instruction]
    config_hash: str
    source: str = field(default="<program>", compare=False)

    # -- binary ---------------------------------------------------------------------------------
    def words(self) -> list[int]:
        return [encode(i) for i in self.instructions]

    def to_bytes(self) -> bytes:
        body = b"".join(w.to_bytes(8, "little") for w in self.words())
        header = _HEADER.pack(
            MAGIC, VERSION, INSN_BITS, len(self.instructions), 0,
            bytes.fromhex(self.config_hash), hashlib.sha256(body).digest(),
        )
        return header + body

    @classmethod
    def from_bytes(cls, blob: bytes, *, config: EngineConfig | None = None, source: str = "<program>") -> Program:
        """Decode and verify a program binary; with ``config``, refuse one built for another engine."""
        if len(blob) < 4 or blob[:4] != MAGIC:
            raise ProgramFormatError(f"{source}: not an accelml program (bad magic {bytes(blob[:4])!r})")
        if len(blob) < HEADER_BYTES:
            raise ProgramFormatError(f"{source}: truncated header ({len(blob)} of {HEADER_BYTES} bytes)")
        magic, version, bits, count, reserved, cfg_hash, digest = _HEADER.unpack_from(blob)
        if version != VERSION:
            raise ProgramFormatError(f"{source}: unsupported program format version {version} (expected {VERSION})")
        if bits != INSN_BITS or reserved:
            raise ProgramFormatError(f"{source}: malformed header (width {bits}, reserved {reserved:#x})")
        body = blob[HEADER_BYTES:]
        if len(body) != 8 * count:
            what = "truncated" if len(body) < 8 * count else "has trailing bytes"
            raise ProgramFormatError(f"{source}: {what}: header says {count} instructions, body has {len(body)} bytes")
        if hashlib.sha256(body).digest() != digest:
            raise ProgramFormatError(f"{source}: checksum mismatch: the program is corrupt")
        if config is not None and cfg_hash.hex() != config.hash:
            raise ProgramFormatError(
                f"{source}: built for EngineConfig {cfg_hash.hex()[:12]}, but this engine is "
                f"{config.name} ({config.short_hash})"
            )
        insns = [decode(int.from_bytes(body[8 * i:8 * i + 8], "little"), i) for i in range(count)]
        return cls(insns, cfg_hash.hex(), source)

    # -- text -----------------------------------------------------------------------------------
    def to_asm(self) -> str:
        return disassemble(self.instructions)


# ---------------------------------------------------------------------------------------------
# Assembler / disassembler
# ---------------------------------------------------------------------------------------------

_MNEMONICS = {op.name.lower(): op for op in Opcode}


def _float_bits(x: float) -> int:
    return int(np.array(x, dtype=np.float32).view(np.uint32))


def _bits_float_text(bits: int) -> str | None:
    f = float(np.array(bits, dtype=np.uint32).view(np.float32))
    text = repr(f)
    try:
        return text if _float_bits(float(text)) == bits else None
    except (ValueError, OverflowError):
        return None


def format_operand(op: Opcode, name: str, kind, value, values: dict) -> str:
    if kind is Reg:
        return f"r{value}"
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if op is Opcode.CFG and name == "imm" and values.get("key") in FLOAT_CFG:
        text = _bits_float_text(value)
        if text is not None:
            return text
        return hex(value)
    if op is Opcode.CFG and name == "imm" and values.get("key") in SIGNED_CFG and value & 0x8000_0000:
        return str(value - (1 << 32))
    return str(value)


def disassemble_one(insn: Instruction) -> str:
    values = insn.as_dict()
    spec = list(SPEC[insn.op])
    defaults = DEFAULTS.get(insn.op, {})
    while spec and spec[-1][0] in defaults and values[spec[-1][0]] == defaults[spec[-1][0]]:
        spec.pop()  # trailing fields at their defaults are left out, as the assembler allows
    ops = [format_operand(insn.op, n, k, values[n], values) for n, k in spec]
    return insn.op.name.lower() + (" " + ", ".join(ops) if ops else "")


def disassemble(instructions) -> str:
    return "".join(disassemble_one(i) + "\n" for i in instructions)


def _parse_operand(text: str, op: Opcode, name: str, kind, values: dict, line: int, col: int, src: str):
    def fail(msg):
        raise AssemblyError(f"{op.name.lower()} operand '{name}': {msg}", line=line, column=col, source=src)

    if kind is Reg:
        m = re.fullmatch(r"[rR](\d+)", text)
        if not m or int(m.group(1)) >= NUM_REGS:
            fail(f"expected a register r0..r{NUM_REGS - 1}, got {text!r}")
        return int(m.group(1))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        member = kind.__members__.get(text.upper())
        if member is None:
            fail(f"expected one of {', '.join(m.lower() for m in kind.__members__)}, got {text!r}")
        return member
    if op is Opcode.CFG and name == "imm" and values.get("key") in FLOAT_CFG and re.search(r"[.eEn]", text) \
            and not text.lower().startswith(("0x", "-0x")):
        try:
            value = float(text)
        except ValueError:
            fail(f"expected a number, got {text!r}")
        return _float_bits(value)
    try:
        value = int(text, 0)
    except ValueError:
        fail(f"expected an integer, got {text!r}")
    lo, hi = field_range(kind)
    if op is Opcode.CFG and name == "imm" and -(1 << 31) <= value < 0:
        value &= 0xFFFF_FFFF  # signed configuration values (pads) in two's complement
    if not lo <= value <= hi:
        fail(f"{value} does not fit [{lo}, {hi}]")
    return value


def assemble(text: str, *, source: str = "<asm>") -> list[Instruction]:
    """Assembly text -> instructions. Raises AssemblyError naming the line and column."""
    out = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = re.split(r"[;#]", raw, maxsplit=1)[0].rstrip()
        if not line.strip():
            continue
        start = len(line) - len(line.lstrip())
        m = re.match(r"\s*(\S+)\s*", line)
        mnemonic = m.group(1)
        op = _MNEMONICS.get(mnemonic.lower())
        if op is None:
            raise AssemblyError(f"unknown mnemonic {mnemonic!r}", line=lineno, column=start + 1, source=source)
        rest_at = m.end()
        rest = line[rest_at:]
        tokens = []
        if rest.strip():
            pos = rest_at
            for part in rest.split(","):
                col = pos + len(part) - len(part.lstrip()) + 1
                if not part.strip():
                    raise AssemblyError("empty operand", line=lineno, column=col, source=source)
                tokens.append((part.strip(), col))
                pos += len(part) + 1
        spec = SPEC[op]
        least = len(spec) - len(DEFAULTS.get(op, {}))  # trailing fields with a default may be left out
        if not least <= len(tokens) <= len(spec):
            names = ", ".join(n if i < least else f"[{n}]" for i, (n, _) in enumerate(spec)) or "no operands"
            takes = str(len(spec)) if least == len(spec) else f"{least} to {len(spec)}"
            col = tokens[len(spec)][1] if len(tokens) > len(spec) else len(raw.rstrip()) + 1
            raise AssemblyError(
                f"{mnemonic.lower()} takes {takes} operand(s) ({names}), got {len(tokens)}",
                line=lineno, column=col, source=source,
            )
        values: dict = {}
        for (name, kind), (tok, col) in zip(spec[:len(tokens)], tokens, strict=True):
            values[name] = _parse_operand(tok, op, name, kind, values, lineno, col, source)
        insn = Instruction.make(op, **values)
        try:
            encode(insn)
        except ValueError as e:
            raise AssemblyError(str(e), line=lineno, column=start + 1, source=source) from None
        out.append(insn)
    return out


def assemble_program(text: str, config: EngineConfig, *, source: str = "<asm>") -> Program:
    return Program(assemble(text, source=source), config.hash, source)


def cfg_value(key: Cfg, raw: int) -> int | float:
    """Interpret a 32-bit configuration register value."""
    raw &= 0xFFFF_FFFF
    if key in FLOAT_CFG:
        return float(np.array(raw, dtype=np.uint32).view(np.float32))
    if key in SIGNED_CFG and raw & 0x8000_0000:
        return raw - (1 << 32)
    return raw
