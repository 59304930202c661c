"""Benchmark data for bench_detect.py: rendered parts + DiLiGenT objects -> one dataset folder.

Train surfaces: clean rendered parts (disc, plate, casting, and free-form "organic" bodies,
which are rendered for training only). Test surfaces (never in training): other clean rendered
parts (defects implanted in their PS normals by the dataset builder), rendered parts with defects
implanted in the height field before rendering (they reach the detector through PS), and the
DiLiGenT objects ball/bear/cat (real captures, defects implanted in the PS normals).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DILIGENT = ROOT.parent / "shared" / "data" / "diligent"
SEED = 20240
N_TRAIN_PARTS = 24
N_TEST_CLEAN_PARTS = 16
N_TEST_DEFECTIVE_PARTS = 16
N_ORGANIC_TRAIN_PARTS = 16
#: changes whenever the recipe above changes: a cached dataset with another stamp is rebuilt
STAMP = (f"v3-{SEED}-{N_TRAIN_PARTS}-{N_TEST_CLEAN_PARTS}-{N_TEST_DEFECTIVE_PARTS}-"
         f"organic{N_ORGANIC_TRAIN_PARTS}")


def build(work: Path, progress=print) -> Path:
    """Render the parts and build the dataset under ``work`` (cached: skipped if present)."""
    from psinspect.dataset import build_dataset
    from psinspect.render import render_dataset

    ds = work / "dataset"
    stamp = work / "dataset.stamp"
    if (ds / "manifest.json").is_file() and stamp.is_file() and stamp.read_text() == STAMP:
        return ds
    if ds.exists():
        shutil.rmtree(ds)
    caps = work / "captures"
    if caps.exists():
        shutil.rmtree(caps)
    tmp = work / "tmp_render"
    clean = render_dataset(tmp / "clean", N_TRAIN_PARTS + N_TEST_CLEAN_PARTS, defect_rate=0.0,
                           seed=SEED)
    bad = render_dataset(tmp / "defective", N_TEST_DEFECTIVE_PARTS, defect_rate=1.0,
                         seed=SEED + 1)
    organic = render_dataset(tmp / "organic", N_ORGANIC_TRAIN_PARTS, defect_rate=0.0,
                             seed=SEED + 3, families=("organic",))
    caps.mkdir(parents=True)
    folders = []
    for p in clean:
        folders.append(Path(shutil.move(str(p), caps / f"c_{p.name}")))
    for p in bad:
        folders.append(Path(shutil.move(str(p), caps / f"d_{p.name}")))
    for p in organic:
        folders.append(Path(shutil.move(str(p), caps / f"o_{p.name}")))
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
    stamp.write_text(STAMP)
    return ds


MORE_STAMP = f"v1-{SEED + 21}-{N_TRAIN_PARTS}-organic{N_ORGANIC_TRAIN_PARTS}"


def build_more_parts(work: Path) -> Path:
    """A second training dataset as large as the benchmark's (``N_TRAIN_PARTS`` machined parts
    and ``N_ORGANIC_TRAIN_PARTS`` organic bodies, seeds of their own, all for training and
    validation, none tested) under ``work/more_parts`` (cached: skipped if present). For the
    ``more`` design-exploration variants only."""
    from psinspect.dataset import build_dataset
    from psinspect.render import render_dataset

    root = work / "more_parts"
    ds, stamp = root / "dataset", root / "dataset.stamp"
    if (ds / "manifest.json").is_file() and stamp.is_file() and stamp.read_text() == MORE_STAMP:
        return ds
    if root.exists():
        shutil.rmtree(root)
    tmp = root / "tmp_render"
    parts = render_dataset(tmp / "parts", N_TRAIN_PARTS, defect_rate=0.0, seed=SEED + 21)
    organic = render_dataset(tmp / "organic", N_ORGANIC_TRAIN_PARTS, defect_rate=0.0,
                             seed=SEED + 23, families=("organic",))
    caps = root / "captures"
    caps.mkdir()
    folders = [Path(shutil.move(str(p), caps / f"m{prefix}_{p.name}"))
               for prefix, group in (("c", parts), ("o", organic)) for p in group]
    shutil.rmtree(tmp)
    build_dataset(folders, ds, holdout=[], seed=SEED + 21, subsets=4, progress=lambda m: None)
    stamp.write_text(MORE_STAMP)
    return ds


#: test parts of the first 8 + 8 (the benchmark's test set until 2026-11-29 20:30 UTC; every
#: design choice of the explore rows was made on them): ``c_part024``-``c_part031``, ``d_part000``
#: -``d_part007``, and the DiLiGenT objects
FIRST_TEST_PARTS = 8


def first_test_surface(surface: str) -> bool:
    """Whether a test surface was in the benchmark's original 19 (see ``FIRST_TEST_PARTS``)."""
    if surface.startswith(("c_part", "d_part")):
        index = int(surface.split("_")[1][4:])
        offset = N_TRAIN_PARTS if surface.startswith("c_") else 0
        return index < offset + FIRST_TEST_PARTS
    return True


#: clean parts rendered for threshold calibration only (never trained on, never tested): this
#: many of each family, each family rendered on its own so that every family is covered alike
#: (until 2026-12-02 12 parts of randomly drawn families and 4 organic bodies: 2 castings,
#: whose rougher new instances then failed as good parts)
CALIB_FAMILIES = ("disc", "plate", "casting", "organic")
N_CALIB_PER_FAMILY = 8
CALIB_STAMP = f"v2-{SEED + 30}-{N_CALIB_PER_FAMILY}-{'-'.join(CALIB_FAMILIES)}"


def build_calibration(work: Path) -> list[Path]:
    """Clean maps of parts that are neither trained on nor tested (new instances of the
    training families: ``N_CALIB_PER_FAMILY`` each of discs, plates, castings and organic
    bodies, seeds of their own), through the same light subsets and PS as the dataset,
    unaugmented: the default model's extra calibration maps
    (``train_model(calibration_inputs=...)``). Cached under ``work/calibration``; returns the
    ``.npy`` maps."""
    from psinspect.dataset import build_dataset
    from psinspect.render import render_dataset

    ds = work / "calibration"
    stamp = work / "calibration.stamp"
    if not ((ds / "manifest.json").is_file() and stamp.is_file()
            and stamp.read_text() == CALIB_STAMP):
        for d in (ds, work / "calib_captures"):
            if d.exists():
                shutil.rmtree(d)
        caps = work / "calib_captures"
        folders = []
        for k, family in enumerate(CALIB_FAMILIES):
            folders += render_dataset(caps / family, N_CALIB_PER_FAMILY, defect_rate=0.0,
                                      seed=SEED + 30 + k, families=(family,))
        build_dataset(folders, ds, holdout=[], seed=SEED + 30, subsets=4, augment=[],
                      progress=lambda m: None)
        stamp.write_text(CALIB_STAMP)
    return sorted(ds.glob("N_*.npy"))


def test_maps(ds: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, normals, mask, ground truth inside the mask) of every test map of the dataset
    ``ds`` (:func:`build`), in manifest order."""
    import cv2

    from psinspect.normalmap import load_normal_map

    out = []
    for it in json.loads((ds / "manifest.json").read_text())["items"]:
        if not it["split"].startswith("test"):
            continue
        n, m = load_normal_map(ds / it["file"])
        gt = np.zeros(m.shape, bool)
        if it["defect_mask"]:
            gt = cv2.imread(str(ds / it["defect_mask"]), cv2.IMREAD_GRAYSCALE) > 0
        out.append((it["name"], n, m, gt & m))
    return out
