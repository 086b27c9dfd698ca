"""The cycle model: in-order dispatch to units of depth 1, range hazards, the shared memory port.

The RTL comparison (model total and busy counts against the Verilated engine's counters) is in
tests/hdl/engine/test_engine_rtl.py; these check the model's rules on their own.
"""

import dataclasses
import random

import numpy as np
import pytest

from accelml.hdl.config import preset
from accelml.hdl.engine.layouts import (
    DMA_MAX_LANES,
    dma_lanes,
    dma_max_lanes,
    exclusive,
    part_sizes,
    port_conflict,
    shared_ports,
)
from accelml.hdl.isa import Space
from accelml.sim.cycles import (
    POOL_RECIP,
    POOL_SETUP,
    POOL_SETUP_EMPTY,
    CycleModel,
    dma_timing,
    load_phase,
    memory_timing,
    mfu_cycles,
    mfu_groups,
    mvu_busy,
    mvu_round_cycles,
    pool_busy,
    pool_reciprocals,
    store_phase,
)
from accelml.sim.dram import DDR4_2400, derating

CFG = dataclasses.replace(preset("tiny"), file_ports="unit")  # a port per unit (but the MVU's FVRF read)
SHARED = preset("tiny")  # one write port per file, one read port beside the MVU's


def _model(cfg=CFG):
    return CycleModel(cfg, 1 << 16)


def test_load_and_store_hold_the_memory_port_one_transfer_at_a_time():
    m = _model()
    ld = m.dispatch("dma_load", [("vrf", 0, 10, True), ("mem", 0, 50, False)], dma=(Space.VRF, 5, 0, 1, 10, 50))
    st = m.dispatch("dma_store", [("fvrf", 0, 10, False), ("mem", 1000, 1160, True)],
                    dma=(Space.FVRF, 16, 1000, 1, 10, 160))
    t = memory_timing(CFG)
    load, last, row = load_phase(t, 5, 0, 1, 10, 50)
    assert m.busy["dma_load"] == load and row == 0
    # the store starts the cycle the load reaches DONE, in the same DRAM row, a write after a read
    wait = max(0, last + t.read_to_write - (load + 2))
    assert st == ld + 1 + store_phase(t, 16, 1000, 1, 10, 160, 0, wait)[0]


def test_an_instruction_waits_for_the_one_in_flight_whose_result_it_reads():
    m = _model()
    ld = m.dispatch("dma_load", [("fvrf", 0, 8, True), ("mem", 0, 128, False)], dma=(Space.FVRF, 16, 0, 1, 8, 128))
    vact = m.dispatch("mfu", [("fvrf", 0, 8, False), ("fvrf", 100, 108, True)], mfu=("vact", 8, 0))
    assert vact == ld + 1 + 1 + mfu_cycles("vact", 8)  # dispatched when the load's slot frees


def test_independent_units_overlap_and_a_unit_takes_one_instruction_at_a_time():
    m = _model()
    ld = m.dispatch("dma_load", [("fvrf", 0, 8, True), ("mem", 0, 128, False)], dma=(Space.FVRF, 16, 0, 1, 8, 128))
    a = m.dispatch("mfu", [("fvrf", 200, 208, False), ("fvrf", 100, 108, True)], mfu=("vact", 8, 0))
    assert a < ld + mfu_cycles("vact", 8)  # ran beside the load
    b = m.dispatch("mfu", [("fvrf", 300, 308, False), ("fvrf", 400, 408, True)], mfu=("vop", 8, 0))
    assert b == a + 1 + 1 + mfu_cycles("vop", 8)  # the MFU's next instruction waits for its slot
    assert m.halt() == max(ld, b) + 2  # halt waits for every unit: the last slot frees, then the stop


def test_units_sharing_a_file_port_take_turns():
    """file_ports="shared": two units on one port wait for each other even on disjoint entries;
    units on different files, or the MVU's own reads, still overlap (layouts.port_conflict)."""
    assert SHARED.file_ports == "shared"
    load = [("vrf", 0, 8, True), ("mem", 0, 40, False)]
    qnt = [("fvrf", 64, 72, False), ("vrf", 100, 108, True)]  # writes other VRF entries
    for cfg, waits in ((CFG, False), (SHARED, True)):
        m = _model(cfg)
        ld = m.dispatch("dma_load", load, dma=(Space.VRF, 5, 0, 1, 8, 40))
        q = m.dispatch("mfu", qnt, mfu=("qnt", 8, 0))
        assert (q >= ld + 1 + 1 + mfu_cycles("qnt", 8)) == waits, cfg.file_ports
    # reads: a store and a deq of the VRF take turns; a store beside an mvc does not (the MVU reads
    # through its own T ports), a pool does (both write the FVRF)
    m = _model(SHARED)
    st = m.dispatch("dma_store", [("vrf", 0, 8, False), ("mem", 0, 40, True)], dma=(Space.VRF, 5, 0, 1, 8, 40))
    d = m.dispatch("mfu", [("vrf", 0, 8, False), ("fvrf", 0, 8, True)], mfu=("deq", 8, 0))
    assert d == st + 1 + 1 + mfu_cycles("deq", 8)
    m = _model(SHARED)
    mv = m.dispatch("mvu", [("vrf", 0, 8, False), ("mrf", 0, 4, False), ("fvrf", 0, 8, True)], cycles=(50, 51))
    st = m.dispatch("dma_store", [("vrf", 0, 8, False), ("mem", 0, 40, True)], dma=(Space.VRF, 5, 0, 1, 8, 40))
    assert st < mv
    p = m.dispatch("pool", [("vrf", 0, 8, False), ("fvrf", 100, 108, True)], cycles=(9, 10))
    assert p == mv + 1 + 10  # dispatched when the mvc's slot frees


def test_on_files_in_parts_only_spans_touching_a_common_part_meet_on_a_port():
    """EngineConfig.file_parts: each part of the VRF and the FVRF has its own shared ports."""
    cfg = dataclasses.replace(SHARED, file_parts=4)
    parts = part_sizes(cfg)
    assert parts == {"vrf": cfg.vrf_vectors // 4, "fvrf": cfg.fvrf_vectors // 4} and part_sizes(SHARED) == {}
    q = parts["fvrf"]
    shared = shared_ports(cfg)

    def meet(a, b, space="fvrf"):
        return port_conflict(shared, "mvu", [(space, *a, True)], "mfu", [(space, *b, True)], parts)

    assert not meet((0, q), (q, 2 * q))  # hi is exclusive: parts 0 and 1
    assert meet((0, q + 1), (q, q + 4))  # one entry in part 1
    assert meet((q - 1, 3 * q), (2 * q + 5, 2 * q + 6))  # across parts 0-2, and part 2
    assert not meet((5, 9), (3 * q, 4 * q))
    assert port_conflict(shared, "mvu", [("fvrf", 5, 9, True)], "mfu", [("fvrf", 3 * q, 4 * q, True)])  # whole
    assert meet((0, 4), (8, 12))  # one part: they meet whatever entries they touch


def test_port_conflict_is_by_file_direction_and_unit():
    shared = shared_ports(SHARED)
    assert shared[(Space.FVRF, True)] == ("dma_load", "mfu", "mvu")  # the pool writes through the MFU's
    assert shared[(Space.FVRF, False)] == ("dma_store", "mfu", "mvu")
    assert shared_ports(CFG) == {(Space.FVRF, False): ("mfu", "mvu")}  # a port per unit but the MVU's sums
    acc = [("fvrf", 0, 4, True), ("fvrf", 0, 4, False)]  # an accumulating mvc's destination, read too
    assert port_conflict(shared_ports(CFG), "mvu", acc, "mfu", [("fvrf", 100, 104, False)])
    assert not port_conflict(shared_ports(CFG), "mvu", acc[:1], "mfu", [("fvrf", 100, 104, False)])
    assert not port_conflict(shared_ports(CFG), "mvu", acc, "dma_store", [("fvrf", 100, 104, False)])
    w = [("fvrf", 0, 4, True)]
    assert port_conflict(shared, "mvu", w, "pool", [("fvrf", 100, 104, True)])
    assert not port_conflict(shared, "mvu", w, "pool", [("vrf", 0, 4, False)])  # the pool's VRF read
    assert not port_conflict(shared, "mvu", w, "mvu", [("fvrf", 100, 104, True)])  # one unit
    assert not port_conflict(shared, "mvu", w, "pool", [("fvrf", 100, 100, True)])  # an empty range
    assert not port_conflict(shared, "mvu", [("vrf", 0, 4, False)], "pool", [("vrf", 8, 12, False)])
    assert port_conflict(shared, "dma_store", [("vrf", 0, 4, False)], "pool", [("vrf", 8, 12, False)])
    assert not port_conflict({}, "dma_store", [("vrf", 0, 4, False)], "pool", [("vrf", 8, 12, False)])
    # the pool and the MFU are one set of ports: not a port conflict but exclusive units
    assert not port_conflict(shared, "mfu", [("vrf", 0, 4, False)], "pool", [("vrf", 8, 12, False)])
    assert exclusive("mfu", "pool") and exclusive("pool", "mfu") and not exclusive("mfu", "mvu")


def test_pool_waits_for_the_mfu_it_borrows_from():
    """A pool runs on the MFU's lanes: with ports of their own (no shared port) and disjoint
    operands, it is still dispatched only when the MFU instruction in flight has freed its slot,
    and an MFU instruction waits for a pool likewise; the MVU does not wait for either."""
    m = _model()
    d = m.dispatch("mfu", [("fvrf", 0, 8, False), ("vrf", 0, 8, True)], mfu=("qnt", 8, 0))
    p = m.dispatch("pool", [("vrf", 100, 108, False), ("fvrf", 100, 108, True)], cycles=(9, 10))
    assert p == d + 1 + 10
    q = m.dispatch("mfu", [("fvrf", 200, 208, False), ("vrf", 200, 208, True)], mfu=("qnt", 8, 0))
    assert q == p + 1 + 1 + mfu_cycles("qnt", 8)
    mv = m.dispatch("mvu", [("vrf", 300, 308, False), ("mrf", 0, 4, False), ("fvrf", 300, 308, True)],
                    cycles=(50, 51))
    assert mv - 51 < q  # the mvc was dispatched while the qnt ran


def test_control_cycles_per_instruction():
    m = _model()
    m.ctl()  # FETCH DECODE ADVANCE
    m.ctl(entered_loop=True)  # FETCH DECODE
    m.skip()  # FETCH DECODE CHECK ADVANCE
    m.closed(2)  # two more ADVANCE cycles
    assert m.t == 3 + 2 + 4 + 2 and m.busy["ctl"] == m.t


def test_load_phase_is_latency_plus_one_word_per_cycle_when_entries_fill_words():
    t = dataclasses.replace(memory_timing(CFG), bw_num=8, bw_den=1, row_bytes=0)  # a word per cycle, no DRAM
    words = 2 * 40  # 8-byte words; a binary32 vector is two words
    # requests from cycle 0, words taken from cycle `latency`, the last entry written the cycle
    # after its last word, DONE seen the cycle after that
    assert load_phase(t, 16, 0, 1, 40, 640)[0] == t.latency + words + 2
    # 5-byte BFP vectors: two entries a cycle (dma_lanes) keep up with a word per cycle
    assert dma_lanes(8, 5) == 2
    assert load_phase(t, 5, 0, 1, 40, 200)[0] == t.latency + 200 // 8 + 2
    # 17-byte vectors on 64-byte words: four entries a cycle; capped at DMA_MAX_LANES for wider words
    t64 = dataclasses.replace(t, word_bytes=64, bw_num=64)
    assert dma_lanes(64, 17) == 4 and load_phase(t64, 17, 0, 1, 64, 17 * 64)[0] == t.latency + 17 + 2
    assert dma_lanes(1024, 17) == DMA_MAX_LANES
    # with shared file ports a DMA has a lane per bank of the file: one on tiny's (no banks), a BFP
    # vector a cycle
    ts = dataclasses.replace(dma_timing(SHARED, Space.VRF), bw_num=8, bw_den=1, row_bytes=0)
    assert ts.max_lanes == dma_max_lanes(SHARED, Space.VRF) == 1 and dma_lanes(8, 5, ts.max_lanes) == 1
    assert load_phase(ts, 5, 0, 1, 40, 200)[0] == t.latency + 40 + 2
    # four banks (mfu_width = 4): two lanes again, and a row of 40 loads as fast as on a port per unit
    banked = dataclasses.replace(SHARED, mfu_width=4)
    tb = dataclasses.replace(dma_timing(banked, Space.VRF), bw_num=8, bw_den=1, row_bytes=0)
    assert tb.max_lanes == 4 and dma_lanes(8, 5, tb.max_lanes) == 2
    assert dma_max_lanes(banked, Space.MRF) == 1 and dma_timing(banked, Space.MRF).max_lanes == 1
    assert load_phase(tb, 5, 0, 1, 40, 200)[0] == t.latency + 200 // 8 + 2


def test_store_phase_writes_a_word_per_cycle():
    t = dataclasses.replace(memory_timing(CFG), bw_num=8, bw_den=1, row_bytes=0)  # a word per cycle, no DRAM
    # the first entries read (cycle 0), in the buffer (1), a word per cycle from cycle 2, then the
    # cycle that sees the row written
    for item in (16, 5, 20):
        assert store_phase(t, item, 0, 1, 40, 40 * item)[0] == 2 + 40 * item // 8 + 1, item
    t64 = dataclasses.replace(t, word_bytes=64, bw_num=64)
    for item in (17, 64, 272):
        assert store_phase(t64, item, 0, 1, 64, 64 * item)[0] == 2 + item + 1, item


def test_dram_costs():
    d = derating(CFG)
    t = memory_timing(CFG)
    assert (t.row_bytes, t.page_miss, t.write_to_read) == (8192, d.page_miss, d.write_to_read)
    assert t.bw_num / t.bw_den == CFG.mem_bytes_per_cycle * (1 - 350 / 7800)  # refresh: tRFC of every tREFI
    assert d.page_miss == 3 and d.write_to_read == 3 and d.read_to_write == 1  # 26.6, 20.8, 9.2 ns at 100 MHz
    assert derating(preset("s10")) is None  # HBM2-class: faster than one DDR4-2400 channel
    assert DDR4_2400.write_to_read_ns == pytest.approx((12 + 4 + 9) / 1.2)  # CWL + BL/2 + tWTR_L, in tCK
    # a miss costs the open row's activation; rows 8 KB apart pay it on every row (partly hidden
    # behind the reads in flight)
    hit = load_phase(t, 16, 0, 1, 4, 64, open_row=0)[0]
    assert load_phase(t, 16, 0, 1, 4, 64)[0] == hit + t.page_miss
    one_row = load_phase(t, 16, 0, 3, 4, 64, open_row=0)
    three_rows = load_phase(t, 16, 0, 3, 4, 8192, open_row=0)
    assert three_rows[0] > one_row[0] and (one_row[2], three_rows[2]) == (0, 2)
    # a read waits for the turnaround after a write
    assert load_phase(t, 16, 0, 1, 4, 64, open_row=0, wait=3)[0] == hit + 3


def test_native_dma_phases_equal_the_python_definition():
    import random

    from accelml.sim import cycles, native

    if native.kernels() is None:
        pytest.skip(f"native kernels: {native.status()}")
    rnd = random.Random(1)
    t = memory_timing(CFG)
    for _ in range(200):
        item, length, rows = rnd.choice([5, 16, 17, 20, 64, 272]), rnd.randint(1, 9), rnd.randint(1, 5)
        stride = length * item + rnd.choice([0, 3, 100, 8192])
        addr, open_row, wait = rnd.randint(0, 9000), rnd.choice([None, 0, 1, -1]), rnd.choice([0, 0, 3])
        tt = t if rnd.random() < 0.5 else dataclasses.replace(t, row_bytes=0, bw_num=8, bw_den=1, max_outstanding=3)
        if rnd.random() < 0.3:  # 64-byte words: up to four entries a cycle
            tt = dataclasses.replace(tt, word_bytes=64, bw_num=tt.bw_num * 8)
        for py, name in ((cycles._load_phase_py, "dma_load_phase"), (cycles._store_phase_py, "dma_store_phase")):
            args = (item, addr, rows, length, stride, open_row, wait)
            assert cycles._phase(name, py, tt, *args) == py(tt, *args), (name, args)


def test_mfu_groups_stop_at_the_end_and_at_each_multiple_of_a_periodic_second_operand():
    assert mfu_groups(12, 0, 4) == 3 and mfu_groups(13, 0, 4) == 4 and mfu_groups(5, 0, 1) == 5
    assert mfu_groups(9, 3, 4) == 3  # [0, 3) [3, 6) [6, 9)
    assert mfu_groups(10, 6, 4) == 3  # [0, 4) [4, 6) [6, 10)
    assert mfu_groups(8, 8, 4) == mfu_groups(8, 20, 4) == 2  # read once: no wrap to stop at
    assert mfu_cycles("qnt", 10, 6, 4) == 3 + 1 + 3


def test_pool_takes_two_pairs_a_round_and_a_reciprocal_per_run_of_equal_divisors():
    assert pool_reciprocals([]) == 0
    assert pool_reciprocals([4, 4, 4]) == 1
    assert pool_reciprocals([4, 6, 6, 4, 9]) == 4  # the unit keeps only the last reciprocal
    assert pool_busy("max", 0, 9) == pool_busy("avg", 0, 9, 0) == POOL_SETUP_EMPTY
    # 3 rounds of 2 * 9 taps; the last round one pair (a cycle less); the averages 3 more a round
    assert pool_busy("max", 5, 9) == POOL_SETUP + 3 * 18 - 1
    assert pool_busy("avg_pad", 6, 9, 2) == POOL_SETUP + 3 * 21 + 2 * POOL_RECIP


def test_an_accumulating_mvc_takes_turns_with_the_mfus_fvrf_reads():
    """funcsim gives an accumulating mvc's FVRF read a range of its own for the ports: the MVU's
    FVRF read shares the MFU's port (layouts.SHARED_READS, as the RTL builds it), so an MFU
    instruction reading the FVRF and an accumulating mvc take turns, on a port per unit as on shared
    ports; a non-accumulating mvc runs beside it, as does one whose read has a port of its own
    (bitstreams/banking.py, own_fvrf_read)."""
    from accelml.bitstreams.banking import own_fvrf_read
    from accelml.hdl.program import assemble
    from accelml.sim.funcsim import FuncSim

    text = ("cfg in_h, r0, 4\ncfg in_w, r0, 4\ncfg out_w, r0, 4\ncfg npix, r0, 16\ncfg in_cb, r0, 1\n"
            "cfg cob, r0, 1\nseti r1, 1000\nseti r2, 2000\nqnt r1, r2, 512\nmvc r0, r0, r0, {acc}\nhalt")
    for cfg in (preset("a10"), preset("tiny")):
        assert (Space.FVRF, False) in shared_ports(cfg) and "mvu" in shared_ports(cfg)[Space.FVRF, False]
        cycles = {}
        for acc in (0, 1):
            for own in (False, True):
                sim = FuncSim(cfg, 1 << 20, numerics=False)
                if own:
                    sim.model.shared = own_fvrf_read(sim.model.shared)
                cycles[acc, own] = sim.run(assemble(text.format(acc=acc))).cycles
        assert cycles[0, False] == cycles[0, True] == cycles[1, True] < cycles[1, False], cfg.name


def _round_cycles_by_sets(tiles, reads, idx, in_cb, cob, gi, groups):
    """mvu_round_cycles by its definition: per round and tap, the set of entries its lanes read."""
    npix, taps = idx.shape
    pairs, out = npix * cob, []
    for q0 in range(0, pairs, tiles):
        cycles = 0
        for k in range(taps):
            entries = set()
            for q in range(q0, min(q0 + tiles, pairs)):
                pix, j = divmod(q, cob)
                b0 = 0 if groups is None else (groups[0] + j) // groups[1] * gi
                if idx[pix, k] >= 0:
                    entries.add(idx[pix, k] * in_cb + b0)
            cycles += gi * max(1, -(-len(entries) // reads))
        out.append(cycles)
    return out


def test_mvu_steps_take_a_cycle_per_v_distinct_vrf_entries():
    """Lanes of one pixel and input block share a read; taps outside the input read nothing; a step
    takes max(1, ceil(U / V)) cycles, a round gi of them per tap."""
    one_by_one = np.arange(9).reshape(9, 1)  # a 1x1 conv of 9 pixels: rounds of 4, 4 and 1 pixels
    assert list(mvu_round_cycles(4, 2, one_by_one, 1, 1, 1)) == [2, 2, 1]
    assert list(mvu_round_cycles(4, 2, one_by_one, 2, 2, 2)) == [2, 2, 2, 2, 2]  # 2 pixels a round
    assert list(mvu_round_cycles(4, 2, np.full((3, 2), -1), 1, 1, 1)) == [2]  # no reads: a cycle a step
    rnd = random.Random(5)
    for _ in range(200):
        tiles = rnd.randint(2, 8)
        reads = rnd.randint(1, tiles - 1)
        npix, taps = rnd.randint(1, 12), rnd.randint(1, 4)
        idx = np.array([[rnd.choice([-1, rnd.randrange(20)]) for _ in range(taps)] for _ in range(npix)])
        gi, go = rnd.randint(1, 3), rnd.randint(1, 3)
        cob = rnd.randint(1, 6)
        groups = rnd.choice([None, (rnd.randint(0, 3), go)])
        in_cb = gi * (6 + 3) if groups else gi
        got = list(mvu_round_cycles(tiles, reads, idx, in_cb, cob, gi, groups))
        assert got == _round_cycles_by_sets(tiles, reads, idx, in_cb, cob, gi, groups)


def test_mvu_busy_takes_each_rounds_cycles_or_its_writes():
    # T = 4 results written one a cycle: a round every max(its cycles, 4); kb = 3 before
    assert mvu_busy(4, 12, 3, width=1, lengths=[5, 2, 6]) == mvu_busy(4, 12, 3, width=1) + (5 + 4 + 6) - (3 + 4 + 4)
    assert mvu_busy(4, 8, 2, width=1, lengths=[2, 2]) == mvu_busy(4, 8, 2, width=1)  # one cycle a step: as before
