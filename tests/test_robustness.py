"""Bad input never crashes the tool, corrupts results or leaves half-written output (issue 6).

Two kinds of tests:

- property-based (hypothesis) tests over the public loaders and the normal-map codec: for ANY
  input they either return data that satisfies the documented contract (unit vectors inside
  the mask, zero outside; finite unit lights; consistent shapes) or raise
  :class:`PsinspectError` naming the file - never another exception;
- the issue's list of bad inputs through every CLI command: one ``error:`` line naming the file
  and the problem, exit code 2, nothing written to the output folder (and an existing output
  folder left exactly as it was).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from _robust_util import (
    error_lines,
    png_header_only,
    run_cli,
    sparse_npy,
    sphere_normals,
    tiny_capture,
    tree,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from psinspect import capture as capture_mod
from psinspect.capture import load_capture, read_lights_file
from psinspect.errors import PsinspectError
from psinspect.fileio import load_npy, save_npy, save_png
from psinspect.models import create_model
from psinspect.modelstore import save_model_dir
from psinspect.normalmap import (
    MAX_MAP_PIXELS,
    angular_error_deg,
    decode_png,
    encode_png,
    load_normal_map,
    validate_normal_map,
)

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _check_normal_map(n: np.ndarray, m: np.ndarray) -> None:
    """The documented contract of a loaded normal map."""
    assert n.dtype == np.float32 and n.ndim == 3 and n.shape[2] == 3
    assert m.dtype == bool and m.shape == n.shape[:2] and m.any()
    assert np.isfinite(n).all()
    np.testing.assert_allclose(np.linalg.norm(n[m], axis=1), 1.0, atol=1e-5)
    assert not n[~m].any()


# --------------------------------------------------------------------------------------------
# the normal-map codec


unit_fields = hnp.arrays(
    np.float32, st.tuples(st.integers(1, 8), st.integers(1, 8), st.just(3)),
    elements=st.floats(-1, 1, width=32),
)


@FAST
@given(unit_fields)
def test_png_codec_round_trip(raw: np.ndarray) -> None:
    norm = np.linalg.norm(raw, axis=2)
    mask = norm > 1e-2
    n = np.where(mask[..., None], raw / np.maximum(norm, 1e-12)[..., None], 0).astype(np.float32)
    img = encode_png(n, mask)
    assert img.dtype == np.uint8 and img.shape == n.shape
    back, back_mask = decode_png(img)
    assert (back_mask == mask).all()  # no unit vector encodes to black
    if mask.any():
        # 8-bit quantisation: half a step per component is at most ~0.4 degree
        assert angular_error_deg(back[mask], n[mask]).max() < 0.5


@FAST
@given(hnp.arrays(st.sampled_from([np.uint8, np.uint16]),
                  st.tuples(st.integers(1, 6), st.integers(1, 6), st.sampled_from([3, 4]))))
def test_decode_any_rgb_or_rgba_image(img: np.ndarray) -> None:
    """Every RGB(A) image decodes to unit vectors in its mask, unless more than 5 % of the
    mask decodes 0.1 or more off unit length: then it is not a normal map, and refused."""
    expect = img[..., 3] > 0 if img.shape[2] == 4 else img.max(axis=2) > 0
    raw = img[..., :3].astype(np.float64) * (2.0 / np.iinfo(img.dtype).max) - 1.0
    inner = ndimage.binary_erosion(expect, np.ones((3, 3), bool), border_value=0)
    length = np.linalg.norm(raw[inner if inner.any() else expect], axis=-1)
    if length.size and np.mean(np.abs(length - 1.0) > 0.1) > 0.05:
        with pytest.raises(PsinspectError, match="not a normal map"):
            decode_png(img)
        return
    n, m = decode_png(img)
    assert (m == expect).all()
    assert np.isfinite(n).all() and not n[~m].any()
    np.testing.assert_allclose(np.linalg.norm(n[m], axis=1), 1.0, atol=1e-5)


def test_16_bit_and_rgba_normal_pngs_load_exactly(tmp_path: Path) -> None:
    """16-bit RGB (and RGBA, alpha = mask) normal PNGs, as PS programs write them, load through
    :func:`load_normal_map` with 16-bit precision, channels in R=x, G=y, B=z order."""
    rng = np.random.default_rng(4)
    v = rng.normal(size=(20, 30, 3)) + [0.0, 0.0, 2.5]
    n = (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)
    mask = np.ones((20, 30), bool)
    mask[:4] = False
    n[~mask] = 0.0
    rgb16 = np.clip(np.rint((n + 1.0) * 32767.5), 0, 65535).astype(np.uint16)
    rgb16[~mask] = 0
    cv2.imwrite(str(tmp_path / "n16.png"), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    back, m = load_normal_map(tmp_path / "n16.png")
    assert (m == mask).all()
    # float32 angles resolve ~0.02 deg near zero; 8-bit PNGs are off by up to ~0.4 deg
    assert angular_error_deg(back[mask], n[mask]).max() < 0.05
    rgba = np.dstack([rgb16, np.where(mask, 65535, 0).astype(np.uint16)])
    rgba[~mask, :3] = 32768  # background colour that is not black: alpha decides
    cv2.imwrite(str(tmp_path / "n16a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    back_a, m_a = load_normal_map(tmp_path / "n16a.png")
    assert (m_a == mask).all()
    np.testing.assert_array_equal(back_a, back)


@FAST
@given(hnp.arrays(st.sampled_from([np.float32, np.float64]),
                  hnp.array_shapes(min_dims=2, max_dims=3, min_side=0, max_side=5),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_validate_any_float_array(arr: np.ndarray) -> None:
    try:
        n, m = validate_normal_map(arr, name="arr.npy")
    except PsinspectError as err:
        assert str(err).startswith("arr.npy: ")
        return
    _check_normal_map(n, m)


@FAST
@given(unit_fields, st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 2.0, 1e30]),
       st.integers(0, 10_000))
def test_validate_refuses_one_bad_pixel(raw: np.ndarray, value: float, where: int) -> None:
    norm = np.linalg.norm(raw, axis=2, keepdims=True)
    n = np.where(norm > 1e-2, raw / np.maximum(norm, 1e-12), 0).astype(np.float32)
    mask = np.ones(n.shape[:2], bool)
    n[~(norm[..., 0] > 1e-2)] = (0, 0, 1)
    flat = n.reshape(-1, 3)
    flat[where % flat.shape[0]] = value
    with pytest.raises(PsinspectError, match=r"^map: "):
        validate_normal_map(n, mask, name="map")


# --------------------------------------------------------------------------------------------
# normal-map files: any bytes, and mutations of good files


def _good_map_files(folder: Path) -> dict[str, bytes]:
    n, m = sphere_normals(12)
    save_npy(folder / "good.npy", n)
    save_png(folder / "good.png", encode_png(n, m))
    return {"npy": (folder / "good.npy").read_bytes(), "png": (folder / "good.png").read_bytes()}


def _load_map_or_error(path: Path) -> None:
    try:
        n, m = load_normal_map(path)
    except PsinspectError as err:
        assert str(path) in str(err)
        return
    _check_normal_map(n, m)


@FAST
@given(st.binary(max_size=400), st.sampled_from([".npy", ".png", ".PNG"]))
def test_load_normal_map_any_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / f"map{suffix}"
        p.write_bytes(data)
        _load_map_or_error(p)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["npy", "png"]), st.data())
def test_load_normal_map_mutated_file(kind: str, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        good = _good_map_files(Path(tmp))[kind]
        how = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
        if how == "truncate":
            bad = good[:data.draw(st.integers(0, len(good) - 1))]
        elif how == "flip":
            i = data.draw(st.integers(0, len(good) - 1))
            bad = good[:i] + bytes([good[i] ^ data.draw(st.integers(1, 255))]) + good[i + 1:]
        else:
            i = data.draw(st.integers(0, len(good)))
            bad = good[:i] + data.draw(st.binary(min_size=1, max_size=32)) + good[i:]
        p = Path(tmp) / f"bad.{kind}"
        p.write_bytes(bad)
        _load_map_or_error(p)


@FAST
@given(st.binary(max_size=300))
def test_load_npy_any_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "x.npy"
        p.write_bytes(b"\x93NUMPY" + data)
        try:
            arr = load_npy(p)
        except PsinspectError as err:
            assert str(p) in str(err)
            return
        assert isinstance(arr, np.ndarray) and not arr.dtype.hasobject


# --------------------------------------------------------------------------------------------
# lights files


_TOKENS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
    st.sampled_from(["nan", "inf", "-0", "1e309", "1e308", "1e-320", "abc", "#", ",", "0x10",
                     "# format: slant_tilt", "# format: elevation_azimuth", "# format: xyz",
                     "# format: bogus", "\t", "\u00a0", "1_0"]),
)
_LINES = st.lists(st.lists(_TOKENS, max_size=4).map(" ".join), max_size=8).map("\n".join)


def _lights_or_error(path: Path) -> None:
    try:
        lights = read_lights_file(path)
    except PsinspectError as err:
        assert str(path) in str(err)
        return
    assert lights.dtype == np.float32 and lights.ndim == 2 and lights.shape[1] == 3
    assert lights.shape[0] >= 1 and np.isfinite(lights).all()
    np.testing.assert_allclose(np.linalg.norm(lights, axis=1), 1.0, atol=1e-5)


@settings(max_examples=150, deadline=None)
@given(st.one_of(_LINES, st.text(max_size=200)))
def test_lights_file_any_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "lights.txt"
        p.write_text(text, encoding="utf-8")
        _lights_or_error(p)


@FAST
@given(st.binary(max_size=200))
def test_lights_file_any_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "lights.txt"
        p.write_bytes(data)
        _lights_or_error(p)


@pytest.mark.parametrize("text", ["1e308 1e308 1e308\n0 0 1\n", "-1e300 0 1e300\n",
                                  "3e-300 0 4e-300\n"])
def test_lights_extreme_magnitudes(tmp_path: Path, text: str) -> None:
    """Directions are directions at any scale: no overflow to zero/NaN vectors."""
    p = tmp_path / "lights.txt"
    p.write_text(text)
    _lights_or_error(p)


# --------------------------------------------------------------------------------------------
# capture folders: random damage to any file


@pytest.fixture(scope="module")
def base_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_capture(tmp_path_factory.mktemp("base") / "cap", k=5, size=12)


def _capture_contract(cap) -> None:
    k = cap.images.shape[0]
    assert cap.images.ndim == 3 and cap.images.dtype == np.float32 and k >= 3
    assert np.isfinite(cap.images).all()
    assert cap.lights.shape == (k, 3) and np.isfinite(cap.lights).all()
    np.testing.assert_allclose(np.linalg.norm(cap.lights, axis=1), 1.0, atol=1e-5)
    assert cap.mask.shape == cap.images.shape[1:] and cap.mask.any()
    assert len(cap.filenames) == k


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_capture_any_damage(base_capture: Path, data: st.DataObject) -> None:
    files = sorted(p.name for p in base_capture.iterdir())
    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "cap"
        shutil.copytree(base_capture, cap)
        victim = cap / data.draw(st.sampled_from(files))
        good = victim.read_bytes()
        how = data.draw(st.sampled_from(["empty", "truncate", "flip", "random", "delete"]))
        if how == "delete":
            victim.unlink()
        elif how == "empty":
            victim.write_bytes(b"")
        elif how == "truncate":
            victim.write_bytes(good[:data.draw(st.integers(0, max(0, len(good) - 1)))])
        elif how == "flip":
            i = data.draw(st.integers(0, len(good) - 1))
            victim.write_bytes(good[:i] + bytes([good[i] ^ data.draw(st.integers(1, 255))])
                               + good[i + 1:])
        else:
            victim.write_bytes(data.draw(st.binary(max_size=200)))
        try:
            with warnings.catch_warnings():  # a deleted mask.png is a warning, not an error
                warnings.simplefilter("ignore", UserWarning)
                c = load_capture(cap)
        except PsinspectError as err:
            assert str(cap) in str(err)
            return
        _capture_contract(c)


# --------------------------------------------------------------------------------------------
# the bad capture inputs through `psinspect normals` (and load_capture)


def _write_png(path: Path, img: np.ndarray) -> None:
    assert cv2.imwrite(str(path), img)


def _zero_byte_image(cap: Path) -> None:
    (cap / "002.png").write_bytes(b"")


def _truncated_image(cap: Path) -> None:
    p = cap / "002.png"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _mixed_sizes(cap: Path) -> None:
    _write_png(cap / "003.png", np.zeros((20, 16), np.uint16))


def _mixed_bit_depths(cap: Path) -> None:
    img = cv2.imread(str(cap / "003.png"), cv2.IMREAD_UNCHANGED)
    _write_png(cap / "003.png", (img >> 8).astype(np.uint8))


def _lights(text: str) -> Callable[[Path], None]:
    def f(cap: Path) -> None:
        (cap / "light_directions.txt").write_text(text)
    return f


def _lights_bytes(cap: Path) -> None:
    (cap / "light_directions.txt").write_bytes(b"\xff\xfe\x00garbage\x80\n")


def _empty_mask(cap: Path) -> None:
    _write_png(cap / "mask.png", np.zeros((16, 16), np.uint8))


def _wrong_size_mask(cap: Path) -> None:
    _write_png(cap / "mask.png", np.full((16, 17), 255, np.uint8))


def _zero_byte_mask(cap: Path) -> None:
    (cap / "mask.png").write_bytes(b"")


def _huge_images(cap: Path) -> None:
    for p in cap.glob("0*.png"):
        p.write_bytes(png_header_only(6000, 5000, 16, 0))


def _bomb_image(cap: Path) -> None:
    (cap / "001.png").write_bytes(png_header_only(60000, 60000, 16, 0))


def _nan_gt(cap: Path) -> None:
    gt = np.load(cap / "Normal_gt.npy")
    gt[3, 3] = np.nan
    np.save(cap / "Normal_gt.npy", gt)


def _pickled_gt(cap: Path) -> None:
    np.save(cap / "Normal_gt.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)


_GOOD_LIGHTS = "0 0 1\n0.5 0 1\n0 0.5 1\n-0.5 0 1\n0 -0.5 1\n"

CAPTURE_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("zero-byte image", _zero_byte_image, r"002\.png: cannot read image"),
    ("truncated image", _truncated_image, r"002\.png: cannot read image"),
    ("mixed sizes", _mixed_sizes, r"003\.png: image size 16x20 differs from 001\.png"),
    ("mixed bit depths", _mixed_bit_depths, r"003\.png: 8-bit image but 001\.png is 16-bit"),
    ("lights: too few", _lights(_GOOD_LIGHTS.split("\n", 1)[1]),
     r"light_directions\.txt: 4 lights but 5 images"),
    ("lights: too many", _lights(_GOOD_LIGHTS + "0 0 1\n"),
     r"light_directions\.txt: 6 lights but 5 images"),
    ("lights: NaN", _lights(_GOOD_LIGHTS.replace("0.5 0 1", "nan 0 1")),
     r"light_directions\.txt: light 2 has a non-finite value"),
    ("lights: Inf", _lights(_GOOD_LIGHTS.replace("0 0.5 1", "0 inf 1")),
     r"light_directions\.txt: light 3 has a non-finite value"),
    ("lights: zero vector", _lights(_GOOD_LIGHTS.replace("-0.5 0 1", "0 0 0")),
     r"light_directions\.txt: light 4 is a zero vector"),
    ("lights: garbage", _lights("hello world\n"), r"light_directions\.txt: line 1 is not numbers"),
    ("lights: binary", _lights_bytes, r"light_directions\.txt: cannot read lights file"),
    ("lights: empty", _lights(""), r"light_directions\.txt: lights file is empty"),
    ("lights: ragged", _lights(_GOOD_LIGHTS + "1 2\n"),
     r"light_directions\.txt: rows have different numbers of values"),
    ("mask: empty", _empty_mask, r"mask\.png: mask is empty"),
    ("mask: wrong size", _wrong_size_mask, r"mask\.png: mask size 17x16 differs"),
    ("mask: zero bytes", _zero_byte_mask, r"mask\.png: cannot read image"),
    ("huge images", _huge_images, r"001\.png: image is 6000x5000 pixels, more than the limit"),
    ("decompression bomb", _bomb_image, r"001\.png: image too large to read"),
    ("ground truth: NaN", _nan_gt, r"Normal_gt\.npy: ground-truth normals must be finite"),
    ("ground truth: pickle", _pickled_gt, r"Normal_gt\.npy: holds Python objects"),
]


@pytest.mark.parametrize(("breakage", "pattern"), [(c[1], c[2]) for c in CAPTURE_CASES],
                         ids=[c[0] for c in CAPTURE_CASES])
def test_bad_capture_through_cli(tmp_path: Path, monkeypatch, capsys, breakage,
                                 pattern: str) -> None:
    cap = tiny_capture(tmp_path / "cap", k=5, size=16, with_gt=True)
    (cap / "light_directions.txt").write_text(_GOOD_LIGHTS)
    breakage(cap)
    with pytest.raises(PsinspectError, match=pattern):
        load_capture(cap)
    # a fresh output folder: never created
    out = tmp_path / "out"
    code, stdout, err = run_cli(["normals", cap, "-o", out], monkeypatch, capsys)
    assert code == 2, err
    errs = error_lines(err)
    assert len(errs) == 1 and re.search(pattern, errs[0]) and str(cap) in errs[0], err
    assert "Traceback" not in err
    assert not out.exists()
    # an existing output folder with --force: left exactly as it was, no staging leftovers
    old = tmp_path / "old"
    old.mkdir()
    (old / "normals.npy").write_bytes(b"previous result")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(["normals", cap, "-o", old, "--force"], monkeypatch, capsys)
    assert code == 2 and re.search(pattern, err)
    assert tree(old) == {"normals.npy": b"previous result"}
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_capture_memory_budget(tmp_path: Path, monkeypatch, capsys) -> None:
    """A capture whose float32 image stack would not fit the budget is refused from the
    headers, before any image is decoded."""
    cap = tiny_capture(tmp_path / "cap", k=5, size=16)
    monkeypatch.setattr(capture_mod, "MAX_CAPTURE_BYTES", 4 * 16 * 16 * 4)
    decoded: list[str] = []
    real = capture_mod._imread
    monkeypatch.setattr(capture_mod, "_imread", lambda p: (decoded.append(p.name), real(p))[1])
    with pytest.raises(PsinspectError, match=r"001\.png: 5 images of 16x16 pixels need .* GiB"):
        load_capture(cap)
    assert decoded == []
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2 and "use fewer lights" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# the bad normal maps through the commands that read them


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=arr.dtype.hasobject)
    return buf.getvalue()


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _pil_png(rgb: np.ndarray, mode: str) -> bytes:
    """An RGB image saved as a PNG of another pixel format (OpenCV reads them as colour)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _good() -> np.ndarray:
    return sphere_normals(24)[0]


def _with(value: float) -> np.ndarray:
    n = _good()
    n[12, 12] = value
    return n


MAP_CASES: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("NaN", "nan.npy", lambda: _npy(_with(np.nan)), r"contains NaN or Inf"),
    ("Inf", "inf.npy", lambda: _npy(_with(np.inf)), r"contains NaN or Inf"),
    ("4 channels", "rgba.npy", lambda: _npy(np.dstack([_good(), np.ones((24, 24))])),
     r"expected shape \(H, W, 3\), got \(24, 24, 4\)"),
    ("2-D", "flat.npy", lambda: _npy(_good()[..., 2]), r"expected shape \(H, W, 3\)"),
    ("non-unit", "long.npy", lambda: _npy(_good() * 1.5), r"not unit vectors"),
    ("all zeros", "zeros.npy", lambda: _npy(np.zeros((24, 24, 3), np.float32)),
     r"empty mask"),
    ("integers", "int.npy", lambda: _npy(np.ones((24, 24, 3), np.int32)),
     r"expected float values"),
    ("zero bytes npy", "empty.npy", lambda: b"", r"not a readable \.npy array"),
    ("truncated npy", "cut.npy", lambda: _npy(_good())[:-100], r"truncated \.npy file"),
    ("pickle", "obj.npy", lambda: _npy(np.array([{"a": 1}], dtype=object)),
     r"holds Python objects"),
    ("zero bytes png", "empty.png", lambda: b"", r"cannot read image"),
    ("truncated png", "cut.png", lambda: _png(encode_png(_good()))[:200], r"cannot read image"),
    ("16-bit grey png", "deep.png", lambda: _png(np.full((24, 24), 40000, np.uint16)),
     r"normal PNG must be 8- or 16-bit RGB or RGBA"),
    ("grey png", "grey.png", lambda: _png(np.full((24, 24), 200, np.uint8)),
     r"normal PNG must be 8- or 16-bit RGB or RGBA"),
    ("RGBA png, transparent", "clear.png", lambda: _png(np.zeros((24, 24, 4), np.uint8)),
     r"empty mask"),
    ("white png", "white.png", lambda: _png(np.full((24, 24, 3), 255, np.uint8)),
     r"not a normal map: 100% of its object's pixels decode to vectors of length outside"),
    ("palette png", "pal.png", lambda: _pil_png(encode_png(_good()), "P"),
     r"normal PNG must be 8- or 16-bit RGB or RGBA, got a palette \(indexed\) PNG \(mode "
     r"P\); a palette holds at most 256 normals: save the map as RGB\(A\)"),
    ("grey + alpha png", "la.png", lambda: _pil_png(encode_png(_good()), "LA"),
     r"normal PNG must be 8- or 16-bit RGB or RGBA, got a greyscale PNG \(mode LA\)"),
    ("not an image", "text.png", lambda: b"hello, I am not a PNG\n", r"cannot read image"),
    ("huge png header", "huge.png", lambda: png_header_only(9000, 8000),
     r"normal map is 9000 x 8000 pixels, more than the limit"),
    ("wrong suffix", "map.exr", lambda: _npy(_good()), r"unsupported normal-map format"),
]


@pytest.fixture(scope="module")
def geo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training-free model directory (fast to make and to score with)."""
    return save_model_dir(tmp_path_factory.mktemp("model") / "geo", create_model("geometric"),
                          threshold=2.0, image_threshold=3.0)


def _map_commands(path: Path, out: Path, model: Path) -> dict[str, list]:
    """Every command that reads normal maps -> its argument list (the bad map comes last
    where good inputs come first, so the error must name the right one)."""
    good = out.parent / "good_input.npy"
    save_npy(good, sphere_normals(24)[0])
    return {
        "defects": ["defects", path, "-o", out],
        "detect": ["detect", good, path, "--model", model, "-o", out],
        "train": ["train", good, path, "--model", "geometric", "-o", out],
    }


@pytest.mark.parametrize(("name", "make", "pattern"), [c[1:] for c in MAP_CASES],
                         ids=[c[0] for c in MAP_CASES])
def test_bad_normal_map_through_cli(tmp_path: Path, monkeypatch, capsys, geo_model: Path,
                                    name: str, make: Callable[[], bytes], pattern: str) -> None:
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(PsinspectError, match=re.escape(str(path)) + ": .*" + pattern):
        load_normal_map(path)
    for cmd, args in _map_commands(path, tmp_path / "out", geo_model).items():
        code, _, err = run_cli(args, monkeypatch, capsys)
        errs = error_lines(err)
        assert code == 2, (cmd, err)
        assert len(errs) == 1 and str(path) in errs[0] and re.search(pattern, errs[0]), (cmd, err)
        assert not (tmp_path / "out").exists(), cmd


def test_huge_normal_map_refused_without_allocating(tmp_path: Path) -> None:
    """An over-limit map (here a sparse 9000 x 9000 float32 file, ~1 GB as a dense read) is
    refused from its header: peak Python-side allocation stays tiny."""
    side = int(np.sqrt(MAX_MAP_PIXELS)) + 808
    big = sparse_npy(tmp_path / "big.npy", (side, side, 3))
    assert big.stat().st_size > 900e6
    huge_header = tmp_path / "huge.npy"
    with open(huge_header, "wb") as fh:  # a header claiming 223 GiB and no data
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000, 3)})
    tracemalloc.start()
    try:
        for p in (big, huge_header):
            with pytest.raises(PsinspectError, match="more than the limit"):
                load_normal_map(p)
        with pytest.raises(PsinspectError, match=r"223\.5 GiB, more than the limit"):
            load_npy(huge_header)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6


# --------------------------------------------------------------------------------------------
# every command: a non-empty output folder is never overwritten without --force


def _command_args(tmp_path: Path, out: Path) -> dict[str, list]:
    cap = tiny_capture(tmp_path / "cap", k=5, size=16)
    n, _ = sphere_normals(24)
    save_npy(tmp_path / "good.npy", n)
    return {
        "normals": ["normals", cap, "-o", out],
        "defects": ["defects", tmp_path / "good.npy", "-o", out],
        "render": ["render", "-o", out, "--parts", "1", "--size", "32", "--lights", "4"],
        "dataset": ["dataset", cap, "-o", out],
        "run": ["run", "-o", out, "--quick"],
        "train": ["train", tmp_path / "good.npy", tmp_path / "good.npy", "--model", "geometric",
                  "-o", out],
        "detect": ["detect", tmp_path / "good.npy", "-o", out],
        "evaluate": ["evaluate", tmp_path, tmp_path, "-o", out],
    }


def test_non_empty_output_needs_force(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for cmd, args in _command_args(tmp_path, out).items():
        code, _, err = run_cli(args, monkeypatch, capsys)
        errs = error_lines(err)
        assert code == 2 and len(errs) == 1, (cmd, err)
        assert f"{out}: output folder is not empty (use --force" in errs[0], (cmd, err)
        assert tree(out) == {"keep.txt": b"mine"}, cmd
    # a file where the output folder should be
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(["defects", tmp_path / "good.npy", "-o", tmp_path / "afile"],
                           monkeypatch, capsys)
    assert code == 2 and "output path exists and is not a folder" in err


@pytest.mark.parametrize(("args", "pattern"), [
    (["render", "--parts", "0"], r"--parts must be between 1 and 10000, got 0"),
    (["render", "--parts", "100000000000"], r"--parts must be between 1 and 10000"),
    (["render", "--instances", "100000000000"], r"--instances must be between 1 and 10000"),
    (["render", "--max-defects", "100000", "--defect-rate", "1"],
     r"--max-defects must be between 1 and 100"),
    (["render", "--size", "100000"], r"--size must be between"),
    (["render", "--lights", "2"], r"needs at least 3 lights"),
    (["render", "--max-defects", "0", "--defect-rate", "1"],
     r"--max-defects must be between 1 and 100, got 0"),
    (["render", "--defect-rate", "nan"], r"--defect-rate must be in \[0, 1\]"),
    (["render", "--families", ","], r"--families ',': names nothing"),
    (["defects", "GOOD", "--types", ""], r"--types '': names nothing"),
    (["render", "--layout", "spiral"], r"unknown light layout 'spiral'"),
    (["render", "--severity", "-1"], r"--severity"),
    (["render", "--severity", "nan"], r"--severity"),
    (["render", "--severity", "0.1-inf"], r"--severity"),
    (["defects", "GOOD", "--per-image", "100000"], r"--per-image must be between 1 and 100"),
    (["defects", "GOOD", "--min-angle", "nan"], r"--min-angle must be a number of degrees betw"),
    (["defects", "GOOD", "--min-angle", "0"], r"--min-angle must be a number of degrees betw"),
    (["defects", "GOOD", "--min-angle", "90"], r"--min-angle must be a number of degrees betw"),
    (["defects", "GOOD", "--min-angle", "89", "--severity", "low"], r"good\.npy: could not"),
    (["defects", "GOOD", "--along", "foo"], r"^error: --along must be 'normal' or 'view'"),
    (["defects", "GOOD", "--types", "smudge"], r"unknown defect type"),
    (["defects", "missing.npy"], r"missing\.npy: file not found"),
    (["dataset", "CAP", "--solver", "magic"], r"solver"),
    (["dataset", "CAP", "--augment", "twirl"], r"twirl"),
    (["dataset", "nowhere"], r"nowhere: capture folder not found"),
    (["dataset", "CAP", "--min-angle", "-1"], r"--min-angle must be a number of degrees betw"),
    (["dataset", "CAP", "--lights-per-subset", "2"], r"--lights-per-subset 2: must be between"),
    (["normals", "CAP", "--gamma", "-1"], r"--gamma must be a number between 0\.1 and 10 "),
    (["normals", "CAP", "--gamma", "1e6"], r"--gamma must be a number between 0\.1 and 10 "),
    (["normals", "CAP", "--lights", "0-3"], r"--lights '0-3'"),
    (["train", "GOOD", "GOOD2", "--hp", '{"bogus": 1}'], r"unknown hyperparameter 'bogus'"),
    (["train", "GOOD", "GOOD2", "--hp", '{"channels": "abc"}'], r"bad hyperparameters"),
    (["train", "GOOD", "GOOD2", "--hp", '{"channels": [-1]}'], r"bad hyperparameters"),
    (["train", "GOOD", "GOOD2", "--hp", "{oops"], r"--hp: not valid JSON"),
    (["train", "GOOD", "GOOD2", "--threshold-fpr", "2"], r"--threshold-fpr must be in"),
    (["train", "GOOD", "GOOD2", "--epochs", "0"], r"--epochs must be >= 1"),
    # (accepted silently before, and not recorded: an audit)
    (["train", "GOOD", "GOOD2", "--model", "geometric", "--epochs", "3", "--patience", "2"],
     r"--epochs, --patience: not used by --model geometric, which is training-free, not "
     r"trained by epochs: drop them"),
    (["train", "GOOD", "GOOD2", "--model", "variation", "--batch-size", "4"],
     r"--batch-size: not used by --model variation, which is fitted to the good parts"),
    (["train", "GOOD", "MODEL"],
     r"geo\w*: a model folder, not training data \(to fine-tune it, give it with --init-from\)"),
    (["train", "GOOD", "GOOD2", "--batch-size", "0"], r"--batch-size must be between 1 and 256"),
    # (a batch is made whole before Ctrl-C is honoured: 20000 crops ignored it for minutes)
    (["train", "GOOD", "GOOD2", "--batch-size", "20000"],
     r"--batch-size must be between 1 and 256, got 20000"),
    (["train", "GOOD", "GOOD2", "--model", "oracle"], r"--model 'oracle': unknown"),
    (["train", "GOOD", "--model", "geometric"], r"need at least 2 good parts"),
    (["train", "GOOD", "GOOD2", "--resume"], r"no checkpoint to resume from"),
    (["detect", "GOOD", "--model", "MODEL", "--threshold", "nan"], r"--threshold must be"),
    (["detect", "GOOD", "--model", "MODEL", "--threshold", "-1"], r"--threshold must be"),
    (["detect", "GOOD", "--model", "MODEL", "--image-threshold", "inf"],
     r"--image-threshold must be"),
    (["detect", "GOOD", "--model", "MODEL", "--image-threshold", "-2"],
     r"--image-threshold must be"),
    (["detect", "CAP", "--model", "MODEL", "--solver", "magic"], r"--solver 'magic'"),
    (["detect", "GOOD", "--model", "nowhere"], r"nowhere: model directory not found"),
    (["detect", "GOOD", "--model", "CAP"],
     r"config\.json: missing \(not a psinspect model directory but a capture folder\)"),
    (["detect", "missing.npy", "--model", "MODEL"], r"missing\.npy: input not found"),
    (["detect", "GOOD", "missing.npy", "--model", "MODEL"],
     r"^error: [^:]*missing\.npy: input not found$"),
    (["run", "--quick", "--model", "variation"], r"--model variation learns one part"),
    (["run", "--pretrained", "--model", "unet-ae"], r"--pretrained uses the bundled model"),
    (["run", "--pretrained", "--epochs", "3"], r"--epochs and --from-scratch do not apply"),
    (["run", "--pretrained", "--quick", "--data", "CAP"], r"no surface left for testing"),
    (["run", "--quick", "--model", "nosuch"], r"unknown model 'nosuch'"),
    (["run", "--data", "CAP", "--parts", "3"], r"--parts sets how many parts are rendered"),
    (["evaluate", "GOOD", "GOOD", "--max-fpr", "0"], r"--max-fpr must be in"),
    (["evaluate", "CAP", "CAP"], r"summary\.json: missing"),
])
def test_bad_arguments(tmp_path: Path, monkeypatch, capsys, geo_model: Path, args: list[str],
                       pattern: str) -> None:
    cap = tiny_capture(tmp_path / "cap", k=5, size=16)
    save_npy(tmp_path / "good.npy", sphere_normals(24)[0])
    save_npy(tmp_path / "good2.npy", sphere_normals(20)[0])
    subst = {"GOOD": tmp_path / "good.npy", "GOOD2": tmp_path / "good2.npy", "CAP": cap,
             "MODEL": geo_model, "missing.npy": tmp_path / "missing.npy"}
    out = tmp_path / "out"
    argv = [subst.get(a, a) for a in args] + ["-o", out]
    code, _, err = run_cli(argv, monkeypatch, capsys)
    errs = error_lines(err)
    assert code == 2 and len(errs) == 1 and re.search(pattern, errs[0]), err
    assert "Traceback" not in err
    assert not out.exists()


def test_train_names_a_lone_bad_input_before_counting(tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    """One training input that cannot be used gets its own error (what the user must fix),
    not "need at least 2 good parts"; a lone good map gets that one."""
    bad = sphere_normals(24)[0]
    bad[12, 12] = np.nan
    save_npy(tmp_path / "nan.npy", bad)
    (tmp_path / "fake.png").write_bytes(b"not a png")
    save_npy(tmp_path / "good.npy", sphere_normals(24)[0])
    for name, pattern in (("nan.npy", r"nan\.npy: .*NaN"), ("fake.png", r"fake\.png: cannot read"),
                          ("good.npy", r"need at least 2 good parts .* got 1")):
        code, _, err = run_cli(["train", tmp_path / name, "--model", "geometric", "-o",
                                tmp_path / "out"], monkeypatch, capsys)
        errs = error_lines(err)
        assert code == 2 and len(errs) == 1 and re.search(pattern, errs[0]), (name, err)
        assert not (tmp_path / "out").exists()


def test_train_takes_a_folder_of_maps_as_detect_does(tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    """train reads a folder of maps as detect does (``detect.normal_map_files``): a .npy map's
    .png preview beside it is not a second map (it was read as one: the same surface twice,
    or an error on a greyscale preview)."""
    folder = tmp_path / "maps"
    folder.mkdir()
    save_npy(folder / "g1.npy", sphere_normals(24)[0])
    save_npy(folder / "g2.npy", sphere_normals(22)[0])
    cv2.imwrite(str(folder / "g1.png"), np.zeros((24, 24), np.uint8))
    code, _, err = run_cli(["train", folder, "--model", "geometric", "-o", tmp_path / "m"],
                           monkeypatch, capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["training"]["inputs"] == [str(folder / "g1.npy"), str(folder / "g2.npy")]


# --------------------------------------------------------------------------------------------
# evaluate: damaged detect outputs and datasets


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory: pytest.TempPathFactory, geo_model: Path) -> dict:
    """A tiny dataset (3 rendered parts, one held out) and a detect run over its test maps."""
    import json

    from psinspect.dataset import build_dataset
    from psinspect.detect import write_detection_outputs
    from psinspect.modelstore import load_model_dir
    from psinspect.render import render_dataset

    root = tmp_path_factory.mktemp("eval")
    caps = render_dataset(root / "caps", 3, defect_rate=0.0, seed=1, size=64, lights=6)
    build_dataset(caps, root / "ds", holdout=[caps[-1].name], seed=0, subsets=2, augment=[],
                  defects_per_map=1, severity="high")
    manifest = json.loads((root / "ds" / "manifest.json").read_text())
    tests = [it for it in manifest["items"] if it["split"].startswith("test")]
    write_detection_outputs([root / "ds" / it["file"] for it in tests], root / "det",
                            load_model_dir(geo_model))
    return {"root": root, "tests": tests}


def _score_file(s: dict) -> str:
    return Path(s["tests"][0]["file"]).stem + "_score.npy"


def _defect_mask(s: dict) -> str:
    return next(it["defect_mask"] for it in s["tests"] if it.get("defect_mask"))


def _drop_defective(s: dict, ds: Path) -> None:
    """The dataset's manifest without its defective test maps."""
    import json

    m = json.loads((ds / "manifest.json").read_text())
    m["items"] = [it for it in m["items"] if it["split"] != "test-defective"]
    (ds / "manifest.json").write_text(json.dumps(m))


def _edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    """Rewrite the JSON file ``path`` with ``edit`` applied to its content (edited in place
    when ``edit`` returns None)."""
    import json

    doc = json.loads(path.read_text())
    out = edit(doc)
    path.write_text(json.dumps(doc if out is None else out))


def _swap_scores(s: dict, d: Path) -> None:
    """Two test maps' score files swapped (as if copied in from elsewhere)."""
    a, b = (d / (Path(it["file"]).stem + "_score.npy") for it in s["tests"][:2])
    first = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(first)


EVAL_CASES: list[tuple[str, str, Callable[[dict, Path], None], str]] = [
    ("score: strings", "det", lambda s, d: (d / _score_file(s)).write_bytes(
        _npy(np.array(["a", "b"]))), r"_score\.npy: expected float32 scores, as detect "
     r"writes them, got <U1"),
    # (float64 scores were rounded to float32: scores apart by less tied, every metric moved)
    ("score: float64", "det", lambda s, d: (d / _score_file(s)).write_bytes(
        _npy(np.load(d / _score_file(s)).astype(np.float64))),
     r"_score\.npy: expected float32 scores, as detect writes them, got float64"),
    ("score: complex", "det", lambda s, d: (d / _score_file(s)).write_bytes(
        _npy(np.load(d / _score_file(s)).astype(np.complex64))),
     r"_score\.npy: expected float32 scores, as detect writes them, got complex64"),
    ("score: edited", "det", lambda s, d: (d / _score_file(s)).write_bytes(
        _npy(np.load(d / _score_file(s)) * 2)),
     r"_score\.npy: gives image score .*, its summary entry in .*summary\.json .*: the score "
     r"map and the summary are not of one detect run"),
    ("score: two swapped", "det", _swap_scores, r"_score\.npy: gives image score"),
    ("score: wrong shape", "det", lambda s, d: (d / _score_file(s)).write_bytes(
        _npy(np.zeros((3, 3), np.float32))), r"_score\.npy: shape \(3, 3\)"),
    ("score: NaN", "det", lambda s, d: (d / _score_file(s)).write_bytes(
        _npy(np.full((64, 64), np.nan, np.float32))), r"_score\.npy: contains NaN or Inf"),
    ("score: truncated", "det", lambda s, d: (d / _score_file(s)).write_bytes(
        (d / _score_file(s)).read_bytes()[:-50]), r"_score\.npy: truncated"),
    ("score: pickle", "det", lambda s, d: (d / _score_file(s)).write_bytes(
        _npy(np.array([{"a": 1}], dtype=object))), r"_score\.npy: holds Python objects"),
    ("score: missing", "det", lambda s, d: (d / _score_file(s)).unlink(),
     r"no prediction for 1 of"),
    ("summary: garbage", "det", lambda s, d: (d / "summary.json").write_text("{oops"),
     r"summary\.json: not a detect summary"),
    ("summary: wrong types", "det", lambda s, d: (d / "summary.json").write_text(
        '{"inputs": [{"name": 5}]}'), r"summary\.json: not a detect summary"),
    ("summary: NaN image score", "det", lambda s, d: (d / "summary.json").write_text(
        re.sub(r'"image_score": [-0-9.e+]+', '"image_score": NaN',
               (d / "summary.json").read_text(), count=1)),
     r"summary\.json: input '.*': image_score must be a finite number, got nan"),
    ("summary: image score edited", "det", lambda s, d: _edit_json(  # (verdict kept)
        d / "summary.json", lambda j: j["inputs"][0].update(
            image_score=j["inputs"][0]["image_score"] * 2)),
     r"_score\.npy: gives image score .*, its summary entry in .*summary\.json [0-9.]+:"),
    ("summary: image score a string", "det", lambda s, d: _edit_json(
        d / "summary.json", lambda j: j["inputs"][0].update(image_score="5.5")),
     r"summary\.json: input '.*': image_score must be a finite number, got '5\.5'"),
    ("summary: image score true", "det", lambda s, d: _edit_json(
        d / "summary.json", lambda j: j["inputs"][0].update(image_score=True)),
     r"summary\.json: input '.*': image_score must be a finite number, got True"),
    ("summary: input twice", "det", lambda s, d: _edit_json(
        d / "summary.json", lambda j: j["inputs"].append(dict(j["inputs"][0]))),
     r"summary\.json: input '.*' is listed twice"),
    ("summary: verdict FAIL", "det", lambda s, d: _edit_json(
        d / "summary.json", lambda j: j["inputs"][0].update(verdict="FAIL")),
     r"summary\.json: input '.*': verdict must be pass, fail or error, got 'FAIL'"),
    ("summary: verdict flipped", "det", lambda s, d: _edit_json(
        d / "summary.json", lambda j: j["inputs"][0].update(
            verdict={"pass": "fail", "fail": "pass"}[j["inputs"][0]["verdict"]])),
     r"summary\.json: input '.*': verdict \w+ does not follow from image_score"),
    ("summary: inputs of strings", "det", lambda s, d: _edit_json(
        d / "summary.json", lambda j: j.update(inputs=["a", "b"])),
     r"summary\.json: not a detect summary \(each input must be an object with a name\)"),
    ("summary: sha not a string", "det", lambda s, d: _edit_json(
        d / "summary.json", lambda j: j["inputs"][0].update(source_sha256=5)),
     r"summary\.json: input '.*': source_sha256 must be a SHA-256 in hex, got 5"),
    # (null switched the content check off: detect writes a hash or no key)
    ("summary: sha null", "det", lambda s, d: _edit_json(
        d / "summary.json", lambda j: j["inputs"][0].update(source_sha256=None)),
     r"summary\.json: input '.*': source_sha256 must be a SHA-256 in hex, got None"),
    ("predictions: a file", "det", lambda s, d: shutil.move(d, d.with_name("moved")) and (
        d.write_text("{}")), r"det: a file; PREDICTIONS must be a 'psinspect detect' output "
     r"folder \(or its summary\.json\)"),
    ("manifest: a map twice", "ds", lambda s, d: _edit_json(
        d / "manifest.json", lambda m: m["items"].append(
            {**next(i for i in m["items"] if i["split"] == "test-defective"),
             "name": "A_again"})),
     r"manifest\.json: manifest item A_again: its file .* is listed twice"),
    ("manifest: defect mask outside", "ds", lambda s, d: _edit_json(
        d / "manifest.json", lambda m: next(
            i for i in m["items"] if i.get("defect_mask")).update(
                defect_mask="../../x/M_a.png")),
     r"manifest\.json: manifest item .*: defect_mask must be a path inside the dataset "
     r"folder, got '\.\./\.\./x/M_a\.png'"),
    ("manifest: defective map without defect", "ds", lambda s, d: (
        d / _defect_mask(s)).write_bytes(_png(np.zeros((64, 64), np.uint8))),
     r"ds: test map .* is in split test-defective but its defect mask marks 0 of its "
     r"object's pixels"),
    ("manifest: no defective test maps", "ds", _drop_defective,
     r"cannot evaluate its test maps \(no defective test maps"),
    ("manifest: a list", "ds", lambda s, d: (d / "manifest.json").write_text("[1]"),
     r"manifest\.json: malformed manifest"),
    ("manifest: items without keys", "ds", lambda s, d: (d / "manifest.json").write_text(
        '{"format": "psinspect-dataset", "version": 1, "items": [{"x": 1}]}'),
     r"manifest\.json: malformed manifest"),
    # edited outputs whose figures evaluate would have reported (an audit)
    ("mask: all marked", "det", lambda s, d: (
        d / (Path(s["tests"][0]["file"]).stem + "_mask.png")).write_bytes(
            _png(np.full((64, 64), 255, np.uint8))),
     r"_mask\.png: \d+ pixels differ from the score map at the pixel threshold .*: the mask "
     r"and the score map are not of one detect run"),
    ("summary: run's pixel threshold edited", "det", lambda s, d: _edit_json(
        d / "summary.json", lambda j: j.update(pixel_threshold=j["pixel_threshold"] / 3)),
     r"summary\.json: input '.*': pixel_threshold .* is not the run's .* \(the summary was "
     r"edited\)"),
    ("summary: run's image threshold edited", "det", lambda s, d: _edit_json(
        d / "summary.json", lambda j: j.update(image_threshold=1e6)),
     r"summary\.json: input '.*': image_threshold .* is not the run's 1000000\.0"),
    ("score: non-zero outside the object", "det", lambda s, d: (d / _score_file(s)).write_bytes(
        _npy(np.where(np.load(d / _score_file(s)) == 0, np.float32(99),
                      np.load(d / _score_file(s))))),
     r"_score\.npy: scores outside the object \(detect writes 0 there\)"),
    # (a traceback of file_sha256 before: an audit)
    ("test map: missing", "ds", lambda s, d: (d / s["tests"][0]["file"]).unlink(),
     r"\.npy: test map of the dataset's manifest not found \(or not a file\)"),
    ("test map: a folder", "ds", lambda s, d: (d / s["tests"][0]["file"]).unlink() or (
        d / s["tests"][0]["file"]).mkdir(),
     r"\.npy: test map of the dataset's manifest not found \(or not a file\)"),
    ("defect mask: wrong size", "ds", lambda s, d: (d / _defect_mask(s)).write_bytes(
        _png(np.zeros((5, 5), np.uint8))), r"M_.*\.png: ground-truth mask is 5 x 5, the map"),
    ("defect mask: zero bytes", "ds", lambda s, d: (d / _defect_mask(s)).write_bytes(b""),
     r"M_.*\.png: missing or unreadable ground-truth mask"),
]


@pytest.mark.parametrize(("which", "damage", "pattern"), [c[1:] for c in EVAL_CASES],
                         ids=[c[0] for c in EVAL_CASES])
def test_bad_evaluate_inputs(tmp_path: Path, monkeypatch, capsys, eval_setup: dict,
                             which: str, damage, pattern: str) -> None:
    src = eval_setup["root"]
    det, ds = tmp_path / "det", tmp_path / "ds"
    shutil.copytree(src / "det", det)
    shutil.copytree(src / "ds", ds)
    damage(eval_setup, det if which == "det" else ds)
    out = tmp_path / "out"
    code, _, err = run_cli(["evaluate", det, ds, "-o", out], monkeypatch, capsys)
    errs = error_lines(err)
    assert code == 2 and len(errs) == 1 and re.search(pattern, errs[0]), err
    assert str(tmp_path) in errs[0]  # names the file (or folder) at fault
    assert not out.exists()


def test_evaluate_undamaged_baseline(tmp_path: Path, monkeypatch, capsys,
                                     eval_setup: dict) -> None:
    """The fixture itself evaluates fine, so the failures above come from the damage; the
    detect folder may be named by its summary.json too."""
    src = eval_setup["root"]
    code, _, err = run_cli(["evaluate", src / "det", src / "ds", "-o", tmp_path / "out"],
                           monkeypatch, capsys)
    assert code == 0 and "warning" not in err, err
    assert (tmp_path / "out" / "metrics.json").is_file()
    code, _, err = run_cli(["evaluate", src / "det" / "summary.json", src / "ds", "-o",
                            tmp_path / "out2"], monkeypatch, capsys)
    assert code == 0, err
    one, two = (json.loads((tmp_path / o / "metrics.json").read_text()) for o in ("out", "out2"))
    assert one.pop("source") == {**two.pop("source"), "predictions": str(src / "det")}
    assert one == two


def test_evaluate_says_which_predictions_it_left_out(tmp_path: Path, monkeypatch, capsys,
                                                     eval_setup: dict) -> None:
    """Predictions of maps the dataset does not test are named (they were recorded in
    metrics.json only), on the console and in the report."""
    src = eval_setup["root"]
    ds = tmp_path / "ds"
    shutil.copytree(src / "ds", ds)
    left = Path(next(it for it in eval_setup["tests"]
                     if it["split"] == "test-clean")["file"]).stem
    _edit_json(ds / "manifest.json", lambda m: m.update(
        items=[i for i in m["items"] if Path(i["file"]).stem != left]))
    code, _, err = run_cli(["evaluate", src / "det", ds, "-o", tmp_path / "out"],
                           monkeypatch, capsys)
    note = f"1 prediction(s) have no test map in the dataset and were not evaluated ({left})"
    assert code == 0 and f"warning: {note}" in err, err
    assert note in (tmp_path / "out" / "report.html").read_text()


def test_evaluate_refuses_predictions_of_another_dataset(tmp_path: Path, monkeypatch, capsys,
                                                        eval_setup: dict) -> None:
    """Map names alone do not tie predictions to a dataset: detect's recorded source does."""
    src = eval_setup["root"]
    other = tmp_path / "ds"
    shutil.copytree(src / "ds", other)
    first = other / eval_setup["tests"][0]["file"]
    n = np.load(first)
    np.save(first, np.ascontiguousarray(n[:, ::-1] * np.array([-1, 1, 1], np.float32)))
    code, _, err = run_cli(["evaluate", src / "det", other, "-o", tmp_path / "out"],
                           monkeypatch, capsys)
    errs = error_lines(err)
    assert code == 2 and len(errs) == 1 and "predictions of another dataset" in errs[0], err


def test_evaluate_refuses_another_dataset_after_the_first_moved(tmp_path: Path, monkeypatch,
                                                                capsys, eval_setup: dict) -> None:
    """detect records each input file's SHA-256, so the check holds when the dataset the
    predictions were made from has been moved away (its recorded path no longer exists); the
    same maps moved elsewhere still evaluate."""
    src = eval_setup["root"]
    moved = tmp_path / "moved"
    shutil.copytree(src / "ds", moved / "ds")
    det = tmp_path / "det"
    shutil.copytree(src / "det", det)
    summary = json.loads((det / "summary.json").read_text())
    assert all(len(s["source_sha256"]) == 64 for s in summary["inputs"])
    for s in summary["inputs"]:  # as if made from a dataset folder that is gone now
        s["source"] = str(tmp_path / "gone" / Path(s["source"]).name)
    (det / "summary.json").write_text(json.dumps(summary))
    code, _, err = run_cli(["evaluate", det, moved / "ds", "-o", tmp_path / "ok"], monkeypatch,
                           capsys)
    assert code == 0, err
    first = moved / "ds" / eval_setup["tests"][0]["file"]
    n = np.load(first)
    np.save(first, np.ascontiguousarray(n[:, ::-1] * np.array([-1, 1, 1], np.float32)))
    code, _, err = run_cli(["evaluate", det, moved / "ds", "-o", tmp_path / "out"],
                           monkeypatch, capsys)
    errs = error_lines(err)
    assert code == 2 and len(errs) == 1 and "predictions of another dataset" in errs[0], err


def test_a_small_anti_aliased_normal_png_loads(tmp_path: Path) -> None:
    """A 24 px part whose rim is blended with the black background (anti-aliasing): the rim
    is about 10 % of it and decodes off unit length; the part inside is a normal map."""
    n, m = sphere_normals(24)
    rgb = encode_png(n, m).astype(np.float32)
    soft = cv2.GaussianBlur(m.astype(np.float32), (3, 3), 0.8)  # coverage at the rim
    rim = m & ~ndimage.binary_erosion(m, np.ones((3, 3), bool))
    rgb[rim] *= soft[rim, None]
    cv2.imwrite(str(tmp_path / "aa.png"), np.rint(rgb).astype(np.uint8)[..., ::-1])
    normals, mask = load_normal_map(tmp_path / "aa.png")
    assert mask.sum() == m.sum() and np.isfinite(normals).all()


def test_a_dataset_given_as_a_model_is_named(tmp_path: Path) -> None:
    """``detect --model DATASET`` said only that config.json was missing (an audit)."""
    from psinspect.modelstore import load_model_dir

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.json").write_text("{}")
    with pytest.raises(PsinspectError, match=r"ds/config\.json: missing \(not a psinspect "
                                             r"model directory but a dataset folder\)$"):
        load_model_dir(tmp_path / "ds")
