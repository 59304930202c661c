"""Pictures and reports: heatmaps, 5-panel figures, ROC / PRO curves, the HTML report.

Images are RGB ``uint8``. Panels are composed with OpenCV (fast enough to write one per detected
map); curves use matplotlib's Agg backend (no display). The HTML report is one self-contained
file: images are embedded as base64 PNG, no scripts, no external resources.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from psinspect.normalmap import encode_png, read_mask_png

TILE_TITLE_PX = 22


def heatmap_rgb(score: np.ndarray, mask: np.ndarray, threshold: float) -> np.ndarray:
    """Score map as an RGB heat map (inferno): 0 -> black, ``threshold`` -> mid-scale,
    ``2 * threshold`` and above -> brightest (at ``threshold`` 0, where every object pixel is
    marked, the map's own highest score); background black. (H, W) -> (H, W, 3) uint8."""
    scale = 2.0 * threshold if threshold > 0 else max(float(score[mask].max()), 1e-6) \
        if mask.any() else 1.0
    v = np.clip(score / scale, 0.0, 1.0)
    img = cv2.applyColorMap((v * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img[~mask] = 0
    return img


def overlay_mask_rgb(normals: np.ndarray, mask: np.ndarray, pred: np.ndarray,
                     color: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """Grey shading of the normal map (n_z) with ``pred`` painted in ``color``."""
    grey = np.clip(normals[..., 2] * 200 + 30, 0, 255).astype(np.uint8)
    img = np.repeat(grey[..., None], 3, axis=2)
    img[~mask] = 0
    img[pred] = color
    return img


def _titled(img: np.ndarray, title: str, width: int, height: int) -> np.ndarray:
    """Fit ``img`` into (height, width) keeping aspect ratio, with a title bar on top."""
    h, w = img.shape[:2]
    s = min(width / w, height / h)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_NEAREST
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    canvas = np.full((height + TILE_TITLE_PX, width, 3), 255, np.uint8)
    top = TILE_TITLE_PX + (height - nh) // 2
    left = (width - nw) // 2
    canvas[top:top + nh, left:left + nw] = small
    cv2.putText(canvas, title, (4, TILE_TITLE_PX - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def panel_rgb(
    normals: np.ndarray,
    mask: np.ndarray,
    reference: np.ndarray | None,
    score: np.ndarray,
    pred: np.ndarray,
    threshold: float,
    gt: np.ndarray | None = None,
    *,
    tile: int = 256,
    reference_title: str = "reference",
) -> np.ndarray:
    """Side-by-side panel: input | reference | error map | predicted mask | ground truth.

    The ground-truth tile is left out when ``gt`` is None. The tiles show the object's
    bounding box with a margin (inside the map), not the whole map: a part in the middle of a
    large frame fills its tiles. Where a tile shrinks the object, the error map and the masks
    keep the highest score and any marked pixel of each block shrunk into one pixel (area
    averaging left two faint pixels of a failing part's 99 px defect in a 2048 px frame).
    Returns RGB uint8.
    """
    import math

    from psinspect.normalmap import object_window

    mask = np.asarray(mask, bool)
    h, w = mask.shape
    win = object_window(mask, 0)
    if win is not None:  # a margin of 5 % of the part, inside the map (not padded)
        margin = max(8, round(0.05 * max(win[1] - win[0], win[3] - win[2])))
        win = (win[0] - margin, win[1] + margin, win[2] - margin, win[3] + margin)
        crop = (slice(max(win[0], 0), min(win[1], h)), slice(max(win[2], 0), min(win[3], w)))
        normals, mask, score, pred = normals[crop], mask[crop], score[crop], pred[crop]
        reference = None if reference is None else reference[crop]
        gt = None if gt is None else gt[crop]
    k = math.ceil(max(mask.shape) / tile)  # (pixels shrunk into one, per side)
    if k > 1:  # (2k - 1: a mark then fills at least one whole block, wherever it lies)
        box = np.ones((2 * k - 1, 2 * k - 1), np.uint8)
        score = np.where(mask, cv2.dilate(np.where(mask, score, 0).astype(np.float32), box),
                         0.0)
        pred = mask & (cv2.dilate(pred.astype(np.uint8), box) > 0)
        gt = None if gt is None else mask & (cv2.dilate((gt & mask).astype(np.uint8), box) > 0)
    tiles = [
        _titled(encode_png(normals, mask), "input normals", tile, tile),
        _titled(encode_png(reference, mask) if reference is not None
                else np.zeros_like(encode_png(normals, mask)),
                reference_title if reference is not None else "(no reference)", tile, tile),
        _titled(heatmap_rgb(score, mask, threshold), "error map", tile, tile),
        _titled(overlay_mask_rgb(normals, mask, pred), "predicted mask", tile, tile),
    ]
    if gt is not None:
        tiles.append(_titled(overlay_mask_rgb(normals, mask, gt & mask, (40, 200, 40)),
                             "ground truth", tile, tile))
    sep = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for t in tiles:
        row += [t, sep]
    return np.concatenate(row[:-1], axis=1)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as PNG bytes."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _subsample_curve(x: np.ndarray, y: np.ndarray, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    if x.size <= n:
        return x, y
    idx = np.unique(np.r_[np.linspace(0, x.size - 1, n).astype(int), x.size - 1])
    return x[idx], y[idx]


def curves_png(curves: dict[str, Any]) -> bytes:
    """One figure with pixel ROC, PRO (FPR <= max_fpr) and image ROC, as PNG bytes.

    ``curves``: ``{"pixel_roc": (fpr, tpr), "pro": (fpr, pro), "image_roc": (fpr, tpr) | None,
    "max_fpr": 0.3}``; optional ``"areas"`` (``{"pixel_roc", "pro", "image_roc"}``: the areas,
    shown in the titles) and ``"pixel_point"`` / ``"image_point"`` ((fpr, tpr) of the masks
    and verdicts at the operating point, marked).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    areas = curves.get("areas") or {}

    def titled(text: str, key: str, name: str) -> str:
        return text if areas.get(key) is None else f"{text}\n{name} {areas[key]:.4f}"

    fig = Figure(figsize=(12, 4.2), dpi=90)
    axes = fig.subplots(1, 3)
    x, y = _subsample_curve(*curves["pixel_roc"])
    axes[0].plot(x, y, lw=1.5)
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(title=titled("pixel ROC (object pixels)", "pixel_roc", "AUROC"),
                xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1),
                ylim=(0, 1.01))
    max_fpr = float(curves.get("max_fpr", 0.3))
    # the part integrated (FPR up to max_fpr, the end interpolated there, as AUPRO is), then
    # thinned for the figure (thinned first, it ended at the last kept point before max_fpr)
    fx, fy = (np.asarray(v, np.float64) for v in curves["pro"])
    cut = fx <= max_fpr
    x, y = _subsample_curve(np.append(fx[cut], max_fpr),
                            np.append(fy[cut], np.interp(max_fpr, fx, fy)))
    axes[1].plot(x, y, lw=1.5, color="tab:orange")
    axes[1].set(title=titled(f"PRO curve (FPR <= {max_fpr:g})", "pro", "AUPRO"),
                xlabel="false-positive rate", ylabel="per-region overlap", xlim=(0, max_fpr),
                ylim=(0, 1.01))
    if curves.get("image_roc") is not None:
        x, y = curves["image_roc"]
        axes[2].plot(x, y, lw=1.5, color="tab:green")  # (ties: diagonal, as AUROC counts them)
        axes[2].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[2].set(title=titled("image ROC (pass/fail)", "image_roc", "AUROC"),
                xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1),
                ylim=(0, 1.01))
    for ax, key in ((axes[0], "pixel_point"), (axes[2], "image_point")):
        if curves.get(key) is not None and None not in curves[key]:
            ax.plot(*curves[key], "o", color="k", ms=6, label="at the thresholds used")
            ax.legend(loc="lower right", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _columns(max_fpr: float) -> list[tuple[str, str]]:
    """The metric table's (key, heading) pairs; AUPRO is integrated up to ``max_fpr``."""
    return [("pixel_auroc", "pixel AUROC"), ("aupro", f"AUPRO (FPR<={max_fpr:g})"),
            ("pixel_ap", "pixel AP"), ("f1_max", "F1-max"), ("image_auroc", "image AUROC"),
            ("defect_pixels", "defect px"), ("regions", "regions"), ("maps", "maps")]


def _table(rows: dict[str, dict[str, Any]], first: str, max_fpr: float) -> str:
    columns = _columns(max_fpr)
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in columns)
    body = []
    for name, vals in rows.items():
        cells = "".join(f"<td>{_fmt(vals.get(k))}</td>" for k, _ in columns)
        body.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<table><tr><th>{html.escape(first)}</th>{head}</tr>{''.join(body)}</table>"


def evaluation_warnings(metrics: dict[str, Any]) -> list[str]:
    """What makes an evaluation's figures not what they seem (one line each)."""
    seen = metrics.get("test_surfaces_seen_in_training", [])
    if seen is None:
        source = metrics.get("source") or {}
        model_dir, changed = source.get("model_dir"), source.get("model_changed")
        out = ["cannot tell whether the model was trained on test surfaces: " + (
            changed if changed else
            f"its folder {model_dir} cannot be read (moved or deleted?)" if model_dir else
            "the detect run did not record its model folder")]
    else:
        out = [] if not seen else [
            f"the model was trained on {len(seen)} of the test surfaces "
            f"({', '.join(seen[:5])}{', ...' if len(seen) > 5 else ''}): these figures are not "
            "a measurement on unseen surfaces"]
    changed = (metrics.get("source") or {}).get("ground_truth_changed") or []
    if changed:
        out.append(f"the ground truth of {len(changed)} test map(s) is not what detect saw "
                   f"(another number of defect pixels than its summary's gt_defect_px: edited "
                   f"since? {', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''})")
    extra = (metrics.get("source") or {}).get("unmatched_predictions") or []
    if extra:
        out.append(f"{len(extra)} prediction(s) have no test map in the dataset and were not "
                   f"evaluated ({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})")
    read = metrics.get("test_surface_reading_warnings") or {}
    if read:
        first = next(iter(read))
        out.append(f"{len(read)} test surface(s) were read with warnings that may change these "
                   f"figures ({', '.join(list(read)[:5])}{', ...' if len(read) > 5 else ''}; "
                   f"{read[first][0]})")
    calibrated = metrics.get("test_surfaces_seen_in_calibration") or []
    if calibrated:
        out.append(f"the model's thresholds were calibrated on {len(calibrated)} of the test "
                   f"surfaces ({', '.join(calibrated[:5])}"
                   f"{', ...' if len(calibrated) > 5 else ''}; train --calibrate-on): its "
                   "verdicts and masks there are not those of unseen parts")
    return out


def _source_html(source: dict[str, Any] | None) -> list[str]:
    """What was evaluated: the predictions, their model, the dataset and its test surfaces
    (metrics.json ``source``; nothing when absent)."""
    if not source:
        return []
    model = source.get("model") or "a model"
    where = f" ({source['model_dir']})" if source.get("model_dir") else ""
    tested = source.get("test_surfaces") or []
    pred = html.escape(str(source.get("predictions")))
    return [f"<p class='note'>Evaluated: the predictions in {pred} "
            f"of {html.escape(str(model))}{html.escape(where)}, against the dataset "
            f"{html.escape(str(source.get('ground_truth')))}"
            + (f"; its {len(tested)} test surface(s): {html.escape(', '.join(tested))}"
               if tested else "") + ".</p>"]


def _fmt_threshold(v: Any) -> str:
    """A threshold to 4 significant digits (any scale: a small one is not '0.0000')."""
    return f"{v:.4g}" if isinstance(v, int | float) else _fmt(v)


def _replaced_note(calibrated: Any) -> str:
    """', set by hand (...)' when detect's thresholds replaced the model's calibrated ones."""
    if not isinstance(calibrated, dict):
        return ""
    return ("; thresholds set by hand (detect --threshold / --image-threshold), the model's "
            f"calibrated ones: pixel {_fmt_threshold(calibrated.get('pixel_threshold'))}, "
            f"image {_fmt_threshold(calibrated.get('image_threshold'))}")


def _operating_point_html(op: dict[str, Any] | None, verdicts: dict[str, Any] | None
                          ) -> list[str]:
    """The thresholds detect used and what its masks and verdicts scored (nothing when
    absent)."""
    if not op:
        return []
    pm = op.get("predicted_masks") or {}
    keys = (("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
            ("fpr", "false-positive rate"))
    out = [
        "<h2>At the operating point</h2>",
        "<p class='note'>The masks and verdicts detect wrote, at its thresholds: pixel "
        f"threshold {_fmt_threshold(op.get('pixel_threshold'))}, image (pass/fail) threshold "
        f"{_fmt_threshold(op.get('image_threshold'))}, model {html.escape(str(op.get('model')))}"
        + (f", {op['tta']} test-time copies" if op.get("tta") else "")
        + (f", --scale {op['scale']:g}" if op.get("scale") not in (None, 1.0) else "")
        + _replaced_note(op.get("calibrated_thresholds"))
        + ". The metrics above are threshold-free; these are what an inspector gets.</p>",
        "<table><tr><th>predicted masks</th>"
        + "".join(f"<th>{t}</th>" for _, t in keys) + "</tr><tr><td>object pixels</td>"
        + "".join(f"<td>{_fmt(pm.get(k))}</td>" for k, _ in keys) + "</tr></table>"]
    if verdicts:
        out.append(
            "<table><tr><th>verdicts</th><th>fail</th><th>pass</th></tr>"
            f"<tr><td>defective maps</td><td>{verdicts['defective_failed']}</td>"
            f"<td>{verdicts['defective_passed']}</td></tr>"
            f"<tr><td>clean maps</td><td>{verdicts['clean_failed']}</td>"
            f"<td>{verdicts['clean_passed']}</td></tr></table>")
    return out


def point_threshold_text(point: dict[str, Any], digits: int = 4) -> str:
    """An operating point's pass/fail threshold (:func:`psinspect.train.operating_points`),
    with the thresholds of a model calibrated per light count after it: "4.9 (12 lights
    5.1, 24 lights 4.3; other maps 4.9)" reads as "4.9; captures of 12 lights 5.1, ..."."""
    text = f"{point['image_threshold']:.{digits}g}"
    by_count = point.get("image_thresholds_by_light_count")
    if by_count:
        text += " (" + ", ".join(f"{n} lights {t:.{digits}g}" for n, t in by_count.items()) \
            + "; other maps " + text + ")"
    return text


def _other_points_html(points: Sequence[dict[str, Any]] | None, note: str | None
                       ) -> list[str]:
    """The verdicts at the pass/fail thresholds of other shares of good parts failing
    (metrics.json ``operating_points``), or why there are none (``operating_points_note``)."""
    if not points and not note:
        return []
    out = ["<h3>Other operating points</h3>"]
    if not points:
        return [*out, f"<p class='note'>None: {html.escape(str(note))}.</p>"]
    rows = "".join(
        f"<tr><td>{p['rate']:.0%}</td><td>{html.escape(point_threshold_text(p))}</td>"
        f"<td>{p['defective_failed']} / {p['defective_failed'] + p['defective_passed']}</td>"
        f"<td>{p['clean_passed']} / {p['clean_passed'] + p['clean_failed']}</td></tr>"
        for p in points)
    return [*out,
            "<p class='note'>The verdicts on the same image scores at the pass/fail threshold "
            "that <code>detect --image-fpr R</code> sets for a share R of good parts failing, "
            "fitted to the clean calibration maps' image scores the model stores (training "
            "sets its own for 1 % by default; a model calibrated per light count judges a "
            "capture of a count it was calibrated for by the same fit to that count's maps). A "
            "higher R catches more defective parts and fails more good ones.</p>",
            "<table><tr><th>share of good parts failing asked (R)</th><th>threshold</th>"
            f"<th>defective maps failed</th><th>clean maps passed</th></tr>{rows}</table>"]


def _intervals_html(iv: dict[str, Any] | None) -> list[str]:
    """The bootstrap intervals of :func:`psinspect.metrics.bootstrap_intervals` as a note and a
    one-row table (nothing when absent)."""
    if not iv:
        return []
    if iv["groups"] == 1:
        return ["<p class='note'>No bootstrap intervals: the test set has a single surface, "
                "so it says nothing about how the figures would move on another one.</p>"]
    keys = (("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"), ("image_auroc", "image AUROC"))
    cells = "".join(f"<td>{'-' if iv.get(k) is None else f'{iv[k][0]:.4f} - {iv[k][1]:.4f}'}"
                    "</td>" for k, _ in keys)
    used = iv.get("draws_used") or {}
    left = [f"{t} from {used[k]} of them" for k, t in keys
            if k in used and used[k] < iv["resamples"]]
    dropped = (" Draws without the maps a figure needs (defect-free maps, defective ones, "
               "ground-truth regions) leave that figure out: " + "; ".join(left) + "."
               ) if left else ""
    return [
        f"<p class='note'>{iv['level']:.0%} bootstrap intervals: the test surfaces "
        f"({iv['groups']}) drawn with replacement {iv['resamples']} times (seed {iv['seed']}), "
        "the maps of a surface together; how far the pooled figures could move on another "
        f"test set of the same kinds. Few surfaces give wide intervals.{dropped}</p>",
        "<table><tr><th>interval</th>" + "".join(f"<th>{t}</th>" for _, t in keys) + "</tr>"
        f"<tr><td>{iv['level']:.0%}</td>{cells}</tr></table>",
    ]


def _panels_shown(counts: tuple[int, int] | None) -> str:
    """What the report's panels are, from (defective, clean) counts: ``": 8 defective maps
    spread over their names and the 3 clean maps with the highest image scores (...)"``."""
    if not counts or not any(counts):
        return ""
    d, c = counts
    parts = ([f"{d} defective map{'s' if d > 1 else ''}"
              + (" spread over their names" if d > 1 else "")] if d else []) + (
        [f"the {c} clean map{'s' if c > 1 else ''} with the highest image score"
         f"{'s' if c > 1 else ''} (the likeliest false alarm{'s' if c > 1 else ''})"]
        if c else [])
    return ": " + " and ".join(parts)


def report_html(
    metrics: dict[str, Any],
    curves: dict[str, Any],
    panels: Sequence[tuple[str, np.ndarray]],
    *,
    title: str = "psinspect evaluation",
    panel_counts: tuple[int, int] | None = None,
) -> str:
    """Self-contained HTML report: metric tables, curves, panels (base64 PNG);
    ``panel_counts``: how many of the panels are of defective and of clean maps
    (:func:`select_panels`)."""

    def img(data: bytes, alt: str) -> str:
        b64 = base64.b64encode(data).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'

    pooled = metrics["pooled"]
    fpr = float(metrics.get("max_fpr", 0.3))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:20px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0 18px}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
        "th:first-child{text-align:left}img{max-width:100%;display:block;margin:6px 0}"
        ".note{color:#555;font-size:90%}.warn{color:#b00;font-weight:bold}"
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p class='note'>All pixel metrics count object pixels only (background never counts). "
        f"AUPRO: normalised area under the per-region-overlap curve up to FPR "
        f"{metrics.get('max_fpr', 0.3)} (MVTec AD definition). Test maps: {pooled['maps']} "
        f"({pooled['defective_maps']} defective).</p>",
        *_source_html(metrics.get("source")),
        *[f"<p class='warn'>Warning: {html.escape(w)}</p>" for w in evaluation_warnings(metrics)],
        "<h2>Pooled</h2>", _table({"all test maps": pooled}, "set", fpr),
        *_intervals_html(metrics.get("intervals")),
        *_operating_point_html(metrics.get("operating_point"), metrics.get("verdicts")),
        *_other_points_html(metrics.get("operating_points"),
                            metrics.get("operating_points_note")),
        "<h2>Per defect type</h2>", _table(metrics.get("per_type", {}), "type", fpr),
        "<h2>Per severity</h2>", _table(metrics.get("per_severity", {}), "severity", fpr),
        "<p class='note'>Breakdowns: a ground-truth region (a connected component of the "
        "truth) counts for the defect whose recorded box holds most of its pixels, so a defect "
        "whose truth runs into another's is counted with that one; positives are the group's "
        "regions, negatives all defect-free object pixels; image AUROC: the maps holding such "
        "a region (which may hold other defects too) against the defect-free maps. Figures "
        "from a few regions or maps (columns 'regions', 'maps') say little.</p>",
        "<p class='note'>Definitions: pixel AUROC and pixel AP (average precision) rank all "
        "object pixels by score against the truth; F1-max is the best F1 of the pixels at or "
        "above a threshold, over all thresholds, each pixel on its own (detect's masks also "
        "drop regions under 4 px, so their F1 at the operating point can be higher); the image "
        "score of a map (what the pass/fail threshold is "
        "compared with) is its own summary of the score map (summary.json 'verdict_rule'), on "
        "another scale than the pixel scores, so a region's peak score can exceed the image "
        "threshold on a part that passes. Error maps: 0 black, the pixel threshold mid-scale, "
        "twice it and above brightest.</p>",
        "<h2>Curves</h2>", img(curves_png(curves), "ROC and PRO curves"),
        "<h2>Panels</h2>",
        f"<p class='note'>{len(panels)} of the {pooled['maps']} test maps"
        + _panels_shown(panel_counts)
        + ". Each: input | reference | error map | predicted mask (as detect wrote it) | "
        "ground truth.</p>",
    ]
    for name, rgb in panels:
        parts.append(f"<h3>{html.escape(name)}</h3>{img(png_bytes(rgb), name)}")
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------
# evaluation of a detect output folder against a dataset's ground truth
# ------------------------------------------------------------------------------------------

EVAL_SPLITS = ("test-clean", "test-defective")


def load_eval_items(pred_dir: Any, ground_truth: Any, splits: Sequence[str] = EVAL_SPLITS
                    ) -> tuple[list[Any], dict[str, Any]]:
    """Pair the score maps of a ``psinspect detect`` folder with a dataset's ground truth.

    ``pred_dir``: holds ``summary.json`` and ``<name>_score.npy`` per map. ``ground_truth``: a
    dataset folder (``manifest.json``, :mod:`psinspect.dataset`); every item of ``splits`` must
    have a prediction named like its file stem. The object mask of an item is the non-zero
    vectors of its normal map; its defect mask is its ``defect_mask`` PNG (none = clean).
    ``pred_dir`` may also be that folder's ``summary.json``.
    Returns ``(items, info)`` with :class:`psinspect.metrics.EvalItem` items,
    ``info["predictions"]``: the detect folder, ``info["normals"]``: name -> path of the
    item's normal map (for panels); per item (in order) ``info["surfaces"]``: the
    manifest's surface (its name when not given),
    ``info["pred_masks"]``: detect's predicted mask (``NAME_mask.png``), ``info["verdicts"]``
    and ``info["defective"]`` (in the ``test-defective`` split); and the detect run's
    ``pixel_threshold``, ``image_threshold``, ``model`` and ``model_dir``; and
    ``info["reading_warnings"]``: per test surface, what reading its capture warned about
    (the manifest's surface ``warnings``).
    """
    from pathlib import Path

    from psinspect.dataset import load_manifest
    from psinspect.errors import PsinspectError
    from psinspect.fileio import load_npy, read_json
    from psinspect.metrics import EvalItem
    from psinspect.normalmap import load_normal_map

    pred_dir = Path(pred_dir)
    if pred_dir.name == "summary.json" and pred_dir.is_file():  # the folder's summary named
        pred_dir = pred_dir.parent
    if pred_dir.is_file():
        raise PsinspectError(f"{pred_dir}: a file; PREDICTIONS must be a 'psinspect detect' "
                             "output folder (or its summary.json)")
    spath = pred_dir / "summary.json"
    if not spath.is_file():
        raise PsinspectError(f"{spath}: missing (PREDICTIONS must be a 'psinspect detect' "
                             "output folder)")
    try:
        summary = read_json(spath)
        entries = summary["inputs"]
    except (ValueError, KeyError, TypeError) as err:
        raise PsinspectError(f"{spath}: not a detect summary ({err})") from None
    if not isinstance(entries, list):
        raise PsinspectError(f"{spath}: not a detect summary (inputs must be a list)")
    by_name = {}
    for entry in entries:
        _check_summary_entry(entry, spath)
        if entry["name"] in by_name:
            raise PsinspectError(f"{spath}: input {entry['name']!r} is listed twice")
        by_name[entry["name"]] = entry
    failed = {n: e.get("error") for n, e in by_name.items()
              if e["verdict"] == "error"}  # detect --keep-going
    image_scores = {n: float(e["image_score"]) for n, e in by_name.items() if n not in failed}
    sources = {n: (e.get("source"), e.get("source_sha256")) for n, e in by_name.items()}
    verdicts = {n: e["verdict"] for n, e in by_name.items()}
    _check_operating_point(summary, spath)
    manifest, folder = load_manifest(ground_truth)
    wanted = [it for it in manifest["items"] if it["split"] in splits]
    if not wanted:
        raise PsinspectError(f"{ground_truth}: no items in splits {', '.join(splits)}")
    missing = [Path(it["file"]).stem for it in wanted
               if Path(it["file"]).stem not in image_scores
               or not (pred_dir / f"{Path(it['file']).stem}_score.npy").is_file()]
    if missing:
        why = next((f" (detect failed on {n}: {failed[n]})" for n in missing if n in failed), "")
        raise PsinspectError(
            f"{pred_dir}: no prediction for {len(missing)} of {len(wanted)} test maps "
            f"(e.g. {', '.join(missing[:3])}){why}; run detect on all of them"
        )
    items = []
    normals_paths = {}
    surfaces = []
    pred_masks = []
    defective = []
    light_counts: list[int | None] = []
    map_shas: dict[str, set[str]] = {}  # surface -> its test maps' SHA-256
    gt_changed: list[str] = []  # maps whose ground truth is not the one detect saw
    for it in wanted:
        name = Path(it["file"]).stem
        if not (folder / it["file"]).is_file():
            raise PsinspectError(f"{folder / it['file']}: test map of the dataset's manifest "
                                 "not found (or not a file)")
        digest = _check_same_input(*sources.get(name, (None, None)), folder / it["file"],
                                   spath)
        map_shas.setdefault(str(it.get("surface") or name), set()).add(digest)
        _, mask = load_normal_map(folder / it["file"], check_frame=False)
        score_path = pred_dir / f"{name}_score.npy"
        score = load_npy(score_path)
        if score.dtype != np.float32:
            raise PsinspectError(f"{score_path}: expected float32 scores, as detect writes "
                                 f"them, got {score.dtype}")
        if score.shape != mask.shape:
            raise PsinspectError(f"{score_path}: shape {score.shape} != map {mask.shape}")
        if not np.isfinite(score).all():
            raise PsinspectError(f"{score_path}: contains NaN or Inf")
        score = score.astype(np.float32)
        if np.count_nonzero(score[~mask]):
            raise PsinspectError(f"{score_path}: scores outside the object (detect writes 0 "
                                 "there): not a detect score map of this map")
        _check_image_score(by_name[name], score, mask, score_path, spath)
        _check_entry_thresholds(by_name[name], summary, spath)
        gt = np.zeros(mask.shape, bool)
        if it.get("defect_mask"):
            gt = read_mask_png(folder / it["defect_mask"], mask.shape)
        if (it["split"] == "test-defective") != bool((gt & mask).any()):
            raise PsinspectError(
                f"{ground_truth}: test map {name} is in split {it['split']} but its defect "
                f"mask marks {int((gt & mask).sum())} of its object's pixels (a defective "
                "map must mark some, a clean one none)")
        seen_gt = by_name[name].get("gt_defect_px")
        if seen_gt is not None and seen_gt != int(np.count_nonzero(gt & mask)):
            gt_changed.append(name)
        items.append(EvalItem(name, score, gt & mask, mask,
                              image_scores[name], it.get("defects") or None))
        pred_masks.append(_checked_pred_mask(pred_dir / f"{name}_mask.png", score, mask,
                                             by_name[name], spath))
        defective.append(it["split"] == "test-defective")
        light_counts.append(summary_light_count(by_name[name]))
        normals_paths[name] = folder / it["file"]
        surfaces.append(str(it.get("surface") or name))
    unmatched = sorted((set(image_scores) | set(failed)) - {it.name for it in items})
    # a model retrained into the folder since: its records say nothing of the model that scored
    model_dir = summary.get("model_dir")
    config = read_model_config(model_dir) if model_dir else None
    # detect's pixel threshold as calibrated (the model's own where --threshold replaced it)
    own_pixel = (summary.get("calibrated_thresholds") or {}).get(
        "pixel_threshold", summary.get("pixel_threshold"))
    changed = None if config is None else model_changed(
        model_dir, config, summary.get("model_weights_sha256"), own_pixel)
    info = {"predictions": pred_dir, "normals": normals_paths,
            "unmatched_predictions": unmatched,
            "pixel_threshold": summary.get("pixel_threshold"), "model": summary.get("model"),
            "image_threshold": summary.get("image_threshold"),
            # how detect scored (test-time copies, resampling); absent: the model's own / 1
            "tta": summary.get("tta"), "scale": summary.get("scale", 1.0),
            # the model's own, where detect's --threshold / --image-threshold replaced them
            "calibrated_thresholds": summary.get("calibrated_thresholds"),
            "model_dir": summary.get("model_dir"),
            "model_weights_sha256": summary.get("model_weights_sha256"),
            "splits": list(splits),
            "surfaces": surfaces, "pred_masks": pred_masks,
            "model_changed": changed, "ground_truth_changed": gt_changed,
            "calibrated_pixel_threshold": own_pixel,
            "seen_in_training": (surfaces_seen_in_training(model_dir, manifest, map_shas)
                                 if model_dir and not changed else None),
            "seen_in_calibration": (surfaces_seen_in_calibration(model_dir, manifest, map_shas)
                                    if model_dir and not changed else None),
            "verdicts": [verdicts[it.name] for it in items], "defective": defective,
            "light_counts": light_counts,
            # what reading a test surface's capture warned about (the dataset keeps it: a
            # capture without mask.png counts its background as the object, ...)
            "reading_warnings": {
                n: list(s["warnings"]) for n, s in manifest.get("surfaces", {}).items()
                if n in set(surfaces) and isinstance(s, dict) and s.get("warnings")}}
    return items, info


def summary_light_count(entry: dict[str, Any]) -> int | None:
    """How many lights a detect summary's input was solved from (``num_lights``; None:
    unknown). Summaries written before psinspect recorded it tell it only for a model
    calibrated per light count, by the count whose thresholds judged the input
    (``thresholds_for_lights``), which is its light count wherever the model has thresholds
    for that count (the only counts :func:`psinspect.train.operating_points` tells apart),
    unless detect's thresholds were both set by hand."""
    count = entry.get("num_lights", entry.get("thresholds_for_lights"))
    return count if isinstance(count, int) and not isinstance(count, bool) else None


#: :func:`load_eval_items`: how far (relative) a summary's image score may lie from the one
#: its score map gives (detect's rule; they agree to about 5e-8: float32 rounding)
IMAGE_SCORE_RTOL = 1e-5


def _check_summary_entry(entry: Any, spath: Any) -> None:
    """Refuse (:class:`PsinspectError`) a detect summary's per-input entry that is not what
    detect writes: an object with a string ``name``, a ``verdict`` of pass / fail / error,
    and (unless an error) a finite ``image_score`` and ``image_threshold`` and a finite
    ``image_scale`` > 0 where given, the verdict being ``fail`` exactly when the image score
    is above the threshold; a ``source_sha256`` is a SHA-256 in hex."""
    from psinspect.checks import is_number
    from psinspect.errors import PsinspectError

    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise PsinspectError(f"{spath}: not a detect summary (each input must be an object "
                             "with a name)")
    name, verdict = entry["name"], entry.get("verdict")
    if not name or not name.isprintable():
        raise PsinspectError(f"{spath}: not a detect summary (input name {name!r}: empty, or "
                             "with a line break or another control character)")
    if verdict not in ("pass", "fail", "error"):
        raise PsinspectError(f"{spath}: input {name!r}: verdict must be pass, fail or error, "
                             f"got {verdict!r}")
    sha = entry.get("source_sha256")
    if "source_sha256" in entry and not (isinstance(sha, str) and len(sha) == 64
                                         and all(c in "0123456789abcdef" for c in sha)):
        raise PsinspectError(f"{spath}: input {name!r}: source_sha256 must be a SHA-256 in "
                             f"hex, got {sha!r}")
    if verdict == "error":
        return
    for key in ("image_score", "image_threshold", "image_scale"):
        if (key in entry or key == "image_score") and not is_number(entry.get(key)):
            raise PsinspectError(f"{spath}: input {name!r}: {key} must be a finite number, "
                                 f"got {entry.get(key)!r}")
    if entry.get("image_scale", 1.0) <= 0:
        raise PsinspectError(f"{spath}: input {name!r}: image_scale must be > 0, got "
                             f"{entry['image_scale']!r}")
    if "image_threshold" in entry and verdict != (
            "fail" if entry["image_score"] > entry["image_threshold"] else "pass"):
        raise PsinspectError(f"{spath}: input {name!r}: verdict {verdict} does not follow from "
                             f"image_score {entry['image_score']} and image_threshold "
                             f"{entry['image_threshold']} (fail when above)")


def _check_entry_thresholds(entry: dict[str, Any], summary: dict[str, Any],
                            spath: Any) -> None:
    """Refuse a summary entry judged by other thresholds than the run's (the summary's
    ``pixel_threshold`` / ``image_threshold``, which evaluate reports as detect's operating
    point), but for an input judged by a light count's (``thresholds_for_lights``: a model
    calibrated per light count), which must be a count the run records thresholds of
    (``thresholds_by_light_count``), with that count's pixel threshold where none was set by
    hand."""
    from psinspect.errors import PsinspectError

    count = entry.get("thresholds_for_lights")
    if count is not None:
        group = (summary.get("thresholds_by_light_count") or {}).get(str(count))
        if not isinstance(group, dict):
            raise PsinspectError(f"{spath}: input {entry['name']!r}: judged by the thresholds "
                                 f"of {count!r}-light captures, which the run has none of "
                                 "(the summary was edited)")
        if (summary.get("calibrated_thresholds") is None and "pixel_threshold" in entry
                and entry["pixel_threshold"] != group.get("threshold")):
            raise PsinspectError(f"{spath}: input {entry['name']!r}: pixel_threshold "
                                 f"{entry['pixel_threshold']!r} is not the run's "
                                 f"{group.get('threshold')!r} for {count}-light captures (the "
                                 "summary was edited)")
        return
    for key in ("pixel_threshold", "image_threshold"):
        run = summary.get(key)
        if run is not None and key in entry and entry[key] != run:
            raise PsinspectError(f"{spath}: input {entry['name']!r}: {key} {entry[key]!r} is "
                                 f"not the run's {run!r} (the summary was edited)")


def _checked_pred_mask(path: Any, score: np.ndarray, mask: np.ndarray, entry: dict[str, Any],
                       spath: Any) -> np.ndarray:
    """detect's predicted mask ``path`` (``NAME_mask.png``), refused unless it is what the score
    map gives at the entry's pixel threshold by detect's rule
    (:func:`psinspect.detect.find_regions`): the metrics of the masks detect wrote are
    reported, so they must be its."""
    from psinspect.checks import is_number
    from psinspect.detect import find_regions
    from psinspect.errors import PsinspectError
    from psinspect.normalmap import read_mask_png

    pred = read_mask_png(path, mask.shape, "predicted mask")
    thr = entry.get("pixel_threshold")
    if not is_number(thr):
        raise PsinspectError(f"{spath}: input {entry['name']!r}: pixel_threshold must be a "
                             f"finite number, got {thr!r}")
    expected = find_regions(score, mask, float(thr))[0]
    off = int(np.count_nonzero(pred != expected))
    if off:
        raise PsinspectError(f"{path}: {off} pixels differ from the score map at the pixel "
                             f"threshold {thr:.6g} in {spath}: the mask and the score map are "
                             "not of one detect run")
    return pred


def _check_image_score(entry: dict[str, Any], score: np.ndarray, mask: np.ndarray,
                       score_path: Any, spath: Any) -> None:
    """Refuse a summary entry whose image score is not the one its score map gives by detect's
    rule (:func:`psinspect.detect.image_score` times the entry's ``image_scale``): a score map
    swapped, copied from another run or edited, or an image score edited by hand."""
    from psinspect.detect import image_score
    from psinspect.errors import PsinspectError

    own = image_score(score, mask) * float(entry.get("image_scale", 1.0))
    given = float(entry["image_score"])
    if abs(own - given) > IMAGE_SCORE_RTOL * max(abs(own), abs(given), 1e-12):
        raise PsinspectError(f"{score_path}: gives image score {own:.6g}, its summary entry "
                             f"in {spath} {given:.6g}: the score map and the summary are not "
                             "of one detect run")


def _check_operating_point(summary: dict[str, Any], spath: Any) -> None:
    """Refuse (:class:`PsinspectError`) a detect summary whose operating point is not what
    detect writes: ``pixel_threshold`` and ``image_threshold`` finite numbers >= 0, ``scale``
    a finite number > 0, ``tta`` a number of copies >= 1 (each may be absent or null)."""
    from psinspect.checks import is_integer, is_number
    from psinspect.errors import PsinspectError

    for key, ok, want in (
            ("pixel_threshold", lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
            ("image_threshold", lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
            ("scale", lambda v: is_number(v) and v > 0, "a finite number > 0"),
            ("tta", lambda v: is_integer(v) and v >= 1, "a number of test-time copies >= 1")):
        value = summary.get(key)
        if value is not None and not ok(value):
            raise PsinspectError(f"{spath}: not a detect summary ({key} must be {want}, got "
                                 f"{value!r})")
    calibrated = summary.get("calibrated_thresholds")
    if calibrated is not None and not (
            isinstance(calibrated, dict)
            and all(is_number(v) and v >= 0 for v in calibrated.values())
            and set(calibrated) == {"pixel_threshold", "image_threshold"}):
        raise PsinspectError(f"{spath}: not a detect summary (calibrated_thresholds must hold "
                             f"a pixel_threshold and an image_threshold >= 0, got "
                             f"{calibrated!r:.80})")


def model_operating_points(model_dir: Any, weights_sha256: Any, tta: int | None,
                           image_scores: Sequence[float], defective: Sequence[bool],
                           light_counts: Sequence[int | None] | None = None,
                           pixel_threshold: float | None = None
                           ) -> tuple[list[dict[str, Any]], str | None]:
    """The verdicts of :func:`psinspect.train.operating_points` (at the pass/fail thresholds
    ``detect --image-fpr R`` sets for a few shares of good parts failing) for the model in
    ``model_dir`` (whose weights must be the ``weights_sha256`` detect recorded) scoring at
    ``tta`` copies, on the test maps' ``image_scores`` (``light_counts``: per map, the light
    count it was solved from, None unknown, for a model calibrated per light count); ``([],
    why)`` where they cannot be told (no model folder, moved or retrained, no calibration
    scores stored, or ``tta`` not the level whose calibrated ``pixel_threshold``, as detect
    recorded it, the summary holds: an edited ``tta`` would fit the rates' thresholds to
    another level's image scores)."""
    import math

    from psinspect.checks import is_number
    from psinspect.errors import PsinspectError
    from psinspect.train import operating_points

    if not model_dir:
        return [], "the detect summary names no model folder"
    config = read_model_config(model_dir)
    if config is None:
        return [], f"the model folder {model_dir} cannot be read"
    changed = model_changed(model_dir, config, weights_sha256, pixel_threshold)
    if changed:
        return [], changed
    own = (config.get("hyperparameters") or {}).get("tta")
    level = (config if tta is None or tta == own
             else (config.get("tta_thresholds") or {}).get(str(tta)) or {})
    if tta is not None and not is_number(pixel_threshold):
        return [], ("the detect summary records no pixel threshold to tell the test-time "
                    "level it scored at")
    if (isinstance(level, dict) and is_number(level.get("threshold"))
            and is_number(pixel_threshold)
            and not math.isclose(level["threshold"], pixel_threshold, rel_tol=1e-6)):
        return [], (f"the detect summary's tta {tta} is not the level its calibrated pixel "
                    f"threshold {pixel_threshold:.6g} is the model's at")
    try:
        return operating_points(config, image_scores, defective, tta,
                                light_counts=light_counts), None
    except PsinspectError as err:  # e.g. "--image-fpr: the model stores no ...; give ..."
        return [], str(err).removeprefix("--image-fpr: ").split("; ")[0]


def read_model_config(model_dir: Any) -> dict[str, Any] | None:
    """A model folder's ``config.json`` as a dict; None where it cannot be read."""
    from pathlib import Path

    from psinspect.fileio import read_json

    try:
        config = read_json(Path(model_dir) / "config.json")
    except (OSError, TypeError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def model_changed(model_dir: Any, config: dict[str, Any], weights_sha256: Any,
                  pixel_threshold: Any) -> str | None:
    """Why the model folder ``model_dir`` (its ``config``) no longer holds the model a detect
    run used (None: it does, as far as the summary tells): other weights than the
    ``weights_sha256`` detect recorded, or a detect pixel threshold (``pixel_threshold``, the
    calibrated one where --threshold replaced it) that is none of the model's calibrated ones
    (its own level's or another test-time level's), as a model retrained into the same folder
    gives (a training-free model's weights are the same whatever it was fitted to); or
    neither recorded to tell. Retrained, the folder's training records say nothing about
    the model that scored."""
    import math

    from psinspect.checks import is_number

    if weights_sha256 is not None and config.get("weights_sha256") != weights_sha256:
        return f"the model folder {model_dir} now holds other weights than detect used"
    levels = [config.get("threshold"), *(v.get("threshold") for v in (
        config.get("tta_thresholds") or {}).values() if isinstance(v, dict))]
    levels = [t for t in levels if is_number(t)]
    if not levels:
        return None
    if not is_number(pixel_threshold):  # (the weights told, where recorded)
        return (None if weights_sha256 is not None
                else "the detect summary records no pixel threshold to tell its model by")
    if not any(math.isclose(t, pixel_threshold, rel_tol=1e-6) for t in levels):
        return (f"the model folder {model_dir} now holds another model than detect used (its "
                f"calibrated pixel threshold {config.get('threshold')!r:.8}, detect's "
                f"{pixel_threshold:.6g})")
    return None


def surfaces_seen_in_training(model_dir: Any, manifest: dict[str, Any],
                              map_shas: dict[str, set[str]] | None = None) -> list[str] | None:
    """The test surfaces of a dataset ``manifest`` that the model in ``model_dir`` was trained
    on. Where both record them, by content: the capture fingerprints of the model's training
    surfaces (``config.json`` ``training.surface_fingerprints``: its training captures and the
    captures its ``psinspect normals`` maps were solved from) against each test surface's
    (:func:`psinspect.capture.capture_fingerprint`), so the same capture copied, moved or
    renamed counts and another one rendered into the same folder does not; and the SHA-256 of
    the model's training map files (``training.map_sha256``) against ``map_shas`` (surface ->
    the SHA-256 of its test maps): a model trained on a dataset's own test maps. Otherwise
    (models or datasets of earlier versions) by resolved path: the training dataset's train
    surfaces' capture folders, or the training inputs (a test surface's capture folder that is
    one of them or lies inside one). None when the model folder cannot be read (moved,
    deleted): then nothing can be told."""
    from pathlib import Path

    from psinspect.fileio import read_json

    try:
        training = read_json(Path(model_dir) / "config.json").get("training", {})
    except (OSError, TypeError, ValueError, AttributeError):
        return None
    trained_maps = training.get("map_sha256")
    trained_maps = set(trained_maps) if isinstance(trained_maps, list) else set()
    seen: set[Path] = set()
    if isinstance(training.get("dataset"), str):
        try:
            trained = read_json(Path(training["dataset"]) / "manifest.json")
            seen |= {Path(s["source"]).resolve() for s in trained["surfaces"].values()
                     if s.get("role") == "train"}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    inputs = [Path(p).resolve() for p in training.get("inputs", []) if isinstance(p, str)]
    prints = training.get("surface_fingerprints")
    prints = set(prints) if isinstance(prints, list) and prints else None  # [] says nothing
    leaks = []
    for name, s in manifest.get("surfaces", {}).items():
        if s.get("role") != "test":
            continue
        by_content = _recorded_surface(name, s, prints, trained_maps, map_shas)
        if by_content is not None:
            if by_content:
                leaks.append(name)
            continue
        if not isinstance(s.get("source"), str):
            continue
        src = Path(s["source"]).resolve()
        if src in seen or any(src == p or p in src.parents for p in inputs):
            leaks.append(name)
    return sorted(leaks)


def surfaces_seen_in_calibration(model_dir: Any, manifest: dict[str, Any],
                                 map_shas: dict[str, set[str]] | None = None
                                 ) -> list[str] | None:
    """The test surfaces of a dataset ``manifest`` among the clean parts the model in
    ``model_dir`` calibrated its thresholds on (``train --calibrate-on``; ``config.json``
    ``training.calibration_surfaces``, recorded since psinspect 0.4: by content, as
    :func:`surfaces_seen_in_training` traces training surfaces). Its verdicts and pixel
    threshold on those surfaces are not what an unseen part gets. None when the model folder
    cannot be read."""
    from pathlib import Path

    from psinspect.fileio import read_json

    try:
        record = read_json(Path(model_dir) / "config.json").get("training", {}).get(
            "calibration_surfaces", {})
        prints = set(record.get("surface_fingerprints") or []) or None
        shas = set(record.get("map_sha256") or [])
    except (OSError, TypeError, ValueError, AttributeError):
        return None
    return sorted(name for name, s in manifest.get("surfaces", {}).items()
                  if s.get("role") == "test"
                  and _recorded_surface(name, s, prints, shas, map_shas))


def _recorded_surface(name: str, surface: dict[str, Any], prints: set[str] | None,
                      shas: set[str], map_shas: dict[str, set[str]] | None) -> bool | None:
    """Whether a dataset's surface ``name`` (its manifest entry ``surface``) is one of a
    model's recorded surfaces, by content: one of its test maps' SHA-256 (``map_shas``) among
    ``shas``, or its capture's fingerprint among ``prints``; None where the records cannot
    tell (no fingerprints recorded, or none in the manifest)."""
    if shas & (map_shas or {}).get(name, set()):
        return True
    if prints is not None and isinstance(surface.get("fingerprint"), str):
        return surface["fingerprint"] in prints
    return None


def _check_same_input(source: object, digest: object, expected: Path, summary_path: Path
                      ) -> str:
    """Refuse a prediction made from another file than the ground truth's map (predictions of
    another dataset with the same map names): its recorded content hash ``digest``
    (``source_sha256``) differs from the map's, or, in summaries without one, its recorded
    ``source`` still exists, is not the same file and differs in content (a source that was
    moved or deleted is not checked then). Returns the map's SHA-256."""
    from psinspect.errors import PsinspectError
    from psinspect.fileio import file_sha256

    own = file_sha256(expected)
    if isinstance(digest, str):
        if digest != own:
            raise PsinspectError(f"{summary_path}: {expected.stem} was predicted from "
                                 f"{source}, whose content differs from {expected} "
                                 "(predictions of another dataset?)")
        return own
    if not isinstance(source, str) or not Path(source).is_file():
        return own
    src = Path(source)
    if os.path.samefile(src, expected) or file_sha256(src) == own:
        return own  # the map itself, or a copy of it
    raise PsinspectError(f"{summary_path}: {expected.stem} was predicted from {src}, not from "
                         f"{expected} (predictions of another dataset?)")


def evaluation_curves(items: Sequence[Any], max_fpr: float = 0.3) -> dict[str, Any]:
    """Pixel ROC, PRO and image ROC curves of a set of :class:`EvalItem` (object pixels)."""
    from psinspect.metrics import pro_curve, roc_curve

    s = np.concatenate([it.score[it.mask] for it in items])
    y = np.concatenate([it.gt[it.mask] for it in items])
    fpr, tpr, _ = roc_curve(s, y)
    pfpr, pro = pro_curve([it.score for it in items], [it.gt for it in items],
                          [it.mask for it in items])
    lab = np.array([bool(it.gt.any()) for it in items])
    img = None
    if lab.any() and (~lab).any():
        f, t, _ = roc_curve(np.array([it.image_score for it in items]), lab)
        img = (f, t)
    return {"pixel_roc": (fpr, tpr), "pro": (pfpr, pro), "image_roc": img, "max_fpr": max_fpr}


def select_panels(items: Sequence[Any], n_defective: int = 8, n_clean: int = 3) -> list[Any]:
    """Deterministic choice of maps to show: defective maps spread over the (name-sorted)
    list, and the clean maps with the highest image scores (the likeliest false alarms)."""
    bad = sorted((it for it in items if it.gt.any()), key=lambda it: it.name)
    good = sorted((it for it in items if not it.gt.any()), key=lambda it: -it.image_score)
    if len(bad) > n_defective:
        idx = np.linspace(0, len(bad) - 1, n_defective).round().astype(int)
        bad = [bad[i] for i in idx]
    return [*bad, *good[:n_clean]]


def write_evaluation(pred_dir: Any, ground_truth: Any, out: Any, *, force: bool = False,
                     max_fpr: float = 0.3) -> dict[str, Any]:
    """``psinspect evaluate``: metrics.json + report.html into ``out`` (staged).

    Besides the threshold-free metrics, ``metrics.json`` holds the operating point detect
    used (``operating_point``: its pixel and image thresholds, model, and the pooled pixel
    precision / recall / F1 / false-positive rate of the masks it wrote) and ``verdicts``
    (its pass/fail verdicts against the truth), and ``operating_points`` (the verdicts at
    the thresholds of other shares of good parts failing, :func:`model_operating_points`;
    ``operating_points_note`` says why where there are none)."""
    from pathlib import Path

    from psinspect.errors import PsinspectError
    from psinspect.fileio import atomic_write_bytes, save_json, staged_output_dir
    from psinspect.metrics import bootstrap_intervals, evaluate, mask_metrics, verdict_counts
    from psinspect.normalmap import load_normal_map

    items, info = load_eval_items(pred_dir, ground_truth)
    pred_dir = info["predictions"]  # (the folder, where its summary.json was named)
    try:
        metrics = evaluate(items, max_fpr=max_fpr)
    except ValueError as err:  # e.g. no defective test maps: nothing to measure
        raise PsinspectError(f"{ground_truth}: cannot evaluate its test maps ({err})") from None
    # how far the figures could move on other test surfaces of the same kinds: the maps of one
    # surface are drawn together (fixed seed, recorded)
    metrics["intervals"] = bootstrap_intervals(items, info["surfaces"], max_fpr=max_fpr,
                                               seed=0)
    metrics["operating_point"] = {
        "pixel_threshold": info.get("pixel_threshold"),
        "image_threshold": info.get("image_threshold"),
        "model": info.get("model"), "model_dir": info.get("model_dir"),
        "tta": info.get("tta"), "scale": info.get("scale"),
        **({"calibrated_thresholds": info["calibrated_thresholds"]}
           if isinstance(info.get("calibrated_thresholds"), dict) else {}),
        "predicted_masks": mask_metrics(info["pred_masks"], [it.gt for it in items],
                                        [it.mask for it in items])}
    metrics["verdicts"] = verdict_counts(info["verdicts"], info["defective"])
    metrics["operating_points"], metrics["operating_points_note"] = model_operating_points(
        info.get("model_dir"), info.get("model_weights_sha256"), info.get("tta"),
        [it.image_score for it in items], info["defective"], info["light_counts"],
        pixel_threshold=info["calibrated_pixel_threshold"])
    metrics["test_surfaces_seen_in_training"] = info["seen_in_training"]
    metrics["test_surfaces_seen_in_calibration"] = info["seen_in_calibration"]
    metrics["test_surface_reading_warnings"] = info["reading_warnings"]
    tested = sorted(set(info["surfaces"]))
    metrics["source"] = {"predictions": str(Path(pred_dir).resolve()),
                         "ground_truth": str(Path(ground_truth).resolve()),
                         "model": info.get("model"), "model_dir": info.get("model_dir"),
                         **({"model_changed": info["model_changed"]}
                            if info.get("model_changed") else {}),
                         **({"ground_truth_changed": info["ground_truth_changed"]}
                            if info.get("ground_truth_changed") else {}),
                         "splits": info["splits"], "test_surfaces": tested,
                         "unmatched_predictions": info["unmatched_predictions"]}
    thr = info.get("pixel_threshold")
    pred_of = dict(zip([it.name for it in items], info["pred_masks"], strict=True))
    verdict_of = dict(zip([it.name for it in items], info["verdicts"], strict=True))
    panels = []
    shown = select_panels(items)
    for it in shown:
        n, _ = load_normal_map(info["normals"][it.name], check_frame=False)
        t = float(thr) if thr is not None else float(np.quantile(it.score[it.mask], 0.999))
        ref_path = Path(pred_dir) / f"{it.name}_reference.png"
        ref = load_normal_map(ref_path, check_frame=False)[0] if ref_path.is_file() else None
        label = (f"{it.name}: {verdict_of[it.name].upper()} (image score "
                 f"{it.image_score:.3g}; {'defective' if it.gt.any() else 'clean'} map)")
        panels.append((label, panel_rgb(n, it.mask, ref, it.score, pred_of[it.name], t,
                                        it.gt)))
    curves = evaluation_curves(items, max_fpr)
    pooled, pm, v = metrics["pooled"], metrics["operating_point"]["predicted_masks"], \
        metrics["verdicts"]
    curves["areas"] = {"pixel_roc": pooled.get("pixel_auroc"), "pro": pooled.get("aupro"),
                       "image_roc": pooled.get("image_auroc")}
    curves["pixel_point"] = (pm["fpr"], pm["recall"])
    n_bad, n_good = v["defective_failed"] + v["defective_passed"], \
        v["clean_failed"] + v["clean_passed"]
    if n_bad and n_good:
        curves["image_point"] = (v["clean_failed"] / n_good, v["defective_failed"] / n_bad)
    n_def = sum(bool(it.gt.any()) for it in shown)
    html_text = report_html(metrics, curves, panels,
                            title=f"psinspect evaluation: {info.get('model') or 'predictions'}",
                            panel_counts=(n_def, len(shown) - n_def))
    with staged_output_dir(out, force, inputs=(pred_dir, ground_truth),
                           command="evaluate") as stage:
        save_json(stage / "metrics.json", metrics)
        atomic_write_bytes(stage / "report.html", html_text.encode("utf-8"))
    return metrics
