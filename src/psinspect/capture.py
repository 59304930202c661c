"""Read, validate and write multi-light capture folders.

A *capture* is K images of a static object taken from a fixed orthographic camera, each under one
distant light. Two folder layouts are read:

**DiLiGenT layout** (recognised by ``filenames.txt``; see the DiLiGenT pmsData release)::

    filenames.txt           image names in light order, one per line; each must be a different
                            file inside the folder (an absolute path, '..' or a link that
                            leads out of the folder is refused)
    light_directions.txt    K lines ``x y z`` (unit vectors, normalised here)
    light_intensities.txt   optional, K lines ``r g b`` (or one value per line); images are
                            divided by them
    mask.png                optional object mask (non-zero = object)
    Normal_gt.mat / .npy    optional ground-truth normals (H, W, 3)

**Plain layout** (no ``filenames.txt``): every image file in the folder, in natural order of
the names (digit runs by value: ``img2`` before ``img10``; letters regardless of case;
:func:`natural_key`), except
``mask.*``, ``Normal_gt.*``, ``normals.*`` and ``M_defect.*`` (a defect ground truth), plus a
lights file: the one given as
``lights_file``, else the first of ``lights.txt`` and ``light_directions.txt`` found (the same
rule picks the lights file of a DiLiGenT-layout folder). ``light_intensities.txt``,
``mask.png`` and ground truth are read as above when present.

**Lights file format.** One light per non-empty line; ``#`` starts a comment. The values are
either three numbers ``x y z`` (a direction, normalised here) or, when the file contains the
header line ``# format: slant_tilt`` or ``# format: elevation_azimuth``, two numbers in degrees:

- ``slant_tilt``: slant = angle between the light and the camera axis +z (0 = light at the
  camera), tilt = azimuth in the image plane, counter-clockwise from +x (right) towards +y (up).
  See :func:`lights_from_slant_tilt`.
- ``elevation_azimuth``: elevation = angle above the image plane (90 = light at the camera,
  i.e. slant = 90 - elevation), azimuth = the same as tilt.

``# format: xyz`` may be given explicitly. A two-column file without a header is refused, since
slant and elevation are both in use in practice and silently picking one would give wrong lights.
Directions point from the object toward the light, so every light has z > 0 (toward the camera);
lights with z <= 0 (a flipped sign convention, or slant >= 90) are refused, as are (nearly)
coplanar light sets (:func:`psinspect.stereo.check_lights_conditioned`), which give unreliable
normals.

**Radiometry.** Pixel values are scaled to [0, 1] (8-bit by 255, 16-bit by 65535), raised to the
power ``gamma`` (1 for linear cameras, e.g. 2.2 for sRGB-encoded images), and divided by the light
intensity. Colour images are divided per channel by the RGB intensities and then combined as
``0.299 R + 0.587 G + 0.114 B`` (the Rec. 601 luma weights; on DiLiGenT this reproduces the
published least-squares baseline errors, see ``BENCHMARKS.md``). Grey images with RGB intensities
are divided by the same weighted mean of the intensities.

Frames: lights and normals use the DiLiGenT camera frame, x right, y up, z toward the camera;
image rows grow downward (a row step is -y).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from psinspect.errors import PsinspectError
from psinspect.fileio import (
    atomic_write_bytes,
    file_sha256,
    image_size_hw,
    load_npy,
    read_mask_image,
    save_npy,
    save_png,
)
from psinspect.stereo import check_lights_conditioned, check_lights_face_camera, check_shading

#: Rec. 601 luma weights (R, G, B) used to combine intensity-normalised colour channels.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: file stems (lower case) that are never capture images in the plain layout
_NON_CAPTURE_STEMS = ("mask", "normal_gt", "normals", "m_defect")
DEFAULT_LIGHTS_FILES = ("lights.txt", "light_directions.txt")
#: the optional per-light intensities of a capture folder (both layouts)
INTENSITIES_FILE = "light_intensities.txt"
#: a folder holding one of these is a capture folder
CAPTURE_MARKERS = ("filenames.txt", *DEFAULT_LIGHTS_FILES)


def is_capture_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is a capture folder (holds one of :data:`CAPTURE_MARKERS`)."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / m).is_file() for m in CAPTURE_MARKERS)


def nested_captures_hint(folder: Path) -> str:
    """For an error about ``folder``, which holds no capture folder itself: where its
    captures are, if one of its sub-folders holds capture folders (folders of parts are read
    one level deep), else ``""``."""
    for q in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not q.name.startswith(".") and q.is_dir() and any(
                is_capture_folder(r) for r in q.iterdir() if not r.name.startswith(".")):
            return (f"; its sub-folder {q.name} holds capture folders: give {folder / q.name} "
                    "(folders of parts are read one level deep)")
    return ""


LIGHT_FORMATS = ("xyz", "slant_tilt", "elevation_azimuth")
#: largest image of a capture (pixels) and largest float32 image stack (bytes) that are loaded;
#: photometric stereo needs a few times the stack plus ~300 bytes per pixel, so these keep a
#: capture under ~13 GB. Checked from the image headers before anything is decoded.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_CAPTURE_BYTES = 2 * 1024**3
_DEPTH_NAMES = {255.0: "8-bit", 65535.0: "16-bit", 1.0: "floating-point"}


@dataclass
class Capture:
    """A loaded capture.

    Attributes:
        name: folder name.
        images: (K, H, W) float32 linear grey radiance, already divided by the light intensities.
        lights: (K, 3) float32 unit light directions, DiLiGenT frame (x right, y up, z to camera).
        mask: (H, W) bool object mask.
        normals_gt: (H, W, 3) float32 ground-truth normals (same frame) or None.
        filenames: the K image file names, in light order.
        path: the folder it was read from (None for in-memory captures).
        lights_file: the lights file it was read with (None for in-memory captures).
        clipped: (K, H, W) bool, the observations at the camera's full scale, where the capture
            is over-exposed (more than :data:`MAX_CLIPPED_FRACTION` of its object's
            observations clipped; reading warns), else None: photometric stereo leaves them
            out (:func:`psinspect.stereo.solve`).
    """

    name: str
    images: np.ndarray
    lights: np.ndarray
    mask: np.ndarray
    normals_gt: np.ndarray | None
    filenames: list[str]
    path: Path | None = None
    light_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lights_file: Path | None = None
    clipped: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_lights(self) -> int:
        return int(self.images.shape[0])


def lights_from_slant_tilt(slant_deg: np.ndarray | Sequence[float] | float,
                           tilt_deg: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """Unit light directions from slant/tilt angles in degrees.

    Convention (DiLiGenT frame, x right, y up, z toward the camera): ``slant`` is the angle
    between the light direction and the camera axis +z (0 = light at the camera, 90 = grazing);
    ``tilt`` is the azimuth in the image plane, counter-clockwise from +x towards +y (0 = light
    from the right, 90 = from above). ``l = (sin s cos t, sin s sin t, cos s)``.
    Elevation above the image plane is ``90 - slant``.

    Returns (K, 3) float32.
    """
    s = np.radians(np.atleast_1d(np.asarray(slant_deg, dtype=np.float64)))
    t = np.radians(np.atleast_1d(np.asarray(tilt_deg, dtype=np.float64)))
    s, t = np.broadcast_arrays(s, t)
    out = np.stack([np.sin(s) * np.cos(t), np.sin(s) * np.sin(t), np.cos(s)], axis=-1)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# text files


def _read_table(path: Path, what: str) -> tuple[np.ndarray, str | None]:
    """Numbers of a whitespace table with ``#`` comments -> (rows, cols) float64, format header."""
    if path.is_dir():
        raise PsinspectError(f"{path}: is a folder, not a {what} file")
    if not path.is_file():
        raise PsinspectError(f"{path}: {what} file not found")
    fmt = None
    rows: list[list[float]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Notepad) is dropped
    except (OSError, UnicodeDecodeError) as err:
        raise PsinspectError(f"{path}: cannot read {what} file ({err})") from None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#"):
            m = re.match(r"#\s*format\s*[:=]\s*(\S+)", line, re.IGNORECASE)
            if m:
                fmt = m.group(1).lower()
                if fmt not in LIGHT_FORMATS:
                    raise PsinspectError(
                        f"{path}: unknown format {fmt!r} on line {lineno} "
                        f"(use one of {', '.join(LIGHT_FORMATS)})"
                    )
            continue
        line = line.split("#", 1)[0].strip()
        tokens = line.split()
        if len(tokens) > 1 and any(re.search(r"\d,\d", t) for t in tokens):
            raise PsinspectError(
                f"{path}: line {lineno} {raw.strip()!r} has numbers joined by commas and others "
                "apart by spaces: decimal commas? Write decimals with '.' (a comma separates "
                "values, as a space does)")
        line = line.replace(",", " ").strip()
        if not line:
            continue
        try:
            rows.append([float(v) for v in line.split()])
        except ValueError:
            raise PsinspectError(f"{path}: line {lineno} is not numbers: {raw.strip()!r}") from None
    if not rows:
        raise PsinspectError(f"{path}: {what} file is empty")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise PsinspectError(f"{path}: rows have different numbers of values {sorted(widths)}")
    return np.asarray(rows, dtype=np.float64), fmt


def read_lights_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a lights file (see the module docstring) -> (K, 3) float32 unit vectors.

    Raises :class:`PsinspectError` naming the file for non-finite or zero vectors, lights with
    z <= 0 (pointing away from the camera), a wrong number of columns, or a two-column file
    without a format header.
    """
    path = Path(path)
    table, fmt = _read_table(path, "lights")
    ncol = table.shape[1]
    if fmt is None:
        if ncol == 2:
            raise PsinspectError(
                f"{path}: 2 values per line need a header line '# format: slant_tilt' or "
                "'# format: elevation_azimuth' (angles in degrees)"
            )
        fmt = "xyz"
    want = 3 if fmt == "xyz" else 2
    if ncol != want:
        raise PsinspectError(f"{path}: format {fmt} needs {want} values per line, got {ncol}")
    if not np.isfinite(table).all():
        bad = int(np.flatnonzero(~np.isfinite(table).all(axis=1))[0])
        raise PsinspectError(f"{path}: light {bad + 1} has a non-finite value")
    if fmt == "xyz":
        vec = table
    elif fmt == "slant_tilt":
        vec = lights_from_slant_tilt(table[:, 0], table[:, 1]).astype(np.float64)
    else:
        vec = lights_from_slant_tilt(90.0 - table[:, 0], table[:, 1]).astype(np.float64)
    # scale each row by its largest component first: |v| of 1e308-sized values overflows
    big = np.abs(vec).max(axis=1)
    if (big < 1e-8).any():
        bad = int(np.flatnonzero(big < 1e-8)[0])
        raise PsinspectError(f"{path}: light {bad + 1} is a zero vector")
    vec = vec / big[:, None]
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    check_lights_face_camera(unit, str(path))
    return unit.astype(np.float32)


def _read_intensities(path: Path, num: int) -> np.ndarray:
    """``light_intensities.txt`` -> (K, 1) or (K, 3) float64, positive and finite."""
    table, _ = _read_table(path, "light intensities")
    if table.shape[1] not in (1, 3):
        raise PsinspectError(f"{path}: need 1 or 3 values per line, got {table.shape[1]}")
    if table.shape[0] != num:
        raise PsinspectError(f"{path}: {table.shape[0]} intensities for {num} lights")
    if not np.isfinite(table).all() or (table <= 0).any():
        bad = int(np.flatnonzero(~(np.isfinite(table) & (table > 0)).all(axis=1))[0])
        raise PsinspectError(f"{path}: intensity on line {bad + 1} is not a positive number")
    return table


# --------------------------------------------------------------------------------------------
# images


def _imread(path: Path) -> tuple[np.ndarray, float]:
    """Read an 8/16-bit grey or colour image -> (raw (H, W) or (H, W, 3) BGR, full scale)."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        if not path.is_file():
            raise PsinspectError(f"{path}: image file not found")
        raise PsinspectError(f"{path}: cannot read image (corrupt or unsupported format)")
    if raw.dtype == np.uint8:
        scale = 255.0
    elif raw.dtype == np.uint16:
        scale = 65535.0
    elif raw.dtype in (np.float32, np.float64):
        scale = 1.0
        if not np.isfinite(raw).all():
            raise PsinspectError(f"{path}: image contains NaN or Inf values")
        if raw.size and raw.min() < 0:
            raise PsinspectError(f"{path}: image has values below 0 (down to "
                                 f"{float(raw.min()):.3g}): not linear light intensities")
    else:
        raise PsinspectError(f"{path}: unsupported pixel type {raw.dtype} (use 8 or 16 bit)")
    if raw.ndim == 3:
        if raw.shape[2] == 4:
            raw = raw[:, :, :3]
        elif raw.shape[2] == 1:
            raw = raw[:, :, 0]
        elif raw.shape[2] != 3:
            raise PsinspectError(f"{path}: unsupported number of channels {raw.shape[2]}")
    return raw, scale


def _to_grey(raw: np.ndarray, scale: float, intensity: np.ndarray, gamma: float,
             weights: Sequence[float]) -> np.ndarray:
    """Raw (H, W) or (H, W, 3) BGR -> linear grey (H, W) float32 divided by the light intensity.

    Values are scaled to [0, 1] by ``scale``, raised to ``gamma``, divided per channel by the
    intensity and (colour) combined with ``weights`` (R, G, B).
    """
    w = np.asarray(weights, dtype=np.float64)
    img = raw.astype(np.float32)
    if gamma != 1.0:
        img *= np.float32(1.0 / scale)
        np.power(img, np.float32(gamma), out=img)
        scale = 1.0
    if img.ndim == 3:
        inten = intensity if intensity.size == 3 else np.repeat(intensity, 3)
        coef = (w / inten / scale)[::-1]  # BGR order
        return cv2.transform(img, coef.reshape(1, 3)).reshape(img.shape[:2])
    inten = float(intensity[0]) if intensity.size == 1 else float(np.dot(w, intensity) / w.sum())
    img *= np.float32(1.0 / (inten * scale))
    return img


def natural_key(name: str) -> tuple[list[str | int], str]:
    """Sort key that orders the digit runs of a name by value, ``img2`` before ``img10``
    (cameras often number images without leading zeros), and its letters regardless of case,
    ``IMG2.PNG`` between ``img1.png`` and ``img3.png`` (files renamed by another tool or
    system); the name as it is breaks ties."""
    parts = re.split(r"(\d+)", name.casefold())
    return [int(t) if i % 2 else t for i, t in enumerate(parts)], name


def _list_plain_images(folder: Path) -> list[str]:
    """The plain layout's image files, in natural order of their names (:func:`natural_key`);
    two names that this order cannot tell apart (``img01.png`` and ``img1.png``, ``IMG1.PNG``
    and ``img1.png``) are refused: which light each goes with would be a guess."""
    names = []
    for p in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_symlink() and not p.exists():
            raise PsinspectError(f"{p}: a link to nothing (its image is gone)")
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
            continue
        if p.stem.lower() in _NON_CAPTURE_STEMS:
            continue
        names.append(p.name)
    for a, b in zip(names, names[1:], strict=False):
        if natural_key(a)[0] == natural_key(b)[0]:
            raise PsinspectError(f"{folder}: images {a} and {b} take the same place in the "
                                 "natural order of names (numbers by value, letters "
                                 "regardless of case): rename them, or list the images in "
                                 "light order in filenames.txt")
    return names


def _check_distinct_images(digests: Sequence[bytes], names: Sequence[str], folder: Path
                           ) -> None:
    """Refuse two images whose files decode to the same pixels (``digests``: a hash of each
    image's decoded pixels, shape and type, as read, before any division by its light's
    intensity; ``names``: their files): one picture given for two lights (a file copied under
    another name), which photometric stereo would solve silently with one light's shading at
    the wrong direction."""
    seen: dict[bytes, int] = {}
    for k, digest in enumerate(digests):
        j = seen.setdefault(digest, k)
        if j != k:
            raise PsinspectError(f"{folder}: images {names[j]} and {names[k]} are "
                                 "identical: one picture for two lights (a copy?); each "
                                 "light needs its own image")


def _check_special_names(folder: Path) -> None:
    """Refuse files named like a capture folder's special files but not as psinspect reads
    them: a defect ground truth ``M_defect`` in another case or format (``M_defect.PNG``,
    ``m_defect.jpg``), the intensities or a lights file in another case
    (``Light_Intensities.txt``, ``Lights.txt``): they were skipped without a word, so a
    defective part trained as a good one, or every light was taken as equally bright. A
    ``defects.json`` without ``M_defect.png`` is refused too."""
    texts = {f.lower(): f for f in (INTENSITIES_FILE, *DEFAULT_LIGHTS_FILES)}
    for p in folder.iterdir():
        want = ("M_defect.png" if p.stem.lower() == "m_defect"
                else texts.get(p.name.lower()))
        if want is not None and p.name != want:
            raise PsinspectError(f"{p}: named like {want} but not as psinspect reads it "
                                 f"(exactly {want}): rename it, or remove it")
    if (folder / "defects.json").is_file() and not (folder / "M_defect.png").is_file():
        raise PsinspectError(f"{folder}: defects.json without M_defect.png (the defect ground "
                             "truth it goes with): add the mask, or remove defects.json")


def _read_filenames(path: Path) -> list[str]:
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise PsinspectError(f"{path}: cannot read ({err})") from None
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise PsinspectError(f"{path}: lists no images")
    return names


def _check_image_entries(folder: Path, names: Sequence[str], source: Path) -> None:
    """Every image name must resolve (links followed) to a path inside ``folder``, each to a
    different file; ``source`` (the file that lists the names, or the folder) is named in the
    error. Keeps a capture, e.g. an uploaded zip, from reading images elsewhere on the disk and
    one image from standing in for two lights."""
    root = folder.resolve()
    seen: dict[Path, str] = {}
    for name in names:
        try:
            target = (folder / name).resolve()
        except (OSError, ValueError, RuntimeError) as err:  # NUL byte, link loop
            raise PsinspectError(f"{source}: image entry {name!r} is not a valid path ({err})"
                                 ) from None
        if root not in target.parents:
            raise PsinspectError(
                f"{source}: image entry {name!r} is outside the capture folder (an absolute "
                "path, '..' or a link that leads out of it is refused); list images inside the "
                "folder"
            )
        if target in seen:
            first = seen[target]
            same = "is listed twice" if first == name else f"is the same file as {first!r}"
            raise PsinspectError(
                f"{source}: image entry {name!r} {same}; each light needs its own image"
            )
        seen[target] = name


def _load_gt(folder: Path, shape: tuple[int, int]) -> np.ndarray | None:
    mat, npy = folder / "Normal_gt.mat", folder / "Normal_gt.npy"
    if npy.is_file():
        gt, src = load_npy(npy), npy
    elif mat.is_file():
        import scipy.io

        try:
            data = scipy.io.loadmat(str(mat))
        except Exception as err:  # scipy raises several types for bad files
            raise PsinspectError(f"{mat}: cannot read MATLAB file ({err})") from None
        if "Normal_gt" not in data:
            raise PsinspectError(f"{mat}: no variable 'Normal_gt'")
        gt, src = data["Normal_gt"], mat
    else:
        return None
    gt = np.asarray(gt)
    if gt.shape != (*shape, 3):
        raise PsinspectError(f"{src}: shape {gt.shape} does not match images {(*shape, 3)}")
    if not np.issubdtype(gt.dtype, np.floating) or not np.isfinite(gt).all():
        raise PsinspectError(f"{src}: ground-truth normals must be finite floats")
    return gt.astype(np.float32)


def _check_sizes_from_headers(paths: Sequence[Path]) -> None:
    """Equal sizes and the memory limits, from the image headers (nothing decoded yet).
    Images whose header is unreadable are left to the decoder to report."""
    known = [(p, hw) for p in paths if (hw := image_size_hw(p)) is not None]
    if not known:
        return
    p0, (h, w) = known[0]
    for p, hw in known[1:]:
        if hw != (h, w):
            raise PsinspectError(
                f"{p}: image size {hw[1]}x{hw[0]} differs from {p0.name} ({w}x{h})"
            )
    if h * w > MAX_IMAGE_PIXELS:
        raise PsinspectError(
            f"{p0}: image is {w}x{h} pixels, more than the limit of {MAX_IMAGE_PIXELS} pixels "
            "per image; crop the images"
        )
    need = len(paths) * h * w * 4
    if need > MAX_CAPTURE_BYTES:
        raise PsinspectError(
            f"{p0}: {len(paths)} images of {w}x{h} pixels need {need / 2**30:.1f} GiB as float32, "
            f"more than the limit of {MAX_CAPTURE_BYTES / 2**30:.0f} GiB; use fewer lights "
            "(--lights / --num-lights) or crop the images"
        )


def capture_lights_file(folder: str | os.PathLike[str],
                        lights_file: str | os.PathLike[str] | None = None) -> Path:
    """The lights file a capture folder is read with: ``lights_file`` (a relative path is taken
    relative to the folder first, then the working directory; one that names two different
    files, one in each, is refused), else the one of :data:`DEFAULT_LIGHTS_FILES` in the
    folder (two of them that differ are refused: which one is meant cannot be told)."""
    folder = Path(folder)
    if lights_file is not None:
        lf = Path(lights_file)
        if lf.is_absolute() or not (folder / lf).is_file():
            return lf
        if lf.is_file() and not _same_content(lf, folder / lf):
            raise PsinspectError(
                f"--lights-file {lf}: names two different files, {folder / lf} in the capture "
                f"folder and {lf.resolve()} here; give the one meant by its absolute path")
        return folder / lf
    found = [folder / name for name in DEFAULT_LIGHTS_FILES if (folder / name).is_file()]
    if len(found) > 1 and not _same_content(*found):
        raise PsinspectError(f"{folder}: holds two different lights files, "
                             f"{' and '.join(f.name for f in found)}; remove one, or name the "
                             "one meant with --lights-file")
    if found:
        return found[0]
    raise PsinspectError(f"{folder}: no lights file ({' or '.join(DEFAULT_LIGHTS_FILES)}) "
                         "in the folder")


def _same_content(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (the same file, or unreadable: compared as
    different only when both can be read)."""
    try:
        return a.samefile(b) or a.read_bytes() == b.read_bytes()
    except OSError:
        return True  # (reading the lights file says what is wrong with it)


def capture_fingerprint(folder: str | os.PathLike[str]) -> str:
    """SHA-256 over the contents of a capture folder's images (in light order) and lights
    file: the same capture copied, moved or renamed has the same fingerprint, another one
    (a part rendered again into the same folder) another. Names are not hashed."""
    import hashlib

    folder = Path(folder)
    fn_file = folder / "filenames.txt"
    names = _read_filenames(fn_file) if fn_file.is_file() else _list_plain_images(folder)
    h = hashlib.sha256()
    for f in [*(folder / n for n in names), capture_lights_file(folder)]:
        h.update(file_sha256(f).encode("ascii"))
    return h.hexdigest()


def capture_mask_sha256(folder: str | os.PathLike[str]) -> str | None:
    """SHA-256 of a capture folder's ``mask.png`` (None without one). With
    :func:`capture_fingerprint` it tells apart parts cut by their masks from one exposure (a
    tray of parts, one folder per part): their fingerprints are equal, their masks are not."""
    mask = Path(folder) / "mask.png"
    return file_sha256(mask) if mask.is_file() else None


#: the range of ``--gamma`` (a camera's is about 2.2; 1e6 made every image black, and the
#: capture was refused as "no light on the object")
MIN_GAMMA, MAX_GAMMA = 0.1, 10.0


def load_capture(
    path: str | os.PathLike[str],
    *,
    gamma: float = 1.0,
    lights_file: str | os.PathLike[str] | None = None,
    select: np.ndarray | Sequence[int] | None = None,
    channel_weights: Sequence[float] = LUMA_WEIGHTS,
    progress: Callable[[int], None] | None = None,
    workers: int = 4,
) -> Capture:
    """Read a capture folder (DiLiGenT or plain layout; see the module docstring).

    Args:
        path: the capture folder.
        gamma: images are linearised as ``value ** gamma`` (1 = linear camera).
        lights_file: lights file to use instead of the folder's own (relative paths are taken
            relative to the capture folder first, then the working directory).
        select: 0-based light indices to keep (only those images are read), in the given order.
        channel_weights: weights (R, G, B) that combine intensity-normalised colour channels.
        progress: called with 1 after each image is read (for progress bars).
        workers: threads used to decode images (cv2 releases the GIL).

    Returns:
        A :class:`Capture` with ``images`` (K, H, W) float32, ``lights`` (K, 3) float32 unit.

    Raises:
        PsinspectError naming the file: image count vs light count, differing image sizes, an
        unreadable image, an image entry outside the folder or listed twice, non-finite or zero
        light vectors, lights with z <= 0, a mask size mismatch, fewer than 3 lights, (nearly)
        coplanar selected lights.
    """
    folder = Path(path)
    if folder.is_file():
        raise PsinspectError(f"{folder}: is a file, not a capture folder (images + lights)")
    if not folder.is_dir():
        raise PsinspectError(f"{folder}: capture folder not found")
    if not (MIN_GAMMA <= gamma <= MAX_GAMMA):  # (NaN fails too)
        raise PsinspectError(f"--gamma must be a number between {MIN_GAMMA:g} and "
                             f"{MAX_GAMMA:g} (2.2 for sRGB images), got {gamma}")

    _check_special_names(folder)
    # --- image names and lights
    fn_file = folder / "filenames.txt"
    if fn_file.is_file():
        names = _read_filenames(fn_file)
    else:
        names = _list_plain_images(folder)
        if not names:
            raise PsinspectError(f"{folder}: no images found (and no filenames.txt)")
    _check_image_entries(folder, names, fn_file if fn_file.is_file() else folder)
    lf = capture_lights_file(folder, lights_file)
    lights = read_lights_file(lf)
    if lights.shape[0] != len(names):
        src = fn_file if fn_file.is_file() else folder
        raise PsinspectError(
            f"{lf}: {lights.shape[0]} lights but {len(names)} images ({src})"
        )
    inten_file = folder / INTENSITIES_FILE
    intens = (_read_intensities(inten_file, len(names)) if inten_file.is_file()
              else np.ones((len(names), 1)))
    if fn_file.is_file() and not inten_file.is_file():
        # the DiLiGenT layout comes with its lights' intensities, which differ from light to
        # light: without them the normals are off by degrees, and nothing else would say so
        warnings.warn(f"{folder}: no {INTENSITIES_FILE}; every light taken as equally bright "
                      "(a DiLiGenT-layout capture's lights differ: without their intensities "
                      "the normals can be off by degrees)", UserWarning, stacklevel=2)

    # --- subset
    if select is None:
        idx = np.arange(len(names))
    else:
        idx = np.asarray(select, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(names)):
            raise PsinspectError(
                f"light selection out of range 1-{len(names)} for {folder}"
            )
    if idx.size < 3:
        raise PsinspectError(
            f"{lf}: photometric stereo needs at least 3 lights, got {idx.size}"
        )
    check_lights_conditioned(
        lights[idx], f"{lf}: the light directions" if select is None
        else f"{lf}: the {idx.size} selected light directions")

    # --- images (threaded decode + conversion; cv2 and numpy release the GIL)
    paths = [folder / names[i] for i in idx]
    mask_file = folder / "mask.png"
    need_nonblack = not mask_file.is_file()

    _check_sizes_from_headers(paths)

    def work(j: int) -> tuple[np.ndarray, np.ndarray | None, float,
                              tuple[int, np.ndarray] | None, bytes]:
        raw, scale = _imread(paths[j])
        raw = np.ascontiguousarray(raw)
        # (images of other sizes or bit depths are refused below, so the bytes alone tell)
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        grey = _to_grey(raw, scale, intens[idx[j]], gamma, channel_weights)
        if not np.isfinite(grey).all():
            raise PsinspectError(f"{paths[j]}: divided by its light's intensity (line "
                                 f"{idx[j] + 1} of {INTENSITIES_FILE}) it is no longer finite: "
                                 "that intensity is far too small")
        chans = raw.reshape(*raw.shape[:2], -1)
        nonblack = (chans > 0).any(axis=2) if need_nonblack else None
        # its pixels at its peak, where that is a sensor's full scale (clipped: over-exposed;
        # bit-packed, as an 8-bit capture often reaches 255 somewhere in every image)
        peak = int(chans.max()) if raw.dtype.kind == "u" and raw.size else -1
        top = ((peak, np.packbits(chans.max(axis=2) >= peak)) if peak in SENSOR_FULL_SCALES
               else None)
        if progress is not None:
            progress(1)
        return grey, nonblack, scale, top, digest

    from psinspect.interrupts import thread_pool

    with thread_pool(workers) as pool:
        results = list(pool.map(work, range(len(paths))))
    shape0 = results[0][0].shape
    scale0 = results[0][2]
    for p, (grey, _, scale, _, _) in zip(paths, results, strict=True):
        if grey.shape != shape0:
            raise PsinspectError(
                f"{p}: image size {grey.shape[1]}x{grey.shape[0]} differs from "
                f"{paths[0].name} ({shape0[1]}x{shape0[0]})"
            )
        if scale != scale0:
            raise PsinspectError(
                f"{p}: {_DEPTH_NAMES[scale]} image but {paths[0].name} is "
                f"{_DEPTH_NAMES[scale0]}; all images of a capture need the same bit depth"
            )
    images = np.stack([r[0] for r in results])
    nonblack_any = np.logical_or.reduce([r[1] for r in results]) if need_nonblack else None
    # the highest full scale any image reaches is the camera's: its images' pixels there
    level = max((r[3][0] for r in results if r[3] is not None), default=None)
    clipped = [r[3][1] if r[3] is not None and r[3][0] == level else None for r in results]
    digests = [r[4] for r in results]
    del results

    # --- mask
    if not need_nonblack:
        mask = read_mask_image(mask_file)
        if mask is None:
            raise PsinspectError(f"{mask_file}: cannot read image (corrupt or unsupported)")
        if mask.shape != shape0:
            raise PsinspectError(
                f"{mask_file}: mask size {mask.shape[1]}x{mask.shape[0]} differs from the "
                f"images ({shape0[1]}x{shape0[0]})"
            )
        if not mask.any():
            raise PsinspectError(f"{mask_file}: mask is empty (no object pixels)")
        if _looks_inverted(mask, images):
            warnings.warn(f"{mask_file}: the mask's object surrounds what it leaves out, which "
                          "is the brighter: is the mask inverted? (white, non-zero, marks the "
                          "object)", UserWarning, stacklevel=2)
    else:
        mask = nonblack_any
        # (a mask in another format is left out of a plain layout's images, but not read)
        other = sorted(p.name for p in folder.iterdir()
                       if p.is_file() and p.stem.lower() == "mask")
        unread = f" ({', '.join(other)} is not read: save the mask as mask.png)" if other else ""
        msg = (f"{folder}: no mask.png{unread}; using every non-black pixel as the object "
               f"({int(mask.sum())} of {mask.size} pixels)")
        warnings.warn(msg, UserWarning, stacklevel=2)
        if not mask.any():
            raise PsinspectError(f"{folder}: no mask.png and every image is black")

    over_exposed = _warn_clipped(clipped, mask, paths, str(folder))
    check_shading(images, lights[idx], mask, str(folder))
    _check_distinct_images(digests, [names[i] for i in idx], folder)
    gt = _load_gt(folder, shape0)
    return Capture(
        name=folder.resolve().name,
        images=images,
        lights=lights[idx].astype(np.float32),
        mask=mask,
        normals_gt=gt,
        filenames=[names[i] for i in idx],
        lights_file=lf,
        path=folder,
        light_indices=idx,
        clipped=_unpack_clipped(clipped, shape0) if over_exposed else None,
    )


def _looks_inverted(mask: np.ndarray, images: np.ndarray) -> bool:
    """Whether ``mask`` (H, W) bool looks drawn the other way round, the object black: its
    object touches all four edges of the frame, what it leaves out touches none (a part in
    the middle of the frame), and that is brighter over the ``images`` (K, H, W) than the
    object (a lit part on a dark background)."""
    sides = (mask[0], mask[-1], mask[:, 0], mask[:, -1])
    if mask.all() or not all(side.all() for side in sides):
        return False
    inside = images[:, ~mask].mean()
    return bool(inside > images[:, mask].mean())


#: the values at which a camera's images clip, as stored in 8- or 16-bit files: 2^b - 1 for
#: b = 8..16 bits, and the same shifted to the top of 16 bits (a 12-bit camera's 4095 or
#: 65520)
SENSOR_FULL_SCALES = frozenset({2**b - 1 for b in range(8, 17)}
                               | {(2**b - 1) << (16 - b) for b in range(8, 17)})

#: fraction of a capture's object observations (pixels x images) at its camera's full scale
#: (:data:`SENSOR_FULL_SCALES`: the highest such value its images reach) above which reading
#: it warns and keeps them (:attr:`Capture.clipped`) for photometric stereo to leave out:
#: clipped values bend the normals by degrees (DiLiGenT ball 10 times over-exposed, 29 %
#: clipped: robust solver 4.32 deg mean error with them, 2.01 without, 1.95 as captured, and
#: with them it blamed 45 images' light intensities; a 12-bit camera's, at 4095 in 16-bit
#: files, likewise). Below it they are kept: the robust solver treats them as the highlights
#: they are (the ball 3 times over-exposed, 0.16 %: 1.95 deg either way). Good captures:
#: DiLiGenT ball 0.04 %, its bear and cat and rendered parts 0-0.10 %
MAX_CLIPPED_FRACTION = 0.01


def _warn_clipped(clipped: Sequence[np.ndarray | None], mask: np.ndarray,
                  paths: Sequence[Path], name: str) -> bool:
    """Warn where more than :data:`MAX_CLIPPED_FRACTION` of the object's observations are
    clipped (and return True: over-exposed): ``clipped`` holds, per image, its (H, W) bool map
    of pixels at the camera's full scale, bit-packed (``np.packbits``), or None where it has
    none."""
    counts = [0 if c is None else int(_unpack_clipped([c], mask.shape)[0][mask].sum())
              for c in clipped]
    total = sum(counts) / (len(counts) * max(int(mask.sum()), 1))
    if total <= MAX_CLIPPED_FRACTION:
        return False
    worst = int(np.argmax(counts))
    warnings.warn(
        f"{name}: {100 * total:.0f} % of the object's pixel observations are at the camera's "
        f"full scale (over-exposed; {paths[worst].name}: {100 * counts[worst] / mask.sum():.0f} "
        "% of the object): they are left out of photometric stereo, which then rests on "
        "fewer lights; shorten the exposure or lower the lights", UserWarning, stacklevel=3)
    return True


def _unpack_clipped(clipped: Sequence[np.ndarray | None], shape: tuple[int, int]
                    ) -> np.ndarray:
    """The bit-packed per-image maps of :func:`_warn_clipped` as one (K, H, W) bool array
    (all False for an image without)."""
    out = np.zeros((len(clipped), *shape), bool)
    for k, c in enumerate(clipped):
        if c is not None:
            out[k] = np.unpackbits(c, count=out[k].size).reshape(shape).view(bool)
    return out


# --------------------------------------------------------------------------------------------
# writing


def _fmt_rows(rows: np.ndarray) -> bytes:
    return ("\n".join(" ".join(f"{v:.6f}" for v in r) for r in np.atleast_2d(rows)) + "\n").encode()


def write_capture(
    path: str | os.PathLike[str],
    images: np.ndarray,
    lights: np.ndarray,
    mask: np.ndarray,
    *,
    intensities: np.ndarray | None = None,
    normals_gt: np.ndarray | None = None,
    filenames: list[str] | None = None,
) -> Path:
    """Write a capture in the DiLiGenT layout (readable by :func:`load_capture`).

    Args:
        path: folder (created; existing files with the same names are replaced atomically,
            other files are left alone).
        images: (K, H, W) grey or (K, H, W, 3) RGB; float in [0, 1] (clipped and quantised to
            uint16) or uint16. Raw radiance, i.e. *before* division by ``intensities``.
        lights: (K, 3) light directions, DiLiGenT frame (normalised when written).
        mask: (H, W) bool object mask, written as ``mask.png`` (0 / 255).
        intensities: (K,) or (K, 3) RGB light intensities; default all ones.
        normals_gt: (H, W, 3) float ground-truth normals, written as ``Normal_gt.npy``.
        filenames: K image names (default ``001.png`` ...); must end in ``.png``.

    Writes ``filenames.txt``, ``light_directions.txt``, ``light_intensities.txt``, the 16-bit
    PNGs, ``mask.png`` and optionally ``Normal_gt.npy``. Returns the folder.
    """
    out = Path(path)
    imgs = np.asarray(images)
    if imgs.ndim not in (3, 4) or (imgs.ndim == 4 and imgs.shape[3] != 3):
        raise PsinspectError(f"{out}: images must be (K, H, W) or (K, H, W, 3), got {imgs.shape}")
    k, h, w = imgs.shape[:3]
    lights = np.asarray(lights, dtype=np.float64)
    if lights.shape != (k, 3):
        raise PsinspectError(f"{out}: lights must be ({k}, 3), got {lights.shape}")
    norms = np.linalg.norm(lights, axis=1)
    if not np.isfinite(lights).all() or (norms < 1e-8).any():
        raise PsinspectError(f"{out}: lights must be finite non-zero vectors")
    check_lights_face_camera(lights, str(out / "light_directions.txt"))
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (h, w):
        raise PsinspectError(f"{out}: mask shape {mask.shape} != image shape {(h, w)}")
    if intensities is None:
        inten = np.ones((k, 3))
    else:
        inten = np.asarray(intensities, dtype=np.float64).reshape(k, -1)
        if inten.shape[1] not in (1, 3) or not (np.isfinite(inten) & (inten > 0)).all():
            raise PsinspectError(f"{out}: intensities must be positive, shape (K,) or (K, 3)")
    names = filenames if filenames is not None else [f"{i + 1:03d}.png" for i in range(k)]
    if len(names) != k or any(not str(n).lower().endswith(".png") for n in names):
        raise PsinspectError(f"{out}: need {k} file names ending in .png")
    if imgs.dtype == np.uint16:
        q = imgs
    elif np.issubdtype(imgs.dtype, np.floating):
        if not np.isfinite(imgs).all():
            raise PsinspectError(f"{out}: images contain NaN or Inf")
        q = np.rint(np.clip(imgs, 0.0, 1.0) * 65535.0).astype(np.uint16)
    else:
        raise PsinspectError(f"{out}: images must be float in [0, 1] or uint16, got {imgs.dtype}")
    gt = None
    if normals_gt is not None:
        gt = np.asarray(normals_gt, dtype=np.float32)
        if gt.shape != (h, w, 3):
            raise PsinspectError(f"{out}: normals_gt must be ({h}, {w}, 3), got {gt.shape}")
    out.mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, q, strict=True):
        save_png(out / name, img)
    save_png(out / "mask.png", mask.astype(np.uint8) * 255)
    atomic_write_bytes(out / "filenames.txt", ("\n".join(names) + "\n").encode())
    atomic_write_bytes(out / "light_directions.txt", _fmt_rows(lights / norms[:, None]))
    atomic_write_bytes(out / "light_intensities.txt", _fmt_rows(inten))
    if gt is not None:
        save_npy(out / "Normal_gt.npy", gt)
    return out
