"""Ground-truth model neurons: responses that are known functions of the rendered parts.

A neuron's *drive* depends only on the visible area ``a_p`` of each part ``p`` it is tuned to
(so it is invariant to where the part is), in units of that part's typical area on a body
(:data:`TYPICAL_AREA`, image fractions measured on rendered bodies):

- ``combine="sum"``: ``drive = Σ_p w_p · a_p / typical_p``;
- ``combine="and"``: ``drive = Π_p (a_p / typical_p) ^ (w_p / Σ_q w_q)``, a weighted geometric
  mean that is zero unless *every* tuned part is visible (a conjunction neuron).

One trial's response is ``gain · drive + baseline + ε`` with ``ε ~ N(0, noise²)``, drawn
independently for each of ``repeats`` trials. So for any image that drives a neuron we know
which pixels carry the feature: the masks of the parts it is tuned to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sharedattr.data.insilico.render import PARTS

TYPICAL_AREA = {"head": 0.02, "torso": 0.033, "limbs": 0.035, "shape": 0.08}


@dataclass(frozen=True)
class GroundTruthNeuron:
    """A neuron tuned to parts: ``weights`` maps part names (of :data:`~sharedattr.data.insilico.render.PARTS`) to
    ≥ 0 weights."""

    name: str
    weights: Mapping[str, float]
    combine: str = "sum"
    gain: float = 1.0
    baseline: float = 0.0
    noise: float = 0.1

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(PARTS)
        if unknown:
            raise ValueError(f"neuron {self.name!r}: unknown part(s) {sorted(unknown)}; parts are {', '.join(PARTS)}")
        if any(w < 0 for w in self.weights.values()) or not any(w > 0 for w in self.weights.values()):
            raise ValueError(f"neuron {self.name!r}: weights must be ≥ 0 with at least one > 0")
        if self.combine not in ("sum", "and"):
            raise ValueError(f"neuron {self.name!r}: combine must be 'sum' or 'and', got {self.combine!r}")

    @property
    def parts(self) -> list[str]:
        """The parts the neuron responds to (weight > 0)."""
        return [p for p, w in self.weights.items() if w > 0]

    def drive(self, areas: Mapping[str, np.ndarray]) -> np.ndarray:
        """Noise-free drive ``[S]`` from visible part areas (image fractions, ``[S]`` per part)."""
        rel = {p: np.asarray(areas[p], dtype=np.float64) / TYPICAL_AREA[p] for p in self.parts}
        if self.combine == "sum":
            return sum(self.weights[p] * rel[p] for p in self.parts)
        total = sum(self.weights[p] for p in self.parts)
        return np.prod([rel[p] ** (self.weights[p] / total) for p in self.parts], axis=0)

    def response(self, areas: Mapping[str, np.ndarray]) -> np.ndarray:
        """Noise-free response ``[S]``: ``gain · drive + baseline``."""
        return self.gain * self.drive(areas) + self.baseline


DEFAULT_NEURONS = (
    GroundTruthNeuron("limbs", {"limbs": 1.0, "head": 0.2}),
    GroundTruthNeuron("head", {"head": 1.0, "limbs": 0.2}),
    GroundTruthNeuron("body", {"head": 0.5, "torso": 0.5, "limbs": 0.5}),
    GroundTruthNeuron("head_and_limbs", {"head": 1.0, "limbs": 1.0}, combine="and"),
    GroundTruthNeuron("shape", {"shape": 1.0}),
)


def neuron_population(
    n_per_kind: int, seed: int = 0, kinds: Sequence[GroundTruthNeuron] = DEFAULT_NEURONS, jitter: float = 0.3
) -> list[GroundTruthNeuron]:
    """``n_per_kind`` variants of each kind, each tuned weight scaled by a factor in ``[1-jitter, 1+jitter]``."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in kinds:
        for i in range(n_per_kind):
            weights = {p: w * float(rng.uniform(1 - jitter, 1 + jitter)) for p, w in kind.weights.items()}
            out.append(
                GroundTruthNeuron(f"{kind.name}_{i}", weights, kind.combine, kind.gain, kind.baseline, kind.noise)
            )
    return out


@dataclass
class SimulatedResponses:
    """Trial responses ``[S, R, N]`` of N neurons to S stimuli over R repeats, and their noise-free means ``[S, N]``."""

    trials: np.ndarray
    expected: np.ndarray
    neurons: list[GroundTruthNeuron] = field(default_factory=list)


def simulate_responses(
    areas: Mapping[str, np.ndarray], neurons: Sequence[GroundTruthNeuron], repeats: int = 2, seed: int = 0
) -> SimulatedResponses:
    """Simulate ``repeats`` noisy trials of every neuron for stimuli with the given part ``areas`` (``[S]`` per
    part)."""
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    expected = np.stack([n.response(areas) for n in neurons], axis=1)
    rng = np.random.default_rng(seed)
    noise = np.array([n.noise for n in neurons])
    trials = expected[:, None, :] + rng.normal(0.0, 1.0, (expected.shape[0], repeats, len(neurons))) * noise
    return SimulatedResponses(trials, expected, list(neurons))
