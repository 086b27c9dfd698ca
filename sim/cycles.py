"""Cycle model of the engine RTL (``accelml.hdl.engine``), carried by the functional simulator.

It models the hardware as built, state machine by state machine, so that on every whole-program
RTL test its total cycles and each unit's busy count equal the RTL's (tests/hdl/engine asserts it):

* **Control** (``hdl/engine/control.py``) takes the instructions in program order, one after the
  other, while the units run theirs concurrently: ``FETCH`` and ``DECODE``
  (1 cycle each), then ``ADVANCE`` (1 cycle, plus 1 per loop it closes) for ``nop seti addi add
  cfg`` and a zero-count ``loop``; a ``loop`` it enters goes straight to the next ``FETCH``. A unit
  instruction adds its check (1 cycle) and waits in ``ISSUE`` (1 cycle at least) until its unit's
  slot is free and no operand range conflicts with an instruction in flight; it is dispatched in
  that cycle (the unit takes it) and control goes on. ``halt`` waits for every unit. Control's busy
  count excludes the cycles spent waiting in ``ISSUE`` and ``halt``.
* **Units** each run one instruction (queue depth 1): a unit's slot frees the cycle after the
  unit reports done, and only then may a conflicting instruction (a read of what it writes, a write
  of what it reads or writes; VRF / MRF / FVRF entries and external-memory bytes over the span of
  each operand) or the unit's next instruction be dispatched. No chaining. With
  ``file_ports="shared"`` an instruction also waits for one of another unit that would use the
  same shared port of a file (one write port per file; one read port beside the MVU's T reads; the
  pool uses the MFU's, ``layouts.PORTS_OF``), whatever entries each touches, or with
  ``file_parts`` > 1 only when their spans touch a common part of the VRF or FVRF, each part having
  its own shared ports (``layouts.port_conflict``), and a DMA moves at most as many entries a cycle
  as the file has banks (``layouts.dma_max_lanes``). A
  banked MRF (``mrf_banked``) has one read port per bank, the MVU's, which a store of the MRF shares:
  the two wait for each other in the same way, whatever ``file_ports``.
* **MFU** (``hdl/engine/mfu.py``): pipelined, one group of up to ``mfu_width`` vectors read a
  cycle (``vop``'s two operands at once; :func:`mfu_groups`), handed to the unit the next cycle and
  written ``unit latency`` cycles later (latency 2, ``qnt`` 3): busy ``groups + 1 + latency``
  cycles (:func:`mfu_cycles`), done the cycle after. A fused ``vop`` passes each group through
  ``deq`` (its second operand from the VRF), ``vop``, ``vact`` (an activation) and ``qnt`` (the VRF
  as destination), op ``"deq+vop+vact+qnt"`` or the part of it used: the latencies add.
* **MVU** (``hdl/engine/mvu.py``, :func:`mvu_busy`): the ``cob * npix`` (pixel, output block)
  pairs T = ``tiles`` at a time, a round of ``kb = taps * gi`` steps, one per cycle, rounds back to
  back; a round's T results are written ``mfu_width`` = W a cycle (from any start), over
  D = ``ceil(T / W)`` cycles, so with ``kb < D`` every round after the first waits for them (a
  round every D cycles). Plus ``MVU_SETUP + D``: the window generator's divisions
  (``window.DIV_CYCLES``), the pipeline's fill and drain and the last round's writes
  (``MVU_SETUP_EMPTY`` without pairs). Done the cycle after its busy cycles.
* **pool** (``hdl/engine/pool.py``, :func:`pool_busy`), a unit of its own on the MFU's file ports
  and lanes, which the MFU lends it (so a pool and an MFU instruction are never in flight together,
  ``layouts.exclusive``, like a conflict): the
  (pixel, group of :func:`pool_group` channel blocks, up to ``mfu_width``) jobs ("pairs")
  ``POOL_LANES`` = 2 at a time (a *round*), their taps interleaved,
  one fold a cycle (each pair's next tap meets its previous fold's result from ``VectorOp``'s
  2-cycle latency): ``2 * taps`` cycles a round, a pair's end overlapped with the next round's
  folds for max; the averages scale each sum by the reciprocal (``POOL_ROUND_END`` = 3 cycles a
  round) and compute the reciprocal of a pixel's divisor where it differs from the previous
  pixel's (``POOL_RECIP`` cycles, not overlapped; :func:`pool_reciprocals`). A last round of one
  pair saves a cycle; plus ``POOL_SETUP`` (the divisions, the front pipeline and
  the last result; ``POOL_SETUP_EMPTY`` without pairs).
* **DMA** (``hdl/engine/dma.py``): a load unit and a store unit that share the memory port a
  transfer at a time (the first to ask holds it to its ``DONE``). Per transfer the setup cost is
  the RTL's: the dispatch cycle, a ``SETUP`` cycle (longer while the other DMA holds the port) and
  the ``DONE`` cycle around the ``LOAD`` / ``STORE`` phase, whose length this model computes by
  running the DMA's word-level logic against the memory model (:class:`MemoryTiming`: read
  latency, the limit of reads in flight, bandwidth token bucket, the open DRAM row and read/write
  turnaround, ``accelml.sim.dram``), per distinct transfer shape and DRAM state (cached; the loop
  is in ``native.c``, :func:`_load_phase_py` / :func:`_store_phase_py` its definition): a load's
  byte gearbox takes a word per cycle and writes up to ``dma_lanes`` entries per cycle (of one row:
  it takes the next row's bytes only once the row's are written), a store
  reads up to as many per cycle while they fit its buffer and writes a word per cycle. That phase
  is the unit's busy count.

External memory timing (:func:`memory_timing`) comes from the EngineConfig, the same numbers the
RTL testbench's memory model (``sim/rtl_tb/memory_model.v``) is built with.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.engine.layouts import (
    DMA_MAX_LANES,
    dma_lanes,
    dma_max_lanes,
    dma_store_room,
    exclusive,
    mvu_write_cycles,
    part_sizes,
    port_conflict,
    shared_ports,
)
from accelml.hdl.isa import Space

from . import native
from .dram import derating

NATIVE_PHASES = True  # the DMA phases in native.c where the kernels are built (else the Python definition)

__all__ = ["CycleModel", "NoTiming", "MemoryTiming", "memory_timing", "UNITS", "MFU_LATENCY",
           "mfu_cycles", "mfu_groups", "mfu_group_bounds", "mvu_busy", "mvu_round_cycles", "pool_busy", "pool_group",
           "pool_reciprocals"]

UNITS = ("ctl", "dma_load", "dma_store", "mvu", "mfu", "pool")  # status.Unit's names
MFU_LATENCY = {"deq": 2, "vact": 2, "vop": 2, "qnt": 3}  # hdl/mfu.py: each unit's pipeline latency
# hdl/engine/mvu.py and pool.py, measured on the RTL (tests/hdl/engine/test_engine_rtl.py keeps them
# exact): beyond window.DIV_CYCLES = 34, the command's hand-over, the file read, the tile engine's
# pipeline (MVU) or the dequantiser (pool)
MVU_SETUP = 44  # + ceil(T / mfu_width): the last round's writes
MVU_SETUP_EMPTY = 38  # an mvc without pairs
POOL_SETUP = 45
POOL_SETUP_EMPTY = 39
POOL_LANES = 2  # pool.LANES: pairs folded in turn
POOL_ROUND_END = {"max": 0, "avg": 3, "avg_pad": 3}  # cycles a round adds after its last fold
POOL_RECIP = 26  # a reciprocal: its start to the scaling that waits for it
SPACES = ("vrf", "mrf", "fvrf", "mem")


def mvu_busy(tiles: int, pairs: int, kb: int, *, width: int, group: int = 0, lengths=None) -> int:
    """Busy cycles of an ``mvc`` of ``pairs`` (pixel, output block) pairs of ``kb = taps * gi``
    steps each on ``tiles`` tile engines writing ``width`` (``mfu_width``) results a cycle
    (``group``: :func:`~accelml.hdl.engine.layouts.mvu_write_cycles`'s, a strided banked ``mvc``).
    ``lengths``: each round's cycles where its steps take more than one (:func:`mvu_round_cycles`),
    else ``kb`` each."""
    if pairs == 0:
        return MVU_SETUP_EMPTY
    rounds = -(-pairs // tiles)
    writes = mvu_write_cycles(tiles, width, group)
    if lengths is None:
        return MVU_SETUP + writes + kb + (rounds - 1) * max(kb, writes)
    return MVU_SETUP + writes + int(lengths[0]) + int(np.maximum(lengths[1:], writes).sum())


def mvu_round_cycles(tiles: int, reads: int, idx: np.ndarray, in_cb: int, cob: int, gi: int,
                     groups: tuple[int, int] | None = None) -> np.ndarray:
    """Each round's cycles of an ``mvc`` whose MVU reads the VRF through ``reads`` = V ports
    (``EngineConfig.vrf_reads``, fewer than ``tiles`` = T; ``hdl/engine/mvu.py``): a step reads
    the distinct VRF entries of the round's lanes that read one (a pair, its tap inside the input)
    V a cycle, so it takes max(1, ceil(U / V)) cycles for U entries; a round is ``gi`` steps per
    tap. ``idx``: the output pixels' taps (``layout.window_index``: the input pixel, -1 outside);
    lane t of round r takes pair ``q = r * T + t`` = ``pixel * cob + j``, reading input block
    ``b0(j) + k`` at step k of a tap, ``b0(j) = ((ob0 + j) // go) * gi`` for ``groups`` = (ob0, go),
    else 0 (dense)."""
    npix, taps = idx.shape
    pairs = npix * cob
    rounds = -(-pairs // tiles)
    q = np.arange(rounds * tiles)
    pix, j = np.minimum(q // cob, npix - 1), q % cob
    b0 = np.zeros_like(q) if groups is None else (groups[0] + j) // groups[1] * gi
    at = idx[pix]  # (lanes, taps)
    keys = np.where((q < pairs)[:, None] & (at >= 0), at * in_cb + b0[:, None], -1)
    keys = np.sort(keys.reshape(rounds, tiles, taps), axis=1)  # a round's lanes at each tap, in order
    distinct = (keys[:, 0] >= 0) + ((keys[:, 1:] != keys[:, :-1]) & (keys[:, 1:] >= 0)).sum(axis=1)
    return gi * np.maximum(1, -(-distinct // reads)).sum(axis=1)


def pool_group(in_cb: int, width: int) -> int:
    """Channel blocks the pool unit folds at once (a *job*): the largest power of two that divides
    ``in_cb`` and is at most ``width`` (``mfu_width``), so a job's blocks are consecutive entries of
    one pixel."""
    g = 1
    while 2 * g <= width and in_cb % (2 * g) == 0:
        g *= 2
    return g


def pool_busy(mode: str, pairs: int, taps: int, reciprocals: int = 0) -> int:
    """Busy cycles of a ``pool`` (``mode`` a PoolMode name) of ``pairs = pixels * in_cb / g`` jobs
    (``g = pool_group(in_cb, mfu_width)`` channel blocks each) of ``taps = kh * kw`` taps,
    computing ``reciprocals`` reciprocals (the averages: :func:`pool_reciprocals` of the output
    pixels' divisors)."""
    if pairs == 0:
        return POOL_SETUP_EMPTY
    rounds = -(-pairs // POOL_LANES)
    return (POOL_SETUP + rounds * (POOL_LANES * taps + POOL_ROUND_END[mode]) - pairs % POOL_LANES
            + (mode != "max") * POOL_RECIP * reciprocals)


def pool_reciprocals(divisors) -> int:
    """Reciprocals an average ``pool`` computes: one for its first output pixel and one for each
    pixel whose divisor differs from the previous pixel's (the unit keeps the last one)."""
    d = np.asarray(divisors).ravel()
    return int(d.size > 0) + int(np.count_nonzero(d[1:] != d[:-1]))


def mfu_groups(count: int, period: int = 0, width: int = 1) -> int:
    """Beats of the engine MFU over ``count`` vectors: groups of at most ``width`` consecutive
    vectors, a group never crossing a multiple of a periodic second operand's ``period``
    (``0 < period < count``), so its second operands are consecutive entries too."""
    if 0 < period < count:
        return (count // period) * -(-period // width) + -(-(count % period) // width)
    return -(-count // width)


def mfu_group_bounds(count: int, period: int = 0, width: int = 1):
    """The engine MFU's groups over ``count`` vectors in order, ``(first, end)`` each (as many as
    :func:`mfu_groups` counts): at most ``width``, up to the end and to the next multiple of
    ``period`` (when non-zero)."""
    i = 0
    while i < count:
        size = min(width, count - i, period - i % period if period else width)
        yield i, i + size
        i += size


def mfu_cycles(op: str, vectors: int, period: int = 0, width: int = 1) -> int:
    """Busy cycles of the engine MFU over ``vectors`` vectors: one group read a cycle
    (:func:`mfu_groups`; both ``vop`` operands at once), the unit's input cycle and latency behind
    the last read. ``op`` names a unit, or the units a fused ``vop`` chains (``"deq+vop+vact+qnt"``)."""
    return mfu_groups(vectors, period, width) + 1 + sum(MFU_LATENCY[u] for u in op.split("+"))


@dataclass(frozen=True)
class MemoryTiming:
    latency: int  # cycles from a read's acceptance to its data
    max_outstanding: int  # reads in flight at most
    bw_num: int  # bandwidth: bw_num / bw_den bytes per cycle (a token bucket holding a word and a cycle's credit)
    bw_den: int
    word_bytes: int
    row_bytes: int = 0  # DRAM row: a request to another row than the open one waits page_miss (0: none)
    page_miss: int = 0
    read_to_write: int = 0  # cycles from a read's acceptance to a write's, at least
    write_to_read: int = 0  # cycles from a write's acceptance to a read's, at least
    max_lanes: int = DMA_MAX_LANES  # the DMA's lanes at most (layouts.dma_max_lanes of the file)


def memory_timing(cfg: EngineConfig) -> MemoryTiming:
    """The external memory's timing: read latency ``mem_latency_cycles``, bandwidth
    ``mem_bytes_per_cycle`` (the narrower of port and sustained bandwidth) times the DRAM's refresh
    efficiency, the DRAM's page-miss and turnaround costs (``accelml.sim.dram``; none for memory
    faster than one DDR4 channel) and, as the EngineConfig has no such field, as many reads in
    flight as cover the latency at full bandwidth plus one."""
    w = cfg.mem_port_bits // 8
    bpc = Fraction(cfg.mem_bytes_per_cycle).limit_denominator(1000)
    outstanding = math.ceil(cfg.mem_latency_cycles * float(bpc) / w) + 1
    d = derating(cfg)
    if d is None:
        return MemoryTiming(max(1, cfg.mem_latency_cycles), outstanding, bpc.numerator, bpc.denominator, w)
    bpc *= d.efficiency
    return MemoryTiming(max(1, cfg.mem_latency_cycles), outstanding, bpc.numerator, bpc.denominator, w,
                        d.row_bytes, d.page_miss, d.read_to_write, d.write_to_read)


def dma_timing(cfg: EngineConfig, space: Space) -> MemoryTiming:
    """:func:`memory_timing` with the DMA's lanes on ``space`` (``layouts.dma_max_lanes``)."""
    return dataclasses.replace(memory_timing(cfg), max_lanes=dma_max_lanes(cfg, space))


# -- the DMA's LOAD / STORE phases, word by word (hdl/engine/dma.py against memory_model.v) -------

class _Dram:
    """The memory model's request gate: bandwidth tokens, the open row, read/write turnaround
    (memory_model.v's ``req_ready`` and activation logic)."""

    def __init__(self, t: MemoryTiming, open_row: int | None, wait: int):
        self.t, self.open, self.act_done, self.wait = t, open_row, 0, wait
        self.word_credit = t.word_bytes * t.bw_den
        self.cap = self.word_credit + t.bw_num  # no fraction of a word is lost while requests stream
        self.credit = self.cap
        self.last = -1  # the last accepted request's cycle

    def ready(self, now: int, valid: bool, byte_addr: int) -> bool:
        """Whether a request presented (``valid``) at ``now`` is accepted; opens its row if not."""
        t = self.t
        ok = self.credit >= self.word_credit and now >= self.wait
        if t.row_bytes:
            row = byte_addr // t.row_bytes
            if valid and row != self.open:
                self.open, self.act_done = row, now + t.page_miss
                ok = False
            ok = ok and now >= self.act_done
        return ok

    def tick(self, accept: bool, now: int) -> None:
        if accept:
            self.last = now
        self.credit = min(self.cap, self.credit - (self.word_credit if accept else 0) + self.t.bw_num)


def _load_phase_py(t: MemoryTiming, item: int, addr: int, rows: int, length: int, mem_stride: int,
               open_row: int | None = None, wait: int = 0) -> tuple[int, int, int | None]:
    """(cycles a load spends in ``LOAD``, the cycle of its last memory request, the open row after
    it): ``addr`` matters modulo the DRAM row (the word without one), ``open_row`` is the open row
    at its start (row index of ``addr``'s row being ``addr // row_bytes``), ``wait`` the cycle its
    first request may be accepted (read after write)."""
    w = t.word_bytes
    lanes = dma_lanes(w, item, t.max_lanes)
    row_bytes = length * item
    dram = _Dram(t, open_row, wait)
    due: list[int] = []  # read responses in flight, in order: the cycle each is valid from
    head = 0
    # request generator
    g_rows, g_row = rows, addr
    g_word, g_last = addr // w, (addr + row_bytes - 1) // w
    g_active = True
    # gearbox
    fill, c_rows, c_row, c_rem, c_first = 0, rows, addr, row_bytes, True
    e_left = rows * length
    now = 0
    while True:
        if e_left == 0:
            return now + 1, dram.last, dram.open
        count = len(due) - head
        ready = dram.ready(now, g_active, g_word * w) and count < t.max_outstanding
        accept = g_active and ready
        emit = min(fill // item, lanes)
        fill_after = fill - emit * item
        take = fill_after < item and c_rem != 0
        got = take and count > 0 and due[head] <= now
        # next state
        if accept:
            due.append(now + t.latency)
            if g_word == g_last:
                g_rows -= 1
                g_row += mem_stride
                g_word, g_last = g_row // w, (g_row + row_bytes - 1) // w
                if g_rows == 0:
                    g_active = False
            else:
                g_word += 1
        e_left -= emit
        if got:
            head += 1
            off = c_row % w if c_first else 0
            k = min(c_rem, w - off)
            fill = fill_after + k
            c_rem -= k
            c_first = False
            if c_rem == 0 and c_rows != 1:
                c_rows -= 1
                c_row += mem_stride
                c_rem, c_first = row_bytes, True
        else:
            fill = fill_after
        dram.tick(accept, now)
        now += 1


def _store_phase_py(t: MemoryTiming, item: int, addr: int, rows: int, length: int, mem_stride: int,
                    open_row: int | None = None, wait: int = 0) -> tuple[int, int, int | None]:
    """As :func:`load_phase`, for a store in ``STORE``."""
    w = t.word_bytes
    lanes, room = dma_lanes(w, item, t.max_lanes), dma_store_room(w, item, t.max_lanes)
    dram = _Dram(t, open_row, wait)
    s_i, s_read, p_n = 0, False, 0  # next entry of the row to read, all read, entries read last cycle
    o_rows, o_row, o_pos, o_fill = rows, addr, addr % w, 0
    o_word = addr // w
    now = 0
    while True:
        pend = p_n * item
        s_pushed = s_read and p_n == 0
        send = o_fill != 0 and (o_pos + o_fill >= w or s_pushed)
        accept = dram.ready(now, send, o_word * w) and send
        row_end = s_pushed and o_fill == 0  # row written (no write, no entry this cycle)
        n = 0 if s_read else min(lanes, length - s_i, (room - o_fill - pend) // item)
        if accept:
            o_fill -= w - o_pos if o_pos + o_fill >= w else o_fill
            o_pos = 0
            o_word += 1
        o_fill += pend
        p_n = n
        s_i += n
        s_read = s_read or s_i == length
        if row_end:  # the next row, or the end
            if o_rows == 1:
                return now + 1, dram.last, dram.open
            o_rows -= 1
            o_row += mem_stride
            o_pos, o_word = o_row % w, o_row // w
            s_i, s_read = 0, False
        dram.tick(accept, now)
        now += 1


def _phase(kernel: str, py, t: MemoryTiming, *args) -> tuple[int, int, int | None]:
    k = native.kernels() if NATIVE_PHASES else None
    if k is None:
        return py(t, *args)
    item, addr, rows, length, mem_stride, open_row, wait = args
    tv = np.array([t.latency, t.max_outstanding, t.bw_num, t.bw_den, t.word_bytes, t.row_bytes, t.page_miss,
                   dma_lanes(t.word_bytes, item, t.max_lanes), dma_store_room(t.word_bytes, item, t.max_lanes)],
                  np.int64)
    out = np.zeros(3, np.int64)
    cycles = getattr(k, kernel)(tv.ctypes.data, item, addr, rows, length, mem_stride, int(open_row is not None),
                                open_row or 0, wait, out.ctypes.data)
    if cycles < 0:
        raise MemoryError("dma phase: out of memory")
    return int(cycles), int(out[0]), int(out[2]) if out[1] else None


@functools.lru_cache(maxsize=1 << 16)
def load_phase(t: MemoryTiming, item: int, addr: int, rows: int, length: int, mem_stride: int,
               open_row: int | None = None, wait: int = 0) -> tuple[int, int, int | None]:
    """(cycles a load spends in ``LOAD``, the cycle of its last memory request, the open row after
    it): ``addr`` matters modulo the DRAM row (the word without one), ``open_row`` is the open row
    at its start (row index of ``addr``'s row being ``addr // row_bytes``), ``wait`` the cycle its
    first request may be accepted (read after write). Computed by ``native.c``'s copy of
    :func:`_load_phase_py` where the kernels are built (tests/sim/test_cycles.py compares them)."""
    return _phase("dma_load_phase", _load_phase_py, t, item, addr, rows, length, mem_stride, open_row, wait)


@functools.lru_cache(maxsize=1 << 16)
def store_phase(t: MemoryTiming, item: int, addr: int, rows: int, length: int, mem_stride: int,
                open_row: int | None = None, wait: int = 0) -> tuple[int, int, int | None]:
    """As :func:`load_phase`, for a store in ``STORE`` (:func:`_store_phase_py`)."""
    return _phase("dma_store_phase", _store_phase_py, t, item, addr, rows, length, mem_stride, open_row, wait)


@dataclass
class _InFlight:
    free: int  # first cycle the unit's slot is free again (the cycle after its done)
    ranges: tuple  # (space, lo, hi, write)


def _conflict(a: tuple, b: tuple) -> bool:
    for sa, la, ha, wa in a:
        for sb, lb, hb, wb in b:
            if sa == sb and (wa or wb) and la < hb and lb < ha:
                return True
    return False


class CycleModel:
    """Control's time line and the units' slots. FuncSim calls :meth:`ctl` for a control-only
    instruction, :meth:`dispatch` for a unit instruction (after its checks), :meth:`skip` for a
    unit instruction with nothing to do, and :meth:`halt`."""

    def __init__(self, cfg: EngineConfig, mem_bytes: int):
        self.cfg = cfg
        self.dma = {space: dma_timing(cfg, space) for space in Space}  # a transfer's, by its file
        self.t = 0  # the cycle the next instruction's FETCH starts
        self.busy: dict[str, int] = defaultdict(int)
        self.inflight: dict[str, _InFlight] = {}
        self.shared = shared_ports(cfg)  # ports units share (layouts.shared_ports)
        # the rule for them, on the files' parts (a study may time another)
        self.port_conflict = functools.partial(port_conflict, parts=part_sizes(cfg))
        self.port_free = 0  # the memory port: DONE cycle of the transfer holding it last
        self.last_access: tuple[int, bool] | None = None  # DRAM: (cycle, is a write) of the last request
        self.open_row: int | None = None  # DRAM: the open row
        self.end = 0  # completion cycle of the last instruction (insn_end)
        self.finish = 0  # total cycles of a halted run
        self.issue_time = 0  # instructions accounted (kept for the replay's bookkeeping)

    # -- control ----------------------------------------------------------------------------------
    def ctl(self, entered_loop: bool = False) -> int:
        """nop / seti / addi / add / cfg / zero-count loop, or a loop entered (straight back to
        FETCH); the loops an instruction closes are added by :meth:`closed`."""
        self.issue_time += 1
        cycles = 2 if entered_loop else 3
        self.t += cycles
        self.busy["ctl"] += cycles
        self.end = max(self.end, self.t)
        return self.t

    def skip(self) -> int:
        """A unit instruction with nothing to move (FETCH, DECODE, CHECK, ADVANCE)."""
        self.issue_time += 1
        self.t += 4
        self.busy["ctl"] += 4
        self.end = max(self.end, self.t)
        return self.t

    def closed(self, loops: int) -> None:
        """The instruction just accounted closed ``loops`` loops: one more ADVANCE cycle each."""
        self.t += loops
        self.busy["ctl"] += loops

    def halt(self) -> int:
        self.issue_time += 1
        self.busy["ctl"] += 2
        h = max([self.t + 2, *(f.free for f in self.inflight.values())])
        self.finish = h + 1
        self.end = max(self.end, h)
        return self.finish

    # -- units ------------------------------------------------------------------------------------
    def dispatch(self, unit: str, ranges, *, mfu: tuple[str, int] | None = None, dma: tuple | None = None,
                 cycles: tuple[int, int] | None = None) -> int:
        """A unit instruction: ``ranges`` its operands ((space, lo, hi, write), space one of
        ``SPACES``); its work is ``mfu`` (op, vectors, vop's period or 0), ``dma`` (its file's Space,
        item bytes, addr, rows, length, mem_stride) or ``cycles`` (busy cycles, cycles from dispatch
        to done). Returns its done cycle."""
        self.issue_time += 1
        ranges = tuple(r for r in ranges if r[2] > r[1])
        d = self.t + 3  # FETCH, DECODE, CHECK, then ISSUE
        held = self.inflight.get(unit)
        if held is not None:
            d = max(d, held.free)
        for other, f in self.inflight.items():
            if f.free > d and (_conflict(ranges, f.ranges) or exclusive(unit, other)
                               or self.port_conflict(self.shared, unit, ranges, other, f.ranges)):
                d = f.free
        if mfu is not None:
            op, count, period = mfu
            work = mfu_cycles(op, count, period, self.cfg.mfu_width)
            done = d + 1 + work
        elif dma is not None:
            space, item, addr, rows, length, mem_stride = dma
            t = self.dma[space]
            store = unit == "dma_store"
            start = max(d + 1, self.port_free) + 1  # SETUP (granted when the port is free), then the phase
            # the DRAM's state at the phase's start, relative to the transfer
            unit_bytes = t.row_bytes or t.word_bytes
            base = addr - addr % unit_bytes
            first_row = base // t.row_bytes if t.row_bytes else 0
            open_row = None if self.open_row is None or not t.row_bytes else self.open_row - first_row
            wait = 0
            if self.last_access is not None and self.last_access[1] != store:
                gap = t.read_to_write if store else t.write_to_read
                wait = max(0, self.last_access[0] + gap - start)
            phase = store_phase if store else load_phase
            work, last, row = phase(t, item, addr - base, rows, length, mem_stride, open_row, wait)
            if last >= 0:
                self.last_access = (start + last, store)
            self.open_row = None if row is None else row + first_row
            done = start + work
            self.port_free = done
        else:
            work, total = cycles
            done = d + total
        self.busy[unit] += work
        self.inflight[unit] = _InFlight(done + 1, ranges)
        self.t = d + 2  # ISSUE, ADVANCE
        self.busy["ctl"] += 4
        self.end = max(self.end, done)
        return done

    @property
    def cycles(self) -> int:
        return self.finish or max(self.end, self.t)


class NoTiming(CycleModel):
    """A cycle model that models nothing: for repeat runs of a program whose timing is known
    (the timing of a program does not depend on its data: no instruction reads data into a
    register, so control flow and every access are fixed by the program)."""

    def ctl(self, entered_loop: bool = False) -> int:
        self.issue_time += 1
        return 0

    def closed(self, loops: int) -> None:
        pass

    def skip(self) -> int:
        self.issue_time += 1
        return 0

    def halt(self) -> int:
        self.issue_time += 1
        return 0

    def dispatch(self, unit, ranges, **kw) -> int:
        self.issue_time += 1
        return 0

    @property
    def cycles(self) -> int:
        return 0
