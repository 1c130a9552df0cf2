"""The public API keeps working: the top-level names, the entry-point group and hooks, and every old import path."""

from __future__ import annotations

import importlib
import re
import sys
import warnings

import pytest

import sharedattr
from sharedattr import _deprecated

PUBLIC = [
    "compare",
    "Comparison",
    "PredictedDriversWarning",
    "load_stimuli",
    "load_responses",
    "StimulusSet",
    "Responses",
    "load_model",
    "save_model",
    "get_registry",
    "load_registry",
    "load_experiment",
    "validate_experiment",
    "ExperimentSpec",
    "experiment_json_schema",
    "run_experiment",
    "fit_experiment",
    "synthesize_experiment",
    "hookimpl",
]

OLD_NAMES = [  # (old module, name) pairs the docs, examples and plugins of sharedattr 0.1 used
    ("sharedattr.fitting", "fit_experiment"),
    ("sharedattr.fitting", "load_model"),
    ("sharedattr.fitting", "Fit"),
    ("sharedattr.fitting", "held_out_r"),
    ("sharedattr.fitting", "resolve_device"),
    ("sharedattr.pipeline", "run_experiment"),
    ("sharedattr.pipeline", "RESULT_COLUMNS"),
    ("sharedattr.comparison", "compare"),
    ("sharedattr.registry", "get_registry"),
    ("sharedattr.registry", "Registry"),
    ("sharedattr.registry", "PluginLoadWarning"),
    ("sharedattr.specs", "validate_experiment"),
    ("sharedattr.specs", "ExperimentSpec"),
    ("sharedattr.specs", "MethodSpec"),
    ("sharedattr.params", "Params"),
    ("sharedattr.params", "InputPath"),
    ("sharedattr.components", "AttributionBatch"),
    ("sharedattr.components", "reduce_channels"),
    ("sharedattr.components", "pearson_columns"),
    ("sharedattr.hookspecs", "KINDS"),
    ("sharedattr.errors", "UserError"),
    ("sharedattr.models.backbones", "FrozenBackbone"),
    ("sharedattr.models.backbones", "TorchvisionBackbone"),
    ("sharedattr.models.readouts", "RidgeReadout"),
    ("sharedattr.models.encoding", "EncodingModel"),
    ("sharedattr.methods.matchers", "Matcher"),
    ("sharedattr.methods.matchers", "CosineMatcher"),
    ("sharedattr.methods.parallel_backprop", "ParallelBackprop"),
    ("sharedattr.metrics.builtin", "gini"),
    ("sharedattr.metrics.builtin", "DeletionMetric"),
    ("sharedattr.matching", "match_pairs"),
    ("sharedattr.matching", "select_neurons"),
    ("sharedattr.explain", "PairImages"),
    ("sharedattr.features", "extract_features"),
    ("sharedattr.insilico", "write_insilico"),
    ("sharedattr.insilico.render", "render_set"),
    ("sharedattr.synthesis.runner", "synthesize_experiment"),
    ("sharedattr.synthesis.figures", "role_means"),
    ("sharedattr.figures", "fit_figure"),
    ("sharedattr.demo", "make_demo_data"),
    ("sharedattr.schema", "experiment_json_schema"),
]


@pytest.mark.parametrize("name", PUBLIC)
def test_the_top_level_api_is_importable(name):
    assert getattr(sharedattr, name) is not None
    assert name in sharedattr.__all__


def test_dir_lists_the_public_names_and_modules():
    listed = dir(sharedattr)
    assert set(PUBLIC) <= set(listed) and {"plot", "plugin", "testing", "__version__"} <= set(listed)
    assert listed == sorted(listed)
    assert not [name for name in listed if name.startswith("_") and name != "__version__"]  # no internals
    for name in listed:
        assert getattr(sharedattr, name) is not None, name


@pytest.mark.parametrize("name", [n for n in PUBLIC if n[0].islower() and n != "hookimpl"])
def test_every_public_function_has_a_docstring_with_an_example(name):
    import inspect

    doc = inspect.getdoc(getattr(sharedattr, name)) or ""
    assert "Example::" in doc, f"sharedattr.{name}: its docstring has no example"
    example = doc[doc.index("Example::") :]
    assert f"sharedattr.{name}(" in example, f"sharedattr.{name}: its example does not call it"


def test_the_entry_point_group_and_hook_names_are_unchanged():
    from sharedattr.plugins.hookspecs import KINDS
    from sharedattr.plugins.loading import ENTRY_POINT_GROUP

    assert ENTRY_POINT_GROUP == "sharedattr"
    assert KINDS == {
        "backbone": "register_backbones",
        "readout": "register_readouts",
        "matcher": "register_matchers",
        "method": "register_methods",
        "metric": "register_metrics",
        "synthesizer": "register_synthesizers",
        "energy": "register_energies",
    }


@pytest.fixture
def fresh_aliases():
    """Forget the alias modules, so each test imports (and warns) anew."""
    for name in list(sys.modules):
        if name in _deprecated.MOVED:
            del sys.modules[name]
    yield


@pytest.mark.parametrize(("module", "name"), OLD_NAMES)
def test_old_import_paths_work_and_warn(fresh_aliases, module, name):
    with pytest.warns(DeprecationWarning, match=re.escape(module) + " is deprecated .* import from"):
        old = importlib.import_module(module)
    value = getattr(old, name)
    new_homes = [importlib.import_module(m) for m in _deprecated.MOVED[module]]
    assert any(getattr(m, name, None) is value for m in new_homes)


def test_every_alias_module_imports(fresh_aliases):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for module in _deprecated.MOVED:
            assert dir(importlib.import_module(module)), module


def test_the_trainers_left_the_package_with_a_pointer():
    with pytest.raises(ModuleNotFoundError, match=r"scripts/trainers/diffusion_prior\.py"):
        importlib.import_module("sharedattr.synthesis.prior_training")


def test_the_deprecation_shim_is_removed_when_its_release_comes():
    """Every deprecated path says it goes in ``_deprecated.RELEASE``; once ``__version__`` reaches that release, the
    shim (``sharedattr/_deprecated.py`` and the ``__getattr__`` hooks that use it) is due for removal."""
    from packaging.version import Version

    assert Version(sharedattr.__version__) < Version(_deprecated.RELEASE), (
        f"sharedattr {sharedattr.__version__} has reached {_deprecated.RELEASE}: remove the deprecated import paths "
        "(sharedattr/_deprecated.py, its install() call and the __getattr__ hooks of MOVED_NAMES' modules)"
    )


def test_old_names_of_sharedattr_config_work_through_the_shim_and_warn():
    from sharedattr.config import files

    with pytest.warns(DeprecationWarning, match="sharedattr.config.SUFFIXES is deprecated .* sharedattr.config.files"):
        import sharedattr.config

        assert sharedattr.config.SUFFIXES is files.SUFFIXES
    with pytest.raises(AttributeError, match="has no attribute 'nonsense'"):
        import sharedattr.config

        sharedattr.config.nonsense  # noqa: B018
