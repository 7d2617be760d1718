"""Chunked, resumable execution of per-frame stages, inline, on local threads or on a Dask cluster.

The algorithm does not know how it is run (LiberTEM's ``Context.run_udf`` is the model): a
*chunk job* is a plain function ``job(spec, start, stop) -> dict`` that opens the recording
itself, processes frames ``start:stop`` and returns small tables. :func:`run_chunks` runs the
jobs of every chunk not done yet and saves each chunk's tables atomically under
``<results>/.work/`` with a done-marker, so an interrupted run resumes where it stopped and
gives the same tables. Large per-frame outputs (masks) are written by the job itself to
``masks.zarr``, one zarr chunk per frame, before the chunk's marker.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

WORK = ".work"


@dataclass(frozen=True)
class ChunkSpec:
    """Everything a chunk job needs, picklable for Dask workers (no open files, no models)."""

    input_path: str
    results_dir: str
    open_kwargs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    #: the pass the chunks belong to: their outputs go to ``.work/<kind>_<start>_<stop>/``
    kind: str = "chunk"


def chunk_ranges(n_frames: int, chunk_frames: int, start: int = 0) -> list[tuple[int, int]]:
    """Frame ranges ``[(start, stop), ...]`` of whole chunks covering ``start:n_frames``."""
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be >= 1")
    return [(s, min(n_frames, s + chunk_frames)) for s in range(start, n_frames, chunk_frames)]


def _chunk_dir(results_dir: Path, start: int, stop: int, kind: str = "chunk") -> Path:
    return Path(results_dir) / WORK / f"{kind}_{start:09d}_{stop:09d}"


def is_done(results_dir: Path, start: int, stop: int, kind: str = "chunk") -> bool:
    return (_chunk_dir(results_dir, start, stop, kind) / "done.json").is_file()


def save_chunk(results_dir: Path, start: int, stop: int, out: dict[str, Any], meta: dict | None = None,
               kind: str = "chunk") -> None:
    """Save a chunk's tables (DataFrames as CSV, arrays as .npy) atomically with a done-marker."""
    final = _chunk_dir(results_dir, start, stop, kind)
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    names = {}
    for key, value in out.items():
        if isinstance(value, pd.DataFrame):
            value.to_csv(tmp / f"{key}.csv", index=False, float_format="%.12g")
            names[key] = "csv"
        elif isinstance(value, np.ndarray):
            np.save(tmp / f"{key}.npy", value, allow_pickle=False)
            names[key] = "npy"
    with open(tmp / "done.json", "w", encoding="utf-8") as fh:
        json.dump({"start": start, "stop": stop, "tables": names, **(meta or {})}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if (final / "done.json").is_file():  # the same chunk finished elsewhere (a retried task): same result
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def load_chunk(results_dir: Path, start: int, stop: int, kind: str = "chunk") -> dict[str, Any]:
    d = _chunk_dir(results_dir, start, stop, kind)
    with open(d / "done.json", encoding="utf-8") as fh:
        meta = json.load(fh)
    out: dict[str, Any] = {"_meta": meta}
    for key, kind in meta["tables"].items():
        if kind == "csv":
            text = (d / f"{key}.csv").read_text()
            out[key] = pd.read_csv(io.StringIO(text)) if text.strip() else pd.DataFrame()
        else:
            out[key] = np.load(d / f"{key}.npy", allow_pickle=False)
    return out


def gather(results_dir: Path, ranges: Iterable[tuple[int, int]], key: str, kind: str = "chunk") -> pd.DataFrame:
    """Concatenate table ``key`` of every finished chunk (of pass ``kind``), in frame order."""
    frames = []
    for s, e in ranges:
        if is_done(results_dir, s, e, kind):
            t = load_chunk(results_dir, s, e, kind).get(key)
            if isinstance(t, pd.DataFrame) and len(t.columns):
                frames.append(t)
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def clear_work(results_dir: Path) -> None:
    shutil.rmtree(Path(results_dir) / WORK, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


#: heap growth (bytes of resident memory) tolerated before it is handed back to the system
TRIM_SLACK_BYTES = 256 << 20
_trim_state: dict[str, int | None] = {"base": None}
_trim_lock = threading.Lock()


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_memory(force: bool = False) -> None:
    """Hand the heap memory chunks freed back to the operating system (glibc ``malloc_trim``).

    A chunk allocates and frees frame-sized buffers (frames, network activations, masks) among
    small long-lived objects; glibc keeps the freed pages, fragmented, and a long analysis grew by
    ~0.4 MB per 256×256 frame without this — not flat in the recording's length. Dask's own
    workers trim the same way. To spare the next chunks re-faulting fresh pages, the trim runs
    only once resident memory has grown by :data:`TRIM_SLACK_BYTES` since the last one (or when
    ``force``). Does nothing where the C library is not glibc.
    """
    trim = _malloc_trim()
    if trim is None:
        return
    if not _trim_lock.acquire(blocking=False):  # another chunk's thread is trimming right now
        return
    try:
        rss, base = _resident_bytes(), _trim_state["base"]
        if force or rss is None or base is None or rss - base > TRIM_SLACK_BYTES:
            trim(0)
            _trim_state["base"] = _resident_bytes()
    finally:
        _trim_lock.release()


def _run_and_save(job: Callable, spec: ChunkSpec, start: int, stop: int) -> dict:
    t0 = time.perf_counter()
    out = job(spec, start, stop)
    elapsed = time.perf_counter() - t0
    save_chunk(Path(spec.results_dir), start, stop, out, {"elapsed_s": elapsed}, spec.kind)
    stage_s = out.get("_stage_s")
    del out
    release_memory()
    return {"start": start, "stop": stop, "elapsed_s": elapsed,
            "stage_s": {k: float(v) for k, v in stage_s.items()} if isinstance(stage_s, dict) else {}}


def check_scheduler(scheduler, *, connect_timeout_s: float = 5.0) -> None:
    """Fail early, with a clear message, on a scheduler that cannot work.

    ``None``, ``"threads"`` and ``"sync"`` are local. A TCP address (``tcp://HOST:PORT`` or
    ``HOST:PORT``) must accept a connection within ``connect_timeout_s``; a string that is neither
    and has no ``scheme://`` is refused. Other schemes (``tls://``, ``inproc://``, ``ucx://``, ...)
    and non-strings are left to ``dask.distributed``.

    Raises
    ------
    TemOperandoError
    """
    import re
    import socket

    from ..errors import TemOperandoError

    if scheduler in (None, "threads", "sync") or not isinstance(scheduler, str):
        return
    if "://" in scheduler and not scheduler.startswith("tcp://"):
        return
    m = re.fullmatch(r"(?:tcp://)?(\[[0-9a-fA-F:]+\]|[^:/\s]+):(\d+)/?", scheduler)
    if not m:
        raise TemOperandoError(f"scheduler {scheduler!r}: not 'threads', 'sync' or a dask.distributed scheduler "
                               "address such as tcp://10.0.0.5:8786")
    host, port = m.group(1).strip("[]"), int(m.group(2))
    try:
        socket.create_connection((host, port), timeout=connect_timeout_s).close()
    except OSError as exc:
        raise TemOperandoError(f"scheduler {scheduler}: no dask scheduler answers there ({exc}); start one with "
                               "`dask scheduler` or check the address") from None


def run_chunks(job: Callable[[ChunkSpec, int, int], dict], spec: ChunkSpec, ranges: list[tuple[int, int]], *,
               scheduler: str | None = None, workers: int = 2,
               on_done: Callable[[dict], None] | None = None) -> list[dict]:
    """Run ``job`` on every range not yet done; returns per-chunk timing records.

    Parameters
    ----------
    job : callable
        ``job(spec, start, stop) -> dict`` of DataFrames / arrays; must be deterministic.
    spec : ChunkSpec
    ranges : list of (start, stop)
    scheduler : None, "sync", "threads" or a ``dask.distributed`` scheduler address
        None and "threads" run Dask's local threaded scheduler with ``workers`` threads;
        "sync" runs inline (debugging); an address like ``tcp://127.0.0.1:8786`` submits
        the chunks to that cluster (workers must see the results folder).
    on_done : callable, optional
        Called with each chunk's record as it finishes (progress bars).
    """
    todo = [(s, e) for s, e in ranges if not is_done(Path(spec.results_dir), s, e, spec.kind)]
    records: list[dict] = []
    if not todo:
        return records
    if scheduler == "sync" or (scheduler in (None, "threads") and workers <= 1):
        for s, e in todo:
            rec = _run_and_save(job, spec, s, e)
            records.append(rec)
            if on_done:
                on_done(rec)
        return records
    if scheduler in (None, "threads"):
        import dask
        from dask.callbacks import Callback

        tasks = [dask.delayed(_run_and_save, pure=False)(job, spec, s, e, dask_key_name=f"{spec.kind}-{s}-{e}")
                 for s, e in todo]

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if isinstance(result, dict) and "start" in result and on_done:
                    on_done(result)

        with _Progress():
            # dask's threaded scheduler itself, not the name "threads": naming it makes dask import
            # `distributed` to look for a client, and that first import from a GUI worker thread
            # (a QThread while the Qt event loop runs) hung a test run
            import dask.threaded

            records = list(dask.compute(*tasks, scheduler=dask.threaded.get, num_workers=workers))
        return records
    from distributed import Client, as_completed

    with Client(scheduler, timeout="30s") as client:
        futures = [client.submit(_run_and_save, job, spec, s, e, key=f"tem-operando-{Path(spec.results_dir).name}-{spec.kind}-{s}-{e}",
                                 pure=False, retries=2) for s, e in todo]
        for fut in as_completed(futures):
            rec = fut.result()
            records.append(rec)
            if on_done:
                on_done(rec)
    return records
