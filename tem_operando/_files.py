"""File helpers every layer may use: content hashes and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


def sha256_of(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, or of every file of a folder (relative names and contents, in order)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(block):
                h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename (fsync'd)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that need a file name (``torch.save``,
    ``np.savez``, ``DataFrame.to_csv``); renamed onto ``path`` when the block succeeds, removed
    when it fails, so ``path`` is either the old file or the complete new one.

    ``suffix`` ends the temporary name (``np.savez`` needs ``.npz``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tem-", suffix=suffix)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield Path(tmp)
        if os.path.exists(tmp + ".npz"):  # np.savez appended its suffix: the data is not in tmp
            os.unlink(tmp + ".npz")
            raise ValueError(f"{path}: the writer did not write the temporary file (np.savez needs suffix='.npz')")
        with open(tmp, "rb+") as fh:  # on disk before the rename, so a power cut leaves old or new
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


#: names :func:`atomic_path` gives its temporary files: ``.NAME.tem-XXXXXXXX.tmp`` (or ``.npz``)
_TEMP_NAME = re.compile(r"^\..+\.tem-[a-z0-9_]{8}\.(tmp|npz)$")


def remove_stale_temporaries(folder: str | os.PathLike, *, subfolders: tuple[str, ...] = (),
                             min_age_s: float = 60.0) -> list[Path]:
    """Delete the temporary files killed :func:`atomic_path` writers left in ``folder``.

    Looks at ``folder`` itself and, recursively, at its ``subfolders`` only; removes only names
    of :func:`atomic_path`'s own pattern (``.NAME.tem-XXXXXXXX.tmp``) untouched for ``min_age_s``
    (a live writer's file is seconds old). Call it while holding :func:`exclusive_folder`.

    Returns
    -------
    list of Path
        The files removed.
    """
    import time

    folder = Path(folder)
    candidates = list(folder.glob(".*"))
    for sub in subfolders:
        if (folder / sub).is_dir():
            candidates += list((folder / sub).rglob(".*"))
    now = time.time()
    removed = []
    for f in candidates:
        try:
            if f.is_file() and _TEMP_NAME.match(f.name) and now - f.stat().st_mtime >= min_age_s:
                f.unlink()
                removed.append(f)
        except FileNotFoundError:
            pass
    return removed


def _lock_holder() -> str:
    import socket

    return f"pid {os.getpid()} on {socket.gethostname()}"


@contextlib.contextmanager
def exclusive_folder(folder: str | os.PathLike, what: str = "another process") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (``folder/.lock``) for the block, or fail at once.

    ``what`` describes the holder (e.g. "an analysis") in the message a refused writer gets.
    The folder is created if needed, and removed again if the block leaves nothing in it but the
    lock file (a run that failed its checks leaves no empty results folder behind).

    The operating system releases the lock when the holder exits, also on a crash or ``kill -9``,
    so a stale lock never blocks a later run. Where locks are not available (Windows, or a network
    filesystem without ``flock``) the block runs unlocked, with a warning for the latter.

    Raises
    ------
    BlockingIOError
        When another process holds the lock; the message names the folder and that process.
    """
    import errno
    import warnings

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    fh = open(lock, "a+") if fcntl is not None else None
    try:
        locked = False
        if fh is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    warnings.warn(f"{folder}: cannot lock the folder on this filesystem ({exc.strerror}); "
                                  "make sure no other run writes to it", RuntimeWarning, stacklevel=3)
                else:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    raise BlockingIOError(f"{folder}: {holder} is writing to this folder; "
                                          "wait for it to finish or choose another folder") from None
        if locked:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{what} ({_lock_holder()})")
            fh.flush()
        try:
            yield folder
        finally:
            if locked:
                fh.seek(0)
                fh.truncate()  # released: nobody holds it any more
                fh.flush()
    finally:
        if fh is not None:
            fh.close()
        if created:
            try:
                if {p.name for p in folder.iterdir()} <= {".lock"}:
                    lock.unlink(missing_ok=True)
                    folder.rmdir()
            except OSError:
                pass
