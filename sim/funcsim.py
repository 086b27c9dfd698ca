"""ISA functional simulator: whole instructions at a time, in vectorised numpy and native kernels.

Executes a program on the architectural state (external memory image, VRF, MRF, FVRF, scalar and
configuration registers) with the arithmetic of ``accelml.sim.bfp`` and the window semantics of
``accelml.sim.golden``, so its results are bit-exact with the golden layer ops. It counts
instructions, tile operations, MACs and DMA bytes, and drives the event-based cycle model of
``accelml.sim.cycles``.

Each instruction is checked (addresses, window geometry, loop structure, step budget) and then
does its data work. Control flow and every address depend on the program alone, never on the data
(no instruction reads data into a register), so a run records its data work as a trace: the
checked operations in execution order. A later run of the same program from the same registers on
a memory of the same shape, without the cycle model, replays the trace: the data work only, with
runs of multi-function unit operations that feed each other (add, ReLU, quantise, store) done in
one pass over the data. Replay computes the same bits and raises the same data-dependent errors
(overflow, invalid encodings) naming the same instruction, with the state the instruction-by-
instruction run leaves: a fused run checks before it writes, and falls back to its instructions
one by one when anything would fail.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.engine.dma import space_lanes
from accelml.hdl.engine.layouts import mvu_gathers
from accelml.hdl.errors import ExecutionError, NumericsError
from accelml.hdl.isa import MAX_LOOP_DEPTH, NUM_REGS, SPEC, Act, Cfg, Dest, Opcode, PoolMode, Space, VecOp
from accelml.hdl.program import Program, cfg_value

from . import bfp, golden, native
from .bfp import BfpTensor
from .cycles import (
    CycleModel,
    NoTiming,
    mfu_group_bounds,
    mvu_busy,
    mvu_round_cycles,
    pool_busy,
    pool_group,
    pool_reciprocals,
)
from .layout import pixel_grid, window_index
from .memory import BAD_BFP, BAD_FP, ExternalMemory, decode_bfp, decode_fp, encode_bfp, encode_fp

INTEGER_MVU = True  # MVC products in 8-bit integers where the machine and the format allow (native.c)
_TILES_PER_LOAD = 1 << 32  # provenance tag of an MRF tile: load tag * this + index within the load
_PANEL_CACHE_BYTES = 2 << 30  # prepared weight panels kept per constant image, at most
_MASK32 = 0xFFFF_FFFF

_NO_RANGE = np.iinfo(np.int64).max
_RECIPROCALS_MAX = 512


_CFG_DEFAULTS = {Cfg.KH: 1, Cfg.KW: 1, Cfg.STRIDE_H: 1, Cfg.STRIDE_W: 1, Cfg.DIL_H: 1, Cfg.DIL_W: 1,
                 Cfg.IN_H: 1, Cfg.IN_W: 1, Cfg.IN_CB: 1, Cfg.OUT_W: 1, Cfg.NPIX: 1, Cfg.COB: 1}


@functools.lru_cache(maxsize=256)
def _round_cycles(tiles: int, reads: int, geom: golden.ConvGeom, pixels: tuple, in_cb: int, cob: int, gi: int,
                  groups: tuple | None) -> np.ndarray:
    """:func:`~accelml.sim.cycles.mvu_round_cycles` of an ``mvc``'s window, kept per shape."""
    out = mvu_round_cycles(tiles, reads, window_index(geom, pixels)[0], in_cb, cob, gi, groups)
    out.flags.writeable = False
    return out


@dataclass
class Stats:
    instructions: int = 0
    by_opcode: Counter = field(default_factory=Counter)
    tile_ops: int = 0
    macs: int = 0
    dma_load_bytes: int = 0
    dma_store_bytes: int = 0
    cycles: int = 0
    busy: dict = field(default_factory=dict)
    wall_seconds: float = 0.0

    def summary(self, cfg: EngineConfig) -> str:
        peak = cfg.peak_macs_per_cycle
        util = self.macs / (self.cycles * peak) if self.cycles else 0.0
        lines = [
            f"instructions executed : {self.instructions}",
            f"MVU tile operations   : {self.tile_ops}",
            f"MACs                  : {self.macs}",
            f"DMA bytes (load/store): {self.dma_load_bytes} / {self.dma_store_bytes}",
            f"modelled cycles       : {self.cycles} ({self.cycles / cfg.clock_mhz:.1f} us at {cfg.clock_mhz:g} MHz)",
            f"MVU utilisation       : {100 * util:.1f} % of {peak} MACs/cycle",
        ]
        return "\n".join(lines)

    def _counts(self) -> tuple[int, int, int, int]:
        return self.tile_ops, self.macs, self.dma_load_bytes, self.dma_store_bytes

    def _add_counts(self, delta) -> None:
        self.tile_ops += delta[0]
        self.macs += delta[1]
        self.dma_load_bytes += delta[2]
        self.dma_store_bytes += delta[3]


# -- programs prepared for execution ------------------------------------------------------------

@dataclass
class _Trace:
    """The data work of one run: ``entries`` are (step, pc, function, arguments) in order."""

    key: tuple  # what the control flow and the checks depended on (see FuncSim._trace_key)
    steps: int
    entries: list
    by_opcode: Counter
    counts: tuple  # tile_ops, macs, dma bytes loaded and stored
    regs: list  # scalar and configuration registers at the end
    cfgr: dict


@dataclass
class _Prepared:
    insns: tuple
    code: list  # per instruction: (opcode, handler, arguments)
    trace: _Trace | None = None


# id(program) -> (program, its preparation); every access holds the lock (a server runs programs on
# several threads; a weakref callback may drop an entry at any time)
_PREPARED: dict[int, tuple[weakref.ref, _Prepared]] = {}
_PREPARED_LOCK = threading.Lock()


def _forget(key: int, ref: weakref.ref) -> None:
    with _PREPARED_LOCK:
        held = _PREPARED.get(key)
        if held is not None and held[0] is ref:
            del _PREPARED[key]


def _prepare(insns: tuple) -> _Prepared:
    code = []
    for insn in insns:
        op, values = insn.op, dict(insn.fields)
        code.append((op, _HANDLERS.get(op), tuple(values[name] for name, _ in SPEC[op])))
    return _Prepared(insns, code)


def _prepared(program: Program | list) -> tuple[_Prepared, bool]:
    """The decoded instructions of a program, kept per Program object while its instruction list
    is unchanged; (preparation, whether it is kept)."""
    if not isinstance(program, Program):
        return _prepare(tuple(program)), False
    insns = tuple(program.instructions)
    key = id(program)
    with _PREPARED_LOCK:
        held = _PREPARED.get(key)
    if held is not None and held[0]() is program and held[1].insns == insns:
        return held[1], True
    prep = _prepare(insns)
    ref = weakref.ref(program, lambda r, key=key: _forget(key, r))
    with _PREPARED_LOCK:
        _PREPARED[key] = (ref, prep)
    return prep, True


class FuncSim:
    """Architectural state of one engine plus an interpreter for its programs."""

    def __init__(self, cfg: EngineConfig, memory: ExternalMemory | int, *, numerics: bool = True,
                 timing: bool = True):
        """``numerics=False`` runs control flow, address checks and the cycle model only (fast
        timing); the data in the files and memory are then not computed. ``timing=False`` skips
        the cycle model (``Stats.cycles`` and ``insn_end`` stay 0): for repeat runs of a program
        whose timing is already known, since it does not depend on the data."""
        self.cfg = cfg
        self.numerics = numerics
        self.timing = timing
        self.insn_end: np.ndarray | None = None  # completion cycle of each instruction (last execution)
        self.mem = memory if isinstance(memory, ExternalMemory) else ExternalMemory(cfg, memory)
        n = cfg.native_dim
        mdt = np.int16 if cfg.mantissa_bits <= 15 else np.int32
        self.vrf_mant = np.zeros((cfg.vrf_vectors, n), mdt)
        self.vrf_exp = np.full(cfg.vrf_vectors, cfg.exp_min, np.int16)
        # a banked MRF (cfg.mrf_banked) has a second mrf_tiles of room past the file's: an mvc's
        # tiles gathered there in the unbanked order (_x_mvc_banked); programs cannot address it
        scratch = cfg.mrf_tiles if cfg.mrf_banked else 0
        self.mrf_mant = np.zeros((cfg.mrf_tiles + scratch, n, n), mdt)
        self.mrf_exp = np.full((cfg.mrf_tiles + scratch, n), cfg.exp_min, np.int16)
        # and a second fvrf_vectors: a strided mvc's results gathered there (_x_mvc_banked)
        self.fvrf = np.zeros((cfg.fvrf_vectors * (2 if cfg.mrf_banked else 1), n), np.float32)
        # where each MRF tile came from: a load of the constant image (tag, index) or -1
        self.mrf_src = np.full(cfg.mrf_tiles + scratch, -1, np.int64)
        self.regs = [0] * NUM_REGS
        self.cfgr = {k: _CFG_DEFAULTS.get(k, 0) for k in Cfg}
        self.stats = Stats()
        self.model = (CycleModel if timing else NoTiming)(cfg, self.mem.size)
        self._buffers: dict[str, np.ndarray] = {}
        self._buffer_ptrs: dict[str, int] = {}
        self._scratch_range = np.zeros(4, np.int64)
        self._p_range = native.ptr(self._scratch_range)
        self._depths = {Space.VRF: cfg.vrf_vectors, Space.MRF: cfg.mrf_tiles, Space.FVRF: cfg.fvrf_vectors}
        self._items = {Space.VRF: cfg.bfp_vector_bytes, Space.MRF: cfg.tile_bytes, Space.FVRF: cfg.fp_vector_bytes}
        self._rec: list | None = None  # the trace being recorded
        self._mrf_pending: list | None = None  # deferred MRF loads of a replay: (first, end, load)
        self._pc = 0
        self._step = 0
        # the native kernels and the register files' addresses, for the DMA and MFU paths
        k = native.kernels()
        one_byte = cfg.mantissa_bytes == 1 and mdt == np.int16
        self._k = k if k is not None and one_byte and cfg.exponent_bits <= 8 and cfg.exp_max <= 127 else None
        self._p_vm, self._p_ve = native.ptr(self.vrf_mant), native.ptr(self.vrf_exp)
        self._p_mm, self._p_me = native.ptr(self.mrf_mant), native.ptr(self.mrf_exp)
        self._p_fv = native.ptr(self.fvrf)
        self._p_mem = native.ptr(self.mem.data)
        # a fused vop quantising into the VRF runs the kernel _fuse uses (its sums go to a scratch)
        self._chain_q = self._k is not None and _fusable(cfg)

    # -- helpers --------------------------------------------------------------------------------
    def reg(self, r: int) -> int:
        return 0 if r == 0 else self.regs[r]

    def c(self, key: Cfg):
        return cfg_value(key, self.cfgr[key])

    def _depth(self, space: Space) -> int:
        return self._depths[space]

    def _span(self, space: Space, start: int, count: int) -> slice:
        depth = self._depths[space]
        if start < 0 or start + count > depth:
            raise ExecutionError(
                f"{space.name} access [{start}, {start + count}) outside its {depth} entries"
            )
        return slice(start, start + count)

    def _item_bytes(self, space: Space) -> int:
        return self._items[space]

    def _emit(self, fn, *args) -> None:
        """Do an instruction's data work (recorded for replay when a trace is being recorded)."""
        if self._rec is not None:
            self._rec.append((self._step, self._pc, fn, args))
        fn(self, *args)

    # -- program execution ----------------------------------------------------------------------
    def _trace_key(self) -> tuple:
        # everything the control flow and the checks of a run depend on besides the program
        return (self.cfg, self.mem.size, self.mem.frozen, tuple(self.regs), tuple(self.cfgr.values()))

    def run(self, program: Program | list, *, max_steps: int = 50_000_000) -> Stats:
        prep, kept = _prepared(program)
        self.insn_end = np.zeros(len(prep.code), np.int64)
        t0 = time.perf_counter()
        key = self._trace_key()
        trace = prep.trace
        if (trace is not None and not self.timing and self.numerics and trace.key == key
                and trace.steps <= max_steps):
            self._replay(trace, prep.code, key)
            steps = trace.steps
        else:
            record = self.numerics and kept
            counts = self.stats._counts()
            by_opcode = Counter(self.stats.by_opcode)
            self._rec = [] if record else None
            try:
                steps = self._interpret(prep.code, max_steps)
                rec = self._rec
            finally:
                self._rec = None
            if record:
                after = self.stats._counts()
                delta = self.stats.by_opcode.copy()
                delta.subtract(by_opcode)
                prep.trace = _Trace(key, steps, _fuse(rec, self.cfg), +delta,
                                    tuple(a - b for a, b in zip(after, counts, strict=True)), list(self.regs),
                                    dict(self.cfgr))
        self.stats.instructions = steps
        self.stats.cycles = self.model.cycles
        self.stats.busy = dict(self.model.busy)
        self.stats.wall_seconds += time.perf_counter() - t0
        return self.stats

    def _interpret(self, code: list, max_steps: int, stop: int | None = None) -> int:
        """Execute instruction by instruction; returns the number executed (``stop``: end before
        executing that step, for rebuilding the state a replay failed in)."""
        n = len(code)
        hits = [0] * n
        pc, steps, loops = 0, 0, []  # loops: [first, last, remaining]
        model, timing, insn_end = self.model, self.timing, self.insn_end
        try:
            while True:
                if steps == stop:
                    break
                if pc >= n:
                    raise ExecutionError(f"instruction {pc}: ran past the end of the program without HALT")
                op, fn, args = code[pc]
                steps += 1
                if steps > max_steps:
                    raise ExecutionError(f"instruction {pc}: more than {max_steps} instructions executed")
                hits[pc] += 1
                if op is Opcode.HALT:
                    model.halt()
                    if timing:
                        insn_end[pc] = model.end
                    break
                self._pc, self._step = pc, steps
                try:
                    if op is Opcode.LOOP:
                        nxt = self._loop(pc, args, loops, n)
                        if nxt == pc + 1:  # entered its body
                            pc = nxt
                            continue
                    else:
                        fn(self, *args)
                        nxt = pc + 1
                except (ExecutionError, NumericsError) as e:
                    if str(e).startswith("instruction "):
                        raise
                    raise type(e)(f"instruction {pc} ({op.name.lower()}): {e}") from None
                if timing:
                    insn_end[pc] = model.end
                # past the instruction (a zero-count loop: past its body, as if the body's last
                # instruction had just run), closing or repeating every loop whose body ends there
                pc = nxt
                closed = 0
                while loops and pc - 1 == loops[-1][1]:
                    loops[-1][2] -= 1
                    if loops[-1][2] > 0:
                        pc = loops[-1][0]
                        break
                    loops.pop()
                    closed += 1
                if closed:
                    model.closed(closed)
        finally:
            by_opcode = self.stats.by_opcode
            for i, h in enumerate(hits):
                if h:
                    by_opcode[code[i][0].name] += h
        return steps

    def _mrf_materialize(self, lo: int, hi: int) -> None:
        """Decode the deferred MRF loads, in order, up to the last one writing tiles [lo, hi)."""
        pending = self._mrf_pending
        if not pending:
            return
        last = max((i for i, (a, b, _) in enumerate(pending) if a < hi and lo < b), default=-1)
        if last >= 0:
            self._mrf_pending = None  # decode now
            for _, _, load in pending[:last + 1]:
                _x_ld(self, *load)
            del pending[:last + 1]
            self._mrf_pending = pending

    def _mrf_settle(self) -> None:
        """End deferring MRF loads: decode those whose tiles no later one overwrites entirely."""
        pending, self._mrf_pending = self._mrf_pending, None
        covered: list[tuple[int, int]] = []  # tiles written by later loads: sorted, merged ranges
        keep = []
        for lo, hi, load in reversed(pending or []):
            if not any(a <= lo and hi <= b for a, b in covered):
                keep.append(load)
            merged = []
            for a, b in sorted([*covered, (lo, hi)]):
                if merged and a <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
                else:
                    merged.append((a, b))
            covered = merged
        for load in reversed(keep):
            _x_ld(self, *load)

    def _replay(self, trace: _Trace, code: list, key: tuple) -> None:
        """Run a recorded trace's data work; the registers and counters end as the run's did.
        Weight loads from the constant image are decoded only when something reads them or at
        the end (a load whose tiles later loads overwrite is not decoded at all); they are checked
        when they execute, as instruction by instruction."""
        self._mrf_pending = []
        try:
            try:
                for step, pc, fn, args in trace.entries:
                    self._pc, self._step = pc, step
                    fn(self, *args)
            finally:
                self._mrf_settle()
        except (ExecutionError, NumericsError) as e:
            # the state the failing instruction met: control flow up to it, without the data work
            # (done above); then its error, named as the instruction-by-instruction run names it
            step, pc = self._step, self._pc
            self.regs[:] = list(key[3])
            self.cfgr = dict(zip(Cfg, key[4], strict=True))
            numerics, self.numerics = self.numerics, False
            try:
                self._interpret(code, step, stop=step - 1)
            finally:
                self.numerics = numerics
            op = code[pc][0]
            self.stats.by_opcode[op.name] += 1
            if str(e).startswith("instruction "):
                raise
            raise type(e)(f"instruction {pc} ({op.name.lower()}): {e}") from None
        self.regs[:] = trace.regs
        self.cfgr = dict(trace.cfgr)
        self.stats.by_opcode.update(trace.by_opcode)
        self.stats._add_counts(trace.counts)
        self.model.issue_time += trace.steps

    def _loop(self, pc: int, args: tuple, loops: list, n_insns: int) -> int:
        rs, count, body = args
        count = self.reg(rs) + count
        last = pc + body
        self.model.ctl(entered_loop=count != 0)
        if body == 0 or last >= n_insns:
            raise ExecutionError(f"instruction {pc}: loop body of {body} instructions does not fit the program")
        if loops and last > loops[-1][1]:
            raise ExecutionError(f"instruction {pc}: loop body overlaps the end of its enclosing loop")
        if count == 0:
            return last + 1
        if len(loops) >= MAX_LOOP_DEPTH:
            raise ExecutionError(f"instruction {pc}: loops nested deeper than {MAX_LOOP_DEPTH}")
        loops.append([pc + 1, last, count])
        return pc + 1

    # -- scalar and configuration ---------------------------------------------------------------
    def _set(self, rd: int, value: int) -> None:
        if rd:
            self.regs[rd] = value & _MASK32
        self.model.ctl()

    def _nop(self):
        self.model.ctl()

    def _seti(self, rd, imm):
        self._set(rd, imm)

    def _addi(self, rd, rs, imm):
        self._set(rd, self.reg(rs) + imm)

    def _add(self, rd, rs, rt):
        self._set(rd, self.reg(rs) + self.reg(rt))

    def _cfg(self, key, rs, imm):
        self.cfgr[key] = (self.reg(rs) + imm) & _MASK32
        self.model.ctl()

    # -- DMA ------------------------------------------------------------------------------------
    def _dma_geometry(self, space, rc, rm, rows, length, copies: int = 1):
        """A transfer's item bytes, memory stride, copy-0 entries, address, bytes, byte span and
        on-chip range (its ``copies`` rows side by side included); the on-chip range checked."""
        item = self._items[space]
        mem_stride = self.c(Cfg.MEM_STRIDE) or length * item
        chip_stride = self.c(Cfg.CHIP_STRIDE) or length
        base = self.reg(rc)
        count = rows * length
        if count and (rows == 1 or chip_stride == length):  # one contiguous run of entries
            lo, hi = base, base + count
            chip = slice(lo, hi)
        else:
            chip = (base + np.arange(rows)[:, None] * chip_stride + np.arange(length)[None, :]).reshape(-1)
            lo, hi = (int(chip.min()), int(chip.max()) + 1) if chip.size else (0, 0)
        hi += (copies - 1) * length
        depth = self._depths[space]
        if count and (lo < 0 or hi > depth):
            raise ExecutionError(f"{space.name} access up to entry {hi - 1} outside its {depth} entries")
        addr = self.reg(rm)
        nbytes = rows * length * item
        span_bytes = (rows - 1) * mem_stride + length * item if rows else 0
        return item, mem_stride, chip, addr, nbytes, span_bytes, (space.name.lower(), lo, hi)

    def _check_rows(self, addr: int, rows: int, row_bytes: int, stride: int, what: str) -> None:
        """ExternalMemory's checks of a (rows, row_bytes) access, ``stride`` bytes apart."""
        if rows > 1 and stride < row_bytes:
            raise ExecutionError(f"{what}: memory stride {stride} is smaller than a row of {row_bytes} bytes")
        if rows and row_bytes:
            self.mem._check(addr, (rows - 1) * stride + row_bytes, what)

    def _ld(self, space, rc, rm, rows, length):
        copies = max(1, self.c(Cfg.COPIES)) if space is Space.MRF else 1
        item, mem_stride, chip, addr, nbytes, span, chip_range = self._dma_geometry(space, rc, rm, rows, length,
                                                                                    copies)
        if copies > 1 and rows * length:
            self._check_copies(copies, length)
        const = addr + span <= self.mem.frozen
        self._check_rows(addr, rows, length * item, mem_stride, f"load to {space.name}")
        if self.numerics:
            chip_stride = self.c(Cfg.CHIP_STRIDE) or length
            base = self.reg(rc)
            for k in range(copies):  # isa.md, "Banked MRF": the copies of a row, side by side
                at = (slice(chip.start + k * length, chip.stop + k * length) if isinstance(chip, slice)
                      else chip + k * length) if k else chip
                self._emit(_x_ld, space, addr, rows, length, mem_stride, at, base + k * length, chip_stride, const)
        self.stats.dma_load_bytes += nbytes
        if self.timing:
            self._dma_account("dma_load", space, rc, addr, rows, length, mem_stride, span, copies)

    def _check_copies(self, copies: int, length: int) -> None:
        """A load of ``copies`` > 1 writes a row's copies in one cycle, each to its own bank."""
        cfg = self.cfg
        if not cfg.mrf_banked:
            raise ExecutionError(f"banked MRF: copies = {copies} on an MRF that is not banked")
        if copies * length > cfg.tiles:
            raise ExecutionError(f"banked MRF: {copies} copies of rows of {length} tiles need more than the "
                                 f"{cfg.tiles} banks")
        lanes = space_lanes(cfg)[Space.MRF]
        if lanes > 1:
            raise ExecutionError(f"banked MRF: copies = {copies} with {lanes} DMA lanes of tiles")

    def _store_chip(self, space: Space, chip: np.ndarray, values: np.ndarray, exp: np.ndarray | None = None) -> None:
        if space is Space.FVRF:
            self.fvrf[chip] = values
        elif space is Space.VRF:
            self.vrf_mant[chip], self.vrf_exp[chip] = values, exp
        else:
            n = self.cfg.native_dim
            self.mrf_mant[chip] = values.reshape(-1, n, n)
            self.mrf_exp[chip] = exp.reshape(-1, n)

    def _st(self, space, rc, rm, rows, length):
        item, mem_stride, chip, addr, nbytes, span, chip_range = self._dma_geometry(space, rc, rm, rows, length)
        what = f"store from {space.name}"
        if addr < self.mem.frozen and nbytes:
            raise ExecutionError(f"{what}: write at {addr:#x} into the read-only constant image "
                                 f"(< {self.mem.frozen:#x})")
        self._check_rows(addr, rows, length * item, mem_stride, what)
        if self.numerics and nbytes:
            chip_stride = self.c(Cfg.CHIP_STRIDE) or length
            self._emit(_x_st, space, addr, rows, length, mem_stride, chip, self.reg(rc), chip_stride)
        self.stats.dma_store_bytes += nbytes
        if self.timing:
            self._dma_account("dma_store", space, rc, addr, rows, length, mem_stride, span)

    def _dma_account(self, unit, space, rc, addr, rows, length, mem_stride, span, copies: int = 1):
        """A transfer's timing, with the operand spans control's hazard check uses (a row's copies
        are written in the cycle of the row's entry: no time of their own)."""
        if not rows * length:
            self.model.skip()
            return
        base = self.reg(rc)
        chip_hi = base + (rows - 1) * (self.c(Cfg.CHIP_STRIDE) or length) + copies * length
        store = unit == "dma_store"
        ranges = ((space.name.lower(), base, chip_hi, not store), ("mem", addr, addr + span, store))
        self.model.dispatch(unit, ranges, dma=(space, self._items[space], addr, rows, length, mem_stride))

    # -- windows ----------------------------------------------------------------------------------
    def _window(self):
        c = self.c
        geom = golden.ConvGeom(
            c(Cfg.IN_H), c(Cfg.IN_W), c(Cfg.KH), c(Cfg.KW), (c(Cfg.STRIDE_H), c(Cfg.STRIDE_W)),
            (c(Cfg.DIL_H), c(Cfg.DIL_W)), (c(Cfg.PAD_T), c(Cfg.PAD_L), c(Cfg.PAD_B), c(Cfg.PAD_R)),
        )
        if min(geom.in_h, geom.in_w, geom.kh, geom.kw, *geom.stride, *geom.dilation, c(Cfg.OUT_W), c(Cfg.IN_CB)) < 1:
            raise ExecutionError("window geometry has a zero dimension (in_h, in_w, kh, kw, strides, out_w, in_cb)")
        return geom, (c(Cfg.PIX0), c(Cfg.NPIX), c(Cfg.OUT_W))

    def _vrf_image(self, vspan: slice, geom: golden.ConvGeom, in_cb: int) -> BfpTensor:
        n = self.cfg.native_dim
        return BfpTensor(self.vrf_mant[vspan].reshape(geom.in_h, geom.in_w, in_cb * n),
                         self.vrf_exp[vspan].reshape(geom.in_h, geom.in_w, in_cb),
                         in_cb * n, n, self.cfg.mantissa_bits)

    def _mvc(self, rd, rs, rm, acc):
        c = self.c
        geom, pixels = self._window()
        p = pixels[1]
        in_cb, cob, taps = c(Cfg.IN_CB), c(Cfg.COB), geom.kh * geom.kw
        gi = c(Cfg.GI) or in_cb
        go = c(Cfg.GO) or cob
        vspan = self._span(Space.VRF, self.reg(rs), geom.in_h * geom.in_w * in_cb)
        t = self.cfg.tiles
        if self.cfg.mrf_banked:  # isa.md, "Banked MRF": whole rows of T tiles, engine t on bank t
            tspan = self._span(Space.MRF, self.reg(rm), -(-cob // t) * taps * gi * t)
        else:
            tspan = self._span(Space.MRF, self.reg(rm), cob * taps * gi)
        ds = c(Cfg.DSTRIDE) or cob  # FVRF entries between output pixels (isa.md, "Banked MRF")
        dspan = self._span(Space.FVRF, self.reg(rd), (p - 1) * ds + cob if p else 0)
        if c(Cfg.DSTRIDE) and not self.cfg.mrf_banked:
            raise ExecutionError(f"banked MRF: dstride = {ds} on an MRF that is not banked")
        if self.cfg.mrf_banked:
            if ds < cob:
                raise ExecutionError(f"banked MRF: dstride = {ds} is less than cob = {cob}")
            if cob % t and t % cob:
                raise ExecutionError(f"banked MRF: cob = {cob} output blocks is neither a multiple nor a divisor "
                                     f"of the {t} tile engines")
            if tspan.start % t:
                raise ExecutionError(f"banked MRF: the weights start at tile {tspan.start}, not a multiple of "
                                     f"the {t} tile engines")
        # (first input block, first output block, output blocks) of each group the MVC touches
        if c(Cfg.GI) == 0:  # dense: every output block reads every input block
            groups = ((0, 0, cob),)
        else:
            groups = []
            for ob in range(cob):
                g = (c(Cfg.OB0) + ob) // go
                if groups and groups[-1][3] == g:
                    groups[-1][2] += 1
                else:
                    groups.append([g * gi, ob, 1, g])
            for b0, _, _, g in groups:
                if b0 + gi > in_cb:
                    raise ExecutionError(f"group {g} needs input blocks [{b0}, {b0 + gi}) but the input has {in_cb}")
            groups = tuple((b0, ob0, nob) for b0, ob0, nob, _ in groups)
        if self.numerics and self.cfg.mrf_banked:
            self._emit(_x_mvc_banked, geom, pixels, window_index(geom, pixels), vspan, tspan, dspan, in_cb, cob, gi,
                       groups, acc, ds)
        elif self.numerics:
            self._emit(_x_mvc, geom, pixels, window_index(geom, pixels), vspan, tspan, dspan, in_cb, cob, gi, groups,
                       acc)
        tile_ops = p * cob * taps * gi
        self.stats.tile_ops += tile_ops
        self.stats.macs += tile_ops * self.cfg.native_dim ** 2
        if self.timing:
            # T tile engines share the MVC's (pixel, output block) pairs; each pair streams its
            # taps x gi tiles, one per cycle, through one engine (weight tiles are broadcast)
            lengths = None
            if mvu_gathers(self.cfg) and p:  # steps of several VRF reads
                lengths = _round_cycles(t, self.cfg.vrf_reads, geom, pixels, in_cb, cob, gi,
                                        None if c(Cfg.GI) == 0 else (c(Cfg.OB0), go))
            busy = self._mvu_busy(p, cob, taps * gi, group=cob if ds != cob else 0, lengths=lengths)
            # the FVRF span as a write: it conflicts with every access, so an accumulating mvc's
            # read of it needs no range for the hazards (control.py's check does the same); it is
            # listed for the ports (the MVU's FVRF read shares the MFU's: layouts.SHARED_READS)
            ranges = [("vrf", vspan.start, vspan.stop, False), ("mrf", tspan.start, tspan.stop, False),
                      ("fvrf", dspan.start, dspan.stop, True), *([("fvrf", dspan.start, dspan.stop, False)] * acc)]
            self.model.dispatch("mvu", ranges, cycles=(busy, 1 + busy))

    def _mvu_busy(self, pixels: int, cob: int, kb: int, *, group: int = 0, lengths=None) -> int:
        """The MVU's busy cycles for an ``mvc`` of ``pixels`` x ``cob`` pairs of ``kb`` steps: the
        cycle model's :func:`mvu_busy` (``group``: its results at a stride of their own;
        ``lengths``: its rounds' cycles, with fewer VRF reads than tile engines; the
        ``bitstreams/banking.py`` study times other pair mappings here)."""
        return mvu_busy(self.cfg.tiles, cob * pixels, kb, width=self.cfg.mfu_width, group=group, lengths=lengths)

    def _mvc_native(self, vspan: slice, geom, idx, tspan: slice, dspan: slice, in_cb: int, gi: int, groups,
                    acc: int) -> bool:
        """An MVC's products in the native kernels, written (acc = 0) or accumulated (acc = 1)
        straight into the FVRF destination: the image converted once, each window tap (``idx``,
        layout.window_index) read from it in place, weights as prepared panels (kept across runs for
        tiles loaded from the constant image). False (nothing done) when the kernels are off or
        the operands need the general path; ranges are taken over the whole image and tile span, a
        superset of the operands, so the fast path is only taken where it is exact. An
        accumulator overflow leaves the destination as it was."""
        k = native.kernels()
        if k is None or self.vrf_mant.dtype != np.int16:
            return False
        n, m_bits = self.cfg.native_dim, self.cfg.mantissa_bits
        i8 = INTEGER_MVU and k.has_gemm_i8 and m_bits <= 7 and n % 4 == 0
        blocks = vspan.stop - vspan.start
        rng = self._scratch_range
        mp, ep = self._p_vm + vspan.start * n * 2, self._p_ve + vspan.start * 2
        if i8:  # mantissas + 128 as bytes, and each block's unit exponent
            xs = self._scratch_ptr("mvc-image-u8", blocks * n, np.uint8)
            xu = self._scratch_ptr("mvc-units", blocks, np.int32)
            k.image_u8(blocks, n, m_bits, mp, ep, xs, xu, self._p_range)
        else:  # mantissas times their units
            xs = self._scratch_ptr("mvc-image", blocks * n)
            k.scale_range_i16(0, blocks, n, m_bits, mp, ep, xs, self._p_range)
        lo, live, second, hi = rng.tolist()
        ar = (lo, hi) if live else ((second, hi) if second != _NO_RANGE else None)
        src = self.mrf_src[tspan]
        src_key = src.tobytes() if src.size and src.min() >= 0 else None  # all tiles from constant loads
        decoded = self.mem.decoded
        if src_key is not None and ("mvc-range", src_key) in decoded:  # constant weights: scanned once
            wr = decoded[("mvc-range", src_key)]
        else:
            self._mrf_materialize(tspan.start, tspan.stop)
            wr = bfp.nonzero_block_range(self.mrf_mant[tspan], self.mrf_exp[tspan].astype(np.int32) - (m_bits - 1), n)
            if src_key is not None:
                decoded[("mvc-range", src_key)] = wr
        p = idx[0].shape[0]
        ldo = (dspan.stop - dspan.start) // p * n if p else 0
        if ar is None or wr is None:  # every product is an exact zero
            if not acc:
                self.fvrf[dspan] = 0
            return True
        fast, exact32 = bfp.fast_path(ar, wr, self.cfg)
        if not (fast and exact32):
            return False
        taps = geom.kh * geom.kw
        kb = taps * gi
        zeros = self._scratch_ptr("zeros", gi * n)
        item = self.mrf_mant.itemsize
        # results go straight into the FVRF where no sum can overflow (each of the kb terms is below
        # 2**(amax + wmax + dbits)); elsewhere through a work buffer, so that an overflow leaves the
        # FVRF as it was, as on the definition's path
        dbits = 2 * m_bits + int(np.log2(n))
        direct = not acc and ar[1] + wr[1] + dbits + kb.bit_length() + 1 < 128
        if direct:
            dest, dptr = self.fvrf[dspan].reshape(p, ldo), self._p_fv + dspan.start * n * 4
        else:
            dest = self._scratch("mvc-out", p * ldo)[:p * ldo].reshape(p, ldo)
            dptr = native.ptr(dest)
            if acc:
                dest[...] = self.fvrf[dspan].reshape(p, ldo)
        for b0, ob0, nob in groups:
            key = ("mvc-panels-i8" if i8 else "mvc-panels", src_key, ob0, nob, kb)
            wp = decoded.get(key) if src_key is not None else None
            if wp is None:
                self._mrf_materialize(tspan.start, tspan.stop)
                panels = -(-(nob * n) // 16)
                tm = self._p_mm + (tspan.start + ob0 * kb) * n * n * item
                te = self._p_me + (tspan.start + ob0 * kb) * n * 2
                if i8:
                    arrays = (np.empty(panels * kb * n * 16, np.int8), np.empty(panels * kb * 16, np.int32),
                              np.empty(panels * kb * 16, np.float32))
                    wp = (arrays, tuple(native.ptr(a) for a in arrays))
                    k.pack_tiles_i8(nob, kb, n, m_bits, tm, te, *wp[1])
                else:
                    arrays = (np.empty((panels, kb, n, 16), np.float32),)
                    wp = (arrays, (native.ptr(arrays[0]),))
                    k.pack_tiles(nob, kb, n, m_bits, tm, te, wp[1][0])
                nbytes = sum(a.nbytes for a in arrays)
                if src_key is not None and decoded.get("mvc-panel-bytes", 0) + nbytes <= _PANEL_CACHE_BYTES:
                    # weights from the constant image are the same every run: keep them prepared
                    decoded[key] = wp
                    decoded["mvc-panel-bytes"] = decoded.get("mvc-panel-bytes", 0) + nbytes
            if not i8:
                bfp.gemm(k, self._buffers["mvc-image"], in_cb * n, wp[0][0], dest[:, ob0 * n:(ob0 + nob) * n], nob * n,
                         n, "mvc", taps=taps, gi=gi, xoff=b0 * n, idx=idx[0], zeros=self._buffers["zeros"],
                         init=not acc)
                continue
            zx = self._scratch_ptr("zeros-u8", gi * n, np.uint8, fill=128)  # a zero block: mantissas + 128
            # one thread: on two cores that share their vector units this kernel gains little from
            # a second one, less than a hand-over to a worker thread costs
            if k.gemm_i8(0, p, nob * n, taps, gi, n, xs, in_cb * n, b0 * n, xu, in_cb, b0, idx[1], zx, zeros, *wp[1],
                         dptr + ob0 * n * 4, ldo, int(not acc)):
                raise bfp.overflow("mvc", accumulator=True)
        if not direct:
            self.fvrf[dspan] = dest.reshape(-1, n)
        return True

    def _scratch(self, name: str, size: int, dtype=np.float32, fill=0) -> np.ndarray:
        """A work buffer of at least ``size`` elements (``fill`` until written), kept across
        instructions."""
        buf = self._buffers.get(name)
        if buf is None or buf.size < size:
            buf = np.full(max(size, 1024), fill, dtype)
            self._buffers[name] = buf
            self._buffer_ptrs[name] = native.ptr(buf)
        return buf

    def _scratch_ptr(self, name: str, size: int, dtype=np.float32, fill=0) -> int:
        """The address of ``_scratch(name, ...)``."""
        self._scratch(name, size, dtype, fill)
        return self._buffer_ptrs[name]

    def _pool(self, mode, rd, rs):
        c = self.c
        geom, pixels = self._window()
        in_cb = c(Cfg.IN_CB)
        vspan = self._span(Space.VRF, self.reg(rs), geom.in_h * geom.in_w * in_cb)
        dspan = self._span(Space.FVRF, self.reg(rd), pixels[1] * in_cb)
        if self.numerics:
            self._emit(_x_pool, mode, geom, pixels, window_index(geom, pixels), vspan, dspan, in_cb)
        if self.timing:
            recips = 0
            if mode != PoolMode.MAX:
                recips = pool_reciprocals(golden.avg_divisors(geom, mode == PoolMode.AVG_PAD, *pixel_grid(pixels)))
            jobs = pixels[1] * (in_cb // pool_group(in_cb, self.cfg.mfu_width))
            work = pool_busy(PoolMode(mode).name.lower(), jobs, geom.kh * geom.kw, recips)
            ranges = [("vrf", vspan.start, vspan.stop, False), ("fvrf", dspan.start, dspan.stop, True)]
            self.model.dispatch("pool", ranges, cycles=(work, 1 + work))

    # -- multi-function unit ----------------------------------------------------------------------
    def _mfu_account(self, op: str, count: int, reads, dspan, dst: str = "fvrf", period: int = 0):
        if not self.timing:
            return
        if not count:
            self.model.skip()
            return
        ranges = [(space, lo, hi, False) for space, lo, hi in reads] + [(dst, dspan.start, dspan.stop, True)]
        self.model.dispatch("mfu", ranges, mfu=(op, count, period))

    @staticmethod
    def _mfu_overlap(op: str, dspan: slice, sspan: slice, count: int, period: int = 0, file: str = "FVRF") -> None:
        """Refuse a destination the MFU would write before reading a source entry under it.

        Every operand is read before any result is written (the definition), and the engine's MFU
        reads the vectors in order ahead of its writes, so a destination may equal its source (in
        place), start before it, or miss it; one that starts inside a source after its start
        (``0 < dst - src < count``) would have entries read after they are written, as would any
        overlap of a second operand read more than once (``0 < period < count``): refused.
        """
        d, s = dspan.start, sspan.start
        if 0 < period < count:
            bad = d < sspan.stop and s < dspan.stop
        else:
            bad = 0 < d - s < count
        if bad:
            raise ExecutionError(
                f"{op} destination {file} [{d}, {dspan.stop}) overlaps its source [{s}, {sspan.stop}) "
                f"where it would be read after being written")

    def _vop(self, fn, rd, ra, rb, count, period, act=Act.COPY, dest=Dest.FVRF, bfile=Dest.FVRF):
        aspan = self._span(Space.FVRF, self.reg(ra), count)
        bvrf, quant = bfile is Dest.VRF, dest is Dest.VRF
        bspan = self._span(Space.VRF if bvrf else Space.FVRF, self.reg(rb), period or count)
        dspan = self._span(Space.VRF if quant else Space.FVRF, self.reg(rd), count)
        if not quant:  # a VRF destination shares no entry with the FVRF operands
            self._mfu_overlap("vop", dspan, aspan, count)
        if bvrf == quant:
            self._mfu_overlap("vop", dspan, bspan, count, period, file="VRF" if quant else "FVRF")
        if self.numerics:
            self._emit(_x_vop, fn, aspan, bspan, dspan, count, period, act, quant, self._act_params(act), bvrf)
        units = ("deq+" if bvrf else "") + "vop" + ("+vact" if act is not Act.COPY else "") + ("+qnt" if quant else "")
        self._mfu_account(units, count, [("fvrf", aspan.start, aspan.stop),
                                         ("vrf" if bvrf else "fvrf", bspan.start, bspan.stop)],
                          dspan, dst="vrf" if quant else "fvrf", period=period)

    def _act_params(self, act) -> tuple:
        """The configuration registers an activation reads, as they are at its issue."""
        if act is Act.CLIP:
            return self.c(Cfg.CLIP_LO), self.c(Cfg.CLIP_HI)
        if act is Act.LRELU:
            return (self.c(Cfg.ALPHA),)
        return ()

    def _vact(self, act, rd, rs, count):
        sspan = self._span(Space.FVRF, self.reg(rs), count)
        dspan = self._span(Space.FVRF, self.reg(rd), count)
        self._mfu_overlap("vact", dspan, sspan, count)
        if self.numerics:
            self._emit(_x_vact, act, sspan, dspan, self._act_params(act))
        self._mfu_account("vact", count, [("fvrf", sspan.start, sspan.stop)], dspan)

    def _deq(self, rd, rs, count):
        sspan = self._span(Space.VRF, self.reg(rs), count)
        dspan = self._span(Space.FVRF, self.reg(rd), count)
        if self.numerics:
            self._emit(_x_deq, sspan, dspan)
        self._mfu_account("deq", count, [("vrf", sspan.start, sspan.stop)], dspan)

    def _qnt(self, rd, rs, count):
        sspan = self._span(Space.FVRF, self.reg(rs), count)
        dspan = self._span(Space.VRF, self.reg(rd), count)
        if self.numerics:
            self._emit(_x_qnt, sspan, dspan)
        self._mfu_account("qnt", count, [("fvrf", sspan.start, sspan.stop)], dspan, dst="vrf")


_HANDLERS = {
    Opcode.NOP: FuncSim._nop, Opcode.SETI: FuncSim._seti, Opcode.ADDI: FuncSim._addi, Opcode.ADD: FuncSim._add,
    Opcode.CFG: FuncSim._cfg, Opcode.LD: FuncSim._ld, Opcode.ST: FuncSim._st, Opcode.MVC: FuncSim._mvc,
    Opcode.POOL: FuncSim._pool, Opcode.VOP: FuncSim._vop, Opcode.VACT: FuncSim._vact, Opcode.DEQ: FuncSim._deq,
    Opcode.QNT: FuncSim._qnt,
}


# -- data work: what an instruction computes once its checks have passed -------------------------
# Each takes the simulator and the values its instruction's checks produced; a trace replays them.

def _x_ld(sim: FuncSim, space, addr, rows, length, mem_stride, chip, base, chip_stride, const):
    if space is Space.MRF:  # provenance of each tile, for reuse of prepared weights (_mvc_native)
        decoded = sim.mem.decoded
        key = (space, addr, rows, length, mem_stride)
        tag = decoded.setdefault(("mrf-load", key), len(decoded)) if const else -1
        sim.mrf_src[chip] = tag * _TILES_PER_LOAD + np.arange(rows * length) if const else -1
    if not rows * length:
        return
    k, cfg = sim._k, sim.cfg
    n = cfg.native_dim
    raw = sim._p_mem + addr
    if space is Space.MRF and sim._mrf_pending is not None:
        if const and k is not None:  # weights from the constant image: checked now, decoded when needed
            if k.load_bfp_b1(rows, length, n, n, cfg.mantissa_bits, cfg.exponent_bits, cfg.exp_bias, raw, mem_stride,
                             None, None, chip_stride):
                raise ExecutionError(f"load to {space.name} from {addr:#x}: {BAD_BFP}")
            sim._mrf_pending.append((*_chip_range(chip), (space, addr, rows, length, mem_stride, chip, base,
                                                          chip_stride, False)))
            return
        sim._mrf_materialize(*_chip_range(chip))
    if k is not None and space is not Space.FVRF:
        vpi = 1 if space is Space.VRF else n
        pm, pe = (sim._p_vm, sim._p_ve) if space is Space.VRF else (sim._p_mm, sim._p_me)
        if k.load_bfp_b1(rows, length, vpi, n, cfg.mantissa_bits, cfg.exponent_bits, cfg.exp_bias, raw, mem_stride,
                         pm + base * vpi * n * 2, pe + base * vpi * 2, chip_stride):
            raise ExecutionError(f"load to {space.name} from {addr:#x}: {BAD_BFP}")
        return
    if k is not None:
        if k.load_f32(rows, length, n, raw, mem_stride, sim._p_fv + base * n * 4, chip_stride):
            raise ExecutionError(f"load to {space.name} from {addr:#x}: {BAD_FP}")
        return
    where = f"load to {space.name} from {addr:#x}"
    item = sim._items[space]
    raw = sim.mem.gather(addr, rows, length * item, mem_stride, f"load to {space.name}").reshape(-1, item)
    if space is Space.FVRF:
        sim._store_chip(space, chip, decode_fp(raw, cfg, where=where))
    else:
        sim._store_chip(space, chip, *decode_bfp(raw, cfg, where=where))


def _chip_range(chip) -> tuple[int, int]:
    """First and end entry of a DMA's on-chip entries (a slice or an index array)."""
    if isinstance(chip, slice):
        return chip.start, chip.stop
    return (int(chip.min()), int(chip.max()) + 1) if chip.size else (0, 0)


def _x_st(sim: FuncSim, space, addr, rows, length, mem_stride, chip, base, chip_stride):
    if space is Space.MRF:
        sim._mrf_materialize(*_chip_range(chip))
    k, cfg = sim._k, sim.cfg
    n = cfg.native_dim
    if k is not None and space is not Space.FVRF:
        vpi = 1 if space is Space.VRF else n
        pm, pe = (sim._p_vm, sim._p_ve) if space is Space.VRF else (sim._p_mm, sim._p_me)
        k.store_bfp_b1(rows, length, vpi, n, cfg.exp_bias, pm + base * vpi * n * 2, pe + base * vpi * 2, chip_stride,
                       sim._p_mem + addr, mem_stride)
        return
    if space is Space.FVRF:
        blob = encode_fp(sim.fvrf[chip])
    elif space is Space.VRF:
        blob = encode_bfp(sim.vrf_mant[chip], sim.vrf_exp[chip], cfg)
    else:
        blob = encode_bfp(sim.mrf_mant[chip].reshape(-1, n), sim.mrf_exp[chip].reshape(-1), cfg)
    block = np.frombuffer(blob, np.uint8).reshape(rows, length * sim._items[space])
    sim.mem.scatter(addr, block, mem_stride, f"store from {space.name}")


def _x_mvc(sim: FuncSim, geom, pixels, idx, vspan, tspan, dspan, in_cb, cob, gi, groups, acc):
    if sim._mvc_native(vspan, geom, idx, tspan, dspan, in_cb, gi, groups, acc):
        return
    n, p = sim.cfg.native_dim, pixels[1]
    sim._mrf_materialize(tspan.start, tspan.stop)
    taps = geom.kh * geom.kw
    out = np.zeros((p, cob * n), np.float32) if not acc else sim.fvrf[dspan].reshape(p, cob * n).copy()
    tiles = (sim.mrf_mant[tspan].reshape(cob, taps * gi, n, n), sim.mrf_exp[tspan].reshape(cob, taps * gi, n))
    _mvc_rows(sim, geom, pixel_grid(pixels), vspan, tiles, in_cb, gi, groups, out)
    sim.fvrf[dspan] = out.reshape(p * cob, n)


def _mvc_rows(sim: FuncSim, geom, grid, vspan, tiles, in_cb, gi, groups, out) -> None:
    """The numpy definition of an ``mvc``'s sums for the output pixels ``grid`` = (oy, ox), weight
    ``tiles`` = (mantissas, exponents) of shape (cob, taps * gi, ...), accumulated into ``out``."""
    n = sim.cfg.native_dim
    x = sim._vrf_image(vspan, geom, in_cb)
    tiles_m, tiles_e = tiles
    for b0, ob0, nob in groups:
        xg = BfpTensor(x.mant[..., b0 * n:(b0 + gi) * n], x.exp[..., b0:b0 + gi], gi * n, n, x.mantissa_bits)
        wm = tiles_m[ob0:ob0 + nob].transpose(0, 2, 1, 3).reshape(nob * n, -1)
        we = tiles_e[ob0:ob0 + nob].transpose(0, 2, 1).reshape(nob * n, -1)
        cols = slice(ob0 * n, (ob0 + nob) * n)
        out[:, cols] = bfp.block_matmul(golden.im2col(xg, geom, *grid), (wm, we), sim.cfg, acc=out[:, cols],
                                        what="mvc")


def _banked_tiles(cfg: EngineConfig, start: int, cob: int, kb: int) -> list[np.ndarray]:
    """The MRF entries an ``mvc`` reads on a banked MRF (isa.md, "Banked MRF"), per class of pixels:
    ``[m][ob, k]`` for the pixels ``q - pix0 = m (mod T / cob)`` (one class when ``cob >= T``)."""
    t = cfg.tiles
    ob = np.arange(cob)[:, None]
    row = (ob // t) * kb + np.arange(kb)[None, :]
    classes = t // cob if cob < t else 1
    return [start + row * t + (m * cob + ob) % t for m in range(classes)]


def _x_mvc_banked(sim: FuncSim, geom, pixels, idx, vspan, tspan, dspan, in_cb, cob, gi, groups, acc, ds):
    """An ``mvc`` on a banked MRF: its tiles gathered into the unbanked order past the file
    (``mrf_tiles ..``), then :func:`_x_mvc` on them. Where a divisor ``cob``'s copies in the banks
    differ, each class of pixels is computed with its own banks' tiles, as the engine does. Results
    at a pixel stride ``ds`` other than ``cob`` go through the room past the FVRF (``fvrf_vectors ..``):
    gathered from their entries first (``acc``), scattered back after (nothing written on a fault)."""
    if ds != cob and pixels[1]:
        entries = (dspan.start + np.arange(pixels[1])[:, None] * ds + np.arange(cob)[None, :]).reshape(-1)
        packed = slice(sim.cfg.fvrf_vectors, sim.cfg.fvrf_vectors + entries.size)
        if acc:
            sim.fvrf[packed] = sim.fvrf[entries]
        _x_mvc_banked(sim, geom, pixels, idx, vspan, tspan, packed, in_cb, cob, gi, groups, acc, cob)
        sim.fvrf[entries] = sim.fvrf[packed]
        return
    cfg, n = sim.cfg, sim.cfg.native_dim
    kb = geom.kh * geom.kw * gi
    sim._mrf_materialize(tspan.start, tspan.stop)
    entries = _banked_tiles(cfg, tspan.start, cob, kb)
    scratch = slice(cfg.mrf_tiles, cfg.mrf_tiles + cob * kb)
    first = entries[0].reshape(-1)
    sim.mrf_mant[scratch] = sim.mrf_mant[first]
    sim.mrf_exp[scratch] = sim.mrf_exp[first]
    sim.mrf_src[scratch] = sim.mrf_src[first]
    same = all(np.array_equal(sim.mrf_mant[e], sim.mrf_mant[entries[0]])
               and np.array_equal(sim.mrf_exp[e], sim.mrf_exp[entries[0]]) for e in entries[1:])
    if same:
        _x_mvc(sim, geom, pixels, idx, vspan, scratch, dspan, in_cb, cob, gi, groups, acc)
        return
    p = pixels[1]
    out = np.zeros((p, cob * n), np.float32) if not acc else sim.fvrf[dspan].reshape(p, cob * n).copy()
    oy, ox = pixel_grid(pixels)
    for m, e in enumerate(entries):
        rows = np.arange(m, p, len(entries))
        if not rows.size:  # fewer pixels than classes
            continue
        part = out[rows]
        tiles = (sim.mrf_mant[e].reshape(cob, kb, n, n), sim.mrf_exp[e].reshape(cob, kb, n))
        _mvc_rows(sim, geom, (oy[rows], ox[rows]), vspan, tiles, in_cb, gi, groups, part)
        out[rows] = part
    sim.fvrf[dspan] = out.reshape(p * cob, n)


@functools.lru_cache(maxsize=_RECIPROCALS_MAX)
def _avg_reciprocals(geom, pixels: tuple, count_include_pad: bool) -> np.ndarray | None:
    """An average pool's reciprocal divisors (read-only, shared by threads); None if a divisor is 0."""
    count = golden.avg_divisors(geom, count_include_pad, *pixel_grid(pixels))
    if not count.all():
        return None
    recip = bfp.internal_const(1.0 / count, "avg pool reciprocal")
    recip.flags.writeable = False
    return recip


def _pool_native(sim: FuncSim, mode, geom, pixels, idx, vspan, dspan, in_cb) -> bool:
    """A pool instruction in the native kernel (bfp_pool) on the dequantised image; False, with
    nothing written, where the numpy definition must decide (a window wholly in the padding, a
    divisor of zero, an overflowing sum: it raises their errors)."""
    k, cfg = sim._k, sim.cfg
    n = cfg.native_dim
    if k is None or not idx[0].shape[0]:
        return False
    if mode is PoolMode.MAX:
        recip = None
        if idx[0].shape[1] and not (idx[0] >= 0).any(axis=1).all():
            return False
    else:
        recip = _avg_reciprocals(geom, pixels, mode is PoolMode.AVG_PAD)
        if recip is None:
            return False
    blocks = vspan.stop - vspan.start
    img = sim._scratch("pool-image", blocks * n)
    k.dequant_rows(blocks, n, cfg.mantissa_bits, sim._p_vm + vspan.start * n * 2, sim._p_ve + vspan.start * 2,
                   native.ptr(img))
    out = sim._scratch("pool-out", (dspan.stop - dspan.start) * n)
    if k.pool(idx[0].shape[0], idx[0].shape[1], in_cb, n, native.ptr(img), idx[1], 0 if recip is None else 1,
              None if recip is None else native.ptr(recip), native.ptr(out)):
        return False
    sim.fvrf[dspan] = out[:(dspan.stop - dspan.start) * n].reshape(-1, n)
    return True


def _x_pool(sim: FuncSim, mode, geom, pixels, idx, vspan, dspan, in_cb):
    if _pool_native(sim, mode, geom, pixels, idx, vspan, dspan, in_cb):
        return
    oy, ox = pixel_grid(pixels)
    values = bfp.dequantize_internal(sim._vrf_image(vspan, geom, in_cb))
    try:
        if mode is PoolMode.MAX:
            out = golden.max_pool(values, geom, oy, ox)
        else:
            out = golden.avg_pool(values, geom, count_include_pad=mode is PoolMode.AVG_PAD, oy=oy, ox=ox)
    except ValueError as e:  # a window with nothing to take: the program's error
        raise ExecutionError(str(e)) from None
    sim.fvrf[dspan] = out.reshape(-1, sim.cfg.native_dim)


def _disjoint(a: slice, b: slice) -> bool:
    return a.stop <= b.start or b.stop <= a.start or a.start == a.stop or b.start == b.stop


def _chain_ok(aspan: slice, bspan: slice, dspan: slice, b_apart: bool = False) -> bool:
    """bfp_mfu_chain may write the add's result over its first operand only, never over b (unless
    ``b_apart``: b was copied elsewhere first)."""
    return (dspan == aspan or _disjoint(dspan, aspan)) and (b_apart or _disjoint(dspan, bspan))


def _vrf_values(sim: FuncSim, span: slice) -> np.ndarray:
    """VRF entries ``span`` dequantised to the internal format (numpy)."""
    n = sim.cfg.native_dim
    return bfp.dequantize_internal(BfpTensor(sim.vrf_mant[span], sim.vrf_exp[span][:, None], n, n,
                                             sim.cfg.mantissa_bits))


def _vop_values(fn, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a fn b`` elementwise over equal-length vectors (bfp's MFU operations)."""
    if fn is VecOp.ADD:
        return bfp.mfu_add(a, b, "vop add")
    if fn is VecOp.SUB:
        return bfp.mfu_sub(a, b, "vop sub")
    return bfp.mfu_mul(a, b, "vop mul") if fn is VecOp.MUL else bfp.mfu_max(a, b)


def _act_values(act, x: np.ndarray, params: tuple) -> np.ndarray:
    if act is Act.RELU:
        return bfp.mfu_relu(x)
    if act is Act.CLIP:
        return bfp.mfu_clip(x, *params)
    if act is Act.LRELU:
        return bfp.mfu_leaky_relu(x, *params)
    return x.copy()


def _x_vop(sim: FuncSim, fn, aspan, bspan, dspan, count, period, act=Act.COPY, quant=False, params=(), bvrf=False):
    """``vop``: ``a fn b`` (b repeating with its period; from the VRF, dequantised, with ``bvrf``),
    then the activation ``act``, written to the FVRF, or quantised into the VRF (``quant``). A fused
    one fails as its first failing group of vectors does (the engine MFU's groups,
    ``cycles.mfu_group_bounds``): an add, multiply or activation error of any vector in that group
    before a quantised NaN."""
    k = sim._k
    n = sim.cfg.native_dim
    native_ok = sim._chain_q if quant else _chain_ok(aspan, bspan, dspan, b_apart=bvrf)
    if fn is VecOp.ADD and k is not None and act in (Act.COPY, Act.RELU) and native_ok:
        fp = sim._p_fv
        if bvrf:  # the second operand dequantised first, apart from every file
            rows = bspan.stop - bspan.start
            b = sim._scratch_ptr("vop-b", rows * n)
            k.dequant_rows(rows, n, sim.cfg.mantissa_bits, sim._p_vm + bspan.start * n * 2,
                           sim._p_ve + bspan.start * 2, b)
        else:
            b = fp + bspan.start * n * 4
        if quant:
            out = sim._scratch_ptr("vop-sums", count * n)  # the sums go nowhere: the VRF gets them quantised
            vm, ve = sim._p_vm + dspan.start * n * 2, sim._p_ve + dspan.start * 2
        else:
            out, vm, ve = fp + dspan.start * n * 4, None, None
        cfg = sim.cfg
        if not k.mfu_chain(count, n, fp + aspan.start * n * 4, b, period or count, int(act is Act.RELU), out,
                           cfg.mantissa_bits, cfg.exp_min, cfg.exp_max, vm, ve, None, cfg.exp_bias):
            return
        if act is Act.COPY and not quant and not bvrf:
            raise bfp.overflow("vop add")
    a = sim.fvrf[aspan]
    b = _vrf_values(sim, bspan) if bvrf else sim.fvrf[bspan]
    if act is Act.COPY and not quant and not bvrf:
        if fn is VecOp.ADD:  # b repeats with its period (e.g. a bias for every pixel)
            r = bfp.mfu_add_periodic(a, b, "vop add")
        elif fn is VecOp.SUB:  # a - b is a + (-b): negation is exact
            r = bfp.mfu_add_periodic(a, -b, "vop sub")
        else:
            r = _vop_values(fn, a, b[np.arange(count) % period] if period else b)
        sim.fvrf[dspan] = r
        return
    bi = np.arange(count) % period if period else np.arange(count)
    try:
        r = _act_values(act, _vop_values(fn, a, b[bi]), params)
        q = bfp.quantize(r, sim.cfg, name="qnt") if quant else None
    except NumericsError:
        for g0, g1 in mfu_group_bounds(count, period, sim.cfg.mfu_width):  # the error of the first failing group
            r = _act_values(act, _vop_values(fn, a[g0:g1], b[bi[g0:g1]]), params)
            if quant:
                bfp.quantize(r, sim.cfg, name="qnt")
        raise
    if quant:
        sim.vrf_mant[dspan] = q.mant
        sim.vrf_exp[dspan] = q.exp[:, 0]
    else:
        sim.fvrf[dspan] = r


def _x_vact(sim: FuncSim, act, sspan, dspan, params):
    sim.fvrf[dspan] = _act_values(act, sim.fvrf[sspan], params)


def _x_deq(sim: FuncSim, sspan, dspan):
    k, n = sim._k, sim.cfg.native_dim
    if k is not None:
        k.dequant_rows(sspan.stop - sspan.start, n, sim.cfg.mantissa_bits, sim._p_vm + sspan.start * n * 2,
                       sim._p_ve + sspan.start * 2, sim._p_fv + dspan.start * n * 4)
        return
    sim.fvrf[dspan] = _vrf_values(sim, sspan)


def _x_qnt(sim: FuncSim, sspan, dspan):
    k, cfg = sim._k, sim.cfg
    n = cfg.native_dim
    if k is not None:
        if k.quantize_rows(sspan.stop - sspan.start, n, cfg.mantissa_bits, cfg.exp_min, cfg.exp_max,
                           sim._p_fv + sspan.start * n * 4, sim._p_vm + dspan.start * n * 2,
                           sim._p_ve + dspan.start * 2):
            raise NumericsError("qnt: contains NaN, which no BFP block can represent")
        return
    q = bfp.quantize(sim.fvrf[sspan], cfg, name="qnt")
    sim.vrf_mant[dspan] = q.mant
    sim.vrf_exp[dspan] = q.exp[:, 0]


def _x_chain(sim: FuncSim, aspan, bspan, period, count, relu, dspan, vspan, addr, parts):
    """Fused add [-> ReLU] [-> quantise [-> store]] (see _fuse); its instructions one by one when
    the add overflows, so that the error and the state are theirs."""
    k, cfg = sim._k, sim.cfg
    n, fp = cfg.native_dim, sim._p_fv
    vm = ve = mem = None
    if vspan is not None:
        vm, ve = sim._p_vm + vspan.start * n * 2, sim._p_ve + vspan.start * 2
        if addr is not None:
            mem = sim._p_mem + addr
    if k.mfu_chain(count, n, fp + aspan.start * n * 4, fp + bspan.start * n * 4, period, relu, fp + dspan.start * n * 4,
                   cfg.mantissa_bits, cfg.exp_min, cfg.exp_max, vm, ve, mem, cfg.exp_bias):
        for step, pc, fn, args in parts:
            sim._pc, sim._step = pc, step
            fn(sim, *args)


def _fusable(cfg: EngineConfig) -> bool:
    """Does the native bfp_mfu_chain compute the add, ReLU, quantisation and store of ``cfg``?"""
    return native.kernels() is not None and cfg.native_dim == 16 and cfg.mantissa_bytes == 1 \
        and cfg.mantissa_bits <= 15 and cfg.exp_max <= 127


def _fuse(entries: list, cfg: EngineConfig) -> list:
    """Runs of a trace done in one pass: ``vop add`` (in place or to a separate destination),
    then optionally ``vact relu`` in place on its result, ``qnt`` of its result and a contiguous
    ``st`` of exactly the quantised vectors, become one native bfp_mfu_chain call. Only where the
    kernel computes what the instructions compute one by one: the add reads each row before it
    writes the row, so its result may replace its first operand but must not overlap its second."""
    if not _fusable(cfg):
        return entries
    out, i = [], 0
    while i < len(entries):
        step, pc, fn, args = entries[i]
        if fn is not _x_vop or args[0] is not VecOp.ADD or not _chain_ok(args[1], args[2], args[3]) \
                or args[6] is not Act.COPY or args[7] or args[9]:  # a fused vop is its own pass
            out.append(entries[i])
            i += 1
            continue
        _, aspan, bspan, dspan, count, period = args[:6]
        parts, relu, vspan, addr = [entries[i]], 0, None, None
        j = i + 1
        if j < len(entries) and entries[j][2] is _x_vact:
            act, sspan, adspan, _ = entries[j][3]
            if act is Act.RELU and sspan == dspan and adspan == dspan:
                parts.append(entries[j])
                relu = 1
                j += 1
        if j < len(entries) and entries[j][2] is _x_qnt and entries[j][3][0] == dspan:
            vspan = entries[j][3][1]
            parts.append(entries[j])
            j += 1
            if j < len(entries) and entries[j][2] is _x_st:
                space, st_addr, rows, length, mem_stride, chip, base, chip_stride = entries[j][3]
                contiguous = (rows == 1 or (chip_stride == length and mem_stride == length * cfg.bfp_vector_bytes))
                if space is Space.VRF and contiguous and base == vspan.start and rows * length == count:
                    parts.append(entries[j])
                    addr = st_addr
                    j += 1
        if len(parts) == 1:
            out.append(entries[i])
        else:
            out.append((step, pc, _x_chain, (aspan, bspan, period or count, count, relu, dspan, vspan, addr,
                                             tuple(parts))))
        i = j
    return out
