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
