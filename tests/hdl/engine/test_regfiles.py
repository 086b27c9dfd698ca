# amaranth: UnusedElaboratable=no
"""Banked register files (Amaranth simulator): a wide port moves W consecutive entries from any
start, a one-entry port reaches every bank, T read ports behind one enable (the MVU's) read every
bank and hold while the enable is low, and all see what the others wrote."""

from __future__ import annotations

import collections
import dataclasses
import random
import sys

import pytest
from amaranth.sim import Simulator

from accelml.hdl.config import preset
from accelml.hdl.engine.layouts import file_depth
from accelml.hdl.engine.regfiles import RegisterFiles
from accelml.hdl.errors import ConfigError
from accelml.hdl.isa import Space

W = 4
CFG = dataclasses.replace(preset("tiny"), mfu_width=W, fvrf_vectors=64)


def _simulate(files, bench) -> None:
    sim = Simulator(files)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


async def _fill_mrf(ctx, files, ref: list) -> None:
    """Write ``ref`` into the MRF through the load DMA's port, an entry a cycle, one copy each."""
    ld = files.dma_load_mrf
    ctx.set(files.dma_load_mrf_copies, 1)
    for e, v in enumerate(ref):
        ctx.set(ld.we, 1)
        ctx.set(ld.waddr, e)
        ctx.set(ld.wdata.as_value(), v)
        await ctx.tick()
    ctx.set(ld.we, 0)


def _write(ref: list, start: int, mask: int, vals) -> None:
    """The reference file after a masked write of ``vals`` from ``start``."""
    for k, v in enumerate(vals):
        if mask >> k & 1:
            ref[start + k] = v


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
            _write(ref, ws, mask, vals)
            ref[e] = v

    _simulate(files, bench)
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
            _write(ref, ws, mask, vals)

    _simulate(files, bench)
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
    st, mvu = files.dma_store_mrf, files.mvu_mrf_wide
    depth, bits = cfg.mrf_tiles, files.dma_load_mrf.wdata.shape().size
    rnd = random.Random(3)
    ref = [rnd.getrandbits(bits) for _ in range(depth)]
    kinds = []

    async def bench(ctx):
        await _fill_mrf(ctx, files, ref)
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

    _simulate(files, bench)
    assert set(kinds) == {True, False}


def test_a_banked_mrf_has_no_port_for_a_second_store_lane():
    """Entries smaller than a memory word move several a cycle (the DMA's lanes); on a banked MRF
    a second store lane would need a port of its own on every bank, which it is refused."""
    cfg = dataclasses.replace(preset("tiny"), tiles=3, mrf_tiles=30, mrf_banked=True)
    users = {"dma_store": {Space.MRF: "r"}, "dma_store1": {Space.MRF: "r"}}
    with pytest.raises(ConfigError, match="'dma_store1' have no port of a banked file"):
        RegisterFiles(cfg, users, wide={"mvu": 3}, shared={(Space.MRF, False): ("dma_store", "mvu")})


@pytest.mark.parametrize("width", [1, W])
def test_a_file_in_parts_serves_one_user_of_a_shared_port_per_part(width):
    """``EngineConfig.file_parts``: the FVRF as four memories of a quarter of its depth, each with the
    shared write port and the shared read port. In one cycle a different writer may write each
    part, a different reader read each (``_active``: a bit per part), a wide access may straddle
    two parts, the T reads reach every part, and the file stays a flat file."""
    T, parts = 3, 4
    cfg = dataclasses.replace(CFG, mfu_width=width, file_parts=parts)
    users = {"one": {Space.FVRF: "rw"}, "wide": {Space.FVRF: "rw"}, "dma": {Space.FVRF: "rw"}}
    shared = {(Space.FVRF, True): ("one", "wide", "dma"), (Space.FVRF, False): ("one", "dma")}
    files = RegisterFiles(cfg, users, {"wide": width}, wide={"mvu": T}, shared=shared)
    assert files.parts[Space.FVRF] == parts and files.parts[Space.VRF] == parts and files.parts[Space.MRF] == 1
    ports, mvu = {u: getattr(files, f"{u}_fvrf") for u in users}, files.mvu_fvrf_wide
    depth = file_depth(cfg, Space.FVRF)
    size = depth // parts
    bits = 32 * cfg.native_dim
    ref = [0] * depth
    rnd = random.Random(17 + width)
    seen = collections.Counter()

    def span_in(owned, n):  # a start whose n entries lie in the parts ``owned``, or None
        starts = [s for s in range(depth - n + 1) if {s // size, (s + n - 1) // size} <= owned]
        return rnd.choice(starts) if starts else None

    async def bench(ctx):
        for _ in range(400):
            owner = {p: rnd.choice(["one", "wide", "dma", None]) for p in range(parts)}  # of each part's write port
            reader = {p: rnd.choice(["one", "dma", None]) for p in range(parts)}  # of each part's read port
            writes = []
            for user, p in ports.items():
                n = width if user == "wide" else 1
                ws = span_in({q for q, o in owner.items() if o == user}, n)
                ctx.set(p.we, 0)
                if ws is None:
                    continue
                mask = rnd.randrange(1, 1 << n)
                vals = [rnd.getrandbits(bits) for _ in range(n)]
                ctx.set(p.we, mask)
                ctx.set(p.waddr, ws)
                for k in range(n):
                    ctx.set((p.wdata[k] if user == "wide" and width > 1 else p.wdata).as_value(), vals[k])
                writes.append((ws, mask, vals))
                seen["straddling write"] += ws // size != (ws + n - 1) // size
            wants = {}
            for user in ("one", "dma"):
                owned = {q for q, o in reader.items() if o == user}
                ctx.set(getattr(files, f"{user}_fvrf_active"), sum(1 << q for q in owned))
                rs = span_in(owned, 1)
                ctx.set(ports[user].raddr, rnd.randrange(depth) if rs is None else rs)  # noise when idle
                if rs is not None:
                    wants[user] = ref[rs]
            ws_wide = rnd.randrange(depth - width + 1)  # wide's own read port: anywhere
            ctx.set(ports["wide"].raddr, ws_wide)
            ts = [rnd.randrange(depth) for _ in range(T)]
            ctx.set(mvu.en, 1)
            for t in range(T):
                ctx.set(mvu.addr[t], ts[t])
            want_wide, want_t = ref[ws_wide:ws_wide + width], [ref[a] for a in ts]
            await ctx.tick()
            for user, want in wants.items():
                assert ctx.get(ports[user].rdata.as_value()) == want
            got_wide = ([ctx.get(ports["wide"].rdata[k].as_value()) for k in range(width)] if width > 1
                        else [ctx.get(ports["wide"].rdata.as_value())])
            assert got_wide == want_wide
            assert [ctx.get(mvu.data[t].as_value()) for t in range(T)] == want_t
            seen["writers at once"] = max(seen["writers at once"], len(writes))
            seen["readers at once"] = max(seen["readers at once"], len(wants))
            for ws, mask, vals in writes:
                _write(ref, ws, mask, vals)

    _simulate(files, bench)
    assert seen["writers at once"] == 3 and seen["readers at once"] == 2
    assert (seen["straddling write"] > 0) == (width > 1)


def test_parts_need_power_of_two_depths_of_whole_rows():
    with pytest.raises(ConfigError, match="file_parts must be a power of two"):
        dataclasses.replace(CFG, file_parts=3)
    with pytest.raises(ConfigError, match="fvrf_vectors=64 with file_parts=32"):
        dataclasses.replace(CFG, file_parts=32)  # 64 entries in W = 4 banks: 16 rows, not 32 parts
    with pytest.raises(ConfigError, match="vrf_vectors=6144"):
        dataclasses.replace(CFG, vrf_vectors=6144, file_parts=2)


def test_read_ports_wider_than_one_signal_are_signals_of_their_own():
    """At N = 16 and T = 32 (`s10`) the MVU's banked MRF read is 32 tiles a cycle, more bits than
    Amaranth builds as one signal (``MAX_SIGNAL_BITS``): its ``data`` are 32 signals, which read
    the banks as one array would and emit as Verilog (a single array signal stopped the emission)."""
    from accelml.hdl.emit import to_verilog
    from accelml.hdl.engine.regfiles import MAX_SIGNAL_BITS

    T = 32
    cfg = dataclasses.replace(preset("s10"), mrf_tiles=2 * T, vrf_vectors=1024, fvrf_vectors=256)
    users = {"dma_load": {Space.MRF: "w"}, "dma_store": {Space.MRF: "r"}}
    files = RegisterFiles(cfg, users, wide={"mvu": T}, shared={(Space.MRF, False): ("dma_store", "mvu")})
    ld, mvu = files.dma_load_mrf, files.mvu_mrf_wide
    bits = ld.wdata.shape().size
    assert T * bits > MAX_SIGNAL_BITS and isinstance(mvu.data, list) and len(mvu.data) == T
    rnd = random.Random(7)
    ref = [rnd.getrandbits(bits) for _ in range(cfg.mrf_tiles)]
    reads = []

    async def bench(ctx):
        await _fill_mrf(ctx, files, ref)
        ctx.set(mvu.en, 1)
        for _ in range(4):
            rows = [rnd.randrange(2) for _ in range(T)]
            for t in range(T):
                ctx.set(mvu.addr[t], rows[t])
            await ctx.tick()
            assert [ctx.get(mvu.data[t].as_value()) for t in range(T)] == [ref[r * T + t] for t, r in enumerate(rows)]
            reads.append(rows)

    # Amaranth's Python simulator writes the 69,632-bit values as Python literals
    digits = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        _simulate(files, bench)
    finally:
        sys.set_int_max_str_digits(digits)
    assert len(reads) == 4
    files = RegisterFiles(cfg, users, wide={"mvu": T}, shared={(Space.MRF, False): ("dma_store", "mvu")})
    assert "module accelml_files" in to_verilog(files, "accelml_files")
