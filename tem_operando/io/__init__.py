"""Ingest: open recorded and growing camera streams lazily, with their calibration.

>>> from tem_operando.io import open_recording          # doctest: +SKIP
>>> rec = open_recording("session.emd")                 # doctest: +SKIP
>>> rec.nm_per_px, rec.fps, rec.data.shape              # doctest: +SKIP
"""

from .modes import guess_frame_mode, radial_r2
from .readers import SUPPORTED_EXTENSIONS, sidecar_path
from .recording import FrameChunk, Recording, open_recording

__all__ = ["open_recording", "Recording", "FrameChunk", "guess_frame_mode", "radial_r2",
           "SUPPORTED_EXTENSIONS", "sidecar_path"]
