"""A TOML writer for the tests' JSON-like configs (tomllib reads TOML but cannot write it)."""

from __future__ import annotations

import json
import math


def toml_text(config: dict) -> str:
    """TOML of a JSON-like mapping; None values (which TOML cannot hold) are left out."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items() if x is not None) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v if x is not None) + "]"
        return repr(v)

    return "\n".join(f"{json.dumps(k)} = {value(v)}" for k, v in config.items() if v is not None) + "\n"
