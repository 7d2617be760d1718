"""Segmentation of frames by the network: batching, tiling, working resolution, device.

>>> from tem_operando.segment import load_segmenter              # doctest: +SKIP
>>> seg = load_segmenter()                # the shipped model; "baseline" for the classical one
>>> out = seg.predict(frames)             # (n, Y, X) counts
>>> out.classes.shape, out.instances.dtype, out.confidence      # doctest: +SKIP

Large frames are cut into overlapping tiles whose logits are blended with a linear ramp, so
there is no seam; ``scale < 1`` runs the network at a reduced working resolution (faster) and
brings the logits back to full size. The optimised CPU path folds batch norm into the
convolutions, uses channels-last tensors and a frozen TorchScript graph per input shape (or
``torch.compile`` when asked).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .instances import split_by_seams, split_necks
from .normalise import CONTRASTS
from .reference import network_input

DEFAULT_MODEL = "segnet-s.pt"


@dataclass
class SegmentationResult:
    """What a segmenter returns for n frames.

    Attributes
    ----------
    classes : ndarray, (n, Y, X), uint8
        0 background, 1 pristine, 2 reacted.
    instances : ndarray, (n, Y, X), uint32
        Object labels per frame (1..k, 0 = none); not linked across frames.
    confidence : ndarray, (n,), float
        0–1 per frame: the mean max-class probability over the object pixels and their 3-px
        rim (over the whole frame when there are no objects). Low values flag frames to review.
    probabilities : ndarray, (n, 3, Y, X), float16, or None
        Class probabilities, when asked for.
    """

    classes: np.ndarray
    instances: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.classes.shape[0])


def models_dir() -> Path:
    """The folder of the shipped models (inside the package, so wheels carry them)."""
    return Path(__file__).resolve().parent.parent / "models"


def user_models_dir() -> Path:
    """Where the user's own models go (``TEM_OPERANDO_DATA_DIR/models`` or the platform's user data
    folder): fine-tuned models from ``tem-operando train`` and the GUI's *Retrain* land here."""
    env = os.environ.get("TEM_OPERANDO_DATA_DIR")
    if env:
        return Path(env) / "models"
    import platformdirs

    return Path(platformdirs.user_data_dir("tem-operando")) / "models"


def default_model_path() -> Path:
    """Path of the default shipped model (``tem_operando/models/segnet-s.pt``)."""
    return models_dir() / DEFAULT_MODEL


def resolve_model(model: str | os.PathLike | None) -> Path:
    """A model argument → file: None or ``"default"`` = the default shipped model, a bare name = a
    shipped model or one of the user's models (:func:`user_models_dir`), else a path."""
    if model is None:
        return default_model_path()
    p = Path(model)
    if str(model) == "default" and not p.exists():
        return default_model_path()
    if not p.exists() and p.parent == Path("."):
        name = p.name if p.suffix == ".pt" else p.name + ".pt"
        for folder in (models_dir(), user_models_dir()):
            if (folder / name).exists():
                return folder / name
    return p


def _starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Tile starts along one axis, all multiples of ``multiple`` (the network's stride grid, so a
    tile sees the same pixel phase as the whole frame); the last tile may run past the end."""
    if length <= tile:
        return [0]
    step = max((tile - overlap) // multiple * multiple, multiple)
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + step)
    return starts


def _ramp(n: int, overlap: int, start: bool, end: bool) -> np.ndarray:
    """Blending weight along one tile axis: ~0 in the outer quarter of the overlap, rising over
    the middle half, 1 inside; only on sides that face another tile (``start``/``end``)."""
    i = np.arange(n, dtype=np.float32)
    q = overlap / 4.0
    w = np.ones(n, np.float32)
    if start:
        w = np.minimum(w, (i + 1 - q) / (2 * q))
    if end:
        w = np.minimum(w, (n - i - q) / (2 * q))
    return np.clip(w, 1e-4, 1.0)


def _resize(a: np.ndarray, shape: tuple[int, int], area: bool) -> np.ndarray:
    """Resize the last two axes of ``a`` to ``shape`` (OpenCV; area when shrinking)."""
    import cv2

    lead = a.shape[:-2]
    flat = a.reshape(-1, *a.shape[-2:])
    interp = cv2.INTER_AREA if area else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (shape[1], shape[0]), interpolation=interp) for f in flat])
    return out.reshape(*lead, *shape)


class NetworkSegmenter:
    """The network behind the segmenter interface.

    Parameters
    ----------
    model_dict : dict
        A checked model file (:func:`tem_operando.segment.modelfile.load_model_file`).
    path : Path
        Where it came from (for messages and provenance).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` (GPU when present).
    scale : float
        Working resolution relative to the frame (0 < scale ≤ 1; 0.5 is ~4× faster).
    tile : int
        Frames (at working resolution) larger than this are tiled, px.
    overlap : int
        Tile overlap, px.
    batch : int
        Frames or tiles per forward pass.
    optimise : {"jit", "compile", "eager"}
        ``"jit"`` (default): fused batch norm, channels-last, frozen TorchScript per shape;
        ``"compile"``: ``torch.compile`` (slow first call); ``"eager"``: the plain module.
    threads : int, optional
        torch CPU threads (default: torch's choice).
    seam_threshold : float
        Seam probability above which pixels separate touching objects.
    min_area_px : int
        Smallest object kept, px (at full resolution; 32: one-frame noise specks go, objects
        narrower than ~6 px go with them).
    neck_h_px : float or None
        Objects made of blobs joined by a neck are split where each blob's inscribed radius
        exceeds the neck's half width by this much, px (:func:`~.instances.split_necks`); None
        turns that off.
    """

    def __init__(self, model_dict: dict, path: Path, *, device: str = "cpu", scale: float = 1.0,
                 tile: int = 512, overlap: int = 64, batch: int = 8, optimise: str = "jit",
                 threads: int | None = None, seam_threshold: float = 0.5, min_area_px: int = 32,
                 neck_h_px: float | None = 3.0):
        import torch

        from .modelfile import build_from_file, sha256
        from .network import fuse_for_inference

        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        if optimise not in ("jit", "compile", "eager"):
            raise ValueError(f"optimise must be jit, compile or eager, got {optimise!r}")
        if threads:
            torch.set_num_threads(int(threads))
        self.path = Path(path)
        self.name = str(model_dict.get("name", self.path.stem))
        self.sha256 = sha256(self.path)
        self.device = _device(device)
        self.scale, self.tile, self.overlap, self.batch = float(scale), int(tile), int(overlap), int(batch)
        self.optimise = optimise
        self.seam_threshold, self.min_area_px = float(seam_threshold), int(min_area_px)
        self.neck_h_px = None if neck_h_px is None else float(neck_h_px)
        self.class_bias = np.asarray(model_dict.get("class_bias") or (0.0, 0.0, 0.0), np.float32)
        model = build_from_file(model_dict, self.path).to(self.device)
        self.multiple = model.multiple
        #: 1: the frame alone; 2: the frame and the registered reference frame (:mod:`.reference`)
        self.in_channels = int(model.config.get("in_channels", 1))
        if optimise != "eager":
            model = fuse_for_inference(model).to(memory_format=torch.channels_last)
        self.model = model.eval()
        self._compiled = torch.compile(self.model) if optimise == "compile" else None
        self._traced: dict = {}
        self._trace_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"NetworkSegmenter({self.name!r}, device={self.device!s}, scale={self.scale}, optimise={self.optimise!r})"

    # -- forward passes -------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> np.ndarray:
        """(b, C, Y, X) normalised → (b, 4, Y, X) float32 logits, one forward pass."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        with torch.inference_mode():
            if self.optimise == "eager":
                out = self.model(t)
            else:
                t = t.contiguous(memory_format=torch.channels_last)
                if self._compiled is not None:
                    out = self._compiled(t)
                else:
                    key = tuple(t.shape)
                    fn = self._traced.get(key)
                    if fn is None:
                        # one thread traces and warms up a shape while the others wait: chunks run in
                        # Dask threads sharing this segmenter, and TorchScript's tracing, freezing and
                        # first (profiling) runs of a new graph are not made for several threads at once
                        with self._trace_lock:
                            fn = self._traced.get(key)
                            if fn is None:
                                fn = _trace(self.model, t)
                                for _ in range(2):
                                    fn(t)
                                if len(self._traced) > 16:
                                    self._traced.clear()
                                self._traced[key] = fn
                    out = fn(t)
        return out.float().cpu().numpy()

    def _batched(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self._run(x[k:k + self.batch]) for k in range(0, len(x), self.batch)])

    def logits(self, xn: np.ndarray) -> np.ndarray:
        """Network input (n, C, Y, X) (:func:`.reference.network_input`) → logits (n, 4, Y, X),
        tiled when larger than ``tile``."""
        n, C, Y, X = xn.shape
        if Y <= self.tile and X <= self.tile:
            return self._batched(xn)
        m = self.multiple
        tile = max(self.tile // m * m, m)
        ys, xs = _starts(Y, tile, self.overlap, m), _starts(X, tile, self.overlap, m)
        ty, tx = min(tile, Y), min(tile, X)
        Yp, Xp = ys[-1] + ty, xs[-1] + tx
        if (Yp, Xp) != (Y, X):  # the last tiles run past the frame: pad it (reflect, like the network)
            mode = "reflect" if (Yp - Y < Y and Xp - X < X) else "edge"
            xn = np.pad(xn, ((0, 0), (0, 0), (0, Yp - Y), (0, Xp - X)), mode=mode)
        acc = np.zeros((n, 4, Yp, Xp), np.float32)
        wsum = np.zeros((Yp, Xp), np.float32)
        boxes = [(y0, x0) for y0 in ys for x0 in xs]
        tiles = np.stack([xn[..., y0:y0 + ty, x0:x0 + tx] for y0, x0 in boxes], 1).reshape(-1, C, ty, tx)
        out = self._batched(tiles).reshape(n, len(boxes), 4, ty, tx)
        for k, (y0, x0) in enumerate(boxes):
            w = np.outer(_ramp(ty, self.overlap, y0 > 0, y0 + ty < Yp), _ramp(tx, self.overlap, x0 > 0, x0 + tx < Xp))
            acc[:, :, y0:y0 + ty, x0:x0 + tx] += out[:, k] * w
            wsum[y0:y0 + ty, x0:x0 + tx] += w
        return (acc / wsum)[:, :, :Y, :X]

    # -- public ---------------------------------------------------------------------------
    def predict(self, frames: np.ndarray, *, reference: np.ndarray | None = None,
                probabilities: bool = False) -> SegmentationResult:
        """Segment frames.

        Parameters
        ----------
        frames : ndarray, (n, Y, X) or (Y, X)
            Detector counts (any dtype, any gain/offset; NaN/inf are treated as 0). A single
            (Y, X) frame gives a result with n = 1.
        reference : ndarray, (Y, X) or (n, Y, X), optional
            The recording's reference (counts: its first image frames averaged,
            :func:`~.reference.mean_reference`), for two-channel models
            (``in_channels == 2``): registered onto each frame and given beside it
            (:mod:`.reference`) by phase correlation against it, which is unreliable once the
            sample has changed much; (n, Y, X): already moved onto each frame (the pipeline moves it
            by its own frame-to-frame drift). Without it each frame is its own reference (less
            accurate on reacting objects). One-channel models ignore it.
        probabilities : bool
            Also return the class probabilities.

        Returns
        -------
        SegmentationResult
        """
        a = np.asarray(frames)
        a = a[None] if a.ndim == 2 else a  # one (Y, X) frame → n = 1
        if a.ndim != 3:
            raise ValueError(f"frames must be (n, Y, X) or (Y, X), got shape {a.shape}")
        n, Y, X = a.shape
        if n == 0:  # e.g. a chunk whose frames are all skipped by --every-nth
            return SegmentationResult(np.zeros(a.shape, np.uint8), np.zeros(a.shape, np.uint32), np.zeros(0),
                                      np.zeros((0, 3, Y, X), np.float16) if probabilities else None)
        xn = network_input(a, reference, self.in_channels)
        if self.scale < 1:
            wy, wx = max(int(round(Y * self.scale)), 8), max(int(round(X * self.scale)), 8)
            lg = _resize(self.logits(_resize(xn, (wy, wx), area=True)), (Y, X), area=False)
        else:
            lg = self.logits(xn)
        return decode(lg, seam_threshold=self.seam_threshold, min_area_px=self.min_area_px,
                      probabilities=probabilities, class_bias=self.class_bias, neck_h_px=self.neck_h_px)

    __call__ = predict


def decode(logits: np.ndarray, *, seam_threshold: float = 0.5, min_area_px: int = 16,
           probabilities: bool = False, class_bias=None, neck_h_px: float | None = None) -> SegmentationResult:
    """Network logits (n, 4, Y, X) → classes, instances, per-frame confidence.

    ``class_bias`` (3 floats) is added to the class logits first: the model's calibrated decision
    thresholds (:func:`tem_operando.segment.train.fit_class_bias`). Instances come from the seam
    map (:func:`~.instances.split_by_seams`), then, with ``neck_h_px``, objects joined by a neck
    are split (:func:`~.instances.split_necks`).
    """
    from scipy import ndimage

    cl = np.asarray(logits[:, :3], np.float32)
    if class_bias is not None and np.any(class_bias):
        cl = cl + np.asarray(class_bias, np.float32)[None, :, None, None]
    l0, l1, l2 = cl[:, 0], cl[:, 1], cl[:, 2]
    # argmax over the 3 classes by two comparisons (ties go to the lower class, as np.argmax):
    # much faster than argmax along a strided axis
    best = np.maximum(l0, l1)
    classes = (l1 > l0).astype(np.uint8)
    top2 = l2 > best
    classes[top2] = 2
    np.maximum(best, l2, out=best)
    seam = logits[:, 3]  # the watershed and the threshold only need the order: logits, not sigmoid
    seam_logit = float(np.log(seam_threshold / (1 - seam_threshold))) if 0 < seam_threshold < 1 else (
        -np.inf if seam_threshold <= 0 else np.inf)
    n = logits.shape[0]
    instances = np.zeros(classes.shape, np.uint32)
    conf = np.empty(n)
    for i in range(n):
        inst = split_by_seams(classes[i] > 0, seam[i], threshold=seam_logit, min_area_px=min_area_px)
        if neck_h_px is not None:
            inst = split_necks(inst, h_px=neck_h_px, min_area_px=min_area_px)
        classes[i][(inst == 0) & (classes[i] > 0)] = 0  # specks below min_area_px
        instances[i] = inst
        region = ndimage.binary_dilation(inst > 0, iterations=3) if inst.any() else np.ones_like(inst, bool)
        # the max-class probability 1 / Σ exp(l_c − l_max), only where it is averaged
        b = best[i][region]
        denom = np.exp(l0[i][region] - b) + np.exp(l1[i][region] - b) + np.exp(l2[i][region] - b)
        conf[i] = float(np.mean(1.0 / denom)) if b.size else float("nan")
    p = None
    if probabilities:
        e = np.exp(cl - best[:, None])
        p = e / e.sum(axis=1, keepdims=True)
    return SegmentationResult(classes, instances, conf, p.astype(np.float16) if p is not None else None)


def _trace(model, example):
    import warnings

    import torch

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning (one trace per shape) and jit deprecations
        traced = torch.jit.trace(model, example.clone(), check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


def _device(device: str):
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        from ..errors import TemOperandoError

        raise TemOperandoError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    return dev


def load_segmenter(model: str | os.PathLike | None = None, *, device: str = "cpu", contrast: str = "auto",
                   **options):
    """The segmenter for a model argument.

    Parameters
    ----------
    model : None, "baseline", a shipped model name or a path
        None → the default shipped model; ``"baseline"`` → the classical scikit-image
        segmenter (no torch needed).
    device : str
        See :class:`NetworkSegmenter`.
    contrast : {"auto", "bright-field", "dark-field"}
        Used by the baseline; the network is trained on both contrasts and needs no hint.
    **options
        Passed to :class:`NetworkSegmenter` (scale, tile, overlap, batch, optimise, threads, …)
        or to :class:`~tem_operando.segment.baseline.BaselineSegmenter`.

    Raises
    ------
    TemOperandoError
        The model file is missing, not ours or fails its sha256 check.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    if model is not None and str(model) == "baseline":
        from .baseline import BaselineSegmenter

        return BaselineSegmenter(contrast=contrast, **options)
    from .modelfile import load_model_file

    path = resolve_model(model)
    obj = load_model_file(path)
    return NetworkSegmenter(obj, path, device=device, **options)
