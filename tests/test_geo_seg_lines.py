"""geo-seg's optional thin-line cue (``line_orientations``): off by default (the bundled model's
channels unchanged), its channels turn with the map, it finds an isolated line, and the full
test-time augmentation stays exactly equivariant with it on."""

from __future__ import annotations

import numpy as np
import pytest

from psinspect.defects import implant_defects
from psinspect.errors import PsinspectError
from psinspect.models import create_model
from psinspect.models.geo_seg import line_cue
from psinspect.models.geometric import line_kernel
from psinspect.normalmap import flip, normals_from_height, rotate90

TINY = {"channels": [4, 8], "patch": 32, "steps_per_epoch": 2, "val_patches": 1}


def bumpy_map(size: int = 72, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A curved, irregular (not symmetric) surface with a scratch and a dent, on a mask that
    is not symmetric either."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    mask = ((xx - c) / 30) ** 2 + ((yy - c - 3) / 24) ** 2 < 1.0
    z = 0.004 * (xx - 20) ** 2 + 0.002 * (yy - 10) * (xx - 40) + rng.normal(0, 0.05, xx.shape)
    n = normals_from_height(z.astype(np.float32), mask)
    n, _, _ = implant_defects(n, mask, rng, count=2, types=["scratch", "dent"], severity="low")
    return n, mask


def test_line_cue_is_off_by_default_and_adds_two_channels() -> None:
    n, m = bumpy_map()
    plain = create_model("geo-seg", **TINY)
    lines = create_model("geo-seg", line_orientations=8, **TINY)
    assert plain.hyperparameters()["line_orientations"] == 0  # off, and said so in config
    assert lines.in_channels == plain.in_channels + 2
    x0, _ = plain.features(n, m)
    x1, _ = lines.features(n, m)
    assert x0.shape[0] == plain.in_channels and x1.shape[0] == lines.in_channels
    np.testing.assert_array_equal(x1[:x0.shape[0] - 1], x0[:-1])  # same channels, cue before mask
    np.testing.assert_array_equal(x1[-1], x0[-1])
    assert (x1[-3:-1][:, ~m] == 0).all() and x1[-3:-1][:, m].max() > 0
    clone = create_model("geo-seg", **lines.hyperparameters())
    assert clone.in_channels == lines.in_channels
    for bad in (3, -2):
        with pytest.raises(PsinspectError, match="line_orientations must be 0"):
            create_model("geo-seg", line_orientations=bad)


@pytest.mark.parametrize(("k", "inhibition"), [(1, 0.0), (2, 0.0), (3, 0.0), (1, 2.0)])
def test_line_channels_turn_with_the_map(k: int, inhibition: float) -> None:
    n, m = bumpy_map(seed=k)
    model = create_model("geo-seg", line_orientations=8, line_inhibition=inhibition, **TINY)
    cue = model.features(n, m)[0][-3:-1]
    scale = float(np.abs(cue).max())
    rot = model.features(rotate90(n, k), np.ascontiguousarray(np.rot90(m, k)))[0][-3:-1]
    np.testing.assert_allclose(rot, np.rot90(cue, k, axes=(1, 2)), atol=1e-4 * scale)
    mir = model.features(flip(n, "lr"), np.ascontiguousarray(m[:, ::-1]))[0][-3:-1]
    np.testing.assert_allclose(mir, cue[:, :, ::-1], atol=1e-4 * scale)


@pytest.mark.parametrize("angle", [0.0, 30.0, 67.5, 100.0, 145.0])
def test_line_cue_finds_an_isolated_groove_among_parallel_streaks(angle: float) -> None:
    """A groove (walls tilted ~3 deg) on a plane scores a high strength at any angle; a field
    of parallel streaks of the same wall tilt scores the same strength but a lower isolation."""
    size = 96
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    t = np.radians(angle)
    # signed distance across a line through the centre running along (cos t, sin t), y up
    across = -(xx - 47.5) * np.sin(t) + (-(yy - 47.5)) * np.cos(t)
    m = np.ones((size, size), bool)
    groove = -0.1 * np.exp(-0.5 * (across / 1.2) ** 2)
    # as steep as the groove's walls (peak slope 0.1 / 1.2 * exp(-1/2) ~ 0.05, ~3 deg)
    streaks = -0.05 * 6.0 / (2 * np.pi) * np.cos(2 * np.pi * across / 6.0)
    kernels = [line_kernel(180.0 * i / 8, 2.5, 0.5, 2.0) for i in range(8)]

    def cue(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nz = normals_from_height(z.astype(np.float32), m)
        return line_cue(nz[..., 0], nz[..., 1], m, kernels, 16.0, 0.005)

    s_g, iso_g = cue(groove)
    s_s, iso_s = cue(streaks)
    inner = np.zeros_like(m)
    inner[16:-16, 16:-16] = True
    on_line = inner & (np.abs(np.abs(across) - 1.2) < 0.5)  # the groove's walls
    off_line = inner & (np.abs(across) > 8)
    assert s_g[on_line].mean() > 10 * s_g[off_line].mean()
    assert np.median(s_g[on_line]) > 0.8 * np.percentile(s_s[inner], 90)
    # the streaks are as steep as the groove's walls but form a field: lower isolation
    assert np.median(iso_g[on_line]) > 1.5 * np.percentile(iso_s[inner], 90)
    # lateral inhibition: the groove keeps a clear excess over its surroundings, the streaks
    # (and weak noise) hardly any
    nz_g = normals_from_height(groove.astype(np.float32), m)
    nz_s = normals_from_height(streaks.astype(np.float32), m)
    _, ex_g = line_cue(nz_g[..., 0], nz_g[..., 1], m, kernels, 16.0, 0.005, inhibition=2.0)
    _, ex_s = line_cue(nz_s[..., 0], nz_s[..., 1], m, kernels, 16.0, 0.005, inhibition=2.0)
    assert np.median(ex_g[on_line]) > 0.5 * np.median(s_g[on_line])
    assert np.median(ex_g[on_line]) > 1.5 * np.percentile(ex_s[inner], 90)
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.003, (2, size, size)).astype(np.float32)
    _, ex_n = line_cue(noise[0], noise[1], m, kernels, 16.0, 0.005, inhibition=2.0)
    assert np.percentile(ex_n[inner], 99) < 0.1 * np.median(ex_g[on_line])


def test_full_test_time_augmentation_stays_equivariant_with_the_line_cue() -> None:
    n, m = bumpy_map(64, seed=5)
    full = create_model("geo-seg", tta=8, line_orientations=8, **TINY)
    s = full.score(n, m).score
    s_rot = full.score(rotate90(n, 1), np.rot90(m, 1).copy()).score
    s_mir = full.score(flip(n, "lr"), m[:, ::-1].copy()).score
    scale = float(s.max())
    assert np.abs(np.rot90(s, 1) - s_rot).max() < 1e-3 * scale
    assert np.abs(s[:, ::-1] - s_mir).max() < 1e-3 * scale


@pytest.mark.parametrize("scales", [[2.5, 8.0], [2.5], [2.0, 6.0, 24.0]])
def test_transformed_features_equal_features_of_the_transformed_map(scales: list) -> None:
    """Test-time copies reuse the map's own features (GeoSeg.transform_features): for every
    quarter turn and mirror they must equal the features computed on the turned map."""
    model = create_model("geo-seg", geo_scales=scales, **TINY)
    n, m = bumpy_map(70, seed=2)
    n, m = n[:, 3:], m[:, 3:]  # not square: turns swap height and width
    x0, _ = model.features(n, m)
    for k in range(4):
        for mirror in (False, True):
            nt, mt = (flip(n, "lr"), m[:, ::-1]) if mirror else (n, m)
            want, _ = model.features(rotate90(nt, k), np.ascontiguousarray(np.rot90(mt, k)))
            got = model.transform_features(x0, k, mirror)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"k={k} mirror={mirror}")


def test_focal_loss_weighs_hard_pixels_and_is_off_by_default() -> None:
    """``focal_gamma`` (off: plain cross-entropy) scales each pixel's cross-entropy by
    (1 - p_t) ** gamma: a confidently right pixel nearly drops out, a wrong one keeps most of
    its weight."""
    import torch

    y = torch.tensor([[[[1.0, 0.0, 1.0, 0.0]]]])
    w = torch.ones_like(y)
    out = torch.tensor([[[[4.0, -4.0, -2.0, 2.0]]]])  # right, right, wrong, wrong
    batch = {"y": y, "w": w}
    plain = create_model("geo-seg", dice_weight=0.0)
    assert plain.focal_gamma == 0.0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out, y)
    assert float(plain.loss(out, batch)) == pytest.approx(float(bce))
    focal = create_model("geo-seg", dice_weight=0.0, focal_gamma=2.0)
    per_pixel = []
    for i in range(4):
        one = {"y": y, "w": torch.zeros_like(w).index_fill_(3, torch.tensor([i]), 1.0)}
        per_pixel.append((float(focal.loss(out, one)), float(plain.loss(out, one))))
    right = [f / p for f, p in per_pixel[:2]]
    wrong = [f / p for f, p in per_pixel[2:]]
    assert max(right) < 0.001 and min(wrong) > 0.7
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(PsinspectError, match="focal_gamma must be a finite number >= 0"):
            create_model("geo-seg", focal_gamma=bad)
    # a gamma below 1 keeps a finite gradient where a pixel is confidently right (1 - p_t
    # reaches 0 in float32 near a logit of 17; its power's derivative there was NaN)
    sure = torch.tensor([[[[-30.0, 30.0]]]], requires_grad=True)
    loss = create_model("geo-seg", dice_weight=0.0, focal_gamma=0.5).loss(
        sure, {"y": torch.tensor([[[[0.0, 1.0]]]]), "w": torch.tensor([[[[0.0, 1.0]]]])})
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(sure.grad).all()
