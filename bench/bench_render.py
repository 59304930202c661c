"""Rendered captures: photometric-stereo round trip accuracy and rendering / defect speed.

Every part is rendered, written as a capture folder (16-bit PNGs, DiLiGenT layout), read back
with ``psinspect.capture.load_capture`` and solved with ``psinspect.stereo.solve`` - the same
path as ``psinspect normals --solver ...`` - and compared with the rendered ground truth
(angular error inside the object mask).

- Lambertian: no specular lobe, no cast shadows (attached shadows and sensor noise stay).
- Realistic: the part's own Blinn-Phong lobe, cast shadows, sensor noise, and 1-3 defects
  implanted in the height field (their pixels are reported separately).

Writes its section of BENCHMARKS.md (between ``<!-- render:begin -->`` and
``<!-- render:end -->``).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _markdown import cpu_description, write_section

from psinspect.capture import load_capture
from psinspect.defects import implant_defects
from psinspect.normalmap import angular_error_deg
from psinspect.render import DEFAULT_FAMILIES, render_part, write_rendered
from psinspect.stereo import solve

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- render:begin -->", "<!-- render:end -->"


def round_trip(rp, folder: Path, solver: str) -> tuple[np.ndarray, np.ndarray]:
    """Write, reload, solve; return (angular errors in the mask, errors in the defect mask)."""
    write_rendered(folder, rp)
    cap = load_capture(folder)
    res = solve(cap.images, cap.lights, cap.mask, solver=solver)
    err = angular_error_deg(res.normals, cap.normals_gt)
    defect = rp.defect_mask if rp.defect_mask is not None else np.zeros_like(cap.mask)
    return err[cap.mask], err[defect & cap.mask]


def bench(args: argparse.Namespace) -> dict:
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_render_"))
    fams = list(DEFAULT_FAMILIES) + (["sphere"] if args.sphere else [])
    for fam in fams:
        for i in range(args.per_family):
            seed = [args.seed, fams.index(fam), i]
            t0 = time.perf_counter()
            lamb = render_part(np.random.default_rng(seed), size=args.size, family=fam,
                               lights=args.lights, specular=False, shadows=False)
            t_lamb = time.perf_counter() - t0
            n_def = 0 if fam == "sphere" else 1 + i % 3
            t0 = time.perf_counter()
            real = render_part(np.random.default_rng(seed), size=args.size, family=fam,
                               lights=args.lights, defects=n_def)
            t_real = time.perf_counter() - t0
            e_lamb, _ = round_trip(lamb, tmp / f"{fam}{i}_l", "ls")
            e_ls, _ = round_trip(real, tmp / f"{fam}{i}_r", "ls")
            e_rb, e_def = round_trip(real, tmp / f"{fam}{i}_r", "robust")
            row = {"family": fam, "i": i, "ls_lamb": float(e_lamb.mean()),
                   "ls_real": float(e_ls.mean()), "robust_real": float(e_rb.mean()),
                   "robust_real_median": float(np.median(e_rb)),
                   "robust_defect": float(e_def.mean()) if e_def.size else float("nan"),
                   "t_lamb": t_lamb, "t_real": t_real, "defects": n_def}
            rows.append(row)
            print(f"{fam}{i}: ls/lamb {row['ls_lamb']:.2f}  ls/real {row['ls_real']:.2f}  "
                  f"robust/real {row['robust_real']:.2f}  defect px {row['robust_defect']:.2f}  "
                  f"render {t_lamb:.2f}/{t_real:.2f} s", flush=True)
    # defect implanting speed on a 256 x 256 normal map
    lamb = render_part(np.random.default_rng(0), size=256, family="disc", specular=False)
    times = []
    for k in range(5):
        t0 = time.perf_counter()
        implant_defects(lamb.normals_gt, lamb.mask, np.random.default_rng(k), count=3)
        times.append(time.perf_counter() - t0)
    return {"rows": rows, "implant_s": float(np.median(times))}


def _fmt(v: float) -> str:
    return "-" if np.isnan(v) else f"{v:.2f}"


def render_md(res: dict, args: argparse.Namespace) -> str:
    date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = res["rows"]
    parts = [r for r in rows if r["family"] != "sphere"]
    cmd = (f"OMP_NUM_THREADS=2 python bench/bench_render.py --per-family {args.per_family} "
           f"--size {args.size} --lights {args.lights} --seed {args.seed}"
           + (" --sphere" if args.sphere else ""))
    lines = [
        BEGIN,
        f"## Rendered captures (embedded default data), {args.size} x {args.size}, "
        f"{args.lights} lights (DiLiGenT-like layout)",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: 2-core CPU, no GPU ({platform.machine()}, {cpu_description()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}; 1-min load average at the end "
        f"{load:.1f}, the cores are shared)  ",
        f"Date: {date}",
        "",
        "Each part is rendered, written as a 16-bit capture, read back with `load_capture` and "
        "solved (= `psinspect normals`); mean angular error (deg) inside the object mask. "
        "Lambertian: no specular lobe, no cast shadows (attached shadows and sensor noise "
        "stay). Realistic: the part's Blinn-Phong lobe, cast shadows, sensor noise, 1-3 defects "
        "in the height field; 'defect px' = robust error on the ground-truth defect pixels.",
        "",
        "| part | ls, Lambertian | ls, realistic | robust, realistic | robust median "
        "| robust, defect px | render s (Lamb. / real.) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']}{r['i']} | {r['ls_lamb']:.2f} | {r['ls_real']:.2f} "
            f"| {r['robust_real']:.2f} | {r['robust_real_median']:.2f} "
            f"| {_fmt(r['robust_defect'])} | {r['t_lamb']:.2f} / {r['t_real']:.2f} |")
    m_lamb = float(np.mean([r["ls_lamb"] for r in parts]))
    m_rb = float(np.mean([r["robust_real"] for r in parts]))
    worst_rb = max(r["robust_real"] for r in parts)
    worst_lamb = max(r["ls_lamb"] for r in parts)
    t_max = max(max(r["t_lamb"], r["t_real"]) for r in rows)
    t_mean = float(np.mean([r["t_real"] for r in rows]))
    lines += [
        f"| **mean (parts)** | **{m_lamb:.2f}** | {np.mean([r['ls_real'] for r in parts]):.2f} "
        f"| **{m_rb:.2f}** | | | {t_mean:.2f} (realistic) |",
        "",
        f"Floors: ls on a Lambertian render < 1 deg mean ({'met' if m_lamb < 1 else 'NOT met'}: "
        f"{m_lamb:.2f}, worst part {worst_lamb:.2f}); robust on a render with specular lobe "
        f"and cast shadows < 3 deg mean ({'met' if m_rb < 3 else 'NOT met'}: {m_rb:.2f}, worst "
        f"part {worst_rb:.2f}); at most a few seconds per part ({'met' if t_max < 3 else 'NOT met'}"
        f": slowest {t_max:.2f} s, target < 1 s).",
    ]
    if any(r["family"] == "sphere" for r in rows):
        lines += [
            "",
            "The sphere (calibration object, not in the means) shows the limits of plain least "
            "squares: its silhouette band is in attached shadow for some lights, which ls "
            "cannot model and robust drops.",
        ]
    lines += [
        "",
        f"Implanting 3 defects into a 256 x 256 normal map (`implant_defects`, exact "
        f"ground-truth mask): {1000 * res['implant_s']:.0f} ms (median of 5).",
        END,
    ]
    return "\n".join(lines)




def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-family", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--lights", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sphere", action="store_true", help="also the calibration sphere")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    res = bench(args)
    write_section(render_md(res, args), args.output, BEGIN, END)
    print(f"wrote the render section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
