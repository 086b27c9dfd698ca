"""Devices that execute engine programs on an external-memory image.

The host code is the same for every device: ``execute(program, memory)`` runs a program to its
``halt`` and leaves the results in memory. ``FuncSimDevice`` (the default) is the functional
simulator; an RTL device runs the same program on the Verilated engine, and a board device would
move the memory image over a host link.
"""

from __future__ import annotations

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import DeviceError
from accelml.hdl.program import Program
from accelml.sim.funcsim import FuncSim, Stats
from accelml.sim.memory import ExternalMemory

__all__ = ["Device", "FuncSimDevice", "device_named", "DEVICES"]


class Device:
    name = "abstract"

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.last_stats: Stats | None = None

    def execute(self, program: Program, memory: ExternalMemory) -> Stats:
        raise NotImplementedError


class FuncSimDevice(Device):
    """The functional simulator. A program's first run also runs the cycle model; later runs of
    the same program reuse its timing (which does not depend on the data) and only compute."""

    name = "funcsim"

    def __init__(self, cfg: EngineConfig):
        super().__init__(cfg)
        self._timing: dict[int, tuple[Program, int, int, dict]] = {}  # id(program) -> (program, mem, cycles, busy)

    def execute(self, program: Program, memory: ExternalMemory) -> Stats:
        known = self._timing.get(id(program))
        if known is not None and (known[0] is not program or known[1] != memory.size):
            known = None
        sim = FuncSim(self.cfg, memory, timing=known is None)
        stats = sim.run(program)
        if known is None:
            self._timing[id(program)] = (program, memory.size, stats.cycles, dict(stats.busy))
        else:
            stats.cycles, stats.busy = known[2], dict(known[3])
        self.last_stats = stats
        return stats


DEVICES = {"funcsim": FuncSimDevice}


def device_named(name: str, cfg: EngineConfig) -> Device:
    try:
        return DEVICES[name](cfg)
    except KeyError:
        available = ", ".join(DEVICES)
        raise DeviceError(f"device {name!r} is not available here (available: {available}); the RTL device "
                          "arrives with the full engine") from None
