"""
Tests for txsdnotify.web.tracking: counting requests and connections of any
Site, through an in-memory transport.
"""

from __future__ import annotations

from typing import Any

from inmemory import GET, PEER, NonQueued, Root, checkProvidesAsBase, connect
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.server import Request, Site

from txsdnotify.web.tracking import TrackingFactory, channelOf


def test_countsRequestsAndBytes() -> None:
    tracker = TrackingFactory(Site(Root(b"12345")))
    connection, transport = connect(tracker)
    for _ in range(3):
        connection.dataReceived(GET % b"")
    stats = tracker.stats
    assert (stats.started, stats.completed, stats.bytesSent) == (3, 3, 15)
    assert stats.openConnections == 1
    assert transport.value().count(b"200 OK") == 3


def test_inFlightAndClientGone() -> None:
    root = Root(b"12345")
    tracker = TrackingFactory(Site(root))
    connection, _ = connect(tracker)
    connection.dataReceived(GET % b"hold")
    assert tracker.stats.inFlight == 1
    connection.connectionLost(Failure(ConnectionError("gone")))
    stats = tracker.stats
    # Not served: aborted.
    assert (stats.started, stats.completed, stats.aborted) == (1, 0, 1)
    assert stats.inFlight == 0
    assert stats.openConnections == 0
    assert not tracker.connections


def test_partialRequestNotInFlight() -> None:
    tracker = TrackingFactory(Site(Root(b"12345")))
    connection, _ = connect(tracker)
    connection.dataReceived(b"GET / HTTP/1.1\r\nHost:")
    assert tracker.stats.inFlight == 0
    connection.connectionLost(Failure(ConnectionError("gone")))
    assert (tracker.stats.started, tracker.stats.completed) == (0, 0)


def test_siteUnchanged() -> None:
    site = Site(Root(b"12345"))
    before = (site.requestFactory, type(site), site.buildProtocol, site.protocol)
    tracker = TrackingFactory(site)
    connect(tracker)
    assert (
        site.requestFactory,
        type(site),
        site.buildProtocol,
        site.protocol,
    ) == before
    assert "protocol" not in vars(site)


def test_sitesOwnProtocolKept() -> None:
    """
    A protocol set on the site itself is its protocol after the tracking
    built a connection with it.
    """

    class Channel(HTTPChannel):
        pass

    site = Site(Root(b"12345"))
    site.protocol = Channel  # type: ignore[assignment]
    connection, _ = connect(TrackingFactory(site))
    assert isinstance(connection, Channel)
    assert site.protocol is Channel


def test_connectionBuiltTracked() -> None:
    """
    The connection is an instance of the tracked class from its
    construction on (its class is not swapped afterwards, which costs on
    every attribute access in CPython 3.11), and leaves the tracking when
    lost.
    """
    born: list[type] = []

    class Channel(HTTPChannel):
        def __init__(self) -> None:
            super().__init__()
            born.append(type(self))

    site = Site(Root(b"12345"))
    site.protocol = Channel  # type: ignore[assignment]
    tracker = TrackingFactory(site)
    connection, _ = connect(tracker)
    assert born == [type(connection)]
    assert type(connection).__name__ == "Channel" and type(connection) is not Channel
    connection.dataReceived(GET % b"")
    assert tracker.stats.completed == 1
    connection.connectionLost(Failure(ConnectionError("bye")))
    assert not tracker.connections


def test_otherProtocolsSwapped() -> None:
    """
    A site's protocol that is neither Twisted's default nor a class builds
    connections that become tracked once built.
    """
    site = Site(Root(b"12345"))
    site.protocol = lambda: HTTPChannel()  # type: ignore[assignment,return-value]
    tracker = TrackingFactory(site)
    connection, _ = connect(tracker)
    assert isinstance(connection, HTTPChannel) and type(connection) is not HTTPChannel
    connection.connectionLost(Failure(ConnectionError("bye")))
    assert not tracker.connections


def test_requestClassKept() -> None:
    class Mine(Request):
        pass

    tracker = TrackingFactory(Site(Root(b"12345"), requestFactory=Mine))
    connection, _ = connect(tracker)
    connection.dataReceived(GET % b"")
    assert tracker.stats.completed == 1
    factory = channelOf(connection).requestFactory
    assert issubclass(factory, Mine) and factory.__name__ == "TrackedMine"


def test_requestClassProvidesWhatItsBaseProvides() -> None:
    """
    The tracked request class provides what the site's request class
    provides: Twisted asks C{INonQueuedRequestFactory.providedBy} of every
    request it makes, to know how to call the factory.
    """
    tracker = TrackingFactory(Site(Root(b"12345"), requestFactory=NonQueued))
    connection, transport = connect(tracker)
    connection.dataReceived(GET % b"")
    assert tracker.stats.completed == 1
    assert b"12345" in transport.value()
    checkProvidesAsBase(
        lambda base: (
            channelOf(
                connect(TrackingFactory(Site(Root(), requestFactory=base)))[0]
            ).requestFactory
        )
    )


def test_requestGetsNoAttributeOfItsOwn() -> None:
    """
    A tracked request, timed or not, has the same instance attributes as
    the site's own request while it is in flight and once answered: the
    in-flight flag is no key of its dict (Twisted's request is at CPython
    3.11's limit of attributes kept inline, and one more costs on every
    later attribute access).
    """

    def held(tracker: Any) -> tuple[set[str], set[str]]:
        root = Root(b"12345")
        site = Site(root)
        if tracker is None:
            connection = site.buildProtocol(PEER)
            connection.makeConnection(StringTransport())
        else:
            connection, _ = connect(tracker(site))
        connection.dataReceived(GET % b"hold")
        request = root.held[0]
        during = set(vars(request))
        request.write(b"12345")
        request.finish()
        return during, set(vars(request))

    def timed(site: Site) -> TrackingFactory:
        tracker = TrackingFactory(site)
        tracker.timed = True
        return tracker

    plain = held(None)
    assert held(TrackingFactory) == plain
    assert held(timed) == plain


def test_connectionsTracked() -> None:
    tracker = TrackingFactory(Site(Root(b"12345")))
    one, _ = connect(tracker)
    two, _ = connect(tracker)
    assert tracker.connections == {one, two}
    one.connectionLost(Failure(ConnectionError("bye")))
    assert tracker.connections == {two}
    assert (tracker.stats.connectionsOpened, tracker.stats.connectionsClosed) == (2, 1)


def test_offersTheSitesProtocolsToALPN() -> None:
    """
    TLS asks the listening factory which protocols to offer in ALPN; without
    an answer every ALPN client's handshake fails.
    """
    site = Site(Root(b"12345"))
    tracker = TrackingFactory(site)
    assert IProtocolNegotiationFactory.providedBy(tracker)
    assert tracker.acceptableProtocols() == site.acceptableProtocols()
    assert b"http/1.1" in tracker.acceptableProtocols()


def test_releasedAfterChannelSwap() -> None:
    """
    When ALPN picks h2, Twisted swaps the channel behind the connection (a
    proxy that passes attributes on to the channel): the connection still
    leaves the tracking when it is lost, and keeps its class's name.
    """
    tracker = TrackingFactory(Site(Root(b"12345")))
    connection, transport = connect(tracker)
    assert isinstance(connection, _GenericHTTPChannelProtocol)
    assert type(connection).__name__ == "_GenericHTTPChannelProtocol"
    transport.unregisterProducer()
    swapped = HTTPChannel()
    swapped.makeConnection(transport)
    # Twisted infers _channel's type from its H2Connection assignment.
    connection._channel = swapped  # type: ignore[assignment]
    connection.connectionLost(Failure(ConnectionError("bye")))
    assert not tracker.connections
    assert tracker.stats.connectionsClosed == 1
    connection.connectionLost(Failure(ConnectionError("again")))
    assert tracker.stats.connectionsClosed == 1
