"""Read a finished run folder (what :func:`sharedattr.experiment.run.run_experiment` wrote).

Only ``spec.json`` is required; every other file is optional and reads as None when absent,
so a report can be built from a partial run (``components.json``, when absent, is resolved
from the plugin registry instead). The stimuli and responses are found through
the spec's ``data`` paths (absolute, or relative to the working directory or the run folder).
"""

from __future__ import annotations

import csv
from functools import cached_property
from pathlib import Path
from typing import Any

from torch import Tensor

from sharedattr.report import components
from sharedattr.report.reading import Score
from sharedattr.report.stats import PairValues, pair_values
from sharedattr.runtime.errors import MissingFileError, UserError
from sharedattr.runtime.json_files import DamagedJSON, parse_json
from sharedattr.runtime.json_files import read_json as read_bounded_json

SPEC_FILE = "spec.json"
COMPONENTS_FILE = "components.json"
"""What each method and metric of the run declares (written by
:func:`sharedattr.experiment.tables.write_components`)."""


def read_csv(path: Path) -> list[dict[str, str]] | None:
    """The rows of a CSV file as dicts, or None if it does not exist."""
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise damaged(path, err) from None
    if any(None in row or None in row.values() for row in rows):  # more or fewer cells than the header
        raise damaged(path, ValueError("rows do not match the header"))
    return rows


def read_json(path: Path) -> Any:
    """The JSON document in ``path``, or None if it does not exist; :class:`UserError` naming it if damaged (too
    large, not UTF-8, not JSON, nested too deeply: every JSON file of a run folder is read through
    :func:`sharedattr.runtime.json_files.read_json`)."""
    if not path.is_file():
        return None
    try:
        return read_bounded_json(path)
    except DamagedJSON as err:
        raise damaged(path, err) from None


def damaged(path: Path, err: BaseException) -> UserError:
    """The one-line error for a damaged file of a run folder."""
    return UserError(
        f"{path}: damaged ({type(err).__name__}: {str(err)[:200]}); run `sharedattr run` again into "
        f"{path.parent} to rewrite it"
    )


class RunDir:
    """A run folder: the spec (as written, a plain dict) and lazily read results."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise MissingFileError(self.path, "run folder", "expected the output folder of `sharedattr run`")
        spec_path = self.path / SPEC_FILE
        if not spec_path.is_file():
            hint = "expected the output folder of `sharedattr run`"
            if (self.path / "results" / SPEC_FILE).is_file():
                hint = f"the run of `sharedattr demo` is in {self.path / 'results'}"
            raise MissingFileError(spec_path, "run spec", hint)
        try:
            saved = read_bounded_json(spec_path)
            self.spec: dict[str, Any] = dict(saved["spec"])
        except (ValueError, KeyError, TypeError) as err:  # DamagedJSON is a ValueError
            raise UserError(
                f"{spec_path}: not a run spec written by `sharedattr run` ({type(err).__name__}: {err})"
            ) from None
        self.digest = str(saved.get("digest", ""))

    def file(self, name: str) -> Path | None:
        """``path/name`` if it exists, else None."""
        p = self.path / name
        return p if p.exists() else None

    @property
    def name(self) -> str:
        return str(self.spec.get("name", self.path.name))

    @cached_property
    def scores(self) -> list[dict[str, str]] | None:
        """``scores.csv``: held-out r (and noise ceiling, FEV) per neuron."""
        return read_csv(self.path / "scores.csv")

    @cached_property
    def pairs(self) -> list[dict[str, str]] | None:
        """``pairs.csv``: one row per (neuron, driver, reference), the row order of the maps."""
        return read_csv(self.path / "pairs.csv")

    @cached_property
    def summary(self) -> list[Score] | None:
        """``summary.csv`` as :class:`Score` rows."""
        rows = read_csv(self.path / "summary.csv")
        return None if rows is None else [Score.from_row(r) for r in rows]

    @cached_property
    def pair_values(self) -> PairValues | None:
        """``results.csv``: every method's per-pair values by (method, image, metric), for the paired tests."""
        rows = read_csv(self.path / "results.csv")
        return None if rows is None else pair_values(rows)

    @cached_property
    def components(self) -> components.Components:
        """What the run's methods and metrics declare (``components.json``, else resolved from the registry)."""
        return components.load(self.path / COMPONENTS_FILE, self.spec)

    @cached_property
    def timings(self) -> dict[str, dict[str, Any]] | None:
        """``timings.json`` per stage: ``seconds``, ``peak_rss_mb`` (MB, or None) and ``peak_of`` ("stage",
        "process", or None where not recorded). Reads both the file of older runs, ``{stage: seconds}``, and
        ``{stage: {seconds, peak_rss_mb, peak_of}}`` (:class:`~sharedattr.experiment.context.StageTimer`)."""
        path = self.path / "timings.json"
        timings = read_json(path)
        if timings is None:
            return None
        out: dict[str, dict[str, Any]] = {}
        try:
            for stage, value in timings.items():
                if isinstance(value, dict):
                    peak, of = value.get("peak_rss_mb"), value.get("peak_of")
                    if of not in (None, "stage", "process"):
                        raise ValueError(f"{stage}: peak_of {of!r} is not 'stage' or 'process'")
                    record = {"seconds": float(value["seconds"]), "peak_rss_mb": None if peak is None else float(peak)}
                    out[str(stage)] = {**record, "peak_of": of}
                else:  # older runs: seconds only
                    out[str(stage)] = {"seconds": float(value), "peak_rss_mb": None, "peak_of": None}
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise damaged(path, err) from None
        return out

    @cached_property
    def model_meta(self) -> dict[str, Any] | None:
        path = self.path / "model" / "model.json"
        meta = read_json(path)
        if meta is not None and not isinstance(meta, dict):
            raise damaged(path, TypeError("not a JSON object"))
        return meta

    @cached_property
    def synthesis_scores(self) -> list[dict[str, str]] | None:
        return read_csv(self.path / "synthesis" / "scores.csv")

    @cached_property
    def maps(self) -> tuple[dict[str, Tensor], list[tuple[str, ...]]] | None:
        """``maps.safetensors``: ``{"<method>/<image>": [P, H, W]}`` and the pairs of its metadata, one
        ``(neuron, driver, reference)`` per row (``pairs_json``; older files: ``neuron|driver|reference`` joined by
        ``;``), or None."""
        path = self.path / "maps.safetensors"
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file (SafetensorError, OSError, ...)
            raise UserError(
                f"{path}: not a readable safetensors file ({err}); run `sharedattr run` again into "
                "this folder to rewrite it"
            ) from None
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


def listed_pairs(meta: dict[str, str], path: Path) -> list[tuple[str, ...]]:
    """The ``(neuron, driver, reference)`` rows of a maps file's metadata; [] when it lists none."""
    if "pairs_json" in meta:
        try:
            rows = parse_json(meta["pairs_json"])
            return [tuple(str(v) for v in row) for row in rows if isinstance(row, list) and len(row) == 3]
        except (ValueError, TypeError):  # DamagedJSON is a ValueError
            raise UserError(
                f"{path}: damaged pairs metadata; run `sharedattr run` again into this folder to rewrite it"
            ) from None
    listed = meta.get("pairs", "")
    return [tuple(row.split("|")) for row in listed.split(";")] if listed else []
