"""Command-line interface: thin typer commands, one module per command group.

Each submodule registers its commands on :data:`app`. User errors (:class:`PsinspectError`) and
usage errors (a missing argument, a bad option value) are printed on one line and exit with
code 2.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import warnings
from typing import Any

import typer

from psinspect import __version__
from psinspect.errors import PsinspectError

#: the largest ``--seed`` (torch's generator takes up to 2 ** 64 - 1; JSON readers an int64)
MAX_SEED = 2 ** 63 - 1

app = typer.Typer(
    name="psinspect",
    help="Surface inspection from photometric stereo: captures -> normals -> anomaly maps.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    # help texts are plain text: "[x0, y0, x1, y1]" is not a rich markup tag, and a
    # paragraph's line breaks are not kept at other terminal widths
    rich_markup_mode=None,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"psinspect {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
) -> None:
    """psinspect command line."""


def progress_bar(*columns: Any, **kwargs: Any) -> Any:
    """A ``rich.progress.Progress(*columns, **kwargs)`` on stderr (unless ``console`` is given)
    that draws nothing where its console is not interactive (a file, a pipe, a dumb terminal):
    there rich shows no live bar anyway, but on stopping it prints the bar's last state (unless
    transient) and an empty line, stray lines around our one-line errors and results."""
    from rich.console import Console
    from rich.progress import Progress

    console = kwargs.pop("console", None) or Console(stderr=True)
    return Progress(*columns, console=console, disable=not console.is_interactive, **kwargs)


def register_commands() -> None:
    """Import the command modules (each adds its commands to ``app``); once is enough, more
    does no harm."""
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


def _usage_error_line(err: typer.TyperException) -> str:
    """A typer (vendored click) error - a missing argument, an unknown option, a bad option
    value - as one ``error: ...`` line, pointing to the command's --help."""
    format_message = getattr(err, "format_message", None)
    message = " ".join((format_message() if format_message else str(err)).split())
    if type(err).__name__ == "NoSuchOption":  # click's suggestions count the dashes alike
        name = str(getattr(err, "option_name", ""))
        options = {o.lstrip("-"): o for o in getattr(err, "possibilities", None) or ()}
        close = difflib.get_close_matches(name.lstrip("-"), list(options))
        message = f"No such option: {name}" + (
            f" (did you mean {' / '.join(options[c] for c in close)}?)" if close else "")
    ctx = getattr(err, "ctx", None)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return f"error: {message}"


def repeated_option(args: list[str], group: Any) -> str | None:
    """The first option of ``args`` (a command line after the program name) given more than
    once that takes one value or is a flag (click keeps the last silently: ``--types scratch
    --types dent`` drew dents only), as it was written; None when there is none or the command
    is not known (click then says what is wrong). ``group``: the click group of :data:`app`
    (``typer.main.get_command(app)``, typer's own click)."""
    commands = getattr(group, "commands", {})
    name = next((a for a in args if not a.startswith("-")), None)
    command = commands.get(name) if name is not None else None
    if command is None:
        return None
    words = args[args.index(name) + 1:]
    if "--" in words:
        words = words[:words.index("--")]
    for param in command.params:
        if (getattr(param, "param_type_name", None) != "option"
                or getattr(param, "multiple", False) or getattr(param, "count", False)):
            continue
        names = [*param.opts, *param.secondary_opts]
        given = [w for w in words if w in names
                 or any(w.startswith(f"{o}=") for o in names if o.startswith("--"))]
        if len(given) > 1:
            return given[0].partition("=")[0]
    return None


def main() -> None:
    """Console-script entry point. Always exits (``SystemExit``): 0 on success, a command's
    ``typer.Exit`` code, 2 with one ``error: ...`` line on stderr for a user error
    (:class:`PsinspectError`) or a usage error (typer's own multi-line error box is not used),
    130 on Ctrl-C. Warnings print as one ``warning: ...`` line each; OpenCV's own log is kept to
    silent (its "findDecoder" notes and a corrupt PNG's "readHeader" error line repeat what our
    one-line errors say)."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")  # read when cv2 is first imported
    from psinspect.interrupts import written

    register_commands()
    before = len(written())  # (output folders this command puts in place come after)
    group = typer.main.get_command(app)  # (built once: it takes about 60 ms)
    again = repeated_option(sys.argv[1:], group)
    if again is not None:
        typer.echo(f"error: {again} is given more than once; give it once (only the last would "
                   "count)", err=True)
        sys.exit(2)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            # not standalone: click errors come here instead of being printed by typer;
            # --help, --version and typer.Exit(code) come back as the exit code; the program
            # is "psinspect" in messages also when run some other way (python -m ...)
            code = group(standalone_mode=False, prog_name="psinspect")
        except PsinspectError as err:
            typer.echo(f"error: {err}", err=True)
            sys.exit(2)
        except typer.TyperException as err:  # typer's click errors (its click is vendored)
            if type(err).__name__ == "NoArgsIsHelpError":  # bare 'psinspect': the help
                ctx = getattr(err, "ctx", None)
                if ctx is not None:
                    typer.echo(ctx.get_help())
                sys.exit(getattr(err, "exit_code", 2))
            typer.echo(_usage_error_line(err), err=True)
            sys.exit(2)
        except typer.Abort:  # EOF at a prompt (Ctrl-C comes back as exit code 130)
            typer.echo("Aborted!", err=True)
            sys.exit(1)
    if code == 130:  # Ctrl-C: the outputs are staged, so nothing was written (train, which
        # keeps the last finished epoch, says so itself), unless it came once the output was
        # in place (psinspect.interrupts.written)
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
        done = written()[before:]
        if done:
            typer.echo(f"interrupted: {', '.join(done)} had already been written in full",
                       err=True)
        elif command != "train":
            typer.echo("interrupted: nothing written", err=True)
    sys.exit(code if isinstance(code, int) else 0)
