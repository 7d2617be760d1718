"""Ingest speed: frames/s and MB/s per format, as ratios to peers measured in the same run.

For every format the same frames are written once, then read back through
``open_recording(...).iter_chunks`` computing each frame's mean (a reduction that touches every
byte). Baselines on the same bytes, same reduction, same run:

* ``numpy.memmap`` of the same array in a .npy file (the raw-bytes ceiling), and
* ``hyperspy.api.load(path, lazy=True)`` followed by the same per-frame mean, for the formats
  hyperspy reads.

Files are read warm (from the page cache) for every reader alike. A second part times opening
a 10 GB recording (a sparse file: only the header, first and last frames are read).

Run: ``python benchmarks/ingest.py [--frames 400] [--size 256]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")

from tem_operando.io import open_recording  # noqa: E402
from tem_operando.synth.write import FORMATS, write_recording  # noqa: E402

RAW_LIKE = {"mrc", "hspy", "tif", "npy"}


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def read_ours(path: Path, chunk: int, mode: str = "image") -> float:
    with open_recording(path, nm_per_px=1.0, fps=1.0, mode=mode) as rec:
        return float(sum(c.frames.mean(axis=(1, 2)).sum() for c in rec.iter_chunks(chunk)))


def stream_ours(rec, chunk: int) -> float:
    """Streaming only (the recording is open): what the ≥ 0.5× memmap target is about."""
    return float(sum(c.frames.mean(axis=(1, 2)).sum() for c in rec.iter_chunks(chunk)))


def read_memmap(path: Path, chunk: int) -> float:
    mm = np.load(path, mmap_mode="r")
    return float(sum(np.asarray(mm[s:s + chunk], dtype=np.float32).mean(axis=(1, 2)).sum()
                     for s in range(0, len(mm), chunk)))


def read_memmap_copy(path: Path, chunk: int) -> float:
    mm = np.load(path, mmap_mode="r")
    return float(sum(np.array(mm[s:s + chunk], dtype=np.float32).mean(axis=(1, 2)).sum()
                     for s in range(0, len(mm), chunk)))


def read_hyperspy(path: Path, chunk: int) -> float:
    import hyperspy.api as hs

    kw = {"mode": "r"} if path.suffix in (".hspy", ".zspy") else {}
    s = hs.load(path, lazy=True, **kw)
    s = s[0] if isinstance(s, list) else s
    d = s.data
    return float(sum(np.asarray(d[a:a + chunk].compute(), dtype=np.float32).mean(axis=(1, 2)).sum()
                     for a in range(0, d.shape[0], chunk)))


def open_10gb(tmp: Path) -> dict[str, float]:
    """Seconds to open a 10 GB recording: sparse .npy and .hspy (HDF5 chunks never written)."""
    import h5py

    out = {}
    n, shape = 10_000, (512, 512)  # 10 000 × 1 MB float32 = 10.5 GB
    p = tmp / "big.npy"
    with open(p, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (n,) + shape})
        fh.truncate(fh.tell() + n * shape[0] * shape[1] * 4)
    out["npy"] = _best_of(lambda: open_recording(p, nm_per_px=1, fps=1).close())
    import hyperspy.api as hs

    s = hs.signals.Signal2D(np.zeros((2,) + shape, np.float32))
    for ax in s.axes_manager.signal_axes:
        ax.units, ax.scale = "nm", 0.5
    h = tmp / "big.hspy"
    s.save(h, overwrite=True)
    with h5py.File(h, "r+") as f:  # grow the stored dataset to 10 000 frames without writing them
        grp = f["Experiments/__unnamed__"]
        old = grp["data"]
        del grp["data"]
        grp.create_dataset("data", shape=(n,) + shape, dtype="f4", chunks=(1,) + shape, fillvalue=0)
        del old
    out["hspy"] = _best_of(lambda: open_recording(h, fps=1).close())
    return out


def big_folder(tmp: Path, session, n_files: int, chunk: int) -> dict[str, float]:
    """Open / re-open a Gatan in situ folder of ``n_files`` dm4 frames and read one chunk from its middle.

    The files are copies of the frames of a small recording written by our Gatan writer, spread
    over ``Second_ss`` folders at 10 frames/s.
    """
    import shutil

    src = write_recording(session, tmp / f"src_{n_files}", "gatan")
    frames = sorted(src.rglob("*.dm4"))
    root = tmp / f"gatan_{n_files}"
    for k in range(n_files):
        sec = k // 10
        d = root / "Hour_00" / f"Minute_{sec // 60:02d}" / f"Second_{sec % 60:02d}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(frames[k % len(frames)], d / f"in_situ_Hour_00_Minute_{sec // 60:02d}_Second_{sec % 60:02d}_Frame_{k % 10:04d}.dm4")
    for f in src.glob("*.json"):
        shutil.copyfile(f, root / f.name)
    t0 = time.perf_counter()
    open_recording(root, nm_per_px=1.0, fps=10.0).close()
    first = time.perf_counter() - t0
    again = _best_of(lambda: open_recording(root, nm_per_px=1.0, fps=10.0).close())
    with open_recording(root, nm_per_px=1.0, fps=10.0) as rec:
        mid = len(rec) // 2
        read = _best_of(lambda: next(rec.iter_chunks(chunk, mid, mid + chunk)).frames.mean())
    from tem_operando.io.readers import FRAME_FILE_EXTENSIONS, _natural_key

    # the peer: listing the folder the plain pathlib way (rglob, is_file, natural sort), as before session 15
    rglob = _best_of(lambda: sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower()
                                     in FRAME_FILE_EXTENSIONS and not p.name.startswith(".")), key=_natural_key))
    return {"first_open_s": first, "open_s": again, "chunk_s": read, "rglob_s": rglob}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--folder-files", type=int, default=10_000, help="frame files of the big Gatan folder")
    ap.add_argument("--formats", default="npy,mrc,hspy,zspy,tif,emd,velox,dm4,ser,gatan,avi")
    args = ap.parse_args(argv)
    from conftest import hand_session

    session = hand_session(n_frames=args.frames, shape=(args.size, args.size))
    mb = session.frames.nbytes / 1e6
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        ref = tmp / "ref.npy"
        np.save(ref, session.frames)
        t_mm = _best_of(lambda: read_memmap(ref, args.chunk))
        t_cp = _best_of(lambda: read_memmap_copy(ref, args.chunk))
        print(f"{args.frames} frames of {args.size}×{args.size} float32 ({mb:.0f} MB), chunks of {args.chunk}, warm cache")
        print(f"baseline numpy.memmap, reduced in place: {args.frames / t_mm:8.0f} frames/s {mb / t_mm:7.0f} MB/s")
        print(f"baseline numpy.memmap, copied to RAM:    {args.frames / t_cp:8.0f} frames/s {mb / t_cp:7.0f} MB/s\n")
        opens: list[tuple[str, float]] = []
        print(f"{'format':8s} {'frames/s':>10s} {'MB/s':>8s} {'vs memmap':>10s} {'vs memmap+copy':>15s} "
              f"{'vs hs.load(lazy)':>17s}")
        for fmt in args.formats.split(","):
            path = tmp / (f"rec{FORMATS[fmt]}" if FORMATS[fmt] else f"rec_{fmt}")
            path = write_recording(session, path, fmt)
            t_total = _best_of(lambda: read_ours(path, args.chunk))
            with open_recording(path, nm_per_px=1.0, fps=1.0, mode="image") as rec:
                t = _best_of(lambda: stream_ours(rec, args.chunk))
            opens.append((fmt, t_total - t))
            hs_ratio = ""
            if fmt not in ("npy", "gatan", "avi", "mp4", "folder"):
                t_hs = _best_of(lambda: read_hyperspy(path, args.chunk), repeat=2)
                hs_ratio = f"{t_hs / t_total:16.2f}×"  # both include opening the file
            target = "  (target ≥ 0.5×)" if fmt in RAW_LIKE else ""
            print(f"{fmt:8s} {args.frames / t:10.0f} {mb / t:8.0f} {t_mm / t:9.2f}× {t_cp / t:14.2f}× "
                  f"{hs_ratio:>17s}{target}")
        print("\nstreaming above excludes opening; opening each file (headers, first and last frame, "
              "hyperspy/RosettaSciIO metadata) took: "
              + ", ".join(f"{f} {1e3 * max(o, 0):.0f} ms" for f, o in opens))
        t_auto = _best_of(lambda: read_ours(ref, args.chunk, mode="auto"))
        print(f"\nnpy without mode metadata (ring-pattern test on every frame): {args.frames / t_auto:.0f} frames/s")
        print("\nGatan in situ folders of dm4 frames (64-frame chunk read from the middle; "
              "cost must not grow with the number of files; every chunk job and --follow poll opens the "
              "folder again):")
        small_session = hand_session(n_frames=40, shape=(128, 128))
        rows = {n: big_folder(tmp, small_session, n, args.chunk) for n in (500, args.folder_files)}
        base = rows[500]
        for n, r in rows.items():
            print(f"  {n:6d} files: first open {r['first_open_s']:6.2f} s, open again {r['open_s']:6.3f} s, "
                  f"chunk {r['chunk_s'] * 1e3:6.1f} ms (× {r['chunk_s'] / base['chunk_s']:.2f} of 500 files; "
                  f"open again × {r['open_s'] / base['open_s']:.1f}; open again / pathlib rglob listing alone "
                  f"{r['open_s'] / r['rglob_s']:.2f})")
        print("\nopening a 10 GB recording (target < 1 s):")
        for fmt, sec in open_10gb(tmp).items():
            print(f"  {fmt:6s} {sec * 1e3:8.1f} ms")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
