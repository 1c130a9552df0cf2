"""What every section of the report shares, computed once: the run, the reading of its scores, the pair images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from torch import Tensor

from sharedattr.report.components import Components, spec_labels
from sharedattr.report.reading import Reading
from sharedattr.report.rundir import RunDir
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.run_files import MAPS_FILE, PAIRS


@dataclass
class Context:
    """Everything the sections share, computed once: the run, the reading of its scores, the pair images."""

    run: RunDir
    reading: Reading
    contents: Sequence[tuple[str, str]] = ()
    """``(anchor, title)`` of every section the page shows, in order (the summary's table of contents)."""

    @property
    def components(self) -> Components:
        """What the run's methods and metrics declare (components.json, else the registry)."""
        return self.run.components

    @cached_property
    def neurons(self) -> list[str]:
        """Explained neurons, in the order of ``pairs.csv``."""
        return list(dict.fromkeys(p["neuron"] for p in self.run.pairs or []))

    @cached_property
    def methods(self) -> list[str]:
        """Method labels in run order: the spec's (``name``, ``name#2`` … as the run labels repeats), then any
        others in ``summary.csv`` or ``maps.safetensors``."""
        out = [label for label, _ in spec_labels(self.run.spec.get("methods") or [])]
        out += [s.method for s in self.run.summary or []]
        if self.run.maps is not None:
            out += [k.rsplit("/", 1)[0] for k in self.run.maps[0]]
        return list(dict.fromkeys(out))

    @cached_property
    def maps(self) -> tuple[dict[str, dict[str, Tensor]] | None, str | None]:
        """Maps by method and image, aligned with ``pairs.csv`` rows; or None and why not."""
        if self.run.maps is None:
            return None, f"{MAPS_FILE} was not written (output.save_maps = false, or no method ran)."
        tensors, listed = self.run.maps
        pairs = self.run.pairs or []
        expected = [(p["neuron"], p["driver"], p["reference"]) for p in pairs]
        if listed and listed != expected:
            return None, f"{MAPS_FILE} does not match {PAIRS.name} (a file left from an earlier run?)."
        out: dict[str, dict[str, Tensor]] = {}
        for key, t in tensors.items():
            method, which = key.rsplit("/", 1)
            if t.shape[0] != len(pairs):
                return None, f"{MAPS_FILE}: {key} has {t.shape[0]} maps but {PAIRS.name} has {len(pairs)} rows."
            out.setdefault(method, {})[which] = t
        order = {m: i for i, m in enumerate(self.methods)}
        return {m: out[m] for m in sorted(out, key=lambda m: order.get(m, len(order)))}, None

    @cached_property
    def pair_images(self) -> tuple[Tensor | None, Tensor | None, str | None]:
        """Driver and reference images ``[P, 3, H, W]`` of ``pairs.csv`` (at the maps' size), or why not."""
        pairs = self.run.pairs or []
        stimuli = self.run.stimuli
        if isinstance(stimuli, UserError):
            return None, None, f"stimulus images unavailable: {stimuli}"
        maps, _ = self.maps
        if maps:
            size = tuple(next(iter(next(iter(maps.values())).values())).shape[1:])
        else:
            s = (self.run.spec.get("backbone") or {}).get("input_size")
            size = (s, s) if isinstance(s, int) else tuple(s) if isinstance(s, list) else (64, 64)
        index = {sid: i for i, sid in enumerate(stimuli.ids)}
        missing = sorted({p[k] for p in pairs for k in ("driver", "reference")} - set(index))
        if missing:
            return None, None, f"stimulus ids of {PAIRS.name} not in the stimulus set: {', '.join(missing[:5])}"
        try:
            drivers = stimuli.load_images(size, 3, [index[p["driver"]] for p in pairs])
            references = stimuli.load_images(size, 3, [index[p["reference"]] for p in pairs])
        except UserError as err:
            return None, None, f"stimulus images unavailable: {err}"
        return drivers, references, None

    def rows_of(self, neuron: str) -> list[int]:
        """The rows of ``pairs.csv`` (and of the maps) of ``neuron``."""
        return [i for i, p in enumerate(self.run.pairs or []) if p["neuron"] == neuron]
