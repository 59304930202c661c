"""Training lines along the grain (geo-seg ``p_align``): :func:`psinspect.defects.turn_line`
turns a line defect rigidly, and :func:`psinspect.models.geo_seg.grain_direction` finds the
direction of turning marks and brushing, so the turned line runs along them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from psinspect import defects
from psinspect.errors import PsinspectError
from psinspect.models import create_model
from psinspect.models.geo_seg import grain_direction
from psinspect.normalmap import normals_from_height


def _chord_angle(spec: defects.DefectSpec) -> float:
    pts = np.asarray(spec.params["branches"][0] if spec.type == "crack"
                     else spec.params["points"], float)
    d = pts[-1] - pts[0]
    return math.atan2(d[1], d[0])


def _same_orientation(a: float, b: float, tol_deg: float) -> bool:
    """Equal modulo pi (a line has no arrow), within ``tol_deg``."""
    d = (a - b) % math.pi
    return min(d, math.pi - d) < math.radians(tol_deg)


@pytest.mark.parametrize("kind", ["scratch", "ridge", "crack"])
def test_turn_line_is_rigid_and_keeps_its_middle(kind: str) -> None:
    rng = np.random.default_rng(3)
    mask = np.ones((96, 96), bool)
    spec = defects.sample_defect(rng, mask.shape, mask, types=[kind], severity="high")
    turned = defects.turn_line(spec, 1.0)
    assert _same_orientation(_chord_angle(turned), 1.0, 1e-6)
    assert np.allclose(defects.line_center(turned), defects.line_center(spec))
    key = "branches" if kind == "crack" else "points"
    before = np.concatenate([np.asarray(b, float) for b in
                             (spec.params[key] if kind == "crack" else [spec.params[key]])])
    after = np.concatenate([np.asarray(b, float) for b in
                            (turned.params[key] if kind == "crack" else [turned.params[key]])])
    # rigid: every pairwise distance kept; severity and width unchanged; the input untouched
    dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    assert np.allclose(dist(before), dist(after))
    assert turned.severity == spec.severity and turned.params["width"] == spec.params["width"]
    assert spec.params[key] is not turned.params[key]
    assert (defects.height_field(turned, mask.shape) != 0).any()


def test_turn_line_leaves_other_types_alone() -> None:
    rng = np.random.default_rng(0)
    spec = defects.sample_defect(rng, (64, 64), None, types=["dent"])
    assert defects.turn_line(spec, 0.7) is spec


def _grooved(size: int, angle: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Parallel straight grooves running along ``angle`` (brushing), or concentric ones
    (turning marks) when ``angle`` is None; normals in the camera frame."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    if angle is None:
        coord = np.hypot(xx - c, yy - c)
    else:  # distance across grooves that run along (cos, sin) in (column, row)
        coord = -(xx - c) * math.sin(angle) + (yy - c) * math.cos(angle)
    z = 0.3 * np.sin(2 * np.pi * coord / 8.0)
    mask = np.ones((size, size), bool)
    return normals_from_height(z.astype(np.float32), mask), mask


@pytest.mark.parametrize("angle", [0.0, 0.5, 1.2, 2.6])
def test_grain_direction_of_brushing(angle: float) -> None:
    n, m = _grooved(96, angle)
    got = grain_direction(n, m, 48.0, 48.0)
    assert got is not None and _same_orientation(got, angle, 3.0)


def test_grain_direction_of_turning_marks_is_tangential() -> None:
    n, m = _grooved(128, None)
    c = 63.5
    for x, y in [(100.0, 63.5), (63.5, 20.0), (90.0, 90.0)]:
        tangent = math.atan2(x - c, -(y - c))  # perpendicular to the radius
        got = grain_direction(n, m, x, y)
        assert got is not None and _same_orientation(got, tangent, 5.0), (x, y)


def test_grain_direction_without_structure_or_object() -> None:
    flat = np.zeros((40, 40, 3), np.float32)
    flat[..., 2] = 1.0
    assert grain_direction(flat, np.ones((40, 40), bool), 20.0, 20.0) is None
    assert grain_direction(flat, np.zeros((40, 40), bool), 20.0, 20.0) is None


def test_p_align_is_off_by_default_and_validated() -> None:
    assert create_model("geo-seg").hyperparameters()["p_align"] == 0.0
    with pytest.raises(PsinspectError, match="p_align"):
        create_model("geo-seg", p_align=1.5)


def test_p_align_turns_training_lines_along_the_grain() -> None:
    """With p_align 1 every training line of a brushed map runs along the brushing; the
    examples are otherwise drawn the same way (targets non-empty, shapes as without)."""
    angle = 0.9
    n, m = _grooved(96, angle)
    model = create_model("geo-seg", p_align=1.0, patch=64, max_defects=1, p_clean=0.0,
                         p_generic=0.0)
    seen = []
    orig = defects.turn_line

    def spy(spec: defects.DefectSpec, a: float) -> defects.DefectSpec:
        seen.append(a)
        return orig(spec, a)

    defects.turn_line = spy
    try:
        for seed in range(12):
            ex = model.example_from_map(n, m, np.random.default_rng(seed))
            assert ex["x"].shape[1:] == (64, 64) and ex["y"].shape == (1, 64, 64)
    finally:
        defects.turn_line = orig
    assert seen, "no line defect was drawn in 12 examples"
    assert all(_same_orientation(a, angle, 3.0 + 3 * 5.7) for a in seen)
