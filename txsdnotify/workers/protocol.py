# -*- test-case-name: tests.test_protocol, tests.test_workers -*-
"""
What a worker process tells its master, over a pipe: one JSON object per
line.

A worker says C{ready} once it has adopted its sockets and serves, C{counts}
every report interval (its request counters, which double as its
heartbeat, and its gauges: open connections by kind, WSGI threads), and
C{failed} with one line of reason when it cannot start.  Nothing is sent per
request.  Nothing here knows systemd.

The master writes to a worker's standard input: C{report} asks for its
C{counts} at once (before a scrape), C{metrics} answers a worker's
C{metrics} question (a scrape on the worker's own ports) with the text the
master made from every worker's figures, and one C{drain} message before it
closes the worker's standard input to have it drain, with the seconds the
worker keeps idle keep-alive connections open for one more request (long
when the worker is being replaced and the listening socket stays open,
short on a stop).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator, Mapping
from typing import Any

from txsdnotify.web.stats import RequestStats

__all__ = [
    "FORCE_SIGNAL",
    "CONTROL_FD",
    "LineDecoder",
    "countsMessage",
    "drainMessage",
    "encode",
    "gaugesFromMessage",
    "idleGraceFrom",
    "statsFromMessage",
]

FORCE_SIGNAL = signal.SIGUSR2
"""
What the master sends a worker whose standard input it has closed already
(it is draining) to have it abort what is left: a forced stop.
"""

CONTROL_FD = 3
"""
The descriptor a worker writes its messages to.
"""

MAX_LINE = 16 * 1024
"""
The longest line a master accepts; a longer one is dropped.
"""

_COUNTERS = (
    "started",
    "completed",
    "aborted",
    "bytesSent",
    "connectionsOpened",
    "connectionsClosed",
    "aborted",
)


def encode(kind: str, **fields: object) -> bytes:
    """
    One message: C{{"kind": kind, ...}} and a newline.
    """
    return json.dumps({"kind": kind, **fields}, separators=(",", ":")).encode() + b"\n"


def countsMessage(
    stats: RequestStats, gauges: Mapping[str, int] | None = None
) -> bytes:
    """
    The C{counts} message for C{stats}, with C{gauges} (figures of now,
    such as open connections by kind) if given.
    """
    fields: dict[str, object] = {name: getattr(stats, name) for name in _COUNTERS}
    fields["byCode"] = {str(code): n for code, n in enumerate(stats.byCode) if n}
    fields["durations"] = stats.durations
    fields["durationSum"] = stats.durationSum
    if gauges:
        fields["gauges"] = dict(gauges)
    return encode("counts", **fields)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def drainMessage(idleGrace: float) -> bytes:
    """
    The C{drain} message: keep idle keep-alive connections open
    C{idleGrace} seconds for one more request.
    """
    return encode("drain", idleGrace=idleGrace)


def idleGraceFrom(message: dict[str, Any]) -> float | None:
    """
    The idle grace of a C{drain} message; L{None} if it is not one, or its
    value is not a number of seconds >= 0.
    """
    if message.get("kind") != "drain":
        return None
    value = message.get("idleGrace")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not 0 <= value < float("inf"):
        return None
    return float(value)


def statsFromMessage(message: dict[str, Any], into: RequestStats) -> None:
    """
    Copy the counters of a C{counts} message into C{into}; fields that are
    missing or not whole numbers (lists of them, of the right length) are
    left as they were.
    """
    for name in _COUNTERS:
        value = message.get(name)
        if _count(value):
            setattr(into, name, value)
    byCode = message.get("byCode")
    if isinstance(byCode, dict):
        codes = [0] * len(into.byCode)
        for code, count in byCode.items():
            if not (isinstance(code, str) and code.isdigit() and _count(count)):
                break
            if int(code) >= len(codes):
                break
            codes[int(code)] = count
        else:
            into.byCode[:] = codes
    values = message.get("durations")
    if (
        isinstance(values, list)
        and len(values) == len(into.durations)
        and all(_count(v) for v in values)
    ):
        into.durations[:] = values
    seconds = message.get("durationSum")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        if seconds >= 0:
            into.durationSum = float(seconds)


def gaugesFromMessage(message: dict[str, Any]) -> dict[str, int]:
    """
    The gauges of a C{counts} message: names with whole numbers >= 0.
    """
    gauges = message.get("gauges")
    if not isinstance(gauges, dict):
        return {}
    return {k: v for k, v in gauges.items() if isinstance(k, str) and _count(v)}


class LineDecoder:
    """
    Turns the bytes read from a worker's pipe into messages.
    """

    def __init__(self, maxLine: int = MAX_LINE) -> None:
        """
        @param maxLine: The longest line accepted; a longer one is dropped.
        """
        self._buffer = b""
        self._maxLine = maxLine

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """
        The complete messages in what has arrived so far.  Lines that are
        not a JSON object with a C{kind}, or are too long, are skipped.
        """
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > self._maxLine:
            self._buffer = b""
        for line in lines:
            if len(line) > self._maxLine:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and isinstance(message.get("kind"), str):
                yield message
