"""synth_ecp5 of the whole engine (``hdl.engine.top.Engine``: control, DMA, MFU, register files)
per preset, recorded in ``engine_synth.json`` beside this file.

    python -m accelml.bitstreams.engine_synth [--presets tiny ecp5] [--imem-depth 4096]
    python -m accelml.bitstreams.engine_synth --config CONFIG.json --name NAME   (any EngineConfig)

Each record holds the preset, its EngineConfig hash, the SHA-256 of the engine's Verilog (so a
record shows which RTL it measured), the instruction-memory depth, every cell
count Yosys reports, the wall seconds of the synthesis and Yosys's version. ``fit(record)`` checks
the counts against the LFE5U-85F (``resources.DEVICES``): LUT4 (+ two per CCU2C carry cell, as
``resources.py`` counts logic), MULT18X18D and DP16KD. The tests marked ``synth``
(tests/bitstreams/test_engine_synth.py) re-synthesise and re-record.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from accelml.hdl.config import EngineConfig, preset
from accelml.hdl.emit import DEFAULT_IMEM_DEPTH, ENGINE_TOP, engine_verilog
from accelml.hdl.errors import RtlError
from accelml.runtime.storage import write_file_atomic

from .resources import DEVICES
from .synth import synthesize

__all__ = ["RECORDS", "synthesize_engine", "record", "recorded", "fit", "CELLS", "multi_writer_files"]

RECORDS = Path(__file__).with_name("engine_synth.json")
CELLS = ("LUT4", "CCU2C", "TRELLIS_FF", "MULT18X18D", "DP16KD", "PFUMX", "L6MUX21", "TRELLIS_DPR16X4")


def multi_writer_files(cfg) -> dict[str, int]:
    """The engine's register files with more than one write port ({file: ports}): no RAM block
    has more than one, so synthesis builds them from flip-flops (bitstreams/README.md)."""
    from accelml.hdl.engine.top import file_plan

    ports = file_plan(cfg).write_ports()
    return {space.name: n for space, n in ports.items() if n > 1}


def synthesize_engine(name: str, *, imem_depth: int = DEFAULT_IMEM_DEPTH, force: bool = False,
                      cfg: EngineConfig | None = None) -> dict:
    """synth_ecp5 of the engine of preset ``name`` (or of ``cfg``, recorded as ``name``): one record
    (see the module doc). Refused with ``RtlError`` while register files have several write ports
    (``multi_writer_files``: Yosys would build them from flip-flops and run for hours), unless
    ``force``."""
    cfg = preset(name) if cfg is None else cfg
    many = multi_writer_files(cfg)
    if many and not force:
        files = ", ".join(f"{k} ({n} write ports)" for k, n in many.items())
        raise RtlError(f"{name}: the engine's {files} cannot be built from RAM blocks (one write port each); "
                       "synth_ecp5 would map them to flip-flops and run past its hour (bitstreams/README.md); "
                       "--force tries anyway")
    text, manifest = engine_verilog(cfg, imem_depth=imem_depth)  # what accelml hdl emit writes
    result = synthesize(text, flow="ecp5", top=ENGINE_TOP)
    return {"preset": name, "config": cfg.to_dict(), "config_hash": cfg.hash,
            "verilog_sha256": manifest["verilog_sha256"],
            "imem_depth": imem_depth, "flow": "ecp5",
            "cells": {k: v for k, v in sorted(result.cells.items()) if not k.startswith("$")},
            "seconds": round(result.seconds, 1), "yosys": result.yosys}


def recorded(path: Path = RECORDS) -> dict[str, dict]:
    """The recorded figures by preset name ({} when none are recorded)."""
    if not path.is_file():
        return {}
    return {r["preset"]: r for r in json.loads(path.read_text())["records"]}


def record(rec: dict, path: Path = RECORDS) -> None:
    """Put ``rec`` into the records (replacing the preset's earlier one), written atomically."""
    records = recorded(path)
    records[rec["preset"]] = rec
    text = json.dumps({"command": "python -m accelml.bitstreams.engine_synth",
                       "records": [records[k] for k in sorted(records)]}, indent=1) + "\n"
    write_file_atomic(path, text.encode())


def fit(rec: dict, device: str = "LFE5U-85F") -> dict[str, tuple[int, int]]:
    """{resource: (used, available)} of ``rec`` on ``device``: logic (LUT4 + 2 x CCU2C), multipliers,
    RAM blocks."""
    dev = DEVICES[device]
    c = rec["cells"]
    return {"LUT4": (c.get("LUT4", 0) + 2 * c.get("CCU2C", 0), dev.logic),
            "MULT18X18D": (c.get("MULT18X18D", 0), dev.multipliers),
            "DP16KD": (c.get("DP16KD", 0), dev.ram_blocks)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "ecp5"])
    ap.add_argument("--config", type=Path, help="instead: the EngineConfig in this JSON file (EngineConfig.to_dict)")
    ap.add_argument("--name", help="--config: the record's name (default: the config's)")
    ap.add_argument("--imem-depth", type=int, default=DEFAULT_IMEM_DEPTH)
    ap.add_argument("--force", action="store_true",
                    help="synthesise even when register files have several write ports (hours, flip-flops)")
    args = ap.parse_args(argv)
    jobs = [(name, None) for name in args.presets]
    if args.config is not None:
        try:
            cfg = EngineConfig.from_dict(json.loads(args.config.read_text()))
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise SystemExit(f"engine_synth: {args.config}: not an EngineConfig: {e}") from None
        jobs = [(args.name or cfg.name, cfg)]
    for name, cfg in jobs:
        try:
            rec = synthesize_engine(name, imem_depth=args.imem_depth, force=args.force, cfg=cfg)
        except RtlError as e:
            raise SystemExit(f"engine_synth: {e}") from None
        record(rec)
        used = ", ".join(f"{k} {u:,} / {a:,}" for k, (u, a) in fit(rec).items())
        print(f"{name}: {rec['seconds']:.0f} s; {used}; cells {rec['cells']}", flush=True)


if __name__ == "__main__":
    main()
