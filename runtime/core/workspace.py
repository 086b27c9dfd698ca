"""``Workspace``: a local directory that holds models, images, compute targets and services.

    ws = Workspace.create("ws1", subscription_id="local", resource_group="rg", location="here",
                          path="ws1")               # a new (or empty) directory
    ws.write_config()                               # ./.azureml/config.json names it
    ws = Workspace.from_config()                    # searches the current directory and its parents
    ws = Workspace.get("ws1", path="ws1")

``subscription_id``, ``resource_group`` and ``location`` are recorded and printed, nothing more.
``from_config(path)`` accepts a config file, or a directory searched upward for
``.azureml/config.json`` (then ``config.json``), as the Azure SDK does. The config names the
workspace directory (``workspace_path``, relative to the config's directory when relative). A
missing or unreadable config, or one that names no workspace, is a ``WorkspaceError``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from accelml.hdl.errors import WorkspaceError
from accelml.runtime.storage import write_file_atomic
from accelml.runtime.workspace import Registry

CONFIG_DIR = ".azureml"
CONFIG_FILE = "config.json"

__all__ = ["Workspace"]


def _find_config(start: Path) -> Path | None:
    if start.is_file():
        return start
    for d in [start, *start.parents]:
        for cand in (d / CONFIG_DIR / CONFIG_FILE, d / CONFIG_FILE):
            if cand.is_file():
                return cand
    return None


class Workspace:
    """An open workspace. Attributes: ``name``, ``subscription_id``, ``resource_group``,
    ``location``, ``path`` (the directory) and ``registry`` (its database and blob store)."""

    def __init__(self, registry: Registry):
        self.registry = registry
        info = registry.info()
        self.name = info.get("name", registry.path.name)
        self.subscription_id = info.get("subscription_id", "")
        self.resource_group = info.get("resource_group", "")
        self.location = info.get("location", "")
        self.path = registry.path

    def __repr__(self) -> str:
        return f"Workspace(name={self.name!r}, path={str(self.path)!r})"

    @classmethod
    def create(cls, name: str, auth=None, subscription_id: str = "local", resource_group: str = "local",
               location: str = "local", create_resource_group: bool = True, exist_ok: bool = False,
               path: str | os.PathLike | None = None, **_ignored) -> Workspace:
        """Create the workspace directory ``path`` (default ``./NAME``), or open it when
        ``exist_ok`` and it already is the workspace ``name``."""
        if not name or not isinstance(name, str):
            raise WorkspaceError(f"workspace name {name!r} is not a non-empty string")
        path = Path(path if path is not None else name)
        info = {"name": name, "subscription_id": str(subscription_id), "resource_group": str(resource_group),
                "location": str(location)}
        ws = cls(Registry.create(path, info, exist_ok=exist_ok))
        if ws.name != name:
            raise WorkspaceError(f"{ws.path}: holds workspace {ws.name!r}, not {name!r}")
        return ws

    @classmethod
    def get(cls, name: str, auth=None, subscription_id: str | None = None, resource_group: str | None = None,
            path: str | os.PathLike | None = None) -> Workspace:
        """Open the existing workspace ``name`` at ``path`` (default ``./NAME``)."""
        ws = cls(Registry.open(Path(path if path is not None else name)))
        if ws.name != name:
            raise WorkspaceError(f"{ws.path}: holds workspace {ws.name!r}, not {name!r}")
        return ws

    @classmethod
    def open(cls, path: str | os.PathLike) -> Workspace:
        """Open the workspace directory ``path``."""
        return cls(Registry.open(path))

    @classmethod
    def from_config(cls, path: str | os.PathLike | None = None, auth=None, _logger=None,
                    _file_name: str | None = None) -> Workspace:
        """Open the workspace named by the nearest ``.azureml/config.json`` (see the module doc)."""
        start = Path(path) if path is not None else Path.cwd()
        if _file_name and start.is_dir():
            start = start / _file_name
        cfg = _find_config(start.absolute())
        if cfg is None:
            raise WorkspaceError(f"no workspace config ({CONFIG_DIR}/{CONFIG_FILE}) in {start.absolute()} or its "
                                 "parents; create one with Workspace.create(...).write_config() or "
                                 "`accelml workspace create NAME`")
        try:
            data = json.loads(cfg.read_text())
            wpath = Path(data["workspace_path"])
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise WorkspaceError(f"{cfg}: not a readable workspace config ({type(e).__name__}: {e})") from None
        base = cfg.parent.parent if cfg.parent.name == CONFIG_DIR else cfg.parent
        ws = cls(Registry.open(wpath if wpath.is_absolute() else base / wpath))
        if data.get("workspace_name") not in (None, ws.name):
            raise WorkspaceError(f"{cfg}: names workspace {data.get('workspace_name')!r} but {ws.path} "
                                 f"holds {ws.name!r}")
        return ws

    def write_config(self, path: str | os.PathLike | None = None, file_name: str | None = None) -> Path:
        """Write ``PATH/.azureml/config.json`` (default: the current directory) naming this
        workspace; written to a temporary file and renamed into place."""
        d = Path(path) if path is not None else Path.cwd()
        target = d / CONFIG_DIR / (file_name or CONFIG_FILE)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = {"subscription_id": self.subscription_id, "resource_group": self.resource_group,
                "workspace_name": self.name, "location": self.location, "workspace_path": str(self.path)}
        return write_file_atomic(target, (json.dumps(data, indent=2) + "\n").encode())

    # collections, as the Azure SDK's workspace exposes them
    @property
    def models(self) -> dict:
        from .model import Model

        return {m.name: m for m in Model.list(self, latest=True)}

    @property
    def images(self) -> dict:
        from .image import Image

        return {i.name: i for i in Image.list(self)}

    @property
    def webservices(self) -> dict:
        from .webservice import Webservice

        return {s.name: s for s in Webservice.list(self)}

    @property
    def compute_targets(self) -> dict:
        from .compute import ComputeTarget

        return {c.name: c for c in ComputeTarget.list(self)}

    def collect_garbage(self) -> int:
        """Remove stored trees no model, image or target names (left by killed writers)."""
        return self.registry.collect_garbage()
