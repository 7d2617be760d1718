"""Synthetic bright-field / dark-field in situ TEM videos: statistics, kinetics, ground truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tem_operando.synth.images import (
    FRAME_COLUMNS,
    FRONT_COLUMNS,
    OBJECT_COLUMNS,
    TRACK_COLUMNS,
    ParticleSpec,
    WireSpec,
    drift_trajectory,
    image_series,
    random_scene,
    spec_from_dict,
    spec_to_dict,
)

#: a detector without fixed-pattern extras: pure Poisson noise on a flat, steady beam
QUIET = {
    "readout_noise_e": 0.0,
    "hot_pixel_fraction": 0.0,
    "dead_pixel_fraction": 0.0,
    "gain_variation": 0.0,
    "illum_gradient": 0.0,
    "illum_falloff": 0.0,
    "flicker": 0.0,
}


def _particle(**kw) -> ParticleSpec:
    base = {
        "track_id": 1,
        "center_nm": (64.3, 60.7),
        "diameter0_nm": 40.0,
        "onset_s": 3.0,
        "swelling_rate_nm_s": 4.0,
        "width_expansion": 0.3,
    }
    return ParticleSpec(**{**base, **kw})


def _wire(**kw) -> WireSpec:
    base = {
        "track_id": 1,
        "contact_nm": (20.0, 64.0),
        "angle_deg": 0.0,
        "length0_nm": 150.0,
        "width0_nm": 30.0,
        "onset_s": 2.0,
        "rate_law": "linear",
        "front_velocity_nm_s": 6.0,
        "na_source_radius_nm": 40.0,
    }
    return WireSpec(**{**base, **kw})


def _axial(session, spec: WireSpec, frame: int) -> np.ndarray:
    """Distance along the wire axis from its contact end of every pixel centre of a frame, nm."""
    nm = session.nm_per_px
    dx, dy = session.frame_table.loc[frame, ["drift_x_nm", "drift_y_nm"]]
    rows, cols = np.indices(session.frames.shape[1:])
    x, y = cols * nm - dx, rows * nm - dy
    ux, uy = spec.axis
    return (x - spec.contact_nm[0]) * ux + (y - spec.contact_nm[1]) * uy


# ---------------------------------------------------------------------------------- basics


def test_same_seed_same_session_and_different_seed_differs():
    a = image_series(6, (64, 64), scene="mixed", rng=42)
    b = image_series(6, (64, 64), scene="mixed", rng=42)
    c = image_series(6, (64, 64), scene="mixed", rng=43)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert a.objects.equals(b.objects) and a.tracks.equals(b.tracks)
    assert a.params == b.params
    assert not np.array_equal(a.frames, c.frames)


def test_params_are_json_and_reproduce_the_session():
    s = image_series(4, (64, 64), scene="mixed", rng=np.random.default_rng(5))
    params = json.loads(json.dumps(s.params, allow_nan=False))
    specs = [spec_from_dict(d) for d in params["objects"]]
    again = image_series(4, (64, 64), scene="mixed", objects=specs, rng=params["seed"])
    np.testing.assert_array_equal(s.frames, again.frames)
    np.testing.assert_array_equal(s.classes, again.classes)
    for spec in specs:
        assert spec_from_dict(spec_to_dict(spec)) == spec


def test_shapes_dtypes_and_tables():
    s = image_series(5, (48, 80), scene="mixed", nm_per_px=2.0, fps=4.0, rng=1)
    assert s.frames.shape == (5, 48, 80) and s.frames.dtype == np.float32
    assert s.classes.shape == s.frames.shape and s.classes.dtype == np.uint8
    assert s.instances.shape == s.frames.shape and s.instances.dtype == np.uint32
    assert set(np.unique(s.classes)) <= {0, 1, 2}
    np.testing.assert_allclose(s.time_s, np.arange(5) / 4.0)
    assert list(s.mode) == ["image"] * 5
    assert s.nm_per_px == 2.0 and math.isnan(s.inv_nm_per_px)
    assert s.dose_e_per_px.shape == (5,) and s.fps == pytest.approx(4.0)
    assert list(s.objects.columns) == OBJECT_COLUMNS
    assert list(s.tracks.columns) == TRACK_COLUMNS
    assert list(s.fronts.columns) == FRONT_COLUMNS
    assert list(s.frame_table.columns) == FRAME_COLUMNS
    labels = set(np.unique(s.instances)) - {0}
    assert labels == set(s.tracks.track_id)
    # the objects table is measured from the masks
    for _, row in s.objects.iterrows():
        px = np.count_nonzero(s.instances[int(row.frame)] == row.track_id)
        assert row.area_nm2 == pytest.approx(px * 4.0)
    np.testing.assert_array_equal(
        s.frame_table.n_objects, [len(np.unique(f)) - 1 for f in s.instances]
    )


def test_empty_scene_has_no_objects_but_all_columns():
    s = image_series(3, (32, 32), scene="empty", rng=0)
    assert not s.classes.any() and not s.instances.any()
    for table, cols in (
        (s.objects, OBJECT_COLUMNS),
        (s.tracks, TRACK_COLUMNS),
        (s.fronts, FRONT_COLUMNS),
    ):
        assert table.empty and list(table.columns) == cols
    assert (s.frame_table.n_objects == 0).all()
    assert image_series(2, (32, 32), scene="wire", objects=[], rng=0).objects.empty


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"dose_e_per_px": -1.0}, "dose_e_per_px"),
        ({"dose_e_per_px": 0.0}, "dose_e_per_px"),
        ({"nm_per_px": 0.0}, "nm_per_px"),
        ({"nm_per_px": float("nan")}, "nm_per_px"),
        ({"n_frames": 0}, "n_frames"),
        ({"fps": 0.0}, "fps"),
        ({"scene": "forest"}, "scene"),
        ({"contrast": "phase"}, "contrast"),
        ({"background": "ice"}, "background"),
        ({"shape": (4, 4)}, "shape"),
        ({"blur_px": -1.0}, "blur_px"),
        ({"drift_nm_per_s": (1.0,)}, "drift"),
        ({"no_such_option": 1.0}, "no_such_option"),
        ({"objects": [_particle(diameter0_nm=-3.0)]}, "diameter0_nm"),
        ({"objects": [_particle(), _particle()]}, "unique"),
        ({"objects": [_wire(rate_law="cubic")]}, "rate_law"),
        ({"objects": [_particle(track_id=0)]}, "track_id"),
    ],
)
def test_invalid_arguments_raise_clear_value_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        image_series(**{"n_frames": 2, "shape": (32, 32), **kwargs})


# ---------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("background", ["vacuum", "carbon"])
def test_background_counts_match_dose(background):
    s = image_series(
        8,
        (96, 96),
        scene="empty",
        background=background,
        dose_e_per_px=40.0,
        rng=3,
        hot_pixel_fraction=0.0,
        dead_pixel_fraction=0.0,
    )
    render = s.params["render"]
    transmitted = (
        1.0
        if background == "vacuum"
        else math.exp(-render["film_thickness_nm"] / render["film_mfp_nm"])
    )
    means = s.frames.mean(axis=(1, 2))
    np.testing.assert_allclose(means, s.dose_e_per_px * transmitted, rtol=0.02)
    assert s.dose_e_per_px.mean() == pytest.approx(40.0, rel=0.05)  # flicker of a few %


@pytest.mark.parametrize("contrast, dose", [("bright-field", 25.0), ("dark-field", 50.0)])
def test_shot_noise_is_poisson_on_vacuum(contrast, dose):
    s = image_series(
        10,
        (96, 96),
        scene="empty",
        background="vacuum",
        contrast=contrast,
        dose_e_per_px=dose,
        blur_px=0.0,
        rng=4,
        **QUIET,
    )
    mean, var = s.frames.mean(), s.frames.var()
    assert var == pytest.approx(mean, rel=0.04)
    assert np.allclose(s.frames, np.round(s.frames))  # whole electrons
    if contrast == "bright-field":
        assert mean == pytest.approx(dose, rel=0.01)
    else:
        assert mean == pytest.approx(dose * s.params["render"]["df_background"], rel=0.03)


def test_readout_noise_adds_its_variance():
    s = image_series(
        10,
        (96, 96),
        scene="empty",
        background="vacuum",
        dose_e_per_px=10.0,
        blur_px=0.0,
        rng=5,
        **{**QUIET, "readout_noise_e": 2.0},
    )
    assert s.frames.var() == pytest.approx(s.frames.mean() + 4.0, rel=0.05)


def test_objects_dark_in_bright_field_and_bright_in_dark_field():
    objs = [
        _particle(track_id=1, center_nm=(40, 40), diameter0_nm=40),
        _particle(track_id=2, center_nm=(90, 90), diameter0_nm=30, width_expansion=0.0),
    ]
    means = {}
    for contrast in ("bright-field", "dark-field"):
        s = image_series(
            4,
            (128, 128),
            objects=objs,
            contrast=contrast,
            dose_e_per_px=50.0,
            background="carbon",
            rng=6,
        )
        f, c = s.frames, s.classes
        means[contrast] = f[c > 0].mean() / f[c == 0].mean()
    assert means["bright-field"] < 0.85
    assert means["dark-field"] > 1.5


def test_liquid_cell_is_darker_and_lower_in_contrast_than_vacuum():
    objs = [_particle(center_nm=(64, 64), diameter0_nm=50, width_expansion=0.0)]
    contrast, level = {}, {}
    for bg in ("vacuum", "liquid"):
        s = image_series(
            3,
            (128, 128),
            objects=objs,
            background=bg,
            dose_e_per_px=100.0,
            rng=7,
            mfp_pristine_nm=60.0,
            n_bubbles=0,
            **QUIET,
        )
        inside = s.frames[:, 54:75, 54:75].mean()
        outside = s.frames[:, :20, :20].mean()
        contrast[bg], level[bg] = 1 - inside / outside, outside
    assert level["liquid"] < 0.8 * level["vacuum"]
    assert contrast["liquid"] < 0.8 * contrast["vacuum"]


# ---------------------------------------------------------------------------------- particles


def test_particle_width_follows_onset_rate_and_plateau_exactly():
    p = _particle(onset_s=3.0, swelling_rate_nm_s=4.0, width_expansion=0.3, diameter0_nm=40.0)
    s = image_series(30, (128, 128), objects=[p], fps=2.0, rng=8)
    t = s.objects.time_s.to_numpy()
    expected = np.minimum(40.0 + 4.0 * np.maximum(t - 3.0, 0.0), 52.0)
    np.testing.assert_allclose(s.objects.width_nm, expected, rtol=0, atol=1e-9)
    row = s.tracks.iloc[0]
    assert row.swelling_rate_nm_s == pytest.approx(4.0)
    assert row.onset_s == 3.0 and row.plateau_s == pytest.approx(3.0 + 12.0 / 4.0)
    assert row.width0_nm == 40.0 and row.width1_nm == pytest.approx(52.0)
    assert row.width_expansion_pct == pytest.approx(30.0)
    assert row.area_expansion_pct == pytest.approx(100 * (1.3**2 - 1))
    assert row.volume_expansion_pct == pytest.approx(100 * (1.3**3 - 1))
    # reaction: pristine → reacted from the outside in, completely at the plateau
    rf = s.objects.set_index("time_s").reacted_fraction
    assert rf[0.0] == 0.0 and rf[t.max()] == 1.0
    assert np.all(np.diff(rf.to_numpy()) >= -1e-12)
    mid = s.classes[int(2 * 4.5)]  # half-way through swelling: a pristine core in a reacted shell
    assert {1, 2} <= set(np.unique(mid))


def test_stepwise_particle_swelling():
    p = _particle(
        onset_s=2.0,
        swelling_rate_nm_s=6.0,
        width_expansion=0.45,
        diameter0_nm=40.0,
        n_steps=3,
        step_pause_s=4.0,
    )  # 3 steps of 6 nm, each rising for 1 s
    assert p.diameter_nm(2.0) == 40.0
    assert p.diameter_nm(3.0) == pytest.approx(46.0)
    assert p.diameter_nm(5.0) == pytest.approx(46.0)  # pausing
    assert p.diameter_nm(7.5) == pytest.approx(49.0)  # half-way up the second step
    assert p.diameter_nm(12.0) == pytest.approx(52.0)  # end of the second pause
    assert p.diameter_nm(13.0) == pytest.approx(58.0)
    assert p.plateau_s == pytest.approx(2.0 + 3 * 1.0 + 2 * 4.0)
    s = image_series(2, (128, 128), objects=[p], rng=9)
    row = s.tracks.iloc[0]
    assert row.n_steps == 3 and row.step_rate_nm_s == 6.0
    assert row.swelling_rate_nm_s == pytest.approx(18.0 / 11.0)  # mean slope over the period


@pytest.mark.parametrize("nm_per_px", [1.0, 2.5])
def test_mask_diameter_agrees_with_true_width(nm_per_px):
    objs = [
        _particle(track_id=1, center_nm=(80.2, 90.6), diameter0_nm=60.0, edge_roughness=0.02),
        _particle(
            track_id=2,
            center_nm=(200.7, 170.1),
            diameter0_nm=25.0,
            onset_s=1.0,
            swelling_rate_nm_s=10.0,
            width_expansion=0.4,
            n_steps=2,
            step_pause_s=2.0,
        ),
    ]
    n = int(260 / nm_per_px)
    s = image_series(24, (n, n), objects=objs, nm_per_px=nm_per_px, fps=2.0, rng=10)
    measured = 2 * np.sqrt(s.objects.area_nm2 / np.pi)
    assert np.abs(measured - s.objects.width_nm).max() < 1.5 * nm_per_px
    np.testing.assert_allclose(
        s.objects.x_nm, np.where(s.objects.track_id == 1, 80.2, 200.7), atol=0.5 * nm_per_px
    )


def test_touching_particles_split_between_instances():
    a = _particle(track_id=1, center_nm=(50.0, 64.0), diameter0_nm=40.0, edge_roughness=0.0)
    b = _particle(track_id=2, center_nm=(93.0, 64.0), diameter0_nm=40.0, edge_roughness=0.0)
    s = image_series(30, (128, 128), objects=[a, b], rng=11)
    last = s.instances[-1]
    rows, cols = np.indices(last.shape)
    for spec in (a, b):  # every pixel lies inside its own (swollen) disc
        r = np.hypot(cols - spec.center_nm[0], rows - spec.center_nm[1])[last == spec.track_id]
        assert r.max() < spec.diameter1_nm / 2
    # they touch: a pixel of one has a 4-neighbour of the other
    assert np.any((last[:, :-1] == 1) & (last[:, 1:] == 2))
    assert not np.any((s.instances[0][:, :-1] == 1) & (s.instances[0][:, 1:] == 2))


# ---------------------------------------------------------------------------------- wires


def _steps_reference(t, onset, v, lengths, pauses):
    """Stop-and-go front written out segment by segment."""
    x, start = 0.0, onset
    for i, length in enumerate(lengths):
        dur = length / v
        if t <= start:
            return x
        if t < start + dur:
            return x + v * (t - start)
        x += length
        start += dur + (pauses[i] if i < len(pauses) else 0.0)
    return x


@pytest.mark.parametrize("law", ["linear", "sqrt", "steps"])
def test_front_position_follows_the_rate_law(law):
    w = _wire(
        rate_law=law,
        onset_s=2.0,
        front_velocity_nm_s=10.0,
        front_k_nm_per_sqrt_s=25.0,
        step_lengths_nm=(30.0, 40.0, 50.0),
        step_pauses_s=(3.0, 2.0),
        length0_nm=100.0,
    )
    s = image_series(50, (64, 192), objects=[w], fps=2.0, rng=12)
    t = s.fronts.time_s.to_numpy()
    dt = np.maximum(t - 2.0, 0.0)
    if law == "linear":
        expected = 10.0 * dt
    elif law == "sqrt":
        expected = 25.0 * np.sqrt(dt)
    else:
        expected = np.array([_steps_reference(ti, 2.0, 10.0, [30, 40, 30], [3, 2]) for ti in t])
    np.testing.assert_allclose(s.fronts.front_position_nm, np.minimum(expected, 100.0), atol=1e-9)
    row = s.tracks.iloc[0]
    assert row.rate_law == law
    if law == "linear":
        assert row.front_velocity_nm_s == 10.0 and row.front_exponent_n == 1.0
        assert row.front_end_s == pytest.approx(12.0)
    elif law == "sqrt":
        assert row.front_exponent_n == 0.5 and math.isnan(row.front_velocity_nm_s)
        assert row.diffusion_coefficient_nm2_s == pytest.approx(25.0**2 / 2)
        x, tt = s.fronts.front_position_nm.to_numpy()[10], t[10]  # D = x²/(2t) from onset
        assert x**2 / (2 * (tt - 2.0)) == pytest.approx(row.diffusion_coefficient_nm2_s)
    else:
        assert row.n_steps == 3 and math.isnan(row.front_exponent_n)
        assert row.front_velocity_nm_s == pytest.approx(100.0 / (3 + 3 + 4 + 2 + 3))


def test_reacted_pixels_lie_behind_the_front_and_swell():
    w = _wire(
        front_velocity_nm_s=8.0,
        width_expansion=0.3,
        swelling_rate_nm_s=3.0,
        length_expansion=0.05,
        edge_roughness=0.0,
    )
    s = image_series(40, (96, 192), objects=[w], drift_nm_per_s=(0.7, -0.3), rng=13)
    for frame in range(0, 40, 3):
        front = s.fronts.front_position_nm[frame]
        axial = _axial(s, w, frame)
        wire = s.instances[frame] == 1
        cls = s.classes[frame]
        assert np.all(axial[wire & (cls == 2)] < front)
        assert np.all(axial[wire & (cls == 1)] >= front)
        if front > 3:
            assert np.any(wire & (cls == 2))
    # behind the front the wire is wider: count pixels across the wire near the contact end
    last = s.objects.iloc[-1]
    assert last.width_nm == pytest.approx(39.0)
    assert last.length_nm == pytest.approx(
        150.0 + s.fronts.front_position_nm.iloc[-1] * 0.05 / 1.05
    )
    axial = _axial(s, w, 39)
    near = (axial > 5) & (axial < 6)
    assert np.count_nonzero((s.instances[39] == 1) & near) == pytest.approx(39, abs=2)
    assert np.count_nonzero((s.instances[0] == 1) & near) == pytest.approx(30, abs=2)
    row = s.tracks.iloc[0]
    assert row.volume_expansion_pct == pytest.approx(100 * (1.3**2 * 1.05 - 1))


def test_reacted_wire_is_lighter_than_pristine_wire():
    w = _wire(front_velocity_nm_s=6.0, onset_s=0.0, length0_nm=150.0)
    s = image_series(20, (96, 192), objects=[w], dose_e_per_px=100.0, rng=14)
    f, c = s.frames[-1], s.classes[-1]
    assert f[c == 2].mean() > 1.1 * f[c == 1].mean()


def test_na_source_is_background_and_dark():
    w = _wire(contact_nm=(30.0, 64.0), na_source_radius_nm=50.0)
    s = image_series(3, (128, 160), objects=[w], dose_e_per_px=50.0, rng=15)
    rows, cols = np.indices(s.frames.shape[1:])
    blob = np.hypot(cols - (30.0 - 50.0), rows - 64.0) < 0.7 * 50.0
    assert blob.any()
    assert not s.classes[:, blob].any() and not s.instances[:, blob].any()
    assert s.params["na_sources"][0]["center_nm"] == [-20.0, 64.0]
    free = (cols > 120) & ((rows < 30) | (rows > 100))
    assert s.frames[:, blob].mean() < 0.5 * s.frames[:, free].mean()


# ---------------------------------------------------------------------------------- drift


def test_masks_drift_exactly_with_the_true_drift():
    static = _particle(center_nm=(40.3, 45.6), diameter0_nm=30.0, width_expansion=0.0)
    jumps = [(4.0, 10.0, -6.0)]
    s = image_series(
        8, (96, 96), objects=[static], fps=1.0, drift_nm_per_s=(2.0, 1.0), drift_jumps=jumps, rng=16
    )
    drift = drift_trajectory(s.time_s, (2.0, 1.0), jumps)
    np.testing.assert_allclose(s.frame_table[["drift_x_nm", "drift_y_nm"]], drift)
    first = s.instances[0]
    for t in range(1, 8):
        dx, dy = drift[t].astype(int)
        expected = np.zeros_like(first)
        expected[max(dy, 0) : 96 + min(dy, 0), max(dx, 0) : 96 + min(dx, 0)] = first[
            max(-dy, 0) : 96 - max(dy, 0), max(-dx, 0) : 96 - max(dx, 0)
        ]
        np.testing.assert_array_equal(s.instances[t], expected)
    # drift-corrected centroids stay put
    np.testing.assert_allclose(s.objects.x_nm, 40.3, atol=0.3)
    np.testing.assert_allclose(s.objects.y_nm, 45.6, atol=0.3)
    # and the image moves with the mask: the particle stays dark where its mask is
    for t in (0, 7):
        assert (
            s.frames[t][s.instances[t] == 1].mean() < 0.9 * s.frames[t][s.instances[t] == 0].mean()
        )


def test_objects_leaving_the_field_count_only_the_visible_part():
    p = _particle(center_nm=(40.0, 40.0), diameter0_nm=40.0, width_expansion=0.0)
    s = image_series(
        3,
        (80, 80),
        objects=[p],
        fps=1.0,
        drift_jumps=[(1.0, -40.0, 0.0), (2.0, -40.0, 0.0)],
        rng=17,
    )
    frac = s.objects.set_index("frame").in_view_fraction
    assert frac[0] == 1.0
    assert 0.4 < frac[1] < 0.6
    assert 2 not in frac.index  # entirely out of view: no row
    assert list(s.frame_table.n_objects) == [1, 1, 0]
    assert s.objects.area_nm2.iloc[1] == pytest.approx(np.count_nonzero(s.instances[1]))


# ---------------------------------------------------------------------------------- random scenes


@pytest.mark.parametrize("scene", ["particles", "wire", "mixed"])
def test_random_scenes_are_realistic_and_inside_the_recording(scene):
    duration, shape, nm = 29.5, (256, 256), 1.0
    for seed in range(6):
        specs = random_scene(scene, shape, nm, duration, rng=seed)
        assert specs and [s.track_id for s in specs] == list(range(1, len(specs) + 1))
        discs = []
        for spec in specs:
            if isinstance(spec, ParticleSpec):
                assert 8.0 <= spec.diameter0_nm <= 120.0
                assert 0.10 <= spec.width_expansion <= 0.40
                assert spec.onset_s > 0 and spec.plateau_s < duration
                r1 = spec.diameter1_nm / 2
                assert r1 <= spec.center_nm[0] <= 255 - r1 and r1 <= spec.center_nm[1] <= 255 - r1
                discs.append((np.array(spec.center_nm), spec.diameter0_nm / 2))
            else:
                assert 10.0 <= spec.width0_nm <= 80.0
                assert spec.front_position_nm(duration) >= 0.6 * spec.max_front_nm
                assert spec.front_position_nm(duration) < spec.max_front_nm
                far = np.array(spec.contact_nm) + np.array(spec.axis) * spec.max_front_nm
                assert np.all((far > 0) & (far < 255))
                # the Na source extends beyond the field
                bx, by = spec.na_center_nm
                r = spec.na_radius_nm
                assert bx - r < 0 or by - r < 0 or bx + r > 255 or by + r > 255
        for i in range(len(discs)):  # not overlapping at the start
            for j in range(i):
                assert np.hypot(*(discs[i][0] - discs[j][0])) > discs[i][1] + discs[j][1]
    if scene == "particles":  # one pair is placed to touch once swollen
        specs = random_scene(scene, shape, nm, duration, rng=0)
        a, b = specs[0], specs[1]
        gap = np.hypot(*np.subtract(a.center_nm, b.center_nm))
        assert gap < (a.diameter1_nm + b.diameter1_nm) / 2


def test_default_session_shows_swelling_and_a_moving_front():
    s = image_series(60, (128, 128), scene="mixed", rng=18)
    assert (s.objects.groupby("track_id").in_view_fraction.first() == 1.0).all()
    wire = s.tracks[s.tracks.kind == "wire"].iloc[0]
    front = s.fronts.front_position_nm
    assert front.iloc[0] == 0.0 and front.iloc[-1] > 0.6 * wire.length0_nm
    parts = s.objects[s.objects.kind == "particle"].groupby("track_id")
    assert (parts.width_nm.last() > 1.08 * parts.width_nm.first()).all()
    assert (parts.reacted_fraction.last() > 0.99).all()
