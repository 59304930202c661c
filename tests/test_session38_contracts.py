"""Contracts of the changes since 3447cc4 that no test pinned down (found by mutation testing,
session 38): the words run prints for the pooled pass/fail fit of a fine-tune that kept its
start model's weights (the fit's own contracts are in test_fine_tune.py), the output folders
refused inside an input folder of parts, the thread pool and the record of written outputs, the
opaque-alpha and x/z-exchange hints, and detect's output names. Each test fails on a named
one-line mutant of the source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _robust_util import error_lines, run_cli

from psinspect.errors import PsinspectError


def _kept_config() -> dict[str, Any]:
    return {"model": "geo-seg", "threshold": 1.0, "image_threshold": 2.0,
            "calibration": {"gumbel": {"quantile": 1.0}, "val_maps": 4,
                            "val_image_scores": [1.0] * 172, "start_model_maps": 168},
            "training": {"epochs_run": 1, "init_from": {"kept_start_weights": True}}}


def test_the_model_stage_line_names_the_pooled_maps(tmp_path: Path, monkeypatch) -> None:
    """The run's model stage closes with what a kept fine-tune's thresholds were fitted to,
    the bundled model's own calibration maps counted. Kills `kept_start_words(start_maps(
    config))` -> `kept_start_words(None)` and dropping the stage line's `kept` text."""
    from test_run_stages import _Lines, _Stages

    import psinspect.train
    from psinspect.pipeline import make_config, run_pipeline

    stages = _Stages(monkeypatch)
    stages.config = _kept_config()
    monkeypatch.setattr(psinspect.train, "train_model", lambda *a, **k: _kept_config())
    lines = _Lines()
    run_pipeline(tmp_path / "w", make_config("quick"), lines)
    line = next(s for s in lines.closed if "image threshold" in s)
    assert line.endswith("; no epoch beat the bundled model on the validation maps: its "
                         "weights kept, the pixel threshold fitted here, the pass/fail "
                         "threshold to these good maps and its own 168 calibration maps"), line


def test_run_says_the_pooled_maps_on_stdout(tmp_path: Path, monkeypatch, capsys) -> None:
    """``psinspect run``'s result line for a kept fine-tune counts the bundled model's maps
    pooled into the pass/fail fit. Kills `kept_start_words(info.get('pass_fail_start_maps'))`
    -> `kept_start_words(None)` in cli/run.py."""
    import psinspect.pipeline

    info = {"model": "geo-seg", "fine_tuned_from": "bundled", "fine_tune_kept_start": True,
            "pass_fail_start_maps": 168, "metrics": {"pixel_auroc": 0.9},
            "verdicts": {"defective_failed": 1, "defective_passed": 0, "clean_failed": 0,
                         "clean_passed": 1}, "image_threshold": 2.0, "timings_s": {"total": 1.0}}
    monkeypatch.setattr(psinspect.pipeline, "run_pipeline", lambda *a, **k: info)
    monkeypatch.setattr(psinspect.pipeline, "relocate_paths", lambda *a, **k: None)
    code, out, err = run_cli(["run", "--quick", "-o", tmp_path / "r"], monkeypatch, capsys)
    assert code == 0, err
    assert out.startswith(
        "The geo-seg model fine-tuned in this run from the bundled one (no epoch beat the "
        "bundled model on the validation maps: its weights kept, the pixel threshold fitted "
        "here, the pass/fail threshold to these good maps and its own 168 calibration maps): "
        "pixel_auroc 0.900"), out


def test_run_refuses_an_output_inside_its_data_folder(tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    """``run --data caps -o caps/sub`` is refused before any work, as detect's is. Kills
    dropping `part_folders=True` from cli/run.py's check_output_dir."""
    data = tmp_path / "caps"
    data.mkdir()
    code, _, err = run_cli(["run", "--quick", "--data", data, "-o", data / "sub"],
                           monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {data / 'sub'}: lies inside {data.resolve()}, an input folder of this "
        "command, which it would then hold beside its parts: choose an output folder outside "
        "it"], err
    assert not (data / "sub").exists()


# --- fileio.py: check_output_dir's part folders, input_names ----------------------------------

def test_outputs_inside_folders_that_are_no_folders_of_parts_are_allowed(tmp_path: Path
                                                                           ) -> None:
    """Inside a ``psinspect normals`` output, a dataset (manifest.json) or a model folder
    (config.json) an output is allowed: their sub-folders are not read. Kills dropping each
    of `is_normals_folder(folder)`, the manifest.json and the config.json clauses of
    _holds_parts."""
    from psinspect.fileio import check_output_dir

    normals = tmp_path / "normals"
    normals.mkdir()
    np.save(normals / "normals.npy", np.zeros((2, 2, 3), np.float32))
    (normals / "run.json").write_text(json.dumps({"command": "normals"}))
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "manifest.json").write_text("{}")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for folder in (normals, dataset, model):
        check_output_dir(folder / "sub", False, [folder], part_folders=True)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(PsinspectError, match="lies inside"):
        check_output_dir(plain / "sub", False, [plain], part_folders=True)


def test_an_output_inside_nested_input_folders_names_the_nearest(tmp_path: Path) -> None:
    """With ``maps`` and ``maps/a`` both given, ``-o maps/a/b`` is said to lie inside
    ``maps/a``, the folder that would hold it. Kills `inside[-1]` -> `inside[0]`."""
    from psinspect.fileio import check_output_dir

    inner = tmp_path / "maps" / "a"
    inner.mkdir(parents=True)
    with pytest.raises(PsinspectError, match=f"lies inside {inner.resolve()}, an input"):
        check_output_dir(inner / "b", False, [tmp_path / "maps", inner], part_folders=True)


def test_names_follow_the_absolute_paths_whatever_form_they_are_given_in(
        tmp_path: Path, monkeypatch) -> None:
    """``a/x.npy`` given relative and ``a_x.npy`` given absolute (beside ``b/x.npy``) get the
    names they get when all are absolute (``a/x.npy`` sorts first: ``a_x``; ``a_x.npy``:
    ``a_x_2``). Kills sorting by the paths as given (`str(paths[i])`) instead of
    `os.path.abspath`."""
    from psinspect.fileio import input_names

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.npy").write_bytes(b"")
    (tmp_path / "a_x.npy").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    want = ["a_x_2", "a_x", "b_x"]
    assert input_names([tmp_path / "a_x.npy", tmp_path / "a" / "x.npy",
                        tmp_path / "b" / "x.npy"]) == want
    assert input_names([tmp_path / "a_x.npy", Path("a") / "x.npy", Path("b") / "x.npy"]) == want


# --- interrupts.py ----------------------------------------------------------------------------

def test_a_thread_pool_of_no_workers_has_one() -> None:
    """``thread_pool(0)`` (no maps to share out) still runs its calls. Kills dropping
    `max(1, ...)`."""
    from psinspect.interrupts import thread_pool

    with thread_pool(0) as pool:
        assert list(pool.map(lambda v: v * 2, [1, 2])) == [2, 4]


def test_written_gives_a_copy() -> None:
    """The list ``written()`` returns is the caller's: changing it changes no record (the
    console script slices it against the count it took before the command). Kills returning
    the state's own list."""
    from psinspect.interrupts import written

    got = written()
    got.append("not written")
    assert "not written" not in written()


# --- normalmap.py -----------------------------------------------------------------------------

def test_the_alpha_hint_counts_only_the_objects_black_pixels() -> None:
    """A map whose alpha channel marks its object rightly (black background at alpha 0) but
    whose object is noise is refused without the alpha hint: the black background is not the
    object. Kills counting black pixels over the whole image (dropping `judged &`)."""
    from psinspect.normalmap import decode_png

    img = np.zeros((60, 60, 4), np.uint8)
    rng = np.random.default_rng(0)
    img[20:40, 20:40, :3] = rng.integers(1, 255, (20, 20, 3))
    img[20:40, 20:40, 3] = 255
    with pytest.raises(PsinspectError, match=r"R = x, G = y, B = z\)$"):
        decode_png(img)


def _columns(share_back: float, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Normals (size, size, 3): the left ``share_back`` of the columns (-0.6, 0, -0.8) (away
    from the camera, x < 0), the rest (0.6, 0, 0.8)."""
    n = np.empty((size, size, 3), np.float32)
    cut = round(share_back * size)
    n[:, :cut] = (-0.6, 0.0, -0.8)
    n[:, cut:] = (0.6, 0.0, 0.8)
    return n, np.ones((size, size), bool)


def test_the_x_z_hint_needs_most_of_the_object_to_face_the_camera_once_exchanged() -> None:
    """60 % of a map faces away, the other 40 % has x > 0: exchanging x and z would turn only
    those 40 % toward the camera, so no channel-order hint. Kills comparing with `n_back`
    instead of `n_obj`."""
    from psinspect.normalmap import validate_normal_map

    with pytest.raises(PsinspectError, match=r"z toward the camera$"):
        validate_normal_map(*_columns(0.6))

