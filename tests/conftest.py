"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def geometric_choice(tmp_path_factory: pytest.TempPathFactory):
    """The web app's choice of a training-free model directory (no weights to learn) with
    set thresholds, 10 / 20 (degrees)."""
    from psinspect.app import load_model_choices
    from psinspect.models import create_model
    from psinspect.modelstore import save_model_dir

    d = tmp_path_factory.mktemp("geo") / "model"
    save_model_dir(d, create_model("geometric"), threshold=10.0, image_threshold=20.0)
    (choice,) = load_model_choices([d], include_default=False)
    return choice
