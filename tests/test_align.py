"""Rigid registration of normal maps: known poses are recovered, vectors turn with the image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _posed_part import posed_part, toothed_part
from scipy import ndimage

from psinspect.align import (
    RigidTransform,
    TemplateLookup,
    local_shift,
    register,
    registration_image,
    warp_normals,
    warp_stack,
)
from psinspect.errors import PsinspectError
from psinspect.normalmap import angular_error_deg, rotate_vectors


def test_rotate_vectors_is_about_plus_z():
    # +x turned by 90 deg counter-clockwise (about +z) is +y, z untouched
    out = rotate_vectors(np.array([[1.0, 0.0, 0.5]], np.float32), 90.0)
    np.testing.assert_allclose(out, [[0.0, 1.0, 0.5]], atol=1e-6)


def test_transform_matrix_roundtrip():
    t = RigidTransform(6.5, 3.0, -2.0, (50.0, 40.0))
    back = RigidTransform.from_matrix(t.matrix(), t.center)
    assert back.angle_deg == pytest.approx(6.5)
    assert (back.tx, back.ty) == pytest.approx((3.0, -2.0))
    np.testing.assert_allclose(t.inverse_matrix() @ np.append(t.matrix() @ [7.0, 9.0, 1.0], 1),
                               [7.0, 9.0], atol=1e-9)


@pytest.mark.parametrize("angle, shift", [(4.0, (3.0, -2.0)), (-7.5, (-5.3, 4.1))])
def test_recovers_known_shift_and_rotation(angle, shift):
    ref_n, ref_m = posed_part()
    # the posed part is evaluated analytically (not resampled), so its normals are really turned
    mov_n, mov_m = posed_part(angle_deg=angle, shift=shift)
    reg = register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m))
    # the moving -> reference transform undoes the pose: angle -angle, and maps the shifted
    # centre back
    assert reg.transform.angle_deg == pytest.approx(-angle, abs=0.15)
    center = np.array([(ref_m.shape[1] - 1) / 2, (ref_m.shape[0] - 1) / 2])
    moved_center = reg.transform.matrix() @ np.append(center + shift, 1.0)
    np.testing.assert_allclose(moved_center, center, atol=0.3)
    assert reg.correlation > 0.98
    # the aligned normal VECTORS match the reference part's (rotation applied to vectors too)
    back, back_m = warp_normals(mov_n, mov_m, reg.transform.matrix(), ref_m.shape)
    inner = ndimage.binary_erosion(back_m & ref_m, iterations=2)
    err = angular_error_deg(back[inner], ref_n[inner])
    assert np.median(err) < 0.2 and np.percentile(err, 99) < 1.0
    # without turning the vectors the error would be about the rotation angle
    unturned = rotate_vectors(back, angle)
    assert np.median(angular_error_deg(unturned[inner], ref_n[inner])) > 0.3 * abs(angle)


def test_refuses_pose_outside_supported_range():
    ref_n, ref_m = posed_part()
    mov_n, mov_m = posed_part(angle_deg=17.0)
    with pytest.raises(PsinspectError, match=r"turned by about .*supported range is \+-10 deg"):
        register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m), name="p.npy")
    mov_n, mov_m = posed_part(shift=(9.0, 0.0))
    with pytest.raises(PsinspectError, match=r"p\.npy: .*shifted by about 9\.0 px"):
        register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m),
                 max_shift_px=5.0, name="p.npy")


def test_failed_registration_is_refused():
    ref_n, ref_m = posed_part()
    # a mirrored part is not the same part in another pose
    other_n, other_m = ref_n[:, ::-1].copy(), ref_m[:, ::-1].copy()
    other_n[..., 0] *= -1
    with pytest.raises(PsinspectError, match=r"registration to the reference failed .*; is it "
                       r"the same part type, seen from the same side, and placed within "
                       r"\+-\d+ deg and \d+ px of the reference"):
        register(registration_image(other_n, other_m), registration_image(ref_n, ref_m))


def test_mismatched_sizes_are_refused():
    ref_n, ref_m = posed_part()
    small_n, small_m = posed_part(shape_hw=(90, 112))
    with pytest.raises(PsinspectError, match="differs from the reference"):
        register(registration_image(small_n, small_m), registration_image(ref_n, ref_m))


def test_template_lookup_matches_warp_normals():
    """With no shift field the lookup moves a template exactly as warp_normals does (the
    registration's matrix maps input -> reference; vectors turn the other way)."""
    n, m = posed_part()
    t = RigidTransform(3.5, 2.0, -1.5, (n.shape[1] / 2, n.shape[0] / 2))
    want, wmask = warp_normals(n, np.ones(m.shape, bool), t.inverse_matrix(), m.shape)
    got = TemplateLookup.build(t.matrix(), m.shape).normals(n)
    inner = ndimage.binary_erosion(wmask, iterations=2)
    assert angular_error_deg(got, want)[inner].max() < 0.05  # fixed-point interpolation


def test_local_shift_lines_up_a_sub_pixel_offset_and_ignores_a_dent():
    """A template moved by a known sub-pixel offset is moved back by the shift field (where it
    has structure); a dent on the map itself barely moves it (only the template's own
    structure may move; test_variation checks that the dent is still flagged, and nothing
    around it)."""
    n, m = posed_part()
    off = np.array([[1.0, 0.0, 0.3], [0.0, 1.0, -0.2]])  # content moves by (+0.3, -0.2) px
    ref, rmask = warp_normals(n, m, off, m.shape)
    shift = local_shift(n, m & rmask, ref, max_px=0.5)
    lined = TemplateLookup.build(np.eye(2, 3), m.shape, shift).normals(ref)
    inner = ndimage.binary_erosion(m & rmask, iterations=4)
    before = angular_error_deg(ref, n)[inner].mean()
    assert angular_error_deg(lined, n)[inner].mean() < 0.6 * before
    dented, _ = posed_part(dent=(40.0, 50.0, 3.0, 1.5))
    still = local_shift(dented, m, n, max_px=0.5)
    # (the part's own relief near the dent lets it move a little; far below the clip)
    assert np.abs(still[m]).max() < 0.25


def test_warp_stack_is_bilinear_for_any_channel_count():
    """A stack of many images (a capture's K lights) is warped as each image alone would be
    and as exact bilinear interpolation gives: OpenCV warps more than 4 channels at once at
    sample positions rounded to 1/32 px (errors of about 2 % of the range on noise)."""
    rng = np.random.default_rng(0)
    h, w = 30, 40
    stack = rng.random((12, h, w)).astype(np.float32)
    m = RigidTransform(7.0, 1.3, -2.1, (w / 2, h / 2)).matrix()
    # exact bilinear sampling at the source positions of the inner pixels
    inv = cv2.invertAffineTransform(m)
    rows, cols = np.mgrid[5:h - 5, 5:w - 5].astype(np.float64)
    x = inv[0, 0] * cols + inv[0, 1] * rows + inv[0, 2]
    y = inv[1, 0] * cols + inv[1, 1] * rows + inv[1, 2]
    exact = np.stack([ndimage.map_coordinates(s.astype(np.float64), [y, x], order=1)
                      for s in stack])
    out = warp_stack(stack, m, (h, w))
    assert out.shape == (12, h, w)
    np.testing.assert_allclose(out[:, 5:-5, 5:-5], exact, atol=1e-4)
    for c in (1, 4, 5):  # the same channel whatever is warped with it
        np.testing.assert_array_equal(warp_stack(stack[:c], m, (h, w)), out[:c])


@pytest.mark.parametrize("angle", [16.0, -16.0])
def test_rotation_outside_the_range_is_refused_either_way(angle):
    """A part turned by +16 or -16 deg (range +-10): refused both ways."""
    from psinspect.align import register, registration_image
    from psinspect.errors import PsinspectError

    ref_n, ref_m = posed_part()
    mov_n, mov_m = posed_part(angle_deg=angle)
    way = "counter-clockwise" if angle > 0 else "clockwise"  # (it said -15 deg for +16)
    with pytest.raises(PsinspectError, match=rf"turned by about 1[56]\.\d deg {way} and"):
        register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m))


@pytest.mark.parametrize("angle", [5.0, 8.0, -5.0, 13.0])
def test_a_toothed_part_is_registered_to_a_whole_tooth(angle: float) -> None:
    """Turned a few degrees, a toothed part is registered to the nearest whole-tooth pose (the
    angle modulo its 18 deg period), not half a tooth off, where nz alone fits as well but
    every flank's normal points the other way; the variation model then finds the good part
    as it finds one turned by a degree or two."""
    from psinspect.models import create_model

    ref_n, ref_m = toothed_part(0.0)
    mov_n, mov_m = toothed_part(angle)
    reg = register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m),
                   normals=(mov_n, ref_n))
    off = (reg.transform.angle_deg - angle + 9.0) % 18.0 - 9.0
    assert abs(off) < 0.5, reg.transform.angle_deg
    model = create_model("variation")
    model.fit([(ref_n, ref_m)] * 5, [])
    assert abs((model.register_map(mov_n, mov_m).transform.angle_deg - angle + 9.0) % 18.0
               - 9.0) < 0.5
    # scored like the part turned by only 2 deg (registered right by nz alone): about 16-18
    # (5 identical training copies, no spread but the floor); half a tooth off it was 207
    slight = model.score(*toothed_part(2.0)).score.max()
    assert model.score(mov_n, mov_m).score.max() < 1.5 * slight
