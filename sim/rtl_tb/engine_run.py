"""cocotb module of accelml.sim.rtl_engine: the testbench runs free; this only waits for its end."""

import cocotb
from cocotb.triggers import RisingEdge


@cocotb.test()
async def run_program(dut):
    await RisingEdge(dut.finished)
