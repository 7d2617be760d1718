"""Synthetic-session generation speed, against the cost of its own Poisson noise in the same run.

Prints frames/s for each image scene and for SAED series at 256×256 and 512×512, and the ratio
to drawing the Poisson noise alone for the same frames (the floor any realistic generator pays).
Run: ``python benchmarks/synth.py``
"""

from __future__ import annotations

import time

import numpy as np

from tem_operando.synth import image_series, saed_series


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    n = 40
    print(f"{'generator':22s} {'size':>7s} {'frames/s':>9s} {'vs Poisson alone':>17s}")
    for size in (256, 512):
        rng = np.random.default_rng(0)
        t_noise = timed(lambda: rng.poisson(20.0, size=(n, size, size)).astype(np.float32))
        for scene in ("particles", "wire", "mixed"):
            t = timed(lambda: image_series(n, (size, size), scene=scene, rng=1))
            print(f"image {scene:16s} {size:5d}px {n / t:9.1f} {t_noise / t:16.2f}×")
        t = timed(lambda: saed_series(n, (size, size), rng=1))
        print(f"{'saed Sn':22s} {size:5d}px {n / t:9.1f} {t_noise / t:16.2f}×")


if __name__ == "__main__":
    main()
