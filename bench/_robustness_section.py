"""The robustness section of BENCHMARKS.md, shared by ``fuzz_parsers.py`` and
``load_serve.py``: each script replaces only its own block inside the section."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path

from psinspect.fileio import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- robustness:begin -->", "<!-- robustness:end -->"
HEADER = ("## Robustness: parser fuzzing and the web app under load\n\n"
          "Bad input must give one clear error (a `PsinspectError`), never a crash; "
          "the app must answer concurrent requests without errors and with bounded memory.\n")


def machine() -> str:
    """The machine line: the target is a 2-core CPU without GPU."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"2-core CPU, no GPU ({platform.machine()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs visible; 1-min load average at the end {load:.1f}, the "
            "cores are shared)")


def date() -> str:
    try:
        return subprocess.run(["date"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def write_block(name: str, text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Put ``text`` between ``<!-- robustness-NAME:begin/end -->`` inside the section."""
    b, e = f"<!-- robustness-{name}:begin -->", f"<!-- robustness-{name}:end -->"
    block = f"{b}\n{text.rstrip()}\n{e}"
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if BEGIN not in old or END not in old:
        old = old.rstrip("\n") + f"\n\n{BEGIN}\n{HEADER}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    section, tail = rest.split(END, 1)
    if b in section and e in section:
        pre, post = section.split(b, 1)
        section = pre + block + post.split(e, 1)[1]
    else:
        section = section.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_bytes(path, (head + BEGIN + section + END + tail).encode("utf-8"))
