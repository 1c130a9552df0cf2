"""Shared training of the SGD readouts: hyper-params, output nonlinearity, penalties and the trainer.

:func:`train` fits any module mapping latents ``[B, ...]`` to responses ``[B, N]`` by AdamW
on mini-batches. The loss is the mean squared error over the non-NaN responses plus the
module's ``regularizer()``. Early stopping holds out a seeded validation split of the fit
data and keeps the epoch with the best mean validation Pearson r across neurons.
:class:`TrainedReadout` is the base of the built-in trained readouts (``factorized``,
``gaussian2d``, ``attention``): it meets the linear contract
``r_n(x) = φ(⟨w_n, z_n(x)⟩ + b_n)`` by construction, given a subclass's ``pooled`` and
``weight``.
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
from pydantic import Field, ValidationError
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


class TrainedReadoutParams(TrainingParams):
    """Hyper-params shared by the trained readouts: training plus the output nonlinearity φ."""

    nonlinearity: Literal["identity", "elu1"] = Field(
        "identity", description="Output nonlinearity φ: identity, or elu1 = ELU(x + elu_offset) + 1 (positive output)."
    )
    elu_offset: float = Field(0.0, description="Offset of the elu1 nonlinearity.")


# -- losses -----------------------------------------------------------------------------
def masked_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the non-NaN entries of ``target`` ``[B, N]``.

    NaN targets are replaced before any arithmetic, so they contribute neither to the
    value nor to the gradient.
    """
    valid = ~torch.isnan(target)
    error = torch.where(valid, prediction - torch.where(valid, target, 0.0), 0.0)
    return error.pow(2).sum() / valid.sum().clamp(min=1)


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
    """``module(latents)`` in batches, in eval mode → ``[B, N]``."""
    module.eval()
    return torch.cat([module(chunk) for chunk in latents.split(batch_size)])


def _param_groups(module: TrainedReadout) -> list[dict[str, Any]]:
    """AdamW groups: parameters named in ``module.no_weight_decay`` get no weight decay."""
    exempt = set(module.no_weight_decay)
    decay = [p for name, p in module.named_parameters() if name not in exempt]
    no_decay = [p for name, p in module.named_parameters() if name in exempt]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(module: TrainedReadout, latents: Tensor, responses: Tensor, params: TrainingParams) -> TrainingHistory:
    """Fit ``module`` in place to latents ``[S, ...]`` and responses ``[S, N]`` (NaN = missing).

    ``module(latents)`` gives predictions ``[B, N]``; ``module.regularizer()`` a scalar
    penalty added to the loss; the parameter names in ``module.no_weight_decay`` (a
    :class:`TrainedReadout` declares them) are exempt from weight decay. Each epoch runs
    AdamW over shuffled mini-batches of the training split, minimising :func:`masked_mse`
    plus the penalty, then scores the validation split by the mean Pearson r across
    neurons. Training stops after ``patience`` epochs without improvement (or
    ``max_epochs``), and the module is left in eval mode with the state of its best epoch.
    Deterministic for a given seed on the CPU: the split, the batch order and the global
    RNG (used by stochastic modules) are all seeded. A non-finite loss raises
    :class:`UserError` (lower the learning rate).
    """
    generator = torch.Generator().manual_seed(params.seed)
    train_index, val_index = split_train_val(latents.shape[0], params.val_fraction, generator)
    optimizer = torch.optim.AdamW(_param_groups(module), lr=params.lr, weight_decay=params.weight_decay)
    losses: list[float] = []
    val_r: list[float] = []
    best_r, best_epoch, best_state = -math.inf, -1, None
    progress = tqdm(total=params.max_epochs, desc="readout", disable=not params.progress, leave=False, unit="epoch")
    with seeded_on(params.seed, latents.device), progress:
        for epoch in range(params.max_epochs):
            module.train()
            total, count = 0.0, 0
            for batch in train_index[torch.randperm(len(train_index), generator=generator)].split(params.batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = masked_mse(module(latents[batch]), responses[batch]) + module.regularizer()
                value = loss.item()
                if not math.isfinite(value):
                    raise UserError(f"readout training diverged (the loss is {value}); lower lr={params.lr}")
                loss.backward()
                optimizer.step()
                total, count = total + value * len(batch), count + len(batch)
            losses.append(total / count)
            r = pearson_columns(eval_predictions(module, latents[val_index], params.batch_size), responses[val_index])
            val_r.append(float(r.mean()))
            progress.update()
            progress.set_postfix(val_r=f"{val_r[-1]:.3f}")
            if best_state is None or val_r[-1] > best_r:
                best_r, best_epoch = val_r[-1], epoch
                best_state = copy.deepcopy(module.state_dict())
            elif epoch - best_epoch >= params.patience:
                break
    module.load_state_dict(best_state)
    module.eval()
    return TrainingHistory(losses, val_r, best_epoch, val_index)


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

    def init_from_data(self, latents: Tensor, responses: Tensor) -> None:
        """Data-dependent start, after ``initialize``: set each bias so the mean prediction matches the mean response.

        ``latents`` ``[S, C, H, W]``, ``responses`` ``[S, N]`` (NaN = missing), in eval mode
        without gradient. Subclasses that initialise more from data do so first, then call this.
        """
        self._bias.zero_()
        drive = torch.cat([self.preactivation(chunk) for chunk in latents.split(self.params.batch_size)]).mean(0)
        self._bias.copy_(self._inverse_nonlinearity(torch.nanmean(responses, 0)) - drive)
