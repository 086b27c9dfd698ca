"""The ``.accel`` package: a directory with a manifest, program binaries, memory images and host
subgraphs, every file named in the manifest with its SHA-256.

    model.accel/
      manifest.json     format, version, EngineConfig (+ hash), model inputs/outputs, segments,
                        per-layer schedule summary, file hashes
      seg<K>.prog       engine segment K: program binary (bound to the EngineConfig hash)
      seg<K>.img        engine segment K: constant external-memory image (weights, biases)
      seg<K>.onnx       host segment K: an ONNX model run by onnxruntime

``save_package`` writes into a temporary directory and renames it into place, so a failed
compile never leaves a partial package. ``load`` verifies every hash and refuses a package built
for another EngineConfig than the one asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import AccelmlError, PackageError
from accelml.hdl.program import Program

from .device import Device, device_named
from .engine import BufferView, EngineSegment

FORMAT = "accelml-package"
VERSION = 1

__all__ = ["save_package", "load", "Model"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _view(compiled, plan, name: str, buf, shape) -> BufferView:
    b = compiled.buffers[buf.base]
    packed = plan.packed[name][2] if name in plan.packed else None
    return BufferView(b["addr"], buf.h, buf.w, buf.cb, b["cb"], buf.cb_off, buf.fp32, buf.lanes, tuple(shape), packed,
                      b.get("split", False))


def save_package(cm, path: str | os.PathLike) -> Path:
    """Write a CompiledModel as a package directory at ``path`` (replacing one that exists)."""
    path = Path(path)
    files: dict[str, bytes] = {}
    segments = []
    for seg in cm.segments:
        entry = {"index": seg.index, "inputs": seg.inputs, "outputs": seg.outputs}
        if seg.onnx is not None:
            entry.update(kind="host", onnx=f"seg{seg.index}.onnx")
            files[entry["onnx"]] = seg.onnx
        else:
            c, plan = seg.compiled, seg.plan
            image = _image_bytes(c)
            entry.update(
                kind="engine", program=f"seg{seg.index}.prog", image=f"seg{seg.index}.img", mem_bytes=c.mem_bytes,
                inputs={n: _view(c, plan, n, b, plan.in_shapes[n]).to_json() for n, b in plan.inputs.items()},
                outputs={n: _view(c, plan, n, b, plan.out_shapes[n]).to_json() for n, b in plan.outputs.items()},
                layers=[lr.to_json() for lr in seg.layers],
            )
            files[entry["program"]] = c.program.to_bytes()
            files[entry["image"]] = image
        segments.append(entry)
    manifest = {
        "format": FORMAT, "version": VERSION, "model": cm.name,
        "engine_config": cm.cfg.to_dict(), "config_hash": cm.cfg.hash,
        "inputs": cm.inputs, "outputs": cm.outputs, "segments": segments,
        "summary": cm.summary(), "files": {k: _sha(v) for k, v in files.items()},
        "host_preprocess": cm.host_preprocess,
        "bias_correction": cm.bias_correction,
        "split_weights": cm.split_weights,
        "split_activations": cm.split_activations,
        "precision": cm.precision,  # policy, budget, modelled cost, each conv / dense layer's choice
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _image_bytes(c) -> bytes:
    mem = c.image.build()
    top = max((addr + len(blob) for addr, blob in c.image.chunks), default=0)
    return mem.data[:top].tobytes()


@dataclass
class _HostSegment:
    inputs: list[str]
    outputs: list[str]
    session: object

    def run(self, feeds):
        res = self.session.run(self.outputs, {n: feeds[n] for n in self.inputs})
        return dict(zip(self.outputs, res, strict=True))


class Model:
    """A loaded package: ``run({input name: array}) -> {output name: array}``."""

    def __init__(self, path: Path, manifest: dict, cfg: EngineConfig, segments: list, device: Device):
        self.path, self.manifest, self.cfg, self.segments, self.device = path, manifest, cfg, segments, device

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.manifest["outputs"]

    @property
    def host_preprocess(self) -> dict | None:
        """The preprocessing split off a TensorFlow graph (decode, resize, scale), or None."""
        return self.manifest.get("host_preprocess")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            name = spec["name"]
            if name not in feeds:
                raise PackageError(f"missing input {name!r} (inputs: {', '.join(i['name'] for i in self.inputs)})")
            x = np.asarray(feeds[name])
            if list(x.shape) != spec["shape"]:
                raise PackageError(f"input {name!r}: expected shape {tuple(spec['shape'])}, got {x.shape}")
            try:
                x = x.astype(spec["dtype"], casting="same_kind", copy=False)
            except TypeError:
                raise PackageError(f"input {name!r}: expected {spec['dtype']}, got {x.dtype}") from None
            env[name] = np.require(x.transpose(spec["perm"]) if spec["perm"] else x, requirements="C")
        unknown = set(feeds) - {i["name"] for i in self.inputs}
        if unknown:
            raise PackageError(f"unknown input(s): {', '.join(sorted(unknown))}")
        for seg in self.segments:
            if isinstance(seg, EngineSegment):
                env.update(seg.run(env, self.device))
            else:
                env.update(seg.run(env))
        out = {}
        for spec in self.outputs:
            v = env[spec["name"]]
            out[spec["name"]] = np.require(v.transpose(spec["perm"]) if spec["perm"] else v, requirements="C")
        return out


def load(path: str | os.PathLike, *, device: str = "funcsim", config: EngineConfig | None = None) -> Model:
    """Load and verify a package. ``config``: refuse a package built for another EngineConfig."""
    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise PackageError(f"{path}: not an accelml package (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PackageError(f"{path}: manifest.json is malformed: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{path}: not an accelml package manifest")
    if manifest.get("version") != VERSION:
        raise PackageError(f"{path}: package format version {manifest.get('version')} is not supported ({VERSION})")
    try:
        cfg = EngineConfig.from_dict(manifest["engine_config"])
        hashes = manifest["files"]
        segments_spec = manifest["segments"]
        _ = manifest["inputs"], manifest["outputs"]
    except (KeyError, TypeError) as e:
        raise PackageError(f"{path}: manifest lacks {e}") from None
    except AccelmlError as e:
        raise PackageError(f"{path}: {e}") from None
    if cfg.hash != manifest.get("config_hash"):
        raise PackageError(f"{path}: the manifest's EngineConfig does not match its recorded hash")
    if config is not None and config.hash != cfg.hash:
        raise PackageError(f"{path}: built for EngineConfig {cfg.name} ({cfg.short_hash}), not for "
                           f"{config.name} ({config.short_hash})")
    blobs = {}
    for name, digest in hashes.items():
        f = path / name
        if not f.is_file():
            raise PackageError(f"{path}: missing file {name}")
        data = f.read_bytes()
        if _sha(data) != digest:
            raise PackageError(f"{path}: {name} does not match its hash (corrupt or modified)")
        blobs[name] = data
    dev = device_named(device, cfg)
    segments = []
    for spec in segments_spec:
        if spec.get("kind") == "host":
            import onnxruntime as ort

            sess = ort.InferenceSession(blobs[spec["onnx"]], providers=["CPUExecutionProvider"])
            segments.append(_HostSegment(spec["inputs"], spec["outputs"], sess))
        elif spec.get("kind") == "engine":
            prog = Program.from_bytes(blobs[spec["program"]], config=cfg, source=f"{path}/{spec['program']}")
            segments.append(EngineSegment(
                cfg, prog, blobs[spec["image"]], int(spec["mem_bytes"]),
                {n: BufferView.from_json(v) for n, v in spec["inputs"].items()},
                {n: BufferView.from_json(v) for n, v in spec["outputs"].items()}))
        else:
            raise PackageError(f"{path}: unknown segment kind {spec.get('kind')!r}")
    return Model(path, manifest, cfg, segments, dev)
