"""A known-part model records its training captures' light sets (config
``input.capture_light_sets``), and detect warns about a capture of as many lights under other
ones: its thresholds assume the training rig's lights (DiLiGenT objects tested through other
lights than training failed up to 11 of 48 good parts and passed up to 6 of 48 defective
ones), and only another NUMBER of lights used to be noticed."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _robust_util import run_cli

from psinspect.render import render_instances


def _turned(lights: np.ndarray, deg: float) -> np.ndarray:
    """``lights`` (K, 3) turned about the camera axis z by ``deg`` degrees."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return lights @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def test_light_set_distance_is_the_largest_angle_to_the_nearest_light_in_any_order() -> None:
    from psinspect.stereo import light_set_distance_deg

    rng = np.random.default_rng(0)
    lights = rng.normal(size=(12, 3))
    lights[:, 2] = np.abs(lights[:, 2]) + 1.0
    lights /= np.linalg.norm(lights, axis=1, keepdims=True)
    assert light_set_distance_deg(lights, lights[rng.permutation(12)]) == pytest.approx(
        0.0, abs=1e-4)
    moved = lights.copy()
    moved[3] = _turned(lights[3:4], 7.0)[0]  # one light moved by 7 deg (and nothing nearer)
    expected = min(7.0, np.degrees(np.arccos(np.clip(lights @ moved[3], -1, 1))).min())
    assert light_set_distance_deg(lights, moved) == pytest.approx(expected, abs=1e-3)
    # both ways: a set with one extra, far light is far from the set without it
    far = np.vstack([lights, [[0.0, -0.9, 0.436]]])
    assert light_set_distance_deg(lights, far) == light_set_distance_deg(far, lights) > 10


@pytest.fixture(scope="module")
def rig_model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A known-part model trained on five good 12-light captures of one rig, and a sixth good
    capture of the part."""
    from psinspect.train import train_model

    root = tmp_path_factory.mktemp("rig")
    good = render_instances(root / "good", 6, design_seed=5, seed=1, size=64, lights=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = train_model(good[:5], root / "m", model_name="variation")
    return {"root": root, "good": good, "config": config, "model": root / "m"}


def test_training_records_the_rig_lights_and_detect_warns_about_other_lights(
        rig_model, tmp_path: Path, monkeypatch, capsys) -> None:
    from psinspect.capture import capture_lights_file, read_lights_file
    from psinspect.stereo import light_set_distance_deg

    cap = rig_model["good"][5]
    rig = read_lights_file(capture_lights_file(cap))
    (recorded,) = rig_model["config"]["input"]["capture_light_sets"]  # one rig: one set
    np.testing.assert_allclose(recorded, rig, atol=1e-6)
    code, _, err = run_cli(["detect", cap, "--model", rig_model["model"], "-o",
                            tmp_path / "same"], monkeypatch, capsys)
    assert code == 0 and "lights lie" not in err, err
    # the same part under a rig turned by 20 deg about the camera axis: as many lights
    other = tmp_path / "other"
    shutil.copytree(cap, other)
    np.savetxt(capture_lights_file(other), _turned(rig, 20.0))
    code, _, err = run_cli(["detect", other, "--model", rig_model["model"], "-o",
                            tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    off = light_set_distance_deg(rig, _turned(rig, 20.0))  # (nearest lights: < 20 deg)
    assert off > 10
    note = (f"its 12 lights lie up to {off:.0f} deg from those of the model's 12-light "
            "training captures: its thresholds assume those lights, so good parts may fail "
            "and defective ones pass")
    assert note in err, err
    (entry,) = json.loads((tmp_path / "d" / "summary.json").read_text())["inputs"]
    assert any(w.startswith(note) for w in entry["warnings"]), entry
    # within the tolerance (a re-measured rig): no warning
    np.savetxt(capture_lights_file(other), _turned(rig, 2.0))
    code, _, err = run_cli(["detect", other, "--model", rig_model["model"], "-o",
                            tmp_path / "d2"], monkeypatch, capsys)
    assert code == 0 and "lights lie" not in err, err


def test_a_model_trained_through_varied_light_sets_judges_within_their_spread(
        rig_model) -> None:
    """Training captures under light sets 13 deg apart (the rig and the rig turned by 30 deg
    about the camera axis): a capture 10 deg from both is within what the thresholds were
    calibrated across (for the one-rig model it is not); lights squeezed 27 deg toward the
    camera axis are not. A map (no lights), another count and a model that records no sets
    get no note."""
    from psinspect.capture import capture_lights_file, read_lights_file
    from psinspect.detect import light_set_note
    from psinspect.modelstore import load_model_dir
    from psinspect.stereo import light_set_distance_deg

    rig = read_lights_file(capture_lights_file(rig_model["good"][0])).astype(np.float64)
    bundle = load_model_dir(rig_model["model"])

    def with_sets(sets: list | None):
        given = {k: v for k, v in bundle.config["input"].items() if k != "capture_light_sets"}
        return replace(bundle, config={**bundle.config, "input": {
            **given, **({"capture_light_sets": sets} if sets is not None else {})}})

    varied = with_sets([rig.tolist(), _turned(rig, 30.0).tolist()])
    between = _turned(rig, 15.0)
    narrow = rig * [0.3, 0.3, 1.0]
    narrow /= np.linalg.norm(narrow, axis=1, keepdims=True)
    # (the distances this test stands on)
    assert 5 < light_set_distance_deg(rig, between) < light_set_distance_deg(
        rig, _turned(rig, 30.0)) < light_set_distance_deg(rig, narrow)
    assert light_set_note(varied, between) is None
    assert light_set_note(varied, narrow) is not None
    assert light_set_note(bundle, between) is not None
    assert light_set_note(bundle, None) is None
    assert light_set_note(bundle, narrow[:8]) is None
    assert light_set_note(with_sets(None), narrow) is None


@pytest.mark.parametrize("sets", [
    [[[0.0, 0.0, 1.0], [0.5, 0.0, 0.866]]],  # 2 lights
    [[[0.0, 0.0, 1.0], [0.5, 0.0, 0.866], [0.0, 0.5, -0.866]]],  # z < 0
    [[[0.0, 0.0, 1.0], [0.5, 0.0, 0.866], [0.0, "a", 0.866]]],
    [[[0.0, 0.0, 1.0], [0.5, 0.0, 0.866], [0.0, 0.5]]],
    {"12": []},
])
def test_an_invalid_light_set_record_is_refused(rig_model, tmp_path: Path, sets) -> None:
    from psinspect.errors import PsinspectError
    from psinspect.modelstore import load_model_dir

    folder = tmp_path / "m"
    shutil.copytree(rig_model["model"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["input"]["capture_light_sets"] = sets
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PsinspectError, match="invalid input 'capture_light_sets'"):
        load_model_dir(folder)
