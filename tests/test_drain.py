"""
Tests for txsdnotify.drain with a fake clock: what a drain does to idle,
fresh, busy and stuck connections, without sleeping.
"""

from __future__ import annotations

from typing import Any

from inmemory import GET, Root, connect
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.server import Site

from txsdnotify.drain import Drain, DrainResult
from txsdnotify.tracking import TrackingFactory


def setUp() -> tuple[Root, TrackingFactory, Clock]:
    root = Root()
    return root, TrackingFactory(Site(root)), Clock()


def outcome(d: Deferred[DrainResult]) -> DrainResult:
    """
    What a drain that has ended ended with.
    """
    assert d.called
    result = d.result
    assert isinstance(result, DrainResult)
    return result


def lose(connection: Any) -> None:
    connection.connectionLost(Failure(ConnectionError("closed")))


def test_nothingToDrain() -> None:
    _, tracker, clock = setUp()
    result = Drain(tracker, clock=clock).start()
    assert result.called and outcome(result).aborted == 0


def test_idleKeepAliveClosedAtOnce() -> None:
    _, tracker, clock = setUp()
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"")
    done = Drain(tracker, clock=clock, grace=2).start()
    assert transport.disconnecting
    lose(connection)
    assert done.called and outcome(done).seconds == 0


def test_freshConnectionGetsGraceThenIsClosed() -> None:
    _, tracker, clock = setUp()
    connection, transport = connect(tracker)
    done = Drain(tracker, clock=clock, grace=2, timeout=30).start()
    clock.advance(1.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting
    lose(connection)
    assert outcome(done).seconds == 2.0


def test_requestDuringGraceIsServedWithClose() -> None:
    _, tracker, clock = setUp()
    connection, transport = connect(tracker)
    done = Drain(tracker, clock=clock, grace=2).start()
    clock.advance(1)
    connection.dataReceived(GET % b"")
    response = transport.value()
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert b"\r\nConnection: close\r\n" in response
    assert transport.disconnecting
    lose(connection)
    assert done.called


def test_requestInFlightFinishes() -> None:
    root, tracker, clock = setUp()
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"hold")
    done = Drain(tracker, clock=clock, timeout=30).start()
    clock.advance(10)
    assert not transport.disconnecting
    root.held[0].write(b"late")
    root.held[0].finish()
    assert b"Connection: close" in transport.value()
    assert transport.disconnecting
    lose(connection)
    assert outcome(done).aborted == 0 and outcome(done).seconds == 10


def test_timeoutAborts() -> None:
    _, tracker, clock = setUp()
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"hold")
    drain = Drain(tracker, clock=clock, timeout=5)
    done = drain.start()
    assert drain.remaining == 1 and drain.deadline == 5
    clock.advance(5)
    assert transport.disconnecting  # StringTransport's abortConnection
    lose(connection)
    assert outcome(done).aborted == 1 and outcome(done).seconds == 5


def test_lostConnectionNeverReportedStillEnds() -> None:
    _, tracker, clock = setUp()
    connection, _ = connect(tracker)
    connection.dataReceived(GET % b"hold")
    done = Drain(tracker, clock=clock, timeout=5).start()
    clock.advance(5)
    assert not done.called
    clock.advance(1)
    assert done.called and outcome(done).aborted == 1
