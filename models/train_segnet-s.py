"""Train the shipped segnet-s (v2) from scratch on pre-rendered synthetic shards (CPU, ~75 min on 2 cores).

    python -m tem_operando.segment.datasets /tmp/tem_seg_cache/train 0 1600     # shards, ~5-10 min
    python models/train_segnet-s.py /tmp/tem_seg_cache/train models/segnet-s.pt
    tem-operando models calibrate models/segnet-s.pt --out models/segnet-s.pt
    tem-operando evaluate --model models/segnet-s.pt --synthetic 4 --update-card

Re-running after an interruption resumes from ``segnet-s.ckpt`` beside the output.
"""
import sys
from pathlib import Path

from tem_operando.segment.datasets import load_shards
from tem_operando.segment.train import TrainConfig, train

shards, out = Path(sys.argv[1]), Path(sys.argv[2])
data = load_shards(sorted(shards.glob("shard_*.npz")))
cfg = TrainConfig(epochs=40, steps_per_epoch=500, batch=7, crop=192, lr=3e-3, seed=3,
                  width=16, depth=5, blocks=3, calibrate="fit", max_val_frames=96, name="segnet-s")
train(data, out, cfg, progress=False)
