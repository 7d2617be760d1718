"""Drift registration: accuracy and cost of ``estimate_drift`` against its former self, in one run.

Renders synthetic sessions (particles and mixed scenes, random slow drift, 60 frames of 160×160 px)
at 5, 20 and 100 e⁻/px and at a dose so high that only the sample's own changes are left, and
compares the drift of every frame with the truth for

* ``estimate_drift()`` as the pipeline runs it (Tukey window, a second registration without the
  pixels that changed: :mod:`tem_operando._registration`), and
* the baseline: the same with a Hann window, one registration and one band (the drift pass before
  session 13);
* ``estimate_drift()`` without its coarse band (before session 18), which matters only where no frame
  registers in the fine bands: the last rows are liquid-cell sessions at 5 and 10 e⁻/px, 10 frames at
  2 frames/s with a 26-px stage jump after 2.6 s.

Prints the RMS, 95th percentile and worst error (px) per dose, and the time ratio.

    python benchmarks/drift.py [N_SEEDS]
"""

import sys
import time

import numpy as np

from tem_operando.synth import image_series
from tem_operando.track import estimate_drift

METHODS = {"estimate_drift()": {}, "baseline (Hann, one pass)": {"taper": 1.0, "change_k": None, "noisy_error": 1.1},
           "without the coarse band": {"coarse_sigma_lo_px": None}}


def sessions(n_seeds: int, dose: float, liquid: bool = False):
    if liquid:
        for seed in range(n_seeds):
            s = image_series(10, (192, 192), scene="mixed", rng=seed, fps=2.0, dose_e_per_px=dose, background="liquid",
                             drift_nm_per_s=(0.5, 0.5), drift_jumps=[(2.6, 30.0, -24.0)], nm_per_px=1.5)
            t = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy(float) / s.nm_per_px
            yield s.frames, t - t[0]
        return
    for seed in range(n_seeds):
        for scene in ("particles", "mixed"):
            s = image_series(60, (160, 160), scene=scene, rng=seed, dose_e_per_px=dose, drift_nm_per_s=None)
            img = s.frame_table["mode"].to_numpy() == "image"
            t = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy(float)[img] / s.nm_per_px
            yield s.frames[img], t - t[0]


def main(n_seeds: int = 6) -> None:
    timing = dict.fromkeys(METHODS, 0.0)
    print(f"{'dose e-/px':>10}  {'method':<26} {'RMS px':>7} {'p95 px':>7} {'max px':>7}")
    for dose, liquid in ((5, False), (20, False), (100, False), (1e6, False), (5, True), (10, True)):
        errs = {m: [] for m in METHODS}
        for frames, truth in sessions(n_seeds, dose, liquid):
            for m, kw in METHODS.items():
                t0 = time.perf_counter()
                d = estimate_drift(frames, **kw)
                timing[m] += time.perf_counter() - t0
                errs[m].append(np.hypot(*(d - truth).T))
        for m, e in errs.items():
            e = np.concatenate(e)
            label = f"{dose:g} liquid" if liquid else f"{dose:g}"
            print(f"{label:>10}  {m:<26} {np.sqrt(np.mean(e ** 2)):7.2f} {np.percentile(e, 95):7.2f} {e.max():7.1f}")
    a, b, c = timing.values()
    print(f"time: estimate_drift() {a:.1f} s, baseline {b:.1f} s: {a / b:.2f}× the baseline's; "
          f"without the coarse band {c:.1f} s: {a / c:.2f}×")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
