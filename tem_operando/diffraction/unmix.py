"""Phase unmixing: each profile as a non-negative mix of library phases, halo and background.

Model of a radial profile (mean counts per px in nominal-radius bins)::

    p(r) = Σ_phases a_p ρ_p(r) + a_h ρ_halo(r) + Σ_k b_k B_k(r)

``ρ_p`` is phase p's ring pattern as a density that integrates to one over the detector plane
(ring weights of :func:`~tem_operando.diffraction.profile.ring_weights`), Gaussian rings of the
observed width; ``ρ_halo`` the amorphous halo (a broad maximum at q_h and a weaker one at
1.8 q_h), also of unit integral; ``B_k`` smooth, decreasing, non-negative background shapes (the
inelastic background and the tail of the central beam).  All amplitudes are non-negative, so
``a_p / (Σ a + a_h)`` is the share of the diffracted electrons scattered by phase p — the
definition of a phase fraction in :mod:`tem_operando.synth.saed`.

Model profiles are exact for the fitted geometry: a radial function sampled on a fine grid is
mapped to the bins with :meth:`RadialBinner.fine_kernel`, which reproduces binning the image.

Speed: ring widths (per phase, as a mixture of a few Gaussian widths) and the halo shape are
learnt once per chunk from the chunk's mean profile; per frame only a small NNLS remains,
solved on the ``n × n`` triangular factor of the weighted design (QR once per chunk), so the
cost per frame does not depend on the number of radius bins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .geometry import RadialBinner
from .phases import AMORPHOUS, BUILTIN_CACHE_Q_MAX_INV_NM, get_phase, ring_list
from .profile import gaussian_rings_density, ring_weights

__all__ = ["UnmixResult", "Unmixer"]

_FINE_STEP_PX = 0.05
_HALO_SECOND = (1.8, 1.6, 0.35)  # position ×, width ×, weight of the halo's second maximum


@dataclass
class UnmixResult:
    """Per-frame unmixing output (arrays over frames).

    Attributes
    ----------
    phases : list of str
        Candidate phases, the order of ``fractions``' columns.
    fractions : ndarray (T, n_phases)
        Share of the diffracted signal per phase.
    amorphous_fraction : ndarray (T,)
    best_phase : ndarray of str (T,)
        Largest component (a phase or ``"amorphous"``; ``""`` when nothing significant diffracts).
    confidence : ndarray (T,)
        0–1: margin between the two largest components × significance of the best one.
    amplitudes, halo_amplitude : ndarray
        Electrons per component (model units).
    background : ndarray (T, n_fit_bins)
        Fitted background (counts per px) on the fit bins.
    halo : ndarray (T, n_fit_bins)
        Fitted halo (counts per px) on the fit bins.
    model : ndarray (T, n_fit_bins)
        Whole fitted profile.
    significance : ndarray (T,)
        Best component's amplitude over its standard error.
    """

    phases: list[str]
    fractions: np.ndarray
    amorphous_fraction: np.ndarray
    best_phase: np.ndarray
    confidence: np.ndarray
    amplitudes: np.ndarray
    halo_amplitude: np.ndarray
    background: np.ndarray
    halo: np.ndarray
    model: np.ndarray
    significance: np.ndarray


class Unmixer:
    """Design matrix of a phase set for one geometry and calibration (built once per series).

    Parameters
    ----------
    binner : RadialBinner
        The series' radial binning.
    inv_nm_per_px : float
        Calibration in 1/nm per px.
    phases : sequence of str
        Candidate library phases (names checked; UnknownPhaseError lists the library).
    fit_bins : ndarray of bool, optional
        Bins used in the fit (default: bins with pixels).
    sigma_grid_inv_nm : sequence of float, optional
        Gaussian ring widths (standard deviations, 1/nm) mixed to match the observed width;
        default geometric from 0.5 px to 0.16 1/nm.
    halo_q_inv_nm : sequence of float
        Candidate halo positions (1/nm).
    halo_width_inv_nm : sequence of float
        Candidate halo widths (standard deviation, 1/nm).
    rings : mapping, optional
        ``{name: ring list DataFrame}`` overriding the library (e.g. for tests/benchmarks).
    debye_waller_B_A2 : float
        B factor of the ring weights.
    significance_min : float
        Frames whose best component is less significant than this get ``best_phase = ""``.
    """

    def __init__(self, binner: RadialBinner, inv_nm_per_px: float, phases: Sequence[str], *,
                 fit_bins: np.ndarray | None = None,
                 sigma_grid_inv_nm: Sequence[float] | None = None,
                 halo_q_inv_nm: Sequence[float] = (2.5, 2.9, 3.3, 3.7, 4.1, 4.5),
                 halo_width_inv_nm: Sequence[float] = (0.3, 0.45, 0.65),
                 rings: Mapping[str, pd.DataFrame] | None = None,
                 debye_waller_B_A2: float = 1.0, significance_min: float = 8.0):
        self.binner = binner
        self.cal = float(inv_nm_per_px)
        rings = dict(rings or {})
        names = []
        for p in phases:
            names.append(p if p in rings else get_phase(p).name)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate phases in {list(phases)}")
        if any(n.lower() == AMORPHOUS for n in names):
            raise ValueError("'amorphous' is always fitted (the halo); do not list it as a phase")
        self.phases = names
        self.fit_bins = (binner.weight > 0) if fit_bins is None else np.asarray(fit_bins, bool)
        self.significance_min = float(significance_min)
        kernel, grid = binner.fine_kernel(_FINE_STEP_PX)
        self._k = kernel[np.flatnonzero(self.fit_bins)]
        self._grid = grid
        r_top = grid[-1]
        q_top = min(BUILTIN_CACHE_Q_MAX_INV_NM, r_top * self.cal * 1.02)
        sig_min = max(0.5 * self.cal, 0.012)
        if sigma_grid_inv_nm is None:
            sig_max = max(0.16, 3 * sig_min)
            n = max(2, int(math.ceil(math.log(sig_max / sig_min) / math.log(1.6))) + 1)
            sigma_grid_inv_nm = np.geomspace(sig_min, sig_max, n)
        self.sigma_grid_inv_nm = np.asarray(sigma_grid_inv_nm, float)
        sig_px = np.maximum(self.sigma_grid_inv_nm / self.cal, 0.5)
        self.ring_lists: dict[str, pd.DataFrame] = {}
        cols = []
        for name in self.phases:
            # weights normalised over all rings to 12 1/nm, as the generator does
            full = rings[name] if name in rings else ring_list(name, BUILTIN_CACHE_Q_MAX_INV_NM)
            self.ring_lists[name] = full[full["q_inv_nm"] <= q_top].reset_index(drop=True)
            w = ring_weights(full, debye_waller_B_A2=debye_waller_B_A2)
            centers = full["q_inv_nm"].to_numpy() / self.cal
            cols.append(np.stack([self._project(gaussian_rings_density(grid, centers, s, w))
                                  for s in sig_px], axis=1))
        self._phase_cols = np.stack(cols, axis=1) if cols else np.zeros((self._k.shape[0], 0, sig_px.size))
        halo = []
        self.halo_params = []
        for qh in halo_q_inv_nm:
            for wh in halo_width_inv_nm:
                c = np.array([qh, _HALO_SECOND[0] * qh]) / self.cal
                s = np.maximum(np.array([wh, _HALO_SECOND[1] * wh]) / self.cal, 0.5)
                ww = np.array([1.0, _HALO_SECOND[2]]) / (1.0 + _HALO_SECOND[2])
                halo.append(self._project(gaussian_rings_density(grid, c, s, ww)))
                self.halo_params.append((float(qh), float(wh)))
        self._halo_cols = np.stack(halo, axis=1)
        r = grid
        scale = float(binner.r_px[-1])
        bg = [np.ones_like(r)]
        bg += [(1 + (r / (f * scale)) ** 2) ** -1.5 for f in (0.05, 0.1, 0.2, 0.4, 0.8)]
        bg += [(1 + (r / g) ** 2) ** -2.0 for g in (3.0, 6.0)]
        self._bg_cols = np.stack([self._project(b) for b in bg], axis=1)
        # Default shapes until learnt: the narrowest width, the middle halo.
        self.width_mix = np.zeros((len(self.phases), sig_px.size))
        self.width_mix[:, 0] = 1.0
        self.halo_mix = np.zeros(self._halo_cols.shape[1])
        self.halo_mix[int(np.argmin([abs(q - 3.3) + abs(w - 0.45) for q, w in self.halo_params]))] = 1.0
        self._solver = None

    # ----------------------------------------------------------------------------------
    def _project(self, density_on_grid: np.ndarray) -> np.ndarray:
        return np.asarray(self._k @ density_on_grid).ravel()

    @property
    def r_fit_px(self) -> np.ndarray:
        """Nominal radii (px) of the fit bins."""
        return self.binner.r_px[self.fit_bins]

    def phase_width_inv_nm(self) -> np.ndarray:
        """Current ring width (mixture-weighted σ, 1/nm) of each phase."""
        return np.exp(self.width_mix @ np.log(self.sigma_grid_inv_nm))

    # ----------------------------------------------------------------------------------
    def _row_weights(self, mean_profile: np.ndarray) -> np.ndarray:
        m = np.asarray(mean_profile, float)[self.fit_bins]
        floor = max(1e-3 * np.nanmax(np.abs(m)) if m.size else 1.0, 1e-9)
        npx = self.binner.weight[self.fit_bins]
        return np.sqrt(npx / np.maximum(m, floor))

    def _nnls_design(self, blocks: list[np.ndarray], b: np.ndarray, wts: np.ndarray) -> np.ndarray:
        from scipy.optimize import nnls

        a = np.concatenate(blocks, axis=1) * wts[:, None]
        norm = np.linalg.norm(a, axis=0)
        norm[norm == 0] = 1.0
        x, _ = nnls(a / norm, b * wts, maxiter=50 * a.shape[1])
        return x / norm

    def _learn_one(self, mean_profile: np.ndarray, narrow_widths: int, min_share: float):
        """Shares, width mixtures (present phases) and halo share/mixture of one mean profile."""
        b = np.asarray(mean_profile, float)[self.fit_bins]
        n_p, n_s = len(self.phases), self.sigma_grid_inv_nm.size
        n_h = self._halo_cols.shape[1]
        shares = np.zeros(n_p)
        mixes = np.zeros((n_p, n_s))
        if not np.all(np.isfinite(b)) or b.max() <= 0:
            return shares, mixes, 0.0, None
        wts = self._row_weights(mean_profile)
        k = min(narrow_widths, n_s)
        narrow = self._phase_cols[:, :, :k].reshape(len(b), n_p * k)
        x = self._nnls_design([narrow, self._halo_cols, self._bg_cols], b, wts)
        tot = x[: n_p * k].reshape(n_p, k).sum(axis=1)
        h = x[n_p * k: n_p * k + n_h]
        diffracted = tot.sum() + h.sum()
        present = np.flatnonzero(tot > min_share * max(diffracted, 1e-300))
        if present.size:
            cols = self._phase_cols[:, present, :].reshape(len(b), present.size * n_s)
            x = self._nnls_design([cols, self._halo_cols, self._bg_cols], b, wts)
            amp = x[: present.size * n_s].reshape(present.size, n_s)
            h = x[present.size * n_s: present.size * n_s + n_h]
            tot_p = amp.sum(axis=1)
            diffracted = tot_p.sum() + h.sum()
            ok = tot_p > 0
            mixes[present[ok]] = amp[ok] / tot_p[ok, None]
            shares[present] = tot_p / max(diffracted, 1e-300)
        h_share = h.sum() / max(diffracted, 1e-300)
        return shares, mixes, h_share, (h / h.sum() if h.sum() > 0 else None)

    def learn_shapes(self, mean_profiles: np.ndarray, *, narrow_widths: int = 2,
                     min_share: float = 0.02, reliable_share: float = 0.1) -> None:
        """Learn each phase's ring-width mixture and the halo shape from mean profile(s).

        Per mean profile, two passes keep broad rings from imitating the halo: (1) phases at
        their ``narrow_widths`` narrowest widths only, with every halo shape and the
        background, tell which phases are present (≥ ``min_share`` of the diffracted signal);
        (2) the present phases at every width, the halo shapes and the background give the
        width mixtures and the halo shape.  With several mean profiles (e.g. of groups of
        frames) each phase takes its mixture from the profile where it is strongest; phases
        never above ``reliable_share`` take the mixture of the sharpest reliable phase.

        Parameters
        ----------
        mean_profiles : ndarray (n_bins,) or (n_groups, n_bins)
        """
        profs = np.atleast_2d(np.asarray(mean_profiles, float))
        n_p = len(self.phases)
        best_share = np.zeros(n_p)
        best_mix = np.zeros_like(self.width_mix)
        halo_share, halo_mix = 0.0, None
        for prof in profs:
            shares, mixes, h_share, h_mix = self._learn_one(prof, narrow_widths, min_share)
            better = shares > best_share
            best_share[better] = shares[better]
            best_mix[better] = mixes[better]
            if h_mix is not None and h_share > halo_share:
                halo_share, halo_mix = h_share, h_mix
        reliable = best_share >= reliable_share
        if reliable.any():
            logw = best_mix[reliable] @ np.log(self.sigma_grid_inv_nm)
            self.width_mix[:] = best_mix[reliable][int(np.argmin(logw))]
            self.width_mix[reliable] = best_mix[reliable]
        if halo_mix is not None and halo_share > 0.05:
            self.halo_mix = halo_mix
        self._solver = None

    def prepare(self, mean_profile: np.ndarray) -> None:
        """Weighted, scaled design and its QR factor for the per-frame fits."""
        wts = self._row_weights(mean_profile)
        phase_cols = np.einsum("bps,ps->bp", self._phase_cols, self.width_mix)
        halo_col = self._halo_cols @ self.halo_mix
        design = np.concatenate([phase_cols, halo_col[:, None], self._bg_cols], axis=1)
        a = design * wts[:, None]
        norm = np.linalg.norm(a, axis=0)
        norm[norm == 0] = 1.0
        q, r = np.linalg.qr(a / norm)
        rinv = np.linalg.pinv(r)
        self._solver = {"design": design, "wts": wts, "norm": norm, "q": q, "r": r,
                        "cov_diag": (rinv * rinv).sum(axis=1)}

    def fit(self, profiles: np.ndarray) -> UnmixResult:
        """Fit profiles (T, n_bins) — call :meth:`prepare` (and :meth:`learn_shapes`) first.

        Non-finite profiles give NaN fractions and ``best_phase = ""``.
        """
        from scipy.optimize import nnls

        if self._solver is None:
            self.prepare(np.nanmean(profiles, axis=0))
        s = self._solver
        prof = np.atleast_2d(np.asarray(profiles, float))[:, self.fit_bins]
        ok = np.all(np.isfinite(prof), axis=1)
        bw = np.where(ok[:, None], prof, 0.0) * s["wts"]
        c = bw @ s["q"]
        n_p = len(self.phases)
        n_cols = s["r"].shape[1]
        xs = np.zeros((prof.shape[0], n_cols))
        ss_res = np.zeros(prof.shape[0])
        total = (bw * bw).sum(axis=1)
        explained = (c * c).sum(axis=1)
        r = s["r"]
        for i in range(prof.shape[0]):
            if ok[i]:
                x, rn = nnls(r, c[i], maxiter=20 * n_cols)
                xs[i] = x
                ss_res[i] = rn * rn + max(total[i] - explained[i], 0.0)
        dof = max(prof.shape[1] - n_cols, 1)
        sigma = np.sqrt(ss_res / dof)
        se = sigma[:, None] * np.sqrt(s["cov_diag"])[None, :]
        amps = xs / s["norm"]
        phase_amp = amps[:, :n_p]
        halo_amp = amps[:, n_p]
        diffr = phase_amp.sum(axis=1) + halo_amp
        with np.errstate(invalid="ignore", divide="ignore"):
            fr = phase_amp / diffr[:, None]
            am = halo_amp / diffr
        comps = np.concatenate([fr, am[:, None]], axis=1)
        names = np.array(self.phases + [AMORPHOUS], dtype=object)
        comps_f = np.where(np.isfinite(comps), comps, -1.0)
        order = np.argsort(-comps_f, axis=1)
        best = order[:, 0]
        second = order[:, 1] if comps.shape[1] > 1 else order[:, 0]
        rows = np.arange(len(best))
        margin = comps_f[rows, best] - np.clip(comps_f[rows, second], 0, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = xs[rows, best] / np.maximum(se[rows, best], 1e-300)
        z = np.where(ok & (diffr > 0), z, 0.0)
        conf = np.clip(margin, 0, 1) * (1 - np.exp(-z / self.significance_min))
        best_name = names[best].astype(object)
        bad = ~ok | ~(diffr > 0) | (z < self.significance_min)
        best_name[bad] = ""
        conf[bad] = 0.0
        fr[~ok] = np.nan
        am[~ok] = np.nan
        design = s["design"]
        bg = amps[:, n_p + 1:] @ design[:, n_p + 1:].T
        halo = halo_amp[:, None] * design[:, n_p][None, :]
        model = amps @ design.T
        return UnmixResult(self.phases, fr, am, best_name, conf, phase_amp, halo_amp, bg, halo,
                           model, z)
