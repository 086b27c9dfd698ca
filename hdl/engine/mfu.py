"""The engine's multi-function unit: ``deq``, ``qnt``, ``vact`` and ``vop`` against the register files.

It also lends its VRF read port, FVRF write port, ``Dequantise`` and ``VectorOp`` lanes to the pool
unit (``lend``, ``pool.lent_signature``) while a ``pool`` runs: control never has a ``pool`` and an
MFU instruction in flight at once (``layouts.EXCLUSIVE_UNITS``), so ``pool`` folds ``mfu_width``
vectors a cycle on the MFU's own lanes.

This block sequences a command over its vectors, a group of up to W = ``mfu_width`` consecutive
vectors per cycle; every lane is computed by the stream units of ``accelml.hdl.mfu``
(``Dequantise``, ``Quantise``, ``VectorOp``, ``Activation``), built for W vectors per beat, so each
operation, its rounding and its failures are defined once, bit-exact with ``accelml.sim.bfp``
(docs/numerics.md). Its file ports move W consecutive entries from any start
(``regfiles.RegisterFiles`` banks VRF and FVRF for them):

* ``deq``: VRF entry -> FVRF; ``qnt``: FVRF -> VRF entry (a NaN stops the command with
  ``ErrorCode.NAN``); the VRF's two's-complement mantissas are converted to and from the units'
  sign-magnitude elements at the port (a loaded magnitude never exceeds ``2**M - 1``);
* ``vop`` (the second operand repeating with ``period``, read through its own FVRF read port
  ``fvrf_b``) and ``vact`` (``clip_lo``, ``clip_hi``, ``alpha`` from the command); a fused ``vop``
  (``bfile`` the VRF, ``act`` not copy, or ``dest`` the VRF) reads its second operand through the
  VRF port into ``Dequantise`` (the first operand waits for it in registers), hands each group
  from ``VectorOp`` on to ``Activation`` and ``Quantise`` as the units return it, its latency their
  sum, and an earlier stage's error travels with its group to the last stage (``OVERFLOW`` before
  a quantised NaN); a unit's error
  (a result beyond binary32, an Inf or NaN operand of add, sub or mul, a negative element's
  leaky-relu product out of range) stops the command with ``ErrorCode.OVERFLOW``, as the
  functional simulator names it.

Pipeline (``RUN``): each cycle it reads a group (both ``vop`` operands at once), hands the group
read the cycle before to the unit (its ``live`` lanes a prefix), and writes the group the unit
returns (``latency`` cycles after its beat, its live lanes as the write mask; the unit is never
stalled). A group ends at the command's end and at each multiple of a periodic second operand's
``period``, so its second operands are consecutive entries too. A command is busy
``groups + 1 + latency`` cycles (``sim.cycles.mfu_groups`` / ``mfu_cycles``). Reads run ahead of
writes in vector order, so a destination equal to its source, starting before it or disjoint from
it sees every operand as it was before the command (the definition: the functional simulator reads
every operand first); the overlaps where an entry would be read after being written (a destination
starting inside a source after its start, any overlap with a periodic second operand) are refused
before dispatch (control's ``MFU_OVERLAP``, ``FuncSim._mfu_overlap``). A failing group is not
written, nor anything after it (the groups before it are); the beats in flight are drained, then
``done``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from accelml.hdl import mfu as units
from accelml.hdl.isa import Space

from .layouts import check_config
from .pool import lent_signature
from .regfiles import file_port_signature
from .status import ErrorCode, report_done

__all__ = ["Mfu", "MfuOp", "mfu_cmd_layout"]


class MfuOp(enum.Enum, shape=2):
    DEQ = 0
    VACT = 1
    VOP = 2
    QNT = 3


def mfu_cmd_layout() -> data.StructLayout:
    return data.StructLayout({
        "op": MfuOp, "fn": unsigned(2),  # isa.VecOp or isa.Act
        "dst": unsigned(32), "src_a": unsigned(32), "src_b": unsigned(32),
        "count": unsigned(16), "period": unsigned(12), "clip_lo": unsigned(32), "clip_hi": unsigned(32),
        "alpha": unsigned(32),
        # vop: isa.Act after the op; isa.Dest of the result (1: quantised to the VRF) and of b (1: the
        # VRF, dequantised)
        "act": unsigned(2), "dest": unsigned(1), "bfile": unsigned(1),
    })


class Mfu(wiring.Component):
    def __init__(self, cfg):
        self.cfg = check_config(cfg, "Mfu")
        w = cfg.mfu_width
        super().__init__({
            "cmd": In(stream.Signature(mfu_cmd_layout())),
            "done": Out(stream.Signature(ErrorCode)),
            "vrf": Out(file_port_signature(cfg, Space.VRF, w)),
            "fvrf": Out(file_port_signature(cfg, Space.FVRF, w)),
            "fvrf_b": Out(file_port_signature(cfg, Space.FVRF, w)),  # read only: vop's second operand
            "lend": In(lent_signature(cfg)),  # the pool unit's use of the ports and lanes (while idle here)
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        n, w = cfg.native_dim, cfg.mfu_width
        c = Signal(mfu_cmd_layout())
        i = Signal(16)  # vectors read
        j = Signal(16)  # the second operand's index of the next read (i, modulo the period if any)
        got = Signal(16)  # vectors out of the unit (written, or dropped after an error)
        rvalid = Signal()  # the group read the previous cycle is on the read ports
        rlive = Signal(w)  # its lanes
        stop = Signal()  # a result failed: no further read or write
        code = Signal(ErrorCode)

        # the datapath: w vectors per beat, every lane defined in accelml.hdl.mfu
        lanes = m.submodules.units = units.Mfu(cfg)
        # a fused vop passes each group on: [deq] -> vop -> [vact] -> [qnt] (b from the VRF; an
        # activation; the VRF as destination)
        chain_b, chain_act, chain_q = Signal(), Signal(), Signal()
        m.d.comb += [chain_b.eq((c.op == MfuOp.VOP) & c.bfile), chain_act.eq((c.op == MfuOp.VOP) & (c.act != 0)),
                     chain_q.eq((c.op == MfuOp.VOP) & c.dest)]
        fsrc = Signal(data.ArrayLayout(32 * n, w))  # the FVRF group read the cycle before

        def delayed(value, cycles: int, name: str):  # the units are never stalled: fixed latencies
            for t in range(cycles):
                nxt = Signal(len(Value.cast(value)), name=f"{name}_{t}")
                m.d.sync += nxt.eq(value)
                value = nxt
            return value

        # with b from the VRF, a waits for b's dequantisation
        a_late = Signal(data.ArrayLayout(32 * n, w))
        m.d.comb += a_late.eq(delayed(fsrc.as_value(), units.Dequantise.latency, "a_late"))
        vop_o, vact_o, qnt_o = lanes.vop_o, lanes.vact_o, lanes.qnt_o
        to_q = Signal.like(vop_o.payload)  # what a fused vop quantises: the activation's result or the op's
        to_q_valid = Signal()
        m.d.comb += [to_q.eq(Mux(chain_act, vact_o.payload, vop_o.payload)),
                     to_q_valid.eq(Mux(chain_act, vact_o.valid, vop_o.valid))]
        m.d.comb += [
            lanes.deq_i.payload.live.eq(rlive),
            lanes.vop_i.payload.live.eq(Mux(chain_b, lanes.deq_o.payload.live, rlive)),
            lanes.vact_i.payload.live.eq(Mux(chain_act, vop_o.payload.live, rlive)),
            lanes.qnt_i.payload.live.eq(Mux(chain_q, to_q.live, rlive)),
            lanes.vop_i.payload.op.eq(c.fn), lanes.vact_i.payload.act.eq(Mux(c.op == MfuOp.VOP, c.act, c.fn)),
            lanes.clip_lo.eq(c.clip_lo), lanes.clip_hi.eq(c.clip_hi), lanes.alpha.eq(c.alpha),
            lanes.vact_i.payload.x.eq(Mux(chain_act, vop_o.payload.vec.as_value(), fsrc.as_value())),
            lanes.qnt_i.payload.vec.eq(Mux(chain_q, to_q.vec.as_value(), fsrc.as_value())),
        ]
        for k in range(w):
            src, vec = self.fvrf.rdata[k].as_value(), self.vrf.rdata[k]
            m.d.comb += [
                fsrc[k].eq(src), lanes.deq_i.payload.vec[k].exp.eq(vec.exp),
                lanes.vop_i.payload.a[k].eq(Mux(chain_b, a_late[k], src)),
                lanes.vop_i.payload.b[k].eq(Mux(chain_b, lanes.deq_o.payload.vec[k].as_value(),
                                                self.fvrf_b.rdata[k].as_value())),
            ]
            qvec = qnt_o.payload.vec[k]
            for e in range(n):  # the VRF's two's complement <-> the units' sign-magnitude
                mant, el = vec.mant[e], lanes.deq_i.payload.vec[k].mant[e]
                m.d.comb += [el.sign.eq(mant < 0), el.mag.eq(Mux(mant < 0, -mant, mant))]
                m.d.comb += self.vrf.wdata[k].mant[e].eq(
                    Mux(qvec.mant[e].sign, -qvec.mant[e].mag, qvec.mant[e].mag))
            m.d.comb += self.vrf.wdata[k].exp.eq(qvec.exp)

        # an error of a fused vop's earlier stage travels with its group to the last stage
        deq_err = chain_b & lanes.deq_o.valid & lanes.deq_o.payload.error
        vop_err = vop_o.valid & (vop_o.payload.error | delayed(deq_err, units.VectorOp.latency, "deq_err"))
        act_err = vact_o.valid & (vact_o.payload.error | delayed(vop_err, units.Activation.latency, "vop_err"))
        early = Signal()  # at the last stage: the group failed in the op or the activation
        m.d.comb += early.eq(Mux(chain_q, delayed(Mux(chain_act, act_err, vop_err), units.Quantise.latency, "early"),
                                 Mux(chain_act, act_err, 0)))

        out_valid, out_error, out_live = Signal(), Signal(), Signal(w)
        to_vrf = Signal()  # the last stage is qnt: results go to the VRF
        m.d.comb += to_vrf.eq((c.op == MfuOp.QNT) | chain_q)
        result = Signal(data.ArrayLayout(32 * n, w))
        last = {MfuOp.DEQ: lanes.deq_o, MfuOp.QNT: qnt_o, MfuOp.VACT: vact_o}
        with m.Switch(c.op):
            for op, o in last.items():
                with m.Case(op):
                    m.d.comb += [out_valid.eq(o.valid), out_error.eq(o.payload.error), out_live.eq(o.payload.live)]
                    if op is not MfuOp.QNT:
                        m.d.comb += result.eq(o.payload.vec.as_value())
            with m.Case(MfuOp.VOP):
                with m.If(chain_q):
                    m.d.comb += [out_valid.eq(qnt_o.valid), out_error.eq(qnt_o.payload.error | early),
                                 out_live.eq(qnt_o.payload.live)]
                with m.Elif(chain_act):
                    m.d.comb += [out_valid.eq(vact_o.valid), out_error.eq(vact_o.payload.error | early),
                                 out_live.eq(vact_o.payload.live), result.eq(vact_o.payload.vec.as_value())]
                with m.Else():
                    m.d.comb += [out_valid.eq(vop_o.valid), out_error.eq(vop_err),
                                 out_live.eq(vop_o.payload.live), result.eq(vop_o.payload.vec.as_value())]
        m.d.comb += [
            lanes.deq_i.valid.eq(rvalid & ((c.op == MfuOp.DEQ) | chain_b)),
            lanes.vop_i.valid.eq(Mux(chain_b, lanes.deq_o.valid, rvalid & (c.op == MfuOp.VOP))),
            lanes.vact_i.valid.eq(Mux(chain_act, vop_o.valid, rvalid & (c.op == MfuOp.VACT))),
            lanes.qnt_i.valid.eq(Mux(chain_q, to_q_valid, rvalid & (c.op == MfuOp.QNT))),
        ]
        for o in (lanes.deq_o, qnt_o, vop_o, vact_o):  # never stalled: a result is written the cycle it leaves
            m.d.comb += o.ready.eq(1)
        out_n = Signal(range(w + 1))  # vectors in the result (its live lanes are a prefix)
        m.d.comb += out_n.eq(Mux(out_valid, sum(out_live[k] for k in range(w)), 0))
        m.d.comb += [self.fvrf.waddr.eq(c.dst + got), self.fvrf.wdata.eq(result), self.vrf.waddr.eq(c.dst + got),
                     self.vrf.raddr.eq(Mux(chain_b, c.src_b + Mux(c.period != 0, j, i), c.src_a + i)),
                     self.fvrf.raddr.eq(c.src_a + i),
                     self.fvrf_b.raddr.eq(c.src_b + Mux(c.period != 0, j, i))]

        # the next group: at most w vectors, up to the end and to the period's next multiple
        size = Signal(range(w + 1))
        left, to_wrap = c.count - i, Mux(c.period != 0, c.period - j, w)
        m.d.comb += size.eq(Mux((left < w) & (left <= to_wrap), left, Mux(to_wrap < w, to_wrap, w)))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [c.eq(self.cmd.payload), i.eq(0), j.eq(0), got.eq(0), stop.eq(0),
                                 code.eq(ErrorCode.NONE)]
                    m.next = "RUN"
            with m.State("RUN"):  # read a group, hand the one read last cycle to the unit, write a result
                m.d.comb += self.busy.eq(1)
                read = Signal()
                m.d.comb += read.eq((i != c.count) & ~stop)
                m.d.sync += [rvalid.eq(read), rlive.eq(Cat(size > k for k in range(w)))]
                with m.If(read):
                    m.d.sync += [i.eq(i + size), j.eq(Mux((c.period != 0) & (j + size == c.period), 0, j + size))]
                fail = out_valid & out_error & ~stop
                with m.If(fail):
                    m.d.sync += [stop.eq(1), code.eq(Mux(to_vrf & ~early, ErrorCode.NAN, ErrorCode.OVERFLOW))]
                m.d.sync += got.eq(got + out_n)
                with m.If(out_valid & ~out_error & ~stop):
                    m.d.comb += [self.fvrf.we.eq(Mux(to_vrf, 0, out_live)), self.vrf.we.eq(Mux(to_vrf, out_live, 0))]
                # every vector read (or a failure stopped the reads) and its result out of the unit
                with m.If(((i == c.count) | stop | fail) & ~read & ~rvalid & (got + out_n == i)):
                    m.next = "DONE"
            with m.State("DONE"):
                report_done(m, self.done, code)

        # lent to the pool unit (control never runs a pool beside an MFU instruction): its VRF reads,
        # FVRF writes, dequantiser and vector unit; the last assignments win
        lend = self.lend
        m.d.comb += [lend.vrf.rdata.eq(self.vrf.rdata), lend.deq_i.ready.eq(lanes.deq_i.ready),
                     lend.deq_o.valid.eq(lanes.deq_o.valid), lend.deq_o.payload.eq(lanes.deq_o.payload),
                     lend.vop_i.ready.eq(lanes.vop_i.ready),
                     lend.vop_o.valid.eq(lanes.vop_o.valid), lend.vop_o.payload.eq(lanes.vop_o.payload)]
        with m.If(lend.active):
            m.d.comb += [self.vrf.raddr.eq(lend.vrf.raddr), self.fvrf.we.eq(lend.fvrf.we),
                         self.fvrf.waddr.eq(lend.fvrf.waddr), self.fvrf.wdata.eq(lend.fvrf.wdata),
                         lanes.deq_i.valid.eq(lend.deq_i.valid), lanes.deq_i.payload.eq(lend.deq_i.payload),
                         lanes.deq_o.ready.eq(lend.deq_o.ready),
                         lanes.vop_i.valid.eq(lend.vop_i.valid), lanes.vop_i.payload.eq(lend.vop_i.payload),
                         lanes.vop_o.ready.eq(lend.vop_o.ready),
                         # the last command's chain must not carry the pool's results on into
                         # vact and qnt, whose output the next command would count
                         lanes.vact_i.valid.eq(0), lanes.qnt_i.valid.eq(0)]
        return m
