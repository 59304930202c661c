"""The whole pipeline as library functions (``psinspect run``), and the app's example inputs.

:func:`run_pipeline` goes from nothing (or a folder of captures) to ``OUT/report.html``:

1. captures: render a part family (:func:`psinspect.render.render_dataset`) or list the
   DiLiGenT-layout captures under ``--data``;
2. dataset: photometric stereo to normals, defects, splits with whole surfaces held out
   (:func:`psinspect.dataset.build_dataset`);
3. model: train the default model (:func:`psinspect.train.train_model`) or load the bundled one;
4. detect: score the held-out test maps (:mod:`psinspect.detect`);
5. evaluate + report: :func:`psinspect.metrics.evaluate`, :mod:`psinspect.report`.

Every stage reports through a ``progress(stage, message)`` callback, so the CLI prints one line
per stage. Frames: normal maps in the DiLiGenT camera frame (x right, y up, z toward the camera).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from psinspect.errors import PsinspectError
from psinspect.fileio import atomic_write_bytes, save_json, save_png

# --------------------------------------------------------------------------------------------
# example inputs for the app


#: the shipped examples: (file name, part family, defect types (empty = defect-free))
EXAMPLE_SPECS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("disc_scratch_dent_normals.png", "disc", ("scratch", "dent")),
    ("plate_clean_normals.png", "plate", ()),
    ("casting_scratch_capture.zip", "casting", ("scratch",)),
)


def _capture_zip_bytes(rp, name: str) -> bytes:  # rp: psinspect.render.RenderedPart
    """A plain-layout capture as zip bytes: 8-bit PNGs, ``lights.txt`` as slant/tilt degrees,
    ``light_intensities.txt`` and ``mask.png`` (what an inspection rig would export)."""
    import cv2

    buf = io.BytesIO()

    def entry(name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.external_attr = 0o100644 << 16  # regular file, rw-r--r--
        info.compress_type = zipfile.ZIP_DEFLATED
        return info

    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        lines = ["# format: slant_tilt", "# slant = angle from the camera axis, tilt = "
                 "azimuth counter-clockwise from +x (right), degrees"]
        for lx, ly, lz in np.asarray(rp.lights, np.float64):
            slant = math.degrees(math.acos(max(-1.0, min(1.0, lz))))
            tilt = math.degrees(math.atan2(ly, lx)) % 360.0
            lines.append(f"{slant:.4f} {tilt:.4f}")
        zf.writestr(entry(f"{name}/lights.txt"), "\n".join(lines) + "\n")
        zf.writestr(entry(f"{name}/light_intensities.txt"),
                    "".join(f"{v:.6f}\n" for v in np.asarray(rp.intensities, np.float64)))
        for i, img in enumerate(rp.images):
            q = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
            ok, png = cv2.imencode(".png", q)
            assert ok
            zf.writestr(entry(f"{name}/img_{i + 1:02d}.png"), png.tobytes())
        ok, png = cv2.imencode(".png", rp.mask.astype(np.uint8) * 255)
        zf.writestr(entry(f"{name}/mask.png"), png.tobytes())
    return buf.getvalue()


def write_examples(out: str | os.PathLike[str], *, seed: int = 2024, size: int = 256,
                   lights: int = 8) -> list[Path]:
    """Render the app's one-click examples into ``out`` (see :data:`EXAMPLE_SPECS`).

    Normal-map examples are photometric stereo (``robust``) on a rendered 12-light capture,
    encoded as 8-bit normal PNGs; the capture example is a zip in the plain layout with
    slant/tilt lights. Deterministic for a seed. Returns the written files.
    """
    from psinspect.capture import load_capture, write_capture
    from psinspect.normalmap import encode_png
    from psinspect.render import render_part
    from psinspect.stereo import solve

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (fname, family, types) in enumerate(EXAMPLE_SPECS):
        rng = np.random.default_rng([seed, i])
        is_zip = fname.endswith(".zip")
        rp = render_part(rng, size=size, family=family, lights=lights if is_zip else 12,
                         defects=len(types), defect_types=types or None, severity="high",
                         name=Path(fname).stem)
        if is_zip:
            written.append(atomic_write_bytes(out / fname, _capture_zip_bytes(rp, rp.part.name)))
            continue
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_capture(tmp, rp.images, rp.lights, rp.mask,
                          intensities=np.repeat(rp.intensities[:, None], 3, axis=1))
            cap = load_capture(tmp)
        res = solve(cap.images, cap.lights, cap.mask, solver="robust")
        written.append(save_png(out / fname, encode_png(res.normals, cap.mask)))
        if rp.defect_mask is not None:
            save_png(out / (Path(fname).stem + "_gt_mask.png"),
                     rp.defect_mask.astype(np.uint8) * 255)
    save_json(out / "examples.json", {
        "made_by": f"psinspect.pipeline.write_examples(out, seed={seed}, size={size}, "
                   f"lights={lights})",
        "examples": [{"file": f, "family": fam, "defects": list(t)} for f, fam, t in EXAMPLE_SPECS],
    })
    return written


if __name__ == "__main__":  # pragma: no cover - regenerate the shipped examples
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m psinspect.pipeline OUT_DIR")
    for p in write_examples(sys.argv[1]):
        print(p, p.stat().st_size)
    _ = PsinspectError
