"""``sharedattr demo``: the whole method on in-silico neurons with known ground truth, offline, in minutes.

It renders a seeded stimulus set of bodies and objects with part masks
(:mod:`sharedattr.data.insilico`), simulates neurons tuned to body parts, and writes them as a
normal stimulus set, responses CSV, ground-truth ``neuron_parts.json`` and a TOML config.
That config is then run exactly as ``sharedattr run`` would: the readouts are fitted on the
shipped ``insilico_cnn`` backbone, each body neuron's strongest object drivers are matched to
bodies, ``parallel_backprop`` runs next to the Captum baselines, and every metric is scored,
localisation against the parts each driver/reference pair shares. The run ends with
``report.html``.
"""

from __future__ import annotations

from pathlib import Path

from sharedattr.data.insilico import DEFAULT_NEURONS, write_insilico
from sharedattr.runtime.io import atomic_write_text

DEMO_CONFIG = """\
# Written by `sharedattr demo`. Run it again with: sharedattr run {config_name} --out <dir>
name = "demo"
seed = {seed}
device = "cpu"
batch_size = 32
cache_dir = "feature-cache"   # keep the demo self-contained

[data]
stimuli = "stimuli/manifest.csv"
responses = "responses.csv"
neuron_parts = "neuron_parts.json"   # ground truth: the parts that drive each neuron
preferred_category = "bodies"

[backbone]
name = "insilico_cnn"      # a small CNN trained on these stimuli, shipped with sharedattr
layer = "block3"
input_size = {size}

[readout]
name = "ridge"
pooling = "none"

[matcher]
name = "cosine"

[selection]
neurons = ["limbs", "head", "body", "head_and_limbs"]
drivers_per_neuron = {drivers}

[[methods]]
name = "parallel_backprop"

[[methods]]
name = "parallel_backprop"
variant = "positive"
path = "ig"
n_steps = 16

[[methods]]
name = "saliency"

[[methods]]
name = "input_x_gradient"

[[methods]]
name = "integrated_gradients"
n_steps = 16
baseline = 0.5        # mid-grey

[[methods]]
name = "smoothgrad"
samples = 8

[[methods]]
name = "guided_backprop"

[[methods]]
name = "deep_lift"
baseline = 0.5

[[methods]]
name = "gradient_shap"
n_samples = 8

[[methods]]
name = "occlusion"
window = 8
stride = 4
baseline = 0.5

[[methods]]
name = "grad_cam"

[[metrics]]
name = "relevance_mass"

[[metrics]]
name = "pointing_game"

[[metrics]]
name = "relevance_rank"

[[metrics]]
name = "deletion"
steps = 10
baseline = 0.5

[[metrics]]
name = "insertion"
steps = 10
baseline = 0.5

[[metrics]]
name = "gini"

[[metrics]]
name = "randomisation"

[[synthesis]]
name = "gradient_ascent"
steps = 40
lr = 0.05
n_seeds = 2

[[synthesis]]
name = "egg"                # energy-guided diffusion on the shipped in-silico diffusion prior
steps = 30
guidance_scale = 5.0
n_seeds = 2

# Score the synthesised images on other models too (the EGG paper's protocol).
[[evaluators]]
label = "val-split1"        # the same architecture fitted on another data split
role = "val"
split_seed = 1

[[evaluators]]
label = "cross-block4"      # another layer of the network
role = "cross"
backbone = {{ name = "insilico_cnn", layer = "block4", input_size = {size} }}
"""


def make_demo_data(
    folder: Path,
    n_per_category: int = 60,
    size: int = 64,
    seed: int = 0,
    drivers: int = 3,
    repeats: int = 2,
    progress: bool = False,
) -> Path:
    """Write the in-silico data set (``stimuli/``, ``responses.csv``, ``neuron_parts.json``) and ``demo.toml``.

    Returns the config's path. ``drivers`` is the number of out-of-category drivers per neuron.
    """
    folder = Path(folder)
    write_insilico(folder, n_per_category, size, seed=seed, neurons=DEFAULT_NEURONS, repeats=repeats, progress=progress)
    config = folder / "demo.toml"
    atomic_write_text(config, DEMO_CONFIG.format(config_name=config.name, size=size, seed=seed, drivers=drivers))
    return config
