"""Detection: score a normal map with a model, threshold it, find regions, decide pass/fail.

Frame: DiLiGenT camera frame (x right, y up, z toward the camera). Normal maps are
``float32 (H, W, 3)``, unit inside the mask, zero outside. Score maps are ``float32 (H, W)``,
higher = more anomalous, 0 outside the mask.

- Maps of any size are scored at their native resolution (never resized). The learned models
  and the geometric one score the object whole, in a window of its bounding box plus a margin
  (:func:`psinspect.models.score_in_window`: GroupNorm statistics, a coarse fitting grid and a
  reference level over the input would otherwise make the scores depend on how much
  background surrounds the part; each separate object of the mask on its own window), up
  to their ``max_whole_pixels``, and larger objects in overlapping tiles of that area, laid
  from the object's bounding box. Other tileable models score maps larger than the model's
  ``tile`` in overlapping tiles whose borders (``tile_overlap`` px) are dropped when
  stitching.
- The image score is the peak of the score map after a 3 x 3 average over object pixels (one
  isolated noisy pixel cannot fail a part; a defect of a few pixels can), times the map's
  ``image_scale`` (a model that normalises its score maps per map, as geo-seg does, takes the
  verdict on the level before that division; 1 for the others). Verdict: ``fail`` when
  the image score exceeds the model's image threshold, else ``pass``.
- Regions: 8-connected components of (score >= pixel threshold) inside the object with at least
  ``min_region_px`` pixels; each with its bounding box ``[x0, y0, x1, y1]`` (columns / rows,
  end exclusive), area, peak score and centroid. The defect area is their total area.
- Several inputs are scored ``jobs`` at a time (:func:`run_parallel`: threads, torch's CPU
  threads shared out among them): on 2 cores two maps scored side by side with one thread each
  go 1.2-1.5x faster than one map at a time with two threads (small convolutions do not
  keep two threads busy). Masks, regions and verdicts do not depend on ``jobs``; scores may
  differ in their last bits (torch's thread count changes the order of its sums).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from scipy import ndimage

from psinspect.checks import is_number
from psinspect.defects import read_defect_records
from psinspect.errors import PsinspectError
from psinspect.models import AnomalyModel, ScoreResult
from psinspect.modelstore import (
    PART_SIZE_KEY,
    TURNS_KEY,
    ModelBundle,
    for_light_count,
    is_model_folder,
    light_count_thresholds,
)
from psinspect.normalmap import (
    NORMALS_FILE,
    is_normals_folder,
    load_normal_map,
    normals_run_of,
    object_window,
    part_size_px,
    put_window,
    read_mask_png,
    resample,
    solved_light_count,
    take_window,
    validate_normal_map,
)

#: smallest predicted region reported (pixels)
MIN_REGION_PX = 4
#: most inputs scored at once by default (each holds its full-size arrays in memory)
MAX_DEFAULT_JOBS = 4

_T = TypeVar("_T")
_R = TypeVar("_R")


def available_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_jobs(n_inputs: int) -> int:
    """How many inputs to score at once by default: one per core, at most
    :data:`MAX_DEFAULT_JOBS`, at most the number of inputs."""
    return max(1, min(available_cpus(), MAX_DEFAULT_JOBS, n_inputs))


@contextmanager
def shared_cpu_threads(jobs: int) -> Iterator[None]:
    """While active, torch's intra-op threads (when torch is in use) are divided among ``jobs``
    concurrent calls (at least one each); restored afterwards."""
    torch = sys.modules.get("torch")
    if torch is None or jobs <= 1:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, old // jobs))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class ThreadWarnings:
    """While active, UserWarnings are shown as usual and, in a thread inside
    :meth:`recording`, also kept in that thread's list: what each of several inputs read at
    once warned about (``warnings.catch_warnings`` is process-wide, not per thread, so it is
    entered once, around the parallel calls). Each warning is shown and kept every time it is
    raised, not only the first time."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._saved = warnings.catch_warnings()

    def __enter__(self) -> ThreadWarnings:
        self._saved.__enter__()
        warnings.simplefilter("always", UserWarning)
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
            kept = getattr(self._local, "kept", None)
            if kept is not None:
                kept.append(str(message))
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc: object) -> None:
        self._saved.__exit__(*exc)

    @contextmanager
    def recording(self) -> Iterator[list[str]]:
        """The calling thread's warnings while inside, in the order raised."""
        self._local.kept = kept = []
        try:
            yield kept
        finally:
            self._local.kept = None


def run_parallel(fn: Callable[[_T], _R], items: Sequence[_T], jobs: int,
                 on_result: Callable[[_R], None] | None = None) -> list[_R]:
    """``[fn(x) for x in items]``, ``jobs`` calls at a time in threads (numpy, OpenCV and torch
    release the GIL in their heavy work); results in input order, ``on_result`` called with each
    as soon as it and all before it are done. The first exception is raised after the calls
    already running have finished; calls not yet started are cancelled."""
    out: list[_R] = []
    if jobs <= 1 or len(items) <= 1:
        for x in items:
            out.append(fn(x))
            if on_result is not None:
                on_result(out[-1])
        return out
    from psinspect.interrupts import thread_pool

    with shared_cpu_threads(jobs), thread_pool(jobs) as pool:
        futures = [pool.submit(fn, x) for x in items]
        for f in futures:
            out.append(f.result())
            if on_result is not None:
                on_result(out[-1])
    return out


#: overlap of the tiles of a learned model's object larger than its ``max_whole_pixels`` (px).
#: Such tiles score a little differently from the whole object would (GroupNorm statistics per
#: tile, features reaching about as far as the overlap): memory, not accuracy, sets the limit
BIG_TILE_OVERLAP = 128


def _tiles(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Along one axis: (read_start, read_end, keep_start, keep_end) covering [0, n)."""
    if n <= tile:
        return [(0, n, 0, n)]
    step = tile - 2 * overlap
    if step < 1:
        raise ValueError(f"tile {tile} must exceed twice the overlap {overlap}")
    out = []
    start = 0
    while True:
        keep0 = start
        keep1 = min(n, start + step)
        r0 = max(0, keep0 - overlap)
        r1 = min(n, keep1 + overlap)
        out.append((r0, r1, keep0, keep1))
        if keep1 >= n:
            break
        start = keep1
    return out


def score_map(
    model: AnomalyModel,
    normals: np.ndarray,
    mask: np.ndarray,
    confidence: np.ndarray | None = None,
    *,
    tile: int = 768,
    overlap: int = 64,
    light_splits: np.ndarray | None = None,
    capture_images: tuple[np.ndarray, np.ndarray] | None = None,
) -> ScoreResult:
    """Score one map at native resolution, tiled when larger than ``tile`` (see module doc),
    then the model's map-level step (:meth:`AnomalyModel.finish_map`) on the joined map.

    Models whose score depends on the whole map (e.g. registered templates) declare
    ``tileable = False`` and are always run on the full map. Models that score the object
    whole (the learned ones) declare ``max_whole_pixels``: an object whose bounding box is
    larger (memory) is scored in overlapping tiles of that area (:data:`BIG_TILE_OVERLAP`),
    and ``info["tiled"]`` says so. ``light_splits``: the capture's
    half-light-set PS differences, for models that use them (``uses_light_splits``);
    ``capture_images``: the capture's ``(images, lights)``, for models that compare images
    (``uses_capture_images``).
    """
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    extra: dict[str, Any] = {}
    if light_splits is not None and getattr(model, "uses_light_splits", False):
        extra["light_splits"] = light_splits
    if capture_images is not None and getattr(model, "uses_capture_images", False):
        extra["capture_images"] = capture_images
    whole_px = getattr(model, "max_whole_pixels", None)
    if whole_px is not None:  # scores the object whole up to that size, else in big tiles
        box = object_window(mask, 0)
        big = box is not None and (box[1] - box[0]) * (box[3] - box[2]) > whole_px
        tile = math.isqrt(whole_px) if big else max(h, w)
        overlap = min(BIG_TILE_OVERLAP, tile // 4)
    elif not getattr(model, "tileable", True):
        tile = max(h, w)
    if extra or (h <= tile and w <= tile):
        res = model.score(normals, mask, confidence, **extra)
        res.score, res.image_scale = model.finish_map(
            np.where(mask, res.score, 0.0).astype(np.float32), mask)
        return res
    score = np.zeros((h, w), np.float32)
    ref = np.zeros((h, w, 3), np.float32)
    has_ref = True
    unreliable = np.zeros((h, w), bool)
    has_unrel = False
    # the tiles start at the object's bounding box, not at the map's corner: a part scores
    # the same wherever it lies in the map
    box = object_window(mask, 0) or (0, h, 0, w)
    for r0, r1, k0, k1 in ((box[0] + a, box[0] + b, box[0] + c, box[0] + d)
                           for a, b, c, d in _tiles(box[1] - box[0], tile, overlap)):
        for c0, c1, j0, j1 in ((box[2] + a, box[2] + b, box[2] + c, box[2] + d)
                               for a, b, c, d in _tiles(box[3] - box[2], tile, overlap)):
            m = mask[r0:r1, c0:c1]
            if not m[k0 - r0:k1 - r0, j0 - c0:j1 - c0].any():
                continue
            conf = None if confidence is None else confidence[r0:r1, c0:c1]
            res = model.score(normals[r0:r1, c0:c1], m, conf)
            sl = (slice(k0 - r0, k1 - r0), slice(j0 - c0, j1 - c0))
            score[k0:k1, j0:j1] = res.score[sl]
            if res.reference is None:
                has_ref = False
            else:
                ref[k0:k1, j0:j1] = res.reference[sl]
            if res.unreliable is not None:
                has_unrel = True
                unreliable[k0:k1, j0:j1] = res.unreliable[sl]
    score[~mask] = 0.0
    score, image_scale = model.finish_map(score, mask)
    return ScoreResult(score=score, image_scale=image_scale, reference=ref if has_ref else None,
                       unreliable=unreliable if has_unrel else None,
                       info={"tiled": True, "tile": tile, "overlap": overlap})


def image_score(score: np.ndarray, mask: np.ndarray) -> float:
    """Peak of the 3 x 3 object-pixel average of the score map (see module doc)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return 0.0
    m = mask.astype(np.float32)
    num = cv2.boxFilter(np.where(mask, score, 0.0).astype(np.float32), -1, (3, 3),
                        normalize=False, borderType=cv2.BORDER_CONSTANT)
    den = cv2.boxFilter(m, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    avg = num / np.maximum(den, 1.0)
    return float(avg[mask].max())


def find_regions(score: np.ndarray, mask: np.ndarray, threshold: float,
                 min_area: int = MIN_REGION_PX) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Predicted defect mask (bool (H, W)) and its regions, largest first (see module doc)."""
    hot = (score >= threshold) & np.asarray(mask, bool)
    lab, n = ndimage.label(hot, structure=np.ones((3, 3), bool))
    pred = np.zeros(hot.shape, bool)
    regions = []
    if n:
        objs = ndimage.find_objects(lab)
        for i, sl in enumerate(objs, start=1):
            sub = lab[sl] == i
            area = int(sub.sum())
            if area < min_area:
                continue
            pred[sl] |= sub
            rows, cols = np.nonzero(sub)
            peak = float(score[sl][sub].max())
            regions.append({
                "bbox": [int(sl[1].start), int(sl[0].start), int(sl[1].stop), int(sl[0].stop)],
                "area_px": area,
                "peak_score": peak,
                "mean_score": float(score[sl][sub].mean()),
                "centroid_xy": [float(cols.mean() + sl[1].start),
                                float(rows.mean() + sl[0].start)],
            })
    regions.sort(key=lambda r: (-r["area_px"], -r["peak_score"]))
    return pred, regions


@dataclass
class Detection:
    """Result of :func:`detect_map` for one input."""

    name: str
    score: np.ndarray
    reference: np.ndarray | None
    pred_mask: np.ndarray
    regions: list[dict[str, Any]]
    image_score: float
    verdict: str
    threshold: float
    image_threshold: float
    object_px: int
    unreliable: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: the model's per-map score divisor (see the module docstring): image_score is the peak of
    #: the 3 x 3 mean of ``score`` times this
    image_scale: float = 1.0
    #: the light count whose thresholds (config ``thresholds_by_light_count``) judged it; None
    #: where the model's general ones did (or both were given by hand)
    thresholds_for_lights: int | None = None
    #: whether the model has thresholds per light count (``thresholds_for_lights`` then goes
    #: into the summary, None included)
    light_count_thresholds: bool = False
    #: how many lights the map was solved from (a capture's, or the count a ``psinspect
    #: normals`` run records; None: unknown, a plain normal map)
    num_lights: int | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-able per-input summary (for summary.json)."""
        return {
            "name": self.name,
            "verdict": self.verdict,
            "image_score": self.image_score,
            "image_scale": self.image_scale,
            "image_threshold": self.image_threshold,
            "pixel_threshold": self.threshold,
            "defect_area_px": int(self.pred_mask.sum()),
            "object_area_px": self.object_px,
            "defect_area_fraction": float(self.pred_mask.sum() / max(1, self.object_px)),
            "regions": self.regions,
            "unreliable_px": None if self.unreliable is None else int(self.unreliable.sum()),
            "num_lights": self.num_lights,
            # which of the model's calibrated thresholds judged it: those of captures of this
            # many lights, or (null) its general ones, calibrated on all its clean maps
            **({"thresholds_for_lights": self.thresholds_for_lights}
               if self.light_count_thresholds else {}),
            **({"info": self.info} if self.info else {}),
        }


#: the resampling factors ``detect --scale`` accepts
SCALES = (0.1, 4.0)


def check_scale(scale: float, bundle: ModelBundle) -> float:
    """``scale`` if it is a finite number in :data:`SCALES` that ``bundle``'s model can score
    at (1 only for models that compare a part with their training captures pixel by pixel),
    else a :class:`PsinspectError`."""
    if not (np.isfinite(scale) and SCALES[0] <= scale <= SCALES[1]):
        raise PsinspectError(f"--scale must be between {SCALES[0]:g} and {SCALES[1]:g}, "
                             f"got {scale}")
    if scale != 1.0 and (getattr(bundle.model, "uses_light_splits", False)
                         or getattr(bundle.model, "uses_capture_images", False)
                         or getattr(bundle.model, "known_part", False)):
        raise PsinspectError(f"--scale: model {bundle.model.name!r} compares a part with its "
                             "own training captures pixel by pixel; capture at their scale")
    return float(scale)


def _score_resampled(bundle: ModelBundle, n: np.ndarray, m: np.ndarray,
                     confidence: np.ndarray | None, scale: float, name: str) -> ScoreResult:
    """:func:`score_map` of the object's box (plus a margin) resampled by ``scale``, brought
    back to the map's own pixels: the result does not depend on how much background surrounds
    the part; at least 8 x 8 px are scored (zero padding)."""
    ih = bundle.input_handling
    h, w = m.shape
    win = object_window(m, 2 + math.ceil(2.0 / scale))
    assert win is not None  # (validate_normal_map refuses an empty object)
    mc = take_window(m, win)
    hc, wc = mc.shape
    size = (max(1, round(hc * scale)), max(1, round(wc * scale)))
    ns, ms = resample(take_window(n, win), mc, size)
    if not ms.any():
        raise PsinspectError(f"{name}: nothing of the object is left at --scale {scale:g}")
    big = (0, max(8, size[0]), 0, max(8, size[1]))
    cs = None if confidence is None else take_window(cv2.resize(
        take_window(confidence, win), size[::-1], interpolation=cv2.INTER_LINEAR), big)
    res = score_map(bundle.model, take_window(ns, big), take_window(ms, big), cs,
                    tile=int(ih["tile"]), overlap=int(ih["tile_overlap"]))

    def back(a: np.ndarray, interp: int) -> np.ndarray:
        """A scaled-window array back at the map's own pixels (zero outside the box)."""
        a = a[:size[0], :size[1]]
        return put_window(cv2.resize(a, (wc, hc), interpolation=interp), win, (h, w))

    res.score = np.where(m, back(res.score, cv2.INTER_LINEAR), 0.0).astype(np.float32)
    if res.reference is not None:
        ref_c = resample(res.reference[:size[0], :size[1]], ms, (hc, wc))[0]
        res.reference = put_window(ref_c, win, (h, w))
    if res.unreliable is not None:
        res.unreliable = m & (back(res.unreliable.astype(np.uint8), cv2.INTER_NEAREST) > 0)
    res.info = {**res.info, "scale": scale,
                "scale_effective_hw": [size[0] / hc, size[1] / wc]}
    return res


def detect_map(
    bundle: ModelBundle,
    normals: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    name: str = "map",
    confidence: np.ndarray | None = None,
    threshold: float | None = None,
    light_splits: np.ndarray | None = None,
    capture_images: tuple[np.ndarray, np.ndarray] | None = None,
    scale: float = 1.0,
    image_threshold: float | None = None,
    num_lights: int | None = None,
) -> Detection:
    """Validate, score, threshold and judge one normal map with a loaded model
    (``light_splits``, ``capture_images``: see :func:`score_map`). ``threshold`` /
    ``image_threshold``: the pixel / pass/fail threshold instead of the model's calibrated
    one. ``num_lights``: how many lights the map was solved from (a capture's, or the count
    a ``psinspect normals`` run records; None: unknown): a known-part model calibrated per
    light count (:func:`psinspect.modelstore.for_light_count`) judges it with the thresholds
    of that count, where it has them, and with its general ones otherwise. ``scale``: score the map
    resampled by this factor (:func:`psinspect.normalmap.resample`: the same surface at
    another pixel size), then bring the score back to the map's own pixels (bilinear), where
    it is thresholded and judged: for maps whose pixels are much finer or coarser than those
    the model learned from (see :data:`SCALES`)."""
    n, m = validate_normal_map(normals, mask, name=name)
    if confidence is not None:
        confidence = np.asarray(confidence, np.float32)
        if confidence.shape != m.shape or not np.isfinite(confidence[m]).all():
            raise PsinspectError(f"{name}: confidence map must be finite and {m.shape}")
    check_scale(scale, bundle)
    ih = bundle.input_handling
    if scale != 1.0:
        res = _score_resampled(bundle, n, m, confidence, scale, name)
    else:
        res = score_map(bundle.model, n, m, confidence, tile=int(ih["tile"]),
                        overlap=int(ih["tile_overlap"]), light_splits=light_splits,
                        capture_images=capture_images)
    if not np.isfinite(res.score).all():
        raise PsinspectError(f"{name}: the model produced non-finite scores")
    by_count = bool(light_count_thresholds(bundle))
    # hand-set thresholds replace everything; a threshold left to the model comes from the
    # thresholds of the input's light count where the model has them
    used, lights_used = (bundle, None) if threshold is not None and image_threshold is not None \
        else for_light_count(bundle, num_lights)
    thr = used.threshold if threshold is None else float(threshold) + 0.0  # (-0 -> 0)
    img_thr = used.image_threshold if image_threshold is None else float(image_threshold) + 0.0
    pred, regions = find_regions(res.score, m, thr)
    s_img = image_score(res.score, m) * res.image_scale
    return Detection(
        name=name, score=res.score, reference=res.reference, pred_mask=pred, regions=regions,
        image_score=s_img, verdict="fail" if s_img > img_thr else "pass",
        threshold=thr, image_threshold=img_thr, object_px=int(m.sum()),
        unreliable=res.unreliable, info=dict(res.info), image_scale=float(res.image_scale),
        thresholds_for_lights=lights_used, light_count_thresholds=by_count,
        num_lights=num_lights,
    )


@dataclass
class InputMap:
    """A detect input read from disk: normals, mask, optional PS confidence and ground truth."""

    name: str
    normals: np.ndarray
    mask: np.ndarray
    source: str
    confidence: np.ndarray | None = None
    gt_mask: np.ndarray | None = None
    defects: list[dict[str, Any]] | None = None
    light_splits: np.ndarray | None = None
    #: a capture folder's ``(images (K, H, W), lights (K, 3))``, for models that use them
    capture_images: tuple[np.ndarray, np.ndarray] | None = None
    #: the PS solver the normals were made with, where known (a capture folder: detect's;
    #: ``psinspect normals``' map: the one its ``run.json`` records)
    ps_solver: str | None = None
    #: whether detect solved the normals itself (a capture folder) or was given them (a map)
    capture_solved: bool = False
    #: a capture folder's number of lights used (after ``lights`` selection), or the one the
    #: ``run.json`` of ``psinspect normals``' map records; None for other maps
    num_lights: int | None = None
    #: the normal-map file read (None for a capture folder): what evaluate checks a ground
    #: truth's map against, by its SHA-256
    map_file: Path | None = None
    #: a capture folder's light directions used (K, 3), DiLiGenT frame; None for maps
    lights: np.ndarray | None = None


def _sibling_gt(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """Ground truth next to a normal-map file: ``M_<x>.png`` for ``A_<x>``; an ``N_<x>`` map is
    clean (its ``M_<x>.png``, where present, belongs to the defective copy ``A_<x>``)."""
    stem = path.stem
    if stem.startswith("N_"):
        return np.zeros(shape, bool)  # a clean dataset map
    if stem.startswith("A_"):
        cand = path.with_name(f"M_{stem[2:]}.png")
        if cand.is_file():
            return read_mask_png(cand, shape)
    return None


def folder_ground_truth(folder: Path, shape: tuple[int, int]
               ) -> tuple[np.ndarray | None, list[dict] | None]:
    """A capture's (or the ``psinspect normals`` output of one) ground truth: its
    ``M_defect.png`` and ``defects.json``, each None where absent."""
    gt = recs = None
    if (folder / "M_defect.png").is_file():
        gt = read_mask_png(folder / "M_defect.png", shape)
    if (folder / "defects.json").is_file():
        recs = read_defect_records(folder / "defects.json")
    return gt, recs


def given_ground_truth(path: str | os.PathLike[str], shape: tuple[int, int]
                       ) -> tuple[np.ndarray | None, list[dict] | None]:
    """The ground truth a normal-map input comes with, as detect finds it: for a map that
    ``psinspect normals`` solved (its ``run.json`` beside it; or its output folder) the solved
    capture's ``M_defect.png`` and ``defects.json`` copied there; otherwise ``M_<x>.png`` beside
    an ``A_<x>`` map (an ``N_<x>`` map is clean: all False). Each None where there is none."""
    p = Path(path)
    if is_normals_folder(p):
        p = p / NORMALS_FILE
    if normals_run_of(p) is not None:
        return folder_ground_truth(p.parent, shape)
    return _sibling_gt(p, shape), None


def implanted_from_run(path: Path) -> dict[str, Any] | None:
    """For an ``A_<x>`` map that ``psinspect defects`` made from a ``psinspect normals`` map,
    what its ``A_<x>.json`` kept of that map's run record: ``solver`` and
    ``num_lights_used`` (as :func:`psinspect.normalmap.normals_run_of` gives them; only
    those of the right types). None for other maps, or a sidecar that cannot be read."""
    from psinspect.fileio import read_json

    side = path.with_suffix(".json")
    if not (path.name.startswith("A_") and side.is_file()):
        return None
    try:
        record = read_json(side)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    return {"solver": record.get("ps_solver"), "num_lights_used": record.get("num_lights_used")}


def load_input(path: str | os.PathLike[str], solver: str = "robust",
               light_splits: bool = False, capture_images: bool = False,
               lights: str | None = None) -> InputMap:
    """Read one detect input: ``.npy`` / ``.png`` normal map or a capture folder (PS first).
    ``light_splits``: for a capture folder, also solve PS on half light sets
    (:func:`psinspect.models.variation.light_split_differences`; None below 12 lights);
    ``capture_images``: keep a capture folder's images and lights; ``lights``: for a capture
    folder, the 1-based lights to use (:func:`psinspect.stereo.parse_light_spec`, e.g.
    ``"21-96"``; default all)."""
    p = Path(path)
    if p.is_file():
        n, m = load_normal_map(p)
        # `psinspect normals`' map (or its 8-bit PNG copy): scored with its PS confidence, its
        # solver recorded, the solved capture's ground truth (copied beside it) its own
        run = normals_run_of(p)
        solved = run if run is not None else implanted_from_run(p)
        solver = None if solved is None else solved.get("solver")
        noted = [] if run is None else run.get("warnings")
        for note in noted if isinstance(noted, list) else []:  # (e.g. no mask.png)
            warnings.warn(f"{p}: its capture was read with a warning: {note}", UserWarning,
                          stacklevel=2)
        gt, recs = given_ground_truth(p, m.shape)
        return InputMap(p.stem, n, m, str(p),
                        confidence=None if run is None else _normals_confidence(p.parent,
                                                                                m.shape),
                        gt_mask=gt, defects=recs,
                        ps_solver=solver if isinstance(solver, str) else None,
                        num_lights=solved_light_count(solved), map_file=p)
    if is_normals_folder(p):
        inp = load_input(p / NORMALS_FILE)
        return replace(inp, name=p.name)
    if p.is_dir():
        from psinspect.capture import load_capture
        from psinspect.stereo import run_photometric_stereo

        if (p / "manifest.json").is_file():
            raise PsinspectError(f"{p}: a dataset folder, not a capture folder: give its maps "
                                 f"({p / '*.npy'}) or capture folders")
        if is_model_folder(p):
            raise PsinspectError(f"{p}: a model folder, not an input: give it with --model")
        select = None
        if lights is not None:
            from psinspect.capture import capture_lights_file, read_lights_file
            from psinspect.stereo import parse_light_spec

            try:
                select = parse_light_spec(lights, len(read_lights_file(capture_lights_file(p))))
            except PsinspectError as err:  # named by the capture (once)
                raise PsinspectError(str(err) if str(p) in str(err) else f"{p}: {err}"
                                     ) from None
        cap = load_capture(p, select=select)
        res = run_photometric_stereo(cap, solver)
        obj = cap.mask & (np.abs(res.normals).sum(-1) > 0)
        n, m = validate_normal_map(res.normals, obj, name=str(p))
        gt, recs = folder_ground_truth(p, m.shape)
        splits = None
        if light_splits:
            from psinspect.models.variation import light_split_differences

            splits = light_split_differences(cap.images, cap.lights, m, solver=solver,
                                             clipped=cap.clipped)
        return InputMap(p.name, n, m, str(p), confidence=res.confidence, gt_mask=gt,
                        defects=recs, light_splits=splits,
                        capture_images=(cap.images, cap.lights) if capture_images else None,
                        ps_solver=solver, capture_solved=True, num_lights=cap.num_lights,
                        lights=cap.lights)
    raise PsinspectError(f"{p}: input not found (expected a .npy/.png normal map or a capture "
                         "folder)")


def _normals_confidence(folder: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The ``confidence.npy`` of ``psinspect normals``' output ``folder`` (None when absent),
    which detect uses as it does for the capture itself; a confidence file of another shape or
    with values outside [0, 1] is refused."""
    conf_path = folder / "confidence.npy"
    if not conf_path.is_file():
        return None
    from psinspect.fileio import load_npy

    conf = load_npy(conf_path)
    if conf.dtype.kind not in "fiu" or conf.shape != shape:
        raise PsinspectError(f"{conf_path}: expected PS confidence in [0, 1] of shape {shape}, "
                             f"got {conf.dtype} {conf.shape}")
    bad = ~np.isfinite(conf) | (conf < 0) | (conf > 1)
    if bad.any():
        first = conf[bad].flat[0]
        raise PsinspectError(f"{conf_path}: expected PS confidence in [0, 1], got {bad.sum()} "
                             f"value(s) outside it (e.g. {first:g})")
    return conf.astype(np.float32)


def normal_map_files(folder: Path) -> list[Path]:
    """The normal-map files of a folder, in natural name order: its ``.npy`` and ``.png`` files
    (hidden ones left out) except the PNGs that belong to another file there: ``X.png`` beside
    ``X.npy`` (a preview, as ``psinspect defects`` and ``dataset`` write them) and ``M_X.png``
    beside an ``A_X`` map (its ground truth, read with it)."""
    from psinspect.capture import natural_key

    files = [q for q in folder.iterdir() if q.is_file() and not q.name.startswith(".")
             and q.suffix.lower() in (".npy", ".png")]
    stems = {q.stem for q in files if q.suffix.lower() == ".npy"}
    maps = {q.stem[2:] for q in files if q.name.startswith("A_")}
    return sorted((q for q in files if q.suffix.lower() == ".npy" or not (
        q.stem in stems or (q.name.startswith("M_") and q.stem[2:] in maps))),
        key=lambda q: natural_key(q.name))


def expand_capture_sets(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Detect's inputs with each folder of parts replaced by its parts, in natural name order:
    a folder of capture folders (e.g. the output of ``psinspect render``: one sub-folder per
    part) or of ``psinspect normals`` output folders (or both) by those folders, a folder of
    normal maps by those maps (:func:`normal_map_files`: ``.npy`` and ``.png``, with
    ``M_<x>.png`` ground truth beside ``A_<x>.npy``, as :func:`load_input` reads it), a
    dataset folder (:mod:`psinspect.dataset`) by its test maps in manifest order (what
    ``evaluate`` judges against it; its training and validation maps are left out). Such a
    folder of parts that also holds anything else that could be a part (another sub-folder,
    a map file among capture folders, an image of another format among maps) is refused: a
    part must not be skipped silently. Files, capture folders, ``psinspect normals`` output
    folders and anything else stay as given (:func:`load_input` reads or refuses them). An
    input given twice (also through a folder of parts, or by another path to the same file)
    is refused."""
    from psinspect.capture import (
        CAPTURE_MARKERS,
        DEFAULT_LIGHTS_FILES,
        IMAGE_SUFFIXES,
        INTENSITIES_FILE,
        is_capture_folder,
        natural_key,
        nested_captures_hint,
    )

    out: list[tuple[Path, Path]] = []  # (input, the argument that named it)
    for p in map(Path, paths):
        if p.is_dir() and (p / "manifest.json").is_file():
            from psinspect.dataset import load_manifest

            manifest, folder = load_manifest(p)
            tests = [folder / it["file"] for it in manifest["items"]
                     if str(it["split"]).startswith("test")]
            if not tests:
                raise PsinspectError(f"{p}: a dataset folder without test maps: give its "
                                     f"maps ({p / '*.npy'}) or capture folders")
            out.extend((t, p) for t in tests)
            continue
        subs = []
        if (p.is_dir() and not is_capture_folder(p) and not is_normals_folder(p)
                and not (p / "manifest.json").is_file()):
            entries = sorted((q for q in p.iterdir() if not q.name.startswith(".")),
                             key=lambda q: natural_key(q.name))
            solved = [q for q in entries if is_normals_folder(q)]
            subs = [q for q in entries if q in solved or is_capture_folder(q)]
            kind, why = ("capture folders", f" (no {' / '.join(CAPTURE_MARKERS)})") if (
                len(solved) < len(subs)) else ("'psinspect normals' output folders", "")
            maps = normal_map_files(p)
            # a capture folder without its lights file (its images were each refused as
            # 'not a normal map'; a mask beside .npy maps, but a capture's Normal_gt.npy, is
            # not a capture's)
            own = [f for f in (INTENSITIES_FILE, "mask.png") if (p / f).is_file() and (
                f == INTENSITIES_FILE
                or not any(q.suffix == ".npy" and q.stem != "Normal_gt" for q in maps))]
            if not subs and own:
                raise PsinspectError(
                    f"{p}: holds {own[0]} as a capture folder does, but no lights file "
                    f"({' or '.join(DEFAULT_LIGHTS_FILES)}): add the capture's lights file")
            if not subs:
                subs, kind, why = maps, "normal maps", " (.npy or .png)"
            # never skip a part silently: a broken capture, a nested folder, a loose map (not
            # the previews and ground truth that belong to a map), an image of a format maps
            # are not read from (a .tif normal map)
            stray = [q for q in entries if q not in subs and (
                q.is_dir() or q in maps or (subs is maps and q.suffix.lower() in IMAGE_SUFFIXES
                                            and q.suffix.lower() != ".png"))]
            if subs and stray:
                raise PsinspectError(
                    f"{p}: holds {kind} and also {stray[0].name}, which is not one{why}: "
                    "give the inputs one by one")
            hint = "" if subs else nested_captures_hint(p)
            if hint:
                raise PsinspectError(f"{p}: not a capture folder, nor a folder of capture "
                                     f"folders or normal maps{hint}")
        out.extend((q, p) for q in subs or [p])
    seen: dict[Path, tuple[Path, Path]] = {}
    for q, arg in out:  # (scored twice it would be two parts in the summary, x and x_2)
        # ('psinspect normals' output folders stand for their map)
        key = (q / NORMALS_FILE if is_normals_folder(q) else q).resolve()
        if key in seen:
            fq, farg = seen[key]
            how = [f"also as {fq}"] if fq != q else []
            how += [f"through {a}" for a in dict.fromkeys((farg, arg)) if a not in (fq, q)]
            detail = f" ({'; '.join(how)})" if how else ""
            raise PsinspectError(f"{q}: this input is given twice{detail}: give each part once")
        seen[key] = (q, arg)
    return [q for q, _ in out]


def write_detection_outputs(
    inputs: list[str | os.PathLike[str]] | list[Path],
    out: str | os.PathLike[str],
    bundle: ModelBundle,
    *,
    threshold: float | None = None,
    image_threshold: float | None = None,
    solver: str | None = None,
    force: bool = False,
    progress: Any = None,
    jobs: int | None = None,
    keep_going: bool = False,
    lights: str | None = None,
    scale: float = 1.0,
    image_fpr: float | None = None,
) -> dict[str, Any]:
    """Detect on every input and write the per-input files and ``summary.json`` into ``out``
    (staged: nothing is written unless every input succeeds, or with ``keep_going``, unless
    every input succeeds or fails with a :class:`PsinspectError`: such an input gets no files
    and its ``summary.json`` entry is ``{"name", "source", "verdict": "error", "error"}``, the
    error's one line). ``threshold`` /
    ``image_threshold``: the pixel and pass/fail thresholds instead of the model's calibrated
    ones. ``solver``: the PS solver for capture folders (default: the model's, config
    ``input.ps_solver``). ``jobs``: inputs processed at once (default :func:`default_jobs`).
    ``lights``: the 1-based lights of capture folders to use (default all; :func:`load_input`).
    ``scale``: see :func:`detect_map`. ``image_fpr``: instead of ``image_threshold``, the
    pass/fail threshold for that share of good parts failing, fitted to the calibration
    scores the model stores (:func:`psinspect.train.image_thresholds_at_rate`; for a model
    calibrated per light count, a capture of such a count gets that count's), its rule
    recorded instead of "set by hand" (``detect --image-fpr``). Returns the summary."""
    from psinspect.fileio import file_sha256, input_names, save_json, staged_output_dir

    if threshold is not None and not (np.isfinite(threshold) and threshold >= 0):
        raise PsinspectError(f"--threshold must be a finite number >= 0, got {threshold}")
    calibrated = {"pixel_threshold": bundle.threshold,
                  "image_threshold": bundle.image_threshold}
    image_threshold_rule, count_image_thresholds = None, {}
    if image_fpr is not None:
        if image_threshold is not None:
            raise PsinspectError("give --image-fpr or --image-threshold, not both")
        from psinspect.train import image_thresholds_at_rate

        image_threshold, count_image_thresholds, image_threshold_rule = (
            image_thresholds_at_rate(bundle.config, image_fpr, getattr(bundle.model, "tta", None)))
    if image_threshold is not None:
        if not (np.isfinite(image_threshold) and image_threshold >= 0):
            raise PsinspectError(
                f"--image-threshold must be a finite number >= 0, got {image_threshold}")
        bundle = replace(bundle, image_threshold=float(image_threshold) + 0.0)  # (-0 -> 0)
    if jobs is not None and jobs < 1:
        raise PsinspectError(f"--jobs must be at least 1, got {jobs}")
    check_scale(scale, bundle)
    from psinspect.stereo import check_solver

    solver = check_solver(solver or str(bundle.input_handling["ps_solver"]))
    paths = [Path(p) for p in inputs]
    if not paths:
        raise PsinspectError("no inputs given")
    for p in paths:
        if not p.exists():
            raise PsinspectError(f"{p}: input not found")
    if lights is not None:
        solved = [p for p in paths if not p.is_dir() or is_normals_folder(p)]
        if len(solved) == len(paths):
            raise PsinspectError("--lights applies to capture folders; no input is one")
        if solved:
            warnings.warn(f"--lights applies to capture folders only: {len(solved)} input(s) "
                          f"({solved[0]}{', ...' if len(solved) > 1 else ''}) are normal maps, "
                          "scored as they are", UserWarning, stacklevel=2)
        from psinspect.stereo import parse_light_spec

        parse_light_spec(lights, 10**6)  # its syntax, before anything is solved
    names = input_names(paths)
    light_splits = getattr(bundle.model, "uses_light_splits", False)
    images = getattr(bundle.model, "uses_capture_images", False)
    with staged_output_dir(out, force, inputs=[*paths, bundle.path],
                           command="detect") as stage:

        def one_or_error(item: tuple[Path, str]) -> dict[str, Any]:
            try:  # (reading and scoring raise before ``one`` writes any file)
                return one(item)
            except PsinspectError as err:
                p, name = item
                return {"name": name, "source": str(p), "verdict": "error", "error": str(err)}

        def one(item: tuple[Path, str]) -> dict[str, Any]:
            try:
                return one_unnamed(item)
            except PsinspectError as err:  # named by its input's path, once
                p, name = item
                msg = str(err)
                if msg.startswith(f"{name}: ") and name != str(p):
                    msg = msg[len(name) + 2:]
                # p, a file in it, or a file beside it (the confidence.npy of normals.npy)
                named = msg.startswith((f"{p}: ", f"{p}{os.sep}")) or (
                    p.is_file() and msg.startswith(f"{p.parent}{os.sep}"))
                raise PsinspectError(msg if named else f"{p}: {msg}") from None

        def one_unnamed(item: tuple[Path, str]) -> dict[str, Any]:
            p, name = item
            with reading.recording() as read_notes:  # (a capture without mask.png, ...)
                inp = load_input(p, solver=solver, light_splits=light_splits,
                                 capture_images=images, lights=lights)
            det = detect_map(bundle, inp.normals, inp.mask, name=name,
                             confidence=inp.confidence, threshold=threshold,
                             light_splits=inp.light_splits,
                             capture_images=inp.capture_images, scale=scale,
                             image_threshold=count_image_thresholds.get(inp.num_lights,
                                                                        image_threshold),
                             num_lights=inp.num_lights)
            gt = None if inp.gt_mask is None else inp.gt_mask & inp.mask
            write_input_files(stage, name, inp.normals, inp.mask, det, gt)
            s = det.summary()
            s["source"] = inp.source
            own, count = for_light_count(bundle, inp.num_lights)
            if count is not None and (threshold is not None or image_threshold is not None):
                # the model's own for this input where it differs from the general ones in
                # the summary's calibrated_thresholds: those of the input's light count
                s["calibrated_thresholds"] = {"pixel_threshold": own.threshold,
                                              "image_threshold": own.image_threshold}
            notes: list[str | None] = []
            if inp.ps_solver is not None:
                s["ps_solver"] = inp.ps_solver
                # (a capture is solved with --solver, the user's choice: said in its help)
                if (inp.ps_solver != bundle.input_handling["ps_solver"]
                        and inp.capture_solved is False):
                    notes.append(
                        f"its normals were solved with the {inp.ps_solver!r} PS solver, the "
                        f"model's thresholds with {bundle.input_handling['ps_solver']!r} "
                        "normals: scores may be off (give the capture, or solve it with "
                        f"--solver {bundle.input_handling['ps_solver']})")
            notes.append(light_count_note(bundle, inp.num_lights))
            notes.append(light_set_note(bundle, inp.lights))
            notes.append(turn_note(bundle, det))
            notes.append(part_size_note(bundle, inp.mask, scale))
            notes.append(edge_note(inp.mask))
            notes = [n for n in notes if n is not None]
            for note in notes:
                warnings.warn(f"{p}: {note}", UserWarning, stacklevel=2)
            # with what reading it warned about (printed as it was raised), its path dropped
            notes = [n.removeprefix(f"{p}: ") for n in read_notes] + notes
            if notes:
                s["warnings"] = notes
            if inp.map_file is not None:
                s["source_sha256"] = file_sha256(inp.map_file)
            if gt is not None:
                s["gt_defect_px"] = int(gt.sum())
            return s

        with ThreadWarnings() as reading:
            summaries = run_parallel(
                one_or_error if keep_going else one, list(zip(paths, names, strict=True)),
                default_jobs(len(paths)) if jobs is None else jobs,
                on_result=None if progress is None else lambda s: progress(s["name"]))
        summary = summary_document(bundle, summaries, threshold=threshold,
                                   calibrated=(calibrated if threshold is not None
                                               or image_threshold is not None else None),
                                   solver=solver, lights=lights, scale=scale,
                                   image_threshold_rule=image_threshold_rule)
        save_json(stage / "summary.json", summary)
    return summary


#: how much larger than a model's largest training part (a factor) a part may be before it
#: is said to be imaged finer; any part smaller than its smallest is said to be coarser (4 of
#: 6 clean parts 85-113 px across failed the bundled model, whose smallest is 118 px)
PART_SIZE_SLACK = 1.4


def part_size_note(bundle: ModelBundle, mask: np.ndarray, scale: float = 1.0) -> str | None:
    """Why a verdict may not hold: the part of ``mask`` (H, W), resampled by ``scale``, is
    smaller (in pixels across, :func:`psinspect.normalmap.part_size_px`) than any the model
    was trained on, or more than :data:`PART_SIZE_SLACK` times larger than the largest (config
    ``training.part_size_px``): a model that learned surfaces at one pixel size sees another's
    texture and curvature as anomalous (clean parts of half the size fail). None where it is
    within, the model records no sizes (made before psinspect 0.5) or compares parts with its
    own training captures pixel by pixel (a known-part model: registration judges the pose)."""
    sizes = (bundle.config.get("training") or {}).get(PART_SIZE_KEY)
    if not isinstance(sizes, dict) or getattr(bundle.model, "known_part", False):
        return None
    try:
        low, mid, high = (float(sizes[k]) for k in ("min", "median", "max"))
    except (KeyError, TypeError, ValueError):
        return None
    own = part_size_px(mask)
    size = own * scale
    if not own or low <= size <= high * PART_SIZE_SLACK:
        return None
    want = mid / own
    suggest = float(np.clip(want, *SCALES))
    at = f" at scale {scale:g}" if scale != 1.0 else ""
    how = (f"score it resampled by about {suggest:.2g}: detect --scale, the web app's pixel "
           "scale" if low <= own * suggest <= high * PART_SIZE_SLACK else
           f"even resampled by {suggest:g}, the most --scale allows, it stays "
           f"{'larger than the largest' if want < 1 else 'smaller than the smallest'} of the "
           f"model's training parts: image it {'coarser' if want < 1 else 'finer'} or train a "
           "model on such parts")
    return (f"the part is {size:.0f} px across{at}, the model's training parts "
            f"{low:.0f}-{high:.0f} px: imaged this much {'finer' if size > high else 'coarser'}"
            f", its scores and verdict may not hold ({how})")


#: how far (degrees, :func:`psinspect.stereo.light_set_distance_deg`) a capture's lights may
#: lie from the nearest light set of a known-part model's training captures of as many lights
#: (or, where those sets differ among themselves by more, as far as they do) before its
#: verdict is said not to hold. DiLiGenT's 96 lights lie a median 4 deg from their nearest
#: neighbour, and its odd-numbered lights 7.9-8.0 deg from its even-numbered ones
LIGHT_SET_TOLERANCE_DEG = 5.0


def light_set_note(bundle: ModelBundle, lights: np.ndarray | None) -> str | None:
    """Why a capture's verdict may not hold: its ``lights`` ((K, 3), DiLiGenT frame) are as
    many as those of some of a known-part model's training captures (config
    ``input.capture_light_sets``) but other lights: farther from each such set than
    :data:`LIGHT_SET_TOLERANCE_DEG`, and than those sets lie from each other (a model trained
    through varied light sets had its thresholds calibrated across them). Its thresholds
    assume the training lights (a fixed rig). None for maps (``lights`` None), a model that
    records no light sets (trained on maps, or made before it recorded them), or a count
    none of its sets has (:func:`light_count_note` speaks for that)."""
    from psinspect.stereo import light_set_distance_deg

    sets = [np.asarray(s, np.float64) for s in bundle.input_handling.get(
        "capture_light_sets", [])]
    same = [s for s in sets if lights is not None and len(s) == len(lights)]
    if not same:
        return None
    spread = max((light_set_distance_deg(a, b) for i, a in enumerate(same)
                  for b in same[i + 1:]), default=0.0)
    off = min(light_set_distance_deg(s, lights) for s in same)
    if off <= max(LIGHT_SET_TOLERANCE_DEG, spread):
        return None
    return (f"its {len(lights)} lights lie up to {off:.0f} deg from those of the model's "
            f"{len(lights)}-light training captures: its thresholds assume those lights, so "
            "good parts may fail and defective ones pass (use the lights file of the rig it "
            "was trained on, or train or --calibrate-on with good captures under these lights)")


#: how far (degrees) beyond the turns of a known-part model's training parts (config
#: ``training.turns_deg``) a failing part may be registered before :func:`turn_note` warns.
#: Good parts of a rendered casting trained at turns of 0 to 5.4 deg: 0.1-0.2 deg beyond all
#: passed, 0.28 deg beyond one of two failed (1.146 against 1.137), 0.6 deg beyond both
#: (1.27, 1.18), 1.2 deg beyond both (1.47, 1.35): the template's steep rim scores a new
#: sampling of it as defects
TURN_TOLERANCE_DEG = 0.2


def turn_note(bundle: ModelBundle, det: Detection) -> str | None:
    """Why a known part's FAIL may not hold: it was registered (``det.info["angle_deg"]``)
    turned more than :data:`TURN_TOLERANCE_DEG` beyond the turns of the model's good training
    parts (``training.turns_deg``): its template and spread know the part only at those
    turns, and steep edges sampled at another turn score as defects (good parts failed from
    about 0.3 deg beyond). None for a PASS (the turn only adds to the scores), within
    those turns, for models that register nothing, or that record no turns."""
    turns = (bundle.config.get("training") or {}).get(TURNS_KEY)
    angle = det.info.get("angle_deg")
    if det.verdict != "fail" or not (isinstance(turns, dict) and is_number(angle)
            and is_number(turns.get("min")) and is_number(turns.get("max"))):
        return None
    low, high = float(turns["min"]), float(turns["max"])
    beyond = max(low - angle, angle - high)
    if beyond <= TURN_TOLERANCE_DEG:
        return None

    def deg(v: float) -> str:
        return f"{round(v, 1) + 0.0:+.1f}"  # (-0.04 as +0.0, not -0.0)

    return (f"it lies turned {deg(angle)} deg against the model's template, {beyond:.1f} deg "
            f"beyond the turns its good training parts lay at ({deg(low)} to {deg(high)} deg): "
            "edges sampled at a new turn score as defects, so a good part may fail too (train "
            "with good parts put down as the line puts them down)")


#: how many of an object's pixels may lie on the map's edge before :func:`edge_note` warns
#: (a rendered organic benchmark part touches it with 10; a part cut by the frame has a
#: straight cut of many more)
MAX_EDGE_PX = 16


def edge_note(mask: np.ndarray) -> str | None:
    """Why a verdict may not hold: more than :data:`MAX_EDGE_PX` object pixels of ``mask``
    (H, W) lie on the map's edge, so the part is likely cut off by the frame, and a model
    that learned whole parts sees the cut as an edge of its own (scores near it changed by up
    to 0.9 in a walkthrough). None otherwise; for a map that is object everywhere (a
    surface patch, or a background counted as the object, which reading it warns about); and
    for a part touching all four edges, a map cropped to the part's bounding box (a common
    format, scored as the part with a margin would be: the window is padded past the edges)."""
    m = np.asarray(mask, bool)
    sides = (m[0], m[-1], m[1:-1, 0], m[1:-1, -1])
    if all(side.any() for side in sides):
        return None
    edge = int(sum(side.sum() for side in sides))
    if edge <= MAX_EDGE_PX:
        return None
    return (f"the part touches the map's edge over {edge} px: if the frame cuts it off there, "
            "scores near the cut may not hold (image the whole part with a margin)")


def light_count_note(bundle: ModelBundle, num_lights: int | None) -> str | None:
    """Why a capture's verdict may not hold: it was solved from another number of lights
    (``detect --lights`` included; for a ``psinspect normals`` map, the count its ``run.json``
    records) than the model's training captures (a known-part model records theirs, config
    ``input.capture_lights``), whose lights its thresholds assume; or its count is among
    several the model's captures had and its thresholds were fitted to all of them together
    (a model made before thresholds were calibrated per light count), or the thresholds of its
    count come from fewer than ``train.MIN_FIT_MAPS`` good maps (one: no fit). None when it
    has the one count of theirs, or one the model has thresholds of its own for, fitted to
    enough maps, or the model records none. A map of unknown
    count (``num_lights`` None: other normal maps) is said to be judged by the general
    thresholds where the model has thresholds per light count: those were fitted across the
    counts, to the higher-scoring ones (a defective 12-light map passed a model calibrated
    on 12- and 8-light captures that failed it per count)."""
    from psinspect.train import MIN_FIT_MAPS, light_count_few_maps_note

    trained = bundle.input_handling.get("capture_lights")
    by_count = light_count_thresholds(bundle)
    if num_lights is None and by_count:
        counts = " and ".join(map(str, sorted(by_count)))
        return (f"its light count is unknown (a normal map without the run.json of "
                f"'psinspect normals'): it is judged by the model's general thresholds, fitted "
                f"across its captures of {counts} lights, which let more through than each "
                "count's own (a defective part may pass; give the capture, its folder or zip, "
                "or the 'psinspect normals' output folder)")
    if not trained or num_lights is None:
        return None
    group = by_count.get(num_lights)
    if group is not None:
        return (None if group["maps"] >= MIN_FIT_MAPS
                else light_count_few_maps_note(num_lights, group["maps"]))
    if num_lights in trained:
        return None if len(trained) == 1 else (
            f"the model's thresholds were fitted to captures of "
            f"{' and '.join(map(str, trained))} lights together: one pass/fail threshold for "
            "all of them lets more through on the lights whose good parts score lower (a "
            "defective part may pass; train one model per light set)")
    return (f"solved from {num_lights} lights, the model's training captures from "
            f"{' / '.join(map(str, trained))}: its thresholds assume those lights, so good "
            "parts may fail (use the lights it was trained with, or train a model on good "
            "captures under these lights)")


def write_input_files(folder: Path, name: str, normals: np.ndarray, mask: np.ndarray,
                      det: Detection, gt: np.ndarray | None = None) -> None:
    """The files ``psinspect detect`` writes for one input into ``folder`` (each atomically):
    ``<name>_score.npy`` (float32 (H, W), 0 outside the mask), ``_heatmap.png``, ``_mask.png``
    (the prediction at the pixel threshold), ``_reference.png`` (where the model has one) and
    ``_panel.png`` (with the ground truth ``gt``, (H, W) bool, where given)."""
    from psinspect.fileio import save_npy, save_png
    from psinspect.normalmap import encode_png
    from psinspect.report import heatmap_rgb, panel_rgb

    save_npy(folder / f"{name}_score.npy", det.score.astype(np.float32))
    save_png(folder / f"{name}_heatmap.png", heatmap_rgb(det.score, mask, det.threshold))
    save_png(folder / f"{name}_mask.png", det.pred_mask.astype(np.uint8) * 255)
    if det.reference is not None:
        save_png(folder / f"{name}_reference.png", encode_png(det.reference, mask))
    save_png(folder / f"{name}_panel.png", panel_rgb(
        normals, mask, det.reference, det.score, det.pred_mask, det.threshold, gt))


def summary_document(bundle: ModelBundle, inputs: list[dict[str, Any]], *,
                     threshold: float | None, calibrated: dict[str, float] | None,
                     solver: str, lights: str | None = None, scale: float = 1.0,
                     model_label: str | None = None,
                     light_count: int | None = None,
                     image_threshold_rule: str | None = None) -> dict[str, Any]:
    """The ``summary.json`` of a detection run: the version, date, model, thresholds and rules
    around the per-input entries ``inputs`` (:meth:`Detection.summary` and more).
    ``threshold``: the pixel threshold used instead of the model's (None: the model's);
    ``calibrated``: the model's own thresholds, recorded where others replaced them;
    ``solver``: the PS solver capture inputs are solved with (each capture's entry names
    the one it was solved with); ``model_label``: the model named by a label instead of its
    folder (the web app: its clients are not told the server's folders); ``light_count``:
    the light count whose calibrated thresholds (``thresholds_by_light_count``) ``bundle``
    carries instead of the general ones (the web app's one input), whose rule is then the
    one recorded; ``image_threshold_rule``: how a pass/fail threshold that replaced the
    model's was set, instead of "set by hand"."""
    from psinspect import __version__
    from psinspect.fileio import utc_timestamp

    cal = bundle.config.get("calibration")
    by_count = light_count_thresholds(bundle)
    rule = (by_count[light_count].get("image_threshold_rule") if light_count in by_count
            else cal.get("image_threshold_rule") if isinstance(cal, dict) else None)
    if (isinstance(rule, str) and calibrated is not None
            and calibrated.get("image_threshold") != bundle.image_threshold):
        rule = ((image_threshold_rule or "set by hand (--image-threshold, or the web app's "
                 "slider)") + "; the model's own, in calibrated_thresholds: " + rule)
    return {
        "psinspect_version": __version__,
        "date": utc_timestamp(),
        "model": bundle.config.get("model"),
        "model_dir": (str(Path(bundle.path).resolve()) if bundle.path and model_label is None
                      else None),
        **({"model_label": model_label} if model_label is not None else {}),
        "model_weights_sha256": bundle.config.get("weights_sha256"),
        **({"tta": bundle.model.tta} if bundle.model.tta_levels else {}),
        "pixel_threshold": threshold + 0.0 if threshold is not None else bundle.threshold,
        "image_threshold": bundle.image_threshold,
        # the model's own, where --threshold / --image-threshold replaced them
        **({"calibrated_thresholds": calibrated} if calibrated is not None else {}),
        # a known-part model's thresholds per light count of its captures (the two above are
        # its general ones): an input of such a count is judged with them, unless set by hand
        # (each input's thresholds_for_lights says which judged it)
        **({"thresholds_by_light_count": {
            str(k): {key: v[key] for key in ("threshold", "image_threshold", "maps",
                                              "image_threshold_rule") if key in v}
            for k, v in sorted(by_count.items())}} if by_count else {}),
        # how training set the model's pass/fail threshold (e.g. for about 1 % of good parts
        # failing), where its config records it
        **({"image_threshold_calibration": rule} if isinstance(rule, str) else {}),
        # masks and regions: score >= pixel_threshold, 8-connected components of at
        # least this many pixels (smaller specks are left out of both)
        "min_region_px": MIN_REGION_PX,
        "bbox": "[x0, y0, x1, y1] in pixels: first column and row, and one past the last",
        "ps_solver": solver,
        **({"lights": lights} if lights is not None else {}),
        **({"scale": scale} if scale != 1.0 else {}),
        "verdict_rule": "fail when image_score > image_threshold (image score = peak of "
                        "the 3x3 object-pixel mean of the score map, times the input's "
                        "image_scale: the model's per-map score divisor, 1 for most "
                        "models; geo-seg divides its score maps by a level of their own, "
                        "and the verdict is taken before that division)",
        "inputs": inputs,
    }
