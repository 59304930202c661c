"""The ``psinspect`` console script. Python starts with Ctrl-C raising ``KeyboardInterrupt``,
so one pressed while the program's modules load (about half a second) printed a traceback;
until they are loaded it now ends the program at once and quietly, as the signal does by
default (exit status 130 in a shell), and from then on the CLI handles it
(:func:`psinspect.cli.main`). A process started with Ctrl-C ignored (a background job of a
script) keeps ignoring it. SIGTERM (``kill``, a supervisor stopping the job) is handled as
Ctrl-C is, so staged outputs are cleaned up and training keeps its last epoch, and the exit
status is then 143, as for a process the signal ended. Both are held back while extension
modules load (:mod:`psinspect.interrupts`)."""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    # OpenCV reads its log level when first imported (by the command modules): its own
    # "findDecoder" notes would repeat what our one-line errors say
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if not ignored:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    from psinspect.cli import main as cli_main
    from psinspect.cli import register_commands
    from psinspect.interrupts import on_signal, received

    register_commands()  # (the command modules: most of the loading)
    # both raise KeyboardInterrupt, held back while torch loads (psinspect.interrupts)
    if not ignored:
        signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        try:
            cli_main()
        except KeyboardInterrupt:  # before the command ran (typer building it): nothing staged
            print("interrupted: nothing written", file=sys.stderr)
            sys.exit(130)
    except SystemExit:
        if signal.SIGTERM in received():
            sys.exit(128 + signal.SIGTERM)
        raise
