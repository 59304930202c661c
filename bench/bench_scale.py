"""Pixel size: the bundled model on the same surfaces imaged finer or coarser, and ``--scale``.

geo-seg sees pixels: its fit scales, its network's reach and the defects it learned are sizes in
pixels of its training maps (rendered parts about 140-230 px across). A part imaged at twice the
resolution shows the same normals with every feature twice as many pixels across. This
benchmark takes bench_detect.py's test maps (35 surfaces, the same defects and ground truth),
resamples each by a factor (:func:`psinspect.normalmap.resample`: the same surface at another
pixel size; ground truth by area, cut at 1/2) and scores them with the bundled default model as
they are, and with ``detect --scale 1/factor`` (``detect_map(scale=...)``: resampled back to the
training size for scoring, the score brought back to the map's own pixels). Metrics inside the
object mask at the resampled size; verdicts at the calibrated image threshold.

Writes its section of BENCHMARKS.md (``<!-- scale:begin -->`` ... ``end``).

    OMP_NUM_THREADS=2 python bench/bench_scale.py
    python bench/bench_scale.py --factors 0.5 2 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_data  # noqa: E402
import bench_detect  # noqa: E402
from _markdown import cpu_description, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"


def evaluate_factor(bundle, maps, factor: float, scale: float) -> dict:
    """Pooled metrics and verdicts of ``bundle`` on ``maps`` resampled by ``factor``, scored
    with ``detect_map(scale=scale)``."""
    from psinspect.detect import detect_map
    from psinspect.metrics import EvalItem, evaluate
    from psinspect.normalmap import resample

    items, failed, t0 = [], {"defective": 0, "clean": 0}, time.perf_counter()
    n_def = 0
    for name, n, m, gt in maps:
        if factor != 1.0:
            h, w = m.shape
            size = (max(8, round(h * factor)), max(8, round(w * factor)))
            n, m = resample(n, m, size)
            gt = m & (cv2.resize(gt.astype(np.float32), size[::-1],
                                 interpolation=cv2.INTER_AREA) >= 0.5)
        det = detect_map(bundle, n, m, name=name, scale=scale)
        bad = bool(gt.any())
        n_def += bad
        failed["defective" if bad else "clean"] += det.verdict == "fail"
        items.append(EvalItem(name, det.score, gt, m, det.image_score, None))
    return {"pooled": evaluate(items, breakdowns=False)["pooled"], "failed": failed,
            "defective": n_def, "clean": len(maps) - n_def,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--factors", type=float, nargs="*", default=[0.5, 0.75, 1.0, 1.5, 2.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    import torch

    from psinspect.modelstore import load_model_dir

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    maps = _bench_data.test_maps(_bench_data.build(bench_detect.WORK))
    bundle = load_model_dir()
    rows = []
    for f in args.factors:
        for scale in ([1.0] if f == 1.0 else [1.0, 1.0 / f]):
            r = evaluate_factor(bundle, maps, f, scale)
            p = r["pooled"]
            rows.append((f, scale, r))
            print(f"factor {f:g}, --scale {scale:.3g}: {p['pixel_auroc']:.4f} / {p['aupro']:.4f} "
                  f"/ {p['image_auroc']:.4f}, failed {r['failed']} ({r['seconds']:.0f} s)",
                  flush=True)
    if args.no_write:
        return
    n_def, n_clean = rows[0][2]["defective"], rows[0][2]["clean"]
    lines = [
        BEGIN, "### Pixel size: parts imaged finer or coarser, and `detect --scale`", "",
        f"Command: `OMP_NUM_THREADS={args.threads} python bench/bench_scale.py`; machine: "
        f"2-core CPU, no GPU ({platform.machine()}, {cpu_description()}; 1-min load average "
        "at the end "
        f"{os.getloadavg()[0]:.1f}); {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}; "
        f"{time.perf_counter() - t0:.0f} s.", "",
        "The detection section's test maps (35 surfaces, the same defects) resampled by a "
        "factor: the same surfaces imaged with pixels that many times finer (factor 2: every "
        "feature twice as many pixels across), scored by the bundled model as they are and "
        "with `detect --scale 1/factor` (scored at the training size, the score brought back "
        "to the map's pixels). Pixel AUROC / AUPRO / image AUROC inside the object mask; "
        f"failed at the calibrated image threshold: defective of {n_def}, clean of {n_clean}.",
        "", "| factor | `--scale` | pixel AUROC / AUPRO / image AUROC | defective failed | "
        "clean failed | seconds |", "|---|---|---|---|---|---|"]
    for f, scale, r in rows:
        p = r["pooled"]
        lines.append(f"| {f:g} | {scale:.3g} | {p['pixel_auroc']:.3f} / {p['aupro']:.3f} / "
                     f"{p['image_auroc']:.3f} | {r['failed']['defective']} | "
                     f"{r['failed']['clean']} | {r['seconds']:.0f} |")
    def pair(f: float) -> tuple[dict, dict]:
        got = {sc: r["pooled"] for ff, sc, r in rows if ff == f}
        return got[1.0], got[min(got, key=lambda sc: abs(sc - 1.0 / f))]

    own = next(r["pooled"] for f, _, r in rows if f == 1.0)
    finer = [f for f in args.factors if f > 1.0]
    coarser = [f for f in args.factors if f < 1.0]
    lines += ["", "Reading: pixel AUROC at the training pixel size "
              f"{own['pixel_auroc']:.3f}; "
              + "; ".join(f"factor {f:g}: {pair(f)[0]['pixel_auroc']:.3f} as it is, "
                          f"{pair(f)[1]['pixel_auroc']:.3f} with `--scale {1 / f:.3g}`"
                          for f in [*coarser, *finer]) + ". "
              "The model sees pixels, so parts imaged much finer or coarser than its training "
              "maps lose accuracy and verdicts (many more good parts fail at half and twice "
              "the size). `--scale` "
              "brings a finer capture back to about what the model does at its own size; a "
              "coarser capture gains too, but the detail it never recorded does not come "
              "back. Give `--scale` about (140-230 px) / (the part's size in pixels).", END]
    write_section("\n".join(lines), args.output, BEGIN, END)


if __name__ == "__main__":
    main()
