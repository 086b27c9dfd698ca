"""Image bundles: the Kubernetes manifests validate against the Kubernetes schemas offline
(kubernetes-validate), the Dockerfile serves the package."""

from __future__ import annotations

import pytest
import yaml

from accelml.runtime.workspace.bundle import GRPC_PORT, ImageSpec, dockerfile, manifests, write_manifests

kv = pytest.importorskip("kubernetes_validate")
K8S_VERSION = "1.30.0"


@pytest.mark.parametrize("spec", [
    ImageSpec(name="resnet50-image", version=3),
    ImageSpec(name="My_Service.1", version=1, replicas=2, autoscale_enabled=True, autoscale_min_replicas=2,
              autoscale_max_replicas=5, auth_secret="my-service-keys"),
], ids=["plain", "autoscaled-with-keys"])
def test_manifests_validate(spec, tmp_path):
    docs = manifests(spec)
    for kind in ("deployment", "service", "hpa"):
        kv.validate(docs[kind], K8S_VERSION, strict=True)
    # the InferenceService is a KServe custom resource (no built-in schema): its predictor's pod
    # fields are validated as the core Pod they become
    with pytest.raises(kv.SchemaNotFoundError):
        kv.validate(docs["inferenceservice"], K8S_VERSION, strict=True)
    pred = docs["inferenceservice"]["spec"]["predictor"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {k: v for k, v in pred.items() if k in ("containers", "volumes")}}
    kv.validate(pod, K8S_VERSION, strict=True)
    dep = docs["deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert dep["readinessProbe"]["grpc"]["port"] == GRPC_PORT and dep["livenessProbe"]["grpc"]["port"] == GRPC_PORT
    assert docs["deployment"]["metadata"]["name"] == ("resnet50-image" if spec.version == 3 else "my-service-1")
    assert ("--auth-keys" in dep["args"]) == bool(spec.auth_secret)
    hpa = docs["hpa"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == ((2, 5) if spec.autoscale_enabled else (1, 1))
    written = write_manifests(tmp_path, spec)
    assert [yaml.safe_load(p.read_text()) for p in written] == list(docs.values())


def test_invalid_manifest_is_caught():
    """The validation can fail: a Deployment without its selector is refused."""
    bad = manifests(ImageSpec(name="x", version=1))["deployment"]
    del bad["spec"]["selector"]
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


def test_dockerfile_serves_the_package():
    text = dockerfile(ImageSpec(name="resnet50-image", version=1))
    assert "COPY model.accel /opt/accelml/model.accel" in text
    assert 'CMD ["accelml", "serve", "/opt/accelml/model.accel", "--name", "resnet50-image"' in text
    assert f"EXPOSE {GRPC_PORT}" in text
