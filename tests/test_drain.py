"""
Tests for txsdnotify.web.drain with a fake clock: what a drain does to idle,
fresh, busy and stuck connections, without sleeping.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection as H2Client
from inmemory import GET, PEER, POST, InlineReactor, Root, connect, fastTracker
from test_tls import makeCertificate
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection
from twisted.web.server import Site

from txsdnotify.web.drain import Arrival, Drain, DrainResult, arrival
from txsdnotify.web.tracking import TrackingFactory, channelOf


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


def served(httpParser: str) -> tuple[TrackingFactory, Clock]:
    """
    A tracker whose connections are twisted.web's or the fast HTTP/1.1
    path's (C{httpParser}), both answering C{ok}, and the clock of its drain.
    """
    if httpParser == "twisted":
        _, tracker, clock = setUp()
        return tracker, clock
    fast = InlineReactor()
    return fastTracker(fast), fast


def test_idleKeepAliveClosedAtOnce(httpParser: str) -> None:
    tracker, clock = served(httpParser)
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"")
    done = Drain(tracker, clock=clock, grace=2).start()
    assert transport.disconnecting
    lose(connection)
    assert done.called and outcome(done).seconds == 0


def test_idleKeepAliveKeptForTheIdleGrace(httpParser: str) -> None:
    """
    With an idle grace, an idle keep-alive connection stays open that long
    for one more request, answered with C{Connection: close}: a client that
    sends it just as the drain begins loses nothing.
    """
    tracker, clock = served(httpParser)
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"")
    answered = len(transport.value())
    done = Drain(tracker, clock=clock, grace=2, idleGrace=1).start()
    assert not transport.disconnecting
    clock.advance(0.5)
    assert not transport.disconnecting
    connection.dataReceived(GET % b"")
    response = transport.value()[answered:]
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert b"\r\nConnection: close\r\n" in response
    assert response.endswith(b"\r\n\r\nok")
    assert transport.disconnecting
    lose(connection)
    assert outcome(done).seconds == 0.5


@pytest.mark.parametrize("idleGrace", [1, 5])
def test_idleKeepAliveClosedWhenTheIdleGraceEnds(
    httpParser: str, idleGrace: float
) -> None:
    """
    An idle keep-alive connection is closed when the idle grace ends, a
    connection with no request yet when the grace (2 s) ends: the end of
    the one, shorter or longer, leaves the other open.
    """
    tracker, clock = served(httpParser)
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"")
    fresh, freshTransport = connect(tracker)
    done = Drain(tracker, clock=clock, grace=2, idleGrace=idleGrace, timeout=30).start()
    ends = [(idleGrace, connection, transport), (2, fresh, freshTransport)]
    for at, each, itsTransport in sorted(ends, key=lambda end: end[0]):
        clock.advance(at - 0.1 - clock.seconds())
        assert not itsTransport.disconnecting
        clock.advance(at - clock.seconds())
        assert itsTransport.disconnecting
        lose(each)
    assert outcome(done).seconds == max(2, idleGrace)


@pytest.mark.parametrize("part", [b"G", b"GET / HTTP/1.1\r\n"])
def test_idleGraceSparesARequestHalfReceived(httpParser: str, part: bytes) -> None:
    """
    A request that began to arrive on an idle keep-alive connection (its
    first byte, or its request line) is not dropped when the idle grace
    ends: once its bytes are read, it is answered (or aborted at the
    timeout).
    """
    tracker, clock = served(httpParser)
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"")
    answered = len(transport.value())
    done = Drain(tracker, clock=clock, grace=5, idleGrace=1, timeout=30).start()
    request = GET % b""
    connection.dataReceived(part)
    clock.advance(1)
    assert not transport.disconnecting
    connection.dataReceived(request[len(part) :])
    assert b"Connection: close" in transport.value()[answered:]
    assert transport.disconnecting
    lose(connection)
    assert outcome(done).aborted == 0


def test_idleGraceNoLongerThanTheTimeout(httpParser: str) -> None:
    tracker, clock = served(httpParser)
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"")
    before = set(clock.getDelayedCalls())
    Drain(tracker, clock=clock, idleGrace=10, timeout=3).start()
    drains = [c for c in clock.getDelayedCalls() if c not in before]
    assert sorted(c.getTime() for c in drains) == [3, 3]


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
    # The request in flight was aborted: counted, but not served.
    stats = tracker.stats
    assert (stats.completed, stats.aborted, stats.served) == (0, 1, 0)


def test_lostConnectionNeverReportedStillEnds() -> None:
    _, tracker, clock = setUp()
    connection, _ = connect(tracker)
    connection.dataReceived(GET % b"hold")
    done = Drain(tracker, clock=clock, timeout=5).start()
    clock.advance(5)
    assert not done.called
    clock.advance(1)
    assert done.called and outcome(done).aborted == 1


def test_forceAbortsWhatIsLeftAtOnce() -> None:
    root, tracker, clock = setUp()
    clock.advance(100)
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"hold")
    logged: list[dict[str, Any]] = []
    drain = Drain(tracker, clock=clock, timeout=30)
    drain.log = Logger(observer=cast(ILogObserver, logged.append))
    drain.force()  # not started: nothing to force
    assert not drain.forced
    done = drain.start()
    assert drain.deadline == 130 and drain.done is False
    clock.advance(2)
    drain.force()
    assert drain.forced and transport.disconnected  # aborted, not closed
    assert clock.getDelayedCalls() != []  # waiting for the loss
    drain.force()  # twice is once
    assert [e["why"] for e in logged] == ["Stop forced"]
    lose(connection)
    assert done.result == DrainResult(seconds=2, aborted=1, forced=True)
    assert drain.done is True
    assert clock.getDelayedCalls() == []
    assert tracker.drain is None


def test_forceAfterTheEndDoesNothing() -> None:
    _, tracker, clock = setUp()
    drain = Drain(tracker, clock=clock)
    done = drain.start()
    assert drain.done
    drain.force()
    assert not drain.forced
    assert done.result == DrainResult(seconds=0, aborted=0, forced=False)


def test_forceWithNothingReportedLost() -> None:
    _, tracker, clock = setUp()
    connection, _ = connect(tracker)
    connection.dataReceived(GET % b"hold")
    drain = Drain(tracker, clock=clock, timeout=30)
    done = drain.start()
    drain.force()
    clock.advance(0.9)
    assert not done.called
    clock.advance(0.1)
    assert done.result == DrainResult(seconds=1, aborted=1, forced=True)


def test_hooksToldTheSecondsLeft() -> None:
    """
    Every hook hears the timeout when the drain begins; a failing one is
    logged and changes nothing.
    """
    _, tracker, clock = setUp()
    told: list[float] = []
    logged: list[dict[str, Any]] = []

    def broken(seconds: float) -> None:
        raise RuntimeError("hook broke")

    drain = Drain(tracker, clock=clock, timeout=12, hooks=[broken, told.append])
    drain.log = Logger(observer=cast(ILogObserver, logged.append))
    connect(tracker)
    done = drain.start()
    assert told == [12]
    [event] = [e for e in logged if "log_failure" in e]
    assert event["log_failure"].check(RuntimeError)
    assert event["hook"] is broken
    assert not done.called


def test_pipelinedRequestsServedBeforeClosing() -> None:
    """
    Requests pipelined behind the one in flight are all answered; only the
    last answer closes the connection.
    """
    root, tracker, clock = setUp()
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"hold" + GET % b"" + GET % b"")
    done = Drain(tracker, clock=clock, timeout=30).start()
    root.held[0].finish()
    response = transport.value()
    assert response.count(b"HTTP/1.1 200 OK") == 3
    assert response.count(b"Connection: close") == 1
    assert response.rindex(b"Connection: close") > response.rindex(b"200 OK")
    assert transport.disconnecting
    lose(connection)
    assert outcome(done).aborted == 0


def test_requestArrivingWithMorePipelined() -> None:
    """
    A request that arrives during the drain with more behind it does not
    close its connection; the last one does.
    """
    root, tracker, clock = setUp()
    connection, transport = connect(tracker)
    Drain(tracker, clock=clock, grace=2).start()
    connection.dataReceived(GET % b"hold" + GET % b"")
    root.held[0].finish()
    response = transport.value()
    assert response.count(b"HTTP/1.1 200 OK") == 2
    assert response.count(b"Connection: close") == 1
    assert transport.disconnecting


def test_responseAlreadyStartedKeepsItsHeaders() -> None:
    """
    A response whose headers went out before the drain cannot say
    Connection: close; its connection closes after it all the same.
    """
    root, tracker, clock = setUp()
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"hold")
    root.held[0].write(b"early")
    Drain(tracker, clock=clock).start()
    root.held[0].finish()
    assert b"Connection: close" not in transport.value()
    assert transport.disconnecting


def test_partialRequestGetsTheGrace() -> None:
    _, tracker, clock = setUp()
    connection, transport = connect(tracker)
    connection.dataReceived(b"GET / HTTP/1.1\r\nHost:")
    done = Drain(tracker, clock=clock, grace=2, timeout=30).start()
    clock.advance(1)
    assert not transport.disconnecting
    connection.dataReceived(b" x\r\n\r\n")
    assert b"Connection: close" in transport.value()
    assert transport.disconnecting and not transport.disconnected
    lose(connection)
    assert done.result == DrainResult(seconds=1, aborted=0)


def test_graceEndsLeavingBusyConnections() -> None:
    """
    At the end of the grace, only the connections with nothing in flight
    are closed.
    """
    root, tracker, clock = setUp()
    fresh, freshTransport = connect(tracker)
    busy, busyTransport = connect(tracker)
    busy.dataReceived(GET % b"hold")
    done = Drain(tracker, clock=clock, grace=2, timeout=30).start()
    clock.advance(2)
    assert freshTransport.disconnecting and not freshTransport.disconnected
    assert not busyTransport.disconnecting
    lose(fresh)
    assert not done.called
    clock.advance(28)
    assert busyTransport.disconnected
    lose(busy)
    assert done.result == DrainResult(seconds=30, aborted=1)


def test_graceLongerThanTheTimeout() -> None:
    """
    The grace never outlasts the timeout: a fresh connection is closed (not
    aborted) when the timeout comes first.
    """
    _, tracker, clock = setUp()
    connection, transport = connect(tracker)
    transport.loseConnection = lambda: lose(connection)  # type: ignore[method-assign]
    done = Drain(tracker, clock=clock, grace=10, timeout=3).start()
    clock.advance(3)
    assert done.result == DrainResult(seconds=3, aborted=0)
    assert clock.getDelayedCalls() == []


def test_timeoutIsLogged() -> None:
    """
    What the timeout aborts is logged, one line per kind with its count.
    """
    _, tracker, clock = setUp()
    for _ in range(2):
        connection, _ = connect(tracker)
        connection.dataReceived(GET % b"hold")
    upload, _ = connect(tracker)
    upload.dataReceived(POST % 100 + b"x")
    logged: list[dict[str, Any]] = []
    drain = Drain(tracker, clock=clock, timeout=5, grace=10)
    drain.log = Logger(observer=cast(ILogObserver, logged.append))
    drain.start()
    clock.advance(5)
    assert [(e["why"], e["count"], e["kind"]) for e in logged] == [
        ("Drain timeout (5s) passed", 1, "with a request body still arriving"),
        ("Drain timeout (5s) passed", 2, "with a request in flight"),
    ]
    assert drain.aborted == 3


def test_defaults() -> None:
    _, tracker, clock = setUp()
    drain = Drain(tracker, clock=clock)
    assert (drain.timeout, drain.grace, drain.hooks) == (30.0, 2.0, [])
    assert drain.idleGrace == 0
    assert not drain.forced


def test_noGraceTimerWithoutFreshConnections() -> None:
    """
    Busy and idle connections need no grace: only the timeout is set.
    """
    root, tracker, clock = setUp()
    busy, _ = connect(tracker)
    busy.dataReceived(GET % b"hold")
    idle, _ = connect(tracker)
    idle.dataReceived(GET % b"")
    Drain(tracker, clock=clock, timeout=30).start()
    assert [c.getTime() for c in clock.getDelayedCalls()] == [30]


def test_upgradedConnectionsLeftToTheHooks() -> None:
    """
    A connection that switched protocols (a WebSocket) is neither closed
    nor given a grace: the drain hooks end it, or the timeout aborts it
    through the transport it now runs over.
    """
    _, tracker, clock = setUp()
    connection, transport = connect(tracker)
    tracker.upgraded[connection] = transport
    done = Drain(tracker, clock=clock, grace=2, timeout=10).start()
    assert [c.getTime() for c in clock.getDelayedCalls()] == [10]
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnected
    lose(connection)
    assert done.result == DrainResult(seconds=10, aborted=1)


def test_upgradedConnectionKeptThroughTheGrace() -> None:
    _, tracker, clock = setUp()
    fresh, freshTransport = connect(tracker)
    upgraded, upgradedTransport = connect(tracker)
    tracker.upgraded[upgraded] = upgradedTransport
    Drain(tracker, clock=clock, grace=2, timeout=10).start()
    clock.advance(2)
    assert freshTransport.disconnecting
    assert not upgradedTransport.disconnecting


def test_channelWithoutLoseConnection() -> None:
    """
    A connection whose protocol cannot close itself (HTTP/2's has no
    loseConnection) is closed through its transport.
    """
    _, tracker, clock = setUp()
    protocol = Protocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    tracker.connections.add(protocol)
    Drain(tracker, clock=clock, grace=2).start()
    clock.advance(2)
    assert transport.disconnecting and not transport.disconnected


def test_http2ConnectionGetsNoGrace() -> None:
    """
    An HTTP/2 connection with nothing in flight is told GOAWAY and closed at
    once: it never waits for the grace that fresh HTTP/1.1 connections get.
    """
    _, tracker, clock = setUp()
    connection, transport = connect(tracker)
    transport.unregisterProducer()
    h2 = H2Connection(reactor=clock)
    # What H2Connection is given by the HTTP factory, untyped in Twisted.
    h2.site = tracker.site  # type: ignore[assignment]
    h2.callLater = clock.callLater  # type: ignore[method-assign,assignment]
    transport.registerProducer(h2, True)
    h2.makeConnection(transport)
    client = H2Client(H2Configuration(client_side=True))
    client.initiate_connection()
    h2.dataReceived(client.data_to_send())
    connection._channel = h2
    Drain(tracker, clock=clock, grace=2, timeout=30).start()
    assert transport.disconnecting
    # (HTTP/2's own calls are due now; the drain's: only the timeout.)
    assert [c.getTime() for c in clock.getDelayedCalls() if c.getTime() > 0] == [30]


def loggingSite(tracker: TrackingFactory) -> io.StringIO:
    """
    Have the tracked site write its access log to memory.
    """
    log = io.StringIO()
    tracker.site._logFile = log
    return log


def test_arrivalReadsTwistedParserState() -> None:
    """
    How far a request has arrived, read from Twisted's HTTP/1 parser (its
    C{requests}, C{_handlingRequest} and C{line_mode}): this fails if
    Twisted changes them.
    """
    root, tracker, clock = setUp()
    connection, _ = connect(tracker)
    channel = channelOf(connection)
    assert arrival(channel) is Arrival.NOTHING
    connection.dataReceived(b"GET / HT")
    assert arrival(channel) is Arrival.NOTHING
    connection.dataReceived(b"TP/1.1\r\nHost: x\r\n")
    assert arrival(channel) is Arrival.HEAD
    assert channel._command == b"GET" and channel._path == b"/"
    assert channel._version == b"HTTP/1.1"
    connection.dataReceived(b"\r\n")
    assert arrival(channel) is Arrival.NOTHING  # answered at once
    connection.dataReceived(POST % 10 + b"12345")
    assert arrival(channel) is Arrival.BODY
    connection.dataReceived(b"67890")
    assert arrival(channel) is Arrival.NOTHING
    connection.dataReceived(GET % b"hold")
    assert arrival(channel) is Arrival.PROCESSING
    root.held[0].finish()
    assert arrival(channel) is Arrival.NOTHING


def test_uploadKeepsTheWholeTimeout() -> None:
    """
    A request whose body is still arriving when the drain begins is in
    flight: while its bytes keep coming it outlasts the grace many times
    over, then gets its answer, with Connection: close.
    """
    _, tracker, clock = setUp()
    connection, transport = connect(tracker)
    connection.dataReceived(POST % 20 + b"x")
    done = Drain(tracker, clock=clock, grace=2, timeout=30).start()
    for _ in range(19):
        clock.advance(1.5)
        assert not transport.disconnecting
        connection.dataReceived(b"x")
    response = transport.value()
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert b"\r\nConnection: close\r\n" in response
    assert response.endswith(b"got 20")
    assert transport.disconnecting and not transport.disconnected
    lose(connection)
    assert done.result == DrainResult(seconds=28.5, aborted=0)
    assert (tracker.stats.completed, tracker.stats.aborted) == (1, 0)


def test_stalledUploadCut() -> None:
    """
    A request body that stops arriving is cut once no byte has come for the
    grace: aborted, logged, counted and in the access log as 499.
    """
    _, tracker, clock = setUp()
    access = loggingSite(tracker)
    connection, transport = connect(tracker)
    connection.dataReceived(POST % 100 + b"x")
    logged: list[dict[str, Any]] = []
    drain = Drain(tracker, clock=clock, grace=2, timeout=30)
    drain.log = Logger(observer=cast(ILogObserver, logged.append))
    done = drain.start()
    clock.advance(1.5)
    connection.dataReceived(b"x")  # still coming at the end of the grace
    clock.advance(0.5)
    assert not transport.disconnecting
    clock.advance(1.4)
    assert not transport.disconnecting
    clock.advance(0.1)  # 2 s since its last byte
    assert transport.disconnected  # aborted
    [event] = logged
    assert event["count"] == 1 and event["kind"] == "with a request body still arriving"
    assert "No request bytes for the grace (2s)" == event["why"]
    lose(connection)
    assert done.result == DrainResult(seconds=3.5, aborted=1)
    assert (tracker.stats.started, tracker.stats.aborted) == (1, 1)
    assert tracker.stats.completed == 0 and tracker.stats.inFlight == 0
    [line] = access.getvalue().splitlines()
    assert '"POST /upload HTTP/1.1" 499 -' in line


def test_uploadCutAtTheTimeout() -> None:
    """
    An upload still arriving at the timeout is aborted with the rest,
    logged and counted.
    """
    _, tracker, clock = setUp()
    access = loggingSite(tracker)
    connection, transport = connect(tracker)
    connection.dataReceived(POST % 1000 + b"x")
    done = Drain(tracker, clock=clock, grace=2, timeout=5).start()
    for _ in range(4):
        clock.advance(1)
        connection.dataReceived(b"x")
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnected
    lose(connection)
    assert done.result == DrainResult(seconds=5, aborted=1)
    assert '"POST /upload HTTP/1.1" 499 -' in access.getvalue()
    assert tracker.stats.aborted == 1


def test_slowHeadersCutAtTheGrace() -> None:
    """
    Clients still sending their request head (slowloris) are cut at the
    end of the grace however steadily they trickle, and counted as
    aborted; one that sent nothing is closed, not counted.
    """
    _, tracker, clock = setUp()
    slow = [connect(tracker) for _ in range(5)]
    for connection, _ in slow:
        connection.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
    silent, silentTransport = connect(tracker)
    logged: list[dict[str, Any]] = []
    drain = Drain(tracker, clock=clock, grace=2, timeout=30)
    drain.log = Logger(observer=cast(ILogObserver, logged.append))
    done = drain.start()
    for _ in range(3):
        clock.advance(0.5)
        for connection, _ in slow:
            connection.dataReceived(b"X-a: b\r\n")
    assert not any(t.disconnecting for _, t in slow)
    clock.advance(0.5)
    assert all(t.disconnected for _, t in slow)
    assert silentTransport.disconnecting and not silentTransport.disconnected
    assert [(e["count"], e["kind"]) for e in logged] == [
        (5, "with a request head still arriving")
    ]
    for connection, _ in [*slow, (silent, silentTransport)]:
        lose(connection)
    assert done.result == DrainResult(seconds=2, aborted=5)


def test_forcedStopAbortedRequestNotServed() -> None:
    """
    A request in flight aborted by a forced stop is counted as aborted, not
    served, and is in the access log as 499 with the bytes it got.
    """
    root, tracker, clock = setUp()
    access = loggingSite(tracker)
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"hold")
    root.held[0].write(b"part")
    drain = Drain(tracker, clock=clock, timeout=30)
    done = drain.start()
    drain.force()
    lose(connection)
    assert done.result == DrainResult(seconds=0, aborted=1, forced=True)
    stats = tracker.stats
    assert (stats.completed, stats.aborted, stats.inFlight) == (0, 1, 0)
    assert '"GET /hold HTTP/1.1" 499 4' in access.getvalue()


class TCPTransport(StringTransport):
    """
    What a TLS layer runs over: TCP, as far as the HTTP channel asks.
    """

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


def overTLS(tracker: TrackingFactory, directory: Path) -> tuple[Any, Any, TCPTransport]:
    """
    A connection to C{tracker} through Twisted's TLS layer, in memory: the
    tracked connection, the TLS layer (its transport) and the TCP transport
    under it.  No handshake happens; tests set the layer's state.
    """
    from twisted.internet.ssl import DefaultOpenSSLContextFactory
    from twisted.protocols.tls import TLSMemoryBIOFactory

    key, cert = makeCertificate(directory)
    tlsFactory = TLSMemoryBIOFactory(
        DefaultOpenSSLContextFactory(str(key), str(cert)), False, tracker
    )
    tls: Any = tlsFactory.buildProtocol(PEER)
    under = TCPTransport()
    tls.makeConnection(under)
    [connection] = tracker.connections
    return connection, tls, under


def test_silentTLSPeerClosedAfterTheGrace(tmp_path: Path) -> None:
    """
    A TLS connection waiting for its peer's close_notify (here: one that
    was closing when the drain began) is given the grace, then the TCP
    connection under it is closed; with nothing else left the drain ends
    when that connection is lost.
    """
    _, tracker, clock = setUp()
    connection, tls, under = overTLS(tracker, tmp_path)
    tracker.used.add(channelOf(connection))
    tls.disconnecting = True  # close_notify sent, the peer silent
    done = Drain(tracker, clock=clock, grace=2, timeout=30).start()
    clock.advance(1.5)
    assert not under.disconnecting
    clock.advance(0.5)
    assert under.disconnecting and not done.called
    tls.connectionLost(Failure(ConnectionError("closed")))
    assert done.result == DrainResult(seconds=2, aborted=0)
    assert clock.getDelayedCalls() == []


def test_freshTLSConnectionGetsNoSecondGrace(tmp_path: Path) -> None:
    """
    A TLS connection that sent nothing during the grace is closed at its
    end, TCP included: no second grace for its close_notify.
    """
    _, tracker, clock = setUp()
    _, tls, under = overTLS(tracker, tmp_path)
    tls._handshakeDone = True  # idle after its handshake
    Drain(tracker, clock=clock, grace=2, timeout=30).start()
    clock.advance(1.9)
    assert not tls.disconnecting and not under.disconnecting
    clock.advance(0.1)
    assert tls.disconnecting and under.disconnecting
