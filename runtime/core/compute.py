"""Compute targets: where a service runs.

    prov_config = AksCompute.provisioning_configuration(vm_size="Standard_PB6s", agent_count=1)
    aks_target = ComputeTarget.create(workspace=ws, name="my-aks", provisioning_configuration=prov_config)
    aks_target.wait_for_completion(show_output=True)       # provisioning_state "Succeeded"

Both kinds run a deployed service's replica on this machine as a background ``accelml serve``
process (accelml provisions no cluster). A Kubernetes target (``AksCompute``) also writes the
service's manifests (Deployment, Service, HorizontalPodAutoscaler, KServe InferenceService) to
``<workspace>/kubernetes/<target>/<service>/`` for ``kubectl apply -f`` on a real cluster; a local
target (``LocalCompute``) does not. ``delete()`` is refused while a service is deployed on it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from accelml.hdl.errors import DependencyError, WorkspaceError
from accelml.runtime.workspace.registry import dumps, now

__all__ = ["ComputeTarget", "AksCompute", "LocalCompute", "AksProvisioningConfiguration",
           "LocalProvisioningConfiguration"]


@dataclass
class AksProvisioningConfiguration:
    agent_count: int = 1
    vm_size: str = "Standard_PB6s"
    location: str = "eastus"
    cluster_purpose: str | None = None
    kind = "kubernetes"


@dataclass
class LocalProvisioningConfiguration:
    kind = "local"


class ComputeTarget:
    """A registered compute target (``kind`` "kubernetes" or "local")."""

    def __new__(cls, workspace=None, name=None, _row=None):
        if cls is ComputeTarget and workspace is not None:
            row = _row or cls._row(workspace, name)
            cls = AksCompute if row["kind"] == "kubernetes" else LocalCompute
        return object.__new__(cls)

    def __init__(self, workspace, name: str, _row=None):
        row = _row or self._row(workspace, name)
        self.workspace, self.name, self.kind = workspace, row["name"], row["kind"]
        self.config = json.loads(row["config"])
        self.created_time = row["created"]
        self.provisioning_state = "Succeeded"
        self.provisioning_errors = None

    @staticmethod
    def _row(workspace, name: str):
        rows = workspace.registry.query("SELECT * FROM computes WHERE name=?", (name,))
        if not rows:
            raise WorkspaceError(f"compute target {name!r} does not exist in workspace {workspace.name!r}")
        return rows[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @property
    def manifest_dir(self):
        return self.workspace.path / "kubernetes" / self.name

    @staticmethod
    def create(workspace, name: str, provisioning_configuration) -> ComputeTarget:
        if not name:
            raise WorkspaceError("a compute target needs a name")
        kind = getattr(provisioning_configuration, "kind", None)
        if kind not in ("kubernetes", "local"):
            raise WorkspaceError(f"compute target {name!r}: unknown provisioning configuration "
                                 f"{type(provisioning_configuration).__name__}")
        with workspace.registry.transaction() as db:
            if db.execute("SELECT 1 FROM computes WHERE name=?", (name,)).fetchone():
                raise WorkspaceError(f"compute target {name!r} already exists in workspace {workspace.name!r}")
            db.execute("INSERT INTO computes (name, kind, config, blob, created) VALUES (?, ?, ?, NULL, ?)",
                       (name, kind, dumps(asdict(provisioning_configuration)), now()))
        return ComputeTarget(workspace, name)

    @classmethod
    def list(cls, workspace) -> list[ComputeTarget]:
        return [ComputeTarget(workspace, r["name"], _row=r)
                for r in workspace.registry.query("SELECT * FROM computes ORDER BY name")]

    def wait_for_completion(self, show_output: bool = False) -> None:
        """Provisioning completes in ``create``."""
        if show_output:
            print(f"{self.name}: {self.kind} target, provisioning {self.provisioning_state}")

    def delete(self) -> None:
        with self.workspace.registry.transaction() as db:
            users = db.execute("SELECT name FROM services WHERE compute=?", (self.name,)).fetchall()
            if users:
                raise DependencyError(f"compute target {self.name!r} runs service "
                                      f"{', '.join(r['name'] for r in users)}; delete the service first")
            db.execute("DELETE FROM computes WHERE name=?", (self.name,))


class AksCompute(ComputeTarget):
    """A Kubernetes target (writes manifests; the replica runs locally, see the module doc)."""

    @staticmethod
    def provisioning_configuration(agent_count: int | None = None, vm_size: str | None = None,
                                   location: str | None = None, cluster_purpose=None,
                                   **_ignored) -> AksProvisioningConfiguration:
        return AksProvisioningConfiguration(agent_count or 1, vm_size or "Standard_PB6s", location or "eastus",
                                            cluster_purpose)


class LocalCompute(ComputeTarget):
    """This machine."""

    @staticmethod
    def provisioning_configuration() -> LocalProvisioningConfiguration:
        return LocalProvisioningConfiguration()
