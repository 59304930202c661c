"""Reference baseline: U-Net autoencoder with skip connections at every scale.

The design of the research prototype, kept to measure against: a U-Net trained to reproduce
clean normal maps (MSE inside the object mask), scored by how much the reconstruction differs
from the input. Its weakness is structural: the full-resolution skips let it copy a defect
straight through, so reconstruction error stays low on defects too. We implement it faithfully
(same capacity class as our other learned models, same training budget, angular scoring rather
than the prototype's per-channel absolute difference, so it is not handicapped by the score).

Frame: DiLiGenT camera frame (x right, y up, z toward the camera); normals ``float32 (H, W, 3)``
unit inside the mask, zero outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from psinspect.checks import integers_list, number
from psinspect.models import ScoreResult, register
from psinspect.models._torch import MAX_CHANNELS, TorchAnomalyModel, UNet
from psinspect.models.geometric import MAX_SMOOTH_PX, masked_blur, normalize
from psinspect.normalmap import unit_angle_deg


@register
class UNetAE(TorchAnomalyModel):
    """U-Net autoencoder (skips at every scale), MSE on clean normals; score = angle between
    input and reconstruction (degrees), lightly smoothed."""

    name = "unet-ae"
    fine_tune_fixed = ("channels",)

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128), smooth: float = 1.0,
                 **base: Any) -> None:
        self.channels = integers_list("channels", channels, 1, MAX_CHANNELS)
        self.smooth = number("smooth", smooth, 0.0, MAX_SMOOTH_PX)
        super().__init__(**base)

    def hyperparameters(self) -> dict[str, Any]:
        return {"channels": self.channels, "smooth": self.smooth, **self.base_hyperparameters()}

    def build_net(self) -> nn.Module:
        return UNet(4, 3, self.channels, skips=[True] * (len(self.channels) - 1))

    @staticmethod
    def _input(normals: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.concatenate([np.moveaxis(normals, -1, 0), mask[None].astype(np.float32)])

    def example(self, normals: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                ) -> dict[str, np.ndarray]:
        return {
            "x": self._input(normals, mask),
            "y": np.moveaxis(normals, -1, 0).astype(np.float32),
            "w": mask[None].astype(np.float32),
        }

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        w = batch["w"]
        err = ((out - batch["y"]) ** 2 * w).sum()
        return err / (3 * w.sum()).clamp_min(1.0)

    def score_window(self, normals: np.ndarray, mask: np.ndarray,
                     confidence: np.ndarray | None = None) -> ScoreResult:
        mask = np.asarray(mask, bool)
        n = np.where(mask[..., None], normals, 0.0).astype(np.float32)
        out = self.run_net(self._input(n, mask))
        recon = normalize(np.ascontiguousarray(np.moveaxis(out, 0, -1)))
        recon[~mask] = 0.0
        ang = unit_angle_deg(n, recon)
        score = masked_blur(ang, mask, self.smooth)
        return ScoreResult(score=score, reference=recon)
