"""What ``psinspect train`` tells its user: a line per epoch (also when stderr is a log file),
early stopping and the kept epoch, Ctrl-C with how to resume, and the resumed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _robust_util import good_sphere_maps, run_cli

# a high learning rate makes the validation loss stop improving early (seeded: always epoch 10)
HP = json.dumps({"channels": [4, 8], "patch": 32, "steps_per_epoch": 2, "val_patches": 1,
                 "lr": 0.05})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return [str(p) for p in good_sphere_maps(tmp_path_factory.mktemp("train_console"), 48)]


@pytest.fixture(autouse=True)
def _ctrl_c_reaches_the_tests() -> Iterator[None]:
    """These tests press Ctrl-C: give SIGINT Python's own handler for them, as a terminal
    does, even where pytest itself was started with SIGINT ignored (under nohup or as a
    background job of a script), which train keeps (and its subprocesses inherit)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from psinspect.cli import main; main()", *args]


def test_epoch_lines_early_stop_and_kept_epoch(inputs: list[str], tmp_path: Path) -> None:
    r = subprocess.run(_cmd("train", *inputs, "-o", str(tmp_path / "m"), "--model", "unet-ae",
                            "--hp", HP, "--epochs", "40", "--patience", "1", "--threads", "1"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    tr = config["training"]
    assert len(epochs) == tr["epochs_run"] and epochs[0].startswith("epoch 1/40: train loss ")
    assert tr["stopped_early"] and tr["epochs_run"] < 40
    assert (f"stopped early after epoch {tr['epochs_run']} of 40: no better validation loss "
            "for 1 epoch\n") in r.stderr
    best = tr["best_epoch_1based"]
    assert "(best so far)" in epochs[best - 1]
    assert f"kept the weights of epoch {best} (best validation loss" in r.stderr
    assert "" not in lines  # no empty lines from a progress bar


class _Stderr:
    """A child's stderr, read line by line in a thread for its whole run: no line is lost
    (``readline`` then ``communicate`` dropped buffered lines) and a dead child is noticed
    instead of waited on."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, prefix: str, timeout: float = 240.0) -> None:
        deadline = time.time() + timeout
        while not any(ln.startswith(prefix) for ln in list(self.lines)):
            if not self._thread.is_alive():
                raise AssertionError(f"the child ended before {prefix!r}:\n{self.text()}")
            if time.time() > deadline:
                self.proc.kill()
                raise AssertionError(f"no {prefix!r} in {timeout} s:\n{self.text()}")
            time.sleep(0.02)

    def text(self) -> str:
        self._thread.join(timeout=120)
        return "".join(self.lines)


STOPPING = "stopping once the current epoch is saved (Ctrl-C again to stop at once)"


def test_interrupt_says_how_to_resume_and_resume_continues(inputs: list[str],
                                                          tmp_path: Path) -> None:
    """Ctrl-C during training: the notice at once, at most the running epoch's line after it,
    then how to resume; the resumed run goes on from the saved epoch. (However late the
    signal lands: this test once assumed it would arrive within epoch 3.)"""
    out = tmp_path / "m"
    hp = json.dumps({"channels": [4, 8], "patch": 32, "steps_per_epoch": 40, "val_patches": 1})
    args = _cmd("train", *inputs, "-o", str(out), "--model", "unet-ae", "--hp", hp,
                "--epochs", "30", "--patience", "100", "--threads", "1")
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    err = _Stderr(proc)
    err.wait_for("epoch 2/30")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    text = err.text()
    assert proc.returncode == 130, text
    lines = text.splitlines()
    i = lines.index(STOPPING)
    after = lines[i + 1:]
    n_epoch = next(k for k, ln in enumerate(after) if not ln.startswith("epoch "))
    assert n_epoch <= 1, text  # the epoch that was running when the signal came
    assert after[n_epoch].startswith("interrupted: the last finished epoch is kept in"), text
    assert f"'-o {out} --resume'" in text and "Traceback" not in text
    # the same command again, without --resume: pointed to it (it said "use --force", which
    # would have thrown the checkpoint away)
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and again.stderr.strip() == (
        f"error: {out}: holds an interrupted training run: add --resume to go on with it (or "
        "--force to start over, which discards it)"), again.stderr
    r = subprocess.run(_cmd("train", *inputs, "-o", str(out), "--resume", "--threads", "1"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("resuming: ") and first.endswith(f"of 30 epochs done (checkpoint in "
                                                             f"{out / '.checkpoint'})")
    done = int(first.split()[1])
    printed = [int(ln.split()[1].split("/")[0]) for ln in lines if ln.startswith("epoch ")]
    assert printed == list(range(1, done + 1))  # every saved epoch had its line, in order
    epochs = [ln for ln in r.stderr.splitlines() if ln.startswith("epoch ")]
    assert epochs[0].startswith(f"epoch {done + 1}/30")
    assert f"30 epochs, {30 - done} of them now in" in r.stdout


def test_sigterm_stops_at_once_with_the_resume_hint(inputs: list[str], tmp_path: Path) -> None:
    out = tmp_path / "m"
    hp = json.dumps({"channels": [4, 8], "patch": 32, "steps_per_epoch": 40, "val_patches": 1})
    proc = subprocess.Popen(_cmd("train", *inputs, "-o", str(out), "--model", "unet-ae", "--hp",
                                 hp, "--epochs", "30", "--threads", "1"),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    err = _Stderr(proc)
    err.wait_for("epoch 2/30")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    rest = err.text()
    assert proc.returncode == 143, rest
    assert "interrupted: the last finished epoch is kept in" in rest and "Traceback" not in rest


def _sigint_at_second_input(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make detect's input reader send this process a SIGINT (Ctrl-C) while it reads the
    second input; returns the list of inputs read."""
    import psinspect.detect

    real = psinspect.detect.load_input
    read: list[str] = []

    def load_input(path, **kw):  # noqa: ANN001, ANN003, ANN202
        read.append(str(path))
        if len(read) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(path, **kw)

    monkeypatch.setattr(psinspect.detect, "load_input", load_input)
    return read


def test_ctrl_c_while_reading_inputs_stops_after_that_input(
        inputs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C before training begins stops after the input being read: nothing is trained
    (it used to wait for the first epoch to be saved)."""
    read = _sigint_at_second_input(monkeypatch)
    epoch = []
    monkeypatch.setattr("psinspect.models._torch.TorchAnomalyModel.fit",
                        lambda *a, **k: epoch.append(1) or [])
    code, _, err = run_cli(["train", *inputs, "-o", tmp_path / "m", "--model", "unet-ae",
                            "--hp", HP, "--epochs", "3", "--threads", "1"], monkeypatch, capsys)
    assert code == 130, err
    assert read == inputs[:2] and not epoch
    assert err.splitlines() == [
        "stopping after the input being read (Ctrl-C again to stop at once)",
        "interrupted: nothing written (no epoch finished: nothing to resume)"]
    assert not (tmp_path / "m").exists()


def test_ctrl_c_while_reading_a_dataset_stops_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The same for a dataset's maps (they were read without a progress call, so the Ctrl-C
    waited for the first epoch), and for a Ctrl-C after the last input was read."""
    import psinspect.train
    from psinspect.dataset import build_dataset
    from psinspect.render import render_dataset

    caps = render_dataset(tmp_path / "caps", 3, defect_rate=0.0, seed=1, size=40, lights=8)
    build_dataset(caps, tmp_path / "ds", holdout=[caps[-1].name], seed=0, subsets=2,
                  augment=[])
    real = psinspect.train.load_normal_map
    epoch = []
    monkeypatch.setattr("psinspect.models._torch.TorchAnomalyModel.fit",
                        lambda *a, **k: epoch.append(1) or [])
    real_check = psinspect.train._check_not_trained_on
    for at in (2, None):  # while reading a map; once all are read (while they are checked)
        read: list[str] = []

        def load(path, at=at, read=read, **kwargs):  # noqa: ANN001, ANN003, ANN202
            read.append(str(path))
            if len(read) == at:
                os.kill(os.getpid(), signal.SIGINT)
            return real(path, **kwargs)

        def check(*a, at=at):  # noqa: ANN002, ANN202
            if at is None:
                os.kill(os.getpid(), signal.SIGINT)
            return real_check(*a)

        monkeypatch.setattr(psinspect.train, "load_normal_map", load)
        monkeypatch.setattr(psinspect.train, "_check_not_trained_on", check)
        code, _, err = run_cli(["train", tmp_path / "ds", "-o", tmp_path / f"m{at}", "--model",
                                "unet-ae", "--hp", HP, "--epochs", "3", "--threads", "1"],
                               monkeypatch, capsys)
        assert code == 130 and len(read) == (at or 4) and not epoch, err
        assert err.splitlines()[-1] == (
            "interrupted: nothing written (no epoch finished: nothing to resume)")


def test_ctrl_c_while_reading_keeps_an_earlier_interrupted_run_and_says_so(
        inputs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """train --force into a folder holding an earlier interrupted run, stopped while reading:
    the earlier checkpoint stays (it is removed only once training starts), and the message
    no longer tells the user to resume an epoch this run never finished."""
    from psinspect.train import train_model

    def stop(entry: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(inputs, tmp_path / "m", model_name="unet-ae", hyperparameters=json.loads(HP),
                    epochs=3, threads=1, on_epoch=stop)
    state = tmp_path / "m" / ".checkpoint" / "state.json"
    before = state.read_bytes()
    _sigint_at_second_input(monkeypatch)
    code, _, err = run_cli(["train", *inputs, "-o", tmp_path / "m", "--model", "unet-ae",
                            "--hp", HP, "--epochs", "3", "--threads", "1", "--force"],
                           monkeypatch, capsys)
    assert code == 130, err
    assert err.splitlines()[-1] == (f"interrupted: nothing written; the earlier interrupted run "
                                    f"in {tmp_path / 'm' / '.checkpoint'} is kept")
    assert state.read_bytes() == before


@pytest.mark.parametrize(("calibration", "flagged"), [
    ({"val_maps": 7, "gumbel": {}}, True),
    ({"val_maps": 8, "gumbel": {}}, False),
    ({"val_maps": 3}, False),  # the largest score (no fit): not this note
    ({}, False),
])
def test_a_threshold_fitted_to_few_maps_is_flagged(calibration: dict, flagged: bool) -> None:
    """A Gumbel fit to fewer than 8 clean maps' image scores is flagged (a walkthrough's
    `run --quick` fitted 4 and passed every defective map): train warns, run notes it."""
    from psinspect.train import MIN_FIT_MAPS, few_maps_note

    note = few_maps_note(calibration)
    assert MIN_FIT_MAPS == 8 and (note is not None) is flagged
    if flagged:
        assert note.startswith("the pass/fail threshold is a fit to the image scores of only 7")
