"""evaluate says when the model was trained on a test surface (traced through the model's
config.json to the captures), in metrics.json, report.html and a warning line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _robust_util import run_cli

from psinspect.dataset import build_dataset
from psinspect.detect import write_detection_outputs
from psinspect.modelstore import load_model_dir
from psinspect.render import render_dataset
from psinspect.train import train_model


@pytest.fixture(scope="module")
def caps(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("leak")
    return render_dataset(root / "caps", 4, defect_rate=0.0, seed=1, size=64, lights=8)


def _evaluate(model: Path, ds: Path, tmp: Path, monkeypatch, capsys) -> tuple[dict, str]:
    manifest = json.loads((ds / "manifest.json").read_text())
    tests = [ds / it["file"] for it in manifest["items"] if it["split"].startswith("test")]
    write_detection_outputs(tests, tmp / "det", load_model_dir(model))
    code, _, err = run_cli(["evaluate", tmp / "det", ds, "-o", tmp / "ev"], monkeypatch, capsys)
    assert code == 0, err
    return json.loads((tmp / "ev" / "metrics.json").read_text()), err


@pytest.mark.parametrize("trained_on", ["dataset", "captures"])
def test_evaluate_names_test_surfaces_seen_in_training(caps: list[Path], tmp_path: Path,
                                                       monkeypatch, capsys,
                                                       trained_on: str) -> None:
    names = [c.name for c in caps]
    ds_a, ds_b = tmp_path / "a", tmp_path / "b"
    build_dataset(caps, ds_a, holdout=[names[3]], seed=0, subsets=2, augment=[],
                  defects_per_map=1, severity="high")
    build_dataset(caps, ds_b, holdout=[names[0]], seed=0, subsets=2, augment=[],
                  defects_per_map=1, severity="high")
    inputs = [ds_a] if trained_on == "dataset" else caps[:3]
    model = tmp_path / "model"
    train_model(inputs, model, model_name="geometric")

    # held out from the model's training: no warning
    metrics, err = _evaluate(model, ds_a, tmp_path / "own", monkeypatch, capsys)
    assert metrics["test_surfaces_seen_in_training"] == [] and "warning" not in err
    # names[0] was trained on and is a test surface of ds_b
    metrics, err = _evaluate(model, ds_b, tmp_path / "other", monkeypatch, capsys)
    assert metrics["test_surfaces_seen_in_training"] == [names[0]]
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert warnings == [f"warning: the model was trained on 1 of the test surfaces "
                        f"({names[0]}): these figures are not a measurement on unseen "
                        "surfaces"]
    html = (tmp_path / "other" / "ev" / "report.html").read_text()
    assert f"Warning: the model was trained on 1 of the test surfaces ({names[0]})" in html


def test_seen_surfaces_are_traced_by_content(caps: list[Path], tmp_path: Path, monkeypatch,
                                             capsys) -> None:
    """Captures trained on, then copied elsewhere and held out in a dataset, are found (by
    their fingerprints); another part rendered into a trained-on folder is not."""
    import shutil

    names = [c.name for c in caps]
    model = tmp_path / "model"
    train_model(caps[:3], model, model_name="geometric")
    moved = tmp_path / "moved"
    shutil.copytree(caps[0].parent, moved)
    ds = tmp_path / "ds"
    build_dataset([moved], ds, holdout=[names[0]], seed=0, subsets=2, augment=[],
                  defects_per_map=1, severity="high")
    metrics, err = _evaluate(model, ds, tmp_path / "e1", monkeypatch, capsys)
    assert metrics["test_surfaces_seen_in_training"] == [names[0]] and "warning" in err

    # a trained-on folder refilled with another part: same path and name, other content
    again = [Path(shutil.copytree(c, tmp_path / "again" / c.name)) for c in caps]
    model2 = tmp_path / "model2"
    train_model(again[:3], model2, model_name="geometric")
    shutil.rmtree(again[0])
    shutil.copytree(caps[3], again[0])
    ds2 = tmp_path / "ds2"
    # (not again[3]: the same capture twice is refused)
    build_dataset(again[:3], ds2, holdout=[again[0].name], seed=0, subsets=2, augment=[],
                  defects_per_map=1, severity="high")
    metrics, err = _evaluate(model2, ds2, tmp_path / "e2", monkeypatch, capsys)
    assert metrics["test_surfaces_seen_in_training"] == [] and "warning" not in err


def test_models_trained_on_maps_are_traced(caps: list[Path], tmp_path: Path, monkeypatch,
                                           capsys) -> None:
    """A model trained on a dataset's own test maps (.npy inputs), or on the normals that
    `psinspect normals` solved from a test capture, was not noticed (its config recorded no
    fingerprint); and a model folder that is gone gave [] ("none seen"), not "cannot tell"."""
    import shutil

    names = [c.name for c in caps]
    ds = tmp_path / "ds"
    build_dataset(caps, ds, holdout=[names[3]], seed=0, subsets=2, augment=[],
                  defects_per_map=1, severity="high")
    manifest = json.loads((ds / "manifest.json").read_text())
    clean_test = [ds / it["file"] for it in manifest["items"] if it["split"] == "test-clean"]
    model = tmp_path / "on_maps"
    train_model([clean_test[0], ds / manifest["items"][0]["file"]], model,
                model_name="geometric")
    metrics, err = _evaluate(model, ds, tmp_path / "e1", monkeypatch, capsys)
    assert metrics["test_surfaces_seen_in_training"] == [names[3]] and "warning" in err

    code, _, err = run_cli(["normals", caps[3], "-o", tmp_path / "n3"], monkeypatch, capsys)
    assert code == 0, err
    model = tmp_path / "on_normals"
    train_model([tmp_path / "n3", caps[0]], model, model_name="geometric")
    metrics, err = _evaluate(model, ds, tmp_path / "e2", monkeypatch, capsys)
    assert metrics["test_surfaces_seen_in_training"] == [names[3]] and "warning" in err

    gone = tmp_path / "gone"
    shutil.copytree(model, gone)
    manifest_tests = [ds / it["file"] for it in manifest["items"]
                      if it["split"].startswith("test")]
    write_detection_outputs(manifest_tests, tmp_path / "e3" / "det", load_model_dir(gone))
    shutil.rmtree(gone)
    code, _, err = run_cli(["evaluate", tmp_path / "e3" / "det", ds, "-o", tmp_path / "e3" /
                            "ev"], monkeypatch, capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "e3" / "ev" / "metrics.json").read_text())
    assert metrics["test_surfaces_seen_in_training"] is None
    # nor can the verdicts at other pass/fail thresholds be told
    assert metrics["operating_points"] == [] and metrics["operating_points_note"] == (
        f"the model folder {gone.resolve()} cannot be read")
    assert [ln for ln in err.splitlines() if ln.startswith("warning: ")] == [
        f"warning: cannot tell whether the model was trained on test surfaces: its folder "
        f"{gone.resolve()} cannot be read (moved or deleted?)"]


@pytest.mark.parametrize("given", ["capture", "map"])
def test_evaluate_names_test_surfaces_the_thresholds_were_calibrated_on(
        caps: list[Path], tmp_path: Path, monkeypatch, capsys, given: str) -> None:
    """A test surface given to train --calibrate-on (its capture, or one of the dataset's own
    test maps) is not trained on, but the model's thresholds were fitted to it: evaluate names
    it (metrics.json, a warning line, report.html), traced by content as training surfaces
    are; a model calibrated on other parts gets an empty list."""
    names = [c.name for c in caps]
    ds = tmp_path / "ds"
    build_dataset(caps, ds, holdout=[names[3]], seed=0, subsets=2, augment=[],
                  defects_per_map=1, severity="high")
    manifest = json.loads((ds / "manifest.json").read_text())
    clean_test = next(ds / it["file"] for it in manifest["items"]
                      if it["split"] == "test-clean")
    model = tmp_path / "model"
    train_model(caps[:2], model, model_name="geometric",
                calibration_inputs=[caps[3] if given == "capture" else clean_test])
    metrics, err = _evaluate(model, ds, tmp_path / "e", monkeypatch, capsys)
    assert metrics["test_surfaces_seen_in_training"] == []
    assert metrics["test_surfaces_seen_in_calibration"] == [names[3]]
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert warnings == [f"warning: the model's thresholds were calibrated on 1 of the test "
                        f"surfaces ({names[3]}; train --calibrate-on): its verdicts and masks "
                        "there are not those of unseen parts"]
    assert "Warning: the model&#x27;s thresholds were calibrated on 1" in (
        tmp_path / "e" / "ev" / "report.html").read_text()
    other = tmp_path / "other"
    train_model(caps[:2], other, model_name="geometric", calibration_inputs=[caps[2]])
    metrics, err = _evaluate(other, ds, tmp_path / "f", monkeypatch, capsys)
    assert metrics["test_surfaces_seen_in_calibration"] == [] and "warning" not in err
    # a calibration part given twice would count as two good parts: refused, nothing written
    from psinspect.errors import PsinspectError

    with pytest.raises(PsinspectError, match="the same capture as .*give each good part once"):
        train_model(caps[:2], tmp_path / "twice", model_name="geometric",
                    calibration_inputs=[caps[2], caps[2]])
    assert not (tmp_path / "twice").exists()


def test_audit_edits_to_detect_outputs_and_manifests(caps: list[Path], tmp_path: Path,
                                                     monkeypatch, capsys) -> None:
    """An audit of evaluate (2026-12-02): a geometric model retrained into its folder since
    detect hid that it was trained on a test surface; with the model folder gone, the other
    warnings were dropped; ground truth edited since detect, a newline in an input name,
    float16 scores and malformed defect records in the manifest were taken (the last with a
    traceback)."""
    import numpy as np

    from psinspect.fileio import save_npy

    names = [c.name for c in caps]
    ds = tmp_path / "ds"
    build_dataset(caps, ds, holdout=[names[0]], seed=0, subsets=2, augment=[],
                  defects_per_map=1, severity="high")
    model = tmp_path / "model"
    train_model(caps[:2], model, model_name="geometric")  # names[0] is a test surface
    metrics, _ = _evaluate(model, ds, tmp_path / "first", monkeypatch, capsys)
    assert metrics["test_surfaces_seen_in_training"] == [names[0]]
    det = tmp_path / "first" / "det"

    def evaluate(pred: Path, truth: Path = ds) -> tuple[int, str, dict | None]:
        out = tmp_path / f"ev{len(list(tmp_path.glob('ev*')))}"
        code, _, err = run_cli(["evaluate", pred, truth, "-o", out], monkeypatch, capsys)
        mpath = out / "metrics.json"
        return code, err, json.loads(mpath.read_text()) if mpath.is_file() else None

    # retrained into the same folder on other parts: its records no longer tell
    train_model(caps[2:], model, model_name="geometric", force=True)
    code, err, m = evaluate(det)
    assert code == 0 and m["test_surfaces_seen_in_training"] is None
    assert m["operating_points"] == []
    assert "now holds another model than detect used" in m["source"]["model_changed"]
    assert ("warning: cannot tell whether the model was trained on test surfaces: the model "
            f"folder {model.resolve()} now holds another model than detect used") in err
    # the ground truth of a clean test map turned defective since detect; the model folder
    # gone: both said (the second warning was dropped)
    edited = tmp_path / "ds_edited"
    import shutil
    shutil.copytree(ds, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    clean = next(it for it in manifest["items"] if it["split"] == "test-clean")
    defective = next(it for it in manifest["items"] if it["split"] == "test-defective")
    clean["split"], clean["defect_mask"] = "test-defective", defective["defect_mask"]
    (edited / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(model)
    code, err, m = evaluate(det, edited)
    stem = Path(clean["file"]).stem
    assert code == 0 and m["source"]["ground_truth_changed"] == [stem], err
    warned = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert any("cannot be read" in w for w in warned)
    assert any("the ground truth of 1 test map(s) is not what detect saw" in w
               and stem in w for w in warned)
    # a newline in an input name; float16 scores: one line each, refused
    bad = tmp_path / "det_nl"
    shutil.copytree(det, bad)
    summary = json.loads((bad / "summary.json").read_text())
    summary["inputs"].append({**summary["inputs"][0], "name": "x\nerror: fake"})
    (bad / "summary.json").write_text(json.dumps(summary))
    code, err, _ = evaluate(bad)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "control character" in err
    f16 = tmp_path / "det_f16"
    shutil.copytree(det, f16)
    score = next(f16.glob("*_score.npy"))
    save_npy(score, np.load(score).astype(np.float16))
    code, err, _ = evaluate(f16)
    assert code == 2 and "expected float32 scores" in err
    # malformed defect records in the manifest: one line naming the item
    for records, said in ((["dent"], "record 1 is 'dent', not an object"),
                          ([{"type": "dent", "bbox": "abcd"}], "is not four numbers"),
                          ([{"severity": [1]}], "severity [1] is not a finite number"),
                          ([{"type": ["x"]}], "type ['x'] is not a text")):
        broken = tmp_path / f"ds_{len(list(tmp_path.glob('ds_*')))}"
        shutil.copytree(ds, broken)
        manifest = json.loads((broken / "manifest.json").read_text())
        next(it for it in manifest["items"] if it["split"] == "test-defective")[
            "defects"] = records
        (broken / "manifest.json").write_text(json.dumps(manifest))
        code, err, _ = evaluate(det, broken)
        assert code == 2 and "malformed defects" in err and said in err, err
        assert len(err.strip().splitlines()) == 1
