"""
Tests for txsdnotify.web.http2: ending a Twisted HTTP/2 connection, in memory
with a fake clock; and the Twisted internals it relies on, so that a change
in Twisted fails here first.
"""

from __future__ import annotations

from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection as H2Client
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame
from inmemory import Root
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web._http2 import H2Connection
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from txsdnotify.web.http2 import isBusy, isH2, settleH2


def test_twistedInternalsStillThere() -> None:
    """
    What txsdnotify.web.http2 and the tracking reach into.
    """
    from twisted.web.http import _GenericHTTPChannelProtocol

    channel = H2Connection(reactor=Clock())
    assert isinstance(channel.streams, dict)
    assert callable(channel._requestDone)
    for handler in (
        "_requestReceived",
        "_requestDataReceived",
        "_requestEnded",
        "_requestAborted",
    ):
        assert callable(getattr(channel, handler)), handler
    assert channel.conn.highest_inbound_stream_id == 0
    generic = _GenericHTTPChannelProtocol(HTTPChannel())
    assert isinstance(generic._channel, HTTPChannel)


def frames(data: bytes) -> list[Any]:
    """
    The HTTP/2 frames in C{data}.
    """
    found = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        found.append(frame)
        view = view[9 + length :]
    return found


def goAways(data: bytes) -> list[tuple[int, int]]:
    """
    The (last stream id, error code) of each GOAWAY frame in C{data}.
    """
    return [
        (f.last_stream_id, f.error_code)
        for f in frames(data)
        if isinstance(f, GoAwayFrame)
    ]


def serveWithClient(
    path: bytes | None,
) -> tuple[H2Connection, StringTransport, Root, Clock, H2Client]:
    """
    A Twisted HTTP/2 connection in memory, with a request for C{path} in
    flight (if given); the server's output so far is cleared.
    """
    clock, root = Clock(), Root()
    channel = H2Connection(reactor=clock)
    # What H2Connection is given by the HTTP factory, untyped in Twisted.
    channel.site = Site(root)  # type: ignore[assignment]
    channel.requestFactory = Request  # type: ignore[attr-defined]
    channel.callLater = clock.callLater  # type: ignore[method-assign,assignment]
    transport = StringTransport()
    transport.registerProducer(channel, True)
    channel.makeConnection(transport)
    client = H2Client(H2Configuration(client_side=True))
    client.initiate_connection()
    if path is not None:
        headers = [(":method", "GET"), (":path", path.decode())]
        headers += [(":scheme", "https"), (":authority", "x")]
        client.send_headers(1, headers, end_stream=True)
    channel.dataReceived(client.data_to_send())
    clock.advance(0)
    client.receive_data(transport.value())
    transport.clear()
    return channel, transport, root, clock, client


def serve(path: bytes | None) -> tuple[H2Connection, StringTransport, Root, Clock]:
    """
    A Twisted HTTP/2 connection in memory, with a request for C{path} in
    flight (if given); the server's output so far is cleared.
    """
    channel, transport, root, clock, _ = serveWithClient(path)
    return channel, transport, root, clock


def test_idleConnectionGoesAwayAtOnce() -> None:
    channel, transport, _, _ = serve(None)
    assert isH2(channel) and not isBusy(channel)
    settleH2(channel)
    assert goAways(transport.value()) == [(0, 0), (0, 0)]
    assert transport.disconnecting and transport.producer is None


def test_streamInFlightFinishesThenCloses() -> None:
    channel, transport, root, clock = serve(b"/hold")
    assert isBusy(channel)
    settleH2(channel)
    settleH2(channel)  # once only
    assert goAways(transport.value()) == [(1, 0)]
    assert not transport.disconnecting
    root.held[0].write(b"late")
    root.held[0].finish()
    for _ in range(5):
        clock.advance(0)
    out = transport.value()
    assert b"late" in out
    assert goAways(out) == [(1, 0), (1, 0)]
    assert transport.disconnecting


def test_notH2() -> None:
    assert not isH2(HTTPChannel())
    assert not isH2(object())


def headers(path: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":path", path),
        (":scheme", "https"),
        (":authority", "x"),
    ]


def test_streamOpenedAfterGoAwayRefused() -> None:
    """
    A stream the client opens before it has heard the GOAWAY (above its
    last-stream-id) is reset with REFUSED_STREAM and never reaches the
    site, its body included; the stream in flight finishes, then the
    connection closes.  The client is the h2 library.
    """
    channel, transport, root, clock, client = serveWithClient(b"/hold")
    settleH2(channel)
    goAway = transport.value()
    transport.clear()
    # Sent before the client read the GOAWAY: it crossed it on the wire.
    client.send_headers(3, headers("/late"))
    client.send_data(3, b"body" * 100, end_stream=True)
    channel.dataReceived(client.data_to_send())
    clock.advance(0)
    # The h2 library, as a client, reads nothing after a GOAWAY: the frames
    # are read here.
    assert goAways(goAway) == [(1, 0)]
    resets = [
        (f.stream_id, f.error_code)
        for f in frames(transport.value())
        if isinstance(f, RstStreamFrame)
    ]
    assert resets == [(3, ErrorCodes.REFUSED_STREAM)]
    assert goAways(transport.value()) == []
    transport.clear()
    assert len(root.held) == 1 and list(channel.streams) == [1]
    root.held[0].write(b"late")
    root.held[0].finish()
    for _ in range(5):
        clock.advance(0)
    assert b"late" in transport.value()
    assert transport.disconnecting
