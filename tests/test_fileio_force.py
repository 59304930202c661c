"""``--force`` into a folder an earlier run filled: that run's files which this run does not
write again are removed (no stale result beside new ones); the user's own files are kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from psinspect.errors import PsinspectError
from psinspect.fileio import WRITTEN_MANIFEST, atomic_write_bytes, staged_output_dir


def _write(out: Path, files: dict[str, bytes], force: bool = False) -> None:
    with staged_output_dir(out, force) as stage:
        for rel, data in files.items():
            atomic_write_bytes(stage / rel, data)


def _listing(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))


def test_force_removes_only_the_earlier_runs_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, {"a.txt": b"a1", "metrics.json": b"{}", "sub/b.txt": b"b1"})
    assert json.loads((out / WRITTEN_MANIFEST).read_text())["files"] == [
        "a.txt", "metrics.json", "sub/b.txt"]
    (out / "notes.txt").write_text("mine")  # the user's own file
    (out / "sub" / "mine.txt").write_text("mine too")
    with pytest.raises(PsinspectError, match="not empty"):
        _write(out, {"a.txt": b"a2"})
    _write(out, {"a.txt": b"a2", "c/d.txt": b"d"}, force=True)
    assert _listing(out) == [WRITTEN_MANIFEST, "a.txt", "c", "c/d.txt", "notes.txt", "sub",
                             "sub/mine.txt"]
    assert (out / "a.txt").read_bytes() == b"a2"
    assert json.loads((out / WRITTEN_MANIFEST).read_text())["files"] == ["a.txt", "c/d.txt"]
    _write(out, {"e.txt": b"e"}, force=True)  # a folder left empty by the removal goes too
    assert _listing(out) == [WRITTEN_MANIFEST, "e.txt", "notes.txt", "sub", "sub/mine.txt"]


def test_a_failed_forced_run_keeps_the_earlier_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, {"a.txt": b"a1", "b.txt": b"b1"})
    before = {p: (out / p).read_bytes() for p in _listing(out)}
    with pytest.raises(RuntimeError), staged_output_dir(out, force=True) as stage:
        atomic_write_bytes(stage / "c.txt", b"c")
        raise RuntimeError("the command failed half-way")
    assert {p: (out / p).read_bytes() for p in _listing(out)} == before


@pytest.mark.parametrize("listed", [["../victim.txt"], ["/abs/victim.txt"], "not a list",
                                    [3, None, ""]])
def test_a_tampered_manifest_removes_nothing_outside(tmp_path: Path, listed: object) -> None:
    out = tmp_path / "out"
    _write(out, {"a.txt": b"a"})
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    listed = [str(victim) if p == "/abs/victim.txt" else p for p in listed] if isinstance(
        listed, list) else listed
    (out / WRITTEN_MANIFEST).write_text(json.dumps({"files": listed}))
    _write(out, {"b.txt": b"b"}, force=True)
    assert victim.read_text() == "keep"
    assert (out / "a.txt").is_file()  # no longer listed: kept as if the user's
    (out / WRITTEN_MANIFEST).write_text("{broken")  # nothing known to be psinspect's now
    with pytest.raises(PsinspectError, match=r"b\.txt: exists and .*out has no list of the "
                       r"files psinspect wrote there"):
        _write(out, {"b.txt": b"b2"}, force=True)
    assert (out / "b.txt").read_bytes() == b"b"
    _write(out, {"c.txt": b"c"}, force=True)
    assert (out / "c.txt").read_bytes() == b"c"


def test_a_listed_link_is_not_followed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, {"a.txt": b"a"})
    target = tmp_path / "target.txt"
    target.write_text("keep")
    (out / "a.txt").unlink()
    (out / "a.txt").symlink_to(target)
    _write(out, {"b.txt": b"b"}, force=True)
    assert target.read_text() == "keep" and (out / "a.txt").is_symlink()


def test_cli_defects_force_leaves_no_stale_maps(tmp_path: Path) -> None:
    from psinspect.cli import app, register_commands

    register_commands()
    z = np.linspace(-0.3, 0.3, 48)
    normals = np.dstack(np.broadcast_arrays(z[None, :], 0 * z[:, None], np.ones((48, 48))))
    normals = (normals / np.linalg.norm(normals, axis=2, keepdims=True)).astype(np.float32)
    for name in ("N_one.npy", "N_two.npy"):
        np.save(tmp_path / name, normals)
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["defects", str(tmp_path / "N_one.npy"), str(tmp_path / "N_two.npy"),
                              "-o", str(out), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert (out / "A_one.npy").is_file()
    res = runner.invoke(app, ["defects", str(tmp_path / "N_two.npy"), "-o", str(out), "--seed",
                              "1", "--force"])
    assert res.exit_code == 0, res.output
    names = {p.name for p in out.iterdir()}
    assert not any("one" in n for n in names), names
    assert {"A_two.npy", "M_two.png", "defects.json"} <= names


def test_nested_staging_into_the_stage_itself(tmp_path: Path) -> None:
    """A staged writer whose output is the outer stage (as ``run`` writes its report) leaves a
    manifest there; the outer one replaces it and lists every file."""
    out = tmp_path / "out"
    with staged_output_dir(out) as stage:
        atomic_write_bytes(stage / "a.txt", b"a")
        with staged_output_dir(stage, force=True) as inner:
            atomic_write_bytes(inner / "report.html", b"r")
    assert json.loads((out / WRITTEN_MANIFEST).read_text())["files"] == ["a.txt", "report.html"]


def test_force_never_goes_through_a_link(tmp_path: Path) -> None:
    """An output subfolder replaced by a link to another folder (an archive moved away), or
    a manifest naming files below such a link: nothing outside the output folder is removed."""
    out = tmp_path / "out"
    _write(out, {"keep.txt": b"k", "part4/a.png": b"a", "part4/sub/b.png": b"b"})
    archive = tmp_path / "archive"
    (out / "part4").rename(archive)
    (out / "part4").symlink_to(archive)
    (archive / "notes.txt").write_text("mine")
    _write(out, {"keep.txt": b"k2"}, force=True)
    assert sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*")) == [
        "a.png", "notes.txt", "sub", "sub/b.png"]


@pytest.mark.parametrize("command", ["defects", "detect", "evaluate", "evaluate-dataset",
                                     "dataset"])
def test_force_refuses_an_output_folder_holding_an_input(tmp_path: Path, command: str) -> None:
    """--force into a folder where an earlier run wrote the command's inputs would delete
    them (that run's files are listed in the manifest): refused, and nothing is touched."""
    from psinspect.cli import app, register_commands
    from psinspect.dataset import build_dataset

    register_commands()
    runner = CliRunner()
    res = runner.invoke(app, ["render", "-o", str(tmp_path / "caps"), "--parts", "3", "--size",
                              "48", "--defect-rate", "0"])
    assert res.exit_code == 0, res.output
    caps = sorted(p for p in (tmp_path / "caps").iterdir() if p.is_dir())
    ds = tmp_path / "ds"
    with staged_output_dir(ds) as stage:
        build_dataset(caps, stage, holdout=[caps[0].name], seed=0, subsets=2, augment=[])
    some_map = sorted(ds.glob("N_*.npy"))[0]
    det = tmp_path / "det"
    res = runner.invoke(app, ["detect", str(some_map), "-o", str(det)])
    assert res.exit_code == 0, res.output
    argv = {"defects": ["defects", str(some_map), "-o", str(ds)],
            "detect": ["detect", str(some_map), "-o", str(ds)],
            "evaluate": ["evaluate", str(det), str(ds), "-o", str(det)],
            # the ground-truth dataset as the output (its files would be replaced)
            "evaluate-dataset": ["evaluate", str(det), str(ds), "-o", str(ds)],
            "dataset": ["dataset", str(tmp_path / "caps"), "-o", str(tmp_path / "caps")]}[command]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    res = runner.invoke(app, [*argv, "--force"])
    assert res.exit_code != 0
    said = ("holds input files of this command" if command in ("defects", "detect")
            else "is an input folder of this command")
    assert said in str(res.exception or res.output)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_force_never_replaces_a_file_psinspect_did_not_write(tmp_path: Path, monkeypatch,
                                                              capsys) -> None:
    """``normals CAP -o CAP --force`` used to replace the capture's own mask.png (an input that
    psinspect did not write); now it is refused and the capture is untouched."""
    from _robust_util import run_cli, tree
    from test_cli_normals import synthetic_capture

    cap = synthetic_capture(tmp_path / "cap", k=12, size=24)
    before = tree(cap)
    code, _, err = run_cli(["normals", cap, "-o", cap, "--force"], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {cap}: is an input folder of this command: choose another output folder"]
    assert tree(cap) == before
    # the file rule on its own: a folder with a mask.png that no list names
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mask.png").write_bytes(b"mine")
    code, _, err = run_cli(["normals", cap, "-o", tmp_path / "out", "--force"], monkeypatch,
                           capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {tmp_path / 'out' / 'mask.png'}: exists and {tmp_path / 'out'} has no list of "
        "the files psinspect wrote there (.psinspect-written.json; folders written before "
        "psinspect 0.3 have none), so it is kept, even with --force: move it away or choose "
        "another output folder"]
    assert (tmp_path / "out" / "mask.png").read_bytes() == b"mine"


def test_force_replaces_what_a_folder_above_listed(tmp_path: Path, monkeypatch, capsys) -> None:
    """A folder filled as part of a larger output (``run``'s captures/ and dataset/ have no list
    of their own; the run's folder lists them) is psinspect's: ``render --force`` into it
    replaces the files (the others stay: only a folder's own list removes stale files, so
    ``-o`` into a part of another command's output deletes nothing), while ``normals`` into
    one of its capture folders is still refused (the capture's files are its inputs)."""
    from _robust_util import run_cli

    out = tmp_path / "run"
    _write(out, {"captures/p1/001.png": b"1", "captures/p2/001.png": b"2", "report.html": b"r"})
    with staged_output_dir(out / "captures", force=True) as stage:
        atomic_write_bytes(stage / "p1" / "001.png", b"new")
    assert _listing(out / "captures") == [WRITTEN_MANIFEST, "p1", "p1/001.png", "p2",
                                          "p2/001.png"]
    assert (out / "captures" / "p1" / "001.png").read_bytes() == b"new"
    code, _, err = run_cli(["render", "-o", tmp_path / "r", "--parts", "1", "--size", "32",
                            "--lights", "6"], monkeypatch, capsys)
    cap = next(p for p in (tmp_path / "r").iterdir() if p.is_dir())
    code, _, err = run_cli(["normals", cap, "-o", cap / "sub", "--force"], monkeypatch, capsys)
    assert code == 0, err  # a new folder inside the capture: nothing of it is replaced
    code, _, err = run_cli(["normals", cap, "-o", cap, "--force"], monkeypatch, capsys)
    assert code == 2 and "is an input folder of this command" in err, err


def test_force_never_writes_through_a_linked_folder(tmp_path: Path) -> None:
    """A sub-folder of the output replaced by a link to other files (a capture elsewhere) is
    not written through: refused before anything is moved, the files behind it unchanged."""
    out = tmp_path / "out"
    _write(out, {"p1/001.png": b"1", "p1/mask.png": b"m"})
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "001.png").write_bytes(b"theirs")
    (out / "p1" / "001.png").unlink()
    (out / "p1" / "mask.png").unlink()
    (out / "p1").rmdir()
    (out / "p1").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(PsinspectError, match=r"p1: is a symbolic link; psinspect does not write"):
        _write(out, {"p1/001.png": b"new", "p1/mask.png": b"new"}, force=True)
    assert (tmp_path / "elsewhere" / "001.png").read_bytes() == b"theirs"
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["001.png"]


def test_train_force_writes_only_into_a_model_folder(tmp_path: Path, monkeypatch,
                                                     capsys) -> None:
    """train writes model folders its own way (no written-files list): --force replaces a
    model folder, and refuses any other non-empty folder (it replaced a user's config.json and
    left a detect run's results beside the model)."""
    from _robust_util import good_sphere_maps, run_cli

    maps = good_sphere_maps(tmp_path / "maps", 32)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"my": "own"}')
    base = ["train", *maps, "--model", "geometric", "--force", "-o"]
    code, _, err = run_cli([*base, other], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {other}: --force replaces a psinspect model folder, and this folder is not one "
        "(no model config.json or checkpoint): choose another output folder"]
    assert (other / "config.json").read_text() == '{"my": "own"}'
    assert run_cli([*base, tmp_path / "m"], monkeypatch, capsys)[0] == 0
    assert run_cli([*base, tmp_path / "m"], monkeypatch, capsys)[0] == 0  # a model: replaced
    # and the other way round: other commands' --force does not fill a model folder
    before = sorted(p.name for p in (tmp_path / "m").iterdir())
    for cmd in (["render", "--parts", "1", "--size", "64"],
                ["detect", maps[0]]):
        code, _, err = run_cli([*cmd, "--force", "-o", tmp_path / "m"], monkeypatch, capsys)
        assert code == 2 and err.strip().splitlines() == [
            f"error: {tmp_path / 'm'}: holds a psinspect model (or an interrupted training "
            "run), which --force does not replace with other results: choose another output "
            "folder"], cmd
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == before
    # an interrupted training run (no config.json yet; train --resume finishes it there)
    interrupted = tmp_path / "interrupted"
    (interrupted / ".checkpoint").mkdir(parents=True)
    (interrupted / ".checkpoint" / "state.json").write_text("{}")
    code, _, err = run_cli(["render", "--parts", "1", "--size", "64", "--force", "-o",
                            interrupted], monkeypatch, capsys)
    assert code == 2 and "interrupted training run" in err


def test_an_unexpanded_home_folder_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    """--out=~/x: the shell does not expand '~' after '=', and a folder named '~' was made in
    the working folder; now refused on one line (a folder of that name that exists here is
    still an output folder like any other)."""
    from _robust_util import error_lines, run_cli

    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["render", "--out=~/x", "--parts", "1", "--size", "32"],
                           monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        "error: ~/x: '~' was not expanded to a home folder (a shell leaves it as it is after "
        "'=', as in --out=~/x): give the full path, or the option and path apart (--out ~/x)"]
    assert list(tmp_path.iterdir()) == []
    code, _, err = run_cli(["render", "-o=~/x", "--parts", "1", "--size", "32"], monkeypatch,
                           capsys)  # (a short option's value after '=' keeps the '=')
    assert code == 2 and error_lines(err) == [
        "error: =~/x: starts with '=' (a short option takes its value after a space, as in -o "
        "PATH, or --out=PATH)"]
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "~").mkdir()
    code, _, err = run_cli(["render", "--out=~/x", "--parts", "1", "--size", "32", "--lights",
                            "6"], monkeypatch, capsys)
    assert code == 0, err
    assert (tmp_path / "~" / "x" / "render.json").is_file()


def test_force_replaces_only_the_same_commands_results(tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    """``run -o CAPTURES --force`` into a render's output deleted the rendered captures (an
    audit; they were psinspect's own earlier results by the folder's list). The list now
    records the command that wrote it, and --force replaces only that command's results;
    a list without one (written before) is replaced as before."""
    from _robust_util import error_lines, run_cli

    out = tmp_path / "parts"
    code, _, err = run_cli(["render", "-o", out, "--parts", "1", "--size", "32", "--lights",
                            "6"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((out / WRITTEN_MANIFEST).read_text())["command"] == "render"
    before = _listing(out)
    code, _, err = run_cli(["render", "-o", tmp_path / "more", "--parts", "1", "--size", "32",
                            "--lights", "6"], monkeypatch, capsys)
    cap = next(p for p in (tmp_path / "more").iterdir() if p.is_dir())
    code, _, err = run_cli(["normals", cap, "-o", out, "--force"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {out}: holds the output of 'psinspect render', which --force does not "
        "replace with 'psinspect normals' results: choose another output folder"], err
    assert _listing(out) == before
    with pytest.raises(PsinspectError, match="holds the output of 'psinspect render'"), \
            staged_output_dir(out, force=True, command="detect"):
        pass
    code, _, err = run_cli(["render", "-o", out, "--parts", "1", "--size", "32", "--lights",
                            "6", "--seed", "5", "--force"], monkeypatch, capsys)
    assert code == 0, err  # the same command: replaced
    doc = json.loads((out / WRITTEN_MANIFEST).read_text())
    del doc["command"]  # a folder written before the command was recorded
    (out / WRITTEN_MANIFEST).write_text(json.dumps(doc))
    with staged_output_dir(out, force=True, command="detect") as stage:
        atomic_write_bytes(stage / "summary.json", b"{}")
    assert _listing(out) == [WRITTEN_MANIFEST, "summary.json"]


def test_an_output_inside_an_input_folder_of_parts_is_refused(tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    """``detect maps -o maps/sub`` was accepted, and ``detect maps`` then refused the folder
    (it held 'sub', which is not a map); so too a folder of captures. Refused before any work;
    inside one capture folder (nothing there reads sub-folders) it is still allowed."""
    from _robust_util import good_sphere_maps, run_cli

    maps = tmp_path / "maps"
    maps.mkdir()
    good_sphere_maps(maps, 40)
    code, _, err = run_cli(["detect", maps, "-o", maps / "sub"], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {maps / 'sub'}: lies inside {maps.resolve()}, an input folder of this "
        "command, which it would then hold beside its parts: choose an output folder outside "
        "it"], err
    assert sorted(p.name for p in maps.iterdir()) == ["good0.npy", "good1.npy", "good2.npy"]
    code, _, err = run_cli(["detect", maps, "-o", maps / "a" / "b"], monkeypatch, capsys)
    assert code == 2 and "lies inside" in err, err
    code, _, err = run_cli(["render", "-o", tmp_path / "caps", "--parts", "1", "--size", "32",
                            "--lights", "6"], monkeypatch, capsys)
    assert code == 0, err
    caps = tmp_path / "caps"
    code, _, err = run_cli(["detect", caps, "-o", caps / "out"], monkeypatch, capsys)
    assert code == 2 and f"lies inside {caps.resolve()}" in err, err
    cap = next(p for p in caps.iterdir() if p.is_dir())
    code, _, err = run_cli(["detect", cap, "-o", cap / "out"], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(["detect", maps, "-o", tmp_path / "det"], monkeypatch, capsys)
    assert code == 0, err  # (outside: as before)
