"""``Model``: a registered model (a file or directory, stored by content) with versions and tags.

    m = Model.register(workspace=ws, model_path="saved/resnet50", model_name="resnet50",
                       tags={"area": "vision"}, description="...")          # version 1, 2, ...
    m = Model(ws, name="resnet50")               # the latest version; version=1 for another
    Model.list(ws, name="resnet50", tags=["area"])
    m.delete()                                   # DependencyError while an image uses it

``kind`` is "tensorflow" for a SavedModel directory, "accel" for a compiled package (what
``AccelOnnxConverter`` registers), "file" otherwise. ``url`` is the stored tree's path; the stored
tree is never modified.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from accelml.hdl.errors import DependencyError, WorkspaceError
from accelml.runtime.workspace.registry import dumps, now

__all__ = ["Model"]


def _kind(path: Path) -> str:
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        return "tensorflow"
    if (path / "manifest.json").is_file():
        return "accel"
    return "file"


def _match_tags(have: dict, wanted) -> bool:
    for t in wanted or []:
        if isinstance(t, list | tuple):
            key, value = t
            if have.get(key) != value:
                return False
        elif t not in have:
            return False
    return True


class Model:
    """One version of a registered model."""

    def __init__(self, workspace, name: str | None = None, id: str | None = None, tags=None, properties=None,
                 version: int | None = None, run_id=None, _row=None):
        self.workspace = workspace
        if _row is None:
            if id is not None:
                name, _, v = id.partition(":")
                version = int(v) if v else version
            if not name:
                raise WorkspaceError("Model: give a name (or an id 'name:version')")
            _row = self._find(workspace, name, version)
        self._load(_row)

    @staticmethod
    def _find(workspace, name: str, version: int | None):
        row = workspace.registry.version_row("models", name, version)
        if row is None:
            what = f"model {name!r}" + (f" version {version}" if version is not None else "")
            raise WorkspaceError(f"{what} is not registered in workspace {workspace.name!r}")
        return row

    def _load(self, row) -> None:
        self._id = row["id"]
        self.name, self.version = row["name"], int(row["version"])
        self.blob, self.kind = row["blob"], row["kind"]
        self.tags = json.loads(row["tags"])
        self.properties = json.loads(row["properties"])
        self.description = row["description"]
        self.created_time = row["created"]

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def url(self) -> str:
        return str(self.workspace.registry.store.path(self.blob))

    @property
    def path(self) -> Path:
        """The stored model (a directory; read it, never write it)."""
        return self.workspace.registry.store.path(self.blob)

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version}, kind={self.kind!r})"

    @classmethod
    def register(cls, workspace, model_path: str | os.PathLike, model_name: str, tags: dict | None = None,
                 properties: dict | None = None, description: str | None = None, **_ignored) -> Model:
        """Store ``model_path`` (file or directory) as the next version of ``model_name``."""
        src = Path(model_path)
        if not model_name or not isinstance(model_name, str):
            raise WorkspaceError(f"model name {model_name!r} is not a non-empty string")
        if not src.exists():
            raise WorkspaceError(f"{src}: no such model file or directory")
        kind = _kind(src) if src.is_dir() else "file"
        return cls._commit(workspace, model_name, kind, tags, properties, description,
                           lambda: workspace.registry.store.put_tree(src))

    @classmethod
    def _commit(cls, workspace, name: str, kind: str, tags, properties, description, put) -> Model:
        """Store the blob (``put()`` -> digest) and insert the next version, under the write lock."""
        reg = workspace.registry
        with reg.transaction() as db:
            digest = put()
            (top,) = db.execute("SELECT COALESCE(MAX(version), 0) FROM models WHERE name=?", (name,)).fetchone()
            db.execute("INSERT INTO models (name, version, blob, kind, tags, properties, description, created) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (name, top + 1, digest, kind, dumps(dict(tags or {})), dumps(dict(properties or {})),
                        description, now()))
        return cls(workspace, name=name, version=top + 1)

    @classmethod
    def list(cls, workspace, name: str | None = None, tags=None, properties=None, latest: bool = False,
             **_ignored) -> list[Model]:
        rows = workspace.registry.query("SELECT * FROM models ORDER BY name, version")
        out = [cls(workspace, _row=r) for r in rows if name is None or r["name"] == name]
        out = [m for m in out if _match_tags(m.tags, tags) and _match_tags(m.properties, properties)]
        if latest:
            best: dict[str, Model] = {}
            for m in out:
                best[m.name] = m
            out = list(best.values())
        return out

    def update(self, tags: dict | None = None, description: str | None = None) -> None:
        with self.workspace.registry.transaction() as db:
            if tags is not None:
                self.tags = {**self.tags, **tags}
                db.execute("UPDATE models SET tags=? WHERE id=?", (dumps(self.tags), self._id))
            if description is not None:
                self.description = description
                db.execute("UPDATE models SET description=? WHERE id=?", (description, self._id))

    def delete(self) -> None:
        """Delete this version; refused while an image uses it."""
        reg = self.workspace.registry
        with reg.transaction() as db:
            users = db.execute("SELECT i.name, i.version FROM image_models im JOIN images i ON i.id = im.image_id "
                               "WHERE im.model_id=?", (self._id,)).fetchall()
            if users:
                names = ", ".join(f"{r['name']} (version {r['version']})" for r in users)
                raise DependencyError(f"model {self.id} is used by image {names}; delete the image first")
            if db.execute("DELETE FROM models WHERE id=?", (self._id,)).rowcount == 0:
                raise WorkspaceError(f"model {self.id} is not registered in workspace {self.workspace.name!r}")
        reg.release_blob(self.blob)
