"""Bootstrap intervals and per-region AUPRO shares (psinspect.metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from psinspect import metrics


def _items(seed: int, decimals: int | None = None, n: int = 6) -> list[metrics.EvalItem]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        gt = np.zeros((24, 24), bool)
        if i % 2 == 0:
            gt[3:7, 4:9] = True
            gt[15, 5:20] = True
        obj = np.ones((24, 24), bool)
        obj[:, :2] = False
        score = rng.random((24, 24)) + 0.6 * gt * rng.random()
        if decimals is not None:
            score = np.round(score, decimals)
        items.append(metrics.EvalItem(f"m{i}", score, gt, obj, float(score[obj].max())))
    return items


@pytest.mark.parametrize(("decimals", "tol"), [(1, 1e-12), (None, 2e-3)])
def test_binned_point_matches_exact(decimals: int | None, tol: float) -> None:
    items = _items(0, decimals)
    exact = metrics.evaluate(items)["pooled"]
    res = metrics.bootstrap_intervals(items, resamples=50)
    for key in ("pixel_auroc", "aupro", "image_auroc"):
        assert res["binned"][key] == pytest.approx(exact[key], abs=tol)
        lo, hi = res[key]
        assert 0.0 <= lo <= hi <= 1.0


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_image_auroc_interval_matches_an_independent_grouped_bootstrap(level: float) -> None:
    """The documented procedure redone by hand: draw the groups (not the maps) with replacement
    from numpy's generator seeded with ``seed``, recompute image AUROC (scikit-learn) on each
    draw's maps, take the central ``level`` percentile interval. Groups here are surfaces of
    unequal size whose maps are alike, so drawing maps one by one would give another interval."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    groups = ["b", "a", "c", "a", "d", "b", "e", "a", "c", "f", "f", "a"]
    surface_level = {g: rng.random() for g in "abcdef"}
    items = []
    for i, g in enumerate(groups):
        gt = np.zeros((8, 8), bool)
        if i % 3 != 1:
            gt[2:4, 2:4] = True
        image = surface_level[g] + 0.3 * gt.any() + 0.01 * rng.random()
        items.append(metrics.EvalItem(f"m{i}", rng.random((8, 8)) + gt, gt,
                                      np.ones((8, 8), bool), float(image)))
    resamples, seed = 300, 3
    res = metrics.bootstrap_intervals(items, groups, resamples=resamples, level=level,
                                      seed=seed)
    names = sorted(set(groups))
    members = [[i for i, g in enumerate(groups) if g == n] for n in names]
    y = np.array([it.gt.any() for it in items])
    s = np.array([it.image_score for it in items])
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    values = []
    for d in draws:
        idx = [i for k in d for i in members[k]]
        if y[idx].any() and not y[idx].all():
            values.append(roc_auc_score(y[idx], s[idx]))
    tail = 100 * (1 - level) / 2
    assert res["draws_used"]["image_auroc"] == len(values)
    assert res["image_auroc"] == pytest.approx(
        [np.percentile(values, tail), np.percentile(values, 100 - tail)], abs=1e-12)
    assert res["groups"] == len(names)


def test_one_group_gives_no_interval() -> None:
    # every draw of a single surface is the test set itself: a zero-width interval would
    # claim a certainty the data cannot give
    items = _items(1)
    res = metrics.bootstrap_intervals(items, groups=["same"] * len(items), resamples=20)
    for key in ("pixel_auroc", "aupro", "image_auroc"):
        assert res[key] is None
        assert res["binned"][key] is not None
    assert res["groups"] == 1


def test_spread_shrinks_with_more_maps_and_is_seeded() -> None:
    few = metrics.bootstrap_intervals(_items(2, n=4), resamples=300, seed=5)
    many = metrics.bootstrap_intervals(_items(2, n=40), resamples=300, seed=5)
    width = [r["pixel_auroc"][1] - r["pixel_auroc"][0] for r in (few, many)]
    assert width[1] < width[0]
    again = metrics.bootstrap_intervals(_items(2, n=4), resamples=300, seed=5)
    assert again == few


def test_perfect_detector_interval_is_one() -> None:
    items = _items(3)
    for it in items:
        it.score[:] = it.gt * 1.0
        it.image_score = float(it.gt.any())
    res = metrics.bootstrap_intervals(items, resamples=30)
    for key in ("pixel_auroc", "aupro", "image_auroc"):
        assert res[key] == pytest.approx([1.0, 1.0])


def test_region_aupro_shares() -> None:
    items = _items(4)
    # the first map's square outscores every clean pixel; its line scores below all of them
    items[0].score[3:7, 4:9] = 5.0
    items[0].score[15, 5:20] = -1.0
    per = metrics.region_aupro(items)
    assert [len(v) for v in per] == [2, 0, 2, 0, 2, 0]
    lab, _ = metrics.label_regions(items[0].gt & items[0].mask)
    square, line = lab[4, 5] - 1, lab[15, 10] - 1
    assert per[0][square] == pytest.approx(1.0)
    assert per[0][line] == pytest.approx(0.0)
    exact = metrics.aupro([i.score for i in items], [i.gt for i in items],
                          [i.mask for i in items])
    assert np.mean(np.concatenate(per)) == pytest.approx(exact, abs=2e-3)


def test_bad_arguments() -> None:
    items = _items(5)
    with pytest.raises(ValueError, match="group labels"):
        metrics.bootstrap_intervals(items, groups=["a"])
    with pytest.raises(ValueError, match="level"):
        metrics.bootstrap_intervals(items, level=1.5)
    with pytest.raises(ValueError, match="nothing"):
        metrics.bootstrap_intervals([])


def test_many_small_regions_stay_small_in_memory() -> None:
    """Speckled ground truth (thousands of regions per map, as a noisy real defect mask has)
    once took an (regions x 4096) float64 table: 700 MiB at peak for 4 such maps."""
    import tracemalloc

    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        gt = np.zeros((256, 256), bool)
        gt[::6, ::6] = True  # 1849 one-pixel regions
        score = rng.random(gt.shape) + gt
        items.append(metrics.EvalItem(f"m{i}", score, gt, np.ones_like(gt), float(i % 2)))
    items.append(metrics.EvalItem("clean", rng.random((256, 256)), np.zeros((256, 256), bool),
                                  np.ones((256, 256), bool), 0.0))
    tracemalloc.start()
    res = metrics.bootstrap_intervals(items, resamples=50)
    shares = metrics.region_aupro(items)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 150 * 2**20, peak / 2**20
    assert res["binned"]["aupro"] == pytest.approx(
        metrics.evaluate(items)["pooled"]["aupro"], abs=2e-3)
    assert [len(s) for s in shares] == [1849] * 4 + [0]


def test_eval_item_reads_any_mask_dtype_the_same() -> None:
    """A uint8 0/128 ground truth (as tools save masks) is the same defective map as a bool
    one for every metric: ``gt & mask`` on it was 0 (bitwise) for some of them."""
    rng = np.random.default_rng(1)
    obj = np.ones((16, 16), bool)
    rec = [{"type": "dent", "bbox": [4, 4, 8, 8], "level": "low"}]
    as_u8, as_bool = [], []
    for i in range(4):
        gt = np.zeros((16, 16), np.uint8)
        if i % 2:
            gt[4:8, 4:8] = 128
        s = rng.random((16, 16)) + (gt > 0)
        as_u8.append(metrics.EvalItem(str(i), s, gt, obj.astype(np.uint8) * 7, float(i),
                                      rec if i % 2 else None))
        as_bool.append(metrics.EvalItem(str(i), s, gt > 0, obj, float(i), rec if i % 2 else None))
    assert metrics.evaluate(as_u8) == metrics.evaluate(as_bool)
    assert as_u8[1].gt.dtype == bool and as_u8[1].gt.sum() == 16
    with pytest.raises(ValueError, match="shapes"):
        metrics.EvalItem("x", np.zeros((4, 4)), np.zeros((4, 5), bool), np.ones((4, 4), bool), 0)


def test_region_filter_skips_empty_labels_and_refuses_unknown_ones() -> None:
    obj = np.ones((10, 10), bool)
    gt = np.zeros((10, 10), bool)
    gt[2:4, 2:4] = gt[6:8, 6:8] = True
    labels = np.zeros((10, 10), int)
    labels[2:4, 2:4], labels[6:8, 6:8] = 1, 3  # label 2 has no pixels
    score = gt.astype(float)  # a perfect detector
    for chosen in ([1, 3], [1, 2, 3], [3]):
        assert metrics.aupro([score], [gt], [obj], region_labels=[labels],
                             region_filter=[np.array(chosen)]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="region_filter"):
        metrics.aupro([score], [gt], [obj], region_filter=[np.array([5])])


def test_draws_a_figure_is_undefined_on_are_counted() -> None:
    """Draws without a defect-free map leave image AUROC out; the report said nothing of how
    many (7 % of them on a run with clean maps on 2 of 4 surfaces)."""
    from psinspect.report import _intervals_html

    rng = np.random.default_rng(2)
    items, groups = [], []
    for s in range(4):
        for k in range(2):
            gt = np.zeros((16, 16), bool)
            if s >= 2 or k == 0:  # surfaces 0, 1 have a clean map; 2, 3 none
                gt[4:8, 4:8] = True
            items.append(metrics.EvalItem(f"s{s}k{k}", rng.random((16, 16)) + gt, gt,
                                          np.ones((16, 16), bool), float(rng.random())))
            groups.append(f"s{s}")
    res = metrics.bootstrap_intervals(items, groups, resamples=200)
    used = res["draws_used"]
    assert used["pixel_auroc"] == used["aupro"] == 200
    # P(no draw of surface 0 or 1 among 4) = (2/4) ** 4
    assert 150 < used["image_auroc"] < 200
    note = _intervals_html(res)[0]
    assert f"image AUROC from {used['image_auroc']} of them" in note
