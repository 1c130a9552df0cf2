"""The backbone zoo's trainer (scripts/trainers/zoo.py, scripts/train_zoo.py): scenes, labels, augmentation,
tiny trainings of every arm, and their weights loading as an ``insilico_cnn`` backbone."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import train_zoo as train_zoo_script
from safetensors import safe_open

from sharedattr.data.insilico.render import PARTS, render_set
from sharedattr.encoding.backbones.insilico_cnn import EXTRA_HEADS_PREFIX, InsilicoCNN, InsilicoCNNBackbone
from sharedattr.runtime.errors import UserError
from trainers.insilico_cnn import part_presence
from trainers.zoo import (
    ARMS,
    CATEGORY_CLASSES,
    SEGMENT_CLASSES,
    AffineRanges,
    ZooConfig,
    ZooSetSpec,
    affine_params,
    border_colour,
    label_correlations,
    label_map,
    presence_from_maps,
    random_affine,
    save,
    train_zoo,
    warp,
    zoo_scene,
)

TINY_ARCHITECTURE = {"in_channels": 3, "channels": [4, 8, 8, 8], "convs": [2, 2, 1, 1], "n_outputs": 4}


def tiny_config(arm: str, **overrides) -> ZooConfig:
    return ZooConfig(
        arm=arm,
        train_sets=(ZooSetSpec(10, 32, 1, seed=1), ZooSetSpec(10, 32, 3, seed=2)),
        test_sets=(ZooSetSpec(6, 32, 3, seed=9),),
        architecture=TINY_ARCHITECTURE,
        epochs=1,
        batch_size=8,
        threads=1,
        **overrides,
    )


def r(correlations: dict, a: str, b: str) -> float:
    names = correlations["names"]
    return correlations["pearson_r"][names.index(a)][names.index(b)]


# -- scenes and labels -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenes():
    return ZooSetSpec(400, 48, 1, seed=3).render()


def test_zoo_scenes_decorrelate_parts_from_each_other_and_from_the_category(scenes):
    correlations = scenes.label_correlations()
    assert abs(r(correlations, "torso", "category=body")) < 0.5
    assert abs(r(correlations, "shape", "category=object")) < 0.7
    for i, a in enumerate(PARTS):  # parts are nearly independent of one another
        for b in PARTS[i + 1 :]:
            assert abs(r(correlations, a, b)) < 0.3, (a, b)
    assert correlations["max_abs_r_with_a_part"] < 0.75
    assert set(scenes.kinds) == {"body", "object", "body+object", "object+part", "part"}
    # the shipped insilico-v1 task: torso presence IS "is a body", shape presence IS "is an object"
    old = render_set(100, 48, seed=3)
    categories = np.array([CATEGORY_CLASSES.index("object" if c == "objects" else "body") for c in old.categories])
    old_labels = label_correlations(part_presence(old.parts), categories)
    assert r(old_labels, "torso", "category=body") == pytest.approx(1.0)
    assert r(old_labels, "shape", "category=object") == pytest.approx(1.0)


def test_segmentation_targets_are_the_visible_part_masks():
    spec = ZooSetSpec(12, 40, 3, seed=4)
    rendered = spec.render()
    for i in range(len(rendered)):
        scene = zoo_scene(np.random.default_rng([spec.seed, 7, i]), 40, 3)
        np.testing.assert_array_equal(rendered.images[i], scene.image)
        for k, name in enumerate(SEGMENT_CLASSES):
            expected = ~scene.mask if name == "background" else scene.parts.get(name, np.zeros((40, 40), bool))
            np.testing.assert_array_equal(rendered.maps[i] == k, expected, err_msg=f"scene {i}, {name}")
        assert CATEGORY_CLASSES[rendered.categories[i]] == scene.category
    parts = {p: rendered.maps == k + 1 for k, p in enumerate(PARTS)}
    np.testing.assert_array_equal(rendered.presence(), part_presence(parts))
    np.testing.assert_array_equal(presence_from_maps(torch.from_numpy(rendered.maps), 10**6).numpy(), False)
    assert label_map({}, (3, 3)).sum() == 0


# -- augmentation ----------------------------------------------------------------------------------
def test_affine_parameters_cover_the_documented_ranges():
    ranges = AffineRanges()
    angle, scale, shift = affine_params(20_000, torch.Generator().manual_seed(0), ranges)
    assert (ranges.max_angle, ranges.min_scale, ranges.max_scale) == (0.6, 0.8, 1.25)
    assert angle.abs().max() <= 0.6 and angle.min() < -0.59 and angle.max() > 0.59
    assert scale.min() >= 0.8 and scale.max() <= 1.25 and scale.min() < 0.81 and scale.max() > 1.24
    assert shift.abs().max() <= ranges.max_shift and shift.abs().max() > 0.99 * ranges.max_shift
    again = affine_params(20_000, torch.Generator().manual_seed(0), ranges)
    assert all(torch.equal(a, b) for a, b in zip((angle, scale, shift), again))  # seeded


def test_warp_moves_images_and_maps_together_and_fills_with_the_background():
    rendered = ZooSetSpec(6, 32, 3, seed=5).render()
    x = torch.from_numpy(rendered.images).permute(0, 3, 1, 2).contiguous()
    maps = torch.from_numpy(rendered.maps)
    zero, one = torch.zeros(6), torch.ones(6)
    same_x, same_maps = warp(x, maps, zero, one, torch.zeros(6, 2))
    assert torch.equal(same_x, x) and torch.equal(same_maps, maps)
    shifted_x, shifted = warp(x, maps, zero, one, torch.tensor([[0.25, 0.0]] * 6))  # 8 px to the right
    assert torch.equal(shifted[..., 8:], maps[..., :-8]) and not shifted[..., :8].any()
    torch.testing.assert_close(shifted_x[..., 8:], x[..., :-8], rtol=0, atol=1)
    small_x, small = warp(x, maps, zero, torch.full((6,), 0.5), torch.zeros(6, 2))  # the corners are uncovered
    fill = border_colour(x).round().to(torch.uint8)
    assert torch.equal(small_x[..., 0, 0], fill) and not small[:, 0, 0].any()
    quarter_x, quarter = warp(x, maps, torch.full((6,), math.pi / 2), one, torch.zeros(6, 2))
    assert torch.equal(quarter, maps.rot90(-1, dims=(1, 2)))  # +angle turns clockwise on screen (y down)
    generator = torch.Generator().manual_seed(1)
    out_x, out_maps = random_affine(x, maps, generator, AffineRanges())
    assert out_x.dtype == torch.uint8 and out_maps.dtype == torch.uint8 and out_maps.max() < len(SEGMENT_CLASSES)


# -- training and loading --------------------------------------------------------------------------
@pytest.mark.parametrize("arm", ARMS)
def test_a_tiny_training_of_each_arm_loads_as_an_insilico_cnn_backbone(tmp_path, arm):
    config = tiny_config(arm)
    model, record = train_zoo(config)
    written = save(model, record, tmp_path / f"{arm}-s0.safetensors")
    data = (tmp_path / f"{arm}-s0.safetensors").read_bytes()
    assert written["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads((tmp_path / f"{arm}-s0.json").read_text()) == json.loads(json.dumps(written))
    assert written["weights"] == f"zoo-{arm}-s0" and written["task"]["arm"] == arm
    assert written["training"]["seeds"] == {"training": 0, "train_sets": [1, 2], "test_sets": [9]}
    assert written["training"]["n_train_images"] == 20 and written["wall_time_s"]["total"] > 0
    assert written["label_correlations"]["names"][: len(PARTS)] == list(PARTS)
    overall = written["test"]["overall"]
    if arm == "segmentation":
        assert set(overall["iou"]) == set(SEGMENT_CLASSES) and 0 <= overall["pixel_accuracy"] <= 1
    else:
        assert set(overall["accuracy"]) == {*PARTS, "category"}
    with safe_open(str(tmp_path / f"{arm}-s0.safetensors"), framework="pt") as f:
        extra = [k for k in f.keys() if not k.startswith(("block", "head."))]
    assert extra and all(k.startswith(EXTRA_HEADS_PREFIX) for k in extra)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for layer in ("block1", "block2", "block3", "block4"):
        backbone = InsilicoCNNBackbone(weights_file=str(tmp_path / f"{arm}-s0.safetensors"), layer=layer, input_size=32)
        with torch.no_grad():
            torch.testing.assert_close(backbone(backbone.preprocess(x)), model.trunk(layer)(backbone.preprocess(x)))


def test_the_augmented_arm_is_deterministic_and_differs_from_the_decorrelated_arm():
    augmented, _ = train_zoo(tiny_config("augmented"))
    again, _ = train_zoo(tiny_config("augmented"))
    plain, _ = train_zoo(tiny_config("decorrelated"))
    for (name, a), b in zip(augmented.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert not torch.equal(augmented.state_dict()["block1.0.weight"], plain.state_dict()["block1.0.weight"])
    other_seed, _ = train_zoo(tiny_config("augmented", seed=1))
    assert not torch.equal(augmented.state_dict()["block1.0.weight"], other_seed.state_dict()["block1.0.weight"])


def test_the_loader_skips_extra_heads_but_still_rejects_foreign_tensors(tmp_path):
    state = InsilicoCNN().state_dict()
    torch.save({**state, f"{EXTRA_HEADS_PREFIX}category.weight": torch.zeros(3, 128)}, tmp_path / "extra.pt")
    InsilicoCNNBackbone(weights_file=str(tmp_path / "extra.pt"), layer="block4")
    torch.save({**state, "decoder.weight": torch.zeros(3, 128)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match=r"1 unexpected tensors \(e\.g\. \['decoder\.weight'\]\)"):
        InsilicoCNNBackbone(weights_file=str(tmp_path / "foreign.pt"))


def test_the_script_trains_the_chosen_arms_and_seeds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_zoo_script, "ZooConfig", lambda arm, seed: tiny_config(arm, seed=seed))
    out = tmp_path / "zoo"
    assert train_zoo_script.main(["--out", str(out), "--arm", "segmentation", "--seed", "1", "--threads", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["segmentation-s1.json", "segmentation-s1.safetensors"]
    record = json.loads((out / "segmentation-s1.json").read_text())
    assert record["training"]["seed"] == 1 and record["training"]["threads"] == 1
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_zoo_script.main(["--arm", "classification"])
    assert "invalid choice" in capsys.readouterr().err
