"""The engine's top level: control, the units and the register files behind one external-memory port.

Ports: ``mem`` (``layouts.mem_port_signature``: word requests out, read data in), the instruction
memory write port (``imem_we``, ``imem_waddr``, ``imem_wdata``), the run inputs (``start``,
``prog_len``, ``mem_size``: bytes of the external image, ``ro_bytes``: its read-only constant
prefix, ``max_steps`` and ``max_cycles``: the watchdog's budgets) and status (``done``, ``error``,
``error_code``, ``error_pc``, ``steps``, ``cycles`` and one busy counter per built unit:
``busy_ctl``, ``busy_dma_load``, ``busy_dma_store``, ``busy_mvu``, ``busy_mfu``, ``busy_pool``, in
cycles). See ``control.py`` for the run
protocol, the dispatch and ``status.ErrorCode`` for the codes.

Units: ``dma_load`` and ``dma_store`` (two ``Dma`` instances, loads only and stores only), ``mvu``
(``mvc`` on T tile engines), ``mfu`` (``deq qnt vact vop``) and ``pool`` (on the MFU's file ports,
dequantisers and vector units, which the MFU lends it: control never runs the two at once,
``layouts.EXCLUSIVE_UNITS``); each runs the one instruction control dispatched to it, all at
once. Each has its own register-file ports (``layouts.FILE_USERS``: the MFU's through ``FILE_PORT_OWNERS``;
the MFU's and the MVU's FVRF write ``mfu_width`` entries wide, ``WIDE_USERS``; the MVU's T reads;
the DMAs' extra lanes:
``Dma.lane_users``; ``regfiles.py`` lists them), or with ``EngineConfig.file_ports = "shared"`` one
write port per file and one read port beside the MVU's, shared by the units (``layouts.shared_ports``;
control's ``{unit}_reads`` address the shared read ports). The two DMAs share the memory port a transfer at a
time: the one that asks first (the load when both ask in one cycle) holds it from its start to its
``DONE``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from accelml.hdl.isa import INSN_BITS

from .control import CYCLE_BITS, STEP_BITS, UNITS, Control
from .dma import Dma, lane_users
from .layouts import (
    FILE_PORT_OWNERS,
    FILE_USERS,
    MVU_WIDE_FILES,
    PORTS_OF,
    byte_addr_bits,
    check_config,
    mem_port_signature,
    mvu_wide_reads,
    parts_of,
    read_bit,
    shared_ports,
)
from .mfu import Mfu
from .mvu import Mvu
from .pool import Pool
from .regfiles import FilePlan, RegisterFiles
from .status import ErrorCode, Unit

__all__ = ["Engine", "BUILT_UNITS", "FILE_USERS", "FILE_PORT_OWNERS", "WIDE_USERS", "register_files", "file_plan"]

BUILT_UNITS = tuple(Unit)  # units with a busy counter in this RTL
WIDE_USERS = ("mfu", "mfu_b", "mvu")  # ports of EngineConfig.mfu_width entries (regfiles: banked files)


def dma_lane_owners(cfg) -> dict[str, str]:
    """The register-file users of the DMAs' extra lanes (``dma.lane_users``) -> their DMA."""
    return {lane: dma for dma, load in (("dma_load", True), ("dma_store", False))
            for lane in lane_users(cfg, dma, load=load, store=not load)}


def _file_args(cfg) -> tuple:
    users = {**FILE_USERS, **lane_users(cfg, "dma_load", load=True, store=False),
             **lane_users(cfg, "dma_store", load=False, store=True)}
    widths = {u: cfg.mfu_width for u in WIDE_USERS}
    # a DMA's extra lanes share its ports: on shared ports each lane takes the port of its entry's
    # bank (layouts.dma_max_lanes: no more lanes than banks, their entries consecutive)
    owners = dma_lane_owners(cfg)
    shared = {key: group + tuple(lane for lane, dma in owners.items()
                                 if dma in group and key[0] in users[lane])
              for key, group in shared_ports(cfg).items()}
    return (cfg, users, widths), {"wide": {"mvu": mvu_wide_reads(cfg)}, "wide_files": MVU_WIDE_FILES, "shared": shared}


def register_files(cfg, *, verilog_rams: bool = False) -> RegisterFiles:
    """The engine's register files: every unit's ports (``FILE_USERS`` and the DMAs' extra lanes),
    the wide users' widths (``mfu_width``), the MVU's T one-entry reads and the shared ports
    (``layouts.shared_ports``); ``verilog_rams``: memories as ``accelml_ram`` instances."""
    args, kw = _file_args(cfg)
    return RegisterFiles(*args, **kw, verilog_rams=verilog_rams)


def file_plan(cfg) -> FilePlan:
    """The ports of :func:`register_files` without building them: what the resource model and the
    synthesis checks count."""
    args, kw = _file_args(cfg)
    return FilePlan(*args, **kw)


class Engine(wiring.Component):
    """The whole engine (see the module doc). ``verilog_modules`` (the emitted Verilog,
    ``hdl.emit.engine_verilog``): the instruction memory, the register files' memories, the
    DMAs' byte shifts and the tile engines' dot products as instances of plain Verilog modules
    (``accelml_imem``, ``accelml_ram``, ``accelml_byte_shift``, ``accelml_dot``), which Amaranth's
    simulator cannot run."""

    def __init__(self, cfg, *, imem_depth: int = 4096, verilog_modules: bool = False):
        self.cfg = check_config(cfg, "Engine")
        self.imem_depth = imem_depth
        self.verilog_modules = bool(verilog_modules)
        self._control = Control(cfg, imem_depth=imem_depth, imem_verilog=verilog_modules)  # validates imem_depth
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
        m.submodules.dma_load = ld = Dma(self.cfg, load=True, store=False, verilog_shifts=self.verilog_modules)
        m.submodules.dma_store = st = Dma(self.cfg, load=False, store=True, verilog_shifts=self.verilog_modules)
        m.submodules.mfu = mfu = Mfu(self.cfg)
        m.submodules.pool = pool = Pool(self.cfg)
        m.submodules.mvu = mvu = Mvu(self.cfg, verilog_dots=self.verilog_modules)
        m.submodules.files = files = register_files(self.cfg, verilog_rams=self.verilog_modules)
        units = {"dma_load": ld, "dma_store": st, "mfu": mfu, "pool": pool, "mvu": mvu}  # one per control.UNITS
        for u in UNITS:
            wiring.connect(m, getattr(ctl, f"{u.name}_cmd"), units[u.name].cmd)
            wiring.connect(m, units[u.name].done, getattr(ctl, f"{u.name}_done"))
        for user, spaces in FILE_USERS.items():
            unit, suffix = FILE_PORT_OWNERS.get(user, (user, ""))
            for space in spaces:
                wiring.connect(m, getattr(units[unit], space.name.lower() + suffix),
                               getattr(files, RegisterFiles.port_name(user, space)))
        for space in MVU_WIDE_FILES:
            name = space.name.lower()
            wiring.connect(m, getattr(mvu, f"{name}_r"), getattr(files, f"mvu_{name}_wide"))
        wiring.connect(m, pool.mfu, mfu.lend)  # the pool runs on the MFU's ports and lanes
        owners = dma_lane_owners(self.cfg)
        for user, space in files.active_inputs():  # a shared read port: who reads the file now
            unit = owners.get(user, user)  # a DMA's lane reads while its DMA does
            readers = [unit, *(u for u, owner in PORTS_OF.items() if owner == unit)]
            active = getattr(files, f"{files.port_name(user, space)}_active")
            lo, n = read_bit(self.cfg, space), parts_of(self.cfg, space)
            if n == 1:
                m.d.comb += active.eq(Cat(*(getattr(ctl, f"{u}_reads")[lo] for u in readers)).any())
            else:  # a bit per part: read by any of them
                for p in range(n):
                    m.d.comb += active[p].eq(Cat(*(getattr(ctl, f"{u}_reads")[lo + p] for u in readers)).any())
        if self.cfg.mrf_banked:  # the banks a load's entry and its copies go to
            m.d.comb += files.dma_load_mrf_copies.eq(ld.mrf_copies)
        ld.connect_lanes(m, files, "dma_load")
        st.connect_lanes(m, files, "dma_store")
        # the memory port: held by one DMA from the start of its transfer to its DONE
        owner = Signal(range(3))  # 0 none, 1 load, 2 store
        free = Signal()
        g_ld, g_st = Signal(), Signal()
        m.d.comb += [
            free.eq((owner == 0) | ((owner == 1) & ~ld.want) | ((owner == 2) & ~st.want)),
            g_ld.eq(ld.want & ((owner == 1) | free)),
            g_st.eq(st.want & ((owner == 2) | (free & ~ld.want))),
            ld.grant.eq(g_ld), st.grant.eq(g_st),
        ]
        with m.If(g_ld):
            m.d.sync += owner.eq(1)
        with m.Elif(g_st):
            m.d.sync += owner.eq(2)
        with m.Elif(free):
            m.d.sync += owner.eq(0)
        req = self.mem.req
        with m.If(g_st):
            m.d.comb += [req.valid.eq(st.mem.req.valid), req.payload.eq(st.mem.req.payload),
                         st.mem.req.ready.eq(req.ready)]
        with m.Else():
            m.d.comb += [req.valid.eq(ld.mem.req.valid & g_ld), req.payload.eq(ld.mem.req.payload),
                         ld.mem.req.ready.eq(req.ready & g_ld)]
        m.d.comb += [ld.mem.resp.valid.eq(self.mem.resp.valid), ld.mem.resp.payload.eq(self.mem.resp.payload),
                     self.mem.resp.ready.eq(ld.mem.resp.ready)]
        for name in ("imem_we", "imem_waddr", "imem_wdata", "start", "prog_len", "mem_size", "ro_bytes",
                     "max_steps", "max_cycles"):
            m.d.comb += getattr(ctl, name).eq(getattr(self, name))
        for name in ("done", "error", "error_code", "error_pc", "steps", "cycles"):
            m.d.comb += getattr(self, name).eq(getattr(ctl, name))
        with m.If(self.start & ~ctl.running):
            m.d.sync += [getattr(self, f"busy_{u.key}").eq(0) for u in BUILT_UNITS]
        with m.Else():
            for unit, busy in ((Unit.CTL, ctl.ctl_busy), (Unit.DMA_LOAD, ld.busy_load),
                               (Unit.DMA_STORE, st.busy_store), (Unit.MVU, mvu.busy), (Unit.MFU, mfu.busy),
                               (Unit.POOL, pool.busy)):
                counter = getattr(self, f"busy_{unit.key}")
                with m.If(busy):
                    m.d.sync += counter.eq(counter + 1)
        return m
