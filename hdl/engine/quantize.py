"""``qnt`` in hardware: N binary32 values -> one BFP vector, exactly ``accelml.sim.bfp.quantize``.

For a block with largest magnitude ``amax`` (an infinity counts as the largest binary32; a NaN
sets ``nan`` and the result is unspecified): ``x = floor(log2 amax)``, plus one when
``rint(amax * 2**(M-1-x)) >= 2**M``, clipped to ``[exp_min, exp_max]`` (``exp_min`` for an
all-zero block); each mantissa is ``sign * min(rint(|v| * 2**(M-1-x)), 2**M - 1)``, ``rint``
rounding half to even. Every value is taken as ``sig * 2**e2`` (``sig`` the 24-bit significand,
subnormals included), so the scaling is one rounding right shift of ``sig``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed

__all__ = ["quantize_block"]

_FLT_MAX = 0x7F7FFFFF


def _split(x):
    """(sig, e2) with |x| = sig * 2**e2 (x not NaN; an infinity saturates to the largest binary32)."""
    mag = Mux(x[23:31] == 0xFF, _FLT_MAX, x[:31])
    biased = mag[23:31]
    sig = Cat(mag[:23], biased != 0)
    e2 = Mux(biased == 0, -149, biased - 150)
    return mag, sig, e2


def _rne_shift(m: Module, sig, r, name: str):
    """rint(sig * 2**-r) for r >= 0; for r < 0 (a left shift) ``big`` is set and the value unspecified."""
    rc = Signal(range(64), name=f"{name}_r")
    m.d.comb += rc.eq(Mux(r > 63, 63, Mux(r < 0, 0, r)))
    wide = Signal(88, name=f"{name}_w")
    m.d.comb += wide.eq(Cat(Const(0, 32), sig) >> rc)
    q = wide[32:]
    half = wide[31]
    sticky = wide[:31] != 0
    out = Signal(57, name=f"{name}_q")
    m.d.comb += out.eq(q + (half & (sticky | q[0])))
    big = (r < 0) & (sig != 0)
    return out, big


def quantize_block(m: Module, cfg, values, name: str = "qnt"):
    """``values`` (N binary32 bit patterns, ``32 * N`` bits) -> (VRF entry bits, nan)."""
    n, mb = cfg.native_dim, cfg.mantissa_bits
    lanes = [values[32 * k: 32 * (k + 1)] for k in range(n)]
    nan = Const(0, 1)
    amax = Signal(31, name=f"{name}_amax")
    best = Const(0, 31)
    splits = []
    for x in lanes:
        nan = nan | ((x[23:31] == 0xFF) & (x[:23] != 0))
        mag, sig, e2 = _split(x)
        splits.append((sig, e2))
        best = Mux(mag > best, mag, best)
    m.d.comb += amax.eq(best)
    _, asig, ae2 = _split(amax)
    # floor(log2 amax): e2 plus the index of the significand's top bit
    top_bit = Signal(range(24), name=f"{name}_msb")
    for i in range(24):
        with m.If(asig[i]):
            m.d.comb += top_bit.eq(i)
    x0 = Signal(signed(12), name=f"{name}_x0")
    m.d.comb += x0.eq(ae2 + top_bit)
    top, top_big = _rne_shift(m, asig, x0 - (mb - 1) - ae2, f"{name}_top")
    x1 = Signal(signed(12), name=f"{name}_x1")
    m.d.comb += x1.eq(x0 + ((top >= (1 << mb)) & ~top_big))  # a left shift (subnormal amax) is exact
    xexp = Signal(signed(12), name=f"{name}_x")
    m.d.comb += xexp.eq(Mux(amax == 0, cfg.exp_min,
                            Mux(x1 < cfg.exp_min, cfg.exp_min, Mux(x1 > cfg.exp_max, cfg.exp_max, x1))))
    mants = []
    limit = (1 << mb) - 1
    for k, (sig, e2) in enumerate(splits):
        q, big = _rne_shift(m, sig, xexp - (mb - 1) - e2, f"{name}_{k}")
        mag = Signal(mb, name=f"{name}_m{k}")
        m.d.comb += mag.eq(Mux(big | (q > limit), limit, q))
        mants.append(Mux(lanes[k][31], -mag, mag)[:mb + 1])
    field = (xexp + cfg.exp_bias)[:cfg.exponent_bits]
    return Cat(*mants, field), nan
