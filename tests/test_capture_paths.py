"""Image entries of a capture must be distinct files inside the capture folder.

An uploaded zip is loaded through :func:`psinspect.capture.load_capture`; a ``filenames.txt``
entry that is absolute, climbs out with ``..`` or follows a link out of the folder would let it
read any image on the server's disk (and dodge the size limits checked on the extracted folder).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _robust_util import error_lines, run_cli, tiny_capture

from psinspect.app import load_inspection_input
from psinspect.capture import load_capture
from psinspect.errors import PsinspectError


def _set_entry(cap: Path, line: int, entry: str) -> None:
    """Replace the 0-based ``line`` of ``cap/filenames.txt`` by ``entry``."""
    names = (cap / "filenames.txt").read_text().splitlines()
    names[line] = entry
    (cap / "filenames.txt").write_text("\n".join(names) + "\n")


@pytest.fixture
def cap_and_outside(tmp_path: Path) -> tuple[Path, Path]:
    """A 6-light capture ``tmp_path/cap`` and an image ``tmp_path/other/secret.png`` outside it."""
    cap = tiny_capture(tmp_path / "cap", k=6, size=16)
    (tmp_path / "other").mkdir()
    shutil.copy(cap / "002.png", tmp_path / "other" / "secret.png")
    return cap, tmp_path / "other" / "secret.png"


OUTSIDE_ENTRIES = {
    "absolute": lambda secret: str(secret),
    "dotdot": lambda secret: "../other/secret.png",
    "dotdot inside a subpath": lambda secret: "sub/../../other/secret.png",
    "dotdot to a sibling with the folder's name prefix": lambda secret: "../cap2/002.png",
    "the folder itself": lambda secret: ".",
}


@pytest.mark.parametrize("entry", OUTSIDE_ENTRIES.values(), ids=OUTSIDE_ENTRIES.keys())
def test_entry_outside_the_folder_refused(cap_and_outside: tuple[Path, Path], entry) -> None:
    cap, secret = cap_and_outside
    shutil.copytree(cap, cap.parent / "cap2")
    name = entry(secret)
    _set_entry(cap, 1, name)
    with pytest.raises(PsinspectError, match=r"filenames\.txt: image entry .* is outside the "
                                             r"capture folder") as err:
        load_capture(cap)
    assert repr(name) in str(err.value) and "\n" not in str(err.value)


def test_link_out_of_the_folder_refused(cap_and_outside: tuple[Path, Path]) -> None:
    cap, secret = cap_and_outside
    (cap / "002.png").unlink()
    os.symlink(secret, cap / "002.png")
    with pytest.raises(PsinspectError, match=r"filenames\.txt: image entry '002\.png' is outside"):
        load_capture(cap)
    # the plain layout (no filenames.txt) follows the same rule
    (cap / "filenames.txt").unlink()
    with pytest.raises(PsinspectError, match=r"cap: image entry '002\.png' is outside"):
        load_capture(cap)


def test_entry_with_nul_byte_refused(cap_and_outside: tuple[Path, Path]) -> None:
    cap, _ = cap_and_outside
    _set_entry(cap, 2, "003\x00.png")
    with pytest.raises(PsinspectError, match=r"filenames\.txt: image entry .* not a valid path"):
        load_capture(cap)


def test_entries_inside_the_folder_accepted(cap_and_outside: tuple[Path, Path]) -> None:
    cap, _ = cap_and_outside
    want = load_capture(cap).images
    (cap / "imgs").mkdir()
    (cap / "001.png").rename(cap / "imgs" / "001.png")
    _set_entry(cap, 0, "imgs/001.png")
    _set_entry(cap, 1, "./002.png")
    _set_entry(cap, 2, "imgs/../003.png")
    got = load_capture(cap)
    assert got.filenames[:3] == ["imgs/001.png", "./002.png", "imgs/../003.png"]
    np.testing.assert_array_equal(got.images, want)


@pytest.mark.parametrize(("entry", "message"), [
    ("001.png", r"image entry '001\.png' is listed twice"),
    ("./001.png", r"image entry '\./001\.png' is the same file as '001\.png'"),
])
def test_duplicate_entries_refused(cap_and_outside: tuple[Path, Path], entry: str,
                                   message: str) -> None:
    cap, _ = cap_and_outside
    _set_entry(cap, 3, entry)
    with pytest.raises(PsinspectError, match=r"filenames\.txt: " + message):
        load_capture(cap)


def test_cli_one_line_error(cap_and_outside: tuple[Path, Path], monkeypatch, capsys) -> None:
    cap, secret = cap_and_outside
    _set_entry(cap, 0, str(secret))
    out = cap.parent / "out"
    code, _, err = run_cli(["normals", cap, "-o", out], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    errs = error_lines(err)
    assert len(errs) == 1 and re.search(r"filenames\.txt: image entry .*secret\.png", errs[0])
    assert not out.exists()


def _zip_of(folder: Path, filenames: str) -> bytes:
    """The files of ``folder`` under ``cap/`` in a zip, ``filenames.txt`` replaced."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.iterdir()):
            if p.name != "filenames.txt":
                zf.write(p, f"cap/{p.name}")
        zf.writestr("cap/filenames.txt", filenames)
    return buf.getvalue()


@pytest.mark.parametrize("outside", ["absolute", "dotdot"])
def test_uploaded_zip_cannot_read_images_elsewhere(cap_and_outside: tuple[Path, Path],
                                                   outside: str) -> None:
    """The web app's loader: a zip whose filenames.txt points at an image on the server."""
    cap, secret = cap_and_outside
    work = cap.parent / "work"
    work.mkdir()
    # the extraction folder is work/<tmp>/cap: climb to tmp_path, then into other/
    entry = str(secret) if outside == "absolute" else "../../../other/secret.png"
    names = (cap / "filenames.txt").read_text().splitlines()
    names[1] = entry
    upload = cap.parent / "upload.zip"
    upload.write_bytes(_zip_of(cap, "\n".join(names) + "\n"))
    with pytest.raises(PsinspectError, match=r"filenames\.txt: image entry .* is outside") as err:
        load_inspection_input(upload, work)
    assert str(work) not in str(err.value)  # no server path in the message
    assert list(work.iterdir()) == []  # extracted files removed
    # the same zip with the entry inside the folder loads
    upload.write_bytes(_zip_of(cap, (cap / "filenames.txt").read_text()))
    assert load_inspection_input(upload, work).mask.any()


def test_uploaded_zip_images_in_a_subfolder_count_against_the_limits(tmp_path: Path) -> None:
    """Images named in subfolders of the capture (allowed) are counted and size-checked like
    those beside filenames.txt."""
    from psinspect.app import Limits

    cap = tiny_capture(tmp_path / "cap", k=6, size=16)
    (cap / "imgs").mkdir()
    names = (cap / "filenames.txt").read_text().splitlines()
    for name in names:
        (cap / name).rename(cap / "imgs" / name)
    (cap / "filenames.txt").write_text("".join(f"imgs/{n}\n" for n in names))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(cap.rglob("*")):
            if f.is_file():
                zf.write(f, f"cap/{f.relative_to(cap).as_posix()}")
    upload = tmp_path / "upload.zip"
    upload.write_bytes(buf.getvalue())
    work = tmp_path / "work"
    assert load_inspection_input(upload, work).mask.any()
    with pytest.raises(PsinspectError, match=r"\d+ images, more than the limit of 3"):
        load_inspection_input(upload, work, limits=Limits(max_lights=3))
    with pytest.raises(PsinspectError, match="larger than the limit of 8"):
        load_inspection_input(upload, work, limits=Limits(max_image_side=8))
