"""Ctrl-C and SIGTERM in the console script, held back while extension modules load.

The console script (:mod:`psinspect._console`) turns both signals into ``KeyboardInterrupt``
(:func:`on_signal`), so staged outputs are cleaned up. Raised in Python code that a C++
extension calls while it is imported (torch's, on the first use of a model), the exception
cannot unwind through the C++ frames and the process aborts (exit 134, a C++ stack dump, a
staging folder left behind). Inside :func:`held` the handler only notes the signal, and the
``KeyboardInterrupt`` is raised when the outermost ``held`` block ends.

The state is per process, as signal handlers are.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: open held() blocks, whether a signal came during them, and every signal received
_STATE: dict[str, Any] = {"depth": 0, "pending": False, "received": []}


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
