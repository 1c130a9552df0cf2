"""Performance targets, measured in one run as ratios on this machine: attribution, matching, ridge, memory.

    uv run python benchmarks/run.py [--backbone resnet50 --size 224 --items 8] [--no-write]
    uv run python benchmarks/run.py --only attribution,matching --items 4   # a subset, smaller
    uv run python benchmarks/run.py --only attribution --paths layer        # one path against its floor

1. *Parallel backprop throughput*: each path of
   :class:`~sharedattr.attribution.parallel_backprop.ParallelBackprop` (``--paths``; the default
   path first) on B (neuron, pair) items (2B images) against its own floor (:func:`floor_for`),
   the bare work that path cannot avoid on the same batch, device and threads (goal ≥ 0.8× its
   rate): ``layer``, one forward pass and one backward pass to the backbone output (the
   latents), never into the backbone; ``gradient``, a forward and a backward pass to the pixels;
   ``ig``, the same on n_steps × 2B images. Against a per-item loop (goal ≥ 5×), with the
   engine's overhead per item over the same floor run one item at a time (printed as measured,
   negative included); and the default path against Captum ``IntegratedGradients``
   (``n_steps = 50``) on the driver and the reference (reported). On a real-size torchvision
   backbone (random weights; ``--backbone``, ``--layer``, ``--size``) and on the shipped
   ``insilico_cnn`` (64 px), where Python overhead matters most.
2. *Matching*: :func:`sharedattr.selection.matching.match_drivers` (cosine) for G neurons × Q drivers
   × K candidates at D dimensions, its GFLOP/s (2·G·Q·K·D per run) against a bare
   ``torch.bmm`` of the same shapes (goal ≥ 0.8×), and a check that its matches equal the
   generic path's (contributions formed, ``similarity`` called).
3. *Ridge*: the shared-eigendecomposition ridge with ``cv = "loo"`` against scikit-learn's
   ``RidgeCV(alphas, alpha_per_target=True)`` on identical data: times (goal: faster), and
   the same chosen penalties and predictions.
4. *Memory*: peak resident memory of cached feature extraction of 1,000 and of 10,000 images
   on disk, each in a fresh process (goal: within 20%).

Timings: one warm-up, then the best of interleaved repeats (``--repeats``,
``--small-repeats``; the ratio of medians is shown too), since other work on a shared
machine only ever adds time; matching and bmm take the best of ``--match-repeats``
interleaved runs; the ridge fits and Captum IG run once. Prints a markdown table and appends it, with the machine
and command, to docs/benchmarks.md (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

SECTIONS = ("attribution", "matching", "ridge", "memory")
Row = tuple[str, str, str, str]  # target, goal, measured, result


# -- helpers -------------------------------------------------------------------------------------
def timed(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each function: one warm-up call each, then ``repeats`` interleaved rounds."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def once(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def spread(ts: list[float]) -> float:
    """max / min of repeats: 1.0 is perfectly steady."""
    return max(ts) / min(ts)


def verdict(value: float, goal: float, why: str = "") -> str:
    """``met`` when ``value ≥ goal``, else ``missed by <factor>× (why)``."""
    if value >= goal:
        return "met"
    return f"missed by {goal / value:.1f}×" + (f" ({why})" if why else "")


def fitted_ridge(d: int, n_neurons: int, seed: int = 0) -> nn.Module:
    """A ridge readout (avg pooling) with random weights, restored the supported way: initialize + load_state_dict."""
    from sharedattr.encoding.readouts.ridge import RidgeReadout

    g = torch.Generator().manual_seed(seed)
    readout = RidgeReadout(pooling="avg")
    readout.initialize((d,), n_neurons)
    readout.load_state_dict(
        {
            "_weight": torch.randn(n_neurons, d, generator=g) / d**0.5,
            "_bias": torch.randn(n_neurons, generator=g),
            "alpha": torch.ones(n_neurons, dtype=torch.float64),
        }
    )
    return readout


# -- 1. parallel backprop ------------------------------------------------------------------------
class Floor(NamedTuple):
    """The bare work one path of :class:`ParallelBackprop` cannot avoid, and nothing else.

    ``run(model, images [n, C, H, W], targets [n])`` returns the gradient it backpropagated (its
    work is a forward pass and a backward pass of the encoding model); ``label`` names it in the
    rows (e.g. ``"bare fwd + bwd to the latents"``).
    """

    run: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    label: str


def latent_floor(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The ``layer`` path's floor: a forward pass to the backbone output (no graph kept) and a backward pass from
    each image's target response back to that output only, never into the backbone: ∂r/∂F ``[n, K, h, w]``."""
    with torch.no_grad():
        latents = model.latents(images)
    latents.requires_grad_(True)
    (grad,) = torch.autograd.grad(model.readout(latents)[torch.arange(len(images)), targets].sum(), latents)
    return grad


def pixel_floor(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The ``gradient`` path's floor: a forward pass and a backward pass to the pixels, one VJP per image:
    ∂r/∂x ``[n, C, H, W]``."""
    x = images.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[torch.arange(len(images)), targets].sum(), x)
    return grad


def stepped_pixel_floor(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, n_steps: int) -> torch.Tensor:
    """The ``ig`` path's floor: :func:`pixel_floor` on ``n_steps`` copies of the ``n`` images in one batch, as the
    path's quadrature points go (``[n_steps · n, C, H, W]``; the path images themselves are the engine's work)."""
    return pixel_floor(model, images.repeat(n_steps, 1, 1, 1), targets.repeat(n_steps))


def floor_for(method: Any) -> Floor:
    """The floor that does the same work as ``method`` (a :class:`ParallelBackprop`), chosen by its ``path``.

    >>> floor_for(ParallelBackprop(model, path="layer")).run is latent_floor  # doctest: +SKIP
    True
    """
    path = method.params.path
    if path == "layer":
        return Floor(latent_floor, "bare fwd + bwd to the latents")
    if path == "gradient":
        return Floor(pixel_floor, "bare fwd + bwd to the pixels")
    if path == "ig":
        n_steps = method.params.n_steps
        return Floor(partial(stepped_pixel_floor, n_steps=n_steps), f"bare fwd + bwd to the pixels × {n_steps} steps")
    raise ValueError(f"benchmarks/run.py has no floor for parallel_backprop path {path!r}")


def engine_overhead(ms_per_item: float, floor: str) -> str:
    """The engine's time per item beyond its ``floor``'s (both one item at a time), as measured: a negative value
    is printed as it is and called noise, never clamped."""
    text = f"engine overhead {ms_per_item:+.1f} ms per item over the {floor}, one item at a time"
    return text + ("; negative: the floor is within timing noise of the engine" if ms_per_item < 0 else "")


@dataclass
class AttributionBench:
    """One backbone's attribution timings: the encoding ``model``, its ``label`` in the rows, ``items`` per batch
    (``path_items`` overrides it per path, e.g. the ``ig`` path's n_steps-fold batches), timed ``repeats``, and the
    Captum IG comparison on ``captum_items`` items with internal batch ``captum_batch``."""

    model: nn.Module
    label: str
    items: int
    repeats: int
    path_items: dict[str, int] = field(default_factory=dict)
    captum_items: int = 1
    captum_batch: int = 2
    n_steps: int | None = None  # the ig path's quadrature points; None: ParallelBackpropParams' default


def path_rows(bench: AttributionBench, path: str) -> tuple[list[Row], str, float]:
    """One path of :class:`ParallelBackprop` on B items (2B images) against its own floor (:func:`floor_for`),
    batched and as a per-item loop; also returns the batched seconds per item."""
    from sharedattr.attribution.parallel_backprop import ParallelBackprop

    items = bench.path_items.get(path, bench.items)
    steps = {} if bench.n_steps is None or path != "ig" else {"n_steps": bench.n_steps}
    method = ParallelBackprop(bench.model, path=path, **steps)
    floor = floor_for(method)
    g = torch.Generator().manual_seed(1)
    shape = (items, bench.model.in_channels, *bench.model.input_size)
    x_a, x_b = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    targets = torch.randint(0, bench.model.readout.weight.shape[0], (items,), generator=g)
    both, both_targets = torch.cat([x_a, x_b]), torch.cat([targets, targets])

    def floor_loop() -> None:  # the floor, one item (2 images) at a time: what small batches cost by themselves
        for i in range(items):
            floor.run(bench.model, both[i::items], both_targets[i::items])

    def loop() -> None:
        for i in range(items):
            method.attribute((x_a[i : i + 1], x_b[i : i + 1]), target=targets[i : i + 1])

    fns = {
        "floor": lambda: floor.run(bench.model, both, both_targets),
        "batched": lambda: method.attribute((x_a, x_b), target=targets),
        "loop": loop,
        "floor_loop": floor_loop,
    }
    t = timed(fns, bench.repeats)
    best = {k: min(v) for k, v in t.items()}  # best of: other work on the machine only ever adds time
    med = {k: statistics.median(v) for k, v in t.items()}
    per_item = best["batched"] / items
    floor_ratio = best["floor"] / best["batched"]
    loop_ratio = best["loop"] / best["batched"]
    images = f"{2 * items} images" if path != "ig" else f"{method.params.n_steps} × {2 * items} images"
    label = f"{bench.label}, {items} items"
    rows: list[Row] = [
        (
            f"parallel backprop ({path}) vs {floor.label} ({images}), {label}",
            "≥ 0.8×",
            f"{floor_ratio:.2f}× ({items / best['batched']:.2f} items/s vs floor {items / best['floor']:.2f}; "
            f"medians {med['floor'] / med['batched']:.2f}×)",
            verdict(floor_ratio, 0.8, "engine overhead"),
        ),
        (
            f"parallel backprop ({path}) vs per-item loop, {label}",
            "≥ 5×",
            f"{loop_ratio:.2f}× (medians {med['loop'] / med['batched']:.2f}×); "
            f"{engine_overhead(1000 * (best['loop'] - best['floor_loop']) / items, floor.label)}; "
            f"{1000 * per_item:.1f} ms per item batched",
            verdict(
                loop_ratio,
                5.0,
                f"compute-bound on CPU: the floor's own loop over single items takes "
                f"{best['floor_loop'] / best['floor']:.2f}× its batch's time",
            ),
        ),
    ]
    note = (
        f"{path}: best of {bench.repeats} (spread max/min: floor {spread(t['floor']):.2f}, batched "
        f"{spread(t['batched']):.2f}, loop {spread(t['loop']):.2f}, floor loop {spread(t['floor_loop']):.2f})"
    )
    return rows, note, per_item


def attribution_rows(bench: AttributionBench, paths: tuple[str, ...]) -> tuple[list[Row], str]:
    """Each path of parallel backprop against its own floor and a per-item loop; the first path against Captum IG."""
    from captum.attr import IntegratedGradients

    rows: list[Row] = []
    notes: list[str] = []
    per_item: dict[str, float] = {}
    for path in paths:
        r, n, per_item[path] = path_rows(bench, path)
        rows += r
        notes.append(n)
    g = torch.Generator().manual_seed(1)
    k = bench.captum_items
    x = torch.rand((2 * k, bench.model.in_channels, *bench.model.input_size), generator=g)
    targets = torch.randint(0, bench.model.readout.weight.shape[0], (k,), generator=g).repeat(2)
    ig = IntegratedGradients(bench.model)
    ig.attribute(x[:1], target=targets[:1], n_steps=2)  # warm-up
    t_ig, _ = once(lambda: ig.attribute(x, target=targets, n_steps=50, internal_batch_size=bench.captum_batch))
    ig_per_item, ours = t_ig / k, per_item[paths[0]]
    rows.append(
        (
            f"parallel backprop ({paths[0]}) vs Captum IG (n_steps 50, driver + reference), {bench.label}",
            "reported",
            f"{ig_per_item / ours:.0f}× faster ({ig_per_item:.2f} vs {ours:.3f} s per item)",
            "–",
        )
    )
    note = (
        f"{bench.label}: {'; '.join(notes)}. Captum IG timed once on {k} item(s) ({2 * k * 50} image passes, "
        f"internal batch {bench.captum_batch})."
    )
    return rows, note


def build_backbone(name: str, **params: Any) -> nn.Module:
    from sharedattr.plugins.loading import get_registry

    return get_registry().build("backbone", name, **params)


# -- 2. matching ---------------------------------------------------------------------------------
def matching_rows(neurons: int, drivers: int, candidates: int, dim: int, repeats: int) -> tuple[list[Row], str]:
    """match_drivers (cosine) against a bare bmm of the same shapes; matches checked against the generic path."""
    from sharedattr.selection.matchers import CosineMatcher
    from sharedattr.selection.matching import match_drivers

    g = torch.Generator().manual_seed(2)
    latents = torch.randn(drivers + candidates, dim, generator=g).relu_()  # pooled latents [S, D]
    readout = fitted_ridge(dim, neurons)
    driver_rows = torch.stack([torch.randperm(drivers, generator=g) for _ in range(neurons)])  # [G, Q]
    cand = torch.arange(drivers, drivers + candidates)
    args = (readout, latents, CosineMatcher(), driver_rows, cand, torch.arange(neurons), 1)
    match_drivers(readout, latents, CosineMatcher(), driver_rows[:2], cand, torch.arange(2), 1)  # warm-up
    chunk = max(1, min(neurons, (1 << 30) // (4 * (drivers + candidates) * dim)))
    a = torch.randn(chunk, drivers, dim, generator=g)
    b = torch.randn(chunk, dim, candidates, generator=g)
    torch.bmm(a[:1], b[:1])  # warm-up

    def bmm() -> None:  # the same [G, Q, D] × [G, D, K] products, `chunk` neurons per call
        for start in range(0, neurons, chunk):
            n = min(chunk, neurons - start)
            torch.bmm(a[:n], b[:n])

    t_ours, t_bmm = [], []
    for _ in range(repeats):  # interleaved, best of: both see the same load
        t, (scores, refs) = once(lambda: match_drivers(*args))
        t_ours.append(t)
        t_bmm.append(once(bmm)[0])
    t_ours, t_bmm = min(t_ours), min(t_bmm)
    flops = 2.0 * neurons * drivers * candidates * dim
    ratio = t_bmm / t_ours

    k = min(8, neurons)

    class Generic(nn.Module):  # the first k neurons of the same readout, without the shared-vector fast path
        def __init__(self) -> None:
            super().__init__()
            self.weight = readout.weight[:k]

        def pooled(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, None, :].repeat(1, k, 1)  # [B, k, D], materialised: not recognisably shared

    generic = match_drivers(Generic(), latents, CosineMatcher(), driver_rows[:k], cand, torch.arange(k), 1)
    same = bool(torch.equal(generic[1], refs[:k]) and torch.allclose(generic[0], scores[:k], rtol=1e-4, atol=1e-5))
    label = f"{neurons} neurons × {drivers} drivers × {candidates} candidates, D = {dim}"
    rows: list[Row] = [
        (
            f"matching (cosine) vs bare bmm, {label}",
            "≥ 0.8×",
            f"{ratio:.2f}× ({flops / t_ours / 1e9:.0f} vs {flops / t_bmm / 1e9:.0f} GFLOP/s; {t_ours:.1f} s vs "
            f"{t_bmm:.1f} s)",
            verdict(ratio, 0.8, "gathering and normalising the contributions"),
        ),
        (
            f"matching: same matches as the generic path ({k} neurons)",
            "equal",
            "equal" if same else "DIFFERENT",
            "met" if same else "missed",
        ),
    ]
    note = (
        f"Matching: {flops / 1e12:.1f} TFLOP nominal (2·G·Q·K·D); ridge's neurons share one vector per image, "
        f"so the cosine matcher runs one [G·Q, D] × [D, K] product and never forms the candidates' "
        f"[G, K, D] contributions; bmm in chunks of {chunk} neurons (1 GiB); best of {repeats} interleaved "
        f"runs each."
    )
    return rows, note


# -- 3. ridge ------------------------------------------------------------------------------------
def ridge_rows(images: int, features: int, neurons: int) -> tuple[list[Row], str]:
    """Our ridge (cv = loo) against scikit-learn RidgeCV with per-target alphas, on identical data."""
    from ridge import ALPHAS, planted
    from sklearn.linear_model import RidgeCV

    from sharedattr.encoding.readouts.ridge import RidgeReadout

    x, y = planted(images, features, neurons)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    t_ours, ours = once(lambda: RidgeReadout(alphas=ALPHAS, cv="loo").fit(xt, yt))
    t_sk, sk = once(
        lambda: RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(x.astype(np.float64), y.astype(np.float64))
    )
    probe = x[: min(200, images)]
    with torch.no_grad():
        pred_ours = ours(torch.from_numpy(probe)).numpy().astype(np.float64)
    pred_sk = sk.predict(probe.astype(np.float64))
    scale = np.abs(pred_sk).max()
    close = bool(np.allclose(pred_ours, pred_sk, rtol=1e-3, atol=1e-4 * scale))
    agree = int((ours.alpha.numpy() == np.asarray(sk.alpha_)).sum())
    label = f"{images} images × {features} features × {neurons} neurons, {len(ALPHAS)} penalties"
    rows: list[Row] = [
        (
            f"ridge (cv = loo) vs scikit-learn RidgeCV (per-target α), {label}",
            "faster",
            f"{t_sk / t_ours:.1f}× ({t_ours:.1f} s vs {t_sk:.1f} s)",
            verdict(t_sk / t_ours, 1.0, ""),
        ),
        (
            "ridge: same penalties as RidgeCV",
            "all neurons",
            f"{agree}/{neurons}",
            "met" if agree == neurons else f"missed ({neurons - agree} differ)",
        ),
        (
            "ridge: same predictions as RidgeCV (allclose)",
            "allclose",
            f"max |Δ| {np.abs(pred_ours - pred_sk).max():.1e} at scale {scale:.1f}",
            "met" if close else "missed",
        ),
    ]
    chosen = np.bincount(np.searchsorted(ALPHAS, ours.alpha.numpy()), minlength=len(ALPHAS)).tolist()
    note = (
        f"Ridge: both fits include the float64 conversion; predictions on {len(probe)} images, float32 weights "
        f"(ours) vs float64 (scikit-learn). Penalties chosen (count per α in {list(ALPHAS)}): {chosen}."
    )
    return rows, note


# -- 4. memory -----------------------------------------------------------------------------------
class WideProbe(nn.Module):
    """A cheap backbone with big latents: a 2×2 average pool, then a 1×1 convolution → ``[2048, 2, 2]``."""

    input_size = (32, 32)
    in_channels = 3
    latent_shape = (2048, 2, 2)

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Conv2d(3, 2048, 1))
        self.requires_grad_(False).eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def write_images(folder: Path, n: int) -> None:
    """``n`` random 32 px RGB PNGs and manifests ``manifest-<k>.csv`` of the first k for k in (n // 10, n)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["stimulus_id,path,category"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"im{i:05d}.png")
        lines.append(f"s{i},im{i:05d}.png,{'a' if i % 2 else 'b'}")
    for k in (n // 10, n):
        (folder / f"manifest-{k}.csv").write_text("\n".join(lines[: k + 1]) + "\n")


def peak_rss_kib() -> int:
    """This process's peak resident memory, KiB: ``VmHWM`` on Linux, else ``ru_maxrss``.

    Linux carries ``ru_maxrss`` over ``execve`` from the parent's memory (Python's subprocess
    may vfork), so a fresh child would report its parent's peak; ``VmHWM`` belongs to the new
    address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(manifest: str, cache: str) -> None:
    """In a fresh process: extract cached features; print the peak resident memory before and after (KiB)."""
    from sharedattr.data import StimulusSet
    from sharedattr.data.features import FeatureCache, extract_features

    stimuli = StimulusSet.load(manifest)
    backbone = WideProbe()
    before = peak_rss_kib()
    latents, hit = extract_features(
        backbone, stimuli, cache=FeatureCache(Path(cache), {"name": "wide-probe"}), batch_size=64, progress=False
    )
    peak = peak_rss_kib()
    print(
        json.dumps(
            {
                "images": len(stimuli),
                "before_kib": before,
                "peak_kib": peak,
                "hit": hit,
                "file_bytes": sum(f.stat().st_size for f in Path(cache).glob("features-*.npy")),
                "shape": list(latents.shape),
            }
        )
    )


def memory_rows(n: int, workdir: Path) -> tuple[list[Row], str]:
    """Peak RSS of cached extraction of n/10 and n images, each in a fresh process."""
    folder = workdir / "images"
    write_images(folder, n)
    results = []
    for k in (n // 10, n):
        cache = workdir / f"cache-{k}"
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(folder / f"manifest-{k}.csv"), str(cache)],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    small, large = results
    growth = large["peak_kib"] / small["peak_kib"] - 1
    mib = 1 / 1024
    rows: list[Row] = [
        (
            f"feature extraction peak RSS, {small['images']} vs {large['images']} images (cached, fresh processes)",
            "< 20% apart",
            f"{small['peak_kib'] * mib:.0f} vs {large['peak_kib'] * mib:.0f} MiB ({100 * growth:+.1f}%); "
            f"cache files {small['file_bytes'] / 2**20:.0f} vs {large['file_bytes'] / 2**20:.0f} MiB",
            "met" if abs(growth) < 0.2 else f"missed by {100 * (abs(growth) - 0.2):.0f} points",
        ),
    ]
    note = (
        f"Memory: latents [2048, 2, 2] float32 per image (32 KiB), 32 px PNGs on disk, batch 64; resident memory "
        f"after imports, before extraction: {small['before_kib'] * mib:.0f} and "
        f"{large['before_kib'] * mib:.0f} MiB "
        f"(peak RSS read from VmHWM: ru_maxrss would carry the parent's peak over exec)."
    )
    return rows, note


# -- main ----------------------------------------------------------------------------------------
def parse_paths(parser: argparse.ArgumentParser, value: str | None) -> tuple[str, ...]:
    """``--paths`` → the paths to time; by default every path of parallel_backprop, its default path first."""
    from typing import get_args

    from sharedattr.attribution.parallel_backprop import ParallelBackpropParams
    from sharedattr.attribution.parallel_backprop import Path as BackpropPath

    known = get_args(BackpropPath)
    if value is None:
        default = ParallelBackpropParams.model_fields["path"].default
        return (default, *[p for p in known if p != default])
    paths = tuple(p.strip() for p in value.split(",") if p.strip())
    unknown = sorted(set(paths) - set(known))
    if unknown or not paths:
        parser.error(f"--paths: unknown path(s) {unknown}; choose from {', '.join(known)}")
    return paths


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    parser.add_argument("--backbone", default="resnet50", help="torchvision model (random weights) for attribution")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--size", type=int, default=224, help="input size of the torchvision backbone, pixels")
    parser.add_argument("--items", type=int, default=8, help="(neuron, pair) items per batch on that backbone")
    parser.add_argument("--small-items", type=int, default=32, help="items per batch on insilico_cnn (64 px)")
    parser.add_argument("--neurons", type=int, default=500, help="readout neurons in the attribution models")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats on the torchvision backbone")
    parser.add_argument("--small-repeats", type=int, default=15, help="timed repeats on insilico_cnn (fast, noisy)")
    parser.add_argument("--ig-items", type=int, default=1, help="items Captum IG attributes on the big backbone")
    parser.add_argument(
        "--paths",
        default=None,
        help="comma-separated parallel_backprop paths to time, each against its own floor (default: every path, "
        "the default path first; the first is compared with Captum IG)",
    )
    parser.add_argument(
        "--ig-path-items", type=int, default=2, help="items per batch of the ig path there (n_steps × 2 images each)"
    )
    parser.add_argument("--small-ig-path-items", type=int, default=4, help="items per ig-path batch on insilico_cnn")
    parser.add_argument("--ig-steps", type=int, default=None, help="n_steps of the ig path (default: its Params')")
    parser.add_argument(
        "--match",
        type=int,
        nargs=4,
        default=[500, 1000, 1000, 2048],
        metavar=("G", "Q", "K", "D"),
        help="matching: neurons, drivers per neuron, candidates, dimensions",
    )
    parser.add_argument("--match-repeats", type=int, default=3, help="interleaved runs of matching and bmm (best of)")
    parser.add_argument(
        "--ridge",
        type=int,
        nargs=3,
        default=[2000, 50000, 500],
        metavar=("N", "D", "NEURONS"),
        help="ridge: images, features, neurons",
    )
    parser.add_argument("--memory-images", type=int, default=10000, help="the larger set; the smaller has a tenth")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from record import machine, print_and_append

    rows: list[Row] = []
    notes: list[str] = []
    start = time.perf_counter()
    if "attribution" in only:
        from sharedattr.encoding.model import EncodingModel

        paths = parse_paths(parser, args.paths)
        big = build_backbone("torchvision", model=args.backbone, layer=args.layer, input_size=args.size)
        bench = AttributionBench(
            EncodingModel(big, fitted_ridge(big.latent_shape[0], args.neurons)).eval(),
            f"{args.backbone} {args.layer} (d = {big.latent_shape[0]}), {args.size} px",
            args.items,
            args.repeats,
            {"ig": args.ig_path_items},
            args.ig_items,
            2 * args.items,
            args.ig_steps,
        )
        r, n = attribution_rows(bench, paths)
        rows += r
        notes.append(n)
        del big, bench
        small = build_backbone("insilico_cnn", layer="block3", input_size=64)
        bench = AttributionBench(
            EncodingModel(small, fitted_ridge(small.latent_shape[0], args.neurons)).eval(),
            f"insilico_cnn block3 (d = {small.latent_shape[0]}), 64 px",
            args.small_items,
            args.small_repeats,
            {"ig": args.small_ig_path_items},
            min(4, args.small_items),
            200,
            args.ig_steps,
        )
        r, n = attribution_rows(bench, paths)
        rows += r
        notes.append(n)
    if "matching" in only:
        r, n = matching_rows(*args.match, args.match_repeats)
        rows += r
        notes.append(n)
    if "ridge" in only:
        r, n = ridge_rows(*args.ridge)
        rows += r
        notes.append(n)
    if "memory" in only:
        with tempfile.TemporaryDirectory(prefix="sharedattr-bench-") as tmp:
            r, n = memory_rows(args.memory_images, Path(tmp))
        rows += r
        notes.append(n)
    wall = time.perf_counter() - start
    lines = [
        "### Performance targets (benchmarks/run.py)",
        "",
        "| target | goal | measured | result |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t} | {g} | {m} | {v} |" for t, g, m, v in rows]
    lines += ["", *[f"- {n}" for n in notes], "", f"Total wall time {wall:.0f} s. {machine('cpu')}", ""]
    print_and_append("\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
