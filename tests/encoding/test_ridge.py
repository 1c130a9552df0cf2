"""Ridge against an independent naive computation (a linear solve per fold and penalty)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sharedattr.encoding.readouts.ridge import RidgeReadout, RidgeSearch, ridge_cv
from sharedattr.encoding.scores import pearson_columns


def search(alphas, folds, fit_intercept=True, seed=0, pca=None, cv="kfold") -> RidgeSearch:
    """A :class:`RidgeSearch` over ``alphas`` (a sequence or a float64 tensor)."""
    return RidgeSearch(torch.as_tensor(alphas, dtype=torch.float64), folds, fit_intercept, seed, pca, cv)


def naive_ridge(x, y, alpha):
    """Centred ridge by a direct solve: ``W [D, N]``, ``b [N]``."""
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    w = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(x.shape[1], dtype=x.dtype), xc.T @ yc)
    return w, ym - xm @ w


def naive_cv_alpha(x, y, alphas, folds, seed):
    """Per-neuron penalty minimising the k-fold squared error, fold by fold, penalty by penalty."""
    fold_of = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed)) % folds
    sse = torch.zeros(len(alphas), y.shape[1], dtype=x.dtype)
    for i, a in enumerate(alphas):
        for k in range(folds):
            tr, va = fold_of != k, fold_of == k
            w, b = naive_ridge(x[tr], y[tr], a)
            sse[i] += (x[va] @ w + b - y[va]).pow(2).sum(0)
    return torch.tensor(alphas, dtype=x.dtype)[sse.argmin(0)]


@pytest.mark.parametrize(("n", "d"), [(60, 200), (200, 30)], ids=["dual n<D", "primal n>D"])
def test_ridge_cv_matches_naive_computation(n, d):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_true = torch.randn(d, 5, generator=g, dtype=torch.float64)
    y = x @ w_true + torch.randn(n, 5, generator=g, dtype=torch.float64) * torch.tensor([0.1, 1, 5, 20, 100.0])
    alphas = [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4]
    w, b, alpha = ridge_cv(x, y, search(alphas, folds=4, seed=7))
    expected_alpha = naive_cv_alpha(x, y, alphas, 4, 7)
    assert torch.equal(alpha, expected_alpha)
    for j in range(5):
        w_ref, b_ref = naive_ridge(x, y[:, j : j + 1], float(alpha[j]))
        torch.testing.assert_close(w[j], w_ref[:, 0], rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(b[j], b_ref[0], rtol=1e-7, atol=1e-9)


def test_pca_ridge_uses_only_the_top_components():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 40, generator=g, dtype=torch.float64) * torch.linspace(5, 0.1, 40, dtype=torch.float64)
    y = torch.randn(80, 3, generator=g, dtype=torch.float64)
    w, _, _ = ridge_cv(x, y, search([1.0], folds=3, pca=4))
    xc = x - x.mean(0)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    top = vh[:4]  # [4, D]
    torch.testing.assert_close(w @ top.T @ top, w, rtol=1e-8, atol=1e-10)  # weights lie in the top-4 span
    scores = xc @ top.T  # ridge on the 4 PC scores, mapped back
    w_pc, _ = naive_ridge(scores, y, 1.0)
    torch.testing.assert_close(w, (top.T @ w_pc).T, rtol=1e-7, atol=1e-9)


def test_readout_pca_option_fits():
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(90, 4, 5, 5, generator=g)
    y = latents.flatten(1)[:, :3] * 2 + 0.01 * torch.randn(90, 3, generator=g)
    readout = RidgeReadout(folds=3, pca=60).fit(latents, y)
    assert readout.weight.shape == (3, 100)
    r = torch.corrcoef(torch.cat([readout(latents).T, y.T]))[:3, 3:].diagonal()
    assert (r > 0.95).all()


def test_ridge_matches_scikit_learn():
    import sklearn.linear_model as sklearn  # a dev dependency: the reference implementation

    g = torch.Generator().manual_seed(3)
    for n, d in [(50, 300), (300, 20)]:
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = torch.randn(n, 4, generator=g, dtype=torch.float64)
        w, b, _ = ridge_cv(x, y, search([3.0], folds=2))
        reference = sklearn.Ridge(alpha=3.0).fit(x.numpy(), y.numpy())
        torch.testing.assert_close(w, torch.from_numpy(reference.coef_), rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(b, torch.from_numpy(reference.intercept_), rtol=1e-7, atol=1e-9)


# -- cv = "loo": exact efficient leave-one-out, as scikit-learn's RidgeCV ---------------------------
def planted_loo_data(n, d, seed=4):
    """Features with an offset and a decaying spectrum; neurons from almost noiseless to pure noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, d, dtype=torch.float64) + 0.5
    w = torch.randn(d, 6, generator=g, dtype=torch.float64)
    noise = torch.tensor([0.1, 1, 5, 20, 100.0, 1000.0], dtype=torch.float64)
    return x, x @ w + torch.randn(n, 6, generator=g, dtype=torch.float64) * noise


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no intercept"])
@pytest.mark.parametrize(("n", "d"), [(60, 200), (200, 30)], ids=["dual n<D", "primal n>D"])
def test_loo_ridge_equals_scikit_learn_ridgecv(n, d, fit_intercept):
    import sklearn.linear_model as sklearn  # a dev dependency: the reference implementation

    x, y = planted_loo_data(n, d)
    alphas = [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4]
    w, b, alpha = ridge_cv(x, y, search(alphas, folds=5, fit_intercept=fit_intercept, cv="loo"))
    reference = sklearn.RidgeCV(alphas=alphas, alpha_per_target=True, fit_intercept=fit_intercept)
    reference.fit(x.numpy(), y.numpy())
    assert alpha.tolist() == reference.alpha_.tolist()
    assert len(set(alpha.tolist())) > 1  # the planted neurons need different penalties
    torch.testing.assert_close(w, torch.from_numpy(reference.coef_), rtol=1e-7, atol=1e-9)
    intercept = torch.as_tensor(reference.intercept_, dtype=torch.float64).expand(y.shape[1])  # 0.0 without
    torch.testing.assert_close(b, intercept, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(x @ w.T + b, torch.from_numpy(reference.predict(x.numpy())), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize(("n", "d"), [(40, 90), (90, 12)], ids=["dual n<D", "primal n>D"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no intercept"])
def test_loo_errors_equal_refitting_without_each_image(n, d, fit_intercept):
    """The efficient LOO errors against n explicit refits, one per left-out image (independent of sklearn)."""
    from sharedattr.encoding.readouts.ridge import _loo_sse, _Spectrum

    x, y = planted_loo_data(n, d, seed=5)
    alphas = torch.tensor([0.1, 3.0, 100.0], dtype=torch.float64)
    expected = torch.zeros(3, y.shape[1], dtype=torch.float64)
    for i in range(n):
        keep = torch.arange(n) != i
        for a, alpha in enumerate(alphas.tolist()):
            xt, yt = x[keep], y[keep]
            xm = xt.mean(0) if fit_intercept else torch.zeros(d, dtype=x.dtype)
            ym = yt.mean(0) if fit_intercept else torch.zeros(y.shape[1], dtype=x.dtype)
            xc = xt - xm
            w = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(d, dtype=x.dtype), xc.T @ (yt - ym))
            expected[a] += ((x[i] - xm) @ w + ym - y[i]) ** 2
    xm = x.mean(0) if fit_intercept else torch.zeros(d, dtype=x.dtype)
    ym = y.mean(0) if fit_intercept else torch.zeros(y.shape[1], dtype=x.dtype)
    xc, yc = x - xm, y - ym
    if n < d:
        spectrum = _Spectrum(xc @ xc.T, yc, None)
        sse = _loo_sse(spectrum, alphas, spectrum.vecs.sum(0) if fit_intercept else None)
    else:
        spectrum = _Spectrum(xc.T @ xc, xc.T @ yc, None)
        ones = spectrum.vecs.T @ xc.sum(0) if fit_intercept else None
        sse = _loo_sse(spectrum, alphas, ones, (xc @ spectrum.vecs, yc))
    torch.testing.assert_close(sse, expected, rtol=1e-6, atol=1e-8)


def test_loo_is_an_option_of_the_readout_and_kfold_stays_the_default(registry):
    from sharedattr.runtime.errors import SpecError

    g = torch.Generator().manual_seed(6)
    latents = torch.randn(50, 4, 3, 3, generator=g)
    y = latents.flatten(1)[:, :2] + 0.1 * torch.randn(50, 2, generator=g)
    default = registry.build("readout", "ridge")
    assert default.params.cv == "kfold"
    loo = registry.build("readout", "ridge", cv="loo").fit(latents, y)
    x = latents.flatten(1).double()
    w, b, alpha = ridge_cv(x, y.double(), search(loo.params.alphas, folds=5, cv="loo"))
    assert torch.equal(loo.alpha, alpha)
    torch.testing.assert_close(loo.weight, w.float())
    with pytest.raises((SpecError, ValueError), match="pca"):
        registry.build("readout", "ridge", cv="loo", pca=3)


# -- ridge -----------------------------------------------------------------------------
def planted(n=300, d=40, neurons=6, noise=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(neurons, d, generator=g)
    y = x @ w.T + 0.5
    if noise is not None:
        y = y + torch.randn(n, neurons, generator=g) * torch.tensor(noise)
    return x, w, y


def test_ridge_recovers_planted_weights():
    x, w, y = planted()
    readout = RidgeReadout(alphas=(1e-3, 1e-1, 10.0), folds=4).fit(x[:200], y[:200])
    r = pearson_columns(readout(x[200:]), y[200:])
    assert (r > 0.99).all()
    torch.testing.assert_close(readout.weight, w, atol=2e-2, rtol=0)
    torch.testing.assert_close(readout.bias, torch.full((6,), 0.5), atol=2e-2, rtol=0)


def test_ridge_picks_larger_penalty_for_noisier_neurons():
    x, _, y = planted(n=120, d=60, neurons=4, noise=[0.01, 1.0, 10.0, 100.0])
    readout = RidgeReadout(alphas=tuple(10.0**k for k in range(-3, 6)), folds=5).fit(x, y)
    alpha = readout.alpha.tolist()
    assert alpha == sorted(alpha) and alpha[-1] > alpha[0]


def test_ridge_leaves_out_nan_per_neuron():
    x, _, y = planted(n=200)
    y_nan = y.clone()
    y_nan[:50, 0] = math.nan
    full = RidgeReadout(alphas=(1e-3,), folds=3).fit(x[50:], y[50:])
    masked = RidgeReadout(alphas=(1e-3,), folds=3).fit(x, y_nan)
    torch.testing.assert_close(masked.weight[0], full.weight[0], atol=1e-4, rtol=1e-4)
    assert torch.isfinite(masked.weight).all()


def test_ridge_meets_the_linear_contract():
    latents = torch.randn(50, 4, 3, 3)
    y = torch.randn(50, 5)
    for pooling in ("none", "avg", "max"):
        readout = RidgeReadout(pooling=pooling, folds=3).fit(latents, y)
        z = readout.pooled(latents)  # [B, N, D]
        contract = readout.nonlinearity((z * readout.weight).sum(-1) + readout.bias)
        torch.testing.assert_close(readout(latents), contract)


def test_the_ridge_fit_does_not_depend_on_the_thread_count():
    """LAPACK's eigh differs in the last bits between thread counts; on a 2-million-weight fit that flipped a few
    float32 weights, so a torchrun rank (one thread) and a single process fitted different models."""
    torch.manual_seed(0)
    x = torch.randn(200, 5000)
    y = x[:, :20] @ torch.randn(20, 400) + torch.randn(200, 400)
    threads = torch.get_num_threads()
    weights = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            weights.append(RidgeReadout(folds=3).fit(x[:, :, None, None], y).state_dict()["_weight"])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(weights[0], weights[1])


def test_the_gram_tiles_side_by_side_give_the_bits_of_one_worker(monkeypatch):
    """The Gram matrix's tiles run as pieces on the process's workers (each on one thread): 1, 2 or 3 workers fit
    the same weights to the bit (the tiles' sums happen in one order)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 6000, generator=g)  # dual form, 4 × 4 tiles of 75 rows
    y = x[:, :10] @ torch.randn(10, 30, generator=g) + torch.randn(300, 30, generator=g)
    fits = []
    for workers in ("1", "2", "3"):
        monkeypatch.setenv("SHAREDATTR_WORKERS", workers)
        fits.append(RidgeReadout(folds=3).fit(x[:, :, None, None], y).state_dict())
    for other in fits[1:]:
        assert all(torch.equal(fits[0][k], other[k]) for k in fits[0])


@pytest.mark.parametrize("cv", ["kfold", "loo"])
@pytest.mark.parametrize(("n", "d"), [(40, 300), (300, 24)], ids=["dual n<D", "primal n>D"])
def test_the_fit_in_small_blocks_equals_the_fit_in_one_block(n, d, cv, monkeypatch):
    """The features are read in float64 blocks of ``BLOCK_BYTES`` (never all in float64): many blocks give the
    fit of one block, up to float rounding, also on a subset of the rows of a float32 matrix."""
    from sharedattr.encoding.readouts import ridge

    g = torch.Generator().manual_seed(8)
    x = torch.randn(n + 10, d, generator=g) + 0.3
    y = x[:, :5].double() @ torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = y + torch.randn(n + 10, 3, generator=g, dtype=torch.float64)
    rows = torch.randperm(n + 10, generator=g)[:n].sort().values
    alphas = torch.tensor([0.1, 10.0, 1000.0], dtype=torch.float64)

    def fit() -> tuple[torch.Tensor, ...]:
        return ridge_cv(x, y[rows], search(alphas, folds=3, seed=1, cv=cv), rows)

    one = fit()
    reference = ridge_cv(x[rows].double(), y[rows], search(alphas, folds=3, seed=1, cv=cv))
    monkeypatch.setattr(ridge, "BLOCK_BYTES", 8 * 7 * min(n, d))  # 7 columns (dual) or rows (primal) a block
    blocked = fit()
    assert one[0].dtype == torch.float32 and reference[0].dtype == torch.float64
    for a, b, c in zip(one, blocked, reference):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a.double(), c, rtol=1e-6, atol=1e-7)
    assert torch.equal(one[2], blocked[2])


def test_fit_rows_is_the_fit_on_a_copy_of_the_rows():
    g = torch.Generator().manual_seed(9)
    latents = torch.randn(90, 4, 5, 5, generator=g)  # D = 100 (dual on 60 rows) or 4 with pooling (primal)
    y = latents.flatten(1)[:, :3] + 0.3 * torch.randn(90, 3, generator=g)
    y[:7, 1] = math.nan  # a second NaN pattern
    rows = torch.randperm(90, generator=g)[:60]
    for pooling, cv in [("none", "kfold"), ("none", "loo"), ("avg", "kfold"), ("avg", "loo")]:
        a = RidgeReadout(folds=3, pooling=pooling, cv=cv).fit_rows(latents, y, rows).state_dict()
        b = RidgeReadout(folds=3, pooling=pooling, cv=cv).fit(latents[rows], y[rows]).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), (pooling, cv)


def test_keywords_are_validated_by_the_params_model_that_holds_every_default():
    from pydantic import ValidationError

    from sharedattr.encoding.readouts.ridge import RidgeParams

    assert RidgeReadout().params == RidgeParams()
    readout = RidgeReadout(folds=3, alphas=(10.0, 0.1))
    assert readout.params.folds == 3 and readout.params.alphas == (0.1, 10.0)  # sorted by the model
    assert RidgeReadout(RidgeParams(pooling="avg"), folds=4).params == RidgeParams(pooling="avg", folds=4)
    with pytest.raises(ValidationError, match="folds"):
        RidgeReadout(folds=1)
    with pytest.raises(ValidationError, match="pca"):
        RidgeReadout(cv="loo", pca=3)


def test_a_readout_without_the_optional_members_gets_their_defaults():
    """A plugin's readout that does not subclass ReadoutModule: fit_readout fits it on a copy of the training rows
    (the default fit_rows), and each of its dimensions is its own channel (the default dimension_channels)."""
    from torch import nn

    from sharedattr.encoding.channels import dimension_channels
    from sharedattr.encoding.fit import FitSettings, fit_readout

    class Plain(nn.Module):  # the readout contract only, through a ridge inside
        def __init__(self):
            super().__init__()
            self.inner, self.fitted_on = RidgeReadout(folds=3), None

        def initialize(self, latent_shape, n_neurons):
            self.inner.initialize(latent_shape, n_neurons)

        def fit(self, latents, responses):
            self.fitted_on = latents.shape[0]
            self.inner.fit(latents, responses)
            return self

        def forward(self, latents):
            return self.inner(latents)

        def pooled(self, latents):
            return self.inner.pooled(latents)

        weight = property(lambda self: self.inner.weight)
        bias = property(lambda self: self.inner.bias)

        def nonlinearity(self, x):
            return x

    g = torch.Generator().manual_seed(10)
    latents = torch.randn(40, 2, 3, 3, generator=g)
    responses = latents.flatten(1)[:, :2] + 0.1 * torch.randn(40, 2, generator=g)
    backbone = nn.Identity()
    settings = FitSettings(test_fraction=0.25, split_seed=1)
    plain = fit_readout(Plain(), backbone, latents, responses, ["a", "b"], settings)
    ridge = fit_readout(RidgeReadout(folds=3), backbone, latents, responses, ["a", "b"], settings)
    assert plain.model.readout.fitted_on == len(plain.train) == 30
    assert torch.equal(plain.predicted, ridge.predicted) and torch.equal(plain.test_r, ridge.test_r)
    assert torch.equal(dimension_channels(plain.model.readout, 18), torch.arange(18))
    assert torch.equal(dimension_channels(ridge.model.readout, 18), torch.arange(18) // 9)  # [C, H, W] flattened


def test_the_conformance_check_catches_a_shared_vector_that_is_not_pooled():
    from sharedattr.encoding.readouts.ridge import RidgeParams
    from sharedattr.plugins.loading import load_registry
    from sharedattr.testing import check_component

    class Plugin:
        from sharedattr import hookimpl

        @hookimpl
        def register_readouts(self, register):
            class Shifted(RidgeReadout):  # a subclass that changed pooled, and forgot shared_pooled
                def pooled(self, latents):
                    return super().pooled(latents) + 1.0

                def forward(self, latents):
                    return (self.pooled(latents) * self.weight).sum(-1) + self.bias

            register("shifted", Shifted, params=RidgeParams)

    registry = load_registry(extra_plugins=[("p", Plugin())])
    check_component("readout", "ridge", {"folds": 3}, registry=registry)
    with pytest.raises(AssertionError, match="shared_pooled"):
        check_component("readout", "shifted", {"folds": 3}, registry=registry)


MEMORY_PROBE = """
import json, sys
import numpy as np, torch
from torch import nn
from sharedattr.encoding.fit import FitSettings, fit_readout
from sharedattr.encoding.readouts.ridge import RidgeReadout

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
path, n = sys.argv[1], int(sys.argv[2])
latents = torch.from_numpy(np.load(path, mmap_mode="c"))  # as the feature cache opens it
responses = torch.from_numpy(np.load(path + ".y.npy"))
backbone = nn.Identity()
backbone.input_size, backbone.in_channels = (8, 8), 3
# Warm up on a tiny problem through the same code: the first BLAS/LAPACK calls fault in code pages of the libraries
# (tens of MB of resident memory that are no copy of anything), so the peak below counts the fit's data only.
small = torch.rand(60, 4, 8, 8)
fit_readout(RidgeReadout(folds=3), backbone, small, small.flatten(1)[:, :3] @ torch.rand(3, 2), ["a", "b"],
            FitSettings(test_fraction=0.2, split_seed=0))
open("/proc/self/clear_refs", "w").write("5")
start = status("VmRSS")
fit = fit_readout(RidgeReadout(folds=3), backbone, latents, responses, [str(i) for i in range(responses.shape[1])],
                  FitSettings(test_fraction=0.2, split_seed=0))
print(json.dumps({"growth": status("VmHWM") - start, "features": latents.numel() * 4}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_the_fit_at_d_much_larger_than_n_holds_no_second_copy_of_the_features(tmp_path):
    """fit_readout + ridge on memory-mapped features (n = 900 ≪ D = 65,536, 236 MB float32): the growth of resident
    memory during the fit stays below twice the feature matrix (the resident pages of the map itself, plus float64
    blocks, ``[n, n]`` matrices and weights). Before the blocked fit it was 3.9× (a copy of the training rows, that
    copy in float64, and the weights in float64 thrice)."""
    n, d, neurons = 900, 65_536, 20
    rng = np.random.default_rng(0)
    path = tmp_path / "features.npy"
    ys = []
    with open(path, "wb") as f:  # plain writes: the pages are not resident in the process that fits
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, 256, 16, 16)})
        w = rng.standard_normal((d, neurons)).astype(np.float32) / 100
        for _ in range(n // 100):
            block = np.maximum(rng.standard_normal((100, d), dtype=np.float32), 0)
            ys.append(block @ w + rng.standard_normal((100, neurons)).astype(np.float32))
            f.write(block.tobytes())
    np.save(str(path) + ".y.npy", np.concatenate(ys))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path), str(n)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    assert measured["growth"] < 2.0 * measured["features"], measured
