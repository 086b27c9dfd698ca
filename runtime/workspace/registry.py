"""The workspace registry: a SQLite database and a blob store inside the workspace directory.

    reg = Registry.open(path)                      # WorkspaceError if it is not a workspace
    with reg.transaction() as db:                  # BEGIN IMMEDIATE ... COMMIT, one writer
        db.execute(...)

Layout of a workspace directory::

    workspace.db        SQLite (rollback journal, synchronous=FULL): workspace, models, images,
                        image_models, computes, services
    blobs/<digest>/     stored trees (``store.BlobStore``): SavedModels, packages, image bundles
    services/<name>/    a local deployment's log, key file and process record

Every change is one transaction. A row that names a blob is inserted only after the blob is
complete in the store, inside the transaction that holds the write lock, so a process killed at
any point leaves a database that opens and lists everything committed before; what it may leave
behind is a temporary directory (cleaned when its writer is gone) or an unreferenced blob
(ignored; ``collect_garbage`` removes it).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from accelml.hdl.errors import WorkspaceError

from .store import BlobStore

DB_NAME = "workspace.db"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workspace (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL, blob TEXT NOT NULL,
    kind TEXT NOT NULL, tags TEXT NOT NULL, properties TEXT NOT NULL, description TEXT,
    created TEXT NOT NULL, UNIQUE (name, version));
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL, blob TEXT NOT NULL,
    tags TEXT NOT NULL, description TEXT, config TEXT NOT NULL, created TEXT NOT NULL,
    UNIQUE (name, version));
CREATE TABLE IF NOT EXISTS image_models (
    image_id INTEGER NOT NULL REFERENCES images(id), model_id INTEGER NOT NULL REFERENCES models(id));
CREATE TABLE IF NOT EXISTS computes (
    name TEXT PRIMARY KEY, kind TEXT NOT NULL, config TEXT NOT NULL, blob TEXT, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id),
    compute TEXT NOT NULL REFERENCES computes(name), config TEXT NOT NULL, state TEXT NOT NULL,
    runtime TEXT NOT NULL, created TEXT NOT NULL);
"""

__all__ = ["Registry", "now", "dumps", "DB_NAME"]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)


@dataclass
class Registry:
    """An open workspace directory: its database connection and blob store."""

    path: Path
    conn: sqlite3.Connection
    store: BlobStore

    @classmethod
    def create(cls, path: str | os.PathLike, info: dict[str, str], *, exist_ok: bool = False) -> Registry:
        """Make ``path`` a workspace (an empty or new directory), or open it if it already is one
        and ``exist_ok``. A non-empty directory that is not a workspace is refused untouched."""
        path = Path(path).absolute()
        if (path / DB_NAME).is_file():
            if not exist_ok:
                raise WorkspaceError(f"{path}: a workspace already exists here")
            return cls.open(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise WorkspaceError(f"{path}: exists and is not an accelml workspace (refusing to use it)")
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{DB_NAME}.{os.getpid()}.tmp"
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(_SCHEMA)
            rows = [("schema_version", str(SCHEMA_VERSION)), *sorted(info.items())]
            conn.executemany("INSERT INTO workspace VALUES (?, ?)", rows)
            conn.commit()
        finally:
            conn.close()
        try:  # the database appears complete or not at all, and never replaces another one
            os.link(tmp, path / DB_NAME)
        except FileExistsError:
            if not exist_ok:
                raise WorkspaceError(f"{path}: a workspace already exists here") from None
        finally:
            os.unlink(tmp)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Registry:
        path = Path(path).absolute()
        db = path / DB_NAME
        if not db.is_file():
            raise WorkspaceError(f"{path}: not an accelml workspace (no {DB_NAME})")
        try:
            conn = sqlite3.connect(db, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            version = conn.execute("SELECT value FROM workspace WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise WorkspaceError(f"{db}: unreadable workspace database ({e})") from None
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise WorkspaceError(f"{db}: workspace schema version {version and version[0]} is not supported")
        reg = cls(path, conn, BlobStore(path / "blobs"))
        reg.store.clean_temporaries()
        return reg

    def info(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self.conn.execute("SELECT key, value FROM workspace")}

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the workspace's single writer lock)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, args).fetchall()

    def version_row(self, table: str, name: str, version: int | None) -> sqlite3.Row | None:
        """The row of ``name`` at ``version`` (None: the latest) in a versioned table."""
        if version is None:
            rows = self.query(f"SELECT * FROM {table} WHERE name=? ORDER BY version DESC LIMIT 1", (name,))
        else:
            rows = self.query(f"SELECT * FROM {table} WHERE name=? AND version=?", (name, int(version)))
        return rows[0] if rows else None

    def referenced_blobs(self) -> set[str]:
        refs = set()
        for table in ("models", "images", "computes"):
            refs |= {r[0] for r in self.conn.execute(f"SELECT blob FROM {table} WHERE blob IS NOT NULL")}
        return refs

    def release_blob(self, digest: str | None) -> None:
        """Remove a stored tree once no row names it (after the deleting transaction committed)."""
        if not digest:
            return
        with self.transaction():
            if digest not in self.referenced_blobs():
                self.store.remove(digest)

    def collect_garbage(self) -> int:
        """Remove blobs no row names (left by killed writers); returns how many."""
        with self.transaction():
            return self.store.remove_unreferenced(self.referenced_blobs())

    def close(self) -> None:
        self.conn.close()
