"""tem-operando: automatic, reviewable analysis of in situ TEM recordings of battery electrodes.

Import the stages you need, e.g. ``from tem_operando.io import open_recording``; heavy
dependencies (torch, py4DSTEM, Qt) are only imported by the modules that use them.
"""

__version__ = "0.1.0"

from .errors import TemOperandoError, RecordingError, CalibrationError  # noqa: F401
