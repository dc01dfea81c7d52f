# -*- test-case-name: tests.test_statusline -*-
"""
Keeping the status line (what C{systemctl status} shows) current.

While the service serves, L{StatusLine} samples the request figures every
interval and sends the line when it changed.  While it drains, it counts the
drain down every second and asks for the time the drain still needs
(C{EXTEND_TIMEOUT_USEC=}), so that a stop timeout shorter than the drain
does not cut it short.  It speaks only through the L{Lifecycle}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.web.stats import RequestStats, StatusFigures, StatusSampler

__all__ = [
    "DrainProgress",
    "EXIT_MARGIN",
    "Layout",
    "StatusLine",
    "defaultLayout",
    "shortNote",
]

# Seconds beyond the drain's deadline that a stop may take: aborting what is
# left and the process's own shutdown.
EXIT_MARGIN = 5.0


class DrainProgress(Protocol):
    """
    What the status line reads of a drain in progress.
    """

    @property
    def remaining(self) -> int:
        """
        Connections still open.
        """

    @property
    def deadline(self) -> float:
        """
        When what is left will be aborted.
        """


Figure = Callable[[], "str | None"]

Layout = Callable[[StatusFigures, "list[str]", "str | None"], str]
"""
Puts a status line together from the request figures, the extra figures'
texts and the note.
"""


def defaultLayout(figures: StatusFigures, extras: list[str], note: str | None) -> str:
    """
    The line of one process, in the manner of mod_systemd: the note, the
    request figures, then the extra figures.
    """
    text = "; ".join([figures.format(), *extras])
    return f"{note}; {text}" if note else text


def shortNote(note: str, limit: int = 60) -> str:
    """
    C{note} if it is short; else its head, cut at a C{": "} within C{limit}
    characters (C{Reload failed at 12:00:01: replacing the workers: twistd
    sdweb: ...} becomes C{Reload failed at 12:00:01: replacing the workers
    (see the log)}): the whole of it is in the log.
    """
    if len(note) <= limit:
        return note
    head = note[:limit]
    cut = head.rfind(": ")
    head = head[:cut] if cut > 0 else head
    return f"{head} (see the log)"


class StatusLine:
    """
    Sends the status line through a L{Lifecycle}.

    @ivar note: A sentence shown before the figures (e.g. a failed reload),
        or L{None}.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        stats: RequestStats,
        *,
        clock: IReactorTime,
        interval: float,
        layout: Layout = defaultLayout,
    ) -> None:
        """
        @param interval: Seconds between updates while serving; 0 sends
            none but those at the transitions.
        @param layout: How the parts make the line.
        """
        self.lifecycle = lifecycle
        self.stats = stats
        self.clock = clock
        self.interval = interval
        self.note: str | None = None
        self.layout = layout
        self._sampler = StatusSampler(stats, clock)
        self._last: str | None = None
        self._figures: list[Figure] = []
        self._drain: DrainProgress | None = None
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def addFigure(self, figure: Figure) -> None:
        """
        Append what C{figure()} returns to the line, when it returns text
        (e.g. C{"Waiting for a thread: 4"} while a pool is saturated).
        """
        self._figures.append(figure)

    def current(self) -> str:
        """
        The line now: the note, the request figures and the extra ones.
        Resets the rates' interval.
        """
        extras = [text for text in (figure() for figure in self._figures) if text]
        text = self.layout(self._sampler.sample(), extras, self.note)
        self._last = text
        return text

    def serving(self) -> None:
        """
        Update every interval while the service serves.
        """
        self._stopLoop()
        if self.interval > 0:
            self._loop.start(self.interval, now=False)

    def draining(self, drain: DrainProgress) -> None:
        """
        Count C{drain} down every second.
        """
        self._stopLoop()
        self._drain = drain
        self._loop.start(1.0, now=False)

    def stop(self) -> None:
        """
        No more updates.
        """
        self._stopLoop()

    def extendUsec(self, seconds: float) -> int:
        """
        The C{EXTEND_TIMEOUT_USEC=} for C{seconds} more, plus the exit margin.
        """
        return int((max(0.0, seconds) + EXIT_MARGIN) * 1_000_000)

    def drainText(self, drain: DrainProgress) -> str:
        """
        The line while draining.
        """
        stats = self.stats
        left = max(0.0, drain.deadline - self.clock.seconds())
        return (
            f"Stopping: draining {drain.remaining} connection(s),"
            f" {stats.inFlight} request(s) in flight, {left:.0f}s left;"
            f" Total requests: {stats.completed}"
        )

    def _stopLoop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        lifecycle = self.lifecycle
        if not lifecycle.notifier.enabled:
            return
        state = lifecycle.state
        drain = self._drain
        if state is State.FORCED:
            # "Stopping now" is the last word before "Stopped": no countdown,
            # no more time asked for.
            self._stopLoop()
            return
        if drain is not None and state is State.DRAINING:
            left = drain.deadline - self.clock.seconds()
            lifecycle.status(self.drainText(drain), self.extendUsec(left))
            return
        if state is not State.READY:
            return
        previous = self._last
        text = self.current()
        if text != previous:
            lifecycle.status(text)
