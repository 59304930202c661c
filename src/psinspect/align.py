"""In-plane rigid registration of normal maps (translation + rotation about the optical axis).

Frame: DiLiGenT camera frame, x right, y up, z toward the camera; image rows grow downward. Pixel
coordinates are ``(col, row)`` as in OpenCV. A part turned by ``angle_deg`` counter-clockwise as
seen on screen is turned by the same angle about +z in the camera frame, so its normal vectors
rotate by ``R_z(angle)``: ``nx' = c nx - s ny``, ``ny' = s nx + c ny``.

Registration image. Rotating a part about z changes ``nx, ny`` but not ``nz``, so registration
uses ``mask * (1 + nz) / 2`` (the slant of the surface, plus a step at the silhouette), which is
the same for every in-plane pose. The estimate is a coarse search over angles (phase correlation
for the shift at each angle) refined by OpenCV's ECC (maximises the correlation coefficient).
Given the normal maps too, the coarse search also compares the in-plane components ``nx, ny``
(turned with each candidate): ``nz`` cannot tell a surface sloping one way from one sloping the
other way, so a toothed part's ``nz`` image repeats every half tooth, and a part turned a few
degrees was registered half a tooth off (its flanks' normals then point the wrong way).

Supported range (defaults): shifts up to ``DEFAULT_MAX_SHIFT_PX`` pixels and rotations up to
``DEFAULT_MAX_ROTATION_DEG`` degrees; larger poses and registrations whose final correlation is
below ``DEFAULT_MIN_CORRELATION`` are refused with a :class:`PsinspectError`.

Turned parts. A part put down by a quarter or half turn can fit its design almost as well
unturned (a square-ish casting's slant image barely changes: correlation 0.87-0.93) and was
registered a degree or two off, then failed as one big defect. Before the search, every whole
degree of turn is therefore scored at once (:func:`turn_fits`: both parts on polar grids about
their centroids, so a turn is a shift along the angle axis, in turn-invariant quantities, one
FFT); where the best turn beyond the search is 45 deg or more and fits much better than any
turn the search can reach (:func:`turn_outside`), the part is refused with that turn. A part
that looks the same turned (a plain disc, a toothed wheel turned by whole teeth) fits about as
well at both and is not refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from psinspect.errors import PsinspectError
from psinspect.normalmap import normalize, rotate_vectors

#: largest supported translation of a part relative to the reference, pixels
DEFAULT_MAX_SHIFT_PX = 20.0
#: largest supported in-plane rotation of a part relative to the reference, degrees
DEFAULT_MAX_ROTATION_DEG = 10.0
#: registrations whose correlation coefficient ends below this are refused
DEFAULT_MIN_CORRELATION = 0.7
#: the coarse angle search covers this many times the supported range, so that a pose a little
#: outside the range is recognised (and refused) rather than mis-registered
_SEARCH_FACTOR = 2.0
_COARSE_STEP_DEG = 2.0
#: coarse candidates within this NCC of the best count as equally good (symmetric parts)
_TIE_NCC = 2e-3
#: the coarse angle search runs on images of at most this many pixels (longer side)
COARSE_SIZE = 256
#: the ECC refinement runs on images of at most this many pixels (longer side)
FINE_SIZE = 1024
#: the turn check (:func:`turn_outside`) runs on images of at most this many pixels (longer
#: side), sampled on a polar grid of this many radii and one angle per degree
TURN_CHECK_SIZE = 128
_TURN_RADII = 64
#: a channel whose energy is below this share of the largest one's counts as that much
_TURN_ENERGY_FLOOR = 1e-4
#: the turn check looks for turns of at least this many degrees (or beyond the coarse search,
#: if that is wider); smaller ones are left to the range check after registration
_TURN_MIN_DEG = 45.0
#: such a turn is said when its misfit (1 - fit) is at most ``_TURN_MAX_MISFIT`` and the best
#: misfit within the search exceeds ``_TURN_RATIO`` times it plus ``_TURN_SLACK`` (see
#: :func:`turn_outside`)
_TURN_MAX_MISFIT = 0.05
_TURN_RATIO = 2.5
_TURN_SLACK = 0.002


@dataclass(frozen=True)
class RigidTransform:
    """Maps pixel coordinates of a moving image into the reference image.

    ``p_ref = R(angle) (p - center) + center + (tx, ty)`` with ``p = (col, row)`` and ``R`` the
    OpenCV rotation (counter-clockwise on screen for a positive angle, i.e. about +z in the camera
    frame). ``center`` is the centre of the reference image.
    """

    angle_deg: float
    tx: float
    ty: float
    center: tuple[float, float]

    def matrix(self) -> np.ndarray:
        """(2, 3) float64 affine matrix moving -> reference (OpenCV convention)."""
        m = cv2.getRotationMatrix2D(self.center, self.angle_deg, 1.0)
        m[0, 2] += self.tx
        m[1, 2] += self.ty
        return m

    def inverse_matrix(self) -> np.ndarray:
        """(2, 3) float64 affine matrix reference -> moving."""
        return cv2.invertAffineTransform(self.matrix())

    @staticmethod
    def from_matrix(m: np.ndarray, center: tuple[float, float]) -> RigidTransform:
        """Rigid transform from a (2, 3) moving -> reference matrix (scale is ignored)."""
        angle = math.degrees(math.atan2(m[0, 1], m[0, 0]))
        base = cv2.getRotationMatrix2D(center, angle, 1.0)
        return RigidTransform(angle, float(m[0, 2] - base[0, 2]), float(m[1, 2] - base[1, 2]),
                              center)

    @staticmethod
    def identity(shape_hw: tuple[int, int]) -> RigidTransform:
        """No motion, centred on an image of shape ``(H, W)``."""
        return RigidTransform(0.0, 0.0, 0.0, _center(shape_hw))


@dataclass(frozen=True)
class Registration:
    """Result of :func:`register`: the transform and the final correlation coefficient."""

    transform: RigidTransform
    correlation: float
    #: displacement of the moving part's centroid, pixels
    shift_px: float


def _center(shape_hw: tuple[int, int]) -> tuple[float, float]:
    return ((shape_hw[1] - 1) / 2.0, (shape_hw[0] - 1) / 2.0)


def registration_image(normals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pose-invariant grey image used for registration: ``mask * (1 + nz) / 2``.

    ``normals``: (H, W, 3) float32, camera frame; ``mask``: (H, W) bool. Returns (H, W) float32 in
    [0, 1]; 0 outside the mask.
    """
    nz = np.asarray(normals, np.float32)[..., 2]
    return np.where(mask, 0.5 * (1.0 + nz), 0.0).astype(np.float32)


def random_pose(rng: np.random.Generator, shape_hw: tuple[int, int], shift_px: float,
                rotation_deg: float) -> tuple[np.ndarray, float]:
    """A random in-plane pose: ``(matrix (2, 3), angle_deg)``, a turn by a uniform angle in
    ``[-rotation_deg, rotation_deg]`` (counter-clockwise on screen, cv2's sense) about the image
    centre, then a shift uniform in ``[-shift_px, shift_px]`` along each axis; the matrix maps
    source to destination pixels (:func:`warp_image`, :func:`warp_normals`)."""
    h, w = shape_hw
    angle = float(rng.uniform(-rotation_deg, rotation_deg))
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    m[:, 2] += rng.uniform(-shift_px, shift_px, 2)
    return m, angle


def warp_image(
    image: np.ndarray,
    matrix: np.ndarray,
    shape_hw: tuple[int, int],
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Warp ``image`` (H, W) or (H, W, C) float32 with a (2, 3) source -> destination matrix.

    Output (shape_hw[0], shape_hw[1], ...) float32; pixels that come from outside are 0.
    """
    img = np.ascontiguousarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[2] > 4:
        # OpenCV warps more than 4 channels at sample positions rounded to 1/32 px (and a
        # channel's values then depend on how many are warped with it): 4 at a time
        return np.concatenate([
            warp_image(img[..., i:i + 4], matrix, shape_hw, interpolation).reshape(
                *shape_hw, -1) for i in range(0, img.shape[2], 4)], axis=-1)
    return cv2.warpAffine(img, matrix, (shape_hw[1], shape_hw[0]), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def warp_stack(stack: np.ndarray, matrix: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """:func:`warp_image` of a (C, H, W) stack of images; returns (C, h, w) float32."""
    out = warp_image(np.moveaxis(np.asarray(stack, np.float32), 0, -1), matrix, shape_hw)
    return np.moveaxis(out.reshape(tuple(shape_hw) + (-1,)), -1, 0)


def matrix_angle(matrix: np.ndarray) -> float:
    """In-plane rotation (degrees, counter-clockwise) of a (2, 3) pixel matrix: the angle by
    which :func:`warp_normals` turns vectors (and light directions turn with a part)."""
    return math.degrees(math.atan2(matrix[0, 1], matrix[0, 0]))


def local_shift(normals: np.ndarray, mask: np.ndarray, reference: np.ndarray,
                max_px: float, block: int = 32, step: int = 16) -> np.ndarray:
    """A smooth field of small shifts that lines ``normals`` up with ``reference`` locally.

    ``normals``, ``reference``: (H, W, 3) float32 in the same frame (``reference`` already
    registered); ``mask``: (H, W) bool pixels to use. On blocks of ``block`` px every ``step``
    px the shift ``d`` minimising ``sum |normals(p) - reference(p - d)|^2`` to first order
    (least squares on the REFERENCE's spatial gradient, slightly ridged, so that only the
    reference's own structure can move: a dent on a smooth stretch does not) is clipped to
    ``max_px``, then interpolated and smoothed over ``step / 2`` px. Returns (H, W, 2) float32
    ``(dx, dy)`` in pixels (columns, rows): ``reference(p - d(p))`` lines up with
    ``normals(p)``. A rigid registration leaves sub-pixel misfits where PS places a sharp
    crease a little differently (another light set); this absorbs them.
    """
    n = np.asarray(normals, np.float32)
    h, w = mask.shape
    # central differences need both neighbours inside: the mask eroded by a 3 x 3 cross
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    inner = cv2.erode(np.asarray(mask, np.uint8), cross, borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).astype(bool)
    ref = np.asarray(reference, np.float32)
    gy, gx = np.gradient(ref, axis=(0, 1))  # reference(p - d) ~ reference(p) - (gx, gy) . d
    wt = inner.astype(np.float32)[..., None]
    jx, jy, r = gx * wt, gy * wt, (ref - n) * wt
    # per-pixel products, summed over each block with a box filter
    prods = np.stack([(jx * jx).sum(2), (jx * jy).sum(2), (jy * jy).sum(2), (jx * r).sum(2),
                      (jy * r).sum(2), wt[..., 0]], axis=-1)
    sums = cv2.boxFilter(prods, -1, (block, block), normalize=False,
                         borderType=cv2.BORDER_CONSTANT)[::step, ::step]
    axx, axy, ayy, bx, by, cnt = np.moveaxis(sums.astype(np.float64), -1, 0)
    ridge = 1e-3 * cnt + 1e-9
    axx, ayy = axx + ridge, ayy + ridge
    det = axx * ayy - axy * axy
    dx = np.where(cnt >= 50, (ayy * bx - axy * by) / det, 0.0)
    dy = np.where(cnt >= 50, (axx * by - axy * bx) / det, 0.0)
    grid = np.clip(np.stack([dx, dy], -1), -max_px, max_px).astype(np.float32)
    # grid value (i, j) belongs to pixel (i * step, j * step): bilinear in between
    rows, cols = np.indices((h, w), dtype=np.float32) / np.float32(step)
    full = cv2.remap(grid, cols, rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.GaussianBlur(full, (0, 0), step / 2)


@dataclass(frozen=True)
class TemplateLookup:
    """Where each pixel of an input frame (H, W) finds its template value: ``map_x``, ``map_y``
    (H, W) float32 reference-frame coordinates (a registration's matrix, optionally after a
    :func:`local_shift` field), and ``angle_deg``, by which template vectors are turned."""

    map_x: np.ndarray
    map_y: np.ndarray
    angle_deg: float

    @staticmethod
    def build(matrix: np.ndarray, shape_hw: tuple[int, int],
              shift: np.ndarray | None = None) -> TemplateLookup:
        """From the (2, 3) input -> reference pixel ``matrix`` (a registration's transform);
        ``shift``: (H, W, 2) from :func:`local_shift`, or None."""
        m = np.asarray(matrix, np.float64)
        rows, cols = np.indices(shape_hw, dtype=np.float64)
        if shift is not None:
            cols = cols - shift[..., 0]
            rows = rows - shift[..., 1]
        mx = m[0, 0] * cols + m[0, 1] * rows + m[0, 2]
        my = m[1, 0] * cols + m[1, 1] * rows + m[1, 2]
        # template vectors turn with the reference -> input motion: the inverse's angle
        return TemplateLookup(mx.astype(np.float32), my.astype(np.float32), -matrix_angle(m))

    def image(self, image: np.ndarray) -> np.ndarray:
        """(h, w) or (h, w, C) reference-frame values at the input pixels (0 from outside)."""
        img = np.asarray(image, dtype=np.float32)
        if img.ndim == 3 and img.shape[2] > 4:  # remap takes at most 4 channels at a time
            return np.concatenate([self.image(img[..., i:i + 4])
                                   for i in range(0, img.shape[2], 4)], axis=-1)
        out = cv2.remap(np.ascontiguousarray(img), self.map_x, self.map_y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return out.reshape(out.shape[:2] + img.shape[2:])

    def stack(self, stack: np.ndarray) -> np.ndarray:
        """:meth:`image` of a (C, h, w) stack; returns (C, H, W)."""
        return np.moveaxis(self.image(np.moveaxis(np.asarray(stack, np.float32), 0, -1)), -1, 0)

    def normals(self, normals: np.ndarray) -> np.ndarray:
        """Template normals (h, w, 3) at the input pixels, turned with the part, unit length."""
        return normalize(rotate_vectors(self.image(normals), self.angle_deg))


def warp_normals(
    normals: np.ndarray,
    mask: np.ndarray,
    matrix: np.ndarray,
    shape_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Move a normal map with a (2, 3) source -> destination pixel matrix and turn its vectors.

    ``normals``: (H, W, 3) float32, camera frame; ``mask``: (H, W) bool. The vectors are rotated
    about +z by the angle of ``matrix`` (see module docstring) and renormalised. Returns
    ``(normals (h, w, 3) float32, mask (h, w) bool)`` in the destination frame, zero outside the
    warped mask.
    """
    angle = matrix_angle(matrix)
    m = np.asarray(mask, bool)
    n = np.where(m[..., None], normals, 0.0).astype(np.float32)
    warped = warp_image(n, matrix, shape_hw, cv2.INTER_LINEAR)
    wmask = warp_image(m.astype(np.float32), matrix, shape_hw, cv2.INTER_LINEAR) > 0.5
    # near the silhouette the interpolated vector mixes in zero background: renormalise
    out = normalize(rotate_vectors(warped, angle))
    wmask &= np.linalg.norm(out, axis=2) > 0.5
    out[~wmask] = 0.0
    return out, wmask


def _centroid(image: np.ndarray) -> tuple[float, float]:
    """Intensity centroid ``(col, row)`` of a non-negative image (image centre if empty)."""
    w = np.clip(image, 0.0, None)
    total = float(w.sum())
    if total <= 0:
        return _center(image.shape[:2])
    rows, cols = np.indices(image.shape[:2])
    return (float((w * cols).sum() / total), float((w * rows).sum() / total))


def _ncc(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    x = a[valid].astype(np.float64)
    y = b[valid].astype(np.float64)
    if x.size < 16:
        return -1.0
    x -= x.mean()
    y -= y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else -1.0


def _downsize(image: np.ndarray, f: float) -> np.ndarray:
    if f >= 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))),
                      interpolation=cv2.INTER_AREA)


def _scaled(ref: np.ndarray, mov: np.ndarray, size: int
            ) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale factor (<= 1) giving at most ``size`` px, and both images at it, blurred a little
    (registration images have sharp silhouettes; ECC and phase correlation like smooth ones)."""
    f = min(1.0, size / max(ref.shape[:2]))
    return (f, cv2.GaussianBlur(_downsize(ref, f), (0, 0), 1.5),
            cv2.GaussianBlur(_downsize(mov, f), (0, 0), 1.5))


def _polar_channels(image: np.ndarray, normals: np.ndarray | None, center: tuple[float, float],
                    radius: float) -> np.ndarray:
    """A part on a polar grid about ``center`` ``(col, row)``, in quantities that a turn of the
    part about that point only moves along the angle axis.

    ``image``: (H, W) float32 registration image; ``normals``: (H, W, 3) float32 (camera frame)
    or None. Angle ``j`` (degrees, 0..359) points along ``(cos j, sin j)`` in ``(col, row)``,
    i.e. clockwise on screen; radii ``(i + 0.5) radius / _TURN_RADII``. Returns (C, 360,
    _TURN_RADII) float32: the registration image and, with normals, their radial and
    tangential in-plane components (the vectors' components along and across the grid's
    direction, which turn with the part).
    """
    phi = np.radians(np.arange(360.0))[:, None]
    r = (np.arange(_TURN_RADII) + 0.5) * (radius / _TURN_RADII)
    map_x = (center[0] + r * np.cos(phi)).astype(np.float32)
    map_y = (center[1] + r * np.sin(phi)).astype(np.float32)

    def sample(img: np.ndarray) -> np.ndarray:
        return cv2.remap(np.ascontiguousarray(img, np.float32), map_x, map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    channels = [sample(image)]
    if normals is not None:
        nx, ny = sample(normals[..., 0]), sample(normals[..., 1])
        # the grid's direction in the camera frame (y up): (cos phi, -sin phi)
        c, s = np.cos(phi), np.sin(phi)
        channels += [nx * c - ny * s, nx * s + ny * c]
    return np.stack(channels).astype(np.float32)


def turn_fits(moving: np.ndarray, reference: np.ndarray,
              normals: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """How well ``moving`` fits ``reference`` turned by each whole degree about its centroid.

    ``moving``, ``reference``: (H, W) float32 registration images (:func:`registration_image`);
    ``normals``: the moving and reference normal maps ((H, W, 3) float32, camera frame, 0
    outside the object) or None. Each part is sampled on a polar grid about its own centroid
    (so a shift does not matter) in turn-invariant quantities (:func:`_polar_channels`), at
    most ``TURN_CHECK_SIZE`` px; a turn then moves it along the angle axis, and the
    correlation coefficient of every such move comes from one FFT (area-weighted, averaged over
    the channels). Returns (360,) float64: entry ``a`` is the
    fit of the moving part turned back by ``a`` degrees, i.e. of a moving part turned by ``a``
    deg counter-clockwise on screen from the reference; 1 = a perfect fit.
    """
    f, ref_c, mov_c = _scaled(np.asarray(reference, np.float32),
                              np.asarray(moving, np.float32), TURN_CHECK_SIZE)
    vecs = (None, None) if normals is None else tuple(
        cv2.GaussianBlur(_downsize(np.asarray(v, np.float32), f), (0, 0), 1.5) for v in normals)
    centers = [_centroid(mov_c), _centroid(ref_c)]
    rows, cols = np.indices(ref_c.shape)
    radius = max(float(np.hypot(cols[img > 0] - cx, rows[img > 0] - cy).max(initial=1.0))
                 for img, (cx, cy) in zip((mov_c, ref_c), centers, strict=True))
    weight = np.sqrt((np.arange(_TURN_RADII) + 0.5) / _TURN_RADII)  # area element ~ r
    spectra = []
    for img, vec, center in zip((mov_c, ref_c), vecs, centers, strict=True):
        polar = _polar_channels(img, vec, center, radius).astype(np.float64)
        mean = (polar * weight**2).sum((1, 2), keepdims=True) / (weight**2).sum() / 360.0
        x = (polar - mean) * weight
        # each channel to unit energy, but one with next to no variation (the tangential slope
        # of a round dome: rounding noise) is not blown up into a pattern of its own
        energy = (x * x).sum((1, 2), keepdims=True)
        x /= np.sqrt(np.maximum(energy, _TURN_ENERGY_FLOOR * energy.max())) + 1e-12
        spectra.append(np.fft.rfft(x, axis=1))
    # corr(a) = sum_j mov(j) ref(j + a): a part turned counter-clockwise on screen by a sits
    # at grid angle j where the reference's point sat at j + a (grid angles run clockwise)
    cross = (np.conj(spectra[0]) * spectra[1]).sum(axis=2)
    return np.fft.irfft(cross, n=360, axis=1).mean(axis=0)


def turn_outside(fits: np.ndarray, within_deg: float, beyond_deg: float) -> float | None:
    """The turn of a part placed by ``beyond_deg`` or more from the reference, or None.

    ``fits``: (360,) from :func:`turn_fits`; ``within_deg``: the turns a registration can
    reach. A part placed by a quarter or half turn can fit well unturned (a square-ish
    casting's slant image barely changes), but turned back it fits much better: the best turn
    outside ``+-within_deg``, if it is ``beyond_deg`` or more, is returned (degrees in (-180,
    180], counter-clockwise on screen) when its misfit ``1 - fit`` is at most
    ``_TURN_MAX_MISFIT`` and the best misfit within ``+-within_deg`` exceeds ``_TURN_RATIO``
    times it plus ``_TURN_SLACK``. A rotationally symmetric part fits about as well at every
    turn: never returned for it.
    """
    angles = (np.arange(360) + 180) % 360 - 180
    misfit_within = 1.0 - float(fits[np.abs(angles) <= within_deg].max())
    # the best turn beyond the search: a part turned by less than beyond_deg (left to the range
    # check) fits best at its own turn, not at the nearest one of beyond_deg
    best = int(np.argmax(np.where(np.abs(angles) > within_deg, fits, -np.inf)))
    misfit = 1.0 - float(fits[best])
    if (abs(angles[best]) < beyond_deg or misfit > _TURN_MAX_MISFIT
            or misfit_within <= _TURN_RATIO * misfit + _TURN_SLACK):
        return None
    return float(angles[best]) if angles[best] != -180 else 180.0


def _turn_words(turn_deg: float) -> str:
    """A turn (degrees, counter-clockwise on screen positive) in words, to 5 deg: e.g. ``90 deg
    counter-clockwise``, ``180 deg``."""
    deg = 5 * round(abs(turn_deg) / 5)
    if deg == 180:
        return "180 deg"
    return f"{deg} deg {'counter-clockwise' if turn_deg > 0 else 'clockwise'}"


def _rescale_matrix(m: np.ndarray, f_from: float, f_to: float) -> np.ndarray:
    """A rigid (2, 3) pixel matrix at image scale ``f_from`` expressed at scale ``f_to``.

    Pixel centres map as ``x_f = f x + (f - 1) / 2`` (OpenCV resize convention).
    """
    if f_from == f_to:
        return np.asarray(m, np.float64).copy()
    r = np.asarray(m, np.float64)[:, :2]
    t = np.asarray(m, np.float64)[:, 2]
    c_from = np.full(2, 0.5 * f_from - 0.5)
    c_to = np.full(2, 0.5 * f_to - 0.5)
    t_full = (r @ c_from + t - c_from) / f_from  # at scale 1
    t_new = f_to * t_full - r @ c_to + c_to
    return np.column_stack([r, t_new])


def register(
    moving: np.ndarray,
    reference: np.ndarray,
    *,
    max_shift_px: float = DEFAULT_MAX_SHIFT_PX,
    max_rotation_deg: float = DEFAULT_MAX_ROTATION_DEG,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    name: str = "map",
    normals: tuple[np.ndarray, np.ndarray] | None = None,
) -> Registration:
    """Estimate the rigid transform that maps ``moving`` onto ``reference``.

    Both are (H, W) float32 registration images (:func:`registration_image`) of the same shape.
    ``normals``: the moving and the reference normal maps ((H, W, 3) float32, 0 outside the
    object) those images were made from: the coarse search then also compares their in-plane
    components (see module docstring); recommended wherever the maps are at hand.
    Returns a :class:`Registration` whose transform maps moving pixel coordinates to reference
    ones. Raises :class:`PsinspectError` (naming ``name``) for mismatched shapes, a part turned
    by 45 deg or more (:func:`turn_outside`; the message says the turn), a pose outside
    ``max_shift_px`` / ``max_rotation_deg``, or a final correlation below ``min_correlation``.
    """
    if moving.shape != reference.shape:
        raise PsinspectError(
            f"{named_prefix(name)}image size {moving.shape[1]}x{moving.shape[0]} differs from the "
            f"reference {reference.shape[1]}x{reference.shape[0]} (all captures of a part type "
            "must have the same size)"
        )
    shape = reference.shape[:2]
    center = _center(shape)
    ref = np.ascontiguousarray(reference, np.float32)
    mov = np.ascontiguousarray(moving, np.float32)
    # a part placed by a quarter or half turn can fit almost as well unturned (a square-ish
    # casting's slant image barely changes) and be registered a few degrees off: refused, with
    # its turn, where a turn of _TURN_MIN_DEG or more fits much better than any the search
    # below can reach
    search = max(max_rotation_deg * _SEARCH_FACTOR, _COARSE_STEP_DEG)
    turn = turn_outside(turn_fits(mov, ref, normals), search, max(search, _TURN_MIN_DEG))
    if turn is not None:
        raise PsinspectError(
            f"{named_prefix(name)}the part seems turned by about {_turn_words(turn)} from the "
            "design's orientation (turned back by that much it fits the reference much better "
            f"than as it lies); the supported range is +-{max_rotation_deg:g} deg: place it as "
            "the training parts were placed"
        )
    pivot = _centroid(mov)

    # coarse, on an image of at most COARSE_SIZE px: for each angle, rotate the moving image
    # about its object's centroid, phase-correlate the shift, score by NCC. Among angles that
    # fit about equally well (a part with rotational symmetry) take the smallest turn.
    f_c, ref_c, mov_c = _scaled(ref, mov, COARSE_SIZE)
    shape_c = ref_c.shape
    pivot_c = (pivot[0] * f_c + 0.5 * f_c - 0.5, pivot[1] * f_c + 0.5 * f_c - 0.5)
    window = cv2.createHanningWindow((shape_c[1], shape_c[0]), cv2.CV_32F)
    angles = np.arange(-search, search + 1e-6, _COARSE_STEP_DEG)
    candidates: list[tuple[float, float, np.ndarray]] = []
    everywhere = np.ones(shape_c, bool)
    if normals is not None:
        mov_nc, ref_nc = (cv2.GaussianBlur(_downsize(np.asarray(v, np.float32), f_c), (0, 0), 1.5)
                          for v in normals)
    for ang in angles:
        rot = cv2.getRotationMatrix2D(pivot_c, float(ang), 1.0)
        rotated = warp_image(mov_c, rot, shape_c)
        # (a copy of ref_c: OpenCV multiplies both inputs by the window IN PLACE where their
        # size needs no padding, e.g. 256 x 256, which degraded ref_c with every candidate)
        (dx, dy), _ = cv2.phaseCorrelate(rotated, ref_c.copy(), window)
        m = rot.copy()
        m[0, 2] += dx
        m[1, 2] += dy
        cand = warp_image(mov_c, m, shape_c)
        fit = _ncc(cand, ref_c, everywhere)
        if normals is not None:  # the in-plane components, turned with the candidate
            turned = rotate_vectors(warp_image(mov_nc, m, shape_c), float(ang))
            fit = (fit + _ncc(turned[..., 0], ref_nc[..., 0], everywhere)
                   + _ncc(turned[..., 1], ref_nc[..., 1], everywhere)) / 3.0
        candidates.append((fit, abs(float(ang)), m))
    top = max(c[0] for c in candidates)
    m_coarse = _rescale_matrix(
        min((c for c in candidates if c[0] >= top - _TIE_NCC), key=lambda c: c[1])[2], f_c, 1.0)

    # fine, on an image of at most FINE_SIZE px: ECC finds W with reference(x) ~ moving(W x),
    # i.e. W maps reference -> moving
    f_e, ref_e, mov_e = _scaled(ref, mov, FINE_SIZE)
    warp = cv2.invertAffineTransform(_rescale_matrix(m_coarse, 1.0, f_e)).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)
    try:
        _, warp = cv2.findTransformECC(ref_e, mov_e, warp, cv2.MOTION_EUCLIDEAN, criteria,
                                       None, 1)
        m_fine_e = cv2.invertAffineTransform(warp.astype(np.float64))
    except cv2.error:
        m_fine_e = _rescale_matrix(m_coarse, 1.0, f_e)
    m_fine = _rescale_matrix(m_fine_e, f_e, 1.0)
    # correlation of the (slightly blurred) images over the union of both objects
    aligned = warp_image(mov_e, m_fine_e, ref_e.shape)
    valid = (warp_image(_downsize(mov, f_e), m_fine_e, ref_e.shape) > 0) | (
        _downsize(ref, f_e) > 0)
    corr = _ncc(aligned, ref_e, valid)
    transform = RigidTransform.from_matrix(m_fine, center)
    # displacement of the part's centroid
    moved = m_fine @ np.array([pivot[0], pivot[1], 1.0])
    shift = float(math.hypot(moved[0] - pivot[0], moved[1] - pivot[1]))

    if abs(transform.angle_deg) > max_rotation_deg or shift > max_shift_px:
        turn = -transform.angle_deg  # (the transform turns the part back onto the reference)
        raise PsinspectError(
            f"{named_prefix(name)}the part is turned by about {abs(turn):.1f} deg "
            f"{'counter-clockwise' if turn > 0 else 'clockwise'} and "
            f"shifted by about {shift:.1f} px from the reference; the supported range is "
            f"+-{max_rotation_deg:g} deg and {max_shift_px:g} px: a different part than the "
            "model was trained on, or this part placed off its fixture"
        )
    if not corr >= min_correlation:
        raise PsinspectError(
            f"{named_prefix(name)}registration to the reference failed (correlation {corr:.3f} < "
            f"{min_correlation:g}); is it the same part type, seen from the same side, and "
            f"placed within +-{max_rotation_deg:g} deg and {max_shift_px:g} px of the "
            "reference (a part turned or shifted further is not found)?"
        )
    return Registration(transform, corr, shift)


def named_prefix(name: str) -> str:
    """The start of an error message about ``name``: ``"NAME: "``, nothing for ``""`` (a
    caller that names the input itself, as detect does)."""
    return f"{name}: " if name else ""
