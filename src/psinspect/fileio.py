"""Atomic file output and output-folder handling.

Every artifact the project writes goes through here, so that a killed run leaves either the old
file or the new one, never a torn one, and a user's non-empty output folder is never overwritten
without ``force``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from psinspect.errors import PsinspectError


def _pid_alive(pid: int) -> bool:
    """Whether a PROCESS ``pid`` runs on this machine. On Linux ``kill(pid, 0)`` also succeeds
    for the id of a thread of another process (a killed writer's pid reused as a thread id),
    so there the thread-group id in ``/proc/PID/status`` must be ``pid`` itself."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # no procfs (not Linux), or it just ended
        return True
    tgid = re.search(r"^Tgid:\s*(\d+)", status, re.MULTILINE)
    return tgid is None or int(tgid.group(1)) == pid


#: hidden temporaries: ``.NAME.<pid>-XXXX.tmp`` (atomic writes), ``.NAME.staging-<pid>-XXXX``
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:staging-(?P<spid>\d+)-[^.]*|(?P<tpid>\d+)-[^.]*\.tmp)")


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the leftovers of writers of ``folder/name`` (every name when None) that were
    killed (SIGKILL, power loss) before they could clean up: hidden ``.NAME.<pid>-*.tmp`` files
    of :func:`atomic_write_bytes` and ``.NAME.staging-<pid>-*`` folders of
    :func:`staged_output_dir` whose process ``<pid>`` no longer runs on this machine. A live
    writer's files are never touched. Called before staging and where files are rewritten in
    place (model and checkpoint folders), not on every write. Returns what was removed."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        hit = _TEMPORARY.fullmatch(entry.name)
        if hit is None or (name is not None and hit["name"] != name):
            continue
        pid = int(hit["spid"] or hit["tpid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder plus ``os.replace``
    (the temp file ``.NAME.<pid>-*.tmp``, see :func:`remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def json_bytes(obj: Any) -> bytes:
    """``obj`` as pretty JSON text (UTF-8, trailing newline)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    return (text + "\n").encode("utf-8")


def save_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as pretty JSON (UTF-8), atomically."""
    return atomic_write_bytes(path, json_bytes(obj))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` in ``.npy`` format, atomically (no pickling)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an image as PNG, atomically.

    ``image``: (H, W) grey or (H, W, 3) **RGB** (converted to cv2's BGR here), uint8 or uint16.
    """
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"save_png needs uint8 or uint16, got {image.dtype}")
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - cv2 only fails on unsupported input
        raise PsinspectError(f"{path}: cannot encode PNG")
    return atomic_write_bytes(path, buf.tobytes())


#: largest array :func:`load_npy` reads by default (bytes of data); an 8k x 8k x 3 float64
#: normal map is 1.5 GiB
MAX_NPY_BYTES = 4 * 1024**3


def npy_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a ``.npy`` file from its header alone (the data is
    not read). Errors are :class:`PsinspectError` naming the file."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            return tuple(int(v) for v in shape), dtype, fh.tell()
    except FileNotFoundError:
        raise PsinspectError(f"{path}: file not found") from None
    except Exception as err:  # numpy raises ValueError/EOFError/SyntaxError for bad headers
        raise PsinspectError(f"{path}: not a readable .npy array ({err})") from None


def load_npy(path: str | os.PathLike[str], max_bytes: int = MAX_NPY_BYTES) -> np.ndarray:
    """Read a ``.npy`` file without unpickling; errors are :class:`PsinspectError`.

    The header is checked first, so object arrays, arrays of more than ``max_bytes`` and
    truncated files are refused before any memory is allocated for the data.
    """
    shape, dtype, offset = npy_header(path)
    if dtype.hasobject:
        raise PsinspectError(f"{path}: holds Python objects (would need unpickling); refused")
    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if nbytes > max_bytes:
        raise PsinspectError(
            f"{path}: array of shape {shape} {dtype} is {nbytes / 2**30:.1f} GiB, more than the "
            f"limit of {max_bytes / 2**30:.1f} GiB"
        )
    size = os.path.getsize(path)
    if size < offset + nbytes:
        raise PsinspectError(
            f"{path}: truncated .npy file ({size - offset} of {nbytes} data bytes present)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PsinspectError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError, MemoryError) as err:
        raise PsinspectError(f"{path}: not a readable .npy array ({err})") from None


def image_size_hw(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(H, W)`` of an image file read from its header only (no pixels decoded), or None when
    the header is not readable (callers then let the decoder report the problem)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            return int(h), int(w)
    except Image.DecompressionBombError as err:  # > 179 M pixels: far beyond any limit here
        raise PsinspectError(f"{path}: image too large to read ({err})") from None
    except Exception:  # unreadable or a format PIL does not know: the decoder will say
        return None


def check_output_dir(path: str | os.PathLike[str], force: bool) -> Path:
    """Refuse a non-empty existing folder unless ``force``; refuse a path that is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PsinspectError(f"{path}: output path exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise PsinspectError(f"{path}: output folder is not empty (use --force to overwrite)")
    return path


@contextlib.contextmanager
def staged_output_dir(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a staging folder next to ``path``; on success move its files into ``path``.

    If the body raises, the staging folder is removed and ``path`` is untouched, so a failed
    command leaves nothing half-written. Each file is moved with ``os.replace`` (atomic per file).
    The staging folder is ``.NAME.staging-<pid>-*``; those left by killed processes are removed
    (:func:`remove_stale_temporaries`).
    """
    out = check_output_dir(path, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, out.name)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for src in sorted(stage.rglob("*")):
            dst = out / src.relative_to(stage)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
