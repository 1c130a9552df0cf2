"""The built-in matchers against planted references and direct formulas; a matcher needs only a similarity."""

from __future__ import annotations

import pytest
import torch


# -- matchers --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cosine", "pearson", "euclidean", "dot"])
def test_matchers_find_the_planted_reference(registry, name):
    g = torch.Generator().manual_seed(1)
    candidates = torch.randn(3, 50, 32, generator=g)  # [G neurons, K candidates, D]
    candidates = candidates / candidates.norm(dim=-1, keepdim=True)
    truth = torch.randint(0, 50, (3, 7), generator=g)  # [G, Q]
    query = torch.gather(candidates, 1, truth[..., None].expand(-1, -1, 32))
    query = query + 0.05 * torch.randn(query.shape, generator=g)
    matcher = registry.build("matcher", name)
    scores, index = matcher.match(query, candidates, top_k=2)
    assert index.shape == (3, 7, 2) and scores.shape == (3, 7, 2)
    assert torch.equal(index[..., 0], truth)
    assert (scores[..., 0] >= scores[..., 1]).all()


def test_cosine_and_pearson_against_direct_formulas(registry):
    a, b = torch.randn(4, 10), torch.randn(6, 10)
    cos = registry.build("matcher", "cosine").similarity(a, b)
    torch.testing.assert_close(cos, torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1))
    pear = registry.build("matcher", "pearson").similarity(a, b)
    direct = torch.corrcoef(torch.cat([a, b]))[:4, 4:]
    torch.testing.assert_close(pear, direct, atol=1e-5, rtol=1e-5)


# -- matching contract -----------------------------------------------------------------
def test_a_matcher_needs_only_similarity():
    from sharedattr.plugins.contracts import match_references

    class Dot:  # no base class, no match()
        def similarity(self, a, b):
            return a @ b.transpose(-1, -2)

    candidates = torch.eye(4)[None]  # [1, K=4, D=4]
    scores, index = match_references(Dot(), candidates[:, [2, 0]], candidates, top_k=1)
    assert index.squeeze().tolist() == [2, 0]


def test_built_in_matchers_are_built_from_their_params_model(registry):
    from pydantic import ValidationError

    from sharedattr.selection.matchers import CosineMatcher, MatcherParams

    assert CosineMatcher().eps == MatcherParams().eps and CosineMatcher(eps=1e-6).params == MatcherParams(eps=1e-6)
    assert registry.build("matcher", "cosine", eps=1e-6).params == CosineMatcher(MatcherParams(eps=1e-6)).params
    with pytest.raises(ValidationError, match="eps"):
        CosineMatcher(eps=0.0)


def test_the_conformance_check_catches_a_factored_similarity_that_disagrees():
    from sharedattr.plugins.loading import load_registry
    from sharedattr.testing import check_component

    class Plugin:
        from sharedattr import hookimpl

        @hookimpl
        def register_matchers(self, register):
            class Careless:  # a dot product whose shortcut forgets the weights
                def similarity(self, a, b):
                    return a @ b.transpose(-1, -2)

                def similarity_factored(self, query, weight, latents):
                    return query @ latents.T

            register("careless", Careless)

    registry = load_registry(extra_plugins=[("p", Plugin())])
    with pytest.raises(AssertionError, match="similarity_factored"):
        check_component("matcher", "careless", registry=registry)
