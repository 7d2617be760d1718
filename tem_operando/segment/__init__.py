"""Segmentation of image frames: classes (background / pristine / reacted) and instances.

The public API (torch is imported only when a network is loaded)::

    from tem_operando.segment import load_segmenter
    seg = load_segmenter()                 # shipped network; load_segmenter("baseline") needs no torch
    out = seg.predict(frames)              # SegmentationResult(classes, instances, confidence)

See :mod:`.infer` (network inference), :mod:`.baseline` (classical), :mod:`.train`,
:mod:`.evaluate`, :mod:`.datasets` and ``datasets/README.md`` (annotation sets).
"""

from __future__ import annotations

__all__ = ["CLASS_NAMES", "BaselineSegmenter", "SegmentationResult", "default_model_path", "load_segmenter"]

CLASS_NAMES = ("background", "pristine", "reacted")


def __getattr__(name):
    if name in ("SegmentationResult", "load_segmenter", "default_model_path"):
        from . import infer

        return getattr(infer, name)
    if name == "BaselineSegmenter":
        from .baseline import BaselineSegmenter

        return BaselineSegmenter
    raise AttributeError(name)
