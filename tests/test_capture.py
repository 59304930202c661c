"""Capture folders: DiLiGenT and plain layouts, lights formats, radiometry, masks."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from _robust_util import small_scene

from psinspect.capture import (
    lights_from_slant_tilt,
    load_capture,
    natural_key,
    read_lights_file,
    write_capture,
)
from psinspect.errors import PsinspectError

DILIGENT = Path(__file__).resolve().parents[2] / "shared" / "data" / "diligent"


def test_lights_from_slant_tilt_convention() -> None:
    lt = lights_from_slant_tilt([0, 90, 90, 45], [123, 0, 90, 180])
    assert lt.shape == (4, 3) and lt.dtype == np.float32
    assert np.allclose(lt[0], [0, 0, 1], atol=1e-6)  # slant 0: at the camera
    assert np.allclose(lt[1], [1, 0, 0], atol=1e-6)  # tilt 0: from the right (+x)
    assert np.allclose(lt[2], [0, 1, 0], atol=1e-6)  # tilt 90: from above (+y)
    s = np.sqrt(0.5)
    assert np.allclose(lt[3], [-s, 0, s], atol=1e-6)
    assert np.allclose(np.linalg.norm(lt, axis=1), 1)


def test_write_then_load_roundtrip_grey(tmp_path: Path) -> None:
    imgs, lights, mask = small_scene()
    gt = np.zeros((*mask.shape, 3), np.float32)
    gt[mask] = (0, 0, 1)
    inten = np.linspace(0.5, 2.0, len(lights))
    out = write_capture(tmp_path / "cap", imgs, lights * 3.0, mask, intensities=inten,
                        normals_gt=gt)
    (out / "defect_mask.png").write_bytes(b"not an image")  # extra files are ignored
    cap = load_capture(out)
    assert cap.name == "cap" and cap.filenames[0] == "001.png" and cap.path == out
    assert cap.images.shape == imgs.shape and cap.images.dtype == np.float32
    np.testing.assert_allclose(cap.images, imgs / inten[:, None, None], atol=2e-5)
    np.testing.assert_allclose(cap.lights, lights, atol=1e-5)  # normalised
    assert (cap.mask == mask).all()
    np.testing.assert_array_equal(cap.normals_gt, gt)
    assert cap.light_indices.tolist() == list(range(len(lights)))


def test_colour_channels_divided_then_luma_weighted(tmp_path: Path) -> None:
    imgs, lights, mask = small_scene()
    rgb = np.stack([imgs, 0.5 * imgs, 0.25 * imgs], axis=-1)
    inten = np.tile([[1.0, 2.0, 4.0]], (len(lights), 1))
    write_capture(tmp_path / "c", rgb, lights, mask, intensities=inten)
    cap = load_capture(tmp_path / "c")
    # each channel / its intensity: R = imgs, G = imgs / 4, B = imgs / 16
    want = 0.299 * imgs + 0.587 * imgs / 4 + 0.114 * imgs / 16
    np.testing.assert_allclose(cap.images, want, atol=3e-5)
    cap2 = load_capture(tmp_path / "c", channel_weights=(1, 0, 0))
    np.testing.assert_allclose(cap2.images, imgs, atol=3e-5)


def test_grey_images_with_colour_intensities_use_their_luma(tmp_path: Path) -> None:
    """A mono camera under lights of stated RGB intensity: each grey image is divided by the
    luma-weighted intensity of its light, as a colour image's channels would be weighted."""
    imgs, lights, mask = small_scene()
    imgs = (0.9 * imgs).astype(np.float32)
    inten = np.tile([[1.0, 2.0, 4.0]], (len(lights), 1))
    inten[1] = [3.0, 1.0, 1.0]
    write_capture(tmp_path / "c", imgs, lights, mask, intensities=inten)
    cap = load_capture(tmp_path / "c")
    luma = inten @ np.array([0.299, 0.587, 0.114])  # 1.929 for (1, 2, 4), 1.598 for (3, 1, 1)
    np.testing.assert_allclose(cap.images, imgs / luma[:, None, None], atol=3e-5)


def test_gamma_linearises(tmp_path: Path) -> None:
    imgs, lights, mask = small_scene()
    write_capture(tmp_path / "g", imgs, lights, mask)
    cap = load_capture(tmp_path / "g", gamma=2.2)
    np.testing.assert_allclose(cap.images, np.power(imgs, 2.2), atol=5e-5)
    with pytest.raises(PsinspectError, match="--gamma"):
        load_capture(tmp_path / "g", gamma=0)


def test_select_reads_subset(tmp_path: Path) -> None:
    imgs, lights, mask = small_scene()
    write_capture(tmp_path / "s", imgs, lights, mask)
    cap = load_capture(tmp_path / "s", select=np.array([4, 0, 2]))
    assert cap.filenames == ["005.png", "001.png", "003.png"]
    np.testing.assert_allclose(cap.images[0], imgs[4], atol=2e-5)
    np.testing.assert_allclose(cap.lights[1], lights[0], atol=1e-6)
    assert cap.light_indices.tolist() == [4, 0, 2]


def _plain(tmp_path: Path, lights_text: str, name: str = "lights.txt",
           bits: int = 8, with_mask: bool = True) -> Path:
    imgs, _, mask = small_scene(k=4)
    folder = tmp_path / "plain"
    folder.mkdir()
    for i, im in enumerate(imgs):
        arr = (np.rint(im * 255).astype(np.uint8) if bits == 8
               else np.rint(im * 65535).astype(np.uint16))
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), arr)
    if with_mask:
        cv2.imwrite(str(folder / "mask.png"), mask.astype(np.uint8) * 255)
    (folder / name).write_text(lights_text)
    return folder


def test_plain_layout_xyz(tmp_path: Path) -> None:
    folder = _plain(tmp_path, "# x y z\n0 0 2\n1 0 1\n0 1 1\n-1 0 1  # left\n")
    cap = load_capture(folder)
    assert cap.filenames == [f"img_{i:02d}.png" for i in range(4)]
    assert np.allclose(cap.lights[0], [0, 0, 1]) and np.allclose(cap.lights[1], [2**-0.5, 0,
                                                                                2**-0.5])
    assert cap.images.max() <= 1.0 and cap.normals_gt is None


def test_plain_layout_slant_tilt_and_elevation(tmp_path: Path) -> None:
    text = "# format: slant_tilt\n30 0\n30 90\n30 180\n30 270\n"
    cap = load_capture(_plain(tmp_path, text, name="rig.txt", bits=16), lights_file="rig.txt")
    np.testing.assert_allclose(cap.lights, lights_from_slant_tilt([30] * 4, [0, 90, 180, 270]),
                               atol=1e-6)
    elev = tmp_path / "elev.txt"
    elev.write_text("# format: elevation_azimuth\n60 0\n60 90\n60 180\n60 270\n")
    np.testing.assert_allclose(read_lights_file(elev), cap.lights, atol=1e-6)


def test_plain_layout_natural_order_bom_and_lights_file(tmp_path: Path) -> None:
    """Images numbered without leading zeros pair with the lights in number order (img2 before
    img10); a lights file saved with a byte-order mark reads; the capture names its lights
    file."""
    imgs, lights, mask = small_scene(k=12)
    folder = tmp_path / "unpadded"
    folder.mkdir()
    for i, im in enumerate(imgs, start=1):
        cv2.imwrite(str(folder / f"img{i}.png"), np.rint(im * 255).astype(np.uint8))
    rows = "\n".join(" ".join(f"{v:.6f}" for v in lt) for lt in lights)
    (folder / "lights.txt").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    cap = load_capture(folder)
    assert cap.filenames == [f"img{i}.png" for i in range(1, 13)]
    np.testing.assert_allclose(cap.images, np.rint(imgs * 255) / 255, atol=1e-6)
    np.testing.assert_allclose(cap.lights, lights, atol=1e-5)
    assert cap.lights_file == folder / "lights.txt"
    # a defect ground truth beside the images is not a light image
    cv2.imwrite(str(folder / "M_defect.png"), np.zeros(imgs.shape[1:3], np.uint8))
    assert load_capture(folder).filenames == cap.filenames
    assert natural_key("a01b") < natural_key("a1c") and natural_key("x9") < natural_key("x10")
    assert sorted(["b", "a10", "a9", "A1"], key=natural_key) == ["A1", "a9", "a10", "b"]
    # letters regardless of case: images renamed by another tool still pair with their lights
    # (IMG2.PNG sorted before img1.png, and each image took another image's light)
    for i in range(2, 13, 2):
        (folder / f"img{i}.png").rename(folder / f"IMG{i}.PNG")
    assert load_capture(folder).filenames == [
        f"{'IMG' if i % 2 == 0 else 'img'}{i}.{'PNG' if i % 2 == 0 else 'png'}"
        for i in range(1, 13)]
    assert sorted(["b.png", "B.png"], key=natural_key) == ["B.png", "b.png"]  # (ties: as is)


def test_two_columns_without_header_refused(tmp_path: Path) -> None:
    f = tmp_path / "l.txt"
    f.write_text("30 0\n30 90\n30 180\n")
    with pytest.raises(PsinspectError, match=r"l\.txt.*header.*slant_tilt"):
        read_lights_file(f)
    f.write_text("# format: polar\n30 0\n")
    with pytest.raises(PsinspectError, match="unknown format"):
        read_lights_file(f)


def test_decimal_commas_refused_with_a_hint_and_comma_separated_values_read(
        tmp_path: Path) -> None:
    f = tmp_path / "l.txt"
    # a spreadsheet's export in a decimal-comma locale: "0,5 0,3 0,8" read as 6 values
    f.write_text("0,5 0,3 0,8\n0 0 1\n")
    with pytest.raises(PsinspectError, match=r"^\S*l\.txt: line 1 '0,5 0,3 0,8' has numbers "
                                             r"joined by commas .*decimal commas\?"):
        read_lights_file(f)
    # "45,5 30" under slant_tilt would have been read as the 3 numbers 45 5 30
    f.write_text("# format: slant_tilt\n45,5 30\n")
    with pytest.raises(PsinspectError, match="decimal commas"):
        read_lights_file(f)
    # commas as the only separators, or a comma and a space after each value: read as before
    for text in ("0,0.6,0.8\n0.6,0,0.8\n0,0,1\n", "0, 0.6, 0.8\n0.6, 0, 0.8\n0, 0, 1\n"):
        f.write_text(text)
        np.testing.assert_allclose(read_lights_file(f),
                                   [[0, 0.6, 0.8], [0.6, 0, 0.8], [0, 0, 1]], atol=1e-6)


@pytest.mark.parametrize(("text", "light", "z"), [
    ("0 0 1\n1 0 1\n0 -1 -1\n", 3, "-0.707"),  # pointing away from the camera
    ("0.5 0 1\n1 0 0\n", 2, "0.000"),  # in the image plane
    ("# format: slant_tilt\n30 0\n120 90\n", 2, "-0.500"),
    ("# format: slant_tilt\n30 0\n90 90\n", 2, "0.000"),  # cos 90 deg, rounded
    ("# format: elevation_azimuth\n60 0\n-10 90\n", 2, "-0.174"),
])
def test_lights_facing_away_from_the_camera_refused(tmp_path: Path, text: str, light: int,
                                                    z: str) -> None:
    f = tmp_path / "l.txt"
    f.write_text(text)
    with pytest.raises(PsinspectError, match=rf"l\.txt: light {light} has z = {z} <= 0.*"
                                             r"z toward the camera") as err:
        read_lights_file(f)
    assert "\n" not in str(err.value)


def test_negated_lights_refused_by_load_capture(tmp_path: Path) -> None:
    """All light vectors negated (the opposite sign convention): PS would give normals facing
    away from the camera everywhere; refused with the file named."""
    imgs, lights, mask = small_scene()
    folder = write_capture(tmp_path / "cap", imgs, lights, mask)
    (folder / "light_directions.txt").write_text(
        "\n".join(" ".join(f"{-v:.6f}" for v in row) for row in lights) + "\n")
    with pytest.raises(PsinspectError, match=r"light_directions\.txt: light 1 has z = .*<= 0.*"
                                             r"negate"):
        load_capture(folder)
    with pytest.raises(PsinspectError, match=r"light 1 has z = .*<= 0"):  # nor written
        write_capture(tmp_path / "cap2", imgs, -lights, mask)
    grazing = tmp_path / "grazing.txt"  # just in front of the image plane: accepted
    grazing.write_text("# format: slant_tilt\n89.9 0\n0 0\n")
    assert (read_lights_file(grazing)[:, 2] > 0).all()


def test_missing_mask_uses_non_black_pixels_with_warning(tmp_path: Path) -> None:
    folder = _plain(tmp_path, "0 0 1\n1 0 1\n0 1 1\n-1 0 1\n", with_mask=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cap = load_capture(folder)
    assert any("no mask.png;" in str(w.message) for w in caught)
    _, _, mask = small_scene(k=4)
    assert (cap.mask == mask).all()
    # a mask in another format is left out of the images but not read: the warning names it
    cv2.imwrite(str(folder / "mask.tif"), mask.astype(np.uint8) * 255)
    with pytest.warns(UserWarning, match=r"no mask\.png \(mask\.tif is not read: save the mask "
                                         r"as mask\.png\); using every non-black pixel"):
        assert load_capture(folder).filenames == [f"img_{i:02d}.png" for i in range(4)]


def test_diligent_layout_without_intensities_warns(tmp_path: Path) -> None:
    """A DiLiGenT-layout capture without its light_intensities.txt was solved with every light
    equally bright, silently: DiLiGenT's ball came out 18.9 deg off instead of 2.0."""
    imgs, lights, mask = small_scene(k=4)
    folder = write_capture(tmp_path / "cap", imgs, lights, mask)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_capture(folder)
    assert not any("light_intensities" in str(w.message) for w in caught)
    (folder / "light_intensities.txt").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_capture(folder)
    assert [str(w.message) for w in caught if "light_intensities" in str(w.message)] == [
        f"{folder}: no light_intensities.txt; every light taken as equally bright (a "
        "DiLiGenT-layout capture's lights differ: without their intensities the normals can "
        "be off by degrees)"]


@pytest.mark.skipif(not (DILIGENT / "catPNG").is_dir(),
                    reason=f"DiLiGenT data not found at {DILIGENT} (see shared/data/README.md)")
def test_diligent_layout() -> None:
    cap = load_capture(DILIGENT / "catPNG", select=np.arange(0, 96, 12))
    assert cap.images.shape[0] == 8 and cap.images.shape[1:] == cap.mask.shape
    assert cap.normals_gt is not None and cap.normals_gt.shape == (*cap.mask.shape, 3)
    assert np.allclose(np.linalg.norm(cap.lights, axis=1), 1, atol=1e-5)
    assert np.isfinite(cap.images).all() and cap.images[:, cap.mask].mean() > 0


def test_capture_fingerprint_changes_with_the_lights(tmp_path):
    """The same images with another light file are another capture (PS gives other normals):
    the fingerprint differs; the same files copied elsewhere give the same fingerprint."""
    import shutil

    from psinspect.capture import capture_fingerprint, write_capture
    from psinspect.render import default_lights

    imgs = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    mask = np.ones((16, 16), bool)
    a = write_capture(tmp_path / "a", imgs, default_lights(6), mask)
    b = write_capture(tmp_path / "b", imgs, default_lights(6, "ring"), mask)
    shutil.copytree(a, tmp_path / "a2")
    assert capture_fingerprint(a) == capture_fingerprint(tmp_path / "a2")
    assert capture_fingerprint(a) != capture_fingerprint(b)


def test_an_over_exposed_capture_is_warned_about(tmp_path: Path) -> None:
    """Images clipped at full scale bent the normals by degrees with no word (DiLiGenT ball 10
    times over-exposed: 2.8 -> 9.0 deg), and the robust solver blamed the lights' intensities."""
    imgs, lights, mask = small_scene(k=8, h=24, w=20)
    folder = write_capture(tmp_path / "cap", imgs, lights, mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_capture(folder)  # (as written: nothing clipped)
    # 16- and 8-bit cameras, and a 12-bit one in 16-bit files (clipping at 4095, as stored
    # by most machine-vision cameras, or at 65520 shifted to the top)
    for full, dtype in ((65535, np.uint16), (255, np.uint8), (4095, np.uint16),
                        (4095 << 4, np.uint16)):
        for i, f in enumerate(sorted(folder.glob("0*.png"))):
            # the first image 3 times over-exposed, the others not: some of its pixels clip
            gain = 3.0 if i == 0 else 1.0
            cv2.imwrite(str(f), np.clip(np.rint(imgs[i] * full * gain), 0, full).astype(dtype))
        clipped = (np.rint(imgs[0] * full * 3.0) >= full)[mask].mean() / 8
        assert clipped > 0.01
        with pytest.warns(UserWarning, match=rf"{folder}: {100 * clipped:.0f} % of the object's "
                                             r"pixel observations are at the camera's full scale "
                                             r"\(over-exposed; 001\.png: \d+ % of the object\)"):
            load_capture(folder)


def test_an_inverted_mask_is_warned_about(tmp_path: Path) -> None:
    """A mask drawn the other way round (object black) was solved without a word: the
    background became the part."""
    imgs, lights, mask = small_scene(k=6, h=24, w=20)
    # (the background a dim lit plane, as a cloth is: PS has something to solve there)
    cloth = 0.1 * lights[:, 2, None, None] * np.ones_like(imgs)
    lit = np.where(mask, imgs, cloth).astype(np.float32)
    folder = write_capture(tmp_path / "cap", lit, lights, ~mask)
    with pytest.warns(UserWarning, match=r"mask\.png: the mask's object surrounds what it leaves "
                                         r"out, which is the brighter: is the mask inverted\?"):
        load_capture(folder)
    # the right way round, and a part filling the frame around a darker hole: no warning
    for m, images in ((mask, lit), (~mask, np.where(mask, cloth, cloth * 5))):
        folder = write_capture(tmp_path / f"ok{int(m[0, 0])}", images.astype(np.float32),
                               lights, m)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_capture(folder)


def test_audit_capture_folders_read_wrong_without_a_word(tmp_path: Path) -> None:
    """An audit (2026-12-02): a defect ground truth named M_defect.PNG (or .jpg) was skipped,
    so the defective part trained as a good one; Light_Intensities.txt likewise (all lights
    equally bright); img01.png beside img1.png took an order by accident; one image copied
    under another name and float images below 0 were solved; each now refused in one line,
    and a misnamed Mask.png is named in the no-mask warning."""
    import shutil

    imgs, lights, mask = small_scene()
    base = write_capture(tmp_path / "base", imgs, lights, mask)
    load_capture(base)

    def variant(name: str) -> Path:
        return Path(shutil.copytree(base, tmp_path / name))

    cases = []
    for wrong in ("M_defect.PNG", "m_defect.png", "M_defect.jpg"):
        f = variant(f"gt_{len(cases)}")
        shutil.copy(f / "mask.png", f / wrong)
        cases.append((f, rf"{wrong}: named like M_defect\.png but not as psinspect reads it"))
    f = variant("intens")
    (f / "Light_Intensities.txt").write_text("1\n" * len(imgs))
    cases.append((f, r"Light_Intensities\.txt: named like light_intensities\.txt"))
    f = variant("json")
    (f / "defects.json").write_text('{"defects": []}')
    cases.append((f, r"defects\.json without M_defect\.png"))
    f = variant("order")
    (f / "filenames.txt").unlink()  # the plain layout: images in natural order of names
    (f / "002.png").rename(f / "01.png")  # 01 and 001 take the same place
    cases.append((f, r"images 001\.png and 01\.png take the same place in the natural order"))
    f = variant("copy")
    shutil.copy(f / "003.png", f / "002.png")
    cases.append((f, r"images 002\.png and 003\.png are identical: one picture for two lights"))
    f = variant("negative")
    (f / "filenames.txt").unlink()
    for p in sorted(f.glob("0*.png")):
        im = cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.float32) / 65535 - 0.5
        assert cv2.imwrite(str(p.with_suffix(".tif")), im)
        p.unlink()
    cases.append((f, r"001\.tif: image has values below 0 \(down to -0\.5\): not linear"))
    for folder, said in cases:
        with pytest.raises(PsinspectError, match=said):
            load_capture(folder)
    f = variant("tiny")
    (f / "light_intensities.txt").write_text("1\n1\n1e-300\n" + "1\n" * (len(imgs) - 3))
    with pytest.raises(PsinspectError, match=r"003\.png: divided by its light's intensity "
                                             r"\(line 3 of light_intensities\.txt\) it is no "
                                             r"longer finite"):
        load_capture(f)
    f = variant("link")
    (f / "filenames.txt").unlink()
    (f / "007.png").symlink_to(f / "gone.png")
    with pytest.raises(PsinspectError, match=r"007\.png: a link to nothing"):
        load_capture(f)
    with pytest.raises(PsinspectError, match=r": is a folder, not a lights file$"):
        load_capture(base, lights_file=tmp_path)
    f = variant("Mask")
    (f / "mask.png").rename(f / "Mask.png")
    with pytest.warns(UserWarning, match=r"no mask\.png \(Mask\.png is not read"):
        load_capture(f)


def test_a_folder_of_captures_says_which_sub_folders_it_left_out(tmp_path: Path) -> None:
    """A part whose lights file was missing or misnamed was dropped from a dataset silently."""
    import shutil

    from psinspect.dataset import find_captures

    imgs, lights, mask = small_scene()
    write_capture(tmp_path / "parts" / "a", imgs, lights, mask)
    b = Path(shutil.copytree(tmp_path / "parts" / "a", tmp_path / "parts" / "b"))
    (b / "light_directions.txt").rename(b / "Lights.TXT")
    (b / "filenames.txt").unlink()
    (tmp_path / "parts" / "notes").mkdir()  # no images: nothing to say
    with pytest.warns(UserWarning, match=r"sub-folder\(s\) with images but no lights file .* "
                                         r"left out: b$"):
        assert [p.name for p in find_captures([tmp_path / "parts"])] == ["a"]
