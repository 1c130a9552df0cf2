"""Read a finished run folder (what :func:`sharedattr.experiment.run.run_experiment` wrote) through the run
folder's contract (:mod:`sharedattr.runtime.run_files`): every file by the name the contract gives it, every table
parsed once into typed rows.

Only ``spec.json`` is required; every other file is optional and reads as None when absent,
so a report can be built from a partial run (``components.json``, when absent, is resolved
from the plugin registry instead). A file that is there but cannot be read as the contract says is a
:class:`~sharedattr.runtime.run_files.RunFolderError` naming it. The stimuli and responses are found through
the spec's ``data`` paths (absolute, or relative to the working directory or the run folder).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from torch import Tensor

from sharedattr.report import components
from sharedattr.report.reading import Score
from sharedattr.report.stats import PairValues, pair_values
from sharedattr.runtime import run_files as files
from sharedattr.runtime.errors import MissingFileError, UserError
from sharedattr.runtime.json_files import DamagedJSON, parse_json
from sharedattr.runtime.json_files import read_json as read_bounded_json
from sharedattr.runtime.run_files import Row, RunFolderError, Table, damaged

EXPECTED = "expected the output folder of `sharedattr run` or `sharedattr synthesize`"


def read_json(path: Path) -> Any:
    """The JSON document in ``path``, or None if it does not exist; :class:`RunFolderError` naming it if damaged
    (too large, not UTF-8, not JSON, nested too deeply: every JSON file of a run folder is read through
    :func:`sharedattr.runtime.json_files.read_json`)."""
    if not path.is_file():
        return None
    try:
        return read_bounded_json(path)
    except DamagedJSON as err:
        raise damaged(path, err) from None


class RunDir:
    """A run folder: the spec (as written, a plain dict) and lazily read, typed results."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise MissingFileError(self.path, "run folder", EXPECTED)
        spec_path = self.path / files.SPEC_FILE
        if not spec_path.is_file():
            hint = EXPECTED
            if (self.path / files.DEMO_RUN_DIR / files.SPEC_FILE).is_file():
                hint = f"the run of `sharedattr demo` is in {self.path / files.DEMO_RUN_DIR}"
            raise MissingFileError(spec_path, "run spec", hint)
        try:
            saved = read_bounded_json(spec_path)
            self.spec: dict[str, Any] = dict(saved["spec"])
            if not isinstance(self.spec.get("data") or {}, dict):
                raise TypeError("its data is not a table")
        except (ValueError, KeyError, TypeError) as err:  # DamagedJSON is a ValueError
            raise RunFolderError(
                f"{spec_path}: not a run spec written by `sharedattr run` ({type(err).__name__}: {err})"
            ) from None
        self.digest = str(saved.get("digest", ""))
        self.kind = files.folder_kind(self.path) or files.RUN_KIND
        """``run`` or ``synthesize`` (:func:`~sharedattr.runtime.run_files.folder_kind`; a folder that holds neither's
        files reads as a partial run)."""
        self.synthesis_dir = "" if self.kind == files.SYNTHESIZE_KIND else files.SYNTHESIS_DIR
        """Where the synthesis tables and figures are: ``synthesis/`` in a run, the folder itself for ``synthesize``."""

    def file(self, name: str) -> Path | None:
        """``path/name`` (a name of :mod:`~sharedattr.runtime.run_files`) if it exists, else None."""
        p = self.path / name
        return p if p.exists() else None

    def table(self, table: Table, folder: str = "") -> list[Row] | None:
        """The typed rows of ``table`` in ``path/folder``, or None when the file does not exist."""
        return table.read(self.path / folder)

    @property
    def name(self) -> str:
        return str(self.spec.get("name", self.path.name))

    @cached_property
    def scores(self) -> list[Row] | None:
        """``scores.csv`` (:data:`~sharedattr.runtime.run_files.FIT_SCORES`): held-out r (and noise ceiling, FEV)
        per neuron."""
        return self.table(files.FIT_SCORES)

    @cached_property
    def pairs(self) -> list[Row] | None:
        """``pairs.csv`` (:data:`~sharedattr.runtime.run_files.PAIRS`): one row per (neuron, driver, reference),
        the row order of the maps."""
        return self.table(files.PAIRS)

    @cached_property
    def summary(self) -> list[Score] | None:
        """``summary.csv`` (:data:`~sharedattr.runtime.run_files.SUMMARY`) as :class:`Score` rows."""
        rows = self.table(files.SUMMARY)
        return None if rows is None else [Score(**r) for r in rows]

    @cached_property
    def pair_values(self) -> PairValues | None:
        """``results.csv`` (:data:`~sharedattr.runtime.run_files.RESULTS`): every method's per-pair values by
        (method, image, metric), for the paired tests."""
        rows = self.table(files.RESULTS)
        return None if rows is None else pair_values(rows)

    @cached_property
    def method_times(self) -> list[Row] | None:
        """``methods.csv`` (:data:`~sharedattr.runtime.run_files.METHOD_TIMES`): seconds per method."""
        return self.table(files.METHOD_TIMES)

    @cached_property
    def metric_times(self) -> list[Row] | None:
        """``metric_times.csv`` (:data:`~sharedattr.runtime.run_files.METRIC_TIMES`): seconds per metric × method."""
        return self.table(files.METRIC_TIMES)

    @property
    def has_synthesis(self) -> bool:
        """Whether the run wrote a ``synthesis/`` folder (always, for a ``synthesize`` folder)."""
        return self.kind == files.SYNTHESIZE_KIND or self.file(files.SYNTHESIS_DIR) is not None

    @cached_property
    def synthesis_scores(self) -> list[Row] | None:
        """``synthesis/scores.csv`` (:data:`~sharedattr.runtime.run_files.SYNTHESIS_SCORES`)."""
        return self.table(files.SYNTHESIS_SCORES, self.synthesis_dir)

    @cached_property
    def synthesis_summary(self) -> list[Row] | None:
        """``synthesis/summary.csv`` (:data:`~sharedattr.runtime.run_files.SYNTHESIS_SUMMARY`)."""
        return self.table(files.SYNTHESIS_SUMMARY, self.synthesis_dir)

    @cached_property
    def evaluators(self) -> list[Row] | None:
        """``synthesis/evaluators.csv`` (:data:`~sharedattr.runtime.run_files.EVALUATORS`)."""
        return self.table(files.EVALUATORS, self.synthesis_dir)

    @cached_property
    def components(self) -> components.Components:
        """What the run's methods and metrics declare (``components.json``, else resolved from the registry)."""
        return components.load(self.path / files.COMPONENTS_FILE, self.spec)

    @cached_property
    def timings(self) -> dict[str, dict[str, Any]] | None:
        """``timings.json`` per stage: ``seconds``, ``peak_rss_mb`` (MB, or None) and ``peak_of`` ("stage",
        "process", or None where not recorded). Reads both the file of older runs, ``{stage: seconds}``, and
        ``{stage: {seconds, peak_rss_mb, peak_of}}`` (:class:`~sharedattr.experiment.context.StageTimer`)."""
        path = self.path / files.TIMINGS_FILE
        timings = read_json(path)
        if timings is None:
            return None
        if not isinstance(timings, dict):
            raise damaged(path, TypeError("not a JSON object"))
        try:
            return {str(stage): stage_record(stage, value) for stage, value in timings.items()}
        except (KeyError, TypeError, ValueError) as err:
            raise damaged(path, err) from None

    @cached_property
    def model_meta(self) -> dict[str, Any] | None:
        path = self.path / files.MODEL_RECORD
        meta = read_json(path)
        if meta is not None and not isinstance(meta, dict):
            raise damaged(path, TypeError("not a JSON object"))
        return meta

    @cached_property
    def maps(self) -> tuple[dict[str, Tensor], list[tuple[str, ...]]] | None:
        """``maps.safetensors``: ``{"<method>/<image>": [P, H, W]}`` and the pairs of its metadata, one
        ``(neuron, driver, reference)`` per row (``pairs_json``; older files: ``neuron|driver|reference`` joined by
        ``;``), or None."""
        path = self.path / files.MAPS_FILE
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file (SafetensorError, OSError, ...)
            raise RunFolderError(
                f"{path}: not a readable safetensors file ({err}); run `sharedattr run` again into "
                "this folder to rewrite it"
            ) from None
        foreign = next((k for k, t in tensors.items() if "/" not in k or t.dim() != 3), None)
        if foreign is not None:
            raise damaged(path, f"{foreign!r} is not a map stack <method>/<image> of shape [P, H, W]")
        return tensors, listed_pairs(meta, path)

    def data_path(self, key: str) -> Path | None:
        """The spec's ``data.<key>`` path, resolved (as is, else relative to the run folder); None if unset."""
        value = (self.spec.get("data") or {}).get(key)
        if not value:
            return None
        p = Path(value)
        return p if p.is_absolute() or p.exists() or not (self.path / p).exists() else self.path / p

    @cached_property
    def stimuli(self) -> Any:
        """The run's :class:`~sharedattr.data.StimulusSet`, or the :class:`UserError` that prevented loading it."""
        from sharedattr.data import StimulusSet

        path = self.data_path("stimuli")
        if path is None:
            return UserError("the spec names no stimuli")
        column = (self.spec.get("data") or {}).get("category_column") or "category"
        try:
            return StimulusSet.load(path, images=self.data_path("images"), category_column=str(column))
        except UserError as err:  # moved or deleted data: the report says so instead of failing
            return err


def stage_record(stage: str, value: Any) -> dict[str, Any]:
    """One stage of ``timings.json`` as ``{seconds, peak_rss_mb, peak_of}``: from ``{seconds, peak_rss_mb,
    peak_of}``, or from the seconds alone (older runs). :class:`ValueError`/:class:`TypeError`/:class:`KeyError`
    for a record that is neither."""
    if not isinstance(value, dict):  # older runs: seconds only
        return {"seconds": float(value), "peak_rss_mb": None, "peak_of": None}
    peak, of = value.get("peak_rss_mb"), value.get("peak_of")
    if of not in (None, "stage", "process"):
        raise ValueError(f"{stage}: peak_of {of!r} is not 'stage' or 'process'")
    return {"seconds": float(value["seconds"]), "peak_rss_mb": None if peak is None else float(peak), "peak_of": of}


def listed_pairs(meta: dict[str, str], path: Path) -> list[tuple[str, ...]]:
    """The ``(neuron, driver, reference)`` rows of a maps file's metadata; [] when it lists none."""
    if files.MAPS_PAIRS_KEY in meta:
        try:
            rows = parse_json(meta[files.MAPS_PAIRS_KEY])
            return [tuple(str(v) for v in row) for row in rows if isinstance(row, list) and len(row) == 3]
        except (ValueError, TypeError):  # DamagedJSON is a ValueError
            raise RunFolderError(
                f"{path}: damaged pairs metadata; run `sharedattr run` again into this folder to rewrite it"
            ) from None
    listed = meta.get("pairs", "")  # files of older runs
    return [tuple(row.split("|")) for row in listed.split(";")] if listed else []
