"""Documented contracts of ``fileio`` and ``normalmap`` that no other test pinned down (found by
a mutation audit: each test here fails on a one-line bug that the rest of the suite let pass)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from psinspect import fileio
from psinspect.errors import PsinspectError
from psinspect.fileio import (
    atomic_write_bytes,
    json_bytes,
    parse_json,
    remove_stale_temporaries,
    save_json,
)

# --------------------------------------------------------------------------------------------
# fileio
# --------------------------------------------------------------------------------------------


def test_atomic_write_syncs_the_data_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    """Old file or new one, never a torn one, also after a power loss: the new bytes reach the
    disk (fsync) before the rename makes them the file."""
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", Path(src).stat().st_size))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_bytes(tmp_path / "a.bin", b"x" * 1000)
    assert (tmp_path / "a.bin").read_bytes() == b"x" * 1000
    assert events == [("fsync", 1000), ("replace", 1000)]


def test_a_killed_writers_temp_file_is_found_as_stale(tmp_path: Path) -> None:
    """A writer killed between writing and renaming leaves ``.NAME.<pid>-*.tmp``, which
    :func:`remove_stale_temporaries` recognises by its dead pid and removes."""
    code = textwrap.dedent(f"""
        import os
        from psinspect import fileio
        os.replace = lambda src, dst: os._exit(9)  # killed just before the rename
        fileio.atomic_write_bytes({str(tmp_path / "f.json")!r}, b"{{}}")
    """)
    src = str(Path(fileio.__file__).parents[1])  # this checkout's psinspect
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    assert proc.returncode == 9
    left = [p for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".f.json.") and left[0].suffix == ".tmp"
    assert remove_stale_temporaries(tmp_path, "f.json") == left
    assert list(tmp_path.iterdir()) == []


def test_another_users_writer_counts_as_live(tmp_path: Path, monkeypatch) -> None:
    """A writer whose pid cannot be signalled (another user's process: EPERM) is alive: its
    temp files are never touched."""
    theirs = tmp_path / f".f.json.{4_000_000}-abc.tmp"
    theirs.write_bytes(b"partial")
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if pid == 4_000_000:
            raise PermissionError(1, "Operation not permitted")
        real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    assert remove_stale_temporaries(tmp_path) == []
    assert theirs.exists()


@pytest.mark.parametrize("text", ["[" * 100_000, "1" * 100_000])
def test_parse_json_beyond_pythons_parser_is_malformed_json(text: str) -> None:
    """Nesting too deep for Python's parser, or an integer of more digits than it converts, is
    the JSONDecodeError of other malformed JSON (not RecursionError / a bare ValueError)."""
    with pytest.raises(json.JSONDecodeError):
        parse_json(text)


def test_json_text_ends_with_a_newline(tmp_path: Path) -> None:
    assert json_bytes({"a": 1}).endswith(b"}\n")
    text = save_json(tmp_path / "r.json", {"a": [1, 2]}).read_text(encoding="utf-8")
    assert text.endswith("\n") and json.loads(text) == {"a": [1, 2]}


def test_save_npy_never_pickles(tmp_path: Path) -> None:
    """``.npy`` output is plain data: an object array is an error, and nothing is written."""
    with pytest.raises(ValueError):
        fileio.save_npy(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.float32, np.int32, bool])
def test_save_png_refuses_other_dtypes(tmp_path: Path, dtype: type) -> None:
    with pytest.raises(TypeError, match="uint8 or uint16"):
        fileio.save_png(tmp_path / "f.png", np.zeros((4, 4, 3), dtype))
    assert list(tmp_path.iterdir()) == []


def test_load_npy_limit_is_inclusive(tmp_path: Path) -> None:
    """``max_bytes`` is the largest array read: one of exactly that size loads, one byte more
    of data is refused."""
    a = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    np.save(tmp_path / "a.npy", a)
    assert (fileio.load_npy(tmp_path / "a.npy", max_bytes=a.nbytes) == a).all()
    with pytest.raises(PsinspectError, match="more than the limit"):
        fileio.load_npy(tmp_path / "a.npy", max_bytes=a.nbytes - 1)


def test_image_size_is_height_then_width(tmp_path: Path) -> None:
    fileio.save_png(tmp_path / "wide.png", np.zeros((3, 7), np.uint8))
    assert fileio.image_size_hw(tmp_path / "wide.png") == (3, 7)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    assert fileio.image_size_hw(tmp_path / "junk.png") is None


@pytest.mark.parametrize("force", [False, True])
def test_an_output_path_that_is_a_file_is_refused_up_front(tmp_path: Path, force: bool) -> None:
    """A file where the output folder should go is refused by the up-front check (before the
    slow part of a command), with or without ``force``, and is left alone."""
    (tmp_path / "out").write_bytes(b"mine")
    with pytest.raises(PsinspectError, match="not a folder"):
        fileio.check_output_dir(tmp_path / "out", force)
    assert (tmp_path / "out").read_bytes() == b"mine"


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    import hashlib

    data = bytes(range(256)) * 5000  # more than one read chunk
    (tmp_path / "d.bin").write_bytes(data)
    assert fileio.file_sha256(tmp_path / "d.bin") == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# normalmap
# --------------------------------------------------------------------------------------------


def test_normalize_keeps_zero_vectors_zero() -> None:
    from psinspect.normalmap import normalize

    v = np.array([[0.0, 0.0, 0.0], [0.0, 3.0, 4.0], [0.0, 0.0, 0.0]], np.float32)
    out = normalize(v)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0, 0], [0, 0.6, 0.8], [0, 0, 0]], atol=1e-7)


def test_angular_error_takes_vectors_of_any_length() -> None:
    from psinspect.normalmap import angular_error_deg

    a = np.array([[0.0, 0.0, 5.0], [2.0, 0.0, 2.0]], np.float32)
    b = np.array([[0.0, 0.3, 0.0], [0.0, 0.0, 0.5]], np.float32)
    np.testing.assert_allclose(angular_error_deg(a, b), [90.0, 45.0], atol=1e-3)
    np.testing.assert_allclose(angular_error_deg(b, a), [90.0, 45.0], atol=1e-3)


@pytest.mark.parametrize(("n_off", "refused"), [(20, False), (21, True)])
def test_png_off_unit_share_is_at_most(n_off: int, refused: bool) -> None:
    """Up to PNG_OFF_UNIT_SHARE of the object's inner pixels may decode off unit length: exactly
    that share (20 of 400) is accepted, one pixel more is not."""
    from psinspect.normalmap import PNG_OFF_UNIT_SHARE, decode_png, encode_png

    n = np.zeros((22, 22, 3), np.float32)
    n[..., 2] = 1.0
    png = encode_png(n, np.ones((22, 22), bool))
    inner = np.argwhere(np.ones((20, 20), bool)) + 1  # 400 pixels off the rim
    assert n_off / len(inner) - PNG_OFF_UNIT_SHARE == pytest.approx(0.0025 * refused)
    png[inner[:n_off, 0], inner[:n_off, 1]] = 255  # (1, 1, 1): length 1.73
    if refused:
        with pytest.raises(PsinspectError, match="not a normal map"):
            decode_png(png)
    else:
        assert decode_png(png)[1].all()


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int16])
def test_decode_png_refuses_other_than_8_or_16_bit(dtype: type) -> None:
    from psinspect.normalmap import decode_png

    img = np.zeros((10, 10, 3), dtype)
    img[..., 2] = 100
    with pytest.raises(PsinspectError, match="8- or 16-bit RGB"):
        decode_png(img)


def _flat(size: int = 16, z: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A tilted plane's normals (unit, facing the camera) and an all-object mask."""
    n = np.zeros((size, size, 3), np.float32)
    n[...] = np.array([0.6, 0.0, 0.8], np.float32) * z
    return n, np.ones((size, size), bool)


def test_validate_ignores_what_lies_outside_the_mask() -> None:
    """With a mask, the object is the mask: NaN, Inf or junk outside it is no error, and the
    map comes back exactly zero there."""
    from psinspect.normalmap import validate_normal_map

    n, m = _flat()
    m[:, :4] = False
    n[:, 0] = np.nan
    n[:, 1] = np.inf
    n[:, 2] = 7.0
    out, out_m = validate_normal_map(n, m)
    assert (out_m == m).all() and np.isfinite(out).all()
    assert not out[~m].any()
    np.testing.assert_allclose(out[m], np.broadcast_to([0.6, 0.0, 0.8], out[m].shape), atol=1e-6)


@pytest.mark.parametrize(("length", "ok"), [(1.005, True), (0.995, True), (1.02, False),
                                            (0.98, False), (0.5, False)])
def test_validate_unit_length_tolerance(length: float, ok: bool) -> None:
    """Inside the mask every vector must be unit length to within UNIT_TOL (0.01)."""
    from psinspect.normalmap import validate_normal_map

    n, m = _flat()
    n[5:7, 5:7] *= length
    if ok:
        out, _ = validate_normal_map(n, m)
        np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-6)
    else:
        with pytest.raises(PsinspectError, match="4 of 256 object pixels are not unit vectors"):
            validate_normal_map(n, m)


@pytest.mark.parametrize(("back_columns", "refused"), [(8, False), (9, True)])
def test_a_map_is_refused_only_when_more_than_half_faces_away(back_columns: int,
                                                              refused: bool) -> None:
    from psinspect.normalmap import validate_normal_map

    n, m = _flat()
    n[:, 16 - back_columns:, 2] *= -1  # exactly half (128 of 256 pixels), or more
    if refused:
        with pytest.raises(PsinspectError, match="point away from the camera"):
            validate_normal_map(n, m)
    else:
        validate_normal_map(n, m)


def test_map_size_limit_is_inclusive() -> None:
    from psinspect.normalmap import MAX_MAP_PIXELS, check_map_size

    check_map_size((8192, 8192), "m")  # the documented largest map
    check_map_size((MAX_MAP_PIXELS, 1), "m")
    with pytest.raises(PsinspectError, match="m: normal map is 8193 x 8192 pixels"):
        check_map_size((8192, 8193), "m")


@pytest.mark.parametrize("k", [-3, -1, 4, 5, 6, 7])
def test_rotate90_takes_any_number_of_quarter_turns(k: int) -> None:
    from psinspect.normalmap import rotate90

    n, _ = _flat(8)
    n[0, :] = [0.0, 0.6, 0.8]  # some asymmetry
    np.testing.assert_array_equal(rotate90(n, k), rotate90(n, k % 4))


def test_object_window_is_the_grown_bounding_box() -> None:
    from psinspect.normalmap import object_window, put_window, take_window

    m = np.zeros((10, 12), bool)
    m[3:5, 2:9] = True
    assert object_window(m, 0) == (3, 5, 2, 9)
    assert object_window(m, 4) == (-1, 9, -2, 13)
    assert object_window(np.zeros((4, 4), bool), 2) is None
    win = object_window(m, 4)
    assert (put_window(take_window(m, win), win, m.shape) == m).all()


@pytest.mark.parametrize(("count", "expected"), [(12, 12), (1, 1), (0, None), (-3, None),
                                                 (True, None), (2.0, None), ("5", None)])
def test_solved_light_count_is_a_positive_int(count: object, expected: int | None) -> None:
    from psinspect.normalmap import solved_light_count

    assert solved_light_count({"command": "normals", "num_lights_used": count}) == expected
    assert solved_light_count(None) is None and solved_light_count({}) is None


def test_a_normals_run_is_found_from_its_folder_or_its_files(tmp_path: Path) -> None:
    from psinspect.normalmap import is_normals_folder, normals_run_of

    out = tmp_path / "out"
    out.mkdir()
    (out / "normals.npy").write_bytes(b"")
    (out / "normals.png").write_bytes(b"")
    (out / "other.npy").write_bytes(b"")
    save_json(out / "run.json", {"command": "normals", "num_lights_used": 5})
    for p in (out, out / "normals.npy", out / "normals.png"):
        assert normals_run_of(p) == {"command": "normals", "num_lights_used": 5}, p
    assert normals_run_of(out / "other.npy") is None
    save_json(out / "run.json", {"command": "detect"})  # another command's output folder
    assert not is_normals_folder(out) and normals_run_of(out / "normals.npy") is None
    # a normals output folder missing its map or its record is refused, not taken for a
    # folder of maps (detect named its albedo.npy as a bad normal map: an audit)
    save_json(out / "run.json", {"command": "normals"})
    (out / "normals.npy").unlink()
    with pytest.raises(PsinspectError, match=r"out: a 'psinspect normals' output folder "
                                             r"without its normals\.npy \(solve the capture "
                                             r"again\)"):
        is_normals_folder(out)
    for f in ("normals.npy", "albedo.npy", "confidence.npy"):
        (out / f).write_bytes(b"")
    (out / "run.json").unlink()
    with pytest.raises(PsinspectError, match=r"out: a 'psinspect normals' output folder "
                                             r"without its run\.json"):
        is_normals_folder(out)
    (out / "albedo.npy").unlink()  # (any folder with a normals.npy is not one)
    assert not is_normals_folder(out)


@pytest.mark.parametrize("angle", [30.0, -110.0, 90.0])
def test_rotate_expand_holds_the_whole_turned_image(angle: float) -> None:
    """With ``expand`` the canvas is the bounding box of the turned (H, W) image; the mask is
    cut at 1/2 exactly as :func:`rotate_mask` moves a mask."""
    from psinspect.normalmap import rotate, rotate_mask

    h, w = 12, 30
    n = np.zeros((h, w, 3), np.float32)
    n[...] = [0.0, 0.0, 1.0]
    m = np.ones((h, w), bool)
    out, out_m = rotate(n, angle, mask=m)
    t = np.radians(angle)
    c, s = abs(np.cos(t)), abs(np.sin(t))
    assert out_m.shape == (int(np.ceil(w * s + h * c - 1e-6)), int(np.ceil(w * c + h * s - 1e-6)))
    assert (out_m == rotate_mask(m, angle)).all()
    assert abs(int(out_m.sum()) - h * w) <= 0.1 * h * w  # the whole object, none cut off
    np.testing.assert_allclose(out[out_m], np.broadcast_to([0, 0, 1], out[out_m].shape),
                               atol=1e-6)


def test_resample_averages_object_vectors_only() -> None:
    """Whatever lies outside the mask does not pull the object's vectors (shrinking and
    growing)."""
    from psinspect.normalmap import resample

    n, m = _flat(16)
    m[:, 8:] = False
    n[:, 8:] = [0.0, 0.6, 0.8]  # not the object's
    for size in ((8, 8), (32, 32), (12, 20)):
        r, rm = resample(n, m, size)
        assert rm.any() and not r[~rm].any()
        np.testing.assert_allclose(r[rm], np.broadcast_to([0.6, 0.0, 0.8], r[rm].shape),
                                   atol=1e-5)
