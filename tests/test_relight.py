"""Relighting real images with a defect's change of shading."""

from __future__ import annotations

import numpy as np
import pytest
from _posed_part import posed_part

from psinspect.errors import PsinspectError
from psinspect.relight import relight, relight_defects
from psinspect.stereo import solve

LIGHTS = np.array([[0.3, 0.2, 0.93], [-0.4, 0.1, 0.91], [0.1, -0.5, 0.86], [-0.2, -0.3, 0.93],
                   [0.5, 0.5, 0.71], [-0.6, 0.4, 0.69]], np.float32)
LIGHTS /= np.linalg.norm(LIGHTS, axis=1, keepdims=True)


def _render(normals, mask, albedo):
    shading = np.maximum(np.einsum("kc,hwc->khw", LIGHTS, normals), 0.0)
    return (albedo[None] * shading * mask[None]).astype(np.float32)


def test_relit_lambertian_images_equal_rendering_the_defective_surface():
    clean, mask = posed_part()
    dented, _ = posed_part(dent=(40.0, 50.0, 4.0, 2.0))
    albedo = np.where(mask, 0.6, 0.0).astype(np.float32)
    out = relight(_render(clean, mask, albedo), LIGHTS, mask, clean, dented, albedo)
    np.testing.assert_allclose(out, _render(dented, mask, albedo), atol=1e-5)
    # colour images with per-light intensities
    inten = np.linspace(0.5, 1.5, len(LIGHTS)).astype(np.float32)
    rgb = _render(clean, mask, albedo)[..., None] * inten[:, None, None, None] * [1, 1, 1]
    out_rgb = relight(rgb, LIGHTS, mask, clean, dented, albedo, intensities=inten)
    want = _render(dented, mask, albedo)[..., None] * inten[:, None, None, None] * [1, 1, 1]
    np.testing.assert_allclose(out_rgb, want, atol=1e-5)


def test_relit_defect_goes_through_photometric_stereo():
    clean, mask = posed_part()
    albedo = np.where(mask, 0.8, 0.0).astype(np.float32)
    images = _render(clean, mask, albedo)
    out, gt, records = relight_defects(images, LIGHTS, mask, clean, albedo,
                                       np.random.default_rng(0), types=["dent"],
                                       severity="high")
    assert gt.sum() > 4 and records[0]["type"] == "dent"
    before = solve(images, LIGHTS, mask).normals
    after = solve(out, LIGHTS, mask).normals
    turned = np.degrees(np.arccos(np.clip(np.sum(before * after, axis=2), -1, 1)))
    assert np.median(turned[gt]) > 2.0 and np.median(turned[mask & ~gt]) < 0.5


def test_relight_refuses_mismatched_inputs():
    clean, mask = posed_part()
    with pytest.raises(PsinspectError, match="do not match"):
        relight(np.zeros((3,) + mask.shape, np.float32), LIGHTS, mask, clean, clean, mask * 1.0)
