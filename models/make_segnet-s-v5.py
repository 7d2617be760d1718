"""segnet-s v5: segnet-s v4 fine-tuned on 9,000 other frames with the outer rim of every object weighted.

Issue 4: the network found a swelling particle's light reacted shell late, then all at once, so the
pipeline's widths lagged and jumped. v5 continues from v4 with the cross-entropy of every true
object's outer 3 px weighted ×4 (``--rim-weight 3``). Recipe (CPU, 2 cores; findings:
``models/experiments/README.md``):

    git show ffe08e6:tem_operando/models/segnet-s.pt > /tmp/v4.pt            # segnet-s v4 and its card
    git show ffe08e6:tem_operando/models/segnet-s.MODEL_CARD.md | sed 's/segnet-s.pt/v4.pt/' > /tmp/v4.MODEL_CARD.md
    python models/experiments/reference_channel_train.py /tmp/v5.ckpt 10000 --init /tmp/v4.pt --lr 3e-4 \\
        --data v5 --rim-weight 3                                           # ~3 min rendering + ~25 min
    python models/make_segnet-s-v5.py /tmp/v5.ckpt tem_operando/models/segnet-s.pt
    tem-operando models calibrate tem_operando/models/segnet-s.pt --out tem_operando/models/segnet-s.pt
    tem-operando evaluate --model tem_operando/models/segnet-s.pt --synthetic 4 --update-card

This script writes the trained weights as a model file with its card.
"""

import sys

from recipe_card import header, save_checkpoint, write_card

from tem_operando.segment.network import n_parameters

V4_SHA = "521e3e91c8c54382967176cdc29c22a7840e4e29a6fa4133bf95c301649f31dc"


def main(src: str, out: str, steps: int = 10000) -> None:
    training = {"recipe": "models/make_segnet-s-v5.py (models/experiments/reference_channel_train.py --data v5 "
                          "--rim-weight 3)",
                "init": f"segnet-s v4 (sha256 {V4_SHA})", "steps": steps, "batch": 7, "crop": 192, "lr": 3e-4,
                "rim_weight": 3.0, "rim_px": 3, "seed": 0, "frames": 9000}
    model, out, sha = save_checkpoint(src, out, training)
    cfg = model.config
    card = header(out, sha, f"version 5 (replaces v4, sha256 `{V4_SHA[:8]}…`, the same network without the rim weighting)") + f"""
## Architecture
Compact U-Net `SegNet(width={cfg['width']}, depth={cfg['depth']}, blocks={cfg['blocks']}, in_channels=2)`,
{n_parameters(model):,} parameters: 2×2 pixel-unshuffle stem, stride-2 3×3 convolutions and
depthwise-separable residual blocks per level, bilinear up-sampling with skip connections,
pixel-shuffle head to 4 channels at full resolution. Input: two channels, each normalised per
frame (median, 1–99 % range of the 4×4-binned frame): the frame, and the recording's reference
frame (its first image frame with structure) moved onto it (`tem_operando.segment.reference`; the
pipeline moves it by its own frame-to-frame drift, training used the true drift). What changed
since the reference shows the thin, light reacted shell of a swelling particle that one frame
alone hardly does.

## Training data and recipe
segnet-s v2 was trained from scratch on 9,600 frames of 1,600 random synthetic sessions (40
epochs × 500 steps, 75 min); v3 widened it to two inputs (the reference's stem weights at zero)
and fine-tuned it 8,000 steps on 7,800 frames (seeds 0–299, 2000–2499); v4 continued 12,000 steps
on 9,600 other frames (seeds 2500–2949, 3000–3699). v5 continues from v4 for {steps} steps on
9,000 other frames of 256×256 px rendered in memory: 300 particle, 150 mixed and 50 wire sessions
of 12 frames through the swelling (seeds 4000–4499) and 500 random sessions of 6 frames (seeds
5000–5499; scenes, dose 2–100 e⁻/px, pixel size 0.5–3 nm/px, bright/dark field,
carbon/vacuum/liquid backgrounds, blur and drift of `tem_operando.segment.datasets.random_recipe`),
each frame beside the session's first frame moved by the true drift. 192-px crops, batch 7,
rotations, gain/offset; AdamW (weight decay 1e-4), one-cycle peak lr 3e-4 (5 % warm-up), v2's
batch-norm statistics kept; seed 0; 2 CPU threads. Loss as v2 — weighted cross-entropy (1.0, 1.5,
2.0) + 0.5 soft Dice (objects, reacted) + 0.5 BCE on seams (positive weight 4) — with the
cross-entropy of every true object's outer 3 px weighted ×4: a swelling particle's light reacted
shell lies there. Commands: the docstring of `models/make_segnet-s-v5.py`.
"""
    write_card(out, sha, card)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
