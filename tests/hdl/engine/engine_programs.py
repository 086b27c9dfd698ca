"""Programs and memory images for the engine's RTL tests (tests/hdl/engine).

``random_dma_program`` draws constrained-random programs of ``seti``/``cfg``/``ld``/``st``/``loop``
(unaligned addresses, strides of exactly a row and more, overlapping on-chip rows, empty
transfers, every file); ``valid_image`` fills an image with bytes every load decodes in every
encoding (no exponent field all ones), so that errors come only from the addresses.
"""

from __future__ import annotations

import random

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.engine.layouts import file_depth, item_bytes
from accelml.hdl.isa import Cfg, Instruction, Opcode, PoolMode, Space
from accelml.sim import golden
from accelml.sim.layout import window_index
from accelml.sim.memory import encode_bfp


def valid_image(size: int, seed: int) -> bytearray:
    """Random bytes without 0x7F / 0xFF: a BFP exponent byte is never the reserved all-ones field and a
    binary32 exponent never 255, whichever encoding reads them."""
    a = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    a[(a & 0x7F) == 0x7F] ^= 1
    return bytearray(a.tobytes())


def _i(op: Opcode, **fields) -> Instruction:
    return Instruction.make(op, **fields)


def random_dma_program(cfg: EngineConfig, rnd: random.Random, *, mem_size: int, ro_bytes: int,
                       transfers: int = 24) -> list[Instruction]:
    """Transfers mostly in range; now and then one that is not (the run then stops there)."""
    prog: list[Instruction] = []
    for _ in range(transfers):
        space = rnd.choice(list(Space))
        item = item_bytes(cfg, space)
        depth = min(file_depth(cfg, space), 64)
        rows = rnd.choice([0, 1, 1, 2, 3, 5])
        length = rnd.choice([0, 1, 2, 3, 4, 7])
        chip_stride = rnd.choice([0, 0, length, length + rnd.randint(1, 3), max(1, length - 1)])
        mem_stride = rnd.choice([0, 0, length * item, length * item + rnd.randint(1, 9)])
        span = (max(rows, 1) - 1) * (mem_stride or length * item) + length * item
        store = rnd.random() < 0.5
        lo = ro_bytes if store else 0
        addr = rnd.randint(lo, max(lo, mem_size - span))
        base = rnd.randint(0, max(0, depth - (max(rows, 1) - 1) * (chip_stride or length) - length))
        if rnd.random() < 0.04:  # out of range, somewhere
            addr = rnd.choice([mem_size - span + 1, mem_size + 7, ro_bytes - 1 if store and ro_bytes else mem_size])
        prog += [
            _i(Opcode.SETI, rd=1, imm=base), _i(Opcode.SETI, rd=2, imm=addr),
            _i(Opcode.CFG, key=Cfg.CHIP_STRIDE, rs=0, imm=chip_stride),
            _i(Opcode.CFG, key=Cfg.MEM_STRIDE, rs=0, imm=mem_stride),
            _i(Opcode.ST if store else Opcode.LD, space=space, rc=1, rm=2, rows=rows, length=length),
        ]
    # a loop that walks the VRF out to memory, one vector a row, past the read-only image
    prog += [
        _i(Opcode.SETI, rd=3, imm=ro_bytes + rnd.randint(0, 7)), _i(Opcode.SETI, rd=4, imm=0),
        _i(Opcode.CFG, key=Cfg.CHIP_STRIDE, rs=0, imm=0), _i(Opcode.CFG, key=Cfg.MEM_STRIDE, rs=0, imm=0),
        _i(Opcode.LOOP, rs=0, count=rnd.randint(1, 6), body=3),
        _i(Opcode.ST, space=Space.VRF, rc=4, rm=3, rows=1, length=2),
        _i(Opcode.ADDI, rd=3, rs=3, imm=cfg.bfp_vector_bytes * 2 + 1),
        _i(Opcode.ADDI, rd=4, rs=4, imm=2),
        _i(Opcode.HALT),
    ]
    return prog


# -- mvc / pool ----------------------------------------------------------------------------------

def bfp_bytes(cfg: EngineConfig, rnd: random.Random, vectors: int, *, extreme: float, high: bool) -> bytes:
    """``vectors`` BFP vectors: random mantissas (zero blocks, full-scale ones), exponents mostly
    moderate, a fraction ``extreme`` of them at the bottom of the range (terms flushed to zero)
    or, with ``high``, at the top."""
    n, mx = cfg.native_dim, (1 << cfg.mantissa_bits) - 1
    rng = np.random.default_rng(rnd.getrandbits(32))
    mant = rng.integers(-mx, mx + 1, (vectors, n))
    mant[rng.random(vectors) < 0.1] = 0
    full = rng.random(vectors) < 0.05
    mant[full] = np.where(rng.random((int(full.sum()), n)) < 0.5, mx, -mx)
    exp = rng.integers(-12, 13, vectors)
    ext = rng.random(vectors) < extreme
    ends = [cfg.exp_min, cfg.exp_min + 3] + ([cfg.exp_max - 40, cfg.exp_max - 26] if high else [])
    exp[ext] = rng.choice(ends, int(ext.sum()))
    return encode_bfp(mant, exp, cfg)


def random_window_geometry(rnd: random.Random, *, allow_empty: bool = True) -> dict:
    """A window (Cfg values) whose output grid is non-empty, with padding, stride 2, dilation 2,
    odd sizes and, now and then, a negative top pad (a band of rows); without ``allow_empty``,
    every chosen output pixel has a tap inside the input."""
    while True:
        g = {"in_h": rnd.randint(1, 6), "in_w": rnd.randint(1, 6), "kh": rnd.randint(1, 3), "kw": rnd.randint(1, 3),
             "stride_h": rnd.choice([1, 1, 2]), "stride_w": rnd.choice([1, 2]), "dil_h": rnd.choice([1, 1, 2]),
             "dil_w": rnd.choice([1, 2]), "pad_t": rnd.choice([0, 0, 1, 2, -1]), "pad_l": rnd.choice([0, 1, 2]),
             "pad_b": rnd.choice([0, 1, 2]), "pad_r": rnd.choice([0, 1])}
        span_h = g["in_h"] + g["pad_t"] + g["pad_b"] - (g["dil_h"] * (g["kh"] - 1) + 1)
        span_w = g["in_w"] + g["pad_l"] + g["pad_r"] - (g["dil_w"] * (g["kw"] - 1) + 1)
        if span_h >= 0 and span_w >= 0:
            oh, ow = span_h // g["stride_h"] + 1, span_w // g["stride_w"] + 1
            pix0 = rnd.choice([0, 0, rnd.randint(0, oh * ow - 1)])
            g = {**g, "out_w": ow, "pix0": pix0, "npix": rnd.randint(1, oh * ow - pix0)}
            geom = golden.ConvGeom(g["in_h"], g["in_w"], g["kh"], g["kw"], (g["stride_h"], g["stride_w"]),
                                   (g["dil_h"], g["dil_w"]), (g["pad_t"], g["pad_l"], g["pad_b"], g["pad_r"]))
            if allow_empty or (window_index(geom, (g["pix0"], g["npix"], ow))[0] >= 0).any(axis=1).all():
                return g


def pool_program(cfg: EngineConfig, rnd: random.Random, cfgs: dict, mode: PoolMode, *,
                 extreme: float = 0.05) -> tuple[list[Instruction], bytearray]:
    """One ``pool`` (``mode``) of the window ``cfgs`` (Cfg values, ``in_cb`` among them) on random
    blocks loaded to the VRF, its results stored: (program, memory image)."""
    vectors = cfgs.get("in_h", 1) * cfgs.get("in_w", 1) * cfgs["in_cb"]
    results = cfgs["npix"] * cfgs["in_cb"]
    img = bytearray(bfp_bytes(cfg, rnd, vectors, extreme=extreme, high=True))
    oaddr = -(-len(img) // 16) * 16
    img.extend(bytes(oaddr - len(img) + results * cfg.fp_vector_bytes + 64))
    prog = [_i(Opcode.LD, space=Space.VRF, rc=0, rm=0, rows=1, length=vectors)]
    prog += [_i(Opcode.CFG, key=Cfg[k.upper()], rs=0, imm=v & 0xFFFF_FFFF) for k, v in cfgs.items()]
    prog += [_i(Opcode.POOL, mode=mode, rd=0, rs=0), _i(Opcode.SETI, rd=7, imm=oaddr),
             _i(Opcode.ST, space=Space.FVRF, rc=0, rm=7, rows=1, length=results), _i(Opcode.HALT)]
    return prog, img


def random_window_program(cfg: EngineConfig, rnd: random.Random, *, instructions: int = 3,
                          extreme: float = 0.05, store_tiles: bool = False) -> tuple[list[Instruction], bytearray]:
    """``instructions`` mvc / pool instructions on random data, each loading its operands
    (activations to the VRF, weight tiles to the MRF, an accumulating mvc's sums to the FVRF),
    running and storing its FVRF results; returns (program, memory image). Dense, grouped and
    depthwise mvc (GI / GO / OB0), acc = 0 / 1, every pool mode. ``store_tiles``: each mvc is
    followed by a store of the MRF entries it reads (as loaded, copies included)."""
    n = cfg.native_dim
    img = bytearray()
    prog: list[Instruction] = []

    def put(blob: bytes) -> int:
        addr = -(-len(img) // 16) * 16
        img.extend(bytes(addr - len(img)))
        img.extend(blob)
        return addr

    outs = []
    for _ in range(instructions):
        kind = rnd.choice(["mvc", "mvc", "mvc_group", "pool"])
        g = random_window_geometry(rnd, allow_empty=kind != "pool" or rnd.random() < 0.05)
        in_cb = rnd.randint(1, 3)
        cfgs = {**g, "in_cb": in_cb, "gi": 0, "go": 0, "ob0": 0, "cob": 1}
        taps = g["kh"] * g["kw"]
        vectors = g["in_h"] * g["in_w"] * in_cb
        if kind == "mvc_group":
            gi = rnd.randint(1, 2)
            groups = rnd.randint(1, 3)
            in_cb = gi * groups
            go = rnd.randint(1, 2)
            cob = rnd.randint(1, groups * go)
            if cfg.mrf_banked and rnd.random() < 0.95:  # mostly a cob the banked MRF takes
                cob = rnd.choice([c for c in range(1, groups * go + 1) if c % cfg.tiles == 0 or cfg.tiles % c == 0])
            cfgs.update(in_cb=in_cb, gi=gi, go=go, cob=cob, ob0=rnd.randint(0, groups * go - cob))
            vectors = g["in_h"] * g["in_w"] * in_cb
        elif kind == "mvc":
            cfgs["cob"] = rnd.randint(1, 3)
            if cfg.mrf_banked and rnd.random() < 0.95:
                cfgs["cob"] = rnd.choice([c for c in range(1, 2 * cfg.tiles + 1)
                                          if c % cfg.tiles == 0 or cfg.tiles % c == 0])
        if cfg.mrf_banked:  # an mvc's results now and then at a pixel stride beyond cob (isa.md)
            cfgs["dstride"] = cfgs["cob"] + rnd.randint(1, 3) if kind != "pool" and rnd.random() < 0.4 else 0
        vaddr = put(bfp_bytes(cfg, rnd, vectors, extreme=extreme, high=True))
        vbase = rnd.randint(0, 40)
        prog += [_i(Opcode.SETI, rd=1, imm=vbase), _i(Opcode.SETI, rd=2, imm=vaddr),
                 _i(Opcode.CFG, key=Cfg.MEM_STRIDE, rs=0, imm=0), _i(Opcode.CFG, key=Cfg.CHIP_STRIDE, rs=0, imm=0),
                 _i(Opcode.LD, space=Space.VRF, rc=1, rm=2, rows=1, length=vectors)]
        for key, value in cfgs.items():
            prog.append(_i(Opcode.CFG, key=Cfg[key.upper()], rs=0, imm=value & 0xFFFF_FFFF))
        dbase = rnd.randint(0, 30)
        prog.append(_i(Opcode.SETI, rd=3, imm=dbase))
        if kind == "pool":
            mode = rnd.choice(list(PoolMode))
            prog.append(_i(Opcode.POOL, mode=mode, rd=3, rs=1))
            results = g["npix"] * in_cb
        else:
            cob = cfgs["cob"]
            gi = cfgs["gi"] or in_cb
            tiles = cob * taps * gi
            tbase = rnd.randint(0, 20)
            if cfg.mrf_banked:  # rows of T tiles from a row's start (isa.md, "Banked MRF"); now and
                t = cfg.tiles  # then a cob or start the banked MRF refuses
                tiles = -(-cob // t) * taps * gi * t
                tbase = tbase * t if rnd.random() < 0.97 else tbase * t + 1
            ds = cfgs.get("dstride") or cob
            results = (g["npix"] - 1) * ds + cob if g["npix"] else 0  # the span of its results
            acc = int(rnd.random() < 0.35)
            copies = cfg.mrf_banked and cob < cfg.tiles and cfg.tiles % cob == 0 and rnd.random() < 0.5
            if copies:  # a divisor cob's tiles loaded once, with T / cob copies (isa.md): equal copies
                rows = taps * gi
                taddr = put(bfp_bytes(cfg, rnd, rows * cob * n, extreme=extreme, high=False))
                prog += [_i(Opcode.SETI, rd=4, imm=tbase), _i(Opcode.SETI, rd=5, imm=taddr),
                         _i(Opcode.CFG, key=Cfg.CHIP_STRIDE, rs=0, imm=cfg.tiles),
                         _i(Opcode.CFG, key=Cfg.COPIES, rs=0, imm=cfg.tiles // cob),
                         _i(Opcode.LD, space=Space.MRF, rc=4, rm=5, rows=rows, length=cob),
                         _i(Opcode.CFG, key=Cfg.COPIES, rs=0, imm=1), _i(Opcode.CFG, key=Cfg.CHIP_STRIDE, rs=0, imm=0)]
            else:
                taddr = put(bfp_bytes(cfg, rnd, tiles * n, extreme=extreme, high=False))
                prog += [_i(Opcode.SETI, rd=4, imm=tbase), _i(Opcode.SETI, rd=5, imm=taddr),
                         _i(Opcode.LD, space=Space.MRF, rc=4, rm=5, rows=1, length=tiles)]
            if acc:
                rng = np.random.default_rng(rnd.getrandbits(32))
                init = (rng.standard_normal((results, n)) * 2.0 ** rng.integers(-20, 20, (results, n)))
                init[rng.random((results, n)) < 0.1] = 0.0
                faddr = put(init.astype("<f4").tobytes())
                prog += [_i(Opcode.SETI, rd=6, imm=faddr),
                         _i(Opcode.LD, space=Space.FVRF, rc=3, rm=6, rows=1, length=results)]
            prog.append(_i(Opcode.MVC, rd=3, rs=1, rm=4, acc=acc))
            if store_tiles:
                saddr = put(bytes(tiles * cfg.tile_bytes))
                prog += [_i(Opcode.SETI, rd=8, imm=saddr),
                         _i(Opcode.ST, space=Space.MRF, rc=4, rm=8, rows=1, length=tiles)]
        outs.append((dbase, results))
        oaddr = put(bytes(results * cfg.fp_vector_bytes))
        prog += [_i(Opcode.SETI, rd=7, imm=oaddr), _i(Opcode.ST, space=Space.FVRF, rc=3, rm=7, rows=1, length=results)]
    prog.append(_i(Opcode.HALT))
    img.extend(bytes(64))
    return prog, img
