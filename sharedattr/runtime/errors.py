"""Exceptions. Everything a user can cause derives from :class:`UserError`.

The CLI prints a :class:`UserError` as one clear message and exits with code 2;
anything else is a bug in sharedattr or in a plugin.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class SharedattrError(Exception):
    """Base class of all sharedattr exceptions."""


class UserError(SharedattrError):
    """An error the user can fix: bad config, unknown name, missing file, bad data."""


class MissingFileError(UserError, FileNotFoundError):
    """A file named by the user does not exist."""

    def __init__(self, path: object, what: str = "file", hint: str = "") -> None:
        self.path = path
        msg = f"{what} not found: {path}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


MAX_LISTED = 20
"""Problems a :class:`DataError` lists; the rest are counted."""


class DataError(UserError):
    """Problems in the user's stimuli or responses, listed all at once: ``source`` (a file, or what was checked)
    and one line per problem."""

    def __init__(self, source: object, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in shown) + more)


class WriteError(UserError, OSError):
    """A result could not be written (full disk, read-only or unwritable folder): names the file and the fix."""

    def __init__(self, path: object, cause: OSError) -> None:
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "free some space, or write to another disk (--out)"
        elif cause.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            fix = "write to a folder you can write to (--out)"
        else:
            fix = "check the folder, or write to another one (--out)"
        super().__init__(f"cannot write {path}: {cause.strerror or cause}; {fix}")
        self.path, self.errno = path, cause.errno

    def __str__(self) -> str:
        return str(self.args[0])


class ConfigError(UserError):
    """A config file cannot be read or parsed. ``line`` is 1-based when the parser knows it."""

    def __init__(self, path: object, message: str, line: int | None = None, column: int | None = None) -> None:
        self.path, self.line, self.column = path, line, column
        where = f"{path}"
        if line is not None:
            where += f", line {line}"
            if column is not None:
                where += f", column {column}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where (a field path such as ``methods[1].n_steps``) and what."""

    loc: str
    message: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}" if self.loc else self.message


class SpecError(UserError):
    """A spec failed validation. Lists every problem found, each with its field path."""

    def __init__(self, issues: Sequence[SpecIssue], source: object | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        head = f"invalid spec in {source}" if source else "invalid spec"
        if len(self.issues) == 1:
            msg = f"{head}: {self.issues[0]}"
        else:
            msg = f"{head} ({len(self.issues)} problems):\n" + "\n".join(f"  - {i}" for i in self.issues)
        super().__init__(msg)

    def with_source(self, source: object) -> SpecError:
        """The same issues, reported against ``source`` (e.g. a config file path)."""
        return SpecError(self.issues, source=source)


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest match to ``name`` among ``choices``, or None if nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def plural(kind: str) -> str:
    """``matcher`` → ``matchers``, ``energy`` → ``energies``: component kinds in messages."""
    return f"{kind[:-1]}ies" if kind.endswith("y") else f"{kind}s"


class UnknownComponentError(UserError, KeyError):
    """No component of this kind is registered under this name."""

    def __init__(
        self, kind: str, name: str, available: Sequence[str], *, not_loaded: Mapping[str, str] | None = None
    ) -> None:
        """``not_loaded``: installed plugins a plugin filter left out (label → the variable that did it)."""
        self.kind, self.name, self.available = kind, name, sorted(available)
        self.suggestion = closest(name, self.available)
        msg = f"unknown {kind} {name!r}"
        msg += f"; did you mean {self.suggestion!r}?" if self.suggestion else "."
        msg += f" Available {plural(kind)}: {', '.join(self.available) if self.available else '(none registered)'}."
        if not_loaded:
            by_variable: dict[str, list[str]] = {}
            for label, variable in not_loaded.items():
                by_variable.setdefault(variable, []).append(label)
            msg += (
                " Installed plugins that were not loaded, and may provide it: "
                + "; ".join(f"{', '.join(labels)} (left out by {variable})" for variable, labels in by_variable.items())
                + "."
            )
        msg += " Run `sharedattr plugins` to see every component and the plugin that provides it."
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class DuplicateComponentError(UserError):
    """Two plugins registered a component of the same kind under the same name."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind, self.name, self.sources = kind, name, (first, second)
        super().__init__(
            f"{kind} {name!r} is registered twice: by plugin {first!r} and by plugin {second!r}. "
            f"Uninstall one of them, or leave one out with SHAREDATTR_BLOCK_PLUGINS (or SHAREDATTR_LOAD_PLUGINS)."
        )


class PluginDefinitionError(SharedattrError):
    """A plugin registered something malformed (a bug in that plugin)."""
