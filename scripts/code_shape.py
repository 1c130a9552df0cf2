"""The shape of the package's code, as issue 25 measures it: what a reader trips over.

    uv run python scripts/code_shape.py [--top 15] [--json]

Prints, for ``sharedattr/`` (read with :mod:`ast`, nothing imported but the registry):

- the longest functions (lines, including their docstring);
- every function with more than 8 parameters (``self``/``cls`` not counted; ``*args``/``**kwargs`` count one each);
- the ``getattr(x, "name", default)`` and ``hasattr(x, "name")`` probes;
- default values written twice: a registered component's params model field with a default that its factory's
  signature also gives a default for (the registry is loaded: built-in components only).

``tests/test_architecture.py`` holds the package to the limits (no default written twice, no function over 8
parameters outside the documented public signatures).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sharedattr"
MAX_PARAMETERS = 8


def functions(root: Path = PACKAGE) -> list[dict]:
    """Every function and method: its place, length in lines and parameter count."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            if names and names[0] in ("self", "cls") and isinstance(parents.get(node), ast.ClassDef):
                names = names[1:]
            count = len(names) + (args.vararg is not None) + (args.kwarg is not None)
            owner = parents.get(node)
            qual = f"{owner.name}.{node.name}" if isinstance(owner, ast.ClassDef) else node.name
            found.append(
                {
                    "where": f"{path.relative_to(root.parent)}:{node.lineno}",
                    "name": qual,
                    "lines": node.end_lineno - node.lineno + 1,
                    "parameters": count,
                }
            )
    return found


def probes(root: Path = PACKAGE) -> list[str]:
    """``getattr(x, "literal", default)`` and ``hasattr(x, "literal")`` calls: optional members read by probing."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            literal = (
                len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
            )
            if literal and (node.func.id == "hasattr" or (node.func.id == "getattr" and len(node.args) == 3)):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.func.id}(…, {node.args[1].value!r})")
    return found


def defaults_twice() -> list[str]:
    """Params-model defaults that a built-in component's factory signature repeats."""
    from pydantic_core import PydanticUndefined

    from sharedattr.plugins.loading import get_registry

    registry = get_registry()
    found = []
    for kind in registry.components_by_kind:
        for component in registry.components(kind):
            if not component.source.startswith("sharedattr."):
                continue
            factory = component.factory
            try:
                signature = inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)
            except (TypeError, ValueError):
                continue
            for name, field in component.params.model_fields.items():
                parameter = signature.parameters.get(name)
                has_default = field.default is not PydanticUndefined or field.default_factory is not None
                if has_default and parameter is not None and parameter.default is not inspect.Parameter.empty:
                    found.append(f"{kind} {component.name}: {name}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=15, help="how many of the longest functions to list")
    parser.add_argument("--json", action="store_true", help="everything as one JSON object")
    args = parser.parse_args()
    every = functions()
    longest = sorted(every, key=lambda f: -f["lines"])[: args.top]
    wide = sorted((f for f in every if f["parameters"] > MAX_PARAMETERS), key=lambda f: -f["parameters"])
    report = {"longest": longest, "over_8_parameters": wide, "probes": probes(), "defaults_twice": defaults_twice()}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.top} longest functions:")
    for f in longest:
        print(f"  {f['lines']:4d} lines  {f['name']}  ({f['where']})")
    print(f"\n{len(wide)} functions with more than {MAX_PARAMETERS} parameters:")
    for f in wide:
        print(f"  {f['parameters']:3d}  {f['name']}  ({f['where']})")
    found = report["probes"]
    print(
        f"\n{len(found)} getattr/hasattr probes ({sum('getattr' in p for p in found)} getattr, "
        f"{sum('hasattr' in p for p in found)} hasattr)"
    )
    twice = report["defaults_twice"]
    print(f"\n{len(twice)} default values written twice (params model and factory signature)")
    for line in twice:
        print(f"  {line}")


if __name__ == "__main__":
    main()
