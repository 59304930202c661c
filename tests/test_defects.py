"""Defect synthesis: physics (height -> normals), exact ground-truth masks, determinism, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from psinspect.defects import (
    DEFECT_TYPES,
    HELD_OUT_TYPES,
    DefectSpec,
    angle_deg,
    apply_height,
    height_field,
    implant_defects,
    implant_defects_height,
    parse_severity,
    sample_defect,
)
from psinspect.errors import PsinspectError
from psinspect.fileio import WRITTEN_MANIFEST
from psinspect.normalmap import normalize, normals_from_height


def _sphere(size: int = 96, radius: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    x, y = (cols - c) / radius, -(rows - c) / radius
    mask = x**2 + y**2 < 1.0
    n = np.dstack([x, y, np.sqrt(np.clip(1 - x**2 - y**2, 0, None))])
    n = normalize(n)
    n[~mask] = 0
    return n, mask


def _plane(n0: np.ndarray, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Tilted plane z = p x + q y (x = col, y = -row) and its 3-D points."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    p, q = -n0[0] / n0[2], -n0[1] / n0[2]
    pts = np.dstack([cols, -rows, p * cols - q * rows])
    return pts, np.broadcast_to(n0, (size, size, 3)).astype(np.float32)


def _normals_of_points(pts: np.ndarray) -> np.ndarray:
    """Normals of a 3-D point grid by cross product of its image-axis tangents (x: col, y: -row)."""
    t_x = np.gradient(pts, axis=1)
    t_y = -np.gradient(pts, axis=0)
    n = np.cross(t_x, t_y)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


@pytest.mark.parametrize("kind", DEFECT_TYPES + HELD_OUT_TYPES)
def test_each_type_unit_length_and_exact_gt_mask(kind: str) -> None:
    normals, mask = _sphere()
    rng = np.random.default_rng(7)
    out, gt, records = implant_defects(normals, mask, rng, count=2, types=[kind], min_angle=2.0)
    assert out.dtype == np.float32 and out.shape == normals.shape
    lengths = np.linalg.norm(out[mask].astype(np.float64), axis=1)
    assert np.abs(lengths - 1).max() < 1e-5
    assert not out[~mask].any(), "defects must not leak outside the object mask"
    assert gt.dtype == bool and not (gt & ~mask).any()
    ang = angle_deg(normals, out)
    assert gt.sum() >= 4
    assert (ang[gt] > 2.0).all(), "every masked pixel changed by more than min_angle"
    assert (ang[mask & ~gt] <= 2.0).all(), "no unmasked object pixel changed by more"
    assert len(records) == 2
    for rec in records:
        assert rec["type"] == kind
        x0, y0, x1, y1 = rec["bbox"]
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
        assert rec["area"] > 0 and rec["level"] in ("low", "medium", "high")
        json.dumps(rec)  # JSON-friendly


def test_min_angle_controls_mask() -> None:
    normals, mask = _sphere()
    _, gt2, _ = implant_defects(normals, mask, np.random.default_rng(3), types=["dent"],
                                min_angle=2.0)
    out6, gt6, _ = implant_defects(normals, mask, np.random.default_rng(3), types=["dent"],
                                   min_angle=6.0)
    assert gt6.sum() < gt2.sum()
    assert (gt6 <= gt2).all()
    assert (angle_deg(normals, out6)[mask & ~gt6] <= 6.0).all()


def test_same_seed_same_bytes_and_seed_matters() -> None:
    normals, mask = _sphere()
    a = implant_defects(normals, mask, np.random.default_rng(11), count=3)
    b = implant_defects(normals, mask, np.random.default_rng(11), count=3)
    c = implant_defects(normals, mask, np.random.default_rng(12), count=3)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert json.dumps(a[2]) == json.dumps(b[2])
    assert a[0].tobytes() != c[0].tobytes()


@pytest.mark.parametrize("along", ["normal", "view"])
def test_apply_height_exact_on_tilted_plane(along: str) -> None:
    """Displace a 40-degree tilted plane by a bump (along its normal, or along z) and compare
    with the normals of the displaced 3-D points (cross product of tangents)."""
    t = np.radians(40.0)
    n0 = np.array([np.sin(t) * np.cos(0.7), np.sin(t) * np.sin(0.7), np.cos(t)])
    pts, normals = _plane(n0)
    rows, cols = np.mgrid[0:48, 0:48].astype(np.float64)
    h = (1.5 * np.exp(-((cols - 24) ** 2 + (rows - 20) ** 2) / 50.0)).astype(np.float32)
    direction = n0 if along == "normal" else np.array([0.0, 0.0, 1.0])
    expected = _normals_of_points(pts + h[..., None].astype(np.float64) * direction)
    got = apply_height(normals, np.ones((48, 48), bool), h, along=along)
    assert angle_deg(expected, got).max() < 1e-3
    assert angle_deg(expected, normals).max() > 5.0  # the bump really turned the normals


def test_view_mode_equals_height_of_summed_surface() -> None:
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float64)
    z = (0.002 * (cols - 30) ** 2 + 0.3 * np.sin(rows / 7.0)).astype(np.float32)
    spec = sample_defect(np.random.default_rng(0), (64, 64), types=["bump"], severity=0.2)
    h = height_field(spec, (64, 64))
    mask = np.ones((64, 64), bool)
    got = apply_height(normals_from_height(z), mask, h, along="view")
    assert angle_deg(normals_from_height(z + h), got).max() < 1e-3


def test_frame_convention_dent_walls_face_its_centre() -> None:
    """A dent on a frontal surface: right of the centre the wall faces left (-x); above the
    centre (smaller row = larger y) it faces down (-y). Checks rows-down = -y."""
    spec = DefectSpec("dent", {"center": [32.0, 32.0], "radius": 12.0, "aspect": 1.0,
                               "angle_deg": 0.0, "depth": 3.0}, severity=0.125)
    h = height_field(spec, (64, 64))
    assert h.min() < -2.5 and h.max() <= 0
    flat = np.zeros((64, 64, 3), np.float32)
    flat[..., 2] = 1
    n = apply_height(flat, np.ones((64, 64), bool), h)
    assert n[32, 38, 0] < -0.1  # right of centre -> normal tilts to -x
    assert n[32, 26, 0] > 0.1
    assert n[26, 32, 1] < -0.1  # above centre (row 26) -> normal tilts to -y
    assert n[38, 32, 1] > 0.1
    # a bump is the mirror image
    spec.type, spec.params["height"] = "bump", spec.params.pop("depth")
    nb = apply_height(flat, np.ones((64, 64), bool), height_field(spec, (64, 64)))
    assert nb[32, 38, 0] > 0.1


def test_scratch_height_in_pixel_units() -> None:
    spec = DefectSpec("scratch", {"points": [[10.0, 32.0], [54.0, 32.0]], "width": 6.0,
                                  "profile": "V", "depth": 1.2}, severity=0.2)
    h = height_field(spec, (64, 64))
    assert h.dtype == np.float32
    assert -1.2 <= h.min() < -1.0  # pixel-averaged V bottom
    assert h[10:54].any() and not h[:25].any() and not h[40:].any()


def test_held_out_types_only_when_named() -> None:
    """The default draw (every training recipe's) never yields a held-out type; named, each
    one is drawn, and a mix draws from exactly the named types."""
    rng = np.random.default_rng(0)
    drawn = {sample_defect(rng, (64, 64)).type for _ in range(300)}
    assert drawn == set(DEFECT_TYPES)
    mixed = {sample_defect(rng, (64, 64), types=["chatter", "dent"]).type for _ in range(40)}
    assert mixed == {"chatter", "dent"}
    assert not set(DEFECT_TYPES) & set(HELD_OUT_TYPES)


def _flat_normals(size: int) -> np.ndarray:
    flat = np.zeros((size, size, 3), np.float32)
    flat[..., 2] = 1
    return flat


def test_held_out_shapes() -> None:
    """Each held-out type has the shape its docstring promises, in pixel units."""
    size = 96
    # gouge: a V groove deepening along its direction, with raised lips beside the rim
    g = height_field(DefectSpec("gouge", {"points": [[20.0, 48.0], [76.0, 48.0]], "width": 6.0,
                                          "depth": 1.2, "start": 0.25, "lip": 0.4,
                                          "lip_width": 1.0}, severity=0.2), (size, size))
    assert g[48, 70] < -0.8 and g[48, 25] > -0.45  # deeper near the last point
    assert g[44, 70] > 0.1 and g[52, 70] > 0.1  # lips beside the rim (half width 3 + 1.5)
    assert g[40, 70] == 0 and g[56, 70] == 0  # nothing beyond the lips
    # chatter: crests across the path, one period apart, inside a band
    c = height_field(DefectSpec("chatter", {"center": [48.0, 48.0], "angle_deg": 0.0,
                                            "length": 60.0, "band": 12.0, "period": 6.0,
                                            "depth": 0.6}, severity=0.2), (size, size))
    row = c[48, 30:66].astype(np.float64)
    crests = np.flatnonzero((row[1:-1] > row[:-2]) & (row[1:-1] > row[2:]) & (row[1:-1] > 0))
    assert len(crests) >= 5 and np.allclose(np.diff(crests), 6, atol=1)
    assert c.min() < -0.2 and c.max() > 0.2 and not c[:40].any() and not c[57:].any()
    # lap: raised on one side of its edge only; steep at the edge, gentle behind it
    la = height_field(DefectSpec("lap", {"center": [48.0, 48.0], "angle_deg": 0.0,
                                         "length": 40.0, "rise": 2.0, "reach": 20.0,
                                         "height": 0.5}, severity=0.25), (size, size))
    assert not la[:47].any()  # v = row - 48 < 0: untouched
    col = la[:, 48].astype(np.float64)
    assert col.max() > 0.45 and col.min() >= 0
    slopes = np.abs(np.diff(col))
    assert slopes[46:52].max() > 3 * slopes[52:70].max()  # the edge is the steep part
    # spatter: raised droplets only
    sp = height_field(DefectSpec("spatter", {"centers": [[30.0, 30.0], [40.0, 35.0]],
                                             "radii": [2.0, 3.0], "heights": [0.8, 1.2]},
                                 severity=0.2), (size, size))
    assert sp.min() >= 0 and 0.9 < sp.max() <= 1.2 and sp[30, 30] > 0.5
    n = apply_height(_flat_normals(size), np.ones((size, size), bool), sp)
    assert n[30, 31, 0] > 0.1 and n[30, 29, 0] < -0.1  # it faces +x right of its top


def test_second_held_out_shapes() -> None:
    """blister, crater and scuff have the shapes their docstring promises, in pixel units."""
    size = 64
    # blister: raised only; a nearly flat top, then a steep edge of width ``rim``
    b = height_field(DefectSpec("blister", {"center": [32.0, 32.0], "radius": 10.0, "rim": 2.0,
                                            "height": 2.0}, severity=0.1), (size, size))
    assert b.min() >= 0 and 1.9 < b[32, 32] <= 2.0 and not b[32, 43:].any()
    row = b[32, 32:44].astype(np.float64)
    assert abs(row[5] - row[0]) < 0.25 * abs(row[9] - row[8])  # top flat beside the edge
    # crater: a bowl below the surface, a raised rim around it, nothing beyond the rim
    c = height_field(DefectSpec("crater", {"center": [32.0, 32.0], "radius": 4.0, "depth": 1.6,
                                           "lip": 0.4, "lip_width": 0.5}, severity=0.2),
                     (size, size))
    assert c[32, 32] < -1.4 and c[32, 36] > 0.5 and c[36, 32] > 0.5  # rim at the radius
    assert not c[32, 39:].any() and not c[:25].any()
    # scuff: grooves only, one per line, parallel (here along x) at their offsets
    s = height_field(DefectSpec("scuff", {"center": [32.0, 32.0], "angle_deg": 0.0,
                                          "length": 30.0, "band": 12.0,
                                          "offsets": [-4.0, 0.0, 4.0],
                                          "spans": [[-15.0, 5.0], [-10.0, 10.0], [0.0, 15.0]],
                                          "widths": [2.0, 2.0, 2.0],
                                          "depths": [0.2, 0.2, 0.2]}, severity=0.1),
                     (size, size))
    assert s.max() <= 0 and s.min() < -0.1
    col = s[:, 34].astype(np.float64)  # across the band, where all three lines run
    troughs = np.flatnonzero((col[1:-1] < col[:-2]) & (col[1:-1] < col[2:])) + 1
    assert len(troughs) == 3 and np.allclose(np.diff(troughs), 4)
    assert not s[:, 10].any()  # beyond every line's span
    assert s[28, 18:22].any() and not s[36, 18:22].any()  # the lines span different stretches


def test_implant_in_height_field_matches_normals() -> None:
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float64)
    z = (0.001 * (cols - 32) ** 2).astype(np.float32)
    mask = (cols - 32) ** 2 + (rows - 32) ** 2 < 28**2
    z2, gt, recs = implant_defects_height(z, mask, np.random.default_rng(5), count=2)
    ang = angle_deg(normals_from_height(z, mask), normals_from_height(z2, mask))
    assert (ang[gt] > 2).all() and (ang[mask & ~gt] <= 2).all() and len(recs) == 2


def test_errors() -> None:
    normals, mask = _sphere()
    with pytest.raises(PsinspectError, match="unknown defect type"):
        implant_defects(normals, mask, np.random.default_rng(0), types=["smudge"])
    with pytest.raises(PsinspectError, match="--severity"):
        parse_severity("strong")
    assert parse_severity("0.05-0.2") == (0.05, 0.2)
    assert parse_severity("1") == 1.0
    assert parse_severity("1e-3") == 0.001  # a number, not the range "1e" to "3"
    for steep in ("5", "0.2-3"):  # turned normals away from the camera (z down to -0.44)
        with pytest.raises(PsinspectError, match=r"a number in \(0, 1\]"):
            parse_severity(steep)
    assert parse_severity("high") == "high"
    with pytest.raises(PsinspectError, match="not unit"):
        implant_defects(normals * 2, mask, np.random.default_rng(0))


def test_cli_defects_deterministic(tmp_path) -> None:
    from psinspect.cli import app, register_commands

    register_commands()
    normals, _ = _sphere(64, 28)
    src = tmp_path / "N_ball.npy"
    np.save(src, normals)
    runner = CliRunner()
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        res = runner.invoke(app, ["defects", str(src), "-o", str(out), "--per-image", "2",
                                  "--types", "scratch,pit", "--seed", "4"])
        assert res.exit_code == 0, res.output
        outs.append(out)
    names = sorted(p.name for p in outs[0].iterdir() if p.name != WRITTEN_MANIFEST)
    assert names == ["A_ball.json", "A_ball.npy", "A_ball.png", "M_ball.png", "defects.json"]
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    side = json.loads((outs[0] / "A_ball.json").read_text())
    assert {d["type"] for d in side["defects"]} <= {"scratch", "pit"}
    held = runner.invoke(app, ["defects", str(src), "-o", str(tmp_path / "held"),
                               "--types", "chatter,lap", "--seed", "4"])
    assert held.exit_code == 0, held.output
    side = json.loads((tmp_path / "held" / "A_ball.json").read_text())
    assert {d["type"] for d in side["defects"]} <= {"chatter", "lap"}
    bad = runner.invoke(app, ["defects", str(src), "-o", str(tmp_path / "x"), "--types", "blob"])
    assert bad.exit_code != 0


def test_cli_defects_names_inputs_as_detect_does(tmp_path, monkeypatch, capsys) -> None:
    """Two psinspect normals outputs (folders, or their normals.npy) get their folders' names:
    they were refused as 'two inputs would both be written as A_normals'; a plain folder is
    a one-line error, not 'file not found'."""
    from _robust_util import run_cli

    normals, _ = _sphere(48, 20)
    for name in ("n1", "n2"):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "normals.npy", normals)
        (tmp_path / name / "run.json").write_text(json.dumps({"command": "normals"}))
    code, _, err = run_cli(["defects", tmp_path / "n1", tmp_path / "n2" / "normals.npy", "-o",
                            tmp_path / "o"], monkeypatch, capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").glob("A_*.npy")) == ["A_n1.npy",
                                                                        "A_normals.npy"]
    code, _, err = run_cli(["defects", tmp_path / "n1" / "normals.npy",
                            tmp_path / "n2" / "normals.npy", "-o", tmp_path / "o2"],
                           monkeypatch, capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o2").glob("A_*.npy")) == [
        "A_n1_normals.npy", "A_n2_normals.npy"]
    (tmp_path / "plain").mkdir()
    code, _, err = run_cli(["defects", tmp_path / "plain", "-o", tmp_path / "o3"], monkeypatch,
                           capsys)
    assert code == 2 and err.strip() == (
        f"error: {tmp_path / 'plain'}: is a folder, not a normal map (.npy / .png) or the "
        "output folder of psinspect normals"), err


def test_cli_defects_keeps_the_inputs_own_ground_truth(tmp_path, monkeypatch, capsys) -> None:
    """A psinspect normals output of a defective capture (its M_defect.png and defects.json
    copied beside the map) and a dataset's A_x map (M_x.png beside it) already hold defects:
    the new mask marked only the new ones, so the real defect counted as clean surface."""
    import cv2
    from _robust_util import run_cli

    normals, _ = _sphere(48, 20)
    own = np.zeros(normals.shape[:2], np.uint8)
    own[20:26, 18:30] = 255  # on the object
    folder = tmp_path / "solved"
    folder.mkdir()
    np.save(folder / "normals.npy", normals)
    (folder / "run.json").write_text(json.dumps({"command": "normals"}))
    cv2.imwrite(str(folder / "M_defect.png"), own)
    records = [{"type": "scratch", "severity": 0.1}]
    (folder / "defects.json").write_text(json.dumps({"defects": records}))
    np.save(tmp_path / "A_x.npy", normals)
    cv2.imwrite(str(tmp_path / "M_x.png"), own)
    np.save(tmp_path / "N_y.npy", normals)  # a clean dataset map: nothing to keep
    code, out, err = run_cli(["defects", folder, tmp_path / "A_x.npy", tmp_path / "N_y.npy",
                              "-o", tmp_path / "o", "--seed", "3"], monkeypatch, capsys)
    assert code == 0, err
    assert "the ground truth of 2 input(s) with defects of their own is kept" in out
    for name in ("solved", "A_x"):
        gt = cv2.imread(str(tmp_path / "o" / f"M_{name}.png"), cv2.IMREAD_GRAYSCALE) > 0
        assert gt[own > 0].all(), name  # the input's defect pixels stay defects
        assert (gt & (own == 0)).any(), name  # and the new defect is there too
        side = json.loads((tmp_path / "o" / f"A_{name}.json").read_text())
        assert side["input_ground_truth_pixels"] == int((own > 0).sum())
    assert json.loads((tmp_path / "o" / "A_solved.json").read_text())["input_defects"] == records
    side = json.loads((tmp_path / "o" / "A_y.json").read_text())
    assert "input_ground_truth_pixels" not in side and "input_defects" not in side
    gt_y = cv2.imread(str(tmp_path / "o" / "M_y.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert not gt_y[own > 0].all()  # only its new defect (which misses this patch)


def test_a_single_defects_record_boxes_its_ground_truth_exactly() -> None:
    """With one defect the ground truth is its own changed pixels: the record's bbox is their
    bounding box, end exclusive ([x0, y0, x1, y1]), and its area their count."""
    n = np.zeros((80, 80, 3), np.float32)
    n[..., 2] = 1.0
    for seed in range(6):
        out, gt, recs = implant_defects(n, None, np.random.default_rng(seed), count=1)
        rows, cols = np.nonzero(gt)
        assert len(recs) == 1
        assert recs[0]["bbox"] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert recs[0]["area"] == int(gt.sum())


def test_default_severity_draws_every_level() -> None:
    """Without a severity, each defect's level is drawn from all of low, medium and high."""
    rng = np.random.default_rng(0)
    levels = [sample_defect(rng, (64, 64)).level for _ in range(90)]
    assert set(levels) == {"low", "medium", "high"}
    assert min(levels.count(v) for v in ("low", "medium", "high")) >= 15
