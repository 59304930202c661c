"""Normal maps in another frame: a map (or a capture's lights file) with its x or y axis
flipped, as y-down (DirectX-style) normal maps are, was scored as it was, and a defective
part passed. Its slopes then do not fit any surface (their curl is large), so psinspect warns.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from _robust_util import run_cli, sphere_normals

from psinspect.fileio import save_npy
from psinspect.normalmap import FRAME_MISMATCH_RATIO, frame_mismatch, load_normal_map


def _flipped(n: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    out = n.copy()
    for a in axes:
        out[..., a] *= -1
    return out


def test_the_ratio_tells_a_flipped_axis() -> None:
    n, m = sphere_normals(64)
    assert frame_mismatch(n, m)[0] < 0.1
    assert frame_mismatch(_flipped(n, (1,)), m) == (pytest.approx(frame_mismatch(
        _flipped(n, (0,)), m)[0]), "flipped")
    assert frame_mismatch(_flipped(n, (1,)), m)[0] > 10
    # both flipped: the slopes of the surface upside down, which no curl can tell
    assert frame_mismatch(_flipped(n, (0, 1)), m)[0] < 0.1
    # x and y exchanged (channels out of order), or the vectors a quarter turn off their
    # pixels (a map turned as an image): each told as what it is
    swapped, turned = n[..., [1, 0, 2]], np.stack([-n[..., 1], n[..., 0], n[..., 2]], -1)
    assert frame_mismatch(swapped, m)[1] == "swapped" and frame_mismatch(swapped, m)[0] > 10
    assert frame_mismatch(turned, m)[1] == "turned" and frame_mismatch(turned, m)[0] > 10
    # noise on a flat surface: about 1, below the warning's ratio
    rng = np.random.default_rng(0)
    flat = np.zeros((64, 64, 3), np.float32)
    flat[..., :2] = rng.normal(0, 0.05, (64, 64, 2))
    flat[..., 2] = 1
    flat /= np.linalg.norm(flat, axis=-1, keepdims=True)
    ratio, _ = frame_mismatch(flat, np.ones((64, 64), bool))
    assert 0.7 < ratio < FRAME_MISMATCH_RATIO
    small = np.zeros((64, 64), bool)
    small[:18, :18] = True  # 14 x 14 = 196 pixels count: too few to tell
    assert frame_mismatch(n, small) is None


def test_a_large_map_is_judged_shrunk(monkeypatch) -> None:
    """Maps over FRAME_CHECK_MAX_PIXELS are shrunk by a whole factor first (an 8192 x 8192
    map's full-size copies took 3 GB more); the verdicts stay: a 256 px sphere judged at 64 x 64
    (factor 4), as it is, flipped, exchanged and turned, at the size asked; an odd size too."""
    import psinspect.normalmap as nm

    n, m = sphere_normals(256)
    full = {how: frame_mismatch(x, m) for how, x in (
        ("as is", n), ("flipped", _flipped(n, (1,))), ("swapped", n[..., [1, 0, 2]]),
        ("turned", np.stack([-n[..., 1], n[..., 0], n[..., 2]], -1)))}
    monkeypatch.setattr(nm, "FRAME_CHECK_MAX_PIXELS", 64 * 64)
    sizes = []
    resample = nm.resample
    monkeypatch.setattr(nm, "resample", lambda n_, m_, hw: sizes.append(hw) or resample(
        n_, m_, hw))
    for how, x in (("as is", n), ("flipped", _flipped(n, (1,))), ("swapped", n[..., [1, 0, 2]]),
                   ("turned", np.stack([-n[..., 1], n[..., 0], n[..., 2]], -1))):
        ratio, frame = frame_mismatch(x, m)
        if how == "as is":
            assert ratio < 0.2 and full[how][0] < 0.2
        else:
            assert frame == how == full[how][1] and ratio > 10
    n2, m2 = sphere_normals(259)
    ratio, _ = frame_mismatch(_flipped(n2, (1,))[:, :258], m2[:, :258])  # factor 5
    assert ratio > 10
    n3, m3 = sphere_normals(64)
    assert frame_mismatch(n3, m3)[0] < 0.2  # at the limit: as it is
    assert sizes == [(64, 64)] * 4 + [(51, 51)]


def test_a_map_with_its_channels_exchanged_or_turned_as_an_image_warns(tmp_path: Path
                                                                       ) -> None:
    """A walkthrough's defective map with x and y exchanged passed silently (2.6 against
    6.1); the array turned by 90 degrees, its vectors not, passed with a warning that spoke
    of a flipped axis."""
    from psinspect.normalmap import rotate90

    n, m = sphere_normals(64)
    save_npy(tmp_path / "xy.npy", n[..., [1, 0, 2]])
    save_npy(tmp_path / "turned.npy", np.rot90(n, 1).copy())  # pixels turned, vectors not
    assert np.allclose(rotate90(n, 1)[..., :2], np.stack(
        [-np.rot90(n, 1)[..., 1], np.rot90(n, 1)[..., 0]], -1))  # (what turning them is)
    with pytest.warns(UserWarning, match=r"xy.npy: its normals fit a surface [0-9.]+x better "
                                         r"with their x and y components exchanged: the map's "
                                         r"x and y are likely in each other's place"):
        load_normal_map(tmp_path / "xy.npy")
    with pytest.warns(UserWarning, match=r"turned.npy: its normals fit a surface [0-9.]+x "
                                         r"better with their vectors turned by a quarter turn: "
                                         r"the map was likely turned by 90 degrees as an image "
                                         r"without turning its vectors"):
        load_normal_map(tmp_path / "turned.npy")


def test_a_map_with_a_flipped_axis_warns_when_read(tmp_path: Path) -> None:
    n, m = sphere_normals(64)
    save_npy(tmp_path / "ok.npy", n)
    save_npy(tmp_path / "ydown.npy", _flipped(n, (1,)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_normal_map(tmp_path / "ok.npy")
    assert not caught
    with pytest.warns(UserWarning, match=r"ydown.npy: its normals fit a surface [0-9.]+x "
                                         r"better with their x or y component negated"):
        load_normal_map(tmp_path / "ydown.npy")
    # maps psinspect solved itself (a dataset's: their captures were checked when solved)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_normal_map(tmp_path / "ydown.npy", check_frame=False)
    assert not caught


def test_a_capture_whose_lights_file_has_y_down_warns(tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    """detect (and normals) on a capture whose light directions have y negated: a warning
    naming the lights file, recorded in the summary; the capture as rendered: none."""
    from psinspect.capture import capture_lights_file
    from psinspect.models import create_model
    from psinspect.modelstore import save_model_dir
    from psinspect.render import render_dataset

    (cap,) = render_dataset(tmp_path / "caps", 1, defect_rate=0.0, seed=3, size=64, lights=8)
    geo = save_model_dir(tmp_path / "geo", create_model("geometric"), threshold=2.0,
                         image_threshold=3.0)
    code, _, err = run_cli(["detect", cap, "--model", geo, "-o", tmp_path / "d0"],
                           monkeypatch, capsys)
    assert code == 0 and "flipped" not in err, err
    lights_file = capture_lights_file(cap)
    lights = np.loadtxt(lights_file)
    lights[:, 1] *= -1
    np.savetxt(lights_file, lights)
    code, _, err = run_cli(["detect", cap, "--model", geo, "-o", tmp_path / "d1"],
                           monkeypatch, capsys)
    assert code == 0, err
    note = (f"{cap}: its normals fit a surface", "its light directions (the lights file)'s x "
            "or y axis is likely flipped (psinspect's frame is x right, y up, z to the camera; "
            "light directions with y down, e.g. taken from image rows, need y negated)")
    assert all(part in err for part in note), err
    (entry,) = json.loads((tmp_path / "d1" / "summary.json").read_text())["inputs"]
    assert any(w.startswith("its normals fit a surface") and note[1] in w
               for w in entry["warnings"]), entry
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "n"], monkeypatch, capsys)
    assert code == 0 and all(part in err for part in note), err


def test_a_map_whose_normals_mostly_face_sideways_warns(tmp_path: Path) -> None:
    """A part tilted by 10 degrees written as a PNG in BGR order (x and z exchanged) looked
    tilted by 80, and a walkthrough's defective part passed silently; untouched: no warning."""
    from psinspect.normalmap import encode_png

    tilt = np.zeros((64, 64, 3), np.float32)
    tilt[...] = [np.sin(np.radians(10)), 0.0, np.cos(np.radians(10))]
    m = np.ones((64, 64), bool)
    m[:4] = False
    tilt[~m] = 0
    for name, n in (("ok", tilt), ("bgr", tilt[..., ::-1].copy())):
        rgb = encode_png(n, m)
        cv2.imwrite(str(tmp_path / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_normal_map(tmp_path / "ok.png")
    assert not caught, [str(w.message) for w in caught]
    with pytest.warns(UserWarning, match=r"bgr.png: most of its normals face more than 80 "
                                         r"degrees away from the camera \(median z 0\.1[78]\): "
                                         r"if its channels are in another order"):
        load_normal_map(tmp_path / "bgr.png")
