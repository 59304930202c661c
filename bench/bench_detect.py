"""Anomaly-detection benchmark: every model trained on clean maps of some surfaces and tested on
surfaces never seen in training; writes the 'detect' section of BENCHMARKS.md.

Data (bench/_bench_data.py, cached under runs/bench_detect/): 24 clean rendered parts (discs,
plates, castings) and 16 free-form 'organic' bodies for training (val-clean = the same parts
through another light subset), and as test surfaces:
16 other clean rendered parts (defects from the defect library implanted in their PS normals),
16 rendered parts with 1-3 library defects implanted in the height field before rendering (they
reach the detector through photometric stereo), and the DiLiGenT objects ball, bear, cat (real
captures, library defects implanted in their PS normals). Every test surface also appears as
defect-free maps (except the defective renders). Metrics: psinspect.metrics inside the object
mask only.

    OMP_NUM_THREADS=2 python bench/bench_detect.py            # train all, evaluate, write
    python bench/bench_detect.py --reuse --no-write           # re-evaluate trained models
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_data  # noqa: E402
from _markdown import cpu_description, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench_detect"
SEED = 0

#: the benchmarked models and their training settings (default model: see train_default.py)
RECIPES: dict[str, dict] = {
    "geometric": {"model_name": "geometric"},
    "unet-ae": {"model_name": "unet-ae", "epochs": 12, "batch_size": 8, "patience": 3},
}


#: bootstrap resamples of the test surfaces for the 95 % intervals
BOOTSTRAP = 1000


def default_recipe() -> dict:
    from train_default import RECIPE

    return dict(RECIPE)


def surface_group(name: str) -> str:
    if "PNG" in name:
        return "DiLiGenT (real)"
    if "_d_part" in name:
        return "rendered, defects through PS"
    return "rendered, defects in normals"


def evaluate_model(bundle, ds: Path, threads: int, diagnostics: bool = True,
                   subsets: dict | None = None, breakdowns: bool = True) -> dict:
    """Metrics, verdicts and per-group figures of ``bundle`` on the test maps of ``ds``; with
    ``diagnostics`` also where the pixel AUROC and AUPRO are lost and the bootstrap intervals
    (only the main table reports them; other test-time levels and explore rows skip them).
    ``subsets``: name -> predicate on a test map's surface; the pooled metrics of each subset's
    maps go to ``res["subsets"][name]``. ``breakdowns=False``: no per-type / per-severity
    metrics (see :func:`psinspect.metrics.evaluate`)."""
    import cv2
    import torch

    from psinspect.detect import detect_map
    from psinspect.metrics import EvalItem, bootstrap_intervals, evaluate
    from psinspect.normalmap import load_normal_map

    torch.set_num_threads(threads)
    manifest = json.loads((ds / "manifest.json").read_text())
    items = []
    times = []
    verdicts = {"defective_failed": 0, "defective_passed": 0, "clean_failed": 0,
                "clean_passed": 0}
    clean_failed: list[str] = []
    image_scores: list[list] = []  # per test map: image score, whether defective
    surfaces: list[str] = []
    for it in manifest["items"]:
        if not it["split"].startswith("test"):
            continue
        surfaces.append(it["surface"])
        n, m = load_normal_map(ds / it["file"])
        gt = np.zeros(m.shape, bool)
        if it["defect_mask"]:
            gt = cv2.imread(str(ds / it["defect_mask"]), cv2.IMREAD_GRAYSCALE) > 0
        t0 = time.perf_counter()
        det = detect_map(bundle, n, m, name=it["name"])
        times.append((time.perf_counter() - t0, m.size))
        bad = bool((gt & m).any())
        key = ("defective_" if bad else "clean_") + ("failed" if det.verdict == "fail"
                                                     else "passed")
        verdicts[key] += 1
        image_scores.append([float(det.image_score), bad])
        if key == "clean_failed":
            clean_failed.append(it["surface"])
        items.append(EvalItem(it["name"], det.score, gt & m, m, det.image_score,
                              it["defects"] or None))
    res = evaluate(items, breakdowns=breakdowns)
    if diagnostics:
        fracs = _fraction_above(items)
        res["deficit"] = auroc_deficit_by_map(items, fracs)
        res["deficit_by_defect"] = auroc_deficit_by_defect(items, fracs)
        res["deficit_by_contrast"] = auroc_deficit_by_contrast(items, fracs, ds, manifest)
        res["aupro_deficit"] = aupro_deficit_by_map(items)
        res["aupro_by_defect"] = aupro_by_defect(items)
        res["intervals"] = bootstrap_intervals(items, surfaces, resamples=BOOTSTRAP, seed=SEED)
    res["calibration"] = calibration_check(items, bundle.threshold)
    groups = {}
    for g in sorted({surface_group(i.name) for i in items}):
        sub = [i for i in items if surface_group(i.name) == g or
               (g == "rendered, defects through PS" and i.name.startswith("N_c_part"))]
        groups[g] = evaluate(sub, breakdowns=False)["pooled"]
    res["groups"] = groups
    res["subsets"] = {name: evaluate([i for i, s in zip(items, surfaces, strict=True)
                                      if keep(s)], breakdowns=False)["pooled"]
                      for name, keep in (subsets or {}).items()}
    res["verdicts"] = verdicts
    res["image_scores"] = image_scores
    res["clean_failed_surfaces"] = {s: clean_failed.count(s) for s in sorted(set(clean_failed))}
    t256 = [t for t, px in times if px == 256 * 256]
    res["detect_ms_256"] = 1000 * float(np.median(t256)) if t256 else None
    return res


def _fraction_above(items: list) -> list[np.ndarray]:
    """Per item, a float64 (H, W) map: at each defect pixel the fraction of ALL clean object
    pixels (of every item) scoring above it (ties count half), 0 elsewhere. ``1 - AUROC`` of
    the pooled pixels is the mean of these fractions over the defect pixels."""
    neg = np.sort(np.concatenate([i.score[i.mask & ~i.gt] for i in items]).astype(np.float64))
    out = []
    for i in items:
        frac = np.zeros(i.mask.shape)
        pos = i.gt & i.mask
        s = i.score[pos].astype(np.float64)
        lo, hi = np.searchsorted(neg, s, "left"), np.searchsorted(neg, s, "right")
        frac[pos] = (len(neg) - hi + 0.5 * (hi - lo)) / len(neg)
        out.append(frac)
    return out


def auroc_deficit_by_map(items: list, fracs: list[np.ndarray]) -> list[dict]:
    """Where the pooled pixel AUROC is lost, split by test map (``fracs``: of
    :func:`_fraction_above`). Returns one dict per defective
    map (``name``, ``deficit``: its part of ``1 - AUROC``, ``defects``: its defect types and
    levels), largest first."""
    n_pos = sum(int((i.gt & i.mask).sum()) for i in items)
    out = []
    for i, frac in zip(items, fracs, strict=True):
        if not (i.gt & i.mask).any():
            continue
        defects = sorted({f"{d['type']} ({d.get('level', '?')})" for d in (i.defects or [])})
        out.append({"name": i.name, "deficit": float(frac.sum() / n_pos),
                    "defects": ", ".join(defects)})
    return sorted(out, key=lambda d: -d["deficit"])


def aupro_deficit_by_map(items: list) -> list[dict]:
    """Where AUPRO is lost, split by test map: AUPRO is the mean over all ground-truth regions
    of each region's own area under its overlap-vs-FPR curve (:func:`psinspect.metrics.
    region_aupro`), so a map's share of ``1 - AUPRO`` is the sum of ``1 - value`` over its
    regions divided by the number of regions. Returns dicts (``name``, ``deficit``,
    ``regions``, ``defects``), largest first."""
    from psinspect.metrics import region_aupro

    per = region_aupro(items)
    n = sum(len(v) for v in per)
    out = []
    for i, vals in zip(items, per, strict=True):
        if len(vals):
            defects = sorted({f"{d['type']} ({d.get('level', '?')})" for d in (i.defects or [])})
            out.append({"name": i.name, "deficit": float(np.sum(1.0 - vals) / n),
                        "regions": len(vals), "defects": ", ".join(defects)})
    return sorted(out, key=lambda d: -d["deficit"])


def aupro_by_defect(items: list) -> dict:
    """AUPRO with each defect's ground truth as ONE region (its fragments together; the
    pixels, scores and negatives unchanged): a low-severity line's ground truth (its walls
    turned by more than the 2 deg rule) falls apart into many small components, each weighing
    as much as a whole dent in MVTec's AUPRO (the connected components, the figure the floor
    is judged on). Pixels go to a defect by :func:`defect_owner`; ground-truth pixels outside
    every defect's box keep their own components. Returns ``aupro``, ``regions`` (defects)."""
    from psinspect.metrics import aupro, label_regions

    labels, count = [], 0
    for i in items:
        gt = i.gt & i.mask
        owner = defect_owner(i.mask.shape, i.defects or [])
        rest, _ = label_regions(gt & (owner < 0))
        lab = np.where(owner >= 0, owner + 1, 0)
        lab = np.where(rest > 0, rest + len(i.defects or []), lab)
        labels.append(lab)
        count += len(np.unique(lab[gt]))
    value = aupro([i.score for i in items], [i.gt for i in items], [i.mask for i in items],
                  region_labels=labels)
    return {"aupro": value, "regions": count}


def defect_owner(shape: tuple[int, int], defects: list[dict]) -> np.ndarray:
    """(H, W) int: per pixel the index of the first defect record whose bounding box (grown by
    one pixel at its end) holds it, -1 elsewhere."""
    owner = np.full(shape, -1)
    for k, d in enumerate(defects):
        x0, y0, x1, y1 = d["bbox"]
        box = owner[y0:y1 + 1, x0:x1 + 1]
        box[box < 0] = k
    return owner


def auroc_deficit_by_defect(items: list, fracs: list[np.ndarray]) -> list[dict]:
    """Where the pooled pixel AUROC is lost, split by defect type and severity level (``fracs``:
    of :func:`_fraction_above`): each
    defect pixel is given to the first defect of its map whose bounding box holds it (the
    library records one box per defect). Returns dicts (``type``, ``level``, ``deficit``: part
    of ``1 - AUROC``, ``pixels``, ``defects``: how many defects, ``mean``: mean fraction of
    clean pixels above its pixels), largest deficit first."""
    n_pos = sum(int((i.gt & i.mask).sum()) for i in items)
    acc: dict[tuple[str, str], dict] = {}
    for i, frac in zip(items, fracs, strict=True):
        owner = defect_owner(i.mask.shape, i.defects or [])
        for k, d in enumerate(i.defects or []):
            sel = i.gt & i.mask & (owner == k)
            a = acc.setdefault((d["type"], d.get("level", "?")),
                               {"deficit": 0.0, "pixels": 0, "defects": 0})
            a["deficit"] += float(frac[sel].sum() / n_pos)
            a["pixels"] += int(sel.sum())
            a["defects"] += 1
    out = [{"type": t, "level": lv, **a, "mean": a["deficit"] * n_pos / max(a["pixels"], 1)}
           for (t, lv), a in acc.items()]
    return sorted(out, key=lambda d: -d["deficit"])


#: bins of a defect pixel's contrast (its normal's change over the clean surface's local
#: texture level) in :func:`auroc_deficit_by_contrast`
CONTRAST_BINS = (0.0, 0.5, 1.0, 2.0, 4.0, np.inf)
#: the texture level: RMS of the clean map's residual to its 2.5 px robust fit over a Gaussian
#: window of this sigma (px)
TEXTURE_WINDOW_PX = 24.0


def contrast_map(defective: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W) float32: per pixel the angle between the defective and the clean normals (the
    defect's own change, degrees) over the clean surface's local texture level (degrees: RMS
    over a Gaussian window of ``TEXTURE_WINDOW_PX`` of the angle between the clean normals and
    their 2.5 px robust fit, :func:`psinspect.models.geometric.robust_reference`). Below 1 the
    defect turns the normal by less than the surface's own texture and noise do around it."""
    from psinspect.defects import angle_deg
    from psinspect.models.geometric import masked_blur, robust_reference

    resid = angle_deg(clean, robust_reference(clean, mask, 2.5)).astype(np.float32)
    level = np.sqrt(masked_blur(resid ** 2, mask, TEXTURE_WINDOW_PX))
    return (angle_deg(defective, clean) / np.maximum(level, 1e-3)).astype(np.float32)


def auroc_deficit_by_contrast(items: list, fracs: list[np.ndarray], ds: Path,
                              manifest: dict) -> list[dict]:
    """Where the pooled pixel AUROC is lost, split by the defect pixels' contrast
    (:func:`contrast_map`, bins ``CONTRAST_BINS``), over the maps whose defects were implanted
    in the normals of a test map that is also in the test set clean (its ``N_`` twin: the
    DiLiGenT objects and the rendered parts with defects in the normals; a through-PS part has
    no clean twin with the same PS noise). Returns per bin ``lo``, ``hi``, ``pixels`` (share
    of those maps' defect pixels), ``deficit`` (share of their part of ``1 - AUROC``) and
    ``mean`` (mean fraction of all clean pixels scoring above its pixels)."""
    from psinspect.normalmap import load_normal_map

    files = {it["name"]: it["file"] for it in manifest["items"]}
    con, frac = [], []
    for i, f in zip(items, fracs, strict=True):
        twin = "N_" + i.name[2:]
        pos = i.gt & i.mask
        if not i.name.startswith("A_") or twin not in files or not pos.any():
            continue
        n, m = load_normal_map(ds / files[i.name])
        n0, _ = load_normal_map(ds / files[twin])
        con.append(contrast_map(n, n0, m)[pos])
        frac.append(f[pos])
    if not con:
        return []
    c, fr = np.concatenate(con), np.concatenate(frac)
    out = []
    for lo, hi in zip(CONTRAST_BINS[:-1], CONTRAST_BINS[1:], strict=True):
        k = (c >= lo) & (c < hi)
        out.append({"lo": lo, "hi": hi, "pixels": float(k.mean()),
                    "deficit": float(fr[k].sum() / max(fr.sum(), 1e-12)),
                    "mean": float(fr[k].mean()) if k.any() else 0.0})
    return out


def calibration_check(items: list, threshold: float) -> dict:
    """How the pixel threshold (calibrated for a false-positive rate on clean VALIDATION maps)
    holds on the test surfaces: the fraction of clean test object pixels above it, pooled and
    per surface group."""
    out = {}
    for g in [None, *sorted({surface_group(i.name) for i in items})]:
        sub = [i for i in items if g is None or surface_group(i.name) == g]
        neg = np.concatenate([i.score[i.mask & ~i.gt] for i in sub])
        out[g or "all"] = float((neg >= threshold).mean())  # as detect's mask
    return out


def detect_throughput(bundle, ds: Path, threads: int, count: int = 40,
                      jobs: int | None = None) -> float:
    """Maps per second of detect_map (score, threshold, regions, verdict) on 256 x 256 test
    maps, ``jobs`` maps at a time as ``psinspect detect`` scores several inputs
    (:func:`psinspect.detect.run_parallel`; default :func:`psinspect.detect.default_jobs`)."""
    import torch

    from psinspect.detect import default_jobs, detect_map, run_parallel
    from psinspect.normalmap import load_normal_map

    torch.set_num_threads(threads)
    manifest = json.loads((ds / "manifest.json").read_text())
    maps = []
    for it in manifest["items"]:
        if it["split"].startswith("test"):
            n, m = load_normal_map(ds / it["file"])
            if m.shape == (256, 256):
                maps.append((n, m))
        if len(maps) >= 8:
            break
    detect_map(bundle, *maps[0])  # warm-up
    jobs = default_jobs(count) if jobs is None else jobs
    t0 = time.perf_counter()
    run_parallel(lambda i: detect_map(bundle, *maps[i % len(maps)]), list(range(count)), jobs)
    return count / (time.perf_counter() - t0)


def evaluate_tta_levels(res: dict, bundle, ds: Path, levels: list[int], threads: int
                        ) -> dict[int, dict]:
    """The default model at other test-time augmentation levels (``with_tta``: same weights,
    the thresholds calibrated for N): metrics per level, then the detect speed of every level
    measured one after the other (comparable as ratios)."""
    from psinspect.modelstore import with_tta

    own = res["hyperparameters"].get("tta")
    at = {level: with_tta(bundle, level) for level in levels}
    out: dict[int, dict] = {}
    for level in levels:
        r = res if level == own else evaluate_model(at[level], ds, threads, diagnostics=False)
        out[level] = {"pooled": r["pooled"], "groups": r["groups"], "verdicts": r["verdicts"],
                      "per_type": r["per_type"]}
        p = r["pooled"]
        print(f"geo-seg tta {level}: AUROC {p['pixel_auroc']:.4f} AUPRO {p['aupro']:.4f} img "
              f"{fmt(p['image_auroc'])}", flush=True)
    for level in levels:
        out[level]["maps_per_s"] = detect_throughput(at[level], ds, threads)
        print(f"geo-seg tta {level}: {out[level]['maps_per_s']:.1f} maps/s", flush=True)
    return out


def fmt(v, nd=3):
    return "-" if v is None else f"{v:.{nd}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None,
                    help="subset of: geometric unet-ae geo-seg (default: all)")
    ap.add_argument("--retrain-default", action="store_true",
                    help="train geo-seg with the default recipe here instead of evaluating the "
                         "bundled default model (which bench/train_default.py made)")
    ap.add_argument("--reuse", action="store_true", help="reuse trained model dirs in runs/")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--tta-levels", type=int, nargs="*", default=[1, 2, 4, 8],
                    help="test-time augmentation levels at which the default model is also "
                         "evaluated (`detect --tta N`; none: skip)")
    args = ap.parse_args()

    import torch

    from psinspect.errors import PsinspectError
    from psinspect.modelstore import default_model_dir, load_model_dir
    from psinspect.train import operating_points, train_model

    torch.set_num_threads(args.threads)
    recipes = {**RECIPES, "geo-seg": default_recipe()}
    names = args.models or list(recipes)
    t0 = time.perf_counter()
    ds = _bench_data.build(WORK)
    print(f"data ready ({time.perf_counter() - t0:.0f} s): {ds}", flush=True)
    results, bundles = {}, {}
    for name in names:
        if name == "geo-seg" and not args.retrain_default:
            mdir = default_model_dir()
            if not (mdir / "config.json").is_file():
                print("no bundled default model (run bench/train_default.py); skipped")
                continue
            train_s = json.loads((mdir / "config.json").read_text())["training"].get(
                "train_seconds")
        else:
            recipe = dict(recipes[name])
            mdir = WORK / "models" / name
            train_s = None
            if not (args.reuse and (mdir / "config.json").is_file()):
                t1 = time.perf_counter()
                train_model([ds], mdir, seed=SEED, force=True, threads=args.threads,
                            on_epoch=lambda e, n=name: print(
                                f"  {n} epoch {e['epoch'] + 1}: val {e['val_loss']:.4f} "
                                f"({e['seconds']:.0f} s)", flush=True),
                            **recipe)
                train_s = time.perf_counter() - t1
            else:
                train_s = json.loads((mdir / "config.json").read_text())["training"].get(
                    "train_seconds")
        bundle = load_model_dir(mdir)
        res = evaluate_model(bundle, ds, args.threads)
        res["train_seconds"] = train_s
        res["maps_per_s"] = detect_throughput(bundle, ds, args.threads)
        res["model"] = bundle.config["model"]
        res["calibration_target_fpr"] = bundle.config.get("calibration", {}).get(
            "target_pixel_fpr")
        res["epochs_run"] = bundle.config["training"].get("epochs_run")
        res["extra_calibration_maps"] = len(
            bundle.config.get("calibration", {}).get("calibration_maps", []))
        res["image_threshold_rule"] = bundle.config.get("calibration", {}).get(
            "image_threshold_rule")
        res["image_threshold"] = bundle.image_threshold
        try:  # verdicts at the thresholds detect --image-fpr R sets (none: not told)
            res["operating_points"] = operating_points(
                bundle.config, [s for s, _ in res["image_scores"]],
                [bad for _, bad in res["image_scores"]])
        except PsinspectError:
            res["operating_points"] = []
        res["hyperparameters"] = bundle.config.get("hyperparameters", {})
        res["batch_size"] = bundle.config["training"].get("batch_size")
        results[name] = res
        bundles[name] = bundle
        p = res["pooled"]
        print(f"{name}: AUROC {p['pixel_auroc']:.4f} AUPRO {p['aupro']:.4f} AP "
              f"{p['pixel_ap']:.3f} F1 {p['f1_max']:.3f} img {fmt(p['image_auroc'])} "
              f"{res['maps_per_s']:.1f} maps/s", flush=True)
        for g, v in res["groups"].items():
            print(f"   {g}: AUROC {v['pixel_auroc']:.4f} AUPRO {v['aupro']:.4f} img "
                  f"{fmt(v['image_auroc'])}", flush=True)
    if "geo-seg" in results and args.tta_levels:
        results["geo-seg"]["tta_levels"] = evaluate_tta_levels(
            results["geo-seg"], bundles["geo-seg"], ds, args.tta_levels, args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "results.json").write_text(json.dumps(results, indent=1, default=float))
    if args.no_write or not results:
        return
    write_section(f"<!-- detect:begin -->\n{render_markdown(results, args).rstrip()}\n"
                  "<!-- detect:end -->", ROOT / "BENCHMARKS.md", "<!-- detect:begin -->",
                  "<!-- detect:end -->")


def render_markdown(results: dict, args) -> str:
    from psinspect.detect import default_jobs

    load = os.getloadavg()[0]
    manifest = json.loads((WORK / "dataset" / "manifest.json").read_text())
    n_split = {}
    for it in manifest["items"]:
        n_split[it["split"]] = n_split.get(it["split"], 0) + 1
    train_surfaces = {it["surface"] for it in manifest["items"] if it["split"] == "train-clean"}
    n_organic = sum("organic" in s for s in train_surfaces)
    lines = [
        "## Anomaly detection on held-out surfaces",
        "",
        f"Command: `OMP_NUM_THREADS={args.threads} python bench/bench_detect.py"
        + (" --reuse` (the unet-ae and geometric model folders of an earlier run of the same "
           "recipes, runs/bench_detect/models, were evaluated again; training time is the one "
           "recorded in them)  " if args.reuse else "`  "),
        f"Machine: 2-core CPU, no GPU ({platform.machine()}, {cpu_description()}, Python "
        f"{platform.python_version()}, torch threads {args.threads}; 1-min load average at the "
        f"end {load:.1f}, the cores are shared with other jobs, so times are pessimistic)  ",
        f"Date: {dt.datetime.now(dt.UTC).strftime('%a %b %d %H:%M:%S UTC %Y')}",
        "",
        f"Protocol: train on clean maps of {len(train_surfaces)} rendered parts "
        f"({len(train_surfaces) - n_organic} discs, plates and castings, {n_organic} free-form "
        "'organic' bodies; train-clean "
        f"{n_split.get('train-clean', 0)} maps incl. rotations/flips, val-clean "
        f"{n_split.get('val-clean', 0)}: the same parts through another light subset, used for "
        "early stopping and threshold calibration only). Test on surfaces never seen in "
        f"training: {n_split.get('test-clean', 0)} defect-free and "
        f"{n_split.get('test-defective', 0)} defective maps of "
        f"{_bench_data.N_TEST_CLEAN_PARTS} other clean rendered parts "
        "(library defects implanted in their PS normals), "
        f"{_bench_data.N_TEST_DEFECTIVE_PARTS} rendered parts with 1-3 library "
        "defects in the height field before rendering (through PS), and the real DiLiGenT "
        "ball, bear and cat (library defects implanted in their robust-PS normals). All "
        "metrics inside the object mask only; AUPRO = normalised area under PRO up to FPR 0.3 "
        "(MVTec AD). Detect speed: `detect_map` (score + threshold + regions + verdict) on "
        "256 x 256 maps, as many at once as `psinspect detect` scores by default (`--jobs`: "
        f"one per core, here {default_jobs(40)}, torch's threads shared out). The geo-seg "
        "row is the bundled default model as made by `python bench/train_default.py` (its "
        "training time is the one recorded there).",
        "",
        "| model | pixel AUROC | AUPRO | pixel AP | F1-max | image AUROC | train time | "
        "detect maps/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        p = r["pooled"]
        ts = r.get("train_seconds")
        t = "0 (training-free)" if r["model"] == "geometric" else (
            "-" if ts is None else f"{ts / 60:.1f} min ({r.get('epochs_run')} ep.)")
        label = {"geo-seg": "**geo-seg (default)**"}.get(name, name)
        lines.append(f"| {label} | {p['pixel_auroc']:.4f} | {p['aupro']:.4f} | "
                     f"{p['pixel_ap']:.4f} | {p['f1_max']:.4f} | {fmt(p['image_auroc'], 4)} | "
                     f"{t} | {r['maps_per_s']:.1f} |")
    if all("intervals" in r for r in results.values()):
        b = next(iter(results.values()))["intervals"]
        lines += ["", f"95 % bootstrap intervals over the {b['groups']} test surfaces ("
                  f"{b['resamples']} resamples, seed {b['seed']}; the maps of one surface drawn "
                  "together; `psinspect.metrics.bootstrap_intervals`): how far these figures "
                  "could move on another draw of test surfaces of the same kinds:", "",
                  "| model | pixel AUROC | AUPRO | image AUROC |", "|---|---|---|---|"]
        for name, r in results.items():
            cells = ["-" if r["intervals"][k] is None else
                     f"{r['intervals'][k][0]:.3f}-{r['intervals'][k][1]:.3f}"
                     for k in ("pixel_auroc", "aupro", "image_auroc")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Per test-surface group (pixel AUROC / AUPRO / image AUROC; the 'through PS' "
              "group is scored together with the clean rendered test maps):", ""]
    groups = sorted({g for r in results.values() for g in r["groups"]})
    lines.append("| model | " + " | ".join(groups) + " |")
    lines.append("|---|" + "---|" * len(groups))
    for name, r in results.items():
        cells = []
        for g in groups:
            v = r["groups"].get(g)
            cells.append("-" if v is None else f"{v['pixel_auroc']:.3f} / {v['aupro']:.3f} / "
                         f"{fmt(v['image_auroc'])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    best = "geo-seg" if "geo-seg" in results else next(iter(results))
    r = results[best]
    lines += ["", f"Per defect type and severity ({best}; pixel AUROC / AUPRO):", "",
              "| type | " + " | ".join(r["per_type"]) + " |",
              "|---|" + "---|" * len(r["per_type"]),
              "| " + best + " | " + " | ".join(
                  f"{v['pixel_auroc']:.3f} / {v['aupro']:.3f}" for v in r["per_type"].values())
              + " |", "",
              "| severity | " + " | ".join(r["per_severity"]) + " |",
              "|---|" + "---|" * len(r["per_severity"]),
              "| " + best + " | " + " | ".join(
                  f"{v['pixel_auroc']:.3f} / {v['aupro']:.3f}"
                  for v in r["per_severity"].values()) + " |", ""]
    hp = r.get("hyperparameters", {})
    if best == "geo-seg" and hp:
        lines.append(f"Default model settings: fit scales {hp.get('geo_scales')} px, U-Net "
                     f"channels {hp.get('channels')}, test-time augmentation {hp.get('tta', 1)} "
                     f"copies; trained {r.get('epochs_run')} epochs x "
                     f"{hp.get('steps_per_epoch')} steps x {r.get('batch_size')} crops of "
                     f"{hp.get('patch')} px; scores divided per map by (percentile "
                     f"{hp.get('map_norm_quantile')} + "
                     f"{hp.get('map_norm_eps')}) ** {hp.get('map_norm_power')} "
                     "(`map_norm_*`, 0 = off; the image score is taken before that "
                     "division).")
        lines.append("")
    v = r["verdicts"]
    n_extra = r.get("extra_calibration_maps") or 0
    n_calib_parts = _bench_data.N_CALIB_PER_FAMILY * len(_bench_data.CALIB_FAMILIES)
    cal_maps = "clean val maps" + (f" and {n_extra} clean maps of parts neither trained on "
                                   "nor tested" if n_extra else "")
    rule = re.sub(r"clean validation maps( and the \d+ maps given to --calibrate-on)?",
                  cal_maps, r.get("image_threshold_rule")
                  or "max image score over clean validation maps", count=1)
    lines.append(f"Verdicts of {best} at its calibrated image threshold "
                 f"({r.get('image_threshold', float('nan')):.3g}: {rule}): defective maps failed "
                 f"{v['defective_failed']}/"
                 f"{v['defective_failed'] + v['defective_passed']}, clean maps passed "
                 f"{v['clean_passed']}/{v['clean_passed'] + v['clean_failed']}"
                 + ("" if not r.get("clean_failed_surfaces") else " (the clean maps that "
                    "failed, by surface: " + ", ".join(
                        f"{k} {c}" for k, c in r["clean_failed_surfaces"].items()) + ")")
                 + ".")
    ops = r.get("operating_points") or []
    if ops:
        lines += ["", f"Other operating points of {best} (same weights and scores): the pass/fail "
                  "threshold that `train --image-fpr R` sets from the same calibration scores, "
                  "and the verdicts at it; `detect --image-fpr R` judges by it with this "
                  "model (or `--image-threshold T`).", "",
                  "| share of good parts failing asked (R) | threshold T | defective maps "
                  "failed | clean maps passed |", "|---|---|---|---|"]
        lines += [f"| {o['rate']:.0%} | {o['image_threshold']:.3g} | {o['defective_failed']}/"
                  f"{o['defective_failed'] + o['defective_passed']} | {o['clean_passed']}/"
                  f"{o['clean_passed'] + o['clean_failed']} |" for o in ops]
    deficit = r.get("deficit") or []
    if deficit:
        total = sum(d["deficit"] for d in deficit)
        lines += ["", f"Where {best}'s pixel AUROC is lost (1 - AUROC = {total:.4f}, split by "
                  "test map: each defect pixel's fraction of clean pixels scoring above it, "
                  "summed per map; the 5 largest shares; a through-PS part appears once per "
                  "light subset, `_lNN`):", "", "| map | defects | share of 1 - AUROC |",
                  "|---|---|---|"]
        lines += [f"| {d['name']} | {d['defects']} | {d['deficit']:.4f} |" for d in deficit[:5]]
    by_defect = r.get("deficit_by_defect") or []
    if by_defect:
        total = sum(d["deficit"] for d in by_defect)
        lines += ["", "The same split by defect type and severity (each defect pixel given to "
                  "the first defect of its map whose bounding box holds it; the 8 largest "
                  "shares; 'mean' is the mean fraction of clean pixels scoring above its "
                  "pixels; a through-PS part's defects are counted once per light subset):", "",
                  "| type (severity) | defects | pixels | share of 1 - AUROC | mean |",
                  "|---|---|---|---|---|"]
        lines += [f"| {d['type']} ({d['level']}) | {d['defects']} | {d['pixels']} | "
                  f"{d['deficit'] / total:.1%} | {d['mean']:.3f} |" for d in by_defect[:8]]
    by_contrast = r.get("deficit_by_contrast") or []
    if by_contrast:
        lines += ["", "The same split by contrast (the defective maps with a clean twin in the "
                  "test set: DiLiGenT and rendered with defects in the normals; each defect "
                  "pixel's contrast = the angle its normal turned over the clean surface's "
                  f"local texture level, the RMS over a {TEXTURE_WINDOW_PX:.0f} px Gaussian "
                  "window of the clean normals' angle to their 2.5 px robust fit; "
                  "`bench_detect.contrast_map`): below 1 a defect turns the normal by less "
                  "than the surface's own texture and noise do around it.", "",
                  "| contrast | share of defect pixels | share of their 1 - AUROC | mean |",
                  "|---|---|---|---|"]
        lines += [f"| {d['lo']:g}-{d['hi']:g} | {d['pixels']:.1%} | {d['deficit']:.1%} | "
                  f"{d['mean']:.3f} |".replace("-inf", "+") for d in by_contrast]
    pro_deficit = r.get("aupro_deficit") or []
    if pro_deficit:
        total = sum(d["deficit"] for d in pro_deficit)
        n_reg = sum(d["regions"] for d in pro_deficit)
        lines += ["", f"Where {best}'s AUPRO is lost (1 - AUPRO = {total:.4f} over {n_reg} "
                  "ground-truth regions, i.e. 8-connected components, each weighing the same; "
                  "split by test map: the sum over its regions of 1 - the region's own area "
                  "under its overlap-vs-FPR curve, divided by the number of regions; the 5 "
                  "largest shares):", "", "| map | defects | regions | share of 1 - AUPRO |",
                  "|---|---|---|---|"]
        lines += [f"| {d['name']} | {d['defects']} | {d['regions']} | {d['deficit']:.4f} |"
                  for d in pro_deficit[:5]]
        per_defect = r.get("aupro_by_defect")
        if per_defect:
            lines += ["", f"Counting each defect's ground truth as one region instead (its "
                      "fragments together; the same pixels and scores; "
                      "`bench_detect.aupro_by_defect`): AUPRO "
                      f"{per_defect['aupro']:.4f} over {per_defect['regions']} regions (one per "
                      "defect; ground-truth pixels outside every defect's box keep their own "
                      "components), against "
                      f"{r['pooled']['aupro']:.4f} over {n_reg} components. A low-severity "
                      "line's ground truth (its walls turned by more than 2 deg) falls apart "
                      "into small "
                      "components that each weigh as much as a whole dent. The floor is judged "
                      "on the components, as MVTec AD defines AUPRO."]
    cal = r.get("calibration") or {}
    if cal:
        target = r.get("calibration_target_fpr")
        lines += ["", f"Pixel threshold on unseen surfaces ({best}): calibrated for a per-pixel "
                  "false-positive rate of "
                  + (f"{target:.2%}" if target is not None else "the configured rate")
                  + " on the clean validation maps (training surfaces under other lights)"
                  + (f" and {n_extra} clean maps of {n_calib_parts} rendered parts neither "
                     f"trained on nor tested ({_bench_data.N_CALIB_PER_FAMILY} of each family, "
                     "`bench/_bench_data.py` build_calibration)"
                     if n_extra else "")
                  + "; measured on the clean pixels of the test maps: "
                  + "; ".join(f"{g} {v:.2%}" for g, v in cal.items()) + "."]
    tl = r.get("tta_levels") or {}
    if tl:
        lines += ["", f"Test-time augmentation levels of {best} (`psinspect detect --tta N`: "
                  "N turned / mirrored copies of each map scored and averaged; same weights, the "
                  "pixel and image thresholds calibrated for each level on the same clean val "
                  "maps at training; detect speeds measured one after the other in this run, "
                  "to be compared with each other: on this shared machine the same level's "
                  "speed varies by up to ~1.5x between moments of one run, as the tables above "
                  "show):",
                  "", "| tta | pixel AUROC | AUPRO | image AUROC | defective failed | clean "
                  "passed | detect maps/s |", "|---|---|---|---|---|---|---|"]
        for level, t in sorted(tl.items(), key=lambda kv: int(kv[0])):
            p, v = t["pooled"], t["verdicts"]
            own = " (default)" if int(level) == hp.get("tta") else ""
            lines.append(
                f"| {level}{own} | {p['pixel_auroc']:.4f} | {p['aupro']:.4f} | "
                f"{fmt(p['image_auroc'], 4)} | {v['defective_failed']}/"
                f"{v['defective_failed'] + v['defective_passed']} | {v['clean_passed']}/"
                f"{v['clean_passed'] + v['clean_failed']} | {t['maps_per_s']:.1f} |")
    lines += ["", "How the default recipe was chosen: see 'Design exploration' below."]
    lines += ["", "Notes. The training set now includes 16 free-form 'organic' bodies (unions of "
              "ellipsoidal lobes with creases; render family `organic`, training only): real "
              "objects' own features (the cat's eyes, nose and paw creases, the bear's ears) "
              "were the main false alarms of a model trained on machined parts alone. What is "
              "left (tables above): low-severity thin defects (scratches, ridges, cracks with "
              "walls of 2-7 deg) are as steep as the brushed and turned textures (0.8-4 deg rms) "
              "and are both missed and imitated by texture streaks, even where a long straight "
              "one is plain to the eye on a smooth turned disc; their ground truth (> 2 deg) "
              "falls apart into many small regions, each weighing as much as a whole dent in "
              "AUPRO; large shallow dents and bumps on curved free-form surfaces (the bear's "
              "arm) look like the object's own shape at every scale the model sees; and on "
              "real objects design features such as noses and eye creases still score like "
              "bumps and scratches, which is why the clean bear maps fail at the image "
              "threshold (and the cat's did before the recalibration below) while clean "
              "rendered test parts mostly pass (the exceptions, rough castings, are listed "
              "under 'Verdicts'; known-part inspection, the `variation` model, is the answer "
              "for such parts).",
              "",
              "Test set. Since 2026-11-29 20:30 UTC the benchmark tests on 16 + 16 rendered parts "
              "instead of 8 + 8 (35 surfaces instead of 19; the first 8 + 8 parts, the DiLiGenT "
              "maps and all training and validation maps are byte-identical to before, the parts "
              "being seeded one by one): the intervals of 19 surfaces were too wide to judge "
              "single changes. On the previous 19 surfaces (run of 18:43 UTC) the same models "
              "scored geo-seg 0.942 / 0.797 / 0.897, unet-ae 0.653 / 0.320 / 0.560 and "
              "geometric 0.774 / 0.286 / 0.482; the added parts are harder on average for "
              "geo-seg (its AUPRO interval 0.671-0.895 then, 0.675-0.857 now).",
              "",
              "Scoring since psinspect 0.3 (2026-11-30). The learned models (geo-seg, unet-ae) "
              "now score the object's own window (its bounding box plus 32 px) instead of the "
              "whole map, or tiles of it: their GroupNorm statistics span the whole input, so "
              "the same part scored differently with more or less empty background around it "
              "(a clean casting failed once 64 px of background were added) and in tiles. "
              "The bundled model was retrained with `python bench/train_default.py` for its "
              "thresholds; its weights are not those of the 0.2 model (same recipe and seed; "
              "the validation losses agree to 3 decimals for 3 epochs, then part: a "
              "rounding-level change in how training examples are made since that model was "
              "trained, not traced; a second run of the command gave bit-identical weights, "
              "model-3a7c2e942dc95da5), and unet-ae was retrained by this script. The 0.2 figures "
              "(run of 2026-11-30 12:23 UTC): geo-seg 0.9379 / 0.7717 / 0.8976 at 14.2 maps/s, "
              "unet-ae 0.6629 / 0.3522 / 0.5913; the 0.2 geo-seg weights scored the 0.3 way "
              "(a one-off check at 20:25 UTC: `evaluate_model` on a copy of the 0.2 folder "
              "relabelled 0.3; threshold-free metrics only): 0.9375 / 0.7673 / 0.9141, so the "
              "scoring change itself moved the figures by -0.0004 / -0.004 / +0.017 and the "
              "rest is the other draw of weights. The speed gain is the smaller window (the "
              "DiLiGenT maps are mostly background).",
              "",
              "Since psinspect 0.4 (2026-12-01). geo-seg's first 2 and 4 test-time copies are "
              "the half and quarter turns of the map (they were the map and its up-down mirror, "
              "and those with a quarter turn and a diagonal mirror), so at the default 4 a part "
              "turned by any multiple of 90 degrees scores the same, turned with it. The "
              "previous bundled weights scored with the new copies (a one-off check, "
              "threshold-free metrics): 0.9381 / 0.7618 / 0.8991 against 0.9377 / 0.7593 / "
              "0.9042 with the old ones. The bundled model was retrained with `python "
              "bench/train_default.py` for that level's thresholds, and its weights changed: "
              "the benchmark's maps made by the current code differ from those the previous "
              "model was trained on (369 of the 856 dataset maps, by up to 0.046 in a normal "
              "component; the DiLiGenT bear and cat and some rendered parts: changes of "
              "2026-11-30/12-01 to how captures and masks are read, not traced to one commit; "
              "the same code at the commit that made the previous model gives the new weights' "
              "first-epoch loss on today's maps), so the recipe no longer reproduced them. The "
              "previous bundled model's figures (run of 2026-11-30 20:16 UTC, 0.3): geo-seg "
              "0.9377 / 0.7593 / 0.9042, 25.8 maps/s, trained in 6.1 min; unet-ae 0.6639 / "
              "0.3446 / 0.6033. This machine's 2 shared cores ran the same training epochs at "
              "7-10 s on 2026-11-30, at 15-18 s on 2026-12-01 before 05:00 UTC (that run: 10.3 "
              "min of training, 9.9 maps/s) and at 10-15 s after 07:00 UTC (the run above), "
              "with nothing else of ours running: times of different days and hours do not "
              "compare.",
              "",
              "Pass/fail threshold since 2026-12-01 07:00 UTC. Every model's image threshold "
              "is the 99 % quantile of a Gumbel (largest-value) distribution fitted to the "
              "image scores of its clean calibration maps (`train --image-fpr`, default 1 % of "
              "good parts failing), never below the largest of them; it was that largest score "
              "(the variation model had the fit already), which lets about 1 in N + 1 new good "
              "parts fail for N maps and rejected clean castings rougher than the calibration "
              "parts. The bundled model, same weights, recalibrated by `python "
              "bench/train_default.py`: 4.22 instead of 3.84 at 4 copies. Verdicts against the "
              "previous run: defective maps failed 110 instead of 113 of 140, clean maps passed "
              "64 of 76 as before (1 copy: 52 / 73 instead of 57 / 72; 2: 91 / 72 instead of "
              "92 / 72; 8: 113 / 64 instead of 116 / 64); on fresh renders ('Verdicts on fresh "
              "renders') 2 instead of 6 of 40 clean parts fail at 4 copies (all of them rough "
              "castings), and 18 of 24 defective parts are caught as before. The "
              "threshold-free metrics are unchanged.",
              "",
              "Photometric stereo since 2026-12-02. The robust solver (the benchmark's, for "
              "every capture) solves by least squares the pixels whose kept observations do "
              "not pin the normal down (step 4 of `psinspect.stereo.solve_robust_pixels`; "
              "photometric stereo section): with the 8-light subsets of the 12 rendered lights "
              "that the dataset solves, 0.65 % of the rendered parts' pixels were more than 45 "
              "deg off (near shadow lines, up to upside down), 0.002 % now, and the mean error "
              "fell from 2.39 to 1.89 deg. The benchmark's maps changed with it (the training, "
              "validation, calibration and test maps of rendered parts and the DiLiGenT test "
              "maps), so the bundled model was retrained with `python bench/train_default.py` "
              "(same recipe and seed) and unet-ae by this script. The previous run (2026-12-01 "
              "10:25 UTC; previous solver, maps and weights): geo-seg 0.9398 / 0.7686 / "
              "0.9142, defective maps failed 110 / 140 and clean maps passed 64 / 76 at its "
              "image threshold 4.22, 12.5 maps/s, trained in 7.9 min; unet-ae 0.6639 / 0.3446 "
              "/ 0.6033; geometric 0.7696 / 0.3164 / 0.5359. The previous bundled weights "
              "scored by the current code on the current maps (a one-off check, "
              "2026-12-02 07:33 UTC, `evaluate_model`): 0.9419 / 0.7739 / 0.9159, 109 / 140 "
              "and 64 / 76. "
              "The retrained weights against the previous ones on the same maps: +0.002 pixel "
              "AUROC, -0.008 AUPRO, -0.012 image AUROC, within the spread between training "
              "seeds of one recipe ('Design exploration': about 0.03 AUPRO), a new draw of "
              "weights rather than an effect of the fix; the previous weights score 0.002 / "
              "0.005 / 0.002 higher on the corrected maps than on their own. "
              "Detect speed does not depend on the maps or the weights: the "
              "previous code with its bundled model and the current one, measured alternately "
              "three times each in one run (2026-12-02 06:46 UTC, 60 maps each, "
              "`detect_throughput`), gave 8.97 / 9.16 / 9.66 and 10.57 / 9.10 / 9.92 maps/s: "
              "this machine's cores ran slower that morning than on 2026-12-01 (training "
              "epochs of 15-19 s against 10-15 s).",
              "",
              "Calibration parts since 2026-12-02 09:00 UTC. The bundled model's thresholds "
              "are calibrated on its clean validation maps and on 128 clean maps of 32 parts "
              "neither trained on nor tested: 8 of each family (disc, plate, casting, "
              "organic), each family rendered on its own (`_bench_data.build_calibration`). "
              "They were 12 parts of randomly drawn families, 2 of them castings, and 4 "
              "organic bodies (64 maps), and the model retrained after the PS fix (pass/fail "
              "threshold 3.21) failed 10 of 40 fresh clean renders, 8 of them rough castings "
              "('Verdicts on fresh renders'). The new parts, scored by that model before the "
              "change, put 14 of their 128 maps (5 of 32 parts: 2 castings, 2 organic bodies, "
              "a plate) above 3.21, where the rule asks for about 1 %; left out one part at a "
              "time, the old 16 parts would have failed none of their own maps: they agreed "
              "with each other but held too few rough parts. Same weights (`python "
              "bench/train_default.py` reproduced them bit for bit, model-eb1e35ec9a7463a3), "
              "new thresholds: pass/fail 4.90 (was 3.21) and pixel 1.72 (was 1.45) at 4 "
              "copies; pass/fail 8.03 / 6.67 / 5.02 at 1 / 2 / 8 copies (was 5.94 / 4.62 / "
              "2.96). Left out one part at a time, the new set fails 1 of its 128 maps (1 of "
              "32 parts, a casting: 4.90 against a threshold of 4.80 without it). Against the "
              "run before (07:27 UTC; threshold-free metrics unchanged): defective maps failed "
              "93 instead of 122 of 140 and clean maps passed 68 instead of 62 of 76 (1 copy: "
              "10 / 76 instead of 80 / 70; 2: 37 / 76 instead of 104 / 68; 8: 93 / 71 instead "
              "of 122 / 61); on fresh renders 2 instead of 10 of 40 clean parts fail, and 16 "
              "instead of 18 of 24 defective ones; of the painted parts ('Paint is not a "
              "defect') 0 instead of 7 of 36 fail clean or painted, and 20 instead of 29 of 36 "
              "defective. The threshold now stands where the 1 % rate puts it on good parts of "
              "every family, and catches fewer defective parts; the operating points above "
              "show what a higher rate buys. The composition (equal numbers per family) was "
              "chosen because of the fresh renders' false fails, which are test data, before "
              "the new parts were scored; no other composition was tried. Since the same hour "
              "the fit's floor is the largest calibration score only while the rate asked for "
              "is below 1 / (N + 1) for N maps, else the score that at most that share of new "
              "good parts exceed (split conformal; `--image-fpr` above 1 / (N + 1) had no "
              "effect): at 1 % and 168 maps the floor is still the largest, so no figure of "
              "this section changed by it."]
    if "geo-seg" in results and "unet-ae" in results:
        d = results["geo-seg"]["pooled"]["aupro"] - results["unet-ae"]["pooled"]["aupro"]
        g = results["geo-seg"]["pooled"]
        lines += ["", f"Floors (default model geo-seg): pixel AUROC >= 0.97 "
                  f"({'met' if g['pixel_auroc'] >= 0.97 else 'NOT met'}: "
                  f"{g['pixel_auroc']:.4f}); AUPRO >= 0.85 "
                  f"({'met' if g['aupro'] >= 0.85 else 'NOT met'}: {g['aupro']:.4f}); AUPRO "
                  f">= unet-ae + 0.10 ({'met' if d >= 0.10 else 'NOT met'}: +{d:.3f}); "
                  f"detect >= 10 maps/s ({results['geo-seg']['maps_per_s']:.1f}); training "
                  f"<= 10 min on 2 cores "
                  f"({fmt((results['geo-seg'].get('train_seconds') or 0) / 60, 1)} min here)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
