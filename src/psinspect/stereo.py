"""Calibrated photometric stereo: Lambertian least squares and a robust solver.

Model: a pixel with albedo ``rho`` and unit normal ``n`` seen under a distant light ``l`` (unit,
intensity-normalised) has radiance ``I = rho * max(n . l, 0)``. Both solvers estimate the scaled
normal ``g = rho * n`` per pixel, vectorised over all masked pixels.

- ``ls``: Woodham's least squares over all lights, ``g = pinv(L) I`` (one matrix product).
- ``robust``: per-pixel rank trimming then iteratively reweighted least squares; see
  :func:`solve_robust`.

Frames: lights and normals in the DiLiGenT camera frame, x right, y up, z toward the camera;
image rows grow downward (a row step is -y).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from psinspect.errors import PsinspectError

SOLVERS = ("ls", "robust")

#: relative residual (``|I - rho max(n.l, 0)| <= INLIER_TOL * rho``) below which a light counts
#: as explained by the Lambertian fit in the confidence map
INLIER_TOL = 0.1


@dataclass
class PSResult:
    """Output of a photometric stereo solve.

    Attributes:
        normals: (H, W, 3) float32, unit inside the mask, zero outside; DiLiGenT frame.
        albedo: (H, W) float32 (in the radiance units of the images), zero outside.
        confidence: (H, W) float32 in [0, 1], 1 = reliable, zero outside. The fraction of the
            lights whose observation the shadow-aware Lambertian fit explains to within
            ``INLIER_TOL`` of the albedo (the same definition for every solver).
    """

    normals: np.ndarray
    albedo: np.ndarray
    confidence: np.ndarray


# --------------------------------------------------------------------------------------------
# light subsets


def parse_light_spec(spec: str, num_lights: int) -> np.ndarray:
    """Parse a 1-based light selection like ``"1-20,40"`` -> sorted unique 0-based indices.

    Ranges are inclusive. Raises :class:`PsinspectError` (naming ``--lights``) for bad syntax,
    indices outside ``1..num_lights``, or fewer than 3 lights.
    """
    idx: set[int] = set()
    parts = [p.strip() for p in str(spec).split(",")]
    for part in parts:
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise PsinspectError(
                f"--lights {spec!r}: cannot parse {part!r} (use e.g. '1-20,40', 1-based)"
            )
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if a > b:
            raise PsinspectError(f"--lights {spec!r}: range {part!r} is descending")
        if a < 1 or b > num_lights:
            raise PsinspectError(
                f"--lights {spec!r}: {part!r} is outside the capture's lights 1-{num_lights}"
            )
        idx.update(range(a - 1, b))
    if len(idx) < 3:
        raise PsinspectError(f"--lights {spec!r}: photometric stereo needs at least 3 lights")
    return np.array(sorted(idx), dtype=np.int64)


def farthest_point_lights(lights: np.ndarray, k: int) -> np.ndarray:
    """Pick ``k`` lights spread over the hemisphere by farthest-point sampling.

    Deterministic: starts at the light closest to the camera axis +z, then repeatedly adds the
    light with the largest angular distance to the chosen set (ties -> lowest index).

    Args:
        lights: (K, 3) directions, DiLiGenT frame.
        k: how many to pick, ``3 <= k <= K``.

    Returns:
        (k,) int64 indices, sorted ascending.
    """
    lights = np.asarray(lights, dtype=np.float64)
    n = lights.shape[0]
    if not 3 <= k <= n:
        raise PsinspectError(f"--num-lights {k}: must be between 3 and the {n} lights available")
    unit = lights / np.linalg.norm(lights, axis=1, keepdims=True)
    chosen = [int(np.argmax(unit[:, 2]))]
    # angular distance via 1 - cos (monotone in the angle)
    dist = 1.0 - unit @ unit[chosen[0]]
    for _ in range(k - 1):
        dist[chosen] = -np.inf
        j = int(np.argmax(dist))
        chosen.append(j)
        dist = np.minimum(dist, 1.0 - unit @ unit[j])
    return np.array(sorted(chosen), dtype=np.int64)


# --------------------------------------------------------------------------------------------
# solvers


def _check_inputs(images: np.ndarray, lights: np.ndarray, mask: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.asarray(images)
    if images.ndim != 3:
        raise PsinspectError(f"images must be (K, H, W) grey, got shape {images.shape}")
    lights = np.asarray(lights, dtype=np.float64)
    k = images.shape[0]
    if lights.shape != (k, 3):
        raise PsinspectError(f"lights must be ({k}, 3) for {k} images, got {lights.shape}")
    if k < 3:
        raise PsinspectError(f"photometric stereo needs at least 3 lights, got {k}")
    if mask is None:
        mask = np.ones(images.shape[1:], dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != images.shape[1:]:
        raise PsinspectError(f"mask shape {mask.shape} != image shape {images.shape[1:]}")
    if np.linalg.matrix_rank(lights) < 3:
        raise PsinspectError("light directions are coplanar; photometric stereo needs 3-D lights")
    return images, lights, mask


def _confidence(obs: np.ndarray, lights: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Fraction of lights explained by the shadow-aware Lambertian model; (K, N), (N, 3) -> (N,)."""
    rho = np.linalg.norm(g, axis=1)
    pred = np.maximum(lights.astype(np.float32) @ g.T.astype(np.float32), 0.0)  # (K, N)
    ok = np.abs(obs - pred) <= np.float32(INLIER_TOL) * rho.astype(np.float32)
    return ok.mean(axis=0, dtype=np.float32)


def _assemble(g: np.ndarray, obs: np.ndarray, lights: np.ndarray, mask: np.ndarray) -> PSResult:
    h, w = mask.shape
    rho = np.linalg.norm(g, axis=1)
    good = rho > 1e-12
    n = np.zeros_like(g)
    n[good] = g[good] / rho[good, None]
    n[~good] = (0.0, 0.0, 1.0)  # no signal: facing the camera, confidence ~0
    normals = np.zeros((h, w, 3), dtype=np.float32)
    normals[mask] = n
    albedo = np.zeros((h, w), dtype=np.float32)
    albedo[mask] = rho
    conf = np.zeros((h, w), dtype=np.float32)
    conf[mask] = np.where(good, _confidence(obs, lights, g), 0.0)
    return PSResult(normals=normals, albedo=albedo, confidence=conf)


def solve_ls_pixels(obs: np.ndarray, lights: np.ndarray) -> np.ndarray:
    """Least-squares scaled normals ``g`` for observations (K, N) -> (N, 3) float64."""
    pinv = np.linalg.pinv(lights.astype(np.float64)).astype(np.float32)  # (3, K)
    return (pinv @ obs).T.astype(np.float64)


def _batched_wls(obs: np.ndarray, lights: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """Weighted LS per pixel: obs (N, K), weights (N, K), lights (K, 3) -> g (N, 3).

    Solves the 3x3 normal equations ``(L^T W L) g = L^T W I`` for all pixels in one batched
    ``np.linalg.solve``; a pixel whose system is (near) singular falls back to a tiny ridge.
    """
    lw = wts[:, :, None] * lights[None, :, :]  # (N, K, 3)
    a = np.einsum("nki,kj->nij", lw, lights)  # (N, 3, 3)
    b = np.einsum("nki,nk->ni", lw, obs)  # (N, 3)
    a += np.eye(3) * (1e-9 + 1e-6 * np.trace(a, axis1=1, axis2=2))[:, None, None]
    return np.linalg.solve(a, b[..., None])[..., 0]


def solve_robust_pixels(obs: np.ndarray, lights: np.ndarray, *, low: float = 0.25,
                        high: float = 0.1, iters: int = 5, c: float = 2.5) -> np.ndarray:
    """Robust scaled normals for observations (K, N) -> (N, 3) float64.

    1. Rank trimming: per pixel, the darkest ``low`` fraction of observations (likely attached
       or cast shadows) and the brightest ``high`` fraction (likely specular highlights) get
       weight 0; the rest weight 1; weighted LS gives a first ``g``.
    2. IRLS: observations predicted to be in attached shadow (``n . l <= 0``) or darker than
       a small fraction of the albedo are dropped; the others are weighted by Tukey's biweight of
       the residual scaled by ``c`` times the per-pixel median absolute residual.
    """
    k, _n = obs.shape
    o = np.ascontiguousarray(obs.T, dtype=np.float64)  # (N, K)
    lt = np.asarray(lights, dtype=np.float64)
    ranks = np.argsort(np.argsort(o, axis=1), axis=1)
    lo, hi = int(np.floor(low * k)), k - int(np.floor(high * k))
    if hi - lo < 3:
        lo, hi = 0, k
    wts = ((ranks >= lo) & (ranks < hi)).astype(np.float64)
    g = _batched_wls(o, lt, wts)
    for _ in range(iters):
        shade = g @ lt.T  # (N, K) predicted rho n.l
        rho = np.linalg.norm(g, axis=1, keepdims=True) + 1e-12
        res = o - shade
        valid = (shade > 0.02 * rho) & (o > 0.02 * rho)
        scale = np.median(np.where(valid, np.abs(res), np.nan), axis=1, keepdims=True)
        scale = np.nan_to_num(scale, nan=1.0)
        scale = np.maximum(scale * c * 1.4826, 1e-3 * rho)
        u = res / scale
        wts = np.where(valid & (np.abs(u) < 1.0), (1.0 - u**2) ** 2, 0.0)
        too_few = (wts > 0).sum(axis=1) < 3
        if too_few.any():
            wts[too_few] = 1.0
        g = _batched_wls(o, lt, wts)
    return g


def solve(images: np.ndarray, lights: np.ndarray, mask: np.ndarray | None = None,
          solver: str = "ls") -> PSResult:
    """Photometric stereo on a grey capture.

    Args:
        images: (K, H, W) float32 linear radiance, already divided by the light intensities.
        lights: (K, 3) unit light directions, DiLiGenT frame (x right, y up, z toward camera).
        mask: (H, W) bool object mask (None = every pixel).
        solver: ``"ls"`` (Lambertian least squares) or ``"robust"``.

    Returns:
        :class:`PSResult` with normals (H, W, 3), albedo (H, W), confidence (H, W).
    """
    if solver not in SOLVERS:
        raise PsinspectError(f"--solver {solver!r}: unknown solver (use one of {SOLVERS})")
    images, lights, mask = _check_inputs(images, lights, mask)
    obs = images[:, mask]
    if obs.dtype != np.float32:
        obs = obs.astype(np.float32)
    if solver == "ls":
        g = solve_ls_pixels(obs, lights)
    else:
        g = solve_robust_pixels(obs, lights)
    return _assemble(g, obs, lights, mask)


def run_photometric_stereo(capture, solver: str = "ls") -> PSResult:
    """:func:`solve` on a :class:`psinspect.capture.Capture`."""
    return solve(capture.images, capture.lights, capture.mask, solver=solver)
