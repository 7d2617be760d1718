"""Round-trip tests of the vendor-format writers against RosettaSciIO / hyperspy and ncempy.

Each writer's output is read back with the RosettaSciIO plugin directly, with
``hyperspy.api.load`` (eager and lazy) and with ncempy, and must give the same pixels and
the calibration written.  The expected axis names / units / scales are what the readers
actually return (RosettaSciIO converts TIA metres to nm and rescales Velox units with
pint), so these tests also document what the ingest has to expect.
"""

from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from tem_operando.synth.vendor_formats import (
    ACQUISITION_START,
    SUPPORTED_DTYPES,
    write_dm,
    write_gatan_insitu_folder,
    write_ser,
    write_velox_emd,
)

hs = pytest.importorskip("hyperspy.api")
rsciio_dm = pytest.importorskip("rsciio.digitalmicrograph")
rsciio_tia = pytest.importorskip("rsciio.tia")
rsciio_emd = pytest.importorskip("rsciio.emd")
ncempy_dm = pytest.importorskip("ncempy.io.dm")
ncempy_ser = pytest.importorskip("ncempy.io.ser")
ncempy_velox = pytest.importorskip("ncempy.io.emdVelox")
from traits.api import Undefined

DTYPES = [np.dtype(d) for d in SUPPORTED_DTYPES]


def random_frames(shape: tuple[int, ...], dtype: np.dtype, seed: int = 0) -> np.ndarray:
    """Random data covering most of the dtype's range (negative values for signed types)."""
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def f32(x: float) -> float:
    """What a float32-stored calibration reads back as."""
    return float(np.float32(x))


def load(path: Path, *, lazy: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hs.load(path, lazy=lazy)


def loaded_data(signal) -> np.ndarray:
    return np.asarray(signal.data.compute() if signal._lazy else signal.data)


def assert_axis(axis, *, name, scale, units, navigate, rel=1e-12):
    assert axis.name == name
    assert axis.units == units
    assert axis.scale == pytest.approx(scale, rel=rel)
    assert axis.offset == 0
    assert axis.navigate is navigate


def assert_loaded_series(signal, data, *, nav, spatial_scale, spatial_units, rel=1e-12):
    """A (T, Y, X) series: 1 navigation axis (time) + 2 signal axes, pixels identical."""
    am = signal.axes_manager
    assert am.navigation_dimension == 1 and am.signal_dimension == 2
    assert signal.data.shape == data.shape
    assert signal.data.dtype == data.dtype
    np.testing.assert_array_equal(loaded_data(signal), data)
    nav_name, nav_scale, nav_units = nav
    assert_axis(
        am.navigation_axes[0],
        name=nav_name,
        scale=nav_scale,
        units=nav_units,
        navigate=True,
        rel=rel,
    )
    x, y = am.signal_axes
    assert_axis(x, name="x", scale=spatial_scale, units=spatial_units, navigate=False, rel=rel)
    assert_axis(y, name="y", scale=spatial_scale, units=spatial_units, navigate=False, rel=rel)
    assert x.size == data.shape[2] and y.size == data.shape[1]


# ---------------------------------------------------------------------------------------
# DigitalMicrograph
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dm_series_round_trip(tmp_path, version, dtype):
    data = random_frames((4, 6, 9), dtype)
    path = tmp_path / f"series.dm{version}"
    write_dm(path, data, scale=0.123, units="nm", time_step_s=0.1, version=version)

    # the plugin itself: axes in array order (time, y, x), DM calibrations are float32
    (d,) = rsciio_dm.file_reader(str(path))
    np.testing.assert_array_equal(d["data"], data)
    assert d["data"].dtype == dtype
    axes = [(a["name"], a["scale"], a["units"], a["navigate"]) for a in d["axes"]]
    assert axes == [
        ("z", f32(0.1), "s", True),
        ("y", f32(0.123), "nm", False),
        ("x", f32(0.123), "nm", False),
    ]

    for lazy in (False, True):
        s = load(path, lazy=lazy)
        assert s._lazy is lazy
        assert_loaded_series(
            s, data, nav=("z", f32(0.1), "s"), spatial_scale=f32(0.123), spatial_units="nm"
        )

    # ncempy: calibration lists are in C order (T, Y, X)
    out = ncempy_dm.dmReader(path)
    np.testing.assert_array_equal(out["data"], data)
    assert [float(v) for v in out["pixelSize"]] == [f32(0.1), f32(0.123), f32(0.123)]
    assert out["pixelUnit"] == ["s", "nm", "nm"]


@pytest.mark.parametrize("version", [3, 4])
def test_dm_single_image_and_diffraction_units(tmp_path, version):
    data = random_frames((7, 5), np.dtype("float32"))
    path = tmp_path / f"dp.dm{version}"
    write_dm(path, data, scale=0.0421, units="1/nm", version=version)
    for lazy in (False, True):
        s = load(path, lazy=lazy)
        assert s.axes_manager.navigation_dimension == 0
        np.testing.assert_array_equal(loaded_data(s), data)
        for axis in s.axes_manager.signal_axes:
            assert_axis(axis, name=axis.name, scale=f32(0.0421), units="1/nm", navigate=False)
    tags = load(path).original_metadata.ImageList.TagGroup0.ImageTags
    assert tags["Microscope Info"]["Imaging Mode"] == "DIFFRACTION"
    assert not tags.has_item("DataBar.Exposure Time (s)")  # no time_step_s given

    out = ncempy_dm.dmReader(path)
    np.testing.assert_array_equal(out["data"], data)
    assert out["pixelUnit"] == ["1/nm", "1/nm"]


def test_dm_metadata_round_trip(tmp_path):
    data = random_frames((2, 4, 4), np.dtype("uint16"))
    path = tmp_path / "meta.dm4"
    metadata = {
        "tem_operando.mode": "image",
        "tem_operando.frame_index": 7,
        "tem_operando.dose_e_per_px": 12.5,
        "Microscope Info.Voltage": 200_000.0,  # overrides the writer's default
    }
    write_dm(path, data, scale=0.5, time_step_s=0.25, metadata=metadata)

    s = load(path)
    image_tags = s.original_metadata.ImageList.TagGroup0.ImageTags
    # dotted keys become tag groups (RosettaSciIO would drop the dots of a flat name)
    assert (
        s.original_metadata.get_item("ImageList.TagGroup0.ImageTags.tem_operando.mode") == "image"
    )
    assert image_tags.tem_operando.frame_index == 7
    assert image_tags.tem_operando.dose_e_per_px == 12.5
    # mapped hyperspy metadata: high tension and exposure
    assert s.metadata.Acquisition_instrument.TEM.beam_energy == 200.0
    assert s.metadata.Acquisition_instrument.TEM.Camera.exposure == 0.25
    assert s.metadata.General.date == ACQUISITION_START.date().isoformat()

    with ncempy_dm.fileDM(path) as f:
        md = f.getMetadata(0, metadata_keys=["tem_operando"])
    assert md["tem_operando mode"] == "image"
    assert md["tem_operando frame_index"] == 7


@pytest.mark.parametrize("version, header_size", [(3, 16), (4, 24)])
def test_dm_header_records_file_size(tmp_path, version, header_size):
    path = tmp_path / f"h.dm{version}"
    write_dm(path, random_frames((3, 3), np.dtype("uint8")), scale=1.0, version=version)
    raw = path.read_bytes()
    if version == 3:
        v, root_size, little = struct.unpack(">iIi", raw[:12])
    else:
        v, root_size, little = struct.unpack(">iQi", raw[:16])
    assert (v, little) == (version, 1)
    assert root_size == len(raw) - header_size
    assert raw.endswith(b"\x00" * 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"data": np.zeros((4,), np.float32)}, "shape"),
        ({"data": np.zeros((2, 2, 2, 2), np.float32)}, "shape"),
        ({"data": np.zeros((3, 3), np.float64)}, "dtype"),
        ({"data": np.zeros((3, 3), ">f4")}, "dtype"),
        ({"data": [[1, 2]]}, "numpy array"),
        ({"scale": 0.0}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"version": 5}, "version"),
        ({"data": np.zeros((2, 3, 3), np.float32), "time_step_s": None}, "time_step_s"),
        ({"time_step_s": -1.0}, "time_step_s"),
        ({"metadata": {"a": [1, 2]}}, "metadata"),
        ({"metadata": {"a..b": 1}}, "metadata key"),
        ({"metadata": {"a": 1, "a.b": 2}}, "conflicts"),
        ({"metadata": {"DataBar": "x"}}, "conflicts"),
        ({"version": 3, "metadata": {"big": 2**40}}, "does not fit"),
    ],
)
def test_dm_rejects_bad_arguments(tmp_path, kwargs, message):
    args = {"data": np.zeros((3, 3), np.float32), "scale": 1.0, "version": 4}
    args.update(kwargs)
    data = args.pop("data")
    with pytest.raises(ValueError, match=message):
        write_dm(tmp_path / "bad.dm4", data, **args)


# ---------------------------------------------------------------------------------------
# Gatan in situ folder
# ---------------------------------------------------------------------------------------


def test_gatan_insitu_layout_and_frames(tmp_path):
    frames = random_frames((23, 5, 6), np.dtype("uint16"))
    root = tmp_path / "In situ EXP3"
    per_frame = [{"tem_operando.mode": "image", "tem_operando.frame": i} for i in range(23)]
    out = write_gatan_insitu_folder(root, frames, scale=0.3, fps=10, metadata_per_frame=per_frame)
    assert out == root

    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.dm4"))
    assert len(files) == 23
    # 10 fps: Second_00 and Second_01 hold Frame_0000..Frame_0009, Second_02 the last 3
    expected = [
        f"Hour_00/Minute_00/Second_{s:02d}/"
        f"In situ EXP3_Hour_00_Minute_00_Second_{s:02d}_Frame_{f:04d}.dm4"
        for s, n in ((0, 10), (1, 10), (2, 3))
        for f in range(n)
    ]
    assert files == expected

    for i, rel in enumerate(expected):
        s = load(root / rel)
        np.testing.assert_array_equal(s.data, frames[i])
        assert s.axes_manager.navigation_dimension == 0
        assert s.axes_manager["x"].scale == f32(0.3) and s.axes_manager["x"].units == "nm"
        tags = s.original_metadata.ImageList.TagGroup0.ImageTags
        assert tags.tem_operando.frame == i
        assert tags.DataBar["Exposure Time (s)"] == pytest.approx(0.1)
        assert s.metadata.General.time == f"12:00:{int(i / 10):02d}"
    np.testing.assert_array_equal(ncempy_dm.dmReader(root / expected[-1])["data"], frames[-1])


def test_gatan_insitu_slow_and_fractional_rates(tmp_path):
    frames = random_frames((5, 3, 3), np.dtype("float32"))
    root = write_gatan_insitu_folder(tmp_path / "slow", frames, scale=1.0, fps=0.5, version=3)
    # one frame every 2 s: every frame is Frame_0000 of its own second
    names = sorted(p.name for p in root.rglob("*.dm3"))
    assert names == [
        f"slow_Hour_00_Minute_00_Second_{s:02d}_Frame_0000.dm3" for s in (0, 2, 4, 6, 8)
    ]

    root = write_gatan_insitu_folder(tmp_path / "frac", frames, scale=1.0, fps=2.5, prefix="run")
    per_second = {
        p.name: len(list(p.iterdir())) for p in (root / "Hour_00" / "Minute_00").iterdir()
    }
    assert per_second == {"Second_00": 3, "Second_01": 2}  # t = 0, .4, .8 | 1.2, 1.6
    assert (
        root / "Hour_00/Minute_00/Second_01/run_Hour_00_Minute_00_Second_01_Frame_0001.dm4"
    ).exists()


def test_gatan_insitu_per_frame_calibration(tmp_path):
    """A session switching between imaging and diffraction: each file has its own."""
    frames = random_frames((4, 3, 3), np.dtype("float32"))
    modes = ["image", "diffraction", "diffraction", "image"]
    scales = [0.2 if m == "image" else 0.05 for m in modes]
    units = ["nm" if m == "image" else "1/nm" for m in modes]
    root = write_gatan_insitu_folder(tmp_path / "mixed", frames, scale=scales, units=units, fps=4)
    for i, path in enumerate(sorted(root.rglob("*.dm4"))):
        s = load(path)
        np.testing.assert_array_equal(s.data, frames[i])
        assert s.axes_manager["x"].scale == f32(scales[i])
        assert s.axes_manager["x"].units == units[i]
        imaging_mode = "IMAGING" if modes[i] == "image" else "DIFFRACTION"
        assert (
            s.original_metadata.ImageList.TagGroup0.ImageTags["Microscope Info"]["Imaging Mode"]
            == imaging_mode
        )


def test_gatan_insitu_minute_rollover(tmp_path):
    frames = np.zeros((62, 2, 2), np.uint8)
    root = write_gatan_insitu_folder(tmp_path / "long", frames, scale=1.0, fps=1.0)
    assert (
        root / "Hour_00/Minute_01/Second_01/long_Hour_00_Minute_01_Second_01_Frame_0000.dm4"
    ).exists()


def test_gatan_insitu_rejects_bad_arguments(tmp_path):
    frames = np.zeros((3, 2, 2), np.uint16)
    with pytest.raises(ValueError, match="shape"):
        write_gatan_insitu_folder(tmp_path / "a", frames[0], scale=1.0, fps=10)
    with pytest.raises(ValueError, match="fps"):
        write_gatan_insitu_folder(tmp_path / "a", frames, scale=1.0, fps=0)
    with pytest.raises(ValueError, match="fps"):
        write_gatan_insitu_folder(tmp_path / "a", frames, scale=1.0, fps=20_000)
    with pytest.raises(ValueError, match="scale has 2 entries"):
        write_gatan_insitu_folder(tmp_path / "a", frames, scale=[1.0, 1.0], fps=10)
    with pytest.raises(ValueError, match="scale"):
        write_gatan_insitu_folder(tmp_path / "a", frames, scale=[1.0, -1.0, 1.0], fps=10)
    with pytest.raises(ValueError, match="units has 1 entries"):
        write_gatan_insitu_folder(tmp_path / "a", frames, scale=1.0, units=["nm"], fps=10)
    assert not (tmp_path / "a").exists()  # nothing written when an argument is bad
    with pytest.raises(ValueError, match="metadata_per_frame"):
        write_gatan_insitu_folder(
            tmp_path / "a", frames, scale=1.0, fps=10, metadata_per_frame=[{}]
        )


# ---------------------------------------------------------------------------------------
# TIA .ser / .emi
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ser_round_trip(tmp_path, dtype):
    data = random_frames((5, 6, 9), dtype)
    path = tmp_path / "series_1.ser"
    write_ser(path, data, scale_m=2.5e-10, time_step_s=0.4)
    assert (tmp_path / "series.emi").exists()

    # RosettaSciIO reads metres and returns nm; the series axis keeps the stored "s"
    for filename in (path, tmp_path / "series.emi"):
        (d,) = rsciio_tia.file_reader(str(filename))
        np.testing.assert_array_equal(d["data"], data)
        axes = [(a["name"], a["units"]) for a in d["axes"]]
        assert axes == [(None, "s"), ("y", "nm"), ("x", "nm")]
        assert d["axes"][0]["scale"] == 0.4
        assert d["axes"][1]["scale"] == pytest.approx(0.25, rel=1e-12)
        for lazy in (False, True):
            s = load(filename, lazy=lazy)
            assert_loaded_series(
                s, data, nav=(Undefined, 0.4, "s"), spatial_scale=0.25, spatial_units="nm"
            )

    # per-element time tags (whole seconds since the epoch) as RosettaSciIO reads them
    t0 = int(ACQUISITION_START.timestamp())
    expected_times = [t0 + math.floor(i * 0.4) for i in range(5)]
    times = rsciio_tia.file_reader(str(path))[0]["original_metadata"]["ser_header_parameters"][
        "Time"
    ]
    assert list(times) == expected_times

    # ncempy: raw metres, time tags through the tag offset array, .emi found by name
    if dtype == np.uint8:
        # ncempy 1.16 maps SER data type 1 to the dtype string " <u1" (leading space)
        # and cannot read any uint8 series; RosettaSciIO reads it (above).
        with pytest.raises(TypeError, match="not understood"):
            ncempy_ser.serReader(path)
    else:
        out = ncempy_ser.serReader(path)
        np.testing.assert_array_equal(out["data"], data)
        assert out["pixelSize"] == [2.5e-10, 2.5e-10] and out["pixelUnit"] == ["m", "m"]
        assert out["metadata"]["Mode []"] == "TEM uP SA Zoom Image"
    with ncempy_ser.fileSER(path) as f:
        (dim,) = f.head["Dimensions"]
        assert (dim["Description"], dim["Units"], dim["CalibrationDelta"]) == ("Number", "s", 0.4)
        assert [int(f._getTag(i)["Time"]) for i in range(5)] == expected_times


def test_ser_diffraction_needs_the_emi(tmp_path):
    data = random_frames((3, 4, 4), np.dtype("float32"))
    path = tmp_path / "dp_1.ser"
    write_ser(path, data, scale_m=5e7, time_step_s=1.0, units="1/m")
    s = load(tmp_path / "dp.emi")
    assert_loaded_series(
        s, data, nav=(Undefined, 1.0, "s"), spatial_scale=0.05, spatial_units="1 / nm"
    )
    assert s.metadata.Acquisition_instrument.TEM.beam_energy == 300.0
    # the lone .ser carries no unit: RosettaSciIO then assumes metres
    lone = load(path)
    assert lone.axes_manager["x"].units == "nm"
    assert lone.axes_manager["x"].scale == pytest.approx(5e16)
    assert ncempy_ser.serReader(path)["metadata"]["Mode []"] == "TEM uP SA Zoom Diffraction"


def test_ser_uncalibrated_series_like_tia(tmp_path):
    data = random_frames((3, 4, 5), np.dtype("uint16"))
    path = tmp_path / "raw_1.ser"
    write_ser(path, data, scale_m=1e-9, time_step_s=0.1, write_emi=False, calibrate_series=False)
    assert not (tmp_path / "raw.emi").exists()
    s = load(path)
    assert_loaded_series(
        s, data, nav=(Undefined, 1.0, Undefined), spatial_scale=1.0, spatial_units="nm"
    )
    np.testing.assert_array_equal(ncempy_ser.serReader(path)["data"], data)


def test_ser_rejects_bad_arguments(tmp_path):
    data = np.zeros((2, 3, 3), np.uint16)
    ok = {"scale_m": 1e-10, "time_step_s": 0.1}
    with pytest.raises(ValueError, match="shape"):
        write_ser(tmp_path / "a_1.ser", data[0], **ok)
    with pytest.raises(ValueError, match="_1.ser"):
        write_ser(tmp_path / "a.ser", data, **ok)
    with pytest.raises(ValueError, match=".ser"):
        write_ser(tmp_path / "a_1.emi", data, **ok)
    with pytest.raises(ValueError, match="units"):
        write_ser(tmp_path / "a_1.ser", data, units="nm", **ok)
    with pytest.raises(ValueError, match="emi"):
        write_ser(tmp_path / "a.ser", data, units="1/m", write_emi=False, **ok)
    with pytest.raises(ValueError, match="time_step_s"):
        write_ser(tmp_path / "a_1.ser", data, scale_m=1e-10, time_step_s=0)


# ---------------------------------------------------------------------------------------
# Velox .emd
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_velox_round_trip(tmp_path, dtype):
    data = random_frames((8, 6, 32), dtype)
    path = tmp_path / "stack.emd"
    write_velox_emd(path, data, scale_m=2e-10, time_step_s=0.05)

    # RosettaSciIO picks "compact" units with pint: 8 frames x 50 ms -> ms,
    # 16 px x 0.2 nm -> nm
    (d,) = rsciio_emd.file_reader(str(path))
    np.testing.assert_array_equal(d["data"], data)
    assert d["data"].dtype == dtype
    assert [(a["name"], a["units"]) for a in d["axes"]] == [
        ("Time", "ms"),
        ("y", "nm"),
        ("x", "nm"),
    ]
    for lazy in (False, True):
        s = load(path, lazy=lazy)
        assert_loaded_series(
            s, data, nav=("Time", 50.0, "ms"), spatial_scale=0.2, spatial_units="nm", rel=1e-9
        )

    out = ncempy_velox.emdVeloxReader(path)
    np.testing.assert_array_equal(np.moveaxis(out["data"], -1, 0), data)  # stored (Y, X, T)
    assert out["pixelSize"] == pytest.approx((0.2, 0.2)) and out["pixelUnit"] == ["nm", "nm"]
    assert out["detectorName"] == "BM-Ceta"


def test_velox_diffraction_and_seconds(tmp_path):
    data = random_frames((4, 6, 32), np.dtype("uint16"))
    path = tmp_path / "dp.emd"
    write_velox_emd(path, data, scale_m=5e7, time_step_s=0.5, units="1/m", mode="diffraction")
    # 16 px x 5e7 1/m = 0.8 1/nm -> pint chooses 1/µm: 50 (1/µm) per pixel
    s = load(path)
    assert_loaded_series(
        s, data, nav=("Time", 0.5, "s"), spatial_scale=50.0, spatial_units="1 / µm", rel=1e-9
    )
    assert s.original_metadata.Optics.ProjectorMode == "1"
    assert s.metadata.Acquisition_instrument.TEM.camera_length == pytest.approx(500.0)
    out = ncempy_velox.emdVeloxReader(path)
    assert out["pixelUnit"] == ["1/m", "1/m"] and out["pixelSize"] == (5e7, 5e7)


def test_velox_single_frame(tmp_path):
    image = random_frames((6, 32), np.dtype("float32"))
    path = tmp_path / "one.emd"
    write_velox_emd(path, image, scale_m=2e-10, time_step_s=1.0)
    s = load(path)
    assert s.axes_manager.navigation_dimension == 0
    np.testing.assert_array_equal(s.data, image)


def test_velox_rejects_bad_arguments(tmp_path):
    data = np.zeros((2, 3, 3), np.uint16)
    ok = {"scale_m": 1e-10, "time_step_s": 0.1}
    with pytest.raises(ValueError, match="mode"):
        write_velox_emd(tmp_path / "a.emd", data, mode="stem", **ok)
    with pytest.raises(ValueError, match="units"):
        write_velox_emd(tmp_path / "a.emd", data, units="1/m", **ok)
    with pytest.raises(ValueError, match="units"):
        write_velox_emd(tmp_path / "a.emd", data, units="nm", **ok)
    with pytest.raises(ValueError, match="dtype"):
        write_velox_emd(tmp_path / "a.emd", data.astype(np.float64), **ok)


# ---------------------------------------------------------------------------------------
# truncated files: which exception each reader raises (the ingest maps these to messages)
# ---------------------------------------------------------------------------------------

# (writer, file to cut, file to open, RosettaSciIO reader, exception, ncempy reader, exception)
TRUNCATION_CASES = {
    "dm3": (
        lambda d, p: write_dm(p / "t.dm3", d, scale=0.2, time_step_s=0.1, version=3),
        "t.dm3",
        "t.dm3",
        rsciio_dm,
        struct.error,
        ncempy_dm.dmReader,
        ValueError,
    ),
    "dm4": (
        lambda d, p: write_dm(p / "t.dm4", d, scale=0.2, time_step_s=0.1, version=4),
        "t.dm4",
        "t.dm4",
        rsciio_dm,
        struct.error,
        ncempy_dm.dmReader,
        ValueError,
    ),
    "ser": (
        lambda d, p: write_ser(p / "t_1.ser", d, scale_m=2e-10, time_step_s=0.1),
        "t_1.ser",
        "t_1.ser",
        rsciio_tia,
        ValueError,
        ncempy_ser.serReader,
        ValueError,
    ),
    "emi": (
        lambda d, p: write_ser(p / "t_1.ser", d, scale_m=2e-10, time_step_s=0.1),
        "t_1.ser",
        "t.emi",
        rsciio_tia,
        ValueError,
        None,
        None,
    ),
    "emd": (
        lambda d, p: write_velox_emd(p / "t.emd", d, scale_m=2e-10, time_step_s=0.1),
        "t.emd",
        "t.emd",
        rsciio_emd,
        OSError,
        ncempy_velox.emdVeloxReader,
        OSError,
    ),
}


# ncempy's fileEMDVelox.__del__ fails on a file it could not open ("Exception ignored")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("fraction", [0.5, 0.02, 0.999])
@pytest.mark.parametrize("case", list(TRUNCATION_CASES))
def test_truncated_file_raises(tmp_path, case, fraction):
    write, cut_name, open_name, plugin, exc, ncempy_reader, ncempy_exc = TRUNCATION_CASES[case]
    write(random_frames((8, 64, 64), np.dtype("uint16")), tmp_path)
    cut = tmp_path / cut_name
    raw = cut.read_bytes()
    cut.write_bytes(raw[: int(len(raw) * fraction)])
    target = tmp_path / open_name

    with pytest.raises(exc):
        plugin.file_reader(str(target))
    with pytest.raises(exc):
        plugin.file_reader(str(target), lazy=True)[0]["data"].compute()
    with pytest.raises(exc):  # hyperspy logs an error, then re-raises the plugin's exception
        load(target)
    with pytest.raises(exc):
        loaded_data(load(target, lazy=True))
    if ncempy_reader is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ncempy_exc):
                ncempy_reader(target)
