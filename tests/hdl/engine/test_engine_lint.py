"""``verilator --lint-only -Wall`` on the engine's Verilog as ``accelml hdl emit`` writes it (``tiny``, one
with banked files in parts, and one with a banked MRF and the VRF read through fewer ports).

Every warning must match ``WAIVED`` (its class, and for the width classes the form of the
message); each is waived for a stated reason about the form of the Verilog that Amaranth's backend
(Yosys ``write_verilog``) produces, not about this design. Any other warning (UNDRIVEN,
MULTIDRIVEN, LATCH, UNOPTFLAT, BLKSEQ, PINMISSING, a width change on an assignment, ...) and any
error fails.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest

from accelml.hdl.config import preset
from accelml.hdl.emit import ENGINE_TOP, engine_verilog
from accelml.sim import rtl

WAIVED = {  # class -> (message pattern, reason)
    # Amaranth writes the whole hierarchy into one file, each submodule named by its path
    # ("accelml_engine.dut"), so only the top module can match the file name.
    "DECLFILENAME": (r".*", "several modules in one file"),
    # Amaranth's process style: `reg x = init;` then an always block that assigns x (its reset and
    # default values); the declaration's initial value is the register's power-up value.
    "PROCASSINIT": (r".*", "declaration initial value + procedural assignment"),
    # `casez (fsm_state)` over an FSM's used encodings without `default`: the process assigns every
    # output before the case, so an unlisted value keeps them (Amaranth never emits `default` there).
    "CASEINCOMPLETE": (r".*", "case without default after default assignments"),
    # write_verilog emits each operand at its own width and leaves the extension to Verilog's
    # context-determined sizing ($signed(a) + $signed(b) with a narrower b), and a reduce-bool as `!`
    # of a vector; the widths are Amaranth's, checked by its own type rules before emission.
    "WIDTHEXPAND": (r"Operator (?!ASSIGN)\w+ expects \d+ bits on the [LR]HS",
                    "operands at natural width, extended by context"),
    "WIDTHTRUNC": (r"Logical operator LOGNOT expects 1 bit on the LHS", "`!` of a vector (reduce-bool)"),
    # Amaranth keeps a wire for every named Signal and every field of a struct view (a port's
    # `mem__req__payload.addr`, a helper's `s`, `exp`) for debugging, while the logic reads the
    # expression it was folded into: hdl/engine/dma.py's `row_bytes`, read by the DMA's SETUP state,
    # is reported unused. The class cannot tell a real unused signal from these copies.
    "UNUSEDSIGNAL": (r".*", "debug wires of named signals and view fields"),
}


# tiny, and four MFU lanes on banked files in two parts each (EngineConfig.file_parts); four tile
# engines, so the MVU's results fill the four lanes (with fewer, Yosys writes the unused lanes'
# constant in an `always @*` that Verilator reports as never run, its bits as undriven); and the
# large presets' structure in small: that with a banked MRF and the VRF read through two ports
LINTED = {"tiny": preset("tiny"),
          "w4_parts2": dataclasses.replace(preset("tiny"), mfu_width=4, tiles=4, file_parts=2, name="tiny-w4t4-parts2"),
          "w4_banked_v2": dataclasses.replace(preset("tiny"), mfu_width=4, tiles=4, file_parts=2, mrf_tiles=512,
                                              mrf_banked=True, vrf_reads=2, name="tiny-w4t4-b-v2-parts2")}


@pytest.mark.rtl
@pytest.mark.parametrize("name", sorted(LINTED))
def test_engine_verilog_lint_clean(tmp_path, name):
    rtl.require_tools()
    text, _ = engine_verilog(LINTED[name])
    src = tmp_path / f"{ENGINE_TOP}.v"
    src.write_text(text)
    r = subprocess.run(["verilator", "--lint-only", "-Wall", "-Wno-fatal", "--top-module", ENGINE_TOP, src.name],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    log = r.stdout + r.stderr
    errors = [ln for ln in log.splitlines() if ln.startswith("%Error")]
    assert not errors and r.returncode == 0, "\n".join(errors[:20]) or log[-2000:]
    counts: dict[str, int] = {}
    unexpected = []
    for cls, message in re.findall(r"^%Warning-([A-Z0-9_]+): [^:]+:\d+:\d+: (.*)$", log, flags=re.M):
        counts[cls] = counts.get(cls, 0) + 1
        if cls not in WAIVED or not re.match(WAIVED[cls][0], message):
            unexpected.append(f"{cls}: {message}")
    print(f"verilator -Wall on the tiny engine: {sum(counts.values())} warnings, by class {counts}")
    assert counts, "no warnings parsed: has the log format changed?"
    assert not unexpected, f"{len(unexpected)} warnings beyond the waivers:\n" + "\n".join(unexpected[:20])
