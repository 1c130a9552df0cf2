"""Ground truth of *shared* features: which annotated parts drive each neuron.

A JSON file maps neuron ids to the parts (manifest columns ``mask:<part>``) that drive them,
as a list (``{"n1": ["limbs", "head"]}``) or as weights (``{"n1": {"limbs": 1.0, "head": 0.2}}``,
parts with weight > 0 count). For a neuron and a driver/reference pair (:class:`PairTruth`):

- the *shared* driving parts are the neuron's parts present in both images; localisation
  metrics are scored against the union of their masks on each image;
- the *unshared* driving parts of an image are the neuron's parts it shows and its partner
  lacks (the shared-part selectivity metric penalises mass there);
- everything else is the rest of the image.

*Piece-level truth.* Where the stimulus set also has piece columns of a part (``mask:<part>/<piece>``, written by
:func:`sharedattr.data.insilico.write_pair_set`), that part is scored piece by piece: a piece is shared where both
images show a piece of that name (in a pair set: the piece copied from the reference onto the driver), and a piece
only one image shows is an unshared driving part of that image. So a driver carrying a copy of the reference's left
arm shares ``limbs/arm_left``; the reference's other arm and legs are its *unshared* driving pieces, not shared ones.
A pair's truth then names piece columns; :meth:`PairTruth.label` gives each name's part.

Without this file the localisation metrics use the ``mask`` column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sharedattr.data.manifest import PIECE_SEPARATOR
from sharedattr.data.naming import CONFIG, Naming
from sharedattr.data.stimuli import StimulusSet
from sharedattr.runtime.errors import DataError, MissingFileError


def load_neuron_parts(
    path: str | Path, part_names: Sequence[str] | None = None, naming: Naming = CONFIG
) -> dict[str, tuple[str, ...]]:
    """``{neuron id: parts}`` from a JSON file; every part must be one of ``part_names`` when given. ``naming``: how
    errors name the setting (:mod:`sharedattr.data.naming`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, f"neuron parts file ({naming('neuron_parts')})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, [f"not valid JSON: {err}"]) from None
    except RecursionError:
        raise DataError(path, ["nested too deeply: expected {neuron id: [parts] or {part: weight}}"]) from None
    except ValueError as err:  # an int literal beyond Python's digit limit
        raise DataError(path, [f"not valid JSON: {str(err).split(';')[0]}"]) from None
    if not isinstance(raw, dict):
        raise DataError(path, ["expected a JSON object mapping neuron ids to a list of parts or {part: weight}"])
    problems: list[str] = []
    out: dict[str, tuple[str, ...]] = {}
    for neuron, parts in raw.items():
        if isinstance(parts, list) and all(isinstance(p, str) for p in parts):
            names = tuple(parts)
        elif isinstance(parts, dict) and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in parts.values()
        ):
            names = tuple(p for p, w in parts.items() if w > 0)
        else:
            problems.append(f"{neuron!r}: expected a list of part names or an object of part weights, got {parts!r}")
            continue
        if part_names is not None:
            unknown = [p for p in names if p not in part_names]
            if unknown:
                problems.append(
                    f"{neuron!r}: unknown part(s) {', '.join(map(repr, unknown))}; the stimulus manifest "
                    f"has mask columns for {', '.join(part_names) or 'no parts'}"
                )
        out[str(neuron)] = names
    if problems:
        raise DataError(path, problems)
    return out


def shared_parts(stimuli: StimulusSet, parts: Sequence[str], driver: int, reference: int) -> tuple[str, ...]:
    """The ``parts`` present in both the driver's and the reference's part masks."""
    return tuple(p for p in parts if stimuli.has_part(driver, p) and stimuli.has_part(reference, p))


@dataclass(frozen=True)
class PairTruth:
    """The ground truth of one pair for its neuron: the driving parts both images show (``shared``), and those only
    the driver (``driver_only``) or only the reference (``reference_only``) shows. Each name is a part (``limbs``)
    or, with piece-level truth, a piece of a part (``limbs/arm_left``)."""

    shared: tuple[str, ...]
    driver_only: tuple[str, ...]
    reference_only: tuple[str, ...]

    def unshared(self, which: str) -> tuple[str, ...]:
        """The driving parts of image ``which`` (``driver`` or ``reference``) that its partner lacks."""
        return self.driver_only if which == "driver" else self.reference_only

    @staticmethod
    def label(name: str) -> str:
        """The part a truth name belongs to: ``limbs/arm_left`` → ``limbs``; a part's name is its own label."""
        return name.split(PIECE_SEPARATOR, 1)[0]


def pieces_of(stimuli: StimulusSet, part: str) -> tuple[str, ...]:
    """The piece columns of ``part`` in ``stimuli`` (``mask:<part>/<piece>``), in manifest order; empty without."""
    return tuple(name for name in stimuli.part_masks if name.startswith(part + PIECE_SEPARATOR))


def pair_truth(
    stimuli: StimulusSet, neuron_parts: Mapping[str, Sequence[str]], neuron_ids: Sequence[str], pairs: Sequence[Any]
) -> list[PairTruth | None]:
    """Per pair (anything with ``neuron``, ``driver`` and ``reference`` indices), its :class:`PairTruth`, or None when
    ``neuron_parts`` does not name the pair's neuron. A part with piece columns is scored by its pieces (module
    docstring).

    Example: a reference body with ``limbs/arm_left`` and ``limbs/leg_left``, a driver with ``limbs/arm_left``
    alone: for a limbs neuron, ``shared == ("limbs/arm_left",)`` and ``reference_only == ("limbs/leg_left",)``.
    """
    pieces = {part: pieces_of(stimuli, part) for ps in neuron_parts.values() for part in ps}
    out: list[PairTruth | None] = []
    for p in pairs:
        parts = neuron_parts.get(neuron_ids[p.neuron])
        if parts is None:
            out.append(None)
            continue
        names = [name for q in parts for name in (pieces[q] or (q,))]
        on_driver = {q for q in names if stimuli.has_part(p.driver, q)}
        on_reference = {q for q in names if stimuli.has_part(p.reference, q)}
        out.append(
            PairTruth(
                tuple(q for q in names if q in on_driver and q in on_reference),
                tuple(q for q in names if q in on_driver - on_reference),
                tuple(q for q in names if q in on_reference - on_driver),
            )
        )
    return out


def pair_parts(
    stimuli: StimulusSet, neuron_parts: Mapping[str, Sequence[str]], neuron_ids: Sequence[str], pairs: Sequence[Any]
) -> list[tuple[str, ...] | None]:
    """Per pair (anything with ``neuron``, ``driver`` and ``reference`` indices, such as
    :class:`sharedattr.selection.matching.Pair`), its shared parts, or None when ``neuron_parts`` does not
    name the pair's neuron."""
    out: list[tuple[str, ...] | None] = []
    for p in pairs:
        parts = neuron_parts.get(neuron_ids[p.neuron])
        out.append(None if parts is None else shared_parts(stimuli, parts, p.driver, p.reference))
    return out
