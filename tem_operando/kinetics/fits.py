"""Small, exact fits on short time series: regression with a 95% CI, change points, rate laws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["LineFit", "fit_line", "ramp_fit", "segment_fit", "rate_law_fit", "RateLawFit"]


def check_pixel_size(value: float, name: str) -> float:
    """``value`` as a float if it is a finite pixel size > 0 (nm); else a ValueError naming ``name``.

    The kinetics need a calibrated pixel size: it is the resolution floor of every fit and the scale of
    the systematic terms of the CIs (an uncalibrated recording's NaN would make every CI NaN).
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite pixel size > 0 (nm), got {value!r}; "
                         "give the recording's calibration (e.g. analyze --nm-per-px)")
    return v


@dataclass
class LineFit:
    """Least-squares line y = intercept + slope·t with the 95% confidence half-width of the slope."""

    slope: float
    intercept: float
    ci95: float
    sigma: float
    n: int


def _autocorr_inflation(resid: np.ndarray) -> float:
    """√((1 + ρ)/(1 − ρ)) for the lag-1 autocorrelation ρ ≥ 0 of the residuals (AR(1) variance
    inflation of a slope), capped at 3."""
    if resid.size < 5:
        return 1.0
    r = resid - resid.mean()
    den = float(r @ r)
    if den <= 0:
        return 1.0
    rho = float(np.clip((r[1:] @ r[:-1]) / den, 0.0, 0.8))
    return min(float(np.sqrt((1 + rho) / (1 - rho))), 3.0)


def fit_line(t: np.ndarray, y: np.ndarray, *, floor_sigma: float = 0.0) -> LineFit:
    """Ordinary least squares of ``y`` on ``t`` with a t-distribution 95% CI on the slope.

    The slope's standard error uses the residual scatter (at least ``floor_sigma``, e.g. the
    measurement resolution) and is inflated for positive lag-1 autocorrelation of the residuals.
    """
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    n = t.size
    if n < 2 or np.ptp(t) == 0:
        return LineFit(np.nan, np.nan, np.nan, np.nan, n)
    tm, ym = t.mean(), y.mean()
    sxx = float(((t - tm) ** 2).sum())
    slope = float(((t - tm) * (y - ym)).sum() / sxx)
    icpt = ym - slope * tm
    if n < 3:
        return LineFit(slope, icpt, np.nan, np.nan, n)
    resid = y - (icpt + slope * t)
    sigma = max(float(np.sqrt((resid @ resid) / (n - 2))), floor_sigma)
    se = sigma / np.sqrt(sxx) * _autocorr_inflation(resid)
    return LineFit(slope, float(icpt), float(stats.t.ppf(0.975, n - 2) * se), sigma, n)


def _bin_series(t: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    if t.size <= max_points:
        return t, y
    k = int(np.ceil(t.size / max_points))
    m = (t.size // k) * k
    return t[:m].reshape(-1, k).mean(1), y[:m].reshape(-1, k).mean(1)


def ramp_fit(t: np.ndarray, y: np.ndarray, *, max_points: int = 150) -> dict:
    """Flat – ramp – flat fit: y = y0 + (y1 − y0)·clip((t − t1)/(t2 − t1), 0, 1).

    The breakpoints t1 < t2 are searched exhaustively on the sample times (a series longer than
    ``max_points`` is binned for the search); y0, y1 are then exact least squares.

    Returns
    -------
    dict
        ``t1, t2, y0, y1, rss, rss_flat`` (residual sum of squares of the ramp and of a constant).
    """
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    tb, yb = _bin_series(t, y, max_points)
    n = tb.size
    i, j = np.triu_indices(n, 1)
    t1, t2 = tb[i], tb[j]
    g = np.clip((tb[None, :] - t1[:, None]) / (t2 - t1)[:, None], 0.0, 1.0)  # (pairs, n)
    # y = y0 + d·g : two-parameter least squares per pair
    gm = g.mean(1)
    ym = yb.mean()
    sgg = ((g - gm[:, None]) ** 2).sum(1)
    sgy = ((g - gm[:, None]) * (yb - ym)[None, :]).sum(1)
    d = np.divide(sgy, sgg, out=np.zeros_like(sgy), where=sgg > 0)
    y0 = ym - d * gm
    rss = ((yb[None, :] - y0[:, None] - d[:, None] * g) ** 2).sum(1)
    k = int(np.argmin(rss))
    # exact levels on the unbinned series
    gk = np.clip((t - t1[k]) / (t2[k] - t1[k]), 0.0, 1.0)
    A = np.column_stack([1 - gk, gk])
    (a0, a1), *_ = np.linalg.lstsq(A, y, rcond=None)
    res = y - A @ np.array([a0, a1])
    return {"t1": float(t1[k]), "t2": float(t2[k]), "y0": float(a0), "y1": float(a1),
            "rss": float(res @ res), "rss_flat": float(((y - y.mean()) ** 2).sum())}


def segment_fit(t: np.ndarray, y: np.ndarray, *, max_segments: int = 8, min_points: int = 2,
                penalty: float | None = None, max_points: int = 400) -> list[tuple[int, int, float, float]]:
    """Optimal piecewise-linear segmentation (each segment its own line), K chosen by BIC.

    Dynamic programming over segment ends with O(1) segment costs from prefix sums: O(K·n²).
    A series longer than ``max_points`` is searched on bin means (``ceil(n / max_points)``
    samples a bin), then each breakpoint is refined on the full series within ± one bin, so a
    10,000-frame series costs about what a 400-frame one does.

    Returns
    -------
    list of (start, stop, slope, intercept)
        Index ranges ``[start, stop)`` of the segments in time order.
    """
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    n = t.size
    if n < 2 * min_points:
        f = fit_line(t, y)
        return [(0, n, f.slope if np.isfinite(f.slope) else 0.0, f.intercept if np.isfinite(f.intercept) else float(np.mean(y)))]
    step = max(1, int(np.ceil(n / max(int(max_points), 2 * min_points))))
    if step > 1:
        starts = np.arange(0, n, step)
        counts = np.diff(np.append(starts, n))
        tb, yb = np.add.reduceat(t, starts) / counts, np.add.reduceat(y, starts) / counts
        coarse = _segment_bounds(tb, yb, max_segments, max(1, -(-min_points // step)), penalty)
        cost = _line_cost(t, y)
        bounds = [0] + [min(int(b) * step, n) for b in coarse[1:-1]] + [n]
        for j in range(1, len(bounds) - 1):  # refine each breakpoint between its neighbours
            lo = max(bounds[j] - step, bounds[j - 1] + min_points)
            hi = min(bounds[j] + step, bounds[j + 1] - min_points)
            if hi > lo:
                p = np.arange(lo, hi + 1)
                v = cost(np.full(p.size, bounds[j - 1]), p) + cost(p, np.full(p.size, bounds[j + 1]))
                bounds[j] = int(p[np.argmin(v)])
    else:
        bounds = _segment_bounds(t, y, max_segments, min_points, penalty)
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        f = fit_line(t[a:b], y[a:b])
        slope = f.slope if np.isfinite(f.slope) else 0.0
        icpt = f.intercept if np.isfinite(f.intercept) else float(np.mean(y[a:b]))
        out.append((a, b, float(slope), float(icpt)))
    return out


def _line_cost(t: np.ndarray, y: np.ndarray):
    """``cost(a, b)``: RSS of a least-squares line on ``[a, b)`` (vectorised, O(1) each from prefix sums)."""
    c = [np.concatenate([[0.0], np.cumsum(v)]) for v in (np.ones(t.size), t, y, t * t, t * y, y * y)]

    def cost(a, b):
        S0, St, Sy, Stt, Sty, Syy = (ci[b] - ci[a] for ci in c)
        vt = Stt - St * St / S0
        cty = Sty - St * Sy / S0
        vy = Syy - Sy * Sy / S0
        return np.maximum(vy - np.divide(cty * cty, vt, out=np.zeros_like(vt), where=vt > 1e-12), 0.0)

    return cost


def _segment_bounds(t: np.ndarray, y: np.ndarray, max_segments: int, min_points: int,
                    penalty: float | None) -> list[int]:
    """Segment bounds ``[0, ..., n]`` of the BIC-optimal piecewise-linear fit (exact DP)."""
    n = t.size
    cost = _line_cost(t, y)
    K = max(1, min(max_segments, n // min_points))
    best = np.full((K + 1, n + 1), np.inf)
    arg = np.zeros((K + 1, n + 1), np.int64)
    best[0, 0] = 0.0
    for k in range(1, K + 1):
        for b in range(k * min_points, n + 1):
            a = np.arange((k - 1) * min_points, b - min_points + 1)
            v = best[k - 1, a] + cost(a, np.full(a.size, b))
            m = int(np.argmin(v))
            best[k, b], arg[k, b] = v[m], a[m]
    scale = max(float(np.var(y)) * 1e-9, 1e-12)
    pen = np.log(n) if penalty is None else penalty
    bic = [n * np.log(max(best[k, n] / n, scale)) + 3 * k * pen for k in range(1, K + 1)]
    k = int(np.argmin(bic)) + 1
    bounds = [n]
    for kk in range(k, 0, -1):
        bounds.append(int(arg[kk, bounds[-1]]))
    return bounds[::-1]


@dataclass
class RateLawFit:
    """The rate law chosen for a front x(t) and its parameters."""

    law: str                   # "linear", "sqrt" or "steps"
    t0_s: float                # onset
    velocity_nm_s: float       # linear: v; steps: mean velocity including pauses; sqrt: NaN
    velocity_ci95_nm_s: float
    exponent_n: float          # of x ∝ (t − t0)^n (NaN for steps)
    k_nm_per_sqrt_s: float     # prefactor of the √t law
    diffusion_nm2_s: float     # k²/2 when the √t law is chosen
    n_steps: int               # moving segments (1 unless stepwise)
    bic: dict                  # BIC of every model tried
    model_t: np.ndarray | None = None
    model_x: np.ndarray | None = None


def _onset_grid(t: np.ndarray, x: np.ndarray, thresh: float, n_grid: int = 41) -> tuple[np.ndarray, int]:
    moving = np.flatnonzero(x > thresh)
    if moving.size == 0:
        return np.array([t[0]]), 0
    i0 = int(moving[0])
    dt = float(np.median(np.diff(t))) if t.size > 1 else 1.0
    lo = t[i0 - 1] if i0 > 0 else t[0] - 2 * dt
    return np.linspace(lo, t[i0], n_grid, endpoint=False), max(i0 - 1, 0)


def _fit_shape(t, x, grid, h):
    """Best t0 on ``grid`` and a for x = a·h(max(t − t0, 0)); returns (rss, t0, a)."""
    tau = np.maximum(t[None, :] - grid[:, None], 0.0)
    H = h(tau)
    hh = (H * H).sum(1)
    a = np.divide((H * x[None, :]).sum(1), hh, out=np.zeros(grid.size), where=hh > 0)
    rss = ((x[None, :] - a[:, None] * H) ** 2).sum(1)
    k = int(np.argmin(rss))
    return float(rss[k]), float(grid[k]), float(a[k])


def _bic(rss: float, n: int, p: int) -> float:
    return n * np.log(max(rss / n, 1e-12)) + p * np.log(n)


def rate_law_fit(t: np.ndarray, x: np.ndarray, *, resolution: float = 1.0, systematic: float = 0.0) -> RateLawFit:
    """Choose between a linear, a √t and a stepwise front x(t) by BIC and fit the chosen law.

    Parameters
    ----------
    t : ndarray
        Times, s (sorted).
    x : ndarray
        Front position from the contact end, nm (0 before the onset).
    resolution : float
        Measurement resolution of x, nm (the pixel size): a floor for the residual scatter, and
        the threshold above which the front is taken to have left the contact end.
    systematic : float
        Systematic error of x at either end of the moving span, nm (1σ, independent at the two
        ends; an error correlated from frame to frame that the residuals do not show): added in
        quadrature to the velocity's CI as 1.96·√2·σ/T over a span of T s.
    """
    if not (np.isfinite(systematic) and systematic >= 0):
        raise ValueError(f"systematic must be a finite number ≥ 0 (nm), got {systematic!r}")
    resolution = check_pixel_size(resolution, "resolution")
    t = np.asarray(t, float)
    x = np.asarray(x, float)
    nan = float("nan")
    if t.size < 4 or np.nanmax(x) <= resolution:
        return RateLawFit("none", nan, nan, nan, nan, nan, nan, 0, {})
    grid, first = _onset_grid(t, x, resolution)
    tt, xx = t[first:], x[first:]
    n = tt.size
    rl, t0l, v = _fit_shape(tt, xx, grid, lambda s: s)
    rs, t0s, k = _fit_shape(tt, xx, grid, np.sqrt)
    floor = n * (resolution / np.sqrt(12)) ** 2
    rl, rs = max(rl, floor), max(rs, floor)
    bic = {"linear": _bic(rl, n, 3), "sqrt": _bic(rs, n, 3)}
    # power law for the exponent
    best = (np.inf, nan, nan)
    for p in np.linspace(0.2, 1.6, 57):
        r, t0p, _ = _fit_shape(tt, xx, grid, lambda s, p=p: s**p)
        if r < best[0]:
            best = (r, p, t0p)
    n_exp = float(best[1])
    # stepwise: ≥ 2 moving runs separated by a pause (a flat segment followed by a faster one)
    segs = segment_fit(tt, xx, max_segments=min(10, max(n // 3, 1)), min_points=2)
    slopes = np.array([s[2] for s in segs])
    vmax = float(slopes.max()) if slopes.size else 0.0
    moving = slopes > 0.3 * vmax
    runs = int(np.sum(moving[1:] & ~moving[:-1]) + (moving[0] if moving.size else 0))
    resumes = bool(np.any(~moving[:-1] & moving[1:] & (np.arange(len(segs) - 1) > 0))) if len(segs) > 2 else False
    model_x = None
    if runs >= 2 and resumes:
        pred = np.concatenate([sl * tt[a:b] + ic for a, b, sl, ic in segs])
        rss_steps = max(float(((xx - pred) ** 2).sum()), floor)
        bic["steps"] = _bic(rss_steps, n, 3 * len(segs))
    law = min(bic, key=bic.get)
    if law == "linear":
        t0 = t0l
        sel = tt > t0
        f = fit_line(tt[sel], xx[sel], floor_sigma=resolution / np.sqrt(12))
        span = float(np.ptp(tt[sel])) if sel.any() else 0.0
        vel, ci = f.slope, (float(np.hypot(f.ci95, 1.96 * np.sqrt(2) * systematic / span)) if span > 0 else f.ci95)
        model_x = v * np.maximum(tt - t0, 0)
        return RateLawFit(law, t0, vel, ci, n_exp, nan, nan, 1, bic, tt, model_x)
    if law == "sqrt":
        model_x = k * np.sqrt(np.maximum(tt - t0s, 0))
        return RateLawFit(law, t0s, nan, nan, n_exp, k, k * k / 2, 1, bic, tt, model_x)
    # steps: mean velocity from the onset to the end of the last moving run
    pred = np.concatenate([sl * tt[a:b] + ic for a, b, sl, ic in segs])
    sig = max(float(np.sqrt(((xx - pred) ** 2).sum() / max(n - 3 * len(segs), 1))), resolution / np.sqrt(12))
    first_mv = int(np.argmax(moving))
    last_mv = len(segs) - 1 - int(np.argmax(moving[::-1]))
    a, b, sl, ic = segs[first_mv]
    # onset: where the first moving segment's line leaves x = 0
    t_on = -ic / sl if sl > 0 else tt[a]
    a2, b2, sl2, ic2 = segs[last_mv]
    if last_mv + 1 < len(segs):  # the front stops: where the last moving line meets the pause level
        na, nb_, nsl, nic = segs[last_mv + 1]
        x_end = float(np.mean(xx[na:nb_]))
        t_end = (x_end - ic2) / sl2 if sl2 > 0 else tt[b2 - 1]
    else:
        t_end = tt[b2 - 1]
        x_end = sl2 * t_end + ic2
    T = max(t_end - t_on, 1e-9)
    vel = x_end / T
    dt = float(np.median(np.diff(tt)))
    se = np.sqrt((sig**2 / max(b2 - a2, 1)) + (vel * dt / np.sqrt(12)) ** 2 * 2) / T
    ci = float(np.hypot(stats.t.ppf(0.975, max(n - 3 * len(segs), 2)) * se * 2, 1.96 * np.sqrt(2) * systematic / T))
    return RateLawFit("steps", float(t_on), float(vel), ci, nan, nan, nan, runs, bic, tt, pred)
