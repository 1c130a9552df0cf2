"""benchmarks/probe_backbones.py: its probe set shows each part alone, and --quick probes every backbone and layer."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sharedattr.data.insilico.pairs import SHIFT
from sharedattr.encoding.backbones.insilico_cnn import DEFAULT_ARCHITECTURE, LAYERS, InsilicoCNN, file_metadata
from sharedattr.runtime.io import atomic_save_tensors
from sharedattr.runtime.numerics import seeded_global_rng

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports benchmarks/record.py
    import probe_backbones

    return probe_backbones


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_each_part_is_shown_alone_at_the_instance_target_and_its_piece_is_moved_as_the_pairs_move(probe):
    alone, at_target, moved, background = probe.instance(0, 3, 5, 64)
    assert probe.instance(0, 3, 5, 64)[0][0].tobytes() == alone[0].tobytes()  # seeded
    empty = background[0]
    assert all(b is empty for b in background)
    masks = [(image != empty).any(-1) for image in alone]  # the painting is the same: only the part's pixels differ
    assert all(m.sum() > 10 for m in masks)
    centres = [centroid(m) for m in masks]
    for c in centres[1:]:  # every part of an instance sits at the same target point
        assert np.abs(c - centres[0]).max() < 1.5
    assert np.all((probe.TARGET[0] * 64 - 1 <= centres[0]) & (centres[0] <= probe.TARGET[1] * 64 + 1))
    head, limbs = probe.PARTS.index("head"), probe.PARTS.index("limbs")
    assert masks[head].sum() < masks[limbs].sum()  # limbs alone: four limbs; the head alone: a disc
    for here, there in zip(at_target, moved):
        here_mask, there_mask = (here != empty).any(-1), (there != empty).any(-1)
        distance = float(np.linalg.norm(centroid(there_mask) - centroid(here_mask)))
        assert SHIFT[0] - 3 <= distance <= SHIFT[1] + 3  # rotation and scale are about the centroid
    # the moved piece of the limbs is one arm, smaller than the four limbs
    assert (at_target[limbs] != empty).any(-1).sum() < masks[limbs].sum()


def test_a_grey_instance_is_repeated_to_rgb(probe):
    alone, *_ = probe.instance(0, 1, 0, 32)
    assert alone[0].shape == (32, 32, 3) and (alone[0] == alone[0][..., :1]).all()


def test_the_quick_probe_runs_every_backbone_and_layer_and_a_zoo_file(probe, tmp_path, capsys, monkeypatch):
    zoo = tmp_path / "zoo"
    with seeded_global_rng(0):  # the random backbone's weights (seed 0), as a zoo file
        net = InsilicoCNN.from_architecture(DEFAULT_ARCHITECTURE)
    atomic_save_tensors(zoo / "copy-of-random.safetensors", net.state_dict())
    monkeypatch.setattr(sys, "argv", ["probe_backbones.py", "--quick"])
    work = tmp_path / "work"
    probe.main(["--quick", "--instances", "2", "--no-write", "--zoo", str(zoo), "--workdir", str(work)])
    out = capsys.readouterr().out
    with open(work / "probe.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(probe.COLUMNS)
    names = ["random", "insilico-v1", "insilico-resnet18-v1", "copy-of-random"]
    assert [(r["backbone"], r["layer"]) for r in rows] == [(n, layer) for n in names for layer in LAYERS]
    for row in rows:
        values = {c: float(row[c]) for c in probe.COLUMNS[5:]}
        assert all(math.isfinite(v) for v in values.values()), row
        for c in ("part_specificity", "I_head_limbs", "I_head_torso", "selective_mass"):
            assert 0 <= values[c] <= 1 and 0 <= values[f"{c}_evoked"] <= 1
        assert values["erf_r50"] > 0 and values["erf_rms"] > 0
    by = {(r["backbone"], r["layer"]): r for r in rows}
    for layer in LAYERS:  # the same weights give the same indices
        assert by[("copy-of-random", layer)] | {"backbone": "random"} == by[("random", layer)]
    radii = [float(by[("insilico-v1", layer)]["erf_rms"]) for layer in LAYERS]
    assert radii == sorted(radii)  # deeper layers see more of the image
    assert "**On the evoked latents**" in out and "| insilico-resnet18-v1 | block4 |" in out
    assert "appended to" not in out


def test_a_zoo_folder_that_is_missing_or_holds_a_foreign_file_exits_2_with_the_file_named(probe, tmp_path, capsys):
    with pytest.raises(SystemExit) as missing:
        probe.main(["--quick", "--no-write", "--zoo", str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "w")])
    assert missing.value.code == 2 and "--zoo" in capsys.readouterr().err
    zoo = tmp_path / "zoo"
    atomic_save_tensors(zoo / "other.safetensors", {"weight": torch.zeros(2, 2)})
    with pytest.raises(SystemExit) as foreign:
        probe.main(["--quick", "--instances", "1", "--no-write", "--zoo", str(zoo), "--workdir", str(tmp_path / "w")])
    assert foreign.value.code == 2 and "other.safetensors" in capsys.readouterr().err
    grey = DEFAULT_ARCHITECTURE | {"in_channels": 1}
    (zoo / "other.safetensors").unlink()
    atomic_save_tensors(
        zoo / "grey.safetensors",
        InsilicoCNN.from_architecture(grey).state_dict(),
        file_metadata(grey, (0.5,), (0.25,)),
    )
    with pytest.raises(SystemExit) as one_channel:
        probe.main(["--quick", "--instances", "1", "--no-write", "--zoo", str(zoo), "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert one_channel.value.code == 2 and "grey.safetensors" in err and "3 input channels" in err
    assert not (tmp_path / "w" / "probe.csv").exists()


def test_the_erf_is_averaged_over_every_part_of_instances_of_both_colour_modes(probe):
    rows = probe.erf_rows(2 * 64 * len(probe.PARTS), 64)  # 64 instances per colour mode, rows colour-major
    parts = rows % len(probe.PARTS)
    assert len(rows) == 64 and all((parts == p).sum() == 16 for p in range(len(probe.PARTS)))
    instances = rows // len(probe.PARTS)
    assert (instances < 64).sum() == (instances >= 64).sum() == 32  # grey and RGB alike
    assert len(probe.erf_rows(8, 64)) == 8  # no more than the probe set holds
