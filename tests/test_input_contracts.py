"""Contracts that no other test pinned down (found by a mutation audit of session 27's
changes): which files of a folder are its normal maps, ThreadWarnings' per-thread lists,
detect --solver beside a map, every calibration part's surface recorded, and the truncation
of evaluate's calibration-surface warning."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest
from _robust_util import run_cli, sphere_normals

from psinspect.detect import ThreadWarnings, normal_map_files
from psinspect.errors import PsinspectError
from psinspect.fileio import save_npy
from psinspect.models import create_model
from psinspect.modelstore import save_model_dir
from psinspect.report import evaluation_warnings


def test_normal_map_files_of_a_folder(tmp_path: Path) -> None:
    """A folder's maps: its .npy and .png files in natural name order, hidden ones left out,
    without X.png beside X.npy (a preview) or M_X.png beside A_X (its ground truth); an M_ PNG
    with no A_ map beside it is a map of its own."""
    names = ["A_part10.npy", "A_part10.png", "M_part10.png", "A_part2.npy", "M_part2.png",
             "N_part3.npy", "N_part3.png", "loose.png", "M_orphan.png", ".hidden.npy",
             ".A_x.png", "notes.txt"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    (tmp_path / "sub.npy").mkdir()
    assert [p.name for p in normal_map_files(tmp_path)] == [
        "A_part2.npy", "A_part10.npy", "loose.png", "M_orphan.png", "N_part3.npy"]  # (any case)


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=1)  # (one place: a repeat is 'seen')


def test_thread_warnings_keeps_each_threads_own_warnings() -> None:
    """Inside ThreadWarnings, a thread inside recording() keeps the UserWarnings it raised, in
    order and every time raised (also under a filter that shows each one once); another
    thread's warnings, and those raised outside recording(), are not kept, and all are shown.
    Driven step by step so that both threads record at once."""
    both_in, a_warned, b_warned, done = (threading.Barrier(2), threading.Event(),
                                         threading.Event(), threading.Barrier(2))
    kept: dict[str, list[str]] = {}

    def a() -> None:
        with tw.recording() as notes:
            both_in.wait()
            _warn("today: a1")
            a_warned.set()
            b_warned.wait(10)
            _warn("today: a2")
            _warn("today: a1")
        done.wait()
        _warn("today: a after")
        kept["a"] = list(notes)

    def b() -> None:
        with tw.recording() as notes:
            both_in.wait()
            a_warned.wait(10)
            _warn("today: b1")
            b_warned.set()
        done.wait()
        kept["b"] = list(notes)

    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda m, *args, **kw: shown.append(str(m))
        with ThreadWarnings() as tw:
            threads = [threading.Thread(target=a), threading.Thread(target=b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            _warn("today: main")
    assert kept == {"a": ["today: a1", "today: a2", "today: a1"], "b": ["today: b1"]}
    assert sorted(shown) == sorted(["today: a1", "today: b1", "today: a2", "today: a1",
                                    "today: a after", "today: main"])


@pytest.mark.parametrize("n", [5, 6])
def test_calibration_surfaces_warning_names_five_then_trails_off(n: int) -> None:
    """evaluate names up to 5 test surfaces the thresholds were calibrated on, then ', ...'."""
    names = [f"s{i}" for i in range(n)]
    (line,) = evaluation_warnings({"test_surfaces_seen_in_training": [],
                                   "test_surfaces_seen_in_calibration": names})
    listed = "s0, s1, s2, s3, s4" + (", ..." if n > 5 else "")
    assert line.startswith(f"the model's thresholds were calibrated on {n} of the test "
                           f"surfaces ({listed}; train --calibrate-on)")


def test_detect_solver_with_a_map_and_a_capture(tmp_path: Path, monkeypatch, capsys) -> None:
    """--solver is refused only when no input is a capture folder: beside a normal map, one
    capture folder is enough (it is solved with it; the map is scored as it is)."""
    from psinspect.render import render_dataset

    cap = render_dataset(tmp_path / "caps", 1, defect_rate=0.0, seed=2, size=48, lights=8)[0]
    save_npy(tmp_path / "x.npy", sphere_normals(48)[0])
    geo = save_model_dir(tmp_path / "geo", create_model("geometric"), threshold=2.0,
                         image_threshold=3.0)
    code, _, err = run_cli(["detect", tmp_path / "x.npy", cap, "--model", geo, "--solver", "ls",
                            "-o", tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    assert (tmp_path / "d" / "summary.json").is_file()


def test_a_loose_map_among_capture_folders_is_refused(tmp_path: Path) -> None:
    """A folder of capture folders that also holds a normal map is refused (a part must not be
    skipped silently); a map's preview PNG beside it is not a part."""
    from psinspect.detect import expand_capture_sets
    from psinspect.render import render_dataset

    caps = render_dataset(tmp_path / "caps", 1, defect_rate=0.0, seed=2, size=48, lights=8)
    assert expand_capture_sets([tmp_path / "caps"]) == caps
    save_npy(tmp_path / "caps" / "loose.npy", sphere_normals(48)[0])
    with pytest.raises(PsinspectError, match="holds capture folders and also loose.npy"):
        expand_capture_sets([tmp_path / "caps"])


def test_config_records_every_calibration_parts_surface(tmp_path: Path) -> None:
    """train --calibrate-on records, in config.json training.calibration_surfaces, the
    fingerprints of all the captures the thresholds were calibrated on (what evaluate traces
    test surfaces by), and the SHA-256 of calibration maps."""
    import hashlib
    import json

    from psinspect.capture import capture_fingerprint
    from psinspect.render import render_dataset
    from psinspect.train import train_model

    caps = render_dataset(tmp_path / "caps", 4, defect_rate=0.0, seed=1, size=48, lights=8)
    train_model(caps[:2], tmp_path / "m", model_name="geometric",
                calibration_inputs=[caps[2], caps[3]])
    record = json.loads((tmp_path / "m" / "config.json").read_text())["training"][
        "calibration_surfaces"]
    assert record == {"surface_fingerprints": sorted(map(capture_fingerprint, caps[2:])),
                      "map_sha256": []}
    extra = save_npy(tmp_path / "extra.npy", sphere_normals(48)[0])
    train_model(caps[:2], tmp_path / "m2", model_name="geometric",
                calibration_inputs=[caps[2], extra])
    record = json.loads((tmp_path / "m2" / "config.json").read_text())["training"][
        "calibration_surfaces"]
    assert record == {"surface_fingerprints": [capture_fingerprint(caps[2])],
                      "map_sha256": [hashlib.sha256(extra.read_bytes()).hexdigest()]}


@pytest.mark.parametrize("command", [["detect"], ["train", "--model", "variation"],
                                     ["dataset"]])
def test_a_folder_of_folders_of_captures_says_where_they_are(
        command: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    """Folders of parts are read one level deep: a folder whose sub-folder holds the capture
    folders is refused with that sub-folder named (detect said only 'no images found')."""
    for part in ("p1", "p2"):
        (tmp_path / "top" / "caps" / part).mkdir(parents=True)
        (tmp_path / "top" / "caps" / part / "filenames.txt").write_text("a.png\n")
    code, out, err = run_cli([*command[:1], tmp_path / "top", *command[1:], "-o",
                              tmp_path / "out"], monkeypatch, capsys)
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0 and line.startswith("error:"), err
    assert line.endswith(f"give {tmp_path / 'top' / 'caps'} (folders of parts are read one "
                         "level deep)"), line
    assert not (tmp_path / "out").exists()


def test_an_input_given_twice_is_refused(tmp_path: Path) -> None:
    """detect refuses an input given twice, also through its folder of parts or another path
    to it (it was scored twice, as x and x_2); distinct inputs of the same name are kept."""
    from psinspect.detect import expand_capture_sets
    from psinspect.render import render_dataset

    caps = render_dataset(tmp_path / "caps", 2, defect_rate=0.0, seed=2, size=48, lights=8)
    twice = rf"{caps[0]}: this input is given twice \(through {tmp_path / 'caps'}\)"
    with pytest.raises(PsinspectError, match=twice):
        expand_capture_sets([caps[0], tmp_path / "caps"])
    save_npy(tmp_path / "x.npy", sphere_normals(48)[0])
    with pytest.raises(PsinspectError, match="x.npy: this input is given twice: give"):
        expand_capture_sets([tmp_path / "x.npy", tmp_path / "x.npy"])
    (tmp_path / "link.npy").symlink_to(tmp_path / "x.npy")
    with pytest.raises(PsinspectError, match=r"link.npy: this input is given twice \(also as "):
        expand_capture_sets([tmp_path / "x.npy", tmp_path / "link.npy"])
    (tmp_path / "sub").mkdir()
    save_npy(tmp_path / "sub" / "x.npy", sphere_normals(48)[0])
    assert expand_capture_sets([tmp_path / "x.npy", tmp_path / "sub" / "x.npy"]) == [
        tmp_path / "x.npy", tmp_path / "sub" / "x.npy"]


def test_psinspect_normals_outputs_as_detect_inputs(tmp_path: Path, monkeypatch,
                                                    capsys) -> None:
    """A folder of 'psinspect normals' output folders stands for them, as a folder of capture
    folders does (it was read as a broken capture: 'no images found'); --lights and --solver
    are refused where no input is a capture (they were ignored for a solved map); a run.json
    that cannot be read beside normals.npy is named (the folder was taken for a folder of
    maps and its albedo.npy called a bad normal map); a .tif among maps is not skipped
    silently."""
    from psinspect.detect import expand_capture_sets
    from psinspect.render import render_dataset

    caps = render_dataset(tmp_path / "caps", 2, defect_rate=0.0, seed=2, size=48, lights=8)
    outs = tmp_path / "solved"
    for cap in caps:
        code, _, err = run_cli(["normals", cap, "-o", outs / cap.name], monkeypatch, capsys)
        assert code == 0, err
    assert expand_capture_sets([outs]) == [outs / c.name for c in caps]
    geo = save_model_dir(tmp_path / "geo", create_model("geometric"), threshold=2.0,
                         image_threshold=3.0)
    for option, value in (("--lights", "1-5"), ("--solver", "ls")):
        code, _, err = run_cli(["detect", outs / caps[0].name, option, value, "--model", geo,
                                "-o", tmp_path / "d"], monkeypatch, capsys)
        assert code == 2 and f"{option} applies to capture folders; no input is one" in err
    assert not (tmp_path / "d").exists()
    # a normals output and its own map: the same input
    with pytest.raises(PsinspectError, match=r"normals.npy: this input is given twice"):
        expand_capture_sets([outs / caps[0].name, outs / caps[0].name / "normals.npy"])
    # --lights with captures and solved maps: the maps are named as scored as they are
    code, _, err = run_cli(["detect", outs / caps[0].name, caps[1], "--lights", "1-5",
                            "--model", geo, "-o", tmp_path / "dl"], monkeypatch, capsys)
    assert code == 0 and ("warning: --lights applies to capture folders only: 1 input(s) "
                          f"({outs / caps[0].name}) are normal maps, scored as they are") in err
    run_json = outs / caps[1].name / "run.json"
    run_json.write_text("[]")
    with pytest.raises(PsinspectError, match=r"run.json: not a psinspect run record .*a "
                                             r"damaged "):
        expand_capture_sets([outs / caps[1].name])
    run_json.write_text("{bad")
    with pytest.raises(PsinspectError, match=r"run.json: cannot be read .*a damaged "):
        expand_capture_sets([outs / caps[1].name])
    maps = tmp_path / "maps"
    maps.mkdir()
    save_npy(maps / "a.npy", sphere_normals(48)[0])
    assert expand_capture_sets([maps]) == [maps / "a.npy"]
    (maps / "b.tif").write_bytes(b"")
    with pytest.raises(PsinspectError, match=r"maps: holds normal maps and also b.tif, which "
                                             r"is not one \(.npy or .png\)"):
        expand_capture_sets([maps])


def test_a_capture_and_its_solved_map_are_one_training_part(tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    """train took a capture and the map 'psinspect normals' solved from it for two good
    parts, one of them then held out to calibrate the thresholds on a surface trained on;
    now refused, as two maps solved from one capture are (with one solver)."""
    from psinspect.render import render_dataset

    caps = render_dataset(tmp_path / "caps", 2, defect_rate=0.0, seed=2, size=48, lights=8)
    for i, name in ((0, "n0"), (0, "n0b"), (1, "n1")):
        code, _, err = run_cli(["normals", caps[i], "-o", tmp_path / name], monkeypatch,
                               capsys)
        assert code == 0, err
    for inputs, first in (([tmp_path / "n0", caps[0]], caps[0]),
                          ([caps[0], tmp_path / "n1", tmp_path / "n0"],
                           tmp_path / "n0" / "normals.npy")):
        code, _, err = run_cli(["train", *inputs, "--model", "geometric", "-o",
                                tmp_path / "m"], monkeypatch, capsys)
        assert code == 2 and f"error: {first}: the same surface as " in err, err
    code, _, err = run_cli(["train", tmp_path / "n0", tmp_path / "n0b", "--model", "geometric",
                            "-o", tmp_path / "m"], monkeypatch, capsys)
    assert code == 2 and "the same map as" in err, err  # (same solver: the same bytes)
    assert not (tmp_path / "m").exists()
    code, _, err = run_cli(["train", tmp_path / "n0", caps[1], "--model", "geometric", "-o",
                            tmp_path / "m"], monkeypatch, capsys)
    assert code == 0, err


def test_a_normals_output_carries_its_captures_reading_warnings(tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    """A capture without mask.png solved by 'psinspect normals', then detected: its background
    counted as the object, and only normals' console had said so. run.json now keeps the
    reading warnings and detect repeats them for the map (printed and in summary.json)."""
    import json

    from psinspect.render import render_dataset

    (cap,) = render_dataset(tmp_path / "caps", 1, defect_rate=0.0, seed=2, size=48, lights=8)
    (cap / "mask.png").unlink()
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "n"], monkeypatch, capsys)
    assert code == 0 and "no mask.png" in err, err
    (note,) = json.loads((tmp_path / "n" / "run.json").read_text())["warnings"]
    assert note.startswith(f"{cap}: no mask.png")
    geo = save_model_dir(tmp_path / "geo", create_model("geometric"), threshold=2.0,
                         image_threshold=3.0)
    code, _, err = run_cli(["detect", tmp_path / "n", "--model", geo, "-o", tmp_path / "d"],
                           monkeypatch, capsys)
    assert code == 0, err
    said = f"{tmp_path / 'n' / 'normals.npy'}: its capture was read with a warning: {note}"
    assert f"warning: {said}" in err
    (entry,) = json.loads((tmp_path / "d" / "summary.json").read_text())["inputs"]
    assert said in entry["warnings"]
