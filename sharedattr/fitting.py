"""Fit an encoding model to recorded responses, score it on held-out images, save and load it.

A saved model is a folder with ``model.json`` (the backbone and readout specs, the neuron
ids, the latent shape and a checksum of the backbone's weights) and
``readout.safetensors`` (the fitted readout's state). The backbone is rebuilt from its
spec (seeded random, torchvision or local weights) and verified against the checksum, so
:func:`load_model` restores an identical model or says why it cannot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__
from .components import pearson_columns
from .errors import MissingFileError, UserError
from .io import atomic_save_tensors, atomic_write_json
from .models.encoding import EncodingModel
from .registry import Registry, get_registry
from .data import StimulusSet
from .specs import BackboneSpec, ExperimentSpec, ReadoutSpec

SCORE_COLUMNS = ["neuron", "test_r", "noise_ceiling", "fev", "n_train", "n_test", "note"]
MODEL_FILE = "model.json"
READOUT_FILE = "readout.safetensors"
MODEL_FORMAT = 1


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random train/test split of ``range(n)`` → sorted (train, test) index tensors."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 2:
        raise UserError(f"data: {n} stimuli with responses are too few to split off a test set of {n_test}")
    return perm[n_test:].sort().values, perm[:n_test].sort().values


@dataclass
class Fit:
    """A fitted encoding model and its held-out scores.

    ``predicted`` ``[S, N]`` covers every stimulus; ``train``/``test`` index stimuli;
    ``test_r`` ``[N]`` is the held-out Pearson r per neuron.
    """

    model: EncodingModel
    neuron_ids: list[str]
    train: Tensor
    test: Tensor
    predicted: Tensor
    test_r: Tensor
    noise_ceiling: Tensor | None = None
    fev: Tensor | None = None
    notes: list[str | None] | None = None

    def score_repeats(self, trials: Tensor) -> None:
        """Noise ceiling and FEV on the held-out stimuli from their trials ``[S, R, N]`` (aligned to the stimuli)."""
        from .scoring import fraction_explainable_variance_explained, noise_ceiling, unscorable_reasons

        held_out, predicted = trials[self.test], self.predicted[self.test]
        self.noise_ceiling = noise_ceiling(held_out)
        self.fev = fraction_explainable_variance_explained(predicted, held_out)
        self.notes = unscorable_reasons(held_out, predicted)


def write_scores(fit: Fit, path: Path) -> None:
    """``scores.csv``: per neuron, held-out r and, where trials repeat, noise ceiling and FEV.

    Undefined values are left empty, with the reason in ``note`` (never a bare NaN).
    """
    from .io import atomic_write_csv

    def value(t: Tensor | None, i: int) -> float | str:
        return "" if t is None or not torch.isfinite(t[i]) else float(t[i])

    rows = []
    for i, n in enumerate(fit.neuron_ids):
        note = "no repeated trials" if fit.notes is None else (fit.notes[i] or "")
        rows.append({"neuron": n, "test_r": float(fit.test_r[i]), "noise_ceiling": value(fit.noise_ceiling, i),
                     "fev": value(fit.fev, i), "n_train": len(fit.train), "n_test": len(fit.test), "note": note})
    atomic_write_csv(path, rows, SCORE_COLUMNS)


@torch.inference_mode()
def predict(readout: nn.Module, latents: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """Readout predictions ``[S, N]`` on the CPU, in batches (latents may be memory-mapped)."""
    return torch.cat([readout(chunk.to(device)).cpu() for chunk in latents.split(batch_size)])


def fit_readout(
    readout_spec: ReadoutSpec,
    backbone: nn.Module,
    latents: Tensor,
    responses: Tensor,
    neuron_ids: list[str],
    *,
    test_fraction: float,
    split_seed: int,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    registry: Registry | None = None,
    saved: Path | None = None,
) -> Fit:
    """Fit ``readout_spec`` on a train split of the stimuli with responses; score Pearson r on the rest.

    ``latents`` ``[S, ...]`` and ``responses`` ``[S, N]`` (NaN = not measured) are aligned.
    With ``saved``, a model folder written by a fit of the same spec and data, its readout
    is loaded instead of fitted: the same split and scores as the run that fitted it.
    """
    measured = (~torch.isnan(responses)).any(1).nonzero().squeeze(1)
    train_rel, test_rel = split_indices(len(measured), test_fraction, split_seed)
    train, test = measured[train_rel], measured[test_rel]
    readout = readout_spec.build(registry=registry)
    if saved is None:
        readout.fit(latents[train], responses[train])
    else:
        from safetensors.torch import load_file

        readout.initialize(tuple(latents.shape[1:]), len(neuron_ids))
        readout.load_state_dict(load_file(str(saved / READOUT_FILE)))
    readout = readout.to(device)
    model = EncodingModel(backbone, readout).eval()
    predicted = predict(readout, latents, batch_size, device)
    test_r = pearson_columns(predicted[test], responses[test])
    return Fit(model, list(neuron_ids), train, test, predicted, test_r)


def backbone_checksum(backbone: nn.Module) -> str:
    """SHA-256 over the backbone's parameters and buffers (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_model(model: EncodingModel, backbone_spec: BackboneSpec, readout_spec: ReadoutSpec,
               neuron_ids: list[str], folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.json`` and ``readout.safetensors`` into ``folder`` (atomically); return the folder."""
    folder = Path(folder)
    atomic_save_tensors(folder / READOUT_FILE, model.readout.state_dict())
    atomic_write_json(folder / MODEL_FILE, {
        "format": MODEL_FORMAT,
        "sharedattr_version": __version__,
        "backbone": backbone_spec.model_dump(mode="json"),
        "readout": readout_spec.model_dump(mode="json"),
        "neuron_ids": list(neuron_ids),
        "latent_shape": list(model.backbone.latent_shape),
        "backbone_checksum": backbone_checksum(model.backbone),
        **(extra or {}),
    })
    return folder


def load_model(folder: str | Path, *, registry: Registry | None = None, device: torch.device | str = "cpu",
               verify: bool = True) -> EncodingModel:
    """Restore a model saved by :func:`save_model` (or ``sharedattr fit``); ``model.neuron_ids`` lists its outputs.

    With ``verify`` the rebuilt backbone must match the saved checksum (e.g. a changed
    weights file is an error, not a silently different model).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path = folder / MODEL_FILE
    if not meta_path.is_file():
        raise MissingFileError(meta_path, "saved model", "expected a folder written by `sharedattr fit`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != MODEL_FORMAT:
        raise UserError(f"{meta_path}: model format {meta.get('format')!r} is not supported (expected {MODEL_FORMAT})")
    registry = registry or get_registry()
    backbone = BackboneSpec.model_validate(meta["backbone"]).build(registry=registry)
    if verify and backbone_checksum(backbone) != meta["backbone_checksum"]:
        raise UserError(f"{meta_path}: the rebuilt backbone's weights differ from the saved model's "
                        "(changed weights file or library version); pass verify=False to load anyway")
    readout = ReadoutSpec.model_validate(meta["readout"]).build(registry=registry)
    readout.initialize(tuple(meta["latent_shape"]), len(meta["neuron_ids"]))
    readout.load_state_dict(load_file(str(folder / READOUT_FILE)))
    model = EncodingModel(backbone, readout).to(device).eval()
    model.neuron_ids = list(meta["neuron_ids"])
    return model


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unavailable device is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} requested but CUDA is not available; use device = 'cpu' or 'auto'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device: {name!r} requested but MPS is not available; use device = 'cpu' or 'auto'")
    return device


@dataclass
class Experiment:
    """Everything the later stages need from the data and the fitted model.

    ``responses`` ``[S, N]`` are aligned to ``stimuli`` (NaN = not measured); ``latents``
    ``[S, ...]`` may be memory-mapped from the feature cache.
    """

    stimuli: StimulusSet
    responses: Tensor
    latents: Tensor
    fit: Fit
    cache_hit: bool
    fit_digest: str = ""
    reused: bool = False
    neuron_parts: dict[str, tuple[str, ...]] | None = None


def fit_digest(spec: ExperimentSpec, stimuli_digest: str, responses_path: Path) -> str:
    """The identity of a fitted model: data, backbone and readout specs, seed, image and response content."""
    h = hashlib.sha256()
    with open(responses_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    data = spec.data.model_dump(mode="json", exclude={"neuron_parts"})  # ground truth does not change the fit
    payload = {"data": data, "backbone": spec.backbone.model_dump(mode="json"),
               "readout": spec.readout.model_dump(mode="json"), "seed": spec.seed, "stimuli": stimuli_digest,
               "responses": h.hexdigest(), "format": MODEL_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def saved_digest(folder: Path, key: str = "fit_digest") -> str | None:
    """The digest ``key`` recorded in a saved model's ``model.json``; None when absent or unreadable."""
    try:
        return json.loads((folder / MODEL_FILE).read_text()).get(key)
    except (OSError, ValueError):
        return None


def fit_experiment(spec: ExperimentSpec, out: str | Path, *, registry: Registry | None = None,
                   device: torch.device | None = None, progress: bool = True, reuse: bool = False,
                   write: bool = True) -> Experiment:
    """Load and check the data, extract (or reuse) features, fit and score the readout, save the model.

    Writes ``scores.csv``, ``model/`` and, with figures on, ``figures/fit.png`` into ``out``
    (unless ``write`` is False: the ranks of a distributed run other than rank 0 only read).
    With ``reuse``, a model already saved in ``out/model`` by a fit of the same data, backbone,
    readout and seed (the same :func:`fit_digest`) is loaded instead of fitted again.
    """
    from .data import load_responses
    from .features import default_cache_dir, extract_features

    registry = registry or get_registry()
    out = Path(out)
    device = device or resolve_device(spec.device)
    stimuli = StimulusSet.load(spec.data.stimuli)
    stimuli.check_categories(spec.data.categories)
    recorded = load_responses(spec.data.responses, ids_path=spec.data.response_ids,
                              neuron_ids_path=spec.data.neuron_ids)
    responses = recorded.aligned_to(stimuli)
    neuron_parts = _neuron_parts(spec, stimuli, recorded.neuron_ids)
    stimuli_digest = stimuli.content_digest()
    digest = fit_digest(spec, stimuli_digest, spec.data.responses)
    backbone = spec.backbone.build(registry=registry).to(device)
    latents, hit = extract_features(
        backbone, stimuli,
        backbone_spec=spec.backbone.model_dump(mode="json") if spec.cache else None,
        cache_dir=(spec.cache_dir or default_cache_dir()) if spec.cache else None,
        batch_size=spec.batch_size, device=device, progress=progress, stimuli_digest=stimuli_digest,
    )
    split = {"test_fraction": spec.data.test_fraction, "split_seed": spec.data.split_seed,
             "batch_size": spec.batch_size, "device": device, "registry": registry}
    reused = reuse and saved_digest(out / "model") == digest
    fit = fit_readout(spec.readout, backbone, latents, responses, list(recorded.neuron_ids), **split,
                      saved=out / "model" if reused else None)
    if recorded.has_repeats:
        fit.score_repeats(recorded.trials_aligned_to(stimuli))
    if not write:
        return Experiment(stimuli, responses, latents, fit, hit, digest, reused, neuron_parts)
    write_scores(fit, out / "scores.csv")
    if not reused:
        save_model(fit.model, spec.backbone, spec.readout, fit.neuron_ids, out / "model",
                   extra={"spec_digest": spec.digest(), "fit_digest": digest})
    if spec.output.figures:
        from .figures import fit_figure

        fit_figure(fit.test_r, fit.predicted[fit.test], responses[fit.test], fit.neuron_ids,
                   out / "figures" / "fit.png", spec.output.dpi)
    return Experiment(stimuli, responses, latents, fit, hit, digest, reused, neuron_parts)


def _neuron_parts(spec: ExperimentSpec, stimuli: StimulusSet,
                  neuron_ids: Sequence[str]) -> dict[str, tuple[str, ...]] | None:
    """``data.neuron_parts``, checked against the manifest's part columns and the recorded neuron ids."""
    from .data.ground_truth import load_neuron_parts
    from .data.stimuli import DataError

    if spec.data.neuron_parts is None:
        return None
    parts = load_neuron_parts(spec.data.neuron_parts, list(stimuli.part_masks))
    unknown = sorted(set(parts) - set(neuron_ids))
    if unknown:
        raise DataError(spec.data.neuron_parts, [f"neuron {n!r} is not in the responses ({spec.data.responses})"
                                                 for n in unknown])
    return parts
