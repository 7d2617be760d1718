"""segnet-s v3: segnet-s v2 fine-tuned with the recording's first image frame as a second input.

Recipe (CPU, 2 cores; the findings behind it: ``models/experiments/README.md``):

    git show 148ac44:tem_operando/models/segnet-s.pt > /tmp/v2.pt             # segnet-s v2 and its card
    git show 148ac44:tem_operando/models/segnet-s.MODEL_CARD.md | sed 's/segnet-s.pt/v2.pt/' > /tmp/v2.MODEL_CARD.md
    python models/experiments/reference_channel_train.py /tmp/ref2ch.pt 8000 --init /tmp/v2.pt --data v3
                                                                   # ~4 min rendering + ~35 min
    python models/make_segnet-s-v3.py /tmp/ref2ch.pt tem_operando/models/segnet-s.pt
    tem-operando models calibrate tem_operando/models/segnet-s.pt --out tem_operando/models/segnet-s.pt
    tem-operando evaluate --model tem_operando/models/segnet-s.pt --synthetic 4 --update-card

The first command fine-tunes v2 widened to two input channels (the reference's weights start at
zero, so step 0 is v2) on 7,800 frames rendered in memory: 300 particle sessions and 200 mixed
sessions of 12 frames through the swelling (seeds 2000–2499) and 300 random sessions of 6 frames
(seeds 0–299, ``random_recipe``), each frame with the session's first frame moved onto it by the
true drift; 192-px crops, batch 7, AdamW, one-cycle peak lr 1e-3, v2's batch-norm statistics kept,
seed 0. This script writes its weights as a model file with its card.
"""

import sys

from recipe_card import header, save_checkpoint, write_card

from tem_operando.segment.network import n_parameters


def main(src: str, out: str, steps: int = 8000) -> None:
    training = {"recipe": "models/make_segnet-s-v3.py (models/experiments/reference_channel_train.py)",
                "init": "segnet-s v2 (sha256 256a3a5626790e26a57fd089ff1bcc67dbf33920b33520a7fb58a7ccc71aeeb8)",
                "steps": steps, "batch": 7, "crop": 192, "lr": 1e-3, "seed": 0, "frames": 7800}
    model, out, sha = save_checkpoint(src, out, training)
    cfg = model.config
    card = header(out, sha, "version 3 (replaces v2, sha256 `256a3a56…`, which saw each frame alone)") + f"""
## Architecture
Compact U-Net `SegNet(width={cfg['width']}, depth={cfg['depth']}, blocks={cfg['blocks']}, in_channels=2)`,
{n_parameters(model):,} parameters: 2×2 pixel-unshuffle stem, stride-2 3×3 convolutions and
depthwise-separable residual blocks per level, bilinear up-sampling with skip connections,
pixel-shuffle head to 4 channels at full resolution. Input: two channels, each normalised per
frame (median, 1–99 % range of the 4×4-binned frame): the frame, and the recording's first image
frame moved onto it (`tem_operando.segment.reference`; the pipeline moves it by its own
frame-to-frame drift, training used the true drift). What changed since the first frame shows the
thin, light reacted shell of a swelling particle that one frame alone hardly does.

## Training data and recipe
Fine-tuned from segnet-s v2 (itself trained from scratch on 9,600 frames of 1,600 random synthetic
sessions, 40 epochs × 500 steps, 75 min) for {steps} steps on 7,800 frames of 256×256 px rendered
in memory: 300 particle and 200 mixed sessions of 12 frames through the swelling (seeds
2000–2499) and 300 random sessions of 6 frames (seeds 0–299; scenes, dose 2–100 e⁻/px, pixel size
0.5–3 nm/px, bright/dark field, carbon/vacuum/liquid backgrounds, blur and drift of
`tem_operando.segment.datasets.random_recipe`). The reference channel's stem weights started at
zero (step 0 = v2 exactly); 192-px crops, batch 7, rotations, gain/offset; AdamW (weight decay
1e-4), one-cycle peak lr 1e-3 (5 % warm-up), v2's batch-norm statistics kept; seed 0; 2 CPU
threads. Loss as v2: weighted cross-entropy (1.0, 1.5, 2.0) + 0.5 soft Dice (objects, reacted) +
0.5 BCE on seams (positive weight 4). Commands: the docstring of `models/make_segnet-s-v3.py`.
"""
    write_card(out, sha, card)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
