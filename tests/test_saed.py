"""Synthetic SAED patterns and series: geometry, ring positions, truth, noise and errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tem_operando.diffraction.phases import UnknownPhaseError, ring_list
from tem_operando.errors import CalibrationError
from tem_operando.synth.saed import saed_pattern, saed_series


def radial_profile(img, center, *, angle_deg=None, half_width_deg=12.0):
    """Azimuthal mean in 1-px bins around ``center`` = (x, y), optionally in a wedge (±angle)."""
    y, x = np.indices(img.shape)
    dx, dy = x - center[0], y - center[1]
    r = np.rint(np.hypot(dx, dy)).astype(int)
    keep = np.ones(img.shape, bool)
    if angle_deg is not None:
        theta = np.degrees(np.arctan2(dy, dx))
        diff = np.abs((theta - angle_deg + 90) % 180 - 90)  # both directions along the axis
        keep = diff <= half_width_deg
    sums = np.bincount(r[keep], img[keep], minlength=r.max() + 1)
    counts = np.bincount(r[keep], minlength=r.max() + 1)
    return sums / np.maximum(counts, 1)


def peak_near(profile, expected, search=4):
    """Sub-pixel position of the maximum of ``profile`` within ``search`` px of ``expected``."""
    lo, hi = int(expected - search), int(expected + search) + 1
    i = lo + int(np.argmax(profile[lo:hi]))
    a, b, c = profile[i - 1], profile[i], profile[i + 1]
    denom = a - 2 * b + c
    return i + (0.5 * (a - c) / denom if denom != 0 else 0.0)


def test_series_is_deterministic_with_a_seed():
    a = saed_series(12, (96, 96), sequence="Sb", rng=7)
    b = saed_series(12, (96, 96), sequence="Sb", rng=7)
    c = saed_series(12, (96, 96), sequence="Sb", rng=8)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.phases.equals(b.phases) and a.params == b.params
    assert not np.array_equal(a.frames, c.frames)
    assert a.params["seed"] == 7


def test_gold_rings_at_the_library_radii():
    inv_nm_per_px, center = 0.05, (120.3, 135.7)
    img = saed_pattern({"Au": 1.0}, (256, 256), inv_nm_per_px=inv_nm_per_px, center_px=center,
                       dose_e_per_px=200.0, spottiness=0.3, rng=0)
    profile = radial_profile(img, center)
    rings = ring_list("Au", 10.0)
    for q in rings["q_inv_nm"][:4]:  # 111, 200, 220, 311 at 85, 98, 139, 163 px
        expected = q / inv_nm_per_px
        found = peak_near(profile, expected)
        assert abs(found - expected) < 1.0, (q, expected, found)
        around = np.r_[profile[int(expected) - 10: int(expected) - 5],
                       profile[int(expected) + 6: int(expected) + 11]]
        assert profile[round(found)] > 1.3 * np.median(around)


def test_ellipticity_shows_as_different_radii_along_the_two_axes():
    inv_nm_per_px, center, eps = 0.05, (128.0, 128.0), 0.1
    img = saed_pattern({"Au": 1.0}, inv_nm_per_px=inv_nm_per_px, center_px=center,
                       ellipticity=eps, ellipse_angle_deg=0.0, poisson=False, rng=0)
    r111 = ring_list("Au")["q_inv_nm"].iloc[0] / inv_nm_per_px
    along = peak_near(radial_profile(img, center, angle_deg=0.0, half_width_deg=3), r111 * 1.05, 3)
    across = peak_near(radial_profile(img, center, angle_deg=90.0, half_width_deg=3), r111 * 0.95, 3)
    assert along == pytest.approx(r111 * (1 + eps / 2), abs=1.0)
    assert across == pytest.approx(r111 * (1 - eps / 2), abs=1.0)
    assert along - across > 6.0


def test_phase_fraction_truth_and_transitions():
    stages = [({"Sn": 1.0}, 10), ({"amorphous": 1.0}, 10), ({"Na15Sn4": 1.0}, 10)]
    s = saed_series(None, (64, 64), sequence=stages, crossfade_frames=4, calibration_frame="Au",
                    fps=2.0, rng=1)
    ph = s.phases
    assert s.n_frames == 31 and len(ph) == 31
    assert list(ph.columns[:4]) == ["frame", "time_s", "best_phase", "amorphous_fraction"]
    assert {"frac_Au", "frac_Sn", "frac_Na15Sn4", "center_x_px", "center_y_px",
            "ellipticity"} <= set(ph.columns)
    total = ph["frac_Au"] + ph["frac_Sn"] + ph["frac_Na15Sn4"] + ph["amorphous_fraction"]
    np.testing.assert_allclose(total, 1.0)
    assert ph["best_phase"][0] == "Au" and ph["frac_Au"][0] == 1.0
    # stage boundaries (after the calibration frame) at frames 11 and 21
    assert list(ph["best_phase"][9:13]) == ["Sn", "Sn", "amorphous", "amorphous"]
    assert list(ph["best_phase"][19:23]) == ["amorphous", "amorphous", "Na15Sn4", "Na15Sn4"]
    assert (ph["frac_Sn"][1:9] == 1.0).all() and (ph["frac_Na15Sn4"][23:] == 1.0).all()
    assert 0 < ph["frac_Sn"][11] < 0.5 < ph["frac_Sn"][10] < 1
    np.testing.assert_allclose(ph["time_s"], np.arange(31) / 2.0)
    assert [st["start_frame"] for st in s.params["stages"]] == [1, 11, 21]


def test_presets_scale_to_n_frames_and_sum_to_one():
    for preset in ("Sn", "MoO3", "FeS2", "Sb"):
        s = saed_series(20, (48, 48), sequence=preset, rng=2)
        frac = s.phases.filter(like="frac_").sum(axis=1) + s.phases["amorphous_fraction"]
        np.testing.assert_allclose(frac, 1.0)
        assert s.n_frames == 20
    mo = saed_series(20, (48, 48), sequence="MoO3", rng=2).phases
    assert set(mo.columns) >= {"frac_MoO3", "frac_Mo", "frac_Na2O"}
    assert mo["frac_Mo"].iloc[-1] == pytest.approx(0.5)


def _ring_sharpness(img, center):
    from scipy.ndimage import gaussian_filter1d

    p = radial_profile(img, center)[25:120]
    return np.abs(p - gaussian_filter1d(p, 4.0)).max() / p.mean()


def test_amorphous_frames_have_no_sharp_rings():
    stages = [({"Sn": 1.0}, 3), ({"amorphous": 1.0}, 3), ({"Na15Sn4": 1.0}, 3)]
    s = saed_series(9, (256, 256), sequence=stages, crossfade_frames=0, rng=3, dose_e_per_px=100)
    center = (s.phases["center_x_px"][0], s.phases["center_y_px"][0])
    sharp = {t: _ring_sharpness(s.frames[t], center) for t in (1, 4, 7)}
    assert sharp[4] < 0.2 * sharp[1] and sharp[4] < 0.2 * sharp[7], sharp
    # the halo is there: a broad maximum near 3.3 1/nm
    profile = radial_profile(s.frames[4], center)
    r_halo = 3.3 / s.inv_nm_per_px
    assert profile[int(r_halo)] > 1.2 * profile[int(r_halo * 0.6)]


def test_poisson_statistics():
    s = saed_series(40, (64, 64), sequence=[({"Au": 1.0}, 40)], rng=4, dose_e_per_px=30.0,
                    spottiness=0.5)
    frames = s.frames.astype(np.float64)
    assert np.array_equal(frames, np.rint(frames))
    mean, var = frames.mean(axis=0), frames.var(axis=0, ddof=1)
    ok = (mean > 5) & (mean < 0.5 * s.params["saturation_counts"])
    assert ok.sum() > 1000
    assert np.median(var[ok] / mean[ok]) == pytest.approx(1.0, abs=0.1)
    # the mean count is about the dose (some electrons fall outside the frame or saturate)
    assert 0.5 * 30 < frames.mean() < 1.2 * 30


def test_central_beam_saturates_and_the_beam_stop_covers_it():
    kw = {"inv_nm_per_px": 0.04, "center_px": (100.0, 110.0), "rng": 5}
    free = saed_pattern({"Sn": 1.0}, **kw)
    stopped = saed_pattern({"Sn": 1.0}, beam_stop=True, **kw)
    assert free[110, 100] == free.max() == pytest.approx(100 * 50.0)  # default saturation
    assert stopped[110, 100] < 5
    # the bar runs from the centre to the frame edge along 225° (from +x towards +y = rows)
    a = np.radians(225.0)
    for t in (40, 80, 105):
        x, y = 100 + t * np.cos(a), 110 + t * np.sin(a)
        assert stopped[round(y), round(x)] < 5
        assert free[round(y), round(x)] > 5
    assert stopped.sum() < free.sum()


def test_session_structure():
    s = saed_series(8, (64, 80), rng=6, fps=4.0, dose_e_per_px=25.0)
    assert s.frames.shape == (8, 64, 80) and s.frames.dtype == np.float32
    assert (s.mode == "diffraction").all()
    assert np.isnan(s.nm_per_px) and s.inv_nm_per_px == 0.04
    assert s.classes is None and s.instances is None
    np.testing.assert_allclose(s.dose_e_per_px, 25.0)
    assert list(s.frame_table.columns) == ["frame", "time_s", "mode", "drift_x_nm", "drift_y_nm",
                                           "n_objects", "dose_e_per_px"]
    assert (s.frame_table["drift_x_nm"] == 0).all() and (s.frame_table["n_objects"] == 0).all()
    assert s.fps == pytest.approx(4.0)
    json.dumps(s.params)
    cx, cy = s.params["center_px"]
    assert abs(cx - 39.5) <= 8 and abs(cy - 31.5) <= 8  # ±shape/8 for small frames


def test_generator_rng_is_accepted():
    s = saed_series(4, (48, 48), rng=np.random.default_rng(0))
    assert s.params["seed"] is None


def test_speed_100_frames():
    t0 = time.perf_counter()
    saed_series(100, (256, 256), sequence="Sn", rng=0, calibration_frame="Au")
    assert time.perf_counter() - t0 < 8.0


def test_bad_arguments_give_clear_errors():
    with pytest.raises(UnknownPhaseError, match="Unobtainium"):
        saed_pattern({"Unobtainium": 1.0}, inv_nm_per_px=0.04)
    with pytest.raises(UnknownPhaseError):
        saed_series(10, sequence=[({"Xx": 1.0}, 10)])
    with pytest.raises(ValueError, match="dose_e_per_px"):
        saed_pattern({"Au": 1.0}, inv_nm_per_px=0.04, dose_e_per_px=-1.0)
    with pytest.raises(ValueError, match="dose_e_per_px"):
        saed_series(10, dose_e_per_px=-5)
    with pytest.raises(CalibrationError, match="inv_nm_per_px"):
        saed_pattern({"Au": 1.0}, inv_nm_per_px=0.0)
    with pytest.raises(CalibrationError, match="inv_nm_per_px"):
        saed_series(10, inv_nm_per_px=0)
    with pytest.raises(CalibrationError, match="fps"):
        saed_series(10, fps=0)
    with pytest.raises(ValueError, match="n_frames=12"):
        saed_series(12, sequence=[({"Sn": 1.0}, 5), ({"amorphous": 1.0}, 5)])
    with pytest.raises(ValueError, match="unknown sequence"):
        saed_series(10, sequence="NotAPreset")
    with pytest.raises(ValueError, match="ellipticity"):
        saed_series(10, ellipticity=0.7)
    with pytest.raises(ValueError, match="fraction"):
        saed_pattern({"Au": -1.0}, inv_nm_per_px=0.04)
    with pytest.raises(ValueError, match="nothing diffracts"):
        saed_pattern({}, inv_nm_per_px=0.04)
