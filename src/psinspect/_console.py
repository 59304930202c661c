"""The ``psinspect`` console script. Python starts with Ctrl-C raising ``KeyboardInterrupt``,
so one pressed while the program's modules load (about half a second) printed a traceback;
until they are loaded it now ends the program at once and quietly, as the signal does by
default (exit status 130 in a shell), and from then on the CLI handles it
(:func:`psinspect.cli.main`). A process started with Ctrl-C ignored (a background job of a
script) keeps ignoring it. SIGTERM (``kill``, a supervisor stopping the job) is handled as
Ctrl-C is, so staged outputs are cleaned up and training keeps its last epoch, and the exit
status is then 143, as for a process the signal ended."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def main() -> None:
    # OpenCV reads its log level when first imported (by the command modules): its own
    # "findDecoder" notes would repeat what our one-line errors say
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if not ignored:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    from psinspect.cli import main as cli_main
    from psinspect.cli import register_commands

    register_commands()  # (the command modules: most of the loading)
    if not ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    terminated: list[int] = []

    def terminate(signum: int, frame: Any) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        cli_main()
    except SystemExit:
        if terminated:
            sys.exit(128 + signal.SIGTERM)
        raise
