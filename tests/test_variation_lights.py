"""Variation model: light-choice sensitivity (split differences) in training and scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _posed_part import posed_part
from scipy import ndimage

from psinspect.errors import PsinspectError
from psinspect.models import create_model
from psinspect.models.variation import light_split_differences
from psinspect.render import default_lights, render_images

DENT = (40.0, 50.0, 3.0, 1.5)  # col, row, radius px, depth px (part coordinates)


def _dome(shape=(64, 64)):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    r2 = (rows - 31.5) ** 2 + (cols - 31.5) ** 2
    height = 6.0 * np.exp(-r2 / (2 * 18.0**2)).astype(np.float32)
    mask = r2 < 28.0**2
    return height, np.full(shape, 0.8, np.float32), mask


def _split_sd_deg(splits):
    return np.degrees(np.sqrt(np.mean(np.sum(splits**2, axis=-1), axis=0)))


def test_split_differences_are_small_for_lambertian_and_large_where_one_light_lies():
    height, albedo, mask = _dome()
    lights = default_lights(24, "diligent")
    images, _ = render_images(height, albedo, mask, lights, np.random.default_rng(0),
                              specular=0.0, shadows=False, noise=0.0, shot_noise=0.0)
    splits = light_split_differences(images, lights, mask, solver="ls")
    assert splits is not None and splits.shape == (2,) + mask.shape + (3,)
    assert splits.dtype == np.float32 and (splits[:, ~mask] == 0).all()
    sd = _split_sd_deg(splits)
    assert np.median(sd[mask]) < 0.2  # every light subset gives the same Lambertian normal
    # a highlight in one image only, in a patch: PS now depends on the choice of lights there
    patch = np.zeros(mask.shape, bool)
    patch[20:30, 20:30] = True
    images = images.copy()
    images[5][patch] += 0.5
    sd = _split_sd_deg(light_split_differences(images, lights, mask, solver="ls"))
    assert np.median(sd[patch]) > 3.0
    assert np.median(sd[mask & ~ndimage.binary_dilation(patch, iterations=2)]) < 0.2


def test_split_differences_need_enough_lights():
    height, albedo, mask = _dome()
    lights = default_lights(8, "diligent")
    images, _ = render_images(height, albedo, mask, lights, np.random.default_rng(0))
    assert light_split_differences(images, lights, mask) is None


def _fake_splits(mask, patch, deg, seed=0):
    """(2, H, W, 3) split differences of ``deg`` (random in-plane directions, like PS noise)
    inside ``patch`` and 0.1 deg elsewhere."""
    phi = np.random.default_rng(seed).uniform(0, 2 * np.pi, (2,) + mask.shape)
    size = np.radians(np.where(patch, deg, 0.1))
    d = np.zeros((2,) + mask.shape + (3,), np.float32)
    d[..., 0] = size * np.cos(phi)
    d[..., 1] = size * np.sin(phi)
    return np.where(mask[None, ..., None], d, 0.0).astype(np.float32)


def test_test_side_disagreement_down_weights_a_ps_failure_but_keeps_the_dent():
    good = posed_part()
    model = create_model("variation")
    model.fit([good] * 5, [])
    n, m = posed_part(dent=DENT)
    n = n.copy()
    patch = np.zeros(m.shape, bool)
    patch[50:56, 70:76] = True  # away from the dent
    assert not (patch & ~m).any()
    n[patch] = (0.0, -0.99, -0.14)  # a PS breakdown (flipped normal)
    n[patch] /= np.linalg.norm(n[patch], axis=1, keepdims=True)
    plain = model.score(n, m)
    assert plain.score[patch].max() > 10  # without the splits, a false alarm
    splits = _fake_splits(m, patch, 40.0)  # the halves of the capture disagree there
    res = model.score(n, m, light_splits=splits)
    near = ndimage.binary_dilation(patch, iterations=4)
    assert res.score[near].max() < 3.0
    assert res.unreliable[patch].all()
    clean, _ = posed_part()
    dent_px = m & (np.degrees(np.arccos(np.clip(np.sum(clean * n, axis=2), -1, 1))) > 2.0)
    dent_px &= ~near
    assert dent_px.sum() > 30
    assert (res.score[dent_px] > 3.0).mean() > 0.6


def test_test_side_variance_raises_the_spread_where_ps_is_sensitive():
    good = posed_part()
    model = create_model("variation", light_test_weight=1.0, split_zero_deg=0.0)
    model.fit([good] * 5, [])
    n, m = posed_part(dent=DENT)
    dented = model.score(n, m).score
    clean, _ = posed_part()
    dent_px = m & (np.degrees(np.arccos(np.clip(np.sum(clean * n, axis=2), -1, 1))) > 2.0)
    splits = _fake_splits(m, m, 10.0)  # PS sensitive to the light choice everywhere
    calm = model.score(n, m, light_splits=splits).score
    assert calm[dent_px].max() < 0.5 * dented[dent_px].max()
    # weight 0: the splits are ignored
    off = create_model("variation", light_test_weight=0.0, split_zero_deg=0.0)
    off.fit([good] * 5, [])
    np.testing.assert_allclose(off.score(n, m, light_splits=splits).score, dented, atol=1e-5)


def test_training_splits_widen_the_spread_only_where_given():
    good = posed_part()
    _, m = good
    patch = np.zeros(m.shape, bool)
    patch[40:60, 40:60] = True
    splits = _fake_splits(m, patch, 5.0)
    base = create_model("variation")
    base.fit([good] * 5, [])
    wide = create_model("variation", light_train_weight=1.0)
    wide.fit([good] * 5, [], light_splits=[splits] * 5)
    s0 = base.state_arrays()["spread_deg"]
    s1 = wide.state_arrays()["spread_deg"]
    inner = ndimage.binary_erosion(patch, iterations=4)
    # random per-pixel sensitivity: large at the finest scale, averaged down at coarser ones
    assert (s1[0, inner] > s0[0, inner] + 1.0).all()
    assert (s1[:, inner] > s0[:, inner] + 0.01).all()
    far = m & ~ndimage.binary_dilation(patch, iterations=12)
    assert np.abs(s1[:, far] - s0[:, far]).max() < 0.05


def test_bad_light_splits_are_refused():
    good = posed_part()
    model = create_model("variation")
    with pytest.raises(PsinspectError, match="light_splits"):
        model.fit([good] * 5, [], light_splits=[None] * 4)
    model.fit([good] * 5, [])
    n, m = good
    with pytest.raises(PsinspectError, match="light_splits"):
        model.score(n, m, light_splits=np.zeros((2, 10, 10, 3), np.float32))
    with pytest.raises(PsinspectError, match="split_zero_deg"):
        create_model("variation", split_full_deg=5.0, split_zero_deg=3.0)


def _good_part_files(folder):
    """Five good posed parts (a little turned, noisy) saved as good0..4.npy -> their paths."""
    rng = np.random.default_rng(3)
    files = []
    for i in range(5):
        n, _ = posed_part(angle_deg=rng.uniform(-2, 2), noise_deg=0.5, rng=rng)
        files.append(folder / f"good{i}.npy")
        np.save(files[-1], n)
    return files


def test_cli_detect_names_the_input_that_fails(tmp_path):
    from typer.testing import CliRunner

    from psinspect.cli import app, register_commands

    register_commands()
    files = _good_part_files(tmp_path)
    res = CliRunner().invoke(app, ["train", *map(str, files), "-o", str(tmp_path / "model"),
                                   "--model", "variation"])
    assert res.exit_code == 0, res.output
    n, m = posed_part(angle_deg=40.0)  # far outside the supported rotation range
    np.save(tmp_path / "turned.npy", n)
    res = CliRunner().invoke(app, ["detect", str(files[0]), str(tmp_path / "turned.npy"),
                                   "-o", str(tmp_path / "det"), "--model",
                                   str(tmp_path / "model")])
    assert isinstance(res.exception, PsinspectError), res.output
    assert str(res.exception).startswith(f"{tmp_path / 'turned.npy'}: the part is turned by")
    assert not (tmp_path / "det").exists() or not any((tmp_path / "det").iterdir())
    # --keep-going: the good part's results are written, the turned one is reported
    res = CliRunner().invoke(app, ["detect", str(files[0]), str(tmp_path / "turned.npy"),
                                   "-o", str(tmp_path / "det"), "--model",
                                   str(tmp_path / "model"), "--keep-going"])
    assert res.exit_code == 2, res.output
    verdicts = {s["name"]: s["verdict"] for s in json.loads(
        (tmp_path / "det" / "summary.json").read_text())["inputs"]}
    assert verdicts["turned"] == "error" and verdicts["good0"] in ("pass", "fail")
    assert (tmp_path / "det" / "good0_score.npy").is_file()


def _groove(normals, mask, angle_deg, tilt_deg, centre=(56.0, 48.0), half_width=1.2,
            length=30.0):
    """Normals with a thin V groove along image angle ``angle_deg`` (counter-clockwise as
    seen): the walls tilt by ``tilt_deg`` toward each other. Returns (normals, groove px)."""
    t = np.radians(angle_deg)
    rows, cols = np.mgrid[0:mask.shape[0], 0:mask.shape[1]].astype(np.float64)
    u, v = cols - centre[0], -(rows - centre[1])  # camera frame, y up
    along = u * np.cos(t) + v * np.sin(t)
    across = -u * np.sin(t) + v * np.cos(t)
    wall = mask & (np.abs(across) <= half_width) & (np.abs(along) <= length / 2)
    side = np.sign(across)
    direction = np.array([-np.sin(t), np.cos(t), 0.0])
    out = normals.astype(np.float64).copy()
    out[wall] -= np.radians(tilt_deg) * side[wall, None] * direction
    out[wall] /= np.linalg.norm(out[wall], axis=1, keepdims=True)
    return out.astype(np.float32), wall & (side != 0)


def test_line_filters_respond_at_the_groove_orientation():
    model = create_model("variation", line_orientations=8)
    n, m = posed_part()
    grooved, wall = _groove(n, m, 45.0, 4.0)
    resid = np.degrees(grooved - n) * m[..., None]
    sq = model._filtered_sq(resid.astype(np.float32), m)
    lines = sq[len(model.scales_px):, wall].mean(axis=1)  # orientations 0, 22.5, 45, ...
    assert int(np.argmax(lines)) == 2
    assert lines[2] > 4 * lines[6]  # perpendicular to the groove: walls cancel


def test_line_filters_find_a_faint_groove_in_noise():
    rng = np.random.default_rng(5)
    train = [posed_part(noise_deg=1.0, rng=rng) for _ in range(8)]
    n, m = posed_part(noise_deg=1.0, rng=rng)
    grooved, wall = _groove(n, m, 30.0, 2.5)
    far = m & ~ndimage.binary_dilation(wall, iterations=6)
    found = {}
    for lines in (0, 8):
        model = create_model("variation", line_orientations=lines)
        model.fit(train, [])
        s = model.score(grooved, m).score
        found[lines] = (s[wall] > np.quantile(s[far], 0.999)).mean()
    assert found[8] > found[0] + 0.1
    assert found[8] > 0.6


def test_native_spread_covers_resampling_at_a_sharp_design_feature():
    """A sharp feature every part has (a 1.2 px pit of the design) moves by sub-pixel poses:
    the template, resampled into the test map's grid, is blurred there. Estimating the spread
    in each training map's own grid (as scoring compares) keeps clean parts clean."""
    rng = np.random.default_rng(2)

    def pose():
        return posed_part(angle_deg=rng.uniform(-4, 4), shift=tuple(rng.uniform(-3, 3, 2)),
                          dent=(40.0, 50.0, 1.2, 1.0), noise_deg=0.2, rng=rng)

    train = [pose() for _ in range(8)]
    tests = [pose() for _ in range(4)]
    peaks = {}
    for native in (False, True):
        model = create_model("variation", native_spread=native)
        model.fit(train, [])
        peaks[native] = max(float(model.score(*t).score.max()) for t in tests)
    assert peaks[True] < 3.0 < peaks[False]


def test_cli_train_names_the_map_it_cannot_align(tmp_path):
    """It said "training map 5: the part is rotated ..."."""
    from typer.testing import CliRunner

    from psinspect.cli import app, register_commands

    register_commands()
    files = _good_part_files(tmp_path)
    np.save(tmp_path / "turned.npy", posed_part(angle_deg=40.0)[0])
    res = CliRunner().invoke(app, ["train", *map(str, files), str(tmp_path / "turned.npy"),
                                   "-o", str(tmp_path / "model"), "--model", "variation"])
    assert isinstance(res.exception, PsinspectError), res.output
    assert str(res.exception).startswith("turned: the part is turned by"), str(res.exception)
