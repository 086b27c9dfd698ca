"""A content-addressed store of directory trees (saved models, packages, image bundles).

    store = BlobStore(workspace_dir / "blobs")
    digest = store.put_tree(src_dir)      # copy, fsync, hash, rename into blobs/<digest>
    store.path(digest)                    # the stored tree (read-only by convention)
    store.verify(digest)                  # recompute the digest: a damaged tree raises

A tree's digest is the SHA-256 of its sorted listing of (relative path, SHA-256 of the content);
symbolic links and special files are refused. ``put_tree`` copies into ``.tmp-<pid>-<random>``
first, fsyncs every file and the directory, and only then renames the copy to its digest, so a
tree at ``blobs/<digest>`` is always complete: a writer killed at any point leaves at most a
temporary directory, which ``clean_temporaries`` removes once its writer's process is gone.
Committing the database row that names a digest happens after ``put_tree`` returns (see
``registry``); a tree no row names is an orphan, ignored until ``remove_unreferenced``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

from accelml.hdl.errors import WorkspaceError
from accelml.runtime.storage import fsync_dir, fsync_tree, pid_alive

TMP_PREFIX = ".tmp-"

__all__ = ["BlobStore", "tree_digest"]


def _files(root: Path) -> list[tuple[str, Path]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise WorkspaceError(f"{Path(dirpath) / d}: symbolic links cannot be stored")
        for f in filenames:
            p = Path(dirpath) / f
            if p.is_symlink() or not p.is_file():
                raise WorkspaceError(f"{p}: only regular files can be stored")
            out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: str | os.PathLike) -> str:
    """The digest of a directory tree (or of a single file, stored as a one-file tree)."""
    h = hashlib.sha256()
    for rel, p in _files(Path(root)):
        h.update(f"{rel}\0{_file_sha(p)}\n".encode())
    return h.hexdigest()


class BlobStore:
    """Directory trees by digest under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_dir()

    def new_temporary(self) -> Path:
        """A fresh temporary directory inside the store (same filesystem: renames are atomic)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        tmp.mkdir()
        return tmp

    def put_tree(self, src: str | os.PathLike, *, name: str | None = None) -> str:
        """Copy ``src`` (a directory, or a file stored as ``name`` or its own name) into the store
        and return its digest. The source is only read."""
        src = Path(src)
        if not src.exists():
            raise WorkspaceError(f"{src}: no such file or directory")
        tmp = self.new_temporary()
        try:
            if src.is_dir():
                for rel, p in _files(src):
                    dst = tmp / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(p, dst)
            else:
                shutil.copyfile(src, tmp / (name or src.name))
            return self.adopt(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def adopt(self, tmp: Path) -> str:
        """Make a complete temporary tree (from ``new_temporary``) permanent under its digest."""
        _files(tmp)  # regular files only, no links
        fsync_tree(tmp)
        digest = tree_digest(tmp)
        final = self.path(digest)
        if final.is_dir():  # the same content is already stored
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.rename(tmp, final)
            fsync_dir(self.root)
        return digest

    def verify(self, digest: str) -> None:
        p = self.path(digest)
        if not p.is_dir():
            raise WorkspaceError(f"{self.root}: stored tree {digest[:12]} is missing")
        if tree_digest(p) != digest:
            raise WorkspaceError(f"{self.root}: stored tree {digest[:12]} is damaged (its content changed)")

    def remove(self, digest: str) -> None:
        """Delete a stored tree: renamed away first, so a kill mid-delete never leaves a partial
        tree under a digest."""
        p = self.path(digest)
        if p.is_dir():
            trash = self.root / f"{TMP_PREFIX}{os.getpid()}-rm-{digest[:12]}"
            os.rename(p, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def clean_temporaries(self) -> int:
        """Remove temporary trees whose writer process no longer exists; returns how many."""
        n = 0
        if not self.root.is_dir():
            return 0
        for p in self.root.iterdir():
            if not p.name.startswith(TMP_PREFIX):
                continue
            pid = p.name[len(TMP_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n

    def digests(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.iterdir() if not p.name.startswith(TMP_PREFIX) and p.is_dir()}

    def remove_unreferenced(self, referenced: set[str]) -> int:
        """Delete every stored tree not in ``referenced`` (orphans of killed writers)."""
        orphans = self.digests() - referenced
        for d in orphans:
            self.remove(d)
        return len(orphans)
