"""``python -m tem_operando.demo DIR``: the end of ``make demo``.

Opens the sample session that ``make demo`` generated, streams it chunk by chunk, checks the
calibration and per-frame modes against the session's ground truth and prints a summary.
(The full analysis, ``tem-operando analyze``, joins this demo as the pipeline lands.)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def run(folder: Path) -> dict:
    from .io import open_recording
    from .synth.truth import load_truth

    rec_path = folder / "session.hspy"
    truth = load_truth(rec_path)
    t0 = time.perf_counter()
    with open_recording(rec_path) as rec:
        modes, n = [], 0
        for chunk in rec.iter_chunks(32):
            modes.extend(chunk.mode)
            n += len(chunk.frames)
        elapsed = time.perf_counter() - t0
        summary = {
            "recording": str(rec_path),
            "frames": n,
            "frame_shape": list(rec.frame_shape),
            "nm_per_px": rec.nm_per_px,
            "inv_nm_per_px": rec.inv_nm_per_px,
            "fps": rec.fps,
            "image_frames": modes.count("image"),
            "diffraction_frames": modes.count("diffraction"),
            "modes_match_truth": modes == list(truth.frames["mode"]),
            "calibration_matches_truth": bool(np.isclose(rec.nm_per_px, truth.info["nm_per_px"])),
            "ingest_frames_per_s": n / elapsed,
            "true_objects": int(truth.objects["track_id"].nunique()) if len(truth.objects) else 0,
        }
    out = folder / "ingest_summary.json"
    out.write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "demo")
    s = run(folder)
    print(f"streamed {s['frames']} frames ({s['image_frames']} image, {s['diffraction_frames']} diffraction) "
          f"at {s['ingest_frames_per_s']:.0f} frames/s; modes match truth: {s['modes_match_truth']}; "
          f"calibration matches truth: {s['calibration_matches_truth']}")
    print(f"summary written to {folder / 'ingest_summary.json'}")
    return 0 if s["modes_match_truth"] and s["calibration_matches_truth"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
