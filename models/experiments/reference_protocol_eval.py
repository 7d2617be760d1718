"""Issue 3: the held-apart evaluation with two ways of building each session's reference.

1. the card's: 8 exposures of the session's unchanged first frame at its dose (``held_apart_items``: an
   idealised camera at >= 8 frames/s whose first second is before the sample changes, no drift in it);
2. what the pipeline builds for these sessions as the 2 frames/s recordings they are: the image frames of
   the first second (frames 0 and 1, the sample already changing), moved back by the true drift and averaged
   (``reference.reference_run`` + ``mean_reference``);
3. 8 exposures of the scene 30 s before the first frame (``image_series(reference_age_s=30)``): what late
   frames of a long recording see, the objects pristine but their bend contours moved on (session 13).

    python models/experiments/reference_protocol_eval.py [N_SESSIONS] [MODEL]

segnet-s v7, 100 sessions at 10 e-/px (60 s): 0.905 / 0.845 / 0.950 / 2.16 px vs 0.887 / 0.835 / 0.913 / 2.28 px
(IoU objects, IoU reacted, instance F1, front error). Written by a review in session 12.
"""

import sys
import time

from tem_operando.segment import load_segmenter
from tem_operando.segment.datasets import EVAL_SEED_OFFSET, random_recipe, synthetic_frames, true_shifts_px
from tem_operando.segment.evaluate import evaluate, item_from_session
from tem_operando.segment.reference import mean_reference, reference_run, register_reference


def main(n: int = 100, model: str | None = None) -> None:
    t0 = time.time()
    seeds, seed = [], EVAL_SEED_OFFSET
    while len(seeds) < n:
        if random_recipe(seed)["scene"] != "empty":
            seeds.append(seed)
        seed += 1
    card, pipeline, aged = [], [], []
    for s in seeds:
        aged.append(item_from_session(synthetic_frames(s, 6, dose=10.0, size=256, reference_frames=8,
                                                       reference_age_s=30.0)[1], f"seed{s}"))
        _, sess = synthetic_frames(s, 6, dose=10.0, size=256, reference_frames=8)
        card.append(item_from_session(sess, f"seed{s}"))
        it = item_from_session(sess, f"seed{s}")
        sh = true_shifts_px(sess)
        k = reference_run(sess.frame_table["time_s"].to_numpy(float))  # 2 frames/s -> 2
        it.reference = register_reference(it.frames, mean_reference(sess.frames[:k], sh[:k]), shifts_px=sh)
        pipeline.append(it)
    seg = {"network": load_segmenter(model, threads=2)}
    for name, items in (("8 exposures at t=0 (the card)", card), ("the pipeline's, 2 frames/s", pipeline),
                        ("8 exposures 30 s before", aged)):
        df = evaluate(seg, items)
        r = df[df["dose"] == "all"].set_index("method").loc["network"]
        print(name, {m: round(float(r[m]), 3) for m in ("iou_objects", "iou_reacted", "instance_f1", "front_err_px")},
              f"{time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100, sys.argv[2] if len(sys.argv) > 2 else None)
