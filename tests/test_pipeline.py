"""``analyze``/``batch`` end to end: contract, ground truth, resume after SIGKILL, Dask cluster, follow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from tem_operando import schema
from tem_operando.errors import CalibrationError, TemOperandoError
from tem_operando.pipeline import AnalyzeOptions, analyze
from tem_operando.results import ResultStore
from tem_operando.synth import ParticleSpec, image_series, write_session

TABLES = ("frames", "objects", "tracks", "fronts", "phases", "rings")


def _two_particles(n=24, seed=0, shape=(128, 128)):
    specs = [ParticleSpec(1, (40.0, 60.0), 30.0, onset_s=2.0, swelling_rate_nm_s=3.0, width_expansion=0.3),
             ParticleSpec(2, (95.0, 70.0), 24.0, onset_s=4.0, swelling_rate_nm_s=2.0, width_expansion=0.25)]
    return image_series(n, shape, scene="particles", objects=specs, rng=seed, dose_e_per_px=80.0,
                        background="vacuum", fps=2.0)


@pytest.fixture(scope="module")
def session_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    return write_session(_two_particles(), d / "two.hspy")


def _opts(**kw):
    return AnalyzeOptions(**{"model": "baseline", "chunk_frames": 8, **kw})


def _tables(folder):
    store = ResultStore(folder)
    return {t: store.read_table(t) for t in TABLES}


def test_results_folder_follows_the_contract_and_the_truth(session_path, tmp_path):
    out = tmp_path / "res"
    summary = analyze(session_path, out, _opts(), report=True)
    assert summary["status"] == "complete"
    for key in ("input", "input_sha256", "frames", "fps", "nm_per_px", "model", "model_sha256", "phases",
                "software_version", "parameters", "start_time", "end_time", "elapsed_s"):
        assert key in summary, key
    t = _tables(out)
    for name in TABLES:
        assert list(t[name].columns[:len(schema.columns(name))]) == schema.columns(name), name
    assert (out / "report.html").is_file() and (out / "masks.zarr").is_dir()
    classes, instances = ResultStore(out).read_masks()
    assert classes.shape == (24, 128, 128) and instances.dtype == np.uint32
    # against ground truth: frames, times, modes, and the first frame's particles (before they react)
    truth = pd.read_csv(str(session_path).replace(".hspy", "_truth/tracks.csv"))
    assert t["frames"]["frame"].tolist() == list(range(24))
    np.testing.assert_allclose(t["frames"]["time_s"], np.arange(24) / 2.0)
    assert set(t["frames"]["mode"]) == {"image"}
    first = t["objects"][t["objects"]["frame"] == 0].sort_values("width_nm")
    np.testing.assert_allclose(first["width_nm"], np.sort(truth["width0_nm"]), rtol=0.12)
    html = (out / "report.html").read_text()
    assert "nm/s" in html and "data:image/png;base64" in html


def test_same_results_with_threads_and_inline(session_path, tmp_path):
    analyze(session_path, tmp_path / "a", _opts(scheduler="sync"), report=False)
    analyze(session_path, tmp_path / "b", _opts(scheduler="threads", workers=2), report=False)
    ta, tb = _tables(tmp_path / "a"), _tables(tmp_path / "b")
    for name in TABLES:
        pd.testing.assert_frame_equal(ta[name], tb[name])


def test_a_user_model_is_found_by_its_name(session_path, tmp_path, monkeypatch):
    """`analyze --model NAME` finds a fine-tuned model among the user's models; the summary
    names it and its sha256, and an unknown name fails before any work."""
    import shutil

    from tem_operando.segment import default_model_path
    from tem_operando.segment.modelfile import card_path, sha256

    monkeypatch.setenv("TEM_OPERANDO_DATA_DIR", str(tmp_path / "data"))
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    mine = models / "my-material.pt"
    shutil.copy(default_model_path(), mine)
    shutil.copy(card_path(default_model_path()), card_path(mine))
    summary = analyze(session_path, tmp_path / "res", _opts(model="my-material", workers=2), report=False)
    assert summary["model"] == "my-material" and summary["model_sha256"] == sha256(mine)
    with pytest.raises(TemOperandoError, match="no-such-material: no such model file"):
        analyze(session_path, tmp_path / "res2", _opts(model="no-such-material"), report=False)
    assert not (tmp_path / "res2").exists()


def test_resume_after_sigkill_gives_identical_results(session_path, tmp_path):
    ref = tmp_path / "ref"
    analyze(session_path, ref, _opts(chunk_frames=4), report=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tem_operando", "analyze", str(session_path), "--out", str(out), "--model",
           "baseline", "--chunk-frames", "4", "--workers", "1", "--no-report", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = list((out / ".work").glob("chunk_*/done.json")) if (out / ".work").exists() else []
        if len(done) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    # a second run into the folder while the first writes there is refused and touches nothing
    with pytest.raises(BlockingIOError, match=rf"{out.name}.*pid {proc.pid}"):
        analyze(session_path, out, _opts(chunk_frames=4), report=False)
    assert (out / ".work").is_dir()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "summary.json").read_text())["status"] == "partial"
    # what a writer killed mid-save leaves behind goes at the resume; other hidden files stay
    stale = [out / ".frames.csv.tem-k3j4h5g6.tmp", out / ".work" / ".chunk.npz.tem-ab_2cd34.npz"]
    kept = [out / ".mynotes", out / ".notes.20240611.tmp", out / ".summary.json.tem-live0001.tmp"]
    for f in stale + kept:
        f.write_bytes(b"half a file")
    for f in stale + kept[:2]:
        os.utime(f, (time.time() - 3600, time.time() - 3600))  # the last one is a live writer's: seconds old
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    assert not any(f.exists() for f in stale) and all(f.exists() for f in kept)
    ta, tb = _tables(ref), _tables(out)
    for name in TABLES:
        pd.testing.assert_frame_equal(ta[name], tb[name])
    ca, ia = ResultStore(ref).read_masks()
    cb, ib = ResultStore(out).read_masks()
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(ia, ib)


def test_resume_refuses_other_parameters(session_path, tmp_path):
    analyze(session_path, tmp_path / "r", _opts(), report=False)
    with pytest.raises(TemOperandoError, match="other parameters"):
        analyze(session_path, tmp_path / "r", _opts(every_nth=2), resume=True, report=False)
    with pytest.raises(TemOperandoError, match=r"other parameters \(reference_frames\)"):
        analyze(session_path, tmp_path / "r", _opts(reference_frames=2), resume=True, report=False)
    # a results folder from before --reference-frames existed resumes (it goes on with its single frame)
    import json

    summary = tmp_path / "r" / "summary.json"
    old = json.loads(summary.read_text())
    del old["parameters"]["reference_frames"]
    summary.write_text(json.dumps(old))
    assert analyze(session_path, tmp_path / "r", _opts(), resume=True, report=False)["status"] == "complete"


def test_missing_calibration_fails_before_any_work(tmp_path, session_path):
    s = _two_particles(n=4)
    np.save(tmp_path / "bare.npy", s.frames)
    with pytest.raises(CalibrationError, match="--fps"):
        analyze(tmp_path / "bare.npy", tmp_path / "out", _opts(mode="image"))
    # a previous good run in the folder is left untouched by a run that cannot start
    analyze(session_path, tmp_path / "out2", _opts(), report=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out2").glob("*.csv")}
    before["summary.json"] = (tmp_path / "out2" / "summary.json").read_bytes()
    with pytest.raises(CalibrationError, match="--nm-per-px"):
        analyze(tmp_path / "bare.npy", tmp_path / "out2", _opts(mode="image", fps=2.0))
    with pytest.raises(TemOperandoError, match="not-a-model.pt"):
        analyze(session_path, tmp_path / "out2", _opts(model=str(tmp_path / "not-a-model.pt")))
    after = {p.name: p.read_bytes() for p in (tmp_path / "out2").glob("*.csv")}
    after["summary.json"] = (tmp_path / "out2" / "summary.json").read_bytes()
    assert after == before


def test_every_nth_counts_image_frames(tmp_path):
    from tem_operando.synth import make_session

    s = make_session("session", n_frames=20, size_px=128, seed=1)
    path = write_session(s, tmp_path / "m.hspy")
    analyze(path, tmp_path / "r", _opts(every_nth=2, chunk_frames=6), report=False)
    f = ResultStore(tmp_path / "r").read_table("frames")
    img = f[f["mode"] == "image"]
    assert img["analysed"].tolist() == [i % 2 == 0 for i in range(len(img))]
    assert img.loc[~img["analysed"].astype(bool), "n_objects"].isna().all()
    assert img.loc[img["analysed"].astype(bool), "n_objects"].notna().all()


def test_every_nth_larger_than_a_chunk(tmp_path):
    """Chunks with no frame to segment (every 4th frame, chunks of 2) are fine, with the baseline
    and with the shipped (two-channel) network."""
    s = _two_particles(n=12)
    path = write_session(s, tmp_path / "m.hspy")
    for model in ("baseline", None):
        out = tmp_path / str(model)
        analyze(path, out, _opts(model=model, every_nth=4, chunk_frames=2), report=False)
        f = ResultStore(out).read_table("frames")
        assert f["analysed"].tolist() == [i % 4 == 0 for i in range(12)]
        assert f.loc[f["analysed"].astype(bool), "n_objects"].eq(2).all()


def test_electrochemistry_log_and_dose_in_frames(session_path, tmp_path):
    log = tmp_path / "echem.csv"
    log.write_text("time_s,voltage_V,current_nA\n-5,1.0,10\n20,0.0,30\n")
    analyze(session_path, tmp_path / "r", _opts(log=str(log), log_offset_s=0.0), report=True)
    f = ResultStore(tmp_path / "r").read_table("frames")
    assert f["voltage_V"].iloc[0] == pytest.approx(1.0 - 5 / 25)
    assert f["current_A"].iloc[-1] == pytest.approx((10 + 20 * (11.5 + 5) / 25) * 1e-9)
    assert (np.diff(f["cumulative_dose_e_per_px"]) > 0).all()
    assert (tmp_path / "r" / "plots" / "electrochem_trace.png").is_file()


def test_batch_goes_on_after_a_failure(session_path, tmp_path):
    from tem_operando.pipeline import batch

    bad = tmp_path / "broken.hspy"
    bad.write_bytes(b"\0" * 64)
    index = batch([session_path, bad], tmp_path / "b", _opts(), report=False)
    assert index["status"].tolist() == ["complete", "failed"]
    assert "broken.hspy" in index["error"].iloc[1]
    assert (tmp_path / "b" / "index.csv").is_file() and (tmp_path / "b" / "two" / "tracks.csv").is_file()


def test_batch_on_a_loopback_dask_cluster_matches_local(session_path, tmp_path):
    distributed = pytest.importorskip("distributed")
    from tem_operando.pipeline import batch

    local = batch([session_path], tmp_path / "local", _opts(), report=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        remote = batch([session_path], tmp_path / "cluster", _opts(scheduler=cluster.scheduler_address),
                       report=False)
    assert remote["status"].tolist() == local["status"].tolist() == ["complete"]
    ta, tb = _tables(tmp_path / "local" / "two"), _tables(tmp_path / "cluster" / "two")
    for name in TABLES:
        pd.testing.assert_frame_equal(ta[name], tb[name])


def test_follow_analyses_frames_as_they_arrive(tmp_path):
    import tifffile

    from tem_operando.pipeline import follow

    s = _two_particles(n=20)
    folder = tmp_path / "live"
    folder.mkdir()
    (folder / "tem_operando.json").write_text(json.dumps({"tem_operando": {"nm_per_px": 1.0, "fps": 2.0,
                                                                           "mode": "image"}}))

    def camera():
        for k, frame in enumerate(s.frames):
            tifffile.imwrite(folder / f".tmp_{k:04d}.tif", frame)
            os.replace(folder / f".tmp_{k:04d}.tif", folder / f"frame_{k:04d}.tif")
            time.sleep(0.05)

    th = threading.Thread(target=camera)
    th.start()
    summary = follow(folder, tmp_path / "res", _opts(chunk_frames=4), timeout_s=3.0, poll_s=0.1, quiet=True,
                     max_frames=64)
    th.join()
    f = ResultStore(tmp_path / "res").read_table("frames")
    assert f["frame"].tolist() == list(range(20))
    assert summary["status"] == "complete" and summary["latency_s_median"] is not None
    assert ResultStore(tmp_path / "res").read_masks()[0].shape == (20, 128, 128)


@pytest.mark.xfail(strict=True, reason="issue 4 open: with segnet-s v12 this session's (seed 4) particle rims still "
                   "lag while they swell (rates 3.9 / 5.1 nm/s for 2.0 / 3.0; v7: 4.9 / 5.9); "
                   "remove this mark when a better model passes")
def test_pipeline_measures_swelling_with_the_shipped_network(tmp_path):
    """With the shipped network, both particles are tracked unbroken and their rates come out right."""
    from tem_operando.segment import default_model_path

    default_model_path()  # the shipped weights must be there
    s = _two_particles(n=32, seed=4)
    path = write_session(s, tmp_path / "net.hspy")
    analyze(path, tmp_path / "res", AnalyzeOptions(chunk_frames=8), report=False)
    tracks = ResultStore(tmp_path / "res").read_table("tracks")
    big = tracks.sort_values("n_frames", ascending=False).head(2).sort_values("width0_nm")
    assert (big["n_frames"] == 32).all(), tracks
    truth = s.tracks.sort_values("width0_nm")
    np.testing.assert_allclose(big["swelling_rate_nm_s"], truth["swelling_rate_nm_s"], rtol=0.10)
    np.testing.assert_allclose(big["width_expansion_pct"], truth["width_expansion_pct"], atol=5.0)


def test_mixed_image_and_diffraction_recording_on_one_time_axis(tmp_path):
    """Image frames with bursts of SAED: both halves analysed, phases against the truth."""
    from tem_operando.synth import make_session

    s = make_session("session", n_frames=40, size_px=160, seed=5, dose_e_per_px=30.0)
    path = write_session(s, tmp_path / "mixed.hspy")
    summary = analyze(path, tmp_path / "res", _opts(chunk_frames=16), report=True)
    assert summary["n_image_frames"] == 32 and summary["n_diffraction_frames"] == 8
    store = ResultStore(tmp_path / "res")
    frames, phases = store.read_table("frames"), store.read_table("phases")
    assert frames["mode"].tolist() == list(s.mode)
    assert frames.loc[frames["mode"] == "diffraction", "n_objects"].eq(0).all()
    merged = phases.merge(s.phases[["frame", "best_phase"]], on="frame", suffixes=("", "_true"))
    assert len(merged) == 8
    assert (merged["best_phase"] == merged["best_phase_true"]).mean() >= 0.95, merged
    assert (tmp_path / "res" / "plots" / "phase_timeline.png").is_file()


def test_diffraction_calibrated_with_a_gold_frame(tmp_path):
    from tem_operando.synth import saed_series

    s = saed_series(12, (192, 192), sequence="Sn", inv_nm_per_px=0.07, calibration_frame="Au", rng=2, fps=1.0)
    np.save(tmp_path / "saed.npy", s.frames)  # no calibration in the file
    with pytest.raises(CalibrationError, match="--calibrate-with"):
        analyze(tmp_path / "saed.npy", tmp_path / "a", _opts(fps=1.0, mode="diffraction"), report=False)
    summary = analyze(tmp_path / "saed.npy", tmp_path / "b", _opts(fps=1.0, mode="diffraction", calibrate_with="Au"),
                      report=False)
    fit = summary["calibration_fit"]
    assert fit["inv_nm_per_px"] == pytest.approx(0.07, rel=0.005)
    phases = ResultStore(tmp_path / "b").read_table("phases")
    ok = (phases["best_phase"].to_numpy()[1:] == s.phases["best_phase"].to_numpy()[1:]).mean()
    assert ok >= 0.9


def test_a_wrong_or_dead_scheduler_fails_before_the_results_are_touched(session_path, tmp_path):
    import socket

    from tem_operando.pipeline import batch

    out = tmp_path / "r"
    analyze(session_path, out, _opts(), report=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    for scheduler, msg in (("inline", "not 'threads', 'sync' or a dask.distributed"), (dead, "no dask scheduler")):
        with pytest.raises(TemOperandoError, match=msg):
            analyze(session_path, out, _opts(scheduler=scheduler), report=False)
        with pytest.raises(TemOperandoError, match=msg):
            batch([session_path], tmp_path / "b", _opts(scheduler=scheduler), report=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_input_hash_is_computed_beside_the_run_and_resume_checks_the_input(session_path, tmp_path):
    from tem_operando._files import sha256_of

    out = tmp_path / "r"
    summary = analyze(session_path, out, _opts(), report=False)
    assert summary["input_sha256"] == sha256_of(session_path)
    st = session_path.stat()
    assert summary["input_bytes"] == st.st_size and summary["input_mtime_ns"] == st.st_mtime_ns
    # a run killed before its hash was written: a resume compares size and time instead
    s = json.loads((out / "summary.json").read_text())
    s.update(status="partial", input_sha256=None)
    (out / "summary.json").write_text(json.dumps(s))
    assert analyze(session_path, out, _opts(), resume=True, report=False)["status"] == "complete"
    s = json.loads((out / "summary.json").read_text())
    s.update(status="partial", input_sha256=None, input_mtime_ns=s["input_mtime_ns"] - 10**9)
    (out / "summary.json").write_text(json.dumps(s))
    with pytest.raises(TemOperandoError, match="another input"):
        analyze(session_path, out, _opts(), resume=True, report=False)
