"""``psinspect detect``: anomaly maps, defect masks and a pass/fail verdict per input."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from psinspect.cli import app, progress_bar


@app.command("detect")
def detect_cmd(
    inputs: Annotated[list[Path], typer.Argument(
        help="Normal maps (.npy H x W x 3 float, or 8/16-bit normal .png) and/or capture folders "
             "(photometric stereo runs first); a folder of capture folders (e.g. render's "
             "output) or of 'psinspect normals' output folders stands for the parts in it, a "
             "folder of maps for its maps, a "
             "dataset folder for its test maps (what evaluate judges), and an output folder "
             "of 'psinspect normals' for its map (scored with its PS confidence).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    model: Annotated[Path | None, typer.Option(
        "--model", help="Model directory (default: the bundled default model).")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Per-pixel threshold (default: the model's calibrated one).")] = None,
    image_threshold: Annotated[float | None, typer.Option(
        help="Pass/fail threshold on the image score (default: the model's calibrated one, "
             "set at training for a share of good parts failing, train --image-fpr, 1 % by "
             "default). Lower: more defective parts caught and more good parts "
             "rejected.")] = None,
    image_fpr: Annotated[float | None, typer.Option(
        help="Instead of --image-threshold: the pass/fail threshold for this share of good "
             "parts failing (1e-06 to 0.5), fitted as train --image-fpr fits it to the image "
             "scores of the clean calibration maps that the model stores (at the test-time "
             "level it scores at), e.g. 0.05 to catch more defective parts.")] = None,
    solver: Annotated[str | None, typer.Option(
        help="PS solver for capture folders: ls, robust or stable (default: the one the "
             "model's good parts were solved with, recorded at training; robust for the "
             "bundled model). Another one than the model's changes the scores it was "
             "calibrated for.")] = None,
    force: Annotated[bool, typer.Option(help=(
        "Write into a non-empty output folder, replacing the files an earlier psinspect run "
        "wrote there; other files are kept."))] = False,
    tta: Annotated[int | None, typer.Option(
        help="Test-time augmentation: copies of each map (turned / mirrored) scored and "
             "averaged, for models that have it (geo-seg: 1, 2, 4 or 8; default: the model's "
             "own, 4 for the bundled model). More copies: more accurate and slower "
             "(BENCHMARKS.md); the model's thresholds calibrated for that level are used. "
             "At 4 (the quarter turns) a part turned by any multiple of 90 degrees scores "
             "the same; at 2 by 180 degrees; at 8 also mirrored.")
    ] = None,
    lights: Annotated[str | None, typer.Option(
        help="For capture folders: the 1-based lights to use, e.g. '21-96' (default all), "
             "e.g. to leave out images known to be bad. The model's thresholds were "
             "calibrated on maps solved from its own captures' lights.")] = None,
    scale: Annotated[float, typer.Option(
        help="Score each map resampled by this factor (0.1-4), the score brought back to the "
             "map's own pixels: for parts imaged much finer or coarser than the model's "
             "training maps (the bundled model: parts 118-224 px across, at their best "
             "at 1; BENCHMARKS.md 'Scale'). E.g. 0.25 for a 1000 px part.")] = 1.0,
    keep_going: Annotated[bool, typer.Option(
        "--keep-going", help="Go on past inputs that cannot be read or scored (a broken "
        "file, a capture of another part): each gets an error line and a summary.json entry "
        "with verdict 'error' and no files; the others are written as usual; exit code 2 if "
        "any input failed. Without it, the first such input stops the run and nothing is "
        "written.")] = False,
    jobs: Annotated[int | None, typer.Option(
        help="Inputs processed at once (default: one per CPU core, at most 4, at most "
                    "the number of inputs); masks and verdicts do not depend on it.")] = None,
) -> None:
    """Score every input and write, per input, NAME_score.npy (float32, 0 outside the object),
    NAME_heatmap.png (inferno colours: 0 black, the pixel threshold mid-scale, twice it and
    above brightest), NAME_mask.png (prediction at the threshold: connected regions of at
    least 4 pixels), NAME_reference.png (the
    model's idea of the good surface, where it has one), NAME_panel.png (input | reference |
    error map | predicted mask | ground truth where known), and summary.json (per input: image
    score, verdict pass/fail, defect area, regions with peak scores and bounding boxes
    [x0, y0, x1, y1] in pixels, x1 and y1 one past the last column and row; "warnings":
    why a verdict may not hold, as printed: a capture read without mask.png or without its
    lights' intensities, a map whose object is the whole frame with a flat border, a capture,
    or psinspect normals' map, solved from another number of lights than a known-part model's
    training captures, a capture of as many lights under other directions, a map solved with
    another PS solver than the model's, a part far larger or smaller in pixels than the
    model's training parts, a part cut off by the map's edge, or a map (or a capture's light
    directions) that looks to be in another frame: x or y flipped, x and y exchanged, vectors
    left unturned in a turned map).
    Ground truth is picked up from a capture's M_defect.png or, for a dataset map A_X.npy, from
    M_X.png beside it.
    """

    from psinspect.detect import expand_capture_sets, write_detection_outputs
    from psinspect.errors import PsinspectError
    from psinspect.fileio import check_output_dir
    from psinspect.modelstore import load_model_dir
    from psinspect.normalmap import is_normals_folder

    for p in inputs:  # named alone (a later error is named by the input being processed)
        if not p.exists():
            raise PsinspectError(f"{p}: input not found")
    check_output_dir(out, force, [*inputs, model], command="detect", part_folders=True)
    inputs = expand_capture_sets(inputs)
    if solver is not None and not any(p.is_dir() and not is_normals_folder(p) for p in inputs):
        raise PsinspectError("--solver applies to capture folders; no input is one")
    bundle = load_model_dir(model, tta=tta)

    def advance(name: str) -> None:
        bar.update(task, advance=1, description=name)

    with progress_bar(transient=True) as bar:
        task = bar.add_task("detecting", total=len(inputs))
        summary = write_detection_outputs(
            inputs, out, bundle, threshold=threshold, image_threshold=image_threshold,
            solver=solver, force=force, progress=advance, jobs=jobs,
            keep_going=keep_going, lights=lights, scale=scale, image_fpr=image_fpr)
    errors = [s for s in summary["inputs"] if s["verdict"] == "error"]
    for s in summary["inputs"]:
        if s["verdict"] == "error":
            typer.echo(f"{s['name']}: ERROR (see below; no files written for it)")
            continue
        rel = ">" if s["verdict"] == "fail" else "<="
        count = s.get("thresholds_for_lights")
        group = ("" if count is None or image_threshold is not None
                 else f", the threshold of {count}-light captures" if image_fpr is None
                 else f", that of {count}-light captures for --image-fpr {image_fpr:g}")
        typer.echo(f"{s['name']}: {s['verdict'].upper()} (image score {s['image_score']:.4g} "
                   f"{rel} {s['image_threshold']:.4g}{group}; {len(s['regions'])} region(s) "
                   f"above the pixel threshold, {s['defect_area_px']} px)")
    n_fail = sum(s["verdict"] == "fail" for s in summary["inputs"])
    n_err = f", {len(errors)} error" if errors else ""
    typer.echo(f"{len(summary['inputs'])} input(s), {n_fail} fail{n_err} -> {out}")
    for s in errors:
        typer.echo(f"error: {s['error']}", err=True)
    if errors:
        raise typer.Exit(2)
