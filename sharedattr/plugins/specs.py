"""Component specs: ``{name: <registered name>, **params}``, one class per component kind.

A config selects each component by such a spec; its params are validated by the model the
component's plugin registered (:meth:`ComponentSpec.validated_params`). The specs know
nothing of any registry until one is passed in (anything with ``get`` and ``build``, such as
:class:`sharedattr.plugins.registry.Registry`, which builds on this module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sharedattr.runtime.errors import SpecError, SpecIssue, UnknownComponentError


class ComponentLookup(Protocol):
    """What a spec needs of a registry: its components by kind and name."""

    def get(self, kind: str, name: str) -> Any:
        """The registered component (with ``validate_params``); raises UnknownComponentError."""

    def build(self, kind: str, name: str, *args: Any, **params: Any) -> Any:
        """The built component."""


REGISTRY_KEY = "registry"
"""Key of the registry in pydantic's validation context: params that name another component validate it there."""


class ComponentSpec(BaseModel):
    """``{name: <registered name>, **params}``; a bare string is shorthand for ``{name: <string>}``."""

    model_config = ConfigDict(extra="allow")
    kind: ClassVar[str] = ""

    name: str = Field(description="Name of a registered component (see `sharedattr plugins`).")

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def params(self) -> dict[str, Any]:
        """The raw params: every key but ``name``."""
        return dict(self.model_extra or {})

    def component(self, registry: ComponentLookup) -> Any:
        """The registered component this spec names (raises :class:`UnknownComponentError`)."""
        return registry.get(self.kind, self.name)

    def validated_params(self, registry: ComponentLookup, loc: str = "", context: Mapping | None = None) -> BaseModel:
        """The params validated by the component's own model (raises :class:`SpecError` with field paths under
        ``loc``)."""
        try:
            component = self.component(registry)
        except UnknownComponentError as err:
            raise SpecError([SpecIssue(f"{loc}.name" if loc else "name", str(err))]) from None
        return component.validate_params(self.params, loc=loc, context={**(context or {}), REGISTRY_KEY: registry})

    def build(self, registry: ComponentLookup, *args: Any) -> Any:
        """Validate and build the component: ``factory(*args, **params)``."""
        return registry.build(self.kind, self.name, *args, **self.params)


class BackboneSpec(ComponentSpec):
    kind: ClassVar[str] = "backbone"


class ReadoutSpec(ComponentSpec):
    kind: ClassVar[str] = "readout"


class MatcherSpec(ComponentSpec):
    kind: ClassVar[str] = "matcher"


class MethodSpec(ComponentSpec):
    kind: ClassVar[str] = "method"


class MetricSpec(ComponentSpec):
    kind: ClassVar[str] = "metric"


class SynthesizerSpec(ComponentSpec):
    kind: ClassVar[str] = "synthesizer"


class EnergySpec(ComponentSpec):
    kind: ClassVar[str] = "energy"


SPEC_CLASSES: dict[str, type[ComponentSpec]] = {
    "backbone": BackboneSpec,
    "readout": ReadoutSpec,
    "matcher": MatcherSpec,
    "method": MethodSpec,
    "metric": MetricSpec,
    "synthesizer": SynthesizerSpec,
    "energy": EnergySpec,
}
"""The spec class of each component kind."""


def labels(specs: Sequence[ComponentSpec]) -> list[str]:
    """Unique labels for component specs: the name, with ``#2``, ``#3`` … for repeats (``saliency#2``)."""
    counts: dict[str, int] = {}
    out = []
    for s in specs:
        counts[s.name] = counts.get(s.name, 0) + 1
        out.append(s.name if counts[s.name] == 1 else f"{s.name}#{counts[s.name]}")
    return out
