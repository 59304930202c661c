"""A small analytic test part that can be posed in-plane (for the align and variation tests).

Frame: DiLiGenT camera frame (x right, y up, z toward the camera); rows grow downward.
"""

from __future__ import annotations

import math

import numpy as np


def posed_part(
    shape_hw: tuple[int, int] = (96, 112),
    angle_deg: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    dent: tuple[float, float, float, float] | None = None,
    noise_deg: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normal map (H, W, 3) float32 and mask (H, W) bool of an asymmetric part.

    The part is turned by ``angle_deg`` counter-clockwise on screen about the image centre and
    then shifted by ``shift = (dx cols, dy rows)``; the height field is evaluated analytically in
    the part's own coordinates, so the normals are those of the posed part (not a resampled map).
    ``dent = (col, row, radius_px, depth_px)`` in the part's own (unposed) coordinates adds a
    Gaussian dent. ``noise_deg`` adds random tilt of about that many degrees per pixel.
    """
    h, w = shape_hw
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    # pixel -> part coordinates: inverse of "rotate by angle (cv2 sense) about centre, then shift"
    u0, v0 = cols - cx - shift[0], rows - cy - shift[1]
    # cv2 rotation matrix [[c, s], [-s, c]] maps part -> image; its inverse is the transpose
    u = c * u0 - s * v0
    v = s * u0 + c * v0

    def height(uu: np.ndarray, vv: np.ndarray) -> np.ndarray:
        z = 14.0 * np.exp(-((uu + 12) ** 2 + (vv - 6) ** 2) / (2 * 13.0**2))
        z += 8.0 * np.exp(-((uu - 20) ** 2 / (2 * 6.0**2) + (vv + 10) ** 2 / (2 * 15.0**2)))
        z += 2.5 * np.sin(uu / 5.0) * np.exp(-(vv - 18) ** 2 / (2 * 5.0**2))
        if dent is not None:
            du, dv = dent[0] - cx, dent[1] - cy
            z -= dent[3] * np.exp(-((uu - du) ** 2 + (vv - dv) ** 2) / (2 * dent[2] ** 2))
        return z

    eps = 1e-3
    # gradient in part coordinates, then chain rule back to image coordinates
    hu = (height(u + eps, v) - height(u - eps, v)) / (2 * eps)
    hv = (height(u, v + eps) - height(u, v - eps)) / (2 * eps)
    # du/dcol = c, du/drow = -s, dv/dcol = s, dv/drow = c (see the inverse map above)
    h_col = hu * c + hv * s
    h_row = hu * (-s) + hv * c
    # camera frame: x = col, y = -row  ->  n ~ (-dh/dx, -dh/dy, 1) = (-h_col, +h_row, 1)
    n = np.stack([-h_col, h_row, np.ones_like(h_col)], axis=-1)
    if noise_deg > 0:
        assert rng is not None
        n[..., :2] += rng.normal(0.0, math.radians(noise_deg) / math.sqrt(2), n.shape[:2] + (2,))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    mask = (np.abs(u / 44.0) ** 4 + np.abs(v / 36.0) ** 4 <= 1.0) & ~(
        (u > 18) & (v < -14)  # a notch: makes the silhouette asymmetric
    )
    n[~mask] = 0.0
    return n.astype(np.float32), mask


def toothed_part(angle_deg: float, shape_hw: tuple[int, int] = (96, 112)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A dome with 20 teeth (one every 18 deg) turned by ``angle_deg`` about the image centre:
    normal map (H, W, 3) float32 and mask (H, W) bool. Its nz image repeats every 9 deg (a
    flank sloping one way and one sloping the other have the same nz)."""
    from psinspect.normalmap import normals_from_height

    h, w = shape_hw
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    y, x = rows - (h - 1) / 2.0, cols - (w - 1) / 2.0
    r = np.hypot(x, y)
    th = np.arctan2(y, x) - np.radians(angle_deg)
    z = 10.0 * np.exp(-r**2 / 800.0) + 6.0 * np.cos(20 * th) * np.exp(-(r - 28) ** 2 / 128.0)
    m = r < 40
    return normals_from_height(z.astype(np.float32), m), m
