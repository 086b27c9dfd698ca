"""The multi-function unit (MFU) datapath: ``deq``, ``qnt``, ``vop`` and ``vact`` as stream components.

Each unit is a ``wiring.Component`` parametrised by an :class:`EngineConfig` with one input stream
``i`` and one output stream ``o``. A transfer (a *beat*) carries ``W = cfg.mfu_width`` N-vectors
(*slots*) and a ``live`` mask of W bits: the engine sends a partial last beat with the unused slots
dead. Every unit takes one beat per cycle, so the MFU moves W vectors per cycle (the engine's MFU,
``hdl/engine/mfu.py``, feeds it a group of consecutive vectors per cycle; ``sim.cycles.mfu_cycles``).

Arithmetic, bit for bit that of ``accelml.sim.bfp`` (docs/numerics.md):

* :class:`Dequantise`: BFP vector -> binary32, ``to_internal(m * 2**(x - (M - 1)))``.
* :class:`Quantise`: binary32 vector -> BFP, ``bfp.quantize`` of one block (block maximum,
  exponent bump, clamp, RNE, saturation; +-Inf saturates like the largest finite value).
* :class:`VectorOp`: ``isa.VecOp`` add, mul, max, sub of two binary32 vectors.
* :class:`Activation`: ``isa.Act`` copy, relu, clip (``clip_lo``/``clip_hi``), leaky relu
  (``alpha``): the constants are binary32 bit patterns on plain input ports, sampled with each
  accepted beat.

Formats on the streams: a BFP vector is ``bfp_vector_layout(cfg)``, the VRF's format: N
sign-magnitude elements (``mag`` M bits, ``sign``) and the biased E-bit exponent field ``x + bias``.
A binary32 vector is N bit patterns. The float operations are those of ``accelml.hdl.fp32``
(shared with the tile engine).

Errors: each output beat has an ``error`` bit, set exactly when a live slot meets what the golden
model raises ``NumericsError`` for: a result beyond the largest binary32 or an Inf or NaN operand
of add, sub or mul (the definition's sum or product is then not finite), the same for a negative
element's leaky-relu product, a NaN in ``qnt``'s input; and for the reserved all-ones exponent
field in ``deq``'s input (refused when loaded from memory). ``max``, ``copy``, ``relu`` and
``clip`` never fail: they pass a NaN or an infinity through as numpy's ``maximum``/``minimum``
do (a NaN operand is the result; of two equal zeros the second). The values of an erroneous beat
are unspecified. Operands are otherwise any binary32 pattern; a denormal operand of add or sub
reads as zero (the internal format holds none), one of mul or leaky relu is taken exactly.

Pipeline: a stalling pipeline of ``unit.latency`` registers (input, [qnt: block exponent], output);
it advances whenever the output register is empty or being taken, so with ``o.ready`` high it takes
a beat every cycle and a result leaves ``latency`` cycles after its beat is accepted. Data registers
load only with a valid beat and hold otherwise (operand isolation, as in the tile engine); a
payload is defined only while its ``valid`` is high.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import EngineConfig
from .errors import ConfigError
from .fp32 import F32Add, F32Mul, ScaledIntToF32, normalize
from .isa import Act, VecOp

__all__ = [
    "MAX_LANES", "bfp_vector_layout", "f32_vector_layout", "beat_layout", "result_layout",
    "Dequantise", "Quantise", "VectorOp", "Activation", "Mfu", "UNITS",
]

# Binary32 lanes (mfu_width x native_dim) one unit instantiates; beyond this the design is
# impractically large for any device the presets name.
MAX_LANES = 1024
_FLT_MAX_MAG = 0x7F7F_FFFF


def check_cfg(cfg, unit: str) -> EngineConfig:
    if not isinstance(cfg, EngineConfig):
        raise TypeError(f"{unit} cfg must be an EngineConfig, got {type(cfg).__name__}")
    if cfg.internal_format != "fp32-ftz":
        raise ConfigError(f"{unit} implements EngineConfig.internal_format 'fp32-ftz', got {cfg.internal_format!r}")
    lanes = cfg.mfu_width * cfg.native_dim
    if lanes > MAX_LANES:
        raise ConfigError(
            f"{unit}: EngineConfig.mfu_width={cfg.mfu_width} times native_dim={cfg.native_dim} is {lanes} "
            f"binary32 lanes, more than the {MAX_LANES} supported")
    return cfg


def bfp_vector_layout(cfg: EngineConfig) -> data.StructLayout:
    """One BFP N-vector as the VRF holds it: sign-magnitude elements and the biased exponent field."""
    element = data.StructLayout({"mag": unsigned(cfg.mantissa_bits), "sign": 1})
    return data.StructLayout({"mant": data.ArrayLayout(element, cfg.native_dim), "exp": unsigned(cfg.exponent_bits)})


def f32_vector_layout(cfg: EngineConfig) -> data.ArrayLayout:
    """One internal-format N-vector: binary32 bit patterns."""
    return data.ArrayLayout(32, cfg.native_dim)


def beat_layout(cfg: EngineConfig, operands: dict, **fields) -> data.StructLayout:
    """An input beat: each operand an array of ``mfu_width`` vectors, ``live`` and extra fields."""
    w = cfg.mfu_width
    return data.StructLayout({**{k: data.ArrayLayout(v, w) for k, v in operands.items()}, **fields, "live": w})


def result_layout(cfg: EngineConfig, vector) -> data.StructLayout:
    """An output beat: ``vec`` (``mfu_width`` vectors), the input's ``live`` mask and ``error``."""
    w = cfg.mfu_width
    return data.StructLayout({"vec": data.ArrayLayout(vector, w), "live": w, "error": 1})


def is_special(bits):
    """Inf or NaN: the all-ones exponent field."""
    return bits[23:31] == 0xFF


def order_key(m: Module, bits, name: str):
    """An unsigned key ordering binary32 values as IEEE comparison does (non-NaN; -0 == +0)."""
    key = Signal(32, name=name)
    zero = bits[:31] == 0
    m.d.comb += key.eq(Mux(zero, 1 << 31, Mux(bits[31], ~bits, Cat(bits[:31], 1))))
    return key


def less(m: Module, a, b, name: str):
    """``a < b`` in IEEE order for non-NaN ``a`` and ``b``."""
    return order_key(m, a, f"{name}_ka") < order_key(m, b, f"{name}_kb")


def is_nan(bits):
    return is_special(bits) & (bits[:23] != 0)


def np_maximum(m: Module, a, b, name: str):
    """numpy's ``maximum``: ``a > b or a is NaN ? a : b`` (a NaN operand is the result; ties give ``b``)."""
    return Mux(is_nan(a) | (~is_nan(b) & less(m, b, a, name)), a, b)


def np_minimum(m: Module, a, b, name: str):
    """numpy's ``minimum``: ``a < b or a is NaN ? a : b``."""
    return Mux(is_nan(a) | (~is_nan(b) & less(m, a, b, name)), a, b)


class _Unit(wiring.Component):
    """A stalling pipeline around one combinational datapath (see the module docstring)."""

    # Cycles from an accepted beat to its result on ``o`` (with ``o.ready`` high): the input and
    # output registers and ``latency - 2`` registers inside the datapath.
    latency = 2

    def __init__(self, cfg: EngineConfig, beat: data.StructLayout, result: data.StructLayout, **ports):
        self.cfg = check_cfg(cfg, type(self).__name__)
        super().__init__({"i": In(stream.Signature(beat)), "o": Out(stream.Signature(result)), **ports})

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]

        def reg(value, name: str, load=None):
            """``value`` registered, moving with the pipeline; data (``load`` given: the valid of
            the stage it comes from) loads only with a valid beat and holds otherwise."""
            shape = value.shape() if isinstance(value, data.View) else Value.cast(value).shape()
            r = Signal(shape, name=name)
            with m.If(advance if load is None else advance & load):
                m.d.sync += r.eq(value)
            return r

        payload = reg(self.i.payload, "in", self.i.valid)
        valid = reg(self.i.valid, "in_valid")
        sampled = {k: reg(getattr(self, k), f"in_{k}", self.i.valid) for k in self.sampled_ports()}
        out = Signal(self.o.payload.shape(), name="out")
        first_valid = valid  # the datapath's registers load from the input stage
        live = self.datapath(m, payload, sampled, out, lambda value, name: reg(value, name, first_valid))
        for k in range(self.latency - 2):
            valid = reg(valid, f"valid_{k}")
        m.d.comb += out.live.eq(live)
        with m.If(advance):
            m.d.sync += self.o.valid.eq(valid)
        with m.If(advance & valid):
            m.d.sync += self.o.payload.eq(out)
        return m

    def sampled_ports(self) -> tuple[str, ...]:
        return ()

    def datapath(self, m: Module, p, sampled: dict, out, reg):
        """Drive ``out.vec`` and ``out.error`` from the registered beat ``p``; return the live mask
        (delayed like the data by any ``reg`` stages used)."""
        raise NotImplementedError


def _any(bits) -> object:
    return Cat(*bits).any() if bits else Const(0, 1)


class Dequantise(_Unit):
    """``deq``: BFP vectors -> binary32 (``bfp.dequantize_internal``). Members: ``i``
    (``vec`` of ``bfp_vector_layout``, ``live``), ``o`` (``result_layout`` of binary32 vectors)."""

    def __init__(self, cfg: EngineConfig):
        super().__init__(cfg, *self.layouts(check_cfg(cfg, "Dequantise")))

    @staticmethod
    def layouts(cfg: EngineConfig):
        """(input beat, output beat) layouts."""
        return beat_layout(cfg, {"vec": bfp_vector_layout(cfg)}), result_layout(cfg, f32_vector_layout(cfg))

    def datapath(self, m, p, sampled, out, reg):
        cfg = self.cfg
        m_bits = cfg.mantissa_bits
        s_lo = -cfg.exp_bias - (m_bits - 1)
        s_width = Shape.cast(range(s_lo, (1 << cfg.exponent_bits) + s_lo)).width
        errors = []
        for w in range(cfg.mfu_width):
            vec = p.vec[w]
            s = Signal(signed(s_width), name=f"s_{w}")
            m.d.comb += s.eq(vec.exp + s_lo)
            errors.append(p.live[w] & (vec.exp == (1 << cfg.exponent_bits) - 1))
            for i in range(cfg.native_dim):
                el = vec.mant[i]
                cvt = m.submodules[f"cvt_{w}_{i}"] = ScaledIntToF32(m_bits + 1, s_width)
                m.d.comb += [cvt.d.eq(Mux(el.sign, -el.mag, el.mag)), cvt.s.eq(s),
                             out.vec[w][i].eq(cvt.result)]
                errors.append(p.live[w] & cvt.overflow)  # never set: |m| * 2**s <= the largest binary32
        m.d.comb += out.error.eq(_any(errors))
        return p.live


class Quantise(_Unit):
    """``qnt``: binary32 vectors -> BFP (``bfp.quantize`` per block of N). Members: ``i`` (``vec``
    of binary32 vectors, ``live``), ``o`` (``result_layout`` of ``bfp_vector_layout``)."""

    latency = 3

    def __init__(self, cfg: EngineConfig):
        super().__init__(cfg, *self.layouts(check_cfg(cfg, "Quantise")))

    @staticmethod
    def layouts(cfg: EngineConfig):
        """(input beat, output beat) layouts."""
        return beat_layout(cfg, {"vec": f32_vector_layout(cfg)}), result_layout(cfg, bfp_vector_layout(cfg))

    def datapath(self, m, p, sampled, out, reg):
        cfg = self.cfg
        n = cfg.native_dim
        nan_errors = []
        stage = []
        for w in range(cfg.mfu_width):
            mags, signs = [], []
            for i in range(n):
                v = p.vec[w][i]
                mag = Signal(31, name=f"mag_{w}_{i}")
                # +-Inf saturates like the largest finite value; NaN is an error
                m.d.comb += mag.eq(Mux(is_special(v) & (v[:23] == 0), _FLT_MAX_MAG, v[:31]))
                nan_errors.append(p.live[w] & is_special(v) & (v[:23] != 0))
                mags.append(mag)
                signs.append(v[31])
            x = self._block_exponent(m, mags, f"x_{w}")
            stage.append((reg(Cat(*mags), f"mags_{w}"), reg(Cat(*signs), f"signs_{w}"), reg(x, f"xr_{w}")))
        error = reg(_any(nan_errors), "nan")
        live = reg(p.live, "live")
        for w, (mags, signs, x) in enumerate(stage):
            vec = out.vec[w]
            m.d.comb += vec.exp.eq(x + cfg.exp_bias)
            for i in range(n):
                q = self._mantissa(m, mags[31 * i:31 * (i + 1)], x, f"q_{w}_{i}")
                m.d.comb += [vec.mant[i].mag.eq(q), vec.mant[i].sign.eq(signs[i] & (q != 0))]
        m.d.comb += out.error.eq(error)
        return live

    def _block_exponent(self, m, mags, name):
        """The shared exponent of a block from its magnitudes (31-bit patterns, ordered as integers)."""
        cfg = self.cfg
        m_bits = cfg.mantissa_bits
        level = list(mags)
        while len(level) > 1:
            level = [Mux(level[k] > level[k + 1], level[k], level[k + 1]) if k + 1 < len(level) else level[k]
                     for k in range(0, len(level), 2)]
        amax = Signal(31, name=f"{name}_amax")
        m.d.comb += amax.eq(level[0])
        e = amax[23:31]
        norm, lz = normalize(m, Cat(amax[:23], e != 0), f"{name}_n")
        # floor(log2 amax) = max(e, 1) - 127 - lz; bumped when the maximum rounds up to 2**M
        bump = norm[24 - m_bits:].all() & norm[23 - m_bits] if m_bits < 24 else Const(0, 1)
        x = Signal(signed(10), name=f"{name}_x")
        m.d.comb += x.eq(Mux(e == 0, 1, e) - 127 - lz + bump)
        clamped = Signal(signed(10), name=name)
        with m.If((amax == 0) | (x < cfg.exp_min)):
            m.d.comb += clamped.eq(cfg.exp_min)
        with m.Elif(x > cfg.exp_max):
            m.d.comb += clamped.eq(cfg.exp_max)
        with m.Else():
            m.d.comb += clamped.eq(x)
        return clamped

    def _mantissa(self, m, mag, x, name):
        """``min(RNE(|v| / 2**(x - (M - 1))), 2**M - 1)`` of one 31-bit magnitude."""
        m_bits = self.cfg.mantissa_bits
        e = mag[23:31]
        sig2 = Cat(Const(0, 1), mag[:23], e != 0)  # 2 * significand: |v| = sig2 * 2**(max(e, 1) - 151)
        # |v| / unit = sig2 * 2**-k2 with k2 = x - (M - 1) - (max(e, 1) - 151)
        k2 = Signal(signed(11), name=f"{name}_k")
        m.d.comb += k2.eq(x + (152 - m_bits) - Mux(e == 0, 1, e))
        frame_bits = 27  # a shift of 26 or more leaves less than half a unit of a 25-bit value
        shift = Signal(range(frame_bits + 1), name=f"{name}_sh")
        m.d.comb += shift.eq(Mux(k2 > frame_bits, frame_bits, k2[:ceil_bits(frame_bits)]))
        frame = Signal(frame_bits + 25, name=f"{name}_frame")
        m.d.comb += frame.eq(Cat(Const(0, frame_bits), sig2) >> shift)
        q = frame[frame_bits:]
        guard, sticky = frame[frame_bits - 1], frame[:frame_bits - 1].any()
        rounded = Signal(26, name=f"{name}_r")
        m.d.comb += rounded.eq(q + (guard & (sticky | q[0])))
        top = (1 << m_bits) - 1
        out = Signal(m_bits, name=name)
        m.d.comb += out.eq(Mux((k2 < 0) | (rounded > top), top, rounded))
        return out


def ceil_bits(value: int) -> int:
    return max(1, value.bit_length())


class VectorOp(_Unit):
    """``vop``: ``o = a (op) b`` lane by lane, ``op`` an ``isa.VecOp`` per beat. Members: ``i``
    (``a``, ``b``: binary32 vectors; ``op``; ``live``), ``o`` (binary32 ``result_layout``)."""

    def __init__(self, cfg: EngineConfig):
        super().__init__(cfg, *self.layouts(check_cfg(cfg, "VectorOp")))

    @staticmethod
    def layouts(cfg: EngineConfig):
        """(input beat, output beat) layouts."""
        f32 = f32_vector_layout(cfg)
        return beat_layout(cfg, {"a": f32, "b": f32}, op=VecOp), result_layout(cfg, f32)

    def datapath(self, m, p, sampled, out, reg):
        errors = []
        for w in range(self.cfg.mfu_width):
            for i in range(self.cfg.native_dim):
                a, b = p.a[w][i], p.b[w][i]
                add = m.submodules[f"add_{w}_{i}"] = F32Add()
                mul = m.submodules[f"mul_{w}_{i}"] = F32Mul()
                m.d.comb += [add.a.eq(a), add.b.eq(Cat(b[:31], b[31] ^ (p.op == VecOp.SUB))),
                             mul.a.eq(a), mul.b.eq(b)]
                r, overflow = out.vec[w][i], Signal(name=f"ovf_{w}_{i}")
                with m.Switch(p.op):
                    with m.Case(VecOp.ADD, VecOp.SUB):  # an Inf or NaN operand gives no finite sum
                        m.d.comb += [r.eq(add.result), overflow.eq(add.overflow | is_special(a) | is_special(b))]
                    with m.Case(VecOp.MUL):
                        m.d.comb += [r.eq(mul.result), overflow.eq(mul.overflow)]
                    with m.Case(VecOp.MAX):  # never an error: a NaN operand is the result
                        m.d.comb += r.eq(np_maximum(m, a, b, f"max_{w}_{i}"))
                errors.append(p.live[w] & overflow)
        m.d.comb += out.error.eq(_any(errors))
        return p.live


class Activation(_Unit):
    """``vact``: ``isa.Act`` copy / relu / clip / leaky relu lane by lane. Members: ``i`` (``x``:
    binary32 vectors; ``act``; ``live``), ``clip_lo``, ``clip_hi``, ``alpha`` (In(32), binary32,
    sampled with each accepted beat), ``o`` (binary32 ``result_layout``)."""

    def __init__(self, cfg: EngineConfig):
        super().__init__(cfg, *self.layouts(check_cfg(cfg, "Activation")),
                         clip_lo=In(32), clip_hi=In(32), alpha=In(32))

    @staticmethod
    def layouts(cfg: EngineConfig):
        """(input beat, output beat) layouts."""
        f32 = f32_vector_layout(cfg)
        return beat_layout(cfg, {"x": f32}, act=Act), result_layout(cfg, f32)

    def sampled_ports(self):
        return ("clip_lo", "clip_hi", "alpha")

    def datapath(self, m, p, sampled, out, reg):
        lo, hi, alpha = sampled["clip_lo"], sampled["clip_hi"], sampled["alpha"]
        errors = []
        for w in range(self.cfg.mfu_width):
            for i in range(self.cfg.native_dim):
                x = p.x[w][i]
                negative = x[31] & (x[:31] != 0) & ~is_nan(x)  # x < 0: not -0, not NaN
                mul = m.submodules[f"mul_{w}_{i}"] = F32Mul()
                m.d.comb += [mul.a.eq(x), mul.b.eq(alpha)]
                floor = Signal(32, name=f"floor_{w}_{i}")  # np.maximum(x, lo), then np.minimum(., hi)
                m.d.comb += floor.eq(np_maximum(m, x, lo, f"lo_{w}_{i}"))
                r, bad = out.vec[w][i], Signal(name=f"bad_{w}_{i}")
                with m.Switch(p.act):
                    with m.Case(Act.COPY):
                        m.d.comb += r.eq(x)
                    with m.Case(Act.RELU):
                        m.d.comb += r.eq(np_maximum(m, x, Const(0, 32), f"relu_{w}_{i}"))
                    with m.Case(Act.CLIP):
                        m.d.comb += r.eq(np_minimum(m, floor, hi, f"hi_{w}_{i}"))
                    with m.Case(Act.LRELU):  # only a negative element is multiplied, so only it can fail
                        m.d.comb += [r.eq(Mux(negative, mul.result, x)), bad.eq(negative & mul.overflow)]
                errors.append(p.live[w] & bad)
        m.d.comb += out.error.eq(_any(errors))
        return p.live


# Unit name (the instruction's mnemonic) -> component class.
UNITS: dict[str, type[_Unit]] = {"deq": Dequantise, "qnt": Quantise, "vop": VectorOp, "vact": Activation}


class Mfu(wiring.Component):
    """The four units side by side, one stream pair each: ``<unit>_i``/``<unit>_o`` for ``unit``
    in ``UNITS``, and ``vact``'s ``clip_lo``, ``clip_hi`` and ``alpha``. No logic of its own."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = check_cfg(cfg, "Mfu")
        members = {}
        for name, cls in UNITS.items():
            beat, result = cls.layouts(cfg)
            members[f"{name}_i"] = In(stream.Signature(beat))
            members[f"{name}_o"] = Out(stream.Signature(result))
        super().__init__({**members, "clip_lo": In(32), "clip_hi": In(32), "alpha": In(32)})

    def elaborate(self, platform):
        m = Module()
        for name, cls in UNITS.items():
            unit = m.submodules[name] = cls(self.cfg)
            wiring.connect(m, wiring.flipped(getattr(self, f"{name}_i")), unit.i)
            wiring.connect(m, unit.o, wiring.flipped(getattr(self, f"{name}_o")))
        act = m.submodules.vact
        m.d.comb += [act.clip_lo.eq(self.clip_lo), act.clip_hi.eq(self.clip_hi), act.alpha.eq(self.alpha)]
        return m
