"""A part scores as it would alone, whatever else the map holds: several separate objects
(parts side by side, stray specks of a mask) are each scored on their own window, and a part
too large to score whole is tiled from its own corner, not the map's. One window around all
objects scored a clean casting 37 times higher, and failed it, for a 3 x 3 speck 400 px away
(a walkthrough, bundled model); a tiled part scored differently 500 px further right."""

from __future__ import annotations

import numpy as np
import pytest

from psinspect.render import render_dataset


def _part(tmp_path, seed: int = 3, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A rendered clean part's PS normals and mask, cropped to its bounding box."""
    from psinspect.capture import load_capture
    from psinspect.stereo import run_photometric_stereo

    (cap,) = render_dataset(tmp_path / f"c{seed}", 1, defect_rate=0.0, seed=seed, size=size,
                            lights=8)
    res = run_photometric_stereo(load_capture(cap), "robust")
    m = np.linalg.norm(res.normals, axis=-1) > 0
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return res.normals[box].astype(np.float32), m[box]


def _placed(normals: np.ndarray, mask: np.ndarray, shape: tuple[int, int],
            at: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    n = np.zeros((*shape, 3), np.float32)
    m = np.zeros(shape, bool)
    h, w = mask.shape
    n[at[0]:at[0] + h, at[1]:at[1] + w] = normals
    m[at[0]:at[0] + h, at[1]:at[1] + w] = mask
    return n, m


@pytest.mark.parametrize("model_name", ["geometric", "bundled"])
def test_a_part_scores_as_alone_beside_a_speck_and_another_part(tmp_path, model_name) -> None:
    from psinspect.detect import detect_map
    from psinspect.models import create_model
    from psinspect.modelstore import ModelBundle, default_model_dir, load_model_dir

    bundle = (load_model_dir(default_model_dir()) if model_name == "bundled"
              else ModelBundle(create_model("geometric"), threshold=2.0, image_threshold=3.0))
    part, pmask = _part(tmp_path)
    other, omask = _part(tmp_path, seed=4)
    h, w = pmask.shape
    alone = detect_map(bundle, *_placed(part, pmask, (h + 80, w + 80), (40, 40)))
    n, m = _placed(part, pmask, (h + 80, w + 400 + other.shape[1]), (40, 40))
    n[60:63, w + 300:w + 303] = [0.0, 0.0, 1.0]  # a 3 x 3 speck 260 px to the right
    m[60:63, w + 300:w + 303] = True
    n[40:40 + omask.shape[0], w + 360:w + 360 + omask.shape[1]][omask] = other[omask]
    m[40:40 + omask.shape[0], w + 360:w + 360 + omask.shape[1]] |= omask
    crowded = detect_map(bundle, n, m)
    own = crowded.score[:h + 80, :w + 80]
    if model_name == "geometric":  # (no per-map step: the very same scores)
        np.testing.assert_array_equal(own, alone.score)
    else:  # geo-seg divides the map's scores by one level of all its objects' pixels (its
        # image score is taken before): the same scores up to that one factor
        k = crowded.image_scale / alone.image_scale
        assert 0.5 < k < 2
        np.testing.assert_allclose(own * k, alone.score, rtol=1e-4, atol=1e-5)
    # the crowded map's image score is the worst of its objects'
    assert crowded.image_score >= alone.image_score - 1e-6
    if model_name == "geometric":  # and the part's regions are its own
        for r in alone.regions:
            assert any(c == r for c in crowded.regions)


def test_a_tiled_part_scores_the_same_wherever_it_lies(tmp_path) -> None:
    """A model that scores objects whole up to a size (here 40 x 40 px, geometric's own is
    4096 x 4096) tiles a larger one from the part's own corner: moved in the map, the same
    scores."""
    from psinspect.detect import score_map
    from psinspect.models import create_model

    model = create_model("geometric")
    model.max_whole_pixels = 40 * 40
    part, pmask = _part(tmp_path)
    h, w = pmask.shape
    assert h * w > 2 * model.max_whole_pixels
    here = score_map(model, *_placed(part, pmask, (h + 10, w + 10), (0, 0)))
    there = score_map(model, *_placed(part, pmask, (h + 60, w + 90), (37, 61)))
    assert here.info.get("tiled") and there.info.get("tiled")
    np.testing.assert_array_equal(there.score[37:37 + h, 61:61 + w], here.score[:h, :w])


def test_a_part_cut_by_the_frame_warns(tmp_path) -> None:
    """A part cut off by the map's edge: its scores near the cut changed (a walkthrough)
    without a word; a part with a margin, or touching the edge at a few pixels, gets none."""
    from psinspect.detect import MAX_EDGE_PX, edge_note

    part, pmask = _part(tmp_path)
    h, w = pmask.shape
    assert edge_note(_placed(part, pmask, (h + 20, w + 20), (10, 10))[1]) is None
    cut = _placed(part, pmask, (h + 20, w + 10), (10, 0))[1][:, w // 3:]  # left third cut off
    note = edge_note(cut)
    assert note is not None and note.startswith(
        f"the part touches the map's edge over {int(cut[:, 0].sum())} px: if the frame cuts "
        "it off there, scores near the cut may not hold")
    few = np.zeros((40, 40), bool)
    few[10:20, 0:10] = True
    few[10:10 + MAX_EDGE_PX // 2, 0] = True
    assert edge_note(few) is None
    assert edge_note(np.ones((40, 40), bool)) is None  # all object: said when read
    # cropped to its bounding box (touching all four edges): a whole part, no warning
    tight = _placed(part, pmask, (h, w), (0, 0))[1]
    assert all(side.any() for side in (tight[0], tight[-1], tight[:, 0], tight[:, -1]))
    assert edge_note(tight) is None
