"""Writers for vendor TEM file formats that RosettaSciIO can read but not write.

The synthetic-data generator uses these to store sessions as real instrument software
would, so that the ingest (which reads through hyperspy / RosettaSciIO) is tested on
the formats it meets in the lab:

* :func:`write_dm` -- Gatan DigitalMicrograph ``.dm3`` / ``.dm4`` (single image or a 3-D
  image stack whose first axis is time);
* :func:`write_gatan_insitu_folder` -- Gatan's in situ capture layout, one single-frame
  ``.dm4`` per frame in ``Hour_HH/Minute_MM/Second_SS`` folders;
* :func:`write_ser` -- FEI/Thermo Fisher TIA series ``<name>_1.ser`` (+ ``<name>.emi``);
* :func:`write_velox_emd` -- Thermo Fisher Velox ``.emd`` (HDF5).

What a valid file is, is defined by the readers: ``rsciio.digitalmicrograph``,
``rsciio.tia``, ``rsciio.emd`` (Velox branch) and ncempy's ``dm``, ``ser`` and
``emdVelox``; every writer here is round-trip tested against both.  Layout details that
the readers do not check but real files have (DM4 tag sizes, the 8 NUL bytes ending a DM
file, TIA's ``Number`` series dimension, Velox's string-valued JSON metadata with its
numeric mode codes) follow public descriptions of files written by the vendors'
software; where a choice is ours it is said so in the function's notes.

Only numpy, h5py and the standard library are used; nothing here imports hyperspy.
"""

from __future__ import annotations

import json
import math
import re
import struct
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "ACQUISITION_START",
    "SUPPORTED_DTYPES",
    "write_dm",
    "write_gatan_insitu_folder",
    "write_ser",
    "write_velox_emd",
]

#: Acquisition start stamped into every file (DM DataBar, TIA tags and .emi, Velox
#: ``AcquisitionStartDatetime``).  Fixed so that written files are reproducible.
ACQUISITION_START = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)

#: Pixel types every writer accepts (the types the detectors in question deliver plus
#: float32 for processed data).  Other dtypes are refused rather than silently cast.
SUPPORTED_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(t) for t in ("float32", "uint16", "int16", "uint8", "int32")
)

# Every bad argument raises ValueError (the writers' contract), wrong types included;
# hence the "noqa: TRY004" marks.

_MICROSCOPE_NAME = "tem-operando synthetic TEM"
_HIGH_TENSION_V = 300_000.0


# ---------------------------------------------------------------------------------------
# argument checks shared by the writers
# ---------------------------------------------------------------------------------------


def _check_data(data: Any, *, allowed_ndim: tuple[int, ...]) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise ValueError(f"data must be a numpy array, got {type(data).__name__}")  # noqa: TRY004
    if data.ndim not in allowed_ndim:
        shapes = " or ".join({2: "(Y, X)", 3: "(T, Y, X)"}[n] for n in allowed_ndim)
        raise ValueError(f"data must have shape {shapes}, got shape {data.shape}")
    if data.size == 0:
        raise ValueError(f"data is empty (shape {data.shape})")
    if data.dtype.byteorder == ">" or data.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise ValueError(f"data dtype must be one of {names} (native byte order), got {data.dtype}")
    return data


def _check_positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


# ---------------------------------------------------------------------------------------
# DigitalMicrograph .dm3 / .dm4
# ---------------------------------------------------------------------------------------
#
# File = header, root tag group, 8 NUL bytes.  Header: version (i4 big endian), size of
# the root directory (u4 in DM3 = file length - 16, u8 in DM4 = file length - 24), byte
# order of the tag data (i4, 1 = little endian).  A tag group is: sorted flag (1 byte),
# open flag (1 byte), number of entries (i4 / i8), entries.  An entry is: kind (1 byte,
# 20 = group, 21 = data), name length (u2), name; in DM4 then the number of bytes that
# follow for this entry (u8); then the group, or for data "%%%%", the length n of the type
# description (i4 / i8), n type codes (i4 / i8) and the value in the file's byte order.
# All structure integers are big endian; values are little endian here (byte order 1).

# DM tag value type codes and the struct format of one value
_DM_SHORT, _DM_LONG, _DM_USHORT, _DM_ULONG = 2, 3, 4, 5
_DM_FLOAT, _DM_DOUBLE, _DM_BOOL, _DM_OCTET, _DM_LLONG = 6, 7, 8, 10, 11
_DM_ARRAY = 20
_DM_TAG_FORMAT = {
    _DM_SHORT: "h",
    _DM_LONG: "i",
    _DM_USHORT: "H",
    _DM_ULONG: "I",
    _DM_FLOAT: "f",
    _DM_DOUBLE: "d",
    _DM_BOOL: "B",
    _DM_OCTET: "B",
    _DM_LLONG: "q",
}

# numpy dtype -> (ImageData.DataType code, type code of the elements of ImageData.Data).
# The element type only has to have the pixel's byte size (readers skip the array and
# read it with ImageData.DataType); we use the matching DM tag type (octet for uint8).
_DM_IMAGE_TYPES: dict[np.dtype, tuple[int, int]] = {
    np.dtype("int16"): (1, _DM_SHORT),
    np.dtype("float32"): (2, _DM_FLOAT),
    np.dtype("uint8"): (6, _DM_OCTET),
    np.dtype("int32"): (7, _DM_LONG),
    np.dtype("uint16"): (10, _DM_USHORT),
}


@dataclass(frozen=True)
class _Num:
    """A numeric tag value with an explicit DM type code."""

    value: int | float
    code: int


@dataclass(frozen=True)
class _ImageArray:
    """The pixel array stored in ``ImageData/Data`` (written straight from the array)."""

    data: np.ndarray
    code: int


# A tag tree is a dict (named entries, insertion order kept) or a list (unnamed entries,
# as DM uses for ImageList and the Dimension lists); leaves are str, bool, int, float,
# _Num or _ImageArray.
_Chunk = bytes | np.ndarray


class _DMEncoder:
    """Serialises a tag tree into a list of byte chunks, computing DM4 entry sizes."""

    def __init__(self, version: int) -> None:
        self.version = version
        # structure integers: i4 in DM3, i8 in DM4 (always big endian)
        self._int = ">i" if version == 3 else ">q"

    def _structure_int(self, value: int) -> bytes:
        return struct.pack(self._int, value)

    def group_body(self, tree: dict | list) -> tuple[list[_Chunk], int]:
        entries = tree.items() if isinstance(tree, dict) else (("", v) for v in tree)
        entries = list(entries)
        chunks: list[_Chunk] = [b"\x01\x00", self._structure_int(len(entries))]
        size = sum(len(c) for c in chunks)
        for name, value in entries:
            entry, entry_size = self._entry(name, value)
            chunks += entry
            size += entry_size
        return chunks, size

    def _entry(self, name: str, value: Any) -> tuple[list[_Chunk], int]:
        try:
            label = name.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"DM tag name {name!r} is not latin-1 text") from None
        if len(label) > 0xFFFF:
            raise ValueError(f"DM tag name is too long ({len(label)} bytes)")
        if isinstance(value, (dict, list)):
            kind = 20
            body, body_size = self.group_body(value)
        else:
            kind = 21
            body, body_size = self._data(value)
        head = struct.pack(">BH", kind, len(label)) + label
        if self.version == 4:
            head += struct.pack(">Q", body_size)
        return [head, *body], len(head) + body_size

    def _data(self, value: Any) -> tuple[list[_Chunk], int]:
        if isinstance(value, _ImageArray):
            types = [_DM_ARRAY, value.code, value.data.size]
            payload: _Chunk = value.data
            payload_size = value.data.nbytes
        elif isinstance(value, str):
            # Strings are arrays of UTF-16 code units, as DigitalMicrograph writes them.
            units = np.frombuffer(value.encode("utf-16-le"), dtype="<u2")
            if len(units) != len(value):
                raise ValueError(f"DM string {value!r} has characters outside the BMP")
            types = [_DM_ARRAY, _DM_USHORT, len(units)]
            payload = units.tobytes()
            payload_size = len(payload)
        else:
            num = self._as_num(value)
            types = [num.code]
            payload = struct.pack("<" + _DM_TAG_FORMAT[num.code], num.value)
            payload_size = len(payload)
        if self.version == 3 and types[-1] > 0x7FFFFFFF:
            raise ValueError("array too large for a DM3 file; use version=4")
        head = b"%%%%" + self._structure_int(len(types))
        head += b"".join(self._structure_int(t) for t in types)
        return [head, payload], len(head) + payload_size

    def _as_num(self, value: Any) -> _Num:
        if isinstance(value, _Num):
            return value
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool):
            return _Num(int(value), _DM_BOOL)
        if isinstance(value, int):
            if -(2**31) <= value < 2**31:
                return _Num(value, _DM_LONG)
            if self.version == 4 and -(2**63) <= value < 2**63:
                return _Num(value, _DM_LLONG)
            raise ValueError(f"integer {value} does not fit a DM{self.version} tag")
        if isinstance(value, float):
            return _Num(value, _DM_DOUBLE)
        raise ValueError(f"cannot store {value!r} ({type(value).__name__}) in a DM tag")


def _write_dm_file(path: Path, root: dict, version: int) -> None:
    encoder = _DMEncoder(version)
    body, body_size = encoder.group_body(root)
    trailer = b"\x00" * 8
    header_size = 12 if version == 3 else 16
    file_size = header_size + body_size + len(trailer)
    if version == 3:
        if file_size > 0xFFFFFFFF:
            raise ValueError("data too large for a DM3 file (4 GiB); use version=4")
        header = struct.pack(">iIi", 3, file_size - 16, 1)
    else:
        header = struct.pack(">iQi", 4, file_size - 24, 1)
    with open(path, "wb") as f:
        f.write(header)
        for chunk in body:
            _write_chunk(f, chunk)
        f.write(trailer)


def _write_chunk(f: BinaryIO, chunk: _Chunk) -> None:
    if isinstance(chunk, np.ndarray):
        # little endian, C order; tofile avoids a second in-memory copy of large stacks
        np.ascontiguousarray(chunk, dtype=chunk.dtype.newbyteorder("<")).tofile(f)
    else:
        f.write(chunk)


def _metadata_tree(metadata: Mapping[str, Any] | None) -> dict:
    """Turn ``{"a.b": v}`` into nested ``{"a": {"b": v}}`` (DM tag paths use groups).

    RosettaSciIO deletes dots from DM tag names, so a flat key ``"tem_operando.mode"``
    could not be found again under that name; as nested groups it is read back at
    ``ImageTags.tem_operando.mode`` by both hyperspy and ncempy.
    """
    tree: dict = {}
    if metadata is None:
        return tree
    if not isinstance(metadata, Mapping):
        kind = type(metadata).__name__
        raise ValueError(f"metadata must be a mapping, got {kind}")  # noqa: TRY004
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or any(p == "" for p in key.split(".")):
            raise ValueError(f"metadata key {key!r} must be a non-empty str without empty parts")
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, (str, bool, int, float)):
            raise ValueError(  # noqa: TRY004
                f"metadata[{key!r}] must be a str or a number, got {type(value).__name__}"
            )
        _set_path(tree, key.split("."), value, key)
    return tree


def _set_path(tree: dict, parts: list[str], value: Any, key: str) -> None:
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"metadata key {key!r} conflicts with another key")  # noqa: TRY004
        node = child
    if isinstance(node.get(parts[-1]), dict):
        raise ValueError(f"metadata key {key!r} conflicts with another key")  # noqa: TRY004
    node[parts[-1]] = value


def _merge(base: dict, extra: dict) -> dict:
    """Recursively merge ``extra`` into a copy of ``base`` (``extra`` wins on leaves)."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif isinstance(v, dict) != isinstance(out.get(k, v), dict):
            raise ValueError(
                f"metadata entry {k!r} conflicts with a tag group written by the writer"
            )
        else:
            out[k] = v
    return out


def _dm_date_time(t: datetime) -> tuple[str, str]:
    """DataBar date and time strings as GMS writes them (US locale, 1 s resolution)."""
    hour12 = t.hour % 12 or 12
    ampm = "AM" if t.hour < 12 else "PM"
    return f"{t.month}/{t.day}/{t.year}", f"{hour12}:{t.minute:02d}:{t.second:02d} {ampm}"


def write_dm(
    path: str | Path,
    data: np.ndarray,
    *,
    scale: float,
    units: str = "nm",
    time_step_s: float | None = None,
    version: int = 4,
    metadata: dict | None = None,
) -> None:
    """Write a DigitalMicrograph ``.dm3`` / ``.dm4`` file.

    Parameters
    ----------
    path : str or Path
        Output file.  The extension is not checked; use ``.dm3`` for ``version=3`` and
        ``.dm4`` for ``version=4`` (hyperspy picks its reader by extension).
    data : ndarray, shape (Y, X) or (T, Y, X)
        One image, or an in situ series stored as one 3-D image whose first (slowest)
        axis is time.  dtype float32, uint16, int16, uint8 or int32.
    scale : float
        Spatial calibration, ``units`` per pixel, the same for X and Y (> 0).
    units : str, default "nm"
        Spatial unit: "nm" for images, "1/nm" for diffraction patterns (any text is
        accepted and stored as given).  ``"1/nm"`` also marks the image as a diffraction
        pattern in ``Microscope Info/Imaging Mode``.
    time_step_s : float, optional
        Frame interval in s.  Required for a (T, Y, X) series, where it becomes the
        calibration of the time axis (units "s").  For both shapes it is also recorded as
        the exposure time (continuous acquisition: exposure = frame interval).
    version : {3, 4}, default 4
        DM file version.  DM3 files are limited to 4 GiB.
    metadata : dict, optional
        Flat ``{key: str | int | float | bool}`` stored under ``ImageTags``.  Dots in a
        key make tag groups: ``{"tem_operando.mode": "image"}`` is read back by hyperspy
        as ``original_metadata.ImageList.TagGroup0.ImageTags.tem_operando.mode``.  Keys
        may also override the tags this function writes (e.g. ``"Microscope Info.Voltage"``).

    Raises
    ------
    ValueError
        On bad arguments (shape, dtype, non-positive scale or time step, missing time
        step for a series, version not 3 or 4, unstorable metadata).

    Notes
    -----
    The file holds one image in ``ImageList`` (no thumbnail, as in files saved by GMS's
    in situ capture) with ``ImageData/{Data, DataType, PixelDepth, Dimensions,
    Calibrations}`` and ``ImageTags/{Microscope Info, Acquisition, DataBar}``.
    Calibrations are float32, as GMS stores them, so a reader returns
    ``float(np.float32(scale))`` rather than ``scale`` itself.  Origins are 0.
    """
    _write_dm(
        path,
        data,
        scale=scale,
        units=units,
        time_step_s=time_step_s,
        version=version,
        metadata=metadata,
        acquired_at=ACQUISITION_START,
    )


def _write_dm(
    path: str | Path,
    data: np.ndarray,
    *,
    scale: float,
    units: str,
    time_step_s: float | None,
    version: int,
    metadata: dict | None,
    acquired_at: datetime,
) -> None:
    data = _check_data(data, allowed_ndim=(2, 3))
    scale = _check_positive("scale", scale)
    if not isinstance(units, str):
        raise ValueError(f"units must be a str, got {units!r}")  # noqa: TRY004
    if version not in (3, 4) or isinstance(version, bool):
        raise ValueError(f"version must be 3 or 4, got {version!r}")
    if time_step_s is not None:
        time_step_s = _check_positive("time_step_s", time_step_s)
    elif data.ndim == 3:
        raise ValueError("time_step_s is required for a (T, Y, X) series")
    user_tags = _metadata_tree(metadata)

    data_type, element_code = _DM_IMAGE_TYPES[data.dtype]
    # Dimensions and calibrations are listed fastest axis first: X, Y[, T].
    spatial = {"Origin": _Num(0.0, _DM_FLOAT), "Scale": _Num(scale, _DM_FLOAT), "Units": units}
    calibrations = [dict(spatial), dict(spatial)]
    if data.ndim == 3:
        calibrations.append(
            {"Origin": _Num(0.0, _DM_FLOAT), "Scale": _Num(time_step_s, _DM_FLOAT), "Units": "s"}
        )
    dimensions = [_Num(n, _DM_ULONG) for n in reversed(data.shape)]

    date, clock = _dm_date_time(acquired_at)
    diffraction = units.replace(" ", "").startswith("1/")
    image_tags: dict = {
        "Microscope Info": {
            "Name": _MICROSCOPE_NAME,
            "Voltage": _HIGH_TENSION_V,
            "Illumination Mode": "TEM",
            "Imaging Mode": "DIFFRACTION" if diffraction else "IMAGING",
            "Operation Mode": "DIFFRACTION" if diffraction else "IMAGING",
        },
        "DataBar": {"Acquisition Date": date, "Acquisition Time": clock},
    }
    if time_step_s is not None:
        image_tags["DataBar"]["Exposure Time (s)"] = time_step_s
        image_tags["Acquisition"] = {"Parameters": {"Detector": {"exposure_s": time_step_s}}}
    image_tags = _merge(image_tags, user_tags)

    image = {
        "ImageData": {
            "Calibrations": {
                "Brightness": {
                    "Origin": _Num(0.0, _DM_FLOAT),
                    "Scale": _Num(1.0, _DM_FLOAT),
                    "Units": "Counts",
                },
                "Dimension": calibrations,
                "DisplayCalibratedUnits": True,
            },
            "Data": _ImageArray(data, element_code),
            "DataType": _Num(data_type, _DM_LONG),
            "Dimensions": dimensions,
            "PixelDepth": _Num(data.dtype.itemsize, _DM_LONG),
        },
        "ImageTags": image_tags,
        "Name": Path(path).stem,
    }
    root = {"ImageList": [image]}
    _write_dm_file(Path(path), root, version)


def _insitu_frame_slots(n_frames: int, fps: float) -> Iterator[tuple[int, int]]:
    """Yield (second of acquisition, frame number within that second) for each frame.

    Frame i is acquired at t = i / fps.  The tiny tolerance keeps i / fps == k exactly
    at second k despite float rounding (e.g. fps = 0.1-multiples).
    """
    current_second, frame_in_second = -1, 0
    for i in range(n_frames):
        second = math.floor(i / fps + 1e-9)
        if second != current_second:
            current_second, frame_in_second = second, 0
        yield second, frame_in_second
        frame_in_second += 1


def _per_frame(name: str, value: Any, n_frames: int, scalar_types: type | tuple) -> list:
    """``value`` repeated for every frame, or the per-frame sequence checked for length."""
    if isinstance(value, scalar_types):
        return [value] * n_frames
    try:
        values = list(value)
    except TypeError:
        raise ValueError(f"{name} must be a single value or one per frame, got {value!r}") from None
    if len(values) != n_frames:
        raise ValueError(f"{name} has {len(values)} entries for {n_frames} frames")
    return values


def write_gatan_insitu_folder(
    root: str | Path,
    frames: np.ndarray,
    *,
    scale: float | Sequence[float],
    units: str | Sequence[str] = "nm",
    fps: float,
    version: int = 4,
    metadata_per_frame: list[dict] | None = None,
    prefix: str | None = None,
) -> Path:
    """Write frames in Gatan's in situ capture layout (one DM file per frame).

    Layout (GMS in situ / OneView-IS, K3-IS "save to disk")::

        root/Hour_00/Minute_00/Second_00/<prefix>_Hour_00_Minute_00_Second_00_Frame_0000.dm4
                                         <prefix>_Hour_00_Minute_00_Second_00_Frame_0001.dm4
        root/Hour_00/Minute_00/Second_01/<prefix>_Hour_00_Minute_00_Second_01_Frame_0000.dm4

    Frames are grouped by the whole second of their acquisition time ``i / fps`` and
    numbered from 0 again in every second (at 10 fps, ``Second_00`` holds
    ``Frame_0000``..``Frame_0009``).  Hour, minute and second are two-digit, the frame
    number four-digit.

    Parameters
    ----------
    root : str or Path
        The dataset folder (created if missing).  GMS names it after the dataset, and
        the file name prefix repeats that name.
    frames : ndarray, shape (T, Y, X)
        The frames; dtype float32, uint16, int16, uint8 or int32.
    scale : float or sequence of float
        Spatial calibration in ``units`` per pixel (> 0); one value per frame for a
        session that switches between imaging and diffraction.
    units : str or sequence of str, default "nm"
        "nm" for images, "1/nm" for diffraction (see :func:`write_dm`); one per frame
        if a sequence.
    fps : float
        Frame rate (> 0, at most 10000 so that frame numbers fit four digits).  Each file
        records 1 / fps as its exposure time and its own acquisition time (1 s resolution)
        in ``DataBar``.
    version : {3, 4}, default 4
        DM version of the frame files (the extension follows it).
    metadata_per_frame : list of dict, optional
        One ``metadata`` dict per frame (see :func:`write_dm`), e.g. the frame's mode.
    prefix : str, optional
        File name prefix; default ``Path(root).name``.

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    ValueError
        On bad arguments.

    Notes
    -----
    The naming was copied from public scripts that read such folders: a Python loader
    with ``'In situ EXP3/Hour_00/Minute_00/Second_00/'`` and
    ``'In situ EXP3_Hour_00_Minute_00_Second_00_Frame_0000.dm4'``, and a MATLAB
    converter (UC Berkeley, 2019) that derives the frame rate from the number of files in
    ``Second_00``, computes ``frame = rem(i - 1, framerate)`` (numbering restarts every
    second) and builds ``<core>_Hour_00_Minute_MM_Second_SS_Frame_FFFF.dm4`` with the
    dataset folder named ``<core>``; it reads the image as ``ImageList`` entry 0 (no
    thumbnail), which is also how :func:`write_dm` writes it.  Whether GMS itself writes
    extra per-frame tags (e.g. elapsed time) was not found; we write none.
    """
    frames = _check_data(frames, allowed_ndim=(3,))
    fps = _check_positive("fps", fps)
    if fps > 10_000:
        raise ValueError(f"fps must be at most 10000 (four-digit frame numbers), got {fps}")
    if version not in (3, 4) or isinstance(version, bool):
        raise ValueError(f"version must be 3 or 4, got {version!r}")
    n_frames = frames.shape[0]
    if metadata_per_frame is not None and len(metadata_per_frame) != n_frames:
        raise ValueError(
            f"metadata_per_frame has {len(metadata_per_frame)} entries for {n_frames} frames"
        )
    scales = _per_frame("scale", scale, n_frames, (int, float, np.number))
    scales = [_check_positive("scale", v) for v in scales]
    units_list = _per_frame("units", units, n_frames, str)
    root = Path(root)
    prefix = root.name if prefix is None else prefix
    if not prefix or "/" in prefix or "\\" in prefix:
        raise ValueError(f"prefix must be a non-empty file name part, got {prefix!r}")

    for i, (second, frame_no) in enumerate(_insitu_frame_slots(n_frames, fps)):
        hh, mm, ss = second // 3600, (second // 60) % 60, second % 60
        stamp = f"Hour_{hh:02d}_Minute_{mm:02d}_Second_{ss:02d}"
        folder = root / f"Hour_{hh:02d}" / f"Minute_{mm:02d}" / f"Second_{ss:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{prefix}_{stamp}_Frame_{frame_no:04d}.dm{version}"
        _write_dm(
            folder / name,
            frames[i],
            scale=scales[i],
            units=units_list[i],
            time_step_s=1.0 / fps,
            version=version,
            metadata=None if metadata_per_frame is None else metadata_per_frame[i],
            acquired_at=ACQUISITION_START + timedelta(seconds=i / fps),
        )
    return root


# ---------------------------------------------------------------------------------------
# TIA .ser (+ .emi)
# ---------------------------------------------------------------------------------------
#
# Series file, version 0x0220 (TIA >= 4.7.3, 8-byte offsets), all little endian:
#   header: ByteOrder u2 0x4949, SeriesID u2 0x0197, SeriesVersion u2 0x0220,
#           DataTypeID u4 (0x4122 = 2-D elements), TagTypeID u4 (0x4152 = time only),
#           TotalNumberElements u4, ValidNumberElements u4, OffsetArrayOffset u8,
#           NumberDimensions u4                                              (34 bytes)
#   dimension array: per dimension DimensionSize u4, CalibrationOffset f8,
#           CalibrationDelta f8, CalibrationElement u4, DescriptionLength u4 + text,
#           UnitsLength u4 + text
#   offset arrays: data offsets u8 x Total, then tag offsets u8 x Total
#   2-D element: CalibrationOffsetX f8, CalibrationDeltaX f8, CalibrationElementX u4,
#           the same for Y, DataType u2, ArraySizeX u4, ArraySizeY u4, pixels (X fastest,
#           bottom row first: RosettaSciIO and ncempy both flip rows on reading)
#   tag (0x4152): TagTypeID u2, 2 unused bytes, Time u4 (Unix seconds, UTC)

_SER_DATA_TYPES: dict[np.dtype, int] = {
    np.dtype("uint8"): 1,
    np.dtype("uint16"): 2,
    np.dtype("int16"): 5,
    np.dtype("int32"): 6,
    np.dtype("float32"): 7,
}
_SER_VERSION = 0x0220
_SER_2D_ELEMENTS = 0x4122
_SER_TIME_TAG = 0x4152
_EMI_MODES = {"m": "TEM uP SA Zoom Image", "1/m": "TEM uP SA Zoom Diffraction"}


def write_ser(
    path: str | Path,
    data: np.ndarray,
    *,
    scale_m: float,
    time_step_s: float,
    units: str = "m",
    write_emi: bool = True,
    calibrate_series: bool = True,
) -> None:
    """Write a TIA series of 2-D images as ``<name>_1.ser`` and its ``<name>.emi``.

    Parameters
    ----------
    path : str or Path
        The ``.ser`` file.  With ``write_emi`` it must be named ``<name>_1.ser`` (TIA's
        naming, which both readers rely on to pair it with ``<name>.emi``).
    data : ndarray, shape (T, Y, X)
        The frames; dtype float32, uint16, int16, uint8 or int32.
    scale_m : float
        Pixel size in metres (``units="m"``) or reciprocal metres (``units="1/m"``), as
        TIA stores it (> 0).
    time_step_s : float
        Frame interval in s (> 0).
    units : {"m", "1/m"}, default "m"
        TIA does not store the unit of a pixel calibration; readers infer it from the
        ``Mode`` in the ``.emi`` ("... Image" or "... Diffraction").  ``"1/m"`` therefore
        requires ``write_emi``.
    write_emi : bool, default True
        Also write ``<name>.emi``.  RosettaSciIO reads a lone ``.ser`` (as metres, i.e.
        nm after its conversion); the ``.emi`` adds the imaging mode (needed for
        reciprocal units), acquisition date, high tension and camera name.
    calibrate_series : bool, default True
        TIA describes the series dimension as ``"Number"`` with no unit and delta 1, a
        frame index (RosettaSciIO's TIA test stack ``64x64x5_TEM_preview`` reads back with
        scale 1 and no unit), and records each frame's time only in its tag, to whole
        seconds.
        By default we keep the description but store ``time_step_s`` as its delta with
        unit ``"s"``, so that the reader's navigation axis carries the time step.  With
        ``False`` the series dimension is written exactly as TIA does (index only), to
        test ingest of real-looking files.

    Raises
    ------
    ValueError
        On bad arguments.

    Notes
    -----
    Each element is followed directly by its time tag (``ACQUISITION_START`` +
    ``floor(i * time_step_s)`` s).  The offset arrays point at both, so any layout would
    be valid; this one also makes RosettaSciIO's ``ser_header_parameters.Time`` (read from
    the bytes after each element) correct.  The ``.emi`` written here holds only the
    ``<ObjectInfo>`` XML document that both readers extract by searching the file for
    it; TIA's own ``.emi`` also carries display state and a copy of the data, so TIA
    itself would not open this one.  Its ``Mode`` is "TEM uP SA Zoom Diffraction" (as in
    a public TIA diffraction file) or, for images, "TEM uP SA Zoom Image" (our analogue).
    """
    data = _check_data(data, allowed_ndim=(3,))
    scale_m = _check_positive("scale_m", scale_m)
    time_step_s = _check_positive("time_step_s", time_step_s)
    if units not in _EMI_MODES:
        raise ValueError(f"units must be 'm' or '1/m', got {units!r}")
    if units == "1/m" and not write_emi:
        raise ValueError("units='1/m' needs the .emi (write_emi=True): the .ser has no unit")
    path = Path(path)
    if path.suffix.lower() != ".ser":
        raise ValueError(f"path must end in .ser, got {path.name!r}")
    emi_path = None
    if write_emi:
        m = re.fullmatch(r"(.+)_1", path.stem)
        if m is None:
            raise ValueError(
                f"with write_emi the series must be named <name>_1.ser, got {path.name!r}"
            )
        emi_path = path.with_name(m.group(1) + ".emi")

    n_frames, ny, nx = data.shape
    dtype = data.dtype
    if n_frames > 0xFFFFFFFF or nx > 0xFFFFFFFF or ny > 0xFFFFFFFF:
        raise ValueError(f"shape {data.shape} too large for a SER file")

    if calibrate_series:
        series_dim = (n_frames, 0.0, time_step_s, 0, "Number", "s")
    else:
        series_dim = (n_frames, 0.0, 1.0, 0, "Number", "")
    size, offset, delta, element, description, dim_units = series_dim
    dim_bytes = struct.pack("<IddI", size, offset, delta, element)
    dim_bytes += struct.pack("<I", len(description)) + description.encode("ascii")
    dim_bytes += struct.pack("<I", len(dim_units)) + dim_units.encode("ascii")

    header_size = 34
    offset_array_offset = header_size + len(dim_bytes)
    first_element = offset_array_offset + 2 * 8 * n_frames
    element_header = struct.pack(
        "<ddIddIHII", 0.0, scale_m, 0, 0.0, scale_m, 0, _SER_DATA_TYPES[dtype], nx, ny
    )
    element_size = len(element_header) + data[0].nbytes
    tag_size = 8
    stride = element_size + tag_size
    data_offsets = [first_element + i * stride for i in range(n_frames)]
    tag_offsets = [o + element_size for o in data_offsets]

    header = struct.pack(
        "<HHHIIIIQI",
        0x4949,
        0x0197,
        _SER_VERSION,
        _SER_2D_ELEMENTS,
        _SER_TIME_TAG,
        n_frames,
        n_frames,
        offset_array_offset,
        1,
    )
    start = int(ACQUISITION_START.timestamp())
    with open(path, "wb") as f:
        f.write(header)
        f.write(dim_bytes)
        f.write(struct.pack(f"<{n_frames}Q", *data_offsets))
        f.write(struct.pack(f"<{n_frames}Q", *tag_offsets))
        for i in range(n_frames):
            f.write(element_header)
            _write_chunk(f, data[i, ::-1, :])  # TIA stores the bottom row first
            f.write(struct.pack("<HHI", _SER_TIME_TAG, 0, start + math.floor(i * time_step_s)))

    if emi_path is not None:
        # RosettaSciIO searches for "<ObjectInfo>" from byte 1 on (in TIA's files it sits
        # after binary container data), so the document must not start the file.
        preamble = b"tem-operando minimal TIA .emi: ObjectInfo only\x00"
        emi_path.write_bytes(preamble + _emi_object_info(path.stem, units, time_step_s, nx, ny))


def _emi_object_info(name: str, units: str, time_step_s: float, nx: int, ny: int) -> bytes:
    """The ``<ObjectInfo>`` XML of a TIA .emi, written without whitespace between elements.

    Both readers need it compact: RosettaSciIO takes an element with any text (even a
    newline) as a leaf and ncempy converts every child text of the condition groups.
    """
    from xml.sax.saxutils import escape

    def el(tag: str, text: str | float) -> str:
        return f"<{tag}>{escape(str(text))}</{tag}>"

    def data(label: str, value: str | float, unit: str = "") -> str:
        return (
            "<Data>"
            + el("Label", label)
            + el("Value", value)
            + (el("Unit", unit) if unit else "<Unit></Unit>")
            + "</Data>"
        )

    # TIA writes AcquireDate in the acquisition PC's local time, e.g. "Sun Jul 18 18:08:35 2021"
    acquire_date = ACQUISITION_START.strftime("%a %b %d %H:%M:%S %Y")
    xml = (
        "<ObjectInfo>"
        + el("DatasetType", "Series")
        + el("DataSetName", name)
        + el("Uuid", str(uuid.uuid5(uuid.NAMESPACE_URL, "tem-operando/" + name)))
        + el("AcquireDate", acquire_date)
        + el("Manufacturer", "FEI Company")
        + el("DetectorPixelHeight", "1.4e-05")
        + el("DetectorPixelWidth", "1.4e-05")
        + "<ExperimentalConditions><MicroscopeConditions>"
        + el("AcceleratingVoltage", f"{_HIGH_TENSION_V:.0f}")
        + el("Tilt1", "0")
        + el("Tilt2", "0")
        + "</MicroscopeConditions></ExperimentalConditions>"
        + "<ExperimentalDescription><Root>"
        + data("Microscope", _MICROSCOPE_NAME)
        + data("Gun type", "FEG")
        + data("High tension", f"{_HIGH_TENSION_V / 1000:.0f}", "kV")
        + data("Mode", _EMI_MODES[units])
        + data("Stage X", "0", "um")
        + data("Stage Y", "0", "um")
        + data("Stage Z", "0", "um")
        + data("Stage A", "0", "deg")
        + data("Stage B", "0", "deg")
        + "</Root></ExperimentalDescription>"
        + "<AcquireInfo>"
        + el("AcquireTime", repr(time_step_s))
        + el("CameraNamePath", "BM-Ceta")
        + el("DwellTimePath", repr(time_step_s))
        + el("FrameTime", repr(time_step_s))
        + "</AcquireInfo>"
        + "<DetectorRange>"
        + el("StartX", "0")
        + el("StartY", "0")
        + el("SizeX", str(nx))
        + el("SizeY", str(ny))
        + "</DetectorRange>"
        + "</ObjectInfo>"
    )
    return xml.encode("utf-8")


# ---------------------------------------------------------------------------------------
# Velox .emd (HDF5)
# ---------------------------------------------------------------------------------------

_VELOX_METADATA_ROWS = 60_000  # Velox stores each frame's JSON in a 60000-byte column


def write_velox_emd(
    path: str | Path,
    data: np.ndarray,
    *,
    scale_m: float,
    time_step_s: float,
    units: str = "m",
    mode: str = "image",
) -> None:
    """Write a Thermo Fisher Velox ``.emd`` image stack (TEM camera acquisition).

    Parameters
    ----------
    path : str or Path
        Output ``.emd`` file.
    data : ndarray, shape (T, Y, X) or (Y, X)
        Frames; dtype float32, uint16, int16, uint8 or int32.  Stored as (Y, X, T).
    scale_m : float
        Pixel size in metres (``units="m"``) or reciprocal metres (``units="1/m"``) (> 0).
    time_step_s : float
        Frame interval in s (> 0), stored as the camera's ``ExposureTime``.
    units : {"m", "1/m"}, default "m"
        ``BinaryResult.PixelUnitX/Y``.  Must match ``mode``.
    mode : {"image", "diffraction"}, default "image"
        ``Optics.ProjectorMode`` ("2" = Imaging, "1" = Diffraction, Velox's codes).

    Raises
    ------
    ValueError
        On bad arguments.

    Notes
    -----
    Layout, as Velox writes it: root dataset ``Version`` (variable-length string
    ``{"version": "11", "format": "Velox"}``); ``/Data/Image/<32 hex>/Data`` (Y, X, T),
    one chunk per frame; ``/Data/Image/<32 hex>/Metadata`` uint8 (60000, T), one
    NUL-padded UTF-8 JSON document per frame (column), all values as strings.  Velox
    stores ``Metadata`` uncompressed; we gzip it (transparent to HDF5 readers) because
    60 kB of padding per frame adds up in test sessions.

    RosettaSciIO takes the time step of a stack from ``Scan.FrameTime`` if present, else
    from ``Detectors[Detector-<BinaryResult.DetectorIndex>].ExposureTime``; TEM camera
    stacks have no frame time (see its test ``test_fei_no_frametime``), so we write an
    empty ``Scan`` group (the reader requires the key) and the exposure time.  Velox
    also writes ``FrameLookupTable``, ``Operations``, ``Displays``, ``Presentation`` and a
    thumbnail; readers do not need them and they are not written.
    """
    import h5py

    data = _check_data(data, allowed_ndim=(2, 3))
    scale_m = _check_positive("scale_m", scale_m)
    time_step_s = _check_positive("time_step_s", time_step_s)
    modes = {"image": ("2", "m"), "diffraction": ("1", "1/m")}
    if mode not in modes:
        raise ValueError(f"mode must be 'image' or 'diffraction', got {mode!r}")
    projector_mode, expected_units = modes[mode]
    if units not in ("m", "1/m"):
        raise ValueError(f"units must be 'm' or '1/m', got {units!r}")
    if units != expected_units:
        raise ValueError(f"mode={mode!r} needs units={expected_units!r}, got {units!r}")
    stack = data if data.ndim == 3 else data[np.newaxis]
    n_frames, ny, nx = stack.shape

    group_id = uuid.uuid5(uuid.NAMESPACE_URL, "tem-operando/" + Path(path).name).hex
    optics = {
        "AccelerationVoltage": f"{_HIGH_TENSION_V:.0f}",
        "OperatingMode": "1",  # 1 = TEM, 2 = STEM
        "ProjectorMode": projector_mode,  # 1 = Diffraction, 2 = Imaging
    }
    if mode == "image":
        optics["NominalMagnification"] = "100000"
    else:
        optics["CameraLength"] = "0.5"
    metadata = {
        "Core": {"MetadataDefinitionVersion": "7.9", "MetadataSchemaVersion": "v1/2013/07"},
        "Instrument": {
            "Manufacturer": "FEI Company",
            "InstrumentClass": "Titan",
            "InstrumentModel": _MICROSCOPE_NAME,
            "InstrumentId": "0",
            "ControlSoftwareVersion": "tem-operando",
        },
        "Acquisition": {
            "AcquisitionStartDatetime": {"DateTime": str(int(ACQUISITION_START.timestamp()))},
            "SourceType": "XFEG",
        },
        "Optics": optics,
        "Stage": {
            "AlphaTilt": "0",
            "BetaTilt": "0",
            "HolderType": "Single Tilt",
            "Position": {"x": "0", "y": "0", "z": "0"},
        },
        "Scan": {},
        "Detectors": {
            "Detector-0": {
                "DetectorName": "BM-Ceta",
                "DetectorType": "ImagingDetector",
                "Enabled": "true",
                "Inserted": "true",
                "ExposureTime": repr(time_step_s),
            }
        },
        "BinaryResult": {
            "AcquisitionUnit": "",
            "CompositionType": "",
            "Detector": "BM-Ceta",
            "DetectorIndex": "0",
            "Encoding": "",
            "ImageSize": {"width": str(nx), "height": str(ny)},
            "Offset": {"x": "0", "y": "0"},
            "PixelSize": {"width": repr(scale_m), "height": repr(scale_m)},
            "PixelUnitX": units,
            "PixelUnitY": units,
        },
        "Sample": {},
        "CustomProperties": {},
    }
    blob = json.dumps(metadata).encode("utf-8")
    if len(blob) >= _VELOX_METADATA_ROWS:
        raise ValueError("Velox metadata does not fit its 60000-byte column")
    column = np.zeros(_VELOX_METADATA_ROWS, dtype=np.uint8)
    column[: len(blob)] = np.frombuffer(blob, dtype=np.uint8)

    with h5py.File(path, "w") as f:
        f.create_dataset(
            "Version",
            data=[json.dumps({"version": "11", "format": "Velox"})],
            dtype=h5py.string_dtype(),
        )
        group = f.create_group(f"Data/Image/{group_id}")
        dset = group.create_dataset(
            "Data",
            shape=(ny, nx, n_frames),
            dtype=stack.dtype.newbyteorder("<"),
            chunks=(ny, nx, 1),
        )
        for i in range(n_frames):
            dset[:, :, i] = stack[i]
        meta = group.create_dataset(
            "Metadata",
            shape=(_VELOX_METADATA_ROWS, n_frames),
            dtype=np.uint8,
            chunks=(_VELOX_METADATA_ROWS, 1),
            compression="gzip",
        )
        for i in range(n_frames):
            meta[:, i] = column
