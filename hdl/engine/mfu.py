"""Multi-function unit: ``deq``, ``qnt``, ``vact`` and ``vop``, one vector at a time.

One vector at a time, bit-exact with ``accelml.sim.bfp`` (internal format binary32, RNE, FTZ):

* ``deq``: VRF entry -> FVRF, each lane ``to_internal(mant * 2**(exp - (M - 1)))``
  (``fp32.ScaledIntToF32``);
* ``qnt``: FVRF -> VRF entry, ``bfp.quantize`` of the N values (``quantize.py``); a NaN stops the
  command with ``ErrorCode.NAN``;
* ``vop mul`` and ``vact lrelu`` (``x < 0 ? x * alpha : x``): ``bfp.mfu_mul``, the exact product
  rounded by ``fp32.ScaledIntToF32``; an overflow in any lane (leaky ReLU forms every lane's
  product, as the definition does) stops the command with ``ErrorCode.OVERFLOW``;
* ``vop add`` / ``sub``: ``fp32.F32Add`` per lane (``sub`` adds ``-b``: negation is exact), an
  overflow beyond binary32 stops the command with ``ErrorCode.OVERFLOW``; ``vop max``: numpy's
  ``maximum`` (``a > b or a is NaN ? a : b``); the second operand repeats with ``period``;
* ``vact copy``, ``relu`` (``maximum(a, +0)``), ``clip`` (``minimum(maximum(a, lo), hi)`` with
  numpy's ``minimum``: ``a < b or a is NaN ? a : b``).

Each element reads its operands before it
writes its result, element by element in order: a destination that overlaps a source at another
offset sees the elements already written (the functional simulator reads every operand first).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from accelml.hdl.fp32 import F32Add, ScaledIntToF32
from accelml.hdl.isa import Space

from .layouts import check_config
from .quantize import quantize_block
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
    })


def _product(m: Module, a, b, name: str):
    """``to_internal(a * b)`` of two binary32 bit patterns (``bfp.mfu_mul``): (bits, overflow).

    The exact product ``sig_a * sig_b * 2**(e2_a + e2_b)`` (subnormal operands included) goes
    through ``ScaledIntToF32``; an infinite or NaN operand makes the product overflow, as the
    definition's float64 product (infinity or NaN) does."""
    parts = []
    for x in (a, b):
        biased = x[23:31]
        parts.append((Cat(x[:23], biased != 0), Mux(biased == 0, -149, biased - 150), biased == 0xFF))
    (sa, ea, fa), (sb, eb, fb) = parts
    conv = ScaledIntToF32(49, 11)
    m.submodules[name] = conv
    mag = sa * sb
    m.d.comb += [conv.d.eq(Mux(a[31] ^ b[31], -mag, mag)), conv.s.eq(ea + eb)]
    return conv.result, conv.overflow | fa | fb


def _is_nan(x):
    return (x[23:31] == 0xFF) & (x[:23] != 0)


def _key(x):
    """An integer ordered as the binary32 values (-0 and +0 equal)."""
    mag = x[:31]
    return Mux(x[31], -mag, mag)


def f32_gt(a, b):
    """IEEE ``a > b`` of binary32 bit patterns (false with a NaN)."""
    return ~_is_nan(a) & ~_is_nan(b) & (_key(a) > _key(b))


def np_maximum(a, b):
    return Mux(f32_gt(a, b) | _is_nan(a), a, b)


def np_minimum(a, b):
    return Mux(f32_gt(b, a) | _is_nan(a), a, b)


class Mfu(wiring.Component):
    def __init__(self, cfg):
        self.cfg = check_config(cfg, "Mfu")
        super().__init__({
            "cmd": In(stream.Signature(mfu_cmd_layout())),
            "done": Out(stream.Signature(ErrorCode)),
            "vrf": Out(file_port_signature(cfg, Space.VRF)),
            "fvrf": Out(file_port_signature(cfg, Space.FVRF)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        from accelml.hdl.isa import Act, VecOp

        m = Module()
        cfg = self.cfg
        n, mbits, ebits = cfg.native_dim, cfg.mantissa_bits, cfg.exponent_bits
        c = Signal(mfu_cmd_layout())
        i = Signal(16)
        j = Signal(12)  # index into the second operand (i modulo the period)
        a_val = Signal(32 * n)
        code = Signal(ErrorCode)

        # lanes: dequantisation, add, max, activation
        src = self.fvrf.rdata.as_value()
        vec = self.vrf.rdata
        s_shape = ebits + 3
        deq_bits, deq_ovf = [], Const(0, 1)
        add_bits, add_ovf = [], Const(0, 1)
        max_bits, act_bits = [], []
        mul_bits, mul_ovf, lrelu_ovf = [], Const(0, 1), Const(0, 1)
        for k in range(n):
            conv = ScaledIntToF32(mbits + 1, s_shape)
            m.submodules[f"deq{k}"] = conv
            m.d.comb += [conv.d.eq(vec.mant[k]),
                         conv.s.eq(vec.exp - (cfg.exp_bias + mbits - 1))]
            deq_bits.append(conv.result)
            deq_ovf = deq_ovf | conv.overflow
            a = a_val[32 * k: 32 * (k + 1)]
            b = src[32 * k: 32 * (k + 1)]
            add = F32Add()
            m.submodules[f"add{k}"] = add
            m.d.comb += [add.a.eq(a), add.b.eq(Mux(c.fn == VecOp.SUB.value, b ^ (1 << 31), b))]
            add_bits.append(add.result)
            add_ovf = add_ovf | add.overflow
            max_bits.append(np_maximum(a, b))
            x = src[32 * k: 32 * (k + 1)]
            is_vact = c.op == MfuOp.VACT
            prod, povf = _product(m, Mux(is_vact, x, a), Mux(is_vact, c.alpha, b), f"mul{k}")
            mul_bits.append(prod)
            mul_ovf = mul_ovf | povf
            negative = x[31] & (x[:31] != 0) & ~_is_nan(x)  # x < 0 (not -0, not NaN)
            lrelu_ovf = lrelu_ovf | (povf & negative)
            act = Signal(32, name=f"act{k}")
            with m.Switch(c.fn):
                with m.Case(Act.RELU.value):
                    m.d.comb += act.eq(np_maximum(x, Const(0, 32)))
                with m.Case(Act.CLIP.value):
                    m.d.comb += act.eq(np_minimum(np_maximum(x, c.clip_lo), c.clip_hi))
                with m.Case(Act.LRELU.value):  # x < 0 takes the product
                    m.d.comb += act.eq(Mux(negative, prod, x))
                with m.Default():
                    m.d.comb += act.eq(x)
            act_bits.append(act)
        result = Signal(32 * n)
        overflow = Signal()
        with m.Switch(c.op):
            with m.Case(MfuOp.DEQ):
                m.d.comb += [result.eq(Cat(*deq_bits)), overflow.eq(deq_ovf)]
            with m.Case(MfuOp.VACT):
                # leaky ReLU multiplies only negative lanes: only their products can overflow
                m.d.comb += [result.eq(Cat(*act_bits)), overflow.eq((c.fn == Act.LRELU.value) & lrelu_ovf)]
            with m.Case(MfuOp.VOP):
                with m.If(c.fn == VecOp.MAX.value):
                    m.d.comb += result.eq(Cat(*max_bits))
                with m.Elif(c.fn == VecOp.MUL.value):
                    m.d.comb += [result.eq(Cat(*mul_bits)), overflow.eq(mul_ovf)]
                with m.Else():
                    m.d.comb += [result.eq(Cat(*add_bits)), overflow.eq(add_ovf)]

        qbits, qnan = quantize_block(m, cfg, src)
        m.d.comb += [self.fvrf.waddr.eq(c.dst + i), self.fvrf.wdata.eq(result),
                     self.vrf.waddr.eq(c.dst + i), self.vrf.wdata.eq(qbits)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [c.eq(self.cmd.payload), i.eq(0), j.eq(0), code.eq(ErrorCode.NONE)]
                    m.next = "READ_A"
            with m.State("READ_A"):
                m.d.comb += [self.busy.eq(1), self.vrf.raddr.eq(c.src_a + i), self.fvrf.raddr.eq(c.src_a + i)]
                with m.If(c.op == MfuOp.VOP):
                    m.next = "READ_B"
                with m.Else():
                    m.next = "WRITE"
            with m.State("READ_B"):
                m.d.comb += [self.busy.eq(1), self.fvrf.raddr.eq(c.src_b + j)]
                m.d.sync += a_val.eq(src)
                m.next = "WRITE"
            with m.State("WRITE"):  # the source's data is on the read port now
                m.d.comb += self.busy.eq(1)
                with m.If((c.op == MfuOp.QNT) & qnan):
                    m.d.sync += code.eq(ErrorCode.NAN)
                    m.next = "DONE"
                with m.Elif(overflow & (c.op != MfuOp.QNT)):
                    m.d.sync += code.eq(ErrorCode.OVERFLOW)
                    m.next = "DONE"
                with m.Else():
                    m.d.comb += [self.fvrf.we.eq(c.op != MfuOp.QNT), self.vrf.we.eq(c.op == MfuOp.QNT)]
                    m.d.sync += [i.eq(i + 1), j.eq(Mux((c.period != 0) & (j + 1 == c.period), 0, j + 1))]
                    with m.If(i + 1 == c.count):
                        m.next = "DONE"
                    with m.Else():
                        m.next = "READ_A"
            with m.State("DONE"):
                report_done(m, self.done, code)
        return m
