"""The run folder's contract: every file that ``sharedattr run``, ``sharedattr synthesize`` and ``sharedattr fit``
write, and the columns and types of each CSV table, for the writers (:mod:`sharedattr.experiment`) and the readers
(:mod:`sharedattr.report`) alike. Nothing else in the package spells a file name of a run folder.

A ``run`` folder holds::

    spec.json          the validated spec and its digest (written once every result is)
    scores.csv         FIT_SCORES: held-out r, noise ceiling and FEV per neuron (``fit`` writes it too)
    model/             the fitted encoding model (model.json, readout.safetensors; ``fit`` writes it too)
    pairs.csv          PAIRS: one row per (neuron, driver, reference), the row order of the maps
    results.csv        RESULTS: tidy, one row per pair × method × image × metric (and results.parquet)
    summary.csv        SUMMARY: method × image × metric mean ± sem
    methods.csv        METHOD_TIMES: seconds per method
    metric_times.csv   METRIC_TIMES: seconds per metric × method
    components.json    what each method and metric declares, and its plugin
    maps.safetensors   every map [P, H, W] as "<method>/<image>", the pairs in its metadata (MAPS_PAIRS_KEY)
    figures/           fit.png and one attribution grid per neuron (neuron_figure)
    work/              finished work items
    synthesis/         the synthesis folder below, when synthesizers are configured
    timings.json       seconds and peak memory per stage
    environment.json   what decides the results' last bits on this machine
    report.html        the report
    manifest.json      every file's size and SHA-256, written last

A synthesis folder (``<run>/synthesis``, or the ``--out`` of ``sharedattr synthesize``, which also holds ``fit/``
with the model it optimises on, and ``spec.json``, ``environment.json`` and ``manifest.json``) holds
SYNTHESIS_SCORES, SYNTHESIS_SUMMARY, EVALUATORS, with a generative prior PRIOR_CHECKS, with an iterative
synthesizer beside another EQUAL_ACTIVATION, ``images.safetensors``,
the figures ``images.png``, ``comparison.png`` and ``prior_samples.png``, ``evaluators/`` (the fitted evaluator
models) and ``work/``.

Each CSV is a :class:`Table`: its file name and its :class:`Column` s, each with a type. Writers write
:attr:`Table.header`; readers get each row parsed once into typed values (:meth:`Table.read`): ``str`` as written,
``float`` with an empty cell as NaN, ``int``, and ``bool`` (``True``/``False``). A file that cannot be parsed or
lacks a column is a :class:`RunFolderError` naming the file. Light: nothing here imports torch or matplotlib.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sharedattr.runtime.errors import UserError
from sharedattr.runtime.io import atomic_write_csv, safe_file_name
from sharedattr.runtime.manifest import MANIFEST_NAME

Row = dict[str, Any]
"""One parsed row of a table: ``{column: typed value}``, exactly the table's columns."""


class RunFolderError(UserError):
    """A file of a run folder that cannot be read as the contract says: damaged, or lacking columns. The one-line
    message names the file and says how to rewrite it."""


def damaged(path: str | Path, err: BaseException | str) -> RunFolderError:
    """The one-line error for a damaged file of a run folder (``err``: what is wrong with it)."""
    why = err if isinstance(err, str) else f"{type(err).__name__}: {str(err)[:200]}"
    folder = Path(path).parent
    command = (
        "sharedattr synthesize" if folder_kind(folder) == SYNTHESIZE_KIND and not _in_run(folder) else "sharedattr run"
    )
    return RunFolderError(f"{path}: damaged ({why}); run `{command}` again into {folder} to rewrite it")


def _in_run(folder: Path) -> bool:
    """Whether ``folder`` is the ``synthesis/`` folder of a run (which holds a synthesize folder's tables)."""
    return folder.name == SYNTHESIS_DIR and folder_kind(folder.parent) == RUN_KIND


# -- the files ------------------------------------------------------------------------------------------------
SPEC_FILE = "spec.json"
COMPONENTS_FILE = "components.json"
"""What each method and metric label of a run declares (written by
:func:`sharedattr.experiment.tables.write_components`, read by :mod:`sharedattr.report.components`):
``{"methods": {label: {spec, pairwise, plugin, params, changed, control, scope}}, "metrics": {label: {spec, family,
higher_is_better, single_image_value, plugin}}}``. ``params``: every param as validated; ``changed``: the names of
those that differ from their defaults; ``control``: what the method is a control of, in words (null: a real method);
``scope``: what its benchmarks established (or null); ``single_image_value``: the score every single-image method
gets by construction (null for most metrics). Files of older runs lack the last four method keys and
``single_image_value``: the report completes them from the installed plugins."""
MAPS_FILE = "maps.safetensors"
MAPS_PAIRS_KEY = "pairs_json"
"""The metadata entry of :data:`MAPS_FILE` that lists its rows: a JSON list of ``[neuron, driver, reference]``."""
MAP_IMAGES = ("driver", "reference")
"""The images of a pair, in order: the values of the ``image`` column and the ``<image>`` of a maps key."""
TIMINGS_FILE = "timings.json"
ENVIRONMENT_FILE = "environment.json"
REPORT_FILE = "report.html"
MANIFEST_FILE = MANIFEST_NAME
PARQUET_SUFFIX = ".parquet"
"""``results.csv`` is also written as ``results.parquet`` when pyarrow is installed."""

MODEL_DIR = "model"
MODEL_RECORD = f"{MODEL_DIR}/model.json"
"""The saved model's record (:data:`sharedattr.encoding.store.MODEL_FILE` in :data:`MODEL_DIR`)."""
FIGURES_DIR = "figures"
FIT_FIGURE = f"{FIGURES_DIR}/fit.png"
WORK_DIR = "work"
SYNTHESIS_DIR = "synthesis"
DEMO_RUN_DIR = "results"
"""Where ``sharedattr demo --out X`` puts its run folder: ``X/results``."""

FIT_DIR = "fit"
"""In a ``sharedattr synthesize`` folder: the fit of the model the images are optimised on."""
EVALUATORS_DIR = "evaluators"
"""In a synthesis folder: one fitted evaluator model per label."""
SYNTHESIS_IMAGES = "images.safetensors"
SYNTHESIS_GRID = "images.png"
SYNTHESIS_COMPARISON = "comparison.png"
PRIOR_SAMPLES_GRID = "prior_samples.png"


def neuron_figure(neuron_id: str) -> str:
    """The name of a neuron's attribution grid in :data:`FIGURES_DIR`: ``neuron_<id>.png`` for a short id that is
    safe in a file name, else the sanitised id plus a digest (:func:`~sharedattr.runtime.io.safe_file_name`)."""
    return safe_file_name("neuron_", neuron_id, ".png")


# -- the tables -----------------------------------------------------------------------------------------------
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
"""The cells a ``bool`` column reads (case-insensitive); the writers write ``True`` and ``False``."""


@dataclass(frozen=True)
class Column:
    """A CSV column: its name, the type of its values (``str``, ``int``, ``float`` or ``bool``) and whether older
    folders may lack it (``optional``: an absent column reads as empty: ``""``, NaN, or None for ``int``)."""

    name: str
    type: type = str
    optional: bool = False

    def parse(self, text: str) -> Any:
        """The typed value of one cell; :class:`ValueError` when the text is not of the column's type."""
        if self.type is str:
            return text
        if self.type is float:
            return float(text) if text != "" else math.nan
        if self.type is int:
            return int(text)
        if self.type is bool:
            value = BOOLEANS.get(text.strip().lower())
            if value is None:
                raise ValueError(f"{text!r} is not True or False")
            return value
        raise TypeError(f"column {self.name}: unsupported type {self.type!r}")

    @property
    def absent(self) -> Any:
        """The value of an optional column that a file lacks."""
        return {str: "", float: math.nan}.get(self.type)


@dataclass(frozen=True)
class Table:
    """A CSV table of a run folder: its file name (in its folder) and its columns, in the order written."""

    name: str
    columns: tuple[Column, ...]

    @property
    def header(self) -> list[str]:
        """The column names, in order: what the writer writes."""
        return [c.name for c in self.columns]

    def write(self, folder: str | Path, rows: Iterable[Mapping[str, Any]], extra: Iterable[str] = ()) -> Path:
        """Write ``rows`` to ``folder/name`` atomically, under :attr:`header` and then the ``extra`` columns (a
        row's missing cells are empty); floats as ``%.6g``. Returns the path."""
        return atomic_write_csv(Path(folder) / self.name, rows, [*self.header, *extra])

    def read(self, folder: str | Path) -> list[Row] | None:
        """The typed rows of ``folder/name`` (only this table's columns), or None when the file does not exist.

        :class:`RunFolderError` naming the file when it is not UTF-8 CSV, a row has more or fewer cells than the
        header, a required column is missing or a cell is not of its column's type.
        """
        path = Path(folder) / self.name
        if not path.is_file():
            return None
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                text_rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as err:
            raise damaged(path, err) from None
        _check_cells(text_rows, path)
        missing = [c.name for c in self.columns if not c.optional and c.name not in header]
        if missing:
            raise RunFolderError(
                f"{path}: lacks the column(s) {', '.join(missing)} (not a {self.name} of this version of sharedattr); "
                f"run the command that wrote {path.parent} again into it to rewrite it"
            )
        return self._typed(text_rows, path)

    def parse(self, text_rows: Iterable[Mapping[str, Any]], where: str | Path = "") -> list[Row]:
        """Typed rows of CSV rows ``text_rows`` (``{column: text}``, as :class:`csv.DictReader` yields them); an
        optional column a row lacks reads as :attr:`Column.absent`. :class:`RunFolderError` naming ``where`` (the
        file, or the table's name) for a row that does not match its header, lacks a required column or has a cell
        not of its type."""
        text_rows = list(text_rows)
        _check_cells(text_rows, where or self.name)
        return self._typed(text_rows, where or self.name)

    def _typed(self, text_rows: list[Mapping[str, Any]], where: str | Path) -> list[Row]:
        out = []
        for number, text in enumerate(text_rows, start=2):  # line 1 is the header
            row = {}
            for column in self.columns:
                cell = text.get(column.name)
                if cell is None:
                    if not column.optional:
                        raise RunFolderError(f"{where}: lacks the column {column.name}")
                    row[column.name] = column.absent
                    continue
                try:
                    row[column.name] = column.parse(str(cell))
                except ValueError as err:
                    raise damaged(where, f"row {number}, column {column.name}: {err}") from None
            out.append(row)
        return out


def _check_cells(text_rows: list[Mapping[str, Any]], where: str | Path) -> None:
    """:class:`RunFolderError` naming ``where`` for a row with more or fewer cells than its header (the extra cells
    of :class:`csv.DictReader` are under the key None, the missing ones None)."""
    for number, text in enumerate(text_rows, start=2):  # line 1 is the header
        if None in text or None in text.values():
            raise damaged(where, f"row {number} does not match the header")


def _pair_columns() -> tuple[Column, ...]:
    """The columns that name a driver/reference pair (the first columns of :data:`PAIRS` and :data:`RESULTS`)."""
    return (
        Column("neuron"),
        Column("driver"),
        Column("driver_category"),
        Column("reference"),
        Column("rank", int),
        Column("similarity", float),
    )


FIT_SCORES = Table(
    "scores.csv",
    (
        Column("neuron"),
        Column("test_r", float),
        Column("noise_ceiling", float, optional=True),
        Column("fev", float, optional=True),
        Column("n_train", int, optional=True),
        Column("n_test", int, optional=True),
        Column("note", optional=True),
    ),
)
"""``scores.csv`` of a run or fit folder: per neuron, held-out r, and, where trials repeat, noise ceiling and FEV
(empty where undefined, with the reason in ``note``), and the train and test image counts."""

PAIRS = Table("pairs.csv", (*_pair_columns(), Column("driver_response", float)))
"""``pairs.csv``: one row per (neuron, driver, reference) in the row order of the maps; ``rank`` is the reference's
rank among the driver's matches, stored 0-based (0 = most similar; the same in ``results.csv``). Wherever a user reads
it (the report's "ref. rank") it is shown 1-based, :func:`shown_rank` (1 = the best match)."""


def shown_rank(rank: int) -> int:
    """The stored 0-based ``rank`` of :data:`PAIRS` as a user reads it: 1-based, 1 = the most similar reference.

    >>> shown_rank(0)
    1
    """
    return rank + 1


RESULTS = Table(
    "results.csv",
    (
        *_pair_columns(),
        Column("method"),
        Column("image"),
        Column("metric"),
        Column("value", float),
        Column("higher_is_better", bool),
    ),
)
"""``results.csv``: tidy, one row per pair × method × image (driver or reference) × metric."""

SUMMARY = Table(
    "summary.csv",
    (
        Column("method"),
        Column("image"),
        Column("metric"),
        Column("mean", float),
        Column("sem", float),
        Column("n", int),
        Column("higher_is_better", bool),
    ),
)
"""``summary.csv``: method × image × metric mean ± sem over the finite values (``n`` counts them)."""

METHOD_TIMES = Table(
    "methods.csv",
    (Column("method"), Column("seconds", float), Column("pairs", int), Column("ms_per_pair", float)),
)
"""``methods.csv``: per method, the seconds to make all its maps and the milliseconds per pair."""

METRIC_TIMES = Table(
    "metric_times.csv",
    (
        Column("metric"),
        Column("method"),
        Column("seconds", float),
        Column("maps", int),
        Column("ms_per_map", float),
        Column("share_of_method", float),
    ),
)
"""``metric_times.csv``: per metric × method, the seconds to score the method's maps, per map, and as a share of the
method's own time."""

SYNTHESIS_SCORES = Table(
    "scores.csv",
    (
        Column("neuron"),
        Column("synthesizer"),
        Column("seed", int),
        Column("evaluator"),
        Column("role"),
        Column("response", float),
        Column("best_natural", float),
        Column("relative", float),
    ),
)
"""``scores.csv`` of a synthesis folder: one row per neuron × synthesizer × seed × evaluator model; then the
synthesizer's cost columns (:data:`SYNTHESIS_COSTS` that any row has, then any others in name order)."""

SYNTHESIS_COSTS = (
    "steps",
    "forward_calls",
    "backward_calls",
    "model_images",
    "denoiser_calls",
    "denoiser_backward_calls",
    "wall_s",
)
"""The cost columns of :data:`SYNTHESIS_SCORES` (floats), in the order written."""

SYNTHESIS_SUMMARY = Table(
    "summary.csv",
    (
        Column("synthesizer"),
        Column("evaluator"),
        Column("role"),
        Column("mean_relative", float),
        Column("sem_relative", float),
        Column("n", int),
        Column("mean_response", float),
        Column("wall_s_per_neuron", float),
        Column("forward_calls", float),
        Column("backward_calls", float),
        Column("denoiser_calls", float),
        Column("prior_mismatch", optional=True),
        Column("equal_activation_by", optional=True),
        Column("relative_at_equal_train", float, optional=True),
        Column("steps_to_equal", float, optional=True),
        Column("censored_rate", float, optional=True),
        Column("compute_to_equal", float, optional=True),
    ),
)
"""``summary.csv`` of a synthesis folder: per synthesizer × evaluator, the mean ± sem relative activation and the mean
cost per neuron; ``prior_mismatch``: how the synthesizer's generative prior does not fit the stimuli (its
PRIOR_CHECKS mismatches, "; "-joined; empty when it fits or has no prior). The comparison at equal train activation
(:data:`EQUAL_ACTIVATION`), on the rows of each synthesizer another one was matched to: ``equal_activation_by``, the
matched (iterative) synthesizer; ``relative_at_equal_train``, the mean relative activation of its iterates at equal
train activation on this evaluator; ``steps_to_equal``, the median of its passes to reach this synthesizer's train
activation (right-censored: a neuron × seed it never reaches counts at its full run); ``censored_rate``, the share
never reached; ``compute_to_equal``, the median of its seconds to reach ÷ this synthesizer's seconds per neuron
(censored alike)."""

EQUAL_ACTIVATION = Table(
    "equal_activation.csv",
    (
        Column("neuron"),
        Column("synthesizer"),
        Column("matched_to"),
        Column("seed", int),
        Column("step", int),
        Column("reached", bool),
        Column("target", float),
        Column("passes", float),
        Column("seconds", float),
        Column("evaluator"),
        Column("role"),
        Column("response", float),
        Column("best_natural", float),
        Column("relative", float),
    ),
)
"""``equal_activation.csv`` of a synthesis folder: per iterative synthesizer (one that declares ``iterates_at``) ×
synthesizer it is matched to × neuron × seed × evaluator, its iterate at ``step``, the first step at which its
train-model response reaches ``target`` (the other's train activation, same seed), scored like ``scores.csv``.
``reached`` False: it never does, and the iterate is its last (``step`` = its steps run). ``passes``: the
forward+backward passes to reach (``step + 1``; its full run when not reached: right-censored at the budget);
``seconds``: its seconds per neuron × passes ÷ its steps run."""

PRIOR_CHECKS = Table(
    "priors.csv",
    (
        Column("synthesizer"),
        Column("prior"),
        Column("prior_channels", int),
        Column("prior_height", int),
        Column("prior_width", int),
        Column("stimuli_channels", int),
        Column("input_height", int),
        Column("input_width", int),
        Column("prior_mean", float),
        Column("prior_std", float),
        Column("stimuli_mean", float),
        Column("stimuli_std", float),
        Column("mismatch"),
    ),
)
"""``priors.csv`` of a synthesis folder: per synthesizer with a generative prior, its unguided samples against the
stimuli at the model's input (channels, size, mean pixel value and contrast, the std within an image;
:func:`~sharedattr.synthesis.prior.check_prior`) and the mismatches found ("; "-joined, empty when it fits)."""

EVALUATORS = Table(
    "evaluators.csv",
    (Column("evaluator"), Column("role"), Column("model"), Column("median_test_r", float)),
)
"""``evaluators.csv`` of a synthesis folder: each evaluator model, its role and its median held-out r."""

RUN_KIND = "run"
SYNTHESIZE_KIND = "synthesize"
FOLDER_KINDS = {
    RUN_KIND: (PAIRS.name, RESULTS.name, MAPS_FILE, TIMINGS_FILE, COMPONENTS_FILE, MODEL_RECORD),
    SYNTHESIZE_KIND: (EVALUATORS.name, f"{FIT_DIR}/{MODEL_RECORD}"),
}
"""Files that only one kind of output folder holds: ``sharedattr run``'s (``fit`` writes a part of it, its model)
and ``sharedattr synthesize``'s. Both write a ``scores.csv`` and a ``summary.csv`` of their own, so neither command
writes into the other's folder."""


def folder_kind(folder: str | Path) -> str | None:
    """Which command wrote ``folder``, by the files only one kind holds (:data:`FOLDER_KINDS`): :data:`RUN_KIND`
    (``run``, or ``fit``'s part of it), :data:`SYNTHESIZE_KIND`, or None when it holds neither's files.

    >>> folder_kind("/nonexistent") is None
    True
    """
    folder = Path(folder)
    return next((kind for kind, marks in FOLDER_KINDS.items() if any((folder / m).exists() for m in marks)), None)
