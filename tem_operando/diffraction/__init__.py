"""Diffraction: SAED ring patterns → phase fractions, rings and a phase timeline.

Pipeline entry point (one analyzer per series, one call per chunk)::

    from tem_operando.diffraction import PatternAnalyzer
    analyzer = PatternAnalyzer(inv_nm_per_px=rec.inv_nm_per_px, phases=["Sn", "Na15Sn4"])
    for chunk in rec.iter_chunks(64):
        phases_df, rings_df = analyzer.process(chunk.frames, chunk.index, times)

Modules: :mod:`.phases` (library), :mod:`.geometry` (centre, ellipse, mask, sparse radial
binning), :mod:`.profile`, :mod:`.calibrate`, :mod:`.unmix`, :mod:`.rings`, :mod:`.timeline`,
:mod:`.analyze`.  Names are imported lazily (scipy and pandas load on first use).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AMORPHOUS": "phases", "PhaseSpec": "phases", "UnknownPhaseError": "phases",
    "PhaseLibraryError": "phases", "add_phase": "phases", "add_phase_from_cif": "phases",
    "get_phase": "phases", "list_phases": "phases", "remove_phase": "phases",
    "ring_list": "phases",
    "PatternGeometry": "geometry", "RadialBinner": "geometry", "find_center": "geometry",
    "fit_geometry": "geometry", "auto_mask": "geometry", "saturation_mask": "geometry",
    "Calibration": "calibrate", "calibrate_from_profile": "calibrate",
    "require_calibration": "calibrate",
    "Unmixer": "unmix", "UnmixResult": "unmix",
    "find_ring_peaks": "rings", "assign_ring": "rings",
    "phase_transitions": "timeline", "presence": "timeline",
    "PatternAnalyzer": "analyze", "DiffractionSetup": "analyze", "analyze_patterns": "analyze",
}

__all__ = [
    "AMORPHOUS",
    "Calibration",
    "DiffractionSetup",
    "PatternAnalyzer",
    "PatternGeometry",
    "PhaseLibraryError",
    "PhaseSpec",
    "RadialBinner",
    "UnknownPhaseError",
    "UnmixResult",
    "Unmixer",
    "add_phase",
    "add_phase_from_cif",
    "analyze_patterns",
    "assign_ring",
    "auto_mask",
    "calibrate_from_profile",
    "find_center",
    "find_ring_peaks",
    "fit_geometry",
    "get_phase",
    "list_phases",
    "phase_transitions",
    "presence",
    "remove_phase",
    "require_calibration",
    "ring_list",
    "saturation_mask",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__():
    return __all__
