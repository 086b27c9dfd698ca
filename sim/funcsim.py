"""ISA functional simulator: whole instructions at a time, in vectorised numpy.

Executes a program on the architectural state (external memory image, VRF, MRF, FVRF, scalar and
configuration registers) with the arithmetic of ``accelml.sim.bfp`` and the window semantics of
``accelml.sim.golden``, so its results are bit-exact with the golden layer ops. It counts
instructions, tile operations, MACs and DMA bytes, and drives the event-based cycle model of
``accelml.sim.cycles``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import ExecutionError, NumericsError
from accelml.hdl.isa import MAX_LOOP_DEPTH, NUM_REGS, Act, Cfg, Opcode, PoolMode, Space, VecOp
from accelml.hdl.program import Program, cfg_value

from . import bfp, golden, native
from .bfp import BfpTensor
from .cycles import MFU_LATENCY, CycleModel, NoTiming
from .memory import ExternalMemory, decode_bfp, decode_fp, encode_bfp, encode_fp

_TILES_PER_LOAD = 1 << 32  # provenance tag of an MRF tile: load tag * this + index within the load
_PANEL_CACHE_BYTES = 2 << 30  # prepared weight panels kept per constant image, at most

_NO_RANGE = np.iinfo(np.int64).max
_WINDOWS: dict = {}  # (geometry, pix0, npix, out_w) -> window index, shared by all simulators
_WINDOWS_MAX = 512


def _window_index(geom: golden.ConvGeom, pixels: tuple, oy: np.ndarray, ox: np.ndarray) -> np.ndarray:
    """geom.window_index(oy, ox, -1) (-1: a zero block, native.c), kept per window geometry and
    output pixels (pix0, npix, out_w)."""
    key = (geom, pixels)
    idx = _WINDOWS.get(key)
    if idx is None:
        if len(_WINDOWS) >= _WINDOWS_MAX:
            _WINDOWS.clear()
        idx = _WINDOWS[key] = np.ascontiguousarray(geom.window_index(oy, ox, -1), dtype=np.int64)
    return idx


_CFG_DEFAULTS = {Cfg.KH: 1, Cfg.KW: 1, Cfg.STRIDE_H: 1, Cfg.STRIDE_W: 1, Cfg.DIL_H: 1, Cfg.DIL_W: 1,
                 Cfg.IN_H: 1, Cfg.IN_W: 1, Cfg.IN_CB: 1, Cfg.OUT_W: 1, Cfg.NPIX: 1, Cfg.COB: 1}


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
        self.insn_end: np.ndarray | None = None  # completion cycle of each instruction (last execution)
        self.mem = memory if isinstance(memory, ExternalMemory) else ExternalMemory(cfg, memory)
        n = cfg.native_dim
        mdt = np.int16 if cfg.mantissa_bits <= 15 else np.int32
        self.vrf_mant = np.zeros((cfg.vrf_vectors, n), mdt)
        self.vrf_exp = np.full(cfg.vrf_vectors, cfg.exp_min, np.int16)
        self.mrf_mant = np.zeros((cfg.mrf_tiles, n, n), mdt)
        self.mrf_exp = np.full((cfg.mrf_tiles, n), cfg.exp_min, np.int16)
        self.fvrf = np.zeros((cfg.fvrf_vectors, n), np.float32)
        # where each MRF tile came from: a load of the constant image (tag, index) or -1
        self.mrf_src = np.full(cfg.mrf_tiles, -1, np.int64)
        self.regs = [0] * NUM_REGS
        self.cfgr = {k: _CFG_DEFAULTS.get(k, 0) for k in Cfg}
        self.stats = Stats()
        self.model = (CycleModel if timing else NoTiming)(cfg, self.mem.size)
        self._buffers: dict[str, np.ndarray] = {}
        self._scratch_range = np.zeros(4, np.int64)
        self._exec = {
            Opcode.NOP: self._nop, Opcode.SETI: self._seti, Opcode.ADDI: self._addi, Opcode.ADD: self._add,
            Opcode.CFG: self._cfg, Opcode.LD: self._ld, Opcode.ST: self._st, Opcode.MVC: self._mvc,
            Opcode.POOL: self._pool, Opcode.VOP: self._vop, Opcode.VACT: self._vact, Opcode.DEQ: self._deq,
            Opcode.QNT: self._qnt,
        }

    # -- helpers --------------------------------------------------------------------------------
    def reg(self, r: int) -> int:
        return 0 if r == 0 else self.regs[r]

    def c(self, key: Cfg):
        return cfg_value(key, self.cfgr[key])

    def _depth(self, space: Space) -> int:
        return {Space.VRF: self.cfg.vrf_vectors, Space.MRF: self.cfg.mrf_tiles,
                Space.FVRF: self.cfg.fvrf_vectors}[space]

    def _span(self, space: Space, start: int, count: int) -> slice:
        depth = self._depth(space)
        if start < 0 or start + count > depth:
            raise ExecutionError(
                f"{space.name} access [{start}, {start + count}) outside its {depth} entries"
            )
        return slice(start, start + count)

    def _item_bytes(self, space: Space) -> int:
        return {Space.VRF: self.cfg.bfp_vector_bytes, Space.MRF: self.cfg.tile_bytes,
                Space.FVRF: self.cfg.fp_vector_bytes}[space]

    # -- program execution ----------------------------------------------------------------------
    def run(self, program: Program | list, *, max_steps: int = 50_000_000) -> Stats:
        insns = program.instructions if isinstance(program, Program) else list(program)
        decoded = [(i.op, i.as_dict()) for i in insns]
        self.insn_end = np.zeros(len(decoded), np.int64)
        t0 = time.perf_counter()
        pc, steps, loops = 0, 0, []  # loops: [first, last, remaining]
        while True:
            if pc >= len(decoded):
                raise ExecutionError(f"instruction {pc}: ran past the end of the program without HALT")
            op, f = decoded[pc]
            steps += 1
            if steps > max_steps:
                raise ExecutionError(f"instruction {pc}: more than {max_steps} instructions executed")
            self.stats.by_opcode[op.name] += 1
            if op is Opcode.HALT:
                self.model.op("ctl", 1, 0)
                break
            try:
                if op is Opcode.LOOP:
                    pc = self._loop(pc, f, loops, len(decoded))
                    continue
                self._exec[op](**f)
            except (ExecutionError, NumericsError) as e:
                if str(e).startswith("instruction "):
                    raise
                raise type(e)(f"instruction {pc} ({op.name.lower()}): {e}") from None
            self.insn_end[pc] = self.model.end
            pc += 1
            while loops and pc - 1 == loops[-1][1]:
                loops[-1][2] -= 1
                if loops[-1][2] > 0:
                    pc = loops[-1][0]
                    break
                loops.pop()
        self.stats.instructions = steps
        self.stats.cycles = self.model.cycles
        self.stats.busy = dict(self.model.busy)
        self.stats.wall_seconds += time.perf_counter() - t0
        return self.stats

    def _loop(self, pc: int, f: dict, loops: list, n_insns: int) -> int:
        count = self.reg(f["rs"]) + f["count"]
        body = f["body"]
        last = pc + body
        self.model.op("ctl", 1, 0)
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
            self.regs[rd] = value & 0xFFFF_FFFF
        self.model.op("ctl", 1, 0)

    def _nop(self):
        self.model.op("ctl", 1, 0)

    def _seti(self, rd, imm):
        self._set(rd, imm)

    def _addi(self, rd, rs, imm):
        self._set(rd, self.reg(rs) + imm)

    def _add(self, rd, rs, rt):
        self._set(rd, self.reg(rs) + self.reg(rt))

    def _cfg(self, key, rs, imm):
        self.cfgr[key] = (self.reg(rs) + imm) & 0xFFFF_FFFF
        self.model.op("ctl", 1, 0)

    # -- DMA ------------------------------------------------------------------------------------
    def _dma_geometry(self, space, rc, rm, rows, length):
        item = self._item_bytes(space)
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
        depth = self._depth(space)
        if count and (lo < 0 or hi > depth):
            raise ExecutionError(f"{space.name} access up to entry {hi - 1} outside its {depth} entries")
        addr = self.reg(rm)
        nbytes = rows * length * item
        span_bytes = (rows - 1) * mem_stride + length * item if rows else 0
        return item, mem_stride, chip, addr, nbytes, span_bytes, (space.name.lower(), lo, hi)

    def _ld(self, space, rc, rm, rows, length):
        item, mem_stride, chip, addr, nbytes, span, chip_range = self._dma_geometry(space, rc, rm, rows, length)
        key = (space, addr, rows, length, mem_stride)
        const = addr + span <= self.mem.frozen
        if const and key in self.mem.decoded:  # the constant image never changes: decode it once
            cached = self.mem.decoded[key]
            raw = None
        else:
            cached = None
            raw = self.mem.gather(addr, rows, length * item, mem_stride, f"load to {space.name}").reshape(-1, item)
        where = f"load to {space.name} from {addr:#x}"
        if space is Space.MRF:  # provenance of each tile, for reuse of prepared weights (_mvc_native)
            tag = self.mem.decoded.setdefault(("mrf-load", key), len(self.mem.decoded)) if const else -1
            self.mrf_src[chip] = tag * _TILES_PER_LOAD + np.arange(rows * length) if const else -1
        if not self.numerics:
            pass
        elif cached is not None:
            self._store_chip(space, chip, *cached)
        else:
            if space is Space.FVRF:
                decoded = (decode_fp(raw, self.cfg, where=where),)
            else:
                decoded = decode_bfp(raw, self.cfg, where=where)
            self._store_chip(space, chip, *decoded)
            if const:
                self.mem.decoded[key] = decoded
        self.stats.dma_load_bytes += nbytes
        self.model.op("dma_load", self.model.dma_cycles(nbytes), self.cfg.mem_latency_cycles,
                      reads=[self.model.mem_range(addr, span)], writes=[chip_range], bus=True)

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
        if not self.numerics:
            blob = bytes(nbytes)
        elif space is Space.FVRF:
            blob = encode_fp(self.fvrf[chip])
        elif space is Space.VRF:
            blob = encode_bfp(self.vrf_mant[chip], self.vrf_exp[chip], self.cfg)
        else:
            blob = encode_bfp(self.mrf_mant[chip].reshape(-1, self.cfg.native_dim), self.mrf_exp[chip].reshape(-1),
                              self.cfg)
        block = np.frombuffer(blob, np.uint8).reshape(rows, length * item)
        self.mem.scatter(addr, block, mem_stride, f"store from {space.name}")
        self.stats.dma_store_bytes += nbytes
        self.model.op("dma_store", self.model.dma_cycles(nbytes), self.cfg.mem_latency_cycles,
                      reads=[chip_range], writes=[self.model.mem_range(addr, span)], bus=True)

    # -- windows ----------------------------------------------------------------------------------
    def _window(self):
        c = self.c
        geom = golden.ConvGeom(
            c(Cfg.IN_H), c(Cfg.IN_W), c(Cfg.KH), c(Cfg.KW), (c(Cfg.STRIDE_H), c(Cfg.STRIDE_W)),
            (c(Cfg.DIL_H), c(Cfg.DIL_W)), (c(Cfg.PAD_T), c(Cfg.PAD_L), c(Cfg.PAD_B), c(Cfg.PAD_R)),
        )
        if min(geom.in_h, geom.in_w, geom.kh, geom.kw, *geom.stride, *geom.dilation, c(Cfg.OUT_W), c(Cfg.IN_CB)) < 1:
            raise ExecutionError("window geometry has a zero dimension (in_h, in_w, kh, kw, strides, out_w, in_cb)")
        q = c(Cfg.PIX0) + np.arange(c(Cfg.NPIX))
        return geom, q // c(Cfg.OUT_W), q % c(Cfg.OUT_W)

    def _vrf_image(self, rs: int, geom: golden.ConvGeom, in_cb: int) -> tuple[BfpTensor, slice]:
        span = self._span(Space.VRF, self.reg(rs), geom.in_h * geom.in_w * in_cb)
        n = self.cfg.native_dim
        x = BfpTensor(self.vrf_mant[span].reshape(geom.in_h, geom.in_w, in_cb * n),
                      self.vrf_exp[span].reshape(geom.in_h, geom.in_w, in_cb),
                      in_cb * n, n, self.cfg.mantissa_bits)
        return x, span

    def _mvc(self, rd, rs, rm, acc):
        c, n = self.c, self.cfg.native_dim
        geom, oy, ox = self._window()
        in_cb, cob, taps = c(Cfg.IN_CB), c(Cfg.COB), geom.kh * geom.kw
        gi = c(Cfg.GI) or in_cb
        go = c(Cfg.GO) or cob
        x, vspan = self._vrf_image(rs, geom, in_cb)
        p = oy.size
        tspan = self._span(Space.MRF, self.reg(rm), cob * taps * gi)
        dspan = self._span(Space.FVRF, self.reg(rd), p * cob)
        # (first input block, first output block, output blocks) of each group the MVC touches
        if c(Cfg.GI) == 0:  # dense: every output block reads every input block
            groups = [(0, 0, cob)]
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
        if self.numerics and not self._mvc_native(vspan, geom, oy, ox, tspan, dspan, in_cb, gi, groups, acc):
            out = np.zeros((p, cob * n), np.float32) if not acc else self.fvrf[dspan].reshape(p, cob * n).copy()
            tiles_m = self.mrf_mant[tspan].reshape(cob, taps * gi, n, n)
            tiles_e = self.mrf_exp[tspan].reshape(cob, taps * gi, n)
            for b0, ob0, nob, *_ in groups:
                xg = BfpTensor(x.mant[..., b0 * n:(b0 + gi) * n], x.exp[..., b0:b0 + gi], gi * n, n,
                               x.mantissa_bits)
                wm = tiles_m[ob0:ob0 + nob].transpose(0, 2, 1, 3).reshape(nob * n, -1)
                we = tiles_e[ob0:ob0 + nob].transpose(0, 2, 1).reshape(nob * n, -1)
                cols = slice(ob0 * n, (ob0 + nob) * n)
                out[:, cols] = bfp.block_matmul(golden.im2col(xg, geom, oy, ox), (wm, we), self.cfg,
                                                acc=out[:, cols], what="mvc")
            self.fvrf[dspan] = out.reshape(p * cob, n)
        tile_ops = p * cob * taps * gi
        self.stats.tile_ops += tile_ops
        self.stats.macs += tile_ops * n * n
        # T tile engines share the MVC's (pixel, output block) pairs; each pair streams its
        # taps x gi tiles, one per cycle, through one engine (weight tiles are broadcast)
        occupancy = -(-(cob * p) // self.cfg.tiles) * taps * gi
        reads = [("vrf", vspan.start, vspan.stop), ("mrf", tspan.start, tspan.stop, False)]
        if acc:
            reads.append(("fvrf", dspan.start, dspan.stop))
        self.model.op("mvu", occupancy, self.model.mvu_latency, reads=reads,
                      writes=[("fvrf", dspan.start, dspan.stop)])

    def _mvc_native(self, vspan: slice, geom, oy, ox, tspan: slice, dspan: slice, in_cb: int, gi: int, groups,
                    acc: int) -> bool:
        """An MVC's products in the native kernels, written (acc = 0) or accumulated (acc = 1)
        straight into the FVRF destination: the image scaled once, each window tap read from it
        in place, weights as prepared panels (kept across runs for tiles loaded from the constant
        image). False (nothing done) when the kernels are off or the operands need the general
        path; ranges are taken over the whole image and tile span, a superset of the operands, so
        the fast path is only taken where it is exact. On an accumulator overflow the destination
        may be partly written."""
        k = native.kernels()
        if k is None or self.vrf_mant.dtype != np.int16:
            return False
        n, m_bits = self.cfg.native_dim, self.cfg.mantissa_bits
        blocks = vspan.stop - vspan.start
        xs = self._scratch("mvc-image", blocks * n)
        rng = self._scratch_range
        k.scale_range_i16(0, blocks, n, m_bits, native.ptr(self.vrf_mant) + vspan.start * n * 2,
                          native.ptr(self.vrf_exp) + vspan.start * 2, native.ptr(xs), native.ptr(rng))
        lo, live, second, hi = (int(v) for v in rng)
        ar = (lo, hi) if live else ((second, hi) if second != _NO_RANGE else None)
        src = self.mrf_src[tspan]
        src_key = src.tobytes() if src.size and src.min() >= 0 else None  # all tiles from constant loads
        if src_key is not None and ("mvc-range", src_key) in self.mem.decoded:  # constant weights: scanned once
            wr = self.mem.decoded[("mvc-range", src_key)]
        else:
            wr = bfp.nonzero_block_range(self.mrf_mant[tspan], self.mrf_exp[tspan].astype(np.int32) - (m_bits - 1), n)
            if src_key is not None:
                self.mem.decoded[("mvc-range", src_key)] = wr
        p = oy.size
        out = self.fvrf[dspan].reshape(p, (dspan.stop - dspan.start) // p * n if p else 0)
        if ar is None or wr is None:  # every product is an exact zero
            if not acc:
                out[...] = 0
            return True
        fast, exact32 = bfp.fast_path(ar, wr, self.cfg)
        if not (fast and exact32):
            return False
        taps = geom.kh * geom.kw
        kb = taps * gi
        idx = _window_index(geom, (self.c(Cfg.PIX0), self.c(Cfg.NPIX), self.c(Cfg.OUT_W)), oy, ox)
        zeros = self._scratch("zeros", gi * n, zero=True)
        tiles_m, tiles_e = self.mrf_mant[tspan], self.mrf_exp[tspan]
        item = tiles_m.itemsize
        for b0, ob0, nob, *_ in groups:
            key = ("mvc-panels", src_key, ob0, nob, kb)
            wp = self.mem.decoded.get(key) if src_key is not None else None
            if wp is None:
                wp = np.empty((-(-(nob * n) // 16), kb, n, 16), np.float32)
                k.pack_tiles(nob, kb, n, m_bits, native.ptr(tiles_m) + ob0 * kb * n * n * item,
                             native.ptr(tiles_e) + ob0 * kb * n * item, native.ptr(wp))
                if src_key is not None and self.mem.decoded.get("mvc-panel-bytes", 0) + wp.nbytes <= _PANEL_CACHE_BYTES:
                    # weights from the constant image are the same every run: keep them prepared
                    self.mem.decoded[key] = wp
                    self.mem.decoded["mvc-panel-bytes"] = self.mem.decoded.get("mvc-panel-bytes", 0) + wp.nbytes
            bfp.gemm(k, xs, in_cb * n, wp, out[:, ob0 * n:(ob0 + nob) * n], nob * n, n, "mvc", taps=taps, gi=gi,
                     xoff=b0 * n, idx=idx, zeros=zeros, init=not acc)
        return True

    def _scratch(self, name: str, size: int, zero: bool = False) -> np.ndarray:
        """A float32 work buffer of at least ``size`` elements, kept across instructions."""
        buf = self._buffers.get(name)
        if buf is None or buf.size < size:
            buf = np.zeros(max(size, 1024), np.float32)
            self._buffers[name] = buf
        return buf

    def _pool(self, mode, rd, rs):
        c, n = self.c, self.cfg.native_dim
        geom, oy, ox = self._window()
        in_cb = c(Cfg.IN_CB)
        x, vspan = self._vrf_image(rs, geom, in_cb)
        dspan = self._span(Space.FVRF, self.reg(rd), oy.size * in_cb)
        if self.numerics:
            values = bfp.dequantize_internal(x)
            if mode is PoolMode.MAX:
                out = golden.max_pool(values, geom, oy, ox)
            else:
                out = golden.avg_pool(values, geom, count_include_pad=mode is PoolMode.AVG_PAD, oy=oy, ox=ox)
            self.fvrf[dspan] = out.reshape(-1, n)
        self.model.op("mfu", self._mfu_cycles(oy.size * in_cb * geom.kh * geom.kw), MFU_LATENCY,
                      reads=[("vrf", vspan.start, vspan.stop)], writes=[("fvrf", dspan.start, dspan.stop)])

    # -- multi-function unit ----------------------------------------------------------------------
    def _mfu_cycles(self, vectors: int) -> int:
        return -(-vectors // self.cfg.mfu_width)

    def _mfu_account(self, count, reads, dspan):
        self.model.op("mfu", self._mfu_cycles(count), MFU_LATENCY, reads=reads,
                      writes=[("fvrf", dspan.start, dspan.stop)])

    def _vop(self, fn, rd, ra, rb, count, period):
        aspan = self._span(Space.FVRF, self.reg(ra), count)
        bspan = self._span(Space.FVRF, self.reg(rb), period or count)
        dspan = self._span(Space.FVRF, self.reg(rd), count)
        if self.numerics:
            a, b = self.fvrf[aspan], self.fvrf[bspan]
            if fn is VecOp.ADD:  # b repeats with its period (e.g. a bias for every pixel)
                r = bfp.mfu_add_periodic(a, b, "vop add")
            elif fn is VecOp.SUB:  # a - b is a + (-b): negation is exact
                r = bfp.mfu_add_periodic(a, -b, "vop sub")
            else:
                if period:
                    b = b[np.arange(count) % period]
                r = bfp.mfu_mul(a, b, "vop mul") if fn is VecOp.MUL else bfp.mfu_max(a, b)
            self.fvrf[dspan] = r
        self._mfu_account(count, [("fvrf", aspan.start, aspan.stop), ("fvrf", bspan.start, bspan.stop)], dspan)

    def _vact(self, act, rd, rs, count):
        sspan = self._span(Space.FVRF, self.reg(rs), count)
        dspan = self._span(Space.FVRF, self.reg(rd), count)
        x = self.fvrf[sspan]
        if not self.numerics:
            pass
        elif act is Act.RELU:
            self.fvrf[dspan] = bfp.mfu_relu(x)
        elif act is Act.CLIP:
            self.fvrf[dspan] = bfp.mfu_clip(x, self.c(Cfg.CLIP_LO), self.c(Cfg.CLIP_HI))
        elif act is Act.LRELU:
            self.fvrf[dspan] = bfp.mfu_leaky_relu(x, self.c(Cfg.ALPHA))
        else:
            self.fvrf[dspan] = x.copy()
        self._mfu_account(count, [("fvrf", sspan.start, sspan.stop)], dspan)

    def _deq(self, rd, rs, count):
        sspan = self._span(Space.VRF, self.reg(rs), count)
        dspan = self._span(Space.FVRF, self.reg(rd), count)
        if self.numerics:
            t = BfpTensor(self.vrf_mant[sspan], self.vrf_exp[sspan][:, None], self.cfg.native_dim,
                          self.cfg.native_dim, self.cfg.mantissa_bits)
            self.fvrf[dspan] = bfp.dequantize_internal(t)
        self._mfu_account(count, [("vrf", sspan.start, sspan.stop)], dspan)

    def _qnt(self, rd, rs, count):
        sspan = self._span(Space.FVRF, self.reg(rs), count)
        dspan = self._span(Space.VRF, self.reg(rd), count)
        if self.numerics:
            q = bfp.quantize(self.fvrf[sspan], self.cfg, name="qnt")
            self.vrf_mant[dspan] = q.mant
            self.vrf_exp[dspan] = q.exp[:, 0]
        self.model.op("mfu", self._mfu_cycles(count), MFU_LATENCY, reads=[("fvrf", sspan.start, sspan.stop)],
                      writes=[("vrf", dspan.start, dspan.stop)])
