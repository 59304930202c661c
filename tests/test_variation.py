"""Variation model: template of one part from good captures, registered scoring, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
from _posed_part import posed_part
from scipy import ndimage

from psinspect.errors import PsinspectError
from psinspect.models import ScoreResult, create_model
from psinspect.models.variation import VariationModel
from psinspect.normalmap import angular_error_deg

DENT = (40.0, 50.0, 3.0, 1.5)  # col, row, radius px, depth px (part coordinates)


def _dent_gt(angle=0.0, shift=(0.0, 0.0), min_angle=2.0):
    clean, mask = posed_part(angle_deg=angle, shift=shift)
    dented, _ = posed_part(angle_deg=angle, shift=shift, dent=DENT)
    return (angular_error_deg(clean, dented) > min_angle) & mask


def _noisy_poses(rng, count, noise_deg=1.0):
    out = []
    for _ in range(count):
        angle = rng.uniform(-5, 5)
        shift = (rng.uniform(-4, 4), rng.uniform(-4, 4))
        out.append(posed_part(angle_deg=angle, shift=shift, noise_deg=noise_deg, rng=rng))
    return out


def test_registered_in_registry():
    assert isinstance(create_model("variation"), VariationModel)


@pytest.mark.parametrize("angle, shift", [(0.0, (0.0, 0.0)), (3.5, (2.5, -3.0))])
def test_identical_captures_flag_the_dent_and_nothing_else(angle, shift):
    good = posed_part()
    model = create_model("variation")
    model.fit([good] * 5, [])
    n, m = posed_part(angle_deg=angle, shift=shift, dent=DENT)
    res = model.score(n, m)
    assert isinstance(res, ScoreResult)
    assert res.score.shape == m.shape and res.score.dtype == np.float32
    assert (res.score[~m] == 0).all()
    gt = _dent_gt(angle, shift)
    assert gt.sum() > 30
    flagged = res.score > 3.0
    # the dent is found ...
    assert flagged[gt].mean() > 0.6
    # ... and nothing else (allowing the smoothing's halo of a few pixels)
    near = ndimage.binary_dilation(gt, iterations=4)
    assert not (flagged & ~near).any()
    # the score is pixel-aligned with the input: its peak lies on the dent in the input frame
    peak = np.unravel_index(np.argmax(res.score), m.shape)
    assert near[peak]
    # the reference is the template in the input frame: close to the clean posed part
    clean, _ = posed_part(angle_deg=angle, shift=shift)
    inner = ndimage.binary_erosion(m, iterations=3) & ~near
    assert np.median(angular_error_deg(res.reference[inner], clean[inner])) < 0.3
    assert res.info["correlation"] > 0.95


def test_noisy_jittered_training_separates_clean_from_dented():
    rng = np.random.default_rng(7)
    model = create_model("variation")
    log = model.fit(_noisy_poses(rng, 8), _noisy_poses(rng, 2))
    assert len(log) == 8 and all(row["correlation"] > 0.95 for row in log)
    clean_max = max(model.score(n, m).score[m].max() for n, m in _noisy_poses(rng, 4))
    n, m = posed_part(angle_deg=-2.0, shift=(1.5, 2.0), dent=DENT, noise_deg=1.0, rng=rng)
    res = model.score(n, m)
    gt = _dent_gt(-2.0, (1.5, 2.0))
    assert res.score[gt].max() > 2 * clean_max
    # spread is learned: clean pixels score about 1 (z-score), not 0 and not huge
    clean_n, clean_m = _noisy_poses(rng, 1)[0]
    assert 0.3 < np.median(model.score(clean_n, clean_m).score[clean_m]) < 1.5


def test_state_arrays_roundtrip():
    rng = np.random.default_rng(3)
    model = create_model("variation", scales_px=[0.0, 2.0])
    model.fit(_noisy_poses(rng, 5), [])
    arrays = model.state_arrays()
    assert {k: v.dtype for k, v in arrays.items()} == dict.fromkeys(
        ["mean", "spread_deg", "mask"], np.float32)
    again = create_model("variation", **model.hyperparameters())
    again.load_state_arrays(arrays)
    n, m = posed_part(angle_deg=1.0, dent=DENT)
    np.testing.assert_array_equal(model.score(n, m).score, again.score(n, m).score)
    with pytest.raises(PsinspectError, match="lack"):
        again.load_state_arrays({"mean": arrays["mean"]})


def test_low_confidence_pixels_are_down_weighted_and_reported():
    model = create_model("variation", min_confidence=0.5, zero_confidence=0.0, edge_band_px=0.0)
    model.fit([posed_part()] * 5, [])
    n, m = posed_part(dent=DENT)
    conf = np.ones(m.shape, np.float32)
    gt = _dent_gt()
    conf[gt] = 0.1
    full = model.score(n, m)
    weighted = model.score(n, m, confidence=conf)
    assert weighted.score[gt].max() < 0.5 * full.score[gt].max()
    np.testing.assert_array_equal(weighted.unreliable, gt)
    assert weighted.info["unreliable_pixels"] == int(gt.sum())
    # with the silhouette band on, the outer ring of the object is reported too
    banded = create_model("variation", min_confidence=0.5, zero_confidence=0.0, edge_band_px=2.0)
    banded.fit([posed_part()] * 5, [])
    ring = m & ~ndimage.binary_erosion(m)
    assert banded.score(n, m).unreliable[ring].all()


def test_extra_material_outside_the_template_scores_high():
    model = create_model("variation")
    n0, m0 = posed_part()
    model.fit([(n0, m0)] * 5, [])
    n, m = n0.copy(), m0.copy()
    rows, cols = np.nonzero(m0)
    # a blob of material grown 8 px out of the right edge
    r = int(rows[cols == cols.max()].mean())
    blob = np.zeros_like(m)
    blob[r - 4:r + 4, cols.max() + 1:cols.max() + 9] = True
    n[blob] = (0.0, 0.0, 1.0)
    m |= blob
    res = model.score(n, m)
    far = blob & (ndimage.distance_transform_edt(~m0) > model.edge_tolerance_px)
    assert far.any() and (res.score[far] >= model.outside_score).all()
    assert res.info["outside_template_pixels"] == int(far.sum())


def test_too_few_training_captures():
    with pytest.raises(PsinspectError, match=r"^the variation model needs at least 5 good "
                       r"captures of the part to train on, got 4 \(parts given only to "
                       r"calibrate on do not count\)$"):
        create_model("variation").fit([posed_part()] * 4, [])
    with pytest.raises(PsinspectError, match=r"got 5, 3 of them to learn from \(at least 4\)"):
        create_model("variation").fit([posed_part()] * 3, [posed_part()] * 2)
    # 4 to learn from + 1 held out for calibration is enough
    create_model("variation").fit([posed_part()] * 4, [posed_part()])


def test_mismatched_sizes():
    good = [posed_part()] * 5
    with pytest.raises(PsinspectError, match="training map 3: size 112x90 differs"):
        create_model("variation").fit(good[:2] + [posed_part((90, 112))] + good[2:], [])
    names = [f"part{i}.npy" for i in range(6)]
    with pytest.raises(PsinspectError, match=r"part2\.npy: size 112x90 differs from part0\.npy"):
        create_model("variation").fit(good[:2] + [posed_part((90, 112))] + good[2:], [],
                                      names=names)
    model = create_model("variation")
    model.fit(good, [])
    with pytest.raises(PsinspectError, match="^size 112x90 differs"):
        model.score(*posed_part((90, 112)))


def test_failed_alignment_in_training_and_scoring():
    good = posed_part()
    mirrored_n, mirrored_m = good[0][:, ::-1].copy(), good[1][:, ::-1].copy()
    mirrored_n[..., 0] *= -1
    with pytest.raises(PsinspectError, match="training map 4: registration to the reference"):
        create_model("variation").fit([good] * 3 + [(mirrored_n, mirrored_m)] + [good], [])
    model = create_model("variation")
    model.fit([good] * 5, [])
    with pytest.raises(PsinspectError, match="^registration.*failed"):
        model.score(mirrored_n, mirrored_m)
    with pytest.raises(PsinspectError, match=r"rotated by about .* supported range"):
        model.score(*posed_part(angle_deg=16.0))


def test_unfitted_model_refuses_to_score():
    with pytest.raises(PsinspectError, match="not trained"):
        create_model("variation").score(*posed_part())
