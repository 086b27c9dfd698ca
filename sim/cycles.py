"""Event-based cycle model of the engine, carried by the functional simulator.

Instructions issue in order, one per cycle, into per-unit queues (control, DMA, MVU, MFU). An
instruction starts when its unit is free, the storage it reads has been written (RAW) and the
storage it writes is no longer being read or written (WAR/WAW); so DMA overlaps compute exactly as
far as the program's buffer use allows (double buffering shows up as such). Each unit is pipelined:
it is occupied for ``occupancy`` cycles and the result is ready ``latency`` cycles later. Units
stream through their ranges in order, so a dependent instruction may chain behind its producer
(start while the producer's results are still streaming out) as vector units forward results.

Loads and stores have separate in-order DMA queues (read and write channels) that share one
external-memory bus: a transfer occupies the bus for bytes / bandwidth cycles, in the earliest free
interval after it is ready, so a later load may use the bus while an earlier store still waits for
its data. Storage is tracked per VRF / MRF / FVRF entry and per 64-byte line of external memory;
strided accesses are tracked over the address range they span. The per-unit latencies below are the model's
parameters, to be calibrated against the RTL.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from accelml.hdl.config import EngineConfig

MEM_LINE = 64
ENTRY_GROUP = 16  # on-chip entries are tracked in groups of this many (a group completes with its last)
MVU_LATENCY_BASE = 6  # + log2(N) adder-tree stages
MFU_LATENCY = 4
CTL_OCCUPANCY = 1


class CycleModel:
    def __init__(self, cfg: EngineConfig, mem_bytes: int):
        self.cfg = cfg
        g = ENTRY_GROUP
        depth = {"vrf": -(-cfg.vrf_vectors // g), "mrf": -(-cfg.mrf_tiles // g), "fvrf": -(-cfg.fvrf_vectors // g),
                 "mem": -(-mem_bytes // MEM_LINE) + 1}
        self.write_done = {k: np.zeros(v, np.int64) for k, v in depth.items()}
        self.read_done = {k: np.zeros(v, np.int64) for k, v in depth.items()}
        self.unit_free: dict[str, int] = defaultdict(int)
        self.busy: dict[str, int] = defaultdict(int)
        self.issue_time = 0
        self.end = 0
        self.bus: list[tuple[int, int]] = []  # busy intervals of the external-memory bus, sorted
        self.mvu_latency = MVU_LATENCY_BASE + int(np.log2(cfg.native_dim))

    @staticmethod
    def _group(space: str, lo: int, hi: int, stream: bool) -> tuple[str, int, int, bool]:
        if space == "mem":
            return space, lo, hi, stream
        return space, lo // ENTRY_GROUP, -(-hi // ENTRY_GROUP), stream

    @staticmethod
    def mem_range(addr: int, nbytes: int) -> tuple[str, int, int]:
        return "mem", addr // MEM_LINE, -(-(addr + max(nbytes, 1)) // MEM_LINE)

    @staticmethod
    def _ramp(n: int, occupancy: int, end: bool = False) -> np.ndarray:
        """Cycle (from the start) at which an in-order stream of ``n`` entries reaches entry k
        (``end``: finishes with it)."""
        return ((np.arange(n, dtype=np.int64) + int(end)) * occupancy) // max(n, 1)

    def _bus_slot(self, ready: int, duration: int) -> int:
        """Earliest start >= ready of a free bus interval of ``duration`` cycles; reserves it."""
        self.bus = [iv for iv in self.bus if iv[1] > self.issue_time]  # nothing can start before issue
        t = ready
        pos = len(self.bus)
        for i, (s, e) in enumerate(self.bus):
            if e <= t:
                continue
            if s >= t + duration:
                pos = i
                break
            t = e
        self.bus.insert(pos, (t, t + duration))
        return t

    def op(self, unit: str, occupancy: int, latency: int, reads=(), writes=(), bus: bool = False) -> int:
        """Account one instruction; returns its completion cycle.

        Units stream through their ranges in order (chaining): entry k of a range is read or
        written ``k / n`` of the way through the instruction's occupancy, and written ``latency``
        cycles after that. An instruction may start once every entry it reads will have been
        written when it gets there, and every entry it writes will have been read and written.
        """
        self.issue_time += 1
        start = max(self.issue_time, self.unit_free[unit])
        reads = [self._group(*r) if len(r) == 4 else self._group(*r, True) for r in reads]
        writes = [self._group(*w, True)[:3] for w in writes]
        for space, lo, hi, stream in reads:
            if hi > lo:
                ramp = self._ramp(hi - lo, occupancy) if stream else 0
                start = max(start, int((self.write_done[space][lo:hi] - ramp).max()))
        for space, lo, hi in writes:
            if hi > lo:
                ramp = self._ramp(hi - lo, occupancy)
                start = max(start, int((self.write_done[space][lo:hi] - latency - ramp).max()),
                            int((self.read_done[space][lo:hi] - ramp).max()))
        if bus:  # a transfer also needs the shared external-memory bus for its occupancy
            start = self._bus_slot(start, occupancy)
        end = start + occupancy + latency
        self.unit_free[unit] = start + occupancy
        self.busy[unit] += occupancy
        for space, lo, hi, stream in reads:
            if hi > lo:
                view = self.read_done[space][lo:hi]
                done = start + self._ramp(hi - lo, occupancy, end=True) if stream else start + occupancy
                np.maximum(view, done, out=view)
        for space, lo, hi in writes:
            if hi > lo:
                self.write_done[space][lo:hi] = start + latency + self._ramp(hi - lo, occupancy, end=True)
        self.end = max(self.end, end)
        return end

    def dma_cycles(self, nbytes: int) -> int:
        return int(np.ceil(nbytes / self.cfg.mem_bytes_per_cycle))

    @property
    def cycles(self) -> int:
        return max(self.end, self.issue_time)


class NoTiming(CycleModel):
    """A cycle model that models nothing: for repeat runs of a program whose timing is known
    (the timing of a program does not depend on its data: no instruction reads data into a
    register, so control flow and every access are fixed by the program)."""

    def op(self, unit: str, occupancy: int, latency: int, reads=(), writes=(), bus: bool = False) -> int:
        self.issue_time += 1
        return 0

    @property
    def cycles(self) -> int:
        return 0
