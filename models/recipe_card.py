"""What every segnet-s recipe maker (``make_segnet-s-vN.py``) shares: the trained checkpoint of
``experiments/reference_channel_train.py`` saved as a model file, and its card's header and file."""

from pathlib import Path

import torch

from tem_operando.segment.modelfile import save_model_file
from tem_operando.segment.network import SegNet


def save_checkpoint(src: str, out: str | Path, training: dict) -> tuple[SegNet, Path, str]:
    """The checkpoint ``src`` saved as the model file ``out`` with its ``training`` record:
    (model, path, sha256 of the file)."""
    ck = torch.load(src, weights_only=False)
    model = SegNet(**ck["config"])
    model.load_state_dict(ck["state"])
    out = Path(out)
    sha = save_model_file(out, model, name="segnet-s", training=training, class_bias=ck.get("class_bias"))
    return model, out, sha


def header(out: Path, sha: str, version: str) -> str:
    """The card's title and list: file, sha256, format, classes and the ``version`` line."""
    return f"""# Model card: segnet-s

- file: `{out.name}`
- sha256: `{sha}`
- format: `tem-operando-segnet/1` (torch.save of a plain dict; load with `torch.load(weights_only=True)`)
- classes: 0 background, 1 pristine, 2 reacted; plus a seam (touching-objects boundary) output
- {version}
"""


def write_card(out: Path, sha: str, card: str) -> None:
    """``card`` written beside the model file ``out`` as ``NAME.MODEL_CARD.md``."""
    out.with_name(out.stem + ".MODEL_CARD.md").write_text(card, encoding="utf-8")
    print(f"wrote {out} ({sha})")
