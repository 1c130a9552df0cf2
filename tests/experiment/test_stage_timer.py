"""StageTimer: wall time and peak resident memory per stage, reset at each stage start where Linux allows it."""

from __future__ import annotations

import mmap
import sys

import pytest

from sharedattr.runtime.timing import StageTimer


def can_reset_peak() -> bool:
    return sys.platform.startswith("linux") and StageTimer.reset_peak() and StageTimer.peak_rss_mb() is not None


@pytest.mark.skipif(not can_reset_peak(), reason="needs /proc/self/clear_refs (Linux ≥ 4.0)")
def test_each_stage_has_its_own_peak():
    timer = StageTimer(["big", "small"], progress=False)
    timer.mark("big")
    big = mmap.mmap(-1, 300 * 2**20)  # 300 MiB of fresh pages (never memory the process already holds), touched
    big.write(b"\1" * len(big))
    big.close()
    timer.mark("small")
    small = mmap.mmap(-1, 2**20)
    small.write(b"\1" * len(small))
    small.close()
    stages = timer.stages()
    assert list(stages) == ["big", "small"]
    assert {s["peak_of"] for s in stages.values()} == {"stage"}
    assert stages["big"]["peak_rss_mb"] - stages["small"]["peak_rss_mb"] > 250  # the reset forgot "big"'s peak
    assert all(s["seconds"] >= 0 for s in stages.values())


def test_without_the_reset_the_peak_is_the_process_s(tmp_path, monkeypatch):
    monkeypatch.setattr(StageTimer, "CLEAR_REFS", str(tmp_path / "missing" / "clear_refs"))
    timer = StageTimer(["a"], progress=False)
    timer.mark("a")
    record = timer.stages()["a"]
    assert record["peak_of"] == "process" and record["peak_rss_mb"] > 0


@pytest.mark.skipif(sys.platform == "win32", reason="no resource module")
def test_without_proc_the_peak_falls_back_to_ru_maxrss(tmp_path, monkeypatch):
    import resource

    monkeypatch.setattr(StageTimer, "STATUS", str(tmp_path / "no-status"))
    monkeypatch.setattr(StageTimer, "CLEAR_REFS", str(tmp_path / "no-clear-refs"))
    peak = StageTimer.peak_rss_mb()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak == pytest.approx(maxrss / 1e6 if sys.platform == "darwin" else maxrss * 1024 / 1e6, rel=0.05)


def test_a_stage_marked_twice_adds_its_seconds(monkeypatch):
    clock = iter([0.0, 1.0, 1.0, 3.0, 3.0, 6.0])  # start, end of a; of b; of a again
    monkeypatch.setattr("sharedattr.runtime.timing.time.perf_counter", lambda: next(clock))
    timer = StageTimer(["a", "b"], progress=False)
    for name in ("a", "b", "a"):
        timer.mark(name)
    assert timer.durations() == {"a": 1.0 + 3.0, "b": 2.0}
