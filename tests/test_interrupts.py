"""Ctrl-C and SIGTERM held back while torch loads (psinspect.interrupts): a walkthrough's
SIGTERM during `run`'s model stage raised KeyboardInterrupt inside torch's import, which C++
cannot unwind: the process aborted (exit 134, a C++ stack dump) and left its staging folder."""

from __future__ import annotations

import os
import signal

import pytest

from psinspect import interrupts


@pytest.fixture
def usr1_is_an_interrupt():
    """SIGUSR1 handled as the console script handles SIGINT and SIGTERM (pytest keeps those)."""
    old = signal.signal(signal.SIGUSR1, interrupts.on_signal)
    yield
    signal.signal(signal.SIGUSR1, old)


def _signal_self() -> None:
    os.kill(os.getpid(), signal.SIGUSR1)
    for _ in range(3):  # (the handler runs between bytecodes, at once after the kill)
        pass


def test_an_interrupt_inside_held_comes_when_it_ends(usr1_is_an_interrupt) -> None:
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.held():
            with interrupts.held():  # nested: only the outermost block's end raises
                _signal_self()
                done.append("inner")
            done.append("outer")
    assert done == ["inner", "outer"]
    assert interrupts.received()[-1] == signal.SIGUSR1
    with interrupts.held():  # nothing pending afterwards
        done.append("again")
    with pytest.raises(KeyboardInterrupt):  # outside held: at once
        _signal_self()
        done.append("never")
    assert done[-1] == "again"


def test_an_interrupt_replaces_the_blocks_own_error(usr1_is_an_interrupt) -> None:
    with pytest.raises(KeyboardInterrupt):
        with interrupts.held():
            _signal_self()
            raise ValueError("the block's own")
    with interrupts.held():  # (not left pending)
        pass


def test_models_load_with_interrupts_held(usr1_is_an_interrupt, monkeypatch) -> None:
    """Every model module (torch's import among them) is loaded before the interrupt."""
    import importlib
    import pkgutil

    import psinspect.models as models

    names = [i.name for i in pkgutil.iter_modules(models.__path__) if not i.name.startswith("_")]
    loaded = []
    real = importlib.import_module

    def import_module(name: str, *args):
        if name.startswith("psinspect.models."):
            if not loaded:
                _signal_self()
            loaded.append(name)
        return real(name, *args)

    monkeypatch.setattr(models.importlib, "import_module", import_module)
    with pytest.raises(KeyboardInterrupt):
        models.available_models()
    assert len(loaded) == len(names) > 1


def test_held_does_nothing_outside_the_main_thread() -> None:
    """Handlers run in the main thread: a block held in a worker (detect's inputs load models
    in threads) must not hold back the main thread's interrupt, nor raise one in the worker
    (the walkthrough's runs then ended with status 130 instead of 143)."""
    import threading

    depth = []

    def work() -> None:
        with interrupts.held():
            depth.append(interrupts._STATE["depth"])

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert depth == [0]


def test_an_interrupt_before_the_command_runs_is_one_line(tmp_path) -> None:
    """A SIGTERM or Ctrl-C while typer builds the command (before any command code) printed a
    traceback: now the same line and status as later ones."""
    import subprocess
    import sys

    code = ("import psinspect.cli as cli\n"
            "def boom():\n    raise KeyboardInterrupt\n"
            "cli.main = boom\n"
            "from psinspect._console import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "interrupted: nothing written", proc.stderr


def test_a_reader_that_has_gone_loses_no_output(tmp_path) -> None:
    """Output piped into a reader that has exited (``| head -1``, ``| grep -q``): the first
    line written raised BrokenPipeError in the middle of the command, which then wrote
    nothing and exited 1 without a word. Now the lines are dropped and the command finishes:
    its files written, exit status 0."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "psinspect", "render", "-o", str(tmp_path / "r"),
             "--parts", "2", "--size", "32", "--lights", "6"],
            stdout=write, stderr=write, cwd=tmp_path, timeout=300)
    finally:
        os.close(write)
    assert proc.returncode == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_dir()) == [
        "part000_casting", "part001_plate"]
    assert (tmp_path / "r" / "render.json").is_file()
