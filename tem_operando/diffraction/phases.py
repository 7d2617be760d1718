"""The phase library: crystal structures and their electron-diffraction ring lists.

Every phase is a :class:`PhaseSpec` (space group, lattice parameters and the atom sites of the
asymmetric unit).  :func:`ring_list` turns a phase into the rings of a polycrystalline selected-area
electron diffraction (SAED) pattern, computed kinematically with py4DSTEM's ``Crystal`` (electron
scattering factors of Lobato & Van Dyck).

Units: reciprocal lengths ``q`` in 1/nm (``q = 1/d``, no factor 2π), spacings ``d`` in nm, lattice
parameters in Å (as crystallographers give them) and angles in degrees.  py4DSTEM works in 1/Å:
``q [1/nm] = 10 × q [1/Å]``.

The ring lists of the builtin phases (up to ``q = 12`` 1/nm) are precomputed in the package data
file ``tem_operando/data/phase_rings.json`` because importing py4DSTEM alone takes seconds.
Rebuild it after changing a builtin phase with::

    python -m tem_operando.diffraction.phases --rebuild-cache

User phases (:func:`add_phase`, :func:`add_phase_from_cif`) are stored as JSON files in the
per-user library folder ``platformdirs.user_data_dir("tem-operando")/phases/`` (or
``$TEM_OPERANDO_DATA_DIR/phases/`` when that environment variable is set); their ring lists are
computed on first use and cached next to the JSON file.

This module imports neither py4DSTEM nor ase at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .._files import atomic_write_text
from ..errors import TemOperandoError

__all__ = [
    "AMORPHOUS",
    "BUILTIN_CACHE_Q_MAX_INV_NM",
    "PhaseLibraryError",
    "PhaseSpec",
    "UnknownPhaseError",
    "add_phase",
    "add_phase_from_cif",
    "expand_sites",
    "get_phase",
    "library_dir",
    "list_phases",
    "rebuild_cache",
    "reflections",
    "remove_phase",
    "ring_list",
]

#: Name reserved for the amorphous component of a pattern (a broad halo, not a library phase).
AMORPHOUS = "amorphous"

#: Reciprocal-space reach of the committed ring cache of the builtin phases, in 1/nm.
BUILTIN_CACHE_Q_MAX_INV_NM = 12.0

#: Environment variable that overrides the per-user data folder (tests point it at a tmp dir).
DATA_DIR_ENV = "TEM_OPERANDO_DATA_DIR"

#: Bump when the ring computation changes; cached ring lists carry it in their fingerprint.
_RING_ALGORITHM_VERSION = 1

#: Reflections whose d-spacings agree within this relative tolerance form one ring.
_D_MERGE_RTOL = 1e-4

#: Rings weaker than this (relative to the strongest ring) are dropped (systematic absences).
_MIN_RELATIVE_INTENSITY = 1e-4

#: py4DSTEM drops reflections with |F|/V below this (F in Å, V in Å³); small enough to keep weak
#: but allowed reflections of large cells, large enough to drop exact cancellations.
_TOL_STRUCTURE_FACTOR = 1e-6

#: Families whose intensity is at least this share of the ring's strongest family are named in
#: the ring's ``hkl`` label (at most ``_MAX_FAMILIES_IN_LABEL`` of them, joined by ``+``).
_LABEL_FAMILY_SHARE = 0.25
_MAX_FAMILIES_IN_LABEL = 3

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
_CACHE_FILE = Path(__file__).resolve().parent.parent / "data" / "phase_rings.json"
_RING_COLUMNS = ["q_inv_nm", "d_nm", "hkl", "multiplicity", "intensity"]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class UnknownPhaseError(TemOperandoError, KeyError):
    """A phase name that is neither builtin nor in the user library.

    The message lists the available names.
    """

    def __init__(self, name: str, available: Sequence[str]):
        self.name = name
        self.available = list(available)
        self.message = (
            f"unknown phase {name!r}; available phases: {', '.join(self.available)} "
            "(add your own with add_phase or add_phase_from_cif)"
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return self.message


class PhaseLibraryError(TemOperandoError, ValueError):
    """A phase definition, CIF file or library operation is invalid.

    Parameters
    ----------
    problem : str
        What is wrong, in words a user understands.
    path : str or os.PathLike, optional
        The file concerned (a CIF file or a library JSON file); prefixed to the message.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


# --------------------------------------------------------------------------------------------
# Phase specification
# --------------------------------------------------------------------------------------------


Site = tuple  # (element, x, y, z) or (element, x, y, z, occupancy)


@dataclass(frozen=True)
class PhaseSpec:
    """A crystalline phase: space group, lattice and asymmetric-unit sites.

    Attributes
    ----------
    name : str
        Library name, also used in column names (``frac_<name>``): letters, digits, ``_.-``.
    formula : str
        Chemical formula, e.g. ``"Na15Sn4"``.
    space_group : int
        International Tables space-group number (1–230).
    cellpar : tuple of 6 float
        ``(a, b, c, alpha, beta, gamma)`` in Å and degrees, in the setting the sites are given in.
    sites : tuple of tuple
        Asymmetric unit, each ``(element, x, y, z)`` or ``(element, x, y, z, occupancy)`` with
        fractional coordinates in the given setting.
    description : str
        Free text (structure type, Wyckoff positions, reference).
    source : str
        ``"builtin"``, ``"user"`` or the path of the CIF file the phase was read from.
    setting : int
        ase setting of the space group: 1 = origin choice 1 / hexagonal axes for rhombohedral
        groups (ase's default), 2 = origin choice 2.
    axes : str
        How the given axes relate to the standard setting of ``space_group``: ``"abc"`` (the
        standard setting) or a permutation such as ``"bca"``, meaning the standard a, b, c axes
        are the given b, c, a axes.  α-MoO3 is tabulated in Pbnm, which is space group 62 (Pnma)
        with ``axes="bca"``.  Only axis permutations (no origin shifts) are supported.
    """

    name: str
    formula: str
    space_group: int
    cellpar: tuple[float, float, float, float, float, float]
    sites: tuple[Site, ...]
    description: str = ""
    source: str = "builtin"
    setting: int = 1
    axes: str = "abc"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable representation (the format of the user-library files)."""
        return {
            "format": 1,
            "name": self.name,
            "formula": self.formula,
            "space_group": int(self.space_group),
            "setting": int(self.setting),
            "axes": self.axes,
            "cellpar": [float(v) for v in self.cellpar],
            "sites": [[s[0], *[float(v) for v in s[1:]]] for s in self.sites],
            "description": self.description,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhaseSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            formula=str(data.get("formula", "")),
            space_group=int(data["space_group"]),
            cellpar=tuple(float(v) for v in data["cellpar"]),  # type: ignore[arg-type]
            sites=tuple(
                (str(s[0]), *(float(v) for v in s[1:])) for s in data["sites"]
            ),
            description=str(data.get("description", "")),
            source=str(data.get("source", "user")),
            setting=int(data.get("setting", 1)),
            axes=str(data.get("axes", "abc")),
        )

    def fingerprint(self) -> str:
        """SHA-256 of everything the ring list depends on (structure and algorithm version)."""
        payload = {
            "algorithm": _RING_ALGORITHM_VERSION,
            "space_group": int(self.space_group),
            "setting": int(self.setting),
            "axes": self.axes,
            "cellpar": [float(v) for v in self.cellpar],
            "sites": [[s[0], *[float(v) for v in s[1:]]] for s in self.sites],
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _cubic(a: float) -> tuple[float, float, float, float, float, float]:
    return (a, a, a, 90.0, 90.0, 90.0)


def _tetragonal(a: float, c: float) -> tuple[float, float, float, float, float, float]:
    return (a, a, c, 90.0, 90.0, 90.0)


def _hexagonal(a: float, c: float) -> tuple[float, float, float, float, float, float]:
    return (a, a, c, 90.0, 90.0, 120.0)


def _fcc_metal(name: str, a: float, what: str) -> PhaseSpec:
    return PhaseSpec(name, name, 225, _cubic(a), ((name, 0.0, 0.0, 0.0),),
                     f"{what}; fcc (Cu type), Fm-3m, {name} 4a")


def _bcc_metal(name: str, a: float, what: str) -> PhaseSpec:
    return PhaseSpec(name, name, 229, _cubic(a), ((name, 0.0, 0.0, 0.0),),
                     f"{what}; bcc (W type), Im-3m, {name} 2a")


def _hcp_metal(name: str, a: float, c: float, what: str) -> PhaseSpec:
    return PhaseSpec(name, name, 194, _hexagonal(a, c), ((name, 1 / 3, 2 / 3, 0.25),),
                     f"{what}; hcp (Mg type), P63/mmc, {name} 2c (1/3, 2/3, 1/4)")


def _rocksalt(name: str, cation: str, anion: str, a: float, what: str) -> PhaseSpec:
    return PhaseSpec(name, name, 225, _cubic(a),
                     ((cation, 0.0, 0.0, 0.0), (anion, 0.5, 0.5, 0.5)),
                     f"{what}; rock salt (NaCl type), Fm-3m, {cation} 4a, {anion} 4b")


def _antifluorite(name: str, anion: str, a: float, what: str) -> PhaseSpec:
    return PhaseSpec(name, name, 225, _cubic(a),
                     ((anion, 0.0, 0.0, 0.0), ("Na", 0.25, 0.25, 0.25)),
                     f"{what}; antifluorite (CaF2 type), Fm-3m, {anion} 4a, Na 8c (1/4,1/4,1/4)")


# Lattice parameters are those of DOMAIN.md ("Phase library").  Atom positions are the standard
# structures; the free parameters are rounded literature values (see each description).
_BUILTIN_SPECS: tuple[PhaseSpec, ...] = (
    # --- calibration standards
    _fcc_metal("Au", 4.0782, "Gold, calibration standard"),
    _fcc_metal("Al", 4.0495, "Aluminium, calibration standard"),
    # --- sodium and its products
    _bcc_metal("Na", 4.2906, "Sodium metal"),
    _antifluorite("Na2O", "O", 5.55, "Sodium oxide, conversion product"),
    _antifluorite("Na2S", "S", 6.54, "Sodium sulfide, conversion product"),
    _rocksalt("NaF", "Na", "F", 4.63, "Sodium fluoride"),
    # --- alloying
    PhaseSpec("Sn", "Sn", 141, _tetragonal(5.8318, 3.1819), (("Sn", 0.0, 0.0, 0.0),),
              "beta-Sn (white tin), I41/amd origin choice 1, Sn 4a (0,0,0)"),
    PhaseSpec("Na15Sn4", "Na15Sn4", 220, _cubic(13.14),
              (("Na", 0.375, 0.0, 0.25), ("Na", 0.12, 0.157, 0.961), ("Sn", 0.2083, 0.2083, 0.2083)),
              "Fully sodiated tin; Cu15Si4 (D8_6) type, I-43d, Na 12a (3/8,0,1/4), "
              "Na 48e (~0.120,0.157,0.961), Sn 16c (x,x,x) x~0.208 (Cu15Si4/Li15Si4 values; "
              "76 atoms per cell, each Sn surrounded by 12 Na at 3.2-3.4 Å)"),
    PhaseSpec("Sb", "Sb", 166, _hexagonal(4.3007, 11.222), (("Sb", 0.0, 0.0, 0.2336),),
              "Antimony (A7 / As type), R-3m hexagonal axes, Sb 6c (0,0,z) z=0.2336"),
    PhaseSpec("Na3Sb", "Na3Sb", 194, _hexagonal(5.366, 9.515),
              (("Na", 0.0, 0.0, 0.25), ("Na", 1 / 3, 2 / 3, 0.583), ("Sb", 1 / 3, 2 / 3, 0.25)),
              "Sodiated antimony; Na3As type, P63/mmc, Na 2b (0,0,1/4), Na 4f (1/3,2/3,z) z=0.583, "
              "Sb 2c (1/3,2/3,1/4)"),
    # --- conversion
    PhaseSpec("MoO3", "MoO3", 62, (3.963, 13.856, 3.697, 90.0, 90.0, 90.0),
              (("Mo", 0.0867, 0.1016, 0.25), ("O", 0.5212, 0.0866, 0.25),
               ("O", 0.0373, 0.2214, 0.25), ("O", 0.4994, 0.4351, 0.25)),
              "alpha-MoO3 (molybdite), layered, Pbnm (= Pnma with axes bca), all atoms 4c (x,y,1/4) "
              "(Kihlborg 1963 values, giving Mo-O 1.67, 1.73, 1.95 x2, 2.25, 2.33 Å)",
              axes="bca"),
    _bcc_metal("Mo", 3.147, "Molybdenum, conversion product of MoO3"),
    PhaseSpec("FeS2", "FeS2", 205, _cubic(5.417), (("Fe", 0.0, 0.0, 0.0), ("S", 0.385, 0.385, 0.385)),
              "Pyrite, Pa-3, Fe 4a (0,0,0), S 8c (x,x,x) x=0.385"),
    _bcc_metal("Fe", 2.8665, "alpha-iron, conversion product of FeS2"),
    PhaseSpec("ZnO", "ZnO", 186, _hexagonal(3.2498, 5.2066),
              (("Zn", 1 / 3, 2 / 3, 0.0), ("O", 1 / 3, 2 / 3, 0.3825)),
              "Zincite (wurtzite type), P63mc, Zn 2b (1/3,2/3,0), O 2b (1/3,2/3,u) u=0.3825"),
    _hcp_metal("Zn", 2.665, 4.947, "Zinc, conversion product of ZnO"),
    PhaseSpec("Co3O4", "Co3O4", 227, _cubic(8.084),
              (("Co", 0.125, 0.125, 0.125), ("Co", 0.5, 0.5, 0.5), ("O", 0.2631, 0.2631, 0.2631)),
              "Normal spinel, Fd-3m origin choice 2, Co2+ 8a (1/8,1/8,1/8), Co3+ 16d (1/2,1/2,1/2), "
              "O 32e (x,x,x) x=0.2631", setting=2),
    _hcp_metal("Co", 2.507, 4.069, "Cobalt (hcp), conversion product of Co3O4"),
    _rocksalt("NiO", "Ni", "O", 4.177, "Bunsenite"),
    _fcc_metal("Ni", 3.524, "Nickel, conversion product of NiO"),
    PhaseSpec("CuO", "CuO", 15, (4.684, 3.423, 5.129, 90.0, 99.54, 90.0),
              (("Cu", 0.25, 0.25, 0.0), ("O", 0.0, 0.4184, 0.25)),
              "Tenorite, C2/c (unique axis b), Cu 4c (1/4,1/4,0), O 4e (0,y,1/4) y=0.4184"),
    _fcc_metal("Cu", 3.615, "Copper, conversion product of CuO / Cu2O"),
    PhaseSpec("Cu2O", "Cu2O", 224, _cubic(4.2696), (("O", 0.0, 0.0, 0.0), ("Cu", 0.25, 0.25, 0.25)),
              "Cuprite, Pn-3m origin choice 1, O 2a (0,0,0), Cu 4b (1/4,1/4,1/4)"),
    # --- intercalation
    PhaseSpec("TiO2", "TiO2", 141, _tetragonal(3.785, 9.514),
              (("Ti", 0.0, 0.0, 0.0), ("O", 0.0, 0.0, 0.2081)),
              "Anatase, I41/amd origin choice 1, Ti 4a (0,0,0), O 8e (0,0,z) z=0.2081"),
)

_BUILTIN: dict[str, PhaseSpec] = {spec.name: spec for spec in _BUILTIN_SPECS}


# --------------------------------------------------------------------------------------------
# Library: builtin + user phases
# --------------------------------------------------------------------------------------------


def library_dir() -> Path:
    """Folder of the user phase library (not created by this call).

    ``$TEM_OPERANDO_DATA_DIR/phases`` when the environment variable is set, otherwise
    ``platformdirs.user_data_dir("tem-operando")/phases``.
    """
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        import platformdirs

        root = platformdirs.user_data_dir("tem-operando")
    return Path(root) / "phases"


def _user_files() -> dict[str, Path]:
    folder = library_dir()
    if not folder.is_dir():
        return {}
    files = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.endswith(".rings.json"):
            continue
        files[path.stem] = path
    return files


def _read_user_phase(path: Path) -> PhaseSpec:
    try:
        return PhaseSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise PhaseLibraryError(f"not a valid phase file ({exc}); remove or fix it", path) from exc


def list_phases() -> list[str]:
    """Names of all library phases: the builtin ones (in DOMAIN.md order), then user phases."""
    return list(_BUILTIN) + [name for name in _user_files() if name not in _BUILTIN]


def _resolve_name(name: str) -> str:
    """The library's spelling of ``name`` (case-insensitive); UnknownPhaseError if absent."""
    if not isinstance(name, str):
        raise TypeError(f"phase name must be a str, not {type(name).__name__}")
    wanted = name.strip().lower()
    for candidate in list_phases():
        if candidate.lower() == wanted:
            return candidate
    raise UnknownPhaseError(name, list_phases())


def get_phase(name: str) -> PhaseSpec:
    """The :class:`PhaseSpec` of a builtin or user phase (name matched case-insensitively).

    Raises
    ------
    UnknownPhaseError
        If no phase has that name; the message lists the available names.
    """
    canonical = _resolve_name(name)
    if canonical in _BUILTIN:
        return _BUILTIN[canonical]
    return _read_user_phase(_user_files()[canonical])


def _normalise_cellpar(cellpar: float | Sequence[float]) -> tuple[float, ...]:
    values = np.atleast_1d(np.asarray(cellpar, dtype=float)).ravel()
    if values.size == 1:
        values = np.array([values[0]] * 3 + [90.0] * 3)
    elif values.size == 3:
        values = np.concatenate([values, [90.0] * 3])
    elif values.size != 6:
        raise PhaseLibraryError(
            f"cellpar must be a (cubic), (a, b, c) or (a, b, c, alpha, beta, gamma); got "
            f"{values.size} numbers"
        )
    if not np.all(np.isfinite(values)) or np.any(values[:3] <= 0):
        raise PhaseLibraryError(f"lattice parameters must be finite and positive, got {values[:3]}")
    if np.any(values[3:] <= 0) or np.any(values[3:] >= 180):
        raise PhaseLibraryError(f"cell angles must lie between 0 and 180 degrees, got {values[3:]}")
    return tuple(float(v) for v in values)


def _normalise_sites(sites: Iterable[Sequence[Any]]) -> tuple[Site, ...]:
    from ase.data import chemical_symbols

    out = []
    for site in sites:
        site = list(site)
        if len(site) not in (4, 5):
            raise PhaseLibraryError(
                f"each site must be (element, x, y, z) or (element, x, y, z, occupancy); got {site}"
            )
        element = str(site[0]).strip()
        element = element[:1].upper() + element[1:].lower()
        if element not in chemical_symbols[1:]:
            raise PhaseLibraryError(f"unknown chemical element {site[0]!r} in site {site}")
        try:
            numbers = [float(v) for v in site[1:]]
        except (TypeError, ValueError) as exc:
            raise PhaseLibraryError(f"site coordinates must be numbers, got {site}") from exc
        if not np.all(np.isfinite(numbers)):
            raise PhaseLibraryError(f"site coordinates must be finite, got {site}")
        if len(numbers) == 4 and not 0 < numbers[3] <= 1:
            raise PhaseLibraryError(f"occupancy must lie in (0, 1], got {numbers[3]} in {site}")
        if len(numbers) == 4 and numbers[3] == 1.0:
            numbers = numbers[:3]
        out.append((element, *numbers))
    if not out:
        raise PhaseLibraryError("a phase needs at least one atom site")
    return tuple(out)


def _check_new_name(name: str, overwrite: bool) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PhaseLibraryError(
            f"invalid phase name {name!r}: use letters, digits, '_', '.' or '-', starting with a "
            "letter (it becomes a file name and a results column frac_<name>)"
        )
    if name.lower() == AMORPHOUS:
        raise PhaseLibraryError(f"{AMORPHOUS!r} is reserved for the amorphous halo")
    for builtin in _BUILTIN:
        if builtin.lower() == name.lower():
            raise PhaseLibraryError(f"{name!r} is a builtin phase; choose another name")
    for existing, path in _user_files().items():
        if existing.lower() == name.lower():
            if not overwrite:
                raise PhaseLibraryError(
                    f"a user phase {existing!r} already exists ({path}); pass overwrite=True to "
                    "replace it or remove_phase() it first"
                )
            _remove_user_files(existing)
    return name


def _formula_of(spec_sites: Sequence[Site], space_group: int, cellpar, setting: int,
                axes: str) -> str:
    from ase.formula import Formula

    symbols, _, _, occupancy = _expand(space_group, cellpar, spec_sites, setting, axes)
    counts: dict[str, float] = {}
    for symbol, occ in zip(symbols, occupancy):
        counts[symbol] = counts.get(symbol, 0.0) + float(occ)
    if all(abs(v - round(v)) < 1e-6 for v in counts.values()):
        return Formula.from_dict({k: round(v) for k, v in counts.items()}).reduce()[0].format("metal")
    return "".join(f"{k}{v:g}" for k, v in sorted(counts.items()))


def add_phase(
    name: str,
    space_group: int | str,
    cellpar: float | Sequence[float],
    sites: Iterable[Sequence[Any]],
    *,
    formula: str | None = None,
    description: str = "",
    setting: int = 1,
    axes: str = "abc",
    overwrite: bool = False,
    source: str = "user",
) -> PhaseSpec:
    """Add a phase to the user library from its space group, lattice and sites.

    Parameters
    ----------
    name : str
        New library name (letters, digits, ``_.-``; not a builtin name, not ``"amorphous"``).
    space_group : int or str
        Space-group number (1–230) or Hermann–Mauguin symbol in the standard setting
        (e.g. ``"F m -3 m"``).
    cellpar : float or sequence of float
        ``a`` (cubic), ``(a, b, c)`` (orthogonal axes) or ``(a, b, c, alpha, beta, gamma)``;
        lengths in Å, angles in degrees.
    sites : iterable of sequence
        Asymmetric unit: ``(element, x, y, z)`` or ``(element, x, y, z, occupancy)``, fractional.
    formula : str, optional
        Chemical formula; derived from the expanded cell when omitted.
    description : str
        Free text stored with the phase.
    setting : int
        ase space-group setting (1: origin choice 1 / hexagonal axes; 2: origin choice 2).
    axes : str
        Axis permutation relative to the standard setting (see :class:`PhaseSpec`).
    overwrite : bool
        Replace an existing user phase of the same name.
    source : str
        Provenance recorded in the phase (``"user"`` or a CIF path).

    Returns
    -------
    PhaseSpec
        The stored phase.

    Raises
    ------
    PhaseLibraryError
        On an invalid name, cell, site list or space group.
    """
    name = _check_new_name(name, overwrite)
    space_group = _space_group_number(space_group, setting)
    if sorted(axes) != ["a", "b", "c"]:
        raise PhaseLibraryError(f"axes must be a permutation of 'abc', got {axes!r}")
    cellpar_t = _normalise_cellpar(cellpar)
    sites_t = _normalise_sites(sites)
    # Expanding validates the combination (and catches sites that clash under symmetry).
    formula = formula or _formula_of(sites_t, space_group, cellpar_t, setting, axes)
    spec = PhaseSpec(
        name=name, formula=formula, space_group=space_group,
        cellpar=cellpar_t,  # type: ignore[arg-type]
        sites=sites_t, description=description, source=source, setting=int(setting), axes=axes,
    )
    folder = library_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    atomic_write_text(path, json.dumps(spec.to_dict(), indent=2))
    return spec


def add_phase_from_cif(
    path: str | os.PathLike,
    name: str | None = None,
    *,
    description: str = "",
    overwrite: bool = False,
) -> PhaseSpec:
    """Add a phase to the user library from a CIF file (read with ``ase.io.read``).

    The structure is stored by its asymmetric unit when ase recognises the space group (so that
    ring labels use the crystal's symmetry), otherwise as the full cell in P1.

    Parameters
    ----------
    path : str or os.PathLike
        The CIF file.
    name : str, optional
        Library name; defaults to the reduced chemical formula (e.g. ``"Na3Sb"``), with ``_cif``
        (``_cif2``, ...) appended if that name is taken.
    description : str
        Free text stored with the phase (defaults to the CIF's file name).
    overwrite : bool
        Replace an existing user phase of the same name.

    Returns
    -------
    PhaseSpec

    Raises
    ------
    PhaseLibraryError
        If the file is missing, is not a readable CIF or holds no periodic structure; the
        message names the file.
    """
    import ase.io

    cif_path = Path(path).expanduser().resolve()
    if not cif_path.is_file():
        raise PhaseLibraryError("CIF file not found", cif_path)
    try:
        atoms = ase.io.read(str(cif_path), format="cif", index=0)
    except Exception as exc:  # ase raises many types for malformed files
        raise PhaseLibraryError(
            f"could not read a crystal structure from this CIF file ({type(exc).__name__}: {exc})",
            cif_path,
        ) from exc
    if len(atoms) == 0 or not np.all(atoms.pbc) or atoms.cell.volume <= 1e-6:
        raise PhaseLibraryError("the CIF file holds no periodic crystal structure (cell and atoms)",
                                cif_path)
    structure = _cif_asymmetric_unit(cif_path, n_positions=len(atoms))
    if structure is not None:
        space_group, setting, cellpar, sites = structure
    else:  # the full cell as ase expanded it, in P1 (dominant species on mixed sites)
        space_group, setting = 1, 1
        cellpar = tuple(float(v) for v in atoms.cell.cellpar())
        frac = atoms.get_scaled_positions(wrap=True)
        sites = [(sym, *map(float, xyz)) for sym, xyz in zip(atoms.get_chemical_symbols(), frac)]
    if name is None:
        base = re.sub(r"[^A-Za-z0-9_.\-]", "", _formula_of(sites, space_group, cellpar, setting,
                                                          "abc")) or "phase"
        taken = {n.lower() for n in list_phases()} | {AMORPHOUS}
        name = base
        for suffix in ["", "_cif", *(f"_cif{i}" for i in range(2, 1000))]:
            name = base + suffix
            if name.lower() not in taken:
                break
    return add_phase(
        name, space_group, cellpar, sites,
        description=description or f"from CIF file {cif_path.name}",
        setting=setting, overwrite=overwrite, source=str(cif_path),
    )


def _cif_asymmetric_unit(cif_path: Path, n_positions: int):
    """Space group, setting, cellpar and asymmetric-unit sites (with occupancies) of a CIF.

    Returns None unless the sites expand back to the ``n_positions`` distinct atom positions
    ase found, so that a misread symmetry can never change the structure.
    """
    from ase.io.cif import parse_cif

    try:
        block = next(b for b in parse_cif(str(cif_path)) if b.has_structure())
        asym = block.get_unsymmetrized_structure()
        sg = block.get_spacegroup(True)
        cellpar = tuple(float(v) for v in block.get_cellpar())
        occupancies = block.get("_atom_site_occupancy")
        symbols = asym.get_chemical_symbols()
        frac = asym.get_scaled_positions(wrap=True)
        if occupancies is None or np.ndim(occupancies) == 0:
            occupancies = [1.0] * len(symbols)
        sites = [
            (sym, *map(float, xyz), min(float(occ), 1.0))
            for sym, xyz, occ in zip(symbols, frac, occupancies)
        ]
        _, expanded, _, _ = _expand(int(sg.no), cellpar, _normalise_sites(sites),
                                    int(sg.setting), "abc")
    except Exception:  # noqa: BLE001 - unusual CIFs: the caller falls back to P1
        return None
    n_unique = len(np.unique(np.round(np.mod(expanded, 1.0), 4) % 1.0, axis=0))
    if n_unique != n_positions:
        return None
    return int(sg.no), int(sg.setting), cellpar, sites


def _remove_user_files(name: str) -> None:
    folder = library_dir()
    for path in (folder / f"{name}.json", folder / f"{name}.rings.json"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_phase(name: str) -> None:
    """Remove a user phase (and its cached ring list) from the library.

    Raises
    ------
    UnknownPhaseError
        If there is no phase of that name.
    PhaseLibraryError
        If the phase is builtin.
    """
    canonical = _resolve_name(name)
    if canonical in _BUILTIN:
        raise PhaseLibraryError(f"{canonical!r} is a builtin phase and cannot be removed")
    _remove_user_files(canonical)


# --------------------------------------------------------------------------------------------
# Structure expansion (ase) and kinematic structure factors (py4DSTEM)
# --------------------------------------------------------------------------------------------


def _space_group_number(space_group: int | str, setting: int = 1) -> int:
    if isinstance(space_group, (int, np.integer)) and not isinstance(space_group, bool):
        number = int(space_group)
        if not 1 <= number <= 230:
            raise PhaseLibraryError(f"space-group number must lie in 1..230, got {number}")
        return number
    if isinstance(space_group, str):
        from ase.spacegroup import Spacegroup

        try:
            return int(Spacegroup(space_group.strip(), setting).no)
        except Exception as exc:
            raise PhaseLibraryError(
                f"unknown space-group symbol {space_group!r} (give the number, or the standard "
                "Hermann-Mauguin symbol with spaces, e.g. 'F m -3 m')"
            ) from exc
    raise PhaseLibraryError(f"space_group must be an int or a symbol, got {space_group!r}")


def _axes_permutation(axes: str) -> list[int]:
    """perm[i] = index of the given axis that is standard axis i."""
    return ["abc".index(ch) for ch in axes]


def _expand(space_group: int, cellpar, sites, setting: int, axes: str):
    """Expand asymmetric-unit sites to the full cell; returns (symbols, frac, cellpar, occ)."""
    from ase.spacegroup import crystal

    perm = _axes_permutation(axes)
    cellpar = [float(v) for v in cellpar]
    std_cellpar = [cellpar[p] for p in perm] + [cellpar[3 + p] for p in perm]
    symbols = [s[0] for s in sites]
    basis = [[float(s[1 + p]) for p in perm] for s in sites]
    occupancies = [float(s[4]) if len(s) > 4 else 1.0 for s in sites]
    if not any(o < 1 for o in occupancies):
        try:
            atoms = crystal(
                symbols, basis, spacegroup=int(space_group), setting=int(setting),
                cellpar=std_cellpar, onduplicates="error", primitive_cell=False, symprec=1e-3,
            )
        except Exception as exc:
            raise PhaseLibraryError(
                f"cannot expand the sites in space group {space_group} (setting {setting}): {exc}"
            ) from exc
        std_frac = atoms.get_scaled_positions(wrap=True)
        out_symbols = atoms.get_chemical_symbols()
        out_occ = np.ones(len(atoms))
    else:
        # Partial occupancy: expand every site on its own (mixed sites share coordinates).
        std_frac_parts, out_symbols, occ_parts = [], [], []
        for symbol, b, occ in zip(symbols, basis, occupancies):
            try:
                part = crystal([symbol], [b], spacegroup=int(space_group), setting=int(setting),
                               cellpar=std_cellpar, primitive_cell=False, symprec=1e-3)
            except Exception as exc:
                raise PhaseLibraryError(
                    f"cannot expand site {symbol} {b} in space group {space_group}: {exc}"
                ) from exc
            std_frac_parts.append(part.get_scaled_positions(wrap=True))
            out_symbols += part.get_chemical_symbols()
            occ_parts.append(np.full(len(part), occ))
        std_frac = np.vstack(std_frac_parts)
        out_occ = np.concatenate(occ_parts)
    frac = np.empty_like(std_frac)
    for i, p in enumerate(perm):
        frac[:, p] = std_frac[:, i]
    return out_symbols, np.mod(frac, 1.0), tuple(cellpar), out_occ


def expand_sites(phase: str | PhaseSpec) -> tuple[list[str], np.ndarray, tuple[float, ...], np.ndarray]:
    """Full unit cell of a phase (in the setting its sites are given in).

    Returns
    -------
    symbols : list of str
        Element of each atom.
    frac : ndarray, shape (N, 3)
        Fractional coordinates.
    cellpar : tuple of 6 float
        ``(a, b, c, alpha, beta, gamma)`` in Å and degrees.
    occupancy : ndarray, shape (N,)
        Site occupancies (1 for ordinary sites).
    """
    spec = phase if isinstance(phase, PhaseSpec) else get_phase(phase)
    return _expand(spec.space_group, spec.cellpar, spec.sites, spec.setting, spec.axes)


class _NumpyAliasProxy:
    """Stands in for ``numpy`` inside py4DSTEM's crystal module under NumPy ≥ 2.

    py4DSTEM 0.14.x passes the dtype strings ``"float_"``/``"complex_"`` that NumPy 2 removed;
    this proxy maps them to ``float64``/``complex128`` and forwards everything else.
    """

    _ALIASES: ClassVar[dict[str, str]] = {"float_": "float64", "complex_": "complex128"}

    def __init__(self, module):
        self._np = module

    def __getattr__(self, attr):
        return getattr(self._np, attr)

    def _dtype(self, dtype):
        return self._ALIASES.get(dtype, dtype) if isinstance(dtype, str) else dtype

    def asarray(self, a, dtype=None, *args, **kwargs):
        return self._np.asarray(a, self._dtype(dtype), *args, **kwargs)

    def array(self, a, dtype=None, *args, **kwargs):
        return self._np.array(a, self._dtype(dtype), *args, **kwargs)

    def zeros(self, shape, dtype=float, *args, **kwargs):
        return self._np.zeros(shape, self._dtype(dtype), *args, **kwargs)

    def ones(self, shape, dtype=None, *args, **kwargs):
        return self._np.ones(shape, self._dtype(dtype), *args, **kwargs)


_PY4DSTEM_LOCK = threading.Lock()


@contextlib.contextmanager
def _py4dstem_crystal_module() -> Iterator[Any]:
    """py4DSTEM's crystal module, made NumPy-2-safe for the duration of the block."""
    import py4DSTEM.process.diffraction.crystal as crystal_module

    with _PY4DSTEM_LOCK:
        original = crystal_module.np
        needs_proxy = int(np.__version__.split(".")[0]) >= 2 and not isinstance(
            original, _NumpyAliasProxy
        )
        if needs_proxy:
            crystal_module.np = _NumpyAliasProxy(original)
        try:
            yield crystal_module
        finally:
            crystal_module.np = original


def _py4dstem_version() -> str:
    try:
        from importlib.metadata import version

        return version("py4DSTEM")
    except Exception:  # noqa: BLE001 - metadata is informative only
        return "unknown"


def reflections(phase: str | PhaseSpec, q_max_inv_nm: float = 10.0) -> pd.DataFrame:
    """All kinematic reflections of a phase up to ``q_max`` (one row per hkl, Friedel pairs both).

    Computed with py4DSTEM: ``Crystal(positions, numbers, cellpar, occupancy)`` and
    ``calculate_structure_factors(k_max=q_max/10)`` (py4DSTEM works in 1/Å).

    Parameters
    ----------
    phase : str or PhaseSpec
        Library name or specification.
    q_max_inv_nm : float
        Largest scattering vector ``q = 1/d`` to include, in 1/nm.

    Returns
    -------
    DataFrame
        Columns ``h, k, l`` (int), ``q_inv_nm`` (1/nm), ``d_nm`` (nm) and ``F2`` (|F|² per unit
        cell volume squared, Å⁻⁴, with electron scattering factors in Å), sorted by q.
    """
    spec = phase if isinstance(phase, PhaseSpec) else get_phase(phase)
    if not q_max_inv_nm > 0:
        raise ValueError(f"q_max_inv_nm must be positive, got {q_max_inv_nm}")
    symbols, frac, cellpar, occupancy = _expand(
        spec.space_group, spec.cellpar, spec.sites, spec.setting, spec.axes
    )
    from ase.data import atomic_numbers

    numbers = np.array([atomic_numbers[s] for s in symbols], dtype=np.intp)
    k_max = q_max_inv_nm / 10.0
    with _py4dstem_crystal_module() as crystal_module:
        xtal = crystal_module.Crystal(frac, numbers, np.asarray(cellpar, float), occupancy=occupancy)
        xtal.calculate_structure_factors(k_max=k_max, tol_structure_factor=_TOL_STRUCTURE_FACTOR)
        hkl = np.rint(np.asarray(xtal.hkl)).astype(int).T
        g = np.asarray(xtal.g_vec_leng, dtype=float)
        f2 = np.asarray(xtal.struct_factors_int, dtype=float)
    keep = g > 1e-9  # drop the 000 beam
    table = pd.DataFrame({
        "h": hkl[keep, 0], "k": hkl[keep, 1], "l": hkl[keep, 2],
        "q_inv_nm": 10.0 * g[keep], "d_nm": 0.1 / g[keep], "F2": f2[keep],
    })
    return table.sort_values(["q_inv_nm", "h", "k", "l"], kind="stable").reset_index(drop=True)


def _laue_rotations(spec: PhaseSpec) -> np.ndarray:
    """Point-group rotations (plus inversion) acting on row vectors hkl in the given setting."""
    from ase.spacegroup import Spacegroup

    rotations = np.asarray(Spacegroup(spec.space_group, spec.setting).rotations, dtype=int)
    perm = _axes_permutation(spec.axes)
    if perm != [0, 1, 2]:
        p = np.zeros((3, 3), dtype=int)
        for i, j in enumerate(perm):
            p[i, j] = 1  # x_std = P x_given
        rotations = np.einsum("ij,njk,kl->nil", p.T, rotations, p)
    return np.concatenate([rotations, -rotations])


def _canonical_hkl(hkl: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """A representative of each reflection's symmetry family: fewest negative indices, then
    the lexicographically largest (h, k, l)."""
    orbit = np.einsum("ni,oij->noj", hkl, rotations)  # (N, ops, 3): h' = h R
    n_neg = (orbit < 0).sum(axis=2)
    base = 512
    code = ((orbit[..., 0] + 256) * base + (orbit[..., 1] + 256)) * base + (orbit[..., 2] + 256)
    score = n_neg.astype(np.int64) * base**3 - code
    best = np.argmin(score, axis=1)
    return orbit[np.arange(len(hkl)), best]


def _hkl_string(hkl: Sequence[int]) -> str:
    if all(abs(int(v)) < 10 for v in hkl):
        return "".join(str(int(v)) for v in hkl)
    return " ".join(str(int(v)) for v in hkl)


def _rings_from_reflections(table: pd.DataFrame, spec: PhaseSpec) -> pd.DataFrame:
    """Merge reflections of equal d into rings; unnormalised intensity = Σ |F|² over the ring."""
    if table.empty:
        return pd.DataFrame({c: [] for c in _RING_COLUMNS})
    q = table["q_inv_nm"].to_numpy()
    hkl = table[["h", "k", "l"]].to_numpy()
    f2 = table["F2"].to_numpy()
    family = _canonical_hkl(hkl, _laue_rotations(spec))
    triclinic = spec.space_group <= 2
    # Group consecutive reflections (sorted by q) that lie within the tolerance of the ring start.
    ring_id = np.zeros(len(q), dtype=int)
    start = q[0]
    for i in range(1, len(q)):
        if q[i] - start > _D_MERGE_RTOL * start:
            ring_id[i] = ring_id[i - 1] + 1
            start = q[i]
        else:
            ring_id[i] = ring_id[i - 1]
    rows = []
    for rid in range(ring_id[-1] + 1):
        members = np.flatnonzero(ring_id == rid)
        fam_intensity: dict[tuple[int, ...], float] = {}
        for m in members:
            key = tuple(int(v) for v in family[m])
            fam_intensity[key] = fam_intensity.get(key, 0.0) + float(f2[m])
        ordered = sorted(fam_intensity.items(), key=lambda kv: (-kv[1], [-v for v in kv[0]]))
        top = ordered[0][1]
        names, named = [], []
        for key, value in ordered:
            if value < _LABEL_FAMILY_SHARE * top:
                break
            # In a triclinic spec (e.g. a CIF stored in P1) families of identical intensity are
            # most likely equivalent under a symmetry the spec does not declare: name one.
            if triclinic and any(abs(value - v) <= 1e-6 * top for v in named):
                continue
            names.append(_hkl_string(key))
            named.append(value)
        q_ring = float(np.average(q[members], weights=np.maximum(f2[members], 1e-300)))
        rows.append({
            "q_inv_nm": q_ring,
            "d_nm": 1.0 / q_ring,
            "hkl": "+".join(names[:_MAX_FAMILIES_IN_LABEL]),
            "multiplicity": len(members),
            "intensity": float(f2[members].sum()),
        })
    return pd.DataFrame(rows, columns=_RING_COLUMNS)


def _raw_rings(spec: PhaseSpec, q_max_inv_nm: float) -> pd.DataFrame:
    return _rings_from_reflections(reflections(spec, q_max_inv_nm), spec)


def _finalise(raw: pd.DataFrame, q_max_inv_nm: float) -> pd.DataFrame:
    """Cut at q_max, normalise the strongest ring to 1 and drop rings weaker than 1e-4."""
    rings = raw[raw["q_inv_nm"] <= q_max_inv_nm * (1 + 1e-12)].copy()
    if rings.empty:
        return pd.DataFrame({
            "q_inv_nm": np.array([], float), "d_nm": np.array([], float),
            "hkl": pd.Series([], dtype=str), "multiplicity": np.array([], int),
            "intensity": np.array([], float),
        })
    rings["intensity"] = rings["intensity"] / rings["intensity"].max()
    rings = rings[rings["intensity"] >= _MIN_RELATIVE_INTENSITY]
    rings = rings.sort_values("q_inv_nm", kind="stable").reset_index(drop=True)
    rings["multiplicity"] = rings["multiplicity"].astype(int)
    return rings[_RING_COLUMNS]


def _rings_to_json(raw: pd.DataFrame) -> dict[str, list]:
    return {
        "q_inv_nm": [float(v) for v in raw["q_inv_nm"]],
        "hkl": [str(v) for v in raw["hkl"]],
        "multiplicity": [int(v) for v in raw["multiplicity"]],
        "intensity": [float(v) for v in raw["intensity"]],
    }


def _rings_from_json(data: dict[str, list]) -> pd.DataFrame:
    q = np.asarray(data["q_inv_nm"], dtype=float)
    return pd.DataFrame({
        "q_inv_nm": q,
        "d_nm": 1.0 / q if q.size else q,
        "hkl": [str(v) for v in data["hkl"]],
        "multiplicity": np.asarray(data["multiplicity"], dtype=int),
        "intensity": np.asarray(data["intensity"], dtype=float),
    }, columns=_RING_COLUMNS)


@functools.lru_cache(maxsize=1)
def _builtin_cache() -> dict[str, Any]:
    try:
        return json.loads(_CACHE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"phases": {}}


def _cached_builtin_raw(spec: PhaseSpec) -> pd.DataFrame | None:
    entry = _builtin_cache().get("phases", {}).get(spec.name)
    if entry is None or entry.get("fingerprint") != spec.fingerprint():
        return None
    return _rings_from_json(entry["rings"])


def _user_cache_path(spec: PhaseSpec) -> Path:
    return library_dir() / f"{spec.name}.rings.json"


def _cached_user_raw(spec: PhaseSpec, q_max_inv_nm: float) -> pd.DataFrame | None:
    path = _user_cache_path(spec)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("fingerprint") != spec.fingerprint() or data.get("q_max_inv_nm", 0) < q_max_inv_nm:
        return None
    return _rings_from_json(data["rings"])


def _store_user_raw(spec: PhaseSpec, q_max_inv_nm: float, raw: pd.DataFrame) -> None:
    path = _user_cache_path(spec)
    payload = {
        "format": 1, "phase": spec.name, "fingerprint": spec.fingerprint(),
        "q_max_inv_nm": float(q_max_inv_nm), "py4DSTEM": _py4dstem_version(),
        "rings": _rings_to_json(raw),
    }
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(payload))


def _is_user_phase(spec: PhaseSpec) -> bool:
    path = _user_files().get(spec.name)
    if path is None:
        return False
    try:
        return _read_user_phase(path).fingerprint() == spec.fingerprint()
    except PhaseLibraryError:
        return False


def ring_list(phase: str | PhaseSpec, q_max_inv_nm: float = 10.0) -> pd.DataFrame:
    """The diffraction rings of a polycrystalline phase, up to ``q_max``.

    Reflections whose d-spacings agree within 1e-4 (relative) are merged into one ring.  Ring
    intensities are kinematic: the sum of |F|² over the ring's reflections (i.e. |F|² × multiplicity
    for a single family), with electron scattering factors, normalised so that the strongest ring
    is 1; rings weaker than 1e-4 (systematic absences) are dropped.  No Debye–Waller, Lorentz or
    thickness factors are applied.

    Builtin phases are read from the precomputed package file when ``q_max <= 12`` 1/nm; user
    phases are computed once and cached in the library folder; anything else is computed with
    py4DSTEM (a few seconds, mostly its import).

    Parameters
    ----------
    phase : str or PhaseSpec
        Library name (case-insensitive) or a specification.
    q_max_inv_nm : float
        Largest ``q = 1/d`` to include, in 1/nm (default 10 1/nm, i.e. d >= 0.1 nm).

    Returns
    -------
    DataFrame
        One row per ring, sorted by q, with columns

        - ``q_inv_nm`` : ring position q = 1/d in 1/nm
        - ``d_nm`` : lattice spacing d in nm
        - ``hkl`` : Miller indices of the strongest family, e.g. ``"111"``; several families of
          comparable strength at the same d are joined, e.g. ``"333+511"``; indices are in the
          setting of the phase (three-index hkl for hexagonal cells; negative indices written
          ``"11-1"``)
        - ``multiplicity`` : number of reflections (hkl and -h-k-l counted separately) in the ring
        - ``intensity`` : relative intensity, strongest ring = 1

    Raises
    ------
    UnknownPhaseError
        For an unknown phase name.
    ValueError
        If ``q_max_inv_nm`` is not positive.
    """
    if not (isinstance(q_max_inv_nm, (int, float, np.floating)) and q_max_inv_nm > 0):
        raise ValueError(f"q_max_inv_nm must be a positive number of 1/nm, got {q_max_inv_nm!r}")
    spec = phase if isinstance(phase, PhaseSpec) else get_phase(phase)
    q_max = float(q_max_inv_nm)
    raw = None
    if spec.name in _BUILTIN and _BUILTIN[spec.name].fingerprint() == spec.fingerprint():
        if q_max <= BUILTIN_CACHE_Q_MAX_INV_NM:
            raw = _cached_builtin_raw(spec)
        if raw is None:
            raw = _raw_rings(spec, max(q_max, BUILTIN_CACHE_Q_MAX_INV_NM))
    elif _is_user_phase(spec):
        reach = max(q_max, BUILTIN_CACHE_Q_MAX_INV_NM)
        raw = _cached_user_raw(spec, q_max)
        if raw is None:
            raw = _raw_rings(spec, reach)
            _store_user_raw(spec, reach, raw)
    else:
        raw = _raw_rings(spec, q_max)
    return _finalise(raw, q_max)


# --------------------------------------------------------------------------------------------
# Cache of the builtin phases
# --------------------------------------------------------------------------------------------


def rebuild_cache(path: str | os.PathLike | None = None,
                  q_max_inv_nm: float = BUILTIN_CACHE_Q_MAX_INV_NM) -> Path:
    """Recompute the ring lists of all builtin phases and write the package cache file.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Output file (default: ``tem_operando/data/phase_rings.json``).
    q_max_inv_nm : float
        Reach of the cached ring lists in 1/nm (the library assumes 12).

    Returns
    -------
    Path
        The file written.
    """
    target = Path(path) if path is not None else _CACHE_FILE
    phases = {}
    for spec in _BUILTIN_SPECS:
        raw = _raw_rings(spec, q_max_inv_nm)
        phases[spec.name] = {
            "fingerprint": spec.fingerprint(),
            "formula": spec.formula,
            "space_group": spec.space_group,
            "cellpar": list(spec.cellpar),
            "rings": _rings_to_json(raw),
        }
    payload = {
        "format": 1,
        "description": (
            "Kinematic electron-diffraction ring lists of the builtin phases of "
            "tem_operando.diffraction.phases (unnormalised intensities: sum of |F|^2 over each "
            "ring, |F| in 1/Å^2 as py4DSTEM gives it). Generated by "
            "'python -m tem_operando.diffraction.phases --rebuild-cache'; do not edit."
        ),
        "q_max_inv_nm": float(q_max_inv_nm),
        "algorithm_version": _RING_ALGORITHM_VERSION,
        "py4DSTEM": _py4dstem_version(),
        "numpy": np.__version__,
        "phases": phases,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(payload, indent=1) + "\n")
    _builtin_cache.cache_clear()
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m tem_operando.diffraction.phases [--rebuild-cache | --list]``."""
    parser = argparse.ArgumentParser(prog="python -m tem_operando.diffraction.phases",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild-cache", action="store_true",
                        help="recompute the builtin ring lists into tem_operando/data/phase_rings.json")
    parser.add_argument("--output", default=None, help="write the cache here instead")
    parser.add_argument("--list", action="store_true", help="list the library phases")
    parser.add_argument("--rings", metavar="PHASE", help="print the ring list of PHASE")
    parser.add_argument("--q-max", type=float, default=10.0, help="q_max in 1/nm for --rings")
    args = parser.parse_args(argv)
    if args.rebuild_cache:
        target = rebuild_cache(args.output)
        print(f"wrote {target}")
    if args.list:
        for name in list_phases():
            spec = get_phase(name)
            print(f"{name:10s} {spec.formula:10s} SG {spec.space_group:3d}  {spec.description}")
    if args.rings:
        with pd.option_context("display.max_rows", None, "display.width", 120):
            print(ring_list(args.rings, args.q_max).to_string(index=False))
    if not (args.rebuild_cache or args.list or args.rings):
        parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
