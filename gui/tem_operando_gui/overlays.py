"""Overlay images in numpy (no Qt): class-mask colours, instance outlines by track, track colours.

Shared by the video view and the movie export, so a movie shows what the screen shows.
"""

from __future__ import annotations

import numpy as np

CLASS_RGBA = np.array([[0, 0, 0, 0], [40, 140, 255, 90], [255, 120, 0, 110]], np.uint8)  # bg, pristine, reacted


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct colour per track id (golden-ratio hues)."""
    import colorsys

    h = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def class_overlay(classes: np.ndarray) -> np.ndarray:
    """RGBA (Y, X, 4) of a class mask."""
    return CLASS_RGBA[np.clip(classes, 0, 2)]


def outlines(instances: np.ndarray) -> np.ndarray:
    """Boolean edge pixels of the instances (where a 4-neighbour has another label)."""
    i = instances
    e = np.zeros(i.shape, bool)
    e[:-1] |= i[:-1] != i[1:]
    e[1:] |= i[1:] != i[:-1]
    e[:, :-1] |= i[:, :-1] != i[:, 1:]
    e[:, 1:] |= i[:, 1:] != i[:, :-1]
    return e & (i > 0)


def outline_overlay(instances: np.ndarray, label_tracks: dict[int, int], selected: int | None = None) -> np.ndarray:
    """RGBA outlines coloured by track (white for objects not in a track; thicker for the selection)."""
    e = outlines(instances)
    n = int(instances.max()) + 1 if instances.size else 1
    lut = np.zeros((n, 4), np.uint8)
    lut[1:] = (255, 255, 255, 200)
    for lab, tid in label_tracks.items():
        if 0 < lab < n:
            lut[lab, :3] = track_color(tid)
            lut[lab, 3] = 255
    rgba = np.zeros(instances.shape + (4,), np.uint8)
    rgba[e] = lut[instances[e]]
    if selected is not None:
        sel = [lab for lab, t in label_tracks.items() if t == selected]
        if sel:
            m = np.isin(instances, sel)
            rgba[m & ~e] = (255, 255, 0, 60)
    return rgba


def gray8(image: np.ndarray, levels: tuple[float, float] | None = None) -> np.ndarray:
    """uint8 grey image with the given (or 0.5–99.5 percentile) levels."""
    img = np.asarray(image, np.float32)
    lo, hi = levels if levels is not None else np.percentile(img[:: max(1, img.shape[0] // 128)], (0.5, 99.5))
    if hi <= lo:
        hi = lo + 1
    return np.clip((img - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def compose(image: np.ndarray, classes: np.ndarray | None, instances: np.ndarray | None,
            label_tracks: dict[int, int], levels=None, show_masks: bool = True,
            show_outlines: bool = True) -> np.ndarray:
    """RGB (Y, X, 3) uint8 of a frame with its overlays (for movies)."""
    g = gray8(image, levels)
    rgb = np.repeat(g[..., None], 3, axis=2).astype(np.float32)
    for show, rgba in ((show_masks and classes is not None, class_overlay(classes) if classes is not None else None),
                       (show_outlines and instances is not None,
                        outline_overlay(instances, label_tracks) if instances is not None else None)):
        if show:
            a = rgba[..., 3:4].astype(np.float32) / 255
            rgb = rgb * (1 - a) + rgba[..., :3] * a
    return np.clip(rgb, 0, 255).astype(np.uint8)
