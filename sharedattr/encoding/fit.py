"""Fitting a readout to recorded responses on a train split, and scoring it on the held-out stimuli.

Shapes: latents ``[S, ...]`` (one row per stimulus, possibly memory-mapped), responses ``[S, N]``
(NaN = not measured), trials ``[S, R, N]``. A :class:`Fit` holds the encoding model, the split
and the held-out scores (Pearson r; noise ceiling and FEV where trials repeat).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sharedattr.encoding.model import EncodingModel
from sharedattr.encoding.scores import (
    fraction_explainable_variance_explained,
    held_out_r,
    noise_ceiling,
    unscorable_reasons,
)
from sharedattr.encoding.store import READOUT_FILE, load_readout_state
from sharedattr.plugins.contracts import ReadoutModule, declared
from sharedattr.runtime.errors import UserError

MIN_TRAIN_STIMULI = 2
"""A neuron needs responses to at least this many training stimuli to be fitted."""


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random train/test split of ``range(n)`` → sorted (train, test) index tensors."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 2:
        raise UserError(f"data: {n} stimuli with responses are too few to split off a test set of {n_test}")
    return perm[n_test:].sort().values, perm[:n_test].sort().values


@dataclass
class Fit:
    """A fitted encoding model and its held-out scores.

    ``predicted`` ``[S, N]`` covers every stimulus; ``train``/``test`` index stimuli;
    ``test_r`` ``[N]`` is the held-out Pearson r per neuron.
    """

    model: EncodingModel
    neuron_ids: list[str]
    train: Tensor
    test: Tensor
    predicted: Tensor
    test_r: Tensor
    noise_ceiling: Tensor | None = None
    fev: Tensor | None = None
    notes: list[str | None] | None = None
    r_notes: list[str | None] | None = None

    def score_repeats(self, trials: Tensor) -> None:
        """Noise ceiling and FEV on the held-out stimuli from their trials ``[S, R, N]`` (aligned to the stimuli)."""
        held_out, predicted = trials[self.test], self.predicted[self.test]
        self.noise_ceiling = noise_ceiling(held_out)
        self.fev = fraction_explainable_variance_explained(predicted, held_out)
        self.notes = unscorable_reasons(held_out, predicted)


@torch.inference_mode()
def predict(readout: nn.Module, latents: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """Readout predictions ``[S, N]`` on the CPU, in batches (latents may be memory-mapped)."""
    return torch.cat([readout(chunk.to(device)).cpu() for chunk in latents.split(batch_size)])


@dataclass(frozen=True)
class FitSettings:
    """How :func:`fit_readout` splits, fits and scores.

    ``test_fraction`` of the stimuli with responses is held out, drawn by ``split_seed``; predictions run
    ``batch_size`` latents at a time on ``device``; ``name`` (the readout's registered name) labels errors;
    ``progress`` shows a bar over the epochs of a joint fit with a trainable backbone (:func:`fit_with_backbone`).
    """

    test_fraction: float
    split_seed: int
    batch_size: int = 32
    device: torch.device | str = "cpu"
    name: str = "readout"
    progress: bool = False


def split_measured(responses: Tensor, neuron_ids: list[str], settings: FitSettings) -> tuple[Tensor, Tensor]:
    """The (train, test) stimulus indices of :func:`fit_readout`: a seeded split of the stimuli with any response
    ``[S, N]``; :class:`UserError` naming the neurons measured on fewer than :data:`MIN_TRAIN_STIMULI` training
    stimuli."""
    measured = (~torch.isnan(responses)).any(1).nonzero().squeeze(1)
    train_rel, test_rel = split_indices(len(measured), settings.test_fraction, settings.split_seed)
    train, test = measured[train_rel], measured[test_rel]
    n_train = (~torch.isnan(responses[train])).sum(0)
    few = [f"{neuron_ids[i]} ({int(n_train[i])})" for i in (n_train < MIN_TRAIN_STIMULI).nonzero().squeeze(1).tolist()]
    if few:
        raise UserError(
            f"data.responses: neuron(s) measured on fewer than {MIN_TRAIN_STIMULI} training stimuli "
            f"(the count in brackets; {len(train)} stimuli in the training split): {', '.join(few[:20])}"
            f"{' ...' if len(few) > 20 else ''}. Remove these neurons' columns, or record them on more "
            "stimuli."
        )
    return train, test


def fit_readout(
    readout: nn.Module,
    backbone: nn.Module,
    latents: Tensor,
    responses: Tensor,
    neuron_ids: list[str],
    settings: FitSettings,
    saved: Path | None = None,
) -> Fit:
    """Fit ``readout`` (built, not yet fitted) on a train split of the stimuli with responses; score Pearson r
    on the rest (:class:`FitSettings`).

    ``latents`` ``[S, ...]`` and ``responses`` ``[S, N]`` (NaN = not measured) are aligned. The readout fits on the
    training rows through its ``fit_rows`` (:class:`~sharedattr.plugins.contracts.ReadoutModule`: ridge reads them
    in place; the default fits on their copy). With ``saved``, a model folder written by a fit of the same spec and
    data, its readout is loaded instead of fitted: the same split and scores as the run that fitted it.
    """
    train, test = split_measured(responses, neuron_ids, settings)
    if saved is None:
        declared(readout, ReadoutModule).fit_rows(latents, responses, train)
    else:
        readout.initialize(tuple(latents.shape[1:]), len(neuron_ids))
        load_readout_state(readout, saved / READOUT_FILE)
    readout = readout.to(settings.device)
    model = EncodingModel(backbone, readout, neuron_ids).eval()
    return _scored(
        model, predict(readout, latents, settings.batch_size, settings.device), responses, (train, test), settings
    )


def fit_with_backbone(
    readout: nn.Module,
    backbone: nn.Module,
    images: Tensor,
    responses: Tensor,
    neuron_ids: list[str],
    settings: FitSettings,
    saved: Path | None = None,
) -> Fit:
    """Fit a trainable ``backbone`` (:class:`~sharedattr.plugins.contracts.BackboneModule`, ``trainable``) jointly
    with ``readout`` on images ``[S, C, H, W]`` in [0, 1] (on the CPU; batches move to the backbone's device); score
    it as :func:`fit_readout` does, on the same split.

    The readout trains through its ``fit_with_backbone`` (the trained readouts have one; ridge has none: a
    :class:`UserError`), with a progress bar when ``settings.progress``. With ``saved``, the backbone's and the
    readout's weights are loaded from that model folder instead. Both end in eval mode, the backbone without
    gradients to its weights.

    Example::

        fit = fit_with_backbone(AttentionReadout(loss="poisson", nonlinearity="elu1"), StackedCore(input_size=24),
                                images, responses, ids, FitSettings(0.2, 0))
        fit.test_r  # [N]
    """
    joint = declared(readout, ReadoutModule).fit_with_backbone
    if joint is None:
        raise UserError(
            f"readout {settings.name!r} cannot train with a trainable backbone (it has no fit_with_backbone): choose "
            "a trained readout (attention, gaussian2d or factorized), or a frozen backbone"
        )
    train, test = split_measured(responses, neuron_ids, settings)
    backbone = backbone.to(settings.device)
    if saved is None:
        joint(backbone, images[train], responses[train], progress=settings.progress)
    else:
        readout.initialize(tuple(backbone.latent_shape), len(neuron_ids))
        load_readout_state(readout, saved / READOUT_FILE, backbone=backbone)
    backbone.requires_grad_(False).eval()
    model = EncodingModel(backbone, readout.to(settings.device), neuron_ids).eval()
    return _scored(
        model, predict(model, images, settings.batch_size, settings.device), responses, (train, test), settings
    )


def _scored(
    model: EncodingModel, predicted: Tensor, responses: Tensor, split: tuple[Tensor, Tensor], settings: FitSettings
) -> Fit:
    """The :class:`Fit` of ``model`` from its predictions ``[S, N]`` of every stimulus and the (train, test)
    ``split``: held-out r on test; :class:`UserError` naming the neurons with a NaN or infinite prediction."""
    neuron_ids, (train, test) = model.neuron_ids, split
    bad = (~torch.isfinite(predicted)).any(0).nonzero().squeeze(1).tolist()
    if bad:
        raise UserError(
            f"the {settings.name} readout predicts NaN or infinite responses for neuron(s) "
            f"{', '.join(neuron_ids[i] for i in bad[:20])}: check data.responses for extreme values "
            "(rescale them) and the backbone's normalisation (mean, std)"
        )
    test_r, r_notes = held_out_r(predicted[test], responses[test])
    return Fit(model, list(neuron_ids), train, test, predicted, test_r, r_notes=r_notes)
