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
import math
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
from .distributed import Ranks
from .specs import BackboneSpec, ExperimentSpec, ReadoutSpec

SCORE_COLUMNS = ["neuron", "test_r", "noise_ceiling", "fev", "n_train", "n_test", "note"]
MODEL_FILE = "model.json"
READOUT_FILE = "readout.safetensors"
MODEL_FORMAT = 1
MIN_TRAIN_STIMULI = 2
"""A neuron needs responses to at least this many training stimuli to be fitted."""


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
    r_notes: list[str | None] | None = None

    def score_repeats(self, trials: Tensor) -> None:
        """Noise ceiling and FEV on the held-out stimuli from their trials ``[S, R, N]`` (aligned to the stimuli)."""
        from .scoring import fraction_explainable_variance_explained, noise_ceiling, unscorable_reasons

        held_out, predicted = trials[self.test], self.predicted[self.test]
        self.noise_ceiling = noise_ceiling(held_out)
        self.fev = fraction_explainable_variance_explained(predicted, held_out)
        self.notes = unscorable_reasons(held_out, predicted)


def write_scores(fit: Fit, path: Path) -> None:
    """``scores.csv``: per neuron, held-out r and, where trials repeat, noise ceiling and FEV.

    Undefined values are left empty, with the reason in ``note`` (never a bare NaN); a held-out
    r that is undefined because a column is constant is 0 (:func:`held_out_r`), also with the
    reason in ``note``.
    """
    from .io import atomic_write_csv

    def value(t: Tensor | None, i: int) -> float | str:
        return "" if t is None or not torch.isfinite(t[i]) else float(t[i])

    rows = []
    for i, n in enumerate(fit.neuron_ids):
        note = "no repeated trials" if fit.notes is None else (fit.notes[i] or "")
        if fit.r_notes is not None and fit.r_notes[i]:
            note = f"{fit.r_notes[i]}; {note}" if note else fit.r_notes[i]
        rows.append({"neuron": n, "test_r": value(fit.test_r, i), "noise_ceiling": value(fit.noise_ceiling, i),
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
    n_train = (~torch.isnan(responses[train])).sum(0)
    few = [f"{neuron_ids[i]} ({int(n_train[i])})" for i in (n_train < MIN_TRAIN_STIMULI).nonzero().squeeze(1).tolist()]
    if few:
        raise UserError(f"data.responses: neuron(s) measured on fewer than {MIN_TRAIN_STIMULI} training stimuli "
                        f"(the count in brackets; {len(train)} stimuli in the training split): {', '.join(few[:20])}"
                        f"{' ...' if len(few) > 20 else ''}. Remove these neurons' columns, or record them on more "
                        "stimuli.")
    readout = readout_spec.build(registry=registry)
    if saved is None:
        readout.fit(latents[train], responses[train])
    else:
        readout.initialize(tuple(latents.shape[1:]), len(neuron_ids))
        _load_readout_state(readout, saved / READOUT_FILE)
    readout = readout.to(device)
    model = EncodingModel(backbone, readout, neuron_ids).eval()
    predicted = predict(readout, latents, batch_size, device)
    bad = (~torch.isfinite(predicted)).any(0).nonzero().squeeze(1).tolist()
    if bad:
        raise UserError(f"the {readout_spec.name} readout predicts NaN or infinite responses for neuron(s) "
                        f"{', '.join(neuron_ids[i] for i in bad[:20])}: check data.responses for extreme values "
                        "(rescale them) and the backbone's normalisation (mean, std)")
    test_r, r_notes = held_out_r(predicted[test], responses[test])
    return Fit(model, list(neuron_ids), train, test, predicted, test_r, r_notes=r_notes)


def held_out_r(predicted: Tensor, measured: Tensor) -> tuple[Tensor, list[str | None]]:
    """Pearson r per neuron ``[S, N]`` → ``[N]`` float32, and per neuron why r is undefined (None where it is not).

    Computed in float64 (:func:`~sharedattr.components.pearson_columns`), so it is the same for
    responses in any units (1e-30 or 1e15) and neither overflows nor underflows. NaN
    rows are left out per neuron. Where r is undefined, because the measured or the predicted
    column is constant or fewer than two stimuli remain, r is 0 and the note says why.
    """
    valid = ~(torch.isnan(predicted) | torch.isnan(measured))
    counts = valid.sum(0)

    def constant(x: Tensor) -> Tensor:
        """``[N]``: whether column ``x`` takes one value over its valid rows."""
        x = x.to(torch.float64)
        return torch.where(valid, x, -math.inf).amax(0) == torch.where(valid, x, math.inf).amin(0)

    r = pearson_columns(predicted, measured).float()  # float64 inside; 0 where a column is constant
    flat_p, flat_m = constant(predicted), constant(measured)
    notes: list[str | None] = []
    for i in range(r.shape[0]):
        if counts[i] < 2:
            notes.append(f"test_r undefined ({int(counts[i])} held-out stimuli measured), reported as 0")
        elif flat_m[i]:
            notes.append("test_r undefined (held-out responses constant), reported as 0")
        elif flat_p[i]:
            notes.append("test_r undefined (constant predictions), reported as 0")
        else:
            notes.append(None)
    return torch.where(counts >= 2, r, torch.zeros_like(r)), notes


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
    from pydantic import ValidationError

    folder = Path(folder)
    meta_path = folder / MODEL_FILE
    if not meta_path.is_file():
        raise MissingFileError(meta_path, "saved model", "expected a folder written by `sharedattr fit`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{meta_path}: not a readable model description ({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise UserError(f"{meta_path}: model format {found!r} is not supported (expected {MODEL_FORMAT})")
    try:
        backbone_spec = BackboneSpec.model_validate(meta["backbone"])
        readout_spec = ReadoutSpec.model_validate(meta["readout"])
        neuron_ids = [str(n) for n in meta["neuron_ids"]]
        latent_shape = tuple(int(d) for d in meta["latent_shape"])
        checksum = str(meta["backbone_checksum"])
    except (KeyError, TypeError, ValueError, ValidationError) as err:
        raise UserError(f"{meta_path}: damaged model description ({type(err).__name__}: {err}); fit the model "
                        "again with `sharedattr fit`") from None
    registry = registry or get_registry()
    backbone = backbone_spec.build(registry=registry)
    if verify and backbone_checksum(backbone) != checksum:
        raise UserError(f"{meta_path}: the rebuilt backbone's weights differ from the saved model's "
                        "(changed weights file or library version); pass verify=False to load anyway")
    readout = readout_spec.build(registry=registry)
    readout.initialize(latent_shape, len(neuron_ids))
    _load_readout_state(readout, folder / READOUT_FILE)
    return EncodingModel(backbone, readout, neuron_ids).to(device).eval()


def _load_readout_state(readout: nn.Module, path: Path) -> None:
    """Load a saved readout's state (safetensors only: never unpickled); :class:`UserError` if it does not fit."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - missing, truncated or foreign file (SafetensorError, OSError)
        raise UserError(f"cannot load the saved readout {path}: {type(err).__name__}: {err}; fit the model "
                        "again with `sharedattr fit`") from None
    try:
        readout.load_state_dict(state)
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors
        raise UserError(f"the saved readout {path} does not fit its model description: "
                        f"{str(err).strip()[:600]}") from None


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
    """The digest ``key`` recorded in a saved model's ``model.json``; None when absent or unreadable, or when
    its ``readout.safetensors`` is (so a damaged saved model is fitted again, never trusted)."""
    from safetensors import safe_open

    try:
        digest = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8")).get(key)
        with safe_open(str(folder / READOUT_FILE), framework="pt"):
            pass
    except Exception:  # noqa: BLE001 - any damage (JSON, UTF-8, safetensors header, I/O) means: fit again
        return None
    return digest


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
    _check_selection(spec, stimuli, recorded.neuron_ids)
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


def _check_selection(spec: ExperimentSpec, stimuli: StimulusSet, neuron_ids: Sequence[str]) -> None:
    """``selection.neurons`` must name recorded neurons, ``data.preferred_category`` a stimulus category:
    checked before any compute."""
    from .errors import closest

    preferred, categories = spec.data.preferred_category, stimuli.category_names
    if preferred is not None and preferred not in categories:
        hint = closest(preferred, categories)
        raise UserError(f"data.preferred_category: {preferred!r} is not one of {categories}"
                        + (f"; did you mean {hint!r}?" if hint else "") + f" (the categories of {spec.data.stimuli})")
    unknown = [n for n in spec.selection.neurons or [] if n not in set(neuron_ids)]
    if unknown:
        hints = [f"{closest(n, neuron_ids)!r} for {n!r}" for n in unknown if closest(n, neuron_ids)]
        shown = ", ".join(neuron_ids[:20]) + (" ..." if len(neuron_ids) > 20 else "")
        raise UserError(f"selection.neurons: unknown neuron id(s) {unknown}"
                        + (f" (did you mean {', '.join(hints)}?)" if hints else "")
                        + f"; the responses ({spec.data.responses}) have {len(neuron_ids)} neurons: {shown}")


def fit_for_run(spec: ExperimentSpec, out: Path, fit_dir: Path, *, ranks: Ranks, registry: Registry,
                device: torch.device, progress: bool) -> Experiment:
    """The start of ``sharedattr run``/``synthesize``: the fitted (or saved) model in ``fit_dir``.

    Rank 0 writes ``out/spec.json``, removes the temporaries a killed run left under ``out``
    and fits (reusing a saved model of the same digest); after a barrier, the other ranks load
    what rank 0 saved, writing nothing.
    """
    from .io import remove_stale_temporaries

    if ranks.is_main:
        atomic_write_json(out / "spec.json", {"digest": spec.digest(), "spec": spec.model_dump(mode="json")})
        remove_stale_temporaries(out)
        experiment = fit_experiment(spec, fit_dir, registry=registry, device=device, progress=progress, reuse=True)
    ranks.barrier()  # the other ranks load the model rank 0 saved
    if not ranks.is_main:
        experiment = fit_experiment(spec, fit_dir, registry=registry, device=device, progress=False, reuse=True,
                                    write=False)
    return experiment


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
