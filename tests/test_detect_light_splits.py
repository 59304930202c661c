"""``detect`` on capture folders gives the variation model the capture's half-light-set PS
differences (the light-choice sensitivity it was benchmarked with) and its images (the shading
comparison), so the CLI scores what the benchmark measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psinspect.capture import load_capture, write_capture
from psinspect.detect import load_input, write_detection_outputs
from psinspect.models.variation import light_split_differences
from psinspect.modelstore import load_model_dir
from psinspect.render import default_lights, make_part, render_images
from psinspect.stereo import run_photometric_stereo
from psinspect.train import train_model


def test_detect_passes_light_splits_of_a_capture_to_the_variation_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    part = make_part(rng, size=64, family="casting")
    lights = default_lights(12)
    caps = []
    for i in range(6):
        images, _ = render_images(part.height, part.albedo, part.mask, lights, rng,
                                  specular=0.3, shininess=20.0)
        caps.append(write_capture(tmp_path / f"cap{i}", images, lights, part.mask))
    train_model(caps[:5], tmp_path / "model", model_name="variation", seed=0)
    bundle = load_model_dir(tmp_path / "model")
    assert bundle.model.uses_light_splits

    summary = write_detection_outputs([caps[5]], tmp_path / "det", bundle)
    got = np.load(tmp_path / "det" / "cap5_score.npy")

    # detect solved the capture with the model's PS solver (recorded at training), halves too
    assert summary["ps_solver"] == bundle.input_handling["ps_solver"] == "stable"
    cap = load_capture(caps[5])
    ps = run_photometric_stereo(cap, "stable")
    inp = load_input(caps[5], solver="stable", light_splits=True)
    assert inp.light_splits is not None and inp.light_splits.shape[1:3] == inp.mask.shape
    splits = light_split_differences(cap.images, cap.lights, inp.mask, solver="stable")
    np.testing.assert_allclose(inp.light_splits, splits)
    images = (cap.images, cap.lights)
    assert bundle.model.uses_capture_images
    full = bundle.model.score(inp.normals, inp.mask, ps.confidence, light_splits=splits,
                              capture_images=images)
    np.testing.assert_allclose(got, full.score, rtol=1e-3, atol=1e-4)
    assert full.info["shading_pixels"] > 0.9 * inp.mask.sum()
    for partial in ({"light_splits": splits}, {"capture_images": images}):
        other = bundle.model.score(inp.normals, inp.mask, ps.confidence, **partial)
        assert np.abs(full.score - other.score).max() > 0.05  # each input matters here
    assert summary["inputs"][0]["name"] == "cap5"
