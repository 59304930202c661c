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


def one_run(seed: int, from_scratch: bool, work: Path) -> dict:
    """``psinspect run`` (default preset) with ``seed``; its run.json and what evaluate said
    about test surfaces seen in training."""
    from psinspect.pipeline import make_config, run_pipeline

    out = work / f"s{seed}{'-scratch' if from_scratch else ''}"
    info = run_pipeline(out, make_config("default", seed=seed,
                                         fine_tune=False if from_scratch else None))
    metrics = json.loads((out / "metrics.json").read_text())
    info["seen_in_training"] = metrics.get("test_surfaces_seen_in_training")
    info["train_seconds"] = json.loads((out / "model" / "config.json").read_text())[
        "training"]["train_seconds"]
    return info


def row(name: str, m: dict, v: dict, extra: str) -> str:
    return (f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in METRICS)
            + f" | {v['defective_failed']} / {v['defective_failed'] + v['defective_passed']}"
            f" | {v['clean_passed']} / {v['clean_passed'] + v['clean_failed']} | {extra} |")


def markdown(results: dict[int, dict], date: str) -> str:
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
        ft, fs = r["fine_tune"], r["scratch"]
        b = ft["bundled_model"]
        lines += [
            row(f"{seed}: fine-tuned (default)", ft["metrics"], ft["verdicts"],
                f"{ft['train_seconds']:.0f} s"),
            row(f"{seed}: bundled, as shipped", b["metrics"], b["verdicts"], "(none here)"),
            row(f"{seed}: from random weights", fs["metrics"], fs["verdicts"],
                f"{fs['train_seconds']:.0f} s"),
        ]
    seen = sorted({s for r in results.values() for k in ("fine_tune", "scratch")
                   for s in (r[k]["seen_in_training"] or [])})
    unknown = [f"{seed}" for seed, r in results.items()
               if any(r[k]["seen_in_training"] is None for k in ("fine_tune", "scratch"))]
    lines += ["", "Test surfaces seen in training (evaluate's check): "
              + (", ".join(seen) if seen else "none")
              + (f" (could not be told for seeds {', '.join(unknown)})" if unknown else "")
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
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = markdown(results, date)
    print(text)
    if not args.no_write:
        write_section(text, ROOT / "BENCHMARKS.md", BEGIN, END)


if __name__ == "__main__":
    main()
