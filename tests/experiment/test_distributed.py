"""Scale-out: ``torchrun --nproc-per-node 2 -m sharedattr run`` on the CPU (gloo) writes what one process writes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sharedattr.cli import main
from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.run import run_experiment
from sharedattr.runtime.distributed import Ranks, environment_world, rank_device
from sharedattr.runtime.errors import UserError

TIMING_COLUMNS = {"wall_s"}  # wall time differs between runs; everything else must match


def read_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def test_ranks_deal_items_round_robin_and_cover_each_once():
    world = 3
    owners = [[r for r in range(world) if Ranks(r, world).owns(i)] for i in range(10)]
    assert all(len(o) == 1 for o in owners)
    assert [o[0] for o in owners] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert [Ranks(r, world).share("abcdefg") for r in range(world)] == [list("adg"), list("be"), list("cf")]
    assert Ranks().is_main and not Ranks().distributed and Ranks().gather(5) == [5]


def test_environment_world_reads_torchrun_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert environment_world() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert environment_world() == (3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UserError, match="RANK=4"):
        environment_world()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(UserError, match="RANK='x' is not an integer"):
        environment_world()


def test_rank_device_gives_each_rank_its_gpu_and_leaves_the_cpu_alone():
    assert rank_device(torch.device("cpu"), Ranks(1, 2, 1)) == torch.device("cpu")
    assert rank_device(torch.device("cuda"), Ranks()) == torch.device("cuda")
    if torch.cuda.device_count() < 2:
        with pytest.raises(UserError, match="has no GPU"):
            rank_device(torch.device("cuda"), Ranks(5, 8, 5))


def test_the_demo_refuses_to_run_under_torchrun(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "the demo runs in one process" in capsys.readouterr().err


def test_torchrun_with_two_cpu_processes_writes_what_one_process_writes(tiny_config, tmp_path, one_thread):
    tiny_config.update(batch_size=2, selection={"top_k": 3, "drivers_per_neuron": 2})  # 6 pairs: 3 blocks
    tiny_config["methods"] = ["parallel_backprop", "saliency", {"name": "smoothgrad", "samples": 3}]
    tiny_config["synthesis"] = [{"name": "gradient_ascent", "steps": 4, "n_seeds": 2}]
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # one process on two threads against two processes on one thread each
    try:
        single = run_experiment(validate_experiment(tiny_config), tmp_path / "single", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(single.pairs) == 6

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "sharedattr",
            "run",
            str(config),
            "--out",
            str(tmp_path / "two"),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 3 methods × 3 blocks = 9 items, each with its maps and 2 metrics × 2 images of scores: 45 stored items
    assert "2 processes; work items computed per rank: " in proc.stdout
    by_rank = [int(n.strip(",")) for n in proc.stdout.split("computed per rank: ")[1].splitlines()[0].split()]
    assert sum(by_rank) == 45 and min(by_rank) > 0  # both ranks worked, no item twice

    two = tmp_path / "two"
    assert_same_outputs(tmp_path / "single", two)
    assert (two / "report.html").is_file()
    assert not list(two.rglob(".*.tmp"))  # every write was renamed into place

    # a run begun by two ranks and finished by one process (half the work items gone) writes the same bytes
    mixed = tmp_path / "mixed"
    shutil.copytree(two, mixed)
    items = sorted((mixed / "work").glob("*.safetensors")) + sorted((mixed / "synthesis" / "work").glob("*"))
    for path in items[::2]:
        path.unlink()
    for name in ["results.csv", "summary.csv", "maps.safetensors", "synthesis/images.safetensors"]:
        (mixed / name).unlink()
    resumed = run_experiment(validate_experiment(tiny_config), mixed, progress=False)
    assert resumed.reused["work_items_computed"] > 0 and resumed.reused["work_items_reused"] > 0
    assert_same_outputs(tmp_path / "single", mixed)


def assert_same_outputs(a, b):
    """The tables byte for byte (wall-time columns aside) and the tensors exactly."""
    for name in ["pairs.csv", "results.csv", "summary.csv", "scores.csv"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert read_rows(a / "synthesis" / "scores.csv") == read_rows(b / "synthesis" / "scores.csv")
    for name in ["maps.safetensors", "synthesis/images.safetensors"]:
        tensors_a, tensors_b = load_file(a / name), load_file(b / name)
        assert tensors_a.keys() == tensors_b.keys() and tensors_a, name
        assert all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a), name
