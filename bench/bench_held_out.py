"""Defects outside the training library: how bench_detect.py's models do on kinds of defect they
were never taught; writes the 'heldout' section of BENCHMARKS.md.

geo-seg learns from synthetic defects of the library (``psinspect.defects.DEFECT_TYPES``), and
bench_detect.py tests it with defects of the same library, on surfaces it never saw. Real parts
bring defects the library does not have. This benchmark tests with four kinds that no training
recipe of the package ever draws (``psinspect.defects.HELD_OUT_TYPES``): gouge (a groove with
raised lips that deepens along its path), chatter (periodic ripples across a band), lap (a raised
tongue with one steep edge) and spatter (raised droplets).

Test maps: the defect-free test maps of bench_detect.py (16 clean rendered test parts and, where
../shared/data is present, the DiLiGenT ball, bear and cat, four light subsets each: 76 maps of
surfaces never trained on).
Every map is used three times, and the same 76 clean maps are the negatives of both test sets:

* library: its twin with 1-3 library defects (the benchmark's own ``A_`` map);
* held-out: a copy with 1-3 defects of the held-out kinds, implanted in the normals the same way
  (``implant_defects``, ground truth = normal turned by more than 2 deg; generator
  ``default_rng([SEED, stable_hash(name)])``, severity level drawn as for the library).

Models: the bundled default geo-seg (its calibrated thresholds) and bench_detect.py's unet-ae
and geometric (runs/bench_detect/models; trained with bench_detect's recipes if missing), and
with ``--extra NAME=MODEL_DIR`` other model folders (explore variants) as extra rows.

Kind sets (``--set``): ``first``, the four kinds above (section 'heldout' of BENCHMARKS.md);
``second``, blister, crater and scuff (``psinspect.defects.SECOND_HELD_OUT_TYPES``, section
'heldout2'), added after the explore variant tex (texture-transplant training) had been designed
with the first set in view, so that it can be judged on kinds it was not designed with.

    OMP_NUM_THREADS=2 python bench/bench_held_out.py
    OMP_NUM_THREADS=2 python bench/bench_held_out.py --set second \
        --extra tex=runs/explore/tex/model --extra tex-seed1=runs/explore/tex-seed1/model \
        --extra ref-seed1=runs/explore/ref-seed1/model
    python bench/bench_held_out.py --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_data  # noqa: E402
import bench_detect  # noqa: E402
from _markdown import cpu_description, write_section  # noqa: E402

from psinspect.defects import HELD_OUT_TYPES, SECOND_HELD_OUT_TYPES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 777
#: the kind sets (see the module docstring): kinds, BENCHMARKS.md section, results file
SETS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "first": (tuple(k for k in HELD_OUT_TYPES if k not in SECOND_HELD_OUT_TYPES), "heldout",
              "held_out.json"),
    "second": (SECOND_HELD_OUT_TYPES, "heldout2", "held_out2.json"),
}
#: what each held-out kind is, for the report
KIND_TEXT = {
    "gouge": "a gouge is a groove with raised lips of pushed-aside material that deepens along "
             "its path",
    "chatter": "chatter, periodic ripples (period 3-10 px) across a band",
    "lap": "a lap, a raised tongue with one steep edge that fades out behind it",
    "spatter": "spatter, raised droplets",
    "blister": "a blister is a raised dome with a steep edge and a nearly flat top",
    "crater": "a crater, a small bowl (radius 2-6 px) with a raised rim",
    "scuff": "a scuff, a band of 4-12 short, fine (1-2 px), parallel scratches",
}
#: bootstrap resamples of the test surfaces for the 95 % intervals
BOOTSTRAP = 1000
MODELS = ("geometric", "unet-ae", "geo-seg")


def held_out_copy(normals: np.ndarray, mask: np.ndarray, name: str, kinds: Sequence[str]
                  ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """``name``'s copy with 1-3 defects of ``kinds``: (normals, ground truth, records)."""
    from psinspect.dataset import stable_hash
    from psinspect.defects import implant_defects

    rng = np.random.default_rng([SEED, stable_hash(name)])
    return implant_defects(normals, mask, rng, count=int(rng.integers(1, 4)), types=kinds)


def paired_test_maps(ds: Path, kinds: Sequence[str] = SETS["first"][0]) -> list[dict]:
    """Per clean test map: its name, surface, normals, mask, and both defective copies (the
    held-out one with defects of ``kinds``)."""
    import cv2

    from psinspect.normalmap import load_normal_map

    manifest = json.loads((ds / "manifest.json").read_text())
    by_name = {it["name"]: it for it in manifest["items"]}
    out = []
    for it in manifest["items"]:
        if it["split"] != "test-clean":
            continue
        n, m = load_normal_map(ds / it["file"])
        twin = by_name["A_" + it["name"][2:]]
        tn, tm = load_normal_map(ds / twin["file"])
        tgt = cv2.imread(str(ds / twin["defect_mask"]), cv2.IMREAD_GRAYSCALE) > 0
        hn, hgt, hrec = held_out_copy(n, m, it["name"], kinds)
        out.append({"name": it["name"][2:], "surface": it["surface"], "clean": (n, m),
                    "library": (tn, tm, tgt & tm, twin["defects"]),
                    "held-out": (hn, m, hgt & m, hrec)})
    return out


def evaluate_model(bundle, maps: list[dict]) -> dict:
    """Metrics of ``bundle`` on the library and the held-out test set (same clean maps)."""
    from psinspect.detect import detect_map
    from psinspect.metrics import EvalItem, bootstrap_intervals, evaluate

    clean, sets = [], {"library": [], "held-out": []}
    verdicts = {"clean_failed": 0, "library_failed": 0, "held-out_failed": 0}
    for mp in maps:
        n, m = mp["clean"]
        det = detect_map(bundle, n, m, name=mp["name"])
        verdicts["clean_failed"] += det.verdict == "fail"
        clean.append(EvalItem("N_" + mp["name"], det.score, np.zeros(m.shape, bool), m,
                              det.image_score))
        for key in sets:
            dn, dm, gt, recs = mp[key]
            det = detect_map(bundle, dn, dm, name=mp["name"])
            verdicts[f"{key}_failed"] += det.verdict == "fail"
            sets[key].append(EvalItem("A_" + mp["name"], det.score, gt, dm, det.image_score,
                                      recs))
    surfaces = [mp["surface"] for mp in maps] * 2
    res: dict = {"verdicts": verdicts, "maps": len(maps), "surfaces": sorted(set(surfaces))}
    for key, items in sets.items():
        r = evaluate(clean + items)
        r["intervals"] = bootstrap_intervals(clean + items, surfaces, resamples=BOOTSTRAP,
                                             seed=0)
        r["by_defect"] = bench_detect.aupro_by_defect(clean + items)
        res[key] = r
    return res


def load_models(ds: Path, threads: int, extra: Sequence[tuple[str, Path]] = ()) -> dict:
    """The bundled default model and bench_detect's baselines (trained there if missing), then
    the ``extra`` (name, model folder) pairs."""
    from psinspect.modelstore import load_model_dir
    from psinspect.train import train_model

    bundles = {}
    for name in MODELS:
        if name == "geo-seg":
            bundles[name] = load_model_dir()
            continue
        mdir = bench_detect.WORK / "models" / name
        if not (mdir / "config.json").is_file():
            print(f"training {name} with bench_detect's recipe", flush=True)
            train_model([ds], mdir, seed=bench_detect.SEED, force=True, threads=threads,
                        **bench_detect.RECIPES[name])
        bundles[name] = load_model_dir(mdir)
    for name, mdir in extra:
        bundles[name] = load_model_dir(mdir)
    return bundles


def fmt(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def triple(block: dict) -> str:
    return (f"{fmt(block['pixel_auroc'])} / {fmt(block['aupro'])} / "
            f"{fmt(block.get('image_auroc'))}")


def render_markdown(results: dict, seconds: float, threads: int, kind_set: str = "first",
                    extra: Sequence[str] = ()) -> str:
    """The BENCHMARKS.md section of one kind set; ``extra``: names of the extra model rows."""
    from psinspect.defects import DEFECT_TYPES

    kinds = SETS[kind_set][0]
    some = next(iter(results.values()))
    n = some["maps"]
    surfaces = some["surfaces"]
    real = [s.removesuffix("PNG") for s in surfaces if s.endswith("PNG")]
    which = (f"{len(surfaces) - len(real)} clean rendered test parts"
             + (f" and the DiLiGenT {', '.join(real)}" if real else "")
             + f" ({len(surfaces)} surfaces), four light subsets each")
    command = "OMP_NUM_THREADS=2 python bench/bench_held_out.py" + (
        "" if kind_set == "first" else f" --set {kind_set}") + "".join(
        f" --extra {e}=runs/explore/{e}/model" for e in extra)
    count = {3: "three", 4: "four"}.get(len(kinds), str(len(kinds)))
    lines = [
        "### Defects outside the training library" + (
            "" if kind_set == "first" else f": a {kind_set} set of kinds"),
        "",
        f"Command: `{command}`  ",
        f"Machine: 2-core CPU, no GPU ({platform.machine()}, {cpu_description()}, Python "
        f"{platform.python_version()},"
        f" torch threads {threads}; 1-min load average at the end {os.getloadavg()[0]:.1f}; "
        f"{seconds:.0f} s)  ",
        f"Date: {dt.datetime.now(dt.UTC).strftime('%a %b %d %H:%M:%S UTC %Y')}",
        "",
        f"The detection section tests with defects of the library that geo-seg is trained on "
        f"({', '.join(DEFECT_TYPES)}), on surfaces it never saw. Here the same {n} defect-free "
        f"test maps ({which}) also get 1-3 defects of {count} kinds that no training recipe of "
        f"the package draws (of `psinspect.defects.HELD_OUT_TYPES`: {', '.join(kinds)}): "
        + "; ".join(KIND_TEXT[k] for k in kinds) + ". They are implanted in the normals "
        "like the library's (ground truth = normal turned by "
        "more than 2 deg; severity levels drawn as for the library). Both test sets share "
        f"the same {n} clean maps as negatives, so the columns compare like with like: "
        "'library' is the detection section's own defective twins of these maps (the "
        "DiLiGenT and 'defects in normals' groups). Pixel AUROC / AUPRO / image AUROC inside "
        f"the object mask; 95 % bootstrap intervals over the {len(surfaces)} surfaces "
        f"({BOOTSTRAP} resamples, "
        "seed 0); AUPRO per defect: each defect's ground truth counted as one region instead "
        "of its connected pieces (`bench_detect.aupro_by_defect`; a chatter band's ground "
        "truth falls apart into stripes, a spatter cluster's into droplets); failed = verdict "
        "fail at the model's calibrated image threshold." + (
            "" if kind_set == "first" else " These kinds were added to the package after the "
            "explore variant tex (training with texture transplants, `p_transplant`; 'Design "
            "exploration' below) had been designed with the first set of held-out kinds in view, "
            "to judge it on kinds it was not designed with.") + (
            "" if not extra else " Extra rows, explore models that are not the default: "
            + ", ".join(extra) + " (ref-seed1: the default recipe retrained with seed 1, the "
            "pair of tex-seed1; the bundled model is the default recipe's seed 0, the pair of "
            "tex)."),
        "",
        "| model | library defects | held-out defects | held-out intervals (pixel AUROC; "
        "AUPRO) | AUPRO per defect: library / held-out | failed: clean / library / held-out |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        iv = r["held-out"]["intervals"]
        v = r["verdicts"]
        bold = f"**{name} (default)**" if name == "geo-seg" else name
        lines.append(
            f"| {bold} | {triple(r['library']['pooled'])} | {triple(r['held-out']['pooled'])} "
            f"| {fmt(iv['pixel_auroc'][0])}-{fmt(iv['pixel_auroc'][1])}; "
            f"{fmt(iv['aupro'][0])}-{fmt(iv['aupro'][1])} | "
            f"{fmt(r['library']['by_defect']['aupro'])} / "
            f"{fmt(r['held-out']['by_defect']['aupro'])} | {v['clean_failed']}/{n} / "
            f"{v['library_failed']}/{n} / {v['held-out_failed']}/{n} |")
    lines += ["", "Per held-out kind and severity (pixel AUROC / AUPRO / image AUROC; a "
              "kind's image AUROC: the maps with that kind against the clean maps):", "",
              "| model | " + " | ".join(kinds) + " | low | medium | high |",
              "|---" * (1 + len(kinds) + 3) + "|"]
    for name, r in results.items():
        pt, ps = r["held-out"]["per_type"], r["held-out"]["per_severity"]
        cells = [triple(pt[t]) if t in pt else "-" for t in kinds]
        cells += [triple(ps[s]) if s in ps else "-" for s in ("low", "medium", "high")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    regions = {t: b["regions"] for t, b in some["held-out"]["per_type"].items()}
    lines += ["", "Ground-truth regions per held-out kind: " + ", ".join(
        f"{t} {regions.get(t, 0)}" for t in kinds) + "."]
    if "geo-seg" in results:
        g = results["geo-seg"]
        lib, held = g["library"]["pooled"], g["held-out"]["pooled"]
        others = [n for n in results if n not in ("geo-seg", *extra)]
        sev = g["held-out"]["per_severity"]
        worst = min(sev, key=lambda k: sev[k]["aupro"])
        lead = ", ".join(f"{held['aupro'] - results[n]['held-out']['pooled']['aupro']:+.3f} "
                         f"over {n}" for n in others)
        lines += ["", f"Reading: on defects it was never taught, geo-seg loses "
                  f"{lib['pixel_auroc'] - held['pixel_auroc']:.3f} pixel AUROC and "
                  f"{lib['aupro'] - held['aupro']:.3f} AUPRO against the library defects of the "
                  f"same maps, and fails {g['verdicts']['held-out_failed']} of {n} defective "
                  f"maps instead of {g['verdicts']['library_failed']}; it keeps its lead on the "
                  f"held-out kinds (AUPRO {lead}). The figures of the detection section are "
                  "those of defects like the ones it learned from; parts with other kinds of "
                  f"defect should expect less, most of all for {worst}-severity ones (AUPRO "
                  f"{g['held-out']['per_severity'][worst]['aupro']:.3f} on the held-out kinds)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--set", dest="kind_set", choices=sorted(SETS), default="first",
                    help="which held-out kinds (see the module docstring)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=MODEL_DIR",
                    help="another model folder to score as an extra row (repeatable)")
    args = ap.parse_args()
    extra = []
    for item in args.extra:
        name, sep, folder = item.partition("=")
        if not sep or not name or not (Path(folder) / "config.json").is_file():
            ap.error(f"--extra {item!r}: expected NAME=MODEL_DIR with a model folder")
        extra.append((name, Path(folder)))
    kinds, section, results_file = SETS[args.kind_set]
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = _bench_data.build(bench_detect.WORK)
    bundles = load_models(ds, args.threads, extra)
    maps = paired_test_maps(ds, kinds)
    print(f"{len(maps)} clean test maps, each with library and held-out copies "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    results = {}
    for name, bundle in bundles.items():
        r = evaluate_model(bundle, maps)
        results[name] = r
        print(f"{name}: library {triple(r['library']['pooled'])}, held-out "
              f"{triple(r['held-out']['pooled'])}, failed {r['verdicts']}", flush=True)
        for t, b in r["held-out"]["per_type"].items():
            print(f"   {t}: {triple(b)} ({b['regions']} regions)", flush=True)
    seconds = time.perf_counter() - t0
    out = bench_detect.WORK / results_file
    out.write_text(json.dumps(results, indent=1, default=float))
    if not args.no_write:
        begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
        body = render_markdown(results, seconds, args.threads, args.kind_set,
                               [n for n, _ in extra])
        write_section(f"{begin}\n{body}\n{end}", ROOT / "BENCHMARKS.md", begin, end)


if __name__ == "__main__":
    main()
