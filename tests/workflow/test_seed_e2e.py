"""The documented workflow, end to end: the seed documents' 2021 and 2019 code runs against
accelml with only these changes (``adapt``):

* ``azureml`` -> ``accelml`` in imports;
* ``import tensorflow as tf`` -> ``import tensorflow.compat.v1 as tf; tf.disable_v2_behavior()``;
* host and port from ``scoring_uri`` (the service listens on a local port, not 80 / 443);
* labels from accelml (``imagenet_classes()``) instead of a download with ``requests``.

and, because the documents themselves are not runnable as printed: the 2021 article lists the
other networks' output tensor names as alternatives (only the ResNet-50 one is kept); the 2019
article has a missing comma in ``Model.register``, IPython ``%%time`` lines, uses ``AksCompute``,
``ComputeTarget``, ``AksWebservice`` and ``Webservice`` without importing them and never creates
``client`` (the 2021 article's client code is used, with the service key since the 2019 default
configuration enables authentication). A probe after the scoring block records the scores and a
copy of the package, and the test checks that the service returned exactly what
``runtime.load(package).run`` computes on the same JPEG.

The featurizer is the reduced ResNet-50 (``ACCELML_ACCEL_MODEL_SIZE=reduced``); it needs the
server (``accelml serve``, ``accelml.runtime.client``) and is skipped without it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SEEDS = Path(__file__).with_name("seeds")
BLOCK = "\n# ---- block ----\n"


from accelml.runtime.workspace.local import server_available  # noqa: E402

needs_server = pytest.mark.skipif(not server_available(), reason="needs the server (accelml serve, runtime.client)")

PROBE = """
import json as _json, shutil as _shutil
_json.dump({"scores": [float(s) for _, s in sorted_results], "classes": [int(c) for c, _ in sorted_results]},
           open("probe.json", "w"))
_shutil.copytree(converted_model.path, "package_copy.accel")
"""

CLIENT_2019 = """
from accelml.accel import PredictionClient

address = aks_service.scoring_uri
ssl_enabled = address.startswith("https")
address = address[address.find('/')+2:].strip('/')
address, port = address.rsplit(":", 1)

client = PredictionClient(address=address,
                          port=int(port),
                          use_ssl=ssl_enabled,
                          service_name=aks_service.name,
                          access_token=aks_service.get_keys()[0])
"""


def adapt(code: str) -> str:
    """The allowed changes (see the module docstring)."""
    code = code.replace("import tensorflow as tf", "import tensorflow.compat.v1 as tf; tf.disable_v2_behavior()")
    code = re.sub(r"\bazureml\.", "accelml.", code)
    code = code.replace("port = 443 if ssl_enabled else 80", 'address, port = address.rsplit(":", 1); port = int(port)')
    code, n = re.subn(r"import requests\nclasses_entries = requests\.get\(\s*\"[^\"]+\"\)\.text\.splitlines\(\)",
                      "from accelml.accel.models import imagenet_classes\nclasses_entries = imagenet_classes()", code)
    assert n == 1
    return code


def script_2021() -> str:
    blocks = (SEEDS / "seed_2021.txt").read_text().split(BLOCK)
    alternatives = [b for b in blocks if b.startswith("output_tensors =") and "resnet_v1_50" not in b]
    assert len(alternatives) == 4
    blocks = [b for b in blocks if b not in alternatives]
    i = next(k for k, b in enumerate(blocks) if "sorted_results" in b)
    return adapt("\n".join(blocks[:i + 1] + [PROBE] + blocks[i + 1:]))


def script_2019() -> str:
    text = (SEEDS / "seed_2019.txt").read_text()
    text = text.replace("workspace = ws\n", "workspace = ws,\n", 1)  # the article's missing comma
    text = "\n".join(ln for ln in text.splitlines() if ln.strip() != "%%time")
    blocks = text.split(BLOCK)
    deploy = next(k for k, b in enumerate(blocks) if "AksCompute.provisioning_configuration" in b)
    blocks[deploy] = ("from azureml.core.compute import AksCompute, ComputeTarget\n"
                      "from azureml.core.webservice import Webservice, AksWebservice\n" + blocks[deploy])
    score = next(k for k, b in enumerate(blocks) if "sorted_results" in b)
    blocks[score] = CLIENT_2019 + blocks[score]
    return adapt("\n".join(blocks[:score + 1] + [PROBE] + blocks[score + 1:]))


@pytest.mark.parametrize("make_script", [script_2021, script_2019], ids=["2021", "2019"])
def test_scripts_adapt_cleanly(make_script):
    """Only the listed changes are made: nothing named azureml or requests remains."""
    code = make_script()
    compile(code, make_script.__name__, "exec")
    assert "azureml" not in code and "requests" not in code and "import tensorflow as tf" not in code


@needs_server
@pytest.mark.parametrize("make_script", [script_2021, script_2019], ids=["2021", "2019"])
def test_seed_document_runs(make_script, tmp_path, make_jpeg):
    from accelml.core import Model, Workspace
    from accelml.runtime import load
    from accelml.runtime.workspace import local

    ws = Workspace.create("ws", path=tmp_path / "ws")
    ws.write_config(tmp_path)
    jpeg = make_jpeg(7, (120, 160, 3))
    (tmp_path / "snowleopardgaze.jpg").write_bytes(jpeg)
    (tmp_path / "seed.py").write_text(make_script())
    cache = os.environ.get("ACCELML_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "accelml")  # keep the built kernels
    env = {**os.environ, "HOME": str(tmp_path), "ACCELML_ACCEL_MODEL_SIZE": "reduced", "TF_CPP_MIN_LOG_LEVEL": "3",
           "ACCELML_CACHE_DIR": cache}
    try:
        proc = subprocess.run([sys.executable, "seed.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
    finally:
        for d in (ws.path / "services").glob("*") if (ws.path / "services").exists() else []:
            local.stop(d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Successfully registered:" in out and "resnet50-image(v.1 [Succeeded])" in out
    assert len(re.findall(r" confidence: [0-9.e-]+$", out, re.M)) == 5
    probe = json.loads((tmp_path / "probe.json").read_text())
    pkg = load(tmp_path / "package_copy.accel")
    (name,) = [o["name"] for o in pkg.outputs]
    want = pkg.run({"Placeholder:0": np.array([jpeg], dtype=object)})[name].reshape(-1)
    assert probe["scores"] == sorted(want.tolist(), reverse=True)
    assert probe["classes"][0] == int(np.argmax(want))
    ws = Workspace.open(ws.path)  # deleted in order: nothing is left
    assert Model.list(ws) == [] and ws.images == {} and ws.webservices == {}
