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

from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime
from twisted.logger import Logger
from twisted.web.http import HTTPChannel

from .http2 import isH2, settleH2
from .tracking import USED, TrackingFactory, channelOf

__all__ = ["Drain", "DrainResult"]


@frozen
class DrainResult:
    """
    How a drain ended.

    @ivar seconds: How long it took.
    @ivar aborted: Connections still open at the timeout, and aborted.
    """

    seconds: float
    aborted: int


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
    ) -> None:
        """
        @param tracker: The factory whose connections to drain; it must no
            longer be listening.
        @param clock: Schedules the grace and the timeout.
        @param timeout: Seconds after which what is left is aborted.
        @param grace: Seconds a connection with no request yet may take to
            send one.
        """
        self.tracker = tracker
        self.clock = clock
        self.timeout = timeout
        self.grace = grace
        self.started: float | None = None
        self.aborted = 0
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

    def start(self) -> Deferred[DrainResult]:
        """
        Begin; the result fires once no connection is left.
        """
        self.started = self.clock.seconds()
        self.tracker.drain = self
        fresh = False
        for connection in list(self.tracker.connections):
            fresh = self._settle(connection) or fresh
        if not self.tracker.connections:
            self._finish()
            return self._done
        if fresh:
            self._calls.append(
                self.clock.callLater(min(self.grace, self.timeout), self._endGrace)
            )
        self._calls.append(self.clock.callLater(self.timeout, self._abortAll))
        return self._done

    # Told by the tracking.

    def requestArrived(self, request: Any) -> None:
        """
        A request arrived during the drain: it is served, then its
        connection closes.
        """
        _closeAfter(request)

    def connectionClosed(self, connection: IProtocol) -> None:
        """
        A connection is gone; the drain ends with the last one.
        """
        if not self.tracker.connections and not self._done.called:
            self._finish()

    # Our own steps.

    def _settle(self, connection: IProtocol) -> bool:
        """
        Start ending one connection.

        @return: Whether it is fresh (accepted, no request yet) and waits for
            the grace.
        """
        channel = channelOf(connection)
        if isH2(channel):
            settleH2(channel)
            return False
        requests = getattr(channel, "requests", None)
        if requests:
            for request in requests:
                _closeAfter(request)
            return False
        if getattr(channel, USED, False):
            _close(connection)
            return False
        return True

    def _endGrace(self) -> None:
        for connection in list(self.tracker.connections):
            channel = channelOf(connection)
            if isH2(channel):  # became HTTP/2 during the grace
                settleH2(channel)
            elif not getattr(channel, "requests", None):
                _close(connection)

    def _abortAll(self) -> None:
        left = list(self.tracker.connections)
        self.aborted = len(left)
        self.log.warn(
            "Drain timeout ({timeout}s) passed: aborting {count} connection(s)",
            timeout=self.timeout,
            count=len(left),
        )
        for connection in left:
            transport = getattr(channelOf(connection), "transport", None)
            if transport is not None:
                transport.abortConnection()
        self._calls.append(self.clock.callLater(self._abortWait, self._finish))

    def _finish(self) -> None:
        if self._done.called:
            return
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        assert self.started is not None
        self._done.callback(
            DrainResult(
                seconds=self.clock.seconds() - self.started, aborted=self.aborted
            )
        )


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
    channel = channelOf(connection)
    loseConnection = getattr(channel, "loseConnection", None)
    if loseConnection is not None:
        loseConnection()
    else:
        channel.transport.loseConnection()
