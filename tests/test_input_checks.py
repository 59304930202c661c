"""Inputs that used to give a silent wrong answer: back-facing or tiny normal maps, known
defective parts given as good ones, ground-truth masks of the wrong size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from psinspect.detect import load_input
from psinspect.errors import PsinspectError
from psinspect.normalmap import (
    MIN_MAP_SIDE,
    load_normal_map,
    normals_from_height,
    validate_normal_map,
)
from psinspect.train import load_training_data


def _dome(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mask = np.ones((size, size), bool)
    return normals_from_height(0.02 * ((xx - size / 2) ** 2 + (yy - size / 2) ** 2), mask), mask


def test_back_facing_map_is_refused() -> None:
    n, m = _dome()
    validate_normal_map(n, m)
    with pytest.raises(PsinspectError, match="point away from the camera"):
        validate_normal_map(-n, m)
    flipped = n.copy()
    flipped[:, :10, 2] *= -1  # a third of the object: grazing noise, silhouettes -> accepted
    validate_normal_map(flipped / np.linalg.norm(flipped, axis=-1, keepdims=True), m)


def test_tiny_map_is_refused() -> None:
    n, _ = _dome(MIN_MAP_SIDE)
    validate_normal_map(n)
    with pytest.raises(PsinspectError, match="too small"):
        validate_normal_map(n[:1])


def _save_pair(folder: Path, name: str, n: np.ndarray, gt: np.ndarray | None) -> Path:
    path = folder / f"A_{name}.npy"
    np.save(path, n)
    if gt is not None:
        cv2.imwrite(str(folder / f"M_{name}.png"), gt.astype(np.uint8) * 255)
    return path


def test_training_refuses_a_map_marked_defective(tmp_path: Path) -> None:
    n, m = _dome()
    gt = np.zeros(m.shape, bool)
    good = [_save_pair(tmp_path, f"g{i}", np.rot90(n, 2 * i).copy() * [1 - 2 * i, 1 - 2 * i, 1],
                       gt) for i in range(2)]  # two parts (the dome turned by 180 deg)
    load_training_data(good)  # an empty ground truth: defect-free
    gt[10:14, 10:14] = True
    bad = _save_pair(tmp_path, "bad", n, gt)
    with pytest.raises(PsinspectError, match="16 defect pixels"):
        load_training_data([*good, bad])


def test_wrong_size_ground_truth_is_an_error(tmp_path: Path) -> None:
    n, _ = _dome()
    path = _save_pair(tmp_path, "x", n, np.zeros((20, 32), bool))
    with pytest.raises(PsinspectError, match="ground-truth mask is 32 x 20"):
        load_input(path)


def test_a_dataset_folder_is_not_taken_for_a_capture(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(PsinspectError, match="a dataset folder, not a capture folder"):
        load_input(tmp_path)


def test_report_names_the_aupro_limit_it_used() -> None:
    from psinspect.report import _columns

    assert dict(_columns(0.001))["aupro"] == "AUPRO (FPR<=0.001)"
    assert dict(_columns(0.3))["aupro"] == "AUPRO (FPR<=0.3)"


def test_serve_refuses_a_busy_port_or_a_foreign_address() -> None:
    import socket

    from psinspect.app import check_bindable

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PsinspectError, match=f"--port {port}: cannot serve there"):
            check_bindable("127.0.0.1", port)
    with pytest.raises(PsinspectError, match="--host 999.1.1.1"):
        check_bindable("999.1.1.1", 7999)


@pytest.mark.parametrize("text", ["{not json", '{"other": 1}', '{"defects": 3}', "[1, 2]",
                                  '{"defects": [1]}'])
def test_malformed_defect_records_are_one_line_errors(tmp_path: Path, text: str) -> None:
    """A capture's defects.json is read one way (defects.read_defect_records) by detect and
    dataset: a malformed one is a clear error (dataset raised a KeyError or JSON traceback,
    detect dropped it silently)."""
    from psinspect.dataset import build_dataset
    from psinspect.render import render_dataset

    caps = render_dataset(tmp_path / "caps", 3, defect_rate=0.0, seed=4, size=48, lights=6)
    bad = caps[0]
    cv2.imwrite(str(bad / "M_defect.png"), np.zeros((48, 48), np.uint8))
    (bad / "defects.json").write_text(text)
    with pytest.raises(PsinspectError, match=r"defects\.json: (unreadable defect records|"
                                             r"malformed 'defects' \((a list of records "
                                             r"expected, got 3|record 1 is 1, not an "
                                             r"object)\))"):
        load_input(bad)
    with pytest.raises(PsinspectError, match=r"defects\.json: "):
        build_dataset(caps, tmp_path / "ds", seed=0, subsets=2, augment=[])


def test_a_capture_without_light_on_the_object_is_refused(tmp_path: Path) -> None:
    """A capture whose images are black on the part (lights off, lens cap), or hold only
    sensor noise, got PASS from detect: PS made a flat or noisy map of it. Now refused, with
    the reason; dim captures, 10-bit data in 16-bit files and a part without mask.png on a
    noisy background that fills the frame are kept (the test is scale-free)."""
    import warnings

    from _robust_util import lights_from_slant_tilt, sphere_normals

    from psinspect.capture import load_capture, write_capture

    rng = np.random.default_rng(0)
    lights = lights_from_slant_tilt(rng.uniform(15, 45, 12), np.linspace(0, 360, 12,
                                                                          endpoint=False))
    n, mask = sphere_normals(32)
    lit = np.maximum(np.einsum("hwc,kc->khw", n, lights), 0)
    noise = rng.uniform(0, 300 / 65535, lit.shape)
    bits10 = np.floor(lit * 1023) / 65535  # a 10-bit camera's values in a 16-bit file
    for name, imgs, ok in (("black", np.zeros_like(lit), "do not change with the light"),
                           ("noise", noise, "show no shading on the object: on [0-9]+% of"),
                           ("dim", 0.05 * lit, None), ("10-bit", bits10, None),
                           ("no mask", 0.3 * lit * mask + noise, None)):
        cap = write_capture(tmp_path / name, imgs, lights, mask)
        if name == "no mask":
            (cap / "mask.png").unlink()
        with warnings.catch_warnings():
            warnings.simplefilter("error" if name != "no mask" else "ignore")  # (no numpy
            if ok is None:                                                      # warning)
                assert load_capture(cap).images.shape == lit.shape
                continue
            with pytest.raises(PsinspectError, match=f"^{cap}: the images {ok}"):
                load_input(cap, solver="robust")
    # a mask of one pixel (the wrong file?) on the noise: its size named as the likelier cause
    one = np.zeros_like(mask)
    one[16, 16] = True
    cap = write_capture(tmp_path / "one", noise, lights, one)
    with pytest.raises(PsinspectError, match=r"show no shading.*\(the mask marks only 1 pixel: "
                                             r"is it the object's mask\?\)$"):
        load_input(cap, solver="robust")


def test_a_map_of_scattered_normals_is_refused() -> None:
    """Random unit normals (noise, not a surface) scored lower than a real part, and passed."""
    rng = np.random.default_rng(1)
    r = rng.normal(size=(40, 40, 3))
    r[..., 2] = np.abs(r[..., 2])
    r /= np.linalg.norm(r, axis=-1, keepdims=True)
    with pytest.raises(PsinspectError, match=r"not a surface: on \d+ of 1444 object pixels the "
                                             r"3 x 3 neighbours' normals point every which way"):
        validate_normal_map(r.astype(np.float32), np.ones((40, 40), bool))
    n, m = _dome(40)
    rough = n + rng.normal(0, 0.1, n.shape)  # about 6 deg of noise: a rough surface, kept
    validate_normal_map((rough / np.linalg.norm(rough, axis=-1, keepdims=True)
                         ).astype(np.float32), m)
    # knurling / thread flanks 3 px wide at +-40 deg: a surface (0.8 refused it)
    t = np.deg2rad(np.where((np.arange(40) // 3) % 2 == 0, 40.0, -40.0))
    grooves = np.zeros((40, 40, 3), np.float32)
    grooves[..., 0], grooves[..., 2] = np.sin(t)[None, :], np.cos(t)[None, :]
    validate_normal_map(grooves, np.ones((40, 40), bool))


@pytest.mark.parametrize("dtype,value,channels", [
    (np.uint8, 255, 1), (np.uint8, 1, 1), (np.uint16, 1, 1), (np.uint16, 255, 1),
    (np.uint16, 65535, 1), (np.uint8, 255, 3), (np.uint16, 200, 3), (np.uint8, 255, 4)])
def test_mask_png_any_depth_and_channels(tmp_path, dtype, value, channels) -> None:
    """A ground-truth or object mask reads the same whatever its bit depth, value or
    channels: a 16-bit 0/1 or 0/255 mask was read as 8 bits (its low byte shifted out), so
    empty; an opaque alpha channel is not the mask."""
    from psinspect.fileio import read_mask_image
    from psinspect.normalmap import read_mask_png

    want = np.zeros((12, 16), bool)
    want[3:7, 4:11] = True
    img = np.zeros((12, 16, channels), dtype)
    img[want, :min(channels, 3)] = value
    if channels == 4:
        img[..., 3] = 255  # fully opaque, as editors save
    path = tmp_path / "m.png"
    assert cv2.imwrite(str(path), img if channels > 1 else img[..., 0])
    np.testing.assert_array_equal(read_mask_image(path), want)
    np.testing.assert_array_equal(read_mask_png(path, (12, 16)), want)


@pytest.mark.parametrize("colour", [0, 255])
def test_a_mask_drawn_in_the_alpha_alone_is_read_from_it(tmp_path, colour) -> None:
    """A cut-out mask (one colour everywhere, the object opaque and the rest transparent) read
    as empty (black) or as the whole image (white); where the colours vary they decide."""
    from PIL import Image

    from psinspect.fileio import read_mask_image

    want = np.zeros((12, 16), bool)
    want[3:7, 4:11] = True
    rgba = np.full((12, 16, 4), colour, np.uint8)
    rgba[..., 3] = np.where(want, 255, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_mask_image(tmp_path / "rgba.png"), want)
    la = np.stack([np.full((12, 16), colour, np.uint8), rgba[..., 3]], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_mask_image(tmp_path / "la.png"), want)
    # colours that vary decide, whatever the alpha says
    rgba[..., :3] = 0
    rgba[2:5, 2:5, :3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "both.png")
    got = read_mask_image(tmp_path / "both.png")
    assert got.sum() == 9 and got[2:5, 2:5].all()


def test_a_path_of_the_wrong_kind_is_named_as_such(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A file where a folder is expected, or a folder where a file is, was 'not found'; a
    model folder given as an input was 'no images found'."""
    from _robust_util import run_cli, sphere_normals

    from psinspect.models import create_model
    from psinspect.modelstore import save_model_dir

    afile = tmp_path / "notes.json"
    afile.write_text("{}")
    model = save_model_dir(tmp_path / "model", create_model("geometric"), threshold=2.0,
                           image_threshold=3.0)
    n, _ = sphere_normals(32)
    np.save(tmp_path / "m.npy", n)
    out = str(tmp_path / "out")
    cases = [
        (["normals", afile, "-o", out],
         f"{afile}: is a file, not a capture folder (images + lights)"),
        (["run", "--quick", "--data", afile, "-o", out],
         f"--data {afile}: is a file, not a folder of captures"),
        (["detect", tmp_path / "m.npy", "--model", model / "config.json", "-o", out],
         f"{model / 'config.json'}: is a file; the model is the folder that holds config.json "
         "and the weights"),
        (["detect", model, "--model", model, "-o", out],
         f"{model}: a model folder, not an input: give it with --model"),
        (["defects", tmp_path, "-o", out],
         f"{tmp_path}: is a folder, not a normal map (.npy / .png) or the output folder of "
         "psinspect normals"),
    ]
    for args, message in cases:
        code, _, err = run_cli(args, monkeypatch, capsys)
        assert code == 2 and err.strip() == f"error: {message}", (args, err)
    with pytest.raises(PsinspectError, match="is a folder, not a normal map file"):
        load_normal_map(tmp_path)


def test_a_png_whose_background_is_a_flat_normal_is_warned_about(tmp_path: Path) -> None:
    """A background written as the flat normal (0.5, 0.5, 1), a common convention, made the
    whole frame the object without a word (image score and area of another part)."""
    import warnings

    from _robust_util import sphere_normals

    from psinspect.normalmap import encode_png

    n, m = sphere_normals(40)
    png = encode_png(n, m)
    for name, background, warned in (("black", (0, 0, 0), False), ("flat", (128, 128, 255), True)):
        img = png.copy()
        img[~m] = background
        assert cv2.imwrite(str(tmp_path / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, mask = load_normal_map(tmp_path / f"{name}.png")
        said = [str(w.message) for w in caught]
        assert mask.all() == warned
        assert (len(said) == 1 and "every pixel counts as the object" in said[0]
                and "(0.00, 0.00, 1.00)" in said[0]) if warned else not said, said


@pytest.mark.parametrize(("share", "refused"), [(0.03, False), (0.10, True)])
def test_a_png_with_too_many_off_unit_pixels_is_not_a_normal_map(share: float,
                                                                 refused: bool) -> None:
    """Up to PNG_OFF_UNIT_SHARE (5 %) of the object's inner pixels may decode off unit length
    (damage, a painted mark); more, and the image is not a normal map."""
    from psinspect.normalmap import PNG_OFF_UNIT_SHARE, decode_png, encode_png

    n = np.zeros((40, 40, 3), np.float32)
    n[..., 2] = 1.0
    png = encode_png(n, np.ones((40, 40), bool))
    inner = np.argwhere(np.ones((38, 38), bool)) + 1
    pick = inner[np.random.default_rng(0).choice(len(inner), int(share * len(inner)),
                                                 replace=False)]
    png[pick[:, 0], pick[:, 1], :3] = 255  # (1, 1, 1): length 1.73
    assert (share > PNG_OFF_UNIT_SHARE) == refused
    if refused:
        with pytest.raises(PsinspectError, match=r"not a normal map: 10% of its object"):
            decode_png(png)
    else:
        out, mask = decode_png(png)
        assert mask.all() and np.allclose(np.linalg.norm(out, axis=-1), 1, atol=1e-5)


def test_a_back_facing_map_that_is_x_and_z_exchanged_says_so() -> None:
    """A part tilted toward -x, written in BGR order (x and z exchanged): most of it seems to
    face away and the map is refused; the refusal names the likely channel order (it only
    said the camera frame, while a dome got the channel-order warning)."""
    n, m = _dome()
    tilt = np.array([-0.7, 0.0, 0.7], np.float32)
    t = n + tilt
    t /= np.linalg.norm(t, axis=-1, keepdims=True)
    assert (t[..., 2] > 0).all() and (t[..., 0] < 0).mean() > 0.5
    validate_normal_map(t, m)
    with pytest.raises(PsinspectError, match="with x and z exchanged most would face it: if "
                                             "its channels are in another order"):
        validate_normal_map(np.ascontiguousarray(t[..., ::-1]), m)
    # back-facing with no sign of an exchange (a flipped z): the frame only
    with pytest.raises(PsinspectError, match=r"z toward the camera$"):
        validate_normal_map(-n, m)
