"""The internal number format in hardware: binary32 with round-to-nearest-even and flush-to-zero.

Every component here implements ``accelml.sim.bfp.to_internal`` bit for bit (see its docstring and
docs/numerics.md): the exact result is rounded to a 24-bit significand (RNE) with an unbounded
exponent; a rounded magnitude below 2**-126 becomes +0; a rounded magnitude above the largest
binary32 sets ``overflow`` (the ``result`` bits are then unspecified). -0 is never produced.
Inputs of ``F32Add`` are never denormal, infinite or NaN (an input with a zero exponent field is
read as zero); ``F32Mul`` takes any binary32 operand (see its docstring).

* :class:`ScaledIntToF32` converts ``d * 2**s`` (``d`` a signed integer, such as a block dot
  product, ``s`` a signed exponent) to binary32.
* :class:`F32Add` adds two binary32 values.
* :class:`F32Mul` multiplies two binary32 values.

All three are combinational and flag an overflow per operation; the engine that uses them puts
registers between them and keeps the flag sticky over an accumulation.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["ScaledIntToF32", "F32Add", "F32Mul", "normalize"]

_SIG = 24  # binary32 significand bits, hidden bit included
_BIAS = 127
_EMAX_BIASED = 254


def normalize(m: Module, value, name: str):
    """Shift ``value`` left until its top bit is set; return ``(shifted, count)``.

    Log-depth (one 2:1 multiplexer level per bit of ``count``). For ``value == 0`` the shifted
    value is 0 and ``count`` is meaningless.
    """
    width = len(value)
    levels = ceil_log2(width) if width > 1 else 0
    cur = value
    count_bits = []
    for level in reversed(range(levels)):
        k = 1 << level
        zero_top = Signal(name=f"{name}_z{k}")
        nxt = Signal(width, name=f"{name}_s{k}")
        m.d.comb += [
            zero_top.eq(cur[width - k:] == 0),
            nxt.eq(Mux(zero_top, cur << k, cur)),
        ]
        count_bits.append(zero_top)
        cur = nxt
    count = Signal(max(1, levels), name=f"{name}_lz")
    if count_bits:
        m.d.comb += count.eq(Cat(*reversed(count_bits)))
    return cur, count


def _round_rne(m: Module, norm, name: str):
    """Round a normalised significand (top bit set, at least 24 bits) to 24 bits, RNE.

    Returns ``(frac23, carry)``: the 23 stored fraction bits and whether rounding carried into a
    new leading bit (the significand is then exactly 1.0 and the exponent grows by one).
    """
    width = len(norm)
    if width <= _SIG:
        frac = Signal(_SIG - 1, name=f"{name}_frac")
        m.d.comb += frac.eq(Cat(Const(0, _SIG - width), norm)[:_SIG - 1])
        return frac, Const(0, 1)
    keep = norm[width - _SIG:]
    guard = norm[width - _SIG - 1]
    sticky = norm[:width - _SIG - 1].any() if width - _SIG - 1 > 0 else Const(0, 1)
    rounded = Signal(_SIG + 1, name=f"{name}_rounded")
    m.d.comb += rounded.eq(keep + (guard & (sticky | keep[0])))
    frac = Signal(_SIG - 1, name=f"{name}_frac")
    carry = Signal(name=f"{name}_carry")
    # On a carry the rounded significand is 2**24: the fraction bits are 0 either way.
    m.d.comb += [frac.eq(rounded[:_SIG - 1]), carry.eq(rounded[_SIG])]
    return frac, carry


def _pack(m: Module, result, overflow, *, sign, biased_exp, frac, zero):
    """Drive ``result``/``overflow`` from a rounded value: FTZ below 2**-126, +0 for zero."""
    flush = Signal()
    m.d.comb += [
        flush.eq(zero | (biased_exp < 1)),
        overflow.eq(~zero & (biased_exp > _EMAX_BIASED)),
        result.eq(Mux(flush, 0, Cat(frac, biased_exp[:8], sign))),
    ]


class ScaledIntToF32(wiring.Component):
    """``result = to_internal(d * 2**s)``: a signed integer times a power of two, to binary32.

    Parameters
    ----------
    d_width : int
        Width of the signed integer ``d`` (for a block dot product, ``2M + log2(N) + 1``).
        Wider than 24 bits means ``d`` may need rounding (RNE).
    s_width : int
        Width of the signed exponent ``s``.

    Members
    -------
    d : In(signed(d_width))
    s : In(signed(s_width))
    result : Out(32)
        binary32 bit pattern.
    overflow : Out(1)
        The rounded magnitude exceeds the largest binary32 (``result`` is then unspecified).
    """

    def __init__(self, d_width: int, s_width: int):
        for name, value in (("d_width", d_width), ("s_width", s_width)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ScaledIntToF32.{name} must be an integer, got {value!r}")
        if not 2 <= d_width <= 128:
            raise ValueError(f"ScaledIntToF32.d_width must be in [2, 128], got {d_width}")
        if not 2 <= s_width <= 32:
            raise ValueError(f"ScaledIntToF32.s_width must be in [2, 32], got {s_width}")
        self.d_width = d_width
        self.s_width = s_width
        super().__init__({
            "d": In(signed(d_width)),
            "s": In(signed(s_width)),
            "result": Out(32),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.d_width
        sign = self.d[-1]
        mag = Signal(unsigned(w))  # |d|; -2**(w-1) still fits unsigned
        m.d.comb += mag.eq(Mux(sign, -self.d, self.d))
        norm, lz = normalize(m, mag, "cvt")
        frac, carry = _round_rne(m, norm, "cvt")
        # Leading bit of |d| at position w-1-lz: value = 1.f * 2**(w - 1 - lz + s).
        exp = Signal(signed(max(self.s_width, ceil_log2(w) + 1) + 3))
        m.d.comb += exp.eq((w - 1 + _BIAS) - lz + self.s + carry)
        _pack(m, self.result, self.overflow, sign=sign, biased_exp=exp, frac=frac, zero=mag == 0)
        return m


class F32Add(wiring.Component):
    """``result = to_internal(a + b)`` for binary32 ``a`` and ``b`` (normal numbers or zeros).

    Members
    -------
    a, b : In(32)
    result : Out(32)
    overflow : Out(1)
        The rounded magnitude exceeds the largest binary32 (``result`` is then unspecified).
    """

    # Working precision: 24-bit significands plus guard, round and sticky bits.
    _EXTRA = 3

    def __init__(self):
        super().__init__({"a": In(32), "b": In(32), "result": Out(32), "overflow": Out(1)})

    def elaborate(self, platform):
        m = Module()
        a, b = self.a, self.b
        x_ = Signal(32)  # larger magnitude
        y_ = Signal(32)
        swap = Signal()
        m.d.comb += [
            swap.eq(b[:31] > a[:31]),
            x_.eq(Mux(swap, b, a)),
            y_.eq(Mux(swap, a, b)),
        ]
        ex, ey = x_[23:31], y_[23:31]
        mx = Signal(_SIG)
        my = Signal(_SIG)
        m.d.comb += [
            mx.eq(Mux(ex == 0, 0, Cat(x_[:23], 1))),
            my.eq(Mux(ey == 0, 0, Cat(y_[:23], 1))),
        ]
        width = _SIG + self._EXTRA  # 27: significand, guard, round, sticky
        diff = Signal(8)
        m.d.comb += diff.eq(ex - ey)
        shift = Signal(range(width + 1))
        m.d.comb += shift.eq(Mux(diff > width, width, diff))
        # Align y: the shifted-out bits land below bit `width` of this double-width frame.
        frame = Signal(2 * width)
        m.d.comb += frame.eq(Cat(Const(0, width), Const(0, self._EXTRA), my) >> shift)
        aligned = Signal(width)
        m.d.comb += aligned.eq(Cat(frame[width] | frame[:width].any(), frame[width + 1:]))
        ax = Cat(Const(0, self._EXTRA), mx)
        total = Signal(width + 1)  # one carry bit
        with m.If(x_[31] ^ y_[31]):
            m.d.comb += total.eq(ax - aligned)  # |x| >= |y|: never negative
        with m.Else():
            m.d.comb += total.eq(ax + aligned)
        norm, lz = normalize(m, total, "add")
        frac, carry = _round_rne(m, norm, "add")
        # Bit `width` of `total` has weight 2**(ex + 1 - bias); its leading one is lz bits lower.
        exp = Signal(signed(12))
        m.d.comb += exp.eq(ex + 1 - lz + carry)
        _pack(m, self.result, self.overflow, sign=x_[31], biased_exp=exp, frac=frac,
              zero=total == 0)
        return m


class F32Mul(wiring.Component):
    """``result = to_internal(a * b)`` for any binary32 ``a`` and ``b`` (``bfp.mfu_mul``).

    The exact product ``sig_a * sig_b * 2**(e2_a + e2_b)`` (subnormal operands taken exactly, as
    the definition's float64 product takes them: a leaky-ReLU ``alpha`` may be one) is rounded once
    by :class:`ScaledIntToF32`. An infinite or NaN operand sets ``overflow``, as the definition's
    float64 product (an infinity or a NaN) is refused.

    Members
    -------
    a, b : In(32)
    result : Out(32)
    overflow : Out(1)
        The rounded magnitude exceeds the largest binary32, or an operand is Inf or NaN
        (``result`` is then unspecified).
    """

    def __init__(self):
        super().__init__({"a": In(32), "b": In(32), "result": Out(32), "overflow": Out(1)})

    def elaborate(self, platform):
        m = Module()
        parts = []
        for x in (self.a, self.b):
            biased = x[23:31]
            # |x| = sig * 2**e2, the hidden bit only for a normal number
            parts.append((Cat(x[:23], biased != 0), Mux(biased == 0, -149, biased - 150), biased == 0xFF))
        (sa, ea, fa), (sb, eb, fb) = parts
        conv = m.submodules.cvt = ScaledIntToF32(2 * _SIG + 1, 11)
        mag = Signal(2 * _SIG)
        m.d.comb += [mag.eq(sa * sb), conv.d.eq(Mux(self.a[31] ^ self.b[31], -mag, mag)), conv.s.eq(ea + eb),
                     self.result.eq(conv.result), self.overflow.eq(conv.overflow | fa | fb)]
        return m
