"""Shared by the bench scripts: replace one delimited section of BENCHMARKS.md, atomically."""

from __future__ import annotations

from pathlib import Path

from psinspect.fileio import atomic_write_bytes


def write_section(text: str, path: Path, begin: str, end: str) -> None:
    """Put ``text`` (which starts with ``begin`` and ends with ``end``) in place of the section
    between those markers in ``path``, or append it when the markers are absent."""
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    atomic_write_bytes(path, new.encode("utf-8"))
