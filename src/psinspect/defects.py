"""Physically consistent surface defects: height fields -> normals + ground-truth masks.

A defect is a change of the surface's height ``h(x, y)`` (pixel units, the same unit as the
image grid, so slopes are dimensionless). The normals follow from the height change, never from
painting into a channel, and the ground-truth mask marks only the pixels whose normal really
turned by more than ``min_angle`` degrees.

Frame: the DiLiGenT camera frame, x right, y up, z toward the camera; image rows grow downward,
so ``dh/dy = -dh/drow``. Positions in parameters are image coordinates ``[x, y] = [column, row]``
in pixels (row downward), as in every image library.

Defect types and their parameters (all lengths in pixels; ``depth`` is positive into the
material, ``height`` positive out of it). Severity is the ratio depth / width, where "width" is
the defect's lateral size named below, so one severity means comparably steep walls across types:

=========  ==========================================================  ===================
type       shape and parameters                                        width (severity)
=========  ==========================================================  ===================
scratch    groove along a straight or bent polyline ``points``;        ``width``
           ``width`` 1-6, ``profile`` "V" (linear walls) or "U"
           (round bottom), ``depth``
ridge      raised bead (burr, weld spatter line) along ``points``;     ``width``
           ``width`` 2-7, round "U" profile, ``height``
crack      thin branching polyline: ``branches`` (list of polylines,   ``width``
           the first is the trunk), ``width`` 1-2.5, V profile,
           ``depth``
dent       smooth elliptic depression (cosine bell): ``center``,       ``2 * radius``
           ``radius`` (major semi-axis), ``aspect`` (minor/major),
           ``angle_deg`` (major axis, counter-clockwise from +x),
           ``depth``
bump       the same shape raised: ``height``                           ``2 * radius``
pit        small steep crater (paraboloid bowl): ``center``,           ``2 * radius``
           ``radius`` 1.5-4, ``depth``
chip       missing flake with steep walls and a flat floor: ``center``, ``2 * radius``
           ``radius``, ``vertices`` (polygon around the centre),
           ``wall`` (wall width), ``depth``
porosity   cluster of small pits (casting porosity): ``centers``,      ``2 * radii[i]`` each
           ``radii``, ``depths``
=========  ==========================================================  ===================

Held-out types (:data:`HELD_OUT_TYPES`): drawn only when asked for by name, never by the
default draw, so no training recipe of this package ever sees them. They test how a model does
on defects outside the library it was trained on (``bench/bench_held_out.py``):

=========  ==========================================================  ===================
type       shape and parameters                                        width (severity)
=========  ==========================================================  ===================
gouge      plough groove with raised lips of pushed-aside material     ``width``
           along ``points``: ``width`` 2-8, V profile, ``depth``
           growing from ``start * depth`` at the first point to
           ``depth`` at the last; lips of height ``lip * depth`` and
           width ``lip_width * width / 2`` beside the rim
chatter    periodic ripples across a band (chatter marks along a       ``period / 2``
           tool path): ``center``, ``angle_deg`` (path direction),
           ``length``, ``band`` (band width), ``period`` 3-10,
           ``depth`` (crest to trough); crests across the path
lap        raised tongue of material with one steep edge (a lap or      ``rise``
           fold, a step at a parting line): ``center``,
           ``angle_deg`` (edge direction), ``length``, ``rise``
           (edge width 1.5-4), ``reach`` (how far behind the edge the
           tongue fades back to the surface), ``height``
spatter    cluster of raised droplets (weld spatter): ``centers``,      ``2 * radii[i]`` each
           ``radii``, ``heights``
blister    raised dome with a steep edge and a nearly flat top:          ``2 * radius``
           ``center``, ``radius``, ``rim`` (edge width 1-3),
           ``height``
crater     bowl with a raised rim (weld or impact crater): ``center``,  ``2 * radius``
           ``radius`` 2-6 (the bowl), ``depth``, ``lip`` (rim height /
           depth), ``lip_width`` (rim half width / radius)
scuff      a band of short, fine, parallel scratches (abrasion):         ``widths[i]`` each
           ``center``, ``angle_deg``, ``length``, ``band``, and per
           line ``offsets`` (across), ``spans`` (along: start, end),
           ``widths`` 1-2, ``depths``
=========  ==========================================================  ===================

The first four held-out types were written with the bench of held-out kinds; blister, crater
and scuff (:data:`SECOND_HELD_OUT_TYPES`) were added later, after a training change aimed at
unseen kinds (geo-seg ``p_transplant``) had been designed, so that the change could be judged
on kinds it was not designed with.

Severity levels (for sampling and for per-severity reports): see :data:`SEVERITY_LEVELS`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from psinspect.errors import PsinspectError
from psinspect.fileio import read_json
from psinspect.normalmap import height_gradient, normals_from_height, validate_normal_map

#: every defect type this module can make
DEFECT_TYPES: tuple[str, ...] = (
    "scratch", "dent", "bump", "pit", "crack", "chip", "ridge", "porosity",
)

#: defect types outside the library: drawn only when named (``types=``), never by default, so
#: a model trained on the library can be tested on kinds it never saw
HELD_OUT_TYPES: tuple[str, ...] = ("gouge", "chatter", "lap", "spatter", "blister", "crater",
                                   "scuff")

#: the held-out types added after geo-seg's ``p_transplant`` was designed (see above)
SECOND_HELD_OUT_TYPES: tuple[str, ...] = ("blister", "crater", "scuff")

#: severity = depth / width; named ranges [low, high) used for sampling and reporting
SEVERITY_LEVELS: dict[str, tuple[float, float]] = {
    "low": (0.02, 0.06),
    "medium": (0.06, 0.15),
    "high": (0.15, 0.40),
}

#: the largest severity accepted from the command line (2.5x the top of 'high')
MAX_SEVERITY = 1.0
#: most defects implanted into one map or rendered part (``defects --per-image``, ``render
#: --max-defects``): more only takes time and hides the surface
MAX_DEFECTS = 100

#: sub-pixel samples per axis when evaluating a height field (box filter = pixel integration)
SUPERSAMPLE = 3

#: a defect that turns fewer object pixels than this past min_angle is re-drawn
MIN_VISIBLE_PIXELS = 4

#: attempts to draw a visible defect before giving up
MAX_ATTEMPTS = 25


@dataclass
class DefectSpec:
    """One defect: its ``type`` (one of :data:`DEFECT_TYPES` or :data:`HELD_OUT_TYPES`), shape
    ``params`` (see the module docstring; JSON-friendly: floats, strings, nested lists) and
    ``severity`` (depth / width)."""

    type: str
    params: dict[str, Any] = field(default_factory=dict)
    severity: float = 0.1

    @property
    def level(self) -> str:
        """Name of the severity range holding the severity ("low", "medium", "high")."""
        return severity_level(self.severity)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable)."""
        d = asdict(self)
        d["level"] = self.level
        return d


def severity_level(severity: float) -> str:
    """Name of the :data:`SEVERITY_LEVELS` range holding ``severity`` (clamped to the ends)."""
    if severity < SEVERITY_LEVELS["medium"][0]:
        return "low"
    if severity < SEVERITY_LEVELS["high"][0]:
        return "medium"
    return "high"


def parse_severity(text: str | None) -> float | tuple[float, float] | str | None:
    """Parse a CLI severity: ``None``, a level name, a number ``"0.1"`` or a range ``"0.05-0.2"``.

    Raises :class:`PsinspectError` naming ``--severity`` for anything else.
    """
    if text is None or text == "":
        return None
    t = text.strip().lower()
    if t in SEVERITY_LEVELS:
        return t
    try:
        try:
            v = float(t)  # a number first: "1e-3" is not a range
        except ValueError:
            v = None
        if v is None and "-" in t.lstrip("-") and not t.startswith("-"):
            lo, hi = (float(x) for x in t.split("-", 1))
            if not 0 < lo <= hi <= MAX_SEVERITY:
                raise ValueError
            return (lo, hi)
        if v is None or not 0 < v <= MAX_SEVERITY:  # also refuses nan
            raise ValueError
        return v
    except ValueError:
        raise PsinspectError(
            f"--severity: expected a level ({', '.join(SEVERITY_LEVELS)}), a number in "
            f"(0, {MAX_SEVERITY:g}] or a range like 0.05-0.2, got {text!r} (depth as a fraction "
            "of the defect's size; 'high' is 0.15-0.40, far steeper ones turn normals away "
            "from the camera)"
        ) from None


def check_types(types: Sequence[str] | None) -> tuple[str, ...]:
    """Validate defect type names (``None`` = every type of the library,
    :data:`DEFECT_TYPES`; :data:`HELD_OUT_TYPES` only by name); raises :class:`PsinspectError`."""
    if types is None or len(types) == 0:
        return DEFECT_TYPES
    known = DEFECT_TYPES + HELD_OUT_TYPES
    bad = [t for t in types if t not in known]
    if bad:
        raise PsinspectError(
            f"--types: unknown defect type(s) {', '.join(bad)}; known: {', '.join(known)}"
        )
    return tuple(types)


# ------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------


def _draw_severity(rng: np.random.Generator, severity: Any) -> float:
    if severity is None:
        level = list(SEVERITY_LEVELS)[int(rng.integers(len(SEVERITY_LEVELS)))]
        lo, hi = SEVERITY_LEVELS[level]
        return float(rng.uniform(lo, hi))
    if isinstance(severity, str):
        if severity not in SEVERITY_LEVELS:
            raise PsinspectError(f"severity: unknown level {severity!r}")
        lo, hi = SEVERITY_LEVELS[severity]
        return float(rng.uniform(lo, hi))
    if isinstance(severity, (tuple, list)):
        lo, hi = float(severity[0]), float(severity[1])
        return float(rng.uniform(lo, hi))
    return float(severity)


def _pick_center(
    rng: np.random.Generator, mask: np.ndarray, margin: float
) -> tuple[float, float]:
    """A random object pixel at least ``margin`` from the background where possible (x, y)."""
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ok = dist >= min(margin, 0.5 * float(dist.max()))
    rows, cols = np.nonzero(ok)
    i = int(rng.integers(len(rows)))
    return float(cols[i] + rng.uniform(-0.5, 0.5)), float(rows[i] + rng.uniform(-0.5, 0.5))


def _walk(
    rng: np.random.Generator, start: tuple[float, float], angle: float, length: float,
    step: float, wiggle_deg: float,
) -> list[list[float]]:
    """Random-walk polyline from ``start`` heading ``angle`` (radians, image x/y)."""
    pts = [[start[0], start[1]]]
    n = max(2, int(math.ceil(length / step)))
    a = angle
    for _ in range(n):
        a += math.radians(float(rng.normal(0.0, wiggle_deg)))
        x, y = pts[-1]
        pts.append([x + step * math.cos(a), y + step * math.sin(a)])
    return pts


def sample_defect(
    rng: np.random.Generator,
    shape_hw: tuple[int, int],
    mask: np.ndarray | None = None,
    *,
    types: Sequence[str] | None = None,
    severity: float | tuple[float, float] | str | None = None,
) -> DefectSpec:
    """Draw one random defect placed on the object.

    ``shape_hw``: image (H, W); ``mask``: (H, W) bool object mask (``None`` = whole image);
    ``types``: allowed types (default all of :data:`DEFECT_TYPES`); ``severity``: a number, a
    ``(lo, hi)`` range, a level name, or ``None`` (a random level, then uniform inside it).
    Sizes scale with the object (``sqrt`` of its area) within the ranges in the module docstring.
    """
    h, w = int(shape_hw[0]), int(shape_hw[1])
    mask = np.ones((h, w), bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != (h, w):
        raise PsinspectError(f"defect mask shape {mask.shape} != image shape {(h, w)}")
    if not mask.any():
        raise PsinspectError("cannot place a defect: the object mask is empty")
    allowed = check_types(types)
    kind = allowed[int(rng.integers(len(allowed)))]
    sev = _draw_severity(rng, severity)
    size = math.sqrt(float(mask.sum()))  # object scale, pixels
    p: dict[str, Any] = {}
    if kind in ("scratch", "ridge"):
        width = float(rng.uniform(1.0, 6.0) if kind == "scratch" else rng.uniform(2.0, 7.0))
        length = float(np.clip(rng.uniform(0.12, 0.5) * size, 10.0, 0.8 * max(h, w)))
        cx, cy = _pick_center(rng, mask, 0.1 * size)
        ang = float(rng.uniform(0, math.pi))
        bend = float(rng.uniform(-0.25, 0.25)) * length if rng.random() < 0.5 else 0.0
        d = np.array([math.cos(ang), math.sin(ang)])
        perp = np.array([-d[1], d[0]])
        c = np.array([cx, cy])
        p0, p2 = c - 0.5 * length * d, c + 0.5 * length * d
        p1 = c + bend * perp  # quadratic Bezier control point (bent scratch)
        t = np.linspace(0.0, 1.0, 24)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        p["points"] = [[float(a), float(b)] for a, b in pts]
        p["width"] = width
        if kind == "scratch":
            p["profile"] = "V" if rng.random() < 0.5 else "U"
            p["depth"] = sev * width
        else:
            p["profile"] = "U"
            p["height"] = sev * width
    elif kind == "crack":
        width = float(rng.uniform(1.0, 2.5))
        cx, cy = _pick_center(rng, mask, 0.1 * size)
        length = float(np.clip(rng.uniform(0.1, 0.3) * size, 10.0, 0.6 * max(h, w)))
        ang = float(rng.uniform(0, 2 * math.pi))
        trunk = _walk(rng, (cx, cy), ang, length, 3.0, 18.0)
        branches = [trunk]
        for _ in range(int(rng.integers(1, 4))):
            j = int(rng.integers(1, len(trunk) - 1))
            seg = np.subtract(trunk[j + 1], trunk[j - 1])
            base = math.atan2(seg[1], seg[0])
            off = math.radians(float(rng.uniform(25, 60))) * (1 if rng.random() < 0.5 else -1)
            branches.append(_walk(rng, tuple(trunk[j]), base + off,
                                  float(rng.uniform(0.2, 0.5)) * length, 3.0, 22.0))
        p["branches"] = [[[float(a), float(b)] for a, b in br] for br in branches]
        p["width"] = width
        p["depth"] = sev * width
    elif kind in ("dent", "bump"):
        radius = float(np.clip(rng.uniform(0.03, 0.1) * size, 4.0, 40.0))
        cx, cy = _pick_center(rng, mask, radius)
        p.update(center=[cx, cy], radius=radius, aspect=float(rng.uniform(0.5, 1.0)),
                 angle_deg=float(rng.uniform(0, 180)))
        p["depth" if kind == "dent" else "height"] = sev * 2 * radius
    elif kind == "pit":
        radius = float(rng.uniform(1.5, 4.0))
        cx, cy = _pick_center(rng, mask, 2 * radius)
        p.update(center=[cx, cy], radius=radius, depth=sev * 2 * radius)
    elif kind == "chip":
        radius = float(np.clip(rng.uniform(0.02, 0.06) * size, 3.0, 20.0))
        cx, cy = _pick_center(rng, mask, radius)
        nv = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * math.pi, nv))
        rad = radius * rng.uniform(0.6, 1.0, nv)
        p.update(center=[cx, cy], radius=radius,
                 vertices=[[float(r * math.cos(a)), float(r * math.sin(a))]
                           for a, r in zip(angles, rad, strict=True)],
                 wall=float(rng.uniform(1.0, 2.5)), depth=sev * 2 * radius)
    elif kind in ("porosity", "spatter"):  # a cluster of small pits / raised droplets
        spread = float(np.clip(rng.uniform(0.03, 0.08) * size, 5.0, 25.0))
        cx, cy = _pick_center(rng, mask, spread)
        lo, hi, r_max, key = ((4, 13, 2.5, "depths") if kind == "porosity"
                              else (3, 11, 3.0, "heights"))
        n = int(rng.integers(lo, hi))
        r = rng.uniform(1.0, r_max, n)
        off = rng.normal(0.0, spread / 2, (n, 2))
        p.update({"centers": [[float(cx + a), float(cy + b)] for a, b in off],
                  "radii": [float(v) for v in r], key: [float(sev * 2 * v) for v in r]})
    elif kind == "gouge":
        width = float(rng.uniform(2.0, 8.0))
        length = float(np.clip(rng.uniform(0.1, 0.4) * size, 10.0, 0.8 * max(h, w)))
        cx, cy = _pick_center(rng, mask, 0.1 * size)
        ang = float(rng.uniform(0, 2 * math.pi))  # its direction matters: it deepens along it
        dx, dy = 0.5 * length * math.cos(ang), 0.5 * length * math.sin(ang)
        p.update(points=[[cx - dx, cy - dy], [cx + dx, cy + dy]], width=width,
                 depth=sev * width, start=float(rng.uniform(0.2, 0.6)),
                 lip=float(rng.uniform(0.25, 0.5)), lip_width=float(rng.uniform(0.6, 1.2)))
    elif kind == "chatter":
        length = float(np.clip(rng.uniform(0.1, 0.35) * size, 12.0, 0.7 * max(h, w)))
        period = float(rng.uniform(3.0, 10.0))
        cx, cy = _pick_center(rng, mask, 0.05 * size)
        p.update(center=[cx, cy], angle_deg=float(rng.uniform(0, 180)), length=length,
                 band=float(rng.uniform(5.0, 16.0)), period=period, depth=sev * period / 2)
    elif kind == "lap":
        length = float(np.clip(rng.uniform(0.08, 0.3) * size, 10.0, 0.6 * max(h, w)))
        rise = float(rng.uniform(1.5, 4.0))
        cx, cy = _pick_center(rng, mask, 0.05 * size)
        p.update(center=[cx, cy], angle_deg=float(rng.uniform(0, 360)), length=length,
                 rise=rise, reach=float(rng.uniform(8.0, 24.0)), height=sev * rise)
    elif kind == "blister":
        radius = float(np.clip(rng.uniform(0.02, 0.06) * size, 3.0, 20.0))
        cx, cy = _pick_center(rng, mask, radius)
        p.update(center=[cx, cy], radius=radius, rim=float(rng.uniform(1.0, 3.0)),
                 height=sev * 2 * radius)
    elif kind == "crater":
        radius = float(rng.uniform(2.0, 6.0))
        cx, cy = _pick_center(rng, mask, 3 * radius)
        p.update(center=[cx, cy], radius=radius, depth=sev * 2 * radius,
                 lip=float(rng.uniform(0.2, 0.5)), lip_width=float(rng.uniform(0.3, 0.7)))
    elif kind == "scuff":
        length = float(np.clip(rng.uniform(0.06, 0.2) * size, 10.0, 0.5 * max(h, w)))
        band = float(rng.uniform(4.0, 14.0))
        cx, cy = _pick_center(rng, mask, 0.05 * size)
        n = int(rng.integers(4, 13))
        frac = rng.uniform(0.3, 0.6, n)  # each line's share of the band's length
        starts = (rng.uniform(0.0, 1.0, n) * (1.0 - frac) - 0.5) * length
        widths = rng.uniform(1.0, 2.0, n)
        p.update(center=[cx, cy], angle_deg=float(rng.uniform(0, 180)), length=length,
                 band=band, offsets=[float(v) for v in rng.uniform(-band / 2, band / 2, n)],
                 spans=[[float(a), float(a + f * length)]
                        for a, f in zip(starts, frac, strict=True)],
                 widths=[float(v) for v in widths],
                 depths=[float(sev * v * f) for v, f in
                         zip(widths, rng.uniform(0.5, 1.0, n), strict=True)])
    else:  # pragma: no cover - check_types guards
        raise PsinspectError(f"unknown defect type {kind!r}")
    return DefectSpec(type=kind, params=p, severity=sev)


#: the line-shaped defect types (their geometry is a polyline, or a tree of them)
LINE_TYPES: tuple[str, ...] = ("scratch", "ridge", "crack")


def turn_line(spec: DefectSpec, angle: float) -> DefectSpec:
    """The same line-shaped defect (:data:`LINE_TYPES`) turned about the middle of its main
    polyline (a crack's trunk) so that the chord of that polyline points along ``angle``
    (radians, image coordinates: ``(cos, sin)`` in (column, row)); other types unchanged.
    Returns a new spec."""
    if spec.type not in LINE_TYPES:
        return spec
    lines = spec.params["branches"] if spec.type == "crack" else [spec.params["points"]]
    main = np.asarray(lines[0], float)
    chord = main[-1] - main[0]
    turn = angle - math.atan2(chord[1], chord[0])
    c, s = math.cos(turn), math.sin(turn)
    rot = np.array([[c, -s], [s, c]])
    mid = 0.5 * (main[0] + main[-1])
    turned = [[[float(a), float(b)] for a, b in (np.asarray(li, float) - mid) @ rot.T + mid]
              for li in lines]
    params = dict(spec.params)
    if spec.type == "crack":
        params["branches"] = turned
    else:
        params["points"] = turned[0]
    return DefectSpec(type=spec.type, params=params, severity=spec.severity)


def line_center(spec: DefectSpec) -> tuple[float, float]:
    """Middle of the chord of a line-shaped defect's main polyline (x, y), image coordinates."""
    lines = spec.params["branches"] if spec.type == "crack" else [spec.params["points"]]
    a, b = lines[0][0], lines[0][-1]
    return 0.5 * (a[0] + b[0]), 0.5 * (a[1] + b[1])


# ------------------------------------------------------------------------------------------
# height fields
# ------------------------------------------------------------------------------------------


def _dist_to_polyline(points: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distance from each (x, y) sample to a polyline (N, 2)."""
    best = np.full(x.shape, np.inf)
    for a, b in zip(points[:-1], points[1:], strict=True):
        d = b - a
        ll = float(d @ d)
        if ll == 0:
            t = np.zeros_like(x)
        else:
            t = np.clip(((x - a[0]) * d[0] + (y - a[1]) * d[1]) / ll, 0.0, 1.0)
        dx = x - (a[0] + t * d[0])
        dy = y - (a[1] + t * d[1])
        best = np.minimum(best, dx * dx + dy * dy)
    return np.sqrt(best)


def _groove(dist: np.ndarray, half: float, profile: str) -> np.ndarray:
    """Unit cross-section (1 on the axis, 0 at ``half`` and beyond)."""
    u = np.clip(dist / half, 0.0, 1.0)
    if profile == "V":
        return 1.0 - u
    return np.sqrt(1.0 - u * u)  # round bottom ("U": circular-arc section)


def _point_in_polygon(poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    inside = np.zeros(x.shape, bool)
    n = len(poly)
    for i in range(n):
        x0, y0 = poly[i]
        x1, y1 = poly[(i + 1) % n]
        cond = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= cond & (x < xc)
    return inside


def _dist_to_polygon_edges(poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    closed = np.vstack([poly, poly[:1]])
    return _dist_to_polyline(closed, x, y)


def _extent(spec: DefectSpec) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of the defect's support, in pixels."""
    p = spec.params
    t = spec.type
    if t in ("scratch", "ridge", "crack"):
        pts = np.array(
            [q for br in p["branches"] for q in br] if t == "crack" else p["points"], float
        )
        r = p["width"] / 2 + 1
        return pts[:, 0].min() - r, pts[:, 1].min() - r, pts[:, 0].max() + r, pts[:, 1].max() + r
    if t == "gouge":
        pts = np.array(p["points"], float)
        r = p["width"] / 2 * (1 + p["lip_width"]) + 1
        return pts[:, 0].min() - r, pts[:, 1].min() - r, pts[:, 0].max() + r, pts[:, 1].max() + r
    if t in ("porosity", "spatter"):
        c = np.array(p["centers"], float)
        r = max(p["radii"]) + 1
        return c[:, 0].min() - r, c[:, 1].min() - r, c[:, 0].max() + r, c[:, 1].max() + r
    cx, cy = p["center"]
    if t in ("chatter", "scuff"):
        r = math.hypot(p["length"] / 2, p["band"] / 2) + 2
    elif t == "crater":
        r = p["radius"] * (1 + p["lip_width"]) + 2
    elif t == "lap":
        r = math.hypot(p["length"] / 2, p["reach"]) + 1
    else:
        r = p["radius"] + 2
    return cx - r, cy - r, cx + r, cy + r


def _local_frame(center: Sequence[float], angle_deg: float, x: np.ndarray, y: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) of the samples in a frame at ``center`` whose u axis points along
    ``angle_deg`` (counter-clockwise from +x as seen: image y grows downward, so y is flipped)."""
    cx, cy = center
    a = math.radians(angle_deg)
    u = (x - cx) * math.cos(a) - (y - cy) * math.sin(a)
    v = (x - cx) * math.sin(a) + (y - cy) * math.cos(a)
    return u, v


def _hann(z: np.ndarray) -> np.ndarray:
    """Hann window: cos^2(pi z / 2) for |z| < 1, 0 beyond (1 at 0, smooth to 0 at |z| = 1)."""
    return np.where(np.abs(z) < 1.0, np.cos(0.5 * np.pi * np.clip(z, -1.0, 1.0)) ** 2, 0.0)


def _smoothstep(z: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, 3 z^2 - 2 z^3 between (slope 0 at both ends, at most 1.5)."""
    s = np.clip(z, 0.0, 1.0)
    return s * s * (3 - 2 * s)


def _evaluate(spec: DefectSpec, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (pixel units, + out of the material) at sample positions x, y (image coords)."""
    p = spec.params
    t = spec.type
    if t in ("scratch", "ridge"):
        prof = _groove(_dist_to_polyline(np.asarray(p["points"], float), x, y),
                       p["width"] / 2, p.get("profile", "V"))
        return -p["depth"] * prof if t == "scratch" else p["height"] * prof
    if t == "crack":
        d = np.full(x.shape, np.inf)
        for br in p["branches"]:
            d = np.minimum(d, _dist_to_polyline(np.asarray(br, float), x, y))
        return -p["depth"] * _groove(d, p["width"] / 2, "V")
    if t in ("dent", "bump"):
        u, v = _local_frame(p["center"], p["angle_deg"], x, y)
        rho = np.sqrt((u / p["radius"]) ** 2 + (v / (p["radius"] * p["aspect"])) ** 2)
        bell = np.where(rho < 1.0, 0.5 * (1.0 + np.cos(np.pi * np.minimum(rho, 1.0))), 0.0)
        return -p["depth"] * bell if t == "dent" else p["height"] * bell
    if t == "pit":
        cx, cy = p["center"]
        rho2 = ((x - cx) ** 2 + (y - cy) ** 2) / p["radius"] ** 2
        return -p["depth"] * np.clip(1.0 - rho2, 0.0, None)
    if t in ("porosity", "spatter"):  # the deepest pit / the highest droplet at each sample
        sign, amps = (-1.0, p["depths"]) if t == "porosity" else (1.0, p["heights"])
        out = np.zeros(x.shape)
        for (cx, cy), r, amp in zip(p["centers"], p["radii"], amps, strict=True):
            rho2 = ((x - cx) ** 2 + (y - cy) ** 2) / r**2
            out = np.maximum(out, amp * np.clip(1.0 - rho2, 0.0, None))
        return sign * out
    if t == "chip":
        cx, cy = p["center"]
        poly = np.asarray(p["vertices"], float) + np.array([cx, cy])
        inside = _point_in_polygon(poly, x, y)
        d = _dist_to_polygon_edges(poly, x, y)
        ramp = _smoothstep(d / p["wall"])  # smoothstep wall, flat floor
        return np.where(inside, -p["depth"] * ramp, 0.0)
    if t == "gouge":
        (ax, ay), (bx, by) = p["points"]
        dx, dy = bx - ax, by - ay
        ll = max(dx * dx + dy * dy, 1e-12)
        along = np.clip(((x - ax) * dx + (y - ay) * dy) / ll, 0.0, 1.0)  # 0 first, 1 last point
        dist = np.hypot(x - (ax + along * dx), y - (ay + along * dy))
        half = p["width"] / 2
        depth = p["depth"] * (p["start"] + (1.0 - p["start"]) * along)
        z = np.clip((dist - half) / (p["lip_width"] * half), 0.0, 1.0)  # 0 at the rim
        lips = np.where(dist > half, 0.5 * (1.0 - np.cos(2 * np.pi * z)), 0.0)
        return depth * (p["lip"] * lips - _groove(dist, half, "V"))
    if t == "chatter":
        u, v = _local_frame(p["center"], p["angle_deg"], x, y)
        ripple = 0.5 * p["depth"] * np.cos(2 * np.pi * u / p["period"])
        return ripple * _hann(u / (p["length"] / 2)) * _hann(v / (p["band"] / 2))
    if t == "lap":
        u, v = _local_frame(p["center"], p["angle_deg"], x, y)
        half = p["length"] / 2
        edge = _smoothstep(v / p["rise"])
        fade = 0.5 * (1 + np.cos(np.pi * np.clip((v - p["rise"]) / (p["reach"] - p["rise"]),
                                                 0.0, 1.0)))
        ends = _smoothstep((half - np.abs(u)) / (0.3 * half))
        return p["height"] * edge * fade * ends
    if t == "blister":
        cx, cy = p["center"]
        rho = np.hypot(x - cx, y - cy)
        top = 1.0 - 0.3 * np.clip(rho / p["radius"], 0.0, 1.0) ** 2  # a nearly flat top
        return p["height"] * top * _smoothstep((p["radius"] - rho) / p["rim"])
    if t == "crater":
        cx, cy = p["center"]
        rho = np.hypot(x - cx, y - cy) / p["radius"]
        bowl = np.clip(1.0 - rho**2, 0.0, None)
        rim = _hann((rho - 1.0) / p["lip_width"])
        return p["depth"] * (p["lip"] * rim - bowl)
    if t == "scuff":
        u, v = _local_frame(p["center"], p["angle_deg"], x, y)
        out = np.zeros(x.shape)
        for off, (a, b), wd, dp in zip(p["offsets"], p["spans"], p["widths"], p["depths"],
                                       strict=True):
            along = np.clip(u, a, b)  # distance to the line segment from (a, off) to (b, off)
            dist = np.hypot(u - along, v - off)
            out = np.minimum(out, -dp * _groove(dist, wd / 2, "V"))
        return out
    raise PsinspectError(f"unknown defect type {t!r}")


def height_field(spec: DefectSpec, shape_hw: tuple[int, int]) -> np.ndarray:
    """Height change of one defect over an (H, W) image, ``float32``, pixel units (+ = out of
    the material, toward the camera on a frontal surface); zero away from the defect.

    Each pixel holds the mean over its area (``SUPERSAMPLE``^2 sub-samples), as a camera pixel
    would integrate a feature narrower than itself.
    """
    h, w = int(shape_hw[0]), int(shape_hw[1])
    out = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = _extent(spec)
    c0, r0 = max(0, int(math.floor(x0)) - 1), max(0, int(math.floor(y0)) - 1)
    c1, r1 = min(w, int(math.ceil(x1)) + 2), min(h, int(math.ceil(y1)) + 2)
    if c0 >= c1 or r0 >= r1:
        return out
    s = SUPERSAMPLE
    offs = (np.arange(s) + 0.5) / s - 0.5
    cols = (np.arange(c0, c1)[:, None] + offs[None, :]).ravel()
    rows = (np.arange(r0, r1)[:, None] + offs[None, :]).ravel()
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    vals = _evaluate(spec, xx, yy)
    vals = vals.reshape(r1 - r0, s, c1 - c0, s).mean(axis=(1, 3))
    out[r0:r1, c0:c1] = vals.astype(np.float32)
    return out


# ------------------------------------------------------------------------------------------
# applying height changes to normals
# ------------------------------------------------------------------------------------------


def apply_height(
    normals: np.ndarray, mask: np.ndarray, height: np.ndarray, *, along: str = "normal"
) -> np.ndarray:
    """Normals of the surface after adding the height change ``height`` to it.

    ``normals``: (H, W, 3) unit vectors, DiLiGenT frame (x right, y up, z toward the camera);
    ``mask``: (H, W) bool object mask; ``height``: (H, W) pixel units, laid out on the image
    grid. With ``e = (dh/dx, dh/dy, 0)`` (``dh/dy = -dh/drow``):

    * ``along="normal"`` (default): the surface is displaced by ``h`` along its own normal, so
      a dent goes into the material on a tilted surface too. To first order
      ``n' = normalize(n - P_n e)`` with ``P_n = I - n n^T`` the tangent-plane projection:
      the gradient of ``h`` taken on the surface. These are the displaced surface's normals
      written at the pixel of the undisplaced point: exact on a frontal plane; on a tilted
      surface the displaced point moves sideways by ``h`` times the normal's tilt, so the map
      is not exactly the normal map of one height field (a walkthrough: curl of its slopes up
      to 0.18 on a plane tilted by about 20 deg, a least-squares surface fitting it to 6 deg
      where ``along="view"`` fits to the grid's own 2 deg).
    * ``along="view"``: ``h`` is added to the depth map ``z(x, y)``: the gradient
      ``(p, q) = (-nx/nz, -ny/nz)`` becomes ``(p + dh/dx, q + dh/dy)``, i.e.
      ``n' = normalize(n - nz e)`` (exact for any surface; on steep regions the change fades).

    Both agree on a frontal surface. Returns ``float32 (H, W, 3)``: unit inside ``mask``,
    zero outside; pixels where ``h`` is flat keep their normal.
    """
    n = np.asarray(normals, np.float64)
    mask = np.asarray(mask, bool)
    gx, gy = height_gradient(height)
    e = np.stack([gx, gy, np.zeros_like(gx)], axis=-1).astype(np.float64)
    if along == "normal":
        e_t = e - np.sum(e * n, axis=-1, keepdims=True) * n
        out = n - e_t
    elif along == "view":
        out = n - n[..., 2:3] * e
    else:
        check_along(along)
    length = np.linalg.norm(out, axis=-1, keepdims=True)
    out = np.where(length > 1e-12, out / np.maximum(length, 1e-12), 0.0)
    flat = (gx == 0) & (gy == 0)
    out[flat] = n[flat]
    out[~mask] = 0.0
    return out.astype(np.float32)


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between vectors of ``a`` and ``b`` (``(..., 3)``), float64 and precise
    for small angles (``atan2(|a x b|, a . b)``)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    return np.degrees(np.arctan2(cross, np.sum(a * b, axis=-1)))


def _record(spec: DefectSpec, changed: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    own = changed & gt
    if not own.any():
        own = changed
    rows, cols = np.nonzero(own)
    bbox = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
    rec = spec.to_dict()
    rec["bbox"] = bbox
    rec["area"] = int((changed & gt).sum())
    return rec


def check_min_angle(min_angle: float) -> None:
    """Raise :class:`PsinspectError` unless ``min_angle`` (the ground-truth angle) is a finite
    number of degrees in (0, 90): a defect that turned a flat part's normals by 90 degrees or
    more would turn them away from the camera."""
    if not (math.isfinite(min_angle) and 0 < min_angle < 90):
        raise PsinspectError(
            f"--min-angle must be a number of degrees between 0 and 90, got {min_angle}")


def check_along(along: str) -> None:
    """Raise :class:`PsinspectError` unless ``along`` is 'normal' or 'view'."""
    if along not in ("normal", "view"):
        raise PsinspectError(f"--along must be 'normal' or 'view', got {along!r}")


def _implant(
    base: np.ndarray, mask: np.ndarray, rng: np.random.Generator, apply: Any, *, count: int,
    types: Sequence[str] | None, severity: Any, min_angle: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Shared loop: draw ``count`` visible defects, sum their heights, apply once."""
    if count < 0:
        raise PsinspectError(f"defect count must be >= 0, got {count}")
    check_min_angle(min_angle)
    check_types(types)
    shape = mask.shape
    total = np.zeros(shape, np.float32)
    placed: list[tuple[DefectSpec, np.ndarray]] = []
    for k in range(count):
        for _ in range(MAX_ATTEMPTS):
            spec = sample_defect(rng, shape, mask, types=types, severity=severity)
            h = height_field(spec, shape)
            changed = (angle_deg(base, apply(h)) > min_angle) & mask
            if changed.sum() >= MIN_VISIBLE_PIXELS:
                break
        else:
            raise PsinspectError(
                f"could not place defect {k + 1} of {count}: none of {MAX_ATTEMPTS} draws changed "
                f"{MIN_VISIBLE_PIXELS}+ object pixels by more than {min_angle} degrees "
                "(object too small, or severity too low?)"
            )
        total += h
        placed.append((spec, changed))
    final = apply(total)
    gt = (angle_deg(base, final) > min_angle) & mask
    records = [_record(spec, changed, gt) for spec, changed in placed]
    return final, gt, total, records


def implant_defects(
    normals: np.ndarray,
    mask: np.ndarray | None,
    rng: np.random.Generator,
    *,
    count: int = 1,
    types: Sequence[str] | None = None,
    severity: float | tuple[float, float] | str | None = None,
    min_angle: float = 2.0,
    along: str = "normal",
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Add ``count`` random defects to a normal map.

    ``normals``: (H, W, 3) float, DiLiGenT frame, unit inside ``mask`` (default: non-zero
    vectors), zero outside. Each defect is drawn by :func:`sample_defect` and re-drawn until it
    turns at least :data:`MIN_VISIBLE_PIXELS` object pixels by more than ``min_angle``; their
    height fields are summed and applied once with :func:`apply_height`.

    Returns ``(normals float32 (H, W, 3), gt bool (H, W), records)``: ``gt`` holds exactly the
    object pixels whose normal turned by more than ``min_angle`` degrees; each record has
    ``type, params, severity, level, bbox [x0, y0, x1, y1]`` (columns/rows, end exclusive) and
    ``area`` (its own changed pixels that are in ``gt``).
    """
    n, m = validate_normal_map(normals, mask)
    n64 = n.astype(np.float64)

    def apply(h: np.ndarray) -> np.ndarray:
        return apply_height(n64, m, h, along=along)

    final, gt, _, records = _implant(n, m, rng, apply, count=count, types=types,
                                     severity=severity, min_angle=min_angle)
    return final, gt, records


def implant_defects_height(
    height: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    count: int = 1,
    types: Sequence[str] | None = None,
    severity: float | tuple[float, float] | str | None = None,
    min_angle: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Add ``count`` random defects to a HEIGHT map (for rendering: defects before shading).

    ``height``: (H, W) depth map ``z(x, y)`` in pixel units; ``mask``: (H, W) bool object.
    The defect heights are added to ``z`` (the ``"view"`` convention of :func:`apply_height`).
    Returns ``(height' float32 (H, W), gt bool (H, W), records)``, with ``gt`` = object pixels
    whose normal (:func:`psinspect.normalmap.normals_from_height`) turned by more than
    ``min_angle`` degrees; records as in :func:`implant_defects`.
    """
    z = np.asarray(height, np.float32)
    m = np.asarray(mask, bool)
    base = normals_from_height(z, m)

    def apply(h: np.ndarray) -> np.ndarray:
        return normals_from_height(z + h, m)

    _, gt, total, records = _implant(base, m, rng, apply, count=count, types=types,
                                     severity=severity, min_angle=min_angle)
    return (z + total).astype(np.float32), gt, records


def read_defect_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The defect records of a ``defects.json`` (as :mod:`psinspect.render` writes it beside
    a capture's ``M_defect.png``; ``"defects": null`` reads as none); a malformed one is a
    :class:`PsinspectError`."""
    try:
        records = read_json(path)["defects"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise PsinspectError(f"{path}: unreadable defect records ({err})") from None
    bad = defect_records_problem(records)
    if bad:
        raise PsinspectError(f"{path}: malformed 'defects' ({bad})")
    return records or []


def defect_records_problem(records: Any) -> str | None:
    """What is wrong with a list of defect records (a ``defects.json``'s, a dataset item's;
    None: nothing): a list (or null) of objects whose ``type`` and ``level`` are texts or
    null, ``severity`` a finite number, a text or null, and ``bbox`` null or four numbers
    ``[x0, y0, x1, y1]`` (evaluate's breakdowns read them)."""
    from psinspect.checks import is_number

    if records is None:
        return None
    if not isinstance(records, list):
        return f"a list of records expected, got {records!r:.60}"
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            return f"record {i + 1} is {rec!r:.60}, not an object"
        for key in ("type", "level"):
            if not isinstance(rec.get(key), (str, type(None))):
                return f"record {i + 1}: {key} {rec[key]!r:.60} is not a text"
        sev = rec.get("severity")
        if not (sev is None or isinstance(sev, str) or is_number(sev)):
            return f"record {i + 1}: severity {sev!r:.60} is not a finite number"
        box = rec.get("bbox")
        if box is not None and not (isinstance(box, list) and len(box) == 4
                                    and all(is_number(v) for v in box)):
            return f"record {i + 1}: bbox {box!r:.60} is not four numbers [x0, y0, x1, y1]"
    return None

