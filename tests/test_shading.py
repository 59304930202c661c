"""Shading comparison: light field of good captures' images, normal change from image residuals,
and its use by the variation model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _posed_part import posed_part
from scipy import ndimage

from psinspect.align import RigidTransform
from psinspect.errors import PsinspectError
from psinspect.models import create_model
from psinspect.normalmap import angular_error_deg, rotate_vectors
from psinspect.render import default_lights
from psinspect.shading import build_light_field, shading_deviation, warp_samples

DENT = (40.0, 50.0, 3.0, 1.5)  # col, row, radius px, depth px (part coordinates)


def _images(normals: np.ndarray, mask: np.ndarray, lights: np.ndarray,
            albedo: float = 0.8, gloss: float = 0.0) -> np.ndarray:
    """Lambertian images (K, H, W) float32, plus an optional glossy lobe around the mirror
    direction of the camera (a non-Lambertian term that PS would fit into the normals)."""
    shade = np.maximum(np.einsum("hwc,kc->khw", normals, lights), 0.0)
    img = albedo * shade
    if gloss > 0:
        half = lights + np.array([0.0, 0.0, 1.0])
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        img += gloss * np.maximum(np.einsum("hwc,kc->khw", normals, half), 0.0) ** 30
    return np.where(mask, img, 0.0).astype(np.float32)


def test_prediction_is_exact_for_a_lambertian_template_at_any_light() -> None:
    n, m = posed_part()
    lights = default_lights(12)
    ident = RigidTransform.identity(m.shape).matrix()
    field = build_light_field([warp_samples(_images(n, m, lights), lights, ident, m)], n, m)
    assert field.lights.shape == (12, 3) and field.residual.shape == (12, m.sum())
    np.testing.assert_allclose(field.albedo[field.albedo > 0.05], 0.8, atol=1e-3)
    other = default_lights(7, "diligent")  # lights never sampled
    pred = field.predict(other, neighbours=4)
    np.testing.assert_allclose(pred, _images(n, m, other), atol=2e-3)


def test_deviation_recovers_a_known_tilt_and_ignores_one_bad_light() -> None:
    n, m = posed_part()
    lights = default_lights(16)
    tilt = math.radians(4.0)
    # every normal turned by 4 deg about the camera's x axis
    c, s = math.cos(tilt), math.sin(tilt)
    turned = n.copy()
    turned[..., 1] = c * n[..., 1] - s * n[..., 2]
    turned[..., 2] = s * n[..., 1] + c * n[..., 2]
    albedo = np.where(m, 0.8, 0.0).astype(np.float32)
    images = _images(turned, m, lights)
    images[3] += 0.3 * m  # a highlight in one image only
    inner = ndimage.binary_erosion(m, iterations=3) & (n[..., 2] > 0.8)
    dn = shading_deviation(images, lights, _images(n, m, lights), n, albedo, m)
    want = turned - n
    want -= np.sum(want * n, axis=-1, keepdims=True) * n
    err = np.degrees(np.linalg.norm(dn - want, axis=-1))[inner]
    assert np.degrees(np.linalg.norm(want, axis=-1))[inner].mean() > 3.5
    assert np.median(err) < 0.3 and np.percentile(err, 95) < 1.0
    # with no change the deviation is zero
    zero = shading_deviation(_images(n, m, lights), lights, _images(n, m, lights), n, albedo, m)
    assert np.abs(zero).max() < 1e-4


def test_leave_one_capture_out_prediction_ignores_that_capture() -> None:
    n, m = posed_part()
    lights = default_lights(12)
    ident = RigidTransform.identity(m.shape).matrix()
    bright = warp_samples(1.5 * _images(n, m, lights), lights, ident, m)
    plain = warp_samples(_images(n, m, lights), lights, ident, m)
    field = build_light_field([plain, bright, plain], n, m)
    assert field.residual.dtype == np.float16 and len(field.lights) == 36
    np.testing.assert_array_equal(field.source, np.repeat([0, 1, 2], 12))
    with_bright = field.predict(lights, neighbours=3)
    without = field.predict(lights, neighbours=2, skip=1)
    own = _images(n, m, lights)
    assert np.abs(with_bright - own).max() > 0.05
    # the albedo is fitted to all three, so the prediction without the bright one keeps its
    # Lambertian part at their albedo, and the two plain captures' residuals make up the rest
    np.testing.assert_allclose(without, own, atol=5e-3)


@pytest.mark.parametrize("angle, shift", [(0.0, (0.0, 0.0)), (3.5, (2.5, -3.0))])
def test_variation_model_flags_a_dent_in_the_images_through_a_glossy_rig(angle, shift) -> None:
    """A fixed rig (the same lights for every capture), glossy parts: a template learned from
    the good captures' images predicts the gloss, so the comparison flags the dent of a posed
    part and nothing else; the lights are turned with the part."""
    lights = default_lights(16)
    rng = np.random.default_rng(0)
    maps, captures = [], []
    for _ in range(5):
        a, sh = rng.uniform(-3, 3), (rng.uniform(-2, 2), rng.uniform(-2, 2))
        n, m = posed_part(angle_deg=a, shift=sh)
        maps.append((n, m))
        captures.append((_images(n, m, lights, gloss=0.4), lights))
    model = create_model("variation", shading_combine="shading")
    model.fit(maps, [], capture_images=captures)
    assert model.uses_capture_images
    n, m = posed_part(angle_deg=angle, shift=shift, dent=DENT)
    clean, _ = posed_part(angle_deg=angle, shift=shift)
    gt = (angular_error_deg(clean, n) > 2.0) & m
    res = model.score(n, m, capture_images=(_images(n, m, lights, gloss=0.4), lights))
    assert res.info["shading_pixels"] > 0.9 * m.sum()
    flagged = res.score > 3.0
    assert flagged[gt].mean() > 0.5  # (the normal maps alone, noise-free here, flag 0.75)
    near = ndimage.binary_dilation(gt, iterations=4)
    assert not (flagged & ~near).any()
    # turning the lights the wrong way would leave the rotated part's shading unexplained
    if angle:
        wrong = model.score(n, m, capture_images=(
            _images(n, m, lights, gloss=0.4), rotate_vectors(lights, 2 * angle)))
        off = m & ~near
        assert wrong.score[off].mean() > 2 * res.score[off].mean()


def test_shading_state_roundtrips_and_normal_maps_alone_have_none() -> None:
    lights = default_lights(12)
    n, m = posed_part()
    dented, _ = posed_part(dent=DENT)
    model = create_model("variation")
    model.fit([(n, m)] * 5, [], capture_images=[(_images(n, m, lights), lights)] * 5)
    arrays = model.state_arrays()
    assert arrays["shading_residual"].dtype == np.float16
    again = create_model("variation", **model.hyperparameters())
    again.load_state_arrays(arrays)
    assert again.uses_capture_images
    cap = (_images(dented, m, lights), lights)
    np.testing.assert_allclose(again.score(dented, m, capture_images=cap).score,
                               model.score(dented, m, capture_images=cap).score, atol=1e-3)
    # weights without some of the shading arrays are refused
    broken = {k: v for k, v in arrays.items() if k != "shading_albedo"}
    with pytest.raises(PsinspectError, match="shading"):
        create_model("variation").load_state_arrays(broken)
    # trained from normal maps: no shading, and capture images are ignored when scoring
    plain = create_model("variation")
    plain.fit([(n, m)] * 5, [])
    assert not plain.uses_capture_images and "shading_lights" not in plain.state_arrays()
    np.testing.assert_array_equal(plain.score(dented, m, capture_images=cap).score,
                                  plain.score(dented, m).score)
    # shading off: trained from captures all the same, none kept
    off = create_model("variation", shading=False)
    off.fit([(n, m)] * 5, [], capture_images=[(_images(n, m, lights), lights)] * 5)
    assert not off.uses_capture_images


def test_bad_capture_images_are_refused() -> None:
    lights = default_lights(12)
    n, m = posed_part()
    good = (_images(n, m, lights), lights)
    with pytest.raises(PsinspectError, match="capture_images"):
        create_model("variation").fit([(n, m)] * 5, [], capture_images=[good] * 4)
    with pytest.raises(PsinspectError, match="do not fit"):
        create_model("variation").fit([(n, m)] * 5, [],
                                      capture_images=[good] * 4 + [(good[0][:, :50], lights)])
    model = create_model("variation")
    model.fit([(n, m)] * 5, [], capture_images=[good] * 5)
    with pytest.raises(PsinspectError, match="do not fit"):
        model.score(n, m, capture_images=(good[0], lights[:5]))
    bad = good[0].copy()
    bad[0, 10, 10] = np.nan
    with pytest.raises(PsinspectError, match="finite"):
        model.score(n, m, capture_images=(bad, lights))
    with pytest.raises(PsinspectError, match="shading_combine"):
        create_model("variation", shading_combine="sum")


def test_held_out_copy_leaves_the_held_capture_out_of_its_light_field() -> None:
    """Cross calibration's copy without capture 0: its light field holds only the other
    captures' samples, so a dent in capture 0's images stands out against it, while the full
    model (which samples capture 0 itself) partly predicts it."""
    lights = default_lights(16)
    rng = np.random.default_rng(4)
    maps, captures = [], []
    for i in range(6):
        a, sh = rng.uniform(-3, 3), (rng.uniform(-2, 2), rng.uniform(-2, 2))
        n, m = posed_part(angle_deg=a, shift=sh, dent=DENT if i == 0 else None)
        maps.append((n, m))
        captures.append((_images(n, m, lights, gloss=0.4), lights))
    model = create_model("variation", shading_combine="shading")
    model.fit(maps, [], capture_images=captures)
    copy = model.held_out([0])
    assert copy.uses_capture_images and len(copy._light_field.lights) == 5 * len(lights)
    n, m = maps[0]
    z_copy = copy.score(n, m, capture_images=captures[0]).score[m].max()
    z_full = model.score(n, m, capture_images=captures[0]).score[m].max()
    assert z_copy > 3.0 and z_copy > 1.5 * z_full


def _flat_case(mu_vec, k=12):
    from psinspect.render import default_lights

    lights = default_lights(k).astype(np.float32)
    mask = np.ones((6, 6), bool)
    mu = np.broadcast_to(np.asarray(mu_vec, np.float32) / np.linalg.norm(mu_vec),
                         (6, 6, 3)).copy()
    albedo = np.full((6, 6), 0.8, np.float32)
    pred = 0.8 * np.maximum(np.einsum("hwc,kc->khw", mu, lights), 0.0).astype(np.float32)
    return lights, mask, mu, albedo, pred


def test_a_brighter_part_is_not_a_tilt():
    """Every image 10 % brighter than predicted: the residual 0.1 * rho * (mu . l) is explained
    by dn = 0.1 mu, which is along the template normal; projected perpendicular to it, the
    deviation is 0 (unprojected it would be 0.1 rad = 5.7 deg)."""
    from psinspect.shading import shading_deviation

    lights, mask, mu, albedo, pred = _flat_case((0.2, -0.1, 1.0))
    dn = shading_deviation(1.1 * pred, lights, pred, mu, albedo, mask)
    assert np.abs(np.sum(dn * mu, axis=-1)).max() < 1e-4
    assert np.linalg.norm(dn, axis=-1).max() < 1e-3


def test_a_tilt_of_a_steep_pixel_is_recovered_exactly():
    """A steep pixel (mu 72 deg from the view axis; 5 of 12 lights at mu . l <= MIN_COS) tilted
    by 3 deg: its images are clipped at 0 under the lights it faces away from, so those lights
    must be left out of the linear fit; then dn is the 3 deg tilt (included, their zero
    residuals pull it to 2.86 deg)."""
    from psinspect.shading import MIN_COS, shading_deviation

    lights, mask, mu, albedo, pred = _flat_case((0.95, 0.0, 0.31))
    assert ((lights @ mu[0, 0]) <= MIN_COS).sum() == 5
    t = math.radians(3.0)
    tilted = mu * math.cos(t) + np.array([0.0, 1.0, 0.0], np.float32) * math.sin(t)
    images = 0.8 * np.maximum(np.einsum("hwc,kc->khw", tilted, lights), 0.0)
    dn = shading_deviation(images.astype(np.float32), lights, pred, mu, albedo, mask)
    np.testing.assert_allclose(np.degrees(np.linalg.norm(dn, axis=-1)), 3.0, atol=0.03)
