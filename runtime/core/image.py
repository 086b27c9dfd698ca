"""``Image``: a content-addressed bundle that serves one converted model (see
``runtime.workspace.bundle``), with versions per name.

    image = Image.create(name="resnet50-image", models=[converted_model], image_config=image_config,
                         workspace=ws)
    image.wait_for_creation(show_output=True)
    Image.list(workspace=ws);  image.delete()        # DependencyError while a service uses it

``image_location`` is the bundle directory (build it with ``docker build``), ``image_build_log_uri``
its ``build.log`` as a file URI, ``creation_state`` "Succeeded" (the bundle is written before the
row that names it is committed, so an image that is listed is complete).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

from accelml.hdl.errors import DependencyError, WorkspaceError
from accelml.runtime.workspace.bundle import ImageSpec, write_bundle
from accelml.runtime.workspace.registry import dumps, now

__all__ = ["Image"]


class Image:
    """One version of an image."""

    def __init__(self, workspace, name: str | None = None, id: str | None = None, tags=None, properties=None,
                 version: int | None = None, _row=None):
        self.workspace = workspace
        if _row is None:
            if id is not None:
                name, _, v = id.partition(":")
                version = int(v) if v else version
            _row = workspace.registry.version_row("images", name, version)
            if _row is None:
                raise WorkspaceError(f"image {name!r}" + (f" version {version}" if version else "")
                                     + f" does not exist in workspace {workspace.name!r}")
        self._id, self.name, self.version, self.blob = _row["id"], _row["name"], int(_row["version"]), _row["blob"]
        self.tags, self.description, self.created_time = json.loads(_row["tags"]), _row["description"], _row["created"]
        self.config = json.loads(_row["config"])
        self.creation_state = "Succeeded"

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def image_location(self) -> str:
        return str(self.workspace.registry.store.path(self.blob))

    @property
    def image_build_log_uri(self) -> str:
        return (self.workspace.registry.store.path(self.blob) / "build.log").as_uri()

    @property
    def package_path(self):
        from accelml.runtime.workspace.bundle import PACKAGE_DIR

        return self.workspace.registry.store.path(self.blob) / PACKAGE_DIR

    @property
    def models(self) -> list:
        from .model import Model

        rows = self.workspace.registry.query(
            "SELECT m.* FROM image_models im JOIN models m ON m.id = im.model_id WHERE im.image_id=?", (self._id,))
        return [Model(self.workspace, _row=r) for r in rows]

    def __repr__(self) -> str:
        return f"Image(name={self.name!r}, version={self.version})"

    @staticmethod
    def image_configuration(**kwargs):
        from accelml.accel.accel_container_image import AccelContainerImage

        return AccelContainerImage.image_configuration(**kwargs)

    @classmethod
    def create(cls, workspace, name: str, models: list, image_config=None) -> Image:
        """Bundle the one converted model in ``models`` as the next version of image ``name``."""
        if not name or name != name.lower():
            raise WorkspaceError(f"image name {name!r} must be non-empty and lowercase")
        models = list(models or [])
        if len(models) != 1 or getattr(models[0], "kind", None) != "accel":
            kinds = ", ".join(f"{m.id} ({m.kind})" for m in models) or "none"
            raise WorkspaceError(f"an image serves exactly one converted (accel) model; got {kinds}")
        model = models[0]
        reg = workspace.registry
        store = reg.store
        if image_config is None:
            from accelml.accel.accel_container_image import AccelContainerImage

            image_config = AccelContainerImage.image_configuration()
        cfg = dataclasses.asdict(image_config)
        with reg.transaction() as db:
            model_row = db.execute("SELECT id FROM models WHERE name=? AND version=?",
                                   (model.name, model.version)).fetchone()
            if model_row is None:
                raise WorkspaceError(f"model {model.id} is not registered in workspace {workspace.name!r}")
            (top,) = db.execute("SELECT COALESCE(MAX(version), 0) FROM images WHERE name=?", (name,)).fetchone()
            spec = ImageSpec(name=name, version=top + 1, models=[model.id],
                             **{k: v for k, v in cfg.items() if k in ImageSpec.__dataclass_fields__})
            tmp = store.new_temporary()
            try:
                write_bundle(tmp, model.path, spec)
                digest = store.adopt(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            cur = db.execute("INSERT INTO images (name, version, blob, tags, description, config, created) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (name, top + 1, digest, dumps(cfg.get("tags") or {}), cfg.get("description"),
                              dumps(cfg), now()))
            db.execute("INSERT INTO image_models VALUES (?, ?)", (cur.lastrowid, model_row["id"]))
        return cls(workspace, name=name, version=top + 1)

    def wait_for_creation(self, show_output: bool = False) -> None:
        """Creation completes in ``create``; prints the build log with ``show_output``."""
        if show_output:
            print((self.workspace.registry.store.path(self.blob) / "build.log").read_text(), end="")

    @classmethod
    def list(cls, workspace, image_name: str | None = None, model_name: str | None = None, model_id=None,
             tags=None, properties=None) -> list[Image]:
        out = [cls(workspace, _row=r) for r in workspace.registry.query("SELECT * FROM images ORDER BY name, version")]
        if image_name is not None:
            out = [i for i in out if i.name == image_name]
        if model_name is not None:
            out = [i for i in out if any(m.name == model_name for m in i.models)]
        from .model import _match_tags

        return [i for i in out if _match_tags(i.tags, tags)]

    def delete(self) -> None:
        """Delete this image version; refused while a service runs it."""
        reg = self.workspace.registry
        with reg.transaction() as db:
            users = db.execute("SELECT name FROM services WHERE image_id=?", (self._id,)).fetchall()
            if users:
                raise DependencyError(f"image {self.id} is used by service {', '.join(r['name'] for r in users)}; "
                                      "delete the service first")
            db.execute("DELETE FROM image_models WHERE image_id=?", (self._id,))
            if db.execute("DELETE FROM images WHERE id=?", (self._id,)).rowcount == 0:
                raise WorkspaceError(f"image {self.id} does not exist in workspace {self.workspace.name!r}")
        reg.release_blob(self.blob)
