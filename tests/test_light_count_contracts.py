"""Contracts of the per-light-count thresholds of known-part models that
tests/test_light_count_thresholds.py leaves open (a mutation audit): ``train --threshold``
sets each count's pixel threshold too, the one-good-part warning for any count (not only the
lowest), what ``train`` prints per count (in count order, each count's own pass/fail value),
a capture of a count the model has no thresholds for, what ``detect`` says and writes when
the pass/fail threshold was set by hand, and the web app's summary. (Its broken-field cases and
the albedo-grain test joined tests/test_light_count_thresholds.py and
tests/test_render_instances.py.)"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
from _robust_util import run_cli

from psinspect.render import render_instances
from psinspect.train import light_count_few_maps_note

#: the pixel threshold given to ``train --threshold``
HAND = 0.75


@pytest.fixture(scope="module")
def hand_model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``psinspect train`` on five good 8-light captures with one good 12-light capture to
    calibrate on and ``--threshold`` 0.75: its stdout, stderr and config."""
    from psinspect.cli import main

    root = tmp_path_factory.mktemp("hand")
    good = render_instances(root / "good8", 5, design_seed=7, seed=1, size=64, lights=8)
    cal = render_instances(root / "cal12", 1, design_seed=7, seed=2, size=64, lights=12)
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        mp.setattr(sys, "argv", ["psinspect", "train", *map(str, good), "--model",
                                 "variation", "--calibrate-on", str(cal[0]), "--threshold",
                                 str(HAND), "-o", str(root / "m")])
        with pytest.raises(SystemExit) as exc:
            main()
    assert exc.value.code in (None, 0), err.getvalue()
    config = json.loads((root / "m" / "config.json").read_text())
    return {"root": root, "good": good, "cal": cal, "model": root / "m", "config": config,
            "out": out.getvalue(), "err": err.getvalue()}


def test_train_threshold_sets_every_light_counts_pixel_threshold(hand_model) -> None:
    """--threshold replaces the calibrated pixel threshold of each light count as well as
    the general one (each count's calibrated value kept beside it): else a capture of that
    count is judged with a pixel threshold the user did not ask for."""
    config = hand_model["config"]
    by_count = config["thresholds_by_light_count"]
    assert sorted(by_count, key=int) == ["8", "12"]
    assert config["threshold"] == HAND
    for n, group in by_count.items():
        assert group["threshold"] == HAND, n
        assert isinstance(group["calibrated_threshold"], float), n
        assert group["calibrated_threshold"] != HAND, n


def test_detect_uses_the_hand_pixel_threshold_for_a_light_count(hand_model, tmp_path: Path,
                                                                monkeypatch, capsys) -> None:
    code, _, err = run_cli(["detect", hand_model["good"][0], "--model", hand_model["model"],
                            "-o", tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    (entry,) = json.loads((tmp_path / "d" / "summary.json").read_text())["inputs"]
    assert entry["thresholds_for_lights"] == 8 and entry["pixel_threshold"] == HAND


def test_one_good_part_of_the_higher_light_count_is_warned_about(hand_model) -> None:
    """The single good capture is of the larger count (12 lights, beside five of 8)."""
    assert hand_model["config"]["thresholds_by_light_count"]["12"]["maps"] == 1
    err = " ".join(hand_model["err"].split())  # (the console wraps its lines)
    assert light_count_few_maps_note(12, 1) in err, err
    assert "thresholds for 12 lights come from one good map of that count" in err
    # (the five of 8 lights: a fit to few maps, not one map)
    assert "thresholds for 8 lights come from one" not in err
    assert light_count_few_maps_note(8, 5) in err


def test_train_prints_each_counts_thresholds_in_count_order(hand_model) -> None:
    """8 before 12 (by number, not as text), each count with its own pass/fail threshold."""
    by_count = hand_model["config"]["thresholds_by_light_count"]
    out = hand_model["out"]
    expected = "; ".join(
        f"{n} lights ({g['maps']} map{'s' if g['maps'] != 1 else ''}): pixel "
        f"{g['threshold']:.4g}, image {g['image_threshold']:.4g}"
        for n, g in ((k, by_count[k]) for k in ("8", "12")))
    assert expected in out, out
    # (else the line could not tell the pixel threshold from the pass/fail one)
    assert f"{by_count['8']['image_threshold']:.4g}" != f"{HAND:.4g}"


def test_a_capture_of_another_light_count_gets_the_general_thresholds(
        hand_model, tmp_path: Path, monkeypatch, capsys) -> None:
    """Six of an 8-light capture's lights: the model has no 6-light thresholds, so its
    general ones judge it and the summary says so (thresholds_for_lights null), with the
    warning about its lights."""
    config = hand_model["config"]
    code, _, err = run_cli(["detect", hand_model["good"][1], "--model", hand_model["model"],
                            "--lights", "1-6", "-o", tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    (entry,) = json.loads((tmp_path / "d" / "summary.json").read_text())["inputs"]
    assert "thresholds_for_lights" in entry and entry["thresholds_for_lights"] is None
    assert entry["image_threshold"] == config["image_threshold"]
    assert entry["warnings"][-1].startswith("solved from 6 lights"), entry


def test_detect_with_a_hand_pass_fail_threshold(hand_model, tmp_path: Path, monkeypatch,
                                                capsys) -> None:
    """--image-threshold by hand: the printed line does not call it the light count's
    threshold; the summary keeps the model's per-count thresholds, pass/fail ones included."""
    by_count = hand_model["config"]["thresholds_by_light_count"]
    code, out, err = run_cli(["detect", hand_model["good"][0], "--model", hand_model["model"],
                              "--image-threshold", "100", "-o", tmp_path / "d"],
                             monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    (entry,) = summary["inputs"]
    assert entry["image_threshold"] == 100.0
    line = next(ln for ln in out.splitlines() if ln.startswith(f"{entry['name']}: "))
    assert "<= 100;" in line and "light captures" not in line, line
    for n, group in by_count.items():
        assert summary["thresholds_by_light_count"][n] == {
            k: group[k] for k in ("threshold", "image_threshold", "maps",
                                  "image_threshold_rule")}, n


def test_the_web_app_summary_names_the_thresholds_that_judged(hand_model) -> None:
    """The app's summary.json: its pass/fail threshold is the one that judged the one input
    (the capture's light count's, or the slider's), not the model's general one."""
    from psinspect.app import InspectionInput, ModelChoice, predict
    from psinspect.detect import load_input
    from psinspect.modelstore import load_model_dir

    bundle = load_model_dir(hand_model["model"])
    by_count = hand_model["config"]["thresholds_by_light_count"]
    assert by_count["8"]["image_threshold"] != bundle.image_threshold  # (else proves nothing)
    solver = bundle.input_handling["ps_solver"]
    inp = load_input(hand_model["good"][0], solver=solver, capture_images=True)
    upload = InspectionInput("g", inp.normals, inp.mask, inp.confidence, kind="capture",
                             capture=(*inp.capture_images, solver))
    p = predict(upload, ModelChoice("m", bundle))
    assert p.summary["image_threshold"] == by_count["8"]["image_threshold"] == p.image_threshold
    # and the rule it records is that count's, not the general threshold's
    assert p.summary["image_threshold_calibration"] == by_count["8"]["image_threshold_rule"]
    p = predict(upload, ModelChoice("m", bundle), None, 123.0)
    assert p.summary["image_threshold"] == 123.0
    assert p.summary["image_threshold_calibration"] == (
        "set by hand (--image-threshold, or the web app's slider); the model's own, in "
        "calibrated_thresholds: " + by_count["8"]["image_threshold_rule"])


def test_a_map_of_unknown_light_count_is_warned_about(hand_model, tmp_path: Path,
                                                      monkeypatch, capsys) -> None:
    """A plain normal map (no run.json: its light count unknown) is judged by the general
    thresholds, fitted across the counts: a defective map that each count's thresholds
    failed passed silently."""
    import numpy as np

    from psinspect.capture import load_capture
    from psinspect.stereo import solve

    cap = load_capture(hand_model["good"][0])
    np.save(tmp_path / "part.npy", solve(cap.images, cap.lights, cap.mask, "stable").normals)
    code, _, err = run_cli(["detect", tmp_path / "part.npy", "--model", hand_model["model"],
                            "-o", tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    (entry,) = json.loads((tmp_path / "d" / "summary.json").read_text())["inputs"]
    assert entry["thresholds_for_lights"] is None
    assert entry["warnings"][-1].startswith(
        "its light count is unknown (a normal map without the run.json of 'psinspect normals'"
        "): it is judged by the model's general thresholds, fitted across its captures of 8 "
        "and 12 lights"), entry
