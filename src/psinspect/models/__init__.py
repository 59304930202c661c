"""Anomaly models for normal maps: a tiny registry, one file per model.

Every model maps a normal map to a per-pixel anomaly score. Frame of all vector fields: DiLiGenT
camera frame (x right, y up, z toward the camera); normal maps are ``float32 (H, W, 3)``, unit
inside the mask, zero outside.

Adding a model is adding a file here that subclasses :class:`AnomalyModel` and decorates it with
:func:`register`. ``create_model(name, **kw)`` builds one.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from psinspect.errors import PsinspectError


@dataclass
class ScoreResult:
    """Output of :meth:`AnomalyModel.score`.

    score: (H, W) float32, higher = more anomalous, exactly 0 outside the mask.
    reference: (H, W, 3) float32 what the model thinks the surface should be (reconstruction,
        smoothed field or template), or ``None`` where the model has no such notion.
    unreliable: optional (H, W) bool, object pixels whose score was down-weighted because PS
        was unreliable there (low confidence); ``None`` where the model does not say.
    info: optional JSON-able facts about this scoring (e.g. the registration of a template
        model: angle, shift, correlation), for reports.
    image_scale: the map-level step (:meth:`AnomalyModel.finish_map`) divided ``score`` by
        this; the image score (pass/fail) is taken on ``score * image_scale``, the map's
        absolute level.
    """

    score: np.ndarray
    reference: np.ndarray | None = None
    unreliable: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    image_scale: float = 1.0


#: a training example: (normals (H, W, 3) float32, mask (H, W) bool)
NormalSample = tuple[np.ndarray, np.ndarray]


class AnomalyModel(ABC):
    """Base class. Subclasses set ``name`` and implement ``score``; learned ones also ``fit``."""

    name: ClassVar[str]
    #: whether ``fit`` learns anything (False for training-free models)
    trainable: ClassVar[bool] = True
    #: the test-time augmentation levels (values of a ``tta`` attribute: copies of the map
    #: scored and averaged) the model can score at; empty where it has no such setting.
    #: Training calibrates thresholds for each (config ``tta_thresholds``)
    tta_levels: ClassVar[tuple[int, ...]] = ()
    #: the photometric-stereo solver (:data:`psinspect.stereo.SOLVERS`) for capture folders this
    #: model is trained on; training records the one it used in the model's config
    #: (``input.ps_solver``) and ``detect`` and the web app solve capture folders with it
    ps_solver: ClassVar[str] = "robust"
    #: whether the model learns one part type from instances of it (known-part inspection), as
    #: opposed to what good surfaces look like in general
    known_part: ClassVar[bool] = False
    #: the fewest good parts it trains on (validation maps included); ``train`` refuses fewer
    #: before any capture is solved
    min_training_parts: ClassVar[int] = 2
    #: whether training can start from another trained model's weights (``fit(init=...)``,
    #: ``psinspect train --init-from``): the networks
    fine_tunable: ClassVar[bool] = False
    #: hyperparameters a fine-tune keeps: those that shape the network or compute the
    #: features it was trained on (changing them is refused, not just when the weights'
    #: shapes no longer fit)
    fine_tune_fixed: ClassVar[tuple[str, ...]] = ()
    #: hyperparameters that shape only training (its examples, loss and schedule), not how a
    #: trained model scores: a fine-tune that changed no others and kept the weights it
    #: started from scores as that model does, so ``train`` pools that model's stored clean
    #: image scores into its pass/fail fit. Unlisted ones count as scoring settings
    training_only: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def score(
        self, normals: np.ndarray, mask: np.ndarray, confidence: np.ndarray | None = None
    ) -> ScoreResult:
        """Per-pixel anomaly score of one normal map of any size.

        ``confidence``: optional (H, W) float32 in [0, 1] from photometric stereo (1 = reliable);
        models may down-weight unreliable pixels.
        """

    def finish_map(self, score: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
        """A map-level step on the WHOLE map's score after tiles were joined
        (:func:`psinspect.detect.score_map`, the one way every map is scored); ``score``
        (H, W) float32, 0 outside ``mask``. Returns the new score and the factor it was divided
        by (:attr:`ScoreResult.image_scale`). Default: none."""
        return score, 1.0

    def fit(
        self,
        train: Sequence[NormalSample],
        val: Sequence[NormalSample],
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Learn from defect-free maps; returns a log (one dict per epoch). Default: nothing."""
        return []

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-able constructor arguments, so ``create_model(name, **hp)`` rebuilds the model."""
        return {}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Learned parameters as named arrays (saved with safetensors). Default: none."""
        return {}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays`."""
        if arrays:
            raise PsinspectError(f"model {self.name!r} expects no weights, got {len(arrays)}")


def score_in_window(
    score_window: Callable[[np.ndarray, np.ndarray, np.ndarray | None], ScoreResult],
    normals: np.ndarray, mask: np.ndarray, confidence: np.ndarray | None, margin: int,
) -> ScoreResult:
    """``score_window`` run on the object's window, its bounding box plus ``margin`` px
    (:func:`psinspect.normalmap.object_window`, zero-padded past the map's edges), and its
    result placed in the map: the same scores however much background surrounds the part,
    as the window moves with the object (a model that pools over its input or works on a
    coarser grid would otherwise score the part by where it lies in the map).

    A mask of several separate objects (8-connected components: parts side by side, stray
    specks) has each scored on its own window with the others left out, so a part scores as
    it would alone (one window around all of them scored a clean casting 37 times higher,
    and failed it, for a 3 x 3 speck 400 px away). ``info`` and ``image_scale`` are those of
    the largest object's result (the same for all of a model's windows)."""
    from scipy import ndimage

    from psinspect.normalmap import object_window, put_window, take_window

    mask = np.asarray(mask, bool)
    lab, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count <= 1:
        win = object_window(mask, margin)
        if win is None:
            return score_window(normals, mask, confidence)
        res = score_window(take_window(normals, win), take_window(mask, win),
                           None if confidence is None else take_window(confidence, win))
        shape = mask.shape
        return ScoreResult(
            score=put_window(res.score, win, shape),
            reference=None if res.reference is None else put_window(res.reference, win,
                                                                    shape),
            unreliable=None if res.unreliable is None else put_window(res.unreliable, win,
                                                                      shape),
            info=res.info, image_scale=res.image_scale)
    h, w = mask.shape
    score = np.zeros((h, w), np.float32)
    reference = unreliable = first = None
    sizes = np.bincount(lab.ravel())[1:]
    boxes = ndimage.find_objects(lab)
    for i in np.argsort(-sizes, kind="stable"):  # largest first
        rows, cols = boxes[i]
        win = (rows.start - margin, rows.stop + margin, cols.start - margin, cols.stop + margin)
        one = take_window(lab, win) == i + 1
        res = score_window(np.where(one[..., None], take_window(normals, win), 0
                                    ).astype(normals.dtype), one,
                           None if confidence is None else take_window(confidence, win))
        first = res if first is None else first
        if res.reference is not None and reference is None:
            reference = np.zeros((h, w, 3), res.reference.dtype)
        if res.unreliable is not None and unreliable is None:
            unreliable = np.zeros((h, w), bool)
        # this object's pixels of the window (all inside the map), in map coordinates
        a0, a1, b0, b1 = max(win[0], 0), min(win[1], h), max(win[2], 0), min(win[3], w)
        inside = (slice(a0 - win[0], a1 - win[0]), slice(b0 - win[2], b1 - win[2]))
        sel = one[inside]
        for out, got in ((score, res.score), (reference, res.reference),
                         (unreliable, res.unreliable)):
            if got is not None:
                out[a0:a1, b0:b1][sel] = got[inside][sel]
    return ScoreResult(score=score, reference=reference, unreliable=unreliable,
                       info=first.info, image_scale=first.image_scale)


#: the default model (``train``, ``run``; the bundled model is one)
DEFAULT_MODEL = "geo-seg"

_REGISTRY: dict[str, type[AnomalyModel]] = {}


def register(cls: type[AnomalyModel]) -> type[AnomalyModel]:
    """Class decorator adding a model to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    from psinspect.interrupts import held

    with held():  # (torch loads here: a Ctrl-C inside its import would abort the process)
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")


def available_models() -> list[str]:
    """Names of all registered models."""
    _load_all()
    return sorted(_REGISTRY)


def fine_tunable_models() -> list[str]:
    """Names of the registered models that training can start from (``fine_tunable``)."""
    _load_all()
    return sorted(n for n, cls in _REGISTRY.items() if cls.fine_tunable)


def model_class(name: str) -> type[AnomalyModel]:
    """The registered model class of a name (its class attributes, without building one: a
    torch model's construction runs torch kernels); unknown names are a
    :class:`PsinspectError`."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PsinspectError(
            f"unknown model {name!r} (available: {', '.join(sorted(_REGISTRY))})"
        ) from None


def hyperparameter_names(cls: type) -> set[str] | None:
    """The keyword arguments a model class's constructor takes, through the ``**kwargs`` its
    ``__init__`` passes on to a base class's (None: some class takes any)."""
    names: set[str] = set()
    for c in cls.__mro__:
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return None


def create_model(name: str, **hyperparameters: Any) -> AnomalyModel:
    """Build a registered model by name; unknown names and hyperparameters are a
    :class:`PsinspectError`."""
    klass = model_class(name)
    cls: Callable[..., AnomalyModel] = klass
    known = hyperparameter_names(klass)
    unknown = sorted(set(hyperparameters) - known) if known is not None else []
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        raise PsinspectError(
            f"model {name!r}: unknown hyperparameter {unknown[0]!r}"
            + (f" (did you mean {near[0]!r}?)" if near else "")
            + f"; its hyperparameters: {', '.join(sorted(known))}")
    try:
        return cls(**hyperparameters)
    except (TypeError, ValueError, RuntimeError) as err:  # values of a wrong kind
        raise PsinspectError(f"model {name!r}: bad hyperparameters ({err})") from None
