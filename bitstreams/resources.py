"""The resource model: does a preset's engine fit its named device?

    est = estimate(preset("a10"))          # Estimate: logic, FFs, multipliers, RAM blocks vs the device
    print(table())                          # the presets table of bitstreams/README.md

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
  multipliers of an Intel DSP block) while they last; products beyond them cost the LUT-multiplier
  logic measured with the ``-nodsp`` flows. Packing two narrow products into one multiplier is not
  assumed.
* **Register files**: VRF, MRF (banked per tile engine, as each tile engine reads its own weights
  every cycle) and FVRF bits, in the device's RAM blocks at their widest shape that holds the depth.
* **Not yet counted**: the sequencer, window address generator, MFU, DMA and control (the engine's
  RTL is being built); the estimate is a lower bound and says so. Clock rates are the presets'
  targets; no place-and-route has confirmed them.

Device counts are the vendors' datasheet figures (sources in ``DEVICES``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from accelml.hdl.config import PRESETS, EngineConfig

from .synth import alms

__all__ = ["Device", "DEVICES", "PRESET_DEVICES", "Estimate", "estimate", "largest_tiles", "table",
           "calibration", "scaled"]


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


@lru_cache(maxsize=4)
def calibration(path: str = str(_CAL)) -> dict:
    """{(flow, N, M): {"logic": ..., "ffs": ..., "mult": ...}} from the synthesis records."""
    records = json.loads(Path(path).read_text())["records"]
    out = {}
    for r in records:
        if "cells" not in r:  # a point Yosys failed on
            continue
        cells, flow = r["cells"], r["flow"]
        if flow.startswith("ecp5"):
            logic = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
            ffs = cells.get("TRELLIS_FF", 0)
            mult = cells.get("MULT18X18D", 0)
        else:
            logic = alms(cells)
            ffs = cells.get("MISTRAL_FF", 0)
            mult = sum(v for k, v in cells.items() if k.startswith("MISTRAL_MUL"))
        out[(flow, r["native_dim"], r["mantissa_bits"])] = {"logic": logic, "ffs": ffs, "mult": mult}
    return out


def _fit(flow: str, key: str, n: int, m: int) -> float:
    """One tile engine's ``key`` cost at (N, M) from the fitted a*N^2 + b*N + c per measured M."""
    cal = calibration()
    widths = sorted({mm for (f, _, mm) in cal if f == flow})
    values = {}
    for mm in widths:
        pts = sorted((nn, v[key]) for (f, nn, m2), v in cal.items() if f == flow and m2 == mm)
        ns = np.array([p[0] for p in pts], float)
        coef = np.linalg.lstsq(np.stack([ns**2, ns, np.ones_like(ns)], 1), np.array([p[1] for p in pts], float),
                               rcond=None)[0]
        values[mm] = float(coef @ [n * n, n, 1])
    if m in values:
        return values[m]
    lo = max([w for w in widths if w < m], default=widths[0])
    hi = min([w for w in widths if w > m], default=widths[-1])
    if lo == hi:  # outside the measured widths: extrapolate from the two nearest
        lo, hi = widths[0], widths[1]
    t = (m - lo) / (hi - lo)
    return values[lo] + t * (values[hi] - values[lo])


def _ram_blocks(width: int, depth: int, dev: Device) -> int:
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in dev.ram_shapes)


@dataclass(frozen=True)
class Estimate:
    cfg: EngineConfig
    device: Device
    logic: float  # LUT4 or ALMs
    ffs: float
    multipliers: int
    lut_multiplied_macs: int  # products beyond the hard multipliers, in logic
    ram_blocks: int

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
        """The resource with the largest share of the device."""
        return max(self.shares.items(), key=lambda kv: kv[1])[0]


def estimate(cfg: EngineConfig, device: Device | str | None = None) -> Estimate:
    """The MVU and register files of ``cfg`` on ``device`` (default: the preset's named device)."""
    if device is None:
        if cfg.name not in PRESET_DEVICES:
            raise ValueError(f"preset {cfg.name!r} names no device; pass one of {', '.join(DEVICES)}")
        device = PRESET_DEVICES[cfg.name]
    dev = DEVICES[device] if isinstance(device, str) else device
    flow = "ecp5" if dev.family == "ecp5" else "alm"
    n, m, t = cfg.native_dim, cfg.mantissa_bits, cfg.tiles
    logic = t * _fit(flow, "logic", n, m)
    ffs = t * _fit(flow, "ffs", n, m)
    macs = cfg.peak_macs_per_cycle
    hard_per_mac = _fit(flow, "mult", n, m) / (n * n)  # narrow products may already sit in logic
    wanted = round(macs * hard_per_mac)
    hard = min(wanted, dev.multipliers)
    spill = wanted - hard
    if spill:
        cal = calibration()
        with_dsp = cal[(flow, 4, 7)]["logic"]
        without = cal[(f"{flow}-nodsp", 4, 7)]["logic"]
        logic += spill * (without - with_dsp) / 16
    e = cfg.exponent_bits
    vec = n * (m + 1) + e
    ram = _ram_blocks(vec, cfg.vrf_vectors, dev)  # VRF: one vector read broadcast to every tile engine
    ram += t * _ram_blocks(n * vec, math.ceil(cfg.mrf_tiles / t), dev)  # MRF: a bank per tile engine
    ram += _ram_blocks(32 * n * cfg.mfu_width, math.ceil(cfg.fvrf_vectors / cfg.mfu_width), dev)  # FVRF
    return Estimate(cfg, dev, logic, ffs, hard, spill, ram)


def scaled(cfg: EngineConfig, tiles: int) -> EngineConfig:
    """``cfg`` with ``tiles`` tile engines and the MRF scaled with them (each bank keeps its depth)."""
    return dataclasses.replace(cfg, tiles=tiles, mrf_tiles=max(tiles, cfg.mrf_tiles * tiles // cfg.tiles))


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


def table() -> str:
    """Markdown table of the presets that name a device."""
    rows = ["| preset | device | MACs/cycle | clock | logic | FFs | multipliers | RAM blocks | fits | "
            "limit | largest T that fits |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in PRESET_DEVICES:
        cfg = PRESETS[name]
        est = estimate(cfg)
        d = est.device
        sh = est.shares
        spill = f" (+{est.lut_multiplied_macs:,} in logic)" if est.lut_multiplied_macs else ""
        rows.append(
            f"| {name} | {d.name} | {cfg.peak_macs_per_cycle:,} | {cfg.clock_mhz:g} MHz | "
            f"{est.logic:,.0f} / {d.logic:,} {d.logic_unit} ({100 * sh['logic']:.0f} %) | "
            f"{est.ffs:,.0f} ({100 * sh['ffs']:.0f} %) | {est.multipliers:,} / {d.multipliers:,}{spill} | "
            f"{est.ram_blocks:,} / {d.ram_blocks:,} ({100 * sh['ram']:.0f} %) | {'yes' if est.fits else '**no**'} | "
            f"{est.limit} | {largest_tiles(cfg)} (of {cfg.tiles}) |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
