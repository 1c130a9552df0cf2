"""Interrupted runs resume. A SIGKILL inside each stage of ``sharedattr run`` (fit, match, attribute, write, report),
then the same command again, gives the same bytes as an uninterrupted run. SIGINT and SIGTERM stop a run with one line
on stderr and exit codes 130 and 143; the lock and the temporaries are gone, and the next run reuses every finished
work item. So do the ranks of a torchrun launch that all get SIGTERM, as torchrun sends it to each of them.

Every run is a real process that gets a real signal. A new Python process spends 5-15 s importing the package, so
this file is also the launcher that the tests start once (``python test_interrupted_runs.py PLAN``). It imports the
package, then forks one child per run. Each child arms its kill point (a patched ``os.replace``, the rename that ends
every atomic write, or a patched stage function) and calls ``sharedattr.cli.main`` as ``python -m sharedattr`` does.
The runs of a phase run at once: first the reference and every interrupted run, then every resume.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from sharedattr.runtime.run_folder import LOCK_NAME, TEMP_SUFFIX

TEMP = f"*{TEMP_SUFFIX}"
DETERMINISTIC = [  # docs/reliability.md, "Same spec, same results"; report.html holds the folder's path and the time
    "pairs.csv",
    "results.csv",
    "summary.csv",
    "scores.csv",
    "spec.json",
    "components.json",
    "maps.safetensors",
    "model/model.json",
    "model/readout.safetensors",
    "results.parquet",  # where pyarrow is installed
]
WORK_ITEM = "work/*.safetensors"

# -- the launcher (runs in its own process; see the module docstring) ------------------------------------------------


def snapshot(folder: Path) -> dict[str, list[int]]:
    """``{relative path: [size, inode, mtime_ns]}`` of every file under ``folder``, hidden ones included."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            stat = (Path(root) / name).stat()
            files[str((Path(root) / name).relative_to(folder))] = [stat.st_size, stat.st_ino, stat.st_mtime_ns]
    return files


def arm(kill: dict) -> None:
    """Make this process send itself ``kill["signal"]`` at the kill point: the ``nth`` atomic rename onto a path
    matching ``kill["replace"]`` (the temporary is complete, the rename not done), or on return from the function
    ``kill["after"]`` (``"module:name"``)."""
    signum = getattr(signal, kill["signal"])
    if "replace" in kill:
        real, seen = os.replace, [0]

        def replace(src, dst, *args, **kwargs):
            if fnmatch.fnmatch(os.fspath(dst), kill["replace"]):
                seen[0] += 1
                if seen[0] == kill["nth"]:
                    os.kill(os.getpid(), signum)
            return real(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        module_name, name = kill["after"].split(":")
        module = importlib.import_module(module_name)
        stage = getattr(module, name)

        def then_signal(*args, **kwargs):
            result = stage(*args, **kwargs)
            os.kill(os.getpid(), signum)
            return result

        setattr(module, name, then_signal)


def child(job: dict) -> None:
    """Run one job in this forked process, as ``python -m sharedattr *argv`` would; never returns."""
    code = 1
    try:
        for fd, suffix in ((1, ".out"), (2, ".err")):
            os.dup2(os.open(job["log"] + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.environ.update(job["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also where the tests run in
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the background or under nohup (signals ignored)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        import sharedattr.experiment.run as run_module
        from sharedattr.cli import main

        run_experiment = run_module.run_experiment

        def observed(*args, **kwargs):  # record what the run reused (RunResult.reused)
            result = run_experiment(*args, **kwargs)
            if result is not None:
                Path(job["log"] + ".reused.json").write_text(json.dumps(result.reused))
            return result

        run_module.run_experiment = observed
        if job["kill"]:
            arm(job["kill"])
        code = main(job["argv"])
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def launch(plan_path: str) -> None:
    """Run the plan's phases one after another, each phase's jobs at once in forked children; write each job's exit
    status (``-signal`` when a signal ended it) and, after each phase, a :func:`snapshot` of each job's folder."""
    plan = json.loads(Path(plan_path).read_text())
    # Import what a run uses, so that the children do not each import it again.
    import captum.attr  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")  # as sharedattr.report.figures does
    import matplotlib.pyplot  # noqa: F401
    import torchvision.models  # noqa: F401

    import sharedattr.cli  # noqa: F401
    import sharedattr.experiment.run  # noqa: F401
    import sharedattr.report.sections  # noqa: F401

    with contextlib.suppress(ImportError):  # what writes results.parquet
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401

    status, snapshots = {}, []
    for phase in plan["phases"]:
        sys.stdout.flush()
        sys.stderr.flush()
        children = {}
        for job in phase:
            pid = os.fork()
            if pid == 0:
                child(job)
            children[pid] = job["name"]
        for pid, name in children.items():
            status[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        snapshots.append({job["name"]: snapshot(Path(job["out"])) for job in phase})
    Path(plan["results"]).write_text(json.dumps({"status": status, "snapshots": snapshots}))


# -- the tests --------------------------------------------------------------------------------------------------------

SIGKILL_STAGES = {  # stage: (kill point, files the folder holds after the kill, files it does not hold yet)
    "fit": (  # scores.csv and the readout are written; model.json, written last, is not
        {"replace": "*/model/model.json", "nth": 1},
        ["scores.csv", "model/readout.safetensors"],
        ["model/model.json", "spec.json"],
    ),
    "match": (  # the pairs are matched, nothing of them written
        {"after": "sharedattr.experiment.stages:match_pairs"},
        ["scores.csv", "model/model.json"],
        [WORK_ITEM, "pairs.csv"],
    ),
    "attribute": ({"replace": f"*/{WORK_ITEM}", "nth": 3}, [WORK_ITEM], ["results.csv"]),  # 2 of 12 items written
    "write": ({"replace": "*/summary.csv", "nth": 1}, ["pairs.csv", "results.csv"], ["summary.csv", "report.html"]),
    "report": (
        {"replace": "*/report.html", "nth": 1},
        ["summary.csv", "timings.json"],
        ["report.html", "manifest.json"],
    ),
}
SIGNALS = {"SIGINT": 130, "SIGTERM": 143}
RANKS = 2


def tiny_run_config(tiny_data: Path) -> dict:
    """4 pairs, one item per pair and method (batch_size 1): 4 map items and 8 score items."""
    return {
        "name": "interrupted",
        "device": "cpu",
        "batch_size": 1,
        "data": {
            "stimuli": str(tiny_data / "stimuli" / "manifest.csv"),
            "responses": str(tiny_data / "responses.csv"),
            "preferred_category": "bodies",
        },
        "backbone": {"name": "torchvision", "model": "resnet18", "layer": "layer1", "input_size": 32},
        "readout": {"name": "ridge", "folds": 3},
        "selection": {"top_k": 2, "drivers_per_neuron": 2},
        "methods": ["saliency"],
        "metrics": ["gini"],
        "output": {"figures": False},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> dict:
    """Every case's interrupted run, then its resume (the same command again), and one uninterrupted reference run.

    ``runs[name]`` holds the run's ``out`` folder, exit ``status``, ``stderr``, ``reused`` (``RunResult.reused``,
    None for a run that did not finish) and ``files`` (the folder's :func:`snapshot` once the run ended), for each
    interrupted run ``name``, ``resumed:<name>`` for its resume, and ``reference``.
    """
    from toml_writer import toml_text

    root = tmp_path_factory.mktemp("interrupted")
    config = root / "config.toml"
    config.write_text(toml_text(tiny_run_config(tiny_data)))

    def job(name: str, folder: str, kill: dict | None, env: dict | None = None) -> dict:
        out = root / folder
        return {
            "name": name,
            "argv": ["run", str(config), "--out", str(out), "--no-progress"],
            "env": {"SHAREDATTR_CACHE": str(root / f"cache-{folder}"), **(env or {})},
            "kill": kill,
            "log": str(root / name.replace(":", "-")),
            "out": str(out),
        }

    work_item = {"replace": f"*/{WORK_ITEM}", "nth": 3}  # after two finished items
    interrupted = [job("reference", "reference", None)]
    interrupted += [
        job(f"SIGKILL:{stage}", f"SIGKILL-{stage}", {"signal": "SIGKILL", **kill})
        for stage, (kill, _, _) in SIGKILL_STAGES.items()
    ]
    interrupted += [job(name, name, {"signal": name, **work_item}) for name in SIGNALS]
    torchrun = {"WORLD_SIZE": str(RANKS), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    interrupted += [  # torchrun sends SIGTERM to every rank: here each gets it after its own first work item
        job(
            f"rank{r}",
            "ranks",
            {"signal": "SIGTERM", **work_item, "nth": 2},
            {**torchrun, "RANK": str(r), "LOCAL_RANK": str(r)},
        )
        for r in range(RANKS)
    ]
    resumes = [  # the same command again, in one process (rank0's resume finishes the torchrun launch)
        job(f"resumed:{j['name']}", Path(j["out"]).name, None)
        for j in interrupted
        if j["name"] not in ("reference", "rank1")
    ]
    plan = root / "plan.json"
    plan.write_text(json.dumps({"phases": [interrupted, resumes], "results": str(root / "results.json")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, __file__, str(plan)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((root / "results.json").read_text())
    runs = {}
    for phase, jobs in enumerate([interrupted, resumes]):
        for j in jobs:
            log = Path(j["log"])
            reused = log.with_name(log.name + ".reused.json")
            runs[j["name"]] = {
                "out": Path(j["out"]),
                "status": results["status"][j["name"]],
                "stderr": log.with_name(log.name + ".err").read_text(),
                "reused": json.loads(reused.read_text()) if reused.exists() else None,
                "files": results["snapshots"][phase][j["name"]],
            }
    assert runs["reference"]["status"] == 0, runs["reference"]["stderr"][-3000:]
    return runs


def matching(files: dict, pattern: str) -> list[str]:
    return [name for name in files if fnmatch.fnmatch(name, pattern)]


def assert_resumed_to_the_reference(runs: dict, name: str, reused_items: int, model_reused: bool) -> None:
    """The resume of ``name`` exits 0 and leaves the folder an uninterrupted run leaves: the same files, the
    deterministic ones byte for byte, a manifest that verifies, no lock, no temporary; the work items finished before
    the interruption were reused as they were (same inode and mtime), the others computed."""
    from sharedattr.runtime.manifest import verify_manifest

    killed, resumed, reference = runs[name], runs[f"resumed:{name}"], runs["reference"]
    out = resumed["out"]
    assert resumed["status"] == 0, resumed["stderr"][-3000:]
    assert sorted(resumed["files"]) == sorted(reference["files"])  # no lock, no temporary, nothing missing
    for file in DETERMINISTIC:
        if file in reference["files"]:
            assert (out / file).read_bytes() == (reference["out"] / file).read_bytes(), file
    assert verify_manifest(out) == []
    total = reference["reused"]["work_items_computed"]
    assert resumed["reused"]["work_items_reused"] == reused_items
    assert resumed["reused"]["work_items_computed"] == total - reused_items
    assert resumed["reused"]["model"] == int(model_reused)
    finished = matching(killed["files"], WORK_ITEM) + (["model/readout.safetensors"] if model_reused else [])
    assert len(matching(killed["files"], WORK_ITEM)) == reused_items
    for file in finished:  # read back, not written again
        assert resumed["files"][file] == killed["files"][file], file


@pytest.mark.parametrize("stage", list(SIGKILL_STAGES))
def test_a_sigkill_inside_each_stage_resumes_to_the_same_bytes(stage, runs):
    _, present, absent = SIGKILL_STAGES[stage]
    killed = runs[f"SIGKILL:{stage}"]
    assert killed["status"] == -signal.SIGKILL, killed["stderr"][-3000:]
    files = killed["files"]
    assert LOCK_NAME in files  # the killed run could not clean up: the next run takes its lock over
    for pattern in present:
        assert matching(files, pattern), (pattern, sorted(files))
    for pattern in absent:
        assert not matching(files, pattern), (pattern, sorted(files))
    assert bool(matching(files, TEMP)) == (stage != "match")  # killed with a complete temporary not yet renamed
    reused = {"fit": 0, "match": 0, "attribute": 2}.get(stage, runs["reference"]["reused"]["work_items_computed"])
    assert_resumed_to_the_reference(runs, f"SIGKILL:{stage}", reused, model_reused=stage != "fit")


def assert_interrupted(run: dict, signame: str) -> None:
    """Exit code 128 + the signal's number, one line of resume advice on stderr, the lock and temporaries gone."""
    assert run["status"] == SIGNALS[signame], run["stderr"][-3000:]
    lines = run["stderr"].splitlines()
    assert lines == [
        f"interrupted ({signame}): {run['out']} keeps the finished work; run the same command again to resume"
    ], run["stderr"][-3000:]
    assert LOCK_NAME not in run["files"] and not matching(run["files"], TEMP), sorted(run["files"])


@pytest.mark.parametrize("signame", list(SIGNALS))
def test_sigint_and_sigterm_stop_with_one_line_and_the_next_run_resumes(signame, runs):
    run = runs[signame]
    assert_interrupted(run, signame)
    assert len(matching(run["files"], WORK_ITEM)) == 2 and "results.csv" not in run["files"]
    assert_resumed_to_the_reference(runs, signame, reused_items=2, model_reused=True)


def test_torchrun_ranks_that_get_sigterm_stop_alike_and_one_process_resumes(runs):
    for r in range(RANKS):
        assert_interrupted(runs[f"rank{r}"], "SIGTERM")
    assert len(matching(runs["rank0"]["files"], WORK_ITEM)) == RANKS  # each rank's first item
    assert_resumed_to_the_reference(runs, "rank0", reused_items=RANKS, model_reused=True)


# -- in this process: the handlers themselves --------------------------------------------------------------------------


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_signal_stops_a_command_once_and_its_handler_is_restored(signame, monkeypatch, capsys, tmp_path):
    from sharedattr import cli

    signum = getattr(signal, signame)
    seen = []
    previous = signal.signal(signum, lambda s, f: seen.append(s))  # the test's own: a signal must never end pytest
    try:
        handler = signal.getsignal(signum)
        unwound = []

        def command(args):
            try:
                os.kill(os.getpid(), signum)
                pytest.fail("the signal did not stop the command")
            finally:
                os.kill(os.getpid(), signum)  # a second one while it unwinds (torchrun and SLURM both send one)
                unwound.append(True)

        monkeypatch.setattr(cli, "_cmd_run", command)
        out = tmp_path / "out"
        assert cli.main(["run", "config.toml", "--out", str(out)]) == 128 + signum
        assert unwound == [True] and seen == []
        assert signal.getsignal(signum) is handler  # restored once the command returned
    finally:
        signal.signal(signum, previous)
    message = f"interrupted ({signame}): {out} keeps the finished work; run the same command again to resume"
    assert capsys.readouterr().err.splitlines() == [message]


def test_a_signal_that_was_ignored_stays_ignored(monkeypatch, tmp_path):
    from sharedattr import cli

    during = {}
    monkeypatch.setattr(cli, "_cmd_run", lambda args: during.update(hup=signal.getsignal(signal.SIGHUP)))
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        assert cli.main(["run", "config.toml", "--out", str(tmp_path)]) == 0
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert during["hup"] is signal.SIG_IGN


def test_a_lock_interrupted_while_it_is_taken_is_not_left_behind(tmp_path, monkeypatch):
    """A lock file that does not name its holder would block every later run."""
    from sharedattr.runtime.run_folder import run_lock

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fdopen", interrupted)
    with pytest.raises(KeyboardInterrupt), run_lock(tmp_path):
        pass
    monkeypatch.undo()
    assert not (tmp_path / LOCK_NAME).exists()
    with run_lock(tmp_path):  # the next run takes it
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())


if __name__ == "__main__":
    launch(sys.argv[1])
