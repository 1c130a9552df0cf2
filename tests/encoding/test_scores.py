"""Scoring: Pearson r, split-half noise ceiling and FEV recover known truths on simulated repeats."""

from __future__ import annotations

import math

import pytest
import torch

from sharedattr.encoding.scores import (
    MIN_REPEATED_STIMULI,
    fraction_explainable_variance_explained,
    noise_ceiling,
    pearson,
    pearson_columns,
    split_half_reliability,
    unscorable_reasons,
)

S, R, REPLICATES = 400, 6, 8
NOISE_VARIANCES = [0.0, 0.5, 2.0]  # per trial; the signal has variance 1


def simulate(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal ``mu [S, N]`` (variance 1) and trials ``[S, R, N]`` = mu + noise, REPLICATES neurons per noise level."""
    g = torch.Generator().manual_seed(seed)
    noise_sd = torch.tensor(NOISE_VARIANCES).repeat_interleave(REPLICATES).sqrt()
    mu = torch.randn(S, len(noise_sd), generator=g)
    return mu, mu[:, None] + noise_sd * torch.randn(S, R, len(noise_sd), generator=g)


def per_level(x: torch.Tensor) -> torch.Tensor:
    """``[N]`` → ``[levels, REPLICATES]``."""
    return x.reshape(len(NOISE_VARIANCES), REPLICATES)


def test_pearson_is_pearson_columns_with_shape_checks():
    a, b = torch.randn(20, 3), torch.randn(20, 3)
    b[3, 1] = math.nan
    assert torch.equal(pearson(a, b), pearson_columns(a, b))
    with pytest.raises(ValueError, match=r"\[S, N\]"):
        pearson(a, b[:10])


def test_split_half_reliability_and_ceiling_recover_the_truth():
    mu, trials = simulate()
    truth = torch.tensor([1 / (1 + v / R) for v in NOISE_VARIANCES])[:, None]  # Var(mu) / (Var(mu) + s2 / R)
    reliability = per_level(split_half_reliability(trials))
    assert (reliability - truth).abs().max() < 0.05
    assert (reliability.mean(1) - truth[:, 0]).abs().max() < 0.015
    ceiling = per_level(noise_ceiling(trials))
    assert (ceiling - truth.sqrt()).abs().max() < 0.05
    torch.testing.assert_close(ceiling[0], torch.ones(REPLICATES))  # noiseless: exactly 1
    # the ceiling is the r of a perfect model against the trial means
    r_of_signal = per_level(pearson(mu, trials.mean(1)))
    assert (ceiling - r_of_signal).abs().max() < 0.05


def test_split_half_is_seeded_and_uses_the_splits():
    _, trials = simulate()
    assert torch.equal(split_half_reliability(trials, seed=3), split_half_reliability(trials, seed=3))
    assert not torch.equal(split_half_reliability(trials, seed=3), split_half_reliability(trials, seed=4))
    assert not torch.equal(split_half_reliability(trials, n_splits=1), split_half_reliability(trials, n_splits=20))


def test_fev_recovers_the_truth():
    mu, trials = simulate()
    # the estimator's SD over 50 seeds is about 0 / 0.015 / 0.035 at the three noise levels
    tolerance = torch.tensor([0.05, 0.05, 0.1])[:, None]
    perfect = per_level(fraction_explainable_variance_explained(mu, trials))
    assert ((perfect - 1).abs() < tolerance).all()
    torch.testing.assert_close(perfect[0], torch.ones(REPLICATES))  # noiseless: exactly 1
    g = torch.Generator().manual_seed(1)
    error = 0.5 * torch.randn(mu.shape, generator=g)  # Var(e) = 0.25 → FEV = 1 - 0.25 / Var(mu) = 0.75
    fev = per_level(fraction_explainable_variance_explained(mu + error, trials))
    sample_truth = per_level(1 - error.pow(2).mean(0) / mu.var(0, unbiased=False))
    assert ((fev - sample_truth).abs() < tolerance).all()
    assert (fev.mean(1) - 0.75).abs().max() < 0.03
    grand_mean = trials.nanmean(dim=(0, 1)).expand(S, -1)
    assert fraction_explainable_variance_explained(grand_mean, trials).abs().max() < 1e-6  # FEV 0 at the mean


def test_fev_skips_stimuli_without_a_prediction_and_nan_trials():
    mu, trials = simulate()
    predicted = mu.clone()
    predicted[:100] = math.nan
    trials[100:, 3:] = math.nan  # half the trials missing on the kept stimuli
    fev = fraction_explainable_variance_explained(predicted, trials)
    torch.testing.assert_close(fev, fraction_explainable_variance_explained(mu[100:], trials[100:, :3]))


def test_nan_only_without_enough_repeats_and_the_reason_says_so():
    _, trials = simulate()
    trials = trials[:, :, [0, 8, 16]].clone()  # one neuron per noise level
    trials[MIN_REPEATED_STIMULI - 1 :, 1:, 0] = math.nan  # neuron 0: only 2 stimuli keep repeats
    noise = torch.randn(S, R, generator=torch.Generator().manual_seed(5))
    trials[:, :, 2] = noise - noise.mean(1, keepdim=True)  # neuron 2: noise only, every stimulus mean 0
    reliability = split_half_reliability(trials)
    assert reliability[0].isnan() and not reliability[1:].isnan().any()
    assert noise_ceiling(trials)[0].isnan()
    reasons = unscorable_reasons(trials)
    assert reasons == [f"only 2 stimuli with 2 or more valid trials (need {MIN_REPEATED_STIMULI})", None, None]

    predicted = torch.zeros(S, 3)
    fev = fraction_explainable_variance_explained(predicted, trials)
    assert fev[0].isnan() and not fev[1].isnan() and fev[2].isnan()
    fev_reasons = unscorable_reasons(trials, predicted)
    assert fev_reasons[0] == reasons[0] and fev_reasons[1] is None
    assert fev_reasons[2].startswith("no explainable variance: the trial-to-trial variance")
    predicted[:, 1] = math.nan
    assert unscorable_reasons(trials, predicted)[1].startswith("only 0 stimuli")


def test_the_note_on_a_negative_fev_beside_a_positive_r():
    """fit's footnote names the neurons with FEV < 0 and r > 0 (NaN FEV and r ≤ 0 left out), at most FEV_SHOWN."""
    from sharedattr.encoding.scores import FEV_SHOWN, negative_fev_note

    ids = ["a", "b", "c", "d"]
    assert negative_fev_note(ids, torch.tensor([0.5, -0.1, 0.3, 0.2]), torch.tensor([0.2, -0.4, math.nan, 0.0])) is None
    note = negative_fev_note(ids, torch.tensor([0.5, -0.1, 0.3, 0.2]), torch.tensor([-0.25, -0.4, math.nan, 0.1]))
    assert note.startswith("note: 1 neuron has FEV < 0 beside r > 0 (a: r 0.500, FEV -0.250).")
    assert "whatever their scale and offset" in note and "docs/fitting.md" in note
    many = [f"n{i}" for i in range(FEV_SHOWN + 2)]
    note = negative_fev_note(many, torch.full((len(many),), 0.4), torch.full((len(many),), -0.1))
    assert note.startswith(f"note: {len(many)} neurons have") and "; and 2 more)" in note
    assert all(f"n{i}: r" in note for i in range(FEV_SHOWN)) and f"n{FEV_SHOWN}: r" not in note
