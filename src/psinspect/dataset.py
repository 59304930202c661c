"""Normal-map datasets built from captures.

:func:`build_dataset` turns capture folders into a folder of normal maps and a ``manifest.json``:

- Every capture is solved by photometric stereo with ``subsets`` different light subsets (subset
  0: farthest-point lights, well spread; the others: random well-conditioned subsets), which
  gives realistically different PS noise per map. ``N_<surface>_l<j>.npy`` (float32 (H, W, 3),
  DiLiGenT frame, zero outside the object).
- **Surfaces** (one per capture folder) are either ``train`` or ``test``. Test surfaces are the
  ``holdout`` names plus every capture that carries real defects (``M_defect.png``, e.g. a
  defective rendered part). Nothing of a test surface (no light subset, no augmentation, no
  crop) ever reaches a train or val split.
- Splits:

  ``train-clean``
      train surfaces, subsets ``0 .. S-2``, each unaugmented (``"none"``) plus one copy per
      augmentation (vector-field-correct rotations / flips, :mod:`psinspect.normalmap`).
  ``val-clean``
      the SAME train surfaces seen through a different light subset (the last, ``S-1``),
      unaugmented. It measures robustness to PS noise, not to new surfaces (that is what the
      test splits are for); use it for early stopping and score normalisation.
  ``test-clean``
      held-out clean surfaces, every subset, unaugmented.
  ``test-defective``
      (a) a copy of every ``test-clean`` map with synthetic defects implanted through the
      height field (:func:`psinspect.defects.implant_defects`): ``A_<surface>_l<j>.npy`` with
      ``M_<surface>_l<j>.png``; (b) every subset of a capture with real defects, with its
      ``M_defect.png`` and ``defects.json`` records.

Manifest schema (``format`` "psinspect-dataset", ``version`` 1)::

    {"format": "psinspect-dataset", "version": 1, "seed": 0,
     "config": {..., "min_angle": <deg, for the defects implanted here; captures'
                own M_defect.png are used as they are>,
                "skip_lights": {"<surface>": [0-based indices (the CLI takes 1-based)]}},
     "surfaces": {"<surface>": {"source": "<capture path>", "role": "train" | "test",
                                ["warnings": [what reading the capture warned about]]}},
     "items": [{"name": "N_ballPNG_l00", "file": "N_ballPNG_l00.npy", "surface": "ballPNG",
                "split": "train-clean", "defect_mask": null | "M_<...>.png",
                "defects": [<records>], "lights": [0-based light indices used for PS],
                "augment": "none" | "rot90" | ...}]}

An item's object mask is the set of non-zero vectors of its normal map.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from psinspect.capture import (
    CAPTURE_MARKERS,
    IMAGE_SUFFIXES,
    capture_fingerprint,
    capture_mask_sha256,
    is_capture_folder,
    nested_captures_hint,
)
from psinspect.defects import (
    check_min_angle,
    check_types,
    defect_records_problem,
    implant_defects,
    read_defect_records,
)
from psinspect.errors import PsinspectError
from psinspect.fileio import read_json, save_json, save_npy, save_png
from psinspect.normalmap import (
    flip,
    read_mask_png,
    rotate,
    rotate90,
    rotate_mask,
)

FORMAT = "psinspect-dataset"
VERSION = 1
SPLITS = ("train-clean", "val-clean", "test-clean", "test-defective")
DEFAULT_AUGMENT: tuple[str, ...] = ("rot90", "rot180", "rot270", "fliplr")


# ------------------------------------------------------------------------------------------
# augmentations (vector-field correct)
# ------------------------------------------------------------------------------------------


def check_augment(name: str) -> str:
    """Validate an augmentation name: ``none``, ``rot90|rot180|rot270``, ``fliplr``, ``flipud``,
    ``transpose`` or ``rot<degrees>`` (any angle, bilinear, canvas expanded)."""
    if name in ("none", "fliplr", "flipud", "transpose") or re.fullmatch(r"rot-?\d+(\.\d+)?",
                                                                           name):
        return name
    raise PsinspectError(
        f"--augment: unknown augmentation {name!r} (use none, rot90, rot180, rot270, rot<deg>, "
        "fliplr, flipud, transpose)"
    )


def augment_map(
    normals: np.ndarray, name: str, extra: Sequence[np.ndarray] = ()
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Apply augmentation ``name`` to a normal map (H, W, 3) and the same pixel move to the
    bool masks in ``extra``. Vectors turn with the image (DiLiGenT frame, y up).
    Returns ``(normals, [masks...])``."""
    check_augment(name)
    masks = [np.asarray(m, bool) for m in extra]
    if name == "none":
        return np.asarray(normals, np.float32), masks
    if name == "fliplr":
        return flip(normals, "lr"), [np.ascontiguousarray(m[:, ::-1]) for m in masks]
    if name == "flipud":
        return flip(normals, "ud"), [np.ascontiguousarray(m[::-1]) for m in masks]
    if name == "transpose":  # mirror about the main diagonal = rot90 then flip up-down
        n = flip(rotate90(normals, 1), "ud")
        return n, [np.ascontiguousarray(m.T) for m in masks]
    angle = float(name[3:])
    if angle % 90 == 0:
        k = int(angle // 90) % 4
        return rotate90(normals, k), [np.ascontiguousarray(np.rot90(m, k)) for m in masks]
    n, _ = rotate(normals, angle)
    return n, [rotate_mask(m, angle) for m in masks]


# ------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------


def find_captures(paths: Sequence[str | Path]) -> list[Path]:
    """Expand the given paths to capture folders: a capture folder itself, or a folder whose
    direct sub-folders are captures (e.g. the output of ``psinspect render``)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise PsinspectError(f"{p}: capture folder not found")
        if is_capture_folder(p):
            found.append(p)
            continue
        subs = sorted(q for q in p.iterdir() if is_capture_folder(q)) if p.is_dir() else []
        if not subs:
            raise PsinspectError(
                f"{p}: not a capture folder (no {' / '.join(CAPTURE_MARKERS)}) and holds none"
                + nested_captures_hint(p))
        # a part whose lights file is missing or misnamed was left out without a word
        left = sorted(q.name for q in p.iterdir() if q.is_dir() and not is_capture_folder(q)
                      and any(f.suffix.lower() in IMAGE_SUFFIXES for f in q.iterdir()))
        if left:
            warnings.warn(f"{p}: sub-folder(s) with images but no lights file "
                          f"({' / '.join(CAPTURE_MARKERS)}) left out: {', '.join(left[:5])}"
                          f"{', ...' if len(left) > 5 else ''}", UserWarning, stacklevel=2)
        found.extend(subs)
    names = [f.resolve().name for f in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        same = [f for f in found if f.resolve().name == dup[0]]
        if same[0].resolve() == same[1].resolve():
            raise PsinspectError(f"{same[0]}: this capture is given twice (" + (
                f"also as {same[1]})" if str(same[0]) != str(same[1])
                else "itself, and inside a folder of captures given)"))
        raise PsinspectError(f"{same[0]} and {same[1]}: captures share the surface name "
                             f"{dup[0]}" + (f" (and {len(dup) - 1} more name(s))"
                                            if len(dup) > 1 else "")
                             + "; a dataset names its surfaces by their folders: rename one")
    return found


def check_surface_names(names: Sequence[str], holdout: Sequence[str] | None,
                        skip_lights: Mapping[str, Any] | None) -> None:
    """Refuse ``--holdout`` and ``--skip-lights`` surfaces that are none of ``names`` (the
    captures' folder names; :func:`psinspect.render.part_names` for parts not yet rendered)."""
    for option, given in (("--holdout", sorted(set(holdout or []))),
                          ("--skip-lights", sorted(skip_lights or {}))):
        unknown = [h for h in given if h not in names]
        if unknown:
            raise PsinspectError(f"{option}: no capture named {', '.join(unknown)} (surfaces: "
                                 f"{', '.join(names)})")


def light_subsets(lights: np.ndarray, count: int, size: int, rng: np.random.Generator
                  ) -> list[np.ndarray]:
    """``count`` light subsets of ``size`` lights (sorted 0-based indices).

    Subset 0 is the farthest-point set (well spread); the others are random, distinct where
    possible, and redrawn while badly conditioned (``cond(L) > 10``)."""
    from psinspect.stereo import farthest_point_lights

    k = len(lights)
    size = min(size, k)
    subsets = [farthest_point_lights(lights, size)]
    seen = {tuple(subsets[0])}
    n_possible = math.comb(k, size)
    while len(subsets) < count:
        for _ in range(50):
            idx = np.sort(rng.choice(k, size, replace=False))
            if np.linalg.cond(lights[idx]) < 10 and (tuple(idx) not in seen
                                                     or len(seen) >= n_possible):
                break
        seen.add(tuple(idx))
        subsets.append(idx)
    return subsets


def parse_skip_lights(specs: Sequence[str] | None) -> dict[str, list[int]]:
    """``--skip-lights`` values -> ``skip_lights`` of :func:`build_dataset`:
    ``["bearPNG:1-20"]`` -> ``{"bearPNG": [0..19]}`` (1-based ranges, as --lights)."""
    from psinspect.stereo import light_ranges

    out: dict[str, list[int]] = {}
    for spec in specs or []:
        name, sep, rng = spec.partition(":")
        if not sep or not name or not rng:
            raise PsinspectError(f"--skip-lights {spec!r}: use SURFACE:RANGES, e.g. bearPNG:1-20")
        idx = light_ranges(rng, f"--skip-lights {spec!r}")
        out.setdefault(name, []).extend(idx)
    return out


def build_dataset(
    captures: Sequence[str | Path],
    out: str | Path,
    *,
    holdout: Sequence[str] | None = None,
    seed: int = 0,
    subsets: int = 4,
    lights_per_subset: int | None = None,
    solver: str = "robust",
    augment: Sequence[str] = DEFAULT_AUGMENT,
    defects_per_map: int = 3,
    defect_types: Sequence[str] | None = None,
    severity: float | tuple[float, float] | str | None = None,
    min_angle: float = 2.0,
    skip_lights: dict[str, Sequence[int]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build a dataset folder ``out`` (written directly; callers stage it) and return the
    manifest (also saved as ``out/manifest.json``). See the module docstring for the layout.

    Args:
        captures: capture folders, or folders of capture folders.
        holdout: surface names kept for test only. ``None``: a quarter of the clean surfaces
            (at least one) drawn with ``seed``; ``[]``: none (only real-defect captures test).
            Every surface held out (or defective) gives a dataset without training maps, to
            evaluate a trained model on.
        subsets: light subsets per capture (``>= 2`` for a val split).
        lights_per_subset: lights per PS solve (default ``min(K, max(8, K // 4))``).
        solver: PS solver (``ls``, ``robust`` or ``stable``; :func:`psinspect.stereo.solve`).
        augment: augmentation names for train-clean (:func:`check_augment`).
        defects_per_map: synthetic defects per test-defective copy: 1..this many.
        defect_types, severity, min_angle: as :func:`psinspect.defects.implant_defects`.
        skip_lights: per surface, 0-based light indices never used (e.g. corrupted images).
        progress: called with a short message after each PS solve.
    """
    from psinspect.capture import load_capture
    from psinspect.stereo import check_solver, lights_named, solve, warn_flipped_lights

    if subsets < 1:
        raise PsinspectError(f"--subsets must be >= 1, got {subsets}")
    check_solver(solver)
    if defects_per_map < 1:
        raise PsinspectError(f"--defects-per-map must be >= 1, got {defects_per_map}")
    check_min_angle(min_angle)
    augment = [check_augment(a) for a in augment if a != "none"]
    check_types(defect_types)
    folders = find_captures(captures)
    names = [f.resolve().name for f in folders]
    real_defective = {n for n, f in zip(names, folders, strict=True)
                      if (f / "M_defect.png").is_file()}
    clean = [n for n in names if n not in real_defective]
    rng = np.random.default_rng(int(seed))
    if holdout is None:
        n_hold = max(1, round(len(clean) / 4)) if len(clean) >= 2 else 0
        held = sorted(str(n) for n in rng.choice(clean, n_hold, replace=False)) if n_hold else []
    else:
        held = sorted(set(holdout))
    check_surface_names(names, holdout, skip_lights)
    test_names = set(held) | real_defective
    skip = {k: [int(i) for i in v] for k, v in (skip_lights or {}).items()}
    prints = {name: capture_fingerprint(folder) for folder, name in zip(folders, names,
                                                                        strict=True)}
    masks = {name: capture_mask_sha256(folder) for folder, name in zip(folders, names,
                                                                       strict=True)}
    first: dict[tuple[str, str | None], str] = {}
    for name, fp in prints.items():
        if (fp, masks[name]) in first:
            raise PsinspectError(f"{first[fp, masks[name]]} and {name} are the same capture "
                                 "(identical images, lights and mask): give each surface once")
        first[fp, masks[name]] = name
    # one part captured twice (another light set, a copy through fewer lights) has other
    # images but, where its mask was made once, the very same mask file
    by_mask: dict[str, list[str]] = {}
    for name in names:
        if masks[name] is not None:
            by_mask.setdefault(masks[name], []).append(name)
    for alike in by_mask.values():
        train = [n for n in alike if n not in test_names]
        test = [n for n in alike if n in test_names]
        if train and test:
            warnings.warn(f"{train[0]} (training) and {test[0]} (test) have the same mask, byte "
                          "for byte: if they are one part captured twice (e.g. through other "
                          "lights), train and test share a surface; hold out both or neither",
                          UserWarning, stacklevel=2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "captures": [str(f.resolve()) for f in folders], "holdout": held,
        "holdout_auto": holdout is None, "real_defective": sorted(real_defective),
        "subsets": subsets, "lights_per_subset": lights_per_subset, "solver": solver,
        "augment": ["none", *augment], "defects_per_map": defects_per_map,
        "defect_types": list(defect_types) if defect_types else None,
        "severity": severity, "min_angle": min_angle, "skip_lights": skip,
        "val": "train surfaces, last light subset, unaugmented" if subsets >= 2 else "none",
    }
    surfaces: dict[str, dict[str, str]] = {}
    items: list[dict[str, Any]] = []
    for folder, name in zip(folders, names, strict=True):
        role = "test" if name in test_names else "train"
        surfaces[name] = {"source": str(folder.resolve()), "role": role,
                          "fingerprint": prints[name], "mask_sha256": masks[name]}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cap = load_capture(folder)
        for w in caught:  # said as before, and kept: evaluate reports a test surface's
            warnings.warn(str(w.message), w.category, stacklevel=2)
        if caught:
            surfaces[name]["warnings"] = [str(w.message) for w in caught]
        beyond = [i for i in skip.get(name, []) if not 0 <= i < cap.num_lights]
        if beyond:
            raise PsinspectError(f"--skip-lights {name}: {lights_named(beyond)} out of range "
                                 f"(it has lights 1-{cap.num_lights})")
        usable = np.array([i for i in range(cap.num_lights) if i not in set(skip.get(name, []))])
        if len(usable) < 3:
            raise PsinspectError(f"{folder}: fewer than 3 lights left after skipping")
        if lights_per_subset is not None and not 3 <= lights_per_subset <= len(usable):
            raise PsinspectError(f"--lights-per-subset {lights_per_subset}: must be between 3 "
                                 f"and the {len(usable)} usable lights of {name}")
        k = lights_per_subset or min(len(usable), max(8, len(usable) // 4))
        srng = np.random.default_rng([int(seed), stable_hash(name)])
        subs = [usable[s] for s in light_subsets(cap.lights[usable], subsets, k, srng)]
        real_mask, real_records = None, []
        if name in real_defective:
            real_mask = read_mask_png(folder / "M_defect.png", cap.mask.shape) & cap.mask
            if (folder / "defects.json").is_file():
                real_records = read_defect_records(folder / "defects.json")
        for j, idx in enumerate(subs):
            res = solve(cap.images[idx], cap.lights[idx], cap.mask, solver=solver,
                        clipped=None if cap.clipped is None else cap.clipped[idx])
            normals = res.normals
            if j == 0:
                warn_flipped_lights(normals, cap)
            base = f"{name}_l{j:02d}"
            lights_used = [int(i) for i in idx]
            if progress is not None:
                progress(f"{name} subset {j}")
            if name in real_defective:
                _add(items, out, f"A_{base}", normals, name, "test-defective", lights_used,
                     "none", real_mask, real_records, f"M_{base}.png")
            elif role == "test":
                _add(items, out, f"N_{base}", normals, name, "test-clean", lights_used, "none")
                drng = np.random.default_rng([int(seed), stable_hash(name), j, 1])
                a, gt, recs = implant_defects(
                    normals, None, drng, count=int(drng.integers(1, defects_per_map + 1)),
                    types=defect_types, severity=severity, min_angle=min_angle)
                _add(items, out, f"A_{base}", a, name, "test-defective", lights_used, "none",
                     gt, recs, f"M_{base}.png")
            elif j == subsets - 1 and subsets >= 2:
                _add(items, out, f"N_{base}", normals, name, "val-clean", lights_used, "none")
            else:
                _add(items, out, f"N_{base}", normals, name, "train-clean", lights_used, "none")
                for aug in augment:
                    an, _ = augment_map(normals, aug)
                    _add(items, out, f"N_{base}_{aug}", an, name, "train-clean", lights_used,
                         aug)
    manifest = {"format": FORMAT, "version": VERSION, "seed": int(seed), "config": config,
                "surfaces": surfaces, "items": items}
    check_manifest(manifest)
    save_json(out / "manifest.json", manifest)
    return manifest


def stable_hash(text: str) -> int:
    """Process-independent 31-bit hash of a name, for seeding (Python's ``hash`` is salted)."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) & 0x7FFFFFFF


def _add(items: list[dict[str, Any]], out: Path, name: str, normals: np.ndarray, surface: str,
         split: str, lights: list[int], augment: str, defect_mask: np.ndarray | None = None,
         records: list[dict[str, Any]] | None = None, mask_name: str | None = None) -> None:
    save_npy(out / f"{name}.npy", np.asarray(normals, np.float32))
    if defect_mask is not None and mask_name is not None:
        save_png(out / mask_name, np.asarray(defect_mask, bool).astype(np.uint8) * 255)
    items.append({"name": name, "file": f"{name}.npy", "surface": surface, "split": split,
                  "defect_mask": mask_name if defect_mask is not None else None,
                  "defects": list(records or []), "lights": lights, "augment": augment})


def check_manifest(manifest: dict[str, Any]) -> None:
    """Raise :class:`PsinspectError` unless ``manifest`` is a valid psinspect dataset manifest
    whose train/val surfaces and test surfaces are disjoint (also by capture fingerprint: a
    copy of a training capture under another name is the same surface)."""
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise PsinspectError(f"not a {FORMAT} manifest of version {VERSION}")
    surfaces = manifest.get("surfaces", {})
    files: set[str] = set()
    for it in manifest.get("items", []):
        for key in ("file", "defect_mask"):
            rel = it.get(key)
            if key == "file" or rel:
                if not (isinstance(rel, str) and rel and not PurePosixPath(rel).is_absolute()
                        and ".." not in PurePosixPath(rel).parts and "\\" not in rel):
                    raise PsinspectError(f"manifest item {it['name']}: {key} must be a path "
                                         f"inside the dataset folder, got {rel!r}")
        if it["file"] in files:
            raise PsinspectError(f"manifest item {it['name']}: its file {it['file']} is "
                                 "listed twice")
        files.add(it["file"])
        if it["split"] not in SPLITS:
            raise PsinspectError(f"manifest item {it['name']}: unknown split {it['split']!r}")
        if it["surface"] not in surfaces:
            raise PsinspectError(f"manifest item {it['name']}: unknown surface {it['surface']!r}")
        role = surfaces[it["surface"]]["role"]
        if (role == "test") != it["split"].startswith("test"):
            raise PsinspectError(
                f"manifest item {it['name']}: split {it['split']} but surface "
                f"{it['surface']} has role {role}"
            )
        bad = defect_records_problem(it.get("defects"))
        if bad:
            raise PsinspectError(f"manifest item {it['name']}: malformed defects ({bad})")
        if it.get("defect_mask") and it["split"] != "test-defective":
            # (train learns from the clean splits' maps: a marked defect must not teach it)
            raise PsinspectError(f"manifest item {it['name']}: split {it['split']} but a "
                                 f"defect mask {it['defect_mask']!r} (only test-defective "
                                 "maps have one)")
    for name, sf in surfaces.items():
        said = sf.get("warnings", []) if isinstance(sf, dict) else []
        if not (isinstance(said, list) and all(isinstance(w, str) for w in said)):
            raise PsinspectError(f"manifest surface {name}: warnings must be a list of texts, "
                                 f"got {said!r:.80}")
    # the same capture under two names (fingerprint and mask; older manifests: fingerprint)
    seen: dict[tuple[str, str | None], dict[str, str]] = {}
    for name, sf in surfaces.items():
        if isinstance(sf, dict) and sf.get("fingerprint"):
            seen.setdefault((sf["fingerprint"], sf.get("mask_sha256")), {})[sf["role"]] = name
    for by_role in seen.values():
        if len(by_role) > 1:
            raise PsinspectError(f"train surface {by_role['train']} and test surface "
                                 f"{by_role['test']} are the same capture (identical "
                                 "fingerprints)")


def load_manifest(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read ``manifest.json`` (or the folder holding it) -> ``(manifest, folder)``."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    if not p.is_file():
        raise PsinspectError(f"{p}: dataset manifest not found")
    try:
        manifest = read_json(p)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PsinspectError(f"{p}: not valid JSON ({err})") from None
    try:
        check_manifest(manifest)
    except PsinspectError as err:
        raise PsinspectError(f"{p}: {err}") from None
    except (AttributeError, KeyError, TypeError) as err:  # not a dict, items missing keys ...
        raise PsinspectError(f"{p}: malformed manifest ({type(err).__name__}: {err})") from None
    return manifest, p.parent
