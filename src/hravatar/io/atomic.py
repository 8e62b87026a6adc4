"""Atomic file writes: write to a temporary file in the same folder, then ``os.replace``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hravatar.errors import HRAvatarError


def make_folder(folder: str | Path, what: str = "output folder") -> Path:
    """``mkdir -p folder``, with a one-line :class:`HRAvatarError` naming the path when that is
    impossible (a parent is a file, no permission, read-only file system)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        p = folder
        while p != p.parent and not p.exists():
            p = p.parent
        raise HRAvatarError(f"{p}: is a file, so the {what} {folder} cannot be created there; "
                            "choose another path") from None
    except OSError as e:
        raise HRAvatarError(f"{folder}: cannot create the {what} ({(e.strerror or type(e).__name__).lower()}); "
                            "choose a writable path") from None
    return folder


def check_writable(path: str | Path, kind: str = "file") -> Path:
    """Fail early, before any work and without creating anything, when ``path`` cannot be written:
    it is a folder (``kind="file"``) or a file (``kind="folder"``), a parent is a file, or the nearest
    existing parent folder is not writable. Returns ``path``."""
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise HRAvatarError(f"{path}: is a folder; give a file name")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise HRAvatarError(f"{path}: exists and is not a folder; choose another output folder")
    if kind == "folder" and path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise HRAvatarError(f"{path}: folder is not writable; choose another output folder")
        return path
    p = path.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise HRAvatarError(f"{p}: is a file, so {path} cannot be created; choose another path")
    if not os.access(p, os.W_OK | os.X_OK) or _read_only_fs(p):
        raise HRAvatarError(f"{p}: folder is not writable, so {path} cannot be created; choose another path")
    return path


def _read_only_fs(folder: Path) -> bool:
    """``folder`` lies on a read-only (or pseudo, e.g. /proc, /sys) file system."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return bool(st.f_flag & os.ST_RDONLY) or str(folder.resolve()).split("/")[1:2] in (["proc"], ["sys"])


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, else is deleted.

    The temporary name keeps ``path``'s suffix so writers that infer the format from it work.
    """
    path = Path(path)
    if path.is_dir():
        raise HRAvatarError(f"{path}: is a folder; give a file name")
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as e:
        raise HRAvatarError(f"{path}: cannot write in {path.parent} ({(e.strerror or type(e).__name__).lower()}); "
                            "choose a writable path") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp creates 0600; give the file the user's normal permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
