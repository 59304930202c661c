"""The app hands Gradio result images as per-request files (see
:func:`psinspect.app.result_files`): unique, complete PNGs; old ones pruned; the results
download holds what ``psinspect detect`` writes for the input."""

from __future__ import annotations

import os
import time
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
