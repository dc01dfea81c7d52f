# -*- test-case-name: tests.test_protocol, tests.test_workers -*-
"""
What a worker process tells its master, over a pipe: one JSON object per
line.

A worker says C{ready} once it has adopted its sockets and serves, C{counts}
every report interval (its request counters, which double as its
heartbeat), and C{failed} with one line of reason when it cannot start.
Nothing is sent per request.  The master closes the worker's standard input
to have it drain; before that it may write one C{drain} message there, with
the seconds the worker keeps idle keep-alive connections open for one more
request (long when the worker is being replaced and the listening socket
stays open, short on a stop).  Nothing here knows systemd.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from txsdnotify.web.stats import RequestStats

__all__ = [
    "CONTROL_FD",
    "LineDecoder",
    "countsMessage",
    "drainMessage",
    "encode",
    "idleGraceFrom",
    "statsFromMessage",
]

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
    "bytesSent",
    "connectionsOpened",
    "connectionsClosed",
)


def encode(kind: str, **fields: object) -> bytes:
    """
    One message: C{{"kind": kind, ...}} and a newline.
    """
    return json.dumps({"kind": kind, **fields}, separators=(",", ":")).encode() + b"\n"


def countsMessage(stats: RequestStats) -> bytes:
    """
    The C{counts} message for C{stats}.
    """
    return encode("counts", **{name: getattr(stats, name) for name in _COUNTERS})


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
    missing or not whole numbers are left as they were.
    """
    for name in _COUNTERS:
        value = message.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            setattr(into, name, value)


class LineDecoder:
    """
    Turns the bytes read from a worker's pipe into messages.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """
        The complete messages in what has arrived so far.  Lines that are
        not a JSON object with a C{kind}, or are too long, are skipped.
        """
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
        for line in lines:
            if len(line) > MAX_LINE:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and isinstance(message.get("kind"), str):
                yield message
