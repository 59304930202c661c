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


def test_a_second_interrupt_does_not_cut_a_thread_pools_shutdown_short(
        usr1_is_an_interrupt) -> None:
    """Ctrl-C while ``detect`` scored maps in 2 threads: the first interrupt ended the wait
    for results, a second one (``timeout`` signals the process and its group; an impatient
    user presses twice) ended the wait for the running call, and the interpreter exited under
    a thread inside torch: the process aborted (exit 134, "terminate called without an
    active exception"). The pool's shutdown now waits with interrupts held back."""
    import threading
    import time

    started, finished = threading.Event(), []

    def slow() -> None:
        started.set()
        time.sleep(0.4)  # (releases the GIL, as torch does)
        finished.append(True)

    with pytest.raises(KeyboardInterrupt):
        with interrupts.thread_pool(2) as pool:
            fut = pool.submit(slow)
            queued = [pool.submit(slow) for _ in range(4)]
            started.wait(5)
            threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGUSR1)).start()
            _signal_self()  # the first interrupt: out of the block, into the shutdown
    assert fut.done() and finished  # the running calls ended before the block was left
    assert sum(f.cancelled() for f in queued) >= 2  # those not started were not run


def test_staged_output_moves_finish_before_an_interrupt_and_are_noted(
        usr1_is_an_interrupt, tmp_path, monkeypatch) -> None:
    """An interrupt while a staged output is moved into place waits until every file is
    there, and the folder is then recorded as written (the console script says it is
    complete instead of "nothing written")."""
    from psinspect import fileio

    real = os.replace
    calls = []

    def replace(src, dst):
        if not calls:
            _signal_self()
        calls.append(dst)
        real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    out = tmp_path / "out"
    before = len(interrupts.written())
    with pytest.raises(KeyboardInterrupt):
        with fileio.staged_output_dir(out) as stage:
            for name in ("a.txt", "b.txt", "c.txt"):
                (stage / name).write_text(name)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "a.txt", "b.txt", "c.txt"]
    assert interrupts.written()[before:] == [str(out)]


def test_an_interrupt_after_the_output_is_in_place_says_so(tmp_path, monkeypatch,
                                                            capsys) -> None:
    """Ctrl-C after detect's output folder was put in place (while its last line was
    printed): exit 130, and the message says the folder is complete, not "nothing
    written"."""
    from _robust_util import good_sphere_maps, run_cli

    import psinspect.cli.detect as detect_cli

    maps = good_sphere_maps(tmp_path, 48)
    shown = detect_cli.typer.echo

    def echo(message=None, *a, **k):
        if isinstance(message, str) and "input(s)" in message:
            raise KeyboardInterrupt
        shown(message, *a, **k)

    monkeypatch.setattr(detect_cli.typer, "echo", echo)
    out = tmp_path / "det"
    code, _, err = run_cli(["detect", maps[0], "-o", out], monkeypatch, capsys)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == (f"interrupted: {out} had already been written "
                                            "in full"), err
    assert (out / "summary.json").is_file()


def test_signals_are_ignored_once_the_command_has_ended() -> None:
    """Ctrl-C while the interpreter shuts down after a command (torch's exit handlers take
    about half a second) printed a traceback from an exit handler, with exit status 0: once
    the command has ended, the console script ignores SIGINT and SIGTERM."""
    import subprocess
    import sys

    code = ("import signal, sys\n"
            "sys.argv = ['psinspect', '--version']\n"
            "from psinspect._console import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    status = e.code\n"
            "print(status, signal.getsignal(signal.SIGINT) is signal.SIG_IGN,\n"
            "      signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip().splitlines()[-1] in ("0 True True", "None True True"), (
        proc.stdout, proc.stderr)


def test_an_interrupted_run_does_not_claim_its_inner_outputs(tmp_path, monkeypatch,
                                                             capsys) -> None:
    """``run`` stages detect's and evaluate's outputs inside its own staging folder: a Ctrl-C
    after its detect stage said that inner folder "had already been written in full", though
    the staging folder was then removed and nothing was written (a mutation audit)."""
    from _robust_util import run_cli

    import psinspect.report

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(psinspect.report, "write_evaluation", interrupted)
    out = tmp_path / "r"
    code, _, err = run_cli(["run", "--quick", "--pretrained", "-o", out], monkeypatch, capsys)
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted: nothing written", err
    assert not out.exists()
