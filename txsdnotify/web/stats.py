# -*- test-case-name: tests.test_stats -*-
"""
Request statistics of an HTTP server and the status line made from them.

Plain counters, bumped in O(1) by the request tracking on the hot path, and a
sampler that turns two readings into rates.  Nothing here knows systemd.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

__all__ = [
    "DURATION_BUCKETS",
    "RequestStats",
    "StatusFigures",
    "StatusSampler",
    "formatBytes",
]

DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""
The upper bounds (seconds, inclusive) of the request duration histogram's
buckets; a last bucket takes what is longer.
"""

CODES = 1000
"""
The length of L{RequestStats.byCode}: one count per status code 1 to 999;
index 0 counts any other.
"""

FIRST_BUCKET = DURATION_BUCKETS[0]


class RequestStats:
    """
    Counters of one server, updated as requests and connections come and go.

    @ivar started: Requests whose request line has arrived.
    @ivar completed: Requests whose response was sent (finished, or handed
        over to another protocol such as a WebSocket).
    @ivar aborted: Requests whose connection closed before their response
        was finished (aborted by a drain, or the client went away).
    @ivar bytesSent: Response body bytes of the completed and aborted
        requests.
    @ivar connectionsOpened: Connections accepted.
    @ivar connectionsClosed: Connections closed.
    @ivar byCode: The completed requests by status code: C{byCode[404]}
        counts the 404 responses, C{byCode[0]} codes of 1000 and more.
    @ivar durations: The completed requests by duration (from the moment
        the request was received to its response finishing), one count per
        bucket of L{DURATION_BUCKETS} and a last one for longer requests;
        not cumulative.
    @ivar durationSum: The seconds the completed requests took, summed.

    The lists are changed in place, never replaced: the request tracking
    holds on to them.
    """

    __slots__ = (
        "started",
        "completed",
        "bytesSent",
        "connectionsOpened",
        "connectionsClosed",
        "aborted",
        "byCode",
        "durations",
        "durationSum",
    )

    def __init__(self) -> None:
        self.started = 0
        self.completed = 0
        self.bytesSent = 0
        self.connectionsOpened = 0
        self.connectionsClosed = 0
        self.aborted = 0
        self.byCode = [0] * CODES
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)
        self.durationSum = 0.0

    def responseSent(self, code: int, seconds: float, length: int) -> None:
        """
        A request's response was sent: count it, its status code, its
        duration and its body's length.  O(1), allocates nothing but floats
        (and ints past 256, as any counter).  The request tracking writes
        the same lines out in its C{finish} rather than call this (a call
        costs as much as the counting); other paths call it.

        @param code: Its status code.
        @param seconds: How long it took.
        @param length: The bytes of its body.
        """
        self.completed += 1
        self.bytesSent += length
        try:
            self.byCode[code] += 1
        except IndexError:
            self.byCode[0] += 1
        self.durations[
            0 if seconds <= FIRST_BUCKET else bisect_left(DURATION_BUCKETS, seconds)
        ] += 1
        self.durationSum += seconds

    def responseAborted(self, length: int) -> None:
        """
        A request's connection closed before its response was finished.

        @param length: The bytes of its body sent before.
        """
        self.aborted += 1
        self.bytesSent += length

    def add(self, other: RequestStats) -> None:
        """
        Add C{other}'s counts to these.
        """
        self.started += other.started
        self.completed += other.completed
        self.bytesSent += other.bytesSent
        self.connectionsOpened += other.connectionsOpened
        self.connectionsClosed += other.connectionsClosed
        self.aborted += other.aborted
        byCode = self.byCode
        for i, count in enumerate(other.byCode):
            if count:
                byCode[i] += count
        for i, count in enumerate(other.durations):
            self.durations[i] += count
        self.durationSum += other.durationSum

    def setToSum(self, parts: Iterable[RequestStats]) -> None:
        """
        Make these counts the sum of C{parts}' (in place: readers keep
        reading this object).
        """
        total = RequestStats()
        for part in parts:
            total.add(part)
        for name in self.__slots__:
            value = getattr(total, name)
            if isinstance(value, list):
                getattr(self, name)[:] = value
            else:
                setattr(self, name, value)

    def requestBegan(self) -> None:
        """
        A request has fully arrived and is being processed.  Every HTTP path
        counts through this method and L{responseSent} or L{responseAborted},
        so that what they count stays the same, except the request tracking
        of twisted.web sites, which writes their lines out (a call costs as
        much as the counting).
        """
        self.started += 1

    @property
    def inFlight(self) -> int:
        """
        Requests begun and neither completed nor aborted.
        """
        return self.started - self.completed - self.aborted

    @property
    def served(self) -> int:
        """
        Requests served: the completed ones (the aborted are counted apart,
        in L{aborted}).
        """
        return self.completed

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

    def short(self) -> str:
        """
        The same figures, shorter (for a line that leads with something
        else): C{1,234 req; 52.3 req/s; 3 in flight; 17 conn; 1.2 MB/s}.
        """
        return (
            f"{self.total:,} req; {_rate(self.requestsPerSecond)} req/s;"
            f" {self.inFlight} in flight; {self.connections} conn;"
            f" {formatBytes(self.bytesPerSecond)}/s"
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
