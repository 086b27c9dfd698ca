"""A small CNN compiled by the project's compiler for the ``tiny`` engine, run on the RTL (Verilated
engine) and on the functional simulator: every byte of external memory equal at the end.

The network has every kind of layer the engine executes: convolution, depthwise convolution, max
pool, average pool (with and without counting the pads), residual add, concat and dense (a global
average pool then a Gemm). It is compiled into one engine segment and packaged as a user would;
the segment's memory image with the input written is the run's starting image.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from accelml.compiler.driver import compile_model
from accelml.compiler.models import _Net
from accelml.hdl.config import preset
from accelml.hdl.engine.status import ErrorCode
from accelml.hdl.isa import Cfg, Opcode
from accelml.runtime.package import load, save_package
from accelml.sim import rtl
from accelml.sim.rtl_engine import EngineSim, funcsim_outcome, timing_mismatch

CFG = preset("tiny")


def small_cnn(seed: int = 0):
    net = _Net("small_cnn", seed, 3, 10)
    x = net.relu(net.bn(net.conv("input", 8, 3)))  # 10 x 10 x 8
    x = net.maxpool(x, 2, 2)  # 5 x 5
    d = net.relu(net.bn(net.conv(x, 8, 3, groups=8, name="dw")))  # depthwise
    a = net.add_(d, x)  # residual
    b = net.relu(net.conv(a, 6, 1, bias=True))
    c = net.concat([a, b])  # 14 channels
    y = net.add("AveragePool", [c], "avgpad", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                count_include_pad=1)  # 3 x 3, the divisor counting the pads
    net._like(y, c)
    net.hw[y] = (3, 3)
    p = net.avgpool(y, 2, 1)  # 2 x 2
    net.head(p, 10, True)  # global average pool, dense
    return net.model()


# a banked MRF (isa.md, "Banked MRF") on three tile engines: the compiler cuts output blocks into
# chunks of multiples and divisors of 3 and lays each chunk out by bank
BANKED = dataclasses.replace(CFG, tiles=3, mrf_tiles=510, mrf_banked=True, name="tiny-b3")


# the large engines' structure in small: a banked MRF on four tile engines reading the VRF through
# two ports (EngineConfig.vrf_reads), the VRF and FVRF in two parts on shared ports
FEW_READS = dataclasses.replace(CFG, tiles=4, mrf_tiles=512, mrf_banked=True, vrf_reads=2, file_parts=2,
                                name="tiny-b4v2p2")


@pytest.mark.rtl
@pytest.mark.parametrize("cfg", [CFG, BANKED, FEW_READS], ids=["tiny", "banked", "banked_few_reads"])
def test_compiled_cnn_on_rtl_equals_funcsim(tmp_path, cfg):
    rtl.require_tools()
    cm = compile_model(small_cnn(), config=cfg)
    if cfg.mrf_banked:  # chunks of multiples and divisors of the tile engines
        cobs = {i.imm for seg in cm.segments if seg.compiled for i in seg.compiled.program.instructions
                if i.op is Opcode.CFG and i.key is Cfg.COB}
        t = cfg.tiles
        assert len(cobs) > 1 and all(c % t == 0 or t % c == 0 for c in cobs), cobs
    kinds = {lr.kind for lr in cm.layers}
    assert {"conv", "conv1x1", "pool-max", "pool-avg", "pool-avg_pad", "add"} <= kinds, kinds
    save_package(cm, tmp_path / "pkg")
    model = load(tmp_path / "pkg")
    (seg,) = model.segments
    feeds = {"input": np.random.default_rng(1).standard_normal((1, 3, 10, 10)).astype(np.float32)}
    mem = seg.memory()
    for name, view in seg.inputs.items():
        view.write(mem, feeds[name], seg.cfg, name)
    image = mem.data.copy()
    ro = len(seg.image)

    ref = funcsim_outcome(cfg, seg.program, image, ro_bytes=ro)
    got = EngineSim(cfg).run(seg.program, image, ro_bytes=ro)
    assert ref.error is ErrorCode.NONE and got.error is ErrorCode.NONE, ref.message
    diff = np.nonzero(got.memory != ref.memory)[0]
    assert diff.size == 0, f"{diff.size} bytes differ, first at {diff[:8]}"
    assert got.busy["mvu"] > 0 and got.busy["mfu"] > 0 and got.busy["pool"] > 0
    # the cycle model is the RTL's: total and every unit's busy cycles
    assert timing_mismatch(ref, got) is None, timing_mismatch(ref, got)
    assert (ref.cycles, ref.busy) == (got.cycles, got.busy)

    # the bytes compared are the network's: its outputs read back from the RTL's memory are the
    # package's own run (functional simulator) of the same input
    mem.data[:] = got.memory
    out = {name: view.read(mem, seg.cfg, name) for name, view in seg.outputs.items()}
    want = model.run(feeds)
    assert set(out) == set(want) == {"logits"}
    np.testing.assert_array_equal(out["logits"], want["logits"])
    assert np.abs(out["logits"]).max() > 0
