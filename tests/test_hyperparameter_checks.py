"""Invalid hyperparameters (``train --hp``, a hand-edited model config.json) and a hand-edited
detect summary are refused with one clear line, never a traceback or a silently wrong score."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from psinspect.errors import PsinspectError
from psinspect.models import create_model
from psinspect.modelstore import default_model_dir, load_model_dir
from psinspect.report import load_eval_items

NAN = float("nan")


def _edited_model(tmp_path: Path, hyperparameters: dict[str, Any]) -> Path:
    """A copy of the bundled model whose config.json hyperparameters were edited."""
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    config = json.loads((model / "config.json").read_text())
    config["hyperparameters"].update(hyperparameters)
    (model / "config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize(("edit", "message"), [
    # scored at 1 copy with the thresholds calibrated for 4 (good parts failing)
    ({"tta": 1}, r"threshold / image_threshold [0-9.]+ / [0-9.]+ are not tta_thresholds\['1'\]"),
    ({"tta": True}, r"tta must be 1, 2, 4 or 8, got True"),
    ({"geo_scales": [-2.5, 8.0]}, r"geo_scales\[0\] must be a finite number > 0"),
    ({"geo_scales": [2.5, NAN]}, r"geo_scales\[1\] must be a finite number > 0"),
    ({"geo_scales": [2.5, 1e300]}, r"geo_scales\[1\] must be a finite number > 0 and <= 256"),
    ({"geo_scales": [8.0, 2.5]}, r"geo_scales must be increasing"),
    ({"residual_gain": -10}, r"residual_gain must be a finite number > 0"),
    ({"map_norm_eps": 1e300}, r"map_norm_eps must be a finite number > 0 and <= 10"),
    ({"map_norm_power": 1e10}, r"map_norm_power must be a finite number from 0 to 2"),
    ({"patch": 100}, r"patch must be a multiple of 8"),
])
def test_a_hand_edited_model_config_is_refused_in_one_line(tmp_path: Path, edit: dict[str, Any],
                                                           message: str) -> None:
    model = _edited_model(tmp_path, edit)
    with pytest.raises(PsinspectError, match=message) as err:
        load_model_dir(model)
    assert str(err.value).startswith(str(model / "config.json")) and "\n" not in str(err.value)


def test_a_tta_edited_with_its_thresholds_loads_at_that_level(tmp_path: Path) -> None:
    """The bundled model loads as before; a tta edited together with the thresholds its
    tta_thresholds hold for that level scores at it, with them."""
    bundled = load_model_dir()
    assert bundled.model.tta == 4 and bundled.threshold == bundled.config["threshold"]
    model = _edited_model(tmp_path, {"tta": 1})
    config = json.loads((model / "config.json").read_text())
    config.update(config["tta_thresholds"]["1"])
    (model / "config.json").write_text(json.dumps(config))
    one = load_model_dir(model)
    assert one.model.tta == 1
    assert one.threshold == config["tta_thresholds"]["1"]["threshold"] != bundled.threshold


@pytest.mark.parametrize(("name", "hyperparameters", "message"), [
    ("geo-seg", {"lr": -1}, r"lr must be a finite number > 0, got -1"),
    ("geo-seg", {"lr": NAN}, r"lr must be a finite number > 0, got nan"),
    ("geo-seg", {"patch": 4}, r"patch must be an integer from 8 to 1024, got 4"),
    ("geo-seg", {"patch": 100000}, r"patch must be an integer from 8 to 1024"),
    ("geo-seg", {"patch": 100}, r"patch must be a multiple of 8"),
    ("geo-seg", {"patch": 128.0}, r"patch must be an integer"),
    ("geo-seg", {"steps_per_epoch": 0}, r"steps_per_epoch must be an integer from 1"),
    ("geo-seg", {"max_defects": 0}, r"max_defects must be an integer from 1"),
    ("geo-seg", {"severity_weights": [1.0, float("inf"), 1.0]},
     r"severity_weights\[1\] must be a finite number"),
    ("unet-ae", {"channels": []}, r"channels must be a list of 1 to 8 values"),
    ("geometric", {"scales": []}, r"scales must be a list of 1 to 8 values, got \[\]"),
    ("geometric", {"smooth": NAN}, r"smooth must be a finite number from 0 to 64, got nan"),
    ("geometric", {"iterations": 2.5}, r"iterations must be an integer"),
    ("variation", {"scales_px": [0.7, NAN]}, r"scales_px\[1\] must be a finite number"),
    ("variation", {"shading": "false"}, r"shading must be true or false"),
])
def test_train_hyperparameters_are_checked_by_the_model(name: str,
                                                        hyperparameters: dict[str, Any],
                                                        message: str) -> None:
    """What ``train --hp`` gives the model is refused when it is built (one line), not by a
    torch or numpy traceback during training."""
    with pytest.raises(PsinspectError, match=rf"model '{name}': bad hyperparameters \({message}"):
        create_model(name, **hyperparameters)


@pytest.mark.parametrize(("entry", "message"), [
    ({"pixel_threshold": "abc"}, r"pixel_threshold must be a finite number >= 0, got 'abc'"),
    ({"image_threshold": NAN}, r"image_threshold must be a finite number >= 0"),
    ({"scale": "abc"}, r"scale must be a finite number > 0, got 'abc'"),
    ({"scale": 0}, r"scale must be a finite number > 0"),
    ({"tta": True}, r"tta must be a number of test-time copies >= 1"),
])
def test_evaluate_refuses_a_hand_edited_operating_point(tmp_path: Path, entry: dict[str, Any],
                                                        message: str) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "summary.json").write_text(json.dumps({"inputs": [], **entry}))
    with pytest.raises(PsinspectError, match=r"summary\.json: not a detect summary \(" + message):
        load_eval_items(pred, tmp_path / "dataset")
