"""``psinspect train``: learn what good surfaces look like; write a model directory."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from psinspect.cli import MAX_SEED, app, progress_bar
from psinspect.errors import PsinspectError
from psinspect.fileio import parse_json
from psinspect.interrupts import interrupt

#: options that set up a training run; with --resume they come from the checkpoint
_SETTINGS = ("model", "epochs", "batch_size", "seed", "patience", "threshold_fpr", "image_fpr",
             "threshold", "solver", "hyperparameters", "calibrate_on", "init_from")
_OPTION_NAMES = {"hyperparameters": "--hp"}


@contextlib.contextmanager
def _interrupt_noted(reading: Callable[[], bool]) -> Iterator[list[int]]:
    """The first Ctrl-C (SIGINT) is noted in the yielded list and said; training stops after
    the input being read (``reading()`` true: the progress callback raises KeyboardInterrupt)
    or after the epoch it is in (``on_epoch`` raises it there, once that epoch is
    checkpointed). A second one, or SIGTERM, raises KeyboardInterrupt at once. (Raised from
    the first, it is lost when it arrives while a finaliser runs; a KeyboardInterrupt lost
    that way is not printed, "Exception ignored ... Traceback", and the noted signal stops
    training once the current epoch is saved instead.) The list holds the signals received."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def handler(signum: int, frame: object) -> None:
        noted.append(signum)
        if len(noted) > 1 or signum == signal.SIGTERM:
            interrupt()  # (KeyboardInterrupt, held back while torch loads)
        when = ("after the input being read" if reading()
                else "once the current epoch is saved")
        typer.echo(f"stopping {when} (Ctrl-C again to stop at once)", err=True)

    def unraisable(info: sys.UnraisableHookArgs) -> None:
        if not issubclass(info.exc_type, KeyboardInterrupt):  # ours: quiet (see above)
            old_hook(info)

    # a signal the process was started ignoring (SIGINT of a background job) stays ignored
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)
           if signal.getsignal(s) is not signal.SIG_IGN}
    old_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield noted
    finally:
        sys.unraisablehook = old_hook
        for s, h in old.items():
            signal.signal(s, h)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(
        help="A dataset folder (manifest.json; train-clean/val-clean are used), or capture "
             "folders / folders of captures / normal maps (.npy, .png) / folders of maps / "
             "output folders of 'psinspect normals', all good parts.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Model directory to write.")],
    model: Annotated[str | None, typer.Option(
        "--model", help="Model: geo-seg (default), unet-ae, geometric, variation; with "
        "--init-from, that model's.")] = None,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", help="Fine-tune: start from a trained model's weights instead of random "
        "ones: 'bundled' (the bundled default model) or a model folder (geo-seg, unet-ae). "
        "Its hyperparameters are kept (--hp may change training and scoring settings, not the "
        "network or the features it sees), its learning rate divided by 4 unless --hp sets "
        "lr; the weights kept are never worse on the validation maps than the ones started "
        "from (what it did on our parts: BENCHMARKS.md 'Fine-tuning').")] = None,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping may end "
                                             "sooner).")] = 30,
    batch_size: Annotated[int, typer.Option(help="Crops per training step.")] = 8,
    seed: Annotated[int, typer.Option(
        min=0, max=MAX_SEED, help="Random seed (initialisation, data, "
                                           "hold-out).")] = 0,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without a "
                                               "better validation loss.")] = 6,
    threshold_fpr: Annotated[float, typer.Option(
        help="Target per-pixel false-positive rate on clean validation maps.")] = 0.001,
    image_fpr: Annotated[float, typer.Option(
        help="Target share of good parts failing, 1e-06 to 0.5: sets the pass/fail threshold "
             "(a Gumbel fit to the image scores of the clean validation / calibration maps, "
             "never below their largest while the rate is below 1 / (N + 1) for N maps, nor "
             "at a higher rate below the score that at most that share of new good parts "
             "exceed; with one such map, its score).")] = 0.01,
    threshold: Annotated[float | None, typer.Option(
        help="Use this per-pixel threshold instead of the calibrated one (at every "
             "test-time augmentation level; the pass/fail threshold stays calibrated).")
    ] = None,
    solver: Annotated[str | None, typer.Option(
        help="PS solver for capture-folder inputs: ls, robust or stable (default: the "
             "model's: stable for variation, robust otherwise). Recorded in the model; detect "
             "solves capture folders with it.")] = None,
    hyperparameters: Annotated[list[str] | None, typer.Option(
        "--hp", help='Model hyperparameters as JSON, e.g. \'{"channels": [8, 16, 32, 64]}\'; '
        "repeatable (the objects are merged; a setting given twice is refused)."
    )] = None,
    calibrate_on: Annotated[list[Path] | None, typer.Option(
        "--calibrate-on",
        help="Clean maps or capture folders of parts NOT among the inputs, used only to set "
             "the thresholds (with the validation maps), so that they also hold for parts "
             "the model has not seen. One path per use: repeat it for several "
             "(--calibrate-on A --calibrate-on B; in '--calibrate-on A B', B is an input "
             "to train on).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch CPU threads.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a non-empty model directory.")] = False,
    resume: Annotated[bool, typer.Option(
        help="Continue an interrupted run from MODEL_DIR/.checkpoint: give the same inputs "
             "and -o only; its settings come from the checkpoint.")] = False,
) -> None:
    """Train an anomaly model on defect-free maps and calibrate its thresholds.

    Writes MODEL_DIR/model-<hash>.safetensors, train_log-<hash>.json and, last, config.json
    (model, hyperparameters, version, input handling, thresholds, the weights file and its
    SHA-256, the log file): killed while retraining into the same folder, the previous model
    stays loadable, with its own log. A checkpoint is
    kept in MODEL_DIR/.checkpoint during training; --resume continues from it.
    """
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    from psinspect.models import available_models
    from psinspect.train import checkpoint_progress, train_model

    if resume:
        # (by name: typer's parameter-source enum is not click's own class)
        given = [_OPTION_NAMES.get(name, f"--{name.replace('_', '-')}") for name in _SETTINGS
                 if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"]
        if given:
            raise PsinspectError(
                f"--resume continues the interrupted run with its own settings: drop "
                f"{', '.join(given)} (or train again without --resume)")
    from psinspect.modelstore import default_model_dir

    bundled = default_model_dir().resolve()
    if out.resolve() == bundled or bundled in out.resolve().parents:
        raise PsinspectError(f"{out}: is {'' if out.resolve() == bundled else 'inside '}the "
                             "bundled default model's folder, in the package: choose another "
                             "output folder (bench/train_default.py remakes the bundled model)")
    if init_from is not None and not init_from.strip():
        raise PsinspectError("--init-from: give 'bundled' or a model folder")
    if model is not None and model not in available_models():
        raise PsinspectError(f"--model {model!r}: unknown (available: "
                             f"{', '.join(available_models())})")
    if model is not None:
        from psinspect.models import model_class

        # (the class, not a model: building one in a forked child of a process whose OpenMP
        # threads ran hangs before training sets its thread count)
        kind = model_class(model)
        if not kind.trainable or getattr(kind, "cross_calibration", False):
            # (accepted silently before, and not recorded: an audit)
            unused = [f"--{name.replace('_', '-')}" for name in ("epochs", "batch_size",
                                                                 "patience")
                      if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"]
            if unused:
                raise PsinspectError(
                    f"{', '.join(unused)}: not used by --model {model}, which is "
                    f"{'training-free' if not kind.trainable else 'fitted to the good parts'}"
                    ", not trained by epochs: drop them")
    hp = {}
    for text in hyperparameters or []:
        try:
            more = parse_json(text)
        except json.JSONDecodeError as err:
            raise PsinspectError(f"--hp: not valid JSON ({err})") from None
        if not isinstance(more, dict):
            raise PsinspectError("--hp: expected a JSON object")
        twice = sorted(set(hp) & set(more))
        if twice:
            raise PsinspectError(f"--hp: {', '.join(twice)} given twice")
        hp.update(more)
    console = Console(stderr=True, highlight=False, soft_wrap=True)  # no wrapping in logs
    done = checkpoint_progress(out) if resume else None
    # one line per epoch (kept on a terminal, and in logs); the bar draws only on a terminal
    with progress_bar(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
        task = bar.add_task("loading data", total=done[1] if done else epochs,
                            completed=done[0] if done else 0)

        reading = [True]  # inputs are being read and checked (until fitting begins)

        def on_progress(msg: str) -> None:
            bar.update(task, description=msg)
            if interrupted and reading[0]:  # Ctrl-C while reading: nothing to save
                raise KeyboardInterrupt

        def on_fit_start() -> None:
            if interrupted:  # Ctrl-C after the last input was read
                raise KeyboardInterrupt
            reading[0] = False
            if done is not None:  # (said once the checkpoint's inputs were checked and read)
                bar.console.print(f"resuming: {done[0]} of {done[1]} epochs done (checkpoint "
                                  f"in {out / '.checkpoint'})")

        def on_epoch(e: dict) -> None:
            line = (f"epoch {e['epoch'] + 1}/{e['epochs']}: train loss {e['train_loss']:.4f}, "
                    f"val loss {e['val_loss']:.4f}{' (best so far)' if e['best'] else ''}, "
                    f"{e['seconds']:.1f} s")
            bar.console.print(line)
            bar.update(task, completed=e["epoch"] + 1, total=e["epochs"], description="training")
            if interrupted and e["epoch"] + 1 < e["epochs"]:  # Ctrl-C: this epoch is saved
                raise KeyboardInterrupt

        try:
            with _interrupt_noted(lambda: reading[0]) as interrupted:
                config = train_model(
                    inputs, out, model_name=model, hyperparameters=hp, init_from=init_from,
                    epochs=epochs,
                    batch_size=batch_size, seed=seed, patience=patience,
                    threshold_fpr=threshold_fpr, image_fpr=image_fpr,
                    threshold=threshold, solver=solver, force=force, resume=resume,
                    threads=threads, calibration_inputs=calibrate_on, on_epoch=on_epoch,
                    progress=on_progress, on_fit_start=on_fit_start,
                )
        except KeyboardInterrupt:
            bar.stop()
            if reading[0] and not resume and checkpoint_progress(out) is not None:
                typer.echo(f"interrupted: nothing written; the earlier interrupted run in "
                           f"{out / '.checkpoint'} is kept", err=True)
            elif checkpoint_progress(out) is None:
                typer.echo("interrupted: nothing written (no epoch finished: nothing to "
                           "resume)", err=True)
            else:
                typer.echo(f"interrupted: the last finished epoch is kept in "
                           f"{out / '.checkpoint'}; continue with the same inputs and "
                           f"'-o {out} --resume'", err=True)
            raise typer.Exit(143 if signal.SIGTERM in interrupted else 130) from None
    if interrupted:
        typer.echo("the Ctrl-C came after the last epoch: the model was finished and written",
                   err=True)
    tr = config["training"]
    if tr.get("stopped_early"):
        typer.echo(f"stopped early after epoch {tr['epochs_run']} of {tr['epochs']}: no better "
                   f"validation loss for {tr['patience']} "
                   f"epoch{'s' if tr['patience'] != 1 else ''}", err=True)
    if tr.get("best_epoch_1based"):
        typer.echo(f"kept the weights of epoch {tr['best_epoch_1based']} (best validation "
                   f"loss {tr['best_val_loss']:.4f}"
                   + (f"; {tr['init_from']['initial_val_loss']:.4f} for the weights started "
                      "from" if tr.get("init_from") else "") + ")", err=True)
    elif tr.get("init_from") and tr["epochs_run"]:
        typer.echo(f"kept the weights started from: no epoch beat their validation loss "
                   f"{tr['init_from']['initial_val_loss']:.4f}", err=True)
    session = f", {tr['epochs_run'] - done[0]} of them now" if done else ""
    work = (f"{tr['epochs_run']} epoch{'s' if tr['epochs_run'] != 1 else ''}{session} in "
            f"{tr['train_seconds']:.0f} s"
            if tr["epochs_run"] else f"fitted in {tr['train_seconds']:.0f} s")
    typer.echo(
        f"{config['model']}"
        + (f" fine-tuned from {tr['init_from']['model']}" if tr.get("init_from") else "")
        + f": {tr['train_maps']} train / {tr['val_maps']} val maps, "
        f"{work}; pixel threshold "
        f"{config['threshold']:.4g}, image threshold {config['image_threshold']:.4g}"
        + (f" (also calibrated on {n_cal} map(s) of parts not trained on)"
           if (n_cal := len(config.get("calibration", {}).get("calibration_maps") or []))
           else "") + f" -> {out}"
    )
    cal = config.get("calibration", {})
    if "gumbel" in cal:
        fitted = int(cal.get("val_maps", tr["val_maps"]))  # (with --calibrate-on parts)
        extra = len(cal.get("calibration_maps") or [])
        start = int(cal.get("start_model_maps") or 0)  # (kept weights: their own maps too)
        maps = (f"{fitted} good map{'s' if fitted != 1 else ''}"
                + (f", {extra} of them given to calibrate on" if extra else "")
                + (f", and the {start} of the model started from, whose weights were kept"
                   if start else ""))
        fitted += start
        rate = f"{cal['image_fpr'] * 100:.3g} %"
        if cal["gumbel"]["quantile"] < config["image_threshold"]:
            from psinspect.train import floor_words

            floor = floor_words(fitted, cal["image_fpr"]).removeprefix("their ").replace(
                "maximum", "largest")
            typer.echo(f"pass/fail threshold set at the {floor} image score of the {maps}: "
                       f"the fit for about {rate} of good parts failing lies below it")
        else:
            typer.echo(f"pass/fail threshold set for about {rate} of good parts failing (a "
                       f"fit to the image scores of {maps}; more good parts make it surer)")
    by_count = config.get("thresholds_by_light_count") or {}
    if by_count:
        typer.echo(
            "captures of several light counts: thresholds fitted per light count, on its good "
            "maps alone (detect judges a capture with those of its count; the ones above, of "
            "all maps together, judge maps of unknown count): " + "; ".join(
                f"{n} lights ({g['maps']} map{'s' if g['maps'] != 1 else ''}): pixel "
                f"{g['threshold']:.4g}, image {g['image_threshold']:.4g}"
                for n, g in sorted(by_count.items(), key=lambda kv: int(kv[0]))))
