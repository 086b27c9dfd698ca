"""Control: instruction memory, fetch/decode, scalar and configuration registers, loops, watchdog.

Instructions run one at a time. ``FETCH`` reads ``imem[pc]`` (stopping with ``PAST_END`` at
``pc >= prog_len``); ``DECODE`` counts the step (``STEP_BUDGET`` beyond ``max_steps``), refuses an
undecodable word (``ILLEGAL_INSN``: opcode or enum value out of range, non-zero bits above the
opcode's last field; ``isa.decode``'s rules) and executes ``nop halt seti addi add cfg loop``.
``ld``/``st`` are range-checked in ``CHECK`` with the functional simulator's rules and order
(on-chip range, read-only constant image, memory stride, external range), handed to the DMA on
``dma_cmd`` and waited for on ``dma_done``. ``deq``, ``qnt``, ``vact``, ``vop``
are checked (FuncSim._span of each operand) and handed to the MFU (``mfu.py``). ``mvc`` and
``pool`` are checked in ``WCHECK`` in ``FuncSim._mvc`` / ``_pool``'s order (a zero window
dimension: ``WINDOW``; the VRF, [MRF,] FVRF spans: ``CHIP_RANGE``) and handed, with the window
read from the configuration registers, to the matrix-vector unit (``mvu.py``) or the pool unit
(``pool.py``). Opcodes in ``UNIMPLEMENTED_OPS`` (none now) stop with ``UNIMPLEMENTED``. ``loop`` follows
``FuncSim._loop``: a body that does not fit, overlaps its enclosing body or nests deeper than
``MAX_LOOP_DEPTH`` stops the engine; a zero count skips the body. Every running cycle beyond
``max_cycles`` stops with ``CYCLE_BUDGET``, so the engine always reaches ``done`` (``error`` set
or not) in bounded time.

The instruction memory is written through ``imem_we/imem_waddr/imem_wdata`` while the engine is
idle; ``start`` (a pulse) resets the registers, counters and loop stack and runs from ``pc = 0``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal
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

from .layouts import byte_addr_bits, check_config, dma_cmd_layout, file_depth, item_bytes
from .mfu import MfuOp, mfu_cmd_layout
from .mvu import mvu_cmd_layout
from .pool import pool_cmd_layout
from .status import ErrorCode

__all__ = ["Control", "CFG_RESET", "UNIMPLEMENTED_OPS"]

# configuration registers' values at start (FuncSim's defaults; the others start at 0)
CFG_RESET = {Cfg.KH: 1, Cfg.KW: 1, Cfg.STRIDE_H: 1, Cfg.STRIDE_W: 1, Cfg.DIL_H: 1, Cfg.DIL_W: 1,
             Cfg.IN_H: 1, Cfg.IN_W: 1, Cfg.IN_CB: 1, Cfg.OUT_W: 1, Cfg.NPIX: 1, Cfg.COB: 1}
UNIMPLEMENTED_OPS: tuple[Opcode, ...] = ()
STEP_BITS = 48
CYCLE_BITS = 64


class Control(wiring.Component):
    def __init__(self, cfg, *, imem_depth: int = 4096):
        self.cfg = check_config(cfg, "Control")
        if isinstance(imem_depth, bool) or not isinstance(imem_depth, int) or not 2 <= imem_depth <= 1 << 20:
            raise ValueError(f"Control imem_depth must be an integer in [2, {1 << 20}], got {imem_depth!r}")
        self.imem_depth = imem_depth
        pw = ceil_log2(imem_depth + 1)
        self.pc_bits = pw
        ab = byte_addr_bits(cfg)
        super().__init__({
            "imem_we": In(1), "imem_waddr": In(range(imem_depth)), "imem_wdata": In(INSN_BITS),
            "start": In(1), "prog_len": In(pw), "mem_size": In(ab), "ro_bytes": In(ab),
            "max_steps": In(STEP_BITS), "max_cycles": In(CYCLE_BITS),
            "running": Out(1), "done": Out(1), "error": Out(1), "error_code": Out(ErrorCode),
            "error_pc": Out(pw), "steps": Out(STEP_BITS), "cycles": Out(CYCLE_BITS), "ctl_busy": Out(1),
            "dma_cmd": Out(stream.Signature(dma_cmd_layout(cfg))),
            "dma_done": In(stream.Signature(ErrorCode)),
            "mfu_cmd": Out(stream.Signature(mfu_cmd_layout())),
            "mfu_done": In(stream.Signature(ErrorCode)),
            "mvu_cmd": Out(stream.Signature(mvu_cmd_layout())),
            "mvu_done": In(stream.Signature(ErrorCode)),
            "pool_cmd": Out(stream.Signature(pool_cmd_layout())),
            "pool_done": In(stream.Signature(ErrorCode)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        pw = self.pc_bits

        m.submodules.imem = imem = Memory(shape=INSN_BITS, depth=self.imem_depth, init=[])
        wp = imem.write_port()
        rp = imem.read_port()
        m.d.comb += [wp.en.eq(self.imem_we), wp.addr.eq(self.imem_waddr), wp.data.eq(self.imem_wdata)]

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
        m.d.comb += word.eq(rp.data)
        insn = data.View(INSN_LAYOUT, word[:INSN_LAYOUT.size])
        opcode = word[:6]

        # -- status -------------------------------------------------------------------------------
        code = Signal(ErrorCode)
        m.d.comb += [self.error_code.eq(code), self.error_pc.eq(pc)]
        halted = Signal()
        failed = Signal()
        m.d.comb += [self.done.eq(halted | failed), self.error.eq(failed)]

        def fail(why):
            m.d.sync += [code.eq(why), failed.eq(1)]
            m.next = "STOPPED"

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

        def restart():
            with m.If(self.start):
                m.d.sync += [pc.eq(0), depth.eq(0), self.steps.eq(0), self.cycles.eq(0), halted.eq(0),
                             failed.eq(0), code.eq(ErrorCode.NONE)]
                m.d.sync += [r.eq(0) for r in regs]
                m.d.sync += [r.eq(CFG_RESET.get(k, 0)) for r, k in zip(cfgr, Cfg, strict=True)]
                m.next = "FETCH"

        def watchdog():  # last in every running state, so that it wins
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(self.cycles >= self.max_cycles):
                fail(ErrorCode.CYCLE_BUDGET)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                restart()
            with m.State("FETCH"):
                m.d.comb += [self.ctl_busy.eq(1), rp.addr.eq(pc)]
                with m.If(pc >= self.prog_len):
                    fail(ErrorCode.PAST_END)
                with m.Else():
                    m.next = "DECODE"
                watchdog()
            with m.State("DECODE"):
                m.d.comb += [self.ctl_busy.eq(1), rp.addr.eq(pc)]
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
                            m.d.sync += halted.eq(1)
                            m.next = "STOPPED"
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
                            with m.Elif(count == 0):
                                m.d.sync += pc.eq(last + 1)
                                m.next = "FETCH"
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
                                         mc.period.eq(0), mc.src_b.eq(0), m_depth_a.eq(cfg.fvrf_vectors),
                                         m_depth_d.eq(cfg.fvrf_vectors)]
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
                                                 mc.period.eq(fv.period),
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
                m.d.comb += [
                    row_bytes.eq(d_len * item), count.eq(d_rows * d_len),
                    chip_stride.eq(Mux(d_cstride != 0, d_cstride, d_len)),
                    mem_stride.eq(Mux(d_mstride != 0, d_mstride, row_bytes)),
                    chip_end.eq(d_base + (d_rows - 1) * chip_stride + d_len),
                    mem_end.eq(d_addr + (d_rows - 1) * mem_stride + row_bytes),
                ]
                with m.If(count == 0):
                    m.next = "ADVANCE"
                with m.Elif(chip_end > fdepth):
                    fail(ErrorCode.CHIP_RANGE)
                with m.Elif(d_store & (d_addr < self.ro_bytes)):
                    fail(ErrorCode.READ_ONLY)
                with m.Elif((d_rows > 1) & (mem_stride < row_bytes)):
                    fail(ErrorCode.MEM_STRIDE)
                with m.Elif(mem_end > self.mem_size):
                    fail(ErrorCode.MEM_RANGE)
                with m.Else():
                    p = self.dma_cmd.payload
                    m.d.sync += [p.store.eq(d_store), p.space.eq(d_space), p.base.eq(d_base),
                                 p.chip_stride.eq(chip_stride), p.addr.eq(d_addr), p.mem_stride.eq(mem_stride),
                                 p.rows.eq(d_rows), p.length.eq(d_len)]
                    m.next = "DISPATCH"
                watchdog()
            with m.State("DISPATCH"):
                m.d.comb += [self.dma_cmd.valid.eq(1)]
                with m.If(self.dma_cmd.ready):
                    m.next = "WAIT"
                watchdog()
            with m.State("WAIT"):
                m.d.comb += [self.dma_done.ready.eq(1)]
                with m.If(self.dma_done.valid):
                    with m.If(self.dma_done.payload != ErrorCode.NONE):
                        fail(self.dma_done.payload)
                    with m.Else():
                        m.next = "ADVANCE"
                watchdog()
            with m.State("MCHECK"):  # FuncSim._span of each operand, then the MFU
                m.d.comb += self.ctl_busy.eq(1)
                a_end = mc.src_a + mc.count
                b_end = mc.src_b + m_count_b
                d_end = mc.dst + mc.count
                with m.If((a_end > m_depth_a) | ((mc.op == MfuOp.VOP) & (b_end > cfg.fvrf_vectors))
                          | (d_end > m_depth_d)):
                    fail(ErrorCode.CHIP_RANGE)
                with m.Elif(mc.count == 0):
                    m.next = "ADVANCE"
                with m.Else():
                    m.d.sync += self.mfu_cmd.payload.eq(mc)
                    m.next = "MDISPATCH"
                watchdog()
            with m.State("MDISPATCH"):
                m.d.comb += self.mfu_cmd.valid.eq(1)
                with m.If(self.mfu_cmd.ready):
                    m.next = "MWAIT"
                watchdog()
            with m.State("MWAIT"):
                m.d.comb += self.mfu_done.ready.eq(1)
                with m.If(self.mfu_done.valid):
                    with m.If(self.mfu_done.payload != ErrorCode.NONE):
                        fail(self.mfu_done.payload)
                    with m.Else():
                        m.next = "ADVANCE"
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
                v_end = w_vs + c_(Cfg.IN_H) * c_(Cfg.IN_W) * in_cb
                t_end = w_ts + cob * taps * gi
                d_end = w_ds + c_(Cfg.NPIX) * nj
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
                with m.Elif(w_pool):
                    pc_ = self.pool_cmd.payload
                    m.d.sync += [getattr(pc_.win, k).eq(v) for k, v in win.items()]
                    m.d.sync += [pc_.win.kblk.eq(1), pc_.win.gi.eq(1), pc_.win.go.eq(1), pc_.win.ob0.eq(0),
                                 pc_.dbase.eq(w_ds), pc_.mode.eq(w_mode)]
                    m.next = "WDISPATCH"
                with m.Else():
                    vc = self.mvu_cmd.payload
                    dense = c_(Cfg.GI) == 0
                    m.d.sync += [getattr(vc.win, k).eq(v) for k, v in win.items()]
                    m.d.sync += [vc.win.kblk.eq(gi), vc.win.gi.eq(gi), vc.win.go.eq(Mux(dense, cob, go)),
                                 vc.win.ob0.eq(Mux(dense, 0, c_(Cfg.OB0))), vc.tbase.eq(w_ts), vc.dbase.eq(w_ds),
                                 vc.kb.eq(taps * gi), vc.acc.eq(w_acc), vc.pairs.eq(c_(Cfg.NPIX) * cob)]
                    m.next = "WDISPATCH"
                watchdog()
            with m.State("WDISPATCH"):
                m.d.comb += [self.pool_cmd.valid.eq(w_pool), self.mvu_cmd.valid.eq(~w_pool)]
                with m.If(Mux(w_pool, self.pool_cmd.ready, self.mvu_cmd.ready)):
                    m.next = "WWAIT"
                watchdog()
            with m.State("WWAIT"):
                m.d.comb += [self.pool_done.ready.eq(w_pool), self.mvu_done.ready.eq(~w_pool)]
                w_valid = Mux(w_pool, self.pool_done.valid, self.mvu_done.valid)
                w_code = Mux(w_pool, self.pool_done.payload, self.mvu_done.payload)
                with m.If(w_valid):
                    with m.If(w_code != ErrorCode.NONE):
                        fail(w_code)
                    with m.Else():
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
            with m.State("STOPPED"):
                restart()
        m.d.comb += self.running.eq(~fsm.ongoing("IDLE") & ~fsm.ongoing("STOPPED"))
        return m
