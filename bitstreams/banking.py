"""Banking the large presets' register files: what the MVU's T reads a cycle need, measured.

The resource model (``resources.py``) counts a large engine's VRF without ``vrf_reads`` banked T
ways (T banks of depth / T, addresses free of bank conflicts); the RTL gives the MVU T read ports
per file (``regfiles.py``), which synthesis builds as T copies of the file, and no large engine
fits that way. (Built since: the banked MRF and the VRF read through ``vrf_reads`` ports, which the
``a10`` and ``s10`` presets use; ``--reads`` compares their tile counts and reads.) This module
measures, on the compiler's programs and with its cycle model, what a banked build needs of the
MVU's mapping of (pixel, output block) pairs onto tile engines, and what each answer costs in
cycles, RAM blocks and logic:

* **present** (``hdl/engine/mvu.py``): a round is T consecutive pairs ``q = pixel * cob + ob``,
  tile engine t takes pair ``q0 + t``. A step reads, across the T engines, up to ``min(T, cob)``
  distinct weight tiles of output blocks that vary from round to round, and the activation vectors
  of every pixel the round spans (:func:`present_reads`). Banked, every engine may need any bank:
  a bank-to-engine crossbar of T x (tile + vector) bits (:func:`crossbar_alms`, at the measured
  cost per multiplexer bit of the wide ports, ``resources.wide_port_costs``).
* **chunked**: the same mapping, the RTL unchanged, with the compiler cutting each layer's output
  blocks into ``mvc`` chunks of ``c`` blocks, ``c`` a multiple or a divisor of T. Tile engine t then
  only ever takes output blocks ``ob = t (mod T)`` (c a multiple of T: rounds start at multiples of T
  and never straddle a pixel) or ``ob = t (mod c)`` (c a divisor: ``T / c`` whole pixels a round), so
  MRF bank t holds what engine t reads and no weight crossbar is needed; a divisor chunk's tiles are
  written into the ``T / c`` banks that read them at once (no more memory traffic, more MRF room).
  A round of ``T / c`` pixels reads that many VRF vectors a step: with ``V`` read copies of the VRF
  a step takes ``ceil((T / c) / V)`` cycles. :func:`chunked_busy` times the best cut of an ``mvc``
  (a multiple of T, then the rest as divisor chunks, each padded or split, whichever is fastest,
  every chunk paying its own setup).

The chunked mapping's MRF is built (``EngineConfig.mrf_banked``: the compiler's cut, banked layout and
``COPIES`` loads, funcsim and the RTL); each row then also gives the compiled program's modelled
cycles on it (the VRF still read through T ports), which count what the estimate leaves out: a
narrow chunk's own epilogue and stores.

For the estimate, only the MVU's busy cycles change between the two; the programs are the compiler's for the
configuration as it stands, each ``mvc`` re-cut on its own (its output blocks are already a chunk
of the layer's, cut for the MRF's room: a compiler cutting for the banks would choose those
chunks too), so the chunked figures are what the present schedules cost re-cut, not the best
schedule's.

    python -m accelml.bitstreams.banking [--models resnet50,mobilenet_v2] [--tiles 8,14,16]
    python -m accelml.bitstreams.banking --dividers    (what dividing addresses by T costs)
    python -m accelml.bitstreams.banking --fvrf-depths 16384,8192    (what a smaller FVRF costs)
    python -m accelml.bitstreams.banking --parts 1,2,4,8    (shared ports, files in parts: built)
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from accelml.hdl.config import EngineConfig, preset
from accelml.hdl.engine.layouts import part_sizes, port_conflict, shared_ports
from accelml.hdl.errors import ConfigError
from accelml.hdl.isa import Space
from accelml.sim.cycles import MVU_SETUP_EMPTY, mvu_busy
from accelml.sim.funcsim import FuncSim

from . import resources

__all__ = ["MAPPINGS", "present_reads", "chunk_busy", "chunked_busy", "measure", "ram_blocks", "crossbar_alms"]

MAPPINGS = ("present", "chunked")


def present_reads(tiles: int, pixels: int, cob: int) -> tuple[int, int]:
    """(distinct output blocks, distinct pixels) that one round of the present mapping reads at a
    step, the most over the ``mvc``'s rounds: T consecutive pairs ``q = pixel * cob + ob``."""
    pairs = pixels * cob
    if pairs == 0:
        return 0, 0
    # the rounds that can differ: the first few (a round's start moves by T mod cob from round to
    # round, so every start is reached within cob rounds) and the last, which may be short
    rounds = -(-pairs // tiles)
    starts = sorted({r * tiles for r in range(min(rounds, cob + 1))} | {(rounds - 1) * tiles})
    most_obs = most_pix = 0
    for q0 in starts:
        q = np.arange(q0, min(q0 + tiles, pairs))
        most_obs = max(most_obs, len(np.unique(q % cob)))
        most_pix = max(most_pix, len(np.unique(q // cob)))
    return most_obs, most_pix


def chunk_busy(tiles: int, pixels: int, c: int, kb: int, *, width: int, vrf_copies: int) -> int:
    """Busy cycles of one chunk of ``c`` output blocks (``c`` a multiple or a divisor of T) of an
    ``mvc`` of ``pixels`` pixels and ``kb`` steps: the cycle model's
    :func:`~accelml.sim.cycles.mvu_busy`, each step taking ``ceil(pixels a round / V)`` cycles."""
    if c % tiles and tiles % c:
        raise ValueError(f"a chunk of {c} output blocks is neither a multiple nor a divisor of {tiles} tile engines")
    if c % tiles == 0:
        rounds, step = pixels * c // tiles, kb
    else:
        per = tiles // c  # whole pixels a round
        rounds, step = -(-pixels // per), kb * -(-min(per, pixels) // vrf_copies)
    return mvu_busy(tiles, rounds * tiles, step, width=width)  # its rounds of T pairs, steps of `step` cycles


def chunked_busy(tiles: int, pixels: int, cob: int, kb: int, *, width: int, vrf_copies: int) -> tuple[int, tuple]:
    """(busy cycles, chunks) of the fastest cut of an ``mvc``'s ``cob`` output blocks into chunks
    that are multiples or divisors of T: the largest multiple of T, then the rest as divisor chunks
    (a chunk may be padded up to the next divisor, its extra blocks' work wasted)."""
    kw = {"width": width, "vrf_copies": vrf_copies}
    whole = cob // tiles * tiles
    rest = cob - whole
    divisors = [d for d in range(1, tiles + 1) if tiles % d == 0]
    best = {0: (0, ())}  # blocks -> (cycles, chunks) of the fastest cut
    for r in range(1, rest + 1):
        cands = [(chunk_busy(tiles, pixels, d, kb, **kw), (d,)) for d in divisors if d >= r]
        cands += [(chunk_busy(tiles, pixels, d, kb, **kw) + best[r - d][0], (d, *best[r - d][1]))
                  for d in divisors if d < r]
        best[r] = min(cands)
    cycles, chunks = best[rest]
    if whole:
        cycles, chunks = cycles + chunk_busy(tiles, pixels, whole, kb, **kw), (whole, *chunks)
    return (cycles, chunks) if chunks else (MVU_SETUP_EMPTY, ())


class _Timed(FuncSim):
    """The functional simulator's cycle model with the MVU timed on ``mapping``; records the reads
    of every ``mvc``."""

    def __init__(self, cfg, mem_bytes, *, mapping: str, vrf_copies: int):
        super().__init__(cfg, mem_bytes, numerics=False)
        self.mapping, self.vrf_copies = mapping, vrf_copies
        self.reads: list[tuple[int, int, int]] = []  # (pixels, cob, kb) of every mvc run

    def _mvu_busy(self, pixels: int, cob: int, kb: int, *, group: int = 0, lengths=None) -> int:
        self.reads.append((pixels, cob, kb))
        if self.mapping == "present":
            return super()._mvu_busy(pixels, cob, kb, group=group, lengths=lengths)
        return chunked_busy(self.cfg.tiles, pixels, cob, kb, width=self.cfg.mfu_width,
                            vrf_copies=self.vrf_copies)[0]


def measure(cm, *, mapping: str = "present", vrf_copies: int = 1) -> dict:
    """Modelled cycles of the compiled model ``cm`` (``compiler.compile_model``) with the MVU on
    ``mapping``: ``cycles``, ``mvu_busy``, and over its ``mvc`` steps the most distinct weight tiles
    and pixels a step reads on the present mapping (``tiles_read``, ``pixels_read``) and the share of
    MVU steps reading more than one pixel (``multi_pixel_steps``)."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    cycles = busy = steps = multi = 0
    most_tiles = most_pix = 0
    for seg in cm.segments:
        if seg.compiled is None:
            continue
        sim = _Timed(cm.cfg, seg.compiled.mem_bytes, mapping=mapping, vrf_copies=vrf_copies)
        stats = sim.run(seg.compiled.program)
        cycles += stats.cycles
        busy += stats.busy.get("mvu", 0)
        seen = {}
        for shape in sim.reads:
            seen[shape] = seen.get(shape, 0) + 1
        t = cm.cfg.tiles
        for (pixels, cob, kb), n in seen.items():
            obs, pix = present_reads(t, pixels, cob)
            most_tiles, most_pix = max(most_tiles, obs), max(most_pix, pix)
            rounds = -(-pixels * cob // t)
            steps += n * rounds * kb
            q0 = np.arange(rounds) * t
            q1 = np.minimum(q0 + t, pixels * cob) - 1
            multi += n * int(np.count_nonzero(q0 // cob != q1 // cob)) * kb
    return {"cycles": cycles, "mvu_busy": busy, "tiles_read": most_tiles, "pixels_read": most_pix,
            "multi_pixel_steps": multi / steps if steps else 0.0}


def ram_blocks(cfg: EngineConfig, device: resources.Device | str, *, mapping: str, vrf_copies: int = 1) -> int:
    """RAM blocks of the three files: the resource model's count on Intel (``present``: T banks of
    the VRF and the MRF, what it assumes, and the FVRF as built, a copy per read port) or,
    ``chunked``, the MRF and FVRF as the model counts them and the VRF as ``vrf_copies`` full copies
    for the MVU plus one for the other readers (the DMA, the MFU, the pool), each read copy a whole
    file; the VRF and FVRF in ``file_parts`` parts each."""
    dev = resources.DEVICES[device] if isinstance(device, str) else device
    files = resources.file_blocks(cfg, dev, banked=True)
    if mapping == "present":
        return sum(files.values())
    vec = cfg.native_dim * (cfg.mantissa_bits + 1) + cfg.exponent_bits
    copy = resources.part_blocks(vec, cfg.vrf_vectors, cfg.file_parts, dev)
    return sum(files.values()) - files[Space.VRF] + (vrf_copies + 1) * copy


def chunked_ram(cfg: EngineConfig, dev: resources.Device, vrf_copies: int) -> int:
    """The whole engine's RAM blocks with the chunked mapping's ``vrf_copies`` + 1 VRF copies: the
    files (:func:`ram_blocks`) and the rest of the model's count (the instruction memory)."""
    rest = resources.estimate(cfg, dev).ram_blocks - resources.register_file_blocks(cfg, dev, banked=True)
    return ram_blocks(cfg, dev, mapping="chunked", vrf_copies=vrf_copies) + rest


def crossbar_alms(cfg: EngineConfig, device: resources.Device | str) -> float:
    """Logic of a bank-to-engine crossbar for the present mapping on T-banked files: T engines x
    (a weight tile's and an activation vector's bits) of T:1 multiplexers, at the cost per bit the
    ``WidePort`` records measured for W:1 (interpolated at W = T, extrapolated past the widest)."""
    dev = resources.DEVICES[device] if isinstance(device, str) else device
    costs = resources.wide_port_costs(resources._flow(dev))
    per_bit = resources._interpolate({w: c["logic"] for w, c in costs.items()}, cfg.tiles)
    vec = cfg.native_dim * (cfg.mantissa_bits + 1) + cfg.exponent_bits
    return cfg.tiles * (cfg.native_dim + 1) * vec * per_bit


def timed(cm, shared: dict, rule=None) -> int:
    """The compiled model ``cm``'s modelled cycles with the shared ports ``shared`` (as
    ``layouts.shared_ports`` gives them) and, if given, another ``rule`` for them (the signature of
    ``layouts.port_conflict``)."""
    cycles = 0
    for seg in cm.segments:
        if seg.compiled is None:
            continue
        sim = FuncSim(cm.cfg, seg.compiled.mem_bytes, numerics=False)
        sim.model.shared = shared
        if rule is not None:
            sim.model.port_conflict = rule
        cycles += sim.run(seg.compiled.program).cycles
    return cycles


def fvrf_read_sharing(cm) -> dict:
    """The compiled model ``cm``'s modelled cycles with the MVU's FVRF read (an accumulating
    ``mvc``'s sums, read ahead: ``hdl/engine/mvu.py``) sharing the MFU's FVRF read port, as built
    (``layouts.SHARED_READS``: an accumulating ``mvc`` and an MFU instruction reading the FVRF take
    turns), and on a port of its own (a copy of the FVRF more), and its accumulating ``mvc``s."""
    from accelml.hdl.isa import Opcode

    accumulating = sum(1 for seg in cm.segments if seg.compiled is not None
                       for i in seg.compiled.program.instructions if i.op is Opcode.MVC and i.acc)
    return {"shared": measure(cm)["cycles"], "own": timed(cm, own_fvrf_read(shared_ports(cm.cfg))),
            "accumulating": accumulating}


def write_port_rules(cfg: EngineConfig) -> dict[str, tuple[dict, object]]:
    """Ways to give the VRF and FVRF fewer write ports than a port set per unit, as ``(shared,
    rule)`` for :func:`timed`: ``one`` write port per file (``file_ports="shared"``, one read port
    beside the MVU's); ``one_vrf`` / ``one_fvrf``: that on the VRF's / the FVRF's writes alone;
    ``mfu_own``: the MFU (and the pool) on a write port of its own and the others sharing one, two
    write ports per memory; ``halves``: ``one``, but each file built as two memories of half the
    depth (no copy more), each with the shared write port and the shared read port, so that units
    take turns only when they write or read the same half; ``halves_vrf`` / ``halves_fvrf``: that
    on one file's writes alone; ``quarters`` / ``eighths``: ``halves`` with four / eight parts."""
    one = shared_ports(dataclasses.replace(cfg, file_ports="shared"))
    own = shared_ports(cfg)
    alone = {f"one_{space.name.lower()}": ({**own, (space, True): one[(space, True)]}, None)
             for space in (Space.VRF, Space.FVRF)}
    mfu_own = _without(_without(one, (Space.VRF, True), "mfu"), (Space.FVRF, True), "mfu")

    def in_parts(n: int):
        """The rule for files built as ``n`` memories of 1 / n of the depth each (``file_parts``,
        built): units take turns on a shared port only when their spans touch a common part."""
        return functools.partial(port_conflict, parts=part_sizes(dataclasses.replace(cfg, file_parts=n)))

    halves = in_parts(2)
    return {"one": (one, None), **alone, "mfu_own": (mfu_own, None), "halves": (one, halves),
            **{f"halves_{key[4:]}": (shared, halves) for key, (shared, _) in alone.items()},
            "quarters": (one, in_parts(4)), "eighths": (one, in_parts(8))}


def _without(shared: dict, key: tuple, unit: str) -> dict:
    """``shared`` (``layouts.shared_ports``) with ``unit`` on a port of its own for ``key``
    (``(file, write)``): the group without it, gone when one unit is left."""
    group = tuple(u for u in shared.get(key, ()) if u != unit)
    return {k: v for k, v in shared.items() if k != key} | ({key: group} if len(group) > 1 else {})


def own_fvrf_read(shared: dict) -> dict:
    """``shared`` (``layouts.shared_ports``) with the MVU's FVRF read on a port of its own."""
    return _without(shared, (Space.FVRF, False), "mvu")


def divider_cells(width: int, divisor: int, *, reciprocal: bool = False) -> dict[str, int]:
    """``synth_ecp5``'s cells for a ``width``-bit ``x // divisor`` with ``x % divisor`` (what a banked
    MRF's addresses take at a T that is not a power of two), as Amaranth's ``//`` and ``%`` or, with
    ``reciprocal``, as the product ``(x * ceil(2**s / divisor)) >> s`` (exact for every ``x`` below
    ``2**width`` with ``s = width + ceil(log2(divisor))``) and ``x - q * divisor``."""
    from amaranth.hdl import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from accelml.bitstreams.synth import synthesize

    class _Div(wiring.Component):
        def __init__(self):
            super().__init__({"x": In(width), "q": Out(width), "r": Out(max(1, divisor.bit_length()))})

        def elaborate(self, platform):
            m = Module()
            if not reciprocal:
                m.d.comb += [self.q.eq(self.x // divisor), self.r.eq(self.x % divisor)]
                return m
            s = width + (divisor - 1).bit_length()
            q = Signal(width)
            m.d.comb += [q.eq((self.x * -(-(1 << s) // divisor)) >> s), self.q.eq(q),
                         self.r.eq(self.x - q * divisor)]
            return m

    return synthesize(_Div(), flow="ecp5").cells


def compiled_cycles(name: str, cfgs: list[EngineConfig], precision: str) -> list[int]:
    """The modelled cycles of model ``name`` (full size, ``compiler.models``) compiled for each of
    ``cfgs``."""
    from accelml.compiler import compile_model, models

    model = models.build(name, "full")
    return [compile_model(model, config=cfg, name=name, precision=precision).summary()["cycles"] for cfg in cfgs]


def main(argv=None) -> int:
    import argparse

    from accelml.compiler import compile_model, models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dividers", action="store_true",
                    help="instead: synth_ecp5 of the constant divisions a banked MRF's addresses take")
    ap.add_argument("--fvrf-sharing", action="store_true",
                    help="instead: the models' cycles with the MVU's FVRF read sharing the MFU's port")
    ap.add_argument("--write-ports", action="store_true",
                    help="instead: the models' cycles with fewer VRF and FVRF write ports (write_port_rules)")
    ap.add_argument("--fvrf-depths", default=None, metavar="N,N",
                    help="instead: the models' cycles and the FVRF's RAM at these FVRF depths (vectors)")
    ap.add_argument("--parts", default=None, metavar="P,P",
                    help="instead: the preset on shared ports with its VRF and FVRF in these numbers of parts "
                         "(EngineConfig.file_parts, built): the models' cycles and the resource model's RAM and "
                         "logic, beside the preset's ports")
    ap.add_argument("--reads", default=None, metavar="V,V",
                    help="instead: the preset at each of --tiles with the VRF read through these numbers of ports "
                         "(EngineConfig.vrf_reads, built; at most T): the models' cycles and the resource model's "
                         "logic and RAM")
    ap.add_argument("--preset", default="a10")
    ap.add_argument("--models", default="resnet50,mobilenet_v2")
    ap.add_argument("--tiles", default="8,14,16", help="tile engines to try (the MRF scaled with them)")
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--vrf-vectors", type=int, default=None, help="the VRF's depth (default: the preset's)")
    ap.add_argument("--fvrf-vectors", type=int, default=None, help="the FVRF's depth (default: the preset's)")
    ap.add_argument("--copies", default="1,2,4", help="VRF read copies to try on the chunked mapping")
    ap.add_argument("--file-ports", default=None, choices=["unit", "shared"],
                    help="the register-file ports (EngineConfig.file_ports; default: the preset's)")
    ap.add_argument("--file-parts", type=int, default=None,
                    help="the VRF and FVRF in this many parts (EngineConfig.file_parts; default: the preset's)")
    args = ap.parse_args(argv)
    if args.dividers:
        for width, divisor in ((32, 3), (32, 14), (12, 14), (12, 3)):
            for reciprocal in (False, True):
                cells = divider_cells(width, divisor, reciprocal=reciprocal)
                how = "reciprocal product" if reciprocal else "// and %"
                print(f"{width}-bit x // {divisor}, x % {divisor} ({how}): " + ", ".join(
                    f"{k} {cells.get(k, 0)}" for k in ("LUT4", "CCU2C", "MULT18X18D")), flush=True)
        return 0
    base = preset(args.preset)
    try:
        if args.file_ports is not None:
            base = dataclasses.replace(base, file_ports=args.file_ports)
        if args.file_parts is not None:
            base = dataclasses.replace(base, file_parts=args.file_parts)
    except ConfigError as e:
        ap.error(str(e))
    if args.fvrf_sharing:
        for name in args.models.split(","):
            cm = compile_model(models.build(name, "full"), config=base, name=name, precision=args.precision)
            r = fvrf_read_sharing(cm)
            print(f"{name} on {base.name}: {r['accumulating']} accumulating mvc; {r['shared']:,} cycles with the "
                  f"MVU's FVRF read sharing the MFU's port (built), {r['own']:,} on a port of its own "
                  f"(sharing: {r['shared'] / r['own']:.4f}x)", flush=True)
        return 0
    if args.write_ports:
        rules = write_port_rules(base)
        for name in args.models.split(","):
            cm = compile_model(models.build(name, "full"), config=base, name=name, precision=args.precision)
            built = measure(cm)["cycles"]
            print(f"{name} on {base.name}: {built:,} cycles with its ports; " + ", ".join(
                f"{rule} {c:,} ({c / built:.4f}x)" for rule, c in
                ((rule, timed(cm, shared, fn)) for rule, (shared, fn) in rules.items())), flush=True)
        return 0
    device = resources.PRESET_DEVICES[base.name]
    dev = resources.DEVICES[device]
    if args.parts:
        counts = [int(x) for x in args.parts.split(",")]
        cfgs = [base, *(dataclasses.replace(base, file_ports="shared", file_parts=p, name=f"{base.name}-parts{p}")
                        for p in counts)]
        names = [f"its ports ({base.file_ports!r}, {base.file_parts} part{'s' if base.file_parts > 1 else ''})",
                 *(f"shared, {p} part{'s' if p > 1 else ''}" for p in counts)]
        for what, cfg in zip(names, cfgs, strict=True):
            est = resources.estimate(cfg, dev)
            print(f"{base.name}, {what}: {est.ram_blocks:,} / {dev.ram_blocks:,} RAM blocks, logic "
                  f"{est.logic:,.0f} / {dev.logic:,} {dev.logic_unit} ({100 * est.logic / dev.logic:.1f} %)",
                  flush=True)
        for name in args.models.split(","):
            cycles = compiled_cycles(name, cfgs, args.precision)
            print(f"{name}: " + ", ".join(f"{what} {c:,} ({c / cycles[0]:.4f}x)"
                                          for what, c in zip(names, cycles, strict=True)), flush=True)
        return 0
    if args.reads:
        cfgs = []
        for t in (int(x) for x in args.tiles.split(",")):
            for v in sorted({min(t, int(x)) for x in args.reads.split(",")}):
                try:
                    cfg = dataclasses.replace(resources.scaled(base, t), vrf_reads=v, name=f"{base.name}-t{t}v{v}")
                except ConfigError as e:
                    ap.error(f"T = {t}, V = {v}: {e}")
                est = resources.estimate(cfg, dev)
                print(f"T = {t}, V = {v}: {est.ram_blocks:,} / {dev.ram_blocks:,} RAM blocks, logic "
                      f"{est.logic:,.0f} / {dev.logic:,} {dev.logic_unit} ({100 * est.logic / dev.logic:.1f} %)"
                      f"{'' if est.fits else ': does not fit'}", flush=True)
                cfgs.append(cfg)
        for name in args.models.split(","):
            cycles = compiled_cycles(name, cfgs, args.precision)
            print(f"{name}: " + ", ".join(f"T = {c.tiles}, V = {c.vrf_reads}: {n:,}" for c, n in
                                          zip(cfgs, cycles, strict=True)), flush=True)
        return 0
    if args.fvrf_depths:
        depths = [int(x) for x in args.fvrf_depths.split(",")]
        cfgs = [dataclasses.replace(base, fvrf_vectors=d, name=f"{base.name}-fvrf{d}") for d in depths]
        for d, cfg in zip(depths, cfgs, strict=True):
            est = resources.estimate(cfg, dev)
            print(f"{base.name} with {d:,} FVRF vectors: {est.ram_blocks:,} / {dev.ram_blocks:,} RAM blocks "
                  f"(file_ports={cfg.file_ports!r}), "
                  f"{resources.estimate(dataclasses.replace(cfg, file_ports='shared'), dev).ram_blocks:,} "
                  "with 'shared'", flush=True)
        for name in args.models.split(","):
            cycles = compiled_cycles(name, cfgs, args.precision)
            print(f"{name}: " + ", ".join(f"{d:,} vectors {c:,} cycles ({c / cycles[0]:.4f}x)"
                                          for d, c in zip(depths, cycles, strict=True)), flush=True)
        return 0
    print(f"{base.describe()}; device {dev.name}; precision {args.precision}; programs: the compiler's "
          "for each T, synthetic weights")
    for name in args.models.split(","):
        model = models.build(name, "full")
        for t in (int(x) for x in args.tiles.split(",")):
            try:
                cfg = dataclasses.replace(resources.scaled(base, t), name=f"{base.name}-t{t}",
                                          vrf_vectors=args.vrf_vectors or base.vrf_vectors,
                                          fvrf_vectors=args.fvrf_vectors or base.fvrf_vectors)
            except ConfigError as e:
                ap.error(f"T = {t}: {e}")
            est = resources.estimate(cfg, dev)
            cm = compile_model(model, config=cfg, name=name, precision=args.precision)
            ref = measure(cm)
            xbar = crossbar_alms(cfg, dev)
            print(f"\n{name}, T = {t} ({cfg.peak_macs_per_cycle} MACs/cycle; logic {est.logic:,.0f} / "
                  f"{dev.logic:,} {dev.logic_unit} without a weight crossbar)")
            print(f"  present: {ref['cycles']:,} cycles, MVU busy {ref['mvu_busy']:,}; a step reads up to "
                  f"{ref['tiles_read']} weight tiles and {ref['pixels_read']} pixels "
                  f"({100 * ref['multi_pixel_steps']:.1f} % of steps more than one pixel); banked: "
                  f"{ram_blocks(cfg, dev, mapping='present'):,} RAM blocks + a crossbar of {xbar:,.0f} "
                  f"{dev.logic_unit} ({100 * (est.logic + xbar) / dev.logic:.0f} % of the device with it)")
            banked = compile_model(model, config=dataclasses.replace(cfg, mrf_banked=True), name=name,
                                   precision=args.precision)
            wb = [sum(li.weight_bytes for seg in c.segments if seg.compiled for li in seg.compiled.layers)
                  for c in (cm, banked)]
            print(f"  banked MRF, built (EngineConfig.mrf_banked; the VRF still read T times): "
                  f"{banked.summary()['cycles']:,} cycles ({banked.summary()['cycles'] / ref['cycles']:.3f}x), "
                  f"weights {wb[1] / 1e6:.1f} MB ({wb[1] / wb[0]:.3f}x)")
            for v in (int(x) for x in args.copies.split(",")):
                r = measure(cm, mapping="chunked", vrf_copies=v)
                ram = [chunked_ram(c, dev, v) for c in (cfg, dataclasses.replace(cfg, file_ports="shared"))]
                print(f"  chunked, {v} + 1 VRF read copies: {r['cycles']:,} cycles "
                      f"({r['cycles'] / ref['cycles']:.3f}x), MVU busy {r['mvu_busy']:,}; "
                      f"{ram[0]:,} / {dev.ram_blocks:,} RAM blocks with file_ports={cfg.file_ports!r}, "
                      f"{ram[1]:,} with 'shared' (the FVRF's copies are its read ports)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
