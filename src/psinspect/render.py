"""Synthetic parts and multi-light rendering: the embedded default data.

A procedural family of machined and cast parts is built as a HEIGHT FIELD ``z(x, y)`` (pixel
units, +z toward the camera), with an albedo map and an object mask. Defects are implanted in
the height field (:func:`psinspect.defects.implant_defects_height`) before shading, so they reach
a detector through photometric stereo the way real ones do. Images are rendered under K distant
lights with an orthographic camera looking down -z:

    I_k = e_k * exposure * (1 - cast_shadow_k)
          * [ rho max(n . l_k, 0) + ks max(n . h_k, 0)^shininess [n . l_k > 0] ] + sensor noise,

``h_k = normalize(l_k + v)``, ``v = (0, 0, 1)`` (Blinn-Phong), ``e_k`` the light's intensity. Cast
shadows are found by marching from each pixel toward the light over the height field. Sensor
noise is Gaussian read noise plus signal-dependent shot noise; output is linear in [0, 1] and is
quantised to 16 bits when written.

Frame: DiLiGenT camera frame, x right, y up, z toward the camera; image rows grow downward (a
row step is -y). Normal maps are ``float32 (H, W, 3)``, unit inside the mask, zero outside.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from psinspect.align import random_pose, warp_image
from psinspect.defects import MAX_DEFECTS, check_types, implant_defects_height
from psinspect.errors import PsinspectError
from psinspect.fileio import save_json, save_png
from psinspect.normalmap import height_gradient, normals_from_height

#: the part families :func:`make_part` can build ("sphere" is a calibration object)
PART_FAMILIES: tuple[str, ...] = ("disc", "plate", "casting", "organic", "sphere")
#: families drawn by :func:`render_dataset` when none are given
DEFAULT_FAMILIES: tuple[str, ...] = ("disc", "plate", "casting")
LIGHT_LAYOUTS: tuple[str, ...] = ("diligent", "ring")


@dataclass
class Part:
    """A synthetic part.

    Attributes:
        height: (H, W) float32 depth map z(x, y), pixel units, +z toward the camera.
        albedo: (H, W) float32 diffuse albedo in (0, 1].
        mask: (H, W) bool object mask (holes and background are False).
        name: instance name.
        params: every random choice made (JSON-friendly), incl. ``material`` (``ks``,
            ``shininess``) used by :func:`render_part`.
    """

    height: np.ndarray
    albedo: np.ndarray
    mask: np.ndarray
    name: str
    params: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    return cols, rows


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean, unit standard deviation."""
    w = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (w - w.mean()) / (w.std() + 1e-12)


def _oriented_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_long: float,
                    sigma_short: float, angle: float) -> np.ndarray:
    """White noise smeared along direction ``angle`` (radians, image x/y): brushing marks."""
    r = int(math.ceil(3 * sigma_long))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    k = np.exp(-0.5 * ((u / sigma_long) ** 2 + (v / sigma_short) ** 2))
    k /= k.sum()
    w = cv2.filter2D(rng.standard_normal(shape), -1, k, borderType=cv2.BORDER_REFLECT)
    return (w - w.mean()) / (w.std() + 1e-12)


def _scale_to_slope(tex: np.ndarray, slope_deg: float, mask: np.ndarray) -> np.ndarray:
    """Scale a texture height so its RMS slope inside ``mask`` is ``slope_deg``."""
    gx, gy = height_gradient(tex)
    rms = float(np.sqrt(np.mean((gx**2 + gy**2)[mask]))) if mask.any() else 1.0
    return tex * (math.tan(math.radians(slope_deg)) / max(rms, 1e-12))


def _edge_drop(d: np.ndarray, kind: str, width: float) -> np.ndarray:
    """Height lost near an edge at distance ``d`` (px, >0 inside): chamfer (45 deg) or fillet."""
    t = np.clip(d, 0.0, width)
    if kind == "chamfer":
        return width - t
    return width - np.sqrt(np.maximum(width**2 - (width - t) ** 2, 0.0))


def _between(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Uniform draw in [lo, hi]; ``lo`` when the range is empty (tiny images)."""
    return float(lo if hi <= lo else rng.uniform(lo, hi))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _rounded_rect_sdf(x: np.ndarray, y: np.ndarray, a: float, b: float, r: float) -> np.ndarray:
    """Signed distance, POSITIVE INSIDE, of a rounded rectangle of half-sizes a, b, radius r."""
    qx = np.abs(x) - a + r
    qy = np.abs(y) - b + r
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    return -(outside - r)


def _grain_and_waviness(rng: np.random.Generator, mask: np.ndarray,
                        waviness_deg: tuple[float, float], waviness_px: float,
                        grain_deg: tuple[float, float], kind: str, p: dict[str, Any]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic surface finish: long-wave waviness (smooth noise of scale ``waviness_px``) and
    a fine grain (scale 0.8-2 px), each scaled to a random rms slope in degrees drawn from the
    given ranges; recorded in ``p["texture"]``. Returns (grain, waviness) height fields."""
    shape = mask.shape
    wav = float(rng.uniform(*waviness_deg))
    waviness = _scale_to_slope(_smooth_noise(rng, shape, waviness_px), wav, mask)
    grain = float(rng.uniform(*grain_deg))
    texture = _scale_to_slope(_smooth_noise(rng, shape, float(rng.uniform(0.8, 2.0))), grain,
                              mask)
    p["texture"] = {"kind": kind, "slope_deg": grain, "waviness_deg": wav}
    return texture, waviness


def _albedo(rng: np.random.Generator, shape: tuple[int, int], base: float, texture: np.ndarray,
            mask: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Spatially varying albedo: low-frequency mottling, texture-correlated sheen, stains."""
    size = shape[0]
    low = _smooth_noise(rng, shape, size / 10)
    mott = float(rng.uniform(0.03, 0.10))
    tex = texture / (np.abs(texture[mask]).max() + 1e-12) if mask.any() else texture
    corr = float(rng.uniform(0.0, 0.06))
    alb = base * (1.0 + mott * low + corr * tex)
    n_stains = int(rng.poisson(0.8))
    stains = []
    cols, rows = _grid(size)
    for _ in range(n_stains):
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        rad = float(rng.uniform(0.03, 0.12) * size)
        amt = float(rng.uniform(-0.25, 0.15))
        alb *= 1.0 + amt * np.exp(-((cols - cx) ** 2 + (rows - cy) ** 2) / (2 * rad**2))
        stains.append({"center": [float(cx), float(cy)], "radius": rad, "amount": amt})
    params["albedo"] = {"base": base, "mottling": mott, "texture_corr": corr, "stains": stains}
    return np.clip(alb, 0.05, 1.0).astype(np.float32)


def paint_marks(rng: np.random.Generator, mask: np.ndarray, *, strokes: tuple[int, int] = (1, 3),
                blotches: tuple[int, int] = (1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """Appearance-only marks on a part: pen or paint strokes and dirt blotches (no geometry).

    ``strokes`` and ``blotches`` are inclusive (min, max) counts. A stroke is a polyline of 1-2
    segments (20-70 px each, gently bending), 1-3 px wide and anti-aliased, that darkens the
    albedo by 40-80 % (30 % of strokes brighten it instead, by 32-64 %: a light label or chalk
    line); a blotch is a soft disc of radius 5-20 px that darkens by 30-60 %. Marks start on
    the object; what falls outside the mask is ignored by the renderer.

    Args:
        rng: random generator.
        mask: (H, W) bool object mask.

    Returns:
        ``(factor (H, W) float32 > 0, marks (H, W) bool)``: multiply the albedo by ``factor``;
        ``marks`` are the object pixels at least half covered by a mark. An empty mask gives
        factor 1 and no marks.
    """
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    factor = np.ones((h, w), np.float32)
    cover = np.zeros((h, w), np.float32)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return factor, np.zeros((h, w), bool)
    for _ in range(int(rng.integers(strokes[0], strokes[1] + 1))):
        i = int(rng.integers(rows.size))
        point = np.array([cols[i], rows[i]], np.float64)
        pts = [point]
        ang = float(rng.uniform(0.0, np.pi))
        for _ in range(int(rng.integers(1, 3))):
            ang += float(rng.normal(0.0, 0.5))
            point = point + rng.uniform(20, 70) * np.array([np.cos(ang), np.sin(ang)])
            pts.append(point)
        stroke = np.zeros((h, w), np.float32)
        cv2.polylines(stroke, [np.round(np.array(pts) * 16).astype(np.int32)], False, 1.0,
                      thickness=int(rng.integers(1, 4)), lineType=cv2.LINE_AA, shift=4)
        amount = float(rng.uniform(0.4, 0.8)) * (1.0 if rng.random() < 0.7 else -0.8)
        factor *= 1.0 - amount * stroke
        np.maximum(cover, stroke, out=cover)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(blotches[0], blotches[1] + 1))):
        i = int(rng.integers(rows.size))
        radius = float(rng.uniform(5, 20))
        blot = np.clip((radius - np.hypot(xx - cols[i], yy - rows[i])) / 2 + 0.5, 0, 1)
        factor *= 1.0 - float(rng.uniform(0.3, 0.6)) * blot.astype(np.float32)
        np.maximum(cover, blot.astype(np.float32), out=cover)
    return factor, (cover >= 0.5) & mask


# ------------------------------------------------------------------------------------------
# part families
# ------------------------------------------------------------------------------------------


def _disc(rng: np.random.Generator, size: int, p: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Turned disc/flange: outer chamfer or fillet, bore, bolt circle, hub step, groove ring."""
    cols, rows = _grid(size)
    cx, cy = (size - 1) / 2 + rng.uniform(-0.02, 0.02, 2) * size
    x, y = cols - cx, rows - cy
    r = np.hypot(x, y)
    big_r = float(rng.uniform(0.38, 0.46) * size)
    top = float(rng.uniform(10, 30))
    edge = str(rng.choice(["chamfer", "fillet"]))
    edge_w = float(rng.uniform(3, 8))
    p.update(center=[float(cx), float(cy)], radius=big_r, top=top, edge=edge, edge_width=edge_w)
    h = top - _edge_drop(big_r - r, edge, edge_w)
    mask = r < big_r
    s = size / 256
    if rng.random() < 0.7:  # central bore
        bore = float(rng.uniform(0.08, 0.2) * big_r)
        ch = float(rng.uniform(1.5, 4) * s)
        h -= _edge_drop(r - bore, "chamfer", ch)
        mask &= r > bore
        p["bore"] = {"radius": bore, "chamfer": ch}
        inner = bore + ch
    else:
        inner = 0.0
    if rng.random() < 0.5:  # raised hub (step with a sloped wall)
        hub_r = _between(rng, max(inner + 8 * s, 0.3 * big_r), 0.55 * big_r)
        step = float(rng.uniform(2, 8))
        wall = float(step * rng.uniform(0.8, 1.5))
        h += step * _smoothstep((hub_r - r) / wall + 0.5)
        p["hub"] = {"radius": hub_r, "step": step, "wall": wall}
    if rng.random() < 0.5:  # bolt circle
        nb = int(rng.choice([3, 4, 5, 6, 8]))
        hole_r = float(rng.uniform(0.04, 0.07) * big_r)
        pitch = _between(rng, max(inner + hole_r + 6 * s, 0.5 * big_r),
                         big_r - hole_r - edge_w - 6 * s)
        phase = float(rng.uniform(0, 2 * math.pi / nb))
        ch = float(rng.uniform(1, 3) * s)
        holes = []
        for i in range(nb):
            a = phase + 2 * math.pi * i / nb
            hx, hy = cx + pitch * math.cos(a), cy + pitch * math.sin(a)
            dh = np.hypot(cols - hx, rows - hy)
            h -= _edge_drop(dh - hole_r, "chamfer", ch)
            mask &= dh > hole_r
            holes.append([float(hx), float(hy)])
        p["bolt_holes"] = {"centers": holes, "radius": hole_r, "chamfer": ch}
    if rng.random() < 0.4:  # engraved V-groove ring
        g_r = float(rng.uniform(0.6, 0.9) * big_r)
        g_w = float(rng.uniform(2.5, 5))
        g_d = float(g_w * rng.uniform(0.2, 0.4))
        h -= g_d * np.clip(1 - np.abs(r - g_r) / (g_w / 2), 0, None)
        p["groove"] = {"radius": g_r, "width": g_w, "depth": g_d}
    # turning marks: concentric ripples with slowly varying amplitude
    pitch_t = float(rng.uniform(2.5, 6))
    slope_t = float(rng.uniform(0.8, 3.0))
    amp = math.tan(math.radians(slope_t)) * pitch_t / (2 * math.pi)
    ripple = np.sin(2 * math.pi * r / pitch_t + rng.uniform(0, 2 * math.pi))
    texture = amp * ripple * (1 + 0.3 * _smooth_noise(rng, (size, size), size / 16))
    fine = float(rng.uniform(0.3, 1.0))
    texture += _scale_to_slope(_smooth_noise(rng, (size, size), 1.0), fine, mask)
    p["texture"] = {"kind": "turned", "pitch": pitch_t, "slope_deg": slope_t, "fine_deg": fine}
    p["material"] = {"ks": float(rng.uniform(0.1, 0.35)), "shininess": float(rng.uniform(20, 80))}
    return h + texture, texture, mask


def _plate(rng: np.random.Generator, size: int, p: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Milled/brushed plate: rounded rectangle, edge break, corner holes, optional pocket."""
    cols, rows = _grid(size)
    cx, cy = (size - 1) / 2 + rng.uniform(-0.02, 0.02, 2) * size
    rot = math.radians(float(rng.uniform(-20, 20)))
    x0, y0 = cols - cx, rows - cy
    x = x0 * math.cos(rot) + y0 * math.sin(rot)
    y = -x0 * math.sin(rot) + y0 * math.cos(rot)
    a = float(rng.uniform(0.3, 0.45) * size)
    b = float(rng.uniform(0.22, 0.4) * size)
    rr = _between(rng, 5 * size / 256, 0.5 * min(a, b))
    top = float(rng.uniform(8, 20))
    edge = str(rng.choice(["chamfer", "fillet"]))
    edge_w = float(rng.uniform(2, 6))
    d = _rounded_rect_sdf(x, y, a, b, rr)
    h = top - _edge_drop(d, edge, edge_w)
    mask = d > 0
    p.update(center=[float(cx), float(cy)], rotation_deg=math.degrees(rot), half_size=[a, b],
             corner_radius=rr, top=top, edge=edge, edge_width=edge_w)
    if rng.random() < 0.7:  # corner holes
        hole_r = float(rng.uniform(0.03, 0.06) * size)
        inset = hole_r + edge_w + float(rng.uniform(4, 10))
        ch = float(rng.uniform(1, 3))
        holes = []
        for sx in (-1, 1):
            for sy in (-1, 1):
                dh = np.hypot(x - sx * (a - inset), y - sy * (b - inset))
                h -= _edge_drop(dh - hole_r, "chamfer", ch)
                mask &= dh > hole_r
                holes.append([sx * (a - inset), sy * (b - inset)])
        p["holes"] = {"offsets": holes, "radius": hole_r, "chamfer": ch}
    if rng.random() < 0.4:  # milled pocket with filleted floor edge
        pa, pb = a * float(rng.uniform(0.3, 0.55)), b * float(rng.uniform(0.3, 0.55))
        depth = float(rng.uniform(2, 6))
        fil = float(rng.uniform(max(depth, 3), 8))
        dp = _rounded_rect_sdf(x, y, pa, pb, min(pa, pb) * 0.3)
        h -= depth * _smoothstep(dp / fil + 0.5)
        p["pocket"] = {"half_size": [pa, pb], "depth": depth, "wall": fil}
    ang = float(rng.uniform(0, math.pi))
    slope_t = float(rng.uniform(0.8, 3.0))
    brushed = _oriented_noise(rng, (size, size), float(rng.uniform(6, 20)),
                              float(rng.uniform(0.6, 1.2)), ang)
    texture = _scale_to_slope(brushed, slope_t, mask)
    p["texture"] = {"kind": "brushed", "angle_deg": math.degrees(ang), "slope_deg": slope_t}
    p["material"] = {"ks": float(rng.uniform(0.1, 0.3)), "shininess": float(rng.uniform(15, 60))}
    return h + texture, texture, mask


def _casting(rng: np.random.Generator, size: int, p: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Sand/die casting: irregular outline, large fillets, bosses, blasted texture, waviness."""
    cols, rows = _grid(size)
    cx, cy = (size - 1) / 2 + rng.uniform(-0.02, 0.02, 2) * size
    x, y = cols - cx, rows - cy
    r = np.hypot(x, y)
    th = np.arctan2(y, x)
    r0 = float(rng.uniform(0.33, 0.42) * size)
    harm = []
    rad = np.ones_like(r)
    for k in range(2, 6):
        amp, ph = float(rng.uniform(0, 0.07)), float(rng.uniform(0, 2 * math.pi))
        rad += amp * np.cos(k * th + ph)
        harm.append([k, amp, ph])
    d = r0 * rad - r
    top = float(rng.uniform(15, 30))
    fil = float(rng.uniform(8, 20))
    h = top - _edge_drop(d, "fillet", fil)
    mask = d > 0
    p.update(center=[float(cx), float(cy)], radius=r0, harmonics=harm, top=top, fillet=fil)
    bosses = []
    for _ in range(int(rng.integers(0, 4))):
        ang, dist = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 0.5) * r0)
        bx, by = cx + dist * math.cos(ang), cy + dist * math.sin(ang)
        br = float(rng.uniform(0.08, 0.18) * r0)
        bh = float(rng.uniform(3, 8))
        bw = float(rng.uniform(3, 6))
        db = np.hypot(cols - bx, rows - by)
        h += bh * _smoothstep((br - db) / bw + 0.5)
        boss = {"center": [bx, by], "radius": br, "height": bh, "wall": bw}
        if rng.random() < 0.5:
            hr = br * float(rng.uniform(0.3, 0.5))
            h -= _edge_drop(db - hr, "chamfer", 2.0)
            mask &= db > hr
            boss["hole_radius"] = hr
        bosses.append(boss)
    p["bosses"] = bosses
    texture, waviness = _grain_and_waviness(rng, mask, (0.5, 2.0), size / 12, (1.5, 4.0),
                                            "blasted", p)
    p["material"] = {"ks": float(rng.uniform(0.02, 0.1)), "shininess": float(rng.uniform(5, 20))}
    return h + texture + waviness, texture, mask


def _organic(rng: np.random.Generator, size: int, p: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Moulded / sculpted free-form body (figurines, castings of organic shape): a union of
    3-7 ellipsoidal lobes (body, limbs, head, ears), joined by a smooth maximum whose sharpness
    ranges from sharp concave creases to rounded fillets; steep silhouettes; painted-surface
    fine texture and waviness; glossy material."""
    cols, rows = _grid(size)
    cx, cy = (size - 1) / 2 + rng.uniform(-0.03, 0.03, 2) * size
    heights, lobes = [], []
    mask = np.zeros((size, size), bool)
    for i in range(int(rng.integers(3, 8))):
        main = i == 0
        a = float(rng.uniform(0.22, 0.36) if main else rng.uniform(0.05, 0.2)) * size
        b = a * float(rng.uniform(0.55, 1.0))
        ang = float(rng.uniform(0, math.pi))
        if main:
            lx, ly = float(cx), float(cy)
        else:  # a lobe centred inside the body so far, near its outline
            rr_, cc_ = np.nonzero(mask)
            k = int(rng.integers(len(rr_)))
            lx, ly = float(cc_[k]), float(rr_[k])
        x0, y0 = cols - lx, rows - ly
        u = x0 * math.cos(ang) + y0 * math.sin(ang)
        v = -x0 * math.sin(ang) + y0 * math.cos(ang)
        q = (u / a) ** 2 + (v / b) ** 2
        depth = b * float(rng.uniform(0.5, 1.0))
        base = float(rng.uniform(0.0, 0.6) * depth) if not main else 0.0
        heights.append(np.where(q < 1, base + depth * np.sqrt(np.clip(1 - q, 0, None)), -1e3))
        mask |= q < 1
        lobes.append({"center": [lx, ly], "axes": [a, b], "angle_rad": ang, "depth": depth,
                      "base": base})
    sharp = float(np.exp(rng.uniform(np.log(0.15), np.log(3.0))))  # 1/px: crease sharpness
    stack = np.stack(heights) * sharp
    top = stack.max(axis=0)
    h = (top + np.log(np.exp(stack - top).sum(axis=0))) / sharp
    h = np.where(mask, h, 0.0)
    p.update(center=[float(cx), float(cy)], lobes=lobes, crease_sharpness=sharp)
    texture, waviness = _grain_and_waviness(rng, mask, (0.3, 1.5), size / 10, (0.2, 1.2),
                                            "painted", p)
    p["material"] = {"ks": float(rng.uniform(0.05, 0.4)), "shininess": float(rng.uniform(10, 60))}
    return h + texture + waviness, texture, mask


def _sphere(rng: np.random.Generator, size: int, p: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Calibration sphere (hemisphere facing the camera), smooth, uniform-ish material."""
    cols, rows = _grid(size)
    cx, cy = (size - 1) / 2 + rng.uniform(-0.03, 0.03, 2) * size
    rad = float(rng.uniform(0.35, 0.45) * size)
    h = sphere_height((size, size), (float(cx), float(cy)), rad)
    mask = np.hypot(cols - cx, rows - cy) < rad - 0.5
    p.update(center=[float(cx), float(cy)], radius=rad)
    p["material"] = {"ks": float(rng.uniform(0.1, 0.3)), "shininess": float(rng.uniform(20, 60))}
    return h, np.zeros_like(h), mask


def sphere_height(shape_hw: tuple[int, int], center_xy: tuple[float, float],
                  radius: float) -> np.ndarray:
    """Height map (H, W) float32 of a sphere of ``radius`` px centred at image ``(x, y)`` =
    (column, row): ``sqrt(R^2 - r^2)`` inside, 0 outside."""
    rows, cols = np.mgrid[0:shape_hw[0], 0:shape_hw[1]].astype(np.float64)
    r2 = (cols - center_xy[0]) ** 2 + (rows - center_xy[1]) ** 2
    return np.sqrt(np.clip(radius**2 - r2, 0.0, None)).astype(np.float32)


_FAMILY_FUNCS: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {
    "disc": _disc, "plate": _plate, "casting": _casting, "organic": _organic,
    "sphere": _sphere,
}


def make_part(rng: np.random.Generator, size: int = 256, family: str = "disc",
              name: str | None = None) -> Part:
    """Build one random part of ``family`` (see :data:`PART_FAMILIES`) on a ``size`` x ``size``
    grid. Every random choice is recorded in ``Part.params``; the same generator state gives
    the same part, bit for bit. Heights are in pixel units (+z toward the camera), so a
    slope of 1 is 45 degrees. Also tilts the part slightly (``tilt`` in params), except the
    calibration sphere.
    """
    if family not in _FAMILY_FUNCS:
        raise PsinspectError(
            f"unknown part family {family!r}; known: {', '.join(PART_FAMILIES)}"
        )
    if not 32 <= size <= 4096:
        raise PsinspectError(f"--size must be between 32 and 4096 pixels, got {size}")
    params: dict[str, Any] = {"family": family, "size": size}
    height, texture, mask = _FAMILY_FUNCS[family](rng, size, params)
    if family != "sphere":
        tx, ty = (float(v) for v in rng.uniform(-0.04, 0.04, 2))
        cols, rows = _grid(size)
        height = height + tx * cols + ty * rows
        params["tilt"] = [tx, ty]
    base = float(rng.uniform(0.35, 0.8))
    albedo = _albedo(rng, (size, size), base, texture, mask, params)
    height = np.asarray(height, np.float32)
    return Part(height=height, albedo=albedo, mask=mask.astype(bool),
                name=name or family, params=params)


# ------------------------------------------------------------------------------------------
# lights and rendering
# ------------------------------------------------------------------------------------------


#: the most lights a rendered capture may have (DiLiGenT has 96; 100000 lights rendered for
#: minutes before anything was said)
MAX_LIGHTS = 256


def default_lights(k: int = 12, layout: str = "diligent", *, slant_deg: float = 45.0
                   ) -> np.ndarray:
    """K unit light directions (K, 3) float32, DiLiGenT frame (x right, y up, z to camera).

    ``"diligent"``: a planar grid of lights in front of the object like DiLiGenT's 8 x 12 array
    (directions ``normalize(u, v, 1)`` with ``|u|, |v| <= 0.65``, up to ~43 deg from the view
    axis), the K grid points nearest the centre of a near-square grid, ordered row by row from
    the top left. ``"ring"``: K lights on a cone at ``slant_deg`` from the view axis, evenly
    spaced in azimuth starting at +x (inspection ring light).
    """
    if k < 3:
        raise PsinspectError(f"--lights: photometric stereo needs at least 3 lights, got {k}")
    if k > MAX_LIGHTS:
        raise PsinspectError(f"--lights: at most {MAX_LIGHTS} lights (a rendered image per "
                             f"light and part), got {k}")
    if layout == "ring":
        s = math.radians(slant_deg)
        az = 2 * math.pi * np.arange(k) / k
        out = np.stack([math.sin(s) * np.cos(az), math.sin(s) * np.sin(az),
                        np.full(k, math.cos(s))], axis=1)
        return out.astype(np.float32)
    if layout != "diligent":
        raise PsinspectError(f"unknown light layout {layout!r}; known: {', '.join(LIGHT_LAYOUTS)}")
    ncol = int(math.ceil(math.sqrt(k)))
    nrow = int(math.ceil(k / ncol))
    span = 0.65
    us = np.linspace(-span, span, ncol) if ncol > 1 else np.zeros(1)
    vs = np.linspace(span, -span, nrow) if nrow > 1 else np.zeros(1)
    pts = [(u, v) for v in vs for u in us]
    order = sorted(range(len(pts)), key=lambda i: (round(math.hypot(*pts[i]), 9), i))
    keep = sorted(order[:k])  # row-major from the top left
    uv = np.array([pts[i] for i in keep])
    d = np.column_stack([uv, np.ones(k)])
    return (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)


def cast_shadows(height: np.ndarray, light: np.ndarray, *, eps: float = 0.05) -> np.ndarray:
    """Cast-shadow mask (H, W) bool for one distant light over a height field (pixel units).

    A pixel is shadowed when the height field rises above the straight ray from it toward the
    light: marching in image steps of one pixel along ``(lx, -ly)`` (rows grow downward) while
    the ray climbs ``lz / |(lx, ly)|`` per pixel; heights sampled bilinearly. ``eps`` (pixel
    units) ignores grazing self-intersections of the ray with the pixel's own slope.
    """
    lx, ly, lz = (float(v) for v in np.asarray(light, np.float64) / np.linalg.norm(light))
    horiz = math.hypot(lx, ly)
    h, w = height.shape
    if horiz < 1e-6 or lz <= 0:
        return np.zeros((h, w), bool) if lz > 0 else np.ones((h, w), bool)
    dc, dr = lx / horiz, -ly / horiz
    rise = lz / horiz
    z = np.ascontiguousarray(height, np.float32)
    zmax = float(z.max())
    steps = int(min(math.ceil((zmax - float(z.min())) / rise) + 1, 2 * max(h, w)))
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    shadow = np.zeros((h, w), bool)
    for t in range(1, steps + 1):
        sample = cv2.remap(z, cols + np.float32(t * dc), rows + np.float32(t * dr),
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        shadow |= sample > z + np.float32(t * rise + eps)
    return shadow


def render_images(
    height: np.ndarray,
    albedo: np.ndarray,
    mask: np.ndarray,
    lights: np.ndarray,
    rng: np.random.Generator,
    *,
    specular: float = 0.2,
    shininess: float = 40.0,
    shadows: bool = True,
    noise: float = 0.002,
    shot_noise: float = 1e-5,
    intensities: np.ndarray | None = None,
    exposure: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render K images of a height field (orthographic camera, distant lights).

    Args:
        height: (H, W) depth map z(x, y), pixel units, +z toward the camera.
        albedo: (H, W) diffuse albedo.
        mask: (H, W) bool object mask; the background renders black (plus noise).
        lights: (K, 3) light directions, DiLiGenT frame.
        rng: generator for the sensor noise.
        specular: Blinn-Phong strength ``ks`` (0 = Lambertian).
        shininess: Blinn-Phong exponent.
        shadows: march cast shadows (attached shadows, ``n . l <= 0``, are always there).
        noise: read-noise standard deviation (in [0, 1] image units).
        shot_noise: shot-noise variance per unit of signal (``sigma^2 = noise^2 + shot * I``).
        intensities: (K,) light intensities ``e_k`` multiplied in (default 1).
        exposure: overall gain; ``None`` picks the gain that puts the 99.5th percentile of the
            noiseless object radiance at 0.85 (a few highlights may still saturate, as in real
            captures).

    Returns:
        ``(images float32 (K, H, W) linear in [0, 1], normals_gt float32 (H, W, 3))``; the
        normals are those of the height field (:func:`psinspect.normalmap.normals_from_height`).
    """
    z = np.asarray(height, np.float32)
    mask = np.asarray(mask, bool)
    lights = np.asarray(lights, np.float64)
    if lights.ndim != 2 or lights.shape[1] != 3 or lights.shape[0] < 1:
        raise PsinspectError(f"lights must be (K, 3), got {lights.shape}")
    lights = lights / np.linalg.norm(lights, axis=1, keepdims=True)
    k = lights.shape[0]
    inten = np.ones(k) if intensities is None else np.asarray(intensities, np.float64).ravel()
    if inten.shape != (k,):
        raise PsinspectError(f"intensities must be ({k},), got {inten.shape}")
    normals = normals_from_height(z, mask)
    n = normals.astype(np.float32)
    rho = np.asarray(albedo, np.float32)
    # the floor through holes and around the part is far below: it never casts shadows
    z_sh = np.where(mask, z, np.float32(z[mask].min() - 1.0 if mask.any() else 0.0))
    clean = np.zeros((k, *mask.shape), np.float32)
    for i, lt in enumerate(lights.astype(np.float32)):
        ndl = n @ lt
        lit = ndl > 0
        val = rho * np.maximum(ndl, 0)
        if specular > 0:
            hv = lt + np.array([0, 0, 1], np.float32)
            hv /= np.linalg.norm(hv)
            val = val + np.float32(specular) * np.where(
                lit, np.maximum(n @ hv, 0) ** np.float32(shininess), 0)
        if shadows:
            val = np.where(cast_shadows(z_sh, lt), 0, val)
        clean[i] = np.where(mask, val * np.float32(inten[i]), 0)
    if exposure is None:
        obj = clean[:, mask]
        p = float(np.percentile(obj, 99.5)) if obj.size else 1.0
        exposure = 0.85 / p if p > 0 else 1.0
    clean *= np.float32(exposure)
    if noise > 0 or shot_noise > 0:
        sigma = np.sqrt(np.float32(noise) ** 2 + np.float32(shot_noise) * clean)
        clean = clean + sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    return np.clip(clean, 0.0, 1.0).astype(np.float32), normals


# ------------------------------------------------------------------------------------------
# whole captures
# ------------------------------------------------------------------------------------------


@dataclass
class RenderedPart:
    """Everything rendered for one part (in memory); :func:`write_rendered` saves it.

    ``images`` (K, H, W) float32 raw radiance (intensities multiplied in), ``lights`` (K, 3),
    ``intensities`` (K,), ``mask`` (H, W) bool, ``normals_gt`` (H, W, 3) of the (defective)
    height field, ``defect_mask`` (H, W) bool or None, ``defects`` records, ``part``, ``info``
    (render settings + part params, JSON-friendly)."""

    images: np.ndarray
    lights: np.ndarray
    intensities: np.ndarray
    mask: np.ndarray
    normals_gt: np.ndarray
    defect_mask: np.ndarray | None
    defects: list[dict[str, Any]]
    part: Part
    info: dict[str, Any]


def render_part(
    rng: np.random.Generator,
    *,
    size: int = 256,
    family: str = "disc",
    lights: int | np.ndarray = 12,
    layout: str = "diligent",
    defects: int = 0,
    defect_types: Sequence[str] | None = None,
    severity: float | tuple[float, float] | str | None = None,
    min_angle: float = 2.0,
    specular: bool = True,
    shadows: bool = True,
    noise: float = 0.002,
    name: str | None = None,
) -> RenderedPart:
    """Make a part, implant ``defects`` defects in its height field, render it.

    ``lights``: a count (with ``layout``) or a (K, 3) array. ``specular=False`` renders pure
    Lambertian; otherwise the part's own material (``params["material"]``). Light intensities
    vary by +-20 % per light (recorded; :func:`psinspect.capture.load_capture` divides them out).
    """
    part = make_part(rng, size=size, family=family, name=name)
    light_dirs = (default_lights(int(lights), layout) if np.ndim(lights) == 0
                  else np.asarray(lights, np.float32))
    height = part.height
    gt_mask, records = None, []
    if defects > 0:
        height, gt_mask, records = implant_defects_height(
            part.height, part.mask, rng, count=defects, types=defect_types, severity=severity,
            min_angle=min_angle)
    images, normals, inten, render = _shade(
        rng, height, part.albedo, part.mask, part.params["material"], light_dirs,
        layout if np.ndim(lights) == 0 else "custom", specular, shadows, noise)
    info = {
        "name": part.name, "family": family, "size": size, "params": part.params,
        "render": render,
        "defective": defects > 0, "num_defects": len(records), "min_angle": min_angle,
    }
    return RenderedPart(images=images, lights=light_dirs, intensities=inten, mask=part.mask,
                        normals_gt=normals, defect_mask=gt_mask, defects=records, part=part,
                        info=info)


def pad_part(part: Part, pad: int) -> Part:
    """``part`` with ``pad`` pixels added on every side (height and albedo continued from the
    edge, mask False): room for the poses of :func:`part_instance`."""
    return Part(height=np.pad(part.height, pad, mode="edge"),
                albedo=np.pad(part.albedo, pad, mode="edge"), mask=np.pad(part.mask, pad),
                name=part.name, params={**part.params, "pad": int(pad)})


@dataclass
class PartInstance:
    """One manufactured instance of a design in a pose (:func:`part_instance`).

    ``height``, ``albedo`` (H, W) float32 and ``mask`` (H, W) bool in the posed frame;
    ``defect_mask`` (H, W) bool (None without defects) and ``defects`` records;
    ``info``: the pose (``matrix`` (2, 3) source -> destination pixels, ``angle_deg``
    counter-clockwise on screen, ``shift_px``) and the manufacturing variation (``tilt_deg``)."""

    height: np.ndarray
    albedo: np.ndarray
    mask: np.ndarray
    defect_mask: np.ndarray | None
    defects: list[dict[str, Any]]
    info: dict[str, Any]


def part_instance(
    rng: np.random.Generator,
    design: Part,
    *,
    jitter_px: float = 3.0,
    jitter_deg: float = 3.0,
    defects: int | tuple[int, int] = 0,
    defect_types: Sequence[str] | None = None,
    severity: float | tuple[float, float] | str | None = None,
    min_angle: float = 2.0,
) -> PartInstance:
    """One instance of ``design`` as a production line makes and places it.

    Manufacturing variation first: a tilt of up to 0.3 deg about each image axis, a smooth
    height ripple (Gaussian-smoothed noise, 12 px, peak 0.15 px) and an albedo variation
    (Gaussian-smoothed noise, 8 px: about 0.7 % rms, 2-3 % at most); then a random in-plane
    pose (:func:`psinspect.align.random_pose`: shift up to ``jitter_px`` per axis, rotation up
    to ``jitter_deg`` about the image centre; height and albedo resampled bicubically); then
    ``defects`` library defects (a count, or an inclusive ``(lo, hi)`` range drawn here) in the
    POSED height field (:func:`psinspect.defects.implant_defects_height`), so their ground truth
    is in the frame of the captured images. Leave room around the part for the pose
    (:func:`pad_part`). Heights in pixel units, +z toward the camera; rows grow downward.
    """
    shape = design.mask.shape
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    tilt = np.radians(0.3) * rng.uniform(-1, 1, 2)
    ripple = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 12)
    ripple *= 0.15 / max(float(np.abs(ripple).max()), 1e-6)
    height = design.height + tilt[0] * cols + tilt[1] * rows + ripple
    albedo = design.albedo * (1 + 0.05 * cv2.GaussianBlur(
        rng.standard_normal(shape).astype(np.float32), (0, 0), 8) * 4)
    matrix, angle = random_pose(rng, shape, jitter_px, jitter_deg)
    # bicubic, not bilinear: bilinear blurs the surface grain by how far each sample falls
    # between pixels (the height's fine-scale rms 2-5 % lower at a half-pixel shift than at a
    # whole one, the albedo's 9-12 %), so an instance's sharpness depended on its pose and good
    # parts posed on whole pixels failed a model trained on jittered ones; bicubic keeps the
    # height's within about 1 % and the albedo's within about 3 %
    height = warp_image(height, matrix, shape, cv2.INTER_CUBIC)
    albedo = warp_image(np.clip(albedo, 0.05, 1.0), matrix, shape, cv2.INTER_CUBIC)
    mask = warp_image(design.mask.astype(np.float32), matrix, shape) > 0.5
    count = (int(defects) if np.ndim(defects) == 0
             else int(rng.integers(int(defects[0]), int(defects[1]) + 1)))
    gt, records = None, []
    if count > 0:
        height, gt, records = implant_defects_height(
            height, mask, rng, count=count, types=defect_types, severity=severity,
            min_angle=min_angle)
    turn = cv2.getRotationMatrix2D(((shape[1] - 1) / 2, (shape[0] - 1) / 2), angle, 1.0)
    info = {"matrix": matrix.tolist(), "angle_deg": angle,
            "shift_px": (matrix[:, 2] - turn[:, 2]).tolist(), "tilt_deg": np.degrees(tilt).tolist()}
    return PartInstance(height=height, albedo=albedo, mask=mask, defect_mask=gt,
                        defects=records, info=info)


def _shade(rng: np.random.Generator, height: np.ndarray, albedo: np.ndarray, mask: np.ndarray,
           material: dict[str, Any], light_dirs: np.ndarray, layout: str, specular: bool,
           shadows: bool, noise: float = 0.002
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The images of one capture under ``light_dirs`` with the part's ``material`` (its
    specular lobe unless ``specular`` is False) and light intensities varying by +-20 %:
    ``(images, normals_gt, intensities, render settings for part.json)``."""
    ks = float(material["ks"]) if specular else 0.0
    inten = rng.uniform(0.8, 1.2, len(light_dirs)).astype(np.float32)
    images, normals = render_images(height, albedo, mask, light_dirs, rng, specular=ks,
                                    shininess=float(material["shininess"]), shadows=shadows,
                                    noise=noise, intensities=inten)
    render = {"lights": int(len(light_dirs)), "layout": layout, "specular": ks,
              "shininess": float(material["shininess"]), "cast_shadows": shadows,
              "read_noise": noise, "shot_noise": 1e-5, "bits": 16}
    return images, normals, inten, render


#: the most parts (or instances) one ``render`` makes: a count of 1e11 ran until killed
#: (an audit); 10000 parts of 256 px with 12 lights are about 20 GB
MAX_PARTS = 10000


def _check_defect_args(defect_rate: float, max_defects: int,
                       defect_types: Sequence[str] | None) -> None:
    """The defect options shared by :func:`render_dataset` and :func:`render_instances`."""
    if not 0.0 <= defect_rate <= 1.0:
        raise PsinspectError(f"--defect-rate must be in [0, 1], got {defect_rate}")
    if defect_rate > 0 and not 1 <= max_defects <= MAX_DEFECTS:
        raise PsinspectError(f"--max-defects must be between 1 and {MAX_DEFECTS}, got "
                             f"{max_defects}")
    check_types(defect_types)


def write_rendered(folder: str | Path, rp: RenderedPart) -> Path:
    """Save a :class:`RenderedPart` as a capture folder (DiLiGenT layout via
    :func:`psinspect.capture.write_capture`) plus ``part.json``, and for a defective part
    ``M_defect.png`` (uint8 0/255) and ``defects.json`` (``{"min_angle", "defects": [...]}``)."""
    from psinspect.capture import write_capture

    folder = Path(folder)
    write_capture(folder, rp.images, rp.lights, rp.mask,
                  intensities=np.repeat(rp.intensities[:, None], 3, axis=1),
                  normals_gt=rp.normals_gt)
    save_json(folder / "part.json", rp.info)
    if rp.defect_mask is not None:
        save_png(folder / "M_defect.png", rp.defect_mask.astype(np.uint8) * 255)
        save_json(folder / "defects.json",
                  {"min_angle": rp.info["min_angle"], "defects": rp.defects})
    return folder


def render_dataset(
    out: str | Path,
    n_parts: int,
    *,
    defect_rate: float = 0.3,
    lights: int = 12,
    seed: int = 0,
    size: int = 256,
    layout: str = "diligent",
    families: Sequence[str] | None = None,
    max_defects: int = 3,
    defect_types: Sequence[str] | None = None,
    severity: float | tuple[float, float] | str | None = None,
    specular: bool = True,
    shadows: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Render ``n_parts`` parts into ``out/<name>/`` capture folders (see :func:`write_rendered`).

    Part ``i`` uses its own generator ``default_rng([seed, i])``, so a part does not depend on
    how many are rendered. Family drawn from ``families`` (default :data:`DEFAULT_FAMILIES`);
    with probability ``defect_rate`` it gets 1..``max_defects`` defects. Names are
    ``part<i:03d>_<family>``. Writes straight into ``out`` (callers stage it). Returns the folders.
    """
    if not 1 <= n_parts <= MAX_PARTS:
        raise PsinspectError(f"--parts must be between 1 and {MAX_PARTS}, got {n_parts}")
    _check_defect_args(defect_rate, max_defects, defect_types)
    fams = tuple(families) if families else DEFAULT_FAMILIES
    bad = [f for f in fams if f not in PART_FAMILIES]
    if bad:
        raise PsinspectError(f"--families: unknown {', '.join(bad)}; known: "
                             f"{', '.join(PART_FAMILIES)}")
    out = Path(out)
    paths = []
    for i in range(n_parts):
        rng, fam = _part_family(seed, i, fams)
        n_def = int(rng.integers(1, max_defects + 1)) if rng.random() < defect_rate else 0
        name = f"part{i:03d}_{fam}"
        try:  # (a defect that cannot be placed is said of its part; an option of all)
            rp = render_part(rng, size=size, family=fam, lights=lights, layout=layout,
                             defects=n_def, defect_types=defect_types, severity=severity,
                             specular=specular, shadows=shadows, name=name)
        except PsinspectError as err:
            raise PsinspectError(str(err) if str(err).startswith("--") else f"{name}: {err}"
                                 ) from None
        rp.info["seed"] = [int(seed), i]
        paths.append(write_rendered(out / name, rp))
        if progress is not None:
            progress(1)
    return paths


def _part_family(seed: int, i: int, families: Sequence[str]
                 ) -> tuple[np.random.Generator, str]:
    """Part ``i`` of :func:`render_dataset`'s seed ``seed``: its own generator and its
    family, the generator's first draw (the rest of the part is drawn after it)."""
    rng = np.random.default_rng([int(seed), i])
    return rng, families[int(rng.integers(len(families)))]


def part_names(n_parts: int, *, seed: int = 0,
               families: Sequence[str] | None = None) -> list[str]:
    """The folder (surface) names :func:`render_dataset` gives its parts with these
    arguments, without rendering them: ``part<i:03d>_<family>``."""
    fams = tuple(families) if families else DEFAULT_FAMILIES
    return [f"part{i:03d}_{_part_family(seed, i, fams)[1]}" for i in range(n_parts)]


#: room (pixels) :func:`render_instances` leaves around a design for the poses
INSTANCE_PAD = 16


def render_instances(
    out: str | Path,
    n_instances: int,
    *,
    design_seed: int = 0,
    seed: int = 0,
    family: str | None = None,
    jitter_px: float = 3.0,
    jitter_deg: float = 3.0,
    defect_rate: float = 0.0,
    max_defects: int = 2,
    lights: int = 12,
    layout: str = "diligent",
    size: int = 256,
    defect_types: Sequence[str] | None = None,
    severity: float | tuple[float, float] | str | None = None,
    specular: bool = True,
    shadows: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Render ``n_instances`` instances of ONE part design (known-part inspection data) into
    ``out/inst<i:03d>_<family>/`` capture folders (see :func:`write_rendered`).

    The design is ``make_part(default_rng(design_seed), size - 2 * INSTANCE_PAD, family)``
    (``family`` None: drawn from :data:`DEFAULT_FAMILIES` by that generator), padded to
    ``size``; instance ``i`` uses ``default_rng([seed, i])``: with probability ``defect_rate``
    it gets 1..``max_defects`` defects, then :func:`part_instance` (manufacturing variation,
    pose up to ``jitter_px`` / ``jitter_deg``, defects in the posed height field), rendered under
    the same rig with the design's material. So the same ``design_seed`` with another ``seed``
    gives new instances of the same part: good parts to learn from and new parts to inspect.
    ``part.json`` records the design seed and the instance's pose.
    """
    if not 1 <= n_instances <= MAX_PARTS:
        raise PsinspectError(f"--instances must be between 1 and {MAX_PARTS}, got "
                             f"{n_instances}")
    _check_defect_args(defect_rate, max_defects, defect_types)
    if size < 4 * INSTANCE_PAD:
        raise PsinspectError(f"--size must be at least {4 * INSTANCE_PAD} for instances, "
                             f"got {size}")
    if not (0 <= jitter_px <= INSTANCE_PAD and 0 <= jitter_deg <= 10):
        raise PsinspectError(f"--jitter-px must be in [0, {INSTANCE_PAD}] and --jitter-deg in "
                             f"[0, 10], got {jitter_px}, {jitter_deg}")
    if family is not None and family not in PART_FAMILIES:
        raise PsinspectError(f"--families: unknown {family}; known: {', '.join(PART_FAMILIES)}")
    drng = np.random.default_rng(int(design_seed))
    fam = family or DEFAULT_FAMILIES[int(drng.integers(len(DEFAULT_FAMILIES)))]
    design = pad_part(make_part(drng, size - 2 * INSTANCE_PAD, fam, name=f"design{design_seed}"),
                      INSTANCE_PAD)
    light_dirs = default_lights(int(lights), layout)
    out = Path(out)
    paths = []
    for i in range(n_instances):
        rng = np.random.default_rng([int(seed), i])
        n_def = int(rng.integers(1, max_defects + 1)) if rng.random() < defect_rate else 0
        inst = part_instance(rng, design, jitter_px=jitter_px, jitter_deg=jitter_deg,
                             defects=n_def, defect_types=defect_types, severity=severity)
        images, normals, inten, render = _shade(
            rng, inst.height, inst.albedo, inst.mask, design.params["material"], light_dirs,
            layout, specular, shadows)
        name = f"inst{i:03d}_{fam}"
        info = {
            "name": name, "family": fam, "size": size, "design_seed": int(design_seed),
            "seed": [int(seed), i], "params": design.params, "instance": inst.info,
            "render": render,
            "defective": n_def > 0, "num_defects": len(inst.defects), "min_angle": 2.0,
        }
        part = Part(height=inst.height, albedo=inst.albedo, mask=inst.mask, name=name,
                    params=design.params)
        rp = RenderedPart(images=images, lights=light_dirs, intensities=inten, mask=inst.mask,
                          normals_gt=normals, defect_mask=inst.defect_mask,
                          defects=inst.defects, part=part, info=info)
        paths.append(write_rendered(out / name, rp))
        if progress is not None:
            progress(1)
    return paths
