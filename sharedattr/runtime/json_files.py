"""Reading the JSON files that sharedattr wrote (run folders, saved models, manifests), bounded.

Such a file may have been damaged or edited since it was written, so it is parsed only within bounds: at most
``max_bytes`` long, valid UTF-8, valid JSON, nested at most ``max_depth`` levels (Python's parser would raise a
:class:`RecursionError` from about 1,000 levels, and code walking a deep document could too), and with text
that is valid Unicode (no lone surrogate escapes such as ``"\\ud800"``, which could not be written back as
UTF-8). Anything else is a :class:`DamagedJSON` (a :class:`ValueError`) saying why; callers turn it into their
one-line error naming the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MAX_BYTES = 64 << 20
"""The largest JSON file read by default (64 MiB: a manifest of 100,000 files is about 15 MB)."""
MAX_DEPTH = 64
"""The deepest nesting read by default (sharedattr's own files need fewer than 10 levels)."""


class DamagedJSON(ValueError):
    """A JSON file or text that sharedattr could not have written: the message says why."""


def read_json(path: str | Path, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON document in ``path``, read within bounds; :class:`DamagedJSON` when it is too large, not UTF-8,
    not JSON, nested too deeply or holds invalid Unicode. ``OSError`` (missing, unreadable) passes through."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DamagedJSON(f"larger than {max_bytes:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DamagedJSON(f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    return parse_json(text, max_depth=max_depth)


def parse_json(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(text)`` within ``max_depth`` levels and with valid Unicode text; :class:`DamagedJSON` else."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise DamagedJSON(f"nested too deeply (more than {max_depth} levels)") from None
    except json.JSONDecodeError as err:
        raise DamagedJSON(f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise DamagedJSON(f"not valid JSON ({str(err).split(';')[0]}; limit {sys.get_int_max_str_digits()})") from None
    _check(value, max_depth)
    return value


def _check(value: Any, max_depth: int) -> None:
    """Refuse nesting deeper than ``max_depth`` and strings that are not valid Unicode (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise DamagedJSON("holds text that is not valid Unicode (a lone surrogate escape)") from None
        elif isinstance(node, (dict, list)):
            if depth > max_depth:
                raise DamagedJSON(f"nested too deeply (more than {max_depth} levels)")
            if isinstance(node, dict):
                stack.extend((key, depth) for key in node)
                stack.extend((item, depth + 1) for item in node.values())
            else:
                stack.extend((item, depth + 1) for item in node)
