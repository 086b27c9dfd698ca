"""Scheduling and code generation: a lowered plan -> program + external-memory image.

Schedule (per layer, for one EngineConfig):

* **Weights** stream through the MRF in chunks of output blocks that fit half of it. Chunks pack
  into one half (several small layers' weights share it) until the next does not fit, then into
  the other half once its chunks are used up, so loads run ahead of the products that need them
  (double buffering at any chunk size), across layer boundaries, up to a look-ahead of a chunk or
  two. A layer whose single output block needs more tiles than half the MRF is split
  along kernel rows (the reduction order is kept, so results are unchanged).
* **Banked MRF** (``EngineConfig.mrf_banked``, docs/isa.md): chunks are multiples of T output
  blocks, the rest of a layer divisors of T (:func:`_bank_cut`); each chunk is laid out in the
  image as the banks read it (rows of T tiles, or a divisor chunk's rows loaded with ``copies``)
  and a half counts rows of T tiles. A layer's chunks that fit a half together (``grouped``) load
  as one and run band by band, writing their results side by side (``dstride``: the layer's
  blocks a pixel), so a band's input is read once and one epilogue serves them all.
* **Activations**: if the layer's input fits its VRF region it is loaded once; otherwise the
  output is computed in bands of rows with the input rows each band needs (halo included).
* **Resident activations**: part of the VRF is a pool where an activation stays between the layer
  that writes it and the layers that read it, when all of them handle whole pixels (every channel
  block) at a time: the writer quantises straight into place, readers take windows, shortcuts
  and pooling inputs in place, and no external-memory traffic is spent on it (a split buffer
  keeps both planes there). Buffers are placed first-fit in program order by lifetime; the rest
  stream. When a layer does not fit the streaming regions that remain, the whole segment is
  scheduled without the pool; the driver also keeps the streaming schedule when the cycle model
  finds it faster (its larger regions need fewer bands and weight reloads).
* **Loop order**: weight chunk outer, row band inner: each weight is read once (weight reuse
  across all output pixels at batch 1).
* Accumulator, shortcut and output staging regions alternate between two halves, so the epilogue
  of one chunk overlaps the products of the next.
* **Issue order**: control issues in program order and each unit takes one instruction at a time
  (``sim/cycles.py``), so where an instruction sits decides what it holds back (``ISSUE_ORDERS``,
  which the driver times): a conv step's products, a weight piece and the step before's epilogue
  (the MFU on the other accumulator parity), with the next band's input load (into the other
  input buffer) before the products or after them, and the epilogue last or right after the
  products.

On-chip regions: VRF = input x2 | shortcut | output staging x2 | resident pool; MRF = two halves;
FVRF = constants (the widest layer's bias, whole) | accumulators x2 | shortcut. Everything that does
not fit raises ``CapacityError`` naming the layer and the file that is too small.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import CapacityError
from accelml.hdl.isa import Act, Cfg, Dest, Instruction, Opcode, PoolMode, Space, VecOp
from accelml.hdl.program import Program
from accelml.sim import layout
from accelml.sim.layout import MemoryImage

from .ir import Activation, ActKind
from .lower import Buf, ConvOp, EltKind, EltOp, Plan, PoolKind, PoolOp

__all__ = ["Compiled", "LayerInfo", "generate"]

# weight loads ahead of use go in pieces of about this size (load_weights): each transfer costs the
# memory's latency and the DMA's setup besides its bytes, so fewer, larger pieces lose less; measured
# (fast programs, a10): ResNet-50 1.733 M cycles at 64 KiB, 1.679 M at 256 KiB, 1.672 M at 512 KiB,
# VGG-16 7.73 M / 7.53 M / 7.49 M, MobileNet-v2 354 k / 346 k / 345 k
WEIGHT_PIECE_BYTES = 512 << 10
_U16 = 0xFFFF
_ALIGN = 64
# Where a conv step's instructions go, in program order (control issues in order, a unit takes one
# instruction at a time, so an instruction waiting for its unit or its data holds back the ones
# after it): "load_first": the next band's input load, the products, a weight piece, the step
# before's epilogue; "products_first": the products, the next input, a weight piece, the
# epilogue (the load no longer waits for the last band's products, which read its buffer, before
# these are issued); "epilogue_first": the products, the epilogue, the next input, a weight
# piece (the MFU starts before control waits for the load unit).
ISSUE_ORDERS = ("load_first", "products_first", "epilogue_first")
PIPELINE_BANDS = 2  # a layer whose weights load once is still computed in this many row bands
_POOL_ALIGN = 16  # resident buffers start on whole groups of VRF entries


@dataclass
class LayerInfo:
    """Per-layer schedule summary (the compile report's rows)."""

    name: str
    kind: str
    macs: int = 0  # useful MACs of the source layer
    tile_ops: int = 0  # N x N tile products the MVU executes
    weight_bytes: int = 0
    act_bytes: int = 0  # activation bytes moved (in + out + shortcut)
    chunks: int = 1
    bands: int = 1
    ksplit: int = 1
    first_insn: int = 0
    last_insn: int = 0


@dataclass
class Compiled:
    program: Program
    image: MemoryImage
    mem_bytes: int  # external memory the program needs (constants + activations)
    layers: list[LayerInfo]
    buffers: dict[str, dict]  # base buffer -> {addr, h, w, cb, fp32, split}
    resident: dict[str, tuple[int, int]]  # base buffer kept on chip -> (VRF address, vectors reserved)
    pool: float  # the fraction of the VRF reserved for resident activations (0: every activation streams)


@dataclass
class _Regions:
    vrf_in: tuple[int, int]  # two input buffers: the next load fills one while products read the other
    vrf_res: int
    vrf_out: tuple[int, int]
    vrf_out_size: int
    vrf_in_size: int
    vrf_res_size: int
    mrf_half: int
    fvrf_const: int
    fvrf_const_size: int
    fvrf_acc: tuple[int, int]  # two accumulator buffers, one in each half of the FVRF (below)
    fvrf_acc_size: int
    fvrf_res: int
    fvrf_res_size: int
    vrf_pool: int  # resident activations (0 vectors: every activation streams through external memory)
    vrf_pool_size: int


def _bank_row(cfg: EngineConfig) -> int:
    """MRF entries one row of weights takes: T on a banked MRF (a tile per bank), else 1."""
    return cfg.tiles if cfg.mrf_banked else 1


def _bank_cut(cob: int, tiles: int, most: int, whole: int, reads: int = 0) -> list[int]:
    """Chunk sizes for ``cob`` output blocks on a banked MRF: chunks of ``whole`` blocks (a multiple
    of T, or 0), the rest as one multiple of T and then divisors of T, none above ``most`` (isa.md,
    "Banked MRF"): largest first; or, with ``reads`` = V VRF reads fewer than T
    (``EngineConfig.vrf_reads``), the divisors whose steps take the fewest cycles a pixel (a chunk
    of d blocks takes T / d pixels a round, ceil((T / d) / V) cycles a step), then the fewest."""
    sizes, left = [], cob
    while whole and left >= whole:
        sizes.append(whole)
        left -= whole
    if left >= tiles and left // tiles * tiles <= most:
        sizes.append(left // tiles * tiles)
        left -= sizes[-1]
    divisors = [d for d in range(min(tiles, most), 0, -1) if tiles % d == 0]
    if 0 < reads < tiles:
        best = {0: (Fraction(0), 0, [])}  # blocks -> (cycles a pixel-step, chunks, sizes) of the best cut
        for r in range(1, left + 1):
            best[r] = min((best[r - d][0] + Fraction(-(-(tiles // d) // reads), tiles // d), best[r - d][1] + 1,
                           sorted([d, *best[r - d][2]], reverse=True)) for d in divisors if d <= r)
        return sizes + best[left][2]
    while left:
        d = next(d for d in divisors if d <= left)
        sizes.append(d)
        left -= d
    return sizes


def _regions(cfg: EngineConfig, const_vectors: int, pool: float) -> _Regions:
    """The on-chip regions: a ``pool`` fraction of the VRF, at its bottom, holds resident
    activations and the streaming regions share the rest, above it (so that loads, which write the
    streaming regions, and the MFU writing resident activations, which are placed from the bottom
    up, write different halves of the VRF: bitstreams/banking.py, a write port per half)."""
    v, f = cfg.vrf_vectors, cfg.fvrf_vectors
    vpool = int(v * pool) // _POOL_ALIGN * _POOL_ALIGN
    vs = v - vpool
    vin = vs // 4
    vres = vs // 8
    vout = (vs - 2 * vin - vres) // 2
    s0 = vpool  # the streaming regions' base
    fc = const_vectors  # all of it: a layer's bias is loaded once and read by every step's epilogue
    facc = (f - fc) // 3
    # constants, the first accumulator buffer, the shortcut region, the second accumulator buffer:
    # while the constants take at most a quarter of the file, the buffers lie in different halves of
    # the FVRF, so an epilogue writing one and the next products the other write different halves
    # (bitstreams/banking.py, write_port_rules: a write port per half)
    return _Regions(
        vrf_in=(s0, s0 + vin), vrf_res=s0 + 2 * vin, vrf_out=(s0 + 2 * vin + vres, s0 + 2 * vin + vres + vout),
        vrf_out_size=vout,
        vrf_in_size=vin,
        vrf_res_size=vres, mrf_half=cfg.mrf_tiles // 2 // _bank_row(cfg) * _bank_row(cfg), fvrf_const=0,
        fvrf_const_size=fc,
        fvrf_acc=(fc, f - facc), fvrf_acc_size=facc, fvrf_res=fc + facc, fvrf_res_size=f - fc - 2 * facc,
        vrf_pool=0, vrf_pool_size=vpool,
    )


class _Emitter:
    """Instruction emission with register and configuration-register caches."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.insns: list[Instruction] = []
        self.regs: dict[int, int] = {}
        self.cfgs: dict[Cfg, int] = {}

    def emit(self, op: Opcode, **fields) -> None:
        self.insns.append(Instruction.make(op, **fields))

    def reg(self, r: int, value: int) -> int:
        value &= 0xFFFF_FFFF
        if self.regs.get(r) != value:
            self.emit(Opcode.SETI, rd=r, imm=value)
            self.regs[r] = value
        return r

    def set(self, key: Cfg, value) -> None:
        if isinstance(value, float):
            raw = int(np.array(value, dtype=np.float32).view(np.uint32))
        else:
            raw = int(value) & 0xFFFF_FFFF
        if self.cfgs.get(key) != raw:
            self.emit(Opcode.CFG, key=key, rs=0, imm=raw)
            self.cfgs[key] = raw

    def dma(self, op: Opcode, space: Space, chip: int, addr: int, rows: int, length: int,
            mem_stride: int = 0, chip_stride: int = 0, copies: int = 1) -> None:
        """A 2-D DMA, split into pieces whose row and length counts fit their fields; ``copies``:
        a load into a banked MRF writing each row that many times side by side (isa.md)."""
        item = {Space.VRF: self.cfg.bfp_vector_bytes, Space.MRF: self.cfg.tile_bytes,
                Space.FVRF: self.cfg.fp_vector_bytes}[space]
        if rows == 0 or length == 0:
            return
        if self.cfg.mrf_banked and space is Space.MRF and op is Opcode.LD:
            self.set(Cfg.COPIES, copies)
        elif copies != 1:
            raise ValueError("copies are loads into a banked MRF")
        if rows == 1 or (mem_stride in (0, length * item) and chip_stride in (0, length)):
            # packed: one long row, cut into pieces of at most 65535 items
            total = rows * length
            done = 0
            while done < total:
                k = min(_U16, total - done)
                self.set(Cfg.MEM_STRIDE, 0)
                self.set(Cfg.CHIP_STRIDE, 0)
                self.emit(op, space=space, rc=self.reg(1, chip + done), rm=self.reg(2, addr + done * item),
                          rows=1, length=k)
                done += k
            return
        if length > _U16:
            raise CapacityError(f"a strided transfer of {length} items per row exceeds the DMA length field")
        self.set(Cfg.MEM_STRIDE, mem_stride or length * item)
        self.set(Cfg.CHIP_STRIDE, chip_stride or length)
        for r0 in range(0, rows, _U16):
            k = min(_U16, rows - r0)
            self.emit(op, space=space, rc=self.reg(1, chip + r0 * (chip_stride or length)),
                      rm=self.reg(2, addr + r0 * (mem_stride or length * item)), rows=k, length=length)

    def counted(self, op: Opcode, count: int, **fields) -> None:
        """An FVRF/VRF vector op over ``count`` vectors, in pieces of at most 65535."""
        regs = {k: v for k, v in fields.items() if k in ("rd", "rs", "ra", "rb")}
        rest = {k: v for k, v in fields.items() if k not in regs}
        period = rest.get("period", 0)
        done = 0
        while done < count:
            k = min(_U16 - (_U16 % period if period else 0), count - done)
            regmap = {}
            for slot, (name, base) in enumerate(regs.items(), start=3):
                advance = 0 if (name == "rb" and period) else done
                regmap[name] = self.reg(slot, base + advance)
            self.emit(op, **regmap, **rest, count=k)
            done += k


def _input_rows(g, out_rows: int) -> int:
    """Input rows a band of ``out_rows`` output rows of window ``g`` reads (at most the input)."""
    return min(g.in_h, (out_rows - 1) * g.stride[0] + (g.kh - 1) * g.dilation[0] + 1)


def _window(e: _Emitter, g, in_h: int, in_cb: int, kh: int, kw: int, pad_t: int, pad_l: int, out_w: int,
            npix: int) -> None:
    """Configure the window of an MVC or POOL over ``in_h`` rows of ``g``'s input held in the VRF."""
    for key, value in ((Cfg.IN_H, in_h), (Cfg.IN_W, g.in_w), (Cfg.IN_CB, in_cb), (Cfg.KH, kh), (Cfg.KW, kw),
                       (Cfg.STRIDE_H, g.stride[0]), (Cfg.STRIDE_W, g.stride[1]), (Cfg.DIL_H, g.dilation[0]),
                       (Cfg.DIL_W, g.dilation[1]), (Cfg.PAD_T, pad_t), (Cfg.PAD_L, pad_l), (Cfg.OUT_W, out_w),
                       (Cfg.PIX0, 0), (Cfg.NPIX, npix)):
        e.set(key, value)


def _act_kind(e: _Emitter, act: Activation) -> Act:
    """``act`` as an ``isa.Act`` (COPY: none), its constants set in the configuration registers."""
    if act.kind is ActKind.NONE:
        return Act.COPY
    if act.kind is ActKind.RELU:
        return Act.RELU
    if act.kind is ActKind.CLIP:
        e.set(Cfg.CLIP_LO, float(np.float32(act.lo)))
        e.set(Cfg.CLIP_HI, float(np.float32(act.hi)))
        return Act.CLIP
    e.set(Cfg.ALPHA, float(np.float32(act.alpha)))
    return Act.LRELU


def _act_insns(e: _Emitter, act: Activation, at: int, count: int) -> None:
    kind = _act_kind(e, act)
    if kind is not Act.COPY:
        e.counted(Opcode.VACT, count, act=kind, rd=at, rs=at)


class _Generator:
    def __init__(self, plan: Plan, pool: float, lookahead: int, tile_cache: dict | None = None,
                 order: str = ISSUE_ORDERS[0]):
        self.plan, self.cfg = plan, plan.cfg
        self.tile_cache = {} if tile_cache is None else tile_cache
        self.n = plan.cfg.native_dim
        self.img = MemoryImage(plan.cfg)
        self.e = _Emitter(plan.cfg)
        const, widest = 0, None  # the constants region holds every layer's bias (an affine's scale and shift)
        for op in plan.ops:
            need = op.dst.cb if isinstance(op, ConvOp) else \
                2 * op.srcs[0].cb if isinstance(op, EltOp) and op.kind is EltKind.AFFINE else 0
            if need > const:
                const, widest = need, op
        if plan.cfg.fvrf_vectors - const < 3:
            raise CapacityError(f"layer {widest.name!r}: its {const} constant vectors leave no room for "
                                f"accumulators in the FVRF of {plan.cfg.fvrf_vectors} vectors ({plan.cfg.name})")
        self.pool = pool
        self.r = _regions(plan.cfg, const, pool)
        self.resident: dict[str, tuple[int, int]] = {}  # base buffer on chip -> (VRF address, vectors)
        self.addr: dict[str, int] = {}  # base buffer -> external address (-1: resident, none)
        self.layers: list[LayerInfo] = []
        self.weights: dict[int, tuple[int, int]] = {}
        self.weight_bytes: dict[int, int] = {}
        self.bank_addr: dict[tuple[int, tuple], int] = {}  # (conv, weight id) -> image address (banked MRF)
        self.grouped: dict[int, bool] = {}  # conv -> its chunks loaded together (banked MRF, conv_plan)
        self.plans: dict[int, tuple] = {}
        # weight chunks in use order across the network: (op, index in its weight_ids, weight id)
        self.wqueue: list[tuple[ConvOp, int, tuple]] = []
        self.wpos = 0  # next chunk of wqueue to load
        self.wslot: dict[tuple[int, int], int] = {}  # (conv, chunk index) -> MRF tile where it was loaded
        self.half_keys: tuple[list, list] = ([], [])  # chunks loaded into each MRF half, not yet used up
        self.fill_half, self.fill_at = 0, 0  # the half chunks go into, and its next free tile
        self.lookahead = lookahead
        if order not in ISSUE_ORDERS:
            raise ValueError(f"issue order {order!r}: one of {', '.join(ISSUE_ORDERS)}")
        self.order = order
        self.cur_chunk = 0  # index in wqueue of the chunk the products being emitted use
        self.pieces: deque[tuple[int, functools.partial]] = deque()  # weight-load pieces not yet emitted (drip)
        self.parity = 0
        self.held_store: functools.partial | None = None  # a staged output's store, emitted a step late (flush)
        self.in_turn = 0
        self.double_in: dict[int, bool] = {}

    # -- addresses --------------------------------------------------------------------------------
    def vaddr(self, buf: Buf, pixel: int, block: int = 0, lo: bool = False) -> int:
        """External address of ``buf``'s vector (pixel, block), in its second plane if ``lo``."""
        base = self.plan.bases[buf.base]
        vb = self.cfg.fp_vector_bytes if base.fp32 else self.cfg.bfp_vector_bytes
        plane = base.plane_vectors if lo else 0
        return self.addr[buf.base] + (plane + (pixel * base.cb) + buf.cb_off + block) * vb

    def planes(self, buf: Buf) -> list[bool]:
        """The planes of ``buf`` (``lo`` flags): two for a split buffer."""
        return [False, True] if self.plan.bases[buf.base].split else [False]

    def res_addr(self, buf: Buf, pixel: int, lo: bool = False) -> int | None:
        """VRF address of a resident buffer's pixel, in its second plane if ``lo`` (None: ``buf``
        lives in external memory). A resident split buffer keeps its planes one after the other."""
        if buf.base not in self.resident:
            return None
        base = self.plan.bases[buf.base]
        return self.resident[buf.base][0] + (base.plane_vectors if lo else 0) + pixel * base.cb

    # -- resident activations ---------------------------------------------------------------------
    def place_resident(self) -> None:
        """Keep activations in the VRF pool instead of external memory where they can be.

        A buffer can stay on chip when one op writes it and only later ops read it, all of them a
        whole pixel (every block) at a time, so that quantised outputs land in its pixel-major
        layout directly and windows, shortcuts and pools read it in place: not a segment input
        or output, not a concat (a split buffer takes both its planes). Buffers are placed
        first-fit where nothing placed before them is alive at the same addresses at any point of
        their lifetime (producer to last reader)."""
        ops, bases = self.plan.ops, self.plan.bases
        io = {b.base for b in (*self.plan.inputs.values(), *self.plan.outputs.values())}
        writers: dict[str, list[int]] = {}
        readers: dict[str, list[int]] = {}
        ok: dict[str, bool] = {}
        for i, op in enumerate(ops):
            writers.setdefault(op.dst.base, []).append(i)
            ok[op.dst.base] = ok.get(op.dst.base, True) and self._whole(op.dst) and self._whole_pixels(op, "dst")
            if isinstance(op, ConvOp):
                reads = [("src", op.src)] + ([("residual", op.residual)] if op.residual is not None else [])
            elif isinstance(op, PoolOp):
                reads = [("src", op.src)]
            else:
                reads = [("src", b) for b in op.srcs]
            for role, buf in reads:
                readers.setdefault(buf.base, []).append(i)
                ok[buf.base] = ok.get(buf.base, True) and self._whole(buf) and self._whole_pixels(op, role)
        placed: list[tuple[int, int, int]] = []  # (address, vectors, last reader)
        pool, size = self.r.vrf_pool, self.r.vrf_pool_size
        for name, base in bases.items():
            w, rd = writers.get(name, []), readers.get(name, [])
            if name in io or base.fp32 or len(w) != 1 or not rd or min(rd) <= w[0] or not ok[name]:
                continue
            first, last = w[0], max(rd)
            need = -(-base.vectors // _POOL_ALIGN) * _POOL_ALIGN
            live = sorted((a, n) for a, n, end in placed if end >= first)
            at = pool
            for a, n in live:
                if a - at >= need:
                    break
                at = max(at, a + n)
            if at + need <= pool + size:
                placed.append((at, need, last))
                self.resident[name] = (at, need)

    def _whole(self, buf: Buf) -> bool:
        return buf.cb_off == 0 and buf.cb == self.plan.bases[buf.base].cb

    def _whole_pixels(self, op, role: str) -> bool:
        """Whether ``op`` writes (role "dst") or reads its ``role`` buffer every block of a pixel at once."""
        if isinstance(op, ConvOp):
            # one chunk of output blocks, or a banked MRF's chunks with one epilogue (grouped)
            return role == "src" or len(self.plans[id(op)][2]) == 1 or self.grouped.get(id(op), False)
        if isinstance(op, PoolOp):
            return self.plans[id(op)][0] == op.src.cb
        return True

    def pix_stride_bytes(self, buf: Buf) -> int:
        base = self.plan.bases[buf.base]
        vb = self.cfg.fp_vector_bytes if base.fp32 else self.cfg.bfp_vector_bytes
        return base.cb * vb

    def load_rows(self, buf: Buf, pix0: int, npix: int, blk0: int, nblk: int, space: Space, chip: int,
                  lo: bool = False, chip_stride: int = 0) -> int:
        """Load pixels [pix0, pix0+npix) x blocks [blk0, blk0+nblk) of ``buf`` (plane ``lo``), a pixel
        every ``chip_stride`` entries on chip (default: packed); returns bytes moved."""
        self.e.dma(Opcode.LD, space, chip, self.vaddr(buf, pix0, blk0, lo), npix, nblk,
                   mem_stride=self.pix_stride_bytes(buf), chip_stride=chip_stride or nblk)
        return npix * nblk * self.cfg.bfp_vector_bytes

    def store_rows(self, buf: Buf, pix0: int, npix: int, blk0: int, nblk: int, space: Space, chip: int,
                   lo: bool = False) -> int:
        self.e.dma(Opcode.ST, space, chip, self.vaddr(buf, pix0, blk0, lo), npix, nblk,
                   mem_stride=self.pix_stride_bytes(buf), chip_stride=nblk)
        vb = self.cfg.fp_vector_bytes if space is Space.FVRF else self.cfg.bfp_vector_bytes
        return npix * nblk * vb

    # -- weights and double buffering -------------------------------------------------------------
    def tiles(self, op: ConvOp, lo: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """An op's weight tiles (or its split weights' second part), in the MRF layout; the same in
        every schedule of a plan: kept in ``self.tile_cache`` (shared by the candidates of a schedule
        search, see :func:`generate`)."""
        key = id(op), lo
        if key not in self.tile_cache:
            self.tile_cache[key] = layout.weight_tiles(op.wq_lo if lo else op.wq, op.taps, op.src.cb, gi=op.gi,
                                                       go=op.go)
        return self.tile_cache[key]

    def constants(self, op: ConvOp) -> None:
        """Place an op's weight tiles and bias in the image (on a banked MRF its bias only: its
        weights go in per chunk once the plan is final, :meth:`bank_weights`)."""
        addr = addr_lo = None
        if not self.cfg.mrf_banked:
            addr = self.img.put_bfp(f"{op.name}.weight", self.tiles(op))
            if op.wq_lo is not None:  # split weights: the second part, same tile layout
                addr_lo = self.img.put_bfp(f"{op.name}.weight_lo", self.tiles(op, lo=True))
        bias = np.zeros(op.dst.cb * self.n, np.float32)
        bias[: len(op.bias)] = op.bias
        baddr = self.img.put_fp(f"{op.name}.bias", bias)
        self.weights[id(op)] = (addr, baddr, addr_lo)

    # -- layers -----------------------------------------------------------------------------------
    def next_input_buffer(self, double: bool = True) -> int:
        """The input buffer for the next load: alternating halves, or the whole region (offset 0)."""
        if not double:
            return self.r.vrf_in[0]
        self.in_turn += 1
        return self.r.vrf_in[self.in_turn % 2]

    def conv_plan(self, op: ConvOp):
        """Chunks of output blocks, reduction groups and row bands for a conv layer.

        Reduction groups keep the reduction order (tap-major, blocks ascending): whole kernel rows
        when a row fits half the MRF, else single taps, else block ranges of one tap (dense only).
        Each group is ("rows", ky0, ky1) or ("tap", ky, kx, b0, b1). The groups repeat once per
        pass of products: the first weights on the input, on the input's second plane (split
        activations), then the second weights on the input (split weights); ``passes[k]`` is
        (second weights, second plane, group index) of step group k.
        """
        r = self.r
        gi = op.gi or op.src.cb
        kh, kw = op.geom.kh, op.geom.kw
        per_ob = op.taps * gi
        row = _bank_row(self.cfg)
        half = r.mrf_half // row  # weight rows a half holds (a row: one tile, or one per bank)
        if per_ob <= half:
            kgroups = [("rows", 0, kh)]
            cob_c = min(op.cob, half // per_ob)
        elif kw * gi <= half:
            step = half // (kw * gi)
            kgroups = [("rows", k, min(kh, k + step)) for k in range(0, kh, step)]
            cob_c = 1
        elif op.gi == 0 or gi <= half:
            step = half if op.gi == 0 else gi
            kgroups = [("tap", ky, kx, b, min(gi, b + step)) for ky in range(kh) for kx in range(kw)
                       for b in range(0, gi, step)]
            cob_c = 1
        else:
            raise CapacityError(f"layer {op.name!r}: one group's {gi} input blocks do not fit half the MRF "
                                f"({r.mrf_half} tiles, {self.cfg.name})")
        oh, ow = op.geom.out_size()
        out_cap = min(r.fvrf_acc_size, r.vrf_out_size)
        if op.residual is not None or self.plan.bases[op.dst.base].split:
            out_cap = min(out_cap, r.vrf_res_size, r.fvrf_res_size)
        if op.residual is not None:  # a step's shortcut loads into one half while the other's is read
            out_cap = min(out_cap, r.vrf_res_size // 2)
        if ow > out_cap:
            raise CapacityError(f"layer {op.name!r}: one output row of {ow} pixels does not fit the accumulator "
                                f"files ({out_cap} vectors, {self.cfg.name})")
        cob_c = max(1, min(cob_c, out_cap // ow))
        if self.cfg.mrf_banked:  # multiples of T filling a half's rows, the rest divisors of T
            t = self.cfg.tiles
            fit = half // per_ob if per_ob <= half else 1  # groups of T blocks whose rows fit a half
            sizes = _bank_cut(op.cob, t, out_cap // ow, min(fit * t, out_cap // ow) // t * t, self.cfg.vrf_reads)
            cob_c = max(sizes)
        else:
            sizes = [cob_c] * (op.cob // cob_c) + [op.cob % cob_c] * bool(op.cob % cob_c)
        # a banked MRF's chunks of one layer in one half at once (one load), run band by band, their
        # results side by side at the layer's pixel stride (dstride): one epilogue a band
        grouped = (self.cfg.mrf_banked and len(sizes) > 1 and len(kgroups) == 1 and op.wq_lo is None
                   and len(self.planes(op.src)) == 1 and ow * op.cob <= out_cap
                   and sum(-(-c // self.cfg.tiles) for c in sizes) * per_ob <= half)
        self.grouped[id(op)] = grouped
        if grouped:
            cob_c = op.cob
        rows = oh
        in_cb = op.src.cb * len(self.planes(op.src))  # blocks per input pixel on chip
        resident = op.src.base in self.resident  # read in place: no input region needed

        def vrf_need(rows: int) -> int:
            return 0 if resident else _input_rows(op.geom, rows) * op.geom.in_w * in_cb + in_cb  # + block slack

        # two input buffers when one band fits half the region, else one buffer of the whole region
        cap_in = r.vrf_in_size if vrf_need(1) <= r.vrf_in_size else 2 * r.vrf_in_size
        while rows > 1 and (vrf_need(rows) > cap_in or rows * ow * cob_c > out_cap):
            rows = -(-rows // 2)
        if vrf_need(rows) > cap_in:
            planes = f" (two planes of {op.src.cb}: split activations)" if in_cb != op.src.cb else ""
            raise CapacityError(f"layer {op.name!r}: {_input_rows(op.geom, 1)} input rows of {op.geom.in_w} x "
                                f"{in_cb} blocks{planes} do not fit the VRF input region ({cap_in} vectors, "
                                f"{self.cfg.name})")
        self.double_in[id(op)] = cap_in == r.vrf_in_size
        kinds = [(False, False)] + [(False, True)] * (len(self.planes(op.src)) - 1) + \
            [(True, False)] * (op.wq_lo is not None)
        passes = [(lo_w, lo_x, j) for lo_w, lo_x in kinds for j in range(len(kgroups))]
        kgroups = [kgroups[j] for _, _, j in passes]
        if len(kgroups) == 1 and (len(sizes) == 1 or grouped):
            rows = min(rows, -(-oh // PIPELINE_BANDS))  # bands overlap load, products, epilogue, store
        bands = [(r0, min(oh, r0 + rows)) for r0 in range(0, oh, rows)]
        starts = np.cumsum([0, *sizes])
        chunks = [(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]
        return gi, kgroups, chunks, bands, passes

    def band_input(self, op: ConvOp | PoolOp, r0: int, r1: int, kh: int) -> tuple[int, int]:
        """Input rows [i0, i1) needed for output rows [r0, r1)."""
        g = op.geom
        i0 = max(0, r0 * g.stride[0] - g.pads[0])
        i1 = min(g.in_h, (r1 - 1) * g.stride[0] - g.pads[0] + (kh - 1) * g.dilation[0] + 1)
        return i0, max(i0 + 1, i1)

    def weight_ids(self, op: ConvOp):
        """The steps (chunk, reduction group, band) of a conv layer, and its weight loads in use order.

        Chunk-major, or band-major when the reduction is split and the input comes in bands (the
        accumulators must then stay per band) or the chunks' weights are loaded together
        (``grouped``: a banked MRF's cut of one layer)."""
        _, kgroups, chunks, bands, _ = self.plans[id(op)]
        if (len(kgroups) > 1 and len(bands) > 1) or self.grouped.get(id(op)):
            steps = [(c, k, b) for b in bands for c in chunks for k in range(len(kgroups))]
        else:
            steps = [(c, k, b) for c in chunks for k in range(len(kgroups)) for b in bands]
        ids = []
        for c, k, _ in steps:
            if not ids or ids[-1] != self.weight_id(op, c, k):
                ids.append(self.weight_id(op, c, k))
        return steps, ids

    def weight_id(self, op: ConvOp, chunk, k: int):
        """What step group k of ``chunk`` needs in the MRF: (chunk, (group, second weights)).
        Passes over the input's two planes use the same weights, loaded once when adjacent."""
        lo_w, _, j = self.plans[id(op)][4][k]
        if self.grouped.get(id(op)):  # every chunk of the layer in one load
            return (0, op.cob), (j, lo_w)
        return chunk, (j, lo_w)

    def chunk_wids(self, op: ConvOp, wid) -> list[tuple[tuple, int]]:
        """The chunks a weight id loads, each with its own weight id and its place (tiles from the
        id's slot): the id itself, or a grouped layer's every chunk one after the other."""
        if not self.grouped.get(id(op)):
            return [(wid, 0)]
        out, at = [], 0
        for chunk in self.plans[id(op)][2]:
            out.append(((chunk, wid[1]), at))
            at += self.chunk_tiles(op, (chunk, wid[1]))
        return out

    def bank_weights(self, op: ConvOp) -> None:
        """Place each weight chunk of ``op`` in the image as a banked MRF reads it (isa.md, "Banked
        MRF"): a chunk of a multiple of T output blocks as ``cob / T`` row sets of T tiles (block
        ``o0 + set * T + t`` in bank t), one contiguous load; a divisor of T as rows of its ``cob``
        tiles, loaded with ``T / cob`` copies side by side (block ``o0 + t mod cob`` in bank t)."""
        t = self.cfg.tiles
        for wid in dict.fromkeys(w for group in self.weight_ids(op)[1] for w, _ in self.chunk_wids(op, group)):
            (o0, o1), (_, lo_w) = wid
            first, length = self.chunk_extent(op, wid)
            mant, exp = self.tiles(op, lo=lo_w)
            per_ob = mant.shape[0] // op.cob
            c = o1 - o0
            # (set, bank) -> output block; a divisor chunk's rows hold its c blocks once, loaded
            # with T / c copies
            ob = o0 + (np.arange(c // t)[:, None] * t + np.arange(t)[None, :] if c >= t else np.arange(c)[None, :])
            src = ob[:, None, :] * per_ob + first + np.arange(length)[None, :, None]  # (set, row, bank)
            self.bank_addr[id(op), wid] = self.img.put_bfp(
                f"{op.name}.weight{'_lo' if lo_w else ''}[{o0}:{o1}]@{first}+{length}",
                (mant[src.reshape(-1)], exp[src.reshape(-1)]))

    def chunk_tiles(self, op: ConvOp, wid) -> int:
        """MRF entries a weight chunk takes (a grouped layer's: all of its chunks)."""
        if self.grouped.get(id(op)) and wid[0] == (0, op.cob):
            return sum(self.chunk_tiles(op, (chunk, wid[1])) for chunk in self.plans[id(op)][2])
        (o0, o1), _ = wid
        length = self.chunk_extent(op, wid)[1]
        if self.cfg.mrf_banked:
            return -(-(o1 - o0) // self.cfg.tiles) * length * self.cfg.tiles
        return (o1 - o0) * length

    def chunk_extent(self, op: ConvOp, wid) -> tuple[int, int]:
        """(first tile within an output block's tiles, tiles per output block) of a weight chunk."""
        gi, kgroups = self.plans[id(op)][:2]
        kw = op.geom.kw
        group = kgroups[wid[1][0]]
        if group[0] == "rows":
            _, ky0, ky1 = group
            return ky0 * kw * gi, (ky1 - ky0) * kw * gi
        _, ky, kx, b0, b1 = group
        return (ky * kw + kx) * gi + b0, b1 - b0

    def fill_weights(self) -> None:
        """Load upcoming weight chunks in use order while they fit: chunks pack into one MRF half
        until the next does not fit, then into the other half once every chunk there is used up,
        so one half fills while products read the other (double buffering at any chunk size).
        Loads run at most ``lookahead`` chunks ahead of the one the products use: further ahead
        they would queue before the activation loads the nearer layers need."""
        half = self.r.mrf_half
        while self.wpos < len(self.wqueue):
            op, j, wid = self.wqueue[self.wpos]
            if self.wpos > self.cur_chunk + self.lookahead:
                return
            size = self.chunk_tiles(op, wid)
            if self.fill_at + size > half:
                if self.half_keys[self.fill_half ^ 1]:
                    return  # the other half is still in use
                self.fill_half, self.fill_at = self.fill_half ^ 1, 0
            mrf = self.fill_half * half + self.fill_at
            self.load_weights(op, wid, mrf, self.wpos)
            self.wslot[id(op), j] = mrf
            self.half_keys[self.fill_half].append((id(op), j))
            self.fill_at += size
            self.wpos += 1

    def release_weights(self, op: ConvOp, j: int, fill: bool = True) -> None:
        """Chunk ``j`` of ``op`` has had all its products emitted: its tiles may be reloaded."""
        for keys in self.half_keys:
            if (id(op), j) in keys:
                keys.remove((id(op), j))
        if fill:
            self.fill_weights()

    def load_weights(self, op: ConvOp, wid, mrf: int, index: int) -> None:
        """Load one weight chunk (``wqueue[index]``) into the MRF at tile ``mrf``: now if the
        products being emitted need it, else in pieces of about ``WEIGHT_PIECE_BYTES`` that
        :meth:`drip` spreads between the products of the chunks before it. The load DMA is one
        unit taking its transfers in program order, so a chunk loaded whole would hold the next
        products' activation loads behind it; in pieces, those slip in between."""
        for part, at in self.chunk_wids(op, wid):
            self._load_chunk(op, part, mrf + at, index)
        if index <= self.cur_chunk:
            self.need_weights(index)

    def _load_chunk(self, op: ConvOp, wid, mrf: int, index: int) -> None:
        """The load pieces of one chunk (:meth:`load_weights`)."""
        per_ob = op.taps * self.plans[id(op)][0]
        (o0, o1), (_, lo_w) = wid
        first, length = self.chunk_extent(op, wid)
        tile_bytes = self.cfg.tile_bytes
        copies, chip_stride = 1, None
        if self.cfg.mrf_banked and o1 - o0 < self.cfg.tiles:  # rows of the blocks, copied (bank_weights)
            t = self.cfg.tiles
            addr, rows, length, copies, chip_stride = self.bank_addr[id(op), wid], length, o1 - o0, t // (o1 - o0), t
            stride = length * tile_bytes
        elif self.cfg.mrf_banked:  # one contiguous run (bank_weights)
            addr, rows, length = self.bank_addr[id(op), wid], 1, self.chunk_tiles(op, wid)
            stride = length * tile_bytes
        else:
            addr, _, addr_lo = self.weights[id(op)]
            addr = (addr_lo if lo_w else addr) + (o0 * per_ob + first) * tile_bytes
            rows, stride = o1 - o0, per_ob * tile_bytes
        self.weight_bytes[id(op)] = self.weight_bytes.get(id(op), 0) + rows * length * tile_bytes
        piece_tiles = max(1, WEIGHT_PIECE_BYTES // tile_bytes)
        if copies > 1:  # pieces of whole rows, T entries apart on chip
            step = max(1, piece_tiles // length)
            for r0 in range(0, rows, step):
                self.pieces.append((index, functools.partial(
                    self.e.dma, Opcode.LD, Space.MRF, mrf + r0 * chip_stride, addr + r0 * stride, min(step, rows - r0),
                    length, mem_stride=stride, chip_stride=chip_stride, copies=copies)))
            return
        if rows == 1 or stride == length * tile_bytes:  # one contiguous run: pieces of tiles
            total = rows * length
            cuts = [(mrf + t0, addr + t0 * tile_bytes, 1, min(piece_tiles, total - t0))
                    for t0 in range(0, total, piece_tiles)]
        else:  # output blocks' rows: pieces of whole rows
            step = max(1, piece_tiles // length)
            cuts = [(mrf + r0 * length, addr + r0 * stride, min(step, rows - r0), length)
                    for r0 in range(0, rows, step)]
        for chip, at, n, ln in cuts:
            self.pieces.append((index, functools.partial(self.e.dma, Opcode.LD, Space.MRF, chip, at, n, ln,
                                                         mem_stride=stride, chip_stride=ln)))

    def need_weights(self, index: int) -> None:
        """Emit every weight-load piece of chunks up to ``wqueue[index]``: products using it follow."""
        while self.pieces and self.pieces[0][0] <= index:
            self.pieces.popleft()[1]()

    def drip(self) -> None:
        """Emit the next weight-load piece, if any (called after each product instruction)."""
        if self.pieces:
            self.pieces.popleft()[1]()

    def gen_conv(self, op: ConvOp, info: LayerInfo) -> None:
        e, r = self.e, self.r
        gi, kgroups, chunks, bands, passes = self.plans[id(op)]
        info.chunks, info.bands, info.ksplit = len(chunks), len(bands), len(kgroups)
        g = op.geom
        oh, ow = g.out_size()
        kw = g.kw
        e.dma(Opcode.LD, Space.FVRF, r.fvrf_const, self.weights[id(op)][1], 1, op.cob)  # every block's bias
        double = self.double_in[id(op)]
        cb = op.src.cb
        planes = self.planes(op.src)
        resident = op.src.base in self.resident
        # a streamed split input holds each pixel's two planes side by side on chip; a resident one
        # keeps them apart, each plane at its own place
        in_cb = cb if resident else cb * len(planes)
        plane_at = self.plan.bases[op.src.base].plane_vectors if resident else cb

        def load_band(band) -> int:
            i0, i1 = self.band_input(op, *band, g.kh)
            if (at := self.res_addr(op.src, i0 * g.in_w)) is not None:  # on chip: windows read in place
                return at
            vin = self.next_input_buffer(double)
            for p, lo in enumerate(planes):
                info.act_bytes += self.load_rows(op.src, i0 * g.in_w, (i1 - i0) * g.in_w, 0, cb, Space.VRF,
                                                 vin + p * cb, lo=lo, chip_stride=in_cb)
            return vin

        def prefetch() -> None:  # the next band's input into the other buffer, once
            if double and bpos + 1 < len(band_seq) and len(vins) == bpos + 1:
                vins.append(load_band(band_seq[bpos + 1]))

        steps, _ = self.weight_ids(op)
        band_seq = []  # input loads in order: a new load whenever the band changes
        for _, _, b in steps:
            if not band_seq or band_seq[-1] != b:
                band_seq.append(b)
        vins = [load_band(band_seq[0])]
        bpos = 0
        self.cur_chunk = self.windex[id(op), 0]
        self.fill_weights()
        pos = -1
        prev_band = prev_wid = None
        pending = None  # the last step's epilogue, emitted after the next step's products
        shared = self.grouped.get(id(op))  # its chunks' results side by side, one epilogue a band
        for (o0, o1), k, (r0, r1) in steps:
            if self.weight_id(op, (o0, o1), k) != prev_wid:
                if pos >= 0:
                    self.cur_chunk = self.windex[id(op), pos + 1]
                    self.release_weights(op, pos)
                pos += 1
                prev_wid = self.weight_id(op, (o0, o1), k)
            mrf = self.wslot[id(op), pos]
            if self.grouped.get(id(op)):  # this chunk's place in the layer's load
                mrf += dict(self.chunk_wids(op, prev_wid))[(o0, o1), prev_wid[1]]
            i0, i1 = self.band_input(op, r0, r1, g.kh)
            if prev_band is not None and prev_band != (r0, r1):
                bpos += 1
                if not double:  # one buffer: load in place, after the previous band's products
                    vins.append(load_band(band_seq[bpos]))
            if self.order == "load_first":
                prefetch()
            vin = vins[bpos]
            prev_band = (r0, r1)
            acc = r.fvrf_acc[self.parity]
            npix = (r1 - r0) * ow
            group = kgroups[k]
            plane = plane_at if passes[k][1] else 0  # the pass over the input's second plane reads it
            if group[0] == "rows":
                _, ky0, ky1 = group
                kh_, kw_, pad_t, pad_l, rs, gi_, go_, ob0 = ky1 - ky0, kw, g.pads[0] - ky0 * g.dilation[0], \
                    g.pads[1], vin + plane, op.gi, op.go, o0
                if op.gi == 0 and len(planes) > 1:  # dense over one plane: one group of cb blocks
                    gi_, go_, ob0 = cb, op.cob, 0
                tiles = (ky1 - ky0) * kw * gi
            else:
                _, ky, kx, b0, b1 = group
                kh_, kw_, pad_t, pad_l = 1, 1, g.pads[0] - ky * g.dilation[0], g.pads[1] - kx * g.dilation[1]
                rs, gi_, go_, ob0 = vin + plane + b0, b1 - b0, op.cob, 0
                tiles = b1 - b0
            _window(e, g, i1 - i0, in_cb, kh_, kw_, pad_t + i0 - r0 * g.stride[0], pad_l, ow, npix)
            e.set(Cfg.COB, o1 - o0)
            e.set(Cfg.OB0, ob0)
            e.set(Cfg.GI, gi_)
            e.set(Cfg.GO, go_)
            if self.cfg.mrf_banked:  # a grouped layer's chunks write side by side, the layer's blocks a pixel
                e.set(Cfg.DSTRIDE, op.cob if shared else 0)
            self.need_weights(self.windex[id(op), pos])
            e.emit(Opcode.MVC, rd=e.reg(3, acc + o0 if shared else acc), rs=e.reg(4, rs), rm=e.reg(5, mrf),
                   acc=int(k > 0))
            info.tile_ops += npix * (o1 - o0) * tiles
            # the next band's input goes into the other buffer before or after these products, the
            # step before's epilogue before or after it and the weight piece (``ISSUE_ORDERS``)
            if self.order == "epilogue_first":
                info.act_bytes += self.flush(pending)
                pending = None
            if self.order != "load_first":
                prefetch()
            self.drip()
            if self.order != "epilogue_first":
                info.act_bytes += self.flush(pending)
                pending = None
            if k == len(kgroups) - 1 and (not shared or o1 == op.cob):  # a grouped band's: after its last chunk
                e0, e1 = (0, op.cob) if shared else (o0, o1)
                first = None
                if op.residual is not None:  # its first plane loads now (unless resident), beside the products
                    first, moved = self.fetch_plane(op.residual, self.planes(op.residual)[0], r0 * ow, npix, e0,
                                                    e1 - e0, half=self.parity)
                    info.act_bytes += moved
                pending = functools.partial(self.epilogue, op, acc, r0 * ow, npix, e0, e1, self.parity, first)
                self.parity ^= 1
        info.act_bytes += self.flush(pending)
        info.act_bytes += self.release_store()  # before any later layer reads the output
        # the next loads wait for the next layer's first input load (emitted first at its start)
        self.release_weights(op, pos, fill=False)
        self.need_weights(len(self.wqueue))

    def flush(self, pending) -> int:
        """Emit the store held back by the step before (:meth:`release_store`), then a deferred
        epilogue (``functools.partial`` or None); the bytes they move.

        A step's epilogue (bias, shortcut, activation, quantise) is emitted after the next step's
        products: control issues in program order, so an epilogue emitted right after its products
        would wait for them in ``ISSUE`` and hold the next products back, leaving the MVU (or pool
        unit) idle while the MFU works. Deferred, the next products run on the other accumulator
        parity while the MFU finishes this one; the program means the same, as the two touch
        different entries. A convolution's store of its staged output waits one step more, past the
        next products too: it waits for the epilogue's last pass, and would hold them back as
        well; the staging alternates parity, so nothing writes it before the held store is emitted."""
        return self.release_store() + (0 if pending is None else pending())

    def release_store(self) -> int:
        """Emit the store :meth:`finish` held back (if any); the bytes it moves."""
        held, self.held_store = self.held_store, None
        return 0 if held is None else held()

    def epilogue(self, op: ConvOp, acc: int, pix0: int, npix: int, o0: int, o1: int, parity: int,
                 first: int | None) -> int:
        """Bias, shortcut (its first plane at ``first``: :meth:`fetch_plane` when the step's
        products were emitted), activation and output of one step's accumulators (:meth:`finish`)."""
        moved = 0
        last = dict(fn=VecOp.ADD, ra=acc, rb=self.r.fvrf_const + o0, period=o1 - o0)  # the bias
        if op.residual is not None:
            self.e.counted(Opcode.VOP, npix * (o1 - o0), rd=acc, **last)
            moved, last = self.add_planes(op.residual, self.planes(op.residual), acc, pix0, npix, o0, o1 - o0,
                                          defer=True, first=first)
        return moved + self.finish(op.act, last, op.dst, acc, pix0, npix, o0, o1 - o0, parity, hold=True)

    def fetch_plane(self, buf: Buf, lo: bool, pix0: int, npix: int, blk0: int, nblk: int,
                    half: int | None = None) -> tuple[int, int]:
        """Where a plane of ``buf``'s vectors can be read: in place when resident (whole pixels), else
        loaded into the shortcut region (into its half ``half``, if given); and the bytes moved."""
        vin = self.res_addr(buf, pix0, lo)
        if vin is not None:
            return vin, 0
        at = self.r.vrf_res + (half * (self.r.vrf_res_size // 2) if half is not None else 0)
        return at, self.load_rows(buf, pix0, npix, blk0, nblk, Space.VRF, at, lo=lo)

    def add_planes(self, buf: Buf, planes: list[bool], acc: int, pix0: int, npix: int, blk0: int,
                   nblk: int, defer: bool = False, first: int | None = None) -> tuple[int, dict | None]:
        """acc += each of ``planes`` of ``buf``'s vectors, in order (:meth:`fetch_plane`, then a
        ``vop`` that dequantises its second operand from the VRF; the first plane already where
        ``first`` says, if given); the bytes moved, and with ``defer`` the last add's ``vop``
        fields, not emitted (for :meth:`finish`; None without planes)."""
        e = self.e
        moved = 0
        add = None
        for i, lo in enumerate(planes):
            if add is not None:  # before the next plane's load overwrites its operand
                e.counted(Opcode.VOP, npix * nblk, rd=acc, **add)
            if i == 0 and first is not None:
                vin = first
            else:
                vin, more = self.fetch_plane(buf, lo, pix0, npix, blk0, nblk)
                moved += more
            add = dict(fn=VecOp.ADD, ra=acc, rb=vin, period=0, bfile=Dest.VRF)
        if add is not None and not defer:
            e.counted(Opcode.VOP, npix * nblk, rd=acc, **add)
            add = None
        return moved, add

    def finish(self, act: Activation, last: dict | None, dst: Buf, acc: int, pix0: int, npix: int, blk0: int,
               nblk: int, parity: int, hold: bool = False) -> int:
        """The accumulators' last ``vop`` (``last``: its fields but the destination; None: none),
        the activation and :meth:`write_out`, in as few MFU passes as the output allows: the
        activation rides on that ``vop``, and so does the quantisation of an output of one plane,
        written straight to its staging or resident place (the ``vop``'s VRF destination). With
        ``hold``, the store of that staged output is held back for :meth:`release_store`."""
        e = self.e
        cnt = npix * nblk
        if last is None:
            _act_insns(e, act, acc, cnt)
            return self.write_out(dst, acc, pix0, npix, blk0, nblk, parity)
        kind = _act_kind(e, act)
        if dst.fp32 or self.plan.bases[dst.base].split:  # the accumulators are read after: keep them
            e.counted(Opcode.VOP, cnt, rd=acc, act=kind, **last)
            return self.write_out(dst, acc, pix0, npix, blk0, nblk, parity)
        at, stage = self.stage(dst, pix0, parity)
        e.counted(Opcode.VOP, cnt, rd=stage, act=kind, dest=Dest.VRF, **last)
        if at is not None:
            return 0
        store = functools.partial(self.store_rows, dst, pix0, npix, blk0, nblk, Space.VRF, stage)
        if hold:
            assert self.held_store is None, "a held store was not released"
            self.held_store = store
            return 0
        return store()

    def stage(self, dst: Buf, pix0: int, parity: int) -> tuple[int | None, int]:
        """Where a quantised output goes first: its resident place (``at``), else the output staging."""
        at = self.res_addr(dst, pix0)  # resident: quantised straight into place
        return at, self.r.vrf_out[parity] if at is None else at

    def write_out(self, dst: Buf, acc: int, pix0: int, npix: int, blk0: int, nblk: int, parity: int) -> int:
        """Store accumulators: binary32, or quantised; a split buffer also gets the quantisation's
        residual (dequantise the stored part, subtract it from the accumulator, quantise) in its
        second plane."""
        e, r = self.e, self.r
        if dst.fp32:
            return self.store_rows(dst, pix0, npix, blk0, nblk, Space.FVRF, acc)
        cnt = npix * nblk
        at, stage = self.stage(dst, pix0, parity)
        e.counted(Opcode.QNT, cnt, rd=stage, rs=acc)
        moved = 0 if at is not None else self.store_rows(dst, pix0, npix, blk0, nblk, Space.VRF, stage)
        if self.plan.bases[dst.base].split:
            lo = self.res_addr(dst, pix0, lo=True)
            e.counted(Opcode.DEQ, cnt, rd=r.fvrf_res, rs=stage)
            e.counted(Opcode.VOP, cnt, fn=VecOp.SUB, rd=r.fvrf_res, ra=acc, rb=r.fvrf_res, period=0)
            e.counted(Opcode.QNT, cnt, rd=r.vrf_res if lo is None else lo, rs=r.fvrf_res)
            if lo is None:
                moved += self.store_rows(dst, pix0, npix, blk0, nblk, Space.VRF, r.vrf_res, lo=True)
        return moved

    def pool_plan(self, op: PoolOp) -> tuple[int, int]:
        """Channel blocks per item and output rows per band of a pooling layer."""
        r = self.r
        g = op.geom
        oh, ow = g.out_size()
        cb = op.src.cb
        cap = min(r.fvrf_acc_size, r.vrf_out_size)
        if self.plan.bases[op.dst.base].split:  # the second plane is staged in the shortcut regions
            cap = min(cap, r.vrf_res_size, r.fvrf_res_size)
        vin = 1 << 62 if op.src.base in self.resident else r.vrf_in_size  # read in place: no input region
        cb_c = max(1, min(cb, cap // ow, vin // max(1, g.kh * g.in_w)))
        rows = oh if op.kind is PoolKind.AVG_PAD else -(-oh // PIPELINE_BANDS)
        while rows > 1 and (_input_rows(g, rows) * g.in_w * cb_c > vin or rows * ow * cb_c > cap):
            rows = -(-rows // 2)
        if _input_rows(g, rows) * g.in_w * cb_c > vin or ow * cb_c > cap:
            raise CapacityError(f"pool {op.name!r} does not fit the VRF/FVRF ({self.cfg.name})")
        if op.kind is PoolKind.AVG_PAD and rows < oh:
            raise CapacityError(f"pool {op.name!r}: padded average needs the whole input on chip ({self.cfg.name})")
        return cb_c, rows

    def gen_pool(self, op: PoolOp, info: LayerInfo) -> None:
        e, r = self.e, self.r
        g = op.geom
        oh, ow = g.out_size()
        cb = op.src.cb
        cb_c, rows = self.plans[id(op)]
        mode = {PoolKind.MAX: PoolMode.MAX, PoolKind.AVG: PoolMode.AVG, PoolKind.AVG_PAD: PoolMode.AVG_PAD}[op.kind]
        bands = [(r0, min(oh, r0 + rows)) for r0 in range(0, oh, rows)]
        info.bands, info.chunks = len(bands), -(-cb // cb_c)
        items = [(b0, min(cb_c, cb - b0), band) for b0 in range(0, cb, cb_c) for band in bands]

        def load(item) -> int:
            b0, nb, band = item
            i0, i1 = self.band_input(op, *band, g.kh)
            if (at := self.res_addr(op.src, i0 * g.in_w)) is not None:  # on chip: read in place
                return at
            vin = self.next_input_buffer()
            info.act_bytes += self.load_rows(op.src, i0 * g.in_w, (i1 - i0) * g.in_w, b0, nb, Space.VRF, vin)
            return vin

        vins = [load(items[0])]
        pending = None  # the last item's write-out, emitted after the next item's pool (flush)
        for j, (b0, nb, (r0, r1)) in enumerate(items):
            if j + 1 < len(items):
                vins.append(load(items[j + 1]))  # prefetch into the other buffer
            vin = vins[j]
            i0, i1 = self.band_input(op, r0, r1, g.kh)
            acc = r.fvrf_acc[self.parity]
            _window(e, g, i1 - i0, nb, g.kh, g.kw, g.pads[0] + i0 - r0 * g.stride[0], g.pads[1], ow, (r1 - r0) * ow)
            e.set(Cfg.PAD_B, g.pads[2])
            e.set(Cfg.PAD_R, g.pads[3])
            e.emit(Opcode.POOL, mode=mode, rd=e.reg(3, acc), rs=e.reg(4, vin))
            info.act_bytes += self.flush(pending)
            pending = functools.partial(self.write_out, op.dst, acc, r0 * ow, (r1 - r0) * ow, b0, nb, self.parity)
            self.parity ^= 1
        info.act_bytes += self.flush(pending)

    def gen_elt(self, op: EltOp, info: LayerInfo) -> None:
        e, r = self.e, self.r
        src = op.srcs[0]
        cb = src.cb
        cap = min(r.vrf_in_size, r.vrf_res_size, r.fvrf_acc_size, r.vrf_out_size,
                  r.fvrf_res_size)
        if cb > cap:
            raise CapacityError(f"{op.kind.value} {op.name!r}: one pixel of {cb} blocks does not fit ({self.cfg.name})")
        if op.kind is EltKind.AFFINE:
            e.dma(Opcode.LD, Space.FVRF, r.fvrf_const, self.weights[id(op)][0], 1, 2 * cb)
        px = max(1, cap // cb)
        for p0 in range(0, src.pixels, px):
            np_ = min(px, src.pixels - p0)
            cnt = np_ * cb
            acc = r.fvrf_acc[self.parity]
            vin = self.res_addr(src, p0)
            if vin is None:
                vin = self.next_input_buffer()
                info.act_bytes += self.load_rows(src, p0, np_, 0, cb, Space.VRF, vin)
            e.counted(Opcode.DEQ, cnt, rd=acc, rs=vin)
            moved, last = self.add_planes(src, self.planes(src)[1:], acc, p0, np_, 0, cb, defer=True)
            if op.kind is not EltKind.ACT and last is not None:
                e.counted(Opcode.VOP, cnt, rd=acc, **last)
            if op.kind is EltKind.ADD:
                more, last = self.add_planes(op.srcs[1], self.planes(op.srcs[1]), acc, p0, np_, 0, cb, defer=True)
                moved += more
            elif op.kind is EltKind.AFFINE:
                e.counted(Opcode.VOP, cnt, fn=VecOp.MUL, rd=acc, ra=acc, rb=r.fvrf_const, period=cb)
                last = dict(fn=VecOp.ADD, ra=acc, rb=r.fvrf_const + cb, period=cb)
            info.act_bytes += moved + self.finish(op.act, last, op.dst, acc, p0, np_, 0, cb, self.parity)
            self.parity ^= 1

    # -- whole program ----------------------------------------------------------------------------
    def generate(self) -> Compiled:
        for op in self.plan.ops:
            if isinstance(op, ConvOp):
                self.constants(op)
                self.plans[id(op)] = self.conv_plan(op)
            elif isinstance(op, PoolOp):
                self.plans[id(op)] = self.pool_plan(op)
            elif isinstance(op, EltOp) and op.kind is EltKind.AFFINE:
                addr = self.img.put_fp(f"{op.name}.scale_shift", np.concatenate([op.scale, op.shift]))
                self.weights[id(op)] = (addr, addr)
        if self.r.vrf_pool_size:
            self.place_resident()
            for op in self.plan.ops:  # inputs read in place need no bands for the input region
                if isinstance(op, ConvOp | PoolOp) and op.src.base in self.resident:
                    self.plans[id(op)] = self.conv_plan(op) if isinstance(op, ConvOp) else self.pool_plan(op)
        if self.cfg.mrf_banked:
            for op in self.plan.ops:
                if isinstance(op, ConvOp):
                    self.bank_weights(op)
        self.wqueue = [(op, j, wid) for op in self.plan.ops if isinstance(op, ConvOp)
                       for j, wid in enumerate(self.weight_ids(op)[1])]
        self.windex = {(id(op), j): i for i, (op, j, _) in enumerate(self.wqueue)}
        # activation buffers after the constants (resident ones have no external copy)
        top = -(-self.img.top // _ALIGN) * _ALIGN
        for base in self.plan.bases.values():
            if base.name in self.resident:
                self.addr[base.name] = -1
                continue
            vb = self.cfg.fp_vector_bytes if base.fp32 else self.cfg.bfp_vector_bytes
            self.addr[base.name] = top
            self.img.reserve(f"buffer {base.name}", base.vectors * vb, at=top)
            top = -(-(top + base.vectors * vb) // _ALIGN) * _ALIGN
        for op in self.plan.ops:
            info = LayerInfo(op.name, type(op).__name__.replace("Op", "").lower(), first_insn=len(self.e.insns))
            if isinstance(op, ConvOp):
                info.kind = "conv" if op.geom.kh * op.geom.kw > 1 or op.geom.in_h == 1 else "conv1x1"
                info.macs = op.macs
                self.gen_conv(op, info)
            elif isinstance(op, PoolOp):
                info.kind = f"pool-{op.kind.value}"
                self.gen_pool(op, info)
            else:
                info.kind = op.kind.value
                self.gen_elt(op, info)
            info.last_insn = len(self.e.insns)
            self.layers.append(info)
        for op, info in zip(self.plan.ops, self.layers, strict=True):
            info.weight_bytes = self.weight_bytes.get(id(op), 0)
        self.e.emit(Opcode.HALT)
        if top > self.cfg.mem_bytes:
            raise CapacityError(f"the network needs {top} bytes of external memory; {self.cfg.name} has "
                                f"{self.cfg.mem_bytes}")
        buffers = {b.name: {"addr": self.addr[b.name], "h": b.h, "w": b.w, "cb": b.cb, "fp32": b.fp32, "split": b.split}
                   for b in self.plan.bases.values()}
        prog = Program(self.e.insns, self.cfg.hash, source="<compiled>")
        return Compiled(prog, self.img, top, self.layers, buffers, dict(self.resident), self.pool)


def generate(plan: Plan, pool: float = 0.5, lookahead: int = 1, tile_cache: dict | None = None,
             order: str = ISSUE_ORDERS[0]) -> Compiled:
    """Schedule a lowered plan and emit its program and external-memory image.

    ``pool``: the fraction of the VRF where activations stay resident between layers, where they
    fit (0: every activation streams through external memory); when a layer does not fit the
    streaming regions that leaves, the plan is scheduled without the pool.
    ``lookahead``: weight chunks load at most this many chunks ahead of the one in use.
    ``tile_cache``: a dict kept across calls on the same plan, to lay its weight tiles out once.
    ``order``: where a conv step's instructions go (``ISSUE_ORDERS``). No order is the fastest
    everywhere: the driver times them."""
    if pool:
        try:
            return _Generator(plan, pool, lookahead, tile_cache, order).generate()
        except CapacityError:
            pass
    return _Generator(plan, 0.0, lookahead, tile_cache, order).generate()
