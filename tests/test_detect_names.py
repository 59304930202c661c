"""Output names of ``psinspect detect``: one per input, never shared."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from psinspect.detect import input_names, unique_names


def test_suffixes_do_not_take_another_inputs_name() -> None:
    assert unique_names(["x", "x", "x_2"]) == ["x", "x_3", "x_2"]
    assert unique_names(["a", "b", "a", "a"]) == ["a", "b", "a_2", "a_3"]


@given(st.lists(st.sampled_from(["x", "x_2", "x_3", "y", "x_2_2"]), max_size=12))
def test_names_are_unique_and_keep_unrepeated_ones(names: list[str]) -> None:
    out = unique_names(names)
    assert len(out) == len(names) and len(set(out)) == len(out)
    for n, o in zip(names, out, strict=True):
        assert o == n or o.startswith(n + "_")
    firsts = {n: out[names.index(n)] for n in names}
    assert all(firsts[n] == n for n in names)  # the first of each name keeps it


def test_a_shared_file_name_takes_its_folder(tmp_path) -> None:
    """``a/normals.npy b/normals.npy`` (the outputs of ``psinspect normals``) are named by
    their folders (they were normals and normals_2); other inputs keep their names."""
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "normals.npy").write_bytes(b"")
    (tmp_path / "x.npy").write_bytes(b"")
    paths = [tmp_path / "a" / "normals.npy", tmp_path / "x.npy", tmp_path / "b" / "normals.npy"]
    assert input_names(paths) == ["a_normals", "x", "b_normals"]
    (tmp_path / "d").mkdir()  # a link is named by its own folder, not its target's
    (tmp_path / "d" / "normals.npy").symlink_to(tmp_path / "c" / "normals.npy")
    assert input_names([tmp_path / "c" / "normals.npy", tmp_path / "d" / "normals.npy"]) == [
        "c_normals", "d_normals"]
    same = [tmp_path / "c" / "normals.npy", tmp_path / "c" / "normals.npy"]
    assert input_names(same) == ["normals", "normals_2"]  # one folder: suffixes
