"""A real run killed mid-way (SIGKILL) and started again finishes, recomputes no finished item, leaves no corrupt
file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from safetensors.torch import load_file

from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.run import run_experiment
from sharedattr.runtime.io import atomic_write_bytes
from sharedattr.runtime.run_folder import remove_stale_temporaries


def kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(
                f"the run ended (exit {proc.returncode}) before it could be killed: {proc.stderr.read()[-2000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run never reached the point where it should be killed")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("stage", ["attribution", "synthesis"])
def test_a_run_killed_mid_way_resumes_without_recomputing_finished_items(stage, tiny_config, tmp_path, one_thread):
    tiny_config.update(batch_size=1)  # 4 pairs: 4 blocks per method, so the kill lands between items
    tiny_config["methods"] = ["saliency", {"name": "integrated_gradients", "n_steps": 16}, "parallel_backprop"]
    tiny_config["synthesis"] = [{"name": "gradient_ascent", "steps": 30, "n_seeds": 2}]
    tiny_config["selection"] = {"top_k": 3, "drivers_per_neuron": 2}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config))
    out = tmp_path / "killed"
    work = out / ("work" if stage == "attribution" else "synthesis/work")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sharedattr", "run", str(config), "--out", str(out), "--no-progress"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    kill_when(proc, lambda: len(list(work.glob("*.safetensors"))) >= 2)
    assert not (out / "results.csv").exists() or stage == "synthesis"
    assert not (out / "report.html").exists()
    finished = {p.name: p.read_bytes() for p in out.rglob("*.safetensors")}

    resumed = run_experiment(validate_experiment(tiny_config), out, progress=False)
    assert resumed.reused["model"] == 1  # the saved model, not a second fit
    for name, data in finished.items():  # every finished item was reused as it was, none rewritten
        matches = list(out.rglob(name))
        assert len(matches) == 1 and matches[0].read_bytes() == data
    assert resumed.reused["work_items_reused"] >= (2 if stage == "attribution" else 1)
    assert not list(out.rglob(".*.tmp"))  # temporaries of the killed writer are cleaned up

    clean = run_experiment(validate_experiment(tiny_config), tmp_path / "clean", progress=False)
    for name in ["results.csv", "pairs.csv", "summary.csv", "scores.csv"]:
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    maps, clean_maps = load_file(out / "maps.safetensors"), load_file(tmp_path / "clean" / "maps.safetensors")
    assert maps.keys() == clean_maps.keys() and all((maps[k] == clean_maps[k]).all() for k in maps)
    assert (
        resumed.reused["work_items_computed"] + resumed.reused["work_items_reused"]
        == clean.reused["work_items_computed"]
    )


def test_an_interrupted_atomic_write_leaves_the_old_file_and_only_a_temporary(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    target.write_text("old\n")

    def crash(fd, *args):  # the process dies between writing and renaming
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert not list(tmp_path.glob(".*.tmp"))  # cleaned up when the interpreter is alive to do it
    (tmp_path / "work").mkdir()
    stale = tmp_path / "work" / ".maps-abc.safetensors.x1y2.sharedattr.tmp"  # what a SIGKILL leaves
    stale.write_bytes(b"partial")
    keep = tmp_path / "work" / "maps-abc.safetensors"
    keep.write_bytes(b"complete")
    users = tmp_path / "work" / ".notes.tmp"  # a user's file that merely looks temporary
    users.write_bytes(b"mine")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and keep.exists() and users.read_bytes() == b"mine"


def test_damaged_work_items_are_recomputed_and_the_results_do_not_change(tiny_config, tmp_path, one_thread):
    spec = validate_experiment(tiny_config)
    out = tmp_path / "run"
    run_experiment(spec, out, progress=False)
    clean = {name: (out / name).read_bytes() for name in ["results.csv", "pairs.csv", "summary.csv"]}
    items = sorted((out / "work").glob("*.safetensors"))
    flipped = items[::2]
    for path in flipped:  # a one-byte flip inside the tensor bytes: still a valid safetensors file
        data = bytearray(path.read_bytes())
        data[-2] ^= 0x04
        path.write_bytes(bytes(data))
    shorter = items[1]  # a valid file with a shorter vector (what once shifted every later row)
    tensors = load_file(shorter)
    from safetensors.torch import save_file

    save_file({k: v[:-1] if v.dim() else v for k, v in tensors.items()}, str(shorter))
    with pytest.warns(UserWarning, match="is damaged") as caught:
        resumed = run_experiment(spec, out, progress=False)
    damaged = {str(w.message).split()[2] for w in caught if "is damaged" in str(w.message)}
    assert damaged == {str(p) for p in [*flipped, shorter]}
    assert resumed.reused["work_items_computed"] == len(damaged)
    for name, data in clean.items():
        assert (out / name).read_bytes() == data, name


def test_a_model_folder_left_half_saved_is_fitted_again(tiny_config, tmp_path, one_thread):
    """A kill between the readout's and model.json's writes leaves a new readout beside an old description."""
    spec = validate_experiment(tiny_config)
    out, other = tmp_path / "run", tmp_path / "other"
    run_experiment(spec, out, progress=False)
    scores = (out / "scores.csv").read_bytes()
    run_experiment(validate_experiment({**tiny_config, "readout": {"name": "ridge", "alphas": [1e6]}}), other)
    (out / "model" / "readout.safetensors").write_bytes((other / "model" / "readout.safetensors").read_bytes())
    from sharedattr.encoding.store import load_model
    from sharedattr.runtime.errors import UserError

    with pytest.raises(UserError, match=r"readout.safetensors does not match its model description .*model.json"):
        load_model(out / "model")
    with pytest.warns(UserWarning, match="damaged, half-saved or written by an older version: fitting it again"):
        again = run_experiment(spec, out, progress=False)
    assert again.reused["model"] == 0
    assert (out / "scores.csv").read_bytes() == scores
    load_model(out / "model")  # whole again


def test_neurons_sampled_together_resume_to_the_same_images(tiny_config, tmp_path, one_thread):
    """EGG samples neuron_batch neurons per loop; an item lost from a loop recomputes that whole loop, batched as
    before, so the resumed images equal the uninterrupted run's bit for bit and the other loops are reused."""
    tiny_config.update(selection={"top_k": 3, "drivers_per_neuron": 1})
    tiny_config["synthesis"] = [{"name": "egg", "steps": 3, "n_seeds": 2, "neuron_batch": 2}]  # loops [2, 1]
    spec = validate_experiment(tiny_config)
    out = tmp_path / "run"
    run_experiment(spec, out, progress=False)
    images = load_file(out / "synthesis" / "images.safetensors")
    scores = (out / "synthesis" / "scores.csv").read_text()
    assert "neurons_per_loop" in scores.splitlines()[0]
    items = sorted((out / "synthesis" / "work").glob("synthesis-*.safetensors"))
    assert len(items) == 3
    stamps = {p: p.stat().st_mtime_ns for p in items}
    items[0].unlink()
    (out / "synthesis" / "images.safetensors").unlink()
    run_experiment(spec, out, progress=False)
    assert items[0].is_file()  # recomputed with its loop; every other item read, not written again
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items() if p != items[0])
    again = load_file(out / "synthesis" / "images.safetensors")
    assert again.keys() == images.keys() and all(torch.equal(again[k], images[k]) for k in images)
    damaged = bytearray(items[1].read_bytes())  # a damaged item is reported once, and its loop recomputed
    damaged[-2] ^= 0x04
    items[1].write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match="is damaged") as caught:
        run_experiment(spec, out, progress=False)
    assert sum("is damaged" in str(w.message) for w in caught) == 1
    again = load_file(out / "synthesis" / "images.safetensors")
    assert all(torch.equal(again[k], images[k]) for k in images)


def test_synthesis_makes_the_same_images_on_any_thread_or_worker_count(tiny_config, tmp_path, monkeypatch):
    """EGG's diffusion UNet has convolutions whose bits torch's threading changes (its 1 × 1 shortcuts differed by
    3e-7 between 1 and 2 threads); computed on one thread (sharedattr.runtime.numerics), with the loops of EGG and
    gradient ascent side by side on 1 or 3 workers (each on its own replica), the images are the same."""
    tiny_config.update(selection={"top_k": 3, "drivers_per_neuron": 1}, methods=["saliency"], metrics=["gini"])
    tiny_config["synthesis"] = [
        {"name": "egg", "steps": 3, "n_seeds": 2, "neuron_batch": 2},
        {"name": "gradient_ascent", "steps": 3, "n_seeds": 2, "jitter": 2, "seed": 5},
    ]
    spec = validate_experiment(tiny_config)
    threads, images = torch.get_num_threads(), []
    try:
        for count, workers in ((1, "1"), (2, "1"), (2, "3")):
            torch.set_num_threads(count)
            monkeypatch.setenv("SHAREDATTR_WORKERS", workers)
            out = tmp_path / f"{count}-{workers}"
            run_experiment(spec, out, progress=False)
            images.append(load_file(out / "synthesis" / "images.safetensors"))
    finally:
        torch.set_num_threads(threads)
    for other in images[1:]:
        assert other.keys() == images[0].keys() and all(torch.equal(other[k], images[0][k]) for k in images[0])


def test_a_pairwise_methods_items_are_reused_without_reference_maps_of_single_image_methods(tiny_config, tmp_path):
    """With ``attribution.on_reference = false`` single-image methods map the driver only, but a pairwise method
    maps both images of its pair: its stored items hold the reference map too, and a second run reuses them (the
    item's declared shape once lacked the reference: every item was "damaged" and computed again)."""
    tiny_config.update(methods=["parallel_backprop", "saliency"], metrics=["gini"], attribution={"on_reference": False})
    spec = validate_experiment(tiny_config)
    first = run_experiment(spec, tmp_path, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "work item ... is damaged"
        again = run_experiment(spec, tmp_path, progress=False)
    assert again.reused["work_items_computed"] == 0
    assert again.reused["work_items_reused"] == first.reused["work_items_computed"] > 0
