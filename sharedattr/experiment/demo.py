"""``sharedattr demo``: the whole method on in-silico neurons with known ground truth, offline, in minutes.

It renders a seeded stimulus set of bodies and objects with part masks
(:mod:`sharedattr.data.insilico`), simulates neurons tuned to body parts, and writes them as a
normal stimulus set, responses CSV, ground-truth ``neuron_parts.json`` and a TOML config.
That config is then run exactly as ``sharedattr run`` would: the readouts are fitted on the
shipped ``insilico_cnn`` backbone, each body neuron's strongest object drivers are matched to
bodies, ``parallel_backprop`` runs next to the Captum baselines, and every metric is scored,
localisation against the parts each driver/reference pair shares. The run ends with
``report.html``.

``sharedattr demo --out D`` writes ``D/data`` and ``D/results`` and never overwrites a file it did not write or one
that was changed since (:func:`prepare_demo`): run again with the same arguments, it reuses the data and the run
resumes; with other arguments, or after an edit, it stops and names the first file that differs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sharedattr.data.insilico import DEFAULT_NEURONS, VARIED_SCENES, SceneOptions, write_insilico
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.io import atomic_write_bytes, atomic_write_text
from sharedattr.runtime.run_folder import make_out_folder

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

# Every path method starts from the same black baseline (0) and takes 16 steps or samples, so
# the methods differ in what they weight, not in where they start (docs/benchmarks.md).
[[methods]]
name = "parallel_backprop"   # the default: s = w ⊙ z(ooc) ⊙ z(ref), mapped at the backbone output

[[methods]]
name = "parallel_backprop"   # the control: s = w, the neuron's own map on the same path
variant = "own"

[[methods]]
name = "colocation"          # the co-location control: own maps multiplied, no feature compared

[[methods]]
name = "saliency"

[[methods]]
name = "input_x_gradient"

[[methods]]
name = "integrated_gradients"
n_steps = 16
baseline = 0.0

[[methods]]
name = "smoothgrad"
samples = 16

[[methods]]
name = "guided_backprop"

[[methods]]
name = "deep_lift"
baseline = 0.0

[[methods]]
name = "gradient_shap"
n_samples = 16
baselines = [0.0]

[[methods]]
name = "occlusion"
window = 8
stride = 4
baseline = 0.0

[[methods]]
name = "grad_cam"

# What each map shows of the parts the pair shares (docs/methods.md, "Sharing metrics").
[[metrics]]
name = "shared_part_selectivity"

[[metrics]]
name = "reference_sensitivity"

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
    options: SceneOptions = VARIED_SCENES,
) -> Path:
    """Write the in-silico data set (``stimuli/``, ``responses.csv``, ``neuron_parts.json``) and ``demo.toml``.

    Returns the config's path. ``drivers`` is the number of out-of-category drivers per neuron. The scenes are
    rendered as ``options`` says (:class:`~sharedattr.data.insilico.SceneOptions`); by default
    (:data:`~sharedattr.data.insilico.VARIED_SCENES`) bodies lack pieces and objects carry zero to several body-like
    parts, so that pairs differ in which driving parts they share and the sharing metrics can tell methods apart;
    :data:`~sharedattr.data.insilico.PLAIN_SCENES` renders every body whole.
    """
    folder = Path(folder)
    write_insilico(
        folder,
        n_per_category,
        size,
        seed=seed,
        neurons=DEFAULT_NEURONS,
        repeats=repeats,
        progress=progress,
        options=options,
    )
    config = folder / "demo.toml"
    atomic_write_text(config, DEMO_CONFIG.format(config_name=config.name, size=size, seed=seed, drivers=drivers))
    return config


def prepare_demo(out: Path, n_per_category: int = 60, drivers: int = 3, progress: bool = False) -> tuple[Path, bool]:
    """The folders of ``sharedattr demo --out out``: ``out/data`` (the data set and ``demo.toml``) and
    ``out/results`` (the run); returns the config's path and whether every data file was already there.

    The demo never overwrites a file it did not write or one changed since: the data set is generated into a
    temporary folder and compared, file by file, with ``out/data``. A file that is there with the same bytes is
    kept (an earlier demo with the same arguments: its run in ``out/results`` then resumes); a missing one is
    written (a new folder, or a demo killed while writing its data). One file that differs (other arguments,
    an edit) is a :class:`UserError` naming the folder and the first such file, and nothing is written. Data that
    had to be written next to a non-empty ``out/results`` is refused too: those results are not this data's.
    Other files in ``out`` are left alone.
    """
    out = make_out_folder(out)
    data, results = out / "data", out / "results"
    with tempfile.TemporaryDirectory(prefix="sharedattr-demo-") as tmp:
        config = make_demo_data(Path(tmp), n_per_category=n_per_category, drivers=drivers, progress=progress)
        missing = []
        for made in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            name = made.relative_to(tmp)
            there = data / name
            if not there.exists() and not there.is_symlink():
                missing.append((made, there))
            elif not there.is_file() or there.read_bytes() != made.read_bytes():
                raise UserError(
                    f"demo folder {out} holds data that differ from what these arguments generate (first: "
                    f"{there.relative_to(out)}), made by another `sharedattr demo` or changed since; the demo does "
                    "not overwrite them: choose another --out"
                )
        if missing and results.is_dir() and any(results.iterdir()):
            raise UserError(
                f"demo folder {out}: {results.relative_to(out)} holds files, but the demo data they would come "
                f"from are not all in {data.relative_to(out)} (first missing: {missing[0][1].relative_to(out)}); "
                "the demo does not mix its run with other results: choose another --out"
            )
        for made, there in missing:
            atomic_write_bytes(there, made.read_bytes())
    return data / config.name, not missing
