"""The app through Gradio's own event processing (``Blocks.process_api`` with a session state,
as the server runs an event): the threshold sliders of a model calibrated per light count, the
inputs after an event updated the sliders, and API clients' wrong values."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from psinspect.app import list_examples

#: the shipped capture (8 lights); with a geometric model its image score is about 50.7
CAPTURE = next(p for p in list_examples() if p.suffix == ".zip")


@pytest.fixture(scope="module")
def per_count_choice(tmp_path_factory: pytest.TempPathFactory):
    """A training-free model calibrated per light count: general thresholds 40 / 80 (the
    shipped capture passes at 80), 8 lights 10 / 30 (it fails), 12 lights 20 / 25."""
    from psinspect.app import load_model_choices
    from psinspect.models import create_model
    from psinspect.modelstore import save_model_dir

    d = tmp_path_factory.mktemp("per-count") / "per-count"
    save_model_dir(d, create_model("geometric"), threshold=40.0, image_threshold=80.0,
                   light_count_thresholds={
                       "8": {"threshold": 10.0, "image_threshold": 30.0, "maps": 4},
                       "12": {"threshold": 20.0, "image_threshold": 25.0, "maps": 4}})
    (choice,) = load_model_choices([d], include_default=False)
    return choice


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_count_choice, geometric_choice):
    """The app over both models (Gradio's cache under ``tmp_path``), its session state and
    its events by name: ``inspect``, ``model`` (the dropdown's change), ``judged`` (the event
    chained to Inspect)."""
    from gradio.state_holder import SessionState

    from psinspect.app import build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = build_app([per_count_choice, geometric_choice], tmp_path / "work", examples=[])
    config = demo.config
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    deps = config["dependencies"]
    (inspect,) = [d for d in deps if d.get("api_name") == "inspect"]
    (model,) = [d for d in deps if [ids["model"], "change"] in [list(t) for t in d["targets"]]]
    events = {"inspect": inspect, "model": model}
    events.update(("judged", d) for d in deps if d.get("trigger_after") == inspect["id"])
    return demo, SessionState(demo), events


def _call(app, event: str, *inputs: Any) -> list[Any]:
    """Run ``event`` with the API's ``inputs``; as Gradio's /call route does, a None stands in
    for each session-state input (Inspect's last: the menu's pick, which the session keeps)."""
    demo, state, deps = app
    data = iter(inputs)
    values = [None if demo.blocks[i].skip_api else next(data) for i in deps[event]["inputs"]]
    return asyncio.run(demo.process_api(deps[event]["id"], values, state=state))["data"]


def _file(path: Path) -> dict[str, Any]:
    return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def test_sliders_show_the_thresholds_that_judged_a_capture(app, per_count_choice) -> None:
    """A slider left at the model's general threshold meant the thresholds of the capture's
    light count, 8 lights' 10 / 30 here: moving the pass/fail slider one step down from 80 (in
    the inspector's eyes stricter) passed the part judged FAIL. Now Inspect then shows the
    thresholds that judged it, and a step down from there is stricter."""
    c = per_count_choice
    assert c.calibrated_thresholds == [10.0, 20.0, 40.0]
    assert c.calibrated_image_thresholds == [25.0, 30.0, 80.0]
    assert (c.slider_max, c.image_slider_max) == (200.0, 300.0)  # 3x the largest
    verdict, *_ = _call(app, "inspect", _file(CAPTURE), c.label, c.threshold, c.image_threshold,
                        1.0)
    assert "FAIL" in verdict and "(pass/fail threshold 30, the one for 8-light" in verdict, verdict
    assert _call(app, "judged", None) == [10.0, 30.0]
    step = c.image_slider_max / 1000
    stricter = _call(app, "inspect", _file(CAPTURE), c.label, 10.0, 30.0 - step, 1.0)[0]
    assert "FAIL" in stricter and f"(pass/fail threshold {30.0 - step:.4g})" in stricter
    assert _call(app, "judged", None) == [10.0, 30.0 - step]


def test_any_calibrated_value_means_the_inputs_own_thresholds(tmp_path: Path,
                                                              per_count_choice) -> None:
    """Sliders left at the thresholds of another light count (the last capture's) mean the
    calibrated thresholds of this capture's count; a map of unknown count gets the general."""
    from psinspect.app import load_inspection_input, predict

    c = per_count_choice
    inp = load_inspection_input(CAPTURE, tmp_path)
    for pixel, image in ((20.0, 25.0), (40.0, 80.0), (10.0, 30.0), (None, None)):
        p = predict(inp, c, pixel, image)
        assert (p.threshold, p.image_threshold, p.image_threshold_lights) == (10.0, 30.0, 8)
        assert "calibrated_thresholds" not in p.summary
    png = load_inspection_input(next(p for p in list_examples() if p.suffix == ".png"),
                                tmp_path)
    p = predict(png, c, 10.0, 30.0)
    assert (p.threshold, p.image_threshold) == (40.0, 80.0)


def test_a_failed_inspection_leaves_the_sliders(app, per_count_choice, tmp_path: Path) -> None:
    import gradio as gr

    bad = tmp_path / "notes.zip"
    bad.write_bytes(b"not a zip")
    verdict = _call(app, "inspect", _file(bad), per_count_choice.label, None, None, 1.0)[0]
    assert "Cannot inspect" in verdict
    skip = gr.skip()
    assert _call(app, "judged", None) == [skip, skip]


def test_threshold_inputs_after_the_model_changed(app, per_count_choice,
                                                  geometric_choice) -> None:
    """Once the model dropdown's change had updated the sliders, Gradio preprocessed that
    session's inputs with NEW slider instances, which lacked the app's checks patched onto the
    first ones: a null threshold raised a TypeError inside Gradio, 50 was refused as above the
    slider's maximum. The dropdown's change is the page's own event, not an API endpoint."""
    import gradio as gr

    for label in (geometric_choice.label, per_count_choice.label):
        pixel, image, points, *_ = _call(app, "model", label)  # (then the pick, cleared)
        # (geometric models store no calibration scores to refit: no menu of other ones)
        assert points["choices"] == [] and points["visible"] is False
        assert pixel["maximum"] == (200.0 if label == per_count_choice.label else 30.0)
        verdict = _call(app, "inspect", _file(CAPTURE), label, None, None, 1.0)[0]
        assert "FAIL" in verdict
        verdict = _call(app, "inspect", _file(CAPTURE), label, 500.0, 500.0, 1.0)[0]
        assert "PASS" in verdict and "(pass/fail threshold 500)" in verdict
        with pytest.raises(gr.Error, match="pixel threshold must be a number >= 0") as err:
            _call(app, "inspect", _file(CAPTURE), label, -1, None, 1.0)
        assert err.value.print_exception is False
    _, _, deps = app
    assert deps["model"]["api_visibility"] == "private"
    assert deps["judged"]["api_visibility"] == "private"


def test_the_page_draws_gradios_own_widgets(app) -> None:
    """The app's input widgets are subclasses (their checks survive Gradio's new instances);
    the page draws each with its base's widget; Gradio wrote no stub file for them into the
    package."""
    import psinspect.app

    demo, _, _ = app
    assert not Path(psinspect.app.__file__).with_suffix(".pyi").exists()
    kinds = {c["props"].get("elem_id"): c["type"] for c in demo.config["components"]}
    assert {k: kinds[k] for k in ("upload", "model", "threshold", "image-threshold", "scale")
            } == {"upload": "file", "model": "dropdown", "threshold": "slider",
                  "image-threshold": "slider", "scale": "number"}


@pytest.mark.parametrize("scale", ["abc", [1], 9.0, float("nan")])
def test_a_pixel_scale_that_is_no_number_in_range_is_a_message(app, per_count_choice,
                                                                scale: Any) -> None:
    """scale="abc" raised a TypeError inside Gradio's Number (a traceback on the server);
    now the client is told, as for the thresholds, and the server prints nothing."""
    import gradio as gr

    with pytest.raises(gr.Error) as err:
        _call(app, "inspect", _file(CAPTURE), per_count_choice.label, None, None, scale)
    assert str(err.value.message) == (
        f"the pixel scale must be a number between 0.1 and 4, got {scale!r}")
    assert err.value.print_exception is False
    verdict = _call(app, "inspect", _file(CAPTURE), per_count_choice.label, None, None, None)[0]
    assert "FAIL" in verdict


def test_a_hand_set_threshold_above_the_captures_own_is_said(tmp_path: Path,
                                                             per_count_choice) -> None:
    """Before the first inspection the sliders show the general thresholds (80): one moved a
    step down (79.9) is a threshold set by hand, far above this 8-light capture's calibrated
    30, and passed it (score ~50.7) without a word. The verdict now says so; a stricter hand-set
    threshold, or a map of unknown light count, gets no such note."""
    from psinspect.app import load_inspection_input, predict

    c = per_count_choice
    inp = load_inspection_input(CAPTURE, tmp_path)
    p = predict(inp, c, None, 79.9)
    assert p.verdict == "PASS"
    assert p.notes[-1] == (
        "the pass/fail threshold 79.9 is above this capture's calibrated 30 (that of 8-light "
        "captures): more lenient than calibrated; the Calibrated thresholds button puts the "
        "sliders back")
    assert p.summary["inputs"][0]["warnings"][-1] == p.notes[-1]
    both = predict(inp, c, 39.9, 79.9).notes[-1]
    assert both.startswith("the pixel threshold 39.9 is above this capture's calibrated 10 "
                           "and the pass/fail threshold 79.9 is above")
    assert not any("more lenient" in n for n in predict(inp, c, 5.0, 29.0).notes)
    png = load_inspection_input(next(p for p in list_examples() if p.suffix == ".png"),
                                tmp_path)
    assert not any("more lenient" in n for n in predict(png, c, 39.9, 79.9).notes)
