# -*- test-case-name: tests.test_drain -*-
"""
Ending an HTTP server's connections without losing a request.

A L{Drain} starts once the server has stopped listening.  Requests in flight
run to the end and their responses carry C{Connection: close}; idle
keep-alive connections are closed at once; a connection that was accepted but
has not sent a request yet gets a short grace to send one; whatever is left
when the timeout passes is aborted.  Nothing here knows systemd: the service
reads L{Drain.remaining} to tell the manager how far it has got.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from txsdnotify.web.http2 import isH2, settleH2
from txsdnotify.web.tracking import (
    TrackingFactory,
    channelOf,
    isProcessing,
    ownConnection,
)

__all__ = ["Drain", "DrainHook", "DrainResult"]

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
    @ivar aborted: Connections still open at the timeout (or when the stop
        was forced), and aborted.
    @ivar forced: Whether the stop was forced before the timeout.
    """

    seconds: float
    aborted: int
    forced: bool = False


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
        hooks: Sequence[DrainHook] = (),
    ) -> None:
        """
        @param tracker: The factory whose connections to drain; it must no
            longer be listening.
        @param clock: Schedules the grace and the timeout.
        @param timeout: Seconds after which what is left is aborted.
        @param grace: Seconds a connection with no request yet (or one whose
            request has not fully arrived) may take to send one.
        @param hooks: Told that the drain began, with the seconds left, so
            that the application can end what only it can end (WebSockets,
            event streams).
        """
        self.tracker = tracker
        self.clock = clock
        self.timeout = timeout
        self.grace = grace
        self.hooks = list(hooks)
        self.started: float | None = None
        self.aborted = 0
        self.forced = False
        self._done: Deferred[DrainResult] = Deferred()
        self._calls: list[IDelayedCall] = []

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
        fresh = False
        for connection in list(self.tracker.connections):
            fresh = self._settle(connection) or fresh
        self._runHooks()
        if not self.tracker.connections:
            self._finish()
            return self._done
        if fresh:
            self._calls.append(
                self.clock.callLater(min(self.grace, self.timeout), self._endGrace)
            )
        self._calls.append(self.clock.callLater(self.timeout, self._abortAll))
        return self._done

    def force(self) -> None:
        """
        Stop waiting: abort every connection left now.
        """
        if self.started is None or self._done.called or self.forced:
            return
        self.forced = True
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
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
        if not self.tracker.connections and not self._done.called:
            self._finish()

    # Our own steps.

    def _runHooks(self) -> None:
        for hook in self.hooks:
            maybeDeferred(hook, self.timeout).addErrback(self._hookFailed, hook)

    def _hookFailed(self, failure: Failure, hook: DrainHook) -> None:
        self.log.failure("Drain hook {hook!r} failed", failure, hook=hook)

    def _settle(self, connection: IProtocol) -> bool:
        """
        Start ending one connection.

        @return: Whether it waits for the grace: accepted with no request
            yet, or with one whose headers or body are still arriving.
        """
        if connection in self.tracker.upgraded:
            # Only the application can end these well: the drain hooks.
            return False
        own = ownConnection(connection)
        if own is not None:
            return own.drainBegan()
        channel = channelOf(connection)
        if isH2(channel):
            settleH2(channel)
            return False
        requests = getattr(channel, "requests", None) or ()
        processing = [r for r in requests if isProcessing(r)]
        if processing:
            if not _morePipelined(channel):
                for request in processing:
                    _closeAfter(request)
            return False
        if requests or channel not in self.tracker.used:
            return True
        _close(connection)
        return False

    def _busy(self, connection: IProtocol) -> bool:
        if connection in self.tracker.upgraded:
            return True
        own = ownConnection(connection)
        if own is not None:
            return own.drainBusy()
        requests = getattr(channelOf(connection), "requests", None) or ()
        return any(isProcessing(r) for r in requests)

    def _endGrace(self) -> None:
        for connection in list(self.tracker.connections):
            channel = channelOf(connection)
            if isH2(channel):  # became HTTP/2 during the grace
                settleH2(channel)
            elif not self._busy(connection):
                _close(connection)

    def _abortAll(self) -> None:
        self._abort(f"Drain timeout ({self.timeout:g}s) passed")

    def _abort(self, why: str) -> None:
        left = list(self.tracker.connections)
        self.aborted = len(left)
        if left:
            self.log.warn(
                "{why}: aborting {count} connection(s)", why=why, count=len(left)
            )
        for connection in left:
            transport = self.tracker.transportOf(connection)
            if transport is not None:
                transport.abortConnection()
        if not self.tracker.connections:
            self._finish()
        else:
            self._calls.append(self.clock.callLater(self._abortWait, self._finish))

    def _finish(self) -> None:
        if self._done.called:
            return
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        self.tracker.drain = None
        assert self.started is not None
        self._done.callback(
            DrainResult(
                seconds=self.clock.seconds() - self.started,
                aborted=self.aborted,
                forced=self.forced,
            )
        )


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
