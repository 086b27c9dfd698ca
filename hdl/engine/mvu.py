"""The matrix-vector unit: ``mvc`` on T = ``cfg.tiles`` tile engines (``accelml.hdl.tile_engine``).

An ``mvc`` computes, for every (output pixel, output block) pair ``q = pixel * cob + ob`` (pixel-
major), the N sums of ``FuncSim._mvc``: over the window's taps and the group's ``gi`` input blocks,
in the golden order (kernel row, kernel column, input block), the block product of weight tile
``tbase + ob * kb + k`` (``kb = taps * gi``; ``k`` the step's index) and the activation block the
window generator (``window.py``, T lanes) names, a tap outside the input being a zero block that is
still stepped (``-0 + +0`` is ``+0``, as the golden sums it). Each sum starts from +0, or, with
``acc``, from the FVRF entry ``dbase + q`` it is written back to.

Timing: the pairs are taken T at a time, a
*round*; tile engine ``t`` takes pair ``q0 + t`` and streams its ``taps * gi`` steps, one per cycle,
all engines in lockstep (the last round's idle engines step too; their results are dropped). Each
step reads, per engine, the VRF (activation), the MRF (weight tile) and, on a round's first step,
the FVRF (the sum to continue): T read ports on each file (``regfiles.read_ports_signature``).
Rounds follow each other without a bubble, across groups too. At a round's end the T results are
latched in one cycle and written to the FVRF W = ``cfg.mfu_width`` at a time over the next
D = ``ceil(T / W)`` cycles (``layouts.mvu_write_cycles``): the MVU's FVRF write port is a wide one
(``top.WIDE_USERS``, like the MFU's), W consecutive entries ``dbase + q .. dbase + q + W - 1`` from
any start (the register files' rotation crossbar maps the lanes to the banks), the lanes of pairs
beyond ``pairs`` (the last round's idle engines) masked; the next round's results may be latched
while the last of them are written. A round shorter than D steps (``taps * gi < D``) stalls the
engines until the writes are done. Before the first step the window generator divides
(``window.DIV_CYCLES``), and the pipeline (file read, tile engine, write-back) drains after the
last: an ``mvc`` keeps this unit busy (``busy_mvu``) for
``kb + (rounds - 1) * max(kb, D) + 44 + D`` cycles (``kb = taps * gi``, ``rounds = ceil(pairs / T)``;
38 without pairs), of which ``DIV_CYCLES`` = 34 are the divisions: ``accelml.sim.cycles.mvu_busy``,
equal to the RTL's count (tests/hdl/engine/test_engine_rtl.py).

Banked MRF (``EngineConfig.mrf_banked``, docs/isa.md): tile engine t reads MRF bank t only, at row
``tbase + set * kb + k`` (control sends ``tbase`` divided by T; ``set`` is the round's first output
block divided by T, counted from round to round), the same for every engine of a round: with
``cob`` a multiple of T a round never leaves its pixel and engine t's block is ``set * T + t``; with
a divisor the set is 0. Results go to ``dstride`` entries a pixel (control sends ``cob`` without
it): lane t's entry is the round's first plus ``offs[t]`` (t, or for a divisor ``cob`` below T,
``(t // cob) * dstride + t % cob``), and a divisor ``cob`` at a stride of its own is written one
part of a pixel's run in one W-lane window a cycle (``layouts.mvu_write_cycles(T, W, cob)``
cycles a round instead of D).

Errors, reported on ``done`` after the walk: a group whose input blocks lie beyond ``in_cb``
(``GROUP_RANGE``, before any step: ``FuncSim._mvc``'s check), a sum or term beyond the internal
format's range (``OVERFLOW``: the tile engine's sticky flag of any pair). The results of the other
pairs are written either way (the functional simulator writes none; a failing program stops there).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accelml.hdl.isa import Space
from accelml.hdl.tile_engine import TileEngine

from .layouts import check_config, mvu_write_cycles
from .regfiles import file_addr_bits, file_port_signature, read_ports_signature
from .status import ErrorCode, report_done
from .window import WindowGen, window_cmd_layout

__all__ = ["Mvu", "mvu_cmd_layout"]


def mvu_cmd_layout(cfg=None) -> data.StructLayout:
    return data.StructLayout({
        "win": window_cmd_layout(),  # nj = cob, kblk = gi (dense: gi = in_cb, go = cob, ob0 = 0)
        "tbase": unsigned(32), "dbase": unsigned(32), "kb": unsigned(32), "acc": unsigned(1),
        "pairs": unsigned(64),  # npix * cob
        # a banked MRF: FVRF entries between output pixels' results (cob unless dstride is set)
        **({"dstride": unsigned(32)} if cfg is not None and cfg.mrf_banked else {}),
    })


class Mvu(wiring.Component):
    def __init__(self, cfg, *, verilog_dots: bool = False):
        self.cfg = check_config(cfg, "Mvu")
        self.verilog_dots = bool(verilog_dots)  # the tile engines' TileEngine(verilog_dots=)
        t = cfg.tiles
        super().__init__({
            "cmd": In(stream.Signature(mvu_cmd_layout(cfg))),
            "done": Out(stream.Signature(ErrorCode)),
            "vrf_r": Out(read_ports_signature(cfg, Space.VRF, t)),
            "mrf_r": Out(read_ports_signature(cfg, Space.MRF, t)),
            "fvrf_r": Out(read_ports_signature(cfg, Space.FVRF, t)),
            "fvrf": Out(file_port_signature(cfg, Space.FVRF, cfg.mfu_width)),  # write only
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        nt, n, w = cfg.tiles, cfg.native_dim, cfg.mfu_width
        nw = mvu_write_cycles(nt, w)
        bias = cfg.exp_bias
        c = Signal(mvu_cmd_layout(cfg))
        m.submodules.window = gen = WindowGen(cfg, nt)
        engines = [TileEngine(cfg, verilog_dots=self.verilog_dots) for _ in range(nt)]
        for t, e in enumerate(engines):
            m.submodules[f"tile{t}"] = e

        # -- issue: window step -> file reads (stage 1) -> tile engine steps (stage 2) ---------
        beat = gen.o.payload
        s2_valid = Signal()
        s2 = Signal(data.StructLayout({"first": 1, "last": 1, "zero": data.ArrayLayout(1, nt)}))
        ready = Signal()  # every engine takes a step (they run in lockstep, so all or none)
        m.d.comb += ready.eq(engines[0].step.ready)
        adv = Signal()
        m.d.comb += adv.eq(~s2_valid | ready)
        walking = Signal()  # the window's steps are flowing
        special = beat.fault | beat.none
        take = Signal()
        m.d.comb += take.eq(walking & gen.o.valid & ~special & adv)
        maw = file_addr_bits(cfg, Space.MRF)
        faw = file_addr_bits(cfg, Space.FVRF)
        jt = Signal(32)  # banked MRF: the round's row set, lane 0's output block // T (lane t's too)
        if cfg.mrf_banked:
            # results dstride entries apart per pixel (isa.md): lane t's entry is the round's first
            # plus offs[t]; a cob below T is a divisor, so a round is T / cob whole pixels
            cob, ds = c.win.nj, c.dstride
            small = Signal()
            m.d.comb += small.eq(cob < nt)
            divs = [d for d in range(1, nt) if nt % d == 0]
            offs = [Signal(32, name=f"res_off{t}") for t in range(nt + 1)]  # offs[T]: the next round's lane 0
            m.d.comb += offs[0].eq(0)
            for t in range(nt):
                ends = Cat(*(cob == d for d in divs if (t + 1) % d == 0)).any() if any(
                    (t + 1) % d == 0 for d in divs) else Const(0)
                m.d.comb += offs[t + 1].eq(offs[t] + Mux(small & ends, ds - cob + 1, 1))
            def next_entry(e, wrap):
                """The next round's lane-0 entry after a round at ``e`` (``wrap``: it ended its pixel)."""
                return e + Mux(small, offs[nt], nt + Mux(wrap, ds - cob, 0))

            e_iss = Signal(32)  # FVRF entry of the issuing round's lane 0 (an accumulating mvc reads there)
            wrap = Signal()  # the issuing round ends its pixel (cob >= T)
            m.d.comb += wrap.eq((jt + 1) * nt >= cob)
        for t in range(nt):
            ln = beat.lane[t]
            # banked MRF (isa.md): engine t reads bank t at row tbase / T (control divides) + set * kb + k
            tile = c.tbase + (jt if cfg.mrf_banked else ln.j) * c.kb + beat.tapk
            m.d.comb += [
                self.vrf_r.addr[t].eq(ln.addr),
                self.mrf_r.addr[t].eq(tile[:maw]),
                self.fvrf_r.addr[t].eq(((e_iss + offs[t]) if cfg.mrf_banked else (c.dbase + ln.q))[:faw]),
            ]
        m.d.comb += [self.vrf_r.en.eq(take), self.mrf_r.en.eq(take), self.fvrf_r.en.eq(take & beat.first & c.acc)]
        with m.If(take):
            m.d.sync += [s2_valid.eq(1), s2.first.eq(beat.first), s2.last.eq(beat.last)]
            m.d.sync += [s2.zero[t].eq(beat.lane[t].zero) for t in range(nt)]
        with m.Elif(adv):
            m.d.sync += s2_valid.eq(0)
        for t, e in enumerate(engines):
            p = e.step.payload
            vec, tile = self.vrf_r.data[t], self.mrf_r.data[t]
            m.d.comb += [e.step.valid.eq(s2_valid), p.first.eq(s2.first), p.last.eq(s2.last),
                         p.a_exp.eq(vec.exp - bias)]
            for i in range(n):
                m.d.comb += p.a_mant[i].eq(Mux(s2.zero[t], 0, vec.mant[i]))
            for j in range(n):
                m.d.comb += p.w_exp[j].eq(tile[j].exp - bias)
                for i in range(n):
                    m.d.comb += p.w_mant[j][i].eq(tile[j].mant[i])
                m.d.comb += p.init[j].eq(Mux(c.acc, self.fvrf_r.data[t][j], 0))

        # -- results: latched together, written W at a time ----------------------------------
        buf = [Signal(data.ArrayLayout(32, n), name=f"res{t}") for t in range(nt)]
        holding = Signal()
        drain = Signal(range(nw + 1))  # the write of the latched round's entries [drain * W, drain * W + W)
        q_res = Signal(64)  # first pair of the latched round
        ovf = Signal()
        results_valid = engines[0].result.valid
        last_drain = Signal()
        m.d.comb += last_drain.eq(holding & (drain == nw - 1))
        latch = Signal()  # the buffer takes a round's results (while its last entries are written, too)
        m.d.comb += latch.eq(results_valid & (~holding | last_drain))
        q_base = Signal(64)  # first pair of the round being latched
        m.d.comb += q_base.eq(Mux(holding, q_res + nt, q_res))
        for e in engines:
            m.d.comb += e.result.ready.eq(latch)
        rounds_out = Signal(64)  # rounds whose steps all went to the engines
        rounds_in = Signal(64)  # rounds latched
        q = Signal(64)  # the pair of the window's lane 0
        m.d.comb += q.eq(q_res + drain * w)
        strided = None
        if cfg.mrf_banked:
            # the latched round's entries: contiguous (D cycles of W), or, a cob below T at a stride
            # of its own (strided), one cycle per part of a pixel's run in a W-lane window of lanes
            # (layouts.mvu_write_cycles' group count)
            strided = Signal()
            m.d.comb += strided.eq(small & (ds != cob))
            e_res = Signal(32)  # FVRF entry of the latched round's lane 0
            j_res = Signal(32)  # its row set (jt of that round)
            lane = Signal(range(nt + 1))  # strided: the first lane not yet written
            gend = Signal(range(2 * nt + 1))  # strided: the end of that lane's pixel run
            wend = Signal(range(nt + w + 1))  # strided: the end of its window (drain * W + W)
            l1 = Signal(range(nt + 1))
            m.d.comb += l1.eq(Mux(gend < wend, gend, wend))
            with m.If(strided):
                m.d.comb += last_drain.eq(holding & (l1 >= nt))
            off = Signal(32)
            m.d.comb += off.eq(Mux(strided, Array(offs[:nt])[lane] - lane + drain * w, drain * w))
        with m.If(holding):
            with m.Switch(drain):
                for d in range(nw):
                    live = min(w, nt - d * w)  # the last write of a round may have fewer lanes
                    with m.Case(d):
                        m.d.comb += [self.fvrf.wdata[k].eq(buf[d * w + k]) for k in range(live)]
                        m.d.comb += self.fvrf.we.eq(Cat(
                            (q + k < c.pairs) if strided is None else
                            (q + k < c.pairs) & (~strided | ((d * w + k >= lane) & (d * w + k < l1)))
                            for k in range(live)))
            if strided is None:
                m.d.comb += self.fvrf.waddr.eq((c.dbase + q)[:faw])
                m.d.sync += drain.eq(drain + 1)
            else:
                m.d.comb += self.fvrf.waddr.eq((e_res + off)[:faw])
                with m.If(strided):
                    m.d.sync += lane.eq(l1)
                    with m.If(l1 == gend):
                        m.d.sync += gend.eq(gend + cob)
                    with m.If(l1 == wend):
                        m.d.sync += [drain.eq(drain + 1), wend.eq(wend + w)]
                with m.Else():
                    m.d.sync += drain.eq(drain + 1)
            with m.If(last_drain):
                m.d.sync += [holding.eq(0), q_res.eq(q_res + nt)]
                if strided is not None:
                    res_wrap = (j_res + 1) * nt >= cob
                    m.d.sync += [e_res.eq(next_entry(e_res, res_wrap)), j_res.eq(Mux(res_wrap, 0, j_res + 1))]
        with m.If(latch):
            m.d.sync += [buf[t].eq(e.result.payload.acc) for t, e in enumerate(engines)]
            m.d.sync += [holding.eq(1), drain.eq(0), rounds_in.eq(rounds_in + 1)]
            if cfg.mrf_banked:
                m.d.sync += [lane.eq(0), gend.eq(cob), wend.eq(w)]
            for t, e in enumerate(engines):
                with m.If(e.result.payload.overflow & (q_base + t < c.pairs)):
                    m.d.sync += ovf.eq(1)

        code = Signal(ErrorCode)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [c.eq(self.cmd.payload), ovf.eq(0), q_res.eq(0), rounds_out.eq(0),
                                 rounds_in.eq(0), code.eq(ErrorCode.NONE)]
                    if cfg.mrf_banked:
                        p_ = self.cmd.payload
                        m.d.sync += [jt.eq(0), e_iss.eq(p_.dbase), e_res.eq(p_.dbase), j_res.eq(0)]
                    m.next = "WINDOW"
            with m.State("WINDOW"):
                m.d.comb += [self.busy.eq(1), gen.cmd.valid.eq(1), gen.cmd.payload.eq(c.win)]
                with m.If(gen.cmd.ready):
                    m.next = "WALK"
            with m.State("WALK"):
                m.d.comb += [self.busy.eq(1), walking.eq(1), gen.o.ready.eq(take | (gen.o.valid & special))]
                with m.If(gen.o.valid & special):
                    m.d.sync += code.eq(Mux(beat.fault, ErrorCode.GROUP_RANGE, ErrorCode.NONE))
                    m.next = "DONE"
                with m.Elif(take & beat.last):
                    m.d.sync += rounds_out.eq(rounds_out + 1)
                    if cfg.mrf_banked:  # the next round's first block: T on, or back to 0 past cob (a divisor: 0)
                        m.d.sync += [jt.eq(Mux(wrap, 0, jt + 1)), e_iss.eq(next_entry(e_iss, wrap))]
                    with m.If(beat.final):
                        m.next = "FINISH"
            with m.State("FINISH"):  # the last steps go through the engines and are written
                m.d.comb += self.busy.eq(1)
                with m.If((rounds_in == rounds_out) & ~holding & ~s2_valid):
                    m.d.sync += code.eq(Mux(ovf, ErrorCode.OVERFLOW, ErrorCode.NONE))
                    m.next = "DONE"
            with m.State("DONE"):
                report_done(m, self.done, code)
        return m

