"""segnet-s v12: segnet-s v7 widened to 24 channels (function-preserving) and fine-tuned on 9,000 other frames.

Issues 3 and 4: fine-tunes of v7's 701k-parameter network on more or other data (v8–v11) no longer moved
its held-apart numbers, and v7 does as well on its training seeds as on held-apart ones, so the network's
capacity was the next thing to try. v12 is v7 with every level 1.5× as wide (width 16 → 24, 1.56 M
parameters): the old weights copied, the new channels' weights into the old channels zero, so training
starts exactly at v7 (max |Δlogit| 3e-6) and grows the new channels (``reference_channel_train.widened``).
Recipe (CPU, 2 cores; findings: ``models/experiments/README.md``, session 16):

    git show b91c065:tem_operando/models/segnet-s.pt > /tmp/v7.pt            # segnet-s v7 and its card
    git show b91c065:tem_operando/models/segnet-s.MODEL_CARD.md | sed 's/segnet-s.pt/v7.pt/' > /tmp/v7.MODEL_CARD.md
    python models/experiments/reference_channel_train.py /tmp/v12.ckpt 15000 --init /tmp/v7.pt --lr 4e-4 \\
        --data v12 --rim-weight 3 --widen 24                                # ~3.5 min rendering + ~71 min
    python models/make_segnet-s-v12.py /tmp/v12.ckpt tem_operando/models/segnet-s.pt
    tem-operando models calibrate tem_operando/models/segnet-s.pt --out tem_operando/models/segnet-s.pt
    tem-operando evaluate --model tem_operando/models/segnet-s.pt --synthetic 4 --update-card

This script writes the trained weights as a model file with its card.
"""

import sys

from recipe_card import header, save_checkpoint, write_card

from tem_operando.segment.network import n_parameters

V7_SHA = "dbdd89d033d3c39ba54b32d507409764e683a1039be14a99021b9e60204fcc56"


def main(src: str, out: str, steps: int = 15000) -> None:
    training = {"recipe": "models/make_segnet-s-v12.py (models/experiments/reference_channel_train.py --data v12 "
                          "--rim-weight 3 --widen 24)",
                "init": f"segnet-s v7 (sha256 {V7_SHA}) widened to width 24", "steps": steps, "batch": 7,
                "crop": 192, "lr": 4e-4, "rim_weight": 3.0, "rim_px": 3, "seed": 0, "frames": 9000}
    model, out, sha = save_checkpoint(src, out, training)
    cfg = model.config
    card = header(out, sha, f"version 12 (replaces v7, sha256 `{V7_SHA[:8]}…`, width 16; v8–v11 were not shipped)") + f"""
## Architecture
Compact U-Net `SegNet(width={cfg['width']}, depth={cfg['depth']}, blocks={cfg['blocks']}, in_channels=2)`,
{n_parameters(model):,} parameters: 2×2 pixel-unshuffle stem, stride-2 3×3 convolutions and
depthwise-separable residual blocks per level, bilinear up-sampling with skip connections,
pixel-shuffle head to 4 channels at full resolution. Input: two channels, each normalised per
frame (median, 1–99 % range of the 4×4-binned frame): the frame, and the recording's reference —
its first image frame with structure averaged with the image frames of its first second, at most 8 —
moved onto it (`tem_operando.segment.reference`; the pipeline moves it by its own frame-to-frame
drift, training used the true drift). What changed since the reference shows the thin, light reacted
shell of a swelling particle that one frame alone hardly does.

## Training data and recipe
segnet-s v2 (width 16) was trained from scratch on 9,600 frames of 1,600 random synthetic sessions (40
epochs × 500 steps, 75 min); v3 widened it to two inputs (the reference's stem weights at zero)
and fine-tuned it 8,000 steps on 7,800 frames (seeds 0–299, 2000–2499); v4 continued 12,000 steps
on 9,600 other frames (seeds 2500–2949, 3000–3699); v5 continued 10,000 steps on 9,000 other
frames (seeds 4000–4499, 5000–5499) with the cross-entropy of the objects' outer rim weighted; v7
continued 8,000 steps on 9,000 other frames (seeds 7200–8199) whose reference averages 1–16 exposures. v12 is
v7 widened to width 24 — every convolution's old weights copied, the new channels' weights into old channels
zero, their own incoming weights random, their (frozen) batch norm the identity, so that it starts as v7 —
and trained {steps} steps on 9,000 other frames of 256×256 px rendered in memory: 300 particle, 150 mixed and
50 wire sessions of 12 frames through the swelling (seeds 12400–12899) and 500 random sessions of 6 frames
(seeds 12900–13399; scenes, dose 2–100 e⁻/px, pixel size 0.5–3 nm/px, bright/dark field,
carbon/vacuum/liquid backgrounds, blur and drift of `tem_operando.segment.datasets.random_recipe`),
each frame beside the session's reference — the mean of 1–16 exposures of its first frame (drawn per
seed, log-uniform: `datasets.training_reference_frames`) — moved by the true drift. 192-px crops, batch 7,
rotations, gain/offset; AdamW (weight decay 1e-4), one-cycle peak lr 4e-4 (5 % warm-up), v2's
batch-norm statistics kept; seed 0; 2 CPU threads (75 min). Loss as v2 — weighted cross-entropy (1.0, 1.5,
2.0) + 0.5 soft Dice (objects, reacted) + 0.5 BCE on seams (positive weight 4) — with the
cross-entropy of every true object's outer 3 px weighted ×4 (as v5, v7). Commands: the docstring of
`models/make_segnet-s-v12.py`.
"""
    write_card(out, sha, card)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
