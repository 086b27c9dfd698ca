"""Web services: an image deployed on a compute target.

    config = AksWebservice.deploy_configuration(autoscale_enabled=False, num_replicas=1, auth_enabled=False)
    service = Webservice.deploy_from_image(workspace=ws, name="my-service", image=image,
                                           deployment_config=config, deployment_target=target)
    service.wait_for_deployment(show_output=True)     # started, ready line seen, gRPC health SERVING
    service.scoring_uri                                # "http://127.0.0.1:PORT" (the gRPC port)
    service.get_keys(); service.regen_key("Primary"); service.delete()

The replica is ``accelml serve`` on this machine (``runtime.workspace.local``), started in its own
process group with its log, process record and keys under ``<workspace>/services/<name>/``; a
Kubernetes target also writes the service's manifests (see ``compute``). ``state`` is
"Transitioning" until ``wait_for_deployment`` succeeds, then "Healthy"; "Unhealthy" when the
recorded process is gone (a stale PID: exited, killed, or its number reused by another program);
"Failed" when start-up failed or the deploying process died before it started the replica.
``delete`` stops every server process of the service (found by its working directory, so also
one whose PID was never recorded) and removes the record. With ``auth_enabled`` (the default, as in Azure) the server
requires one of the two keys (``access_token`` of ``PredictionClient``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass

from accelml.hdl.errors import ServeError, WorkspaceError
from accelml.runtime.workspace import local
from accelml.runtime.workspace.bundle import ImageSpec, write_manifests
from accelml.runtime.workspace.registry import dumps, now

__all__ = ["Webservice", "AksWebservice", "LocalWebservice", "AksServiceDeploymentConfiguration"]


@dataclass
class AksServiceDeploymentConfiguration:
    autoscale_enabled: bool = False
    autoscale_min_replicas: int = 1
    autoscale_max_replicas: int = 10
    autoscale_target_utilization: int = 70
    num_replicas: int = 1
    auth_enabled: bool = True
    cpu_cores: float = 1.0
    memory_gb: float = 2.0
    description: str | None = None
    tags: dict | None = None
    startup_timeout: float = 300.0


class Webservice:
    """A deployed service."""

    def __init__(self, workspace, name: str, _row=None):
        self.workspace = workspace
        if _row is None:
            rows = workspace.registry.query("SELECT * FROM services WHERE name=?", (name,))
            if not rows:
                raise WorkspaceError(f"service {name!r} does not exist in workspace {workspace.name!r}")
            _row = rows[0]
        self.name, self.compute_name, self._image_id = _row["name"], _row["compute"], _row["image_id"]
        self.config = json.loads(_row["config"])
        self._state = _row["state"]
        self.runtime = json.loads(_row["runtime"])
        self.created_time = _row["created"]

    def __repr__(self) -> str:
        return f"Webservice(name={self.name!r}, state={self.state!r})"

    @property
    def service_dir(self):
        return self.workspace.path / "services" / self.name

    @property
    def image(self):
        from .image import Image

        (row,) = self.workspace.registry.query("SELECT * FROM images WHERE id=?", (self._image_id,))
        return Image(self.workspace, _row=row)

    @property
    def state(self) -> str:
        if self._state not in ("Healthy", "Transitioning"):
            return self._state
        pid = self.runtime.get("pid")
        if pid and not local.running(pid, self.service_dir):
            return "Unhealthy"
        if not pid and not local.process_alive(self.runtime.get("deployer")):
            return "Failed"  # the deploying process died before it started the server
        return self._state

    @property
    def scoring_uri(self) -> str | None:
        port = self.runtime.get("grpc_port")
        return f"http://{local.HOST}:{port}" if port else None

    @property
    def rest_uri(self) -> str | None:
        port = self.runtime.get("rest_port")
        return f"http://{local.HOST}:{port}" if port else None

    @property
    def auth_enabled(self) -> bool:
        return bool(self.config.get("auth_enabled"))

    @staticmethod
    def deploy_configuration(**kwargs) -> AksServiceDeploymentConfiguration:
        return AksServiceDeploymentConfiguration(**kwargs)

    @classmethod
    def list(cls, workspace, compute_type=None, image_name=None, **_ignored) -> list[Webservice]:
        rows = workspace.registry.query("SELECT * FROM services ORDER BY name")
        return [cls(workspace, r["name"], _row=r) for r in rows]

    @classmethod
    def deploy_from_image(cls, workspace, name: str, image, deployment_config=None, deployment_target=None,
                          overwrite: bool = False) -> Webservice:
        """Record the service, write its manifests (Kubernetes target) and start its replica."""
        from .compute import ComputeTarget

        config = deployment_config or AksServiceDeploymentConfiguration()
        if deployment_target is None:
            raise WorkspaceError(f"service {name!r}: give a deployment_target (ComputeTarget.create)")
        target = ComputeTarget(workspace, deployment_target.name)  # must exist
        if not name or not isinstance(name, str):
            raise WorkspaceError(f"service name {name!r} is not a non-empty string")
        svc_dir = workspace.path / "services" / name
        with workspace.registry.transaction() as db:
            if db.execute("SELECT 1 FROM services WHERE name=?", (name,)).fetchone():
                raise WorkspaceError(f"service {name!r} already exists in workspace {workspace.name!r}")
            if db.execute("SELECT 1 FROM images WHERE id=?", (image._id,)).fetchone() is None:
                raise WorkspaceError(f"image {image.id} does not exist in workspace {workspace.name!r}")
            db.execute("INSERT INTO services (name, image_id, compute, config, state, runtime, created) "
                       "VALUES (?, ?, ?, ?, 'Transitioning', ?, ?)",
                       (name, image._id, target.name, dumps(asdict(config)), dumps({"deployer": os.getpid()}), now()))
        if svc_dir.exists():  # left by a deployment of the same name that was killed: ours to replace
            local.stop(svc_dir)
            shutil.rmtree(svc_dir)
        svc_dir.mkdir(parents=True)
        if config.auth_enabled:
            local.write_keys(svc_dir / local.KEYS, local.new_key(), local.new_key())
        if target.kind == "kubernetes":
            spec = ImageSpec(name=name, version=image.version, replicas=config.num_replicas,
                             autoscale_enabled=config.autoscale_enabled,
                             autoscale_min_replicas=config.autoscale_min_replicas,
                             autoscale_max_replicas=config.autoscale_max_replicas,
                             autoscale_target_utilization=config.autoscale_target_utilization,
                             cpu_cores=config.cpu_cores, memory_gb=config.memory_gb,
                             auth_secret=f"{name}-keys" if config.auth_enabled else None,
                             device=image.config.get("device", "funcsim"),
                             repository=image.config.get("repository", "accelml"), models=[image.id])
            write_manifests(target.manifest_dir / name, spec)
        pid = local.start(image.package_path, name, svc_dir, auth=config.auth_enabled,
                          device=image.config.get("device", "funcsim"))
        with workspace.registry.transaction() as db:
            db.execute("UPDATE services SET runtime=? WHERE name=?",
                       (dumps({"pid": pid, "deployer": os.getpid()}), name))
        return cls(workspace, name)

    def _update(self, state: str, runtime: dict) -> None:
        with self.workspace.registry.transaction() as db:
            db.execute("UPDATE services SET state=?, runtime=? WHERE name=?", (state, dumps(runtime), self.name))
        self._state, self.runtime = state, runtime

    def wait_for_deployment(self, show_output: bool = False) -> None:
        """Wait until the replica is ready and its gRPC health check says SERVING."""
        if self._state == "Healthy" and self.state == "Healthy":
            return
        from rich.console import Console

        console = Console(stderr=True, quiet=not show_output)
        timeout = float(self.config.get("startup_timeout", 300.0))
        try:
            with console.status(f"starting {self.name}"):
                grpc_port, rest_port = local.wait_ready(self.runtime.get("pid"), self.service_dir, self.name, timeout)
        except ServeError:
            self._update("Failed", self.runtime)
            raise
        self._update("Healthy", {**self.runtime, "grpc_port": grpc_port, "rest_port": rest_port})
        if show_output:
            print(f"{self.name}: Healthy, scoring_uri {self.scoring_uri}")

    def get_logs(self, num_lines: int = 5000) -> str:
        try:
            return "\n".join((self.service_dir / local.LOG).read_text(errors="replace").splitlines()[-num_lines:])
        except OSError:
            return ""

    def get_keys(self) -> tuple[str, str]:
        if not self.auth_enabled:
            raise ServeError(f"service {self.name!r} has authentication disabled (no keys)")
        return local.read_keys(self.service_dir / local.KEYS)

    def regen_key(self, key: str) -> None:
        """Replace the "Primary" or "Secondary" key (the file is rewritten atomically)."""
        primary, secondary = self.get_keys()
        if key.lower() == "primary":
            primary = local.new_key()
        elif key.lower() == "secondary":
            secondary = local.new_key()
        else:
            raise ServeError(f"service {self.name!r}: key must be 'Primary' or 'Secondary', not {key!r}")
        local.write_keys(self.service_dir / local.KEYS, primary, secondary)

    def delete(self) -> None:
        """Stop the replica (its process group) and remove the service."""
        local.stop(self.service_dir)
        with self.workspace.registry.transaction() as db:
            if db.execute("DELETE FROM services WHERE name=?", (self.name,)).rowcount == 0:
                raise WorkspaceError(f"service {self.name!r} does not exist in workspace {self.workspace.name!r}")
        shutil.rmtree(self.service_dir, ignore_errors=True)


class AksWebservice(Webservice):
    """A service on a Kubernetes target."""


class LocalWebservice(Webservice):
    """A service on the local target."""
