"""Event-based cycle model of the engine, carried by the functional simulator.

Instructions issue in order, one per cycle, into per-unit queues (control, DMA, MVU, MFU). An
instruction starts when its unit is free, the storage it reads has been written (RAW) and the
storage it writes is no longer being read or written (WAR/WAW); so DMA overlaps compute exactly as
far as the program's buffer use allows (double buffering shows up as such). Each unit is pipelined:
it is occupied for ``occupancy`` cycles and the result is ready ``latency`` cycles later.

Storage is tracked per VRF / MRF / FVRF entry and per 64-byte line of external memory; strided
accesses are tracked over the address range they span. The per-unit latencies below are the model's
parameters, to be calibrated against the RTL.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from accelml.hdl.config import EngineConfig

MEM_LINE = 64
MVU_LATENCY_BASE = 6  # + log2(N) adder-tree stages
MFU_LATENCY = 4
CTL_OCCUPANCY = 1


class CycleModel:
    def __init__(self, cfg: EngineConfig, mem_bytes: int):
        self.cfg = cfg
        depth = {"vrf": cfg.vrf_vectors, "mrf": cfg.mrf_tiles, "fvrf": cfg.fvrf_vectors,
                 "mem": -(-mem_bytes // MEM_LINE) + 1}
        self.write_done = {k: np.zeros(v, np.int64) for k, v in depth.items()}
        self.read_done = {k: np.zeros(v, np.int64) for k, v in depth.items()}
        self.unit_free: dict[str, int] = defaultdict(int)
        self.busy: dict[str, int] = defaultdict(int)
        self.issue_time = 0
        self.end = 0
        self.mvu_latency = MVU_LATENCY_BASE + int(np.log2(cfg.native_dim))

    @staticmethod
    def mem_range(addr: int, nbytes: int) -> tuple[str, int, int]:
        return "mem", addr // MEM_LINE, -(-(addr + max(nbytes, 1)) // MEM_LINE)

    def op(self, unit: str, occupancy: int, latency: int, reads=(), writes=()) -> int:
        """Account one instruction; returns its completion cycle."""
        self.issue_time += 1
        start = max(self.issue_time, self.unit_free[unit])
        for space, lo, hi in reads:
            if hi > lo:
                start = max(start, int(self.write_done[space][lo:hi].max()))
        for space, lo, hi in writes:
            if hi > lo:
                start = max(start, int(self.write_done[space][lo:hi].max()), int(self.read_done[space][lo:hi].max()))
        end = start + occupancy + latency
        self.unit_free[unit] = start + occupancy
        self.busy[unit] += occupancy
        for space, lo, hi in reads:
            view = self.read_done[space][lo:hi]
            np.maximum(view, end, out=view)
        for space, lo, hi in writes:
            self.write_done[space][lo:hi] = end
        self.end = max(self.end, end)
        return end

    def dma_cycles(self, nbytes: int) -> int:
        return int(np.ceil(nbytes / self.cfg.mem_bytes_per_cycle))

    @property
    def cycles(self) -> int:
        return max(self.end, self.issue_time)
