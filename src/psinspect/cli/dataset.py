"""``psinspect dataset``: normal-map datasets (N_/A_/M_ + manifest.json) from captures."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from psinspect.cli import MAX_SEED, app, progress_bar


@app.command("dataset")
def dataset_cmd(
    captures: Annotated[list[Path], typer.Argument(
        help="Capture folders, or folders of capture folders (e.g. 'psinspect render' output).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    holdout: Annotated[str | None, typer.Option(
        help="Comma-separated surfaces kept for test only ('none' for none). Default: a "
             "quarter of the clean surfaces, drawn with --seed.")] = None,
    seed: Annotated[int, typer.Option(
        min=0, max=MAX_SEED, help="Random seed.")] = 0,
    subsets: Annotated[int, typer.Option(
        help="Light subsets (PS solves) per capture; the last is val for train surfaces "
             "('psinspect train' needs val maps: 2 or more).")] = 4,
    lights_per_subset: Annotated[int | None, typer.Option(
        help="Lights per PS solve (default min(K, max(8, K // 4))).")] = None,
    solver: Annotated[str, typer.Option(help="PS solver: ls, robust or stable.")] = "robust",
    augment: Annotated[str, typer.Option(
        help="Comma-separated train augmentations: rot90, rot180, rot270, rot<deg>, fliplr, "
             "flipud, transpose; 'none' for none.")] = "rot90,rot180,rot270,fliplr",
    defects_per_map: Annotated[int, typer.Option(
        help="Synthetic defects per test-defective copy: 1..this.")] = 3,
    types: Annotated[str | None, typer.Option(
        help="Comma-separated defect types (default all of the library; see `psinspect "
             "defects --help`, held-out types included).")] = None,
    severity: Annotated[str | None, typer.Option(
        help="Defect severity: level, number or range.")] = None,
    min_angle: Annotated[float, typer.Option(
        help="Ground-truth angle (degrees) of the defects implanted here: a pixel is defective "
             "where the defect turned its normal by more than this. Captures with their own "
             "M_defect.png keep that mask.")] = 2.0,
    skip_lights: Annotated[list[str] | None, typer.Option(
        help="SURFACE:RANGES of 1-based lights never used, e.g. bearPNG:1-20 (repeatable).")
    ] = None,
    force: Annotated[bool, typer.Option(help=(
        "Write into a non-empty output folder, replacing the files an earlier psinspect run "
        "wrote there; other files are kept."))] = False,
) -> None:
    """Build N_ (clean) and A_/M_ (defective) normal maps with splits train-clean, val-clean,
    test-clean, test-defective and manifest.json. Held-out surfaces appear only in test splits.
    """
    from psinspect.cli.defects import split_list
    from psinspect.dataset import SPLITS, build_dataset, find_captures, parse_skip_lights
    from psinspect.defects import parse_severity
    from psinspect.fileio import check_output_dir, staged_output_dir

    check_output_dir(out, force, captures, command="dataset", part_folders=True)
    hold = None if holdout is None else (
        [] if holdout.strip().lower() == "none" else split_list(holdout, "--holdout"))
    aug = [] if augment.strip().lower() == "none" else split_list(augment, "--augment")
    with warnings.catch_warnings():  # (build_dataset finds them again, and warns)
        warnings.simplefilter("ignore")
        n_caps = len(find_captures(captures))
    with (staged_output_dir(out, force, captures, command="dataset") as stage,
          progress_bar(transient=True) as bar):
        task = bar.add_task("photometric stereo", total=n_caps * subsets)
        manifest = build_dataset(
            captures, stage, holdout=hold, seed=seed, subsets=subsets,
            lights_per_subset=lights_per_subset, solver=solver, augment=aug,
            defects_per_map=defects_per_map, defect_types=split_list(types, "--types"),
            severity=parse_severity(severity), min_angle=min_angle,
            skip_lights=parse_skip_lights(skip_lights),
            progress=lambda msg: bar.update(task, advance=1, description=msg))
    # in the splits' own order (items come surface by surface)
    counts = {sp: n for sp in SPLITS
              if (n := sum(it["split"] == sp for it in manifest["items"]))}
    test = sorted(n for n, s in manifest["surfaces"].items() if s["role"] == "test")
    if not counts.get("train-clean"):
        typer.echo("warning: no training surface (every capture is held out or defective): a "
                   "dataset to evaluate a trained model on; 'psinspect train' will refuse it",
                   err=True)
    elif not counts.get("val-clean"):
        typer.echo("warning: no val-clean maps (--subsets 1): 'psinspect train' will refuse "
                   "this dataset; build it with --subsets 2 or more", err=True)
    if not test:
        typer.echo("warning: no test surface (one capture, or --holdout none): evaluate has "
                   "nothing to judge against this dataset; give more captures, or name test "
                   "ones with --holdout", err=True)
    elif not counts.get("test-clean"):
        typer.echo("warning: no defect-free test maps (the test surfaces are captures with "
                   "their own M_defect.png): image AUROC is undefined and evaluate cannot tell "
                   "how many good parts fail; hold out a clean capture too (--holdout)",
                   err=True)
    own = manifest["config"]["real_defective"]
    if own and min_angle != 2.0:
        typer.echo(f"warning: --min-angle {min_angle:g} applies to the defects implanted here; "
                   f"{len(own)} capture(s) with their own M_defect.png keep their masks "
                   f"({', '.join(own[:3])}{', ...' if len(own) > 3 else ''})", err=True)
    typer.echo(f"{len(manifest['surfaces'])} surface(s), test: {', '.join(test) or 'none'}; "
               + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {out}")
