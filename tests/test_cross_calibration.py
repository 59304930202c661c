"""Cross calibration of the variation model (``psinspect train``): the template learns from every
good part, and the thresholds come from scores of parts that the scoring model never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _posed_part import posed_part
from hypothesis import given, settings
from hypothesis import strategies as st

from psinspect.detect import image_score
from psinspect.errors import PsinspectError
from psinspect.models import create_model
from psinspect.modelstore import load_model_dir
from psinspect.train import (
    conformal_rank,
    cross_fitted,
    cross_folds,
    floor_words,
    gumbel_threshold,
    load_training_data,
    train_model,
)


def test_a_higher_share_of_good_parts_failing_lowers_the_floor_below_the_largest() -> None:
    """The fit's floor is the largest score only while the rate asked for is below 1 / (N + 1):
    with 40 scores and a rate of 5 %, --image-fpr 0.05 was held at the largest score and did
    nothing; now the floor is the 2nd largest."""
    scores = [1.0 + 0.01 * i for i in range(38)] + [3.0, 4.0]
    thr, fit = gumbel_threshold(scores, 0.05)
    assert fit["quantile"] < 3.0 and thr == 3.0
    assert gumbel_threshold(scores, 0.01)[0] == 4.0  # 0.01 < 1 / 41: the largest
    assert (conformal_rank(40, 0.05), conformal_rank(40, 0.01)) == (39, 40)
    assert conformal_rank(19, 0.05) == 19  # 0.95 * 20 = 19 exactly: not rounded up to 20
    assert conformal_rank(1000, 0.01) == 991
    assert floor_words(40, 0.01) == "their maximum"
    assert [floor_words(n, 0.05) for n in (40, 60, 80, 1000)] == [
        "their 2nd largest", "their 3rd largest", "their 4th largest", "their 50th largest"]


def test_the_floor_keeps_the_share_of_good_parts_failing_with_a_rough_minority() -> None:
    """Good parts of two kinds, 15 % of them rough (scores about 3 against 1): the Gumbel fit
    to all scores puts its 95 % quantile below the rough ones and fails about 13 % of new good
    parts; with the conformal floor at most the 5 % asked for (20000 draws of 50 calibration
    scores and one new part each)."""
    rng = np.random.default_rng(0)
    rate, n, trials = 0.05, 50, 20000

    def good(size):
        rough = rng.random(size) < 0.15
        return np.where(rough, rng.normal(3.0, 0.2, size), rng.normal(1.0, 0.2, size))

    cal, new = good((trials, n)), good(trials)
    fits = [gumbel_threshold(c, rate) for c in cal]
    fitted_only = np.mean(new > np.array([f["quantile"] for _, f in fits]))
    with_floor = np.mean(new > np.array([t for t, _ in fits]))
    se = np.sqrt(rate * (1 - rate) / trials)
    assert fitted_only > 2 * rate  # the fit alone misses the rough parts' tail
    assert with_floor <= rate + 3 * se
    # and the floor is not the largest score, which fails about 1 in n + 1 (2 %)
    assert with_floor > 1 / (n + 1) + 3 * se


def test_fold_counts_leave_enough_maps_to_fit() -> None:
    for n in range(5, 30):
        k = cross_folds(n)
        assert 4 <= k <= n
        assert n - -(-n // k) >= 4  # the largest fold still leaves 4 maps to fit on
    assert cross_folds(5) == 5 and cross_folds(8) == 4


def test_variation_trains_on_all_parts_and_calibrates_on_held_out_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    files = []
    for i in range(6):
        n, _ = posed_part(angle_deg=rng.uniform(-2, 2), shift=tuple(rng.uniform(-2, 2, 2)),
                          noise_deg=1.0, rng=rng)
        files.append(tmp_path / f"good{i}.npy")
        np.save(files[-1], n)
    cfg = train_model(files, tmp_path / "model", model_name="variation")
    cal, tr = cfg["calibration"], cfg["training"]
    assert tr["train_maps"] == 6 and cal["val_maps"] == 6 and len(cal["val_image_scores"]) == 6
    assert "fitted without it" in cal["method"]
    # a handful of good parts: a fitted tail (about 1 % of good parts failing), not their max
    assert cfg["image_threshold"] == gumbel_threshold(cal["val_image_scores"], 0.01)[0]
    assert cfg["image_threshold"] >= max(cal["val_image_scores"])
    assert "Gumbel" in cal["image_threshold_rule"] and cal["image_fpr"] == 0.01

    # the held-out scores are those of models fitted without the map, and they are higher
    # than what the final model (which saw every map) gives the same maps
    bundle = load_model_dir(tmp_path / "model")
    data = load_training_data(files)  # the order train_model used
    samples = data.train + data.val
    full = create_model("variation")
    full.fit(samples, [])
    scorers = cross_fitted("variation", {}, samples, {"seed": 0}, fitted=full)
    held = [image_score(s.score(n, m).score, m) for s, (n, m) in zip(scorers, samples,
                                                                      strict=True)]
    np.testing.assert_allclose(held, cal["val_image_scores"], rtol=1e-4)
    seen = [image_score(bundle.model.score(n, m).score, m) for n, m in samples]
    assert np.mean(held) > 1.1 * np.mean(seen)
    # the held-out copies stand in for refits without the map (which choose another frame
    # and register anew, so single maps move more): their mean is close
    refits = cross_fitted("variation", {}, samples, {"seed": 0})
    again = [image_score(s.score(n, m).score, m) for s, (n, m) in zip(refits, samples,
                                                                       strict=True)]
    assert np.mean(held) == pytest.approx(np.mean(again), rel=0.15)


def test_held_out_copy_learns_nothing_from_the_held_map() -> None:
    """A held-out copy's template is the mean of the OTHER maps: a dent planted in the held
    map does not enter it (while the full model's template averages it in)."""
    rng = np.random.default_rng(3)
    maps = [posed_part(angle_deg=rng.uniform(-1, 1), shift=tuple(rng.uniform(-1, 1, 2)),
                       noise_deg=0.5, rng=rng) for _ in range(6)]
    n, m = maps[0]
    n = n.copy()
    r, c = np.argwhere(m)[len(np.argwhere(m)) // 2]
    n[r - 3:r + 4, c - 3:c + 4] = [0.5, 0.0, np.sqrt(0.75)]  # a 30 deg facet
    maps[0] = (n, m)
    full = create_model("variation")
    full.fit(maps, [])
    copy = full.held_out([0])
    refit = create_model("variation")
    refit.fit(maps[1:], [maps[0]])
    z_copy = copy.score(n, m).score[r, c]
    assert z_copy > 2 * full.score(n, m).score[r, c]
    assert z_copy == pytest.approx(refit.score(n, m).score[r, c], rel=0.15)
    with pytest.raises(PsinspectError, match="maps left"):
        full.held_out([0, 1, 2])
    with pytest.raises(PsinspectError, match="fit first"):
        create_model("variation").held_out([0])


def test_calibration_scores_a_capture_as_detect_does() -> None:
    """A PS breakdown pixel (a flipped normal at confidence 0) in a good capture: detect
    down-weights it by the capture's confidence, so calibration must too, or one such pixel
    sets an image threshold far above every clean part's score (seen: 8.3 against 1.1-1.3)."""
    from psinspect.detect import score_map
    from psinspect.models import create_model
    from psinspect.train import calibrate

    rng = np.random.default_rng(11)
    maps = [posed_part(angle_deg=rng.uniform(-2, 2), shift=tuple(rng.uniform(-2, 2, 2)),
                       noise_deg=0.5, rng=rng) for _ in range(6)]
    model = create_model("variation")
    model.fit(maps[:5], [])
    n, m = maps[5]
    n = n.copy()
    r, c = np.argwhere(m)[len(np.argwhere(m)) // 2]
    n[r - 1:r + 2, c - 1:c + 2] = [0.8, 0.0, 0.6]  # PS broke down here
    conf = np.where(m, 1.0, 0.0).astype(np.float32)
    conf[r - 1:r + 2, c - 1:c + 2] = 0.0
    _, plain, _ = calibrate(model, [(n, m)], 0.001)
    _, judged, _ = calibrate(model, [(n, m)], 0.001, extras=[{"confidence": conf}])
    expected = image_score(score_map(model, n, m, conf).score, m)
    assert judged == expected
    assert judged < 0.5 * plain


def test_gumbel_threshold_finds_the_tail_of_largest_values() -> None:
    from scipy.stats import gumbel_r

    sample = gumbel_r.rvs(loc=2.0, scale=0.3, size=4000, random_state=3)
    thr, fit = gumbel_threshold(sample, 0.01)
    assert fit["quantile"] == pytest.approx(gumbel_r.ppf(0.99, loc=2.0, scale=0.3), rel=0.02)
    assert fit["scale"] == pytest.approx(0.3, rel=0.05)
    # never below the score that at most 1 % of new good parts exceed (the 40th largest)
    assert thr == max(fit["quantile"], np.sort(sample)[conformal_rank(4000, 0.01) - 1])
    assert thr < sample.max()
    # on a few scores (a rate below 1 / (N + 1)) never below the largest: no good part of the
    # set fails; at a rate of a half, never below the 2nd largest of 4
    few = [1.0, 1.1, 1.05, 3.0]
    assert gumbel_threshold(few, 0.1)[0] == 3.0
    thr, fit = gumbel_threshold(few, 0.5)
    assert thr == max(fit["quantile"], 1.1) < 3.0
    # the moments fit by hand on 3 scores (sample sd, n - 1): the small sets it is made for
    three = [1.0, 2.0, 4.0]
    scale = float(np.std(three, ddof=1)) * np.sqrt(6) / np.pi  # 1.5275 * 0.7797
    loc = np.mean(three) - 0.5772156649 * scale
    thr, fit = gumbel_threshold(three, 0.05)
    assert fit["scale"] == pytest.approx(scale, rel=1e-9)
    assert fit["loc"] == pytest.approx(loc, rel=1e-9)
    assert thr == pytest.approx(loc - scale * np.log(-np.log(0.95)), rel=1e-9)
    with pytest.raises(ValueError):
        gumbel_threshold([1.0], 0.01)
    with pytest.raises(PsinspectError, match="image-fpr"):
        gumbel_threshold(few, 0.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 50.0, allow_nan=False), min_size=2, max_size=60),
       st.lists(st.floats(0.01, 0.99), min_size=2, max_size=200))
def test_operating_points_are_monotone_in_the_rate(scores: list[float],
                                                   test: list[float]) -> None:
    """A higher share of good parts failing asked for never raises the pass/fail threshold,
    never fails fewer maps, and never passes more (``train.operating_points``, the table that
    evaluate and bench_detect print); a map fails exactly when its score is above the
    threshold, as detect judges."""
    from psinspect.train import OPERATING_RATES, operating_points

    config = {"calibration": {"val_image_scores": scores}, "hyperparameters": {}}
    defective = [i % 2 == 0 for i in range(len(test))]
    image_scores = [5.0 * v for v in test]
    points = operating_points(config, image_scores, defective)
    assert [p["rate"] for p in points] == list(OPERATING_RATES)
    for a, b in zip(points, points[1:], strict=False):
        assert b["image_threshold"] <= a["image_threshold"]
        assert b["defective_failed"] >= a["defective_failed"]
        assert b["clean_passed"] <= a["clean_passed"]
    for p in points:
        assert p["defective_failed"] == sum(s > p["image_threshold"]
                                            for s, bad in zip(image_scores, defective,
                                                              strict=True) if bad)
        # at rates up to 20 % never below the median of the calibration scores
        assert p["image_threshold"] >= np.median(scores)


def test_the_gumbel_quantile_is_scipys_bit_for_bit() -> None:
    """gumbel_threshold computes the quantile itself (importing scipy.stats took 3 s of the
    web app's start-up): the values of scipy.stats.gumbel_r.ppf, bit for bit."""
    from scipy.stats import gumbel_r

    rng = np.random.default_rng(0)
    for _ in range(300):
        scores = rng.gumbel(rng.normal(2.0, 1.0), rng.uniform(0.01, 3.0), rng.integers(2, 200))
        rate = float(rng.choice([1e-6, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, rng.uniform(1e-6, 0.5)]))
        _, fit = gumbel_threshold(scores, rate)
        assert fit["quantile"] == float(gumbel_r.ppf(1.0 - rate, loc=fit["loc"],
                                                      scale=fit["scale"]))
