"""Contracts of the capture-folder, light-range, normal-map, mask, defect-record, render and
CLI-list checks added since 679d9d3 that no test pinned down (found by mutation testing, session
37, auditor A): each test fails on a named one-line mutant of the source."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from _robust_util import error_lines, run_cli, small_scene

from psinspect.capture import lights_from_slant_tilt, load_capture, write_capture
from psinspect.errors import PsinspectError


@pytest.fixture
def base(tmp_path: Path) -> Path:
    imgs, lights, mask = small_scene()
    folder = write_capture(tmp_path / "base", imgs, lights, mask)
    load_capture(folder)  # the unedited capture loads
    return folder


def _variant(base: Path, name: str) -> Path:
    return Path(shutil.copytree(base, base.parent / name))


# --- capture.py ------------------------------------------------------------------------------

def test_float_images_at_zero_are_read_and_any_value_below_zero_is_refused(
        tmp_path: Path) -> None:
    """Kills: `raw.min() < 0` -> `<= 0` (a float capture on a black background refused) and
    -> `< -0.25` (a slightly negative image solved)."""
    imgs, lights, mask = small_scene()
    assert imgs.min() == 0.0
    folder = write_capture(tmp_path / "f", imgs, lights, mask)
    (folder / "filenames.txt").unlink()  # the plain layout: images in natural order of names
    for p in sorted(folder.glob("0*.png")):
        p.unlink()
    for k, im in enumerate(imgs):
        assert cv2.imwrite(str(folder / f"{k + 1:03d}.tif"), im)
    cap = load_capture(folder)
    np.testing.assert_allclose(cap.images, imgs, atol=1e-6)
    im = imgs[1].copy()
    im[0, 0] = -0.01
    assert cv2.imwrite(str(folder / "002.tif"), im)
    with pytest.raises(PsinspectError, match=r"002\.tif: image has values below 0 \(down to "
                                             r"-0\.01\): not linear light intensities"):
        load_capture(folder)


def test_identical_images_are_named_by_their_files_when_lights_are_selected(
        base: Path) -> None:
    """Kills: `_check_distinct_images(images, names, folder)` (every name instead of the
    selected lights' names: the wrong files named)."""
    f = _variant(base, "copy")
    shutil.copy(f / "003.png", f / "002.png")
    with pytest.raises(PsinspectError, match=r"images 002\.png and 003\.png are identical"):
        load_capture(f, select=[1, 2, 3, 4, 5])


def test_images_equal_on_a_sparse_sample_but_not_whole_are_kept(tmp_path: Path) -> None:
    """Images that differ in one pixel are not identical (the check once compared a sparse
    sample first; `np.array_equal(...)` -> `True` refused two images equal on its grid)."""
    imgs, lights, mask = small_scene(h=16, w=16)
    imgs[3] = imgs[2]
    imgs[3, 5, 5] = imgs[2, 5, 5] * 0.5  # (5, 5) is off the ::7 grid
    folder = write_capture(tmp_path / "near", imgs, lights, mask)
    assert load_capture(folder).images.shape == imgs.shape



def test_one_picture_for_two_lights_is_refused_whatever_their_intensities(
        tmp_path: Path) -> None:
    """A copied image file is refused in a capture with light intensities too (every
    DiLiGenT-layout and rendered capture): divided by two different intensities the copies
    no longer compared equal, and the capture was solved without a word."""
    imgs, lights, mask = small_scene(h=16, w=16)
    intens = np.linspace(0.8, 1.3, len(imgs))
    folder = write_capture(tmp_path / "cap", imgs, lights, mask, intensities=intens)
    assert load_capture(folder).images.shape == imgs.shape
    shutil.copy(folder / "003.png", folder / "004.png")
    with pytest.raises(PsinspectError, match=r"images 003\.png and 004\.png are identical"):
        load_capture(folder)

def test_lights_files_in_another_case_are_refused_another_tools_json_is_not(
        base: Path) -> None:
    """Kills: the lights files left out of the case-variant check (`texts` of the intensities
    file alone) and a check by stem (`lights.json` beside the lights refused)."""
    f = _variant(base, "upper")
    (f / "light_directions.txt").rename(f / "Light_Directions.txt")
    with pytest.raises(PsinspectError, match=r"Light_Directions\.txt: named like "
                                             r"light_directions\.txt but not as psinspect"):
        load_capture(f)
    f = _variant(base, "two")
    shutil.copy(f / "light_directions.txt", f / "LIGHTS.txt")
    with pytest.raises(PsinspectError, match=r"LIGHTS\.txt: named like lights\.txt"):
        load_capture(f)
    f = _variant(base, "json")
    (f / "lights.json").write_text('{"another tool": true}')
    (f / "light_intensities.csv").write_text("1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_capture(f).num_lights == 6


@pytest.mark.parametrize("gamma", [0.1, 10.0])
def test_gamma_at_the_ends_of_its_range_is_accepted(base: Path, gamma: float) -> None:
    """Kills: `MIN_GAMMA <= gamma <= MAX_GAMMA` -> `<` (the documented ends refused)."""
    assert load_capture(base, gamma=gamma).num_lights == 6


@pytest.mark.parametrize("gamma", [0.09, 0.05, 10.5, 1000.0])
def test_gamma_outside_its_range_is_refused(base: Path, gamma: float) -> None:
    """Kills: the lower bound loosened to `0 < gamma` and the upper one to 1e5."""
    with pytest.raises(PsinspectError, match=r"--gamma must be a number between 0\.1 and 10 "):
        load_capture(base, gamma=gamma)


# --- stereo.py -------------------------------------------------------------------------------

def test_light_ranges_stop_at_light_100000() -> None:
    """Kills: `b > MAX_LIGHT_NUMBER` -> `b > MAX_LIGHT_NUMBER + 1`, and the bound raised."""
    from psinspect.stereo import MAX_LIGHT_NUMBER, light_ranges

    assert MAX_LIGHT_NUMBER == 100_000
    assert light_ranges("100000", "--x") == [99_999]
    assert light_ranges("99999-100000", "--x") == [99_998, 99_999]
    for spec in ("100001", "99999-100001"):
        with pytest.raises(PsinspectError, match=rf"^--x: '{spec}' goes past light 100000"):
            light_ranges(spec, "--x")



def test_repeated_light_ranges_are_refused_before_they_are_listed() -> None:
    """Ranges repeated past MAX_LIGHT_NUMBER lights in all are refused without listing them
    ('1-100000' given 100 times built a list of 10**7 lights, 0.5 GB, before any check)."""
    from psinspect.stereo import light_ranges

    assert len(light_ranges("1-50000,1-50000", "--x")) == 100_000
    for spec in ("1-50000,1-50000,1", ",".join(["1-100000"] * 100)):
        with pytest.raises(PsinspectError, match=r"^--x: names more than 100000 lights in all"):
            light_ranges(spec, "--x")

def test_one_light_named_twice_outside_the_capture_is_one_light() -> None:
    """Kills: `one = len(indices) == 1` in lights_named (a repeated light said as 'lights ...
    are')."""
    from psinspect.stereo import lights_named, parse_light_spec

    assert lights_named([12, 12]) == "light 13 is"
    assert lights_named([12, 13]) == "lights 13-14 are"
    with pytest.raises(PsinspectError, match=r"^--lights '1-3,11,11': light 11 is outside the "
                                             r"capture's lights 1-10$"):
        parse_light_spec("1-3,11,11", 10)


@pytest.mark.parametrize(("pixels", "said"), [
    (1, " (the mask marks only 1 pixel: is it the object's mask?)"),
    (2, " (the mask marks only 2 pixels: is it the object's mask?)"),
    (49, " (the mask marks only 49 pixels: is it the object's mask?)"),
    (50, "")])
def test_a_capture_without_light_names_a_mask_of_fewer_than_50_pixels(pixels: int,
                                                                      said: str) -> None:
    """The first refusal (the images do not change with the light) names a tiny mask too.
    Kills: `+ tiny` dropped from it, FEW_OBJECT_PIXELS lowered, `<` -> `<=`, and the singular
    for 2 pixels."""
    from psinspect.stereo import check_shading

    rng = np.random.default_rng(0)
    lights = lights_from_slant_tilt(rng.uniform(15, 45, 12), rng.uniform(0, 360, 12))
    mask = np.zeros((10, 10), bool)
    mask.flat[:pixels] = True
    with pytest.raises(PsinspectError) as err:
        check_shading(np.zeros((12, 10, 10), np.float32), lights, mask, "cap")
    msg = str(err.value)
    assert msg.startswith("cap: the images do not change with the light on the object")
    assert msg.endswith("far too short an exposure?" + said), msg


# --- normalmap.py ----------------------------------------------------------------------------

def test_normalize_into_out_zeroes_vectors_shorter_than_eps() -> None:
    """Kills: `np.copyto(out, 0.0, where=~(norm > eps))` dropped (a vector shorter than eps
    divided by eps instead of zeroed)."""
    from psinspect.normalmap import normalize, vector_length

    v = np.array([[[3e-13, 0, 4e-13], [0, 0, 0], [0, 3, 4]]], np.float32)
    out = np.full(v.shape, np.nan, np.float32)
    got = normalize(v, length=vector_length(v), out=out)
    assert got is out
    np.testing.assert_array_equal(out, np.array([[[0, 0, 0], [0, 0, 0], [0, 0.6, 0.8]]],
                                                  np.float32))
    np.testing.assert_array_equal(out, normalize(v))


# --- fileio.py -------------------------------------------------------------------------------

def test_an_opaque_mask_of_one_colour_is_read_from_its_colour(tmp_path: Path) -> None:
    """Kills: `alpha.min() != alpha.max()` dropped (an all-black opaque RGBA mask, a good
    part's M_defect.png, read as the whole image)."""
    from psinspect.fileio import read_mask_image

    for colour, want in ((0, False), (255, True)):
        img = np.full((8, 8, 4), colour, np.uint8)
        img[..., 3] = 255
        assert cv2.imwrite(str(tmp_path / "m.png"), img)
        got = read_mask_image(tmp_path / "m.png")
        assert got.shape == (8, 8) and (got == want).all()


def test_a_cut_out_mask_keeps_its_semi_transparent_pixels(tmp_path: Path) -> None:
    """Set where the alpha is non-zero (kills: `alpha != 0` -> `alpha == 255`, which dropped a
    cut-out's anti-aliased edge)."""
    from psinspect.fileio import read_mask_image

    img = np.zeros((8, 8, 4), np.uint8)
    img[2:6, 2:6, 3] = 255
    img[2, 2:6, 3] = 128  # a soft edge
    assert cv2.imwrite(str(tmp_path / "m.png"), img)
    want = np.zeros((8, 8), bool)
    want[2:6, 2:6] = True
    np.testing.assert_array_equal(read_mask_image(tmp_path / "m.png"), want)


# --- defects.py ------------------------------------------------------------------------------

@pytest.mark.parametrize(("records", "said"), [
    ([{"type": "dent", "level": 3}], "record 1: level 3 is not a text"),
    ([{"severity": True}], "record 1: severity True is not a finite number"),
    ([{"severity": float("nan")}], "record 1: severity nan is not a finite number"),
    ([{}, {"bbox": [0, 0, 4, 4, 5]}],
     "record 2: bbox [0, 0, 4, 4, 5] is not four numbers [x0, y0, x1, y1]"),
    ([{"bbox": [0, 0, "4", 4]}],
     "record 1: bbox [0, 0, '4', 4] is not four numbers [x0, y0, x1, y1]")])
def test_malformed_defect_records_are_named(records: list, said: str) -> None:
    """Kills: the level left unchecked, severity checked by type (True, NaN accepted), a bbox
    of 4 or more values, a bbox of non-numbers."""
    from psinspect.defects import defect_records_problem

    assert defect_records_problem(records) == said


def test_well_formed_defect_records_pass() -> None:
    """Null records (a clean item, an older manifest) and a severity given as a text (a level's
    name) are well formed (kills: null refused, a text severity refused)."""
    from psinspect.dataset import check_manifest
    from psinspect.defects import defect_records_problem

    assert defect_records_problem(None) is None
    assert defect_records_problem([{"type": "dent", "level": "high", "severity": "high",
                                    "bbox": [0, 0, 4.5, 4]}, {"type": None}]) is None
    check_manifest(_manifest())  # an item without "defects"


# --- dataset.py ------------------------------------------------------------------------------

def _manifest(**surface: object) -> dict:
    return {"format": "psinspect-dataset", "version": 1,
            "surfaces": {"a": {"role": "train", **surface}, "b": {"role": "test"}},
            "items": [{"name": "N_a", "file": "N_a.npy", "surface": "a",
                       "split": "train-clean"}]}


@pytest.mark.parametrize("said", [["fine", 3], "a text", {"a": "b"}])
def test_manifest_surface_warnings_must_be_a_list_of_texts(said: object) -> None:
    """Kills: either half of `isinstance(said, list) and all(isinstance(w, str) ...)`."""
    from psinspect.dataset import check_manifest

    check_manifest(_manifest(warnings=["a text"]))
    with pytest.raises(PsinspectError, match=r"^manifest surface a: warnings must be a list of "
                                             r"texts, got "):
        check_manifest(_manifest(warnings=said))


def test_a_folder_of_captures_names_sub_folders_of_upper_case_images_and_cuts_the_list(
        tmp_path: Path) -> None:
    """Kills: the image suffix compared in its case (IMG1.PNG not seen) and the ', ...' after
    5 names given only after 6."""
    from psinspect.dataset import find_captures

    imgs, lights, mask = small_scene()
    write_capture(tmp_path / "parts" / "a", imgs, lights, mask)
    for name in ("b", "c", "d", "e", "f", "g"):
        (tmp_path / "parts" / name).mkdir()
        (tmp_path / "parts" / name / "IMG1.PNG").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"left out: b, c, d, e, f, \.\.\.$"):
        assert [p.name for p in find_captures([tmp_path / "parts"])] == ["a"]
    for name in ("c", "d", "e", "f", "g"):
        shutil.rmtree(tmp_path / "parts" / name)
    with pytest.warns(UserWarning, match=r"left out: b$"):
        find_captures([tmp_path / "parts"])


# --- render.py -------------------------------------------------------------------------------

def test_render_bounds_parts_instances_and_defects_per_part(tmp_path: Path) -> None:
    """Kills: --parts, --instances and --max-defects upper bounds loosened (10001 parts, 10001
    instances, 101 defects accepted). Each call also has a bad later argument, so that a mutant
    fails at once instead of rendering."""
    from psinspect.render import render_dataset, render_instances

    with pytest.raises(PsinspectError, match=r"^--parts must be between 1 and 10000, got "
                                             r"10001$"):
        render_dataset(tmp_path / "p", 10001, defect_rate=2.0)
    with pytest.raises(PsinspectError, match=r"^--instances must be between 1 and 10000, got "
                                             r"10001$"):
        render_instances(tmp_path / "i", 10001, defect_rate=2.0)
    with pytest.raises(PsinspectError, match=r"^--max-defects must be between 1 and 100, got "
                                             r"101$"):
        render_dataset(tmp_path / "d", 1, defect_rate=0.5, max_defects=101,
                       families=["no-such-family"])
    with pytest.raises(PsinspectError, match=r"unknown|no-such-family"):  # 100 is allowed
        render_dataset(tmp_path / "d", 1, defect_rate=0.5, max_defects=100,
                       families=["no-such-family"])
    assert not any(tmp_path.iterdir())


# --- cli -------------------------------------------------------------------------------------

def test_defects_per_image_is_at_most_100(tmp_path: Path, monkeypatch, capsys) -> None:
    """Kills: the --per-image upper bound loosened (101 accepted; the input is missing, so a
    mutant fails at once)."""
    code, _, err = run_cli(["defects", tmp_path / "missing.npy", "-o", tmp_path / "out",
                            "--per-image", "101"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        "error: --per-image must be between 1 and 100, got 101"], err


@pytest.mark.parametrize(("command", "option"), [
    ("dataset", "--holdout"), ("dataset", "--augment"), ("run", "--holdout")])
def test_an_empty_name_list_is_refused(tmp_path: Path, monkeypatch, capsys, command: str,
                                       option: str) -> None:
    """`--holdout ','` fell back to no held-out surfaces (dataset) or to the default (run);
    `--augment ','` to no augmentation. Kills: run's holdout split by hand again, dataset's
    empty lists read as 'none'."""
    import psinspect.pipeline

    def no_run(*args, **kwargs):
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(psinspect.pipeline, "run_pipeline", no_run)
    args = ([command, tmp_path / "cap"] if command == "dataset" else [command])
    code, _, err = run_cli([*args, option, ",", "-o", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {option} ',': names nothing (give comma-separated names)"], err
    assert not (tmp_path / "out").exists()


def test_defect_records_null_read_as_none(tmp_path: Path) -> None:
    """``"defects": null`` in a defects.json is read as no records, a list as annotated."""
    from psinspect.defects import read_defect_records

    p = tmp_path / "defects.json"
    p.write_text('{"defects": null}')
    assert read_defect_records(p) == []
    p.write_text('{"defects": [{"type": "dent", "level": "low", "severity": 0.2}]}')
    assert read_defect_records(p)[0]["type"] == "dent"
