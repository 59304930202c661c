"""Texture anomalies for training (geo-seg ``p_transplant``):
:func:`psinspect.models.geo_seg.texture_transplant` moves another place's fine structure, turned
or mirrored with its vectors, under a blob, and reports the region it changed."""

from __future__ import annotations

import numpy as np
import pytest

from psinspect.errors import PsinspectError
from psinspect.models import create_model
from psinspect.models.geo_seg import texture_transplant
from psinspect.normalmap import normals_from_height

SIZE = 64


def _brushed(size: int = SIZE, period: float = 6.0, amp: float = 0.4
             ) -> tuple[np.ndarray, np.ndarray]:
    """Straight brushing marks: height varies along the columns only (ridges run along y)."""
    xx = np.mgrid[0:size, 0:size][1].astype(np.float32)
    mask = np.ones((size, size), bool)
    return normals_from_height(amp * np.sin(2 * np.pi * xx / period), mask), mask


def _flat(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    mask = np.ones((size, size), bool)
    return normals_from_height(np.zeros((size, size), np.float32), mask), mask


@pytest.mark.parametrize("seed", range(6))
def test_transplanted_marks_turn_with_their_vectors(seed: int) -> None:
    """On a flat target the new structure is the source's marks, turned as a whole: where
    the vectors lean along x the pattern changes along x (and the same for y). Vectors that
    did not turn with the pixels would lean along the marks, which no surface does."""
    target, mask = _flat()
    source, smask = _brushed()
    out, region = texture_transplant(target, mask, source, smask,
                                     np.random.default_rng(seed), 2.0)
    assert region.sum() > 50
    d = (out - target)[region]
    ex, ey = float((d[:, 0] ** 2).sum()), float((d[:, 1] ** 2).sum())
    dev = out - target
    if ex > ey:  # marks now run along y: x components change from column to column
        along_cols = np.abs(np.diff(dev[..., 0], axis=1))[:, :-1][region[:, :-2]].mean()
        along_rows = np.abs(np.diff(dev[..., 0], axis=0))[:-1, :][region[:-2, :]].mean()
    else:  # marks turned to run along x: y components change from row to row
        along_cols = np.abs(np.diff(dev[..., 1], axis=0))[:-1, :][region[:-2, :]].mean()
        along_rows = np.abs(np.diff(dev[..., 1], axis=1))[:, :-1][region[:, :-2]].mean()
    assert max(ex, ey) > 20 * min(ex, ey)
    assert along_cols > 1.5 * along_rows  # the blob's soft edge varies both ways


def test_result_is_unit_inside_the_mask_and_zero_outside() -> None:
    target, mask = _brushed()
    mask[:, :10] = False
    target[~mask] = 0.0
    source, smask = _brushed(period=4.0)
    out, region = texture_transplant(target, mask, source, smask, np.random.default_rng(1), 2.0)
    assert out.dtype == np.float32 and out.shape == target.shape
    assert np.allclose(np.linalg.norm(out[mask], axis=-1), 1.0, atol=1e-5)
    assert not out[~mask].any() and not region[~mask].any()


def test_no_structure_changes_nothing() -> None:
    target, mask = _flat()
    source, smask = _flat(96)
    out, region = texture_transplant(target, mask, source, smask, np.random.default_rng(0), 2.0)
    assert np.allclose(out, target, atol=1e-6)
    assert not region.any()


def test_needs_a_square_map() -> None:
    source, smask = _brushed()
    with pytest.raises(ValueError, match="square"):
        texture_transplant(source[:, :40], smask[:, :40], source, smask,
                           np.random.default_rng(0), 2.0)


def test_p_transplant_is_off_by_default_and_validated() -> None:
    assert create_model("geo-seg").hyperparameters()["p_transplant"] == 0.0
    with pytest.raises(PsinspectError, match="p_transplant"):
        create_model("geo-seg", p_transplant=1.5)


def test_training_examples_mark_transplanted_texture() -> None:
    """Every anomaly generic and every generic one a transplant: each defective example's
    target is the changed patch (no library or height-field anomaly is drawn)."""
    model = create_model("geo-seg", p_generic=1.0, p_transplant=1.0, p_clean=0.0,
                         patch=32, tilt_deg=0.0, bend=0.0, noise=0.0)
    normals, mask = _brushed(48, period=5.0)
    rng = np.random.default_rng(2)
    marked = 0
    for _ in range(8):
        ex = model.example_from_map(normals, mask, rng)
        assert np.isfinite(ex["x"]).all()
        marked += int(ex["y"].sum() > 0)
    assert marked >= 6
