# amaranth: UnusedElaboratable=no
"""sim/rtl.py: Verilog export, the Verilator build cache, and results as pytest sees them."""

from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from accelml.sim import rtl

SMOKE = Path(__file__).with_name("cocotb_rtl_smoke.py")


class RegisteredAdder(wiring.Component):
    a: In(8)
    b: In(8)
    total: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.total.eq(self.a + self.b)
        return m


def test_to_verilog_ports_and_async_reset():
    text = rtl.to_verilog(RegisteredAdder(), "adder")
    for port in ("input clk;", "input rst;", "input [7:0] a;", "input [7:0] b;", "output [8:0] total;"):
        assert port in text
    assert "posedge rst" in text
    assert "posedge rst" not in rtl.to_verilog(RegisteredAdder(), "adder", async_reset=False)


@pytest.mark.rtl
def test_run_cocotb_reports_pass_and_fail():
    rtl.require_tools()
    ok = rtl.run_cocotb(RegisteredAdder(), "adder", SMOKE)
    assert ok.passed, ok.summary()
    assert (ok.tests, ok.failed, ok.skipped) == (2, 0, 1)
    assert ok.run_dir is None  # removed after a clean run
    bad = rtl.run_cocotb(RegisteredAdder(), "adder", SMOKE, extra_env={"RTL_SMOKE_FAIL": "1"})
    assert not bad.passed
    assert (bad.tests, bad.failed) == (2, 1)
    assert bad.build_seconds == 0.0  # the first run's build was reused
    assert "fails_on_purpose" in bad.summary() and "deliberate failure" in bad.summary()
    assert bad.run_dir is not None and (bad.run_dir / "sim.log").is_file()


@pytest.mark.rtl
def test_failed_build_leaves_no_cache_entry(tmp_path):
    rtl.require_tools()
    broken = "module adder(input clk, output q);\n  assign q = undeclared_signal;\nendmodule\n"
    with pytest.raises(rtl.RtlBuildError, match="undeclared_signal"):
        rtl.run_cocotb(broken, "adder", SMOKE, cache_dir=tmp_path)
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []
