"""An image bundle: the package, a Dockerfile that serves it, and Kubernetes manifests.

    write_bundle(dst, package_dir, ImageSpec(name="resnet50-image", version=1, ...))

    dst/
      model.accel/              the compiled package (copied, verified on load by the server)
      Dockerfile                python base + accelml[serve,tf], CMD accelml serve /opt/accelml/model.accel
      kubernetes/deployment.yaml  Deployment: readiness / liveness probes on the gRPC health service
      kubernetes/service.yaml     Service: the gRPC and REST ports
      kubernetes/hpa.yaml         HorizontalPodAutoscaler (autoscaling/v2, CPU utilisation)
      kubernetes/inferenceservice.yaml  KServe InferenceService (serving.kserve.io/v1beta1)
      image.json                what was built, from which models
      build.log

``manifests(spec)`` returns the four manifests as dicts (one per kind); a Kubernetes deployment
target writes them again with the service's name, replica count and autoscaling settings.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

GRPC_PORT = 50051
REST_PORT = 8501
PACKAGE_DIR = "model.accel"
MOUNT = "/opt/accelml"

__all__ = ["ImageSpec", "manifests", "dockerfile", "write_bundle", "GRPC_PORT", "REST_PORT", "PACKAGE_DIR"]


def dns_name(name: str) -> str:
    """A Kubernetes object name (RFC 1123 label) from a free-form name."""
    s = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return (s or "accelml")[:63].rstrip("-")


@dataclass(frozen=True)
class ImageSpec:
    name: str  # image (or, for a deployment, service) name
    version: int
    repository: str = "accelml"  # container registry / repository prefix
    base_image: str = "python:3.11-slim"
    device: str = "funcsim"
    replicas: int = 1
    autoscale_enabled: bool = False
    autoscale_min_replicas: int = 1
    autoscale_max_replicas: int = 10
    autoscale_target_utilization: int = 70
    cpu_cores: float = 1.0
    memory_gb: float = 2.0
    auth_secret: str | None = None  # a Kubernetes Secret holding keys.json, mounted for --auth-keys
    models: list[str] = field(default_factory=list)

    @property
    def image_ref(self) -> str:
        return f"{self.repository}/{dns_name(self.name)}:{self.version}"


def _server_args(spec: ImageSpec) -> list[str]:
    args = ["accelml", "serve", f"{MOUNT}/{PACKAGE_DIR}", "--name", spec.name, "--host", "0.0.0.0",
            "--grpc-port", str(GRPC_PORT), "--rest-port", str(REST_PORT), "--device", spec.device]
    if spec.auth_secret:
        args += ["--auth-keys", "/etc/accelml/keys/keys.json"]
    return args


def dockerfile(spec: ImageSpec) -> str:
    return "\n".join([
        f"FROM {spec.base_image}",
        "RUN pip install --no-cache-dir 'accelml[serve,tf]'",
        f"COPY {PACKAGE_DIR} {MOUNT}/{PACKAGE_DIR}",
        f"EXPOSE {GRPC_PORT} {REST_PORT}",
        f"HEALTHCHECK CMD python -c \"import grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; "
        f"assert g.HealthStub(grpc.insecure_channel('127.0.0.1:{GRPC_PORT}')).Check(h.HealthCheckRequest(), "
        "timeout=5).status == 1\"",
        "CMD " + json.dumps(_server_args(spec)),
        ""])


def manifests(spec: ImageSpec) -> dict[str, dict]:
    """Deployment, Service, HorizontalPodAutoscaler and KServe InferenceService."""
    name = dns_name(spec.name)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "accelml"}
    probe = {"grpc": {"port": GRPC_PORT}, "periodSeconds": 10, "timeoutSeconds": 5}
    resources = {"requests": {"cpu": str(spec.cpu_cores), "memory": f"{int(spec.memory_gb * 1024)}Mi"},
                 "limits": {"memory": f"{int(spec.memory_gb * 1024)}Mi"}}
    container = {
        "name": "server", "image": spec.image_ref, "args": _server_args(spec)[1:], "command": ["accelml"],
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT}, {"name": "http", "containerPort": REST_PORT}],
        "readinessProbe": {**probe, "initialDelaySeconds": 5},
        "livenessProbe": {**probe, "initialDelaySeconds": 30, "failureThreshold": 3},
        "resources": resources,
    }
    pod_spec: dict = {"containers": [container]}
    if spec.auth_secret:
        container["volumeMounts"] = [{"name": "keys", "mountPath": "/etc/accelml/keys", "readOnly": True}]
        pod_spec["volumes"] = [{"name": "keys", "secret": {"secretName": spec.auth_secret}}]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": spec.replicas, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"app.kubernetes.io/name": name},
                 "ports": [{"name": "grpc", "port": 80, "targetPort": GRPC_PORT},
                           {"name": "http", "port": REST_PORT, "targetPort": REST_PORT}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name, "labels": labels},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": spec.autoscale_min_replicas if spec.autoscale_enabled else spec.replicas,
                 "maxReplicas": spec.autoscale_max_replicas if spec.autoscale_enabled else spec.replicas,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": spec.autoscale_target_utilization}}}]},
    }
    isvc_container = {k: v for k, v in container.items() if k != "name"}
    isvc_container["name"] = "kserve-container"
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "labels": labels},
        "spec": {"predictor": {"minReplicas": spec.autoscale_min_replicas if spec.autoscale_enabled else spec.replicas,
                               "maxReplicas": spec.autoscale_max_replicas if spec.autoscale_enabled else spec.replicas,
                               "containers": [isvc_container], **({"volumes": pod_spec["volumes"]}
                                                                   if "volumes" in pod_spec else {})}},
    }
    return {"deployment": deployment, "service": service, "hpa": hpa, "inferenceservice": isvc}


def write_manifests(dst: Path, spec: ImageSpec) -> list[Path]:
    import yaml

    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for key, doc in manifests(spec).items():
        p = dst / f"{key}.yaml"
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(p)
    return out


def write_bundle(dst: Path, package: Path, spec: ImageSpec) -> None:
    """Fill the (new, empty) directory ``dst`` with the bundle for ``package``."""
    shutil.copytree(package, dst / PACKAGE_DIR)
    (dst / "Dockerfile").write_text(dockerfile(spec))
    written = write_manifests(dst / "kubernetes", spec)
    (dst / "image.json").write_text(json.dumps(asdict(spec), indent=1, sort_keys=True) + "\n")
    log = [f"image {spec.name} version {spec.version}: {spec.image_ref}",
           f"package: {PACKAGE_DIR} (from {', '.join(spec.models)})", "Dockerfile: serves it with accelml serve",
           *[f"manifest: kubernetes/{p.name}" for p in written],
           f"build the container with: docker build -t {spec.image_ref} <this directory>"]
    (dst / "build.log").write_text("\n".join(log) + "\n")
