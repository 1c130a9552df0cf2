"""Training of the ``insilico_cnn`` backbone's network on the in-silico stimuli (part-presence task).

``scripts/train_insilico_cnn.py`` runs :func:`train` with the default :class:`TrainConfig`
and :func:`save` writes ``sharedattr/assets/insilico_cnn.safetensors`` and its record
``insilico_cnn.json``. The task is multi-label: for each part of
:data:`~sharedattr.data.insilico.render.PARTS`, is it visible in the image
(:func:`part_presence`)? Training and test sets are rendered in memory with different
seeds; every image of a set depends only on its spec (:class:`SetSpec`), so the record
names the test sets exactly and anyone can re-render them.

On the CPU, training is deterministic for a given machine and thread count
(``torch.use_deterministic_algorithms``); CUDA runs are not bit-reproducible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sharedattr.data.insilico.render import PARTS, RenderedSet, render_set
from sharedattr.encoding.backbones.insilico_cnn import (
    DEFAULT_ARCHITECTURE,
    DEFAULT_MEAN,
    DEFAULT_STD,
    FORMAT,
    FORMAT_VERSION,
    LAYERS,
    RESNET18_ARCHITECTURE,
    SHIPPED_WEIGHTS,
    InsilicoCNN,
    file_metadata,
    parameter_count,
)
from sharedattr.encoding.readouts.training import reproducible_training
from sharedattr.runtime.io import atomic_save_tensors, atomic_write_json

MIN_PART_PIXELS = 4
"""A part is present in an image when at least this many of its pixels are visible."""


def part_presence(parts: Mapping[str, np.ndarray], min_pixels: int = MIN_PART_PIXELS) -> np.ndarray:
    """Part-presence labels ``[N, len(PARTS)]`` bool from visible part masks ``{part: [N, H, W]}``, in PARTS order."""
    return np.stack([parts[p].reshape(len(parts[p]), -1).sum(1) >= min_pixels for p in PARTS], axis=1)


@dataclass(frozen=True)
class SetSpec:
    """A rendered stimulus set:
    ``render_set(n_per_category, size, channels=channels, seed=seed, noise_std=noise_std)``."""

    n_per_category: int
    size: int
    channels: int
    seed: int
    noise_std: float = 4.0

    def render(self, n_per_category: int | None = None) -> RenderedSet:
        """The set, or its first ``n_per_category`` images per category (the same images as in the full set)."""
        n = self.n_per_category if n_per_category is None else min(n_per_category, self.n_per_category)
        return render_set(n, self.size, channels=self.channels, seed=self.seed, noise_std=self.noise_std)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (and the test sets they are scored on)."""

    train_sets: tuple[SetSpec, ...] = (
        SetSpec(1800, 64, 1, seed=1),
        SetSpec(1800, 64, 3, seed=2),
        SetSpec(600, 96, 1, seed=3),
        SetSpec(600, 96, 3, seed=4),  # scale robustness
    )
    test_sets: tuple[SetSpec, ...] = (
        SetSpec(500, 64, 1, seed=1001),
        SetSpec(500, 64, 3, seed=1002),
        SetSpec(150, 96, 1, seed=1003),
        SetSpec(150, 96, 3, seed=1004),
    )
    check_n_per_category: int = 50  # the first images of each test set, scored again by the unit tests
    architecture: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    min_part_pixels: int = MIN_PART_PIXELS
    epochs: int = 4  # with BatchNorm batch statistics
    frozen_bn_epochs: int = 1  # then with BatchNorm statistics recalibrated over all sizes and frozen
    batch_size: int = 64
    lr: float = 4e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-4  # AdamW, on convolution and linear weights only
    warmup_fraction: float = 0.15
    hflip: bool = True  # augmentation: mirror half the images of every batch (presence is mirror-invariant)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None: torch's default)
    weights_name: str = "insilico-v1"

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["train_sets"] = [s.as_dict() for s in self.train_sets]
        out["test_sets"] = [s.as_dict() for s in self.test_sets]
        out["architecture"] = dict(self.architecture)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out


def resnet18_config(**overrides: Any) -> TrainConfig:
    """``insilico-resnet18-v1``: the same task, data, schedule and seeds on the ResNet-18-shaped network."""
    return dataclasses.replace(
        TrainConfig(),
        **{"architecture": dict(RESNET18_ARCHITECTURE), "weights_name": "insilico-resnet18-v1", **overrides},
    )


WEIGHTS_CONFIGS = {"insilico-v1": TrainConfig, "insilico-resnet18-v1": resnet18_config}
"""Shipped weights name → the function giving its training config (file names: ``SHIPPED_WEIGHTS``)."""
assert set(WEIGHTS_CONFIGS) == set(SHIPPED_WEIGHTS)


# -- data ------------------------------------------------------------------------------------------
def to_tensor(images: np.ndarray) -> Tensor:
    """``[N, H, W, C]`` uint8 images → ``[N, 3, H, W]`` uint8 (grayscale repeated, as the backbone's preprocess
    does)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).contiguous()


def normalise(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``[B, 3, H, W]`` → the network's input: ``(x / 255 - mean) / std``."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255 - m) / s


def set_digest(rendered: RenderedSet, min_pixels: int = MIN_PART_PIXELS) -> str:
    """SHA-256 of a rendered set's images and presence labels: tells whether the renderer still draws the same set."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(rendered.images).tobytes())
    h.update(part_presence(rendered.parts, min_pixels).tobytes())
    return h.hexdigest()


# -- evaluation ----------------------------------------------------------------------------------
@torch.no_grad()
def predict(
    model: nn.Module,
    images: np.ndarray,
    *,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    batch_size: int = 250,
) -> np.ndarray:
    """Predicted presence ``[N, n_outputs]`` bool (logit > 0) of images ``[N, H, W, C]`` uint8.

    ``model`` maps normalised images ``[B, 3, H, W]`` to logits (e.g. :class:`InsilicoCNN`).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = to_tensor(images)
        out = [
            model(normalise(x[i : i + batch_size].to(device), mean, std)).cpu() > 0
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, len(PARTS)), dtype=bool)


def evaluate(
    model: nn.Module,
    test_set: RenderedSet,
    *,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    min_pixels: int = MIN_PART_PIXELS,
    batch_size: int = 250,
) -> dict[str, Any]:
    """Part-presence accuracy on ``test_set``: per part, their mean, and the counts behind them.

    Returns ``{"n_images", "accuracy": {part: float}, "mean_accuracy", "correct": {part: int},
    "errors_by_category": {category: {part: int}}}``.
    """
    labels = part_presence(test_set.parts, min_pixels)
    right = predict(model, test_set.images, mean=mean, std=std, batch_size=batch_size) == labels
    n = len(labels)
    correct = {p: int(right[:, j].sum()) for j, p in enumerate(PARTS)}
    categories = np.array(test_set.categories)
    errors = {
        str(c): {p: int((~right[categories == c, j]).sum()) for j, p in enumerate(PARTS)}
        for c in sorted(set(test_set.categories))
    }
    return {
        "n_images": n,
        "accuracy": {p: correct[p] / n if n else float("nan") for p in PARTS},
        "mean_accuracy": float(right.mean()) if n else float("nan"),
        "correct": correct,
        "errors_by_category": errors,
    }


def pooled(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracies over several evaluated sets together."""
    n = sum(r["n_images"] for r in results)
    correct = {p: sum(r["correct"][p] for r in results) for p in PARTS}
    return {
        "n_images": n,
        "accuracy": {p: correct[p] / n for p in PARTS},
        "mean_accuracy": sum(correct.values()) / (n * len(PARTS)),
        "correct": correct,
    }


# -- training ------------------------------------------------------------------------------------
def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]  # biases, BatchNorm
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _training_data(config: TrainConfig, log: Callable[[str], None]) -> list[tuple[Tensor, Tensor]]:
    """Per image size: all training images ``[N, 3, H, W]`` uint8 and labels ``[N, P]`` float."""
    by_size: dict[int, list[tuple[Tensor, Tensor]]] = {}
    for spec in config.train_sets:
        t = time.perf_counter()
        rendered = spec.render()
        by_size.setdefault(spec.size, []).append(
            (
                to_tensor(rendered.images),
                torch.from_numpy(part_presence(rendered.parts, config.min_part_pixels)).float(),
            )
        )
        log(f"rendered {len(rendered)} training images {spec.as_dict()} in {time.perf_counter() - t:.1f} s")
    return [(torch.cat([x for x, _ in v]), torch.cat([y for _, y in v])) for _, v in sorted(by_size.items())]


def train(config: TrainConfig = TrainConfig(), log: Callable[[str], None] | None = None) -> tuple[InsilicoCNN, dict]:
    """Train the network from scratch and score it on the test sets: ``(model in eval mode on the CPU, record)``.

    ``record`` holds the config, the architecture, the loss curve, per-set and pooled test
    accuracies, the checked subsets (accuracy counts and set digests), versions and wall times.
    """
    log = log or (lambda message: None)
    run = trained(
        config,
        lambda: _training_data(config, log),
        lambda: InsilicoCNN.from_architecture(config.architecture),
        PartPresence(config.hflip),
        lambda model: _evaluate_sets(model, config, log),
        log,
    )
    model, groups, threads = run.model, run.groups, run.threads
    record = {
        "format": FORMAT + ".record",
        "format_version": FORMAT_VERSION,
        "weights": config.weights_name,
        "architecture": {
            **dict(config.architecture),
            "layers": list(LAYERS),
            "block": (
                "block1 starts with a stride-1 conv3x3-BN-ReLU stem; then convs x residual basic block "
                "(conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU), the first with stride 2"
                if config.architecture.get("residual")
                else "stride-2 conv3x3-BN-ReLU, then (convs - 1) x conv3x3-BN-ReLU"
            ),
            "head": "global average pool + linear (training only; not part of the backbone)",
            "parameters": parameter_count(model),
            "backbone_parameters": parameter_count(model) - parameter_count(model.head),
        },
        "normalisation": {
            "mean": list(config.mean),
            "std": list(config.std),
            "input": "[0, 1] RGB (grayscale repeated), then (x - mean) / std",
        },
        "task": {
            "parts": list(PARTS),
            "min_part_pixels": config.min_part_pixels,
            "label": "part present when its visible mask has >= min_part_pixels pixels; predicted when logit > 0",
        },
        "training": {
            **config.as_dict(),
            "n_train_images": sum(len(x) for x, _ in groups),
            "torch_threads": threads,
            "history": run.history,
        },
        **run.evaluation,
        "environment": environment(run.device),
        "wall_time_s": run.wall_time_s(),
    }
    return model, record


@dataclass
class Trained:
    """What :func:`trained` gives a trainer to write its record from: the model (eval mode, on the CPU), the training
    groups, the loss history, the torch threads, the evaluation, the device and the stage times."""

    model: nn.Module
    groups: list
    history: list[dict[str, Any]]
    threads: int
    evaluation: Any
    device: torch.device
    seconds: dict[str, float]
    start: float

    def wall_time_s(self) -> dict[str, float]:
        """The record's ``wall_time_s``: render, train, evaluate and the total up to now, in seconds (1 decimal)."""
        return {
            **{k: round(v, 1) for k, v in self.seconds.items()},
            "total": round(time.perf_counter() - self.start, 1),
        }


def trained(
    config: Any,
    training_data: Callable[[], list],
    build: Callable[[], nn.Module],
    objective: Objective,
    evaluate: Callable[[nn.Module], Any],
    log: Callable[[str], None],
) -> Trained:
    """One training run of any trainer, reproducibly (:func:`reproducible_training` with ``config.seed`` and
    ``config.threads`` on ``config.device``): render the training data, build the network, :func:`fit` it with
    ``objective``, then evaluate it on the CPU in eval mode; each stage timed."""
    start = time.perf_counter()
    device = torch.device(config.device)
    with reproducible_training(device, config.seed, config.threads) as threads:
        groups = training_data()
        render_s = time.perf_counter() - start
        model = build().to(device)
        history = fit(model, groups, config, device, log, objective)
        train_s = time.perf_counter() - start - render_s
        model = model.cpu().eval()
        t = time.perf_counter()
        evaluation = evaluate(model)
        eval_s = time.perf_counter() - t
    seconds = {"render": render_s, "train": train_s, "evaluate": eval_s}
    return Trained(model, groups, history, threads, evaluation, device, seconds, start)


def environment(device: torch.device | str) -> dict[str, str]:
    """The versions and machine a training record names (one dict for every trainer's record)."""
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": str(device),
    }


def _batches(
    groups: Sequence[tuple[Tensor, ...]], batch_size: int, generator: torch.Generator
) -> list[tuple[int, Tensor]]:
    """One epoch of ``(group, indices)`` batches, shuffled within and across groups; no batch of one (BatchNorm)."""
    batches = []
    for g, (x, *_) in enumerate(groups):
        perm = torch.randperm(len(x), generator=generator)
        batches += [(g, perm[i : i + batch_size]) for i in range(0, len(x) - 1, batch_size)]
    return [batches[b] for b in torch.randperm(len(batches), generator=generator).tolist()]


def _batch_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@torch.no_grad()
def recalibrate_batch_norm(
    model: nn.Module,
    groups: Sequence[tuple[Tensor, ...]],
    config: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
) -> None:
    """Set every BatchNorm's running statistics to their exact average over one pass of the training batches.

    Batches hold one image size each, and activation statistics differ between sizes; the
    running statistics used at test time are then the mixture of all sizes (see :func:`fit`).
    """
    norms = _batch_norms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for g, index in _batches(groups, config.batch_size, generator):
        model(normalise(groups[g][0][index].to(device), config.mean, config.std))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


class Objective(Protocol):
    """What one training step optimises (:func:`fit`): how a batch is augmented and what its loss is.

    ``targets`` are a group's tensors after the images (e.g. presence labels ``[B, P]``), indexed like the images.
    """

    def augment(self, x: Tensor, targets: list[Tensor], generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
        """Images ``[B, 3, H, W]`` uint8 and targets of one batch → augmented ones (drawn from ``generator``)."""
        ...

    def loss(self, output: Any, targets: list[Tensor]) -> Tensor:
        """The scalar loss of the model's ``output`` on normalised images against ``targets`` (on its device)."""
        ...


@dataclass(frozen=True)
class PartPresence:
    """The ``insilico-v1`` objective: binary cross-entropy of the logits ``[B, P]`` against presence labels
    ``[B, P]`` float, with half the images of every batch mirrored when ``hflip`` (presence is mirror-invariant)."""

    hflip: bool = True

    def augment(self, x: Tensor, targets: list[Tensor], generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
        if self.hflip:
            flip = torch.rand(len(x), generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x, targets

    def loss(self, output: Tensor, targets: list[Tensor]) -> Tensor:
        (y,) = targets
        return F.binary_cross_entropy_with_logits(output, y)


def fit(
    model: nn.Module,
    groups: Sequence[tuple[Tensor, ...]],
    config: Any,
    device: torch.device,
    log: Callable[[str], None],
    objective: Objective,
) -> list[dict[str, Any]]:
    """Train ``model`` on ``groups`` (per image size: images ``[N, 3, H, W]`` uint8, then the targets ``objective``
    reads, indexed like the images): ``config.epochs`` epochs with batch statistics, then ``frozen_bn_epochs`` with
    fixed BatchNorm statistics; AdamW on a one-cycle schedule. Returns the per-epoch history (loss, seconds).

    ``config`` gives ``epochs``, ``frozen_bn_epochs``, ``batch_size``, ``lr``, ``weight_decay``,
    ``warmup_fraction``, ``seed``, ``mean`` and ``std`` (:class:`TrainConfig`, ``trainers.zoo.ZooConfig``).

    A batch holds images of one size. With batch statistics alone, the network learns to rely
    on per-size normalisation that the single set of test-time running statistics cannot
    give (96 px test accuracy fell to 0.76 against 0.99 with batch statistics). So the
    statistics are recalibrated over all sizes, frozen, and the network is fine-tuned with them
    (the tail of the one-cycle schedule), as it will be used.
    """
    generator = torch.Generator().manual_seed(config.seed)
    n_epochs = config.epochs + config.frozen_bn_epochs
    total = max(1, len(_batches(groups, config.batch_size, torch.Generator().manual_seed(0))) * n_epochs)
    optimiser = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, total_steps=total, pct_start=config.warmup_fraction, anneal_strategy="cos"
    )
    history = []
    for epoch in range(n_epochs):
        t = time.perf_counter()
        frozen = epoch >= config.epochs
        if frozen and epoch == config.epochs:
            recalibrate_batch_norm(model, groups, config, device, generator)
        model.train()
        if frozen:
            for m in _batch_norms(model):
                m.eval()
        loss_sum, n_seen = 0.0, 0
        for g, index in _batches(groups, config.batch_size, generator):
            x, targets = objective.augment(groups[g][0][index], [t[index] for t in groups[g][1:]], generator)
            x = normalise(x.to(device), config.mean, config.std)
            loss = objective.loss(model(x), [t.to(device) for t in targets])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(x)
            n_seen += len(x)
        history.append(
            {
                "epoch": epoch + 1,
                "batch_norm": "frozen" if frozen else "batch statistics",
                "loss": loss_sum / max(n_seen, 1),
                "seconds": round(time.perf_counter() - t, 1),
            }
        )
        log(
            f"epoch {epoch + 1}/{n_epochs} ({history[-1]['batch_norm']}): loss {history[-1]['loss']:.4f} "
            f"({history[-1]['seconds']} s)"
        )
    model.eval()
    return history


def _evaluate_sets(model: InsilicoCNN, config: TrainConfig, log: Callable[[str], None]) -> dict[str, Any]:
    sets, checks = [], []
    for spec in config.test_sets:
        rendered = spec.render()
        result = evaluate(model, rendered, mean=config.mean, std=config.std, min_pixels=config.min_part_pixels)
        sets.append({"spec": spec.as_dict(), **result})
        accuracy = ", ".join(f"{p} {a:.4f}" for p, a in result["accuracy"].items())
        log(f"test {spec.as_dict()}: mean {result['mean_accuracy']:.4f} ({accuracy})")
        n_check = min(config.check_n_per_category, spec.n_per_category)
        subset = spec.render(n_check)
        check = evaluate(model, subset, mean=config.mean, std=config.std, min_pixels=config.min_part_pixels)
        checks.append(
            {
                "spec": spec.as_dict(),
                "n_per_category": n_check,
                "digest": set_digest(subset, config.min_part_pixels),
                **check,
            }
        )
    return {
        "test": {"sets": sets, "overall": pooled(sets)},
        "check": {
            "note": "the first n_per_category images per category of each test set, re-scored by "
            "tests/test_insilico_cnn.py; digest = sha256 of their images and labels",
            "sets": checks,
        },
    }


# -- files ---------------------------------------------------------------------------------------
def save(
    model: InsilicoCNN, record: Mapping[str, Any], weights_path: str | Path, record_path: str | Path | None = None
) -> dict[str, Any]:
    """Write the weights (safetensors, float32, with metadata) and the record (JSON, with the weights' sha256),
    atomically.

    Returns the record as written. ``record_path`` defaults to ``weights_path`` with a ``.json`` suffix.
    """
    weights_path = Path(weights_path)
    record_path = Path(record_path) if record_path is not None else weights_path.with_suffix(".json")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    normalisation = record.get("normalisation", {})
    metadata = file_metadata(
        model.architecture,
        normalisation.get("mean", DEFAULT_MEAN),
        normalisation.get("std", DEFAULT_STD),
        weights=record.get("weights"),
        parts=list(PARTS),
    )
    atomic_save_tensors(weights_path, state, metadata)
    data = weights_path.read_bytes()
    written = {
        **record,
        "file": {
            "name": weights_path.name,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "metadata_key": next(iter(metadata)),
        },
    }
    atomic_write_json(record_path, written)
    return written
