"""The app hands Gradio result images as per-request files (see
:func:`psinspect.app.result_files`): unique, complete PNGs; old ones pruned; the results
download holds what ``psinspect detect`` writes for the input."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

from psinspect.app import RESULT_FILES_MAX_AGE_S, result_files


def test_result_files_are_unique_complete_pngs(tmp_path: Path) -> None:
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    a, zip_a = result_files([rgb, None, rgb[..., 1]], tmp_path)
    b, _ = result_files([rgb, None, rgb[..., 1]], tmp_path)
    assert a[1] is None and b[1] is None and zip_a is None  # no prediction, no zip
    assert len({a[0], a[2], b[0], b[2]}) == 4  # the same image twice: two files
    for p in (a[0], b[0]):
        back = cv2.imread(p, cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(back[..., ::-1], rgb)  # cv2 reads BGR
    assert cv2.imread(a[2], cv2.IMREAD_UNCHANGED).shape == (6, 5)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_old_result_folders_are_pruned(tmp_path: Path) -> None:
    rgb = np.full((4, 4, 3), 7, np.uint8)
    (old,), _ = result_files([rgb], tmp_path)
    (recent,), _ = result_files([rgb], tmp_path)
    past = time.time() - RESULT_FILES_MAX_AGE_S - 5
    os.utime(Path(old).parent, (past, past))
    result_files([rgb], tmp_path)
    assert not Path(old).exists() and Path(recent).is_file()
    assert len(list(tmp_path.iterdir())) == 2


def _app_and_detect(upload: Path, detect_input: Path, choice, tmp_path: Path
                    ) -> tuple[Path, dict, Path, dict]:
    """The app's results zip for ``upload``, extracted, and its summary.json; detect's output
    folder for ``detect_input`` and its summary."""
    from psinspect.app import inspect_upload
    from psinspect.detect import write_detection_outputs

    out = inspect_upload(upload, choice, None, None, tmp_path / "in")
    _, download = result_files(out[1:5], tmp_path / "results", out[6])
    with zipfile.ZipFile(download) as z:
        z.extractall(tmp_path / "zip")
    want = write_detection_outputs([detect_input], tmp_path / "detect", choice.bundle)
    got = json.loads((tmp_path / "zip" / "summary.json").read_text())
    return tmp_path / "zip", got, tmp_path / "detect", want


def test_a_capture_zips_ground_truth_is_in_the_results(tmp_path: Path, geometric_choice) -> None:
    """detect draws a capture's M_defect.png in the panel and counts it in summary.json
    (gt_defect_px); the app's download, said to hold what detect writes, had neither."""
    from psinspect.app import list_examples

    example = next(p for p in list_examples() if p.suffix == ".zip")
    with zipfile.ZipFile(example) as z:
        z.extractall(tmp_path / "capture")
    (folder,) = (tmp_path / "capture").iterdir()
    h, w = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_GRAYSCALE).shape
    gt = np.zeros((h, w), np.uint8)
    gt[h // 3:h // 2, w // 3:w // 2] = 255
    cv2.imwrite(str(folder / "M_defect.png"), gt)
    upload = tmp_path / f"{folder.name}.zip"
    with zipfile.ZipFile(upload, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"{folder.name}/{f.name}")
    got_dir, got, want_dir, want = _app_and_detect(upload, folder, geometric_choice, tmp_path)
    (entry,), (want_entry,) = got["inputs"], want["inputs"]
    assert entry["gt_defect_px"] == want_entry["gt_defect_px"] > 0
    # the panel has detect's ground-truth column; the scores are detect's to the bit (the app
    # left the capture's normals as PS gave them, detect renormalised them: scores differed
    # in the last bits, up to 3e-5 with a known-part model)
    for suffix in ("_panel.png", "_score.npy"):
        assert (got_dir / f"{folder.name}{suffix}").read_bytes() == (
            want_dir / f"{folder.name}{suffix}").read_bytes(), suffix


def test_a_clean_dataset_maps_ground_truth_is_in_the_results(tmp_path: Path,
                                                             geometric_choice) -> None:
    """An N_<x> map is a clean dataset map for detect (ground truth: no defect); so for the
    app, which found no ground truth for a map before."""
    import shutil

    from psinspect.app import list_examples

    example = next(p for p in list_examples() if p.suffix == ".png")
    (tmp_path / "up").mkdir()
    upload = Path(shutil.copy(example, tmp_path / "up" / "N_part.png"))
    got_dir, got, want_dir, want = _app_and_detect(upload, upload, geometric_choice, tmp_path)
    assert got["inputs"][0]["gt_defect_px"] == want["inputs"][0]["gt_defect_px"] == 0
    np.testing.assert_array_equal(cv2.imread(str(got_dir / "N_part_panel.png")),
                                  cv2.imread(str(want_dir / "N_part_panel.png")))
