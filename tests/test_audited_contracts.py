"""Contracts of datasets, leak checks, fine-tuning, resume, model folders and run.json that no
test pinned (a mutation audit changed one line of the source at a time and these behaviours
changed unnoticed): each test names the bug it catches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _robust_util import good_sphere_maps, run_cli, tiny_capture

from psinspect.errors import PsinspectError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

HP = {"channels": [4, 8], "patch": 32, "steps_per_epoch": 2, "val_patches": 1}


@pytest.fixture(scope="module")
def two_caps(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("caps")
    return [tiny_capture(root / f"c{i}", k=12, size=24, seed=10 + i) for i in range(2)]


# --- dataset.py ------------------------------------------------------------------------------

def test_skip_lights_are_never_used(two_caps, tmp_path) -> None:
    """Catches: skip_lights ignored. 12 lights, lights 1-6 skipped (0-based 0..5) -> 6 usable;
    --lights-per-subset 6 -> every subset of that surface is exactly [6..11]."""
    from psinspect.dataset import build_dataset

    name = two_caps[0].name
    m = build_dataset(two_caps, tmp_path / "ds", holdout=[], seed=0, subsets=2, augment=[],
                      lights_per_subset=6, skip_lights={name: [0, 1, 2, 3, 4, 5]}, solver="ls")
    used = [it["lights"] for it in m["items"] if it["surface"] == name]
    assert used and all(u == [6, 7, 8, 9, 10, 11] for u in used)


def test_the_seed_draws_the_random_light_subsets(two_caps, tmp_path) -> None:
    """Catches: seed left out of the per-surface subset generator. Subset 0 is the
    farthest-point set (seed-free); subsets 1.. are random: seeds 0 and 1 must not give the
    same 3 random 4-light subsets of 12 lights for both surfaces (C(12,4)=495 choices each)."""
    from psinspect.dataset import build_dataset

    def lights(seed: int) -> list:
        m = build_dataset(two_caps, tmp_path / f"s{seed}", holdout=[], seed=seed, subsets=4,
                          augment=[], lights_per_subset=4, solver="ls")
        return [it["lights"] for it in m["items"]]

    a, b = lights(0), lights(1)
    assert a != b


def test_auto_holdout_is_drawn_from_clean_surfaces_only(tmp_path) -> None:
    """Catches: auto holdout drawn from all surfaces, real-defect ones included. 4 clean captures
    + 1 with M_defect.png: holdout=None holds out round(4/4)=1 CLEAN surface, so the test
    surfaces are 2 (that one + the defective one) for every seed."""
    import cv2

    from psinspect.dataset import build_dataset

    caps = [tiny_capture(tmp_path / f"c{i}", k=6, size=16, seed=20 + i) for i in range(5)]
    m = np.zeros((16, 16), np.uint8)
    m[6:9, 6:9] = 255
    cv2.imwrite(str(caps[4] / "M_defect.png"), m)
    for seed in range(6):
        man = build_dataset(caps, tmp_path / f"ds{seed}", holdout=None, seed=seed, subsets=1,
                            augment=[], solver="ls")
        held = man["config"]["holdout"]
        assert len(held) == 1 and held[0] != caps[4].name, (seed, held)
        assert sum(s["role"] == "test" for s in man["surfaces"].values()) == 2


def test_manifest_refuses_a_train_surface_in_a_test_split() -> None:
    """Catches: role check made one-directional. A train surface's map in test-clean is as
    wrong as a test surface's map in train-clean."""
    from psinspect.dataset import check_manifest

    manifest = {"format": "psinspect-dataset", "version": 1,
                "surfaces": {"a": {"role": "train"}, "b": {"role": "test"}},
                "items": [{"name": "N_a", "file": "N_a.npy", "surface": "a",
                           "split": "test-clean"}]}
    with pytest.raises(PsinspectError, match="role train"):
        check_manifest(manifest)


def test_random_light_subsets_are_well_conditioned() -> None:
    """Catches: the cond(L) < 10 check disabled. 4 spread lights + 8 lights within 0.01 of
    (0, 0, 1): every subset returned must have cond < 10 (a triple of the clustered lights
    has cond ~ 1e2..1e4)."""
    from psinspect.dataset import light_subsets

    spread = np.array([[1, 0, 1], [0, 1, 1], [-1, 0, 1], [0, -1, 1]], float)
    rng0 = np.random.default_rng(5)
    cluster = np.array([0, 0, 1.0]) + rng0.normal(0, 0.01, (8, 3))
    lights = np.vstack([spread, cluster])
    lights /= np.linalg.norm(lights, axis=1, keepdims=True)
    subs = light_subsets(lights, 8, 3, np.random.default_rng(0))
    assert all(np.linalg.cond(lights[s]) < 10 for s in subs)


# --- detect.py -------------------------------------------------------------------------------

def test_a_clean_dataset_map_has_all_false_ground_truth(tmp_path) -> None:
    """Catches: N_<x> map: None instead of an all-False mask. An N_x.npy map is clean even with
    the M_x.png of its defective copy beside it."""
    from psinspect.detect import given_ground_truth
    from psinspect.fileio import save_npy, save_png

    save_npy(tmp_path / "N_x.npy", np.zeros((4, 4, 3), np.float32))
    save_png(tmp_path / "M_x.png", np.full((4, 4), 255, np.uint8))
    gt, recs = given_ground_truth(tmp_path / "N_x.npy", (4, 4))
    assert gt is not None and gt.dtype == bool and gt.shape == (4, 4) and not gt.any()
    assert recs is None


def test_a_normals_output_folder_is_named_by_the_folder(tmp_path, monkeypatch, capsys) -> None:
    """Catches: load_input of a `psinspect normals` folder keeping the stem "normals"."""
    from psinspect.detect import load_input

    cap = tiny_capture(tmp_path / "cap", k=6, size=16)
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "part7"], monkeypatch, capsys)
    assert code == 0, err
    assert load_input(tmp_path / "part7").name == "part7"


# --- report.py (evaluate's leak check) -------------------------------------------------------

def test_empty_fingerprint_list_falls_back_to_paths(tmp_path) -> None:
    """Catches: an empty surface_fingerprints list taken as 'no surface seen'. The model
    records [] fingerprints and trained on capture folder CAP; the test surface s has another
    fingerprint but its source is CAP -> s was seen (path fallback): ["s"]."""
    from psinspect.report import surfaces_seen_in_training

    cap = tmp_path / "cap"
    cap.mkdir()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(
        {"training": {"surface_fingerprints": [], "inputs": [str(cap)]}}))
    manifest = {"surfaces": {"s": {"role": "test", "fingerprint": "abc", "source": str(cap)}}}
    assert surfaces_seen_in_training(tmp_path / "model", manifest) == ["s"]


# --- train.py / models (fine-tuning, resume) ------------------------------------------------

@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> list[Path]:
    return good_sphere_maps(tmp_path_factory.mktemp("maps"), 40)


def test_fine_tune_refuses_a_changed_geo_iterations(maps, tmp_path) -> None:
    """Catches: geo_iterations dropped from GeoSeg.fine_tune_fixed. The base has
    geo_iterations 0; --hp geo_iterations 2 changes the features the weights learnt."""
    from psinspect.train import train_model

    train_model(maps, tmp_path / "base", model_name="geo-seg", hyperparameters=HP, epochs=1)
    with pytest.raises(PsinspectError, match="--hp geo_iterations: fine-tuning keeps"):
        train_model(maps, tmp_path / "ft", init_from=str(tmp_path / "base"), epochs=1,
                    hyperparameters={"geo_iterations": 2})


def test_resume_keeps_the_early_stopping_count(maps, tmp_path, monkeypatch) -> None:
    """Catches: resume resets the epochs-without-improvement counter. Validation losses rise
    after epoch 0 (set here, not left to the training numbers), so patience 2 stops the run
    after 3 epochs; cut after epoch 1 (1 bad epoch counted) and resumed, it must also stop
    after epoch 2 (a reset count runs a 4th epoch), with the same weights."""
    from psinspect.models._torch import TorchAnomalyModel
    from psinspect.modelstore import read_train_log
    from psinspect.train import train_model

    losses = {"next": iter([])}
    monkeypatch.setattr(TorchAnomalyModel, "_val_loss",
                        lambda self, net, batches: next(losses["next"]))
    rising = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    losses["next"] = iter(rising)
    whole = train_model(maps, tmp_path / "whole", model_name="geo-seg", hyperparameters=HP,
                        epochs=6, patience=2)
    assert [e["best"] for e in read_train_log(tmp_path / "whole")] == [True, False, False]

    def stop(entry: dict) -> None:
        if entry["epoch"] == 1:
            raise KeyboardInterrupt

    losses["next"] = iter(rising)
    with pytest.raises(KeyboardInterrupt):
        train_model(maps, tmp_path / "cut", model_name="geo-seg", hyperparameters=HP,
                    epochs=6, patience=2, on_epoch=stop)
    losses["next"] = iter(rising[2:])
    resumed = train_model(maps, tmp_path / "cut", resume=True)
    assert len(read_train_log(tmp_path / "cut")) == 3
    assert resumed["weights_sha256"] == whole["weights_sha256"]


# --- modelstore.py ---------------------------------------------------------------------------

def test_models_are_compatible_within_one_minor_release(tmp_path) -> None:
    """Catches: _version_key compares the major version only. This version X.Y.Z: a model of
    X.(Y+1).0 is refused, one of X.Y.99+local loads."""
    from psinspect import __version__
    from psinspect.models import create_model
    from psinspect.modelstore import load_model_dir, save_model_dir

    major, minor = __version__.split("+")[0].split(".")[:2]
    d = save_model_dir(tmp_path / "g", create_model("geometric"), threshold=1.0,
                       image_threshold=2.0)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "psinspect_version":
                                               f"{major}.{minor}.99+local"}))
    load_model_dir(d)
    newer = f"{major}.{int(minor) + 1}.0"
    (d / "config.json").write_text(json.dumps({**cfg, "psinspect_version": newer}))
    with pytest.raises(PsinspectError, match=f"psinspect {newer}"):
        load_model_dir(d)


def test_another_tta_level_takes_both_of_its_thresholds(maps, tmp_path) -> None:
    """Catches: with_tta kept the model's own image threshold. Own level 4: thresholds 1.0 /
    2.0; level 1 calibrated at 0.3 / 0.7 -> load_model_dir(tta=1) gives 0.3 and 0.7."""
    from psinspect.fileio import load_npy
    from psinspect.models import create_model
    from psinspect.modelstore import load_model_dir, save_model_dir

    arrs = [load_npy(p) for p in maps]
    pairs = [(a, np.abs(a).sum(-1) > 0) for a in arrs]
    model = create_model("geo-seg", **HP)
    model.fit(pairs[:2], pairs[2:], epochs=1, batch_size=2, seed=0)
    levels = {str(k): {"threshold": 0.1 * k, "image_threshold": 0.2 * k + 0.5}
              for k in (1, 2, 4, 8)}
    levels["1"] = {"threshold": 0.3, "image_threshold": 0.7}
    levels["4"] = {"threshold": 1.0, "image_threshold": 2.0}  # (the own level's, as trained)
    d = save_model_dir(tmp_path / "m", model, threshold=1.0, image_threshold=2.0,
                       tta_thresholds=levels)
    b = load_model_dir(d, tta=1)
    assert (b.threshold, b.image_threshold) == (0.3, 0.7)


# --- pipeline.py -----------------------------------------------------------------------------

def test_run_json_leaves_out_settings_it_did_not_use() -> None:
    """Catches: render settings recorded for a run on --data captures. With data: no parts,
    size, lights, defect_rate; with --pretrained: no training settings."""
    from psinspect.pipeline import RENDER_SETTINGS, make_config, recorded_config

    rec = recorded_config(make_config("quick", data="/some/captures"))
    assert not set(RENDER_SETTINGS) & set(rec) and rec["data"] == "/some/captures"
    assert rec["subsets"] == 2 and rec["epochs"] == 2
    rec = recorded_config(make_config("quick", pretrained=True))
    assert rec["parts"] == 8 and "epochs" not in rec and "patience" not in rec


def test_a_copy_of_the_start_models_training_capture_is_not_a_calibration_part(
        tmp_path) -> None:
    """Catches: the started-from model's surface fingerprints left out of the calibration leak
    check. Base trained on captures b0..b2; the fine-tune trains on o0..o2 and calibrates on
    a copy of b0 (another path, same images / lights / mask): refused, naming the copy."""
    import shutil

    from psinspect.train import train_model

    base = [tiny_capture(tmp_path / f"b{i}", k=6, size=40, seed=30 + i) for i in range(3)]
    other = [tiny_capture(tmp_path / f"o{i}", k=6, size=40, seed=40 + i) for i in range(3)]
    train_model(base, tmp_path / "base", model_name="geo-seg", hyperparameters=HP, epochs=1)
    shutil.copytree(base[0], tmp_path / "copy_of_b0")
    with pytest.raises(PsinspectError, match=r"copy_of_b0: --calibrate-on takes parts NOT "
                       r"trained on.*\(of this run or of the model it starts from\)"):
        train_model(other, tmp_path / "ft", init_from=str(tmp_path / "base"), epochs=1,
                    calibration_inputs=[tmp_path / "copy_of_b0"])
