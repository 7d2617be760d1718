"""Model files: ``torch.save`` of a plain dict, loaded with ``weights_only=True``, checked by sha256.

A model ``NAME.pt`` is a dict with keys ``format`` (:data:`FORMAT`), ``name``, ``config``
(the :class:`~tem_operando.segment.network.SegNet` arguments), ``class_names``,
``normalisation``, ``state_dict`` and ``training`` (a JSON-able summary). Its card
``NAME.MODEL_CARD.md`` (or a ``MODEL_CARD.md`` in the same folder) states the file's sha256,
which :func:`load_model_file` checks before unpickling anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._files import atomic_path, sha256_of
from ..errors import TemOperandoError

FORMAT = "tem-operando-segnet/1"
NORMALISATION = "median / (p99 - p1) of 4x4-binned frame, clip 4"
_SHA = re.compile(r"sha256\W*([0-9a-f]{64})", re.IGNORECASE)


class ModelFileError(TemOperandoError, ValueError):
    """A model file is missing, tampered with, or not a tem-operando segmentation model."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {problem}")


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    return sha256_of(path)


def card_path(path: str | os.PathLike) -> Path:
    """The model card of ``NAME.pt``: ``NAME.MODEL_CARD.md``, else ``MODEL_CARD.md`` beside it."""
    p = Path(path)
    own = p.with_name(p.stem + ".MODEL_CARD.md")
    return own if own.is_file() else p.with_name("MODEL_CARD.md")


def own_card_path(path: str | os.PathLike) -> Path:
    """Where the card of a new model file ``NAME.pt`` is written: ``NAME.MODEL_CARD.md`` (never the
    shared ``MODEL_CARD.md``, which another model in the folder may own)."""
    p = Path(path)
    return p.with_name(p.stem + ".MODEL_CARD.md")


def card_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 that the card of model ``path`` states for it (None if there is no card)."""
    card = card_path(path)
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    name = Path(path).name
    # a shared MODEL_CARD.md may list several models: take the hash on the line naming this one
    for line in text.splitlines():
        m = _SHA.search(line)
        if m and (card.name != "MODEL_CARD.md" or name in line):
            return m.group(1).lower()
    m = _SHA.search(text)
    return m.group(1).lower() if m else None


def save_model_file(path: str | os.PathLike, model, *, name: str, training: dict | None = None,
                    class_bias=None) -> str:
    """Write ``model`` (a SegNet) as a model file atomically; returns its sha256.

    ``class_bias`` (3 floats, logits) is added to the class logits before the decision; see
    :func:`tem_operando.segment.train.fit_class_bias`.
    """
    import torch

    from .network import CLASS_NAMES

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {
        "format": FORMAT,
        "name": str(name),
        "config": {k: int(v) for k, v in model.config.items()},
        "class_names": list(CLASS_NAMES),
        "normalisation": NORMALISATION,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "training": training or {},
    }
    if class_bias is not None:
        obj["class_bias"] = [float(v) for v in class_bias]
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return sha256(path)


def load_model_file(path: str | os.PathLike, *, verify: bool = True) -> dict:
    """Read and check a model file; returns its dict.

    Parameters
    ----------
    path : path-like
        The ``.pt`` file.
    verify : bool
        Check the sha256 against the model card (always on for models a user passes in;
        training checkpoints skip it).

    Raises
    ------
    ModelFileError
        Missing file, no card, a sha256 that differs from the card (tampered or replaced), a
        file that ``torch.load(weights_only=True)`` refuses, or a dict that is not ours.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "model file not found")
    if verify:
        expected = card_sha256(path)
        if expected is None:
            raise ModelFileError(path, f"no model card with its sha256 (looked for {card_path(path).name}); "
                                       "only models trained by tem-operando can be loaded")
        actual = sha256(path)
        if actual != expected:
            raise ModelFileError(path, f"sha256 {actual[:12]}… differs from the one in its card "
                                       f"{card_path(path).name} ({expected[:12]}…): the file was changed or replaced")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(path, f"not a tem-operando model file (torch.load refused it: {first})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ModelFileError(path, f"not a tem-operando segmentation model (format {got!r}, expected {FORMAT!r})")
    for key in ("config", "state_dict", "class_names"):
        if key not in obj:
            raise ModelFileError(path, f"model file lacks {key!r}")
    return obj


def build_from_file(obj: dict, path: str | os.PathLike = "<model>"):
    """The SegNet of a loaded model dict (weights in, eval mode)."""
    from .network import build

    model = build(obj["config"])
    try:
        model.load_state_dict(obj["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise ModelFileError(path, f"weights do not fit the stated architecture ({str(exc).splitlines()[0]})") from None
    return model.eval()
