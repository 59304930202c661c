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
from typing import Any, TextIO


class _UntilReaderGone:
    """A text stream (stdout / stderr) that drops what is written once its reader has gone (a
    pipe into ``head`` or ``grep -q`` that has exited): the write raised BrokenPipeError in
    the middle of a command, whose outputs (staged) were then lost with exit status 1 and no
    message. The stream's file descriptor is pointed at the null device, so the interpreter's
    last flush does not fail either; the command finishes as it would have."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, self._stream.fileno())
        finally:
            os.close(null)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main() -> None:
    # OpenCV reads its log level when first imported (by the command modules): its own
    # "findDecoder" notes and error lines (a corrupt PNG's "readHeader") would repeat what our
    # one-line errors say
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None:  # (None: started without one)
            setattr(sys, name, _UntilReaderGone(stream))
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
    finally:
        # the command has ended (its outputs are in place, or cleaned up): a signal while the
        # interpreter shuts down (torch's exit handlers take about half a second) printed a
        # traceback from an exit handler, and the exit status stayed 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
