"""Built-in matchers: similarities between contribution vectors ``c_n(x) = w_n ⊙ z_n(x)``.

All work on batches: ``a [..., Q, D]`` against ``b [..., K, D]`` → ``[..., Q, K]`` as one
matrix product, so many neurons and drivers are matched at once (the base class and its top-k step are
:class:`sharedattr.plugins.contracts.Matcher`). When every neuron shares
one latent vector per image (ridge), the candidates' contributions ``w_g ⊙ z_k`` are a
product of two small factors; :meth:`Matcher.similarity_factored` takes them unexpanded,
and the dot and cosine matchers then need one matrix product ``[G·Q, D] × [D, K]`` and never
form the ``[G, K, D]`` candidate contributions.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from sharedattr.plugins.contracts import Matcher
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import Configurable, Params, register_components


class MatcherParams(Params):
    eps: float = Field(1e-12, gt=0, description="Guard against division by zero for all-zero vectors.")


class BuiltinMatcher(Configurable, Matcher):
    """A built-in matcher: built from its validated :class:`MatcherParams` (``CosineMatcher()``,
    ``CosineMatcher(eps=1e-9)`` or ``CosineMatcher(params)``), whose ``eps`` it keeps."""

    params_model = MatcherParams

    def __init__(self, params: MatcherParams | None = None, **overrides: float) -> None:
        self.params = self.resolve_params(params, overrides)
        Matcher.__init__(self, self.params.eps)


def _weighted_dot(query: Tensor, weight: Tensor, latents: Tensor) -> Tensor:
    """``⟨a_gq, w_g ⊙ z_k⟩ = ⟨a_gq ⊙ w_g, z_k⟩`` ``[G, Q, K]``: one matrix product ``[G·Q, D] × [D, K]``.

    Scales ``query`` in place.
    """
    return query.mul_(weight[:, None, :]) @ latents.T


class DotMatcher(BuiltinMatcher):
    name = "dot"
    description = "Dot product of contribution vectors."

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b.transpose(-1, -2)

    def similarity_factored(self, query: Tensor, weight: Tensor, latents: Tensor) -> Tensor:
        if type(self).similarity is not DotMatcher.similarity:  # a subclass changed the similarity
            return super().similarity_factored(query, weight, latents)
        return _weighted_dot(query, weight, latents)


class CosineMatcher(BuiltinMatcher):
    name = "cosine"
    description = "Cosine similarity of contribution vectors."

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        a = a / a.norm(dim=-1, keepdim=True).clamp(min=self.eps)
        b = b / b.norm(dim=-1, keepdim=True).clamp(min=self.eps)
        return a @ b.transpose(-1, -2)

    def similarity_factored(self, query: Tensor, weight: Tensor, latents: Tensor) -> Tensor:
        """The dot products divided by the norms; ``‖w_g ⊙ z_k‖² = (z²)(w²)ᵀ``, also one matrix product."""
        if type(self).similarity is not CosineMatcher.similarity:  # e.g. Pearson: centring does not factorise
            return super().similarity_factored(query, weight, latents)
        norm_q = query.norm(dim=-1).clamp(min=self.eps)  # [G, Q]
        sim = _weighted_dot(query, weight, latents)
        w2 = weight.square().T  # [D, G]
        rows = max(1, (64 << 20) // max(1, latents.shape[1] * latents.element_size()))  # square 64 MiB at a time
        norm_k = torch.cat([chunk.square() @ w2 for chunk in latents.split(rows)]).T.sqrt().clamp(min=self.eps)
        return sim.div_(norm_q[..., None]).div_(norm_k[:, None, :])


class PearsonMatcher(CosineMatcher):
    name = "pearson"
    description = "Pearson correlation of contribution vectors."

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return super().similarity(a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True))


class EuclideanMatcher(BuiltinMatcher):
    """Negative Euclidean distance (higher = closer)."""

    name = "euclidean"
    description = "Negative Euclidean distance."

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return -torch.cdist(a, b)


@hookimpl
def register_matchers(register):
    register_components(register, (CosineMatcher, PearsonMatcher, EuclideanMatcher, DotMatcher))
