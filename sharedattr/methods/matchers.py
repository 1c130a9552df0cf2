"""Built-in matchers: similarities between contribution vectors ``c_n(x) = w_n ⊙ z_n(x)``.

All work on batches: ``a [..., Q, D]`` against ``b [..., K, D]`` → ``[..., Q, K]`` as one
matrix product, so many neurons and drivers are matched at once. When every neuron shares
one latent vector per image (ridge), the candidates' contributions ``w_g ⊙ z_k`` are a
product of two small factors; :meth:`Matcher.similarity_factored` takes them unexpanded,
and the dot and cosine matchers then need one matrix product ``[G·Q, D] × [D, K]`` and never
form the ``[G, K, D]`` candidate contributions.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ..hookspecs import hookimpl
from ..params import Params


class MatcherParams(Params):
    eps: float = Field(1e-12, gt=0, description="Guard against division by zero for all-zero vectors.")


def match_references(matcher, query: Tensor, candidates: Tensor, top_k: int = 1) -> tuple[Tensor, Tensor]:
    """Top-k candidates per query by ``matcher.similarity`` (the only method a matcher must have).

    ``query [..., Q, D]``, ``candidates [..., K, D]`` → scores and indices ``[..., Q, min(k, K)]``,
    most similar first.
    """
    sim = matcher.similarity(query, candidates)
    expected = (*query.shape[:-1], candidates.shape[-2])
    if tuple(sim.shape) != expected:
        raise TypeError(f"{type(matcher).__name__}.similarity returned shape {tuple(sim.shape)}, expected {expected}")
    return sim.topk(min(top_k, sim.shape[-1]), dim=-1)


class Matcher:
    """Base matcher: subclasses define ``similarity``; ``match`` picks the top-k references."""

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def similarity_factored(self, query: Tensor, weight: Tensor, latents: Tensor) -> Tensor:
        """``similarity(query, weight[:, None] * latents[None])``: candidates given as factors.

        ``query`` ``[G, Q, D]`` (contribution vectors), ``weight`` ``[G, D]`` and shared candidate
        latents ``latents`` ``[K, D]`` → ``[G, Q, K]``. ``query`` is a scratch tensor the method may
        overwrite. This default forms the candidates' contributions ``[G, K, D]``; matchers whose
        similarity factorises override it.
        """
        return self.similarity(query, weight[:, None, :] * latents[None])

    def match(self, query: Tensor, candidates: Tensor, top_k: int = 1) -> tuple[Tensor, Tensor]:
        """Top-k candidates per query: ``query [..., Q, D]``, ``candidates [..., K, D]`` → scores, indices ``[..., Q, k]``."""
        return match_references(self, query, candidates, top_k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _weighted_dot(query: Tensor, weight: Tensor, latents: Tensor) -> Tensor:
    """``⟨a_gq, w_g ⊙ z_k⟩ = ⟨a_gq ⊙ w_g, z_k⟩`` ``[G, Q, K]``: one matrix product ``[G·Q, D] × [D, K]``.

    Scales ``query`` in place.
    """
    return query.mul_(weight[:, None, :]) @ latents.T


class DotMatcher(Matcher):
    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b.transpose(-1, -2)

    def similarity_factored(self, query: Tensor, weight: Tensor, latents: Tensor) -> Tensor:
        if type(self).similarity is not DotMatcher.similarity:  # a subclass changed the similarity
            return super().similarity_factored(query, weight, latents)
        return _weighted_dot(query, weight, latents)


class CosineMatcher(Matcher):
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
        norm_k = (latents.square() @ weight.square().T).T.sqrt().clamp(min=self.eps)  # [G, K]
        return sim.div_(norm_q[..., None]).div_(norm_k[:, None, :])


class PearsonMatcher(CosineMatcher):
    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return super().similarity(a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True))


class EuclideanMatcher(Matcher):
    """Negative Euclidean distance (higher = closer)."""

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return -torch.cdist(a, b)


@hookimpl
def register_matchers(register):
    register("cosine", CosineMatcher, params=MatcherParams, description="Cosine similarity of contribution vectors.")
    register("pearson", PearsonMatcher, params=MatcherParams, description="Pearson correlation of contribution vectors.")
    register("euclidean", EuclideanMatcher, params=MatcherParams, description="Negative Euclidean distance.")
    register("dot", DotMatcher, params=MatcherParams, description="Dot product of contribution vectors.")
