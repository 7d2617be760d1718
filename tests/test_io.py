"""Ingest: every format round-trips frames and calibration; streaming; per-frame modes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import hand_session
from tem_operando.io import open_recording
from tem_operando.synth.write import FORMATS, write_recording

LOSSLESS = ["hspy", "zspy", "emd", "velox", "dm4", "dm3", "ser", "mrc", "tif", "npy", "gatan", "folder"]


def _path(tmp_path, fmt):
    return tmp_path / (f"rec{FORMATS[fmt]}" if FORMATS[fmt] else "rec")


@pytest.mark.parametrize("fmt", LOSSLESS)
def test_round_trip_lossless(tmp_path, fmt):
    s = hand_session(n_frames=5, shape=(40, 48), nm_per_px=0.75, fps=4.0)
    path = write_recording(s, _path(tmp_path, fmt), fmt)
    with open_recording(path) as rec:
        assert rec.shape == (5, 40, 48)
        np.testing.assert_array_equal(rec.data.compute().astype(np.float32), s.frames)
        assert rec.nm_per_px == pytest.approx(0.75, rel=1e-6)
        assert rec.fps == pytest.approx(4.0, rel=1e-6)
        np.testing.assert_allclose(rec.time_s, s.time_s, atol=1e-6)
        assert list(rec.modes) == ["image"] * 5


@pytest.mark.parametrize("fmt", ["hspy", "tif", "emd", "dm4", "mrc", "ser", "velox"])
def test_spatial_calibration_comes_from_the_file_itself(tmp_path, fmt):
    """Where a format stores a pixel size, we read it from the file, not from our sidecar."""
    s = hand_session(n_frames=3, nm_per_px=0.31)
    path = write_recording(s, _path(tmp_path, fmt), fmt)
    with open_recording(path) as rec:
        assert rec.nm_per_px == pytest.approx(0.31, rel=1e-5)
        assert rec.metadata["calibration_source"]["nm_per_px"] in ("file axes", "tem_operando metadata")
        if fmt not in ("hspy",):
            assert rec.metadata["calibration_source"]["nm_per_px"] == "file axes"


def test_diffraction_calibration_from_reciprocal_units(tmp_path):
    s = hand_session(n_frames=3, modes=["diffraction"] * 3, inv_nm_per_px=0.042)
    for fmt in ("hspy", "dm4", "tif"):
        path = write_recording(s, _path(tmp_path, fmt), fmt)
        with open_recording(path) as rec:
            assert rec.inv_nm_per_px == pytest.approx(0.042, rel=1e-5), fmt
            assert set(rec.modes) == {"diffraction"}
            assert np.isnan(rec.nm_per_px)


@pytest.mark.parametrize("fmt", ["avi", "mp4"])
def test_round_trip_video(tmp_path, fmt):
    s = hand_session(n_frames=8, shape=(64, 64))
    s.frames = np.repeat(np.linspace(0, 200, 64, dtype=np.float32)[None, None, :], 8, 0).repeat(64, 1)
    s.frames += np.arange(8, dtype=np.float32)[:, None, None] * 5
    path = write_recording(s, _path(tmp_path, fmt), fmt)
    with open_recording(path) as rec:
        assert rec.shape == (8, 64, 64)
        assert rec.fps == pytest.approx(4.0, rel=1e-3)
        assert rec.nm_per_px == pytest.approx(0.75)
        got = rec.data.compute().astype(float)
        # lossy codecs: the picture survives (strong correlation with the original)
        assert np.corrcoef(got.ravel(), s.frames.ravel())[0, 1] > 0.98


def test_mixed_modes_in_one_file_and_in_a_gatan_folder(tmp_path):
    modes = ["image", "image", "diffraction", "image", "diffraction", "image"]
    s = hand_session(n_frames=6, modes=modes, nm_per_px=0.5, inv_nm_per_px=0.03)
    for fmt in ("hspy", "npy", "gatan"):
        path = write_recording(s, _path(tmp_path, fmt), fmt)
        with open_recording(path) as rec:
            assert list(rec.modes) == modes, fmt
            assert rec.nm_per_px == pytest.approx(0.5)
            assert rec.inv_nm_per_px == pytest.approx(0.03)


def test_gatan_layout_and_times(tmp_path):
    s = hand_session(n_frames=12, fps=5.0)
    root = write_recording(s, tmp_path / "insitu", "gatan")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.dm4"))
    assert files[0].startswith("Hour_00/Minute_00/Second_00/")
    assert any(f.startswith("Hour_00/Minute_00/Second_02/") for f in files)
    with open_recording(root) as rec:
        assert rec.shape == (12, 40, 48)
        np.testing.assert_allclose(rec.time_s, np.arange(12) / 5.0, atol=1e-9)
        np.testing.assert_array_equal(rec.data.compute(), s.frames)


def test_single_image_is_one_frame(tmp_path):
    s = hand_session(n_frames=1)
    path = write_recording(s, tmp_path / "one.hspy", "hspy")
    with open_recording(path) as rec:
        assert rec.shape == (1, 40, 48)


def test_user_calibration_overrides_metadata(tmp_path):
    s = hand_session(n_frames=3, nm_per_px=0.75, fps=4.0)
    path = write_recording(s, tmp_path / "r.hspy", "hspy")
    with open_recording(path, nm_per_px=2.0, fps=10.0) as rec:
        assert rec.nm_per_px == 2.0 and rec.fps == pytest.approx(10.0)
        assert rec.metadata["calibration_source"]["nm_per_px"] == "user"


def test_iter_chunks_covers_every_frame_in_order(tmp_path):
    s = hand_session(n_frames=23)
    path = write_recording(s, tmp_path / "r.hspy", "hspy")
    with open_recording(path) as rec:
        chunks = list(rec.iter_chunks(5))
    assert [c.start for c in chunks] == [0, 5, 10, 15, 20]
    assert [len(c.frames) for c in chunks] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), s.frames)
    np.testing.assert_allclose(np.concatenate([c.time_s for c in chunks]), s.time_s)
    np.testing.assert_allclose(np.concatenate([c.dose_e_per_px for c in chunks]), s.dose_e_per_px, rtol=1e-6)


def test_dose_from_counts_per_electron(tmp_path):
    s = hand_session(n_frames=4)
    np.save(tmp_path / "r.npy", s.frames * 3.0)
    with open_recording(tmp_path / "r.npy", nm_per_px=1, fps=1, counts_per_electron=3.0) as rec:
        dose = np.concatenate([c.dose_e_per_px for c in rec.iter_chunks(2)])
    np.testing.assert_allclose(dose, s.frames.reshape(4, -1).mean(axis=1), rtol=1e-5)


def test_ring_pattern_test_labels_frames_without_metadata(tmp_path):
    """A bare .npy of image and diffraction frames: the modes come from the ring-pattern test."""
    from tem_operando.synth import make_session

    s = make_session("session", n_frames=20, size_px=128, seed=3)
    np.save(tmp_path / "bare.npy", s.frames)
    with open_recording(tmp_path / "bare.npy", nm_per_px=1, fps=2) as rec:
        assert not rec.modes_known
        assert list(rec.modes) == list(s.mode)


def test_raw_data_is_never_written(tmp_path):
    s = hand_session(n_frames=4)
    paths = [write_recording(s, _path(tmp_path, f), f) for f in ("hspy", "zspy", "tif", "mrc", "npy")]

    def digest(p):
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        h = hashlib.sha256()
        for f in files:
            if f.is_file():
                h.update(f.read_bytes())
        return h.hexdigest(), [f.stat().st_mtime_ns for f in files if f.is_file()]

    before = [digest(p) for p in paths]
    for p in paths:
        with open_recording(p) as rec:
            for _ in rec.iter_chunks(2):
                pass
    assert [digest(p) for p in paths] == before


def test_streaming_memory_is_bounded_by_the_chunk(tmp_path):
    """Stream a 600 MB recording in a subprocess; peak RSS grows by far less than the file."""
    n, shape = 600, (512, 512)  # 600 MB of float32
    mm = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(n,) + shape)
    for k in range(0, n, 50):
        mm[k:k + 50] = k
    mm.flush()
    del mm
    code = textwrap.dedent(f"""
        import resource, json, numpy as np
        from tem_operando.io import open_recording
        rec = open_recording({str(tmp_path / 'big.npy')!r}, nm_per_px=1, fps=1, mode="image")
        rec.frame(0)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        total = 0.0
        for c in rec.iter_chunks(16):
            total += float(c.frames[:, 0, 0].sum())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"base_mb": base / 1024, "peak_mb": peak / 1024, "total": total}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["total"] == pytest.approx(sum((k // 50) * 50 for k in range(n)))
    # the file is 600 MB; a chunk is 16 MB: growth must stay a small multiple of the chunk
    assert res["peak_mb"] - res["base_mb"] < 150, res


def test_a_folder_chunk_reads_only_its_own_files(tmp_path, monkeypatch):
    """Reading frames a:b of a folder opens those files only (a one-hour capture holds tens of
    thousands); a corrupt file is named when its chunk is read."""
    from tem_operando.errors import RecordingError
    from tem_operando.io import readers

    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "tem_operando.json").write_text(json.dumps({"tem_operando": {"nm_per_px": 0.5, "fps": 4.0}}))
    frames = np.arange(300 * 8 * 8, dtype=np.uint16).reshape(300, 8, 8)
    for k, f in enumerate(frames):
        np.save(folder / f"frame_{k}.npy", f)  # natural order: frame_2 before frame_10
    opened = []
    real = readers._load_frame
    monkeypatch.setattr(readers, "_load_frame", lambda p, *a: (opened.append(p.name), real(p, *a))[1])
    with open_recording(folder) as rec:
        opened.clear()
        chunk = next(rec.iter_chunks(6, 120, 126))
        np.testing.assert_array_equal(chunk.frames, frames[120:126])
        assert sorted(opened) == sorted(f"frame_{k}.npy" for k in range(120, 126))
        np.testing.assert_array_equal(rec.frame(299), frames[299])
    opened.clear()
    headers = []
    real_cal = readers._file_calibration
    monkeypatch.setattr(readers, "_file_calibration", lambda p: (headers.append(p.name), real_cal(p))[1])
    with open_recording(folder) as rec:  # opened again (each chunk job does): only first and last are read
        assert set(opened) <= {"frame_0.npy", "frame_299.npy"} and headers == []  # calibrations remembered
    np.save(folder / "frame_7.npy", frames[7])  # rewritten: looked at again
    with open_recording(folder) as rec:
        assert headers == ["frame_7.npy"]
    (folder / "frame_200.npy").write_bytes(b"not an array")
    with pytest.raises(RecordingError, match="frame_200.npy"):  # the changed file is looked at again
        with open_recording(folder) as rec:
            next(rec.iter_chunks(10, 195, 205))
    (folder / "tem_operando.json").write_text(json.dumps({"tem_operando": {"nm_per_px": 0.5, "fps": 4.0,
                                                                           "mode": "image"}}))
    with open_recording(folder) as rec:  # modes given: only the chunk that holds it fails
        next(rec.iter_chunks(10, 100, 110))
        with pytest.raises(RecordingError, match="frame_200.npy"):
            next(rec.iter_chunks(10, 195, 205))


def test_folder_listing_is_remembered_until_the_files_change(tmp_path, monkeypatch):
    """A folder is listed again for every chunk and every poll of ``--follow``: the listing equals the
    rglob-based one (nested folders, hidden files, other files, a linked folder not followed) and
    follows every change of the folder's files."""
    import os

    from tem_operando.io import readers

    folder = tmp_path / "cap"
    for k in range(25):
        sub = folder / "Hour_00" / "Minute_00" / f"Second_{k // 10:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        np.save(sub / f"frame_{k}.npy", np.zeros((4, 4), np.uint16))
    (folder / "notes.txt").write_text("x")
    (folder / ".hidden.npy").write_bytes(b"")
    other = tmp_path / "elsewhere"
    other.mkdir()
    np.save(other / "frame_99.npy", np.zeros((4, 4), np.uint16))
    os.symlink(other, folder / "linked")

    key = readers._natural_key

    def by_rglob():
        return sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in readers.FRAME_FILE_EXTENSIONS
                       and not p.name.startswith(".")), key=key)

    first = readers.list_frame_files(folder)
    assert first == by_rglob() and len(first) == 25 and first[2].name == "frame_2.npy"
    first.append(folder / "mutating a returned list does not touch the remembered one")
    calls = []
    real_key = readers._natural_key
    monkeypatch.setattr(readers, "_natural_key", lambda p: (calls.append(p), real_key(p))[1])
    assert readers.list_frame_files(folder) == first[:-1]
    assert len(calls) == 0  # nothing changed: the remembered order, no sorting
    new = folder / "Hour_00" / "Minute_00" / "Second_02" / "frame_25.npy"  # a frame arrives
    np.save(new, np.zeros((4, 4), np.uint16))
    assert readers.list_frame_files(folder)[-1] == new
    new.rename(folder / "frame_1000.npy")  # renamed: the same number of files, another name
    assert readers.list_frame_files(folder) == by_rglob() and (folder / "frame_1000.npy") in by_rglob()
    (folder / "frame_1000.npy").unlink()
    assert readers.list_frame_files(folder) == by_rglob() and len(by_rglob()) == 25
