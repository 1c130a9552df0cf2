"""Saving and loading fitted encoding models, and the digests that identify them.

A saved model is a folder with ``model.json`` (the backbone and readout specs, the plugins
that provide them, the neuron ids, the latent shape and a checksum of the backbone's
weights) and ``readout.safetensors`` (the fitted readout's state). ``model.json`` is written last and
records a checksum of the readout's tensors, so a folder whose two files come from different saves
(a save killed between them) or whose readout was damaged is refused, never used. The backbone is rebuilt
from its spec (seeded random, torchvision or local weights) and verified against the
checksum, so :func:`load_model` restores an identical model or says why it cannot; a
component whose plugin is not installed is named with the distribution that provided it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sharedattr import __version__
from sharedattr.config.spec import ExperimentSpec
from sharedattr.encoding.model import EncodingModel
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.registry import Registry
from sharedattr.plugins.specs import BackboneSpec, ComponentSpec, ReadoutSpec
from sharedattr.runtime.errors import MissingFileError, UnknownComponentError, UserError
from sharedattr.runtime.io import atomic_save_tensors, atomic_write_json
from sharedattr.runtime.work_store import tensor_bytes, tensors_checksum

MODEL_FILE = "model.json"
READOUT_FILE = "readout.safetensors"
MODEL_FORMAT = 1


def backbone_checksum(backbone: nn.Module) -> str:
    """SHA-256 over the backbone's parameters and buffers (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(backbone.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


def save_model(
    model: EncodingModel,
    backbone_spec: BackboneSpec,
    readout_spec: ReadoutSpec,
    neuron_ids: list[str],
    folder: str | Path,
    extra: dict[str, Any] | None = None,
    *,
    registry: Registry | None = None,
) -> Path:
    """Write ``model.json`` and ``readout.safetensors`` into ``folder`` (atomically); return the folder.

    ``model.json`` records, under ``components``, the plugin, distribution and version that provide
    the backbone and the readout (from ``registry``, default the process-wide one).
    """
    folder = Path(folder)
    registry = registry if registry is not None else get_registry()
    state = model.readout.state_dict()
    atomic_save_tensors(folder / READOUT_FILE, state)
    atomic_write_json(  # last: the manifest of the folder
        folder / MODEL_FILE,
        {
            "format": MODEL_FORMAT,
            "sharedattr_version": __version__,
            "backbone": backbone_spec.model_dump(mode="json"),
            "readout": readout_spec.model_dump(mode="json"),
            "neuron_ids": list(neuron_ids),
            "latent_shape": list(model.backbone.latent_shape),
            "backbone_checksum": backbone_checksum(model.backbone),
            "readout_checksum": tensors_checksum(state),
            "components": {spec.kind: spec.component(registry).provenance() for spec in (backbone_spec, readout_spec)},
            **(extra or {}),
        },
    )
    return folder


def load_model(
    folder: str | Path, *, registry: Registry | None = None, device: torch.device | str = "cpu", verify: bool = True
) -> EncodingModel:
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
        readout_checksum = meta.get("readout_checksum")
        if readout_checksum is not None and not isinstance(readout_checksum, str):
            raise TypeError("readout_checksum is not a string")
    except (KeyError, TypeError, ValueError, ValidationError) as err:
        raise UserError(
            f"{meta_path}: damaged model description ({type(err).__name__}: {err}); fit the model "
            "again with `sharedattr fit`"
        ) from None
    registry = registry if registry is not None else get_registry()
    provenance = meta.get("components") if isinstance(meta.get("components"), dict) else {}
    backbone = _build_saved(backbone_spec, registry, provenance, meta_path)
    if verify and backbone_checksum(backbone) != checksum:
        raise UserError(
            f"{meta_path}: the rebuilt backbone's weights differ from the saved model's "
            "(changed weights file or library version); pass verify=False to load anyway"
        )
    readout = _build_saved(readout_spec, registry, provenance, meta_path)
    readout.initialize(latent_shape, len(neuron_ids))
    load_readout_state(readout, folder / READOUT_FILE, readout_checksum)
    return EncodingModel(backbone, readout, neuron_ids).to(device).eval()


def _build_saved(spec: ComponentSpec, registry: Registry, provenance: dict[str, Any], meta_path: Path) -> Any:
    """Build a saved model's component; when its plugin is missing, say which distribution provided it."""
    try:
        component = spec.component(registry)
    except UnknownComponentError as err:
        origin = provenance.get(spec.kind)
        if (
            not isinstance(origin, dict)
            or origin.get("name") != spec.name
            or not origin.get("distribution")
            or origin.get("distribution") == "sharedattr"
        ):  # a built-in is always there: a damaged description
            raise UserError(f"{meta_path}: {err}") from None
        dist, version = str(origin["distribution"]), origin.get("version")
        pin = f"=={version}" if version else ""
        raise UserError(
            f"{meta_path}: the saved model's {spec.kind} {spec.name!r} comes from the plugin "
            f"{origin.get('plugin', dist)!r} (distribution {dist}{' ' + str(version) if version else ''}), "
            f"which is not installed here; install it (e.g. `uv pip install '{dist}{pin}'`) and load the "
            "model again"
        ) from None
    return component.build(**spec.params)


def load_readout_state(readout: nn.Module, path: Path, checksum: str | None = None) -> None:
    """Load a saved readout's state (safetensors only: never unpickled); :class:`UserError` if it does not fit
    or, with ``checksum`` (``model.json``'s ``readout_checksum``), if its tensors do not match it."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - missing, truncated or foreign file (SafetensorError, OSError)
        raise UserError(
            f"cannot load the saved readout {path}: {type(err).__name__}: {err}; fit the model "
            "again with `sharedattr fit`"
        ) from None
    if checksum is not None and tensors_checksum(state) != checksum:
        raise UserError(
            f"the saved readout {path} does not match its model description {path.parent / MODEL_FILE} "
            "(checksum): the file is damaged, or a save was interrupted between the two files; fit the model "
            "again with `sharedattr fit`"
        )
    try:
        readout.load_state_dict(state)
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors
        raise UserError(
            f"the saved readout {path} does not fit its model description: {str(err).strip()[:600]}"
        ) from None


def fit_digest(spec: ExperimentSpec, stimuli_digest: str, responses_path: Path) -> str:
    """The identity of a fitted model: data, backbone and readout specs, seed, image and response content."""
    h = hashlib.sha256()
    with open(responses_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    data = spec.data.model_dump(mode="json", exclude={"neuron_parts"})  # ground truth does not change the fit
    payload = {
        "data": data,
        "backbone": spec.backbone.model_dump(mode="json"),
        "readout": spec.readout.model_dump(mode="json"),
        "seed": spec.seed,
        "stimuli": stimuli_digest,
        "responses": h.hexdigest(),
        "format": MODEL_FORMAT,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def saved_digest(folder: Path, key: str = "fit_digest") -> str | None:
    """The digest ``key`` recorded in a saved model's ``model.json``; None when absent or unreadable, or when
    its ``readout.safetensors`` is, or does not match the recorded ``readout_checksum`` (so a damaged or
    half-saved model is fitted again, never trusted; a warning names the folder)."""
    from safetensors.torch import load_file

    meta_path = folder / MODEL_FILE
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        digest, checksum = meta.get(key), meta["readout_checksum"]
        matches = tensors_checksum(load_file(str(folder / READOUT_FILE))) == checksum
    except Exception:  # noqa: BLE001 - any damage (JSON, UTF-8, safetensors header, I/O) means: fit again
        matches = False
    if not matches:
        warnings.warn(
            f"the saved model in {folder} is damaged, half-saved or written by an older version: fitting it again",
            stacklevel=2,
        )
        return None
    return digest
