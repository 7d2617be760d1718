"""Drift registration: accuracy and cost of ``estimate_drift`` against its former self, in one run.

Renders synthetic sessions (particles and mixed scenes, random slow drift, 60 frames of 160×160 px)
at 5, 20 and 100 e⁻/px and at a dose so high that only the sample's own changes are left, and
compares the drift of every frame with the truth for

* ``estimate_drift()`` as the pipeline runs it (Tukey window, a second registration without the
  pixels that changed: :mod:`tem_operando._registration`), and
* the baseline: the same with a Hann window, one registration and one band (the drift pass before
  session 13).

Prints the RMS, 95th percentile and worst error (px) per dose, and the time ratio.

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


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
