"""Measure the resource model's calibration points: the tile engine synthesised with Yosys at several
native dimensions and mantissa widths, for ECP5 and for the ALM proxy (see synth.py).

    python -m accelml.bitstreams.calibrate [-o bitstreams/calibration.json] [--only TileEngine|Mfu|WidePort|FileParts]
    python -m accelml.bitstreams.calibrate --engine ecp5     (adopt a whole-engine synthesis record)

Writes one record per (block, flow, N, M[, W]) with the cell counts, the Yosys version and the time
taken: the tile engine (``hdl/tile_engine.py``), the multi-function unit (``hdl/mfu.py``, one
N-vector per cycle: its cost per lane) and a wide register-file port (``hdl/engine/regfiles.py``: one
user reading and writing W = ``mfu_width`` FVRF entries a cycle, so the file is W banks behind two
rotation crossbars of W lanes: their cost per W:1 multiplexer bit) and a file in parts (one user
of one entry on the FVRF in P = 1, 2, 4, 8 parts: what each read's part select costs per bit
against the whole file). ``--only`` re-measures one
block and keeps the others' records. The
resource model (resources.py) fits per-MAC, per-row and fixed costs to these records; nothing in it
is typed in by hand except the devices' datasheet counts.

``--engine PRESET`` adopts preset ``PRESET``'s whole-engine record (``engine_synth.json``, written by
``python -m accelml.bitstreams.engine_synth``) as the block ``Engine`` record at its native dimension,
replacing the one there: the rest of the engine (control, DMAs, pool, window generator) is fitted to
those records. Refused unless the record measured the Verilog the RTL emits now.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from accelml.hdl.config import EngineConfig, preset
from accelml.hdl.engine.regfiles import RegisterFiles
from accelml.hdl.errors import RtlError
from accelml.hdl.isa import Space
from accelml.hdl.mfu import Mfu
from accelml.hdl.tile_engine import TileEngine
from accelml.runtime.storage import write_file_atomic

from .synth import synthesize

__all__ = ["POINTS", "calibrate", "engine_config", "adopt_engine"]

# (flow, native_dim, mantissa_bits): four sizes per width over-determine a*N^2 + b*N + c (a point
# Yosys fails on is recorded with its error and left out of the fit)
POINTS = [(flow, n, m) for flow in ("ecp5", "alm") for m in (3, 7) for n in (2, 4, 8, 16)]
POINTS += [("ecp5-nodsp", 4, 7), ("alm-nodsp", 4, 7)]  # the LUT cost of a multiplier outside the DSPs
# the MFU computes binary32 whatever M is: its cost is per lane (N lanes x mfu_width); two sizes
# show how well "per lane" holds
MFU_POINTS = [("ecp5", 4, 7), ("ecp5", 8, 7)]  # ECP5 only (10 minutes at N=8); no ALM-flow point yet
# (flow, N, M, W): a crossbar is the same multiplexer per bit, so one narrow entry (N = 2: 64-bit
# FVRF entries) measures the per-bit cost at each port width W
WIDE_POINTS = [(flow, 2, 7, w) for flow in ("ecp5", "alm") for w in (2, 4, 8, 16)]


# (flow, N, M, W, P): the FVRF in P parts (EngineConfig.file_parts) with one user reading and
# writing one entry a cycle: each read selects its part (P:1 over the entry's bits); P = 1 is the
# whole file the others are measured against
PART_POINTS = [(flow, 2, 7, 1, p) for flow in ("ecp5", "alm") for p in (1, 2, 4, 8)]


def wide_port(cfg) -> RegisterFiles:
    """The register files with one user reading and writing ``cfg.mfu_width`` FVRF entries a cycle."""
    return RegisterFiles(cfg, {"wide": {Space.FVRF: "rw"}}, {"wide": cfg.mfu_width})


def file_parts(cfg) -> RegisterFiles:
    """The register files with one user reading and writing one FVRF entry a cycle, the files in
    ``cfg.file_parts`` parts."""
    return RegisterFiles(cfg, {"one": {Space.FVRF: "rw"}})


BLOCKS = {"TileEngine": (TileEngine, POINTS), "Mfu": (Mfu, MFU_POINTS), "WidePort": (wide_port, WIDE_POINTS),
          "FileParts": (file_parts, PART_POINTS)}
DEFAULT_OUT = Path(__file__).with_name("calibration.json")


def engine_config(n: int, m: int, w: int = 1, p: int = 1):
    name = f"cal-n{n}-m{m}" + (f"-w{w}" if w > 1 else "") + (f"-p{p}" if p > 1 else "")
    return dataclasses.replace(preset("tiny"), name=name, native_dim=n, mantissa_bits=m, tiles=1, mfu_width=w,
                               file_parts=p)


def calibrate(blocks=tuple(BLOCKS), out: Path = DEFAULT_OUT, progress=print) -> list[dict]:
    """Synthesise the points of ``blocks``; records of other blocks already in ``out`` are kept."""
    old = json.loads(out.read_text())["records"] if out.is_file() else []
    records = [r for r in old if r.get("block", "TileEngine") not in blocks]
    todo = [(b, *p) for b in blocks for p in BLOCKS[b][1]]
    for i, (block, flow, n, m, *wp) in enumerate(todo):
        width = f" W={wp[0]}" if wp else ""
        parts = f" P={wp[1]}" if len(wp) > 1 else ""
        progress(f"[{i + 1}/{len(todo)}] synthesising {block} N={n} M={m}{width}{parts} with {flow} ...")
        rec = {"block": block, "flow": flow, "native_dim": n, "mantissa_bits": m,
               **({"mfu_width": wp[0]} if wp else {}), **({"file_parts": wp[1]} if len(wp) > 1 else {})}
        try:
            r = synthesize(BLOCKS[block][0](engine_config(n, m, *wp)), flow=flow)
        except RtlError as e:
            records.append({**rec, "error": str(e)})
            progress(f"      failed: {e}")
            continue
        records.append({**rec, "cells": r.cells, "seconds": round(r.seconds, 1), "yosys": r.yosys})
        progress(f"      {r.seconds:.0f} s: {json.dumps(r.cells, sort_keys=True)}")
    # atomically: an interrupted run leaves the old records
    write_file_atomic(out, (json.dumps({"command": "python -m accelml.bitstreams.calibrate", "records": records},
                                       indent=1) + "\n").encode())
    return records


def adopt_engine(name: str, out: Path = DEFAULT_OUT, *, synth_records: Path | None = None,
                 verilog_sha256: str | None = None) -> dict:
    """Put preset ``name``'s record from ``engine_synth.json`` into ``out`` as the block ``Engine``
    record at its native dimension (replacing the one there), written atomically; returns it.
    ``RtlError`` when there is no record, or when it measured other Verilog than the RTL emits now
    (``verilog_sha256``: computed from the present RTL unless given)."""
    from accelml.hdl.emit import engine_verilog

    from .engine_synth import RECORDS, recorded

    rec = recorded(synth_records or RECORDS).get(name)
    if rec is None:
        raise RtlError(f"engine_synth.json holds no record of preset {name!r}: "
                       f"run python -m accelml.bitstreams.engine_synth --presets {name}")
    if verilog_sha256 is None:
        cfg = EngineConfig.from_dict(rec["config"])
        verilog_sha256 = engine_verilog(cfg, imem_depth=rec["imem_depth"])[1]["verilog_sha256"]
    if rec["verilog_sha256"] != verilog_sha256:
        raise RtlError(f"the engine_synth.json record of {name!r} measured other Verilog than the RTL emits now "
                       f"(sha256 {rec['verilog_sha256'][:12]}... against {verilog_sha256[:12]}...): "
                       f"run python -m accelml.bitstreams.engine_synth --presets {name}")
    cal = json.loads(out.read_text())
    n = rec["config"]["native_dim"]
    kept = [r for r in cal["records"] if not (r.get("block") == "Engine" and r["config"]["native_dim"] == n)]
    new = {"block": "Engine", "flow": rec["flow"], "preset": name,
           "command": f"python -m accelml.bitstreams.engine_synth --presets {name} (the whole engine)",
           **{k: v for k, v in rec.items() if k not in ("preset", "flow")}}
    write_file_atomic(out, (json.dumps({**cal, "records": [*kept, new]}, indent=1) + "\n").encode())
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", choices=sorted(BLOCKS), help="re-measure one block, keep the others' records")
    ap.add_argument("--engine", metavar="PRESET",
                    help="adopt PRESET's whole-engine record from engine_synth.json (block Engine); no synthesis")
    args = ap.parse_args(argv)
    if args.engine:
        try:
            rec = adopt_engine(args.engine, out=args.output)
        except (RtlError, KeyError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.output}: block Engine at N = {rec['config']['native_dim']} from preset {args.engine!r} "
              f"({json.dumps(rec['cells'], sort_keys=True)})")
        return 0
    blocks = (args.only,) if args.only else tuple(BLOCKS)
    calibrate(blocks, out=args.output, progress=lambda s: print(s, flush=True))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
