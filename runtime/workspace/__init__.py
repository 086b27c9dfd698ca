"""accelml.runtime.workspace: the registry behind ``accelml.core`` (SQLite + content-addressed
blobs inside the workspace directory). See ``registry`` and ``store`` for the guarantees."""

from .registry import DB_NAME, Registry
from .store import BlobStore, tree_digest

__all__ = ["Registry", "BlobStore", "tree_digest", "DB_NAME"]
