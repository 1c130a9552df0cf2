"""How the data readers name the settings they report, so that an error names what the user wrote.

The same readers serve a config (``data.time_window = [70, 170]``) and a Python call
(``sharedattr.load_responses(path, time_window=(70, 170))``). A reader takes a :class:`Naming` and writes every
setting it reports as ``naming("time_window")``: :data:`CONFIG` gives the config field, ``data.time_window``;
:func:`arguments` gives the argument of the Python function, ``load_responses(time_window=...)``. Settings are called
by their config field names (:class:`~sharedattr.config.spec.DataSpec`), which the public Python functions use as
their argument names too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Naming:
    """How one caller names the data settings: ``naming(setting)`` is ``prefix + setting + suffix``.

    Example::

        >>> CONFIG("time_window")
        'data.time_window'
        >>> arguments("load_stimuli")("category_column")
        'load_stimuli(category_column=...)'
    """

    prefix: str
    suffix: str = ""

    def __call__(self, setting: str) -> str:
        return f"{self.prefix}{setting}{self.suffix}"


CONFIG = Naming("data.")
"""A config's fields: ``data.<setting>``."""


def arguments(function: str) -> Naming:
    """The keyword arguments of the Python function ``function``: ``function(<setting>=...)``."""
    return Naming(f"{function}(", "=...)")
