"""Error codes and busy-counter units of the engine, shared by the RTL and its Python harness.

The engine stops with ``error`` set, ``error_code`` one of :class:`ErrorCode` and ``error_pc`` the
index of the instruction it stopped at. The harness (``accelml.sim.rtl_engine``) maps the
functional simulator's ``ExecutionError`` / ``ProgramFormatError`` cases onto the same codes.
"""

from __future__ import annotations

from amaranth.lib import enum

__all__ = ["ErrorCode", "Unit", "report_done"]


class ErrorCode(enum.Enum, shape=5):
    NONE = 0
    ILLEGAL_INSN = 1  # unknown opcode or enum value, or non-zero bits above the last field
    PAST_END = 2  # ran past the end of the program without HALT
    LOOP_FIT = 3  # loop body empty or beyond the end of the program
    LOOP_OVERLAP = 4  # loop body overlaps the end of its enclosing loop
    LOOP_DEPTH = 5  # loops nested deeper than isa.MAX_LOOP_DEPTH
    CHIP_RANGE = 6  # VRF / MRF / FVRF entry out of range
    MEM_RANGE = 7  # external-memory access outside the image
    MEM_STRIDE = 8  # memory stride smaller than a row
    READ_ONLY = 9  # store into the read-only constant image
    BAD_BFP = 10  # loaded BFP vector: mantissa too wide or reserved exponent
    BAD_FP = 11  # loaded internal-format vector holds NaN or infinity
    STEP_BUDGET = 12  # more instructions executed than the step budget (watchdog)
    CYCLE_BUDGET = 13  # more cycles than the cycle budget (watchdog)
    UNIMPLEMENTED = 14  # a legal instruction this RTL does not execute yet
    OVERFLOW = 15  # an MFU result beyond the internal format's range
    NAN = 16  # qnt of a block holding a NaN, which no BFP block represents
    WINDOW = 17  # mvc / pool window geometry with a zero dimension
    GROUP_RANGE = 18  # an mvc group's input blocks lie beyond IN_CB
    EMPTY_WINDOW = 19  # a pool window with no tap to take (max, avg) or to count (avg_pad)
    MFU_OVERLAP = 20  # vop / vact destination overlapping a source it would read after writing
    MRF_BANK = 21  # mvc on a banked MRF: cob neither a multiple nor a divisor of T, or its tiles off a row


class Unit(enum.IntEnum):
    """Units with a busy counter, named as the cycle model (``sim/cycles.py``) names them."""

    CTL = 0
    DMA_LOAD = 1
    DMA_STORE = 2
    MVU = 3
    MFU = 4
    POOL = 5

    @property
    def key(self) -> str:
        return self.name.lower()


def report_done(m, done, code) -> None:
    """Inside a unit's ``DONE`` state: offer ``code`` on the ``done`` stream until it is taken,
    then go back to ``IDLE``."""
    m.d.comb += [done.valid.eq(1), done.payload.eq(code)]
    with m.If(done.ready):
        m.next = "IDLE"
