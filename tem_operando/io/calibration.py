"""Unit handling for spatial, reciprocal and time calibrations.

Every reader hands us an axis ``(scale, units)``; these helpers turn it into nm per px for
image frames, 1/nm per px for diffraction frames, or s per frame for the time axis.
"""

from __future__ import annotations

import math

#: Length units → nanometres.
LENGTH_TO_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometers": 1.0,
    "µm": 1e3,
    "μm": 1e3,
    "um": 1e3,
    "micron": 1e3,
    "mm": 1e6,
    "m": 1e9,
    "å": 0.1,
    "a": 0.1,
    "angstrom": 0.1,
    "angstroms": 0.1,
    "pm": 1e-3,
}

#: Reciprocal length units → 1/nm.
RECIPROCAL_TO_INV_NM = {
    "1/nm": 1.0,
    "nm^-1": 1.0,
    "nm-1": 1.0,
    "1/å": 10.0,
    "1/a": 10.0,
    "å^-1": 10.0,
    "a^-1": 10.0,
    "1/angstrom": 10.0,
    "1/µm": 1e-3,
    "1/um": 1e-3,
    "1/m": 1e-9,
    "m^-1": 1e-9,
    "1/pm": 1e3,
}

#: Angular units (diffraction in scattering angle) → radians.
ANGLE_TO_RAD = {"rad": 1.0, "mrad": 1e-3, "µrad": 1e-6, "urad": 1e-6}

#: Time units → seconds.
TIME_TO_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "µs": 1e-6,
             "us": 1e-6, "min": 60.0, "h": 3600.0, "ns": 1e-9}


def normalise_units(units: object) -> str:
    """Return a canonical lower-case spelling of a units string (``""`` when undefined)."""
    if units is None:
        return ""
    u = str(units).strip()
    if u in ("<undefined>", "undefined", "None", "px", "pixel", "pixels"):
        return ""
    u = u.replace(" ", "").replace("Å", "å").replace("Angstrom", "angstrom")
    u = u.replace("**", "^").replace("⁻¹", "^-1")
    return u.lower() if u not in ("µm", "μm", "µs") else u


def electron_wavelength_nm(voltage_kv: float) -> float:
    """Relativistic electron wavelength in nm for an accelerating voltage in kV."""
    v = voltage_kv * 1e3
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 2.99792458e8
    return h / math.sqrt(2 * m0 * e * v * (1 + e * v / (2 * m0 * c * c))) * 1e9


def axis_kind(units: object) -> str:
    """Classify an axis unit: ``"length"``, ``"reciprocal"``, ``"angle"``, ``"time"`` or ``""``."""
    u = normalise_units(units)
    if u in LENGTH_TO_NM:
        return "length"
    if u in RECIPROCAL_TO_INV_NM:
        return "reciprocal"
    if u in ANGLE_TO_RAD:
        return "angle"
    if u in TIME_TO_S:
        return "time"
    return ""


def to_nm(scale: float, units: object) -> float:
    """Convert a length-per-pixel to nm per px (NaN when the units are not a length)."""
    u = normalise_units(units)
    return float(scale) * LENGTH_TO_NM[u] if u in LENGTH_TO_NM else math.nan


def to_inv_nm(scale: float, units: object, voltage_kv: float | None = None) -> float:
    """Convert a reciprocal-length (or angle, given the voltage) per pixel to 1/nm per px."""
    u = normalise_units(units)
    if u in RECIPROCAL_TO_INV_NM:
        return float(scale) * RECIPROCAL_TO_INV_NM[u]
    if u in ANGLE_TO_RAD and voltage_kv:
        return float(scale) * ANGLE_TO_RAD[u] / electron_wavelength_nm(voltage_kv)
    return math.nan


def to_s(scale: float, units: object) -> float:
    """Convert a time step to seconds (NaN when the units are not a time)."""
    u = normalise_units(units)
    return float(scale) * TIME_TO_S[u] if u in TIME_TO_S else math.nan


def is_valid(value: float | None) -> bool:
    """True when a calibration value is given, finite and strictly positive."""
    return value is not None and math.isfinite(float(value)) and float(value) > 0
