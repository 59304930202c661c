"""Every user error is ONE line on stderr, ``error: ...``, exit code 2 (README 'Reliability'):

- usage errors (a bad option value, a missing argument or option, an unknown option or
  command) are not typer's multi-line error box;
- value errors found by a command leave no empty line (rich's progress bars print one on
  stopping where the output is not a terminal) and no progress-bar line ("loading data 0/30").

``--help``, ``--version`` and a bare ``psinspect`` keep working.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from _robust_util import run_cli, sphere_normals, tiny_capture
from rich.console import Console

from psinspect import __version__


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output captured as by a pipe: no variable that makes rich treat it as a terminal."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A capture folder and a normal map."""
    root = tmp_path_factory.mktemp("inputs")
    cap = tiny_capture(root / "cap")
    npy = root / "normals.npy"
    np.save(npy, sphere_normals(16)[0])
    return {"cap": cap, "npy": npy}


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("args, expect", [
    (["render", "-o", "{out}", "--parts", "abc"], ["'--parts'", "'psinspect render --help'"]),
    (["normals", "{cap}", "-o", "{out}", "--gamma", "x"], ["'--gamma'", "psinspect normals"]),
    (["detect", "-o", "{out}"], ["Missing argument", "'psinspect detect --help'"]),
    (["train", "{cap}"], ["Missing option", "--out", "'psinspect train --help'"]),
    (["render", "--bogus"], ["No such option: --bogus (see"]),  # (click suggested --out)
    (["detect", "x", "-o", "{out}", "--modle", "m"], ["No such option: --modle (did you mean "
                                                      "--model?)"]),
    (["defects", "{npy}", "-o", "{out}", "--along"], ["--along"]),
    (["nosuchcommand"], ["No such command", "'psinspect --help'"]),
    (["--bogus"], ["No such option: --bogus"]),
], ids=["bad-int", "bad-float", "missing-argument", "missing-option", "unknown-option",
        "misspelt-option", "option-without-value", "unknown-command", "unknown-root-option"])
def test_usage_error_is_one_line(args: list[str], expect: list[str], inputs: dict[str, Path],
                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(out=tmp_path / "out", **inputs) for a in args]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 2
    line = _one_error_line(err)
    for text in expect:
        assert text in line
    assert out == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, expect", [
    (["render", "-o", "{out}", "--parts", "0"], "--parts must be between 1 and 10000"),
    (["normals", "{cap}", "-o", "{out}", "--gamma", "0"], "--gamma"),
    (["defects", "{npy}", "-o", "{out}", "--along", "foo"], "--along"),
    (["train", "{cap}", "-o", "{out}", "--model", "nosuch"], "--model 'nosuch'"),
    # fails inside training, with its progress bar shown
    (["train", "{cap}", "-o", "{out}", "--model", "geometric"], "good parts"),
    (["train", "{cap}/nothing-here", "-o", "{out}"], "nothing-here"),
], ids=["render", "normals", "defects", "train-model", "train-fails", "train-no-input"])
def test_value_error_is_one_line(args: list[str], expect: str, inputs: dict[str, Path],
                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(out=tmp_path / "out", **inputs) for a in args]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 2
    assert expect in _one_error_line(err)
    assert out == ""


def test_success_leaves_no_empty_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A command with a progress bar on stdout prints its summary line and nothing else."""
    import rich.progress

    original = rich.progress.Progress
    code, out, err = run_cli(["render", "-o", tmp_path / "r", "--parts", "1", "--size", "32"],
                             monkeypatch, capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 1 and out.startswith("1 part(s), "), out
    assert err == ""
    assert rich.progress.Progress is original  # the quiet bars are only for the command's run


@pytest.mark.parametrize("args, expect", [
    (["--help"], "Usage: psinspect"),
    (["render", "--help"], "Usage: psinspect render"),
    (["--version"], f"psinspect {__version__}"),
])
def test_help_and_version_exit_0(args: list[str], expect: str, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0
    assert expect in out
    assert err == ""


def test_bare_command_prints_help(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([], monkeypatch, capsys)
    assert code == 2  # click's code for "no command given"; the help says what to give
    assert "Usage: psinspect" in out and "render" in out
    assert "error" not in err.lower()


def test_progress_bar_draws_only_on_a_terminal() -> None:
    from rich.progress import BarColumn, TextColumn

    from psinspect.cli import progress_bar

    for interactive in (False, True):
        buf = io.StringIO()
        console = Console(file=buf, force_terminal=interactive, force_interactive=interactive)
        with progress_bar(TextColumn("{task.description}"), BarColumn(),
                          console=console) as bar:
            bar.add_task("loading data", total=30)
        assert ("loading data" in buf.getvalue()) is interactive, buf.getvalue()


def test_ctrl_c_while_the_program_loads_prints_no_traceback() -> None:
    """A Ctrl-C while psinspect's modules load (simulated: SIGINT sent as typer is imported)
    ends the program quietly, as the signal does by default; it printed a traceback."""
    import subprocess
    import sys

    code = (
        "import builtins, os, signal, sys\n"
        "import psinspect._console as console\n"
        "real = builtins.__import__\n"
        "def imp(name, *a, **k):\n"
        "    if name == 'typer':\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = imp\n"
        "sys.argv = ['psinspect', '--version']\n"
        "console.main()\n")
    import signal

    # (Ctrl-C handled by default in the child, whatever this test process inherited: a
    # background job, as `./.ci/run &`, starts with SIGINT ignored)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == -2, (proc.returncode, proc.stderr)  # killed by SIGINT
    assert proc.stdout == "" and proc.stderr == ""


def test_sigterm_is_handled_as_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM (kill, a supervisor stopping the job) while detect writes: the staged output is
    removed, one line says nothing was written, exit status 143; it ended the process at once,
    silently, and left a hidden staging folder behind."""
    import subprocess
    import sys

    from psinspect.fileio import save_npy
    from psinspect.normalmap import normals_from_height

    yy, xx = np.mgrid[0:48, 0:48].astype(np.float32)
    mask = (xx - 24) ** 2 + (yy - 24) ** 2 < 400
    save_npy(tmp_path / "part.npy",
             normals_from_height(-((xx - 24) ** 2 + (yy - 24) ** 2) / 400.0, mask))
    code = (
        "import os, signal, sys\n"
        "import psinspect._console as console\n"
        "import psinspect.detect as detect\n"
        "real = detect.write_input_files\n"
        "def write(*a, **k):\n"
        "    real(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "detect.write_input_files = write\n"
        f"sys.argv = ['psinspect', 'detect', {str(tmp_path / 'part.npy')!r}, '-o', "
        f"{str(tmp_path / 'out')!r}, '--tta', '1']\n"
        "console.main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 143, (proc.returncode, proc.stderr)
    assert proc.stderr.strip().splitlines()[-1] == "interrupted: nothing written", proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.npy"]


def test_a_process_started_with_ctrl_c_ignored_keeps_ignoring_it() -> None:
    """A script's background job starts with SIGINT ignored; the console script made it
    interruptible again."""
    import signal
    import subprocess
    import sys

    code = ("import signal, sys\n"
            "import psinspect._console as console\n"
            "import psinspect.cli as cli\n"
            "cli.main = lambda: print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n"
            "console.main()\n")
    for ignore, want in ((True, "True"), (False, "False")):
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
            preexec_fn=lambda ignore=ignore: signal.signal(
                signal.SIGINT, signal.SIG_IGN if ignore else signal.SIG_DFL))
        assert proc.stdout.strip() == want, (ignore, proc.stdout, proc.stderr)


def test_the_console_script_keeps_opencv_quiet(inputs: dict[str, Path], tmp_path: Path
                                                ) -> None:
    """A missing image: one error line, no OpenCV "findDecoder" note before it (the console
    script imported OpenCV before the CLI turned its log down)."""
    import shutil
    import subprocess
    import sys

    cap = Path(shutil.copytree(inputs["cap"], tmp_path / "cap"))
    first = sorted(cap.glob("*.png"))[0]
    first.unlink()
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", "from psinspect._console import main; main()",
                           "normals", str(cap), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {first}: image file not found"], proc.stderr
    # a corrupt PNG: OpenCV logs its own "readHeader" line at error level
    first.write_bytes(b"\x89PNG\r\n\x1a\njunk")
    proc = subprocess.run([sys.executable, "-c", "from psinspect._console import main; main()",
                           "normals", str(cap), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: {first}: cannot read image (corrupt or unsupported format)"], proc.stderr


@pytest.mark.parametrize("command", ["normals", "detect"])
def test_ctrl_c_in_a_command_says_nothing_was_written(
        inputs: dict[str, Path], tmp_path: Path, command: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C in the middle of a command: one line that the (staged) outputs were not
    written, exit 130; it ended silently. (Ctrl-C simulated: the photometric stereo solve
    raises KeyboardInterrupt.)"""
    import psinspect.stereo as stereo

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(stereo, "solve", interrupted)
    monkeypatch.setattr(stereo, "run_photometric_stereo", interrupted)
    out = tmp_path / "out"
    code, _, err = run_cli([command, inputs["cap"], "-o", out], monkeypatch, capsys)
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted: nothing written", err
    assert not out.exists()


def test_json_nested_too_deeply_is_one_line_or_ignored(inputs: dict[str, Path],
                                                       tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    """JSON nested deeper than Python's parser goes (its RecursionError), or with an integer of
    more digits than it converts (ValueError), was a traceback wherever psinspect reads JSON:
    now it is malformed JSON like any other, so a model's config.json, a capture's
    defects.json and --hp are one-line errors, and so is an unreadable run.json beside a
    normals.npy (a damaged `psinspect normals` output; it was ignored)."""
    import shutil

    from psinspect.models import create_model
    from psinspect.modelstore import save_model_dir

    deep = "[" * 100_000 + "]" * 100_000
    model = save_model_dir(tmp_path / "m", create_model("geometric"), threshold=1.0,
                           image_threshold=2.0)
    (model / "config.json").write_text(deep)
    code, _, err = run_cli(["detect", inputs["npy"], "--model", model, "-o", tmp_path / "d1"],
                           monkeypatch, capsys)
    assert code == 2 and "not readable JSON (nested too deeply" in _one_error_line(err), err

    cap = tmp_path / "cap"
    shutil.copytree(inputs["cap"], cap)
    (cap / "defects.json").write_text(deep)
    shutil.copy(cap / "mask.png", cap / "M_defect.png")  # (the mask its records go with)
    code, _, err = run_cli(["detect", cap, "-o", tmp_path / "d2"], monkeypatch, capsys)
    assert code == 2 and "unreadable defect records (nested too deeply" in _one_error_line(
        err), err

    code, _, err = run_cli(["train", inputs["npy"], "-o", tmp_path / "m2", "--hp", deep],
                           monkeypatch, capsys)
    assert code == 2 and "--hp: not valid JSON (nested too deeply" in _one_error_line(err), err
    # an integer of more digits than Python converts: likewise
    code, _, err = run_cli(["train", inputs["npy"], "-o", tmp_path / "m3", "--hp",
                            '{"epochs": ' + "9" * 5000 + "}"], monkeypatch, capsys)
    assert code == 2 and "--hp: not valid JSON (Exceeds the limit" in _one_error_line(err), err
    (model / "config.json").write_text('{"format": ' + "1" * 5000 + "}")
    code, _, err = run_cli(["detect", inputs["npy"], "--model", model, "-o", tmp_path / "d4"],
                           monkeypatch, capsys)
    assert code == 2 and "not readable JSON (Exceeds the limit" in _one_error_line(err), err

    maps = tmp_path / "maps"
    maps.mkdir()
    shutil.copy(inputs["npy"], maps / "normals.npy")
    (maps / "run.json").write_text(deep)  # beside normals.npy: a damaged normals output
    code, _, err = run_cli(["detect", maps / "normals.npy", "-o", tmp_path / "d3"],
                           monkeypatch, capsys)
    assert code == 2 and "run.json: cannot be read (nested too deeply" in _one_error_line(err)


def test_training_keeps_an_ignored_ctrl_c_ignored() -> None:
    """train's own Ctrl-C handler (stop after the epoch) was installed even in a process
    started with SIGINT ignored (a background job), which other commands keep ignoring."""
    import signal

    from psinspect.cli.train import _interrupt_noted

    before = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with _interrupt_noted(lambda: False):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with _interrupt_noted(lambda: False):
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
