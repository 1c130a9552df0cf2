"""``sharedattr validate``'s data checks: everything ``fit`` would refuse that the files' headers show, found first.

:func:`check_data` runs, in the order :func:`~sharedattr.experiment.stages.load_data` meets them, the very checks
the readers run before they load anything, so that a config ``fit`` refuses on these grounds is refused by
``validate`` with the same message, in a second instead of after the features are computed:

1. the stimulus set: a manifest's (or BrainIO CSV's) columns, with a did-you-mean for the category column, its rows,
   and every image and mask it names present (in a folder, or as a member of a ZIP archive; the archive's member
   list is read, no image is decoded); ``data.categories``;
2. the responses' header (:func:`~sharedattr.data.inspection.inspect_responses`): the format, a CSV's header row, a
   ``.npy`` array's shape with its id lists, a NetCDF / HDF5 / NWB file's dims, coordinates and time bins against
   ``data.time_window``; no response value is read;
3. the selection: ``selection.neurons`` and ``data.preferred_category`` against the ids found, and
   ``data.neuron_parts``;
4. the ids: every stimulus id of the responses is a stimulus of the set;
5. every weights file a component names (:func:`~sharedattr.encoding.backbones.frozen.weights_header`): a safetensors
   header, or a torch file's magic;
6. a saved model the run reuses (``model``, ``--model``): its folder holds one, fitted with this config's settings.

Memory and time stay bounded by the files' id lists: no pixel and no response matrix is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sharedattr.config.spec import ExperimentSpec
from sharedattr.data import StimulusSet
from sharedattr.data.archives import ZipMember
from sharedattr.data.inspection import inspect_responses
from sharedattr.data.trials import check_known_ids
from sharedattr.encoding.backbones.frozen import WEIGHTS_SUFFIXES, weights_header
from sharedattr.encoding.store import read_description, refuse_differences, saved_model_folder, settings_differences
from sharedattr.experiment.stages import check_selection, checked_neuron_parts, response_settings
from sharedattr.plugins.params import CHECK_FILES_KEY
from sharedattr.plugins.registry import Registry

DataCheck = tuple[str, str]
"""One check that passed: what was checked (``stimuli``, ``responses``, ...) and what was found, in words."""


def check_data(spec: ExperimentSpec, registry: Registry) -> Iterator[DataCheck]:
    """Run the data checks of ``spec`` (module docstring), yielding one :data:`DataCheck` per check as it passes; the
    first that fails raises the :class:`~sharedattr.runtime.errors.UserError` ``fit`` would raise.

    Example::

        >>> for what, found in check_data(load_experiment("experiment.toml"), get_registry()):  # doctest: +SKIP
        ...     print(f"{what:<10} {found}")
        stimuli    manifest.csv: 36 stimuli in 3 categories (bodies, faces, objects); 36 images found in its folder
        responses  responses.csv (CSV): 36 stimuli × 8 neurons; 72 rows (trials)
        ...
    """
    data = spec.data
    stimuli = StimulusSet.load(data.stimuli, images=data.images, category_column=data.category_column)
    yield "stimuli", _describe_stimuli(stimuli, Path(data.stimuli))
    if data.categories is not None:
        stimuli.check_categories(data.categories)
        yield "categories", f"every stimulus's category is one of {', '.join(data.categories)}"
    header = inspect_responses(data.responses, **response_settings(spec))
    yield "responses", header.describe()
    check_selection(spec, stimuli, header.neuron_ids)
    yield "selection", _describe_selection(spec)
    if data.neuron_parts is not None:
        parts = checked_neuron_parts(spec, stimuli, header.neuron_ids) or {}
        yield "parts", f"{Path(data.neuron_parts).name}: parts of {len(parts)} neurons, all in the responses"
    measured = check_known_ids(str(header.path), header.ids, stimuli.ids)
    yield "ids", f"{measured} of {len(stimuli)} stimuli have responses; every response id is a stimulus"
    for loc, path in weights_files(spec, registry):
        yield "weights", f"{loc}: {path.name}: {weights_header(path)}"
    if spec.model is not None:
        yield "model", _checked_model(spec)


def _checked_model(spec: ExperimentSpec) -> str:
    """The saved model a run reuses (``model``, ``--model``): its folder holds one, and the settings it records agree
    with the config's (the checks of :func:`~sharedattr.encoding.store.check_reused_model` that need no data digest
    and no backbone: those run when the run starts)."""
    folder = saved_model_folder(spec.model)
    refuse_differences(folder, settings_differences(read_description(folder), spec))
    return f"{folder}: a saved model whose data, backbone, readout and seed settings are this config's"


def weights_files(spec: ExperimentSpec, registry: Registry) -> list[tuple[str, Path]]:
    """Every weights file the spec's components name: ``(field path, file)`` for each path param ending in one of
    :data:`~sharedattr.encoding.backbones.frozen.WEIGHTS_SUFFIXES` (evaluators' backbones included)."""
    found = []
    for loc, component in spec.component_specs():
        params = component.validated_params(registry, loc=loc, context={CHECK_FILES_KEY: False})
        for name in type(params).model_fields:
            value = getattr(params, name)
            if isinstance(value, Path) and value.suffix.lower() in WEIGHTS_SUFFIXES:
                found.append((f"{loc}.{name}", value))
    return found


def _describe_stimuli(stimuli: StimulusSet, path: Path) -> str:
    """``manifest.csv: 36 stimuli in 3 categories (...); 36 images found in its folder`` (or members of a ZIP)."""
    names = stimuli.category_names
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    archives = {p.archive.name for p in stimuli.paths if isinstance(p, ZipMember)}
    where = f"members of {', '.join(sorted(archives))}" if archives else "files"
    masks = sum(m is not None for m in stimuli.masks) + sum(
        m is not None for column in stimuli.part_masks.values() for m in column
    )
    extra = f" and {masks} masks" if masks else ""
    return (
        f"{path.name}: {len(stimuli)} stimuli in {len(names)} categories ({shown}); "
        f"{len(stimuli)} images{extra} found ({where}, not decoded)"
    )


def _describe_selection(spec: ExperimentSpec) -> str:
    """What :func:`~sharedattr.experiment.stages.check_selection` found, in words."""
    found = []
    if spec.data.preferred_category is not None:
        found.append(f"data.preferred_category {spec.data.preferred_category!r} is a category")
    if spec.selection.neurons is not None:
        found.append(f"the {len(spec.selection.neurons)} selection.neurons are recorded")
    return "; ".join(found) or "neurons chosen by the fit (top_k / min_r): nothing to check before it"
