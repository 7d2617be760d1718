"""Synthetic selected-area electron diffraction (SAED) ring patterns with exact ground truth.

A pattern is a mix of *components* – library phases (rings from
:func:`tem_operando.diffraction.phases.ring_list`) and ``"amorphous"`` (a broad halo) – on top of a
bright central beam (or a beam stop), a smooth background and Poisson noise.  A series follows a
*phase sequence* (e.g. β-Sn → amorphous Na–Sn → Na15Sn4) with cross-fades between stages.

Photometry (per frame, ``N = dose_e_per_px × H × W`` electrons):

- ``central_beam_share`` (0.2) of N in the central beam (saturated: the frame is clipped at
  ``saturation_counts``, by default ``100 × dose_e_per_px``);
- ``background_level`` (0.35) of N in a smooth background decaying with radius;
- the rest is diffracted; component ``c`` receives the share ``fraction_c`` of it.  Each component
  image integrates to one over the detector plane, so **a phase fraction is the fraction of the
  diffracted electrons scattered by that component** (what a non-negative fit of unit-normalised
  component profiles recovers).

Ring ``j`` of a phase carries the weight ``I_j × exp(-B q_j²/2) / q_j`` (``I_j`` the kinematic
|F|²×multiplicity of ``ring_list``, ``q`` in 1/Å inside the Debye–Waller factor ``B`` in Å², and the
``1/q`` Lorentz factor of a flat-Ewald-sphere ring pattern), normalised over all rings up to
12 1/nm; see :func:`ring_weights`.  Its radial profile is a Gaussian of standard deviation
``sqrt(ring_width² + (Δq_Scherrer/2.355)²)`` in q, with ``Δq_Scherrer = 1/grain_size`` (FWHM).

Geometry: pixel ``(x, y)`` = (column, row); the pattern centre is ``center_px = (x, y)`` in pixels;
with ellipticity ε and angle φ (degrees from +x towards +y), a ring of nominal radius r lies at
radius ``r (1 + ε/2)`` along φ and ``r (1 − ε/2)`` perpendicular to it.  Reciprocal calibration:
``q [1/nm] = r_nominal [px] × inv_nm_per_px``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..diffraction.phases import AMORPHOUS, BUILTIN_CACHE_Q_MAX_INV_NM, get_phase, ring_list
from ..errors import CalibrationError
from .session import Session

__all__ = [
    "PRESETS",
    "polar_coordinates",
    "radial_density",
    "resolve_stages",
    "ring_weights",
    "saed_pattern",
    "saed_series",
    "stage_fractions",
]

#: Phase sequences: (fractions, relative length) per stage; lengths are scaled to the frames.
PRESETS: dict[str, list[tuple[dict[str, float], float]]] = {
    "Sn": [({"Sn": 1.0}, 0.3), ({AMORPHOUS: 1.0}, 0.35), ({"Na15Sn4": 1.0}, 0.35)],
    "MoO3": [({"MoO3": 1.0}, 0.4), ({"Mo": 0.5, "Na2O": 0.5}, 0.6)],
    "FeS2": [({"FeS2": 1.0}, 0.4), ({"Fe": 0.5, "Na2S": 0.5}, 0.6)],
    "Sb": [({"Sb": 1.0}, 0.3), ({AMORPHOUS: 1.0}, 0.35), ({"Na3Sb": 1.0}, 0.35)],
}

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_MIN_RING_SIGMA_PX = 0.5          # detector point spread: rings are never sharper than this
_PROFILE_STEP_PX = 0.05           # sampling of the 1D radial profiles
_N_THETA = 720                    # azimuthal bins of the grain-texture field (0.5°)
_STOP_TRANSMISSION = 1e-4         # electrons leaking through the beam stop


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def _calibration(inv_nm_per_px: float) -> float:
    try:
        v = float(inv_nm_per_px)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v) or v <= 0:
        raise CalibrationError(
            None, f"inv_nm_per_px must be a positive, finite number of 1/nm per pixel, got "
            f"{inv_nm_per_px!r}"
        )
    return v


def _shape(shape: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be two integers (rows, columns), got {shape!r}") from None
    if h < 16 or w < 16:
        raise ValueError(f"shape must be at least 16 x 16 px, got {shape!r}")
    return h, w


def _ellipticity(value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or not 0 <= v < 0.5:
        raise ValueError(f"ellipticity must lie in [0, 0.5), got {value!r}")
    return v


def _rng_and_seed(rng) -> tuple[np.random.Generator, int | None]:
    """A Generator and the integer seed that reproduces it (None if a Generator was passed)."""
    if isinstance(rng, np.random.Generator):
        return rng, None
    if rng is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
        return np.random.default_rng(seed), seed
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng)), int(rng)
    raise ValueError(f"rng must be None, an int seed or a numpy Generator, got {rng!r}")


def _canonical_component(name: str) -> str:
    """Library spelling of a component name; ``"amorphous"`` passes through."""
    if isinstance(name, str) and name.strip().lower() == AMORPHOUS:
        return AMORPHOUS
    return get_phase(name).name  # raises UnknownPhaseError with the available names


def _normalise_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(fractions, Mapping):
        raise TypeError(f"phase fractions must be a dict {{phase: fraction}}, got {fractions!r}")
    out: dict[str, float] = {}
    for name, value in fractions.items():
        canonical = _canonical_component(name)
        out[canonical] = out.get(canonical, 0.0) + _positive(
            f"fraction of {name!r}", value, allow_zero=True
        )
    total = sum(out.values())
    if not out or total <= 0:
        raise ValueError(f"phase fractions must contain a positive value, got {dict(fractions)!r}")
    return {k: v / total for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Geometry and profiles (pure functions)
# --------------------------------------------------------------------------------------------


def polar_coordinates(
    shape: Sequence[int],
    center_px: Sequence[float],
    ellipticity: float = 0.0,
    ellipse_angle_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Nominal (ellipse-corrected) radius and azimuth of every pixel.

    Parameters
    ----------
    shape : (int, int)
        Frame size (rows, columns).
    center_px : (float, float)
        Pattern centre ``(x, y)`` in px (x along columns).
    ellipticity : float
        ε: a ring of nominal radius r appears at ``r (1 + ε/2)`` along the angle φ and at
        ``r (1 − ε/2)`` perpendicular to it.
    ellipse_angle_deg : float
        φ in degrees, from +x towards +y.

    Returns
    -------
    r : ndarray, shape ``shape``
        Nominal radius in px (``q = r × inv_nm_per_px``).
    theta : ndarray, shape ``shape``
        Azimuth in rad in the undistorted frame, in (−π, π].
    """
    h, w = int(shape[0]), int(shape[1])
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = x - float(center_px[0]), y - float(center_px[1])
    phi = math.radians(ellipse_angle_deg)
    u = dx * math.cos(phi) + dy * math.sin(phi)
    v = -dx * math.sin(phi) + dy * math.cos(phi)
    u /= 1.0 + ellipticity / 2.0
    v /= 1.0 - ellipticity / 2.0
    return np.hypot(u, v), np.arctan2(v, u)


def ring_weights(
    rings: pd.DataFrame,
    *,
    debye_waller_B_A2: float = 1.0,
    lorentz: bool = True,
) -> np.ndarray:
    """Integrated weight of each ring of a ring list, normalised to sum to one.

    ``w_j ∝ I_j × exp(−B q_j² / 2) × (1/q_j if lorentz)``, with ``I_j`` the ``intensity`` column of
    :func:`~tem_operando.diffraction.phases.ring_list` (kinematic |F|²×multiplicity, electron
    scattering factors already falling with q), ``q`` in 1/Å in the Debye–Waller factor
    (B in Å²; 1/d convention, i.e. ``exp(−2B s²)`` with ``s = q/2``) and the ``1/q`` Lorentz factor
    of ring patterns recorded with a nearly flat Ewald sphere.

    Parameters
    ----------
    rings : DataFrame
        With columns ``q_inv_nm`` (1/nm) and ``intensity``.
    debye_waller_B_A2 : float
        Isotropic Debye–Waller B factor in Å² (0 switches it off).
    lorentz : bool
        Apply the 1/q Lorentz factor.

    Returns
    -------
    ndarray
        One weight per ring (sums to 1; empty for an empty list).
    """
    q_inv_nm = rings["q_inv_nm"].to_numpy(dtype=float)
    w = rings["intensity"].to_numpy(dtype=float) * np.exp(
        -float(debye_waller_B_A2) * (q_inv_nm / 10.0) ** 2 / 2.0
    )
    if lorentz:
        w = w / q_inv_nm
    total = w.sum()
    return w / total if total > 0 else w


def radial_density(
    r: np.ndarray,
    centers_px: np.ndarray,
    sigmas_px: np.ndarray | float,
    weights: np.ndarray,
) -> np.ndarray:
    """Per-pixel density of Gaussian rings, each integrating to its weight over the plane.

    ``density(r) = Σ_j w_j · exp(−(r − r_j)² / 2σ_j²) / (√(2π) σ_j · 2π r)``, evaluated on a fine
    1D grid and interpolated to ``r`` (fast for many rings and pixels).

    Parameters
    ----------
    r : ndarray
        Radius of each pixel in px.
    centers_px, sigmas_px, weights : ndarray or float
        Ring radii (px), standard deviations (px) and integrated weights.

    Returns
    -------
    ndarray, same shape as ``r``
        Density per px².
    """
    centers = np.atleast_1d(np.asarray(centers_px, dtype=float))
    weights = np.atleast_1d(np.asarray(weights, dtype=float))
    sigmas = np.broadcast_to(np.asarray(sigmas_px, dtype=float), centers.shape)
    r_max = float(np.max(r)) + 1.0
    keep = (centers - 6 * sigmas <= r_max) & (weights > 0)
    grid = np.arange(0.0, r_max + _PROFILE_STEP_PX, _PROFILE_STEP_PX)
    profile = np.zeros_like(grid)
    for c, s, wgt in zip(centers[keep], sigmas[keep], weights[keep]):
        lo = np.searchsorted(grid, c - 6 * s)
        hi = np.searchsorted(grid, c + 6 * s)
        seg = grid[lo:hi]
        profile[lo:hi] += wgt * np.exp(-0.5 * ((seg - c) / s) ** 2) / (math.sqrt(2 * math.pi) * s)
    profile /= 2 * math.pi * np.maximum(grid, 0.5)
    return np.interp(r, grid, profile)


def _texture(r: np.ndarray, theta: np.ndarray, spottiness: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative nanograin texture (mean 1): spots a few px wide along the rings."""
    if spottiness <= 0:
        return np.ones_like(r)
    from scipy.ndimage import gaussian_filter

    n_r = int(np.ceil(r.max())) + 2
    field = gaussian_filter(rng.standard_normal((n_r, _N_THETA)), sigma=(1.0, 2.0),
                            mode=("nearest", "wrap"))
    field /= field.std() or 1.0
    field = np.exp(spottiness * field - spottiness**2 / 2.0)
    r_idx = np.clip(np.rint(r).astype(int), 0, n_r - 1)
    t_idx = np.rint((theta + np.pi) / (2 * np.pi) * _N_THETA).astype(int) % _N_THETA
    return field[r_idx, t_idx]


def _phase_image(name: str, r: np.ndarray, theta: np.ndarray, *, inv_nm_per_px: float,
                 sigma_inv_nm: float, debye_waller_B_A2: float, spottiness: float,
                 rng: np.random.Generator) -> np.ndarray:
    rings = ring_list(name, BUILTIN_CACHE_Q_MAX_INV_NM)
    weights = ring_weights(rings, debye_waller_B_A2=debye_waller_B_A2)
    centers = rings["q_inv_nm"].to_numpy() / inv_nm_per_px
    sigma_px = max(sigma_inv_nm / inv_nm_per_px, _MIN_RING_SIGMA_PX)
    image = radial_density(r, centers, sigma_px, weights)
    return image * _texture(r, theta, spottiness, rng)


def _halo_image(r: np.ndarray, *, inv_nm_per_px: float, halo_q_inv_nm: float,
                halo_width_inv_nm: float) -> np.ndarray:
    """Amorphous halo: a broad first maximum at q_h and a weaker second one at 1.8 q_h."""
    centers = np.array([halo_q_inv_nm, 1.8 * halo_q_inv_nm]) / inv_nm_per_px
    sigmas = np.array([halo_width_inv_nm, 1.6 * halo_width_inv_nm]) / inv_nm_per_px
    weights = np.array([1.0, 0.35]) / 1.35
    return radial_density(r, centers, np.maximum(sigmas, _MIN_RING_SIGMA_PX), weights)


def _background_image(r: np.ndarray) -> np.ndarray:
    """Smooth background (inelastic and diffuse scattering): decays with r, unit sum."""
    r0 = 0.12 * max(r.shape)
    img = 0.85 / (1.0 + (r / r0) ** 2) ** 1.5
    img = img / img.sum() * 0.85 + 0.15 / img.size
    return img


def _central_beam_image(r: np.ndarray) -> np.ndarray:
    """Unscattered beam: a sharp core with a short tail, unit integral over the plane."""
    core = np.exp(-0.5 * (r / 1.5) ** 2) / (2 * math.pi * 1.5**2)
    gamma = 4.0
    tail = 1.0 / (1.0 + (r / gamma) ** 2) ** 2 / (math.pi * gamma**2)
    return 0.8 * core + 0.2 * tail


def _beam_stop_mask(shape: tuple[int, int], center_px: Sequence[float], angle_deg: float) -> np.ndarray:
    """Transmission of a beam stop: a disk on the centre and a bar from it to the frame edge."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = x - center_px[0], y - center_px[1]
    radius = 0.06 * min(h, w) + 4.0
    half_width = 0.35 * radius
    a = math.radians(angle_deg)
    along = dx * math.cos(a) + dy * math.sin(a)
    across = -dx * math.sin(a) + dy * math.cos(a)

    def edge(d):  # 1 inside (d < 0), 0 outside, about one pixel wide
        return 1.0 / (1.0 + np.exp(np.clip(d / 0.7, -50, 50)))

    blocked = np.maximum(edge(np.hypot(dx, dy) - radius),
                         edge(np.abs(across) - half_width) * (along > 0))
    return 1.0 - (1.0 - _STOP_TRANSMISSION) * blocked


def _expose(expected: np.ndarray, rng: np.random.Generator, saturation: float, poisson: bool) -> np.ndarray:
    counts = rng.poisson(expected).astype(np.float32) if poisson else expected.astype(np.float32)
    np.minimum(counts, np.float32(saturation), out=counts)
    return counts


# --------------------------------------------------------------------------------------------
# A scene: everything that stays fixed over a series
# --------------------------------------------------------------------------------------------


class _Scene:
    """Unit images of every component plus beam, background and stop for one geometry."""

    def __init__(self, components: Sequence[str], *, shape, inv_nm_per_px, center_px, ellipticity,
                 ellipse_angle_deg, sigma_inv_nm: Mapping[str, float], halo_q_inv_nm,
                 halo_width_inv_nm, debye_waller_B_A2, spottiness, dose_e_per_px, central_beam,
                 central_beam_share, background_level, beam_stop, beam_stop_angle_deg,
                 saturation_counts, rng):
        self.shape = shape
        r, theta = polar_coordinates(shape, center_px, ellipticity, ellipse_angle_deg)
        self.components = list(components)
        self.images: dict[str, np.ndarray] = {}
        for name in self.components:
            if name == AMORPHOUS:
                self.images[name] = _halo_image(r, inv_nm_per_px=inv_nm_per_px,
                                                halo_q_inv_nm=halo_q_inv_nm,
                                                halo_width_inv_nm=halo_width_inv_nm)
            else:
                self.images[name] = _phase_image(
                    name, r, theta, inv_nm_per_px=inv_nm_per_px, sigma_inv_nm=sigma_inv_nm[name],
                    debye_waller_B_A2=debye_waller_B_A2, spottiness=spottiness, rng=rng)
        n_electrons = dose_e_per_px * shape[0] * shape[1]
        beam_share = central_beam_share if central_beam else 0.0
        self.diffracted = n_electrons * (1.0 - beam_share - background_level)
        self.fixed = n_electrons * (background_level * _background_image(r)
                                    + (beam_share * _central_beam_image(r) if beam_share else 0.0))
        self.mask = _beam_stop_mask(shape, center_px, beam_stop_angle_deg) if beam_stop else None
        self.saturation = saturation_counts

    def expected(self, fractions: Mapping[str, float]) -> np.ndarray:
        img = self.fixed.copy()
        for name, f in fractions.items():
            if f > 0:
                img += (self.diffracted * f) * self.images[name]
        if self.mask is not None:
            img *= self.mask
        return img

    def frame(self, fractions: Mapping[str, float], rng: np.random.Generator, poisson: bool = True) -> np.ndarray:
        return _expose(self.expected(fractions), rng, self.saturation, poisson)


def _check_photometry(central_beam: bool, central_beam_share: float, background_level: float) -> None:
    _positive("background_level", background_level, allow_zero=True)
    _positive("central_beam_share", central_beam_share, allow_zero=True)
    beam = central_beam_share if central_beam else 0.0
    if beam + background_level >= 1.0:
        raise ValueError(
            f"central_beam_share ({beam}) + background_level ({background_level}) must be < 1 so "
            "that some electrons are diffracted"
        )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def saed_pattern(
    phase_fractions: Mapping[str, float],
    shape: Sequence[int] = (256, 256),
    *,
    inv_nm_per_px: float,
    center_px: Sequence[float] | None = None,
    ellipticity: float = 0.0,
    ellipse_angle_deg: float = 0.0,
    ring_width_inv_nm: float = 0.05,
    amorphous_fraction: float = 0.0,
    halo_q_inv_nm: float = 3.3,
    halo_width_inv_nm: float = 0.45,
    dose_e_per_px: float = 50.0,
    central_beam: bool = True,
    beam_stop: bool = False,
    beam_stop_angle_deg: float = 225.0,
    background_level: float = 0.35,
    central_beam_share: float = 0.2,
    spottiness: float = 0.0,
    debye_waller_B_A2: float = 1.0,
    saturation_counts: float | None = None,
    poisson: bool = True,
    rng=None,
) -> np.ndarray:
    """One synthetic SAED ring pattern.

    Parameters
    ----------
    phase_fractions : dict
        ``{phase name: weight}`` of library phases (case-insensitive names; ``"amorphous"`` is
        allowed as a key unless ``amorphous_fraction`` is given).  Weights are normalised to sum
        to ``1 − amorphous_fraction``.  May be empty when ``amorphous_fraction`` is 1.
    shape : (int, int)
        Frame size (rows, columns) in px.
    inv_nm_per_px : float
        Reciprocal calibration in 1/nm per px (ring of q at radius ``q / inv_nm_per_px``).
    center_px : (float, float), optional
        Pattern centre ``(x, y)`` in px; default the frame centre ``((W−1)/2, (H−1)/2)``.
    ellipticity, ellipse_angle_deg : float
        Elliptical distortion ε (ring radii ``r(1 ± ε/2)``) and its axis in degrees.
    ring_width_inv_nm : float
        Gaussian standard deviation of every ring in 1/nm (instrument and grain size together);
        never narrower than 0.5 px.
    amorphous_fraction : float
        Share (0–1) of the diffracted electrons in the amorphous halo.
    halo_q_inv_nm, halo_width_inv_nm : float
        Position and standard deviation of the halo's first maximum in 1/nm (a second, weaker
        maximum sits at 1.8 × q).
    dose_e_per_px : float
        Mean incident dose in electrons per px (> 0).
    central_beam : bool
        Include the bright, saturated unscattered beam.
    beam_stop : bool
        Cover the centre with a beam stop (a disk plus a bar to the frame edge along
        ``beam_stop_angle_deg``) that transmits 0.01 %.
    background_level : float
        Share of the electrons in the smooth background (0–1).
    central_beam_share : float
        Share of the electrons in the central beam.
    spottiness : float
        Azimuthal nanograin texture of the rings (0 smooth rings; 0.3 slightly spotty; 1 spotty).
    debye_waller_B_A2 : float
        Debye–Waller factor in Å² (see :func:`ring_weights`).
    saturation_counts : float, optional
        Detector saturation in counts per px; default ``100 × dose_e_per_px``.
    poisson : bool
        Draw Poisson counts (False: the noise-free expectation, still clipped at saturation).
    rng : None, int or numpy.random.Generator
        Randomness (texture and noise).

    Returns
    -------
    ndarray, shape ``shape``, float32
        Counts per px.

    Raises
    ------
    UnknownPhaseError
        For a phase name not in the library.
    CalibrationError
        If ``inv_nm_per_px`` is not positive and finite.
    ValueError
        For other invalid arguments (negative dose, fractions, ellipticity, ...).
    """
    shape = _shape(shape)
    inv_nm_per_px = _calibration(inv_nm_per_px)
    dose = _positive("dose_e_per_px", dose_e_per_px)
    ellipticity = _ellipticity(ellipticity)
    width = _positive("ring_width_inv_nm", ring_width_inv_nm)
    amorphous = _positive("amorphous_fraction", amorphous_fraction, allow_zero=True)
    if amorphous > 1:
        raise ValueError(f"amorphous_fraction must lie in [0, 1], got {amorphous_fraction!r}")
    _positive("halo_q_inv_nm", halo_q_inv_nm)
    _positive("halo_width_inv_nm", halo_width_inv_nm)
    _positive("spottiness", spottiness, allow_zero=True)
    _positive("debye_waller_B_A2", debye_waller_B_A2, allow_zero=True)
    _check_photometry(central_beam, central_beam_share, background_level)
    rng, _ = _rng_and_seed(rng)

    fractions: dict[str, float] = {}
    if phase_fractions:
        fractions = _normalise_fractions(phase_fractions)
        if amorphous > 0:
            if AMORPHOUS in fractions:
                raise ValueError("give the amorphous share either in phase_fractions or as "
                                 "amorphous_fraction, not both")
            fractions = {k: v * (1.0 - amorphous) for k, v in fractions.items()}
    elif amorphous == 0:
        raise ValueError("phase_fractions is empty and amorphous_fraction is 0: nothing diffracts")
    if amorphous > 0:
        fractions[AMORPHOUS] = amorphous
    if center_px is None:
        center_px = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    center = (float(center_px[0]), float(center_px[1]))
    scene = _Scene(
        list(fractions), shape=shape, inv_nm_per_px=inv_nm_per_px, center_px=center,
        ellipticity=ellipticity, ellipse_angle_deg=float(ellipse_angle_deg),
        sigma_inv_nm={k: width for k in fractions}, halo_q_inv_nm=float(halo_q_inv_nm),
        halo_width_inv_nm=float(halo_width_inv_nm), debye_waller_B_A2=float(debye_waller_B_A2),
        spottiness=float(spottiness), dose_e_per_px=dose, central_beam=bool(central_beam),
        central_beam_share=float(central_beam_share), background_level=float(background_level),
        beam_stop=bool(beam_stop), beam_stop_angle_deg=float(beam_stop_angle_deg),
        saturation_counts=_saturation(saturation_counts, dose), rng=rng,
    )
    return scene.frame(fractions, rng, poisson=poisson)


def _saturation(saturation_counts: float | None, dose: float) -> float:
    if saturation_counts is None:
        return 100.0 * dose
    return _positive("saturation_counts", saturation_counts)


def resolve_stages(sequence: str | Sequence, n_frames: int | None) -> list[tuple[dict[str, float], int]]:
    """Turn a preset name, a phase name or an explicit stage list into ``[(fractions, n), ...]``.

    Parameters
    ----------
    sequence : str or list of (dict, int)
        A preset of :data:`PRESETS` (``"Sn"``, ``"MoO3"``, ``"FeS2"``, ``"Sb"``; case-insensitive),
        a single library phase name (one stage), or explicit stages
        ``[({"Sn": 1.0}, 20), ({"amorphous": 1.0}, 20), ...]``.
    n_frames : int or None
        Frames to distribute over a preset's stages; for an explicit list it must equal the sum
        of the stage lengths (or be None).

    Returns
    -------
    list of (dict, int)
        Normalised fractions (library names) and frames per stage.
    """
    if isinstance(sequence, str):
        preset = next((k for k in PRESETS if k.lower() == sequence.strip().lower()), None)
        if preset is not None:
            template = PRESETS[preset]
        else:
            try:
                template = [({_canonical_component(sequence): 1.0}, 1.0)]
            except KeyError:
                raise ValueError(
                    f"unknown sequence {sequence!r}: use a preset ({', '.join(PRESETS)}), a "
                    "library phase name or a list of stages [({phase: fraction}, n_frames), ...]"
                ) from None
        n = 60 if n_frames is None else int(n_frames)
        if n < len(template):
            raise ValueError(f"n_frames={n} is fewer than the {len(template)} stages of {sequence!r}")
        rel = np.array([t[1] for t in template], dtype=float)
        exact = rel / rel.sum() * n
        counts = np.maximum(np.floor(exact).astype(int), 1)
        while counts.sum() < n:  # largest remainder
            counts[np.argmax(exact - counts)] += 1
        while counts.sum() > n:
            counts[np.argmax(counts)] -= 1
        return [(_normalise_fractions(t[0]), int(c)) for t, c in zip(template, counts)]
    try:
        stages = [(dict(frac), int(length)) for frac, length in sequence]
    except (TypeError, ValueError):
        raise ValueError(
            "sequence must be a preset name or a list of stages [({phase: fraction}, n_frames), ...]"
        ) from None
    if not stages:
        raise ValueError("the stage list is empty")
    if any(length < 1 for _, length in stages):
        raise ValueError(f"every stage needs at least one frame, got {[n for _, n in stages]}")
    total = sum(length for _, length in stages)
    if n_frames is not None and int(n_frames) != total:
        raise ValueError(f"the stages last {total} frames but n_frames={n_frames}; pass n_frames={total}")
    return [(_normalise_fractions(frac), length) for frac, length in stages]


def stage_fractions(stages: Sequence[tuple[Mapping[str, float], int]], crossfade_frames: float,
                    components: Sequence[str]) -> np.ndarray:
    """Per-frame component fractions with linear cross-fades centred on the stage boundaries.

    At a boundary before frame ``b`` the new stage's weight is
    ``clip((t − b + 0.5) / crossfade_frames + 0.5, 0, 1)`` for frame ``t``: frame ``b − 1`` is still
    mostly the old stage and frame ``b`` mostly the new one.

    Returns
    -------
    ndarray, shape (n_frames, len(components))
        Rows sum to one.
    """
    n = sum(length for _, length in stages)
    vectors = [np.array([frac.get(c, 0.0) for c in components]) for frac, _ in stages]
    t = np.arange(n, dtype=float)
    out = np.tile(vectors[0], (n, 1))
    boundary = 0
    for k in range(1, len(stages)):
        boundary += stages[k - 1][1]
        if crossfade_frames > 0:
            w = np.clip((t - boundary + 0.5) / crossfade_frames + 0.5, 0.0, 1.0)
        else:
            w = (t >= boundary).astype(float)
        out = (1.0 - w)[:, None] * out + w[:, None] * vectors[k][None, :]
    return out


def saed_series(
    n_frames: int | None = 60,
    shape: Sequence[int] = (256, 256),
    *,
    sequence: str | Sequence = "Sn",
    inv_nm_per_px: float = 0.04,
    fps: float = 1.0,
    dose_e_per_px: float = 50.0,
    center_offset_px: Sequence[float] | None = None,
    ellipticity: float | None = None,
    ellipse_angle_deg: float | None = None,
    grain_size_nm: float | Mapping[str, float] = 25.0,
    ring_width_inv_nm: float = 0.03,
    crossfade_frames: float = 4.0,
    calibration_frame: str | None = None,
    n_calibration_frames: int = 1,
    halo_q_inv_nm: float = 3.3,
    halo_width_inv_nm: float = 0.45,
    spottiness: float = 0.3,
    debye_waller_B_A2: float = 1.0,
    central_beam: bool = True,
    beam_stop: bool = False,
    beam_stop_angle_deg: float = 225.0,
    background_level: float = 0.35,
    central_beam_share: float = 0.2,
    saturation_counts: float | None = None,
    rng=None,
) -> Session:
    """A synthetic SAED series following a phase sequence, with exact phase-fraction truth.

    Parameters
    ----------
    n_frames : int or None
        Frames in all, calibration frames included (None: the sum of an explicit stage list plus
        the calibration frames; 60 for presets).
    shape : (int, int)
        Frame size (rows, columns) in px.
    sequence : str or list
        ``"Sn"`` (β-Sn → amorphous Na–Sn → Na15Sn4), ``"MoO3"`` (α-MoO3 → Mo + Na2O),
        ``"FeS2"`` (FeS2 → Fe + Na2S), ``"Sb"`` (Sb → amorphous → Na3Sb), a library phase name, or
        explicit stages ``[({"Sn": 1.0}, 20), ({"amorphous": 1.0}, 15), ...]``.
    inv_nm_per_px : float
        Reciprocal calibration in 1/nm per px.
    fps : float
        Frame rate in frames per second.
    dose_e_per_px : float
        Mean incident dose per frame in electrons per px.
    center_offset_px : (float, float), optional
        Offset ``(dx, dy)`` in px of the pattern centre from the frame centre; default random,
        uniform in ±20 px (±shape/8 for small frames).
    ellipticity, ellipse_angle_deg : float, optional
        Elliptical distortion; default random, ε uniform in [0, 0.03), angle in [0, 180) degrees.
    grain_size_nm : float or dict
        Crystallite size in nm (per phase with a dict; 25 nm for phases not in it): Scherrer
        broadening of the rings, FWHM ``Δq = 1/size`` 1/nm.
    ring_width_inv_nm : float
        Instrumental ring width (Gaussian standard deviation) in 1/nm.
    crossfade_frames : float
        Length in frames of the linear cross-fade between stages (0: abrupt).
    calibration_frame : str, optional
        A calibration phase (e.g. ``"Au"``): the first ``n_calibration_frames`` frames are 100 %
        of it, with the same geometry as the series.
    n_calibration_frames : int
        Number of calibration frames.
    halo_q_inv_nm, halo_width_inv_nm : float
        Amorphous halo position and width (1/nm).
    spottiness : float
        Nanograin texture of the rings (see :func:`saed_pattern`).
    debye_waller_B_A2 : float
        Debye–Waller factor in Å².
    central_beam, beam_stop, beam_stop_angle_deg, background_level, central_beam_share,
    saturation_counts
        As in :func:`saed_pattern`.
    rng : None, int or numpy.random.Generator
        Seed (recorded in ``params["seed"]``; None draws one and records it).

    Returns
    -------
    Session
        ``frames`` (T, H, W) float32 counts; ``mode`` all ``"diffraction"``; ``inv_nm_per_px``;
        ``nm_per_px`` NaN; ``phases`` with frame, time_s, best_phase (the largest component,
        ``"amorphous"`` included), amorphous_fraction, ``frac_<name>`` for every phase of the
        sequence (and the calibration phase), center_x_px, center_y_px, ellipticity,
        ellipse_angle_deg; ``frame_table``; ``params``.

    Raises
    ------
    UnknownPhaseError
        For a phase name not in the library.
    CalibrationError
        If ``inv_nm_per_px`` or ``fps`` is not positive and finite.
    ValueError
        For other invalid arguments.
    """
    shape = _shape(shape)
    inv_nm_per_px = _calibration(inv_nm_per_px)
    try:
        fps_v = float(fps)
    except (TypeError, ValueError):
        fps_v = float("nan")
    if not math.isfinite(fps_v) or fps_v <= 0:
        raise CalibrationError(None, f"fps must be a positive, finite frame rate, got {fps!r}")
    dose = _positive("dose_e_per_px", dose_e_per_px)
    _positive("ring_width_inv_nm", ring_width_inv_nm)
    _positive("crossfade_frames", crossfade_frames, allow_zero=True)
    _positive("halo_q_inv_nm", halo_q_inv_nm)
    _positive("halo_width_inv_nm", halo_width_inv_nm)
    _positive("spottiness", spottiness, allow_zero=True)
    _positive("debye_waller_B_A2", debye_waller_B_A2, allow_zero=True)
    _check_photometry(central_beam, central_beam_share, background_level)
    n_cal = 0
    cal_phase = None
    if calibration_frame is not None:
        cal_phase = get_phase(calibration_frame).name
        n_cal = int(n_calibration_frames)
        if n_cal < 1:
            raise ValueError(f"n_calibration_frames must be >= 1, got {n_calibration_frames!r}")
    if n_frames is not None:
        if int(n_frames) != n_frames or int(n_frames) < 1:
            raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")
        if int(n_frames) <= n_cal:
            raise ValueError(f"n_frames={n_frames} leaves no frames after {n_cal} calibration frame(s)")
    n_seq = None if n_frames is None else int(n_frames) - n_cal
    stages = resolve_stages(sequence, n_seq)
    rng, seed = _rng_and_seed(rng)

    # Geometry (random draws first, in a fixed order, so a seed reproduces the series).
    h, w = shape
    max_offset = min(20.0, min(h, w) / 8.0)
    if center_offset_px is None:
        offset = tuple(float(v) for v in rng.uniform(-max_offset, max_offset, size=2))
    else:
        offset = (float(center_offset_px[0]), float(center_offset_px[1]))
    center = ((w - 1) / 2.0 + offset[0], (h - 1) / 2.0 + offset[1])
    eps = _ellipticity(rng.uniform(0.0, 0.03) if ellipticity is None else ellipticity)
    angle = float(rng.uniform(0.0, 180.0) if ellipse_angle_deg is None else ellipse_angle_deg)

    # Components: calibration phase first, then in order of appearance.
    components: list[str] = [cal_phase] if cal_phase else []
    for frac, _ in stages:
        components += [c for c in frac if c not in components]
    crystalline = [c for c in components if c != AMORPHOUS]
    sizes = _grain_sizes(grain_size_nm, crystalline)
    sigma = {c: math.hypot(ring_width_inv_nm, 1.0 / sizes[c] / _FWHM_PER_SIGMA) for c in crystalline}

    scene = _Scene(
        components, shape=shape, inv_nm_per_px=inv_nm_per_px, center_px=center, ellipticity=eps,
        ellipse_angle_deg=angle, sigma_inv_nm=sigma, halo_q_inv_nm=float(halo_q_inv_nm),
        halo_width_inv_nm=float(halo_width_inv_nm), debye_waller_B_A2=float(debye_waller_B_A2),
        spottiness=float(spottiness), dose_e_per_px=dose, central_beam=bool(central_beam),
        central_beam_share=float(central_beam_share), background_level=float(background_level),
        beam_stop=bool(beam_stop), beam_stop_angle_deg=float(beam_stop_angle_deg),
        saturation_counts=_saturation(saturation_counts, dose), rng=rng,
    )

    fractions = stage_fractions(stages, float(crossfade_frames), components)
    if n_cal:
        cal = np.zeros((n_cal, len(components)))
        cal[:, components.index(cal_phase)] = 1.0
        fractions = np.vstack([cal, fractions])
    n_total = fractions.shape[0]
    frames = np.empty((n_total, h, w), dtype=np.float32)
    for t in range(n_total):
        frames[t] = scene.frame(dict(zip(components, fractions[t])), rng)

    time_s = np.arange(n_total, dtype=float) / fps_v
    mode = np.array(["diffraction"] * n_total)
    phases = _truth_table(fractions, components, time_s, center, eps, angle)
    frame_table = pd.DataFrame({
        "frame": np.arange(n_total), "time_s": time_s, "mode": mode,
        "drift_x_nm": 0.0, "drift_y_nm": 0.0, "n_objects": 0, "dose_e_per_px": dose,
    })
    first = n_cal
    stage_info = []
    for frac, length in stages:
        stage_info.append({"fractions": frac, "n_frames": length, "start_frame": first})
        first += length
    params: dict[str, Any] = {
        "generator": "tem_operando.synth.saed.saed_series",
        "seed": seed,
        "rng": "seed" if seed is not None else "numpy Generator passed by the caller",
        "n_frames": n_total,
        "shape": [h, w],
        "sequence": sequence if isinstance(sequence, str) else [[dict(f), int(n)] for f, n in sequence],
        "stages": stage_info,
        "components": components,
        "calibration_frame": cal_phase,
        "n_calibration_frames": n_cal,
        "inv_nm_per_px": inv_nm_per_px,
        "fps": fps_v,
        "dose_e_per_px": dose,
        "center_px": [center[0], center[1]],
        "center_offset_px": [offset[0], offset[1]],
        "ellipticity": eps,
        "ellipse_angle_deg": angle,
        "grain_size_nm": sizes,
        "ring_width_inv_nm": float(ring_width_inv_nm),
        "ring_sigma_inv_nm": sigma,
        "crossfade_frames": float(crossfade_frames),
        "halo_q_inv_nm": float(halo_q_inv_nm),
        "halo_width_inv_nm": float(halo_width_inv_nm),
        "spottiness": float(spottiness),
        "debye_waller_B_A2": float(debye_waller_B_A2),
        "lorentz_factor": "1/q",
        "central_beam": bool(central_beam),
        "central_beam_share": float(central_beam_share),
        "beam_stop": bool(beam_stop),
        "beam_stop_angle_deg": float(beam_stop_angle_deg),
        "background_level": float(background_level),
        "saturation_counts": float(scene.saturation),
        "fraction_definition": "share of the diffracted electrons scattered by each component",
    }
    return Session(
        frames=frames, time_s=time_s, mode=mode, nm_per_px=float("nan"),
        inv_nm_per_px=inv_nm_per_px, dose_e_per_px=np.full(n_total, dose), classes=None,
        instances=None, phases=phases, frame_table=frame_table, params=params,
    )


def _grain_sizes(grain_size_nm: float | Mapping[str, float], phases: Sequence[str]) -> dict[str, float]:
    if isinstance(grain_size_nm, Mapping):
        given = {get_phase(k).name: _positive(f"grain_size_nm[{k!r}]", v) for k, v in grain_size_nm.items()}
        return {p: given.get(p, 25.0) for p in phases}
    size = _positive("grain_size_nm", grain_size_nm)
    return {p: size for p in phases}


def _truth_table(fractions: np.ndarray, components: Sequence[str], time_s: np.ndarray,
                 center: tuple[float, float], eps: float, angle: float) -> pd.DataFrame:
    n = fractions.shape[0]
    best = [components[i] for i in np.argmax(fractions, axis=1)]
    amorphous = (fractions[:, components.index(AMORPHOUS)] if AMORPHOUS in components
                 else np.zeros(n))
    table = {"frame": np.arange(n), "time_s": time_s, "best_phase": best,
             "amorphous_fraction": amorphous}
    for i, c in enumerate(components):
        if c != AMORPHOUS:
            table[f"frac_{c}"] = fractions[:, i]
    table.update({"center_x_px": center[0], "center_y_px": center[1], "ellipticity": eps,
                  "ellipse_angle_deg": angle})
    return pd.DataFrame(table)
