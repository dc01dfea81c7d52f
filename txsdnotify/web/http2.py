# -*- test-case-name: tests.test_http2 -*-
"""
Ending an HTTP/2 connection without losing a stream.

Twisted serves HTTP/2 (over TLS, when ALPN picks C{h2} and C{h2} is
installed) with its C{H2Connection}, which has no graceful close: its own
GOAWAY (through the C{h2} library's C{close_connection}) puts the C{h2} state
machine in its closed state, where the responses still being sent would
fail.  So a drain sends the GOAWAY frame itself, without telling C{h2}: the
client opens no new stream, the open ones run to the end, and then the
connection says its last GOAWAY and closes.  A stream the client opened
before it heard the GOAWAY (one above the GOAWAY's last-stream-id) is not
processed: it is reset with C{REFUSED_STREAM}, which tells the client it may
retry it elsewhere (RFC 9113 section 6.8).

Everything here that reaches into Twisted's HTTP/2 internals
(C{H2Connection.conn}, C{.streams}, C{._requestDone}, and the event handlers
C{._requestReceived}, C{._requestDataReceived}, C{._requestEnded},
C{._requestAborted}) is in this module; C{tests/test_http2.py} fails loudly
if Twisted changes them.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

__all__ = ["isBusy", "isH2", "settleH2"]

log = Logger()

_H2Connection: type | None
try:
    from h2.errors import ErrorCodes
    from h2.events import DataReceived
    from hyperframe.frame import GoAwayFrame
    from twisted.web._http2 import H2Connection as _H2Connection
except ImportError:  # h2 is not installed: Twisted serves no HTTP/2
    _H2Connection = None

# Set on a connection once its drain has begun.
_SETTLING = "_txsdnotifySettling"


def isH2(channel: object) -> bool:
    """
    Whether C{channel} (see L{txsdnotify.web.tracking.channelOf}) is an HTTP/2
    connection.
    """
    return _H2Connection is not None and isinstance(channel, _H2Connection)


def isBusy(channel: Any) -> bool:
    """
    Whether the HTTP/2 connection C{channel} has a stream in flight.
    """
    return bool(channel.streams)


def settleH2(channel: Any) -> None:
    """
    Start ending the HTTP/2 connection C{channel}: tell the client with
    GOAWAY that no new stream will be served, let the open streams finish,
    then close.  Calling it again does nothing.
    """
    if getattr(channel, _SETTLING, False):
        return
    setattr(channel, _SETTLING, True)
    transport = channel.transport
    if transport is None or not getattr(transport, "connected", True):
        return
    conn = channel.conn
    last = conn.highest_inbound_stream_id
    goAway = GoAwayFrame(0, last_stream_id=last)
    # What h2 has queued goes first: frames must not interleave.
    transport.write(conn.data_to_send() + goAway.serialize())
    _refuseStreamsAbove(channel, last)
    if not isBusy(channel):
        _close(channel)
        return
    requestDone = channel._requestDone

    def streamDone(streamID: int) -> None:
        requestDone(streamID)
        if not isBusy(channel):
            _close(channel)

    channel._requestDone = streamDone


def _refuseStreamsAbove(channel: Any, last: int) -> None:
    """
    From now on, reset each stream the client opens above C{last} with
    C{REFUSED_STREAM}, and ignore what else arrives for it.  (The reset goes
    out with the connection's other control frames once the data received
    has been handled.)
    """
    conn = channel.conn
    refused: set[int] = set()
    requestReceived = channel._requestReceived

    def refuseAbove(event: Any) -> None:
        if event.stream_id <= last:
            requestReceived(event)
            return
        refused.add(event.stream_id)
        conn.reset_stream(event.stream_id, error_code=ErrorCodes.REFUSED_STREAM)

    def ignoringRefused(handler: Any) -> Any:
        def handle(event: Any) -> None:
            if event.stream_id not in refused:
                handler(event)
            elif isinstance(event, DataReceived):
                # Give the connection's flow-control window back.
                conn.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )

        return handle

    channel._requestReceived = refuseAbove
    for name in ("_requestDataReceived", "_requestEnded", "_requestAborted"):
        setattr(channel, name, ignoringRefused(getattr(channel, name)))


def _close(channel: Any) -> None:
    """
    Say the last GOAWAY and close the connection once what was written has
    gone out.
    """
    transport = channel.transport
    if transport.disconnecting or not getattr(transport, "connected", True):
        return
    conn = channel.conn
    conn.close_connection()
    transport.write(conn.data_to_send())
    # The connection is the transport's producer; a TLS transport closes
    # only once it has none.
    transport.unregisterProducer()
    transport.loseConnection()
