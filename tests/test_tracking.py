"""
Tests for txsdnotify.tracking: counting requests and connections of any
Site, through an in-memory transport.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from txsdnotify.tracking import TrackingFactory, channelOf

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"


class Root(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Request] = []

    def render_GET(self, request: Request) -> Any:
        if request.path == b"/hold":
            self.held.append(request)
            return NOT_DONE_YET
        return b"12345"


def connect(tracker: TrackingFactory) -> tuple[Any, StringTransport]:
    connection = tracker.buildProtocol(PEER)
    transport = StringTransport()
    connection.makeConnection(transport)
    return connection, transport


def test_countsRequestsAndBytes() -> None:
    tracker = TrackingFactory(Site(Root()))
    connection, transport = connect(tracker)
    for _ in range(3):
        connection.dataReceived(GET % b"")
    stats = tracker.stats
    assert (stats.started, stats.completed, stats.bytesSent) == (3, 3, 15)
    assert stats.openConnections == 1
    assert transport.value().count(b"200 OK") == 3


def test_inFlightAndClientGone() -> None:
    root = Root()
    tracker = TrackingFactory(Site(root))
    connection, _ = connect(tracker)
    connection.dataReceived(GET % b"hold")
    assert tracker.stats.inFlight == 1
    connection.connectionLost(Failure(ConnectionError("gone")))
    stats = tracker.stats
    assert (stats.started, stats.completed, stats.inFlight) == (1, 1, 0)
    assert stats.openConnections == 0
    assert not tracker.connections


def test_partialRequestNotInFlight() -> None:
    tracker = TrackingFactory(Site(Root()))
    connection, _ = connect(tracker)
    connection.dataReceived(b"GET / HTTP/1.1\r\nHost:")
    assert tracker.stats.inFlight == 0
    connection.connectionLost(Failure(ConnectionError("gone")))
    assert (tracker.stats.started, tracker.stats.completed) == (0, 0)


def test_siteUnchanged() -> None:
    site = Site(Root())
    before = (site.requestFactory, type(site), site.buildProtocol)
    tracker = TrackingFactory(site)
    connect(tracker)
    assert (site.requestFactory, type(site), site.buildProtocol) == before


def test_requestClassKept() -> None:
    class Mine(Request):
        pass

    tracker = TrackingFactory(Site(Root(), requestFactory=Mine))
    connection, _ = connect(tracker)
    connection.dataReceived(GET % b"")
    assert tracker.stats.completed == 1
    factory = channelOf(connection).requestFactory
    assert issubclass(factory, Mine) and factory.__name__ == "TrackedMine"


def test_connectionsTracked() -> None:
    tracker = TrackingFactory(Site(Root()))
    one, _ = connect(tracker)
    two, _ = connect(tracker)
    assert tracker.connections == {one, two}
    one.connectionLost(Failure(ConnectionError("bye")))
    assert tracker.connections == {two}
    assert (tracker.stats.connectionsOpened, tracker.stats.connectionsClosed) == (2, 1)
