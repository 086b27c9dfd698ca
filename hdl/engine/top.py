"""The engine's top level: control, DMA, MFU, pool unit, MVU and register files behind one external-memory port.

Ports: ``mem`` (``layouts.mem_port_signature``: word requests out, read data in), the instruction
memory write port (``imem_we``, ``imem_waddr``, ``imem_wdata``), the run inputs (``start``,
``prog_len``, ``mem_size``: bytes of the external image, ``ro_bytes``: its read-only constant
prefix, ``max_steps`` and ``max_cycles``: the watchdog's budgets) and status (``done``, ``error``,
``error_code``, ``error_pc``, ``steps``, ``cycles`` and one busy counter per built unit:
``busy_ctl``, ``busy_dma_load``, ``busy_dma_store``, ``busy_mvu``, ``busy_mfu``, in cycles; ``pool``
counts as MFU work, as the cycle model charges it). See ``control.py`` for the run protocol and
``status.ErrorCode`` for the codes. Instructions run one at a time: the unit that is busy drives the
register-file ports it shares with the DMA (the MVU has its own ``1 + T``-th read ports, see
``regfiles.py``).
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
from .mvu import Mvu
from .pool import Pool
from .regfiles import RegisterFiles
from .status import ErrorCode, Unit

__all__ = ["Engine", "BUILT_UNITS"]

BUILT_UNITS = (Unit.CTL, Unit.DMA_LOAD, Unit.DMA_STORE, Unit.MVU, Unit.MFU)  # units with a busy counter in this RTL


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
        m.submodules.pool = pool = Pool(self.cfg)
        m.submodules.mvu = mvu = Mvu(self.cfg)
        m.submodules.files = files = RegisterFiles(self.cfg, wide_reads=self.cfg.tiles)
        wiring.connect(m, ctl.dma_cmd, dma.cmd)
        wiring.connect(m, dma.done, ctl.dma_done)
        wiring.connect(m, ctl.mfu_cmd, mfu.cmd)
        wiring.connect(m, mfu.done, ctl.mfu_done)
        wiring.connect(m, ctl.mvu_cmd, mvu.cmd)
        wiring.connect(m, mvu.done, ctl.mvu_done)
        wiring.connect(m, ctl.pool_cmd, pool.cmd)
        wiring.connect(m, pool.done, ctl.pool_done)
        wiring.connect(m, mvu.vrf_r, files.vrf_wide)
        wiring.connect(m, mvu.mrf_r, files.mrf_wide)
        wiring.connect(m, mvu.fvrf_r, files.fvrf_wide)
        # one instruction at a time: a busy unit drives the file ports it shares with the DMA
        sharers = ((mfu, mfu.busy), (pool, pool.busy), (mvu, mvu.busy))
        for space in Space:
            name = space.name.lower()
            fport, dport = getattr(files, name), getattr(dma, name)
            users = [(getattr(u, name), busy) for u, busy in sharers if name in u.signature.members]
            m.d.comb += dport.rdata.eq(fport.rdata)
            for uport, _ in users:
                m.d.comb += uport.rdata.eq(fport.rdata)
            for sig in ("we", "waddr", "wdata", "raddr"):
                value = getattr(dport, sig)
                for uport, busy in users:
                    value = Mux(busy, getattr(uport, sig), value)
                m.d.comb += getattr(fport, sig).eq(value)
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
                               (Unit.DMA_STORE, dma.busy_store), (Unit.MVU, mvu.busy),
                               (Unit.MFU, mfu.busy | pool.busy)):
                counter = getattr(self, f"busy_{unit.key}")
                with m.If(busy):
                    m.d.sync += counter.eq(counter + 1)
        return m
