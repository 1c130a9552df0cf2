"""The co-location control: a pairwise map that compares no features, only where each image's own map is positive.

For neuron ``n``, an item's images ``x_a`` and ``x_b`` (one shape ``[C, H, W]``) and a path (``layer``, ``gradient``
or ``ig``, as :mod:`~sharedattr.attribution.parallel_backprop`), the *own map* of an image is that path's
single-image map of the neuron's own objective, ``s = w_n`` (``parallel_backprop`` with ``variant = "own"``), summed
over colour channels: ``O(x)`` ``[H, W]`` (on the ``layer`` path, gradient × activation at the backbone output summed
over channels and upsampled bilinearly to the image, so both images' own maps lie on one pixel grid). The map of both
images is

    M(x_a, x_b) = max(O(x_a), 0) ⊙ max(O(x_b), 0)        (per pixel, [H, W])

It is high wherever both images drive the neuron *at the same place*, whatever the features there: a pairwise method
that claims to show what two images share must beat it on a sharing metric (docs/benchmarks.md, "Shared parts").
Both images get the same map; it is symmetric in the pair.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from torch import Tensor, nn

from sharedattr.attribution.parallel_backprop import ParallelBackprop, Path, SharedAttribution
from sharedattr.plugins.contracts import ControlReach, PairwiseAttribution
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import MAX_STEPS, Configurable, Params, register_components


class ColocationParams(Params):
    """Params of ``colocation``."""

    path: Path = Field(
        "layer",
        description="The path of each image's own map (the neuron's own objective, as parallel_backprop with "
        "variant = own): layer (backbone output, upsampled), gradient (pixels) or ig (path-integrated).",
    )
    n_steps: int = Field(
        16, ge=1, le=MAX_STEPS, description="path = ig: quadrature points (Gauss–Legendre) along the path."
    )
    baseline: float = Field(0.0, description="path = ig: constant baseline pixel value (0 = black, 0.5 = mid-grey).")
    internal_batch_size: int | None = Field(
        None, ge=1, description="Items (pairs) per forward/backward pass; bounds memory (null = all at once)."
    )


def colocation_map(own_a: Tensor, own_b: Tensor) -> Tensor:
    """``max(O_a, 0) ⊙ max(O_b, 0)`` of two own maps ``[B, C, H, W]`` (channels summed first) → ``[B, 1, H, W]``.

    >>> import torch
    >>> colocation_map(torch.tensor([[[[2.0, -1.0]]]]), torch.tensor([[[[3.0, 4.0]]]])).flatten().tolist()
    [6.0, 0.0]
    """
    if own_a.shape != own_b.shape:
        raise ValueError(f"own maps must have one shape; got {tuple(own_a.shape)} and {tuple(own_b.shape)}")
    a = own_a.sum(dim=1, keepdim=True).clamp(min=0)
    b = own_b.sum(dim=1, keepdim=True).clamp(min=0)
    return a * b


class Colocation(Configurable, PairwiseAttribution):
    """The co-location control ``max(O(x_a), 0) ⊙ max(O(x_b), 0)``: where both images' own maps are positive.

    ``model`` as for :class:`~sharedattr.attribution.parallel_backprop.ParallelBackprop`. Returns
    :class:`~sharedattr.attribution.parallel_backprop.SharedAttribution` ``(map, map, w_n)``, both maps
    ``[B, 1, H, W]``.

    Example::

        maps = Colocation(model, path="layer").attribute((drivers, references), target=0)
        maps.ooc.shape  # [B, 1, H, W], equal to maps.ref
    """

    name = "colocation"
    description = (
        "Co-location control: max(own map of a, 0) × max(own map of b, 0) per pixel; compares no features, so a "
        "pairwise method must beat it on the sharing metrics."
    )
    params_model = ColocationParams
    batch_invariant: ClassVar[bool] = True
    thread_safe: ClassVar[bool] = True
    controls: ClassVar[ControlReach] = "any_pairwise"
    control_noun: ClassVar[str] = "co-location control"

    def __init__(self, model: nn.Module, params: ColocationParams | None = None, **overrides: Any) -> None:
        super().__init__(model)
        self.model = model
        self.params: ColocationParams = self.resolve_params(params, overrides)
        p = self.params
        self.own = ParallelBackprop(
            model,
            variant="own",
            path=p.path,
            n_steps=p.n_steps,
            baseline=p.baseline,
            internal_batch_size=p.internal_batch_size,
        )

    @classmethod
    def control_of(cls, params: ColocationParams) -> str | None:
        """Always a control: of every pairwise method, for co-location without any feature compared."""
        return "co-location of the two images' own maps on the same path (no feature compared)"

    def limit_images_per_pass(self, images: int) -> None:
        """As :meth:`ParallelBackprop.limit_images_per_pass` (the ``ig`` path's steps are chunked)."""
        self.own.limit_images_per_pass(images)

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.own.multiplies_by_inputs

    def has_convergence_delta(self) -> bool:
        return False

    def attribute(self, inputs: tuple[Tensor, Tensor], target: Any = None) -> SharedAttribution:
        """The co-location map of each item, for both images: ``inputs = (x_a, x_b)``, each ``[B, C, H, W]``;
        ``target`` an int or ``[B]`` tensor of neuron indices."""
        own = self.own.attribute(inputs, target)
        both = colocation_map(own.ooc, own.ref)
        return SharedAttribution(both, both.clone(), own.shared)


@hookimpl
def register_methods(register):
    register_components(register, [Colocation])
