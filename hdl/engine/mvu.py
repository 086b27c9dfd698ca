"""The matrix-vector unit: ``mvc`` on T = ``cfg.tiles`` tile engines (``accelml.hdl.tile_engine``).

An ``mvc`` computes, for every (output pixel, output block) pair ``q = pixel * cob + ob`` (pixel-
major), the N sums of ``FuncSim._mvc``: over the window's taps and the group's ``gi`` input blocks,
in the golden order (kernel row, kernel column, input block), the block product of weight tile
``tbase + ob * kb + k`` (``kb = taps * gi``; ``k`` the step's index) and the activation block the
window generator (``window.py``, T lanes) names, a tap outside the input being a zero block that is
still stepped (``-0 + +0`` is ``+0``, as the golden sums it). Each sum starts from +0, or, with
``acc``, from the FVRF entry ``dbase + q`` it is written back to.

Timing: the pairs are taken T at a time, a *round*; tile engine ``t`` takes pair ``q0 + t`` and
streams its ``taps * gi`` steps, one per cycle, all engines in lockstep (the last round's idle
engines step too; their results are dropped). Each step reads, per engine, the VRF (activation) and
the MRF (weight tile): T read ports on each of the two (``regfiles.read_ports_signature``), or V on
the VRF (below). An accumulating ``mvc``'s sums are read ahead through the FVRF port's W-wide read
(in the engine, the MFU's FVRF read port: ``layouts.SHARED_READS``; control runs no MFU instruction
reading the FVRF beside an accumulating ``mvc``), a round's T entries in the parts its results are
written in (below), rounds back to back, into ``PF_SLOTS`` = 3 slots of T sums taken in turn; a
round's first step waits for its slot, and the slot is read again once that step went to the
engines (they keep the sums). The first round's reads overlap the window generator's divisions, and
a round's reads take no more cycles than its writes, which are at most a round's length: three
slots keep the reads ahead, so they cost no cycle (``prefetch_parts`` must stay below
``DIV_CYCLES - 1``).
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

Fewer VRF reads than tile engines (``EngineConfig.vrf_reads`` = V < T, ``_gather``): a step's
distinct VRF entries (of the lanes that read one: with a job, their tap inside the input; lanes of
one pixel and input block read one entry) are read V a cycle, in the order of their first lanes,
and each engine takes its entry's block from its port the cycle after, or holds it until the
step's last read: a step of U entries takes max(1, ceil(U / V)) cycles
(``accelml.sim.cycles.mvu_round_cycles``; ``mvu_busy`` with each round's cycles in place of
``kb``). The VRF is then V copies for the MVU rather than T.

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

from accelml.hdl.errors import ConfigError
from accelml.hdl.isa import Space
from accelml.hdl.tile_engine import TileEngine

from .layouts import check_config, mvu_gathers, mvu_vrf_reads, mvu_write_cycles
from .regfiles import file_addr_bits, file_port_signature, file_shape, read_ports_signature
from .status import ErrorCode, report_done
from .window import DIV_CYCLES, WindowGen, window_cmd_layout

__all__ = ["Mvu", "mvu_cmd_layout", "PF_SLOTS", "prefetch_parts"]

# rounds of sums an accumulating mvc reads ahead (slots of T entries): with three, the reads of a
# round (as many cycles as its writes, at most a round's length) never hold a round up
PF_SLOTS = 3


def prefetch_parts(cfg) -> int:
    """The most cycles the MVU reads one round's sums in (its writes': ``layouts.mvu_write_cycles``,
    a banked MRF's strided divisor ``cob`` included)."""
    parts = [mvu_write_cycles(cfg.tiles, cfg.mfu_width)]
    if cfg.mrf_banked:
        parts += [mvu_write_cycles(cfg.tiles, cfg.mfu_width, g) for g in range(1, cfg.tiles) if cfg.tiles % g == 0]
    return max(parts)


class _Parts:
    """A round's T lanes through the W-wide FVRF port, a part a cycle: the W-lane windows
    ``drain`` = 0 .. D - 1 (D = ``ceil(T / W)``), or, while ``strided`` (a banked MRF's divisor
    ``cob`` at a pixel stride of its own), the part of one pixel's run of ``cob`` lanes in one window
    (``layouts.mvu_write_cycles``'s count). Wide lane k is the round's lane ``drain * W + k``, at
    entry ``off + k`` from the round's lane 0 (``offs``: each lane's entry from it); ``on(t)``: lane
    t is in the part; ``last``: the round's last part. The results' writes and the prefetch of an
    accumulating mvc's sums walk a round alike."""

    def __init__(self, m, name: str, nt: int, w: int, strided=None, cob=None, offs=None):
        nw = mvu_write_cycles(nt, w)
        self.w, self.cob, self.strided = w, cob, strided
        self.drain = Signal(range(nw + 1), name=f"{name}_drain")
        self.off = Signal(32, name=f"{name}_off")
        self.last = Signal(name=f"{name}_last")
        m.d.comb += self.last.eq(self.drain == nw - 1)
        self.first_lane = self.drain << (w.bit_length() - 1)  # drain * W (a power of two: no multiplier)
        if strided is None:
            m.d.comb += self.off.eq(self.first_lane)
            return
        self.lane = Signal(range(nt + 1), name=f"{name}_lane")  # strided: the first lane not yet done
        self.gend = Signal(range(2 * nt + 1), name=f"{name}_gend")  # the end of that lane's pixel run
        self.wend = Signal(range(nt + w + 1), name=f"{name}_wend")  # the end of its window (drain * W + W)
        self.l1 = Signal(range(nt + 1), name=f"{name}_l1")  # the end of the part
        m.d.comb += self.l1.eq(Mux(self.gend < self.wend, self.gend, self.wend))
        with m.If(strided):
            m.d.comb += self.last.eq(self.l1 >= nt)
        m.d.comb += self.off.eq(Mux(strided, Array(offs[:nt])[self.lane] - self.lane + self.first_lane,
                                    self.first_lane))

    def on(self, t):
        if self.strided is None:
            return Const(1)
        return ~self.strided | ((t >= self.lane) & (t < self.l1))

    def restart(self, cob=None) -> list:
        """Statements that put the walk at a round's first part (``cob``: the mvc's, when it is
        not yet the command's)."""
        if self.strided is None:
            return [self.drain.eq(0)]
        return [self.drain.eq(0), self.lane.eq(0), self.gend.eq(self.cob if cob is None else cob),
                self.wend.eq(self.w)]

    def advance(self, m) -> None:
        """To the next part (within ``m``'s current condition)."""
        if self.strided is None:
            m.d.sync += self.drain.eq(self.drain + 1)
            return
        with m.If(self.strided):
            m.d.sync += self.lane.eq(self.l1)
            with m.If(self.l1 == self.gend):
                m.d.sync += self.gend.eq(self.gend + self.cob)
            with m.If(self.l1 == self.wend):
                m.d.sync += [self.drain.eq(self.drain + 1), self.wend.eq(self.wend + self.w)]
        with m.Else():
            m.d.sync += self.drain.eq(self.drain + 1)


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
        if prefetch_parts(cfg) > DIV_CYCLES - 2:  # a first round's sums are read while the window divides
            raise ConfigError(f"Mvu: a round's sums take up to {prefetch_parts(cfg)} cycles to read "
                              f"(T = {cfg.tiles}, mfu_width = {cfg.mfu_width}); more than the window "
                              f"generator's {DIV_CYCLES - 2} before a first step: raise mfu_width")
        self.verilog_dots = bool(verilog_dots)  # the tile engines' TileEngine(verilog_dots=)
        t = cfg.tiles
        super().__init__({
            "cmd": In(stream.Signature(mvu_cmd_layout(cfg))),
            "done": Out(stream.Signature(ErrorCode)),
            "vrf_r": Out(read_ports_signature(cfg, Space.VRF, mvu_vrf_reads(cfg))),
            "mrf_r": Out(read_ports_signature(cfg, Space.MRF, t)),
            # W wide: the results' writes, an accumulating mvc's sums read ahead of its rounds
            "fvrf": Out(file_port_signature(cfg, Space.FVRF, cfg.mfu_width)),
            "busy": Out(1),
        })

    def _gather(self, m, beat, may_go, take) -> list:
        """The VRF read through V = ``EngineConfig.vrf_reads`` ports, fewer than T: the beat's
        distinct entries (of the lanes that read one: ``active`` and not ``zero``), V a cycle in
        the order of their first lanes, ``take`` (the beat handed on) with the last V; each lane's
        block is held from the cycle after its entry's read. A beat of U distinct entries takes
        max(1, ceil(U / V)) cycles (``accelml.sim.cycles.mvu_round_cycles``). ``may_go``: the beat
        may be read this cycle. Returns each lane's block, valid the cycle after ``take``."""
        cfg, nt, nv = self.cfg, self.cfg.tiles, mvu_vrf_reads(self.cfg)
        lanes = beat.lane
        go = Signal(name="vr_go")  # a cycle of the beat's reads
        m.d.comb += go.eq(may_go)
        need = [Signal(name=f"vr_need{t}") for t in range(nt)]
        m.d.comb += [need[t].eq(lanes[t].active & ~lanes[t].zero) for t in range(nt)]
        same = {}  # (u, t), u < t: lane u reads lane t's entry
        for t in range(nt):
            for u in range(t):
                same[u, t] = Signal(name=f"vr_same{u}_{t}")
                m.d.comb += same[u, t].eq(need[u] & (lanes[u].addr == lanes[t].addr))
        lead = [Signal(name=f"vr_lead{t}") for t in range(nt)]  # the first lane reading its entry
        for t in range(nt):
            m.d.comb += lead[t].eq(need[t] & ~Cat(Const(0), *(same[u, t] for u in range(t))).any())
        rank = [Signal(range(nt + 1), name=f"vr_rank{t}") for t in range(nt + 1)]  # leaders before lane t
        m.d.comb += rank[0].eq(0)
        m.d.comb += [rank[t + 1].eq(rank[t] + lead[t]) for t in range(nt)]
        mine = [Signal(range(nt + 1), name=f"vr_mine{t}") for t in range(nt)]  # the rank of lane t's entry
        for t in range(nt):
            m.d.comb += mine[t].eq(rank[t])
            for u in reversed(range(t)):  # the first lane reading the entry (the last assignment wins)
                with m.If(same[u, t]):
                    m.d.comb += mine[t].eq(rank[u])
        base = Signal(range(nt + nv + 1), name="vr_base")  # the first rank read this cycle
        fin = Signal(name="vr_fin")
        m.d.comb += [fin.eq(base + nv >= rank[nt]), take.eq(go & fin), self.vrf_r.en.eq(go)]
        with m.If(go):
            m.d.sync += base.eq(Mux(fin, 0, base + nv))
        for k in range(nv):
            for t in range(nt):
                with m.If(lead[t] & (rank[t] == base + k)):
                    m.d.comb += self.vrf_r.addr[k].eq(lanes[t].addr)
        shape = file_shape(cfg, Space.VRF)
        arr = [Signal(name=f"vr_arr{t}") for t in range(nt)]  # lane t's entry is on a port's data
        port = [Signal(range(nv), name=f"vr_port{t}") for t in range(nt)]  # which port
        with m.If(go):
            for t in range(nt):
                m.d.sync += [arr[t].eq(need[t] & (mine[t] >= base) & (mine[t] < base + nv)),
                             port[t].eq(mine[t] - base)]
        ports = Array(self.vrf_r.data[k].as_value() for k in range(nv))
        vecs = []
        for t in range(nt):
            hold = Signal(shape, name=f"vr_hold{t}")
            vec = Signal(shape, name=f"vr_vec{t}")
            m.d.comb += vec.eq(Mux(arr[t], ports[port[t]], hold.as_value()))
            with m.If(arr[t]):  # kept for the beat's last cycle (the ports read on meanwhile)
                m.d.sync += hold.eq(vec)
            vecs.append(vec)
        return vecs

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
        s2 = Signal(data.StructLayout({"first": 1, "last": 1, "zero": data.ArrayLayout(1, nt),
                                       "slot": range(PF_SLOTS)}))
        ready = Signal()  # every engine takes a step (they run in lockstep, so all or none)
        m.d.comb += ready.eq(engines[0].step.ready)
        adv = Signal()
        m.d.comb += adv.eq(~s2_valid | ready)
        walking = Signal()  # the window's steps are flowing
        special = beat.fault | beat.none
        take = Signal()
        pf_ok = Signal()  # an accumulating mvc's round starts once its sums are read (prefetch, below)
        go = walking & gen.o.valid & ~special & adv & pf_ok  # the beat's reads may go (a cycle of them)
        direct = not mvu_gathers(cfg)  # engine t reads its block through VRF port t
        if direct:
            m.d.comb += take.eq(go)
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

            wrap = Signal()  # the issuing round ends its pixel (cob >= T)
            m.d.comb += wrap.eq((jt + 1) * nt >= cob)
            # a divisor cob's results at a stride of its own: written (read) a run's part a cycle
            strided = Signal()
            m.d.comb += strided.eq(small & (ds != cob))
            banked = (strided, cob, offs)
        else:
            banked = ()
        for t in range(nt):
            ln = beat.lane[t]
            # banked MRF (isa.md): engine t reads bank t at row tbase / T (control divides) + set * kb + k
            tile = c.tbase + (jt if cfg.mrf_banked else ln.j) * c.kb + beat.tapk
            m.d.comb += [self.vrf_r.addr[t].eq(ln.addr)] if direct else []
            m.d.comb += self.mrf_r.addr[t].eq(tile[:maw])
        if direct:
            m.d.comb += [self.vrf_r.en.eq(take), self.mrf_r.en.eq(take)]
            vecs = [self.vrf_r.data[t] for t in range(nt)]
        else:
            m.d.comb += self.mrf_r.en.eq(take)
            vecs = self._gather(m, beat, go, take)
        iss_slot = Signal(range(PF_SLOTS))  # the prefetch slot of the round being issued
        with m.If(take):
            m.d.sync += [s2_valid.eq(1), s2.first.eq(beat.first), s2.last.eq(beat.last), s2.slot.eq(iss_slot)]
            with m.If(beat.last):
                m.d.sync += iss_slot.eq(Mux(iss_slot == PF_SLOTS - 1, 0, iss_slot + 1))
            m.d.sync += [s2.zero[t].eq(beat.lane[t].zero) for t in range(nt)]
        with m.Elif(adv):
            m.d.sync += s2_valid.eq(0)
        slots = [[Signal(data.ArrayLayout(32, n), name=f"pf{k}_{t}") for t in range(nt)] for k in range(PF_SLOTS)]
        for t, e in enumerate(engines):
            p = e.step.payload
            vec, tile = vecs[t], self.mrf_r.data[t]
            m.d.comb += [e.step.valid.eq(s2_valid), p.first.eq(s2.first), p.last.eq(s2.last),
                         p.a_exp.eq(vec.exp - bias)]
            for i in range(n):
                m.d.comb += p.a_mant[i].eq(Mux(s2.zero[t], 0, vec.mant[i]))
            for j in range(n):
                m.d.comb += p.w_exp[j].eq(tile[j].exp - bias)
                for i in range(n):
                    m.d.comb += p.w_mant[j][i].eq(tile[j].mant[i])
                m.d.comb += p.init[j].eq(Mux(c.acc, Array(slot[t] for slot in slots)[s2.slot][j], 0))

        # -- results: latched together, written W at a time ----------------------------------
        buf = [Signal(data.ArrayLayout(32, n), name=f"res{t}") for t in range(nt)]
        holding = Signal()
        q_res = Signal(64)  # first pair of the latched round
        ovf = Signal()
        results_valid = engines[0].result.valid
        wr = _Parts(m, "wr", nt, w, *banked)  # the latched round's writes, a part a cycle
        last_drain = Signal()
        m.d.comb += last_drain.eq(holding & wr.last)
        latch = Signal()  # the buffer takes a round's results (while its last entries are written, too)
        m.d.comb += latch.eq(results_valid & (~holding | last_drain))
        q_base = Signal(64)  # first pair of the round being latched
        m.d.comb += q_base.eq(Mux(holding, q_res + nt, q_res))
        for e in engines:
            m.d.comb += e.result.ready.eq(latch)
        rounds_out = Signal(64)  # rounds whose steps all went to the engines
        rounds_in = Signal(64)  # rounds latched
        if cfg.mrf_banked:
            e_res = Signal(32)  # FVRF entry of the latched round's lane 0
            j_res = Signal(32)  # its row set (jt of that round)
        with m.If(holding):
            with m.Switch(wr.drain):
                for d in range(nw):
                    live = min(w, nt - d * w)  # the last write of a round may have fewer lanes
                    with m.Case(d):
                        m.d.comb += [self.fvrf.wdata[k].eq(buf[d * w + k]) for k in range(live)]
                        m.d.comb += self.fvrf.we.eq(Cat((q_res + d * w + k < c.pairs) & wr.on(d * w + k)
                                                        for k in range(live)))
            m.d.comb += self.fvrf.waddr.eq(((e_res if cfg.mrf_banked else c.dbase + q_res) + wr.off)[:faw])
            wr.advance(m)
            with m.If(last_drain):
                m.d.sync += [holding.eq(0), q_res.eq(q_res + nt)]
                if cfg.mrf_banked:
                    res_wrap = (j_res + 1) * nt >= cob
                    m.d.sync += [e_res.eq(next_entry(e_res, res_wrap)), j_res.eq(Mux(res_wrap, 0, j_res + 1))]
        with m.If(latch):
            m.d.sync += [buf[t].eq(e.result.payload.acc) for t, e in enumerate(engines)]
            m.d.sync += [holding.eq(1), rounds_in.eq(rounds_in + 1), *wr.restart()]
            for t, e in enumerate(engines):
                with m.If(e.result.payload.overflow & (q_base + t < c.pairs)):
                    m.d.sync += ovf.eq(1)

        # -- an accumulating mvc's sums, read ahead of its rounds ------------------------------
        # each round's T sums go to a slot (PF_SLOTS, in turn), read through the wide port in the
        # parts its results are written in (``wr``'s walk), rounds back to back; a round's first
        # step waits for its slot (pf_ok), and a slot is read again once the first step of its
        # round went to the engines (they keep ``init``)
        pf = _Parts(m, "pf", nt, w, *banked)
        pf_go = Signal()  # the mvc accumulates and its rounds are being read or walked
        pf_on = Signal()  # a round's parts are being read (past its first)
        pf_slot = Signal(range(PF_SLOTS))  # the slot being read
        pf_q = Signal(64)  # first pair of the round being read, or of the next
        held = Signal(range(PF_SLOTS + 1))  # slots read or being read whose round's sums the engines lack
        avail = Signal(range(PF_SLOTS + 1))  # slots read whose round's first step is not yet issued
        consume, start, issue = Signal(), Signal(), Signal()
        m.d.comb += [
            consume.eq(s2_valid & ready & s2.first & c.acc),
            start.eq(pf_go & ~pf_on & (pf_q < c.pairs) & ((held < PF_SLOTS) | consume)),
            issue.eq(pf_go & (pf_on | start)),
            pf_ok.eq(~(c.acc & beat.first) | (avail != 0)),
        ]
        if cfg.mrf_banked:
            pf_e = Signal(32)  # FVRF entry of the lane 0 of the round being read, or of the next
            pf_j = Signal(32)  # its row set
        m.d.comb += self.fvrf.raddr.eq(((pf_e if cfg.mrf_banked else c.dbase + pf_q) + pf.off)[:faw])
        with m.If(issue):
            pf.advance(m)
            m.d.sync += pf_on.eq(~pf.last)
            with m.If(pf.last):
                m.d.sync += [pf_q.eq(pf_q + nt), pf_slot.eq(Mux(pf_slot == PF_SLOTS - 1, 0, pf_slot + 1)),
                             *pf.restart()]
                if cfg.mrf_banked:
                    pf_wrap = (pf_j + 1) * nt >= cob
                    m.d.sync += [pf_e.eq(next_entry(pf_e, pf_wrap)), pf_j.eq(Mux(pf_wrap, 0, pf_j + 1))]
        m.d.sync += held.eq(held + start - consume)
        # the part read arrives the next cycle: wide lane k is the round's lane drain * W + k
        a_valid, a_last = Signal(), Signal()
        a_slot, a_drain, a_on = Signal(range(PF_SLOTS)), Signal(range(nw + 1)), Signal(w)
        m.d.sync += a_valid.eq(issue)
        with m.If(issue):
            m.d.sync += [a_slot.eq(pf_slot), a_drain.eq(pf.drain), a_last.eq(pf.last),
                         a_on.eq(Cat(pf.on(pf.first_lane + k) for k in range(w)))]
        for k_slot, slot in enumerate(slots):
            for t in range(nt):
                with m.If(a_valid & (a_slot == k_slot) & (a_drain == t // w) & a_on[t % w]):
                    m.d.sync += slot[t].eq(self.fvrf.rdata[t % w])
        m.d.sync += avail.eq(avail + (a_valid & a_last) - (take & beat.first & c.acc))

        code = Signal(ErrorCode)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [c.eq(self.cmd.payload), ovf.eq(0), q_res.eq(0), rounds_out.eq(0),
                                 rounds_in.eq(0), code.eq(ErrorCode.NONE), pf_on.eq(0), pf_q.eq(0),
                                 pf_slot.eq(0), iss_slot.eq(0), held.eq(0), avail.eq(0),
                                 *pf.restart(cob=self.cmd.payload.win.nj)]
                    if cfg.mrf_banked:
                        p_ = self.cmd.payload
                        m.d.sync += [jt.eq(0), e_res.eq(p_.dbase), j_res.eq(0), pf_e.eq(p_.dbase), pf_j.eq(0)]
                    m.next = "WINDOW"
            with m.State("WINDOW"):
                m.d.comb += [self.busy.eq(1), gen.cmd.valid.eq(1), gen.cmd.payload.eq(c.win), pf_go.eq(c.acc)]
                with m.If(gen.cmd.ready):
                    m.next = "WALK"
            with m.State("WALK"):
                m.d.comb += [self.busy.eq(1), walking.eq(1), gen.o.ready.eq(take | (gen.o.valid & special)),
                             pf_go.eq(c.acc)]
                with m.If(gen.o.valid & special):
                    m.d.sync += code.eq(Mux(beat.fault, ErrorCode.GROUP_RANGE, ErrorCode.NONE))
                    m.next = "DONE"
                with m.Elif(take & beat.last):
                    m.d.sync += rounds_out.eq(rounds_out + 1)
                    if cfg.mrf_banked:  # the next round's first block: T on, or back to 0 past cob (a divisor: 0)
                        m.d.sync += jt.eq(Mux(wrap, 0, jt + 1))
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

