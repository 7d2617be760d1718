"""Drift registration: accuracy and cost of ``estimate_drift`` against its former self, in one run.

Renders synthetic sessions (particles and mixed scenes, random slow drift, 60 frames of 160×160 px)
at 5, 20 and 100 e⁻/px and at a dose so high that only the sample's own changes are left, and
compares the drift of every frame with the truth for

* ``estimate_drift()`` as the pipeline runs it (Tukey window, a second registration without the
  pixels that changed: :mod:`tem_operando._registration`), and
* the baseline: the same with a Hann window, one registration and one band (the drift pass before
  session 13).

Prints the RMS, 95th percentile and worst error (px) per dose, and the time ratio.

Then the pipeline's second look at a fast camera's drift (:func:`~tem_operando.segment.reference.refine_shifts`,
session 17–18): 25 frames/s, 10 e⁻/px, 64 frames of 192×192 px on a carbon film and in a liquid cell, the drift
pass chained chunk by chunk (16 frames) as the pipeline runs it, then each frame re-registered to the first 8
frames averaged — alone, and with a weak frame's neighbours (the default). RMS error (px) and time per frame.

    python benchmarks/drift.py [N_SEEDS]
"""

import sys
import time

import numpy as np

from tem_operando.synth import image_series
from tem_operando.track import estimate_drift

METHODS = {"estimate_drift()": {}, "baseline (Hann, one pass)": {"taper": 1.0, "change_k": None, "noisy_error": 1.1}}


def sessions(n_seeds: int, dose: float):
    for seed in range(n_seeds):
        for scene in ("particles", "mixed"):
            s = image_series(60, (160, 160), scene=scene, rng=seed, dose_e_per_px=dose, drift_nm_per_s=None)
            img = s.frame_table["mode"].to_numpy() == "image"
            t = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy(float)[img] / s.nm_per_px
            yield s.frames[img], t - t[0]


def main(n_seeds: int = 6) -> None:
    timing = dict.fromkeys(METHODS, 0.0)
    print(f"{'dose e-/px':>10}  {'method':<26} {'RMS px':>7} {'p95 px':>7} {'max px':>7}")
    for dose in (5, 20, 100, 1e6):
        errs = {m: [] for m in METHODS}
        for frames, truth in sessions(n_seeds, dose):
            for m, kw in METHODS.items():
                t0 = time.perf_counter()
                d = estimate_drift(frames, **kw)
                timing[m] += time.perf_counter() - t0
                errs[m].append(np.hypot(*(d - truth).T))
        for m, e in errs.items():
            e = np.concatenate(e)
            print(f"{dose:>10g}  {m:<26} {np.sqrt(np.mean(e ** 2)):7.2f} {np.percentile(e, 95):7.2f} {e.max():7.1f}")
    a, b = timing.values()
    print(f"time: estimate_drift() {a:.1f} s, baseline {b:.1f} s: {a / b:.2f}× the baseline's")
    refine_table(n_seeds)


def refine_table(n_seeds: int, chunk: int = 16) -> None:
    """Chained drift pass vs re-measured against the averaged reference, alone and with neighbours."""
    from tem_operando.segment.reference import mean_reference, refine_shifts

    print(f"\n{'25 fps, 10 e-/px':<18} {'chained':>8} {'refined':>8} {'+neighbours':>12}   ms/frame refined, +neighbours")
    for background in ("carbon", "liquid"):
        errs = {k: [] for k in ("chained", "alone", "neighbours")}
        ms = {"alone": 0.0, "neighbours": 0.0}
        n = 0
        for seed in range(n_seeds):
            s = image_series(64, (192, 192), scene="mixed", rng=seed, fps=25.0, dose_e_per_px=10.0,
                             background=background, drift_nm_per_s=None)
            t = s.frame_table[["drift_y_nm", "drift_x_nm"]].to_numpy(float) / s.nm_per_px
            truth = t - t[0]
            prior = np.zeros_like(truth)  # (dy, dx), each chunk registered after the last frame before it
            for a0 in range(0, len(truth), chunk):
                stack = s.frames[max(a0 - 1, 0):a0 + chunk]
                d = estimate_drift(stack)[:, ::-1]
                prior[a0:a0 + chunk] = d[1:] + prior[a0 - 1] if a0 else d
            reference = mean_reference(s.frames[:8], prior[:8])
            errs["chained"].append(np.hypot(*(prior - truth).T))
            for key, k in (("alone", 0), ("neighbours", 2)):
                t0 = time.perf_counter()
                out = np.concatenate([refine_shifts(s.frames[a0:a0 + chunk], reference, prior[a0:a0 + chunk],
                                                    time_s=s.time_s[a0:a0 + chunk], neighbours=k)[0]
                                      for a0 in range(0, len(truth), chunk)])
                ms[key] += time.perf_counter() - t0
                errs[key].append(np.hypot(*(out - truth).T))
            n += len(truth)
        rms = {k: float(np.sqrt(np.mean(np.concatenate(v) ** 2))) for k, v in errs.items()}
        print(f"{background:<18} {rms['chained']:8.2f} {rms['alone']:8.2f} {rms['neighbours']:12.2f}   "
              f"{1e3 * ms['alone'] / n:.1f}, {1e3 * ms['neighbours'] / n:.1f} "
              f"({ms['neighbours'] / ms['alone']:.2f}× alone)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
