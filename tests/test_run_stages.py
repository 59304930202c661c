"""``run_pipeline`` passes each of its settings to the stage it sets and records what it did
(run.json, the report's run section, the stage lines), with every slow stage replaced by a
stub (a mutation audit found the run's seed, light subsets, training schedule, test-time level
and several run.json fields could each be dropped or swapped with no test failing: the end-to-end
tests in test_run.py use the defaults). What each stage does with its settings is tested with
that stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from psinspect.errors import PsinspectError

#: the stubs' pooled metrics and verdict counts (every value distinct, so a swap shows)
POOLED = {"pixel_auroc": 0.91, "aupro": 0.52, "pixel_ap": 0.43, "f1_max": 0.34,
          "image_auroc": 0.75}
VERDICTS = {"defective_failed": 3, "defective_passed": 1, "clean_failed": 2, "clean_passed": 5}


class _Stages:
    """Stubs of the run's slow stages; ``calls`` holds what each was given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import psinspect.dataset
        import psinspect.detect
        import psinspect.modelstore
        import psinspect.pipeline
        import psinspect.render
        import psinspect.report
        import psinspect.train

        self.calls: dict[str, Any] = {"load": []}
        #: the trained model's config, as load_model_dir gives it
        self.config: dict[str, Any] = {"model": "geo-seg", "training": {"epochs_run": 1}}
        for module, name in ((psinspect.render, "render_dataset"),
                             (psinspect.render, "part_names"),
                             (psinspect.dataset, "build_dataset"),
                             (psinspect.train, "train_model"),
                             (psinspect.modelstore, "load_model_dir"),
                             (psinspect.detect, "write_detection_outputs"),
                             (psinspect.report, "write_evaluation"),
                             (psinspect.pipeline, "compare_bundled")):
            monkeypatch.setattr(module, name, getattr(self, name))

    def render_dataset(self, out: Path, parts: int, **kw: Any) -> list[Path]:
        self.calls["render"] = dict(kw, parts=parts)
        folders = [Path(out) / f"s{i}" for i in range(3)]
        for f in folders:
            f.mkdir(parents=True)
        return folders

    def part_names(self, parts: int, *, seed: int = 0) -> list[str]:
        return [f"s{i}" for i in range(3)]  # (render_dataset's names)

    def build_dataset(self, captures: list[Path], out: Path, **kw: Any) -> dict[str, Any]:
        self.calls["dataset"] = kw
        Path(out).mkdir(parents=True)
        items = [{"file": "N_s0.npy", "split": "train-clean", "surface": "s0"},
                 {"file": "N_s1.npy", "split": "val-clean", "surface": "s1"},
                 {"file": "N_s2.npy", "split": "test-clean", "surface": "s2"},
                 {"file": "A_s2.npy", "split": "test-defective", "surface": "s2"},
                 {"file": "A_s1.npy", "split": "test-defective", "surface": "s1b"}]
        return {"items": items, "surfaces": {"s0": {"role": "train"}, "s1": {"role": "train"},
                                             "s2": {"role": "test"}, "s1b": {"role": "test"}},
                "config": {"real_defective": ["s1b"], "holdout_auto": False}}

    def train_model(self, inputs: list[Path], out: Path, **kw: Any) -> dict[str, Any]:
        self.calls["train"] = kw
        return {"model": "geo-seg", "threshold": 1.0, "image_threshold": 2.0,
                "training": {"epochs_run": 1}}

    def load_model_dir(self, path: Path, tta: int | None = None) -> Any:
        self.calls["load"].append((Path(path).name, tta))

        class Bundle:
            config = self.config

        return Bundle()

    def write_detection_outputs(self, paths: list[Path], out: Path, bundle: Any,
                                **kw: Any) -> dict[str, Any]:
        self.calls["detect"] = [Path(p).name for p in paths]
        return {"inputs": [{"verdict": v} for v in ("fail", "pass", "pass")]}

    def write_evaluation(self, predictions: Path, dataset: Path, out: Path,
                         **kw: Any) -> dict[str, Any]:
        (Path(out) / "report.html").write_text("<h1>report</h1>")
        return {"verdicts": dict(VERDICTS), "pooled": dict(POOLED), "intervals": None,
                "operating_point": {"image_threshold": 2.5}, "operating_points": [],
                "operating_points_note": "the model stores no scores"}

    def compare_bundled(self, out: Path, dataset: Path, tests: list[dict[str, Any]],
                        tta: int | None = None) -> dict[str, Any]:
        self.calls["compare"] = {"tta": tta, "tests": [t["file"] for t in tests]}
        return {"model": "geo-seg", "metrics": {"pixel_auroc": 0.8},
                "verdicts": {"defective_failed": 1, "defective_passed": 0,
                             "clean_failed": 0, "clean_passed": 1}}


class _Lines:
    """A reporter keeping each stage's closing line."""

    def __init__(self) -> None:
        self.closed: list[str] = []

    def stage(self, index: int, total: int, name: str, text: str, steps: int | None) -> None:
        pass

    def tick(self, text: str = "") -> None:
        pass

    def done(self, summary: str, seconds: float) -> None:
        self.closed.append(summary)


def test_run_passes_its_settings_to_each_stage(tmp_path, monkeypatch) -> None:
    from psinspect.pipeline import make_config, run_pipeline

    stages = _Stages(monkeypatch)
    cfg = make_config("quick", seed=7, tta=2, patience=5, batch_size=3, subsets=4,
                      holdout=["s2"], skip_lights={"s0": [1]})
    lines = _Lines()
    run = run_pipeline(tmp_path / "w", cfg, lines)
    c = stages.calls
    assert {k: c["render"][k] for k in ("parts", "seed", "size", "lights", "defect_rate")} == {
        "parts": 8, "seed": 7, "size": 256, "lights": 12, "defect_rate": cfg.defect_rate}
    assert {k: c["dataset"][k] for k in ("seed", "subsets", "holdout", "solver",
                                         "skip_lights")} == {
        "seed": 7, "subsets": 4, "holdout": ["s2"], "solver": "robust", "skip_lights": {"s0": [1]}}
    assert {k: c["train"][k] for k in ("seed", "epochs", "batch_size", "patience", "threads",
                                       "init_from", "hyperparameters")} == {
        "seed": 7, "epochs": 2, "batch_size": 3, "patience": 5, "threads": 2,
        "init_from": "bundled", "hyperparameters": {"steps_per_epoch": 5, "patch": 96}}
    # the trained model scores at the run's test-time level, and so does the bundled one
    assert c["load"] == [("model", 2)] and c["compare"]["tta"] == 2
    # only the test maps are scored, by both
    assert c["detect"] == ["N_s2.npy", "A_s2.npy", "A_s1.npy"]
    assert c["compare"]["tests"] == ["N_s2.npy", "A_s2.npy", "A_s1.npy"]
    assert lines.closed[3] == "1 of 3 maps fail"

    assert run["test_surfaces"] == ["s1b", "s2"]
    assert run["metrics"] == POOLED and run["verdicts"] == VERDICTS
    assert run["trained"] is True and run["fine_tuned_from"] == "bundled"
    assert run["config"]["seed"] == 7 and run["config"]["tta"] == 2
    assert json.loads((tmp_path / "w" / "run.json").read_text()) == json.loads(
        json.dumps(run))
    html = (tmp_path / "w" / "report.html").read_text()
    assert ("Test surfaces (never seen in training): s1b (its own defects, M_defect.png), s2 "
            "(given to --holdout); training surfaces: s0, s1.") in html
    assert run["train_surfaces"] == ["s0", "s1"]
    assert ("3 defective maps failed, 1 passed; 5 clean maps passed, 2 failed.") in html
    assert "preset quick, seed 7" in html


def test_run_from_random_weights_and_with_another_model(tmp_path, monkeypatch) -> None:
    from psinspect.pipeline import make_config, run_pipeline

    stages = _Stages(monkeypatch)
    run = run_pipeline(tmp_path / "a", make_config("quick", fine_tune=False))
    assert stages.calls["train"]["init_from"] is None and run["fine_tuned_from"] is None
    run = run_pipeline(tmp_path / "b", make_config("quick", model="unet-ae"))
    train = stages.calls["train"]
    assert train["init_from"] is None and train["model_name"] == "unet-ae"
    assert train["hyperparameters"] == {}  # the preset's settings are for the default model
    assert run["fine_tuned_from"] is None and run["trained"] is True


def test_run_notes_a_pass_fail_fit_to_few_maps_unless_pooled(tmp_path, monkeypatch) -> None:
    """A pass/fail threshold fitted to fewer than 8 good maps is noted in run.json and the
    report; a fine-tune that kept the bundled weights pooled their own calibration maps into
    it, which the report's run section says, and no note is made."""
    import html

    from psinspect.pipeline import make_config, run_pipeline

    stages = _Stages(monkeypatch)
    few = {"gumbel": {"quantile": 1.0}, "val_maps": 4, "val_image_scores": [1.0] * 4}
    stages.config = {"model": "geo-seg", "training": {"epochs_run": 1}, "calibration": few}
    run = run_pipeline(tmp_path / "a", make_config("quick"))
    assert len(run["notes"]) == 1 and "only 4 good maps" in run["notes"][0]
    assert run["pass_fail_start_maps"] is None and run["fine_tune_kept_start"] is False
    assert html.escape(f"Note: {run['notes'][0]}.") in (tmp_path / "a" / "report.html"
                                                       ).read_text()
    stages.config = {"model": "geo-seg", "calibration": {
        **few, "val_image_scores": [1.0] * 172, "start_model_maps": 168},
        "training": {"epochs_run": 1, "init_from": {"kept_start_weights": True}}}
    run = run_pipeline(tmp_path / "b", make_config("quick"))
    assert run["notes"] == [] and run["pass_fail_start_maps"] == 168
    assert run["fine_tune_kept_start"] is True
    assert ("no epoch beat the bundled model on the validation maps: its weights kept, the "
            "pixel threshold fitted here, the pass/fail threshold to these good maps and its "
            "own 168 calibration maps" in (
                tmp_path / "b" / "report.html").read_text())


def test_pretrained_run_trains_nothing_and_says_so(tmp_path, monkeypatch) -> None:
    from psinspect.pipeline import make_config, run_pipeline

    stages = _Stages(monkeypatch)
    run = run_pipeline(tmp_path / "w", make_config("quick", pretrained=True, tta=8))
    assert "train" not in stages.calls and "compare" not in stages.calls
    assert stages.calls["load"] == [("model", 8)]
    assert run["fine_tuned_from"] is None and run["bundled_model"] is None
    assert run["trained"] is False and run["pretrained"] is True
    assert "bundled, --pretrained" in (tmp_path / "w" / "report.html").read_text()


def test_compare_bundled_scores_at_the_level_asked(tmp_path, monkeypatch) -> None:
    import psinspect.modelstore as modelstore
    from psinspect.pipeline import compare_bundled

    asked = []

    def load(path: Path, tta: int | None = None) -> None:
        asked.append(tta)
        raise PsinspectError("stop")

    monkeypatch.setattr(modelstore, "load_model_dir", load)
    for tta in (2, None):
        with pytest.raises(PsinspectError, match="stop"):
            compare_bundled(tmp_path / "o", tmp_path, [], tta)
    assert asked == [2, None]


def test_verdicts_text_counts_one_map_in_the_singular():
    from psinspect.pipeline import verdicts_text
    assert verdicts_text({"defective_failed": 1, "defective_passed": 0, "clean_passed": 1,
                          "clean_failed": 2}) == (
        "1 defective map failed, 0 passed; 1 clean map passed, 2 failed")
    assert verdicts_text({"defective_failed": 0, "defective_passed": 3, "clean_passed": 2,
                          "clean_failed": 0}) == (
        "0 defective maps failed, 3 passed; 2 clean maps passed, 0 failed")
