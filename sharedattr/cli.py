"""The ``sharedattr`` command line. Errors a user can cause exit with code 2 and one clear message."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sharedattr import __version__
from sharedattr.runtime.errors import UserError

if TYPE_CHECKING:  # imported where used: `sharedattr --help` stays fast
    from sharedattr.config.spec import ExperimentSpec
    from sharedattr.plugins.registry import Registry

EXIT_USAGE = 2
MIN_DEMO_STIMULI = 6
"""Fewest stimuli per category the demo runs on (its splits and drivers need a few of each)."""


def _cmd_plugins(args: argparse.Namespace) -> int:
    from sharedattr.plugins.loading import BLOCK_PLUGINS_ENV, LOAD_PLUGINS_ENV, debugging, load_registry
    from sharedattr.runtime.errors import plural

    registry = load_registry(on_clash="record")  # list everything, clashes included: this is the diagnostic
    if args.json:
        print(json.dumps(registry.describe(), indent=2))
        return 0
    for kind in registry.components_by_kind:
        print(f"{plural(kind)}:")
        components = registry.components(kind)
        if not components:
            print("  (none)")
        width = max((len(c.name) for c in components), default=0)
        for c in components:
            print(f"  {c.name:<{width}}  {c.description}  [{c.source}]")
    if registry.clashes:
        print(
            "name clashes (a config naming one of these is refused until one plugin is left out with "
            f"{BLOCK_PLUGINS_ENV}):"
        )
        for (kind, name), sources in registry.clashes.items():
            print(f"  {kind} {name!r}: registered by {', '.join(sources)} (listed above: {sources[0]})")
    if registry.not_loaded:
        print("installed plugins that were not loaded:")
        for label, variable in registry.not_loaded.items():
            print(f"  {label}: left out by {variable}={os.environ.get(variable, '')!r}")
    if registry.failed_plugins:
        print("plugins that failed to load:")
        for name, why in registry.failed_plugins.items():
            print(f"  {name}: {why}")
            if debugging() and name in registry.failed_tracebacks:
                print("    " + registry.failed_tracebacks[name].rstrip().replace("\n", "\n    "))
        if not debugging():
            print(
                f"  (run with --debug, or SHAREDATTR_DEBUG=1, for the full tracebacks; {LOAD_PLUGINS_ENV} or "
                f"{BLOCK_PLUGINS_ENV} choose which plugins load)"
            )
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from sharedattr.config.schema import experiment_json_schema

    text = json.dumps(experiment_json_schema(), indent=args.indent)
    if args.output:
        from sharedattr.runtime.io import atomic_write_text

        _check_schema_output(args.output)
        atomic_write_text(args.output, text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _check_schema_output(path: Path) -> None:
    """``schema --output`` writes a new file, or over a JSON Schema (an earlier schema): never over anything else,
    such as the config the schema is for."""
    if not path.exists():
        return
    try:
        existing = json.loads(path.read_bytes()) if path.is_file() else None
    except (OSError, ValueError, RecursionError):
        existing = None
    if not (isinstance(existing, dict) and "$schema" in existing):
        raise UserError(
            f"schema --output: {path} exists and is not a JSON Schema (a config or data file?); the schema is written "
            "only to a new file or over an earlier schema: choose another --output"
        )


def _cmd_validate(args: argparse.Namespace) -> int:
    from sharedattr.config.files import load_experiment
    from sharedattr.plugins.loading import get_registry

    spec = load_experiment(args.config)
    registry = get_registry()
    checked = [] if args.no_data else _checked_data(spec, registry)
    print(f"{args.config}: valid experiment {spec.name!r} (spec digest {spec.digest()})")
    for loc, component in spec.component_specs():
        params = ", ".join(f"{k}={v!r}" for k, v in component.params.items())
        print(f"  {loc:<14} {component.name}({params})  [{component.component(registry).source}]")
    if args.no_data:
        print("data not read (--no-data): the spec alone was checked")
        return 0
    print("data checked without compute (headers and id lists only; --no-data skips this):")
    for line in checked:
        print(line)
    return 0


def _checked_data(spec: ExperimentSpec, registry: Registry) -> list[str]:
    """The lines of ``validate``'s data checks (:func:`~sharedattr.experiment.data_checks.check_data`); when one
    fails, the lines of those that passed are printed before its error is raised."""
    from sharedattr.experiment.data_checks import check_data

    lines: list[str] = []
    try:
        for what, found in check_data(spec, registry):
            lines.append(f"  {what:<10} {found}")
    except UserError:
        if lines:
            print("data checks that passed before the error:\n" + "\n".join(lines))
        raise
    return lines


def _run(spec, out: Path, progress: bool, config: Path | None = None, full_summary: bool = False) -> int:
    from sharedattr.experiment.run import run_experiment
    from sharedattr.experiment.tables import format_summary, short_summary
    from sharedattr.runtime.devices import resolve_device
    from sharedattr.runtime.distributed import ranks_from_environment
    from sharedattr.runtime.run_files import REPORT_FILE, SUMMARY

    start = time.perf_counter()
    with ranks_from_environment(resolve_device(spec.device)) as ranks:
        result = run_experiment(spec, out, progress=progress, ranks=ranks, config=config)
    if result is None:  # a rank other than 0 of a torchrun launch: rank 0 reports
        return 0
    if full_summary:
        print(format_summary(result.summary))
    else:
        from sharedattr.report.components import load as load_components
        from sharedattr.runtime.run_files import COMPONENTS_FILE

        components = load_components(out / COMPONENTS_FILE, spec.model_dump(mode="json"))
        print(short_summary(result.summary, components=components))
    more = "" if full_summary else " (--full-summary prints it here)"
    print(f"\nthe full table, {len(result.summary)} rows: {(out / SUMMARY.name).resolve()}{more}")
    print(f"report: {(out / REPORT_FILE).resolve()}")
    by_rank = result.reused["work_items_computed_by_rank"]
    if len(by_rank) > 1:
        print(f"\n{len(by_rank)} processes; work items computed per rank: {', '.join(map(str, by_rank))}")
    model = f"the model of {spec.model}, " if spec.model is not None else ""
    print(
        f"\n{len(result.selected)} neurons, {len(result.pairs)} driver/reference pairs; {model}"
        f"results in {out} ({time.perf_counter() - start:.1f} s)"
    )
    return 0


def _with_model(spec, model: Path | None):  # noqa: ANN001, ANN202 - the spec type is imported lazily
    """``spec`` with ``--model`` in place of the config's ``model`` (none: as it is). A folder that holds no saved
    model is refused here, before the output folder is touched."""
    if model is None:
        return spec
    from sharedattr.encoding.store import saved_model_folder

    saved_model_folder(model)
    return spec.model_copy(update={"model": model.expanduser().resolve()})


def _cmd_fit(args: argparse.Namespace) -> int:
    import torch

    from sharedattr.config.files import load_experiment
    from sharedattr.encoding.scores import negative_fev_note
    from sharedattr.experiment.stages import fit_experiment

    start = time.perf_counter()
    out = Path(args.out)
    experiment = fit_experiment(load_experiment(args.config), out, progress=not args.no_progress, config=args.config)
    fit = experiment.fit
    r = fit.test_r
    order = r.argsort(descending=True).tolist()
    print(
        f"fitted {len(fit.neuron_ids)} neurons on {len(fit.train)} images, scored on {len(fit.test)} held out "
        f"(features {'from cache' if experiment.cache_hit else 'computed'})"
    )
    print(
        f"held-out Pearson r: median {r.median():.3f}, best {fit.neuron_ids[order[0]]} {r[order[0]]:.3f}, "
        f"worst {fit.neuron_ids[order[-1]]} {r[order[-1]]:.3f}"
    )
    if fit.fev is not None:
        fev = fit.fev[torch.isfinite(fit.fev)]
        print(
            f"fraction of explainable variance explained (held out): median {fev.median():.3f} over "
            f"{len(fev)} neurons with enough repeats"
            if len(fev)
            else "no neuron has enough repeated trials for a noise ceiling (see scores.csv, column note)"
        )
        note = negative_fev_note(fit.neuron_ids, r, fit.fev)
        if note:
            print(note)
    print(f"model, scores.csv and figures in {out} ({time.perf_counter() - start:.1f} s)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from sharedattr.config.files import load_experiment

    spec = _with_model(load_experiment(args.config), args.model)
    return _run(spec, Path(args.out), not args.no_progress, args.config, args.full_summary)


def _cmd_synthesize(args: argparse.Namespace) -> int:
    from sharedattr.config.files import load_experiment
    from sharedattr.experiment.synthesis_outputs import format_synthesis_summary
    from sharedattr.experiment.synthesize import synthesize_experiment
    from sharedattr.runtime.devices import resolve_device
    from sharedattr.runtime.distributed import ranks_from_environment
    from sharedattr.runtime.run_files import REPORT_FILE

    start = time.perf_counter()
    out = Path(args.out)
    spec = _with_model(load_experiment(args.config), args.model)
    with ranks_from_environment(resolve_device(spec.device)) as ranks:
        result = synthesize_experiment(spec, out, progress=not args.no_progress, ranks=ranks, config=args.config)
    if result is None:  # a rank other than 0 of a torchrun launch: rank 0 reports
        return 0
    print(format_synthesis_summary(result.summary))
    print(
        f"\n{len({r['neuron'] for r in result.rows})} neurons × {len({r['synthesizer'] for r in result.rows})} "
        f"synthesizers scored on {len(result.evaluators)} models; images.png, scores.csv and comparison.png "
        f"in {out} ({time.perf_counter() - start:.1f} s)"
    )
    print(f"report: {(out / REPORT_FILE).resolve()}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from sharedattr.config.files import load_experiment
    from sharedattr.experiment.demo import prepare_demo
    from sharedattr.runtime.distributed import environment_world
    from sharedattr.runtime.run_files import DEMO_RUN_DIR

    if environment_world()[1] > 1:
        raise UserError(
            "the demo runs in one process; under torchrun, run a config: "
            "torchrun --nproc-per-node K -m sharedattr run CONFIG --out DIR"
        )
    out = Path(args.out)
    start = time.perf_counter()
    config, reused = prepare_demo(
        out, n_per_category=args.n_per_category, drivers=args.drivers, progress=not args.no_progress
    )
    print(
        f"demo data and config {'of an earlier demo reused' if reused else 'written'} in {out / 'data'} "
        f"({time.perf_counter() - start:.1f} s); running {config}",
        file=sys.stderr,
    )
    code = _run(load_experiment(config), out / DEMO_RUN_DIR, not args.no_progress, config, args.full_summary)
    print(f"demo done in {time.perf_counter() - start:.1f} s")
    return code


def _cmd_report(args: argparse.Namespace) -> int:
    from sharedattr.report import rebuild_report

    print(rebuild_report(args.run_dir))
    return 0


def _at_least(minimum: int):
    """An argparse type: an integer ≥ ``minimum`` (argparse reports anything else with exit code 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _config_and_out(parser: argparse.ArgumentParser) -> None:
    """The arguments of commands that run a config: CONFIG, --out DIR, --no-progress."""
    parser.add_argument("config", type=Path, help="experiment config: .toml, .yaml/.yml or .json")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _model_option(parser: argparse.ArgumentParser) -> None:
    """``--model DIR``: reuse a model that ``sharedattr fit`` saved instead of fitting one (``run``, ``synthesize``)."""
    parser.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="reuse the model `sharedattr fit` saved: its --out folder or its model folder (overrides the config's "
        "`model`). It must have been fitted with this config's data, backbone, readout and seed; nothing is fitted, "
        "and DIR is only read",
    )


def _full_summary_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--full-summary",
        action="store_true",
        help="print every row of summary.csv (method × image × metric) instead of the best methods per metric",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sharedattr",
        description="Explain why a neuron responds to an image: encoding models, shared-feature attribution, "
        "Captum baselines, metrics and stimulus synthesis, all chosen by name from a plugin registry.",
    )
    parser.add_argument("--version", action="version", version=f"sharedattr {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print full tracebacks: of plugins that failed to load, and of errors (same as SHAREDATTR_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "plugins",
        help="list registered components per kind, with their source plugin",
        description="List every registered component (backbones, readouts, matchers, methods, "
        "metrics, synthesizers, energies) and the plugin that provides it.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output, with each component's params schema")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of an experiment config",
        description="Print the JSON Schema of an experiment config, including the params of every "
        "registered component (built-in and third-party).",
    )
    p.add_argument("--indent", type=int, default=2, help="JSON indentation (default 2)")
    p.add_argument("--output", "-o", type=Path, help="write to this file instead of standard output")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser(
        "validate",
        help="validate an experiment config (TOML, YAML or JSON) and the headers of its data",
        description="Validate an experiment config without running it: print the resolved components, then check "
        "what can be read without compute, one line per check: the stimulus manifest's columns (with a "
        "did-you-mean) and the images it names (in a folder or a ZIP's member list), the responses' header (a CSV's "
        "header row; a .npy array's shape; NetCDF, HDF5 and NWB dims, coordinates and time bins against "
        "data.time_window), the selection against the recorded ids, the overlap of stimulus and response ids, and "
        "every weights file's header. Whatever `fit` would refuse on these grounds is refused here first, with "
        "the same message. --no-data checks the spec alone.",
    )
    p.add_argument("config", type=Path, help="experiment config: .toml, .yaml/.yml or .json")
    p.add_argument(
        "--no-data",
        action="store_true",
        help="check the spec alone: read no data file (by default the stimuli's manifest and image list, the "
        "responses' header and time bins, the ids and the weights files' headers are checked too)",
    )
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "fit",
        help="fit and score the encoding model of an experiment",
        description="Load and check the data, extract (or reuse cached) backbone features, fit the "
        "readout on a train split and score it on held-out images. Writes model/ (reload it with "
        "sharedattr.load_model), scores.csv and figures/fit.png.",
    )
    _config_and_out(p)
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser(
        "run",
        help="run an experiment",
        description="Fit the encoding model, select neurons and drivers, match references, attribute "
        "with every configured method, score every metric and write the results. An interrupted run "
        "started again resumes: finished work items are reused. Under torchrun "
        "(torchrun --nproc-per-node K -m sharedattr run CONFIG --out DIR) the work items are shared "
        "out across the K processes and rank 0 writes the results. Prints the best methods per metric; "
        "summary.csv and report.html hold everything.",
    )
    _config_and_out(p)
    _model_option(p)
    _full_summary_option(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "synthesize",
        help="synthesise most exciting images and score them across models",
        description="Fit the encoding model (reused when unchanged), run every configured "
        "synthesizer (gradient_ascent, egg, ...) on the selected neurons and score the images on "
        "the model they were optimised on and on every configured evaluator (val: other seeds; "
        "cross: another backbone or readout), relative to each neuron's best natural image. "
        "Writes images.png/.safetensors, scores.csv, summary.csv and comparison.png.",
    )
    _config_and_out(p)
    _model_option(p)
    p.set_defaults(func=_cmd_synthesize)

    p = sub.add_parser(
        "demo",
        help="run the offline in-silico demo end to end",
        description="Generate a seeded stimulus set with simulated neurons, then run the whole "
        "pipeline on it. Needs no network and no GPU.",
    )
    p.add_argument(
        "--out", type=Path, default=Path("sharedattr-demo"), help="output folder (default ./sharedattr-demo)"
    )
    p.add_argument(
        "--n-per-category",
        type=_at_least(MIN_DEMO_STIMULI),
        default=60,
        help=f"stimuli per category (default 60, at least {MIN_DEMO_STIMULI})",
    )
    p.add_argument(
        "--drivers",
        type=_at_least(1),
        default=3,
        help="out-of-category drivers explained per neuron (default 3; 1 for a quick look)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _full_summary_option(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "report",
        help="rebuild the HTML report of a finished run or synthesis",
        description="Write RUN_DIR/report.html: one self-contained page (figures inlined, no network "
        "access) with the fit quality, selectivity, driver/reference pairs, attribution maps, the "
        "method × metric scores and a plain-language reading of who won; for a `sharedattr synthesize` "
        "folder, its synthesis summary, images, comparison figure and evaluators. Prints its path.",
    )
    p.add_argument(
        "run_dir",
        type=Path,
        metavar="RUN_DIR",
        help="output folder of `sharedattr run` or `sharedattr synthesize` (for `sharedattr demo --out X`: X/results)",
    )
    p.set_defaults(func=_cmd_report)
    return parser


FILESYSTEM_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
    }
)
"""Filesystem errors the user's environment causes (full disk, read-only or unwritable folders, bad paths): printed
as one line with exit code 2 wherever they escape a more specific message."""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)


INTERRUPTING_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
"""Signals that stop a command the way Ctrl-C does: the command unwinds (``finally`` blocks release the run lock,
atomic writers delete their temporaries), prints one line and exits with 128 + the signal's number."""
RESUMABLE_COMMANDS = frozenset({"run", "synthesize"})
"""Commands whose ``--out`` keeps every finished work item, so that the same command run again resumes."""


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when one of :data:`INTERRUPTING_SIGNALS` arrives while a command runs.

    A subclass of :class:`KeyboardInterrupt`, so code that handles Ctrl-C handles SIGTERM and SIGHUP alike, and
    ``except Exception`` lets it through.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _interrupting_signals() -> Iterator[list[int]]:
    """While the block runs, :data:`INTERRUPTING_SIGNALS` raise :class:`Interrupted`; yields the signals received.

    Only the first one raises: later ones (SLURM and torchrun may both send SIGTERM to a rank) are recorded and
    ignored while the command unwinds, so its clean-up runs to the end (SIGKILL still stops it; the next run then
    takes the lock over). A signal that was ignored when the command started (``nohup``), or SIGINT under a
    handler other than Python's default, is left as it was. Outside the main thread, where Python cannot set
    handlers, nothing changes. The previous handlers are restored when the block ends.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) == 1:
            raise Interrupted(signum)

    previous = {}
    for name in INTERRUPTING_SIGNALS:
        signum = getattr(signal, name, None)  # Windows has no SIGHUP
        if signum is None:
            continue
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN or (name == "SIGINT" and handler is not signal.default_int_handler):
            continue
        previous[signum] = signal.signal(signum, interrupt)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _report_interrupt(args: argparse.Namespace, signum: int) -> int:
    """Print the one line that says the command was interrupted (and, for a run, how to resume it); return the exit
    code, 128 + ``signum``."""
    name = signal.Signals(signum).name
    line = f"interrupted ({name})"
    if args.command in RESUMABLE_COMMANDS:
        line += f": {args.out} keeps the finished work; run the same command again to resume"
    with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
        print(line, file=sys.stderr)
    return 128 + signum


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sharedattr`` command; returns the exit code."""
    from sharedattr.plugins.loading import DEBUG_ENV, debugging

    parser = build_parser()
    args = parser.parse_args(argv)
    debug_before = os.environ.get(DEBUG_ENV)
    if args.debug:
        os.environ[DEBUG_ENV] = "1"  # read by plugin loading, for this command
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        with _interrupting_signals() as received:
            try:
                return int(args.func(args) or 0)
            except Exception as err:
                if received:  # a failure that the interruption caused (a torchrun rank whose peers stopped)
                    raise Interrupted(received[0]) from err
                raise
    except UserError as err:
        if debugging():
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if err.errno not in FILESYSTEM_ERRNOS or debugging():
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err} (a file or folder the command reads or writes)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        if debugging():
            traceback.print_exc()
        return _report_interrupt(args, getattr(err, "signum", signal.SIGINT))
    finally:
        warnings.showwarning = previous
        if args.debug:
            if debug_before is None:
                os.environ.pop(DEBUG_ENV, None)
            else:
                os.environ[DEBUG_ENV] = debug_before


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
