"""Objects per frame, drift registration and trackpy linking.

>>> from tem_operando.track import estimate_drift, measure_objects, link_objects   # doctest: +SKIP
>>> drift_px = estimate_drift(frames)                                              # doctest: +SKIP
>>> obj = measure_objects(classes, instances, 0, time_s, nm_per_px, drift_px * nm_per_px)  # doctest: +SKIP
>>> obj = link_objects(obj)                                                        # doctest: +SKIP
"""

from .drift import DriftState, estimate_drift
from .link import default_search_range_nm, link_objects
from .measure import MEASURE_EXTRA_COLUMNS, measure_objects
from .frames import frames_table, objects_table

__all__ = ["DriftState", "estimate_drift", "default_search_range_nm", "link_objects",
           "MEASURE_EXTRA_COLUMNS", "measure_objects", "frames_table", "objects_table"]
