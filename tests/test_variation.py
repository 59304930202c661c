"""Variation model: template of one part from good captures, registered scoring, clear refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _posed_part import posed_part
from scipy import ndimage

from psinspect.errors import PsinspectError
from psinspect.models import ScoreResult, create_model
from psinspect.models.variation import VariationModel
from psinspect.normalmap import angular_error_deg, rotate_vectors

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


def test_missing_material_scores_high_along_it():
    """A piece broken off that the capture's mask leaves out (a hole through the part, a bite
    out of its rim) was never scored: the part passed with the scores of an intact one."""
    model = create_model("variation")
    n0, m0 = posed_part()
    model.fit([(n0, m0)] * 5, [])
    assert model.score(n0, m0).info["missing_template_pixels"] == 0
    rows, cols = np.nonzero(m0)
    r, c = int(rows.mean()), int(cols.mean())
    edge = int(cols[rows == r].max())
    for gone in ((slice(r - 6, r + 6), slice(c - 6, c + 6)),  # a hole in the middle
                 (slice(r - 6, r + 6), slice(edge - 9, edge + 1))):  # a bite out of the rim
        m = m0.copy()
        m[gone] = False
        n = np.where(m[..., None], n0, 0.0).astype(np.float32)
        res = model.score(n, m)
        missing = m0 & ~m & (ndimage.distance_transform_edt(~m) > model.edge_tolerance_px)
        assert res.info["missing_template_pixels"] == int(missing.sum()) > 0
        assert res.info["outside_template_pixels"] == 0  # (extra material only)
        along = m & (ndimage.distance_transform_edt(~missing) <= model.edge_tolerance_px + 1.5)
        assert along.any() and (res.score[along] >= model.outside_score).all()
        assert (res.score[m & ~along] < model.outside_score).all()


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
    with pytest.raises(PsinspectError, match=r"turned by about .* supported range"):
        model.score(*posed_part(angle_deg=16.0))


def test_unfitted_model_refuses_to_score():
    with pytest.raises(PsinspectError, match="not trained"):
        create_model("variation").score(*posed_part())


DENT = (40.0, 50.0, 3.0, 1.5)


BARE = dict(scales_px=[0.0], line_orientations=0, spread_smooth_px=0.0, highpass_px=0.0,
            edge_band_px=0.0, spread_floor_deg=0.01, native_spread=False, local_shift_px=0.0,
            shading=False)


def _turned(n, m, deg):
    """The map's vectors turned about +z by ``deg`` (pixels stay: nz, hence the registration
    image, is unchanged)."""
    out = rotate_vectors(n, deg).astype(np.float32)
    out[~m] = 0.0
    return out


def test_spread_is_the_corrected_rms_of_the_residual():
    """5 maps of one pixel grid: 2 turned +t about z, 2 turned -t, 1 as is: the mean is the
    untouched map (to O(t^2)), the residual of a turned map is the chord 2 s sin(t / 2) (s the
    length of the normal's xy part), and the spread is sqrt(floor^2 + (k+1)/(k-1)/k * sum|d|^2)
    = sqrt(floor^2 + 6/4/5 * 4 chord^2) = sqrt(floor^2 + 1.2 chord^2) (without the correction:
    0.8 chord^2)."""
    n, m = posed_part()
    t = 4.0
    maps = [(n, m), (_turned(n, m, t), m), (_turned(n, m, -t), m), (_turned(n, m, t), m),
            (_turned(n, m, -t), m)]
    model = create_model("variation", **BARE)
    model.fit(maps, [])
    spread = model.state_arrays()["spread_deg"][0]
    s = np.hypot(n[..., 0], n[..., 1])
    chord = np.degrees(2 * s * math.sin(math.radians(t) / 2))
    from scipy import ndimage
    inner = ndimage.binary_erosion(m, iterations=3) & (s > 0.2)
    want = np.sqrt(0.01**2 + 1.2 * chord**2)
    np.testing.assert_allclose(spread[inner], want[inner], rtol=0.03)


def test_material_on_one_training_part_is_not_in_the_template():
    """1 of 5 good parts carries an extra blob; the template mask is the majority (>= 3 of 5),
    so the blob is not template, and the same blob on a test part scores as extra material."""
    n0, m0 = posed_part()
    rows, cols = np.nonzero(m0)
    r = int(rows[cols == cols.max()].mean())
    blob = np.zeros_like(m0)
    blob[r - 4:r + 4, cols.max() + 1:cols.max() + 9] = True
    nb, mb = n0.copy(), m0 | blob
    nb[blob] = (0.0, 0.0, 1.0)
    model = create_model("variation")
    model.fit([(n0, m0)] * 4 + [(nb, mb)], [])
    tmask = model.state_arrays()["mask"] > 0.5
    assert not tmask[blob].any()
    far = blob & (ndimage.distance_transform_edt(~m0) > model.edge_tolerance_px)
    assert (model.score(nb, mb).score[far] >= model.outside_score).all()


def test_pixels_weighted_below_half_are_unreliable():
    """confidence 0.65 with the default ramp (0 at 0.5, 1 at 0.9): weight 0.375 < 0.5, so the
    pixels are reported unreliable; confidence 0.75 (weight 0.625) is not."""
    model = create_model("variation", edge_band_px=0.0)
    model.fit([posed_part()] * 5, [])
    n, m = posed_part()
    conf = np.ones(m.shape, np.float32)
    low = np.zeros(m.shape, bool)
    low[40:46, 50:56] = True
    mid = np.zeros(m.shape, bool)
    mid[40:46, 60:66] = True
    conf[low], conf[mid] = 0.65, 0.75
    res = model.score(n, m, confidence=conf)
    np.testing.assert_array_equal(res.unreliable, low & m)


def test_light_test_weight_scales_the_split_variance():
    """spread^2 = sigma^2 + w * var: where var dominates, the z-score falls as 1 / sqrt(w), so
    weight 4 scores the dent at about half of weight 1."""
    good = posed_part()
    n, m = posed_part(dent=DENT)
    phi = np.random.default_rng(0).uniform(0, 2 * np.pi, (2,) + m.shape)
    size = math.radians(10.0)
    splits = np.zeros((2,) + m.shape + (3,), np.float32)
    splits[..., 0], splits[..., 1] = size * np.cos(phi), size * np.sin(phi)
    splits[:, ~m] = 0.0
    peak = {}
    for w in (1.0, 4.0):
        model = create_model("variation", light_test_weight=w, split_zero_deg=0.0)
        model.fit([good] * 5, [])
        peak[w] = model.score(n, m, light_splits=splits).score.max()
    assert peak[4.0] == pytest.approx(0.5 * peak[1.0], rel=0.15)


def test_default_shading_join_is_the_geometric_mean():
    """Trained from capture images, the default model's score is sqrt(z_normal * z_shading)
    wherever the shading comparison covers the pixel: z_normal is the score without images,
    z_shading the score of the same model with shading_combine='shading'."""
    from psinspect.render import default_lights

    def images(nn, mm, lights):
        shade = np.maximum(np.einsum("hwc,kc->khw", nn, lights), 0.0)
        return np.where(mm, 0.8 * shade, 0.0).astype(np.float32)

    lights = default_lights(8)
    n, m = posed_part()
    model = create_model("variation", light_test_weight=0.0, split_zero_deg=0.0)
    assert model.shading_combine == "geometric"
    model.fit([(n, m)] * 5, [], capture_images=[(images(n, m, lights), lights)] * 5)
    dn, dm = posed_part(dent=DENT)
    cap = (images(dn, dm, lights), lights)
    joined = model.score(dn, dm, capture_images=cap)
    assert joined.info["shading_pixels"] > 0.9 * dm.sum()
    zn = model.score(dn, dm).score
    model.shading_combine = "shading"
    zs = model.score(dn, dm, capture_images=cap).score
    from scipy import ndimage
    inner = ndimage.binary_erosion(dm, iterations=4)
    np.testing.assert_allclose(joined.score[inner], np.sqrt(zn * zs)[inner], rtol=1e-4,
                               atol=1e-5)


def test_nan_confidence_is_zero_confidence():
    """PS leaves NaN confidence where it could not solve: those pixels weigh 0 (as confidence
    0), so a dent there is down-weighted and reported unreliable, not scored at full weight."""

    from psinspect.normalmap import angular_error_deg

    model = create_model("variation", edge_band_px=0.0)
    model.fit([posed_part()] * 5, [])
    n, m = posed_part(dent=DENT)
    clean, _ = posed_part()
    gt = (angular_error_deg(clean, n) > 2.0) & m
    conf = np.ones(m.shape, np.float32)
    conf[gt] = np.nan
    full = model.score(n, m).score
    res = model.score(n, m, confidence=conf)
    assert res.score[gt].max() < 0.5 * full[gt].max()
    np.testing.assert_array_equal(res.unreliable, gt)


def test_material_that_maps_outside_the_template_image_scores_high():
    """A part shifted 8 px right with a strip of material on the image's left edge: the strip
    maps to columns -8..-4 of the template's image (no template value there), so it is extra
    material (>= outside_score), not 'no residual' (its own normal as the reference: 0)."""
    model = create_model("variation")
    model.fit([posed_part()] * 5, [])
    n, m = posed_part(shift=(8.0, 0.0))
    n, m = n.copy(), m.copy()
    strip = np.zeros_like(m)
    strip[40:50, 0:4] = True
    n[strip], m[strip] = (0.0, 0.0, 1.0), True
    res = model.score(n, m)
    assert (res.score[strip] >= model.outside_score).all()
    assert res.info["outside_template_pixels"] >= int(strip.sum())
