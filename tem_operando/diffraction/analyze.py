"""SAED frames → ``phases.csv`` and ``rings.csv`` rows: the per-series preparation and the
per-chunk analysis (one short class, like a LiberTEM UDF: parameters, ``prepare``, ``process``).

>>> from tem_operando.synth.saed import saed_series                    # doctest: +SKIP
>>> s = saed_series(40, sequence="MoO3", calibration_frame="Au", rng=1) # doctest: +SKIP
>>> phases, rings = analyze_patterns(s.frames, calibrate_with="Au",     # doctest: +SKIP
...                                  phases=["MoO3", "Mo", "Na2O", "Au"])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import schema
from .calibrate import Calibration, calibrate_from_profile, require_calibration
from .geometry import (
    PatternGeometry,
    RadialBinner,
    auto_mask,
    find_center,
    fit_geometry,
    saturation_mask,
    shifted,
)
from .phases import list_phases
from .profile import ring_weights
from .rings import RING_EXTRA_COLUMNS, assign_ring, find_ring_peaks
from .unmix import Unmixer

__all__ = ["DiffractionSetup", "PatternAnalyzer", "analyze_patterns"]


@dataclass
class DiffractionSetup:
    """Everything prepared once per series.

    Attributes
    ----------
    geometry : PatternGeometry
    mask : ndarray of bool (H, W)
        Usable pixels.
    binner : RadialBinner
    calibration : Calibration
    unmixer : Unmixer
    fit_bins : ndarray of bool
        Bins used in the fit (beyond the beam/stop, within the detector).
    """

    geometry: PatternGeometry
    mask: np.ndarray
    binner: RadialBinner
    calibration: Calibration
    unmixer: Unmixer
    fit_bins: np.ndarray

    @property
    def q_inv_nm(self) -> np.ndarray:
        """Bin centres in 1/nm."""
        return self.binner.q_inv_nm(self.calibration.inv_nm_per_px)


def _as_stack(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"diffraction frames must be (T, H, W) or (H, W), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("no diffraction frames to analyse")
    return arr


def _clean(stack: np.ndarray) -> np.ndarray:
    """float32 copy with non-finite pixels set to 0 (they are masked)."""
    out = np.asarray(stack, dtype=np.float32)
    if not np.isfinite(out).all():
        out = np.where(np.isfinite(out), out, np.float32(0))
    return out


class PatternAnalyzer:
    """Phase timeline of SAED frames.

    Parameters
    ----------
    inv_nm_per_px : float, optional
        Calibration (from the metadata or the command line).  Required unless
        ``calibrate_with`` is given.
    phases : sequence of str, optional
        Candidate library phases (default: the whole library).
    calibrate_with : str, optional
        A standard (``"Au"``, ``"Al"``) whose pattern fixes the calibration.
    calibration_frames : ndarray or sequence of int, optional
        The standard's pattern(s): frames (T, H, W)/(H, W) from a separate file, or indices into
        the frames given to :meth:`prepare` (default: the first frame).
    mask : ndarray of bool, optional
        Usable pixels (added to the automatic mask of saturated and beam-stop pixels).
    bin_px : float
        Radial bin width in px.
    q_min_inv_nm : float
        Smallest q fitted (1/nm).
    track_center : bool
        Re-find the centre on every chunk's mean and rebuild the binning if it moved > 0.5 px.
    learn_per_chunk : bool
        Re-learn the ring widths and halo shape on every chunk's mean profile.
    find_rings : bool
        Build the rings table.
    """

    def __init__(self, inv_nm_per_px: float | None = None, phases: Sequence[str] | None = None, *,
                 calibrate_with: str | None = None, calibration_frames=None,
                 mask: np.ndarray | None = None, bin_px: float = 0.5, q_min_inv_nm: float = 0.8,
                 track_center: bool = True, learn_per_chunk: bool = True, find_rings: bool = True,
                 path: str | None = None):
        if inv_nm_per_px is None and calibrate_with is None:
            require_calibration(None, path)
        if inv_nm_per_px is not None:
            require_calibration(inv_nm_per_px, path)
        from .phases import get_phase

        self.phases = [get_phase(p).name for p in (phases if phases is not None else list_phases())]
        self.calibrate_with = get_phase(calibrate_with).name if calibrate_with else None
        self.inv_nm_per_px = inv_nm_per_px
        self.calibration_frames = calibration_frames
        self.user_mask = mask
        self.bin_px = float(bin_px)
        self.q_min_inv_nm = float(q_min_inv_nm)
        self.track_center = bool(track_center)
        self.learn_per_chunk = bool(learn_per_chunk)
        self.find_rings = bool(find_rings)
        self.path = path
        self.setup: DiffractionSetup | None = None
        self.last_profiles: np.ndarray | None = None

    # ------------------------------------------------------------------------------
    def prepare(self, frames: np.ndarray) -> DiffractionSetup:
        """Geometry, mask, calibration and design from a sample of the series (once)."""
        stack = _as_stack(frames)
        finite = np.isfinite(stack).all(axis=0)
        clean = _clean(stack)
        mean = clean.mean(axis=0)
        sat = saturation_mask(clean)
        valid = finite & ~sat
        if self.user_mask is not None:
            valid &= np.asarray(self.user_mask, bool)
        h, w = mean.shape
        c0 = find_center(mean, valid)
        mask = auto_mask(mean, PatternGeometry((h, w), *c0), ~valid)
        # The series mean: every frame's rings, least noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            geometry = fit_geometry(mean, mask, center=c0)
        mask = auto_mask(mean, geometry, ~valid)
        binner = RadialBinner(geometry, mask, bin_px=self.bin_px)
        calibration = self._calibrate(stack, binner)
        self.setup = self._build(geometry, mask, binner, calibration, mean)
        return self.setup

    def _calibrate(self, stack: np.ndarray, binner: RadialBinner) -> Calibration:
        if self.inv_nm_per_px is not None and self.calibrate_with is None:
            return Calibration(float(self.inv_nm_per_px), 0.0, "given")
        cal_stack = self._calibration_stack(stack)
        prof = binner.profiles(_clean(cal_stack)).mean(axis=0)
        r_min = self._r_min(binner, None)
        return calibrate_from_profile(prof, binner.r_px, self.calibrate_with, r_fit_min_px=r_min,
                                      path=self.path)

    def _calibration_stack(self, stack: np.ndarray) -> np.ndarray | None:
        """The standard's frames (None without ``calibrate_with``)."""
        if self.calibrate_with is None:
            return None
        cal_frames = self.calibration_frames
        if cal_frames is None:
            return stack[:1]
        arr = np.asarray(cal_frames)
        if arr.ndim <= 1 and arr.dtype.kind in "iu":
            return stack[np.atleast_1d(arr).astype(int)]
        cal_stack = _as_stack(arr)
        if cal_stack.shape[1:] != stack.shape[1:]:
            raise ValueError(f"calibration frames are {cal_stack.shape[1:]} px, the series "
                             f"{stack.shape[1:]} px: they must share the detector set-up")
        return cal_stack

    @staticmethod
    def _r_min(binner: RadialBinner, cal: float | None, q_min: float = 0.0) -> float:
        full = 2 * math.pi * np.maximum(binner.r_px, 0.5) * binner.bin_px
        cover = binner.weight / full
        inner = binner.r_px < 0.4 * binner.r_px[-1]
        low = np.flatnonzero(inner & (cover < 0.8))
        r = float(binner.r_px[low[-1]]) + 3.0 if low.size else 0.0
        r = max(r, 6.0)
        if cal:
            r = max(r, q_min / cal)
        return r

    def _build(self, geometry, mask, binner, calibration, mean) -> DiffractionSetup:
        cal = calibration.inv_nm_per_px
        full = 2 * math.pi * np.maximum(binner.r_px, 0.5) * binner.bin_px
        cover = binner.weight / full
        r_min = self._r_min(binner, cal, self.q_min_inv_nm)
        fit = (binner.r_px >= r_min) & (cover >= 0.25) & (binner.q_inv_nm(cal) <= 11.5)
        # keep one contiguous range from r_min outwards
        idx = np.flatnonzero(fit)
        if idx.size < 20:
            raise ValueError("too few usable radius bins: is this a diffraction pattern, and is "
                             "the calibration right?")
        gaps = np.flatnonzero(np.diff(idx) > 1)
        if gaps.size:
            fit[idx[gaps[0] + 1]:] = False
        unmixer = Unmixer(binner, cal, self.phases, fit_bins=fit)
        mean_prof = binner.profiles(mean)
        unmixer.learn_shapes(mean_prof)
        unmixer.prepare(mean_prof)
        return DiffractionSetup(geometry, mask, binner, calibration, unmixer, fit)

    # ------------------------------------------------------------------------------
    def process(self, frames: np.ndarray, frame_index: Sequence[int] | None = None,
                time_s: Sequence[float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Phase fractions and rings of a chunk of frames.

        Returns
        -------
        phases : DataFrame
            ``schema.PHASES_FIXED`` columns + ``frac_<phase>`` per candidate phase, then extra
            columns ``center_x_px, center_y_px, ellipticity, ellipse_angle_deg,
            inv_nm_per_px, significance``.
        rings : DataFrame
            ``schema.RINGS`` columns + ``width_inv_nm`` (Gaussian σ) and ``d_library_nm``.
        """
        stack = _as_stack(frames)
        if self.setup is None:
            self.prepare(stack)
        setup = self.setup
        assert setup is not None
        if stack.shape[1:] != setup.geometry.shape:
            raise ValueError(f"frames are {stack.shape[1:]} px but the series was prepared on "
                             f"{setup.geometry.shape} px")
        n = stack.shape[0]
        finite = np.isfinite(stack.reshape(n, -1)).all(axis=1)
        clean = _clean(stack)
        if self.track_center and finite.any():
            mean = clean[finite].mean(axis=0)
            cx, cy = find_center(mean, setup.mask)
            dx, dy = cx - setup.geometry.center_x_px, cy - setup.geometry.center_y_px
            if math.hypot(dx, dy) > 0.5:
                geometry = shifted(setup.geometry, dx, dy)
                mask = auto_mask(mean, geometry, ~setup.mask)
                binner = setup.binner.with_geometry(geometry, mask)
                self.setup = setup = self._build(geometry, mask, binner, setup.calibration, mean)
        profiles = setup.binner.profiles(clean)
        profiles[~finite] = np.nan
        self.last_profiles = profiles
        um = setup.unmixer
        if self.learn_per_chunk and finite.any():
            good = profiles[finite]
            groups = np.array_split(good, min(4, len(good)))
            mean_prof = good.mean(axis=0)
            um.learn_shapes(np.vstack([mean_prof] + [g.mean(axis=0) for g in groups]))
            um.prepare(mean_prof)
        res = um.fit(profiles)
        frame_index = np.arange(n) if frame_index is None else np.asarray(frame_index, dtype=np.int64)
        time_s = np.full(n, np.nan) if time_s is None else np.asarray(time_s, dtype=float)
        table = {
            "frame": frame_index, "time_s": time_s, "best_phase": res.best_phase.astype(str),
            "confidence": res.confidence, "amorphous_fraction": res.amorphous_fraction,
        }
        for j, p in enumerate(um.phases):
            table[schema.phase_column(p)] = res.fractions[:, j]
        g = setup.geometry
        table.update({"center_x_px": g.center_x_px, "center_y_px": g.center_y_px,
                      "ellipticity": g.ellipticity, "ellipse_angle_deg": g.ellipse_angle_deg,
                      "inv_nm_per_px": setup.calibration.inv_nm_per_px,
                      "significance": res.significance})
        phases_df = pd.DataFrame(table)
        rings_df = self._rings(profiles, res, frame_index) if self.find_rings else \
            schema.empty("rings")
        return phases_df, rings_df

    def _rings(self, profiles, res, frame_index) -> pd.DataFrame:
        setup = self.setup
        um = setup.unmixer
        cal = setup.calibration.inv_nm_per_px
        r = um.r_fit_px
        npx = setup.binner.weight[setup.fit_bins]
        widths = um.phase_width_inv_nm()
        lists = {}
        for p in um.phases:
            rl = um.ring_lists[p].copy()
            rl["weight"] = ring_weights(rl) if len(rl) else []
            lists[p] = rl
        rows = []
        for i in range(profiles.shape[0]):
            if not np.isfinite(res.fractions[i]).all():
                continue
            prof = profiles[i, setup.fit_bins]
            detail = prof - res.background[i] - res.halo[i]
            # Poisson noise of the bin plus a 0.5 % model error (texture, background shape)
            model = np.maximum(res.model[i], 1e-9)
            noise = np.sqrt(model / np.maximum(npx, 1e-9) + (0.005 * model) ** 2)
            cands = [(p, lists[p], float(res.amplitudes[i, j]), float(widths[j]))
                     for j, p in enumerate(um.phases) if res.fractions[i, j] >= 0.03]
            for rp, sig, height in find_ring_peaks(r, detail, noise):
                q = rp * cal
                phase, hkl, d_lib = assign_ring(q, cands)
                sig_q = sig * cal if np.isfinite(sig) else float("nan")
                s_px = sig if np.isfinite(sig) else setup.binner.bin_px
                intensity = height * math.sqrt(2 * math.pi) * s_px * 2 * math.pi * rp
                rows.append((int(frame_index[i]), q, 1.0 / q, intensity, phase, hkl, sig_q, d_lib))
        cols = [c.name for c in schema.RINGS] + RING_EXTRA_COLUMNS
        return pd.DataFrame(rows, columns=cols).astype({"frame": np.int64})


def analyze_patterns(frames: np.ndarray, inv_nm_per_px: float | None = None,
                     phases: Sequence[str] | None = None, *, frame_index=None, time_s=None,
                     analyzer: PatternAnalyzer | None = None, **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Phase fractions and rings of diffraction frames (one call per chunk).

    Parameters
    ----------
    frames : ndarray (T, H, W)
        Diffraction frames (counts).
    inv_nm_per_px : float, optional
        Calibration in 1/nm per px; required unless ``calibrate_with`` is in ``options``.
    phases : sequence of str, optional
        Candidate phases (default: the whole library).
    frame_index, time_s : array-like, optional
        Frame numbers and times (s) of the rows (``frame=`` is accepted for ``frame_index``).
    analyzer : PatternAnalyzer, optional
        Reuse a prepared analyzer (the pipeline passes the same one for every chunk; it is
        prepared on the first chunk).
    **options
        Passed to :class:`PatternAnalyzer` (``calibrate_with``, ``calibration_frames``, ...).

    Returns
    -------
    phases, rings : DataFrame
        See :meth:`PatternAnalyzer.process`.

    Raises
    ------
    CalibrationError
        No calibration and no standard to fit one.
    UnknownPhaseError
        A phase name not in the library.
    """
    if "frame" in options:  # alias used by the pipeline
        alias = options.pop("frame")
        frame_index = alias if frame_index is None else frame_index
    if analyzer is None:
        analyzer = PatternAnalyzer(inv_nm_per_px, phases, **options)
    return analyzer.process(frames, frame_index=frame_index, time_s=time_s)
