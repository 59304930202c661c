"""Reproduce the bundled default model: ``python bench/train_default.py``.

Builds (or reuses) the benchmark data of bench/_bench_data.py (rendered parts; the DiLiGenT
objects are test-only and never trained on), trains the default model with the fixed recipe and
seed below, calibrates its thresholds on the clean validation maps plus clean maps of 32 parts
(8 of each family) that are neither trained on nor tested (``_bench_data.build_calibration``),
and writes it to ``src/psinspect/data/default_model/`` (model-<hash>.safetensors,
train_log-<hash>.json and config.json).
Same seed, same thread count -> same weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "psinspect" / "data" / "default_model"

#: the default model's training recipe (arguments of psinspect.train.train_model)
RECIPE: dict = {
    "model_name": "geo-seg",
    "hyperparameters": {"steps_per_epoch": 50, "tta": 4},
    "epochs": 40,
    "batch_size": 8,
    "patience": 8,
}
SEED = 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--out", type=Path, default=OUT)
    args = ap.parse_args()
    from psinspect.train import train_model

    os.chdir(ROOT)  # the model's config records the dataset as runs/bench_detect/dataset
    ds = _bench_data.build(Path("runs") / "bench_detect")
    calib = _bench_data.build_calibration(Path("runs") / "bench_detect")
    t0 = time.perf_counter()
    cfg = train_model([ds], args.out, seed=SEED, force=True, threads=args.threads,
                      calibration_inputs=calib,
                      on_epoch=lambda e: print(f"epoch {e['epoch'] + 1}: val {e['val_loss']:.4f}"
                                               f" ({e['seconds']:.0f} s)", flush=True),
                      **RECIPE)
    print(f"{cfg['model']} trained in {time.perf_counter() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
