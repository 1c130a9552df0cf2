"""BiLRP (Eberle et al., TPAMI 2022, "Building and interpreting deep similarity models"), with the LRP-0 rule: the
relevance of pixel pairs for the similarity of two images, a published pairwise baseline.

For neuron ``n`` and an item's images ``x_a``, ``x_b``, the similarity explained is ``y(a, b) = ⟨φ(x_a), φ(x_b)⟩``
with ``φ = w_n ⊙ z_n`` (``features = "contributions"``, the vectors references are matched on) or ``φ = z_n``
(``"latents"``). BiLRP gives each pixel pair ``(i, i')`` the relevance

    R_{ii'} = Σ_m R_m(x_a)_i R_m(x_b)_{i'}

where ``R_m(x)`` is an LRP explanation of the feature ``φ_m`` at ``x``. With the LRP-0 rule, which on ReLU networks is
gradient × input (Ancona et al., ICLR 2018), ``R_m(x) = x ⊙ ∂φ_m/∂x``. Each image's map is its marginal,

    M(x_a) = Σ_{i'} R_{ii'} = x_a ⊙ ∂⟨φ(x_a), S(x_b)⟩/∂x_a,        S(x) = J_φ(x) x  [D]

(``S_m(x) = Σ_i R_m(x)_i``, one Jacobian-vector product, taken as the derivative of ``Jᵀv`` in ``v``), and
symmetrically ``M(x_b)``: one forward and three backward passes per image, never the ``[H·W, H·W]`` matrix. The
maps sum to ``⟨S(x_a), S(x_b)⟩``, which is ``⟨φ(x_a), φ(x_b)⟩`` for a bias-free ReLU network. The γ-rule the paper
recommends for cleaner maps is not implemented here.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from sharedattr.attribution.parallel_backprop import SharedAttribution, item_targets, pooled_for_targets
from sharedattr.plugins.contracts import PairwiseAttribution
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import Configurable, Params, register_components

Features = Literal["contributions", "latents"]


class BiLRPParams(Params):
    """Params of ``bilrp``."""

    features: Features = Field(
        "contributions",
        description="The similarity explained: ⟨w_n ⊙ z_n(a), w_n ⊙ z_n(b)⟩ (contributions, as matching compares) "
        "or ⟨z_n(a), z_n(b)⟩ (latents).",
    )
    internal_batch_size: int | None = Field(
        None, ge=1, description="Items (pairs) per forward/backward pass; bounds memory (null = all at once)."
    )


class BiLRP(Configurable, PairwiseAttribution):
    """BiLRP marginals with the LRP-0 (gradient × input) rule: ``x_a ⊙ ∂⟨φ(x_a), J_φ(x_b) x_b⟩/∂x_a`` and
    symmetrically, ``[B, C, H, W]`` each.

    ``model`` as for :class:`~sharedattr.attribution.parallel_backprop.ParallelBackprop`. Returns
    :class:`~sharedattr.attribution.parallel_backprop.SharedAttribution` ``(map of a, map of b, S(x_a))``.

    Example::

        maps = BiLRP(model).attribute((drivers, references), target=0)
        maps.ooc.shape  # [B, C, H, W]; maps.ooc.sum() == ⟨S(a), S(b)⟩ summed over items
    """

    name = "bilrp"
    description = (
        "BiLRP (Eberle et al. 2022), LRP-0 rule: each image's marginal of the pixel-pair relevance of ⟨φ(a), φ(b)⟩."
    )
    params_model = BiLRPParams
    batch_invariant: ClassVar[bool] = True
    thread_safe: ClassVar[bool] = True

    def __init__(self, model: nn.Module, params: BiLRPParams | None = None, **overrides: Any) -> None:
        super().__init__(model)
        self.model = model
        self.params: BiLRPParams = self.resolve_params(params, overrides)

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return False

    def attribute(self, inputs: tuple[Tensor, Tensor], target: Any = None) -> SharedAttribution:
        """Both images' marginals for neuron ``target``: ``inputs = (x_a, x_b)``, each ``[B, C, H, W]``; ``target``
        an int or ``[B]`` tensor of neuron indices."""
        x_a, x_b = (x.detach() for x in inputs)
        if x_a.shape != x_b.shape:
            raise ValueError(
                f"the two images of a pair must have one shape; got {tuple(x_a.shape)} and {tuple(x_b.shape)}"
            )
        targets = item_targets(target, x_a.shape[0], x_a.device)
        step = self.params.internal_batch_size or max(1, x_a.shape[0])
        starts = range(0, x_a.shape[0], step)
        parts = [self._items(x_a[i : i + step], x_b[i : i + step], targets[i : i + step]) for i in starts]
        return SharedAttribution(*(torch.cat(p) for p in zip(*parts)))

    def _features(self, x: Tensor, targets: Tensor) -> Tensor:
        """``φ(x)`` ``[B, D]``."""
        z = pooled_for_targets(self.model, self.model.latents(x), targets)
        if self.params.features == "latents":
            return z
        readout = self.model.readout
        return z * readout.weight[targets.to(readout.weight.device)].to(z.device)

    def _items(self, x_a: Tensor, x_b: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b = x_a.shape[0]
        both, both_targets = torch.cat([x_a, x_b]), torch.cat([targets, targets])
        with torch.enable_grad():
            x = both.clone().requires_grad_(True)
            phi = self._features(x, both_targets)  # [2b, D]
            v = torch.zeros_like(phi).requires_grad_(True)
            (jtv,) = torch.autograd.grad(phi, x, v, create_graph=True)  # Jᵀv, linear in v
            (conserved,) = torch.autograd.grad(jtv, v, both)  # S = J x (double backward: no forward-mode AD)
            partner = torch.cat([conserved[b:], conserved[:b]]).detach()
            (grad,) = torch.autograd.grad(phi, x, partner)
        maps = (both * grad).detach()
        return maps[:b], maps[b:], conserved[:b].detach()


@hookimpl
def register_methods(register):
    register_components(register, [BiLRP])
