"""Photometric stereo solvers on a rendered sphere, light subsets, and the DiLiGenT ball."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _robust_util import error_lines, run_cli

from psinspect.capture import lights_from_slant_tilt, load_capture, write_capture
from psinspect.errors import PsinspectError
from psinspect.normalmap import angular_error_deg
from psinspect.render import default_lights
from psinspect.stereo import (
    MIN_LIGHT_CONDITIONING,
    farthest_point_lights,
    image_gain_ratios,
    light_conditioning,
    parse_light_spec,
    run_photometric_stereo,
    solve,
)

DILIGENT = Path(__file__).resolve().parents[2] / "shared" / "data" / "diligent"
SEED = 20240611


def sphere(size: int = 64, min_nz: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Normals (H, W, 3) of a sphere filling the frame (DiLiGenT frame: row step = -y), mask."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    x = (xx - c) / (size / 2)
    y = -(yy - c) / (size / 2)
    r2 = x**2 + y**2
    z = np.sqrt(np.clip(1 - r2, 0, None))
    mask = (r2 < 1) & (z >= min_nz)
    n = np.where(mask[..., None], np.stack([x, y, z], axis=-1), 0).astype(np.float32)
    return n, mask


def render(normals: np.ndarray, mask: np.ndarray, lights: np.ndarray,
           rng: np.random.Generator, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Lambertian images (K, H, W) with attached shadows (max(n.l, 0)) and a smooth albedo."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    albedo = (0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 9.0)).astype(np.float32)
    shade = np.maximum(np.einsum("hwc,kc->khw", normals, lights), 0.0)
    imgs = albedo[None] * shade + noise * rng.standard_normal((len(lights), h, w))
    return np.where(mask[None], imgs, 0).astype(np.float32), albedo


def hemisphere_lights(k: int, max_slant: float, rng: np.random.Generator) -> np.ndarray:
    return lights_from_slant_tilt(rng.uniform(5, max_slant, k), rng.uniform(0, 360, k))


def test_ls_recovers_lambertian_sphere() -> None:
    rng = np.random.default_rng(SEED)
    lights = hemisphere_lights(24, 40.0, rng)
    # every pixel lit by every light (normals within 50 deg of the camera): no shadows, so
    # least squares is the right estimator; small sensor noise keeps the test from being exact
    normals, mask = sphere(min_nz=np.cos(np.radians(48)))
    imgs, albedo = render(normals, mask, lights, rng, noise=0.002)
    res = solve(imgs, lights, mask, solver="ls")
    err = angular_error_deg(res.normals[mask], normals[mask])
    assert err.mean() < 0.5
    assert res.normals.dtype == np.float32 and res.normals.shape == (*mask.shape, 3)
    assert np.allclose(np.linalg.norm(res.normals[mask], axis=1), 1, atol=1e-4)
    assert (res.normals[~mask] == 0).all() and (res.albedo[~mask] == 0).all()
    assert np.allclose(res.albedo[mask], albedo[mask], rtol=0.03)
    assert res.confidence[mask].mean() > 0.95
    assert ((res.confidence >= 0) & (res.confidence <= 1)).all()


def test_robust_copes_with_shadows_and_specular_spikes() -> None:
    rng = np.random.default_rng(SEED + 1)
    lights = hemisphere_lights(40, 60.0, rng)
    normals, mask = sphere(min_nz=0.1)  # includes attached shadows near the limb
    imgs, _ = render(normals, mask, lights, rng, noise=0.002)
    # corrupt 20% of the lit observations: half cast shadows (-> 0), half specular spikes
    obs = imgs[:, mask]
    lit = np.argwhere(obs > 0.01)
    pick = lit[rng.choice(len(lit), size=int(0.2 * len(lit)), replace=False)]
    half = len(pick) // 2
    obs[pick[:half, 0], pick[:half, 1]] = 0.0
    obs[pick[half:, 0], pick[half:, 1]] += rng.uniform(0.5, 2.0, len(pick) - half)
    imgs[:, mask] = obs

    robust = solve(imgs, lights, mask, solver="robust")
    err_r = angular_error_deg(robust.normals[mask], normals[mask])
    err_ls = angular_error_deg(solve(imgs, lights, mask, "ls").normals[mask], normals[mask])
    assert err_r.mean() < 0.5, err_r.mean()
    assert err_ls.mean() > 4 * err_r.mean()  # the corruption really hurts plain LS
    assert robust.lights_used is not None and robust.lights_used.all()
    assert robust.confidence[mask].mean() > 0.6


def test_stable_solver_moves_less_when_the_lights_change() -> None:
    """``stable`` (robust with a wider Tukey cut-off): two disjoint light sets of one shiny
    sphere give closer normals than with ``robust`` (which lights count as outliers changes less
    between them), at about the same error against the truth; both far better than LS."""
    rng = np.random.default_rng(SEED + 10)
    lights = hemisphere_lights(48, 60.0, rng)
    normals, mask = sphere(min_nz=0.1)
    imgs, _ = render(normals, mask, lights, rng, noise=0.01)
    half = lights + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    imgs += 0.3 * np.maximum(np.einsum("hwc,kc->khw", normals, half), 0.0) ** 20  # highlights
    imgs = np.where(mask[None], imgs, 0.0).astype(np.float32)
    a, b = np.arange(0, 48, 2), np.arange(1, 48, 2)
    moved, err = {}, {}
    for s in ("robust", "stable", "ls"):
        na = solve(imgs[a], lights[a], mask, s).normals
        nb = solve(imgs[b], lights[b], mask, s).normals
        moved[s] = angular_error_deg(na[mask], nb[mask]).mean()
        err[s] = angular_error_deg(na[mask], normals[mask]).mean()
    assert moved["stable"] < 0.9 * moved["robust"], moved  # 2.39 vs 2.85 deg when written
    assert err["stable"] < 1.1 * err["robust"] and err["stable"] < 0.5 * err["ls"], err


def test_robust_rejects_miscalibrated_images() -> None:
    rng = np.random.default_rng(SEED + 2)
    lights = hemisphere_lights(30, 50.0, rng)
    normals, mask = sphere(min_nz=0.2)
    imgs, _ = render(normals, mask, lights, rng, noise=0.002)
    imgs[:5] *= 1.3  # five images brighter than their stated light intensity
    res = solve(imgs, lights, mask, solver="robust")
    assert res.lights_used is not None
    assert not res.lights_used[:5].any() and res.lights_used[5:].all()
    g = np.where(mask[..., None], normals, 0)[mask].astype(np.float64)
    gains = image_gain_ratios(imgs[:, mask].T.copy(), lights.astype(np.float64), g)
    assert np.all(gains[:5] > 1.2)


def test_robust_rejects_miscalibrated_images_of_a_dark_part() -> None:
    """The same five too-bright images on a dark part (albedo 0.04-0.16, or a short
    exposure): 'well lit' is judged relative to each pixel's albedo, so they are still found."""
    rng = np.random.default_rng(SEED + 2)
    lights = hemisphere_lights(30, 50.0, rng)
    normals, mask = sphere(min_nz=0.2)
    imgs, _ = render(normals, mask, lights, rng, noise=0.0005)
    imgs *= 0.2
    imgs[:5] *= 1.3
    res = solve(imgs, lights, mask, solver="robust")
    assert not res.lights_used[:5].any() and res.lights_used[5:].all()


def test_confidence_counts_the_lights_used_and_allows_for_attached_shadows() -> None:
    """Noiseless Lambertian images are fully explained: confidence ~1 everywhere, also where
    the solver left rejected images out (they are not counted) and near the limb, where some
    lights fall behind the surface (an attached shadow is what the model predicts there)."""
    rng = np.random.default_rng(SEED + 2)
    lights = hemisphere_lights(30, 50.0, rng)
    normals, mask = sphere(min_nz=0.2)
    imgs, _ = render(normals, mask, lights, rng)
    imgs[:5] *= 1.3
    res = solve(imgs, lights, mask, solver="robust")
    assert not res.lights_used[:5].any()
    assert res.confidence[mask].mean() > 0.95  # 1.00 when written; 0.86 counting the 5
    rng = np.random.default_rng(5)
    lights = hemisphere_lights(40, 60.0, rng)
    normals, mask = sphere(min_nz=0.1)
    imgs, _ = render(normals, mask, lights, rng)
    limb = mask & (normals[..., 2] < 0.4)
    shadowed = (np.einsum("hwc,kc->khw", normals, lights) < 0)[:, limb].any(axis=0)
    assert shadowed.mean() > 0.9  # the limb really is in attached shadow under some lights
    res = solve(imgs, lights, mask, solver="robust")
    assert res.confidence[limb].mean() > 0.95  # 1.00 when written; 0.79 without the clip


def test_rank_trimmed_start_leaves_out_the_darkest_and_brightest_fractions() -> None:
    """The robust solver's first fit: least squares on each pixel's observations between the
    ``low`` (darkest) and ``1 - high`` (brightest) rank fractions, the cut values kept."""
    from psinspect.stereo import RobustSettings, _rank_trimmed

    rng = np.random.default_rng(0)
    lights = hemisphere_lights(20, 50.0, rng).astype(np.float64)
    order = rng.permutation(20)
    obs = (np.arange(1, 21, dtype=np.float32)[order] * 0.01)[None]
    st = RobustSettings()
    lo, hi = int(np.floor(st.low * 20)), 20 - int(np.floor(st.high * 20))
    assert (lo, hi) != (int(np.floor(st.high * 20)), 20 - int(np.floor(st.low * 20)))
    keep = (obs[0] >= (lo + 1) * 0.01 - 1e-6) & (obs[0] <= hi * 0.01 + 1e-6)
    assert keep.sum() == hi - lo
    want = np.linalg.lstsq(lights[keep], obs[0, keep].astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(_rank_trimmed(obs, lights, st.low, st.high)[0], want,
                               rtol=1e-4, atol=1e-6)


def test_solve_rejects_bad_inputs() -> None:
    normals, mask = sphere(16)
    lights = lights_from_slant_tilt([10, 20, 30, 40], [0, 90, 180, 270])
    imgs, _ = render(normals, mask, lights, np.random.default_rng(0))
    with pytest.raises(PsinspectError, match="unknown solver"):
        solve(imgs, lights, mask, solver="magic")
    with pytest.raises(PsinspectError, match="lights must be"):
        solve(imgs, lights[:3], mask)
    with pytest.raises(PsinspectError, match="at least 3 lights"):
        solve(imgs[:2], lights[:2], mask)
    with pytest.raises(PsinspectError, match="mask shape"):
        solve(imgs, lights, mask[:-1])
    flat = lights_from_slant_tilt([30, 30, 30], [0, 0, 0])
    with pytest.raises(PsinspectError, match="coplanar"):
        solve(imgs[:3], flat, mask)
    for broken in ([0, np.nan, 1], [0, 0, 0]):
        with pytest.raises(PsinspectError, match="finite non-zero"):
            solve(imgs, np.vstack([lights[:3], broken]), mask)
    with pytest.raises(PsinspectError, match=r"light 1 has z = .* points away from the camera"):
        solve(imgs, -lights, mask)


def test_light_conditioning_is_scale_free() -> None:
    ring = lights_from_slant_tilt([30] * 3, [0, 120, 240]).astype(np.float64)
    cond = light_conditioning(ring)
    assert 0.3 < cond < 0.5
    # independent of the lights' lengths and of how often the set is repeated
    assert light_conditioning(ring * np.array([[1e-6], [1.0], [1e6]])) == pytest.approx(cond)
    assert light_conditioning(np.vstack([ring] * 10)) == pytest.approx(cond)
    assert light_conditioning(lights_from_slant_tilt([30, 30, 30], [0, 0, 0])) < 1e-6
    for bad in (ring[:2], np.vstack([ring, [0, 0, 0]]), np.vstack([ring, [0, np.nan, 1]])):
        assert light_conditioning(bad) == 0.0


def test_light_sets_in_use_are_well_conditioned() -> None:
    """The rendered layouts, their farthest-point subsets of 3-12 lights (``--num-lights``) and
    the DiLiGenT light sets stay far from the coplanarity limit."""
    sets = [default_lights(k, layout) for k in (3, 4, 5, 6, 8, 12, 16, 24, 48, 96)
            for layout in ("diligent", "ring")]
    sets += [np.loadtxt(f) for f in sorted(DILIGENT.glob("*/light_directions.txt"))]
    for lights in sets:
        assert light_conditioning(lights) > 20 * MIN_LIGHT_CONDITIONING
        for k in range(3, min(12, len(lights)) + 1):
            sub = lights[farthest_point_lights(lights, k)]
            assert light_conditioning(sub) > 10 * MIN_LIGHT_CONDITIONING, (len(lights), k)


def test_solve_refuses_nearly_coplanar_lights() -> None:
    """Lights 1-3 of the rendered 12-light layout lie on one row of the planar light grid:
    rank 3 only through rounding, and least squares gave 63 deg mean error on a plate."""
    normals, mask = sphere(16)
    lights = np.round(default_lights(12)[:3].astype(np.float64), 6)  # as light_directions.txt
    assert np.linalg.matrix_rank(lights) == 3  # the old check let them through
    imgs, _ = render(normals, mask, lights, np.random.default_rng(0))
    for solver in ("ls", "robust"):
        with pytest.raises(PsinspectError, match=r"light directions are \(nearly\) coplanar.*"
                                                 r"unreliable"):
            solve(imgs, lights, mask, solver=solver)
    spread = default_lights(12)[[0, 3, 9]]  # three corners of the grid: fine
    imgs, _ = render(normals, mask, spread, np.random.default_rng(0))
    lit = (imgs > 0).all(axis=0) & mask
    res = solve(imgs, spread, mask)
    assert angular_error_deg(res.normals[lit], normals[lit]).max() < 0.1


def test_nearly_coplanar_selection_refused_at_load(tmp_path: Path, monkeypatch,
                                                   capsys) -> None:
    normals, mask = sphere(24)
    lights = default_lights(12)
    imgs, _ = render(normals, mask, lights, np.random.default_rng(1))
    cap = write_capture(tmp_path / "cap", imgs, lights, mask)
    with pytest.raises(PsinspectError, match=r"light_directions\.txt: the 3 selected light "
                                             r"directions are \(nearly\) coplanar"):
        load_capture(cap, select=[0, 1, 2])
    assert load_capture(cap, select=[0, 1, 4]).num_lights == 3
    out = tmp_path / "out"
    code, _, err = run_cli(["normals", cap, "-o", out, "--lights", "1-3"], monkeypatch, capsys)
    errs = error_lines(err)
    assert code == 2 and len(errs) == 1 and "coplanar" in errs[0] and "Traceback" not in err
    assert not out.exists()


def test_robust_keeps_images_when_the_rest_would_be_coplanar() -> None:
    """Image rejection never leaves a (nearly) coplanar light set to solve with."""
    rng = np.random.default_rng(SEED + 3)
    flat = lights_from_slant_tilt([10, 20, 30, 40, 15, 25, 35, 45],
                                  [0] * 4 + [180] * 4).astype(np.float64)
    flat[:, 1] += 1e-4 * np.arange(8)  # the x-z plane, rank 3 only by a hair
    lights = np.vstack([lights_from_slant_tilt([30, 30], [90, 270]), flat])
    normals, mask = sphere(48, min_nz=0.5)
    imgs, _ = render(normals, mask, lights, rng, noise=0.002)
    imgs[:2] *= 1.3  # the two lights out of that plane are brighter than stated
    res = solve(imgs, lights, mask, solver="robust")
    assert res.lights_used is not None and res.lights_used.all()


def test_parse_light_spec() -> None:
    assert parse_light_spec("1-3,5", 10).tolist() == [0, 1, 2, 4]
    assert parse_light_spec(" 4 , 1-2 ,2", 10).tolist() == [0, 1, 3]
    with pytest.raises(PsinspectError, match=r"--lights.*outside.*1-10"):
        parse_light_spec("8-11", 10)
    with pytest.raises(PsinspectError, match="cannot parse"):
        parse_light_spec("1-3,x", 10)
    with pytest.raises(PsinspectError, match="at least 3"):
        parse_light_spec("1,2", 10)
    with pytest.raises(PsinspectError, match="descending"):
        parse_light_spec("5-1", 10)
    # the lights outside are named as ranges, not one by one
    with pytest.raises(PsinspectError, match=r"^--lights '1-200,300': lights 11-200, 300 are "
                                             r"outside the capture's lights 1-10$"):
        parse_light_spec("1-200,300", 10)
    with pytest.raises(PsinspectError, match=r"light 11 is outside"):
        parse_light_spec("1-11", 10)
    # a range to a huge number is refused before it is listed light by light
    with pytest.raises(PsinspectError, match=r"'1-1000000000000' goes past light 100000"):
        parse_light_spec("1-1000000000000", 10)
    # three names of two lights: the count the user sees is explained
    with pytest.raises(PsinspectError, match=r"needs at least 3 lights, and these are 2 "
                                             r"different ones$"):
        parse_light_spec("1,1,2", 10)


def test_skip_lights_parse_as_light_ranges() -> None:
    from psinspect.dataset import parse_skip_lights
    assert parse_skip_lights(["a:1-3,5", "b:2", "a:7"]) == {"a": [0, 1, 2, 4, 6], "b": [1]}
    with pytest.raises(PsinspectError, match=r"^--skip-lights 'a:0-2': lights are numbered "
                                             r"from 1; '0-2' starts at 0$"):
        parse_skip_lights(["a:0-2"])
    with pytest.raises(PsinspectError, match=r"^--skip-lights 'a:3-1': range '3-1' is "
                                             r"descending$"):
        parse_skip_lights(["a:3-1"])
    with pytest.raises(PsinspectError, match=r"--skip-lights 'a:x': cannot parse 'x'"):
        parse_skip_lights(["a:x"])
    with pytest.raises(PsinspectError, match=r"goes past light 100000"):
        parse_skip_lights(["a:1-99999999999"])


def test_farthest_point_lights_spread_and_deterministic() -> None:
    rng = np.random.default_rng(SEED)
    lights = hemisphere_lights(96, 60.0, rng)
    idx = farthest_point_lights(lights, 8)
    assert idx.tolist() == farthest_point_lights(lights, 8).tolist()
    assert len(set(idx.tolist())) == 8 and (np.diff(idx) > 0).all()
    assert int(np.argmax(lights[:, 2])) in idx  # starts at the most frontal light

    def min_angle(sel: np.ndarray) -> float:
        cos = np.clip(lights[sel] @ lights[sel].T, -1, 1)
        np.fill_diagonal(cos, -1)
        return float(np.degrees(np.arccos(cos.max())))

    random_min = np.median([min_angle(rng.choice(96, 8, replace=False)) for _ in range(50)])
    assert min_angle(idx) > 1.5 * random_min
    with pytest.raises(PsinspectError, match="--num-lights"):
        farthest_point_lights(lights, 2)
    with pytest.raises(PsinspectError, match="--num-lights"):
        farthest_point_lights(lights, 97)


@pytest.mark.skipif(not (DILIGENT / "ballPNG").is_dir(),
                    reason=f"DiLiGenT data not found at {DILIGENT} (see shared/data/README.md)")
def test_diligent_ball_ls_matches_published_baseline() -> None:
    cap = load_capture(DILIGENT / "ballPNG")
    assert cap.images.shape[0] == 96 and cap.normals_gt is not None
    ls = run_photometric_stereo(cap, "ls")
    err = angular_error_deg(ls.normals[cap.mask], cap.normals_gt[cap.mask]).mean()
    assert abs(err - 4.10) <= 0.6, err
    robust = run_photometric_stereo(cap, "robust")
    err_r = angular_error_deg(robust.normals[cap.mask], cap.normals_gt[cap.mask]).mean()
    assert err_r < 0.75 * err, (err_r, err)  # specular highlights: robust must clearly help


def test_kept_conditioning_of_weighted_light_sets() -> None:
    """Per pixel, smallest / largest singular value of the weighted lights: the whole set's
    :func:`light_conditioning` for equal weights, 0 for lights in one plane or fewer than 3."""
    from psinspect.stereo import kept_conditioning

    lights = default_lights(12).astype(np.float64)
    w = np.ones((4, 12), np.float32)
    w[1, :] = 0.0
    w[1, [0, 1, 2, 3]] = 1.0  # the top row of the grid: one plane with the view
    w[2, :] = 0.0
    w[2, [0, 5]] = 1.0  # two lights
    w[3, :] = 0.0  # none
    c = kept_conditioning(lights, w)
    assert c[0] == pytest.approx(light_conditioning(lights), rel=1e-6)
    assert c[1] < 1e-3 and c[2] < 1e-6 and c[3] == 0.0


@pytest.mark.parametrize("solver", ["robust", "stable"])
def test_robust_solvers_keep_rim_normals_lit_by_a_row_of_lights(solver: str) -> None:
    """8 of the 12 default grid lights on a noise-free Lambertian sphere: near the shadow line a
    rim pixel is lit by a few lights in nearly one plane, and the Tukey fit on them alone
    turned its normal by up to 76 deg (256 pixels over 45 deg) where it predicted light on dark
    observations; such pixels are now solved over all the lights (ls: its shadow bias only)."""
    normals, mask = sphere(64)
    lights = default_lights(12).astype(np.float64)
    lights = lights[farthest_point_lights(lights, 8)]
    imgs = np.maximum(np.einsum("hwc,kc->khw", normals, lights), 0.0).astype(np.float32)
    err = angular_error_deg(solve(imgs, lights, mask, solver=solver).normals, normals)[mask]
    ls = angular_error_deg(solve(imgs, lights, mask, solver="ls").normals, normals)[mask]
    assert err.max() < 30.0
    assert err.mean() < ls.mean()  # still robust where the kept lights pin the normal down


@pytest.mark.parametrize("solver", ["robust", "stable"])
def test_robust_solvers_do_not_fit_the_dark_observations_of_a_pixel_lit_by_two_lights(
        solver: str) -> None:
    """500 normals lit by exactly 2 of 8 grid lights (albedo 0.7), the dark observations at
    the noise level of a 16-bit camera or exactly 0: the Tukey fit could reject the two lit
    observations and settle on a near-zero albedo that explains only the dark ones (342 of 500
    normals more than 30 deg off, median 65 deg, while the lights kept looked well spread).
    Such pixels are solved by least squares (its shadow bias: up to ~28 deg)."""
    lights = default_lights(12).astype(np.float64)[[0, 2, 3, 6, 7, 9, 10, 11]]
    rng = np.random.default_rng(0)
    n = rng.normal(size=(200_000, 3))
    n[:, 2] = np.abs(n[:, 2])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    shade = n @ lights.T
    two = ((shade > 0.15).sum(axis=1) == 2) & ((shade > 0.0).sum(axis=1) == 2)
    n, shade = n[two][:500], shade[two][:500]
    assert len(n) == 500
    dark_noise = rng.uniform(0.0, 0.005, shade.shape) * (rng.random(shade.shape) < 0.7)
    obs = np.round((0.7 * np.maximum(shade, 0.0) + dark_noise) * 65535) / 65535
    images = obs.T.astype(np.float32)[:, :, None]  # (K, 500, 1): a column of pixels
    res = solve(images, lights, np.ones((500, 1), bool), solver=solver)
    err = angular_error_deg(res.normals[:, 0], n)
    assert err.max() < 30.0
