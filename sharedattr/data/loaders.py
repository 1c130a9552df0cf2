"""The public Python way in for a lab's data: :func:`load_stimuli` and :func:`load_responses`.

They read exactly what ``sharedattr fit``/``run`` read from a config's ``[data]`` table (the same readers, the same
checks, the same objects: a :class:`~sharedattr.data.stimuli.StimulusSet` and
:class:`~sharedattr.data.trials.Responses`); their keyword arguments are the config's field names, and an error
names the argument (``load_stimuli(category_column=...)``) where from a config it names the field
(``data.category_column``; :mod:`sharedattr.data.naming`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sharedattr.data.naming import arguments
from sharedattr.data.responses import load_responses as read_responses
from sharedattr.data.stimuli import StimulusSet
from sharedattr.data.trials import Responses
from sharedattr.runtime.errors import UserError

__all__ = ["load_responses", "load_stimuli", "stimulus_set"]


def load_stimuli(path: str | Path, images: str | Path | None = None, category_column: str | None = None) -> StimulusSet:
    """A stimulus set, as ``data.stimuli`` (with ``data.images`` and ``data.category_column``) of a config reads it.

    ``path``: a CSV manifest (``stimulus_id, path, category``, optional ``mask`` and ``mask:<part>`` columns), a
    BrainIO stimulus set CSV (``stimulus_id, filename`` and metadata columns), or a folder with one sub-folder of
    images per category. ``images``: where a CSV's image (and mask) paths lie, a folder or a ZIP archive read without
    extracting (default: the CSV's folder). ``category_column``: the CSV column holding each stimulus's category
    (default ``category``; e.g. BrainIO's ``object_name``).

    Returns a :class:`~sharedattr.data.stimuli.StimulusSet` (S stimuli: ``ids``, ``categories``, image ``paths``,
    masks), checked as a config's is: every problem in the listing is raised at once in one
    :class:`~sharedattr.runtime.errors.DataError` naming the file; images are decoded later, when used.

    Example::

        stimuli = sharedattr.load_stimuli("stimulus_set.csv", images="stimulus_set.zip", category_column="object_name")
        stimuli.ids[:3], stimuli.category_names   # ('obj_000', ...), ['bodies', 'objects']
    """
    return stimulus_set(path, images, category_column, "load_stimuli")


def stimulus_set(
    stimuli: StimulusSet | str | Path,
    images: str | Path | None = None,
    category_column: str | None = None,
    function: str = "load_stimuli",
) -> StimulusSet:
    """``stimuli`` as a :class:`~sharedattr.data.stimuli.StimulusSet`: read (:func:`load_stimuli`) when a path, errors
    naming the arguments of the Python function ``function``; kept when already loaded (then ``images`` and
    ``category_column`` must be None: they were applied when it was loaded)."""
    naming = arguments(function)
    if isinstance(stimuli, StimulusSet):
        settings = {"images": images, "category_column": category_column}
        given = [name for name, value in settings.items() if value is not None]
        if given:
            raise UserError(
                f"{', '.join(naming(name) for name in given)}: the stimuli are a StimulusSet already loaded; give "
                "these when loading it (sharedattr.load_stimuli), or pass the CSV's path instead"
            )
        return stimuli
    options: dict[str, Any] = {} if category_column is None else {"category_column": category_column}
    return StimulusSet.load(stimuli, images=images, naming=naming, **options)


def load_responses(
    path: str | Path,
    time_window: tuple[float, float] | None = None,
    *,
    stimuli: StimulusSet | None = None,
    response_ids: str | Path | None = None,
    neuron_ids: str | Path | None = None,
    time_bins: str | Path | None = None,
    nwb_table: str | None = None,
) -> Responses:
    """Recorded responses, as ``data.responses`` (with the other ``data`` fields of the same names) of a config reads
    them, optionally aligned to ``stimuli`` by stimulus id.

    ``path``: a ``.csv`` (``stimulus_id, <neuron id>, ...``, one row per trial), a ``.npy`` array ``[S, N]`` or
    ``[S, R, N]`` (with ``response_ids``, a text file of its stimulus ids, and optionally ``neuron_ids``) or a PSTH
    ``[S, R, T, N]`` (with ``time_bins``), a BrainIO-style NetCDF assembly (``.nc``: ``presentation × neuroid``,
    optionally ``time_bin``), an HDF5 PSTH (``.h5``) or an NWB recording (``.nwb``; ``nwb_table`` names its
    presentations table). ``time_window`` (``(start_ms, end_ms)`` after onset): the bins averaged, for time-binned
    data (required with several bins), or the spike counting window of an NWB file (required there).

    Returns :class:`~sharedattr.data.trials.Responses`: trials ``[S, R, N]`` (NaN-padded), their stimulus ``ids``
    and ``neuron_ids``; ``.values`` is the trial average ``[S, N]``. With ``stimuli``, the rows follow the stimulus
    set (``ids == stimuli.ids``; all-NaN rows for stimuli without a recording), as ``sharedattr run`` aligns them; a
    recorded stimulus id that the set lacks is a :class:`~sharedattr.runtime.errors.DataError`. Every problem in
    the file is raised at once, naming the file and this function's arguments (e.g. ``load_responses(time_window=
    ...)``).

    Example::

        stimuli = sharedattr.load_stimuli("stimulus_set.csv", images="stimulus_set.zip", category_column="object_name")
        recorded = sharedattr.load_responses("assembly.nc", time_window=(70, 170), stimuli=stimuli)
        recorded.values.shape   # torch.Size([len(stimuli), n_neurons]); NaN where not measured
    """
    recorded = read_responses(
        path,
        ids_path=response_ids,
        neuron_ids_path=neuron_ids,
        time_window=time_window,
        time_bins_path=time_bins,
        nwb_table=nwb_table,
        naming=arguments("load_responses"),
    )
    return recorded if stimuli is None else aligned(recorded, stimuli)


def aligned(recorded: Responses, stimuli: StimulusSet) -> Responses:
    """``recorded`` with one row per stimulus of ``stimuli``, in its order (all-NaN trials where unmeasured)."""
    trials = recorded.trials_aligned_to(stimuli)
    return Responses(trials, tuple(stimuli.ids), recorded.neuron_ids, recorded.source)
