"""Packages: hashes verified, another engine's package refused, bad inputs named; compile/run CLI."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from accelml.compiler import compile_model, models
from accelml.hdl.config import preset
from accelml.hdl.errors import PackageError
from accelml.runtime import cli, load, save_package
from accelml.runtime.package import manifest_digest


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    path = tmp_path_factory.mktemp("pkg") / "resnet.accel"
    save_package(compile_model(models.build("resnet50", "reduced"), config="tiny"), path)
    return path


def copy(pkg, tmp_path):
    dst = tmp_path / "copy.accel"
    shutil.copytree(pkg, dst)
    return dst


def test_manifest_records_config_inputs_outputs_and_hashes(pkg):
    m = json.loads((pkg / "manifest.json").read_text())
    assert m["config_hash"] == preset("tiny").hash
    assert m["inputs"] == [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32", "perm": None}]
    assert m["outputs"][0]["name"] == "logits"
    assert set(m["files"]) == {p.name for p in pkg.iterdir() if p.name != "manifest.json"}
    layers = m["segments"][0]["layers"]
    assert layers[0]["macs"] > 0 and all("cycles" in lr for lr in layers)


def test_corrupt_file_is_refused(pkg, tmp_path):
    p = copy(pkg, tmp_path)
    img = p / "seg0.img"
    data = bytearray(img.read_bytes())
    data[100] ^= 1
    img.write_bytes(bytes(data))
    with pytest.raises(PackageError, match="seg0.img does not match its hash"):
        load(p)


def test_missing_file_and_missing_manifest(pkg, tmp_path):
    p = copy(pkg, tmp_path)
    (p / "seg0.prog").unlink()
    with pytest.raises(PackageError, match="missing file seg0.prog"):
        load(p)
    with pytest.raises(PackageError, match="no manifest.json"):
        load(tmp_path)


def test_package_for_another_engine_is_refused(pkg, tmp_path):
    with pytest.raises(PackageError, match="built for EngineConfig tiny .* not for a10"):
        load(pkg, config=preset("a10"))
    p = copy(pkg, tmp_path)
    m = json.loads((p / "manifest.json").read_text())
    m["engine_config"]["tiles"] = 4
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="manifest.json does not match its hash"):
        load(p)
    m["manifest_sha256"] = manifest_digest(m)  # even re-hashed, the config no longer matches its hash
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="does not match its recorded hash"):
        load(p)


def test_bad_inputs_are_named(pkg):
    model = load(pkg)
    with pytest.raises(PackageError, match="missing input 'input'"):
        model.run({})
    with pytest.raises(PackageError, match=r"input 'input': expected shape \(1, 3, 64, 64\)"):
        model.run({"input": np.zeros((1, 3, 32, 32), np.float32)})
    with pytest.raises(PackageError, match="unknown input"):
        model.run({"input": np.zeros((1, 3, 64, 64), np.float32), "extra": np.zeros(1)})


def test_cli_compile_explain_and_run(tmp_path, capsys):
    src = tmp_path / "r.onnx"
    onnx.save(models.build("resnet50", "reduced"), src)
    out = tmp_path / "r.accel"
    png = tmp_path / "r.png"
    assert cli.main(["compile", str(src), "-o", str(out), "--preset", "tiny", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "roofline efficiency" in text and png.stat().st_size > 1000
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["run", str(out), "--input", f"input={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz")]) == 0
    y = np.load(tmp_path / "y.npz")["logits"]
    np.testing.assert_array_equal(y, load(out).run({"input": x})["logits"])
    assert cli.main(["compile", str(src), "--explain"]) == 0
    assert "every node runs on the engine" in capsys.readouterr().out


@pytest.mark.parametrize("case,code,message", [
    ("truncated", 7, "not a readable ONNX protobuf"),
    ("dynamic", 8, "dimension 2 ('h') is dynamic"),
])
def test_cli_compile_failures_write_nothing(tmp_path, capsys, case, code, message):
    from compiler_util import make_model
    from onnx import helper

    src = tmp_path / "bad.onnx"
    if case == "truncated":
        src.write_bytes(models.build("resnet50", "reduced").SerializeToString()[:500])
    else:
        onnx.save(make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 3, "h", 4]}, ["y"]), src)
    out = tmp_path / "bad.accel"
    rc = cli.main(["compile", str(src), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == code, err
    assert message in err and "Traceback" not in err and err.strip().count("\n") <= 1
    assert not out.exists() and not list(tmp_path.glob(".bad.accel*"))


def test_explain_lists_every_node_the_engine_cannot_run(tmp_path, capsys):
    from compiler_util import make_model
    from onnx import helper

    src = tmp_path / "m.onnx"
    onnx.save(make_model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv1d"),
                          helper.make_node("Sin", ["c"], ["y"], name="sine")], {"x": [1, 2, 8]}, ["y"],
                         {"w": np.ones((2, 2, 3), np.float32)}), src)
    assert cli.main(["compile", str(src), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "not supported on the engine (2)" in out and "conv1d" in out and "sine" in out


def test_run_with_unreadable_input_file(tmp_path, capsys, pkg):
    (tmp_path / "x.npy").write_text("not numpy")
    rc = cli.main(["run", str(pkg), "--input", f"input={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz")])
    assert rc == 2 and "not a readable .npy file" in capsys.readouterr().err
    assert not (tmp_path / "y.npz").exists()


sys.path.insert(0, str(Path(__file__).parent.parent / "compiler"))
