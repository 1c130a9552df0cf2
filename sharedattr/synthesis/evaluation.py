"""The EGG paper's evaluation protocol: score synthesised images on other models.

Images are optimised on one model ("train", the experiment's fitted model) and scored on
the same architecture fitted with other seeds ("val") and on another backbone or readout
("cross"). Every score is expressed relative to the evaluator's own prediction for the
neuron's best natural image, so 1.0 means "as strong as the strongest stimulus in the set".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..fitting import Experiment, fit_readout, save_model, saved_digest
from ..models.encoding import EncodingModel
from ..registry import Registry
from ..specs import EvaluatorSpec, ExperimentSpec
from .preprocess import fit_to_model

TRAIN = "train"


@dataclass
class Evaluator:
    """A model that scores images, and its prediction for every neuron's best natural image ``[N]``."""

    label: str
    role: str  # "train", "val" or "cross"
    model: EncodingModel
    best_natural: Tensor  # [N] max over the natural stimuli of the predicted response
    test_r: Tensor  # [N] held-out Pearson r of this model's fit
    description: str = ""

    @torch.no_grad()
    def responses(self, images: Tensor, neuron: int, batch_size: int = 32) -> Tensor:
        """The model's response ``[S]`` of output ``neuron`` to images ``[S, C, H, W]`` (fitted to its input)."""
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        out = [self.model(fit_to_model(chunk.to(device), self.model))[:, neuron].cpu()
               for chunk in images.split(batch_size)]
        return torch.cat(out) if out else torch.zeros(0)


def train_evaluator(experiment: Experiment, spec: ExperimentSpec) -> Evaluator:
    """The model the images are optimised on, as an evaluator."""
    fit = experiment.fit
    return Evaluator(TRAIN, TRAIN, fit.model, fit.predicted.max(0).values, fit.test_r,
                     _describe(spec.backbone.model_dump(mode="json"), spec.readout.model_dump(mode="json"),
                               spec.data.split_seed))


def evaluator_digest(experiment: Experiment, spec: ExperimentSpec, evaluator: EvaluatorSpec) -> str:
    """Identity of a fitted evaluator: the experiment's data identity plus the evaluator's specs and split."""
    resolved = _resolved(spec, evaluator)
    payload = {"experiment": experiment.fit_digest, **resolved}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def fit_evaluators(spec: ExperimentSpec, experiment: Experiment, folder: Path, *, registry: Registry,
                   device: torch.device, progress: bool = True) -> list[Evaluator]:
    """The train model plus every ``spec.evaluators`` entry, fitted (or reloaded from ``folder/<label>``)."""
    from ..features import default_cache_dir, extract_features

    evaluators = [train_evaluator(experiment, spec)]
    for e in tqdm(spec.evaluators, desc="evaluator models", disable=not progress or not spec.evaluators,
                  leave=False):
        resolved = _resolved(spec, e)
        backbone_spec, readout_spec = e.backbone or spec.backbone, e.readout or spec.readout
        backbone = backbone_spec.build(registry=registry).to(device)
        if backbone_spec == spec.backbone:
            latents = experiment.latents  # same features: no second pass over the images
        else:
            latents, _ = extract_features(
                backbone, experiment.stimuli,
                backbone_spec=backbone_spec.model_dump(mode="json") if spec.cache else None,
                cache_dir=(spec.cache_dir or default_cache_dir()) if spec.cache else None,
                batch_size=spec.batch_size, device=device, progress=progress,
            )
        target = folder / e.label
        digest = evaluator_digest(experiment, spec, e)
        saved = target if saved_digest(target, "evaluator_digest") == digest else None
        fit = fit_readout(readout_spec, backbone, latents, experiment.responses, experiment.fit.neuron_ids,
                          test_fraction=spec.data.test_fraction, split_seed=resolved["split_seed"],
                          batch_size=spec.batch_size, device=device, registry=registry, saved=saved)
        if saved is None:
            save_model(fit.model, backbone_spec, readout_spec, fit.neuron_ids, target,
                       extra={"evaluator_digest": digest, "role": e.role})
        evaluators.append(Evaluator(e.label, e.role, fit.model, fit.predicted.max(0).values, fit.test_r,
                                    _describe(resolved["backbone"], resolved["readout"], resolved["split_seed"])))
    return evaluators


def _resolved(spec: ExperimentSpec, e: EvaluatorSpec) -> dict:
    return {"backbone": (e.backbone or spec.backbone).model_dump(mode="json"),
            "readout": (e.readout or spec.readout).model_dump(mode="json"),
            "split_seed": e.split_seed if e.split_seed is not None else spec.data.split_seed}


def _describe(backbone: dict, readout: dict, split_seed: int) -> str:
    def one(d: dict) -> str:
        params = ", ".join(f"{k}={v}" for k, v in d.items() if k != "name")
        return f"{d['name']}({params})"

    return f"{one(backbone)} → {one(readout)}, split_seed={split_seed}"

