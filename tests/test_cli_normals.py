"""``psinspect normals`` end to end, and every capture validation failure (message + nothing
written)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from _robust_util import run_cli

from psinspect.capture import lights_from_slant_tilt, load_capture, write_capture
from psinspect.errors import PsinspectError
from psinspect.fileio import WRITTEN_MANIFEST
from psinspect.normalmap import load_normal_map

SEED = 7


def synthetic_capture(folder: Path, k: int = 12, size: int = 40, with_gt: bool = True) -> Path:
    """A Lambertian hemisphere under k lights, written in the DiLiGenT layout (colour, RGB
    intensities)."""
    rng = np.random.default_rng(SEED)
    lights = lights_from_slant_tilt(rng.uniform(10, 45, k), np.linspace(0, 360, k,
                                                                       endpoint=False))
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    x, y = (xx - c) / (size / 2.2), -(yy - c) / (size / 2.2)
    mask = x**2 + y**2 < 0.8
    z = np.sqrt(np.clip(1 - x**2 - y**2, 0, None))
    n = np.where(mask[..., None], np.stack([x, y, z], -1), 0).astype(np.float32)
    inten = rng.uniform(0.8, 1.2, (k, 3))
    shade = np.maximum(np.einsum("hwc,kc->khw", n, lights), 0) * 0.7
    imgs = shade[..., None] * inten[:, None, None, :]
    return write_capture(folder, imgs, lights, mask, intensities=inten,
                         normals_gt=n if with_gt else None)


def test_normals_end_to_end(tmp_path: Path, monkeypatch, capsys) -> None:
    cap = synthetic_capture(tmp_path / "cap")
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["normals", str(cap), "-o", str(out)], monkeypatch, capsys)
    assert code == 0
    names = {"normals.npy", "normals.png", "mask.png", "albedo.npy", "confidence.npy",
             "run.json", "metrics.json", WRITTEN_MANIFEST}
    assert {p.name for p in out.iterdir()} == names
    run = json.loads((out / "run.json").read_text())
    assert run["inputs"]["lights_file"] == str((cap / "light_directions.txt").resolve())
    assert run["inputs"]["intensities_file"] == str((cap / "light_intensities.txt").resolve())
    normals = np.load(out / "normals.npy")
    mask = cv2.imread(str(out / "mask.png"), cv2.IMREAD_UNCHANGED) > 0
    assert normals.dtype == np.float32 and normals.shape == (*mask.shape, 3)
    assert np.allclose(np.linalg.norm(normals[mask], axis=1), 1, atol=1e-4)
    png_n, png_mask = load_normal_map(out / "normals.png")
    assert (png_mask == mask).all()
    assert np.degrees(np.arccos(np.clip((png_n * normals)[mask].sum(1), -1, 1))).max() < 1.5
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mean_angular_error_deg"] < 0.5  # 16-bit quantisation only
    assert f"{metrics['mean_angular_error_deg']:.2f}" in stdout
    run = json.loads((out / "run.json").read_text())
    assert run["solver"] == "robust" and run["light_indices_1based"] == list(range(1, 13))
    assert run["version"] and run["inputs"]["capture_dir"].endswith("cap")
    conf = np.load(out / "confidence.npy")
    assert conf.shape == mask.shape and (conf[~mask] == 0).all() and conf[mask].mean() > 0.9

    # a second run into the same folder is refused without --force, allowed with it
    code, _, err = run_cli(["normals", str(cap), "-o", str(out), "--solver", "robust",
                            "--lights", "1-6,9,12"], monkeypatch, capsys)
    assert code == 2 and "not empty" in err and "--force" in err
    code, _, _ = run_cli(["normals", str(cap), "-o", str(out), "--solver", "robust",
                          "--lights", "1-6,9,12", "--force"], monkeypatch, capsys)
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["solver"] == "robust" and run["light_indices_1based"] == [1, 2, 3, 4, 5, 6, 9, 12]
    assert json.loads((out / "metrics.json").read_text())["mean_angular_error_deg"] < 1.0


def test_num_lights_and_no_ground_truth(tmp_path: Path, monkeypatch, capsys) -> None:
    cap = synthetic_capture(tmp_path / "cap", with_gt=False)
    out = tmp_path / "out"
    code, _, _ = run_cli(["normals", str(cap), "-o", str(out), "--num-lights", "5"],
                         monkeypatch, capsys)
    assert code == 0 and not (out / "metrics.json").exists()
    run = json.loads((out / "run.json").read_text())
    assert len(run["light_indices_1based"]) == 5 and run["num_lights_used"] == 5


def test_robust_reports_dropped_images(tmp_path: Path, monkeypatch, capsys) -> None:
    cap = synthetic_capture(tmp_path / "cap", k=12)
    for name in ("002.png", "003.png", "007.png"):  # brighter than their stated intensity
        img = cv2.imread(str(cap / name), cv2.IMREAD_UNCHANGED).astype(np.float64)
        cv2.imwrite(str(cap / name), np.clip(img * 1.3, 0, 65535).astype(np.uint16))
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["normals", str(cap), "-o", str(out), "--solver", "robust"],
                              monkeypatch, capsys)
    assert code == 0 and "left out 3 image(s)" in stdout and "lights 2-3,7" in stdout
    run = json.loads((out / "run.json").read_text())
    assert run["lights_dropped_by_solver_1based"] == [2, 3, 7]


def test_missing_mask_warning_printed(tmp_path: Path, monkeypatch, capsys) -> None:
    cap = synthetic_capture(tmp_path / "cap")
    (cap / "mask.png").unlink()
    code, _, err = run_cli(["normals", str(cap), "-o", str(tmp_path / "o")], monkeypatch, capsys)
    assert code == 0 and "warning:" in err and "no mask.png" in err


# -- validation failures: each one is a clear one-line error naming the file, exit code 2, and
#    nothing is written (the output folder is not even created)


def _rewrite_line(path: Path, index: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n")


def _drop_last_light(cap: Path) -> None:
    p = cap / "light_directions.txt"
    p.write_text("\n".join(p.read_text().splitlines()[:-1]) + "\n")


def _resize_image(cap: Path) -> None:
    cv2.imwrite(str(cap / "004.png"), np.zeros((7, 9), np.uint16))


def _corrupt_image(cap: Path) -> None:
    (cap / "003.png").write_bytes(b"\x89PNG\r\n garbage")


def _nan_light(cap: Path) -> None:
    _rewrite_line(cap / "light_directions.txt", 1, "0.1 nan 0.9")


def _zero_light(cap: Path) -> None:
    _rewrite_line(cap / "light_directions.txt", 2, "0 0 0")


def _small_mask(cap: Path) -> None:
    cv2.imwrite(str(cap / "mask.png"), np.full((10, 10), 255, np.uint8))


def _two_lights(cap: Path) -> None:
    (cap / "filenames.txt").write_text("001.png\n002.png\n")
    for name in ("light_directions.txt", "light_intensities.txt"):
        p = cap / name
        p.write_text("\n".join(p.read_text().splitlines()[:2]) + "\n")


def _missing_image(cap: Path) -> None:
    (cap / "005.png").unlink()


CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("count", _drop_last_light, r"light_directions\.txt: 11 lights but 12 images"),
    ("size", _resize_image, r"004\.png: image size 9x7 differs"),
    ("unreadable", _corrupt_image, r"003\.png: cannot read image"),
    ("nonfinite", _nan_light, r"light_directions\.txt: light 2 has a non-finite value"),
    ("zero", _zero_light, r"light_directions\.txt: light 3 is a zero vector"),
    ("mask", _small_mask, r"mask\.png: mask size 10x10 differs from the images"),
    ("fewlights", _two_lights, r"light_directions\.txt: .*needs at least 3 lights, got 2"),
    ("missing", _missing_image, r"005\.png: image file not found"),
]


@pytest.mark.parametrize(("breakage", "pattern"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_validation_failure(tmp_path: Path, monkeypatch, capsys, breakage, pattern) -> None:
    cap = synthetic_capture(tmp_path / "cap", k=12, size=24)
    breakage(cap)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(PsinspectError, match=pattern):
        load_capture(cap)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["normals", str(cap), "-o", str(out)], monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and re.search(pattern, lines[-1])
    assert len([ln for ln in lines if ln.startswith("error")]) == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no staging leftovers


def test_missing_lights_file_points_to_the_option(tmp_path: Path, monkeypatch, capsys) -> None:
    synthetic_capture(tmp_path / "cap2", k=12, size=24)
    cap = synthetic_capture(tmp_path / "cap", k=12, size=24)
    (cap / "light_directions.txt").unlink()
    code, _, err = run_cli(["normals", str(cap), "-o", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {cap}: no lights file (lights.txt or light_directions.txt) in the folder; "
        "give one with --lights-file"]
    code, _, err = run_cli(["normals", str(tmp_path), "-o", str(tmp_path / "out")], monkeypatch,
                           capsys)  # a folder holding a capture folder
    assert code == 2 and err.strip().splitlines() == [
        f"error: {tmp_path}: a folder of 2 capture folders (cap, cap2); give one of them"]


@pytest.mark.parametrize(("args", "pattern"), [
    (["--lights", "1-20"], r"--lights '1-20': lights 13-20 are outside the capture's lights 1-12"),
    (["--lights", "0-5"], r"--lights '0-5': lights are numbered from 1; '0-5' starts at 0"),
    (["--num-lights", "2"], r"--num-lights 2: must be between 3"),
    (["--solver", "magic"], r"--solver 'magic': unknown solver"),
    (["--lights", "1-3", "--num-lights", "4"], r"--num-lights 4: must be between 3 and the 3 "
                                                r"lights available"),
    (["--lights-file", "nope.txt"], r"nope\.txt: lights file not found"),
])
def test_bad_arguments(tmp_path: Path, monkeypatch, capsys, args, pattern) -> None:
    cap = synthetic_capture(tmp_path / "cap", k=12, size=24)
    out = tmp_path / "out"
    code, _, err = run_cli(["normals", str(cap), "-o", str(out), *args], monkeypatch, capsys)
    assert code == 2 and re.search(pattern, err), err
    assert not out.exists()


def test_error_only_where_the_ground_truth_has_normals(tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    """Zero ground-truth vectors (no ground truth there, e.g. under a wider mask) are left out of
    the angular error instead of counting as 90 deg; none at all: no error, a warning."""
    cap = synthetic_capture(tmp_path / "cap")
    full = load_capture(cap)
    mask = full.mask
    n = full.normals_gt.copy()
    n[:, :20] = 0.0  # the left half has no ground truth
    np.save(cap / "Normal_gt.npy", n)
    out = tmp_path / "out"
    code, _, _ = run_cli(["normals", str(cap), "-o", str(out)], monkeypatch, capsys)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pixels"] == int((mask & (np.abs(n).sum(-1) > 0)).sum())
    assert metrics["mean_angular_error_deg"] < 0.5
    np.save(cap / "Normal_gt.npy", np.zeros_like(n))
    out2 = tmp_path / "out2"
    code, _, err = run_cli(["normals", str(cap), "-o", str(out2)], monkeypatch, capsys)
    assert code == 0 and not (out2 / "metrics.json").exists() and "no angular error" in err


def test_lights_in_a_flipped_frame_are_hinted_at(tmp_path: Path, monkeypatch, capsys) -> None:
    """Lights whose y was taken from row numbers (flipped): PS still fits, the normals come
    out mirrored; against the capture's ground truth that is tens of degrees, which was only
    printed as the error."""
    cap = synthetic_capture(tmp_path / "cap")
    code, _, err = run_cli(["normals", str(cap), "-o", str(tmp_path / "ok")], monkeypatch, capsys)
    assert code == 0 and "warning" not in err, err
    lights_file = cap / "light_directions.txt"
    lights = np.loadtxt(lights_file)
    lights[:, 1] *= -1
    np.savetxt(lights_file, lights)
    code, _, err = run_cli(["normals", str(cap), "-o", str(tmp_path / "flip")], monkeypatch,
                           capsys)
    assert code == 0, err
    # the slopes' own check (tests/test_frame_check.py), then the ground truth's
    curl, line = [ln for ln in err.splitlines() if ln.startswith("warning")]
    assert "its light directions (the lights file)'s x or y axis is likely flipped" in curl
    assert line.endswith("is not noise: check the lights' frame (the warning above)"), line
    # wrong light intensities: the frame check does not speak, nor does the hint blame the
    # frame alone (it was the only cause it named)
    np.savetxt(lights_file, lights * [1, -1, 1])  # (the original lights again)
    k = len(lights)
    np.savetxt(cap / "light_intensities.txt", np.where(np.arange(k) < k // 2, 0.2, 5.0))
    code, _, err = run_cli(["normals", str(cap), "-o", str(tmp_path / "order"), "--solver",
                            "ls"], monkeypatch, capsys)
    assert code == 0, err
    noted, line = [ln for ln in err.splitlines() if ln.startswith("warning")]
    assert "far brighter or darker than their light intensity says" in noted, noted
    assert "is not noise: check that each image goes with its light" in line, line


def test_a_capture_too_small_for_a_normal_map_is_refused(tmp_path, monkeypatch, capsys) -> None:
    """normals wrote a 7 x 7 map that detect then refused as too small."""
    from _robust_util import run_cli

    cap = synthetic_capture(tmp_path / "cap", size=7, with_gt=False)
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "n"], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"error: {cap}: images are 7 x 7 pixels, too small for a normal map (at least 8 x 8)")
    assert not (tmp_path / "n").exists()


def test_least_squares_names_an_image_far_off_its_light(tmp_path, monkeypatch, capsys) -> None:
    """--solver ls with one black image (a light that did not fire) bent the normals silently
    (DiLiGenT ball, 24 lights: 4.0 -> 8.0 deg mean error); the robust solver leaves such an
    image out and says so."""
    import cv2

    cap = synthetic_capture(tmp_path / "cap")
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "ok", "--solver", "ls"],
                           monkeypatch, capsys)
    assert code == 0 and "warning" not in err, err
    names = (cap / "filenames.txt").read_text().split()
    dark = cap / names[5]
    cv2.imwrite(str(dark), np.zeros_like(cv2.imread(str(dark), cv2.IMREAD_UNCHANGED)))
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "ls", "--solver", "ls"],
                           monkeypatch, capsys)
    assert code == 0, err
    (line,) = [ln for ln in err.splitlines() if "far brighter or darker" in ln]
    assert line.startswith(f"warning: {cap}: 1 image(s) are far brighter or darker than their "
                           "light intensity says (light 6 (0.00x):"), line
    # kept in run.json, so detect repeats it for the map
    run = json.loads((tmp_path / "ls" / "run.json").read_text())
    assert run["warnings"] == [line.removeprefix("warning: ")]
    code, out, err = run_cli(["normals", cap, "-o", tmp_path / "robust"], monkeypatch, capsys)
    assert code == 0 and "far brighter" not in err and "left out 1 image(s)" in out, (out, err)


def test_a_lights_file_name_that_could_mean_two_files_is_refused(tmp_path: Path, monkeypatch,
                                                                 capsys) -> None:
    """A relative --lights-file was taken from the capture folder where one of that name is
    there, silently over the user's file of the same name in the working directory (an audit:
    x and y exchanged in the folder's copy gave wrong normals, warned about by luck); and a
    folder holding both lights.txt and light_directions.txt was read with lights.txt without
    a word. Both are refused where the files differ, and read where they are the same."""
    cap = synthetic_capture(tmp_path / "cap", k=12, size=24)
    rows = (cap / "light_directions.txt").read_text()
    swapped = "\n".join(" ".join(np.array(r.split())[[1, 0, 2]])
                        for r in rows.splitlines() if r.strip()) + "\n"
    (cap / "mine.txt").write_text(swapped)
    (tmp_path / "mine.txt").write_text(rows)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["normals", str(cap), "--lights-file", "mine.txt", "-o", "o1"],
                           monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: --lights-file mine.txt: names two different files, {cap / 'mine.txt'} in the "
        f"capture folder and {tmp_path / 'mine.txt'} here; give the one meant by its absolute "
        "path"]
    assert not (tmp_path / "o1").exists()
    code, _, err = run_cli(["normals", str(cap), "--lights-file", str(tmp_path / "mine.txt"),
                            "-o", "o2"], monkeypatch, capsys)
    assert code == 0, err
    (cap / "mine.txt").write_text(rows)  # the same content: no doubt which is meant
    code, _, err = run_cli(["normals", str(cap), "--lights-file", "mine.txt", "-o", "o3"],
                           monkeypatch, capsys)
    assert code == 0, err
    (cap / "lights.txt").write_text(swapped)
    code, _, err = run_cli(["normals", str(cap), "-o", "o4"], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {cap}: holds two different lights files, lights.txt and "
        "light_directions.txt; remove one, or name the one meant with --lights-file"]
    (cap / "lights.txt").write_text(rows)
    code, _, err = run_cli(["normals", str(cap), "-o", "o5"], monkeypatch, capsys)
    assert code == 0, err


@pytest.mark.parametrize(("content", "pattern"), [
    (b"junk", r"M_defect\.png: missing or unreadable ground-truth mask"),
    ("small", r"M_defect\.png: ground-truth mask is 5 x 5, the map 24 x 24"),
])
def test_a_capture_with_an_unreadable_defect_mask_is_refused(tmp_path: Path, monkeypatch,
                                                             capsys, content, pattern) -> None:
    """normals copied a capture's M_defect.png without reading it, and detect then refused
    the output it wrote (an audit): the mask is read as detect reads it, first."""
    import cv2

    cap = synthetic_capture(tmp_path / "cap", k=12, size=24)
    if content == "small":
        cv2.imwrite(str(cap / "M_defect.png"), np.zeros((5, 5), np.uint8))
    else:
        (cap / "M_defect.png").write_bytes(content)
    code, _, err = run_cli(["normals", str(cap), "-o", str(tmp_path / "out")], monkeypatch,
                           capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert code == 2 and len(lines) == 1 and re.search(pattern, lines[0]), err
    assert not (tmp_path / "out").exists()


def test_num_lights_picks_among_the_lights_given(tmp_path: Path, monkeypatch, capsys) -> None:
    """``--lights 4-12 --num-lights 4``: 4 lights spread over the hemisphere among lights 4-12
    (it was refused, so DiLiGenT's bear could not be solved from 8 spread lights without its
    bad first 20 images); the same 4 as the spread pick from those 9 lights alone."""
    import json

    from psinspect.capture import read_lights_file
    from psinspect.stereo import farthest_point_lights

    cap = synthetic_capture(tmp_path / "cap", k=12, size=24)
    out = tmp_path / "out"
    code, _, err = run_cli(["normals", str(cap), "-o", str(out), "--lights", "4-12",
                            "--num-lights", "4"], monkeypatch, capsys)
    assert code == 0, err
    run = json.loads((out / "run.json").read_text())
    lights = read_lights_file(cap / "light_directions.txt")
    want = [int(i) + 4 for i in farthest_point_lights(lights[3:], 4)]
    assert run["light_indices_1based"] == want and all(4 <= i <= 12 for i in want)
    assert run["settings"]["lights"] == "4-12" and run["settings"]["num_lights"] == 4
    code, _, err = run_cli(["normals", str(cap), "-o", str(tmp_path / "all"), "--num-lights",
                            "4"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "all" / "run.json").read_text())[
        "light_indices_1based"] != want  # (among all 12, another pick)
