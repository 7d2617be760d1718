"""JSON conversion shared by every module that writes JSON (summary, truth, sidecars, journal)."""

from __future__ import annotations

import math
from dataclasses import asdict, is_dataclass
from pathlib import PurePath
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples, paths and dataclasses to JSON types.

    Non-finite floats become ``None`` (JSON has no NaN), so files stay strict JSON.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, PurePath):
        return str(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(asdict(obj))
    return obj
