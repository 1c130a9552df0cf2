"""Built-in readout: ridge regression with a per-neuron penalty chosen by k-fold or leave-one-out CV.

One eigendecomposition per fold (k-fold) or one in all (leave-one-out) is shared by all
neurons and all penalties (the closed form ``W = V diag(s / (s² + α_n)) Uᵀ y_n``), so the
cost barely grows with the number of neurons or the size of the penalty grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from sharedattr.data.responses import require_measured_neurons
from sharedattr.plugins.contracts import ReadoutModule
from sharedattr.plugins.hookspecs import hookimpl
from sharedattr.plugins.params import Configurable, Params, Seed, register_components
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.numerics import Pieces, on_one_thread, one_thread_results

DEFAULT_ALPHAS = tuple(10.0**k for k in range(-2, 9))


class RidgeParams(Params):
    """Params of the ``ridge`` readout."""

    alphas: tuple[float, ...] = Field(DEFAULT_ALPHAS, min_length=1, description="Penalty grid searched per neuron.")
    cv: Literal["kfold", "loo"] = Field(
        "kfold",
        description="How each neuron's penalty is chosen: kfold (k-fold CV with 'folds') or loo (exact "
        "efficient leave-one-out from one eigendecomposition; the choice of scikit-learn's RidgeCV).",
    )
    folds: int = Field(5, ge=2, description="Cross-validation folds for the penalty choice (cv = kfold).")
    pooling: Literal["none", "avg", "max"] = Field(
        "none", description="Spatial pooling of [C, H, W] latents before the linear map: none (flatten), avg or max."
    )
    fit_intercept: bool = Field(True, description="Fit a bias per neuron.")
    pca: int | None = Field(
        None, ge=1, description="Keep only the top-k principal components of the features (fitted within each fold)."
    )
    seed: Seed = Field(0, description="Seed of the fold assignment.")

    @field_validator("alphas")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(a <= 0 for a in value):
            raise ValueError("every penalty must be > 0")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _loo_without_pca(self) -> RidgeParams:
        if self.cv == "loo" and self.pca is not None:
            raise ValueError(
                "cv = 'loo' cannot be combined with pca (the components would be refitted per left-out "
                "image); use cv = 'kfold'"
            )
        return self


def _top(lam: Tensor, vecs: Tensor, k: int | None) -> tuple[Tensor, Tensor]:
    """Eigenpairs (ascending from ``eigh``) → the top ``k`` (all when None), negatives clamped to 0."""
    if k is not None and k < lam.shape[0]:
        lam, vecs = lam[-k:], vecs[:, -k:]
    return lam.clamp(min=0), vecs


class _Spectrum:
    """Ridge for all penalties and neurons from one eigendecomposition.

    With centred training features ``x [n, D]`` and targets ``y [n, N]``, both the primal
    form ``x (xᵀx + α)⁻¹ xᵀ y`` and the dual form ``k (xxᵀ + α)⁻¹ y`` predict new rows as
    ``P diag(1 / (λ + α)) Uᵀy``, where ``P`` holds the new rows projected on the
    eigenvectors. The dual form (from the Gram matrix ``xxᵀ``) is used when ``n < D``, the
    primal (from ``xᵀx``) otherwise. ``pca = k`` keeps the top-k eigencomponents only
    (principal-component ridge).
    """

    def __init__(self, square: Tensor, rhs: Tensor, pca: int | None) -> None:
        """``square``: ``xxᵀ [n, n]`` (dual) or ``xᵀx [D, D]`` (primal); ``rhs``: ``y`` or ``xᵀy``."""
        with one_thread_results():  # LAPACK's eigenvectors depend on the thread count: fit the same model everywhere
            self.lam, self.vecs = _top(*torch.linalg.eigh(square), pca)
        self.uty = self.vecs.T @ rhs  # [k, N]

    def predict_all(self, p: Tensor, alphas: Tensor) -> Tensor:
        """Predictions ``[A, m, N]`` from projections ``p [m, k]`` for every penalty ``alphas [A]``."""
        return torch.einsum("mk,ka,kn->amn", p, 1.0 / (self.lam[:, None] + alphas[None, :]), self.uty)

    def solve(self, alpha: Tensor) -> Tensor:
        """``vecs diag(1 / (λ + α_n)) Uᵀy`` with one penalty per neuron ``alpha [N]`` → ``[n or D, N]``."""
        return self.vecs @ (self.uty / (self.lam[:, None] + alpha[None, :]))


def _gram(x: Tensor, block: int = 512, out: Tensor | None = None) -> Tensor:
    """``x xᵀ`` ``[n, n]`` from the upper block triangle only, mirrored: about 5/8 of a full product's work; added to
    ``out`` when given (to sum it over column blocks of ``x``).

    (BLAS has a symmetric rank-k update for this; torch exposes none.) Rows go in ``block``-row
    blocks, at most 4 per side, so each product stays large. The tiles are computed side by side as
    :class:`~sharedattr.runtime.numerics.Pieces` (each on one thread, each adding to its own part of ``out``), so
    the bits do not depend on the cores.
    """
    n = x.shape[0]
    block = max(block, -(-n // 4))
    if out is None:
        out = torch.zeros(n, n, dtype=x.dtype, device=x.device)

    def add_tile(tile: tuple[int, int]) -> None:  # tiles write disjoint parts of ``out``: side by side is safe
        i, j = tile
        part = x[i : i + block] @ x[j : j + block].T
        out[i : i + block, j : j + block] += part
        if j != i:
            out[j : j + block, i : i + block] += part.T

    Pieces().run(add_tile, [(i, j) for i in range(0, n, block) for j in range(i, n, block)])
    return out


def _centre_gram(g_rows: Tensor, g_train: Tensor) -> Tensor:
    """Centre Gram blocks ``x_a x_bᵀ`` with the mean of the training rows ``b``: ``(x_a − m)(x_b − m)ᵀ``.

    ``g_rows`` is ``x_a x_bᵀ`` ``[m, n]``; ``g_train`` is ``x_b x_bᵀ`` ``[n, n]``.
    """
    col = g_train.mean(0)  # m·x_b_j  [n]
    return g_rows - g_rows.mean(1, keepdim=True) - col[None, :] + col.mean()


def _loo_sse(
    spectrum: _Spectrum, alphas: Tensor, ones_proj: Tensor | None, primal: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Leave-one-out squared error ``[A, N]`` of every penalty and neuron, from the full-data spectrum.

    The exact efficient form of linear smoothers (as scikit-learn's ``RidgeCV`` computes it):
    the LOO residual of image ``i`` is ``e_i / (1 − h_ii)`` with ``e`` the training residual
    and ``h`` the hat matrix, plus ``1/n`` on the diagonal for the unpenalised intercept.
    Dual form (``primal`` None; ``spectrum`` of the centred Gram ``Q Λ Qᵀ``): residual ``α Q D Qᵀy``
    and ``1 − h_ii = α (Q D Qᵀ)_ii − α (Q D Qᵀ1)_i / n`` with ``D = (Λ + α)⁻¹``, the common
    factor ``α`` cancelled. Primal form (``primal = (P, y)``, ``P = x V`` ``[n, D]`` and ``y``
    ``[n, N]``, both centred): residual ``y − P D Vᵀxᵀy`` and ``h_ii = Σ_k P_ik² D_k``.
    ``ones_proj`` ``[k]`` (with an intercept; None without): ``Qᵀ1`` (dual) or ``Vᵀxᵀ1``
    (primal, ≈ 0 for centred ``x``).
    """
    sse = torch.empty(len(alphas), spectrum.uty.shape[1], dtype=spectrum.uty.dtype)
    basis = spectrum.vecs if primal is None else primal[0]  # [n, k]
    basis_sq = basis.pow(2)
    n = basis.shape[0]
    for i, alpha in enumerate(alphas.tolist()):
        inv = 1.0 / (spectrum.lam + alpha)  # [k]
        smooth = basis @ (inv[:, None] * spectrum.uty)  # [n, N]
        diag = basis_sq @ inv  # [n]
        if primal is None:
            num, den = smooth, diag
            if ones_proj is not None:
                den = den - (basis @ (inv * ones_proj)) / n
        else:
            num, den = primal[1] - smooth, 1.0 - diag
            if ones_proj is not None:
                den = den - (1.0 - basis @ (inv * ones_proj)) / n
        sse[i] = (num / den[:, None]).pow(2).sum(0)
    return sse


BLOCK_BYTES = 32 * 2**20
"""Bytes of one float64 block of the features converted at a time: the fit never holds the features in float64."""


def _blocks(length: int, other: int) -> list[slice]:
    """Slices of ``range(length)`` of about :data:`BLOCK_BYTES` of float64 ``[·, other]`` each.

    They depend on the shape only (never on the thread count), so the sums over blocks are the same everywhere.
    """
    step = max(1, BLOCK_BYTES // (8 * max(other, 1)))
    return [slice(start, min(start + step, length)) for start in range(0, length, step)]


def _float64(x: Tensor, rows: Tensor | None, cols: slice = slice(None)) -> Tensor:
    """``x[rows, cols]`` (all rows when None) in float64, contiguous: a copy, except of a whole float64 ``x``."""
    part = x[:, cols] if rows is None else x[rows, cols]
    return part.to(torch.float64).contiguous()


def _primal_moments(x: Tensor, rows: Tensor, y: Tensor, fit_intercept: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Mean ``xm [D]``, ``xcᵀxc [D, D]`` and ``xcᵀy [D, N]`` of the images ``rows [n]`` of ``x`` (centred by ``xm``
    when ``fit_intercept``; ``y [n, N]`` already centred), summed over float64 row blocks."""
    d = x.shape[1]
    xm = torch.zeros(d, dtype=torch.float64)
    if fit_intercept:
        for at in _blocks(len(rows), d):
            xm += _float64(x, rows[at]).sum(0)
        xm /= len(rows)
    xtx = torch.zeros(d, d, dtype=torch.float64)
    xty = torch.zeros(d, y.shape[1], dtype=torch.float64)
    for at in _blocks(len(rows), d):
        block = _float64(x, rows[at]) - xm
        xtx += block.T @ block
        xty += block.T @ y[at]
        del block  # one block at a time
    return xm, xtx, xty


def _primal_project(x: Tensor, rows: Tensor, xm: Tensor, vecs: Tensor) -> Tensor:
    """``(x[rows] − xm) V`` ``[n, k]`` over float64 row blocks."""
    return torch.cat([(_float64(x, rows[at]) - xm) @ vecs for at in _blocks(len(rows), x.shape[1])])


@dataclass(frozen=True)
class RidgeSearch:
    """How :func:`ridge_cv` chooses each neuron's penalty, and what it fits.

    ``alphas`` ``[A]``: the penalty grid (float64, ascending: ties go to the smallest); ``cv``: ``"kfold"`` (``folds``
    folds, assigned by a generator seeded with ``seed``) or ``"loo"`` (exact leave-one-out, no ``pca``);
    ``fit_intercept``: fit a bias per neuron (centre features and targets); ``pca``: keep only the top-k principal
    components of the features (fitted within each fold), None for all.
    """

    alphas: Tensor
    folds: int
    fit_intercept: bool
    seed: int
    pca: int | None
    cv: Literal["kfold", "loo"]


def ridge_cv(x: Tensor, y: Tensor, search: RidgeSearch, rows: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Fit ridge for all neurons at once. ``x [S, D]``, ``y [n, N]`` (no NaN) → ``W [N, D]``, ``b [N]``, ``α [N]``.

    ``rows [n]`` picks the images of ``x`` to fit on (all ``S = n`` when None), without copying them. The
    penalty of each neuron minimises its cross-validated squared error over ``search.alphas``: k-fold
    (``cv = "kfold"``) or exact leave-one-out (``cv = "loo"``, from the eigendecomposition of the final fit, as
    scikit-learn's ``RidgeCV(alphas, alpha_per_target=True)``; no ``pca``). Everything is computed in float64, but
    ``x`` (float32 or float64, possibly memory-mapped) is only ever read in float64 blocks of :data:`BLOCK_BYTES`:
    in the dual form (``n < D``) one Gram matrix ``x xᵀ`` ``[n, n]``, built over column blocks, serves every fold
    and the final fit (centring is applied to its blocks), and a second pass over the column blocks maps the dual
    coefficients to weights; in the primal form the row blocks are centred as they are read. ``W`` has ``x``'s
    dtype (at least float32); ``b`` and ``α`` are float64.
    """
    n, d = (x.shape[0] if rows is None else len(rows)), x.shape[1]
    cv, folds, fit_intercept = search.cv, search.folds, search.fit_intercept
    if y.shape[0] != n:
        raise ValueError(f"ridge_cv: {n} images of x but {y.shape[0]} rows of y")
    if cv not in ("kfold", "loo"):
        raise ValueError(f"unknown cv {cv!r}; use kfold or loo")
    if cv == "loo" and search.pca is not None:
        raise UserError("ridge readout: cv = 'loo' cannot be combined with pca; use cv = 'kfold'")
    if cv == "kfold" and n < folds:
        raise UserError(f"ridge readout: {n} training images cannot be split into {folds} folds; lower 'folds'")
    if cv == "loo" and n < 2 + fit_intercept:
        raise UserError(f"ridge readout: leave-one-out needs at least {2 + fit_intercept} training images; got {n}")
    y = y.to(torch.float64)
    out_dtype = torch.promote_types(x.dtype, torch.float32)
    ym = y.mean(0) if fit_intercept else torch.zeros(y.shape[1], dtype=torch.float64)
    fit = _primal_fit if n >= d else _dual_fit  # from xᵀx [D, D], or from x xᵀ [n, n] when n < D
    return fit(x, y, ym, search, rows, out_dtype)


def _dual_fit(
    x: Tensor, y: Tensor, ym: Tensor, search: RidgeSearch, rows: Tensor | None, out_dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`ridge_cv` in the dual form (``n < D``), from the Gram matrix ``x xᵀ`` ``[n, n]`` built over column
    blocks; ``y [n, N]`` in float64 and its mean ``ym [N]`` (zeros without an intercept)."""
    n, d = y.shape[0], x.shape[1]
    cv, fit_intercept = search.cv, search.fit_intercept
    gram = torch.zeros(n, n, dtype=torch.float64)  # uncentred x xᵀ
    xm = torch.zeros(d, dtype=torch.float64)
    for cols in _blocks(d, n):
        block = _float64(x, rows, cols)  # [n, c]
        _gram(block, out=gram)
        if fit_intercept:
            xm[cols] = block.mean(0)
        del block  # one block at a time
    if cv == "kfold":
        alpha = search.alphas[_kfold_sse(y, search, _dual_fold(gram, y, search)).argmin(0)]
    spectrum = _Spectrum(_centre_gram(gram, gram) if fit_intercept else gram, y - ym, search.pca)
    if cv == "loo":
        ones_proj = spectrum.vecs.sum(0) if fit_intercept else None  # Qᵀ1
        alpha = search.alphas[_loo_sse(spectrum, search.alphas, ones_proj).argmin(0)]
    dual_coef = spectrum.solve(alpha)  # [n, N]
    dual_sum = dual_coef.sum(0)
    weight = torch.empty(y.shape[1], d, dtype=out_dtype)
    bias = ym.clone()
    for cols in _blocks(d, n):
        block = _float64(x, rows, cols)
        coef = block.T @ dual_coef - xm[cols, None] * dual_sum[None, :]  # (x − 1mᵀ)ᵀ A  [c, N]
        del block
        weight[:, cols] = coef.T
        bias -= xm[cols] @ coef
    return weight, bias, alpha  # ties: the smallest penalty wins, since alphas are sorted


def _primal_fit(
    x: Tensor, y: Tensor, ym: Tensor, search: RidgeSearch, rows: Tensor | None, out_dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`ridge_cv` in the primal form (``n ≥ D``), from ``xᵀx`` ``[D, D]`` built over row blocks; ``y [n, N]``
    in float64 and its mean ``ym [N]`` (zeros without an intercept)."""
    rows = torch.arange(x.shape[0]) if rows is None else rows
    if search.cv == "kfold":
        alpha = search.alphas[_kfold_sse(y, search, _primal_fold(x, rows, y, search)).argmin(0)]
    yc = y - ym
    xm, xtx, xty = _primal_moments(x, rows, yc, search.fit_intercept)
    spectrum = _Spectrum(xtx, xty, search.pca)
    if search.cv == "loo":
        basis = _primal_project(x, rows, xm, spectrum.vecs)  # [n, k]
        ones_proj = basis.sum(0) if search.fit_intercept else None  # Vᵀxcᵀ1 (≈ 0 for centred x)
        alpha = search.alphas[_loo_sse(spectrum, search.alphas, ones_proj, (basis, yc)).argmin(0)]
    coef = spectrum.solve(alpha)  # [D, N]
    return coef.T.to(out_dtype), ym - xm @ coef, alpha


FoldPrediction = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``predict(train, held_out, ym)``: one fold's predictions ``[A, m, N]`` of the centred targets of its ``m``
held-out images, for every penalty, from a fit on its training images (``train`` and ``held_out`` ``[n]`` bool;
``ym [N]`` the training targets' mean, zeros without an intercept)."""


def _kfold_sse(y: Tensor, search: RidgeSearch, predict: FoldPrediction) -> Tensor:
    """k-fold cross-validated squared error ``[A, N]`` per penalty and neuron of targets ``y [n, N]`` (float64):
    ``search.folds`` folds drawn from a generator seeded with ``search.seed``, each fold's predictions by
    ``predict`` (:func:`_dual_fold` or :func:`_primal_fold`)."""
    generator = torch.Generator().manual_seed(search.seed)
    fold_of = torch.randperm(y.shape[0], generator=generator) % search.folds
    sse = torch.zeros(len(search.alphas), y.shape[1], dtype=torch.float64)
    for k in range(search.folds):
        tr, va = fold_of != k, fold_of == k
        ym = y[tr].mean(0) if search.fit_intercept else torch.zeros(y.shape[1], dtype=torch.float64)
        sse += (predict(tr, va, ym) + ym - y[va]).pow(2).sum(1)
    return sse


def _dual_fold(gram: Tensor, y: Tensor, search: RidgeSearch) -> FoldPrediction:
    """A fold's predictions in the dual form, from the uncentred ``x xᵀ`` ``[n, n]`` and targets ``y [n, N]``."""

    def predict(tr: Tensor, va: Tensor, ym: Tensor) -> Tensor:
        g_tt, g_vt = gram[tr][:, tr], gram[va][:, tr]
        if search.fit_intercept:
            g_tt, g_vt = _centre_gram(g_tt, g_tt), _centre_gram(g_vt, g_tt)
        spectrum = _Spectrum(g_tt, y[tr] - ym, search.pca)
        return spectrum.predict_all(g_vt @ spectrum.vecs, search.alphas)

    return predict


def _primal_fold(x: Tensor, rows: Tensor, y: Tensor, search: RidgeSearch) -> FoldPrediction:
    """A fold's predictions in the primal form: ``x`` read by float64 row blocks of the images ``rows [n]``, targets
    ``y [n, N]`` aligned with them."""

    def predict(tr: Tensor, va: Tensor, ym: Tensor) -> Tensor:
        xm, xtx, xty = _primal_moments(x, rows[tr], y[tr] - ym, search.fit_intercept)
        spectrum = _Spectrum(xtx, xty, search.pca)
        return spectrum.predict_all(_primal_project(x, rows[va], xm, spectrum.vecs), search.alphas)

    return predict


class RidgeReadout(Configurable, ReadoutModule):
    """Linear readout ``r_n = ⟨w_n, z(x)⟩ + b_n`` with ``z`` the (pooled,) flattened latents, shared by all neurons.

    Built from its validated :class:`RidgeParams` (``RidgeReadout(params)``), or from their fields as keywords
    (``RidgeReadout(folds=3)``, validated there); ``params`` keeps them.
    """

    name = "ridge"
    params_model = RidgeParams
    description = (
        "Closed-form ridge on flattened or pooled latents; per-neuron penalty by k-fold or "
        "leave-one-out CV, one eigendecomposition shared."
    )

    def __init__(self, params: RidgeParams | None = None, **overrides: Any) -> None:
        super().__init__()
        self.params = self.resolve_params(params, overrides)
        self.register_buffer("_weight", torch.empty(0, 0))
        self.register_buffer("_bias", torch.empty(0))
        self.register_buffer("alpha", torch.empty(0))
        self.latent_shape: tuple[int, ...] = ()

    def feature_dim(self, latent_shape: tuple[int, ...]) -> int:
        """``D`` for latents of ``latent_shape`` (``[C, H, W]`` or ``[D]``)."""
        if len(latent_shape) == 3 and self.params.pooling in ("avg", "max"):
            return int(latent_shape[0])
        return int(torch.Size(latent_shape).numel())

    def initialize(self, latent_shape: tuple[int, ...], n_neurons: int) -> None:
        """Zero ``w [N, D]``, ``b [N]`` and ``alpha [N]`` for latents of ``latent_shape``."""
        self.latent_shape = tuple(int(s) for s in latent_shape)
        d = self.feature_dim(tuple(latent_shape))
        self._weight = torch.zeros(n_neurons, d)
        self._bias = torch.zeros(n_neurons)
        self.alpha = torch.zeros(n_neurons, dtype=torch.float64)

    def features(self, latents: Tensor) -> Tensor:
        """Latents ``[B, C, H, W]`` or ``[B, D]`` → shared feature vector ``[B, D]``."""
        if latents.dim() == 4 and self.params.pooling == "avg":
            latents = latents.mean(dim=(2, 3))
        elif latents.dim() == 4 and self.params.pooling == "max":
            latents = latents.amax(dim=(2, 3))
        return latents.flatten(1)

    def fit(self, latents: Tensor, responses: Tensor) -> RidgeReadout:
        """Fit all neurons to latents ``[n, ...]`` and responses ``[n, N]``. NaN responses are left out per neuron
        (neurons sharing a NaN pattern share one fit)."""
        return self.fit_rows(latents, responses, None)

    @on_one_thread
    def fit_rows(self, latents: Tensor, responses: Tensor, rows: Tensor | None) -> RidgeReadout:
        """:meth:`fit` on the images ``rows [n]`` of latents ``[S, ...]`` and responses ``[S, N]`` (all when None),
        without copying them: the same fit as ``fit(latents[rows], responses[rows])``.

        Optional in the readout contract (:class:`~sharedattr.plugins.contracts.ReadoutModule`, whose default fits
        on a copy of the training rows): :func:`~sharedattr.encoding.fit.fit_readout` calls it. Besides ``latents``
        (on the CPU, pooling "none"),
        the fit holds :func:`ridge_cv`'s float64 blocks, ``[n, n]`` matrices and the ``[N, D]`` float32 weights
        (docs/scaling.md).
        """
        x = self.features(latents.detach()).cpu()
        if x.shape[0] != responses.shape[0]:
            raise ValueError(f"latents have {x.shape[0]} images but responses {responses.shape[0]}")
        y = responses.detach().to(torch.float64).cpu()
        rows = torch.arange(x.shape[0]) if rows is None else torch.as_tensor(rows).reshape(-1).cpu()
        if rows.dtype == torch.bool:
            rows = rows.nonzero().squeeze(1)
        y = y[rows]
        require_measured_neurons(y, "ridge readout")
        n_neurons = y.shape[1]
        self.initialize(tuple(latents.shape[1:]), n_neurons)
        valid = ~torch.isnan(y)
        patterns, group = torch.unique(valid.T, dim=0, return_inverse=True)
        weight = torch.zeros(n_neurons, x.shape[1]) if len(patterns) > 1 else None
        bias = torch.zeros(n_neurons, dtype=torch.float64)
        alpha = torch.zeros(n_neurons, dtype=torch.float64)
        p = self.params
        search = RidgeSearch(torch.tensor(p.alphas, dtype=torch.float64), p.folds, p.fit_intercept, p.seed, p.pca, p.cv)
        for g, pattern in enumerate(patterns):
            cols = (group == g).nonzero().squeeze(1)
            w, b, a = ridge_cv(x, y[pattern][:, cols], search, rows[pattern])
            if weight is None:  # one pattern: every neuron, in order
                weight = w.to(torch.float32)
            else:
                weight[cols] = w.to(torch.float32)
            bias[cols], alpha[cols] = b, a
        self._weight = weight
        self._bias = bias.to(torch.float32)
        self.alpha = alpha
        return self

    @property
    def weight(self) -> Tensor:
        """``w`` ``[N, D]``."""
        if self._weight.numel() == 0:
            raise RuntimeError("the ridge readout is not fitted yet; call fit(latents, responses)")
        return self._weight

    @property
    def bias(self) -> Tensor:
        """``b`` ``[N]``."""
        return self._bias

    def nonlinearity(self, x: Tensor) -> Tensor:
        return x

    def dimension_channels(self) -> Tensor:
        """The latent channel of each of the ``D`` dimensions ``[D]``: ``d // (H·W)`` for flattened ``[C, H, W]``
        latents (``pooling = "none"``), else each dimension is its own channel.

        Optional in the readout contract (:class:`~sharedattr.plugins.contracts.ReadoutModule`): position-tolerant
        sharing (``parallel_backprop`` with ``sharing = "channel"``, channel matching) pools each neuron's
        contributions over the dimensions of one channel.
        """
        d = self.weight.shape[1]
        shape = self.latent_shape
        per_channel = d // shape[0] if len(shape) == 3 and self.params.pooling == "none" else 1
        return torch.arange(d, device=self.weight.device) // per_channel

    def pooled(self, latents: Tensor) -> Tensor:
        """``z`` ``[B, N, D]``: the same feature vector for every neuron (an expanded view of :meth:`shared_pooled`)."""
        z = self.shared_pooled(latents)
        return z[:, None, :].expand(-1, self.weight.shape[0], -1)

    def shared_pooled(self, latents: Tensor) -> Tensor:
        """``z`` ``[B, D]``, the vector every neuron shares: ``pooled(latents)[:, n]`` for any ``n``.

        Optional in the readout contract (:class:`~sharedattr.plugins.contracts.ReadoutModule`): attribution and
        matching use it instead of indexing ``pooled``, whose gradient would fill a ``[B, N, D]`` tensor.
        """
        return self.features(latents)

    def forward(self, latents: Tensor) -> Tensor:
        return self.features(latents) @ self.weight.T + self._bias


@hookimpl
def register_readouts(register):
    register_components(register, (RidgeReadout,))
