"""The engine's top level: control, DMA, MFU and register files behind one external-memory port.

Ports: ``mem`` (``layouts.mem_port_signature``: word requests out, read data in), the instruction
memory write port (``imem_we``, ``imem_waddr``, ``imem_wdata``), the run inputs (``start``,
``prog_len``, ``mem_size``: bytes of the external image, ``ro_bytes``: its read-only constant
prefix, ``max_steps`` and ``max_cycles``: the watchdog's budgets) and status (``done``, ``error``,
``error_code``, ``error_pc``, ``steps``, ``cycles`` and one busy counter per built unit:
``busy_ctl``, ``busy_dma_load``, ``busy_dma_store``, ``busy_mfu``, in cycles). See ``control.py`` for the run
protocol and ``status.ErrorCode`` for the codes.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from accelml.hdl.isa import INSN_BITS, Space

from .control import CYCLE_BITS, STEP_BITS, Control
from .dma import Dma
from .layouts import byte_addr_bits, check_config, mem_port_signature
from .mfu import Mfu
from .regfiles import RegisterFiles
from .status import ErrorCode, Unit

__all__ = ["Engine", "BUILT_UNITS"]

BUILT_UNITS = (Unit.CTL, Unit.DMA_LOAD, Unit.DMA_STORE, Unit.MFU)  # units with a busy counter in this RTL


class Engine(wiring.Component):
    def __init__(self, cfg, *, imem_depth: int = 4096):
        self.cfg = check_config(cfg, "Engine")
        self.imem_depth = imem_depth
        self._control = Control(cfg, imem_depth=imem_depth)  # validates imem_depth
        pw = self._control.pc_bits
        ab = byte_addr_bits(cfg)
        super().__init__({
            "mem": Out(mem_port_signature(cfg)),
            "imem_we": In(1), "imem_waddr": In(range(imem_depth)), "imem_wdata": In(INSN_BITS),
            "start": In(1), "prog_len": In(pw), "mem_size": In(ab), "ro_bytes": In(ab),
            "max_steps": In(STEP_BITS), "max_cycles": In(CYCLE_BITS),
            "done": Out(1), "error": Out(1), "error_code": Out(ErrorCode), "error_pc": Out(pw),
            "steps": Out(STEP_BITS), "cycles": Out(CYCLE_BITS),
            **{f"busy_{u.key}": Out(CYCLE_BITS) for u in BUILT_UNITS},
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.control = ctl = self._control
        m.submodules.dma = dma = Dma(self.cfg)
        m.submodules.mfu = mfu = Mfu(self.cfg)
        m.submodules.files = files = RegisterFiles(self.cfg)
        wiring.connect(m, ctl.dma_cmd, dma.cmd)
        wiring.connect(m, dma.done, ctl.dma_done)
        wiring.connect(m, ctl.mfu_cmd, mfu.cmd)
        wiring.connect(m, mfu.done, ctl.mfu_done)
        # one instruction at a time: the MFU drives the file ports it shares while it is busy
        for space in Space:
            name = space.name.lower()
            fport, dport = getattr(files, name), getattr(dma, name)
            mport = getattr(mfu, name, None)
            if mport is None:
                wiring.connect(m, dport, fport)
                continue
            m.d.comb += [dport.rdata.eq(fport.rdata), mport.rdata.eq(fport.rdata)]
            for sig in ("we", "waddr", "wdata", "raddr"):
                m.d.comb += getattr(fport, sig).eq(Mux(mfu.busy, getattr(mport, sig), getattr(dport, sig)))
        wiring.connect(m, wiring.flipped(self.mem), dma.mem)
        for name in ("imem_we", "imem_waddr", "imem_wdata", "start", "prog_len", "mem_size", "ro_bytes",
                     "max_steps", "max_cycles"):
            m.d.comb += getattr(ctl, name).eq(getattr(self, name))
        for name in ("done", "error", "error_code", "error_pc", "steps", "cycles"):
            m.d.comb += getattr(self, name).eq(getattr(ctl, name))
        with m.If(self.start & ~ctl.running):
            m.d.sync += [getattr(self, f"busy_{u.key}").eq(0) for u in BUILT_UNITS]
        with m.Else():
            for unit, busy in ((Unit.CTL, ctl.ctl_busy), (Unit.DMA_LOAD, dma.busy_load),
                               (Unit.DMA_STORE, dma.busy_store), (Unit.MFU, mfu.busy)):
                counter = getattr(self, f"busy_{unit.key}")
                with m.If(busy):
                    m.d.sync += counter.eq(counter + 1)
        return m
