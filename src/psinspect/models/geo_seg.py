"""``geo-seg``: a DRAEM-like discriminative model on geometric residuals of the normal field.

Frame: DiLiGenT camera frame (x right, y up, z toward the camera); normals ``float32 (H, W, 3)``
unit inside the mask, zero outside.

Idea. A reconstruction model has to *know* the clean surface to expose a defect; for unseen
surfaces that is hard, and a U-Net autoencoder copies defects through its skips. Here a
training-free robust fit (:mod:`.geometric`: the normal field fitted by a local linear
regression at a fine and a coarse scale) plays the role of DRAEM's "restoration", and a small
segmentation U-Net looks at how the input departs from it, to tell defects apart from
everything else that also departs from a smooth fit: object boundaries, sharp machined edges,
holes, chamfers, texture and PS noise.

Input channels (:meth:`GeoSeg.features`), all independent of the surface's orientation (a steep
or curved object looks like a flat one, so real objects unlike the training parts are not
out of distribution): per scale the normal in the tangent frame of that scale's fit (2 each),
the fine fit in the frame of the coarse one (local curvature), the local RMS of the fine
residual (texture / noise level), optionally a thin-line cue (``line_orientations`` > 0, off by
default: :func:`line_cue`, oriented line filters on the fine residual, two channels) and the
object mask.

Training needs only clean maps. Each example: a clean map, randomly rotated/flipped
(vector-correct) and, with ``scale_jitter`` > 0, half the time resampled by a random factor in
``[1 / (1 + scale_jitter), 1 + scale_jitter]`` (the same surface at another resolution);
1-3 library defects (:func:`psinspect.defects.sample_defect`, height fields) drawn on the WHOLE
map so their size follows the object as at test time, optionally (``p_align`` > 0; off in the
bundled model, see BENCHMARKS.md 'Design exploration', align) with that fraction of the
scratches, ridges and cracks turned to run along the local grain (:func:`grain_direction`:
turning marks, brushing, nearby edges; a line along them is what texture streaks and design
grooves also look like, and the model misses many such lines), and with unequal
``severity_weights`` (low, medium, high; equal in the bundled model) their severity levels
drawn with those weights; a crop around the
first defect (or a random crop for clean examples, 20 %); a random tilt of all vectors, a random
smooth "bend" of the surface (large-scale height change, not a defect: curvature is normal),
sometimes a generic random height-field anomaly (band-limited noise under a random blob, so the
net learns "locally inconsistent geometry" rather than a list of shapes) or, for a fraction
``p_transplant`` of those (0 in the bundled model), a texture anomaly
(:func:`texture_transplant`: another place's fine structure, turned and amplified, under a
blob); the summed defect height applied through :func:`psinspect.defects.apply_height`;
PS-like noise. Target: pixels whose normal turned by more than ``min_angle`` degrees (the
library's ground-truth rule), and a texture anomaly's whole changed patch. Loss:
binary cross-entropy plus soft Dice, inside the object only.

Score: ``softplus(logit)`` (monotone in the predicted defect probability, never saturating, 0
outside the mask), the logit averaged over ``tta`` rotated/mirrored copies of the map
(test-time augmentation: each copy's vectors turn with it, its features are the map's own
turned with it, :meth:`GeoSeg.transform_features`; the network is not exactly
rotation-equivariant, so the average is a cheap ensemble, and as the copies of 2 and 4 are
the half and quarter turns, a part turned by those scores exactly the same, turned with it;
more copies score better and cost more, and training calibrates thresholds for 1, 2, 4 and 8
of them: ``detect --tta N``), times
``min(1, confidence / min_confidence)`` when PS confidence is given (those pixels are reported
as unreliable); finally, on the whole map, divided by a soft measure of the map's own score
level (:meth:`GeoSeg.finish_map`; the pass/fail image score is taken before that division).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from scipy import ndimage
from torch import nn

from psinspect import defects
from psinspect.checks import integer, integers_list, is_integer, number, numbers_list
from psinspect.models import ScoreResult, register
from psinspect.models._torch import MAX_CHANNELS, TorchAnomalyModel, UNet, crop_window, pad_to_size
from psinspect.models.geometric import (
    MAX_SCALE_PX,
    line_kernel,
    masked_blur,
    normalize,
    robust_reference,
)
from psinspect.normalmap import flip, resize_with_pad, rotate90, unit_angle_deg

#: test-time augmentation: (quarter turns, mirrored) of the map, in the order they are used;
#: the network's logits over the first ``tta`` of them are averaged (vectors turn with the map).
#: The first 2 and 4 are the half and quarter turns, groups of turns: a part turned by 180
#: degrees (``tta`` 2) or by any quarter turn (``tta`` 4, the default) scores exactly the same,
#: turned with it, as a part lies on a fixture whichever way it was put down; all 8 add the
#: mirror images (a camera that flips its image)
_TTA_ORDER: tuple[tuple[int, bool], ...] = (
    (0, False), (2, False), (1, False), (3, False), (0, True), (2, True), (1, True), (3, True))
#: pixels of test-time copies run through the network in one pass (memory: ~1 kB per pixel)
_PASS_PIXELS = 4 * 1024 * 1024


def tangent_components(n: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Components (u, v) of unit vectors ``n`` in the tangent frame of ``ref`` (both
    (H, W, 3)): the minimal rotation taking ``ref`` to +z, applied to ``n``, keeps x and y.
    Zero where ``n == ref``; independent of how the surface is tilted."""
    rx, ry, rz = ref[..., 0], ref[..., 1], ref[..., 2]
    nx, ny, nz = n[..., 0], n[..., 1], n[..., 2]
    k = (rx * nx + ry * ny) / np.maximum(1.0 + rz, 0.1)
    return nx - rx * k - rx * nz, ny - ry * k - ry * nz


def random_tilt(normals: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                max_deg: float) -> np.ndarray:
    """Turn every vector by one random rotation about an in-plane axis (up to ``max_deg``), as
    if the part were tilted; skipped where it would turn a normal away from the camera."""
    if max_deg <= 0:
        return normals
    phi = rng.uniform(0, 2 * np.pi)
    ang = np.radians(rng.uniform(0, max_deg))
    axis = np.array([np.cos(phi), np.sin(phi), 0.0])
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(ang) * kx + (1 - np.cos(ang)) * (kx @ kx)
    out = (normals.reshape(-1, 3) @ rot.T.astype(np.float32)).reshape(normals.shape)
    if mask.any() and out[..., 2][mask].min() < 0.05:
        return normals
    out[~mask] = 0.0
    return out.astype(np.float32)


def add_noise(normals: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
              max_sigma: float) -> np.ndarray:
    """PS-like noise: white plus spatially smooth perturbations of random strength (up to
    ``max_sigma``, in units of the vector, ~radians), renormalised."""
    if max_sigma <= 0:
        return normals
    h, w = mask.shape
    s_white = rng.uniform(0, max_sigma)
    s_smooth = rng.uniform(0, max_sigma)
    noise = rng.standard_normal((h, w, 3)).astype(np.float32) * s_white
    smooth = cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0),
                              float(rng.uniform(1.0, 4.0)))
    smooth *= s_smooth / max(float(smooth.std()), 1e-6)
    out = normalize(normals + noise + smooth)
    out[~mask] = 0.0
    return out


def random_bend(shape_hw: tuple[int, int], rng: np.random.Generator, max_slope: float,
                scale_px: Sequence[float] = (8.0, 40.0)) -> np.ndarray:
    """A smooth random height field (Gaussian-filtered noise, scale drawn from ``scale_px``)
    with a random peak slope up to ``max_slope``: a gently curved surface, NOT a defect.
    (H, W) float32."""
    sigma = float(rng.uniform(*scale_px))
    f = cv2.GaussianBlur(rng.standard_normal(shape_hw).astype(np.float32), (0, 0), sigma)
    gy, gx = np.gradient(f)
    slope = float(np.max(np.hypot(gx, gy)))
    if slope <= 0:
        return np.zeros(shape_hw, np.float32)
    return (f * (float(rng.uniform(0.0, max_slope)) / slope)).astype(np.float32)


def random_blob(shape_hw: tuple[int, int], mask: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, float]:
    """A soft random blob around a random object pixel: a disc of radius 6-30 px with a
    ragged edge (smooth noise of scale 4-14 px), softened by a 1.5 px blur; values in [0, 1].
    Returns ((H, W) float32, radius)."""
    h, w = shape_hw
    blob_sigma = float(rng.uniform(4.0, 14.0))
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), blob_sigma)
    noise /= max(float(noise.std()), 1e-6)
    rows, cols = np.nonzero(mask)
    i = int(rng.integers(len(rows)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = float(rng.uniform(6.0, 30.0))
    dist = np.hypot((xx - cols[i]) / radius, (yy - rows[i]) / radius)
    blob = np.clip(1.5 - dist + 0.5 * noise, 0.0, 1.0)
    return cv2.GaussianBlur(blob, (0, 0), 1.5), radius


def generic_height_anomaly(shape_hw: tuple[int, int], mask: np.ndarray,
                           rng: np.random.Generator) -> np.ndarray:
    """A random, shape-agnostic height change (pixel units) on the object: band-limited noise
    (Gaussian-filtered white noise, scale 1-6 px) under a soft random blob
    (:func:`random_blob`), scaled to a random peak slope of 0.04-0.5. (H, W) float32."""
    h, w = shape_hw
    blob, radius = random_blob(shape_hw, mask, rng)
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


def _fine_structure(normals: np.ndarray, mask: np.ndarray, sigma: float, limit: float
                    ) -> np.ndarray:
    """The normals minus their masked Gaussian-smoothed (std ``sigma``) and renormalised field:
    the fine structure (texture, noise) as (H, W, 3) deviation vectors, zero outside, each
    shortened to at most ``limit`` (so the large deviations of edges and grooves stay mostly
    where they are)."""
    smooth = normalize(np.stack([masked_blur(normals[..., c], mask, sigma)
                                 for c in range(3)], axis=-1))
    dev = np.where(mask[..., None], normals - smooth, 0.0)
    size = np.sqrt(np.einsum("...i,...i->...", dev, dev))
    return (dev * np.minimum(1.0, limit / np.maximum(size, 1e-9))[..., None]).astype(np.float32)


def texture_transplant(normals: np.ndarray, mask: np.ndarray, source: np.ndarray,
                       source_mask: np.ndarray, rng: np.random.Generator,
                       min_angle: float, sigma: float = 3.0, limit: float = 0.12
                       ) -> tuple[np.ndarray, np.ndarray]:
    """A texture anomaly (after Natural Synthetic Anomalies, Schlueter et al. 2022, in normal
    space): under a soft random blob (:func:`random_blob`) the map's own fine structure
    (:func:`_fine_structure`, scale ``sigma``, deviations up to ``limit``, ~7 deg) is replaced
    by the fine structure of another place of ``source`` (a whole clean map, same frame),
    turned and/or mirrored by a random non-identity element of the dihedral group (vectors
    turn with it) and amplified 1.5-3x (a texture of the same strength is often
    indistinguishable, e.g. a rough casting's): a patch whose texture differs from its
    surroundings in direction or strength, not a shape from the defect library.
    ``normals``, ``source``: (H, W, 3) and (Hs, Ws, 3) unit inside their masks; ``normals``
    must be square. Returns the new map ((H, W, 3) float32, unit inside ``mask``, zero
    outside) and the changed region ((H, W) bool): where the RMS of the angle the vectors
    turned, over a Gaussian window of 2 px, exceeds ``min_angle`` degrees (a patch of
    texture, not the speckle of its single pixels)."""
    h, w = mask.shape
    if h != w:
        raise ValueError(f"texture_transplant needs a square map, got {h} x {w}")
    dev = _fine_structure(normals, mask, sigma, limit)
    src = _fine_structure(source, source_mask, sigma, limit)
    rows, cols = np.nonzero(source_mask)
    i = int(rng.integers(len(rows)))
    r0, c0 = int(rows[i]) - h // 2, int(cols[i]) - w // 2
    win = np.zeros((h, w, 3), np.float32)
    win_m = np.zeros((h, w), bool)
    rs, cs = max(0, r0), max(0, c0)
    re, ce = min(source_mask.shape[0], r0 + h), min(source_mask.shape[1], c0 + w)
    win[rs - r0:re - r0, cs - c0:ce - c0] = src[rs:re, cs:ce]
    win_m[rs - r0:re - r0, cs - c0:ce - c0] = source_mask[rs:re, cs:ce]
    g = int(rng.integers(1, 8))  # a non-identity dihedral element: g % 4 turns, mirror g >= 4
    k, mirror = g % 4, g >= 4
    win = rotate90(flip(win, "lr") if mirror else win, k)
    win_m = np.rot90(win_m[:, ::-1] if mirror else win_m, k)
    blob, _ = random_blob((h, w), mask, rng)
    a = (blob * win_m * mask)[..., None]
    gain = float(rng.uniform(1.5, 3.0))
    out = normalize(normals + a * (gain * win - dev))
    out[~mask] = 0.0
    turned = np.where(mask, unit_angle_deg(normals, out), 0.0) ** 2
    region = (np.sqrt(masked_blur(turned, mask, 2.0)) > min_angle) & mask
    return out.astype(np.float32), region


def grain_direction(normals: np.ndarray, mask: np.ndarray, x: float, y: float,
                    window_px: float = 8.0, highpass_px: float = 4.0) -> float | None:
    """Direction of the local grain around image point ``(x, y)`` (column, row): the direction
    along which the fine structure of the normal field (the map minus its masked, about
    Gaussian blur of std ``highpass_px``, :func:`masked_box_blur`: turning marks, brushing,
    edges, grooves) changes least, from the
    structure tensor of its three components averaged over a Gaussian window of
    ``window_px``. Radians, image coordinates (``(cos, sin)`` in (column, row)), defined
    modulo pi; ``None`` where the window holds no object pixel or no structure.
    ``normals`` (H, W, 3) in any frame (only differences are used)."""
    h, w = mask.shape
    r = int(np.ceil(3 * (window_px + highpass_px)))
    r0, r1 = max(0, int(y) - r), min(h, int(y) + r + 1)
    c0, c1 = max(0, int(x) - r), min(w, int(x) + r + 1)
    m = mask[r0:r1, c0:c1]
    if r1 - r0 < 3 or c1 - c0 < 3 or not m.any():
        return None
    n = np.where(m[..., None], normals[r0:r1, c0:c1], 0.0).astype(np.float32)
    fine = n - masked_box_blur(n, m, highpass_px)
    # central differences: their direction leans by up to ~7 deg for grain of 4 px pitch
    # (less for coarser grain), below the training's 6 deg jitter; kept as the explore rows
    # were trained with them
    gy, gx = np.gradient(fine, axis=(0, 1))
    yy, xx = np.mgrid[r0:r1, c0:c1]
    g = np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / window_px**2) * m
    jxx = float((g[..., None] * gx * gx).sum())
    jyy = float((g[..., None] * gy * gy).sum())
    jxy = float((g[..., None] * gx * gy).sum())
    if jxx + jyy <= 1e-12:
        return None
    across = 0.5 * np.arctan2(2 * jxy, jxx - jyy)  # direction of the strongest change
    return float(across + 0.5 * np.pi)


def masked_box_blur(values: np.ndarray, mask: np.ndarray, sigma: float, passes: int = 3
                    ) -> np.ndarray:
    """Approximately Gaussian (std ``sigma`` px) average of (H, W) or (H, W, C) ``values`` over
    object pixels only (normalised by the blurred mask), by ``passes`` centred odd box filters:
    cost independent of ``sigma``, unlike a Gaussian's. float32 of the shape of ``values``,
    zero outside ``mask``."""
    width = 2 * int(round(0.5 * np.sqrt(12.0 * sigma**2 / passes + 1.0))) + 1
    m = mask.astype(np.float32)
    v = values if values.ndim == 3 else values[..., None]
    x = np.dstack([np.where(mask[..., None], v, 0.0).astype(np.float32), m])
    for _ in range(passes):
        x = cv2.boxFilter(x, -1, (width, width), borderType=cv2.BORDER_CONSTANT)
    out = np.where(mask[..., None], x[..., :-1] / np.maximum(x[..., -1:], 1e-6), 0.0)
    return out.astype(np.float32).reshape(values.shape)


def line_cue(u: np.ndarray, v: np.ndarray, mask: np.ndarray, kernels: Sequence[np.ndarray],
             context_px: float, floor: float, inhibition: float = 0.0
             ) -> tuple[np.ndarray, np.ndarray]:
    """Thin-line cue from a tangent residual field: ``(strength, isolation)``, (H, W) float32
    each, zero outside ``mask``.

    ``u, v`` (H, W): residual components in the camera frame (x right, y up), e.g. from
    :func:`tangent_components`. ``kernels``: ``K`` line kernels at the angles ``180 i / K``
    degrees (:func:`psinspect.models.geometric.line_kernel`, truncated at 2 sigmas). Per
    orientation the component of the residual ACROSS the line (the tilt of a groove's,
    ridge's or crack's walls) is averaged ALONG it (a matched filter; zero outside the mask,
    not renormalised at the silhouette). ``strength`` = max over orientations of |response|;
    ``isolation`` = strength / (local RMS of all orientations' responses, averaged over
    ``context_px`` inside the mask by :func:`masked_box_blur`, + ``floor``), clipped to
    [0, 10]: high for an isolated line, lower in a field of parallel
    texture streaks. With ``inhibition`` > 0 the second output is instead the line's excess
    over its surroundings, ``max(strength - inhibition * local RMS, 0)`` (lateral inhibition,
    in the units of ``strength``: unlike the scale-free ratio, weak PS noise gives a weak
    value). Both outputs are invariant to the map's orientation when ``K`` is even (the angle
    set is closed under quarter turns and mirrors)."""
    k_n = len(kernels)
    uu = np.where(mask, u, 0.0).astype(np.float32)
    vv = np.where(mask, v, 0.0).astype(np.float32)
    best = np.zeros(mask.shape, np.float32)
    energy = np.zeros(mask.shape, np.float32)
    for i, k in enumerate(kernels):
        t = np.pi * i / k_n
        across = vv * np.float32(np.cos(t)) - uu * np.float32(np.sin(t))
        if 2 * i in (0, k_n):  # 0 and 90 deg: separable, its marginals are the 1-D factors
            r = cv2.sepFilter2D(across, cv2.CV_32F, k.sum(axis=0), k.sum(axis=1),
                                borderType=cv2.BORDER_CONSTANT)
        else:
            r = cv2.filter2D(across, -1, k, borderType=cv2.BORDER_CONSTANT)
        r *= r
        np.maximum(best, r, out=best)
        energy += r
    strength = np.sqrt(best)
    ctx = np.sqrt(np.maximum(masked_box_blur(energy / k_n, mask, context_px), 0.0))
    if inhibition > 0:
        isolation = np.maximum(strength - np.float32(inhibition) * ctx, 0.0)
    else:
        isolation = np.clip(strength / (ctx + floor), 0.0, 10.0)
    strength[~mask] = 0.0
    isolation[~mask] = 0.0
    return strength, isolation.astype(np.float32)


@register
class GeoSeg(TorchAnomalyModel):
    """Segmentation U-Net on [normals, mask, residuals to robust local fits], trained on clean
    maps with synthetic height-field defects. Score = softplus(logit)."""

    name = "geo-seg"
    tta_levels = (1, 2, 4, 8)
    fine_tune_fixed = ("channels", "decoder_convs", "norm", "geo_scales", "geo_iterations",
                       "residual_gain", "line_orientations", "line_px", "line_context_px",
                       "line_floor", "line_inhibition")
    training_only = (*TorchAnomalyModel.training_only, "max_defects", "p_clean", "p_generic",
                     "p_transplant", "min_angle", "dice_weight", "focal_gamma", "tilt_deg",
                     "noise", "bend", "bend_px", "region_balance", "scale_jitter", "p_align",
                     "severity_weights")

    def __init__(self, channels: Sequence[int] = (8, 16, 32, 64), decoder_convs: int = 1,
                 norm: str = "gn",
                 geo_scales: Sequence[float] = (2.5, 8.0), geo_iterations: int = 0,
                 residual_gain: float = 10.0, max_defects: int = 3, p_clean: float = 0.2,
                 p_generic: float = 0.2, p_transplant: float = 0.0,
                 min_angle: float = 2.0, min_confidence: float = 0.2,
                 dice_weight: float = 0.2, focal_gamma: float = 0.0,
                 tilt_deg: float = 40.0, noise: float = 0.03,
                 bend: float = 0.8, bend_px: Sequence[float] = (8.0, 40.0),
                 region_balance: float = 150.0, tta: int = 4,
                 scale_jitter: float = 0.0, p_align: float = 0.0,
                 severity_weights: Sequence[float] = (1.0, 1.0, 1.0),
                 line_orientations: int = 0,
                 line_px: Sequence[float] = (2.5, 0.5), line_context_px: float = 16.0,
                 line_floor: float = 0.005, line_inhibition: float = 0.0,
                 map_norm_power: float = 0.5, map_norm_quantile: float = 99.0,
                 map_norm_eps: float = 0.05,
                 **base: Any) -> None:
        self.channels = integers_list("channels", channels, 1, MAX_CHANNELS)
        self.decoder_convs = integer("decoder_convs", decoder_convs, 1, 8)
        self.norm = str(norm)
        # finest first: the features read the finest fit as the reference and the coarsest as
        # the frame of the curvature channel
        self.geo_scales = numbers_list("geo_scales", geo_scales, 0.0, MAX_SCALE_PX, above=True,
                                       increasing=True)
        self.geo_iterations = integer("geo_iterations", geo_iterations, 0, 20)
        self.residual_gain = number("residual_gain", residual_gain, 0.0, 1000.0, above=True)
        self.max_defects = integer("max_defects", max_defects, 1, 20)
        self.p_clean = number("p_clean", p_clean, 0.0, 1.0)
        self.p_generic = number("p_generic", p_generic, 0.0, 1.0)
        self.p_transplant = number("p_transplant", p_transplant, 0.0, 1.0)
        self.min_angle = number("min_angle", min_angle, 0.0, 90.0, above=True, below=True)
        self.min_confidence = number("min_confidence", min_confidence, 0.0, 1.0)
        self.dice_weight = number("dice_weight", dice_weight, 0.0)
        self.focal_gamma = number("focal_gamma", focal_gamma, 0.0)
        self.tilt_deg = number("tilt_deg", tilt_deg, 0.0, 90.0, below=True)
        self.noise = number("noise", noise, 0.0, 1.0)
        self.bend = number("bend", bend, 0.0, 10.0)
        self.bend_px = numbers_list("bend_px", bend_px, 0.0, MAX_SCALE_PX, above=True, length=2)
        if self.bend_px[0] > self.bend_px[1]:
            raise ValueError(f"bend_px must be two scales 0 < low <= high, got {bend_px}")
        self.region_balance = number("region_balance", region_balance, 0.0)
        if not is_integer(tta) or tta not in self.tta_levels:
            raise ValueError(f"tta must be 1, 2, 4 or 8, got {tta!r}")
        self.tta = int(tta)
        # resampled by up to 1 + scale_jitter: at most twice the map's size
        self.scale_jitter = number("scale_jitter", scale_jitter, 0.0, 1.0)
        self.p_align = number("p_align", p_align, 0.0, 1.0)
        self.severity_weights = numbers_list("severity_weights", severity_weights, 0.0,
                                             length=len(defects.SEVERITY_LEVELS))
        if sum(self.severity_weights) <= 0:
            raise ValueError("severity_weights must be one weight >= 0 per severity level "
                             f"{tuple(defects.SEVERITY_LEVELS)}, not all 0, got "
                             f"{severity_weights}")
        # optional thin-line cue (0 = off, the bundled model's setting); an even count keeps the
        # angle set closed under quarter turns and mirrors (orientation invariance)
        if not (is_integer(line_orientations) and 0 <= line_orientations <= 64
                and line_orientations % 2 == 0):
            raise ValueError("line_orientations must be 0 (off) or even, at most 64, got "
                             f"{line_orientations!r}")
        self.line_orientations = int(line_orientations)
        self.line_px = numbers_list("line_px", line_px, 0.0, 32.0, above=True, length=2)
        self.line_context_px = number("line_context_px", line_context_px, 0.0, MAX_SCALE_PX,
                                      above=True)
        self.line_floor = number("line_floor", line_floor, 0.0, 10.0, above=True)
        self.line_inhibition = number("line_inhibition", line_inhibition, 0.0, 100.0)
        # scores are divided by (q + eps) ** power, q a percentile of the map's scores (softplus
        # values, about 0.01 to 10): an eps far above them, or a large power, would make that
        # division a constant that rounds every score to 0 (or overflows)
        self.map_norm_power = number("map_norm_power", map_norm_power, 0.0, 2.0)
        self.map_norm_quantile = number("map_norm_quantile", map_norm_quantile, 0.0, 100.0,
                                        above=True)
        self.map_norm_eps = number("map_norm_eps", map_norm_eps, 0.0, 10.0, above=True)
        self._line_kernels = [line_kernel(180.0 * i / self.line_orientations, *self.line_px, 2.0)
                              for i in range(self.line_orientations)]
        super().__init__(**base)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "channels": self.channels, "decoder_convs": self.decoder_convs, "norm": self.norm,
            "geo_scales": self.geo_scales,
            "geo_iterations": self.geo_iterations, "residual_gain": self.residual_gain,
            "max_defects": self.max_defects, "p_clean": self.p_clean,
            "p_generic": self.p_generic, "p_transplant": self.p_transplant,
            "min_angle": self.min_angle,
            "min_confidence": self.min_confidence, "dice_weight": self.dice_weight,
            "focal_gamma": self.focal_gamma,
            "tilt_deg": self.tilt_deg, "noise": self.noise, "bend": self.bend,
            "bend_px": self.bend_px,
            "region_balance": self.region_balance, "tta": self.tta,
            "scale_jitter": self.scale_jitter, "p_align": self.p_align,
            "severity_weights": self.severity_weights,
            "map_norm_power": self.map_norm_power, "map_norm_quantile": self.map_norm_quantile,
            "map_norm_eps": self.map_norm_eps,
            "line_orientations": self.line_orientations, "line_px": self.line_px,
            "line_context_px": self.line_context_px, "line_floor": self.line_floor,
            "line_inhibition": self.line_inhibition,
            **self.base_hyperparameters(),
        }

    @property
    def in_channels(self) -> int:
        return (2 + 2 * len(self.geo_scales) + (2 if len(self.geo_scales) > 1 else 0)
                + (2 if self.line_orientations else 0))

    def build_net(self) -> nn.Module:
        return UNet(self.in_channels, 1, self.channels, decoder_convs=self.decoder_convs,
                    norm=self.norm)

    def features(self, normals: np.ndarray, mask: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Network input (C, H, W) float32 and the finest robust reference (H, W, 3).

        Channels (all invariant to the surface's orientation, so a steep or curved object looks
        like a flat one): per scale, the normal's two components in the tangent frame of that
        scale's fitted reference (times ``residual_gain``); the finest reference expressed in
        the tangent frame of the coarsest (local curvature at the scale gap); the local RMS of
        the finest residual over ``3 * coarsest scale`` (texture / noise level); with
        ``line_orientations`` > 0 the thin-line cue of the finest residual (:func:`line_cue`:
        line strength times ``residual_gain``, and its isolation, or with
        ``line_inhibition`` > 0 its excess over the surroundings times ``residual_gain``); the
        mask.
        """
        mask = np.asarray(mask, bool)
        chans = []
        refs = [robust_reference(normals, mask, s, self.geo_iterations)
                for s in self.geo_scales]
        g = self.residual_gain
        for ref in refs:
            chans += [c * g for c in tangent_components(normals, ref)]
        fine = chans[0] ** 2 + chans[1] ** 2
        if len(refs) > 1:
            chans += [c * g for c in tangent_components(refs[0], refs[-1])]
            energy = masked_blur(fine, mask, 3.0 * self.geo_scales[-1])
        else:
            energy = masked_blur(fine, mask, 3.0 * self.geo_scales[0])
        chans.append(np.sqrt(np.maximum(energy, 0.0)))
        if self.line_orientations:
            u, v = tangent_components(normals, refs[0])
            strength, isolation = line_cue(u, v, mask, self._line_kernels,
                                           self.line_context_px, self.line_floor,
                                           self.line_inhibition)
            chans += [strength * g, isolation * (g if self.line_inhibition > 0 else 1.0)]
        chans.append(mask.astype(np.float32))
        x = np.stack(chans).astype(np.float32)
        x[:, ~mask] = 0.0
        return x, (refs[0] if refs else None)

    def transform_features(self, x: np.ndarray, k: int, mirror: bool) -> np.ndarray:
        """The features of the map mirrored left-right (if ``mirror``) and then turned by ``k``
        quarter turns (:func:`psinspect.normalmap.flip` / ``rotate90``), computed from the
        features ``x`` (C, H, W) of the map itself: pixels move, and each (u, v) pair of
        tangent-frame components turns like an in-plane vector; the other channels are
        scalars. Exact (the fits are separable and symmetric, so they commute with quarter
        turns and mirrors; tests/test_geo_seg_lines.py checks it), and it saves computing
        the features again for every test-time copy. Not for the line cue (off by default)."""
        pairs = len(self.geo_scales) + (1 if len(self.geo_scales) > 1 else 0)
        out = []
        for i in range(pairs):
            vec = np.stack([x[2 * i], x[2 * i + 1], np.zeros_like(x[0])], axis=-1)
            vec = rotate90(flip(vec, "lr") if mirror else vec, k)
            out += [vec[..., 0], vec[..., 1]]
        for c in x[2 * pairs:]:
            out.append(np.rot90(c[:, ::-1] if mirror else c, k))
        return np.ascontiguousarray(np.stack(out), dtype=np.float32)

    def _severity(self, rng: np.random.Generator) -> str | None:
        """The severity level of a training defect: ``None`` (the library's own draw: every
        level equally likely) for equal ``severity_weights``, else a level drawn with them."""
        w = np.asarray(self.severity_weights)
        if np.all(w == w[0]):
            return None
        return list(defects.SEVERITY_LEVELS)[int(rng.choice(len(w), p=w / w.sum()))]

    def example_from_map(self, normals: np.ndarray, mask: np.ndarray,
                         rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Library defects are drawn on the WHOLE map (so their sizes follow the object's size
        as at test time), then a crop around the first one (or a random crop) is taken; the
        crop is randomly tilted and bent (smooth large-scale height change: curvature is
        normal), gets generic anomalies, the defects' height change, and PS-like noise."""
        if self.scale_jitter > 0 and rng.random() < 0.5:
            # the same surface imaged at another resolution (slopes unchanged; PS noise and
            # texture are averaged or interpolated like a real camera's would be)
            f = float(np.exp(rng.uniform(-1.0, 1.0) * np.log1p(self.scale_jitter)))
            size = (max(8, round(mask.shape[0] * f)), max(8, round(mask.shape[1] * f)))
            normals, mask = resize_with_pad(normals, size, mask=mask)
        normals, mask, = pad_to_size([normals, mask], self.patch)
        shape = mask.shape
        height = np.zeros(shape, np.float32)
        around = None
        if mask.any() and rng.random() >= self.p_clean:
            for _ in range(int(rng.integers(1, self.max_defects + 1))):
                if rng.random() < self.p_generic:
                    continue  # a generic anomaly, added on the crop below
                spec = defects.sample_defect(rng, shape, mask, severity=self._severity(rng))
                if (self.p_align > 0 and spec.type in defects.LINE_TYPES
                        and rng.random() < self.p_align):
                    # along the local grain (turning marks, brushing, edges): the hardest
                    # case, a line that texture streaks and design grooves also look like
                    grain = grain_direction(normals, mask, *defects.line_center(spec))
                    if grain is not None:
                        spec = defects.turn_line(spec, grain + float(rng.normal(0.0, 0.1)))
                h = defects.height_field(spec, shape)
                if around is None and h.any():
                    rows, cols = np.nonzero(h)
                    around = (float(cols.mean()), float(rows.mean()))
                height += h
            n_generic = 1 if around is None else int(rng.random() < self.p_generic)
        else:
            n_generic = 0
        p = self.patch
        r, c = crop_window(mask, p, rng, around=around)
        n = normals[r:r + p, c:c + p].copy()
        m = mask[r:r + p, c:c + p].copy()
        h = height[r:r + p, c:c + p].copy()
        if not m.any():
            n_generic = 0
        transplants = 0
        for _ in range(n_generic):
            if self.p_transplant > 0 and rng.random() < self.p_transplant:
                transplants += 1  # a texture anomaly, applied to the vectors below
            else:
                h += generic_height_anomaly(m.shape, m, rng)
        n = random_tilt(n, m, rng, self.tilt_deg)
        if self.bend > 0 and m.any():
            n = defects.apply_height(n, m, random_bend(m.shape, rng, self.bend,
                                                                self.bend_px), along="view")
        out = n
        changed = np.zeros(m.shape, bool)
        for _ in range(transplants):
            out, region = texture_transplant(out, m, normals, mask, rng, self.min_angle)
            changed |= region
        if h.any():
            out = defects.apply_height(out, m, h, along="normal" if rng.random() < 0.5
                                       else "view")
        if out is n:
            target = np.zeros(m.shape, bool)
        else:
            target = ((unit_angle_deg(n, out) > self.min_angle) & m) | changed
        if rng.random() < 0.7:
            out = add_noise(out, m, rng, self.noise)
        x, _ = self.features(out, m)
        w = m.astype(np.float32)
        if target.any() and self.region_balance > 0:
            # region-balanced weights (as AUPRO counts regions, not pixels): a region's pixels
            # weigh (region_balance / area), at least 1 and at most 20
            lab, k = ndimage.label(target, structure=np.ones((3, 3), bool))
            area = np.bincount(lab.ravel(), minlength=k + 1).astype(np.float32)
            rw = np.clip(self.region_balance / np.maximum(area, 1.0), 1.0, 20.0)
            w = np.where(target, rw[lab], w).astype(np.float32)
        return {"x": x, "y": target[None].astype(np.float32), "w": w[None]}

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        w, y = batch["w"], batch["y"]
        bce = nn.functional.binary_cross_entropy_with_logits(out, y, reduction="none")
        if self.focal_gamma > 0:  # focal loss: easy pixels weigh less (Lin et al. 2017)
            # (1 - p_t) ** gamma from log(1 - p_t), finite in its gradient where p_t -> 1
            log_miss = nn.functional.logsigmoid(torch.where(y > 0.5, -out, out))
            bce = bce * torch.exp(self.focal_gamma * log_miss)
        bce = (bce * w).sum() / (w > 0).sum().clamp_min(1)
        p = torch.sigmoid(out) * (w > 0)
        inter = (p * y).sum()
        dice = 1.0 - (2 * inter + 1.0) / (p.sum() + y.sum() + 1.0)
        return bce + self.dice_weight * dice

    def finish_map(self, score: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
        """Per-map normalisation: ``score / (q + map_norm_eps) ** map_norm_power`` with ``q``
        the ``map_norm_quantile`` percentile of the map's object-pixel scores (power 0: off).

        Surfaces differ in how much of them looks a little anomalous (texture, PS noise, design
        features); dividing by a soft measure of the map's own score level makes scores of
        different parts comparable, so one pixel threshold means about the same on a brushed
        casting and on a polished disc. The 99th percentile and the square root keep a large
        defect (more than 1 % of the object) from hiding itself. Measured with three training
        seeds of the default recipe (BENCHMARKS.md): pixel AUROC and AUPRO rose with each
        seed. The pass/fail image score stays on the absolute level (the divisor is returned
        as ``image_scale``): normalised, a smooth clean part's noise is amplified, and the
        calibrated image threshold (then the largest clean validation score) rose so far that
        most defective test parts passed."""
        if self.map_norm_power <= 0 or not mask.any():
            return score, 1.0
        q = float(np.percentile(score[mask], self.map_norm_quantile))
        d = (q + self.map_norm_eps) ** self.map_norm_power
        return (score / d).astype(np.float32), float(d)

    def score_window(self, normals: np.ndarray, mask: np.ndarray,
                     confidence: np.ndarray | None = None) -> ScoreResult:
        mask = np.asarray(mask, bool)
        n = np.where(mask[..., None], normals, 0.0).astype(np.float32)
        logit = np.zeros(mask.shape, np.float32)
        x0, ref = self.features(n, mask)

        def copy_features(k: int, mirror: bool) -> np.ndarray:
            if (k, mirror) == (0, False):
                return x0
            if self.line_orientations:  # the line cue is not computed equivariantly
                nt = flip(n, "lr") if mirror else n
                mt = mask[:, ::-1] if mirror else mask
                return self.features(rotate90(nt, k), np.ascontiguousarray(np.rot90(mt, k)))[0]
            return self.transform_features(x0, k, mirror)

        # copies of one shape share a forward pass, at most ~4 Mpx of them (a large part's
        # copies go one by one, their features made just before)
        groups: dict[tuple[int, ...], list[tuple[int, bool]]] = {}
        for k, mirror in _TTA_ORDER[:self.tta]:
            groups.setdefault(mask.shape[::-1] if k % 2 else mask.shape, []).append((k, mirror))
        per_pass = max(1, _PASS_PIXELS // mask.size)
        for shape_copies in groups.values():
            for i in range(0, len(shape_copies), per_pass):
                copies = shape_copies[i:i + per_pass]
                outs = self.run_net(np.stack([copy_features(k, m) for k, m in copies]))[:, 0]
                for (k, mirror), out in zip(copies, outs, strict=True):
                    out = np.rot90(out, -k)
                    logit += out[:, ::-1] if mirror else out
        logit /= self.tta
        score = np.logaddexp(0.0, logit).astype(np.float32)  # softplus
        unreliable = None
        if confidence is not None and self.min_confidence > 0:
            c = np.clip(np.asarray(confidence, np.float32) / self.min_confidence, 0.0, 1.0)
            score *= c
            unreliable = mask & (c < 1.0)
        score[~mask] = 0.0
        return ScoreResult(score=score, reference=ref, unreliable=unreliable)
