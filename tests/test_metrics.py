"""Metrics against hand-computed values, scikit-learn, and a brute-force MVTec AUPRO."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from psinspect import metrics


def test_auroc_hand_computed() -> None:
    # pairs (pos, neg): 0.8>0.1, 0.8>0.4, 0.35>0.1, 0.35<0.4 -> 3/4
    s = np.array([0.1, 0.4, 0.35, 0.8])
    y = np.array([0, 0, 1, 1], bool)
    assert metrics.auroc(s, y) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half
    assert metrics.auroc(np.array([0.5, 0.5]), np.array([0, 1], bool)) == pytest.approx(0.5)


def test_average_precision_and_f1_hand_computed() -> None:
    s = np.array([0.9, 0.8, 0.7, 0.6])
    y = np.array([1, 0, 1, 0], bool)
    # precision at the two recall steps: 1/1 and 2/3 -> AP = 0.5 * 1 + 0.5 * 2/3
    assert metrics.average_precision(s, y) == pytest.approx(0.5 + 1 / 3)
    f1, thr = metrics.f1_max(s, y)
    # threshold 0.9: P=1, R=0.5 -> 2/3; threshold 0.7: P=2/3, R=1 -> 0.8
    assert f1 == pytest.approx(0.8)
    assert thr == pytest.approx(0.7)


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    y = rng.random(n) < 0.1
    s = rng.normal(size=n) + 1.5 * y
    s = np.round(s, 1)  # many ties
    assert metrics.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.average_precision(s, y) == pytest.approx(
        average_precision_score(y, s), abs=1e-12
    )


def test_aupro_known_step_value() -> None:
    # 10 defect-free pixels scored 0.0 .. 0.9 and one 2-pixel region scored 0.85:
    # PRO jumps from 0 to 1 at FPR = 0.1 -> area to 0.3 is 0.2 -> normalised 2/3
    score = np.zeros((3, 4))
    obj = np.zeros((3, 4), bool)
    gt = np.zeros((3, 4), bool)
    neg = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3)]
    for k, (r, c) in enumerate(neg):
        score[r, c] = k / 10
        obj[r, c] = True
    score[1, 2:] = 0.85
    obj[1, 2:] = True
    gt[1, 2:] = True
    assert metrics.aupro([score], [gt], [obj]) == pytest.approx(2 / 3)
    # background pixels never count: a huge score outside the object changes nothing
    score2 = np.pad(score, 1, constant_values=99.0)
    obj2 = np.pad(obj, 1)
    gt2 = np.pad(gt, 1, constant_values=True)
    assert metrics.aupro([score2], [gt2], [obj2]) == pytest.approx(2 / 3)


def test_aupro_region_labels_merge_fragments() -> None:
    # 10 defect-free pixels scored 0.0 .. 0.9; one defect in two fragments: 1 pixel at 0.95
    # (found at FPR 0) and 3 pixels at 0.75 (found at FPR 0.2).
    # As two regions (MVTec: connected components): PRO 0.5 up to FPR 0.2, then 1
    #   -> area to 0.3 = 0.5 * 0.2 + 0.1 = 0.2 -> 2/3.
    # As one region (the defect): overlap 1/4 up to FPR 0.2, then 1 -> 0.05 + 0.1 -> 1/2.
    score = np.zeros((3, 6))
    score[0, :] = np.arange(6) / 10
    score[2, :4] = np.arange(6, 10) / 10
    gt = np.zeros((3, 6), bool)
    gt[2, 5] = True
    gt[1, 0:3] = True
    score[2, 5] = 0.95
    score[1, 0:3] = 0.75
    obj = np.zeros((3, 6), bool)
    obj[0, :] = obj[2, :4] = True
    obj |= gt
    assert metrics.aupro([score], [gt], [obj]) == pytest.approx(2 / 3)
    one = gt.astype(int)  # both fragments labelled 1
    assert metrics.aupro([score], [gt], [obj], region_labels=[one]) == pytest.approx(1 / 2)
    # unused label numbers are skipped, None falls back to the components
    assert metrics.aupro([score], [gt], [obj], region_labels=[one * 7]) == pytest.approx(1 / 2)
    assert metrics.aupro([score], [gt], [obj], region_labels=[None]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="every ground-truth pixel"):
        metrics.aupro([score], [gt], [obj], region_labels=[np.zeros((3, 6), int)])


def test_aupro_perfect_and_inverted() -> None:
    rng = np.random.default_rng(0)
    gt = np.zeros((32, 32), bool)
    gt[5:9, 5:12] = True
    gt[20:25, 20:22] = True
    obj = np.ones_like(gt)
    perfect = gt + 0.1 * rng.random(gt.shape)
    assert metrics.aupro([perfect], [gt], [obj]) == pytest.approx(1.0)
    assert metrics.aupro([-perfect], [gt], [obj]) == pytest.approx(0.0)


def _brute_force_aupro(maps, gts, objs, max_fpr=0.3):
    """MVTec-style reference: loop over every distinct threshold, label regions with scipy."""
    regions = []
    for gt, obj in zip(gts, objs, strict=True):
        lab, n = ndimage.label(gt & obj, structure=np.ones((3, 3)))
        regions += [(len(regions), lab == r) for r in range(1, n + 1)]
    thresholds = np.unique(np.concatenate([m[o] for m, o in zip(maps, objs, strict=True)]))[::-1]
    n_neg = sum(int((o & ~g).sum()) for g, o in zip(gts, objs, strict=True))
    fprs, pros = [0.0], [0.0]
    for t in thresholds:
        fp = sum(int(((m >= t) & o & ~g).sum()) for m, g, o in zip(maps, gts, objs, strict=True))
        overl = []
        for i, (m, g, o) in enumerate(zip(maps, gts, objs, strict=True)):
            lab, n = ndimage.label(g & o, structure=np.ones((3, 3)))
            for r in range(1, n + 1):
                reg = lab == r
                overl.append(((m >= t) & reg).sum() / reg.sum())
            del i
        fprs.append(fp / n_neg)
        pros.append(float(np.mean(overl)))
    fprs, pros = np.array(fprs), np.array(pros)
    # integrate to max_fpr with linear interpolation at the limit
    keep = fprs <= max_fpr
    x, y = fprs[keep], pros[keep]
    j = np.flatnonzero(~keep)
    if j.size:
        j = j[0]
        y_at = pros[j - 1] + (pros[j] - pros[j - 1]) * (max_fpr - fprs[j - 1]) / (
            fprs[j] - fprs[j - 1]
        )
        x, y = np.r_[x, max_fpr], np.r_[y, y_at]
    return np.trapezoid(y, x) / max_fpr


def test_aupro_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    maps, gts, objs = [], [], []
    for _ in range(3):
        gt = np.zeros((12, 12), bool)
        gt[2:5, 2:4] = True
        gt[8, 6:11] = True
        obj = np.ones((12, 12), bool)
        obj[:, 0] = False
        maps.append(np.round(rng.random((12, 12)) + 0.4 * gt, 2))
        gts.append(gt)
        objs.append(obj)
    assert metrics.aupro(maps, gts, objs) == pytest.approx(_brute_force_aupro(maps, gts, objs))


def test_evaluate_breakdowns() -> None:
    rng = np.random.default_rng(1)
    items = []
    for i in range(4):
        gt = np.zeros((20, 20), bool)
        defects = []
        if i < 2:
            gt[3:6, 3:6] = True
            gt[12:14, 10:18] = True
            defects = [
                {"type": "dent", "severity": 0.03, "bbox": [3, 3, 6, 6]},
                {"type": "scratch", "severity": 0.3, "bbox": [10, 12, 18, 14]},
            ]
        score = rng.random((20, 20)) * 0.5
        if i < 2:
            score[3:6, 3:6] += 1.0  # dents found, scratches not
        items.append(
            metrics.EvalItem(f"m{i}", score, gt, np.ones((20, 20), bool), float(score.max()),
                             defects)
        )
    res = metrics.evaluate(items)
    assert set(res["per_type"]) == {"dent", "scratch"}
    assert res["per_type"]["dent"]["pixel_auroc"] == pytest.approx(1.0)
    assert res["per_type"]["dent"]["aupro"] == pytest.approx(1.0)
    assert res["per_type"]["scratch"]["pixel_auroc"] < 0.8
    assert set(res["per_severity"]) == {"low", "high"}
    assert res["pooled"]["image_auroc"] == pytest.approx(1.0)
    assert 0.5 < res["pooled"]["pixel_auroc"] < 1.0
    # the pooled block alone: the same figures, no breakdowns
    quick = metrics.evaluate(items, breakdowns=False)
    assert quick["pooled"] == res["pooled"]
    assert quick["per_type"] == {} and quick["per_severity"] == {}


def _item(name: str, score: np.ndarray, gt: np.ndarray, image: float,
          defects: list[dict] | None = None, obj: np.ndarray | None = None
          ) -> metrics.EvalItem:
    return metrics.EvalItem(name, score, gt, np.ones(gt.shape, bool) if obj is None else obj,
                            image, defects or [])


def test_per_type_image_auroc_is_that_type_against_clean_maps() -> None:
    """Per defect type, image AUROC ranks the maps holding that type against the defect-free
    maps only: maps with other types are neither positives nor negatives."""
    items = []
    for name, kind, image in [("d1", "dent", 5.0), ("d2", "dent", 4.0),
                              ("s1", "scratch", 10.0), ("s2", "scratch", 9.0),
                              ("c1", None, 2.0), ("c2", None, 3.0)]:
        gt = np.zeros((12, 12), bool)
        defects = []
        if kind:
            gt[4:7, 4:7] = True
            defects = [{"type": kind, "severity": 0.03 if kind == "dent" else 0.3,
                        "bbox": [4, 4, 7, 7]}]
        items.append(_item(name, gt + 0.1 * np.arange(144).reshape(12, 12) / 144, gt, image,
                           defects))
    res = metrics.evaluate(items)
    # dents (5, 4) above both clean maps (2, 3): 1.0; counting the scratch maps (10, 9) as
    # negatives would give 0.5
    assert res["per_type"]["dent"]["image_auroc"] == pytest.approx(1.0)
    assert res["per_type"]["scratch"]["image_auroc"] == pytest.approx(1.0)
    assert res["per_type"]["dent"]["maps"] == 2
    assert res["pooled"]["image_auroc"] == pytest.approx(1.0)


def test_metrics_are_taken_inside_the_object_mask_only() -> None:
    """Background pixels (outside the object mask) never count, however they score: here they
    outscore every defect pixel, and every metric inside the object is perfect."""
    gt = np.zeros((16, 16), bool)
    gt[6:9, 6:9] = True
    obj = np.zeros((16, 16), bool)
    obj[3:13, 3:13] = True
    score = np.where(gt, 1.0, 0.5)
    score[~obj] = 10.0
    clean = np.where(obj, 0.4, 10.0)
    items = [_item("bad", score, gt, 1.0, obj=obj),
             _item("good", clean, np.zeros_like(gt), 0.4, obj=obj)]
    pooled = metrics.evaluate(items)["pooled"]
    for key in ("pixel_auroc", "aupro", "pixel_ap", "f1_max"):
        assert pooled[key] == pytest.approx(1.0), key
    assert pooled["object_pixels"] == 2 * 100


def test_mask_metrics_hand_computed() -> None:
    """Precision, recall, F1 and false-positive rate of predicted masks, inside the object: the
    background's predictions and ground truth are ignored."""
    obj = np.zeros((6, 6), bool)
    obj[:, :4] = True  # 24 object pixels
    gt = np.zeros((6, 6), bool)
    gt[0, :4] = True  # 4 defect pixels inside
    gt[5, 5] = True  # outside the object: ignored
    pred = np.zeros((6, 6), bool)
    pred[0, :2] = True  # 2 true positives
    pred[3, 0:3] = True  # 3 false positives
    pred[:, 4:] = True  # outside the object: ignored
    res = metrics.mask_metrics([pred], [gt], [obj])
    assert res["predicted_px"] == 5
    assert res["precision"] == pytest.approx(2 / 5)
    assert res["recall"] == pytest.approx(2 / 4)
    assert res["f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert res["fpr"] == pytest.approx(3 / 20)  # 20 defect-free object pixels


def test_errors() -> None:
    with pytest.raises(ValueError, match="both positive and negative"):
        metrics.auroc(np.ones(3), np.ones(3, bool))
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc(np.array([np.nan, 1.0]), np.array([0, 1], bool))
