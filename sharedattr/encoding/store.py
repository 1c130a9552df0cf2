"""Saving and loading fitted encoding models, and the digests that identify them.

A saved model is a folder with ``model.json`` (the backbone and readout specs, the plugins
that provide them, the neuron ids, the latent shape and a checksum of the backbone's
weights) and ``readout.safetensors`` (the fitted readout's state and, for a trainable backbone such as
``stacked_core``, the backbone's trained weights under ``backbone.``). ``model.json`` is written last and
records a checksum of the readout's tensors (``readout_checksum``) and, in ``checksum``, a SHA-256 of all its
other fields (:func:`description_checksum`): the neuron ids and their order, the specs, the latent shape, both
tensor checksums, the digests. So a folder whose two files come from different saves (a save killed between
them), whose readout was damaged or whose ``model.json`` was edited (neuron ids reordered: labels swapped) is
refused, never used. A folder of an older format (1: no ``checksum``, the readout's optional) cannot be verified
and is refused too, with the advice to fit again; a run fits it again by itself, with a warning. The backbone is
rebuilt from its spec (seeded random, torchvision or local weights) and verified against the
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
from sharedattr.plugins.contracts import BackboneModule, declared
from sharedattr.plugins.loading import get_registry
from sharedattr.plugins.registry import Registry
from sharedattr.plugins.specs import BackboneSpec, ComponentSpec, ReadoutSpec
from sharedattr.runtime.errors import MissingFileError, UnknownComponentError, UserError
from sharedattr.runtime.io import atomic_save_tensors, atomic_write_json
from sharedattr.runtime.json_files import DamagedJSON, read_json
from sharedattr.runtime.run_files import FIT_DIR, MODEL_DIR
from sharedattr.runtime.work_store import tensor_bytes, tensors_checksum

MODEL_FILE = "model.json"
READOUT_FILE = "readout.safetensors"
MODEL_FORMAT = 2
"""2: ``model.json`` records ``checksum`` over its other fields and always ``readout_checksum``. 1 (refused):
neither covered the neuron ids, and ``readout_checksum`` was optional."""
CHECKSUM_FIELD = "checksum"
REFIT = "fit the model again with `sharedattr fit` (a run into the folder fits it again by itself)"


def backbone_checksum(backbone: nn.Module) -> str:
    """SHA-256 over the backbone's parameters and buffers (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(backbone.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


def description_checksum(meta: dict[str, Any]) -> str:
    """SHA-256 of every field of a ``model.json`` description but :data:`CHECKSUM_FIELD`, as canonical JSON
    (sorted keys, no spaces, ASCII; list order kept, so the neuron ids' order counts)."""
    payload = {key: value for key, value in meta.items() if key != CHECKSUM_FIELD}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


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
    the backbone and the readout (from ``registry``, default the process-wide one), the readout's tensor checksum
    and, last, :func:`description_checksum` of all of it.

    Example::

        fitted = sharedattr.fit_experiment(spec, "fits/my-neurons").fit
        sharedattr.save_model(fitted.model, spec.backbone, spec.readout, fitted.neuron_ids, "models/copy")
    """
    folder = Path(folder)
    registry = registry if registry is not None else get_registry()
    state = model_tensors(model)
    atomic_save_tensors(folder / READOUT_FILE, state)
    meta = {
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
    }
    meta = json.loads(json.dumps(meta, default=str))  # as the file will read back (tuples as lists, ...)
    meta[CHECKSUM_FIELD] = description_checksum(meta)
    atomic_write_json(folder / MODEL_FILE, meta)  # last: the manifest of the folder
    return folder


BACKBONE_PREFIX = "backbone."
"""Prefix of a trainable backbone's tensors in ``readout.safetensors`` (saved beside the readout's own)."""


def model_tensors(model: EncodingModel) -> dict[str, Any]:
    """What ``readout.safetensors`` holds: the readout's state and, for a trainable backbone
    (:class:`~sharedattr.plugins.contracts.BackboneModule`), the backbone's state under :data:`BACKBONE_PREFIX` (a
    frozen backbone is rebuilt from its spec instead)."""
    state = dict(model.readout.state_dict())
    if declared(model.backbone, BackboneModule).trainable:
        state.update({BACKBONE_PREFIX + k: v for k, v in model.backbone.state_dict().items()})
    return state


def load_model(
    folder: str | Path, *, registry: Registry | None = None, device: torch.device | str = "cpu", verify: bool = True
) -> EncodingModel:
    """Restore a model saved by :func:`save_model` (or ``sharedattr fit``); ``model.neuron_ids`` lists its outputs.

    With ``verify`` the rebuilt backbone must match the saved checksum (e.g. a changed
    weights file is an error, not a silently different model).

    Example::

        model = sharedattr.load_model("fits/my-neurons/model")   # what `sharedattr fit` saved
        model(images).shape                                        # images [B, C, H, W] in [0, 1] → [B, N]
        model.neuron_ids
    """
    from pydantic import ValidationError

    folder = Path(folder)
    meta_path = folder / MODEL_FILE
    meta = read_description(folder)
    try:
        backbone_spec = BackboneSpec.model_validate(meta["backbone"])
        readout_spec = ReadoutSpec.model_validate(meta["readout"])
        neuron_ids = [str(n) for n in meta["neuron_ids"]]
        latent_shape = tuple(int(d) for d in meta["latent_shape"])
        checksum = str(meta["backbone_checksum"])
    except (KeyError, TypeError, ValueError, ValidationError) as err:
        raise UserError(f"{meta_path}: damaged model description ({type(err).__name__}: {err}); {REFIT}") from None
    registry = registry if registry is not None else get_registry()
    provenance = meta.get("components") if isinstance(meta.get("components"), dict) else {}
    backbone = _build_saved(backbone_spec, registry, provenance, meta_path)
    readout = _build_saved(readout_spec, registry, provenance, meta_path)
    readout.initialize(latent_shape, len(neuron_ids))
    trained = backbone if declared(backbone, BackboneModule).trainable else None
    load_readout_state(readout, folder / READOUT_FILE, meta["readout_checksum"], backbone=trained)
    if verify and backbone_checksum(backbone) != checksum:
        raise UserError(
            f"{meta_path}: the rebuilt backbone's weights differ from the saved model's "
            "(changed weights file or library version); pass verify=False to load anyway"
        )
    return EncodingModel(backbone, readout, neuron_ids).to(device).eval()


def read_description(folder: Path) -> dict[str, Any]:
    """The verified ``model.json`` of saved-model folder ``folder``: read within bounds, of the current format, and
    matching its own :func:`description_checksum` (which covers ``readout_checksum``). :class:`UserError` naming
    the folder and the files otherwise: missing, unreadable, an older format, no checksum, or edited since saved."""
    meta_path = folder / MODEL_FILE
    if not meta_path.is_file():
        raise MissingFileError(meta_path, "saved model", "expected a folder written by `sharedattr fit`")
    try:
        meta = read_json(meta_path)
    except DamagedJSON as err:
        raise UserError(f"{meta_path}: not a readable model description ({err}); {REFIT}") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if isinstance(found, int) and not isinstance(found, bool) and 1 <= found < MODEL_FORMAT:
        raise UserError(
            f"{meta_path}: model format {found} was written by an older sharedattr, whose model.json carries no "
            f"checksum of its neuron ids and specs, so the saved model in {folder} cannot be verified; {REFIT}"
        )
    if found != MODEL_FORMAT:
        raise UserError(f"{meta_path}: model format {found!r} is not supported (expected {MODEL_FORMAT})")
    recorded = meta.get(CHECKSUM_FIELD)
    if not isinstance(recorded, str) or not isinstance(meta.get("readout_checksum"), str):
        raise UserError(
            f"the saved model in {folder} is damaged: {MODEL_FILE} (format {MODEL_FORMAT}) lacks its checksum or "
            f"the checksum of {READOUT_FILE}; {REFIT}"
        )
    if description_checksum(meta) != recorded:
        raise UserError(
            f"the saved model in {folder} is damaged: {MODEL_FILE} does not match its checksum (edited or damaged "
            f"since it was saved, e.g. neuron ids reordered), so it cannot vouch for {READOUT_FILE}; {REFIT}"
        )
    return meta


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


def load_readout_state(
    readout: nn.Module, path: Path, checksum: str | None = None, backbone: nn.Module | None = None
) -> None:
    """Load a saved readout's state (safetensors only: never unpickled); :class:`UserError` if it does not fit
    or, with ``checksum`` (``model.json``'s ``readout_checksum``), if its tensors do not match it. With ``backbone``
    (a trainable one), its weights, saved beside the readout's (:func:`model_tensors`), are loaded into it too."""
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
            f"(checksum): the file is damaged, or a save was interrupted between the two files; {REFIT}"
        )
    own = {k: v for k, v in state.items() if backbone is None or not k.startswith(BACKBONE_PREFIX)}
    try:
        if backbone is not None:
            backbone.load_state_dict({k[len(BACKBONE_PREFIX) :]: v for k, v in state.items() if k not in own})
        readout.load_state_dict(own)
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors
        raise UserError(
            f"the saved readout {path} does not fit its model description: {str(err).strip()[:600]}"
        ) from None


def fit_inputs(spec: ExperimentSpec) -> dict[str, Any]:
    """The settings of ``spec`` that decide its fitted model, as JSON values: ``data`` (all of ``spec.data`` but
    ``neuron_parts``, ground truth for the metrics that does not change the fit), ``backbone``, ``readout`` and
    ``seed``. A saved model records each (``model.json``), so a reuse that does not fit names what differs
    (:func:`check_reused_model`)."""
    return {
        "data": spec.data.model_dump(mode="json", exclude={"neuron_parts"}),
        "backbone": spec.backbone.model_dump(mode="json"),
        "readout": spec.readout.model_dump(mode="json"),
        "seed": spec.seed,
    }


def fit_digest(spec: ExperimentSpec, stimuli_digest: str, responses_digest: str) -> str:
    """The identity of a fitted model: the data, backbone and readout specs and seed (:func:`fit_inputs`), and the
    content of every data input that decides the fit.

    ``stimuli_digest`` (:meth:`~sharedattr.data.stimuli.StimulusSet.content_digest`) covers ``data.stimuli`` and
    ``data.images``: the stimulus ids, categories and the bytes of every image as read (a ZIP member's inflated
    bytes). ``responses_digest`` (:func:`~sharedattr.data.responses.responses_digest`) covers the bytes of every
    responses file: ``data.responses`` and, for .npy, ``response_ids``, ``neuron_ids`` and ``time_bins``. The
    settings that are not files (``time_window``, ``nwb_table``, ``category_column``, ``categories``, the split) are
    in the spec part; ``data.neuron_parts`` (ground truth for the metrics) does not change the fit and is left out.
    """
    payload = {**fit_inputs(spec), "stimuli": stimuli_digest, "responses": responses_digest, "format": MODEL_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


DATA_DIGESTS = {"stimuli_digest": ("the stimuli", ("stimuli", "images")), "responses_digest": ("the responses", None)}
"""The data digests a saved model records beside its ``fit_digest``, with what each covers, for
:func:`warn_if_data_changed` (None: the responses files, :data:`~sharedattr.data.responses.RESPONSE_FILES`)."""


def warn_if_data_changed(folder: Path, spec: ExperimentSpec, digests: dict[str, str]) -> None:
    """Warn, naming them, when the data inputs (``digests``: :data:`DATA_DIGESTS` → the current digest) differ from
    those the saved model in ``folder`` recorded while its config was the same as ``spec``: the data files changed
    in place since the fit (e.g. a stimulus ZIP replaced with new pixels under the same names). Call it only for a
    folder whose model :func:`saved_digest` verified and found of another fit."""
    from sharedattr.data.responses import RESPONSE_FILES

    if saved_digest(folder, "spec_digest") != spec.digest():
        return  # another config: fitting again is expected
    changed = []
    for key, current in digests.items():
        if saved_digest(folder, key) not in (None, current):
            what, fields = DATA_DIGESTS[key]
            named = [f"data.{f}" for f in fields or RESPONSE_FILES if getattr(spec.data, f) is not None]
            changed.append(f"{what} ({', '.join(named)})")
    if changed:
        warnings.warn(
            f"{' and '.join(changed)} changed since the model in {folder} was fitted: fitting it again (nothing "
            "computed from the former data is reused)",
            stacklevel=3,
        )


def saved_digest(folder: Path, key: str = "fit_digest") -> str | None:
    """The digest ``key`` recorded in a saved model's ``model.json``; None when the folder has none, or when the
    model does not verify as :func:`load_model` verifies it (``model.json`` unreadable, of an older format,
    without or not matching its checksum, or a ``readout.safetensors`` that is unreadable or does not match
    ``readout_checksum``): such a model is fitted again, never trusted, and a warning names the folder and why."""
    from safetensors.torch import load_file

    if not (folder / MODEL_FILE).exists():
        return None
    try:
        meta = read_description(folder)
        if tensors_checksum(load_file(str(folder / READOUT_FILE))) != meta["readout_checksum"]:
            raise UserError(f"{READOUT_FILE} does not match the checksum in {MODEL_FILE}")
    except Exception as err:  # noqa: BLE001 - any damage (JSON, format, checksums, safetensors, I/O) means: fit again
        warnings.warn(
            f"the saved model in {folder} is damaged, half-saved or written by an older version: fitting it again "
            f"({str(err)[:300]})",
            stacklevel=2,
        )
        return None
    digest = meta.get(key)
    return digest if isinstance(digest, str) else None


# -- reusing a saved model (``--model``) ----------------------------------------------------------------------------
SAVED_MODEL_LAYOUTS = (
    ("", "a model folder"),
    (MODEL_DIR, "the --out folder of `sharedattr fit` or `sharedattr run`"),
    (f"{FIT_DIR}/{MODEL_DIR}", "the --out folder of `sharedattr synthesize`"),
)
"""Where a folder given to ``--model`` (or the config's ``model``) may hold the saved model's :data:`MODEL_FILE`,
relative to it, and what such a folder is."""
REUSE_FIX = (
    "drop --model (and the config's `model` key) so that the run fits a model of its own, or fit one with this "
    "config (`sharedattr fit CONFIG --out DIR`) and pass --model DIR"
)


def saved_model_folder(path: str | Path) -> Path:
    """The model folder that ``path`` names: ``path`` itself when it holds ``model.json``, else its ``model/`` (the
    --out folder of ``sharedattr fit``) or ``fit/model/`` (of ``sharedattr synthesize``), as
    :data:`SAVED_MODEL_LAYOUTS` lists. :class:`UserError` naming ``path`` and the layouts expected when it holds
    none, or does not exist.

    Example::

        >>> saved_model_folder("fits/it-bodies")  # doctest: +SKIP
        PosixPath('fits/it-bodies/model')
    """
    path = Path(path)
    if not path.is_dir():
        raise MissingFileError(
            path, "model folder (--model, or `model` in the config)", "give the --out folder of `sharedattr fit`"
        )
    for sub, _ in SAVED_MODEL_LAYOUTS:
        folder = path / sub if sub else path
        if (folder / MODEL_FILE).is_file():
            return folder
    expected = "; ".join(
        f"{(path / sub / MODEL_FILE) if sub else (path / MODEL_FILE)} ({what})" for sub, what in SAVED_MODEL_LAYOUTS
    )
    raise UserError(
        f"model: {path} holds no saved model: expected {expected}. Give the --out folder of `sharedattr fit` (or "
        "its model folder), or drop --model to fit one"
    )


def settings_differences(meta: dict[str, Any], spec: ExperimentSpec) -> list[tuple[str, str]]:
    """``(kind, line)`` for every setting that decides a fit (:func:`fit_inputs`) and differs between a saved model's
    ``model.json`` (``meta``) and ``spec``, e.g. ``("backbone", "backbone.layer: 'layer1' in the model, 'layer2' in
    the config")``; settings the model does not record are not compared."""
    return [d for key, value in fit_inputs(spec).items() if key in meta for d in _differences(meta[key], value, key)]


def refuse_differences(folder: Path, differences: list[tuple[str, str]]) -> None:
    """The one :class:`UserError` for a saved model that cannot stand in for a config's fit: the folder, every
    difference (:func:`settings_differences` and the data and weights checks) and :data:`REUSE_FIX`; nothing when
    there is none."""
    if differences:
        kinds = " / ".join(dict.fromkeys(kind for kind, _ in differences))
        raise UserError(
            f"model: the saved model in {folder} was fitted with another {kinds} than this config's, so it cannot "
            "stand in for the run's fit:\n" + "\n".join(f"  - {line}" for _, line in differences) + f"\n{REUSE_FIX}"
        )


def check_reused_model(
    folder: Path, spec: ExperimentSpec, digests: dict[str, str], backbone: nn.Module
) -> dict[str, Any]:
    """Check that the saved model in ``folder`` (:func:`saved_model_folder`) is the model a fit of ``spec`` would make,
    so that a run may load it instead of fitting; return its verified ``model.json``.

    Compared: the settings that decide a fit (:func:`fit_inputs`: ``data``, ``backbone``, ``readout``, ``seed``), the
    content of the data files (``digests``: :data:`DATA_DIGESTS` → the current digest), the weights of ``backbone``
    (built from ``spec.backbone``) against the saved checksum, and the readout file against its checksum. One
    :class:`UserError` names the folder, every difference with both values (``backbone.layer: 'layer1' in the
    model, 'layer2' in the config``) and the fix; a damaged model is an error too (it is never fitted again here).
    """
    from safetensors.torch import load_file

    meta = read_description(folder)
    differences = settings_differences(meta, spec)
    for key, value in digests.items():
        saved = meta.get(key)
        if isinstance(saved, str) and saved != value:
            what, fields = DATA_DIGESTS[key]
            field = f"data.{fields[0] if fields else 'responses'}"
            differences.append(
                ("data", f"{field} (the content of {what}): {saved[:12]} in the model, {value[:12]} in the files now")
            )
    digest = fit_digest(spec, digests["stimuli_digest"], digests["responses_digest"])
    if not differences and meta.get("fit_digest") != digest:
        differences.append(
            (
                "data or seed",
                f"fit digest {str(meta.get('fit_digest'))[:12]} in the model, {digest[:12]} in the config (the model "
                "records no data settings to compare)",
            )
        )
    trained_here = declared(backbone, BackboneModule).trainable  # its weights are the saved model's, checked below
    if not differences and not trained_here and backbone_checksum(backbone) != meta.get("backbone_checksum"):
        differences.append(
            ("backbone", "backbone: the same spec, but other weights (a weights file or library changed since the fit)")
        )
    refuse_differences(folder, differences)
    try:
        readout_ok = tensors_checksum(load_file(str(folder / READOUT_FILE))) == meta["readout_checksum"]
    except Exception as err:  # noqa: BLE001 - missing, truncated or foreign file (SafetensorError, OSError)
        readout_ok, why = False, f"unreadable: {type(err).__name__}"
    else:
        why = "does not match the checksum in its model.json"
    if not readout_ok:
        raise UserError(
            f"model: the saved readout {folder / READOUT_FILE} is damaged ({why}); fit the model again with "
            "`sharedattr fit`, or drop --model"
        )
    return meta


def _differences(saved: Any, current: Any, where: str) -> list[tuple[str, str]]:
    """For every leaf in which two JSON values differ, its top-level field (``data``, ``backbone``, ...) and the line
    ``where.key: <saved> in the model, <current> in the config``."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = list(dict.fromkeys([*current, *saved]))
        return [d for k in keys for d in _differences(saved.get(k, _ABSENT), current.get(k, _ABSENT), f"{where}.{k}")]
    if saved == current:
        return []
    return [(where.split(".")[0], f"{where}: {_brief(saved)} in the model, {_brief(current)} in the config")]


_ABSENT = object()


def _brief(value: Any, limit: int = 80) -> str:
    text = "(not set)" if value is _ABSENT else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
