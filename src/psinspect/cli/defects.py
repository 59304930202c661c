"""``psinspect defects``: implant synthetic defects into normal maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from psinspect.cli import MAX_SEED, app, progress_bar
from psinspect.defects import DEFECT_TYPES, HELD_OUT_TYPES, MAX_DEFECTS
from psinspect.errors import PsinspectError


def split_list(text: str | None, option: str) -> list[str] | None:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; ``None`` (the option not given) -> ``None``; a
    text that names nothing (``""``, ``","``) is a :class:`PsinspectError` naming ``option``
    (it fell back to the option's default without a word)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise PsinspectError(f"{option} {text!r}: names nothing (give comma-separated names)")
    return items


@app.command("defects")
def defects_cmd(
    normals: Annotated[list[Path], typer.Argument(
        help="Normal maps (.npy (H, W, 3) float or 8/16-bit normal PNG; object = non-zero) "
             "or output folders of psinspect normals.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    per_image: Annotated[int, typer.Option(help="Defects per image.")] = 1,
    types: Annotated[str | None, typer.Option(
        help="Comma-separated defect types (default all of the library): "
             f"{', '.join(DEFECT_TYPES)}. Held out of the library (never drawn unless named, "
             f"never trained on): {', '.join(HELD_OUT_TYPES)}.")] = None,
    severity: Annotated[str | None, typer.Option(
        help="Severity = depth / width: a level (low, medium, high), a number (0.1) or a "
             "range (0.05-0.2). Default: a random level per defect.")] = None,
    seed: Annotated[int, typer.Option(
        min=0, max=MAX_SEED, help="Random seed (same seed, same bytes).")] = 0,
    min_angle: Annotated[float, typer.Option(
        help="Ground-truth mask: pixels whose normal turned by more than this (degrees).")] = 2.0,
    along: Annotated[str, typer.Option(
        help="Height displacement along the surface 'normal' or the 'view' axis.")] = "normal",
    force: Annotated[bool, typer.Option(help=(
        "Write into a non-empty output folder, replacing the files an earlier psinspect run "
        "wrote there; other files are kept."))] = False,
) -> None:
    """Add physically consistent defects (height-field changes) to normal maps.

    For each input NAME (a map's file stem or a folder's name, with its folders' names in
    front where inputs share a name, as detect names them; a leading 'N_' is dropped) writes
    A_NAME.npy (defective normals), A_NAME.png (preview), M_NAME.png (ground truth: normal
    changed by more than --min-angle, 0/255) and A_NAME.json (every defect: type, parameters,
    severity, bbox, area), plus defects.json with the settings and all records. A map that
    comes with ground truth of its own (the M_defect.png of the capture a psinspect normals
    output was solved from, or M_<x>.png beside an A_<x> map) keeps it: M_NAME.png marks its
    defects and the new ones, and A_NAME.json lists its records as input_defects. Each map's
    defects are drawn with a generator seeded by --seed and a hash of its NAME, so the result
    does not depend on the order of the inputs, and the same seed gives the same bytes.
    """
    import numpy as np

    from psinspect.dataset import stable_hash
    from psinspect.defects import (
        check_along,
        check_min_angle,
        check_types,
        implant_defects,
        parse_severity,
    )
    from psinspect.detect import given_ground_truth
    from psinspect.fileio import (
        check_output_dir,
        input_names,
        save_json,
        save_npy,
        save_png,
        staged_output_dir,
        unique_names,
    )
    from psinspect.normalmap import (
        NORMALS_FILE,
        encode_png,
        is_normals_folder,
        load_normal_map,
        normals_run_of,
        solved_light_count,
    )

    if not 1 <= per_image <= MAX_DEFECTS:
        raise PsinspectError(f"--per-image must be between 1 and {MAX_DEFECTS}, got {per_image}")
    check_min_angle(min_angle)
    check_along(along)
    type_list = list(check_types(split_list(types, "--types")))
    sev = parse_severity(severity)
    check_output_dir(out, force, normals, command="defects")
    # named as detect names them (a file's stem, a folder's name, with as many of their
    # folders' names in front as tell equal names apart), a leading N_ dropped
    names = unique_names([n[2:] if n.startswith("N_") else n for n in input_names(normals)])
    maps = []
    for p in normals:
        if p.is_dir() and not is_normals_folder(p):
            raise PsinspectError(f"{p}: is a folder, not a normal map (.npy / .png) or the "
                                 "output folder of psinspect normals")
        maps.append(p / NORMALS_FILE if p.is_dir() else p)
    seen: dict[Path, Path] = {}
    for p, m in zip(normals, maps, strict=True):  # (it would be two maps, x and x_2)
        if m.resolve() in seen:
            raise PsinspectError(f"{p}: this input is given twice (also as {seen[m.resolve()]}): "
                                 "give each map once")
        seen[m.resolve()] = p
    summary: dict = {"settings": {"per_image": per_image, "types": type_list,
                                  "severity": severity, "seed": seed, "min_angle": min_angle,
                                  "along": along}, "images": {}}
    kept = 0
    with (staged_output_dir(out, force, normals, command="defects") as stage,
          progress_bar(transient=True) as bar):
        task = bar.add_task("implanting defects", total=len(normals))
        for path, name in zip(maps, names, strict=True):
            n, mask = load_normal_map(path)
            rng = np.random.default_rng([int(seed), stable_hash(name)])
            try:
                a, gt, records = implant_defects(n, mask, rng, count=per_image,
                                                 types=type_list, severity=sev,
                                                 min_angle=min_angle, along=along)
            except PsinspectError as err:  # (a part too small for them: named)
                raise PsinspectError(f"{path}: {err}") from None
            # the input's own defects stay defects (their pixels were lost from the truth)
            given, given_recs = given_ground_truth(path, mask.shape)
            if given is not None and given.any():
                gt = gt | (given & mask)
                kept += 1
            save_npy(stage / f"A_{name}.npy", a)
            save_png(stage / f"A_{name}.png", encode_png(a, mask))
            save_png(stage / f"M_{name}.png", gt.astype(np.uint8) * 255)
            run = normals_run_of(path)  # (what detect says about the solved map, kept)
            solver = None if run is None else run.get("solver")
            lights = solved_light_count(run)
            side = {"source": str(path), "defect_mask": f"M_{name}.png",
                    "min_angle": min_angle, "defects": records,
                    **({"ps_solver": solver} if isinstance(solver, str) else {}),
                    **({"num_lights_used": lights} if lights is not None else {}),
                    **({"input_defects": given_recs} if given_recs else {}),
                    **({"input_ground_truth_pixels": int((given & mask).sum())}
                       if given is not None and given.any() else {})}
            save_json(stage / f"A_{name}.json", side)
            summary["images"][f"A_{name}"] = side
            bar.advance(task)
        save_json(stage / "defects.json", summary)
    typer.echo(f"{len(normals)} map(s), {per_image} defect(s) each"
               + (f"; the ground truth of {kept} input(s) with defects of their own is kept in "
                  "their masks" if kept else "") + f" -> {out}")
