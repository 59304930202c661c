"""Checks of values read from JSON: model hyperparameters, records of earlier runs.

A model's constructor arguments come from ``train --hp`` (JSON) or from a model folder's
``config.json`` (which may have been edited by hand), so each is checked for its type and a
range that keeps the model's arithmetic finite and its memory sane before it is used; so are
the numbers `evaluate` reads from a detect ``summary.json`` and those read from a
``psinspect normals`` ``run.json``. Each checking function returns the value in its canonical
type or raises :class:`ValueError` naming it (:func:`psinspect.models.create_model` turns that
into one :class:`psinspect.errors.PsinspectError` line); :func:`is_integer` and
:func:`is_number` only answer. ``bool`` is never a number here (JSON ``true`` is not 1).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy), not a bool (nor a float such as 4.0)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number (Python or numpy), not a bool."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def integer(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int, which must be an integer from ``low`` to ``high``."""
    if not (is_integer(value) and low <= value <= high):
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return int(value)


def flag(name: str, value: Any) -> bool:
    """``value``, which must be a bool (JSON ``true`` / ``false``; a string is not one)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _range_text(low: float, high: float, above: bool, below: bool) -> str:
    """'>= 0', '> 0 and <= 256', 'from 0 to 1', ... for the messages."""
    lo = "" if low == -math.inf else f"{'>' if above else '>='} {low:g}"
    hi = "" if high == math.inf else f"{'<' if below else '<='} {high:g}"
    if lo and hi and not (above or below):
        return f"from {low:g} to {high:g}"
    return " and ".join(t for t in (lo, hi) if t)


def number(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
           above: bool = False, below: bool = False) -> float:
    """``value`` as a float, which must be a finite real number from ``low`` to ``high``
    (``above``: greater than ``low``; ``below``: less than ``high``)."""
    ok = (is_number(value)
          and (value > low if above else value >= low)
          and (value < high if below else value <= high))
    if not ok:
        raise ValueError(f"{name} must be a finite number {_range_text(low, high, above, below)}"
                         f", got {value!r}")
    return float(value)


def _items(name: str, values: Any, length: int | None, max_length: int) -> list[Any]:
    """``values`` as a list: a list or tuple of ``length`` items (any from 1 to
    ``max_length`` when None)."""
    count = f"{length}" if length is not None else f"1 to {max_length}"
    if not isinstance(values, list | tuple) or not (
            len(values) == length if length is not None else 1 <= len(values) <= max_length):
        raise ValueError(f"{name} must be a list of {count} values, got {values!r}")
    return list(values)


def numbers_list(name: str, values: Any, low: float = -math.inf, high: float = math.inf, *,
                 above: bool = False, length: int | None = None, max_length: int = 8,
                 increasing: bool = False) -> list[float]:
    """``values`` as a list of floats: ``length`` of them (or 1 to ``max_length``), each as
    :func:`number` checks it (``name[i]``), strictly increasing where ``increasing``."""
    out = [number(f"{name}[{i}]", v, low, high, above=above)
           for i, v in enumerate(_items(name, values, length, max_length))]
    if increasing and any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"{name} must be increasing, got {values!r}")
    return out


def integers_list(name: str, values: Sequence[Any], low: int, high: int, *,
                  max_length: int = 8) -> list[int]:
    """``values`` as a list of 1 to ``max_length`` ints, each as :func:`integer` checks it."""
    return [integer(f"{name}[{i}]", v, low, high)
            for i, v in enumerate(_items(name, values, None, max_length))]
