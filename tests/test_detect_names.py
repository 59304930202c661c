"""Output names of ``psinspect detect``: one per input, never shared."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from psinspect.fileio import input_names, unique_names


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


def test_repeated_folder_names_take_as_many_folders_as_tell_them_apart(tmp_path) -> None:
    for sub in ("A", "B", "C/A", "r1/cap", "r2/cap"):
        (tmp_path / sub).mkdir(parents=True)
    for sub in ("A", "B", "C/A"):
        (tmp_path / sub / "normals.npy").write_bytes(b"")
    top = tmp_path.name
    paths = [tmp_path / "A" / "normals.npy", tmp_path / "B" / "normals.npy",
             tmp_path / "C" / "A" / "normals.npy"]
    assert input_names(paths) == [f"{top}_A_normals", "B_normals", "C_A_normals"]
    # capture folders of one name (two runs of render) are named by their parents too
    assert input_names([tmp_path / "r1" / "cap", tmp_path / "r2" / "cap"]) == [
        "r1_cap", "r2_cap"]


def test_an_error_names_its_input_once(tmp_path, monkeypatch, capsys) -> None:
    """An error raised while scoring names the failing input's path once, also when it is
    not the first input and inputs are processed in parallel (it named whichever input the
    progress bar had reached, and the map's output name as well)."""
    import numpy as np
    from _robust_util import run_cli

    good = np.zeros((64, 64, 3), np.float32)
    good[8:56, 8:56] = (0, 0, 1)
    tiny = np.zeros((64, 64, 3), np.float32)
    tiny[30:33, 30:33] = (0, 0, 1)
    np.save(tmp_path / "good.npy", good)
    np.save(tmp_path / "tiny.npy", tiny)
    code, _, err = run_cli(["detect", tmp_path / "good.npy", tmp_path / "tiny.npy",
                            "--scale", "0.1", "--jobs", "2", "-o", tmp_path / "out"],
                           monkeypatch, capsys)
    assert code == 2
    # (good.npy at scale 0.1 also gets the part-size warning: tests/test_part_size.py)
    assert [ln for ln in err.splitlines() if not ln.startswith("warning: ")] == [
        f"error: {tmp_path / 'tiny.npy'}: nothing of the object is left at --scale 0.1"], err
    assert not (tmp_path / "out").exists()


def test_an_error_is_named_even_when_the_name_is_in_the_message(tmp_path, monkeypatch,
                                                               capsys) -> None:
    """A capture folder 'a' given as 'a', refused by a variation model whose message names no
    input ("size 16x16 differs from the trained part's ..."): the message holds the letter
    a, and the input was left unnamed (a substring test)."""
    import numpy as np
    from _posed_part import posed_part
    from _robust_util import run_cli, tiny_capture

    from psinspect.fileio import save_npy

    monkeypatch.chdir(tmp_path)
    for i in range(5):
        save_npy(tmp_path / f"good{i}.npy", posed_part(noise_deg=0.5,
                                                       rng=np.random.default_rng(i))[0])
    code, _, err = run_cli(["train", *[f"good{i}.npy" for i in range(5)], "-o", "vm",
                            "--model", "variation"], monkeypatch, capsys)
    assert code == 0, err
    tiny_capture(tmp_path / "a")
    code, _, err = run_cli(["detect", "a", "--model", "vm", "-o", "out"], monkeypatch, capsys)
    assert code == 2
    assert err.strip().startswith("error: a: size 16x16 differs from the trained part's"), err


def test_names_do_not_depend_on_the_order_of_the_inputs(tmp_path) -> None:
    """``a/x.npy`` and ``a_x.npy`` are both ``a_x``: which one got ``a_x_2`` followed the
    order of the arguments, so a re-run with them in another order (into the same folder,
    --force) put one part's results under the other's name. The suffixes follow the paths."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = [tmp_path / "a" / "x.npy", tmp_path / "b" / "x.npy", tmp_path / "a_x.npy"]
    for f in files:
        f.write_bytes(b"")
    want = {files[0]: "a_x", files[1]: "b_x", files[2]: "a_x_2"}
    import itertools

    for perm in itertools.permutations(files):
        assert dict(zip(perm, input_names(list(perm)), strict=True)) == want, perm
