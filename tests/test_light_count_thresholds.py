"""A known-part model whose good captures were taken under several numbers of lights gets
thresholds per light count (config ``thresholds_by_light_count``), and detect judges a capture
with those of its count. One pass/fail threshold for 12-light training captures and 8-light
--calibrate-on captures was fitted to all of them together: a walkthrough's defective
12-light part scored 4.67 against 6.31 (1.28 without the 8-light captures) and passed,
silently."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from _robust_util import error_lines, run_cli

from psinspect.errors import PsinspectError
from psinspect.render import render_instances
from psinspect.train import light_count_few_maps_note


@pytest.fixture(scope="module")
def lights_model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Five good 12-light captures to train on, three good 8-light ones to calibrate on (one
    part design), a defective 12-light capture whose image score lies between the 12-light
    thresholds and the pooled ones, and the model trained on them."""
    from psinspect.train import train_model

    root = tmp_path_factory.mktemp("lights")
    good = render_instances(root / "good", 5, design_seed=5, seed=1, size=64, lights=12)
    cal = render_instances(root / "cal8", 3, design_seed=5, seed=2, size=64, lights=8)
    # a shallow defect (severity 0.05)
    bad = render_instances(root / "bad", 1, design_seed=5, seed=3, size=64, lights=12,
                           defect_rate=1.0, max_defects=1, severity=0.05)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = train_model(good, root / "m", model_name="variation",
                             calibration_inputs=cal)
    return {"root": root, "good": good, "cal": cal, "bad": bad, "config": config,
            "model": root / "m", "warnings": [str(w.message) for w in caught]}


def test_thresholds_per_light_count_are_those_of_each_count_alone(lights_model,
                                                                  tmp_path: Path) -> None:
    """Each count's thresholds are what calibration gives on that count's maps alone: the
    8-light --calibrate-on captures scored by the model (as train scores them), the 12-light
    training captures as a model trained on them alone calibrates them (cross-fitted)."""
    from psinspect.modelstore import load_model_dir
    from psinspect.train import _load_maps, calibrate, train_model

    config = lights_model["config"]
    by_count = config["thresholds_by_light_count"]
    assert sorted(by_count) == ["12", "8"]
    assert by_count["12"]["maps"] == 5 and by_count["8"]["maps"] == 3
    assert config["input"]["capture_lights"] == [8, 12]
    assert "Gumbel fit to the image scores of the 3 clean maps of 8-light captures" in \
        by_count["8"]["image_threshold_rule"]
    # the general thresholds are still the pooled ones of all 8 maps
    assert config["calibration"]["val_maps"] == 8
    bundle = load_model_dir(lights_model["model"])
    loaded = _load_maps(lights_model["cal"], None,  # (as train reads them for this model)
                        light_splits=bool(getattr(bundle.model, "uses_light_splits", False)),
                        solver=config["input"]["ps_solver"],
                        capture_images=bool(getattr(bundle.model, "learns_from_images", False)))
    thr, img_thr, _ = calibrate(bundle.model, [c[1] for c in loaded], 0.001,
                                extras=[c[2] for c in loaded])
    assert by_count["8"]["threshold"] == pytest.approx(thr, rel=1e-6)
    assert by_count["8"]["image_threshold"] == pytest.approx(img_thr, rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = train_model(lights_model["good"], tmp_path / "m12", model_name="variation")
    assert "thresholds_by_light_count" not in alone  # one light count: one set
    assert by_count["12"]["threshold"] == pytest.approx(alone["threshold"], rel=1e-6)
    assert by_count["12"]["image_threshold"] == pytest.approx(alone["image_threshold"],
                                                              rel=1e-6)
    # the counts' thresholds differ from the pooled ones (else this test proves nothing)
    assert by_count["12"]["image_threshold"] < config["image_threshold"]
    # training no longer warns that one threshold lets defective parts pass
    assert not any("one pass/fail threshold" in w for w in lights_model["warnings"])


def test_a_defective_capture_is_judged_with_its_light_counts_thresholds(
        lights_model, tmp_path: Path, monkeypatch, capsys) -> None:
    """The walkthrough's failure: a defective 12-light part, whose image score lies between
    the 12-light threshold and the pooled one, passed. Now it fails, judged with the 12-light
    thresholds (summary: thresholds_for_lights 12), without a warning; a normal map of unknown
    light count gets the pooled thresholds; --image-threshold by hand overrides them."""
    config, by_count = lights_model["config"], lights_model["config"][
        "thresholds_by_light_count"]
    bad = lights_model["bad"]
    code, out, err = run_cli(["detect", bad, lights_model["cal"][0], "--model",
                              lights_model["model"], "-o", tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    entry, cal8 = summary["inputs"]
    assert by_count["12"]["image_threshold"] < entry["image_score"] <= config["image_threshold"]
    assert entry["verdict"] == "fail" and entry["thresholds_for_lights"] == 12
    assert entry["image_threshold"] == by_count["12"]["image_threshold"]
    assert entry["pixel_threshold"] == by_count["12"]["threshold"]
    # (5 good 12-light maps: fewer than a fit needs to be sure of, said; no other warning)
    assert entry["warnings"] == [light_count_few_maps_note(12, 5)]
    assert cal8["thresholds_for_lights"] == 8
    assert cal8["warnings"] == [light_count_few_maps_note(8, 3)]
    assert cal8["image_threshold"] == by_count["8"]["image_threshold"]
    assert summary["image_threshold"] == config["image_threshold"]  # the general one
    assert summary["thresholds_by_light_count"]["12"]["maps"] == 5
    assert (f"{entry['name']}: FAIL (image score {entry['image_score']:.4g} > "
            f"{by_count['12']['image_threshold']:.4g}, the threshold of 12-light captures"
            in out), out
    # the same part as a plain normal map (no run.json: its light count unknown): pooled
    from psinspect.detect import load_input

    np.save(tmp_path / "bad_map.npy", load_input(bad).normals)
    code, out, err = run_cli(["detect", tmp_path / "bad_map.npy", "--model",
                              lights_model["model"], "-o", tmp_path / "d2"], monkeypatch, capsys)
    assert code == 0, err
    (entry,) = json.loads((tmp_path / "d2" / "summary.json").read_text())["inputs"]
    assert entry["thresholds_for_lights"] is None
    assert entry["image_threshold"] == config["image_threshold"]
    assert entry["pixel_threshold"] == config["threshold"]
    # thresholds given by hand override the light count's
    code, out, err = run_cli(["detect", bad, "--model", lights_model["model"], "-o",
                              tmp_path / "d3", "--image-threshold", "100"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "d3" / "summary.json").read_text())
    (entry,) = summary["inputs"]
    assert entry["verdict"] == "pass" and entry["image_threshold"] == 100.0
    assert entry["pixel_threshold"] == by_count["12"]["threshold"]  # (not given by hand)
    assert summary["image_threshold_calibration"].startswith("set by hand")
    # the model's own: the general ones for the run, the 12-light ones for this capture
    assert summary["calibrated_thresholds"] == {"pixel_threshold": config["threshold"],
                                                "image_threshold": config["image_threshold"]}
    assert entry["calibrated_thresholds"] == {"pixel_threshold": by_count["12"]["threshold"],
                                              "image_threshold": by_count["12"][
                                                  "image_threshold"]}
    code, out, err = run_cli(["detect", bad, "--model", lights_model["model"], "-o",
                              tmp_path / "d4", "--image-threshold", "100", "--threshold", "50"],
                             monkeypatch, capsys)
    assert code == 0, err
    (entry,) = json.loads((tmp_path / "d4" / "summary.json").read_text())["inputs"]
    assert entry["thresholds_for_lights"] is None and entry["pixel_threshold"] == 50.0


def test_the_web_app_judges_a_capture_with_its_light_counts_thresholds(lights_model) -> None:
    """The app's path (predict -> detect_map): the sliders start at the model's general
    thresholds; left there, a capture gets the thresholds of its light count."""
    from psinspect.app import InspectionInput, ModelChoice, predict, verdict_html
    from psinspect.detect import load_input
    from psinspect.modelstore import load_model_dir

    bundle = load_model_dir(lights_model["model"])
    by_count = lights_model["config"]["thresholds_by_light_count"]
    solver = bundle.input_handling["ps_solver"]
    inp = load_input(lights_model["bad"], solver=solver, capture_images=True)
    upload = InspectionInput("bad", inp.normals, inp.mask, inp.confidence, kind="capture",
                             capture=(*inp.capture_images, solver))
    choice = ModelChoice("m", bundle)
    for args in ((None, None), (bundle.threshold, bundle.image_threshold)):
        p = predict(upload, choice, *args)
        assert p.verdict == "FAIL" and p.image_threshold == by_count["12"]["image_threshold"]
        (entry,) = p.summary["inputs"]
        assert entry["thresholds_for_lights"] == 12
        assert entry["warnings"] == [light_count_few_maps_note(12, 5)]
        assert "calibrated_thresholds" not in p.summary
        # the page says which threshold judged it (the slider shows the general one)
        assert (f"(pass/fail threshold {by_count['12']['image_threshold']:.4g}, the one for "
                "12-light captures)") in verdict_html(p)
    p = predict(upload, choice, None, 100.0)
    assert p.verdict == "PASS" and p.summary["calibrated_thresholds"]["image_threshold"] == \
        by_count["12"]["image_threshold"]
    assert "(pass/fail threshold 100)" in verdict_html(p)


def test_the_web_apps_menu_judges_a_capture_by_its_light_counts_threshold_for_a_share(
        lights_model) -> None:
    """The page's menu of shares of good parts failing was hidden for a model calibrated per
    light count (the app told the pick from the slider's value, which different shares and
    counts can share). Now the pick itself is passed: a capture of a count the model has
    thresholds for is judged by that count's threshold for the share, as detect --image-fpr R
    judges it; a plain map by the general one; the summary records the rule."""
    from psinspect.app import (
        InspectionInput,
        ModelChoice,
        operating_point_menu,
        operating_points,
        picked_operating_point,
        predict,
        verdict_html,
    )
    from psinspect.detect import load_input
    from psinspect.modelstore import load_model_dir
    from psinspect.train import image_thresholds_at_rate

    config = lights_model["config"]
    bundle = load_model_dir(lights_model["model"])
    choice = ModelChoice("m", bundle)
    general, counts, rule = image_thresholds_at_rate(config, 0.2)
    point = picked_operating_point(choice, "0.2")
    assert (point.threshold, point.by_light_count, point.rule) == (general, counts, rule)
    menu = operating_point_menu(choice)
    assert len(menu) == len(operating_points(choice)) == 5
    assert menu[-1] == (f"20% of good parts failing: 8 lights {counts[8]:.4g}, 12 lights "
                        f"{counts[12]:.4g}; other inputs {general:.4g}", "0.2")
    solver = bundle.input_handling["ps_solver"]
    inp = load_input(lights_model["bad"], solver=solver, capture_images=True)
    capture = InspectionInput("bad", inp.normals, inp.mask, inp.confidence, kind="capture",
                              capture=(*inp.capture_images, solver))
    plain = InspectionInput("bad_map", inp.normals, inp.mask, inp.confidence)
    # the slider as the pick puts it (the general threshold): the 12-light one judges
    for image_threshold in (None, general):
        p = predict(capture, choice, None, image_threshold, operating_point=point)
        assert p.image_threshold == counts[12] and p.image_threshold_lights == 12
        assert p.summary["image_threshold_calibration"].startswith(rule)
        assert (f"(pass/fail threshold {counts[12]:.4g}, for 20% of good parts failing, the one "
                "for 12-light captures)") in verdict_html(p)
    p = predict(plain, choice, None, general, operating_point=point)
    assert p.image_threshold == general and p.image_threshold_lights is None
    # without the pick, the same slider value is a threshold set by hand
    p = predict(capture, choice, None, general)
    assert p.image_threshold == general
    assert p.summary["image_threshold_calibration"].startswith("set by hand")


def _capture_input(lights_model, path: Path):
    """(the app's choice of the lights model, the capture ``path`` as the app's input)."""
    from psinspect.app import InspectionInput, ModelChoice
    from psinspect.detect import load_input
    from psinspect.modelstore import load_model_dir

    bundle = load_model_dir(lights_model["model"])
    solver = bundle.input_handling["ps_solver"]
    inp = load_input(path, solver=solver, capture_images=True)
    return ModelChoice("m", bundle), InspectionInput(
        path.name, inp.normals, inp.mask, inp.confidence, kind="capture",
        capture=(*inp.capture_images, solver))


def test_a_menu_pick_judges_a_capture_of_another_light_count_by_the_general_threshold(
        lights_model, tmp_path: Path) -> None:
    """A 10-light capture, a count the model has no thresholds of: the share's general
    threshold judges it, and the page does not say a light count's did (session 37, B)."""
    from psinspect.app import picked_operating_point, predict, verdict_html

    ten = render_instances(tmp_path / "ten", 1, design_seed=5, seed=4, size=64, lights=10)[0]
    choice, capture = _capture_input(lights_model, ten)
    point = picked_operating_point(choice, "0.2")
    assert 10 not in point.by_light_count and point.by_light_count  # (else proves nothing)
    p = predict(capture, choice, None, None, operating_point=point)
    assert p.image_threshold == point.threshold and p.image_threshold_lights is None
    html = verdict_html(p)
    assert f"(pass/fail threshold {point.threshold:.4g}, for 20% of good parts failing)" in html
    assert "-light captures" not in html


def test_a_menu_pick_at_a_light_counts_own_threshold_replaces_nothing(lights_model) -> None:
    """The share whose 12-light threshold is the model's calibrated one for 12-light captures
    (its own --image-fpr): a 12-light capture is judged as without a pick, not as by a
    threshold set otherwise (compared with the count's own, not the general one)."""
    from psinspect.app import operating_points, predict

    choice, capture = _capture_input(lights_model, lights_model["bad"])
    own12 = lights_model["config"]["thresholds_by_light_count"]["12"]["image_threshold"]
    point = next(p for p in operating_points(choice)
                 if math.isclose(p.by_light_count.get(12, math.nan), own12, rel_tol=1e-9))
    assert not math.isclose(point.threshold, own12)  # (the general one differs)
    plain = predict(capture, choice, None, None)
    picked = predict(capture, choice, None, None, operating_point=point)
    assert "calibrated_thresholds" not in plain.summary
    assert "calibrated_thresholds" not in picked.summary
    assert picked.image_threshold == plain.image_threshold == own12
    assert picked.image_threshold_lights == 12


def test_a_model_without_per_count_thresholds_judges_as_before(lights_model,
                                                               tmp_path: Path) -> None:
    """A model folder made before (config without thresholds_by_light_count) loads and
    judges every input with its one pair of thresholds, and warns as before; the field is what
    makes the defective part fail."""
    from psinspect.detect import light_count_note, write_detection_outputs
    from psinspect.modelstore import load_model_dir

    old = tmp_path / "old"
    shutil.copytree(lights_model["model"], old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["thresholds_by_light_count"]
    (old / "config.json").write_text(json.dumps(cfg))
    bundle = load_model_dir(old)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = write_detection_outputs([lights_model["bad"]], tmp_path / "d", bundle)
    (entry,) = summary["inputs"]
    assert entry["verdict"] == "pass" and "thresholds_for_lights" not in entry
    assert entry["image_threshold"] == cfg["image_threshold"]
    assert "thresholds_by_light_count" not in summary
    assert entry["warnings"] == [
        "the model's thresholds were fitted to captures of 8 and 12 lights together: one "
        "pass/fail threshold for all of them lets more through on the lights whose good parts "
        "score lower (a defective part may pass; train one model per light set)"]
    assert any("fitted to captures of 8 and 12" in str(w.message) for w in caught)
    # with the field: the 12-light thresholds, no warning; a count never seen still warns
    new = load_model_dir(lights_model["model"])
    assert light_count_note(new, 12) == light_count_few_maps_note(12, 5)
    assert light_count_note(new, 8) == light_count_few_maps_note(8, 3)
    assert light_count_note(new, 6).startswith("solved from 6 lights, the model's training "
                                               "captures from 8 / 12")
    summary = write_detection_outputs([lights_model["bad"]], tmp_path / "d2", new)
    assert summary["inputs"][0]["verdict"] == "fail"


@pytest.mark.parametrize("field", [
    {"8": {"threshold": -1.0, "image_threshold": 2.0, "maps": 3}},
    {"8": {"threshold": 1.0, "image_threshold": 2.0}},
    {"eight": {"threshold": 1.0, "image_threshold": 2.0, "maps": 3}},
    {"8": {"threshold": 1.0, "image_threshold": float("nan"), "maps": 3}},
    [1, 2],
    {"8": {"threshold": 1.0, "image_threshold": 2.0, "maps": 0}},
    {"0": {"threshold": 1.0, "image_threshold": 2.0, "maps": 3}},
    {"8": {"threshold": 1.0, "image_threshold": 2.0, "maps": True}},
    {"8": {"threshold": 1.0, "image_threshold": 2.0, "maps": 3.0}},
    {"8": {"threshold": 1.0, "image_threshold": -2.0, "maps": 3}},
    {"8": {"threshold": True, "image_threshold": 2.0, "maps": 3}},
    {"8": [1.0, 2.0, 3]},
])
def test_a_broken_per_count_field_is_one_error(tmp_path: Path, field, monkeypatch,
                                               capsys) -> None:
    from psinspect.models import create_model
    from psinspect.modelstore import load_model_dir, save_model_dir

    save_model_dir(tmp_path / "m", create_model("geometric"), threshold=1.0, image_threshold=2.0)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["thresholds_by_light_count"] = field
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PsinspectError, match="invalid 'thresholds_by_light_count'"):
        load_model_dir(tmp_path / "m")
    np.save(tmp_path / "x.npy", np.dstack([np.zeros((8, 8, 2)), np.ones((8, 8))]))
    code, _, err = run_cli(["detect", tmp_path / "x.npy", "--model", tmp_path / "m", "-o",
                            tmp_path / "d"], monkeypatch, capsys)
    assert code == 2 and len(error_lines(err)) == 1 and "Traceback" not in err, err


def test_a_light_count_of_one_good_capture_is_warned_about(tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    """A count with a single good capture gets its scores' thresholds (its peak for
    pass/fail, no fit): said at training, and for each capture of that count at detect."""
    good = render_instances(tmp_path / "good", 5, design_seed=3, seed=1, size=64, lights=6)
    cal = render_instances(tmp_path / "cal", 1, design_seed=3, seed=2, size=64, lights=5)
    code, out, err = run_cli(["train", *good, "--model", "variation", "--calibrate-on", *cal,
                              "-o", tmp_path / "m"], monkeypatch, capsys)
    assert code == 0, err
    assert f"warning: {light_count_few_maps_note(5, 1)}" in " ".join(err.split()), err
    assert "thresholds fitted per light count" in out and "5 lights (1 map)" in out, out
    by_count = json.loads((tmp_path / "m" / "config.json").read_text())[
        "thresholds_by_light_count"]
    assert by_count["5"]["maps"] == 1
    assert by_count["5"]["image_threshold_rule"] == (
        "max image score over one clean map of 5-light captures (only one: a fit for "
        "--image-fpr needs at least 2)")
    code, _, err = run_cli(["detect", cal[0], "--model", tmp_path / "m", "-o", tmp_path / "d"],
                           monkeypatch, capsys)
    assert code == 0, err
    (entry,) = json.loads((tmp_path / "d" / "summary.json").read_text())["inputs"]
    assert entry["thresholds_for_lights"] == 5
    # scored by detect as at calibration, to the bit: it passes at its own score (it scored
    # 3e-5 higher by detect, whose check renormalised its vectors once more, and failed)
    assert entry["image_score"] == entry["image_threshold"] and entry["verdict"] == "pass"
    assert entry["warnings"] == [
        "the model's thresholds for 5 lights come from one good map of that count (its peak "
        "score; a fit for --image-fpr needs at least 2): good parts may fail or defective "
        "ones pass (train or "
        "--calibrate-on with more good captures under these lights)"]


def test_image_fpr_refits_each_light_counts_pass_fail_threshold(lights_model, tmp_path: Path,
                                                                monkeypatch, capsys) -> None:
    """``detect --image-fpr R`` with a model calibrated per light count: a capture of such a
    count is judged by the threshold R gives on that count's stored calibration scores (as
    train --image-fpr R would have set it), a map of unknown count by the pooled one; the
    summary records the rule and the model's own thresholds. At the model's own rate (1 %)
    the refit reproduces its calibrated thresholds exactly."""
    from psinspect.train import gumbel_threshold, image_thresholds_at_rate

    config = lights_model["config"]
    by_count = config["thresholds_by_light_count"]
    general, counts, rule = image_thresholds_at_rate(config, 0.01)
    assert general == config["image_threshold"]
    assert counts == {int(k): v["image_threshold"] for k, v in by_count.items()}
    general, counts, rule = image_thresholds_at_rate(config, 0.2)
    assert counts[12] == gumbel_threshold(by_count["12"]["val_image_scores"], 0.2)[0]
    assert counts[8] == gumbel_threshold(by_count["8"]["val_image_scores"], 0.2)[0]
    assert counts[12] < by_count["12"]["image_threshold"]
    bad, cal8 = lights_model["bad"], lights_model["cal"][0]
    from psinspect.detect import load_input

    np.save(tmp_path / "bad_map.npy", load_input(bad).normals)
    code, out, err = run_cli(["detect", bad, cal8, tmp_path / "bad_map.npy", "--model",
                              lights_model["model"], "-o", tmp_path / "d", "--image-fpr", "0.2"],
                             monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    e12, e8, plain = summary["inputs"]
    assert e12["image_threshold"] == counts[12] and e8["image_threshold"] == counts[8]
    assert plain["image_threshold"] == general == summary["image_threshold"]
    assert e12["calibrated_thresholds"]["image_threshold"] == by_count["12"]["image_threshold"]
    assert summary["calibrated_thresholds"]["image_threshold"] == config["image_threshold"]
    assert summary["image_threshold_calibration"].startswith(rule + "; the model's own")
    assert "--image-fpr 0.2: Gumbel fit" in rule and "12 lights" in rule and "8 lights" in rule
    for e in (e12, e8, plain):
        assert e["verdict"] == ("fail" if e["image_score"] > e["image_threshold"] else "pass")
    assert (e12["num_lights"], e8["num_lights"], plain["num_lights"]) == (12, 8, None)
    assert f"{counts[12]:.4g}, that of 12-light captures for --image-fpr 0.2;" in out, out
    assert f"{general:.4g}; " in out and "the threshold of" not in out


def test_evaluates_operating_points_judge_each_map_by_its_light_counts_threshold(
        lights_model) -> None:
    """evaluate's verdicts at other pass/fail thresholds (metrics.json ``operating_points``)
    for a model calibrated per light count: a map solved from a count the model has
    thresholds for is judged by that count's threshold for R, any other by the general one,
    as ``detect --image-fpr R`` judges them (they were refused before). Image scores are
    placed between the thresholds, so judging any map by another threshold changes a count."""
    from psinspect.fileio import read_json
    from psinspect.report import model_operating_points, point_threshold_text
    from psinspect.train import OPERATING_RATES, image_thresholds_at_rate

    config = read_json(lights_model["model"] / "config.json")
    rate = 0.2
    general, counts, _ = image_thresholds_at_rate(config, rate)
    assert counts[8] != counts[12]  # (else this test proves nothing)
    # one score just above each threshold, for each kind of map: it fails under that
    # threshold, passes under a higher one
    ladder = sorted({general, *counts.values()})
    scores = [t * 1.0001 for t in ladder] * 3
    light_counts = [c for c in (12, 8, None) for _ in ladder]
    defective = [i % 2 == 0 for i in range(len(scores))]
    points, note = model_operating_points(lights_model["model"], config["weights_sha256"],
                                          None, scores, defective, light_counts)
    assert note is None and [p["rate"] for p in points] == list(OPERATING_RATES)
    point = next(p for p in points if p["rate"] == rate)
    assert point["image_threshold"] == general
    assert point["image_thresholds_by_light_count"] == {str(n): t for n, t in counts.items()}
    thr = {12: counts[12], 8: counts[8], None: general}
    fails = [s > thr[c] for s, c in zip(scores, light_counts, strict=True)]
    pairs = list(zip(fails, defective, strict=True))
    assert point["defective_failed"] == sum(f for f, d in pairs if d)
    assert point["clean_passed"] == sum(not f for f, d in pairs if not d)
    # judged all by the general threshold, the counts differ (the per-map choice matters)
    flat = next(p for p in model_operating_points(
        lights_model["model"], config["weights_sha256"], None, scores, defective,
        [None] * len(scores))[0] if p["rate"] == rate)
    assert (flat["defective_failed"], flat["clean_passed"]) != (point["defective_failed"],
                                                                point["clean_passed"])
    assert point_threshold_text(point) == (
        f"{general:.4g} (8 lights {counts[8]:.4g}, 12 lights {counts[12]:.4g}; other maps "
        f"{general:.4g})")


@pytest.mark.parametrize(("entry", "count"), [
    ({"num_lights": 12, "thresholds_for_lights": None}, 12),  # (both set by hand)
    ({"num_lights": None}, None),
    ({"thresholds_for_lights": 8}, 8),  # a summary written before num_lights was recorded
    ({}, None),
    ({"num_lights": True}, None), ({"num_lights": "12"}, None), ({"num_lights": 2.5}, None),
])
def test_the_light_count_evaluate_reads_from_a_detect_summary(entry, count) -> None:
    from psinspect.report import summary_light_count

    assert summary_light_count(entry) == count


def test_train_warns_of_light_counts_fitted_to_few_maps(lights_model) -> None:
    """Each light count fitted to fewer than MIN_FIT_MAPS good maps is warned about at
    training (two 8-light captures to --calibrate-on got thresholds of their own without a
    word; the pooled fit over all 8 maps got none either)."""
    said = lights_model["warnings"]
    assert light_count_few_maps_note(12, 5) in said and light_count_few_maps_note(8, 3) in said
    assert "are a fit to only 3 good maps of that count" in light_count_few_maps_note(8, 3)
