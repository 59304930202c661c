"""Output names of ``psinspect detect``: one per input, never shared."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from psinspect.detect import unique_names


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
