"""Fuzz run of the capture and normal-map parsers (hypothesis-driven), plus huge-input checks.

Targets (each gets ``--cases`` generated inputs, from a fixed ``--seed``):

- ``lights file``: :func:`psinspect.capture.read_lights_file` on text built from number-like
  tokens, format headers and junk, on arbitrary text and on arbitrary bytes;
- ``capture folder``: :func:`psinspect.capture.load_capture` on a small valid capture with one
  file damaged (deleted, emptied, truncated, a byte flipped, bytes spliced in, replaced by
  random bytes; images, lights, intensities, filenames, mask, ground truth);
- ``normal-map file``: :func:`psinspect.normalmap.load_normal_map` on random bytes and damaged
  ``.npy`` / ``.png`` files;
- ``normal-map codec``: :func:`psinspect.normalmap.decode_png` on any 8- or 16-bit RGB or RGBA
  image and :func:`psinspect.normalmap.validate_normal_map` on any float array (NaN, Inf, any
  shape).

Every case must end as *accepted* (the result meets the documented contract: unit normals
inside the mask, zero outside; finite unit lights; consistent shapes) or *refused* (a
``PsinspectError`` naming the file). Anything else is a *crash* and is listed.

The huge-input part measures, each in a fresh process, the time and peak RSS of loading an
8192 x 8192 normal-map PNG (the largest accepted) and of refusing a 9000 x 9000 ``.npy`` and a
capture of 96 8192 x 8192 images (both refused from their headers).

Writes its block of the robustness section of BENCHMARKS.md.

    OMP_NUM_THREADS=2 python bench/fuzz_parsers.py --cases 2000
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import hypothesis  # noqa: E402
import numpy as np  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _robustness_section import date, machine, write_block  # noqa: E402

from psinspect.capture import (  # noqa: E402
    lights_from_slant_tilt,
    load_capture,
    read_lights_file,
    write_capture,
)
from psinspect.errors import PsinspectError  # noqa: E402
from psinspect.fileio import save_npy, save_png  # noqa: E402
from psinspect.normalmap import (  # noqa: E402
    decode_png,
    encode_png,
    load_normal_map,
    validate_normal_map,
)

# --------------------------------------------------------------------------------------------
# contracts


def _check_map(n: np.ndarray, m: np.ndarray) -> None:
    assert n.dtype == np.float32 and n.ndim == 3 and n.shape[2] == 3
    assert m.dtype == bool and m.shape == n.shape[:2] and m.any()
    assert np.isfinite(n).all() and not n[~m].any()
    assert np.allclose(np.linalg.norm(n[m], axis=1), 1.0, atol=1e-5)


def _check_lights(lights: np.ndarray) -> None:
    assert lights.dtype == np.float32 and lights.ndim == 2 and lights.shape[1] == 3
    assert np.isfinite(lights).all()
    assert np.allclose(np.linalg.norm(lights, axis=1), 1.0, atol=1e-5)


def _check_capture(c) -> None:
    k = c.images.shape[0]
    assert c.images.ndim == 3 and c.images.dtype == np.float32 and k >= 3
    assert np.isfinite(c.images).all()
    _check_lights(c.lights)
    assert c.lights.shape == (k, 3) and c.mask.shape == c.images.shape[1:] and c.mask.any()


# --------------------------------------------------------------------------------------------
# targets: (strategy, body(example, workdir) -> None; raises PsinspectError when refused)

_TOKENS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
    st.sampled_from(["nan", "inf", "-0", "1e309", "1e308", "1e-320", "abc", "#", ",", "0x10",
                     "# format: slant_tilt", "# format: elevation_azimuth", "# format: xyz",
                     "# format: bogus", "\t", "\u00a0", "1_0", "90", "-90", "360"]),
)
_NUM = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                 st.floats(-2, 2).map(lambda v: f"{v:.4f}"), st.sampled_from(["0", "1", "-1"]))
_LIGHTS_TEXT = st.one_of(
    st.lists(st.lists(_TOKENS, max_size=4).map(" ".join), max_size=12).map("\n".join),
    st.lists(st.tuples(_NUM, _NUM, _NUM).map(" ".join), min_size=1, max_size=12)
    .map("\n".join),
    st.tuples(st.sampled_from(["# format: slant_tilt", "# format: elevation_azimuth"]),
              st.lists(st.tuples(_NUM, _NUM).map(" ".join), min_size=1, max_size=12)
              .map("\n".join)).map("\n".join),
)


def _lights_body(x: str | bytes, work: Path) -> None:
    p = work / "lights.txt"
    p.write_bytes(x if isinstance(x, bytes) else x.encode("utf-8", "surrogatepass"))
    try:
        _check_lights(read_lights_file(p))
    except PsinspectError as err:
        assert str(p) in str(err), err
        raise


def _base_capture(root: Path) -> Path:
    rng = np.random.default_rng(11)
    k, size = 6, 16
    lights = lights_from_slant_tilt(rng.uniform(15, 45, k), np.linspace(0, 360, k,
                                                                       endpoint=False))
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2
    x, y = (xx - c) / (size * 0.45), -(yy - c) / (size * 0.45)
    mask = x**2 + y**2 < 0.9
    n = np.where(mask[..., None], np.stack([x, y, np.sqrt(np.clip(1 - x**2 - y**2, 0, None))],
                                           -1), 0)
    n = (n / np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-12)).astype(np.float32)
    imgs = np.maximum(np.einsum("hwc,kc->khw", n, lights), 0)[..., None] * rng.uniform(
        0.5, 0.9, (k, 1, 1, 3))
    return write_capture(root / "cap", imgs, lights, mask,
                         intensities=rng.uniform(0.8, 1.2, (k, 3)), normals_gt=n)


_DAMAGE = st.tuples(
    st.integers(0, 10**6),  # which file
    st.sampled_from(["delete", "empty", "truncate", "flip", "splice", "random"]),
    st.integers(0, 10**6), st.integers(1, 255), st.binary(max_size=64),
)


def _make_capture_body(base: Path) -> Callable[[tuple, Path], None]:
    files = sorted(p.name for p in base.iterdir())

    def body(d: tuple, work: Path) -> None:
        which, how, pos, val, junk = d
        cap = work / "cap"
        shutil.copytree(base, cap)
        victim = cap / files[which % len(files)]
        good = victim.read_bytes()
        i = pos % max(1, len(good))
        if how == "delete":
            victim.unlink()
        elif how == "empty":
            victim.write_bytes(b"")
        elif how == "truncate":
            victim.write_bytes(good[:i])
        elif how == "flip":
            victim.write_bytes(good[:i] + bytes([good[i] ^ val]) + good[i + 1:])
        elif how == "splice":
            victim.write_bytes(good[:i] + junk + good[i:])
        else:
            victim.write_bytes(junk)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _check_capture(load_capture(cap, workers=1))
        except PsinspectError as err:
            assert str(cap) in str(err), err
            raise
    return body


def _good_map_bytes(work: Path) -> dict[str, bytes]:
    yy, xx = np.mgrid[0:12, 0:12]
    x, y = (xx - 5.5) / 6, -(yy - 5.5) / 6
    mask = x**2 + y**2 < 0.9
    n = np.where(mask[..., None], np.stack([x, y, np.sqrt(np.clip(1 - x**2 - y**2, 0, 1))],
                                           -1), 0)
    n = (n / np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-12)).astype(np.float32)
    save_npy(work / "g.npy", n)
    save_png(work / "g.png", encode_png(n, mask))
    return {".npy": (work / "g.npy").read_bytes(), ".png": (work / "g.png").read_bytes()}


_MAP_DAMAGE = st.tuples(
    st.sampled_from([".npy", ".png"]),
    st.sampled_from(["random", "truncate", "flip", "splice"]),
    st.integers(0, 10**6), st.integers(1, 255), st.binary(max_size=300),
)


def _make_map_body(good: dict[str, bytes]) -> Callable[[tuple, Path], None]:
    def body(d: tuple, work: Path) -> None:
        suffix, how, pos, val, junk = d
        g = good[suffix]
        i = pos % len(g)
        data = {"random": junk, "truncate": g[:i],
                "flip": g[:i] + bytes([g[i] ^ val]) + g[i + 1:],
                "splice": g[:i] + junk + g[i:]}[how]
        p = work / f"map{suffix}"
        p.write_bytes(data)
        try:
            _check_map(*load_normal_map(p))
        except PsinspectError as err:
            assert str(p) in str(err), err
            raise
    return body


_CODEC = st.one_of(
    hnp.arrays(st.sampled_from([np.uint8, np.uint16]),
               st.tuples(st.integers(1, 8), st.integers(1, 8), st.sampled_from([3, 4]))),
    hnp.arrays(st.sampled_from([np.float32, np.float64]),
               hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
               elements=st.floats(allow_nan=True, allow_infinity=True, width=32)),
)


def _codec_body(arr: np.ndarray, work: Path) -> None:
    if arr.dtype in (np.uint8, np.uint16):
        n, m = decode_png(arr)
        expected = arr[..., 3] > 0 if arr.shape[2] == 4 else arr.max(axis=2) > 0
        assert (m == expected).all() and np.isfinite(n).all()
        if m.any():
            _check_map(n, m)
        return
    _check_map(*validate_normal_map(arr, name="array"))


# --------------------------------------------------------------------------------------------
# the runner


def fuzz(name: str, strategy: st.SearchStrategy, body: Callable[[object, Path], None],
         cases: int, rng_seed: int) -> dict:
    counts: Counter[str] = Counter()
    crashes: list[str] = []
    seconds: list[float] = []

    @seed(rng_seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(example: object) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            try:
                body(example, Path(tmp))
                counts["accepted"] += 1
            except PsinspectError:
                counts["refused"] += 1
            except Exception as err:  # noqa: BLE001 - a crash is what we are looking for
                counts["crash"] += 1
                crashes.append(f"{type(err).__name__}: {str(err)[:160]} <- {example!r:.200}")
            seconds.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    run()
    total = time.perf_counter() - t0
    n = sum(counts.values())
    print(f"{name}: {n} cases, {dict(counts)}, {total:.1f} s", flush=True)
    for c in crashes[:10]:
        print("   CRASH", c, flush=True)
    return {"name": name, "cases": n, "accepted": counts["accepted"],
            "refused": counts["refused"], "crash": counts["crash"], "crashes": crashes,
            "ms_per_case": 1000 * float(np.mean(seconds)) if seconds else float("nan"),
            "seconds": total}


# --------------------------------------------------------------------------------------------
# huge inputs, each in a fresh process (peak RSS of that process)

_HUGE_SNIPPET = r"""
import json, sys, time, numpy as np, cv2
from pathlib import Path
from psinspect.errors import PsinspectError
from psinspect.normalmap import load_normal_map
from psinspect.capture import load_capture
case, folder = sys.argv[1], Path(sys.argv[2])


def status_gb(field):  # VmRSS / VmHWM of this process (ru_maxrss would count the parent's)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9


base = status_gb("VmRSS")
t0 = time.perf_counter()
try:
    if case == "capture":
        load_capture(folder / "cap96")
    elif case == "detect":
        from psinspect.detect import write_detection_outputs
        from psinspect.modelstore import load_model_dir
        s = write_detection_outputs([folder / "sphere8k.npy"], folder / "det8k",
                                    load_model_dir(folder / "geo"))
        assert s["inputs"][0]["verdict"] in ("pass", "fail")
    else:
        n, m = load_normal_map(folder / case)
        assert m.all() and n.shape == (8192, 8192, 3)
    outcome = "done" if case == "detect" else "loaded"
except PsinspectError as err:
    outcome = "refused: " + str(err).replace(str(folder) + "/", "")
print(json.dumps({"seconds": time.perf_counter() - t0, "outcome": outcome, "base_gb": base,
                  "peak_gb": status_gb("VmHWM")}))
"""


def huge_inputs(work: Path, detect: bool = False) -> list[dict]:
    import cv2

    img = np.zeros((8192, 8192, 3), np.uint8)
    img[..., 0] = 255  # BGR: z = +1 (blue), x = y = 0 (128)
    img[..., 1:] = 128
    assert cv2.imwrite(str(work / "map8k.png"), img)
    del img
    with open(work / "map9k.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (9000, 9000, 3)})
        off = fh.tell()
    os.truncate(work / "map9k.npy", off + 9000 * 9000 * 3 * 4)  # sparse: no disk used
    cap = work / "cap96"
    cap.mkdir()
    ok, png = cv2.imencode(".png", np.zeros((8192, 8192), np.uint16))
    names = [f"{i:03d}.png" for i in range(96)]
    for nm in names:
        (cap / nm).write_bytes(png.tobytes())
    (cap / "filenames.txt").write_text("\n".join(names) + "\n")
    lights = lights_from_slant_tilt(np.full(96, 30.0), np.linspace(0, 360, 96, endpoint=False))
    (cap / "light_directions.txt").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in r) for r in lights) + "\n")
    cases = [("map8k.png", "8192 x 8192 normal-map PNG (largest accepted)"),
             ("map9k.npy", "9000 x 9000 float32 .npy (over the limit)"),
             ("capture", "capture of 96 images of 8192 x 8192 (16-bit)")]
    if detect:
        from psinspect.fileio import save_npy
        from psinspect.models import create_model
        from psinspect.modelstore import save_model_dir

        save_model_dir(work / "geo", create_model("geometric"), threshold=2.0,
                       image_threshold=3.0)
        yy, xx = np.mgrid[0:8192, 0:8192].astype(np.float32)
        x, y = (xx - 4095.5) / 3900, -(yy - 4095.5) / 3900
        del xx, yy
        z2 = 1 - x**2 - y**2
        n = np.where((z2 > 0.1)[..., None], np.stack([x, y, np.sqrt(np.clip(z2, 0, None))],
                                                      -1), 0).astype(np.float32)
        del x, y, z2
        n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-12)
        save_npy(work / "sphere8k.npy", n)
        del n
        cases.append(("detect", "`detect` on an 8192 x 8192 sphere map (geometric model, "
                                "tiled), all output files"))
    rows = []
    for case, label in cases:
        res = subprocess.run([sys.executable, "-c", _HUGE_SNIPPET, case, str(work)],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            rows.append({"label": label, "outcome": f"process failed ({res.returncode}): "
                         f"{res.stderr.strip().splitlines()[-1:]}", "seconds": float("nan"),
                         "base_gb": float("nan"), "peak_gb": float("nan")})
        else:
            rows.append({"label": label, **json.loads(res.stdout.strip().splitlines()[-1])})
        print(rows[-1], flush=True)
    return rows


def render(results: list[dict], huge: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "### Parser fuzzing (hypothesis)", "",
        f"Command: `OMP_NUM_THREADS=2 python bench/fuzz_parsers.py --cases {args.cases} "
        f"--seed {args.seed}{' --detect-8k' if args.detect_8k else ''}`  ",
        f"Machine: {machine()}  ",
        f"Date: {date()}", "",
        "Every generated input must be accepted with a result that meets the documented "
        "contract, or refused with a `PsinspectError` naming the file; a *crash* is any other "
        "exception or a broken contract. Hypothesis "
        f"{hypothesis.__version__} mixes literal constants of the code under test into what it "
        "draws, so the same seed draws other cases once psinspect's constants change: between "
        "versions of the code compare the crashes, not the accepted and refused counts.", "",
        "| target | cases | accepted | refused (clear error) | crashes | ms / case |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['name']} | {r['cases']} | {r['accepted']} | {r['refused']} | "
                     f"{r['crash']} | {r['ms_per_case']:.2f} |")
    total = sum(r["cases"] for r in results)
    crashes = sum(r["crash"] for r in results)
    lines += ["", f"Total: {total} cases, {crashes} crashes."]
    for r in results:
        for c in r["crashes"][:5]:
            lines.append(f"- crash in {r['name']}: `{c}`")
    if huge:
        lines += ["", "Huge inputs (each in a fresh process; peak RSS includes the ~"
                  f"{np.nanmin([h['base_gb'] for h in huge]):.2f} GB of the imported "
                  "libraries):", "",
                  "| input | outcome | seconds | peak RSS (GB) |", "|---|---|---|---|"]
        for h in huge:
            lines.append(f"| {h['label']} | {h['outcome']} | {h['seconds']:.2f} | "
                         f"{h['peak_gb']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=2000, help="generated inputs per target")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--no-huge", action="store_true", help="skip the huge-input part")
    ap.add_argument("--detect-8k", action="store_true",
                    help="also run detect on an 8192 x 8192 map (minutes; ~5 GB of memory)")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = _base_capture(root)
        good = _good_map_bytes(root)
        targets = [
            ("lights file", st.one_of(_LIGHTS_TEXT, st.text(max_size=300),
                                      st.binary(max_size=300)), _lights_body),
            ("capture folder", _DAMAGE, _make_capture_body(base)),
            ("normal-map file", _MAP_DAMAGE, _make_map_body(good)),
            ("normal-map codec", _CODEC, _codec_body),
        ]
        results = [fuzz(name, strat, body, args.cases, args.seed + i)
                   for i, (name, strat, body) in enumerate(targets)]
        huge = [] if args.no_huge else huge_inputs(root, detect=args.detect_8k)
    text = render(results, huge, args)
    if not args.no_write:
        write_block("fuzz", text)
        print("wrote the fuzz block of the robustness section of BENCHMARKS.md")
    else:
        print(text)
    return 1 if any(r["crash"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
