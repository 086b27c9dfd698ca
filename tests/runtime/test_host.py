"""The host contract in the runtime: a JPEG-input package takes image bytes (decoded, resized and
normalised by runtime/host.py), names its real input, refuses bad bytes with a typed error; and
concurrent ``Model.run`` calls on threads give exactly the serial results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from serve_util import jpeg_bytes

from accelml.hdl.errors import PackageError
from accelml.runtime import load
from accelml.runtime.host import HostPreprocess


def _images(*seeds) -> np.ndarray:
    arr = np.empty(len(seeds), dtype=object)
    arr[:] = [jpeg_bytes(s) for s in seeds]
    return arr


def test_jpeg_package_takes_encoded_bytes(jpeg_pkg):
    model = load(jpeg_pkg)
    assert model.inputs == [{"name": "jpeg", "shape": [1], "dtype": "string", "perm": None}]
    assert isinstance(model.host, HostPreprocess) and model.host.output == "image"
    data = jpeg_bytes(3)
    got = model.run({"jpeg": np.array([data], dtype=object)})["scores"]
    # the same as feeding the pixels the host description makes, bit for bit
    want = model.run({"image": model.host(data)})["scores"]
    assert got.shape == (1, 5) and np.array_equal(got, want)
    assert np.array_equal(model.run({"jpeg": data})["scores"], want)  # plain bytes too
    other = model.run({"jpeg": _images(4)})["scores"]
    assert not np.array_equal(other, got)  # the image matters


@pytest.mark.parametrize("feed, match", [
    (np.array([b"not a jpeg at all"], dtype=object), r"input 'jpeg': not a decodable jpeg image"),
    (np.array([b"\xff\xd8\xff\xe0" + b"\0" * 40], dtype=object), r"input 'jpeg': not a decodable jpeg image"),
    (np.zeros(3, np.float32), r"input 'jpeg': expected encoded image bytes \(dtype string\), got float32"),
    (np.array([1, "x"], dtype=object), r"input 'jpeg': expected encoded image bytes, got an element of type int"),
])
def test_bad_image_bytes_are_typed_errors_naming_the_input(jpeg_pkg, feed, match):
    with pytest.raises(PackageError, match=match):
        load(jpeg_pkg).run({"jpeg": feed})


def test_one_image_per_run_and_not_both_inputs(jpeg_pkg):
    model = load(jpeg_pkg)
    with pytest.raises(PackageError, match="one encoded image per run, got 2"):
        model.run({"jpeg": _images(1, 2)})
    with pytest.raises(PackageError, match="not both"):
        model.run({"jpeg": _images(1), "image": np.zeros((1, 32, 32, 3), np.float32)})


def _concurrent_equals_serial(model, feeds: list[dict]) -> None:
    serial = [model.run(f) for f in feeds]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            got = list(pool.map(model.run, feeds))
            for g, s in zip(got, serial, strict=True):
                assert g.keys() == s.keys()
                for k in s:
                    assert np.array_equal(g[k], s[k]), k


def test_concurrent_runs_equal_serial_runs(small_pkg, jpeg_pkg):
    rng = np.random.default_rng(5)
    model = load(small_pkg)
    _concurrent_equals_serial(model, [{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
                                      for _ in range(16)])
    _concurrent_equals_serial(load(jpeg_pkg), [{"jpeg": _images(s)} for s in range(8)])
