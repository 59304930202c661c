"""Normal maps: PNG <-> float codec, validation, angular error.

Frame: the DiLiGenT camera frame, x right, y up, z toward the camera. Image rows grow downward,
so a step down one row is a step of -y. A normal map is ``float32 (H, W, 3)``, unit length inside
the object mask and exactly zero outside it.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from psinspect.checks import is_integer
from psinspect.errors import PsinspectError
from psinspect.fileio import (
    image_mode,
    image_size_hw,
    load_npy,
    npy_header,
    read_json,
    read_mask_image,
)

#: tolerance on | |n| - 1 | for a vector to count as unit length
UNIT_TOL = 1e-2
#: largest normal map read from disk (8192 x 8192): loading one peaks near 3.2 GB of memory,
#: and detection scores big maps in tiles; larger maps are refused before they are decoded
MAX_MAP_PIXELS = 8192 * 8192

#: the smallest side a normal map may have (a defect, a fit window or a verdict needs room)
MIN_MAP_SIDE = 8


def normalize(vectors: np.ndarray, eps: float = 1e-12, *, length: np.ndarray | None = None,
              out: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors along the last axis; zero vectors stay zero. ``(..., 3) -> (..., 3)``.
    ``length``: the vectors' :func:`vector_length`, where the caller has it; ``out``: a float32
    array of the vectors' shape to write into (and return), no temporary of it made.
    (The models' hot path uses ``models.geometric.normalize``, a faster form whose last bits
    differ; the bundled model was calibrated with it.)"""
    v = np.asarray(vectors, dtype=np.float32)
    norm = (vector_length(v) if length is None else length)[..., None]
    if out is None:
        return np.where(norm > eps, v / np.maximum(norm, eps), 0.0).astype(np.float32)
    np.divide(v, np.maximum(norm, eps), out=out)
    np.copyto(out, 0.0, where=~(norm > eps))
    return out


def vector_length(v: np.ndarray) -> np.ndarray:
    """Euclidean length along the last axis, ``(..., k) -> (...)``: the value
    ``np.linalg.norm(v, axis=-1)`` gives, bit for bit, for 3-vectors at several times its
    speed (numpy reduces a 3-long axis with a slow generic loop)."""
    if v.shape[-1:] != (3,):
        return np.linalg.norm(v, axis=-1)
    sq = v * v
    return np.sqrt(sq[..., 0] + sq[..., 1] + sq[..., 2])


def unit_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between corresponding UNIT vectors of ``a`` and ``b`` (``(..., 3)``
    each, float32; not renormalised: the fast form for model scores). Inputs of other lengths:
    :func:`angular_error_deg`; small angles to float64 precision: ``defects.angle_deg``."""
    cos = np.clip(np.einsum("...i,...i->...", a, b), -1.0, 1.0)
    return np.degrees(np.arccos(cos)).astype(np.float32)


def angular_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between corresponding vectors of ``a`` and ``b`` (``(..., 3)`` each, any
    length: both are normalised first)."""
    return unit_angle_deg(normalize(a), normalize(b))


def rotate_vectors(normals: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate (..., 3) vectors about +z (camera frame) by ``angle_deg`` (counter-clockwise);
    float32."""
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    n = np.asarray(normals, np.float32)
    out = n.copy()
    out[..., 0] = c * n[..., 0] - s * n[..., 1]
    out[..., 1] = s * n[..., 0] + c * n[..., 1]
    return out


def encode_png(normals: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """8-bit RGB image of ``(n + 1) / 2``; background (outside ``mask``) is black.

    ``normals``: (H, W, 3) float, DiLiGenT frame. Returns (H, W, 3) uint8, channel order R=x, G=y,
    B=z.
    """
    img = np.clip(np.rint((np.asarray(normals, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if mask is not None:
        img[~mask] = 0
    return img


#: :func:`decode_png`: how far off unit length a decoded vector may be (8-bit quantisation:
#: at most about 0.014) ...
PNG_UNIT_TOLERANCE = 0.1
#: ... and the largest share of object pixels that may be further off (anti-aliased edges)
PNG_OFF_UNIT_SHARE = 0.05


def decode_png(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_png`: (H, W, 3) RGB or (H, W, 4) RGBA, 8- or 16-bit ->
    (normals float32, mask bool).

    Channel value ``v`` of a ``b``-bit image decodes to ``v / (2^b - 1) * 2 - 1`` (R=x, G=y,
    B=z, DiLiGenT frame). The mask is the alpha channel's non-zero pixels when there is one
    that is not opaque everywhere, else "not black" (image tools add an opaque alpha channel
    to an RGB image: it marked the black background as the object, and the map was refused).
    Decoded vectors are renormalised (8-bit quantisation leaves their length
    at most about 0.014 off 1, 16-bit about 0.0001); an image of which more than
    :data:`PNG_OFF_UNIT_SHARE` of the object's inner pixels (not on its rim, which
    anti-aliasing blends with the background) decode to a length more than
    :data:`PNG_UNIT_TOLERANCE` off 1 is not a normal map (a photo, a mask, another encoding)
    and is refused.
    """
    if image.dtype not in (np.uint8, np.uint16) or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise PsinspectError("normal PNG must be 8- or 16-bit RGB or RGBA, got "
                             f"{image.dtype} {image.shape}")
    rgb = image[..., :3]
    alpha = image[..., 3] if image.shape[2] == 4 else None
    if alpha is not None and bool((alpha == np.iinfo(image.dtype).max).all()):
        alpha = None  # opaque everywhere: it tells no background
    # (unsigned channels: "not black" is any channel non-zero; a bitwise or is ~20x faster
    # than the channels' max on an 8k map)
    mask = (alpha > 0 if alpha is not None
            else (rgb[..., 0] | rgb[..., 1] | rgb[..., 2]) > 0)
    # judged inside the object (its rim may be blended with the background by anti-aliasing)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    judged = inner if inner.any() else mask
    # decoded in row blocks of about a million pixels (an 8k map: about 2.5x faster than
    # whole-map temporaries, the same arithmetic per pixel)
    h, w = mask.shape
    n = np.empty((h, w, 3), np.float32)
    rows = max(1, (1 << 20) // max(w, 1))
    k = np.float32(2.0 / np.iinfo(image.dtype).max)
    n_off = 0
    for r0 in range(0, h, rows):
        blk = rgb[r0:r0 + rows].astype(np.float32) * k - 1.0
        length = vector_length(blk)
        n_off += int(np.count_nonzero((np.abs(length - 1.0) > PNG_UNIT_TOLERANCE)
                                      & judged[r0:r0 + rows]))
        out = normalize(blk, length=length, out=n[r0:r0 + rows])
        np.copyto(out, 0.0, where=~mask[r0:r0 + rows, :, None])
    n_judged = int(np.count_nonzero(judged))
    off = n_off / n_judged if n_judged else 0.0
    if off > PNG_OFF_UNIT_SHARE:
        black = judged & ((rgb[..., 0] | rgb[..., 1] | rgb[..., 2]) == 0)
        why = (f"; {int(np.count_nonzero(black))} of them are black, which its alpha channel "
               "marks as the object: give the background alpha 0, or save the map without "
               "alpha" if alpha is not None and np.count_nonzero(black) > n_off // 2 else "")
        raise PsinspectError(
            f"not a normal map: {100 * off:.0f}% of its object's pixels decode to vectors of "
            f"length outside {1 - PNG_UNIT_TOLERANCE:g}-{1 + PNG_UNIT_TOLERANCE:g} (a normal "
            f"PNG holds unit vectors, (n + 1) / 2 per channel, R = x, G = y, B = z){why}")
    return n, mask


def validate_normal_map(
    normals: np.ndarray, mask: np.ndarray | None = None, name: str = "normal map",
    unit: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Check a normal map and return ``(normals float32 (H, W, 3), mask bool (H, W))``.

    Without a mask, the object is every non-zero vector; with one, what lies outside it is
    ignored (returned as 0). Raises :class:`PsinspectError` for a wrong shape, a map smaller
    than ``MIN_MAP_SIDE`` on a side, NaN/Inf (inside the mask), an empty mask, vectors
    inside the mask that are not unit length, a map whose object mostly faces away from the
    camera (z < 0 on more than half of it: another sign convention, or a background decoded
    as normals; a visible surface faces the camera), or a map whose normals point every which
    way between neighbours on most of the object (noise: :data:`MIN_COHERENCE`).
    ``unit``: the map is known to hold finite unit vectors inside ``mask`` and zeros outside
    it (:func:`decode_png`'s output): it is returned as it is, after the checks such a map can
    fail (size, empty mask, facing away, scattered), without a second normalisation.
    """
    n = np.asarray(normals)
    if n.ndim != 3 or n.shape[2] != 3:
        raise PsinspectError(f"{name}: expected shape (H, W, 3), got {n.shape}")
    if not np.issubdtype(n.dtype, np.floating):
        raise PsinspectError(f"{name}: expected float values, got dtype {n.dtype}")
    if min(n.shape[:2]) < MIN_MAP_SIDE:
        raise PsinspectError(f"{name}: map is {n.shape[1]} x {n.shape[0]} pixels, too small "
                             f"(at least {MIN_MAP_SIDE} x {MIN_MAP_SIDE})")
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != n.shape[:2]:
            raise PsinspectError(f"{name}: mask shape {mask.shape} != map shape {n.shape[:2]}")
    h, w = n.shape[:2]
    rows = max(1, (1 << 20) // max(w, 1))
    if unit and mask is not None and n.dtype == np.float32:
        n_obj = int(np.count_nonzero(mask))
        if n_obj == 0:
            raise PsinspectError(f"{name}: empty mask (no object pixels)")
        _check_surface(n, mask, name, rows, n_obj,
                       int(np.count_nonzero((n[..., 2] < 0) & mask)))
        return n, mask
    # one pass over row blocks of about a million pixels: no whole-map temporaries, so an
    # 8k x 8k map costs one float32 output plus the mask
    out = np.empty((h, w, 3), np.float32)
    out_mask = np.empty((h, w), bool)
    n_bad, n_obj, n_back, lo, hi = 0, 0, 0, np.inf, -np.inf
    for r0 in range(0, h, rows):
        blk = n[r0:r0 + rows].astype(np.float32)
        # (per channel: numpy reduces a 3-long axis with a slow generic loop)
        x, y, z = blk[..., 0], blk[..., 1], blk[..., 2]
        finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
        if mask is None:
            if not finite.all():
                raise PsinspectError(f"{name}: contains NaN or Inf values")
            m = (x != 0) | (y != 0) | (z != 0)
        else:
            m = mask[r0:r0 + rows]
            if not finite[m].all():
                raise PsinspectError(f"{name}: contains NaN or Inf values inside the mask")
        # (what lies outside the object is ignored: also NaN or Inf there; masked with
        # where= rather than boolean indexing, which copies: 2x faster on an 8k map)
        np.copyto(blk, 0.0, where=~m[..., None])
        length = np.sqrt(np.einsum("...i,...i->...", blk, blk))
        n_bad += int(np.count_nonzero((np.abs(length - 1.0) > UNIT_TOL) & m))
        n_obj += int(np.count_nonzero(m))
        lo = min(lo, float(np.min(length, where=m, initial=np.inf)))
        hi = max(hi, float(np.max(length, where=m, initial=-np.inf)))
        blk /= np.maximum(length, 1e-12)[..., None]
        n_back += int(np.count_nonzero((blk[..., 2] < 0) & m))
        out[r0:r0 + rows] = blk
        out_mask[r0:r0 + rows] = m
    if n_obj == 0:
        raise PsinspectError(f"{name}: empty mask (no object pixels)")
    if n_bad:
        raise PsinspectError(
            f"{name}: {n_bad} of {n_obj} object pixels are not unit vectors "
            f"(|n| from {lo:.3g} to {hi:.3g})"
        )
    _check_surface(out, out_mask, name, rows, n_obj, n_back)
    return out, out_mask


def _check_surface(n: np.ndarray, mask: np.ndarray, name: str, rows: int, n_obj: int,
                   n_back: int) -> None:
    """:func:`validate_normal_map`'s checks of a map of unit normals ``n`` (H, W, 3) on
    ``mask`` (H, W), ``n_obj`` pixels of which ``n_back`` have z < 0: most of the object
    facing away from the camera, or scattered (:func:`_scattered_pixels`, blocks of
    ``rows``)."""
    if 2 * n_back > n_obj:
        # x and z exchanged (a PNG written in BGR order) turn a part facing the camera away
        # from it: said where the exchange would make most of it face the camera
        swapped = int(np.count_nonzero((n[..., 0] > 0) & mask))
        hint = ("; with x and z exchanged most would face it: if its channels are in another "
                "order (a PNG written in BGR order, as OpenCV writes RGB arrays), write them "
                "as R = x, G = y, B = z" if 2 * swapped > n_obj else "")
        raise PsinspectError(
            f"{name}: {n_back} of {n_obj} object normals point away from the camera (z < 0); "
            f"expected the camera frame x right, y up, z toward the camera{hint}")
    inner, scattered, pairs, turned = _scattered_pixels(n, mask, rows)
    if 2 * scattered > inner:
        raise PsinspectError(
            f"{name}: not a surface: on {scattered} of {inner} object pixels the 3 x 3 "
            f"neighbours' normals point every which way (their mean is shorter than "
            f"{MIN_COHERENCE:g}; a surface's is about 1): noise, or not a normal map")
    if 2 * turned > pairs:
        raise PsinspectError(
            f"{name}: not a surface: {turned} of {pairs} pairs of neighbouring object normals "
            f"differ by more than {MAX_NEIGHBOUR_TURN_DEG:g} deg (a surface's by a few): "
            "noise, or not a normal map")


#: :func:`validate_normal_map`: a map on most of whose object the mean of each pixel's 3 x 3
#: unit normals is shorter than this is not a surface (measured: rendered and real maps
#: have a median of 0.97 or more; random normals 0.58, 90 % of their pixels below 0.7; the
#: flanks of grooves 2-4 px wide pass up to +-45 deg, cos 45 = 0.71)
MIN_COHERENCE = 0.7
#: :func:`validate_normal_map`: a map on most of whose object neighbouring normals (pixels
#: side by side or one above the other) differ by more than this is not a surface either, as
#: noise tilted toward the camera, whose 3 x 3 means pass :data:`MIN_COHERENCE` (measured:
#: such noise 70 % of its pairs; 16 rendered parts of every family through PS, at most 0.6 %;
#: a groove pattern's flanks of +-45 deg, 2 px each, about a quarter)
MAX_NEIGHBOUR_TURN_DEG = 40.0


def _scattered_pixels(n: np.ndarray, mask: np.ndarray, rows: int
                      ) -> tuple[int, int, int, int]:
    """``(inner, scattered, pairs, turned)``: the object pixels whose 3 x 3 neighbourhood lies
    in the object, those of them where the mean of the 9 unit normals is shorter than
    :data:`MIN_COHERENCE`, the pairs of object pixels side by side or one above the other,
    and those of them whose normals differ by more than :data:`MAX_NEIGHBOUR_TURN_DEG`; in
    row blocks (no whole-map temporaries)."""
    h = mask.shape[0]
    inner = scattered = pairs = turned = 0
    cos_turn = np.float32(np.cos(np.radians(MAX_NEIGHBOUR_TURN_DEG)))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        for a, b in (((slice(r0, r1), slice(1, None)), (slice(r0, r1), slice(None, -1))),
                     ((slice(r0 + 1, r1 + 1), slice(None)), (slice(r0, min(r1, h - 1)),
                                                             slice(None)))):
            both = mask[a] & mask[b]
            pairs += int(np.count_nonzero(both))
            u, v = n[a], n[b]  # (a 3-long reduction as three products: numpy's is slow)
            dot = u[..., 0] * v[..., 0] + u[..., 1] * v[..., 1] + u[..., 2] * v[..., 2]
            turned += int(np.count_nonzero(both & (dot < cos_turn)))
        a, b = max(0, r0 - 1), min(h, r0 + rows + 1)
        keep = slice(r0 - a, r0 - a + min(rows, h - r0))
        m = cv2.erode(mask[a:b].astype(np.uint8), np.ones((3, 3), np.uint8),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)[keep] > 0
        if not m.any():
            continue
        mean = cv2.blur(n[a:b], (3, 3))[keep]
        inner += int(m.sum())
        short = np.einsum("...i,...i->...", mean, mean) < MIN_COHERENCE ** 2
        scattered += int(np.count_nonzero(short & m))
    return inner, scattered, pairs, turned


#: the normal map in ``psinspect normals``' output folder (beside ``confidence.npy`` and
#: ``run.json``)
NORMALS_FILE = "normals.npy"
#: its 8-bit PNG copy (:func:`encode_png`)
NORMALS_PNG = "normals.png"


def normals_run(folder: Path) -> dict | None:
    """The ``run.json`` of ``psinspect normals``' output ``folder`` (its ``normals.npy`` beside
    it; the solver, the capture solved, ...), or None for any other folder. A ``run.json``
    that cannot be read beside a ``normals.npy``, a normals run record without its
    ``normals.npy``, and the three maps ``normals`` writes without a ``run.json`` are a
    :class:`PsinspectError` (such a folder was taken for a folder of maps, and its albedo.npy
    named as a bad normal map)."""
    if not (folder / "run.json").exists() and all(
            (folder / f).is_file() for f in (NORMALS_FILE, "albedo.npy", "confidence.npy")):
        raise PsinspectError(f"{folder}: a 'psinspect normals' output folder without its "
                             "run.json (solve the capture again, or give its normals.npy)")
    try:
        run = read_json(folder / "run.json")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        if (folder / "run.json").is_file() and (folder / NORMALS_FILE).is_file():
            raise PsinspectError(
                f"{folder / 'run.json'}: cannot be read ({err}), beside {NORMALS_FILE}: a "
                "damaged 'psinspect normals' output folder (solve the capture again)"
            ) from None
        return None
    if not isinstance(run, dict) and (folder / NORMALS_FILE).is_file():
        raise PsinspectError(f"{folder / 'run.json'}: not a psinspect run record (a JSON "
                             f"object), beside {NORMALS_FILE}: a damaged 'psinspect normals' "
                             "output folder (solve the capture again)")
    if not isinstance(run, dict) or run.get("command") != "normals":
        return None
    if not (folder / NORMALS_FILE).is_file():
        raise PsinspectError(f"{folder}: a 'psinspect normals' output folder without its "
                             f"{NORMALS_FILE} (solve the capture again)")
    return run


def normals_run_of(path: Path) -> dict | None:
    """:func:`normals_run` of the ``psinspect normals`` output that ``path`` is (the folder) or
    lies in (its ``normals.npy`` / ``normals.png``); None for any other path."""
    folder = (path if path.is_dir() else path.parent if path.name in (NORMALS_FILE, NORMALS_PNG)
              else None)
    return normals_run(folder) if folder is not None else None


def solved_light_count(run: dict | None) -> int | None:
    """How many lights ``psinspect normals`` solved its map from, as its ``run.json``
    (:func:`normals_run_of`) records in ``num_lights_used``; None without a run record, or
    where the count is missing or not a positive integer."""
    n = None if run is None else run.get("num_lights_used")
    return n if is_integer(n) and n > 0 else None


def is_normals_folder(folder: Path) -> bool:
    """Whether ``folder`` is the output of ``psinspect normals`` (:func:`normals_run`)."""
    return normals_run(folder) is not None


def part_size_px(mask: np.ndarray) -> float:
    """How many pixels across the object of ``mask`` (H, W) is: the diameter of a disc of its
    area (a disc's own diameter; it does not depend on how the part is turned)."""
    return float(2.0 * math.sqrt(np.count_nonzero(mask) / math.pi))


def check_map_size(shape_hw: tuple[int, int], name: str,
                   max_pixels: int = MAX_MAP_PIXELS) -> None:
    """Refuse a map of more than ``max_pixels`` pixels (:class:`PsinspectError` naming it)."""
    h, w = int(shape_hw[0]), int(shape_hw[1])
    if h * w > max_pixels:
        side = int(np.sqrt(max_pixels))
        raise PsinspectError(
            f"{name}: normal map is {w} x {h} pixels, more than the limit of {max_pixels} "
            f"pixels ({side} x {side}); crop it or split it into tiles"
        )


def load_normal_map(path: str | os.PathLike[str], check_frame: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Read a normal map from ``.npy`` (H, W, 3 float) or a normal PNG (8- or 16-bit RGB, or
    RGBA with the alpha channel as the object mask; :func:`decode_png`).

    Returns ``(normals float32 (H, W, 3), mask bool (H, W))``; errors are :class:`PsinspectError`
    naming the file. A map whose object is the whole frame and whose border is one constant
    normal, most likely a background written as a flat normal, gets a warning (either format),
    as does one that looks to be in another frame (x or y flipped, exchanged, vectors turned:
    :func:`frame_note`; about 5 ms a 256 x 256 map) unless ``check_frame`` is False: maps
    psinspect solved itself (a dataset's, whose captures were checked when solved; its own
    outputs).
    """
    path = Path(path)
    if path.is_dir():
        raise PsinspectError(f"{path}: is a folder, not a normal map file (.npy / .png)")
    if not path.is_file():
        raise PsinspectError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        shape, dtype, _ = npy_header(path)
        # refused from the header, before loading (object arrays: by load_npy)
        if not dtype.hasobject:
            if len(shape) != 3 or shape[2] != 3:
                raise PsinspectError(f"{path}: expected shape (H, W, 3), got {tuple(shape)}")
            check_map_size(shape[:2], str(path))
        out = validate_normal_map(load_npy(path), name=str(path))
        _warn_flat_background(*out, str(path))
        if check_frame:
            _warn_frame(*out, str(path))
        return out
    if suffix == ".png":
        hw = image_size_hw(path)
        if hw is not None:
            check_map_size(hw, str(path))
        mode = image_mode(path)
        if mode is not None and mode not in ("RGB", "RGBA"):  # (OpenCV would expand them)
            kind, hint = (("a palette (indexed)", "; a palette holds at most 256 normals: "
                           "save the map as RGB(A)") if mode.startswith("P")
                          else ("a greyscale", ""))
            raise PsinspectError(f"{path}: normal PNG must be 8- or 16-bit RGB or RGBA, got "
                                 f"{kind} PNG (mode {mode}){hint}")
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise PsinspectError(f"{path}: cannot read image (corrupt or not a PNG)")
        if (raw.ndim != 3 or raw.shape[2] not in (3, 4)
                or raw.dtype not in (np.uint8, np.uint16)):
            raise PsinspectError(f"{path}: normal PNG must be 8- or 16-bit RGB or RGBA, got "
                                 f"{raw.dtype} with shape {raw.shape}")
        try:
            n, mask = decode_png(cv2.cvtColor(raw, cv2.COLOR_BGR2RGB if raw.shape[2] == 3
                                              else cv2.COLOR_BGRA2RGBA))
        except PsinspectError as err:
            raise PsinspectError(f"{path}: {err}") from None
        out = validate_normal_map(n, mask, name=str(path), unit=True)
        _warn_flat_background(*out, str(path))
        if check_frame:
            _warn_frame(*out, str(path))
        return out
    raise PsinspectError(f"{path}: unsupported normal-map format (use .npy or .png)")


#: :func:`_warn_frame`: a map whose median normal z is below this (faces more than about 66
#: degrees away from the camera over most of the part) is said to be likely in another channel
#: order. The benchmark's 856 maps: 0.67 (the DiLiGenT ball) to 1.0
MIN_MEDIAN_Z = 0.4


def _warn_frame(normals: np.ndarray, mask: np.ndarray, name: str) -> None:
    """Warn where the map looks to be in another frame (:func:`frame_note`), or its normals
    face far away from the camera over most of the part (:data:`MIN_MEDIAN_Z`): x and z
    exchanged, as a PNG written in BGR order gives (a part tilted by 10 degrees then looks
    tilted by 80, and its defects passed)."""
    notes = [frame_note(normals, mask, name)]
    # (the z plane's view indexed by the mask: a mask and a channel index together take a
    # slow path of numpy's, 6x slower on an 8k map, the same values)
    z = float(np.median(normals[..., 2][np.asarray(mask, bool)])) if mask.any() else 1.0
    if z < MIN_MEDIAN_Z:
        notes.append(f"{name}: most of its normals face more than {np.degrees(np.arccos(z)):.0f}"
                     f" degrees away from the camera (median z {z:.2f}): if its channels are in "
                     "another order (a PNG written in BGR order, as OpenCV writes RGB arrays), "
                     "x and z are exchanged (psinspect's frame is x right, y up, z to the "
                     "camera), so scores and verdict may not hold")
    for note in notes:
        if note is not None:
            warnings.warn(note, UserWarning, stacklevel=3)


def _warn_flat_background(normals: np.ndarray, mask: np.ndarray, name: str) -> None:
    """Warn when a map's object is the whole frame and its border one constant normal: most
    likely a background written as a flat normal (e.g. (0.5, 0.5, 1) in a PNG), which is
    then scored as part of the object."""
    if not mask.all():
        return
    border = np.concatenate([normals[0], normals[-1], normals[:, 0], normals[:, -1]])
    if np.ptp(border, axis=0).max() < 1e-3:
        x, y, z = (float(v) for v in border[0])
        warnings.warn(f"{name}: every pixel counts as the object and the whole border is the "
                      f"one normal ({x:.2f}, {y:.2f}, {z:.2f}): if that is background, write "
                      "it as 0 (black) or alpha 0, or it is scored as part of the surface",
                      UserWarning, stacklevel=3)


#: :func:`frame_mismatch` ratio above which a map is said to be in another frame
FRAME_MISMATCH_RATIO = 1.3

#: :func:`frame_mismatch`: the other frames a map is tried in, named by what turns them into
#: psinspect's: ``flipped``: x or y negated (a y-down frame: DirectX-style maps, light
#: directions taken from image rows); ``swapped``: x and y exchanged (channels in another
#: order); ``turned``: x and y exchanged and one negated, i.e. the vectors a quarter turn off
#: their pixels (a map turned as an image, its vectors left as they were). Negating both x and
#: y (the surface upside down) leaves no trace in the curl and is not tried.
FRAMES = ("flipped", "swapped", "turned")


#: :func:`frame_mismatch` works on at most this many pixels: a larger map is shrunk by the
#: smallest whole factor that fits (:func:`resample`) first; its frame is a property of the whole
#: map, and the full-size float copies took 3 GB more for an 8192 x 8192 map
FRAME_CHECK_MAX_PIXELS = 2048 * 2048


def frame_mismatch(normals: np.ndarray, mask: np.ndarray) -> tuple[float, str] | None:
    """How much better ``normals`` (H, W, 3; camera frame: x right, y up, z to the camera)
    describe a surface in another frame (:data:`FRAMES`), and which: the RMS curl of their
    slope field ``(p, q) = (-nx / nz, -ny / nz)`` as it is, over the smallest of the others'.
    A surface's own slopes have no curl (``dp/dy = dq/dx``; y grows up, against the rows), so
    a map in this frame gives well below 1 and one in another frame well above 1. Over the
    benchmark's 856 dataset maps: 0.02-0.91 as they are; with y negated 1.13-45 (2 of 856
    below 1.3), x and y exchanged 1.10-40 (12 below), vectors turned a quarter 1.44-59; noise
    alone gives about 1. Pixels of ``mask`` (H, W) with nz > 0.3 count where their neighbours
    two pixels away do too (steep slopes and edges left out); each curl is smoothed by a
    Gaussian of 1 px first. None where fewer than 400 pixels count (too little to tell). A map
    of more than :data:`FRAME_CHECK_MAX_PIXELS` pixels is judged shrunk by the smallest whole
    factor that fits (area averaging, :func:`resample`)."""
    mask = np.asarray(mask, bool)
    k = math.ceil(math.sqrt(mask.size / FRAME_CHECK_MAX_PIXELS))
    if k > 1:
        normals, mask = resample(normals, mask, (mask.shape[0] // k, mask.shape[1] // k))
    nz = normals[..., 2]
    ok = mask & (nz > 0.3)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    valid = cv2.erode(ok.astype(np.uint8), cross, iterations=2, borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).astype(bool)
    if valid.sum() < 400:
        return None
    safe = np.where(ok, nz, 1.0)
    p = np.where(ok, -normals[..., 0] / safe, 0.0)
    q = np.where(ok, -normals[..., 1] / safe, 0.0)
    dp_dy, dq_dx = -np.gradient(p, axis=0), np.gradient(q, axis=1)
    dq_dy, dp_dx = -np.gradient(q, axis=0), np.gradient(p, axis=1)

    def blur(x: np.ndarray) -> np.ndarray:  # Gaussian of 1 px, reflected at the border
        return cv2.GaussianBlur(x, (9, 9), 1.0, borderType=cv2.BORDER_REFLECT)

    weight = blur(valid.astype(np.float64))[valid]

    def rms(curl: np.ndarray) -> float:
        smooth = blur(np.where(valid, curl, 0.0))[valid] / weight
        return float(np.sqrt(np.mean(smooth ** 2)))

    # the curl of (p, q) with q negated, of (q, p), and of (-q, p)
    others = dict(zip(FRAMES, (rms(dp_dy + dq_dx), rms(dq_dy - dp_dx), rms(dq_dy + dp_dx)),
                      strict=True))
    best = min(others, key=others.__getitem__)
    return (rms(dp_dy - dq_dx) / others[best], best) if others[best] > 0 else None


def frame_note(normals: np.ndarray, mask: np.ndarray, name: str, what: str = "the map",
               flip_fix: str = "y-down normals, as in DirectX-style maps, need y negated"
               ) -> str | None:
    """A one-line warning where :func:`frame_mismatch` is above :data:`FRAME_MISMATCH_RATIO`
    (``what``: how to name the normals' source, e.g. a capture's light directions;
    ``flip_fix``: how to put a flipped axis right), else None."""
    found = frame_mismatch(normals, mask)
    if found is None or found[0] <= FRAME_MISMATCH_RATIO:
        return None
    ratio, how = found
    frame = "psinspect's frame is x right, y up, z to the camera"
    better, likely = {
        "flipped": ("with their x or y component negated",
                    f"{what}'s x or y axis is likely flipped ({frame}; {flip_fix})"),
        "swapped": ("with their x and y components exchanged",
                    f"{what}'s x and y are likely in each other's place ({frame}; a normal "
                    "PNG holds x, y, z as R, G, B)"),
        "turned": ("with their vectors turned by a quarter turn",
                   f"{what} was likely turned by 90 degrees as an image without turning its "
                   f"vectors ({frame})")}[how]
    return (f"{name}: its normals fit a surface {ratio:.1f}x better {better}: {likely}, so "
            "scores and verdict may not hold")


# --------------------------------------------------------------------------------------------
# Geometry of normal maps: height -> normals, and image transforms that are correct for vector
# fields (moving the pixels AND turning the vectors), keeping unit length inside the mask.
# --------------------------------------------------------------------------------------------


def height_gradient(height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame slopes ``(dh/dx, dh/dy)`` of a height map, both ``(H, W) float32``.

    ``height``: (H, W), heights along +z in pixel units. Central differences (one-sided at the
    border); x grows with the column, y grows UP, so ``dh/dy = -dh/drow``.
    """
    h = np.asarray(height, dtype=np.float64)
    d_row, d_col = np.gradient(h)
    return d_col.astype(np.float32), (-d_row).astype(np.float32)


def normals_from_height(height: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Normal map of the surface ``z = height(x, y)`` (orthographic camera, pixel units).

    ``n = normalize(-dh/dx, -dh/dy, 1)`` in the DiLiGenT frame (x right, y up, z toward the
    camera; rows grow downward). Returns ``float32 (H, W, 3)``, zero outside ``mask`` if given.
    """
    gx, gy = height_gradient(height)
    n = normalize(np.stack([-gx, -gy, np.ones_like(gx)], axis=-1))
    if mask is not None:
        n[~np.asarray(mask, bool)] = 0.0
    return n


def rotate90(normals: np.ndarray, k: int = 1) -> np.ndarray:
    """Rotate a normal map by ``k`` x 90 degrees counter-clockwise as seen on screen.

    Pixels move like ``np.rot90(normals, k)`` and every vector turns with them,
    ``(x, y, z) -> (-y, x, z)`` per quarter turn (DiLiGenT frame, y up). Exact: no
    interpolation. ``(H, W, 3) -> (W, H, 3)`` for odd ``k``. Masks follow with ``np.rot90``.
    """
    k = int(k) % 4
    out = np.rot90(np.asarray(normals, np.float32), k, axes=(0, 1))
    x, y = out[..., 0], out[..., 1]
    if k == 1:
        vx, vy = -y, x
    elif k == 2:
        vx, vy = -x, -y
    elif k == 3:
        vx, vy = y, -x
    else:
        vx, vy = x, y
    return np.ascontiguousarray(np.stack([vx, vy, out[..., 2]], axis=-1), dtype=np.float32)


def flip(normals: np.ndarray, direction: str = "lr") -> np.ndarray:
    """Mirror a normal map: ``"lr"`` (left-right: columns reversed, x -> -x) or ``"ud"``
    (up-down: rows reversed, y -> -y). The result is the normal map of the mirrored surface.
    ``(H, W, 3) -> (H, W, 3)``; masks follow with ``np.fliplr`` / ``np.flipud``.
    """
    n = np.asarray(normals, np.float32)
    if direction == "lr":
        out = n[:, ::-1].copy()
        out[..., 0] *= -1.0
    elif direction == "ud":
        out = n[::-1].copy()
        out[..., 1] *= -1.0
    else:
        raise PsinspectError(f"flip direction must be 'lr' or 'ud', got {direction!r}")
    return out


def _warp_normals(
    normals: np.ndarray, mask: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Affine-warp vectors (bilinear) and mask (area > 1/2), renormalise, zero outside."""
    h, w = out_hw
    flags = cv2.INTER_LINEAR
    n = cv2.warpAffine(np.ascontiguousarray(normals, np.float32), matrix, (w, h), flags=flags,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    m = cv2.warpAffine(mask.astype(np.float32), matrix, (w, h), flags=flags,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    length = np.linalg.norm(n, axis=-1)
    mask_out = (m > 0.5) & (length > 1e-3)
    n = normalize(n)
    n[~mask_out] = 0.0
    return n, mask_out


def rotate(
    normals: np.ndarray, angle_deg: float, *, mask: np.ndarray | None = None, expand: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a normal map by ``angle_deg`` counter-clockwise (as seen on screen) about its
    centre; vectors turn by the same angle about +z (DiLiGenT frame).

    ``normals``: (H, W, 3); ``mask``: (H, W) bool (default: non-zero vectors). With ``expand``
    the canvas grows to hold the whole rotated image, else it keeps (H, W) and corners are cut.
    Bilinear resampling, then renormalised to unit length; the mask is resampled and cut at 1/2.
    Returns ``(normals float32 (H', W', 3), mask bool (H', W'))``.
    """
    n = np.asarray(normals, np.float32)
    if mask is None:
        mask = np.abs(n).sum(axis=-1) > 0
    mask = np.asarray(mask, bool)
    mat, out_hw = _rotation_matrix(mask.shape, angle_deg, expand)
    turned = rotate_vectors(n, angle_deg)
    return _warp_normals(turned, mask, mat, out_hw)


def _rotation_matrix(shape_hw: tuple[int, int], angle_deg: float, expand: bool
                     ) -> tuple[np.ndarray, tuple[int, int]]:
    """cv2 affine matrix rotating an (H, W) image about its centre, and the output (H', W')."""
    h, w = shape_hw
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    mat = cv2.getRotationMatrix2D(centre, float(angle_deg), 1.0)
    out_h, out_w = h, w
    if expand:
        c, s = abs(mat[0, 0]), abs(mat[0, 1])
        out_w = int(np.ceil(w * c + h * s - 1e-6))
        out_h = int(np.ceil(w * s + h * c - 1e-6))
        mat[0, 2] += (out_w - 1) / 2.0 - centre[0]
        mat[1, 2] += (out_h - 1) / 2.0 - centre[1]
    return mat, (out_h, out_w)


def rotate_mask(mask: np.ndarray, angle_deg: float, *, expand: bool = True) -> np.ndarray:
    """Rotate a bool mask (H, W) exactly like :func:`rotate` moves the pixels of a map
    (bilinear, cut at 1/2)."""
    m = np.asarray(mask, bool)
    mat, (out_h, out_w) = _rotation_matrix(m.shape, angle_deg, expand)
    r = cv2.warpAffine(m.astype(np.float32), mat, (out_w, out_h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return r > 0.5


def pad_geometry(
    shape_hw: tuple[int, int], size: int | tuple[int, int]
) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Scale and placement for fitting an (H, W) image into ``size`` without stretching.

    Returns ``(scale, (new_h, new_w), (top, left))``: resize by ``scale`` (same on both axes) to
    ``(new_h, new_w)``, then paste at row ``top``, column ``left`` of the zero canvas (centred).
    """
    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = shape_hw
    scale = min(th / h, tw / w)
    nh = max(1, min(th, int(round(h * scale))))
    nw = max(1, min(tw, int(round(w * scale))))
    return scale, (nh, nw), ((th - nh) // 2, (tw - nw) // 2)


def object_window(mask: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """``(r0, r1, c0, c1)``: the object's bounding box grown by ``margin`` on every side, in
    map coordinates (it may reach past the map's edges); None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (int(rows[0]) - margin, int(rows[-1]) + 1 + margin,
            int(cols[0]) - margin, int(cols[-1]) + 1 + margin)


def take_window(arr: np.ndarray, win: tuple[int, int, int, int]) -> np.ndarray:
    """``arr[r0:r1, c0:c1]`` (first two axes), zeros where the window lies outside ``arr``."""
    r0, r1, c0, c1 = win
    h, w = arr.shape[:2]
    out = np.zeros((r1 - r0, c1 - c0, *arr.shape[2:]), arr.dtype)
    a0, a1, b0, b1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = arr[a0:a1, b0:b1]
    return out


def put_window(arr: np.ndarray, win: tuple[int, int, int, int], shape: tuple[int, int]
               ) -> np.ndarray:
    """The inverse of :func:`take_window`: a zero array of ``shape`` (plus ``arr``'s trailing
    axes) holding ``arr`` at the window."""
    r0, r1, c0, c1 = win
    h, w = shape
    out = np.zeros((h, w, *arr.shape[2:]), arr.dtype)
    a0, a1, b0, b1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    out[a0:a1, b0:b1] = arr[a0 - r0:a1 - r0, b0 - c0:b1 - c0]
    return out


def resample(normals: np.ndarray, mask: np.ndarray, size_hw: tuple[int, int]
             ) -> tuple[np.ndarray, np.ndarray]:
    """A normal map resampled to ``size_hw`` (H, W): the same surface scaled alike in x, y and
    z, whose slopes, so vectors, are unchanged. Object vectors only are averaged (area
    averaging when shrinking, bilinear when growing; background zeros do not pull edges in)
    and renormalised; the mask is resampled and cut at 1/2. Returns ``(normals float32
    (H, W, 3), mask bool (H, W))``."""
    n = np.asarray(normals, np.float32)
    mask = np.asarray(mask, bool)
    nh, nw = size_hw
    interp = cv2.INTER_AREA if nh < mask.shape[0] else cv2.INTER_LINEAR
    w = mask.astype(np.float32)
    num = cv2.resize(n * w[..., None], (nw, nh), interpolation=interp)
    den = cv2.resize(w, (nw, nh), interpolation=interp)
    m = den > 0.5
    r = normalize(num)
    m &= np.linalg.norm(num, axis=-1) > 1e-6
    r[~m] = 0.0
    return r, m


def resize_with_pad(
    normals: np.ndarray, size: int | tuple[int, int], *, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a normal map into ``size`` (int or (H, W)) keeping its aspect ratio: one scale
    factor for both axes (:func:`resample`), zero padding around (centred), never stretched.
    The mask defaults to the non-zero vectors. Returns ``(normals float32 (h, w, 3), mask bool
    (h, w))`` with ``(h, w) = size``.
    """
    n = np.asarray(normals, np.float32)
    if mask is None:
        mask = np.abs(n).sum(axis=-1) > 0
    mask = np.asarray(mask, bool)
    _, (nh, nw), (top, left) = pad_geometry(mask.shape, size)
    th, tw = (size, size) if isinstance(size, int) else size
    r, m = resample(n, mask, (nh, nw))
    out = np.zeros((th, tw, 3), np.float32)
    out_m = np.zeros((th, tw), bool)
    out[top:top + nh, left:left + nw] = r
    out_m[top:top + nh, left:left + nw] = m
    return out, out_m


def read_mask_png(path: str | os.PathLike[str], shape: tuple[int, int],
                  what: str = "ground-truth mask") -> np.ndarray:
    """A mask PNG (:func:`psinspect.fileio.read_mask_image`) for a map of ``shape`` (H, W) ->
    bool (H, W); a missing, unreadable or wrong-sized one is a :class:`PsinspectError` naming
    it as ``what``."""
    m = read_mask_image(path)
    if m is None:
        raise PsinspectError(f"{path}: missing or unreadable {what}")
    if m.shape != tuple(shape):
        raise PsinspectError(f"{path}: {what} is {m.shape[1]} x {m.shape[0]}, the map "
                             f"{shape[1]} x {shape[0]}")
    return m

