"""``psinspect run``: the whole pipeline in one command, from captures to a report (see
:mod:`psinspect.pipeline`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from psinspect.cli import MAX_SEED, app, progress_bar


class _RichReporter:
    """One line per stage on stderr, plus a transient progress bar for the stage's steps."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

        self.console = Console(stderr=True, highlight=False)
        self.progress = progress_bar(TextColumn("  {task.description}"), BarColumn(),
                                     MofNCompleteColumn(), console=self.console, transient=True)
        self.task = None
        self.label = ""

    def stage(self, index: int, total: int, name: str, text: str, steps: int | None) -> None:
        self.label = f"[{index}/{total}] {name}"
        self.console.print(f"{self.label}: {text} ...")
        if self.console.is_terminal:  # a bar only where it can be redrawn in place
            self.progress.start()
            self.task = self.progress.add_task(name, total=steps)

    def tick(self, text: str = "") -> None:
        if self.task is not None:
            self.progress.update(self.task, advance=1, description=text[:60] or None)

    def done(self, summary: str, seconds: float) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
            self.progress.stop()
        self.console.print(f"{self.label}: {summary} ({seconds:.1f} s)")


@app.command("run")
def run_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")] = Path(
        "psinspect-run"),
    data: Annotated[Path | None, typer.Option(
        help="A folder of DiLiGenT-layout capture folders (e.g. ../shared/data/diligent) "
        "instead of the rendered default parts.")] = None,
    pretrained: Annotated[bool, typer.Option(
        help="Use the bundled default model instead of training one.")] = False,
    quick: Annotated[bool, typer.Option(
        help="Reduced preset (small parts, short training) for CI: about a minute on 2 "
        "cores.")] = False,
    seed: Annotated[int, typer.Option(
        min=0, max=MAX_SEED, help="Random seed (rendering, splits, training).")] = 0,
    holdout: Annotated[str | None, typer.Option(
        help="Comma-separated surfaces (capture folder names) kept for test; default: a "
        "seeded quarter of the clean surfaces.")] = None,
    model: Annotated[str | None, typer.Option(
        help="Model to train (default: the project's default model).")] = None,
    from_scratch: Annotated[bool, typer.Option(
        help="Train the default model from random weights instead of fine-tuning the bundled "
             "one (other --model choices always start from random weights).")] = False,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (preset default).",
                                               min=1)] = None,
    parts: Annotated[int | None, typer.Option(help="Rendered parts (preset default).",
                                              min=2)] = None,
    force: Annotated[bool, typer.Option(help=(
        "Write into a non-empty output folder, replacing the files an earlier psinspect run "
        "wrote there; other files are kept."))] = False,
    tta: Annotated[int | None, typer.Option(
        help="Test-time augmentation copies for detection (geo-seg: 1, 2, 4 or 8; default: "
             "the model's own); see `psinspect detect --tta`.")] = None,
    skip_lights: Annotated[list[str] | None, typer.Option(
        help="SURFACE:RANGES of 1-based lights never used, e.g. bearPNG:1-20 for DiLiGenT's "
             "bear, whose first 20 images are known to be bad (repeatable; as in `psinspect "
             "dataset`).")] = None,
) -> None:
    """Run everything: render parts (or read --data captures), photometric stereo, dataset with
    defects and held-out surfaces, train (a minute of fine-tuning the bundled model on the
    run's good training parts; --from-scratch: from random weights; --pretrained: none), detect,
    evaluate; writes OUT/report.html, OUT/metrics.json and every artifact."""
    from psinspect.cli.defects import split_list
    from psinspect.dataset import parse_skip_lights
    from psinspect.errors import PsinspectError
    from psinspect.fileio import check_output_dir, staged_output_dir
    from psinspect.pipeline import (
        bundled_line,
        kept_start_words,
        make_config,
        relocate_paths,
        run_pipeline,
        verdicts_text,
    )

    if data is not None and not data.is_dir():
        raise PsinspectError(f"--data {data}: " + ("is a file, not a folder of captures"
                                                   if data.is_file() else "folder not found"))
    if data is not None and parts is not None:
        raise PsinspectError("--parts sets how many parts are rendered; with --data the "
                             "captures are read instead")
    if pretrained and (model is not None or epochs is not None or from_scratch):
        raise PsinspectError("--pretrained uses the bundled model, which is not trained here: "
                             "--model, --epochs and --from-scratch do not apply")
    check_output_dir(out, force, [data], command="run", part_folders=True)
    cfg = make_config(
        "quick" if quick else "default", seed=seed, pretrained=pretrained,
        data=None if data is None else str(data.resolve()), model=model, epochs=epochs,
        fine_tune=False if from_scratch else None,
        parts=parts, tta=tta, skip_lights=parse_skip_lights(skip_lights) or None,
        holdout=split_list(holdout, "--holdout"),
    )
    with staged_output_dir(out, force, [data], command="run") as stage:
        info = run_pipeline(stage, cfg, _RichReporter())
        relocate_paths(stage, out)
    m = info["metrics"]
    shown = ("The bundled default model (--pretrained): " if pretrained
             else f"The {info['model']} model fine-tuned in this run from the bundled one"
             + (f" ({kept_start_words(info.get('pass_fail_start_maps'))})"
                if info.get("fine_tune_kept_start") else "") + ": "
             if info.get("fine_tuned_from")
             else f"The {info['model']} model "
             f"{'trained' if info.get('trained', True) else 'made (training-free)'} in this "
             "run: ") + ", ".join(
        f"{k} {v:.3f}" for k, v in m.items() if v is not None)
    v = info["verdicts"]
    shown += f"; {verdicts_text(v)}"
    others = [p for p in info.get("operating_points") or []
              if p["image_threshold"] != info["image_threshold"]]
    if others:
        shown += ("\nat other pass/fail thresholds (detect --image-fpr R, the share of good "
                  "parts failing asked): " + "; ".join(
                      f"{p['rate']:.0%}: {p['image_threshold']:.3g}, {p['defective_failed']} of "
                      f"{p['defective_failed'] + p['defective_passed']} defective failed, "
                      f"{p['clean_passed']} of {p['clean_passed'] + p['clean_failed']} clean "
                      "passed" for p in others))
    iv = info.get("intervals") or {}
    spans = [f"{k} {iv[k][0]:.3f}-{iv[k][1]:.3f}" for k in ("pixel_auroc", "aupro", "image_auroc")
             if iv.get(k) is not None]
    if spans:
        shown += (f"\n{iv['level']:.0%} bootstrap intervals over the {iv['groups']} held-out "
                  f"test surfaces: {', '.join(spans)}")
    elif iv.get("groups") == 1:
        shown += "\nno bootstrap intervals: a single held-out test surface"
    if info.get("bundled_model"):
        shown += "\n" + bundled_line(info["bundled_model"])
    typer.echo(f"{shown}\nreport: {out / 'report.html'} "
               f"({info['timings_s']['total']:.0f} s)")
