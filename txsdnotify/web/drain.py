# -*- test-case-name: tests.test_drain -*-
"""
Ending an HTTP server's connections without losing a request.

A L{Drain} starts once the server has stopped listening.  Requests in flight
run to the end and their responses carry C{Connection: close}; idle
keep-alive connections are closed at once.  A request whose head (request
line and headers) has arrived and whose body is still arriving is in flight
too: it gets the whole timeout, as long as its body keeps coming (a byte at
least every grace).  A connection that was accepted but has not sent a whole
request head yet gets a short grace to send one.  Whatever is left when the
timeout passes is aborted.

What the drain cuts (a request head still arriving at the end of the grace,
a body that stalled, anything left at the timeout) is logged, one line per
kind with its count, written to the access log with the status
L{ABORTED_STATUS}, and counted in L{DrainResult.aborted}.

A TLS connection that is closed sends C{close_notify}, and Twisted then
waits for the peer's; the drain gives the peer the grace to answer, then
closes the TCP connection under it (L{txsdnotify.web.tls.endTLSWait}), so
that a silent TLS client holds a stop no longer than a plain TCP one.

Nothing here knows systemd: the service reads L{Drain.remaining} to tell the
manager how far it has got.

While a worker is being replaced (its listening socket stays open for the
others), an idle keep-alive connection is kept for an idle grace during which
one more request is answered (with C{Connection: close}); a connection is
closed only when no byte of a request is buffered on it, so a request is
either answered or refused before any of it was read (what a retrying client
needs to retry it).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from txsdnotify.web.http2 import isH2, settleH2
from txsdnotify.web.tls import endTLSWait, isTLS, waitsForTLSClose
from txsdnotify.web.tracking import (
    ABORTED_STATUS,
    TrackingFactory,
    channelOf,
    isProcessing,
    logAborted,
    ownConnection,
)

__all__ = ["ABORTED_STATUS", "Arrival", "Drain", "DrainHook", "DrainResult", "arrival"]

DrainHook = Callable[[float], object]
"""
Called as C{hook(secondsLeft)} when a drain begins; may return a
L{Deferred}, which the drain does not wait for.
"""


@frozen
class DrainResult:
    """
    How a drain ended.

    @ivar seconds: How long it took.
    @ivar aborted: Connections the drain cut: still open at the timeout (or
        when the stop was forced), a request head still arriving at the end
        of the grace, a request body that stalled.
    @ivar forced: Whether the stop was forced before the timeout.
    """

    seconds: float
    aborted: int
    forced: bool = False


class Arrival(enum.Enum):
    """
    How far the request on an HTTP/1 connection has arrived.
    """

    NOTHING = "nothing"
    """
    No request begun: a fresh or idle connection (perhaps with part of a
    request line).
    """

    HEAD = "head"
    """
    The request line has arrived, the headers have not all.
    """

    BODY = "body"
    """
    The head has arrived, the body is arriving.
    """

    PROCESSING = "processing"
    """
    A request has arrived whole and is being answered.
    """


def arrival(channel: Any) -> Arrival:
    """
    How far the current request on the HTTP/1 connection C{channel} has
    arrived.  The one place that reads Twisted's parser state
    (C{HTTPChannel._handlingRequest} and C{line_mode}, which is 0 while a
    body arrives); C{tests/test_drain.py} fails if Twisted changes them.
    """
    requests = getattr(channel, "requests", None) or ()
    if not requests:
        return Arrival.NOTHING
    for request in requests:
        if isProcessing(request):
            return Arrival.PROCESSING
    if getattr(channel, "_handlingRequest", False):
        return Arrival.PROCESSING
    if not getattr(channel, "line_mode", 1):
        return Arrival.BODY
    return Arrival.HEAD


# What the drain says of the connections it cuts, by what they were doing.
_KINDS = {
    Arrival.NOTHING: "with no request",
    Arrival.HEAD: "with a request head still arriving",
    Arrival.BODY: "with a request body still arriving",
    Arrival.PROCESSING: "with a request in flight",
}
_UPGRADED = "taken over by another protocol (WebSocket)"
_HTTP2 = "over HTTP/2"
_CLOSING = "closing (the peer did not take the last bytes or close)"


class Drain:
    """
    Brings the connections of one L{TrackingFactory} to an end.
    """

    log = Logger()

    # After aborting, connections report their loss on the next reactor
    # turns; this bounds the wait should one never do so.
    _abortWait = 1.0

    def __init__(
        self,
        tracker: TrackingFactory,
        *,
        clock: IReactorTime,
        timeout: float = 30.0,
        grace: float = 2.0,
        idleGrace: float = 0.0,
        hooks: Sequence[DrainHook] = (),
    ) -> None:
        """
        @param tracker: The factory whose connections to drain; it must no
            longer be listening.
        @param clock: Schedules the grace and the timeout.
        @param timeout: Seconds after which what is left is aborted.
        @param grace: Seconds a connection with no request yet (or one whose
            request head has not fully arrived) may take to send one; the
            longest a request body may pause; how long a TLS peer is given
            to answer C{close_notify}.
        @param idleGrace: Seconds an idle keep-alive connection stays open
            for one more request (answered with C{Connection: close}); 0
            closes it at once.  A server whose listening socket stays open
            for others (a worker being replaced) sets it, so that a client
            sending its next request just as the drain begins is answered.
        @param hooks: Told that the drain began, with the seconds left, so
            that the application can end what only it can end (WebSockets,
            event streams).
        """
        self.tracker = tracker
        self.clock = clock
        self.timeout = timeout
        self.grace = grace
        self.idleGrace = idleGrace
        self.hooks = list(hooks)
        self.started: float | None = None
        self.aborted = 0
        self.forced = False
        self._done: Deferred[DrainResult] = Deferred()
        self._calls: list[IDelayedCall] = []
        self._stallCheck: IDelayedCall | None = None
        self._lastByte: dict[Any, float] = {}
        self._tlsClosing: dict[IProtocol, float] = {}
        self._tlsSweep: LoopingCall | None = None

    @property
    def remaining(self) -> int:
        """
        Connections still open.
        """
        return len(self.tracker.connections)

    @property
    def deadline(self) -> float:
        """
        When (on L{clock}) what is left will be aborted.
        """
        assert self.started is not None, "the drain has not started"
        return self.started + self.timeout

    @property
    def done(self) -> bool:
        """
        Whether the drain has ended.
        """
        return self._done.called

    def start(self) -> Deferred[DrainResult]:
        """
        Begin; the result fires once no connection is left.
        """
        self.started = self.clock.seconds()
        self.tracker.drain = self
        fresh = idle = tls = False
        for connection in list(self.tracker.connections):
            tls = tls or isTLS(self.tracker.transportOf(connection))
            waits = self._settle(connection)
            fresh = fresh or waits is _Wait.GRACE
            idle = idle or waits is _Wait.IDLE
        self._runHooks()
        if not self.tracker.connections:
            self._finish()
            return self._done
        if fresh:
            self._calls.append(
                self.clock.callLater(min(self.grace, self.timeout), self._endGrace)
            )
        if idle:
            self._calls.append(
                self.clock.callLater(
                    min(self.idleGrace, self.timeout), self._endIdleGrace
                )
            )
        self._calls.append(self.clock.callLater(self.timeout, self._abortAll))
        if tls:
            self._tlsSweep = LoopingCall(self._sweepTLS)
            self._tlsSweep.clock = self.clock
            self._tlsSweep.start(max(0.05, min(self.grace / 4, 0.5)), now=True)
        return self._done

    def force(self) -> None:
        """
        Stop waiting: abort every connection left now.
        """
        if self.started is None or self._done.called or self.forced:
            return
        self.forced = True
        self._abort("Stop forced")

    # Told by the tracking.

    def requestArrived(self, request: Any) -> None:
        """
        A request arrived during the drain: it is served, then its
        connection closes, unless the client pipelined more requests behind
        it, which are served first.
        """
        channel = getattr(request, "channel", None)
        if not _morePipelined(channel):
            _closeAfter(request)

    def connectionClosed(self, connection: IProtocol) -> None:
        """
        A connection is gone; the drain ends with the last one.
        """
        self._tlsClosing.pop(connection, None)
        self._lastByte.pop(channelOf(connection), None)
        if not self.tracker.connections and not self._done.called:
            self._finish()

    # Our own steps.

    def _runHooks(self) -> None:
        for hook in self.hooks:
            maybeDeferred(hook, self.timeout).addErrback(self._hookFailed, hook)

    def _hookFailed(self, failure: Failure, hook: DrainHook) -> None:
        self.log.failure("Drain hook {hook!r} failed", failure, hook=hook)

    def _settle(self, connection: IProtocol) -> _Wait | None:
        """
        Start ending one connection.

        @return: What it waits for: the grace (accepted with no request
            yet, or with one whose headers or body are still arriving), the
            idle grace (an idle keep-alive connection), or nothing.
        """
        if connection in self.tracker.upgraded:
            # Only the application can end these well: the drain hooks.
            return None
        own = ownConnection(connection)
        if own is not None:
            if self.idleGrace > 0 and own.drainIdle():
                return _Wait.IDLE
            return _Wait.GRACE if own.drainBegan() else None
        channel = channelOf(connection)
        if isH2(channel):
            settleH2(channel)
            return None
        state = arrival(channel)
        if state is Arrival.PROCESSING:
            if not _morePipelined(channel):
                for request in channel.requests:
                    _closeAfter(request)
            return None
        if state is Arrival.NOTHING and channel in self.tracker.used:
            if self.idleGrace > 0:
                return _Wait.IDLE
            _close(connection)
            return None
        self._watchBytes(channel)
        return _Wait.GRACE

    def _busy(self, connection: IProtocol) -> bool:
        if connection in self.tracker.upgraded:
            return True
        own = ownConnection(connection)
        if own is not None:
            return own.drainBusy()
        requests = getattr(channelOf(connection), "requests", None) or ()
        return any(isProcessing(r) for r in requests)

    def _watchBytes(self, channel: Any) -> None:
        """
        Note when bytes arrive on C{channel}, to tell a request body that
        keeps coming from one that stalled.  Only for the drain's few
        connections still sending: nothing is added to the usual path.
        """
        received = getattr(channel, "dataReceived", None)
        if received is None:
            return
        lastByte, clock = self._lastByte, self.clock

        def dataReceived(data: bytes) -> None:
            lastByte[channel] = clock.seconds()
            received(data)

        channel.dataReceived = dataReceived

    def _endGrace(self) -> None:
        cut: Counter[str] = Counter()
        for connection in list(self.tracker.connections):
            if connection in self.tracker.upgraded:
                continue
            channel = channelOf(connection)
            if isH2(channel):  # became HTTP/2 during the grace
                settleH2(channel)
                continue
            state = arrival(channel)
            if state is Arrival.HEAD:
                self._cut(connection, state, cut)
            elif state is Arrival.NOTHING:
                if self._keptIdle(connection, channel):
                    # Its end is the idle grace's.
                    continue
                _close(connection)
                # It has had the grace already: no second one for its
                # close_notify.
                transport = self.tracker.transportOf(connection)
                if waitsForTLSClose(transport):
                    endTLSWait(transport)
        self._logCut(f"Grace ({self.grace:g}s) passed", cut)
        self._checkStalls()

    def _checkStalls(self) -> None:
        """
        Cut the connections whose request body has not moved for the grace;
        look again when the next one could have stalled.
        """
        self._stallCheck = None
        now = self.clock.seconds()
        assert self.started is not None
        cut: Counter[str] = Counter()
        nextCheck: float | None = None
        for connection in list(self.tracker.connections):
            if connection in self.tracker.upgraded:
                continue
            channel = channelOf(connection)
            state = arrival(channel)
            if state not in (Arrival.HEAD, Arrival.BODY):
                continue
            due = self._lastByte.get(channel, self.started) + self.grace
            if due <= now + 1e-9:
                self._cut(connection, state, cut)
            elif nextCheck is None or due < nextCheck:
                nextCheck = due
        self._logCut(f"No request bytes for the grace ({self.grace:g}s)", cut)
        if nextCheck is not None and not self._done.called:
            self._stallCheck = self.clock.callLater(nextCheck - now, self._checkStalls)

    def _cut(self, connection: IProtocol, state: Arrival, cut: Counter[str]) -> None:
        """
        Abort a connection whose request has not arrived whole, and write
        that request to the access log.
        """
        channel = channelOf(connection)
        for request in getattr(channel, "requests", None) or ():
            if not isProcessing(request):
                _abortUnprocessed(self.tracker, channel, request)
        cut[_KINDS[state]] += 1
        self.aborted += 1
        transport = self.tracker.transportOf(connection)
        if transport is not None:
            transport.abortConnection()

    def _logCut(self, why: str, cut: Counter[str]) -> None:
        for kind, count in sorted(cut.items()):
            self.log.warn(
                "{why}: aborting {count} connection(s) {kind}",
                why=why,
                count=count,
                kind=kind,
            )

    def _sweepTLS(self) -> None:
        """
        Close, under the TLS layer, each connection that has waited for its
        peer's C{close_notify} for the grace.
        """
        now = self.clock.seconds()
        for connection in list(self.tracker.connections):
            transport = self.tracker.transportOf(connection)
            if not waitsForTLSClose(transport):
                continue
            since = self._tlsClosing.setdefault(connection, now)
            if now - since >= self.grace:
                endTLSWait(transport)

    def _keptIdle(self, connection: IProtocol, channel: Any) -> bool:
        """
        Whether C{connection} (with no request) is an idle keep-alive one
        that the idle grace keeps open.
        """
        if self.idleGrace <= 0:
            return False
        own = ownConnection(connection)
        if own is not None:
            return own.drainIdle()
        return channel in self.tracker.used

    def _endIdleGrace(self) -> None:
        for connection in list(self.tracker.connections):
            if connection in self.tracker.upgraded:
                continue
            own = ownConnection(connection)
            if own is not None:
                # A request that began to arrive is answered, with close.
                if own.drainIdle():
                    own.drainClose()
                continue
            channel = channelOf(connection)
            if isH2(channel) or channel not in self.tracker.used:
                continue
            if getattr(channel, "requests", None) or _morePipelined(channel):
                # A request began to arrive: it is answered, with close.
                continue
            _close(connection)

    def _abortAll(self) -> None:
        self._abort(f"Drain timeout ({self.timeout:g}s) passed")

    def _kind(self, connection: IProtocol) -> str:
        if connection in self.tracker.upgraded:
            return _UPGRADED
        channel = channelOf(connection)
        if isH2(channel):
            return _HTTP2
        transport = self.tracker.transportOf(connection)
        state = arrival(channel)
        if state is Arrival.NOTHING and getattr(transport, "disconnecting", False):
            return _CLOSING
        return _KINDS[state]

    def _abort(self, why: str) -> None:
        self._cancelCalls()
        left = list(self.tracker.connections)
        self.aborted += len(left)
        kinds: Counter[str] = Counter()
        for connection in left:
            kinds[self._kind(connection)] += 1
            channel = channelOf(connection)
            if connection not in self.tracker.upgraded and not isH2(channel):
                for request in getattr(channel, "requests", None) or ():
                    if not isProcessing(request):
                        _abortUnprocessed(self.tracker, channel, request)
        self._logCut(why, kinds)
        for connection in left:
            transport = self.tracker.transportOf(connection)
            if transport is not None:
                transport.abortConnection()
        if not self.tracker.connections:
            self._finish()
        else:
            self._calls.append(self.clock.callLater(self._abortWait, self._finish))

    def _cancelCalls(self) -> None:
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        if self._stallCheck is not None and self._stallCheck.active():
            self._stallCheck.cancel()
        self._stallCheck = None
        if self._tlsSweep is not None and self._tlsSweep.running:
            self._tlsSweep.stop()
        self._tlsSweep = None

    def _finish(self) -> None:
        if self._done.called:
            return
        self._cancelCalls()
        self._lastByte.clear()
        self._tlsClosing.clear()
        self.tracker.drain = None
        assert self.started is not None
        self._done.callback(
            DrainResult(
                seconds=self.clock.seconds() - self.started,
                aborted=self.aborted,
                forced=self.forced,
            )
        )


def _abortUnprocessed(tracker: TrackingFactory, channel: Any, request: Any) -> None:
    """
    Count a request cut before it had arrived whole as begun and aborted,
    and write it to the access log, with the request line the channel has
    read (C{HTTPChannel._command}, C{_path}, C{_version}: Twisted gives the
    request its own only once the body has arrived).  A request with no
    request line yet is neither.
    """
    command = getattr(channel, "_command", None)
    if command is None or getattr(request, "finished", False):
        return
    tracker.stats.started += 1
    tracker.stats.aborted += 1
    request.method = command
    request.uri = getattr(channel, "_path", b"")
    request.clientproto = getattr(channel, "_version", b"")
    logAborted(request)


class _Wait(enum.Enum):
    """
    What a connection waits for before the drain closes it.
    """

    GRACE = "grace"
    IDLE = "idle"


def _morePipelined(channel: object) -> bool:
    """
    Whether the client sent more bytes behind the request being processed
    on C{channel} (pipelined requests), which Twisted buffers until the
    current one is answered: in C{HTTPChannel._dataBuffer} while a request
    is handled, or still in C{LineReceiver._buffer} while the request before
    is being parsed.  The one place that reads them; the pipelining tests
    fail if Twisted renames them.
    """
    buffered: list[bytes] = getattr(channel, "_dataBuffer", None) or []
    return any(buffered) or bool(getattr(channel, "_buffer", b""))


def _closeAfter(request: Any) -> None:
    """
    Have C{request}'s connection close once it has been answered, and say so
    in the response if its headers have not gone out yet.
    """
    channel = getattr(request, "channel", None)
    if not isinstance(channel, HTTPChannel):
        # HTTP/2 streams carry no Connection header; their connection closes
        # when it is idle.
        return
    channel.persistent = False
    if not request.startedWriting:
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])


def _close(connection: IProtocol) -> None:
    own = ownConnection(connection)
    if own is not None:
        own.drainClose()
        return
    channel = channelOf(connection)
    loseConnection = getattr(channel, "loseConnection", None)
    if loseConnection is not None:
        loseConnection()
    else:
        channel.transport.loseConnection()
