"""Normal maps: PNG <-> float codec, validation, angular error.

Frame: the DiLiGenT camera frame, x right, y up, z toward the camera. Image rows grow downward,
so a step down one row is a step of -y. A normal map is ``float32 (H, W, 3)``, unit length inside
the object mask and exactly zero outside it.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from psinspect.errors import PsinspectError
from psinspect.fileio import load_npy

#: tolerance on | |n| - 1 | for a vector to count as unit length
UNIT_TOL = 1e-2


def normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit vectors along the last axis; zero vectors stay zero. ``(..., 3) -> (..., 3)``."""
    v = np.asarray(vectors, dtype=np.float32)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(norm > eps, v / np.maximum(norm, eps), 0.0).astype(np.float32)


def angular_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between corresponding vectors of ``a`` and ``b`` (``(..., 3)`` each)."""
    cos = np.sum(normalize(a) * normalize(b), axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).astype(np.float32)


def encode_png(normals: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """8-bit RGB image of ``(n + 1) / 2``; background (outside ``mask``) is black.

    ``normals``: (H, W, 3) float, DiLiGenT frame. Returns (H, W, 3) uint8, channel order R=x, G=y,
    B=z.
    """
    img = np.clip(np.rint((np.asarray(normals, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if mask is not None:
        img[~mask] = 0
    return img


def decode_png(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_png`: (H, W, 3) uint8 RGB -> (normals float32, mask bool).

    The mask is "not black"; decoded vectors are renormalised (8-bit quantisation leaves them
    about 0.5 degree off unit length).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise PsinspectError(f"normal PNG must be 8-bit RGB, got {image.dtype} {image.shape}")
    mask = image.max(axis=2) > 0
    n = image.astype(np.float32) / 127.5 - 1.0
    n = normalize(n)
    n[~mask] = 0.0
    return n, mask


def validate_normal_map(
    normals: np.ndarray, mask: np.ndarray | None = None, name: str = "normal map"
) -> tuple[np.ndarray, np.ndarray]:
    """Check a normal map and return ``(normals float32 (H, W, 3), mask bool (H, W))``.

    Without a mask, the object is every non-zero vector. Raises :class:`PsinspectError` for a
    wrong shape, NaN/Inf, an empty mask, or vectors inside the mask that are not unit length.
    """
    n = np.asarray(normals)
    if n.ndim != 3 or n.shape[2] != 3:
        raise PsinspectError(f"{name}: expected shape (H, W, 3), got {n.shape}")
    if not np.issubdtype(n.dtype, np.floating):
        raise PsinspectError(f"{name}: expected float values, got dtype {n.dtype}")
    if min(n.shape[:2]) < 1:
        raise PsinspectError(f"{name}: empty image {n.shape}")
    n = n.astype(np.float32, copy=False)
    if mask is None:
        finite = np.isfinite(n).all(axis=2)
        mask = finite & (np.abs(np.where(np.isfinite(n), n, 0)).sum(axis=2) > 0)
        if not finite.all():
            raise PsinspectError(f"{name}: contains NaN or Inf values")
    else:
        mask = np.asarray(mask, bool)
        if mask.shape != n.shape[:2]:
            raise PsinspectError(f"{name}: mask shape {mask.shape} != map shape {n.shape[:2]}")
        if not np.isfinite(n[mask]).all():
            raise PsinspectError(f"{name}: contains NaN or Inf values inside the mask")
    if not mask.any():
        raise PsinspectError(f"{name}: empty mask (no object pixels)")
    lengths = np.linalg.norm(n[mask], axis=1)
    bad = np.abs(lengths - 1.0) > UNIT_TOL
    if bad.any():
        raise PsinspectError(
            f"{name}: {int(bad.sum())} of {bad.size} object pixels are not unit vectors "
            f"(|n| from {lengths.min():.3g} to {lengths.max():.3g})"
        )
    out = np.where(mask[..., None], n / np.maximum(np.linalg.norm(n, axis=2, keepdims=True),
                                                   1e-12), 0.0)
    return out.astype(np.float32), mask


def load_normal_map(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a normal map from ``.npy`` (H, W, 3 float) or an 8-bit normal PNG.

    Returns ``(normals float32 (H, W, 3), mask bool (H, W))``; errors are :class:`PsinspectError`
    naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise PsinspectError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return validate_normal_map(load_npy(path), name=str(path))
    if suffix == ".png":
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise PsinspectError(f"{path}: cannot read image (corrupt or not a PNG)")
        if raw.ndim != 3 or raw.shape[2] != 3 or raw.dtype != np.uint8:
            raise PsinspectError(
                f"{path}: normal PNG must be 8-bit RGB, got {raw.dtype} with shape {raw.shape}"
            )
        n, mask = decode_png(cv2.cvtColor(raw, cv2.COLOR_BGR2RGB))
        return validate_normal_map(n, mask, name=str(path))
    raise PsinspectError(f"{path}: unsupported normal-map format (use .npy or .png)")
