"""Anomaly-detection metrics over per-pixel score maps, counted inside the object mask only.

Pure numpy (scipy for connected components). Conventions:

- ``scores``: float arrays, higher = more anomalous. ``labels``: bool arrays, True = defective.
- Score maps are ``(H, W)`` float, ground-truth masks ``(H, W)`` bool, object masks ``(H, W)``
  bool; background pixels (outside the object mask) never count, neither as negatives nor as
  positives (a ground-truth pixel outside the object is dropped).
- Ties are grouped (one ROC point per distinct score), as in scikit-learn, so ``auroc`` and
  ``average_precision`` equal ``sklearn.metrics.roc_auc_score`` / ``average_precision_score``.

AUPRO follows the MVTec AD definition (Bergmann et al., IJCV 2021): for every threshold, the
per-region overlap (PRO) is the mean over all ground-truth connected components (8-connected, over
all images) of the fraction of the component's pixels above the threshold; the false-positive rate
is taken over all defect-free object pixels of all images. The area under PRO(FPR) from FPR 0 to
``max_fpr`` (default 0.3, linear interpolation at the limit) is divided by ``max_fpr``, so a
perfect detector scores 1.

Uncertainty: :func:`bootstrap_intervals` redraws the test maps (or groups of them, e.g. one test
surface's maps together) with replacement and reports percentile intervals of the pooled pixel
AUROC, AUPRO and image AUROC; :func:`region_aupro` splits AUPRO into each region's share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

#: 8-connectivity for ground-truth regions (as in the MVTec AD evaluation code)
_EIGHT = np.ones((3, 3), dtype=bool)


def _flat(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in size")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or Inf")
    return s, y


def _descending(scores: np.ndarray) -> np.ndarray:
    """The stable order that sorts ``scores`` from the highest down (ties keep their order)."""
    return np.argsort(-scores, kind="mergesort")


def _cumulative_counts(
    scores: np.ndarray, labels: np.ndarray, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, true positives, false positives) at each distinct score;
    ``order``: :func:`_descending` of ``scores`` where the caller already has it."""
    order = _descending(scores) if order is None else order
    s = scores[order]
    y = labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each tie group
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    return s[last], tps, fps


def _roc_from_counts(thr: np.ndarray, tps: np.ndarray, fps: np.ndarray, n_pos: int,
                     n_neg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, thr]


def _pr_from_counts(thr: np.ndarray, tps: np.ndarray, fps: np.ndarray, n_pos: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tps / (tps + fps), tps / n_pos, thr


def _ap_from_pr(precision: np.ndarray, recall: np.ndarray) -> float:
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _f1_from_pr(precision: np.ndarray, recall: np.ndarray, thr: np.ndarray
                ) -> tuple[float, float]:
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    i = int(np.argmax(f1))
    return float(f1[i]), float(thr[i])


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: ``(fpr, tpr, thresholds)``, starting at (0, 0) with threshold +inf."""
    s, y = _flat(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs both positive and negative samples")
    return _roc_from_counts(*_cumulative_counts(s, y), n_pos, n_neg)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal over tie groups; equals sklearn's roc_auc_score)."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr))


def precision_recall_curve(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` at each distinct score, thresholds descending."""
    s, y = _flat(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("precision/recall need at least one positive sample")
    return _pr_from_counts(*_cumulative_counts(s, y), n_pos)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n (scikit-learn's average_precision_score, no interpolation)."""
    precision, recall, _ = precision_recall_curve(scores, labels)
    return _ap_from_pr(precision, recall)


def f1_max(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds: ``(f1, threshold)``; predicted positive = score >= threshold."""
    return _f1_from_pr(*precision_recall_curve(scores, labels))


def _pixel_metrics(scores: np.ndarray, labels: np.ndarray, order: np.ndarray | None = None
                   ) -> dict[str, float]:
    """:func:`auroc`, :func:`average_precision` and :func:`f1_max` (with its threshold) of one
    set of pixels from a single sort (the same values as the three functions); ``order``:
    :func:`_descending` of the scores where the caller already has it."""
    s, y = _flat(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0:
        raise ValueError("precision/recall need at least one positive sample")
    if n_neg == 0:
        raise ValueError("ROC needs both positive and negative samples")
    counts = _cumulative_counts(s, y, order)
    fpr, tpr, _ = _roc_from_counts(*counts, n_pos, n_neg)
    precision, recall, thr = _pr_from_counts(*counts, n_pos)
    f1, f1_thr = _f1_from_pr(precision, recall, thr)
    return {"pixel_auroc": float(np.trapezoid(tpr, fpr)),
            "pixel_ap": _ap_from_pr(precision, recall), "f1_max": f1, "f1_threshold": f1_thr}


def label_regions(gt_mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a bool mask: ``(labels int32 (H, W), count)``; 0 = background."""
    lab, n = ndimage.label(np.asarray(gt_mask, bool), structure=_EIGHT)
    return lab.astype(np.int32), int(n)


def pro_curve(
    score_maps: Sequence[np.ndarray],
    gt_masks: Sequence[np.ndarray],
    object_masks: Sequence[np.ndarray],
    region_filter: Sequence[np.ndarray | None] | None = None,
    region_labels: Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-region-overlap curve ``(fpr, pro)``, starting at (0, 0), over a set of images.

    Regions are the 8-connected components of each image's ground truth inside the object (as
    MVTec AD counts them), or, where ``region_labels`` gives one for an image, its (H, W) int
    labels: every ground-truth pixel's region number (> 0; e.g. which defect it belongs to, so
    that one defect's fragments count as one region); label numbers without pixels are skipped.
    ``region_filter``: optional per image an int array of region labels (from
    :func:`label_regions` of that image's ground truth restricted to the object, or from its
    ``region_labels`` where given) that count as regions; other ground-truth pixels are left
    out entirely (neither region nor negative). Used for per-defect-type breakdowns.
    """
    s, w, neg, n_regions = _pro_pixels(score_maps, gt_masks, object_masks, region_filter,
                                       region_labels)
    return _pro_from_pixels(s, w, neg, n_regions, _descending(s))


def _pro_pixels(
    score_maps: Sequence[np.ndarray],
    gt_masks: Sequence[np.ndarray],
    object_masks: Sequence[np.ndarray],
    region_filter: Sequence[np.ndarray | None] | None = None,
    region_labels: Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The pixels :func:`pro_curve` ranks, checked: their scores (float64, the object pixels
    of each image in row-major order, images one after the other, minus the ground-truth
    pixels a ``region_filter`` leaves out), per pixel the weight 1 / area of its region (0 for
    defect-free pixels), whether it is defect-free, and the number of regions."""
    all_scores: list[np.ndarray] = []
    weights: list[np.ndarray] = []  # per pixel: 1/area of its region, or 0
    negative: list[np.ndarray] = []
    region_areas: list[np.ndarray] = []
    for i, (sm, gt, obj) in enumerate(zip(score_maps, gt_masks, object_masks, strict=True)):
        obj = np.asarray(obj, bool)
        gt = np.asarray(gt, bool) & obj
        if region_labels is not None and region_labels[i] is not None:
            lab = np.where(gt, np.asarray(region_labels[i], np.int64), 0)
            if lab.shape != gt.shape or np.any(lab[gt] <= 0):
                raise ValueError("region_labels must give every ground-truth pixel a label > 0")
            n = int(lab.max(initial=0))
        else:
            lab, n = label_regions(gt)
        areas = np.bincount(lab[obj], minlength=n + 1).astype(np.float64)
        keep = areas > 0
        keep[0] = False
        if region_filter is not None and region_filter[i] is not None:
            chosen = np.asarray(region_filter[i], dtype=np.int64)
            if np.any((chosen < 1) | (chosen > n)):
                raise ValueError(f"region_filter labels must lie in 1..{n}")
            keep &= np.isin(np.arange(n + 1), chosen)  # (labels without pixels stay out)
        lab_obj = lab[obj]
        use = (lab_obj == 0) | keep[lab_obj]
        s = np.asarray(sm, np.float64)[obj][use]
        lab_use = lab_obj[use]
        w = np.where(lab_use > 0, 1.0 / np.maximum(areas[lab_use], 1.0), 0.0)
        all_scores.append(s)
        weights.append(w)
        negative.append(lab_use == 0)
        region_areas.append(areas[keep])
    s = np.concatenate(all_scores)
    w = np.concatenate(weights)
    neg = np.concatenate(negative)
    n_regions = int(sum(a.size for a in region_areas))
    n_neg = int(neg.sum())
    if n_regions == 0:
        raise ValueError("PRO needs at least one ground-truth region")
    if n_neg == 0:
        raise ValueError("PRO needs defect-free object pixels")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or Inf")
    return s, w, neg, n_regions


def _pro_from_pixels(s: np.ndarray, w: np.ndarray, neg: np.ndarray, n_regions: int,
                     order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pro_curve` of the pixels of :func:`_pro_pixels`, ``order`` = their
    :func:`_descending` order."""
    n_neg = int(neg.sum())
    s, w, neg = s[order], w[order], neg[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    fpr = np.cumsum(neg)[last] / n_neg
    pro = np.cumsum(w)[last] / n_regions
    return np.r_[0.0, fpr], np.r_[0.0, pro]


def area_under_curve(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under y(x) for x in [0, x_max] (x ascending), interpolating at x_max."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max and (~inside).any():
        j = int(np.flatnonzero(~inside)[0])
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        # a vertical step (x0 == x1) cannot straddle x_max, so x1 > x0 here
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.r_[xs, x_max], np.r_[ys, y_at]
    return float(np.trapezoid(ys, xs))


def aupro(
    score_maps: Sequence[np.ndarray],
    gt_masks: Sequence[np.ndarray],
    object_masks: Sequence[np.ndarray],
    max_fpr: float = 0.3,
    region_filter: Sequence[np.ndarray | None] | None = None,
    region_labels: Sequence[np.ndarray | None] | None = None,
) -> float:
    """Normalised area under the PRO curve up to ``max_fpr`` (MVTec AD AUPRO; 1 = perfect);
    ``region_filter``, ``region_labels``: see :func:`pro_curve`."""
    fpr, pro = pro_curve(score_maps, gt_masks, object_masks, region_filter, region_labels)
    return area_under_curve(fpr, pro, max_fpr) / max_fpr


@dataclass
class EvalItem:
    """One test map for :func:`evaluate`.

    score: (H, W) float per-pixel score; gt: (H, W) bool defect mask (all False for clean maps);
    mask: (H, W) bool object mask; image_score: the detector's image-level score;
    defects: the dataset's defect records (``type``, ``severity``, ``bbox`` [x0, y0, x1, y1]
    inclusive-exclusive pixel box), used to attribute ground-truth regions to defect types.
    """

    name: str
    score: np.ndarray
    gt: np.ndarray
    mask: np.ndarray
    image_score: float
    defects: list[dict] | None = None

    def __post_init__(self) -> None:
        # one reading for every consumer: bool masks, ground truth inside the object only
        self.mask = np.asarray(self.mask, bool)
        self.gt = np.asarray(self.gt, bool)
        if not self.gt.shape == self.mask.shape == np.shape(self.score):
            raise ValueError(f"{self.name}: score, gt and mask shapes differ")
        self.gt = self.gt & self.mask


def _severity_bin(record: dict) -> str:
    """A defect record's severity level: its ``level`` if given, else the defect library's
    named range of its numeric ``severity`` (depth / width)."""
    if record.get("level") is not None:
        return str(record["level"])
    value = record.get("severity")
    if isinstance(value, str):
        return value
    if value is None:
        return "unknown"
    from psinspect.defects import severity_level

    return severity_level(float(value))


def _region_attributes(item: EvalItem, lab: np.ndarray, n: int) -> list[dict]:
    """Per region label 1..n: the defect record covering most of its pixels (or {})."""
    from scipy import ndimage

    out: list[dict] = []
    recs = item.defects or []
    boxes = ndimage.find_objects(lab, max_label=n)  # (one pass over the map, not one per region)
    for r, box in enumerate(boxes, start=1):
        ys, xs = np.nonzero(lab[box] == r) if box is not None else (np.empty(0), np.empty(0))
        ys, xs = ys + (box[0].start if box else 0), xs + (box[1].start if box else 0)
        best, best_hits = {}, 0
        for rec in recs:
            bbox = rec.get("bbox")
            if not bbox:
                continue
            x0, y0, x1, y1 = bbox
            hits = int(np.sum((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)))
            if hits > best_hits:
                best, best_hits = rec, hits
        if not best and len(recs) == 1:
            best = recs[0]
        out.append(best)
    return out


def _metric_block(
    items: Sequence[EvalItem], filters: list[np.ndarray | None] | None, max_fpr: float
) -> dict:
    """Pixel AUROC/AP/F1/AUPRO over items; only regions in ``filters`` count as positives.
    The pixels are sorted once for all four (:func:`_pro_pixels` holds exactly the pixels the
    pixel metrics rank: the object's, minus ground truth outside ``filters``)."""
    s, w, neg, n_regions = _pro_pixels([it.score for it in items], [it.gt for it in items],
                                       [it.mask for it in items], filters)
    order = _descending(s)
    pixel = _pixel_metrics(s, ~neg, order)
    fpr, pro = _pro_from_pixels(s, w, neg, n_regions, order)
    return {
        "pixel_auroc": pixel["pixel_auroc"],
        "aupro": area_under_curve(fpr, pro, max_fpr) / max_fpr,
        "pixel_ap": pixel["pixel_ap"],
        "f1_max": pixel["f1_max"],
        "f1_threshold": pixel["f1_threshold"],
        "defect_pixels": int((~neg).sum()),
        "object_pixels": int(neg.size),
    }


def evaluate(items: Sequence[EvalItem], max_fpr: float = 0.3, breakdowns: bool = True) -> dict:
    """All metrics for a test set: pooled, per defect type and per severity (with
    ``breakdowns=False`` only the pooled block, the other two empty: much faster).

    Returns a JSON-able dict: ``pooled`` (pixel_auroc, aupro, pixel_ap, f1_max, image_auroc,
    counts), ``per_type`` and ``per_severity`` (same pixel metrics, counting as positives only
    the ground-truth regions attributed to that group and as negatives all defect-free object
    pixels; image AUROC of the maps containing that group against the defect-free maps;
    ``regions`` and ``maps``: how many regions and defective maps the group has). A region is
    a connected component of the ground truth and goes to the defect record whose box holds
    most of its pixels, so a defect whose truth merges with another's counts for that one.
    Severity: a record's ``level`` (low / medium / high) or, failing that, the level of its
    numeric ``severity`` in :data:`psinspect.defects.SEVERITY_LEVELS`.
    """
    if not items:
        raise ValueError("nothing to evaluate")
    is_defective = np.array([bool((it.gt & it.mask).any()) for it in items])
    if not is_defective.any():
        raise ValueError("no defective test maps (no ground-truth pixels inside the object)")
    pooled = _metric_block(items, None, max_fpr)
    img_scores = np.array([it.image_score for it in items], np.float64)
    pooled["image_auroc"] = (
        auroc(img_scores, is_defective) if (~is_defective).any() else None
    )
    pooled["maps"] = len(items)
    pooled["defective_maps"] = int(is_defective.sum())
    if not breakdowns:
        return {"pooled": pooled, "per_type": {}, "per_severity": {}, "max_fpr": max_fpr}

    # attribute each ground-truth region to a defect type / severity
    region_keys: list[list[tuple[str, str]]] = []
    for it in items:
        lab, n = label_regions(it.gt & it.mask)
        attrs = _region_attributes(it, lab, n)
        region_keys.append(
            [(str(a.get("type", "unknown")), _severity_bin(a)) for a in attrs]
        )

    def breakdown(pos: int) -> dict:
        order = {"low": 0, "medium": 1, "high": 2}  # severity levels in their own order
        groups = sorted({k[pos] for keys in region_keys for k in keys},
                        key=lambda g: (order.get(g, 3), g))
        result = {}
        for g in groups:
            filters: list[np.ndarray | None] = []
            has = np.zeros(len(items), bool)
            for i, keys in enumerate(region_keys):
                ids = np.array([r + 1 for r, k in enumerate(keys) if k[pos] == g], np.int64)
                filters.append(ids)
                has[i] = ids.size > 0
            block = _metric_block(items, filters, max_fpr)
            sel = has | ~is_defective
            block["image_auroc"] = (
                auroc(img_scores[sel], has[sel]) if (~is_defective).any() else None
            )
            block["regions"] = int(sum(f.size for f in filters if f is not None))
            block["maps"] = int(has.sum())  # (defective maps holding such a region)
            result[g] = block
        return result

    return {
        "pooled": pooled,
        "per_type": breakdown(0),
        "per_severity": breakdown(1),
        "max_fpr": max_fpr,
    }


@dataclass
class _Binned:
    """Score histograms of a test set on common bins (ascending scores), for fast resampling.

    neg, pos: (M, B) counts of defect-free / ground-truth object pixels per map and bin;
    region_sum: (M, B) per map the sum over its ground-truth regions of the fraction of the
    region's pixels at or above each bin (bins from the highest down); regions: (M,) the
    number of regions of each map; images: (M,) image scores; defective: (M,) whether a map
    has ground-truth pixels.
    """

    neg: np.ndarray
    pos: np.ndarray
    region_sum: np.ndarray
    regions: np.ndarray
    images: np.ndarray
    defective: np.ndarray


def _bin_edges(items: Sequence[EvalItem], bins: int) -> np.ndarray:
    """Ascending bin edges: ``bins`` quantiles of all object-pixel scores (ties merged)."""
    all_obj = np.concatenate([np.asarray(it.score, np.float64)[it.mask] for it in items])
    if not np.isfinite(all_obj).all():
        raise ValueError("scores contain NaN or Inf")
    return np.unique(np.quantile(all_obj, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def _item_bins(it: EvalItem, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """An item's bin index per pixel (H, W), its ground-truth region labels and their number."""
    lab, n = label_regions(it.gt)
    return np.searchsorted(edges, np.asarray(it.score, np.float64), side="right"), lab, n


def _bin_items(items: Sequence[EvalItem], bins: int) -> _Binned:
    edges = _bin_edges(items, bins)
    nb = edges.size + 1
    neg = np.zeros((len(items), nb))
    pos = np.zeros((len(items), nb))
    region_sum = np.zeros((len(items), nb))
    regions = np.zeros(len(items))
    for i, it in enumerate(items):
        b, lab, n = _item_bins(it, edges)
        neg[i] = np.bincount(b[it.mask & ~it.gt], minlength=nb)
        pos[i] = np.bincount(b[it.gt], minlength=nb)
        if n:  # each pixel weighs 1 / its region's area: the regions' fractions, summed
            area = np.bincount(lab[it.gt], minlength=n + 1)
            frac = np.bincount(b[it.gt], weights=1.0 / area[lab[it.gt]], minlength=nb)
            region_sum[i] = np.cumsum(frac[::-1])
            regions[i] = n
    return _Binned(neg, pos, region_sum, regions,
                   np.array([it.image_score for it in items], np.float64),
                   np.array([bool(it.gt.any()) for it in items]))


def _binned_metrics(bn: _Binned, weights: np.ndarray, max_fpr: float) -> dict[str, np.ndarray]:
    """Pixel AUROC, AUPRO and image AUROC (each (K,), NaN where undefined) of the test set with
    map ``i`` counted ``weights[k, i]`` times in resample ``k`` (weights (K, M))."""
    k = len(weights)
    neg = np.cumsum((weights @ bn.neg)[:, ::-1], axis=1)  # pixels at or above each bin, desc.
    pos = np.cumsum((weights @ bn.pos)[:, ::-1], axis=1)
    n_neg, n_pos = neg[:, -1:], pos[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = np.c_[np.zeros(k), neg / n_neg]
        tpr = np.c_[np.zeros(k), pos / n_pos]
        pixel = np.trapezoid(tpr, fpr, axis=1)
        pro = np.c_[np.zeros(k), (weights @ bn.region_sum) / (weights @ bn.regions)[:, None]]
    out = {"pixel_auroc": pixel, "aupro": np.full(k, np.nan), "image_auroc": np.full(k, np.nan)}
    for j in range(k):
        if n_neg[j, 0] > 0 and np.isfinite(pro[j]).all():
            out["aupro"][j] = area_under_curve(fpr[j], pro[j], max_fpr) / max_fpr
        counts = weights[j].astype(np.int64)
        y = np.repeat(bn.defective, counts)
        if y.any() and not y.all():
            out["image_auroc"][j] = auroc(np.repeat(bn.images, counts), y)
    return out


def bootstrap_intervals(
    items: Sequence[EvalItem], groups: Sequence[str] | None = None, resamples: int = 1000,
    level: float = 0.95, seed: int = 0, max_fpr: float = 0.3, bins: int = 4096,
) -> dict:
    """Percentile bootstrap intervals of the pooled pixel AUROC, AUPRO and image AUROC.

    How much would the metrics move on another test set drawn like this one? Groups of maps
    (``groups``: one label per item, e.g. the test surface, so that the maps of one surface,
    which are not independent, are drawn together; default: every map its own group) are drawn
    with replacement ``resamples`` times (numpy generator seeded with ``seed``), and the metrics
    recomputed on each draw. With a single group every draw is the test set itself, which says
    nothing about another test set: the intervals are then ``None``. For speed every draw uses
    the scores binned on ``bins`` quantiles of all object-pixel scores (ties within a bin;
    ``binned`` gives the binned metrics of the test set itself, to be compared with the exact
    ones of :func:`evaluate`). Draws without defect-free pixels, regions or both image classes
    are left out of that metric.

    Returns a JSON-able dict: per metric ``[low, high]`` (or ``None``), and ``binned``,
    ``level``, ``resamples``, ``groups``, ``seed``, ``draws_used`` (per metric, the draws it
    was defined on).
    """
    if not items:
        raise ValueError("nothing to evaluate")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"need 0 < level < 1 and resamples >= 1, got {level}, {resamples}")
    labels = [str(i) for i in range(len(items))] if groups is None else [str(g) for g in groups]
    if len(labels) != len(items):
        raise ValueError(f"{len(labels)} group labels for {len(items)} items")
    names, index = np.unique(labels, return_inverse=True)
    bn = _bin_items(items, bins)
    point = _binned_metrics(bn, np.ones((1, len(items))), max_fpr)
    boot = None
    if len(names) > 1:  # one group: every draw would be the test set itself
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(names), size=(resamples, len(names)))
        per_group = np.stack([np.bincount(d, minlength=len(names)) for d in draws])
        boot = _binned_metrics(bn, per_group[:, index].astype(np.float64), max_fpr)
    tail = 100 * (1 - level) / 2
    out: dict = {"level": level, "resamples": resamples, "groups": len(names), "seed": seed,
                 "binned": {}, "draws_used": {}}
    for key in point:
        ok = boot[key][np.isfinite(boot[key])] if boot is not None else np.empty(0)
        out["draws_used"][key] = int(ok.size)
        out[key] = ([float(np.percentile(ok, tail)), float(np.percentile(ok, 100 - tail))]
                    if ok.size else None)
        p = float(point[key][0])
        out["binned"][key] = p if np.isfinite(p) else None
    return out


def region_aupro(items: Sequence[EvalItem], max_fpr: float = 0.3, bins: int = 4096
                 ) -> list[np.ndarray]:
    """Each ground-truth region's own normalised area under its overlap-vs-FPR curve.

    AUPRO is linear in the per-region overlaps, so it is the mean of these values over all
    regions (up to the binning of :func:`bootstrap_intervals`); ``1 - value`` divided by the
    number of regions is the region's share of ``1 - AUPRO``. Returns per item a float64 array
    in the label order of :func:`label_regions` (empty for defect-free maps).
    """
    edges = _bin_edges(items, bins)
    nb = edges.size + 1
    binned = [_item_bins(it, edges) for it in items]
    neg = np.cumsum(sum(np.bincount(b[it.mask & ~it.gt], minlength=nb)
                        for it, (b, _, _) in zip(items, binned, strict=True))[::-1])
    fpr = np.r_[0.0, neg / max(neg[-1], 1.0)]
    # the area is linear in the region's overlap curve, so it is the mean over its pixels of
    # the area of one pixel's curve (0 until the pixel's bin, then 1): one value per bin
    steps = np.arange(nb + 1)
    per_bin = np.array([area_under_curve(fpr, (steps >= nb - b).astype(np.float64), max_fpr)
                        for b in range(nb)]) / max_fpr
    out = []
    for it, (b, lab, n) in zip(items, binned, strict=True):
        area = np.bincount(lab[it.gt], minlength=n + 1)[1:]
        total = np.bincount(lab[it.gt], weights=per_bin[b[it.gt]], minlength=n + 1)[1:]
        out.append(total / np.maximum(area, 1))
    return out


def verdict_counts(verdicts: Sequence[str], defective: Sequence[bool]) -> dict[str, Any]:
    """Pass/fail verdicts (``"pass"`` / ``"fail"``) against the truth: ``defective[i]`` says
    whether map ``i`` is defective and should fail."""
    tp = fp = tn = fn = 0
    for v, bad in zip(verdicts, defective, strict=True):
        fail = v == "fail"
        tp += bad and fail
        fn += bad and not fail
        fp += fail and not bad
        tn += not bad and not fail
    total = tp + fp + tn + fn
    return {"defective_failed": tp, "defective_passed": fn, "clean_failed": fp,
            "clean_passed": tn, "accuracy": (tp + tn) / total if total else None}


def mask_metrics(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                 masks: Sequence[np.ndarray]) -> dict[str, Any]:
    """Pooled pixel precision, recall, F1 and false-positive rate of predicted defect masks
    (bool (H, W) each, at one threshold) against the ground truth, inside the object masks."""
    tp = fp = fn = tn = 0
    for p, g, m in zip(preds, gts, masks, strict=True):
        p, g, m = np.asarray(p, bool) & m, np.asarray(g, bool) & m, np.asarray(m, bool)
        tp += int((p & g).sum())
        fp += int((p & ~g).sum())
        fn += int((~p & g & m).sum())
        tn += int((~p & ~g & m).sum())
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    f1 = (2 * prec * rec / (prec + rec) if prec is not None and rec is not None and prec + rec
          else (0.0 if prec is not None and rec is not None else None))
    return {"precision": prec, "recall": rec, "f1": f1,
            "fpr": fp / (fp + tn) if fp + tn else None, "predicted_px": tp + fp}

