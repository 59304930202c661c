"""Contracts of the changes since 3447cc4 that no test pinned down (found by mutation testing,
session 38): the pooled pass/fail fit of a fine-tune that kept its start model's weights (which
start models and stored scores count, every level, the warnings and the words train and run
print), the output folders refused inside an input folder of parts, the thread pool and the
record of written outputs, the opaque-alpha and x/z-exchange hints, and detect's output names.
Each test fails on a named one-line mutant of the source."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _robust_util import error_lines, good_sphere_maps, run_cli

from psinspect.errors import PsinspectError
from psinspect.models import create_model
from psinspect.models.geo_seg import GeoSeg
from psinspect.modelstore import load_model_dir
from psinspect.train import (
    floor_words,
    pool_start_scores,
    start_model_image_scores,
    train_model,
)

HP = {"channels": [4, 8], "patch": 32, "steps_per_epoch": 2, "val_patches": 1}

#: a value other than the start model's for every hyperparameter that shapes only training
#: (those of TorchAnomalyModel and of GeoSeg): none of them changes how its weights score
TRAINING_ONLY = {"patch": 64, "steps_per_epoch": 3, "lr": 0.01, "val_patches": 2, "ema": 0.9,
                 "max_defects": 2, "p_clean": 0.5, "p_generic": 0.5, "p_transplant": 0.5,
                 "min_angle": 3.0, "dice_weight": 0.5, "focal_gamma": 1.0, "tilt_deg": 10.0,
                 "noise": 0.1, "bend": 0.3, "bend_px": [4.0, 20.0], "region_balance": 10.0,
                 "scale_jitter": 0.2, "p_align": 0.5, "severity_weights": [1.0, 2.0, 3.0]}


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return good_sphere_maps(tmp_path_factory.mktemp("maps"), 48)


@pytest.fixture(scope="module")
def base(maps: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "m"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_model(maps, out, model_name="geo-seg", hyperparameters=HP, epochs=1, seed=0)
    return out


@pytest.fixture(scope="module")
def pooled(maps: list[Path], base: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[dict[str, Any], list[str]]:
    """A fine-tune that keeps the start's weights (a learning rate that wrecks the network),
    with the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = train_model(maps, tmp_path_factory.mktemp("ft") / "ft", init_from=str(base),
                          epochs=1, hyperparameters={"lr": 50.0})
    assert cfg["training"]["init_from"]["kept_start_weights"] is True
    assert cfg["calibration"]["start_model_maps"] >= 1
    return cfg, [str(w.message) for w in caught]


def _with_base_weights(base: Path, **hp: Any) -> Any:
    model = create_model("geo-seg", **{**_config(base)["hyperparameters"], **hp})
    model.load_state_arrays(load_model_dir(base).model.state_arrays())
    return model


def _started(base: Path) -> dict[str, Any]:
    return {"model": str(base), "weights_sha256": _config(base)["weights_sha256"]}


# --- train.py: start_model_image_scores ------------------------------------------------------

def test_every_training_only_setting_changed_still_pools(base: Path) -> None:
    """The start's weights with every training-only hyperparameter changed score as the start
    does: its stored scores are given, at every level. Kills dropping `"patch"` from
    TorchAnomalyModel.training_only, or `"severity_weights"` from GeoSeg's."""
    got = start_model_image_scores(_with_base_weights(base, **TRAINING_ONLY), _started(base))
    start = _config(base)
    assert got[str(start["hyperparameters"]["tta"])] == start["calibration"]["val_image_scores"]
    assert set(got) == set(start["tta_thresholds"])


def test_a_model_that_declares_no_training_only_settings_pools_nothing(
        base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pooling is opt-in: a model listing no training-only hyperparameters never gets a start
    model's scores, even with the same settings and weights. Kills dropping `or not
    model.training_only` from the first guard."""
    model = _with_base_weights(base)
    assert start_model_image_scores(model, _started(base))  # (declared: pooled)
    monkeypatch.setattr(GeoSeg, "training_only", ())
    assert start_model_image_scores(model, _started(base)) == {}


def test_an_init_from_record_without_its_model_pools_nothing(base: Path) -> None:
    """A record that names no model (an older or damaged config) is no start: ``{}``, not a
    KeyError. Kills `except (PsinspectError, KeyError, TypeError)` -> `(PsinspectError,)`."""
    model = _with_base_weights(base)
    assert start_model_image_scores(model, {"weights_sha256": _started(base)[
        "weights_sha256"]}) == {}


def test_the_own_levels_scores_come_from_calibration_and_bad_lists_are_skipped(
        base: Path, tmp_path: Path) -> None:
    """The start model's own level's scores are its ``calibration``'s (not its
    ``tta_thresholds`` entry), and a level whose stored scores are empty or not numbers is left
    out. Kills dropping `if k != str(own)` and reducing the score check to
    `isinstance(scores, list)`."""
    folder = Path(shutil.copytree(base, tmp_path / "start"))
    cfg = _config(folder)
    own = str(cfg["hyperparameters"]["tta"])
    others = [k for k in cfg["tta_thresholds"] if k != own]
    assert len(others) >= 2
    cfg["tta_thresholds"][own]["val_image_scores"] = [123.0]
    cfg["tta_thresholds"][others[0]]["val_image_scores"] = []
    cfg["tta_thresholds"][others[1]]["val_image_scores"] = ["x"]
    (folder / "config.json").write_text(json.dumps(cfg))
    got = start_model_image_scores(_with_base_weights(folder), _started(folder))
    assert got[own] == cfg["calibration"]["val_image_scores"]
    assert others[0] not in got and others[1] not in got


# --- train.py: pool_start_scores and train_model ---------------------------------------------

def test_the_pooled_rules_floor_counts_the_pooled_scores() -> None:
    """The rule's floor is that of all the scores fitted (4 new and 168 of the start: their
    8th largest at 5 %), not of the new maps alone (their maximum). Kills
    `floor_words(len(pooled), ...)` -> `floor_words(len(own), ...)`."""
    stats = {"val_image_scores": [1.0, 2.0, 3.0, 4.0], "val_maps": 4}
    pool_start_scores(stats, list(np.linspace(0.5, 3.5, 168)), 0.05)
    assert stats["image_threshold_rule"].endswith(f"at least {floor_words(172, 0.05)}")
    assert floor_words(172, 0.05) != floor_words(4, 0.05)


def test_a_pooled_fit_of_one_new_map_gives_no_one_map_warning(
        pooled: tuple[dict[str, Any], list[str]]) -> None:
    """One new validation map pooled with the start model's scores: the pass/fail threshold is
    a fit to more than one score, so the "image score of the one clean validation map" warning
    is not given. Kills `len(cal) < 2 and "start_model_maps" not in stats` -> `len(cal) < 2`."""
    cfg, messages = pooled
    assert cfg["calibration"]["val_maps"] == 1
    assert not [m for m in messages if "the one clean validation map" in m], messages


def test_the_own_levels_tta_entry_is_pooled_once(pooled: tuple[dict[str, Any], list[str]]
                                                ) -> None:
    """The model's own level in ``tta_thresholds`` holds the same pooled scores and pass/fail
    threshold as its calibration (the start's scores once, not twice). Kills dropping
    `level != own_level` from the loop that pools the other levels."""
    cfg, _ = pooled
    own = cfg["tta_thresholds"][str(cfg["hyperparameters"]["tta"])]
    assert own["val_image_scores"] == cfg["calibration"]["val_image_scores"]
    assert own["image_threshold"] == cfg["image_threshold"]
    n = cfg["calibration"]["start_model_maps"] + cfg["calibration"]["val_maps"]
    assert all(len(g["val_image_scores"]) == n for g in cfg["tta_thresholds"].values())


# --- cli/train.py -----------------------------------------------------------------------------

def test_train_names_the_floor_of_the_pooled_scores(tmp_path: Path, monkeypatch, capsys) -> None:
    """Where the fit lies below the floor, train names the floor of all the scores fitted (4
    new and 168 of the start at 50 %: their 86th largest), not of the new maps alone. Kills
    dropping `fitted += start`."""
    import psinspect.train

    (tmp_path / "m.npy").write_bytes(b"")
    config = {"model": "geo-seg", "threshold": 1.0, "image_threshold": 5.0,
              "training": {"epochs_run": 1, "epochs": 1, "train_seconds": 1.0, "train_maps": 3,
                           "val_maps": 4, "best_epoch_1based": None,
                           "init_from": {"model": "s", "initial_val_loss": 0.1}},
              "calibration": {"val_maps": 4, "start_model_maps": 168, "image_fpr": 0.5,
                              "gumbel": {"quantile": 4.0}}}
    monkeypatch.setattr(psinspect.train, "train_model", lambda *a, **k: config)
    code, out, err = run_cli(["train", tmp_path / "m.npy", "-o", tmp_path / "o"], monkeypatch,
                             capsys)
    assert code == 0, err
    assert ("pass/fail threshold set at the 86th largest image score of the 4 good maps, and "
            "the 168 of the model started from, whose weights were kept") in out, out


# --- pipeline.py, cli/run.py ------------------------------------------------------------------

def _kept_config() -> dict[str, Any]:
    return {"model": "geo-seg", "threshold": 1.0, "image_threshold": 2.0,
            "calibration": {"gumbel": {"quantile": 1.0}, "val_maps": 4,
                            "val_image_scores": [1.0] * 172, "start_model_maps": 168},
            "training": {"epochs_run": 1, "init_from": {"kept_start_weights": True}}}


def test_the_model_stage_line_names_the_pooled_maps(tmp_path: Path, monkeypatch) -> None:
    """The run's model stage closes with what a kept fine-tune's thresholds were fitted to,
    the bundled model's own calibration maps counted. Kills `kept_start_words(start_maps(
    config))` -> `kept_start_words(None)` and dropping the stage line's `kept` text."""
    from test_run_stages import _Lines, _Stages

    import psinspect.train
    from psinspect.pipeline import make_config, run_pipeline

    stages = _Stages(monkeypatch)
    stages.config = _kept_config()
    monkeypatch.setattr(psinspect.train, "train_model", lambda *a, **k: _kept_config())
    lines = _Lines()
    run_pipeline(tmp_path / "w", make_config("quick"), lines)
    line = next(s for s in lines.closed if "image threshold" in s)
    assert line.endswith("; no epoch beat the bundled model on the validation maps: its "
                         "weights kept, the pixel threshold fitted here, the pass/fail "
                         "threshold to these good maps and its own 168 calibration maps"), line


def test_run_says_the_pooled_maps_on_stdout(tmp_path: Path, monkeypatch, capsys) -> None:
    """``psinspect run``'s result line for a kept fine-tune counts the bundled model's maps
    pooled into the pass/fail fit. Kills `kept_start_words(info.get('pass_fail_start_maps'))`
    -> `kept_start_words(None)` in cli/run.py."""
    import psinspect.pipeline

    info = {"model": "geo-seg", "fine_tuned_from": "bundled", "fine_tune_kept_start": True,
            "pass_fail_start_maps": 168, "metrics": {"pixel_auroc": 0.9},
            "verdicts": {"defective_failed": 1, "defective_passed": 0, "clean_failed": 0,
                         "clean_passed": 1}, "image_threshold": 2.0, "timings_s": {"total": 1.0}}
    monkeypatch.setattr(psinspect.pipeline, "run_pipeline", lambda *a, **k: info)
    monkeypatch.setattr(psinspect.pipeline, "relocate_paths", lambda *a, **k: None)
    code, out, err = run_cli(["run", "--quick", "-o", tmp_path / "r"], monkeypatch, capsys)
    assert code == 0, err
    assert out.startswith(
        "The geo-seg model fine-tuned in this run from the bundled one (no epoch beat the "
        "bundled model on the validation maps: its weights kept, the pixel threshold fitted "
        "here, the pass/fail threshold to these good maps and its own 168 calibration maps): "
        "pixel_auroc 0.900"), out


def test_run_refuses_an_output_inside_its_data_folder(tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    """``run --data caps -o caps/sub`` is refused before any work, as detect's is. Kills
    dropping `part_folders=True` from cli/run.py's check_output_dir."""
    data = tmp_path / "caps"
    data.mkdir()
    code, _, err = run_cli(["run", "--quick", "--data", data, "-o", data / "sub"],
                           monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {data / 'sub'}: lies inside {data.resolve()}, an input folder of this "
        "command, which it would then hold beside its parts: choose an output folder outside "
        "it"], err
    assert not (data / "sub").exists()


# --- fileio.py: check_output_dir's part folders, input_names ----------------------------------

def test_outputs_inside_folders_that_are_no_folders_of_parts_are_allowed(tmp_path: Path
                                                                           ) -> None:
    """Inside a ``psinspect normals`` output, a dataset (manifest.json) or a model folder
    (config.json) an output is allowed: their sub-folders are not read. Kills dropping each
    of `is_normals_folder(folder)`, the manifest.json and the config.json clauses of
    _holds_parts."""
    from psinspect.fileio import check_output_dir

    normals = tmp_path / "normals"
    normals.mkdir()
    np.save(normals / "normals.npy", np.zeros((2, 2, 3), np.float32))
    (normals / "run.json").write_text(json.dumps({"command": "normals"}))
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "manifest.json").write_text("{}")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for folder in (normals, dataset, model):
        check_output_dir(folder / "sub", False, [folder], part_folders=True)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(PsinspectError, match="lies inside"):
        check_output_dir(plain / "sub", False, [plain], part_folders=True)


def test_an_output_inside_nested_input_folders_names_the_nearest(tmp_path: Path) -> None:
    """With ``maps`` and ``maps/a`` both given, ``-o maps/a/b`` is said to lie inside
    ``maps/a``, the folder that would hold it. Kills `inside[-1]` -> `inside[0]`."""
    from psinspect.fileio import check_output_dir

    inner = tmp_path / "maps" / "a"
    inner.mkdir(parents=True)
    with pytest.raises(PsinspectError, match=f"lies inside {inner.resolve()}, an input"):
        check_output_dir(inner / "b", False, [tmp_path / "maps", inner], part_folders=True)


def test_names_follow_the_absolute_paths_whatever_form_they_are_given_in(
        tmp_path: Path, monkeypatch) -> None:
    """``a/x.npy`` given relative and ``a_x.npy`` given absolute (beside ``b/x.npy``) get the
    names they get when all are absolute (``a/x.npy`` sorts first: ``a_x``; ``a_x.npy``:
    ``a_x_2``). Kills sorting by the paths as given (`str(paths[i])`) instead of
    `os.path.abspath`."""
    from psinspect.fileio import input_names

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.npy").write_bytes(b"")
    (tmp_path / "a_x.npy").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    want = ["a_x_2", "a_x", "b_x"]
    assert input_names([tmp_path / "a_x.npy", tmp_path / "a" / "x.npy",
                        tmp_path / "b" / "x.npy"]) == want
    assert input_names([tmp_path / "a_x.npy", Path("a") / "x.npy", Path("b") / "x.npy"]) == want


# --- interrupts.py ----------------------------------------------------------------------------

def test_a_thread_pool_of_no_workers_has_one() -> None:
    """``thread_pool(0)`` (no maps to share out) still runs its calls. Kills dropping
    `max(1, ...)`."""
    from psinspect.interrupts import thread_pool

    with thread_pool(0) as pool:
        assert list(pool.map(lambda v: v * 2, [1, 2])) == [2, 4]


def test_written_gives_a_copy() -> None:
    """The list ``written()`` returns is the caller's: changing it changes no record (the
    console script slices it against the count it took before the command). Kills returning
    the state's own list."""
    from psinspect.interrupts import written

    got = written()
    got.append("not written")
    assert "not written" not in written()


# --- normalmap.py -----------------------------------------------------------------------------

def test_the_alpha_hint_counts_only_the_objects_black_pixels() -> None:
    """A map whose alpha channel marks its object rightly (black background at alpha 0) but
    whose object is noise is refused without the alpha hint: the black background is not the
    object. Kills counting black pixels over the whole image (dropping `judged &`)."""
    from psinspect.normalmap import decode_png

    img = np.zeros((60, 60, 4), np.uint8)
    rng = np.random.default_rng(0)
    img[20:40, 20:40, :3] = rng.integers(1, 255, (20, 20, 3))
    img[20:40, 20:40, 3] = 255
    with pytest.raises(PsinspectError, match=r"R = x, G = y, B = z\)$"):
        decode_png(img)


def _columns(share_back: float, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Normals (size, size, 3): the left ``share_back`` of the columns (-0.6, 0, -0.8) (away
    from the camera, x < 0), the rest (0.6, 0, 0.8)."""
    n = np.empty((size, size, 3), np.float32)
    cut = round(share_back * size)
    n[:, :cut] = (-0.6, 0.0, -0.8)
    n[:, cut:] = (0.6, 0.0, 0.8)
    return n, np.ones((size, size), bool)


def test_the_x_z_hint_needs_most_of_the_object_to_face_the_camera_once_exchanged() -> None:
    """60 % of a map faces away, the other 40 % has x > 0: exchanging x and z would turn only
    those 40 % toward the camera, so no channel-order hint. Kills comparing with `n_back`
    instead of `n_obj`."""
    from psinspect.normalmap import validate_normal_map

    with pytest.raises(PsinspectError, match=r"z toward the camera$"):
        validate_normal_map(*_columns(0.6))

