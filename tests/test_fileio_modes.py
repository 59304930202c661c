"""Output files and folders: the modes the umask asks for (not mkstemp's 0600 / mkdtemp's
0700), and a one-line error, not a traceback, for an output location that cannot be created."""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from _robust_util import error_lines, run_cli

from psinspect import fileio
from psinspect.capture import lights_from_slant_tilt, write_capture
from psinspect.errors import PsinspectError
from psinspect.fileio import (
    atomic_write_bytes,
    check_output_dir,
    current_umask,
    save_json,
    save_npy,
    staged_output_dir,
)

HAVE_PROC_UMASK = sys.platform.startswith("linux") and os.path.isfile("/proc/self/status") and (
    "Umask:" in Path("/proc/self/status").read_text())


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the body under ``mask``; the previous umask is restored whatever happens."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- modes ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640),
                                                (0o002, 0o664)], ids=lambda m: f"{m:03o}")
def test_written_files_follow_the_umask(tmp_path: Path, mask: int, expected: int) -> None:
    with umask(mask):
        a = atomic_write_bytes(tmp_path / "a.bin", b"a")
        j = save_json(tmp_path / "deep" / "er" / "b.json", {"b": 1})
        n = save_npy(tmp_path / "c.npy", np.zeros(3))
        old = tmp_path / "old.txt"
        old.write_text("old")
        old.chmod(0o600)
        rewritten = atomic_write_bytes(old, b"new")  # a rewrite gets a fresh file's mode
    for f in (a, j, n, rewritten):
        assert mode(f) == expected, f
    for d in (tmp_path / "deep", tmp_path / "deep" / "er"):  # created by atomic_write_bytes
        assert mode(d) == 0o777 & ~mask, d
    assert rewritten.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=lambda m: f"{m:03o}")
def test_staged_output_folders_and_files_follow_the_umask(tmp_path: Path, mask: int) -> None:
    out = tmp_path / "new" / "out"
    with umask(mask), staged_output_dir(out) as stage:
        assert mode(stage) == 0o700  # the hidden staging folder itself stays private
        save_json(stage / "top.json", {})
        save_npy(stage / "sub" / "deeper" / "x.npy", np.ones(2))
    for d in (tmp_path / "new", out, out / "sub", out / "sub" / "deeper"):
        assert mode(d) == 0o777 & ~mask, d
    for f in (out / "top.json", out / "sub" / "deeper" / "x.npy"):
        assert mode(f) == 0o666 & ~mask, f
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["out"]  # no staging left


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o007], ids=lambda m: f"{m:03o}")
def test_current_umask_is_read_and_left_unchanged(mask: int) -> None:
    with umask(mask):
        assert current_umask() == mask
        assert os.umask(mask) == mask  # still set


@pytest.mark.skipif(not HAVE_PROC_UMASK, reason="needs the Umask: line of /proc/self/status")
def test_current_umask_on_linux_never_changes_the_umask(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read from procfs: no moment where another thread would create files under a wrong
    umask."""
    def no_umask(_mask: int) -> int:
        raise AssertionError("os.umask called")

    with umask(0o027):
        monkeypatch.setattr(os, "umask", no_umask)
        try:
            assert current_umask() == 0o027
        finally:
            monkeypatch.undo()


def test_current_umask_without_procfs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without /proc the set-and-restore fallback gives the same answer and restores it."""
    def no_proc(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(file).startswith("/proc"):
            raise FileNotFoundError(2, "No such file or directory", str(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr(fileio, "open", no_proc, raising=False)
    with umask(0o027):
        assert current_umask() == 0o027
        assert os.umask(0o027) == 0o027
        assert mode(atomic_write_bytes(tmp_path / "f", b"x")) == 0o640


# --- output locations that cannot be created -------------------------------------------------

def _unmakeable(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """An output path that cannot be created, and the error message it must give (a regular
    expression)."""
    if kind == "under-a-file":
        afile = tmp_path / "afile"
        afile.write_text("f\n")
        out = afile / "sub" / "deeper"
        reason = re.escape(f"{afile} is not a folder")
    else:
        if not (sys.platform.startswith("linux") and os.path.isdir("/proc/self")):
            pytest.skip("needs procfs")
        out = Path("/proc/psinspect-x")  # root may write anywhere, but not there
        reason = re.escape(os.strerror(errno.ENOENT)) if os.geteuid() == 0 else "[^()]+"
    return out, rf"{re.escape(str(out))}: cannot create the output folder \({reason}\)"


KINDS = ["under-a-file", "procfs"]


@pytest.mark.parametrize("kind", KINDS)
def test_check_output_dir_refuses_a_folder_that_cannot_be_created(tmp_path: Path,
                                                                  kind: str) -> None:
    out, message = _unmakeable(tmp_path, kind)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(PsinspectError) as exc:
        check_output_dir(out, force=False)
    assert re.fullmatch(message, str(exc.value)), str(exc.value)
    assert sorted(tmp_path.iterdir()) == before  # the probe left nothing behind


def test_check_output_dir_refuses_an_existing_folder_it_cannot_write(tmp_path: Path) -> None:
    """An existing folder without write permission (here one of procfs, where even root may
    not create entries) was found only when the results were moved in, after the work."""
    if not (sys.platform.startswith("linux") and os.path.isdir("/proc/self/task")):
        pytest.skip("needs procfs")
    with pytest.raises(PsinspectError, match=r"^/proc/self/task: cannot write the output "
                                             r"folder \([^()]+\)$"):
        check_output_dir("/proc/self/task", force=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_dir(empty, force=False) == empty
    assert list(empty.iterdir()) == []  # the probe left nothing behind


def test_check_output_dir_probe_leaves_nothing(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "a" / "b", force=False) == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_staged_output_dir_one_line_error(tmp_path: Path, kind: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Also when the early check is skipped (e.g. the location changed since)."""
    out, message = _unmakeable(tmp_path, kind)
    for skip_check in (False, True):
        if skip_check:
            monkeypatch.setattr(fileio, "_check_creatable", lambda _path: None)
        with pytest.raises(PsinspectError) as exc, staged_output_dir(out):
            pytest.fail("the body must not run")
        assert re.fullmatch(message, str(exc.value)), str(exc.value)


def test_staged_output_dir_output_taken_while_running(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(PsinspectError, match=r"out: cannot write the output folder \(File exists\)"
                       ), staged_output_dir(out) as stage:
        save_json(stage / "a.json", {})
        out.write_text("someone else's file")
    assert out.read_text() == "someone else's file"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_write_bytes_one_line_errors(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("f\n")
    with pytest.raises(PsinspectError) as exc:
        atomic_write_bytes(afile / "sub" / "x.json", b"{}")
    assert str(exc.value) == (f"{afile / 'sub' / 'x.json'}: cannot create its folder "
                              f"({afile} is not a folder)")
    (tmp_path / "adir").mkdir()
    with pytest.raises(PsinspectError, match=r"adir: cannot write \(Is a directory\)"):
        atomic_write_bytes(tmp_path / "adir", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]  # no temp file left


def _tiny_capture(folder: Path, k: int = 4, size: int = 16) -> Path:
    """A lit capture (shading that changes with the light; a uniform grey one is refused)."""
    lights = lights_from_slant_tilt(np.full(k, 30.0), np.linspace(0, 360, k, endpoint=False))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    n = np.stack([(xx - size / 2) / size, (yy - size / 2) / size, np.ones_like(xx)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    mask = np.ones((size, size), bool)
    return write_capture(folder, np.maximum(np.einsum("hwc,kc->khw", n, lights), 0), lights,
                         mask)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["detect", "normals", "render"])
def test_cli_prints_one_line_and_exits_2(tmp_path: Path, kind: str, command: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out, message = _unmakeable(tmp_path, kind)
    if command == "detect":
        flat = np.zeros((32, 32, 3), np.float32)
        flat[..., 2] = 1
        np.save(tmp_path / "flat.npy", flat)
        args = ["detect", tmp_path / "flat.npy", "-o", out]
    elif command == "normals":
        args = ["normals", _tiny_capture(tmp_path / "cap"), "-o", out]
    else:
        args = ["render", "-o", out, "--parts", "1", "--size", "32"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and error_lines(err) == lines, err
    assert re.fullmatch(f"error: {message}", lines[0]), lines[0]


def test_cli_normals_staging_error_after_the_check(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The location becomes unusable between the early check and the writing."""
    out, message = _unmakeable(tmp_path, "under-a-file")
    monkeypatch.setattr(fileio, "_check_creatable", lambda _path: None)
    code, _, err = run_cli(["normals", _tiny_capture(tmp_path / "cap"), "-o", out],
                           monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(f"error: {message}", lines[0]), err
