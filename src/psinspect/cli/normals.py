"""``psinspect normals``: photometric stereo on a capture folder."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from psinspect import __version__
from psinspect.cli import app, progress_bar
from psinspect.errors import PsinspectError

#: median error against ground truth (deg) above which the lights' frame is suspect
LIGHTS_FRAME_HINT_DEG = 20.0


@app.command("normals")
def normals_cmd(
    capture_dir: Annotated[Path, typer.Argument(
        help="Capture folder (DiLiGenT or plain layout).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    solver: Annotated[str, typer.Option(
        help="robust (least squares that leaves out shadows and highlights; the solver of "
             "the bundled model), ls (plain least squares), or stable (robust, and moves less "
             "when the set of lights changes: for comparing captures with each other).")
    ] = "robust",
    lights: Annotated[str | None, typer.Option(
        help="1-based light subset, e.g. '1-20,40'.")] = None,
    num_lights: Annotated[int | None, typer.Option(
        help="Use K lights spread over the hemisphere (farthest-point sampling); with "
             "--lights, K of those.")] = None,
    gamma: Annotated[float, typer.Option(
        help="Linearise images as value**gamma (1 = linear camera).")] = 1.0,
    lights_file: Annotated[Path | None, typer.Option(
        help="Lights file: 'x y z' per line, or angles in degrees with a header line "
             "'# format: slant_tilt' or '# format: elevation_azimuth'. A relative path is "
             "looked for in the capture folder first, then here.")] = None,
    force: Annotated[bool, typer.Option(help=(
        "Write into a non-empty output folder, replacing the files an earlier psinspect run "
        "wrote there; other files are kept."))] = False,
) -> None:
    """Estimate surface normals, albedo and confidence from a multi-light capture.

    Writes normals.npy, normals.png, mask.png, albedo.npy, confidence.npy, run.json and, when
    the capture has ground truth (Normal_gt.mat / Normal_gt.npy), metrics.json; a defective
    capture's M_defect.png and defects.json are copied, so that detect shows them and train
    refuses the part.
    """

    from psinspect.capture import (
        INTENSITIES_FILE,
        LUMA_WEIGHTS,
        capture_lights_file,
        is_capture_folder,
        load_capture,
        read_lights_file,
    )
    from psinspect.detect import folder_ground_truth
    from psinspect.fileio import (
        check_output_dir,
        save_json,
        save_npy,
        save_png,
        staged_output_dir,
        utc_timestamp,
    )
    from psinspect.normalmap import MIN_MAP_SIDE, angular_error_deg, encode_png
    from psinspect.stereo import (
        FrameWarning,
        check_solver,
        farthest_point_lights,
        parse_light_spec,
        run_photometric_stereo,
    )

    check_solver(solver)
    # (fails before the slow part)
    check_output_dir(out, force, [capture_dir, lights_file], command="normals")

    # Which lights? Parsing needs the light count, so read the lights first (cheap).
    if Path(capture_dir).is_file():
        raise PsinspectError(f"{capture_dir}: is a file, not a capture folder (images + lights)")
    if not Path(capture_dir).is_dir():
        raise PsinspectError(f"{capture_dir}: capture folder not found")
    try:
        lights_path = capture_lights_file(capture_dir, lights_file)
    except PsinspectError as exc:
        subs = sorted(q.name for q in Path(capture_dir).iterdir() if is_capture_folder(q))
        if subs:
            raise PsinspectError(
                f"{capture_dir}: a folder of {len(subs)} capture folders ({', '.join(subs[:3])}"
                f"{', ...' if len(subs) > 3 else ''}); give one of them") from None
        if "--lights-file" in str(exc):  # (it says what to do)
            raise
        raise PsinspectError(f"{exc}; give one with --lights-file") from None
    all_lights = read_lights_file(lights_path)
    select = None
    if lights is not None:
        select = parse_light_spec(lights, len(all_lights))
    if num_lights is not None:  # (among --lights' when given: e.g. without bad images)
        among = np.arange(len(all_lights)) if select is None else np.asarray(select)
        select = among[farthest_point_lights(all_lights[among], int(num_lights))]
    total = len(all_lights) if select is None else len(select)

    caught: list[str] = []
    with progress_bar(transient=True) as bar:
        task = bar.add_task("loading images", total=total)
        with warnings.catch_warnings(record=True) as wlist:
            warnings.simplefilter("always")
            cap = load_capture(capture_dir, gamma=gamma, lights_file=lights_file,
                               select=select, progress=lambda n: bar.advance(task, n))
            caught = [str(w.message) for w in wlist]
    for msg in caught:
        typer.echo(f"warning: {msg}", err=True)
    # the ground truth copied beside the map must be readable as detect and train read it
    folder_ground_truth(Path(capture_dir), cap.mask.shape)
    if min(cap.mask.shape) < MIN_MAP_SIDE:  # (a map detect and train would refuse)
        h, w = cap.mask.shape
        raise PsinspectError(f"{capture_dir}: images are {w} x {h} pixels, too small for a "
                             f"normal map (at least {MIN_MAP_SIDE} x {MIN_MAP_SIDE})")

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as solved_notes:
        warnings.simplefilter("always")
        res = run_photometric_stereo(cap, solver)  # (it warns about the lights' frame)
    solve_s = time.perf_counter() - t0
    for note in solved_notes:
        typer.echo(f"warning: {note.message}", err=True)

    used = np.ones(cap.num_lights, bool) if res.lights_used is None else res.lights_used
    dropped = [int(i) + 1 for i in cap.light_indices[~used]]
    if dropped:
        typer.echo(f"{solver}: left out {len(dropped)} image(s) whose brightness does not fit "
                   "the others (a highlight, a shadow or a wrong light intensity): lights "
                   f"{_ranges(dropped)}")
    if res.clipped_left_out:
        typer.echo(f"{solver}: left out {res.clipped_left_out} clipped observation(s) (pixel x "
                   "image, at the camera's full scale) of the over-exposed capture")
    metrics = None
    if cap.normals_gt is not None:
        # only where the ground truth holds a normal (zero vectors = none there)
        valid = cap.mask & (np.linalg.norm(cap.normals_gt, axis=-1) > 0.5)
        if valid.any():
            err = angular_error_deg(res.normals[valid], cap.normals_gt[valid])
            metrics = {
                "mean_angular_error_deg": float(err.mean()),
                "median_angular_error_deg": float(np.median(err)),
                "pixels": int(err.size),
            }
        else:
            typer.echo("warning: the ground-truth normals hold no normal inside the mask; no "
                       "angular error measured", err=True)
    run = {
        "command": "normals",
        "version": __version__,
        "date": utc_timestamp(),
        "inputs": {"capture_dir": str(Path(capture_dir).resolve()),
                   "lights_file": str(Path(cap.lights_file).resolve()),
                   # images are divided by these light intensities (None: all 1)
                   "intensities_file": (str((Path(capture_dir) / INTENSITIES_FILE).resolve())
                                        if (Path(capture_dir) / INTENSITIES_FILE).is_file()
                                        else None),
                   "image_files": cap.filenames},
        "solver": solver,
        "settings": {"gamma": gamma, "lights": lights, "num_lights": num_lights,
                     "channel_weights_rgb": list(LUMA_WEIGHTS)},
        "light_indices_1based": [int(i) + 1 for i in cap.light_indices],
        "lights_dropped_by_solver_1based": dropped,
        # an over-exposed capture's observations at the camera's full scale that the solve
        # left out (pixel x image; 0: none)
        "clipped_observations_left_out": res.clipped_left_out,
        "num_lights_used": cap.num_lights,
        "image_size_hw": list(cap.mask.shape),
        "object_pixels": int(cap.mask.sum()),
        "solve_seconds": round(solve_s, 4),
        # what reading and solving the capture warned about (detect repeats them for this
        # map; not the lights' frame, which detect checks on the map itself)
        "warnings": caught + [str(n.message) for n in solved_notes
                              if not issubclass(n.category, FrameWarning)],
    }
    with staged_output_dir(out, force, [capture_dir, lights_file],
                           command="normals") as stage:
        save_npy(stage / "normals.npy", res.normals)
        save_png(stage / "normals.png", encode_png(res.normals, cap.mask))
        save_png(stage / "mask.png", cap.mask.astype(np.uint8) * 255)
        save_npy(stage / "albedo.npy", res.albedo)
        save_npy(stage / "confidence.npy", res.confidence)
        save_json(stage / "run.json", run)
        if metrics is not None:
            save_json(stage / "metrics.json", metrics)
        for name in ("M_defect.png", "defects.json"):  # the part's ground truth goes with it
            if (Path(capture_dir) / name).is_file():
                shutil.copyfile(Path(capture_dir) / name, stage / name)
    typer.echo(f"{cap.name}: {cap.num_lights} lights, solver {solver}, "
               f"{int(cap.mask.sum())} object pixels -> {out}")
    if metrics is not None:
        typer.echo(f"mean angular error {metrics['mean_angular_error_deg']:.2f} deg, "
                   f"median {metrics['median_angular_error_deg']:.2f} deg")
        if metrics["median_angular_error_deg"] > LIGHTS_FRAME_HINT_DEG:
            # the frame check (above) speaks for the frame; other causes give such errors
            # too: images paired with other lights, unequal lights taken as equal, clipping
            framed = any(issubclass(n.category, FrameWarning) for n in solved_notes)
            why = ("the lights' frame (the warning above)" if framed else
                   "that each image goes with its light (filenames.txt, or the images' name "
                   "order in run.json), the light intensities (light_intensities.txt), "
                   "over-exposed images, --gamma for a camera that is not linear, and the "
                   "lights' frame (x right, y up, z toward the camera)")
            typer.echo(f"warning: a median error of {metrics['median_angular_error_deg']:.0f} "
                       f"deg against the capture's ground truth is not noise: check {why}",
                       err=True)


def _ranges(idx: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3,7'."""
    out: list[str] = []
    start = prev = idx[0]
    for i in [*idx[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
        if i is not None:
            start = prev = i
    return ",".join(out)
