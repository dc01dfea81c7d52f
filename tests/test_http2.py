"""
Tests for txsdnotify.web.http2: ending a Twisted HTTP/2 connection, in memory
with a fake clock; and the Twisted internals it relies on, so that a change
in Twisted fails here first.
"""

from __future__ import annotations

from h2.config import H2Configuration
from h2.connection import H2Connection as H2Client
from hyperframe.frame import Frame, GoAwayFrame
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
    assert channel.conn.highest_inbound_stream_id == 0
    generic = _GenericHTTPChannelProtocol(HTTPChannel())
    assert isinstance(generic._channel, HTTPChannel)


def goAways(data: bytes) -> list[tuple[int, int]]:
    """
    The (last stream id, error code) of each GOAWAY frame in C{data}.
    """
    found = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        if isinstance(frame, GoAwayFrame):
            found.append((frame.last_stream_id, frame.error_code))
        view = view[9 + length :]
    return found


def serve(path: bytes | None) -> tuple[H2Connection, StringTransport, Root, Clock]:
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
    transport.clear()
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
