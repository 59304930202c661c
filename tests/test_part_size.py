"""Parts imaged much finer or coarser than a model's training parts: the bundled model failed
clean parts half the size of its training parts, silently. Training records its parts' size,
and detect and the web app warn where a part is far outside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _robust_util import run_cli, sphere_normals

from psinspect.detect import PART_SIZE_SLACK, part_size_note
from psinspect.fileio import save_npy
from psinspect.modelstore import PART_SIZE_KEY, load_model_dir
from psinspect.normalmap import part_size_px


def test_part_size_is_the_diameter_of_a_disc_of_its_area() -> None:
    yy, xx = np.mgrid[:201, :201]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 <= 80 ** 2
    assert part_size_px(disc) == pytest.approx(160, rel=0.01)
    square = np.zeros((100, 100), bool)
    square[10:60, 20:70] = True
    assert part_size_px(square) == pytest.approx(2 * 50 / np.sqrt(np.pi))
    assert part_size_px(np.rot90(square)) == part_size_px(square)


def test_the_bundled_model_warns_about_a_part_far_from_its_training_size(
        tmp_path: Path, monkeypatch, capsys) -> None:
    bundle = load_model_dir()
    sizes = bundle.config["training"][PART_SIZE_KEY]
    assert sizes["min"] < sizes["median"] < sizes["max"]
    small, m_small = sphere_normals(64)  # ~52 px across
    big, m_big = sphere_normals(400)  # ~330 px across
    ok, m_ok = sphere_normals(200)  # ~165 px
    low, high = sizes["min"], sizes["max"] * PART_SIZE_SLACK
    assert part_size_px(m_small) < low and part_size_px(m_big) > high
    assert low < part_size_px(m_ok) < high
    assert part_size_note(bundle, m_ok) is None
    # a little smaller than the smallest training part (4 of 6 clean parts 85-113 px across
    # failed the bundled model), a little larger than the largest: warned, not warned
    per_px = part_size_px(sphere_normals(100)[1]) / 100  # (across per sphere_normals size)
    assert part_size_note(bundle, sphere_normals(round(sizes["min"] * 0.95 / per_px))[1])
    assert part_size_note(bundle, sphere_normals(round(sizes["max"] * 1.3 / per_px))[1]) is None
    note = part_size_note(bundle, m_small)
    assert note is not None and note.startswith(
        f"the part is {part_size_px(m_small):.0f} px across, the model's training parts "
        f"{sizes['min']:.0f}-{sizes['max']:.0f} px: imaged this much coarser")
    assert f"resampled by about {sizes['median'] / part_size_px(m_small):.2g}" in note
    assert "finer" in part_size_note(bundle, m_big)
    assert part_size_note(bundle, m_small, scale=3.0) is None  # scaled into the range
    # a part so small that the largest --scale leaves it smaller than any training part: not
    # told that scale (a 9 px part was told to score at 4); one that 4 brings into the range
    # is told 4
    tiny, reach = sphere_normals(24)[1], sphere_normals(40)[1]
    assert part_size_px(tiny) * 4 < sizes["min"] < part_size_px(reach) * 4
    assert sizes["median"] / part_size_px(reach) > 4
    assert part_size_note(bundle, tiny).endswith(
        "(even resampled by 4, the most --scale allows, it stays smaller than the smallest of "
        "the model's training parts: image it finer or train a model on such parts)")
    assert "(score it resampled by about 4: detect --scale" in part_size_note(bundle, reach)
    save_npy(tmp_path / "small.npy", small)
    save_npy(tmp_path / "fine.npy", ok)
    code, _, err = run_cli(["detect", tmp_path / "small.npy", tmp_path / "fine.npy", "-o",
                            tmp_path / "d"], monkeypatch, capsys)
    assert code == 0, err
    assert f"warning: {tmp_path / 'small.npy'}: the part is" in err
    assert "fine.npy: the part is" not in err
    entries = json.loads((tmp_path / "d" / "summary.json").read_text())["inputs"]
    assert entries[0]["warnings"] == [note] and "warnings" not in entries[1]


def test_train_records_its_parts_size(tmp_path: Path) -> None:
    from psinspect.train import train_model

    files = []
    for i, size in enumerate((56, 64, 72, 80)):
        n, _ = sphere_normals(size)
        files.append(save_npy(tmp_path / f"s{i}.npy", n))
    train_model(files, tmp_path / "m", model_name="geometric", epochs=1)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    record = config["training"][PART_SIZE_KEY]
    trained = [part_size_px(sphere_normals(s)[1]) for s in (56, 64, 72, 80)]
    assert record["min"] >= round(min(trained), 1) and record["max"] <= round(max(trained), 1)
    assert record["min"] <= record["median"] <= record["max"]
