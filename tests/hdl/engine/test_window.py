"""The window address generator (hdl/engine/window.py) against layout.window_index, in the Amaranth simulator."""

from __future__ import annotations

import random

import numpy as np
import pytest

from accelml.hdl.config import preset
from accelml.hdl.engine.window import DIV_CYCLES, Divider, WindowGen, window_cmd_layout, window_step_layout
from accelml.sim import golden, rtl
from accelml.sim.layout import window_index


def expected_steps(cmd: dict, lanes: int):
    """Every step the walk must emit, per lane: (addr | None, inpad, j, q) or None for an idle lane."""
    geom = golden.ConvGeom(cmd["in_h"], cmd["in_w"], cmd["kh"], cmd["kw"], (cmd["stride_h"], cmd["stride_w"]),
                           (cmd["dil_h"], cmd["dil_w"]), (cmd["pad_t"], cmd["pad_l"], cmd["pad_b"], cmd["pad_r"]))
    npix, nj, kblk = cmd["npix"], cmd["nj"], cmd["kblk"]
    idx = window_index(geom, (cmd["pix0"], npix, cmd["out_w"]))[0]
    q_all = np.arange(cmd["pix0"], cmd["pix0"] + npix)
    oy, ox = q_all // cmd["out_w"], q_all % cmd["out_w"]
    inpad = []
    t, left, b, r = geom.pads
    for _, _, iy, ix, _ in geom.taps(oy, ox):
        inpad.append((iy >= -t) & (iy < geom.in_h + b) & (ix >= -left) & (ix < geom.in_w + r))
    inpad = np.stack(inpad, axis=1)
    pairs = npix * nj
    steps = []
    for q0 in range(0, pairs, lanes):
        for tap in range(geom.kh * geom.kw):
            for k in range(kblk):
                row = []
                for lane in range(lanes):
                    q = q0 + lane
                    if q >= pairs:
                        row.append(None)
                        continue
                    pix, j = divmod(q, nj)
                    b0 = ((cmd["ob0"] + j) // cmd["go"]) * cmd["gi"]
                    i = int(idx[pix, tap])
                    addr = None if i < 0 else cmd["vbase"] + i * cmd["in_cb"] + b0 + k
                    row.append((addr, bool(inpad[pix, tap]), j, q))
                steps.append((tap * kblk + k, row))
    return steps


def run_walk(cfg, lanes: int, cmd: dict, seed: int):
    from amaranth.sim import Simulator

    dut = WindowGen(cfg, lanes)
    rng = random.Random(seed)
    layout = window_step_layout(cfg, lanes)
    out = []

    async def tb(ctx):
        ctx.set(dut.cmd.valid, 1)
        ctx.set(dut.cmd.payload, window_cmd_layout().const(cmd))
        await ctx.tick().until(dut.cmd.ready)
        ctx.set(dut.cmd.valid, 0)
        for _ in range(100_000):
            ready = rng.random() < 0.7
            ctx.set(dut.o.ready, ready)
            if ctx.get(dut.o.valid) and ready:
                beat = rtl.unpack(layout, ctx.get(dut.o.payload.as_value()))
                out.append(beat)
                if beat["final"]:
                    return
            await ctx.tick()
        raise AssertionError("the walk did not finish")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return out


def random_cmd(rng: random.Random, cfg) -> dict:
    in_h, in_w = rng.randint(1, 5), rng.randint(1, 5)
    kh, kw = rng.randint(1, 3), rng.randint(1, 3)
    sh, sw, dh, dw = rng.randint(1, 2), rng.randint(1, 2), rng.randint(1, 2), rng.randint(1, 2)
    pt, pl, pb, pr = rng.randint(-2, 2), rng.randint(0, 2), rng.randint(0, 2), rng.randint(0, 2)
    out_w = rng.randint(1, 4)
    grouped = rng.random() < 0.5
    if grouped:
        gi, go = rng.randint(1, 2), rng.randint(1, 2)
        groups = rng.randint(1, 3)
        in_cb, nj = gi * groups, rng.randint(1, groups * go)
        ob0 = rng.randint(0, groups * go - nj)
        kblk = gi
    else:
        in_cb = rng.randint(1, 3)
        nj = rng.randint(1, 3)
        gi, go, ob0, kblk = in_cb, nj, 0, in_cb
    return {"vbase": rng.randint(0, 50), "in_h": in_h, "in_w": in_w, "in_cb": in_cb, "kh": kh, "kw": kw,
            "stride_h": sh, "stride_w": sw, "dil_h": dh, "dil_w": dw, "pad_t": pt, "pad_l": pl, "pad_b": pb,
            "pad_r": pr, "pix0": rng.randint(0, 7), "npix": rng.randint(1, 6), "out_w": out_w, "nj": nj,
            "kblk": kblk, "gi": gi, "go": go, "ob0": ob0}


def check_walk(cfg, lanes, cmd, seed):
    got = run_walk(cfg, lanes, cmd, seed)
    want = expected_steps(cmd, lanes)
    assert len(got) == len(want), (cmd, lanes)
    for s, (beat, (tapk, row)) in enumerate(zip(got, want, strict=True)):
        assert beat["tapk"] == tapk and not beat["fault"] and not beat["none"]
        assert beat["final"] == (s == len(want) - 1)
        for lane, exp in zip(beat["lane"], row, strict=True):
            if exp is None:
                assert not lane["active"]
                continue
            addr, inpad, j, q = exp
            assert lane["active"] and lane["j"] == j and lane["q"] == q and lane["inpad"] == inpad, (cmd, s)
            assert lane["zero"] == (addr is None), (cmd, s)
            if addr is not None:
                assert lane["addr"] == addr, (cmd, s)


@pytest.mark.parametrize("lanes", [1, 3])
def test_window_walk_matches_window_index(lanes):
    cfg = preset("tiny")
    rng = random.Random(lanes)
    for k in range(12):
        check_walk(cfg, lanes, random_cmd(rng, cfg), k)


def test_window_fault_and_empty_walks():
    cfg = preset("tiny")
    base = {**random_cmd(random.Random(5), cfg), "in_cb": 2, "gi": 2, "go": 1, "nj": 1, "ob0": 0, "kblk": 2}
    assert len(run_walk(cfg, 2, base, 1)) > 1
    bad = {**base, "in_cb": 4, "gi": 2, "go": 1, "nj": 2, "ob0": 1, "kblk": 2}  # group 2 needs blocks [4, 6)
    beats = run_walk(cfg, 2, bad, 1)
    assert len(beats) == 1 and beats[0]["fault"] and beats[0]["final"]
    beats = run_walk(cfg, 2, {**base, "npix": 0}, 1)
    assert len(beats) == 1 and beats[0]["none"] and not beats[0]["fault"]


def test_divider():
    from amaranth.sim import Simulator

    dut = Divider()
    rng = random.Random(3)
    cases = [(0, 1), (1, 1), (7, 2), ((1 << 33) - 1, 1), ((1 << 33) - 1, (1 << 33) - 1), (5, 7)]
    cases += [(rng.getrandbits(33), rng.getrandbits(rng.randint(1, 33)) or 1) for _ in range(20)]

    async def tb(ctx):
        for n, d in cases:
            ctx.set(dut.start, 1)
            ctx.set(dut.n, n)
            ctx.set(dut.d, d)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for _ in range(DIV_CYCLES):
                await ctx.tick()
            assert ctx.get(dut.done)
            assert (ctx.get(dut.q), ctx.get(dut.r)) == divmod(n, d), (n, d)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
