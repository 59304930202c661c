"""``psinspect evaluate``: metrics and an HTML report for a detect output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from psinspect.cli import app


@app.command("evaluate")
def evaluate_cmd(
    predictions: Annotated[Path, typer.Argument(
        help="Output folder of 'psinspect detect' (summary.json + NAME_score.npy).")],
    ground_truth: Annotated[Path, typer.Argument(
        help="Dataset folder with manifest.json ('psinspect dataset'): its test-clean and "
             "test-defective maps, their object masks (non-zero normals) and defect masks "
             "(M_*.png) are the ground truth.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    max_fpr: Annotated[float, typer.Option(help=(
        "AUPRO integration limit: the per-pixel false-positive rate up to which the PRO "
        "curve is integrated, in (0, 1] (MVTec AD: 0.3)."))] = 0.3,
    force: Annotated[bool, typer.Option(help=(
        "Write into a non-empty output folder, replacing the files an earlier psinspect run "
        "wrote there; other files are kept."))] = False,
) -> None:
    """Pixel AUROC, AUPRO (FPR <= 0.3, normalised), pixel AP, F1-max and image AUROC, inside
    the object mask only, pooled and per defect type / severity; writes metrics.json and a
    self-contained report.html (tables, ROC / PRO curves, panels). Every test map of the
    dataset must have been detected (PREDICTIONS/<file stem>_score.npy)."""
    from rich.console import Console

    from psinspect.errors import PsinspectError
    from psinspect.fileio import check_output_dir
    from psinspect.report import evaluation_warnings, point_threshold_text, write_evaluation

    if not 0.0 < max_fpr <= 1.0:
        raise PsinspectError(f"--max-fpr must be in (0, 1], got {max_fpr}")
    check_output_dir(out, force, [predictions, ground_truth], command="evaluate")
    with Console(stderr=True).status("evaluating"):
        m = write_evaluation(predictions, ground_truth, out, force=force, max_fpr=max_fpr)
    p = m["pooled"]
    img = "n/a" if p["image_auroc"] is None else f"{p['image_auroc']:.4f}"
    typer.echo(f"{p['maps']} maps ({p['defective_maps']} defective): pixel AUROC "
               f"{p['pixel_auroc']:.4f}, AUPRO {p['aupro']:.4f}, AP {p['pixel_ap']:.4f}, "
               f"F1-max {p['f1_max']:.4f}, image AUROC {img} -> {out}")
    iv = m.get("intervals") or {}
    if iv:
        spans = [f"{t} " + ("n/a" if iv.get(k) is None else f"{iv[k][0]:.3f}-{iv[k][1]:.3f}")
                 for k, t in (("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"),
                              ("image_auroc", "image AUROC"))]
        if iv["groups"] == 1:
            typer.echo("  no bootstrap intervals: a single test surface")
        else:
            typer.echo(f"  {iv['level']:.0%} bootstrap intervals over {iv['groups']} test "
                       f"surfaces: {', '.join(spans)}")
    if m["operating_points_note"]:
        typer.echo(f"  no verdicts at other pass/fail thresholds: {m['operating_points_note']}")
    if m["operating_points"]:
        typer.echo("  verdicts at the pass/fail threshold for a share R of good parts failing "
                   "(detect --image-fpr R): R, threshold, defective failed, clean passed")
        for p in m["operating_points"]:
            typer.echo(f"    {p['rate']:4.0%}  {point_threshold_text(p):>8s}  "
                       f"{p['defective_failed']}/{p['defective_failed'] + p['defective_passed']}"
                       f"  {p['clean_passed']}/{p['clean_passed'] + p['clean_failed']}")
    for name, v in m["per_type"].items():
        typer.echo(f"  {name:10s} AUROC {v['pixel_auroc']:.4f}  AUPRO {v['aupro']:.4f}  "
                   f"({v['regions']} region{'s' if v['regions'] != 1 else ''} on "
                   f"{v['maps']} map{'s' if v['maps'] != 1 else ''})")
    for w in evaluation_warnings(m):
        typer.echo(f"warning: {w}", err=True)
