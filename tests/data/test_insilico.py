"""In-silico ground truth: rendered part masks, ground-truth neurons and shared-part localisation masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sharedattr.data import DataError, StimulusSet
from sharedattr.data.ground_truth import PairTruth, load_neuron_parts, pair_parts, pair_truth, shared_parts
from sharedattr.data.insilico import (
    DEFAULT_NEURONS,
    PARTS,
    GroundTruthNeuron,
    SceneOptions,
    neuron_population,
    render_scene,
    render_set,
    simulate_responses,
    write_insilico,
)
from sharedattr.data.insilico.neurons import TYPICAL_AREA
from sharedattr.data.pairs import PairImages
from sharedattr.selection.matching import Pair


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("category", ["bodies", "objects"])
def test_masks_are_exactly_the_pixels_that_differ_from_the_background(category, channels):
    for i in range(12):
        scene = render_scene(
            category, 64, rng=np.random.default_rng(i), options=SceneOptions(channels=channels, noise_std=0.0)
        )
        background = np.round(scene.background).astype(np.uint8)
        changed = (scene.image != background).any(-1)
        np.testing.assert_array_equal(changed, scene.mask)
        np.testing.assert_array_equal(scene.image[scene.mask], np.round(scene.paint[scene.mask]).astype(np.uint8))
        stacked = np.stack(list(scene.parts.values()))
        assert stacked.sum(0).max() == 1, "a pixel belongs to two parts"
        assert all(m.any() for m in scene.parts.values()), "an empty part mask was kept"


def test_parts_follow_the_category_and_the_attachment():
    for i in range(30):
        body = render_scene("bodies", 64, rng=np.random.default_rng(i))
        assert set(body.parts) == {"head", "torso", "limbs"}
    for attachment, parts in {"none": set(), "limb": {"limbs"}, "head": {"head"}, "both": {"limbs", "head"}}.items():
        for i in range(5):
            obj = render_scene("objects", 64, rng=np.random.default_rng(i), attachment=attachment)
            assert set(obj.parts) - {"shape"} <= parts and "shape" in obj.parts
            assert "torso" not in obj.parts


def test_rendering_is_seeded_and_independent_of_the_set_size():
    small, large = render_set(3, 32, seed=4), render_set(6, 32, seed=4)
    np.testing.assert_array_equal(small.images[:3], large.images[:3])
    np.testing.assert_array_equal(small.images[3:], large.images[6:9])
    assert not np.array_equal(render_set(3, 32, seed=5).images, small.images)
    rgb = render_set(2, 48, channels=3, seed=0)
    assert rgb.images.shape == (4, 48, 48, 3) and rgb.images.dtype == np.uint8
    assert set(rgb.parts) == set(PARTS) and rgb.parts["torso"].shape == (4, 48, 48)


def test_typical_areas_are_those_of_rendered_bodies():
    areas = render_set(60, 64, seed=0, categories=["bodies"]).areas()
    for part in ("head", "torso", "limbs"):
        assert 0.75 < np.median(areas[part]) / TYPICAL_AREA[part] < 1.33, part


def test_neurons_respond_as_specified():
    rendered = render_set(40, 64, seed=2)
    areas = rendered.areas()
    sim = simulate_responses(areas, DEFAULT_NEURONS, repeats=3, seed=0)
    by_name = {n.name: k for k, n in enumerate(DEFAULT_NEURONS)}
    expected_limbs = 1.0 * areas["limbs"] / TYPICAL_AREA["limbs"] + 0.2 * areas["head"] / TYPICAL_AREA["head"]
    np.testing.assert_allclose(sim.expected[:, by_name["limbs"]], expected_limbs, rtol=1e-12)
    conj = sim.expected[:, by_name["head_and_limbs"]]
    has_both = (areas["head"] > 0) & (areas["limbs"] > 0)
    assert np.all(conj[~has_both] == 0) and np.all(conj[has_both] > 0)
    np.testing.assert_allclose(
        conj[has_both],
        np.sqrt(areas["head"][has_both] / TYPICAL_AREA["head"] * areas["limbs"][has_both] / TYPICAL_AREA["limbs"]),
    )
    bodies = np.array([c == "bodies" for c in rendered.categories])
    for name in ("limbs", "head", "body"):  # body-selective, yet driven by objects with body-like parts
        r = sim.expected[:, by_name[name]]
        assert r[bodies].mean() > 1.5 * r[~bodies].mean()
    attachments = np.array(rendered.attachments)
    limbs = sim.expected[:, by_name["limbs"]]
    plain_objects = (attachments == "none") & ~bodies
    assert limbs[attachments == "limb"].min() > 0 and np.all(limbs[plain_objects] == 0)
    shape = sim.expected[:, by_name["shape"]]
    assert np.all(shape[bodies] == 0) and np.all(shape[~bodies] > 0)
    noise = sim.trials - sim.expected[:, None, :]
    assert sim.trials.shape == (80, 3, 5)
    assert 0.08 < noise.std() < 0.12  # default noise 0.1


def test_neuron_definitions_are_validated_and_populations_jitter():
    with pytest.raises(ValueError, match="unknown part"):
        GroundTruthNeuron("x", {"tail": 1.0})
    with pytest.raises(ValueError, match="combine"):
        GroundTruthNeuron("x", {"head": 1.0}, combine="max")
    population = neuron_population(3, seed=1)
    assert len(population) == 3 * len(DEFAULT_NEURONS) and population[0].name == "limbs_0"
    assert population[0].weights != population[1].weights and set(population[0].parts) == {"limbs", "head"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("insilico")
    files = write_insilico(folder, n_per_category=8, size=32, seed=3)
    return folder, files, render_set(8, 32, seed=3)


def test_written_set_loads_with_every_part_mask(written):
    folder, files, rendered = written
    stimuli = StimulusSet.load(files.manifest)
    assert stimuli.ids == rendered.ids and set(stimuli.part_masks) == set(PARTS)
    images = stimuli.load_images((32, 32), 1)
    np.testing.assert_array_equal((images[:, 0] * 255).round().byte().numpy(), rendered.images[..., 0])
    for part in PARTS:
        masks = stimuli.load_part_masks((32, 32), range(len(stimuli)), [[part]] * len(stimuli))
        np.testing.assert_array_equal(masks.numpy(), rendered.parts[part])
        assert [stimuli.has_part(i, part) for i in range(len(stimuli))] == list(rendered.parts[part].any((1, 2)))
    union = stimuli.load_masks((32, 32))
    np.testing.assert_array_equal(union.numpy(), np.any([rendered.parts[p] for p in PARTS], axis=0))
    truth = json.loads(files.neuron_parts.read_text())
    assert truth["limbs"] == {"limbs": 1.0, "head": 0.2}


def test_localisation_masks_are_the_parts_a_pair_shares(written):
    folder, files, rendered = written
    stimuli = StimulusSet.load(files.manifest)
    neuron_parts = load_neuron_parts(files.neuron_parts, list(stimuli.part_masks))
    assert neuron_parts["body"] == ("head", "torso", "limbs")
    attachments = list(rendered.attachments)
    obj = attachments.index("limb") if "limb" in attachments else attachments.index("both")
    body = 0
    assert shared_parts(stimuli, neuron_parts["body"], obj, body) in (("limbs",), ("head", "limbs"))
    assert "torso" not in shared_parts(stimuli, neuron_parts["body"], obj, body)
    pairs = [
        Pair(neuron=2, driver=obj, reference=body, similarity=0.9, rank=0),  # body neuron
        Pair(neuron=4, driver=obj, reference=body, similarity=0.5, rank=0),  # shape neuron: nothing shared
        Pair(neuron=0, driver=obj, reference=body, similarity=0.5, rank=0),
    ]  # not in neuron_parts below
    ids = [n.name for n in DEFAULT_NEURONS]
    partial = {k: v for k, v in neuron_parts.items() if k != "limbs"}
    parts = pair_parts(stimuli, partial, ids, pairs)
    assert parts[1] == () and parts[2] is None
    truth = pair_truth(stimuli, partial, ids, pairs)
    assert [t.shared if t else None for t in truth] == parts
    only_body = tuple(
        q for q in ("head", "torso", "limbs") if rendered.parts[q][body].any() and not rendered.parts[q][obj].any()
    )
    assert "torso" in only_body and truth[0].reference_only == only_body and truth[0].driver_only == ()
    assert truth[1] == PairTruth((), ("shape",), ())  # the shape neuron: the body lacks the object's shape
    images = PairImages.load(stimuli, pairs, (32, 32), 1, truth)
    shared = list(parts[0])
    np.testing.assert_array_equal(
        images.reference_unshared[0].numpy(), np.any([rendered.parts[q][body] for q in only_body], axis=0)
    )
    for part in shared:
        np.testing.assert_array_equal(images.driver_parts[part][0].numpy(), rendered.parts[part][obj])
    expected_driver = np.any([rendered.parts[p][obj] for p in shared], axis=0)
    expected_reference = np.any([rendered.parts[p][body] for p in shared], axis=0)
    np.testing.assert_array_equal(images.driver_masks[0].numpy(), expected_driver)
    np.testing.assert_array_equal(images.reference_masks[0].numpy(), expected_reference)
    assert not images.driver_masks[1].any()  # nothing shared: the metric is undefined (NaN), not zero
    np.testing.assert_array_equal(images.driver_masks[2].numpy(), stimuli.load_masks((32, 32), [obj])[0].numpy())
    assert images.masks_digest() != PairImages.load(stimuli, pairs, (32, 32), 1).masks_digest()


def test_neuron_parts_errors_name_the_file_and_the_fix(tmp_path, written):
    _, files, _ = written
    bad = tmp_path / "parts.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_neuron_parts(bad)
    bad.write_text(json.dumps({"n1": ["tail"], "n2": 3}))
    with pytest.raises(DataError) as err:
        load_neuron_parts(bad, ["head", "limbs"])
    assert "unknown part(s) 'tail'" in str(err.value) and "'n2'" in str(err.value) and str(bad) in str(err.value)
    stimuli = StimulusSet.load(files.manifest)
    with pytest.raises(DataError, match="no manifest column mask:tail"):
        stimuli.load_part_masks((8, 8), [0], [["tail"]])


def test_missing_part_mask_file_is_reported(tmp_path, written):
    _, files, _ = written
    text = files.manifest.read_text().replace("masks/bodies_0000-head.png", "masks/nowhere.png")
    manifest = files.manifest.parent / "broken.csv"
    manifest.write_text(text)
    with pytest.raises(DataError, match="mask:head not found"):
        StimulusSet.load(manifest)
    manifest.unlink()


def test_run_scores_localisation_on_shared_parts(tmp_path, written):
    from sharedattr.config.files import load_experiment
    from sharedattr.experiment.run import run_experiment

    folder, files, _ = written
    config = tmp_path / "exp.toml"
    config.write_text(f"""
name = "gt"
cache = false
[data]
stimuli = "{files.manifest}"
responses = "{files.responses}"
neuron_parts = "{files.neuron_parts}"
preferred_category = "bodies"
[backbone]
name = "torchvision"
model = "resnet18"
layer = "layer1"
input_size = 32
[readout]
name = "ridge"
[selection]
neurons = ["limbs", "head"]
drivers_per_neuron = 2
[[methods]]
name = "saliency"
[[metrics]]
name = "relevance_mass"
[output]
figures = false
""")
    result = run_experiment(load_experiment(config), tmp_path / "run", progress=False)
    values = [r["value"] for r in result.rows if r["metric"] == "relevance_mass"]
    assert len(values) == 8 and all(np.isfinite(values))  # limbs/head drivers share their part with a body
    # new ground truth: the localisation scores are recomputed, the maps reused
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"limbs": ["limbs"], "head": ["head"]}))
    config.write_text(config.read_text().replace(str(files.neuron_parts), str(truth)))
    again = run_experiment(load_experiment(config), tmp_path / "run", progress=False)
    assert again.reused["work_items_reused"] == 1 and again.reused["work_items_computed"] == 2
    config.write_text(config.read_text().replace('neurons = ["limbs", "head"]', 'neurons = ["limbs", "bogus"]'))
    from sharedattr.runtime.errors import UserError

    with pytest.raises(UserError, match="bogus"):
        run_experiment(load_experiment(config), tmp_path / "run2", progress=False)
    assert torch.isfinite(result.test_r).all()


def test_atomic_writes_get_normal_file_permissions(tmp_path):
    import os

    from sharedattr.runtime.io import atomic_write_text

    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "x.txt", "hello")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the lab, not only by the owner (mkstemp's 0600)


# -- bodies with pieces missing, objects with several parts, and controlled pairs -------------------------
def test_missing_pieces_and_several_attachments_follow_their_rates():
    from sharedattr.data.insilico.render import render_set

    default = render_set(8, 32, seed=5)
    assert np.array_equal(render_set(8, 32, seed=5, missing=None).images, default.images)  # no new draws by default
    rendered = render_set(
        200, 32, seed=5, missing={"head": 0.5, "legs": 0.25}, attachment_probs={"none": 0.0, "limbs2": 0.5, "all": 0.5}
    )
    bodies = [i for i, c in enumerate(rendered.categories) if c == "bodies"]
    headless = np.mean([not rendered.parts["head"][i].any() for i in bodies])
    assert 0.4 < headless < 0.6
    objects = [i for i, c in enumerate(rendered.categories) if c == "objects"]
    assert set(rendered.attachments[i] for i in objects) == {"limbs2", "all"}
    assert all(rendered.parts["limbs"][i].any() for i in objects)
    with pytest.raises(ValueError, match="unknown piece"):
        render_scene("bodies", 32, rng=np.random.default_rng(0), options=SceneOptions(missing={"tail": 1.0}))


def test_written_scenes_follow_their_options(tmp_path):
    """write_insilico renders what its SceneOptions say, exactly as render_set does with the same options."""
    options = SceneOptions(channels=3, noise_std=1.0, missing={"head": 0.5}, attachment_probs={"both": 1.0})
    files = write_insilico(tmp_path, 3, 32, seed=2, repeats=1, options=options)
    rendered = render_set(
        3, 32, channels=3, seed=2, noise_std=1.0, missing={"head": 0.5}, attachment_probs={"both": 1.0}
    )
    stimuli = StimulusSet.load(files.manifest)
    images = stimuli.load_images((32, 32), 3)
    np.testing.assert_array_equal((images * 255).round().byte().permute(0, 2, 3, 1).numpy(), rendered.images)
    assert [stimuli.categories[i] == "objects" for i in range(6)] == [False] * 3 + [True] * 3
    assert all(stimuli.has_part(i, "head") and stimuli.has_part(i, "limbs") for i in range(3, 6))


@pytest.mark.parametrize("position", ["matched", "mismatched"])
def test_pairs_share_exactly_the_copied_pieces(position):
    from sharedattr.data.insilico.pairs import render_pairs

    for pair in render_pairs(6, 64, seed=2, position=position):
        intact, headless = pair.references["intact"], pair.references["headless"]
        head = intact.parts["head"]
        assert "head" not in headless.parts and np.array_equal(intact.image[~head], headless.image[~head])
        assert set(pair.driver.parts) >= {"shape", "limbs"} and pair.carried[0] in ("arm_left", "arm_right")
        arm = next(s for s in intact.shapes if s.name == pair.carried[0])
        ys, xs = np.nonzero(pair.driver.parts["limbs"])
        centre = np.array([xs.mean(), ys.mean()])
        body_arm = np.mean(arm.points, axis=0)
        distance = np.linalg.norm(centre - np.array(pair.transform(tuple(body_arm))))
        assert distance < 4  # the copy sits where the transform puts the body's arm
        moved = np.linalg.norm(np.array(pair.transform(tuple(body_arm))) - body_arm)
        assert (moved < 1e-9) if position == "matched" else (moved > 8)


def test_written_pairs_load_as_a_stimulus_set_with_their_parts(tmp_path):
    import csv

    from sharedattr.data import StimulusSet
    from sharedattr.data.insilico import write_pair_set
    from sharedattr.data.insilico.pairs import render_pairs

    conditions = {
        "both": render_pairs(2, 32, seed=1, carry_head=True),
        "arm": render_pairs(3, 32, seed=1, carry_head=False, position="mismatched"),
    }
    manifest, table = write_pair_set(tmp_path, conditions)
    stimuli = StimulusSet.load(manifest)
    assert len(stimuli) == 5 * 3 and stimuli.channels_for(3) == 1
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["condition"], r["position"]) for r in rows] == [("both", "matched")] * 2 + [("arm", "mismatched")] * 3
    assert [len(r["carried"].split()) for r in rows] == [2, 2, 1, 1, 1]
    for row, pair in zip(rows, [*conditions["both"], *conditions["arm"]]):
        driver, headless = stimuli.ids.index(row["driver"]), stimuli.ids.index(row["reference:headless"])
        assert stimuli.categories[driver] == "objects" and stimuli.categories[headless] == "bodies"
        image = stimuli.load_images((32, 32), 1, [driver])[0, 0].numpy()
        assert np.array_equal(np.round(image * 255).astype(np.uint8), pair.driver.image[..., 0])
        limbs = stimuli.load_part_masks((32, 32), [driver], [["limbs"]])[0].numpy()
        assert np.array_equal(limbs, pair.driver.parts["limbs"])
        assert stimuli.has_part(driver, "head") == ("head" in pair.carried) and not stimuli.has_part(headless, "head")


# -- truth at the level of the copied piece -------------------------------------------------------------------------


def _hand_built_set(tmp_path, pieces: bool) -> StimulusSet:
    """A driver carrying the reference's left arm, and a reference with that arm, a leg and a head (8 × 8 px).

    Rows 0–1: the arm (on both images); rows 2–3: the reference's leg; rows 4–5: the reference's head."""
    from PIL import Image

    def mask(name: str, rows: tuple[int, int]):
        m = np.zeros((8, 8), dtype=np.uint8)
        m[rows[0] : rows[1]] = 255
        path = tmp_path / f"{name}.png"
        Image.fromarray(m).save(path)
        return path

    arm, leg, head = (0, 2), (2, 4), (4, 6)
    part_masks = {
        "limbs": (mask("d-limbs", arm), mask("r-limbs", (0, 4))),
        "head": (None, mask("r-head", head)),
    }
    if pieces:
        part_masks |= {
            "limbs/arm_left": (mask("d-arm", arm), mask("r-arm", arm)),
            "limbs/leg_left": (None, mask("r-leg", leg)),
            "head/head": (None, mask("r-head-piece", head)),
        }
    image = mask("image", (0, 8))
    return StimulusSet(("driver", "reference"), (image, image), ("objects", "bodies"), (None, None), part_masks)


@pytest.mark.parametrize("pieces", [True, False])
def test_piece_level_truth_counts_only_the_copied_piece_as_shared(tmp_path, pieces):
    from sharedattr.metrics.sharing import shared_part_selectivity

    stimuli = _hand_built_set(tmp_path, pieces)
    pair = [Pair(neuron=0, driver=0, reference=1, similarity=1.0, rank=0)]
    (truth,) = pair_truth(stimuli, {"n": ("limbs", "head")}, ["n"], pair)
    if pieces:
        assert truth == PairTruth(("limbs/arm_left",), (), ("limbs/leg_left", "head/head"))
    else:
        assert truth == PairTruth(("limbs",), (), ("head",))
    images = PairImages.load(stimuli, pair, (8, 8), 1, [truth])
    assert set(images.reference_parts) == {"limbs"}  # grouped by part: what reference_sensitivity erases
    copied = torch.zeros(8, 8, dtype=torch.bool)
    copied[0:2] = True
    expected_shared = copied if pieces else torch.arange(8)[:, None].expand(8, 8) < 4
    assert torch.equal(images.reference_parts["limbs"][0], expected_shared)
    assert torch.equal(images.reference_masks[0], expected_shared)
    # a reference map of 1 on the arm, 2 on the leg, 3 on the head (16 px each)
    reference_map = torch.zeros(1, 8, 8)
    reference_map[0, 0:2], reference_map[0, 2:4], reference_map[0, 4:6] = 1.0, 2.0, 3.0
    sps = float(shared_part_selectivity(reference_map, images.reference_masks, images.reference_unshared)[0])
    # piece level: arm / (arm + leg + head) = 16 / (16 + 32 + 48); part level: (arm + leg) / all = 48 / 96
    assert sps == pytest.approx(16 / 96 if pieces else 48 / 96)


def test_written_pair_sets_carry_each_piece_and_the_copied_one_on_both_images(tmp_path):
    import csv

    from sharedattr.data.insilico import write_pair_set
    from sharedattr.data.insilico.pairs import render_pairs

    pairs = render_pairs(3, 32, seed=4, carry_head=False)
    manifest, table = write_pair_set(tmp_path, {"arm": pairs})
    stimuli = StimulusSet.load(manifest)
    assert {"limbs/arm_left", "limbs/arm_right", "limbs/leg_left", "head/head", "torso/torso"} <= set(
        stimuli.part_masks
    )
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    for row, pair in zip(rows, pairs):
        driver, intact = stimuli.ids.index(row["driver"]), stimuli.ids.index(row["reference:intact"])
        (arm,) = pair.carried
        pair_of_images = Pair(neuron=0, driver=driver, reference=intact, similarity=1.0, rank=0)
        (truth,) = pair_truth(stimuli, {"n": ("limbs", "head")}, ["n"], [pair_of_images])
        other_arm = "arm_right" if arm == "arm_left" else "arm_left"
        assert truth.shared == (f"limbs/{arm}",) and truth.driver_only == ()
        assert set(truth.reference_only) == {f"limbs/{other_arm}", "limbs/leg_left", "limbs/leg_right", "head/head"}
        # the pieces of a part tile its visible mask
        for which, scene in ((driver, pair.driver), (intact, pair.references["intact"])):
            limbs = stimuli.load_part_masks((32, 32), [which], [["limbs"]])[0].numpy()
            pieces = [k for k in stimuli.part_masks if k.startswith("limbs/")]
            union = stimuli.load_part_masks((32, 32), [which], [pieces])[0].numpy()
            assert np.array_equal(limbs, union) and np.array_equal(limbs, scene.parts["limbs"])


# -- copy conditions and position controls --------------------------------------------------------------------------


def _copied(pair) -> np.ndarray:
    """The driver's pixels of its copied pieces ``[H, W]`` bool."""
    keys = [k for k in pair.driver.pieces if k.split("/")[1] in pair.carried]
    return np.any([pair.driver.pieces[k] for k in keys], axis=0)


@pytest.mark.parametrize("position", ["matched", "mismatched"])
def test_pixel_copies_are_the_references_pixels_and_repainted_ones_differ(position):
    from sharedattr.data.insilico.pairs import PairLayout, render_pairs

    pixel = render_pairs(8, 64, seed=5, position=position, layout=PairLayout(copy="pixel"))
    repainted = render_pairs(8, 64, seed=5, position=position)
    close = []
    for p, r in zip(pixel, repainted):
        copied, source = _copied(p), p.references["intact"].image
        ys, xs = np.nonzero(copied)
        sx, sy = p.transform.inverse((xs.astype(float), ys.astype(float)))
        sx, sy = np.clip(np.round(sx), 0, 63).astype(int), np.clip(np.round(sy), 0, 63).astype(int)
        np.testing.assert_array_equal(p.driver.image[ys, xs], source[sy, sx])  # every copied pixel
        if position == "matched":
            np.testing.assert_array_equal(p.driver.image[copied], source[copied])
        np.testing.assert_array_equal(p.driver.image[~copied], r.driver.image[~copied])  # the rest as repainted
        diff = np.abs(r.driver.image[copied].astype(int) - source[sy, sx].astype(int))
        close.append(float((diff <= 12).mean()))
    # repainted copies: the object's colours and texture, so most pixels differ from the reference's by > 12 levels
    assert np.mean(close) < 0.5


@pytest.mark.parametrize("carry_head", [True, False])
def test_an_object_beside_the_body_covers_none_of_its_head_or_torso(carry_head):
    from sharedattr.data.insilico.pairs import PairLayout, render_pairs

    beside = render_pairs(20, 64, seed=6, carry_head=carry_head, layout=PairLayout(object_at="beside"))
    shoulder = render_pairs(20, 64, seed=6, carry_head=carry_head)
    overlaps = []
    for b, s in zip(beside, shoulder):
        intact = b.references["intact"]
        core = intact.parts["torso"] | intact.parts.get("head", np.zeros((64, 64), dtype=bool))
        assert not (b.driver.parts["shape"] & core).any()
        overlaps.append((s.driver.parts["shape"] & core).any())
    assert any(overlaps)  # the default placement does cover them: the control changes something


def test_a_decoy_reference_has_the_objects_shape_where_its_head_was():
    from sharedattr.data.insilico.pairs import PairLayout, render_pairs

    for pair in render_pairs(6, 64, seed=8, layout=PairLayout(decoy=True)):
        intact, decoy = pair.references["intact"], pair.references["decoy"]
        assert "head" not in decoy.parts and set(decoy.pieces) >= {"shape/decoy", "torso/torso"}
        head = next(s for s in intact.shapes if s.name == "head")
        ys, xs = np.nonzero(decoy.pieces["shape/decoy"])
        assert np.hypot(xs.mean() - head.points[0][0], ys.mean() - head.points[0][1]) < head.size
        changed = intact.parts["head"] | decoy.pieces["shape/decoy"]
        np.testing.assert_array_equal(decoy.image[~changed], intact.image[~changed])  # same body elsewhere


@pytest.mark.parametrize("pieces", [True, False])
def test_reference_sensitivity_erases_only_the_copied_piece_with_piece_level_truth(tmp_path, pieces):
    from sharedattr.metrics.sharing import ReferenceSensitivityMetric
    from sharedattr.plugins.contracts import AttributionBatch

    stimuli = _hand_built_set(tmp_path, pieces)
    pair = [Pair(neuron=0, driver=1, reference=0, similarity=1.0, rank=0)]  # the body scored, the object its partner
    truth = pair_truth(stimuli, {"n": ("limbs", "head")}, ["n"], pair)
    images = PairImages.load(stimuli, pair, (8, 8), 1, truth)
    partner = torch.zeros(1, 1, 8, 8)
    partner[0, 0, 0:2] = 1.0  # the object: its copied arm on a black background

    def explain_with(partners):  # the body's map: 1 + the partner's pixel at each position
        return partners[:, 0] + 1.0

    batch = AttributionBatch(
        torch.nn.Identity(),
        torch.ones(1, 1, 8, 8),
        explain_with(partner),
        torch.zeros(1, dtype=torch.long),
        images.driver_masks,
        unshared_masks=images.driver_unshared,
        shared_parts=images.driver_parts,
        partner_parts=images.reference_parts,
        partners=partner,
        explain_with_partners=explain_with,
    )
    score = float(ReferenceSensitivityMetric(fill=0.0)(batch)[0])
    # before: arm 2 × 16, leg 1 × 16, head 1 × 16; erasing the partner's arm makes the arm 1 × 16.
    # piece level (the arm shared, leg and head not): share 32/64 → 16/48;
    # part level (arm and leg shared): 48/64 → 32/48
    expected = 1 - (16 / 48) / (32 / 64) if pieces else 1 - (32 / 48) / (48 / 64)
    assert score == pytest.approx(expected)
