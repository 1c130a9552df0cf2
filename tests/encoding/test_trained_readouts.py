"""The SGD-trained readouts (factorized, gaussian2d, attention) and their shared trainer."""

from __future__ import annotations

import math

import pytest
import torch

from sharedattr.encoding.readouts.attention import AttentionReadout, positional_encoding
from sharedattr.encoding.readouts.factorized import FactorizedReadout
from sharedattr.encoding.readouts.gaussian import Gaussian2dReadout
from sharedattr.encoding.readouts.training import masked_mse
from sharedattr.encoding.scores import pearson_columns
from sharedattr.runtime.errors import SpecError, UserError

S, C, H, W, N = 500, 8, 6, 6, 4  # planted populations: fit on the first 300 images, score on the other 200
FIT = 300


def noisy(clean, g):
    """Responses: the planted model plus Gaussian noise of 0.3 × each neuron's signal std (ceiling r ≈ 0.95)."""
    return clean + 0.3 * clean.std(0) * torch.randn(clean.shape, generator=g)


def planted_factorized(seed=0):
    """Gaussian-blob masks [N, H, W] and random features [N, C]: y = ⟨f_n, Σ_hw m_nhw x_:hw⟩ + 2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(S, C, H, W, generator=g)
    centre = torch.randint(1, 5, (N, 2), generator=g).float()
    rows, cols = torch.arange(H).float()[:, None], torch.arange(W).float()[None, :]
    mask = torch.exp(-((rows - centre[:, 0, None, None]) ** 2 + (cols - centre[:, 1, None, None]) ** 2) / 2)
    features = torch.randn(N, C, generator=g)
    clean = torch.einsum("bchw,nhw,nc->bn", x, mask, features) + 2.0
    return x, noisy(clean, g), mask, features


def planted_gaussian(seed=0):
    """One latent pixel per neuron, read out by random features: y = ⟨f_n, x_:rc⟩ + 1 (no interpolation involved)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(S, C, H, W, generator=g)
    pixel = torch.randint(0, H, (N, 2), generator=g)  # (row, col)
    features = torch.randn(N, C, generator=g)
    clean = (x[:, :, pixel[:, 0], pixel[:, 1]].transpose(1, 2) * features).sum(-1) + 1.0
    return x, noisy(clean, g), pixel


def planted_attention(seed=0, d=8):
    """Random shared key/value maps over [x_s; pe_s], queries and features: y = f_n · Σ_s a_sn v_s + 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(S, C, H, W, generator=g)
    tokens = torch.cat([x.flatten(2).transpose(1, 2), positional_encoding(H, W, 4).expand(S, -1, -1)], dim=2)
    w_key, w_value = (torch.randn(d, tokens.shape[2], generator=g) / math.sqrt(tokens.shape[2]) for _ in range(2))
    queries, features = torch.randn(N, d, generator=g), torch.randn(N, d, generator=g)
    attention = torch.softmax(tokens @ w_key.T @ queries.T, dim=1)  # [S, HW, N], softmax over locations
    pooled = attention.transpose(1, 2) @ (tokens @ w_value.T)  # [S, N, d]
    clean = (pooled * features).sum(-1) + 1.0
    return x, noisy(clean, g)


def held_out_r(readout, x, y):
    with torch.no_grad():
        return pearson_columns(readout(x[FIT:]), y[FIT:])


# -- planted populations ------------------------------------------------------------------
def test_factorized_recovers_a_planted_population():
    x, y, mask, features = planted_factorized()
    readout = FactorizedReadout().fit(x[:FIT], y[:FIT])
    r = held_out_r(readout, x, y)
    assert r.mean() > 0.85, r
    # mask and features are identified up to a scale (and sign) shared between them: compare w_n ⊗ m_n
    true = torch.einsum("nc,nhw->nchw", features, mask).flatten(1)
    fitted = torch.einsum("nc,nhw->nchw", readout.weight, readout.mask).detach().flatten(1)
    assert (torch.cosine_similarity(true, fitted, dim=1) > 0.9).all()


def test_gaussian2d_recovers_a_planted_population():
    x, y, pixel = planted_gaussian()
    readout = Gaussian2dReadout().fit(x[:FIT], y[:FIT])
    r = held_out_r(readout, x, y)
    assert r.mean() > 0.85, r
    grid = torch.linspace(-1, 1, H)
    true_mu = torch.stack([grid[pixel[:, 1]], grid[pixel[:, 0]]], dim=1)  # grid_sample order: (x = col, y = row)
    spacing = 2 / (H - 1)
    assert (readout.mu.detach() - true_mu).abs().max() < spacing / 4


def test_gaussian2d_random_start_is_available():
    readout = Gaussian2dReadout(init_mu="random", init_mu_range=0.3, max_epochs=1)
    readout.fit(*planted_gaussian()[:2])
    assert readout.mu.abs().max() <= 1


def test_attention_recovers_a_planted_population():
    x, y = planted_attention()
    readout = AttentionReadout().fit(x[:FIT], y[:FIT])
    r = held_out_r(readout, x, y)
    # The loss is non-convex in the queries: over ten planted seeds, 2 of 40 neurons settled on a
    # wrong attention pattern (the rest reached r ≈ 0.95), so one neuron is allowed to miss.
    assert (r > 0.9).sum() >= N - 1 and r.mean() > 0.7, r


# -- pooled against independent computations ----------------------------------------------
def test_factorized_pooled_is_the_mask_weighted_sum():
    readout = FactorizedReadout()
    readout.initialize((C, H, W), N)
    x = torch.randn(3, C, H, W)
    expected = torch.stack([(x * readout.mask[n]).sum((2, 3)) for n in range(N)], dim=1)
    torch.testing.assert_close(readout.pooled(x), expected)


def test_gaussian2d_reads_the_pixel_under_mu_and_jitters_only_in_training():
    readout = Gaussian2dReadout()
    readout.initialize((C, H, W), 2)
    grid = torch.linspace(-1, 1, W)
    with torch.no_grad():
        readout.mu.copy_(torch.tensor([[grid[4], grid[1]], [grid[0], grid[5]]]))  # (col 4, row 1), (col 0, row 5)
    x = torch.randn(3, C, H, W)
    readout.eval()
    torch.testing.assert_close(readout.pooled(x), torch.stack([x[:, :, 1, 4], x[:, :, 5, 0]], dim=1))
    readout.train()
    assert not torch.allclose(readout.pooled(x), readout.pooled(x))
    assert readout.locations(64).abs().max() <= 1


def test_attention_pooled_is_the_softmax_weighted_value():
    readout = AttentionReadout(temperature=0.5)
    readout.initialize((C, H, W), N)
    x = torch.randn(2, C, H, W)
    with torch.no_grad():
        tokens = torch.cat([x.flatten(2).transpose(1, 2), positional_encoding(H, W, 4).expand(2, -1, -1)], dim=2)
        keys, values = tokens @ readout.key.weight.T, tokens @ readout.value.weight.T  # [B, HW, d]
        for b in range(2):
            for n in range(N):
                a = torch.softmax(keys[b] @ readout.queries[n] / 0.5, dim=0)  # [HW]
                torch.testing.assert_close(readout.pooled(x)[b, n], a @ values[b])


def test_positional_encoding_tells_every_pixel_apart():
    pe = positional_encoding(5, 7, 3)
    assert pe.shape == (35, 12)
    assert torch.cdist(pe, pe).add(torch.eye(35)).min() > 0.1


# -- the trainer --------------------------------------------------------------------------
def test_masked_mse_keeps_nan_out_of_value_and_gradient():
    prediction = torch.randn(6, 3, requires_grad=True)
    target = torch.randn(6, 3)
    target[[0, 2, 5], [1, 1, 0]] = math.nan
    valid = ~torch.isnan(target)
    loss = masked_mse(prediction, target)
    torch.testing.assert_close(loss, (prediction[valid] - target[valid]).pow(2).mean())
    loss.backward()
    assert torch.isfinite(prediction.grad).all() and (prediction.grad[~valid] == 0).all()


@pytest.mark.parametrize("cls", [FactorizedReadout, Gaussian2dReadout])
def test_a_neuron_with_missing_responses_still_fits(cls):
    x, y = (planted_factorized if cls is FactorizedReadout else planted_gaussian)()[:2]
    y_fit = y[:FIT].clone()
    y_fit[torch.randperm(FIT, generator=torch.Generator().manual_seed(3))[:100], 1] = math.nan  # a third missing
    readout = cls().fit(x[:FIT], y_fit)
    assert all(torch.isfinite(p).all() for p in readout.parameters())
    assert all(math.isfinite(v) for v in readout.history.train_loss + readout.history.val_r)
    assert held_out_r(readout, x, y)[1] > 0.85


def test_early_stopping_restores_the_best_epoch():
    # few noisy images, no penalty and a large step: validation r peaks early, then falls
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, C, H, W, generator=g)
    y = x[:, 0, 2, 3, None] + 2 * torch.randn(60, 2, generator=g)
    readout = FactorizedReadout(lr=0.1, batch_size=8, patience=4, l1_mask=0, l1_features=0).fit(x, y)
    history = readout.history
    assert history.best_epoch < len(history.val_r) - 1, "training should have stopped after the best epoch"
    assert len(history.val_r) == history.best_epoch + 1 + 4, "and exactly `patience` epochs later"
    assert history.val_r[history.best_epoch] == max(history.val_r)
    v = history.val_index
    restored = pearson_columns(readout(x[v]).detach(), y[v]).mean().item()
    assert restored == pytest.approx(history.val_r[history.best_epoch], abs=1e-6)
    assert restored > history.val_r[-1]


@pytest.mark.parametrize("cls", [FactorizedReadout, Gaussian2dReadout, AttentionReadout])
def test_same_seed_same_weights(cls):
    x, y = planted_gaussian()[:2]
    x, y = x[:100], y[:100]
    rng = torch.get_rng_state()
    fits = [cls(seed=seed, max_epochs=5).fit(x, y).state_dict() for seed in (1, 1, 2)]
    assert torch.equal(torch.get_rng_state(), rng), "fitting must leave the global RNG alone"
    for name in fits[0]:
        assert torch.equal(fits[0][name], fits[1][name]), name
    assert any(not torch.equal(fits[0][k], fits[2][k]) for k in fits[0])


# -- errors, nonlinearity -----------------------------------------------------------------
@pytest.mark.parametrize("cls", [FactorizedReadout, Gaussian2dReadout, AttentionReadout])
def test_flat_latents_are_a_clear_user_error(cls):
    with pytest.raises(UserError, match=r"spatial latents \[B, C, H, W\]"):
        cls().fit(torch.randn(20, 16), torch.randn(20, 2))
    readout = cls(max_epochs=1).fit(torch.randn(20, 4, 3, 3), torch.randn(20, 2))
    with pytest.raises(UserError, match=r"spatial latents"):
        readout(torch.randn(5, 36))
    with pytest.raises(UserError, match=r"fitted to latents \[4, 3, 3\]"):
        readout(torch.randn(5, 4, 2, 2))


@pytest.mark.parametrize("cls", [FactorizedReadout, Gaussian2dReadout, AttentionReadout])
def test_an_unfitted_readout_says_so(cls):
    readout = cls()
    for use in (lambda: readout.weight, lambda: readout.bias, lambda: readout(torch.randn(2, 4, 3, 3))):
        with pytest.raises(RuntimeError, match="not fitted yet"):
            use()


def test_neuron_without_any_response_is_a_user_error():
    y = torch.randn(20, 2)
    y[:, 1] = math.nan
    with pytest.raises(UserError, match=r"neuron\(s\) \[1\]"):
        FactorizedReadout().fit(torch.randn(20, 4, 3, 3), y)


def test_params_are_validated():
    with pytest.raises(SpecError, match="val_fraction"):
        AttentionReadout(val_fraction=1.0)
    with pytest.raises(SpecError, match="unknown parameter"):
        FactorizedReadout(l1_features=0.1, l1_queries=0.1)


def test_elu1_output_is_positive_and_keeps_the_contract():
    x, y = planted_gaussian()[:2]
    y = y - y.min() + 0.1  # positive rates
    readout = Gaussian2dReadout(nonlinearity="elu1", elu_offset=0.5).fit(x[:FIT], y[:FIT])
    with torch.no_grad():
        out = readout(x[FIT:])
        contract = readout.nonlinearity((readout.pooled(x[FIT:]) * readout.weight).sum(-1) + readout.bias)
    assert (out > 0).all()
    torch.testing.assert_close(out, contract)
    assert held_out_r(readout, x, y).mean() > 0.85


# -- the EGG paper's attention readout (variant = "egg") ---------------------------------------
def test_the_egg_variant_sets_the_papers_defaults_and_explicit_fields_win(registry):
    egg = registry.get("readout", "attention").validate_params({"variant": "egg"})
    assert (egg.embed_dim, egg.pos_dropout, egg.nonlinearity) == (128, 0.1, "elu1")
    mine = registry.get("readout", "attention").validate_params({"variant": "egg", "embed_dim": 32})
    assert (mine.embed_dim, mine.pos_dropout) == (32, 0.1)
    compact = registry.get("readout", "attention").validate_params({})
    assert (compact.variant, compact.embed_dim, compact.pos_dropout, compact.nonlinearity) == (
        "compact",
        16,
        0.0,
        "identity",
    )


def test_the_additive_encoding_is_the_transformers_over_rows_then_columns():
    from sharedattr.encoding.readouts.attention import additive_positional_encoding

    h, w, c = 3, 4, 6  # 3 channels for the row, 3 for the column
    pe = additive_positional_encoding(h, w, c).view(h, w, c).double()
    m = 3
    omega = [10000 ** (-2 * k / m) for k in range(2)]  # channel 2k: sin(i ω_k), 2k + 1: cos(i ω_k)
    for i in range(h):
        for j in range(w):
            want = [math.sin(i * omega[0]), math.cos(i * omega[0]), math.sin(i * omega[1])]
            want += [math.sin(j * omega[0]), math.cos(j * omega[0]), math.sin(j * omega[1])]
            torch.testing.assert_close(pe[i, j], torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-6)


def test_the_egg_variant_equals_its_formula():
    """r_n = ELU(⟨f_n, Σ_s softmax_s(k_s·q_n/(√C·T)) v_s⟩ + b_n) + 1, tokens = latents + encoding (eval: no dropout)."""
    from sharedattr.encoding.readouts.attention import additive_positional_encoding

    readout = AttentionReadout(variant="egg", embed_dim=8, temperature=0.7, nonlinearity="elu1")
    readout.initialize((C, H, W), N)
    with torch.no_grad():
        readout._bias.copy_(torch.randn(N))
    readout.eval()
    x = torch.randn(2, C, H, W)
    tokens = x.flatten(2).transpose(1, 2) + additive_positional_encoding(H, W, C)  # [B, HW, C]
    keys, values = tokens @ readout.key.weight.T, tokens @ readout.value.weight.T
    with torch.no_grad():
        for b in range(2):
            for n in range(N):
                a = torch.softmax(keys[b] @ readout.queries[n] / (math.sqrt(C) * 0.7), dim=0)
                pre = (a @ values[b]) @ readout.features[n] + readout._bias[n]
                torch.testing.assert_close(readout(x)[b, n], torch.nn.functional.elu(pre) + 1)
        readout.train()  # dropout on the encoded tokens while training only
        assert not torch.allclose(readout(x), readout(x))


def test_the_egg_variant_fits(registry):
    x, y = planted_attention()
    readout = AttentionReadout(variant="egg", embed_dim=16, max_epochs=20).fit(x[:FIT], y[:FIT] - y.min() + 0.1)
    assert torch.isfinite(held_out_r(readout, x, y)).all()
