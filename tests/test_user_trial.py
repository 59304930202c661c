"""What a fresh user's trial of the README found (2026-12-03): each case as the user met it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from _robust_util import error_lines, run_cli, tiny_capture


@pytest.mark.parametrize("keep", [("light_intensities.txt",), ("mask.png",),
                                  ("mask.png", "Normal_gt.npy")])
def test_detect_names_a_capture_folders_missing_lights_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        keep: tuple[str, ...]) -> None:
    """A capture folder (plain layout: no filenames.txt) without its lights file was taken
    for a folder of normal maps, and each image refused as 'not a normal map'."""
    cap = tiny_capture(tmp_path / "cap", with_gt=True)
    (cap / "light_intensities.txt").write_text("1\n" * 6)
    for f in ("filenames.txt", "light_directions.txt", "light_intensities.txt", "mask.png",
              "Normal_gt.npy"):
        if f not in keep and (cap / f).exists():
            (cap / f).unlink()
    code, _, err = run_cli(["detect", cap, "-o", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2 and len(error_lines(err)) == 1, err
    assert f"holds {keep[0]} as a capture folder does, but no lights file" in err
    assert not (tmp_path / "out").exists()


def test_a_folder_of_maps_with_a_mask_beside_them_is_no_capture(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """A mask beside .npy maps does not make a folder a capture without lights."""
    folder = tmp_path / "maps"
    folder.mkdir()
    n = np.zeros((16, 16, 3), np.float32)
    n[..., 2] = 1.0
    np.save(folder / "a.npy", n)
    cv2.imwrite(str(folder / "mask.png"), np.full((16, 16), 255, np.uint8))
    code, _, err = run_cli(["detect", folder, "-o", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2 and "as a capture folder does" not in err and "mask.png" in err, err


def test_dataset_says_once_which_sub_folders_it_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """The warning about sub-folders with images but no lights file was printed twice."""
    from psinspect.render import render_dataset

    parts = tmp_path / "parts"
    render_dataset(parts, 3, seed=5, size=64, defect_rate=0.0)
    (parts / "b").mkdir()
    (parts / "b" / "001.png").write_bytes((sorted(parts.glob("*/001.png"))[0]).read_bytes())
    code, _, err = run_cli(["dataset", parts, "-o", tmp_path / "ds", "--holdout", "none"],
                           monkeypatch, capsys)
    assert code == 0, err
    assert err.count("left out: b") == 1, err


def test_implanted_maps_keep_the_solver_and_light_count_of_their_normals_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """`defects` on a `psinspect normals` map keeps its PS solver and light count (detect's
    warning about a map solved with another solver than the model's was lost on A_ maps)."""
    from psinspect.detect import load_input

    cap = tiny_capture(tmp_path / "cap", size=64)
    for args in (["normals", cap, "--solver", "ls", "-o", tmp_path / "n"],
                 ["defects", tmp_path / "n", "-o", tmp_path / "d", "--per-image", "1"]):
        code, _, err = run_cli(args, monkeypatch, capsys)
        assert code == 0, err
    for f in ("A_n.npy", "A_n.png"):
        inp = load_input(tmp_path / "d" / f)
        assert (inp.ps_solver, inp.num_lights) == ("ls", 6), f
    (tmp_path / "d" / "A_n.json").write_text('["not", "a", "record"]')
    assert load_input(tmp_path / "d" / "A_n.npy").ps_solver is None
    np.save(tmp_path / "x.npy", np.load(tmp_path / "d" / "A_n.npy"))  # no sidecar
    assert load_input(tmp_path / "x.npy").num_lights is None


def test_noise_tilted_toward_the_camera_is_no_surface() -> None:
    """Random normals within about 50 deg of the camera passed the 3 x 3 coherence check (its
    means are long enough) and a map of them got PASS; most of its neighbouring normals
    differ by more than 40 deg, which no surface's do. A groove pattern of +-45 deg flanks,
    2 px each, is still a surface."""
    from psinspect.errors import PsinspectError
    from psinspect.normalmap import validate_normal_map

    rng = np.random.default_rng(1)
    n = np.concatenate([rng.uniform(-1.2, 1.2, (64, 64, 2)), np.ones((64, 64, 1))], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    with pytest.raises(PsinspectError, match=r"^noise: not a surface: \d+ of 8064 pairs of "
                                             r"neighbouring object normals differ by more "
                                             r"than 40 deg"):
        validate_normal_map(n.astype(np.float32), name="noise")
    grooves = np.zeros((64, 64, 3), np.float32)
    grooves[..., 0] = np.where((np.arange(64) // 2) % 2 == 0, 1.0, -1.0)[None, :]
    grooves[..., 2] = 1.0
    grooves /= np.linalg.norm(grooves, axis=-1, keepdims=True)
    assert validate_normal_map(grooves, name="grooves")[1].all()
