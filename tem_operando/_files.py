"""File helpers every layer may use: content hashes and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
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
