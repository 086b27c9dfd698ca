"""The ``.accel`` package: a directory with a manifest, program binaries, memory images and host
subgraphs, every file named in the manifest with its SHA-256.

    model.accel/
      manifest.json     format, version, EngineConfig (+ hash), model inputs/outputs, segments,
                        per-layer schedule summary, file hashes
      seg<K>.prog       engine segment K: program binary (bound to the EngineConfig hash)
      seg<K>.img        engine segment K: constant external-memory image (weights, biases)
      seg<K>.onnx       host segment K: an ONNX model run by onnxruntime

``manifest.json`` carries ``manifest_sha256``, the SHA-256 of its own canonical JSON without that
entry, so an edited manifest is refused like an edited file.

``save_package`` never loses data (runtime/storage.py): it writes into a temporary sibling and
swaps it into place atomically; a destination that exists and is not an accelml package (a file,
the input model, a directory holding anything the package does not list) is refused with
``DestinationError`` before anything is written. ``load`` verifies the manifest's hash, its
structure (every key and type, every buffer inside the segment's memory) and every file hash, and
refuses a package built for another EngineConfig than the one asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import AccelmlError, PackageError
from accelml.hdl.program import Program

from . import storage
from .device import Device, device_named
from .engine import BufferView, EngineSegment
from .executor import FunctionSegment, HostSegment, permuted, run_segments
from .host import HostPreprocess, encoded_images
from .postprocess import SsdPostprocess
from .storage import DestinationError, write_dir_atomic

FORMAT = "accelml-package"
VERSION = 2  # 2: the manifest carries its own hash
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest_sha256"

__all__ = ["save_package", "load", "Model", "check_destination", "DestinationError", "manifest_digest"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _view(compiled, plan, name: str, buf, shape) -> BufferView:
    b = compiled.buffers[buf.base]
    packed = plan.packed[name][2] if name in plan.packed else None
    return BufferView(b["addr"], buf.h, buf.w, buf.cb, b["cb"], buf.cb_off, buf.fp32, buf.lanes, tuple(shape), packed,
                      b.get("split", False))


def save_package(cm, path: str | os.PathLike) -> Path:
    """Write a CompiledModel as a package directory at ``path``.

    ``path`` may be free or hold an accelml package (replaced atomically: the old package stays
    valid at ``path`` until the new one is complete). Anything else there (a file, a directory with
    other contents, the input model) raises ``DestinationError`` before anything is written."""
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
        "host_postprocess": getattr(cm, "host_postprocess", None),
        "bias_correction": cm.bias_correction,
        "split_weights": cm.split_weights,
        "split_activations": cm.split_activations,
        "precision": cm.precision,  # policy, budget, modelled cost, each conv / dense layer's choice
    }
    manifest[MANIFEST_HASH] = manifest_digest(manifest)

    def fill(tmp: Path) -> None:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))

    return write_dir_atomic(path, fill, owned=package_owner_problem, what="accelml package")


def check_destination(path: str | os.PathLike) -> None:
    """Raise ``DestinationError`` now if ``save_package`` would refuse ``path`` (so a long compile
    is not wasted on a destination it may not write)."""
    storage.check_destination(Path(path), package_owner_problem, "accelml package")


def manifest_digest(manifest: dict) -> str:
    """SHA-256 over the manifest's canonical JSON, without its own hash entry."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_HASH}
    return _sha(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def package_owner_problem(path: Path) -> str | None:
    """None if ``path`` is a directory holding an accelml package and nothing else (so replacing it
    loses nothing the tool did not write), else why it is not."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        return "no manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its manifest.json is not an accelml manifest"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return "its manifest.json is not an accelml manifest"
    listed = manifest.get("files")
    listed = set(listed) if isinstance(listed, dict) else set()
    for entry in path.iterdir():
        if entry.name != MANIFEST and (entry.name not in listed or not entry.is_file() or entry.is_symlink()):
            return f"it holds {entry.name!r}, which the package does not list"
    return None


def _image_bytes(c) -> bytes:
    mem = c.image.build()
    top = max((addr + len(blob) for addr, blob in c.image.chunks), default=0)
    return mem.data[:top].tobytes()


class Model:
    """A loaded package: ``run({input name: array}) -> {output name: array}``.

    ``run`` is safe to call from several threads at once (each run gets its own external memory).
    A package with host preprocessing takes the graph's real input, encoded image bytes
    (``{"images": np.array([jpeg], dtype=object)}``, dtype "string" in ``inputs``), decodes and
    normalises them on the host (runtime/host.py) and runs the engine; the featurizer's own input
    (float32 pixels) is accepted as well.
    """

    def __init__(self, path: Path, manifest: dict, cfg: EngineConfig, segments: list, device: Device):
        self.path, self.manifest, self.cfg, self.segments, self.device = path, manifest, cfg, segments, device
        self._runners = [FunctionSegment(list(s.inputs), list(s.outputs), lambda f, s=s: s.run(f, device))
                         if isinstance(s, EngineSegment) else s for s in segments]
        pre = manifest.get("host_preprocess")
        self.host: HostPreprocess | None = HostPreprocess.from_dict(pre) if pre is not None else None
        post = manifest.get("host_postprocess")
        self.post: SsdPostprocess | None = SsdPostprocess(post) if post is not None else None

    @property
    def inputs(self) -> list[dict]:
        """The inputs a caller feeds: with host preprocessing, the encoded-image input (dtype
        "string", one image) in place of the featurizer's."""
        if self.host is None:
            return self.manifest["inputs"]
        return [{"name": self.host.input, "shape": [1], "dtype": "string", "perm": None}
                if spec["name"] == self.host.output else spec for spec in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[dict]:
        """The outputs ``run`` returns: the model's, then, with SSD post-processing, the detections
        (their first dimension is the number of detections)."""
        if self.post is None:
            return self.manifest["outputs"]
        return self.manifest["outputs"] + [
            {"name": "detection_boxes", "shape": [-1, 4], "dtype": "float32", "perm": None},
            {"name": "detection_scores", "shape": [-1], "dtype": "float32", "perm": None},
            {"name": "detection_classes", "shape": [-1], "dtype": "int64", "perm": None}]

    @property
    def host_preprocess(self) -> dict | None:
        """The preprocessing split off a TensorFlow graph (decode, resize, scale), or None."""
        return self.manifest.get("host_preprocess")

    def _host_feeds(self, feeds: dict) -> dict:
        """Encoded images under the host input -> the featurizer's input (one image per run)."""
        pre = self.host
        if pre is None or pre.input not in feeds:
            return feeds
        if pre.output in feeds:
            raise PackageError(f"give either input {pre.input!r} (encoded image) or {pre.output!r} (pixels), not both")
        images = encoded_images(feeds[pre.input], pre.input)
        if len(images) != 1:
            raise PackageError(f"input {pre.input!r}: expected one encoded image per run, got {len(images)}")
        feeds = {k: v for k, v in feeds.items() if k != pre.input}
        feeds[pre.output] = pre(images[0])
        return feeds

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self._host_feeds(feeds)
        env: dict[str, np.ndarray] = {}
        for spec in self.manifest["inputs"]:
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
            env[name] = permuted(x, spec["perm"])
        unknown = set(feeds) - {i["name"] for i in self.manifest["inputs"]}
        if unknown:
            raise PackageError(f"unknown input(s): {', '.join(sorted(unknown))}")
        env = run_segments(self._runners, env)
        out = {spec["name"]: permuted(env[spec["name"]], spec["perm"]) for spec in self.manifest["outputs"]}
        if self.post is not None:
            out.update(self.post(out))
        return out


def load(path: str | os.PathLike, *, device: str | Device = "funcsim", config: EngineConfig | None = None,
         **device_options) -> Model:
    """Load and verify a package. ``device``: a device name (``"funcsim"``, ``"rtl"``; made with
    ``device_options``, e.g. ``max_cycles=``) or a ``Device`` for the package's EngineConfig.
    ``config``: refuse a package built for another EngineConfig."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise PackageError(f"{path}: not an accelml package (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PackageError(f"{path}: manifest.json is malformed: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{path}: not an accelml package manifest")
    if manifest.get("version") != VERSION:
        raise PackageError(f"{path}: package format version {manifest.get('version')!r} is not supported "
                           f"(this accelml reads version {VERSION}; compile the model again)")
    if manifest.get(MANIFEST_HASH) != manifest_digest(manifest):
        raise PackageError(f"{path}: manifest.json does not match its hash (edited or corrupt)")
    _validate_manifest(manifest, path)
    try:
        cfg = EngineConfig.from_dict(manifest["engine_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise PackageError(f"{path}: manifest engine_config is malformed: {e}") from None
    except AccelmlError as e:
        raise PackageError(f"{path}: {e}") from None
    hashes = manifest["files"]
    segments_spec = manifest["segments"]
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
    if isinstance(device, Device):
        if device.cfg.hash != cfg.hash:
            raise PackageError(f"{path}: built for EngineConfig {cfg.name} ({cfg.short_hash}), the device is for "
                               f"{device.cfg.name} ({device.cfg.short_hash})")
        dev = device
    else:
        dev = device_named(device, cfg, **device_options)
    segments = []
    for spec in segments_spec:
        if spec.get("kind") == "host":
            segments.append(HostSegment(spec["inputs"], spec["outputs"], blobs[spec["onnx"]]))
        elif spec.get("kind") == "engine":
            prog = Program.from_bytes(blobs[spec["program"]], config=cfg, source=f"{path}/{spec['program']}")
            views = {}
            for side in ("inputs", "outputs"):
                views[side] = {n: BufferView.from_json(v) for n, v in spec[side].items()}
                for n, v in views[side].items():
                    problem = v.problem(cfg, spec["mem_bytes"])
                    if problem:
                        raise PackageError(f"{path}: manifest segment {spec['index']} {side[:-1]} {n!r}: {problem}")
            segments.append(EngineSegment(cfg, prog, blobs[spec["image"]], spec["mem_bytes"],
                                          views["inputs"], views["outputs"]))
        else:
            raise PackageError(f"{path}: unknown segment kind {spec.get('kind')!r}")
    return Model(path, manifest, cfg, segments, dev)


# -- manifest structure ------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_manifest(m: dict, path: Path) -> None:
    """Every key ``load`` reads, with its type; a problem is a PackageError naming the key."""

    def need(cond: bool, where: str, what: str) -> None:
        if not cond:
            raise PackageError(f"{path}: manifest {where}: {what}")

    for key, types in (("model", str), ("engine_config", dict), ("config_hash", str), ("inputs", list),
                       ("outputs", list), ("segments", list), ("files", dict)):
        need(key in m, key, "missing")
        need(isinstance(m[key], types), key, f"expected {types.__name__}, got {type(m[key]).__name__}")
    need(m.get("host_preprocess") is None or isinstance(m["host_preprocess"], dict), "host_preprocess",
         "expected an object or null")
    post = m.get("host_postprocess")
    if post is not None:
        need(isinstance(post, dict) and post.get("kind") == "ssd", "host_postprocess", "expected an SSD description")
        names = {o.get("name") for o in m["outputs"] if isinstance(o, dict)}
        heads = [n for k in ("loc", "conf") for n in (post.get(k) or [])]
        need(bool(heads) and all(h in names for h in heads), "host_postprocess",
             "names heads the model does not output")
    for name, digest in m["files"].items():
        need(isinstance(name, str) and name == Path(name).name and name not in (".", "..", MANIFEST)
             and not name.startswith("."), f"files[{name!r}]", "not a plain file name inside the package")
        need(isinstance(digest, str) and len(digest) == 64, f"files[{name!r}]", "not a SHA-256 digest")
    for side in ("inputs", "outputs"):
        need(len(m[side]) > 0, side, "empty")
        for i, spec in enumerate(m[side]):
            where = f"{side}[{i}]"
            need(isinstance(spec, dict), where, "expected an object")
            need(isinstance(spec.get("name"), str), f"{where}.name", "missing or not a string")
            shape = spec.get("shape")
            need(isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape), f"{where}.shape",
                 "missing or not a list of sizes")
            need(isinstance(spec.get("dtype"), str), f"{where}.dtype", "missing or not a string")
            try:
                np.dtype(spec["dtype"])
            except TypeError:
                need(False, f"{where}.dtype", f"unknown dtype {spec['dtype']!r}")
            perm = spec.get("perm")
            need(perm is None or (isinstance(perm, list) and sorted(perm) == list(range(len(shape)))),
                 f"{where}.perm", "not a permutation of the shape's axes")
    need(len(m["segments"]) > 0, "segments", "empty")
    for i, seg in enumerate(m["segments"]):
        where = f"segments[{i}]"
        need(isinstance(seg, dict), where, "expected an object")
        need(_is_int(seg.get("index")), f"{where}.index", "missing or not an integer")
        kind = seg.get("kind")
        need(kind in ("host", "engine"), f"{where}.kind", f"unknown segment kind {kind!r}")
        blobs = ("onnx",) if kind == "host" else ("program", "image")
        for key in blobs:
            need(seg.get(key) in m["files"], f"{where}.{key}", "missing or not a file the package lists")
        if kind == "host":
            for key in ("inputs", "outputs"):
                need(isinstance(seg.get(key), list) and all(isinstance(n, str) for n in seg[key]),
                     f"{where}.{key}", "expected a list of tensor names")
        else:
            need(_is_int(seg.get("mem_bytes")) and seg["mem_bytes"] > 0, f"{where}.mem_bytes",
                 "missing or not a positive integer")
            for key in ("inputs", "outputs"):
                need(isinstance(seg.get(key), dict) and all(isinstance(v, dict) for v in seg[key].values()),
                     f"{where}.{key}", "expected an object of buffer entries")
