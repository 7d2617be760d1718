"""Open a results folder in the app, step through a few frames, select the largest track.

Run:  python gui/examples/open_results.py RESULTS_DIR [--screenshot out.png] [--quit-after MS]

Without RESULTS_DIR it makes a small synthetic session, analyses it with the classical baseline
segmenter into a temporary folder, and opens that.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

try:
    import tem_operando_gui  # noqa: F401
except ImportError:  # running from a source checkout that was installed before gui/ was a package root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_results(folder: Path, frames: int = 24, size: int = 160) -> Path:
    import subprocess

    from tem_operando.pipeline import AnalyzeOptions, analyze

    rec = folder / "session.hspy"
    subprocess.run([sys.executable, "-m", "tem_operando", "synth", str(rec), "--kind", "mixed", "--frames", str(frames),
                    "--size", str(size), "--seed", "3"], check=True, capture_output=True)
    out = folder / "results"
    analyze(rec, out, AnalyzeOptions(model="baseline", workers=1, scheduler="sync"), report=False)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?")
    ap.add_argument("--screenshot", default=None)
    ap.add_argument("--quit-after", type=int, default=None, metavar="MS")
    ap.add_argument("--frame", type=int, default=None)
    args = ap.parse_args(argv)

    import pyqtgraph as pg
    from qtpy import QtCore, QtWidgets
    from tem_operando_gui.app import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    pg.setConfigOptions(imageAxisOrder="row-major")
    tmp = None
    results = args.results
    if results is None:
        tmp = tempfile.TemporaryDirectory()
        results = make_results(Path(tmp.name))
    settings = QtCore.QSettings(str(Path(tempfile.gettempdir()) / "tem_operando_example.ini"),
                                QtCore.QSettings.Format.IniFormat)
    settings.clear()
    win = MainWindow(results, settings=settings, ask=False)
    win.resize(1600, 950)
    win.show()
    m = win.model
    tr = m.tables["tracks"]
    if not tr.empty:
        m.select(int(tr.sort_values("n_frames", ascending=False)["track_id"].iloc[0]))
    for _ in range(3):
        m.step(1)
    m.set_frame(args.frame if args.frame is not None else m.n_frames * 2 // 3)

    def finish():
        if args.screenshot:
            win.grab().save(args.screenshot)
            print("screenshot", args.screenshot)
        win.close()
        app.quit()

    if args.screenshot or args.quit_after is not None:
        QtCore.QTimer.singleShot(args.quit_after or 800, finish)
    rc = app.exec()
    if tmp is not None:
        tmp.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
