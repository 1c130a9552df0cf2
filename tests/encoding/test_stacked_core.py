"""The data-driven core (``stacked_core``): trained jointly with a readout, saved, loaded and attributed."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import yaml

from sharedattr.attribution.captum_methods import Saliency
from sharedattr.attribution.parallel_backprop import ParallelBackprop
from sharedattr.config.validation import validate_experiment
from sharedattr.encoding.backbones.stacked_core import StackedCore, group_sparsity_penalty, laplace_penalty
from sharedattr.encoding.fit import FitSettings, fit_with_backbone
from sharedattr.encoding.readouts.attention import AttentionReadout
from sharedattr.encoding.readouts.factorized import FactorizedReadout
from sharedattr.encoding.readouts.gaussian import Gaussian2dReadout
from sharedattr.encoding.readouts.training import TrainedReadout
from sharedattr.encoding.store import load_model, save_model
from sharedattr.experiment.stages import fit_experiment
from sharedattr.plugins.specs import BackboneSpec, ReadoutSpec
from sharedattr.runtime.errors import SpecError, UserError
from sharedattr.runtime.numerics import one_thread_results
from tests.cli_runner import run_cli

SIZE = 16
CORE = {"layers": 2, "channels": 4, "input_kernel": 5, "hidden_kernel": 3, "input_size": SIZE}
FAST = {"loss": "poisson", "nonlinearity": "elu1", "lr": 1e-2, "batch_size": 16, "max_epochs": 6, "patience": 6}


def tiny_counts(n: int = 64, neurons: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[n, 1, 16, 16]`` in [0, 1] and Poisson counts ``[n, neurons]``: neuron k fires with the brightness of
    its own quadrant."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.rand(n, 1, 2, 2, generator=g)
    noise = torch.rand(n, 1, SIZE, SIZE, generator=g)
    images = 0.8 * torch.nn.functional.interpolate(levels, size=(SIZE, SIZE)) + 0.2 * noise
    rates = 8 * levels.flatten(1)[:, :neurons] ** 2
    return images, torch.poisson(rates, generator=g)


def _fit(readout, seed: int = 0, **core):
    images, counts = tiny_counts()
    with one_thread_results():
        return fit_with_backbone(
            readout,
            StackedCore(**{**CORE, **core}, seed=seed),
            images,
            counts,
            ["a", "b", "c"],
            FitSettings(0.25, 0, batch_size=16),
        )


def test_core_shapes_and_penalties(registry):
    core = StackedCore(**CORE, input_stride=2)
    assert core.latent_shape == (4, 8, 8)
    assert core(core.preprocess(torch.rand(2, 1, SIZE, SIZE))).shape == (2, 4, 8, 8)
    assert core.trainable and not any(p.requires_grad for p in core.parameters())
    smooth = torch.ones(1, 1, 5, 5)
    rough = torch.tensor([[(-1.0) ** (i + j) for j in range(5)] for i in range(5)])[None, None]
    assert laplace_penalty(rough) > 10 * laplace_penalty(smooth)
    weight = torch.zeros(2, 3, 3, 3)
    weight[0, 1] = 1.0  # one kernel of norm 3
    assert group_sparsity_penalty(weight) == pytest.approx(3.0, abs=1e-4)  # zero kernels add ~1e-6 each
    with pytest.raises(SpecError, match="odd"):
        registry.build("backbone", "stacked_core", input_kernel=4)


@pytest.mark.parametrize("readout", [AttentionReadout, Gaussian2dReadout, FactorizedReadout])
def test_joint_training_lowers_the_loss_and_predicts(readout):
    fit = _fit(readout(**FAST))
    history = fit.model.readout.history
    assert history.train_loss[-1] < history.train_loss[0]
    assert torch.isfinite(fit.predicted).all() and (fit.predicted > 0).all()
    assert not fit.model.backbone.training and not any(p.requires_grad for p in fit.model.backbone.parameters())
    assert float(fit.test_r.mean()) > 0.2


def test_the_joint_fit_shows_its_progress(capsys):
    images, counts = tiny_counts()
    settings = FitSettings(0.25, 0, batch_size=16, progress=True)
    with one_thread_results():
        fit_with_backbone(
            FactorizedReadout(**{**FAST, "max_epochs": 2}),
            StackedCore(**CORE),
            images,
            counts,
            ["a", "b", "c"],
            settings,
        )
    err = capsys.readouterr().err
    assert "training" in err and "val_r=" in err


def test_the_core_weights_change_in_training():
    before = StackedCore(**CORE).state_dict()["features.layer0.0.weight"].clone()
    fit = _fit(FactorizedReadout(**FAST))
    assert not torch.equal(fit.model.backbone.state_dict()["features.layer0.0.weight"], before)


def test_a_seeded_joint_fit_is_bit_identical():
    a, b = _fit(AttentionReadout(**FAST)), _fit(AttentionReadout(**FAST))
    assert torch.equal(a.predicted, b.predicted)
    assert a.model.readout.history.train_loss == b.model.readout.history.train_loss
    c = _fit(AttentionReadout(**FAST), seed=1)
    assert not torch.equal(a.predicted, c.predicted)


def test_early_stopping_stops_and_restores_the_best_epoch():
    fit = _fit(FactorizedReadout(**{**FAST, "max_epochs": 200, "patience": 2, "lr": 0.2}))
    history = fit.model.readout.history
    assert len(history.val_r) < 200
    assert len(history.val_r) - 1 - history.best_epoch == 2
    assert history.val_r[history.best_epoch] == max(history.val_r)


def test_plateau_schedule_lowers_the_learning_rate(monkeypatch):
    rates = []
    original = torch.optim.lr_scheduler.ReduceLROnPlateau.step

    def step(self, metric):
        original(self, metric)
        rates.append(self.optimizer.param_groups[0]["lr"])

    monkeypatch.setattr(torch.optim.lr_scheduler.ReduceLROnPlateau, "step", step)
    params = {**FAST, "max_epochs": 12, "patience": 12, "lr_decay_factor": 0.5, "lr_patience": 0, "lr": 0.05}
    _fit(FactorizedReadout(**params))
    assert rates and min(rates) < 0.05


def test_save_load_gives_the_same_predictions_and_maps(tmp_path, registry):
    fit = _fit(AttentionReadout(**FAST))
    images, _ = tiny_counts()
    core_spec = BackboneSpec.model_validate({"name": "stacked_core", **CORE})
    readout_spec = ReadoutSpec.model_validate({"name": "attention", **FAST})
    save_model(fit.model, core_spec, readout_spec, fit.neuron_ids, tmp_path / "m", registry=registry)
    loaded = load_model(tmp_path / "m", registry=registry)
    x = images[:6]
    with one_thread_results(), torch.no_grad():
        assert torch.equal(fit.model(x), loaded(x))
    targets = torch.tensor([0, 1, 2])
    with one_thread_results():
        saliency = [
            Saliency(m).attribute(x[:3].clone().requires_grad_(True), target=targets) for m in (fit.model, loaded)
        ]
        shared = [ParallelBackprop(m).attribute((x[:3], x[3:]), target=targets) for m in (fit.model, loaded)]
    assert torch.equal(saliency[0], saliency[1]) and saliency[0].abs().sum() > 0
    for a, b in zip(shared[0], shared[1]):
        assert torch.equal(a, b)
    assert shared[0].ooc.abs().sum() > 0 and shared[0].ref.abs().sum() > 0


def test_parallel_backprop_keeps_the_readout_contract():
    """``r_n = φ(⟨w_n, z_n(x)⟩ + b_n)`` holds for the trained core model, so parallel backprop works unchanged."""
    model = _fit(Gaussian2dReadout(**FAST)).model
    x = tiny_counts()[0][:4]
    with torch.no_grad():
        pre = model.contributions(x).sum(-1) + model.readout.bias
        assert torch.allclose(model.readout.nonlinearity(pre), model(x), atol=1e-5)


def test_poisson_loss_on_a_frozen_backbone_readout():
    latents = torch.rand(60, 3, 4, 4)
    counts = torch.poisson(3 * latents[:, 0, 1, 1:3].pow(2) + 0.2, generator=torch.Generator().manual_seed(0))
    readout = FactorizedReadout(loss="poisson", nonlinearity="elu1", max_epochs=30, batch_size=16, lr=0.05)
    readout.fit(latents, counts)
    assert readout.history.train_loss[-1] < readout.history.train_loss[0]
    assert all(math.isfinite(v) for v in readout.history.train_loss)
    with pytest.raises(SpecError, match="positive output"):
        FactorizedReadout(loss="poisson")
    with pytest.raises(UserError, match="non-negative responses"):
        FactorizedReadout(loss="poisson", nonlinearity="elu1", max_epochs=2).fit(latents, counts - 5)


def test_ridge_cannot_train_a_core(registry):
    images, counts = tiny_counts()
    with pytest.raises(UserError, match="cannot train with a trainable backbone"):
        fit_with_backbone(
            registry.build("readout", "ridge"),
            StackedCore(**CORE),
            images,
            counts,
            ["a", "b", "c"],
            FitSettings(0.25, 0),
        )


def test_a_config_pairs_the_core_with_a_trained_readout(tiny_config):
    core = {"name": "stacked_core", "input_size": 32}
    spec = validate_experiment({**tiny_config, "backbone": core, "readout": {"name": "gaussian2d", "lr": 0.01}})
    assert (spec.readout.loss, spec.readout.nonlinearity, spec.readout.lr) == ("poisson", "elu1", 0.01)  # config wins
    frozen = validate_experiment({**tiny_config, "readout": {"name": "gaussian2d"}})
    assert (frozen.readout.loss, frozen.readout.nonlinearity) == ("mse", "identity")  # frozen: unchanged defaults
    with pytest.raises(SpecError, match=r"readout.name: the ridge readout cannot train with the trainable backbone"):
        validate_experiment({**tiny_config, "backbone": core})
    with pytest.raises(SpecError, match="positive output"):
        validate_experiment(
            {**tiny_config, "backbone": core, "readout": {"name": "factorized", "nonlinearity": "identity"}}
        )


def test_a_saved_core_model_is_reused_by_a_run(tiny_config, tmp_path, monkeypatch):
    responses = pd.read_csv(tiny_config["data"]["responses"], index_col=0)
    responses.clip(lower=0).to_csv(tmp_path / "rates.csv")
    config = {
        **tiny_config,
        "data": {**tiny_config["data"], "responses": str(tmp_path / "rates.csv")},
        "backbone": {"name": "stacked_core", "layers": 1, "channels": 4, "input_size": 32, "input_stride": 2},
        "readout": {"name": "factorized", "max_epochs": 3, "batch_size": 8},
    }
    spec = validate_experiment(config)
    first = fit_experiment(spec, tmp_path / "out", progress=False, reuse=True)
    calls = []
    monkeypatch.setattr(TrainedReadout, "fit_with_backbone", lambda *a, **k: calls.append(a))
    second = fit_experiment(spec, tmp_path / "out", progress=False, reuse=True)
    assert second.reused and not calls
    assert torch.equal(first.fit.predicted, second.fit.predicted) and torch.equal(first.latents, second.latents)


def test_fit_command_trains_the_core_end_to_end(tiny_config, tmp_path):
    responses = pd.read_csv(tiny_config["data"]["responses"], index_col=0)
    responses.clip(lower=0).to_csv(tmp_path / "rates.csv")  # Poisson (the core's default loss) needs rates >= 0
    config = {
        **tiny_config,
        "data": {**tiny_config["data"], "responses": str(tmp_path / "rates.csv")},
        "backbone": {"name": "stacked_core", "layers": 2, "channels": 4, "input_size": 32, "input_stride": 2},
        "readout": {"name": "attention", "max_epochs": 4, "batch_size": 8},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run_cli("fit", str(path), "--out", str(tmp_path / "out"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "features computed" in done.stdout
    model_json = yaml.safe_load((tmp_path / "out" / "model" / "model.json").read_text())
    assert model_json["readout"]["loss"] == "poisson" and model_json["readout"]["nonlinearity"] == "elu1"
    seeds = (model_json["backbone"]["seed"], model_json["readout"]["seed"], model_json["split_seed"])
    assert seeds == (0, 0, 0)  # the core's initial weights; the readout's init, validation split and batches; the split
    loaded = load_model(tmp_path / "out" / "model")
    assert loaded.backbone.trainable
    again = run_cli("fit", str(path), "--out", str(tmp_path / "out2"), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "features computed" in again.stdout  # never cached
    assert (tmp_path / "out" / "scores.csv").read_text() == (tmp_path / "out2" / "scores.csv").read_text()


def test_the_core_leaves_a_frozen_backbones_feature_cache_alone(tiny_config, tmp_path):
    cache = tmp_path / "cache"
    frozen = validate_experiment({**tiny_config, "cache_dir": str(cache)})
    assert not fit_experiment(frozen, tmp_path / "frozen", progress=False).cache_hit
    files = {p.name: p.read_bytes() for p in cache.rglob("*.npy")}
    assert len(files) == 1
    responses = pd.read_csv(tiny_config["data"]["responses"], index_col=0)
    responses.clip(lower=0).to_csv(tmp_path / "rates.csv")
    core = {
        **tiny_config,
        "cache_dir": str(cache),
        "data": {**tiny_config["data"], "responses": str(tmp_path / "rates.csv")},
        "backbone": {"name": "stacked_core", "layers": 1, "channels": 4, "input_size": 32, "input_stride": 2},
        "readout": {"name": "factorized", "max_epochs": 2, "batch_size": 8},
    }
    fitted = fit_experiment(validate_experiment(core), tmp_path / "core", progress=False)
    assert not fitted.cache_hit
    assert {p.name: p.read_bytes() for p in cache.rglob("*.npy")} == files  # nothing added, nothing changed
    assert fit_experiment(frozen, tmp_path / "frozen2", progress=False).cache_hit  # still warm


def test_a_run_explains_the_core_model_with_every_kind_of_method(tiny_config, tmp_path):
    """``sharedattr run`` on a trained core: pairwise, gradient, path and layer (Grad-CAM inside the core) methods."""
    responses = pd.read_csv(tiny_config["data"]["responses"], index_col=0)
    responses.clip(lower=0).to_csv(tmp_path / "rates.csv")
    methods = ["saliency", "parallel_backprop", {"name": "grad_cam", "layer": "features.layer1"}]
    config = {
        **tiny_config,
        "data": {**tiny_config["data"], "responses": str(tmp_path / "rates.csv")},
        "backbone": {"name": "stacked_core", "layers": 2, "channels": 4, "input_size": 32, "input_stride": 2},
        "readout": {"name": "attention", "max_epochs": 2, "batch_size": 8},
        "methods": [*methods, {"name": "integrated_gradients", "n_steps": 4}],
        "metrics": ["gini"],
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run_cli("run", str(path), "--out", str(tmp_path / "run"), "--no-progress")
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(rows["method"]) == {"saliency", "parallel_backprop", "grad_cam", "integrated_gradients"}
    assert rows["value"].notna().all()


def test_a_run_reuses_a_fitted_core_with_model(tiny_config, tmp_path, monkeypatch):
    """`run --model FIT` on a core: the core's trained weights come from the saved model (a freshly built core has
    other weights, which is no mismatch), nothing is trained again, and the held-out scores are the fit's."""
    responses = pd.read_csv(tiny_config["data"]["responses"], index_col=0)
    responses.clip(lower=0).to_csv(tmp_path / "rates.csv")
    config = {
        **tiny_config,
        "data": {**tiny_config["data"], "responses": str(tmp_path / "rates.csv")},
        "backbone": {"name": "stacked_core", "layers": 1, "channels": 4, "input_size": 32, "input_stride": 2},
        "readout": {"name": "factorized", "max_epochs": 3, "batch_size": 8},
        "methods": ["saliency"],
        "metrics": ["gini"],
    }
    fit_experiment(validate_experiment(config), tmp_path / "fit", progress=False)
    calls = []
    monkeypatch.setattr(TrainedReadout, "fit_with_backbone", lambda *a, **k: calls.append(a))
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run_cli("run", str(path), "--out", str(tmp_path / "run"), "--model", str(tmp_path / "fit"), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not calls, "the core was trained again"
    assert (tmp_path / "run" / "scores.csv").read_bytes() == (tmp_path / "fit" / "scores.csv").read_bytes()
