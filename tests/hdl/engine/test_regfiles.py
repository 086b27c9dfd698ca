# amaranth: UnusedElaboratable=no
"""Banked register files (Amaranth simulator): a wide port moves W consecutive entries from any
start, a one-entry port reaches every bank, T read ports behind one enable (the MVU's) read every
bank and hold while the enable is low, and all see what the others wrote."""

from __future__ import annotations

import dataclasses
import random

import pytest
from amaranth.sim import Simulator

from accelml.hdl.config import preset
from accelml.hdl.engine.layouts import file_depth
from accelml.hdl.engine.regfiles import RegisterFiles
from accelml.hdl.errors import ConfigError
from accelml.hdl.isa import Space

W = 4
CFG = dataclasses.replace(preset("tiny"), mfu_width=W, fvrf_vectors=64)


def test_wide_and_one_entry_ports_agree_with_a_flat_file():
    T = 3
    files = RegisterFiles(CFG, {"one": {Space.FVRF: "rw"}, "wide": {Space.FVRF: "rw"}}, {"wide": W},
                          wide={"mvu": T})
    one, wide, mvu = files.one_fvrf, files.wide_fvrf, files.mvu_fvrf_wide
    depth = file_depth(CFG, Space.FVRF)
    bits = 32 * CFG.native_dim
    ref = [0] * depth
    rnd = random.Random(5)
    checked = []

    async def bench(ctx):
        held = [0] * T  # the T ports' data: what they read the last cycle their enable was high
        for _ in range(300):
            # one write per port (disjoint entries), a read per port at random starts
            ws = rnd.randrange(depth - W + 1)
            mask = rnd.randrange(1 << W)
            vals = [rnd.getrandbits(bits) for _ in range(W)]
            e = rnd.randrange(depth)
            while ws <= e < ws + W:
                e = rnd.randrange(depth)
            v = rnd.getrandbits(bits)
            rs, re = rnd.randrange(depth - W + 1), rnd.randrange(depth)
            ctx.set(wide.we, mask)
            ctx.set(wide.waddr, ws)
            for k in range(W):
                ctx.set(wide.wdata[k].as_value(), vals[k])
            ctx.set(one.we, 1)
            ctx.set(one.waddr, e)
            ctx.set(one.wdata.as_value(), v)
            ctx.set(wide.raddr, rs)
            ctx.set(one.raddr, re)
            en = rnd.randrange(2)
            ts = [rnd.randrange(depth) for _ in range(T)]
            ctx.set(mvu.en, en)
            for t in range(T):
                ctx.set(mvu.addr[t], ts[t])
            before_wide = ref[rs:rs + W]
            before_one = ref[re]
            if en:
                held = [ref[a] for a in ts]
            await ctx.tick()
            assert [ctx.get(mvu.data[t].as_value()) for t in range(T)] == held
            # a read sees the file before the same cycle's writes
            assert [ctx.get(wide.rdata[k].as_value()) for k in range(W)] == before_wide
            assert ctx.get(one.rdata.as_value()) == before_one
            checked.append(rs % W)
            for k in range(W):
                if mask >> k & 1:
                    ref[ws + k] = vals[k]
            ref[e] = v

    sim = Simulator(files)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert set(checked) == set(range(W))  # every rotation was read


@pytest.mark.parametrize("widths", [{"a": 3}, {"a": 2, "b": 4}])
def test_wide_ports_of_one_file_share_one_power_of_two(widths):
    users = {u: {Space.FVRF: "r"} for u in ("a", "b")}
    with pytest.raises(ConfigError, match="FVRF"):
        RegisterFiles(CFG, users, widths)


def test_shared_ports_serve_whichever_user_is_active():
    """file_ports="shared": one write port per bank taken by the user writing, one read port per
    bank addressed by the user whose ``{user}_{file}_active`` is set; each user still gets its own data and the
    file stays a flat file."""
    users = {"one": {Space.FVRF: "rw"}, "wide": {Space.FVRF: "rw"}, "dma": {Space.FVRF: "rw"}}
    shared = {(Space.FVRF, True): ("one", "wide", "dma"), (Space.FVRF, False): ("one", "dma")}
    files = RegisterFiles(CFG, users, {"wide": W}, shared=shared)
    assert files.write_ports() == {Space.VRF: 0, Space.MRF: 0, Space.FVRF: 1}
    assert files.read_ports() == {Space.VRF: 0, Space.MRF: 0, Space.FVRF: 2}  # the shared one, wide's own
    ports = {u: getattr(files, f"{u}_fvrf") for u in users}
    depth = file_depth(CFG, Space.FVRF)
    bits = 32 * CFG.native_dim
    ref = [0] * depth
    rnd = random.Random(11)
    seen = set()

    async def bench(ctx):
        for _ in range(300):
            writer = rnd.choice(list(users))  # one writer at a time, as control keeps them
            reader = rnd.choice(["one", "dma"])
            for p in ports.values():
                ctx.set(p.we, 0)
                ctx.set(p.raddr, rnd.randrange(depth - W + 1))  # the inactive readers' addresses are noise
            ctx.set(files.one_fvrf_active, reader == "one")
            ctx.set(files.dma_fvrf_active, reader == "dma")
            p = ports[writer]
            if writer == "wide":
                ws, mask = rnd.randrange(depth - W + 1), rnd.randrange(1 << W)
                vals = [rnd.getrandbits(bits) for _ in range(W)]
                ctx.set(p.we, mask)
                ctx.set(p.waddr, ws)
                for k in range(W):
                    ctx.set(p.wdata[k].as_value(), vals[k])
            else:
                ws, mask, vals = rnd.randrange(depth), 1, [rnd.getrandbits(bits)]
                ctx.set(p.we, 1)
                ctx.set(p.waddr, ws)
                ctx.set(p.wdata.as_value(), vals[0])
            rs, ws_wide = rnd.randrange(depth), rnd.randrange(depth - W + 1)
            ctx.set(ports[reader].raddr, rs)
            ctx.set(ports["wide"].raddr, ws_wide)
            want, want_wide = ref[rs], ref[ws_wide:ws_wide + W]
            await ctx.tick()
            assert ctx.get(ports[reader].rdata.as_value()) == want
            assert [ctx.get(ports["wide"].rdata[k].as_value()) for k in range(W)] == want_wide
            seen.add((writer, reader))
            for k, v in enumerate(vals):
                if mask >> k & 1:
                    ref[ws + k] = v

    sim = Simulator(files)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) == 6  # every writer with every reader


def test_a_shared_port_needs_users_of_it():
    users = {"a": {Space.FVRF: "r"}, "b": {Space.FVRF: "rw"}}
    with pytest.raises(ValueError, match="shared FVRF write port: 'a'"):
        RegisterFiles(CFG, users, shared={(Space.FVRF, True): ("a", "b")})


def test_a_banked_mrfs_store_reads_through_the_mvus_bank_ports():
    """A banked MRF (isa.md, "Banked MRF") has one read port per bank, the MVU's port t on bank t;
    the store DMA, sharing them, reads entry e from bank e mod T while its ``_active`` is set (control
    runs no mvc then), and the MVU reads its banks at its rows otherwise."""
    T = 3
    cfg = dataclasses.replace(preset("tiny"), tiles=T, mrf_tiles=12 * T, mrf_banked=True)
    users = {"dma_load": {Space.MRF: "w"}, "dma_store": {Space.MRF: "r"}}
    files = RegisterFiles(cfg, users, wide={"mvu": T}, shared={(Space.MRF, False): ("dma_store", "mvu")})
    assert files.read_ports()[Space.MRF] == 1 and not hasattr(files, "mvu_mrf_active")
    ld, st, mvu = files.dma_load_mrf, files.dma_store_mrf, files.mvu_mrf_wide
    depth, bits = cfg.mrf_tiles, files.dma_load_mrf.wdata.shape().size
    rnd = random.Random(3)
    ref = [rnd.getrandbits(bits) for _ in range(depth)]
    kinds = []

    async def bench(ctx):
        ctx.set(files.dma_load_mrf_copies, 1)
        for e, v in enumerate(ref):
            ctx.set(ld.we, 1)
            ctx.set(ld.waddr, e)
            ctx.set(ld.wdata.as_value(), v)
            await ctx.tick()
        ctx.set(ld.we, 0)
        for _ in range(200):
            store = rnd.random() < 0.5
            e, rows = rnd.randrange(depth), [rnd.randrange(depth // T) for _ in range(T)]
            ctx.set(files.dma_store_mrf_active, store)
            ctx.set(st.raddr, e)
            ctx.set(mvu.en, 1)
            for t in range(T):
                ctx.set(mvu.addr[t], rows[t])
            await ctx.tick()
            if store:
                assert ctx.get(st.rdata.as_value()) == ref[e]
            else:
                assert [ctx.get(mvu.data[t].as_value()) for t in range(T)] == [ref[r * T + t]
                                                                              for t, r in enumerate(rows)]
            kinds.append(store)

    sim = Simulator(files)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert set(kinds) == {True, False}


def test_a_banked_mrf_has_no_port_for_a_second_store_lane():
    """Entries smaller than a memory word move several a cycle (the DMA's lanes); on a banked MRF
    a second store lane would need a port of its own on every bank, which it is refused."""
    cfg = dataclasses.replace(preset("tiny"), tiles=3, mrf_tiles=30, mrf_banked=True)
    users = {"dma_store": {Space.MRF: "r"}, "dma_store1": {Space.MRF: "r"}}
    with pytest.raises(ConfigError, match="'dma_store1' have no port of a banked file"):
        RegisterFiles(cfg, users, wide={"mvu": 3}, shared={(Space.MRF, False): ("dma_store", "mvu")})
