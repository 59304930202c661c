"""``geo-seg``: a DRAEM-like discriminative model on normals plus geometric residuals.

Frame: DiLiGenT camera frame (x right, y up, z toward the camera); normals ``float32 (H, W, 3)``
unit inside the mask, zero outside.

Idea. A reconstruction model has to *know* the clean surface to expose a defect; for unseen
surfaces that is hard. Instead we let a training-free robust fit (:mod:`.geometric`: the
normal field fitted by a robust local linear regression at a few scales) play the role of the
"restoration", and train a small segmentation U-Net on ``[input normals, mask, input minus
restoration at each scale]`` to tell defects apart from everything else that also deviates
from a smooth fit: object boundaries, sharp machined edges, holes, chamfers, texture and PS
noise. As in DRAEM, training needs only clean maps: every training crop (random rotation/flip,
vector-correct) receives synthetic defects made as height changes, through
:mod:`psinspect.defects` (sampled defect shapes of the library), plus, for a share of them,
generic random height-field anomalies (band-limited noise under a random blob), so that the
network learns "locally inconsistent geometry" rather than a list of shapes. The target is the
set of pixels whose normal turned by more than ``min_angle`` degrees (the ground-truth rule of
the defect library). Loss: binary cross-entropy plus soft Dice, inside the object only.

Score: ``softplus(logit)`` (monotone in the predicted defect probability, never saturating, 0
outside the mask), times ``min(1, confidence / min_confidence)`` when PS confidence is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from psinspect import defects
from psinspect.models import ScoreResult, register
from psinspect.models._torch import TorchAnomalyModel, UNet
from psinspect.models.geometric import robust_reference


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = np.clip(np.einsum("...i,...i->...", a, b), -1.0, 1.0)
    return np.degrees(np.arccos(cos)).astype(np.float32)


def generic_height_anomaly(shape_hw: tuple[int, int], mask: np.ndarray,
                           rng: np.random.Generator) -> np.ndarray:
    """A random, shape-agnostic height change (pixel units) on the object: band-limited noise
    (Gaussian-filtered white noise, scale 1-6 px) under a soft random blob (thresholded smooth
    noise, 8-40 px), scaled to a random peak slope of 0.04-0.5. (H, W) float32."""
    h, w = shape_hw
    blob_sigma = float(rng.uniform(4.0, 14.0))
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), blob_sigma)
    noise /= max(float(noise.std()), 1e-6)
    # one blob around a random object pixel
    rows, cols = np.nonzero(mask)
    i = int(rng.integers(len(rows)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = float(rng.uniform(6.0, 30.0))
    dist = np.hypot((xx - cols[i]) / radius, (yy - rows[i]) / radius)
    blob = np.clip(1.5 - dist + 0.5 * noise, 0.0, 1.0)
    blob = cv2.GaussianBlur(blob, (0, 0), 1.5)
    tex_sigma = float(rng.uniform(1.0, 6.0))
    tex = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), tex_sigma)
    if rng.random() < 0.3:  # sometimes a plain smooth push (one-signed)
        tex = np.full((h, w), float(rng.choice([-1.0, 1.0])), np.float32)
        tex_sigma = radius
    field = tex * blob
    gy, gx = np.gradient(field)
    slope = float(np.max(np.hypot(gx, gy))) if field.any() else 0.0
    if slope <= 0:
        return np.zeros((h, w), np.float32)
    target = float(rng.uniform(0.04, 0.5))
    return (field * (target / slope)).astype(np.float32)


def synthetic_defects(normals: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *,
                      max_count: int = 3, p_clean: float = 0.2, p_generic: float = 0.3,
                      min_angle: float = 2.0, types: Sequence[str] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt a clean crop with 0..``max_count`` synthetic height-field defects.

    Returns ``(normals' float32 (H, W, 3), target bool (H, W))`` with target = object pixels
    whose normal turned by more than ``min_angle`` degrees. With probability ``p_clean`` the
    crop stays clean; each defect is a library defect (:func:`psinspect.defects.sample_defect`)
    or, with probability ``p_generic``, a :func:`generic_height_anomaly`.
    """
    if not mask.any() or rng.random() < p_clean:
        return normals, np.zeros(mask.shape, bool)
    total = np.zeros(mask.shape, np.float32)
    for _ in range(int(rng.integers(1, max_count + 1))):
        if rng.random() < p_generic:
            total += generic_height_anomaly(mask.shape, mask, rng)
        else:
            spec = defects.sample_defect(rng, mask.shape, mask, types=types)
            total += defects.height_field(spec, mask.shape)
    along = "normal" if rng.random() < 0.5 else "view"
    out = defects.apply_height(normals, mask, total, along=along)
    target = (_angle(normals, out) > min_angle) & mask
    return out, target


@register
class GeoSeg(TorchAnomalyModel):
    """Segmentation U-Net on [normals, mask, residuals to robust local fits], trained on clean
    maps with synthetic height-field defects. Score = softplus(logit)."""

    name = "geo-seg"

    def __init__(self, channels: Sequence[int] = (8, 16, 32, 64), decoder_convs: int = 1,
                 geo_scales: Sequence[float] = (3.0, 8.0), geo_iterations: int = 0,
                 residual_gain: float = 10.0, max_defects: int = 3, p_clean: float = 0.2,
                 p_generic: float = 0.3, min_angle: float = 2.0, min_confidence: float = 0.2,
                 dice_weight: float = 0.5, **base: Any) -> None:
        self.channels = [int(c) for c in channels]
        self.decoder_convs = int(decoder_convs)
        self.geo_scales = [float(s) for s in geo_scales]
        self.geo_iterations = int(geo_iterations)
        self.residual_gain = float(residual_gain)
        self.max_defects = int(max_defects)
        self.p_clean = float(p_clean)
        self.p_generic = float(p_generic)
        self.min_angle = float(min_angle)
        self.min_confidence = float(min_confidence)
        self.dice_weight = float(dice_weight)
        super().__init__(**base)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "channels": self.channels, "decoder_convs": self.decoder_convs,
            "geo_scales": self.geo_scales,
            "geo_iterations": self.geo_iterations, "residual_gain": self.residual_gain,
            "max_defects": self.max_defects, "p_clean": self.p_clean,
            "p_generic": self.p_generic, "min_angle": self.min_angle,
            "min_confidence": self.min_confidence, "dice_weight": self.dice_weight,
            **self.base_hyperparameters(),
        }

    @property
    def in_channels(self) -> int:
        return 4 + 3 * len(self.geo_scales)

    def build_net(self) -> nn.Module:
        return UNet(self.in_channels, 1, self.channels, decoder_convs=self.decoder_convs)

    def features(self, normals: np.ndarray, mask: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Network input (C, H, W) float32 and the finest robust reference (H, W, 3)."""
        chans = [np.moveaxis(normals, -1, 0), mask[None].astype(np.float32)]
        first = None
        for s in self.geo_scales:
            ref = robust_reference(normals, mask, s, self.geo_iterations)
            if first is None:
                first = ref
            chans.append(np.moveaxis((normals - ref) * self.residual_gain, -1, 0))
        return np.concatenate(chans).astype(np.float32), first

    def example(self, normals: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                ) -> dict[str, np.ndarray]:
        n, target = synthetic_defects(normals, mask, rng, max_count=self.max_defects,
                                      p_clean=self.p_clean, p_generic=self.p_generic,
                                      min_angle=self.min_angle)
        x, _ = self.features(n, mask)
        return {"x": x, "y": target[None].astype(np.float32), "w": mask[None].astype(np.float32)}

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        w, y = batch["w"], batch["y"]
        bce = nn.functional.binary_cross_entropy_with_logits(out, y, reduction="none")
        bce = (bce * w).sum() / w.sum().clamp_min(1.0)
        p = torch.sigmoid(out) * w
        inter = (p * y).sum()
        dice = 1.0 - (2 * inter + 1.0) / (p.sum() + y.sum() + 1.0)
        return bce + self.dice_weight * dice

    def score(self, normals: np.ndarray, mask: np.ndarray,
              confidence: np.ndarray | None = None) -> ScoreResult:
        mask = np.asarray(mask, bool)
        n = np.where(mask[..., None], normals, 0.0).astype(np.float32)
        x, ref = self.features(n, mask)
        logit = self.run_net(x)[0]
        score = np.logaddexp(0.0, logit).astype(np.float32)  # softplus
        unreliable = None
        if confidence is not None and self.min_confidence > 0:
            c = np.clip(np.asarray(confidence, np.float32) / self.min_confidence, 0.0, 1.0)
            score *= c
            unreliable = mask & (c < 1.0)
        score[~mask] = 0.0
        return ScoreResult(score=score, reference=ref, unreliable=unreliable)
