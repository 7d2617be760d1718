"""Kinetics against exact ground truth: swelling rates, expansions, fronts, rate laws, CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tem_operando import schema
from tem_operando.kinetics import analyze_kinetics, fracture_events, population_stats, rate_law_fit
from tem_operando.synth import image_series
from tem_operando.synth.images import ParticleSpec, WireSpec
from tem_operando.track import link_objects, measure_objects


def run(s, instances=None):
    dr = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy()
    inst = s.instances if instances is None else instances
    ob = link_objects(measure_objects(s.classes, inst, 0, s.time_s, s.nm_per_px, dr))
    tracks, fronts = analyze_kinetics(ob, nm_per_px=s.nm_per_px)
    label = ob.groupby("track_id")["label"].agg(lambda v: v.value_counts().index[0])
    tracks["true_id"] = tracks["track_id"].map(label)
    m = tracks.merge(s.tracks, left_on="true_id", right_on="track_id", suffixes=("", "_t"))
    return m, fronts


def _degrade(instances, seed):
    from tests.test_track import degrade

    return degrade(instances, np.random.default_rng(seed), miss_frames=(7, 19), p_edge=0.3)


def particle_session(rate, seed, dose, n_steps=1):
    rng = np.random.default_rng(seed)
    d0 = rng.uniform(50, 70)
    e = rng.uniform(0.15, 0.35)
    dur = d0 * e / rate * (1.6 if n_steps > 1 else 1)
    fps = 16 / dur  # ~16 frames over the swelling period, wherever the rate
    specs = [ParticleSpec(1, (48.0, 50.0), d0, onset_s=0.3 * dur, swelling_rate_nm_s=rate,
                          width_expansion=e, n_steps=n_steps, step_pause_s=0.25 * dur),
             ParticleSpec(2, (48.0 + d0 * (1 + e) / 2 + 22, 112.0), 30.0, onset_s=0.5 * dur,
                          swelling_rate_nm_s=rate / 2, width_expansion=0.2)]
    return image_series(int(2.6 * 16), (160, 160), objects=specs, fps=fps, rng=seed, dose_e_per_px=dose)


def check_particles(m, stats):
    for _, r in m.iterrows():
        stats["rate"].append(abs(r.swelling_rate_nm_s / r.swelling_rate_nm_s_t - 1))
        stats["cover"].append(abs(r.swelling_rate_nm_s - r.swelling_rate_nm_s_t) <= r.swelling_rate_ci95_nm_s)
        for q in ("width", "length", "area", "volume"):
            stats["exp"].append(abs(r[f"{q}_expansion_pct"] - r[f"{q}_expansion_pct_t"]))
        stats["steps"].append(r.n_steps == r.n_steps_t)


@pytest.mark.parametrize("masks", ["truth", "degraded"])
def test_swelling_rates_and_expansions(masks):
    stats = {"rate": [], "cover": [], "exp": [], "steps": []}
    for i, (rate, dose) in enumerate([(1.0, 5), (8.0, 100), (30.0, 20), (3.0, 50)]):
        s = particle_session(rate, i, dose)
        m, _ = run(s, None if masks == "truth" else _degrade(s.instances, i))
        assert len(m) == 2
        check_particles(m, stats)
    print(masks, np.round(stats["rate"], 3), np.round(stats["exp"], 2), stats["cover"])
    if masks == "truth":
        assert max(stats["rate"]) < 0.05, stats["rate"]
        assert max(stats["exp"]) < 3.0, stats["exp"]
        assert all(stats["steps"])
        assert np.mean(stats["cover"]) >= 0.9, stats["cover"]
    else:  # ±1 px edges in 30 % of frames and missed objects: the CI widens, it must still cover
        assert np.median(stats["rate"]) < 0.1, stats["rate"]
        assert np.median(stats["exp"]) < 3.0, stats["exp"]
    assert np.mean(stats["cover"]) >= 0.75  # 8 intervals: ≥ 90 % over the slow sweep


def test_stepwise_swelling():
    s = particle_session(6.0, 7, 20, n_steps=3)
    m, _ = run(s)
    r = m[m.true_id == 1].iloc[0]
    assert r.n_steps == 3
    assert r.swelling_rate_nm_s == pytest.approx(r.swelling_rate_nm_s_t, rel=0.05)


def wire_session(law, seed, dose=20):
    rng = np.random.default_rng(seed)
    kw = dict(rate_law=law, front_velocity_nm_s=rng.uniform(2, 6), width_expansion=rng.uniform(0.15, 0.3),
              length_expansion=0.05, swelling_rate_nm_s=3.0, na_source_radius_nm=40.0)
    if law == "sqrt":
        kw["front_k_nm_per_sqrt_s"] = rng.uniform(18, 26)
    n_frames = 50
    if law == "steps":
        # three moves and two pauses, then the front stops (105 of 131 nm) a few s before the end:
        # the whole schedule is inside the recording (a move after the last frame is unobservable)
        kw.update(step_lengths_nm=(35.0, 30.0, 40.0), step_pauses_s=(4.0, 5.0))
        n_frames = max(n_frames, int(np.ceil(2.0 * (2.0 + 105.0 / kw["front_velocity_nm_s"] + 9.0 + 4.0))))
    w = WireSpec(1, (20.0, 30.0 + 10 * seed % 40), rng.uniform(-15, 25), 125.0, 20.0, onset_s=2.0, **kw)
    p = ParticleSpec(2, (90.0, 135.0), 28.0, onset_s=5.0, swelling_rate_nm_s=2.0)
    return image_series(n_frames, (160, 160), objects=[w, p], fps=2.0, rng=seed, dose_e_per_px=dose)


def test_fronts_rate_law_velocity_ci():
    chosen, cover, err, exp_err = [], [], [], []
    for law in ("linear", "sqrt", "steps"):
        for seed in (0, 1):
            s = wire_session(law, seed)
            m, fronts = run(s)
            w = m[m.kind == "wire"].iloc[0]
            chosen.append(w.rate_law == law)
            assert set(fronts.columns) == set(schema.columns("fronts"))
            if law == "steps":
                # mean velocity including pauses, from the onset to the end of the last move
                err.append(abs(w.front_velocity_nm_s / w.front_velocity_nm_s_t - 1))
                cover.append(abs(w.front_velocity_nm_s - w.front_velocity_nm_s_t) <= w.front_velocity_ci95_nm_s)
                assert w.n_steps == w.n_steps_t == 3
            if law == "sqrt":
                assert w.front_exponent_n == pytest.approx(0.5, abs=0.1)
                err.append(abs(w.diffusion_coefficient_nm2_s / w.diffusion_coefficient_nm2_s_t - 1))
            elif law == "linear":
                err.append(abs(w.front_velocity_nm_s / w.front_velocity_nm_s_t - 1))
                cover.append(abs(w.front_velocity_nm_s - w.front_velocity_nm_s_t) <= w.front_velocity_ci95_nm_s)
            exp_err.append(max(abs(w[f"{q}_expansion_pct"] - w[f"{q}_expansion_pct_t"])
                               for q in ("width", "length", "area", "volume")))
    assert all(chosen), chosen
    assert max(err) < 0.05, err
    # the seed-0 wire runs out of the field at its far end: clipped cross-sections are left out
    assert max(exp_err) < 3.0, exp_err
    assert np.mean(cover) >= 0.9, cover


def test_a_front_missed_in_some_frames_leaves_no_row_and_no_mark_on_the_fit():
    """A wire whose reacted part is not found in a few frames after the front has left the contact
    end (a low-dose frame, a wire outlined in pieces): those frames get no fronts row — not a front
    back at 0 — and the law and velocity are those of the other frames."""
    s = wire_session("linear", 1)
    dr = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy()
    classes = s.classes.copy()
    started = np.flatnonzero([((c == 2) & (i == 1)).any() for c, i in zip(s.classes, s.instances)])
    missed = started[[5, 12, 13, 20]]
    for k in missed:
        classes[k][(s.instances[k] == 1) & (classes[k] == 2)] = 1  # outlined, called pristine
    ob = link_objects(measure_objects(classes, s.instances, 0, s.time_s, s.nm_per_px, dr))
    tracks, fronts = analyze_kinetics(ob, nm_per_px=s.nm_per_px)
    wid = int(ob.loc[ob.kind == "wire", "track_id"].iloc[0])
    f = fronts[fronts.track_id == wid]
    assert not set(missed) & set(f.frame)
    assert set(f.frame) == set(range(s.n_frames)) - set(missed)
    assert (f.set_index("frame").loc[: started[0] - 1, "front_position_nm"] == 0).all()  # before: at 0
    w = tracks.set_index("track_id").loc[wid]
    truth = s.tracks.set_index("track_id").loc[1]
    assert w.rate_law == "linear"
    assert w.front_velocity_nm_s == pytest.approx(truth.front_velocity_nm_s, rel=0.05)
    # a lone spurious detection long before the reaction (a few noisy pixels at the contact) does
    # not turn the zeros after it into misses: they stay, and the onset stays where it is
    classes = s.classes.copy()
    k0 = 0  # the reaction starts at 2 s (frame 4-5)
    wire = np.argwhere(s.instances[k0] == 1)
    classes[k0][tuple(wire[np.argsort(wire[:, 1])[:8]].T)] = 2  # 8 px at the wire's left end
    ob = link_objects(measure_objects(classes, s.instances, 0, s.time_s, s.nm_per_px, dr))
    tracks, fronts = analyze_kinetics(ob, nm_per_px=s.nm_per_px)
    f = fronts[fronts.track_id == wid].set_index("frame")["front_position_nm"]
    assert set(range(k0 + 1, int(started[0]))) <= set(f.index)
    assert (f.loc[k0 + 1: int(started[0]) - 1] == 0).all()
    w = tracks.set_index("track_id").loc[wid]
    assert w.front_onset_s == pytest.approx(2.0, abs=0.75)  # wire_session's onset_s


@pytest.mark.xfail(reason="open: with the Na source merged into the wire (classical segmentation) "
                   "the lump is trimmed but the contact-end width and the length still carry part "
                   "of the blob (front velocity and expansions off by 5-30 %)", strict=False)
def test_fronts_with_na_source_merged_into_the_wire():
    from tests.test_track import classical_na_merge

    for law, seed in (("linear", 0), ("linear", 1), ("steps", 1)):
        s = wire_session(law, seed)
        m, _ = run(s, classical_na_merge(s))
        w = m[m.true_id == 1].iloc[0]
        assert w.kind == "wire" and w.rate_law == law
        assert w.front_velocity_nm_s == pytest.approx(w.front_velocity_nm_s_t, rel=0.05)
        for q in ("width", "length", "area", "volume"):
            assert abs(w[f"{q}_expansion_pct"] - w[f"{q}_expansion_pct_t"]) < 3.0, q


def test_rate_law_fit_on_exact_curves():
    t = np.arange(60) / 2.0
    for law, x in (("linear", 4.0 * np.maximum(t - 3.1, 0)), ("sqrt", 25 * np.sqrt(np.maximum(t - 3.1, 0)))):
        x = x + np.random.default_rng(0).normal(0, 0.3, t.size) * (x > 0)
        f = rate_law_fit(t, x)
        assert f.law == law
        assert f.t0_s == pytest.approx(3.1, abs=0.3)
    f = rate_law_fit(t, np.zeros_like(t))
    assert f.law == "none" and np.isnan(f.velocity_nm_s)


def test_fracture_and_population_and_empty():
    rows = []
    for k in range(6):
        if k < 3:
            rows.append(dict(frame=k, track_id=1, x_nm=50.0, y_nm=50.0, area_nm2=1000.0, width_nm=30.0, length_nm=40.0))
        else:
            rows.append(dict(frame=k, track_id=1, x_nm=45.0, y_nm=50.0, area_nm2=600.0, width_nm=25.0, length_nm=25.0))
            rows.append(dict(frame=k, track_id=2, x_nm=62.0, y_nm=50.0, area_nm2=400.0, width_nm=20.0, length_nm=20.0))
    fr = fracture_events(pd.DataFrame(rows))
    assert fr[1] == 3 and np.isnan(fr[2])
    tracks, fronts = analyze_kinetics(link_objects(measure_objects(None, np.zeros((2, 16, 16), np.uint32))))
    assert tracks.empty and fronts.empty
    assert tracks.columns[: len(schema.columns("tracks"))].tolist() == schema.columns("tracks")
    t = pd.DataFrame({"kind": ["particle"] * 3, "swelling_rate_nm_s": [1.0, 2.0, 3.0],
                      **{c: [1.0, 2.0, 3.0] for c in ("width_expansion_pct", "length_expansion_pct",
                                                      "area_expansion_pct", "volume_expansion_pct",
                                                      "front_velocity_nm_s")}})
    ps = population_stats(t).set_index("quantity")
    assert ps.loc["swelling_rate_nm_s", "mean"] == 2.0 and ps.loc["swelling_rate_nm_s", "n"] == 3


def _slow(request):
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("statistical sweep: run with -m slow")


@pytest.mark.slow
def test_sweep_random_scenes(request):
    _slow(request)
    stats = {"rate": [], "cover": [], "exp": [], "steps": []}
    laws, vel, vcover = [], [], []
    for seed in range(20):
        for scene in ("particles", "mixed"):
            s = image_series(60, (160, 160), scene=scene, rng=seed, dose_e_per_px=[5, 20, 100][seed % 3])
            m, _ = run(s)
            check_particles(m[m.kind == "particle"], stats)
            for _, w in m[m.kind == "wire"].iterrows():
                laws.append(w.rate_law == w.rate_law_t)
                if w.rate_law_t != "sqrt":
                    vel.append(abs(w.front_velocity_nm_s / w.front_velocity_nm_s_t - 1))
                    vcover.append(abs(w.front_velocity_nm_s - w.front_velocity_nm_s_t) <= w.front_velocity_ci95_nm_s)
    print(f"\nsweep: particles n={len(stats['rate'])} rate<5%: {np.mean(np.array(stats['rate']) < 0.05):.3f} "
          f"median rate err {np.median(stats['rate']):.4f}; exp<3pp: {np.mean(np.array(stats['exp']) < 3.0):.3f}; "
          f"rate CI cover: {np.mean(stats['cover']):.3f}; steps right: {np.mean(stats['steps']):.3f}")
    print(f"sweep: wires n={len(laws)} law chosen: {np.mean(laws):.3f}; velocity<5%: "
          f"{np.mean(np.array(vel) < 0.05):.3f} (n={len(vel)}); velocity CI cover: {np.mean(vcover):.3f}")
    assert np.mean(np.array(stats["rate"]) < 0.05) >= 0.9
    assert np.mean(np.array(stats["exp"]) < 3.0) >= 0.9
    assert np.mean(stats["cover"]) >= 0.9
    assert np.mean(laws) >= 0.9
    assert np.mean(np.array(vel) < 0.05) >= 0.9 and np.mean(vcover) >= 0.9


def test_plots(tmp_path):
    from tem_operando.report.kinetics_plots import kymograph, plot_front, plot_kymograph, plot_swelling

    s = wire_session("linear", 3)
    dr = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy()
    ob = link_objects(measure_objects(s.classes, s.instances, 0, s.time_s, s.nm_per_px, dr))
    tracks, fronts = analyze_kinetics(ob, nm_per_px=s.nm_per_px)
    w = tracks[tracks.kind == "wire"].iloc[0]
    plot_swelling(ob, tracks.iloc[0]).savefig(tmp_path / "w.png")
    plot_front(fronts, w).savefig(tmp_path / "f.png")
    spec = s.params["objects"][0]
    a = np.asarray(spec["contact_nm"]) / s.nm_per_px
    ang = np.radians(spec["angle_deg"])
    b = a + 100 * np.array([np.cos(ang), np.sin(ang)])
    k = kymograph(s.classes, a, b)
    assert k.shape[0] == s.n_frames and (k[-1] == 2).sum() > (k[0] == 2).sum()
    plot_kymograph(k, s.time_s, s.nm_per_px, fronts, int(w.track_id)).savefig(tmp_path / "k.png")
    assert (tmp_path / "k.png").stat().st_size > 1000


def test_long_series_are_segmented_on_bins_then_refined():
    """A 6,000-frame series (a slow reaction filmed at camera rate): the binned search finds the
    breakpoints and slopes as well as the exact O(n²) one, and the swelling fit recovers the rate."""
    from tem_operando.kinetics import segment_fit, swelling_fit

    rng = np.random.default_rng(3)
    t = np.arange(6000) / 100.0  # s, 100 frames/s
    # flat, two rising steps with a pause, flat: 20 → 26 nm at 0.5 nm/s
    w = np.interp(t, [0, 10, 16, 25, 31, 60], [20, 20, 23, 23, 26, 26]) + rng.normal(0, 0.3, t.size)
    sub = slice(0, 6000, 5)  # exact DP on 1,200 points as the reference
    exact = segment_fit(t[sub], w[sub], max_segments=6, max_points=10**6)
    binned = segment_fit(t[sub], w[sub], max_segments=6, max_points=200)
    truth_bounds, truth_slopes = [0, 200, 320, 500, 620, 1200], [0.0, 0.5, 0.0, 0.5, 0.0]
    for segs in (exact, binned):  # a corner can go either way by ~1 s: both are held to the truth
        assert len(segs) == 5
        assert np.abs(np.array([a for a, *_ in segs] + [1200]) - truth_bounds).max() <= 25
        np.testing.assert_allclose([s for _, _, s, _ in segs], truth_slopes, atol=0.05)
    fit = swelling_fit(t, w, resolution_nm=1.0)
    assert fit["n_steps"] == 2
    assert fit["rate_nm_s"] == pytest.approx(6.0 / 21.0, rel=0.05)  # gain over onset→plateau, pauses included
    assert fit["onset_s"] == pytest.approx(10.0, abs=0.3) and fit["plateau_s"] == pytest.approx(31.0, abs=0.3)


def test_fracture_found_whatever_the_row_order():
    rows = []
    for k in range(6):
        rows.append(dict(frame=k, track_id=1, x_nm=50.0 - 5 * (k >= 3), y_nm=50.0, area_nm2=1000.0 - 400 * (k >= 3),
                         width_nm=30.0, length_nm=40.0))
        if k >= 3:
            rows.append(dict(frame=k, track_id=2, x_nm=62.0, y_nm=50.0, area_nm2=400.0, width_nm=20.0, length_nm=20.0))
    df = pd.DataFrame(rows)
    shuffled = df.sample(frac=1.0, random_state=0)
    assert fracture_events(shuffled).equals(fracture_events(df))
    assert fracture_events(shuffled)[1] == 3


def test_frames_where_a_neighbour_is_merged_in_are_left_out_of_the_swelling_fit():
    """Two touching particles outlined as one in a few frames (a segmentation that misses the seam):
    the merged outline is flagged and left out, so the rate stays right; without the flags it is not."""
    from tem_operando.kinetics.swelling import merged_rows

    specs = [ParticleSpec(1, (50.0, 80.0), 40.0, onset_s=4.0, swelling_rate_nm_s=2.0, width_expansion=0.3),
             ParticleSpec(2, (50.0 + 26 + 16, 80.0), 30.0, onset_s=30.0, swelling_rate_nm_s=1.0, width_expansion=0.2)]
    s = image_series(40, (160, 160), objects=specs, fps=2.0, rng=0, dose_e_per_px=100.0)
    inst = s.instances.copy()
    merged = [14, 15, 17, 18, 19, 22]
    for k in merged:  # particle 2 drawn as part of particle 1
        inst[k][inst[k] == 2] = 1
    m, _ = run(s, inst)
    truth = s.tracks.set_index("track_id")
    r1 = m[m["true_id"] == 1].sort_values("n_frames").iloc[-1]
    assert r1.swelling_rate_nm_s == pytest.approx(truth.loc[1, "swelling_rate_nm_s"], rel=0.05)
    assert r1.width_expansion_pct == pytest.approx(truth.loc[1, "width_expansion_pct"], abs=3)
    assert r1.n_frames >= 40 - len(merged)
    dr = s.frame_table[["drift_x_nm", "drift_y_nm"]].to_numpy()
    ob = link_objects(measure_objects(s.classes, inst, 0, s.time_s, s.nm_per_px, dr))
    flagged = ob[merged_rows(ob).to_numpy()]
    assert sorted(flagged["frame"]) == merged and flagged["label"].eq(1).all()
    # the same outlines fitted with every row: the merged frames pull the rate off
    from tem_operando.kinetics.swelling import swelling_fit

    a = ob[ob["label"] == 1].sort_values("frame")
    assert abs(swelling_fit(a["time_s"], a["width_nm"])["rate_nm_s"] / truth.loc[1, "swelling_rate_nm_s"] - 1) > 0.05
    assert not merged_rows(ob[~ob["frame"].isin(merged)]).any()


def _two_particles(n=60, merged=(), split=(), speck=(), merged_id=1, ghost=None):
    """objects.csv rows of particle 1 (40 -> 52 nm at 2 nm/s from 5 s) and particle 2 (20 nm)
    beside it, 2 frames/s. Frames in ``merged``: one outline of both, on track ``merged_id``;
    in ``split``: particle 1 over-split into two halves (the second half on track 7); in
    ``speck``: a 3-px speck (track 9) beside particle 1 instead of particle 2; at frame
    ``ghost``: a one-frame false object (track 8, a third of particle 1) beside particle 1, whose
    outline swells by that much, by noise, in the next frame."""
    rows = []

    def row(tid, k, area, x, length):
        return dict(track_id=tid, frame=k, time_s=k * 0.5, kind="particle", x_nm=x, y_nm=0.0,
                    area_nm2=area, width_nm=2 * np.sqrt(area / np.pi), length_nm=length)

    for k in range(n):
        t = k * 0.5
        w = 40 + min(max(2.0 * (t - 5), 0), 12)
        a1, a2 = np.pi * w**2 / 4, np.pi * 20**2 / 4
        if k in merged:
            rows.append(row(merged_id, k, a1 + a2, 3.0, w + 20))
            continue
        if ghost is not None and k == ghost:
            rows.append(row(8, k, a1 / 3, -20.0, w / 2))
        if ghost is not None and k == ghost + 1:
            a1 *= 4 / 3
        if k in split:
            rows += [row(1, k, a1 / 2, -w / 5, w), row(7, k, a1 / 2, w / 5, w)]
        else:
            rows.append(row(1, k, a1, 0.0, w))
        rows.append(row(9, k, 3.0, 25.0, 2.0) if k in speck else row(2, k, a2, 32.0, 20.0))
    return pd.DataFrame(rows)


def test_merged_rows_flags_a_merge_on_the_own_track_for_as_long_as_it_lasts_and_nothing_else():
    """The merged outline on particle 1's own track (6 frames, and 30 frames: longer than
    max_gap_frames) is flagged every frame and left out of the fit; an over-split that heals, a
    speck that comes and goes, a one-frame false object and a clean session flag nothing; a track of merged outlines only is
    listed with NaN rates."""
    from tem_operando.kinetics.swelling import merged_rows, swelling_table

    for merged in (range(20, 26), range(20, 50)):
        ob = _two_particles(70, merged=merged)
        flags = merged_rows(ob)
        assert sorted(ob.frame[flags.to_numpy()]) == list(merged)
        r1 = swelling_table(ob).set_index("track_id").loc[1]
        assert r1.swelling_rate_nm_s == pytest.approx(2.0, rel=0.05)
        assert r1.width_expansion_pct == pytest.approx(30.0, abs=3)
    for kw in ({}, {"split": range(20, 26)}, {"split": [12, 24, 36]}, {"split": range(5, 20)},
               {"speck": range(20, 23)}, {"ghost": 20}):
        ob = _two_particles(60, **kw)
        assert not merged_rows(ob).any(), kw
    # merged in the first frame (the tracks split from there), then again later: the later merge
    # is a merge, not an over-split healing
    ob = _two_particles(60, merged=[0, *range(30, 36)])
    assert sorted(ob.frame[merged_rows(ob).to_numpy()]) == list(range(30, 36))
    ob = _two_particles(60, merged=range(20, 26), merged_id=5)  # the merged outline on a track of its own
    assert sorted(ob.frame[merged_rows(ob).to_numpy()]) == list(range(20, 26))
    tr = swelling_table(ob).set_index("track_id")
    assert tr.loc[5].n_frames == 6 and np.isnan(tr.loc[5].swelling_rate_nm_s) and np.isnan(tr.loc[5].width1_nm)
    assert (tr.loc[5].first_frame, tr.loc[5].last_frame, tr.loc[5].n_steps) == (20, 25, 0)
    assert tr.loc[5][["width0_nm", "width_expansion_pct", "volume_expansion_pct", "onset_s"]].isna().all()
    assert tr.loc[1].swelling_rate_nm_s == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("offset", [0.0, 0.6])
def test_merged_rows_an_over_split_that_heals_is_no_merge_whatever_ids_the_linker_gives(offset):
    """A swelling particle cut in two by a false seam for 4-12 frames, then whole again, measured
    and linked from masks: the linker may end its track and give both pieces (and the healed
    outline) new ids, or keep it on the bigger piece. No row is a merge; when the small particle
    beside it is drawn into its outline instead, those rows are."""
    from skimage.draw import disk

    from tem_operando.kinetics.swelling import merged_rows

    def objects(split=(), merged=(), n=60):
        inst = np.zeros((n, 160, 160), np.uint32)
        yy, xx = np.mgrid[:160, :160]
        for k in range(n):
            r1 = 20 + min(max((k - 10) * 0.5, 0), 6)
            m1 = np.zeros((160, 160), bool)
            m1[disk((80, 70), r1)] = True
            inst[k][m1] = 1
            inst[k][disk((80, 70 + r1 + 14), 10)] = 1 if k in merged else 2
            if k in merged:
                inst[k][78:83, 70:int(70 + r1 + 14)] = 1  # the gap bridged
            if k in split:
                side = (yy - 80) * np.cos(np.pi / 6) - (xx - 70) * np.sin(np.pi / 6) - offset * r1
                inst[k][m1 & (side > 0)] = 3
                inst[k][m1 & (np.abs(side) < 1)] = 0
        cls = (inst > 0).astype(np.uint8)
        return link_objects(measure_objects(cls, inst, np.arange(n), np.arange(n) * 0.5, 1.0))

    for start in (12, 16, 24):
        for n_split in (4, 8, 12):
            ob = objects(split=range(start, start + n_split))
            assert not merged_rows(ob).any(), (start, n_split)
    ob = objects(merged=range(30, 36))
    assert sorted(ob.frame[merged_rows(ob).to_numpy()]) == list(range(30, 36))


def test_a_wire_with_no_pristine_width_gives_nan_expansions_not_an_error():
    """A one-frame sliver taken for a wire (width 0 across its pristine part) must not stop the run."""
    from tem_operando.kinetics.swelling import swelling_table

    ob = pd.DataFrame({"track_id": [1], "frame": [0], "time_s": [0.0], "kind": ["wire"], "x_nm": [5.0],
                       "y_nm": [5.0], "area_nm2": [130.0], "width_nm": [0.0], "length_nm": [23.6],
                       "width_pristine_nm": [0.0], "width_swollen_nm": [np.nan]})
    t = swelling_table(ob)
    assert len(t) == 1 and np.isnan(t["width_expansion_pct"].iloc[0])


def test_swelling_ci_covers_frame_correlated_width_errors():
    """Segmented widths are off by ~1 px in a way that drifts slowly through the swelling period
    (a shell found late, an edge bias that changes with the material), which fitting many frames does
    not average away. Width series whose error at the period's two ends is N(0, 1 px), varying linearly
    between them, plus white scatter: the rate's 95 % CI covers the truth ~95 % of the time with the
    systematic term and far less often without it (the fit's residuals do not show such an error)."""
    from tem_operando.kinetics import swelling_fit

    rng = np.random.default_rng(11)
    t = np.arange(60) * 0.5  # s, 2 frames/s
    cover = {1.0: [], 0.0: []}
    widths = {1.0: [], 0.0: []}
    for _ in range(200):
        w0, gain, onset = rng.uniform(25, 40), rng.uniform(4, 12), rng.uniform(5, 10)
        rate = rng.uniform(0.5, 1.5)
        T = gain / rate
        g = np.clip((t - onset) / T, 0, 1)
        ea, eb = rng.normal(0, 1.0, 2)
        w = w0 + gain * g + ea * (1 - g) + eb * g + rng.normal(0, 0.3, t.size)
        for k in cover:
            f = swelling_fit(t, w, resolution_nm=1.0, systematic_px=k)
            cover[k].append(abs(f["rate_nm_s"] - rate) <= f["rate_ci95_nm_s"])
            widths[k].append(f["rate_ci95_nm_s"] / rate)
    print({k: (np.mean(c), np.median(widths[k])) for k, c in cover.items()})
    assert 0.88 <= np.mean(cover[1.0]) <= 0.995, np.mean(cover[1.0])
    assert np.mean(cover[0.0]) < 0.6, np.mean(cover[0.0])
    assert np.median(widths[1.0]) < 0.5  # wide enough to cover, not uninformative
    with pytest.raises(ValueError, match="systematic_px"):
        swelling_fit(t, t, systematic_px=-1.0)


def test_front_velocity_ci_covers_frame_correlated_position_errors():
    """As for widths: a front found a pixel late at one end of its run and on time at the other is an
    error the residuals do not show. Linear fronts with N(0, 1 px) position errors at the two ends of the
    run (varying linearly between them): the velocity's CI covers the truth ~95 % of the time with the
    systematic term, far less often without; ``front_table`` uses it by default."""
    from tem_operando.kinetics import front_table, rate_law_fit

    rng = np.random.default_rng(5)
    t = np.arange(50) * 0.5
    cover = {1.0: [], 0.0: []}
    for _ in range(150):
        v, t0 = rng.uniform(2, 6), rng.uniform(2, 6)
        x = v * np.maximum(t - t0, 0)
        g = np.clip((t - t0) / (t[-1] - t0), 0, 1)
        ea, eb = rng.normal(0, 1.0, 2)
        x = np.where(t > t0, x + ea * (1 - g) + eb * g, 0) + rng.normal(0, 0.3, t.size)
        fits = {k: rate_law_fit(t, x, resolution=1.0, systematic=k) for k in cover}
        if fits[0.0].law != "linear":
            continue
        for k, f in fits.items():
            cover[k].append(abs(f.velocity_nm_s - v) <= f.velocity_ci95_nm_s)
    print({k: (np.mean(c), len(c)) for k, c in cover.items()})
    assert len(cover[1.0]) > 100
    assert 0.88 <= np.mean(cover[1.0]) <= 0.995 and np.mean(cover[0.0]) < 0.6
    fronts = pd.DataFrame({"track_id": 1, "frame": np.arange(t.size), "time_s": t, "front_position_nm": x})
    assert front_table(fronts)["front_velocity_ci95_nm_s"].iloc[0] > front_table(fronts, systematic_px=0)[
        "front_velocity_ci95_nm_s"].iloc[0]
    with pytest.raises(ValueError, match="systematic"):
        rate_law_fit(t, x, systematic=float("nan"))


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -1.0, float("inf"), None, "1 nm"])
def test_kinetics_need_a_pixel_size(bad):
    """The pixel size is every fit's resolution floor and the scale of its CI's systematic term: an
    uncalibrated (NaN), zero, negative or non-numeric one is refused with its name by the swelling and
    the front paths alike (the swelling path used to give NaN CIs where the front path raised)."""
    from tem_operando.kinetics import front_table, swelling_fit, swelling_table

    s = image_series(12, (96, 96), scene="particles", rng=1, dose_e_per_px=100)
    linked = link_objects(measure_objects(s.classes, s.instances, 0, s.time_s, s.nm_per_px))
    t = np.arange(20) * 0.5
    fronts = pd.DataFrame({"track_id": 1, "frame": np.arange(t.size), "time_s": t, "front_position_nm": 3 * t})
    for call, name in ((lambda: swelling_table(linked, nm_per_px=bad), "nm_per_px"),
                       (lambda: front_table(fronts, nm_per_px=bad), "nm_per_px"),
                       (lambda: analyze_kinetics(linked, nm_per_px=bad), "nm_per_px"),
                       (lambda: swelling_fit(t, 20 + t, resolution_nm=bad), "resolution_nm"),
                       (lambda: rate_law_fit(t, 3 * t, resolution=bad), "resolution")):
        with pytest.raises(ValueError, match=f"{name} must be a finite pixel size"):
            call()
    assert np.isfinite(front_table(fronts, nm_per_px=0.5)["front_velocity_nm_s"]).all()
