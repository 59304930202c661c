"""Rendered captures: parts, lights, shading, shadows, determinism, capture round trip, and the
vector-field augmentations checked against rendering the transformed object."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from psinspect.defects import angle_deg
from psinspect.normalmap import flip, normals_from_height, rotate, rotate90
from psinspect.render import (
    PART_FAMILIES,
    cast_shadows,
    default_lights,
    make_part,
    render_dataset,
    render_images,
    render_part,
    sphere_height,
)


def _render_normals(height: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """normals_gt of a full render (lights from the DiLiGenT layout)."""
    _, n = render_images(height, np.full(height.shape, 0.6, np.float32), mask,
                         default_lights(6), np.random.default_rng(0), shadows=False)
    return n


def _sphere(size: int, cx: float, cy: float, r: float) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:size, 0:size]
    mask = (cols - cx) ** 2 + (rows - cy) ** 2 < (r - 1) ** 2
    return sphere_height((size, size), (cx, cy), r), mask


@pytest.mark.parametrize("family", PART_FAMILIES)
def test_make_part_family(family: str) -> None:
    part = make_part(np.random.default_rng(1), size=96, family=family)
    assert part.height.shape == (96, 96) and part.height.dtype == np.float32
    assert part.albedo.dtype == np.float32 and part.mask.dtype == bool
    assert 0.1 < part.mask.mean() < 0.9
    assert 0 < part.albedo[part.mask].min() and part.albedo.max() <= 1
    assert np.isfinite(part.height).all()
    json.dumps(part.params)
    assert {"ks", "shininess"} <= set(part.params["material"])


def test_parts_vary_per_instance() -> None:
    a = make_part(np.random.default_rng(1), size=64, family="disc")
    b = make_part(np.random.default_rng(2), size=64, family="disc")
    assert a.params != b.params and not np.array_equal(a.height, b.height)


def test_default_lights() -> None:
    for layout in ("diligent", "ring"):
        for k in (3, 12, 20):
            lights = default_lights(k, layout)
            assert lights.shape == (k, 3) and (lights[:, 2] > 0.5).all()
            assert np.allclose(np.linalg.norm(lights, axis=1), 1, atol=1e-6)
            assert np.linalg.matrix_rank(lights) == 3
    ring = default_lights(8, "ring", slant_deg=30)
    assert np.allclose(np.degrees(np.arccos(ring[:, 2])), 30, atol=1e-4)


def test_lambertian_shading_and_attached_shadow() -> None:
    h = np.zeros((8, 8), np.float32)
    mask = np.ones((8, 8), bool)
    lights = np.array([[0, 0, 1], [0.6, 0, 0.8]], np.float32)
    imgs, n = render_images(h, np.full((8, 8), 0.5, np.float32), mask, lights,
                            np.random.default_rng(0), specular=0, shadows=False, noise=0,
                            shot_noise=0, exposure=1.0)
    assert np.allclose(imgs[0], 0.5) and np.allclose(imgs[1], 0.4)
    assert np.allclose(n[..., 2], 1)
    # a 60-degree slope facing +x is dark under a light from -x (attached shadow)
    rows, cols = np.mgrid[0:8, 0:8]
    slope = (-np.sqrt(3) * cols).astype(np.float32)  # z falls with x: normal tilts to +x
    imgs, _ = render_images(slope, np.full((8, 8), 0.5, np.float32), mask,
                            np.array([[-0.6, 0, 0.8], [0.6, 0, 0.8]], np.float32),
                            np.random.default_rng(0), specular=0, shadows=False, noise=0,
                            shot_noise=0, exposure=1.0)
    assert imgs[0].max() == 0 and imgs[1].min() > 0.4


def test_cast_shadow_falls_away_from_light() -> None:
    h = np.zeros((40, 40), np.float32)
    h[15:25, 18:22] = 10.0  # a wall
    light = np.array([1.0, 0.0, 1.0])  # from +x, 45 degrees
    sh = cast_shadows(h, light)
    assert sh[20, 12:18].all() and not sh[20, 22:].any()  # shadow to the left only
    assert not sh[20, 5]  # 10 px tall wall at 45 degrees: shadow ends ~10 px from it
    up = cast_shadows(h, np.array([0.0, 1.0, 1.0]))  # from +y (image up): shadow below
    assert up[28, 20] and not up[12, 20]


def test_same_seed_same_bytes(tmp_path) -> None:
    a = render_part(np.random.default_rng(5), size=64, family="casting", defects=2)
    b = render_part(np.random.default_rng(5), size=64, family="casting", defects=2)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.defect_mask.tobytes() == b.defect_mask.tobytes()
    p1 = render_dataset(tmp_path / "a", 3, defect_rate=0.5, seed=9, size=48)
    p2 = render_dataset(tmp_path / "b", 3, defect_rate=0.5, seed=9, size=48)
    files = sorted(f.relative_to(tmp_path / "a") for f in (tmp_path / "a").rglob("*")
                   if f.is_file())
    assert len(files) > 3 * 15
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert [p.name for p in p1] == [p.name for p in p2]
    p3 = render_dataset(tmp_path / "c", 1, defect_rate=0.5, seed=10, size=48)
    assert (p3[0] / "001.png").read_bytes() != (p1[0] / "001.png").read_bytes()


def test_render_dataset_capture_round_trip(tmp_path) -> None:
    """Written captures load with capture.load_capture and give back the ground truth by PS."""
    from psinspect.capture import load_capture
    from psinspect.stereo import solve

    paths = render_dataset(tmp_path, 4, defect_rate=0.5, seed=1, size=96, specular=False,
                           shadows=False)
    defective = [p for p in paths if (p / "M_defect.png").is_file()]
    assert defective, "seed 1 gives at least one defective part"
    for p in paths:
        cap = load_capture(p)
        info = json.loads((p / "part.json").read_text())
        assert cap.images.shape == (12, 96, 96) and info["name"] == p.name
        raw = cv2.imread(str(p / "001.png"), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16
        res = solve(cap.images, cap.lights, cap.mask, solver="ls")
        err = angle_deg(res.normals, cap.normals_gt)[cap.mask]
        assert err.mean() < 1.0, (p.name, err.mean())
    for p in defective:
        m = cv2.imread(str(p / "M_defect.png"), cv2.IMREAD_GRAYSCALE) > 0
        recs = json.loads((p / "defects.json").read_text())["defects"]
        assert m.any() and recs and sum(r["area"] for r in recs) >= m.sum() * 0.5


def test_rot90_of_rendered_sphere_equals_rendering_rotated_sphere() -> None:
    size = 64
    h, mask = _sphere(size, 24.0, 30.0, 17.0)
    n = _render_normals(h, mask)
    for k in (1, 2, 3):
        # np.rot90 moves pixel (row, col) -> (W-1-col, row) per quarter turn
        cx, cy = 24.0, 30.0
        for _ in range(k):
            cx, cy = cy, size - 1 - cx
        h2, m2 = _sphere(size, cx, cy, 17.0)
        assert np.array_equal(np.rot90(mask, k), m2)
        expected = _render_normals(h2, m2)
        assert np.abs(rotate90(n, k) - expected).max() < 1e-5, k


def test_flips_of_rendered_sphere_equal_rendering_mirrored_sphere() -> None:
    size = 64
    h, mask = _sphere(size, 24.0, 30.0, 17.0)
    n = _render_normals(h, mask)
    h_lr, m_lr = _sphere(size, size - 1 - 24.0, 30.0, 17.0)
    assert np.abs(flip(n, "lr") - _render_normals(h_lr, m_lr)).max() < 1e-5
    h_ud, m_ud = _sphere(size, 24.0, size - 1 - 30.0, 17.0)
    assert np.abs(flip(n, "ud") - _render_normals(h_ud, m_ud)).max() < 1e-5
    # and a plain pixel flip (vectors not turned) is wrong
    assert np.abs(n[:, ::-1] - _render_normals(h_lr, m_lr)).max() > 0.5


def test_rotation_by_angle_of_rendered_ellipsoid() -> None:
    """Rotate the normal map of an off-centre ellipsoid by 30 degrees (bilinear) and compare with
    rendering the ellipsoid rotated about the image centre."""
    size = 96
    c = (size - 1) / 2
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)

    def ellipsoid(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
        t = np.radians(angle_deg)
        # centre (col 60, row 40) rotated counter-clockwise on screen about the image centre
        dx, dy = 60 - c, -(40 - c)  # y up
        ex, ey = c + dx * np.cos(t) - dy * np.sin(t), c - (dx * np.sin(t) + dy * np.cos(t))
        x, y = cols - ex, -(rows - ey)
        u = x * np.cos(t) + y * np.sin(t)  # body axes
        v = -x * np.sin(t) + y * np.cos(t)
        r2 = (u / 22) ** 2 + (v / 12) ** 2
        return (10 * np.sqrt(np.clip(1 - r2, 0, None))).astype(np.float32), r2 < 0.97

    h0, m0 = ellipsoid(0)
    h1, m1 = ellipsoid(30)
    rotated, rmask = rotate(_render_normals(h0, m0), 30, mask=m0, expand=False)
    expected = _render_normals(h1, m1)
    inner = cv2.erode(m1.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & rmask
    err = angle_deg(rotated, expected)[inner]
    assert inner.sum() > 300 and err.mean() < 0.5, err.mean()
    # without turning the vectors the error would be large
    unturned, _ = rotate(_render_normals(h0, m0), 30, mask=m0, expand=False)
    unturned = unturned.copy()
    t = np.radians(-30)
    x, y = unturned[..., 0].copy(), unturned[..., 1].copy()
    unturned[..., 0] = np.cos(t) * x - np.sin(t) * y
    unturned[..., 1] = np.sin(t) * x + np.cos(t) * y
    assert angle_deg(unturned, expected)[inner].mean() > 5


def test_normals_gt_are_height_normals() -> None:
    part = make_part(np.random.default_rng(0), size=64, family="plate")
    _, n = render_images(part.height, part.albedo, part.mask, default_lights(4),
                         np.random.default_rng(0))
    assert np.array_equal(n, normals_from_height(part.height, part.mask))


def test_cli_render(tmp_path) -> None:
    from typer.testing import CliRunner

    from psinspect.cli import app, register_commands

    register_commands()
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["render", "-o", str(out), "--parts", "3", "--size", "48",
                                   "--defect-rate", "1", "--lights", "8", "--layout", "ring",
                                   "--seed", "2"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "render.json").read_text())
    assert len(info["captures"]) == 3 and len(info["defective"]) == 3
    for name in info["captures"]:
        folder = out / name
        assert len(list(folder.glob("0*.png"))) == 8
        assert (folder / "M_defect.png").is_file() and (folder / "defects.json").is_file()
        assert json.loads((folder / "part.json").read_text())["render"]["layout"] == "ring"
    again = CliRunner().invoke(app, ["render", "-o", str(out), "--parts", "1"])
    assert again.exit_code != 0  # non-empty output folder without --force
