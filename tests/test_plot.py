"""``sharedattr.plot``: figures of a comparison for users (drawn with the Agg backend, nothing shown)."""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch

import sharedattr
import sharedattr.plot
from sharedattr.report.figures import grey_base
from sharedattr.runtime.errors import UserError

matplotlib.use("Agg")


def _pixels(fig) -> np.ndarray:
    """``fig`` rendered by the Agg backend: ``[H, W, 3]`` ints."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(int)


def test_importing_sharedattr_does_not_import_matplotlib_or_the_plot_module():
    code = "import sys, sharedattr; print('matplotlib' in sys.modules, 'sharedattr.plot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert sharedattr.plot is sys.modules["sharedattr.plot"]  # reachable as an attribute


def test_overlay_draws_each_sign_on_the_image_and_returns_figure_and_axes():
    image = torch.full((1, 8, 8), 0.5)
    attribution = torch.zeros(8, 8)
    attribution[:4] = 1.0  # positive in the top half
    attribution[4:] = -1.0  # negative in the bottom half
    shown = {}
    for sign in sharedattr.plot.SIGNS:
        fig, ax = sharedattr.plot.overlay(image, attribution, sign=sign, alpha=0.7, title=sign)
        assert ax.figure is fig and ax.get_title() == sign
        assert len(ax.images) == 2  # the image, and the map over it
        heat = ax.images[1].get_array()
        shown[sign] = np.asarray(heat)
    assert (shown["positive"][:4] == 1).all() and (shown["positive"][4:] == 0).all()
    assert (shown["negative"][:4] == 0).all() and (shown["negative"][4:] == 1).all()
    assert (shown["absolute"] == 1).all()
    assert (shown["all"][:4] == 1).all() and (shown["all"][4:] == -1).all()
    fig, ax = sharedattr.plot.overlay(None, attribution)  # no image: the heat map alone
    assert len(ax.images) == 1
    top, bottom = (
        _pixels(fig)[fig.canvas.get_width_height()[1] // 3],
        _pixels(fig)[2 * fig.canvas.get_width_height()[1] // 3],
    )
    assert top[:, 0].max() > top[:, 2].min() and bottom[:, 2].max() > bottom[:, 0].min()  # red above, blue below


def test_overlay_draws_on_given_axes_and_refuses_bad_arguments():
    from matplotlib.figure import Figure

    fig = Figure()
    axes = fig.subplots(1, 2)
    got_fig, got_ax = sharedattr.plot.overlay(torch.rand(3, 6, 6), torch.randn(6, 6), axes[1], cmap="viridis")
    assert got_fig is fig and got_ax is axes[1] and got_ax.images[1].get_cmap().name == "viridis"
    with pytest.raises(UserError, match=r"overlay\(sign='signed'\): use one of 'all'"):
        sharedattr.plot.overlay(None, torch.randn(6, 6), sign="signed")
    with pytest.raises(UserError, match="differ in size"):
        sharedattr.plot.overlay(torch.rand(3, 8, 8), torch.randn(6, 6))


def test_show_pair_draws_one_row_per_method(tiny_config, tiny_data, tmp_path):
    from sharedattr.config.validation import validate_experiment
    from sharedattr.experiment.stages import fit_experiment

    model = fit_experiment(validate_experiment(tiny_config), tmp_path / "fit", progress=False).fit.model
    stimuli = sharedattr.load_stimuli(tiny_data / "stimuli" / "manifest.csv")
    result = sharedattr.compare(
        model,
        stimuli,
        responses=sharedattr.load_responses(tiny_data / "responses.csv"),
        neurons=["limbs"],
        methods=["parallel_backprop", "saliency"],
        metrics=["gini"],
        drivers_per_neuron=2,
        return_maps=True,
    )
    neuron, driver, reference = result.pairs[1]
    fig = sharedattr.plot.show_pair(result, neuron, driver)
    axes = fig.get_axes()
    assert len(axes) == 2 * 3  # the images, then one row per method; driver and reference columns
    assert [a.get_title() for a in axes[:2]] == [f"driver {driver}", f"reference {reference}"]
    assert [axes[i].get_ylabel() for i in (2, 4)] == ["parallel_backprop", "saliency"]
    k = result.pair_index(neuron, driver)
    shown = axes[5].images[0].get_array()  # the reference image (lightened grey) under saliency's reference map
    expected = grey_base(result.images.references[k])
    np.testing.assert_allclose(np.asarray(shown), expected)
    only = sharedattr.plot.show_pair(result, neuron, driver, methods=["saliency"], sign="absolute")
    assert len(only.get_axes()) == 2 * 2
    assert _pixels(only).std() > 0
    with pytest.raises(UserError, match=r"show_pair\(methods=\.\.\.\): 'occlusion'; the result has maps of"):
        sharedattr.plot.show_pair(result, neuron, driver, methods=["occlusion"])
    with pytest.raises(UserError, match="no pair of neuron 'limbs', driver 'nope'"):
        sharedattr.plot.show_pair(result, neuron, "nope")
    with pytest.raises(UserError, match="expected what sharedattr.compare"):
        sharedattr.plot.show_pair(result.table, neuron, driver)
