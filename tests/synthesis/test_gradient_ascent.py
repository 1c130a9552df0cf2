"""The ``gradient_ascent`` synthesizer and its parts: preconditioners, random transforms, regularisers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sharedattr.runtime.errors import SpecError
from sharedattr.synthesis.energies import build_energy
from sharedattr.synthesis.preconditioning import (
    fourier_precondition,
    fourier_scale,
    gaussian_blur,
)
from sharedattr.synthesis.regularizers import lp_norm, total_variation
from sharedattr.synthesis.transforms import RandomTransform, jitter, random_crop

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def gabor(h: int = 16, w: int = 16, wavelength: float = 8.0, sigma: float = 4.0) -> torch.Tensor:
    """A smooth planted pattern ``[H, W]``: a Gabor patch at the centre."""
    y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    return torch.exp(-(x**2 + y**2) / (2 * sigma**2)) * torch.cos(2 * math.pi * x / wavelength)


class Planted(nn.Module):
    """Neurons ``r_k(x) = φ(⟨pattern_k, x − 0.5⟩)``: patterns ``[N, C, H, W]``, ``φ`` identity or ``tanh``."""

    def __init__(self, patterns: torch.Tensor, saturate: bool = False) -> None:
        super().__init__()
        self.patterns = nn.Parameter(patterns, requires_grad=False)
        self.in_channels = patterns.shape[1]
        self.input_size = tuple(patterns.shape[-2:])
        self.saturate = saturate

    def forward(self, x):
        r = torch.einsum("bchw,nchw->bn", x - 0.5, self.patterns)
        return torch.tanh(r) if self.saturate else r


def gabor_neuron(channels: int = 1) -> Planted:
    return Planted(gabor()[None, None].expand(1, channels, -1, -1).clone())


def random_neurons(n: int = 1, c: int = 1, h: int = 16, w: int = 16, seed: int = 3, **kwargs) -> Planted:
    return Planted(torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed)), **kwargs)


def build(registry, **params):
    return registry.build("synthesizer", "gradient_ascent", **params)


# -- the optimisation ---------------------------------------------------------------------
@pytest.mark.parametrize("precondition", ["blur", "fourier", "none"])
def test_response_rises_monotonically_enough(registry, precondition):
    model = gabor_neuron()
    result = build(registry, steps=60, n_seeds=3, precondition=precondition).synthesize(model, 0)
    history = result.history  # [steps, seeds]
    assert history.shape == (60, 3)
    mean = history.mean(1)
    running_mean = mean.cumsum(0) / torch.arange(1, 61)
    assert (running_mean.diff() > 0).all()
    optimum = model.patterns.clamp(min=0).sum() * 0.5  # every pixel at 0 or 1, by the sign of the pattern
    initial, final = mean[0], result.responses.mean()
    assert final - initial > 0.5 * (optimum - initial)
    tolerance = 1e-3 * (optimum - initial)
    assert ((mean.diff() >= -tolerance).float().mean() >= 0.9).item()


def test_random_transforms_still_raise_the_response(registry):
    model = gabor_neuron()
    result = build(registry, steps=60, n_seeds=2, jitter=1, crop_scale=0.9).synthesize(model, 0)
    assert (result.responses > result.history[:5].mean(0) + 1.0).all()


def test_sgd_reaches_the_constrained_optimum(registry):
    model = random_neurons()
    result = build(registry, steps=100, optimizer="sgd", norm=2.0, clip=False, precondition="none").synthesize(model, 0)
    optimum = 2.0 * model.patterns.norm()  # x* = 0.5 + 2 w / ‖w‖
    assert result.responses.item() > 0.99 * optimum.item()


def test_images_fit_the_model_input_and_responses_match(registry):
    model = random_neurons(n=2, c=3, h=9, w=11)  # odd, non-square, colour
    result = build(registry, steps=5, n_seeds=2, precondition="fourier", jitter=2, crop_scale=0.5).synthesize(model, 1)
    assert result.images.shape == (2, 3, 9, 11)
    torch.testing.assert_close(result.responses, model(result.images)[:, 1])


def test_norm_is_fixed_and_clip_keeps_pixels_in_range(registry):
    model = random_neurons()
    result = build(registry, steps=20, n_seeds=3, lr=0.2, norm=10.0, clip=False).synthesize(model, 0)
    torch.testing.assert_close((result.images - 0.5).flatten(1).norm(dim=1), torch.full((3,), 10.0))
    assert result.images.min() < 0 or result.images.max() > 1  # the norm alone does not keep pixels in range
    clipped = build(registry, steps=20, n_seeds=3, lr=0.2, norm=10.0, clip=True).synthesize(model, 0).images
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert ((clipped - 0.5).flatten(1).norm(dim=1) <= 10.0 + 1e-4).all()


def test_runs_are_deterministic_given_the_seed(registry):
    model = gabor_neuron()
    params = dict(steps=10, n_seeds=2, jitter=2, crop_scale=0.8)
    a = build(registry, **params).synthesize(model, 0)
    b = build(registry, **params).synthesize(model, 0)
    c = build(registry, **params, seed=1).synthesize(model, 0)
    assert torch.equal(a.images, b.images) and torch.equal(a.history, b.history)
    assert not torch.allclose(a.images, c.images)
    assert not torch.allclose(a.images[0], a.images[1])  # the seeds are independent initialisations


def test_total_variation_regulariser_smooths_the_image(registry):
    model = random_neurons()  # white-noise pattern: its MEI is rough
    params = dict(steps=40, n_seeds=2, precondition="none")
    rough = build(registry, **params).synthesize(model, 0).images
    smooth = build(registry, **params, tv_weight=2000.0).synthesize(model, 0).images
    assert (total_variation(smooth) < 0.5 * total_variation(rough)).all()


def test_lp_regulariser_shrinks_the_contrast(registry):
    model = random_neurons()
    params = dict(steps=40, n_seeds=2)
    free = build(registry, **params).synthesize(model, 0).images
    shrunk = build(registry, **params, lp_weight=100.0, lp_p=1.0).synthesize(model, 0).images
    assert (lp_norm(shrunk, 1.0) < 0.5 * lp_norm(free, 1.0)).all()


def test_plateau_stops_early_on_a_saturating_neuron(registry):
    model = random_neurons(saturate=True)  # tanh: the response saturates at 1
    result = build(registry, steps=500, n_seeds=2, patience=5).synthesize(model, 0)
    steps_run = result.history.shape[0]
    assert 5 < steps_run < 500
    assert result.cost["steps"] == float(steps_run)
    assert (result.responses > 0.99).all()
    full = build(registry, steps=30, n_seeds=2).synthesize(model, 0)  # no patience: every step runs
    assert full.history.shape[0] == 30 and full.cost["steps"] == 30.0


@pytest.mark.parametrize("patience", [None, 3])
def test_cost_counts_the_calls_actually_made(registry, patience):
    model = random_neurons(saturate=True)
    result = build(registry, steps=60, n_seeds=3, patience=patience).synthesize(model, 0)
    steps_run = result.history.shape[0]
    assert steps_run == result.cost["steps"] and (steps_run == 60) == (patience is None)
    assert result.cost["forward_calls"] == steps_run + 1
    assert result.cost["backward_calls"] == steps_run
    assert result.cost["model_images"] == 3 * (steps_run + 1)
    assert result.cost["denoiser_calls"] == 0 and result.cost["wall_s"] > 0
    assert all(isinstance(v, float) for v in result.cost.values())


def test_reconstruction_energy_is_minimised(registry):
    model = random_neurons(n=6, h=12, w=12)
    reference = torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(7))
    energy = build_energy("reconstruction").bind(model, 0, reference)
    params = dict(energy={"name": "reconstruction"}, n_seeds=2, precondition="none")
    start = build(registry, steps=1, lr=1e-9, **params).synthesize(model, 0, reference=reference).images
    result = build(registry, steps=150, lr=0.02, **params).synthesize(model, 0, reference=reference)
    with torch.no_grad():
        before, after = energy(start).energy, energy(result.images).energy
    assert (after < 0.05 * before).all()
    assert result.cost["forward_calls"] == 150 + 2  # + the reference's responses, computed once
    with pytest.raises(ValueError, match="reference"):
        build(registry, steps=1, **params).synthesize(model, 0)


def test_params_are_validated(registry):
    component = registry.get("synthesizer", "gradient_ascent")
    for bad in (
        {"energy": "no_such_energy"},
        {"crop_scale": 0.0},
        {"crop_scale": 1.5},
        {"jitter": -1},
        {"precondition": "wavelet"},
        {"patience": 0},
        {"lp_p": 0.5},
    ):
        with pytest.raises(SpecError):
            component.validate_params(bad)
    params = component.validate_params({"energy": {"name": "reconstruction", "neurons": [0, 1]}})
    assert params.energy.name == "reconstruction"


def test_gaussian_blur_stays_importable_from_the_synthesizer_module():
    from sharedattr.synthesis.gradient_ascent import gaussian_blur as reexported

    assert reexported is gaussian_blur


# -- preconditioners ------------------------------------------------------------------------
def _sinusoid(n: int, ky: int, kx: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    return torch.cos(2 * math.pi * (ky * y + kx * x) / n)[None, None]


@pytest.mark.parametrize("n", [15, 16])
@pytest.mark.parametrize("decay", [1.0, 2.0])
def test_fourier_preconditioner_damps_sinusoids_by_their_frequency(n, decay):
    for (ky, kx), radius in {(0, 1): 1, (1, 0): 1, (0, 3): 3, (3, 4): 5, (4, 3): 5}.items():
        wave = _sinusoid(n, ky, kx)
        out = fourier_precondition(wave, decay)
        torch.testing.assert_close(out, wave * radius**-decay, atol=1e-10, rtol=0)
    constant = torch.ones(1, 1, n, n, dtype=torch.float64)
    torch.testing.assert_close(fourier_precondition(constant, decay), constant)  # low frequencies pass
    assert fourier_scale(n, n, decay).max() == 1.0


def test_fourier_preconditioner_with_zero_decay_is_the_identity():
    x = torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(0))  # odd sizes
    out = fourier_precondition(x, 0.0)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_fourier_preconditioner_keeps_shape_for_odd_non_square_images():
    x = torch.randn(2, 3, 7, 10, generator=torch.Generator().manual_seed(0))
    out = fourier_precondition(x, 1.0)
    assert out.shape == x.shape
    assert out.norm() < x.norm()  # never amplifies, damps all but the lowest frequencies


def test_gaussian_blur_with_zero_sigma_is_the_identity_and_damps_a_checkerboard():
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gaussian_blur(x, 0.0), x)
    checker = ((torch.arange(9)[:, None] + torch.arange(9)[None, :]) % 2).float()[None, None] - 0.5
    assert gaussian_blur(checker, 1.0).abs().max() < 0.05 * checker.abs().max()
    constant = torch.full((1, 2, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur(constant, 1.0), constant)


# -- random transforms -------------------------------------------------------------------
def test_transforms_are_deterministic_given_the_seed_and_keep_shapes():
    x = torch.rand(3, 2, 10, 12, generator=torch.Generator().manual_seed(1))

    def draw(seed, **kwargs):
        return RandomTransform(generator=torch.Generator().manual_seed(seed), **kwargs)(x)

    for kwargs in ({"jitter": 2}, {"crop_scale": 0.6}, {"jitter": 3, "crop_scale": 0.8}):
        a, b, c = draw(5, **kwargs), draw(5, **kwargs), draw(6, **kwargs)
        assert a.shape == x.shape
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
    assert RandomTransform().identity and torch.equal(RandomTransform(crop_scale=1.0)(x), x)


def test_jitter_rolls_each_image_and_lets_gradients_through():
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = jitter(x, 2, torch.Generator().manual_seed(0))
    for img, rolled in zip(x, out):  # a roll permutes the pixels
        torch.testing.assert_close(img.flatten().sort().values, rolled.flatten().sort().values)
    assert not torch.equal(out, x)
    (out * torch.arange(36.0).view(1, 1, 6, 6)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_random_crop_zooms_into_a_window():
    x = torch.arange(64.0).view(1, 1, 8, 8).expand(2, 1, 8, 8)
    out = random_crop(x, 0.5, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.min() >= x.min() and out.max() <= x.max()
    assert (out.flatten(1).amax(1) - out.flatten(1).amin(1) < 0.6 * (x.max() - x.min())).all()  # a smaller range


# -- regularisers ------------------------------------------------------------------------
def test_total_variation_known_values():
    a = torch.tensor([[0.0, 0.5], [0.25, 0.25]])  # Δx: 0.5, 0; Δy: 0.25, −0.25
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # Δx: 1, 1; Δy: 1, 1
    x = torch.stack([a, b])[:, None]
    torch.testing.assert_close(total_variation(x), torch.tensor([0.25 + 0.25, 2.0]))
    torch.testing.assert_close(total_variation(x, squared=True), torch.tensor([0.125 + 0.0625, 2.0]))
    torch.testing.assert_close(total_variation(torch.full((2, 3, 5, 4), 0.7)), torch.zeros(2))
    torch.testing.assert_close(total_variation(torch.tensor([[[[0.0, 1.0, 3.0]]]])), torch.tensor([1.5]))  # one row


def test_lp_norm_known_values():
    x = 0.5 + torch.tensor([[3.0, -4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]).view(2, 1, 2, 2)
    torch.testing.assert_close(lp_norm(x), torch.tensor([5.0, 2.0]))
    torch.testing.assert_close(lp_norm(x, p=1.0), torch.tensor([7.0, 4.0]))
    torch.testing.assert_close(lp_norm(x, p=3.0), torch.tensor([91.0 ** (1 / 3), 4.0 ** (1 / 3)]))
    grey = torch.full((1, 1, 3, 3), 0.5, requires_grad=True)
    lp_norm(grey).sum().backward()
    assert torch.isfinite(grey.grad).all()  # differentiable at mid-grey


# -- synthesis -------------------------------------------------------------------------
class PixelNeuron(nn.Module):
    input_size = (12, 12)
    in_channels = 1

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(
            torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(3)), requires_grad=False
        )

    def forward(self, x):
        return (x * self.w).sum((1, 2, 3))[:, None]


def test_gradient_ascent_raises_response_monotonically_enough(registry):
    model = PixelNeuron()
    synth = registry.build("synthesizer", "gradient_ascent", steps=60, lr=0.05, norm=2.0, clip=False, n_seeds=3)
    result = synth.synthesize(model, 0)
    history = result.history  # [steps, seeds]
    assert history.shape == (60, 3)
    gain = history[-1] - history[0]
    assert (gain > 0).all()
    largest_drop = (history[:-1] - history[1:]).clamp(min=0).amax(0)
    assert (largest_drop < 0.05 * gain).all()
    norms = (result.images - 0.5).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((3,), 2.0))
    assert result.cost["forward_calls"] == 61 and result.cost["backward_calls"] == 60


def test_gradient_ascent_reaches_the_constrained_optimum_with_sgd(registry):
    model = PixelNeuron()
    synth = registry.build(
        "synthesizer", "gradient_ascent", steps=100, lr=0.05, optimizer="sgd", norm=2.0, clip=False, blur_sigma=0.0
    )
    result = synth.synthesize(model, 0)
    optimum = 0.5 * model.w.sum() + 2.0 * model.w.norm()  # x* = 0.5 + 2 w / |w|
    assert result.responses.item() > 0.99 * optimum.item()


def test_gradient_ascent_clips_to_pixel_range(registry):
    result = registry.build("synthesizer", "gradient_ascent", steps=20, lr=0.5).synthesize(PixelNeuron(), 0)
    assert result.images.min() >= 0 and result.images.max() <= 1


def separable_blur(x: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """An independent Gaussian blur: a normalised kernel of ``radius`` pixels, reflect padding, two 1-D passes."""
    import torch.nn.functional as F

    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@pytest.mark.parametrize(
    ("shape", "sigma", "radius"),
    [((2, 3, 20, 24), 1.0, 3), ((1, 1, 16, 16), 2.5, 8), ((2, 1, 5, 7), 1.0, 3), ((1, 2, 3, 9), 2.0, 2)],
)
def test_the_blur_preconditioner_is_a_gaussian_of_radius_ceil_3_sigma(shape, sigma, radius):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gaussian_blur(x, sigma), separable_blur(x, sigma, radius), atol=1e-6, rtol=0)


# -- several neurons in one loop (as egg) ---------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        dict(steps=25),
        dict(steps=25, jitter=2, crop_scale=0.8, tv_weight=5.0, lp_weight=0.5, optimizer="sgd", lr=0.5),
        dict(steps=300, patience=4, precondition="fourier"),  # each neuron stops at its own plateau
    ],
)
def test_neurons_optimised_together_equal_one_at_a_time(registry, params):
    """One loop over 4 neurons × 3 seeds gives each neuron the images, responses and history it gets alone. On one
    thread the einsum model's rows do not depend on the batch, so they are bit-identical."""
    model = random_neurons(n=4, saturate="patience" in params)
    model.patterns.data *= torch.tensor([0.02, 0.05, 0.2, 1.0])[:, None, None, None]  # saturating at other steps
    synth = build(registry, n_seeds=3, seed=5, neuron_batch=4, **params)
    neurons = [2, 0, 3, 1]
    together = synth.synthesize_many(model, neurons)
    for neuron, result in zip(neurons, together):
        alone = synth.synthesize(model, neuron)
        assert torch.equal(result.images, alone.images) and torch.equal(result.responses, alone.responses)
        assert torch.equal(result.history, alone.history)
        assert result.cost["steps"] == alone.cost["steps"] == len(alone.history)
    if "patience" in params:
        assert len({len(r.history) for r in together}) > 1  # the plateau stops them at different steps
        assert all(len(r.history) < 300 for r in together)


@pytest.mark.parametrize("patience", [None, 3])
def test_cost_of_a_loop_is_shared_per_neuron_as_eggs(registry, patience):
    """The loop's calls divided by its neurons, as egg's: one model pass per step for all 3 neurons × 2 seeds."""
    model = random_neurons(n=3, saturate=True)
    results = build(registry, steps=40, n_seeds=2, neuron_batch=3, patience=patience).synthesize_many(model, [0, 1, 2])
    loop_steps = max(r.cost["steps"] for r in results)  # the loop runs until its last neuron stops
    for r in results:
        assert r.cost["neurons_per_loop"] == 3.0 and r.cost["steps"] == len(r.history)
        assert r.cost["forward_calls"] == pytest.approx((loop_steps + 1) / 3)
        assert r.cost["backward_calls"] == pytest.approx(loop_steps / 3)
        assert r.cost["model_images"] == pytest.approx(2 * (loop_steps + 1))  # 6 images per call, a third each
    alone = build(registry, steps=40, n_seeds=2, patience=patience).synthesize(model, 0).cost
    assert alone["neurons_per_loop"] == 1.0 and alone["forward_calls"] == alone["steps"] + 1


def test_a_loop_of_neuron_batch_neurons_in_a_run(registry):
    from sharedattr.experiment.synthesize import neuron_loops

    assert neuron_loops(build(registry, neuron_batch=2), [5, 1, 7]) == [[5, 1], [7]]
    assert neuron_loops(build(registry), [5, 1]) == [[5], [1]]  # the default: one neuron at a time
    with pytest.raises(SpecError, match="neuron_batch"):
        build(registry, neuron_batch=0)


def test_iterates_at_a_step_are_the_images_of_a_run_that_long(registry):
    """Seed s's iterate after k_s updates: the final images of a run of k_s steps, and the response history[k_s]
    records (no transforms: the history is the response to the iterate itself)."""
    model = random_neurons(n=2)
    synth = build(registry, steps=30, n_seeds=3, seed=4)
    full = synth.synthesize(model, 1)
    steps = [0, 7, 30]
    iterates = synth.iterates_at(model, 1, steps)
    assert iterates.shape == full.images.shape
    for s, k in enumerate(steps):
        if k == 0:  # the start: the seeded initialisation, before any update
            torch.testing.assert_close(model(iterates[s : s + 1])[0, 1], full.history[0, s])
            continue
        shorter = build(registry, steps=k, n_seeds=3, seed=4).synthesize(model, 1)
        assert torch.equal(iterates[s], shorter.images[s])
        recorded = full.responses[s] if k == 30 else full.history[k, s]
        torch.testing.assert_close(model(iterates[s : s + 1])[0, 1], recorded)
    with pytest.raises(ValueError, match="3 seeds but 2 steps"):
        synth.iterates_at(model, 1, [1, 2])
