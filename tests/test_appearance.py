"""Paint is not a defect: appearance-only marks change the albedo that PS recovers, not the
normals the model judges; a dent of the same part still fails (bench/bench_appearance.py
measures the same on 36 parts)."""

from __future__ import annotations

import numpy as np
import pytest

from psinspect.defects import implant_defects_height
from psinspect.detect import detect_map
from psinspect.modelstore import load_model_dir
from psinspect.render import default_lights, make_part, paint_marks, render_images
from psinspect.stereo import solve


def test_paint_marks_cover_only_the_object() -> None:
    rng = np.random.default_rng(3)
    mask = np.zeros((96, 120), bool)
    mask[10:80, 15:110] = True
    factor, marks = paint_marks(rng, mask, strokes=(2, 2), blotches=(1, 1))
    assert factor.shape == mask.shape and factor.dtype == np.float32
    assert marks.any() and not (marks & ~mask).any()
    assert (factor > 0).all() and np.abs(factor[marks] - 1).min() > 0.1  # every mark shows
    again, marks2 = paint_marks(np.random.default_rng(3), mask, strokes=(2, 2), blotches=(1, 1))
    np.testing.assert_array_equal(again, factor)
    np.testing.assert_array_equal(marks2, marks)
    empty_factor, empty_marks = paint_marks(rng, np.zeros((8, 8), bool))
    assert (empty_factor == 1).all() and not empty_marks.any()


@pytest.fixture(scope="module")
def bundle():
    return load_model_dir()


def _capture(height, albedo, mask, mat, seed):
    lights = default_lights(12, "diligent")
    images, _ = render_images(height, albedo, mask, lights, np.random.default_rng(seed),
                              specular=float(mat["ks"]), shininess=float(mat["shininess"]))
    return solve(images, lights, mask, solver="robust")


def test_paint_passes_where_a_dent_fails(bundle) -> None:
    rng = np.random.default_rng([4242, 0])  # bench_appearance's first part: a turned disc
    part = make_part(rng, 256, "disc")
    mat = part.params["material"]
    factor, marks = paint_marks(rng, part.mask, strokes=(3, 3), blotches=(2, 2))
    dented, gt, _ = implant_defects_height(part.height, part.mask, rng, count=1,
                                           types=["dent"], severity="medium")
    clean = _capture(part.height, part.albedo, part.mask, mat, 1)
    painted = _capture(part.height, np.clip(part.albedo * factor, 0.02, 1.0), part.mask, mat, 1)
    defect = _capture(dented, part.albedo, part.mask, mat, 1)
    # the marks are really there: PS puts them in the albedo (strokes may brighten)
    change = np.abs(painted.albedo[marks] / clean.albedo[marks] - 1)
    assert np.median(change) > 0.2
    det = {name: detect_map(bundle, ps.normals, part.mask, confidence=ps.confidence)
           for name, ps in (("clean", clean), ("painted", painted), ("dented", defect))}
    assert det["clean"].verdict == "pass"
    assert det["painted"].verdict == "pass"
    assert det["painted"].image_score < 2 * det["clean"].image_score + 0.5
    assert not (det["painted"].pred_mask & marks).any()
    assert det["dented"].verdict == "fail"
    assert (det["dented"].pred_mask & gt).any()
