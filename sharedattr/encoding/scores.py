"""Scoring predictions against recorded responses: Pearson r and noise-ceiling measures from repeats.

Shapes: predictions and trial-averaged responses ``[S, N]`` (S stimuli, N neurons); trials
``[S, R, N]``, NaN-padded where a stimulus has fewer than R valid trials (as in
:attr:`sharedattr.data.Responses.trials` and ``Responses.trials_aligned_to``). Every result is
per neuron, ``[N]``.

The noise-ceiling measures need repeats: a neuron needs at least :data:`MIN_REPEATED_STIMULI`
stimuli with two or more valid trials, else its value is NaN; :func:`unscorable_reasons` says
why for each neuron.

Model of the data behind the definitions: trial ``t`` of stimulus ``s`` is
``y[s, t] = mu[s] + eps[s, t]``, a stimulus-driven signal ``mu`` plus trial-to-trial noise of
variance ``sigma2_noise``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MIN_REPEATED_STIMULI = 3
DEFAULT_SPLITS = 50


def pearson_columns(a: Tensor, b: Tensor) -> Tensor:
    """Pearson r between matching columns of ``a`` and ``b`` ``[B, N]`` → ``[N]`` (``a``'s dtype); NaN rows are ignored.

    Computed in float64 with the norms taken separately, so r is the same in any units (no
    overflow of large responses, no floor that pulls small ones to 0); 0 where a column is constant.
    """
    dtype = a.dtype
    a, b = a.double(), b.double()
    valid = ~(torch.isnan(a) | torch.isnan(b))
    n = valid.sum(0).clamp(min=1)
    am = torch.where(valid, a, 0.0).sum(0) / n
    bm = torch.where(valid, b, 0.0).sum(0) / n
    ac = torch.where(valid, a - am, 0.0)
    bc = torch.where(valid, b - bm, 0.0)
    denom = ac.pow(2).sum(0).sqrt() * bc.pow(2).sum(0).sqrt()
    r = (ac * bc).sum(0) / torch.where(denom > 0, denom, 1.0)
    return torch.where(denom > 0, r, torch.zeros_like(r)).clamp(-1.0, 1.0).to(dtype)


def pearson(predicted: Tensor, measured: Tensor) -> Tensor:
    """Pearson r per neuron between ``predicted`` and ``measured`` ``[S, N]`` → ``[N]``.

    Each neuron uses only the stimuli where both values are non-NaN; r is 0 where either
    column is constant over those stimuli (or fewer than two remain).
    """
    if predicted.dim() != 2 or predicted.shape != measured.shape:
        raise ValueError(
            f"predicted and measured must both be [S, N]; got {tuple(predicted.shape)} and {tuple(measured.shape)}"
        )
    return pearson_columns(predicted, measured)


def held_out_r(predicted: Tensor, measured: Tensor) -> tuple[Tensor, list[str | None]]:
    """Pearson r per neuron ``[S, N]`` → ``[N]`` float32, and per neuron why r is undefined (None where it is not).

    Computed in float64 (:func:`~sharedattr.encoding.scores.pearson_columns`), so it is the same for
    responses in any units (1e-30 or 1e15) and neither overflows nor underflows. NaN
    rows are left out per neuron. Where r is undefined, because the measured or the predicted
    column is constant or fewer than two stimuli remain, r is 0 and the note says why.
    """
    valid = ~(torch.isnan(predicted) | torch.isnan(measured))
    counts = valid.sum(0)

    def constant(x: Tensor) -> Tensor:
        """``[N]``: whether column ``x`` takes one value over its valid rows."""
        x = x.to(torch.float64)
        return torch.where(valid, x, -math.inf).amax(0) == torch.where(valid, x, math.inf).amin(0)

    r = pearson_columns(predicted, measured).float()  # float64 inside; 0 where a column is constant
    flat_p, flat_m = constant(predicted), constant(measured)
    notes: list[str | None] = []
    for i in range(r.shape[0]):
        if counts[i] < 2:
            notes.append(f"test_r undefined ({int(counts[i])} held-out stimuli measured), reported as 0")
        elif flat_m[i]:
            notes.append("test_r undefined (held-out responses constant), reported as 0")
        elif flat_p[i]:
            notes.append("test_r undefined (constant predictions), reported as 0")
        else:
            notes.append(None)
    return torch.where(counts >= 2, r, torch.zeros_like(r)), notes


def split_half_reliability(trials: Tensor, *, n_splits: int = DEFAULT_SPLITS, seed: int = 0) -> Tensor:
    """Spearman–Brown-corrected split-half reliability of the trial-averaged responses, ``[S, R, N]`` → ``[N]``.

    For each of ``n_splits`` random splits (a ``torch.Generator`` seeded with ``seed``), the
    valid trials of every stimulus with ``m >= 2`` of them are shuffled and split into halves of
    ``floor(m / 2)`` and ``ceil(m / 2)`` trials; ``r_k`` is the Pearson r, over those stimuli,
    between the two half means. With ``r`` the mean of ``r_k`` over splits (plain mean, no
    Fisher z), the reliability is the Spearman–Brown prediction for twice the trials::

        rho = 2 r / (1 + r)

    ``rho`` estimates the correlation between the all-trials mean and an independent repeat of
    the whole experiment: ``Var(mu) / (Var(mu) + sigma2_noise / R)`` (exact for equal halves,
    i.e. an even number of trials per stimulus). It can be negative for pure noise; it is 1 for
    a noiseless neuron. NaN for neurons without enough repeats (:func:`unscorable_reasons`).
    """
    if trials.dim() != 3:
        raise ValueError(f"trials must be [S, R, N]; got {tuple(trials.shape)}")
    x = trials.to(torch.float64)
    valid = ~torch.isnan(x)
    # Centre and scale each neuron to unit maximum magnitude (r is invariant to both): the same
    # result for responses in any units, with no underflow of tiny variances against pearson's floor.
    x = x - torch.where(valid, x, 0.0).sum(dim=(0, 1)) / valid.sum(dim=(0, 1)).clamp(min=1)
    scale = torch.where(valid, x.abs(), 0.0).amax(dim=(0, 1))
    x = x / torch.where(scale > 0, scale, 1.0)
    counts = valid.sum(dim=1, keepdim=True)  # [S, 1, N]
    half = counts // 2
    repeated = (counts >= 2).squeeze(1)  # [S, N]
    generator = torch.Generator().manual_seed(seed)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    total = torch.zeros(x.shape[2], dtype=torch.float64)
    for _ in range(n_splits):
        rank = _random_trial_ranks(valid, generator)
        first = rank < half
        second = valid & ~first
        mean_a = torch.where(first, x, 0.0).sum(dim=1) / half.squeeze(1).clamp(min=1)
        mean_b = torch.where(second, x, 0.0).sum(dim=1) / (counts - half).squeeze(1).clamp(min=1)
        total += pearson_columns(torch.where(repeated, mean_a, nan), torch.where(repeated, mean_b, nan))
    r = total / n_splits
    rho = 2 * r / (1 + r)
    return torch.where(_has_enough_repeats(trials), rho, float("nan")).to(torch.float32)


def noise_ceiling(trials: Tensor, *, n_splits: int = DEFAULT_SPLITS, seed: int = 0) -> Tensor:
    """The highest Pearson r a model can expect against the trial means, ``[S, R, N]`` → ``[N]``.

    ``sqrt(max(rho, 0))`` with ``rho`` from :func:`split_half_reliability`: under the data model,
    ``corr(mu, mean over trials) = sqrt(rho)``, so a model predicting the signal exactly scores
    this r, and ``r / noise_ceiling`` is the noise-normalised correlation. 1 for a noiseless
    neuron; NaN for neurons without enough repeats.
    """
    return split_half_reliability(trials, n_splits=n_splits, seed=seed).clamp(min=0).sqrt()


def fraction_explainable_variance_explained(predicted: Tensor, trials: Tensor) -> Tensor:
    """FEV per neuron (Cadena et al. 2019), predictions ``[S, N]`` and trials ``[S, R, N]`` → ``[N]``.

    For each neuron, over the stimuli where the prediction ``p[s]`` is not NaN, with the valid
    single trials ``y[s, t]`` (``T`` of them, grand mean ``ybar``)::

        total  = (1/T) * sum_{s,t} (y[s,t] - ybar)^2                  # variance of single trials
        noise  = mean over stimuli with m_s >= 2 valid trials of
                 1/(m_s - 1) * sum_t (y[s,t] - mean_t y[s,t])^2        # trial-to-trial variance
        mse    = (1/T) * sum_{s,t} (y[s,t] - p[s])^2
        FEV    = 1 - (mse - noise) / (total - noise)

    ``total - noise`` is the explainable (stimulus-driven) variance. FEV is 1 in expectation for
    a prediction equal to the signal ``mu``, 0 for a constant prediction at the grand mean, and
    ``1 - mean(e^2) / Var(mu)`` for a prediction ``mu + e``. Unlike r it penalises offset and
    scale errors. NaN where :func:`unscorable_reasons` gives a reason: too few repeats, or no
    explainable variance (``total <= noise``).
    """
    total, noise, mse = _variance_components(predicted, trials)
    fev = 1 - (mse - noise) / (total - noise)
    defined = _has_enough_repeats(trials, predicted) & (total > noise)
    return torch.where(defined, fev, float("nan")).to(torch.float32)


FEV_SHOWN = 3
"""Neurons named in :func:`negative_fev_note` (the rest are counted)."""


def negative_fev_note(neuron_ids: list[str], r: Tensor, fev: Tensor) -> str | None:
    """The footnote ``sharedattr fit`` prints when a neuron has a negative FEV beside a positive held-out r (``[N]``
    each; NaN FEV left out), or None when none has. It names the first :data:`FEV_SHOWN` of them and says why the
    two can disagree.

    Example::

        >>> print(negative_fev_note(["n1", "n2"], torch.tensor([0.4, 0.6]), torch.tensor([-0.2, 0.3])))
        note: 1 neuron has FEV < 0 beside r > 0 (n1: r 0.400, FEV -0.200). r says whether the predictions rise and \
fall with the responses, whatever their scale and offset; FEV says how much of the explainable (stimulus-driven) \
variance they capture, and counts scale and offset errors against it. Predictions with the right shape but the wrong \
scale or offset, or a neuron whose noise ceiling is low, give r > 0 and FEV < 0 (docs/fitting.md, "Reading r and FEV").
    """
    both = [i for i in range(len(neuron_ids)) if bool(fev[i] < 0) and bool(r[i] > 0)]
    if not both:
        return None
    shown = "; ".join(f"{neuron_ids[i]}: r {float(r[i]):.3f}, FEV {float(fev[i]):.3f}" for i in both[:FEV_SHOWN])
    more = f"; and {len(both) - FEV_SHOWN} more" if len(both) > FEV_SHOWN else ""
    count = "1 neuron has" if len(both) == 1 else f"{len(both)} neurons have"
    return (
        f"note: {count} FEV < 0 beside r > 0 ({shown}{more}). r says whether the predictions rise and fall with the "
        "responses, whatever their scale and offset; FEV says how much of the explainable (stimulus-driven) variance "
        "they capture, and counts scale and offset errors against it. Predictions with the right shape but the wrong "
        "scale or offset, or a neuron whose noise ceiling is low, give r > 0 and FEV < 0 "
        '(docs/fitting.md, "Reading r and FEV").'
    )


def unscorable_reasons(trials: Tensor, predicted: Tensor | None = None) -> list[str | None]:
    """Why each neuron's noise-ceiling measure is NaN, ``[S, R, N]`` → N entries (None where it is defined).

    Without ``predicted``: for :func:`split_half_reliability` and :func:`noise_ceiling`. With
    ``predicted [S, N]``: for :func:`fraction_explainable_variance_explained`, which counts only
    the stimuli with a prediction and also needs explainable variance.
    """
    repeated = _repeated_stimulus_counts(trials, predicted)
    components = _variance_components(predicted, trials) if predicted is not None else None
    reasons: list[str | None] = []
    for n, count in enumerate(repeated.tolist()):
        if count < MIN_REPEATED_STIMULI:
            reasons.append(f"only {count} stimuli with 2 or more valid trials (need {MIN_REPEATED_STIMULI})")
        elif components is not None and components[0][n] <= components[1][n]:
            reasons.append(
                f"no explainable variance: the trial-to-trial variance {float(components[1][n]):.4g} "
                f"is at least the total variance {float(components[0][n]):.4g}"
            )
        else:
            reasons.append(None)
    return reasons


def _random_trial_ranks(valid: Tensor, generator: torch.Generator) -> Tensor:
    """A random rank of each trial among its stimulus's trials ``[S, R, N]``; valid trials rank first."""
    keys = torch.rand(valid.shape, generator=generator, dtype=torch.float64)
    keys = torch.where(valid, keys, 2.0)
    return keys.argsort(dim=1).argsort(dim=1)


def _repeated_stimulus_counts(trials: Tensor, predicted: Tensor | None = None) -> Tensor:
    """Stimuli with at least two valid trials (and a non-NaN prediction, if given), per neuron ``[N]``."""
    repeated = (~torch.isnan(trials)).sum(dim=1) >= 2
    if predicted is not None:
        repeated &= ~torch.isnan(predicted)
    return repeated.sum(dim=0)


def _has_enough_repeats(trials: Tensor, predicted: Tensor | None = None) -> Tensor:
    """Bool ``[N]``: at least :data:`MIN_REPEATED_STIMULI` repeated stimuli."""
    return _repeated_stimulus_counts(trials, predicted) >= MIN_REPEATED_STIMULI


def _variance_components(predicted: Tensor, trials: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, noise, mse)`` per neuron ``[N]`` as defined in :func:`fraction_explainable_variance_explained`.

    Computed in float64 over the stimuli with a prediction; NaN where a term has no data.
    """
    if trials.dim() != 3 or predicted.shape != (trials.shape[0], trials.shape[2]):
        raise ValueError(
            f"predicted must be [S, N] and trials [S, R, N] for the same S and N; got "
            f"{tuple(predicted.shape)} and {tuple(trials.shape)}"
        )
    y = trials.to(torch.float64)
    p = predicted.to(torch.float64).unsqueeze(1)  # [S, 1, N]
    valid = ~torch.isnan(y) & ~torch.isnan(p)
    n_total = valid.sum(dim=(0, 1))
    grand = torch.where(valid, y, 0.0).sum(dim=(0, 1)) / n_total
    total = torch.where(valid, (y - grand) ** 2, 0.0).sum(dim=(0, 1)) / n_total
    mse = torch.where(valid, (y - p) ** 2, 0.0).sum(dim=(0, 1)) / n_total
    m = valid.sum(dim=1)  # [S, N]
    stim_mean = torch.where(valid, y, 0.0).sum(dim=1) / m.clamp(min=1)
    within = torch.where(valid, (y - stim_mean.unsqueeze(1)) ** 2, 0.0).sum(dim=1) / (m - 1).clamp(min=1)
    repeated = m >= 2
    noise = torch.where(repeated, within, 0.0).sum(dim=0) / repeated.sum(dim=0)
    return total, noise, mse
