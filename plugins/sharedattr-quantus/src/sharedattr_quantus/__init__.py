"""sharedattr plugin: attribution metrics computed by Quantus 0.6, to cross-check sharedattr's own.

Registers ``quantus_pointing_game``, ``quantus_relevance_mass``, ``quantus_relevance_rank``,
``quantus_sparseness`` and ``quantus_faithfulness_correlation`` through the ``sharedattr``
entry point declared in this package's ``pyproject.toml``. Quantus is imported only when
a metric is first scored (it takes seconds), so listing plugins stays fast.

Every metric hands Quantus the images ``x_batch`` ``[B, C, H, W]``, the neuron indices
as ``y_batch`` (Quantus scores ``model(x)[i, y_i]``, with ``softmax=False``), the maps
as ``a_batch`` ``[B, 1, H, W]`` and, for localisation, the masks as ``s_batch``
``[B, 1, H, W]``. Quantus' max-normalisation is off and ``abs`` is set to match the
sharedattr metric of the same name; its warnings and prints are silenced. Where Quantus
0.6 defines a metric differently, the docstring of the metric says how.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from sharedattr.plugin import AttributionBatch, Params, hookimpl


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Quantus: its warnings (e.g. empty masks, escape sequences on import) and its prints."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def quantus_module() -> Any:
    """The ``quantus`` module, imported on first use."""
    with quiet():
        import quantus
    return quantus


def as_numpy(batch: AttributionBatch) -> dict[str, np.ndarray | None]:
    """The batch as Quantus arrays: ``x_batch`` ``[B, C, H, W]``, ``y_batch`` ``[B]``, ``a_batch``/``s_batch``
    ``[B, 1, H, W]`` (``s_batch`` None without masks)."""
    masks = batch.masks
    return {
        "x_batch": batch.inputs.detach().float().cpu().numpy(),
        "y_batch": batch.targets.detach().long().cpu().numpy(),
        "a_batch": batch.maps.detach().float().cpu().numpy()[:, None],
        "s_batch": masks.detach().bool().cpu().numpy()[:, None] if masks is not None else None,
    }


class _Unwrapped(nn.Module):
    """The encoding model behind a wall: Quantus sees no submodules, so ``softmax=False`` never edits it.

    (Quantus 0.6 strips an ``nn.Softmax`` it finds last in ``model.modules()`` when
    ``softmax=False``; the encoding model's raw neuron responses are what is scored.)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.forward_fn = model.__call__
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_fn(x)


class QuantusMetric:
    """Runs one Quantus metric on a batch and returns its scores ``[B]`` as a tensor on the maps' device.

    Quantus 0.6 refuses (asserts on) a batch whose attributions all have one value; such
    a batch scores NaN here.
    """

    quantus_name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    requires_masks: ClassVar[bool] = False
    needs_model: ClassVar[bool] = False

    def options(self) -> dict[str, Any]:
        """Keyword arguments of the Quantus metric's constructor."""
        return {"abs": False}

    def arrays(self, batch: AttributionBatch) -> dict[str, np.ndarray | None]:
        return as_numpy(batch)

    def run(self, batch: AttributionBatch) -> np.ndarray:
        """Raw Quantus scores ``[B]``."""
        quantus = quantus_module()
        arrays = self.arrays(batch)
        if np.unique(arrays["a_batch"]).size < 2:
            return np.full(len(arrays["y_batch"]), np.nan)
        device = batch.inputs.device
        model = _Unwrapped(batch.model) if self.needs_model else None
        with quiet():
            metric = getattr(quantus, self.quantus_name)(normalise=False, disable_warnings=True, **self.options())
            scores = metric(model=model, **arrays, channel_first=True, softmax=False, device=str(device))
        return np.asarray(scores, dtype=np.float64)

    def __call__(self, batch: AttributionBatch) -> Tensor:
        if self.requires_masks and batch.masks is None:
            raise ValueError(f"{type(self).__name__} needs ground-truth masks (batch.masks is None)")
        return torch.as_tensor(self.run(batch), dtype=torch.float32, device=batch.maps.device)


class PointingGame(QuantusMetric):
    """``quantus.PointingGame``: is the map's maximum inside the mask?

    Differs from sharedattr's ``pointing_game`` on ties: Quantus counts a hit if *any*
    maximal pixel lies in the mask (sharedattr: the first one). An empty mask gives NaN
    here; Quantus 0.6 itself returns True, as it writes NaN into a boolean array.
    """

    family = "localisation"

    quantus_name = "PointingGame"
    requires_masks = True

    def run(self, batch: AttributionBatch) -> np.ndarray:
        scores = super().run(batch)
        empty = ~batch.masks.detach().flatten(1).any(1).cpu().numpy()
        return np.where(empty, np.nan, scores)


class RelevanceMassParams(Params):
    relevance: Literal["positive", "absolute", "signed"] = Field(
        "positive",
        description="Relevance counted: 'positive' (maps clipped at 0 before Quantus, as sharedattr's default), "
        "'absolute' (Quantus abs=True) or 'signed' (Quantus' own default: the raw map).",
    )


class RelevanceMass(QuantusMetric):
    """``quantus.RelevanceMassAccuracy``: relevance inside the mask / total relevance.

    With ``relevance="signed"`` (Quantus' default) negative relevance counts, so the
    score can leave [0, 1]; sharedattr's ``relevance_mass`` has no signed variant.
    """

    family = "localisation"

    quantus_name = "RelevanceMassAccuracy"
    requires_masks = True

    def __init__(self, relevance: str = "positive") -> None:
        self.relevance = relevance

    def options(self) -> dict[str, Any]:
        return {"abs": self.relevance == "absolute"}

    def arrays(self, batch: AttributionBatch) -> dict[str, np.ndarray | None]:
        arrays = as_numpy(batch)
        if self.relevance == "positive":
            arrays["a_batch"] = np.clip(arrays["a_batch"], 0, None)
        return arrays


class RelevanceRank(QuantusMetric):
    """``quantus.RelevanceRankAccuracy``: share of the top-|mask| pixels inside the mask.

    Quantus ranks with an unstable sort, so tied values may be ordered differently from
    sharedattr's ``relevance_rank`` (row-major order).
    """

    family = "localisation"

    quantus_name = "RelevanceRankAccuracy"
    requires_masks = True


class Sparseness(QuantusMetric):
    """``quantus.Sparseness``: the Gini index of ``|map|``, as sharedattr's ``gini``.

    Quantus adds 1e-7 to every value first, so the two agree to about 1e-7 / mean(|map|).
    """

    family = "complexity"

    quantus_name = "Sparseness"

    def options(self) -> dict[str, Any]:
        return {"abs": True}


class FaithfulnessCorrelationParams(Params):
    n_runs: int = Field(100, ge=2, description="Random subsets per map.")
    subset_size: int = Field(224, ge=1, description="Features (channel values of pixels) per subset.")
    baseline: float = Field(0.0, description="Value given to removed features.")
    seed: int = Field(0, description="Seed of NumPy's global generator while Quantus draws (restored after).")


class FaithfulnessCorrelation(QuantusMetric):
    """``quantus.FaithfulnessCorrelation``: Pearson r between a random subset's summed attribution and the drop.

    Quantus draws subsets of *features*, i.e. single channel values, and broadcasts the
    ``[H, W]`` map over the channels; sharedattr's ``faithfulness_correlation`` removes
    whole pixels. The two coincide in definition on one-channel images only, and draw
    different random subsets.
    """

    family = "faithfulness"

    quantus_name = "FaithfulnessCorrelation"
    needs_model = True

    def __init__(self, n_runs: int = 100, subset_size: int = 224, baseline: float = 0.0, seed: int = 0) -> None:
        self.n_runs, self.subset_size, self.baseline, self.seed = n_runs, subset_size, baseline, seed

    def options(self) -> dict[str, Any]:
        return {
            "abs": False,
            "nr_runs": self.n_runs,
            "subset_size": self.subset_size,
            "perturb_baseline": self.baseline,
            "return_aggregate": False,
        }

    def run(self, batch: AttributionBatch) -> np.ndarray:
        state = np.random.get_state()
        np.random.seed(self.seed)
        try:
            return super().run(batch)
        finally:
            np.random.set_state(state)


@hookimpl
def register_metrics(register):
    register(
        "quantus_pointing_game",
        PointingGame,
        description="Quantus PointingGame: 1 if the map's maximum (any tied one) is inside the mask.",
    )
    register(
        "quantus_relevance_mass",
        RelevanceMass,
        params=RelevanceMassParams,
        description="Quantus RelevanceMassAccuracy: relevance inside the mask / total relevance.",
    )
    register(
        "quantus_relevance_rank",
        RelevanceRank,
        description="Quantus RelevanceRankAccuracy: share of the top-|mask| pixels inside the mask.",
    )
    register("quantus_sparseness", Sparseness, description="Quantus Sparseness: the Gini index of |map|.")
    register(
        "quantus_faithfulness_correlation",
        FaithfulnessCorrelation,
        params=FaithfulnessCorrelationParams,
        description="Quantus FaithfulnessCorrelation on the neuron's response (feature subsets, not pixels).",
    )
