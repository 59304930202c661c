"""Atomic file output and output-folder handling.

Every artifact the project writes goes through here, so that a killed run leaves either the old
file or the new one, never a torn one, and a user's non-empty output folder is never overwritten
without ``force``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from psinspect.errors import PsinspectError
from psinspect.interrupts import held, note_written


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


def current_umask() -> int:
    """The process's umask. On Linux it is read from the ``Umask:`` line of
    ``/proc/self/status`` (no change of the umask, so no race with other threads creating
    files); elsewhere it is set and restored at once (``os.umask`` has no read-only form), to
    the restrictive 0o077 for that instant."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):  # no procfs, or a kernel without the line
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def _reason(err: OSError) -> str:
    """The system's words for ``err`` (``"No such file or directory"``), without the path."""
    return err.strerror or str(err)


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (a file where a folder
    is needed), else None."""
    for parent in path.parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


def _cannot_create(out: Path, err: OSError, what: str = "the output folder") -> PsinspectError:
    """The one-line error for a folder ``out`` (or ``what`` for it) that cannot be created."""
    blocker = _file_in_the_way(out)
    reason = f"{blocker} is not a folder" if blocker is not None else _reason(err)
    return PsinspectError(f"{out}: cannot create {what} ({reason})")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder plus ``os.replace``
    (the temp file ``.NAME.<pid>-*.tmp``, see :func:`remove_stale_temporaries`).

    The file gets the mode a plain ``open()`` would give a new file, ``0o666 & ~umask``
    (``mkstemp`` alone would leave it 0o600). A folder or file that cannot be created or
    written is a :class:`PsinspectError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _cannot_create(path, err, "its folder") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp",
                                   dir=path.parent)
    except OSError as err:
        raise PsinspectError(f"{path}: cannot write ({_reason(err)})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise PsinspectError(f"{path}: cannot write ({_reason(exc)})") from None
        raise
    return path


def parse_json(text: str) -> Any:
    """``json.loads``, with what Python's parser refuses outside JSON syntax (nesting too deep
    for it: RecursionError; an integer of more digits than it converts: ValueError) raised as
    the :class:`json.JSONDecodeError` of other malformed JSON, which callers turn into
    one-line errors."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except ValueError as err:
        raise json.JSONDecodeError(str(err).split(";")[0], text, 0) from None


def read_json(path: str | os.PathLike[str]) -> Any:
    """:func:`parse_json` of the UTF-8 text of ``path``."""
    return parse_json(Path(path).read_text(encoding="utf-8"))


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


def image_mode(path: str | os.PathLike[str]) -> str | None:
    """An image file's pixel format as PIL names it from the header (``"RGB"``, ``"RGBA"``,
    ``"P"`` palette, ``"L"`` / ``"LA"`` / ``"I;16"`` grey, ...; 16-bit colour PNGs read as
    ``"RGB"`` / ``"RGBA"``), or None when the header is not readable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return str(im.mode)
    except Exception:  # unreadable: the decoder will say
        return None


def read_mask_image(path: str | os.PathLike[str]) -> np.ndarray | None:
    """A mask image (PNG or any format OpenCV reads; 8 or 16 bits, grey or colour) -> bool
    (H, W), set where any colour channel is non-zero; None when the file is missing or
    unreadable. An alpha channel is ignored (editors save masks fully opaque) unless the
    colours are one colour over the whole image and the alpha varies: then the mask is drawn
    in the alpha alone (a cut-out), and it is set where the alpha is non-zero."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        return None
    if raw.ndim == 3 and raw.shape[2] == 4:  # BGRA (OpenCV reads grey + alpha so too)
        colour, alpha = raw[..., :-1], raw[..., -1]
        if (colour == colour[:1, :1]).all() and alpha.min() != alpha.max():
            return alpha != 0
        raw = colour
    return (raw.reshape(*raw.shape[:2], -1) != 0).any(axis=2)


def input_names(paths: Sequence[Path]) -> list[str]:
    """Output names of detect's inputs: a file's stem or a folder's name; a name that several
    inputs share gets as many of its folders' names in front as tell it apart from the others
    (``a/normals.npy``, ``b/normals.npy`` -> ``a_normals``, ``b_normals``: the outputs of
    ``psinspect normals``; ``x/a/normals.npy`` beside ``y/a/normals.npy`` -> ``x_a_normals``,
    ``y_a_normals``; capture folders ``run1/cap``, ``run2/cap`` -> ``run1_cap``,
    ``run2_cap``); :func:`unique_names` settles the rest (``a/x.npy`` beside ``a_x.npy``: both
    ``a_x``), in the order of the inputs' paths, not of the arguments, so that the same inputs
    given in another order get the same names (``a_x`` for ``a/x.npy``, ``a_x_2`` for
    ``a_x.npy``)."""
    base = [p.stem if p.is_file() else p.name for p in paths]
    # the folders as given (a link's own folders, not its target's), nearest first
    folders = [Path(os.path.abspath(p)).parent.parts[::-1] for p in paths]
    out = []
    for i, b in enumerate(base):
        mine = folders[i]  # (the same input twice cannot be told apart by its folders)
        others = [f for f, c in zip(folders, base, strict=True) if c == b and f != mine]
        k = 0
        while any(o[:k] == mine[:k] for o in others):
            k += 1
        parts = [f for f in mine[:k][::-1] if f not in ("", "/")]
        out.append("_".join([*parts, b]) if others else b)
    order = sorted(range(len(paths)), key=lambda i: (os.path.abspath(paths[i]), i))
    named = unique_names([out[i] for i in order])
    for i, name in zip(order, named, strict=True):
        out[i] = name
    return out


def unique_names(names: list[str]) -> list[str]:
    """Make output names unique by suffixing ``_2``, ``_3`` ... to repeats; a suffixed name
    never takes a name that another input has or that was already given out (inputs ``x``,
    ``x``, ``x_2`` -> ``x``, ``x_3``, ``x_2``)."""
    taken = set(names)
    used: set[str] = set()
    out = []
    for n in names:
        name, k = n, 1
        while name in used or (k > 1 and name in taken):
            k += 1
            name = f"{n}_{k}"
        used.add(name)
        out.append(name)
    return out


def utc_timestamp() -> str:
    """The date and time records are stamped with: now in UTC (ISO 8601, seconds), or the
    time given by the ``SOURCE_DATE_EPOCH`` environment variable (seconds since 1970, the
    reproducible-builds convention), so that a rerun can give byte-identical outputs."""
    import datetime as dt

    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = (dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch.isdigit()
            else dt.datetime.now(dt.UTC))
    return when.isoformat(timespec="seconds")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file's bytes (read in chunks)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def check_output_dir(path: str | os.PathLike[str], force: bool,
                     inputs: Sequence[str | os.PathLike[str] | None] = (),
                     model_folder: bool = False, command: str | None = None,
                     part_folders: bool = False) -> Path:
    """Refuse a non-empty existing folder unless ``force``; refuse a path that is a file, and a
    folder that does not exist and cannot be created (under a file, a read-only or
    pseudo file system, no permission), so that commands fail before their slow part. With
    ``force``, also refuse a folder where an earlier run wrote one of the command's ``inputs``
    (files or folders it reads, or files inside them; None entries are skipped): replacing
    that run's files (:func:`staged_output_dir`) would delete them; and, unless the command
    writes a model folder (``model_folder``: train), a folder that holds a psinspect model or
    an interrupted training run (its files are not replaced by other commands' results, which
    would join them); and, for a ``command`` (``"detect"``, ...), a folder another psinspect
    command wrote (its :data:`WRITTEN_MANIFEST` names that command): ``--force`` replaces the
    same command's earlier results, never, say, a render's captures with a run's results. An
    input folder itself, or one holding an input file, is never an output folder (written
    files would join its images, or be read as maps next time); with ``part_folders`` (a
    command that reads an input folder as a folder of parts: detect, train, dataset, run) nor
    is a folder inside one (:func:`_holds_parts`): read again, it would be refused.

    A relative path starting with ``~`` (a home folder the shell did not expand, as after
    ``--out=``) is refused unless that folder exists here, instead of creating one named
    ``~``. Whether the folder can be made, or an existing one written, is tested by creating
    and at once removing an empty hidden folder ``.NAME.staging-<pid>-*`` where the first missing
    folder of ``path`` would go, or inside the existing folder."""
    path = Path(path)
    if path.parts and path.parts[0].startswith("=") and not Path(path.parts[0]).exists():
        raise PsinspectError(f"{path}: starts with '=' (a short option takes its value after "
                             "a space, as in -o PATH, or --out=PATH)")
    if path.parts and path.parts[0].startswith("~") and not Path(path.parts[0]).exists():
        raise PsinspectError(f"{path}: '{path.parts[0]}' was not expanded to a home folder (a "
                             "shell leaves it as it is after '=', as in --out=~/x): give the "
                             "full path, or the option and path apart (--out ~/x)")
    if path.exists() and not path.is_dir():
        raise PsinspectError(f"{path}: output path exists and is not a folder")
    if path.is_symlink() and not path.exists():  # (it failed after the work: "File exists")
        raise PsinspectError(f"{path}: is a link to {os.readlink(path)}, which does not exist: "
                             "create that folder or choose another output folder")
    # the input folders, and those holding input files (detect's score maps or defects' A_
    # maps beside the maps read would be read as maps next time)
    given = [Path(p) for p in inputs if p is not None]
    folders = {q.resolve() for q in given if q.is_dir()}
    holding = {q.parent.resolve() for q in given if q.is_file()}
    if path.is_dir() and path.resolve() in folders | holding:  # its files would mix with them
        raise PsinspectError(
            f"{path}: " + ("is an input folder of this command" if path.resolve() in folders
                           else "holds input files of this command") + ": choose another "
            "output folder")
    # nor a folder inside an input folder of parts (maps, captures): read again, that folder
    # would hold something that is not a part, and be refused (inside one capture folder, a
    # dataset or a model folder an output is nothing they read)
    inside = sorted(f for f in folders if part_folders and f in path.resolve().parents
                    and _holds_parts(f))
    if inside:
        raise PsinspectError(f"{path}: lies inside {inside[-1]}, an input folder of this "
                             "command, which it would then hold beside its parts: choose an "
                             "output folder outside it")
    if path.is_dir():
        # a killed run's staging folder inside it (an output folder on another file system
        # than its parent, see staged_output_dir) does not make it "not empty"
        remove_stale_temporaries(path, path.name)
        try:
            non_empty = any(path.iterdir())
        except OSError as err:
            raise PsinspectError(
                f"{path}: cannot read the output folder ({_reason(err)})") from None
        if non_empty and not force:
            raise PsinspectError(f"{path}: output folder is not empty (use --force to overwrite)")
        if non_empty and inputs:
            _check_inputs_kept(path, inputs)
        earlier = _manifest_command(path) if non_empty and command is not None else None
        if earlier is not None and earlier != command:
            raise PsinspectError(f"{path}: holds the output of 'psinspect {earlier}', which "
                                 f"--force does not replace with 'psinspect {command}' "
                                 "results: choose another output folder")
        if non_empty and not model_folder:
            from psinspect.modelstore import is_training_folder

            if is_training_folder(path):
                raise PsinspectError(f"{path}: holds a psinspect model (or an interrupted "
                                     "training run), which --force does not replace with "
                                     "other results: choose another output folder")
        try:  # (read-only, no permission: found now, not after the work)
            os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.staging-{os.getpid()}-", dir=path))
        except OSError as err:
            raise PsinspectError(
                f"{path}: cannot write the output folder ({_reason(err)})") from None
    else:
        _check_creatable(path)
    return path


def _holds_parts(folder: Path) -> bool:
    """Whether an input ``folder`` is read as a folder of parts (normal maps, capture folders,
    ``psinspect normals`` outputs), which refuses a sub-folder that is none of them: not a
    capture folder, a ``psinspect normals`` output, a dataset (``manifest.json``) or a model
    folder (``config.json``), whose sub-folders are not read."""
    from psinspect.capture import is_capture_folder
    from psinspect.normalmap import is_normals_folder

    return not (is_capture_folder(folder) or is_normals_folder(folder)
                or (folder / "manifest.json").is_file() or (folder / "config.json").is_file())


def _check_inputs_kept(out: Path, inputs: Sequence[str | os.PathLike[str] | None]) -> None:
    """Refuse ``--force`` into ``out`` when the files an earlier run wrote there (which it
    would remove) include one of ``inputs`` or a file inside an input folder."""
    reads = {Path(p).resolve() for p in inputs if p is not None}
    own, above = _previously_written(out)
    for rel in sorted(set(own or []) | above):
        f = (out / rel).resolve()
        hit = reads & {f, *f.parents}
        if hit:
            raise PsinspectError(f"{out}: --force would replace an earlier run's files there, "
                                 f"and {min(hit)} is an input of this one: write to another "
                                 "folder")


def _check_creatable(path: Path) -> None:
    """Raise :class:`PsinspectError` unless a folder can be made where the first missing folder
    of ``path`` (which does not exist) would go."""
    child = path
    for parent in path.parents:
        if os.path.lexists(parent):
            break
        child = parent
    else:  # pragma: no cover - a path's last parent ("/" or ".") exists
        return
    if not parent.is_dir():
        raise PsinspectError(
            f"{path}: cannot create the output folder ({parent} is not a folder)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{child.name}.staging-{os.getpid()}-", dir=parent))
    except OSError as err:
        raise _cannot_create(path, err) from None


#: hidden file in each folder :func:`staged_output_dir` fills: the files that run wrote there
WRITTEN_MANIFEST = ".psinspect-written.json"


def _manifest_command(folder: Path) -> str | None:
    """The command that wrote ``folder`` (its :data:`WRITTEN_MANIFEST`'s ``command``; None
    where it names none: written before 2026-12-02, or not by psinspect)."""
    try:
        command = read_json(folder / WRITTEN_MANIFEST).get("command")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return command if isinstance(command, str) else None


def _manifest_files(folder: Path) -> list[str] | None:
    """The relative paths :data:`WRITTEN_MANIFEST` of ``folder`` lists (None when it has none
    or it is not such a list); paths that are absolute or climb out of ``folder`` are dropped."""
    try:
        listed = read_json(folder / WRITTEN_MANIFEST).get("files")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    if not isinstance(listed, list):
        return None
    return [p for p in listed if isinstance(p, str) and p and not Path(p).is_absolute()
            and ".." not in Path(p).parts]


def _previously_written(out: Path) -> tuple[list[str] | None, set[str]]:
    """What psinspect wrote in ``out`` (relative paths): ``(own, above)``. ``own``: what
    ``out``'s :data:`WRITTEN_MANIFEST` lists (None without one: ``out`` was not written by
    psinspect, or by a version before 0.3); ``above``: the files under ``out`` that a folder
    above it lists (``out`` filled as part of a larger output, e.g. ``run``'s ``captures/``).
    Both may be replaced by a forced run; only ``own`` files are removed as stale."""
    own = _manifest_files(out)
    above: set[str] = set()
    absolute = Path(os.path.abspath(out))
    for parent in absolute.parents:
        listed = _manifest_files(parent)
        if listed is not None:
            prefix = absolute.relative_to(parent).as_posix() + "/"
            above.update(p[len(prefix):] for p in listed if p.startswith(prefix))
    return own, above


def _remove_stale_outputs(out: Path, old: list[str], new: set[str]) -> None:
    """Remove the plain files of ``old`` (an earlier run's :data:`WRITTEN_MANIFEST`) that this
    run did not write again (``new``), then their folders left empty. Links and anything not
    listed (the user's own files) are kept."""
    def through_link(rel: Path) -> bool:  # a folder on the way (below ``out``) is a link
        return any((out / p).is_symlink() for p in rel.parents if p != Path("."))

    folders = set()
    for rel in old:
        if rel in new or through_link(Path(rel)):
            continue
        f = out / rel
        if f.is_file() and not f.is_symlink():
            f.unlink()
            folders.update(p for p in Path(rel).parents if p != Path("."))
    for rel_dir in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if not (out / rel_dir).is_symlink() and not through_link(rel_dir):
            with contextlib.suppress(OSError):
                (out / rel_dir).rmdir()  # only if empty


def _put_manifest(stage: Path, out: Path, files: set[str], command: str | None) -> None:
    """Write ``out``'s :data:`WRITTEN_MANIFEST` listing ``files`` (and the ``command`` that
    wrote them, where given): made in ``stage``, then moved in, so that a kill leaves no
    temporary in ``out``."""
    doc: dict[str, Any] = {"files": sorted(files)}
    if command is not None:
        doc["command"] = command
    os.replace(save_json(stage / WRITTEN_MANIFEST, doc), out / WRITTEN_MANIFEST)


def _same_device(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` (links followed) lie on one file system."""
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return True  # (whatever fails here fails again, with its own message, when used)


@contextlib.contextmanager
def staged_output_dir(path: str | os.PathLike[str], force: bool = False,
                      inputs: Sequence[str | os.PathLike[str] | None] = (),
                      command: str | None = None) -> Iterator[Path]:
    """Yield a staging folder (next to ``path``, or inside it, see below); on success move its
    files into ``path``.

    If the body raises, the staging folder is removed and ``path`` is untouched, so a failed
    command leaves nothing half-written. Each file is moved with ``os.replace`` (atomic per file).
    The files moved in are listed in ``path``'s hidden :data:`WRITTEN_MANIFEST`; with ``force``,
    the files an earlier run listed there and this run did not write again are removed (after
    the new ones are in place), so no stale result of an earlier run stays beside the new ones,
    while files psinspect did not write are kept: a file this run would write over that the
    manifest does not list (say, a capture's own ``mask.png`` when ``normals`` writes into the
    capture folder) is a :class:`PsinspectError` before anything is moved (files a manifest of
    a folder above lists count as psinspect's for this, but are never removed as stale), and
    nothing is written or removed through a symbolic link.
    ``inputs``, ``command`` (recorded in the manifest): see :func:`check_output_dir`.
    The staging folder is ``.NAME.staging-<pid>-*`` beside ``path``, or inside it when ``path``
    is an existing folder on another file system than its parent; those left by killed
    processes are removed
    (:func:`remove_stale_temporaries`). Folders created in ``path`` get the mode of a plain
    ``mkdir``, ``0o777 & ~umask`` (not the staging folder's 0o700). A folder that cannot be
    created or filled is a :class:`PsinspectError`.
    """
    out = check_output_dir(path, force, inputs, command=command)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _cannot_create(out, err) from None
    # files are moved in by rename, which works within one file system: an existing output
    # folder on another one than its parent (a mount point, or a link to another disk) gets
    # the staging folder inside it
    home = out if out.is_dir() and not _same_device(out, out.parent) else out.parent
    remove_stale_temporaries(home, out.name)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-",
                                      dir=home))
    except OSError as err:
        raise _cannot_create(out, err, "the output folder" if not out.is_dir()
                             else f"a staging folder in {home}") from None
    try:
        yield stage
        try:
            out.mkdir(parents=True, exist_ok=True)
            listed, above = _previously_written(out)
            old = listed or []
            # a manifest at the top of the stage (a staged writer that filled the stage itself)
            # is superseded by this one
            staged = [p for p in sorted(stage.rglob("*")) if p.name != WRITTEN_MANIFEST
                      or p.parent != stage]
            written = {p.relative_to(stage).as_posix() for p in staged if not p.is_dir()}
            linked = sorted(r for r in written if any(
                (out / q).is_symlink() for q in Path(r).parents if q != Path(".")))
            if linked:  # never write through a link (it may lead to anyone's files)
                first = next(q for q in Path(linked[0]).parents[::-1][1:]
                             if (out / q).is_symlink())
                raise PsinspectError(f"{out / first}: is a symbolic link; psinspect does not "
                                     "write through links: remove it or choose another "
                                     "output folder")
            foreign = sorted(r for r in written - set(old) - above if os.path.lexists(out / r))
            if foreign:  # never replace a file psinspect did not write (e.g. an input)
                why = ("and psinspect did not write it (only its own earlier results are "
                       "replaced, even with --force)" if listed is not None or above else
                       f"and {out} has no list of the files psinspect wrote there "
                       f"({WRITTEN_MANIFEST}; folders written before psinspect 0.3 have none), "
                       "so it is kept, even with --force")
                raise PsinspectError(f"{out / foreign[0]}: exists {why}: move it away or "
                                     "choose another output folder")
            # listed before and after the moves, so a kill at any point leaves every file
            # psinspect wrote in the manifest; a Ctrl-C or SIGTERM waits until all are in
            # place (the output is then complete, and the console script says so)
            with held():
                _put_manifest(stage, out, set(old) | written, command)
                for src in staged:
                    dst = out / src.relative_to(stage)
                    if src.is_dir():
                        dst.mkdir(parents=True, exist_ok=True)
                    else:
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(src, dst)
                _remove_stale_outputs(out, old, written)
                _put_manifest(stage, out, written, command)
                # (one inside another command's staging folder, as run stages detect's and
                # evaluate's, is complete only when that folder is put in place in turn)
                if not any((hit := _TEMPORARY.fullmatch(part)) and hit["spid"]
                           for part in out.resolve().parts):
                    note_written(str(out))
        except OSError as err:
            raise PsinspectError(f"{out}: cannot write the output folder ({_reason(err)})"
                                 ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
