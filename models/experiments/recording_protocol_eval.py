"""Issue 3: the held-apart sessions recorded as real recordings and segmented by the pipeline itself.

The held-apart evaluation (``tem-operando evaluate --synthetic``) gives each frame the reference of an
idealised fast camera: 8 exposures of the unchanged first frame, placed by the true drift. Here each of
the same held-apart scenes (same objects, kinetics, look, drift) is instead *recorded*: a camera at
``FPS`` frames/s starts ``LEAD_S`` seconds before the process (as a microscopist starts recording before
the sodium source touches), the recording is written to disk and ``tem_operando.pipeline.analyze``
segments it end to end — its own drift pass, its own choice and average of the reference frames (those
of the first second), its own registration of the reference onto each frame. The masks it stores in
``masks.zarr`` are scored against the truth at the 6 moments the held-apart evaluation scores (process
time 0, 0.5, …, 2.5 s), with the same metrics (``segment.evaluate``).

    python models/experiments/recording_protocol_eval.py [N_SESSIONS] [FPS] [LEAD_S] [MODEL] [WINDOW_S]

WINDOW_S (optional): the reference averages the image frames of the first WINDOW_S seconds instead of the
pipeline's :data:`~tem_operando.segment.reference.REFERENCE_WINDOW_S` (at most 8 frames either way).

N_SESSIONS held-apart seeds (the evaluation's: from ``EVAL_SEED_OFFSET``, empty scenes skipped), dose
10 e-/px, 256 × 256. Prints IoU objects / reacted, boundary F1, instance F1, front error (median px).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tem_operando.segment.datasets import EVAL_SEED_OFFSET, random_recipe, synthetic_frames
from tem_operando.segment.evaluate import front_errors_by_frame, frame_counts, item_from_session, summarise
from tem_operando.synth.images import image_series, spec_from_dict

PROCESS_S = 2.5  # the held-apart sessions: 6 frames at 2 frames/s


def recorded_session(seed: int, fps: float, lead_s: float, dose: float = 10.0):
    """Held-apart session ``seed`` recorded at ``fps`` from ``lead_s`` s before its process starts.

    Returns the Session and the indices of its frames at process time 0, 0.5, …, 2.5 s.
    """
    _, base = synthetic_frames(seed, 6, dose=dose, size=256, reference_frames=1)
    p = base.params
    specs = [dataclasses.replace(spec_from_dict(d), onset_s=spec_from_dict(d).onset_s + lead_s)
             for d in p["objects"]]
    n = int(round((lead_s + PROCESS_S) * fps)) + 1
    session = image_series(
        n, tuple(p["shape"]), objects=specs, fps=fps, nm_per_px=p["nm_per_px"], dose_e_per_px=dose,
        contrast=p["contrast"], drift_nm_per_s=tuple(p["drift_nm_per_s"]),
        drift_jumps=[(t + lead_s, dx, dy) for t, dx, dy in p["drift_jumps"]], blur_px=p["blur_px"],
        background=p["background"], rng=seed, **p["render"])
    idx = np.round((lead_s + 0.5 * np.arange(6)) * fps).astype(int)
    return session, idx


def pipeline_masks(session, folder: Path, model: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The classes and instances ``analyze`` stores for ``session`` (written to ``folder``)."""
    import zarr

    from tem_operando.pipeline import AnalyzeOptions, analyze
    from tem_operando.synth.write import write_session

    rec = write_session(session, folder / "rec.hspy")
    analyze(rec, folder / "out", AnalyzeOptions(model=model, fps=None), report=False)
    g = zarr.open_group(str(folder / "out" / "masks.zarr"), mode="r")
    return np.asarray(g["classes"]), np.asarray(g["instances"])


def main(n: int = 100, fps: float = 2.0, lead_s: float = 2.0, model: str | None = None,
         window_s: float | None = None) -> None:
    t0 = time.time()
    if window_s is not None:
        import functools

        import tem_operando.segment.reference as reference

        reference.reference_run = functools.partial(reference.reference_run, window_s=window_s)
    seeds, seed = [], EVAL_SEED_OFFSET
    while len(seeds) < n:
        if random_recipe(seed)["scene"] != "empty":
            seeds.append(seed)
        seed += 1
    counts, fronts = [], []
    for k, s in enumerate(seeds):
        session, idx = recorded_session(s, fps, lead_s)
        with tempfile.TemporaryDirectory() as tmp:
            classes, instances = pipeline_masks(session, Path(tmp), model)
        item = item_from_session(session, f"seed{s}", dose_level=10.0, frames_idx=idx)
        counts.append(frame_counts(item, classes[idx], instances[idx]))
        fronts.append(front_errors_by_frame(item, classes[idx]))
        if (k + 1) % 10 == 0 or k + 1 == len(seeds):
            r = summarise(pd.concat(counts, ignore_index=True), pd.concat(fronts, ignore_index=True))
            print(f"{k + 1} sessions, {fps:g} frames/s, lead {lead_s:g} s, window {window_s} s:",
                  {m: round(float(r[m]), 3) for m in ("iou_objects", "iou_reacted", "boundary_f1",
                                                      "instance_f1", "front_err_px")},
                  f"{time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]) if a else 100, float(a[1]) if len(a) > 1 else 2.0, float(a[2]) if len(a) > 2 else 2.0,
         a[3] if len(a) > 3 and a[3] != "-" else None, float(a[4]) if len(a) > 4 else None)
