"""Bad input gets a clear error naming the file and the problem, never a traceback or garbage."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import hand_session
from tem_operando.errors import CalibrationError, RecordingError
from tem_operando.io import open_recording
from tem_operando.synth.write import FORMATS, write_recording


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _fail(path, *words, **kwargs):
    with pytest.raises(RecordingError) as err:
        rec = open_recording(path, **kwargs)
        for _ in rec.iter_chunks(8):
            pass
    msg = str(err.value)
    assert str(path) in msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    _fail(tmp_path / "nope.hspy", "no such file")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.hspy"
    p.write_bytes(b"")
    _fail(p, "empty")


@pytest.mark.parametrize("fmt", ["hspy", "mrc", "npy", "tif", "dm4", "dm3", "ser", "velox", "emd"])
def test_truncated_files(tmp_path, fmt):
    s = hand_session(n_frames=8, shape=(64, 64))
    p = write_recording(s, tmp_path / f"t{FORMATS[fmt]}", fmt)
    _truncate(p)
    _fail(p, "truncated")


@pytest.mark.parametrize("ext", [".hspy", ".dm4", ".mrc", ".tif", ".ser", ".emd", ".npy", ".avi"])
def test_corrupt_files(tmp_path, ext):
    p = tmp_path / f"junk{ext}"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    _fail(p)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "frames.xyz"
    p.write_bytes(b"hello")
    _fail(p, "unsupported file type")


@pytest.mark.parametrize("shape", [(3, 4, 16, 16), (100,)])
def test_wrong_dimensionality(tmp_path, shape):
    p = tmp_path / "bad.npy"
    np.save(p, np.zeros(shape, np.float32))
    _fail(p, "D")


def test_four_d_stem_in_hspy(tmp_path):
    import hyperspy.api as hs

    p = tmp_path / "scan.hspy"
    hs.signals.Signal2D(np.zeros((3, 4, 16, 16), np.float32)).save(p)
    _fail(p, "4D", "expected")


def test_empty_recording(tmp_path):
    p = tmp_path / "none.npy"
    np.save(p, np.zeros((0, 32, 32), np.float32))
    _fail(p, "empty", nm_per_px=1, fps=1)


def test_nan_frame(tmp_path):
    s = hand_session(n_frames=6)
    s.frames[3, 5, 5] = np.nan
    p = write_recording(s, tmp_path / "nan.hspy", "hspy")
    msg = _fail(p, "frame 3", "NaN")
    assert "check_finite" in msg
    # opting out replaces the bad values and goes on
    with open_recording(p, check_finite=False) as rec:
        frames = np.concatenate([c.frames for c in rec.iter_chunks(4)])
    assert np.isfinite(frames).all()


def test_inf_frame_in_npy(tmp_path):
    a = np.ones((4, 16, 16), np.float32)
    a[-1, 0, 0] = np.inf
    np.save(tmp_path / "inf.npy", a)
    _fail(tmp_path / "inf.npy", "frame 3", nm_per_px=1, fps=1)


def test_missing_calibration_is_an_error_that_says_how_to_give_it(tmp_path):
    np.save(tmp_path / "bare.npy", np.ones((3, 16, 16), np.float32))
    with open_recording(tmp_path / "bare.npy", mode="image") as rec:
        assert np.isnan(rec.nm_per_px)
        with pytest.raises(CalibrationError, match="--nm-per-px"):
            rec.require_calibration("image")
        with pytest.raises(CalibrationError, match="--inv-nm-per-px"):
            rec.require_calibration("diffraction")
    with open_recording(tmp_path / "bare.npy", nm_per_px=0.5, mode="image") as rec:
        with pytest.raises(CalibrationError, match="--fps"):
            rec.require_calibration("image")
        rec.require_calibration("image", need_time=False)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "abc"])
def test_bad_user_calibration(tmp_path, value):
    np.save(tmp_path / "a.npy", np.ones((3, 16, 16), np.float32))
    with pytest.raises(CalibrationError, match="nm_per_px"):
        open_recording(tmp_path / "a.npy", nm_per_px=value)


def test_broken_sidecar(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 16, 16), np.float32))
    (tmp_path / "a.meta.json").write_text("{not json")
    with pytest.raises(RecordingError, match="sidecar"):
        open_recording(tmp_path / "a.npy")


def test_frame_of_other_size_in_folder(tmp_path):
    import tifffile

    d = tmp_path / "frames"
    d.mkdir()
    tifffile.imwrite(d / "f_0000.tif", np.ones((16, 16), np.float32))
    tifffile.imwrite(d / "f_0001.tif", np.ones((20, 16), np.float32))
    msg = _fail(d, "shape")
    assert "f_0001.tif" in msg


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tem_operando", *args], capture_output=True, text=True)


def test_cli_reports_one_line_and_exit_code(tmp_path):
    p = tmp_path / "junk.hspy"
    p.write_bytes(b"\x00" * 100)
    r = _cli("info", str(p))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(p) in lines[0], r.stderr
    r = _cli("--debug", "info", str(p))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_cli_rejects_bad_numbers(tmp_path):
    r = _cli("info", str(tmp_path / "x.hspy"), "--nm-per-px", "0")
    assert r.returncode == 2 and "must be positive" in r.stderr


def test_help_imports_nothing_heavy():
    code = ("import sys; from tem_operando.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'dask', 'hyperspy', 'py4DSTEM', 'qtpy', 'numpy', 'pandas') "
            "if m in sys.modules]; print(','.join(heavy))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""
