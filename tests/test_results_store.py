"""The results folder: contract columns, atomic writes, masks, status and the journal."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from tem_operando import schema
from tem_operando.results import ResultStore


def test_tables_follow_the_contract(tmp_path):
    store = ResultStore(tmp_path / "r", create=True)
    df = pd.DataFrame({"frame": [0, 1], "time_s": [0.0, 0.5], "track_id": [1, 1], "x_nm": [1.0, 2.0],
                       "y_nm": [3.0, 4.0], "area_nm2": [10.0, 11.0], "width_nm": [3.0, 3.1],
                       "length_nm": [3.0, 3.2], "reacted_fraction": [0.0, 0.5], "extra": [9, 9]})
    store.write_table("objects", df.iloc[:, ::-1])
    back = store.read_table("objects")
    assert list(back.columns[:9]) == schema.columns("objects")
    pd.testing.assert_frame_equal(back[schema.columns("objects")], df[schema.columns("objects")], check_dtype=False)
    with pytest.raises(ValueError, match="lacks columns"):
        store.write_table("objects", df.drop(columns=["width_nm"]))
    # a failed write leaves the previous table intact
    assert len(store.read_table("objects")) == 2
    assert not list((tmp_path / "r").glob("*.tmp"))


def test_empty_table_has_columns(tmp_path):
    store = ResultStore(tmp_path, create=True)
    assert list(store.read_table("tracks").columns) == schema.columns("tracks")
    phases = schema.empty("phases", ["Sn", "Na15Sn4"])
    assert list(phases.columns)[-2:] == ["frac_Sn", "frac_Na15Sn4"]


def test_summary_status_partial_until_finished(tmp_path):
    store = ResultStore(tmp_path, create=True)
    store.start(input="x.hspy", frames=3)
    assert store.status == "partial"
    store.update_summary(elapsed_s=1.0)
    assert store.status == "partial"
    store.finish()
    s = store.read_summary()
    assert s["status"] == "complete" and s["input"] == "x.hspy" and "end_time" in s


def test_masks_round_trip(tmp_path):
    store = ResultStore(tmp_path, create=True)
    store.open_masks(5, (8, 9))
    c = np.random.default_rng(0).integers(0, 3, (2, 8, 9)).astype(np.uint8)
    i = np.random.default_rng(1).integers(0, 5, (2, 8, 9)).astype(np.uint32)
    store.write_masks(2, c, i)
    cc, ii = store.read_masks()
    assert cc.shape == (5, 8, 9) and ii.dtype == np.uint32
    np.testing.assert_array_equal(cc[2:4], c)
    np.testing.assert_array_equal(ii[2:4], i)
    assert cc[0].max() == 0


def test_journal_appends_and_survives_a_torn_line(tmp_path):
    store = ResultStore(tmp_path, create=True)
    store.journal("merge_tracks", a=1, b=2)
    store.journal("exclude_frame", frame=4)
    with open(tmp_path / "corrections.jsonl", "a") as fh:
        fh.write('{"id": 3, "kind": "paint", "fr')  # a crash mid-append
    entries = list(store.corrections())
    assert [e["kind"] for e in entries] == ["merge_tracks", "exclude_frame"]
    assert [e["id"] for e in entries] == [1, 2]
    store.journal("exclude_frame", frame=5)  # an append after the torn line stands on its own
    assert [e.get("frame") for e in store.corrections()] == [None, 4, 5]


def test_missing_folder_is_a_clear_error(tmp_path):
    from tem_operando.errors import TemOperandoError

    with pytest.raises(TemOperandoError, match="no such results folder"):
        ResultStore(tmp_path / "nope")


def test_atomic_helpers_leave_the_old_file_or_the_whole_new_one(tmp_path):
    """Writers that need a file name (torch.save, np.savez) go through atomic_path: a failure in
    the middle leaves the previous file untouched and no temporary file behind."""
    from tem_operando._files import atomic_path, atomic_write_text

    target = tmp_path / "model.npz"
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, a=np.arange(3))
    assert np.array_equal(np.load(target)["a"], np.arange(3))
    with pytest.raises(RuntimeError):
        with atomic_path(target, suffix=".npz") as tmp:
            np.savez(tmp, a=np.arange(5))
            raise RuntimeError("interrupted")
    assert np.array_equal(np.load(target)["a"], np.arange(3))
    with pytest.raises(ValueError, match="suffix"):  # np.savez would write <tmp>.npz beside the temporary file
        with atomic_path(target) as tmp:
            np.savez(tmp, a=np.arange(7))
    assert np.array_equal(np.load(target)["a"], np.arange(3))
    card = tmp_path / "card.md"
    atomic_write_text(card, "µ-metrics ✓\n")
    assert card.read_text(encoding="utf-8") == "µ-metrics ✓\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.md", "model.npz"]


def test_exclusive_folder_refuses_a_second_writer_and_frees_on_exit(tmp_path):
    from tem_operando._files import exclusive_folder

    (tmp_path / "res").mkdir()
    with exclusive_folder(tmp_path / "res", "an analysis"):
        with pytest.raises(BlockingIOError, match=rf"res: an analysis \(pid {os.getpid()} on "):
            with exclusive_folder(tmp_path / "res"):
                pass
    assert (tmp_path / "res" / ".lock").read_text() == ""  # released: no holder named any more
    with exclusive_folder(tmp_path / "res"):  # the next writer gets it
        pass


def test_exclusive_folder_leaves_no_empty_folder_and_runs_where_flock_is_missing(tmp_path, monkeypatch):
    import errno
    import fcntl

    from tem_operando._files import exclusive_folder

    with pytest.raises(ValueError):
        with exclusive_folder(tmp_path / "new"):
            raise ValueError("the run's checks failed")
    assert not (tmp_path / "new").exists()  # created for the run, left empty: removed again

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)  # e.g. NFS without lockd
    with pytest.warns(RuntimeWarning, match="cannot lock"):
        with exclusive_folder(tmp_path / "nfs"):
            (tmp_path / "nfs" / "summary.json").write_text("{}")
    assert (tmp_path / "nfs" / "summary.json").exists()
