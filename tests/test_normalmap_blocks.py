"""Normal maps decoded and validated in row blocks (large maps: 2026-12-02) give what the
whole-map arithmetic gives, bit for bit, and count over every block."""

from __future__ import annotations

import numpy as np
import pytest

from psinspect.errors import PsinspectError
from psinspect.normalmap import (
    PNG_OFF_UNIT_SHARE,
    decode_png,
    normalize,
    validate_normal_map,
    vector_length,
)

#: wide enough that a map of a few hundred rows spans several row blocks (about a million
#: pixels each: 256 rows at this width)
WIDE = 4096


def _sphere_png(h: int, w: int, dtype: type) -> np.ndarray:
    """An (h, w, 3) RGB image of a sphere's normals, black around it."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = (xx - w / 2) / (0.45 * w), -(yy - h / 2) / (0.45 * h)
    r2 = x * x + y * y
    n = np.stack([x, y, np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    top = np.iinfo(dtype).max
    img = np.round((n * 0.5 + 0.5) * top).astype(dtype)
    img[r2 >= 1.0] = 0
    return img


def test_vector_length_is_numpys_norm_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    for scale in (1e-20, 1e-3, 1.0, 1e3, 1e18):
        v = (rng.normal(size=(64, 33, 3)) * scale).astype(np.float32)
        v[0] = 0.0
        v[1, :, 2] = -0.0
        np.testing.assert_array_equal(vector_length(v), np.linalg.norm(v, axis=-1))
    v2 = rng.normal(size=(10, 2)).astype(np.float32)  # other lengths: numpy's own
    np.testing.assert_array_equal(vector_length(v2), np.linalg.norm(v2, axis=-1))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("alpha", [False, True])
def test_decode_png_in_blocks_is_the_whole_map_formula(dtype: type, alpha: bool) -> None:
    img = _sphere_png(700, WIDE, dtype)  # 3 row blocks, the last one short
    mask = img.max(axis=2) > 0
    if alpha:
        mask[::7] = False  # the alpha channel decides, not the colour
        img = np.concatenate([img, (mask * np.iinfo(dtype).max).astype(dtype)[..., None]], -1)
    n, m = decode_png(img)
    ref = img[..., :3].astype(np.float32) * np.float32(2.0 / np.iinfo(dtype).max) - 1.0
    ref = normalize(ref)
    ref[~mask] = 0.0
    np.testing.assert_array_equal(m, mask)
    np.testing.assert_array_equal(n, ref)
    assert n.dtype == np.float32


@pytest.mark.parametrize(("extra", "refused"), [(-0.002, False), (0.002, True)])
def test_decode_png_counts_off_unit_pixels_over_every_block(extra: float,
                                                           refused: bool) -> None:
    """Pixels of far-off length, half in the first block and half in the last: refused when
    together they are more than PNG_OFF_UNIT_SHARE of the object's inner pixels, not when
    fewer."""
    img = _sphere_png(700, WIDE, np.uint8)
    mask = img.max(axis=2) > 0
    inner = mask.copy()
    inner[1:-1, 1:-1] &= (mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
                          & mask[:-2, :-2] & mask[:-2, 2:] & mask[2:, :-2] & mask[2:, 2:])
    want = int((PNG_OFF_UNIT_SHARE + extra) * inner[1:-1, 1:-1].sum())
    rows, cols = np.nonzero(inner[1:-1, 1:-1])
    first, last = rows < 250, rows >= 520  # the first block and the third
    half = want // 2
    assert first.sum() > half and last.sum() > want - half
    pick = (np.concatenate([rows[first][:half], rows[last][:want - half]]) + 1,
            np.concatenate([cols[first][:half], cols[last][:want - half]]) + 1)
    img[pick] = (40, 40, 40)  # a length of about 1.19 (dark grey, not black)
    if refused:
        with pytest.raises(PsinspectError, match="not a normal map"):
            decode_png(img)
    else:
        decode_png(img)


def test_validate_counts_and_ranges_over_every_block() -> None:
    """Non-unit vectors in different row blocks: one error counting all of them, with the
    range of lengths over the whole object."""
    img = _sphere_png(700, WIDE, np.uint16)
    good, m = decode_png(img)
    n = good.copy()
    r, c = np.nonzero(m)
    first = (r < 256).nonzero()[0][0]
    last = (r >= 512).nonzero()[0][-1]
    n[r[first], c[first]] *= 0.5
    n[r[last], c[last]] *= 1.5
    with pytest.raises(PsinspectError, match=r"2 of \d+ object pixels are not unit vectors "
                                             r"\(\|n\| from 0\.5 to 1\.5\)"):
        validate_normal_map(n, m)
    out, mask = validate_normal_map(good * np.float32(1.001), m)  # within tolerance: renormalised
    np.testing.assert_array_equal(mask, m)
    np.testing.assert_allclose(np.linalg.norm(out[m], axis=-1), 1.0, atol=1e-6)
    assert not out[~m].any()


def test_a_png_map_is_decoded_once_and_still_checked(tmp_path) -> None:
    """A normal PNG was normalised when decoded and again when validated (half its 15 s load
    at 8192 x 8192): now it is the decoded map itself, and the checks a decoded map can fail
    (facing away, scattered, empty) still refuse it."""
    import cv2

    from psinspect.normalmap import load_normal_map

    img = _sphere_png(300, 280, np.uint16)
    assert cv2.imwrite(str(tmp_path / "s.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    n, m = load_normal_map(tmp_path / "s.png", check_frame=False)
    dn, dm = decode_png(img)
    np.testing.assert_array_equal(n, dn)
    np.testing.assert_array_equal(m, dm)
    facing_away = img.copy()
    facing_away[..., 2] = np.where(m, np.iinfo(np.uint16).max - img[..., 2], 0)
    rng = np.random.default_rng(0)
    scattered = img.copy()
    v = rng.normal(size=(int(m.sum()), 3))
    v[:, 2] = np.abs(v[:, 2])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    scattered[m] = np.round((v * 0.5 + 0.5) * 65535).astype(np.uint16)
    for name, bad, said in (("away", facing_away, "point away from the camera"),
                            ("noise", scattered, "not a surface")):
        assert cv2.imwrite(str(tmp_path / f"{name}.png"), cv2.cvtColor(bad, cv2.COLOR_RGB2BGR))
        with pytest.raises(PsinspectError, match=said):
            load_normal_map(tmp_path / f"{name}.png")
    with pytest.raises(PsinspectError, match="empty mask"):
        validate_normal_map(dn, np.zeros_like(dm), unit=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_an_opaque_alpha_channel_tells_no_background(dtype: type) -> None:
    """An RGB normal PNG given an opaque alpha channel (image tools add one, PIL's
    ``convert('RGBA')``) reads as the RGB image: "not black" is the object. It was refused,
    its black background taken for the object."""
    img = _sphere_png(120, 90, dtype)
    opaque = np.concatenate([img, np.full(img.shape[:2] + (1,), np.iinfo(dtype).max, dtype)],
                            -1)
    n, m = decode_png(opaque)
    n0, m0 = decode_png(img)
    np.testing.assert_array_equal(m, m0)
    np.testing.assert_array_equal(n, n0)
    assert not m.all()


def test_an_alpha_channel_marking_black_as_the_object_is_named() -> None:
    """Alpha not opaque everywhere (so it is the mask), but most of the pixels it marks are
    black: refused, and the message says what the alpha channel did."""
    img = _sphere_png(120, 90, np.uint8)
    alpha = np.full(img.shape[:2], 255, np.uint8)
    alpha[0, 0] = 0
    with pytest.raises(PsinspectError, match=r"black, which its alpha channel marks as the "
                                             r"object: give the background alpha 0"):
        decode_png(np.concatenate([img, alpha[..., None]], -1))
    noisy = np.random.default_rng(0).integers(1, 255, img.shape, dtype=np.uint8)
    with pytest.raises(PsinspectError, match=r"R = x, G = y, B = z\)$"):  # not black: no hint
        decode_png(np.concatenate([noisy, alpha[..., None]], -1))
