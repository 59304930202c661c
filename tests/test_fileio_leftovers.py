"""Leftovers of killed writers (hidden temp files, staging folders) are removed by the next
writer of the same name; a live writer's files are never touched (issue 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from psinspect.fileio import atomic_write_bytes, remove_stale_temporaries, staged_output_dir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_and_temp_files_are_removed(tmp_path: Path) -> None:
    dead, live = _dead_pid(), os.getppid()
    stale_stage = tmp_path / f".out.staging-{dead}-abc"
    live_stage = tmp_path / f".out.staging-{live}-def"
    for d in (stale_stage, live_stage):
        d.mkdir()
        (d / "half.npy").write_bytes(b"x")
    other = tmp_path / f".other.staging-{dead}-ghi"  # another output's: not ours to judge
    other.mkdir()
    with staged_output_dir(tmp_path / "out") as stage:
        (stage / "a.txt").write_text("a")
    assert (tmp_path / "out" / "a.txt").read_text() == "a"
    assert not stale_stage.exists()
    assert live_stage.is_dir() and other.is_dir()

    stale_tmp = tmp_path / f".f.json.{dead}-x1.tmp"
    live_tmp = tmp_path / f".f.json.{live}-x2.tmp"
    unrelated = tmp_path / ".f.json.notes"
    for f in (stale_tmp, live_tmp, unrelated):
        f.write_bytes(b"partial")
    atomic_write_bytes(tmp_path / "f.json", b"{}")  # a plain write does not scan the folder
    assert (tmp_path / "f.json").read_bytes() == b"{}" and stale_tmp.exists()
    # every name: the other output's dead staging folder goes too, live ones stay
    assert set(remove_stale_temporaries(tmp_path)) == {stale_tmp, other}
    assert live_stage.is_dir()
    assert not stale_tmp.exists()
    assert live_tmp.exists() and unrelated.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".f.json.")
                 and p.name.endswith(".tmp") and p != live_tmp]
    assert leftovers == []


def test_saving_a_model_dir_removes_a_killed_writers_temp_files(tmp_path: Path) -> None:
    from psinspect.models import create_model
    from psinspect.modelstore import load_model_dir, save_model_dir

    out = tmp_path / "model"
    save_model_dir(out, create_model("geometric"), threshold=1.0, image_threshold=2.0)
    stale = out / f".config.json.{_dead_pid()}-abc.tmp"
    stale.write_bytes(b"{")
    save_model_dir(out, create_model("geometric"), threshold=1.5, image_threshold=2.0)
    assert not stale.exists()
    assert load_model_dir(out).threshold == 1.5


def test_a_thread_id_is_not_a_live_writer(tmp_path: Path) -> None:
    """A temporary named after a pid that is now a THREAD id (of this or another process) is
    stale: ``kill(tid, 0)`` succeeds on Linux, but no writer process has that id."""
    import threading

    if not Path("/proc/self/status").is_file():
        import pytest

        pytest.skip("no procfs")
    ready, done = threading.Event(), threading.Event()
    tid: list[int] = []

    def worker() -> None:
        tid.append(threading.get_native_id())
        ready.set()
        done.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    try:
        ready.wait(10)
        assert tid[0] != os.getpid()
        os.kill(tid[0], 0)  # the quirk: a thread id "exists" for kill()
        leftover = tmp_path / f".out.staging-{tid[0]}-abcd"
        leftover.mkdir()
        live = tmp_path / f".out.staging-{os.getppid()}-efgh"  # a live process: kept
        live.mkdir()
        assert remove_stale_temporaries(tmp_path, "out") == [leftover]
        assert not leftover.exists() and live.exists()
    finally:
        done.set()
        t.join()


def _other_file_system(tmp_path: Path) -> Path | None:
    """A fresh folder on another file system than ``tmp_path`` (tmpfs), or None."""
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        return None
    if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        return None
    return Path(tempfile.mkdtemp(dir=shm))


def test_an_output_folder_on_another_file_system_is_filled(tmp_path: Path) -> None:
    """``-o link`` where link leads to another disk (or is a mount point): the files are moved
    in by rename, which failed across file systems only after all the work ("Invalid
    cross-device link"); the staging folder now goes inside such a folder, and nothing of it
    stays behind."""
    import shutil

    import pytest

    far = _other_file_system(tmp_path)
    if far is None:
        pytest.skip("no second file system (tmpfs /dev/shm) here")
    try:
        (tmp_path / "out").symlink_to(far)
        with staged_output_dir(tmp_path / "out") as stage:
            (stage / "sub").mkdir()
            (stage / "sub" / "a.txt").write_text("a")
        assert (far / "sub" / "a.txt").read_text() == "a"
        assert sorted(p.name for p in far.iterdir()) == [".psinspect-written.json", "sub"]
        assert [p.name for p in tmp_path.iterdir()] == ["out"]
        # a killed run's staging folder there is its own leftover: the folder counts as empty
        # for a run without --force (it said "not empty")
        far2 = _other_file_system(tmp_path)
        assert far2 is not None
        (tmp_path / "out2").symlink_to(far2)
        (far2 / f".out2.staging-{_dead_pid()}-abc").mkdir()
        with staged_output_dir(tmp_path / "out2") as stage:
            (stage / "b.txt").write_text("b")
        assert sorted(p.name for p in far2.iterdir()) == [".psinspect-written.json", "b.txt"]
        shutil.rmtree(far2, ignore_errors=True)
    finally:
        shutil.rmtree(far, ignore_errors=True)


def test_an_output_link_to_a_missing_folder_is_refused_up_front(tmp_path: Path) -> None:
    """It passed the early checks and failed after the work ("File exists")."""
    import pytest

    from psinspect.errors import PsinspectError
    from psinspect.fileio import check_output_dir

    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    with pytest.raises(PsinspectError, match=r"out: is a link to .*nowhere, which does not "
                                             r"exist: create that folder or choose another"):
        check_output_dir(tmp_path / "out", force=True)


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    """A write that fails at the rename (disk full, permissions, an interrupt) raises a clear
    error and leaves neither the file nor its temp file behind."""
    import errno

    import pytest

    from psinspect.errors import PsinspectError

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(PsinspectError, match="a.json"):
        atomic_write_bytes(tmp_path / "a.json", b"x")
    assert list(tmp_path.iterdir()) == []
