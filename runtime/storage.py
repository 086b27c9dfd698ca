"""Writing directories and files so that nothing already stored is lost.

Contract:

* ``write_dir_atomic(dest, fill, owned=...)`` builds a new directory in a temporary sibling of
  ``dest`` (``fill(tmp)`` writes into it; every file is flushed to disk), then puts it at ``dest``
  in one atomic step. A ``dest`` that exists is replaced only if ``owned(dest)`` says the tool
  created it; anything else raises :class:`DestinationError` before a byte is written. Replacement
  swaps the two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
  ``renamex_np(RENAME_SWAP)``), so the old directory stays valid at ``dest`` until the new one is
  complete, and a reader sees one or the other, never neither. Where the platform has no atomic swap
  the old directory is moved aside and back on failure (stated in ``ATOMIC_SWAP``).
* A writer killed part-way leaves only a temporary sibling named ``.<name>.accelml-tmp-<pid>-<random>``
  (its process id in the name): such directories are never read, and the next write to the same
  destination removes those whose writer is no longer running (and nothing else).
* ``write_file_atomic(path, data)``: a file written beside its destination, flushed, then renamed over it.
* ``claim_output(path, ...)``: before a command's work, refuse an output file path that is one of
  its inputs, a directory, or an existing file of another kind than the command writes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from accelml.hdl.errors import DestinationError

__all__ = ["DestinationError", "write_dir_atomic", "write_file_atomic", "check_destination", "ATOMIC_SWAP",
           "stale_temporaries", "pid_alive", "fsync_tree", "fsync_dir", "claim_output", "commit_file"]

_TMP_INFIX = ".accelml-tmp-"


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def _swap_function() -> Callable[[Path, Path], None] | None:
    """An atomic exchange of two paths, or None where the platform has none."""
    libc = _libc()
    if libc is None:
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        at_fdcwd, rename_exchange = -100, 2

        def swap(a: Path, b: Path) -> None:
            if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e), str(b))
        return swap
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        fn = libc.renamex_np
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        rename_swap = 2

        def swap(a: Path, b: Path) -> None:
            if fn(os.fsencode(a), os.fsencode(b), rename_swap) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e), str(b))
        return swap
    return None


_SWAP = _swap_function()
ATOMIC_SWAP = _SWAP is not None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a writer that may still be using its temporary)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temporaries(dest: Path) -> list[Path]:
    """Temporary siblings of ``dest`` left by writers that are no longer running."""
    stale = []
    prefix = f".{dest.name}{_TMP_INFIX}"
    try:
        siblings = list(dest.parent.iterdir())
    except OSError:
        return []
    for p in siblings:
        if not p.name.startswith(prefix) or p.is_symlink() or not p.is_dir():
            continue
        try:
            pid = int(p.name[len(prefix):].split("-", 1)[0])
        except ValueError:
            continue  # not provably ours: leave it alone
        if pid != os.getpid() and not pid_alive(pid):
            stale.append(p)
    return stale


def fsync_tree(root: Path) -> None:
    """Flush every file and every directory of the tree at ``root`` to disk."""
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_destination(dest: Path, owned: Callable[[Path], str | None], what: str) -> None:
    """Raise DestinationError unless ``dest`` is free or ``owned(dest)`` returns None (ours).
    ``owned`` returns the reason a path is not ours."""
    if dest.is_symlink():
        raise DestinationError(f"{dest}: is a symbolic link; give the {what} path itself (nothing was written)")
    if not dest.exists():
        return
    if not dest.is_dir():
        raise DestinationError(f"{dest}: exists and is a file, not an {what}; refusing to replace it "
                               "(nothing was written)")
    reason = owned(dest)
    if reason is not None:
        raise DestinationError(f"{dest}: exists and is not an {what} ({reason}); refusing to replace it "
                               "(nothing was written)")


def write_dir_atomic(dest: str | os.PathLike, fill: Callable[[Path], None], *,
                     owned: Callable[[Path], str | None], what: str) -> Path:
    """Build a directory with ``fill(tmp)`` and put it at ``dest`` atomically (see the module doc)."""
    dest = Path(dest)
    check_destination(dest, owned, what)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for old in stale_temporaries(dest):
        shutil.rmtree(old, ignore_errors=True)
    tmp = temporary_beside(dest)
    tmp.mkdir()
    try:
        fill(tmp)
        fsync_tree(tmp)
        check_destination(dest, owned, what)  # it may have changed while we wrote
        if dest.exists():
            _replace(tmp, dest)
        else:
            _rename_noreplace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        # after a swap ``tmp`` holds the old directory; after a failure, the partial new one
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _rename_noreplace(src: Path, dest: Path) -> None:
    # os.rename would silently replace an empty directory created meanwhile at dest
    try:
        os.mkdir(dest)
    except FileExistsError:
        raise DestinationError(f"{dest}: appeared while writing; nothing was replaced") from None
    try:
        os.rename(src, dest)  # onto the empty directory we just made: ours to replace
    except OSError:
        os.rmdir(dest)
        raise


def _replace(tmp: Path, dest: Path) -> None:
    if _SWAP is not None:
        try:
            _SWAP(tmp, dest)
            return
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                raise
    # no atomic swap on this platform or file system: move the old one aside, restore it on failure
    aside = temporary_beside(dest, "old-")
    os.rename(dest, aside)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(aside, dest)
        raise
    os.rename(aside, tmp)  # removed by the caller


def temporary_beside(path: Path, tag: str = "") -> Path:
    """A fresh temporary name next to ``path`` for this process (found by ``stale_temporaries``)."""
    return path.parent / f".{path.name}{_TMP_INFIX}{os.getpid()}-{tag}{secrets.token_hex(4)}"


def commit_file(tmp: Path, path: Path) -> Path:
    """Put the finished temporary file ``tmp`` (``temporary_beside(path)``) in place of ``path``:
    its data flushed to disk first, the rename then, and the directory entry after."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def write_file_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a flushed temporary file in the same directory."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        return commit_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already once committed


def claim_output(path: Path, *, inputs=(), ours=None, force: bool = False, what: str = "output") -> Path:
    """Check that writing ``path`` loses nothing: never one of the command's ``inputs``, never a
    directory, and an existing file only if ``ours(first bytes)`` recognises it as this command's
    kind of output (or with ``--force``). Raises DestinationError before any work is done."""
    path = Path(path)
    for src in inputs:
        if src is not None and path.exists() and Path(src).exists() and path.resolve() == Path(src).resolve():
            raise DestinationError(f"{path}: is an input of this command; refusing to overwrite it")
    if path.is_dir():
        raise DestinationError(f"{path}: is a directory, not a {what} file")
    if path.exists() and not force:
        with open(path, "rb") as f:
            head = f.read(64)
        if ours is None or not ours(head):
            hint = "" if ours is not None else " (pass --force to replace it)"
            raise DestinationError(f"{path}: exists and is not a {what} accelml wrote; refusing to "
                                   f"overwrite it{hint}")
    return path
