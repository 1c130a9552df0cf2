"""Untrusted files: no loading path unpickles, and no config imports or executes code.

Every hostile file here would create a marker file if it were unpickled (or a YAML tag
constructed); each test checks the marker does not exist afterwards. The loading paths
(found by grepping the package for ``torch.load``, ``pickle``, ``np.load``, ``yaml.load``,
``load_file``, ``safe_open``, ``importlib``, ``eval(``, ``exec(``):

- backbone ``weights_file`` (torchvision and insilico_cnn): safetensors, or ``torch.load``
  with ``weights_only=True``;
- a saved model (``sharedattr.load_model``, ``sharedattr fit``'s ``model/``): ``model.json``
  (JSON) and ``readout.safetensors``;
- the feature cache ``features-<key>-<sha256>.npy``: its header read by ``numpy.lib.format``, its data
  memory-mapped as float32 (``np.memmap``), after its bytes matched the SHA-256 in its name;
- responses ``.npy``: ``np.load(allow_pickle=False)``;
- the diffusion prior folder: ``diffusion_pytorch_model.safetensors`` only, never ``.bin``;
- work-store items and the run folder's ``maps.safetensors``: safetensors;
- configs: ``yaml.safe_load``, ``tomllib``, ``json``; component names only select registered
  components.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sharedattr.config.files import load_experiment
from sharedattr.runtime.errors import ConfigError, SpecError, UserError
from toml_writer import toml_text

TINY = {"model": "resnet18", "layer": "layer1", "input_size": 32}


class Marker:
    """Unpickling this creates ``path``: the proof that a loader unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def raw_pickle(path: Path, marker: Path) -> Path:
    """A plain pickle (the format of old ``torch.save`` and of ``.bin``/``.pkl`` checkpoints)."""
    path.write_bytes(pickle.dumps({"conv1.weight": Marker(marker)}))
    return path


def torch_zip_pickle(path: Path, marker: Path) -> Path:
    """A current ``torch.save`` file (zip + pickle) holding an object whose unpickling runs code."""
    torch.save({"conv1.weight": torch.zeros(1), "evil": Marker(marker)}, path)
    return path


HOSTILE_WEIGHTS = {
    "raw pickle .pt": ("evil.pt", raw_pickle),
    "raw pickle .pth": ("evil.pth", raw_pickle),
    "torch.save zip .pt": ("evil.pt", torch_zip_pickle),
    "pickle named .safetensors": ("evil.safetensors", raw_pickle),
    "pickle named .bin": ("evil.bin", raw_pickle),
}


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "UNPICKLED"
    yield path
    assert not path.exists(), "a hostile file was unpickled"


# -- backbone weights ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", HOSTILE_WEIGHTS)
@pytest.mark.parametrize("backbone", ["torchvision", "insilico_cnn"])
def test_backbone_weights_file_refuses_pickles(registry, tmp_path, marker, case, backbone):
    name, write = HOSTILE_WEIGHTS[case]
    path = write(tmp_path / name, marker)
    params = dict(TINY) if backbone == "torchvision" else {"layer": "block1", "input_size": 16}
    refused = r"(cannot (load|read) weights file|does not hold a state dict|not a state dict)"
    with pytest.raises(UserError, match=refused):
        registry.build("backbone", backbone, weights_file=path, **params)


# -- saved models ----------------------------------------------------------------------------------
@pytest.fixture
def saved_model(registry, tmp_path) -> Path:
    """A model folder as ``sharedattr fit`` writes it (random backbone, zero ridge readout)."""
    from sharedattr.encoding.model import EncodingModel
    from sharedattr.encoding.store import save_model
    from sharedattr.plugins.specs import BackboneSpec, ReadoutSpec

    backbone_spec = BackboneSpec(name="torchvision", **TINY)
    readout_spec = ReadoutSpec(name="ridge")
    backbone = backbone_spec.build(registry=registry)
    readout = readout_spec.build(registry=registry)
    readout.initialize(backbone.latent_shape, 2)
    return save_model(EncodingModel(backbone, readout), backbone_spec, readout_spec, ["a", "b"], tmp_path / "model")


def test_saved_model_round_trips_then_refuses_a_pickled_readout(saved_model, marker):
    from sharedattr.encoding.store import load_model

    assert load_model(saved_model).neuron_ids == ["a", "b"]
    raw_pickle(saved_model / "readout.safetensors", marker)
    with pytest.raises(UserError, match="cannot load the saved readout .*readout.safetensors"):
        load_model(saved_model)
    # checkpoints in other formats beside it are never looked at
    raw_pickle(saved_model / "readout.pt", marker)
    raw_pickle(saved_model / "readout.bin", marker)
    with pytest.raises(UserError):
        load_model(saved_model)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_saved_model_description_cannot_point_at_a_pickle(saved_model, tmp_path, marker):
    from sharedattr.encoding.store import description_checksum, load_model

    def forged(meta):  # an edit whose checksum is recomputed, as anyone can: still never unpickled
        return json.dumps({**meta, "checksum": description_checksum(meta)})

    meta = json.loads((saved_model / "model.json").read_text())
    meta["backbone"]["weights_file"] = str(raw_pickle(tmp_path / "evil.pt", marker))
    (saved_model / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="model.json does not match its checksum"):
        load_model(saved_model)
    (saved_model / "model.json").write_text(forged(meta))
    with pytest.raises(UserError, match="cannot load weights file"):
        load_model(saved_model)
    # a model.json naming an import path instead of a registered component
    meta["backbone"] = {"name": "os:system", "command": f"touch {marker}"}
    (saved_model / "model.json").write_text(forged(meta))
    with pytest.raises(UserError, match="unknown backbone 'os:system'"):
        load_model(saved_model)


def test_a_damaged_saved_readout_is_fitted_again_not_trusted(saved_model, marker):
    from sharedattr.encoding.store import description_checksum, saved_digest

    meta = {**json.loads((saved_model / "model.json").read_text()), "fit_digest": "abc"}
    (saved_model / "model.json").write_text(json.dumps({**meta, "checksum": description_checksum(meta)}))
    assert saved_digest(saved_model) == "abc"
    raw_pickle(saved_model / "readout.safetensors", marker)
    with pytest.warns(UserWarning, match="damaged, half-saved"):
        assert saved_digest(saved_model) is None  # fit_experiment(reuse=True) and evaluators then refit


# -- data files --------------------------------------------------------------------------------------
def test_feature_cache_never_unpickles(tiny_config, tmp_path, marker):
    """A pickle (or an object array) planted under the feature cache's file name, with the SHA-256 of its bytes in
    the name as a cache file carries it, is not unpickled: it is replaced, with a warning."""
    import hashlib

    from sharedattr.config.validation import validate_experiment
    from sharedattr.data import StimulusSet
    from sharedattr.data.features import FeatureCache, extract_features, feature_key
    from sharedattr.plugins.loading import get_registry

    spec = validate_experiment(tiny_config)
    stimuli = StimulusSet.load(spec.data.stimuli)
    backbone = spec.backbone.build(get_registry())
    backbone_spec = spec.backbone.model_dump(mode="json")
    key = feature_key(backbone_spec, stimuli.content_digest(), tuple(backbone.input_size), backbone.in_channels)
    cache = tmp_path / "cache"
    cache.mkdir()
    planted = tmp_path / "planted.npy"
    for write in (
        lambda: raw_pickle(planted, marker),
        lambda: np.save(planted, np.array([Marker(marker)] * len(stimuli), dtype=object), allow_pickle=True),
    ):
        for old in cache.iterdir():
            old.unlink()
        write()
        named = cache / f"features-{key}-{hashlib.sha256(planted.read_bytes()).hexdigest()}.npy"
        planted.rename(named)
        with pytest.warns(UserWarning, match=f"feature cache file {named} is damaged"):
            latents, hit = extract_features(backbone, stimuli, cache=FeatureCache(cache, backbone_spec), progress=False)
        assert not hit and latents.dtype == torch.float32  # recomputed over it (nothing is ever unpickled)
        assert not marker.exists() and not named.exists()
        assert extract_features(backbone, stimuli, cache=FeatureCache(cache, backbone_spec), progress=False)[
            1
        ]  # and the recomputed file replaced it


@pytest.mark.parametrize("kind", ["raw pickle", "object array"])
def test_npy_responses_never_unpickle(tmp_path, marker, kind):
    from sharedattr.data import load_responses
    from sharedattr.runtime.errors import DataError

    path = tmp_path / "r.npy"
    if kind == "raw pickle":
        raw_pickle(path, marker)
    else:
        np.save(path, np.array([[Marker(marker), 1.0]] * 2, dtype=object), allow_pickle=True)
    (tmp_path / "ids.txt").write_text("s0\ns1\n")
    with pytest.raises(DataError, match="holds Python objects \\(pickled data\\); sharedattr never unpickles"):
        load_responses(path, ids_path=tmp_path / "ids.txt")


def test_diffusion_prior_reads_only_safetensors(tmp_path, marker):
    from sharedattr.synthesis.prior import PriorError, load_prior

    folder = tmp_path / "prior"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
    raw_pickle(folder / "diffusion_pytorch_model.bin", marker)
    raw_pickle(folder / "diffusion_pytorch_model.ckpt", marker)
    with pytest.raises(PriorError, match="only diffusion_pytorch_model.safetensors is read, never pickled weights"):
        load_prior(folder)
    raw_pickle(folder / "diffusion_pytorch_model.safetensors", marker)  # a pickle under the safetensors name
    with pytest.raises(PriorError, match="cannot load the UNet"):
        load_prior(folder)


def test_work_store_recomputes_over_a_planted_pickle(tmp_path, marker):
    from sharedattr.runtime.work_store import WorkStore

    store = WorkStore(tmp_path / "work")
    (tmp_path / "work").mkdir()
    raw_pickle(store.path("maps", "k"), marker)
    with pytest.warns(UserWarning, match="is damaged"):
        out = store.get_or_compute("maps", "k", lambda: {"x": torch.ones(2)})
    assert torch.equal(out["x"], torch.ones(2)) and store.misses == 1 and store.hits == 0
    again = WorkStore(tmp_path / "work")  # the recomputed item replaced the pickle
    assert torch.equal(again.get_or_compute("maps", "k", lambda: {"x": torch.zeros(2)})["x"], torch.ones(2))
    assert again.hits == 1


def test_run_folder_maps_are_never_unpickled(tmp_path, marker):
    from sharedattr.report.rundir import RunDir

    raw_pickle(tmp_path / "maps.safetensors", marker)
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; the marker check is the point
        _ = RunDir(tmp_path).maps


# -- configs cannot import code ------------------------------------------------------------------------
IMPORT_LIKE_NAMES = [
    "os.system",
    "os:system",
    "this",
    "this:s",
    "builtins.__import__",
    "sharedattr.testing:TinyBackbone",
    "pathlib:Path.touch",
    "__import__('this')",
]
COMPONENT_FIELDS = {
    "backbone": "backbone",
    "readout": "readout",
    "matcher": "matcher",
    "methods": "method",
    "metrics": "metric",
    "synthesis": "synthesizer",
}


@pytest.fixture
def no_new_imports():
    """Fails the test if ``this`` (a module with a side effect on import: it prints) got imported."""
    assert "this" not in sys.modules
    yield
    assert "this" not in sys.modules, "a config imported a module"


@pytest.mark.parametrize("name", IMPORT_LIKE_NAMES)
def test_component_names_are_never_imported(tiny_config, tmp_path, marker, no_new_imports, name):
    config = dict(tiny_config)
    for field in COMPONENT_FIELDS:
        spec = {"name": name, "command": f"touch {marker}"}
        config[field] = [spec] if field in ("methods", "metrics", "synthesis") else spec
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    message = str(info.value)
    assert message.startswith(f"invalid spec in {path}")
    for field, kind in COMPONENT_FIELDS.items():
        loc = f"{field}[0] ({name}).name" if field in ("methods", "metrics", "synthesis") else f"{field}.name"
        assert f"{loc}: unknown {kind} {name!r}" in message


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/apply:pathlib.Path.touch ['{marker}']",
        "!!python/object/new:pathlib.Path ['{marker}']",
        "!!python/name:this.s",
        "!!python/module:this",
        "!python/object/apply:os.system ['touch {marker}']",
    ],
)
def test_yaml_python_tags_are_refused(tiny_config, tmp_path, marker, no_new_imports, tag):
    import yaml

    path = tmp_path / "exp.yaml"
    text = yaml.safe_dump(dict(tiny_config, name="PLACEHOLDER"))
    path.write_text(text.replace("PLACEHOLDER", tag.format(marker=marker)))
    with pytest.raises(UserError) as info:
        load_experiment(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, (ConfigError, SpecError))


@pytest.mark.parametrize("suffix", [".toml", ".json", ".yaml"])
def test_import_paths_in_strings_stay_strings(tiny_config, tmp_path, no_new_imports, suffix):
    """A string that looks like an import path, in any field, is data: at most an unknown name or a bad value."""
    import yaml

    config = dict(tiny_config, name="this:s", device="this")
    config["data"] = dict(config["data"], preferred_category="os.system")
    config["methods"] = ["saliency", {"name": "integrated_gradients", "n_steps": "this"}]
    path = tmp_path / f"exp{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(config))
    elif suffix == ".yaml":
        path.write_text(yaml.safe_dump(config))
    else:
        path.write_text(toml_text(config))
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    locs = {i.loc for i in info.value.issues}
    assert locs == {"device", "methods[1] (integrated_gradients).n_steps"}, info.value


def test_config_loading_uses_safe_parsers_only():
    """The config reader's source: a yaml.SafeLoader with SafeLoader's constructors only (no Python tags), no
    yaml.load/unsafe loaders, no eval/exec/import_module."""
    import inspect

    import yaml

    import sharedattr.config.files as files
    import sharedattr.config.spec as spec
    import sharedattr.config.validation as validation
    import sharedattr.plugins.specs as component_specs

    source = "".join(inspect.getsource(m) for m in (files, spec, validation, component_specs))
    assert issubclass(files.BoundedLoader, yaml.SafeLoader) and "class BoundedLoader(yaml.SafeLoader)" in source
    assert files.BoundedLoader.yaml_constructors == yaml.SafeLoader.yaml_constructors
    assert files.BoundedLoader.yaml_multi_constructors == yaml.SafeLoader.yaml_multi_constructors
    for unsafe in (
        "yaml.load(",
        "yaml.unsafe_load",
        "UnsafeLoader",
        "FullLoader",
        "eval(",
        "exec(",
        "import_module",
        "__import__",
        "pickle",
    ):
        assert unsafe not in source, unsafe
