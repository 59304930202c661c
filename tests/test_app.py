"""The app's plain-Python parts: input loading with its limits, safe zip extraction, prediction."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from psinspect.app import (
    EXAMPLES_DIR,
    Limits,
    find_capture_folder,
    list_examples,
    load_inspection_input,
    safe_extract_zip,
)
from psinspect.errors import PsinspectError
from psinspect.fileio import save_npy


def _zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def test_examples_are_shipped_and_small() -> None:
    ex = list_examples()
    assert {p.suffix for p in ex} >= {".png", ".zip"}
    total = sum(p.stat().st_size for p in EXAMPLES_DIR.iterdir())
    assert total < 500_000


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (("../evil.txt", b"x"), "leaves the extraction folder"),
        (("a/../../evil.txt", b"x"), "leaves the extraction folder"),
        (("/etc/evil.txt", b"x"), "absolute path"),
        (_symlink_entry("link", "/etc/passwd"), "symbolic link"),
    ],
)
def test_zip_refuses_escaping_entries(tmp_path: Path, entry, why: str) -> None:
    z = _zip(tmp_path / "bad.zip", [("ok.txt", b"fine"), entry])
    dest = tmp_path / "out"
    with pytest.raises(PsinspectError, match=why):
        safe_extract_zip(z, dest)
    # nothing written anywhere: checks happen before extraction
    assert not (tmp_path / "evil.txt").exists()
    assert not any(dest.rglob("*"))


def test_zip_limits(tmp_path: Path) -> None:
    many = _zip(tmp_path / "many.zip", [(f"f{i}.txt", b"") for i in range(12)])
    with pytest.raises(PsinspectError, match="12 entries, more than the limit of 10"):
        safe_extract_zip(many, tmp_path / "o1", Limits(max_zip_entries=10))
    big = tmp_path / "bomb.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * 5_000_000)
    assert big.stat().st_size < 50_000
    with pytest.raises(PsinspectError, match="more than the limit of 1 MB"):
        safe_extract_zip(big, tmp_path / "o2", Limits(max_unpacked_bytes=1 << 20))
    notzip = tmp_path / "x.zip"
    notzip.write_bytes(b"hello")
    with pytest.raises(PsinspectError, match="not a zip archive"):
        safe_extract_zip(notzip, tmp_path / "o3")


def test_find_capture_folder(tmp_path: Path) -> None:
    (tmp_path / "a" / "cap").mkdir(parents=True)
    (tmp_path / "a" / "cap" / "lights.txt").write_text("0 0 1\n")
    (tmp_path / "__MACOSX" / "cap").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "cap" / "lights.txt").write_text("0 0 1\n")
    assert find_capture_folder(tmp_path) == tmp_path / "a" / "cap"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "filenames.txt").write_text("1.png\n")
    with pytest.raises(PsinspectError, match="2 captures"):
        find_capture_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PsinspectError, match="no capture"):
        find_capture_folder(tmp_path / "empty")


def test_load_inputs_and_errors(tmp_path: Path) -> None:
    ex = list_examples()
    png = next(p for p in ex if p.suffix == ".png")
    inp = load_inspection_input(png, tmp_path)
    assert inp.normals.shape[2] == 3 and inp.mask.any() and inp.confidence is None
    np.testing.assert_allclose(np.linalg.norm(inp.normals[inp.mask], axis=1), 1, atol=1e-4)

    z = next(p for p in ex if p.suffix == ".zip")
    cap = load_inspection_input(z, tmp_path)
    assert cap.kind.startswith("capture") and cap.confidence is not None
    assert cap.confidence.shape == cap.mask.shape
    assert list(tmp_path.iterdir()) == []  # extracted files removed

    with pytest.raises(PsinspectError, match="larger than the limit of 100 pixels"):
        load_inspection_input(png, tmp_path, Limits(max_image_side=100))
    with pytest.raises(PsinspectError, match="upload limit"):
        load_inspection_input(png, tmp_path, Limits(max_upload_bytes=1000))
    txt = tmp_path / "notes.txt"
    txt.write_text("hi")
    with pytest.raises(PsinspectError, match="unsupported file type .txt"):
        load_inspection_input(txt, tmp_path)
    bad = tmp_path / "nan.npy"
    arr = np.zeros((16, 16, 3), np.float32)
    arr[4, 4] = np.nan
    save_npy(bad, arr)
    with pytest.raises(PsinspectError, match=r"^nan\.npy: "):
        load_inspection_input(bad, tmp_path)
    chw = tmp_path / "chw.npy"  # channels first: named by its shape, not as "too small"
    save_npy(chw, np.zeros((3, 16, 16), np.float32))
    with pytest.raises(PsinspectError, match=r"^chw\.npy: expected shape \(H, W, 3\), got "
                       r"\(3, 16, 16\)$"):
        load_inspection_input(chw, tmp_path)
    nocap = _zip(tmp_path / "nocap.zip", [("readme.txt", b"no capture here")])
    with pytest.raises(PsinspectError, match="holds no capture"):
        load_inspection_input(nocap, tmp_path)


def test_zip_capture_errors_do_not_leak_server_paths(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cap/lights.txt", "0 0 1\n0 1 1\n1 0 1\n")
        zf.writestr("cap/1.png", b"not a png")
        zf.writestr("cap/2.png", b"not a png")
        zf.writestr("cap/3.png", b"not a png")
    z = tmp_path / "broken.zip"
    z.write_bytes(buf.getvalue())
    work = tmp_path / "work"
    with pytest.raises(PsinspectError) as err:
        load_inspection_input(z, work)
    assert str(work) not in str(err.value)
    assert "cap/1.png" in str(err.value) or "cap" in str(err.value)


def test_predict_on_example(tmp_path: Path, geometric_choice) -> None:
    import cv2

    from psinspect.app import predict

    ex = next(p for p in list_examples() if "scratch" in p.name and p.suffix == ".png")
    inp = load_inspection_input(ex, tmp_path)
    h, w = inp.mask.shape
    p = predict(inp, geometric_choice)
    for img in (p.normals_rgb, p.reference_rgb, p.heatmap_rgb, p.mask_rgb):
        assert img is not None and img.shape == (h, w, 3) and img.dtype == np.uint8
    assert p.threshold == 10.0 and p.image_threshold == 20.0
    assert p.verdict == ("FAIL" if p.image_score > p.image_threshold else "PASS")
    from psinspect.app import verdict_html
    box = verdict_html(p)
    assert (f"{len(p.regions)} regions above the pixel threshold {p.threshold:.4g}" in box
            and "a part can pass with marked regions" in box)
    # the mask image paints exactly the reported regions
    red = (p.mask_rgb == (255, 40, 40)).all(axis=2)
    assert red.sum() == sum(r["area_px"] for r in p.regions) > 0
    assert not (red & ~inp.mask).any()
    # the rendered defect is where the heat is: regions overlap the ground-truth mask
    gt = cv2.imread(str(ex.with_name(ex.stem + "_gt_mask.png")), cv2.IMREAD_GRAYSCALE) > 0
    assert (red & gt).sum() > 0.2 * gt.sum()
    # thresholds move the decision: a higher pixel threshold gives fewer mask pixels, a pass/fail
    # threshold above the image score passes the part
    strict = predict(inp, geometric_choice, threshold=40.0, image_threshold=p.image_score + 1)
    assert strict.verdict == "PASS"
    assert sum(r["area_px"] for r in strict.regions) < red.sum()
    with pytest.raises(PsinspectError, match="pixel threshold"):
        predict(inp, geometric_choice, threshold=float("nan"))


def test_inspect_upload_shows_messages_not_traces(tmp_path: Path, geometric_choice) -> None:
    from psinspect.app import REGION_COLUMNS, inspect_upload, regions_table

    ok = inspect_upload(list_examples()[0], geometric_choice, None, None, tmp_path)
    assert ok[0].count("ps-fail") + ok[0].count("ps-pass") == 1
    assert all(len(row) == len(REGION_COLUMNS) for row in ok[5])
    assert regions_table([]) == []
    bad = tmp_path / "x.txt"
    bad.write_text("x")
    for path, want in ((None, "no file"), (bad, "unsupported file type"),
                       (tmp_path / "gone.png", "file not found")):
        out = inspect_upload(path, geometric_choice, None, None, tmp_path)
        assert "Cannot inspect" in out[0] and want in out[0] and "Traceback" not in out[0]
        assert out[1:5] == (None, None, None, None)
    out = inspect_upload(list_examples()[0], None, None, None, tmp_path)
    assert "unknown model" in out[0]


def test_internal_errors_are_one_line(tmp_path: Path, geometric_choice, caplog) -> None:
    from dataclasses import replace

    from psinspect.app import ModelChoice, inspect_upload

    class Broken:
        name = "broken"

        def score(self, normals, mask, confidence=None):
            raise RuntimeError("secret internals /srv/path")

    choice = ModelChoice("broken", replace(geometric_choice.bundle, model=Broken()))
    out = inspect_upload(list_examples()[0], choice, None, None, tmp_path)
    assert "internal error (RuntimeError)" in out[0]
    assert "secret" not in out[0] and "/srv/path" not in out[0]
    assert "secret internals" in caplog.text  # logged on the server side


@pytest.mark.parametrize("names", [["a", "a/a/"], ["a/", "a"], ["a", "a/b"], ["x", "x"]])
def test_zip_clashing_entries_are_one_error(tmp_path: Path, names: list[str]) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        z = _zip(tmp_path / "clash.zip", [(n, b"1") for n in names])
    with pytest.raises(PsinspectError, match="appears twice or clashes") as err:
        safe_extract_zip(z, tmp_path / "out")
    assert str(tmp_path) not in str(err.value)  # names the entry, not a server path


def test_bundled_model_is_also_offered_thorough() -> None:
    """The bundled geo-seg model comes with thresholds for every test-time augmentation level;
    the app offers it as is and, right after, at 8 copies with that level's thresholds."""
    from psinspect.app import THOROUGH_TTA, load_model_choices

    plain, thorough = load_model_choices([], include_default=True)
    levels = thorough.bundle.config["tta_thresholds"][str(THOROUGH_TTA)]
    assert plain.bundle.model.tta == 4 and thorough.bundle.model.tta == THOROUGH_TTA
    assert thorough.label.startswith(plain.label) and "thorough" in thorough.label
    assert thorough.threshold == levels["threshold"] != plain.threshold
    assert thorough.image_threshold == levels["image_threshold"]


def test_the_app_scores_at_a_pixel_scale(tmp_path: Path, geometric_choice) -> None:
    """The app's pixel-scale field is detect's --scale: the same scores; a factor out of range
    is a message, not a trace; the field is an input of the Inspect button and its API."""
    from psinspect.app import build_app, inspect_upload, predict
    from psinspect.detect import detect_map

    ex = next(p for p in list_examples() if "scratch" in p.name and p.suffix == ".png")
    inp = load_inspection_input(ex, tmp_path)
    want = detect_map(geometric_choice.bundle, inp.normals, inp.mask, scale=0.5)
    got = predict(inp, geometric_choice, scale=0.5)
    assert got.image_score == pytest.approx(want.image_score)
    assert got.image_score != pytest.approx(predict(inp, geometric_choice).image_score)
    out = inspect_upload(ex, geometric_choice, None, None, tmp_path, scale=9.0)
    assert "Cannot inspect" in out[0] and "pixel scale must be between 0.1 and 4" in out[0]
    assert inspect_upload(ex, geometric_choice, None, None, tmp_path, scale=None)[0] == (
        inspect_upload(ex, geometric_choice, None, None, tmp_path)[0])
    demo = build_app([geometric_choice], tmp_path, examples=[])
    ids = {c["props"].get("elem_id"): c["id"] for c in demo.config["components"]}
    (dep,) = [d for d in demo.config["dependencies"] if d.get("api_name") == "inspect"]
    # (after the API's inputs, the menu's pick: a session state, not an API input)
    assert dep["inputs"][-2] == ids["scale"]
    assert demo.blocks[dep["inputs"][-1]].skip_api


def test_a_button_puts_the_thresholds_back_to_the_calibrated_values(tmp_path: Path,
                                                                    geometric_choice) -> None:
    """A moved slider snaps to 1/1000 of its range, which the calibrated value is not on, so
    it could not be set back to it by hand: a button does that, for the chosen model."""
    from psinspect.app import build_app

    demo = build_app([geometric_choice], tmp_path, examples=[])
    config = demo.config
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    (dep,) = [d for d in config["dependencies"]
              if [ids["reset-thresholds"], "click"] in [list(t) for t in d["targets"]]]
    assert dep["inputs"] == [ids["model"]]
    # (and the menu, and its pick kept for Inspect: cleared)
    assert dep["outputs"][:3] == [ids["threshold"], ids["image-threshold"],
                                  ids["operating-points"]]
    pixel, image, *_ = demo.fns[dep["id"]].fn(geometric_choice.label)
    assert (pixel.value, image.value) == (geometric_choice.threshold,
                                          geometric_choice.image_threshold)


def test_a_refused_upload_type_prints_no_trace_on_the_server(tmp_path: Path,
                                                             geometric_choice) -> None:
    """Gradio's own refusal of a file type outside the upload's list (an API client can send
    one) printed a traceback on the server console; now the client gets the message only."""
    import gradio as gr
    from gradio.data_classes import FileData

    from psinspect.app import build_app

    demo = build_app([geometric_choice], tmp_path, examples=[])
    (upload,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "upload"]
    notes = tmp_path / "notes.json"
    notes.write_text("{}")
    with pytest.raises(gr.Error) as err:
        upload.preprocess(FileData(path=str(notes), orig_name="notes.json"))
    assert "Invalid file type" in str(err.value.message)
    assert err.value.print_exception is False
    png = next(p for p in list_examples() if p.suffix == ".png")
    assert upload.preprocess(FileData(path=str(png), orig_name=png.name)) == str(png)
    (scale,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "scale"]
    with pytest.raises(gr.Error) as err:
        scale.preprocess(9.0)  # out of the field's range (the API does not check it)
    assert "pixel scale must be a number between 0.1 and 4, got 9.0" in str(err.value.message)
    assert err.value.print_exception is False
    assert scale.preprocess(0.5) == 0.5


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2])
def test_zip_with_damaged_compressed_data_is_one_error(tmp_path: Path, method: int) -> None:
    """Damaged compressed data raised the decompressor's own error (zlib.error, LZMAError,
    bzip2's OSError): 'internal error' and a traceback on the server, not a message."""
    payload = np.random.default_rng(0).integers(0, 4, 200_000).astype(np.uint8).tobytes()
    z = tmp_path / "damaged.zip"
    with zipfile.ZipFile(z, "w", compression=method) as zf:
        zf.writestr("cap/1.png", payload)
    data = bytearray(z.read_bytes())
    start = 30 + len("cap/1.png") + 64  # inside the member's compressed data
    for i in range(start, start + 200):
        data[i] ^= 0x5A
    z.write_bytes(bytes(data))
    with pytest.raises(PsinspectError, match=r"^damaged\.zip: cannot read zip archive \("):
        safe_extract_zip(z, tmp_path / "out")


def test_results_download_holds_what_detect_writes(tmp_path: Path, geometric_choice,
                                                   monkeypatch, caplog) -> None:
    """The app's results zip: the input's score map, mask, heatmap, panel and a summary.json as
    ``psinspect detect`` writes them for the same upload; no server path in it; moved sliders
    are recorded beside the calibrated thresholds; the Inspect button returns it."""
    import json

    import cv2

    from psinspect.app import build_app, inspect_upload, result_files
    from psinspect.detect import write_detection_outputs
    from psinspect.fileio import file_sha256

    ex = next(p for p in list_examples() if "scratch" in p.name and p.suffix == ".png")
    out = inspect_upload(ex, geometric_choice, None, None, tmp_path / "in")
    _, download = result_files(out[1:5], tmp_path / "results", out[6])
    want = write_detection_outputs([ex], tmp_path / "detect", geometric_choice.bundle)
    with zipfile.ZipFile(download) as z:
        names = set(z.namelist())
        assert names == {"summary.json", *(f"{ex.stem}_{k}" for k in (
            "score.npy", "mask.png", "heatmap.png", "reference.png", "panel.png"))}
        z.extractall(tmp_path / "zip")
    got_dir, want_dir = tmp_path / "zip", tmp_path / "detect"
    np.testing.assert_array_equal(np.load(got_dir / f"{ex.stem}_score.npy"),
                                  np.load(want_dir / f"{ex.stem}_score.npy"))
    for k in ("mask.png", "heatmap.png", "panel.png"):
        np.testing.assert_array_equal(cv2.imread(str(got_dir / f"{ex.stem}_{k}")),
                                      cv2.imread(str(want_dir / f"{ex.stem}_{k}")))
    text = (got_dir / "summary.json").read_text()
    summary = json.loads(text)
    (entry,) = summary["inputs"]
    (want_entry,) = want["inputs"]
    for key in ("verdict", "image_score", "regions", "defect_area_px", "pixel_threshold"):
        assert entry[key] == want_entry[key], key
    assert entry["source"] == ex.name and entry["source_sha256"] == file_sha256(ex)
    assert summary["model_label"] == geometric_choice.label and summary["model_dir"] is None
    assert str(tmp_path) not in text and str(ex.parent) not in text
    assert "calibrated_thresholds" not in summary and "ps_solver" not in entry
    assert summary["ps_solver"] == geometric_choice.bundle.input_handling["ps_solver"]
    assert list(summary)[-1] == "inputs"
    moved = inspect_upload(ex, geometric_choice, 12.5, None, tmp_path / "in")[6].summary
    assert moved["pixel_threshold"] == 12.5
    assert moved["calibrated_thresholds"] == {"pixel_threshold": 10.0, "image_threshold": 20.0}
    assert inspect_upload(tmp_path / "gone.png", geometric_choice, None, None,
                          tmp_path / "in")[6] is None
    # a download that cannot be written (a full disk: atomic writes say so as a
    # PsinspectError) leaves the results shown, without a zip and without a trace
    import psinspect.detect

    def full_disk(folder, *args, **kwargs):
        raise PsinspectError(f"{folder}/x.npy: cannot write (No space left on device)")

    monkeypatch.setattr(psinspect.detect, "write_input_files", full_disk)
    paths, none = result_files(out[1:5], tmp_path / "results", out[6])
    assert none is None and all(Path(p).is_file() for p in paths if p is not None)
    assert "No space left" in caplog.text and "Traceback" not in caplog.text
    demo = build_app([geometric_choice], tmp_path, examples=[])
    ids = {c["props"].get("elem_id"): c["id"] for c in demo.config["components"]}
    (dep,) = [d for d in demo.config["dependencies"] if d.get("api_name") == "inspect"]
    # (the API's outputs: a gr.State after them, for the sliders, is not one of them)
    assert [o for o in dep["outputs"] if not demo.blocks[o].skip_api][-1] == ids["results"]


def test_api_thresholds_mean_the_chosen_models(tmp_path: Path, geometric_choice) -> None:
    """Through the /inspect API: left out, the thresholds were the FIRST model's calibrated
    ones (the sliders' first values) whatever model was chosen, a wrong verdict; the chosen
    model's own thresholds above the first model's slider range were refused; null raised a
    TypeError inside Gradio. Now left out or null = the chosen model's calibrated values, and
    any number >= 0 is taken."""
    import gradio as gr

    from psinspect.app import build_app, inspect_upload, load_model_choices
    from psinspect.models import create_model
    from psinspect.modelstore import save_model_dir

    d = tmp_path / "strict"
    save_model_dir(d, create_model("geometric"), threshold=1.0, image_threshold=2.0)
    (first,) = load_model_choices([d], include_default=False)
    second = geometric_choice  # thresholds 10 / 20, above the first's slider range
    demo = build_app([first, second], tmp_path / "work", examples=[])
    config = demo.config
    (dep,) = [dp for dp in config["dependencies"] if dp.get("api_name") == "inspect"]
    run = demo.fns[dep["id"]].fn
    ex = next(p for p in list_examples() if "scratch" in p.name and p.suffix == ".png")
    want = inspect_upload(ex, second, None, None, tmp_path / "w2")[0]
    assert "(pass/fail threshold 20" in want
    got = run(str(ex), second.label, first.threshold, first.image_threshold, 1.0)[0]
    assert got == want
    # the first model keeps the values given (its own calibrated ones)
    assert "(pass/fail threshold 2" in run(str(ex), first.label, first.threshold,
                                           first.image_threshold, 1.0)[0]
    sliders = {b.elem_id: b for b in demo.blocks.values()
               if getattr(b, "elem_id", None) in ("threshold", "image-threshold")}
    for slider in sliders.values():
        assert slider.preprocess(None) is None
        assert slider.preprocess(second.image_threshold) == second.image_threshold
        assert slider.preprocess(0) == 0.0
        for bad in (-1.0, float("nan"), "x", [1]):
            with pytest.raises(gr.Error) as err:
                slider.preprocess(bad)
            assert "must be a number >= 0" in str(err.value.message)
            assert err.value.print_exception is False
    # a null threshold through the whole button: the chosen model's calibrated value
    assert run(str(ex), second.label, None, None, 1.0)[0] == want


def test_input_warnings_are_shown_under_the_verdict(tmp_path: Path, geometric_choice) -> None:
    """detect warns about a map whose background is written as one flat normal (scored as
    surface); the app showed nothing. Now a note under the verdict and in the summary's
    warnings, naming the upload, not the server's path."""
    import cv2

    from psinspect.app import inspect_upload

    ex = next(p for p in list_examples() if "scratch" in p.name and p.suffix == ".png")
    bgr = cv2.imread(str(ex), cv2.IMREAD_UNCHANGED)
    bgr[(bgr[..., :3] == 0).all(axis=-1)] = (255, 128, 128)  # (0.5, 0.5, 1) as 8-bit BGR
    flat = tmp_path / "flat_bg.png"
    cv2.imwrite(str(flat), bgr)
    verdict, *_, prediction = inspect_upload(flat, geometric_choice, None, None, tmp_path / "w")
    assert "Note: flat_bg.png: every pixel counts as the object" in verdict, verdict
    assert str(tmp_path) not in verdict
    (entry,) = prediction.summary["inputs"]
    assert any(w.startswith("flat_bg.png: every pixel counts as the object")
               for w in entry["warnings"])
    clean_verdict = inspect_upload(ex, geometric_choice, None, None, tmp_path / "w")[0]
    assert "Note:" not in clean_verdict


def test_app_pass_fail_threshold_zero_is_not_the_calibrated_one(tmp_path):
    """image_threshold=0.0 is a threshold (every part with any score fails), not 'unset'."""
    from psinspect.app import list_examples, load_inspection_input, load_model_choices, predict
    from psinspect.models import create_model
    from psinspect.modelstore import save_model_dir

    d = tmp_path / "model"
    save_model_dir(d, create_model("geometric"), threshold=10.0, image_threshold=1e6)
    (choice,) = load_model_choices([d], include_default=False)
    ex = next(p for p in list_examples() if p.suffix == ".png")
    inp = load_inspection_input(ex, tmp_path)
    p = predict(inp, choice, image_threshold=0.0)
    assert p.image_threshold == 0.0 and p.image_score > 0 and p.verdict == "FAIL"


# ------------------------------------------------------------------------------------------
# asked for by a mutation audit (each test fails on a one-line change to app.py that no test
# caught before)


def test_verdict_and_error_boxes_escape_what_they_quote(tmp_path: Path,
                                                        geometric_choice) -> None:
    """Error messages quote zip entry names, which no upload sanitiser cleans, and the
    verdict box quotes the input's name: both reach the page as text, never as markup."""
    from dataclasses import replace

    from psinspect.app import inspect_upload, predict, verdict_html

    evil = "<img src=x onerror=alert(1)>"
    box = verdict_html(None, f"entry {evil!r} leaves the folder")
    assert "<img" not in box and "&lt;img src=x onerror=alert(1)&gt;" in box
    z = _zip(tmp_path / "x.zip", [(f"{evil}/../../e.txt", b"1")])
    shown = inspect_upload(z, geometric_choice, None, None, tmp_path / "w")[0]
    assert "Cannot inspect" in shown and "<img" not in shown and "&lt;img" in shown
    inp = load_inspection_input(next(p for p in list_examples() if p.suffix == ".png"),
                                tmp_path)
    p = replace(predict(inp, geometric_choice), name=evil, kind="<b>k</b>", notes=["<i>n</i>"])
    box = verdict_html(p)
    assert "<img" not in box and "<b>k" not in box and "<i>n" not in box
    assert "&lt;img" in box and "&lt;b&gt;k" in box and "&lt;i&gt;n" in box


def test_verdict_colours(tmp_path: Path, geometric_choice) -> None:
    from psinspect.app import predict, verdict_html

    inp = load_inspection_input(next(p for p in list_examples() if p.suffix == ".png"),
                                tmp_path)
    fail = verdict_html(predict(inp, geometric_choice, image_threshold=0.0))
    ok = verdict_html(predict(inp, geometric_choice, image_threshold=1e9))
    assert "ps-fail" in fail and "background:#b00020" in fail and "#1b7f3b" not in fail
    assert "ps-pass" in ok and "background:#1b7f3b" in ok and "#b00020" not in ok


@pytest.mark.parametrize("suffix", [".PNG", ".Npy", ".ZIP"])
def test_upper_case_suffixes_are_accepted(tmp_path: Path, suffix: str) -> None:
    """Cameras and Windows tools write SCAN.PNG and CAP.ZIP."""
    import shutil

    src = next(p for p in list_examples() if p.suffix.lower() == suffix.lower()
               or suffix.lower() == ".npy" and p.suffix == ".png")
    if suffix.lower() == ".npy":
        up = save_npy(tmp_path / f"scan{suffix}", load_inspection_input(src, tmp_path).normals)
    else:
        up = Path(shutil.copy(src, tmp_path / f"SCAN{suffix}"))
    inp = load_inspection_input(up, tmp_path / "w")
    assert inp.mask.any() and inp.source == up.name


def test_the_heatmap_follows_the_chosen_pixel_threshold(tmp_path: Path,
                                                        geometric_choice) -> None:
    """The heat map puts the pixel threshold at mid-scale: the one the inspector chose."""
    from psinspect.app import heatmap_overlay, predict

    inp = load_inspection_input(next(p for p in list_examples() if p.suffix == ".png"),
                                tmp_path)
    p = predict(inp, geometric_choice, threshold=40.0)
    calibrated = predict(inp, geometric_choice)
    np.testing.assert_array_equal(
        p.heatmap_rgb, heatmap_overlay(p.normals_rgb, p.detection.score, inp.mask, 40.0))
    assert not np.array_equal(p.heatmap_rgb, calibrated.heatmap_rgb)


def test_regions_table_columns() -> None:
    from psinspect.app import REGION_COLUMNS, regions_table

    rows = regions_table([{"area_px": 5, "centroid_xy": (1.25, 7.5), "bbox": (0, 2, 3, 9),
                           "peak_score": 0.5, "mean_score": 0.25}])
    assert REGION_COLUMNS[2:4] == ["centre x", "centre y"]
    assert rows == [[1, 5, 1.2, 7.5, "0, 2, 3, 9", 0.5, 0.25]]


@pytest.mark.parametrize(("value", "top"), [(10.0, 30.0), (0.37, 2.0), (2.5, 8.0), (2e-4, 6e-4),
                                            (0.0, 1.0), (float("nan"), 1.0)])
def test_sliders_reach_about_three_times_the_calibrated_value(value: float, top: float) -> None:
    from psinspect.app import _slider_max

    assert _slider_max(value) == pytest.approx(top)


def test_model_choices_have_distinct_labels_and_no_duplicates(tmp_path: Path) -> None:
    """Two model folders of the same name both stay reachable; the bundled model given again
    as a folder, or a model already at the thorough level, is offered once."""
    import json
    import shutil

    from psinspect.app import THOROUGH_TTA, load_model_choices
    from psinspect.models import create_model
    from psinspect.modelstore import default_model_dir, save_model_dir

    dirs = [tmp_path / k / "model" for k in "ab"]
    for d, t in zip(dirs, (1.0, 2.0), strict=True):
        save_model_dir(d, create_model("geometric"), threshold=t, image_threshold=5.0)
    choices = load_model_choices(dirs, include_default=False)
    assert len({c.label for c in choices}) == 2
    assert [c.threshold for c in choices] == [1.0, 2.0]
    assert len(load_model_choices([default_model_dir()])) == len(load_model_choices([]))
    eight = tmp_path / "eight"
    shutil.copytree(default_model_dir(), eight)
    config = json.loads((eight / "config.json").read_text())
    config["hyperparameters"]["tta"] = THOROUGH_TTA
    config.update(config["tta_thresholds"][str(THOROUGH_TTA)])
    (eight / "config.json").write_text(json.dumps(config))
    (only,) = load_model_choices([eight], include_default=False)
    assert only.bundle.model.tta == THOROUGH_TTA and "thorough" not in only.label


def test_the_upload_field_takes_each_supported_type(tmp_path: Path, geometric_choice) -> None:
    from gradio.data_classes import FileData

    from psinspect.app import build_app

    demo = build_app([geometric_choice], tmp_path, examples=[])
    (upload,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "upload"]
    for name in ("a.png", "a.npy", "a.zip"):
        (tmp_path / name).write_bytes(b"x")
        assert upload.preprocess(FileData(path=str(tmp_path / name), orig_name=name)) == str(
            tmp_path / name)


def test_serve_launches_loopback_only_one_inspection_at_a_time(tmp_path: Path,
                                                               monkeypatch) -> None:
    """What serve asks of the web framework, without starting it: one inspection at a time
    (a CPU-bound model), this machine only by default, no share link, the upload limit."""
    import psinspect.app as app

    for key in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.setenv(key, "")  # (serve sets them; restored after the test)
    asked: dict[str, dict] = {}

    class Demo:
        is_running = False
        local_url = None

        def queue(self, **kw: object) -> None:
            asked["queue"] = kw

        def launch(self, **kw: object) -> None:
            asked["launch"] = kw

        def close(self) -> None:
            asked["closed"] = {}

    monkeypatch.setattr(app, "check_bindable", lambda host, port: None)
    monkeypatch.setattr(app, "build_app", lambda choices, workdir, limits: Demo())
    app.serve(lambda: [], port=8765, limits=Limits(max_upload_bytes=12345))
    assert asked["queue"] == {"default_concurrency_limit": 1}
    launch = asked["launch"]
    assert (launch["server_name"], launch["server_port"], launch["share"],
            launch["max_file_size"], launch["show_error"]) == ("127.0.0.1", 8765, False, 12345,
                                                               False)
    assert "closed" in asked


def test_limits_are_inclusive(tmp_path: Path) -> None:
    """A zip of exactly the most entries, an image of exactly the largest side and a file of
    exactly the upload limit are accepted."""
    z = _zip(tmp_path / "ten.zip", [(f"f{i}.txt", b"") for i in range(10)])
    safe_extract_zip(z, tmp_path / "o", Limits(max_zip_entries=10))
    png = next(p for p in list_examples() if p.suffix == ".png")
    h, w = load_inspection_input(png, tmp_path).mask.shape
    inp = load_inspection_input(png, tmp_path, Limits(max_image_side=max(h, w),
                                                      max_upload_bytes=png.stat().st_size))
    assert inp.mask.shape == (h, w)


def test_capture_folder_depth_and_hidden_folders(tmp_path: Path) -> None:
    deep = tmp_path / "deep"
    (deep / "a" / "b" / "c" / "d").mkdir(parents=True)
    (deep / "a" / "b" / "c" / "d" / "lights.txt").write_text("0 0 1\n")
    with pytest.raises(PsinspectError, match="at most 3 folders deep"):
        find_capture_folder(deep)
    (deep / "a" / "b" / "c" / "lights.txt").write_text("0 0 1\n")
    assert find_capture_folder(deep) == deep / "a" / "b" / "c"
    hidden = tmp_path / "hidden"
    for sub in (".git", "cap"):
        (hidden / sub).mkdir(parents=True)
        (hidden / sub / "lights.txt").write_text("0 0 1\n")
    assert find_capture_folder(hidden) == hidden / "cap"


def test_an_npy_too_large_is_refused_from_its_header(tmp_path: Path) -> None:
    """The header's shape is checked before any pixel is read (no 300 MB allocated)."""
    big = tmp_path / "big.npy"
    with big.open("wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (5000, 5000, 3)})
    with pytest.raises(PsinspectError, match="larger than the limit of 2048 pixels"):
        load_inspection_input(big, tmp_path, Limits(max_image_side=2048))


def test_examples_without_an_index_leave_out_masks_and_hidden_files(tmp_path: Path) -> None:
    for name in ("a.png", "a_gt_mask.png", ".h.png", "b.zip", "c.txt", "d.NPY"):
        (tmp_path / name).write_bytes(b"")
    assert list_examples(tmp_path) == [tmp_path / "a.png", tmp_path / "b.zip",
                                       tmp_path / "d.NPY"]


@pytest.mark.parametrize(("option", "what"), [("threshold", "pixel threshold"),
                                              ("image_threshold", "pass/fail threshold")])
def test_predict_refuses_a_negative_threshold(tmp_path: Path, geometric_choice, option: str,
                                              what: str) -> None:
    from psinspect.app import predict

    inp = load_inspection_input(next(p for p in list_examples() if p.suffix == ".png"),
                                tmp_path)
    with pytest.raises(PsinspectError, match=what):
        predict(inp, geometric_choice, **{option: -1.0})


def test_a_menu_sets_the_pass_fail_threshold_for_a_share_of_good_parts_failing(
        tmp_path: Path, geometric_choice) -> None:
    """Under the pass/fail slider, a menu of the thresholds ``detect --image-fpr R`` sets
    with the chosen model (at the test-time level it scores at: the thorough choice's own);
    picking one puts the slider there, and an input judged at it records that rule in its
    summary, not "set by hand". The menu follows the model, is cleared when the slider is put
    back or moved by hand, and is hidden for a model that stores no calibration scores."""
    from psinspect.app import (
        build_app,
        inspect_upload,
        load_model_choices,
        operating_point_menu,
        operating_points,
        picked_operating_point,
        predict,
        verdict_html,
    )
    from psinspect.train import OPERATING_RATES, image_threshold_at_rate

    bundled, thorough = load_model_choices()[:2]
    for choice, tta in ((bundled, 4), (thorough, 8)):
        points = operating_points(choice)
        assert [p.rate for p in points] == list(OPERATING_RATES)
        for rate, thr, by_count, rule in points:
            assert (thr, rule) == image_threshold_at_rate(choice.bundle.config, rate, tta)
            assert by_count == {}
        menu = operating_point_menu(choice)
        assert menu[0] == (f"1% of good parts failing: {choice.image_threshold:.4g} "
                           "(calibrated)", "0.01")  # its own, at 1 %
        assert sum("(calibrated)" in label for label, _ in menu) == 1
    assert operating_points(bundled) != operating_points(thorough)
    assert operating_points(geometric_choice) == []  # (stores no scores)

    demo = build_app([bundled, thorough, geometric_choice], tmp_path, examples=[])
    ids = {c["props"].get("elem_id"): c["id"] for c in demo.config["components"]}
    deps = demo.config["dependencies"]

    def dep(component: str, event: str) -> dict:
        (d,) = [d for d in deps if [ids[component], event] in [list(t) for t in d["targets"]]]
        return d

    pick = dep("operating-points", "input")
    assert pick["inputs"] == [ids["model"], ids["operating-points"]]
    assert pick["outputs"][0] == ids["image-threshold"]
    five = next(p.threshold for p in operating_points(thorough) if p.rate == 0.05)
    slider, kept = demo.fns[pick["id"]].fn(thorough.label, "0.05")
    assert slider.value == five and kept == "0.05"  # the pick kept for Inspect
    change = dep("model", "change")
    assert change["outputs"][-2] == ids["operating-points"]
    *_, shown, kept = demo.fns[change["id"]].fn(thorough.label)
    assert kept is None
    assert shown.choices == operating_point_menu(thorough) and shown.visible
    *_, hidden, _ = demo.fns[change["id"]].fn(geometric_choice.label)
    assert hidden.choices == [] and hidden.visible is False
    release = dep("image-threshold", "input")
    assert release["outputs"][0] == ids["operating-points"]
    assert demo.fns[release["id"]].fn() == (None, None)
    reset = dep("reset-thresholds", "click")
    assert reset["outputs"][-2] == ids["operating-points"]
    assert demo.fns[reset["id"]].fn(bundled.label)[-2:] == (None, None)

    # the Inspect button gets the pick kept by the menu's event (the same state)
    click = dep("inspect", "click")
    assert click["inputs"][-1] == pick["outputs"][1] == release["outputs"][1]

    # judged at the 5 % pick: the rule of detect --image-fpr 0.05 in the summary, whether
    # picked (the menu's value passed) or given as that threshold (an API client)
    example = next(p for p in list_examples() if "scratch" in p.name and p.suffix == ".png")
    inp = load_inspection_input(example, tmp_path / "in")
    rate5 = next(p for p in operating_points(bundled) if p.rate == 0.05)
    for got in (predict(inp, bundled, None, rate5.threshold),
                predict(inp, bundled, None, None, operating_point=rate5)):
        assert got.image_threshold == rate5.threshold
        assert got.summary["image_threshold_calibration"].startswith(rate5.rule)
    assert got.operating_rate == 0.05
    assert "for 5% of good parts failing" in verdict_html(got)
    by_hand = predict(inp, bundled, None, rate5.threshold * 1.01)
    assert by_hand.summary["image_threshold_calibration"].startswith("set by hand")
    # the menu's value as the page sends it; a share the model does not offer: one line
    assert picked_operating_point(bundled, "0.05") == rate5
    assert picked_operating_point(bundled, None) is None
    assert picked_operating_point(bundled, "") is None
    with pytest.raises(PsinspectError, match=r"^operating point '0.3': .* offers "
                                             r"0.01, 0.02, 0.05, 0.1, 0.2$"):
        picked_operating_point(bundled, "0.3")
    with pytest.raises(PsinspectError, match=r"offers none \(it stores no calibration"):
        picked_operating_point(geometric_choice, "0.05")
    html_, *_ = inspect_upload(example, geometric_choice, None, None, tmp_path / "in2",
                               operating_point="0.05")
    assert "Cannot inspect" in html_ and "operating point &#x27;0.05&#x27;" in html_
