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
def test_build_without_an_executable_is_an_error(tmp_path):
    rtl.require_tools()
    with pytest.raises(rtl.RtlBuildError, match="no simulator executable"):  # make told to do nothing
        rtl.run_cocotb(RegisteredAdder(), "adder", SMOKE, cache_dir=tmp_path, optimize="-O0 -n")
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []


@pytest.mark.rtl
def test_failed_build_leaves_no_cache_entry(tmp_path):
    rtl.require_tools()
    broken = "module adder(input clk, output q);\n  assign q = undeclared_signal;\nendmodule\n"
    with pytest.raises(rtl.RtlBuildError, match="undeclared_signal"):
        rtl.run_cocotb(broken, "adder", SMOKE, cache_dir=tmp_path)
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []


@pytest.mark.rtl
def test_builds_are_trimmed_and_the_least_recently_used_pruned(tmp_path):
    import fcntl
    import os
    import time

    rtl.require_tools()
    first = rtl.run_cocotb(RegisteredAdder(), "adder", SMOKE, cache_dir=tmp_path)
    assert first.passed, first.summary()
    assert {p.name for p in first.build_dir.iterdir()} <= {"adder", "build.log", ".built", "runs"}
    again = rtl.run_cocotb(RegisteredAdder(), "adder", SMOKE, cache_dir=tmp_path)  # the trimmed build runs
    assert again.passed and again.build_seconds == 0.0
    (first.build_dir / "adder").unlink()  # an executable deleted from the cache is built again
    rebuilt = rtl.run_cocotb(RegisteredAdder(), "adder", SMOKE, cache_dir=tmp_path)
    assert rebuilt.passed and rebuilt.build_seconds > 0 and rebuilt.build_dir == first.build_dir
    second = rtl.run_cocotb(RegisteredAdder(), "adder", SMOKE, cache_dir=tmp_path, async_reset=False)
    assert second.passed and second.build_dir != first.build_dir
    foreign = [tmp_path / "verilog", tmp_path / ("0" * 64)]  # not builds: no lock file / not a key
    foreign[0].mkdir()
    (foreign[0] / "engine.v").write_text("module m; endmodule\n")
    foreign[1].mkdir()

    now = time.time()
    os.utime(first.build_dir / ".built", (now - 7200, now - 7200))
    os.utime(second.build_dir / ".built", (now - 3600, now - 3600))
    assert rtl.prune(tmp_path, limit_bytes=1 << 40) == []  # under the bound: nothing goes
    with open(tmp_path / f"{first.build_dir.name}.lock", "a") as held:  # a run of the older build
        fcntl.flock(held, fcntl.LOCK_SH)
        assert rtl.prune(tmp_path, limit_bytes=0) == [second.build_dir]
        fcntl.flock(held, fcntl.LOCK_UN)
    assert first.build_dir.is_dir() and not second.build_dir.exists()
    os.utime(first.build_dir / ".built")  # just used
    assert rtl.prune(tmp_path, limit_bytes=0) == []
    os.utime(first.build_dir / ".built", (now - 7200, now - 7200))
    assert rtl.prune(tmp_path, limit_bytes=0) == [first.build_dir]
    assert all(p.exists() for p in foreign) and (foreign[0] / "engine.v").is_file()


def test_cache_bound_from_the_environment(monkeypatch):
    monkeypatch.setenv("ACCELML_RTL_CACHE_GB", "0.5")
    assert rtl.cache_limit_bytes() == 1 << 29
    monkeypatch.delenv("ACCELML_RTL_CACHE_GB")
    assert rtl.cache_limit_bytes() == int(rtl.RTL_CACHE_GB * (1 << 30))
    for bad in ("lots", "0", "-1"):
        monkeypatch.setenv("ACCELML_RTL_CACHE_GB", bad)
        with pytest.raises(rtl.RtlError, match="ACCELML_RTL_CACHE_GB"):
            rtl.cache_limit_bytes()


def test_bad_cache_bound_fails_before_building(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELML_RTL_CACHE_GB", "lots")
    with pytest.raises(rtl.RtlError, match="ACCELML_RTL_CACHE_GB='lots' is not a number"):
        rtl.build("module adder(input clk); endmodule\n", "adder", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
