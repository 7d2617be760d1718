"""Issue 4: how close to the truth can *any* method measure the kinetics sweep's particle swelling rates?

The Cramér–Rao bound of the swelling rate of every swelling particle of ``kinetics_sweep.py``'s sessions
(the same seeds, scenes and doses), from the information in its frames:

1. per frame, the bound on the outer diameter of the core–shell sphere from Poisson noise alone, with the
   generator's bright-field forward model (projected thicknesses of core and shell, mean free paths, the
   Fresnel edge fringe, carbon film, 1 px blur) — but without the film's texture, the reacted material's
   grain, bend contours, thickness fringes, flicker and focus changes (nuisances that only take
   information away): an optimistic bound. Either the core radius is a free parameter (what a
   measurement of the outline faces: a thin shell and a core a pixel inside it look alike) or it is
   known exactly (as if the core–shell geometry of the generator were given);
2. over the series, the bound on the rate of the flat–ramp–flat width model (both plateau widths, onset
   and end unknown) with those per-frame errors (frames independent), by the delta method;
3. the share of particles whose rate an unbiased estimator at that bound would put within 5 % / 20 %
   of the truth: mean of 2Φ(0.05·rate/σ) − 1.

The forward model is checked against ``image_series`` rendered without the nuisances (radial profiles of
a swelling particle, printed: they agree to ~1 % of the background).

    python models/experiments/rate_bound.py [N_SEEDS] [--first-seed S]

Results and how to read them: ``models/experiments/README.md`` (session 15).
"""

import argparse

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import norm

from tem_operando.synth import image_series
from tem_operando.synth.images import ParticleSpec

DOSES = (5, 20, 100)  # kinetics_sweep.py's, by seed % 3
_OFF = dict(film_texture_amp=0, grain_amp=0, bend_contour_amp=0, thickness_fringe_amp=0, flicker=0, gain_variation=0,
            readout_noise_e=0, hot_pixel_fraction=0, dead_pixel_fraction=0, illum_gradient=0, illum_falloff=0,
            focus_wobble=0)


def transmission(radius_nm: float, core_nm: float, rp: dict, *, n_px: int = 72, blur_px: float = 1.0,
                 oversample: int = 4) -> np.ndarray:
    """Noiseless bright-field signal (fraction of the dose) of a core–shell sphere centred in an n_px² frame
    at 1 nm/px: the generator's model without textures (``_raster_particle`` + ``_transmission``)."""
    g = (np.arange(n_px * oversample) + 0.5) / oversample - n_px / 2
    y, x = np.meshgrid(g, g, indexing="ij")
    r = np.hypot(y, x)
    t_out = 2 * np.sqrt(np.maximum(radius_nm**2 - r**2, 0.0))
    t_core = 2 * np.sqrt(np.maximum(core_nm**2 - r**2, 0.0))
    mfp = rp["mfp_pristine_nm"]
    obj = np.exp(-t_core / mfp - (t_out - t_core) / (mfp * rp["mfp_reacted_ratio"]))
    fw = rp["fresnel_width_px"]
    fresnel = 1 + rp["fresnel_amp"] * np.exp(-((((r - radius_nm) - fw) / fw) ** 2))
    sig = obj * np.exp(-rp["film_thickness_nm"] / rp["film_mfp_nm"]) * fresnel
    px = sig.reshape(n_px, oversample, n_px, oversample).mean((1, 3))
    return ndimage.gaussian_filter(px, blur_px, mode="nearest")


def diameter_crlb_nm(radius_nm: float, core_nm: float, dose: float, rp: dict, *, core_known: bool = False) -> float:
    """Cramér–Rao bound (1σ) of the outer diameter from one frame at ``dose`` e⁻/px (Poisson noise)."""
    h = 0.05
    n_px = int(2 * radius_nm + 16)
    mu = np.maximum(transmission(radius_nm, core_nm, rp, n_px=n_px) * dose, 1e-9)
    d_r = (transmission(radius_nm + h, core_nm, rp, n_px=n_px) - transmission(radius_nm - h, core_nm, rp, n_px=n_px)) * dose / (2 * h)
    if core_known or core_nm < 2 * h:
        return float(2 / np.sqrt(np.sum(d_r * d_r / mu)))
    d_c = (transmission(radius_nm, core_nm + h, rp, n_px=n_px) - transmission(radius_nm, core_nm - h, rp, n_px=n_px)) * dose / (2 * h)
    fisher = np.array([[np.sum(d_r * d_r / mu), np.sum(d_r * d_c / mu)],
                       [np.sum(d_r * d_c / mu), np.sum(d_c * d_c / mu)]])
    return float(2 * np.sqrt(np.linalg.inv(fisher)[0, 0]))


def rate_bound(t_s: np.ndarray, sigma_nm: np.ndarray, w0: float, w1: float, t1: float, t2: float) -> float:
    """Bound (1σ) on the rate (w1 − w0)/(t2 − t1) of the flat–ramp–flat model, all four unknown."""
    gain, dur = w1 - w0, t2 - t1
    g = np.clip((t_s - t1) / dur, 0, 1)
    ramp = (t_s > t1) & (t_s < t2)
    jac = np.zeros((t_s.size, 4))
    jac[:, 0], jac[:, 1] = 1 - g, g
    jac[ramp, 2] = -gain * (t2 - t_s[ramp]) / dur**2
    jac[ramp, 3] = -gain * (t_s[ramp] - t1) / dur**2
    cov = np.linalg.pinv((jac / sigma_nm[:, None] ** 2).T @ jac)
    grad = np.array([-1.0, 1.0, gain / dur, -gain / dur]) / dur
    return float(np.sqrt(grad @ cov @ grad))


def check_model() -> float:
    """Largest difference of radial profiles, forward model vs ``image_series`` without nuisances."""
    rp = dict(film_thickness_nm=20.0, film_mfp_nm=160.0, mfp_pristine_nm=80.0, mfp_reacted_ratio=1.8,
              fresnel_amp=0.2, fresnel_width_px=1.0)
    spec = ParticleSpec(1, (36.0, 36.0), 30.0, onset_s=0.0, swelling_rate_nm_s=1.0, width_expansion=0.3)
    s = image_series(12, (72, 72), objects=[spec], fps=1.0, rng=1, dose_e_per_px=1e7, **_OFF, **rp)
    worst = 0.0
    for f in (0, 4, 8, 11):
        o = s.objects[s.objects.frame == f].iloc[0]
        p = float(np.clip((o.width_nm - 30) / 9, 0, 1))
        model = transmission(o.width_nm / 2, o.width_nm / 2 * (1 - p) ** (1 / 3), rp, n_px=72)
        yy, xx = np.indices(model.shape)
        r_img = np.hypot(yy + 0.5 - o.y_nm, xx + 0.5 - o.x_nm)
        r_mod = np.hypot(yy + 0.5 - 36, xx + 0.5 - 36)
        for b in range(0, 26):
            worst = max(worst, abs(float(s.frames[f][(r_img >= b) & (r_img < b + 1)].mean() / 1e7
                                         - model[(r_mod >= b) & (r_mod < b + 1)].mean())))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n_seeds", nargs="?", type=int, default=24)
    ap.add_argument("--first-seed", type=int, default=0)
    a = ap.parse_args()
    print(f"forward model vs image_series without nuisances: radial profiles within {check_model():.3f} "
          "(fraction of the dose)")
    rows = []
    for seed in range(a.first_seed, a.first_seed + a.n_seeds):
        dose = DOSES[seed % 3]
        for scene in ("particles", "mixed"):
            s = image_series(60, (160, 160), scene=scene, rng=seed, dose_e_per_px=dose)
            rp = s.params["render"]
            for _, t in s.tracks[s.tracks.kind == "particle"].iterrows():
                if not (np.isfinite(t.swelling_rate_nm_s) and t.n_steps == 1 and t.width1_nm > t.width0_nm):
                    continue
                o = s.objects[s.objects.track_id == t.track_id].sort_values("frame")
                ts, w = o.time_s.to_numpy(float), o.width_nm.to_numpy(float)
                if ((ts > t.onset_s) & (ts < t.plateau_s)).sum() < 2:
                    continue
                r0, r1 = t.width0_nm / 2, t.width1_nm / 2
                row = dict(seed=seed, scene=scene, dose=dose, rate=t.swelling_rate_nm_s,
                           fresnel=rp["fresnel_amp"])
                for known in (False, True):
                    cache: dict = {}
                    sig = []
                    for wi in w:
                        p = round(float(np.clip((wi / 2 - r0) / (r1 - r0), 0, 1)), 2)
                        if p not in cache:
                            radius = r0 + p * (r1 - r0)
                            cache[p] = diameter_crlb_nm(radius, radius * (1 - p) ** (1 / 3), dose, rp, core_known=known)
                        sig.append(min(cache[p], 100.0))
                    se = rate_bound(ts, np.array(sig), t.width0_nm, t.width1_nm, t.onset_s, t.plateau_s)
                    k = "known" if known else "free"
                    row[f"se_{k}"] = se / t.swelling_rate_nm_s
                    row[f"p5_{k}"] = 2 * norm.cdf(0.05 * t.swelling_rate_nm_s / se) - 1
                    row[f"p20_{k}"] = 2 * norm.cdf(0.2 * t.swelling_rate_nm_s / se) - 1
                rows.append(row)
    df = pd.DataFrame(rows)
    print(f"{len(df)} swelling particles (one ramp) of seeds {a.first_seed}–{a.first_seed + a.n_seeds - 1}")
    for k, what in (("free", "core radius free"), ("known", "core radius known")):
        by = df.groupby("dose")[[f"p5_{k}", f"p20_{k}"]].mean().round(2)
        print(f"{what}: share within 5 % / 20 % at best {df[f'p5_{k}'].mean():.2f} / {df[f'p20_{k}'].mean():.2f}; "
              f"by dose {by.to_dict('index')}; median bound {df[f'se_{k}'].median():.3f} × the rate")


if __name__ == "__main__":
    main()
