"""
Tests for txsdnotify.workers.protocol: the lines a worker and its master
exchange, encoded and decoded in-process.
"""

from __future__ import annotations

import json

from txsdnotify.web.stats import RequestStats
from txsdnotify.workers.protocol import (
    CONTROL_FD,
    MAX_LINE,
    LineDecoder,
    countsMessage,
    drainMessage,
    encode,
    idleGraceFrom,
    statsFromMessage,
)


def test_lineProtocol() -> None:
    stats = RequestStats()
    stats.started, stats.completed, stats.bytesSent = 3, 2, 100
    data = encode("ready", pid=7) + countsMessage(stats) + b"junk\n" + b'{"kind"'
    decoder = LineDecoder()
    messages = list(decoder.feed(data))
    assert [m["kind"] for m in messages] == ["ready", "counts"]
    into = RequestStats()
    statsFromMessage(messages[1], into)
    assert (into.started, into.completed, into.bytesSent) == (3, 2, 100)
    assert [m["kind"] for m in decoder.feed(b':"x"}\n')] == ["x"]
    [drain] = LineDecoder().feed(drainMessage(15.0))
    assert idleGraceFrom(drain) == 15.0
    assert idleGraceFrom({"kind": "drain", "idleGrace": 0}) == 0.0
    for wrong in (
        {"kind": "counts", "idleGrace": 1},
        {"kind": "ready", "idleGrace": 1},
        {"kind": "drain"},
        {"kind": "drain", "idleGrace": "1"},
        {"kind": "drain", "idleGrace": True},
        {"kind": "drain", "idleGrace": -1},
        {"kind": "drain", "idleGrace": float("inf")},
    ):
        assert idleGraceFrom(wrong) is None, wrong


def test_encode() -> None:
    assert encode("ready", pid=7) == b'{"kind":"ready","pid":7}\n'
    stats = RequestStats()
    stats.started, stats.completed, stats.bytesSent = 3, 2, 100
    stats.connectionsOpened, stats.connectionsClosed = 5, 4
    assert json.loads(countsMessage(stats)) == {
        "kind": "counts",
        "started": 3,
        "completed": 2,
        "bytesSent": 100,
        "connectionsOpened": 5,
        "connectionsClosed": 4,
        "aborted": 0,
        "byCode": {},
        "durations": [0] * len(stats.durations),
        "durationSum": 0.0,
    }
    assert drainMessage(1.5) == b'{"kind":"drain","idleGrace":1.5}\n'


def test_countsOnlyWholeNumbers() -> None:
    into = RequestStats()
    into.started = into.completed = into.bytesSent = 9
    into.connectionsOpened = into.connectionsClosed = 9
    statsFromMessage(
        {
            "kind": "counts",
            "started": -1,
            "completed": True,
            "bytesSent": "5",
            "connectionsOpened": 0,
        },
        into,
    )
    assert (into.started, into.completed, into.bytesSent) == (9, 9, 9)
    assert (into.connectionsOpened, into.connectionsClosed) == (0, 9)


def test_tooLongLinesSkipped() -> None:
    decoder = LineDecoder()
    padding = "x" * (MAX_LINE - 40)
    fits = json.dumps({"kind": "a", "p": padding}).encode()
    assert len(fits) <= MAX_LINE
    long = json.dumps({"kind": "b", "p": padding + "y" * 100}).encode()
    assert len(long) > MAX_LINE
    assert [m["kind"] for m in decoder.feed(fits + b"\n" + long + b"\n")] == ["a"]
    # A line too long is dropped while it arrives, not kept for ever.
    assert list(decoder.feed(long)) == []
    assert list(decoder.feed(b'\n{"kind":"c"}\n')) == [{"kind": "c"}]
    decoder = LineDecoder()
    assert list(decoder.feed(fits)) == []
    assert [m["kind"] for m in decoder.feed(b"\n")] == ["a"]
    # A too-long line does not hide the ones after it.
    assert [m["kind"] for m in LineDecoder().feed(long + b"\n" + fits + b"\n")] == ["a"]


def test_lineLengthLimitExactly() -> None:
    assert MAX_LINE == 16 * 1024 and CONTROL_FD == 3

    def line(length: int) -> bytes:
        head = b'{"kind":"a","p":"'
        data = head + b"x" * (length - len(head) - 2) + b'"}'
        assert len(data) == length
        return data

    # A whole line of MAX_LINE bytes is read; one byte more is not.
    assert list(LineDecoder().feed(line(MAX_LINE) + b"\n")) == [
        {"kind": "a", "p": "x" * (MAX_LINE - 19)}
    ]
    assert list(LineDecoder().feed(line(MAX_LINE + 1) + b"\n")) == []
    # The same when it arrives in pieces.
    decoder = LineDecoder()
    assert list(decoder.feed(line(MAX_LINE))) == []
    assert len(list(decoder.feed(b"\n"))) == 1
    decoder = LineDecoder()
    assert list(decoder.feed(line(MAX_LINE + 2))) == []
    assert list(decoder.feed(b"\n")) == []
    # What was too long is dropped as soon as it is: the rest of its line
    # is read as a line of its own.
    decoder = LineDecoder()
    assert list(decoder.feed(b"x" * (MAX_LINE + 1))) == []
    assert list(decoder.feed(b'{"kind":"tail"}\n')) == [{"kind": "tail"}]


def test_notMessages() -> None:
    decoder = LineDecoder()
    data = b'[1]\n"s"\n{"kind": 3}\n{"no": "kind"}\n\n{"kind":"ok"}\n'
    assert list(decoder.feed(data)) == [{"kind": "ok"}]
