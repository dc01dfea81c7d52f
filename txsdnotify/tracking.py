# -*- test-case-name: tests.test_tracking -*-
"""
Watching any L{twisted.web.server.Site} at work without changing it.

L{TrackingFactory} is what actually listens: it has the site build each
connection, keeps the set of open connections (which the drain needs) and
gives the connection a request class derived from the site's own, which
counts requests into L{RequestStats}.  The per-request cost is a few integer
increments; nothing is logged or allocated for the statistics.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.interfaces import (
    IAddress,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IProtocolNegotiationFactory,
)
from twisted.python.failure import Failure
from twisted.web.server import Site
from zope.interface import implementer

from .stats import RequestStats

__all__ = ["TrackingFactory", "channelOf"]


class DrainObserver(Protocol):
    """
    What a drain in progress wants to hear from the tracking.
    """

    def requestArrived(self, request: Any) -> None:
        """
        A request is about to be processed.
        """

    def connectionClosed(self, connection: IProtocol) -> None:
        """
        A tracked connection is gone.
        """


def channelOf(connection: object) -> Any:
    """
    The HTTP channel behind a connection that a L{Site} built.

    Twisted wraps its C{HTTPChannel} in a proxy that can switch to HTTP/2;
    the channel itself holds the request queue the drain looks at.
    """
    return getattr(connection, "_channel", connection)


# Set on a channel once it has processed a request, so that a drain can tell
# an idle keep-alive connection (close now) from a fresh one (give it a grace).
USED = "_txsdnotifyUsed"


@implementer(IProtocolFactory, ILoggingContext, IProtocolNegotiationFactory)
class TrackingFactory:
    """
    A protocol factory that serves a L{Site} and keeps count.

    @ivar site: The site that builds the connections and handles requests.
    @ivar stats: The counters this factory updates.
    @ivar connections: The connections open now.
    @ivar drain: The drain in progress, told about new requests and closed
        connections; L{None} while serving normally.
    """

    def __init__(self, site: Site, stats: RequestStats | None = None) -> None:
        self.site = site
        self.stats = stats if stats is not None else RequestStats()
        self.connections: set[IProtocol] = set()
        self.drain: DrainObserver | None = None
        self._baseRequestFactory: object = None
        self._requestFactory: Callable[..., Any] | None = None
        self._trackedClasses: dict[type, type] = {}

    def doStart(self) -> None:
        """
        A port starts listening with us: the site opens its log.
        """
        self.site.doStart()

    def doStop(self) -> None:
        """
        A port stopped listening with us.
        """
        self.site.doStop()

    def logPrefix(self) -> str:
        """
        Log as the site does.
        """
        return self.site.logPrefix()

    def acceptableProtocols(self) -> list[bytes]:
        """
        The protocols the site speaks, which TLS offers in ALPN
        (C{h2} when Twisted can serve HTTP/2, and C{http/1.1}).
        """
        return list(self.site.acceptableProtocols())

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        """
        Have the site build the connection, then count and track it.
        """
        connection = self.site.buildProtocol(addr)
        if connection is None:
            return None
        requestFactory = self._requestFactoryFor(connection.requestFactory)
        connection.requestFactory = requestFactory
        self._track(connection)
        return connection

    def _track(self, connection: IProtocol) -> None:
        self.connections.add(connection)
        self.stats.connectionsOpened += 1
        # The connection becomes an instance of a subclass of its own class
        # that hears of its loss, rather than being wrapped: a wrapper would
        # sit in the path of every byte.  An attribute on the instance would
        # not do: Twisted's HTTP/2-capable connection is a proxy that passes
        # attributes on to the channel it swaps out when ALPN picks h2.
        cls = type(connection)
        tracked = self._trackedClasses.get(cls)
        if tracked is None:
            tracked = self._trackedClasses[cls] = _trackedClass(cls, self)
        connection.__class__ = tracked

    def _lost(self, connection: IProtocol) -> None:
        self.connections.discard(connection)
        self.stats.connectionsClosed += 1

    def _requestFactoryFor(self, base: object) -> Callable[..., Any]:
        if base is not self._baseRequestFactory or self._requestFactory is None:
            self._baseRequestFactory = base
            self._requestFactory = trackingRequestFactory(base, self)
        return self._requestFactory


def _trackedClass(cls: type, tracker: TrackingFactory) -> type:
    """
    A subclass of the connection class C{cls} whose instances leave
    C{tracker} when they are lost.
    """

    class Tracked(cls):
        # The same layout as cls, so that __class__ can be assigned.
        __slots__ = ()

        def connectionLost(self, reason: Failure) -> None:
            first = self in tracker.connections
            if first:
                tracker._lost(self)
            try:
                super().connectionLost(reason)
            finally:
                if first and tracker.drain is not None:
                    tracker.drain.connectionClosed(self)

    Tracked.__name__ = cls.__name__
    Tracked.__qualname__ = cls.__qualname__
    Tracked.__module__ = cls.__module__
    return Tracked


def trackingRequestFactory(base: Any, tracker: TrackingFactory) -> Callable[..., Any]:
    """
    A request factory that makes what C{base} makes and counts it into
    C{tracker.stats}.

    @param base: The site's request factory: a request class (the usual
        case, subclassed here) or any callable returning a request.
    """
    if isinstance(base, type):
        return _trackingRequestClass(base, tracker)
    return _trackingRequestCallable(base, tracker)


def _trackingRequestClass(base: type, tracker: TrackingFactory) -> type:
    stats = tracker.stats

    # Every override costs on each request, so there are as few as can be:
    # a request counts once it is processed (its body has arrived) and ends
    # once it is finished or its client is gone.
    class TrackedRequest(base):
        _txsdnotifyProcessing = False

        def process(self) -> None:
            stats.started += 1
            self._txsdnotifyProcessing = True
            self.channel._txsdnotifyUsed = True
            drain = tracker.drain
            if drain is not None:
                drain.requestArrived(self)
            super().process()

        def finish(self) -> None:
            super().finish()
            if self._txsdnotifyProcessing:
                self._txsdnotifyProcessing = False
                stats.completed += 1
                stats.bytesSent += self.sentLength

        def connectionLost(self, reason: Failure) -> None:
            super().connectionLost(reason)
            if self._txsdnotifyProcessing:
                self._txsdnotifyProcessing = False
                stats.completed += 1
                stats.bytesSent += self.sentLength

    TrackedRequest.__name__ = TrackedRequest.__qualname__ = "Tracked" + base.__name__
    TrackedRequest.__module__ = base.__module__
    return TrackedRequest


def _trackingRequestCallable(
    base: Callable[..., Any], tracker: TrackingFactory
) -> Callable[..., Any]:
    stats = tracker.stats

    def makeRequest(*args: Any, **kwargs: Any) -> Any:
        request = base(*args, **kwargs)
        stats.started += 1
        setattr(request.channel, USED, True)

        def ended(result: object) -> None:
            stats.completed += 1
            stats.bytesSent += getattr(request, "sentLength", 0)

        request.notifyFinish().addBoth(ended)
        return request

    return makeRequest
