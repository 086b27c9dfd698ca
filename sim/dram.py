"""External DRAM timing: the DDR4 figures the memory model and the cycle model derate by, written once.

A DDR4-2400 x64 channel (one rank of eight x8 devices), from Micron's 8Gb DDR4 SDRAM data sheet
(MT40A1G8, speed grade -083E, DDR4-2400 CL17-17-17; the same values as JEDEC JESD79-4):

===========================  ==========  ==================================================
figure                       value       source
===========================  ==========  ==================================================
tCK                          0.833 ns    DDR4-2400: 1200 MHz clock, 2400 MT/s
peak bandwidth               19.2 GB/s   2400 MT/s x 8 bytes (x64)
tREFI                        7.8 us      average refresh interval, 0..85 C (JESD79-4)
tRFC (tRFC1)                 350 ns      refresh cycle time of an 8Gb device
tRCD, tRP                    13.32 ns    16 tCK ... -083E: 13.32 ns each
CL (RL), CWL                 17, 12 tCK  -083E read latency; CWL 12 (1tCK write preamble)
BL                           8           burst length
tWTR_L                       7.5 ns      write to read, same bank group (max(4 tCK, 7.5 ns))
row (page) size              8 KB        1 KB per x8 device (10 column bits x 8) x 8 devices
===========================  ==========  ==================================================

Derived costs, each in engine cycles at the preset's clock (rounded up):

* refresh: the channel is unavailable tRFC of every tREFI, an efficiency of
  1 - tRFC / tREFI = 95.5 %: the memory model's bandwidth (token bucket) is the EngineConfig's
  sustained bandwidth times that factor (the average cost; the model does not place the refresh
  bursts in time);
* page miss: a request to another row than the open one waits tRP + tRCD (26.64 ns) while the row
  is precharged and activated; one row is open at a time (no bank parallelism: an upper bound on
  what interleaved streams pay);
* read/write turnaround: a write after a read waits RL + BL/2 - CWL + 2 tCK (11 tCK, 9.2 ns) after
  the read; a read after a write waits CWL + BL/2 + tWTR_L (12 + 4 + 9 tCK, 20.8 ns) after it.

Which memory a preset has: an EngineConfig whose sustained bandwidth fits one DDR4-2400 x64 channel
(``mem_bandwidth_gbps <= 19.2``: ``tiny``, ``ecp5``, ``a10``, ``wide``) is derated by this table;
a faster one (``s10``, 256 GB/s: HBM2-class stacks, not a DDR4 channel) is modelled with its
bandwidth, latency and outstanding-request limit only, with no refresh, page or turnaround cost
(HBM2's own figures are not modelled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from accelml.hdl.config import EngineConfig

__all__ = ["DramTiming", "DDR4_2400", "Derating", "derating"]


@dataclass(frozen=True)
class DramTiming:
    name: str
    tck_ns: float
    peak_gbps: float
    trefi_ns: float
    trfc_ns: float
    trcd_ns: float
    trp_ns: float
    cl: int  # tCK
    cwl: int  # tCK
    bl: int
    twtr_l_ns: float
    row_bytes: int

    @property
    def read_to_write_ns(self) -> float:
        return (self.cl + self.bl // 2 - self.cwl + 2) * self.tck_ns

    @property
    def write_to_read_ns(self) -> float:
        twtr = max(4, math.ceil(self.twtr_l_ns / self.tck_ns - 1e-9))
        return (self.cwl + self.bl // 2 + twtr) * self.tck_ns


DDR4_2400 = DramTiming(
    name="DDR4-2400 x64 (Micron MT40A1G8-083E, JESD79-4)", tck_ns=1000 / 1200, peak_gbps=19.2, trefi_ns=7800.0,
    trfc_ns=350.0, trcd_ns=13.32, trp_ns=13.32, cl=17, cwl=12, bl=8, twtr_l_ns=7.5, row_bytes=8192,
)


@dataclass(frozen=True)
class Derating:
    """A DRAM's costs in engine cycles (see the module docstring)."""

    dram: str
    efficiency: Fraction  # refresh: fraction of the time the channel moves data
    page_miss: int  # cycles a request to another row waits (tRP + tRCD)
    read_to_write: int  # cycles from a read to a write
    write_to_read: int  # cycles from a write to a read
    row_bytes: int


def derating(cfg: EngineConfig, dram: DramTiming = DDR4_2400) -> Derating | None:
    """The derating of ``cfg``'s external memory, or None for memory faster than one channel."""
    if cfg.mem_bandwidth_gbps > dram.peak_gbps:
        return None
    cycles_per_ns = cfg.clock_mhz / 1000.0

    def cycles(ns: float) -> int:
        return max(1, math.ceil(ns * cycles_per_ns - 1e-9))

    eff = 1 - Fraction(round(dram.trfc_ns * 1000), round(dram.trefi_ns * 1000))
    return Derating(dram.name, eff, cycles(dram.trp_ns + dram.trcd_ns), cycles(dram.read_to_write_ns),
                    cycles(dram.write_to_read_ns), dram.row_bytes)
