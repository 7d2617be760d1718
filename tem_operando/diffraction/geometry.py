"""Pattern geometry: centre, ellipticity, detector mask and the sparse pixel → radius-bin map.

Conventions (shared with :mod:`tem_operando.synth.saed`): pixel ``(x, y)`` = (column, row); the
centre is ``(center_x_px, center_y_px)``; with ellipticity ε and angle φ (degrees from +x towards
+y) a ring of *nominal* radius r lies at ``r (1 + ε/2)`` along φ and ``r (1 − ε/2)`` across it.
``q [1/nm] = r_nominal [px] × inv_nm_per_px``.

The centre is found without trusting the brightest pixel: a diffraction pattern is
centrosymmetric (Friedel), so the self-convolution of the high-passed log pattern peaks at twice
the centre, whatever a saturated beam or an off-centre beam stop does.  It is then refined, with
the ellipse, by following the strongest rings in azimuthal sectors.

:class:`RadialBinner` is the once-per-series preparation: a sparse matrix that maps the pixels
(minus a mask) to radius bins with linear splitting, so a chunk's profiles are sparse mat-vecs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

__all__ = [
    "PatternGeometry",
    "RadialBinner",
    "auto_mask",
    "find_center",
    "fit_geometry",
    "nominal_radius",
    "saturation_mask",
]

#: Interleaved accumulators of the profile kernel: neighbouring pixels add into different copies
#: of the profile, which breaks the store-to-load dependency chain of a scatter-add (≈2× faster).
_INTERLEAVE = 4


@dataclass(frozen=True)
class PatternGeometry:
    """Where the pattern sits on the detector.

    Attributes
    ----------
    shape : (int, int)
        Frame size (rows, columns).
    center_x_px, center_y_px : float
        Pattern centre in px (x along columns).
    ellipticity : float
        ε, see the module docstring (0 for circular rings).
    ellipse_angle_deg : float
        φ, the long axis, degrees from +x towards +y.
    """

    shape: tuple[int, int]
    center_x_px: float
    center_y_px: float
    ellipticity: float = 0.0
    ellipse_angle_deg: float = 0.0

    @property
    def center(self) -> tuple[float, float]:
        """``(x, y)`` in px."""
        return (self.center_x_px, self.center_y_px)


def nominal_radius(geometry: PatternGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Ellipse-corrected (nominal) radius in px and azimuth in rad of every pixel.

    Parameters
    ----------
    geometry : PatternGeometry

    Returns
    -------
    r_px, theta : ndarray, shape ``geometry.shape``
    """
    h, w = geometry.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = x - geometry.center_x_px, y - geometry.center_y_px
    phi = math.radians(geometry.ellipse_angle_deg)
    u = (dx * math.cos(phi) + dy * math.sin(phi)) / (1.0 + geometry.ellipticity / 2.0)
    v = (-dx * math.sin(phi) + dy * math.cos(phi)) / (1.0 - geometry.ellipticity / 2.0)
    return np.hypot(u, v), np.arctan2(v, u) + phi


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def saturation_mask(frames: np.ndarray) -> np.ndarray:
    """Pixels that reach the detector's saturation level in any frame.

    Saturation is recognised as a plateau: the largest value of the frames, held by at least
    three pixels of one frame.  Returns all-False if there is no plateau.

    Parameters
    ----------
    frames : ndarray, (T, H, W) or (H, W)

    Returns
    -------
    ndarray of bool, (H, W)
    """
    stack = np.asarray(frames).reshape((-1,) + np.shape(frames)[-2:])
    peak = np.nanmax(stack, axis=0)
    top = np.nanmax(peak)
    if not np.isfinite(top) or top <= 0:
        return np.zeros(peak.shape, bool)
    hits = stack >= top
    if hits.reshape(len(stack), -1).sum(axis=1).max() < 3:
        return np.zeros(peak.shape, bool)
    return peak >= top


def auto_mask(mean_frame: np.ndarray, geometry: PatternGeometry,
              saturated: np.ndarray | None = None, *, dark_ratio: float = 0.1,
              grow_px: int = 4) -> np.ndarray:
    """Valid-pixel mask: drops non-finite, saturated and beam-stop (dark) pixels.

    A pixel is under the beam stop when the series mean there is below ``dark_ratio`` times the
    median of its radius bin (the stop transmits ~1e-4).  Masked regions grow by ``grow_px``.

    Parameters
    ----------
    mean_frame : ndarray (H, W)
        Mean of several frames (counts per px).
    geometry : PatternGeometry
    saturated : ndarray of bool, optional
        From :func:`saturation_mask`.
    dark_ratio : float
        Threshold relative to the radial median.
    grow_px : int
        Dilation of the masked region in px.

    Returns
    -------
    ndarray of bool, (H, W)
        True for usable pixels.
    """
    from scipy.ndimage import binary_dilation

    m = np.asarray(mean_frame, dtype=np.float64)
    bad = ~np.isfinite(m)
    m = np.where(bad, 0.0, m)
    r, _ = nominal_radius(geometry)
    ri = np.rint(r).astype(np.int64).ravel()
    order = np.argsort(ri, kind="stable")
    values = m.ravel()[order]
    bounds = np.searchsorted(ri[order], np.arange(ri.max() + 2))
    med = np.zeros(ri.max() + 1)
    for b in range(ri.max() + 1):
        seg = values[bounds[b]:bounds[b + 1]]
        if seg.size:
            med[b] = np.median(seg)
    dark = m < dark_ratio * med[ri].reshape(m.shape)
    dark &= med[ri].reshape(m.shape) > 0
    bad |= dark
    if saturated is not None:
        bad |= saturated
    if grow_px > 0 and bad.any():
        bad = binary_dilation(bad, iterations=int(grow_px))
    return ~bad


# --------------------------------------------------------------------------------------------
# Centre and ellipse
# --------------------------------------------------------------------------------------------


def _ring_image(image: np.ndarray, mask: np.ndarray | None, highpass_px: float) -> np.ndarray:
    """Log-compressed, high-passed, zero-mean image with masked pixels set to 0."""
    from scipy.ndimage import gaussian_filter

    img = np.asarray(image, dtype=np.float64)
    valid = np.isfinite(img) if mask is None else (mask & np.isfinite(img))
    img = np.log1p(np.clip(np.where(valid, img, 0.0), 0.0, None))
    w = gaussian_filter(valid.astype(float), highpass_px)
    smooth = gaussian_filter(img * valid, highpass_px) / np.maximum(w, 1e-6)
    hp = np.where(valid, img - smooth, 0.0)
    # Clip outliers (saturated beam edge, hot pixels) so that rings dominate.
    s = np.std(hp[valid]) if valid.any() else 1.0
    return np.clip(hp, -4 * s, 4 * s)


def find_center(image: np.ndarray, mask: np.ndarray | None = None, *,
                highpass_px: float = 4.0) -> tuple[float, float]:
    """Pattern centre from Friedel symmetry (robust to a saturated beam or a beam stop).

    The self-convolution ``(L * L)(s) = Σ_x L(x) L(s − x)`` of the high-passed log pattern ``L``
    is largest at ``s = 2c`` for a centrosymmetric pattern centred on ``c``.

    Parameters
    ----------
    image : ndarray (H, W)
        A pattern or the mean of several.
    mask : ndarray of bool, optional
        True for usable pixels.
    highpass_px : float
        Gaussian scale (px) of the smooth part removed before correlating.

    Returns
    -------
    (float, float)
        Centre ``(x, y)`` in px, to ~0.2 px.
    """
    hp = _ring_image(image, mask, highpass_px)
    h, w = hp.shape
    fh, fw = 2 * h, 2 * w
    spec = np.fft.rfft2(hp, s=(fh, fw))
    conv = np.fft.irfft2(spec * spec, s=(fh, fw))
    # Only centres inside the central 3/4 of the frame are plausible.
    ys, xs = slice(h // 4, 2 * h - h // 4), slice(w // 4, 2 * w - w // 4)
    sub = conv[ys, xs]
    iy, ix = np.unravel_index(int(np.argmax(sub)), sub.shape)
    iy += ys.start
    ix += xs.start

    def vertex(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return 0.5 * (a - c) / d if d < 0 else 0.0

    oy = vertex(conv[iy - 1, ix], conv[iy, ix], conv[iy + 1, ix])
    ox = vertex(conv[iy, ix - 1], conv[iy, ix], conv[iy, ix + 1])
    return ((ix + ox) / 2.0, (iy + oy) / 2.0)


def _sector_profiles(image: np.ndarray, valid: np.ndarray, geometry: PatternGeometry,
                     n_sectors: int, step_px: float, r_max: float):
    """Sector profiles in the nominal (ellipse-corrected) radius of ``geometry``."""
    r, th = nominal_radius(geometry)
    th = np.angle(np.exp(1j * th))
    n_r = int(r_max / step_px) + 1
    ri = np.rint(r / step_px).astype(np.int64)
    ti = (np.floor((th + np.pi) / (2 * np.pi) * n_sectors).astype(np.int64)) % n_sectors
    keep = valid & (ri < n_r)
    idx = ti[keep] * n_r + ri[keep]
    sums = np.bincount(idx, weights=image[keep], minlength=n_sectors * n_r).reshape(n_sectors, n_r)
    cnt = np.bincount(idx, minlength=n_sectors * n_r).reshape(n_sectors, n_r)
    prof = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
    theta = (np.arange(n_sectors) + 0.5) / n_sectors * 2 * np.pi - np.pi
    return prof, theta, np.arange(n_r) * step_px


def _strong_rings(profile: np.ndarray, r: np.ndarray, r_min: float, n_rings: int,
                  half_window: float) -> list[float]:
    """Radii of the most prominent, mutually isolated peaks of a radial profile."""
    from scipy.signal import find_peaks

    p = np.where(np.isfinite(profile), profile, 0.0)
    step = r[1] - r[0]
    # Remove the smooth part (a running minimum then mean) so the rings stand out.
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    win = max(3, int(4 * half_window / step))
    base = uniform_filter1d(minimum_filter1d(p, win), win)
    detail = p - base
    peaks, props = find_peaks(detail, prominence=0, width=0,
                              distance=max(1, int(2 * half_window / step)))
    ok = r[peaks] > r_min
    peaks, prom, width = peaks[ok], props["prominences"][ok], props["widths"][ok]
    # sharp and strong rings first (a broad ring's centroid is the least precise)
    order = np.argsort(prom / np.maximum(width, 1.0))[::-1]
    out: list[float] = []
    for i in order:
        if all(abs(r[peaks[i]] - o) > 2 * half_window for o in out):
            out.append(float(r[peaks[i]]))
        if len(out) >= n_rings:
            break
    return out


def fit_geometry(image: np.ndarray, mask: np.ndarray | None = None, *,
                 center: tuple[float, float] | None = None, n_rings: int = 4,
                 n_sectors: int = 36, iterations: int = 4, r_min_px: float = 8.0,
                 fit_ellipse: bool = True) -> PatternGeometry:
    """Centre and ellipse of a ring pattern.

    Starts from :func:`find_center` (or ``center``) and follows the ``n_rings`` strongest
    isolated rings in ``n_sectors`` azimuthal sectors; the ring radius in each sector is fitted
    with ``ρ(θ) = R_k (1 + e cos 2(θ − φ)) + δx cos θ + δy sin θ`` (linear least squares in
    ``R_k, e cos 2φ, e sin 2φ, δx, δy``), giving the centre correction and ε = 2e.

    Parameters
    ----------
    image : ndarray (H, W)
        A pattern or the mean of several (sharper rings help).
    mask : ndarray of bool, optional
        True for usable pixels.
    center : (float, float), optional
        Starting centre ``(x, y)``.
    n_rings, n_sectors, iterations : int
        Rings followed, azimuthal sectors, refinement rounds.
    r_min_px : float
        Rings closer to the centre are ignored.
    fit_ellipse : bool
        Fit the ellipse (False: circular rings, centre only).

    Returns
    -------
    PatternGeometry
    """
    img = np.asarray(image, dtype=np.float64)
    valid = np.isfinite(img) if mask is None else (mask & np.isfinite(img))
    img = np.where(valid, img, 0.0)
    cx, cy = center if center is not None else find_center(img, valid)
    h, w = img.shape
    eps, phi = 0.0, 0.0
    step = 0.5
    for _ in range(iterations):
        r_max = 0.5 * min(h, w) - 2.0 - max(abs(cx - (w - 1) / 2), abs(cy - (h - 1) / 2))
        if r_max <= r_min_px + 10:
            break
        geo = PatternGeometry((h, w), cx, cy, eps, phi)
        prof, theta, rr = _sector_profiles(img, valid, geo, n_sectors, step, r_max)
        with np.errstate(invalid="ignore"):
            counts = np.isfinite(prof).sum(axis=0)
            mean_prof = np.where(counts > 0, np.nansum(prof, axis=0) / np.maximum(counts, 1), np.nan)
        half = 3.0
        rings = _strong_rings(mean_prof, rr, r_min_px, n_rings, half)
        if not rings:
            break
        rows, rhs = [], []
        for k, big_r in enumerate(rings):
            lo, hi = int((big_r - half) / step), int((big_r + half) / step) + 1
            if hi >= prof.shape[1]:
                continue
            seg = prof[:, lo:hi]
            x_r = rr[lo:hi]
            for s in range(n_sectors):
                v = seg[s]
                if not np.all(np.isfinite(v)):
                    continue
                base = np.linspace(v[0], v[-1], v.size)
                wgt = np.clip(v - base, 0, None)
                if wgt.sum() <= 0:
                    continue
                rho = float((wgt * x_r).sum() / wgt.sum())
                t = theta[s]
                row = np.zeros(len(rings) + 4)
                row[k] = 1.0
                row[len(rings):] = [big_r * math.cos(2 * t), big_r * math.sin(2 * t),
                                    math.cos(t), math.sin(t)]
                rows.append(row)
                rhs.append(rho)
        if len(rows) < len(rings) + 4:
            break
        a = np.asarray(rows)
        if not fit_ellipse:
            a[:, len(rings):len(rings) + 2] = 0.0
        sol, *_ = np.linalg.lstsq(a, np.asarray(rhs), rcond=None)
        ca, sa, ddx, ddy = sol[len(rings):]
        cx += float(ddx)
        cy += float(ddy)
        if fit_ellipse:
            # residual ellipse in nominal coordinates composes additively (first order)
            ex = eps / 2 * math.cos(2 * math.radians(phi)) + ca
            ey = eps / 2 * math.sin(2 * math.radians(phi)) + sa
            eps = 2.0 * math.hypot(ex, ey)
            phi = math.degrees(0.5 * math.atan2(ey, ex)) % 180.0
        if math.hypot(ddx, ddy) < 0.02 and math.hypot(ca, sa) < 2e-4:
            break
    return PatternGeometry((h, w), float(cx), float(cy), float(eps), float(phi))


# --------------------------------------------------------------------------------------------
# Sparse radial binning
# --------------------------------------------------------------------------------------------


class RadialBinner:
    """Pixels → nominal-radius bins as one sparse matrix, built once per geometry.

    Each unmasked pixel of nominal radius ``r`` splits its value linearly between the two
    nearest bin centres; a bin's value is the weighted mean of its pixels (counts per px).

    Parameters
    ----------
    geometry : PatternGeometry
    mask : ndarray of bool, optional
        True for usable pixels.
    bin_px : float
        Bin spacing in px of nominal radius.
    r_min_px, r_max_px : float, optional
        Range of bin centres (default 0 and the largest radius on the detector).
    interpolate : bool
        Split each pixel linearly between the two nearest bins (smoother profiles); False puts
        it whole into the nearest bin (half the work per frame).

    Attributes
    ----------
    r_px : ndarray
        Bin centres (nominal radius, px).
    weight : ndarray
        Pixels per bin (sum of the split weights).
    matrix : scipy.sparse.csr_matrix, shape (n_bins, H·W)
        The normalised map: ``profile = matrix @ frame.ravel()``.
    """

    def __init__(self, geometry: PatternGeometry, mask: np.ndarray | None = None, *,
                 bin_px: float = 0.5, r_min_px: float = 0.0, r_max_px: float | None = None,
                 interpolate: bool = True):
        self.geometry = geometry
        self.bin_px = float(bin_px)
        h, w = geometry.shape
        r, _ = nominal_radius(geometry)
        r = r.ravel()
        valid = np.ones(r.size, bool) if mask is None else np.asarray(mask, bool).ravel()
        if r_max_px is None:
            r_max_px = float(r.max())
        n_bins = int(math.floor((r_max_px - r_min_px) / bin_px)) + 1
        self.r_px = r_min_px + bin_px * np.arange(n_bins)
        self.interpolate = bool(interpolate)
        t = (r - r_min_px) / bin_px
        pix = np.arange(r.size)
        if self.interpolate:
            i0 = np.floor(t).astype(np.int64)
            f = t - i0
            rows = np.concatenate([i0, i0 + 1])
            cols = np.concatenate([pix, pix])
            vals = np.concatenate([1.0 - f, f])
            valid = np.concatenate([valid, valid])
        else:
            rows, cols, vals = np.rint(t).astype(np.int64), pix, np.ones(r.size)
        keep = valid & (rows >= 0) & (rows < n_bins) & (vals > 0)
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        self.weight = np.bincount(rows, weights=vals, minlength=n_bins)
        norm = np.where(self.weight > 0, 1.0 / np.maximum(self.weight, 1e-300), 0.0)
        self.n_pixels = h * w
        self.matrix = sp.csr_matrix((vals * norm[rows], (rows, cols)), shape=(n_bins, h * w))
        # Fast kernel: CSC, accumulators interleaved by pixel index, float32.
        k = _INTERLEAVE
        self._kernel = sp.csc_matrix(
            ((vals * norm[rows]).astype(np.float32), (rows + n_bins * (cols % k), cols)),
            shape=(k * n_bins, h * w))
        self._kernel.sort_indices()
        self._rows, self._cols, self._vals = rows, cols, vals

    @property
    def n_bins(self) -> int:
        """Number of radius bins."""
        return self.r_px.size

    def q_inv_nm(self, inv_nm_per_px: float) -> np.ndarray:
        """Bin centres in 1/nm."""
        return self.r_px * float(inv_nm_per_px)

    def profiles(self, frames: np.ndarray) -> np.ndarray:
        """Azimuthal-mean profiles of a stack of frames.

        Parameters
        ----------
        frames : ndarray (T, H, W) or (H, W)
            Counts; any real dtype (converted to float32); non-finite values must be masked.

        Returns
        -------
        ndarray, (T, n_bins) or (n_bins,), float64
            Mean counts per px in each bin (0 for empty bins).
        """
        arr = np.asarray(frames)
        single = arr.ndim == 2
        flat = arr.reshape(-1, self.n_pixels)
        if flat.dtype != np.float32:
            flat = flat.astype(np.float32)
        k, nb = _INTERLEAVE, self.n_bins
        out = np.empty((flat.shape[0], nb))
        kernel = self._kernel

        def work(rows: range) -> None:
            for i in rows:  # SciPy's sparse product releases the GIL: frames run in parallel
                out[i] = (kernel @ flat[i]).reshape(k, nb).sum(axis=0)

        n = flat.shape[0]
        workers = _profile_workers()
        if workers > 1 and n >= 2 * workers:
            bounds = np.linspace(0, n, workers + 1).astype(int)
            list(_pool(workers).map(work, [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))
        else:
            work(range(n))
        return out[0] if single else out

    def reference_profiles(self, frames: np.ndarray) -> np.ndarray:
        """The same profiles by a direct float64 ``np.bincount`` (a check, slow)."""
        arr = np.asarray(frames, dtype=np.float64)
        single = arr.ndim == 2
        flat = arr.reshape(-1, self.n_pixels)
        out = np.empty((flat.shape[0], self.n_bins))
        for i, fr in enumerate(flat):
            s = np.bincount(self._rows, weights=self._vals * fr[self._cols], minlength=self.n_bins)
            out[i] = np.where(self.weight > 0, s / np.maximum(self.weight, 1e-300), 0.0)
        return out[0] if single else out

    def fine_kernel(self, step_px: float) -> tuple[sp.csr_matrix, np.ndarray]:
        """Matrix ``K`` with ``K @ f(grid) = profile of the image f(r_nominal(pixel))``.

        ``f`` sampled on ``grid = arange(0, r_max + step, step)`` and linearly interpolated at
        every pixel's nominal radius: model profiles of any radial function in one mat-vec.

        Returns
        -------
        K : csr_matrix (n_bins, n_grid)
        grid : ndarray (px)
        """
        r, _ = nominal_radius(self.geometry)
        r = r.ravel()[self._cols]
        grid = np.arange(0.0, r.max() + 2 * step_px, step_px)
        g = r / step_px
        g0 = np.floor(g).astype(np.int64)
        gf = g - g0
        wb = self._vals / np.maximum(self.weight[self._rows], 1e-300)
        rows = np.concatenate([self._rows, self._rows])
        cols = np.concatenate([g0, g0 + 1])
        vals = np.concatenate([wb * (1 - gf), wb * gf])
        k = sp.csr_matrix((vals, (rows, cols)), shape=(self.n_bins, grid.size))
        k.sum_duplicates()
        return k, grid

    def with_geometry(self, geometry: PatternGeometry, mask: np.ndarray | None = None) -> RadialBinner:
        """A binner with the same bins for another geometry."""
        return RadialBinner(geometry, mask, bin_px=self.bin_px, r_min_px=float(self.r_px[0]),
                            r_max_px=float(self.r_px[-1]), interpolate=self.interpolate)


def shifted(geometry: PatternGeometry, dx: float, dy: float) -> PatternGeometry:
    """The geometry with its centre moved by ``(dx, dy)`` px."""
    return replace(geometry, center_x_px=geometry.center_x_px + dx,
                   center_y_px=geometry.center_y_px + dy)


_POOLS: dict[int, object] = {}


def _profile_workers() -> int:
    """Threads for radial profiles: the CPU cores (at most 8), or ``TEM_OPERANDO_PROFILE_THREADS``."""
    import os

    env = os.environ.get("TEM_OPERANDO_PROFILE_THREADS")
    return max(1, int(env)) if env else max(1, min(8, os.cpu_count() or 1))


def _pool(workers: int):
    from concurrent.futures import ThreadPoolExecutor

    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tem-profile")
    return _POOLS[workers]
