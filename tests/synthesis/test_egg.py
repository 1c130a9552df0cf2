"""The ``egg`` synthesizer (Energy Guided Diffusion) on a tiny random diffusers UNet: no shipped prior needed."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn

from sharedattr.plugins.loading import load_registry
from sharedattr.runtime.errors import SpecError
from sharedattr.synthesis import egg as egg_module
from sharedattr.synthesis.egg import EGG, EnergyGuidance, guidance_step, make_scheduler
from sharedattr.synthesis.preprocess import fit_to_model
from sharedattr.synthesis.prior import DiffusionPrior, load_prior
from sharedattr.testing import checks_for, tiny_model

STEPS = 3
BETA_START, BETA_END, T_TRAIN = 1e-4, 0.02, 1000  # DDPMScheduler's linear-schedule defaults


def tiny_unet(seed: int = 0) -> UNet2DModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(
            sample_size=16,
            in_channels=1,
            out_channels=1,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
        )
    return unet.eval().requires_grad_(False)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one thread is fastest


@pytest.fixture(scope="module")
def prior() -> DiffusionPrior:
    """A tiny random prior (16 × 16 grey), built directly: the shipped prior is not needed."""
    config = DDPMScheduler(num_train_timesteps=T_TRAIN, beta_start=BETA_START, beta_end=BETA_END).config
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items() if not k.startswith("_")}
    return DiffusionPrior(tiny_unet(), config, sample_size=16, channels=1, source="tiny")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_model()


def reference_image() -> torch.Tensor:
    return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5))


def own_alphas_cumprod() -> torch.Tensor:
    """ᾱ of the linear β schedule, computed without the scheduler."""
    betas = torch.linspace(BETA_START, BETA_END, T_TRAIN, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


def pixel_energy(images: torch.Tensor):
    """A non-linear energy of images in [0, 1] whose gradient differs between samples."""
    from sharedattr.plugins.contracts import EnergyValue

    target = torch.linspace(0, 1, images[0].numel()).view_as(images[0])
    energy = ((images - target) ** 2).flatten(1).mean(1) + images.flatten(1)[:, :5].sum(1) ** 2
    return EnergyValue(energy, -energy)


# -- (1) the guidance step against an independent computation ------------------------------
@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
@pytest.mark.parametrize("normalize", ["sample", "batch"])
def test_guidance_step_matches_an_independent_computation(prior, kind, normalize):
    scheduler = make_scheduler(kind, prior.scheduler_config, 4)
    t = scheduler.timesteps[1]
    eta = 0.7 if kind == "ddim" else 0.0
    x_t = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(7)
    state = gen.get_state()
    out = guidance_step(prior.unet, scheduler, x_t, t, EnergyGuidance(pixel_energy, 2.5, normalize), gen, eta)

    # by hand: own x0_hat from own ᾱ, own autograd on a fresh graph, own normalisation
    ab = own_alphas_cumprod()[int(t)]
    x = x_t.clone().requires_grad_(True)
    eps = prior.unet(x, t).sample
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    energy = pixel_energy((x0 + 1) / 2).energy
    (g,) = torch.autograd.grad(energy.sum(), x)
    if normalize == "sample":
        g = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    else:
        g = g / g.norm()
    # the unguided sampler step, with the generator in the same state
    gen2 = torch.Generator().manual_seed(0)
    gen2.set_state(state)
    kwargs = {"eta": eta} if kind == "ddim" else {}
    unguided = scheduler.step(eps.detach(), t, x_t, generator=gen2, **kwargs).prev_sample
    expected = unguided - 2.5 * g

    torch.testing.assert_close(out.x0_hat, x0.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.value.energy, energy.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.g, g, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.x_prev, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out.x_prev, unguided, atol=1e-3), "guidance must move the sample"
    assert torch.equal(gen.get_state(), gen2.get_state()), "the step must draw the sampler's noise from the generator"


def test_ddim_step_by_hand(prior):
    """eta = 0 DDIM, fully by hand: x_prev = √ᾱ_prev·clip(x0_hat) + √(1−ᾱ_prev)·eps − λ·g."""
    scheduler = make_scheduler("ddim", prior.scheduler_config, 4)  # timesteps 750, 500, 250, 0
    t, t_prev = int(scheduler.timesteps[1]), int(scheduler.timesteps[2])
    ab, ab_prev = own_alphas_cumprod()[t], own_alphas_cumprod()[t_prev]
    x_t = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    out = guidance_step(prior.unet, scheduler, x_t, torch.tensor(t), EnergyGuidance(pixel_energy, 1.5, "sample"))
    with torch.no_grad():
        eps = prior.unet(x_t, t).sample
    x0 = ((x_t - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)  # the scheduler config has clip_sample
    expected = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps - 1.5 * out.g
    torch.testing.assert_close(out.x_prev, expected, rtol=1e-4, atol=1e-5)


# -- (2) normalisation ------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", ["sample", "batch"])
def test_normalisation_sets_the_update_norm(prior, normalize):
    scheduler = make_scheduler("ddpm", prior.scheduler_config, 4)
    t = scheduler.timesteps[0]
    x_t = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    guided = guidance_step(
        prior.unet, scheduler, x_t, t, EnergyGuidance(pixel_energy, 3.0, normalize), torch.Generator().manual_seed(9)
    )
    plain = guidance_step(
        prior.unet, scheduler, x_t, t, EnergyGuidance(pixel_energy, 0.0, normalize), torch.Generator().manual_seed(9)
    )
    per_sample = (guided.x_prev - plain.x_prev).flatten(1).norm(dim=1)
    if normalize == "sample":
        torch.testing.assert_close(guided.g.flatten(1).norm(dim=1), torch.ones(4))
        torch.testing.assert_close(per_sample, torch.full((4,), 3.0), rtol=1e-4, atol=1e-4)
    else:
        torch.testing.assert_close(guided.g.norm(), torch.tensor(1.0))
        torch.testing.assert_close(per_sample.pow(2).sum().sqrt(), torch.tensor(3.0), rtol=1e-4, atol=1e-4)
        assert per_sample.std() > 1e-3, "batch normalisation keeps the samples' relative gradient sizes"
    assert torch.equal(plain.g, torch.zeros_like(plain.g))


# -- (3) and (4): guidance lowers the energy ------------------------------------------------
@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_reconstruction_energy_decreases(prior, model, kind):
    ref = reference_image()
    energies = {}
    for scale in (0.0, 0.5):
        synth = EGG(
            prior=prior, scheduler=kind, steps=STEPS, guidance_scale=scale, n_seeds=4, seed=1, energy="reconstruction"
        )
        result = synth.synthesize(model, 1, reference=ref)
        energies[scale] = synth.energy.bind(model, 1, ref)(result.images).energy
    assert (energies[0.5] < energies[0.0]).all(), energies
    assert energies[0.5].mean() < 0.5 * energies[0.0].mean(), energies


def test_guidance_raises_the_response(prior, model):
    unguided = EGG(prior=prior, steps=STEPS, guidance_scale=0.0, n_seeds=3, seed=2).synthesize(model, 1)
    guided = EGG(prior=prior, steps=STEPS, guidance_scale=3.0, n_seeds=3, seed=2).synthesize(model, 1)
    assert (guided.responses > unguided.responses + 1.0).all(), (guided.responses, unguided.responses)
    # history is the neuron's response to x0_hat at each step; guidance also raises its last row
    assert guided.history.shape == unguided.history.shape == (STEPS, 3)
    assert (guided.history[-1] > unguided.history[-1]).all()


# -- (5) determinism, the contract, prior samples ----------------------------------------------
def test_same_seed_same_images(prior, model):
    make = lambda seed: EGG(prior=prior, scheduler="ddpm", steps=STEPS, n_seeds=2, seed=seed)  # noqa: E731
    a, b, c = make(4).synthesize(model, 0), make(4).synthesize(model, 0), make(5).synthesize(model, 0)
    assert torch.equal(a.images, b.images) and torch.equal(a.prior_images, b.prior_images)
    assert torch.equal(a.history, b.history)
    assert not torch.allclose(a.images, c.images)
    assert not torch.allclose(a.images[0], a.images[1]), "seeds within a batch differ"


def test_meets_the_synthesizer_contract_and_keeps_prior_images(prior, model):
    for check in checks_for("synthesizer", lambda: EGG(prior=prior, steps=STEPS, n_seeds=2), "egg"):
        check()
    synth = EGG(prior=prior, steps=STEPS, n_seeds=2, energy={"name": "mei", "norm": 4.0})
    result = synth.synthesize(model, 2)
    assert result.prior_images.shape == (2, 1, 16, 16)
    assert result.images.shape == (2, 3, 16, 16)
    assert 0 <= result.prior_images.min() and result.prior_images.max() <= 1
    # the returned images are what the model saw: fitted with the energy's norm
    torch.testing.assert_close(result.images, fit_to_model(result.prior_images, model, norm=4.0))
    torch.testing.assert_close(result.images.sub(0.5).flatten(1).norm(dim=1), torch.full((2,), 4.0))
    with torch.no_grad():
        torch.testing.assert_close(result.responses, model(result.images)[:, 2])


@pytest.mark.parametrize(("kind", "eta"), [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_prior_samples_are_the_unguided_samples(prior, model, kind, eta):
    """prior_samples (prior.sample_prior) and synthesize at λ = 0 start from the same noise per seed."""
    synth = EGG(prior=prior, scheduler=kind, eta=eta, steps=STEPS, guidance_scale=0.0, n_seeds=2, seed=3)
    samples = synth.prior_samples(2, seed=3)
    assert samples.shape == (2, 1, 16, 16) and 0 <= samples.min() and samples.max() <= 1
    torch.testing.assert_close(samples, synth.synthesize(model, 0).prior_images, rtol=1e-5, atol=1e-5)
    guided = EGG(prior=prior, scheduler=kind, eta=eta, steps=STEPS, n_seeds=2, seed=3).synthesize(model, 0)
    assert not torch.allclose(samples, guided.prior_images)


def test_a_seed_does_not_depend_on_the_batch(prior, model):
    """Per-sample generators and normalisation: seed i's image is the same whatever n_seeds."""
    two = EGG(prior=prior, scheduler="ddpm", steps=STEPS, n_seeds=2, seed=6).synthesize(model, 1)
    three = EGG(prior=prior, scheduler="ddpm", steps=STEPS, n_seeds=3, seed=6).synthesize(model, 1)
    torch.testing.assert_close(three.prior_images[:2], two.prior_images, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("normalize", ["sample", "batch"])
@pytest.mark.parametrize("energy", ["mei", "reconstruction"])
def test_neurons_sampled_together_equal_one_at_a_time(prior, model, normalize, energy):
    """One loop over 3 neurons × 2 seeds: each neuron's images as when sampled alone (same noise; batch
    normalisation over each neuron's seeds), one UNet call per step for all of them."""
    synth = EGG(prior=prior, scheduler="ddpm", steps=STEPS, n_seeds=2, seed=2, normalize=normalize, energy=energy)
    neurons, refs = [2, 0, 1], [reference_image(), reference_image() * 0.5, reference_image().flip(-1)]
    together = synth.synthesize_many(model, neurons, references=refs)
    for neuron, ref, result in zip(neurons, refs, together):
        alone = synth.synthesize(model, neuron, reference=ref)
        torch.testing.assert_close(result.prior_images, alone.prior_images, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(result.responses, alone.responses, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(result.history, alone.history, rtol=1e-4, atol=1e-4)
        assert result.images.shape == alone.images.shape and result.history.shape == (STEPS, 2)
    cost = together[0].cost
    assert cost["neurons_per_loop"] == 3 and cost["denoiser_calls"] == STEPS / 3  # the loop's, shared
    if energy == "mei":  # one model pass for all neurons: 6 images per call, a third of them this neuron's
        assert cost["model_images"] == 2 * (STEPS + 1) and cost["forward_calls"] == (STEPS + 1) / 3
    with pytest.raises(ValueError, match="references"):
        synth.synthesize_many(model, [0, 1], references=[None])


def test_neuron_loops_are_fixed_chunks_of_the_selection(prior):
    from sharedattr.experiment.synthesize import neuron_loops
    from sharedattr.synthesis.gradient_ascent import GradientAscent

    assert neuron_loops(EGG(prior=prior, neuron_batch=2), [5, 1, 7, 3, 9]) == [[5, 1], [7, 3], [9]]
    assert neuron_loops(EGG(prior=prior, neuron_batch=1), [5, 1]) == [[5], [1]]
    assert neuron_loops(GradientAscent(), [5, 1]) == [[5], [1]]  # its default neuron_batch: one at a time


# -- (6) cost ----------------------------------------------------------------------------------
def test_cost_counts_calls(prior, model):
    result = EGG(prior=prior, steps=STEPS, n_seeds=2).synthesize(model, 1)
    cost = result.cost
    assert cost["denoiser_calls"] == STEPS and cost["denoiser_backward_calls"] == STEPS
    assert cost["forward_calls"] == STEPS + 1  # one energy evaluation per step, one final scoring
    assert cost["backward_calls"] == STEPS
    assert cost["model_images"] == 2 * (STEPS + 1)
    assert cost["steps"] == STEPS and cost["wall_s"] > 0
    assert all(isinstance(v, float) for v in cost.values())
    unguided = EGG(prior=prior, steps=STEPS, n_seeds=2, guidance_scale=0.0).synthesize(model, 1).cost
    assert unguided["backward_calls"] == 0 and unguided["denoiser_backward_calls"] == 0
    assert unguided["forward_calls"] == STEPS + 1 and unguided["denoiser_calls"] == STEPS


# -- (7) params and registration -----------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"scheduler": "euler"},
        {"guidance_scale": -1.0},
        {"steps": 0},
        {"eta": 1.5},
        {"normalize": "layer"},
        {"n_seeds": 0},
        {"neuron_batch": 0},
        {"energy": "no_such_energy"},
        {"energy": {"name": "mei", "norm": -1}},
        {"guidance": 5.0},
    ],
)
def test_bad_params_are_rejected(params):
    with pytest.raises(SpecError):
        load_registry().get("synthesizer", "egg").validate_params(params)


def test_defaults_and_zero_guidance_are_valid():
    component = load_registry().get("synthesizer", "egg")
    defaults = component.validate_params({})
    assert (defaults.prior, defaults.preset, defaults.steps, defaults.eta) == ("insilico-ddpm-v1", "project", 50, 0.0)
    assert (defaults.scheduler, defaults.normalize) == (None, None)  # the preset's
    assert (defaults.guidance_scale, defaults.energy.name) == (5.0, "mei")
    built = EGG(prior="unused", **{k: v for k, v in defaults.model_dump().items() if k not in ("prior", "energy")})
    assert (built.scheduler, built.normalize, built.output) == ("ddim", "sample", "sample")
    assert component.validate_params({"guidance_scale": 0.0, "energy": "reconstruction"}).guidance_scale == 0.0
    assert component.description


def test_too_many_steps_for_the_prior(prior, model):
    with pytest.raises(ValueError, match="training timesteps"):
        EGG(prior=prior, steps=T_TRAIN + 1).synthesize(model, 0)


def test_schedulers_are_the_diffusers_ones(prior):
    assert isinstance(make_scheduler("ddim", prior.scheduler_config, 5), DDIMScheduler)
    ddpm = make_scheduler("ddpm", prior.scheduler_config, 5)
    assert isinstance(ddpm, DDPMScheduler) and len(ddpm.timesteps) == 5


def test_one_scheduler_factory_and_one_sampler(prior, model):
    """EGG and unguided sampling share the prior module's scheduler factory and sampler: at λ = 0 EGG's images are
    bit for bit the unguided samples (its energy is only evaluated)."""
    from sharedattr.synthesis import prior as prior_module
    from sharedattr.synthesis.prior import PriorError, sample_prior

    assert egg_module.make_scheduler is prior_module.make_scheduler
    assert prior.make_scheduler("ddpm").config == make_scheduler("ddpm", prior.scheduler_config).config
    with pytest.raises(PriorError, match="unknown scheduler"):
        make_scheduler("euler", prior.scheduler_config, 4)
    synth = EGG(prior=prior, scheduler="ddpm", steps=STEPS, guidance_scale=0.0, n_seeds=2, seed=3)
    unguided = synth.prior_samples(2, seed=3)
    assert torch.equal(unguided, synth.synthesize(model, 0).prior_images)
    assert torch.equal(unguided, sample_prior(prior, 2, steps=STEPS, scheduler="ddpm", seed=3))


def test_named_priors_are_loaded_once_per_device(prior, monkeypatch):
    calls = []

    def fake_load_prior(source, device=None):
        calls.append((source, device))
        return prior

    monkeypatch.setattr(egg_module, "load_prior", fake_load_prior)
    monkeypatch.setattr(egg_module, "_PRIORS", {})
    synth = EGG(prior="some-prior", steps=STEPS)
    assert synth.load_prior("cpu") is prior and synth.load_prior("cpu") is prior
    assert EGG(prior="some-prior").load_prior(torch.device("cpu")) is prior
    assert calls == [("some-prior", torch.device("cpu"))]


def test_a_prior_folder_runs_through_the_registry(prior, model, tmp_path, monkeypatch):
    """A diffusers UNet folder (+ scheduler_config.json) named in a spec, relative to the config's folder."""
    folder = tmp_path / "my-prior"
    prior.unet.save_pretrained(folder, safe_serialization=True)
    DDPMScheduler.from_config(prior.scheduler_config).save_config(folder)
    monkeypatch.setattr(egg_module, "_PRIORS", {})
    component = load_registry().get("synthesizer", "egg")
    params = component.validate_params(
        {"prior": "my-prior", "steps": STEPS, "n_seeds": 2}, context={"base_dir": str(tmp_path)}
    )
    assert params.prior == str(folder)
    synth = component.build(prior=params.prior, steps=STEPS, n_seeds=2)
    result = synth.synthesize(model, 1)
    expected = EGG(prior=prior, steps=STEPS, n_seeds=2).synthesize(model, 1)
    torch.testing.assert_close(result.images, expected.images)
    torch.testing.assert_close(result.prior_images, expected.prior_images)
    assert list(egg_module._PRIORS) == [(str(folder.resolve()), "cpu")]  # loaded once, cached


def test_unknown_prior_sources_are_rejected(tmp_path):
    component = load_registry().get("synthesizer", "egg")
    with pytest.raises(SpecError, match="neither a shipped prior"):
        component.validate_params({"prior": "no-such-prior"})
    with pytest.raises(SpecError, match="config file's folder"):
        component.validate_params({"prior": "missing"}, context={"base_dir": str(tmp_path)})
    assert component.validate_params({"prior": "missing"}, context={"check_files": False}).prior == "missing"
    with pytest.raises(ValueError, match="unknown diffusion prior"):
        load_prior("no-such-prior")


# -- the reference's sampling (sinzlab/energy-guided-diffusion) --------------------------------------------------
def test_the_reference_preset_and_explicit_fields():
    ref = EGG(prior="unused", preset="reference")
    assert (ref.scheduler, ref.timestep_spacing, ref.clip_x0, ref.output, ref.normalize) == (
        "ddpm",
        "linspace",
        False,
        "x0_estimate",
        "batch",
    )
    mixed = EGG(prior="unused", preset="reference", normalize="sample", output="sample")  # explicit fields win
    assert (mixed.scheduler, mixed.normalize, mixed.output) == ("ddpm", "sample", "sample")
    with pytest.raises(ValueError, match=r"(?s)preset.*'project' or 'reference'"):  # EGGParams' own check
        EGG(prior="unused", preset="paper")


def test_linspace_spacing_is_the_references_and_clipping_can_be_switched_off(prior):
    steps = 50
    scheduler = make_scheduler("ddpm", prior.scheduler_config, steps, "linspace", False)
    stride = (T_TRAIN - 1) / (steps - 1)  # the reference's space_timesteps for one section of 50
    assert scheduler.timesteps.tolist() == [round(i * stride) for i in range(steps)][::-1]
    assert scheduler.timesteps[0] == T_TRAIN - 1 and scheduler.timesteps[-1] == 0
    assert scheduler.config.clip_sample is False
    leading = make_scheduler("ddpm", {**prior.scheduler_config, "timestep_spacing": "leading"}, steps)
    assert leading.timesteps[0] == 980  # the shipped prior's own spacing never reaches 999


def test_the_x0_estimate_is_the_last_steps_before_its_guidance_update(prior, model, monkeypatch):
    import sharedattr.synthesis.prior as prior_module

    seen = []  # (x_prev, x0_hat) of every step of the one sampler
    original = prior_module.denoise_step
    monkeypatch.setattr(prior_module, "denoise_step", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1])
    kwargs = dict(prior=prior, steps=STEPS, n_seeds=2, seed=4, guidance_scale=3.0, scheduler="ddpm")
    estimate = EGG(output="x0_estimate", **kwargs).synthesize(model, 1)
    _, last_x0_hat = seen[-1]
    assert torch.allclose(estimate.prior_images, ((last_x0_hat + 1) / 2).clamp(0, 1).float())
    seen.clear()
    sample = EGG(output="sample", **kwargs).synthesize(model, 1)
    assert torch.allclose(sample.prior_images, ((seen[-1][0] + 1) / 2).clamp(0, 1).float())
    assert not torch.allclose(sample.prior_images, estimate.prior_images)  # the last update moved the sample


def test_pixel_units_and_alpha_bar_scale_the_step(prior):
    scheduler = make_scheduler("ddpm", prior.scheduler_config, 4)
    x = torch.zeros(3, 2, 8, 8)
    t = scheduler.timesteps[1]
    d = 2 * 8 * 8
    assert EGG(prior="unused").step_scale(0.5, scheduler, t, x) == 0.5
    assert EGG(prior="unused", guidance_units="pixel").step_scale(0.5, scheduler, t, x) == pytest.approx(0.5 * d**0.5)
    batch = EGG(prior="unused", guidance_units="pixel", normalize="batch").step_scale(0.5, scheduler, t, x)
    assert batch == pytest.approx(0.5 * (3 * d) ** 0.5)  # the unit-norm gradient spans the batch
    alpha = EGG(prior="unused", use_alpha_bar=True).step_scale(0.5, scheduler, t, x)
    assert alpha == pytest.approx(0.5 * float(1 - scheduler.alphas_cumprod[int(t)]) ** 0.5)
    # a pixel-unit λ moves each pixel by λ (root mean square) whatever the resolution
    g = torch.randn(1, 3, 32, 32)
    for size in (32, 256):
        g = torch.randn(1, 3, size, size)
        step = EGG(prior="unused", guidance_units="pixel").step_scale(0.02, scheduler, t, g) * g / g.norm()
        assert step.pow(2).mean().sqrt().item() == pytest.approx(0.02, rel=1e-5)


def test_reference_prior_samples_are_the_unguided_counterparts(prior, model):
    synth = EGG(prior=prior, preset="reference", steps=STEPS, n_seeds=2, seed=5, guidance_scale=0.0)
    unguided = synth.synthesize(model, 0).prior_images
    assert torch.allclose(synth.prior_samples(2, seed=5), unguided)
