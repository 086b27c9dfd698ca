"""Stimulus and scoreboard for the multi-function unit, shared by the cocotb module and pytest.

A :class:`Beat` is one input transfer of a unit (``hdl/mfu.py``): ``mfu_width`` slots, a ``live``
mask, the op (``vop``/``vact``) and the activation constants. The scoreboard is the golden model
(``accelml.sim.bfp``) applied slot by slot; a slot is erroneous when the golden model raises
``NumericsError``, or (``deq``) when it holds the reserved exponent field that a load refuses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import NumericsError
from accelml.hdl.isa import Act, VecOp
from accelml.hdl.mfu import UNITS
from accelml.sim import bfp, rtl

POS_INF, NEG_INF, FLT_MAX = 0x7F80_0000, 0xFF80_0000, 0x7F7F_FFFF


@dataclass
class Beat:
    slots: list  # per slot: deq (mags, signs, exp field); qnt [bits]; vop ([a], [b]); vact [x]
    live: list[bool]
    op: int = 0  # VecOp or Act value
    params: dict = field(default_factory=lambda: {"clip_lo": 0, "clip_hi": 0, "alpha": 0})


def f32(bits) -> np.ndarray:
    return np.asarray(bits, np.uint32).view(np.float32)


def bits_of(values) -> list[int]:
    return [int(b) for b in np.asarray(values, np.float32).reshape(-1).view(np.uint32)]


def special(b: int) -> bool:
    return (b >> 23) & 0xFF == 0xFF


# -- random binary32 values ------------------------------------------------------------------

def normal(rng: random.Random, lo: int = 1, hi: int = 254, sign: int | None = None) -> int:
    s = rng.getrandbits(1) if sign is None else sign
    return s << 31 | rng.randint(lo, hi) << 23 | rng.getrandbits(23)


def internal(rng: random.Random) -> int:
    """An internal-format value (+0 or normal; never -0, whose order numpy's maximum leaves to its
    SIMD path), with the range's ends well represented."""
    r = rng.random()
    if r < 0.08:
        return 0
    if r < 0.25:
        return normal(rng, 1, 6)
    if r < 0.4:
        return normal(rng, 248, 254)
    if r < 0.5:  # short significands: exact sums, cancellations, ties
        return rng.getrandbits(1) << 31 | rng.randint(100, 150) << 23 | rng.getrandbits(4) << 19
    return normal(rng)


def special_value(rng: random.Random) -> int:
    return rng.choice((POS_INF, NEG_INF, 0x7FC0_0000, 0xFF80_0001, 0x7F80_0000 | rng.randint(1, (1 << 23) - 1)))


# -- stimulus per unit -----------------------------------------------------------------------

def _live(rng: random.Random, w: int) -> list[bool]:
    live = [True] * w
    if w > 1 and rng.random() < 0.3:
        live = [rng.random() < 0.6 for _ in range(w)]
    return live


def deq_slot(cfg: EngineConfig, rng: random.Random, style: str):
    n, m, e = cfg.native_dim, cfg.mantissa_bits, cfg.exponent_bits
    top = (1 << m) - 1
    fields = {"low": rng.randint(0, 3), "high": rng.randint((1 << e) - 4, (1 << e) - 2),
              "mid": rng.randint(0, (1 << e) - 2), "reserved": (1 << e) - 1}
    exp = fields[style]
    mags = [rng.choice((0, 1, top, rng.randint(0, top))) for _ in range(n)]
    signs = [rng.getrandbits(1) for _ in range(n)]
    return mags, signs, exp


def qnt_slot(cfg: EngineConfig, rng: random.Random, style: str) -> list[int]:
    n, m = cfg.native_dim, cfg.mantissa_bits
    if style == "random":
        e0 = rng.randint(1, 254)
        return [0 if rng.random() < 0.1 else normal(rng, max(1, e0 - rng.randint(0, 30)), e0) for _ in range(n)]
    if style == "zeros":
        return [rng.choice((0, 0x8000_0000)) for _ in range(n)]
    if style == "tiny":  # denormals and the bottom of the normal range
        return [rng.choice((rng.getrandbits(1) << 31 | rng.randint(1, (1 << 23) - 1), normal(rng, 1, 3), 0))
                for _ in range(n)]
    if style == "huge":  # saturation: the largest values and infinities
        return [rng.choice((FLT_MAX, normal(rng, 250, 254), POS_INF, NEG_INF, normal(rng))) for _ in range(n)]
    if style == "nan":
        v = qnt_slot(cfg, rng, "random")
        v[rng.randrange(n)] = rng.choice((0x7FC0_0000, 0xFF80_0001, 0x7F80_0000 | rng.randint(1, (1 << 23) - 1)))
        return v
    if style == "ties":  # halves of the block's unit: ties to even, and the exponent bump
        x = rng.randint(-100, 100)
        unit = 2.0 ** (x - (m - 1))
        halves = [(2 * rng.randint(0, (1 << m) - 1) + 1) / 2 for _ in range(n)]
        halves[0] = (1 << m) - rng.choice((0.5, 1.0, 1.5))  # the maximum rounds up to 2**M or not
        return bits_of([h * unit * rng.choice((1, -1)) for h in halves])
    raise ValueError(style)


QNT_STYLES = ("random", "random", "zeros", "tiny", "huge", "nan", "ties")
DEQ_STYLES = ("mid", "mid", "low", "high", "reserved")


def vop_pair(rng: random.Random, op: VecOp, style: str) -> tuple[int, int]:
    if style == "random":
        return internal(rng), internal(rng)
    if style == "special":
        a, b = internal(rng), special_value(rng)
        return (a, b) if rng.random() < 0.5 else (b, a)
    a = normal(rng)
    ea = (a >> 23) & 0xFF
    if style == "close":  # cancellation and exact ties between neighbours
        eb = max(1, min(254, ea + rng.randint(-2, 2)))
        frac = a & 0x7F_FFFF if rng.random() < 0.3 else (a & 0x7F_FFFF) ^ rng.getrandbits(3)
        return a, rng.getrandbits(1) << 31 | eb << 23 | frac
    if style == "edge":  # results at the FTZ boundary or beyond the largest binary32
        if op is VecOp.MUL:
            target = rng.choice((127, 126, 128, 381, 380, 382))  # ea + eb - 127 is the product's exponent
            eb = target - ea
            if not 1 <= eb <= 254:
                ea = rng.randint(max(1, target - 254), min(254, target - 1))
                eb = target - ea
            a = a & 0x807F_FFFF | ea << 23
            return a, normal(rng, eb, eb)
        return normal(rng, *rng.choice(((1, 2), (253, 254)))), normal(rng, *rng.choice(((1, 2), (253, 254))))
    if style == "negate":
        return a, a ^ rng.choice((0x8000_0000, 0))
    raise ValueError(style)


VOP_STYLES = ("random", "random", "close", "edge", "edge", "negate", "special")


def vact_params(rng: random.Random) -> dict:
    lo, hi = sorted((internal(rng), internal(rng)), key=lambda b: float(f32(b)))
    if rng.random() < 0.2:
        lo, hi = hi, lo
    if rng.random() < 0.3:
        lo, hi = 0, bits_of([6.0])[0]
    # a large alpha makes a negative element's product overflow (the only failure of vact)
    alpha = rng.choice((bits_of([0.1])[0], bits_of([0.01])[0], normal(rng, 1, 20, 0), normal(rng, 200, 254, 0),
                        normal(rng, 230, 254, 0), normal(rng, 100, 140)))
    if rng.random() < 0.03:
        key = rng.choice(("clip_lo", "clip_hi", "alpha"))
        return {"clip_lo": lo, "clip_hi": hi, "alpha": alpha, key: special_value(rng)}
    return {"clip_lo": lo, "clip_hi": hi, "alpha": alpha}


def random_beats(cfg: EngineConfig, unit: str, rng: random.Random, count: int) -> list[Beat]:
    n, w = cfg.native_dim, cfg.mfu_width
    beats = []
    for _ in range(count):
        live = _live(rng, w)
        if unit == "deq":
            beats.append(Beat([deq_slot(cfg, rng, rng.choice(DEQ_STYLES)) for _ in range(w)], live))
        elif unit == "qnt":
            beats.append(Beat([qnt_slot(cfg, rng, rng.choice(QNT_STYLES)) for _ in range(w)], live))
        elif unit == "vop":
            op = rng.choice(list(VecOp))
            slots = []
            for _ in range(w):
                pairs = [vop_pair(rng, op, rng.choice(VOP_STYLES)) for _ in range(n)]
                slots.append(([a for a, _ in pairs], [b for _, b in pairs]))
            beats.append(Beat(slots, live, op.value))
        elif unit == "vact":
            act = rng.choice(list(Act))
            slots = [[special_value(rng) if rng.random() < 0.03 else internal(rng) for _ in range(n)]
                     for _ in range(w)]
            beats.append(Beat(slots, live, act.value, vact_params(rng)))
        else:
            raise ValueError(unit)
    return beats


# -- packing ---------------------------------------------------------------------------------

def beat_value(cfg: EngineConfig, unit: str, beat: Beat) -> dict:
    live = sum(int(b) << k for k, b in enumerate(beat.live))
    if unit == "deq":
        vecs = [{"mant": [{"mag": g, "sign": s} for g, s in zip(mags, signs, strict=True)], "exp": e}
                for mags, signs, e in beat.slots]
        return {"vec": vecs, "live": live}
    if unit == "qnt":
        return {"vec": beat.slots, "live": live}
    if unit == "vop":
        return {"a": [a for a, _ in beat.slots], "b": [b for _, b in beat.slots], "op": beat.op, "live": live}
    return {"x": beat.slots, "act": beat.op, "live": live}


def pack_beat(cfg: EngineConfig, unit: str, beat: Beat) -> int:
    return rtl.pack(UNITS[unit].layouts(cfg)[0], beat_value(cfg, unit, beat))


def unpack_result(cfg: EngineConfig, unit: str, bits: int) -> dict:
    return rtl.unpack(UNITS[unit].layouts(cfg)[1], bits)


# -- the golden model ------------------------------------------------------------------------

def _golden(fn, *args):
    try:
        with np.errstate(invalid="ignore", over="ignore"):  # Inf/NaN operands: refused by fn itself
            return fn(*args)
    except NumericsError:
        return None


def expected_slot(cfg: EngineConfig, unit: str, beat: Beat, k: int):
    """The golden result of slot ``k`` as the output layout holds it, or None for an error."""
    slot = beat.slots[k]
    if unit == "deq":
        mags, signs, e = slot
        if e == (1 << cfg.exponent_bits) - 1:
            return None  # the reserved field: refused when read from memory
        mant = np.array([-g if s else g for g, s in zip(mags, signs, strict=True)], np.int32)
        t = bfp.BfpTensor(mant[None], np.array([[e - cfg.exp_bias]], np.int16), cfg.native_dim, cfg.native_dim,
                          cfg.mantissa_bits)
        return bits_of(bfp.to_internal(bfp.dequantize(t), "deq"))
    if unit == "qnt":
        q = _golden(bfp.quantize, f32(slot)[None], cfg)
        if q is None:
            return None
        mant = q.mant[0].tolist()
        return {"mant": [{"mag": abs(v), "sign": int(v < 0)} for v in mant], "exp": int(q.exp[0, 0]) + cfg.exp_bias}
    if unit == "vop":
        a, b = f32(slot[0]), f32(slot[1])
        op = VecOp(beat.op)
        fn = {VecOp.ADD: bfp.mfu_add, VecOp.SUB: bfp.mfu_sub, VecOp.MUL: bfp.mfu_mul, VecOp.MAX: bfp.mfu_max}[op]
        r = _golden(fn, a, b)
        return None if r is None else bits_of(r)
    x = f32(slot)
    act = Act(beat.op)
    p = {key: f32(v) for key, v in beat.params.items()}
    if act is Act.COPY:
        return bits_of(x)
    if act is Act.RELU:
        return bits_of(bfp.mfu_relu(x))
    if act is Act.CLIP:
        return bits_of(bfp.mfu_clip(x, p["clip_lo"], p["clip_hi"]))
    r = _golden(bfp.mfu_leaky_relu, x, p["alpha"])
    return None if r is None else bits_of(r)


@dataclass
class Checked:
    beats: int = 0
    errors: int = 0
    slots: int = 0


def check_results(cfg: EngineConfig, unit: str, beats: list[Beat], results: list[dict], tally: Checked) -> None:
    """Compare every output beat with the golden model (asserts)."""
    assert len(results) == len(beats), f"{len(results)} results for {len(beats)} beats"
    for j, (beat, got) in enumerate(zip(beats, results, strict=True)):
        live = [k for k in range(cfg.mfu_width) if beat.live[k]]
        want = {k: expected_slot(cfg, unit, beat, k) for k in live}
        assert got["live"] == sum(1 << k for k in live), f"{unit} beat {j}: live mask {got['live']:#x}"
        error = any(v is None for v in want.values())
        assert got["error"] == int(error), f"{unit} beat {j}: error flag {got['error']}, expected {int(error)}: {beat}"
        tally.beats += 1
        tally.errors += error
        if error:
            continue
        for k in live:
            tally.slots += 1
            assert got["vec"][k] == want[k], (
                f"{unit} beat {j} slot {k}: got {got['vec'][k]}, expected {want[k]}: {beat}")
