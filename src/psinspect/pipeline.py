"""The whole pipeline as library functions (``psinspect run``), and the app's example inputs.

:func:`run_pipeline` goes from nothing (or a folder of captures) to ``OUT/report.html``:

1. captures: render a part family (:func:`psinspect.render.render_dataset`) or list the
   DiLiGenT-layout captures under ``--data``;
2. dataset: photometric stereo to normals, defects, splits with whole surfaces held out
   (:func:`psinspect.dataset.build_dataset`);
3. model: train the default model (:func:`psinspect.train.train_model`) or load the bundled one;
4. detect: score the held-out test maps (:mod:`psinspect.detect`);
5. evaluate + report: :func:`psinspect.metrics.evaluate`, :mod:`psinspect.report`.

Every stage reports through a ``progress(stage, message)`` callback, so the CLI prints one line
per stage. Frames: normal maps in the DiLiGenT camera frame (x right, y up, z toward the camera).
"""

from __future__ import annotations

import io
import math
import os
import platform
import shutil
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from psinspect.errors import PsinspectError
from psinspect.fileio import atomic_write_bytes, save_json, save_png
from psinspect.models import DEFAULT_MODEL

# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class RunConfig:
    """Settings of one ``psinspect run`` (saved as ``OUT/run.json``).

    Rendered data (no ``data``): ``parts`` parts of ``size`` x ``size`` px under ``lights``
    lights, a share ``defect_rate`` of them with defects rendered in. Dataset: ``subsets`` light
    subsets per capture, ``holdout`` surfaces for test (None = a seeded quarter of the clean
    surfaces). Model: ``model`` trained ``epochs`` x ``steps_per_epoch`` steps of
    ``batch_size`` crops of ``patch`` px (``model_hyperparameters`` passed on), or the bundled
    default with ``pretrained``. ``fine_tune``: the default model (geo-seg) starts from the
    bundled model's weights (``train --init-from bundled``) instead of random ones; other
    models always start from random weights. ``tta``: score at that test-time augmentation
    level (models that have one, with the thresholds calibrated for it; None = the model's
    own).
    """

    preset: str = "default"
    seed: int = 0
    data: str | None = None
    pretrained: bool = False
    parts: int = 20
    size: int = 256
    lights: int = 12
    defect_rate: float = 0.25
    subsets: int = 3
    holdout: list[str] | None = None
    #: per capture (surface) name, 0-based lights never used (e.g. DiLiGenT bear's first 20)
    skip_lights: dict[str, list[int]] | None = None
    solver: str = "robust"
    model: str | None = None
    model_hyperparameters: dict[str, Any] = field(default_factory=dict)
    fine_tune: bool = True
    epochs: int = 8
    batch_size: int = 8
    patience: int = 3
    threads: int = 2
    tta: int | None = None


#: named presets. ``quick`` is the CI size (about a minute on 2 cores): its few seconds of
#: training check the training path, not the model's quality (use ``--pretrained`` for that)
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"model_hyperparameters": {"steps_per_epoch": 12}},
    "quick": {"parts": 8, "size": 256, "lights": 12, "subsets": 2, "epochs": 2,
              "batch_size": 4, "model_hyperparameters": {"steps_per_epoch": 5, "patch": 96}},
}


def make_config(preset: str = "default", **overrides: Any) -> RunConfig:
    """A :class:`RunConfig` from a preset plus explicit overrides (None values are ignored)."""
    if preset not in PRESETS:
        raise PsinspectError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    cfg = replace(RunConfig(preset=preset), **PRESETS[preset])
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if cfg.model not in (None, DEFAULT_MODEL):
        if "model_hyperparameters" not in overrides:
            cfg.model_hyperparameters = {}  # the preset's settings are for the default model
        cfg.fine_tune = False  # (the bundled model is a geo-seg one)
    if cfg.model is not None:  # an unknown model or bad settings fail before the slow part
        from psinspect.models import create_model

        if create_model(cfg.model, **cfg.model_hyperparameters).known_part:
            raise PsinspectError(
                f"--model {cfg.model} learns one part type from instances of it in one pose; "
                "run trains on a dataset of different parts, turned and mirrored: use render "
                "--instances, then train and detect")
    return cfg


#: settings of :class:`RunConfig` that only apply to the rendered default data
RENDER_SETTINGS = ("parts", "size", "lights", "defect_rate")


def recorded_config(cfg: RunConfig) -> dict[str, Any]:
    """The settings a run used, for ``run.json``: without the rendering ones when it read
    ``data`` captures, and without the training ones when it used the bundled model."""
    out = asdict(cfg)
    unused = (RENDER_SETTINGS if cfg.data else ()) + (
        ("model", "model_hyperparameters", "fine_tune", "epochs", "batch_size", "patience",
         "threads") if cfg.pretrained else ())
    return {k: v for k, v in out.items() if k not in unused}


class Reporter(Protocol):
    """Progress sink for :func:`run_pipeline` (the CLI prints one line per stage)."""

    def stage(self, index: int, total: int, name: str, text: str, steps: int | None) -> None:
        """A stage starts; ``steps`` is its number of ticks (None = unknown)."""

    def tick(self, text: str = "") -> None:
        """One step of the current stage done."""

    def done(self, summary: str, seconds: float) -> None:
        """The current stage finished."""


class _Silent:
    def stage(self, index: int, total: int, name: str, text: str, steps: int | None) -> None:
        pass

    def tick(self, text: str = "") -> None:
        pass

    def done(self, summary: str, seconds: float) -> None:
        pass


# --------------------------------------------------------------------------------------------
# the run


STAGES = ("captures", "dataset", "model", "detect", "evaluate")


def no_training_surface(names: Sequence[str]) -> str:
    """The error of a run that would train on nothing: every surface is held out or defective."""
    return ("no surface left for training: every capture is held out or defective "
            f"({', '.join(names)}; with --pretrained every capture can be a test surface)")


def run_pipeline(work: str | os.PathLike[str], cfg: RunConfig,
                 reporter: Reporter | None = None) -> dict[str, Any]:
    """Run every stage into the (empty, staged) folder ``work``; return the run summary.

    Layout of ``work``: ``captures/`` (rendered; absent with ``cfg.data``), ``dataset/``
    (normal maps + ``manifest.json``), ``model/`` (MODEL_DIR), ``predictions/`` (per test map
    ``<name>_score.npy``, ``_heatmap.png``, ``_mask.png``, and ``summary.json``),
    ``metrics.json``, ``report.html``, ``run.json`` (config, versions, timings, summary); when
    the run trains its model, ``bundled/``: the bundled default model's predictions on the same
    test maps (:func:`compare_bundled`, its figures in ``run.json`` and the report).
    """
    from psinspect.dataset import build_dataset, find_captures
    from psinspect.modelstore import default_model_dir

    if cfg.tta is not None:  # before hours of work, not after training
        from psinspect.models import create_model
        from psinspect.modelstore import check_tta

        check_tta(create_model(DEFAULT_MODEL if cfg.pretrained or cfg.model is None
                               else cfg.model), cfg.tta)
    if cfg.data is None:  # the parts' names are known before they are rendered
        from psinspect.dataset import check_surface_names
        from psinspect.render import part_names

        names = part_names(cfg.parts, seed=cfg.seed)
        check_surface_names(names, cfg.holdout, cfg.skip_lights)
        if not cfg.pretrained and cfg.holdout is not None and set(names) <= set(cfg.holdout):
            raise PsinspectError(no_training_surface(names))
    rep: Reporter = reporter or _Silent()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    n = len(STAGES)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def begin(i: int, text: str, steps: int | None) -> float:
        rep.stage(i + 1, n, STAGES[i], text, steps)
        return time.perf_counter()

    def end(i: int, t0: float, summary: str) -> None:
        timings[STAGES[i]] = round(time.perf_counter() - t0, 2)
        rep.done(summary, timings[STAGES[i]])

    # 1. captures
    if cfg.data is None:
        from psinspect.render import render_dataset

        t0 = begin(0, f"rendering {cfg.parts} parts ({cfg.size} px, {cfg.lights} lights)",
                   cfg.parts)
        captures = render_dataset(work / "captures", cfg.parts, defect_rate=cfg.defect_rate,
                                  lights=cfg.lights, seed=cfg.seed, size=cfg.size,
                                  progress=lambda k: rep.tick())
    else:
        t0 = begin(0, f"reading captures under {cfg.data}", None)
        captures = find_captures([cfg.data])
    n_def = sum((c / "M_defect.png").is_file() for c in captures)
    end(0, t0, f"{len(captures)} captures ({n_def} with defects)")

    # 2. dataset
    t0 = begin(1, f"photometric stereo ({cfg.solver}, {cfg.subsets} light subsets), defects, "
                  "splits", len(captures) * cfg.subsets)
    manifest = build_dataset(captures, work / "dataset", holdout=cfg.holdout, seed=cfg.seed,
                             subsets=cfg.subsets, solver=cfg.solver,
                             skip_lights=cfg.skip_lights, progress=lambda msg: rep.tick(msg))
    counts = {sp: sum(it["split"] == sp for it in manifest["items"])
              for sp in ("train-clean", "val-clean", "test-clean", "test-defective")}
    held = sorted(k for k, v in manifest["surfaces"].items() if v["role"] == "test")
    if not cfg.pretrained and not counts["train-clean"]:
        raise PsinspectError(no_training_surface(sorted(manifest["surfaces"])))
    if not held:
        raise PsinspectError(
            f"no surface left for testing among {len(captures)} capture(s): give at least 2 "
            "defect-free captures (one is held out for test) or a defective one")
    end(1, t0, "normal maps: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f" (per surface and light subset); test surfaces: {', '.join(held)}")

    # 3. model
    bundle = _model_stage(work, cfg, rep, begin, end)

    # 4. detect
    from psinspect.detect import write_detection_outputs

    tests = [it for it in manifest["items"] if it["split"].startswith("test")]
    t0 = begin(3, f"detecting on {len(tests)} held-out test maps", len(tests))
    detect_summary = write_detection_outputs(
        [work / "dataset" / it["file"] for it in tests], work / "predictions", bundle,
        solver=cfg.solver, progress=lambda name: rep.tick(name))
    summaries = detect_summary["inputs"]
    n_fail = sum(s["verdict"] == "fail" for s in summaries)
    end(3, t0, f"{n_fail} of {len(summaries)} maps fail")

    # 5. evaluate: metrics.json + report.html (psinspect.report.write_evaluation)
    from psinspect.report import write_evaluation

    compare = not cfg.pretrained and (default_model_dir() / "config.json").is_file()
    t0 = begin(4, "metrics inside the object mask, report.html"
               + (", the bundled default model on the same maps" if compare else ""), None)
    metrics = write_evaluation(work / "predictions", work / "dataset", work, force=True)
    verdicts = metrics["verdicts"]
    pooled = metrics["pooled"]
    bundled = (compare_bundled(work / "bundled", work / "dataset", tests,
                               comparison_tta(cfg)) if compare else None)
    timings["total"] = round(time.perf_counter() - t_all, 2)
    from psinspect.train import few_maps_note

    run_info = {
        "config": recorded_config(cfg), "timings_s": timings, "stages": list(STAGES),
        "counts": counts, "test_surfaces": held,
        "train_surfaces": sorted(k for k, v in manifest["surfaces"].items()
                                 if v["role"] != "test"),
        # why each test surface is one: held out (drawn or given), or its own defects
        "test_surfaces_why": {k: ("its own defects, M_defect.png"
                                  if k in manifest["config"]["real_defective"]
                                  else "drawn: a quarter of the clean captures"
                                  if manifest["config"]["holdout_auto"] else "given to --holdout")
                              for k in held},
        "model_dir": "model",
        "model": bundle.config.get("model"), "pretrained": cfg.pretrained,
        "fine_tuned_from": "bundled" if fine_tunes(cfg) else None,
        # fine-tuned, but no epoch beat the start: the bundled weights, thresholds fitted here
        # (the pass/fail one with the bundled model's own calibration maps: how many)
        "fine_tune_kept_start": kept_start_weights(bundle.config),
        "pass_fail_start_maps": start_maps(bundle.config),
        # whether a model was trained in this run (not with --pretrained, nor for a
        # training-free model)
        "trained": not cfg.pretrained and bool(
            (bundle.config.get("training") or {}).get("epochs_run")),
        "metrics": {k: pooled.get(k) for k in RUN_METRICS},
        "intervals": metrics.get("intervals"),
        "verdicts": verdicts,
        "image_threshold": metrics["operating_point"]["image_threshold"],
        # the verdicts at the thresholds of other shares of good parts failing
        "operating_points": metrics.get("operating_points"),
        # why the run's verdicts may not hold (also printed while training)
        "notes": [n for n in [few_maps_note(bundle.config.get("calibration") or {})] if n],
        "bundled_model": bundled,
        "versions": _versions(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    end(4, t0, ", ".join(f"{k} {v:.3f}" for k, v in run_info["metrics"].items()
                         if v is not None))
    timings["total"] = round(time.perf_counter() - t_all, 2)
    # (after the last stage ended: the report states the times run.json records)
    _add_run_section(work / "report.html", run_info)
    save_json(work / "run.json", run_info)
    return run_info


#: the pooled metrics a run reports
RUN_METRICS = ("pixel_auroc", "aupro", "pixel_ap", "f1_max", "image_auroc")


def compare_bundled(out: Path, dataset: Path, tests: list[dict[str, Any]],
                    tta: int | None = None) -> dict[str, Any]:
    """The bundled default model on a run's held-out test maps (``tests``: the dataset's test
    items): its ``psinspect detect`` outputs into ``out``, and its pooled metrics and
    verdicts. A run trains its model for seconds or minutes; this shows beside it what the
    shipped model (trained by ``bench/train_default.py`` on rendered parts of other seeds,
    which the run's parts are not) makes of the same maps. ``tta``: its test-time copies
    (None: its own)."""
    from psinspect.detect import write_detection_outputs
    from psinspect.metrics import evaluate, verdict_counts
    from psinspect.modelstore import default_model_dir, load_model_dir
    from psinspect.report import load_eval_items

    bundle = load_model_dir(default_model_dir(), tta=tta)
    summary = write_detection_outputs([dataset / it["file"] for it in tests], out, bundle)
    items, _ = load_eval_items(out, dataset)
    pooled = evaluate(items, breakdowns=False)["pooled"]
    return {"model": bundle.config.get("model"), "model_dir": str(default_model_dir()),
            "metrics": {k: pooled.get(k) for k in RUN_METRICS},
            "verdicts": verdict_counts([s["verdict"] for s in summary["inputs"]],
                                       [it["split"] == "test-defective" for it in tests])}


def _add_run_section(report: Path, run_info: dict[str, Any]) -> None:
    """Put a short 'how this run was made' section under the report's title."""
    import html

    cfg = run_info["config"]
    data = cfg["data"] or (f"{cfg['parts']} rendered parts, {cfg['size']} px, "
                           f"{cfg['lights']} lights, defect rate {cfg['defect_rate']}")
    v = run_info["verdicts"]
    how = ("bundled, --pretrained" if cfg["pretrained"]
           else "fine-tuned in this run from the bundled model"
           + (f" ({kept_start_words(run_info.get('pass_fail_start_maps'))})"
              if run_info.get("fine_tune_kept_start") else "")
           if run_info.get("fine_tuned_from")
           else "trained in this run" if run_info.get("trained", True)
           else "made in this run, training-free")
    lines = [
        f"psinspect run, preset {cfg['preset']}, seed {cfg['seed']}: data {data}.",
        f"Model {run_info['model']} ({how}, "
        "folder model/). Test surfaces (never seen in training): " + ", ".join(
            f"{k} ({why})" if (why := run_info.get("test_surfaces_why", {}).get(k)) else k
            for k in run_info["test_surfaces"]) + "; training surfaces: "
        + (", ".join(run_info.get("train_surfaces", [])) or "none") + ".",
        f"Verdicts at the calibrated image threshold: {verdicts_text(v)}.",
        *(f"Note: {n}." for n in run_info.get("notes", [])),
        "Stage times (s): " + ", ".join(f"{k} {t}" for k, t in run_info["timings_s"].items())
        + ". Details in run.json; per-map outputs in predictions/.",
    ]
    if run_info.get("bundled_model"):
        lines.append(bundled_line(run_info["bundled_model"]) + " Its per-map outputs: bundled/.")
    block = "".join(f"<p class='note'>{html.escape(t)}</p>" for t in lines)
    text = report.read_text(encoding="utf-8")
    i = text.find("</h1>")
    if i >= 0:
        text = text[:i + 5] + "<h2>Run</h2>" + block + text[i + 5:]
        atomic_write_bytes(report, text.encode("utf-8"))


def bundled_line(bundled: dict[str, Any]) -> str:
    """One sentence on :func:`compare_bundled`'s result (report and CLI)."""
    m, v = bundled["metrics"], bundled["verdicts"]
    return (f"The bundled default model ({bundled['model']}, trained on other parts) on the "
            "same test maps: " + ", ".join(f"{k} {x:.3f}" for k, x in m.items() if x is not None)
            + f"; {verdicts_text(v)}.")


def verdicts_text(v: dict[str, int]) -> str:
    """The verdict counts of :func:`psinspect.train.verdict_counts` as a clause (report and
    CLI): ``"3 defective maps failed, 1 passed; 1 clean map passed, 0 failed"``."""
    def maps(n: int, kind: str) -> str:
        return f"{n} {kind} map{'' if n == 1 else 's'}"
    return (f"{maps(v['defective_failed'], 'defective')} failed, {v['defective_passed']} passed; "
            f"{maps(v['clean_passed'], 'clean')} passed, {v['clean_failed']} failed")


def relocate_paths(stage: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Rewrite the staging folder's path to the final one inside the JSON files of ``stage``
    (manifest, model config, run.json, the predictions' summary.json) and its HTML report, so
    artifacts name where they end up: the absolute path, then the path as given (detect's
    ``source`` entries are relative where the output folder was given so)."""
    import html
    import json

    pairs = [(str(Path(stage).resolve()), str(Path(final).resolve()))]
    if str(stage) != pairs[0][0]:
        pairs.append((str(stage), str(final)))
    for pattern, escape in (("*.json", lambda s: json.dumps(s)[1:-1]), ("*.html", html.escape)):
        escaped = [(escape(a), escape(b)) for a, b in pairs]
        for path in Path(stage).rglob(pattern):
            text = new = path.read_text(encoding="utf-8")
            for old, to in escaped:
                new = new.replace(old, to)
            if new != text:
                atomic_write_bytes(path, new.encode("utf-8"))


def _versions() -> dict[str, str]:
    import numpy
    import torch

    from psinspect import __version__

    return {"psinspect": __version__, "python": platform.python_version(),
            "numpy": numpy.__version__, "torch": torch.__version__}


def comparison_tta(cfg: RunConfig) -> int | None:
    """The test-time copies the bundled model is compared at: the run's ``tta`` when its
    model is the bundled model's kind (default or named), else the bundled model's own."""
    return cfg.tta if cfg.model in (None, DEFAULT_MODEL) else None


def fine_tunes(cfg: RunConfig) -> bool:
    """Whether the run's model starts from the bundled model's weights: ``fine_tune`` (false
    for models other than the bundled model's kind, :func:`make_config`), not
    ``pretrained``."""
    return cfg.fine_tune and not cfg.pretrained and cfg.model in (None, DEFAULT_MODEL)


def _model_stage(work: Path, cfg: RunConfig, rep: Reporter,
                 begin: Callable[[int, str, int | None], float],
                 end: Callable[[int, float, str], None]) -> Any:
    from psinspect.modelstore import default_model_dir, load_model_dir

    if cfg.pretrained:
        t0 = begin(2, "using the bundled default model (--pretrained)", None)
        src = default_model_dir()
        # its files' contents only: made here, they get the user's umask and today's date,
        # as everything else the run writes (copytree kept the package's mode and times)
        (work / "model").mkdir(parents=True)
        for f in sorted(src.iterdir()):
            if f.is_file():
                shutil.copyfile(f, work / "model" / f.name)
        bundle = load_model_dir(work / "model", tta=cfg.tta)
        end(2, t0, f"{bundle.config.get('model')} from {src}")
        return bundle
    from psinspect.train import train_model

    kwargs: dict[str, Any] = {}
    if cfg.model is not None:
        kwargs["model_name"] = cfg.model
    from psinspect.models import create_model

    trainable = create_model(cfg.model or DEFAULT_MODEL, **cfg.model_hyperparameters).trainable
    init_from = "bundled" if fine_tunes(cfg) else None
    t0 = begin(2, (f"fine-tuning the bundled model ({cfg.epochs} epochs)" if init_from
                   else f"training {cfg.model or 'the default model'} ({cfg.epochs} epochs)")
               if trainable else f"fitting {cfg.model} (training-free: thresholds only)",
               cfg.epochs if trainable else None)
    config = train_model(
        [work / "dataset"], work / "model", hyperparameters=dict(cfg.model_hyperparameters),
        init_from=init_from,
        epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, patience=cfg.patience,
        threads=cfg.threads,
        on_epoch=lambda e: rep.tick(f"epoch {e['epoch'] + 1}: val loss {e['val_loss']:.4f}"),
        **kwargs)
    bundle = load_model_dir(work / "model", tta=cfg.tta)
    kept = (f"; {kept_start_words(start_maps(config))}" if kept_start_weights(config)
            else "")
    end(2, t0, f"{config['model']}: pixel threshold {config['threshold']:.4g}, image "
               f"threshold {config['image_threshold']:.4g}{kept}")
    return bundle


def start_maps(config: dict[str, Any]) -> int | None:
    """How many clean calibration maps of the model a fine-tune started from its pass/fail
    fit pooled (:func:`psinspect.train.pool_start_scores`; None: none)."""
    n = (config.get("calibration") or {}).get("start_model_maps")
    return n if isinstance(n, int) else None


def kept_start_words(pooled: int | None) -> str:
    """What a run says of a fine-tune that kept the bundled weights (``pooled``:
    :func:`start_maps`)."""
    return ("no epoch beat the bundled model on the validation maps: its weights kept, "
            + ("thresholds fitted here" if pooled is None else
               f"the pixel threshold fitted here, the pass/fail threshold to these good maps "
               f"and its own {pooled} calibration maps"))


def kept_start_weights(config: dict[str, Any]) -> bool:
    """Whether a fine-tuned model's config says no epoch beat the weights it started from."""
    return bool(((config.get("training") or {}).get("init_from") or {}).get(
        "kept_start_weights"))


# --------------------------------------------------------------------------------------------
# example inputs for the app


#: the shipped examples: (file name, part family, defect types (empty = defect-free))
EXAMPLE_SPECS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("disc_scratch_dent_normals.png", "disc", ("scratch", "dent")),
    ("plate_clean_normals.png", "plate", ()),
    ("casting_scratch_dent_capture.zip", "casting", ("scratch", "dent")),
)


def _capture_zip_bytes(rp, name: str) -> bytes:  # rp: psinspect.render.RenderedPart
    """A plain-layout capture as zip bytes: 8-bit PNGs, ``lights.txt`` as slant/tilt degrees,
    ``light_intensities.txt`` and ``mask.png`` (what an inspection rig would export)."""
    import cv2

    buf = io.BytesIO()

    def entry(name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.external_attr = 0o100644 << 16  # regular file, rw-r--r--
        info.compress_type = zipfile.ZIP_DEFLATED
        return info

    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        lines = ["# format: slant_tilt", "# slant = angle from the camera axis, tilt = "
                 "azimuth counter-clockwise from +x (right), degrees"]
        for lx, ly, lz in np.asarray(rp.lights, np.float64):
            slant = math.degrees(math.acos(max(-1.0, min(1.0, lz))))
            tilt = math.degrees(math.atan2(ly, lx)) % 360.0
            lines.append(f"{slant:.4f} {tilt:.4f}")
        zf.writestr(entry(f"{name}/lights.txt"), "\n".join(lines) + "\n")
        zf.writestr(entry(f"{name}/light_intensities.txt"),
                    "".join(f"{v:.6f}\n" for v in np.asarray(rp.intensities, np.float64)))
        for i, img in enumerate(rp.images):
            q = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
            ok, png = cv2.imencode(".png", q)
            assert ok
            zf.writestr(entry(f"{name}/img_{i + 1:02d}.png"), png.tobytes())
        ok, png = cv2.imencode(".png", rp.mask.astype(np.uint8) * 255)
        zf.writestr(entry(f"{name}/mask.png"), png.tobytes())
    return buf.getvalue()


def write_examples(out: str | os.PathLike[str], *, seed: int = 2024, size: int = 256,
                   lights: int = 8) -> list[Path]:
    """Render the app's one-click examples into ``out`` (see :data:`EXAMPLE_SPECS`).

    Normal-map examples are photometric stereo (``robust``) on a rendered 12-light capture,
    encoded as 8-bit normal PNGs; the capture example is a zip in the plain layout with
    slant/tilt lights. Deterministic for a seed. Returns the written files.
    """
    from psinspect.capture import load_capture, write_capture
    from psinspect.normalmap import encode_png
    from psinspect.render import render_part
    from psinspect.stereo import solve

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (fname, family, types) in enumerate(EXAMPLE_SPECS):
        rng = np.random.default_rng([seed, i])
        is_zip = fname.endswith(".zip")
        rp = render_part(rng, size=size, family=family, lights=lights if is_zip else 12,
                         defects=len(types), defect_types=types or None, severity="high",
                         name=Path(fname).stem)
        if is_zip:
            written.append(atomic_write_bytes(out / fname, _capture_zip_bytes(rp, rp.part.name)))
            continue
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_capture(tmp, rp.images, rp.lights, rp.mask,
                          intensities=np.repeat(rp.intensities[:, None], 3, axis=1))
            cap = load_capture(tmp)
        res = solve(cap.images, cap.lights, cap.mask, solver="robust", clipped=cap.clipped)
        written.append(save_png(out / fname, encode_png(res.normals, cap.mask)))
        if rp.defect_mask is not None:
            save_png(out / (Path(fname).stem + "_gt_mask.png"),
                     rp.defect_mask.astype(np.uint8) * 255)
    save_json(out / "examples.json", {
        "made_by": f"psinspect.pipeline.write_examples(out, seed={seed}, size={size}, "
                   f"lights={lights})",
        "examples": [{"file": f, "family": fam, "defects": list(t)} for f, fam, t in EXAMPLE_SPECS],
    })
    return written


if __name__ == "__main__":  # pragma: no cover - regenerate the shipped examples
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m psinspect.pipeline OUT_DIR")
    for p in write_examples(sys.argv[1]):
        print(p, p.stat().st_size)
