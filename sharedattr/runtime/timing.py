"""Timing a command's stages: wall time and peak resident memory per stage (``timings.json``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm


class StageTimer:
    """Wall time and peak resident memory per stage of a run: :meth:`mark` starts a stage (ending the previous one),
    with a progress bar.

    The peak of a stage is the kernel's high-water mark of this process's resident memory (``VmHWM`` in
    ``/proc/self/status``: anonymous memory and the resident pages of memory-mapped files, such as the feature
    cache), reset at the stage start by writing ``5`` to ``/proc/self/clear_refs`` (Linux ≥ 4.0) and read at its
    end: ``peak_of = "stage"``. Where the reset is refused, the peak read is the process's so far (``VmHWM``
    unreset, else ``resource.getrusage`` ``ru_maxrss``): ``peak_of = "process"``, an upper bound of the stage's.
    Where neither can be read (Windows), ``peak_rss_mb`` is None. Child processes are not counted.
    MB are 10⁶ bytes. The reset lowers the one high-water mark the kernel keeps, which ``ru_maxrss`` and
    ``/usr/bin/time -v`` also report: after a run, they give the peak since the last stage start; the run's peak
    is the largest stage peak.
    """

    CLEAR_REFS = "/proc/self/clear_refs"
    STATUS = "/proc/self/status"

    def __init__(self, stages: Sequence[str], progress: bool) -> None:
        self._stages: dict[str, dict[str, Any]] = {}
        self._current: tuple[str, float, bool] | None = None  # name, start (perf_counter s), peak reset at start
        self._bar = tqdm(total=len(stages), desc="run", disable=not progress, unit="stage")

    @classmethod
    def reset_peak(cls) -> bool:
        """Reset the high-water mark of resident memory to the current resident memory; whether that worked."""
        try:
            with open(cls.CLEAR_REFS, "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @classmethod
    def peak_rss_mb(cls) -> float | None:
        """The high-water mark of resident memory in MB: ``VmHWM``, else ``ru_maxrss`` (lifetime peak), else None."""
        try:
            with open(cls.STATUS) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024 / 1e6  # kB (KiB) → MB
        except (OSError, ValueError, IndexError):
            pass
        import sys

        try:
            import resource
        except ImportError:  # Windows
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6

    def _end(self) -> None:
        if self._current is None:
            return
        name, start, reset = self._current
        seconds, peak = time.perf_counter() - start, self.peak_rss_mb()
        before = self._stages.get(name)  # a stage marked twice: its seconds add up, its peak is the larger
        if before is not None:
            seconds += before["seconds"]
            if peak is not None and before["peak_rss_mb"] is not None:
                peak = max(peak, before["peak_rss_mb"])
        self._stages[name] = {
            "seconds": seconds,
            "peak_rss_mb": None if peak is None else round(peak, 1),
            "peak_of": "stage" if reset and peak is not None else "process",
        }
        self._current = None

    def mark(self, name: str) -> None:
        if self._current is not None:
            self._bar.update()
        self._end()
        reset = self.reset_peak()
        self._current = (name, time.perf_counter(), reset)
        self._bar.set_postfix_str(name)

    def stages(self) -> dict[str, dict[str, Any]]:
        """Per stage marked so far, the last one ending now (closes the bar): ``seconds``, ``peak_rss_mb`` (MB, or
        None) and ``peak_of`` ("stage", or "process" where the peak could not be reset at the stage start): the
        content of ``timings.json``."""
        if self._current is not None:
            self._bar.update()
        self._end()
        self._bar.close()
        return {name: dict(record) for name, record in self._stages.items()}

    def durations(self) -> dict[str, float]:
        """Seconds per stage marked so far, the last one ending now; closes the bar."""
        return {name: record["seconds"] for name, record in self.stages().items()}
