"""Corrections journal replay (no Qt): paint/erase, track edits, phases, calibration, undo, export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tem_operando import schema
from tem_operando.results import ResultStore
from tem_operando.results import corrections as corr


def make_results(folder, n_frames=16, size=128, seed=2):
    """A small analysed synthetic session (baseline segmenter), plus three hand-made phase rows."""
    from tem_operando.pipeline import AnalyzeOptions, analyze
    from tem_operando.synth import make_session, write_session

    rec = write_session(make_session("mixed", n_frames=n_frames, size_px=size, seed=seed), folder / "s.hspy")
    out = folder / "res"
    analyze(rec, out, AnalyzeOptions(model="baseline", chunk_frames=8, workers=1, scheduler="sync"), report=False)
    store = ResultStore(out)
    if store.read_table("phases").empty:  # image-only session: phase rows to relabel
        names = ["Sn", "Na15Sn4"]
        ph = pd.DataFrame({"frame": [0, 1, 2], "time_s": [0.0, 0.5, 1.0], "best_phase": ["Sn"] * 3,
                           "confidence": [0.9, 0.8, 0.7], "amorphous_fraction": [0.1, 0.2, 0.3],
                           "frac_Sn": [0.9, 0.8, 0.7], "frac_Na15Sn4": [0.0, 0.0, 0.0]})
        store.write_table("phases", ph, names)
    return out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("corr"))


@pytest.fixture
def store(pristine, tmp_path):
    shutil.copytree(pristine, tmp_path / "res")
    return ResultStore(tmp_path / "res")


def _empty_spot(store, frame, r=6):
    c, i = corr.Corrector(store).masks(frame)
    from scipy import ndimage

    free = ndimage.binary_erosion(i == 0, iterations=r + 14)
    ys, xs = np.nonzero(free)
    k = len(ys) // 2
    return float(xs[k]), float(ys[k])


def test_no_journal_reproduces_the_analysis(store, pristine):
    before = {t: store.read_table(t) for t in ("objects", "tracks", "frames")}
    corr.recompute(store)
    ob = store.read_table("objects")
    cols = ["frame", "track_id", "x_nm", "y_nm", "area_nm2", "width_nm"]
    pd.testing.assert_frame_equal(ob[cols].reset_index(drop=True), before["objects"][cols].reset_index(drop=True))
    tr = store.read_table("tracks")
    assert list(tr["track_id"]) == list(before["tracks"]["track_id"])
    np.testing.assert_allclose(tr["width0_nm"], before["tracks"]["width0_nm"], rtol=1e-6)
    assert "label" in ob  # objects.csv now names each object's instance label in masks.zarr
    assert (pristine / "corrections" / "base" / "objects.csv").is_file() is False  # the pristine copy untouched


def test_paint_new_object_makes_a_track_and_keeps_predicted_masks(store):
    x, y = _empty_spot(store, 5)
    pred_before = store.read_masks(5, 6)
    n_tracks = len(store.read_table("tracks"))
    e = corr.paint(store, 5, 2, points=[(x, y), (x + 3, y + 2)], radius=5)
    assert [j["id"] for j in store.corrections()] == [e["id"]]
    rep = corr.recompute(store)
    assert rep.corrected == [5]
    c, i = corr.effective_masks(store, 5)
    assert c[int(y), int(x)] == 2 and i[int(y), int(x)] > 0
    np.testing.assert_array_equal(store.read_masks(5, 6)[0], pred_before[0])  # predictions untouched
    ob = store.read_table("objects")
    new = ob[(ob["frame"] == 5) & (ob["label"] == i[int(y), int(x)])]
    assert len(new) == 1 and new["reacted_fraction"].iloc[0] == pytest.approx(1.0)
    assert new["area_nm2"].iloc[0] == pytest.approx(np.pi * 5 ** 2 + 6 * 10, rel=0.35)
    assert len(store.read_table("tracks")) == n_tracks + 1
    assert store.read_table("frames").set_index("frame").loc[5, "corrected"]


def test_erase_and_delete_object(store):
    ob = store.read_table("objects")
    f = int(ob["frame"].iloc[0])
    c, i = corr.Corrector(store).masks(f)
    labs, counts = np.unique(i[i > 0], return_counts=True)
    lab = int(labs[np.argmax(counts)])
    ys, xs = np.nonzero(i == lab)
    corr.delete_object(store, f, float(xs[0]), float(ys[0]))
    corr.recompute(store)
    c2, i2 = corr.effective_masks(store, f)
    assert not (i2 == lab).any() and c2[i == lab].max() == 0
    n_after = len(store.read_table("objects").query("frame == @f"))
    assert n_after == len(ob.query("frame == @f")) - 1
    # erase everything: the frame has no objects left
    H, W = i.shape
    corr.erase(store, f, polygon=[(0, 0), (W, 0), (W, H), (0, H)])
    corr.recompute(store)
    assert store.read_table("objects").query("frame == @f").empty


def test_merge_split_undo_redo(store):
    tr = store.read_table("tracks")
    a, b = (int(t) for t in tr.sort_values("n_frames", ascending=False)["track_id"].iloc[:2])
    corr.merge_tracks(store, a, b)
    corr.recompute(store)
    ids = set(store.read_table("tracks")["track_id"])
    assert a in ids and b not in ids
    ob = store.read_table("objects")
    assert not ob.duplicated(["frame", "track_id"]).any()  # a frame holding both is measured as one object
    g = ob[ob["track_id"] == a]
    mid = int(g["frame"].iloc[len(g) // 2])
    e = corr.split_track(store, a, mid)
    corr.recompute(store)
    ob = store.read_table("objects")
    new = e["new_track_id"]
    assert (ob.loc[ob["track_id"] == new, "frame"] >= mid).all()
    assert (ob.loc[ob["track_id"] == a, "frame"] < mid).all()
    u = corr.undo(store)
    assert u["target"] == e["id"]
    corr.recompute(store)
    assert new not in set(store.read_table("tracks")["track_id"])
    corr.redo(store)
    corr.recompute(store)
    assert new in set(store.read_table("tracks")["track_id"])
    corr.undo(store)
    corr.undo(store)  # the merge too
    corr.recompute(store)
    assert b in set(store.read_table("tracks")["track_id"])
    kinds = [j["kind"] for j in store.corrections()]
    assert kinds == ["merge_tracks", "split_track", "undo", "redo", "undo", "undo"]  # append-only


def test_recompute_is_idempotent_and_survives_a_fresh_process(store):
    x, y = _empty_spot(store, 3)
    corr.paint(store, 3, 1, points=[(x, y)], radius=4)
    corr.exclude_frames(store, [7])
    corr.recompute(store)
    files = {t: store.path(f"{t}.csv").read_bytes() for t in ("frames", "objects", "tracks", "fronts", "phases")}
    corr.recompute(store)
    corr.Corrector(ResultStore(store.folder)).recompute()
    for t, b in files.items():
        assert store.path(f"{t}.csv").read_bytes() == b, t
    assert 7 not in set(store.read_table("objects")["frame"])
    assert store.read_table("frames").set_index("frame").loc[7, "excluded"]


def test_relabel_phase_and_calibration(store):
    ph = store.read_table("phases")
    f = int(ph["frame"].iloc[0])
    other = next(c[5:] for c in ph.columns if c.startswith("frac_") and c[5:] != ph["best_phase"].iloc[0])
    corr.relabel_phase(store, f, other)
    w0 = store.read_table("objects")["width_nm"].to_numpy()
    corr.edit_calibration(store, nm_per_px=2 * store.read_summary()["nm_per_px"])
    corr.recompute(store)
    ph2 = store.read_table("phases").set_index("frame")
    assert ph2.loc[f, "best_phase"] == other and ph2.loc[f, "confidence"] == 1.0 and ph2.loc[f, "corrected"]
    np.testing.assert_allclose(store.read_table("objects")["width_nm"].to_numpy(), 2 * w0, rtol=1e-6)
    assert store.read_summary()["corrections"]["calibration"]["nm_per_px"] == 2 * store.read_summary()["nm_per_px"]
    assert store.calibration()["nm_per_px"] == 2 * store.read_summary()["nm_per_px"]  # what the report plots with
    from tem_operando.report import build_report

    html = build_report(store.folder).read_text(encoding="utf-8")  # plots with it too
    assert f"(corrected; analysed with {store.read_summary()['nm_per_px']:.4g})" in html
    with pytest.raises(corr.CorrectionError):
        corr.relabel_phase(store, f, "unobtainium")
    with pytest.raises(corr.CorrectionError):
        corr.edit_calibration(store, nm_per_px=0)


def test_contact_override_changes_the_front(store):
    tr = store.read_table("tracks")
    wires = tr[tr["kind"] == "wire"]
    if wires.empty:
        pytest.skip("the baseline found no wire in this session")
    tid = int(wires["track_id"].iloc[0])
    ob = store.read_table("objects")
    f = int(ob.loc[ob["track_id"] == tid, "frame"].iloc[0])
    corr.set_contact(store, tid, f, 0.0, 0.0)
    corr.recompute(store)
    t2 = store.read_table("tracks").set_index("track_id")
    nm = store.read_summary()["nm_per_px"]
    dx = store.read_table("frames").set_index("frame").loc[f, "drift_x_nm"]
    assert t2.loc[tid, "contact_x_nm"] == pytest.approx(0.0 * nm - dx)


def test_export_annotation_set_is_readable_by_train(store, tmp_path):
    from tem_operando.segment.datasets import load_annotation_set

    x, y = _empty_spot(store, 4)
    corr.paint(store, 4, 2, points=[(x, y)], radius=5)
    corr.recompute(store)
    out = corr.export_annotation_set(store, tmp_path / "ann")
    fs = load_annotation_set(out)
    assert fs.classes.shape[0] == 1 and fs.classes[0, int(y), int(x)] == 2
    info = json.loads((out / "annotation.json").read_text())
    assert info["frame_index"] == [4] and info["provenance"]["recording_sha256"]


def test_torn_journal_line_and_new_run_keep_user_pixels(store):
    x, y = _empty_spot(store, 6)
    corr.paint(store, 6, 2, points=[(x, y)], radius=4)
    with open(store.path("corrections.jsonl"), "a") as fh:
        fh.write('{"id": 99, "kind": "pai')  # a crash mid-append
    corr.recompute(store)
    assert corr.effective_masks(store, 6)[0][int(y), int(x)] == 2
    # a re-analysis (new predictions, a new run identity): the stroke still wins
    c, i = store.read_masks()
    c[:] = 0
    i[:] = 0
    store.write_masks(0, c, i)
    store.finish()  # a new end_time: a new run
    corr.recompute(store)
    c6, i6 = corr.effective_masks(store, 6)
    assert c6[int(y), int(x)] == 2 and i6[int(y), int(x)] > 0
    assert corr.paint(store, 6, 1, points=[(x, y)])["id"] == 2  # the torn line is skipped, not fatal


def test_every_track_and_phase_row_names_its_model_and_corrections(store):
    """Issue 8 provenance: tracks.csv carries the model and the journal ids behind each row."""
    summary = store.read_summary()
    tr = store.read_table("tracks")
    assert (tr["model"] == summary["model"]).all() and (tr["model_sha256"] == summary["model_sha256"]).all()
    assert (tr["corrections"] == "").all() and (store.read_table("phases")["corrections"] == "").all()
    ob = store.read_table("objects")
    # erase part of one object of one track in one frame; merge two other tracks
    counts = tr.sort_values("n_frames", ascending=False)["track_id"].to_numpy()
    t_paint, a, b = (int(t) for t in counts[:3])
    row = ob[ob["track_id"] == t_paint].iloc[0]
    f = int(row["frame"])
    c, i = corr.Corrector(store).masks(f)
    ys, xs = np.nonzero(i == int(row["label"]))
    e_erase = corr.erase(store, f, points=[(float(xs[0]), float(ys[0]))], radius=1.5)
    e_merge = corr.merge_tracks(store, a, b)
    ph = store.read_table("phases")
    e_rel = corr.relabel_phase(store, int(ph["frame"].iloc[1]), "Na15Sn4")
    corr.recompute(store)
    tr2 = store.read_table("tracks").set_index("track_id")
    assert e_erase["id"] in schema.split_ids(tr2.loc[t_paint, "corrections"])
    assert schema.split_ids(tr2.loc[a, "corrections"]) == [e_merge["id"]]
    untouched = [t for t in tr2.index if t not in (t_paint, a)]
    # the 1.5 px stroke touches only the objects it covers in frame f
    near = set(ob[(ob["frame"] == f)]["track_id"])
    assert all(tr2.loc[t, "corrections"] == "" for t in untouched if t not in near)
    ph2 = store.read_table("phases").set_index("frame")
    assert ph2.loc[int(ph["frame"].iloc[1]), "corrections"] == str(e_rel["id"])
    assert ph2.loc[int(ph["frame"].iloc[0]), "corrections"] == ""
    # a calibration edit is behind every number
    e_cal = corr.edit_calibration(store, nm_per_px=1.5 * summary["nm_per_px"])
    corr.recompute(store)
    tr3 = store.read_table("tracks")
    assert all(e_cal["id"] in schema.split_ids(v) for v in tr3["corrections"])
    assert store.read_summary()["corrections"]["active_ids"] == [e_erase["id"], e_merge["id"], e_rel["id"], e_cal["id"]]
    from tem_operando.report import build_report

    page = build_report(store.folder).read_text()
    assert "Provenance" in page and summary["model_sha256"] in page
    assert f"ids {e_erase['id']}, {e_merge['id']}, {e_rel['id']}, {e_cal['id']}" in page


def test_reanalysis_into_the_same_folder_keeps_and_applies_the_corrections(store):
    from tem_operando.pipeline import AnalyzeOptions, analyze

    x, y = _empty_spot(store, 6)
    e = corr.paint(store, 6, 2, points=[(x, y)], radius=4)
    corr.recompute(store)
    n_obj = len(store.read_table("objects").query("frame == 6"))
    summary = analyze(store.read_summary()["input"], store.folder,
                      AnalyzeOptions(model="baseline", chunk_frames=8, workers=1, scheduler="sync"), report=False)
    assert summary["status"] == "complete" and summary["corrections"]["active_ids"] == [e["id"]]
    assert corr.effective_masks(store, 6)[0][int(y), int(x)] == 2
    ob = store.read_table("objects")
    assert len(ob.query("frame == 6")) == n_obj
    assert store.read_table("frames").set_index("frame").loc[6, "corrected"]
    tr = store.read_table("tracks")
    assert any(e["id"] in schema.split_ids(v) for v in tr["corrections"])


def test_corrections_on_a_diffraction_only_analysis(tmp_path):
    """A SAED series has no objects (objects.csv without the label column): phase labels are still
    corrected and recomputed (this raised KeyError 'label')."""
    from tem_operando.pipeline import AnalyzeOptions, analyze
    from tem_operando.synth import make_session, write_session

    rec = write_session(make_session("saed", n_frames=6, size_px=96, seed=1), tmp_path / "d.hspy")
    analyze(rec, tmp_path / "res", AnalyzeOptions(model="baseline", workers=1, scheduler="sync"), report=False)
    store = ResultStore(tmp_path / "res")
    ph = store.read_table("phases")
    assert len(ph) == 6 and store.read_table("objects").empty
    f = int(ph["frame"].iloc[2])
    other = next(c[5:] for c in ph.columns if c.startswith("frac_") and c[5:] != ph["best_phase"].iloc[2])
    corr.relabel_phase(store, f, other)
    corr.recompute(store)
    ph2 = store.read_table("phases").set_index("frame")
    assert ph2.loc[f, "best_phase"] == other and ph2.loc[f, "corrected"]
    assert store.read_table("objects").empty
    assert np.isnan(store.calibration()["nm_per_px"])  # no image calibration: not a silent 1 nm/px


def test_replay_uses_the_systematic_terms_the_analysis_recorded(store):
    """The CIs' systematic width term is calibrated per model and may change between versions: the analysis
    records the one it used, and a replay of the corrections uses that one, not today's."""
    from tem_operando.kinetics.fronts import SYSTEMATIC_FRONT_PX
    from tem_operando.kinetics.swelling import SYSTEMATIC_WIDTH_PX

    s = store.read_summary()
    assert (s["systematic_width_px"], s["systematic_front_px"]) == (SYSTEMATIC_WIDTH_PX, SYSTEMATIC_FRONT_PX)
    corr.recompute(store)
    ci0 = store.read_table("tracks").set_index("track_id")["swelling_rate_ci95_nm_s"]
    store.update_summary(systematic_width_px=4 * SYSTEMATIC_WIDTH_PX)
    corr.recompute(store)
    ci1 = store.read_table("tracks").set_index("track_id")["swelling_rate_ci95_nm_s"]
    ok = ci0.notna() & ci1.notna()
    assert ok.any() and (ci1[ok] >= ci0[ok] - 1e-12).all() and (ci1[ok] > 1.2 * ci0[ok]).any()
