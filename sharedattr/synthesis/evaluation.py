"""The EGG paper's evaluation protocol: score synthesised images on other models.

Images are optimised on one model ("train", the experiment's fitted model) and scored on
the same architecture fitted with other seeds ("val"), on another backbone or readout
("cross") and on a random-feature model ("floor"). Every score is expressed relative to the
evaluator's own prediction for the neuron's best natural image, so 1.0 means "as strong as
the strongest stimulus in the set".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from torch import Tensor

from sharedattr.config.spec import EvaluatorSpec, ExperimentSpec
from sharedattr.encoding.model import EncodingModel
from sharedattr.synthesis.preprocess import fit_to_model

TRAIN = "train"


@dataclass
class Evaluator:
    """A model that scores images, and its prediction for every neuron's best natural image ``[N]``."""

    label: str
    role: str  # "train", "val", "cross" or "floor"
    model: EncodingModel
    best_natural: Tensor  # [N] max over the natural stimuli of the predicted response
    test_r: Tensor  # [N] held-out Pearson r of this model's fit
    description: str = ""

    @torch.no_grad()
    def responses(self, images: Tensor, neuron: int, batch_size: int = 32) -> Tensor:
        """The model's response ``[S]`` of output ``neuron`` to images ``[S, C, H, W]`` (fitted to its input)."""
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        out = [
            self.model(fit_to_model(chunk.to(device), self.model))[:, neuron].cpu()
            for chunk in images.split(batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0)


def evaluator_digest(fit_digest: str, spec: ExperimentSpec, evaluator: EvaluatorSpec) -> str:
    """Identity of a fitted evaluator: the experiment's model digest (its data identity) plus the evaluator's
    specs and split."""
    resolved = resolved_evaluator(spec, evaluator)
    payload = {"experiment": fit_digest, **resolved}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def resolved_evaluator(spec: ExperimentSpec, e: EvaluatorSpec) -> dict:
    """The evaluator's backbone and readout specs and split seed, the experiment's where it gives none."""
    return {
        "backbone": (e.backbone or spec.backbone).model_dump(mode="json"),
        "readout": (e.readout or spec.readout).model_dump(mode="json"),
        "split_seed": e.split_seed if e.split_seed is not None else spec.data.split_seed,
    }


def describe_model(backbone: dict, readout: dict, split_seed: int) -> str:
    def one(d: dict) -> str:
        params = ", ".join(f"{k}={v}" for k, v in d.items() if k != "name")
        return f"{d['name']}({params})"

    return f"{one(backbone)} → {one(readout)}, split_seed={split_seed}"


def steps_to_reach(history: Tensor, targets: Tensor) -> tuple[list[int], list[bool]]:
    """Per seed ``s``: the first step ``t`` at which ``history[t, s] >= targets[s]`` and True, or, where no step
    does, ``len(history)`` (the run's end: right-censored) and False.

    ``history`` ``[steps, S]``: a synthesizer's train-model response per step (row ``t``: the iterate after ``t``
    updates); ``targets`` ``[S]``: the train activation to reach (another synthesizer's, seed by seed).

    Example::

        steps_to_reach(torch.tensor([[0.1, 0.2], [0.5, 0.3]]), torch.tensor([0.4, 0.9]))   # ([1, 2], [True, False])
    """
    if history.dim() != 2 or targets.shape != (history.shape[1],):
        raise ValueError(
            f"history [steps, S] and targets [S] expected, got {list(history.shape)}, {list(targets.shape)}"
        )
    hit = history >= targets[None, :].to(history.dtype)
    reached = hit.any(0)
    first = torch.where(reached, hit.float().argmax(0), torch.full_like(reached, len(history), dtype=torch.long))
    return [int(k) for k in first], [bool(r) for r in reached]
