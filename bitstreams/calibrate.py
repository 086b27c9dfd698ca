"""Measure the resource model's calibration points: the tile engine synthesised with Yosys at several
native dimensions and mantissa widths, for ECP5 and for the ALM proxy (see synth.py).

    python -m accelml.bitstreams.calibrate [-o bitstreams/calibration.json]

Writes one record per (flow, N, M) with the cell counts, the Yosys version and the time taken. The
resource model (resources.py) fits per-MAC, per-row and fixed costs to these records; nothing in it
is typed in by hand except the devices' datasheet counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from accelml.hdl.config import preset
from accelml.hdl.errors import RtlError
from accelml.hdl.tile_engine import TileEngine

from .synth import synthesize

__all__ = ["POINTS", "calibrate", "engine_config"]

# (flow, native_dim, mantissa_bits): four sizes per width over-determine a*N^2 + b*N + c (a point
# Yosys fails on is recorded with its error and left out of the fit)
POINTS = [(flow, n, m) for flow in ("ecp5", "alm") for m in (3, 7) for n in (2, 4, 8, 16)]
POINTS += [("ecp5-nodsp", 4, 7), ("alm-nodsp", 4, 7)]  # the LUT cost of a multiplier outside the DSPs
DEFAULT_OUT = Path(__file__).with_name("calibration.json")


def engine_config(n: int, m: int):
    return dataclasses.replace(preset("tiny"), name=f"cal-n{n}-m{m}", native_dim=n, mantissa_bits=m, tiles=1)


def calibrate(points=POINTS, out: Path = DEFAULT_OUT, progress=print) -> list[dict]:
    records = []
    for i, (flow, n, m) in enumerate(points):
        progress(f"[{i + 1}/{len(points)}] synthesising the tile engine N={n} M={m} with {flow} ...")
        rec = {"block": "TileEngine", "flow": flow, "native_dim": n, "mantissa_bits": m}
        try:
            r = synthesize(TileEngine(engine_config(n, m)), flow=flow)
        except RtlError as e:
            records.append({**rec, "error": str(e)})
            progress(f"      failed: {e}")
            continue
        records.append({**rec, "cells": r.cells, "seconds": round(r.seconds, 1), "yosys": r.yosys})
        progress(f"      {r.seconds:.0f} s: {json.dumps(r.cells, sort_keys=True)}")
    out.write_text(json.dumps({"command": "python -m accelml.bitstreams.calibrate", "records": records}, indent=1)
                   + "\n")
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    calibrate(out=args.output, progress=lambda s: print(s, flush=True))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
