"""The layout shows the architecture: packages in pipeline order, each importing only from the ones before it.

Every ``import`` of a sharedattr module (at the top of a file or inside a function) is read from
the source. A module may import from its own package and from the packages before it in
:data:`LAYERS`; nothing imports a later package, and no module imports itself back through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sharedattr"
LAYERS = [
    "runtime",
    "plugins",
    "config",
    "data",
    "encoding",
    "selection",
    "attribution",
    "metrics",
    "synthesis",
    "report",
    "experiment",
]
"""The packages in pipeline order (the report sits below the experiment commands, which write it)."""
ENTRY_POINTS = {"cli", "testing", "plugin", "plot", "_deprecated", "__main__", "__init__"}
"""Top-level modules: the public entry points, which may import from every package."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The sharedattr modules ``path`` imports (``from X import y`` counts as X, or X.y when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "sharedattr"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "sharedattr":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p) for p in FILES}
GRAPH = {module_name(p): imports(p) for p in FILES}


def layer(module: str) -> int | None:
    """The module's place in :data:`LAYERS` (None for the top-level entry points and the root package)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def test_every_subpackage_is_a_layer():
    subpackages = {p.parent.relative_to(PACKAGE).parts[0] for p in FILES if p.parent != PACKAGE}
    assert subpackages == set(LAYERS) | {"assets"} or subpackages == set(LAYERS), subpackages
    top = {p.stem for p in FILES if p.parent == PACKAGE}
    assert top == ENTRY_POINTS, f"top-level modules beyond the entry points: {sorted(top - ENTRY_POINTS)}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_from_earlier_layers(module):
    mine = layer(module)
    if mine is None:
        return
    later = sorted(m for m in GRAPH[module] if (other := layer(m)) is not None and other > mine)
    assert not later, f"{module} ({LAYERS[mine]}) imports later layers: {later}"


def test_no_import_cycles():
    cycles = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if target not in GRAPH or target == "sharedattr":
                continue  # the root package (for __version__) is initialised first
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


PUBLIC_WIDE_SIGNATURES = {"compare"}
"""Functions whose many keywords are documented public API (``sharedattr.compare``: grouped in its docstring)."""


def test_no_function_takes_more_than_eight_parameters():
    """Stages pass objects (a subject, settings, components), not a dozen loose values (``scripts/code_shape.py``)."""
    from code_shape import MAX_PARAMETERS, functions

    wide = [
        f for f in functions(PACKAGE) if f["parameters"] > MAX_PARAMETERS and f["name"] not in PUBLIC_WIDE_SIGNATURES
    ]
    assert not wide, "\n".join(f"{f['name']} ({f['where']}): {f['parameters']} parameters" for f in wide)


def test_no_default_value_is_written_twice():
    """A built-in component's defaults and constraints live in its params model only, never again in its factory's
    signature (``scripts/code_shape.py``; 123 before issue 25)."""
    from code_shape import defaults_twice

    assert defaults_twice() == []
