"""Command-line interface: thin typer commands, one module per command group.

Each submodule registers its commands on :data:`app`. User errors (:class:`PsinspectError`) are
printed on one line and exit with code 2.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

import typer

from psinspect import __version__
from psinspect.errors import PsinspectError

app = typer.Typer(
    name="psinspect",
    help="Surface inspection from photometric stereo: captures -> normals -> anomaly maps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"psinspect {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
) -> None:
    """psinspect command line."""


def _register() -> None:
    """Import the command modules (each adds its commands to ``app``)."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    for cmd in app.registered_commands:  # one line per command in 'psinspect --help'
        if cmd.short_help is None and cmd.callback is not None:
            cmd.short_help = _summary(sys.modules[cmd.callback.__module__].__doc__ or "")


def _summary(module_doc: str) -> str:
    """A command module's one-line summary: its docstring's first paragraph after
    "``psinspect NAME``: ", without "(see ...)" references, capitalised."""
    line = " ".join(module_doc.strip().split("\n\n")[0].split())
    text = re.sub(r"\s*\(see [^)]*\)", "", line.partition(": ")[2] or line)
    return text[:1].upper() + text[1:]


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: object = None, line: str | None = None) -> None:
    """Show a Python warning as one ``warning: ...`` line (no source file and line)."""
    typer.echo(f"warning: {message}", err=True)


def main() -> None:
    """Console-script entry point (typer's standalone mode handles usage errors, exit 2).
    Warnings print as one ``warning: ...`` line each; OpenCV's own log is kept to errors (its
    "findDecoder" notes repeat what our one-line errors say)."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # read when cv2 is first imported
    _register()
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            app()
        except PsinspectError as err:
            typer.echo(f"error: {err}", err=True)
            sys.exit(2)
