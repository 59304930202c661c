"""Contracts of align and relight that a mutation audit asked for: frames and centres, the
registration image, random poses, warped masks and vectors, the shift field's directions and
placement, template look-ups of stacks, registration at reduced scale, the centroid shift,
symmetric parts, error messages, and relighting (self-shadowed pixels, clipping, per-channel
intensities, arguments passed through)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _posed_part import posed_part, toothed_part

from psinspect import align
from psinspect.align import (
    RigidTransform,
    TemplateLookup,
    local_shift,
    random_pose,
    register,
    registration_image,
    warp_normals,
)
from psinspect.defects import implant_defects
from psinspect.errors import PsinspectError
from psinspect.normalmap import normals_from_height
from psinspect.relight import relight, relight_defects, shading_change


def _centroid(image: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(image.shape)
    return np.array([(image * cols).sum(), (image * rows).sum()]) / image.sum()


def test_centres_are_those_of_the_reference_image_col_row() -> None:
    """``center`` is ``(col, row)`` of the image centre: ((W - 1) / 2, (H - 1) / 2)."""
    assert RigidTransform.identity((96, 112)).center == (55.5, 47.5)
    ref_n, ref_m = posed_part()
    mov_n, mov_m = posed_part(angle_deg=3.0, shift=(2.0, -1.0))
    reg = register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m))
    assert reg.transform.center == (55.5, 47.5)


def test_registration_image_is_mask_times_one_plus_nz_over_two() -> None:
    n = np.zeros((2, 3, 3), np.float32)
    n[0, 0] = (0, 0, 1)  # facing the camera: 1
    n[0, 1] = (1, 0, 0)  # edge-on: 0.5
    n[0, 2] = (0.6, 0, 0.8)
    n[1] = (0, 0, 1)  # outside the mask although set: 0
    mask = np.zeros((2, 3), bool)
    mask[0] = True
    np.testing.assert_allclose(registration_image(n, mask), [[1.0, 0.5, 0.9], [0, 0, 0]],
                               atol=1e-6)


def test_random_pose_turns_both_ways_about_the_centre() -> None:
    """Angles uniform in [-rotation, rotation] (both signs); without a shift the image centre
    ((w - 1) / 2, (h - 1) / 2) of a non-square image stays put."""
    angles = []
    for seed in range(20):
        m, angle = random_pose(np.random.default_rng(seed), (41, 81), 0.0, 8.0)
        angles.append(angle)
        np.testing.assert_allclose(m @ [40.0, 20.0, 1.0], [40.0, 20.0], atol=1e-9)
        assert align.matrix_angle(m) == pytest.approx(angle)
    assert min(angles) < -2.0 and max(angles) > 2.0 and max(map(abs, angles)) <= 8.0


def test_warp_normals_masks_before_and_after_and_keeps_the_area() -> None:
    """A sub-pixel move: the mask keeps its area (nearest pixels, not every pixel touched),
    vectors inside come only from inside (whatever lies outside the mask), and every pixel
    outside the warped mask is zero."""
    rows, cols = np.mgrid[0:60, 0:70]
    mask = (cols - 34.5) ** 2 + (rows - 29.5) ** 2 < 20.0**2
    n = np.zeros((60, 70, 3), np.float32)
    n[mask] = (0, 0, 1)
    n[~mask] = (1, 0, 0)  # garbage outside the mask
    out, wmask = warp_normals(n, mask, np.array([[1.0, 0, 0.3], [0, 1.0, 0.2]]), mask.shape)
    assert abs(int(wmask.sum()) - int(mask.sum())) < 15
    np.testing.assert_allclose(out[wmask], np.tile([0, 0, 1.0], (int(wmask.sum()), 1)),
                               atol=1e-5)
    assert not out[~wmask].any()


def _bump_map(shape_hw=(64, 160)) -> tuple[np.ndarray, np.ndarray]:
    """A wide map, flat except for a rippled patch on the left."""
    rows, cols = np.mgrid[0:shape_hw[0], 0:shape_hw[1]].astype(np.float64)
    fade = np.exp(-np.maximum(cols - 50.0, 0.0) ** 2 / (2 * 6.0**2))
    z = 2.0 * np.sin(cols / 3.0) * np.sin(rows / 4.0 + cols / 7.0) * fade
    mask = np.ones(shape_hw, bool)
    return normals_from_height(z.astype(np.float32), mask), mask


@pytest.mark.parametrize("off", [(0.3, 0.0), (0.0, -0.3), (0.25, 0.2)])
def test_local_shift_points_the_right_way_and_only_where_the_structure_is(off) -> None:
    """Template content moved by ``off`` = (cols, rows): ``reference(p - d) = normals(p)``
    gives ``d = -off`` on the bump, and no shift on the flat right-hand side."""
    n, m = _bump_map()
    ref, rmask = warp_normals(n, m, np.array([[1.0, 0, off[0]], [0, 1.0, off[1]]]), m.shape)
    d = local_shift(n, m & rmask, ref, max_px=0.5)
    assert d.shape == (64, 160, 2)
    np.testing.assert_allclose(d[24:40, 24:40].mean((0, 1)), -np.array(off), atol=0.06)
    assert np.abs(d[:, 110:]).max() < 0.02


def test_template_lookup_stack_is_per_image_for_any_count() -> None:
    """A (C, h, w) stack is looked up as each image alone, returning (C, H, W)."""
    rng = np.random.default_rng(1)
    stack = rng.random((9, 40, 50)).astype(np.float32)
    look = TemplateLookup.build(RigidTransform(5.0, 1.2, -0.7, (24.5, 19.5)).matrix(), (40, 50))
    out = look.stack(stack)
    assert out.shape == (9, 40, 50)
    for c in range(9):
        np.testing.assert_array_equal(out[c], look.image(stack[c]))
    # an (h, w, C) image with more than 4 channels likewise
    img = np.moveaxis(stack, 0, -1)
    np.testing.assert_array_equal(look.image(img), np.moveaxis(out, 0, -1))
    np.testing.assert_array_equal(look.image(img[..., :5]), np.moveaxis(out[:5], 0, -1))


def test_register_at_reduced_scale_recovers_the_pose(monkeypatch) -> None:
    """Images larger than the coarse and fine sizes are registered on downsized copies; the
    transform is still the full-resolution one."""
    monkeypatch.setattr(align, "COARSE_SIZE", 64)
    monkeypatch.setattr(align, "FINE_SIZE", 80)
    ref_n, ref_m = posed_part()
    angle, shift = 6.0, (3.0, -2.0)
    mov_n, mov_m = posed_part(angle_deg=angle, shift=shift)
    reg = register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m))
    assert reg.transform.angle_deg == pytest.approx(-angle, abs=0.3)
    center = np.array([55.5, 47.5])
    np.testing.assert_allclose(reg.transform.matrix() @ np.append(center + shift, 1.0), center,
                               atol=0.5)


def test_a_large_shift_within_the_range_is_recovered() -> None:
    """A shift of 15 px (range 20 px) and a turn of 4 deg on a larger canvas."""
    ref_n, ref_m = posed_part((120, 150))
    mov_n, mov_m = posed_part((120, 150), angle_deg=4.0, shift=(12.0, -9.0))
    reg = register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m))
    assert reg.transform.angle_deg == pytest.approx(-4.0, abs=0.3)
    center = np.array([74.5, 59.5])
    np.testing.assert_allclose(reg.transform.matrix() @ np.append(center + [12.0, -9.0], 1.0),
                               center, atol=0.5)


def test_correlation_is_over_both_objects() -> None:
    """A capture showing only part of the part fits the reference well where both are, but
    the correlation is taken over the union of both objects: refused."""
    ref_n, ref_m = posed_part()
    cut_m = ref_m.copy()
    cut_m[:, 56:] = False
    cut_n = np.where(cut_m[..., None], ref_n, 0.0).astype(np.float32)
    with pytest.raises(PsinspectError, match="registration to the reference failed"):
        register(registration_image(cut_n, cut_m), registration_image(ref_n, ref_m))


def test_debris_beside_the_part_lowers_the_correlation() -> None:
    """The correlation is taken over the union of both objects: a registered capture with a
    flat blob beside the part (where the reference has nothing) fits worse than without."""
    ref_n, ref_m = posed_part((120, 150))
    mov_n, mov_m = posed_part((120, 150), angle_deg=3.0, shift=(2.0, -1.0))
    clean = register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m))
    rows, cols = np.mgrid[0:120, 0:150]
    blob = (cols - 136) ** 2 + (rows - 14) ** 2 < 10**2
    mov_m = mov_m | blob
    mov_n[blob] = (0, 0, 1)
    reg = register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m),
                   min_correlation=0.0)
    assert reg.transform.angle_deg == pytest.approx(clean.transform.angle_deg, abs=0.3)
    assert reg.correlation < clean.correlation - 0.03


def test_shift_px_is_the_displacement_of_the_parts_centroid() -> None:
    """An off-centre part turned by 8 deg: ``shift_px`` is how far its (registration image's
    intensity) centroid moved, not the image centre nor a transposed point."""
    ref_n, ref_m = posed_part((120, 150), shift=(-20.0, 10.0))
    mov_n, mov_m = posed_part((120, 150), angle_deg=8.0, shift=(-17.0, 13.0))
    ref_i, mov_i = registration_image(ref_n, ref_m), registration_image(mov_n, mov_m)
    reg = register(mov_i, ref_i)
    want = float(np.hypot(*(_centroid(mov_i) - _centroid(ref_i))))
    assert reg.shift_px == pytest.approx(want, abs=0.3)


def _dome(shift=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:80, 0:80].astype(np.float64)
    r = np.hypot(cols - 39.5 - shift[0], rows - 39.5 - shift[1])
    z = 12.0 * np.exp(-(r**2) / (2 * 12.0**2))
    m = r < 30
    return normals_from_height(z.astype(np.float32), m), m


@pytest.mark.parametrize("part", ["round part to itself", "toothed part turned 5 deg"])
def test_square_images_register_like_others(part: str) -> None:
    """OpenCV multiplies phaseCorrelate's inputs by the window IN PLACE where their sides need
    no padding (80 x 80, 96 x 96, 256 x 256): register's coarse reference was windowed once
    more at every candidate, and a round part registered to itself came out turned ~20 deg."""
    if part.startswith("round"):
        ref_n, ref_m = _dome()
        mov_n, mov_m, angle = ref_n, ref_m, 0.0
    else:
        (ref_n, ref_m), (mov_n, mov_m), angle = (toothed_part(0.0, (96, 96)),
                                                  toothed_part(5.0, (96, 96)), 5.0)
    reg = register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m),
                   normals=(mov_n, ref_n))
    assert abs((reg.transform.angle_deg - angle + 9.0) % 18.0 - 9.0) < 0.5


@pytest.mark.parametrize("with_normals", [False, True])
def test_a_rotationally_symmetric_part_is_registered_without_a_turn(with_normals) -> None:
    """Every angle fits a round dome equally: the smallest turn is taken (not the search's
    ends, which lie outside the supported range)."""
    ref_n, ref_m = _dome()
    mov_n, mov_m = _dome(shift=(2.0, -1.0))
    reg = register(registration_image(mov_n, mov_m), registration_image(ref_n, ref_m),
                   normals=(mov_n, ref_n) if with_normals else None)
    assert abs(reg.transform.angle_deg) < 1.0
    assert reg.shift_px == pytest.approx(math.sqrt(5.0), abs=0.3)


def test_error_messages_name_the_input_and_give_width_by_height() -> None:
    ref_n, ref_m = posed_part()
    small_n, small_m = posed_part(shape_hw=(90, 112))
    small, ref = registration_image(small_n, small_m), registration_image(ref_n, ref_m)
    with pytest.raises(PsinspectError) as err:
        register(small, ref, name="")
    assert str(err.value).startswith("image size 112x90 differs from the reference 112x96")
    with pytest.raises(PsinspectError, match=r"^a\.npy: image size"):
        register(small, ref, name="a.npy")


LIGHTS = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [-0.6, 0.0, 0.8]], np.float32)


def test_shading_change_clamps_both_shadings() -> None:
    """``max(n' . l, 0) - max(n . l, 0)``: a clean normal facing away from a light has no
    shading to lose; zero outside the mask."""
    n = np.array([[[-1, 0, 0], [0, 0, 1]]], np.float32)
    nd = np.array([[[0, 0, 1], [-0.6, 0, 0.8]]], np.float32)
    mask = np.array([[True, True]])
    got = shading_change(LIGHTS, n, nd, mask)
    want = np.maximum(np.einsum("kc,hwc->khw", LIGHTS, nd), 0) - np.maximum(
        np.einsum("kc,hwc->khw", LIGHTS, n), 0)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[1, 0, 0] == 0.0  # l = +x: both in shadow
    assert not shading_change(LIGHTS, n, nd, np.array([[False, False]])).any()


def test_relight_clips_at_zero_and_takes_per_channel_intensities() -> None:
    n = np.tile(np.array([0, 0, 1], np.float32), (2, 2, 1))
    nd = n.copy()
    nd[0, 0] = (0.6, 0, 0.8)
    mask = np.ones((2, 2), bool)
    albedo = np.full((2, 2), 0.5, np.float32)
    imgs = np.full((3, 2, 2, 3), 0.05, np.float32)
    inten = np.array([[1.0, 2.0, 3.0], [0.5, 1.0, 1.5], [2.0, 2.0, 2.0]], np.float32)
    out = relight(imgs, LIGHTS, mask, n, nd, albedo, intensities=inten)
    delta = shading_change(LIGHTS, n, nd, mask)[:, 0, 0]  # (K,)
    want = np.maximum(0.05 + 0.5 * inten * delta[:, None], 0.0)
    np.testing.assert_allclose(out[:, 0, 0], want, atol=1e-6)
    assert (out[0, 0, 0] == 0).all()  # clipped, not negative
    np.testing.assert_array_equal(out[:, 1:], imgs[:, 1:])


def test_relight_refuses_a_mask_of_another_size() -> None:
    n = np.tile(np.array([0, 0, 1], np.float32), (4, 5, 1))
    with pytest.raises(PsinspectError, match="must share"):
        relight(np.zeros((3, 4, 5), np.float32), LIGHTS, np.ones((5, 4), bool), n, n,
                np.ones((4, 5), np.float32))


def test_relight_defects_passes_every_argument_on() -> None:
    """The same generator state gives what implant_defects then relight give, with ``count``,
    ``min_angle`` and ``intensities`` honoured."""
    clean, mask = posed_part()
    lights = np.array([[0.3, 0.2, 0.93], [-0.4, 0.1, 0.91], [0.1, -0.5, 0.86]], np.float32)
    lights /= np.linalg.norm(lights, axis=1, keepdims=True)
    albedo = np.where(mask, 0.7, 0.0).astype(np.float32)
    images = np.maximum(np.einsum("kc,hwc->khw", lights, clean), 0) * albedo[None]
    inten = np.array([0.5, 1.0, 2.0], np.float32)
    kw = dict(count=2, types=["dent"], severity="high", min_angle=6.0)
    out, gt, records = relight_defects(images, lights, mask, clean, albedo,
                                       np.random.default_rng(3), intensities=inten, **kw)
    nd, want_gt, want_records = implant_defects(clean, mask, np.random.default_rng(3), **kw)
    assert len(records) == 2 and records == want_records
    np.testing.assert_array_equal(gt, want_gt)
    np.testing.assert_allclose(out, relight(images, lights, mask, clean, nd, albedo, inten),
                               atol=1e-6)
    assert not np.array_equal(out, relight(images, lights, mask, clean, nd, albedo))
