# -*- test-case-name: tests.test_stats -*-
"""
Request statistics of an HTTP server and the status line made from them.

Plain counters, bumped in O(1) by the request tracking on the hot path, and a
sampler that turns two readings into rates.  Nothing here knows systemd.
"""

from __future__ import annotations

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

__all__ = ["RequestStats", "StatusFigures", "StatusSampler", "formatBytes"]


class RequestStats:
    """
    Counters of one server, updated as requests and connections come and go.

    @ivar started: Requests whose request line has arrived.
    @ivar completed: Requests that finished or whose client went away.
    @ivar bytesSent: Response body bytes of the completed requests.
    @ivar connectionsOpened: Connections accepted.
    @ivar connectionsClosed: Connections closed.
    """

    __slots__ = (
        "started",
        "completed",
        "bytesSent",
        "connectionsOpened",
        "connectionsClosed",
    )

    def __init__(self) -> None:
        self.started = 0
        self.completed = 0
        self.bytesSent = 0
        self.connectionsOpened = 0
        self.connectionsClosed = 0

    def requestBegan(self) -> None:
        """
        A request has fully arrived and is being processed.  Every HTTP path
        counts through this method and L{requestEnded}, so that what they
        count stays the same.
        """
        self.started += 1

    def requestEnded(self, code: int, sent: int) -> None:
        """
        A request began with L{requestBegan} was answered with C{code}
        (C{sent} body bytes), or its client went away.
        """
        self.completed += 1
        self.bytesSent += sent

    @property
    def inFlight(self) -> int:
        """
        Requests begun and not yet completed.
        """
        return self.started - self.completed

    @property
    def openConnections(self) -> int:
        """
        Connections open now.
        """
        return self.connectionsOpened - self.connectionsClosed


@frozen
class StatusFigures:
    """
    What the status line shows: totals now and rates over the last interval.
    """

    total: int
    inFlight: int
    connections: int
    requestsPerSecond: float
    bytesPerSecond: float

    def format(self) -> str:
        """
        One line in the manner of Apache httpd's mod_systemd, e.g.
        C{Total requests: 12; In flight: 1; Connections: 3; Requests/sec: 4.5;
        Bytes served/sec: 12 kB}.
        """
        return (
            f"Total requests: {self.total}; In flight: {self.inFlight};"
            f" Connections: {self.connections};"
            f" Requests/sec: {_rate(self.requestsPerSecond)};"
            f" Bytes served/sec: {formatBytes(self.bytesPerSecond)}"
        )


def _rate(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def formatBytes(amount: float) -> str:
    """
    A byte count for people: C{512 B}, C{1.5 kB}, C{23 MB}.
    """
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            break
        amount /= 1000
    if unit == "B" or amount >= 100:
        return f"{amount:.0f} {unit}"
    return f"{amount:.1f} {unit}"


class StatusSampler:
    """
    Reads L{RequestStats} now and then and works out the rates since the
    previous reading.  Reading costs the same however many connections are
    open: it never walks them.
    """

    def __init__(self, stats: RequestStats, clock: IReactorTime) -> None:
        self.stats = stats
        self.clock = clock
        self._lastTime = clock.seconds()
        self._lastCompleted = stats.completed
        self._lastBytes = stats.bytesSent

    def sample(self) -> StatusFigures:
        """
        The figures now, with rates over the time since the last call (or
        since this sampler was made).
        """
        stats = self.stats
        now = self.clock.seconds()
        elapsed = now - self._lastTime
        completed = stats.completed
        sent = stats.bytesSent
        if elapsed > 0:
            requestRate = (completed - self._lastCompleted) / elapsed
            byteRate = (sent - self._lastBytes) / elapsed
        else:
            requestRate = byteRate = 0.0
        self._lastTime, self._lastCompleted, self._lastBytes = now, completed, sent
        return StatusFigures(
            total=completed,
            inFlight=stats.inFlight,
            connections=stats.openConnections,
            requestsPerSecond=requestRate,
            bytesPerSecond=byteRate,
        )
