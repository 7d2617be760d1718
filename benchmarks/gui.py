"""GUI benchmark: first frame of a 10,000-frame recording on screen, and scrubbing latency.

Makes (once, in a temporary folder) a 10,000 × 256 × 256 uint16 ``.npy`` recording (a sparse
memmap with a few frames filled) and a results folder written with :class:`ResultStore` without
running the network: frames.csv, objects.csv (3 objects a frame), tracks.csv, masks.zarr (empty
chunks except the frames with objects painted in). Then times, in one run:

* ``first frame``: ``MainWindow(folder)`` until the first frame has been painted;
* ``scrub``: ``model.set_frame(i)`` + repaint for random frames (median, p95);
* ``stroke``: one brush correction, until it is on screen (GUI thread: journal entry and preview)
  and until the background replay (kinetics refit, tables rewritten) has updated the tables;
* the baseline: ``ImageItem.setImage`` of an in-memory frame + repaint, the floor for any viewer.

Targets (shared/DESIGN.md): first frame < 2 s, scrubbing < 50 ms per frame.

Run: ``QT_QPA_PLATFORM=offscreen python benchmarks/gui.py [--frames 10000] [--size 256]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
try:
    import tem_operando_gui  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "gui"))


def make_fixture(folder: Path, n: int, size: int) -> Path:
    from tem_operando import schema
    from tem_operando.results import ResultStore

    rec = folder / "long.npy"
    out = folder / "results"
    if (out / "summary.json").is_file():
        return out
    rng = np.random.default_rng(0)
    mm = np.lib.format.open_memmap(rec, mode="w+", dtype=np.uint16, shape=(n, size, size))
    yy, xx = np.mgrid[:size, :size]
    blob = (((yy - size / 2) ** 2 + (xx - size / 3) ** 2) < (size / 8) ** 2)
    for i in range(0, n, max(1, n // 50)):  # sparse: the rest of the file stays holes (zeros)
        mm[i] = rng.poisson(200, (size, size)).astype(np.uint16) - 100 * blob
    mm.flush()
    del mm
    store = ResultStore(out, create=True)
    t = np.arange(n) / 100.0
    store.write_table("frames", pd.DataFrame({"frame": np.arange(n), "time_s": t, "mode": "image", "drift_x_nm": 0.0,
                                              "drift_y_nm": 0.0, "n_objects": 3,
                                              "confidence": rng.uniform(0.5, 1.0, n)}))
    k = np.repeat(np.arange(n), 3)
    tid = np.tile([1, 2, 3], n)
    store.write_table("objects", pd.DataFrame({
        "frame": k, "time_s": t[k], "track_id": tid, "x_nm": 40.0 * tid, "y_nm": 50.0 + 0 * tid,
        "area_nm2": 300.0 + k * 0.01, "width_nm": 20 + k * 0.001, "length_nm": 20.0, "reacted_fraction": 0.5}))
    tr = schema.empty("tracks")
    tr = pd.DataFrame({c: [np.nan] * 3 for c in tr.columns})
    tr["track_id"] = [1, 2, 3]
    tr["kind"] = "particle"
    tr["first_frame"], tr["last_frame"], tr["n_frames"], tr["n_steps"] = 0, n - 1, n, 0
    store.write_table("tracks", tr)
    store.write_table("fronts", schema.empty("fronts"))
    store.write_table("phases", schema.empty("phases"))
    store.write_table("rings", schema.empty("rings"))
    store.start(input=str(rec), input_sha256="benchmark", parameters={"nm_per_px": 1.0, "fps": 100.0})
    store.open_masks(n, (size, size))
    cls = np.zeros((1, size, size), np.uint8)
    ins = np.zeros((1, size, size), np.uint32)
    for j, x in enumerate((40, 80, 120)):
        m = ((yy - 50) ** 2 + (xx - x) ** 2) < 100
        cls[0][m] = 1 + j % 2
        ins[0][m] = j + 1
    for i in range(0, n, max(1, n // 50)):
        store.write_masks(i, cls, ins)
    store.finish(frames=n, frame_shape=[size, size], fps=100.0, nm_per_px=1.0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--scrub", type=int, default=200, help="random frames to scrub to")
    ap.add_argument("--dir", default=None, help="where to keep the fixture (default: a temp folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = None
    if args.dir:
        folder = Path(args.dir)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name)
    t0 = time.perf_counter()
    results = make_fixture(folder, args.frames, args.size)
    t_fixture = time.perf_counter() - t0

    import pyqtgraph as pg
    from qtpy import QtCore, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    pg.setConfigOptions(imageAxisOrder="row-major")
    settings = QtCore.QSettings(str(folder / "bench.ini"), QtCore.QSettings.Format.IniFormat)

    from tem_operando_gui.app import MainWindow

    # -- first frame on screen
    t0 = time.perf_counter()
    win = MainWindow(results, settings=settings, ask=False)
    win.show()
    while win.video.first_paint_s is None and time.perf_counter() - t0 < 30:
        app.processEvents()
    t_first = win.video.first_paint_s - t0
    t_all = time.perf_counter() - t0
    assert win.video.image.image is not None

    # -- scrubbing: random frames, each displayed with its overlays
    rng = np.random.default_rng(1)
    frames = rng.integers(0, args.frames, args.scrub)
    lat = []
    for f in frames:
        t0 = time.perf_counter()
        win.model.set_frame(int(f))
        app.processEvents()
        win.video.glw.viewport().repaint()
        lat.append(time.perf_counter() - t0)
    lat = np.asarray(lat) * 1e3
    # with the frame cache warm (stepping back and forth over recently seen frames)
    warm = []
    for f in frames[:50]:
        t0 = time.perf_counter()
        win.model.set_frame(int(f))
        app.processEvents()
        win.video.glw.viewport().repaint()
        warm.append(time.perf_counter() - t0)
    warm = np.asarray(warm) * 1e3

    # -- a correction: one brush stroke (journal entry + replay of the journal + every table rewritten)
    # the GUI thread is busy until the stroke is on screen; the replay then runs in the background
    win.model.set_frame(0)
    stroke, replay = [], []
    for k in range(3):
        t0 = time.perf_counter()
        win.model.paint([(40.0 + k, 50.0)], cls=1, radius=3.0)
        app.processEvents()
        win.video.glw.viewport().repaint()
        stroke.append(time.perf_counter() - t0)
        while win.model.busy:
            app.processEvents()
            time.sleep(0.002)
        replay.append(time.perf_counter() - t0)
    stroke, replay = np.asarray(stroke) * 1e3, np.asarray(replay) * 1e3

    # -- baseline: a bare ImageItem showing in-memory frames
    glw = pg.GraphicsLayoutWidget()
    vb = glw.addViewBox(lockAspect=True)
    item = pg.ImageItem(axisOrder="row-major")
    vb.addItem(item)
    glw.resize(800, 800)
    glw.show()
    mem = np.random.default_rng(2).poisson(200, (16, args.size, args.size)).astype(np.float32)
    base = []
    for k in range(args.scrub):
        t0 = time.perf_counter()
        item.setImage(mem[k % 16], autoLevels=False, levels=(100, 300))
        app.processEvents()
        glw.viewport().repaint()
        base.append(time.perf_counter() - t0)
    base = np.asarray(base) * 1e3
    res = {"frames": args.frames, "size": args.size, "fixture_s": round(t_fixture, 2),
           "first_frame_s": round(t_first, 3), "window_complete_s": round(t_all, 3), "scrub_median_ms": round(float(np.median(lat)), 2),
           "scrub_p95_ms": round(float(np.percentile(lat, 95)), 2),
           "scrub_warm_median_ms": round(float(np.median(warm)), 2),
           "baseline_setImage_median_ms": round(float(np.median(base)), 2),
           "ratio_scrub_to_baseline": round(float(np.median(lat) / np.median(base)), 1),
           "stroke_on_screen_median_ms": round(float(np.median(stroke)), 1),
           "stroke_tables_updated_median_ms": round(float(np.median(replay)), 1),
           "target_first_frame_s": 2.0, "target_scrub_ms": 50.0}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"recording                {args.frames} frames × {args.size}² uint16 (.npy memmap), fixture "
              f"{t_fixture:.1f} s")
        print(f"first frame on screen    {t_first:.3f} s    (target < 2 s; whole window {t_all:.2f} s)")
        print(f"scrub, random frames     median {res['scrub_median_ms']:.1f} ms, p95 {res['scrub_p95_ms']:.1f} ms "
              f"(target < 50 ms)")
        print(f"scrub, cached frames     median {res['scrub_warm_median_ms']:.1f} ms")
        print(f"baseline ImageItem.setImage of an in-memory frame: median {res['baseline_setImage_median_ms']:.2f} ms")
        print(f"ratio scrub / baseline   {res['ratio_scrub_to_baseline']:.1f}×")
        print(f"brush stroke on screen   median {res['stroke_on_screen_median_ms']:.0f} ms (GUI thread: journal + "
              f"preview); tables updated after {res['stroke_tables_updated_median_ms']:.0f} ms (background replay: "
              f"kinetics of {3 * args.frames} objects, tables rewritten)")
    win.close()
    glw.close()
    if tmp is not None:
        tmp.cleanup()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of Qt objects (PySide may crash in finalisation)


if __name__ == "__main__":
    sys.exit(main())
