"""Datasets: manifest schema, surface-disjoint splits, files, resizing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from psinspect.dataset import (
    augment_map,
    build_dataset,
    find_captures,
    load_manifest,
)
from psinspect.defects import angle_deg
from psinspect.errors import PsinspectError
from psinspect.normalmap import normalize, resize_with_pad, rotate, rotate90
from psinspect.render import render_dataset

DILIGENT = Path(__file__).resolve().parents[2] / "shared/data/diligent"


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("renders")
    # seed 2, 5 parts, rate 0.3 -> 1 defective part (checked below)
    render_dataset(root, 5, defect_rate=0.3, seed=2, size=64)
    return root


@pytest.fixture(scope="module")
def built(renders, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("ds")
    clean = [p.name for p in find_captures([renders]) if not (p / "M_defect.png").exists()]
    manifest = build_dataset([renders], out, holdout=[clean[0]], seed=0, subsets=3,
                             augment=["rot90", "fliplr", "rot30"])
    return manifest, out


def test_manifest_schema_and_files(built) -> None:
    manifest, out = built
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert manifest["format"] == "psinspect-dataset" and manifest["version"] == 1
    assert manifest["seed"] == 0 and manifest["config"]["subsets"] == 3
    keys = {"name", "file", "surface", "split", "defect_mask", "defects", "lights", "augment"}
    for it in manifest["items"]:
        assert set(it) == keys
        n = np.load(out / it["file"])
        assert n.dtype == np.float32 and n.ndim == 3 and n.shape[2] == 3
        obj = np.abs(n).sum(axis=2) > 0
        assert obj.sum() > 100
        assert np.abs(np.linalg.norm(n[obj], axis=1) - 1).max() < 1e-4
        if it["name"].startswith("A_"):
            assert it["split"] == "test-defective" and it["defects"]
            assert it["defect_mask"] == "M_" + it["name"][2:] + ".png"
            m = cv2.imread(str(out / it["defect_mask"]), cv2.IMREAD_GRAYSCALE)
            assert m.shape == obj.shape and set(np.unique(m)) <= {0, 255} and (m > 0).any()
            assert not ((m > 0) & ~obj).any()
        else:
            assert it["name"].startswith("N_") and it["defect_mask"] is None
            assert it["defects"] == []
    splits = {it["split"] for it in manifest["items"]}
    assert splits == {"train-clean", "val-clean", "test-clean", "test-defective"}


def test_splits_disjoint_by_surface(built) -> None:
    manifest, _ = built
    roles = {n: s["role"] for n, s in manifest["surfaces"].items()}
    train_s = {it["surface"] for it in manifest["items"] if not it["split"].startswith("test")}
    test_s = {it["surface"] for it in manifest["items"] if it["split"].startswith("test")}
    assert train_s and test_s and not (train_s & test_s)
    assert all(roles[s] == "train" for s in train_s) and all(roles[s] == "test" for s in test_s)
    held = manifest["config"]["holdout"]
    real = manifest["config"]["real_defective"]
    assert len(held) == 1 and len(real) == 1 and set(held + real) == test_s
    # a real-defect capture goes to test-defective only, with its own M_defect mask
    assert {it["split"] for it in manifest["items"] if it["surface"] == real[0]} == {
        "test-defective"}


def test_val_uses_other_lights_and_train_is_augmented(built) -> None:
    manifest, out = built
    for surf, info in manifest["surfaces"].items():
        if info["role"] != "train":
            continue
        items = [it for it in manifest["items"] if it["surface"] == surf]
        val = [it for it in items if it["split"] == "val-clean"]
        train = [it for it in items if it["split"] == "train-clean"]
        assert len(val) == 1 and val[0]["augment"] == "none"
        assert {it["augment"] for it in train} == {"none", "rot90", "fliplr", "rot30"}
        assert all(it["lights"] != val[0]["lights"] for it in train)
        base = np.load(out / f"N_{surf}_l00.npy")
        r90 = np.load(out / f"N_{surf}_l00_rot90.npy")
        assert np.array_equal(r90, rotate90(base, 1))


def test_holdout_errors(renders, tmp_path) -> None:
    with pytest.raises(PsinspectError, match="no capture named"):
        build_dataset([renders], tmp_path / "a", holdout=["nope"])
    names = [p.name for p in find_captures([renders])]
    # every surface held out: a dataset to evaluate a trained model on, with no training maps
    manifest = build_dataset([renders], tmp_path / "b", holdout=names, subsets=1, augment=[])
    assert {it["split"] for it in manifest["items"]} == {"test-clean", "test-defective"}
    assert {s["role"] for s in manifest["surfaces"].values()} == {"test"}


def test_skip_lights_errors(renders, tmp_path) -> None:
    """A misspelt surface or a light the capture does not have is an error, not ignored."""
    names = [p.name for p in find_captures([renders])]
    with pytest.raises(PsinspectError, match="--skip-lights: no capture named nope"):
        build_dataset([renders], tmp_path / "a", skip_lights={"nope": [0]})
    with pytest.raises(PsinspectError,
                       match=r"lights 40-41 are out of range \(it has lights 1-12\)"):
        build_dataset([renders], tmp_path / "b", skip_lights={names[0]: [2, 39, 40]})


def test_augment_map_moves_masks_with_vectors() -> None:
    n = np.zeros((20, 30, 3), np.float32)
    n[2:8, 3:12] = normalize(np.array([0.3, 0.4, 0.8]))
    m = np.abs(n).sum(axis=2) > 0
    for name in ("rot90", "rot180", "rot270", "fliplr", "flipud", "transpose", "rot30"):
        a, (am,) = augment_map(n, name, [m])
        assert np.array_equal(am, np.abs(a).sum(axis=2) > 0) or name == "rot30"
        if name == "rot30":
            assert abs(int(am.sum()) - int(m.sum())) < 0.15 * m.sum()
    t, (tm,) = augment_map(n, "transpose", [m])
    v = n[m][0]
    assert np.allclose(t[tm][0], [-v[1], -v[0], v[2]], atol=1e-6)  # (x, y) -> (-y, -x)
    with pytest.raises(PsinspectError, match="--augment"):
        augment_map(n, "shear")


def test_resize_keeps_aspect_and_renormalises() -> None:
    h, w = 40, 80
    n = np.zeros((h, w, 3), np.float32)
    rows, cols = np.mgrid[0:h, 0:w]
    n[...] = normalize(np.dstack([np.sin(cols / 9.0), np.cos(rows / 7.0), np.ones((h, w))]))
    out, mask = resize_with_pad(n, 32)
    assert out.shape == (32, 32, 3)
    r, c = np.nonzero(mask)
    assert c.min() == 0 and c.max() == 31 and r.max() - r.min() + 1 == 16  # 2:1 kept, padded
    assert np.allclose(np.linalg.norm(out[mask], axis=1), 1, atol=1e-5)
    assert not out[~mask].any()
    # rotation round trip stays close and unit
    rot, rmask = rotate(n, 25.0)
    assert np.allclose(np.linalg.norm(rot[rmask], axis=1), 1, atol=1e-5)
    assert rot.shape[1] > w  # canvas grew to hold the corners
    same, smask = rotate(n, 25.0, expand=False)
    back, bmask = rotate(same, -25.0, mask=smask, expand=False)
    inner = bmask & ((rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2 < 17**2)
    assert inner.sum() > 800
    assert angle_deg(back, n)[inner].mean() < 0.5


def test_load_manifest_rejects_leaky_manifest(built, tmp_path) -> None:
    manifest, _ = built
    bad = json.loads(json.dumps(manifest))
    test_surface = next(n for n, s in bad["surfaces"].items() if s["role"] == "test")
    bad["items"][0]["surface"] = test_surface
    bad["items"][0]["split"] = "train-clean"
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(PsinspectError, match="role test"):
        load_manifest(tmp_path)


def test_load_manifest_rejects_a_clean_item_with_a_defect_mask(built, tmp_path) -> None:
    """train accepted a train-clean item with a defect mask (an audit): a map marked
    defective must not teach what good looks like."""
    manifest, _ = built
    bad = json.loads(json.dumps(manifest))
    item = next(i for i in bad["items"] if i["split"] == "train-clean")
    item["defect_mask"] = "M_x.png"
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(PsinspectError, match=r"split train-clean but a defect mask 'M_x\.png' "
                                             r"\(only test-defective maps have one\)"):
        load_manifest(tmp_path)


def test_a_copied_capture_is_the_same_surface(renders, built, tmp_path) -> None:
    """A training capture copied under another name (e.g. held out for test) is refused at
    build time, and a manifest whose train and test surfaces share a fingerprint at load
    time (the split had let train and test share a surface)."""
    import shutil

    caps = find_captures([renders])
    shutil.copytree(caps[0], tmp_path / "copy")
    with pytest.raises(PsinspectError, match=f"{caps[0].name} and copy are the same capture"):
        build_dataset([*caps, tmp_path / "copy"], tmp_path / "ds", holdout=["copy"], subsets=2)
    assert not (tmp_path / "ds").exists()
    # one exposure of a tray cut into parts by their masks: the same images, other surfaces
    mask = cv2.imread(str(tmp_path / "copy" / "mask.png"), cv2.IMREAD_GRAYSCALE)
    mask[: mask.shape[0] // 2] = 0
    cv2.imwrite(str(tmp_path / "copy" / "mask.png"), mask)
    m2 = build_dataset([*caps, tmp_path / "copy"], tmp_path / "ds2", holdout=["copy"],
                       subsets=2, augment=[])
    assert m2["surfaces"]["copy"]["fingerprint"] == m2["surfaces"][caps[0].name]["fingerprint"]
    assert m2["surfaces"]["copy"]["mask_sha256"] != m2["surfaces"][caps[0].name]["mask_sha256"]
    manifest, _ = built
    bad = json.loads(json.dumps(manifest))
    roles = {s["role"]: n for n, s in bad["surfaces"].items()}
    for key in ("fingerprint", "mask_sha256"):
        bad["surfaces"][roles["test"]][key] = bad["surfaces"][roles["train"]][key]
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(PsinspectError, match=f"train surface {roles['train']} and test surface "
                       f"{roles['test']} are the same capture"):
        load_manifest(tmp_path)


def test_cli_dataset(renders, tmp_path) -> None:
    from psinspect.cli import app, register_commands

    register_commands()
    out = tmp_path / "ds"
    res = CliRunner().invoke(app, ["dataset", str(renders), "-o", str(out), "--subsets", "2",
                                   "--augment", "none", "--solver", "ls", "--seed", "1"])
    assert res.exit_code == 0, res.output
    manifest, _ = load_manifest(out)
    assert manifest["config"]["holdout_auto"] and manifest["config"]["solver"] == "ls"
    assert {it["augment"] for it in manifest["items"]} == {"none"}
    assert "warning" not in res.output
    # the splits' counts in their own order, whichever surface comes first
    n = {sp: sum(it["split"] == sp for it in manifest["items"]) for sp in
         ("train-clean", "val-clean", "test-clean", "test-defective")}
    assert (", ".join(f"{k} {v}" for k, v in n.items() if v) + f" -> {out}") in res.output


def test_cli_dataset_warns_what_it_cannot_do(renders, tmp_path) -> None:
    """--subsets 1 makes no val maps (train refuses such a dataset), and --min-angle does not
    remake the ground truth of captures that bring their own M_defect.png: both are said."""
    from psinspect.cli import app, register_commands

    register_commands()
    res = CliRunner().invoke(app, ["dataset", str(renders), "-o", str(tmp_path / "a"),
                                   "--subsets", "1", "--augment", "none", "--min-angle", "4"])
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.output.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 2, res.output
    assert "no val-clean maps" in warnings[0] and "--subsets 2" in warnings[0]
    assert "--min-angle 4 applies to the defects implanted here; 1 capture(s)" in warnings[1]
    clean = next(c for c in sorted(renders.iterdir())
                 if c.is_dir() and not (c / "M_defect.png").exists())
    res = CliRunner().invoke(app, ["dataset", str(clean), "-o", str(tmp_path / "b"),
                                   "--augment", "none"])  # one capture: nothing to test on
    assert res.exit_code == 0, res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("warning: ")] == [
        "warning: no test surface (one capture, or --holdout none): evaluate has nothing to "
        "judge against this dataset; give more captures, or name test ones with --holdout"]
    # every capture held out: no training maps, said (train refuses such a dataset)
    res = CliRunner().invoke(app, ["dataset", str(clean), "-o", str(tmp_path / "d"),
                                   "--augment", "none", "--holdout", clean.name])
    assert res.exit_code == 0, res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("warning: ")] == [
        "warning: no training surface (every capture is held out or defective): a dataset to "
        "evaluate a trained model on; 'psinspect train' will refuse it"]
    res = CliRunner().invoke(app, ["train", str(tmp_path / "d"), "-o", str(tmp_path / "m")])
    assert isinstance(res.exception, PsinspectError)
    assert "has no train-clean maps" in str(res.exception)
    # one clean capture and one with its own defects: the defective one is the only test
    # surface, so no test map is defect-free (image AUROC undefined): said
    bad = next(c for c in sorted(renders.iterdir()) if (c / "M_defect.png").exists())
    res = CliRunner().invoke(app, ["dataset", str(clean), str(bad), "-o", str(tmp_path / "c"),
                                   "--augment", "none"])
    assert res.exit_code == 0, res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("warning: ")] == [
        "warning: no defect-free test maps (the test surfaces are captures with their own "
        "M_defect.png): image AUROC is undefined and evaluate cannot tell how many good parts "
        "fail; hold out a clean capture too (--holdout)"]


@pytest.mark.skipif(not (DILIGENT / "ballPNG").is_dir(),
                    reason=f"DiLiGenT data not found at {DILIGENT}")
def test_real_captures_hold_out_a_whole_object(tmp_path) -> None:
    caps = [DILIGENT / n for n in ("ballPNG", "catPNG")]
    manifest = build_dataset(caps, tmp_path, holdout=["catPNG"], subsets=2, augment=[],
                             lights_per_subset=12, solver="ls")
    surf = {it["surface"] for it in manifest["items"] if it["split"].startswith("test")}
    assert surf == {"catPNG"}
    gt = np.asarray(__import__("scipy.io").io.loadmat(DILIGENT / "ballPNG/Normal_gt.mat")
                    ["Normal_gt"], np.float32)
    n = np.load(tmp_path / "N_ballPNG_l00.npy")
    obj = np.abs(n).sum(axis=2) > 0
    assert angle_deg(n, gt)[obj].mean() < 8.0  # 12 well-spread lights, least squares


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["rot90", "rot180", "rot270", "fliplr",
                                                     "flipud", "transpose"]))
def test_exact_augmentations_are_isometries(seed: int, name: str) -> None:
    """Exact augmentations keep unit length, keep the angle between neighbouring normals, and
    applying one twice (or its inverse) gives the original map back."""
    rng = np.random.default_rng(seed)
    n = normalize(rng.normal(size=(7, 5, 3)) + np.array([0, 0, 2.0]))
    a, _ = augment_map(n, name)
    assert np.allclose(np.linalg.norm(a, axis=2), 1, atol=1e-6)
    inverse = {"rot90": "rot270", "rot270": "rot90"}.get(name, name)
    back, _ = augment_map(a, inverse)
    assert np.allclose(back, n, atol=1e-6)
    # the z component (angle to the view axis) never changes
    assert np.allclose(np.sort(a[..., 2].ravel()), np.sort(n[..., 2].ravel()))


@pytest.mark.parametrize(("name", "move"), [
    ("rot90", lambda h: np.rot90(h, 1)), ("rot180", lambda h: np.rot90(h, 2)),
    ("rot270", lambda h: np.rot90(h, 3)), ("fliplr", lambda h: h[:, ::-1]),
    ("flipud", lambda h: h[::-1]), ("transpose", lambda h: h.T)])
def test_exact_augmentations_are_the_moved_surfaces_normals(name: str, move) -> None:
    """An augmented map is the normal map of the surface moved the same way: each vector turns
    with the pixels (a move applied twice hides vectors left unturned; this does not)."""
    from scipy.ndimage import gaussian_filter

    from psinspect.normalmap import normals_from_height

    h = 40.0 * gaussian_filter(np.random.default_rng(3).normal(size=(26, 20)), 3.0)
    moved = np.ascontiguousarray(move(h))
    a, _ = augment_map(normals_from_height(h), name)
    want = normals_from_height(moved)
    inner = (slice(2, -2), slice(2, -2))  # (one-sided differences at the border)
    np.testing.assert_allclose(a[inner], want[inner], atol=1e-5)
    # the pixels moved but the vectors left as they were would be far off
    unturned = np.stack([move(c) for c in np.moveaxis(normals_from_height(h), -1, 0)], -1)
    assert np.abs(unturned[inner] - want[inner]).max() > 0.1


def test_captures_of_one_surface_name_are_named_in_the_error(tmp_path: Path) -> None:
    """Two capture folders of one name (a dataset names surfaces by folder) were refused
    without saying which captures."""
    from _robust_util import tiny_capture

    from psinspect.dataset import find_captures

    a = tiny_capture(tmp_path / "a" / "part1")
    b = tiny_capture(tmp_path / "b" / "part1")
    with pytest.raises(PsinspectError) as err:
        find_captures([a, b])
    assert str(err.value) == (f"{a} and {b}: captures share the surface name part1; a dataset "
                              "names its surfaces by their folders: rename one")

    with pytest.raises(PsinspectError, match=r"part1: this capture is given twice \(itself, "
                                             r"and inside a folder of captures given\)$"):
        find_captures([a, tmp_path / "a"])
    (tmp_path / "link").symlink_to(a)
    with pytest.raises(PsinspectError, match=r"this capture is given twice \(also as "):
        find_captures([a, tmp_path / "link"])


def test_a_test_surface_read_with_warnings_is_reported_by_evaluate(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """A capture without mask.png counts its background as the object: said while the dataset
    is built (as before), and now kept in the manifest (surface ``warnings``) and reported by
    evaluate (metrics.json ``test_surface_reading_warnings``, a warning line and the report):
    a walkthrough's metrics took in the background while the report said it never counts."""
    from _robust_util import run_cli

    caps = render_dataset(tmp_path / "caps", 4, defect_rate=0.0, seed=3, size=64, lights=6)
    (caps[3] / "mask.png").unlink()
    ds, pred, ev, model = (tmp_path / n for n in ("ds", "pred", "ev", "m"))
    with pytest.warns(UserWarning, match="no mask.png"):
        manifest = build_dataset(caps, ds, holdout=[caps[3].name], seed=0, subsets=2)
    surfaces = manifest["surfaces"]
    (said,) = surfaces[caps[3].name]["warnings"]
    assert "no mask.png" in said
    assert not any("warnings" in surfaces[c.name] for c in caps[:3])
    for args in (["train", ds, "--model", "geometric", "-o", model],
                 ["detect", ds, "--model", model, "-o", pred],
                 ["evaluate", pred, ds, "-o", ev]):
        code, out, err = run_cli(args, monkeypatch, capsys)
        assert code == 0, err
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["test_surface_reading_warnings"] == {caps[3].name: [said]}
    assert f"1 test surface(s) were read with warnings that may change these figures " \
           f"({caps[3].name}; {said})" in out + err
    report = (ev / "report.html").read_text()
    assert "were read with warnings" in report
    # the report says what it evaluated (it named only the model's kind)
    assert metrics["source"]["test_surfaces"] == [caps[3].name]
    assert (f"Evaluated: the predictions in {pred.resolve()} of geometric ({model.resolve()}), "
            f"against the dataset {ds.resolve()}; its 1 test surface(s): {caps[3].name}."
            ) in report


def test_training_on_a_surface_read_with_warnings_says_so(tmp_path: Path) -> None:
    """A training capture without mask.png: the dataset keeps its warning, and train says
    the model learns that surface as read (its background as good surface)."""
    from psinspect.train import _load_dataset

    caps = render_dataset(tmp_path / "caps", 4, defect_rate=0.0, seed=3, size=64, lights=6)
    (caps[0] / "mask.png").unlink()
    with pytest.warns(UserWarning, match="no mask.png"):
        build_dataset(caps, tmp_path / "ds", holdout=[caps[3].name], seed=0, subsets=2)
    with pytest.warns(UserWarning) as caught:
        _load_dataset(tmp_path / "ds")
    (said,) = [str(w.message) for w in caught]
    assert said.startswith(f"1 training surface(s) of {tmp_path / 'ds'} were read with "
                           f"warnings ({caps[0].name}; ")
    assert "no mask.png" in said and said.endswith("the model learns them as they were read")


def test_one_part_through_fewer_lights_in_train_and_test_warns(renders, tmp_path) -> None:
    """A training capture copied through fewer of its lights has other images and lights
    (another fingerprint) but its very mask: held out, the same part was in train and test
    without a word (a walkthrough)."""
    import shutil

    caps = find_captures([renders])
    clean = next(c for c in caps if not (c / "M_defect.png").exists())
    sub = tmp_path / "fewer"
    shutil.copytree(clean, sub)
    for listing in ("filenames.txt", "light_directions.txt", "light_intensities.txt"):
        lines = (sub / listing).read_text().splitlines()
        (sub / listing).write_text("\n".join(lines[:-2]) + "\n")
    with pytest.warns(UserWarning, match=f"{clean.name} \\(training\\) and fewer \\(test\\) "
                                         "have the same mask, byte for byte"):
        build_dataset([*caps, sub], tmp_path / "ds", holdout=["fewer"], subsets=2, augment=[])


def test_calibrating_on_a_training_part_through_fewer_lights_warns(renders, tmp_path) -> None:
    """train --calibrate-on took a training capture copied through fewer of its lights as a
    part not trained on (other images: another fingerprint); it shares its mask: said."""
    import shutil

    from psinspect.train import train_model

    clean = [c for c in find_captures([renders]) if not (c / "M_defect.png").exists()]
    sub = tmp_path / "fewer"
    shutil.copytree(clean[0], sub)
    for listing in ("filenames.txt", "light_directions.txt", "light_intensities.txt"):
        lines = (sub / listing).read_text().splitlines()
        (sub / listing).write_text("\n".join(lines[:-2]) + "\n")
    with pytest.warns(UserWarning, match=f"{sub}: has the same mask as a training capture, "
                                         "byte for byte"):
        train_model(clean[:2], tmp_path / "m", model_name="geometric", calibration_inputs=[sub])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_model(clean[:2], tmp_path / "m2", model_name="geometric",
                    calibration_inputs=[clean[2]])
    assert not [w for w in caught if "same mask" in str(w.message)]
