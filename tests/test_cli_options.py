"""Every command-line option reaches the library function it sets (a mutation audit found
options the CLI could drop or replace without any test failing: ``--seed`` of train and
dataset, ``--solver`` of detect, ``--max-fpr`` of evaluate, ...).

The library entry point of each command is replaced by a recorder that keeps its arguments and
stops the command with a one-line error; what the library then does with them is tested where
the library is tested."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _robust_util import error_lines, run_cli, sphere_normals, tiny_capture

from psinspect.errors import PsinspectError
from psinspect.fileio import save_npy


class _Called(PsinspectError):
    """Raised by a recorder: the command got as far as the library call (exit 2)."""


def _recorder(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> dict[str, Any]:
    """Replace ``module.name`` by a function that records its arguments and raises _Called;
    returns the record (``args``, ``kwargs``; empty until called)."""
    seen: dict[str, Any] = {}

    def record(*args: Any, **kwargs: Any) -> None:
        seen.update(args=args, kwargs=kwargs)
        raise _Called("recorded")

    monkeypatch.setattr(module, name, record)
    return seen


def _stopped_at_the_call(code: int, err: str) -> None:
    assert code == 2 and error_lines(err) == ["error: recorded"], err


def _normal_map(folder: Path, name: str = "N_ball.npy") -> Path:
    return save_npy(folder / name, sphere_normals(32)[0])


# -------------------------------------------------------------------------------- train


def test_train_passes_every_option(tmp_path, monkeypatch, capsys) -> None:
    import psinspect.train as train

    seen = _recorder(monkeypatch, train, "train_model")
    data, cal = tmp_path / "data", tmp_path / "cal"
    code, _, err = run_cli(
        ["train", data, "-o", tmp_path / "m", "--model", "unet-ae", "--epochs", "3",
         "--batch-size", "5", "--seed", "7", "--patience", "2", "--threshold-fpr", "0.002",
         "--image-fpr", "0.05", "--threshold", "1.5", "--solver", "ls", "--hp", '{"lr": 0.01}',
         "--hp", '{"patch": 64}', "--calibrate-on", cal, "--threads", "1", "--init-from",
         "bundled", "--force"], monkeypatch, capsys)
    _stopped_at_the_call(code, err)
    assert [Path(p) for p in seen["args"][0]] == [data] and Path(seen["args"][1]) == \
        tmp_path / "m"
    kw = seen["kwargs"]
    assert {k: kw[k] for k in ("model_name", "epochs", "batch_size", "seed", "patience",
                               "threshold_fpr", "image_fpr", "threshold", "solver",
                               "hyperparameters", "threads", "init_from", "force",
                               "resume")} == {
        "model_name": "unet-ae", "epochs": 3, "batch_size": 5, "seed": 7, "patience": 2,
        "threshold_fpr": 0.002, "image_fpr": 0.05, "threshold": 1.5, "solver": "ls",
        "hyperparameters": {"lr": 0.01, "patch": 64}, "threads": 1, "init_from": "bundled",
        "force": True, "resume": False}
    assert [Path(p) for p in kw["calibration_inputs"]] == [cal]


def test_train_defaults_are_the_documented_ones(tmp_path, monkeypatch, capsys) -> None:
    """Pixel threshold for 0.1 % false positives per clean pixel, pass/fail threshold for
    about 1 % of good parts failing (README, issue 4), 30 epochs, patience 6, batch 8."""
    import psinspect.train as train

    seen = _recorder(monkeypatch, train, "train_model")
    code, _, err = run_cli(["train", tmp_path / "d", "-o", tmp_path / "m"], monkeypatch, capsys)
    _stopped_at_the_call(code, err)
    kw = seen["kwargs"]
    assert {k: kw[k] for k in ("model_name", "epochs", "batch_size", "seed", "patience",
                               "threshold_fpr", "image_fpr", "threshold", "solver",
                               "hyperparameters", "init_from", "force", "resume")} == {
        "model_name": None, "epochs": 30, "batch_size": 8, "seed": 0, "patience": 6,
        "threshold_fpr": 0.001, "image_fpr": 0.01, "threshold": None, "solver": None,
        "hyperparameters": {}, "init_from": None, "force": False, "resume": False}


@pytest.mark.parametrize("option", [
    ["--model", "unet-ae"], ["--epochs", "3"], ["--batch-size", "4"], ["--seed", "1"],
    ["--patience", "2"], ["--threshold-fpr", "0.01"], ["--image-fpr", "0.05"],
    ["--threshold", "2"], ["--solver", "ls"], ["--hp", "{}"], ["--calibrate-on", "x"],
    ["--init-from", "bundled"]])
def test_train_resume_refuses_each_setting(option, tmp_path, monkeypatch, capsys) -> None:
    """--resume continues with the checkpoint's settings: each setting given beside it is
    named in the refusal, before anything is read."""
    import psinspect.train as train

    seen = _recorder(monkeypatch, train, "train_model")
    code, _, err = run_cli(["train", tmp_path / "d", "-o", tmp_path / "m", "--resume",
                            *option], monkeypatch, capsys)
    assert code == 2 and not seen
    assert error_lines(err) == [
        f"error: --resume continues the interrupted run with its own settings: drop "
        f"{option[0]} (or train again without --resume)"]


# -------------------------------------------------------------------------------- detect


def test_detect_passes_every_option(tmp_path, monkeypatch, capsys) -> None:
    import psinspect.detect as detect
    import psinspect.modelstore as modelstore

    loads: list[dict[str, Any]] = []
    real_load = modelstore.load_model_dir

    def load(*args: Any, **kwargs: Any) -> Any:
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(modelstore, "load_model_dir", load)
    seen = _recorder(monkeypatch, detect, "write_detection_outputs")
    src = tmp_path / "capture"  # (--solver and --lights need a capture folder among inputs)
    src.mkdir()
    code, _, err = run_cli(
        ["detect", src, "-o", tmp_path / "out", "--threshold", "0.7", "--image-threshold",
         "3.5", "--solver", "ls", "--tta", "2", "--lights", "1-4", "--scale", "0.5",
         "--keep-going", "--jobs", "1", "--force"], monkeypatch, capsys)
    _stopped_at_the_call(code, err)
    assert loads == [{"tta": 2}]
    kw = seen["kwargs"]
    assert {k: kw[k] for k in ("threshold", "image_threshold", "solver", "force", "jobs",
                               "keep_going", "lights", "scale")} == {
        "threshold": 0.7, "image_threshold": 3.5, "solver": "ls", "force": True, "jobs": 1,
        "keep_going": True, "lights": "1-4", "scale": 0.5}


def test_detect_says_how_each_verdict_compares_with_the_threshold(tmp_path, monkeypatch,
                                                                    capsys) -> None:
    src = _normal_map(tmp_path)
    lines = {}
    for verdict, threshold in (("FAIL", "0"), ("PASS", "1e9")):
        code, out, err = run_cli(["detect", src, "-o", tmp_path / verdict, "--image-threshold",
                                  threshold, "--tta", "1"], monkeypatch, capsys)
        assert code == 0, err
        lines[verdict] = out.splitlines()[0]
    assert lines["FAIL"].startswith("N_ball: FAIL (image score ")
    assert " > 0;" in lines["FAIL"] and " <= " not in lines["FAIL"]
    assert lines["PASS"].startswith("N_ball: PASS (image score ")
    assert " <= 1e+09;" in lines["PASS"] and " > " not in lines["PASS"]


# -------------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("max_fpr", ["0.2", "1"])
def test_evaluate_passes_max_fpr(max_fpr, tmp_path, monkeypatch, capsys) -> None:
    import psinspect.report as report

    seen = _recorder(monkeypatch, report, "write_evaluation")
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    code, _, err = run_cli(["evaluate", tmp_path / "p", tmp_path / "g", "-o", tmp_path / "o",
                            "--max-fpr", max_fpr], monkeypatch, capsys)
    _stopped_at_the_call(code, err)
    assert seen["kwargs"] == {"force": False, "max_fpr": float(max_fpr)}


@pytest.mark.parametrize("max_fpr", ["0", "1.5", "-0.1"])
def test_evaluate_refuses_max_fpr_outside_0_1(max_fpr, tmp_path, monkeypatch, capsys) -> None:
    import psinspect.report as report

    seen = _recorder(monkeypatch, report, "write_evaluation")
    code, _, err = run_cli(["evaluate", tmp_path, tmp_path, "-o", tmp_path / "o",
                            "--max-fpr", max_fpr], monkeypatch, capsys)
    assert code == 2 and not seen
    assert error_lines(err) == [f"error: --max-fpr must be in (0, 1], got {float(max_fpr)}"]


# -------------------------------------------------------------------------------- dataset


def _dataset_call(tmp_path, monkeypatch, capsys, *options: str) -> dict[str, Any]:
    import psinspect.dataset as dataset

    monkeypatch.setattr(dataset, "find_captures", lambda folders: [])
    seen = _recorder(monkeypatch, dataset, "build_dataset")
    code, _, err = run_cli(["dataset", tmp_path / "caps", "-o", tmp_path / "ds", *options],
                           monkeypatch, capsys)
    _stopped_at_the_call(code, err)
    return seen["kwargs"]


def test_dataset_passes_every_option(tmp_path, monkeypatch, capsys) -> None:
    kw = _dataset_call(tmp_path, monkeypatch, capsys, "--holdout", " a, ,b ", "--seed", "9",
                       "--subsets", "2", "--lights-per-subset", "6", "--solver", "ls",
                       "--augment", "rot90", "--defects-per-map", "2", "--types", "pit,dent",
                       "--severity", "low", "--min-angle", "3.5", "--skip-lights",
                       "bearPNG:1-3")
    assert {k: kw[k] for k in ("holdout", "seed", "subsets", "lights_per_subset", "solver",
                               "augment", "defects_per_map", "defect_types", "min_angle",
                               "skip_lights")} == {
        "holdout": ["a", "b"], "seed": 9, "subsets": 2, "lights_per_subset": 6,
        "solver": "ls", "augment": ["rot90"], "defects_per_map": 2,
        "defect_types": ["pit", "dent"], "min_angle": 3.5, "skip_lights": {"bearPNG": [0, 1, 2]}}
    from psinspect.defects import parse_severity

    assert kw["severity"] == parse_severity("low")


@pytest.mark.parametrize(("given", "holdout"), [(None, None), ("none", []), ("NONE ", [])])
def test_dataset_holdout_none_means_no_test_surfaces(given, holdout, tmp_path, monkeypatch,
                                                      capsys) -> None:
    """No --holdout: the automatic holdout (None); --holdout none: no test surface at all."""
    options = [] if given is None else ["--holdout", given]
    assert _dataset_call(tmp_path, monkeypatch, capsys, *options)["holdout"] == holdout


# -------------------------------------------------------------------------------- defects


def test_defects_passes_every_option(tmp_path, monkeypatch, capsys) -> None:
    import psinspect.defects as defects
    from psinspect.dataset import stable_hash

    seen = _recorder(monkeypatch, defects, "implant_defects")
    src = _normal_map(tmp_path)
    code, _, err = run_cli(["defects", src, "-o", tmp_path / "out", "--per-image", "3",
                            "--types", "pit,scratch", "--severity", "high", "--seed", "5",
                            "--min-angle", "4", "--along", "view"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [f"error: {src}: recorded"], err  # (map named)
    rng = seen["args"][2]
    assert rng.random() == np.random.default_rng([5, stable_hash("ball")]).random()
    kw = seen["kwargs"]
    assert {k: kw[k] for k in ("count", "types", "min_angle", "along")} == {
        "count": 3, "types": ["pit", "scratch"], "min_angle": 4.0, "along": "view"}
    assert kw["severity"] == defects.parse_severity("high")


@pytest.mark.parametrize("per_image", ["0", "-1"])
def test_defects_refuses_fewer_than_one_per_image(per_image, tmp_path, monkeypatch,
                                                  capsys) -> None:
    code, _, err = run_cli(["defects", _normal_map(tmp_path), "-o", tmp_path / "out",
                            "--per-image", per_image], monkeypatch, capsys)
    assert code == 2 and error_lines(err)[0].startswith("error: --per-image must be between 1")
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------- render


@pytest.mark.parametrize("instances", [False, True])
def test_render_passes_every_option(instances, tmp_path, monkeypatch, capsys) -> None:
    import psinspect.render as render

    seen = _recorder(monkeypatch, render, "render_instances" if instances else "render_dataset")
    extra = (["--instances", "4", "--design-seed", "3", "--jitter-px", "2", "--jitter-deg",
              "1.5", "--families", "plate"] if instances else
             ["--parts", "4", "--families", "disc,plate"])
    code, _, err = run_cli(["render", "-o", tmp_path / "r", *extra, "--defect-rate", "0.5",
                            "--lights", "8", "--layout", "ring", "--seed", "6", "--size", "96",
                            "--max-defects", "2", "--types", "pit", "--severity", "medium",
                            "--no-specular", "--no-shadows"], monkeypatch, capsys)
    _stopped_at_the_call(code, err)
    assert seen["args"][1] == 4
    kw = seen["kwargs"]
    common = {"defect_rate": 0.5, "lights": 8, "layout": "ring", "seed": 6, "size": 96,
              "max_defects": 2, "defect_types": ["pit"], "specular": False, "shadows": False}
    assert {k: kw[k] for k in common} == common
    if instances:
        assert {k: kw[k] for k in ("design_seed", "family", "jitter_px", "jitter_deg")} == {
            "design_seed": 3, "family": "plate", "jitter_px": 2.0, "jitter_deg": 1.5}
    else:
        assert kw["families"] == ["disc", "plate"]


# -------------------------------------------------------------------------------- normals


def test_normals_passes_gamma_and_records_the_light_choice(tmp_path, monkeypatch,
                                                           capsys) -> None:
    import psinspect.capture as capture

    cap = tiny_capture(tmp_path / "cap", k=8)
    gammas = []
    real = capture.load_capture

    def load(*args: Any, **kwargs: Any) -> Any:
        gammas.append(kwargs.get("gamma"))
        return real(*args, **kwargs)

    monkeypatch.setattr(capture, "load_capture", load)
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "n", "--gamma", "2.2",
                            "--num-lights", "6"], monkeypatch, capsys)
    assert code == 0, err
    assert gammas == [2.2]
    run = json.loads((tmp_path / "n" / "run.json").read_text())
    assert run["settings"]["gamma"] == 2.2
    assert run["settings"]["lights"] is None and run["settings"]["num_lights"] == 6
    assert len(run["light_indices_1based"]) == 6


# -------------------------------------------------------------------------------- serve


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("localhost", False),
                                              ("::1", False), ("0.0.0.0", True)])
def test_serve_warns_only_when_reachable_from_other_machines(host, warned, tmp_path,
                                                             monkeypatch, capsys) -> None:
    import psinspect.app as app

    loaded: list[bool] = []
    monkeypatch.setattr(app, "load_model_choices",
                        lambda dirs, include_default: loaded.append(include_default) or [])
    monkeypatch.setattr(app, "check_bindable", lambda host, port: None)
    seen = _recorder(monkeypatch, app, "serve")
    code, _, err = run_cli(["serve", "--host", host, "--port", "8123", "--no-default-model",
                            "--max-upload-mb", "3", "--max-image-side", "512"],
                           monkeypatch, capsys)
    _stopped_at_the_call(code, err)
    assert loaded == [False]
    assert ("reachable from other machines" in err) is warned
    kw = seen["kwargs"]
    assert (kw["host"], kw["port"]) == (host, 8123)
    assert kw["limits"] == app.Limits(max_upload_bytes=3 * 1024 * 1024, max_image_side=512)


# -------------------------------------------------------------------------------- run


def test_run_passes_every_option(tmp_path, monkeypatch, capsys) -> None:
    import psinspect.pipeline as pipeline

    seen = _recorder(monkeypatch, pipeline, "run_pipeline")
    code, _, err = run_cli(["run", "-o", tmp_path / "r", "--quick", "--seed", "4",
                            "--holdout", " part001_disc, ,part002_plate", "--from-scratch",
                            "--epochs", "3", "--parts", "6", "--tta", "2", "--skip-lights",
                            "part001_disc:1-2"], monkeypatch, capsys)
    _stopped_at_the_call(code, err)
    cfg = seen["args"][1]
    assert (cfg.preset, cfg.seed, cfg.holdout, cfg.fine_tune, cfg.epochs, cfg.parts,
            cfg.tta, cfg.skip_lights, cfg.pretrained) == (
        "quick", 4, ["part001_disc", "part002_plate"], False, 3, 6, 2,
        {"part001_disc": [0, 1]}, False)
    code, _, err = run_cli(["run", "-o", tmp_path / "r2", "--pretrained"], monkeypatch, capsys)
    _stopped_at_the_call(code, err)
    cfg = seen["args"][1]
    assert (cfg.preset, cfg.seed, cfg.holdout, cfg.fine_tune, cfg.pretrained) == (
        "default", 0, None, True, True)


@pytest.mark.parametrize("options", [["--pretrained", "--epochs", "2"],
                                     ["--pretrained", "--model", "unet-ae"],
                                     ["--pretrained", "--from-scratch"],
                                     ["--data", "DATA", "--parts", "4"]])
def test_run_refuses_options_that_do_not_apply(options, tmp_path, monkeypatch,
                                               capsys) -> None:
    import psinspect.pipeline as pipeline

    (tmp_path / "DATA").mkdir()
    seen = _recorder(monkeypatch, pipeline, "run_pipeline")
    options = [str(tmp_path / o) if o == "DATA" else o for o in options]
    code, _, err = run_cli(["run", "-o", tmp_path / "r", *options], monkeypatch, capsys)
    assert code == 2 and not seen and len(error_lines(err)) == 1, err
    assert not (tmp_path / "r").exists()


def test_serve_binds_this_machine_only_by_default(tmp_path, monkeypatch, capsys) -> None:
    import psinspect.app as app

    monkeypatch.setattr(app, "load_model_choices", lambda dirs, include_default: [])
    monkeypatch.setattr(app, "check_bindable", lambda host, port: None)
    seen = _recorder(monkeypatch, app, "serve")
    code, _, err = run_cli(["serve"], monkeypatch, capsys)
    _stopped_at_the_call(code, err)
    assert (seen["kwargs"]["host"], seen["kwargs"]["port"]) == ("127.0.0.1", 7860)
    assert "warning" not in err


@pytest.mark.parametrize("args", [
    ["defects", "x.npy", "-o", "o", "--seed", "-1"],
    ["render", "-o", "o", "--parts", "1", "--seed", "-1"],
    ["render", "-o", "o", "--instances", "2", "--design-seed", "-1"],
    ["dataset", "caps", "-o", "o", "--seed", "-1"],
    ["train", "d", "-o", "o", "--seed", "-1"],
    ["run", "--seed", "-1"],
    ["render", "-o", "o", "--parts", "1", "--seed", str(2 ** 64)],
])
def test_a_seed_out_of_range_is_a_usage_error(args, tmp_path, monkeypatch, capsys) -> None:
    """A negative seed (numpy's generators refuse it: a traceback) or one past 2 ** 63 - 1 is
    refused by the option itself, on one line, before anything is read or written."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and "seed': Input should be" in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(("argv", "option"), [
    (["defects", "m.npy", "-o", "d", "--types", "scratch", "--types", "dent"], "--types"),
    (["detect", "m.npy", "-o", "d", "--tta", "2", "--tta=4"], "--tta"),
    (["detect", "m.npy", "-o", "d", "--out", "e"], "-o"),
    (["train", "m.npy", "n.npy", "-o", "m", "--force", "--force"], "--force"),
])
def test_an_option_given_twice_is_refused(argv, option, tmp_path, monkeypatch,
                                          capsys) -> None:
    """click keeps the last value of an option given twice, silently: `defects --types scratch
    --types dent` drew dents only. Options that take several (--calibrate-on) stay free."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(argv, monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {option} is given more than once; give it once (only the last would count)"]
    code, _, err = run_cli(["train", "a.npy", "b.npy", "-o", "m", "--calibrate-on", "c.npy",
                            "--calibrate-on", "d.npy"], monkeypatch, capsys)
    assert code == 2 and "given more than once" not in err and "input not found" in err, err


def test_defects_refuses_a_map_given_twice(tmp_path, monkeypatch, capsys) -> None:
    """As detect does: the same map twice gave two defective copies of it, A_x and A_x_2."""
    save_npy(tmp_path / "m.npy", sphere_normals(32)[0])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "link.npy").symlink_to(tmp_path / "m.npy")
    code, _, err = run_cli(["defects", tmp_path / "m.npy", tmp_path / "sub" / "link.npy", "-o",
                            tmp_path / "d"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {tmp_path / 'sub' / 'link.npy'}: this input is given twice (also as "
        f"{tmp_path / 'm.npy'}): give each map once"], err
    assert not (tmp_path / "d").exists()
