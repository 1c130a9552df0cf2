"""Feature extraction streams batches into the cache file; an interrupted extraction leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sharedattr.data import StimulusSet
from sharedattr.data.features import FeatureCache, extract_features
from sharedattr.testing import TinyBackbone

SPEC = {"name": "tiny-test-backbone", "seed": 0}


def stimulus_set(folder, n: int = 10) -> StimulusSet:
    """``n`` random 16 px RGB images in two categories, from a manifest on disk."""
    rng = np.random.default_rng(0)
    lines = ["stimulus_id,path,category"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
        lines.append(f"s{i},im{i}.png,{'a' if i % 2 else 'b'}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return StimulusSet.load(folder / "manifest.csv")


class FailingBackbone(TinyBackbone):
    """The tiny backbone, raising on its ``fail_on``-th call (0-based)."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.fail_on, self.calls = fail_on, 0

    def forward(self, x):
        self.calls += 1
        if self.calls - 1 == self.fail_on:
            raise RuntimeError("backbone failed mid-way")
        return super().forward(x)


@pytest.fixture
def stimuli(tmp_path):
    folder = tmp_path / "stimuli"
    folder.mkdir()
    return stimulus_set(folder)


def test_cached_extraction_writes_the_latents_and_reads_them_back(stimuli, tmp_path):
    backbone = TinyBackbone()
    cache = tmp_path / "cache"
    latents, hit = extract_features(backbone, stimuli, cache=FeatureCache(cache, SPEC), batch_size=3, progress=False)
    assert not hit and latents.shape == (10, *backbone.latent_shape)
    with torch.no_grad():
        expected = backbone(backbone.preprocess(stimuli.load_images((16, 16), 3)))
    torch.testing.assert_close(latents, expected, rtol=1e-6, atol=1e-6)
    (file,) = cache.iterdir()
    assert file.name.startswith("features-") and file.suffix == ".npy"
    on_disk = np.load(file)  # a valid .npy: header and data
    assert on_disk.dtype == np.float32 and on_disk.shape == tuple(latents.shape)
    np.testing.assert_array_equal(on_disk, latents.numpy())
    reference = np.lib.format.open_memmap(
        tmp_path / "reference.npy", mode="w+", dtype=np.float32, shape=on_disk.shape
    )  # the layout the cache always had
    reference[:] = on_disk
    reference.flush()
    del reference
    assert (tmp_path / "reference.npy").read_bytes() == file.read_bytes()
    again, hit = extract_features(backbone, stimuli, cache=FeatureCache(cache, SPEC), batch_size=4, progress=False)
    assert hit
    torch.testing.assert_close(again, latents, rtol=0, atol=0)
    without_cache, hit = extract_features(backbone, stimuli, batch_size=3, progress=False)
    assert not hit
    torch.testing.assert_close(without_cache, latents, rtol=0, atol=0)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fail_on", [0, 2])
def test_an_interrupted_extraction_leaves_no_cache_file_and_no_temporary_file(
    stimuli, tmp_path, fail_on, workers, monkeypatch
):
    monkeypatch.setenv("SHAREDATTR_WORKERS", str(workers))
    cache = tmp_path / "cache"
    backbone = FailingBackbone(fail_on)
    with pytest.raises(RuntimeError, match="mid-way"):
        extract_features(backbone, stimuli, cache=FeatureCache(cache, SPEC), batch_size=3, progress=False)
    # it stops at the failing batch; side by side, the batches already started (at most 2 per worker) finish
    assert fail_on + 1 <= backbone.calls <= fail_on + 2 * workers - (workers == 1)
    assert list(cache.iterdir()) == []  # neither features-*.npy nor .features-*.tmp
    latents, hit = extract_features(
        TinyBackbone(), stimuli, cache=FeatureCache(cache, SPEC), batch_size=3, progress=False
    )
    assert not hit and latents.shape[0] == 10 and len(list(cache.iterdir())) == 1


def test_latents_of_the_wrong_shape_are_an_error_not_a_corrupt_file(stimuli, tmp_path):
    class Wrong(TinyBackbone):
        @property
        def latent_shape(self):
            return (6, 4, 5)

    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="latent_shape"):
        extract_features(Wrong(), stimuli, cache=FeatureCache(cache, SPEC), batch_size=3, progress=False)
    assert list(cache.iterdir()) == []


def test_a_killed_extractions_partial_file_is_removed_and_a_live_ones_kept(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from sharedattr.data.features import remove_dead_writers_temporaries

    path = tmp_path / "features-abc.npy"
    host = socket.gethostname()
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    dead = tmp_path / f".features-abc.npy.{host}.{dead_pid}.sharedattr.tmp"  # what a SIGKILL leaves
    live = tmp_path / f".features-abc.npy.{host}.{os.getpid()}.sharedattr.tmp"  # another extraction, still running
    remote = tmp_path / f".features-abc.npy.other-host.{dead_pid}.sharedattr.tmp"  # cannot tell: kept
    other = tmp_path / f".features-xyz.npy.{host}.{dead_pid}.sharedattr.tmp"  # another cache file's
    for f in (dead, live, remote, other):
        f.write_bytes(b"partial")
    assert remove_dead_writers_temporaries(path) == 1
    assert not dead.exists() and live.exists() and remote.exists() and other.exists()


def test_releasing_a_cached_maps_pages_keeps_its_values(tmp_path):
    """``release_pages`` drops a cached feature file's resident pages (they are read again from the file) and leaves
    features held in memory alone."""
    import numpy as np
    import torch

    from sharedattr.data.features import _open, release_pages

    values = np.random.default_rng(0).standard_normal((64, 8, 4, 4)).astype(np.float32)
    np.save(tmp_path / "features.npy", values)
    mapped = _open(tmp_path / "features.npy")
    before = mapped.clone()
    assert release_pages(mapped) is True
    assert torch.equal(mapped, before) and torch.equal(mapped[5:9], torch.from_numpy(values[5:9]))
    in_memory = torch.from_numpy(values.copy())
    assert release_pages(in_memory) is False
    assert torch.equal(in_memory, before)


def test_batches_side_by_side_give_the_latents_of_one_worker_in_order(tmp_path, monkeypatch):
    """Feature batches run as pieces on the process's workers (each on one thread, in its own inference mode): any
    number of workers writes the same latents, in stimulus order, into memory and into the cache."""
    from sharedattr.plugins.loading import get_registry

    folder = tmp_path / "stimuli"
    folder.mkdir()
    stimuli = stimulus_set(folder, n=10)
    backbone = get_registry().build("backbone", "insilico_cnn", layer="block3")  # input gradients aside, its
    results = []  # forward pass is what oneDNN computes per batch
    for workers in ("1", "3"):
        monkeypatch.setenv("SHAREDATTR_WORKERS", workers)
        plain, _ = extract_features(backbone, stimuli, batch_size=3, progress=False)
        cached, hit = extract_features(
            backbone, stimuli, batch_size=3, progress=False, cache=FeatureCache(tmp_path / workers, {"w": workers})
        )
        assert not hit and not plain.requires_grad
        results.append((plain, cached))
    one, three = results
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1]) and torch.equal(one[0], one[1])
    with torch.inference_mode():
        first = backbone(backbone.preprocess(stimuli.load_images(backbone.input_size, 3, range(3))))
    assert torch.equal(one[0][:3], first)  # stimulus order
