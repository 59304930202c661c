"""Training-free anomaly model: deviation of each normal from a robust local linear fit.

Frame: DiLiGenT camera frame (x right, y up, z toward the camera); normal maps are
``float32 (H, W, 3)``, unit inside the mask, zero outside.

At each scale ``sigma`` (pixels), every normal component is fitted, around every pixel, by a
Gaussian-weighted first-order polynomial in the image coordinates using only object pixels
(masked local linear regression, "normalized convolution" with a linear basis). Unlike a plain
masked blur, the linear term removes the bias at object boundaries and on curved surfaces. The
fit is made robust by iteratively reweighted least squares (Welsch weights on the angular
residual), so that a defect does not pull its own reference towards itself. The fitted field,
renormalised, is the "smoothed surface" reference; the per-pixel score is the angle (degrees)
between the normal and the reference, lightly smoothed, maximised over scales.

All filtering is separable (OpenCV), so one 256 x 256 map at three scales takes a few ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from psinspect.checks import integer, number, numbers_list
from psinspect.models import AnomalyModel, ScoreResult, register, score_in_window
from psinspect.normalmap import unit_angle_deg

#: the largest scale (px, a Gaussian's sigma) of a fit a hyperparameter may set (``scales``,
#: geo-seg's ``geo_scales``): its kernels reach 3 sigma, and the models learnt parts of a few
#: hundred px
MAX_SCALE_PX = 256.0
#: the largest score smoothing (px, sigma) a hyperparameter may set (``smooth``)
MAX_SMOOTH_PX = 64.0


def normalize(v: np.ndarray) -> np.ndarray:
    """Fast unit vectors along the last axis (zero stays zero); float32 in, float32 out. The
    models' form of :func:`psinspect.normalmap.normalize` (a reciprocal square root instead of a
    division: faster on the hot path; the last bits differ, and the bundled model's thresholds
    were calibrated with this one)."""
    n2 = np.einsum("...i,...i->...", v, v)
    inv = np.where(n2 > 1e-24, 1.0 / np.sqrt(np.maximum(n2, 1e-24)), 0.0).astype(np.float32)
    return v * inv[..., None]


def _kernels(sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D Gaussian g(u), g(u) u, g(u) u^2 (u in pixels), as float32 columns."""
    r = max(1, int(np.ceil(3.0 * sigma)))
    u = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (u / sigma) ** 2)
    g /= g.sum()
    return (
        g.astype(np.float32),
        (g * u / sigma).astype(np.float32),
        (g * (u / sigma) ** 2).astype(np.float32),
    )


def _sep(img: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """Correlation with the separable kernel kx(u_x) ky(u_y); zero padding (outside = no data)."""
    return cv2.sepFilter2D(img, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_CONSTANT)


def local_linear_fit(
    normals: np.ndarray, weights: np.ndarray, sigma: float, ridge: float = 1e-3
) -> np.ndarray:
    """Weighted local linear regression of a vector field; returns the fitted value per pixel.

    normals: (H, W, C) float32; weights: (H, W) float32 >= 0 (0 outside the object).
    Returns (H, W, C) float32: the intercept of the fit centred at each pixel (not normalised).
    Coordinates are measured in units of ``sigma``; ``ridge`` damps the slope terms where the
    support is degenerate (thin structures).
    """
    g, gu, guu = _kernels(sigma)
    w = weights.astype(np.float32)
    a00 = _sep(w, g, g)
    a10 = _sep(w, gu, g)
    a01 = _sep(w, g, gu)
    a20 = _sep(w, guu, g)
    a11 = _sep(w, gu, gu)
    a02 = _sep(w, g, guu)
    h, wd, c = normals.shape
    eps = np.float32(1e-8)
    lam = ridge * a00 + eps
    # A = [[a00, a10, a01], [a10, a20+lam, a11], [a01, a11, a02+lam]]; we need row 0 of A^-1
    m11 = a20 + lam
    m22 = a02 + lam
    c00 = m11 * m22 - a11 * a11
    c01 = -(a10 * m22 - a11 * a01)
    c02 = a10 * a11 - m11 * a01
    det = a00 * c00 + a10 * c01 + a01 * c02
    det = np.where(np.abs(det) > eps * np.maximum(a00, eps) ** 3, det, np.inf)
    out = np.empty((h, wd, c), np.float32)
    for k in range(c):
        wn = w * normals[..., k]
        b0 = _sep(wn, g, g)
        b1 = _sep(wn, gu, g)
        b2 = _sep(wn, g, gu)
        fit = (c00 * b0 + c01 * b1 + c02 * b2) / det
        # where the system is singular fall back to the plain weighted mean
        mean = b0 / np.maximum(a00, eps)
        out[..., k] = np.where(np.isfinite(det), fit, mean)
    return out


def _pyramid_factor(sigma: float, min_sigma: float = 2.0) -> int:
    """Largest power of two f with sigma / f >= min_sigma (coarse scales are fitted downsampled)."""
    f = 1
    while sigma / (2 * f) >= min_sigma:
        f *= 2
    return f


def _fit(normals: np.ndarray, w: np.ndarray, sigma: float, factor: int) -> np.ndarray:
    """Unit reference field from a local linear fit, done at 1/``factor`` resolution if > 1."""
    if factor == 1:
        return normalize(local_linear_fit(normals, w, sigma))
    h, wd = w.shape
    size = (max(1, -(-wd // factor)), max(1, -(-h // factor)))
    w_lo = cv2.resize(w, size, interpolation=cv2.INTER_AREA)
    wn_lo = cv2.resize(normals * w[..., None], size, interpolation=cv2.INTER_AREA)
    n_lo = wn_lo / np.maximum(w_lo, 1e-6)[..., None]
    fit_lo = local_linear_fit(n_lo.astype(np.float32), w_lo, sigma / factor)
    return normalize(cv2.resize(fit_lo, (wd, h), interpolation=cv2.INTER_LINEAR))


def robust_reference(
    normals: np.ndarray,
    mask: np.ndarray,
    sigma: float,
    iterations: int = 2,
    welsch_deg: float = 4.0,
    confidence: np.ndarray | None = None,
) -> np.ndarray:
    """Robustly smoothed normal field at one scale: (H, W, 3) float32 unit inside ``mask``.

    IRLS: fit, compute the angular residual r (degrees), reweight every pixel by
    ``exp(-(r / c)^2 / 2)`` with ``c = max(welsch_deg, 3 * median(r))``, refit. Scales above
    4 px are fitted on a 2x/4x/... downsampled (area-averaged) field and upsampled, which keeps
    the cost nearly independent of the scale. ``confidence`` (H, W) in [0, 1] multiplies the
    weights.
    """
    m = mask.astype(np.float32)
    base = m if confidence is None else m * np.clip(confidence, 0.0, 1.0).astype(np.float32)
    factor = _pyramid_factor(sigma)
    ref = _fit(normals, base, sigma, factor)
    for _ in range(iterations):
        r = unit_angle_deg(normals, ref)
        med = float(np.median(r[mask])) if mask.any() else 0.0
        scale = max(welsch_deg, 3.0 * med)
        w = base * np.exp(-0.5 * (r / scale) ** 2).astype(np.float32)
        ref = _fit(normals, w, sigma, factor)
    ref[~mask] = 0.0
    return ref


def masked_blur(values: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (H, W) ``values`` using object pixels only (normalized convolution)."""
    if sigma <= 0:
        return np.where(mask, values, 0.0).astype(np.float32)
    g, _, _ = _kernels(sigma)
    m = mask.astype(np.float32)
    num = _sep(np.where(mask, values, 0.0).astype(np.float32), g, g)
    den = _sep(m, g, g)
    return np.where(mask, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


def residual_features(
    normals: np.ndarray,
    mask: np.ndarray,
    scales: Sequence[float],
    iterations: int = 2,
    confidence: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """References and angular residuals (degrees) at each scale: ``(refs, residuals)``.

    refs: list of (H, W, 3) float32 unit fields; residuals: list of (H, W) float32, 0 outside.
    """
    refs, res = [], []
    for s in scales:
        ref = robust_reference(normals, mask, float(s), iterations, confidence=confidence)
        r = unit_angle_deg(normals, ref)
        r[~mask] = 0.0
        refs.append(ref)
        res.append(r)
    return refs, res


def line_kernel(angle_deg: float, along_px: float, across_px: float,
                truncate: float = 3.0) -> np.ndarray:
    """Normalised anisotropic Gaussian kernel (2r+1, 2r+1) float32, elongated along image angle
    ``angle_deg`` (counter-clockwise from +column as seen, i.e. the camera-frame direction
    ``(cos t, sin t)`` with y up; rows grow downward), truncated at
    ``r = ceil(truncate * max(along_px, across_px))``: an oriented line filter."""
    r = max(1, int(np.ceil(truncate * max(along_px, across_px))))
    v, u = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)  # row, column offsets
    t = np.radians(angle_deg)
    a = u * np.cos(t) - v * np.sin(t)  # along the line
    b = u * np.sin(t) + v * np.cos(t)  # across
    k = np.exp(-0.5 * ((a / along_px) ** 2 + (b / across_px) ** 2))
    return (k / k.sum()).astype(np.float32)


@register
class GeometricModel(AnomalyModel):
    """Training-free: max over scales of the angle to a robust local linear fit (degrees)."""

    name = "geometric"
    trainable = False
    #: scored whole in the object's window (:func:`psinspect.models.score_in_window`) up to
    #: this bounding-box area, in tiles beyond (:func:`psinspect.detect.score_map`): its coarse
    #: fits run on a downsampled grid, and its reference level is a median over its input, so
    #: scored on the whole map or in 768 px tiles the same part scored differently with more
    #: background around it or in another tiling (up to ~1 deg, verdicts flipped)
    max_whole_pixels = 4096 * 4096
    #: background kept around the object's bounding box (px): beyond its fits' reach
    object_margin = 32

    def __init__(
        self,
        scales: Sequence[float] = (2.0, 4.0, 8.0),
        iterations: int = 2,
        smooth: float = 1.0,
    ) -> None:
        self.scales = numbers_list("scales", scales, 0.0, MAX_SCALE_PX, above=True)
        self.iterations = integer("iterations", iterations, 0, 20)
        self.smooth = number("smooth", smooth, 0.0, MAX_SMOOTH_PX)

    def hyperparameters(self) -> dict[str, Any]:
        return {"scales": self.scales, "iterations": self.iterations, "smooth": self.smooth}

    def score(
        self, normals: np.ndarray, mask: np.ndarray, confidence: np.ndarray | None = None
    ) -> ScoreResult:
        """normals (H, W, 3) float32 camera frame, mask (H, W) bool -> score in degrees."""
        return score_in_window(self._score_window, normals, mask, confidence,
                               self.object_margin)

    def _score_window(self, normals: np.ndarray, mask: np.ndarray,
                      confidence: np.ndarray | None) -> ScoreResult:
        mask = np.asarray(mask, bool)
        n = np.where(mask[..., None], normals, 0.0).astype(np.float32)
        refs, res = residual_features(n, mask, self.scales, self.iterations, confidence)
        score = np.max([masked_blur(r, mask, self.smooth) for r in res], axis=0)
        return ScoreResult(score=score.astype(np.float32), reference=refs[0])
