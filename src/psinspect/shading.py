"""Shading residuals: a capture's images against the images of good captures of the same part.

Photometric stereo turns each capture into normals on its own, and two captures of one part
through different lights disagree where the surface is not Lambertian (highlights, cast shadows,
inter-reflection): PS fits each capture's non-Lambertian light separately. Comparing IMAGES
instead keeps all of that on both sides of the comparison. A *light field* holds the good
captures' images, registered into the template's frame, as samples of the radiance of every
template pixel as a function of the light direction. For a test capture it predicts the image
under each of the capture's lights, and the residual (observed minus predicted) is explained by
a change of the normal: under the Lambertian law a tilt ``dn`` of a pixel with albedo ``rho``
changes its radiance under light ``l`` by ``rho * l . dn``, which is how a dent, scratch or
crack changes the images. ``dn`` is fitted per pixel by robust least squares over the lit
lights (Tukey's biweight on the residuals, started from ``dn = 0``: a light whose prediction
fails, e.g. across a cast-shadow edge, is an outlier, not a defect) and kept perpendicular to
the template normal.

Prediction: the ``neighbours`` samples nearest to the light are combined per pixel by a local
linear fit in the light's (x, y), weighted by ``1 / (angle + 2 deg)``; what is interpolated is
the non-Lambertian part ``I - rho max(mu . l, 0)`` (``mu`` the template normal, ``rho`` the
template albedo, the least-squares fit of the samples), so the Lambertian part is exact at any
light. With a fixed rig a new capture's lights are (nearly) the training captures' own, and the
prediction is essentially the mean of the good captures' images under that light.

Frames: images ``(K, H, W)`` float32 linear radiance divided by the light intensities; lights
``(K, 3)`` unit, DiLiGenT camera frame (x right, y up, z toward the camera); a light field is in
the reference frame of its template (lights turned with the part: :func:`psinspect.align`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from psinspect.align import matrix_angle, warp_image, warp_stack
from psinspect.normalmap import rotate_vectors
from psinspect.stereo import batched_wls

#: lights whose cosine with the template normal is below this are not used for ``dn``
MIN_COS = 0.1
#: ridge on the slope terms of the local linear light interpolation (light (x, y) units^2)
SLOPE_RIDGE = 0.05


def azimuth_halves(lights: np.ndarray, splits: int) -> list[np.ndarray]:
    """``splits`` interleaved halvings of a light set: the lights are ordered by azimuth and
    split ``p`` puts the light of rank ``r`` into half ``(r // 2**p) % 2 == 0`` (True), so every
    half surrounds the part. Returns (K,) bool arrays."""
    lights = np.asarray(lights, np.float64)
    rank = np.empty(len(lights), int)
    rank[np.argsort(np.arctan2(lights[:, 1], lights[:, 0]), kind="stable")] = np.arange(
        len(lights))
    return [(rank // 2**p) % 2 == 0 for p in range(splits)]


@dataclass
class LightField:
    """Radiance samples of a template's pixels, in the template's frame.

    lights: (N, 3) float32 unit light directions (reference frame).
    residual: (N, P) float16: each sample's image minus ``albedo * max(mean . l, 0)`` at the
        P template pixels (``mask`` pixels in row-major order); half precision (1e-3 relative,
        below camera noise): about 20 MB for 8 captures x 24 lights of a 300 x 300 part.
    albedo: (P,) float32 template albedo (least squares over the samples).
    mask: (H, W) bool template mask.
    mean: (P, 3) float32 template normals at the same pixels.
    source: (N,) int32, the capture each sample came from (for leave-one-capture-out
        predictions), or None (a loaded model).
    """

    lights: np.ndarray
    residual: np.ndarray
    albedo: np.ndarray
    mask: np.ndarray
    mean: np.ndarray
    source: np.ndarray | None = None

    def albedo_image(self) -> np.ndarray:
        """(H, W) float32 albedo, zero outside the template."""
        out = np.zeros(self.mask.shape, np.float32)
        out[self.mask] = self.albedo
        return out

    def predict(self, lights: np.ndarray, neighbours: int, skip: int | None = None
                ) -> np.ndarray:
        """Predicted images (T, H, W) float32 under ``lights`` (T, 3) in the reference frame
        (zero outside the template); see the module docstring. ``skip``: leave out the samples
        of that capture (``source``)."""
        lights = np.asarray(lights, np.float64)
        out = np.zeros((len(lights),) + self.mask.shape, np.float32)
        samples = self.lights.astype(np.float64)
        keep = np.ones(len(samples), bool)
        if skip is not None:
            if self.source is None:
                raise ValueError("this light field does not know its samples' captures")
            keep = self.source != skip
        k = min(int(neighbours), int(keep.sum()))
        if k == 0:
            raise ValueError("no light-field samples to predict from")
        for j, lt in enumerate(lights):
            ang = np.degrees(np.arccos(np.clip(samples @ lt, -1.0, 1.0)))
            near = np.argsort(np.where(keep, ang, np.inf), kind="stable")[:k]
            x = np.c_[np.ones(k), samples[near, :2] - lt[:2]]
            w = 1.0 / (ang[near] + 2.0)
            a = x.T @ (w[:, None] * x) + np.diag([1e-9, SLOPE_RIDGE, SLOPE_RIDGE])
            coef = np.linalg.solve(a, x.T * w)[0].astype(np.float32)  # (k,)
            lamb = self.albedo * np.maximum(self.mean @ lt.astype(np.float32), 0.0)
            out[j][self.mask] = coef @ self.residual[near].astype(np.float32) + lamb
        return out


@dataclass
class Samples:
    """One capture's images moved into the reference frame: ``lights`` (K, 3) float32 turned
    with the part, ``values`` (K, P) float32 at the template pixels, ``valid`` (P,) bool (the
    pixel came from inside the capture's image)."""

    lights: np.ndarray
    values: np.ndarray
    valid: np.ndarray


def warp_samples(images: np.ndarray, lights: np.ndarray, matrix: np.ndarray,
                 mask: np.ndarray) -> Samples:
    """A capture's ``images`` (K, H, W) and ``lights`` (K, 3), in its own frame, moved into the
    reference frame with the (2, 3) pixel ``matrix`` (its registration); ``mask``: the
    template (H, W)."""
    shape = mask.shape
    values = warp_stack(images, matrix, shape)[:, mask]
    valid = (warp_image(np.ones(images.shape[1:], np.float32), matrix, shape) > 0.999)[mask]
    turned = rotate_vectors(np.asarray(lights, np.float32), matrix_angle(matrix))
    return Samples(turned, np.ascontiguousarray(values), valid)


def build_light_field(samples: Sequence[Samples], mean: np.ndarray, mask: np.ndarray
                      ) -> LightField:
    """A light field from good captures' :class:`Samples` and the template (``mean`` (H, W, 3),
    ``mask`` (H, W)); pixels a capture did not cover count as missing in its samples."""
    pix = mean[mask].astype(np.float32)
    lts = np.concatenate([s.lights for s in samples]).astype(np.float32)
    img = np.concatenate([np.where(s.valid, s.values, 0.0) for s in samples])
    have = np.concatenate([np.broadcast_to(s.valid, s.values.shape) for s in samples])
    source = np.concatenate([np.full(len(s.lights), i, np.int32)
                             for i, s in enumerate(samples)])
    shade = np.maximum(lts @ pix.T, 0.0)  # (N, P)
    albedo = (img * shade * have).sum(0) / np.maximum((shade**2 * have).sum(0), 1e-6)
    residual = np.where(have, img - albedo * shade, 0.0)
    return LightField(lts, residual.astype(np.float16), albedo.astype(np.float32),
                      np.asarray(mask, bool), pix, source)


def _row_median(x: np.ndarray) -> np.ndarray:
    """Median of each row of ``x`` (N, T) as (N, 1); as ``np.median(x, axis=1)``, faster for
    short rows (a sort)."""
    t = x.shape[1]
    srt = np.sort(x, axis=1)
    return 0.5 * (srt[:, (t - 1) // 2:(t - 1) // 2 + 1] + srt[:, t // 2:t // 2 + 1])


def shading_deviation(
    images: np.ndarray, lights: np.ndarray, predicted: np.ndarray, mean: np.ndarray,
    albedo: np.ndarray, mask: np.ndarray, cutoff: float = 2.0, iterations: int = 4,
) -> np.ndarray:
    """The normal change ``dn`` (H, W, 3) float32 that explains ``images - predicted``.

    ``images``, ``predicted``: (T, H, W); ``lights``: (T, 3) (the frame of the images);
    ``mean``: (H, W, 3) template normals and ``albedo`` (H, W), both in the images' frame;
    ``mask``: pixels to solve. Per pixel, robust least squares ``r_j = albedo * l_j . dn`` over
    the lights with ``mean . l_j > MIN_COS`` (Tukey's biweight with cut-off ``cutoff`` times the
    residuals' median absolute deviation, plus 1 % of the albedo; started from ``dn = 0``),
    then projected perpendicular to ``mean``. For small tilts ``|dn|`` is the angle in radians.
    Zero outside ``mask``.
    """
    t = len(images)
    obs = (images.reshape(t, -1)[:, mask.ravel()] - predicted.reshape(t, -1)[:, mask.ravel()])
    resid = obs.T.astype(np.float32)  # (P, T)
    mu = mean[mask].astype(np.float32)
    rho = albedo[mask].astype(np.float32)
    lts = np.asarray(lights, np.float32)
    lit = ((mu @ lts.T) > MIN_COS).astype(np.float32)
    g = np.zeros((len(mu), 3), np.float32)
    wts = lit
    for it in range(iterations + 1):
        if it > 0:
            g = batched_wls(resid, lts, wts).astype(np.float32)
        err = resid - g @ lts.T
        scale = 1.4826 * _row_median(np.abs(err)) + 0.01 * rho[:, None]
        u = err / (cutoff * scale)
        wts = lit * np.clip(1.0 - u * u, 0.0, None) ** 2
    dn = g / np.maximum(rho, 1e-3)[:, None]
    dn -= np.sum(dn * mu, axis=1, keepdims=True) * mu
    out = np.zeros(mask.shape + (3,), np.float32)
    out[mask] = dn
    return out
