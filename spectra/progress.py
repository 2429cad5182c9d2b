"""Progress with an ETA for every long step, on a terminal or in a log.

Rich progress bars are invisible where spectra runs most (CI logs, ``nohup``, a pipe):
:class:`EtaLog` prints one plain line at most every ``interval_s`` seconds — and at each
tenth of the work — with what is done, the rate and the time left, from the steps measured
so far in this process (a resumed run's earlier steps are not counted as fast ones). A step
that ends within its first ``interval_s`` prints nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def fmt_duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class EtaLog:
    """A ``(done, total)`` callback that logs ``LABEL: done/total (p%) · elapsed · ETA``.

    Args:
        label: what is being counted (``training steps``, ``γ points``).
        log: where each line goes (``print``, a logger, a rich console's ``print``).
        interval_s: the shortest gap between two lines (a tenth of the work always prints).
        clock: the time source (tests pass a fake one).
    """

    def __init__(self, label: str, log: Callable[[str], None], interval_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.log, self.interval_s, self.clock = label, log, interval_s, clock
        self._t0: float | None = None
        self._done0 = 0
        self._last_t = -float("inf")
        self._last_tenth = -1
        self._spoke = False

    def __call__(self, done: int, total: int | None) -> None:
        now = self.clock()
        if self._t0 is None:  # the first call marks the start: a resumed run starts mid-way
            self._t0, self._done0, self._last_t = now, done, now
            return
        if now - self._t0 < self.interval_s and not self._spoke:
            return  # a step shorter than the interval needs no progress line at all
        tenth = int(10 * done / total) if total else -1
        if done != total and now - self._last_t < self.interval_s and tenth == self._last_tenth:
            return
        self._last_t, self._last_tenth, self._spoke = now, tenth, True
        self.log(self.line(done, total, now))

    def line(self, done: int, total: int | None, now: float | None = None) -> str:
        """The progress line for ``done`` of ``total`` at time ``now``."""
        now = self.clock() if now is None else now
        elapsed = now - (self._t0 if self._t0 is not None else now)
        text = f"{self.label}: {done:,}" + (f"/{total:,} ({100 * done / total:.0f}%)" if total else "")
        text += f" · {fmt_duration(elapsed)} elapsed"
        measured = done - self._done0
        if total and measured > 0 and done < total:
            text += f" · ETA {fmt_duration(elapsed / measured * (total - done))}"
        return text
