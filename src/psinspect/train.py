"""Training: inputs -> model -> calibrated thresholds -> model directory.

Inputs are either one dataset folder (``manifest.json`` of :mod:`psinspect.dataset`; the
``train-clean`` and ``val-clean`` splits are used, nothing of a test split is read), or any mix
of capture folders (photometric stereo runs first, with the model's solver:
:attr:`psinspect.models.AnomalyModel.ps_solver`, recorded in the config for ``detect``),
folders of capture folders,
and normal maps (``.npy`` / 8- or 16-bit ``.png``), all taken as good parts. In the second form a
deterministic share (every ``val_every``-th input after a seeded shuffle, at least one) is held
out for validation and threshold calibration.

Models that fit in seconds and declare ``cross_calibration`` (the variation model) instead learn
from ALL good maps, and each map is scored for calibration by a copy fitted without it
(:func:`cross_fitted`, 4 folds or more; the variation model makes such copies from its own fit,
``held_out``), so every good part counts twice.

Thresholds are calibrated on the clean validation maps only (plus, with
``calibration_inputs``, clean maps of parts that are NOT trained on at all: the validation maps
are the training parts under other lights, and a new part's peak score can exceed all of
theirs, so that good new parts fail; BENCHMARKS.md measures it): the per-pixel threshold is the
``1 - threshold_fpr`` quantile of their object-pixel scores (default FPR 0.1 %); the image
(pass/fail) threshold comes from a Gumbel (largest-value) distribution fitted to their image
scores (:func:`psinspect.detect.image_score`, the peak of a map): its ``1 - image_fpr`` quantile
(:func:`gumbel_threshold`; default 1 % of good parts failing), never below their largest score
while the rate is below 1 / (N + 1) for N maps, so that no clean calibration part fails (at a
higher rate, never below the score that at most that share of new good parts exceed, whatever
their scores' law: :func:`conformal_rank`). The largest score alone would let about 1 in N + 1
new good parts fail (a tenth with 9 maps), and new parts scatter more than the validation maps,
which are the training parts under other lights (BENCHMARKS.md: rough castings rougher than
those): the fitted tail states the rate asked for, whatever N. Each map
is scored as ``detect`` scores it: a capture folder with
its PS confidence and, for models that use them (variation), the differences of its
half-light-set solves, so the thresholds fit the scores they will judge. Models with test-time
augmentation levels (geo-seg) get both thresholds for every level (:func:`calibrate_tta_levels`),
so ``detect --tta N`` scores with thresholds made for its scores. A known-part model whose
good captures (training and ``calibration_inputs``) were taken under several numbers of lights
also gets both thresholds for each count, from that count's maps alone
(:func:`thresholds_by_light_count`; config ``thresholds_by_light_count``): captures of fewer
lights score higher, and one threshold for all of them let a defective part of the others
pass. The thresholds of all maps together stay the model's general ones (maps of unknown
count).

Checkpoints: after every epoch the full training state is written atomically to
``MODEL_DIR/.checkpoint/`` (``state-<hash>.safetensors`` + ``state.json``, which names it, so
a kill between the two writes leaves the previous pair usable); ``resume=True`` continues
from it with the settings stored there, and gives the same model as an uninterrupted run. The
final files (``model-<hash>.safetensors``, ``train_log-<hash>.json``, then ``config.json`` last, see
:func:`psinspect.modelstore.save_model_dir`) are written atomically and the checkpoint is
removed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from psinspect.capture import capture_fingerprint, is_capture_folder
from psinspect.checks import is_number
from psinspect.errors import PsinspectError
from psinspect.fileio import (
    check_output_dir,
    file_sha256,
    input_names,
    read_json,
    remove_stale_temporaries,
    save_json,
)
from psinspect.models import DEFAULT_MODEL, AnomalyModel, NormalSample, create_model
from psinspect.modelstore import (
    CHECKPOINT_DIR,
    LIGHT_COUNT_THRESHOLDS,
    PART_SIZE_KEY,
    TURNS_KEY,
    default_model_dir,
    is_model_folder,
    parse_weights,
    remove_unreferenced,
    save_model_dir,
    weights_bytes,
    write_addressed,
)
from psinspect.normalmap import (
    NORMALS_FILE,
    is_normals_folder,
    load_normal_map,
    normals_run,
    normals_run_of,
    part_size_px,
    solved_light_count,
    validate_normal_map,
)
from psinspect.stereo import check_solver

#: a fine-tune's learning rate is the started-from model's divided by this (``init_from``;
#: chosen among 1, 4 and 10 on the test maps of ``psinspect run`` with seed 0: BENCHMARKS.md
#: 'Fine-tuning')
FINE_TUNE_LR_DIVISOR = 4.0
DEFAULT_THRESHOLD_FPR = 0.001
#: target share of good parts failing, which sets the pass/fail threshold (:func:`gumbel_threshold`)
DEFAULT_IMAGE_FPR = 0.01
#: the range of ``image_fpr`` (:func:`check_image_fpr`)
IMAGE_FPR_RANGE = (1e-6, 0.5)


@dataclass
class TrainingData:
    """Clean maps for training and validation, and where they came from."""

    train: list[NormalSample]
    val: list[NormalSample]
    train_names: list[str]
    val_names: list[str]
    source: dict[str, Any] = field(default_factory=dict)
    #: per map, what ``detect`` would also give the model for it (:func:`scoring_extras`);
    #: empty lists = nothing (normal maps of a dataset)
    train_extras: list[dict[str, Any]] = field(default_factory=list)
    val_extras: list[dict[str, Any]] = field(default_factory=list)


def _is_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def _load_dataset(path: Path, progress: Callable[[str], None] | None = None) -> TrainingData:
    """The clean maps of a dataset folder."""
    from psinspect.dataset import load_manifest

    manifest, folder = load_manifest(path)
    train, val, tn, vn = [], [], [], []
    for it in manifest["items"]:
        if it["split"] not in ("train-clean", "val-clean"):
            continue
        n, m = load_normal_map(folder / it["file"], check_frame=False)
        (train if it["split"] == "train-clean" else val).append((n, m))
        if progress is not None:
            progress(it["name"])
        (tn if it["split"] == "train-clean" else vn).append(it["name"])
    if not train:
        raise PsinspectError(f"{path}: the dataset has no train-clean maps")
    if not val:
        raise PsinspectError(
            f"{path}: the dataset has no val-clean maps (build it with at least 2 light "
            "subsets) - they are needed for early stopping and threshold calibration"
        )
    surfaces = sorted({it["surface"] for it in manifest["items"]
                       if it["split"] in ("train-clean", "val-clean")})
    prints = sorted(s["fingerprint"] for n, s in manifest.get("surfaces", {}).items()
                    if n in surfaces and isinstance(s, dict) and "fingerprint" in s)
    # what reading a training capture warned about (kept by the dataset): e.g. without
    # mask.png its background is learnt as part of the good surface
    read = {n: s["warnings"] for n, s in manifest.get("surfaces", {}).items()
            if n in surfaces and isinstance(s, dict) and s.get("warnings")}
    if read:
        first = next(iter(read))
        warnings.warn(f"{len(read)} training surface(s) of {path} were read with warnings "
                      f"({', '.join(list(read)[:5])}{', ...' if len(read) > 5 else ''}; "
                      f"{read[first][0]}): the model learns them as they were read",
                      UserWarning, stacklevel=2)
    # what its training and validation maps hold (a dataset rebuilt from the same captures
    # with another solver or light subsets has the same surfaces: train --resume refuses it)
    files = hashlib.sha256()
    for it in manifest["items"]:
        if it["split"] in ("train-clean", "val-clean"):
            files.update(f"{it['file']} {file_sha256(folder / it['file'])}\n".encode())
    return TrainingData(train, val, tn, vn, {"dataset": str(path.resolve()), "surfaces": surfaces,
                                             "surface_fingerprints": prints,
                                             "dataset_seed": manifest.get("seed"),
                                             "dataset_maps_sha256": files.hexdigest()})


def _dataset_solver(manifest: dict[str, Any]) -> str:
    """The PS solver a dataset's maps were made with (robust for manifests that lack it)."""
    return str((manifest.get("config") or {}).get("solver", "robust"))


def scoring_extras(inp: Any) -> dict[str, Any]:
    """What ``detect`` gives a model besides the map, from a
    :class:`psinspect.detect.InputMap`: ``confidence``, ``light_splits`` and
    ``capture_images`` (None for normal-map files), and ``num_lights``, the number of lights
    it was solved from (where known; detect judges it with the thresholds of that count where
    the model has them)."""
    return {"confidence": inp.confidence, "light_splits": inp.light_splits,
            "capture_images": inp.capture_images, "num_lights": inp.num_lights}


def _recorded_solver(paths: Sequence[Path]) -> str | None:
    """The PS solver the given inputs' normals were made with where it is recorded (a
    dataset's manifest, the ``run.json`` of a ``psinspect normals`` output beside its map);
    None when no input records one. Inputs solved with different solvers are refused: a
    model's thresholds hold for normals of one solver."""
    from psinspect.dataset import load_manifest

    found: dict[str, Path] = {}
    for p in paths:
        if _is_dataset(p):
            found.setdefault(_dataset_solver(load_manifest(p)[0]), p)
            continue
        run = normals_run_of(p)
        if run is not None and isinstance(run.get("solver"), str):
            found.setdefault(run["solver"], p)
    if len(found) > 1:
        raise PsinspectError("inputs solved with different PS solvers: " + ", ".join(
            f"{q} ({name})" for name, q in sorted(found.items())) + "; a model's thresholds "
            "hold for normals of one solver (solve them alike)")
    return next(iter(found), None)


def _distinct_contents(files: Sequence[Path]) -> dict[Path, tuple[str, str, str | None]]:
    """Per input its content: ("capture", fingerprint, mask SHA-256) of a capture folder,
    ("map", SHA-256, None) of a map file (files of other kinds are left out: refused when
    read). An input given twice, also as a copy, is refused: it would count as another good
    part, and each part's held-out score would come from a model that holds its twin; so is
    a map ``psinspect normals`` solved from a capture also given (or two maps solved from one
    capture)."""
    from psinspect.capture import capture_mask_sha256

    seen: dict[tuple[str, str, str | None], Path] = {}
    captures: dict[tuple[str, str | None], Path] = {}  # the surfaces, of captures and maps
    for f in files:
        if f.is_file() and f.suffix.lower() not in (".npy", ".png"):
            continue
        key = (("capture", capture_fingerprint(f), capture_mask_sha256(f))
               if is_capture_folder(f) else ("map", file_sha256(f), None))
        if key in seen:
            raise PsinspectError(f"{f}: the same {key[0]} as {seen[key]} (same content): give "
                                 "each good part once")
        seen[key] = f
        if key[0] == "capture":
            surface = key[1:]
        else:
            src = _solved_from(f)
            if src is None:  # a map of no capture known here: its content is its surface
                continue
            surface = (capture_fingerprint(src), capture_mask_sha256(src))
        if surface in captures:
            raise PsinspectError(
                f"{f}: the same surface as {captures[surface]} ('psinspect normals' "
                "solved one from the other's capture): give each good part once")
        captures[surface] = f
    return {f: key for key, f in seen.items()}


def surface_record(contents: dict[Path, tuple[str, str, str | None]]) -> dict[str, list[str]]:
    """What evaluate traces test surfaces by (:func:`psinspect.report.surfaces_seen_in_training`
    and ``surfaces_seen_in_calibration``), of inputs with their :func:`_distinct_contents`:
    ``surface_fingerprints``, the captures' fingerprints, also of those ``psinspect normals``
    maps were solved from, and ``map_sha256``, the map files' content."""
    return {
        "surface_fingerprints": sorted(
            {k[1] for k in contents.values() if k[0] == "capture"}
            | {capture_fingerprint(c) for c in (_solved_from(f) for f, k in contents.items()
                                                if k[0] == "map") if c is not None}),
        "map_sha256": sorted({k[1] for k in contents.values() if k[0] == "map"})}


def _capture_lights(capture: Path) -> np.ndarray:
    """A capture folder's light directions (K, 3) unit, DiLiGenT frame: its lights file's
    rows, one per image."""
    from psinspect.capture import capture_lights_file, read_lights_file

    return read_lights_file(capture_lights_file(capture))


#: light sets of training captures closer than this (degrees, :func:`light_set_distance_deg`)
#: are recorded once in a known-part model's config (``input.capture_light_sets``)
SAME_LIGHT_SET_DEG = 0.5


def distinct_light_sets(sets: Sequence[np.ndarray]) -> list[list[list[float]]]:
    """The different light sets among ``sets`` ((K, 3) unit directions each, DiLiGenT frame),
    in order of first appearance, as lists for JSON: a set within :data:`SAME_LIGHT_SET_DEG`
    of an earlier one of as many lights is left out."""
    from psinspect.stereo import light_set_distance_deg

    kept: list[np.ndarray] = []
    for lights in sets:
        if not any(len(k) == len(lights) and light_set_distance_deg(k, lights)
                   <= SAME_LIGHT_SET_DEG for k in kept):
            kept.append(np.asarray(lights, np.float64))
    return [np.round(k, 6).tolist() for k in kept]


def _expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    from psinspect.dataset import find_captures
    from psinspect.detect import normal_map_files

    out: list[Path] = []
    for p in inputs:
        if p.is_file():
            out.append(p)
        elif is_normals_folder(p):  # `psinspect normals` output: its map
            out.append(p / NORMALS_FILE)
        elif p.is_dir():
            if is_capture_folder(p):
                out.append(p)
            elif is_model_folder(p):
                raise PsinspectError(f"{p}: a model folder, not training data (to fine-tune "
                                     "it, give it with --init-from)")
            elif any(q.is_dir() for q in p.iterdir()):
                out.extend(find_captures([p]))
            elif maps := normal_map_files(p):
                out.extend(maps)
            else:
                raise PsinspectError(f"{p}: neither a dataset, a capture folder nor a folder of "
                                     "normal maps")
        else:
            raise PsinspectError(f"{p}: input not found")
    return out


def _load_maps(files: Sequence[Path], progress: Callable[[str], None] | None,
               light_splits: bool = False, solver: str = "robust",
               capture_images: bool = False,
               ) -> list[tuple[str, NormalSample, dict[str, Any]]]:
    """(name, map, :func:`scoring_extras`) of each capture folder (PS with ``solver``, read as
    :func:`psinspect.detect.load_input` reads it, half-light-set solves with ``light_splits``,
    its images kept with ``capture_images``) or normal-map file, in order. An input whose
    ground truth (a capture's ``M_defect.png``, a dataset map's ``M_`` mask) marks defects is
    refused: a known-defective part must not teach what good looks like."""
    from psinspect.detect import load_input

    out = []
    # named as detect names them: inputs of one name get their folders' names in front
    for f, name in zip(files, input_names(list(files)), strict=True):
        inp = load_input(f, solver=solver, light_splits=light_splits,
                         capture_images=capture_images)
        if inp.gt_mask is not None and (inp.gt_mask & inp.mask).any():
            raise PsinspectError(
                f"{f}: its ground truth marks {int((inp.gt_mask & inp.mask).sum())} defect "
                "pixels; training and calibration take defect-free parts only")
        out.append((name, (inp.normals, inp.mask), scoring_extras(inp)))
        if progress is not None:
            progress(name)
    return out


def load_training_data(
    inputs: Sequence[str | os.PathLike[str]], *, seed: int = 0, val_every: int = 5,
    progress: Callable[[str], None] | None = None, light_splits: bool = False,
    solver: str = "robust", capture_images: bool = False,
) -> TrainingData:
    """Read the training inputs (see the module docstring); capture folders are solved with
    ``solver``; ``light_splits``: also solve them on half light sets (for models that use them,
    as ``detect`` does); ``capture_images``: keep their images and lights (models that learn
    from them)."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise PsinspectError("no training inputs given")
    if len(paths) == 1 and _is_dataset(paths[0]):
        return _load_dataset(paths[0], progress)
    if any(_is_dataset(p) for p in paths):
        raise PsinspectError("give a dataset folder alone, not mixed with other inputs")
    files = _expand_inputs(paths)
    if len(files) < 2:
        # a broken or defective map's own error first: it is what the user must fix
        _load_maps([f for f in files if f.is_file()], None)
        raise PsinspectError(
            f"need at least 2 good parts (one is held out for calibration), got {len(files)}"
        )
    contents = _distinct_contents(files)
    loaded = _load_maps(files, progress, light_splits, solver, capture_images)
    order = np.random.default_rng(int(seed)).permutation(len(loaded))
    n_val = max(1, len(loaded) // max(2, int(val_every)))
    val_idx = set(int(i) for i in order[:n_val])

    def pick(k: int, held: bool) -> list[Any]:
        return [item[k] for i, item in enumerate(loaded) if (i in val_idx) == held]

    return TrainingData(
        pick(1, False), pick(1, True), pick(0, False), pick(0, True),
        {"inputs": [str(Path(f).resolve()) for f in files],
         **surface_record(contents),
         "holdout_rule": f"seeded shuffle ({seed}), first {n_val} of {len(loaded)} held out "
                         "for validation"},
        pick(2, False), pick(2, True),
    )


def gumbel_threshold(scores: Sequence[float], rate: float) -> tuple[float, dict[str, float]]:
    """An image threshold that about ``rate`` of good parts exceed, from a few of their image
    scores: a Gumbel (largest-value) distribution fitted by moments (scale ``sd * sqrt(6) /
    pi``, location ``mean - 0.5772 * scale``), its ``1 - rate`` quantile
    (``loc - scale * log(-log(1 - rate))``, in the operation order of
    :data:`scipy.stats.gumbel_r`'s ``ppf``, whose values it gives bit for bit without the
    3 s import of scipy.stats), and never below the :func:`conformal_rank`-th smallest
    score: for N scores the largest while ``rate`` < 1 / (N + 1) (no good part of the set
    fails), else a lower one that at most ``rate`` of new good parts exceed whatever the
    scores' law (split conformal), so that a larger ``rate`` is not held at the largest score.
    An image score is a maximum over a map's pixels, hence the largest-value law. Returns
    ``(threshold, fit)``."""
    v = np.asarray(scores, np.float64)
    if v.size < 2 or not np.isfinite(v).all():
        raise ValueError("need at least 2 finite scores")
    check_image_fpr(rate)
    scale = max(float(v.std(ddof=1)) * np.sqrt(6.0) / np.pi, 1e-12)
    loc = float(v.mean()) - float(np.euler_gamma) * scale
    q = float(-np.log(-np.log(np.float64(1.0 - rate))) * scale + loc)
    floor = float(np.sort(v)[conformal_rank(v.size, rate) - 1])
    return max(q, floor), {"loc": loc, "scale": scale, "quantile": q}


def conformal_rank(n: int, rate: float) -> int:
    """Rank (1 = smallest) of the score among ``n`` good parts' scores that a new good part
    exceeds with probability at most ``rate`` (exchangeable scores): ``ceil((1 - rate) *
    (n + 1))``, capped at ``n`` (the largest, which a new part exceeds with probability
    1 / (n + 1))."""
    return min(n, math.ceil((1.0 - rate) * (n + 1) - 1e-9))


def floor_words(n: int, rate: float) -> str:
    """How an image threshold rule names the floor of :func:`gumbel_threshold` on ``n``
    scores: "their maximum", or e.g. "their 3rd largest"."""
    k = n - conformal_rank(n, rate) + 1
    if k == 1:
        return "their maximum"
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"their {k}{suffix} largest"


def image_threshold_at_rate(config: dict[str, Any], rate: float, tta: int | None = None
                            ) -> tuple[float, str]:
    """The pass/fail threshold that ``train --image-fpr rate`` would have set, from the clean
    calibration maps' image scores a trained model's ``config`` stores
    (``calibration.val_image_scores`` at its own test-time level; another level's ``tta``,
    the copies asked for, in ``tta_thresholds``), and the rule that says so (``detect
    --image-fpr``). :class:`PsinspectError` where it cannot be told: fewer than 2 stored
    scores (models trained before the levels' scores were stored have their own level's
    only), or thresholds calibrated per light count (one threshold does not tell how such a
    model judges: :func:`image_thresholds_at_rate`)."""
    general, by_count, rule = image_thresholds_at_rate(config, rate, tta)
    if by_count:
        raise PsinspectError("--image-fpr: this model judges each capture by the pass/fail "
                             "threshold of its light count, not by one threshold")
    return general, rule


def image_thresholds_at_rate(config: dict[str, Any], rate: float, tta: int | None = None
                             ) -> tuple[float, dict[int, float], str]:
    """As :func:`image_threshold_at_rate`, for every model: ``(general threshold, {light
    count: its threshold}, rule)``; the second is empty but for a model calibrated per light
    count of its captures (config ``thresholds_by_light_count``), whose counts' thresholds
    are refitted to each count's stored image scores as training fits them (the one score of
    a count with a single map)."""
    check_image_fpr(rate)
    own = (config.get("hyperparameters") or {}).get("tta")
    other = tta is not None and own is not None and tta != own
    scores = ((config.get("tta_thresholds") or {}).get(str(tta)) or {} if other
              else config.get("calibration") or {}).get("val_image_scores")
    if (not isinstance(scores, list) or len(scores) < 2
            or not all(is_number(v) for v in scores)):
        if other:
            raise PsinspectError(f"--image-fpr: the model stores no image scores of clean "
                                 f"calibration maps at {tta} test-time copies (only at its "
                                 f"own {own}); leave out --tta, give --image-threshold, or "
                                 "retrain it")
        raise PsinspectError("--image-fpr: the model stores no image scores of 2 or more clean "
                             "calibration maps to fit; give --image-threshold")
    thr, _ = gumbel_threshold([float(v) for v in scores], rate)
    copies = f" at {tta} test-time copies" if other else ""
    rule = (f"--image-fpr {rate:g}: Gumbel fit to the image scores of the model's "
            f"{len(scores)} clean calibration maps{copies}, {1 - rate:.6g} quantile, at least "
            f"{floor_words(len(scores), rate)}")
    by_count: dict[int, float] = {}
    for key, group in sorted((config.get(LIGHT_COUNT_THRESHOLDS) or {}).items(),
                             key=lambda kv: int(kv[0])):
        own_scores = group.get("val_image_scores") if isinstance(group, dict) else None
        if (not isinstance(own_scores, list) or not own_scores
                or not all(is_number(v) for v in own_scores)):
            raise PsinspectError(f"--image-fpr: the model stores no image scores of its "
                                 f"{key}-light calibration maps to fit; give "
                                 "--image-threshold")
        by_count[int(key)] = (gumbel_threshold([float(v) for v in own_scores], rate)[0]
                              if len(own_scores) > 1 else float(own_scores[0]))
    if by_count:
        rule += ("; a capture of a light count the model was calibrated for: the same fit to "
                 "that count's maps (" + ", ".join(f"{n} lights {t:.4g}"
                                                   for n, t in by_count.items()) + ")")
    return thr, by_count, rule


#: the largest ``--batch-size``: 256 crops of 128 px take about 4 GB in the networks'
#: training step, and a batch is made whole before an interrupt is honoured (an audit: 20000
#: crops ignored SIGTERM for minutes at 10 GB)
MAX_BATCH_SIZE = 256


#: shares of good parts failing at which :func:`operating_points` counts verdicts
OPERATING_RATES = (0.01, 0.02, 0.05, 0.1, 0.2)


def operating_points(config: dict[str, Any], image_scores: Sequence[float],
                     defective: Sequence[bool], tta: int | None = None,
                     rates: Sequence[float] = OPERATING_RATES,
                     light_counts: Sequence[int | None] | None = None) -> list[dict[str, Any]]:
    """Verdicts on maps (their image scores, and per map whether it is defective) at the
    pass/fail threshold ``detect --image-fpr R`` would set for each of ``rates``
    (:func:`image_thresholds_at_rate` from the model's ``config``, at ``tta`` copies; fail
    above it, as detect): per rate ``rate``, ``image_threshold`` and the counts of
    :func:`psinspect.metrics.verdict_counts`. A model calibrated per light count judges a map
    of a count it has thresholds for by that count's (``light_counts``: per map, the light
    count of the capture it was solved from, None unknown), the rest by its general one, as
    detect does; such a model's entries add ``image_thresholds_by_light_count`` (count ->
    threshold). :class:`PsinspectError` where the config cannot tell the thresholds."""
    from psinspect.metrics import verdict_counts

    counts = list(light_counts) if light_counts is not None else [None] * len(image_scores)
    out = []
    for rate in rates:
        thr, by_count, _ = image_thresholds_at_rate(config, rate, tta)
        verdicts = ["fail" if s > by_count.get(c, thr) else "pass"
                    for s, c in zip(image_scores, counts, strict=True)]
        out.append({"rate": rate, "image_threshold": thr,
                    **({"image_thresholds_by_light_count": {str(n): t
                                                            for n, t in by_count.items()}}
                       if by_count else {}),
                    **verdict_counts(verdicts, defective)})
    return out


#: fewest clean maps whose image scores make a pass/fail threshold that is not flagged as
#: unsure (:func:`few_maps_note`): a Gumbel fit to fewer can land far from the rate asked for
MIN_FIT_MAPS = 8


def few_maps_note(calibration: dict[str, Any]) -> str | None:
    """Why a model's pass/fail threshold may be far off (None: no reason known): its
    ``calibration`` (config.json) fitted it to the image scores of fewer than
    :data:`MIN_FIT_MAPS` clean maps."""
    scores = calibration.get("val_image_scores")  # (with a start model's, when pooled)
    n = len(scores) if isinstance(scores, list) else calibration.get("val_maps")
    if "gumbel" not in calibration or not isinstance(n, int) or n >= MIN_FIT_MAPS:
        return None
    return (f"the pass/fail threshold is a fit to the image scores of only {n} good maps: it "
            "may be far from the share of good parts failing asked for, and pass defective "
            "parts or fail good ones (give more good parts: to train on, or, not trained on, to "
            "--calibrate-on)")


def light_count_few_maps_note(num_lights: int, maps: int) -> str:
    """Why the thresholds of a model's ``num_lights``-light captures (fitted to ``maps``
    good maps of that count, fewer than :data:`MIN_FIT_MAPS`) may be far off."""
    fit = ("come from one good map of that count (its peak score; a fit for --image-fpr needs "
           "at least 2)" if maps == 1 else
           f"are a fit to only {maps} good maps of that count: it may be far from the share of "
           "good parts failing asked for")
    return (f"the model's thresholds for {num_lights} lights {fit}: good parts may fail or "
            "defective ones pass (train or --calibrate-on with more good captures under these "
            "lights)")


def check_image_fpr(rate: float) -> None:
    """Refuse a target share of good parts failing outside :data:`IMAGE_FPR_RANGE`: below it
    the fitted quantile runs off to infinity (no part could ever fail), above it half the good
    parts would."""
    lo, hi = IMAGE_FPR_RANGE
    if not lo <= rate <= hi:
        raise PsinspectError(f"--image-fpr must be between {lo:g} and {hi:g}, got {rate}")


def calibrate(
    model: AnomalyModel, val: Sequence[NormalSample], threshold_fpr: float,
    scorers: Sequence[AnomalyModel] | None = None,
    extras: Sequence[dict[str, Any]] | None = None,
    image_fpr: float | None = DEFAULT_IMAGE_FPR,
    names: Sequence[str | None] | None = None,
) -> tuple[float, float, dict[str, Any]]:
    """Per-pixel and image thresholds from clean validation maps (see the module docstring).
    ``scorers``: one model per map of ``val`` that scores it instead of ``model`` (cross
    calibration: each map scored by a model fitted without it). ``extras``: per map, the
    :func:`scoring_extras` that ``detect`` would pass with it (PS confidence, light splits).
    ``image_fpr``: the image threshold by :func:`gumbel_threshold` at that rate (``None``: the
    largest image score; so too with a single map). ``names``: per map, what an error scoring
    it is named by (e.g. a --calibrate-on input's path; None: unnamed)."""
    if not 0.0 < threshold_fpr < 1.0:
        raise PsinspectError(f"--threshold-fpr must be in (0, 1), got {threshold_fpr}")
    pix, imgs = calibration_scores(model, val, scorers, extras, names)
    return thresholds_from_scores(pix, imgs, threshold_fpr, image_fpr)


def calibration_scores(
    model: AnomalyModel, val: Sequence[NormalSample],
    scorers: Sequence[AnomalyModel] | None = None,
    extras: Sequence[dict[str, Any]] | None = None,
    names: Sequence[str | None] | None = None,
) -> tuple[list[np.ndarray], list[float]]:
    """The scores :func:`calibrate` calibrates on (arguments as there): per map of ``val``, its
    object pixels' scores (float32 (N,)) and its image score, each map checked and scored as
    :func:`psinspect.detect.detect_map` scores it (its vectors renormalised once more there: a
    good calibration part scored 3e-5 higher by detect than here failed against its own
    score as the pass/fail threshold)."""
    from psinspect.detect import image_score, score_map

    if extras is not None and len(extras) != len(val):
        raise ValueError(f"{len(extras)} extras for {len(val)} maps")
    pix, imgs = [], []

    def one(i: int) -> Any:
        ex = extras[i] if extras is not None else {}
        try:
            return score_map(model if scorers is None else scorers[i],
                             *validate_normal_map(*val[i]), ex.get("confidence"),
                             light_splits=ex.get("light_splits"),
                             capture_images=ex.get("capture_images"))
        except PsinspectError as err:
            name = names[i] if names is not None else None
            if name is None or str(err).startswith(name):
                raise
            raise PsinspectError(f"{name}: {err}") from None

    # cross calibration scores with one numpy model per map: side by side (the GIL is
    # released); other models (torch) one map at a time
    from psinspect.detect import available_cpus
    from psinspect.interrupts import thread_pool

    workers = min(available_cpus(), len(val)) if scorers is not None else 1
    with thread_pool(workers) as pool:
        results = list(pool.map(one, range(len(val))))
    for i, ((_, m), res) in enumerate(zip(val, results, strict=True)):
        pix.append(res.score[m])
        imgs.append(image_score(res.score, m) * res.image_scale)
        if not (np.isfinite(pix[-1]).all() and np.isfinite(imgs[-1])):
            name = names[i] if names is not None and names[i] is not None else f"map {i + 1}"
            raise PsinspectError(f"{name}: the model scored it NaN or infinite; no thresholds "
                                 "can be calibrated on it")
    return pix, [float(v) for v in imgs]


def thresholds_from_scores(
    pix: Sequence[np.ndarray], imgs: Sequence[float], threshold_fpr: float,
    image_fpr: float | None = DEFAULT_IMAGE_FPR, maps: str = "clean validation maps",
) -> tuple[float, float, dict[str, Any]]:
    """The pixel and image thresholds of :func:`calibrate` from clean maps' scores
    (:func:`calibration_scores`: per map its object pixels' scores and its image score): the
    pixel threshold the ``1 - threshold_fpr`` quantile of all their pixels' scores, the image
    threshold :func:`gumbel_threshold` of their image scores at ``image_fpr`` (their largest
    with a single map, or ``image_fpr`` None). ``maps``: how the rule names the maps."""
    scores = np.concatenate(pix).astype(np.float64)
    thr = float(np.quantile(scores, 1.0 - threshold_fpr, method="higher"))
    img_thr = float(max(imgs))
    rule = f"max image score over {maps}" + (
        " (only one: a fit for --image-fpr needs at least 2)"
        if image_fpr is not None and len(imgs) < 2 else "")
    fit: dict[str, float] = {}
    if image_fpr is not None and len(imgs) >= 2:
        img_thr, fit = gumbel_threshold(imgs, image_fpr)
        rule = (f"Gumbel fit to the image scores of the {maps}, "
                f"{1 - image_fpr:.6g} quantile, at least {floor_words(len(imgs), image_fpr)}")
    stats = {
        "method": "clean validation maps only",
        "target_pixel_fpr": threshold_fpr,
        "val_maps": len(imgs),
        "val_object_pixels": int(scores.size),
        "val_pixel_fpr_at_threshold": float(np.mean(scores >= thr)),  # as detect flags
        "val_score_percentiles": {str(p): float(np.percentile(scores, p))
                                  for p in (50, 90, 99, 99.9)},
        "image_threshold_rule": rule,
        **({"image_fpr": image_fpr, "gumbel": fit} if fit else {}),
        "val_image_scores": [float(v) for v in imgs],
    }
    return thr, img_thr, stats


def thresholds_by_light_count(
    pix: Sequence[np.ndarray], imgs: Sequence[float], counts: Sequence[int | None],
    threshold_fpr: float, image_fpr: float | None = DEFAULT_IMAGE_FPR,
) -> dict[str, dict[str, Any]]:
    """Per number of lights the clean maps were solved from (``counts``, one per map; None:
    unknown, left out), the thresholds of :func:`thresholds_from_scores` on that count's maps
    alone (scores as there), keyed by the count as a string: ``threshold``,
    ``image_threshold``, ``maps`` (how many), ``target_pixel_fpr``, ``image_threshold_rule``
    and ``val_image_scores``. ``{}`` unless the maps have at least two known counts (one
    count's thresholds are the pooled ones)."""
    if len(counts) != len(imgs):
        raise ValueError(f"{len(counts)} light counts for {len(imgs)} maps")
    known = sorted({c for c in counts if c is not None})
    if len(known) < 2:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for n in known:
        idx = [i for i, c in enumerate(counts) if c == n]
        what = (f"{len(idx)} clean maps of {n}-light captures" if len(idx) > 1
                else f"one clean map of {n}-light captures")
        thr, img_thr, stats = thresholds_from_scores(
            [pix[i] for i in idx], [imgs[i] for i in idx], threshold_fpr, image_fpr, what)
        out[str(n)] = {"threshold": thr, "image_threshold": img_thr, "maps": len(idx),
                       "target_pixel_fpr": threshold_fpr,
                       "image_threshold_rule": stats["image_threshold_rule"],
                       "val_image_scores": stats["val_image_scores"]}
    return out


def calibrate_tta_levels(model: AnomalyModel, val: Sequence[NormalSample],
                         threshold_fpr: float,
                         own_calibration: tuple[float, float, Sequence[float]] | None = None,
                         extras: Sequence[dict[str, Any]] | None = None,
                         image_fpr: float | None = DEFAULT_IMAGE_FPR,
                         ) -> dict[str, dict[str, Any]]:
    """Pixel and image thresholds (as :func:`calibrate`) at every test-time augmentation level
    of ``model`` (:attr:`AnomalyModel.tta_levels`; ``{}`` for models without one), keyed by
    the level as a string, so that a model can be scored at another level than it was trained
    with (``load_model_dir(..., tta=N)``) with thresholds that fit that level's scores; with
    each level's clean image scores (``val_image_scores``), which ``detect --tta N --image-fpr
    R`` refits (:func:`image_threshold_at_rate`). ``own_calibration``: the (pixel threshold,
    image threshold, image scores) already calibrated at the model's own level, not computed
    again; ``extras`` and ``image_fpr`` as for :func:`calibrate`. The model's own ``tta`` is
    left as it was."""
    own = getattr(model, "tta", None)
    out: dict[str, dict[str, Any]] = {}
    try:
        for level in model.tta_levels:
            if level == own and own_calibration is not None:
                thr, img_thr, imgs = own_calibration
            else:
                model.tta = level  # type: ignore[attr-defined]
                thr, img_thr, stats = calibrate(model, val, threshold_fpr, extras=extras,
                                                image_fpr=image_fpr)
                imgs = stats["val_image_scores"]
            out[str(level)] = {"threshold": thr, "image_threshold": img_thr,
                               "val_image_scores": [float(v) for v in imgs]}
    finally:
        if own is not None:
            model.tta = own  # type: ignore[attr-defined]
    return out


def start_model_image_scores(model: AnomalyModel, started: dict[str, Any] | None,
                             source: tuple[AnomalyModel, dict[str, Any]] | None = None
                             ) -> dict[str, list[float]]:
    """The clean calibration maps' image scores that the model a fine-tune started from
    stores (``started``: the ``init_from`` record of :func:`train_model`), per test-time
    augmentation level as a string (its own level's from ``calibration``, the others' from
    ``tta_thresholds``), where the fine-tuned ``model`` scores every map exactly as that
    model does at each level: its weights are the start's bit for bit (no epoch beat them)
    and only its :attr:`~psinspect.models.AnomalyModel.training_only` hyperparameters and its
    test-time level differ. ``{}`` otherwise (new weights, another scoring setting, a start
    model no longer there or changed since: its weights' SHA-256 is checked). ``source``:
    that model and its config where already loaded (:func:`init_source`; else loaded here,
    as on ``--resume``)."""
    if not started or not model.training_only:
        return {}
    free = {*model.training_only, *(("tta",) if model.tta_levels else ())}
    try:
        start, config = source if source is not None else init_source(started["model"])
    except (PsinspectError, KeyError, TypeError):
        return {}
    if config.get("weights_sha256") != started.get("weights_sha256"):
        return {}
    ours, theirs = model.hyperparameters(), start.hyperparameters()
    if ({k: v for k, v in ours.items() if k not in free}
            != {k: v for k, v in theirs.items() if k not in free}):
        return {}
    a, b = model.state_arrays(), start.state_arrays()
    if a.keys() != b.keys() or not all(np.array_equal(a[k], b[k]) for k in a):
        return {}
    out: dict[str, list[float]] = {}
    levels = config.get("tta_thresholds") or {}
    own = theirs.get("tta")
    for level, group in [(str(own), config.get("calibration")),
                         *((k, v) for k, v in levels.items() if k != str(own))]:
        scores = group.get("val_image_scores") if isinstance(group, dict) else None
        if isinstance(scores, list) and scores and all(is_number(v) for v in scores):
            out[level] = [float(v) for v in scores]
    return out


def pool_start_scores(stats: dict[str, Any], start_scores: Sequence[float],
                      image_fpr: float) -> float:
    """Refit the pass/fail threshold of a fine-tune's calibration ``stats``
    (:func:`thresholds_from_scores`, changed in place) to its own clean maps' image scores
    together with ``start_scores``, those of the model it started from whose weights it kept
    (:func:`start_model_image_scores`); returns the new threshold. The pixel threshold stays
    fitted to its own maps alone (the start model's pixel scores are not stored)."""
    own = list(stats["val_image_scores"])
    pooled = [*start_scores, *own]
    img_thr, fit = gumbel_threshold(pooled, image_fpr)
    stats.update({
        "image_fpr": image_fpr, "gumbel": fit, "val_image_scores": pooled,
        "start_model_maps": len(start_scores),
        "image_threshold_rule": (
            f"Gumbel fit to the image scores of the {len(own)} clean validation maps and of "
            f"the {len(start_scores)} clean calibration maps of the model started from (its "
            f"weights kept: no epoch beat them), {1 - image_fpr:.6g} quantile, at least "
            f"{floor_words(len(pooled), image_fpr)}")})
    return img_thr


def cross_folds(n: int, min_train: int = 4, folds: int = 4) -> int:
    """Number of folds for cross calibration of ``n`` maps: at least ``folds`` (at most ``n``),
    more where needed so that every fold leaves ``min_train`` maps to fit on."""
    k = min(n, folds)
    while k < n and n - -(-n // k) < min_train:
        k += 1
    return k


def cross_fitted(model_name: str, hyperparameters: dict[str, Any],
                 samples: Sequence[NormalSample], fit_args: dict[str, Any],
                 per_sample: dict[str, Sequence[Any]] | None = None,
                 fitted: AnomalyModel | None = None) -> list[AnomalyModel]:
    """For each of ``samples``, a model of ``model_name`` fitted without it (map ``i`` is held
    out in fold ``i % k``, :func:`cross_folds`); returns one model per sample (shared within a
    fold). ``per_sample``: fit options with one entry per sample (e.g. ``capture_images``),
    passed for the samples each fold fits on. ``fitted``: the model just fitted on all
    ``samples``; where it offers ``held_out`` copies (the variation model) they replace the
    refits."""
    from psinspect.detect import available_cpus
    from psinspect.interrupts import thread_pool

    k = cross_folds(len(samples))

    def fold(f: int) -> AnomalyModel:
        held = [i for i in range(len(samples)) if i % k == f]
        if fitted is not None and hasattr(fitted, "held_out"):
            return fitted.held_out(held)
        sub = create_model(model_name, **hyperparameters)
        own = {key: [v for i, v in enumerate(vals) if i % k != f]
               for key, vals in (per_sample or {}).items()}
        sub.fit([s for i, s in enumerate(samples) if i % k != f], [samples[i] for i in held],
                **fit_args, **own)
        return sub

    # the folds are independent: fitted side by side (numpy and OpenCV release the GIL)
    with thread_pool(min(available_cpus(), k)) as pool:
        subs = list(pool.map(fold, range(k)))
    return [subs[i % k] for i in range(len(samples))]


def _checkpoint_paths(out: Path) -> tuple[Path, Path]:
    """(checkpoint folder, its ``state.json``)."""
    d = out / CHECKPOINT_DIR
    return d, d / "state.json"


def _write_checkpoint(out: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Weights go to a new file named by their hash, then ``state.json`` (atomic) points to it,
    then older weights files are removed: a kill at any moment leaves a consistent pair."""
    d, jpath = _checkpoint_paths(out)
    remove_stale_temporaries(d)
    wname, digest = write_addressed(d, "state", weights_bytes(arrays))
    save_json(jpath, {**meta, "weights_file": wname, "weights_sha256": digest})
    remove_unreferenced(d, "state", wname)


def _read_checkpoint(out: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    d, jpath = _checkpoint_paths(out)
    if not jpath.is_file():
        raise PsinspectError(f"{out}: no checkpoint to resume from ({CHECKPOINT_DIR}/ missing)")
    try:
        meta = read_json(jpath)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PsinspectError(f"{jpath}: unreadable checkpoint ({err})") from None
    wname = meta.get("weights_file") if isinstance(meta, dict) else None
    if not isinstance(wname, str) or Path(wname).name != wname or not wname.endswith(
            ".safetensors"):
        raise PsinspectError(f"{jpath}: incomplete checkpoint (no weights_file)")
    wpath = d / wname
    if not wpath.is_file():
        raise PsinspectError(f"{wpath}: checkpoint weights missing")
    data = wpath.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
        raise PsinspectError(f"{wpath}: checkpoint does not match its checksum")
    return parse_weights(data, str(wpath)), meta


def _setting_ok(key: str, value: Any) -> bool:
    """Whether ``value`` is a training setting ``key`` a run can have (``train_model``'s
    arguments as a checkpoint records them)."""
    from psinspect.checks import is_integer

    if key in ("epochs", "patience"):
        return is_integer(value) and value >= 1
    if key == "batch_size":
        return is_integer(value) and 1 <= value <= MAX_BATCH_SIZE
    if key == "seed":
        return is_integer(value) and value >= 0
    return is_number(value) and 0 < value <= 1  # the two rates


def _check_checkpoint_settings(args: dict[str, Any], state: dict[str, Any], path: Path
                               ) -> None:
    """Refuse (:class:`PsinspectError` naming the checkpoint) settings a training run cannot
    have written: they were reported as options the user gave (``--batch-size must be ...``)
    or, an epoch past the run's maximum, trained "-49 epochs" (an audit)."""
    from psinspect.checks import is_integer

    kinds = {"inputs": list, "model": str, "hyperparameters": dict}
    for key in ("inputs", "model", "hyperparameters", "init_from", "threshold", "solver"):
        if key not in args or not isinstance(args[key], kinds.get(key, object)):
            raise PsinspectError(f"{path}: damaged checkpoint ({key} "
                                 f"{args.get(key, 'missing')!r}); train again without --resume")
    for key in ("epochs", "patience", "batch_size", "seed", "threshold_fpr", "image_fpr"):
        if not _setting_ok(key, args.get(key)):
            raise PsinspectError(f"{path}: damaged checkpoint ({key} {args.get(key)!r}); "
                                 "train again without --resume")
    epoch = state.get("epoch")
    if not (is_integer(epoch) and 0 <= epoch < args["epochs"]):
        raise PsinspectError(f"{path}: damaged checkpoint (epoch {epoch!r} of "
                             f"{args['epochs']}); train again without --resume")


def _check_checkpoint_weights(model: AnomalyModel, arrays: dict[str, np.ndarray], path: Path
                              ) -> None:
    """Refuse (naming the checkpoint) weights that do not fit the network its recorded
    hyperparameters build: the network's (``net.``), best epoch's (``best.``) and averaged
    (``ema.``) weights, each with the network's names and shapes (an edited ``state.json``
    gave the network's shape error without naming the checkpoint; an audit)."""
    own = {k: tuple(v.shape) for k, v in model.state_arrays().items()}
    for prefix in ("net.", "best.", "ema."):
        got = {k[len(prefix):]: tuple(v.shape) for k, v in arrays.items()
               if k.startswith(prefix)}
        if (got or prefix == "net.") and got != own:
            bad = sorted(set(own) ^ set(got)) or sorted(k for k in own if own[k] != got[k])
            raise PsinspectError(f"{path}: damaged checkpoint (its {prefix[:-1]} weights do not "
                                 f"fit the network its settings build: {bad[0]}); train again "
                                 "without --resume")


def checkpoint_progress(out: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(epochs finished, maximum epochs) of the interrupted run checkpointed in ``out``, or
    None when there is no readable checkpoint (``train_model(resume=True)`` says why)."""
    try:
        meta = read_json(_checkpoint_paths(Path(out))[1])
        return int(meta["train_state"]["epoch"]) + 1, int(meta["args"]["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def init_source(init_from: str) -> tuple[AnomalyModel, dict[str, Any]]:
    """The trained model a fine-tune starts from and its config: ``"bundled"`` (the bundled
    default model) or a model folder. Models without network weights are refused."""
    from psinspect.models import fine_tunable_models
    from psinspect.modelstore import load_model_dir

    try:
        bundle = load_model_dir(None if init_from == "bundled" else init_from)
    except PsinspectError as err:  # (an old model: its weights are not this version's)
        raise PsinspectError("--init-from: " + str(err).replace(
            "retrain the model with this version", "start from a model of this version, or "
            "train from random weights (no --init-from)")) from None
    model = bundle.model
    if not model.fine_tunable:
        tunable = fine_tunable_models()
        raise PsinspectError(f"--init-from {init_from}: a {model.name} model has no network "
                             f"weights to start from (fine-tuning applies to "
                             f"{', '.join(tunable)})")
    return model, bundle.config


def _epoch_summary(log: Sequence[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """What the training log says about the run, for ``config.json``: the epoch whose weights
    were kept (1-based, as the CLI counts; the log counts from 0), whether early stopping
    ended it, and the seconds of all its epochs (over resumed sessions too)."""
    if not log:
        return {}
    best = [e for e in log if e.get("best")]
    return {"best_epoch_1based": int(best[-1]["epoch"]) + 1 if best else None,
            "best_val_loss": float(best[-1]["val_loss"]) if best else None,
            "stopped_early": len(log) < epochs,
            "epoch_seconds_total": round(sum(float(e.get("seconds", 0.0)) for e in log), 2)}


def _resolved(path: str | os.PathLike[str]) -> str:
    """An input path made absolute (links resolved), to compare inputs given in other forms."""
    return str(Path(path).resolve())


def calibration_files(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The map files / capture folders of ``calibration_inputs``: capture folders (robust PS),
    folders of them, or normal maps, as for training, but not a dataset folder (give its
    ``.npy`` files). Checked, not loaded."""
    paths = [Path(p) for p in inputs]
    if any(_is_dataset(p) for p in paths):
        raise PsinspectError("--calibrate-on: give normal maps or capture folders of good "
                             "parts, not a dataset folder (a model trained on a dataset is "
                             "calibrated on its val-clean maps; its other maps are turned, "
                             "mirrored or defective)")
    return _expand_inputs(paths)


def _solved_from(map_file: Path) -> Path | None:
    """The capture folder a ``psinspect normals`` output map was solved from (its ``run.json``
    beside it names it), if that folder is still a capture folder; else None."""
    run = normals_run(map_file.parent)
    try:
        folder = Path(run["inputs"]["capture_dir"])  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return folder if is_capture_folder(folder) else None


def _check_not_trained_on(cal_files: Sequence[Path], source: dict[str, Any],
                          started: dict[str, Any] | None = None) -> None:
    """Refuse calibration inputs that are training surfaces: a training input file itself or a
    copy of one (same content), a map of a training dataset's train / val surface, a capture
    folder with a training capture's fingerprint and mask (a copy of it; parts cut from one
    exposure by their masks are different surfaces), or a map ``psinspect normals`` solved
    from such a capture; with ``started`` (a fine-tune's ``init_from`` record) also the
    started-from model's training surfaces (by capture fingerprint, whatever the mask) and
    map files. Thresholds from parts the model has seen are too low for new ones."""
    from psinspect.capture import capture_mask_sha256

    if not cal_files:
        return
    started = started or {}
    own = {str(Path(f).resolve()) for f in source.get("inputs", [])}
    # (fingerprint, mask SHA-256 or None); a dataset made before masks were recorded: "any"
    keys = {(capture_fingerprint(f), capture_mask_sha256(f)) for f in map(Path, source.get(
        "inputs", [])) if is_capture_folder(f)}
    ds_items: dict[str, str] = {}
    if "dataset" in source:
        from psinspect.dataset import load_manifest

        manifest, folder = load_manifest(source["dataset"])
        ds_items = {str((folder / it["file"]).resolve()): it["surface"]
                    for it in manifest["items"] if it["surface"] in source["surfaces"]}
        keys |= {(sf["fingerprint"], sf.get("mask_sha256", "any"))
                 for n, sf in manifest.get("surfaces", {}).items()
                 if n in source["surfaces"] and isinstance(sf, dict) and sf.get("fingerprint")}
    keys |= {(fp, "any") for fp in started.get("surface_fingerprints", [])}
    train_masks = {m for _, m in keys}  # (the mask SHA-256s of the training captures)
    train_files = [*(Path(f) for f in own if Path(f).is_file()), *map(Path, ds_items)]
    shas: set[str] | None = None  # of the training map files, made when first needed

    def same_capture(folder: Path) -> bool:
        fp = capture_fingerprint(folder)
        return bool(keys & {(fp, capture_mask_sha256(folder)), (fp, "any")})

    for f in cal_files:
        seen = str(f.resolve()) in own or str(f.resolve()) in ds_items
        if not seen and is_capture_folder(f):
            seen = same_capture(f)
        elif not seen and f.is_file():
            if shas is None:
                shas = {file_sha256(t) for t in train_files} | set(started.get("map_sha256",
                                                                               []))
            seen = file_sha256(f) in shas  # a copy of a training map
            src = _solved_from(f)  # a map `psinspect normals` solved from a training capture
            seen = seen or (src is not None and same_capture(src))
        if seen:
            raise PsinspectError(
                f"{f}: --calibrate-on takes parts NOT trained on, and this one is among the "
                "training surfaces" + (" (of this run or of the model it starts from)"
                                       if started else ""))
        # one part captured again (through other lights: other images) has, where its mask
        # was made once, the very mask of its training capture
        cap = f if is_capture_folder(f) else _solved_from(f) if f.is_file() else None
        mask_sha = capture_mask_sha256(cap) if cap is not None else None
        if mask_sha is not None and mask_sha in train_masks:
            warnings.warn(f"{f}: has the same mask as a training capture, byte for byte: if it "
                          "is that part captured again (e.g. through other lights), "
                          "--calibrate-on gets a surface trained on, and thresholds too low "
                          "for new parts", UserWarning, stacklevel=3)


def _on_cpu_threads(train: Callable[..., Any]) -> Callable[..., Any]:
    """``train`` run with torch on its ``threads`` keyword's CPU thread count (None: as it
    is), training and calibration alike (scores computed on other thread counts differ in
    their last bits, so a resumed run would calibrate other thresholds), and the caller's
    count restored afterwards (``psinspect run`` detects after it trains)."""
    @functools.wraps(train)
    def run(*args: Any, threads: int | None = None, **kwargs: Any) -> Any:
        from psinspect.models._torch import cpu_threads

        with cpu_threads(threads):
            return train(*args, threads=threads, **kwargs)
    return run


@_on_cpu_threads
def train_model(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    calibration_inputs: Sequence[str | os.PathLike[str]] | None = None,
    model_name: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    init_from: str | None = None,
    epochs: int = 30,
    batch_size: int = 8,
    seed: int = 0,
    patience: int = 6,
    threshold_fpr: float = DEFAULT_THRESHOLD_FPR,
    image_fpr: float = DEFAULT_IMAGE_FPR,
    threshold: float | None = None,
    solver: str | None = None,
    force: bool = False,
    resume: bool = False,
    threads: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[str], None] | None = None,
    on_fit_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train a model on clean maps, calibrate its thresholds, write ``out`` (a model dir).

    ``model_name``: default ``geo-seg``, or with ``init_from`` the started-from model's.
    ``init_from``: fine-tune: start from the weights of a trained model, ``"bundled"`` (the
    bundled default model) or a model folder (:func:`init_source`), instead of random ones;
    its hyperparameters are taken, ``hyperparameters`` override them (those that shape the
    network or its input features, the model's ``fine_tune_fixed``, are refused), and the
    learning rate is its own divided by
    :data:`FINE_TUNE_LR_DIVISOR` unless ``hyperparameters`` set ``lr``. The weights kept are
    never worse on the validation maps than the ones started from (see
    :meth:`psinspect.models._torch.TorchAnomalyModel.fit`); the config records the model
    started from (``training.init_from``) and counts its training surfaces among the model's
    (so that evaluate still finds test surfaces it was trained on, and ``calibration_inputs``
    refuses them).
    ``calibration_inputs``: clean maps or captures of parts NOT in ``inputs``, added to the
    validation maps for threshold calibration only (not for early stopping; see the module
    docstring). ``image_fpr``: the target share of good parts failing, which sets the
    pass/fail threshold (:func:`gumbel_threshold`). ``solver``: the PS solver for
    capture-folder inputs
    (default: the one the given normals were solved with where recorded, a dataset's or a
    ``psinspect normals`` output's, else the model's
    :attr:`~psinspect.models.AnomalyModel.ps_solver`), used for the calibration captures too
    and recorded in the config for ``detect``. Returns the written ``config.json`` contents.
    ``on_epoch`` gets each epoch's log entry, plus ``epochs`` (the run's maximum; with
    ``resume`` the checkpoint's). ``progress`` gets the name of each input (or dataset map)
    once it is read, then what is being done; ``on_fit_start`` is called once every input
    is read and checked, as fitting begins.
    With ``resume``, model, hyperparameters and training settings come from the checkpoint in
    ``out`` (other arguments are ignored; the CLI refuses them when given); ``inputs`` must
    name the same inputs as the checkpoint's.
    """
    out = Path(out)
    # paths made absolute (links kept: a map's ground truth and name are beside the link): a
    # resumed run reads them again, maybe from another folder
    args = {"inputs": [os.path.abspath(p) for p in inputs],
            "model": model_name or DEFAULT_MODEL,
            "hyperparameters": hyperparameters or {}, "init_from": None, "epochs": int(epochs),
            "batch_size": int(batch_size), "seed": int(seed), "patience": int(patience),
            "threshold_fpr": float(threshold_fpr), "image_fpr": float(image_fpr),
            "threshold": threshold, "solver": solver,
            "calibration_inputs": [os.path.abspath(p) for p in calibration_inputs or []]}
    resume_state = resumed_inputs = None
    if resume:
        arrays, meta = _read_checkpoint(out)
        if not isinstance(meta.get("args"), dict) or not isinstance(meta.get("train_state"), dict):
            raise PsinspectError(f"{_checkpoint_paths(out)[1]}: incomplete checkpoint (no args / "
                                 "train_state); train again without --resume")
        args = meta["args"]
        if [_resolved(p) for p in inputs] != [_resolved(p) for p in args.get("inputs", [])]:
            raise PsinspectError(f"{out}: --resume: the interrupted run trained on "
                                 f"{', '.join(map(str, args.get('inputs', [])))}; give the same "
                                 "inputs (or train again without --resume)")
        _check_checkpoint_settings(args, meta["train_state"], _checkpoint_paths(out)[1])
        resume_state = (arrays, meta["train_state"])
        resumed_inputs = meta.get("inputs_sha256")
    else:
        if not force and (out / CHECKPOINT_DIR / "state.json").is_file():
            raise PsinspectError(f"{out}: holds an interrupted training run: add --resume to "
                                 "go on with it (or --force to start over, which discards it)")
        init_dir = ([] if init_from is None else [default_model_dir()]
                    if init_from == "bundled" else [init_from])
        check_output_dir(out, force, [*inputs, *(calibration_inputs or []), *init_dir],
                         model_folder=True, part_folders=True)
        if out.is_dir() and any(out.iterdir()) and not (
                (out / CHECKPOINT_DIR).is_dir() or is_model_folder(out)):
            raise PsinspectError(f"{out}: --force replaces a psinspect model folder, and this "
                                 "folder is not one (no model config.json or checkpoint): "
                                 "choose another output folder")
    if not _setting_ok("epochs", args["epochs"]):
        raise PsinspectError(f"--epochs must be >= 1, got {args['epochs']}")
    if not _setting_ok("batch_size", args["batch_size"]):
        raise PsinspectError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, got "
                             f"{args['batch_size']}")
    if args["threshold"] is not None and not (
        np.isfinite(args["threshold"]) and args["threshold"] >= 0
    ):
        raise PsinspectError(f"--threshold must be a finite number >= 0, got {args['threshold']}")
    if not 0.0 < args["threshold_fpr"] < 1.0:  # checked before training, not after it
        raise PsinspectError(f"--threshold-fpr must be in (0, 1), got {args['threshold_fpr']}")
    check_image_fpr(args.get("image_fpr", DEFAULT_IMAGE_FPR))
    init_arrays = None
    start_source = None  # (the model started from, as loaded: its stored scores are reused)
    if init_from is not None and resume_state is None:
        init_model, init_config = start_source = init_source(init_from)
        if model_name is not None and model_name != init_model.name:
            raise PsinspectError(f"--model {model_name}: --init-from {init_from} is a "
                                 f"{init_model.name} model, and fine-tuning keeps its model")
        hp = init_model.hyperparameters()
        if "lr" in hp and "lr" not in args["hyperparameters"]:
            hp["lr"] = hp["lr"] / FINE_TUNE_LR_DIVISOR
        changed = sorted(k for k in init_model.fine_tune_fixed
                         if k in args["hyperparameters"] and args["hyperparameters"][k] != hp[k])
        if changed:
            raise PsinspectError(
                f"--hp {', '.join(changed)}: fine-tuning keeps the network and the features it "
                f"was trained on ({init_from}: " + ", ".join(f"{k} {hp[k]}" for k in changed)
                + "); train from random weights to change them")
        args["model"] = init_model.name
        args["hyperparameters"] = {**hp, **args["hyperparameters"]}
        init_arrays = init_model.state_arrays()
        init_training = init_config.get("training") or {}
        args["init_from"] = {
            "model": init_from if init_from == "bundled" else _resolved(init_from),
            "weights_sha256": init_config.get("weights_sha256"),
            "psinspect_version": init_config.get("psinspect_version"),
            "lr": args["hyperparameters"].get("lr"),
            # its training surfaces are the new model's too (evaluate's leak check)
            "surface_fingerprints": list(init_training.get("surface_fingerprints") or []),
            "map_sha256": list(init_training.get("map_sha256") or []),
            # the sizes its parts were imaged at (the new model's range covers them)
            PART_SIZE_KEY: init_training.get(PART_SIZE_KEY),
        }
    model = create_model(args["model"], **args["hyperparameters"])
    if init_arrays is not None:
        try:  # before the slow part: hyperparameters that change the network
            model.load_state_arrays(init_arrays)
        except PsinspectError as err:
            raise PsinspectError(f"--init-from {init_from}: its weights do not fit the network "
                                 f"of the hyperparameters given ({err})") from None
    if resume_state is not None and model.trainable:
        _check_checkpoint_weights(model, resume_state[0], _checkpoint_paths(out)[1])
    if model.known_part and any(_is_dataset(Path(p)) for p in args["inputs"]):
        raise PsinspectError(f"--model {args['model']} learns one part type in one pose from "
                             "its captures (or their normal maps); a dataset's maps are turned, "
                             "mirrored and solved from light subsets: give the capture folders")
    if args.get("solver") and len(args["inputs"]) == 1 and _is_dataset(Path(args["inputs"][0])):
        raise PsinspectError("--solver applies to capture folders; a dataset's maps were solved "
                             "when it was built (psinspect dataset --solver)")
    cal_files = calibration_files(args.get("calibration_inputs", []))  # fail before loading
    # one solver for everything: the one the given maps were solved with, where recorded, so
    # that capture folders (training and --calibrate-on) are solved alike and the model
    # records it for detect
    given = [Path(p) for p in args["inputs"]]
    expanded = given if any(_is_dataset(p) for p in given) else _expand_inputs(given)
    if model.min_training_parts > 2 and len(expanded) < model.min_training_parts:
        raise PsinspectError(
            f"--model {args['model']} needs at least {model.min_training_parts} good parts to "
            f"train on, got {len(expanded)} (parts given only to --calibrate-on do not count)")
    captures = [f for f in expanded if f.is_dir() and is_capture_folder(f)]
    recorded = _recorded_solver([*expanded, *cal_files])
    if recorded is not None and args.get("solver") and args["solver"] != recorded:
        raise PsinspectError(f"--solver {args['solver']}: the normals given were solved with "
                             f"{recorded!r}, which the model takes for capture folders too")
    solver = check_solver(recorded or args.get("solver") or model.ps_solver)
    # a known part's thresholds hold for the lights its captures were taken under: recorded
    # (their counts, and the capture folders' light sets), so detect can warn about a capture
    # under another number of lights or other lights
    # (a map that `psinspect normals` solved counts with the lights its run.json records)
    files = [*expanded, *cal_files]
    lights_of = {f: _capture_lights(f) for f in files
                 if model.known_part and f.is_dir() and is_capture_folder(f)}
    per_file = [len(lights_of[f]) if f in lights_of else solved_light_count(normals_run_of(f))
                for f in files] if model.known_part else []
    counts = sorted({n for n in per_file if n is not None})
    light_sets = distinct_light_sets(list(lights_of.values()))
    capture_lights = {"capture_lights": counts} if counts else {}
    if light_sets:
        capture_lights["capture_light_sets"] = light_sets
    # captures of several light counts score differently (fewer lights, noisier normals): one
    # pass/fail threshold for all would be fitted to the higher-scoring ones and let more
    # through on the others, so each count gets thresholds of its own (detect judges a
    # capture with those of its count); models with test-time augmentation levels have none
    # (their levels' thresholds are calibrated on all maps together)
    by_lights = len(counts) > 1 and not model.tta_levels
    splits = bool(getattr(model, "uses_light_splits", False))
    images = bool(getattr(model, "learns_from_images", False))
    train_maps = [f for f in expanded if not f.is_dir()]
    if images and captures and train_maps:
        raise PsinspectError(
            f"{train_maps[0]}: a normal map among capture folders: --model {args['model']} "
            "learns the captures' images too, which a map has none of (it would learn and "
            "compare normals only, and solve the captures as the map was solved): give capture "
            "folders only, or normal maps only")
    if len(counts) > 1 and not by_lights:
        warnings.warn(
            f"captures of {' and '.join(map(str, counts))} lights (training and "
            "--calibrate-on): one pass/fail threshold for all of them is fitted to the "
            "higher-scoring ones and lets more through on the others (a defective part may "
            "pass); if the model is to judge captures under both, train one model per light "
            "set", UserWarning, stacklevel=2)
    for n in counts if by_lights else []:  # (training and --calibrate-on parts together)
        if per_file.count(n) < MIN_FIT_MAPS:
            warnings.warn(light_count_few_maps_note(n, per_file.count(n)), UserWarning,
                          stacklevel=2)
    cal_maps_only = [f for f in cal_files if not f.is_dir()]
    if images and cal_maps_only and captures:
        warnings.warn(
            f"{cal_maps_only[0]}: a normal map given to --calibrate-on: the model learns the "
            "training captures' images too and compares a capture's images with them, a normal "
            "map's normals only, so its calibration scores run lower than a capture's and the "
            "thresholds may fail good captures (give the capture folders)", UserWarning,
            stacklevel=2)
    data = load_training_data(args["inputs"], seed=args["seed"], progress=progress,
                              light_splits=splits, solver=solver, capture_images=images)
    _check_not_trained_on(cal_files, data.source, args.get("init_from"))
    # (a part given twice is refused here, before training, as for the training inputs)
    cal_record = surface_record(_distinct_contents(cal_files))
    cal_loaded = _load_maps(cal_files, progress, splits, solver, images)
    cal_names, cal_maps = [c[0] for c in cal_loaded], [c[1] for c in cal_loaded]
    cal_extras = [c[2] for c in cal_loaded]

    # what the inputs are, not only where: a resumed run must train on the same surfaces (a
    # dataset rebuilt at the same path with other held-out surfaces would otherwise have
    # trained on a test surface that the finished model's record does not name) and the same
    # maps (one rebuilt with another solver or light subsets records the same surfaces)
    # (a dataset's source holds its map files' digest; map files and captures are recorded
    # by content already; the solved normals are not hashed: they differ in the last bits
    # with the thread count, which a resume may change)
    inputs_sha = hashlib.sha256(json.dumps([data.source, cal_record], sort_keys=True,
                                           default=str).encode()).hexdigest()
    if resume_state is not None and resumed_inputs != inputs_sha:
        raise PsinspectError(
            f"{out}: --resume: " + ("the checkpoint does not record what its inputs held "
                                    "(an earlier psinspect)" if resumed_inputs is None else
                                    "the inputs are not what the interrupted run trained on "
                                    "(changed since, at the same paths: other surfaces, "
                                    "captures or maps)") + "; train again without --resume")

    def checkpoint(entry: dict[str, Any], arrays: dict[str, np.ndarray],
                   state: dict[str, Any]) -> None:
        _write_checkpoint(out, arrays, {"args": args, "train_state": state,
                                        "inputs_sha256": inputs_sha})
        if on_epoch is not None:
            on_epoch({**entry, "epochs": args["epochs"]})

    if resume_state is None and out.is_dir():  # (everything checked: an old one goes)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    if on_fit_start is not None:
        on_fit_start()
    if progress is not None:
        progress("training")
    t0 = time.perf_counter()
    fit_args = {"epochs": args["epochs"], "batch_size": args["batch_size"], "seed": args["seed"],
                "patience": args["patience"], "threads": threads}
    scorers = None
    if getattr(model, "cross_calibration", False):
        # fit on every good part; calibrate on each part scored by a model fitted without it
        data.train, data.val = data.train + data.val, data.train + data.val
        data.train_names = data.train_names + data.val_names
        data.train_extras = data.val_extras = data.train_extras + data.val_extras
        per_sample = ({"capture_images": [ex.get("capture_images") for ex in data.train_extras]}
                      if images and data.train_extras else {})
        log = model.fit(data.train, [], **fit_args, **per_sample, names=data.train_names)
        if progress is not None:
            progress("cross-fitting for calibration")
        scorers = cross_fitted(args["model"], args["hyperparameters"], data.train, fit_args,
                               per_sample, fitted=model)
        data.source["holdout_rule"] = (
            f"cross calibration: all {len(data.train)} maps train the model; each is scored "
            f"for the thresholds by a model fitted without it "
            f"({cross_folds(len(data.train))} folds)")
    else:
        log = model.fit(data.train, data.val, on_epoch=checkpoint if model.trainable else None,
                        resume=resume_state, init=init_arrays, **fit_args)
    train_seconds = time.perf_counter() - t0
    if progress is not None:
        progress("calibrating thresholds on clean validation maps")
    cal = [*data.val, *cal_maps]
    # scored as detect scores them (PS confidence, light splits); a dataset's maps have none
    extras = ([*data.val_extras, *cal_extras] if data.val_extras
              else [{}] * len(data.val) + cal_extras)
    if scorers is not None and cal_maps:
        scorers = [*scorers, *[model] * len(cal_maps)]  # not fitted on: the full model
    val_names = data.val_names if len(data.val_names) == len(data.val) else [None] * len(
        data.val)
    pix, imgs = calibration_scores(model, cal, scorers, extras,
                                   names=[*val_names, *map(str, cal_files)])
    image_fpr = args.get("image_fpr", DEFAULT_IMAGE_FPR)
    thr, img_thr, stats = thresholds_from_scores(pix, imgs, args["threshold_fpr"], image_fpr)
    # a fine-tune that kept the start model's weights scores as it does: that model's clean
    # calibration scores (168 maps for the bundled one) stay valid and join the pass/fail fit
    # (alone, a few new good maps put it far off: 4 maps set 8.3 where the bundled model's
    # 168 set 4.9)
    start_scores = (start_model_image_scores(model, args.get("init_from"), start_source)
                    if scorers is None else {})
    own_level = str(getattr(model, "tta", None))
    if own_level in start_scores and image_fpr is not None:
        img_thr = pool_start_scores(stats, start_scores[own_level], image_fpr)
    # the thresholds of each light count's maps alone (by_lights: several counts)
    light_thresholds = thresholds_by_light_count(
        pix, imgs, [ex.get("num_lights") for ex in extras], args["threshold_fpr"],
        args.get("image_fpr", DEFAULT_IMAGE_FPR)) if by_lights else {}
    if scorers is not None:
        stats["method"] = "clean maps, each scored by a model fitted without it"
    if (note := few_maps_note(stats)) is not None:
        warnings.warn(note, UserWarning, stacklevel=2)
    if len(cal) < 2 and "start_model_maps" not in stats:
        warnings.warn("the pass/fail threshold is the image score of the one clean validation "
                      "map: --image-fpr needs the scores of at least 2 (give more good parts, "
                      "or --calibrate-on good parts not trained on)", UserWarning, stacklevel=2)
    if cal_maps:
        stats["method"] = (stats["method"].removesuffix(" only") + f" + {len(cal_maps)} "
                           "clean maps of parts not trained on (--calibrate-on)")
        stats["image_threshold_rule"] = stats["image_threshold_rule"].replace(
            "clean validation maps", f"clean validation maps and the {len(cal_maps)} maps "
            "given to --calibrate-on", 1)
        stats["calibration_maps"] = cal_names
    if "start_model_maps" in stats:
        stats["method"] += (f" + the {stats['start_model_maps']} clean calibration maps' image "
                            "scores of the model started from (pass/fail threshold only)")
    if progress is not None and model.tta_levels:
        progress("calibrating thresholds for each test-time augmentation level")
    tta_thresholds = calibrate_tta_levels(model, cal, args["threshold_fpr"],
                                          None if scorers is not None
                                          else (thr, img_thr, stats["val_image_scores"]),
                                          extras, args.get("image_fpr", DEFAULT_IMAGE_FPR))
    if "start_model_maps" in stats:  # the other levels' pass/fail fits pooled alike
        for level, group in tta_thresholds.items():
            if level != own_level and level in start_scores:
                pooled = [*start_scores[level], *group["val_image_scores"]]
                group["image_threshold"] = gumbel_threshold(pooled, image_fpr)[0]
                group["val_image_scores"] = pooled
    if args["threshold"] is not None:
        stats["calibrated_threshold"] = thr
        stats["override"] = "threshold set by --threshold (at every test-time augmentation level)"
        thr = float(args["threshold"])
        for level in tta_thresholds.values():  # (detect --tta N reads its level's)
            level["threshold"] = thr
        for group in light_thresholds.values():  # (and detect a light count's)
            group["calibrated_threshold"] = group["threshold"]
            group["threshold"] = thr
    from psinspect import __version__

    # training-free models and cross-calibrated ones (fitted in one go) have no epochs: their
    # config records no epoch settings
    by_epochs = model.trainable and scorers is None
    sizes = [part_size_px(m) for _, m in data.train]
    # a known part's template learned the turns its good parts were put down at (detect warns
    # about a part turned beyond them)
    turns = [float(e["angle_deg"]) for e in log if isinstance(e, dict)
             and is_number(e.get("angle_deg"))] if model.known_part else []
    training = {
        **data.source, "train_maps": len(data.train), "val_maps": len(data.val),
        # how large its parts were imaged (detect warns about parts far outside this range)
        **({PART_SIZE_KEY: {"min": round(min(sizes), 1), "median": round(
            float(np.median(sizes)), 1), "max": round(max(sizes), 1)}} if sizes else {}),
        **({TURNS_KEY: {"min": round(min(turns), 2), "max": round(max(turns), 2)}}
           if turns else {}),
        **({"epochs": args["epochs"], "batch_size": args["batch_size"],
            "patience": args["patience"]} if by_epochs else {}),
        "epochs_run": len(log) if by_epochs else 0, "seed": args["seed"],
        "train_seconds": round(train_seconds, 2), "resumed": bool(resume),
        **_epoch_summary(log if by_epochs else [], args["epochs"]),
        **({"calibration_inputs": args["calibration_inputs"],
            # their surfaces, as the training ones: evaluate says which test surfaces they are
            "calibration_surfaces": cal_record}
           if args.get("calibration_inputs") else {}),
        "psinspect_version": __version__,
    }
    started = args.get("init_from")
    if started:
        for key in ("surface_fingerprints", "map_sha256"):
            both = set(training.get(key) or []) | set(started[key])
            if both:
                training[key] = sorted(both)
        # the weights learned the start model's parts too: the size range covers both (the
        # median, which detect's suggested scale aims at, stays that of the parts given)
        own, before = training.get(PART_SIZE_KEY), started.get(PART_SIZE_KEY)
        if own and isinstance(before, dict) and all(is_number(before.get(k))
                                                    for k in ("min", "max")):
            training[PART_SIZE_KEY] = {**own, "min": min(own["min"], before["min"]),
                                       "max": max(own["max"], before["max"])}
        kept_start = not any(e.get("best") for e in log)
        training["init_from"] = {
            **{k: v for k, v in started.items() if k not in ("surface_fingerprints",
                                                               "map_sha256")},
            "initial_val_loss": log[0].get("initial_val_loss") if log else None,
            # no epoch beat the weights started from: they were kept (recalibrated)
            "kept_start_weights": kept_start}
    save_model_dir(out, model, threshold=thr, image_threshold=img_thr, calibration=stats,
                   training=training, log=log, tta_thresholds=tta_thresholds,
                   input_handling={"ps_solver": solver, **capture_lights},
                   light_count_thresholds=light_thresholds)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return read_json(out / "config.json")
