"""``python -m tem_operando.demo DIR``: the last step of ``make demo``.

``make demo`` writes a synthetic session (image frames with bursts of SAED patterns) to
``DIR/session.hspy`` with its ground truth, and analyses it into ``DIR/session/``. This step
puts the measured numbers next to the truth the generator used, so a new user sees at once what
the analysis recovers, and points at the report.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _match_tracks(measured: pd.DataFrame, truth_objects: pd.DataFrame, objects: pd.DataFrame) -> dict[int, int]:
    """Measured track → true track by nearest centroid in the first frame both see."""
    pairs = {}
    for tid, g in objects.groupby("track_id"):
        f = int(g["frame"].min())
        t = truth_objects[truth_objects["frame"] == f]
        if t.empty:
            continue
        o = g[g["frame"] == f].iloc[0]
        d = np.hypot(t["x_nm"] - o["x_nm"], t["y_nm"] - o["y_nm"])
        k = int(np.argmin(d.to_numpy()))
        if d.iloc[k] < max(10.0, 0.5 * float(t["width_nm"].iloc[k])):
            pairs[int(tid)] = int(t["track_id"].iloc[k])
    return pairs


def compare(folder: Path) -> str:
    from .results import ResultStore
    from .synth.truth import load_truth

    results = folder / "session"
    truth = load_truth(folder / "session.hspy")
    store = ResultStore(results)
    summary = store.read_summary()
    tracks, objects = store.read_table("tracks"), store.read_table("objects")
    lines = [f"analysed {summary.get('frames')} frames ({summary.get('n_image_frames')} image, "
             f"{summary.get('n_diffraction_frames')} diffraction) in {summary.get('elapsed_s', float('nan')):.1f} s "
             f"with {summary.get('model')}", ""]
    pairs = _match_tracks(tracks, truth.objects, objects)
    rows = []
    for mid, tid in sorted(pairs.items(), key=lambda kv: kv[1]):
        m = tracks[tracks["track_id"] == mid].iloc[0]
        t = truth.tracks[truth.tracks["track_id"] == tid].iloc[0]
        rows.append((tid, t["kind"], t["swelling_rate_nm_s"], m["swelling_rate_nm_s"], m["swelling_rate_ci95_nm_s"],
                     t["width_expansion_pct"], m["width_expansion_pct"], t.get("front_velocity_nm_s", math.nan),
                     m["front_velocity_nm_s"]))
    lines.append(f"{'true track':>10s} {'kind':8s} {'swelling nm/s: true':>20s} {'measured':>16s} "
                 f"{'width exp. %: true':>19s} {'meas.':>7s} {'front nm/s: true':>17s} {'meas.':>7s}")
    for tid, kind, tr, mr, ci, te, me, tv, mv in rows:
        lines.append(f"{tid:10d} {kind:8s} {tr:20.2f} {mr:9.2f} ± {ci:4.2f} {te:19.1f} {me:7.1f} {tv:17.2f} {mv:7.2f}")
    phases = store.read_table("phases")
    if not phases.empty and not truth.phases.empty:
        merged = phases.merge(truth.phases[["frame", "best_phase"]], on="frame", suffixes=("", "_true"))
        agree = float((merged["best_phase"] == merged["best_phase_true"]).mean()) if len(merged) else float("nan")
        lines += ["", f"diffraction frames: best phase agrees with the truth in {100 * agree:.0f}% of "
                      f"{len(merged)} frames ({', '.join(pd.unique(merged['best_phase_true']))})"]
    lines += ["", f"report: {results / 'report.html'}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "demo")
    print(compare(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
