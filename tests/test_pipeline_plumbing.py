"""Chunk runner and experiment context: the plumbing under ``analyze``."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from tem_operando.errors import TemOperandoError
from tem_operando.pipeline.chunks import ChunkSpec, chunk_ranges, gather, is_done, run_chunks
from tem_operando.pipeline.context import cumulative_dose, log_at, read_log, sha256_of


def _job(spec, start, stop):
    if spec.params.get("fail_at") == start:
        raise RuntimeError("boom")
    f = np.arange(start, stop)
    return {"rows": pd.DataFrame({"frame": f, "value": f * 1.5}), "arr": f.astype(np.float32)}


def test_chunk_ranges():
    assert chunk_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_ranges(0, 4) == []
    with pytest.raises(ValueError):
        chunk_ranges(5, 0)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_run_chunks_same_result_whatever_the_scheduler(tmp_path, scheduler):
    spec = ChunkSpec(input_path="x", results_dir=str(tmp_path))
    ranges = chunk_ranges(23, 5)
    seen = []
    run_chunks(_job, spec, ranges, scheduler=scheduler, on_done=seen.append)
    assert sorted(r["start"] for r in seen) == [0, 5, 10, 15, 20]
    rows = gather(tmp_path, ranges, "rows")
    assert rows["frame"].tolist() == list(range(23))
    assert np.allclose(rows["value"], np.arange(23) * 1.5)


def test_resume_runs_only_missing_chunks(tmp_path):
    ranges = chunk_ranges(20, 5)
    bad = ChunkSpec(input_path="x", results_dir=str(tmp_path), params={"fail_at": 10})
    with pytest.raises(RuntimeError):
        run_chunks(_job, bad, ranges, scheduler="sync")
    assert [is_done(tmp_path, s, e) for s, e in ranges] == [True, True, False, False]
    good = ChunkSpec(input_path="x", results_dir=str(tmp_path))
    recs = run_chunks(_job, good, ranges, scheduler="sync")
    assert [r["start"] for r in recs] == [10, 15]
    assert gather(tmp_path, ranges, "rows")["frame"].tolist() == list(range(20))


def test_read_log_units_and_offset(tmp_path):
    p = tmp_path / "echem.csv"
    p.write_text("time_s;voltage_mV;current_nA;temperature_K\n0;1000;5;300\n10;500;15;310\n")
    log = read_log(p, offset_s=2.0)
    assert log["time_s"].tolist() == [2.0, 12.0]
    assert log["voltage_V"].tolist() == [1.0, 0.5]
    assert np.allclose(log["current_A"], [5e-9, 15e-9])
    assert np.allclose(log["temperature_C"], [26.85, 36.85])
    at = log_at(log, np.array([0.0, 7.0, 20.0]))
    assert np.isnan(at["voltage_V"][0]) and at["voltage_V"][1] == pytest.approx(0.75) and np.isnan(at["voltage_V"][2])


@pytest.mark.parametrize("text,msg", [("a,b\n1,2\n", "no time column"), ("time_s,foo\n1,2\n", "no voltage"),
                                      ("time_s,voltage_V\nx,1\n", "no rows")])
def test_bad_logs(tmp_path, text, msg):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(TemOperandoError, match=msg):
        read_log(p)
    with pytest.raises(TemOperandoError, match="no such log"):
        read_log(tmp_path / "missing.csv")


def test_cumulative_dose_and_sha(tmp_path):
    d = cumulative_dose(np.array([1.0, 2.0, 3.0]), nm_per_px=0.5)
    assert d["cumulative_dose_e_per_px"].tolist() == [1, 3, 6]
    assert d["cumulative_dose_e_per_nm2"].tolist() == [4, 12, 24]
    (tmp_path / "a").write_bytes(b"abc")
    import hashlib

    assert sha256_of(tmp_path / "a") == hashlib.sha256(b"abc").hexdigest()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "f").write_bytes(b"x")
    h1 = sha256_of(tmp_path / "dir")
    (tmp_path / "dir" / "f").write_bytes(b"y")
    assert sha256_of(tmp_path / "dir") != h1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_release_memory_hands_fragmented_heap_back():
    """Frame-sized buffers freed among long-lived small objects stay resident (glibc) unless
    trimmed: the pipeline trims after chunks so memory stays flat in the recording's length."""
    import gc

    from tem_operando.pipeline.chunks import _malloc_trim, _resident_bytes, release_memory

    if _malloc_trim() is None:
        pytest.skip("not glibc")
    blocks = [bytearray(4000) for _ in range(50_000)]  # ~200 MB of heap (below the mmap threshold)
    keep = blocks[::64]  # pinned: the heap cannot shrink from its top
    del blocks
    gc.collect()
    before = _resident_bytes()
    release_memory(force=True)
    assert before - _resident_bytes() > 100 * 2**20
    assert len(keep) == 782


def test_options_of_an_earlier_run_are_kept_on_reprocessing():
    from tem_operando.pipeline import AnalyzeOptions

    first = AnalyzeOptions(nm_per_px=0.8, fps=5.0, phases=["Sn"], chunk_frames=8, model="baseline")
    params = first.analysis_params()
    again = AnalyzeOptions.from_parameters({**params, "from_a_newer_version": 1}, model="my-material")
    assert again.model == "my-material"
    assert (again.nm_per_px, again.fps, list(again.phases), again.chunk_frames) == (0.8, 5.0, ["Sn"], 8)
    assert AnalyzeOptions.from_parameters(None) == AnalyzeOptions()


def test_check_scheduler_leaves_other_protocols_to_distributed():
    from tem_operando.pipeline.chunks import check_scheduler

    for ok in (None, "threads", "sync", "inproc://192.0.2.2/6951/1", "tls://10.0.0.5:8786", object()):
        check_scheduler(ok)
    for bad in ("inline", "tcp://nohost", "10.0.0.5"):
        with pytest.raises(TemOperandoError, match="not 'threads', 'sync'"):
            check_scheduler(bad)
