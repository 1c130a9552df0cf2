"""Reading config files: TOML, YAML or JSON, chosen by the file's suffix.

Parse errors name the file and, where the parser knows it, the line and column. Loading
only parses data: YAML goes through a ``yaml.SafeLoader`` that counts merge keys (no Python
tags), and nothing in a config is ever imported or executed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from sharedattr.config.spec import ExperimentSpec
from sharedattr.config.validation import validate_experiment
from sharedattr.plugins.registry import Registry
from sharedattr.runtime.errors import ConfigError, MissingFileError, SpecError, SpecIssue

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SUFFIXES = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}
MAX_DEPTH = 64
"""Deepest nesting of tables/lists a config may have (real configs need about 4)."""
MAX_VALUES = 100_000
"""Most values a config may hold once YAML aliases are expanded (a guard against alias bombs)."""


def read_config(path: str | Path) -> dict[str, Any]:
    """Parse a TOML, YAML or JSON file into a dict. Raises :class:`UserError` subclasses."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(path, f"unsupported config format {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise MissingFileError(path, "config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        if fmt == "TOML":
            data = _parse_toml(path, text)
        elif fmt == "YAML":
            data = _parse_yaml(path, text)
        else:
            data = _parse_json(path, text)
    except RecursionError:
        raise ConfigError(
            path, f"invalid {fmt}: nested too deeply (a config needs a few levels, at most {MAX_DEPTH})"
        ) from None
    except ValueError as err:  # Python refuses int literals of more than sys.get_int_max_str_digits() digits
        if "integer string conversion" not in str(err):
            raise
        raise ConfigError(
            path,
            f"invalid {fmt}: an integer has more than {sys.get_int_max_str_digits()} digits (no field "
            "accepts more than 19)",
        ) from None
    if data is None:
        raise ConfigError(path, "the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(path, f"the top level must be a table/mapping of settings, not a {type(data).__name__}")
    _check_values(path, data)
    return data


def _check_values(path: Path, data: dict[str, Any]) -> None:
    """Refuse what parses but is no config: text that is not valid Unicode (JSON's lone surrogate
    escapes such as ``"\\ud800"``), a YAML alias inside its own anchor, and nesting deeper than
    :data:`MAX_DEPTH` or more than :data:`MAX_VALUES` values once YAML aliases are expanded (alias
    bombs). Iterative, and each shared (aliased) container is walked once.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, str, tuple[int, ...]]] = [(data, "", ())]
    while stack:
        value, loc, ancestors = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(
                    path,
                    f"{loc or 'a key'}: not valid Unicode text (a lone surrogate escape such "
                    "as \\ud800); write the character itself",
                ) from None
            continue
        if not isinstance(value, (dict, list)):
            continue
        if id(value) in ancestors:
            raise ConfigError(path, f"{loc}: refers to itself (a YAML alias inside its own anchor)")
        if len(ancestors) >= MAX_DEPTH:
            raise ConfigError(path, f"{loc}: nested more than {MAX_DEPTH} levels deep")
        if id(value) in seen:
            continue
        seen.add(id(value))
        inner = (*ancestors, id(value))
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(key, str):
                stack.append((key, f"{loc}.{key}" if loc else key, ()))
            sub = f"{loc}[{key}]" if isinstance(value, list) else (f"{loc}.{key}" if loc else str(key))
            stack.append((item, sub, inner))
        if len(seen) + len(stack) > MAX_VALUES:
            raise ConfigError(path, f"the config holds more than {MAX_VALUES} values")
    # No cycles: sizes and depths with every alias expanded, each container computed once after its children.
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    work: list[tuple[Any, bool]] = [(data, False)]
    while work:
        node, children_done = work.pop()
        if id(node) in size:
            continue
        children = [c for c in (node.values() if isinstance(node, dict) else node) if isinstance(c, (dict, list))]
        if children_done:
            size[id(node)] = 1 + len(node) + sum(size[id(c)] - 1 for c in children)
            depth[id(node)] = 1 + max((depth[id(c)] for c in children), default=0)
        else:
            work.append((node, True))
            work.extend((c, False) for c in children if id(c) not in size)
    if size[id(data)] > MAX_VALUES:
        raise ConfigError(path, f"the config holds more than {MAX_VALUES} values once its YAML aliases are expanded")
    if depth[id(data)] > MAX_DEPTH:
        raise ConfigError(
            path, f"the config is nested more than {MAX_DEPTH} levels deep once its YAML aliases are expanded"
        )


def _parse_toml(path: Path, text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = getattr(err, "lineno", None) or (int(m.group(1)) if m else None)
        col = getattr(err, "colno", None) or (int(m.group(2)) if m else None)
        if line is None and "end of document" in msg:
            line, col = text.count("\n") + 1, len(text.rsplit("\n", 1)[-1]) + 1
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", getattr(err, "msg", msg))
        raise ConfigError(path, f"invalid TOML: {msg}", line, col) from None


class TooManyValues(yaml.YAMLError):
    """A YAML document whose merge keys (``<<``) expand beyond :data:`MAX_VALUES` entries."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts the key/value pairs merge keys (``<<: [*a, *a]``) produce while it
    constructs, and stops at :data:`MAX_VALUES`: each level of such merges can double a mapping, so the check
    after parsing (:func:`_check_values`) would come only after memory had run out."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.merged_pairs = 0

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        super().flatten_mapping(node)
        self.merged_pairs += len(node.value)
        if self.merged_pairs > MAX_VALUES:
            raise TooManyValues(f"its merge keys (<<) expand to more than {MAX_VALUES} values")


def _parse_yaml(path: Path, text: str) -> Any:
    loader = None
    try:
        loader = BoundedLoader(text)  # the reader checks the characters here already
        return loader.get_single_data()
    except TooManyValues as err:
        raise ConfigError(path, f"the config is refused: {err} (a YAML merge-key bomb?)") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = " ".join(str(p) for p in (err.context, err.problem) if p)
        raise ConfigError(
            path, f"invalid YAML: {problem or err}", mark.line + 1 if mark else None, mark.column + 1 if mark else None
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(path, f"invalid YAML: {err}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(path, f"invalid JSON: {err.msg}", err.lineno, err.colno) from None


def load_experiment(path: str | Path, *, registry: Registry | None = None, check_files: bool = True) -> ExperimentSpec:
    """Read and validate an experiment config. Relative paths resolve against the file's folder.

    Example::

        spec = sharedattr.load_experiment("experiment.toml")   # TOML, YAML or JSON
        spec.data.stimuli, [m.name for m in spec.methods]
    """
    path = Path(path)
    data = read_config(path)
    try:
        return validate_experiment(data, registry=registry, base_dir=path.parent.resolve(), check_files=check_files)
    except SpecError as err:
        issues = err.issues if SUFFIXES.get(path.suffix.lower()) != "TOML" else [_toml_hint(i) for i in err.issues]
        raise SpecError(issues, source=path) from None


UNKNOWN_KEY = ("unknown parameter", "Extra inputs are not permitted")
"""How an issue says that a key is not a field of its table (a component's params; a fixed part of the spec)."""


def _toml_hint(issue: SpecIssue) -> SpecIssue:
    """``issue`` with a hint when it is an unknown key of a table that is a top-level key of the spec: in TOML, a key
    written after a ``[table]`` header belongs to that table (``matcher = {...}`` after ``[readout]`` is
    ``readout.matcher``), which is the likeliest cause."""
    table, _, key = issue.loc.rpartition(".")
    if not table or key not in ExperimentSpec.model_fields or not issue.message.startswith(UNKNOWN_KEY):
        return issue
    hint = (
        f"`{key}` is a top-level key: move it above the first [table] of the file (in TOML, every key after a "
        f"[table] header belongs to that table)"
    )
    return SpecIssue(issue.loc, f"{issue.message}; {hint}")
