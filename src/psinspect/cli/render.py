"""``psinspect render``: synthetic multi-light captures of procedural parts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from psinspect.cli import app


@app.command("render")
def render_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    parts: Annotated[int, typer.Option(help="Number of parts to render.")] = 10,
    defect_rate: Annotated[float, typer.Option(
        help="Fraction of parts that get 1..--max-defects defects.")] = 0.3,
    lights: Annotated[int, typer.Option(help="Lights per capture.")] = 12,
    layout: Annotated[str, typer.Option(help="Light layout: diligent or ring.")] = "diligent",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    size: Annotated[int, typer.Option(help="Image size in pixels (square).")] = 256,
    families: Annotated[str | None, typer.Option(
        help="Comma-separated part families (default disc,plate,casting; also organic, "
             "sphere).")] = None,
    max_defects: Annotated[int, typer.Option(help="Most defects on a defective part.")] = 3,
    types: Annotated[str | None, typer.Option(
        help="Comma-separated defect types (default all).")] = None,
    severity: Annotated[str | None, typer.Option(
        help="Defect severity: level (low/medium/high), number or range 0.05-0.2.")] = None,
    specular: Annotated[bool, typer.Option(
        help="Add the parts' specular lobe (--no-specular: Lambertian).")] = True,
    shadows: Annotated[bool, typer.Option(help="Render cast shadows.")] = True,
    force: Annotated[bool, typer.Option(help="Overwrite a non-empty output folder.")] = False,
) -> None:
    """Render procedural parts (turned discs, brushed plates, castings) under K lights.

    Each part becomes a capture folder OUT/partNNN_FAMILY in the DiLiGenT layout (16-bit PNGs,
    filenames.txt, light_directions.txt, light_intensities.txt, mask.png, Normal_gt.npy) with
    part.json; defective parts also get M_defect.png and defects.json. Defects are implanted in
    the height field before rendering.
    """
    from rich.progress import Progress

    from psinspect.cli.defects import split_list
    from psinspect.defects import parse_severity
    from psinspect.fileio import check_output_dir, save_json, staged_output_dir
    from psinspect.render import render_dataset

    check_output_dir(out, force)
    with staged_output_dir(out, force) as stage, Progress(transient=True) as bar:
        task = bar.add_task("rendering parts", total=parts)
        paths = render_dataset(
            stage, parts, defect_rate=defect_rate, lights=lights, seed=seed, size=size,
            layout=layout, families=split_list(families), max_defects=max_defects,
            defect_types=split_list(types), severity=parse_severity(severity),
            specular=specular, shadows=shadows, progress=lambda n: bar.advance(task, n))
        defective = [p.name for p in paths if (p / "M_defect.png").is_file()]
        save_json(stage / "render.json", {
            "command": "render", "parts": parts, "defect_rate": defect_rate, "lights": lights,
            "layout": layout, "seed": seed, "size": size, "families": families,
            "max_defects": max_defects, "types": types, "severity": severity,
            "specular": specular, "shadows": shadows,
            "captures": [p.name for p in paths], "defective": defective})
    typer.echo(f"{parts} part(s), {len(defective)} defective, {lights} lights -> {out}")
