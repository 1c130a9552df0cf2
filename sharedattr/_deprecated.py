"""Every deprecated import path of sharedattr, kept working until :data:`RELEASE` with a DeprecationWarning.

- Old modules of sharedattr 0.1's flat layout (:data:`MOVED`): ``import sharedattr.fitting`` (or ``from
  sharedattr.models.readouts import RidgeReadout``) finds an alias module here: importing it warns once, naming
  the new home, and each name is looked up in the modules that now hold it, in order.
- Old names of a module that still exists (:data:`MOVED_NAMES`): ``sharedattr.config.SUFFIXES`` was the
  config-file module's; the package's ``__getattr__`` hands such a name to :func:`moved_attribute`.

Plugin authors should import from :mod:`sharedattr.plugin`; everything else has a new home in the package of its
pipeline stage. ``tests/test_public_api.py`` fails once ``sharedattr.__version__`` reaches :data:`RELEASE`: the
shim is then due for removal.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

RELEASE = "0.2"
"""The release that removes every alias: the one after 0.1, whose layout they keep working."""

MOVED: dict[str, tuple[str, ...]] = {
    "sharedattr.errors": ("sharedattr.runtime.errors",),
    "sharedattr.io": ("sharedattr.runtime.io",),
    "sharedattr.work_store": ("sharedattr.runtime.work_store",),
    "sharedattr.distributed": ("sharedattr.runtime.distributed",),
    "sharedattr.hookspecs": ("sharedattr.plugins.hookspecs",),
    "sharedattr.registry": ("sharedattr.plugins.registry", "sharedattr.plugins.loading"),
    "sharedattr.params": ("sharedattr.plugins.params",),
    "sharedattr.components": (
        "sharedattr.plugins.contracts",
        "sharedattr.attribution.engine",
        "sharedattr.data.responses",
        "sharedattr.encoding.scores",
    ),
    "sharedattr.specs": ("sharedattr.config.spec", "sharedattr.plugins.specs", "sharedattr.config.validation"),
    "sharedattr.schema": ("sharedattr.config.schema",),
    "sharedattr.features": ("sharedattr.data.features",),
    "sharedattr.insilico": ("sharedattr.data.insilico",),
    "sharedattr.insilico.render": ("sharedattr.data.insilico.render",),
    "sharedattr.insilico.neurons": ("sharedattr.data.insilico.neurons",),
    "sharedattr.insilico.dataset": ("sharedattr.data.insilico.dataset",),
    "sharedattr.models": ("sharedattr.encoding",),
    "sharedattr.models.encoding": ("sharedattr.encoding.model",),
    "sharedattr.models.backbones": (
        "sharedattr.encoding.backbones.frozen",
        "sharedattr.encoding.backbones.torchvision_models",
    ),
    "sharedattr.models.insilico_cnn": ("sharedattr.encoding.backbones.insilico_cnn",),
    "sharedattr.models.readouts": ("sharedattr.encoding.readouts.ridge",),
    "sharedattr.models.factorized": ("sharedattr.encoding.readouts.factorized",),
    "sharedattr.models.gaussian": ("sharedattr.encoding.readouts.gaussian",),
    "sharedattr.models.attention": ("sharedattr.encoding.readouts.attention",),
    "sharedattr.models.training": ("sharedattr.encoding.readouts.training",),
    "sharedattr.models.sgd_readouts": (
        "sharedattr.encoding.readouts.factorized",
        "sharedattr.encoding.readouts.gaussian",
        "sharedattr.encoding.readouts.attention",
    ),
    "sharedattr.fitting": (
        "sharedattr.encoding.fit",
        "sharedattr.encoding.store",
        "sharedattr.encoding.scores",
        "sharedattr.runtime.devices",
        "sharedattr.experiment.stages",
        "sharedattr.experiment.tables",
    ),
    "sharedattr.scoring": ("sharedattr.encoding.scores",),
    "sharedattr.matching": ("sharedattr.selection.matching", "sharedattr.selection.neurons"),
    "sharedattr.methods": ("sharedattr.attribution",),
    "sharedattr.methods.matchers": ("sharedattr.selection.matchers", "sharedattr.plugins.contracts"),
    "sharedattr.methods.parallel_backprop": ("sharedattr.attribution.parallel_backprop",),
    "sharedattr.methods.captum_methods": ("sharedattr.attribution.captum_methods",),
    "sharedattr.methods.hook_safety": ("sharedattr.attribution.hook_safety",),
    "sharedattr.explain": (
        "sharedattr.attribution.engine",
        "sharedattr.data.pairs",
        "sharedattr.plugins.specs",
        "sharedattr.experiment.tables",
    ),
    "sharedattr.metrics.builtin": ("sharedattr.metrics.complexity", "sharedattr.metrics.faithfulness"),
    "sharedattr.figures": ("sharedattr.report.figures",),
    "sharedattr.report.plots": ("sharedattr.report.figures",),
    "sharedattr.synthesis.figures": ("sharedattr.report.figures",),
    "sharedattr.synthesis.runner": ("sharedattr.experiment.synthesize",),
    "sharedattr.pipeline": ("sharedattr.experiment.run", "sharedattr.experiment.tables"),
    "sharedattr.comparison": ("sharedattr.experiment.compare",),
    "sharedattr.demo": ("sharedattr.experiment.demo",),
}
"""Old module → the modules that now hold its names (searched in order)."""

MOVED_NAMES: dict[str, tuple[str, ...]] = {"sharedattr.config": ("sharedattr.config.files",)}
"""A module that still exists → the modules that now hold the other names it used to have."""


def moved_attribute(module: str, name: str) -> Any:
    """``module.name`` for a name :data:`MOVED_NAMES` says moved: found in its new home, with a
    DeprecationWarning; AttributeError for any other name."""
    for target in MOVED_NAMES.get(module, ()):
        home = importlib.import_module(target)
        if not name.startswith("__") and hasattr(home, name):
            warnings.warn(
                f"{module}.{name} is deprecated and will be removed in sharedattr {RELEASE}: import it from {target}",
                DeprecationWarning,
                stacklevel=3,
            )
            return getattr(home, name)
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


PACKAGES = {"sharedattr.insilico", "sharedattr.models", "sharedattr.methods"}

LEFT_THE_WHEEL = {
    "sharedattr.models.insilico_training": "scripts/trainers/insilico_cnn.py",
    "sharedattr.synthesis.prior_training": "scripts/trainers/diffusion_prior.py",
}
"""Trainers of the shipped assets: moved out of the installed package, into the source repository."""


class AliasModule(types.ModuleType):
    """An old module path: each attribute is looked up in the modules that now hold it."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Deprecated alias of {', '.join(targets)}.")
        self.__targets = targets

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} (now {', '.join(self.__targets)}) has no attribute {attr!r}")

    def __dir__(self) -> list[str]:
        return sorted({n for t in self.__targets for n in dir(importlib.import_module(t))})


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        targets = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} is deprecated and will be removed in sharedattr {RELEASE}: import from "
            f"{' or '.join(targets)} (plugins: from sharedattr.plugin)",
            DeprecationWarning,
            stacklevel=2,
        )
        return AliasModule(spec.name, targets)

    def exec_module(self, module: types.ModuleType) -> None:
        if module.__name__ in PACKAGES:
            module.__path__ = []  # a package: its old submodules are found by the same finder


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in LEFT_THE_WHEEL:
            raise ModuleNotFoundError(
                f"{fullname} was a trainer of a shipped asset and is no longer part of the installed package: it is "
                f"{LEFT_THE_WHEEL[fullname]} in the sharedattr source repository",
                name=fullname,
            )
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(), is_package=fullname in PACKAGES)


def install() -> None:
    """Put the alias finder in front of :data:`sys.meta_path` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
