"""A fine-tune that kept the weights it started from (no epoch beat them) scores as that model
does, so that model's stored clean calibration scores join its pass/fail fit: a few new good
maps alone put the threshold far off (``psinspect run --quick``: 4 maps set 8.3 where the
bundled model's 168 set 4.9, and 1 of 8 defective maps failed instead of 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _robust_util import good_sphere_maps, sphere_normals

from psinspect.models import create_model
from psinspect.models.geo_seg import GeoSeg
from psinspect.models.unet_ae import UNetAE
from psinspect.train import (
    gumbel_threshold,
    pool_start_scores,
    start_model_image_scores,
    train_model,
)

pytestmark = pytest.mark.filterwarnings("ignore:the pass/fail threshold")

HP = {"channels": [4, 8], "patch": 32, "steps_per_epoch": 2, "val_patches": 1}
#: a value other than the default for every hyperparameter a model calls training-only
OTHER = {"patch": 64, "steps_per_epoch": 3, "lr": 0.01, "val_patches": 2, "ema": 0.9,
         "max_defects": 2, "p_clean": 0.5, "p_generic": 0.5, "p_transplant": 0.5,
         "min_angle": 3.0, "dice_weight": 0.5, "focal_gamma": 1.0, "tilt_deg": 10.0,
         "noise": 0.1, "bend": 0.3, "bend_px": [4.0, 20.0], "region_balance": 10.0,
         "scale_jitter": 0.2, "p_align": 0.5, "severity_weights": [1.0, 2.0, 3.0]}


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return good_sphere_maps(tmp_path_factory.mktemp("pool"), 48)


@pytest.fixture(scope="module")
def base(maps: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "m"
    train_model(maps, out, model_name="geo-seg", hyperparameters=HP, epochs=1, seed=0)
    return out


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize("cls", [GeoSeg, UNetAE])
def test_training_only_settings_leave_the_scores_as_they_are(cls: type) -> None:
    """Every hyperparameter a model lists as training-only is one, and changing it (to a value
    other than the default) leaves the scores of the same weights bit for bit the same."""
    names = set(cls().hyperparameters())
    assert set(cls.training_only) <= names
    assert not set(cls.training_only) & set(cls.fine_tune_fixed)
    n, m = sphere_normals(40, 0.4)
    ref = create_model(cls.name, channels=[4, 8])
    want = ref.score(n, m).score
    for key in cls.training_only:
        other = create_model(cls.name, channels=[4, 8], **{key: OTHER[key]})
        assert other.hyperparameters()[key] != ref.hyperparameters()[key], key
        other.load_state_arrays(ref.state_arrays())
        assert np.array_equal(other.score(n, m).score, want), key


def test_kept_weights_pool_the_start_models_calibration_scores(
        maps: list[Path], base: Path, tmp_path: Path) -> None:
    """A learning rate that wrecks the network: no epoch beats the start, its weights are
    kept, and the pass/fail threshold (at every test-time level) is the fit to the start
    model's clean image scores and the new ones together; the pixel threshold stays the new
    maps' own."""
    start = _config(base)
    cfg = train_model(maps, tmp_path / "ft", init_from=str(base), epochs=1,
                      hyperparameters={"lr": 50.0, "noise": 0.1})
    assert cfg["training"]["init_from"]["kept_start_weights"] is True
    cal = cfg["calibration"]
    before = start["calibration"]["val_image_scores"]
    assert cal["start_model_maps"] == len(before) >= 1
    own = cal["val_image_scores"][len(before):]
    assert cal["val_image_scores"][:len(before)] == before and len(own) == cal["val_maps"]
    assert cfg["image_threshold"] == gumbel_threshold([*before, *own], 0.01)[0]
    assert "and of the 1 clean calibration maps of the model started from" in cal[
        "image_threshold_rule"]
    assert "model started from" in cal["method"]
    # the same weights score the same maps alike: the start's scores are on this scale
    for level, group in cfg["tta_thresholds"].items():
        theirs = start["tta_thresholds"][level]["val_image_scores"]
        assert group["val_image_scores"][:len(theirs)] == theirs
        assert group["image_threshold"] == gumbel_threshold(group["val_image_scores"],
                                                            0.01)[0]
    # the pixel threshold: the new validation maps' alone, as without a start model
    assert cfg["threshold"] == cfg["tta_thresholds"][str(cfg["hyperparameters"]["tta"])][
        "threshold"]


def test_new_weights_or_scoring_settings_pool_nothing(maps: list[Path], base: Path,
                                                     tmp_path: Path) -> None:
    cfg = train_model(maps, tmp_path / "ft", init_from=str(base), epochs=1,
                      hyperparameters={"lr": 50.0, "min_confidence": 0.5})
    assert cfg["training"]["init_from"]["kept_start_weights"] is True
    assert "start_model_maps" not in cfg["calibration"]  # another scoring setting
    started = cfg["training"]["init_from"]
    model = create_model("geo-seg", **cfg["hyperparameters"])
    from psinspect.modelstore import load_model_dir

    model.load_state_arrays(load_model_dir(base).model.state_arrays())
    assert start_model_image_scores(model, None) == {}
    assert set(start_model_image_scores(
        create_model("geo-seg", **{**cfg["hyperparameters"], "min_confidence": 0.2}),
        started)) == set()  # (random weights: not the start's)
    same = create_model("geo-seg", **{**cfg["hyperparameters"], "min_confidence": 0.2,
                                      "tta": 2})
    same.load_state_arrays(load_model_dir(base).model.state_arrays())
    got = start_model_image_scores(same, started)  # another level: its scores are stored
    start = _config(base)
    assert got["2"] == start["tta_thresholds"]["2"]["val_image_scores"]
    assert got["4"] == start["calibration"]["val_image_scores"]
    assert start_model_image_scores(same, {**started, "weights_sha256": "0" * 64}) == {}
    assert start_model_image_scores(same, {**started, "model": str(tmp_path / "gone")}) == {}


def test_pool_start_scores_refits_in_place() -> None:
    stats = {"val_image_scores": [3.0, 4.0], "val_maps": 2, "image_threshold_rule": "x"}
    thr = pool_start_scores(stats, [1.0, 2.0, 2.5], 0.05)
    assert stats["val_image_scores"] == [1.0, 2.0, 2.5, 3.0, 4.0]
    assert stats["start_model_maps"] == 3 and stats["val_maps"] == 2
    assert thr == gumbel_threshold([1.0, 2.0, 2.5, 3.0, 4.0], 0.05)[0] >= 4.0
    assert stats["image_fpr"] == 0.05 and stats["gumbel"]["scale"] > 0
    assert stats["image_threshold_rule"].startswith(
        "Gumbel fit to the image scores of the 2 clean validation maps and of the 3 clean "
        "calibration maps of the model started from")


def test_few_maps_note_counts_the_pooled_scores() -> None:
    """The warning about a pass/fail fit to few good maps counts the scores it was fitted to
    (4 new maps and a start model's 168: no warning), not the new maps alone."""
    from psinspect.train import few_maps_note

    pooled = {"gumbel": {}, "val_maps": 4, "val_image_scores": [1.0] * 172,
              "start_model_maps": 168}
    assert few_maps_note(pooled) is None
    alone = {"gumbel": {}, "val_maps": 4, "val_image_scores": [1.0] * 4}
    assert "only 4 good maps" in few_maps_note(alone)


def test_train_says_which_maps_the_pass_fail_fit_pooled(
        maps: list[Path], base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from _robust_util import run_cli

    code, out, err = run_cli(["train", *maps, "-o", tmp_path / "ft", "--init-from", str(base),
                              "--epochs", "1", "--hp", '{"lr": 50.0}'], monkeypatch, capsys)
    assert code == 0, err
    assert "kept the weights started from" in err
    assert ("image scores of 1 good map, and the 1 of the model started from, whose "
            "weights were kept" in out), out
