"""Benchmark data for bench_detect.py: rendered parts + DiLiGenT objects -> one dataset folder.

Train surfaces: clean rendered parts. Test surfaces (never in training): other clean rendered
parts (defects implanted in their PS normals by the dataset builder), rendered parts with defects
implanted in the height field before rendering (they reach the detector through PS), and the
DiLiGenT objects ball/bear/cat (real captures, defects implanted in the PS normals).
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DILIGENT = ROOT.parent / "shared" / "data" / "diligent"
SEED = 20240
N_TRAIN_PARTS = 24
N_TEST_CLEAN_PARTS = 8
N_TEST_DEFECTIVE_PARTS = 8


def build(work: Path, progress=print) -> Path:
    """Render the parts and build the dataset under ``work`` (cached: skipped if present)."""
    from psinspect.dataset import build_dataset
    from psinspect.render import render_dataset

    ds = work / "dataset"
    if (ds / "manifest.json").is_file():
        return ds
    caps = work / "captures"
    if caps.exists():
        shutil.rmtree(caps)
    tmp = work / "tmp_render"
    clean = render_dataset(tmp / "clean", N_TRAIN_PARTS + N_TEST_CLEAN_PARTS, defect_rate=0.0,
                           seed=SEED)
    bad = render_dataset(tmp / "defective", N_TEST_DEFECTIVE_PARTS, defect_rate=1.0,
                         seed=SEED + 1)
    caps.mkdir(parents=True)
    folders = []
    for p in clean:
        folders.append(Path(shutil.move(str(p), caps / f"c_{p.name}")))
    for p in bad:
        folders.append(Path(shutil.move(str(p), caps / f"d_{p.name}")))
    shutil.rmtree(tmp)
    holdout = [f.name for f in folders[N_TRAIN_PARTS:N_TRAIN_PARTS + N_TEST_CLEAN_PARTS]]
    real = []
    if DILIGENT.is_dir():
        real = [DILIGENT / n for n in ("ballPNG", "bearPNG", "catPNG")]
        holdout += [p.name for p in real]
    else:
        progress(f"warning: {DILIGENT} not found: benchmark runs on rendered parts only")
    build_dataset([*folders, *real], ds, holdout=holdout, seed=SEED, subsets=4,
                  skip_lights={"bearPNG": list(range(20))},
                  progress=lambda m: None)
    return ds
