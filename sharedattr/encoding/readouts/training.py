"""Shared training of the SGD readouts: hyper-params, output nonlinearity, losses, penalties and the trainer.

:func:`train` fits any module mapping inputs ``[B, ...]`` (latents, or images for a readout trained jointly with a
trainable core) to responses ``[B, N]`` by AdamW on mini-batches. The loss is the mean squared error or the Poisson
loss over the non-NaN responses (``loss``), plus the module's ``regularizer()``. Early stopping holds out a seeded
validation split of the fit data and keeps the epoch with the best mean validation Pearson r across neurons; the
learning rate can drop on a plateau of that r (``lr_decay_factor``, torch's ``ReduceLROnPlateau``).
:class:`TrainedReadout` is the base of the built-in trained readouts (``factorized``, ``gaussian2d``,
``attention``): it meets the linear contract ``r_n(x) = φ(⟨w_n, z_n(x)⟩ + b_n)`` by construction, given a subclass's
``pooled`` and ``weight``; :meth:`TrainedReadout.fit_with_backbone` trains it jointly with a trainable backbone
(:class:`~sharedattr.plugins.contracts.BackboneModule`, e.g. ``stacked_core``) on images.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError, model_validator
from torch import Tensor, nn
from tqdm.auto import tqdm

from sharedattr.data.responses import require_measured_neurons
from sharedattr.encoding.scores import pearson_columns
from sharedattr.plugins.contracts import ReadoutModule
from sharedattr.plugins.params import Configurable, Params, Seed, issues_from_validation
from sharedattr.runtime.errors import SpecError, UserError
from sharedattr.runtime.numerics import on_one_thread, seeded_on


class TrainingParams(Params):
    """Hyper-params of :func:`train`."""

    lr: float = Field(2e-2, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="AdamW decoupled weight decay (not applied to biases, nor to Gaussian locations and stds).",
    )
    batch_size: int = Field(128, ge=1, description="Images per mini-batch.")
    max_epochs: int = Field(200, ge=1, description="Upper bound on training epochs.")
    patience: int = Field(
        20, ge=1, description="Stop after this many epochs without a better validation r; the best epoch is restored."
    )
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Fraction of the fit data held out (seeded split) for early stopping."
    )
    seed: Seed = Field(0, description="Seed of the initialisation, validation split, batch order and any sampling.")
    progress: bool = Field(False, description="Show a progress bar over epochs.")
    loss: Literal["mse", "poisson"] = Field(
        "mse",
        description="Training loss over the measured responses: mse (mean squared error) or poisson (the Poisson "
        "negative log-likelihood r − y·log r, for spike counts; needs a positive output, nonlinearity = elu1). "
        "A trainable backbone (stacked_core) makes poisson the default.",
    )
    lr_decay_factor: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Multiply the learning rate by this after lr_patience epochs without a better validation r "
        "(torch's ReduceLROnPlateau); 1 keeps it constant.",
    )
    lr_patience: int = Field(
        5, ge=0, description="Epochs without a better validation r before the learning rate drops (lr_decay_factor)."
    )


class TrainedReadoutParams(TrainingParams):
    """Hyper-params shared by the trained readouts: training plus the output nonlinearity φ."""

    nonlinearity: Literal["identity", "elu1"] = Field(
        "identity", description="Output nonlinearity φ: identity, or elu1 = ELU(x + elu_offset) + 1 (positive output)."
    )
    elu_offset: float = Field(0.0, description="Offset of the elu1 nonlinearity.")

    @model_validator(mode="after")
    def _positive_output_for_poisson(self) -> TrainedReadoutParams:
        if self.loss == "poisson" and self.nonlinearity == "identity":
            raise ValueError(
                "loss = 'poisson' needs a positive output: set nonlinearity = 'elu1' (or use loss = 'mse')"
            )
        return self


# -- losses -----------------------------------------------------------------------------
def masked_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the non-NaN entries of ``target`` ``[B, N]``.

    NaN targets are replaced before any arithmetic, so they contribute neither to the
    value nor to the gradient.
    """
    valid = ~torch.isnan(target)
    error = torch.where(valid, prediction - torch.where(valid, target, 0.0), 0.0)
    return error.pow(2).sum() / valid.sum().clamp(min=1)


POISSON_EPS = 1e-8
"""Added to predictions inside the Poisson loss's log (a prediction of 0 stays finite)."""


def masked_poisson(prediction: Tensor, target: Tensor) -> Tensor:
    """Poisson negative log-likelihood ``r − y·log(r + ε)`` averaged over the non-NaN entries of ``target`` ``[B, N]``
    (the constant ``log y!`` left out). ``prediction`` must be non-negative (an ``elu1`` output)."""
    valid = ~torch.isnan(target)
    loss = prediction - torch.where(valid, target, 0.0) * torch.log(prediction + POISSON_EPS)
    return torch.where(valid, loss, 0.0).sum() / valid.sum().clamp(min=1)


LOSSES = {"mse": masked_mse, "poisson": masked_poisson}
"""The training losses by their ``loss`` param value: ``(prediction [B, N], target [B, N]) → scalar``."""


def l1_penalty(param: Tensor, strength: float) -> Tensor:
    """``strength · Σ_n ‖param_n‖₁ / N``: the L1 norm of each neuron's slice (dim 0), averaged over neurons.

    Averaging over neurons matches the MSE, which is averaged over entries, so a
    strength means the same whatever the number of neurons.
    """
    return strength * param.abs().sum() / param.shape[0]


def elu1(x: Tensor, offset: float) -> Tensor:
    """``ELU(x + offset) + 1``: a smooth, strictly positive output nonlinearity."""
    return F.elu(x + offset) + 1


def inverse_elu1(y: Tensor, offset: float) -> Tensor:
    """The preimage of ``y`` under :func:`elu1`, with ``y`` clamped to ≥ 1e-3 (elu1 is positive)."""
    y = y.clamp(min=1e-3)
    return torch.where(y > 1, y - 1, torch.log(y)) - offset


# -- the trainer ------------------------------------------------------------------------
@dataclass
class TrainingHistory:
    """One fit's record: per-epoch ``train_loss`` and ``val_r`` (mean validation Pearson r).

    ``best_epoch`` (0-based) is the epoch whose state was restored; ``val_index`` holds
    the rows of the fit data held out for validation.
    """

    train_loss: list[float]
    val_r: list[float]
    best_epoch: int
    val_index: Tensor


@contextlib.contextmanager
def reproducible_training(device: torch.device, seed: int, threads: int | None = None) -> Iterator[int]:
    """A from-scratch training run that repeats bit for bit on the CPU: ``threads`` torch threads (None:
    torch's), :func:`~sharedattr.runtime.numerics.seeded_on` RNGs and, on the CPU, deterministic algorithms; all
    restored afterwards.

    Yields the number of torch threads in use (for the run's record).
    """
    threads_before, deterministic_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with seeded_on(seed, device):
            if device.type == "cpu":
                torch.use_deterministic_algorithms(True)
            yield torch.get_num_threads()
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        torch.set_num_threads(threads_before)


def split_train_val(n: int, val_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A seeded random split of ``n`` rows → ``(train_index, val_index)``; both keep at least 2 rows."""
    n_val = round(n * val_fraction)
    if n_val < 2 or n - n_val < 2:
        raise UserError(
            f"cannot split {n} images into training and validation sets with val_fraction={val_fraction}: "
            "each needs at least 2 images (give more images or change val_fraction)"
        )
    order = torch.randperm(n, generator=generator)
    return order[n_val:], order[:n_val]


@torch.no_grad()
def eval_predictions(module: nn.Module, latents: Tensor, batch_size: int) -> Tensor:
    """``module(latents)`` in batches, in eval mode → ``[B, N]`` on the module's device (each batch is moved
    there)."""
    module.eval()
    device = next(module.parameters()).device
    return torch.cat([module(chunk.to(device)) for chunk in latents.split(batch_size)])


def _param_groups(module: nn.Module) -> list[dict[str, Any]]:
    """AdamW groups: parameters named in ``module.no_weight_decay`` get no weight decay."""
    exempt = set(module.no_weight_decay)
    decay = [p for name, p in module.named_parameters() if name not in exempt]
    no_decay = [p for name, p in module.named_parameters() if name in exempt]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(module: nn.Module, inputs: Tensor, responses: Tensor, params: TrainingParams) -> TrainingHistory:
    """Fit ``module`` in place to inputs ``[S, ...]`` and responses ``[S, N]`` (NaN = missing).

    ``module(inputs)`` gives predictions ``[B, N]`` (latents for a readout; images for a readout trained jointly
    with a core, :class:`JointModel`); ``module.regularizer()`` a scalar penalty added to the loss; the parameter
    names in ``module.no_weight_decay`` (a :class:`TrainedReadout` declares them) are exempt from weight decay. Each
    epoch runs AdamW over shuffled mini-batches of the training split, minimising the ``params.loss``
    (:data:`LOSSES`) plus the penalty, then scores the validation split by the mean Pearson r across neurons; with
    ``lr_decay_factor < 1`` the learning rate drops when that r plateaus (``ReduceLROnPlateau``, mode max).
    Training stops after ``patience`` epochs without improvement (or ``max_epochs``), and the module is left in
    eval mode with the state of its best epoch. Batches move to the module's device, so ``inputs`` may stay on the
    CPU. Deterministic for a given seed on the CPU: the split, the batch order and the global RNG (used by
    stochastic modules) are all seeded. A non-finite loss raises :class:`UserError` (lower the learning rate).
    """
    if params.loss == "poisson" and bool((responses < 0).any()):  # NaN (not measured) compares False
        raise UserError(
            f"readout.loss = 'poisson' needs non-negative responses (spike counts or rates); the responses reach "
            f"{float(responses.nan_to_num(0).min()):.4g}: set readout.loss = 'mse', or give counts"
        )
    generator = torch.Generator().manual_seed(params.seed)
    train_index, val_index = split_train_val(inputs.shape[0], params.val_fraction, generator)
    device = next(module.parameters()).device
    responses = responses.to(device)
    loss_of = LOSSES[params.loss]
    optimizer = torch.optim.AdamW(_param_groups(module), lr=params.lr, weight_decay=params.weight_decay)
    schedule = None
    if params.lr_decay_factor < 1:
        schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=params.lr_decay_factor, patience=params.lr_patience
        )
    losses: list[float] = []
    val_r: list[float] = []
    best_r, best_epoch, best_state = -math.inf, -1, None
    progress = tqdm(total=params.max_epochs, desc="training", disable=not params.progress, leave=False, unit="epoch")
    with seeded_on(params.seed, device), progress:
        for epoch in range(params.max_epochs):
            module.train()
            total, count = 0.0, 0
            for batch in train_index[torch.randperm(len(train_index), generator=generator)].split(params.batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_of(module(inputs[batch].to(device)), responses[batch.to(device)]) + module.regularizer()
                value = loss.item()
                if not math.isfinite(value):
                    raise UserError(f"readout training diverged (the loss is {value}); lower lr={params.lr}")
                loss.backward()
                optimizer.step()
                total, count = total + value * len(batch), count + len(batch)
            losses.append(total / count)
            predicted = eval_predictions(module, inputs[val_index], params.batch_size)
            val_r.append(float(pearson_columns(predicted, responses[val_index.to(device)]).mean()))
            progress.update()
            progress.set_postfix(val_r=f"{val_r[-1]:.3f}")
            if schedule is not None:
                schedule.step(val_r[-1])
            if best_state is None or val_r[-1] > best_r:
                best_r, best_epoch = val_r[-1], epoch
                best_state = copy.deepcopy(module.state_dict())
            elif epoch - best_epoch >= params.patience:
                break
    module.load_state_dict(best_state)
    module.eval()
    return TrainingHistory(losses, val_r, best_epoch, val_index)


class JointModel(nn.Module):
    """A trainable backbone and a readout as one module for :func:`train`: images ``[B, C, H, W]`` in [0, 1] →
    ``readout(backbone(backbone.preprocess(images)))`` ``[B, N]``; its penalty is the sum of both, and the
    readout's ``no_weight_decay`` names (prefixed ``readout.``) are exempt from weight decay."""

    def __init__(self, backbone: nn.Module, readout: TrainedReadout) -> None:
        super().__init__()
        self.backbone, self.readout = backbone, readout
        self.no_weight_decay = tuple(f"readout.{name}" for name in readout.no_weight_decay)

    def forward(self, images: Tensor) -> Tensor:
        return self.readout(self.backbone(self.backbone.preprocess(images)))

    def regularizer(self) -> Tensor:
        return self.backbone.regularizer() + self.readout.regularizer()


# -- the base of the trained readouts ---------------------------------------------------
class TrainedReadout(Configurable, ReadoutModule, abc.ABC):
    """A readout fitted by :func:`train` on 4-D latents ``[B, C, H, W]``.

    ``forward(latents) = φ(Σ_d pooled(latents) ⊙ weight + bias)``, so the linear contract
    holds exactly. Subclasses set ``name``, ``params_model`` and ``description``, extend
    ``initialize`` (calling this one first, which allocates the bias ``[N]``) and implement
    ``pooled``, ``weight`` and ``regularizer``, and may extend ``init_from_data``. They are
    built from their validated ``params_model`` (``FactorizedReadout(params)``), or from its
    fields as keywords (``FactorizedReadout(l1_mask=0)``, validated there: a wrong one is a
    :class:`SpecError` naming the readout and the field); ``params`` keeps them. ``fit``
    initialises, starts from the data (``init_from_data``), trains and leaves the readout in
    eval mode; its :class:`TrainingHistory` is kept as ``history``.
    """

    params_model: ClassVar[type[TrainedReadoutParams]]
    no_weight_decay: ClassVar[tuple[str, ...]] = ("_bias",)

    def __init__(self, params: TrainedReadoutParams | None = None, **overrides: Any) -> None:
        super().__init__()
        try:
            self.params = self.resolve_params(params, overrides)
        except ValidationError as err:
            raise SpecError(issues_from_validation(err, prefix=self.name)) from None
        self.latent_shape: tuple[int, int, int] | None = None
        self.register_parameter("_bias", None)
        self.history: TrainingHistory | None = None

    def initialize(self, latent_shape: tuple[int, ...], n_neurons: int) -> None:
        """Record ``latent_shape`` ``(C, H, W)`` and allocate a zero bias ``[N]``; subclasses add their own."""
        if len(latent_shape) != 3:
            raise UserError(self._spatial_message(len(latent_shape) + 1))
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self._bias = nn.Parameter(torch.zeros(n_neurons))

    def _spatial_message(self, dim: int) -> str:
        return (
            f"the {self.name} readout needs spatial latents [B, C, H, W]; got {dim}-D latents "
            "(cut the backbone at a convolutional layer, or use the ridge readout)"
        )

    def _fitted(self, value: Any) -> Any:
        """``value`` (a parameter or the latent shape), or a clear error while it is still unset."""
        if value is None:
            raise RuntimeError(f"the {self.name} readout is not fitted yet; call fit(latents, responses)")
        return value

    def spatial(self, latents: Tensor) -> Tensor:
        """Check that ``latents`` are ``[B, C, H, W]`` of the initialised shape; return them."""
        if latents.dim() != 4:
            raise UserError(self._spatial_message(latents.dim()))
        if tuple(latents.shape[1:]) != self._fitted(self.latent_shape):
            raise UserError(
                f"the {self.name} readout was fitted to latents {list(self.latent_shape)}; "
                f"got {list(latents.shape[1:])}"
            )
        return latents

    @abc.abstractmethod
    def pooled(self, latents: Tensor) -> Tensor:
        """``z`` ``[B, N, D]``: each neuron's pooled latent vector."""

    @property
    @abc.abstractmethod
    def weight(self) -> Tensor:
        """``w`` ``[N, D]``."""

    @abc.abstractmethod
    def regularizer(self) -> Tensor:
        """The penalty (a scalar) added to the training loss."""

    @property
    def bias(self) -> Tensor:
        """``b`` ``[N]``."""
        return self._fitted(self._bias)

    def nonlinearity(self, x: Tensor) -> Tensor:
        """``φ``: the identity, or ``ELU(x + elu_offset) + 1``."""
        return elu1(x, self.params.elu_offset) if self.params.nonlinearity == "elu1" else x

    def _inverse_nonlinearity(self, y: Tensor) -> Tensor:
        return inverse_elu1(y, self.params.elu_offset) if self.params.nonlinearity == "elu1" else y

    def preactivation(self, latents: Tensor) -> Tensor:
        """``⟨w_n, z_n⟩ + b_n`` ``[B, N]``, before the nonlinearity."""
        return (self.pooled(latents) * self.weight).sum(-1) + self.bias

    def forward(self, latents: Tensor) -> Tensor:
        """Latents ``[B, C, H, W]`` → responses ``[B, N]``."""
        return self.nonlinearity(self.preactivation(latents))

    @on_one_thread
    def fit(self, latents: Tensor, responses: Tensor) -> TrainedReadout:
        """Initialise, then train in place on latents ``[S, C, H, W]`` and responses ``[S, N]`` (NaN = missing)."""
        if latents.dim() != 4:
            raise UserError(self._spatial_message(latents.dim()))
        x = latents.detach().float()
        y = responses.detach().float().to(x.device)
        if y.dim() != 2 or y.shape[0] != x.shape[0]:
            raise UserError(
                f"{self.name} readout: responses must be [S, N] with S = {x.shape[0]} images; got {list(y.shape)}"
            )
        require_measured_neurons(y, f"{self.name} readout")
        with seeded_on(self.params.seed, x.device):
            self.initialize(tuple(x.shape[1:]), y.shape[1])
        self.to(x.device).eval()
        with torch.no_grad():
            self.init_from_data(x, y)
        self.history = train(self, x, y, self.params)
        return self

    @on_one_thread
    def fit_with_backbone(
        self, backbone: nn.Module, images: Tensor, responses: Tensor, progress: bool = False
    ) -> TrainedReadout:
        """Initialise, then train in place *jointly* with the trainable ``backbone`` (its weights change too) on
        images ``[S, C, H, W]`` in [0, 1] and responses ``[S, N]`` (NaN = missing), on the backbone's device; a bar
        shows the epochs with ``progress`` (or the ``progress`` param).

        The readout starts from the untrained backbone's latents (:meth:`init_from_data`), then :func:`train` fits
        both through a :class:`JointModel`, with the backbone's ``regularizer()`` added to the loss. Both are left
        in eval mode, and the backbone frozen again (no gradients to its weights; gradients still reach the input).
        """
        y = responses.detach().float()
        if y.dim() != 2 or y.shape[0] != images.shape[0]:
            raise UserError(
                f"{self.name} readout: responses must be [S, N] with S = {images.shape[0]} images; got {list(y.shape)}"
            )
        require_measured_neurons(y, f"{self.name} readout")
        device = next(backbone.parameters()).device
        with seeded_on(self.params.seed, device):
            self.initialize(tuple(backbone.latent_shape), y.shape[1])
        self.to(device).eval()
        backbone.eval()
        with torch.no_grad():
            chunks = images.detach().float().split(self.params.batch_size)
            latents = torch.cat([backbone(backbone.preprocess(chunk.to(device))) for chunk in chunks])
            self.init_from_data(latents, y.to(device))
        del latents
        backbone.requires_grad_(True)
        try:
            params = self.params.model_copy(update={"progress": True}) if progress else self.params
            self.history = train(JointModel(backbone, self), images.detach().float(), y, params)
        finally:
            backbone.requires_grad_(False).eval()
        return self

    def init_from_data(self, latents: Tensor, responses: Tensor) -> None:
        """Data-dependent start, after ``initialize``: set each bias so the mean prediction matches the mean response.

        ``latents`` ``[S, C, H, W]``, ``responses`` ``[S, N]`` (NaN = missing), in eval mode
        without gradient. Subclasses that initialise more from data do so first, then call this.
        """
        self._bias.zero_()
        drive = torch.cat([self.preactivation(chunk) for chunk in latents.split(self.params.batch_size)]).mean(0)
        self._bias.copy_(self._inverse_nonlinearity(torch.nanmean(responses, 0)) - drive)
