"""Calibrated photometric stereo: Lambertian least squares and two robust solvers.

Model: a pixel with albedo ``rho`` and unit normal ``n`` seen under a distant light ``l`` (unit,
intensity-normalised) has radiance ``I = rho * max(n . l, 0)``. All solvers estimate the scaled
normal ``g = rho * n`` per pixel, vectorised over all masked pixels.

- ``ls``: Woodham's least squares over all lights, ``g = pinv(L) I`` (one matrix product).
- ``robust``: per-pixel rank trimming (shadows, highlights), automatic rejection of images whose
  brightness contradicts their light intensity, then iteratively reweighted least squares with
  Tukey's biweight; see :func:`solve_robust_pixels`. Training-free, one fixed set of settings.
- ``stable``: the same with a wider Tukey cut-off (:data:`STABLE_SETTINGS`): which lights count
  as outliers changes less when the set of lights changes, so two captures of one surface through
  different lights agree better (DiLiGenT cat, two 24-light subsets of the odd-numbered images:
  19 % of the pixels more than 2 deg apart instead of 25 %; BENCHMARKS.md), at a slightly larger
  error against the true normals. The solver of known-part inspection
  (:class:`psinspect.models.variation.VariationModel`), which compares captures with each other
  rather than with the truth.

Frames: lights and normals in the DiLiGenT camera frame, x right, y up, z toward the camera;
image rows grow downward (a row step is -y).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from psinspect.errors import PsinspectError

if TYPE_CHECKING:
    from psinspect.capture import Capture

SOLVERS = ("ls", "robust", "stable")

#: relative residual (``|I - rho max(n.l, 0)| <= INLIER_TOL * rho``) below which a light counts
#: as explained by the Lambertian fit in the confidence map
INLIER_TOL = 0.1

#: smallest accepted conditioning of a light set (:func:`light_conditioning`, the ratio of the
#: smallest to the largest singular value of the (K, 3) matrix of unit light directions; 0 =
#: coplanar). Below it the normals are dominated by noise: on DiLiGenT ball, 3-light subsets
#: below 0.01 gave 26-90 deg mean error (above 0.1: ~5 deg). The DiLiGenT 96-light sets have
#: ~0.31; the rendered layouts, their farthest-point subsets and azimuth halves >= 0.2.
MIN_LIGHT_CONDITIONING = 1e-2
#: unit light directions with z at or below this (up to rounding, e.g. cos 90 deg) point at or
#: behind the image plane, away from the camera, and are refused
MAX_BEHIND_Z = 1e-9


@dataclass
class PSResult:
    """Output of a photometric stereo solve.

    Attributes:
        normals: (H, W, 3) float32, unit inside the mask, zero outside; DiLiGenT frame.
        albedo: (H, W) float32 (in the radiance units of the images), zero outside.
        confidence: (H, W) float32 in [0, 1], 1 = reliable, zero outside. The fraction of the
            lights whose observation the shadow-aware Lambertian fit explains to within
            ``INLIER_TOL`` of the albedo (the same definition for every solver), counted over
            the lights the solver used.
        lights_used: (K,) bool, which of the input lights the solver used (the robust solver
            drops images whose brightness contradicts their light intensity).
        clipped_left_out: how many clipped observations (pixel x image) were left out of the
            solve (``solve(clipped=...)``; 0 where none were given).
    """

    normals: np.ndarray
    albedo: np.ndarray
    confidence: np.ndarray
    lights_used: np.ndarray | None = None
    clipped_left_out: int = 0


# --------------------------------------------------------------------------------------------
# light subsets


#: :func:`light_ranges` refuses light numbers above this (no capture has so many; a range up
#: to 10**12 would be listed light by light)
MAX_LIGHT_NUMBER = 100_000


def light_ranges(spec: str, option: str) -> list[int]:
    """Parse 1-based inclusive light ranges like ``"1-20,40"`` -> 0-based indices, in the
    order given, repeats kept. ``option`` (e.g. ``"--lights '1-20,40'"``) starts each error
    (:class:`PsinspectError`: bad syntax, a descending range, a light 0, a light past
    :data:`MAX_LIGHT_NUMBER`, more than that many lights in all)."""
    idx: list[int] = []
    for part in (p.strip() for p in str(spec).split(",")):
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise PsinspectError(f"{option}: cannot parse {part!r} (use e.g. '1-20,40', 1-based)")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if a > b:
            raise PsinspectError(f"{option}: range {part!r} is descending")
        if a < 1:
            raise PsinspectError(f"{option}: lights are numbered from 1; {part!r} starts at 0")
        if b > MAX_LIGHT_NUMBER:
            raise PsinspectError(f"{option}: {part!r} goes past light {MAX_LIGHT_NUMBER} (no "
                                 "capture has so many)")
        if len(idx) + b - a + 1 > MAX_LIGHT_NUMBER:  # ranges repeated (listing them costs GBs)
            raise PsinspectError(f"{option}: names more than {MAX_LIGHT_NUMBER} lights in all "
                                 "(repeats counted; no capture has so many)")
        idx.extend(range(a - 1, b))
    return idx


def format_light_ranges(indices: Sequence[int]) -> str:
    """0-based light indices -> their 1-based ranges as :func:`light_ranges` reads them:
    ``[0, 1, 2, 9]`` -> ``"1-3, 10"`` (sorted, repeats dropped)."""
    runs: list[list[int]] = []
    for i in sorted(set(int(i) + 1 for i in indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def lights_named(indices: Sequence[int]) -> str:
    """``"light 13 is"`` / ``"lights 13-20, 40 are"`` for 0-based ``indices``."""
    one = len(set(indices)) == 1
    return f"light{'' if one else 's'} {format_light_ranges(indices)} {'is' if one else 'are'}"


def parse_light_spec(spec: str, num_lights: int) -> np.ndarray:
    """Parse a 1-based light selection like ``"1-20,40"`` -> sorted unique 0-based indices.

    Ranges are inclusive; overlapping ranges and repeats select a light once. Raises
    :class:`PsinspectError` (naming ``--lights``) for bad syntax, indices outside
    ``1..num_lights``, or fewer than 3 different lights.
    """
    option = f"--lights {spec!r}"
    idx = light_ranges(spec, option)
    beyond = [i for i in idx if i >= num_lights]
    if beyond:
        raise PsinspectError(f"{option}: {lights_named(beyond)} outside the capture's "
                             f"lights 1-{num_lights}")
    if len(set(idx)) < 3:
        raise PsinspectError(
            f"{option}: photometric stereo needs at least 3 lights"
            + (f", and these are {len(set(idx))} different ones" if len(idx) >= 3 else ""))
    return np.array(sorted(set(idx)), dtype=np.int64)


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


def light_conditioning(lights: np.ndarray) -> float:
    """Conditioning of a light set: smallest / largest singular value of the (K, 3) matrix of
    the lights normalised to unit length, in [0, 1].

    Scale-free (independent of the lights' lengths and of K); 0 for coplanar (or fewer than 3,
    zero or non-finite) lights, ~0.3 for DiLiGenT's 96 lights.
    """
    lt = np.asarray(lights, dtype=np.float64)
    if lt.ndim != 2 or lt.shape[1] != 3 or lt.shape[0] < 3 or not np.isfinite(lt).all():
        return 0.0
    big = np.abs(lt).max(axis=1, keepdims=True)  # scale first: |v| of 1e308 overflows
    if (big == 0).any():
        return 0.0
    lt = lt / big
    sv = np.linalg.svd(lt / np.linalg.norm(lt, axis=1, keepdims=True), compute_uv=False)
    return float(sv[-1] / sv[0])


def light_set_distance_deg(a: np.ndarray, b: np.ndarray) -> float:
    """How far apart two light sets are (degrees): the largest angle from a light of either
    set to the nearest light of the other (the Hausdorff distance on the sphere), so the order
    of the lights does not count and 0 means the same directions.

    ``a``: (K, 3), ``b``: (L, 3) directions (any length > 0), DiLiGenT frame.
    """
    ua, ub = (np.asarray(v, np.float64) for v in (a, b))
    ua, ub = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (ua, ub))
    cos = np.clip(ua @ ub.T, -1.0, 1.0)
    return float(np.degrees(np.arccos(min(cos.max(axis=1).min(), cos.max(axis=0).min()))))


def check_lights_face_camera(lights: np.ndarray, label: str = "light directions") -> None:
    """One-line :class:`PsinspectError` starting with ``label`` when a light (K, 3) has z <= 0
    after normalisation (up to rounding, e.g. cos 90 deg): at or behind the image plane, i.e.
    pointing away from the camera (usually the opposite sign convention), which gives normals
    facing away from the camera."""
    lt = np.asarray(lights, dtype=np.float64)
    z = lt[:, 2] / np.maximum(np.linalg.norm(lt, axis=1), 1e-300)
    behind = z <= MAX_BEHIND_Z
    if behind.any():
        bad = int(np.flatnonzero(behind)[0])
        raise PsinspectError(
            f"{label}: light {bad + 1} has z = {z[bad]:.3f} <= 0, i.e. it points away from the "
            "camera; light directions point from the object toward the light, with x right, y "
            "up and z toward the camera (negate all vectors if the file uses the opposite sign)"
        )


#: :func:`check_shading`: a pixel shows shading when the Lambertian least-squares fit explains at
#: least this share of its brightness's variation over the lights (centred R^2) ...
SHADED_R2 = 0.5
#: ... and a capture in which fewer than this share of the object's pixels do (or change with
#: the light at all) is refused. Measured: the DiLiGenT ball, bear and cat 92-99 %, rendered
#: parts 99-100 %; sensor noise alone about 4 % under 12 lights (R^2 of noise on K lights is
#: Beta(1, (K - 3) / 2)-distributed: P(R^2 >= 0.5) = 0.5^((K - 3) / 2))
MIN_SHADED_SHARE = 0.1
#: noise is told from shading from this many lights on (with fewer, noise fits about as well)
MIN_LIGHTS_FOR_SHADING_TEST = 12
#: a refused object of fewer pixels has its mask named as the likelier cause
FEW_OBJECT_PIXELS = 50


def check_shading(images: np.ndarray, lights: np.ndarray, mask: np.ndarray, name: str,
                  max_pixels: int = 20000) -> None:
    """Refuse a capture in which no light reached the object (lights off, lens cap on, far
    too short an exposure, the wrong lights file): fewer than :data:`MIN_SHADED_SHARE` of its
    pixels change brightness with the light at all, or (from
    :data:`MIN_LIGHTS_FOR_SHADING_TEST` lights on) change as a lit surface does
    (:data:`SHADED_R2`). Scale-free, so a dim or 10-bit capture passes.
    ``images`` (K, H, W), ``lights`` (K, 3), ``mask`` (H, W) bool; at most ``max_pixels``
    object pixels (an even stride) are used."""
    obs = images[:, mask]
    n_obj = obs.shape[1]
    # a mask of a few pixels fails the test by chance: said as what it likely is
    tiny = (f" (the mask marks only {n_obj} pixel{'' if n_obj == 1 else 's'}: is it the "
            "object's mask?)" if n_obj < FEW_OBJECT_PIXELS else "")
    step = max(1, -(-obs.shape[1] // max_pixels))
    obs = obs[:, ::step].astype(np.float64)  # (K, n)
    if obs.shape[1] == 0:
        return
    centred = obs - obs.mean(axis=0)
    total = np.einsum("kn,kn->n", centred, centred)
    scale = np.abs(obs).max(axis=0)
    varies = total > (1e-6 * np.maximum(scale, 1e-30)) ** 2
    if varies.mean() < MIN_SHADED_SHARE:
        raise PsinspectError(
            f"{name}: the images do not change with the light on the object (on "
            f"{varies.mean():.0%} of its pixels; at least {MIN_SHADED_SHARE:.0%} needed): "
            "lights off, lens cap on, or far too short an exposure?" + tiny)
    if len(lights) < MIN_LIGHTS_FOR_SHADING_TEST:
        return
    lt = np.asarray(lights, np.float64)
    resid = obs - lt @ (np.linalg.pinv(lt) @ obs)
    r2 = 1.0 - np.einsum("kn,kn->n", resid, resid) / np.maximum(total, 1e-300)
    shaded = float(np.mean(varies & (r2 >= SHADED_R2)))
    if shaded < MIN_SHADED_SHARE:
        raise PsinspectError(
            f"{name}: the images show no shading on the object: on {shaded:.0%} of its pixels "
            f"(at least {MIN_SHADED_SHARE:.0%} needed) the brightness follows the light "
            "directions as a lit surface's does (lights off and only sensor noise, lens cap "
            "on, far too short an exposure, or the wrong lights file?)" + tiny)


def check_lights_conditioned(lights: np.ndarray, label: str = "light directions") -> None:
    """One-line :class:`PsinspectError` starting with ``label`` when the lights are (nearly)
    coplanar (:func:`light_conditioning` below :data:`MIN_LIGHT_CONDITIONING`)."""
    cond = light_conditioning(lights)
    if cond < MIN_LIGHT_CONDITIONING:
        raise PsinspectError(
            f"{label} are (nearly) coplanar (conditioning {cond:.2g} < "
            f"{MIN_LIGHT_CONDITIONING:g}), so the normals would be unreliable; "
            "use lights spread around the object, not along one line or plane"
        )


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
    if not np.isfinite(lights).all() or (np.abs(lights).max(axis=1) == 0).any():
        raise PsinspectError("light directions must be finite non-zero vectors")
    check_lights_face_camera(lights)
    check_lights_conditioned(lights)
    return images, lights, mask


def _confidence(obs: np.ndarray, lights: np.ndarray, g: np.ndarray,
                missing: np.ndarray | None = None) -> np.ndarray:
    """Fraction of lights explained by the shadow-aware Lambertian model; (K, N), (N, 3) -> (N,).
    ``missing`` (K, N) bool: observations left out of the solve (clipped), counted neither
    way: the fraction of the others."""
    gf = np.ascontiguousarray(g.T, dtype=np.float32)  # (3, N)
    tol = np.float32(INLIER_TOL) * np.sqrt((gf * gf).sum(axis=0))  # (N,)
    pred = lights.astype(np.float32) @ gf  # (K, N) predicted radiance, in place from here on
    np.maximum(pred, 0.0, out=pred)
    np.subtract(pred, obs, out=pred)
    np.abs(pred, out=pred)
    ok = np.less_equal(pred, tol, out=np.empty(pred.shape, dtype=bool))
    if missing is None:
        return ok.sum(axis=0, dtype=np.int32).astype(np.float32) / np.float32(len(lights))
    ok &= ~missing
    kept = len(lights) - missing.sum(axis=0, dtype=np.int32)
    return ok.sum(axis=0, dtype=np.int32).astype(np.float32) / np.maximum(kept, 1).astype(
        np.float32)


def _assemble(g: np.ndarray, obs: np.ndarray, lights: np.ndarray, mask: np.ndarray,
              missing: np.ndarray | None = None) -> PSResult:
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
    conf[mask] = np.where(good, _confidence(obs, lights, g, missing), 0.0)
    return PSResult(normals=normals, albedo=albedo, confidence=conf)


def solve_ls_pixels(obs: np.ndarray, lights: np.ndarray,
                    missing: np.ndarray | None = None) -> np.ndarray:
    """Least-squares scaled normals ``g`` for observations (K, N) -> (N, 3) float64;
    ``missing`` (K, N) bool: observations left out (:func:`clipped_to_leave_out`), each
    pixel with any solved over its others."""
    pinv = np.linalg.pinv(lights.astype(np.float64)).astype(np.float32)  # (3, K)
    g = (pinv @ obs).T.astype(np.float64)
    if missing is not None:
        cols = np.flatnonzero(missing.any(axis=0))
        g[cols] = batched_wls(np.ascontiguousarray(obs[:, cols].T), lights,
                              (~missing[:, cols]).T.astype(np.float32))
    return g


#: PS leaves a clipped observation out (:func:`clipped_to_leave_out`) only where the pixel's
#: other lights pin its normal down: their :func:`kept_conditioning` at least this (as step 4
#: of :func:`solve_robust_pixels`)
MIN_CLIPPED_FREE_CONDITIONING = 0.03


def clipped_to_leave_out(clipped: np.ndarray, lights: np.ndarray) -> np.ndarray | None:
    """Which clipped observations (``clipped`` (K, N) bool: at the camera's full scale, their
    true value unknown, only that it is higher) a solve leaves out: all of them, except at
    pixels whose other lights do not pin the normal down
    (:data:`MIN_CLIPPED_FREE_CONDITIONING`; fewer than 3 left, or nearly in one plane), which
    keep theirs. (K, N) bool, or None where none is left out."""
    cols = np.flatnonzero(clipped.any(axis=0))
    if cols.size == 0:
        return None
    free = kept_conditioning(lights, (~clipped[:, cols]).T.astype(np.float32))
    out = np.zeros(clipped.shape, bool)
    keep = cols[free >= MIN_CLIPPED_FREE_CONDITIONING]
    out[:, keep] = clipped[:, keep]
    return out if keep.size else None


def _solve_sym3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve N symmetric 3x3 systems by the adjugate (Cramer); a (N, 9) row-major, b (N, 3).

    Vectorised over N (much faster than a batched LAPACK call for 3x3); the caller keeps the
    systems positive definite with a small ridge.
    """
    a00, a01, a02, a11, a12, a22 = (a[:, i] for i in (0, 1, 2, 4, 5, 8))
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    det = a00 * c00 + a01 * c01 + a02 * c02
    inv_det = 1.0 / np.where(det != 0, det, 1.0)
    b0, b1, b2 = b[:, 0], b[:, 1], b[:, 2]
    x = np.empty_like(b)
    x[:, 0] = (c00 * b0 + c01 * b1 + c02 * b2) * inv_det
    x[:, 1] = (c01 * b0 + c11 * b1 + c12 * b2) * inv_det
    x[:, 2] = (c02 * b0 + c12 * b1 + c22 * b2) * inv_det
    return x


def _light_outers(lights: np.ndarray) -> np.ndarray:
    """Each light's outer product ``l l^T``, row-major: (K, 3) -> (K, 9), in ``lights``' dtype.
    ``wts @ _light_outers(L)`` gives every pixel's ``L^T W L`` at once."""
    return (lights[:, :, None] * lights[:, None, :]).reshape(-1, 9)


def batched_wls(obs: np.ndarray, lights: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """Weighted LS per pixel: obs (N, K), weights (N, K), lights (K, 3) -> g (N, 3) float64.

    The 3x3 normal equations ``(L^T W L) g = L^T W I`` of all pixels are built with two matrix
    products (``W @ vec(l l^T)`` and ``(W * I) @ L``) and solved in closed form; a tiny ridge
    keeps (near) singular systems finite.
    """
    lf = lights.astype(np.float32)
    a = (wts @ _light_outers(lf)).astype(np.float64)  # (N, 9)
    b = ((wts * obs) @ lf).astype(np.float64)
    ridge = 1e-9 + 1e-6 * (a[:, 0] + a[:, 4] + a[:, 8])
    a[:, 0] += ridge
    a[:, 4] += ridge
    a[:, 8] += ridge
    return _solve_sym3(a, b)


def _rank_trimmed(obs: np.ndarray, lights: np.ndarray, low: float, high: float,
                  missing: np.ndarray | None = None) -> np.ndarray:
    """LS on each pixel's observations between the ``low`` and ``1 - high`` rank fractions.

    obs (N, K) float32 -> g (N, 3). Ties at the cut values are kept. ``missing`` (N, K) bool:
    observations left out (clipped: ranked as the brightest, whatever their value after the
    intensity division, as their true value is higher).
    """
    k = obs.shape[1]
    lo, hi = int(np.floor(low * k)), k - int(np.floor(high * k))
    if hi - lo < 3:
        lo, hi = 0, k
    ranked = obs if missing is None else np.where(missing, np.float32(np.inf), obs)
    cuts = np.partition(ranked, [lo, hi - 1], axis=1)
    wts = ((ranked >= cuts[:, lo:lo + 1]) & (ranked <= cuts[:, hi - 1:hi])).astype(np.float32)
    if missing is not None:
        wts[missing] = 0.0
    return batched_wls(obs, lights, wts)


def _lower_median(values: np.ndarray, valid: np.ndarray, axis: int) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Lower median of ``values`` over ``axis`` counting only ``valid`` entries -> (median,
    count); the median is +inf where nothing is valid."""
    v = np.where(valid, values, np.inf)
    v.sort(axis=axis)
    n = valid.sum(axis=axis)
    idx = np.expand_dims(np.maximum((n - 1) // 2, 0), axis)
    return np.take_along_axis(v, idx, axis=axis).squeeze(axis), n


def image_gain_ratios(obs: np.ndarray, lights: np.ndarray, g: np.ndarray,
                      min_shading: float = 0.3, min_pixels: int = 50,
                      max_pixels: int = 20000, missing: np.ndarray | None = None
                      ) -> np.ndarray:
    """Per-image brightness relative to a fitted Lambertian model.

    For image k: the median over well-lit pixels (predicted ``n . l >= min_shading``) of
    ``I_k / (g . l_k)``, divided by the median over images. A value far from 1 means the image
    is brighter or darker than its light intensity says (a calibration fault). NaN where fewer
    than ``min_pixels`` pixels are well lit. At most ``max_pixels`` pixels (an even stride) are
    used; ``missing`` (N, K) bool: observations left out (clipped).

    obs (N, K), lights (K, 3), g (N, 3) -> (K,) float64.
    """
    step = max(1, -(-obs.shape[0] // max_pixels))
    o, gs = obs[::step], g[::step]
    shade = (lights @ gs.T).astype(np.float32)  # (K, n)
    rho = np.linalg.norm(gs, axis=1).astype(np.float32)
    lit = shade >= min_shading * rho
    if missing is not None:
        lit &= ~missing[::step].T
    ratio = o.T / np.maximum(shade, 1e-12)
    med, counts = _lower_median(ratio, lit, axis=1)
    out = np.where(counts >= min_pixels, med, np.nan).astype(np.float64)
    if np.isfinite(out).any():
        ref = np.nanmedian(out)
        out = out / ref if ref > 0 else np.full_like(out, np.nan)  # (no light at all: NaN)
    return out


def kept_conditioning(lights: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """Per pixel, how well the weighted lights pin a normal down: smallest / largest singular
    value of ``sqrt(W) L`` (as :func:`light_conditioning` for the whole set), from the 3x3
    matrix ``L^T W L``; lights (K, 3) unit, wts (N, K) -> (N,) in [0, 1], 0 where fewer than 3
    lights have weight.

    Near the shadow line of a curved part only lights from one side light a pixel; where those
    lie nearly in one plane with the view (a row of a light grid), their observations fix the
    normal in two directions only and the fit can settle on a normal turned through that plane,
    up to upside down, that predicts light where the pixel is dark.
    """
    a = (wts.astype(np.float64) @ _light_outers(lights.astype(np.float64))).reshape(-1, 3, 3)
    ev = np.linalg.eigvalsh(a)  # ascending
    top = ev[:, -1]
    ratio = np.maximum(ev[:, 0], 0.0) / np.where(top > 0, top, 1.0)
    return np.where(top > 0, np.sqrt(ratio), 0.0)


def _tukey_irls(obs: np.ndarray, lights: np.ndarray, g: np.ndarray, iters: int, c: float,
                shadow: float, missing: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """IRLS with Tukey's biweight; obs (N, K) float32, g (N, 3) -> (g, weights (N, K));
    ``missing`` (N, K) bool: observations left out (weight 0)."""
    lf = lights.astype(np.float32)
    wts = np.ones_like(obs)
    for _ in range(iters):
        gf = g.astype(np.float32)
        shade = gf @ lf.T  # (N, K) predicted rho n.l
        rho = np.sqrt((gf * gf).sum(axis=1, keepdims=True)) + np.float32(1e-12)
        thr = np.float32(shadow) * rho
        valid = shade > thr
        valid &= obs > thr
        if missing is not None:
            valid &= ~missing
        res = np.subtract(obs, shade, out=shade)
        res /= rho  # albedo-relative residual
        mad, nvalid = _lower_median(np.abs(res), valid, axis=1)
        scale = np.where(nvalid >= 3, mad, 1.0).astype(np.float32)
        scale = np.float32(c * 1.4826) * np.maximum(scale, np.float32(1e-4))
        res /= scale[:, None]  # u
        np.square(res, out=res)
        np.subtract(np.float32(1.0), res, out=res)
        np.maximum(res, 0.0, out=res)
        np.square(res, out=res)  # Tukey weight (1 - u^2)^2 for |u| < 1
        res[~valid] = 0.0
        wts = res
        too_few = (wts > 0).sum(axis=1) < 3
        if too_few.any():  # keep the previous estimate's support rather than nothing
            keep = obs[too_few] > 0
            if missing is not None:
                keep &= ~missing[too_few]
            wts[too_few] = keep.astype(np.float32)
        g = batched_wls(obs, lights, wts)
    return g, wts


@dataclass(frozen=True)
class RobustSettings:
    """Settings of the robust solver (fixed for all objects; no per-object tuning).

    low, high: fractions of each pixel's darkest / brightest observations left out of the
        initial fit (shadows / specular highlights).
    iters: IRLS iterations. c: Tukey biweight cut-off in units of the per-pixel robust residual
        scale (1.4826 x median absolute residual). shadow: observations whose predicted or
        measured shading is below ``shadow x albedo`` count as shadowed (weight 0).
    image_gain_tol: images whose :func:`image_gain_ratios` deviates from 1 by more than this are
        left out (mis-calibrated light intensity); at most ``max_dropped_fraction`` of the images.
    min_kept_conditioning: a pixel whose kept, lit observations' lights (weighted by their
        final Tukey weights) are conditioned below this (:func:`kept_conditioning`) is solved
        by least squares over all the lights instead: they do not pin its normal down (step 4
        of :func:`solve_robust_pixels`; 0 turns the step off).
    """

    low: float = 0.25
    high: float = 0.3
    iters: int = 4
    c: float = 2.0
    shadow: float = 0.1
    image_gain_tol: float = 0.05
    max_dropped_fraction: float = 0.5
    min_kept_conditioning: float = 0.03


#: settings of the ``stable`` solver: Tukey cut-off 4 robust sigmas instead of 2 (see the module
#: docstring and BENCHMARKS.md, known-part inspection)
STABLE_SETTINGS = RobustSettings(c=4.0)


def solve_robust_pixels(obs: np.ndarray, lights: np.ndarray,
                        settings: RobustSettings | None = None,
                        missing: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Robust scaled normals for observations (K, N).

    1. Rank trimming: per pixel, the darkest ``low`` and brightest ``high`` fractions of the
       observations are left out; weighted LS on the rest gives a first ``g``.
    2. Image-level outlier rejection: images whose overall brightness disagrees with that fit by
       more than ``image_gain_tol`` (a wrong light intensity, e.g. DiLiGenT bear's first images)
       are dropped and step 1 is repeated.
    3. IRLS with Tukey's biweight on the albedo-relative residual, scaled per pixel by its
       median absolute residual; predicted attached shadows and dark observations get weight 0.
    4. Pixels whose kept, lit observations do not determine the normal
       (:func:`kept_conditioning` below ``min_kept_conditioning``; lit: above ``shadow`` times
       the larger of the robust and the least-squares albedo) are solved by least squares over
       all the (used) lights, so that their dark observations count too. Near a shadow line a
       pixel is lit by a few lights, in nearly one plane with the view (the fit can turn the
       normal through that plane, up to upside down) or only 2 (the fit can reject both and
       settle on a near-zero albedo that explains the dark ones). Without this step, 8-light
       subsets of the benchmark's rendered parts had 0.65 % of their pixels more than 45 deg
       off, and DiLiGenT ball through every 4th light 55 pixels more than 90 deg off;
       BENCHMARKS.md, photometric stereo.

    ``missing`` (K, N) bool: observations left out of every step (clipped ones,
    :func:`clipped_to_leave_out`).

    Returns ``(g (N, 3) float64, used (K,) bool)``: the scaled normals and which images were used.
    """
    st = settings or RobustSettings()
    o = np.ascontiguousarray(obs.T, dtype=np.float32)  # (N, K)
    miss = None if missing is None else np.ascontiguousarray(missing.T)
    lt = np.asarray(lights, dtype=np.float64)
    k = lt.shape[0]
    used = np.ones(k, dtype=bool)
    g = _rank_trimmed(o, lt, st.low, st.high, miss)
    if k > 6 and o.shape[0] >= 50:
        gain = image_gain_ratios(o, lt, g, missing=miss)
        bad = np.abs(gain - 1.0) > st.image_gain_tol  # NaN -> False: kept
        if bad.any() and bad.sum() <= st.max_dropped_fraction * k \
                and light_conditioning(lt[~bad]) >= MIN_LIGHT_CONDITIONING:
            used = ~bad
            o = np.ascontiguousarray(o[:, used])
            lt = lt[used]
            if miss is not None:  # (the other lights of a pixel must still pin it down)
                kept = clipped_to_leave_out(np.ascontiguousarray(missing[used]), lt)
                miss = None if kept is None else np.ascontiguousarray(kept.T)
            g = _rank_trimmed(o, lt, st.low, st.high, miss)
    g, wts = _tukey_irls(o, lt, g, st.iters, st.c, st.shadow, miss)
    # the kept observations that are lit: above the shadow level of the larger of the robust
    # and the least-squares albedo (a pixel lit by fewer than 3 lights keeps dark ones, and its
    # fit can settle on a near-zero albedo that only explains the dark ones)
    g_ls = solve_ls_pixels(np.ascontiguousarray(o.T), lt,
                           None if miss is None else np.ascontiguousarray(miss.T))
    rho = np.sqrt(np.maximum((g * g).sum(axis=1), (g_ls * g_ls).sum(axis=1)))[:, None]
    lit = np.where(o > np.float32(st.shadow) * rho.astype(np.float32), wts, np.float32(0.0))
    loose = kept_conditioning(lt, lit) < st.min_kept_conditioning
    g[loose] = g_ls[loose]
    return g, used


def check_solver(solver: str) -> str:
    """``solver`` if it names one of :data:`SOLVERS`, else a one-line :class:`PsinspectError`."""
    if solver not in SOLVERS:
        raise PsinspectError(
            f"--solver {solver!r}: unknown solver (use one of {', '.join(SOLVERS)})")
    return solver


def solve(images: np.ndarray, lights: np.ndarray, mask: np.ndarray | None = None,
          solver: str = "ls", clipped: np.ndarray | None = None) -> PSResult:
    """Photometric stereo on a grey capture.

    Args:
        images: (K, H, W) float32 linear radiance, already divided by the light intensities.
        lights: (K, 3) unit light directions, DiLiGenT frame (x right, y up, z toward camera).
        mask: (H, W) bool object mask (None = every pixel).
        solver: ``"ls"`` (Lambertian least squares), ``"robust"`` or ``"stable"`` (robust with
            :data:`STABLE_SETTINGS`).
        clipped: (K, H, W) bool, observations at the camera's full scale to leave out of the
            solve (their true value is unknown; :func:`clipped_to_leave_out`), or None (an
            over-exposed capture's, :attr:`psinspect.capture.Capture.clipped`).

    Returns:
        :class:`PSResult` with normals (H, W, 3), albedo (H, W), confidence (H, W).

    Raises:
        PsinspectError: unknown solver, mismatched shapes, fewer than 3 lights, non-finite or
        zero light vectors, lights with z <= 0, (nearly) coplanar lights
        (:func:`check_lights_conditioned`).
    """
    check_solver(solver)
    images, lights, mask = _check_inputs(images, lights, mask)
    obs = images[:, mask]
    if obs.dtype != np.float32:
        obs = obs.astype(np.float32)
    missing = None
    if clipped is not None:
        clipped = np.asarray(clipped, bool)
        if clipped.shape != images.shape:
            raise PsinspectError(f"clipped must be {images.shape} as the images, got "
                                 f"{clipped.shape}")
        missing = clipped_to_leave_out(clipped[:, mask], lights)
    if solver == "ls":
        g = solve_ls_pixels(obs, lights, missing)
        used = np.ones(len(lights), dtype=bool)
    else:
        g, used = solve_robust_pixels(obs, lights,
                                      STABLE_SETTINGS if solver == "stable" else None, missing)
    if not used.all():
        obs, lights = obs[used], lights[used]
        missing = None if missing is None else clipped_to_leave_out(missing[used], lights)
    res = _assemble(g, obs, lights, mask, missing)
    res.lights_used = used
    res.clipped_left_out = 0 if missing is None else int(missing.sum())
    return res


class FrameWarning(UserWarning):
    """The normals of a capture look solved with its lights in another frame
    (:func:`warn_flipped_lights`)."""


#: how far (a factor, :func:`image_gain_ratios`) an image's brightness may be off its light
#: intensity, either way, before the ``ls`` solver, which takes every image in, warns about it
#: (the robust solvers leave out images off by more than ``RobustSettings.image_gain_tol``):
#: gross faults only. Good captures: DiLiGenT ball and cat within 1.06x; default renders of
#: shiny discs and plates up to 1.43x (highlights); DiLiGenT bear's known-bad first images
#: 1.29x; a light that did not fire: 0x
LS_IMAGE_GAIN_WARN = 2.0


def run_photometric_stereo(capture: Capture, solver: str = "ls") -> PSResult:
    """:func:`solve` on a :class:`psinspect.capture.Capture`; a warning where the normals
    look solved with lights in another frame (:func:`warn_flipped_lights`) and, for the
    ``ls`` solver, about images far brighter or darker than their light intensity says
    (:data:`LS_IMAGE_GAIN_WARN`): least squares takes them in (one black image of 24 doubled
    the error on DiLiGenT ball), where the robust solvers leave them out and say so."""
    import warnings

    res = solve(capture.images, capture.lights, capture.mask, solver=solver,
                clipped=capture.clipped)
    warn_flipped_lights(res.normals, capture)
    if solver == "ls" and capture.num_lights > 6:
        # judged against the robust solver's first fit (the least-squares one is bent by the
        # very images in question, and makes others look off too)
        mask = capture.mask
        step = max(1, -(-int(mask.sum()) // 20000))  # (as image_gain_ratios samples)
        obs = np.ascontiguousarray(capture.images[:, mask][:, ::step].T, np.float32)
        lights = capture.lights.astype(np.float64)
        missing = None if capture.clipped is None else clipped_to_leave_out(
            capture.clipped[:, mask][:, ::step], lights)
        miss = None if missing is None else np.ascontiguousarray(missing.T)
        st = RobustSettings()
        gain = image_gain_ratios(obs, lights, _rank_trimmed(obs, lights, st.low, st.high, miss),
                                 missing=miss)
        with np.errstate(divide="ignore"):  # (a black image: 0, log -inf; NaN: not judged)
            off = np.flatnonzero(np.abs(np.log(gain)) > np.log(LS_IMAGE_GAIN_WARN))
        if off.size:
            which = ", ".join(f"{int(capture.light_indices[i]) + 1} ({gain[i]:.2f}x)"
                              for i in off[:8]) + (", ..." if off.size > 8 else "")
            warnings.warn(
                f"{capture.path or capture.name}: {off.size} image(s) are far brighter or "
                f"darker than their light intensity says (light {which}: a light that did "
                "not fire, a wrong intensity, over-exposure): least squares takes them in and "
                "bends the normals; the robust solver leaves such images out",
                UserWarning, stacklevel=2)
    return res


def warn_flipped_lights(normals: np.ndarray, capture: Capture) -> None:
    """Warn (:class:`FrameWarning`) where ``normals`` (H, W, 3), solved from ``capture``, fit
    a surface better in another frame: its light directions are most likely in a frame with
    x or y flipped, or exchanged (:func:`psinspect.normalmap.frame_note`)."""
    import warnings

    from psinspect.normalmap import frame_note

    note = frame_note(normals, capture.mask, str(capture.path or capture.name),
                      what="its light directions (the lights file)",
                      flip_fix="light directions with y down, e.g. taken from image rows, "
                               "need y negated")
    if note is not None:
        warnings.warn(note, FrameWarning, stacklevel=3)
