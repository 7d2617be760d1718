"""The pipeline: every stage on a recording, chunk by chunk, locally or on a Dask cluster.

>>> from tem_operando.pipeline import analyze, AnalyzeOptions       # doctest: +SKIP
>>> analyze("session.hspy", "out/session", AnalyzeOptions())         # doctest: +SKIP
"""

from .analyze import AnalyzeOptions, analyze
from .batch import batch
from .follow import follow

__all__ = ["AnalyzeOptions", "analyze", "batch", "follow"]
