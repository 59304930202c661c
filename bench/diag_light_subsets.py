"""How much does PS on DiLiGenT move with the choice of 24 lights, and how much do the relit
library defects move it? A diagnostic for the known-part benchmark (bench_variation.py).

The variation benchmark's ground truth marks the pixels whose normal a defect turned by more
than 2 deg. Whether a detector can reach a given pixel AUROC on bear and cat depends on how that
compares with what PS itself does when only the set of lights changes. For each object:

* PS variability without any defect: PS of the unposed capture on random 24-light subsets
  (the benchmark's capture size), with the ``robust`` and the ``stable`` solver (the variation
  model's; the same subsets for both), compared pairwise: two subsets of the odd-numbered
  images (what two test captures see), an odd and an even subset (test vs training capture), an
  odd subset against all odd images, and all odd against all even images, and an odd subset
  against the ground truth (bear: images 1-20 left out, as in
  the benchmark). Angles in degrees over the object mask, pooled over ``--pairs`` draws.
* The PS change a relit defect causes: ``--defective`` captures of 24 odd lights with 1-2
  library defects relit into the images exactly as bench_variation does (pose jitter 3 px /
  3 deg), each solved with and without the defect; the angle between the two at the ground-
  truth pixels, by severity.
* Can a template learned through the even images predict what the odd ones do? For
  ``--pairs`` odd 24-light subsets S, the solve of S against three references: robust PS of
  all even images (what a template learns); PS on S's own lights of images PREDICTED from the
  even images (each odd light's image as an affine combination of the images of its
  ``NEIGHBOURS`` nearest even lights that reproduces its direction: exact for Lambertian
  shading wherever those lights all reach the surface, and for any shading that varies
  smoothly with the light direction); and S solved again with its lights re-estimated against
  the even solution (each light's direction and gain by least squares over the object, outliers
  beyond 2.5 robust sigma left out): what light-calibration error alone would explain.

Writes its section of BENCHMARKS.md (``<!-- lightsubsets:begin -->`` ... ``end``).

    python bench/diag_light_subsets.py             # writes BENCHMARKS.md
    python bench/diag_light_subsets.py --no-write
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _markdown import write_section  # noqa: E402
from bench_detect import defect_owner  # noqa: E402
from bench_variation import DILIGENT, LIGHTS_PER_CAPTURE, PAD  # noqa: E402

from psinspect.align import random_pose, warp_image, warp_normals  # noqa: E402
from psinspect.capture import load_capture  # noqa: E402
from psinspect.normalmap import angular_error_deg, rotate_vectors  # noqa: E402
from psinspect.relight import relight_defects  # noqa: E402
from psinspect.stereo import solve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- lightsubsets:begin -->", "<!-- lightsubsets:end -->"
SEED = 2611
OBJECTS = ("bear", "cat")
GT_DEG = 2.0
NEIGHBOURS = 6
#: the PS solver of the defect and prediction tables: the variation model's, as bench_variation
SOLVER = "stable"
#: the solvers compared in the variability table
SOLVERS = ("robust", "stable")


def _stats(v: np.ndarray) -> dict[str, float]:
    p = np.percentile(v, [50, 90, 99])
    return {"p50": p[0], "p90": p[1], "p99": p[2], "above": float((v > GT_DEG).mean())}


def run_object(obj: str, rng: np.random.Generator, pairs: int, defective: int
               ) -> dict[str, object]:
    cap = load_capture(DILIGENT / f"{obj}PNG")
    first = 20 if obj == "bear" else 0
    idx = np.arange(first, cap.num_lights)
    even, odd = idx[(idx + 1) % 2 == 0], idx[(idx + 1) % 2 == 1]
    m = cap.mask

    def ps(sel: np.ndarray, solver: str = SOLVER) -> np.ndarray:
        return solve(cap.images[sel], cap.lights[sel], m, solver=solver).normals

    def subset(pool: np.ndarray) -> np.ndarray:
        return np.sort(rng.choice(pool, LIGHTS_PER_CAPTURE, replace=False))

    draws = [(subset(odd), subset(odd), subset(even)) for _ in range(pairs)]
    out = {}
    for solver in SOLVERS:
        all_odd, all_even = ps(odd, solver), ps(even, solver)
        rows: dict[str, list[np.ndarray]] = {"odd 24 vs odd 24": [], "odd 24 vs even 24": [],
                                             "odd 24 vs all odd": []}
        for s_odd, s_odd2, s_even in draws:
            a = ps(s_odd, solver)
            rows["odd 24 vs odd 24"].append(angular_error_deg(a, ps(s_odd2, solver))[m])
            rows["odd 24 vs even 24"].append(angular_error_deg(a, ps(s_even, solver))[m])
            rows["odd 24 vs all odd"].append(angular_error_deg(a, all_odd)[m])
        out.update({f"{solver}: {k}": _stats(np.concatenate(v)) for k, v in rows.items()})
        out[f"{solver}: all odd ({len(odd)}) vs all even ({len(even)})"] = _stats(
            angular_error_deg(all_odd, all_even)[m])
        # and against the ground truth, for the accuracy the stability costs
        out[f"{solver}: odd 24 vs ground truth"] = _stats(np.concatenate(
            [angular_error_deg(ps(d[0], solver), cap.normals_gt)[m] for d in draws]))

    # the PS change of relit defects, as bench_variation implants them
    images = np.pad(cap.images, ((0, 0), (PAD, PAD), (PAD, PAD)))
    mask = np.pad(m, PAD)
    ngt = np.pad(cap.normals_gt, ((PAD, PAD), (PAD, PAD), (0, 0)))
    shape = mask.shape
    albedo = solve(images[odd], cap.lights[odd], mask, solver="robust").albedo
    change: dict[str, list[np.ndarray]] = {}
    for _ in range(defective):
        sel = subset(odd)
        mat, ang = random_pose(rng, shape, 3.0, 3.0)
        imgs = np.stack([warp_image(im, mat, shape) for im in images[sel]])
        n_posed, m_posed = warp_normals(ngt, mask, mat, shape)
        lights = rotate_vectors(cap.lights[sel], ang)
        relit, gt, records = relight_defects(imgs, lights, m_posed, n_posed,
                                             warp_image(albedo, mat, shape), rng,
                                             count=int(rng.integers(1, 3)))
        clean = solve(imgs, lights, m_posed, solver=SOLVER).normals
        moved = solve(relit, lights, m_posed, solver=SOLVER).normals
        gt = gt & m_posed
        d = angular_error_deg(clean, moved)[gt]
        change.setdefault("all", []).append(d)
        # each ground-truth pixel to the first defect whose bounding box holds it
        owner = defect_owner(shape, records)[gt]
        for level in ("low", "medium", "high"):
            ks = [k for k, rec in enumerate(records) if rec["level"] == level]
            change.setdefault(level, []).append(d[np.isin(owner, ks)])
    moved_stats = {}
    for k, v in change.items():
        c = np.concatenate(v)
        if c.size:
            p = np.percentile(c, [5, 10, 25, 50])
            moved_stats[k] = {"pixels": int(c.size), "p5": p[0], "p10": p[1], "p25": p[2],
                              "p50": p[3], "below3": float((c < 3.0).mean())}
    return {"variability": out, "defects": moved_stats,
            "prediction": _prediction(cap.images, cap.lights, m, even, odd, rng, pairs)}


def _affine_weights(target: np.ndarray, lights: np.ndarray) -> np.ndarray:
    """Smallest weights ``w`` (K,) with ``sum w = 1`` and ``w @ lights = target`` (lightly
    regularised): an image predicted as ``w @ images`` is exact for shading that is an affine
    function of the light direction."""
    a = np.vstack([lights.T, np.ones(len(lights))])
    return a.T @ np.linalg.solve(a @ a.T + 1e-3 * np.eye(4), np.append(target, 1.0))


def _refit_lights(images: np.ndarray, lights: np.ndarray, normals: np.ndarray,
                  albedo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each image's light (direction times gain, (K, 3)) re-estimated by least squares against
    ``albedo * normals`` over the object pixels it lights (3 passes, residuals beyond 2.5
    robust sigma left out)."""
    a = albedo[mask][:, None] * normals[mask]
    out = []
    for im, light in zip(images, lights, strict=True):
        y = im[mask]
        lit = (normals[mask] @ light > 0.15) & (y > 0.02 * np.percentile(y, 99))
        g = light.copy()
        for _ in range(3):
            r = y - a @ g
            sigma = 1.4826 * np.median(np.abs(r[lit])) + 1e-9
            keep = lit & (np.abs(r) < 2.5 * sigma)
            g = np.linalg.lstsq(a[keep], y[keep], rcond=None)[0]
        out.append(g)
    return np.asarray(out)


def _prediction(images: np.ndarray, lights: np.ndarray, mask: np.ndarray, even: np.ndarray,
                odd: np.ndarray, rng: np.random.Generator, pairs: int) -> dict[str, dict]:
    """An odd 24-light solve against references built from the even images only."""
    ref = solve(images[even], lights[even], mask, solver=SOLVER)
    rows: dict[str, list[np.ndarray]] = {"all even": [], "images predicted from the even ones":
                                         [], "its lights re-estimated against all even": []}
    for _ in range(pairs):
        sel = np.sort(rng.choice(odd, LIGHTS_PER_CAPTURE, replace=False))
        test = solve(images[sel], lights[sel], mask, solver=SOLVER).normals
        rows["all even"].append(angular_error_deg(test, ref.normals)[mask])
        pred = []
        for t in sel:
            near = even[np.argsort(-(lights[even] @ lights[t]))[:NEIGHBOURS]]
            pred.append(np.tensordot(_affine_weights(lights[t], lights[near]), images[near], 1))
        n_pred = solve(np.stack(pred), lights[sel], mask, solver=SOLVER).normals
        rows["images predicted from the even ones"].append(angular_error_deg(test, n_pred)[mask])
        refit = _refit_lights(images[sel], lights[sel], ref.normals, ref.albedo, mask)
        n_refit = solve(images[sel], refit, mask, solver=SOLVER).normals
        rows["its lights re-estimated against all even"].append(
            angular_error_deg(n_refit, ref.normals)[mask])
    return {k: _stats(np.concatenate(v)) for k, v in rows.items()}


def _angle_rows(results: dict[str, dict], table: str) -> list[str]:
    """Table rows ``| object | comparison | p50 | p90 | p99 | > GT_DEG |`` of :func:`_stats`."""
    return [f"| {obj} | {k} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | "
            f"{100 * s['above']:.1f} % |" for obj, r in results.items()
            for k, s in r[table].items()]


def render_md(results: dict[str, dict], args: argparse.Namespace, elapsed: float) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        BEGIN,
        "### Known-part inspection: PS on 24 lights against the 2 deg ground truth (diagnostic)",
        "",
        f"Command: `python bench/diag_light_subsets.py` (seed {args.seed}, {args.pairs} subset "
        f"draws and {args.defective} defective captures per object); machine: 2-core CPU, no "
        f"GPU ({platform.machine()}; 1-min load average at the end {load:.1f}); "
        f"{time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}; {elapsed:.0f} s.",
        "",
        "How far PS of DiLiGenT bear and cat moves when only the set of lights changes, with "
        "the robust solver and with the stable one (`psinspect.stereo.STABLE_SETTINGS`, the "
        "variation model's; the same light subsets for both; no defect; angle between two "
        "solves of the unposed capture, degrees, over the object; "
        f"'> {GT_DEG:g} deg' = share of object pixels that move by more than the ground-truth "
        "rule's angle; the last row of each solver: an odd 24-light solve against the ground-"
        "truth normals, the accuracy the stability costs). The other two tables use the "
        f"{SOLVER} solver, as the variation benchmark does:",
        "",
        f"| object | light sets compared | p50 | p90 | p99 | > {GT_DEG:g} deg |",
        "|---|---|---|---|---|---|",
    ]
    lines += _angle_rows(results, "variability")
    lines += [
        "",
        "How far the relit library defects move the PS normal of their ground-truth pixels "
        "(24 odd lights, bench_variation's relighting; the same capture solved with and without "
        "the defect; degrees; by the defect's severity):",
        "",
        "| object | defects | ground-truth pixels | p5 | p10 | p25 | p50 | < 3 deg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for obj, r in results.items():
        for k, s in r["defects"].items():
            lines.append(f"| {obj} | {k} | {s['pixels']} | {s['p5']:.2f} | {s['p10']:.2f} | "
                         f"{s['p25']:.2f} | {s['p50']:.2f} | {100 * s['below3']:.1f} % |")
    lines += [
        "",
        "Can a template learned through the even images predict what a test capture of 24 odd "
        "lights gives? The odd solve against three references built from the even images only "
        f"(same statistics as the first table; {args.pairs} odd subsets per object; predicted "
        f"images: each odd light's image as an affine combination of the images of its "
        f"{NEIGHBOURS} nearest even lights that reproduces its direction, exact for shading "
        "that varies smoothly with the light direction; re-estimated lights: each odd light's "
        "direction and gain fitted against the even solution, what light-calibration error "
        "alone would explain):",
        "",
        f"| object | odd 24 against | p50 | p90 | p99 | > {GT_DEG:g} deg |",
        "|---|---|---|---|---|---|",
    ]
    lines += _angle_rows(results, "prediction")
    same = {o: 100 * r["variability"][f"{SOLVER}: odd 24 vs odd 24"]["above"]
            for o, r in results.items()}
    weak = {o: 100 * r["defects"]["all"]["below3"] for o, r in results.items()}
    lines += [
        "",
        "Reading. Two test captures of the same part through different 24-light subsets of the "
        "same images already disagree by more than the ground-truth angle on "
        + " and ".join(f"{v:.0f} % ({o})" for o, v in same.items())
        + " of the object pixels, and "
        + " and ".join(f"{v:.0f} % ({o})" for o, v in weak.items())
        + " of the ground-truth pixels move by less than 3 deg. A per-pixel template can learn "
        "where PS is unstable (the spread), but the weakest defect pixels sit inside that "
        "variability; the variation section's same-pool run (training captures from the test's "
        "own images) shows how much of the gap to the floors remains without any light split. "
        "More lights per capture (the 'odd 24 vs all odd' rows: a 38- or 48-light solve) or a "
        "ground-truth angle relative to PS's own variability would change that; the issue "
        "fixes 24 lights and we keep the 2 deg rule. Neither predicting the odd images from "
        "the even ones nor re-estimating the odd lights brings the odd solve much closer to the "
        "even one (last table; the predicted images are even worse at p99, where shadow "
        "edges are blended): what differs between light sets appears to be neither smooth in "
        "the light direction (highlights, shadow edges and inter-reflections that single "
        "lights catch) nor a light-calibration error, so neither way lets a template learned "
        "through the even images anticipate it.",
        "",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--defective", type=int, default=48)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    if args.pairs < 1 or args.defective < 1:
        ap.error("--pairs and --defective must be at least 1")
    missing = [o for o in OBJECTS if not (DILIGENT / f"{o}PNG").is_dir()]
    if missing:
        print(f"DiLiGenT data missing under {DILIGENT}: {', '.join(missing)}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    results = {}
    for i, obj in enumerate(OBJECTS):
        results[obj] = run_object(obj, np.random.default_rng([args.seed, i]), args.pairs,
                                  args.defective)
        print(obj, results[obj], flush=True)
    text = render_md(results, args, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        write_section(text, args.output, BEGIN, END)
        print(f"wrote the light-subset section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
