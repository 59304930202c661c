"""Relight real multi-light images with the change of shading that a surface defect causes.

For a real capture (e.g. DiLiGenT) there is no renderer of the real object, but a defect changes
the Lambertian shading by ``albedo * (max(n' . l, 0) - max(n . l, 0))`` for each light ``l``; adding
that change to the real image keeps everything else that is real (specularities, inter-reflections,
noise, cast shadows elsewhere), so the defect then goes through photometric stereo like a real one:

    I'_k = I_k + albedo * intensity_k * (max(n' . l_k, 0) - max(n . l_k, 0)),   clipped at 0.

``n`` are the clean normals (ground truth, or PS on the clean capture), ``n'`` the defective ones
(:func:`psinspect.defects.apply_height` / :func:`psinspect.defects.implant_defects`), ``albedo``
from PS on the clean capture. Frames: lights and normals in the DiLiGenT camera frame, x right,
y up, z toward the camera; image rows grow downward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from psinspect.defects import implant_defects
from psinspect.errors import PsinspectError


def shading_change(
    lights: np.ndarray, normals: np.ndarray, normals_defect: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """``max(n' . l, 0) - max(n . l, 0)`` per light: (K, H, W) float32, zero outside ``mask``.

    ``lights``: (K, 3) unit; ``normals``, ``normals_defect``: (H, W, 3); ``mask``: (H, W) bool.
    """
    lights = np.asarray(lights, np.float32)
    m = np.asarray(mask, bool)
    out = np.zeros((lights.shape[0],) + m.shape, np.float32)
    n = np.asarray(normals, np.float32)[m]
    nd = np.asarray(normals_defect, np.float32)[m]
    out[:, m] = np.maximum(lights @ nd.T, 0.0) - np.maximum(lights @ n.T, 0.0)
    return out


def relight(
    images: np.ndarray,
    lights: np.ndarray,
    mask: np.ndarray,
    normals: np.ndarray,
    normals_defect: np.ndarray,
    albedo: np.ndarray,
    intensities: np.ndarray | None = None,
) -> np.ndarray:
    """Images of the defective surface from images of the clean one.

    Args:
        images: (K, H, W) or (K, H, W, C) float linear radiance of the clean surface.
        lights: (K, 3) unit light directions.
        mask: (H, W) bool object mask; pixels outside it are returned unchanged.
        normals, normals_defect: (H, W, 3) clean and defective unit normals.
        albedo: (H, W) or (H, W, C) albedo in the units of ``images / intensities``.
        intensities: None when ``images`` are already divided by the light intensities, else
            (K,) or (K, C) per-light intensities.

    Returns the relit images, float32, same shape as ``images``, clipped at 0.
    """
    img = np.asarray(images, np.float32)
    k = img.shape[0]
    if img.ndim not in (3, 4) or np.asarray(lights).shape != (k, 3):
        raise PsinspectError(
            f"relight: images {img.shape} and lights {np.asarray(lights).shape} do not match "
            "((K, H, W[, C]) and (K, 3))"
        )
    if img.shape[1:3] != np.asarray(mask).shape or np.asarray(normals).shape[:2] != img.shape[1:3]:
        raise PsinspectError(f"relight: images {img.shape[1:3]}, mask {np.asarray(mask).shape} "
                             f"and normals {np.asarray(normals).shape[:2]} must share (H, W)")
    delta = shading_change(lights, normals, normals_defect, mask)  # (K, H, W)
    alb = np.asarray(albedo, np.float32)
    if img.ndim == 4:
        delta = delta[..., None]
        if alb.ndim == 2:
            alb = alb[..., None]
    scale = alb[None]
    if intensities is not None:
        inten = np.asarray(intensities, np.float32)
        if inten.ndim == 1:  # (K,): one intensity per light
            inten = inten.reshape((k,) + (1,) * (img.ndim - 1))
        else:  # (K, C): per light and channel
            inten = inten.reshape(k, 1, 1, -1)
        scale = scale * inten
    return np.maximum(img + scale * delta, 0.0).astype(np.float32)


def relight_defects(
    images: np.ndarray,
    lights: np.ndarray,
    mask: np.ndarray,
    normals: np.ndarray,
    albedo: np.ndarray,
    rng: np.random.Generator,
    *,
    count: int = 1,
    types: Sequence[str] | None = None,
    severity: float | tuple[float, float] | str | None = None,
    min_angle: float = 2.0,
    intensities: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Implant ``count`` random library defects into real images by relighting.

    The defects are drawn by :func:`psinspect.defects.implant_defects` on ``normals`` (H, W, 3);
    other arguments as in :func:`relight`. Returns ``(images', gt (H, W) bool, records)``, where
    ``gt`` marks the object pixels whose normal turned by more than ``min_angle`` degrees.
    """
    normals_defect, gt, records = implant_defects(
        normals, mask, rng, count=count, types=types, severity=severity, min_angle=min_angle
    )
    out = relight(images, lights, mask, normals, normals_defect, albedo, intensities)
    return out, gt, records
