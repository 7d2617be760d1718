"""Tracking stage: measurement from labels, drift registration, linking (against exact truth)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tem_operando import schema
from tem_operando.synth import image_series
from tem_operando.synth.images import ParticleSpec
from tem_operando.track import (default_search_range_nm, estimate_drift, frames_table, link_objects,
                                measure_objects, objects_table)


def degrade(instances: np.ndarray, rng, *, miss_frames=(), p_edge=0.5) -> np.ndarray:
    """Realistic segmentation errors: random 1-px erosion/dilation per object and frame, and
    whole frames where one object is missed."""
    from scipy import ndimage

    out = instances.copy()
    for k in range(out.shape[0]):
        lab = out[k]
        for v in np.unique(lab)[1:]:
            m = lab == v
            r = rng.random()
            if r < p_edge / 2:
                lab[m & ~ndimage.binary_erosion(m)] = 0
            elif r < p_edge:
                grow = ndimage.binary_dilation(m) & (lab == 0)
                lab[grow] = v
        if k in miss_frames:
            ids = np.unique(lab)[1:]
            if ids.size:
                lab[lab == ids[0]] = 0
    return out


def classical_na_merge(s, sigma_px: float = 2.5) -> np.ndarray:
    """Instances as a classical segmentation gets them at a wire's contact: the dark Na source
    blob (found as a simple segmentation would — Gaussian smoothing and the darkest class of a
    3-class Otsu threshold, objects dark in bright-field) merged into the wire it touches."""
    from scipy import ndimage
    from skimage.filters import threshold_multiotsu

    out = s.instances.copy()
    wires = [o["track_id"] for o in s.params["objects"] if o["kind"] == "wire"]
    sign = -1.0 if s.params["contrast"] == "bright-field" else 1.0
    for k in range(out.shape[0]):
        g = ndimage.gaussian_filter(sign * s.frames[k].astype(float), sigma_px)
        dark = g > threshold_multiotsu(g, 3)[0]  # the two darker classes (objects dark in BF)
        lab, n = ndimage.label(dark & (out[k] == 0))
        for tid in wires:
            touch = np.unique(lab[ndimage.binary_dilation(out[k] == tid, iterations=2)])
            blob = np.isin(lab, touch[touch > 0])
            out[k][blob] = tid
    return out


def test_measure_disc_and_tilted_wire():
    yy, xx = np.mgrid[:128, :128]
    lab = np.zeros((128, 128), np.uint32)
    lab[(yy - 40) ** 2 + (xx - 40) ** 2 < 15**2] = 1
    u = np.array([np.cos(0.5), np.sin(0.5)])
    s = (xx - 30) * u[0] + (yy - 70) * u[1]
    n = -(xx - 30) * u[1] + (yy - 70) * u[0]
    lab[(s >= 0) & (s < 80) & (np.abs(n) < 6)] = 2
    cls = (lab > 0).astype(np.uint8)
    cls[(lab == 2) & (s < 25)] = 2
    df = measure_objects(cls, lab, frame=3, time_s=1.5, nm_per_px=0.5)
    assert list(df["kind"]) == ["particle", "wire"]
    p, w = df.iloc[0], df.iloc[1]
    assert p["width_nm"] == pytest.approx(15.0, rel=0.02)
    assert w["width_pristine_nm"] == pytest.approx(6.0, rel=0.05)
    assert w["length_nm"] == pytest.approx(40.0, rel=0.03)
    assert w["reacted_length_nm"] == pytest.approx(12.5, abs=0.6)
    assert (df["frame"] == 3).all() and (df["time_s"] == 1.5).all()


def test_empty_and_one_frame_recordings():
    empty = measure_objects(np.zeros((3, 32, 32), np.uint8), np.zeros((3, 32, 32), np.uint32))
    assert empty.empty
    linked = link_objects(empty)
    assert "track_id" in linked and linked.empty
    assert objects_table(linked).columns.tolist() == schema.columns("objects")
    ft = frames_table(np.arange(3), np.arange(3) / 2, np.zeros((3, 2)), linked)
    assert ft["n_objects"].tolist() == [0, 0, 0]
    s = image_series(1, (96, 96), scene="particles", rng=2)
    one = link_objects(measure_objects(s.classes, s.instances, 0, s.time_s, s.nm_per_px))
    assert len(one) == s.objects.shape[0] and one["track_id"].nunique() == len(one)
    assert estimate_drift(s.frames).tolist() == [[0.0, 0.0]]


def _no_break_no_swap(linked: pd.DataFrame) -> None:
    # every true object (instance label == true id) is exactly one track and vice versa
    pairs = linked.groupby("track_id")["label"].nunique()
    assert (pairs == 1).all(), "a track swapped between objects"
    per_label = linked.groupby("label")["track_id"].nunique()
    assert (per_label == 1).all(), "a track was broken"


@pytest.mark.parametrize("scene,seed", [("particles", 0), ("particles", 3), ("mixed", 1), ("mixed", 4)])
def test_no_broken_or_swapped_tracks(scene, seed):
    s = image_series(40, (160, 160), scene=scene, rng=seed, drift_nm_per_s=(0.8, -0.5))
    dr = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy()
    linked = link_objects(measure_objects(s.classes, s.instances, 0, s.time_s, s.nm_per_px, dr))
    _no_break_no_swap(linked)
    # degraded masks with boundary noise and missed detections keep their ids (memory)
    rng = np.random.default_rng(seed)
    bad = degrade(s.instances, rng, miss_frames=(10, 11, 25))
    linked = link_objects(measure_objects(s.classes, bad, 0, s.time_s, s.nm_per_px, dr))
    _no_break_no_swap(linked)


def test_object_leaving_field_of_view():
    p = [ParticleSpec(1, (60.0, 60.0), 30.0, onset_s=100.0), ParticleSpec(2, (110.0, 60.0), 24.0, onset_s=100.0)]
    s = image_series(30, (128, 128), objects=p, rng=0, drift_nm_per_s=(4.0, 0.0))
    dr = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy()
    ob = measure_objects(s.classes, s.instances, 0, s.time_s, s.nm_per_px, dr)
    linked = link_objects(ob)
    _no_break_no_swap(linked)
    gone = linked[linked["label"] == 2]["frame"].max()
    assert gone < 29  # particle 2 left the field
    # while fully in view its drift-corrected centroid stays put
    inside = linked[(linked["label"] == 1) & (linked["frame"] < 15)]
    assert np.ptp(inside["x_nm"]) < 1.0


def test_drift_huge_jump():
    s = image_series(16, (160, 160), scene="particles", rng=5, dose_e_per_px=50,
                     drift_nm_per_s=(0.5, 0.3), drift_jumps=[(3.0, 40.0, -30.0)])
    d = estimate_drift(s.frames)
    true = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy() / s.nm_per_px
    assert np.abs(d - true).max() < 3.0
    # chunked registration continues from the previous chunk's state
    d1, st = estimate_drift(s.frames[:8], return_state=True)
    d2 = estimate_drift(s.frames[8:], state=st)
    assert np.abs(np.vstack([d1, d2]) - true).max() < 3.0


def _drift_errors_px(s, **kw) -> np.ndarray:
    img = s.frame_table["mode"].to_numpy() == "image"
    true = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy(float)[img] / s.nm_per_px
    return np.hypot(*(estimate_drift(s.frames[img], **kw) - (true - true[0])).T)


def test_drift_not_pulled_by_particles_swelling_in_place():
    """No drift, no noise worth the name: the particles' own swelling must not read as drift (a Hann
    window and one registration gave 1.5 px here, towards the frame's centre; a Tukey window without
    the second, masked registration 0.36 px)."""
    s = image_series(60, (160, 160), scene="particles", rng=2, dose_e_per_px=1e6)
    assert np.abs(s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy()).max() == 0
    assert s.tracks["swelling_rate_nm_s"].gt(0).sum() >= 3  # they do swell
    err = _drift_errors_px(s)
    assert err.max() < 0.25, err.max()


@pytest.mark.parametrize("dose", [5.0, 20.0])
def test_drift_accuracy_at_low_dose(dose):
    """Random slow drift, particles and a wire swelling and reacting: RMS error < 2.5 px at 5 e⁻/px
    (2.0 px; a Hann window and one band: 7.4 px, wrong peaks tens of px off), < 1 px at 20 e⁻/px
    (0.7 px; before: 1.4 px)."""
    errs = np.concatenate([_drift_errors_px(image_series(60, (160, 160), scene=sc, rng=seed, dose_e_per_px=dose,
                                                         drift_nm_per_s=None))
                           for seed in (1, 4) for sc in ("particles", "mixed")])
    rms = float(np.sqrt(np.mean(errs ** 2)))
    assert rms < (2.5 if dose == 5 else 1.0), rms


@pytest.mark.parametrize("bad", ["noise", "blank", "nan"])
def test_drift_survives_a_frame_with_nothing_to_register(bad):
    """A frame of noise alone, a blank one or one of NaN (beam blanked, a camera glitch) keeps the last
    drift; the frames after it are registered as before (a noise frame made key frame shifted all of them
    by ~50 px). As the first frame, it holds the drift at 0 until a third frame matches nothing either
    and becomes the key: the drift is then right relative to that frame."""
    s = image_series(40, (160, 160), scene="mixed", rng=3, dose_e_per_px=20, drift_nm_per_s=(0.5, -0.3))
    frames = s.frames.copy()
    frames[20] = {"noise": np.random.default_rng(0).poisson(frames.mean(), frames.shape[1:]),
                  "blank": 0.0, "nan": np.nan}[bad]
    true = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy() / s.nm_per_px
    err = np.hypot(*(estimate_drift(frames) - true).T)
    assert np.isfinite(err).all() and err.max() < 2.5, err.round(1)
    # a recording that starts with such a frame: after 3 frames that match nothing the chain restarts
    frames[0], frames[20] = frames[20], s.frames[20]
    d = estimate_drift(frames)
    assert (d[:4] == 0).all()
    err = np.hypot(*((d - d[3]) - (true - true[3])).T)
    assert np.isfinite(err).all() and err[3:].max() < 2.5, err.round(1)


def test_fast_linker_equals_trackpy():
    """The default linker gives trackpy's Crocker–Grier tracks, also in ambiguous crowds."""
    rng = np.random.default_rng(0)
    n, rows = 120, []
    p = rng.uniform(0, 600, (n, 2))
    for t in range(20):
        p = p + rng.normal(0, 3, p.shape)
        for k in np.flatnonzero(rng.random(n) > 0.1):  # 10 % missed detections
            rows.append(dict(frame=t, x_nm=p[k, 0], y_nm=p[k, 1], area_nm2=400 + rng.normal(0, 10), width_nm=20.0))
    ob = pd.DataFrame(rows).sample(frac=1, random_state=1).reset_index(drop=True)
    for sr in (8.0, 20.0):
        a = link_objects(ob, sr, memory=3)
        b = link_objects(ob, sr, memory=3, method="trackpy")
        assert a["track_id"].tolist() == b["track_id"].tolist()
        assert a[["frame", "x_nm"]].equals(b[["frame", "x_nm"]])
    # with wires among them, the Euclidean fast linker is still trackpy's
    ob["kind"] = np.where(np.arange(len(ob)) % 3 == 0, "wire", "particle")
    ob["angle_deg"] = 30.0
    a = link_objects(ob, 8.0, memory=3, wire_along_weight=1.0)
    assert a["track_id"].tolist() == link_objects(ob, 8.0, memory=3, method="trackpy")["track_id"].tolist()
    # the wire metric gives the same tracks on the dense and the k-d tree candidate paths
    import tem_operando.track.link as L

    dense = link_objects(ob, 8.0, memory=3)["track_id"].tolist()
    old_max, L._DENSE_MAX = L._DENSE_MAX, 0
    try:
        assert link_objects(ob, 8.0, memory=3)["track_id"].tolist() == dense
    finally:
        L._DENSE_MAX = old_max
    with pytest.raises(ValueError, match="Euclidean"):
        link_objects(ob, 8.0, method="trackpy", wire_along_weight=0.5)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="wire_along_weight"):
            link_objects(ob, 8.0, wire_along_weight=bad)


def test_a_wire_whose_centroid_slides_along_its_axis_keeps_one_track():
    """A wire outlined short at its far end in every other frame (its centroid slides 15 nm along its
    axis, which turns 1° per frame; the search range is 4.2 nm) and missed in one stays one track;
    a particle that turns up on its axis in the frame it is missed, well inside its reach along the
    axis, is not taken into it (particles are reached by the Euclidean distance), and a particle
    beside the wire keeps its own track."""
    c0 = np.array([200.0, 200.0])
    rows = []
    for t in range(30):
        ang = 30.0 + t
        u = np.array([np.cos(np.radians(ang)), np.sin(np.radians(ang))])
        short = t % 2 == 1
        length = 70.0 if short else 100.0
        c = c0 + (-15.0 if short else 0.0) * u  # the far (+u) end outlined short
        if t != 10:
            rows.append(dict(frame=t, x_nm=c[0], y_nm=c[1], area_nm2=12.0 * length, width_nm=12.0,
                             length_nm=length, kind="wire", angle_deg=ang))
        else:  # missed; a particle turns up on its axis, 20 nm from its centroid
            p = c0 + 20.0 * u
            rows.append(dict(frame=t, x_nm=p[0], y_nm=p[1], area_nm2=314.0, width_nm=20.0, length_nm=20.0,
                             kind="particle", angle_deg=ang))
        side = c0 + np.array([-u[1], u[0]]) * 40.0
        rows.append(dict(frame=t, x_nm=side[0], y_nm=side[1], area_nm2=314.0, width_nm=20.0, length_nm=20.0,
                         kind="particle", angle_deg=0.0))
    ob = pd.DataFrame(rows)
    assert default_search_range_nm(ob) == pytest.approx(4.2)
    linked = link_objects(ob, size_weight=0.0)  # no size coordinate: the distance alone must keep them apart
    assert linked.query("kind == 'wire'")["track_id"].nunique() == 1
    assert linked.groupby("track_id")["kind"].nunique().max() == 1  # no track mixes a wire and a particle
    assert linked.query("kind == 'particle'")["track_id"].nunique() == 2  # beside it, and the one on its axis
    # with the Euclidean distance the long and the short outlines make two alternating tracks
    euclid = link_objects(ob, size_weight=0.0, wire_along_weight=1.0)
    assert euclid.query("kind == 'wire'")["track_id"].nunique() == 2


def test_a_wire_track_does_not_take_over_a_collinear_wire():
    """Collinear wires (pieces after a fracture, wires end to end): a track reaches along its axis only
    as far as its own wire extends; a new piece beyond it, or one appearing after the wire vanished,
    gets its own track."""
    th = np.radians(30.0)
    u = np.array([np.cos(th), np.sin(th)])
    c0 = np.array([300.0, 300.0])

    def wire(t, c, length, who):
        return dict(frame=t, x_nm=c[0], y_nm=c[1], area_nm2=10.0 * length, width_nm=10.0, length_nm=length,
                    kind="wire", angle_deg=30.0, who=who)

    rows = []
    for t in range(12):
        if not 5 <= t <= 7:  # A missed while a collinear piece B turns up 40 nm along its axis
            rows.append(wire(t, c0, 30.0, "A"))
        if t >= 6:
            rows.append(wire(t, c0 + 40.0 * u, 30.0, "B"))
        if t < 4:  # C vanishes; D appears 35 nm along its axis two frames later
            rows.append(wire(t, c0 + np.array([0.0, 200.0]), 60.0, "C"))
        if t >= 6:
            rows.append(wire(t, c0 + np.array([0.0, 200.0]) + 35.0 * u, 60.0, "D"))
    linked = link_objects(pd.DataFrame(rows), search_range_nm=7.0)
    ids = linked.groupby("who")["track_id"].agg(lambda v: set(v))
    assert all(len(v) == 1 for v in ids) and len(set.union(*ids)) == 4, ids.to_dict()
