"""The models that score synthesised images (the EGG paper's protocol): the train model, and each
``[[evaluators]]`` entry fitted through the fit stage's fit-or-load into ``<folder>/<label>`` (reused when a fit of
the same :func:`~sharedattr.synthesis.evaluation.evaluator_digest` is there)."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from sharedattr.config.spec import EvaluatorSpec, ExperimentSpec
from sharedattr.encoding.fit import FitSettings
from sharedattr.experiment.context import RunContext
from sharedattr.experiment.stages import Experiment, FitJob, ModelFolder, features, fit_or_load, save_fit
from sharedattr.synthesis.evaluation import TRAIN, Evaluator, describe_model, evaluator_digest, resolved_evaluator


def train_evaluator(experiment: Experiment, spec: ExperimentSpec) -> Evaluator:
    """The model the images are optimised on, as an evaluator."""
    fit = experiment.fit
    return Evaluator(
        TRAIN,
        TRAIN,
        fit.model,
        fit.predicted.max(0).values,
        fit.test_r,
        describe_model(
            spec.backbone.model_dump(mode="json"), spec.readout.model_dump(mode="json"), spec.data.split_seed
        ),
    )


def fit_evaluators(ctx: RunContext, spec: ExperimentSpec, experiment: Experiment, folder: Path) -> list[Evaluator]:
    """The train model plus every ``spec.evaluators`` entry, fitted (or reloaded from ``folder/<label>``)."""
    entries = tqdm(
        spec.evaluators, desc="evaluator models", disable=not ctx.progress or not spec.evaluators, leave=False
    )
    return [train_evaluator(experiment, spec), *(fit_evaluator(ctx, spec, experiment, e, folder) for e in entries)]


def fit_evaluator(
    ctx: RunContext, spec: ExperimentSpec, experiment: Experiment, e: EvaluatorSpec, folder: Path
) -> Evaluator:
    """Evaluator ``e``: its readout fitted on its backbone's features of the experiment's stimuli and responses
    (its split), saved in ``folder/<label>``; or reloaded from there when saved by a fit of the same
    :func:`~sharedattr.synthesis.evaluation.evaluator_digest`."""
    resolved = resolved_evaluator(spec, e)
    backbone_spec, readout_spec = e.backbone or spec.backbone, e.readout or spec.readout
    backbone = ctx.build(backbone_spec).to(ctx.device)
    if backbone_spec == spec.backbone:
        latents = experiment.latents  # same features: no second pass over the images
    else:
        latents, _ = features(ctx, spec, backbone_spec, backbone, experiment.stimuli)
    record = {"evaluator_digest": evaluator_digest(experiment.fit_digest, spec, e), "role": e.role}
    settings = FitSettings(
        spec.data.test_fraction, resolved["split_seed"], spec.batch_size, ctx.device, readout_spec.name
    )
    neuron_ids = experiment.fit.neuron_ids
    job = FitJob(
        backbone_spec,
        readout_spec,
        backbone,
        latents,
        experiment.responses,
        neuron_ids,
        settings,
        ModelFolder(folder / e.label, "evaluator_digest", record),
        experiment.stimuli,
    )
    fit, reused = fit_or_load(ctx, job)
    if not reused:
        save_fit(ctx, job, fit)
    description = describe_model(resolved["backbone"], resolved["readout"], resolved["split_seed"])
    return Evaluator(e.label, e.role, fit.model, fit.predicted.max(0).values, fit.test_r, description)
