"""``psinspect --help``: one short line per command, taken from each command module's summary."""

from __future__ import annotations

from typer.testing import CliRunner

from psinspect.cli import _summary, app, register_commands


def test_summary_of_a_module_docstring() -> None:
    doc = "``psinspect run``: the whole pipeline in one command (see\n:mod:`psinspect.x`).\n\nMore."
    assert _summary(doc) == "The whole pipeline in one command."


def test_every_command_has_a_one_line_summary() -> None:
    register_commands()
    names = {c.name for c in app.registered_commands}
    assert {"normals", "render", "defects", "dataset", "train", "detect", "evaluate", "run",
            "serve"} <= names
    for cmd in app.registered_commands:
        assert cmd.short_help and "\n" not in cmd.short_help, cmd.name
        assert len(cmd.short_help) <= 72, (cmd.name, cmd.short_help)
    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    for cmd in app.registered_commands:
        assert cmd.short_help in out


def test_help_texts_are_plain_text_wrapped_to_the_terminal() -> None:
    """Help is not rich markup ("[x0, y0, x1, y1]" vanished as a tag) and a paragraph is
    rewrapped at any width (render's and train's kept their source line breaks at 80)."""
    register_commands()
    out = CliRunner().invoke(app, ["detect", "--help"], env={"COLUMNS": "80"}).output
    assert "[x0, y0, x1, y1]" in " ".join(out.split())
    for command in ("render", "train"):
        out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80"}).output
        lines = out.splitlines()
        assert all(len(ln) <= 80 for ln in lines), command
        # a wrapped paragraph: no line ends far short of the width when the next goes on
        body = lines[:next(i for i, ln in enumerate(lines)
                           if ln.startswith(("Options", "Arguments")))]
        for ln, nxt in zip(body, body[1:], strict=False):
            assert len(ln) > 50 or not ln.strip() or not nxt.strip(), (command, ln)


def test_dash_h_is_help_everywhere() -> None:
    register_commands()
    runner = CliRunner()
    assert runner.invoke(app, ["-h"]).output == runner.invoke(app, ["--help"]).output
    for cmd in app.registered_commands:
        short = runner.invoke(app, [cmd.name, "-h"])
        assert short.exit_code == 0 and short.output == runner.invoke(
            app, [cmd.name, "--help"]).output, cmd.name
