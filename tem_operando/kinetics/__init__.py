"""Kinetics from linked objects: swelling, expansion, reaction fronts, rate laws, uncertainties.

>>> from tem_operando.kinetics import analyze_kinetics          # doctest: +SKIP
>>> tracks, fronts = analyze_kinetics(linked_objects, nm_per_px=1.0)   # doctest: +SKIP
"""

from .analyze import analyze_kinetics, fracture_events, population_stats
from .fits import fit_line, ramp_fit, rate_law_fit, segment_fit
from .fronts import front_positions, front_table
from .swelling import swelling_fit, swelling_table

__all__ = ["analyze_kinetics", "fracture_events", "population_stats", "fit_line", "ramp_fit",
           "rate_law_fit", "segment_fit", "front_positions", "front_table", "swelling_fit",
           "swelling_table"]
