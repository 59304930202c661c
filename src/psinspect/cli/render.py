"""``psinspect render``: synthetic multi-light captures of procedural parts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from psinspect.cli import MAX_SEED, app, progress_bar


@app.command("render")
def render_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    parts: Annotated[int | None, typer.Option(
        help="Number of different parts to render (default 10).")] = None,
    instances: Annotated[int | None, typer.Option(
        help="Render this many instances of ONE part design instead (known-part "
             "inspection: good parts to train --model variation on, new parts to inspect).")
    ] = None,
    design_seed: Annotated[int | None, typer.Option(
        min=0, max=MAX_SEED,
        help="With --instances: the design's seed (same design seed, same part type; "
             "default 0).")] = None,
    jitter_px: Annotated[float | None, typer.Option(
        help="With --instances: largest shift of an instance's pose, pixels per axis "
             "(default 3, at most 16: the margin around the design).")] = None,
    jitter_deg: Annotated[float | None, typer.Option(
        help="With --instances: largest in-plane rotation of an instance, degrees "
             "(default 3, at most 10).")] = None,
    defect_rate: Annotated[float | None, typer.Option(
        help="Chance that a part gets 1..--max-defects defects (default 0.3; with "
             "--instances 0).")] = None,
    lights: Annotated[int, typer.Option(help="Lights per capture.")] = 12,
    layout: Annotated[str, typer.Option(help="Light layout: diligent or ring.")] = "diligent",
    seed: Annotated[int, typer.Option(
        min=0, max=MAX_SEED, help="Random seed (same seed, same bytes).")] = 0,
    size: Annotated[int, typer.Option(help="Image size in pixels (square).")] = 256,
    families: Annotated[str | None, typer.Option(
        help="Comma-separated part families (default disc,plate,casting; also organic, "
             "sphere).")] = None,
    max_defects: Annotated[int, typer.Option(help="Most defects on a defective part.")] = 3,
    types: Annotated[str | None, typer.Option(
        help="Comma-separated defect types (default all of the library; see `psinspect "
             "defects --help`, held-out types included).")] = None,
    severity: Annotated[str | None, typer.Option(
        help="Defect severity: level (low/medium/high), number or range 0.05-0.2.")] = None,
    specular: Annotated[bool, typer.Option(
        help="Add the parts' specular lobe (--no-specular: Lambertian).")] = True,
    shadows: Annotated[bool, typer.Option(help="Render cast shadows.")] = True,
    force: Annotated[bool, typer.Option(help=(
        "Write into a non-empty output folder, replacing the files an earlier psinspect run "
        "wrote there; other files are kept."))] = False,
) -> None:
    """Render procedural parts (turned discs, brushed plates, castings) under K lights.

    Each part becomes a capture folder OUT/partNNN_FAMILY in the DiLiGenT layout (16-bit PNGs,
    filenames.txt, light_directions.txt, light_intensities.txt, mask.png, Normal_gt.npy) with
    part.json; defective parts also get M_defect.png and defects.json. Defects are implanted in
    the height field before rendering.

    With --instances N: N instances of one design (--design-seed; the family is the one given
    in --families, else drawn) as a line makes and places them (a little manufacturing
    variation, a pose within --jitter-px / --jitter-deg), folders OUT/instNNN_FAMILY; the same
    --design-seed with another --seed gives new instances of the same part.
    """

    from psinspect.cli.defects import split_list
    from psinspect.defects import parse_severity
    from psinspect.errors import PsinspectError
    from psinspect.fileio import check_output_dir, save_json, staged_output_dir
    from psinspect.render import render_dataset, render_instances

    if parts is not None and instances is not None:
        raise PsinspectError("give --parts (different parts) or --instances (one design), "
                             "not both")
    given = [f"--{n}" for n, v in (("design-seed", design_seed), ("jitter-px", jitter_px),
                                   ("jitter-deg", jitter_deg)) if v is not None]
    if instances is None and given:
        raise PsinspectError(f"{', '.join(given)} set how --instances are rendered; without "
                             "--instances the parts are all different designs")
    design_seed = 0 if design_seed is None else design_seed
    jitter_px = 3.0 if jitter_px is None else jitter_px
    jitter_deg = 3.0 if jitter_deg is None else jitter_deg
    fams = split_list(families, "--families")
    if instances is not None and fams and len(fams) != 1:
        raise PsinspectError(f"--instances renders one design: give one family in "
                             f"--families, got {families}")
    count = instances if instances is not None else (10 if parts is None else parts)
    rate = defect_rate if defect_rate is not None else (0.0 if instances is not None else 0.3)
    check_output_dir(out, force, command="render")
    with (staged_output_dir(out, force, command="render") as stage,
          progress_bar(transient=True) as bar):
        task = bar.add_task("rendering parts", total=count)
        common = dict(defect_rate=rate, lights=lights, seed=seed, size=size, layout=layout,
                      max_defects=max_defects, defect_types=split_list(types, "--types"),
                      severity=parse_severity(severity), specular=specular, shadows=shadows,
                      progress=lambda n: bar.advance(task, n))
        if instances is not None:
            paths = render_instances(stage, instances, design_seed=design_seed,
                                     family=fams[0] if fams else None, jitter_px=jitter_px,
                                     jitter_deg=jitter_deg, **common)
        else:
            paths = render_dataset(stage, count, families=fams, **common)
        defective = [p.name for p in paths if (p / "M_defect.png").is_file()]
        save_json(stage / "render.json", {
            "command": "render", "parts": None if instances is not None else count,
            "instances": instances, "design_seed": design_seed if instances is not None
            else None, **({"jitter_px": jitter_px, "jitter_deg": jitter_deg}
                          if instances is not None else {}),
            "defect_rate": rate, "lights": lights,
            "layout": layout, "seed": seed, "size": size, "families": families,
            "max_defects": max_defects, "types": types, "severity": severity,
            "specular": specular, "shadows": shadows,
            "captures": [p.name for p in paths], "defective": defective})
    what = f"{count} instance(s) of one part" if instances is not None else f"{count} part(s)"
    typer.echo(f"{what}, {len(defective)} defective, {lights} lights -> {out}")
