"""Lowering, scheduling and code generation: compiled networks on the functional simulator equal
the per-layer golden reference bit for bit, and stay within a measured bound of FP32."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from compiler_util import make_model
from onnx import helper

from accelml.compiler import compile_model, models
from accelml.hdl.config import preset
from accelml.hdl.errors import CapacityError
from accelml.hdl.isa import Cfg, Opcode
from accelml.runtime import load, save_package

# Measured on the reduced seed models (synthetic weights, random inputs): max |engine - fp32| /
# max |fp32| is about 1-3 % with 7-bit mantissas and about 1e-6 with the wide preset.
BOUND = {"msfp16": 0.06, "custom": 0.06, "wide": 1e-4}


def check(model, cfg, tmp_path, seed=0, precision=None):
    cm = compile_model(model, config=cfg, precision=precision)
    pkg = save_package(cm, tmp_path / "m.accel")
    rt = load(pkg)
    rng = np.random.default_rng(seed)
    feeds = {i["name"]: rng.standard_normal(i["shape"]).astype(np.float32) for i in cm.inputs}
    got = rt.run(feeds)
    gold = cm.run_golden(feeds)
    ref = cm.partition.run(feeds)  # float32 reference interpreter (host segments on onnxruntime)
    bound = BOUND["wide" if cfg.mantissa_bits > 15 else "msfp16"]
    for name in got:
        np.testing.assert_array_equal(got[name], gold[name], err_msg=f"{name}: funcsim != golden")
        err = np.abs(got[name] - ref[name]).max() / np.abs(ref[name]).max()
        assert err < bound, f"{name}: relative error {err:.3g} vs fp32 exceeds {bound}"
    return cm, rt


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "densenet121", "mobilenet_v2", "ssd_vgg", "resnet152"])
def test_seed_models_bit_exact_on_a10(name, tmp_path):
    cm, rt = check(models.build(name, "reduced"), preset("a10"), tmp_path)
    assert rt.device.last_stats.macs > 0
    engine = [s for s in cm.segments if s.compiled is not None]
    assert cm.summary()["instructions"] == sum(len(s.compiled.program.instructions) for s in engine)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "ssd_vgg"])
def test_small_engine_needs_bands_and_reduction_splits(name, tmp_path):
    """The tiny preset forces row bands, output chunks and split reductions; results are unchanged.
    (Single pass: the schedule is what is tested, and the precision policy's timing runs of these
    thousands-of-instructions programs would take minutes.)"""
    cm, _ = check(models.build(name, "reduced"), preset("tiny"), tmp_path, precision="fast")
    layers = cm.segments[0].compiled.layers
    assert any(li.chunks > 1 for li in layers)
    if name == "ssd_vgg":
        assert any(li.ksplit > 1 for li in layers) and any(li.bands > 1 for li in layers)


@pytest.mark.parametrize("name,tiles", [("resnet50", 3), ("mobilenet_v2", 3), ("densenet121", 4)])
def test_banked_mrf_programs_are_bit_exact_and_cut_for_the_banks(name, tiles, tmp_path):
    """On a banked MRF (isa.md, "Banked MRF") every mvc's output blocks are a multiple or a divisor
    of T, its tiles start a row, and the network is still golden bit for bit (split reductions,
    depthwise and dense layers included). Single pass, as above."""
    cfg = dataclasses.replace(preset("tiny"), tiles=tiles, mrf_tiles=512 // tiles * tiles, mrf_banked=True,
                              name=f"tiny-b{tiles}")
    cm, _ = check(models.build(name, "reduced"), cfg, tmp_path, precision="fast")
    cobs = {i.imm for seg in cm.segments if seg.compiled for i in seg.compiled.program.instructions
            if i.op is Opcode.CFG and i.key is Cfg.COB}
    assert all(c % tiles == 0 or tiles % c == 0 for c in cobs) and any(c % tiles for c in cobs), cobs
    assert any(li.chunks > 1 for li in cm.segments[0].compiled.layers)
    insns = [i for seg in cm.segments if seg.compiled for i in seg.compiled.program.instructions]
    assert any(i.op is Opcode.CFG and i.key is Cfg.COPIES and i.imm > 1 for i in insns)  # divisor chunks
    assert any(i.op is Opcode.CFG and i.key is Cfg.DSTRIDE and i.imm for i in insns)  # chunks sharing an epilogue


def test_wide_preset_matches_fp32_closely(tmp_path):
    check(models.build("densenet121", "reduced"), preset("wide"), tmp_path)


def test_tf2onnx_style_nhwc_graph(tmp_path):
    """NHWC input with layout transposes and Keras batch norm as Mul/Add."""
    m = models.to_tf_style(models.build("resnet50", "reduced"))
    cm, rt = check(m, preset("a10"), tmp_path)
    assert cm.inputs[0]["shape"][-1] == 3  # the package keeps the NHWC input of the source graph


def test_first_layer_packing_folds_taps_into_the_reduction(tmp_path):
    m = models.build("resnet50", "reduced")
    # one precision for both (the balanced policy may split the one layer's weights, not the other's)
    packed = compile_model(m, config="a10", precision="fast")
    plain = compile_model(m, config="a10", pack_first=False, precision="fast")
    first_p = packed.segments[0].compiled.layers[0]
    first_u = plain.segments[0].compiled.layers[0]
    assert first_p.macs == first_u.macs
    assert first_p.tile_ops * 3 < first_u.tile_ops  # 7x7x3 = 147 values in 10 blocks, not 49 blocks


def test_host_segment_for_softmax(tmp_path):
    w = (np.random.default_rng(1).standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    m = make_model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["c"], ["r"]),
                    helper.make_node("Flatten", ["r"], ["f"]),
                    helper.make_node("Softmax", ["f"], ["y"])],
                   {"x": [1, 3, 6, 6]}, ["y"], {"w": w})
    cm, rt = check(m, preset("a10"), tmp_path)
    assert [s["kind"] for s in rt.manifest["segments"]] == ["engine", "host"]
    y = rt.run({"x": np.ones((1, 3, 6, 6), np.float32)})["y"]
    assert y.shape == (1, 144) and abs(float(y.sum()) - 1.0) < 1e-5


def test_layer_that_cannot_fit_names_the_layer():
    cfg = dataclasses.replace(preset("tiny"), vrf_vectors=64, name="cramped")
    with pytest.raises(CapacityError, match="layer 'conv'.*cramped"):
        compile_model(models.build("resnet50", "reduced"), config=cfg)


def test_bias_wider_than_a_quarter_of_the_fvrf_is_kept_whole(tmp_path):
    """The reduced ResNet-50's classifier has 250 output blocks at N = 4; in an FVRF of 512 vectors
    its bias once overflowed a constants region clipped to a quarter of the file, the accumulators
    overwrote it, and the program silently disagreed with the golden model."""
    cfg = dataclasses.replace(preset("tiny"), fvrf_vectors=512, name="narrow-fvrf")
    check(models.build("resnet50", "reduced"), cfg, tmp_path, precision="fast")
    tight = dataclasses.replace(cfg, fvrf_vectors=252, name="tight-fvrf")
    with pytest.raises(CapacityError, match=r"layer '.*': its 250 constant vectors .* 252 vectors \(tight-fvrf\)"):
        compile_model(models.build("resnet50", "reduced"), config=tight, precision="fast")


def test_report_figures_are_consistent():
    cm = compile_model(models.build("resnet50", "reduced"), config="a10")
    s = cm.summary()
    layers = cm.layers
    assert s["macs"] == sum(lr.macs for lr in layers) == cm.partition.graph.macs()
    assert s["cycles"] == sum(lr.cycles for lr in layers) > 0
    assert 0 < s["utilisation"] <= 1 and 0 < s["roofline_efficiency"] <= 1.0001
    # the whole network cannot beat its roofline: compute at peak, or every byte at full bandwidth
    # (a single layer can, by the cycles' attribution: its weights were fetched during the previous one)
    cfg = cm.cfg
    moved = sum(lr.weight_bytes + lr.act_bytes for lr in layers)
    assert s["cycles"] >= max(s["macs"] / cfg.peak_macs_per_cycle, moved / cfg.mem_bytes_per_cycle)
    # the network's bound counts weights, inputs and outputs once, never the schedule's spills
    seg = next(sg for sg in cm.segments if sg.compiled is not None)
    weights = sum(len(blob) for _, blob in seg.compiled.image.chunks)
    assert weights < s["unavoidable_bytes"]
    assert s["roofline_bound_cycles"] == max(s["macs"] / cfg.peak_macs_per_cycle,
                                             s["unavoidable_bytes"] / cfg.mem_bytes_per_cycle)
    assert s["roofline_efficiency"] == pytest.approx(s["roofline_bound_cycles"] / s["cycles"])
    assert all(0 <= lr.roofline_share <= 1 for lr in layers)
    assert any(lr.bound_cycles > lr.cycles for lr in layers)  # prefetched layers exist: their rows stop at 100 %
    text = cm.report()
    assert "roofline efficiency" in text and layers[0].name in text
    assert max(float(line.split()[-1].rstrip("%")) for line in text.splitlines()[2:2 + len(layers)]) <= 100.0


@pytest.mark.parametrize("opset", [13, 21])
def test_opsets_13_to_21_compile_to_the_same_program(opset, tmp_path):
    """The seed graphs use operators whose form is unchanged from opset 13 to 21."""
    base = models.build("resnet50", "reduced")
    other = models.build("resnet50", "reduced")
    other.opset_import[0].version = opset
    a = compile_model(base, config="a10")
    b = compile_model(other, config="a10")
    assert a.segments[0].compiled.program.to_bytes() == b.segments[0].compiled.program.to_bytes()


def _lifetimes(plan) -> dict[str, tuple[int, int]]:
    """Base buffer -> (index of the op that writes it, index of the last op that reads it)."""
    spans: dict[str, list[int]] = {}
    for i, op in enumerate(plan.ops):
        reads = [op.src] if hasattr(op, "src") else list(op.srcs)
        if getattr(op, "residual", None) is not None:
            reads.append(op.residual)
        for buf in [op.dst, *reads]:
            spans.setdefault(buf.base, []).append(i)
    return {name: (min(ix), max(ix)) for name, ix in spans.items()}


@pytest.mark.parametrize("name, cfg", [("resnet50", "a10"), ("densenet121", "ecp5"), ("mobilenet_v2", "a10")])
def test_resident_activations_stay_on_chip_without_sharing_entries_while_alive(name, cfg, tmp_path):
    """Activations kept in the VRF pool between the layers that write and read them: the same bits
    (check), fewer bytes moved and fewer cycles than streaming everything through external memory,
    and two buffers alive at the same time never share a VRF entry."""
    from accelml.compiler import codegen
    from accelml.compiler.driver import _layer_reports

    cm, _ = check(models.build(name, "reduced"), preset(cfg), tmp_path)
    seg = cm.segments[0]
    resident = seg.compiled.resident
    assert resident and "resident activations" in cm.report()
    streaming = codegen.generate(seg.plan, pool=0)
    assert streaming.resident == {} and streaming.pool == 0 < seg.compiled.pool
    moved = sum(li.act_bytes for li in seg.compiled.layers)
    assert moved < sum(li.act_bytes for li in streaming.layers)
    assert cm.summary()["cycles"] < sum(lr.cycles for lr in _layer_reports(streaming, cm.cfg))
    v = cm.cfg.vrf_vectors
    life = _lifetimes(seg.plan)
    for a, (addr_a, n_a) in resident.items():
        assert 0 <= addr_a and addr_a + n_a <= int(v * seg.compiled.pool)  # inside the pool, the VRF's bottom
        assert seg.plan.bases[a].vectors <= n_a and seg.compiled.buffers[a]["addr"] == -1  # no external copy
        for b, (addr_b, n_b) in resident.items():
            overlap_in_time = a != b and life[a][0] <= life[b][1] and life[b][0] <= life[a][1]
            if overlap_in_time:
                assert addr_a + n_a <= addr_b or addr_b + n_b <= addr_a, (a, b)


def test_resident_pool_is_given_up_when_the_streaming_regions_get_too_small(tmp_path):
    """ssd_vgg's dilated 3x3 on the tiny preset needs the whole VRF input region: the schedule
    falls back to streaming every activation, still bit-exact."""
    cm, _ = check(models.build("ssd_vgg", "reduced"), preset("tiny"), tmp_path, precision="fast")
    assert cm.segments[0].compiled.resident == {}
    assert "resident activations" not in cm.report()


@pytest.mark.parametrize("split", [False, True])
def test_the_fastest_schedule_is_kept(split):
    """Activations resident in pools of two sizes or streamed, weights one or two chunks ahead:
    the compile keeps the candidate with the fewest modelled cycles. (A fixed precision per layer:
    the fast policy, or every layer split; the balanced policy keeps the schedule the fast program
    was fastest on, which its choice was timed on.)"""
    from accelml.compiler import codegen
    from accelml.compiler.driver import LOOKAHEADS, POOLS, _layer_reports

    cm = compile_model(models.build("resnet50", "reduced"), config="ecp5", split_weights=split,
                       split_activations=split, precision=None if split else "fast")
    plan = cm.segments[0].plan

    def timed(pool, lookahead, order):
        compiled = codegen.generate(plan, pool=pool, lookahead=lookahead, order=order)
        return sum(lr.cycles for lr in _layer_reports(compiled, cm.cfg))

    first, *others = codegen.ISSUE_ORDERS
    cycles = {(p, la, first): timed(p, la, first) for p in (*POOLS, 0) for la in LOOKAHEADS}
    assert len(set(cycles.values())) > 1  # the candidates are different schedules
    fastest = min(cycles, key=cycles.get)
    for order in others:  # and the fastest in the other issue orders
        cycles[(*fastest[:2], order)] = timed(*fastest[:2], order)
    assert cm.summary()["cycles"] == min(cycles.values())


def test_every_issue_order_is_bit_exact(tmp_path, monkeypatch):
    """A conv step's next input load before or after its products, the step before's epilogue
    before or after that load (``codegen.ISSUE_ORDERS``): different programs, each golden bit for
    bit (tiny: bands, chunks and split reductions); an unknown order is refused by name."""
    from accelml.compiler import codegen

    generate = codegen.generate
    programs = set()
    for order in codegen.ISSUE_ORDERS:
        monkeypatch.setattr(codegen, "generate", lambda *a, _order=order, **kw: generate(*a, **{**kw, "order": _order}))
        (tmp_path / order).mkdir()
        cm, _ = check(models.build("resnet50", "reduced"), preset("tiny"), tmp_path / order, precision="fast")
        programs.add(cm.segments[0].compiled.program.to_bytes())
    assert len(programs) == len(codegen.ISSUE_ORDERS)
    with pytest.raises(ValueError, match="'sideways'"):
        generate(cm.segments[0].plan, order="sideways")


@pytest.mark.parametrize(("name", "const"), [("a10", 128), ("a10", 4096), ("tiny", 512), ("ecp5", 600)])
def test_the_fvrf_accumulator_buffers_lie_in_different_halves(name, const):
    """The FVRF's regions: constants, the first accumulator buffer, the shortcut region, the second
    accumulator buffer, disjoint and inside the file; while the constants take at most a quarter of
    it, the two buffers are in different halves (an epilogue on one and the products of the next
    step on the other write different halves: bitstreams/banking.py, a write port per half)."""
    from accelml.compiler.codegen import _regions

    cfg = preset(name)
    f = cfg.fvrf_vectors
    r = _regions(cfg, const, 0.0)
    spans = sorted([(0, const), *((a, a + r.fvrf_acc_size) for a in r.fvrf_acc),
                    (r.fvrf_res, r.fvrf_res + r.fvrf_res_size)])
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)) and spans[-1][1] == f
    assert r.fvrf_acc_size == (f - const) // 3 and r.fvrf_res_size >= r.fvrf_acc_size
    (a0, a1), n = r.fvrf_acc, r.fvrf_acc_size
    if const <= f // 4:
        assert a0 + n <= f // 2 <= a1
    else:  # ecp5's 600 of 2,048: the first buffer reaches into the second half
        assert a0 + n > f // 2


@pytest.mark.parametrize("pool", [0.5, 0.875])
def test_the_vrf_streams_above_its_resident_pool(pool):
    """The resident pool at the VRF's bottom (placed from its base up), the streaming regions above
    it: with the pool half the VRF or more, what the loads write (the input buffers, the shortcut
    region) lies in the upper half, and the resident activations the MFU writes start in the lower."""
    from accelml.compiler.codegen import _regions

    cfg = preset("a10")
    v = cfg.vrf_vectors
    r = _regions(cfg, 128, pool)
    assert r.vrf_pool == 0 and r.vrf_pool_size <= v * pool
    streaming = [(a, a + r.vrf_in_size) for a in r.vrf_in] + [(r.vrf_res, r.vrf_res + r.vrf_res_size)] + [
        (a, a + r.vrf_out_size) for a in r.vrf_out]
    spans = sorted([(0, r.vrf_pool_size), *streaming])
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)) and spans[-1][1] <= v
    assert all(v // 2 <= lo for lo, _ in streaming)


def test_a_banked_cut_on_few_vrf_reads_takes_chunks_whose_steps_read_the_fewest_pixels_each():
    """On T = 12 tile engines a chunk of d blocks takes 12 / d pixels a round; with V = 3 VRF reads
    a step of 6 pixels (d = 2) takes two cycles, of 4 (d = 3) also two, of 3 (d = 4) one. With a
    read per engine the cut stays the largest divisors first."""
    from accelml.compiler.codegen import _bank_cut

    assert _bank_cut(8, 12, 64, 0) == [6, 2]
    assert _bank_cut(8, 12, 64, 0, 3) == [4, 4]
    assert _bank_cut(8, 12, 64, 0, 12) == [6, 2]  # V = T: as without
    assert _bank_cut(28, 12, 64, 0, 3) == [24, 4]  # the multiple of T first
    assert _bank_cut(5, 12, 64, 0, 3) == [4, 1]  # cycles a pixel-step: 1/3 + 1/3 (3 + 2: 1/2 + 1/3)
