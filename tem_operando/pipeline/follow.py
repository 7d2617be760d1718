"""``analyze --follow``: keep up with a recording that is still being written.

The recording (typically a folder the camera software fills with frame files) is re-listed
every ``poll_s``; every complete chunk of new frames is analysed at once. The latency behind
the camera (time from a chunk's newest frame appearing to its analysis finishing) is measured;
when the backlog grows beyond ``max_backlog_chunks`` the run switches to analysing every N-th
image frame (doubling N) and says so. When no new frame has arrived for ``timeout_s``, the rest
is analysed, the tables and report are written and the run is marked complete.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from .._files import exclusive_folder
from ..errors import RecordingError
from .analyze import AnalyzeOptions, Run, complete, prepare, run_passes


def _frames_available(path: Path, open_kwargs: dict) -> int:
    from ..io import open_recording

    try:
        with open_recording(path, **open_kwargs) as rec:
            return len(rec)
    except RecordingError:
        return 0  # a file still being written: try again at the next poll


def _newest_mtime(path: Path) -> float:
    """When the newest frame arrived: the last frame file's modification time (the file itself for a
    recording in one file), s since the epoch; 0 when there is none."""
    if path.is_dir():
        from ..io.readers import list_frame_files

        files = list_frame_files(path)  # in acquisition order; the same listing the poll just made
        try:
            return files[-1].stat().st_mtime if files else 0.0
        except OSError:
            return 0.0
    return path.stat().st_mtime


def follow(input_path: str | os.PathLike, out: str | os.PathLike, opts: AnalyzeOptions | None = None, *,
           timeout_s: float = 30.0, poll_s: float = 0.5, max_backlog_chunks: int = 4,
           max_frames: int = 1_000_000, quiet: bool = False, report: bool = True) -> dict:
    """Analyse a growing recording as its frames arrive; returns the final summary.

    Parameters
    ----------
    input_path : path-like
        A folder receiving frame files (or a file being appended to).
    out : path-like
        Results folder.
    opts : AnalyzeOptions
    timeout_s : float
        Stop after this many seconds without a new frame.
    poll_s : float
        Seconds between looks for new frames.
    max_backlog_chunks : int
        Chunks waiting before the run thins out to every N-th image frame.
    max_frames : int
        Capacity of ``masks.zarr`` (frames) for a recording whose final length is unknown.
    """
    opts = opts or AnalyzeOptions()
    with exclusive_folder(out, "an analysis"):
        return _follow(Path(input_path), out, opts, timeout_s=timeout_s, poll_s=poll_s,
                       max_backlog_chunks=max_backlog_chunks, max_frames=max_frames, quiet=quiet, report=report)


def _follow(path: Path, out, opts: AnalyzeOptions, *, timeout_s: float, poll_s: float, max_backlog_chunks: int,
            max_frames: int, quiet: bool, report: bool) -> dict:
    deadline = time.monotonic() + timeout_s
    while _frames_available(path, {}) == 0 and time.monotonic() < deadline:
        time.sleep(poll_s)
    run: Run = prepare(path, out, opts, input_sha256="(growing recording: set when it stops growing)",
                       max_frames=max_frames, growing=True)
    chunk = opts.chunk_frames
    done_to = 0
    ranges: list[tuple[int, int]] = []
    records: list[dict] = []
    latencies: list[float] = []
    nth_changes: list[dict] = []
    last_new = time.monotonic()
    n_seen = 0
    while True:
        n = _frames_available(path, run.spec.open_kwargs)
        if n > n_seen:
            n_seen, last_new = n, time.monotonic()
        idle = time.monotonic() - last_new
        finishing = idle >= timeout_s
        n = max(n, n_seen)  # a poll that caught a file mid-write must not shorten the recording
        stop = n if finishing else done_to + ((n - done_to) // chunk) * chunk
        if stop > done_to:
            backlog = (n - done_to) / chunk
            if backlog > max_backlog_chunks and run.opts.every_nth < 64:
                run.opts.every_nth *= 2
                run.spec.params["every_nth"] = run.opts.every_nth
                nth_changes.append({"frame": done_to, "every_nth": run.opts.every_nth})
                if not quiet:
                    print(f"falling behind the camera ({backlog:.0f} chunks waiting): analysing every "
                          f"{run.opts.every_nth}-th image frame from frame {done_to}", file=sys.stderr)
            new = [(s, min(stop, s + chunk)) for s in range(done_to, stop, chunk)]
            if run.spec.params.get("_diffraction") is None:  # diffraction frames may arrive later
                from .analyze import prepare_diffraction

                analyzer, facts = prepare_diffraction(path, run.spec.open_kwargs, run.info, run.opts,
                                                      run.phase_names)
                if analyzer is not None:
                    run.spec.params["_diffraction"] = analyzer
                    run.store.update_summary(**facts)
            arrived = _newest_mtime(path)
            records += run_passes(run, new, all_ranges=ranges + new)
            latencies.append(max(0.0, time.time() - arrived))
            ranges += new
            done_to = stop
            if not quiet:
                print(f"analysed frames {new[0][0]}-{stop - 1}; latency behind the camera {latencies[-1]:.2f} s",
                      file=sys.stderr)
        if finishing:
            break
        time.sleep(poll_s)
    from .context import sha256_of

    run.info["frames"] = done_to
    import zarr

    masks = zarr.open_group(str(run.store.folder / "masks.zarr"), mode="r+")
    for name in ("classes", "instances"):  # the capacity given at the start → the frames that came
        masks[name].resize((done_to,) + tuple(masks[name].shape[1:]))
    extra = {"follow": True, "latency_s_median": float(np.median(latencies)) if latencies else None,
             "latency_s_max": float(np.max(latencies)) if latencies else None,
             "every_nth_changes": nth_changes, "input_sha256": sha256_of(path)}
    return complete(run, ranges, records, extra=extra, report=report)
