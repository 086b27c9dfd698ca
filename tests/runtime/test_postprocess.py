"""SSD host post-processing declared by a package: Model.run returns the heads and the decoded
detections, equal to decoding the heads with the one definition; bad declarations are refused."""

import json
import shutil

import numpy as np
import pytest

from accelml.compiler import compile_model, models
from accelml.hdl.errors import ConfigError, PackageError
from accelml.runtime import cli, load, save_package
from accelml.runtime.package import manifest_digest
from accelml.runtime.postprocess import DETECTION_OUTPUTS, SsdPostprocess


@pytest.fixture(scope="module")
def ssd_pkg(tmp_path_factory):
    cm = compile_model(models.build("ssd_vgg", "reduced"), config="a10", precision="fast", postprocess="ssd")
    return save_package(cm, tmp_path_factory.mktemp("ssd") / "ssd.accel")


def test_model_run_returns_heads_and_their_decoded_detections(ssd_pkg):
    model = load(ssd_pkg)
    post = model.manifest["host_postprocess"]
    assert post["kind"] == "ssd" and post["num_classes"] == 21 and post["input_size"] == 300
    assert [o["name"] for o in model.outputs][-3:] == list(DETECTION_OUTPUTS)
    x = np.random.default_rng(0).standard_normal((1, 3, 300, 300)).astype(np.float32)
    out = model.run({"input": x})
    heads = {k: v for k, v in out.items() if k not in DETECTION_OUTPUTS}
    boxes, scores, classes = models.ssd_postprocess(heads)
    np.testing.assert_array_equal(out["detection_boxes"], boxes)
    np.testing.assert_array_equal(out["detection_scores"], scores)
    np.testing.assert_array_equal(out["detection_classes"], classes)
    assert len(scores) > 0 and np.all(np.diff(scores) <= 0) and classes.min() >= 1


def test_nhwc_heads_decode_like_nchw_ones():
    rng = np.random.default_rng(1)
    sizes, anchors = [4, 2], [4, 6]
    nchw, nhwc = {}, {}
    for i, (f, a) in enumerate(zip(sizes, anchors, strict=True)):
        for kind, per in (("loc", 4), ("conf", 21)):
            x = rng.standard_normal((1, a * per, f, f)).astype(np.float32)
            nchw[f"{kind}{i}"] = x
            nhwc[f"{kind}{i}"] = x.transpose(0, 2, 3, 1).reshape(1, f, f, a, per)
    spec = {"loc": ["loc0", "loc1"], "conf": ["conf0", "conf1"], "num_classes": 21, "input_size": 300}
    a = SsdPostprocess({**spec, "layout": "nchw"})(nchw)
    b = SsdPostprocess({**spec, "layout": "nhwc"})(nhwc)
    for k in DETECTION_OUTPUTS:
        np.testing.assert_array_equal(a[k], b[k])


def test_postprocess_of_a_model_without_heads_is_refused(tmp_path, capsys):
    with pytest.raises(PackageError, match="not SSD heads"):
        compile_model(models.build("resnet50", "reduced"), config="tiny", precision="fast", postprocess="ssd")
    with pytest.raises(ConfigError, match="unknown postprocess"):
        compile_model(models.build("resnet50", "reduced"), config="tiny", postprocess="yolo")


def test_a_declaration_naming_missing_heads_is_refused(ssd_pkg, tmp_path):
    p = tmp_path / "bad.accel"
    shutil.copytree(ssd_pkg, p)
    m = json.loads((p / "manifest.json").read_text())
    m["host_postprocess"]["loc"][0] = "nothing"
    m["manifest_sha256"] = manifest_digest(m)
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="names heads the model does not output"):
        load(p)
    assert cli.main(["run", str(p), "--input", "input=x.npy", "-o", str(tmp_path / "y.npz")]) == PackageError.exit_code


def test_served_detections_equal_model_run_and_a_batch_is_refused(ssd_pkg):
    import requests

    from accelml.runtime.serve import ServeOptions, Server

    x = np.random.default_rng(2).standard_normal((1, 3, 300, 300)).astype(np.float32)
    want = load(ssd_pkg).run({"input": x})
    with Server(ServeOptions(ssd_pkg, grpc_port=0, rest_port=0, max_request_bytes=64 << 20)) as srv:
        url = f"http://127.0.0.1:{srv.rest_port}/v1/models/{srv.name}:predict"
        r = requests.post(url, json={"inputs": {"input": x.tolist()}}, timeout=120)
        assert r.status_code == 200, r.text
        got = r.json()["outputs"]
        np.testing.assert_array_equal(np.asarray(got["detection_classes"]), want["detection_classes"])
        np.testing.assert_allclose(np.asarray(got["detection_scores"], np.float32), want["detection_scores"], rtol=0)
        r = requests.post(url, json={"inputs": {"input": np.concatenate([x, x]).tolist()}}, timeout=120)
        assert r.status_code == 400 and "one image per request" in r.json()["error"]
