"""Model parameter randomisation test (Adebayo et al. 2018).

An explanation that reflects what the model learned must change when the learned
parameters are destroyed. The metric recomputes each map with a randomised copy of the
encoding model (``batch.explain``) and reports the Spearman rank correlation between the
original and the randomised map: lower is better.

How parameters are randomised, and why:

- **backbone**: every submodule with ``reset_parameters()`` (convolutions, linear layers,
  norms, ...) is re-initialised by its own rule (the architecture's initialisation, as in
  Adebayo et al.); norm layers also reset their running statistics. Parameters held
  directly by a module without ``reset_parameters()`` (e.g. a ViT's position embedding)
  get the readout's treatment below, so no learned backbone parameter survives.
- **readout**: every floating-point tensor of its ``state_dict`` (parameters *and*
  buffers: the ridge readout keeps its fitted weights as buffers and has no
  initialisation rule, a re-initialised ridge readout being all zeros) is replaced by
  Gaussian samples with that tensor's own mean and std. The scale of the weights, and so
  of responses and gradients, is kept; their learned structure is destroyed. A tensor
  with a single value (or constant values) keeps it: there is no spread to sample from.

The randomisation is seeded and runs on the CPU (then the copy returns to the model's
device), so it is the same on every device, every batch and every call. The random
generators are seeded with a hash of ``seed``, never ``seed`` itself: a randomly
initialised backbone built with ``torch.manual_seed(0)`` would otherwise be re-created
exactly by ``reset_parameters()`` under seed 0. ``layers="all"``
randomises the backbone and the readout exactly as the two single choices do. The
original model is never modified.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from sharedattr.attribution.hook_safety import private_copy
from sharedattr.metrics.base import ConfigurableMetric
from sharedattr.plugins.contracts import AttributionBatch
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import Params, Seed, register_components
from sharedattr.runtime.numerics import seeded_global_rng

Layers = Literal["readout", "backbone", "all"]


class RandomisationParams(Params):
    layers: Layers = Field("all", description="What to randomise: the 'readout', the 'backbone', or 'all' (both).")
    absolute: bool = Field(True, description="Correlate |map| (True) or the signed maps (False).")
    seed: Seed = Field(0, description="Seed of the randomisation.")


def derived_seed(seed: int) -> int:
    """A 63-bit seed derived from ``seed`` by hashing (distinct from the small seeds models are built with)."""
    digest = hashlib.sha256(f"sharedattr.randomisation:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _gaussian_like(tensor: Tensor, generator: torch.Generator) -> Tensor:
    """Gaussian samples with ``tensor``'s shape, dtype, mean and (population) std."""
    values = tensor.detach().double()
    mean, std = values.mean(), values.std(correction=0)
    noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
    return (mean + std * noise).to(tensor.dtype)


@torch.no_grad()
def resample_tensors(tensors: list[Tensor], generator: torch.Generator) -> None:
    """Replace each floating tensor in place by :func:`_gaussian_like` samples (others are kept)."""
    for tensor in tensors:
        if tensor.is_floating_point() and tensor.numel() > 0:
            tensor.copy_(_gaussian_like(tensor, generator))


@torch.no_grad()
def reset_modules(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module`` in place: ``reset_parameters()`` where a submodule has it, else resampling."""
    generator = torch.Generator().manual_seed(derived_seed(seed))
    with seeded_global_rng(derived_seed(seed)):  # the initialisers draw from the global CPU generator
        for sub in module.modules():
            if callable(getattr(sub, "reset_parameters", None)):
                sub.reset_parameters()
            else:
                resample_tensors(list(sub.parameters(recurse=False)), generator)


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _part(model: nn.Module, name: str) -> nn.Module:
    part = getattr(model, name, None)
    if not isinstance(part, nn.Module):
        raise ValueError(
            f"randomisation: layers={name!r} needs an encoding model with a .{name} module; "
            f"got a {type(model).__name__}"
        )
    return part


def randomised_model(model: nn.Module, layers: Layers = "all", seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with its ``layers`` randomised (see the module docstring); ``model`` is untouched.

    With ``layers="all"``, a model without ``.backbone``/``.readout`` is reset as a whole.
    """
    device = _device_of(model)
    clone = private_copy(model).cpu()  # deepcopy alone switches torchvision extractors to training mode
    parts = ("backbone", "readout") if layers == "all" else (layers,)
    if layers == "all" and not all(isinstance(getattr(clone, p, None), nn.Module) for p in parts):
        reset_modules(clone, seed)
        return clone.to(device)
    if "backbone" in parts:
        reset_modules(_part(clone, "backbone"), seed)
    if "readout" in parts:
        generator = torch.Generator().manual_seed(derived_seed(seed))
        resample_tensors(list(_part(clone, "readout").state_dict().values()), generator)
    return clone.to(device)


def average_ranks(x: Tensor) -> Tensor:
    """Ranks (1-based) along the last dim of ``x`` ``[B, P]``, ties given their average rank."""
    ordered = x.sort(dim=1).values
    below = torch.searchsorted(ordered, x.contiguous(), right=False)
    up_to = torch.searchsorted(ordered, x.contiguous(), right=True)
    return (below + up_to + 1).to(torch.float64) / 2


def spearman_rows(a: Tensor, b: Tensor) -> Tensor:
    """Spearman ρ between matching rows of ``a`` and ``b`` ``[B, P]`` → ``[B]``; NaN where a row is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    rho = (ra * rb).sum(1) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, rho, torch.full_like(rho, float("nan")))


class RandomisationMetric(ConfigurableMetric):
    """Spearman ρ between each map and the same map from a randomised model. Lower is better."""

    name = "randomisation"
    description = (
        "Model parameter randomisation test: Spearman rho between the maps of the trained and of a weight-randomised "
        "model (lower is better)."
    )
    params_model = RandomisationParams
    higher_is_better: ClassVar[bool] = False
    family = "sanity"
    thread_safe: ClassVar[bool] = True
    requires_explainer: ClassVar[bool] = True

    def __call__(self, batch: AttributionBatch) -> Tensor:
        if batch.explain is None:
            raise ValueError(
                "randomisation needs batch.explain, which recomputes the maps with another model "
                "(the pipeline provides it; this metric is skipped where it cannot)"
            )
        random_maps = batch.explain(randomised_model(batch.model, self.params.layers, self.params.seed)).detach()
        original = batch.maps.detach()
        if self.params.absolute:
            original, random_maps = original.abs(), random_maps.abs()
        rho = spearman_rows(original.flatten(1), random_maps.to(original.device).flatten(1))
        return rho.to(original.dtype if original.is_floating_point() else torch.float32)


@hookimpl
def register_metrics(register):
    register_components(register, [RandomisationMetric])
