"""Exports: annotation set for training, tables as CSV, the view as PNG, an overlay movie."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tem_operando.results import corrections as corr

from .models import ReviewModel
from .overlays import compose


def export_annotations(model: ReviewModel, out_dir: str | Path, frames: Sequence[int] | None = None) -> Path:
    """The corrected frames as an annotation set ``tem-operando train --data`` reads."""
    model.wait_idle()  # the corrected masks on disk include the last correction
    return corr.export_annotation_set(model.store, out_dir, frames)


def export_tables(model: ReviewModel, out_dir: str | Path) -> list[Path]:
    """Copy the (corrected) tables as CSV into ``out_dir``."""
    model.wait_idle()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for t in ("frames", "objects", "tracks", "fronts", "phases", "rings"):
        p = model.store.path(f"{t}.csv")
        if p.is_file():
            done.append(Path(shutil.copy2(p, out / p.name)))
    return done


def export_png(widget, path: str | Path) -> Path:
    """The widget as it is on screen, as PNG."""
    path = Path(path)
    if not widget.grab().save(str(path)):
        raise OSError(f"{path}: could not write the PNG")
    return path


def export_movie(model: ReviewModel, path: str | Path, frames: Sequence[int] | None = None, fps: float = 10.0,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """The frames with class and outline overlays as MP4 (OpenCV) or GIF (imageio), by extension."""
    path = Path(path)
    frames = list(range(model.n_frames)) if frames is None else [int(f) for f in frames]
    frames = [f for f in frames if model.mode(f) == "image"]
    if not frames:
        raise ValueError("no image frames to put in the movie")
    levels = None
    writer = None
    gif_frames = []
    try:
        for k, f in enumerate(frames):
            img = model.frame_image(f)
            if levels is None:
                levels = tuple(np.percentile(img, (0.5, 99.5)))
            m = model.masks(f)
            rgb = compose(img, m[0] if m else None, m[1] if m else None, model.label_tracks(f) if m else {}, levels)
            if path.suffix.lower() == ".gif":
                gif_frames.append(rgb)
            else:
                import cv2

                if writer is None:
                    h, w = rgb.shape[:2]
                    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
                    if not writer.isOpened():
                        raise OSError(f"{path}: OpenCV cannot write this movie format")
                writer.write(rgb[..., ::-1])
            if progress:
                progress(k + 1, len(frames))
    finally:
        if writer is not None:
            writer.release()
    if gif_frames:
        import imageio.v2 as imageio

        imageio.mimsave(str(path), gif_frames, duration=1.0 / fps, loop=0)
    return path
