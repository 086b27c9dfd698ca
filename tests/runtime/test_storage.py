"""Packages never lose data: a destination that is not an accelml package is refused untouched, the
input model is never overwritten, replacement is atomic, any manifest edit is refused, malformed
manifests are typed errors, and killed writers leave nothing that is read or that blocks."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from accelml.compiler import compile_model, models
from accelml.hdl.errors import DestinationError, PackageError
from accelml.runtime import cli, load, save_package, storage
from accelml.runtime.package import manifest_digest


@pytest.fixture(scope="module")
def compiled():
    return compile_model(models.build("resnet50", "reduced"), config="tiny")


@pytest.fixture(scope="module")
def pkg(compiled, tmp_path_factory):
    return save_package(compiled, tmp_path_factory.mktemp("pkg") / "m.accel")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    src = tmp_path_factory.mktemp("src") / "m.onnx"
    onnx.save(models.build("resnet50", "reduced"), src)
    return src


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def compile_cli(src, out, capsys):
    rc = cli.main(["compile", str(src), "-o", str(out), "--preset", "tiny"])
    return rc, capsys.readouterr().err


def test_compile_into_an_existing_user_directory_is_refused(tmp_path, model_file, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("a week of measurements")
    (results / "sub").mkdir()
    (results / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(tmp_path)
    rc, err = compile_cli(model_file, results, capsys)
    assert rc == DestinationError.exit_code and "is not an accelml package" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert snapshot(tmp_path) == before


def test_compile_onto_the_working_directory_or_the_model_is_refused(tmp_path, model_file, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    src = work / "m.onnx"
    shutil.copy(model_file, src)
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    for out in (Path(os.getcwd()), Path("."), src, Path("m.onnx")):
        rc, err = compile_cli(src, out, capsys)
        assert rc == DestinationError.exit_code, (out, err)
        assert snapshot(tmp_path) == before, out


def test_a_package_holding_a_foreign_file_is_not_replaced(compiled, tmp_path):
    p = save_package(compiled, tmp_path / "a.accel")
    (p / "my-notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(DestinationError, match="'my-notes.txt', which the package does not list"):
        save_package(compiled, p)
    assert snapshot(tmp_path) == before


def test_replacing_a_package_keeps_a_valid_package_at_every_instant(compiled, tmp_path, monkeypatch):
    """The swap is the only step that changes what is at the path: before it the old package loads,
    after it the new one; a failure before it leaves the old one untouched."""
    p = save_package(compiled, tmp_path / "a.accel")
    old = snapshot(p)
    assert storage.ATOMIC_SWAP  # Linux and macOS both have an atomic directory exchange

    def failing_swap(a, b):
        load(b)  # right before the swap, the old package is whole at the path
        raise OSError(5, "simulated I/O error")

    monkeypatch.setattr(storage, "_SWAP", failing_swap)
    with pytest.raises(OSError, match="simulated"):
        save_package(compiled, p)
    assert snapshot(p) == old and not [q for q in tmp_path.iterdir() if q.name != "a.accel"]
    monkeypatch.undo()
    save_package(compiled, p)  # a real replacement: same content, no temporaries left
    assert snapshot(p) == old and sorted(q.name for q in tmp_path.iterdir()) == ["a.accel"]


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from accelml.compiler import compile_model, models
    from accelml.runtime import save_package, storage
    cm = compile_model(models.build("resnet50", "reduced"), config="tiny")
    real = storage._SWAP if {when!r} == "after-swap" else None
    def die(*a):
        if real is not None:
            real(*a)
        os.kill(os.getpid(), signal.SIGKILL)
    if {when!r} == "before-swap":
        storage._SWAP = die
    elif {when!r} == "after-swap":
        storage._SWAP = die
    else:
        storage.fsync_tree = die
    save_package(cm, sys.argv[1])
""")


@pytest.mark.parametrize("when", ["while-writing", "before-swap", "after-swap"])
def test_a_writer_killed_at_any_step_leaves_a_valid_package(pkg, tmp_path, when):
    p = tmp_path / "a.accel"
    shutil.copytree(pkg, p)
    r = subprocess.run([sys.executable, "-c", KILLED_WRITER.format(when=when), str(p)], capture_output=True)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()[-2000:]
    load(p)  # the old package (or, after the swap, the new one) is whole at the path
    stale = storage.stale_temporaries(p)
    assert len(stale) == 1  # the killed writer's temporary, recognised as stale
    x = np.zeros((1, 3, 64, 64), np.float32)
    reference = load(pkg).run({"input": x})["logits"]
    np.testing.assert_array_equal(load(p).run({"input": x})["logits"], reference)
    # the next writer removes it, and only it
    (tmp_path / ".a.accel.unrelated").mkdir()
    save_package(load_compiled(), p)
    assert sorted(q.name for q in tmp_path.iterdir()) == [".a.accel.unrelated", "a.accel"]


_COMPILED = {}


def load_compiled():
    if "cm" not in _COMPILED:
        _COMPILED["cm"] = compile_model(models.build("resnet50", "reduced"), config="tiny")
    return _COMPILED["cm"]


def test_editing_one_output_address_is_refused(pkg, tmp_path):
    p = tmp_path / "e.accel"
    shutil.copytree(pkg, p)
    m = json.loads((p / "manifest.json").read_text())
    seg = next(s for s in m["segments"] if s["kind"] == "engine")
    view = next(iter(seg["outputs"].values()))
    view["addr"] += 64
    (p / "manifest.json").write_text(json.dumps(m, indent=1))
    with pytest.raises(PackageError, match="manifest.json does not match its hash"):
        load(p)


def _rehashed(pkg, tmp_path, edit):
    p = tmp_path / "r.accel"
    if p.exists():
        shutil.rmtree(p)
    shutil.copytree(pkg, p)
    m = json.loads((p / "manifest.json").read_text())
    edit(m)
    m["manifest_sha256"] = manifest_digest(m)
    (p / "manifest.json").write_text(json.dumps(m))
    return p


def _engine(m):
    return next(s for s in m["segments"] if s["kind"] == "engine")


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.pop("inputs"), "manifest inputs: missing"),
    (lambda m: m.__setitem__("outputs", "logits"), "manifest outputs: expected list"),
    (lambda m: m["inputs"][0].__setitem__("shape", "1x3"), r"inputs\[0\].shape"),
    (lambda m: m["inputs"][0].__setitem__("dtype", "float99"), "unknown dtype 'float99'"),
    (lambda m: m["inputs"][0].__setitem__("perm", [0, 0, 1, 2]), "not a permutation"),
    (lambda m: m["segments"].__setitem__(0, 7), r"segments\[0\]: expected an object"),
    (lambda m: _engine(m).__setitem__("kind", "gpu"), "unknown segment kind 'gpu'"),
    (lambda m: _engine(m).__setitem__("mem_bytes", "lots"), "mem_bytes: missing or not a positive integer"),
    (lambda m: _engine(m).__setitem__("program", "../../etc/passwd"), "program: missing or not a file"),
    (lambda m: m["files"].__setitem__("../x", "0" * 64), "not a plain file name"),
    (lambda m: next(iter(_engine(m)["outputs"].values())).__setitem__("addr", 1 << 40), "past the segment's"),
    (lambda m: next(iter(_engine(m)["outputs"].values())).pop("h"), "malformed buffer entry"),
    (lambda m: m.__setitem__("engine_config", {"native_dim": "x"}), "engine_config"),
])
def test_malformed_manifests_are_typed_errors(pkg, tmp_path, edit, message, capsys):
    p = _rehashed(pkg, tmp_path, edit)
    with pytest.raises(PackageError, match=message):
        load(p)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 64, 64), np.float32))
    rc = cli.main(["run", str(p), "--input", f"input={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz")])
    err = capsys.readouterr().err
    assert rc == PackageError.exit_code and "internal error" not in err and err.strip().count("\n") == 0


def test_cli_outputs_never_replace_inputs_or_foreign_files(tmp_path, capsys, pkg):
    src = tmp_path / "p.s"
    src.write_text("halt\n")
    before = src.read_text()
    assert cli.main(["asm", str(src), "-o", str(src), "--preset", "tiny"]) == DestinationError.exit_code
    assert src.read_text() == before
    (tmp_path / "p.bin").write_text("my own notes")
    assert cli.main(["asm", str(src), "--preset", "tiny"]) == DestinationError.exit_code
    assert (tmp_path / "p.bin").read_text() == "my own notes"
    (tmp_path / "p.bin").unlink()
    assert cli.main(["asm", str(src), "--preset", "tiny"]) == 0  # and again: its own output is replaced
    assert cli.main(["asm", str(src), "--preset", "tiny"]) == 0
    assert cli.main(["disasm", str(tmp_path / "p.bin"), "-o", str(src)]) == DestinationError.exit_code
    assert src.read_text() == before
    assert cli.main(["disasm", str(tmp_path / "p.bin"), "-o", str(src), "--force"]) == 0
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 64, 64), np.float32))
    x_bytes = x.read_bytes()
    assert cli.main(["run", str(pkg), "--input", f"input={x}", "-o", str(x)]) == DestinationError.exit_code
    assert x.read_bytes() == x_bytes
    capsys.readouterr()
