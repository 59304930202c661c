"""``psinspect train --init-from``: fine-tuning a trained model (its weights, hyperparameters and
training surfaces carried over, the weights kept never worse on the validation maps than the
ones started from), and the mistakes it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _robust_util import good_sphere_maps, run_cli

from psinspect.errors import PsinspectError
from psinspect.modelstore import default_model_dir, load_model_dir, read_train_log
from psinspect.train import FINE_TUNE_LR_DIVISOR, train_model

# three small maps: one validation map, whose score is the pass/fail threshold (said in a warning)
pytestmark = pytest.mark.filterwarnings("ignore:the pass/fail threshold is the image score")

HP = {"channels": [4, 8], "patch": 32, "steps_per_epoch": 2, "val_patches": 1}


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return good_sphere_maps(tmp_path_factory.mktemp("fine_tune"), 48)


@pytest.fixture(scope="module")
def base(maps: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "m"
    train_model(maps, out, model_name="geo-seg", hyperparameters=HP, epochs=2, seed=0)
    return out


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    return load_model_dir(model_dir).model.state_arrays()


def test_fine_tune_records_its_start_and_takes_its_settings(maps: list[Path], base: Path,
                                                            tmp_path: Path) -> None:
    cfg = train_model(maps, tmp_path / "ft", init_from=str(base), epochs=2, seed=1)
    start = json.loads((base / "config.json").read_text())
    assert cfg["model"] == "geo-seg"
    hp = cfg["hyperparameters"]
    assert hp["channels"] == HP["channels"] and hp["patch"] == HP["patch"]
    assert hp["lr"] == pytest.approx(start["hyperparameters"]["lr"] / FINE_TUNE_LR_DIVISOR)
    init = cfg["training"]["init_from"]
    assert init["model"] == str(base.resolve())
    assert init["weights_sha256"] == start["weights_sha256"]
    assert np.isfinite(init["initial_val_loss"])
    log = read_train_log(tmp_path / "ft")
    assert log[0]["initial_val_loss"] == init["initial_val_loss"]
    # an epoch is "best" only where it beat the weights started from
    best = [e["val_loss"] for e in log if e["best"]]
    assert all(v < init["initial_val_loss"] for v in best)
    # --hp overrides a setting that leaves the network as it is, lr included
    cfg2 = train_model(maps, tmp_path / "ft2", init_from=str(base), epochs=1,
                       hyperparameters={"lr": 1e-4, "tta": 2})
    assert cfg2["hyperparameters"]["lr"] == 1e-4 and cfg2["hyperparameters"]["tta"] == 2


def test_weights_never_worse_than_the_start(maps: list[Path], base: Path,
                                            tmp_path: Path) -> None:
    """A learning rate that wrecks the network: no epoch beats the weights started from, so
    they are kept, bit for bit (recalibrated on the new validation maps)."""
    cfg = train_model(maps, tmp_path / "ft", init_from=str(base), epochs=2,
                      hyperparameters={"lr": 50.0})
    log = read_train_log(tmp_path / "ft")
    assert not any(e["best"] for e in log)
    assert all(e["val_loss"] > cfg["training"]["init_from"]["initial_val_loss"] for e in log)
    assert cfg["training"]["best_epoch_1based"] is None
    start, kept = _weights(base), _weights(tmp_path / "ft")
    assert start.keys() == kept.keys()
    assert all(np.array_equal(start[k], kept[k]) for k in start)


def test_fine_tune_from_the_bundled_model_counts_its_training_surfaces(
        maps: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["train", *maps[:6], "-o", tmp_path / "ft", "--init-from",
                              "bundled", "--epochs", "1", "--hp",
                              json.dumps({"steps_per_epoch": 1, "patch": 32, "val_patches": 1,
                                          "tta": 1})], monkeypatch, capsys)
    assert code == 0, err
    assert "geo-seg fine-tuned from bundled:" in out
    assert ("kept the weights of epoch 1" in err and "for the weights started from" in err) or (
        "kept the weights started from: no epoch beat their validation loss" in err), err
    cfg = json.loads((tmp_path / "ft" / "config.json").read_text())
    bundled = json.loads((default_model_dir() / "config.json").read_text())
    assert cfg["training"]["init_from"]["model"] == "bundled"
    assert cfg["training"]["init_from"]["weights_sha256"] == bundled["weights_sha256"]
    assert cfg["hyperparameters"]["channels"] == bundled["hyperparameters"]["channels"]
    # what the bundled model was trained on, the fine-tuned one was too (evaluate's leak check)
    assert set(bundled["training"]["surface_fingerprints"]) <= set(
        cfg["training"]["surface_fingerprints"])


def test_fine_tune_resumes_to_the_same_model(maps: list[Path], base: Path,
                                             tmp_path: Path) -> None:
    whole = train_model(maps, tmp_path / "whole", init_from=str(base), epochs=3)

    def stop_after_first(entry: dict) -> None:
        if entry["epoch"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(maps, tmp_path / "cut", init_from=str(base), epochs=3,
                    on_epoch=stop_after_first)
    resumed = train_model(maps, tmp_path / "cut", resume=True)
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    assert resumed["training"]["init_from"] == whole["training"]["init_from"]


def test_fine_tune_mistakes_are_one_line_errors(maps: list[Path], base: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    geo = tmp_path / "geometric"
    train_model(maps, geo, model_name="geometric")
    capsys.readouterr()
    cases = [
        (["--init-from", str(tmp_path / "nowhere")], "--init-from: "),
        (["--init-from", str(geo)], "a geometric model has no network weights to start from "
                                    "(fine-tuning applies to geo-seg, unet-ae)"),
        (["--init-from", str(base), "--model", "unet-ae"], "is a geo-seg model, and "
                                                           "fine-tuning keeps its model"),
        (["--init-from", str(base), "--hp", '{"channels": [4, 8, 16]}'],
         "its weights do not fit the network of the hyperparameters given"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(["train", *maps, "-o", tmp_path / "out", *extra], monkeypatch,
                               capsys)
        assert code == 2 and message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out" / "config.json").exists()
    # the model started from is an input: never the output folder, even with --force
    before = (base / "config.json").read_bytes()
    code, _, err = run_cli(["train", *maps, "-o", base, "--init-from", str(base), "--force"],
                           monkeypatch, capsys)
    assert code == 2 and "is an input folder of this command" in err, err
    assert (base / "config.json").read_bytes() == before
    # --resume takes its settings from the checkpoint
    code, _, err = run_cli(["train", *maps, "-o", tmp_path / "out", "--resume", "--init-from",
                            str(base)], monkeypatch, capsys)
    assert code == 2 and "drop --init-from" in err, err
    with pytest.raises(PsinspectError, match="fine-tuning keeps its model"):
        train_model(maps, tmp_path / "api", init_from=str(base), model_name="unet-ae")
