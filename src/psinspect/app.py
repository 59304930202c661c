"""The Gradio web app for inspectors (``psinspect serve``).

An inspector uploads either a normal map (``.png`` 8- or 16-bit normal encoding or ``.npy`` float
(H, W, 3)) or a multi-light capture as a ``.zip`` (images plus a lights file, DiLiGenT layout or a
plain folder with ``lights.txt`` in ``x y z`` or ``# format: slant_tilt``), picks a model and a
threshold, and gets the anomaly heatmap, the predicted defect mask, the image score, a PASS/FAIL
verdict and a table of defect regions.

The logic is plain Python (:func:`load_inspection_input`, :func:`predict`) so that it is unit
tested without a browser; :func:`build_app` only wires it to Gradio widgets and :func:`serve`
launches it. Every user error is a :class:`PsinspectError` shown as a readable message in the page
(never a stack trace). Uploads are unpacked into the app's own temp folder, which is removed when
the server stops; the server only serves files from that folder.

Frames: normal maps use the DiLiGenT camera frame (x right, y up, z toward the camera); image rows
grow downward.
"""

from __future__ import annotations

import functools
import html
import io
import logging
import lzma
import math
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np

from psinspect.capture import CAPTURE_MARKERS, IMAGE_SUFFIXES
from psinspect.errors import PsinspectError
from psinspect.fileio import file_sha256, image_size_hw, npy_header, save_png
from psinspect.normalmap import (
    encode_png,
    load_normal_map,
    read_mask_png,
    validate_normal_map,
)

log = logging.getLogger(__name__)

#: where the shipped one-click examples live (rendered parts; see ``data/examples/README.md``)
EXAMPLES_DIR = Path(__file__).parent / "data" / "examples"


@dataclass(frozen=True)
class Limits:
    """What the app accepts. Sizes in bytes, image sides in pixels."""

    max_upload_bytes: int = 200 * 1024 * 1024
    max_image_side: int = 2048
    max_zip_entries: int = 1000
    max_unpacked_bytes: int = 1024 * 1024 * 1024
    max_lights: int = 256


@dataclass
class InspectionInput:
    """A loaded upload.

    normals: (H, W, 3) float32 unit inside ``mask``, zero outside (DiLiGenT frame).
    mask: (H, W) bool object mask.
    confidence: (H, W) float32 in [0, 1] from photometric stereo, or None for a normal map.
    kind: ``"normal map"`` or ``"capture (K lights)"``.
    capture: for a capture, ``(images (K, H, W), lights (K, 3), solver)``: what
    :meth:`light_splits` needs (models that also solve PS on half light sets, as
    ``psinspect detect`` does for them).
    source: the uploaded file's name (no server folder); source_sha256: its SHA-256.
    gt_mask: (H, W) bool ground truth inside ``mask``, as ``psinspect detect`` finds it (a
    capture's ``M_defect.png``; for a map, :func:`psinspect.detect.given_ground_truth`, e.g. an
    ``N_<x>`` map is clean), or None where the input comes with none.
    """

    name: str
    normals: np.ndarray
    mask: np.ndarray
    confidence: np.ndarray | None = None
    kind: str = "normal map"
    source: str = ""
    source_sha256: str | None = None
    capture: tuple[np.ndarray, np.ndarray, str] | None = field(default=None, repr=False)
    #: an over-exposed capture's clipped observations (:attr:`psinspect.capture.Capture.clipped`)
    capture_clipped: np.ndarray | None = field(default=None, repr=False)
    gt_mask: np.ndarray | None = field(default=None, repr=False)
    _splits: list[np.ndarray | None] = field(default_factory=list, repr=False)

    def light_splits(self) -> np.ndarray | None:
        """The capture's half-light-set PS differences
        (:func:`psinspect.models.variation.light_split_differences`; None for a normal map or
        fewer than 12 lights), computed on first use and kept."""
        if self.capture is None:
            return None
        if not self._splits:
            from psinspect.models.variation import light_split_differences

            images, lights, solver = self.capture
            self._splits.append(light_split_differences(images, lights, self.mask, solver=solver,
                                                        clipped=self.capture_clipped))
        return self._splits[0]


# --------------------------------------------------------------------------------------------
# safe input handling


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip entry must not be extracted, or None when it is fine."""
    name = info.filename
    if "\x00" in name:
        return "has a NUL byte in its name"
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if any(part == ".." for part in p.parts):
        return "has a path that leaves the extraction folder ('..')"
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where the writer recorded no file type
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file or folder"
    return None


def safe_extract_zip(zip_path: str | os.PathLike[str], dest: str | os.PathLike[str],
                     limits: Limits = Limits()) -> Path:
    """Extract ``zip_path`` into the (new or empty) folder ``dest`` after checking every entry.

    Refused with :class:`PsinspectError`: not a zip, more than ``limits.max_zip_entries``
    entries, absolute or ``..`` paths, symbolic links or special files, encrypted entries, a
    total unpacked size over ``limits.max_unpacked_bytes`` (counted on the bytes actually
    written, so a lying header does not help a zip bomb). Returns ``dest``.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    label = zip_path.name
    if not zipfile.is_zipfile(zip_path):
        raise PsinspectError(f"{label}: not a zip archive (or a damaged or incomplete one)")
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_zip_entries:
                raise PsinspectError(
                    f"{label}: {len(infos)} entries, more than the limit of "
                    f"{limits.max_zip_entries}"
                )
            declared = sum(i.file_size for i in infos)
            if declared > limits.max_unpacked_bytes:
                raise PsinspectError(
                    f"{label}: unpacks to {declared / 2**20:.0f} MB, more than the limit of "
                    f"{limits.max_unpacked_bytes / 2**20:.0f} MB"
                )
            for info in infos:
                problem = _member_problem(info)
                if problem:
                    raise PsinspectError(f"{label}: entry {info.filename!r} {problem}")
                if info.flag_bits & 0x1:
                    raise PsinspectError(f"{label}: entry {info.filename!r} is encrypted")
            written = 0
            for info in infos:
                target = (root / info.filename.replace("\\", "/")).resolve()
                if target != root and root not in target.parents:
                    raise PsinspectError(
                        f"{label}: entry {info.filename!r} leaves the extraction folder"
                    )
                try:
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "xb") as dst:
                        while chunk := src.read(1 << 20):
                            written += len(chunk)
                            if written > limits.max_unpacked_bytes:
                                raise PsinspectError(
                                    f"{label}: unpacks to more than the limit of "
                                    f"{limits.max_unpacked_bytes / 2**20:.0f} MB"
                                )
                            dst.write(chunk)
                except (FileExistsError, NotADirectoryError, IsADirectoryError):
                    raise PsinspectError(
                        f"{label}: entry {info.filename!r} appears twice or clashes with a file "
                        "or folder of the same name") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            zlib.error, lzma.LZMAError) as err:  # (damaged data: the decompressors' errors)
        raise PsinspectError(f"{label}: cannot read zip archive ({err})") from None
    except OSError as err:
        if err.errno is not None:  # the server's own trouble (disk full, ...), not the zip's
            raise
        # bzip2's damaged data: an OSError without an errno
        raise PsinspectError(f"{label}: cannot read zip archive ({err})") from None
    return dest




def find_capture_folder(root: str | os.PathLike[str], max_depth: int = 3) -> Path:
    """The one folder under ``root`` (itself included) holding a capture.

    A capture folder contains ``filenames.txt`` (DiLiGenT layout) or a lights file
    (``lights.txt`` / ``light_directions.txt``). Hidden folders and ``__MACOSX`` are ignored.
    Raises :class:`PsinspectError` when there is none or more than one.
    """
    root = Path(root)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d != "__MACOSX" and depth < max_depth
        )
        if any(m in filenames for m in CAPTURE_MARKERS):
            found.append(here)
    if not found:
        raise PsinspectError(
            "the zip holds no capture: need images plus a lights file "
            "(filenames.txt + light_directions.txt in DiLiGenT layout, or lights.txt), at most "
            f"{max_depth} folder{'s' if max_depth != 1 else ''} deep"
        )
    if len(found) > 1:
        names = ", ".join(str(f.relative_to(root)) or "." for f in found[:5])
        raise PsinspectError(f"the zip holds {len(found)} captures ({names}); upload one at a time")
    return found[0]


def _check_size(shape: Sequence[int], label: str, limits: Limits) -> None:
    h, w = int(shape[0]), int(shape[1])
    if max(h, w) > limits.max_image_side:
        raise PsinspectError(
            f"{label}: image is {w} x {h} pixels, larger than the limit of "
            f"{limits.max_image_side} pixels per side"
        )
    if min(h, w) < 8:
        raise PsinspectError(f"{label}: image is {w} x {h} pixels, too small (at least 8 x 8)")


def load_inspection_input(
    path: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    limits: Limits = Limits(),
    solver: str | None = None,
) -> InspectionInput:
    """Load an upload: a normal map (``.png`` / ``.npy``) or a capture ``.zip``.

    A zip is extracted with :func:`safe_extract_zip` into a fresh folder under ``workdir`` and
    solved with photometric stereo (:func:`psinspect.stereo.run_photometric_stereo`, ``solver``
    default ``robust``; the app passes the chosen model's, as ``detect`` does); the extracted
    files are removed afterwards.
    Errors are :class:`PsinspectError` naming the uploaded file, never a server path.
    """
    path = Path(path)
    label = path.name
    if not path.is_file():
        raise PsinspectError(f"{label}: file not found")
    size = path.stat().st_size
    if size > limits.max_upload_bytes:
        raise PsinspectError(
            f"{label}: {size / 2**20:.0f} MB, more than the upload limit of "
            f"{limits.max_upload_bytes / 2**20:.0f} MB"
        )
    suffix = path.suffix.lower()
    if suffix in (".png", ".npy", ".zip"):
        return replace(_load_upload(path, label, suffix, Path(workdir), limits, solver),
                       source=label, source_sha256=file_sha256(path))
    raise PsinspectError(
        f"{label}: unsupported file type {suffix or '(none)'}; upload a normal map (.png, .npy) "
        "or a capture (.zip of images plus a lights file)"
    )


def _load_upload(path: Path, label: str, suffix: str, workdir: Path, limits: Limits,
                 solver: str | None) -> InspectionInput:
    if suffix in (".png", ".npy"):
        if suffix == ".png":
            hw = image_size_hw(path)
            if hw is not None:
                _check_size(hw, label, limits)
        else:
            _check_npy_header(path, label, limits)
        try:
            normals, mask = load_normal_map(path)
        except PsinspectError as err:
            raise PsinspectError(str(err).replace(str(path), label)) from None
        _check_size(normals.shape, label, limits)
        return InspectionInput(name=path.stem, normals=normals, mask=mask,
                               gt_mask=_map_ground_truth(path, mask))
    return _load_capture_zip(path, workdir, limits, solver)


def _map_ground_truth(path: Path, mask: np.ndarray) -> np.ndarray | None:
    """A normal map's ground truth inside ``mask`` as detect finds it
    (:func:`psinspect.detect.given_ground_truth`: an upload, alone in its folder, has one only
    when named ``N_<x>``, a clean dataset map); errors name files without their folder."""
    from psinspect.detect import given_ground_truth

    try:
        gt, _ = given_ground_truth(path, mask.shape)
    except PsinspectError as err:
        raise PsinspectError(str(err).replace(str(path.parent) + os.sep, "")) from None
    return None if gt is None else gt & mask


def _check_npy_header(path: Path, label: str, limits: Limits) -> None:
    """Refuse an over-sized ``.npy`` from its header before loading it."""
    try:
        shape, _, _ = npy_header(path)
    except PsinspectError:  # unreadable headers are reported by load_normal_map
        return
    if len(shape) == 3 and shape[2] == 3:  # other shapes: load_normal_map refuses them
        _check_size(shape, label, limits)


def _load_capture_zip(path: Path, workdir: Path, limits: Limits,
                      solver: str | None) -> InspectionInput:
    from psinspect.capture import load_capture
    from psinspect.stereo import run_photometric_stereo

    workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="capture-", dir=workdir))
    try:
        safe_extract_zip(path, tmp, limits)
        folder = find_capture_folder(tmp)
        # every image under the capture folder: filenames.txt may name images in subfolders
        images = [p for p in folder.rglob("*") if p.is_file()
                  and p.suffix.lower() in IMAGE_SUFFIXES]
        if len(images) > limits.max_lights + 2:
            raise PsinspectError(
                f"{path.name}: {len(images)} images, more than the limit of {limits.max_lights}"
            )
        try:
            for img in images:
                hw = image_size_hw(img)
                if hw is not None:
                    _check_size(hw, f"{path.name}/{img.relative_to(tmp)}", limits)
            capture = load_capture(folder, workers=2)
            gt = None  # (as psinspect detect reads a capture folder's ground truth)
            if (folder / "M_defect.png").is_file():
                gt = read_mask_png(folder / "M_defect.png", capture.mask.shape)
        except PsinspectError as err:
            raise PsinspectError(str(err).replace(str(tmp) + os.sep, "")) from None
        _check_size(capture.mask.shape, path.name, limits)
        result = run_photometric_stereo(capture, solver or "robust")
        # pixels PS could not solve (zero normals) are not part of the object
        obj = capture.mask & (np.abs(result.normals).sum(axis=-1) > 0)
        if not obj.any():
            raise PsinspectError(f"{path.name}: photometric stereo found no object pixels")
        # checked (and renormalised) as psinspect detect reads a capture: the same scores
        normals, obj = validate_normal_map(result.normals, obj, name=path.name)
        return InspectionInput(
            name=path.stem,
            normals=normals,
            mask=obj,
            confidence=result.confidence,
            kind=f"capture ({capture.num_lights} lights)",
            capture=(capture.images, capture.lights, solver or "robust"),
            capture_clipped=capture.clipped,
            gt_mask=None if gt is None else gt & obj,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# models and prediction


@dataclass
class ModelChoice:
    """A model the app offers: a loaded model directory and its calibrated operating point.

    bundle: :class:`psinspect.modelstore.ModelBundle` (model, pixel threshold, image
    threshold). The sliders start at the general calibrated thresholds and reach 3x the
    largest of :attr:`calibrated_thresholds` (those of each light count included).
    """

    label: str
    bundle: Any

    @property
    def threshold(self) -> float:
        return float(self.bundle.threshold)

    @property
    def image_threshold(self) -> float:
        return float(self.bundle.image_threshold)

    @property
    def calibrated_thresholds(self) -> list[float]:
        """The model's calibrated pixel thresholds: its general one and, for a known-part model
        calibrated per light count, each count's
        (:func:`psinspect.modelstore.light_count_thresholds`, at the model's level of test-time
        augmentation), sorted."""
        return self._calibrated("threshold")

    @property
    def calibrated_image_thresholds(self) -> list[float]:
        """As :attr:`calibrated_thresholds`, the pass/fail thresholds."""
        return self._calibrated("image_threshold")

    def _calibrated(self, key: str) -> list[float]:
        from psinspect.modelstore import light_count_thresholds

        groups = light_count_thresholds(self.bundle).values()
        return sorted({float(getattr(self.bundle, key)), *(float(g[key]) for g in groups)})

    @property
    def slider_max(self) -> float:
        return _slider_max(max(self.calibrated_thresholds))

    @property
    def image_slider_max(self) -> float:
        return _slider_max(max(self.calibrated_image_thresholds))


class OperatingPoint(NamedTuple):
    """A pass/fail threshold of :func:`operating_points`: for a share ``rate`` of good parts
    failing, the model's general ``threshold``, ``by_light_count`` (light count -> its
    threshold, for a known-part model calibrated per light count; else empty) and the
    ``rule`` that made them (summary.json's ``image_threshold_calibration``)."""

    rate: float
    threshold: float
    by_light_count: dict[int, float]
    rule: str


def operating_points(choice: ModelChoice) -> list[OperatingPoint]:
    """The pass/fail thresholds that ``psinspect detect --image-fpr R`` sets with ``choice``'s
    model for a few shares R of good parts failing (:data:`psinspect.train.OPERATING_RATES`,
    fitted to the clean calibration scores it stores for the test-time level it scores at;
    :func:`psinspect.train.image_thresholds_at_rate`); [] where the model cannot tell them."""
    from psinspect.train import OPERATING_RATES, image_thresholds_at_rate

    try:
        return [OperatingPoint(rate, *image_thresholds_at_rate(
                    choice.bundle.config, rate, getattr(choice.bundle.model, "tta", None)))
                for rate in OPERATING_RATES]
    except PsinspectError:
        return []


def operating_point_menu(choice: ModelChoice) -> list[tuple[str, str]]:
    """The page's menu of :func:`operating_points`: ``(label, rate)`` pairs, the label naming
    the rate and its threshold (and which is the model's own, calibrated one), and for a model
    calibrated per light count each count's."""
    def label(p: OperatingPoint) -> str:
        if p.by_light_count:
            counts = ", ".join(f"{n} lights {t:.4g}" for n, t in p.by_light_count.items())
            return f"{p.rate:.0%} of good parts failing: {counts}; other inputs {p.threshold:.4g}"
        return (f"{p.rate:.0%} of good parts failing: {p.threshold:.4g}"
                + (" (calibrated)" if math.isclose(p.threshold, choice.image_threshold) else ""))
    return [(label(p), str(p.rate)) for p in operating_points(choice)]


def picked_operating_point(choice: ModelChoice, rate: Any) -> OperatingPoint | None:
    """The :func:`operating_points` entry of the menu's value ``rate`` (a share as text or a
    number; None or empty: none picked); :class:`PsinspectError` for a share the model does not
    offer."""
    if rate is None or (isinstance(rate, str) and not rate.strip()):
        return None
    points = operating_points(choice)
    try:
        value = float(rate)
    except (TypeError, ValueError):
        value = math.nan
    point = next((p for p in points if math.isclose(p.rate, value)), None)
    if point is None:
        offered = ", ".join(str(p.rate) for p in points)
        raise PsinspectError(f"operating point {rate!r}: {choice.label} offers "
                             + (offered if offered else "none (it stores no calibration "
                                                        "scores to fit)"))
    return point


def _operating_point_rule(choice: ModelChoice, image_threshold: float | None) -> str | None:
    """How a pass/fail threshold set without the menu was made, where it is one of the
    model's :func:`operating_points` (an API client giving that value): that rate's rule;
    else None (set by hand). Not for a model calibrated per light count, whose rates'
    thresholds differ by light count (and may coincide between rates): the menu's pick says."""
    if image_threshold is None:
        return None
    return next((p.rule for p in operating_points(choice)
                 if not p.by_light_count
                 and math.isclose(image_threshold, p.threshold, rel_tol=1e-9)), None)


def _slider_range(top: float, value: float) -> dict[str, float]:
    """A threshold slider's range, from 0 to ``top`` in 1000 steps, and its ``value``."""
    return {"minimum": 0.0, "maximum": top, "value": value, "step": top / 1000}


def _slider_max(value: float) -> float:
    """A round upper end for a slider starting at ``value`` (about 3x it)."""
    if not np.isfinite(value) or value <= 0:
        return 1.0
    top = 3.0 * value
    mag = 10.0 ** np.floor(np.log10(top))
    return float(np.ceil(round(top / mag, 9)) * mag)  # (3 * 2e-4 / 1e-4 is 6.000...01)


#: the test-time augmentation level offered as a model's "thorough" choice (where calibrated)
THOROUGH_TTA = 8


def load_model_choices(model_dirs: Sequence[str | os.PathLike[str]] = (),
                       include_default: bool = True) -> list[ModelChoice]:
    """The bundled default model (first) plus every given MODEL_DIR, loaded and checked. A
    model calibrated for test-time augmentation level :data:`THOROUGH_TTA` (geo-seg) is also
    offered at that level, right after it: more accurate, slower (BENCHMARKS.md)."""
    from psinspect.modelstore import default_model_dir, load_model_dir, with_tta

    def add(d: str | os.PathLike[str] | None, name: str) -> None:
        b = load_model_dir(d)
        label = f"{name} ({b.config.get('model', '?')})"
        while label in {c.label for c in choices}:
            label += "'"
        choices.append(ModelChoice(label, b))
        if (THOROUGH_TTA in b.model.tta_levels and getattr(b.model, "tta", None) != THOROUGH_TTA
                and str(THOROUGH_TTA) in b.config.get("tta_thresholds", {})):
            choices.append(ModelChoice(f"{label}, thorough ({THOROUGH_TTA} turned copies, "
                                       "slower)", with_tta(b, THOROUGH_TTA)))

    choices: list[ModelChoice] = []
    if include_default:
        add(None, "default, bundled")
    for d in model_dirs:
        if Path(d).resolve() == default_model_dir().resolve():
            continue
        add(d, Path(d).name)
    if not choices:
        raise PsinspectError("no model to serve: give --model-dir or keep the bundled default")
    return choices


@dataclass
class Prediction:
    """What the app shows for one input. Images are RGB uint8 (H, W, 3)."""

    name: str
    kind: str
    normals_rgb: np.ndarray
    reference_rgb: np.ndarray | None
    heatmap_rgb: np.ndarray
    mask_rgb: np.ndarray
    image_score: float
    threshold: float
    image_threshold: float
    verdict: str
    regions: list[dict[str, Any]]
    #: what the results download holds (:func:`write_results_zip`): the input scored, the
    #: detection, and the summary.json document (``psinspect detect``'s, for this one input)
    inspected: InspectionInput | None = field(default=None, repr=False)
    detection: Any = field(default=None, repr=False)
    summary: dict[str, Any] = field(default_factory=dict, repr=False)
    #: why the verdict may not hold (shown under it, and in summary.json's ``warnings``)
    notes: list[str] = field(default_factory=list)
    #: the light count whose pass/fail threshold judged it (a known-part model calibrated per
    #: light count: its calibrated one, or its one for the share picked from the menu); None:
    #: the model's general one, or one set by hand
    image_threshold_lights: int | None = None
    #: the share of good parts failing picked from the menu (:func:`operating_points`) that
    #: set the pass/fail threshold; None: calibrated or set by hand
    operating_rate: float | None = None


REGION_COLUMNS = ["region", "area (px)", "centre x", "centre y",
                  "bbox (x0, y0, x1, y1; x1, y1 one past the last)", "peak score", "mean score"]


def regions_table(regions: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Rows of :data:`REGION_COLUMNS` for the app's table."""
    rows = []
    for i, r in enumerate(regions, start=1):
        rows.append([
            i, int(r["area_px"]), round(float(r["centroid_xy"][0]), 1),
            round(float(r["centroid_xy"][1]), 1), ", ".join(str(int(v)) for v in r["bbox"]),
            round(float(r["peak_score"]), 4), round(float(r["mean_score"]), 4),
        ])
    return rows


def verdict_html(prediction: Prediction | None, error: str | None = None) -> str:
    """The big verdict box (or a readable error box)."""
    if error is not None:
        return (
            '<div id="verdict-box" class="ps-verdict ps-error" style="font-size:1.1em;'
            'padding:12px;border-radius:8px;background:#fff3cd;color:#664d03">'
            f"<b>Cannot inspect:</b> {html.escape(error)}</div>"
        )
    if prediction is None:
        return '<div id="verdict-box" class="ps-verdict">Upload a file or pick an example.</div>'
    fail = prediction.verdict == "FAIL"
    colour = "#b00020" if fail else "#1b7f3b"
    n = len(prediction.regions)
    lights = prediction.image_threshold_lights
    rate = prediction.operating_rate
    which = ("" if rate is None else f", for {rate:.0%} of good parts failing") + (
        "" if lights is None else f", the one for {lights}-light captures")
    return (
        f'<div id="verdict-box" class="ps-verdict ps-{prediction.verdict.lower()}" '
        f'style="padding:12px;border-radius:8px;background:{colour}">'
        f'<div style="font-size:3em;font-weight:bold;line-height:1.1;color:white !important">'
        f"{prediction.verdict}</div>"
        f'<div style="color:white !important">{html.escape(prediction.name)} '
        f"({html.escape(prediction.kind)}): image score "
        f"{prediction.image_score:.4g} (pass/fail threshold {prediction.image_threshold:.4g}"
        f"{which}), "
        f"{n} region{'s' if n != 1 else ''} above the pixel threshold "
        f"{prediction.threshold:.4g}</div>"
        '<div style="color:white !important;font-size:0.85em">The verdict compares the image '
        "score (the map's own summary) with the pass/fail threshold; regions and their peak "
        "scores are on the pixel-score scale: a part can pass with marked regions.</div>"
        + "".join('<div class="ps-note" style="color:white !important;font-weight:bold">'
                  f"Note: {html.escape(note)}</div>" for note in prediction.notes)
        + "</div>"
    )


def heatmap_overlay(normals_rgb: np.ndarray, score: np.ndarray, mask: np.ndarray,
                    threshold: float, alpha: float = 0.6) -> np.ndarray:
    """Blend detect's heat map (:func:`psinspect.report.heatmap_rgb`: ``threshold`` at
    mid-scale) over the normal-map image inside the mask; outside it the image is dimmed.

    normals_rgb: (H, W, 3) uint8; score: (H, W) float; mask: (H, W) bool. Returns (H, W, 3) uint8.
    """
    from psinspect.report import heatmap_rgb

    heat = heatmap_rgb(np.asarray(score, np.float32), mask, threshold).astype(np.float32)
    base = normals_rgb.astype(np.float32)
    out = np.where(mask[..., None], (1 - alpha) * base + alpha * heat, base * 0.5)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mask_image(pred_mask: np.ndarray, object_mask: np.ndarray) -> np.ndarray:
    """Predicted defect mask as RGB: defect red, object grey, background black."""
    out = np.zeros((*pred_mask.shape, 3), np.uint8)
    out[object_mask] = (90, 90, 90)
    out[pred_mask & object_mask] = (255, 40, 40)
    return out


def predict(inp: InspectionInput, choice: ModelChoice, threshold: float | None = None,
            image_threshold: float | None = None, scale: float = 1.0,
            input_notes: Sequence[str] = (),
            operating_point: OperatingPoint | None = None) -> Prediction:
    """Score one input with one model (:func:`psinspect.detect.detect_map`).

    ``threshold``: per-pixel threshold for the defect mask and regions; ``image_threshold``:
    pass/fail threshold on the image score. ``None``, or any of the model's calibrated values
    (:attr:`ModelChoice.calibrated_thresholds`: where the page's sliders start, or those of
    the light count they were last set to) = the model's calibrated thresholds for this input:
    for a capture, those of its number of lights where the model was calibrated per light
    count (:func:`psinspect.modelstore.for_light_count`), as ``psinspect detect`` judges it.
    ``scale``: score the map resampled by this factor, as ``psinspect detect --scale``.
    ``input_notes``: warnings about the input (those ``psinspect detect`` prints while reading
    it), shown under the verdict and kept in the summary's ``warnings``.
    ``operating_point``: one of :func:`operating_points` picked from the page's menu: it sets
    the pass/fail threshold instead of ``image_threshold`` (for a capture of a light count the
    model was calibrated for, that count's threshold for the share, as ``psinspect detect
    --image-fpr R``), and the summary records its rule.
    """
    from psinspect.detect import (
        detect_map,
        edge_note,
        light_count_note,
        light_set_note,
        part_size_note,
        summary_document,
        turn_note,
    )
    from psinspect.modelstore import for_light_count

    for label, v in (("pixel threshold", threshold), ("pass/fail threshold", image_threshold)):
        if v is not None and not (np.isfinite(v) and v >= 0):
            raise PsinspectError(f"{label} must be a non-negative number, got {v}")
    bundle = choice.bundle
    num_lights = None if inp.capture is None else len(inp.capture[1])
    # the model's own for this input (those of its light count, where it has them)
    own, own_lights = for_light_count(choice.bundle, num_lights)
    # a slider left at a calibrated value asks for the model's own thresholds for this input
    threshold = _unless_calibrated(threshold, choice.calibrated_thresholds)
    point_lights = None
    if operating_point is not None:
        point_lights = num_lights if num_lights in operating_point.by_light_count else None
        image_threshold = operating_point.by_light_count.get(num_lights,
                                                             operating_point.threshold)
        rule = operating_point.rule
        if math.isclose(image_threshold, own.image_threshold, rel_tol=1e-9):
            image_threshold = None  # the share's threshold is the calibrated one
    else:
        image_threshold = _unless_calibrated(image_threshold,
                                             choice.calibrated_image_thresholds)
        rule = _operating_point_rule(choice, image_threshold)
    # as psinspect detect: models that use them get the capture's half-light-set solves
    splits = inp.light_splits() if getattr(bundle.model, "uses_light_splits", False) else None
    images = (inp.capture[:2] if inp.capture is not None
              and getattr(bundle.model, "uses_capture_images", False) else None)
    det = detect_map(bundle, inp.normals, inp.mask, name=inp.name, confidence=inp.confidence,
                     threshold=threshold, light_splits=splits, capture_images=images,
                     scale=scale, image_threshold=image_threshold, num_lights=num_lights)
    replaced = threshold is not None or image_threshold is not None
    calibrated = {"pixel_threshold": own.threshold, "image_threshold": own.image_threshold}
    # the summary's thresholds: those that judged this one input
    bundle = replace(bundle, image_threshold=det.image_threshold)
    judged = (light_count_note(bundle, num_lights),
              light_set_note(bundle, None if inp.capture is None else inp.capture[1]),
              turn_note(bundle, det), part_size_note(bundle, inp.mask, scale),
              edge_note(inp.mask),
              _lenient_note(threshold, image_threshold, own, own_lights))
    notes = [*input_notes, *(n for n in judged if n is not None)]
    entry = {**det.summary(), "source": inp.source,
             **({"source_sha256": inp.source_sha256} if inp.source_sha256 else {}),
             **({"ps_solver": inp.capture[2]} if inp.capture is not None else {}),
             **({"warnings": notes} if notes else {}),
             **({"gt_defect_px": int(inp.gt_mask.sum())} if inp.gt_mask is not None else {})}
    summary = summary_document(bundle, [entry], threshold=det.threshold,
                               calibrated=calibrated if replaced else None,
                               solver=str(bundle.input_handling["ps_solver"]), scale=scale,
                               model_label=choice.label, light_count=own_lights,
                               image_threshold_rule=rule if image_threshold is not None
                               else None)
    normals_rgb = encode_png(inp.normals, inp.mask)
    ref = det.reference
    return Prediction(
        name=inp.name,
        kind=inp.kind,
        normals_rgb=normals_rgb,
        reference_rgb=None if ref is None else encode_png(ref, inp.mask),
        heatmap_rgb=heatmap_overlay(normals_rgb, det.score, inp.mask, det.threshold),
        mask_rgb=mask_image(det.pred_mask, inp.mask),
        image_score=float(det.image_score),
        threshold=float(det.threshold),
        image_threshold=float(det.image_threshold),
        verdict=det.verdict.upper(),
        regions=[dict(r) for r in det.regions],
        inspected=inp,
        detection=det,
        summary=summary,
        notes=notes,
        image_threshold_lights=(point_lights if image_threshold is not None
                                else det.thresholds_for_lights),
        operating_rate=None if operating_point is None else operating_point.rate,
    )


def _lenient_note(threshold: float | None, image_threshold: float | None, own: Any,
                  own_lights: int | None) -> str | None:
    """Where a threshold set by hand (a slider moved before the first inspection starts from
    the model's general thresholds) is above the one calibrated for this input's light count
    (``own``, a bundle with those thresholds; ``own_lights`` None: no such count): a note that
    it lets more through than calibrated, as moving a slider down can do then."""
    if own_lights is None:
        return None
    looser = [f"{what} {given:.4g} is above this capture's calibrated {cal:.4g}"
              for what, given, cal in (("pixel threshold", threshold, own.threshold),
                                       ("pass/fail threshold", image_threshold,
                                        own.image_threshold))
              if given is not None and given > cal]
    if not looser:
        return None
    return (f"the {' and the '.join(looser)} (that of {own_lights}-light captures): more "
            "lenient than calibrated; the Calibrated thresholds button puts the sliders back")


def _unless_calibrated(value: float | None, calibrated: Sequence[float]) -> float | None:
    """None where ``value`` is one of the ``calibrated`` values (or None), else ``value``."""
    if value is None or any(math.isclose(value, c, rel_tol=1e-9) for c in calibrated):
        return None
    return value


# --------------------------------------------------------------------------------------------
# Gradio wiring


def inspect_upload(path: Path | None, choice: ModelChoice | None, threshold: float | None,
                   image_threshold: float | None, workdir: str | os.PathLike[str],
                   limits: Limits = Limits(), scale: float | None = 1.0,
                   operating_point: Any = None) -> tuple[Any, ...]:
    """The app's button: load, predict, and turn every failure into a readable message.
    ``scale``: see :func:`predict` (None, an emptied field, = 1). ``operating_point``: the
    menu's value, a share of good parts failing (:func:`picked_operating_point`; None: none
    picked).

    Returns ``(verdict_html, normals, reference, heatmap, mask, region_rows, prediction)``;
    images are RGB uint8 arrays or None, ``prediction`` the :class:`Prediction` (None after an
    error). Never raises for bad input; bugs are logged with their traceback on the server and
    shown as one line in the page.
    """
    empty = (None, None, None, None, [], None)
    try:
        if path is None:
            raise PsinspectError("no file: upload a normal map or a capture zip first")
        if choice is None:
            raise PsinspectError("unknown model: pick one from the list")
        from psinspect.detect import check_scale

        try:  # before a zip is unpacked and solved; named as the page names the field
            check_scale(1.0 if scale is None else float(scale), choice.bundle)
        except PsinspectError as err:
            raise PsinspectError(str(err).replace("--scale", "pixel scale", 1)) from None
        point = picked_operating_point(choice, operating_point)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            inp = load_inspection_input(path, workdir, limits,
                                        solver=str(choice.bundle.input_handling["ps_solver"]))
        try:
            p = predict(inp, choice, threshold, image_threshold,
                        1.0 if scale is None else float(scale),
                        input_notes=_input_notes(caught, Path(path), workdir),
                        operating_point=point)
        except PsinspectError as err:  # the model's own checks do not know the upload's name
            raise PsinspectError(f"{Path(path).name}: {err}") from None
    except PsinspectError as err:
        return (verdict_html(None, str(err)), *empty)
    except MemoryError:
        return (verdict_html(None, "out of memory: try a smaller image"), *empty)
    except Exception as err:  # a bug: log it, show a readable line, never a trace
        log.exception("prediction failed")
        return (verdict_html(None, f"internal error ({type(err).__name__}); see the server "
                                   "log"), *empty)
    return (verdict_html(p), p.normals_rgb, p.reference_rgb, p.heatmap_rgb, p.mask_rgb,
            regions_table(p.regions), p)


def _input_notes(caught: Sequence[warnings.WarningMessage], upload: Path,
                 workdir: str | os.PathLike[str]) -> list[str]:
    """The warnings raised while an upload was read (a flat background written as the object,
    a capture without mask.png or light intensities), each once, with the server's paths (the
    uploaded file's, the unpacked zip's folders under ``workdir``) replaced by the upload's
    name."""
    upload_name = upload.name
    places = {str(upload), str(upload.resolve()), str(Path(workdir)),
              str(Path(workdir).resolve())}
    server_path = re.compile("|".join(re.escape(p) + r"[^\s:,;]*"
                                      for p in sorted(places, key=len, reverse=True)))
    notes: list[str] = []
    for w in caught:
        text = server_path.sub(upload_name, str(w.message))
        if text not in notes:
            notes.append(text)
    return notes


#: per-request result images older than this are removed (Gradio copies them into its own
#: cache when the request returns, so they are needed only for moments)
RESULT_FILES_MAX_AGE_S = 900.0


def result_files(images: Sequence[np.ndarray | None], folder: Path,
                 prediction: Prediction | None = None) -> tuple[list[str | None], str | None]:
    """Write each RGB image as a PNG in a new unique subfolder of ``folder`` (atomically) and,
    for a ``prediction``, its results download (:func:`write_results_zip`) beside them; return
    the image paths (None stays None) and the zip's (None without a prediction, or when it
    could not be written: logged, the page still shows the results); prunes subfolders older
    than :data:`RESULT_FILES_MAX_AGE_S`.

    Why files and not arrays: Gradio writes a returned array to a cache file named by the
    image's hash, in place (not atomically), so when two requests produce the same image (two
    users inspecting the same part) one client's download can race the other request's
    rewrite and get a truncated reply. A file path is copied into the cache under a temporary
    name and renamed, and an existing copy is reused, never rewritten.
    """
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in folder.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > RESULT_FILES_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue  # pruned by another request at the same moment
    out = folder / uuid.uuid4().hex
    out.mkdir()
    paths = [None if im is None else str(save_png(out / f"{i}.png", im))
             for i, im in enumerate(images)]
    download = None
    if prediction is not None:
        try:
            download = str(write_results_zip(prediction, out))
        except (OSError, PsinspectError) as err:  # (a full disk): the results still show
            log.error("the results download could not be written: %s", err)
    return paths, download


def write_results_zip(prediction: Prediction, folder: Path) -> Path:
    """``folder/<name>_results.zip``, written atomically: the files ``psinspect detect`` writes
    for the input (:func:`psinspect.detect.write_input_files`: ``<name>_score.npy``, heatmap,
    mask, reference and panel PNGs, the panel with the input's ground truth where it has one)
    and its ``summary.json`` (:attr:`Prediction.summary`)."""
    from psinspect.detect import write_input_files
    from psinspect.fileio import atomic_write_bytes, json_bytes

    inp, name = prediction.inspected, prediction.name
    if inp is None or prediction.detection is None:
        raise PsinspectError(f"{name}: the prediction holds no detection to write")
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        write_input_files(Path(tmp), name, inp.normals, inp.mask, prediction.detection,
                          inp.gt_mask)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(Path(tmp).iterdir()):  # (PNGs are compressed already)
                z.write(f, f.name, zipfile.ZIP_STORED if f.suffix == ".png" else None)
            z.writestr("summary.json", json_bytes(prediction.summary))
    return atomic_write_bytes(folder / f"{name}_results.zip", buf.getvalue())


def list_examples(folder: Path | None = None) -> list[Path]:
    """The shipped example inputs, in the order of ``examples.json`` (or all normal maps and
    capture zips, sorted by name, where there is no such file)."""
    from psinspect.fileio import read_json

    folder = EXAMPLES_DIR if folder is None else Path(folder)
    if not folder.is_dir():
        return []
    index = folder / "examples.json"
    if index.is_file():
        entries = read_json(index).get("examples", [])
        return [folder / e["file"] for e in entries if (folder / e["file"]).is_file()]
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in (".png", ".npy", ".zip") and not p.name.startswith(".")
                  and not p.stem.endswith("_gt_mask"))


@functools.cache
def _widgets() -> SimpleNamespace:
    """The app's input widgets: Gradio's file, dropdown, number and slider with the checks of
    an API client's values that the app needs (``File``, ``Dropdown``: Gradio's own refusals,
    a file type outside ``file_types``, a value not in the list, shown to the client only:
    they printed a traceback on the server's console for the client's mistake; ``Scale``:
    :func:`_scale_input`; ``PixelThreshold``, ``PassFailThreshold``: :func:`_threshold_input`).

    Subclasses, not methods patched onto one instance: once an event updates a component
    (the sliders, when the model changes), Gradio keeps a NEW instance of its class in the
    session and preprocesses that session's inputs with it. ``is_template`` makes Gradio draw
    each with its base class's widget. Made on first use (only the app imports Gradio), with
    Gradio's writing of a ``.pyi`` stub beside the source of each component class it sees
    defined turned off (a tool for authors of custom components: it wrote
    ``psinspect/app.pyi`` into the installed package).
    """
    import gradio.component_meta as meta

    write_stub = meta.create_or_modify_pyi
    meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        return _define_widgets()
    finally:
        meta.create_or_modify_pyi = write_stub


def _define_widgets() -> SimpleNamespace:
    """The classes of :func:`_widgets`."""
    import gradio as gr

    from psinspect.detect import SCALES

    def quiet(preprocess: Callable[[Any], Any], payload: Any) -> Any:
        try:
            return preprocess(payload)
        except gr.Error as err:
            raise gr.Error(str(err.message), print_exception=False) from None

    class File(gr.File):
        is_template = True

        def preprocess(self, payload: Any) -> Any:
            return quiet(super().preprocess, payload)

    class Dropdown(gr.Dropdown):
        is_template = True

        def preprocess(self, payload: Any) -> Any:
            return quiet(super().preprocess, payload)

    class Scale(gr.Number):
        is_template = True

        def preprocess(self, payload: Any) -> float | None:
            return _scale_input(payload, SCALES)

    def threshold_slider(what: str) -> type:
        class ThresholdSlider(gr.Slider):
            is_template = True

            def preprocess(self, payload: Any) -> float | None:
                return _threshold_input(payload, what)

            def api_info(self) -> dict[str, Any]:
                return {"anyOf": [{"type": "number"}, {"type": "null"}],
                        "description": f"the {what}, a number >= 0; null = the chosen model's "
                                       "calibrated value"}

        return ThresholdSlider

    return SimpleNamespace(File=File, Dropdown=Dropdown, Scale=Scale,
                           PixelThreshold=threshold_slider("pixel threshold"),
                           PassFailThreshold=threshold_slider("pass/fail threshold"))


def _finite_number(payload: Any) -> float:
    """``payload`` as a float, NaN where it is not a number (a string, a list)."""
    try:
        return float(payload)
    except (TypeError, ValueError):
        return math.nan


def _threshold_input(payload: Any, what: str) -> float | None:
    """A threshold slider's value from an API client: None (or left out, see ``build_app``'s
    ``run``) means the chosen model's calibrated value, and any finite number >= 0 is taken
    (the server checked a slider's value against the range it was built with, the FIRST
    model's, so another model's own calibrated threshold above it was refused). Anything else
    is a :class:`gradio.Error` for the client only, naming the threshold as ``what``."""
    import gradio as gr

    if payload is None:
        return None
    value = _finite_number(payload)
    if not (math.isfinite(value) and value >= 0):
        raise gr.Error(f"the {what} must be a number >= 0 (or null for the model's "
                       f"calibrated value), got {payload!r}", print_exception=False)
    return value


def _scale_input(payload: Any, scales: tuple[float, float]) -> float | None:
    """The pixel-scale field's value from an API client: None (an emptied field, = 1) or a
    number within ``scales``; anything else (``"abc"`` raised a TypeError inside Gradio: a
    traceback on the server) is a :class:`gradio.Error` for the client only."""
    import gradio as gr

    if payload is None:
        return None
    value = _finite_number(payload)
    if not (math.isfinite(value) and scales[0] <= value <= scales[1]):
        raise gr.Error(f"the pixel scale must be a number between {scales[0]:g} and "
                       f"{scales[1]:g}, got {payload!r}", print_exception=False)
    return value


def build_app(choices: Sequence[ModelChoice], workdir: str | os.PathLike[str],
              limits: Limits = Limits(), examples: Sequence[Path] | None = None) -> Any:
    """The Gradio Blocks app over ``choices`` (first = default). Temp files go to ``workdir``:
    unpacked capture zips under ``inputs/``, result images and downloads under ``results/``
    (:func:`result_files`). After each inspection the two threshold sliders show the
    thresholds that judged the input (for a capture, those of its light count where the model
    has them), in an event chained to the ``/inspect`` API's."""
    import gradio as gr

    from psinspect.detect import SCALES

    if not choices:
        raise PsinspectError("no model to serve")
    w = _widgets()
    by_label = {c.label: c for c in choices}
    workdir = Path(workdir)
    examples = list_examples() if examples is None else list(examples)

    def sliders_for(label: str) -> tuple[Any, Any]:
        c = by_label[label]
        return (gr.Slider(**_slider_range(c.slider_max, c.threshold)),
                gr.Slider(**_slider_range(c.image_slider_max, c.image_threshold)))

    def menu_for(label: str) -> Any:
        menu = operating_point_menu(by_label[label])
        return gr.Dropdown(choices=menu, value=None, visible=bool(menu))

    def point_threshold(label: str, rate: str | None) -> tuple[Any, Any]:
        # the menu's pick: the pass/fail slider at that share's (general) threshold, and the
        # pick kept for Inspect (a capture is judged by its light count's threshold for the
        # share where the model has one, shown after it)
        points = {str(p.rate): p.threshold for p in operating_points(by_label[label])}
        return ((gr.skip(), None) if rate not in points
                else (gr.Slider(value=points[rate]), rate))

    def run(upload: Any, label: str, threshold: float | None, image_threshold: float | None,
            scale: float | None = 1.0, operating_point: str | None = None) -> tuple[Any, ...]:
        # the Inspect button (the /inspect API): the results, then (a gr.State, not part of
        # the API's answer) the thresholds that judged the input, None where none did
        path = None if upload is None else Path(upload if isinstance(upload, str)
                                                else upload.name)
        choice = by_label.get(label)
        if choice is not None and choice is not first:
            # an API call that leaves the thresholds out gets the sliders' first values, the
            # FIRST model's calibrated ones: for another model they mean its own calibrated
            # ones (in the page the sliders change with the model, and a moved slider is on
            # its 1/1000 grid, which a calibrated value is not)
            threshold = None if threshold == first.threshold else threshold
            image_threshold = None if image_threshold == first.image_threshold else (
                image_threshold)
        verdict, *images, rows, prediction = inspect_upload(
            path, choice, threshold, image_threshold, workdir / "inputs", limits, scale,
            operating_point)
        paths, download = result_files(images, workdir / "results", prediction)
        judged = None if prediction is None else (prediction.threshold,
                                                  prediction.image_threshold)
        return (verdict, *paths, rows, download, judged)

    def show_judged(judged: tuple[float, float] | None) -> tuple[Any, Any]:
        """The sliders set to the thresholds that judged the last input (unchanged after an
        error): a slider left at the calibrated value showed the model's general threshold
        while the input was judged with its light count's, so moving it one step down (in the
        inspector's eyes stricter) could turn a FAIL into a PASS."""
        return (gr.skip(), gr.skip()) if judged is None else judged

    first = choices[0]
    # no "share" button on images (it would upload to a hub)
    img_kw: dict[str, Any] = {"format": "png", "interactive": False,
                              "buttons": ["download", "fullscreen"]}
    with gr.Blocks(title="psinspect", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(
            "# psinspect: surface inspection\n"
            "Upload a **normal map** (`.png` 8- or 16-bit normal encoding or `.npy` float "
            "H x W x 3) or a **multi-light capture** (`.zip` of images plus "
            "`light_directions.txt`/`lights.txt`), "
            "or pick an example, then press **Inspect**."
        )
        with gr.Row():
            with gr.Column(scale=1):
                upload = w.File(label="Normal map or capture zip", file_count="single",
                                file_types=[".png", ".npy", ".zip"], type="filepath",
                                elem_id="upload")
                model = w.Dropdown(choices=[c.label for c in choices], value=first.label,
                                   label="Model", elem_id="model")
                threshold = w.PixelThreshold(
                    **_slider_range(first.slider_max, first.threshold),
                    label="Pixel threshold: defect mask and regions (starts at the calibrated "
                          "value; after Inspect, the one that judged the input)",
                    elem_id="threshold")
                image_threshold = w.PassFailThreshold(
                    **_slider_range(first.image_slider_max, first.image_threshold),
                    label="Pass/fail threshold on the image score (starts at the calibrated "
                          "value; after Inspect, the one that judged the input)",
                    elem_id="image-threshold")
                menu = operating_point_menu(first)
                points = w.Dropdown(
                    choices=menu, value=None, visible=bool(menu), interactive=True,
                    label="Set the pass/fail threshold for a share of good parts failing "
                          "(fitted to the model's clean calibration scores, as psinspect "
                          "detect --image-fpr R; a larger share catches more defective parts)",
                    elem_id="operating-points")
                scale = w.Scale(value=1.0, minimum=SCALES[0], maximum=SCALES[1], step=0.05,
                                label="Pixel scale: score the map resampled by this factor, "
                                      "for parts imaged much finer or coarser than the "
                                      "model's training parts (118-224 px across for "
                                      "the bundled model; e.g. 0.25 for a 1000 px part)",
                                elem_id="scale")
                # a moved slider snaps to its grid (1/1000 of its range), which the
                # calibrated value is not on: this puts both back
                reset = gr.Button("Calibrated thresholds", size="sm",
                                  elem_id="reset-thresholds")
                button = gr.Button("Inspect", variant="primary", elem_id="inspect")
                judged = gr.State(None)
                # the menu's pick for Inspect (a session state, not an /inspect input: API
                # clients keep their five inputs; one giving a share's threshold as the
                # pass/fail threshold gets its rule recorded, :func:`_operating_point_rule`)
                picked = gr.State(None)
                if examples:
                    gr.Examples(examples=[[str(p)] for p in examples], inputs=[upload],
                                label="Examples (rendered parts)",
                                example_labels=[p.name for p in examples],
                                elem_id="examples")
            with gr.Column(scale=2):
                verdict = gr.HTML(verdict_html(None), elem_id="verdict")
                with gr.Row():
                    normals_img = gr.Image(label="Normal map", elem_id="normals", **img_kw)
                    ref_img = gr.Image(label="Reconstruction / reference", elem_id="reference",
                                       **img_kw)
                with gr.Row():
                    heat_img = gr.Image(label="Anomaly heatmap over normals", elem_id="heatmap",
                                        **img_kw)
                    mask_img = gr.Image(label="Predicted defect mask", elem_id="mask", **img_kw)
                table = gr.Dataframe(headers=REGION_COLUMNS, label="Defect regions",
                                     interactive=False, elem_id="regions")
                download = gr.File(label="Results (zip): score map (.npy), mask, heatmap, "
                                         "panel and summary.json, as psinspect detect writes",
                                   interactive=False, elem_id="results")
        # (the page's own events: no API endpoint; the README documents /inspect)
        model.change(lambda label: (*sliders_for(label), menu_for(label), None),
                     inputs=[model], outputs=[threshold, image_threshold, points, picked],
                     api_name=False)
        points.input(point_threshold, inputs=[model, points],
                     outputs=[image_threshold, picked], api_name=False)
        # a slider moved by hand or put back no longer shows (or judges by) a share picked
        image_threshold.input(lambda: (None, None), outputs=[points, picked], api_name=False)
        reset.click(lambda label: (*sliders_for(label), None, None), inputs=[model],
                    outputs=[threshold, image_threshold, points, picked], api_name=False)
        button.click(run, inputs=[upload, model, threshold, image_threshold, scale, picked],
                     outputs=[verdict, normals_img, ref_img, heat_img, mask_img, table,
                              download, judged],
                     api_name="inspect").then(show_judged, inputs=[judged],
                                              outputs=[threshold, image_threshold],
                                              api_name=False)
    return demo


def check_bindable(host: str, port: int) -> None:
    """One-line :class:`PsinspectError` unless a TCP server can listen on ``host:port`` now
    (port in use, not an address of this machine, a name that does not resolve); checked
    before the app is built, as the web framework reports every such case as "cannot find an
    empty port"."""
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port,
                                                          type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
    except (OSError, UnicodeError, OverflowError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise PsinspectError(f"--host {host} --port {port}: cannot serve there ({reason})"
                             ) from None


def serve(choices_factory: Callable[[], Sequence[ModelChoice]], host: str = "127.0.0.1",
          port: int = 7860, limits: Limits = Limits(),
          on_ready: Callable[[str], None] | None = None) -> None:
    """Launch the app and block until interrupted; the app's temp folder is removed at the end.
    Never with a public share link (no network beyond ``host``).

    Gradio's upload and cache folders are pointed into one fresh temp folder, so the server
    never serves files from anywhere else.
    """
    import signal
    import threading
    import time

    check_bindable(host, port)
    workdir = Path(tempfile.mkdtemp(prefix="psinspect-serve-"))
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workdir / "examples-cache")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

    # SIGTERM stops the server like Ctrl-C, so cleanup runs; noted, not raised (an exception
    # raised at an arbitrary point can be lost inside a finaliser, and the server ran on)
    stop: list[int] = []

    def _note_stop(signum: int, frame: Any) -> None:
        stop.append(signum)

    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGTERM, _note_stop)
    demo = None
    try:
        demo = build_app(choices_factory(), workdir, limits)
        demo.queue(default_concurrency_limit=1)
        demo.launch(server_name=host, server_port=port, share=False,
                    max_file_size=limits.max_upload_bytes, show_error=False, ssr_mode=False,
                    pwa=False, mcp_server=False, quiet=True, inbrowser=False, run_history=False,
                    footer_links=["gradio", "settings"],
                    prevent_thread_lock=True)
        if on_ready is not None:
            on_ready(demo.local_url or f"http://{host}:{port}/")
        while not stop and demo.is_running:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        if demo is not None:
            demo.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        shutil.rmtree(workdir, ignore_errors=True)
