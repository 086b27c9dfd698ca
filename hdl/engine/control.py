"""Control: instruction memory, fetch/decode, scalar and configuration registers, loops, watchdog,
and the in-order dispatch of unit instructions to units that run concurrently.

``FETCH`` reads ``imem[pc]`` (stopping with ``PAST_END`` at ``pc >= prog_len``); ``DECODE`` counts
the step (``STEP_BUDGET`` beyond ``max_steps``), refuses an undecodable word (``ILLEGAL_INSN``:
opcode or enum value out of range, non-zero bits above the opcode's last field; ``isa.decode``'s
rules) and executes ``nop halt seti addi add cfg loop``. ``ld``/``st`` are range-checked in
``CHECK`` with the functional simulator's rules and order (on-chip range, read-only constant image,
memory stride, external range); ``deq``, ``qnt``, ``vact``, ``vop`` in ``MCHECK`` (FuncSim._span of
each operand, then FuncSim._mfu_overlap: ``MFU_OVERLAP``); ``mvc`` and ``pool`` in ``WCHECK`` in
``FuncSim._mvc`` / ``_pool``'s order (a zero window dimension: ``WINDOW``; the VRF, [MRF,] FVRF
spans: ``CHIP_RANGE``; on a banked MRF then ``cob`` and the tiles' start: ``MRF_BANK``), the window
read from the configuration registers into the command; a load with ``copies`` its banks cannot
write at once stops with ``MRF_BANK`` after the on-chip range. Opcodes
in ``UNIMPLEMENTED_OPS`` (none now) stop with ``UNIMPLEMENTED``. ``loop`` follows ``FuncSim._loop``:
a body that does not fit, overlaps its enclosing body or nests deeper than ``MAX_LOOP_DEPTH`` stops
the engine; a zero count skips the body and continues as if its last instruction had run
(``ADVANCE``), so an enclosing loop ending there repeats.

Dispatch (``ISSUE``). Every unit in :data:`UNITS` (``ld`` -> ``dma_load``, ``st`` -> ``dma_store``,
``deq qnt vact vop`` -> ``mfu``, ``mvc`` -> ``mvu``, ``pool`` -> ``pool``) has a ``{name}_cmd`` /
``{name}_done`` stream pair and a queue of depth 1: its slot holds the instruction it runs (PC, step
number, up to three operand ranges). A checked instruction waits in ``ISSUE`` until its unit's slot
is free and none of its ranges conflicts with a range of any instruction in flight: a read against
an in-flight write, a write against an in-flight read or write, over the half-open span each
operand covers (entries of VRF / MRF / FVRF, bytes of external memory; a strided transfer covers
its first to last element; an ``mvc`` reads its VRF image span and MRF tile span and writes its
FVRF destination, which an accumulating one also reads; a ``pool`` reads its VRF image span and
writes its FVRF destination); also none that would use a register-file port it shares with another
unit's instruction in flight (``layouts.shared_ports``, ``layouts.port_conflict``: the MFU's FVRF
read port, which an accumulating ``mvc`` reads its sums through; with ``EngineConfig.file_ports =
"shared"`` one write port per file, one read port beside the MVU's T), whatever entries they touch
(with ``EngineConfig.file_parts`` > 1, a port per part of the VRF and FVRF: only spans that touch
a common part); and none of a unit it shares hardware with (``layouts.EXCLUSIVE_UNITS``: the pool
runs on the MFU's ports and lanes). Then it is handed over and control goes on with the next
instruction. ``{unit}_reads`` tells the register files which files (and parts: a bit per file and
part, ``layouts.read_bit``) each unit's instruction reads, from its hand-over to its done (the
shared read ports follow it).
The command carries everything the unit needs, configuration registers included (``clip_lo``,
``clip_hi``, ``alpha``, strides), copied when the instruction is checked: a later ``cfg`` does not
reach an instruction already dispatched. No chaining: a dependent instruction starts once its
producer has reported done. ``halt`` waits for every unit to finish.

Errors. An error found by control (its checks, the step budget) and an error a unit reports on its
``done`` stream both stop dispatch; the engine then waits for every instruction in flight and
stops with the error of the oldest faulting instruction in program order (by step number), so the
code and PC are the functional simulator's, which stops at the first faulting instruction: a unit's
data error in an older instruction wins over a range error control found in a later one. The PC
reported is the faulting instruction's (held in its slot), not control's. Instructions younger than
a faulting unit instruction that were already dispatched to other units do complete: after a data
error (``BAD_BFP``, ``BAD_FP``, ``OVERFLOW``, ``NAN``) external memory can hold their effects, where
the functional simulator stops before them (imprecise data faults; range errors are precise). Every
running cycle beyond ``max_cycles`` stops at once with ``CYCLE_BUDGET`` and the PC of the oldest
instruction in flight (control's when none is), so the engine always reaches ``done`` (``error`` set
or not) in bounded time.

Busy counter: ``ctl_busy`` is set in ``FETCH``, ``DECODE``, ``CHECK``, ``MCHECK``, ``WCHECK`` and ``ADVANCE``
(not while ``ISSUE`` or ``halt`` waits). Timing per instruction, which ``accelml.sim.cycles``
models: ``FETCH`` 1, ``DECODE`` 1, then ``CHECK``/``MCHECK``/``WCHECK`` 1 and ``ISSUE`` (1 cycle at least,
the cycle the unit takes the command) for a unit instruction, then ``ADVANCE`` 1 plus 1 per loop
it closes (a loop entered goes straight to ``FETCH``).

The instruction memory is written through ``imem_we/imem_waddr/imem_wdata`` while the engine is
idle. It is an Amaranth ``Memory`` for Amaranth's simulator; with ``imem_verilog=True`` (the
emitted Verilog, :data:`IMEM_VERILOG`) an instance of module ``accelml_imem``, the same one-write,
one-synchronous-read memory with no initial contents: Amaranth writes a memory's initial value one
bit at a time, which took minutes per 100 K words to emit, where the program is written at run
time anyway. ``start`` (a pulse) resets the registers, counters and loop stack and runs from
``pc = 0`` (after ``RESUME``: a unit still running an instruction of a run the watchdog stopped
finishes it first, its error dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from amaranth.hdl import Array, Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from accelml.hdl.isa import (
    INSN_BITS,
    INSN_LAYOUT,
    LAYOUTS,
    MAX_LOOP_DEPTH,
    NUM_REGS,
    Cfg,
    Opcode,
    PoolMode,
    Space,
)

from .dma import space_lanes
from .layouts import (
    EXCLUSIVE_UNITS,
    PORTS_OF,
    byte_addr_bits,
    check_config,
    dma_cmd_layout,
    file_depth,
    item_bytes,
    part_sizes,
    parts_of,
    read_bits,
    shared_ports,
)
from .mfu import MfuOp, mfu_cmd_layout
from .mvu import mvu_cmd_layout
from .pool import pool_cmd_layout
from .status import ErrorCode, Unit

__all__ = ["Control", "IMEM_VERILOG", "CFG_RESET", "UNIMPLEMENTED_OPS", "UNITS", "UnitPort", "RANGES"]

# configuration registers' values at start (FuncSim's defaults; the others start at 0)
CFG_RESET = {Cfg.KH: 1, Cfg.KW: 1, Cfg.STRIDE_H: 1, Cfg.STRIDE_W: 1, Cfg.DIL_H: 1, Cfg.DIL_W: 1,
             Cfg.IN_H: 1, Cfg.IN_W: 1, Cfg.IN_CB: 1, Cfg.OUT_W: 1, Cfg.NPIX: 1, Cfg.COB: 1}
UNIMPLEMENTED_OPS: tuple[Opcode, ...] = ()
STEP_BITS = 48
CYCLE_BITS = 64
RANGES = 3  # operand ranges per instruction (vop: two reads and a write)

# the instruction memory of the emitted Verilog (``Control(imem_verilog=True)``): written at run time,
# so no initial contents; the read is registered and reads the word before a write to the same address
IMEM_VERILOG = """
module accelml_imem #(parameter WIDTH = 64, parameter DEPTH = 4096, parameter ABITS = 12) (
    input wire clk,
    input wire we,
    input wire [ABITS-1:0] waddr,
    input wire [WIDTH-1:0] wdata,
    input wire [ABITS-1:0] raddr,
    output reg [WIDTH-1:0] rdata
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    always @(posedge clk) begin
        if (we) mem[waddr] <= wdata;
        rdata <= mem[raddr];
    end
endmodule
"""
MEM_SPACE = 3  # hazard space of external memory (after Space.VRF, MRF, FVRF)


@dataclass(frozen=True)
class UnitPort:
    """A unit control dispatches to: ``{name}_cmd`` (payload ``layout(cfg)``) / ``{name}_done``."""

    name: str
    unit: Unit
    layout: Callable


UNITS = (
    UnitPort("dma_load", Unit.DMA_LOAD, dma_cmd_layout),
    UnitPort("dma_store", Unit.DMA_STORE, dma_cmd_layout),
    UnitPort("mfu", Unit.MFU, lambda cfg: mfu_cmd_layout()),
    UnitPort("mvu", Unit.MVU, lambda cfg: mvu_cmd_layout(cfg)),
    UnitPort("pool", Unit.POOL, pool_cmd_layout),
)
UNIT_INDEX = {u.name: i for i, u in enumerate(UNITS)}


def range_layout() -> data.StructLayout:
    """One operand's span for the hazard check: ``space`` (Space or MEM_SPACE), [lo, hi); ``read``:
    a written span the instruction also reads (an accumulating ``mvc``'s FVRF sums), for the read
    ports (a write conflicts with every access already)."""
    return data.StructLayout({"valid": 1, "write": 1, "read": 1, "space": 2, "lo": 50, "hi": 50})


def _conflict(a, b):
    return (a.valid & b.valid & (a.space == b.space) & (a.write | b.write) & (a.lo < b.hi) & (b.lo < a.hi))


class _Parts:
    """The parts of a file in parts (``EngineConfig.file_parts``, ``layouts.part_sizes``) that an
    operand range touches, built once per range signal: the low bits of ``lo`` and ``hi - 1``
    above a part's size (a checked range lies within its file)."""

    def __init__(self, m, cfg):
        self.m, self.cfg, self.sizes, self.count, self.memo = m, cfg, part_sizes(cfg), cfg.file_parts, {}

    def of(self, space: Space) -> int:
        return parts_of(self.cfg, space)

    def touched(self, r, space: Space) -> list | None:
        """Per part of ``space``: does ``r`` touch it? ``None`` for a whole file."""
        size = self.sizes.get(space.name.lower())
        if size is None:
            return None
        key = (id(r), space)
        if key not in self.memo:
            sh, pp = ceil_log2(size), ceil_log2(self.count)
            last = Signal(sh + pp, name=f"range_last_{len(self.memo)}")  # hi - 1 within the file
            self.m.d.comb += last.eq(r.hi[:sh + pp] - 1)
            lo, hi = r.lo[sh:sh + pp], last[sh:]
            # part p: lo's part <= p <= hi's (the first part's lower bound and the last's upper
            # bound always hold)
            self.memo[key] = [(lo == 0) if p == 0 else (hi == p) if p == self.count - 1 else (lo <= p) & (hi >= p)
                              for p in range(self.count)]
        return self.memo[key]

    def uses(self, use, r, space: Space) -> list:
        """``use`` per part of ``space`` that ``r`` touches."""
        touched = self.touched(r, space)
        return [use] if touched is None else [use & t for t in touched]


def _port_use(shared: dict, unit: str, r, parts: _Parts) -> list:
    """Per shared port (``layouts.shared_ports`` order) and per part of its file: does ``unit``'s
    range ``r`` use it (through its own ports or, ``layouts.PORTS_OF``, another unit's)?"""
    unit = PORTS_OF.get(unit, unit)
    out = []
    for (space, write), group in shared.items():
        if unit not in group:
            out += [Const(0, 1)] * parts.of(space)
            continue
        use = r.valid & (r.lo < r.hi) & (r.space == space) & (r.write if write else ~r.write | r.read)
        out += parts.uses(use, r, space)
    return out


class Control(wiring.Component):
    def __init__(self, cfg, *, imem_depth: int = 4096, imem_verilog: bool = False):
        self.cfg = check_config(cfg, "Control")
        self.imem_verilog = bool(imem_verilog)
        if isinstance(imem_depth, bool) or not isinstance(imem_depth, int) or not 2 <= imem_depth <= 1 << 20:
            raise ValueError(f"Control imem_depth must be an integer in [2, {1 << 20}], got {imem_depth!r}")
        self.imem_depth = imem_depth
        pw = ceil_log2(imem_depth + 1)
        self.pc_bits = pw
        ab = byte_addr_bits(cfg)
        members = {
            "imem_we": In(1), "imem_waddr": In(range(imem_depth)), "imem_wdata": In(INSN_BITS),
            "start": In(1), "prog_len": In(pw), "mem_size": In(ab), "ro_bytes": In(ab),
            "max_steps": In(STEP_BITS), "max_cycles": In(CYCLE_BITS),
            "running": Out(1), "done": Out(1), "error": Out(1), "error_code": Out(ErrorCode),
            "error_pc": Out(pw), "steps": Out(STEP_BITS), "cycles": Out(CYCLE_BITS), "ctl_busy": Out(1),
            **{f"{u.name}_reads": Out(read_bits(cfg)) for u in UNITS},
        }
        for u in UNITS:
            members[f"{u.name}_cmd"] = Out(stream.Signature(u.layout(cfg)))
            members[f"{u.name}_done"] = In(stream.Signature(ErrorCode))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        pw = self.pc_bits
        nu = len(UNITS)
        shared = shared_ports(cfg)  # (file, write) -> units sharing that port

        raddr = Signal(ceil_log2(self.imem_depth), name="imem_raddr")  # read the cycle after
        rdata = Signal(INSN_BITS, name="imem_rdata")
        if self.imem_verilog:
            m.submodules.imem = Instance(
                "accelml_imem", p_WIDTH=INSN_BITS, p_DEPTH=self.imem_depth, p_ABITS=len(raddr),
                i_clk=ClockSignal("sync"), i_we=self.imem_we, i_waddr=self.imem_waddr, i_wdata=self.imem_wdata,
                i_raddr=raddr, o_rdata=rdata)
        else:
            m.submodules.imem = imem = Memory(shape=INSN_BITS, depth=self.imem_depth, init=[])
            wp, mp = imem.write_port(), imem.read_port()
            m.d.comb += [wp.en.eq(self.imem_we), wp.addr.eq(self.imem_waddr), wp.data.eq(self.imem_wdata),
                         mp.addr.eq(raddr), rdata.eq(mp.data)]

        regs = Array(Signal(32, name=f"r{i}") for i in range(NUM_REGS))
        cfgr = Array(Signal(32, name=f"cfg_{k.name.lower()}", init=CFG_RESET.get(k, 0)) for k in Cfg)
        pc = Signal(pw)
        lp_first = Array(Signal(pw, name=f"loop{i}_first") for i in range(MAX_LOOP_DEPTH))
        lp_last = Array(Signal(pw, name=f"loop{i}_last") for i in range(MAX_LOOP_DEPTH))
        lp_left = Array(Signal(33, name=f"loop{i}_left") for i in range(MAX_LOOP_DEPTH))
        depth = Signal(range(MAX_LOOP_DEPTH + 1))
        top = Signal(range(MAX_LOOP_DEPTH))
        m.d.comb += top.eq(depth - 1)

        word = Signal(INSN_BITS)
        m.d.comb += word.eq(rdata)
        insn = data.View(INSN_LAYOUT, word[:INSN_LAYOUT.size])
        opcode = word[:6]

        # -- units: command payloads, slots (the instruction each unit runs), done streams ------------
        cmds = [getattr(self, f"{u.name}_cmd") for u in UNITS]
        dones = [getattr(self, f"{u.name}_done") for u in UNITS]
        payload = [Signal(u.layout(cfg), name=f"{u.name}_payload") for u in UNITS]
        s_busy = [Signal(name=f"{u.name}_slot_busy") for u in UNITS]
        s_pc = [Signal(pw, name=f"{u.name}_slot_pc") for u in UNITS]
        s_step = [Signal(STEP_BITS, name=f"{u.name}_slot_step") for u in UNITS]
        s_rng = [[Signal(range_layout(), name=f"{u.name}_slot_range{k}") for k in range(RANGES)] for u in UNITS]
        p_unit = Signal(range(nu))  # the checked instruction waiting in ISSUE
        p_rng = [Signal(range_layout(), name=f"pending_range{k}") for k in range(RANGES)]
        any_busy = Signal()
        m.d.comb += any_busy.eq(Cat(*s_busy).any())
        parts = _Parts(m, cfg)

        def reads(rngs):  # the files an instruction's ranges read: a bit per Space and part (read_bit)
            return Cat(*(Cat(*bits).any() for space in Space for bits in zip(*(
                parts.uses(r.valid & (r.lo < r.hi) & (~r.write | r.read) & (r.space == space), r, space)
                for r in rngs), strict=True)))

        for u in range(nu):  # the files a unit reads: from the instruction's hand-over to its done
            handover = cmds[u].valid & cmds[u].ready
            m.d.comb += getattr(self, f"{UNITS[u].name}_reads").eq(
                Mux(s_busy[u], reads(s_rng[u]), Mux(handover, reads(p_rng), 0)))

        # -- status and faults ----------------------------------------------------------------------
        f_valid = Signal()
        f_code = Signal(ErrorCode)
        f_pc = Signal(pw)
        f_step = Signal(STEP_BITS)
        m.d.comb += [self.error_code.eq(f_code), self.error_pc.eq(f_pc)]
        halted = Signal()
        failed = Signal()
        m.d.comb += [self.done.eq(halted | failed), self.error.eq(failed)]
        ctl_fail = Signal()  # control found an error in the current instruction (this cycle)
        ctl_code = Signal(ErrorCode)
        watchdog_fired = Signal()

        def fail(why):
            m.d.comb += [ctl_fail.eq(1), ctl_code.eq(why)]
            m.next = "DRAIN"

        # done streams: always taken; a slot frees the cycle after its done
        unit_err = [Signal(name=f"{u.name}_fault") for u in UNITS]
        fault_now = Signal()
        for u in range(nu):
            m.d.comb += [dones[u].ready.eq(1), unit_err[u].eq(dones[u].valid & (dones[u].payload != ErrorCode.NONE))]
            with m.If(dones[u].valid):
                m.d.sync += s_busy[u].eq(0)
        m.d.comb += fault_now.eq(Cat(*unit_err).any())
        # the oldest fault wins: control's (the youngest instruction) only if none is recorded, then
        # each unit's done error if older than what is recorded so far
        v, c, fpc, st = f_valid, f_code, f_pc, f_step
        nv, nc, npc, nst = (Signal.like(v, name="fault0_valid"), Signal.like(c, name="fault0_code"),
                            Signal.like(fpc, name="fault0_pc"), Signal.like(st, name="fault0_step"))
        m.d.comb += [nv.eq(v), nc.eq(c), npc.eq(fpc), nst.eq(st)]
        with m.If(ctl_fail & ~v):
            m.d.comb += [nv.eq(1), nc.eq(ctl_code), npc.eq(pc), nst.eq(self.steps + 1)]
        v, c, fpc, st = nv, nc, npc, nst
        for u in range(nu):
            nv, nc, npc, nst = (Signal.like(v, name=f"fault{u + 1}_valid"), Signal.like(c, name=f"fault{u + 1}_code"),
                                Signal.like(fpc, name=f"fault{u + 1}_pc"), Signal.like(st, name=f"fault{u + 1}_step"))
            m.d.comb += [nv.eq(v), nc.eq(c), npc.eq(fpc), nst.eq(st)]
            with m.If(unit_err[u] & (~v | (s_step[u] < st))):
                m.d.comb += [nv.eq(1), nc.eq(dones[u].payload), npc.eq(s_pc[u]), nst.eq(s_step[u])]
            v, c, fpc, st = nv, nc, npc, nst
        # the oldest instruction in flight, for CYCLE_BUDGET
        o_pc = Signal(pw)
        o_step = Signal(STEP_BITS)
        o_any = Signal()
        ov, opc, ost = s_busy[0], Mux(s_busy[0], s_pc[0], pc), s_step[0]
        for u in range(1, nu):
            take = s_busy[u] & (~ov | (s_step[u] < ost))
            ov, opc, ost = ov | s_busy[u], Mux(take, s_pc[u], opc), Mux(take, s_step[u], ost)
        m.d.comb += [o_any.eq(ov), o_pc.eq(opc), o_step.eq(ost)]
        with m.If(watchdog_fired):
            m.d.sync += [f_valid.eq(1), f_code.eq(ErrorCode.CYCLE_BUDGET), f_pc.eq(o_pc)]
        with m.Else():
            m.d.sync += [f_valid.eq(v), f_code.eq(c), f_pc.eq(fpc), f_step.eq(st)]

        # -- DMA operands, checked in CHECK --------------------------------------------------------
        d_store = Signal()
        d_space = Signal(Space)
        d_base = Signal(32)
        d_addr = Signal(32)
        d_rows = Signal(16)
        d_len = Signal(16)
        d_mstride = Signal(32)
        d_cstride = Signal(32)
        # MFU operands, checked in MCHECK: (start, entries, depth) of each span
        mc = Signal(mfu_cmd_layout())
        m_depth_a = Signal(range(max(cfg.vrf_vectors, cfg.fvrf_vectors) + 1))
        m_count_b = Signal(16)
        m_depth_d = Signal(range(max(cfg.vrf_vectors, cfg.fvrf_vectors) + 1))

        # mvc / pool operands, checked in WCHECK
        w_pool = Signal()  # pool (else mvc)
        w_mode = Signal(PoolMode)
        w_acc = Signal()
        w_vs = Signal(32)  # VRF, MRF, FVRF starts
        w_ts = Signal(32)
        w_ds = Signal(32)

        def c_(key):
            return cfgr[key.value]

        sat_bits = max(cfg.vrf_vectors, cfg.mrf_tiles, cfg.fvrf_vectors).bit_length()  # 2**sat_bits > depths

        def sat(v):
            """min(v, 2**sat_bits)."""
            return Mux(v >= (1 << sat_bits), 1 << sat_bits, v[:sat_bits + 1])

        def sat_product(*factors):
            """min(product, 2**sat_bits), exactly (sat of a product is sat of the saturated factors'
            product: a factor at the limit with none zero puts the product at the limit too)."""
            p = sat(factors[0])
            for f in factors[1:]:
                p = sat(p * sat(f))
            return p

        def set_range(k, space, lo, hi, write, valid=1, read=0):
            r = p_rng[k]
            return [r.valid.eq(valid), r.write.eq(write), r.read.eq(read), r.space.eq(space), r.lo.eq(lo),
                    r.hi.eq(hi)]

        def clear_fault():
            return [f_valid.eq(0), f_code.eq(ErrorCode.NONE), f_pc.eq(0), f_step.eq(0)]

        def restart():
            with m.If(self.start):
                m.d.sync += [pc.eq(0), depth.eq(0), self.steps.eq(0), self.cycles.eq(0), halted.eq(0),
                             failed.eq(0), *clear_fault()]
                m.d.sync += [r.eq(0) for r in regs]
                m.d.sync += [r.eq(CFG_RESET.get(k, 0)) for r, k in zip(cfgr, Cfg, strict=True)]
                # a unit still running an instruction of a run the watchdog stopped finishes first
                m.next = "RESUME"
                with m.If(~any_busy):
                    m.next = "FETCH"

        def watchdog():  # last in every running state, so that it wins
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(self.cycles >= self.max_cycles):
                m.d.comb += watchdog_fired.eq(1)
                m.d.sync += failed.eq(1)
                m.next = "STOPPED"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                restart()
            with m.State("FETCH"):
                m.d.comb += [self.ctl_busy.eq(1), raddr.eq(pc)]
                with m.If(f_valid):  # a unit reported an error: no further instruction
                    m.next = "DRAIN"
                with m.Elif(pc >= self.prog_len):
                    fail(ErrorCode.PAST_END)
                with m.Else():
                    m.next = "DECODE"
                watchdog()
            with m.State("DECODE"):
                m.d.comb += [self.ctl_busy.eq(1), raddr.eq(pc)]
                legal = Signal()
                with m.Switch(opcode):
                    for op, layout in LAYOUTS.items():
                        with m.Case(op.value):
                            ok = word[layout.size:] == 0
                            if op is Opcode.CFG:
                                ok = ok & (insn.cfg.key.as_value() < len(Cfg))
                            elif op in (Opcode.LD, Opcode.ST):
                                ok = ok & (insn.ld.space.as_value() < len(Space))
                            elif op is Opcode.POOL:
                                ok = ok & (insn.pool.mode.as_value() < len(PoolMode))
                            m.d.comb += legal.eq(ok)
                m.d.sync += self.steps.eq(self.steps + 1)
                with m.If(self.steps + 1 > self.max_steps):
                    fail(ErrorCode.STEP_BUDGET)
                with m.Elif(~legal):
                    fail(ErrorCode.ILLEGAL_INSN)
                with m.Else():
                    m.next = "ADVANCE"
                    with m.Switch(opcode):
                        with m.Case(Opcode.HALT):
                            m.next = "HALTING"
                        with m.Case(Opcode.SETI):
                            f = insn.seti
                            with m.If(f.rd != 0):
                                m.d.sync += regs[f.rd].eq(f.imm)
                        with m.Case(Opcode.ADDI):
                            f = insn.addi
                            with m.If(f.rd != 0):
                                m.d.sync += regs[f.rd].eq(regs[f.rs] + f.imm)
                        with m.Case(Opcode.ADD):
                            f = insn.add
                            with m.If(f.rd != 0):
                                m.d.sync += regs[f.rd].eq(regs[f.rs] + regs[f.rt])
                        with m.Case(Opcode.CFG):
                            f = insn.cfg
                            m.d.sync += cfgr[f.key.as_value()].eq(regs[f.rs] + f.imm)
                        with m.Case(Opcode.LOOP):
                            f = insn.loop
                            count = Signal(33)
                            last = Signal(pw + 13)
                            m.d.comb += [count.eq(regs[f.rs] + f.count), last.eq(pc + f.body)]
                            with m.If((f.body == 0) | (last >= self.prog_len)):
                                fail(ErrorCode.LOOP_FIT)
                            with m.Elif((depth != 0) & (last > lp_last[top])):
                                fail(ErrorCode.LOOP_OVERLAP)
                            with m.Elif(count == 0):  # past the body, as if its last instruction had run
                                m.d.sync += pc.eq(last)
                                m.next = "ADVANCE"
                            with m.Elif(depth == MAX_LOOP_DEPTH):
                                fail(ErrorCode.LOOP_DEPTH)
                            with m.Else():
                                m.d.sync += [lp_first[depth].eq(pc + 1), lp_last[depth].eq(last),
                                             lp_left[depth].eq(count), depth.eq(depth + 1), pc.eq(pc + 1)]
                                m.next = "FETCH"
                        with m.Case(Opcode.LD, Opcode.ST):
                            f = insn.ld  # ld and st share one layout
                            m.d.sync += [
                                d_store.eq(opcode == Opcode.ST.value), d_space.eq(f.space), d_base.eq(regs[f.rc]),
                                d_addr.eq(regs[f.rm]), d_rows.eq(f.rows), d_len.eq(f.length),
                                d_mstride.eq(cfgr[Cfg.MEM_STRIDE.value]), d_cstride.eq(cfgr[Cfg.CHIP_STRIDE.value]),
                            ]
                            m.next = "CHECK"
                        with m.Case(Opcode.DEQ, Opcode.QNT, Opcode.VACT, Opcode.VOP):
                            fv = insn.vop
                            m.d.sync += [mc.clip_lo.eq(cfgr[Cfg.CLIP_LO.value]), mc.clip_hi.eq(cfgr[Cfg.CLIP_HI.value]),
                                         mc.alpha.eq(cfgr[Cfg.ALPHA.value]),
                                         mc.period.eq(0), mc.src_b.eq(0), mc.act.eq(0), mc.dest.eq(0), mc.bfile.eq(0),
                                         m_depth_a.eq(cfg.fvrf_vectors), m_depth_d.eq(cfg.fvrf_vectors)]
                            m.next = "MCHECK"
                            with m.Switch(opcode):
                                with m.Case(Opcode.DEQ):
                                    f = insn.deq
                                    m.d.sync += [mc.op.eq(MfuOp.DEQ), mc.dst.eq(regs[f.rd]), mc.src_a.eq(regs[f.rs]),
                                                 mc.count.eq(f.count), m_count_b.eq(0),
                                                 m_depth_a.eq(cfg.vrf_vectors)]
                                with m.Case(Opcode.QNT):
                                    f = insn.qnt
                                    m.d.sync += [mc.op.eq(MfuOp.QNT), mc.dst.eq(regs[f.rd]), mc.src_a.eq(regs[f.rs]),
                                                 mc.count.eq(f.count), m_count_b.eq(0),
                                                 m_depth_d.eq(cfg.vrf_vectors)]
                                with m.Case(Opcode.VACT):
                                    f = insn.vact
                                    m.d.sync += [mc.op.eq(MfuOp.VACT), mc.fn.eq(f.act.as_value()),
                                                 mc.dst.eq(regs[f.rd]), mc.src_a.eq(regs[f.rs]), mc.count.eq(f.count),
                                                 m_count_b.eq(0)]
                                with m.Case(Opcode.VOP):
                                    m.d.sync += [mc.op.eq(MfuOp.VOP), mc.fn.eq(fv.fn.as_value()),
                                                 mc.dst.eq(regs[fv.rd]), mc.src_a.eq(regs[fv.ra]),
                                                 mc.src_b.eq(regs[fv.rb]), mc.count.eq(fv.count),
                                                 mc.period.eq(fv.period), mc.act.eq(fv.act.as_value()),
                                                 mc.dest.eq(fv.dest.as_value()),  # quantised into the VRF
                                                 mc.bfile.eq(fv.bfile.as_value()),  # b dequantised from the VRF
                                                 m_depth_d.eq(Mux(fv.dest.as_value(), cfg.vrf_vectors,
                                                                  cfg.fvrf_vectors)),
                                                 m_count_b.eq(Mux(fv.period != 0, fv.period, fv.count))]
                        with m.Case(Opcode.MVC):
                            f = insn.mvc
                            m.d.sync += [w_pool.eq(0), w_acc.eq(f.acc), w_vs.eq(regs[f.rs]), w_ts.eq(regs[f.rm]),
                                         w_ds.eq(regs[f.rd])]
                            m.next = "WCHECK"
                        with m.Case(Opcode.POOL):
                            f = insn.pool
                            m.d.sync += [w_pool.eq(1), w_mode.eq(f.mode), w_vs.eq(regs[f.rs]), w_ds.eq(regs[f.rd])]
                            m.next = "WCHECK"
                        if UNIMPLEMENTED_OPS:
                            with m.Case(*(op.value for op in UNIMPLEMENTED_OPS)):
                                fail(ErrorCode.UNIMPLEMENTED)
                watchdog()
            with m.State("CHECK"):
                m.d.comb += [self.ctl_busy.eq(1)]
                item = Signal(range(max(item_bytes(cfg, s) for s in Space) + 1))
                fdepth = Signal(range(max(file_depth(cfg, s) for s in Space) + 1))
                with m.Switch(d_space):
                    for s in Space:
                        with m.Case(s):
                            m.d.comb += [item.eq(item_bytes(cfg, s)), fdepth.eq(file_depth(cfg, s))]
                row_bytes = Signal(32)
                count = Signal(32)
                chip_stride = Signal(32)
                mem_stride = Signal(32)
                chip_end = Signal(50)
                mem_end = Signal(50)
                copies = Signal(32)  # a load into the MRF: its rows' copies side by side (isa.md, "Banked MRF")
                m.d.comb += [
                    row_bytes.eq(d_len * item), count.eq(d_rows * d_len),
                    chip_stride.eq(Mux(d_cstride != 0, d_cstride, d_len)),
                    mem_stride.eq(Mux(d_mstride != 0, d_mstride, row_bytes)),
                    copies.eq(Mux((d_space == Space.MRF) & ~d_store & (cfgr[Cfg.COPIES.value] > 1),
                                  cfgr[Cfg.COPIES.value], 1)),
                    chip_end.eq(d_base + (d_rows - 1) * chip_stride + copies * d_len),
                    mem_end.eq(d_addr + (d_rows - 1) * mem_stride + row_bytes),
                ]
                # copies are written in the row's cycle, each to its own bank: a banked MRF, one DMA
                # lane of tiles, and the copies of a row within the T banks (FuncSim._check_copies)
                one_lane = space_lanes(cfg)[Space.MRF] == 1
                if cfg.mrf_banked and one_lane:
                    bad_copies = (copies > 1) & (copies * d_len > cfg.tiles)
                else:
                    bad_copies = copies > 1
                with m.If(count == 0):
                    m.next = "ADVANCE"
                with m.Elif(chip_end > fdepth):
                    fail(ErrorCode.CHIP_RANGE)
                with m.Elif(bad_copies):
                    fail(ErrorCode.MRF_BANK)
                with m.Elif(d_store & (d_addr < self.ro_bytes)):
                    fail(ErrorCode.READ_ONLY)
                with m.Elif((d_rows > 1) & (mem_stride < row_bytes)):
                    fail(ErrorCode.MEM_STRIDE)
                with m.Elif(mem_end > self.mem_size):
                    fail(ErrorCode.MEM_RANGE)
                with m.Else():
                    for u in (UNIT_INDEX["dma_load"], UNIT_INDEX["dma_store"]):
                        p = payload[u]
                        m.d.sync += [p.store.eq(d_store), p.space.eq(d_space), p.base.eq(d_base),
                                     p.chip_stride.eq(chip_stride), p.addr.eq(d_addr), p.mem_stride.eq(mem_stride),
                                     p.rows.eq(d_rows), p.length.eq(d_len)]
                        if cfg.mrf_banked:
                            m.d.sync += p.copies.eq(copies)
                    m.d.sync += [p_unit.eq(Mux(d_store, UNIT_INDEX["dma_store"], UNIT_INDEX["dma_load"])),
                                 *set_range(0, d_space, d_base, chip_end, ~d_store),
                                 *set_range(1, MEM_SPACE, d_addr, mem_end, d_store),
                                 *set_range(2, 0, 0, 0, 0, valid=0)]
                    m.next = "ISSUE"
                watchdog()
            with m.State("MCHECK"):  # FuncSim._span of each operand, then the MFU
                m.d.comb += self.ctl_busy.eq(1)
                a_end = mc.src_a + mc.count
                b_end = mc.src_b + m_count_b
                d_end = mc.dst + mc.count
                # FuncSim._mfu_overlap: a source the MFU would read after writing over it
                same_file = ((mc.op == MfuOp.VOP) & ~mc.dest) | (mc.op == MfuOp.VACT)  # vop to the VRF: none
                periodic = (mc.period != 0) & (mc.period < mc.count)
                ahead_a = (mc.dst > mc.src_a) & (mc.dst < a_end)
                over_b = Mux(periodic, (mc.dst < b_end) & (mc.src_b < d_end), (mc.dst > mc.src_b) & (mc.dst < b_end))
                b_depth = Mux(mc.bfile, cfg.vrf_vectors, cfg.fvrf_vectors)
                with m.If((a_end > m_depth_a) | ((mc.op == MfuOp.VOP) & (b_end > b_depth))
                          | (d_end > m_depth_d)):
                    fail(ErrorCode.CHIP_RANGE)
                with m.Elif((same_file & ahead_a) | ((mc.op == MfuOp.VOP) & (mc.bfile == mc.dest) & over_b)):
                    fail(ErrorCode.MFU_OVERLAP)
                with m.Elif(mc.count == 0):
                    m.next = "ADVANCE"
                with m.Else():
                    m.d.sync += [payload[UNIT_INDEX["mfu"]].eq(mc), p_unit.eq(UNIT_INDEX["mfu"]),
                                 *set_range(0, Mux(mc.op == MfuOp.DEQ, Space.VRF, Space.FVRF), mc.src_a, a_end, 0),
                                 *set_range(1, Mux(mc.bfile, Space.VRF, Space.FVRF), mc.src_b, b_end, 0,
                                            valid=mc.op == MfuOp.VOP),
                                 *set_range(2, Mux((mc.op == MfuOp.QNT) | ((mc.op == MfuOp.VOP) & mc.dest), Space.VRF,
                                                   Space.FVRF), mc.dst, d_end, 1)]
                    m.next = "ISSUE"
                watchdog()
            with m.State("WCHECK"):  # FuncSim._window, then the _span of each operand
                m.d.comb += self.ctl_busy.eq(1)
                in_cb, cob = c_(Cfg.IN_CB), c_(Cfg.COB)
                gi = Mux(c_(Cfg.GI) != 0, c_(Cfg.GI), in_cb)
                go = Mux(c_(Cfg.GO) != 0, c_(Cfg.GO), cob)
                taps = c_(Cfg.KH) * c_(Cfg.KW)
                nj = Mux(w_pool, in_cb, cob)
                zero = Signal()
                m.d.comb += zero.eq(Cat(*(c_(k) == 0 for k in (
                    Cfg.IN_H, Cfg.IN_W, Cfg.KH, Cfg.KW, Cfg.STRIDE_H, Cfg.STRIDE_W, Cfg.DIL_H, Cfg.DIL_W,
                    Cfg.OUT_W, Cfg.IN_CB))).any())
                # the spans' products saturated at 2**sat_bits (above every file depth): the same
                # verdicts as the exact products, on multipliers of sat_bits + 1 bits
                v_end = w_vs + sat_product(c_(Cfg.IN_H), c_(Cfg.IN_W), in_cb)
                if cfg.mrf_banked:  # isa.md, "Banked MRF": ceil(cob / T) row sets of T tiles
                    nt = cfg.tiles
                    t_end = w_ts + sat(sat_product((cob + (nt - 1)) // nt, c_(Cfg.KH), c_(Cfg.KW), gi) * nt)
                    # an mvc's results dstride entries apart per pixel (0: cob), at least cob
                    ds = Mux(w_pool | (c_(Cfg.DSTRIDE) == 0), nj, c_(Cfg.DSTRIDE))
                    bank_bad = (((cob % nt) != 0) & ~Cat(*(cob == d for d in range(1, nt + 1) if nt % d == 0)).any()
                                | ((w_ts % nt) != 0) | (ds < cob))
                    npix = c_(Cfg.NPIX)
                    d_end = w_ds + Mux(npix == 0, 0, sat(sat_product(npix - 1, ds) + nj))
                else:
                    t_end = w_ts + sat_product(cob, c_(Cfg.KH), c_(Cfg.KW), gi)
                    bank_bad = ~w_pool & (c_(Cfg.DSTRIDE) != 0)  # dstride: a banked MRF's
                    d_end = w_ds + sat_product(c_(Cfg.NPIX), nj)
                win = {"vbase": w_vs, "in_h": c_(Cfg.IN_H), "in_w": c_(Cfg.IN_W), "in_cb": in_cb,
                       "kh": c_(Cfg.KH), "kw": c_(Cfg.KW), "stride_h": c_(Cfg.STRIDE_H),
                       "stride_w": c_(Cfg.STRIDE_W), "dil_h": c_(Cfg.DIL_H), "dil_w": c_(Cfg.DIL_W),
                       "pad_t": c_(Cfg.PAD_T), "pad_l": c_(Cfg.PAD_L), "pad_b": c_(Cfg.PAD_B),
                       "pad_r": c_(Cfg.PAD_R), "pix0": c_(Cfg.PIX0), "npix": c_(Cfg.NPIX), "out_w": c_(Cfg.OUT_W),
                       "nj": nj}
                with m.If(zero):
                    fail(ErrorCode.WINDOW)
                with m.Elif(v_end > cfg.vrf_vectors):
                    fail(ErrorCode.CHIP_RANGE)
                with m.Elif(~w_pool & (t_end > cfg.mrf_tiles)):
                    fail(ErrorCode.CHIP_RANGE)
                with m.Elif(d_end > cfg.fvrf_vectors):
                    fail(ErrorCode.CHIP_RANGE)
                with m.Elif(~w_pool & bank_bad):
                    fail(ErrorCode.MRF_BANK)
                with m.Elif(w_pool):
                    pc_ = payload[UNIT_INDEX["pool"]]
                    glog = Signal(range(cfg.mfu_width.bit_length() + 1))  # log2 of cycles.pool_group
                    for k in range(1, cfg.mfu_width.bit_length()):
                        with m.If(in_cb[:k] == 0):
                            m.d.comb += glog.eq(k)
                    m.d.sync += [getattr(pc_.win, k).eq(v) for k, v in win.items()]
                    m.d.sync += [pc_.win.nj.eq(in_cb >> glog), pc_.win.kblk.eq(1), pc_.win.gi.eq(1 << glog),
                                 pc_.win.go.eq(1), pc_.win.ob0.eq(0), pc_.glog.eq(glog),
                                 pc_.dbase.eq(w_ds), pc_.mode.eq(w_mode), p_unit.eq(UNIT_INDEX["pool"]),
                                 *set_range(0, Space.VRF, w_vs, v_end, 0),
                                 *set_range(1, 0, 0, 0, 0, valid=0),
                                 *set_range(2, Space.FVRF, w_ds, d_end, 1)]
                    m.next = "ISSUE"
                with m.Else():
                    vc = payload[UNIT_INDEX["mvu"]]
                    dense = c_(Cfg.GI) == 0
                    m.d.sync += [getattr(vc.win, k).eq(v) for k, v in win.items()]
                    m.d.sync += [vc.win.kblk.eq(gi), vc.win.gi.eq(gi), vc.win.go.eq(Mux(dense, cob, go)),
                                 vc.win.ob0.eq(Mux(dense, 0, c_(Cfg.OB0))),
                                 vc.tbase.eq(w_ts // cfg.tiles if cfg.mrf_banked else w_ts), vc.dbase.eq(w_ds),
                                 *([vc.dstride.eq(ds)] if cfg.mrf_banked else []),
                                 vc.kb.eq(taps * gi), vc.acc.eq(w_acc), vc.pairs.eq(c_(Cfg.NPIX) * cob),
                                 p_unit.eq(UNIT_INDEX["mvu"]),
                                 *set_range(0, Space.VRF, w_vs, v_end, 0),
                                 *set_range(1, Space.MRF, w_ts, t_end, 0),
                                 *set_range(2, Space.FVRF, w_ds, d_end, 1, read=w_acc)]  # accumulating: read too
                    m.next = "ISSUE"
                watchdog()
            with m.State("ISSUE"):  # wait for the unit's slot and for no conflict with any in flight
                hazard = Signal()
                m.d.comb += hazard.eq(Cat(*(s_busy[u] & _conflict(a, b) for u in range(nu)
                                            for a in p_rng for b in s_rng[u])).any())
                if shared:  # a port shared with a unit in flight (layouts.port_conflict)
                    port_hazard = Signal()
                    ng = sum(parts.of(space) for space, _ in shared)  # a bit per shared port and part
                    p_use = [Signal(ng, name=f"pending_ports{k}") for k in range(RANGES)]
                    for k, a in enumerate(p_rng):
                        m.d.comb += p_use[k].eq(Array(Cat(*_port_use(shared, un.name, a, parts))
                                                      for un in UNITS)[p_unit])
                    m.d.comb += port_hazard.eq(Cat(*(
                        s_busy[u] & (p_unit != u) & (p_use[k] & Cat(*_port_use(shared, UNITS[u].name, b, parts))).any()
                        for u in range(nu) for k in range(RANGES) for b in s_rng[u])).any())
                    hazard_all = Signal()
                    m.d.comb += hazard_all.eq(hazard | port_hazard)
                    hazard = hazard_all
                # a unit sharing hardware with one in flight (layouts.EXCLUSIVE_UNITS: the pool and the MFU)
                excl = Signal()
                m.d.comb += excl.eq(Cat(*(s_busy[UNIT_INDEX[b]] & (p_unit == UNIT_INDEX[a])
                                          for pair in EXCLUSIVE_UNITS for a in pair for b in pair if a != b)).any())
                hazard_ex = Signal()
                m.d.comb += hazard_ex.eq(hazard | excl)
                hazard = hazard_ex
                free = Signal()
                m.d.comb += free.eq(~Array(s_busy)[p_unit])
                go = Signal()
                m.d.comb += go.eq(free & ~hazard & ~f_valid & ~fault_now)
                for u in range(nu):
                    m.d.comb += [cmds[u].payload.eq(payload[u]), cmds[u].valid.eq(go & (p_unit == u))]
                with m.If(f_valid | fault_now):
                    m.next = "DRAIN"
                with m.Elif(go & Array(c.ready for c in cmds)[p_unit]):
                    for u in range(nu):
                        with m.If(p_unit == u):
                            m.d.sync += [s_busy[u].eq(1), s_pc[u].eq(pc), s_step[u].eq(self.steps)]
                            m.d.sync += [s_rng[u][k].eq(p_rng[k]) for k in range(RANGES)]
                    m.next = "ADVANCE"
                watchdog()
            with m.State("ADVANCE"):  # pc + 1, closing every loop whose body ends here
                m.d.comb += [self.ctl_busy.eq(1)]
                with m.If((depth != 0) & (pc == lp_last[top])):
                    with m.If(lp_left[top] > 1):
                        m.d.sync += [lp_left[top].eq(lp_left[top] - 1), pc.eq(lp_first[top])]
                        m.next = "FETCH"
                    with m.Else():
                        m.d.sync += depth.eq(depth - 1)
                with m.Else():
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                watchdog()
            with m.State("HALTING"):  # every unit finishes first
                with m.If(f_valid | fault_now):
                    m.next = "DRAIN"
                with m.Elif(~any_busy):
                    m.d.sync += halted.eq(1)
                    m.next = "STOPPED"
                watchdog()
            with m.State("DRAIN"):  # an error: the instructions in flight finish, the oldest fault wins
                with m.If(~any_busy):
                    m.d.sync += failed.eq(1)
                    m.next = "STOPPED"
                watchdog()
            with m.State("RESUME"):  # the previous run's instructions finish; their faults are dropped
                m.d.sync += clear_fault()
                with m.If(~any_busy):
                    m.next = "FETCH"
            with m.State("STOPPED"):
                restart()
        m.d.comb += self.running.eq(~fsm.ongoing("IDLE") & ~fsm.ongoing("STOPPED"))
        return m
