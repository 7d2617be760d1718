"""Tracking benchmark: objects/s for measuring from labels and for linking, against trackpy.

Same frames, same run: ``measure_objects`` on the instance/class masks vs ``trackpy.locate`` on
the images; ``link_objects`` vs ``trackpy.link`` on the same detections (our centroids), and its wire metric vs
its Euclidean distance.
Targets (DESIGN.md): measuring ≥ 5× locate; linking ≥ 1× trackpy.link. Also, as shares of the
measuring / linking time in the same run (no target; they should stay small): ``split_necks``
on every frame's connected object mask (touching objects as one outline, the network's usual
merge), and on one frame of two big touching particles (high magnification), and ``swelling_table`` (with ``merged_rows``) on the linked objects.

    .venv/bin/python benchmarks/track.py [--frames 60] [--size 256]
"""

from __future__ import annotations

import argparse
import time


def best_of(fn, repeat=3):
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t.append(time.perf_counter() - t0)
    return min(t), out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)

    import numpy as np
    import pandas as pd
    import trackpy

    from tem_operando.synth import image_series
    from tem_operando.track import estimate_drift, link_objects, measure_objects

    trackpy.quiet()
    s = image_series(a.frames, (a.size, a.size), scene="mixed", rng=a.seed)
    n_obj = int(len(s.objects))
    t_meas, ob = best_of(lambda: measure_objects(s.classes, s.instances, 0, s.time_s, s.nm_per_px))
    diam = int(2 * (s.objects["width_nm"].median() / s.nm_per_px / 2) // 2 * 2 + 1)
    img = -s.frames if s.params["contrast"] == "bright-field" else s.frames
    t_loc, feats = best_of(lambda: trackpy.batch(img, diam, processes=1), repeat=1)
    link_objects(ob)  # warm-up (imports)
    t_link, _ = best_of(lambda: link_objects(ob))
    t_link_e, _ = best_of(lambda: link_objects(ob, wire_along_weight=1.0))  # Euclidean, wires as particles
    f = pd.DataFrame({"x": ob["x_nm"], "y": ob["y_nm"], "frame": ob["frame"]})
    sr = float(max(0.35 * np.percentile(ob["width_nm"], 25), 3.0))
    t_tpl, _ = best_of(lambda: trackpy.link(f, sr, memory=5))
    # a crowded field (many objects per frame, ambiguous subnetworks): same detections for both
    rng = np.random.default_rng(a.seed)
    pos, rows = rng.uniform(0, 1000, (200, 2)), []
    for t in range(a.frames):
        pos = pos + rng.normal(0, 3, pos.shape)
        k = np.flatnonzero(rng.random(len(pos)) > 0.1)
        rows.append(pd.DataFrame({"frame": t, "x_nm": pos[k, 0], "y_nm": pos[k, 1], "area_nm2": 400.0, "width_nm": 20.0}))
    crowd = pd.concat(rows, ignore_index=True)
    t_cl, _ = best_of(lambda: link_objects(crowd, 15.0, size_weight=0.0))
    fc = pd.DataFrame({"x": crowd["x_nm"], "y": crowd["y_nm"], "frame": crowd["frame"]})
    t_ct, _ = best_of(lambda: trackpy.link(fc, 15.0, memory=5))
    t_drift, _ = best_of(lambda: estimate_drift(s.frames), repeat=1)
    from scipy import ndimage

    from tem_operando.kinetics.swelling import swelling_table
    from tem_operando.segment.instances import split_necks

    merged = [ndimage.label(c > 0)[0] for c in s.classes]
    t_split, _ = best_of(lambda: [split_necks(m) for m in merged])
    # high magnification: two touching particles of 300 and 160 px radius in a 1024² frame (the blob
    # cut's growth step used to cost seconds here)
    yy, xx = np.mgrid[:1024, :1024]
    big = (((yy - 512) ** 2 + (xx - 400) ** 2 < 300 ** 2) | ((yy - 512) ** 2 + (xx - 830) ** 2 < 160 ** 2)).astype(np.uint32)
    t_big, big_out = best_of(lambda: split_necks(big))
    t_big_meas, _ = best_of(lambda: measure_objects(None, big_out, nm_per_px=1.0))
    linked = link_objects(ob)
    t_kin, _ = best_of(lambda: swelling_table(linked, nm_per_px=s.nm_per_px))
    print(f"{a.frames} frames {a.size}x{a.size}, {n_obj} objects (trackpy.locate found {len(feats)})")
    print(f"measure_objects   {n_obj / t_meas:12.0f} objects/s  {a.frames / t_meas:9.0f} frames/s")
    print(f"trackpy.locate    {len(feats) / t_loc:12.0f} features/s {a.frames / t_loc:9.0f} frames/s")
    print(f"  ratio measure/locate (frames/s): {t_loc / t_meas:.1f}x  (target ≥ 5x)")
    print(f"link_objects      {n_obj / t_link:12.0f} objects/s")
    print(f"trackpy.link      {n_obj / t_tpl:12.0f} objects/s")
    print(f"  ratio link_objects/trackpy.link: {t_tpl / t_link:.2f}x  (target ≥ 1x)")
    print(f"  its wire metric (displacement along a wire's axis weighted by WIRE_ALONG_WEIGHT) costs "
          f"{t_link / t_link_e:.2f}x the Euclidean link_objects")
    print(f"crowded field, {len(crowd)} objects: link_objects {len(crowd) / t_cl:.0f} objects/s, "
          f"trackpy.link {len(crowd) / t_ct:.0f} objects/s, ratio {t_ct / t_cl:.2f}x  (target ≥ 1x)")
    print(f"estimate_drift    {a.frames / t_drift:12.1f} frames/s")
    print(f"split_necks       {a.frames / t_split:12.0f} frames/s  ({1e3 * t_split / a.frames:.1f} ms/frame, "
          f"{t_split / t_meas:.2f}x measure_objects)")
    print(f"split_necks, two touching particles of 300 / 160 px radius in 1024x1024: {1e3 * t_big:.0f} ms, "
          f"{int(big_out.max())} parts, {t_big / t_big_meas:.1f}x measure_objects on its result")
    print(f"swelling_table    {len(linked) / t_kin:12.0f} rows/s     ({t_kin / t_link:.2f}x link_objects)")


if __name__ == "__main__":
    main()
