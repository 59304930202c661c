"""``psinspect run`` end to end at the CI size (``--quick``), and its output-folder rules."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psinspect.modelstore import default_model_dir, read_train_log
from psinspect.pipeline import PRESETS, make_config, verdicts_text
from psinspect.train import few_maps_note


def _psinspect(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run(
        [sys.executable, "-c", "from psinspect.cli import main; main()", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_presets() -> None:
    q = make_config("quick")
    d = make_config("default")
    assert q.parts < d.parts and q.epochs <= d.epochs and q.subsets <= d.subsets
    assert make_config("quick", seed=3, parts=None).seed == 3  # None = keep the preset's value
    assert set(PRESETS) == {"default", "quick"}


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = _psinspect("run", "--quick", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2
    assert "not empty" in r.stderr and "--force" in r.stderr
    assert "Traceback" not in r.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    r = _psinspect("run", "--quick", "--skip-lights", "bear", "-o", str(tmp_path / "o4"),
                   cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: --skip-lights 'bear': use SURFACE:RANGES, e.g. bearPNG:1-20")
    assert not (tmp_path / "o4").exists()
    r = _psinspect("run", "--quick", "--data", str(tmp_path / "nope"), "-o",
                   str(tmp_path / "o2"), cwd=tmp_path)
    assert r.returncode == 2 and "--data" in r.stderr
    assert not (tmp_path / "o2").exists()
    empty = tmp_path / "no_captures"
    empty.mkdir()
    r = _psinspect("run", "--quick", "--data", str(empty), "-o", str(tmp_path / "o3"),
                   cwd=tmp_path)
    assert r.returncode == 2 and "no_captures" in r.stderr and "Traceback" not in r.stderr
    # a failed run leaves neither the output folder nor its staging folder behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_captures", "out"]


def _check_run_folder(out: Path, stderr: str) -> dict:
    """What every run writes; returns metrics.json."""
    for stage in ("captures", "dataset", "model", "detect", "evaluate"):
        assert f"] {stage}:" in stderr  # one progress line per stage
    assert (out / "report.html").stat().st_size > 1000
    assert "<h2>Run</h2>" in (out / "report.html").read_text()
    assert (out / "model" / "config.json").is_file()
    assert (out / "dataset" / "manifest.json").is_file()
    assert (out / "predictions" / "summary.json").is_file()
    # no staging folder left behind, no absolute staging paths in the artifacts
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert ".staging-" not in (out / "dataset" / "manifest.json").read_text()
    assert ".staging-" not in (out / "model" / "config.json").read_text()
    assert ".staging-" not in (out / "report.html").read_text()  # (it named the predictions)
    # the test maps come from surfaces that the model never saw
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    train_surfaces = {it["surface"] for it in manifest["items"]
                      if it["split"] in ("train-clean", "val-clean")}
    test_surfaces = {it["surface"] for it in manifest["items"] if it["split"].startswith("test")}
    assert train_surfaces and test_surfaces and not train_surfaces & test_surfaces
    # the report names both, and why each test surface is one (run.json too)
    run = json.loads((out / "run.json").read_text())
    assert run["train_surfaces"] == sorted(train_surfaces)
    own = set(manifest["config"]["real_defective"])
    assert run["test_surfaces_why"] == {
        k: "its own defects, M_defect.png" if k in own
        else "drawn: a quarter of the clean captures" for k in sorted(test_surfaces)}
    assert ("; training surfaces: " + ", ".join(sorted(train_surfaces)) + ".") in (
        out / "report.html").read_text()

    metrics = json.loads((out / "metrics.json").read_text())
    pooled = metrics["pooled"]
    for key in ("pixel_auroc", "aupro", "pixel_ap", "f1_max", "image_auroc"):
        assert 0.0 <= pooled[key] <= 1.0, (key, pooled[key])
    assert pooled["maps"] >= 4 and 0 < pooled["defective_maps"] < pooled["maps"]
    # intervals over the held-out test surfaces, recorded in metrics.json and run.json
    iv = metrics["intervals"]
    assert iv["groups"] == len(test_surfaces)
    assert iv["pixel_auroc"][0] <= iv["pixel_auroc"][1]
    run = json.loads((out / "run.json").read_text())
    assert run["intervals"] == iv
    # the report states every stage's time and the total as run.json records them
    times = ", ".join(f"{k} {t}" for k, t in run["timings_s"].items())
    assert "evaluate" in run["timings_s"] and f"Stage times (s): {times}." in (
        out / "report.html").read_text()
    v = metrics["verdicts"]
    assert f"Verdicts at the calibrated image threshold: {verdicts_text(v)}." in (
        out / "report.html").read_text()
    assert v["defective_failed"] + v["defective_passed"] == pooled["defective_maps"]
    assert sum(v[k] for k in ("defective_failed", "defective_passed", "clean_failed",
                              "clean_passed")) == pooled["maps"]
    # the verdicts at other operating points, from the run's model's calibration scores
    from psinspect.train import OPERATING_RATES

    points = metrics["operating_points"]
    assert [p["rate"] for p in points] == list(OPERATING_RATES), metrics["operating_points_note"]
    summary = json.loads((out / "predictions" / "summary.json").read_text())
    own = [p for p in points if p["image_threshold"] == summary["image_threshold"]]
    assert own and own[0]["defective_failed"] == v["defective_failed"]
    assert "Other operating points" in (out / "report.html").read_text()
    assert run["operating_points"] == points and run["image_threshold"] == own[0][
        "image_threshold"]
    return metrics


@pytest.mark.slow
def test_run_quick_pretrained_end_to_end(tmp_path: Path) -> None:
    """Fresh rendered parts, PS, dataset, the bundled model, detect, evaluate, report: the
    shipped model must find the defects of parts it has never seen, better than chance."""
    import numpy as np

    from psinspect.render import DEFAULT_FAMILIES

    # the first rendered part's name (render_dataset: family drawn from seed [0, 0]), whose
    # first two lights are left out, as DiLiGenT bear's bad images are
    first = f"part000_{DEFAULT_FAMILIES[int(np.random.default_rng([0, 0]).integers(3))]}"
    assert len(DEFAULT_FAMILIES) == 3
    out = tmp_path / "run"
    r = _psinspect("run", "--quick", "--pretrained", "--seed", "0", "-o", str(out),
                   "--skip-lights", f"{first}:1-2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    assert manifest["config"]["skip_lights"] == {first: [0, 1]}
    used = {i for it in manifest["items"] if it["surface"] == first for i in it["lights"]}
    assert used and not used & {0, 1}
    assert "pixel_auroc" in r.stdout and "report.html" in r.stdout
    assert "bootstrap intervals over the" in r.stdout
    pooled = _check_run_folder(out, r.stderr)["pooled"]
    # better than chance: random scores give pixel AUROC 0.5, normalised AUPRO(0.3) about
    # 0.15, AP = the share of defect pixels
    base_rate = pooled["defect_pixels"] / pooled["object_pixels"]
    assert pooled["pixel_auroc"] > 0.75
    assert pooled["aupro"] > 0.25
    assert pooled["pixel_ap"] > 3 * base_rate
    # (image AUROC over 12 maps is too coarse to judge here; the benchmarks report it)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["preset"] == "quick" and run["config"]["pretrained"]
    assert run["trained"] is False  # (the bundled model: nothing trained in this run)
    assert "epochs" not in run["config"] and "model" not in run["config"]  # not used
    assert run["config"]["parts"] == 8  # rendered
    assert run["config"]["skip_lights"] == {first: [0, 1]}
    assert run["timings_s"]["total"] < 120
    # the bundled model IS the run's model: no second scoring of the same maps
    assert run["bundled_model"] is None and not (out / "bundled").exists()
    assert "on the same test maps" not in r.stdout
    assert r.stdout.startswith("The bundled default model (--pretrained): pixel_auroc")
    # the verdicts at other pass/fail thresholds (not the one the run judged by)
    five = next(p for p in run["operating_points"] if p["rate"] == 0.05)
    assert (f"5%: {five['image_threshold']:.3g}, {five['defective_failed']} of "
            f"{five['defective_failed'] + five['defective_passed']} defective failed, "
            f"{five['clean_passed']} of {five['clean_passed'] + five['clean_failed']} clean "
            "passed") in r.stdout
    assert "1%: " not in r.stdout  # (the bundled model's own, shown above)


@pytest.mark.slow
def test_run_quick_trains_end_to_end(tmp_path: Path) -> None:
    """The training path: a model is trained in the run (seconds of training: its scores are
    checked for range and bookkeeping, not quality; quality is the benchmarks' job)."""
    out = tmp_path / "run"
    r = _psinspect("run", "--quick", "--seed", "0", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _check_run_folder(out, r.stderr)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["training"]["epochs_run"] >= 1
    # by default the run fine-tunes the bundled model on its good training parts; where no
    # epoch beat it, its weights are kept, and the run says so
    assert config["training"]["init_from"]["model"] == "bundled"
    kept = config["training"]["init_from"]["kept_start_weights"]
    bundled_sha = json.loads((default_model_dir() / "config.json").read_text())[
        "weights_sha256"]
    assert kept is (config["weights_sha256"] == bundled_sha)
    assert len(read_train_log(out / "model")) == config["training"]["epochs_run"]
    run = json.loads((out / "run.json").read_text())
    assert not run["config"]["pretrained"] and run["timings_s"]["total"] < 120
    assert run["trained"]  # (False for a training-free model)
    assert run["fine_tuned_from"] == "bundled" and run["config"]["fine_tune"]
    # beside the model trained in seconds: the bundled default model on the same test maps,
    # with its own detect outputs, figures and verdicts (in run.json, the report and stdout)
    bundled = run["bundled_model"]
    assert bundled["model"] == "geo-seg"
    assert all(0.0 <= bundled["metrics"][k] <= 1.0 for k in ("pixel_auroc", "aupro"))
    summary = json.loads((out / "bundled" / "summary.json").read_text())
    tests = [it for it in json.loads((out / "dataset" / "manifest.json").read_text())["items"]
             if it["split"].startswith("test")]
    assert len(summary["inputs"]) == len(tests) == sum(bundled["verdicts"][k] for k in (
        "defective_failed", "defective_passed", "clean_failed", "clean_passed"))
    assert all((out / "bundled" / f"{s['name']}_score.npy").is_file() for s in summary["inputs"])
    # kept, the bundled model's own calibration maps join the pass/fail fit (their scores
    # are those of the same weights): 4 new maps alone put it far off
    start = len(json.loads((default_model_dir() / "config.json").read_text())["calibration"][
        "val_image_scores"])
    assert config["calibration"].get("start_model_maps") == (start if kept else None)
    assert r.stdout.startswith(
        "The geo-seg model fine-tuned in this run from the bundled one"
        + (" (no epoch beat the bundled model on the validation maps: its weights kept, the "
           "pixel threshold fitted here, the pass/fail threshold to these good maps and its own "
           f"{start} calibration maps)" if kept else "") + ": pixel_auroc")
    assert json.loads((out / "run.json").read_text())["fine_tune_kept_start"] is kept
    assert "fine-tuned in this run from the bundled model" in (out / "report.html").read_text()
    line = next(x for x in r.stdout.splitlines() if x.startswith("The bundled default model"))
    assert f"pixel_auroc {bundled['metrics']['pixel_auroc']:.3f}" in line
    assert "The bundled default model" in (out / "report.html").read_text()
    # the run's own verdicts are said beside the bundled model's
    v = run["verdicts"]
    assert f"; {verdicts_text(v)}" in r.stdout.splitlines()[0]
    # the quick preset's few validation maps: its pass/fail threshold is flagged as unsure
    # (said while training, in run.json and in the report), unless the bundled weights were
    # kept, whose own calibration maps then join the fit
    n = config["calibration"]["val_maps"]
    assert n < 8
    if kept:
        assert run["notes"] == [] and "only" not in r.stderr
    else:
        assert run["notes"] == [few_maps_note(config["calibration"])]
        assert f"only {n} good maps" in run["notes"][0]
        assert f"warning: {run['notes'][0]}" in r.stderr
        assert html.escape(f"Note: {run['notes'][0]}.") in (out / "report.html").read_text()


def test_pretrained_copies_the_bundled_model(tmp_path: Path) -> None:
    """--pretrained: no training; the bundled model is copied into OUT/model and loaded."""
    from psinspect.modelstore import default_model_dir
    from psinspect.pipeline import _model_stage

    calls: list[str] = []
    import time

    start = time.time()
    bundle = _model_stage(tmp_path, make_config("quick", pretrained=True), None,
                          lambda i, text, steps: calls.append(text) or 0.0,
                          lambda i, t0, summary: calls.append(summary))
    src = default_model_dir()
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(
        p.name for p in src.iterdir())
    assert bundle.path == tmp_path / "model"
    # made by the run: the user's umask and today's date, not the package files' (walkthrough)
    umask = os.umask(0)
    os.umask(umask)
    for f in (tmp_path / "model").iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
        assert f.stat().st_mtime >= start - 1, f
    assert bundle.threshold > 0 and bundle.image_threshold > 0
    assert "--pretrained" in calls[0]
    b8 = _model_stage(tmp_path / "t8", make_config("quick", pretrained=True, tta=8), None,
                      lambda i, text, steps: 0.0, lambda i, t0, summary: None)
    assert b8.model.tta == 8
    assert b8.threshold == b8.config["tta_thresholds"]["8"]["threshold"] != bundle.threshold


def test_from_scratch_and_other_models_start_from_random_weights(tmp_path: Path) -> None:
    """--from-scratch (``fine_tune=False``), and a model other than the bundled one's kind,
    train from random weights; --pretrained refuses --from-scratch."""
    from psinspect.pipeline import fine_tunes

    assert fine_tunes(make_config("quick")) and fine_tunes(make_config("quick", model="geo-seg"))
    assert not fine_tunes(make_config("quick", fine_tune=False))
    assert not fine_tunes(make_config("quick", model="unet-ae"))
    assert not fine_tunes(make_config("quick", pretrained=True))
    r = _psinspect("run", "--quick", "--pretrained", "--from-scratch", "-o",
                   str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and "--from-scratch do not apply" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"tta": 3}, "--tta must be one of 1, 2, 4, 8"),
    ({"tta": 2, "model": "geometric"}, "no test-time augmentation"),
])
def test_bad_tta_is_refused_before_any_work(tmp_path: Path, overrides: dict,
                                            message: str) -> None:
    from psinspect.errors import PsinspectError
    from psinspect.pipeline import run_pipeline

    with pytest.raises(PsinspectError, match=message):
        run_pipeline(tmp_path / "w", make_config("quick", **overrides))
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"holdout": ["part001_disc"]}, "--holdout: no capture named part001_disc"),
    ({"skip_lights": {"nope": [0]}}, "--skip-lights: no capture named nope"),
])
def test_an_unknown_surface_name_is_refused_before_rendering(
        tmp_path: Path, overrides: dict, message: str) -> None:
    """The rendered parts' names are known before they are rendered (part001 of the quick
    preset's seed is a plate): a wrong --holdout or --skip-lights name fails at once, not after
    the rendering stage; the names named as the surfaces are those render_dataset gives."""
    from psinspect.errors import PsinspectError
    from psinspect.pipeline import run_pipeline
    from psinspect.render import part_names, render_dataset

    cfg = make_config("quick", **overrides)
    names = part_names(cfg.parts, seed=cfg.seed)
    with pytest.raises(PsinspectError, match=message) as err:
        run_pipeline(tmp_path / "w", cfg)
    assert f"(surfaces: {', '.join(names)})" in str(err.value)
    assert not (tmp_path / "w").exists()
    rendered = render_dataset(tmp_path / "r", 3, seed=cfg.seed, size=32, lights=4)
    assert [f.name for f in rendered] == names[:3]
    assert part_names(4, seed=5, families=["organic"]) == [f"part{i:03d}_organic"
                                                            for i in range(4)]


def test_a_run_needs_a_training_surface_unless_pretrained(tmp_path: Path) -> None:
    """Every surface held out: a run that trains is refused before any work (the rendered
    parts' names are known before rendering) or, for given captures, after the dataset stage,
    naming --pretrained; with --pretrained every capture is a test surface and the bundled
    model judges them all."""
    from psinspect.errors import PsinspectError
    from psinspect.pipeline import run_pipeline
    from psinspect.render import part_names, render_dataset

    cfg = make_config("quick", parts=3)
    names = part_names(3, seed=cfg.seed)
    with pytest.raises(PsinspectError, match="no surface left for training.*--pretrained"):
        run_pipeline(tmp_path / "w", make_config("quick", parts=3, holdout=names))
    assert not (tmp_path / "w").exists()
    caps = render_dataset(tmp_path / "caps", 2, defect_rate=0.0, seed=3, lights=8)  # 256 px
    held = [c.name for c in caps]
    with pytest.raises(PsinspectError, match="no surface left for training"):
        run_pipeline(tmp_path / "x", make_config("quick", data=tmp_path / "caps", holdout=held))
    run = run_pipeline(tmp_path / "y", make_config("quick", data=tmp_path / "caps",
                                                   holdout=held, pretrained=True))
    manifest = json.loads((tmp_path / "y" / "dataset" / "manifest.json").read_text())
    assert {it["surface"] for it in manifest["items"]} == set(held)
    assert {it["split"] for it in manifest["items"]} == {"test-clean", "test-defective"}
    assert run["trained"] is False
    summary = json.loads((tmp_path / "y" / "predictions" / "summary.json").read_text())
    assert len(summary["inputs"]) == len(manifest["items"])


def test_staged_paths_are_rewritten_absolute_and_as_given(tmp_path: Path, monkeypatch) -> None:
    """JSON files name the final folder, whether a path was written absolute or relative as
    given (a walkthrough's run given `-o run3` left detect's summary.json sources pointing at
    '.run3.staging-.../dataset/...', a folder that no longer exists)."""
    from psinspect.pipeline import relocate_paths

    monkeypatch.chdir(tmp_path)
    stage, final = Path("o d") / ".r 1.staging-7-ab", Path("o d") / "r 1"
    (stage / "predictions").mkdir(parents=True)
    doc = {"source": str(stage / "dataset" / "A_x.npy"),
           "dataset": str((stage / "dataset").resolve()), "other": "o d/r 1-notes"}
    (stage / "predictions" / "summary.json").write_text(json.dumps(doc))
    # the report names them too, HTML-escaped ('&' in a folder's name is '&amp;' there)
    amp = Path("o&d") / ".r.staging-7-ab"
    amp.mkdir(parents=True)
    (amp / "report.html").write_text(f"<p>the predictions in {html.escape(str(amp.resolve()))}"
                                     "/predictions</p>")
    relocate_paths(stage, final)
    got = json.loads((stage / "predictions" / "summary.json").read_text())
    assert got == {"source": str(final / "dataset" / "A_x.npy"),
                   "dataset": str((final / "dataset").resolve()), "other": "o d/r 1-notes"}
    relocate_paths(amp, Path("o&d") / "r")
    assert (amp / "report.html").read_text() == (
        f"<p>the predictions in {html.escape(str(Path('o&d/r').resolve()))}/predictions</p>")


def test_run_model_geo_seg_is_the_default_run() -> None:
    """--model geo-seg dropped the preset's schedule (fine-tuned 4x longer than the default
    run); another model recorded fine_tune true though it trains from random weights."""
    from psinspect.pipeline import recorded_config

    default, named = make_config("default"), make_config("default", model="geo-seg")
    assert named.model_hyperparameters == default.model_hyperparameters == {
        "steps_per_epoch": 12}
    assert named.fine_tune and default.fine_tune
    from psinspect.pipeline import comparison_tta

    assert comparison_tta(make_config("default", model="geo-seg", tta=2)) == 2
    assert comparison_tta(make_config("default", tta=2)) == 2
    assert comparison_tta(make_config("default", model="unet-ae")) is None
    other = make_config("default", model="unet-ae")
    assert other.model_hyperparameters == {} and not other.fine_tune
    assert recorded_config(other)["fine_tune"] is False


def test_compare_bundled_counts_verdicts_by_split(monkeypatch, tmp_path):
    """Two test maps, a defective one that failed and a clean one that passed: 1 defective
    failed, 1 clean passed, nothing else (labels swapped: 1 clean failed, 1 defective passed)."""
    import psinspect.detect
    import psinspect.metrics
    import psinspect.modelstore
    import psinspect.report
    from psinspect.pipeline import compare_bundled

    class _B:
        config = {"model": "geo-seg"}

    monkeypatch.setattr(psinspect.modelstore, "load_model_dir", lambda *a, **k: _B())
    monkeypatch.setattr(psinspect.detect, "write_detection_outputs", lambda *a, **k: {
        "inputs": [{"verdict": "fail"}, {"verdict": "pass"}]})
    monkeypatch.setattr(psinspect.report, "load_eval_items", lambda *a, **k: ([], {}))
    monkeypatch.setattr(psinspect.metrics, "evaluate", lambda *a, **k: {"pooled": {}})
    tests = [{"file": "a.npy", "split": "test-defective"}, {"file": "b.npy", "split": "test-clean"}]
    got = compare_bundled(tmp_path / "b", tmp_path, tests)["verdicts"]
    assert {k: got[k] for k in ("defective_failed", "defective_passed", "clean_failed",
                                "clean_passed")} == {"defective_failed": 1, "defective_passed": 0,
                                                     "clean_failed": 0, "clean_passed": 1}
