"""The resource model: does a preset's engine fit its named device?

    est = estimate(preset("a10"))          # Estimate: logic, FFs, multipliers, RAM blocks vs the device
    print(table())                          # the presets table of bitstreams/README.md

    python -m accelml.bitstreams.resources [--readme]        # the table [written into the README]
    python -m accelml.bitstreams.resources --measure         # + compile ResNet-50 per preset (minutes)

What it counts, and from where:

* **Tile engines** (the MVU): logic, flip-flops and hard multipliers per tile engine are fitted to
  Yosys synthesis of ``hdl/tile_engine.py`` at N = 4, 8, 16 and M = 3, 7 (``calibration.json``, made by
  ``python -m accelml.bitstreams.calibrate``): ``cost(N) = a*N^2 + b*N + c`` per mantissa width (three
  sizes give a, b, c exactly), linear in M between the measured widths. ``a`` is the per-MAC cost
  (multiplier glue, adder tree), ``b`` the per-row cost (the binary32 convert and add the accumulation
  contract needs once per block per row). Logic is LUT4 (``LUT4`` + 2 per ``CCU2C`` carry cell) on ECP5
  and ALMs (``synth.alms``) for the Intel devices, from Yosys's Cyclone V ALM flow as a proxy for
  Arria 10 / Stratix 10.
* **Multipliers**: one hard multiplier per BFP product (an ECP5 MULT18X18D, one of the two 18x19
  multipliers of an Intel DSP block) while they last, after the MFU's and control's; tile-engine
  products beyond them cost the LUT-multiplier logic measured with the ``-nodsp`` flows. Packing two
  narrow products into one multiplier is not assumed.
* **MFU** (``mfu_cost``): ``mfu_width x N`` binary32 lanes at the per-lane cost of ``hdl/mfu.py``
  synthesised at N = 4 and 8 (block ``Mfu``: 1.9k LUT4 + 0.4k CCU2C and 8 MULT18X18D a lane on
  ECP5, the two sizes within 1 % per lane). Each lane has two 24x24 significand products (``vop``,
  ``vact``): four MULT18X18D each on ECP5, one DSP block each on Arria 10 / Stratix 10, whose
  variable-precision DSP block is one 27x27 or two 18x19 multipliers (the device overviews cited in
  ``DEVICES``), so two of the 18x19 multipliers counted here. Intel logic: from an ALM-flow record
  when there is one, else the ECP5 count at the tile engine's ALM per LUT4 ratio. Plus the fused
  ``vop``'s two 2:1 multiplexers at the inputs of ``vact`` and ``qnt`` beyond the first vector (the
  whole-engine records, at ``mfu_width`` 1, hold that one), at the ``WidePort`` cost per bit.
* **The rest of the engine** (``control_overhead``: control, DMAs, pool, window generator,
  register-file port logic, instruction memory): the whole engine synthesised on ECP5 at N = 4 and
  8 (``calibration.json``, block ``Engine``: ``python -m accelml.bitstreams.engine_synth`` records)
  minus its tile engines and MFU as counted here, linear in N between the two; on Intel converted
  at the tile engine's ALM per LUT4 ratio: an ECP5-measured figure, not an Intel synthesis.
* **Register files** (``register_file_blocks``; per file ``file_blocks``): VRF, MRF and FVRF (rows
  of ``mfu_width`` vectors). On ECP5, as the RTL builds them: one memory with the read ports
  ``RegisterFiles.read_ports`` counts, which synthesis replicates (a full copy per read port). On
  Intel: the MRF banked, T banks of depth/T (built behind ``EngineConfig.mrf_banked``, as ``a10``
  and ``s10`` are); the VRF as the RTL builds it when the MVU reads it through ``vrf_reads`` ports
  (``a10``, ``s10``: a copy per read port), else, for studies, banked T ways as no RTL builds it;
  the FVRF as the RTL builds it, a copy per read port (the MVU reads it through the MFU's port).
  Blocks at the device RAM's widest shape that holds the depth.
* **Gather** (``gather_cost``): the MVU's selects of each tile engine's block from the V VRF ports
  and its held block, with ``vrf_reads``.
* **Pool** (``pool_cost``): the pool unit folds ``mfu_width`` vectors a cycle on the MFU's lanes
  and ports, which the MFU lends it: the 2:1 multiplexers at their inputs beyond the first vector,
  at the ``WidePort`` cost per bit.
* **Prefetch** (``prefetch_cost``): the MVU's three slots of T accumulated sums, read ahead of an
  accumulating ``mvc``'s rounds, and their select into the tile engines.

* **Crossbars** (``crossbar_cost``): the W:1 multiplexer bits of the banked files
  (``FilePlan.mux_bits`` of the engine's ``top.file_plan``: a rotation crossbar per wide port
  and direction, one entry's select per one-entry read of a banked file) at the per-bit cost of the
  RTL's register files with one wide FVRF user synthesised at W = 2, 4, 8, 16 (block ``WidePort``),
  linear in W between those. A file in parts (``file_parts``) adds each read's part select
  (``FilePlan.part_mux_bits``), priced by the RTL's FVRF in P = 2, 4, 8 parts against the whole file
  (block ``FileParts``), and its shared write ports' selects of a writer per part (at the
  ``WidePort`` cost).

On ECP5 the register files counted are the RTL's (``file_ports="shared"``: one write port per
file, a read copy per read port), and the whole ``ecp5`` engine's synthesis is one of the model's
calibration points, so its verdict there is the measurement's. On Intel the files counted for
``a10`` / ``s10`` are the ones the RTL builds (shared ports in parts, a banked MRF, the VRF read
through ``vrf_reads`` ports); a configuration with ``vrf_reads`` = 0 is counted with a VRF banked
T ways, which no RTL builds (bitstreams/README.md, "The buildable a10 and s10").

The a10 and s10 presets fit by this model: the fastest on ResNet-50 of the tile counts measured,
not the largest that fit. Clock rates are the presets' targets; no place-and-route has confirmed
them, and an Intel design near 100 % of its ALMs is unlikely to place and route at them.

Device counts are the vendors' datasheet figures (sources in ``DEVICES``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from accelml.hdl.config import PRESETS, EngineConfig
from accelml.hdl.isa import INSN_BITS, Space
from accelml.runtime.storage import write_file_atomic

from .synth import alms

__all__ = ["Device", "DEVICES", "PRESET_DEVICES", "Estimate", "estimate", "largest_tiles", "table",
           "calibration", "scaled", "crossbar_cost", "wide_port_costs"]


@dataclass(frozen=True)
class Device:
    name: str
    family: str  # "ecp5" (logic in LUT4) or "intel" (logic in ALMs)
    logic: int  # LUT4s or ALMs
    ffs: int
    multipliers: int  # hard multipliers that each take one BFP mantissa product
    ram_blocks: int
    ram_shapes: tuple[tuple[int, int], ...]  # (depth, width) configurations of one RAM block
    source: str

    @property
    def logic_unit(self) -> str:
        return "LUT4" if self.family == "ecp5" else "ALM"


DEVICES = {
    "LFE5U-85F": Device(
        "LFE5U-85F", "ecp5", 83_640, 83_640, 156, 208,
        ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)),
        "Lattice ECP5 family data sheet (FPGA-DS-02012), table 1.1: 84K LUTs, 208 EBR of 18 Kbit, "
        "156 18x18 multipliers"),
    "10AX115": Device(
        "Arria 10 GX 1150 (10AX115)", "intel", 427_200, 1_708_800, 3_036, 2_713,
        ((512, 40), (1024, 20), (2048, 10)),
        "Intel Arria 10 device overview (A10-OVERVIEW), GX table: 427,200 ALMs, 1,708,800 registers, "
        "2,713 M20K blocks, 1,518 DSP blocks = 3,036 18x19 multipliers"),
    "1SG280": Device(
        "Stratix 10 GX 2800 (1SG280)", "intel", 933_120, 3_732_480, 11_520, 11_721,
        ((512, 40), (1024, 20), (2048, 10)),
        "Intel Stratix 10 GX/SX device overview, GX table: 933,120 ALMs, 3,732,480 registers, "
        "11,721 M20K blocks, 5,760 DSP blocks = 11,520 18x19 multipliers"),
}

PRESET_DEVICES = {"ecp5": "LFE5U-85F", "a10": "10AX115", "s10": "1SG280"}  # tiny, wide: simulation only

_CAL = Path(__file__).with_name("calibration.json")


def _cells(flow: str, cells: dict) -> dict:
    if flow.startswith("ecp5"):
        return {"logic": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0), "ffs": cells.get("TRELLIS_FF", 0),
                "mult": cells.get("MULT18X18D", 0), "ram": cells.get("DP16KD", 0)}
    return {"logic": alms(cells), "ffs": cells.get("MISTRAL_FF", 0),
            "mult": sum(v for k, v in cells.items() if k.startswith("MISTRAL_MUL")), "ram": 0}


@lru_cache(maxsize=4)
def records(path: str = str(_CAL)) -> tuple[dict, ...]:
    """The synthesis records that measured something (a point Yosys failed on is left out)."""
    return tuple(r for r in json.loads(Path(path).read_text())["records"] if "cells" in r)


def calibration(path: str = str(_CAL), block: str = "TileEngine") -> dict:
    """{(flow, N, M): {"logic": ..., "ffs": ..., "mult": ..., "ram": ...}} of ``block``'s records."""
    return {(r["flow"], r["native_dim"], r["mantissa_bits"]): _cells(r["flow"], r["cells"])
            for r in records(path) if r.get("block", "TileEngine") == block and "native_dim" in r}


def _fit(flow: str, key: str, n: int, m: int) -> float:
    """One tile engine's ``key`` cost at (N, M) from the fitted a*N^2 + b*N + c per measured M."""
    cal = calibration()
    widths = sorted({mm for (f, _, mm) in cal if f == flow})
    values = {}
    for mm in widths:
        pts = sorted((nn, v[key]) for (f, nn, m2), v in cal.items() if f == flow and m2 == mm)
        ns, ys = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
        # least squares of the relative error: the small engines weigh as much as the large ones
        w = 1 / np.maximum(np.abs(ys), 1)
        coef = np.linalg.lstsq(np.stack([ns**2, ns, np.ones_like(ns)], 1) * w[:, None], ys * w, rcond=None)[0]
        values[mm] = float(coef @ [n * n, n, 1])
    return _interpolate(values, m)


def _tile_engines(cfg: EngineConfig, flow: str) -> dict[str, float]:
    """The T tile engines' logic, flip-flops and hard multipliers on ``flow`` (:func:`_fit`)."""
    return {k: cfg.tiles * _fit(flow, k, cfg.native_dim, cfg.mantissa_bits) for k in ("logic", "ffs", "mult")}


def _interpolate(values: dict[float, float], x: float) -> float:
    """``values`` (measured at a few x) at ``x``: linear between the two measured x around it,
    and outside them extrapolated from the two nearest."""
    if x in values:
        return values[x]
    xs = sorted(values)
    lo = max([v for v in xs if v < x], default=None)
    hi = min([v for v in xs if v > x], default=None)
    if lo is None or hi is None:  # outside the measured x
        lo, hi = (xs[0], xs[1]) if lo is None else (xs[-2], xs[-1])
    return values[lo] + (x - lo) / (hi - lo) * (values[hi] - values[lo])


def _ram_blocks(width: int, depth: int, dev: Device) -> int:
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in dev.ram_shapes)


def part_blocks(width: int, depth: int, parts: int, dev: Device) -> int:
    """RAM blocks of a memory of ``depth`` entries built as ``parts`` memories of 1 / parts of it
    (``EngineConfig.file_parts``): a part shallower than a block wastes the rest of it."""
    return parts * _ram_blocks(width, math.ceil(depth / parts), dev)


def _flow(dev: Device) -> str:
    return "ecp5" if dev.family == "ecp5" else "alm"


# a binary32 significand product is 24x24: four MULT18X18D on ECP5 (what synth_ecp5 builds), one DSP
# block in its 27x27 mode on Arria 10 / Stratix 10, which is two of the 18x19 multipliers counted here
ECP5_MULTS_PER_FP32_PRODUCT = 4
INTEL_MULTS_PER_FP32_PRODUCT = 2
IMEM_DEPTH = 4096  # instruction memory words the engine's control is built with (hdl/engine/control.py)


def _logic_ratio(n: int, m: int) -> float:
    """ALMs per ECP5 LUT4 (LUT4 + 2 per CCU2C) of the same logic: the tile engine's, measured by both flows."""
    return _fit("alm", "logic", n, m) / _fit("ecp5", "logic", n, m)


def mfu_cost(cfg: EngineConfig, dev: Device) -> dict[str, float]:
    """The MFU's logic, FFs and multipliers: ``mfu_width x N`` binary32 lanes at the measured per-lane cost.

    Per lane from the MFU synthesis with the most lanes (``calibration.json``, block ``Mfu``, one vector
    per cycle); the multipliers from the ECP5 count (its 24x24 products) on either family. Without an
    ALM-flow record, Intel logic is the ECP5 count converted at the tile engine's ALM per LUT4 ratio.
    """
    lanes = cfg.mfu_width * cfg.native_dim
    ecp5 = calibration(block="Mfu")
    n8, m8 = max((n, m) for (f, n, m) in ecp5 if f == "ecp5")
    per = {k: v / n8 for k, v in ecp5[("ecp5", n8, m8)].items()}
    products = per["mult"] / ECP5_MULTS_PER_FP32_PRODUCT
    # a fused vop's two input multiplexers (activation and quantiser: the files' group or the unit
    # before), 2:1 over the lanes at the WidePort records' W = 2 cost per bit; the whole-engine records
    # (mfu_width 1, block Engine) hold one vector's worth
    mux = _mux2_per_bit(dev)
    chain = {k: 2 * 32 * cfg.native_dim * (cfg.mfu_width - 1) * mux[k] for k in ("logic", "ffs")}
    if dev.family == "ecp5":
        return {"logic": lanes * per["logic"] + chain["logic"], "ffs": lanes * per["ffs"] + chain["ffs"],
                "mult": lanes * products * ECP5_MULTS_PER_FP32_PRODUCT}
    alm = {(n, m): v for (f, n, m), v in ecp5.items() if f == "alm"}
    if alm:
        na, ma = max(alm)
        logic, ffs = alm[(na, ma)]["logic"] / na, alm[(na, ma)]["ffs"] / na
    else:
        logic, ffs = per["logic"] * _logic_ratio(n8, m8), per["ffs"]
    out = {"logic": lanes * logic, "ffs": lanes * ffs, "mult": lanes * products * INTEL_MULTS_PER_FP32_PRODUCT}
    return {k: v + chain.get(k, 0.0) for k, v in out.items()}


def wide_port_costs(flow: str) -> dict[int, dict[str, float]]:
    """{W: {"logic": ..., "ffs": ...} per W:1 multiplexer bit} from the ``WidePort`` records of
    ``flow``: one user reading and writing W FVRF entries, two crossbars of W lanes x the entry's bits."""
    out = {}
    for r in records():
        if r.get("block") == "WidePort" and r["flow"] == flow:
            cells = _cells(flow, r["cells"])
            bits = 2 * r["mfu_width"] * 32 * r["native_dim"]
            out[r["mfu_width"]] = {k: cells[k] / bits for k in ("logic", "ffs")}
    return out


def _mux2_per_bit(dev: Device) -> dict[str, float]:
    """A 2:1 multiplexer's logic and flip-flops per bit on ``dev``: the ``WidePort`` records' W = 2
    cost (none without such a record)."""
    return wide_port_costs(_flow(dev)).get(2, {"logic": 0.0, "ffs": 0.0})


def pool_cost(cfg: EngineConfig, dev: Device) -> dict[str, float]:
    """The 2:1 multiplexers that lend the MFU's lanes and ports to the pool unit (it folds ``mfu_width``
    vectors a cycle on them, ``hdl/engine/mfu.py``): on the inputs of ``Dequantise`` and ``VectorOp``
    and the FVRF write data, for the vectors beyond the first (whose are in the whole-engine records,
    ``control_overhead``), at the ``WidePort`` records' W = 2 cost per bit. The pool has no lanes
    of its own."""
    from accelml.hdl.mfu import Dequantise, VectorOp

    w = cfg.mfu_width
    if w == 1:
        return {"logic": 0.0, "ffs": 0.0, "mult": 0.0}
    beats = Dequantise.layouts(cfg)[0].size + VectorOp.layouts(cfg)[0].size + 32 * cfg.native_dim * w
    bits = beats * (w - 1) / w
    mux = _mux2_per_bit(dev)
    return {"logic": bits * mux["logic"], "ffs": bits * mux["ffs"], "mult": 0.0}


def prefetch_cost(cfg: EngineConfig, dev: Device) -> dict[str, float]:
    """The MVU's slots of an accumulating ``mvc``'s sums, read ahead of its rounds
    (``hdl/engine/mvu.py``: ``PF_SLOTS`` slots of T sums of N binary32): their flip-flops, and the
    select of one slot's T x N x 32 bits into the tile engines, ``PF_SLOTS`` - 1 2:1 multiplexers
    a bit at the ``WidePort`` records' W = 2 cost. They scale with T, which the whole-engine
    records (one tile engine) do not show, so the model counts them apart."""
    from accelml.hdl.engine.mvu import PF_SLOTS

    bits = cfg.tiles * cfg.native_dim * 32
    mux = _mux2_per_bit(dev)
    return {"logic": bits * (PF_SLOTS - 1) * mux["logic"],
            "ffs": bits * (PF_SLOTS + (PF_SLOTS - 1) * mux["ffs"]), "mult": 0.0}


def gather_cost(cfg: EngineConfig, dev: Device) -> dict[str, float]:
    """The MVU's VRF read through V = ``EngineConfig.vrf_reads`` ports, fewer than T
    (``hdl/engine/mvu.py``, ``Mvu._gather``): per tile engine its block's select from the V ports
    and its held block, (V + 1):1 a bit, and the held block's flip-flops; per port its address's
    T:1 select; the T (T - 1) / 2 address comparisons, counted as one 2:1 multiplexer bit per
    address bit. The selects at the ``WidePort`` records' cost per bit (interpolated in the
    width); the comparisons are an approximation of the same order. Nothing with a port per tile
    engine (``vrf_reads`` = 0)."""
    from accelml.hdl.engine.layouts import mvu_gathers, vector_layout
    from accelml.hdl.engine.window import vrf_addr_bits

    if not mvu_gathers(cfg):
        return {"logic": 0.0, "ffs": 0.0, "mult": 0.0}
    t, v = cfg.tiles, cfg.vrf_reads
    vec, ab = vector_layout(cfg).size, vrf_addr_bits(cfg)
    costs = wide_port_costs(_flow(dev))
    if len(costs) < 2:
        raise ValueError("calibration.json holds fewer than two WidePort records for this flow: "
                         "run python -m accelml.bitstreams.calibrate --only WidePort")
    out = {"mult": 0.0}
    for k in ("logic", "ffs"):
        per = {x: c[k] for x, c in costs.items()}
        out[k] = (t * vec * _interpolate(per, v + 1) + v * ab * _interpolate(per, t)
                  + t * (t - 1) // 2 * ab * _interpolate(per, 2))
    out["ffs"] += t * vec
    return out


def part_select_costs(flow: str) -> dict[int, dict[str, float]]:
    """{P: {"logic": ..., "ffs": ...} per bit of a read's P:1 part select} from the ``FileParts``
    records of ``flow``: one user of one FVRF entry on the file in P parts, against the whole file
    (P = 1), per bit of the entry."""
    recs = {r["file_parts"]: _cells(flow, r["cells"]) for r in records()
            if r.get("block") == "FileParts" and r["flow"] == flow and "cells" in r}
    whole = recs.pop(1, None)
    if whole is None:
        return {}
    bits = 32 * next(r["native_dim"] for r in records() if r.get("block") == "FileParts" and r["flow"] == flow)
    return {p: {k: (c[k] - whole[k]) / bits for k in ("logic", "ffs")} for p, c in recs.items()}


def crossbar_cost(cfg: EngineConfig, dev: Device) -> dict[str, float]:
    """The register files' multiplexers: ``RegisterFiles.mux_bits`` of the engine's banked files
    (``top.file_plan``) at the per-bit cost measured for W = ``mfu_width`` (``calibration.json``,
    block ``WidePort``), linear in W between the measured widths (and beyond the widest, from the
    two widest); and a file in parts' selects (``RegisterFiles.part_mux_bits``): the reads' P:1 at
    the cost per bit the ``FileParts`` records measured (interpolated in P), the shared write
    ports' k:1 at the ``WidePort`` cost for W = k. Zero at W = 1 on whole files."""
    from accelml.hdl.engine.top import file_plan

    plan = file_plan(cfg)
    parts = plan.part_mux_bits()
    wide = {cfg.mfu_width: plan.mux_bits()} if cfg.mfu_width > 1 else {}
    for n, bits in parts["write"].items():
        wide[n] = wide.get(n, 0) + bits
    out = {"logic": 0.0, "ffs": 0.0}
    for groups, costs, block in ((wide, wide_port_costs(_flow(dev)), "WidePort"),
                                 (parts["read"], part_select_costs(_flow(dev)), "FileParts")):
        if not groups:
            continue
        if len(costs) < 2:
            raise ValueError(f"calibration.json holds fewer than two {block} records for this flow: "
                             f"run python -m accelml.bitstreams.calibrate --only {block}")
        for k in out:
            out[k] += sum(bits * _interpolate({x: c[k] for x, c in costs.items()}, n) for n, bits in groups.items())
    return out


def file_blocks(cfg: EngineConfig, dev: Device, *, read_ports: int | None = None,
                banked: bool | None = None) -> dict[Space, int]:
    """RAM blocks of each of the VRF, MRF and FVRF.

    ``banked=False`` (what the RTL builds, and the default on ECP5): each file is one memory with
    ``read_ports`` read ports (default: the RTL's, ``RegisterFiles.read_ports``: T for the MVU on
    the VRF and MRF, one shared by the other readers with ``file_ports="shared"``, one more for the
    MFU's second FVRF operand), which synthesis builds as that many full copies (a RAM block has one
    write and one read port). ``banked=True`` (the default on Intel devices): the VRF and MRF are
    split into T banks of depth/T, one read per bank per cycle, the general port sharing them; this
    needs an address placement free of bank conflicts (the MRF's is built, ``mrf_banked``; the
    VRF's **not**: a VRF read through ``vrf_reads`` ports is counted as built, a copy per read
    port). The FVRF has no T reads to bank for (the MVU reads an accumulating ``mvc``'s
    sums ahead through the MFU's port), so it is counted as built either way: a copy per read port.
    The FVRF's rows are ``mfu_width`` vectors wide, as the MFU reads them. The VRF and FVRF in
    ``file_parts`` parts count each part's blocks (a part shallower than a block wastes its rest).
    """
    t = cfg.tiles
    if banked is None:
        banked = dev.family != "ecp5"
    n, e = cfg.native_dim, cfg.exponent_bits
    vec = n * (cfg.mantissa_bits + 1) + e
    files = [(vec, cfg.vrf_vectors), (n * vec, cfg.mrf_tiles),
             (32 * n * cfg.mfu_width, math.ceil(cfg.fvrf_vectors / cfg.mfu_width))]
    if read_ports is None:  # the RTL's read ports per file (a copy each)
        from accelml.hdl.engine.top import file_plan

        ports = file_plan(cfg).read_ports()
        copies = [ports[space] for space in (Space.VRF, Space.MRF, Space.FVRF)]
    else:
        copies = [read_ports] * 3
    from accelml.hdl.engine.layouts import parts_of

    out = {}
    for space, c, (w, d) in zip((Space.VRF, Space.MRF, Space.FVRF), copies, files, strict=True):
        p = parts_of(cfg, space)  # the VRF and FVRF in parts
        if banked and (space is Space.MRF or space is Space.VRF and not cfg.vrf_reads):  # T banks of d / T
            out[space] = t * part_blocks(w, math.ceil(d / t), p, dev)
        else:
            out[space] = c * part_blocks(w, d, p, dev)
    return out


def register_file_blocks(cfg: EngineConfig, dev: Device, *, read_ports: int | None = None,
                         banked: bool | None = None) -> int:
    """RAM blocks of the VRF, MRF and FVRF together (:func:`file_blocks`)."""
    return sum(file_blocks(cfg, dev, read_ports=read_ports, banked=banked).values())


def _engine_records() -> list[tuple[EngineConfig, dict]]:
    """The whole engine's synthesis at the calibration points (``calibration.json``, block
    ``Engine``: records of ``python -m accelml.bitstreams.engine_synth`` with their EngineConfig):
    (its EngineConfig, its cells)."""
    out = []
    for r in records():
        if r.get("block") == "Engine":
            cfg = EngineConfig.from_dict(r["config"])
            if cfg.hash != r["config_hash"]:
                raise ValueError(f"calibration.json: the Engine record {r['preset']!r} does not match "
                                 "its config")
            out.append((cfg, _cells(r["flow"], r["cells"])))
    return out


def control_overhead(cfg: EngineConfig, dev: Device) -> dict[str, float]:
    """Everything but the tile engines, the MFU, the crossbars and the register files' RAM: control,
    the DMAs, the pool unit, the MVU's window generator and write-back, the register files' port
    logic and the instruction memory.

    Measured on ECP5 only: the whole engine's synthesis at N = 4 (the ``ecp5`` preset) and N = 8
    (``calibration.json``, block ``Engine``) minus its tile engines, MFU and crossbars as this model
    counts them; the rest is fitted linear in N between the two (the DMA, pool and window paths are
    N wide). On Intel the logic is converted at the tile engine's ALM per LUT4 ratio and the
    multipliers counted one 18x19 each: an ECP5-measured figure, not an Intel synthesis. RAM: the
    instruction memory in the device's blocks (on ECP5 exactly the DP16KD the whole engine has
    beyond the register files, tests/bitstreams checks).
    """
    ecp5 = DEVICES["LFE5U-85F"]
    pts = []
    for c, cells in _engine_records():
        mfu, xbar, pool = mfu_cost(c, ecp5), crossbar_cost(c, ecp5), pool_cost(c, ecp5)
        tiles, pf = _tile_engines(c, "ecp5"), prefetch_cost(c, ecp5)
        pts.append((c.native_dim, {k: cells[k] - tiles[k] - mfu.get(k, 0) - xbar.get(k, 0) - pool[k] - pf[k]
                                   for k in ("logic", "ffs", "mult")}))
    if len({n for n, _ in pts}) < 2:
        raise ValueError("calibration.json holds fewer than two Engine records at different N: "
                         "run python -m accelml.bitstreams.engine_synth and copy its records there")
    pts.sort(key=lambda p: p[0])
    (n0, a), (n1, b) = pts[0], pts[-1]
    n = cfg.native_dim
    out = {k: max(0.0, a[k] + (b[k] - a[k]) * (n - n0) / (n1 - n0)) for k in a}
    if dev.family != "ecp5":
        out["logic"] *= _logic_ratio(n, cfg.mantissa_bits)
    out["ram"] = _ram_blocks(INSN_BITS, IMEM_DEPTH, dev)
    return out


@dataclass(frozen=True)
class Estimate:
    cfg: EngineConfig
    device: Device
    logic: float  # LUT4 or ALMs
    ffs: float
    multipliers: int
    lut_multiplied_macs: int  # products beyond the hard multipliers, in logic
    ram_blocks: int
    # {"tiles"|"mfu"|"control"|"crossbars"|"pool"|"prefetch"|"gather"|"files": {resource: n}}
    parts: dict = field(default_factory=dict, compare=False)

    @property
    def shares(self) -> dict[str, float]:
        d = self.device
        return {"logic": self.logic / d.logic, "ffs": self.ffs / d.ffs, "multipliers": self.multipliers / d.multipliers,
                "ram": self.ram_blocks / d.ram_blocks}

    @property
    def fits(self) -> bool:
        return all(v <= 1.0 for v in self.shares.values())

    @property
    def limit(self) -> str:
        """The resource with the largest share of the device (logic when the hard multipliers are full
        and products went to logic: that is what one more tile engine would overflow)."""
        shares = {k: v for k, v in self.shares.items() if not (k == "multipliers" and self.lut_multiplied_macs)}
        return max(shares.items(), key=lambda kv: kv[1])[0]


def estimate(cfg: EngineConfig, device: Device | str | None = None, *, banked: bool | None = None) -> Estimate:
    """The whole engine of ``cfg`` on ``device`` (default: the preset's named device).

    Tile engines + MFU + control + register files (see the module doc); ``banked`` as in
    :func:`register_file_blocks`. Tile-engine products beyond the hard multipliers left by the MFU
    and control go to LUT multipliers (``lut_multiplied_macs``).
    """
    if device is None:
        if cfg.name not in PRESET_DEVICES:
            raise ValueError(f"preset {cfg.name!r} names no device; pass one of {', '.join(DEVICES)}")
        device = PRESET_DEVICES[cfg.name]
    dev = DEVICES[device] if isinstance(device, str) else device
    flow = _flow(dev)
    tiles = _tile_engines(cfg, flow)
    tiles["mult"] = round(tiles["mult"])  # narrow products may already sit in logic
    mfu = mfu_cost(cfg, dev)
    ctl = control_overhead(cfg, dev)
    xbar = crossbar_cost(cfg, dev)
    pool = pool_cost(cfg, dev)
    pf = prefetch_cost(cfg, dev)
    gather = gather_cost(cfg, dev)
    files = register_file_blocks(cfg, dev, banked=banked)
    fixed_mult = round(mfu["mult"] + ctl["mult"] + pool["mult"])
    spill = max(0, min(tiles["mult"], tiles["mult"] + fixed_mult - dev.multipliers))
    logic = sum(c["logic"] for c in (tiles, mfu, ctl, xbar, pool, pf, gather))
    if spill:
        cal = calibration()
        logic += spill * (cal[(f"{flow}-nodsp", 4, 7)]["logic"] - cal[(flow, 4, 7)]["logic"]) / 16
    parts = {"tiles": tiles, "mfu": mfu, "control": ctl, "crossbars": xbar, "pool": pool, "prefetch": pf,
             "gather": gather, "files": {"ram": files}}
    return Estimate(cfg, dev, logic, sum(c["ffs"] for c in (tiles, mfu, ctl, xbar, pool, pf, gather)),
                    tiles["mult"] - spill + fixed_mult, spill, files + ctl["ram"], parts)


def scaled(cfg: EngineConfig, tiles: int) -> EngineConfig:
    """``cfg`` with ``tiles`` tile engines and the MRF scaled with them (each bank keeps its depth;
    a banked MRF stays T banks of equal depth), the VRF's reads no more than the tile engines."""
    mrf = cfg.mrf_tiles // cfg.tiles * tiles if cfg.mrf_banked else cfg.mrf_tiles * tiles // cfg.tiles
    return dataclasses.replace(cfg, tiles=tiles, mrf_tiles=max(tiles, mrf), vrf_reads=min(cfg.vrf_reads, tiles))


def largest_tiles(cfg: EngineConfig, device: Device | str | None = None) -> int:
    """The most tile engines of ``cfg``'s N and M (MRF scaled with them) that fit (0: not even one)."""
    device = device if device is not None else PRESET_DEVICES.get(cfg.name)
    lo, hi = 0, 4096
    while lo < hi:  # every resource grows with the tile count: bisect on "fits"
        mid = (lo + hi + 1) // 2
        if estimate(scaled(cfg, mid), device).fits:
            lo = mid
        else:
            hi = mid - 1
    return lo


LATENCY = Path(__file__).with_name("latency.json")
README = Path(__file__).with_name("README.md")
PRECISIONS = ("fast", "balanced")  # balanced: the compiler's default precision policy


def measure_latency(names=tuple(PRESET_DEVICES), progress=print) -> dict:
    """Compile the full-size ResNet-50 (the seed builder, synthetic weights) for each preset at each of
    ``PRECISIONS``; the modelled cycles and latency per preset, recorded in ``latency.json``."""
    from accelml.compiler import compile_model, models

    new = {}
    for name in names:
        cfg = PRESETS[name]
        rec = {"config_hash": cfg.hash}
        for precision in PRECISIONS:
            progress(f"compiling resnet50 (full) for {name} at precision {precision} ...")
            try:
                s = compile_model(models.build("resnet50", "full"), config=cfg, precision=precision,
                                  name="resnet50").summary()
                rec[precision] = {"cycles": int(s["cycles"]), "latency_ms": s["latency_us"] / 1000}
            except Exception as e:  # a model that does not compile for a preset is a finding to record
                rec[precision] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:200]}
            progress(f"      {rec[precision]}")
        new[name] = rec
    out = {**latencies(), **new}  # read last: another preset's records written meanwhile are kept
    _write(LATENCY, json.dumps({"command": "python -m accelml.bitstreams.resources --measure",
                                "model": "resnet50 full, 224x224, synthetic weights", "presets": out},
                               indent=1, sort_keys=True) + "\n")
    return new


def latencies() -> dict:
    """The recorded ResNet-50 latencies by preset ({} when none are recorded)."""
    return json.loads(LATENCY.read_text())["presets"] if LATENCY.is_file() else {}


def _latency_cell(name: str) -> str:
    rec = latencies().get(name)
    if not rec or rec.get("config_hash") != PRESETS[name].hash:
        return "not measured for this config"
    cells = []
    for p in PRECISIONS:
        r = rec.get(p, {})
        cells.append(f"{r['latency_ms']:,.2f} ms" if "latency_ms" in r else "does not compile")
    return " / ".join(cells)


def _write(path: Path, text: str) -> None:
    write_file_atomic(path, text.encode())


def table() -> str:
    """Markdown table of the presets that name a device."""
    rows = ["| preset | device | MACs/cycle | clock | logic | FFs | multipliers | RAM blocks | fits | "
            "limit | largest T that fits | ResNet-50 latency, fast / balanced |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in PRESET_DEVICES:
        cfg = PRESETS[name]
        est = estimate(cfg)
        d = est.device
        sh = est.shares
        spill = f" (+{est.lut_multiplied_macs:,} in logic)" if est.lut_multiplied_macs else ""
        rows.append(
            f"| {name} | {d.name} | {cfg.peak_macs_per_cycle:,} | {cfg.clock_mhz:g} MHz | "
            f"{est.logic:,.0f} / {d.logic:,} {d.logic_unit} ({100 * sh['logic']:.0f} %) | "
            f"{est.ffs:,.0f} ({100 * sh['ffs']:.0f} %) | {est.multipliers:,} / {d.multipliers:,}"
            f" ({100 * sh['multipliers']:.0f} %){spill} | "
            f"{est.ram_blocks:,} / {d.ram_blocks:,} ({100 * sh['ram']:.0f} %) | {'yes' if est.fits else '**no**'} | "
            f"{est.limit} | {largest_tiles(cfg)} (of {cfg.tiles}) | {_latency_cell(name)} |")
    return "\n".join(rows)


def write_readme() -> None:
    """Put :func:`table` between the README's table markers."""
    text = README.read_text()
    head, rest = text.split("<!-- table -->\n", 1)
    _, tail = rest.split("\n<!-- /table -->", 1)
    _write(README, f"{head}<!-- table -->\n{table()}\n<!-- /table -->{tail}")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="The presets against their devices (the table of bitstreams/README.md).")
    ap.add_argument("--measure", action="store_true",
                    help="re-measure the ResNet-50 latencies (compiles, minutes) and rewrite the README table")
    ap.add_argument("--readme", action="store_true", help="rewrite the README table")
    ap.add_argument("--presets", nargs="+", choices=list(PRESET_DEVICES), default=list(PRESET_DEVICES),
                    help="the presets --measure compiles for (default: all that name a device)")
    args = ap.parse_args(argv)
    if args.measure:
        measure_latency(args.presets, progress=lambda s: print(s, flush=True))
    if args.measure or args.readme:
        write_readme()
    print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
