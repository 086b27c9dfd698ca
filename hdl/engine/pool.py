"""``pool`` on the MFU side: max, average and average counting the pads (``isa.PoolMode``).

The unit folds ``mfu_width`` = W vectors a cycle: a *job* ("pair") is an output pixel and a group
of ``g = 2**glog`` consecutive channel blocks, ``g`` the largest power of two that divides
``in_cb`` and is at most W (``accelml.sim.cycles.pool_group``; control computes ``glog``), so the
group's blocks are consecutive VRF entries and its results consecutive FVRF entries
``dbase + q * g ..``, ``q = pixel * in_cb / g + group`` (pixel-major). The window generator
(``window.py``: jobs of ``gi = g`` blocks) names the VRF entry of each tap's first block in the
golden order; this block reads the group through the MFU's W-wide VRF port (slots beyond ``g`` are
not live: they raise no error and are not written), dequantises it with the MFU's
``accelml.hdl.mfu.Dequantise`` (W slots) and folds each block into its own value with the MFU's
``accelml.hdl.mfu.VectorOp``, all lent to it (``lent_signature``; the MFU idle), exactly as
``golden.max_pool`` / ``golden.avg_pool`` do for each (pixel, channel block):

* max: ``acc = maximum(acc, v)`` from ``acc = -inf``, a tap outside the input reading ``-inf``
  (so it changes nothing); a window with no tap inside the input stops the instruction with
  ``EMPTY_WINDOW`` (the golden model's "window lies entirely in the padding");
* avg / avg_pad: ``acc = acc + v`` from ``+0`` in tap order, each add rounded (a tap outside the
  input adds +0; the golden's first ``to_internal(v)`` is ``+0 + v``), then ``acc * r`` with
  ``r = internal_const(1 / count)``: ``count`` is the number of taps inside the input (avg) or
  inside the input and its explicit pads (avg_pad), counted from the generator's ``zero`` /
  ``inpad`` flags, and :class:`Reciprocal` computes ``r`` correctly rounded (binary32, RNE), the
  value ``internal_const`` gives for every count below 2**24 (a binary32 integer: the float64
  quotient rounds to binary32 without a double-rounding error, Figueroa's p' >= 2p + 2 bound;
  tests/hdl/engine/test_pool.py checks every count below 2**20, and below 2**24 under the ``slow``
  marker). A count of zero is ``EMPTY_WINDOW``;
  an add beyond the internal format's range is ``OVERFLOW``.

Errors are collected over the whole instruction and reported at its end, ``EMPTY_WINDOW`` before
``OVERFLOW`` (the golden checks the divisors before it sums); every pair is folded and written but
an empty window's and an average whose scaling overflows (the functional simulator writes none; a
failing program stops there).

Pipeline: the window generator walks the pairs ``LANES`` = 2 at a time (a *round*, ``VectorOp``'s
latency), each beat naming the same tap of both pairs; its lanes are read from the VRF and
dequantised one per cycle, pair A's tap then pair B's (a tap outside the input goes through as a
zero block, its value replaced by the fill; a last round of one pair has only lane A), a small
FIFO keeping each tap's flags beside ``Dequantise``. Each pair has a slot (its value, tap count,
result entry); the fold takes a tap a cycle, pair A's and pair B's in turn, so a tap meets its
pair's previous result as ``VectorOp`` returns it (forwarded straight into the operation) and the
golden order within a pair is kept. A max pair's value is written as its last fold returns, while
the next round folds. An average's sum waits in its slot and holds the taps back: the waiting
sums, A's first, are scaled by the reciprocal of their count (one ``VectorOp`` multiply each,
written as it returns); :class:`Reciprocal` (``RECIP_CYCLES``) keeps the last count's, and
computes a sum's whose count differs, while the unit waits (once per run of output pixels with
equal divisors: each pixel's pairs share its count).

Timing (``accelml.sim.cycles.pool_busy`` of the jobs, equal to ``busy_pool``:
tests/hdl/engine/test_engine_rtl.py): 2 cycles per tap and round (one per tap and job), nothing
more per round for max and 3 for the averages' scaling, a reciprocal per change of divisor (26 more
cycles, not overlapped), a cycle less when the last round has one job, and a setup of 45 cycles
(the window generator's divisions, the front pipeline and the last result; 39 without jobs): a
3 x 3 max pool of 8 jobs takes 117 cycles, the average of one divisor 155. ResNet-50's 3 x 3 max
pool of 64 channels on ``a10`` (W = 4): 3,136 jobs of four blocks, 28 k cycles instead of 113 k.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from accelml.hdl import mfu as units
from accelml.hdl.isa import PoolMode, Space, VecOp

from .layouts import check_config
from .regfiles import file_addr_bits, file_port_signature
from .status import ErrorCode, report_done
from .window import WindowGen, vrf_addr_bits, window_cmd_layout

__all__ = ["Pool", "Reciprocal", "pool_cmd_layout", "lent_signature", "tap_layout", "COUNT_BITS", "LANES",
           "RECIP_CYCLES", "reciprocal_bits"]

COUNT_BITS = 64  # taps counted per window (kh * kw fits)
RECIP_CYCLES = 27
NEG_INF = 0xFF80_0000
LANES = units.VectorOp.latency  # pairs folded in turn, a tap a cycle: each slot's fold returns in time


def pool_cmd_layout(cfg) -> data.StructLayout:
    """A checked ``pool``: its window walk (jobs = groups of ``2**glog`` channel blocks), its first
    result entry and mode, and ``glog`` (:func:`accelml.sim.cycles.pool_group`'s log2)."""
    return data.StructLayout({"win": window_cmd_layout(), "dbase": unsigned(32), "mode": PoolMode,
                              "glog": range(cfg.mfu_width.bit_length() + 1)})


def tap_layout(cfg) -> data.StructLayout:
    """One tap of one pair, as the window generator's lane ``slot`` named it."""
    return data.StructLayout({
        "addr": unsigned(vrf_addr_bits(cfg)), "zero": 1, "inpad": 1, "j": unsigned(32), "q": unsigned(32),
        "slot": range(LANES), "first": 1, "last": 1, "final": 1,
    })


def reciprocal_bits(count):
    """Model of :class:`Reciprocal` (numpy, element-wise; counts in [1, 2**62]): binary32 bits of
    1 / count, correctly rounded (RNE), as uint32."""
    c = np.asarray(count, dtype=np.uint64)
    if (c < 1).any() or (c > 1 << 62).any():
        raise ValueError("reciprocal_bits: counts must lie in [1, 2**62]")
    length = np.zeros(c.shape, np.uint64)
    for k in range(63):
        length = np.where((c >> np.uint64(k)) != 0, np.uint64(k + 1), length)
    one = np.uint64(1)
    q, r = np.ones(c.shape, np.uint64), (one << length) - c
    for _ in range(24):
        r = r << one
        bit = r >= c
        r = np.where(bit, r - c, r)
        q = q << one | bit.astype(np.uint64)
    mant = (q >> one) + (q & one & ((r != 0) | ((q >> one) & one)).astype(np.uint64))
    carry = mant >> np.uint64(24)
    exp = np.uint64(127) - length + carry
    bits = exp << np.uint64(23) | (np.where(carry != 0, mant >> one, mant) & np.uint64(0x7F_FFFF))
    pow2 = (c & (c - one)) == 0
    bits = np.where(pow2, (np.uint64(128) - length) << np.uint64(23), bits)
    return bits.astype(np.uint32)


class Reciprocal(wiring.Component):
    """``start`` (a pulse with ``count`` >= 1) -> ``result``: binary32 bits of ``1 / count``, RNE, with
    ``done`` high from ``RECIP_CYCLES`` cycles later until the next ``start``. Restoring division of
    ``2**L`` by ``count`` (``L`` its bit length), 25 quotient bits and a sticky remainder; the
    model is :func:`reciprocal_bits`."""

    def __init__(self):
        super().__init__({"start": In(1), "count": In(COUNT_BITS), "result": Out(32), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        w = COUNT_BITS
        c = Signal(w)
        length = Signal(range(w + 1))
        pow2 = Signal()
        q = Signal(25)
        r = Signal(w + 2)
        steps = Signal(range(26))
        length_in = Signal(range(w + 1))
        for k in range(w):  # the bit length of the count
            with m.If(self.count[k]):
                m.d.comb += length_in.eq(k + 1)
        trial = Signal(w + 3)
        m.d.comb += trial.eq((r << 1) - c)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [c.eq(self.count), length.eq(length_in),
                                 pow2.eq((self.count & (self.count - 1)) == 0),
                                 r.eq((1 << length_in) - self.count), q.eq(1), steps.eq(24), self.done.eq(0)]
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                with m.If(steps != 0):
                    m.d.sync += steps.eq(steps - 1)
                    with m.If(~trial[w + 2]):
                        m.d.sync += [r.eq(trial), q.eq(q << 1 | 1)]
                    with m.Else():
                        m.d.sync += [r.eq(r << 1), q.eq(q << 1)]
                with m.Else():
                    mant = Signal(25)
                    m.d.comb += mant.eq(q[1:] + (q[0] & ((r != 0) | q[1])))
                    exp = Signal(8)
                    with m.If(pow2):
                        m.d.sync += self.result.eq((128 - length) << 23)
                    with m.Elif(mant[24]):
                        m.d.comb += exp.eq(128 - length)
                        m.d.sync += self.result.eq(Cat(mant[1:24], exp))
                    with m.Else():
                        m.d.comb += exp.eq(127 - length)
                        m.d.sync += self.result.eq(Cat(mant[:23], exp))
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        return m


def lent_signature(cfg) -> wiring.Signature:
    """What the pool borrows from the MFU (``mfu.Mfu``'s ``lend`` member, flipped): its VRF read and
    FVRF write ports (``mfu_width`` entries) and its ``Dequantise`` and ``VectorOp`` lanes."""
    deq_beat, deq_result = units.Dequantise.layouts(cfg)
    vop_beat, vop_result = units.VectorOp.layouts(cfg)
    return wiring.Signature({
        "active": Out(1),  # the pool drives the MFU's ports and lanes
        "vrf": Out(file_port_signature(cfg, Space.VRF, cfg.mfu_width)),
        "fvrf": Out(file_port_signature(cfg, Space.FVRF, cfg.mfu_width)),
        "deq_i": Out(stream.Signature(deq_beat)), "deq_o": In(stream.Signature(deq_result)),
        "vop_i": Out(stream.Signature(vop_beat)), "vop_o": In(stream.Signature(vop_result)),
    })


class Pool(wiring.Component):
    def __init__(self, cfg):
        self.cfg = check_config(cfg, "Pool")
        super().__init__({
            "cmd": In(stream.Signature(pool_cmd_layout(cfg))),
            "done": Out(stream.Signature(ErrorCode)),
            "mfu": Out(lent_signature(cfg)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        n = cfg.native_dim
        nw = cfg.mfu_width  # channel blocks a job folds at once (the command's group: glog)
        nl = LANES
        c = Signal(pool_cmd_layout(cfg))
        m.submodules.window = gen = WindowGen(cfg, nl)
        lent = self.mfu  # the MFU's file ports and lanes, while this unit is busy (control never runs both)
        deq = SimpleNamespace(i=lent.deq_i, o=lent.deq_o)
        vop = SimpleNamespace(i=lent.vop_i, o=lent.vop_o)
        m.d.comb += lent.active.eq(self.busy)
        assert units.VectorOp.latency == nl  # a slot's next tap meets its previous fold's result
        m.submodules.recip = recip = Reciprocal()
        tap = tap_layout(cfg)
        m.submodules.meta = meta = SyncFIFO(width=tap.size, depth=4)  # the taps inside ``deq``

        is_max = c.mode == PoolMode.MAX
        ninf = Signal(32 * n * nw)
        m.d.comb += ninf.eq(int("".join(f"{NEG_INF:032b}" for _ in range(n * nw)), 2))
        lmask = Signal(nw)  # the group's blocks: the first 2**glog slots
        m.d.comb += lmask.eq(Cat(Const(1, 1), *(c.glog >= k.bit_length() for k in range(1, nw))))
        faw = file_addr_bits(cfg, Space.FVRF)
        running = Signal()  # taps flow from the window generator into ``deq``

        # -- front: window step -> one lane a cycle -> VRF read (stage R) -> Dequantise ---------
        beat = gen.o.payload
        special = beat.none | beat.fault
        sel = Signal(range(nl))  # the lane of the beat taken next
        lane = Signal(beat.lane.shape().elem_shape)  # lane ``sel`` of the beat
        with m.Switch(sel):
            for t in range(nl):
                with m.Case(t):
                    m.d.comb += lane.eq(beat.lane[t])
        beat_end = Signal()  # the lane taken is the beat's last active one
        m.d.comb += beat_end.eq(sel == nl - 1)
        for t in range(nl - 1):
            with m.If((sel == t) & ~beat.lane[t + 1].active):
                m.d.comb += beat_end.eq(1)
        r_valid = Signal()
        r_tap = Signal(tap)
        deq_take = Signal()
        m.d.comb += deq_take.eq(r_valid & deq.i.ready & meta.w_rdy)
        take = Signal()
        m.d.comb += take.eq(running & gen.o.valid & ~special & (~r_valid | deq_take))
        m.d.comb += lent.vrf.raddr.eq(Mux(take, lane.addr, r_tap.addr))
        with m.If(take):
            m.d.sync += [r_valid.eq(1), sel.eq(Mux(beat_end, 0, sel + 1)),
                         r_tap.addr.eq(lane.addr), r_tap.zero.eq(lane.zero), r_tap.inpad.eq(lane.inpad),
                         r_tap.j.eq(lane.j), r_tap.q.eq(lane.q), r_tap.slot.eq(sel),
                         r_tap.first.eq(beat.first), r_tap.last.eq(beat.last), r_tap.final.eq(beat.final & beat_end)]
        with m.Elif(deq_take):
            m.d.sync += r_valid.eq(0)
        zero = r_tap.zero
        m.d.comb += [deq.i.valid.eq(r_valid & meta.w_rdy), deq.i.payload.live.eq(Mux(r_valid, lmask, 0)),
                     meta.w_en.eq(deq_take), meta.w_data.eq(r_tap.as_value())]
        for w in range(nw):  # the group's blocks of r_tap (its address is held while it waits)
            vec = lent.vrf.rdata[w]
            m.d.comb += deq.i.payload.vec[w].exp.eq(Mux(zero, 0, vec.exp))
            for k in range(n):  # VRF two's complement -> the unit's sign-magnitude elements
                mant, el = vec.mant[k], deq.i.payload.vec[w].mant[k]
                m.d.comb += [el.sign.eq(~zero & (mant < 0)), el.mag.eq(Mux(zero, 0, Mux(mant < 0, -mant, mant)))]

        # -- back: one VectorOp a cycle, the slots' folds interleaved -------------------------------
        nxt = data.View(tap, meta.r_data)  # the tap whose value ``deq`` offers
        acc = Array(Signal(32 * n * nw, name=f"acc{s}") for s in range(nl))  # each slot's value
        count = Array(Signal(COUNT_BITS, name=f"count{s}") for s in range(nl))  # its taps counted
        waddr = Array(Signal(faw, name=f"waddr{s}") for s in range(nl))  # its pair's result entry
        inflight = Array(Signal(name=f"inflight{s}") for s in range(nl))  # a fold of the slot is in ``vop``
        pend = Array(Signal(name=f"pend{s}") for s in range(nl))  # the slot's sum waits for its scaling
        busy_slots = Cat(*inflight, *pend).any()
        waiting = Cat(*pend).any()
        tag_layout = data.StructLayout({"valid": 1, "scale": 1, "slot": range(nl), "last": 1, "empty": 1,
                                        "waddr": faw})
        tags = [Signal(tag_layout, name=f"tag{k}") for k in range(nl + 1)]  # [0]: issued now; [nl]: in vop.o
        for k in range(nl):
            m.d.sync += tags[k + 1].eq(tags[k])
        arr = tags[nl]
        rcount = Signal(COUNT_BITS)  # the count whose reciprocal ``recip`` holds (or computes)
        rcount_ok = Signal()
        fin = Signal()  # the walk's final tap is issued
        ovf = Signal()
        empty = Signal()
        code = Signal(ErrorCode)
        result = vop.o.payload.vec.as_value()
        m.d.comb += [vop.i.payload.live.eq(Mux(vop.i.valid, lmask, 0)), vop.o.ready.eq(1),
                     tags[0].valid.eq(vop.i.valid), lent.fvrf.waddr.eq(arr.waddr), lent.fvrf.wdata.eq(result)]
        start_acc = Mux(is_max, ninf, 0)
        counts = Mux(c.mode == PoolMode.AVG_PAD, nxt.inpad, ~nxt.zero)
        fold_back = arr.valid & ~arr.scale  # a fold's result returns to its slot
        sum_done = fold_back & arr.last & ~arr.empty & ~is_max  # an average's sum, to be scaled
        s = nxt.slot
        free = ~inflight[s] | (fold_back & (arr.slot == s) & ~sum_done)
        ps = Signal(range(nl))  # the first slot waiting for its scaling
        for t in reversed(range(nl)):
            with m.If(pend[t]):
                m.d.comb += ps.eq(t)
        ready = recip.done & rcount_ok & (rcount == count[ps])
        new_count = Signal(COUNT_BITS)
        m.d.comb += new_count.eq(Mux(nxt.first, 0, count[s]) + counts)
        q_addr = Signal(faw)  # the first result entry of the tap's job: dbase + q * 2**glog
        m.d.comb += q_addr.eq(c.dbase + (nxt.q << c.glog))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [c.eq(self.cmd.payload), ovf.eq(0), empty.eq(0), rcount_ok.eq(0), fin.eq(0),
                                 sel.eq(0), *(f.eq(0) for f in [*inflight, *pend])]
                    m.next = "WINDOW"
            with m.State("WINDOW"):
                m.d.comb += [self.busy.eq(1), gen.cmd.valid.eq(1), gen.cmd.payload.eq(c.win)]
                with m.If(gen.cmd.ready):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), running.eq(1), gen.o.ready.eq(take & beat_end)]
                with m.If(arr.valid):  # a result: a fold's, or a scaled average
                    with m.If(vop.o.payload.error):
                        m.d.sync += ovf.eq(1)
                    with m.If(~arr.scale):
                        m.d.sync += [acc[arr.slot].eq(result), inflight[arr.slot].eq(0)]
                        with m.If(arr.last & arr.empty):
                            m.d.sync += empty.eq(1)
                        with m.Elif(arr.last & is_max):
                            m.d.comb += lent.fvrf.we.eq(lmask)
                        with m.Elif(arr.last):
                            m.d.sync += pend[arr.slot].eq(1)
                    with m.Elif(~vop.o.payload.error):
                        m.d.comb += lent.fvrf.we.eq(lmask)
                with m.If(gen.o.valid & special):  # a walk without taps: its only beat
                    m.d.comb += gen.o.ready.eq(1)
                    m.next = "FINISH"
                with m.Elif(fin & ~busy_slots & ~Cat(t.valid for t in tags[1:]).any()):
                    m.next = "FINISH"
                with m.Elif(waiting):  # scale the first waiting sum, its pixel's reciprocal first
                    with m.If(ready):
                        m.d.comb += [vop.i.valid.eq(1), vop.i.payload.a.eq(acc[ps]),
                                     vop.i.payload.b.eq(Cat(*[recip.result] * (n * nw))),
                                     vop.i.payload.op.eq(VecOp.MUL), tags[0].scale.eq(1), tags[0].waddr.eq(waddr[ps])]
                        m.d.sync += pend[ps].eq(0)
                    with m.Elif(~rcount_ok | recip.done):
                        m.d.comb += [recip.start.eq(1), recip.count.eq(count[ps])]
                        m.d.sync += [rcount.eq(count[ps]), rcount_ok.eq(1)]
                with m.Elif(deq.o.valid & meta.r_rdy & free & ~sum_done):
                    prev = Mux(fold_back & (arr.slot == s), result, acc[s])
                    m.d.comb += [vop.i.valid.eq(1), vop.i.payload.a.eq(Mux(nxt.first, start_acc, prev)),
                                 vop.i.payload.b.eq(Mux(nxt.zero, Mux(is_max, ninf, 0),
                                                        deq.o.payload.vec.as_value())),
                                 vop.i.payload.op.eq(Mux(is_max, VecOp.MAX, VecOp.ADD)),
                                 tags[0].slot.eq(s), tags[0].last.eq(nxt.last), tags[0].empty.eq(new_count == 0),
                                 tags[0].waddr.eq(q_addr),
                                 deq.o.ready.eq(1), meta.r_en.eq(1)]
                    m.d.sync += [inflight[s].eq(1), count[s].eq(new_count), waddr[s].eq(q_addr)]
                    with m.If(nxt.final):
                        m.d.sync += fin.eq(1)
                    with m.If(deq.o.payload.error & ~nxt.zero):
                        m.d.sync += ovf.eq(1)
            with m.State("FINISH"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += code.eq(Mux(empty, ErrorCode.EMPTY_WINDOW, Mux(ovf, ErrorCode.OVERFLOW, ErrorCode.NONE)))
                m.next = "DONE"
            with m.State("DONE"):
                report_done(m, self.done, code)
        return m
