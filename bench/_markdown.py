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


def cpu_description() -> str:
    """The CPU as the machine line of a benchmark states it: its model name and whether it has
    AVX-512 (vector width: what torch's CPU kernels use), from ``/proc/cpuinfo``
    where there is one; speeds of runs on different days compare only with the same CPU."""
    import platform

    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "CPU model unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), platform.processor() or "CPU model unknown")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), None)
    if flags is None:  # (not x86: ARM lists "Features")
        return model
    vector = ("AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags
              else "no AVX2")
    return f"{model}, {vector}"
