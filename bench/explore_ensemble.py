"""Design exploration: do independently trained geo-seg models miss different defects?

Scores every held-out test map of bench/bench_detect.py through ``psinspect.detect.detect_map``
(the product's path, per-map normalisation) with the bundled model and with the stored models
of other training runs of bench/explore_geo_seg.py (``runs/explore/<variant>/model``: the
default recipe with seed 1, the 'more' variant with seeds 0 and 1, 'focal'), each at 1, 2 and
4 test-time copies, then evaluates the mean of several models' score maps (and of their image
scores) against each model alone (pooled pixel AUROC, AUPRO up to FPR 0.3, image AUROC; inside
the object mask, ``psinspect.metrics.evaluate``). If the models' errors were independent, the
mean would gain as test-time copies do; if they are the same errors, it would not. An ensemble
of k models costs k trainings, over the 10-minute training floor for k > 1: this is a
diagnostic, not a candidate. Chosen on the test surfaces themselves.

    python bench/explore_ensemble.py            # prints the table
    python bench/explore_ensemble.py --write    # and writes it to BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_data  # noqa: E402
from _markdown import cpu_description, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: label -> stored model folder under runs/explore (None: the bundled model)
MODELS = {"bundled": None, "seed1": "ref-seed1", "more": "more", "more-seed1": "more-seed1",
          "focal": "focal"}
LEVELS = (1, 2, 4)
#: ensembles (label, test-time copies), each model at that level; the first two spend as many
#: network passes per map as one model at 4 copies
ENSEMBLES = (
    (("bundled", "seed1"), 2),
    (("bundled", "seed1", "more", "more-seed1"), 1),
    (("bundled", "seed1"), 4),
    (("bundled", "more"), 4),
    (("bundled", "seed1", "more", "more-seed1"), 4),
    (("bundled", "seed1", "more", "more-seed1", "focal"), 4),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    import torch

    from psinspect.detect import detect_map
    from psinspect.metrics import EvalItem, evaluate
    from psinspect.modelstore import load_model_dir

    torch.set_num_threads(2)
    ds = _bench_data.build(ROOT / "runs" / "bench_detect")
    tests = list(_bench_data.test_maps(ds))
    missing = [f"runs/explore/{v}/model" for v in MODELS.values()
               if v is not None and not (ROOT / "runs" / "explore" / v / "model").is_dir()]
    if missing:
        sys.exit("missing stored models (train them with bench/explore_geo_seg.py): "
                 + ", ".join(missing))
    t0 = time.perf_counter()
    scored = {}  # (label, level) -> list of (score map, image score), one per test map
    for label, variant in MODELS.items():
        path = None if variant is None else ROOT / "runs" / "explore" / variant / "model"
        for level in LEVELS:
            bundle = load_model_dir(path, tta=level)
            dets = [detect_map(bundle, n, m, name=name) for name, n, m, _ in tests]
            scored[label, level] = [(d.score, d.image_score) for d in dets]
    print(f"scored {len(tests)} maps with {len(MODELS)} models at {len(LEVELS)} levels in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)

    def row(labels: tuple[str, ...], level: int) -> str:
        items = []
        for i, (name, _, m, gt) in enumerate(tests):
            parts = [scored[lb, level][i] for lb in labels]
            score = np.mean([p[0] for p in parts], axis=0).astype(np.float32)
            items.append(EvalItem(name, score, gt, m, float(np.mean([p[1] for p in parts]))))
        p = evaluate(items, breakdowns=False)["pooled"]
        line = (f"| {' + '.join(labels)} | {level} | {len(labels) * level} | "
                f"{p['pixel_auroc']:.4f} | {p['aupro']:.4f} | {p['image_auroc']:.4f} |")
        print(line, flush=True)
        return line

    rows = [row((label,), level) for label in MODELS for level in LEVELS]
    rows += [row(labels, level) for labels, level in ENSEMBLES]
    text = "\n".join([
        "<!-- ensemble:begin -->",
        "#### Ensembles of independently trained models (geo-seg; a diagnostic)", "",
        "Command: `python bench/explore_ensemble.py --write` (after `python "
        "bench/explore_geo_seg.py VARIANT` for ref-seed1, more, more-seed1 and focal, whose "
        f"models it reads from runs/explore); machine: 2-core CPU, no GPU ({cpu_description()}, "
        f"Python {platform.python_version()}); date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}.",
        "",
        "The detection section's 35 test surfaces (216 maps) scored by `detect_map` with the "
        "bundled model (seed 0) and four other stored training runs: the default recipe with "
        "seed 1 (seed1), twice the training surfaces with seeds 0 and 1 (more, more-seed1) "
        "and the focal loss (focal); 'Design exploration' above describes them. An ensemble "
        "row scores each map with each of its models at the given test-time copies and "
        "averages their score maps (after each model's per-map normalisation) and their image "
        "scores; 'passes' is the network passes per map (models x copies). Pixel AUROC / "
        "AUPRO / image AUROC inside the object mask. Reading (run of 2026-12-01): no "
        "ensemble beats its best member by more than 0.005 on any metric; at the network "
        "passes of one model at 4 copies, two or four models at 2 or 1 copies each score "
        "below the bundled model at 4 (test-time copies of one model gain more than other "
        "models do), and four models at 4 copies each (16 passes) score 0.942 / 0.764, level "
        "with the bundled model alone. The models miss the same defect pixels and raise the "
        "same clean ones: what keeps the default below the 0.97 / 0.85 floors is not the "
        "draw of one training run (variance) but what every run of these recipes fails to "
        "tell apart (the detection section: thin, low defects in texture), so neither seed "
        "ensembles nor distilling one would close the gap.", "",
        "| models | copies | passes | pixel AUROC | AUPRO | image AUROC |",
        "|---|---|---|---|---|---|",
        *rows, "<!-- ensemble:end -->"])
    if args.write:
        write_section(text, ROOT / "BENCHMARKS.md", "<!-- ensemble:begin -->",
                      "<!-- ensemble:end -->")
        print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
