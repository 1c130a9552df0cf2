"""Fitting and scoring encoding models: feature cache, save/load, weights, data errors."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
import yaml

from sharedattr.cli import main
from sharedattr.config.validation import validate_experiment
from sharedattr.encoding.backbones.torchvision_models import TorchvisionBackbone
from sharedattr.encoding.store import load_model
from sharedattr.experiment.stages import fit_experiment
from sharedattr.runtime.errors import UserError


@pytest.fixture
def count_forwards(monkeypatch):
    calls = {"n": 0}
    original = TorchvisionBackbone.forward

    def counting(self, x):
        calls["n"] += 1
        return original(self, x)

    monkeypatch.setattr(TorchvisionBackbone, "forward", counting)
    return calls


def _copy_stimuli(tiny_data, tmp_path):
    """A private copy of the tiny stimulus set (so a test may change files)."""
    import shutil

    shutil.copytree(tiny_data, tmp_path / "data")
    return tmp_path / "data"


def test_second_fit_hits_the_feature_cache(tiny_config, tmp_path, count_forwards):
    spec = validate_experiment(tiny_config)
    first = fit_experiment(spec, tmp_path / "a", progress=False)
    assert not first.cache_hit and count_forwards["n"] == 3  # the memory budget's one-image probe, 24 images in 16s
    count_forwards["n"] = 0
    second = fit_experiment(spec, tmp_path / "b", progress=False)
    assert second.cache_hit and count_forwards["n"] == 0
    assert torch.equal(first.latents, second.latents)
    assert torch.equal(first.fit.test_r, second.fit.test_r)


def test_changed_image_or_backbone_misses_the_cache(tiny_data, tiny_config, tmp_path):
    data = _copy_stimuli(tiny_data, tmp_path)
    tiny_config["data"] = {"stimuli": str(data / "stimuli" / "manifest.csv"), "responses": str(data / "responses.csv")}
    assert not fit_experiment(validate_experiment(tiny_config), tmp_path / "a", progress=False).cache_hit
    assert fit_experiment(validate_experiment(tiny_config), tmp_path / "b", progress=False).cache_hit
    from PIL import Image

    image = data / "stimuli" / "images" / "bodies_0000.png"
    Image.open(image).transpose(Image.FLIP_LEFT_RIGHT).save(image)
    assert not fit_experiment(validate_experiment(tiny_config), tmp_path / "c", progress=False).cache_hit
    tiny_config["backbone"]["seed"] = 3
    assert not fit_experiment(validate_experiment(tiny_config), tmp_path / "d", progress=False).cache_hit


def test_cache_can_be_disabled(tiny_config, tmp_path, count_forwards):
    tiny_config["cache"] = False
    spec = validate_experiment(tiny_config)
    fit_experiment(spec, tmp_path / "a", progress=False)
    count_forwards["n"] = 0
    assert not fit_experiment(spec, tmp_path / "b", progress=False).cache_hit and count_forwards["n"] == 3  # probe + 2


@pytest.mark.parametrize(
    "readout",
    [
        {"name": "ridge", "folds": 3},
        {"name": "factorized", "max_epochs": 5},
        {"name": "gaussian2d", "max_epochs": 5},
        {"name": "attention", "max_epochs": 5},
    ],
    ids=lambda r: r["name"],
)
def test_save_load_round_trips_bit_for_bit(tiny_config, tmp_path, readout):
    tiny_config["output"] = {"figures": True, "dpi": 40}
    tiny_config["readout"] = readout
    experiment = fit_experiment(validate_experiment(tiny_config), tmp_path, progress=False)
    restored = load_model(tmp_path / "model")
    assert restored.neuron_ids == experiment.fit.neuron_ids
    original = experiment.fit.model
    for (k, a), (k2, b) in zip(original.state_dict().items(), restored.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(original(x), restored(x))
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert [r["neuron"] for r in rows] == experiment.fit.neuron_ids
    assert (tmp_path / "figures" / "fit.png").read_bytes()[:4] == b"\x89PNG"


def test_load_refuses_a_changed_backbone(tiny_config, tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(4)
    weights = tmp_path / "w.safetensors"
    save_file(torchvision.models.resnet18().state_dict(), str(weights))
    tiny_config["backbone"]["weights_file"] = str(weights)
    fit_experiment(validate_experiment(tiny_config), tmp_path / "out", progress=False)
    torch.manual_seed(5)
    save_file(torchvision.models.resnet18().state_dict(), str(weights))
    with pytest.raises(UserError, match="rebuilt backbone's weights differ"):
        load_model(tmp_path / "out" / "model")
    assert load_model(tmp_path / "out" / "model", verify=False) is not None


def test_load_model_of_a_missing_folder(tmp_path):
    with pytest.raises(UserError, match="saved model not found"):
        load_model(tmp_path / "nothing")


def test_torchvision_default_weights_load_offline_from_the_hub_cache(tmp_path, monkeypatch, registry):
    """The real weights API: weights='DEFAULT' resolves the enum and loads torch hub's cached checkpoint."""
    import torchvision
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoint = tmp_path / "torch" / "hub" / "checkpoints" / ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    checkpoint.parent.mkdir(parents=True)
    torch.manual_seed(11)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), checkpoint)

    backbone = registry.build("backbone", "torchvision", model="resnet18", layer="layer1", weights="DEFAULT")
    assert backbone.input_size == (224, 224)  # the weights' crop size
    assert torch.allclose(backbone.mean.flatten(), torch.tensor(ResNet18_Weights.DEFAULT.transforms().mean))
    torch.testing.assert_close(backbone.body.conv1.weight, reference.conv1.weight, rtol=0, atol=0)
    same = registry.build(
        "backbone", "torchvision", model="resnet18", layer="layer1", weights="ResNet18_Weights.IMAGENET1K_V1"
    )
    torch.testing.assert_close(same.body.conv1.weight, reference.conv1.weight, rtol=0, atol=0)


def test_missing_hub_weights_give_a_clear_error(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(
        UserError, match=r"cannot load torchvision weights .* place the checkpoint in torch's hub cache"
    ):
        registry.build("backbone", "torchvision", model="resnet18", layer="layer1", weights="DEFAULT")


# -- the fit command and data errors ----------------------------------------------------
def _write(tmp_path, config):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_command(tiny_config, tmp_path, capsys):
    code = main(["fit", str(_write(tmp_path, tiny_config)), "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "fitted 5 neurons on 19 images, scored on 5 held out (features computed)" in out
    assert (tmp_path / "out" / "model" / "model.json").is_file()


def _rewrite_manifest(data, edit):
    manifest = data / "stimuli" / "manifest.csv"
    rows = list(csv.reader(open(manifest)))
    edit(rows)
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _break_decode(data):
    (data / "stimuli" / "images" / "bodies_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return "bodies_0001: cannot decode image"


def _truncate(data):
    path = data / "stimuli" / "images" / "objects_0002.png"
    path.write_bytes(path.read_bytes()[:60])
    return "objects_0002: cannot decode image"


def _duplicate(data):
    _rewrite_manifest(data, lambda rows: rows.__setitem__(3, rows[2]))
    return "line 4: duplicate stimulus_id 'bodies_0001'"


def _missing(data):
    (data / "stimuli" / "images" / "bodies_0004.png").unlink()
    return "line 6: image not found"


def _unknown_response_id(data):
    with open(data / "responses.csv", "a") as f:
        f.write("ghost_007,1,2,3,4,5\n")
    return "stimulus_id 'ghost_007' is not in the stimulus set"


def _all_nan_neuron(data):
    lines = (data / "responses.csv").read_text().splitlines()
    fixed = [lines[0]] + [",".join(line.split(",")[:-1] + ["nan"]) for line in lines[1:]]
    (data / "responses.csv").write_text("\n".join(fixed) + "\n")
    return "neuron shape: no valid (non-NaN) response"


@pytest.mark.parametrize(
    "breaker", [_break_decode, _truncate, _duplicate, _missing, _unknown_response_id, _all_nan_neuron]
)
def test_data_errors_exit_2_with_a_clear_message(breaker, tiny_data, tiny_config, tmp_path, capsys, count_forwards):
    data = _copy_stimuli(tiny_data, tmp_path)
    expected = breaker(data)
    config = copy.deepcopy(tiny_config)
    config["data"] = {"stimuli": str(data / "stimuli" / "manifest.csv"), "responses": str(data / "responses.csv")}
    code = main(["fit", str(_write(tmp_path, config)), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert expected in err
    assert count_forwards["n"] == 0  # reported before any backbone compute


def test_unknown_category_is_listed(tiny_config, tmp_path, capsys):
    tiny_config["data"]["categories"] = ["bodies", "faces"]
    code = main(["fit", str(_write(tmp_path, tiny_config)), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "stimulus categories: 12 problem(s)" in err
    assert "objects_0000: unknown category 'objects' (allowed: bodies, faces)" in err


def test_scores_include_noise_ceiling_and_fev_from_repeats(tiny_config, tmp_path):
    fit_experiment(validate_experiment(tiny_config), tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert {"noise_ceiling", "fev", "note"} <= set(rows[0])
    scored = [r for r in rows if r["fev"] != ""]
    assert scored, rows  # the tiny set has 2 trials per stimulus
    for r in scored:
        assert 0 < float(r["noise_ceiling"]) <= 1 and float(r["fev"]) <= 1 and r["note"] == ""
    assert all(r["note"] for r in rows if r["fev"] == "")  # an empty value always says why


def test_npy_responses_fit_like_csv(tiny_data, tiny_config, tmp_path):
    import numpy as np

    from sharedattr.data import load_responses

    recorded = load_responses(tiny_data / "responses.csv")
    np.save(tmp_path / "r.npy", recorded.trials.numpy())
    (tmp_path / "ids.txt").write_text("\n".join(recorded.ids) + "\n")
    (tmp_path / "neurons.txt").write_text("\n".join(recorded.neuron_ids) + "\n")
    via_csv = fit_experiment(validate_experiment(tiny_config), tmp_path / "csv", progress=False)
    tiny_config["data"].update(
        responses=str(tmp_path / "r.npy"),
        response_ids=str(tmp_path / "ids.txt"),
        neuron_ids=str(tmp_path / "neurons.txt"),
    )
    via_npy = fit_experiment(validate_experiment(tiny_config), tmp_path / "npy", progress=False)
    assert via_npy.fit.neuron_ids == via_csv.fit.neuron_ids
    torch.testing.assert_close(via_npy.fit.test_r, via_csv.fit.test_r)
    torch.testing.assert_close(via_npy.fit.fev, via_csv.fit.fev, equal_nan=True)


def test_npy_responses_need_their_ids(tiny_config, tmp_path):
    import numpy as np

    from sharedattr.runtime.errors import SpecError

    np.save(tmp_path / "r.npy", np.zeros((3, 2)))
    tiny_config["data"]["responses"] = str(tmp_path / "r.npy")
    with pytest.raises(SpecError, match="data: Value error, responses is a .npy array: give response_ids"):
        validate_experiment(tiny_config)
