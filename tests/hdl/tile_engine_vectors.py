"""Stimulus and scoreboard for the tile engine, shared by the cocotb module and the pytest tests.

The scoreboard is the golden model, ``accelml.sim.bfp.block_matmul``, one weight row at a time
(rows are independent in the engine, so a row that overflows does not hide the others).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import NumericsError
from accelml.hdl.tile_engine import result_layout, step_layout
from accelml.sim import rtl
from accelml.sim.bfp import block_matmul, to_internal


@dataclass(frozen=True)
class Step:
    w_mant: np.ndarray  # (N, N): row j, element i
    w_exp: np.ndarray  # (N,)
    a_mant: np.ndarray  # (N,)
    a_exp: int
    first: bool
    last: bool
    init: np.ndarray | None = None  # (N,) float32: the values the sums start from with `first` (None: +0)


@dataclass(frozen=True)
class Expected:
    rows: tuple[int | None, ...]  # binary32 bits per row; None: that row overflows

    @property
    def overflow(self) -> bool:
        return any(r is None for r in self.rows)


def step_value(step: Step) -> dict:
    return {
        "w_mant": step.w_mant.tolist(), "w_exp": step.w_exp.tolist(), "a_mant": step.a_mant.tolist(),
        "a_exp": int(step.a_exp), "first": int(step.first), "last": int(step.last),
        "init": ([0] * len(step.a_mant) if step.init is None
                 else np.asarray(step.init, np.float32).view(np.uint32).tolist()),
    }


def pack_step(cfg: EngineConfig, step: Step) -> int:
    return rtl.pack(step_layout(cfg), step_value(step))


def unpack_result(cfg: EngineConfig, bits: int) -> tuple[list[int], bool]:
    r = rtl.unpack(result_layout(cfg), bits)
    return r["acc"], bool(r["overflow"])


def _f32_bits(v) -> int:
    return int(np.asarray(v, np.float32).reshape(1).view(np.uint32)[0])


def definition_row(cfg: EngineConfig, blocks: list[Step], j: int) -> int | None:
    """Row ``j`` straight from the documented definition: exact integer block dot products."""
    m1 = cfg.mantissa_bits - 1
    acc = np.float32(0) if blocks[0].init is None else np.float32(blocks[0].init[j])
    try:
        for b in blocks:
            d = sum(int(w) * int(a) for w, a in zip(b.w_mant[j], b.a_mant, strict=True))
            term = to_internal(np.array([math.ldexp(d, int(b.w_exp[j]) - m1 + int(b.a_exp) - m1)]))
            acc = to_internal(np.float64(acc) + term.astype(np.float64))[0]
    except NumericsError:
        return None
    return _f32_bits(acc)


class Scoreboard:
    """Expected results of a step sequence, from the golden ``block_matmul``."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        # block_matmul's float32 fast path forms the partial products in binary32, so it reports an
        # overflow when a product overflows even though the exact dot product (the definition) is
        # in range. Those rows are taken from the definition instead, and counted here.
        self.golden_divergences = 0

    def golden_row(self, blocks: list[Step], j: int) -> int | None:
        n = self.cfg.native_dim
        a_mant = np.concatenate([b.a_mant for b in blocks]).reshape(1, -1).astype(np.int32)
        a_exp = np.array([[b.a_exp for b in blocks]], np.int16)
        w_mant = np.concatenate([b.w_mant[j] for b in blocks]).reshape(1, -1).astype(np.int32)
        w_exp = np.array([[b.w_exp[j] for b in blocks]], np.int16)
        assert a_mant.shape[1] == n * len(blocks)
        acc = None if blocks[0].init is None else np.array([[blocks[0].init[j]]], np.float32)
        try:
            return _f32_bits(block_matmul((a_mant, a_exp), (w_mant, w_exp), self.cfg, acc=acc)[0, 0])
        except NumericsError:
            exact = definition_row(self.cfg, blocks, j)
            if exact is not None:
                self.golden_divergences += 1
            return exact

    def expected(self, steps: list[Step]) -> list[Expected]:
        out: list[Expected] = []
        blocks: list[Step] = []
        for s in steps:
            if s.first:
                blocks = []
            blocks.append(s)
            if s.last:
                out.append(Expected(tuple(self.golden_row(blocks, j) for j in range(self.cfg.native_dim))))
        return out


# -- stimulus ------------------------------------------------------------------------------------

def mant_max(cfg: EngineConfig) -> int:
    return (1 << cfg.mantissa_bits) - 1


def random_mantissas(cfg: EngineConfig, rng: random.Random, shape) -> np.ndarray:
    mx = mant_max(cfg)
    kind = rng.random()
    size = int(np.prod(shape))
    if kind < 0.05:
        vals = [0] * size
    elif kind < 0.15:
        vals = [rng.choice((mx, -mx)) for _ in range(size)]
    elif kind < 0.35:  # sparse
        vals = [rng.randint(-mx, mx) if rng.random() < 0.3 else 0 for _ in range(size)]
    else:
        vals = [rng.randint(-mx, mx) for _ in range(size)]
    return np.array(vals, np.int64).reshape(shape)


def _clamp(cfg: EngineConfig, x: int) -> int:
    return max(cfg.exp_min, min(cfg.exp_max, x))


def random_exponents(cfg: EngineConfig, rng: random.Random, mode: str) -> tuple[np.ndarray, int]:
    """(w_exp, a_exp) for one step; ``mode`` picks where the terms land in the binary32 range."""
    n = cfg.native_dim
    if mode == "mid":
        return np.array([rng.randint(-10, 10) for _ in range(n)]), rng.randint(-10, 10)
    if mode == "full":
        return (np.array([rng.randint(cfg.exp_min, cfg.exp_max) for _ in range(n)]),
                rng.randint(cfg.exp_min, cfg.exp_max))
    # "low"/"high": the largest possible term of a row lands near 2**-126 / 2**128
    bits = 2 * cfg.mantissa_bits + int(math.log2(n))
    target = rng.randint(-134, -118) if mode == "low" else rng.randint(118, 131)
    xsum = target - bits + 2 * (cfg.mantissa_bits - 1)  # = xw + xa
    a_exp = _clamp(cfg, xsum // 2 + rng.randint(-20, 20))
    w_exp = np.array([_clamp(cfg, xsum - a_exp + rng.randint(-3, 3)) for _ in range(n)])
    return w_exp, a_exp


def random_step(cfg: EngineConfig, rng: random.Random, mode: str, first: bool, last: bool) -> Step:
    n = cfg.native_dim
    w_exp, a_exp = random_exponents(cfg, rng, mode)
    return Step(random_mantissas(cfg, rng, (n, n)), w_exp, random_mantissas(cfg, rng, (n,)),
                a_exp, first, last)


def random_jobs(cfg: EngineConfig, rng: random.Random, count: int, max_blocks: int = 8) -> list[Step]:
    """``count`` jobs (first ... last), each in one exponent mode, sometimes continuing the last sum."""
    steps: list[Step] = []
    for k in range(count):
        mode = rng.choices(("mid", "full", "low", "high"), weights=(5, 2, 2, 2))[0]
        length = rng.randint(1, max_blocks)
        restart = k == 0 or rng.random() < 0.9
        init = random_init(cfg, rng) if restart and rng.random() < 0.3 else None
        for b in range(length):
            step = random_step(cfg, rng, mode, first=restart and b == 0, last=b == length - 1)
            steps.append(dataclasses.replace(step, init=init) if b == 0 else step)
    return steps


def random_init(cfg: EngineConfig, rng: random.Random) -> np.ndarray:
    """Values a sum continues from (an accumulating mvc's FVRF entry): finite internal-format
    binary32, zeros, tiny and huge magnitudes included."""
    out = []
    for _ in range(cfg.native_dim):
        kind = rng.random()
        if kind < 0.2:
            out.append(0.0)
        else:
            e = rng.choice((rng.randint(-20, 20), rng.randint(-126, -110), rng.randint(110, 127)))
            out.append(math.ldexp(rng.uniform(1, 2), e) * rng.choice((1, -1)))
    return to_internal(np.array(out))


def corner_steps(cfg: EngineConfig, rng: random.Random) -> list[Step]:
    """Hand-made sequences: zeros, full-scale mantissas, FTZ, overflow, cancellation, long chains."""
    n, mx = cfg.native_dim, mant_max(cfg)
    m1 = cfg.mantissa_bits - 1
    zeros_w, zeros_a = np.zeros((n, n), np.int64), np.zeros(n, np.int64)
    full_w, full_a = np.full((n, n), mx), np.full(n, mx)
    signs = np.array([1 if j % 2 == 0 else -1 for j in range(n)])
    alt_w = full_w * signs[:, None]  # row j: all +max or all -max
    emin, emax = cfg.exp_min, cfg.exp_max
    e = lambda x: np.full(n, x)  # noqa: E731
    steps: list[Step] = []

    def job(*blocks, cont=False):
        for k, (w, we, a, ae) in enumerate(blocks):
            steps.append(Step(np.array(w), np.array(we), np.array(a), int(ae),
                              first=k == 0 and not cont, last=k == len(blocks) - 1))

    job((zeros_w, e(0), zeros_a, 0))  # all-zero block
    job((zeros_w, e(emax), zeros_a, emax), (zeros_w, e(emin), zeros_a, emin))  # zeros at the extremes
    job((full_w, e(0), full_a, 0))  # +max * +max
    job((alt_w, e(3), -full_a, -2))  # +-max * -max
    job((full_w, e(emin), full_a, emin))  # far below 2**-126: FTZ to +0
    job((alt_w, e(emin), full_a, emin), (alt_w, e(0), full_a, 0))  # FTZ term, then a normal one
    job((full_w, e(emax), full_a, emax))  # term overflows
    job((full_w, e(0), full_a, 0))  # next job: the overflow flag is cleared by `first`
    # smallest terms around 2**-126: a single product 1 * 2**s for s from -128 to -124
    unit_w = np.zeros((n, n), np.int64)
    unit_w[:, 0] = 1
    unit_a = np.zeros(n, np.int64)
    unit_a[0] = 1
    for s in range(-128, -123):
        xsum = s + 2 * m1
        a_exp = _clamp(cfg, xsum // 2)
        w_exp = xsum - a_exp
        if emin <= w_exp <= emax:
            job((unit_w, e(w_exp), unit_a, a_exp))
    # 2**127 + 2**127 overflows in the accumulator although each term is finite
    xsum = 127 - 0 + 2 * m1
    a_exp = _clamp(cfg, xsum // 2)
    if emin <= xsum - a_exp <= emax:
        job((unit_w, e(xsum - a_exp), unit_a, a_exp), (unit_w, e(xsum - a_exp), unit_a, a_exp))
    # cancellation: x + (-x) is exactly +0; big + small - big loses the small term
    w = random_mantissas(cfg, rng, (n, n))
    a = np.array([rng.randint(1, mx) for _ in range(n)])
    job((w, e(1), a, 2), (w, e(1), -a, 2))
    job((w, e(20), a, 20), (w, e(-20), a, -20), (w, e(20), -a, 20))
    # a product that overflows binary32 inside an exact, finite dot product
    if n >= 4:
        cw = np.zeros((n, n), np.int64)
        cw[:, :3] = [mx, mx, 1]
        ca = np.zeros(n, np.int64)
        ca[:3] = [mx, -mx, 1]
        job((cw, e(_clamp(cfg, 0)), ca, emax))
    # a long chain, then a continuation (no `first`) of the same sums
    chain = [(random_mantissas(cfg, rng, (n, n)), np.array([rng.randint(-6, 6) for _ in range(n)]),
              random_mantissas(cfg, rng, (n,)), rng.randint(-6, 6)) for _ in range(200)]
    job(*chain)
    job(*chain[:5], cont=True)
    job((full_w, e(4), full_a, 4), (alt_w, e(4), full_a, 4))  # single job with both signs per row
    return steps
