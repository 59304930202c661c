"""Contracts of the torch model machinery (``psinspect.models._torch``) and of the model
registry (``psinspect.models``), tests a mutation audit asked for: the rotations/flips, crops
and padding of training examples, padding at inference, the learning-rate schedule and the
optimiser steps, the epochs' own data, ties in early stopping, resuming a stopped run, the
thread setting, weights refused, the object's scoring window and what is carried out of it,
hyperparameters that round-trip, and the registry's lists and refusals.

A tiny stand-in model (a two-level U-Net without GroupNorm, a mean-squared reconstruction
loss) keeps every test fast and free of any one model's features.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from psinspect.errors import PsinspectError
from psinspect.models import (
    DEFAULT_MODEL,
    ScoreResult,
    available_models,
    create_model,
    fine_tunable_models,
    register,
)
from psinspect.models._torch import (
    TorchAnomalyModel,
    UNet,
    crop_window,
    pad_to_multiple,
    pad_to_size,
    random_crop,
    random_dihedral,
)
from psinspect.normalmap import flip, rotate90


class Stub(TorchAnomalyModel):
    """Stand-in: the example is the crop itself (x = y = normals, channels first)."""

    name = "stub"

    def build_net(self) -> torch.nn.Module:
        return UNet(3, 3, [4, 8], norm="none")

    def example(self, normals, mask, rng):
        x = np.ascontiguousarray(normals.transpose(2, 0, 1), dtype=np.float32)
        return {"x": x, "y": x.copy()}

    def loss(self, out, batch):
        return ((out - batch["y"]) ** 2).mean()

    def score_window(self, normals, mask, confidence=None):
        raise NotImplementedError


def _map(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random unit normals inside an asymmetric mask (an off-centre L), zero outside."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    m[1:h - 2, 1:w // 3] = True
    m[h // 2:h - 2, 1:w - 3] = True
    v = rng.normal(size=(h, w, 3)).astype(np.float32)
    v[..., 2] = np.abs(v[..., 2]) + 0.5
    n = (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)
    n[~m] = 0
    return n, m


def _support(n: np.ndarray) -> np.ndarray:
    return np.linalg.norm(n, axis=-1) > 0


def _stub_maps(count: int, size: int = 24) -> list[tuple[np.ndarray, np.ndarray]]:
    return [_map(size, size, seed) for seed in range(count)]


# --- training examples: rotations/flips, padding, crops -----------------------------------


def test_random_dihedral_draws_all_eight_and_turns_the_mask_with_the_normals() -> None:
    n, m = _map(6, 9)
    variants = {}
    for k in range(4):
        for mirrored in (False, True):
            vn, vm = rotate90(n, k), np.rot90(m, k)
            if mirrored:
                vn, vm = flip(vn, "lr"), vm[:, ::-1]
            variants[(k, mirrored)] = (vn, vm)
    seen = set()
    for seed in range(120):
        dn, dm = random_dihedral(n, m, np.random.default_rng(seed))
        assert np.array_equal(_support(dn), dm), seed
        key = next(key for key, (vn, vm) in variants.items()
                   if vn.shape == dn.shape and np.array_equal(vn, dn))
        assert np.array_equal(variants[key][1], dm)
        seen.add(key)
    assert len(seen) == 8


def test_pad_to_size_centres_and_pads_only_short_sides() -> None:
    a = np.ones((3, 5), np.float32)
    b = np.ones((3, 5, 3), np.float32)
    pa, pb = pad_to_size([a, b], 8)
    assert pa.shape == (8, 8) and pb.shape == (8, 8, 3)
    assert pa[2:5, 1:6].all() and pa.sum() == 15  # top 2 / bottom 3, left 1 / right 2
    assert pb[2:5, 1:6].all() and pb.sum() == 45
    tall = np.ones((10, 4), np.float32)  # tall enough, too narrow: padded across only
    (pt,) = pad_to_size([tall], 8)
    assert pt.shape == (10, 8) and pt[:, 2:6].all() and pt.sum() == 40


def test_pad_to_multiple_pads_bottom_and_right_with_zeros() -> None:
    arr = np.random.default_rng(0).random((5, 7, 2)).astype(np.float32) + 1
    out, hw = pad_to_multiple(arr, 4)
    assert hw == (5, 7) and out.shape == (8, 8, 2)
    assert np.array_equal(out[:5, :7], arr)
    assert out.sum() == pytest.approx(arr.sum())
    same, hw = pad_to_multiple(arr[:4, :4], 4)
    assert same.shape == (4, 4, 2) and hw == (4, 4)


def test_crop_window_around_a_point_contains_it() -> None:
    mask = np.zeros((100, 120), bool)
    for seed in range(60):
        rng = np.random.default_rng(seed)
        r, c = crop_window(mask, 16, rng, around=(90.0, 20.0))  # (x, y)
        assert r <= 20 < r + 16 and c <= 90 < c + 16, (seed, r, c)
        r, c = crop_window(mask, 16, rng, around=(3.0, 97.0))  # near a corner: clipped
        assert 0 <= r <= 84 and 0 <= c <= 104
        assert r <= 97 < r + 16 and c <= 3 < c + 16, (seed, r, c)


def test_crop_window_keeps_the_fullest_try_and_fits_a_map_of_its_size() -> None:
    mask = np.zeros((64, 64), bool)
    mask[:24, :24] = True
    # an unreachable fill: every try is made and the fullest one is kept
    r, c = crop_window(mask, 16, np.random.default_rng(0), min_fill=2.0, tries=400)
    assert mask[r:r + 16, c:c + 16].all()
    # a map exactly the crop's size has one window
    full = np.ones((16, 16), bool)
    assert crop_window(full, 16, np.random.default_rng(1)) == (0, 0)


def test_random_crop_takes_mask_and_normals_from_the_same_window() -> None:
    n, m = _map(40, 56)
    for seed in range(30):
        cn, cm = random_crop(n, m, 16, np.random.default_rng(seed), min_fill=0.0)
        assert cn.shape == (16, 16, 3) and cm.shape == (16, 16)
        assert np.array_equal(_support(cn), cm), seed
    small_n, small_m = _map(10, 12)
    cn, cm = random_crop(small_n, small_m, 16, np.random.default_rng(0))
    assert cm.shape == (16, 16) and cm.sum() == small_m.sum()
    assert np.array_equal(_support(cn), cm)


def test_a_batch_draws_from_every_training_map() -> None:
    model = Stub(patch=16)
    maps = []
    for i in range(4):  # map i: z component i + 1 everywhere (kept by turns and mirrors)
        n = np.zeros((16, 16, 3), np.float32)
        n[..., 2] = i + 1
        maps.append((n, np.ones((16, 16), bool)))
    batch = model._batch(maps, 40, np.random.default_rng(0))
    assert batch["x"].shape == (40, 3, 16, 16)
    assert set(np.unique(batch["x"][:, 2].numpy())) == {1.0, 2.0, 3.0, 4.0}


# --- inference -------------------------------------------------------------------------------


def test_unet_factor_and_run_net_pad_to_the_smallest_multiple() -> None:
    assert UNet(3, 3, [4, 8]).factor == 2 and UNet(3, 3, [4, 8, 8]).factor == 4
    model = Stub()
    model.net = UNet(3, 3, [4, 8, 8], norm="none")
    x = np.random.default_rng(0).random((3, 21, 27)).astype(np.float32)
    out = model.run_net(x)
    assert out.shape == (3, 21, 27)
    padded = np.pad(x, [(0, 0), (0, 3), (0, 1)])  # to 24 x 28, zeros below and right
    with torch.no_grad():
        ref = model.net(torch.from_numpy(padded[None])).numpy()[0, :, :21, :27]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    batch = model.run_net(np.stack([x, x[:, ::-1, :].copy()]))
    assert batch.shape == (2, 3, 21, 27)
    np.testing.assert_allclose(batch[0], out, rtol=1e-5, atol=1e-6)


def test_score_scores_the_bounding_box_plus_the_margin_and_places_everything_back() -> None:
    seen = {}

    class Window(Stub):
        def score_window(self, normals, mask, confidence=None):
            seen["shape"] = mask.shape
            s = mask.astype(np.float32)
            return ScoreResult(score=s, reference=normals, unreliable=mask.copy(),
                               info={"k": 1}, image_scale=2.5)

    assert TorchAnomalyModel.object_margin == 32
    n = np.zeros((200, 210, 3), np.float32)
    m = np.zeros((200, 210), bool)
    m[40:60, 50:80] = True
    n[m] = (0.0, 0.0, 1.0)
    res = Window().score(n, m)
    assert seen["shape"] == (20 + 64, 30 + 64)
    assert np.array_equal(res.score, m.astype(np.float32))
    assert np.array_equal(res.unreliable, m)
    assert np.array_equal(res.reference, n)
    assert res.info == {"k": 1} and res.image_scale == 2.5


# --- training loop ---------------------------------------------------------------------------


def test_each_optimiser_step_uses_only_its_own_batchs_gradient() -> None:
    model = Stub()
    opt = torch.optim.SGD(model.net.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    a, b = ({"x": torch.from_numpy(rng.random((2, 3, 8, 8)).astype(np.float32)),
             "y": torch.from_numpy(rng.random((2, 3, 8, 8)).astype(np.float32))}
            for _ in range(2))
    model._step(opt, a)
    after_a = {k: v.clone() for k, v in model.net.state_dict().items()}
    model._step(opt, b)
    ref = Stub()
    ref.net.load_state_dict(after_a)
    ref.loss(ref.net(b["x"]), b).backward()
    for (name, p), q in zip(model.net.named_parameters(), ref.net.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), (q - 0.1 * q.grad).detach().numpy(),
                                   rtol=1e-5, atol=1e-7, err_msg=name)


def test_learning_rate_is_a_cosine_from_lr_towards_lr_over_20_and_the_optimiser_uses_it(
        ) -> None:
    model = Stub(patch=16, steps_per_epoch=2, lr=1e-3, val_patches=1)
    used: list[float] = []
    step = model._step
    model._step = lambda opt, batch: (used.append(opt.param_groups[0]["lr"]), step(opt, batch))[1]
    log = model.fit(_stub_maps(2), _stub_maps(1), epochs=4, batch_size=2, seed=0, patience=10)
    lrs = [e["lr"] for e in log]
    assert len(lrs) == 4 and lrs[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert all(lr > 1e-3 / 20 for lr in lrs)
    for e, lr in enumerate(lrs):  # half a cosine over ``epochs``: 1e-3 / 20 is epoch 4's
        assert lr == pytest.approx(1e-3 / 20 + (1e-3 - 1e-3 / 20) * (1 + math.cos(math.pi * e / 4))
                                   / 2)
    assert used == pytest.approx([lr for lr in lrs for _ in range(2)])


def test_each_epoch_trains_on_its_own_draws_from_seed_and_epoch() -> None:
    model = Stub(patch=16, steps_per_epoch=2, val_patches=1)
    train = _stub_maps(3)
    firsts: list[torch.Tensor] = []
    step = model._step

    def record(opt, batch):
        firsts.append(batch["x"].clone())
        return step(opt, batch)

    model._step = record
    model.fit(train, _stub_maps(1), epochs=2, batch_size=2, seed=5, patience=10)
    assert len(firsts) == 4
    for e in range(2):
        want = Stub(patch=16)._batch(train, 2, np.random.default_rng([5, e]))["x"]
        assert torch.equal(firsts[2 * e], want), e
    assert not torch.equal(firsts[0], firsts[2])


def test_validation_takes_val_patches_per_map_in_batches_no_larger_than_needed() -> None:
    counts: list[int] = []

    class Counting(Stub):
        def _batch(self, samples, count, rng):
            if samples is val:
                counts.append(count)
            return super()._batch(samples, count, rng)

    train = _stub_maps(2)
    val = _stub_maps(1)
    Counting(patch=16, steps_per_epoch=1, val_patches=1).fit(train, val, epochs=1, batch_size=4)
    assert counts == [1]
    val = _stub_maps(3)
    counts.clear()
    Counting(patch=16, steps_per_epoch=1, val_patches=1).fit(train, val, epochs=1, batch_size=2)
    assert sum(counts) >= 3 and all(c <= 2 for c in counts) and len(counts) == 2


def test_an_equal_validation_loss_is_not_an_improvement_and_a_stopped_run_stays_stopped(
        ) -> None:
    train, val = _stub_maps(2), _stub_maps(1)
    model = Stub(patch=16, steps_per_epoch=1, val_patches=1)
    model._val_loss = lambda net, batches: 1.0
    saved = {}

    def on_epoch(entry, arrays, meta):
        saved["state"] = (arrays, meta)

    log = model.fit(train, val, epochs=6, batch_size=2, seed=0, patience=2, on_epoch=on_epoch)
    assert [e["best"] for e in log] == [True, False, False]
    assert saved["state"][1]["stopped"] is True
    again = Stub(patch=16, steps_per_epoch=1, val_patches=1)
    again._val_loss = lambda net, batches: 1.0
    log2 = again.fit(train, val, epochs=6, batch_size=2, seed=0, patience=2,
                     resume=saved["state"])
    assert [e["epoch"] for e in log2] == [0, 1, 2]
    for k, v in model.state_arrays().items():
        np.testing.assert_array_equal(again.state_arrays()[k], v)


def test_fit_trains_on_its_thread_count_restores_the_callers_and_seeds_the_network() -> None:
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    during: list[int] = []
    try:
        Stub(patch=16, steps_per_epoch=1, val_patches=1).fit(
            _stub_maps(1), _stub_maps(1), epochs=1, batch_size=1, threads=want,
            on_epoch=lambda *_: during.append(torch.get_num_threads()))
        assert during == [want]
        assert torch.get_num_threads() == before  # a caller's later work keeps its own
    finally:
        torch.set_num_threads(before)
    model = Stub()
    a, a2, b = (model._init_net(s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], a2[k]) for k in a)
    assert not all(torch.equal(a[k], b[k]) for k in a)


# --- weights and hyperparameters -----------------------------------------------------------


def test_load_state_arrays_refuses_extra_weights_and_any_non_finite_value() -> None:
    model = Stub()
    good = model.state_arrays()
    with pytest.raises(PsinspectError, match="do not match"):
        model.load_state_arrays({**good, "extra.weight": np.zeros(3, np.float32)})
    key = next(k for k, v in good.items() if v.size > 4)
    for bad_value in (np.nan, np.inf):
        bad = {k: v.copy() for k, v in good.items()}
        bad[key].flat[2] = bad_value
        with pytest.raises(PsinspectError, match="NaN or Inf"):
            model.load_state_arrays(bad)


@pytest.mark.parametrize("name", ["geo-seg", "unet-ae"])
def test_hyperparameters_round_trip_through_create_model(name: str) -> None:
    hp = {"channels": [4, 8], "patch": 48, "steps_per_epoch": 7, "lr": 1e-3, "val_patches": 3,
          "ema": 0.5}
    got = create_model(name, **hp).hyperparameters()
    for k, v in hp.items():
        assert got[k] == v, k
    assert create_model(name, **got).hyperparameters() == got


# --- registry --------------------------------------------------------------------------------


def test_registry_lists_refusals_and_default() -> None:
    names = available_models()
    assert names == sorted(names)
    assert {"geometric", "unet-ae", "geo-seg", "variation"} <= set(names)
    assert fine_tunable_models() == ["geo-seg", "unet-ae"]
    assert DEFAULT_MODEL == "geo-seg"
    with pytest.raises(PsinspectError, match=r"unknown model 'nope' \(available: geo-seg"):
        create_model("nope")
    for name in ("geo-seg", "unet-ae", "geometric"):  # (no class name: one line for users)
        with pytest.raises(PsinspectError, match=rf"^model '{name}': unknown hyperparameter "
                                                 r"'bogus'; its hyperparameters: \w"):
            create_model(name, bogus=1)
    with pytest.raises(PsinspectError, match=r"'chanels' \(did you mean 'channels'\?\)"):
        create_model("geo-seg", chanels=[8, 16])
    with pytest.raises(PsinspectError, match="bad hyperparameters"):
        create_model("geo-seg", ema=1.0)


def test_register_returns_the_class_it_registers() -> None:
    from psinspect.models import _REGISTRY

    class Probe(Stub):
        name = "probe-for-test"

    try:
        assert register(Probe) is Probe
        assert _REGISTRY["probe-for-test"] is Probe
    finally:
        _REGISTRY.pop("probe-for-test", None)
