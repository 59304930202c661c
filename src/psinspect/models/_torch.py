"""Shared machinery of the learned (torch) models: patch sampling, the training loop with early
stopping and exact resume, whole-object inference.

Inference sees the object whole, in a window of its bounding box plus ``object_margin`` px
(zero-padded where that reaches past the map's edge; :func:`object_window`), not in tiles:
the networks' GroupNorm statistics span their whole input, so a score computed on a tile, or on
a map with more empty background around the part, would differ. Scores therefore do not depend
on how the part is framed. Only an object larger than ``max_whole_pixels`` is scored in tiles
(memory).

Frame: DiLiGenT camera frame (x right, y up, z toward the camera). Normal maps are
``float32 (H, W, 3)`` unit inside the mask, zero outside; tensors are ``(B, C, H, W)``.

Determinism: the network is initialised from ``seed``; the training data of epoch ``e`` are
drawn from ``numpy.random.default_rng([seed, e])``; the validation set is drawn once from
``default_rng([seed, 10**6])``. A checkpoint taken after epoch ``e`` (network, best network,
Adam state, early-stopping counters, log) therefore resumes to exactly the same result as an
uninterrupted run with the same seed and thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from psinspect.checks import integer, number
from psinspect.errors import PsinspectError
from psinspect.interrupts import thread_pool
from psinspect.models import AnomalyModel, NormalSample, ScoreResult, score_in_window
from psinspect.normalmap import flip, rotate90

#: the largest training crop (px) a model may set as its ``patch``: a batch of 8 such crops
#: takes a few GB in the network
MAX_PATCH = 1024
#: the most channels a network level may have (hyperparameter ``channels``)
MAX_CHANNELS = 1024

#: checkpoint callback: (epoch log entry, state arrays, state meta) -> None
CheckpointFn = Callable[[dict[str, Any], dict[str, np.ndarray], dict[str, Any]], None]


def conv_block(c_in: int, c_out: int, convs: int = 2, norm: str = "gn") -> nn.Sequential:
    """``convs`` 3x3 convolutions (padding keeps the size), each followed by GroupNorm + SiLU
    (``norm="gn"``) or by a plain ReLU (``norm="none"``: about twice as fast on a CPU)."""
    # up to 8 groups of at least 4 channels: the most that divide the width (any width works)
    groups = max(g for g in range(1, max(1, min(8, c_out // 4)) + 1) if c_out % g == 0)
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1))
        if norm == "gn":
            layers += [nn.GroupNorm(groups, c_out), nn.SiLU(inplace=True)]
        elif norm == "none":
            layers.append(nn.ReLU(inplace=True))
        else:
            raise ValueError(f"unknown norm {norm!r}")
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Encoder-decoder over ``len(channels)`` scales (stride-2 max-pooling, bilinear upsampling).

    ``skips``: which decoder levels receive the encoder feature of the same scale, from the
    finest (level 0, full resolution) to the coarsest-but-one. All True = a classic U-Net.
    ``decoder_convs``: 3x3 convolutions per decoder level (2 = classic; 1 = light and fast).
    ``norm``: see :func:`conv_block`.
    Input sizes must be multiples of ``2 ** (len(channels) - 1)`` (callers pad).
    """

    def __init__(self, c_in: int, c_out: int, channels: Sequence[int],
                 skips: Sequence[bool] | None = None, decoder_convs: int = 2,
                 norm: str = "gn") -> None:
        super().__init__()
        chans = [int(c) for c in channels]
        n = len(chans)
        self.skips = [True] * (n - 1) if skips is None else [bool(s) for s in skips]
        if len(self.skips) != n - 1:
            raise ValueError("skips needs one flag per decoder level")
        self.enc = nn.ModuleList()
        prev = c_in
        for c in chans:
            self.enc.append(conv_block(prev, c, 2, norm))
            prev = c
        self.dec = nn.ModuleList()
        for lvl in range(n - 2, -1, -1):
            c_skip = chans[lvl] if self.skips[lvl] else 0
            self.dec.append(conv_block(prev + c_skip, chans[lvl], decoder_convs, norm))
            prev = chans[lvl]
        self.head = nn.Conv2d(prev, c_out, 1)
        self.factor = 2 ** (n - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for i, block in enumerate(self.enc):
            if i > 0:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            feats.append(x)
        for j, block in enumerate(self.dec):
            lvl = len(self.enc) - 2 - j
            x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            if self.skips[lvl]:
                x = torch.cat([x, feats[lvl]], dim=1)
            x = block(x)
        return self.head(x)


def pad_to_multiple(arr: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad the first two axes up to multiples of ``multiple``; returns (padded, (H, W))."""
    h, w = arr.shape[:2]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return arr, (h, w)
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad), (h, w)


def random_dihedral(normals: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 rotations/flips of a normal map, vectors turned with the pixels (exact)."""
    k = int(rng.integers(4))
    n = rotate90(normals, k)
    m = np.rot90(mask, k)
    if rng.random() < 0.5:
        n = flip(n, "lr")
        m = m[:, ::-1]
    return np.ascontiguousarray(n), np.ascontiguousarray(m)


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """While active, torch uses ``threads`` CPU threads (None or 0: as it was); restored
    afterwards, so a training run does not leave a caller's later work (``psinspect run``
    detects after it trains) on its thread count."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def pad_to_size(arrays: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """Zero-pad (centred) arrays sharing (H, W) so that both sides are at least ``size``."""
    h, w = arrays[0].shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return list(arrays)
    top, left = ph // 2, pw // 2
    return [np.pad(a, [(top, ph - top), (left, pw - left)] + [(0, 0)] * (a.ndim - 2))
            for a in arrays]


def crop_window(mask: np.ndarray, size: int, rng: np.random.Generator, min_fill: float = 0.25,
                tries: int = 20, around: tuple[float, float] | None = None
                ) -> tuple[int, int]:
    """Top-left (row, col) of a ``size`` crop of a map at least ``size`` on each side: with
    ``around=(x, y)`` a window containing that point (random offset), else a random window with
    at least ``min_fill`` object pixels where possible."""
    h, w = mask.shape
    if around is not None:
        x, y = around
        r = int(np.clip(y - rng.uniform(0.2, 0.8) * size, 0, h - size))
        c = int(np.clip(x - rng.uniform(0.2, 0.8) * size, 0, w - size))
        return r, c
    best = None
    for _ in range(tries):
        r = int(rng.integers(h - size + 1))
        c = int(rng.integers(w - size + 1))
        fill = float(mask[r:r + size, c:c + size].mean())
        if best is None or fill > best[0]:
            best = (fill, r, c)
        if fill >= min_fill:
            break
    assert best is not None
    return best[1], best[2]


def random_crop(normals: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator,
                min_fill: float = 0.25, tries: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` crop with at least ``min_fill`` object pixels where possible
    (maps smaller than ``size`` are zero-padded, i.e. background)."""
    normals, mask = pad_to_size([normals, mask], size)
    r, c = crop_window(mask, size, rng, min_fill, tries)
    return normals[r:r + size, c:c + size].copy(), mask[r:r + size, c:c + size].copy()


class TorchAnomalyModel(AnomalyModel):
    """Base of the learned models. Subclasses define the network, the training example and the
    loss, and how a network output becomes a score; this class runs training and inference.

    Subclasses implement :meth:`build_net`, :meth:`example` (one training example from a clean
    crop), :meth:`loss` and :meth:`score_window`.
    """

    #: see the module docstring: the object is scored whole, up to this bounding-box area
    #: (4096 x 4096 px, ~7 GB at geo-seg's size); a larger object is scored in tiles of it
    #: (:func:`psinspect.detect.score_map`)
    max_whole_pixels = 4096 * 4096
    fine_tunable = True
    training_only = ("patch", "steps_per_epoch", "lr", "val_patches", "ema")
    #: background kept around the object's bounding box when scoring (px)
    object_margin = 32

    def __init__(self, patch: int = 128, steps_per_epoch: int = 40, lr: float = 2e-3,
                 val_patches: int = 4, ema: float = 0.0) -> None:
        self.steps_per_epoch = integer("steps_per_epoch", steps_per_epoch, 1, 100_000)
        self.lr = number("lr", lr, 0.0, above=True)
        # validation crops are all held in memory at once
        self.val_patches = integer("val_patches", val_patches, 1, 64)
        self.ema = number("ema", ema, 0.0, 1.0, below=True)
        self.net: nn.Module = self._init_net(0)
        # training feeds crops of ``patch`` px to the network as they are: it must halve them
        # down to its coarsest level evenly
        factor = getattr(self.net, "factor", 1)
        self.patch = integer("patch", patch, factor, MAX_PATCH)
        if self.patch % factor:
            raise ValueError(f"patch must be a multiple of {factor} (the network's size step), "
                             f"got {patch!r}")

    # --- subclass API -------------------------------------------------------------------
    def build_net(self) -> nn.Module:
        raise NotImplementedError

    def example(self, normals: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                ) -> dict[str, np.ndarray]:
        """One training example from a clean (patch, patch) crop: float32 arrays, channels
        first, e.g. ``{"x": (C, h, w), "y": (K, h, w), "w": (1, h, w)}``."""
        raise NotImplementedError

    def example_from_map(self, normals: np.ndarray, mask: np.ndarray,
                         rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One training example from a whole clean map (after a random rotation/flip).
        Default: a random crop of ``patch`` x ``patch``, then :meth:`example`."""
        n, m = random_crop(normals, mask, self.patch, rng)
        return self.example(n, m, rng)

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def score_window(self, normals: np.ndarray, mask: np.ndarray,
                     confidence: np.ndarray | None = None) -> ScoreResult:
        """:meth:`score` on the object's window (:func:`object_window`)."""
        raise NotImplementedError

    def score(self, normals: np.ndarray, mask: np.ndarray,
              confidence: np.ndarray | None = None) -> ScoreResult:
        """Score the object's window (bounding box plus ``object_margin``, see the module
        docstring) and place the result in the map: the same scores however much background
        surrounds the part."""
        return score_in_window(self.score_window, normals, mask, confidence,
                               self.object_margin)

    # --- common ---------------------------------------------------------------------------
    def _init_net(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            net = self.build_net()
        return net.to(memory_format=torch.channels_last)  # faster convolutions on CPU

    def base_hyperparameters(self) -> dict[str, Any]:
        return {"patch": self.patch, "steps_per_epoch": self.steps_per_epoch, "lr": self.lr,
                "val_patches": self.val_patches, "ema": self.ema}

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        own = self.net.state_dict()
        missing = sorted(set(own) - set(arrays))
        extra = sorted(set(arrays) - set(own))
        if missing or extra:
            raise PsinspectError(
                f"model {self.name!r}: weights do not match the network (missing "
                f"{missing[:3]}, unexpected {extra[:3]})"
            )
        state = {}
        for k, v in own.items():
            a = arrays[k]
            if tuple(a.shape) != tuple(v.shape):
                raise PsinspectError(
                    f"model {self.name!r}: weight {k} has shape {a.shape}, expected "
                    f"{tuple(v.shape)}"
                )
            if not np.isfinite(a).all():
                raise PsinspectError(f"model {self.name!r}: weight {k} contains NaN or Inf")
            state[k] = torch.from_numpy(np.ascontiguousarray(a)).to(v.dtype)
        self.net.load_state_dict(state)

    def _batch(self, samples: Sequence[NormalSample], count: int, rng: np.random.Generator
               ) -> dict[str, torch.Tensor]:
        exs = []
        for _ in range(count):
            n, m = samples[int(rng.integers(len(samples)))]
            n, m = random_dihedral(n, m, rng)
            exs.append(self.example_from_map(n, m, rng))
        batch = {k: torch.from_numpy(np.stack([e[k] for e in exs])) for k in exs[0]}
        batch["x"] = batch["x"].contiguous(memory_format=torch.channels_last)
        return batch

    def _step(self, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
        """One optimiser step on one batch; returns the loss."""
        loss = self.loss(self.net(batch["x"]), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def _val_loss(self, net: nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        """Mean loss of ``net`` (eval mode, no gradients) over the validation batches."""
        net.eval()
        with torch.no_grad():
            return float(np.mean([float(self.loss(net(b["x"]), b)) for b in batches]))

    def fit(
        self,
        train: Sequence[NormalSample],
        val: Sequence[NormalSample],
        *,
        epochs: int = 30,
        batch_size: int = 8,
        seed: int = 0,
        patience: int = 6,
        threads: int | None = None,
        on_epoch: CheckpointFn | None = None,
        resume: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None,
        init: dict[str, np.ndarray] | None = None,
        **_: Any,
    ) -> list[dict[str, Any]]:
        """Train on clean maps; returns the per-epoch log.

        Each epoch = ``steps_per_epoch`` Adam steps on ``batch_size`` random crops (random
        rotation/flip, model-specific corruption). Validation loss is computed on a fixed set
        of crops of ``val`` (clean maps, corrupted the same way with a fixed seed). The best
        epoch's weights are kept; training stops after ``patience`` epochs without a better
        validation loss. The learning rate follows a cosine from ``lr`` to ``lr / 20``. With
        the ``ema`` hyperparameter > 0 an exponential moving average of the weights (decay
        ``ema`` per step) is validated and kept instead of the raw weights (off by default: no
        gain measured for geo-seg, BENCHMARKS.md 'Design exploration').
        ``on_epoch(entry, arrays, meta)`` receives a full checkpoint after every epoch;
        ``resume=(arrays, meta)`` continues from one.
        ``init``: start from these weights (:meth:`state_arrays` of a trained model of the same
        network) instead of random ones: fine-tuning. Their own validation loss is the one to
        beat (the first epoch's log entry records it as ``initial_val_loss``), so the weights
        kept are never worse on the validation maps than the ones started from; when no epoch
        beats them they are kept (no log entry is then ``best``).
        """
        if not train:
            raise PsinspectError("training needs at least one clean map")
        if not val:
            raise PsinspectError("training needs at least one clean validation map")
        with cpu_threads(threads):
            self.net = self._init_net(seed)
            if init is not None and resume is None:
                self.load_state_arrays(init)
            params = list(self.net.parameters())
            opt = torch.optim.Adam(params, lr=self.lr)
            # with ``ema`` > 0 an exponential moving average of the weights (decay ``ema`` per
            # step) is what validation judges and what is kept; the raw weights keep training
            averaged = (AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(self.ema),
                                      use_buffers=True) if self.ema > 0 else None)
            judged = averaged.module if averaged is not None else self.net
            val_rng = np.random.default_rng([seed, 10**6])
            n_val = len(val) * self.val_patches
            val_batches = [self._batch(val, min(batch_size, n_val), val_rng)
                           for _ in range(max(1, math.ceil(n_val / batch_size)))]
            log: list[dict[str, Any]] = []
            best_val = math.inf
            best_state = {k: v.clone() for k, v in judged.state_dict().items()}
            best_epoch = -1
            bad = 0
            start = 0
            initial_val = None
            if init is not None and resume is None:  # the weights started from: the loss to beat
                best_val = initial_val = self._val_loss(judged, val_batches)
            if resume is not None:
                arrays, meta = resume
                self.load_state_arrays({k[4:]: v for k, v in arrays.items()
                                        if k.startswith("net.")})
                best_state = {k[5:]: torch.from_numpy(np.ascontiguousarray(v))
                              for k, v in arrays.items() if k.startswith("best.")}
                opt_state = opt.state_dict()
                for i, _p in enumerate(params):
                    if f"opt.{i}.exp_avg" in arrays:
                        opt_state["state"][i] = {
                            "step": torch.tensor(float(meta["opt_steps"][i])),
                            "exp_avg": torch.from_numpy(arrays[f"opt.{i}.exp_avg"].copy()),
                            "exp_avg_sq": torch.from_numpy(arrays[f"opt.{i}.exp_avg_sq"].copy()),
                        }
                opt.load_state_dict(opt_state)
                if averaged is not None:
                    judged.load_state_dict({k[4:]: torch.from_numpy(np.ascontiguousarray(v))
                                            for k, v in arrays.items() if k.startswith("ema.")})
                    averaged.n_averaged.fill_(int(meta["ema_updates"]))
                log = list(meta["log"])
                best_val, best_epoch, bad = meta["best_val"], meta["best_epoch"], meta["bad"]
                start = int(meta["epoch"]) + 1
                if meta.get("stopped"):
                    start = epochs
            for epoch in range(start, epochs):
                t0 = time.perf_counter()
                decay = 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs)))
                lr = self.lr * (0.05 + decay)
                for g in opt.param_groups:
                    g["lr"] = lr
                rng = np.random.default_rng([seed, epoch])
                self.net.train()
                losses = []
                # the next batch is made in a worker thread while the network trains on this one
                # (numpy / OpenCV release the GIL); batches are drawn in order from the epoch's
                # generator, so the result does not depend on the timing
                with thread_pool(1) as pool:
                    pending = pool.submit(self._batch, train, batch_size, rng)
                    for step in range(self.steps_per_epoch):
                        batch = pending.result()
                        if step + 1 < self.steps_per_epoch:
                            pending = pool.submit(self._batch, train, batch_size, rng)
                        losses.append(self._step(opt, batch))
                        if averaged is not None:
                            averaged.update_parameters(self.net)
                vl = self._val_loss(judged, val_batches)
                improved = vl < best_val
                if improved:
                    best_val, best_epoch, bad = vl, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in judged.state_dict().items()}
                else:
                    bad += 1
                stopped = bad >= patience
                entry = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": vl,
                         "lr": lr, "best": improved, "seconds": time.perf_counter() - t0}
                if initial_val is not None and epoch == 0:
                    entry["initial_val_loss"] = initial_val
                log.append(entry)
                if on_epoch is not None:
                    arrays = {f"net.{k}": v.detach().numpy().copy()
                              for k, v in self.net.state_dict().items()}
                    arrays.update({f"best.{k}": v.numpy().copy() for k, v in best_state.items()})
                    if averaged is not None:
                        arrays.update({f"ema.{k}": v.detach().numpy().copy()
                                       for k, v in judged.state_dict().items()})
                    steps = []
                    st = opt.state_dict()["state"]
                    for i in range(len(params)):
                        if i in st:
                            arrays[f"opt.{i}.exp_avg"] = st[i]["exp_avg"].numpy().copy()
                            arrays[f"opt.{i}.exp_avg_sq"] = st[i]["exp_avg_sq"].numpy().copy()
                            steps.append(float(st[i]["step"]))
                        else:
                            steps.append(0.0)
                    meta = {"epoch": epoch, "best_val": best_val, "best_epoch": best_epoch,
                            "bad": bad, "log": log, "opt_steps": steps, "stopped": stopped,
                            "ema_updates": int(averaged.n_averaged) if averaged is not None else 0}
                    on_epoch(entry, arrays, meta)
                if stopped:
                    break
            self.net.load_state_dict(best_state)
            self.net.eval()
            return log

    def run_net(self, x: np.ndarray) -> np.ndarray:
        """Network on one (C, H, W) float32 input, or a batch (B, C, H, W) of inputs of one
        size, of any size (padded to the net's multiple); returns (K, H, W) or (B, K, H, W)."""
        factor = getattr(self.net, "factor", 1)
        batch = x if x.ndim == 4 else x[None]
        xp, (h, w) = pad_to_multiple(np.moveaxis(batch, 1, -1).transpose(1, 2, 0, 3), factor)
        t = torch.from_numpy(np.ascontiguousarray(xp.transpose(2, 3, 0, 1)))
        t = t.contiguous(memory_format=torch.channels_last)
        self.net.eval()
        with torch.inference_mode():
            out = self.net(t).numpy()[:, :, :h, :w]
        return out if x.ndim == 4 else out[0]
