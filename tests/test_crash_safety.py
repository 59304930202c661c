"""No data lost: ``train`` and ``detect`` killed with SIGKILL mid-way (issue 6).

Each run is a forked child of the test process (the package is already imported, so a run
costs a fraction of a second) that is killed with SIGKILL - by itself at an exact point (just
before the k-th ``os.replace``, i.e. in the middle of writing or moving output files, or right
after a training checkpoint), or from outside at a moment only known by polling. Then:

- every file in the output folder is byte-identical to the old run's or to a complete new run's
  version of it - never torn, never a temp file;
- a model directory is either loadable (and then exactly the old or the new model) or a clear
  :class:`PsinspectError`;
- ``train --resume`` after the kill gives exactly the model of an uninterrupted run with the
  same seed (weights bit-for-bit, thresholds, training log).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _robust_util import good_sphere_maps, run_cli, sphere_normals, tree

from psinspect.cli import main
from psinspect.errors import PsinspectError
from psinspect.fileio import WRITTEN_MANIFEST, save_npy
from psinspect.models import create_model
from psinspect.modelstore import load_model_dir, read_train_log, save_model_dir, weights_path

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

HP = json.dumps({"channels": [4, 8], "patch": 32, "steps_per_epoch": 2, "val_patches": 1})
EPOCHS = "6"


def _run_child(argv: list, setup: Callable[[], None] | None = None,
               external: Callable[[int], None] | None = None, timeout: float = 120.0) -> int:
    """Run ``psinspect ARGV`` in a forked child; ``setup`` runs in the child first (to plant
    a kill point), ``external(pid)`` in the parent while the child runs. Returns the signal
    that ended the child, or -exit_code when it exited by itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.environ["OMP_NUM_THREADS"] = "1"
            if setup is not None:
                setup()
            sys.argv = ["psinspect", *[str(a) for a in argv]]
            main()
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
        except BaseException:  # noqa: BLE001 - the child must never return into pytest
            code = 99
        finally:
            os._exit(code)
    try:
        if external is not None:
            external(pid)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("child run did not finish")
            time.sleep(0.002)
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)


def _kill_before_replace(k: int) -> Callable[[], None]:
    """Child setup: SIGKILL just before the k-th ``os.replace`` (k >= 1)."""
    def setup() -> None:
        real = os.replace
        calls = [0]

        def replace(src, dst, *a, **kw):  # noqa: ANN001, ANN202
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *a, **kw)

        os.replace = replace
    return setup


def _count_replaces(argv: list, monkeypatch: pytest.MonkeyPatch, capsys) -> int:
    real = os.replace
    calls = [0]

    def replace(src, dst, *a, **kw):  # noqa: ANN001, ANN202
        calls[0] += 1
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    code, _, err = run_cli(argv, monkeypatch, capsys)
    monkeypatch.setattr(os, "replace", real)
    assert code == 0, err
    return calls[0]


def _assert_old_or_new(folder: Path, old: dict[str, bytes], new: dict[str, bytes]) -> None:
    now = tree(folder)
    for name, data in now.items():
        assert not name.endswith(".tmp"), f"temp file left in the output: {name}"
        assert name in old or name in new, f"unexpected file {name}"
        assert data == old.get(name) or data == new.get(name), f"{name} is torn or mixed"


# --------------------------------------------------------------------------------------------
# detect


@pytest.fixture(scope="module")
def detect_setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("detect")
    model = save_model_dir(root / "geo", create_model("geometric"), threshold=2.0,
                           image_threshold=3.0)
    inputs = []
    for i, r in enumerate((0.45, 0.4, 0.35, 0.3)):
        n, _ = sphere_normals(40, r)
        save_npy(root / f"part{i}.npy", n)
        inputs.append(root / f"part{i}.npy")
    return {"root": root, "model": model, "inputs": inputs}


def test_detect_killed_while_writing_and_moving(detect_setup: dict, tmp_path: Path,
                                                monkeypatch, capsys) -> None:
    """Old results in OUT, a new ``detect --force`` killed at points spread over writing the
    staged files and moving them in: each file is the old or the new one, never torn."""
    s = detect_setup
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764547200")  # summary.json's date: one for all

    def argv(out: Path, thr: str) -> list:
        return ["detect", *s["inputs"], "--model", s["model"], "-o", out, "--threshold", thr,
                "--force"]

    old_ref, new_ref = tmp_path / "old_ref", tmp_path / "new_ref"
    assert run_cli(argv(old_ref, "1.0"), monkeypatch, capsys)[0] == 0
    n_replace = _count_replaces(argv(new_ref, "4.0"), monkeypatch, capsys)
    old, new = tree(old_ref), tree(new_ref)
    assert old != new and set(old) == set(new)
    assert WRITTEN_MANIFEST in new
    n_files = len(new) - 1
    # each file: written atomically in stage, then moved; the manifest twice (before the moves
    # and after the stale files' removal), the same way
    assert n_replace == 2 * n_files + 4
    kill_points = sorted({1, n_files // 2, n_files + 1, n_files + 3, n_files + n_files // 2,
                          2 * n_files + 2, 2 * n_files + 3, 2 * n_files + 4})
    for k in kill_points:
        out = tmp_path / f"out{k}"
        out.mkdir()
        for name, data in old.items():
            (out / name).write_bytes(data)
        sig = _run_child(argv(out, "4.0"), setup=_kill_before_replace(k))
        assert sig == signal.SIGKILL
        _assert_old_or_new(out, old, new)
        if k <= n_files:  # killed while writing the staged files: OUT untouched
            assert tree(out) == old
        elif k == 2 * n_files + 2:  # killed before the last move: a real mix of old and new
            assert tree(out) != old and tree(out) != new
        # a rerun finishes the job
        code, _, err = run_cli(argv(out, "4.0"), monkeypatch, capsys)
        assert code == 0, err
        assert tree(out) == new


# --------------------------------------------------------------------------------------------
# train


@pytest.fixture(scope="module")
def train_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return good_sphere_maps(tmp_path_factory.mktemp("train"), 40)


def _train_argv(inputs: list[Path], out: Path, *extra: str) -> list:
    return ["train", *inputs, "-o", out, "--model", "unet-ae", "--hp", HP, "--epochs", EPOCHS,
            "--patience", "100", "--seed", "5", "--threads", "1", "--batch-size", "4", *extra]


@pytest.fixture(scope="module")
def uninterrupted(train_inputs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "model"
    assert _run_child(_train_argv(train_inputs, out)) == 0
    return out


def _same_model(a: Path, b: Path) -> None:
    from safetensors.numpy import load_file

    wa, wb = load_file(weights_path(a)), load_file(weights_path(b))
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (a, b))
    for key in ("model", "hyperparameters", "threshold", "image_threshold", "weights_sha256",
                "calibration"):
        assert ca[key] == cb[key], key
    la, lb = (read_train_log(d) for d in (a, b))
    assert [len(list(d.glob("train_log*.json"))) for d in (a, b)] == [1, 1]  # old logs removed
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in la]
    assert strip == [{k: v for k, v in e.items() if k != "seconds"} for e in lb]
    assert not (b / ".checkpoint").exists()


def _kill_after_checkpoint(n: int) -> Callable[[], None]:
    def setup() -> None:
        import psinspect.train as tr

        real = tr._write_checkpoint
        calls = [0]

        def write(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            real(*a, **kw)
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)

        tr._write_checkpoint = write
    return setup


def _resume(inputs: list[Path], out: Path, monkeypatch, capsys) -> None:
    # the checkpoint holds the settings: --resume takes only inputs, output and run options
    code, _, err = run_cli(["train", *inputs, "-o", out, "--threads", "1", "--resume"],
                           monkeypatch, capsys)
    assert code == 0, err


def test_resume_after_kill_equals_uninterrupted(train_inputs: list[Path], uninterrupted: Path,
                                                tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "model"
    assert _run_child(_train_argv(train_inputs, out),
                      setup=_kill_after_checkpoint(2)) == signal.SIGKILL
    assert (out / ".checkpoint" / "state.json").is_file()
    assert not (out / "config.json").exists()
    with pytest.raises(PsinspectError, match="config.json: missing"):
        load_model_dir(out)  # an unfinished model dir is refused, not half-used
    _resume(train_inputs, out, monkeypatch, capsys)
    _same_model(uninterrupted, out)


def _resume_refused(inputs: list[Path], out: Path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(["train", *inputs, "-o", out, "--threads", "1", "--resume"],
                           monkeypatch, capsys)
    assert code == 2 and "--resume: the inputs are not what the interrupted run trained on" \
        in err, err
    assert not (out / "config.json").exists()


def test_resume_refuses_inputs_changed_at_the_same_paths(tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    """A training input replaced after the interrupt (a dataset rebuilt with other held-out
    surfaces, a map overwritten) was trained on before and after it: the finished model's
    record named only the new one (a test surface trained on, unseen by evaluate's check)."""
    inputs = good_sphere_maps(tmp_path / "in", 40)
    out = tmp_path / "model"
    assert _run_child(_train_argv(inputs, out),
                      setup=_kill_after_checkpoint(1)) == signal.SIGKILL
    save_npy(inputs[1], sphere_normals(40, radius=0.3)[0])  # another part, the same path
    _resume_refused(inputs, out, monkeypatch, capsys)


def test_resume_refuses_a_dataset_rebuilt_from_the_same_captures(tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    """A dataset rebuilt at the same path from the same captures and held-out surfaces, with
    another PS solver: the same surfaces and fingerprints, other maps (resume took them: two
    epochs trained on one solver's normals, the rest on another's, the model recording the
    second)."""
    from psinspect.dataset import build_dataset
    from psinspect.render import render_dataset

    render_dataset(tmp_path / "caps", 3, defect_rate=0.0, seed=2, size=48)
    ds, out = tmp_path / "ds", tmp_path / "model"
    build_dataset([tmp_path / "caps"], ds, holdout=[], seed=0, subsets=2, augment=[])
    assert _run_child(_train_argv([ds], out), setup=_kill_after_checkpoint(1)) == signal.SIGKILL
    shutil.rmtree(ds)
    build_dataset([tmp_path / "caps"], ds, holdout=[], seed=0, subsets=2, augment=[],
                  solver="ls")
    _resume_refused([ds], out, monkeypatch, capsys)


def test_resume_takes_captures_solved_to_other_last_bits(tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    """Capture folders are recorded by their content; their solved normals differ in the last
    bits with the thread count, which a resume may change: that is not another input (hashing
    the normals refused such a resume)."""
    import psinspect.stereo as stereo
    from psinspect.render import render_dataset

    render_dataset(tmp_path / "caps", 3, defect_rate=0.0, seed=2, size=48)
    caps = sorted(p for p in (tmp_path / "caps").iterdir() if p.is_dir())
    out = tmp_path / "model"
    assert _run_child(_train_argv(caps, out), setup=_kill_after_checkpoint(1)) == signal.SIGKILL
    real = stereo.solve

    def nudged(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        res = real(*a, **kw)
        res.normals = np.nextafter(res.normals, np.float32(2)) * (res.normals != 0)
        return res

    monkeypatch.setattr(stereo, "solve", nudged)
    _resume(caps, out, monkeypatch, capsys)
    assert (out / "config.json").is_file()


def test_resume_after_kill_inside_a_checkpoint_write(train_inputs: list[Path],
                                                     uninterrupted: Path, tmp_path: Path,
                                                     monkeypatch, capsys) -> None:
    """Killed between the two files of a checkpoint (weights written, state not yet): the
    previous checkpoint must still be usable."""
    out = tmp_path / "model"
    # replaces: 2 per checkpoint (weights, state). Kill before epoch 3's state file.
    assert _run_child(_train_argv(train_inputs, out),
                      setup=_kill_before_replace(2 * 3)) == signal.SIGKILL
    _resume(train_inputs, out, monkeypatch, capsys)
    _same_model(uninterrupted, out)


def test_kill_from_outside_at_an_unknown_moment(train_inputs: list[Path], uninterrupted: Path,
                                                tmp_path: Path, monkeypatch, capsys) -> None:
    """SIGKILL from another process as soon as a checkpoint of epoch >= 1 is seen."""
    out = tmp_path / "model"
    state = out / ".checkpoint" / "state.json"

    def killer(pid: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if json.loads(state.read_text())["train_state"]["epoch"] >= 1:
                    os.kill(pid, signal.SIGKILL)
                    return
            except (OSError, ValueError, KeyError):
                pass
            if os.waitpid(pid, os.WNOHANG)[0]:
                pytest.fail("training finished before it could be killed")
            time.sleep(0.001)

    def slow_checkpoints() -> None:
        """In the child: each checkpoint stays a while, and after the last one the child stops
        itself, so the kill lands in a running epoch and never after the run (the window
        from the checkpoint to the end of training was under 0.1 s)."""
        import psinspect.train

        real = psinspect.train._write_checkpoint

        def write(out_dir: Path, arrays: dict, meta: dict) -> None:
            real(out_dir, arrays, meta)
            time.sleep(0.2)
            if meta["train_state"]["epoch"] + 1 >= int(EPOCHS):
                os.kill(os.getpid(), signal.SIGSTOP)  # (SIGKILL ends a stopped process too)

        psinspect.train._write_checkpoint = write

    assert _run_child(_train_argv(train_inputs, out), setup=slow_checkpoints,
                      external=killer) == signal.SIGKILL
    _resume(train_inputs, out, monkeypatch, capsys)
    _same_model(uninterrupted, out)


def test_train_force_over_an_old_model_killed_while_saving(
        train_inputs: list[Path], uninterrupted: Path, tmp_path: Path, monkeypatch,
        capsys) -> None:
    """``train --force`` over an existing model dir, killed between the final files: each
    file is old or new, the directory still loads as the OLD model (the new weights go to a
    new content-addressed file; config.json, written last, switches to it) - then --resume
    completes it."""
    out = tmp_path / "model"
    old_model = create_model("unet-ae", channels=[4, 8], patch=32)
    save_model_dir(out, old_model, threshold=9.0, image_threshold=9.5)
    old = tree(out)
    new = {k: v for k, v in tree(uninterrupted).items()}
    n_ckpt = 2 * int(EPOCHS)
    for k in (n_ckpt + 1, n_ckpt + 2, n_ckpt + 3):  # before weights / log / config replace
        sig = _run_child(_train_argv(train_inputs, out, "--force"),
                         setup=_kill_before_replace(k))
        assert sig == signal.SIGKILL
        final = {n: d for n, d in tree(out).items() if not n.startswith(".checkpoint/")}
        _assert_old_or_new_model(final, old, new)
        assert load_model_dir(out).threshold == 9.0  # config.json is the commit point
        _resume(train_inputs, out, monkeypatch, capsys)
        _same_model(uninterrupted, out)
        save_model_dir(out, old_model, threshold=9.0, image_threshold=9.5)  # back to old


def _assert_old_or_new_model(now: dict[str, bytes], old: dict[str, bytes],
                             new: dict[str, bytes]) -> None:
    """A model dir is written in place: a kill just before a rename may leave that file's
    hidden temp file (``.NAME.xxxx.tmp``, never read), but never a torn NAME."""
    for name, data in now.items():
        if name.endswith(".tmp"):
            target = name[1:].split(".tmp")[0].rsplit(".", 1)[0]
            # (a log's name is its content's hash, which differs from the reference run's)
            assert name.startswith(".") and (target in new or target.startswith("train_log-"))
            continue
        if name == "config.json" and data != old.get(name):
            # a new config differs from the reference run only in its timing fields
            a, b = json.loads(data), json.loads(new[name])
            a["training"].pop("train_seconds"), b["training"].pop("train_seconds")
            a["training"].pop("resumed"), b["training"].pop("resumed")
            assert a == b
            continue
        if name.startswith("train_log-") and data != old.get(name):
            # the new log, named by its content, which differs only in its timing fields
            (new_log,) = (json.loads(d) for n, d in new.items() if n.startswith("train_log-"))
            strip = [{k: v for k, v in e.items() if k != "seconds"} for e in json.loads(data)]
            assert strip == [{k: v for k, v in e.items() if k != "seconds"} for e in new_log]
            continue
        assert data == old.get(name) or data == new.get(name), name


def test_resume_refuses_other_settings_or_inputs(train_inputs: list[Path], tmp_path: Path,
                                                 monkeypatch, capsys) -> None:
    """--resume continues the checkpoint's run: a setting given again, or other inputs, would
    be silently ignored, so they are refused."""
    out = tmp_path / "model"
    code, _, err = run_cli(_train_argv(train_inputs, out, "--resume"), monkeypatch, capsys)
    assert code == 2 and "drop --model, --epochs, --batch-size, --seed, --patience, --hp" in err
    assert "Traceback" not in err


def test_resume_refuses_other_inputs(tmp_path: Path) -> None:
    """The checkpoint names its inputs; resuming on others would train on the old ones."""
    import numpy as np

    from psinspect.train import _write_checkpoint, train_model

    out = tmp_path / "model"
    _write_checkpoint(out, {"w": np.zeros(1, np.float32)},
                      {"args": {"inputs": [str(tmp_path / "a.npy")]}, "train_state": {}})
    with pytest.raises(PsinspectError, match=r"--resume: the interrupted run trained on .*a\.npy"):
        train_model([tmp_path / "b.npy"], out, resume=True)
