"""Variation model: a per-pixel template of one part type learned from a few good captures.

Frame: DiLiGenT camera frame (x right, y up, z toward the camera); normal maps are
``float32 (H, W, 3)``, unit inside the mask, zero outside.

Training (:meth:`VariationModel.fit`) registers every good map to the first one
(:mod:`psinspect.align`: in-plane shift + rotation, normal vectors turned with the image), then
re-registers all of them to the mean of that first pass, and learns per pixel

* the mean direction ``mu`` (normalised mean of the aligned normals, i.e. the von Mises-Fisher
  mean direction), and
* the angular spread ``sigma`` (root mean square angle to ``mu``, corrected for the few samples
  and for the test map not being part of the mean, smoothed spatially so that 8 samples give a
  stable estimate, with a floor ``spread_floor_deg`` so that perfectly still pixels do not
  explode; ``1 / sigma^2`` is the vMF concentration in the small-angle limit).

Scoring (:meth:`VariationModel.score`) registers the test map to the template and moves the
template (``mu`` with its vectors turned, ``sigma``) into the frame of the test map; this is the
same comparison as warping the test map into the reference frame and the score back, but it never
resamples the test map, so a one-pixel scratch stays one pixel wide and the score is pixel-aligned
with the input. Per pixel the score is ``angle(n, mu) / sigma`` (a z-score: clean pixels are about
1), averaged over a Gaussian of ``smooth_px`` (the scale of the smallest defect), times the PS
confidence weight ``min(1, confidence / min_confidence)``. Object pixels more than
``edge_tolerance_px`` outside the template (extra material) score at least ``outside_score``.

Supported poses: shifts up to ``max_shift_px`` and rotations up to ``max_rotation_deg`` relative
to the first training capture; other poses and failed registrations raise
:class:`PsinspectError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from psinspect.align import (
    DEFAULT_MAX_ROTATION_DEG,
    DEFAULT_MAX_SHIFT_PX,
    DEFAULT_MIN_CORRELATION,
    Registration,
    RigidTransform,
    register,
    registration_image,
    warp_image,
    warp_normals,
)
from psinspect.errors import PsinspectError
from psinspect.models import AnomalyModel, NormalSample, ScoreResult
from psinspect.models import register as register_model
from psinspect.normalmap import normalize, validate_normal_map

#: fewest good captures the model accepts
MIN_TRAIN = 5


def _masked_gaussian(values: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian average of ``values`` (H, W) over ``mask`` only (normalised convolution)."""
    if sigma <= 0:
        return np.where(mask, values, 0.0).astype(np.float32)
    m = mask.astype(np.float32)
    num = cv2.GaussianBlur(np.where(mask, values, 0.0).astype(np.float32), (0, 0), sigma)
    den = cv2.GaussianBlur(m, (0, 0), sigma)
    return np.where(mask, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cos)).astype(np.float32)


@register_model
class VariationModel(AnomalyModel):
    """Per-pixel mean direction and angular spread of one part type, with registration.

    Hyperparameters (all JSON-able, see :meth:`hyperparameters`):

    spread_floor_deg: floor on the angular spread, degrees (added in quadrature).
    spread_smooth_px: Gaussian sigma, pixels, over which the per-pixel variance is pooled.
    smooth_px: Gaussian sigma, pixels, of the score smoothing (scale of the smallest defect).
    max_shift_px, max_rotation_deg: supported pose range relative to the reference.
    min_correlation: registrations below this correlation coefficient are refused.
    min_confidence: PS confidence below which a pixel is unreliable and its score down-weighted.
    edge_tolerance_px: object pixels up to this far outside the template are compared with the
        nearest template pixel; farther ones are "extra material".
    outside_score: least score of extra-material pixels.
    """

    name = "variation"
    trainable = True

    def __init__(
        self,
        spread_floor_deg: float = 1.0,
        spread_smooth_px: float = 2.0,
        smooth_px: float = 1.0,
        max_shift_px: float = DEFAULT_MAX_SHIFT_PX,
        max_rotation_deg: float = DEFAULT_MAX_ROTATION_DEG,
        min_correlation: float = DEFAULT_MIN_CORRELATION,
        min_confidence: float = 0.5,
        edge_tolerance_px: float = 3.0,
        outside_score: float = 10.0,
    ) -> None:
        if spread_floor_deg <= 0:
            raise PsinspectError(f"spread_floor_deg must be > 0, got {spread_floor_deg}")
        if min(spread_smooth_px, smooth_px, edge_tolerance_px) < 0:
            raise PsinspectError("spread_smooth_px, smooth_px and edge_tolerance_px must be >= 0")
        if not 0 < min_confidence <= 1:
            raise PsinspectError(f"min_confidence must be in (0, 1], got {min_confidence}")
        self.spread_floor_deg = float(spread_floor_deg)
        self.spread_smooth_px = float(spread_smooth_px)
        self.smooth_px = float(smooth_px)
        self.max_shift_px = float(max_shift_px)
        self.max_rotation_deg = float(max_rotation_deg)
        self.min_correlation = float(min_correlation)
        self.min_confidence = float(min_confidence)
        self.edge_tolerance_px = float(edge_tolerance_px)
        self.outside_score = float(outside_score)
        # learned state, in the reference frame
        self._mean: np.ndarray | None = None  # (H, W, 3) float32, zero outside the template
        self._spread: np.ndarray | None = None  # (H, W) float32 degrees, floor included
        self._mask: np.ndarray | None = None  # (H, W) bool template mask
        # derived (recomputed from the state): nearest-template extension for the silhouette
        self._mean_ext: np.ndarray | None = None
        self._spread_ext: np.ndarray | None = None
        self._dist: np.ndarray | None = None
        self._ref_image: np.ndarray | None = None

    # ------------------------------------------------------------------ configuration
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "spread_floor_deg": self.spread_floor_deg,
            "spread_smooth_px": self.spread_smooth_px,
            "smooth_px": self.smooth_px,
            "max_shift_px": self.max_shift_px,
            "max_rotation_deg": self.max_rotation_deg,
            "min_correlation": self.min_correlation,
            "min_confidence": self.min_confidence,
            "edge_tolerance_px": self.edge_tolerance_px,
            "outside_score": self.outside_score,
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        """``mean`` (H, W, 3), ``spread_deg`` (H, W) and ``mask`` (H, W, 1 = template) float32."""
        self._require_fitted()
        assert self._mean is not None and self._spread is not None and self._mask is not None
        return {
            "mean": self._mean.astype(np.float32),
            "spread_deg": self._spread.astype(np.float32),
            "mask": self._mask.astype(np.float32),
        }

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        missing = {"mean", "spread_deg", "mask"} - set(arrays)
        if missing:
            raise PsinspectError(f"variation model weights lack {sorted(missing)}")
        mean = np.asarray(arrays["mean"], np.float32)
        spread = np.asarray(arrays["spread_deg"], np.float32)
        mask = np.asarray(arrays["mask"]) > 0.5
        if mean.ndim != 3 or mean.shape[2] != 3 or spread.shape != mean.shape[:2] or \
                mask.shape != mean.shape[:2]:
            raise PsinspectError(
                f"variation model weights have inconsistent shapes: mean {mean.shape}, "
                f"spread_deg {spread.shape}, mask {mask.shape}"
            )
        if not mask.any() or not np.isfinite(mean).all() or not (spread[mask] > 0).all():
            raise PsinspectError("variation model weights are corrupt (empty mask, NaN or "
                                 "non-positive spread)")
        self._set_state(mean, spread, mask)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train: Sequence[NormalSample],
        val: Sequence[NormalSample],
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Learn the template from >= 5 defect-free maps of one part type.

        ``train``: (normals (H, W, 3) float32, mask (H, W) bool) pairs, all the same size; the
        first one fixes the reference frame. ``val`` (optional, may be empty): clean maps that are
        only scored, for the log. Returns a log: one dict per training map (its registration to
        the reference) and, when ``val`` is given, one dict with score percentiles on ``val``.
        """
        if len(train) < MIN_TRAIN:
            raise PsinspectError(
                f"the variation model needs at least {MIN_TRAIN} good captures of the part, "
                f"got {len(train)}"
            )
        maps = [validate_normal_map(n, m, name=f"training map {i + 1}")
                for i, (n, m) in enumerate(train)]
        shape = maps[0][0].shape[:2]
        for i, (n, _) in enumerate(maps):
            if n.shape[:2] != shape:
                raise PsinspectError(
                    f"training map {i + 1}: size {n.shape[1]}x{n.shape[0]} differs from training "
                    f"map 1 ({shape[1]}x{shape[0]}); all captures of a part type must have the "
                    "same size"
                )
        # pass 1: align to the first map; pass 2: align to the mean of pass 1 (less noisy)
        ref_image = registration_image(*maps[0])
        aligned, regs = self._align_all(maps, ref_image, skip_first=True)
        mean, _, tmask = self._mean_direction(aligned)
        aligned, regs = self._align_all(maps, registration_image(mean, tmask), skip_first=False)
        mean, count, tmask = self._mean_direction(aligned)

        # spread: rms angle to the mean, corrected by (N + 1) / (N - 1) for the in-sample mean
        # and for the new map not being part of it; pooled over spread_smooth_px
        sq = np.zeros(shape, np.float64)
        for n, m in aligned:
            both = m & tmask
            sq[both] += _angle_deg(n[both], mean[both]).astype(np.float64) ** 2
        k = np.maximum(count, 2).astype(np.float64)
        var = np.where(tmask, sq / k * (k + 1) / (k - 1), 0.0).astype(np.float32)
        var = _masked_gaussian(var, tmask, self.spread_smooth_px)
        spread = np.sqrt(var + self.spread_floor_deg**2).astype(np.float32)
        self._set_state(mean, spread, tmask)

        log: list[dict[str, Any]] = [
            {"map": i + 1, "angle_deg": r.transform.angle_deg, "shift_px": r.shift_px,
             "correlation": r.correlation}
            for i, r in enumerate(regs)
        ]
        if val:
            scores = np.concatenate([
                self.score(*validate_normal_map(n, m, name=f"validation map {i + 1}")).score[m]
                for i, (n, m) in enumerate(val)
            ])
            log.append({"val_maps": len(val),
                        **{f"val_score_p{p}": float(np.percentile(scores, p))
                           for p in (50, 99, 99.9)}})
        return log

    def _align_all(
        self, maps: list[tuple[np.ndarray, np.ndarray]], ref_image: np.ndarray, skip_first: bool
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[Registration]]:
        aligned: list[tuple[np.ndarray, np.ndarray]] = []
        regs: list[Registration] = []
        shape = ref_image.shape[:2]
        for i, (n, m) in enumerate(maps):
            if i == 0 and skip_first:
                aligned.append((n, m))
                regs.append(Registration(RigidTransform.identity(shape), 1.0, 0.0))
                continue
            reg = self._register(n, m, ref_image, f"training map {i + 1}")
            aligned.append(warp_normals(n, m, reg.transform.matrix(), shape))
            regs.append(reg)
        return aligned, regs

    @staticmethod
    def _mean_direction(
        aligned: list[tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean direction (H, W, 3), per-pixel count, template mask (majority of the maps)."""
        total = np.zeros(aligned[0][0].shape, np.float64)
        count = np.zeros(aligned[0][0].shape[:2], np.int32)
        for n, m in aligned:
            total += np.where(m[..., None], n, 0.0)
            count += m
        tmask = count * 2 > len(aligned)
        mean = normalize(total.astype(np.float32))
        tmask &= np.linalg.norm(mean, axis=2) > 0.5
        mean[~tmask] = 0.0
        return mean, count, tmask

    def _register(self, normals: np.ndarray, mask: np.ndarray, ref_image: np.ndarray,
                  name: str) -> Registration:
        return register(registration_image(normals, mask), ref_image,
                        max_shift_px=self.max_shift_px, max_rotation_deg=self.max_rotation_deg,
                        min_correlation=self.min_correlation, name=name)

    def _set_state(self, mean: np.ndarray, spread: np.ndarray, mask: np.ndarray) -> None:
        self._mean, self._spread, self._mask = mean, spread, mask
        # extend mean and spread to the whole image from the nearest template pixel, so that a
        # silhouette a pixel off still has something to compare with
        dist, idx = ndimage.distance_transform_edt(~mask, return_indices=True)
        rows, cols = idx
        self._mean_ext = mean[rows, cols].astype(np.float32)
        self._spread_ext = spread[rows, cols].astype(np.float32)
        self._dist = dist.astype(np.float32)
        self._ref_image = registration_image(mean, mask)

    def _require_fitted(self) -> None:
        if self._mean is None:
            raise PsinspectError("the variation model is not trained (run fit or load weights)")

    # ------------------------------------------------------------------ scoring
    def register_map(self, normals: np.ndarray, mask: np.ndarray,
                     name: str = "input normal map") -> Registration:
        """Registration of a map to the template (moving -> reference); raises when refused."""
        self._require_fitted()
        assert self._ref_image is not None
        n, m = validate_normal_map(normals, mask, name=name)
        if n.shape[:2] != self._ref_image.shape:
            h, w = self._ref_image.shape
            raise PsinspectError(
                f"{name}: size {n.shape[1]}x{n.shape[0]} differs from the trained part's "
                f"{w}x{h}; the variation model only compares captures of the same size"
            )
        return self._register(n, m, self._ref_image, name)

    def score(
        self, normals: np.ndarray, mask: np.ndarray, confidence: np.ndarray | None = None
    ) -> ScoreResult:
        """Per-pixel z-score of ``normals`` (H, W, 3) against the template, in the input frame.

        ``mask``: (H, W) bool object mask; ``confidence``: optional (H, W) PS confidence in
        [0, 1]. Returns ``ScoreResult(score (H, W) float32 >= 0, zero outside the mask;
        reference = the template moved into the input frame (H, W, 3); unreliable = mask pixels
        with confidence < min_confidence; info = the registration)``.
        """
        n, m = validate_normal_map(normals, mask, name="input normal map")
        reg = self.register_map(n, m)
        assert self._mean_ext is not None and self._spread_ext is not None
        assert self._dist is not None
        shape = n.shape[:2]
        inv = reg.transform.inverse_matrix()
        everywhere = np.ones(shape, bool)
        mu, _ = warp_normals(self._mean_ext, everywhere, inv, shape)
        spread = warp_image(self._spread_ext, inv, shape)
        dist = warp_image(self._dist, inv, shape)
        # pixels at the image border may come from outside the template image
        covered = warp_image(np.ones(shape, np.float32), inv, shape) > 0.5
        spread = np.where(covered, spread, self.spread_floor_deg)
        mu = np.where(covered[..., None], mu, n)

        z = np.where(m, _angle_deg(n, mu) / np.maximum(spread, 1e-6), 0.0).astype(np.float32)
        unreliable = np.zeros(shape, bool)
        if confidence is not None:
            conf = np.asarray(confidence, np.float32)
            if conf.shape != shape:
                raise PsinspectError(
                    f"confidence map shape {conf.shape} != normal map shape {shape}"
                )
            conf = np.nan_to_num(conf, nan=0.0)
            z *= np.clip(conf / self.min_confidence, 0.0, 1.0)
            unreliable = m & (conf < self.min_confidence)
        score = _masked_gaussian(z, m, self.smooth_px)
        outside = m & ((dist > self.edge_tolerance_px) | ~covered)
        score = np.where(outside, np.maximum(score, self.outside_score), score)
        score = np.where(m, score, 0.0).astype(np.float32)
        reference = np.where(m[..., None], mu, 0.0).astype(np.float32)
        info = {
            "angle_deg": reg.transform.angle_deg,
            "shift_px": reg.shift_px,
            "correlation": reg.correlation,
            "unreliable_pixels": int(unreliable.sum()),
            "outside_template_pixels": int(outside.sum()),
        }
        return ScoreResult(score, reference, unreliable=unreliable, info=info)

