"""Base class for component params, and conversion of pydantic errors to field paths."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from sharedattr.runtime.errors import SpecIssue
from sharedattr.runtime.run_folder import expand_path

SEED_MAX = 2**63 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
"""A seed: a non-negative 64-bit integer (what torch's generators accept)."""


class Params(BaseModel):
    """Base class for a component's params model: unknown keys are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoParams(Params):
    """Params model of a component that takes no parameters."""


class Configurable:
    """Base of a component class that carries its own registration and is built from its validated params.

    A subclass declares three class attributes, and its params model is the one place of every default and
    constraint:

    - ``name``: the name it registers under;
    - ``params_model``: its :class:`Params` model;
    - ``description``: one line for ``sharedattr plugins``.

    Its ``__init__`` takes the validated model as ``params`` and keyword overrides, and keeps
    ``self.params = self.resolve_params(params, overrides)``: ``Occlusion(model, window=16)`` validates the
    keywords against the model (the model's defaults fill the rest); ``Occlusion(model, params)`` takes a model
    already validated. The registry builds a registered ``Configurable`` class as ``cls(*args, params=validated,
    **built)``, where ``built`` holds the components its params name, built (e.g. a synthesizer's ``energy``), and
    :func:`register_components` registers a list of them in a loop.
    """

    name: ClassVar[str]
    params_model: ClassVar[type[BaseModel]] = NoParams
    description: ClassVar[str] = ""

    @classmethod
    def resolve_params(cls, params: BaseModel | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
        """``params`` (validated), with ``overrides`` validated on top; or the overrides alone, validated with the
        model's defaults. A wrong key or value is a :class:`pydantic.ValidationError` naming the field."""
        overrides = dict(overrides or {})
        if params is None:
            return cls.params_model.model_validate(overrides)
        if not isinstance(params, cls.params_model):
            wanted, got = cls.params_model.__name__, type(params).__name__
            raise TypeError(f"{cls.__name__}: params must be a {wanted}, not {got}")
        if not overrides:
            return params
        return cls.params_model.model_validate({**params.model_dump(exclude_unset=True), **overrides})


def params_record(params: BaseModel) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A validated params model as a run records it: every param as JSON values, and the names of those that differ
    from their defaults, in the model's field order.

    >>> class P(Params):
    ...     steps: int = 16
    ...     variant: str = "product"
    >>> params_record(P(variant="own"))
    ({'steps': 16, 'variant': 'own'}, ('variant',))
    """
    changed = params.model_dump(mode="json", exclude_defaults=True)
    return params.model_dump(mode="json"), tuple(k for k in type(params).model_fields if k in changed)


def register_components(register: Callable[..., Any], classes: Iterable[type[Configurable]]) -> None:
    """Register every :class:`Configurable` class of ``classes`` through a ``register_*`` hook's ``register``: its
    name, the class as factory, its params model and description."""
    for cls in classes:
        register(cls.name, cls, params=cls.params_model, description=cls.description)


def join_loc(prefix: str, loc: Iterable[Any]) -> str:
    """Join a field path: ``join_loc("methods[1]", ("n_steps",)) == "methods[1].n_steps"``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def issues_from_validation(err: ValidationError, prefix: str = "", drop: Sequence[str] = ()) -> list[SpecIssue]:
    """One :class:`SpecIssue` per pydantic error, with its field path under ``prefix``.

    ``drop`` removes internal path parts (e.g. union tags) that mean nothing to a user.
    """
    issues = []
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"] if p not in drop]
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown parameter (remove it, or check its spelling)"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], (dict, list)):
            msg += f" (got {e['input']!r})"
        issues.append(SpecIssue(join_loc(prefix, loc), msg))
    return issues


# -- paths in specs ----------------------------------------------------------------------
BASE_DIR_KEY = "base_dir"
CHECK_FILES_KEY = "check_files"


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    context = info.context or {}
    base = context.get(BASE_DIR_KEY)
    path = expand_path(value)
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    try:
        exists = path.exists()
    except OSError as err:  # e.g. a name longer than the filesystem allows
        raise ValueError(f"cannot check the path {str(path)[:200]}: {err.strerror}") from None
    if context.get(CHECK_FILES_KEY, True) and not exists:
        where = " (relative paths are resolved against the config file's folder)" if base is not None else ""
        raise ValueError(f"file not found: {path}{where}")
    return path


MAX_STEPS = 4096
"""Upper bound of the built-in components' step and sample counts (path steps, noisy copies, draws): a count
a config can set is a spec error at its field above this, not an allocation that fails later."""
MAX_SEEDS = 1024
"""Upper bound of a synthesizer's ``n_seeds`` (optimised as one batch)."""
MAX_OPTIMISATION_STEPS = 100_000
"""Upper bound of a synthesizer's optimisation ``steps``."""

InputPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path to an existing input file or folder; relative paths resolve against the config file's folder."""


def _resolve_output_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get(BASE_DIR_KEY)
    path = expand_path(value)
    path = Path(base) / path if base is not None and not path.is_absolute() else path
    try:
        is_file = path.exists() and not path.is_dir()
    except OSError as err:  # e.g. a name longer than the filesystem allows
        raise ValueError(f"cannot check the path {str(path)[:200]}: {err.strerror}") from None
    if is_file:
        raise ValueError(f"{path} is an existing file, not a folder")
    return path


OutputPath = Annotated[Path, AfterValidator(_resolve_output_path)]
"""A path that need not exist yet (an output or cache folder); relative to the config file's folder."""
