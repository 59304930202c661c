"""Detection, model directories and the train -> detect -> evaluate commands end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from _robust_util import error_lines, run_cli

from psinspect.defects import implant_defects
from psinspect.detect import (
    detect_map,
    find_regions,
    image_score,
    score_map,
    write_detection_outputs,
    write_input_files,
)
from psinspect.errors import PsinspectError
from psinspect.fileio import save_npy, save_png
from psinspect.models import AnomalyModel, ScoreResult, create_model
from psinspect.modelstore import (
    ModelBundle,
    load_model_dir,
    read_config,
    read_train_log,
    save_model_dir,
    weights_path,
)
from psinspect.normalmap import encode_png, load_normal_map, normals_from_height


def bowl(size: int = 80) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    z = -((xx - c) ** 2 + (yy - c) ** 2) / (8.0 * size)
    mask = ((xx - c) ** 2 + (yy - c) ** 2) < (0.45 * size) ** 2
    return normals_from_height(z, mask), mask


@pytest.fixture()
def geo_dir(tmp_path: Path) -> Path:
    model = create_model("geometric")
    return save_model_dir(tmp_path / "geo", model, threshold=2.0, image_threshold=3.0)


def test_regions_and_image_score() -> None:
    score = np.zeros((20, 30), np.float32)
    mask = np.ones_like(score, bool)
    score[2:5, 3:9] = 5.0  # 18 px region
    score[15, 20] = 9.0  # single hot pixel (below min area)
    pred, regions = find_regions(score, mask, threshold=1.0)
    assert len(regions) == 1
    r = regions[0]
    assert r["bbox"] == [3, 2, 9, 5] and r["area_px"] == 18 and r["peak_score"] == 5.0
    assert pred.sum() == 18
    # one isolated pixel barely moves the image score; a blob does
    assert image_score(score, mask) == pytest.approx(5.0)
    mask[2:5, 3:9] = False
    assert image_score(score, mask) == pytest.approx(1.0)  # the 9.0 pixel averaged over 3x3


def test_image_score_averages_object_pixels_only_at_the_rim() -> None:
    """A defect on the object's rim: its 3 x 3 average is over the object pixels around it, not
    diluted by the background's zeros (a corner pixel has 4 object pixels in its window)."""
    score = np.zeros((10, 10), np.float32)
    mask = np.zeros_like(score, bool)
    mask[3:, 3:] = True
    score[3, 3] = 8.0  # corner of the object: window holds (3,3), (3,4), (4,3), (4,4)
    score[3, 4] = score[4, 3] = 4.0
    assert image_score(score, mask) == pytest.approx((8.0 + 4.0 + 4.0) / 4)
    score[0, 0] = 100.0  # background scores never count
    assert image_score(score, mask) == pytest.approx(4.0)


def test_threshold_boundaries() -> None:
    """A pixel AT the pixel threshold is marked (README: 'at or above'); regions of exactly
    MIN_REGION_PX pixels are kept, one pixel fewer dropped; a part fails only when its image
    score EXCEEDS the image threshold (equal passes)."""
    from psinspect.detect import MIN_REGION_PX

    score = np.zeros((20, 30), np.float32)
    mask = np.ones_like(score, bool)
    score[2, 2:2 + MIN_REGION_PX] = 2.0  # exactly MIN_REGION_PX pixels, exactly at threshold
    score[10, 2:2 + MIN_REGION_PX - 1] = 3.0  # one pixel fewer
    pred, regions = find_regions(score, mask, threshold=2.0)
    assert [r["area_px"] for r in regions] == [MIN_REGION_PX]
    assert pred.sum() == MIN_REGION_PX and pred[2, 2:2 + MIN_REGION_PX].all()
    n, m = bowl(48)
    model = create_model("geometric")
    s_img = detect_map(ModelBundle(model=model, threshold=1.0, image_threshold=1.0), n, m
                       ).image_score
    assert s_img > 0
    at = ModelBundle(model=model, threshold=1.0, image_threshold=s_img)
    assert detect_map(at, n, m).verdict == "pass"
    below = ModelBundle(model=model, threshold=1.0,
                        image_threshold=float(np.nextafter(s_img, -np.inf)))
    assert detect_map(below, n, m).verdict == "fail"


class _RampModel(AnomalyModel):
    """Scores the object pixels 1, 2, ... in raster order and, carelessly, 7 outside them."""

    name = "ramp (test stub)"
    trainable = False

    def score(self, normals, mask, confidence=None):
        s = np.full(mask.shape, 7.0, np.float32)
        s[mask] = np.arange(1, mask.sum() + 1, dtype=np.float32)
        return ScoreResult(score=s, reference=None)


def test_calibrated_pixel_threshold_is_the_quantile_at_the_target_fpr() -> None:
    """The pixel threshold is the (1 - threshold_fpr) quantile ('higher') of the clean
    validation pixels' scores, and the stats say which share of them it flags."""
    from psinspect.train import calibrate

    n = np.zeros((100, 100, 3), np.float32)
    n[..., 2] = 1.0
    m = np.ones((100, 100), bool)  # two maps of 10 000 object pixels scored 1..10 000
    thr, img_thr, stats = calibrate(_RampModel(), [(n, m), (n, m)], 0.001, image_fpr=None)
    assert thr == 9991.0
    assert stats["val_pixel_fpr_at_threshold"] == pytest.approx(0.001)
    assert img_thr == pytest.approx(image_score(np.arange(1, 10001, dtype=np.float32)
                                                .reshape(100, 100), m))


def test_scores_outside_the_mask_are_zero_and_the_summary_counts_the_object(
        tmp_path: Path) -> None:
    """Whatever a model leaves outside the object, the score map is 0 there (whole or tiled);
    the summary's defect area fraction is of the object, its region boxes and peaks are the
    predicted ones; the written mask PNG is 0 / 255."""
    n = np.zeros((40, 40, 3), np.float32)
    n[..., 2] = 1.0
    m = np.zeros((40, 40), bool)
    m[:20, :] = True  # 800 object pixels
    model = _RampModel()
    for tile in (768, 16):
        res = score_map(model, n, m, tile=tile, overlap=4)
        assert (res.score[~m] == 0).all() and (res.score[m] > 0).all(), tile
    bundle = ModelBundle(model=model, threshold=795.0, image_threshold=1e9)
    det = detect_map(bundle, n, m)
    summary = det.summary()
    # pixels 795..800 of the ramp: the last 6 of row 19, one region
    assert summary["defect_area_px"] == 6 and summary["object_area_px"] == 800
    assert summary["defect_area_fraction"] == pytest.approx(6 / 800)
    assert [(r["bbox"], r["area_px"], r["peak_score"]) for r in summary["regions"]] == [
        ([34, 19, 40, 20], 6, 800.0)]
    write_input_files(tmp_path, "x", n, m, det)
    png = cv2.imread(str(tmp_path / "x_mask.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and set(np.unique(png).tolist()) == {0, 255}
    assert (png[19, 34:] == 255).all() and int((png == 255).sum()) == 6


def test_tiled_scoring_matches_full_map() -> None:
    n, m = bowl(200)
    model = create_model("geometric", scales=[2.0, 4.0])
    full = score_map(model, n, m)
    model.max_whole_pixels = 96 * 96  # (it scores objects up to 4096 x 4096 px whole)
    tiled = score_map(model, n, m)
    assert tiled.info.get("tiled")
    np.testing.assert_allclose(tiled.score, full.score, atol=0.05)


@pytest.mark.parametrize("name", ["geo-seg", "unet-ae", "geometric"])
def test_scores_do_not_depend_on_the_framing(name: str) -> None:
    """The learned models' GroupNorm statistics span their whole input, and the geometric
    model's coarse fits run on a downsampled grid with a reference level taken over its input:
    they score the object's window (bounding box + margin), so background added around the
    part, a part touching the map's edge, or a map larger than the tile size give the same
    scores (a geo-seg model's clean casting failed with 64 px of background added before; the
    geometric model's verdict flipped with 100 rows of it, and in 768 px tiles)."""
    hp = ({"channels": [4, 8], "tta": 2} if name == "geo-seg" else {"channels": [4, 8]}
          if name == "unet-ae" else {})
    model = create_model(name, **hp)
    n, m = bowl(60)
    n[20:26, 30:33] = [0.3, 0.0, 0.954]  # something to score
    base = score_map(model, n, m).score
    for pad in [(0, 0), (40, 5), (3, 90)]:
        big_n = np.pad(n, (pad, pad[::-1], (0, 0)))
        big_m = np.pad(m, (pad, pad[::-1]))
        got = score_map(model, big_n, big_m, tile=32, overlap=8)  # never tiled
        assert not got.info.get("tiled")
        np.testing.assert_allclose(got.score[pad[0]:pad[0] + 60, pad[1]:pad[1] + 60], base,
                                   atol=1e-5)
    r0, c0 = np.flatnonzero(m.any(1))[0], np.flatnonzero(m.any(0))[0]
    cut = score_map(model, n[r0:, c0:], m[r0:, c0:]).score  # the part touches the map's edge
    np.testing.assert_allclose(cut, base[r0:, c0:], atol=1e-5)
    assert base.max() > 0 and (base[~m] == 0).all()
    model.max_whole_pixels = 40 * 40  # a larger object is scored in tiles (memory)
    tiled = score_map(model, n, m)
    assert tiled.info.get("tiled") and tiled.info["tile"] == 40
    assert (tiled.score[~m] == 0).all() and tiled.score[m].min() > 0


class _HalfMaxModel:
    """A stand-in whose map-level step needs the WHOLE map: score = 1 - n_z, then divided by
    the map's maximum (wrapped around the geometric model's plumbing)."""

    def __init__(self) -> None:
        self.inner = create_model("geometric")

    def score(self, normals, mask, confidence=None):
        res = self.inner.score(normals, mask)
        res.score = np.where(mask, 1.0 - normals[..., 2], 0.0).astype(np.float32)
        return res

    def finish_map(self, score, mask):
        return score / score[mask].max(), float(score[mask].max())


def test_map_level_step_sees_the_joined_map() -> None:
    n, m = bowl(200)
    full = score_map(_HalfMaxModel(), n, m, tile=1000)
    tiled = score_map(_HalfMaxModel(), n, m, tile=96, overlap=32)
    assert tiled.info.get("tiled") and full.score.max() == pytest.approx(1.0)
    np.testing.assert_allclose(tiled.score, full.score, atol=1e-6)
    assert tiled.image_scale == pytest.approx(full.image_scale) and full.image_scale > 0


def test_geo_seg_map_normalisation() -> None:
    rng = np.random.default_rng(3)
    mask = np.zeros((40, 50), bool)
    mask[5:35, 5:45] = True
    score = np.where(mask, rng.gamma(1.0, 0.1, mask.shape), 0.0).astype(np.float32)
    off = create_model("geo-seg", map_norm_power=0.0)
    same, scale = off.finish_map(score, mask)
    np.testing.assert_array_equal(same, score)
    assert scale == 1.0
    on = create_model("geo-seg", map_norm_power=0.5, map_norm_quantile=99.0, map_norm_eps=0.05)
    q = np.percentile(score[mask], 99.0)
    out, scale = on.finish_map(score, mask)
    np.testing.assert_allclose(out, score / np.sqrt(q + 0.05), rtol=1e-6)
    np.testing.assert_allclose(out * scale, score, rtol=1e-6)  # the image score's level
    assert (out[~mask] == 0).all()
    # a rougher surface (every score x4) is scaled down relative to a smooth one
    rough, _ = on.finish_map(4 * score, mask)
    assert rough.max() < 4 * out.max() and rough.max() > out.max()
    with pytest.raises(PsinspectError, match="map_norm"):
        create_model("geo-seg", map_norm_power=-1.0)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((10, 10, 4), np.float32), "shape"),
        (np.full((10, 10, 3), np.nan, np.float32), "NaN"),
        (np.full((10, 10, 3), 0.9, np.float32), "not unit"),
        (np.zeros((10, 10, 3), np.float32), "empty mask"),
    ],
)
def test_bad_maps_are_clear_errors(geo_dir: Path, array: np.ndarray, message: str) -> None:
    bundle = load_model_dir(geo_dir)
    with pytest.raises(PsinspectError, match=message):
        detect_map(bundle, array)


def test_model_dir_round_trip_and_tampering(tmp_path: Path) -> None:
    model = create_model("unet-ae", channels=[4, 8], patch=32)
    d = save_model_dir(tmp_path / "m", model, threshold=1.5, image_threshold=2.5)
    bundle = load_model_dir(d)
    assert bundle.threshold == 1.5 and bundle.image_threshold == 2.5
    for k, v in model.state_arrays().items():
        np.testing.assert_array_equal(bundle.model.state_arrays()[k], v)
    w = weights_path(d)
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(PsinspectError, match="SHA-256"):
        load_model_dir(d)
    w.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(PsinspectError, match="SHA-256"):
        load_model_dir(d)
    w.unlink()
    with pytest.raises(PsinspectError, match="missing weights"):
        load_model_dir(d)


def test_model_dir_from_another_version(geo_dir: Path) -> None:
    cfg = json.loads((geo_dir / "config.json").read_text())
    cfg["psinspect_version"] = "9.3.0"
    (geo_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PsinspectError, match="psinspect 9.3.0"):
        read_config(geo_dir)
    cfg["psinspect_version"] = read_config.__globals__["__version__"]
    cfg["format_version"] = 99
    (geo_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PsinspectError, match="format 99"):
        load_model_dir(geo_dir)
    (geo_dir / "config.json").write_text("{not json")
    with pytest.raises(PsinspectError, match="JSON"):
        load_model_dir(geo_dir)


@pytest.mark.parametrize("patch,message", [
    ({"input": None}, r"invalid 'input' \(want an object of settings, got NoneType\)"),
    ({"input": []}, "invalid 'input'"),
    ({"input": {"tile": True}}, "invalid input 'tile'"),
    # (was refused at detect as "--solver 'evil'", an option the user did not give: an audit)
    ({"input": {"ps_solver": "evil"}},
     r"invalid input 'ps_solver' \(want one of ls, robust, stable, got 'evil'\)"),
    ({"input": {"ps_solver": None}}, "invalid input 'ps_solver'"),
    ({"input": {"capture_lights": [12, True]}}, "invalid input 'capture_lights'"),
    ({"input": {"capture_lights": 12}}, "invalid input 'capture_lights'"),
    ({"threshold": True}, "missing or invalid 'threshold'"),
    ({"tta_thresholds": {"4": {"threshold": True, "image_threshold": 1.0}}},
     r"invalid 'tta_thresholds' \(want \{level: \{threshold, image_threshold\}\} with"),
])
def test_malformed_config_sections_are_clear_errors(geo_dir: Path, patch: dict,
                                                    message: str) -> None:
    """A config.json whose 'input' is not an object crashed with a TypeError or
    AttributeError; true passed for a number; the tta message showed '}}}}'."""
    cfg = json.loads((geo_dir / "config.json").read_text())
    (geo_dir / "config.json").write_text(json.dumps({**cfg, **patch}))
    with pytest.raises(PsinspectError, match=message):
        load_model_dir(geo_dir)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from psinspect.dataset import build_dataset
    from psinspect.render import render_dataset

    root = tmp_path_factory.mktemp("tiny")
    caps = render_dataset(root / "caps", 4, defect_rate=0.0, seed=1, size=96, lights=8)
    build_dataset(caps, root / "ds", holdout=[caps[-1].name], seed=0, subsets=2, augment=[],
                  defects_per_map=2, severity="high")
    return root / "ds"


def test_train_detect_evaluate_cli(tiny_dataset: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    hp = json.dumps({"channels": [4, 8], "patch": 48, "steps_per_epoch": 2, "val_patches": 1})
    mdir = tmp_path / "model"
    code, out, err = run_cli(["train", str(tiny_dataset), "-o", str(mdir), "--epochs", "2",
                              "--batch-size", "2", "--hp", hp], monkeypatch, capsys)
    assert code == 0, err
    cfg = json.loads((mdir / "config.json").read_text())
    assert cfg["model"] == "geo-seg" and cfg["threshold"] > 0
    # the dataset's maps were solved with its (default, robust) solver: detect will use it
    assert cfg["input"]["ps_solver"] == "robust" and "ps_solver" not in cfg["training"]
    assert len(read_train_log(mdir)) == 2
    assert not (mdir / ".checkpoint").exists()
    # training again into the same folder needs --force
    code, _, err = run_cli(["train", str(tiny_dataset), "-o", str(mdir)], monkeypatch, capsys)
    assert code == 2 and "--force" in err

    tests = sorted(tiny_dataset.glob("[AN]_*.npy"))
    tests = [t for t in tests if "part003" in t.name]
    det = tmp_path / "det"
    code, out, err = run_cli(["detect", *map(str, tests), "--model", str(mdir), "-o", str(det)],
                             monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((det / "summary.json").read_text())
    assert {s["verdict"] for s in summary["inputs"]} <= {"pass", "fail"}
    for t in tests:
        assert (det / f"{t.stem}_panel.png").is_file()
        assert np.load(det / f"{t.stem}_score.npy").dtype == np.float32
    ev = tmp_path / "ev"
    code, out, err = run_cli(["evaluate", str(det), str(tiny_dataset), "-o", str(ev)],
                             monkeypatch, capsys)
    assert code == 0, err
    metrics = json.loads((ev / "metrics.json").read_text())
    assert 0.0 <= metrics["pooled"]["pixel_auroc"] <= 1.0
    assert metrics["pooled"]["image_auroc"] is not None
    # the verdicts at the thresholds detect --image-fpr R would set, from the model's stored
    # calibration scores, on the summary's image scores (fail above the threshold)
    from psinspect.train import OPERATING_RATES, image_threshold_at_rate

    points, scores = metrics["operating_points"], {
        e["name"]: e["image_score"] for e in summary["inputs"]}
    assert [p["rate"] for p in points] == list(OPERATING_RATES)
    assert metrics["operating_points_note"] is None
    for p in points:
        thr = image_threshold_at_rate(cfg, p["rate"])[0]
        assert p["image_threshold"] == thr
        assert p["defective_failed"] == sum(v > thr for n, v in scores.items() if n[0] == "A")
        assert p["clean_passed"] == sum(v <= thr for n, v in scores.items() if n[0] == "N")
        assert f"{p['defective_failed']}/{p['defective_failed'] + p['defective_passed']}" in out
    assert points[0]["image_threshold"] == cfg["image_threshold"]  # its own 1 %
    assert "Other operating points" in (ev / "report.html").read_text()
    # the dataset folder itself stands for its test maps (it was refused, and ds/*.npy scores
    # its training and validation maps too): the same predictions and metrics
    code, _, err = run_cli(["detect", str(tiny_dataset), "--model", str(mdir), "-o",
                            str(tmp_path / "det_ds")], monkeypatch, capsys)
    assert code == 0, err
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    want = [Path(it["file"]).stem for it in manifest["items"] if it["split"].startswith("test")]
    by_ds = json.loads((tmp_path / "det_ds" / "summary.json").read_text())["inputs"]
    assert [s["name"] for s in by_ds] == want and sorted(want) == [t.stem for t in tests]
    code, _, err = run_cli(["evaluate", str(tmp_path / "det_ds"), str(tiny_dataset), "-o",
                            str(tmp_path / "ev_ds")], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "ev_ds" / "metrics.json").read_text())["pooled"] == \
        metrics["pooled"]
    # bootstrap intervals over the test surfaces: one test part says nothing about another
    # draw, so none are given (no zero-width interval), and both outputs say why
    iv = metrics["intervals"]
    assert iv["groups"] == 1 and iv["seed"] == 0
    assert iv["pixel_auroc"] is None and iv["aupro"] is None
    assert iv["binned"]["pixel_auroc"] == pytest.approx(metrics["pooled"]["pixel_auroc"],
                                                        abs=2e-3)
    assert "no bootstrap intervals: a single test surface" in out
    html = (ev / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html
    assert "No bootstrap intervals: the test set has a single surface" in html
    # the breakdowns say how many regions and maps each row rests on
    n_defective = metrics["pooled"]["defective_maps"]
    for block in (*metrics["per_type"].values(), *metrics["per_severity"].values()):
        assert 1 <= block["maps"] <= n_defective and block["regions"] >= 1
    assert sum(b["regions"] for b in metrics["per_type"].values()) == sum(
        b["regions"] for b in metrics["per_severity"].values())
    assert "<th>regions</th><th>maps</th>" in html and "Definitions:" in html
    assert all(f"({b['regions']} region{'s' * (b['regions'] != 1)} on {b['maps']} "
               f"map{'s' * (b['maps'] != 1)})" in out for b in metrics["per_type"].values())
    # the panels' caption counts the maps it shows (it said "the 3 clean ones" for any number)
    n_clean = sum(t.stem.startswith("N_") for t in tests)
    n_def = len(tests) - n_clean
    assert n_def > 1 and n_clean > 1
    assert (f"{len(tests)} of the {len(tests)} test maps: {n_def} defective maps spread over "
            f"their names and the {n_clean} clean maps with the highest image scores") in html
    from psinspect.report import _panels_shown
    assert _panels_shown((1, 0)) == ": 1 defective map"
    assert _panels_shown((0, 1)) == (": the 1 clean map with the highest image score (the "
                                     "likeliest false alarm)")
    # the operating point: detect's own thresholds, masks and verdicts, scored
    op = metrics["operating_point"]
    assert op["pixel_threshold"] == summary["pixel_threshold"] == cfg["threshold"]
    assert op["image_threshold"] == summary["image_threshold"]
    assert op["tta"] == summary.get("tta") and op["scale"] == 1.0  # how detect scored
    tp = fp = fn = 0
    for t in tests:
        pred = cv2.imread(str(det / f"{t.stem}_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
        gt_path = tiny_dataset / f"M_{t.stem[2:]}.png"
        gt = (cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE) > 0 if t.stem.startswith("A_")
              else np.zeros_like(pred))
        obj = np.abs(np.load(t)).sum(-1) > 0
        tp += int((pred & gt & obj).sum())
        fp += int((pred & ~gt & obj).sum())
        fn += int((~pred & gt & obj).sum())
    pm = op["predicted_masks"]
    assert pm["predicted_px"] == tp + fp
    assert pm["recall"] == pytest.approx(tp / (tp + fn))
    if tp + fp:
        assert pm["precision"] == pytest.approx(tp / (tp + fp))
    verdicts = {s["name"]: s["verdict"] for s in summary["inputs"]}
    v = metrics["verdicts"]
    assert v["defective_failed"] == sum(verdicts[t.stem] == "fail" for t in tests
                                        if t.stem.startswith("A_"))
    assert v["clean_passed"] == sum(verdicts[t.stem] == "pass" for t in tests
                                    if t.stem.startswith("N_"))
    assert "At the operating point" in html

    # thresholds were calibrated at every test-time augmentation level; detect --tta uses them
    levels = cfg["tta_thresholds"]
    assert sorted(levels, key=int) == ["1", "2", "4", "8"]
    own = cfg["hyperparameters"]["tta"]
    assert own == 4 and levels["4"]["threshold"] == cfg["threshold"]  # the model's own level
    det8 = tmp_path / "det8"
    code, _, err = run_cli(["detect", *map(str, tests), "--model", str(mdir), "-o", str(det8),
                            "--tta", "8"], monkeypatch, capsys)
    assert code == 0, err
    s8 = json.loads((det8 / "summary.json").read_text())
    assert s8["tta"] == 8 and summary["tta"] == own
    assert s8["pixel_threshold"] == levels["8"]["threshold"]
    assert s8["image_threshold"] == levels["8"]["image_threshold"]
    assert not np.array_equal(np.load(det8 / f"{tests[0].stem}_score.npy"),
                              np.load(det / f"{tests[0].stem}_score.npy"))
    # evaluate's other operating points come from the level detect scored at
    code, _, err = run_cli(["evaluate", det8, tiny_dataset, "-o", tmp_path / "ev8"],
                           monkeypatch, capsys)
    assert code == 0, err
    points8 = json.loads((tmp_path / "ev8" / "metrics.json").read_text())["operating_points"]
    assert points8[0]["image_threshold"] == levels["8"]["image_threshold"]
    assert [p["image_threshold"] for p in points8] == [
        image_threshold_at_rate(cfg, r, 8)[0] for r in OPERATING_RATES]
    # a summary's tta edited away from the level of its thresholds: no points fitted to the
    # other level's scores (they were, silently)
    edited = json.loads((det8 / "summary.json").read_text())
    (det8 / "summary.json").write_text(json.dumps({**edited, "tta": 2}))
    code, _, err = run_cli(["evaluate", det8, tiny_dataset, "-o", tmp_path / "ev8e"],
                           monkeypatch, capsys)
    assert code == 0, err
    m8e = json.loads((tmp_path / "ev8e" / "metrics.json").read_text())
    assert m8e["operating_points"] == [] and m8e["operating_points_note"] == (
        f"the detect summary's tta 2 is not the level its calibrated pixel threshold "
        f"{levels['8']['threshold']:.6g} is the model's at")
    # ... also with its pixel threshold taken out (an audit: that skipped the check)
    (det8 / "summary.json").write_text(json.dumps({**edited, "tta": 2,
                                                   "pixel_threshold": None}))
    code, _, err = run_cli(["evaluate", det8, tiny_dataset, "-o", tmp_path / "ev8n"],
                           monkeypatch, capsys)
    assert code == 0, err
    m8n = json.loads((tmp_path / "ev8n" / "metrics.json").read_text())
    assert m8n["operating_points"] == [] and m8n["operating_points_note"] == (
        "the detect summary records no pixel threshold to tell the test-time level it scored "
        "at")
    # calibrated thresholds that are not numbers; an input judged by a light count's
    # thresholds the run has none of: refused in one line
    for change, said in (({"calibrated_thresholds": {"pixel_threshold": "x"}},
                          "calibrated_thresholds must hold"),
                         ({"inputs": [{**edited["inputs"][0], "thresholds_for_lights": 8},
                                      *edited["inputs"][1:]]},
                          "judged by the thresholds of 8-light captures, which the run has "
                          "none of")):
        (det8 / "summary.json").write_text(json.dumps({**edited, **change}))
        code, _, err = run_cli(["evaluate", det8, tiny_dataset, "-o", tmp_path / "ev8x"],
                               monkeypatch, capsys)
        assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err
    (det8 / "summary.json").write_text(json.dumps(edited))
    code, _, err = run_cli(["detect", str(tests[0]), "--model", str(mdir), "-o",
                            str(tmp_path / "det3"), "--tta", "3"], monkeypatch, capsys)
    assert code == 2 and "--tta must be one of 1, 2, 4, 8" in err and len(err.splitlines()) == 1
    del cfg["tta_thresholds"]  # a model without them refuses other levels, keeps its own
    (mdir / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(["detect", str(tests[0]), "--model", str(mdir), "-o",
                            str(tmp_path / "det2"), "--tta", "2"], monkeypatch, capsys)
    assert code == 2 and "no thresholds calibrated for --tta 2" in err
    code, _, err = run_cli(["detect", str(tests[0]), "--model", str(mdir), "-o",
                            str(tmp_path / "det4"), "--tta", "4"], monkeypatch, capsys)
    assert code == 0, err
    # ... and for a level whose scores the model does not store, evaluate says why
    code, text, err = run_cli(["evaluate", det8, tiny_dataset, "-o", tmp_path / "ev8b"],
                              monkeypatch, capsys)
    assert code == 0, err
    # (its config edited since detect scored at 8 copies: no longer the model detect used)
    note = (f"the model folder {mdir.resolve()} now holds another model than detect used (its "
            f"calibrated pixel threshold {cfg['threshold']!r:.8}, detect's "
            f"{levels['8']['threshold']:.6g})")
    assert f"no verdicts at other pass/fail thresholds: {note}" in text
    m8 = json.loads((tmp_path / "ev8b" / "metrics.json").read_text())
    assert m8["operating_points"] == [] and m8["operating_points_note"] == note
    assert "None: the model folder" in (tmp_path / "ev8b" / "report.html").read_text()


def _good_part_maps(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` normal maps (.npy) of one good part, each posed and noisy a little otherwise
    (:func:`_posed_part.posed_part`), saved as ``folder/good<i>.npy``."""
    from _posed_part import posed_part

    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        n, _ = posed_part(angle_deg=rng.uniform(-2, 2), shift=tuple(rng.uniform(-2, 2, 2)),
                          noise_deg=rng.uniform(0.5, 2.0), rng=rng)
        files.append(folder / f"good{i}.npy")
        np.save(files[-1], n)
    return files


def test_every_model_sets_its_pass_fail_threshold_for_a_share_of_good_parts(
        tmp_path: Path) -> None:
    """The image threshold is the Gumbel quantile of the clean validation maps' image scores at
    --image-fpr, for every model (it was their largest score except for the cross-calibrated
    variation model: about 1 in N + 1 new good parts failing, a tenth with 9 maps), and at
    every test-time augmentation level too."""
    from psinspect.train import calibrate, calibrate_tta_levels, gumbel_threshold, train_model

    files = _good_part_maps(tmp_path, 15, seed=8)
    cfgs = {fpr: train_model(files, tmp_path / f"m{fpr}", model_name="geometric",
                             image_fpr=fpr) for fpr in (0.01, 0.2)}
    for fpr, cfg in cfgs.items():
        cal = cfg["calibration"]
        assert len(cal["val_image_scores"]) == 3
        assert cfg["image_threshold"] == gumbel_threshold(cal["val_image_scores"], fpr)[0]
        assert "Gumbel" in cal["image_threshold_rule"] and cal["image_fpr"] == fpr
    assert cfgs[0.01]["image_threshold"] > max(cfgs[0.01]["calibration"]["val_image_scores"])
    assert cfgs[0.2]["image_threshold"] < cfgs[0.01]["image_threshold"]
    # and detect's summary.json says what the threshold means
    detected = write_detection_outputs([files[0]], tmp_path / "det", load_model_dir(
        tmp_path / "m0.2"))
    assert detected["image_threshold"] == cfgs[0.2]["image_threshold"]
    assert detected["image_threshold_calibration"] == (
        "Gumbel fit to the image scores of the clean validation maps, 0.8 quantile, at least "
        "their maximum")

    maps = [bowl(64), bowl(72), bowl(56)]
    seg = create_model("geo-seg", channels=[4, 8], patch=32, steps_per_epoch=2, val_patches=1)
    seg.fit(maps[:2], maps[2:], epochs=1, batch_size=2, seed=0)
    levels = calibrate_tta_levels(seg, maps, 0.01, image_fpr=0.05)
    for level, thr in levels.items():
        seg.tta = int(level)
        scores = calibrate(seg, maps, 0.01, image_fpr=None)[2]["val_image_scores"]
        assert thr["image_threshold"] == gumbel_threshold(scores, 0.05)[0]
        assert thr["image_threshold"] > max(scores)


def test_image_fpr_reaches_every_level_and_its_limits_are_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """train's --image-fpr sets the pass/fail threshold of every test-time level; a rate whose
    fit runs off to infinity (or fails half the good parts) is refused before training; one
    validation map cannot be fitted: its score, with a warning; a fit below the largest score
    is said to be clipped; a NaN score is an error naming the map, not a traceback."""
    from psinspect.models import ScoreResult
    from psinspect.train import (
        calibrate,
        gumbel_threshold,
        load_training_data,
        train_model,
    )

    files = _good_part_maps(tmp_path, 10, seed=9)
    hp = {"channels": [4, 8], "patch": 32, "steps_per_epoch": 2, "val_patches": 1}
    cfg = train_model(files, tmp_path / "seg", model_name="geo-seg", hyperparameters=hp,
                      epochs=1, image_fpr=0.2)
    val = load_training_data(files).val
    assert len(val) == 2
    model = load_model_dir(tmp_path / "seg").model
    for level, thr in cfg["tta_thresholds"].items():
        model.tta = int(level)
        scores = calibrate(model, val, 0.001, image_fpr=None)[2]["val_image_scores"]
        assert thr["image_threshold"] == pytest.approx(gumbel_threshold(scores, 0.2)[0])

    base = ["train", *files[:5], "--model", "geometric"]
    for rate in ("1e-9", "0.6"):
        code, _, err = run_cli([*base, "--image-fpr", rate, "-o", tmp_path / f"r{rate}"],
                               monkeypatch, capsys)
        assert code == 2 and error_lines(err) == [
            f"error: --image-fpr must be between 1e-06 and 0.5, got {float(rate)}"], err
        assert not (tmp_path / f"r{rate}").exists()
    # five inputs: one validation map
    code, _, err = run_cli([*base, "-o", tmp_path / "one"], monkeypatch, capsys)
    assert code == 0, err
    assert "warning: the pass/fail threshold is the image score of the one clean validation " \
           "map: --image-fpr needs the scores of at least 2" in err, err
    one = json.loads((tmp_path / "one" / "config.json").read_text())
    assert one["image_threshold"] == one["calibration"]["val_image_scores"][0]
    assert "only one" in one["calibration"]["image_threshold_rule"]
    # at 50 % the fit's quantile lies below the largest of the scores: said so
    code, out, err = run_cli(["train", *files, "--model", "geometric", "--image-fpr", "0.5",
                              "-o", tmp_path / "half"], monkeypatch, capsys)
    assert code == 0, err
    half = json.loads((tmp_path / "half" / "config.json").read_text())
    assert half["image_threshold"] == max(half["calibration"]["val_image_scores"])
    assert "pass/fail threshold set at the largest image score of the 2 good maps: the fit " \
           "for about 50 % of good parts failing lies below it" in out, out
    # with 4 maps the floor at 50 % is their 2nd largest, and it is named so (it was called
    # the largest: an audit)
    (tmp_path / "more").mkdir()
    _good_part_maps(tmp_path / "more", 2, seed=19)
    code, out, err = run_cli(["train", *files, "--model", "geometric", "--image-fpr", "0.5",
                              "--calibrate-on", tmp_path / "more", "-o", tmp_path / "half3"],
                             monkeypatch, capsys)
    assert code == 0, err
    half3 = json.loads((tmp_path / "half3" / "config.json").read_text())
    scores = sorted(half3["calibration"]["val_image_scores"])
    assert len(scores) == 4 and half3["image_threshold"] == scores[-2]
    assert "pass/fail threshold set at the 2nd largest image score of the 4 good maps, 2 of " \
           "them given to calibrate on: the fit for about 50 % of good parts failing lies " \
           "below it" in out, out

    def nan_score(model, normals, mask, *args, **kwargs):
        return ScoreResult(score=np.full(mask.shape, np.nan, np.float32))

    monkeypatch.setattr("psinspect.detect.score_map", nan_score)
    with pytest.raises(PsinspectError, match="^first: the model scored it NaN or infinite"):
        calibrate(model, val, 0.001, names=["first", "second"])


def test_tta_thresholds_are_calibrated_per_level(tmp_path: Path) -> None:
    """Each level's thresholds are the ones calibration gives for scores at that level, and the
    model's own level is left as it was."""
    from psinspect.train import calibrate, calibrate_tta_levels

    maps = [bowl(64), bowl(72), bowl(56)]
    model = create_model("geo-seg", channels=[4, 8], patch=32, steps_per_epoch=2, val_patches=1)
    model.fit(maps[:2], maps[2:], epochs=1, batch_size=2, seed=0)
    levels = calibrate_tta_levels(model, maps, 0.01)
    assert model.tta == 4 and sorted(levels, key=int) == ["1", "2", "4", "8"]
    model.tta = 8
    thr, img_thr, stats = calibrate(model, maps, 0.01)
    assert levels["8"] == {"threshold": thr, "image_threshold": img_thr,
                           "val_image_scores": stats["val_image_scores"]}
    assert levels["8"] != levels["1"]
    assert calibrate_tta_levels(create_model("geometric"), maps, 0.01) == {}
    geo = save_model_dir(tmp_path / "g", create_model("geometric"), threshold=1.0,
                         image_threshold=2.0)
    with pytest.raises(PsinspectError, match="no test-time augmentation"):
        load_model_dir(geo, tta=4)
    cfg = json.loads((geo / "config.json").read_text())
    cfg["tta_thresholds"] = {"4": {"threshold": float("nan"), "image_threshold": 1.0}}
    (geo / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PsinspectError, match="tta_thresholds"):
        load_model_dir(geo)


def test_planted_defect_scores_above_clean_surface(tiny_dataset: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    mdir = tmp_path / "geo"
    code, _, err = run_cli(["train", str(tiny_dataset), "-o", str(mdir), "--model", "geometric"],
                           monkeypatch, capsys)
    assert code == 0, err
    clean = sorted(tiny_dataset.glob("N_part003*_l00.npy"))[0]
    n, m = load_normal_map(clean)
    bad, gt, _ = implant_defects(n, m, np.random.default_rng(5), count=1, types=["bump"],
                                 severity=0.3)
    save_npy(tmp_path / "planted.npy", bad)
    det = tmp_path / "det"
    code, _, err = run_cli(["detect", str(tmp_path / "planted.npy"), str(clean), "--model",
                            str(mdir), "-o", str(det)], monkeypatch, capsys)
    assert code == 0, err
    s_bad = np.load(det / "planted_score.npy")
    s_clean = np.load(det / f"{clean.stem}_score.npy")
    assert s_bad[gt].mean() > np.percentile(s_clean[m], 75)
    assert s_bad[gt].mean() > 2 * np.median(s_bad[m & ~gt])


def test_cli_bad_inputs_exit_2(geo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "four.npy": np.zeros((8, 8, 4), np.float32),
        "nan.npy": np.full((8, 8, 3), np.nan, np.float32),
        "short.npy": np.full((8, 8, 3), 0.5, np.float32),
        "empty.npy": np.zeros((8, 8, 3), np.float32),
    }
    for name, arr in cases.items():
        save_npy(tmp_path / name, arr)
        out = tmp_path / f"out_{name}"
        code, _, err = run_cli(["detect", str(tmp_path / name), "--model", str(geo_dir), "-o",
                                str(out)], monkeypatch, capsys)
        assert code == 2, name
        assert err.strip().startswith("error: ") and name in err
        assert not out.exists() or not any(out.iterdir())  # nothing half-written
    cfg = json.loads((geo_dir / "config.json").read_text())
    cfg["psinspect_version"] = "0.0.1"
    (geo_dir / "config.json").write_text(json.dumps(cfg))
    save_npy(tmp_path / "ok.npy", bowl(40)[0])
    code, _, err = run_cli(["detect", str(tmp_path / "ok.npy"), "--model", str(geo_dir), "-o",
                            str(tmp_path / "o2")], monkeypatch, capsys)
    assert code == 2 and "retrain" in err
    cfg["psinspect_version"] = read_config.__globals__["__version__"]
    (geo_dir / "config.json").write_text(json.dumps(cfg))
    with open(weights_path(geo_dir), "ab") as fh:  # tampered weights
        fh.write(b"\x00")
    code, _, err = run_cli(["detect", str(tmp_path / "ok.npy"), "--model", str(geo_dir), "-o",
                            str(tmp_path / "o3")], monkeypatch, capsys)
    assert code == 2 and "SHA-256" in err
    code, _, err = run_cli(["detect", str(tmp_path / "ok.npy"), "-o", str(tmp_path / "o4"),
                            "--jobs", "0"], monkeypatch, capsys)
    assert code == 2 and err.strip() == "error: --jobs must be at least 1, got 0"
    assert not (tmp_path / "o4").exists()


def test_train_log_is_the_one_config_names(geo_dir: Path) -> None:
    """read_train_log follows config.json's log_file, never a path outside the folder; a folder
    written before logs were named by the config has none."""
    cfg = json.loads((geo_dir / "config.json").read_text())
    assert read_train_log(geo_dir) == []  # a training-free model logs no epochs
    cfg["log_file"] = "../elsewhere.json"
    (geo_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PsinspectError, match="log_file must be a plain file name"):
        read_train_log(geo_dir)
    del cfg["log_file"]
    (geo_dir / "config.json").write_text(json.dumps(cfg))
    assert read_train_log(geo_dir) == []


def test_train_resume_after_kill_matches_uninterrupted(tiny_dataset: Path, tmp_path: Path
                                                       ) -> None:
    from psinspect.train import CHECKPOINT_DIR, train_model

    hp = {"channels": [4, 8], "patch": 32, "steps_per_epoch": 2, "val_patches": 1}
    kw = {"model_name": "geo-seg", "hyperparameters": hp, "epochs": 3, "batch_size": 2,
          "seed": 4, "patience": 10}
    full = train_model([tiny_dataset], tmp_path / "full", **kw)

    class Killed(Exception):
        pass

    def kill(entry: dict) -> None:
        if entry["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        train_model([tiny_dataset], tmp_path / "part", on_epoch=kill, **kw)
    assert (tmp_path / "part" / CHECKPOINT_DIR / "state.json").is_file()
    assert not (tmp_path / "part" / "config.json").exists()  # no half-made model dir
    # without --resume (or --force) the interrupted folder is not overwritten
    with pytest.raises(PsinspectError, match="holds an interrupted training run: add --resume"):
        train_model([tiny_dataset], tmp_path / "part", **kw)
    resumed = train_model([tiny_dataset], tmp_path / "part", resume=True)
    assert resumed["weights_sha256"] == full["weights_sha256"]
    assert resumed["threshold"] == full["threshold"]
    assert not (tmp_path / "part" / CHECKPOINT_DIR).exists()


def test_verdict_image_score_is_on_the_absolute_level(tmp_path: Path) -> None:
    """detect_map's image score = image_score of the map-normalised score x image_scale, i.e.
    the image score of the score without the normalisation."""
    n, m = bowl(64)
    model = create_model("geo-seg", channels=[4, 8], patch=32)
    model.fit([(n, m)], [(n, m)], epochs=1)
    bundle = load_model_dir(save_model_dir(tmp_path / "g", model, threshold=1.0,
                                           image_threshold=1.0))
    det = detect_map(bundle, n, m)
    bundle.model.map_norm_power = 0.0
    raw = score_map(bundle.model, n, m)
    assert raw.image_scale == 1.0
    assert det.image_score == pytest.approx(image_score(raw.score, m), rel=1e-4)
    assert not np.allclose(det.score, raw.score)  # the pixel map itself is normalised


def test_run_parallel_order_errors_and_threads() -> None:
    """Results come in input order whatever finishes first; the first error is raised and
    the calls not yet started are cancelled; torch's thread count is shared out and restored."""
    import threading
    import time

    import torch

    from psinspect.detect import run_parallel

    before = torch.get_num_threads()
    seen_threads: list[int] = []
    done: list[int] = []

    def slow_first(i: int) -> int:
        seen_threads.append(torch.get_num_threads())
        time.sleep(0.05 if i == 0 else 0.0)
        return i * i

    got = run_parallel(slow_first, list(range(6)), 2, on_result=done.append)
    assert got == done == [i * i for i in range(6)]
    assert set(seen_threads) == {max(1, before // 2)} and torch.get_num_threads() == before

    started: list[int] = []
    lock = threading.Lock()

    def fail_at_one(i: int) -> int:
        with lock:
            started.append(i)
        if i == 1:
            raise PsinspectError("bad input 1")
        time.sleep(0.5)  # (40 of them take 20 s: only a main thread stalled that long fails)
        return i

    with pytest.raises(PsinspectError, match="bad input 1"):
        run_parallel(fail_at_one, list(range(40)), 2)
    assert len(started) < 40 and torch.get_num_threads() == before
    assert run_parallel(slow_first, [3], 4) == [9]  # one input: no pool


def test_detect_jobs_same_masks_and_verdicts(tiny_dataset: Path, tmp_path: Path) -> None:
    """Several inputs at once (--jobs) give the same masks, regions and verdicts as one at a
    time; scores agree to float rounding (torch's thread count changes its summation order)."""
    import cv2

    from psinspect.detect import write_detection_outputs

    files = sorted(tiny_dataset.glob("[AN]_*.npy"))[:6]
    bundle = load_model_dir(None)
    one = write_detection_outputs(files, tmp_path / "one", bundle, jobs=1)
    two = write_detection_outputs(files, tmp_path / "two", bundle, jobs=3)
    assert [s["name"] for s in one["inputs"]] == [s["name"] for s in two["inputs"]]
    for a, b in zip(one["inputs"], two["inputs"], strict=True):
        assert a["verdict"] == b["verdict"]
        assert a["image_score"] == pytest.approx(b["image_score"], rel=1e-4)
        # the image score can be recomputed from the written score map and image_scale
        sc = np.load(tmp_path / "one" / f"{a['name']}_score.npy")
        obj = np.load(next(f for f in files if f.stem == a["name"])).any(axis=-1)
        assert a["image_scale"] > 0 and a["image_score"] == pytest.approx(
            image_score(sc, obj) * a["image_scale"], rel=1e-5)
        assert [(r["bbox"], r["area_px"]) for r in a["regions"]] == \
            [(r["bbox"], r["area_px"]) for r in b["regions"]]
        for suffix in ("_mask.png", "_score.npy"):
            pa, pb = (tmp_path / d / f"{a['name']}{suffix}" for d in ("one", "two"))
            if suffix == "_mask.png":
                assert np.array_equal(cv2.imread(str(pa)), cv2.imread(str(pb)))
            else:
                np.testing.assert_allclose(np.load(pa), np.load(pb), rtol=1e-4, atol=1e-5)


def test_image_threshold_override_sets_the_verdicts(geo_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    """``detect --image-threshold`` replaces the calibrated pass/fail threshold: just below an
    input's image score it fails, just above it passes; summary.json records the one used;
    the pixel masks do not change."""
    n, m = bowl()
    n, _, _ = implant_defects(n, m, np.random.default_rng(1), count=1, types=["dent"],
                              severity="high")
    save_npy(tmp_path / "part.npy", n)
    base = ["detect", tmp_path / "part.npy", "--model", geo_dir]
    assert run_cli([*base, "-o", tmp_path / "cal"], monkeypatch, capsys)[0] == 0
    cal = json.loads((tmp_path / "cal" / "summary.json").read_text())
    score = cal["inputs"][0]["image_score"]
    assert cal["image_threshold"] == 3.0 and score > 0
    for factor, verdict in ((0.99, "fail"), (1.01, "pass")):
        out = tmp_path / f"out{factor}"
        code, text, err = run_cli([*base, "-o", out, "--image-threshold", str(score * factor)],
                                  monkeypatch, capsys)
        assert code == 0, err
        s = json.loads((out / "summary.json").read_text())
        assert s["image_threshold"] == pytest.approx(score * factor)
        assert s["inputs"][0]["verdict"] == verdict and verdict.upper() in text
        assert s["inputs"][0]["regions"] == cal["inputs"][0]["regions"]


def test_summary_says_when_the_pass_fail_threshold_was_set_by_hand(geo_dir: Path) -> None:
    """image_threshold_calibration describes the threshold used: the model's calibration rule,
    or, with --image-threshold, that it was set by hand (the model's own rule then describes
    calibrated_thresholds); a replaced pixel threshold alone leaves the rule as it is."""
    from dataclasses import replace

    from psinspect.detect import summary_document

    bundle = load_model_dir(geo_dir)
    bundle = replace(bundle, config={**bundle.config, "calibration": {
        "image_threshold_rule": "Gumbel fit, 0.99 quantile"}})
    own = {"pixel_threshold": bundle.threshold, "image_threshold": bundle.image_threshold}
    doc = summary_document(bundle, [], threshold=None, calibrated=None, solver="robust")
    assert doc["image_threshold_calibration"] == "Gumbel fit, 0.99 quantile"
    doc = summary_document(bundle, [], threshold=0.5, calibrated=own, solver="robust")
    assert doc["image_threshold_calibration"] == "Gumbel fit, 0.99 quantile"
    doc = summary_document(replace(bundle, image_threshold=9.0), [], threshold=None,
                           calibrated=own, solver="robust")
    assert doc["image_threshold_calibration"] == (
        "set by hand (--image-threshold, or the web app's slider); the model's own, in "
        "calibrated_thresholds: Gumbel "
        "fit, 0.99 quantile")
    assert doc["calibrated_thresholds"]["image_threshold"] == bundle.image_threshold


def test_image_fpr_sets_the_pass_fail_threshold_from_the_stored_calibration_scores(
        geo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """``detect --image-fpr R`` fits the pass/fail threshold to the calibration scores the
    model stores, as ``train --image-fpr R`` would: at the bundled model's own 1 % it gives
    the model's own threshold; at 5 % a lower one, recorded with its rule beside the model's
    own; at another test-time level, from that level's stored scores. Where it cannot be told
    (no stored scores, a level without them, per-light-count thresholds, both options, a rate
    out of range) it is refused."""
    from psinspect.modelstore import default_model_dir
    from psinspect.train import gumbel_threshold, image_threshold_at_rate

    bundled = load_model_dir(default_model_dir())
    scores = bundled.config["calibration"]["val_image_scores"]
    assert image_threshold_at_rate(bundled.config, 0.01)[0] == bundled.image_threshold
    thr, rule = image_threshold_at_rate(bundled.config, 0.05)
    assert thr == gumbel_threshold(scores, 0.05)[0] < bundled.image_threshold
    example = Path(default_model_dir()).parent / "examples" / "plate_clean_normals.png"
    code, text, err = run_cli(["detect", example, "-o", tmp_path / "d", "--image-fpr", "0.05"],
                              monkeypatch, capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert s["image_threshold"] == thr and f"<= {thr:.4g}" in text
    assert s["calibrated_thresholds"]["image_threshold"] == bundled.image_threshold
    assert s["image_threshold_calibration"] == (
        rule + "; the model's own, in calibrated_thresholds: "
        + bundled.config["calibration"]["image_threshold_rule"])
    assert rule.startswith(f"--image-fpr 0.05: Gumbel fit to the image scores of the "
                           f"model's {len(scores)} clean calibration maps, 0.95 quantile")
    # at another test-time level: that level's stored scores (at its own rate, its own
    # calibrated threshold)
    level2 = bundled.config["tta_thresholds"]["2"]
    assert image_threshold_at_rate(bundled.config, 0.01, 2)[0] == level2["image_threshold"]
    thr2, rule2 = image_threshold_at_rate(bundled.config, 0.05, 2)
    assert thr2 == gumbel_threshold(level2["val_image_scores"], 0.05)[0] != thr
    assert "calibration maps at 2 test-time copies, 0.95 quantile" in rule2
    code, text, err = run_cli(["detect", example, "-o", tmp_path / "d2", "--image-fpr", "0.05",
                               "--tta", "2"], monkeypatch, capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "d2" / "summary.json").read_text())
    assert s["image_threshold"] == thr2 and s["tta"] == 2
    # a model trained before the levels' scores were stored has its own level's only
    old_dir = tmp_path / "old"
    shutil.copytree(default_model_dir(), old_dir)
    cfg = json.loads((old_dir / "config.json").read_text())
    for level in cfg["tta_thresholds"].values():
        del level["val_image_scores"]
    (old_dir / "config.json").write_text(json.dumps(cfg))
    for args, message in (
            (["--model", geo_dir], "stores no image scores"),
            (["--model", old_dir, "--tta", "2"],
             "stores no image scores of clean calibration maps at 2 test-time copies (only at "
             "its own 4)"),
            (["--image-threshold", "3"], "give --image-fpr or --image-threshold, not both")):
        code, _, err = run_cli(["detect", example, "-o", tmp_path / "e", "--image-fpr", "0.05",
                                *args], monkeypatch, capsys)
        assert code != 0 and message in err and not (tmp_path / "e").exists(), err
    per_count = {**bundled.config,
                 "thresholds_by_light_count": {"8": {"val_image_scores": [1.0, 2.0]}}}
    with pytest.raises(PsinspectError, match="the pass/fail threshold of its light count"):
        image_threshold_at_rate(per_count, 0.05)  # (detect fits each count: another test)
    with pytest.raises(PsinspectError, match="no image scores of its 8-light calibration"):
        image_threshold_at_rate({**bundled.config, "thresholds_by_light_count": {"8": {}}}, 0.05)
    with pytest.raises(PsinspectError, match="image-fpr must be between"):
        image_threshold_at_rate(bundled.config, 0.9)


def test_train_calibrate_on_parts_not_trained_on(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    """``train --calibrate-on``: the thresholds come from the validation maps AND the extra
    clean maps (rougher here, so both thresholds rise to exactly what those maps give), the
    extra maps are recorded, training itself is unchanged; a dataset folder is refused."""
    from psinspect.detect import image_score as img_score
    from psinspect.normalmap import validate_normal_map
    from psinspect.train import calibrate, gumbel_threshold

    rng = np.random.default_rng(3)
    n, m = bowl(64)
    for i in range(4):  # four good parts: the same bowl, each with its own faint noise
        faint = n + rng.normal(0.0, 0.001, n.shape).astype(np.float32)
        faint /= np.linalg.norm(faint, axis=-1, keepdims=True)
        faint[~m] = 0.0
        save_npy(tmp_path / f"good{i}.npy", faint.astype(np.float32))
    rough = []
    for i in range(2):
        noisy = n + rng.normal(0.0, 0.03, n.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=-1, keepdims=True)
        noisy[~m] = 0.0
        save_npy(tmp_path / f"rough{i}.npy", noisy.astype(np.float32))
        rough.append(tmp_path / f"rough{i}.npy")
    goods = [tmp_path / f"good{i}.npy" for i in range(4)]
    base = ["train", *goods, "--model", "geometric"]
    assert run_cli([*base, "-o", tmp_path / "plain"], monkeypatch, capsys)[0] == 0
    code, text, err = run_cli([*base, "-o", tmp_path / "cal", "--calibrate-on", rough[0],
                               "--calibrate-on", rough[1]], monkeypatch, capsys)
    assert code == 0, err
    assert "also calibrated on 2 map(s) of parts not trained on" in text
    plain = json.loads((tmp_path / "plain" / "config.json").read_text())
    cal = json.loads((tmp_path / "cal" / "config.json").read_text())
    assert cal["training"]["calibration_inputs"] == [str(p) for p in rough]
    assert cal["calibration"]["calibration_maps"] == ["rough0", "rough1"]
    assert "not trained on" in cal["calibration"]["method"]
    # the pass/fail rule names what it was fitted to
    assert cal["calibration"]["image_threshold_rule"].startswith(
        "Gumbel fit to the image scores of the clean validation maps and the 2 maps given to "
        "--calibrate-on, ")
    assert "--calibrate-on" not in plain["calibration"]["image_threshold_rule"]
    assert cal["threshold"] > plain["threshold"]
    assert cal["image_threshold"] > plain["image_threshold"]
    # exactly the thresholds of the validation map (one of the goods) plus the two rough maps
    model = load_model_dir(tmp_path / "cal").model
    found = []
    for good in goods:
        maps = [load_normal_map(p) for p in (good, *rough)]
        thr, img_thr, _ = calibrate(model, maps, plain["calibration"]["target_pixel_fpr"])
        if (cal["threshold"], cal["image_threshold"]) == pytest.approx((thr, img_thr)):
            found.append(good)
            # (each map checked as detect_map checks it: its vectors renormalised once more)
            imgs = [img_score(score_map(model, *validate_normal_map(*mp)).score, mp[1])
                    for mp in maps]
            assert img_thr == pytest.approx(gumbel_threshold(imgs, 0.01)[0])
    assert len(found) == 1
    # a dataset folder is not a calibration input; a missing path is named
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.json").write_text("{}")
    for bad, message in ((tmp_path / "ds", "not a dataset folder"),
                         (tmp_path / "missing.npy", "missing.npy")):
        code, _, err = run_cli([*base, "-o", tmp_path / "bad", "--calibrate-on", bad],
                               monkeypatch, capsys)
        assert code == 2 and message in err and len(error_lines(err)) == 1, err
        assert not (tmp_path / "bad").exists()


def test_calibrate_on_refuses_training_surfaces(tiny_dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    """A training input, a copy of a training capture (same fingerprint), a map of a training
    dataset's train surface, a copy of such a map or the normals solved from a training capture
    is not a part 'not trained on' (they were accepted and recorded as such)."""
    import shutil

    from psinspect.render import render_dataset

    caps = render_dataset(tmp_path / "caps", 3, defect_rate=0.0, seed=4, size=40, lights=12)
    shutil.copytree(caps[0], tmp_path / "copy")
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    train_map = next(tiny_dataset / it["file"] for it in manifest["items"]
                     if it["split"] == "train-clean")
    shutil.copy(train_map, tmp_path / "map_copy.npy")
    code, _, err = run_cli(["normals", caps[2], "-o", tmp_path / "solved"], monkeypatch, capsys)
    assert code == 0, err
    for inputs, cal in (([*caps], caps[1]), ([*caps], tmp_path / "copy"),
                        ([tiny_dataset], train_map), ([tiny_dataset], tmp_path / "map_copy.npy"),
                        ([*caps], tmp_path / "solved" / "normals.npy")):
        code, _, err = run_cli(["train", *inputs, "--model", "geometric", "-o",
                                tmp_path / "m", "--calibrate-on", cal], monkeypatch, capsys)
        assert code == 2 and error_lines(err) == [
            f"error: {cal}: --calibrate-on takes parts NOT trained on, and this one is among "
            "the training surfaces"], err
        assert not (tmp_path / "m").exists()


def test_detect_keep_going(geo_dir: Path, tiny_dataset: Path, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """``--keep-going``: bad inputs get an error line and a summary entry with verdict 'error'
    and no files; the good ones are written; exit code 2. ``evaluate`` says which test map
    detect failed on."""
    save_npy(tmp_path / "good.npy", bowl(40)[0])
    save_npy(tmp_path / "nan.npy", np.full((8, 8, 3), np.nan, np.float32))
    (tmp_path / "render.json").write_text("{}")
    args = ["detect", tmp_path / "good.npy", tmp_path / "nan.npy", tmp_path / "render.json",
            "--model", geo_dir, "-o", tmp_path / "out", "--jobs", "2"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1  # without: the first error stops
    assert not (tmp_path / "out").exists()
    code, out, err = run_cli([*args, "--keep-going"], monkeypatch, capsys)
    assert code == 2
    errs = error_lines(err)
    assert len(errs) == 2 and "nan.npy" in errs[0] and "render.json" in errs[1]
    assert "Traceback" not in err
    assert "3 input(s), " in out and ", 2 error" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    verdicts = {s["name"]: s["verdict"] for s in summary["inputs"]}
    assert verdicts["nan"] == verdicts["render"] == "error" and verdicts["good"] in ("pass", "fail")
    bad = next(s for s in summary["inputs"] if s["name"] == "nan")
    assert bad["error"] == errs[0].removeprefix("error: ") and "image_score" not in bad
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "good_score.npy" in names and not any(n.startswith(("nan_", "render_")) for n in names)

    tests = [t for t in sorted(tiny_dataset.glob("[AN]_*.npy")) if "part003" in t.name]
    broken = tmp_path / tests[0].name  # a copy of one test map, broken, under its name
    save_npy(broken, np.full((8, 8, 3), np.nan, np.float32))
    det = tmp_path / "det"
    code, _, _ = run_cli(["detect", broken, *tests[1:], "--model", geo_dir, "-o", det,
                          "--keep-going"], monkeypatch, capsys)
    assert code == 2
    code, _, err = run_cli(["evaluate", det, tiny_dataset, "-o", tmp_path / "ev"],
                           monkeypatch, capsys)
    assert code == 2 and f"detect failed on {tests[0].stem}" in err
    assert len(err.strip().splitlines()) == 1


def test_detect_lights_of_captures(geo_dir: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--lights solves capture folders from the given 1-based lights only (as normals
    --lights does) and is recorded; a spec outside a capture's lights names the capture."""
    from psinspect.capture import load_capture
    from psinspect.render import render_dataset
    from psinspect.stereo import run_photometric_stereo

    cap = render_dataset(tmp_path / "caps", 1, defect_rate=0.0, seed=2, size=64, lights=12)[0]
    code, _, err = run_cli(["detect", cap, "--model", geo_dir, "-o", tmp_path / "d",
                            "--lights", "4-12"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["lights"] == "4-12"
    want = run_photometric_stereo(load_capture(cap, select=np.arange(3, 12)),
                                  summary["ps_solver"])
    m = (np.abs(want.normals).sum(-1) > 0) & load_capture(cap).mask
    ref = detect_map(load_model_dir(geo_dir), want.normals, m, confidence=want.confidence).score
    np.testing.assert_allclose(np.load(tmp_path / "d" / f"{cap.name}_score.npy"), ref,
                               rtol=1e-4, atol=1e-4)
    code, _, err = run_cli(["detect", cap, "--model", geo_dir, "-o", tmp_path / "e",
                            "--lights", "1-20"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {cap}: --lights '1-20': lights 13-20 are outside the capture's lights 1-12"]


def test_detect_lights_needs_a_capture_and_a_valid_spec(geo_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    save_npy(tmp_path / "x.npy", bowl(40)[0])
    code, _, err = run_cli(["detect", tmp_path / "x.npy", "--model", geo_dir, "-o",
                            tmp_path / "o", "--lights", "1-5"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        "error: --lights applies to capture folders; no input is one"]
    code, _, err = run_cli(["detect", tmp_path / "x.npy", "--model", geo_dir, "-o",
                            tmp_path / "o", "--solver", "ls"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [  # (it was ignored: maps are solved already)
        "error: --solver applies to capture folders; no input is one"]
    (tmp_path / "cap").mkdir()
    code, _, err = run_cli(["detect", tmp_path / "x.npy", tmp_path / "cap", "--model", geo_dir,
                            "-o", tmp_path / "o", "--lights", "zzz"], monkeypatch, capsys)
    assert code == 2 and error_lines(err)[0].startswith("error: --lights 'zzz'")
    code, _, err = run_cli(["detect", tmp_path / "x.npy", tmp_path / "cap", "--model", geo_dir,
                            "-o", tmp_path / "o", "--lights", "0-5"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [  # (it said "outside the capture's lights
        "error: --lights '0-5': lights are numbered from 1; '0-5' starts at 0"]  # 1-1000000")
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli(["detect", tmp_path / "cap", "--model", geo_dir, "-o",
                            tmp_path / "o", "--lights", "1-3"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {tmp_path / 'cap'}: no lights file (lights.txt or light_directions.txt) "
        "in the folder"]


def test_detect_a_folder_of_captures(geo_dir: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A folder holding capture folders (render's output, beside its render.json) stands for
    those captures; a folder holding none is still refused."""
    from psinspect.render import render_dataset

    caps = render_dataset(tmp_path / "caps", 2, defect_rate=0.0, seed=2, size=48, lights=12)
    (tmp_path / "caps" / "render.json").write_text("{}")
    code, _, err = run_cli(["detect", tmp_path / "caps", "--model", geo_dir, "-o",
                            tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert [s["source"] for s in summary["inputs"]] == [str(c) for c in caps]
    assert summary["min_region_px"] == 4  # the masks leave smaller specks out (recorded)
    (tmp_path / "caps" / "broken").mkdir()  # e.g. a capture without its lights file
    code, _, err = run_cli(["detect", tmp_path / "caps", "--model", geo_dir, "-o",
                            tmp_path / "d2"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {tmp_path / 'caps'}: holds capture folders and also broken, which is not one "
        "(no filenames.txt / lights.txt / light_directions.txt): give the inputs one by one"]
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["detect", tmp_path / "empty", "--model", geo_dir, "-o",
                            tmp_path / "e"], monkeypatch, capsys)
    assert code == 2 and len(error_lines(err)) == 1 and str(tmp_path / "empty") in err


def test_detect_a_folder_of_maps(geo_dir: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A folder of normal maps (.npy and .png) stands for its maps (it said "no images
    found", and a folder of PNG maps "no lights file"), with an A_<x>.npy map's M_<x>.png
    ground truth and the .png previews of .npy maps beside them; a sub-folder there is refused
    and a PNG that is not a normal map is an error, never skipped."""
    maps = tmp_path / "maps"
    maps.mkdir()
    n, m = bowl(40)
    for name in ("A_p1", "b2", "b10"):
        save_npy(maps / f"{name}.npy", n)
    gt = np.zeros(m.shape, np.uint8)
    gt[18:22, 18:22] = 255
    cv2.imwrite(str(maps / "M_p1.png"), gt)
    code, _, err = run_cli(["detect", maps, "--model", geo_dir, "-o", tmp_path / "d"],
                           monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert [s["name"] for s in summary["inputs"]] == ["A_p1", "b2", "b10"]  # natural order
    assert [s.get("gt_defect_px") for s in summary["inputs"]] == [16, None, None]
    cv2.imwrite(str(maps / "A_p1.png"), gt)  # a preview beside its map, as `defects` writes
    code, _, err = run_cli(["detect", maps, "--model", geo_dir, "-o", tmp_path / "d1"],
                           monkeypatch, capsys)
    assert code == 0, err
    cv2.imwrite(str(maps / "b10.png"), gt)  # b10.npy's preview
    save_png(maps / "c3.png", encode_png(n, m))  # a PNG normal map
    code, _, err = run_cli(["detect", maps, "--model", geo_dir, "-o", tmp_path / "d2"],
                           monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "d2" / "summary.json").read_text())
    assert [s["name"] for s in summary["inputs"]] == ["A_p1", "b2", "b10", "c3"]
    cv2.imwrite(str(maps / "other.png"), gt)  # not a normal map: an error, not skipped
    code, _, err = run_cli(["detect", maps, "--model", geo_dir, "-o", tmp_path / "d3"],
                           monkeypatch, capsys)
    assert code == 2 and len(error_lines(err)) == 1 and "other.png" in err, err
    assert not (tmp_path / "d3").exists()
    (maps / "other.png").unlink()
    (maps / "sub").mkdir()
    code, _, err = run_cli(["detect", maps, "--model", geo_dir, "-o", tmp_path / "d4"],
                           monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {maps}: holds normal maps and also sub, which is not one (.npy or .png): "
        "give the inputs one by one"]


def test_detect_uses_the_confidence_of_psinspect_normals(geo_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """``normals CAP -o N`` then ``detect N`` (or ``detect N/normals.npy``) scores with the
    PS confidence that ``normals`` wrote beside the map, as ``detect CAP`` does; it was
    dropped, so the same normals scored otherwise. The folder is named by itself."""
    from psinspect.render import render_dataset

    cap = render_dataset(tmp_path / "caps", 1, defect_rate=1.0, seed=4, size=48,
                         lights=12)[0]
    # normals' default solver is the bundled model's (robust): nothing to warn about
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "nr"], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(["detect", tmp_path / "nr", "--model", geo_dir, "-o",
                            tmp_path / "dr"], monkeypatch, capsys)
    assert code == 0 and "warning" not in err, err
    summary = json.loads((tmp_path / "dr" / "summary.json").read_text())
    assert [s["ps_solver"] for s in summary["inputs"]] == ["robust"]
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "n", "--solver", "ls"],
                           monkeypatch, capsys)
    assert code == 0, err
    import shutil  # (the folder and its own map together are one input given twice)

    shutil.copytree(tmp_path / "n", tmp_path / "n2")
    code, _, err = run_cli(["detect", tmp_path / "n", tmp_path / "n2" / "normals.npy",
                            "--model", geo_dir, "-o", tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    # solved with another solver than the model's (robust): recorded and said
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert [s["ps_solver"] for s in summary["inputs"]] == ["ls", "ls"]
    from psinspect.fileio import file_sha256
    assert [s["source_sha256"] for s in summary["inputs"]] == [
        file_sha256(tmp_path / "n" / "normals.npy")] * 2  # the map read, also for the folder
    assert sorted(ln for ln in err.splitlines() if ln.startswith("warning")) == sorted(
        f"warning: {p}: its normals were solved with the 'ls' PS solver, the model's "
        "thresholds with 'robust' normals: scores may be off (give the capture, or solve it "
        "with --solver robust)" for p in (tmp_path / "n", tmp_path / "n2" / "normals.npy"))
    # ... and kept with the verdict it concerns (it was printed only)
    assert [s["warnings"] for s in summary["inputs"]] == [[
        "its normals were solved with the 'ls' PS solver, the model's thresholds with "
        "'robust' normals: scores may be off (give the capture, or solve it with --solver "
        "robust)"]] * 2
    # a capture solved with --solver ls: the user's choice, no warning
    code, _, err = run_cli(["detect", cap, "--model", geo_dir, "--solver", "ls", "-o",
                            tmp_path / "dc"], monkeypatch, capsys)
    assert code == 0 and "warning" not in err, err
    n, m = load_normal_map(tmp_path / "n" / "normals.npy")
    conf = np.load(tmp_path / "n" / "confidence.npy")
    assert (conf[m] < 1).any()  # (else the test could not tell)
    bundle = load_model_dir(geo_dir)
    want = detect_map(bundle, n, m, confidence=conf).score
    assert not np.allclose(want, detect_map(bundle, n, m).score)
    for name in ("n", "normals"):
        np.testing.assert_array_equal(np.load(tmp_path / "d" / f"{name}_score.npy"), want)
    np.save(tmp_path / "n" / "confidence.npy", conf[:-1])  # not the map's: refused
    code, _, err = run_cli(["detect", tmp_path / "n", "--model", geo_dir, "-o",
                            tmp_path / "d2"], monkeypatch, capsys)
    assert code == 2 and error_lines(err)[0].startswith(
        f"error: {tmp_path / 'n' / 'confidence.npy'}: expected PS confidence in [0, 1]")
    conf[3, 4], conf[5, 6] = np.nan, 1.5  # the map's shape, values outside [0, 1]: named
    np.save(tmp_path / "n" / "confidence.npy", conf)
    code, _, err = run_cli(["detect", tmp_path / "n", "--model", geo_dir, "-o",
                            tmp_path / "d2"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {tmp_path / 'n' / 'confidence.npy'}: expected PS confidence in [0, 1], got "
        "2 value(s) outside it (e.g. nan)"]
    code, _, err = run_cli(["detect", tmp_path / "n" / "normals.npy", "--model", geo_dir, "-o",
                            tmp_path / "d2"], monkeypatch, capsys)  # named once, not twice
    assert code == 2 and error_lines(err)[0].startswith(
        f"error: {tmp_path / 'n' / 'confidence.npy'}: expected"), err


def test_scale_scores_a_resampled_map_at_the_maps_own_pixels(
        geo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--scale F scores the map resampled by F and returns the score at the map's own size
    (0 outside the object): a map made at twice the size and scored at --scale 0.5 gives about
    the score of the map itself; out-of-range factors and known-part models are refused."""
    from psinspect.normalmap import resample

    bundle = load_model_dir(geo_dir)
    n, m = bowl(60)
    n[20:26, 30:36] = [0.3, 0.0, 0.954]
    base = detect_map(bundle, n, m).score
    big_n, big_m = resample(n, m, (120, 120))
    det = detect_map(bundle, big_n, big_m, scale=0.5)
    assert det.score.shape == (120, 120) and (det.score[~big_m] == 0).all()
    assert det.info["scale"] == 0.5
    r, c = np.unravel_index(np.argmax(det.score), det.score.shape)
    assert 36 <= r <= 56 and 56 <= c <= 76  # the planted patch, at twice the size
    assert det.score.max() == pytest.approx(base.max(), rel=0.3)
    padded = detect_map(bundle, np.pad(big_n, ((37, 5), (3, 61), (0, 0))),
                        np.pad(big_m, ((37, 5), (3, 61))), scale=0.37)  # framing-free too
    np.testing.assert_allclose(padded.score[37:157, 3:123],
                               detect_map(bundle, big_n, big_m, scale=0.37).score, atol=1e-5)
    save_npy(tmp_path / "x.npy", big_n)
    code, _, err = run_cli(["detect", tmp_path / "x.npy", "--model", geo_dir, "-o",
                            tmp_path / "o", "--scale", "0.5"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["scale"] == 0.5
    code, _, err = run_cli(["detect", tmp_path / "x.npy", "--model", geo_dir, "-o",
                            tmp_path / "p", "--scale", "9"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == ["error: --scale must be between 0.1 and 4, got 9.0"]
    known = ModelBundle(model=create_model("variation"), threshold=1.0, image_threshold=1.0)
    with pytest.raises(PsinspectError, match="--scale: model 'variation' compares a part"):
        detect_map(known, n, m, scale=0.5)


def test_summary_records_how_the_verdicts_were_made(geo_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """summary.json is an inspection record: version, date, the model's weights hash, and the
    calibrated thresholds where --threshold / --image-threshold replaced them."""
    import datetime as dt

    from psinspect import __version__

    save_npy(tmp_path / "x.npy", bowl(40)[0])
    code, _, err = run_cli(["detect", tmp_path / "x.npy", "--model", geo_dir, "-o",
                            tmp_path / "d", "--threshold", "0.5"], monkeypatch, capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "d" / "summary.json").read_text())
    cfg = json.loads((geo_dir / "config.json").read_text())
    assert s["psinspect_version"] == __version__
    assert abs(dt.datetime.fromisoformat(s["date"]) - dt.datetime.now(dt.UTC)).total_seconds() < 600
    assert s["model_weights_sha256"] == cfg.get("weights_sha256")
    assert s["pixel_threshold"] == 0.5 and s["image_threshold"] == 3.0
    assert s["calibrated_thresholds"] == {"pixel_threshold": 2.0, "image_threshold": 3.0}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764547200")  # a fixed date (reproducible)
    code, _, err = run_cli(["detect", tmp_path / "x.npy", "--model", geo_dir, "-o",
                            tmp_path / "d2"], monkeypatch, capsys)
    s2 = json.loads((tmp_path / "d2" / "summary.json").read_text())
    assert "calibrated_thresholds" not in s2 and s2["date"] == "2025-12-01T00:00:00+00:00"
    # a config without calibration record (or a null one) is no trouble for the summary
    cfg_path = geo_dir / "config.json"
    cfg_path.write_text(json.dumps({**cfg, "calibration": None}))
    code, _, err = run_cli(["detect", tmp_path / "x.npy", "--model", geo_dir, "-o",
                            tmp_path / "d3"], monkeypatch, capsys)
    assert code == 0, err
    assert "image_threshold_calibration" not in json.loads(
        (tmp_path / "d3" / "summary.json").read_text())


def test_normals_of_a_defective_capture_keep_its_ground_truth(
        geo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``normals`` copies a capture's M_defect.png and defects.json: its output, its
    normals.npy or its normals.png were taken as a good part by ``train`` (input or
    --calibrate-on), and ``detect`` showed no ground truth for them."""
    from psinspect.render import render_dataset

    cap = render_dataset(tmp_path / "caps", 1, defect_rate=1.0, seed=4, size=48, lights=12)[0]
    good = render_dataset(tmp_path / "good", 2, defect_rate=0.0, seed=5, size=48, lights=12)
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "n"], monkeypatch, capsys)
    assert code == 0, err
    for name in ("M_defect.png", "defects.json"):
        assert (tmp_path / "n" / name).read_bytes() == (cap / name).read_bytes()
    code, _, err = run_cli(["detect", cap, tmp_path / "n", "--model", geo_dir, "-o",
                            tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    panels = [cv2.imread(str(tmp_path / "d" / f"{nm}_panel.png")) for nm in (cap.name, "n")]
    np.testing.assert_array_equal(*panels)  # the ground truth drawn for both
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["inputs"][0]["regions"] == summary["inputs"][1]["regions"]
    for given in (tmp_path / "n", tmp_path / "n" / "normals.npy", tmp_path / "n" / "normals.png"):
        for args in ([given, *good], [*good, "--calibrate-on", given]):
            out = tmp_path / "m"
            code, _, err = run_cli(["train", *args, "--model", "geometric", "-o", out],
                                   monkeypatch, capsys)
            assert code == 2 and "its ground truth marks" in err and "defect-free parts only" \
                in err, (given, err)
            assert not out.exists()
    code, _, err = run_cli(["train", *good, "--model", "geometric", "-o", tmp_path / "ok"],
                           monkeypatch, capsys)
    assert code == 0, err  # (the good parts alone train)


def test_train_uses_the_solver_its_normals_were_made_with(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Maps solved by `psinspect normals --solver ls` trained a model recorded as 'robust'
    (the model's default), so detect solved new captures otherwise and warned about maps
    solved exactly like the training ones; --calibrate-on captures were solved with the
    model's default too. One solver now: the recorded one."""
    import psinspect.detect as detect_mod
    from psinspect.render import render_dataset

    caps = render_dataset(tmp_path / "caps", 4, defect_rate=0.0, seed=6, size=48, lights=12)
    for i, cap in enumerate(caps[:3]):
        code, _, err = run_cli(["normals", cap, "-o", tmp_path / f"n{i}", "--solver",
                                "ls" if i < 2 else "robust"], monkeypatch, capsys)
        assert code == 0, err
    solved_with: list[tuple[str, str]] = []
    real = detect_mod.load_input

    def spy(path, solver="robust", **kw):  # noqa: ANN001, ANN003, ANN202
        solved_with.append((Path(path).name, solver))
        return real(path, solver=solver, **kw)

    monkeypatch.setattr(detect_mod, "load_input", spy)
    code, _, err = run_cli(["train", tmp_path / "n0", tmp_path / "n1", "--calibrate-on",
                            caps[3], "--model", "geometric", "-o", tmp_path / "m"],
                           monkeypatch, capsys)
    assert code == 0, err
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["input"]["ps_solver"] == "ls"
    assert (caps[3].name, "ls") in solved_with  # the calibration capture solved alike
    code, _, err = run_cli(["train", tmp_path / "n0", tmp_path / "n2", "--model", "geometric",
                            "-o", tmp_path / "mix"], monkeypatch, capsys)
    assert code == 2 and "inputs solved with different PS solvers" in err, err
    code, _, err = run_cli(["train", tmp_path / "n0", tmp_path / "n1", "--solver", "robust",
                            "--model", "geometric", "-o", tmp_path / "s"], monkeypatch, capsys)
    assert code == 2 and "were solved with 'ls'" in err, err


def test_threshold_override_holds_at_every_tta_level(tiny_dataset: Path, tmp_path: Path
                                                     ) -> None:
    """train --threshold T set the model's own level to T, while detect --tta 8 (and the
    app's thorough mode) kept the calibrated pixel threshold of that level."""
    from psinspect.train import train_model

    hp = {"channels": [4, 8], "patch": 32, "steps_per_epoch": 2, "val_patches": 1}
    cfg = train_model([tiny_dataset], tmp_path / "m", model_name="geo-seg", hyperparameters=hp,
                      epochs=1, threshold=0.5)
    levels = cfg["tta_thresholds"]
    assert sorted(levels, key=int) == ["1", "2", "4", "8"]
    assert {v["threshold"] for v in levels.values()} == {0.5}
    assert len({v["image_threshold"] for v in levels.values()}) > 1  # still calibrated
    for tta in (1, 8):
        assert load_model_dir(tmp_path / "m", tta=tta).threshold == 0.5


def test_evaluate_says_when_detect_thresholds_were_set_by_hand(
        tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """detect --threshold / --image-threshold: summary.json kept the calibrated values, but
    evaluate's metrics.json and report showed the hand-set ones as if they were the model's."""
    from psinspect.train import train_model

    cfg = train_model([tiny_dataset], tmp_path / "m", model_name="geometric")
    code, _, err = run_cli(["detect", tiny_dataset, "--model", tmp_path / "m", "-o",
                            tmp_path / "d", "--threshold", "1.5", "--image-threshold", "0.001"],
                           monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(["evaluate", tmp_path / "d", tiny_dataset, "-o", tmp_path / "e"],
                           monkeypatch, capsys)
    assert code == 0, err
    op = json.loads((tmp_path / "e" / "metrics.json").read_text())["operating_point"]
    assert op["pixel_threshold"] == 1.5 and op["image_threshold"] == 0.001
    assert op["calibrated_thresholds"] == {"pixel_threshold": cfg["threshold"],
                                           "image_threshold": cfg["image_threshold"]}
    report = (tmp_path / "e" / "report.html").read_text()
    assert "image (pass/fail) threshold 0.001," in report  # (not 0.0000)
    assert (f"thresholds set by hand (detect --threshold / --image-threshold), the model's "
            f"calibrated ones: pixel {cfg['threshold']:.4g}, image "
            f"{cfg['image_threshold']:.4g}") in report
    # at the calibrated thresholds nothing is said
    code, _, err = run_cli(["detect", tiny_dataset, "--model", tmp_path / "m", "-o",
                            tmp_path / "d2"], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(["evaluate", tmp_path / "d2", tiny_dataset, "-o", tmp_path / "e2"],
                           monkeypatch, capsys)
    assert code == 0, err
    op = json.loads((tmp_path / "e2" / "metrics.json").read_text())["operating_point"]
    assert "calibrated_thresholds" not in op
    assert "set by hand" not in (tmp_path / "e2" / "report.html").read_text()


def test_report_metric_table_puts_each_value_under_its_heading():
    import re

    from psinspect.report import _table

    vals = {"pixel_auroc": 0.1111, "aupro": 0.2222, "pixel_ap": 0.3333, "f1_max": 0.4444,
            "image_auroc": 0.5555, "defect_pixels": 6, "regions": 7, "maps": 8}
    out = _table({"all test maps": vals}, "set", 0.3)
    heads = re.findall(r"<th>(.*?)</th>", out)
    cells = re.findall(r"<td>(.*?)</td>", out)
    assert heads[0] == "set" and heads[-1] == "all test maps"
    got = dict(zip(heads[1:-1], cells, strict=True))
    assert got == {"pixel AUROC": "0.1111", "AUPRO (FPR&lt;=0.3)": "0.2222",
                   "pixel AP": "0.3333", "F1-max": "0.4444", "image AUROC": "0.5555",
                   "defect px": "6", "regions": "7", "maps": "8"}


def test_report_verdict_table_rows_and_columns():
    from psinspect.report import _operating_point_html

    html = "".join(_operating_point_html(
        {"pixel_threshold": 1.0, "image_threshold": 2.0, "model": "geometric"},
        {"defective_failed": 11, "defective_passed": 12, "clean_failed": 13,
         "clean_passed": 14}))
    assert ("<tr><th>verdicts</th><th>fail</th><th>pass</th></tr>"
            "<tr><td>defective maps</td><td>11</td><td>12</td></tr>"
            "<tr><td>clean maps</td><td>13</td><td>14</td></tr>") in html


def test_summary_keeps_what_reading_each_input_warned_about(
        geo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """What reading an input warned about (a capture without mask.png, a map whose flat
    background counts as the object) is printed once and kept in that input's summary.json
    entry only, also when inputs are read side by side (--jobs 2): a line system reading the
    summary must see why a verdict may not hold, as the printed lines say."""
    from psinspect.render import render_dataset

    caps = render_dataset(tmp_path / "caps", 2, defect_rate=0.0, seed=2, size=48, lights=12)
    (caps[1] / "mask.png").unlink()
    flat = np.zeros((40, 40, 3), np.float32)
    flat[..., 2] = 1.0
    flat[10:30, 10:30] = bowl(20)[0]
    flat[10:30, 10:30][~bowl(20)[1]] = (0.0, 0.0, 1.0)
    save_npy(tmp_path / "flat.npy", flat)
    code, _, err = run_cli(["detect", *caps, tmp_path / "flat.npy", "--model", geo_dir,
                            "--jobs", "2", "-o", tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    entries = json.loads((tmp_path / "d" / "summary.json").read_text())["inputs"]
    assert "warnings" not in entries[0]
    (no_mask,) = entries[1]["warnings"]
    assert no_mask.startswith("no mask.png; using every non-black pixel as the object (")
    (whole,) = entries[2]["warnings"]
    assert whole.startswith("every pixel counts as the object and the whole border is the "
                            "one normal (0.00, 0.00, 1.00)")
    printed = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert sorted(printed) == sorted([f"warning: {caps[1]}: {no_mask}",
                                      f"warning: {tmp_path / 'flat.npy'}: {whole}"])


def test_the_panel_shows_a_small_defect_of_a_part_in_a_large_frame() -> None:
    """A failing part in a 2048 px frame: each tile shrank the whole frame by area averaging,
    which left 2 faint pixels of its 99 px predicted defect. The tiles show the part with a
    margin, and where they shrink it, marked pixels and peak scores stay."""
    from psinspect.report import TILE_TITLE_PX, panel_rgb

    for size, radius in ((2048, 90), (2048, 1000)):  # a small part; one that fills the frame
        yy, xx = np.mgrid[0:size, 0:size]
        mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2
        normals = np.where(mask[..., None], np.float32([0, 0, 1]), 0).astype(np.float32)
        pred = np.zeros_like(mask)
        pred[size // 2:size // 2 + 3, size // 2:size // 2 + 3] = True  # 9 px
        score = np.where(pred, 5.0, 0.1).astype(np.float32) * mask
        panel = panel_rgb(normals, mask, None, score, pred, 1.0, gt=pred)
        tiles = [panel[TILE_TITLE_PX:, i * 260:i * 260 + 256].astype(int) for i in range(5)]
        red = ((tiles[3][..., 0] == 255) & (tiles[3][..., 1] == 40)).sum()
        green = ((tiles[4][..., 1] == 200) & (tiles[4][..., 0] == 40)).sum()
        assert red >= 1 and green >= 1, (size, radius, red, green)
        assert tiles[2].max() >= 250, (size, radius)  # the peak score at full brightness
        if radius == 90:  # the part fills its tile (it was 18 px of a 256 px tile)
            assert (tiles[0].sum(-1) > 0).sum() > 0.6 * 256 * 256
