"""Built-in readout: ridge regression with a per-neuron penalty chosen by k-fold CV.

One SVD per fold is shared by all neurons and all penalties (the closed form
``W = V diag(s / (s² + α_n)) Uᵀ y_n``), so the cost barely grows with the number of
neurons or the size of the penalty grid.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from ..components import require_measured_neurons
from ..errors import UserError
from ..hookspecs import hookimpl
from ..params import Params

DEFAULT_ALPHAS = tuple(10.0**k for k in range(-2, 9))


class RidgeParams(Params):
    """Params of the ``ridge`` readout."""

    alphas: tuple[float, ...] = Field(DEFAULT_ALPHAS, min_length=1, description="Penalty grid searched per neuron.")
    folds: int = Field(5, ge=2, description="Cross-validation folds for the penalty choice.")
    pooling: Literal["none", "avg", "max"] = Field(
        "none", description="Spatial pooling of [C, H, W] latents before the linear map: none (flatten), avg or max."
    )
    fit_intercept: bool = Field(True, description="Fit a bias per neuron.")
    pca: int | None = Field(
        None, ge=1, description="Keep only the top-k principal components of the features (fitted within each fold)."
    )
    seed: int = Field(0, description="Seed of the fold assignment.")

    @field_validator("alphas")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(a <= 0 for a in value):
            raise ValueError("every penalty must be > 0")
        return tuple(sorted(value))


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
        self.lam, self.vecs = _top(*torch.linalg.eigh(square), pca)
        self.uty = self.vecs.T @ rhs  # [k, N]

    def predict_all(self, p: Tensor, alphas: Tensor) -> Tensor:
        """Predictions ``[A, m, N]`` from projections ``p [m, k]`` for every penalty ``alphas [A]``."""
        return torch.einsum("mk,ka,kn->amn", p, 1.0 / (self.lam[:, None] + alphas[None, :]), self.uty)

    def solve(self, alpha: Tensor) -> Tensor:
        """``vecs diag(1 / (λ + α_n)) Uᵀy`` with one penalty per neuron ``alpha [N]`` → ``[n or D, N]``."""
        return self.vecs @ (self.uty / (self.lam[:, None] + alpha[None, :]))


def _centre_gram(g_rows: Tensor, g_train: Tensor) -> Tensor:
    """Centre Gram blocks ``x_a x_bᵀ`` with the mean of the training rows ``b``: ``(x_a − m)(x_b − m)ᵀ``.

    ``g_rows`` is ``x_a x_bᵀ`` ``[m, n]``; ``g_train`` is ``x_b x_bᵀ`` ``[n, n]``.
    """
    col = g_train.mean(0)  # m·x_b_j  [n]
    return g_rows - g_rows.mean(1, keepdim=True) - col[None, :] + col.mean()


def ridge_cv(
    x: Tensor, y: Tensor, alphas: Tensor, folds: int, fit_intercept: bool, generator: torch.Generator,
    pca: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fit ridge for all neurons at once. ``x [n, D]``, ``y [n, N]`` (no NaN) → ``W [N, D]``, ``b [N]``, ``α [N]``.

    The penalty of each neuron minimises its k-fold cross-validated squared error over
    ``alphas``. In the dual form (``n < D``) one Gram matrix ``x xᵀ`` serves every fold
    and the final fit: centring is applied to its blocks, and ``x`` is touched only to
    form it and to map the final dual coefficients back to weights.
    """
    n, d = x.shape
    if n < folds:
        raise UserError(f"ridge readout: {n} training images cannot be split into {folds} folds; lower 'folds'")
    dual = n < d
    gram = x @ x.T if dual else None  # [n, n], uncentred
    fold_of = torch.randperm(n, generator=generator) % folds
    sse = torch.zeros(len(alphas), y.shape[1], dtype=x.dtype)
    for k in range(folds):
        tr, va = fold_of != k, fold_of == k
        ym = y[tr].mean(0) if fit_intercept else torch.zeros(y.shape[1], dtype=x.dtype)
        if dual:
            g_tt, g_vt = gram[tr][:, tr], gram[va][:, tr]
            if fit_intercept:
                g_tt, g_vt = _centre_gram(g_tt, g_tt), _centre_gram(g_vt, g_tt)
            spectrum = _Spectrum(g_tt, y[tr] - ym, pca)
            p = g_vt @ spectrum.vecs
        else:
            xm = x[tr].mean(0) if fit_intercept else torch.zeros(d, dtype=x.dtype)
            xc = x[tr] - xm
            spectrum = _Spectrum(xc.T @ xc, xc.T @ (y[tr] - ym), pca)
            p = (x[va] - xm) @ spectrum.vecs
        sse += (spectrum.predict_all(p, alphas) + ym - y[va]).pow(2).sum(1)
    alpha = alphas[sse.argmin(0)]  # [N]; the smallest penalty wins ties, since alphas are sorted
    xm = x.mean(0) if fit_intercept else torch.zeros(d, dtype=x.dtype)
    ym = y.mean(0) if fit_intercept else torch.zeros(y.shape[1], dtype=x.dtype)
    if dual:
        spectrum = _Spectrum(_centre_gram(gram, gram) if fit_intercept else gram, y - ym, pca)
        dual_coef = spectrum.solve(alpha)  # [n, N]
        coef = x.T @ dual_coef - xm[:, None] * dual_coef.sum(0)[None, :]  # (x − 1mᵀ)ᵀ A, without copying x
    else:
        xc = x - xm
        coef = _Spectrum(xc.T @ xc, xc.T @ (y - ym), pca).solve(alpha)  # [D, N]
    return coef.T.contiguous(), ym - xm @ coef, alpha


class RidgeReadout(nn.Module):
    """Linear readout ``r_n = ⟨w_n, z(x)⟩ + b_n`` with ``z`` the (pooled,) flattened latents, shared by all neurons."""

    def __init__(
        self,
        alphas: tuple[float, ...] = DEFAULT_ALPHAS,
        folds: int = 5,
        pooling: str = "none",
        fit_intercept: bool = True,
        pca: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.alphas, self.folds, self.pooling = tuple(alphas), folds, pooling
        self.fit_intercept, self.pca, self.seed = fit_intercept, pca, seed
        self.register_buffer("_weight", torch.empty(0, 0))
        self.register_buffer("_bias", torch.empty(0))
        self.register_buffer("alpha", torch.empty(0))

    def feature_dim(self, latent_shape: tuple[int, ...]) -> int:
        """``D`` for latents of ``latent_shape`` (``[C, H, W]`` or ``[D]``)."""
        if len(latent_shape) == 3 and self.pooling in ("avg", "max"):
            return int(latent_shape[0])
        return int(torch.Size(latent_shape).numel())

    def initialize(self, latent_shape: tuple[int, ...], n_neurons: int) -> None:
        """Zero ``w [N, D]``, ``b [N]`` and ``alpha [N]`` for latents of ``latent_shape``."""
        d = self.feature_dim(tuple(latent_shape))
        self._weight = torch.zeros(n_neurons, d)
        self._bias = torch.zeros(n_neurons)
        self.alpha = torch.zeros(n_neurons, dtype=torch.float64)

    def features(self, latents: Tensor) -> Tensor:
        """Latents ``[B, C, H, W]`` or ``[B, D]`` → shared feature vector ``[B, D]``."""
        if latents.dim() == 4 and self.pooling == "avg":
            latents = latents.mean(dim=(2, 3))
        elif latents.dim() == 4 and self.pooling == "max":
            latents = latents.amax(dim=(2, 3))
        return latents.flatten(1)

    def fit(self, latents: Tensor, responses: Tensor) -> "RidgeReadout":
        """Fit all neurons. NaN responses are left out per neuron (neurons sharing a NaN pattern share one fit)."""
        x = self.features(latents).detach().to(torch.float64).cpu()
        y = responses.detach().to(torch.float64).cpu()
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"latents have {x.shape[0]} images but responses {y.shape[0]}")
        require_measured_neurons(y, "ridge readout")
        n_neurons = y.shape[1]
        self.initialize(tuple(latents.shape[1:]), n_neurons)
        weight = torch.zeros(n_neurons, x.shape[1], dtype=torch.float64)
        bias = torch.zeros(n_neurons, dtype=torch.float64)
        alpha = torch.zeros(n_neurons, dtype=torch.float64)
        valid = ~torch.isnan(y)
        patterns, group = torch.unique(valid.T, dim=0, return_inverse=True)
        for g, pattern in enumerate(patterns):
            cols = (group == g).nonzero().squeeze(1)
            generator = torch.Generator().manual_seed(self.seed)
            w, b, a = ridge_cv(
                x[pattern], y[pattern][:, cols], torch.tensor(self.alphas, dtype=torch.float64),
                self.folds, self.fit_intercept, generator, self.pca,
            )
            weight[cols], bias[cols], alpha[cols] = w, b, a
        self._weight = weight.to(torch.float32)
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

    def pooled(self, latents: Tensor) -> Tensor:
        """``z`` ``[B, N, D]``: the same feature vector for every neuron (an expanded view)."""
        z = self.features(latents)
        return z[:, None, :].expand(-1, self.weight.shape[0], -1)

    def forward(self, latents: Tensor) -> Tensor:
        return self.features(latents) @ self.weight.T + self._bias


@hookimpl
def register_readouts(register):
    register(
        "ridge",
        RidgeReadout,
        params=RidgeParams,
        description="Closed-form ridge on flattened or pooled latents; per-neuron penalty by k-fold CV, one SVD shared.",
    )
