"""Model directories: save and load trained anomaly models without executing code.

A model directory (``MODEL_DIR``) holds

- ``model-<hash>.safetensors``: the learned arrays (:meth:`AnomalyModel.state_arrays`),
  safetensors format (no pickle, nothing executable; empty for training-free models), named by
  the first 16 hex digits of its SHA-256 so that a retrained model never overwrites the
  weights the current ``config.json`` names;
- ``config.json``: ``format`` ("psinspect-model"), ``format_version``, ``psinspect_version``,
  ``model`` (registry name), ``hyperparameters``, ``input`` (how inputs are handled: native
  resolution, tiling, the PS solver; for known-part models trained on captures their light
  counts ``capture_lights`` and light sets ``capture_light_sets``),
  ``threshold`` (per-pixel decision threshold and how it was calibrated),
  ``image_threshold`` (pass/fail decision), ``weights_file`` and ``weights_sha256`` (the
  weights file's name and SHA-256), for models with test-time augmentation levels
  ``tta_thresholds`` (``{"<level>": {"threshold", "image_threshold", "val_image_scores"}}``,
  calibrated on the same clean maps at each level; their image scores, which ``detect --tta
  N --image-fpr R`` refits, since 2026-12-02), for known-part models whose good captures were
  taken under several numbers of lights ``thresholds_by_light_count`` (``{"<lights>":
  {"threshold", "image_threshold", "maps", ...}}``: the thresholds calibrated on that light
  count's clean maps alone, which detect uses for a capture of that count;
  :func:`for_light_count`), free-form
  ``training`` facts and ``log_file``;
- ``train_log-<hash>.json`` (the ``log_file`` of config.json): one entry per epoch, named by
  its content like the weights, so a retraining killed before its config was written leaves
  the previous model with its own log.

Loading checks the format and version, verifies the weights' SHA-256 before parsing them, and
rebuilds the model through the registry (:func:`psinspect.models.create_model`). Anything wrong
(missing or tampered files, another version's directory, unknown model) is a
:class:`PsinspectError` naming the file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from psinspect import __version__
from psinspect.checks import is_number
from psinspect.errors import PsinspectError
from psinspect.fileio import (
    atomic_write_bytes,
    json_bytes,
    read_json,
    remove_stale_temporaries,
    save_json,
)
from psinspect.models import AnomalyModel, create_model

MODEL_FORMAT = "psinspect-model"
#: bump when the directory layout or config meaning changes incompatibly
FORMAT_VERSION = 1
#: weights files are ``WEIGHTS_STEM-<first 16 hex digits of their SHA-256>.safetensors``
WEIGHTS_STEM = "model"
CONFIG_FILE = "config.json"
#: where train keeps an interrupted run's state (``train --resume``), inside the model folder
CHECKPOINT_DIR = ".checkpoint"
#: training logs are ``LOG_STEM-<first 16 hex digits of their SHA-256>.json``, named by config.json
LOG_STEM = "train_log"

#: config.json's per-light-count thresholds of a known-part model (:func:`for_light_count`)
LIGHT_COUNT_THRESHOLDS = "thresholds_by_light_count"
#: config.json ``training``'s record of how many pixels across its training parts were
#: (:func:`psinspect.normalmap.part_size_px`: ``{"min", "median", "max"}``)
PART_SIZE_KEY = "part_size_px"
#: config.json ``training``'s record of the turns a known-part model's training parts were
#: registered at, relative to its template (degrees, counter-clockwise: ``{"min", "max"}``)
TURNS_KEY = "turns_deg"

#: how every model sees its input (documented in config.json)
DEFAULT_INPUT_HANDLING: dict[str, Any] = {
    "normals": "float32 (H, W, 3) unit vectors, DiLiGenT camera frame (x right, y up, z to camera)",
    "mask": "non-zero vectors of the map",
    "resolution": "native (never resized); the learned models score the object whole (its "
                  "bounding box plus a margin); others score maps larger than 'tile' in "
                  "overlapping tiles",
    "tile": 768,
    "tile_overlap": 64,
    # the PS solver of capture folders (models made before it was recorded: robust)
    "ps_solver": "robust",
}


@dataclass
class ModelBundle:
    """A loaded model directory: the model plus its decision thresholds and config."""

    model: AnomalyModel
    threshold: float
    image_threshold: float
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def input_handling(self) -> dict[str, Any]:
        return {**DEFAULT_INPUT_HANDLING, **self.config.get("input", {})}


def _version_key(version: str) -> tuple[str, ...]:
    """(major, minor) of a version string; models are compatible within one minor release."""
    return tuple(version.split("+")[0].split(".")[:2])


def default_model_dir() -> Path:
    """The model bundled inside the package (``psinspect/data/default_model``)."""
    return Path(str(resources.files("psinspect") / "data" / "default_model"))


def weights_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise named arrays with safetensors (contiguous copies; no pickle)."""
    from safetensors.numpy import save

    clean = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    return save(clean, metadata=metadata)


def parse_weights(data: bytes, name: str) -> dict[str, np.ndarray]:
    """Inverse of :func:`weights_bytes`; malformed data is a :class:`PsinspectError`."""
    from safetensors.numpy import load

    try:
        return dict(load(data))
    except Exception as err:  # safetensors raises its own error types for malformed files
        raise PsinspectError(f"{name}: not a readable safetensors file ({err})") from None


def write_addressed(folder: Path, stem: str, data: bytes,
                    suffix: str = ".safetensors") -> tuple[str, str]:
    """Write ``data`` atomically to ``folder/STEM-<sha256[:16]>SUFFIX``; returns (file name,
    full SHA-256). A content-addressed name never replaces the file that the folder's current
    pointer (``config.json``, a checkpoint's ``state.json``) names."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"{stem}-{digest[:16]}{suffix}"
    atomic_write_bytes(folder / name, data)
    return name, digest


def remove_unreferenced(folder: Path, stem: str, keep: str,
                        suffix: str = ".safetensors") -> None:
    """After the pointer was switched to ``keep``: remove the older ``STEM-*SUFFIX`` (and a
    legacy ``STEMSUFFIX``) of ``folder``."""
    for old in [*folder.glob(f"{stem}-*{suffix}"), folder / f"{stem}{suffix}"]:
        if old.name != keep:
            old.unlink(missing_ok=True)


def save_model_dir(
    out: str | os.PathLike[str],
    model: AnomalyModel,
    *,
    threshold: float,
    image_threshold: float,
    calibration: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    log: list[dict[str, Any]] | None = None,
    input_handling: dict[str, Any] | None = None,
    tta_thresholds: dict[str, dict[str, float]] | None = None,
    light_count_thresholds: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write ``model-<hash>.safetensors``, ``train_log-<hash>.json`` and ``config.json`` into
    ``out``.

    Each file is written atomically; the weights and the log are named by their content and
    ``config.json``, written last, names both (and the weights' SHA-256), so a directory whose
    config exists is complete, and a kill at any moment of a retraining into the same folder
    leaves the previous model with its own log. Older weights and logs are removed after the
    config was switched. ``light_count_thresholds``: config ``thresholds_by_light_count``
    (see the module docstring; left out when None or empty).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = weights_bytes(model.state_arrays(), {"model": model.name})
    remove_stale_temporaries(out)  # the files below are rewritten in place
    wname, digest = write_addressed(out, WEIGHTS_STEM, data)
    lname, _ = write_addressed(out, LOG_STEM, json_bytes(log or []), suffix=".json")
    config = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "psinspect_version": __version__,
        "model": model.name,
        "hyperparameters": model.hyperparameters(),
        "input": {**DEFAULT_INPUT_HANDLING, **(input_handling or {})},
        "threshold": float(threshold),
        "image_threshold": float(image_threshold),
        **({"tta_thresholds": tta_thresholds} if tta_thresholds else {}),
        **({LIGHT_COUNT_THRESHOLDS: light_count_thresholds} if light_count_thresholds else {}),
        "calibration": calibration or {},
        "training": training or {},
        "weights_file": wname,
        "weights_sha256": digest,
        "log_file": lname,
    }
    save_json(out / CONFIG_FILE, config)
    remove_unreferenced(out, WEIGHTS_STEM, wname)
    remove_unreferenced(out, LOG_STEM, lname, suffix=".json")
    return out


def _named_file(model_dir: Path, config: dict[str, Any], key: str) -> Path:
    """The file that ``config[key]`` names, checked to be a plain file name inside the folder
    (a config never points outside its model directory)."""
    name = config[key]
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise PsinspectError(f"{model_dir / CONFIG_FILE}: {key} must be a plain file name")
    return model_dir / name


def read_train_log(model_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The training log (one entry per epoch) that ``model_dir/config.json`` names; ``[]`` for
    a model directory written before logs were named by config.json."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if "log_file" not in config:
        return []
    path = _named_file(model_dir, config, "log_file")
    try:
        log = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PsinspectError(f"{path}: not a readable training log ({err})") from None
    if not isinstance(log, list):
        raise PsinspectError(f"{path}: a training log is a list of epochs")
    return log


def weights_path(model_dir: str | os.PathLike[str],
                 config: dict[str, Any] | None = None) -> Path:
    """The weights file that ``model_dir/config.json`` (or the already read ``config``) names,
    checked to be a plain file name inside the folder."""
    model_dir = Path(model_dir)
    return _named_file(model_dir, read_config(model_dir) if config is None else config,
                       "weights_file")


def is_model_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a psinspect model config (of any version; not checked
    further): what ``train --force`` may replace."""
    try:
        config = read_json(Path(folder) / CONFIG_FILE)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == MODEL_FORMAT


def is_training_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a model (:func:`is_model_folder`) or an interrupted training
    run that ``train --resume`` finishes into it (``CHECKPOINT_DIR/state.json``)."""
    return is_model_folder(folder) or (Path(folder) / CHECKPOINT_DIR / "state.json").is_file()


def read_config(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``config.json`` of a model directory (format, version, required keys)."""
    model_dir = Path(model_dir)
    if model_dir.is_file():
        raise PsinspectError(f"{model_dir}: is a file; the model is the folder that holds "
                             f"{CONFIG_FILE} and the weights")
    if not model_dir.is_dir():
        raise PsinspectError(f"{model_dir}: model directory not found")
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        from psinspect.capture import is_capture_folder

        what = (" but a dataset folder" if (model_dir / "manifest.json").is_file()
                else " but a capture folder" if is_capture_folder(model_dir) else "")
        raise PsinspectError(f"{path}: missing (not a psinspect model directory{what})")
    try:
        config = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PsinspectError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise PsinspectError(f"{path}: not a psinspect model config (format != {MODEL_FORMAT!r})")
    fv = config.get("format_version")
    pv = str(config.get("psinspect_version", "unknown"))
    if fv != FORMAT_VERSION or _version_key(pv) != _version_key(__version__):
        raise PsinspectError(
            f"{model_dir}: model made by psinspect {pv} (format {fv}); this is psinspect "
            f"{__version__} (format {FORMAT_VERSION}): retrain the model with this version"
        )
    for key, kind in (
        ("model", str), ("hyperparameters", dict), ("threshold", (int, float)),
        ("image_threshold", (int, float)), ("weights_file", str), ("weights_sha256", str),
    ):
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise PsinspectError(f"{path}: missing or invalid {key!r}")
    for key in ("threshold", "image_threshold"):  # scores are >= 0, as --threshold must be
        if not (np.isfinite(config[key]) and config[key] >= 0):
            raise PsinspectError(f"{path}: {key} is not a finite number >= 0")
    levels = config.get("tta_thresholds", {})
    if not isinstance(levels, dict) or not all(
            isinstance(v, dict) and all(
                isinstance(v.get(k), (int, float)) and not isinstance(v[k], bool)
                and np.isfinite(v[k]) and v[k] >= 0
                for k in ("threshold", "image_threshold"))
            for v in levels.values()):
        raise PsinspectError(f"{path}: invalid 'tta_thresholds' (want {{level: {{threshold, "
                             "image_threshold}} with finite numbers >= 0)")
    by_count = config.get(LIGHT_COUNT_THRESHOLDS, {})
    if not isinstance(by_count, dict) or not all(
            isinstance(k, str) and k.isdigit() and int(k) > 0 and isinstance(v, dict)
            and all(isinstance(v.get(t), (int, float)) and not isinstance(v[t], bool)
                    and np.isfinite(v[t]) and v[t] >= 0
                    for t in ("threshold", "image_threshold"))
            and type(v.get("maps")) is int and v["maps"] > 0
            for k, v in by_count.items()):
        raise PsinspectError(f"{path}: invalid {LIGHT_COUNT_THRESHOLDS!r} (want {{light count: "
                             "{threshold, image_threshold, maps}} with finite numbers >= 0 "
                             "and a number of maps >= 1)")
    given = config.get("input", {})
    if not isinstance(given, dict):
        raise PsinspectError(f"{path}: invalid 'input' (want an object of settings, got "
                             f"{type(given).__name__})")
    counts = given.get("capture_lights", [])
    if not (isinstance(counts, list) and all(type(c) is int and c > 0 for c in counts)):
        raise PsinspectError(f"{path}: invalid input 'capture_lights' (want a list of light "
                             f"counts, got {counts!r})")
    sets = given.get("capture_light_sets", [])
    if not (isinstance(sets, list) and all(
            isinstance(lights, list) and len(lights) >= 3 and all(
                isinstance(v, list) and len(v) == 3 and all(is_number(x) for x in v)
                and v[2] > 0 for v in lights) for lights in sets)):
        raise PsinspectError(f"{path}: invalid input 'capture_light_sets' (want a list of light "
                             "sets, each a list of at least 3 [x, y, z] directions with z > 0)")
    from psinspect.stereo import SOLVERS

    solver = given.get("ps_solver", DEFAULT_INPUT_HANDLING["ps_solver"])
    if solver not in SOLVERS:
        raise PsinspectError(f"{path}: invalid input 'ps_solver' (want one of "
                             f"{', '.join(SOLVERS)}, got {solver!r})")
    tile, overlap = given.get("tile", 768), given.get("tile_overlap", 64)
    if not (type(tile) is int and type(overlap) is int and 0 <= 2 * overlap < tile):
        raise PsinspectError(f"{path}: invalid input 'tile' / 'tile_overlap' (want integers "
                             f"with 0 <= 2 * tile_overlap < tile, got {tile!r}, {overlap!r})")
    return config


def model_from_config(model_dir: str | os.PathLike[str], config: dict[str, Any]
                      ) -> AnomalyModel:
    """The model of a folder whose ``config`` was read: weights checked against
    ``weights_sha256`` before they are parsed (safetensors), the model rebuilt through the
    registry. Only :func:`load_model_dir` (which checks format and version first) should feed
    it a config, except tools that knowingly read an older folder's weights."""
    model_dir = Path(model_dir)
    wpath = weights_path(model_dir, config)
    try:
        data = wpath.read_bytes()
    except FileNotFoundError:
        raise PsinspectError(f"{wpath}: missing weights file") from None
    except OSError as err:
        raise PsinspectError(f"{wpath}: cannot read ({err})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != config["weights_sha256"]:
        raise PsinspectError(
            f"{wpath}: SHA-256 mismatch with config.json (file truncated, corrupted or "
            "tampered with)"
        )
    arrays = parse_weights(data, str(wpath))
    try:
        model = create_model(config["model"], **config["hyperparameters"])
    except (TypeError, PsinspectError) as err:
        raise PsinspectError(f"{model_dir / CONFIG_FILE}: {err}") from None
    try:
        model.load_state_arrays(arrays)
    except (KeyError, ValueError, RuntimeError, PsinspectError) as err:
        raise PsinspectError(f"{wpath}: weights do not fit model {config['model']!r} ({err})") \
            from None
    return model


def check_tta(model: AnomalyModel, tta: int) -> None:
    """Refuse (:class:`PsinspectError`) a test-time augmentation level ``model`` cannot score
    at (:attr:`AnomalyModel.tta_levels`)."""
    if not model.tta_levels:
        raise PsinspectError(f"--tta: model {model.name!r} has no test-time augmentation")
    if tta not in model.tta_levels:
        raise PsinspectError(f"--tta must be one of {', '.join(map(str, model.tta_levels))} "
                             f"for model {model.name!r}, got {tta}")


def with_tta(bundle: ModelBundle, tta: int | None) -> ModelBundle:
    """``bundle`` scoring at test-time augmentation level ``tta`` (None or its own level: the
    bundle itself; else a new bundle with a copy of the model) with the thresholds calibrated
    for that level (``tta_thresholds`` of config.json). A level the model has no thresholds
    for is a :class:`PsinspectError`, never a silent use of thresholds made for other
    scores."""
    if tta is None or tta == getattr(bundle.model, "tta", None):
        return bundle
    check_tta(bundle.model, tta)
    levels = bundle.config.get("tta_thresholds", {})
    if str(tta) not in levels:
        raise PsinspectError(
            f"{bundle.path}: no thresholds calibrated for --tta {tta} (this model has them "
            f"for {', '.join(sorted(levels)) or 'its own level only'}); retrain it to "
            "calibrate every level")
    model = copy.deepcopy(bundle.model)
    model.tta = tta  # type: ignore[attr-defined]
    return ModelBundle(model=model, threshold=float(levels[str(tta)]["threshold"]),
                       image_threshold=float(levels[str(tta)]["image_threshold"]),
                       config=bundle.config, path=bundle.path)


def light_count_thresholds(bundle: ModelBundle) -> dict[int, dict[str, Any]]:
    """The thresholds ``bundle``'s model was calibrated with per number of lights of its
    captures (config ``thresholds_by_light_count``, keyed by the count), ``{}`` for a model
    without them (one set of thresholds for every input) or one scored at another test-time
    augmentation level than its own (they were calibrated at that level)."""
    by_count = bundle.config.get(LIGHT_COUNT_THRESHOLDS) or {}
    own = (bundle.config.get("hyperparameters") or {}).get("tta")
    if by_count and own is not None and getattr(bundle.model, "tta", own) != own:
        return {}
    return {int(k): v for k, v in by_count.items()}


def for_light_count(bundle: ModelBundle, num_lights: int | None
                    ) -> tuple[ModelBundle, int | None]:
    """``bundle`` with the pixel and pass/fail thresholds calibrated for inputs solved from
    ``num_lights`` lights (:func:`light_count_thresholds`), and that count; ``bundle`` itself
    and None where the model has none for that count or ``num_lights`` is None (unknown: a
    plain normal map): its general thresholds, calibrated on all its clean maps together."""
    group = light_count_thresholds(bundle).get(num_lights) if num_lights is not None else None
    if group is None:
        return bundle, None
    return replace(bundle, threshold=float(group["threshold"]),
                   image_threshold=float(group["image_threshold"])), num_lights


def check_own_tta_thresholds(model_dir: Path, config: dict[str, Any],
                             model: AnomalyModel) -> None:
    """Refuse (:class:`PsinspectError`) a config whose ``threshold`` / ``image_threshold`` are
    not the ones its ``tta_thresholds`` hold for the level ``model`` scores at (its
    hyperparameter ``tta``): training writes the same pair in both, so a difference means a
    hand-edited ``tta`` (judging with thresholds made for other scores: a good part failing)
    or hand-edited thresholds; which one was meant cannot be told. A config without
    ``tta_thresholds`` (or a model without levels) has only its own pair: nothing to check."""
    levels = config.get("tta_thresholds") or {}
    if not model.tta_levels or not levels:
        return
    own = getattr(model, "tta", None)
    path = model_dir / CONFIG_FILE
    entry = levels.get(str(own))
    if entry is None:
        raise PsinspectError(f"{path}: tta_thresholds has no thresholds for the level the model "
                             f"scores at (hyperparameters 'tta' {own}; it has "
                             f"{', '.join(sorted(levels, key=str))})")
    given = (float(config["threshold"]), float(config["image_threshold"]))
    calibrated = (float(entry["threshold"]), float(entry["image_threshold"]))
    if given != calibrated:
        raise PsinspectError(
            f"{path}: threshold / image_threshold {given[0]:.6g} / {given[1]:.6g} are not "
            f"tta_thresholds['{own}'] {calibrated[0]:.6g} / {calibrated[1]:.6g}, those of the "
            f"level the model scores at (hyperparameters 'tta' {own}): edit them together "
            "(or keep the trained 'tta' and use --tta)")


def load_model_dir(model_dir: str | os.PathLike[str] | None = None,
                   tta: int | None = None) -> ModelBundle:
    """Load a model directory (default: the bundled model); never executes code from it.
    Its thresholds must be those calibrated for the level its model scores at
    (:func:`check_own_tta_thresholds`). ``tta``: score at that test-time augmentation level
    instead of the model's own (:func:`with_tta`)."""
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    config = read_config(model_dir)
    model = model_from_config(model_dir, config)
    check_own_tta_thresholds(model_dir, config, model)
    bundle = ModelBundle(model=model, threshold=float(config["threshold"]),
                         image_threshold=float(config["image_threshold"]),
                         config=config, path=model_dir)
    return with_tta(bundle, tta)
