"""Files that changed after sharedattr wrote them are found and never used: saved models, the feature cache, work
items, run folders rebuilt by ``sharedattr report``, manifests, and every JSON file read from a run or model folder.

Each test plants what a tester (or a damaged disk, or a killed run) leaves behind and checks the outcome: a one-line
:class:`UserError` naming the files and the fix, or a warning naming the file and a recomputation that gives the
same results as before; never a traceback, never a silently different result.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_configs import tiny_experiment

from sharedattr.cli import main
from sharedattr.config.validation import validate_experiment
from sharedattr.runtime.errors import UserError

DEEP = "[" * 100_000 + "]" * 100_000  # Python's json module raises RecursionError from about 1,000 levels


def one_line_error(capsys, argv: list[str], *fragments: str) -> str:
    """Run the CLI in-process: exit code 2, one ``error:`` line holding ``fragments``, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- a finished run, shared by the run-folder tests -------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    """One small finished run (2 neurons × 2 drivers, saliency, gini and deletion, no figures)."""
    out = tmp_path_factory.mktemp("integrity") / "run"
    config = tiny_experiment(
        tiny_data,
        name="integrity",
        cache=False,
        methods=["saliency"],
        metrics=["gini", {"name": "deletion", "steps": 4}],
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", json_config(out.parent / "config.json", config), "--out", str(out), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def json_config(path: Path, config: dict) -> str:
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


# -- case 1 and 2: saved models --------------------------------------------------------------------------------
@pytest.fixture
def saved_model(tmp_path, registry) -> Path:
    from sharedattr.encoding.model import EncodingModel
    from sharedattr.encoding.store import save_model
    from sharedattr.plugins.specs import BackboneSpec, ReadoutSpec

    backbone_spec = BackboneSpec(name="torchvision", model="resnet18", layer="layer1", input_size=32)
    readout_spec = ReadoutSpec(name="ridge")
    backbone = backbone_spec.build(registry=registry)
    readout = readout_spec.build(registry=registry)
    readout.initialize(backbone.latent_shape, 3)
    with torch.no_grad():
        for p in readout.parameters():
            p.copy_(torch.randn_like(p))
    model = EncodingModel(backbone, readout)
    return save_model(model, backbone_spec, readout_spec, ["a", "b", "c"], tmp_path / "model", {"fit_digest": "x"})


def edit_model_json(folder: Path, edit) -> None:
    meta = json.loads((folder / "model.json").read_text())
    edit(meta)
    (folder / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "what, edit",
    [
        ("neuron ids reordered (labels swapped)", lambda m: m.__setitem__("neuron_ids", ["b", "a", "c"])),
        ("a neuron renamed", lambda m: m["neuron_ids"].__setitem__(0, "z")),
        ("the readout spec", lambda m: m["readout"].__setitem__("folds", 3)),
        ("the backbone spec", lambda m: m["backbone"].__setitem__("layer", "layer2")),
        ("the fit digest a run reuses the model by", lambda m: m.__setitem__("fit_digest", "y")),
        ("a field added", lambda m: m.__setitem__("note", "hand-written")),
    ],
)
def test_a_model_json_edited_after_the_save_is_refused(saved_model, what, edit):
    from sharedattr.encoding.store import load_model, saved_digest

    before = load_model(saved_model)
    assert before.neuron_ids == ["a", "b", "c"]
    edit_model_json(saved_model, edit)
    with pytest.raises(UserError) as err:
        load_model(saved_model)
    message = str(err.value)
    assert "\n" not in message
    assert f"the saved model in {saved_model} is damaged: model.json does not match its checksum" in message
    assert "readout.safetensors" in message and "fit the model again with `sharedattr fit`" in message
    with pytest.warns(UserWarning, match=f"the saved model in {re.escape(str(saved_model))} is damaged"):
        assert saved_digest(saved_model) is None  # a run fits it again


def test_a_model_with_its_checksums_deleted_is_refused_as_damaged(saved_model):
    """The tester's case: the readout altered, then readout_checksum deleted (format 2 always records both)."""
    from sharedattr.encoding.store import load_model, saved_digest

    state = load_file(saved_model / "readout.safetensors")
    save_file({k: v * 2 for k, v in state.items()}, str(saved_model / "readout.safetensors"))
    for field in ("readout_checksum", "checksum"):
        edit_model_json(saved_model, lambda m, field=field: m.pop(field))
        with pytest.raises(UserError, match=r"model.json \(format 2\) lacks its checksum .* fit the model again"):
            load_model(saved_model)
        with pytest.warns(UserWarning, match="damaged, half-saved or written by an older version"):
            assert saved_digest(saved_model) is None


def test_a_model_of_the_format_before_checksums_is_refused(saved_model):
    """Format 1 (no checksum over model.json) cannot be verified, whatever else it holds."""
    from sharedattr.encoding.store import load_model

    def downgrade(meta):
        meta["format"] = 1
        meta.pop("checksum")

    edit_model_json(saved_model, downgrade)
    with pytest.raises(UserError, match=r"model format 1 was written by an older sharedattr.* fit the model again"):
        load_model(saved_model)
    edit_model_json(saved_model, lambda m: m.pop("readout_checksum"))  # format 1 of before readout checksums
    with pytest.raises(UserError, match="model format 1 was written by an older sharedattr"):
        load_model(saved_model)


def test_a_deep_or_huge_model_json_is_one_line(saved_model):
    from sharedattr.encoding.store import load_model

    (saved_model / "model.json").write_text(DEEP)
    with pytest.raises(UserError, match=r"model.json: not a readable model description \(nested too deeply"):
        load_model(saved_model)
    (saved_model / "model.json").write_text('{"neuron_ids": ["' + "x" * (64 << 20) + '"]}')
    with pytest.raises(UserError, match=r"model.json: not a readable model description \(larger than"):
        load_model(saved_model)


@pytest.mark.parametrize("damage", ["format 1", "checksum deleted", "neuron ids reordered"])
def test_a_fit_into_a_folder_with_an_unverifiable_model_fits_it_again_with_a_warning(tiny_config, tmp_path, damage):
    from sharedattr.encoding.store import load_model
    from sharedattr.experiment.stages import fit_experiment

    tiny_config["output"] = {"figures": False}
    spec = validate_experiment(tiny_config)
    fit_experiment(spec, tmp_path, progress=False, reuse=True)
    scores = (tmp_path / "scores.csv").read_bytes()

    def edit(meta):
        if damage == "format 1":
            meta.update(format=1)
            meta.pop("checksum")
        elif damage == "checksum deleted":
            meta.pop("checksum")
        else:
            meta["neuron_ids"] = meta["neuron_ids"][::-1]

    edit_model_json(tmp_path / "model", edit)
    with pytest.warns(UserWarning, match="damaged, half-saved or written by an older version: fitting it again"):
        again = fit_experiment(spec, tmp_path, progress=False, reuse=True)
    assert not again.reused and (tmp_path / "scores.csv").read_bytes() == scores
    assert load_model(tmp_path / "model").neuron_ids == again.fit.neuron_ids  # written whole again


# -- case 3: the feature cache ---------------------------------------------------------------------------------
def test_altered_feature_cache_values_are_found_recomputed_and_replaced(tiny_config, tmp_path):
    """Same shape, new values, written in place: the checksum in the file's name no longer matches."""
    from sharedattr.experiment.stages import fit_experiment

    tiny_config["output"] = {"figures": False}
    tiny_config["cache_dir"] = str(tmp_path / "cache")
    spec = validate_experiment(tiny_config)
    first = fit_experiment(spec, tmp_path / "a", progress=False)
    (cached,) = (tmp_path / "cache").glob("features-*.npy")
    assert cached.name.endswith(f"-{hashlib.sha256(cached.read_bytes()).hexdigest()}.npy")
    original = cached.read_bytes()
    values = np.load(cached, mmap_mode="r+")
    values[:5] *= 1.5  # what the tester did: the file stays a valid .npy of the right shape
    values.flush()
    del values
    with pytest.warns(UserWarning, match=f"feature cache file {re.escape(str(cached))} is damaged"):
        second = fit_experiment(spec, tmp_path / "b", progress=False)
    assert not second.cache_hit and first.cache_hit is False
    assert (tmp_path / "b" / "scores.csv").read_bytes() == (tmp_path / "a" / "scores.csv").read_bytes()
    assert list((tmp_path / "cache").glob("features-*.npy")) == [cached] and cached.read_bytes() == original
    assert fit_experiment(spec, tmp_path / "c", progress=False).cache_hit  # the replaced file is used again


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda good: np.save(good, np.load(good).astype(np.float64)), id="float64 values"),
        pytest.param(lambda good: np.save(good, np.load(good)[:-1]), id="one image less"),
        pytest.param(lambda good: good.write_bytes(good.read_bytes()[:-7]), id="truncated"),
        pytest.param(lambda good: good.write_bytes(b"not a npy file"), id="not npy"),
    ],
)
def test_a_cache_file_of_the_wrong_layout_is_refused_even_with_a_matching_checksum(tiny_config, tmp_path, plant):
    """A checksum only says the bytes are as some writer wrote them: the layout is checked too."""
    from sharedattr.data import StimulusSet
    from sharedattr.data.features import FeatureCache, extract_features
    from sharedattr.plugins.loading import get_registry

    spec = validate_experiment(tiny_config)
    stimuli = StimulusSet.load(spec.data.stimuli)
    backbone = spec.backbone.build(get_registry())
    backbone_spec, cache = spec.backbone.model_dump(mode="json"), tmp_path / "cache"
    good, _ = extract_features(backbone, stimuli, cache=FeatureCache(cache, backbone_spec), progress=False)
    good = good.clone()  # not the map of the file planted over below
    (path,) = cache.glob("features-*.npy")
    key = path.name.rsplit("-", 1)[0]
    plant(path)
    planted = path.with_name(f"{key}-{hashlib.sha256(path.read_bytes()).hexdigest()}.npy")
    path.rename(planted)
    with pytest.warns(UserWarning, match=f"feature cache file {re.escape(str(planted))} is damaged"):
        again, hit = extract_features(backbone, stimuli, cache=FeatureCache(cache, backbone_spec), progress=False)
    assert not hit and torch.equal(again, good) and not planted.exists()


# -- case 4 and 5: `sharedattr report` checks the folder against its manifest -----------------------------------
def edit_csv(path: Path, edit) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    edit(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_report_refuses_hand_edited_results(run_copy, capsys):
    page = (run_copy / "report.html").read_bytes()
    edit_csv(run_copy / "summary.csv", lambda rows: rows[0].__setitem__("mean", "0.999"))
    one_line_error(
        capsys,
        ["report", str(run_copy)],
        f"{run_copy}: 1 file(s) differ from what its run wrote (manifest.json): summary.csv: changed;",
        "run the same command again into this folder",
    )
    assert (run_copy / "report.html").read_bytes() == page  # nothing rendered


def test_report_refuses_a_folder_mixing_two_runs(run_copy, capsys):
    """A killed run of spec B wrote spec.json and its synthesis beside spec A's finished results."""
    saved = json.loads((run_copy / "spec.json").read_text())
    saved["spec"]["methods"] = [{"name": "integrated_gradients"}]
    saved["digest"] = "spec-b"
    (run_copy / "spec.json").write_text(json.dumps(saved))
    (run_copy / "synthesis").mkdir()
    (run_copy / "synthesis" / "scores.csv").write_text("neuron,synthesizer\nlimbs,gradient_ascent\n")
    line = one_line_error(capsys, ["report", str(run_copy)], "2 file(s) differ")
    assert "spec.json: changed" in line and "synthesis/scores.csv: not in the manifest" in line


def test_report_names_the_first_changed_files_and_counts_the_rest(run_copy, capsys):
    gone = sorted(["pairs.csv", "results.csv", *(f"work/{p.name}" for p in (run_copy / "work").iterdir())])
    assert len(gone) >= 7
    for name in gone:
        (run_copy / name).unlink()
    shown = "; ".join(f"{name}: missing" for name in gone[:5])
    argv = ["report", str(run_copy)]
    one_line_error(capsys, argv, f"{len(gone)} file(s) differ", shown, f"and {len(gone) - 5} more;")


def test_report_refuses_a_folder_without_manifest(run_copy, capsys):
    (run_copy / "manifest.json").unlink()
    one_line_error(
        capsys,
        ["report", str(run_copy)],
        f"{run_copy / 'manifest.json'} not found: the run that wrote {run_copy} did not finish",
        "run the same command again into this folder",
    )


def test_report_refuses_a_folder_a_live_run_is_writing(run_copy, capsys):
    import socket

    from sharedattr.runtime.run_folder import LOCK_NAME

    (run_copy / LOCK_NAME).write_text(f"{os.getpid()} {socket.gethostname()}\n")  # this process: alive
    one_line_error(capsys, ["report", str(run_copy)], "another sharedattr run", "is writing into")


def test_a_rebuilt_report_is_the_runs_own_page_and_keeps_the_manifest_clean(finished_run, run_copy, capsys):
    from sharedattr.runtime.manifest import verify_manifest

    page = (run_copy / "report.html").read_bytes()
    assert str(finished_run) not in page.decode() and not re.search(rb"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", page)
    (run_copy / "report.html").unlink()
    assert main(["report", str(run_copy)]) == 0
    assert capsys.readouterr().out.strip() == str(run_copy / "report.html")
    assert (run_copy / "report.html").read_bytes() == page  # another folder, another time: the same bytes
    assert verify_manifest(run_copy) == []
    assert main(["report", str(run_copy)]) == 0
    assert (run_copy / "report.html").read_bytes() == page and verify_manifest(run_copy) == []


# -- case 6: every JSON file of a run folder is read within bounds ---------------------------------------------
@pytest.mark.parametrize(
    "name, text",
    [
        ("spec.json", DEEP),
        ("spec.json", '{"spec": {"name": "\\ud800"}}'),  # a lone surrogate: the page could not be written as UTF-8
        ("timings.json", DEEP),
    ],
    ids=["deep spec", "surrogate spec", "deep timings"],
)
def test_report_on_a_hostile_json_file_is_one_line_naming_it(run_copy, capsys, name, text):
    """Even with a manifest that vouches for the file (rewritten after it), so the JSON reader itself is tested."""
    from sharedattr.runtime.manifest import write_manifest

    (run_copy / name).write_text(text)
    write_manifest(run_copy)
    one_line_error(capsys, ["report", str(run_copy)], str(run_copy / name))


def test_a_deep_components_json_falls_back_to_the_registry_as_a_damaged_one_does(run_copy, capsys):
    from sharedattr.runtime.manifest import write_manifest

    (run_copy / "components.json").write_text(DEEP)
    write_manifest(run_copy)
    assert main(["report", str(run_copy)]) == 0
    page = (run_copy / "report.html").read_text(encoding="utf-8")
    assert "components.json is unreadable (nested too deeply (more than 64 levels))" in page


def test_deep_pairs_metadata_in_the_maps_file_is_one_line(run_copy, capsys):
    from sharedattr.runtime.manifest import write_manifest

    maps = load_file(run_copy / "maps.safetensors")
    save_file(maps, str(run_copy / "maps.safetensors"), metadata={"pairs_json": DEEP})
    write_manifest(run_copy)
    one_line_error(capsys, ["report", str(run_copy)], f"{run_copy / 'maps.safetensors'}: damaged pairs metadata")


def test_the_bounded_json_reader(tmp_path):
    from sharedattr.runtime.json_files import DamagedJSON, read_json

    path = tmp_path / "x.json"
    cases = {
        DEEP: "nested too deeply",
        "[" * 65 + "]" * 65: "nested too deeply (more than 64 levels)",  # parses, but deeper than allowed
        '{"a": "\\udc00"}': "not valid Unicode",
        '{"\\ud800": 1}': "not valid Unicode",
        "1" * 5000: "not valid JSON",  # more digits than Python converts
        "{": "not valid JSON",
    }
    for text, reason in cases.items():
        path.write_text(text)
        with pytest.raises(DamagedJSON, match=re.escape(reason)):
            read_json(path)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DamagedJSON, match="not UTF-8"):
        read_json(path)
    path.write_text(json.dumps({"a": list(range(100))}))
    assert read_json(path) == {"a": list(range(100))}
    with pytest.raises(DamagedJSON, match="larger than 100 bytes"):
        read_json(path, max_bytes=100)
    path.write_text("[" * 64 + "]" * 64)
    assert read_json(path) is not None


# -- case 7: work items are checked for their shapes and dtypes ------------------------------------------------
def test_shape_validator_checks_keys_dimensions_sizes_and_dtypes():
    from sharedattr.runtime.work_store import shape_validator

    validate = shape_validator(
        {"images": ("S", 3, 8, 8), "history": (None, "S")}, {"prior": ("S", None, None, None), "cost/*": ()}
    )
    good = {"images": torch.zeros(2, 3, 8, 8), "history": torch.zeros(5, 2), "cost/s": torch.tensor(1.0)}
    assert validate(good) is None and validate({**good, "prior": torch.zeros(2, 1, 4, 4)}) is None
    bad = {
        "missing history": ({"images": good["images"]}, "missing history"),
        "0-d": ({**good, "history": torch.tensor(0.5)}, "'history' has 0 dimensions (), expected 2 [any, S]"),
        "int": ({**good, "images": torch.zeros(2, 3, 8, 8, dtype=torch.int64)}, "torch.int64, expected a floating"),
        "size": ({**good, "images": torch.zeros(2, 3, 8, 4)}, "'images' has shape (2, 3, 8, 4), expected [S, 3, 8, 8]"),
        "named size": ({**good, "history": torch.zeros(5, 3)}, "'images' has S = 2 but 'history' has S = 3"),
        "extra": ({**good, "other": torch.zeros(2)}, "unexpected tensor 'other'"),
        "cost not 0-d": ({**good, "cost/s": torch.zeros(2)}, "'cost/s' has 1 dimensions"),
    }
    for name, (tensors, problem) in bad.items():
        assert problem in (validate(tensors) or ""), name


@pytest.mark.parametrize(
    "kind, key, forged",
    [
        ("scores", "values", torch.tensor(0.5)),  # the tester's case: a crash in torch.cat before
        ("scores", "values", torch.ones(4, dtype=torch.int64)),
        ("maps", "driver", torch.zeros(4, 32)),  # maps without their width
        ("maps", "driver", torch.zeros(4, 16, 16)),  # maps of another image size
    ],
    ids=["0-d values", "integer values", "2-d maps", "16x16 maps"],
)
def test_a_work_item_of_the_wrong_shape_with_a_valid_checksum_is_recomputed(run_copy, kind, key, forged):
    from sharedattr.experiment.run import run_experiment
    from sharedattr.runtime.work_store import CHECKSUM_KEY, tensors_checksum

    results = (run_copy / "results.csv").read_bytes()
    items = sorted((run_copy / "work").glob(f"{kind}-*.safetensors"))
    for item in items:
        tensors = load_file(item)
        tensors[key] = forged
        save_file(tensors, str(item), {CHECKSUM_KEY: tensors_checksum(tensors)})
    spec = validate_experiment(json.loads((run_copy / "spec.json").read_text())["spec"])
    with pytest.warns(UserWarning, match=rf"work item .*{kind}-.*\.safetensors is damaged \('{key}' "):
        run = run_experiment(spec, run_copy, progress=False)
    assert run.reused["work_items_computed"] >= len(items)
    assert (run_copy / "results.csv").read_bytes() == results
    for item in items:  # rewritten sound
        rewritten = load_file(item)[key]
        assert rewritten.shape != forged.shape or rewritten.dtype != forged.dtype


# -- case 8: the manifest is read as untrusted input -----------------------------------------------------------
def test_a_deep_manifest_is_one_line_user_error(run_copy, capsys):
    from sharedattr.runtime.manifest import verify_manifest

    (run_copy / "manifest.json").write_text('{"format": 1, "files": ' + DEEP + "}")
    with pytest.raises(UserError, match=r"manifest.json: no readable manifest \(nested too deeply"):
        verify_manifest(run_copy)
    one_line_error(capsys, ["report", str(run_copy)], "manifest.json: no readable manifest (nested too deeply")


def test_manifest_entries_outside_the_folder_are_damaged_entries_never_opened(tmp_path, monkeypatch):
    from sharedattr.runtime import manifest
    from sharedattr.runtime.manifest import MANIFEST_NAME, file_record, verify_manifest, write_manifest

    folder, outside = tmp_path / "run", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_text("not the run's")
    (folder / "results.csv").write_text("a\n1\n")
    write_manifest(folder)
    listed = json.loads((folder / MANIFEST_NAME).read_text())
    record = file_record(outside)  # a true record: the old check would have vouched for the outside file
    for name in ["../outside.txt", str(outside), "./results.csv", "a//results.csv", "a\\b", "", "x\0y"]:
        listed["files"][name] = record
    listed["files"]["results.csv"] = {"bytes": "4", "sha256": record["sha256"]}
    (folder / MANIFEST_NAME).write_text(json.dumps(listed))
    (folder / "link").symlink_to(outside)
    listed["files"]["link"] = record
    (folder / MANIFEST_NAME).write_text(json.dumps(listed))
    opened = []
    monkeypatch.setattr(manifest, "file_record", lambda path: opened.append(path) or file_record(path))
    problems = verify_manifest(folder)
    assert opened == []
    damaged = [p for p in problems if "damaged manifest entry" in p]
    assert len(damaged) == 9 and len(problems) == 9, problems
    assert "../outside.txt: damaged manifest entry (not a plain relative path in the folder)" in problems
    assert "link: damaged manifest entry (leads outside the folder)" in problems
    assert "results.csv: damaged manifest entry (no valid bytes and sha256)" in problems
    assert "'x\\x00y': damaged manifest entry (not a plain relative path in the folder)" in problems


def test_update_manifest_records_a_rewritten_file_and_keeps_the_others(tmp_path):
    from sharedattr.runtime.manifest import MANIFEST_NAME, update_manifest, verify_manifest, write_manifest

    (tmp_path / "report.html").write_text("one")
    (tmp_path / "results.csv").write_text("a\n1\n")
    write_manifest(tmp_path)
    before = json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]["results.csv"]
    (tmp_path / "report.html").write_text("two, longer")
    assert verify_manifest(tmp_path) == ["report.html: changed"]
    assert verify_manifest(tmp_path, skip={"report.html"}) == []
    update_manifest(tmp_path, ["report.html"])
    assert verify_manifest(tmp_path) == []
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]["results.csv"] == before
    with pytest.raises(ValueError, match="not a plain relative path"):
        update_manifest(tmp_path, ["../x"])


# -- close relatives: JSON files of a model folder read elsewhere -----------------------------------------------
@pytest.mark.parametrize("text", [DEEP.encode(), b'{"a": "\xff"}'], ids=["deep", "not UTF-8"])
def test_a_damaged_diffusion_prior_config_is_one_user_error(tmp_path, text):
    """A diffusion prior folder's config.json: a RecursionError or UnicodeDecodeError traceback before."""
    from sharedattr.synthesis.prior import load_prior, shipped_prior_path

    with shipped_prior_path() as shipped:
        folder = Path(shutil.copytree(shipped, tmp_path / "prior"))
    (folder / "unet" / "config.json").write_bytes(text)
    with pytest.raises(UserError, match=f"cannot read {re.escape(str(folder / 'unet' / 'config.json'))}: DamagedJSON"):
        load_prior(folder)
