"""Ctrl-C and SIGTERM in the console script, held back while extension modules load.

The console script (:mod:`psinspect._console`) turns both signals into ``KeyboardInterrupt``
(:func:`on_signal`), so staged outputs are cleaned up. Raised in Python code that a C++
extension calls while it is imported (torch's, on the first use of a model), the exception
cannot unwind through the C++ frames and the process aborts (exit 134, a C++ stack dump, a
staging folder left behind). Inside :func:`held` the handler only notes the signal, and the
``KeyboardInterrupt`` is raised when the outermost ``held`` block ends.

Two more places where a signal must wait: a pool of threads shutting down after an
interrupt (:func:`thread_pool`; a second Ctrl-C there let the interpreter exit with a thread
still in torch, and the process aborted, exit 134), and the moves that put a staged output in
place (:func:`psinspect.fileio.staged_output_dir`), after which the output is complete
(:func:`written`: the console script then says so instead of "nothing written").

The state is per process, as signal handlers are.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

#: open held() blocks, whether a signal came during them, every signal received, and the
#: output folders put in place (note_written)
_STATE: dict[str, Any] = {"depth": 0, "pending": False, "received": [], "written": []}


def on_signal(signum: int, frame: Any = None) -> None:
    """Signal handler (SIGINT, SIGTERM): :func:`interrupt`, recording ``signum``
    (:func:`received`)."""
    _STATE["received"].append(signum)
    interrupt()


def interrupt() -> None:
    """Raise ``KeyboardInterrupt`` now, or, inside :func:`held`, when it ends (for signal
    handlers: ``train``'s too)."""
    if _STATE["depth"]:
        _STATE["pending"] = True
        return
    raise KeyboardInterrupt


def received() -> list[int]:
    """The signals :func:`on_signal` has handled so far, in order."""
    return list(_STATE["received"])


@contextmanager
def held() -> Iterator[None]:
    """Run the block with :func:`on_signal`'s interrupts held back; one that came during it is
    raised as ``KeyboardInterrupt`` when the outermost block ends (in place of an exception
    the block raised: the interrupt is what was asked for). In other threads than the main
    one it does nothing (Python runs signal handlers in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # (handlers interrupt the main thread only; a held-back one is raised there)
        return
    _STATE["depth"] += 1
    try:
        yield
    finally:
        _STATE["depth"] -= 1
        if _STATE["depth"] == 0 and _STATE["pending"]:
            _STATE["pending"] = False
            raise KeyboardInterrupt


def note_written(path: str) -> None:
    """Record that the output folder ``path`` was put in place in full (:func:`written`)."""
    _STATE["written"].append(str(path))


def written() -> list[str]:
    """The output folders put in place in full so far (:func:`note_written`), in order."""
    return list(_STATE["written"])


@contextmanager
def thread_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A :class:`ThreadPoolExecutor` of ``workers`` threads, shut down on leaving the block
    (calls not yet started cancelled, the running ones waited for) with interrupts
    :func:`held` back: the first Ctrl-C ends the waiting in the block, and a second one (a
    terminal's or ``timeout``'s, which signals the process and its group) would otherwise end
    the shutdown's wait too, and the interpreter would exit under a thread still inside torch
    or OpenCV (the process aborts: exit 134, "terminate called without an active
    exception")."""
    pool = ThreadPoolExecutor(max(1, int(workers)))
    try:
        yield pool
    finally:
        with held():
            pool.shutdown(wait=True, cancel_futures=True)
