"""``make demo``: a hand-assembled small CNN on the functional simulator.

Runs ``sim/programs/tiny_net.s`` on a real photo (scikit-image's astronaut, downsampled to 8x8)
with deterministic synthetic weights, then checks the engine's class scores against the golden BFP
layer ops (bit for bit) and against a float32 numpy reference (fidelity), and prints the counts of
the run and the modelled cycles.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import accelml.sim
from accelml.hdl.config import preset
from accelml.hdl.program import assemble_program
from accelml.sim import bfp, golden
from accelml.sim.funcsim import FuncSim
from accelml.sim.layout import MemoryImage, weight_tiles

PROGRAM = Path(accelml.sim.__file__).parent / "programs" / "tiny_net.s"
CLASSES = ["sky", "skin", "fabric", "shadow"]


def photo(size: int = 8) -> np.ndarray:
    """The astronaut photo as (size, size, 4) floats: normalised RGB and a zero fourth channel."""
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)  # floats in [0, 1]
    x = np.zeros((size, size, 4))
    x[..., :3] = (img - img.mean(axis=(0, 1))) / img.std(axis=(0, 1))
    return x


def weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    conv_w = rng.standard_normal((8, 4, 3, 3)) * np.sqrt(2.0 / 27)
    conv_w[:, 3] = 0  # the padding channel carries nothing
    conv_b = rng.standard_normal(8) * 0.05
    fc_w = rng.standard_normal((4, 8)) * np.sqrt(1.0 / 8)
    fc_b = rng.standard_normal(4) * 0.05
    return conv_w, conv_b, fc_w, fc_b


def float_reference(x, conv_w, conv_b, fc_w, fc_b) -> np.ndarray:
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    y = np.zeros((8, 8, 8))
    for ky in range(3):
        for kx in range(3):
            y += xp[ky:ky + 8, kx:kx + 8] @ conv_w[:, :, ky, kx].T
    y = np.maximum(y + conv_b, 0)
    y = y.reshape(4, 2, 4, 2, 8).max(axis=(1, 3))
    return fc_w @ y.mean(axis=(0, 1)) + fc_b


def main() -> int:
    cfg = preset("tiny")
    x = photo()
    conv_w, conv_b, fc_w, fc_b = weights()
    xq = bfp.quantize(x, cfg, name="image")
    cwq = golden.quantize_conv_weights(conv_w, cfg)
    fwq = golden.quantize_dense_weights(fc_w, cfg)

    img = MemoryImage(cfg)
    img.put_bfp("x", xq, at=0x0000)
    img.put_bfp("conv W", weight_tiles(cwq, 9, 1), at=0x1000)
    img.put_bfp("fc W", weight_tiles(fwq, 1, 2), at=0x1400)
    img.put_fp("conv b", bfp.internal_const(conv_b), at=0x2000)
    img.put_fp("fc b", bfp.internal_const(fc_b), at=0x2020)
    mem = img.build(extra=0x2000)
    program = assemble_program(PROGRAM.read_text(), cfg, source=PROGRAM.name)
    sim = FuncSim(cfg, mem)
    stats = sim.run(program)
    scores = np.frombuffer(mem.read(0x3000, 16).tobytes(), "<f4")

    # the same network through the golden layer ops
    h = bfp.mfu_relu(golden.conv2d(xq, cwq, golden.ConvGeom(8, 8, 3, 3, pads=(1, 1, 1, 1)), cfg, bias=conv_b))
    h = golden.max_pool(golden.dequantize_internal(bfp.quantize(h, cfg)), golden.ConvGeom(8, 8, 2, 2, (2, 2)))
    h = golden.global_avg_pool(golden.dequantize_internal(bfp.quantize(h, cfg)))
    g = golden.dense(bfp.quantize(h.reshape(8), cfg), fwq, cfg, bias=fc_b)
    ref = float_reference(x, conv_w, conv_b, fc_w, fc_b)

    print(f"accelml demo: {PROGRAM.name} ({len(program.instructions)} instructions) on {cfg.describe()}")
    print("input: scikit-image astronaut photo, 8x8 RGB; weights: deterministic synthetic (seed 0)\n")
    print(f"{'class':8} {'engine (funcsim)':>18} {'golden BFP':>12} {'float32':>10}")
    for name, s, gs, r in zip(CLASSES, scores, g, ref, strict=True):
        print(f"{name:8} {s:18.6f} {gs:12.6f} {r:10.6f}")
    exact = np.array_equal(scores.view(np.uint32), g.view(np.uint32))
    print(f"\nengine vs golden: {'bit-exact' if exact else 'MISMATCH'}; "
          f"max |engine - float32| = {np.abs(scores - ref).max():.4f}; "
          f"top-1: engine {CLASSES[int(np.argmax(scores))]}, float32 {CLASSES[int(np.argmax(ref))]}\n")
    print(stats.summary(cfg))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
