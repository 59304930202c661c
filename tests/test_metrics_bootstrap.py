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
