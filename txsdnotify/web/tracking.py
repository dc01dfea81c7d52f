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

from bisect import bisect_left
from time import monotonic
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
from zope.interface import directlyProvidedBy, directlyProvides, implementer

from txsdnotify.web.accesslog import useTwistdLog
from txsdnotify.web.channels import builderAs
from txsdnotify.web.http2 import isH2
from txsdnotify.web.stats import DURATION_BUCKETS, FIRST_BUCKET, RequestStats

__all__ = [
    "ABORTED_STATUS",
    "OwnConnection",
    "TrackingFactory",
    "channelOf",
    "connectionKinds",
    "logAborted",
    "providesAsBase",
]


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


class OwnConnection(Protocol):
    """
    A connection that is not Twisted's C{HTTPChannel} (sdweb's fast
    HTTP/1.1 path): it counts its requests into the tracker's C{stats}
    itself (L{RequestStats.requestBegan}, L{RequestStats.responseSent}),
    reads C{tracker.drain} when a request arrives, calls
    L{TrackingFactory.release} when it is lost, and a drain asks it these.
    """

    def drainBegan(self) -> bool:
        """
        A drain began: close at once if idle, close after the response under
        way (and the pipelined ones behind it) if busy.  Not called for an
        idle connection (L{drainIdle}) that the drain's idle grace keeps.

        @return: Whether it waits for the drain's grace: no request yet, or
            one still arriving.
        """

    def drainBusy(self) -> bool:
        """
        Whether a request is being processed on it.
        """

    def drainIdle(self) -> bool:
        """
        Whether it is an idle keep-alive connection: it has answered a
        request, and nothing is being answered and no byte of another
        request has arrived (what a drain's idle grace keeps open, and
        closes when it ends).
        """

    def drainClose(self) -> None:
        """
        Close now, unless a request is being processed (then close after it).
        """


def ownConnection(connection: object) -> OwnConnection | None:
    """
    C{connection} if it is an L{OwnConnection}.
    """
    if hasattr(connection, "drainBegan"):
        return connection  # type: ignore[return-value]
    return None


def channelOf(connection: object) -> Any:
    """
    The HTTP channel behind a connection that a L{Site} built.

    Twisted wraps its C{HTTPChannel} in a proxy that can switch to HTTP/2;
    the channel itself holds the request queue the drain looks at.
    """
    return getattr(connection, "_channel", connection)


# Set on a request while it is processed (its body has arrived) and not yet
# answered: the drain and the figures agree that this is "in flight".  Its
# value is True, or with TrackingFactory.timed when processing began
# (time.monotonic(), never 0 on Linux), for the request's duration: one
# attribute, not two.  False or 0.0 once it has ended; unset before.  On
# sdweb's own request subclasses it is a slot, not a key of the instance's
# dict: Twisted's request has about 30 attributes, which is as many as
# CPython 3.11 keeps in an object's inline values (shared keys) before it
# gives the object a real dict, and one key more made every request take
# that slower path from its processing on, where a bare Site's does so only
# in finish.  No constructor of ours runs for each request.  What belongs to
# a channel is kept beside it, in the tracker.
PROCESSING = "_txsdnotifyProcessing"


def _slotted(base: type) -> tuple[str, ...]:
    """
    The C{__slots__} of sdweb's subclass of the request class C{base}:
    L{PROCESSING} as a slot, unless C{base} cannot take one (then the
    attribute goes to the instance's dict, as on any other request).
    """
    try:
        type("Probe", (base,), {"__slots__": (PROCESSING,)})
    except TypeError:
        return ()
    return (PROCESSING,)


def isProcessing(request: object) -> bool:
    """
    Whether C{request} is being processed: fully received, not yet answered.
    """
    return bool(getattr(request, PROCESSING, False))


@implementer(IProtocolFactory, ILoggingContext, IProtocolNegotiationFactory)
class TrackingFactory:
    """
    A protocol factory that serves a L{Site} and keeps count.

    @ivar site: The site that builds the connections and handles requests.
    @ivar stats: The counters this factory updates.
    @ivar connections: The connections open now.
    @ivar upgraded: The connections that switched protocols (a WebSocket),
        with their transports: no HTTP request is left on them, but they are
        open until their new protocol says they are gone.
    @ivar drain: The drain in progress, told about new requests and closed
        connections; L{None} while serving normally.
    @ivar timed: Whether each request is also timed and counted by status
        code (C{stats.byCode}, C{stats.durations}): costs more per request,
        so only when something reads them (metrics); set it before
        listening.
    @ivar answerFirst: Wraps the counting request factory in one that may
        answer some requests itself, uncounted (the health checks); set it
        before listening.
    @ivar used: The channels (see L{channelOf}) that have processed a
        request, so that a drain can tell an idle keep-alive connection
        (close now) from a fresh one (give it a grace).
    @ivar connectionFactory: Builds the connections instead of the site
        when set (sdweb's fast HTTP/1.1 path): each is an L{OwnConnection},
        tracked but not changed.  Ports serving TLS listen with
        L{siteOnly} instead.
    """

    def __init__(self, site: Site, stats: RequestStats | None = None) -> None:
        self.site = site
        self.stats = stats if stats is not None else RequestStats()
        self.connections: set[IProtocol] = set()
        self.used: set[Any] = set()
        self._connectionOf: dict[Any, IProtocol] = {}
        self.upgraded: dict[IProtocol, Any] = {}
        self.drain: DrainObserver | None = None
        self.timed = False
        self.answerFirst: Callable[[Callable[..., Any]], Callable[..., Any]] | None = (
            None
        )
        self._baseRequestFactory: object = None
        self._requestFactory: Callable[..., Any] | None = None
        self._siteHeld = False
        self._siteStopsHeld = 0
        self._trackedClasses: dict[type, type] = {}
        self._builders: dict[object, Callable[[], Any] | None] = {}
        self.connectionFactory: Callable[[IAddress], IProtocol | None] | None = None

    def doStart(self) -> None:
        """
        A port starts listening with us: the site opens its log (twistd's
        log through L{useTwistdLog}, when it has no file of its own).
        """
        self.site.doStart()
        useTwistdLog(self.site)

    def doStop(self) -> None:
        """
        A port stopped listening with us: the site closes its log when the
        last one has, unless L{holdSite} keeps it open for a drain.
        """
        if self._siteHeld:
            self._siteStopsHeld += 1
        else:
            self.site.doStop()

    def holdSite(self) -> None:
        """
        Keep the site started (its access log open) when the ports stop
        listening, until L{releaseSite}: requests finished during a drain
        are logged too.
        """
        self._siteHeld = True

    def releaseSite(self) -> None:
        """
        Let the site stop as the ports that stopped meanwhile asked.
        """
        self._siteHeld = False
        held, self._siteStopsHeld = self._siteStopsHeld, 0
        for _ in range(held):
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
        Have the site (or L{connectionFactory}) build the connection, then
        count and track it.
        """
        if self.connectionFactory is not None:
            own = self.connectionFactory(addr)
            if own is not None:
                self.connections.add(own)
                self.stats.connectionsOpened += 1
            return own
        return self.buildSiteProtocol(addr)

    def buildSiteProtocol(self, addr: IAddress) -> IProtocol | None:
        """
        Have the site build the connection, then count and track it.
        """
        site = self.site
        protocol = site.protocol
        key = getattr(protocol, "__func__", protocol)
        try:
            build = self._builders[key]
        except KeyError:
            build = self._builders[key] = builderAs(protocol, self._trackedClass)
        if build is None:
            connection = site.buildProtocol(addr)
        else:
            # The site builds the connection as usual, calling our builder
            # as its protocol; the site's own is back right after.
            site.protocol = build  # type: ignore[method-assign]
            try:
                connection = site.buildProtocol(addr)
            finally:
                del site.protocol
                if site.protocol != protocol:
                    site.protocol = protocol  # type: ignore[method-assign]
        if connection is None:
            return None
        requestFactory = self._requestFactoryFor(connection.requestFactory)
        connection.requestFactory = requestFactory
        self._track(connection)
        return connection

    def _track(self, connection: IProtocol) -> None:
        self.connections.add(connection)
        self.stats.connectionsOpened += 1
        self._connectionOf[channelOf(connection)] = connection
        # The connection is an instance of a subclass of its own class that
        # hears of its loss, rather than being wrapped: a wrapper would sit
        # in the path of every byte.  An attribute on the instance would not
        # do: Twisted's HTTP/2-capable connection is a proxy that passes
        # attributes on to the channel it swaps out when ALPN picks h2.  It
        # was built as one (txsdnotify.web.channels) where the site's
        # protocol allows; else it becomes one now, which costs on each
        # later attribute access (CPython 3.11 gives it a real dict).
        cls = type(connection)
        if cls not in self._trackedClasses.values():
            connection.__class__ = self._trackedClass(cls)

    def _trackedClass(self, cls: type) -> type:
        """
        The subclass of the connection class C{cls} whose instances leave
        this tracker when they are lost.
        """
        tracked = self._trackedClasses.get(cls)
        if tracked is None:
            tracked = self._trackedClasses[cls] = _trackedClass(cls, self)
        return tracked

    def siteOnly(self) -> SiteOnly:
        """
        A factory for ports whose connections Twisted's stack must serve
        (TLS, HTTP/2) when L{connectionFactory} is set: tracked here too.
        """
        return SiteOnly(self)

    def release(self, connection: IProtocol) -> None:
        """
        An L{OwnConnection} was lost.
        """
        self._release(connection)

    def _release(self, connection: IProtocol) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        channel = channelOf(connection)
        self._connectionOf.pop(channel, None)
        self.used.discard(channel)
        self.upgraded.pop(connection, None)
        self.stats.connectionsClosed += 1
        if self.drain is not None:
            self.drain.connectionClosed(connection)

    def switchedProtocols(self, request: Any) -> None:
        """
        C{request}'s connection was taken over by another protocol (a
        WebSocket): the request counts as answered, and the connection stays
        tracked until the new protocol loses it.
        """
        # Only an HTTP/1 channel can be taken over (an HTTP/2 stream has no
        # transport of its own, and no tracked connection of its own).
        connection = self._connectionOf.get(request.channel)
        if connection is None or connection not in self.connections:
            return
        _ended(request, self.stats, True)
        transport = request.transport
        protocol = getattr(transport, "wrappedProtocol", None) or getattr(
            transport, "protocol", None
        )
        if protocol is None:
            return
        self.upgraded[connection] = transport
        original = protocol.connectionLost

        def connectionLost(reason: Failure) -> None:
            del protocol.connectionLost
            try:
                original(reason)
            finally:
                self._release(connection)

        protocol.connectionLost = connectionLost

    def transportOf(self, connection: IProtocol) -> Any:
        """
        The transport a tracked connection runs over, also once another
        protocol took it over.
        """
        transport = self.upgraded.get(connection)
        if transport is not None:
            return transport
        return getattr(channelOf(connection), "transport", None)

    def _requestFactoryFor(self, base: object) -> Callable[..., Any]:
        if base is not self._baseRequestFactory or self._requestFactory is None:
            self._baseRequestFactory = base
            self._requestFactory = trackingRequestFactory(base, self)
            if self.answerFirst is not None:
                self._requestFactory = self.answerFirst(self._requestFactory)
        return self._requestFactory


@implementer(IProtocolFactory, ILoggingContext, IProtocolNegotiationFactory)
class SiteOnly:
    """
    The factory of a port that a L{TrackingFactory} serves with its site's
    own connections, whatever its L{TrackingFactory.connectionFactory}.
    """

    def __init__(self, tracker: TrackingFactory) -> None:
        self.tracker = tracker

    def doStart(self) -> None:
        """
        As the tracker.
        """
        self.tracker.doStart()

    def doStop(self) -> None:
        """
        As the tracker.
        """
        self.tracker.doStop()

    def logPrefix(self) -> str:
        """
        As the tracker.
        """
        return self.tracker.logPrefix()

    def acceptableProtocols(self) -> list[bytes]:
        """
        As the tracker (ALPN).
        """
        return self.tracker.acceptableProtocols()

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        """
        A connection of the site's, tracked.
        """
        return self.tracker.buildSiteProtocol(addr)


def _began(request: Any, tracker: TrackingFactory) -> Any:
    """
    C{request} is about to be processed: count it and tell the drain.

    @return: Its channel, to see afterwards whether it switched protocols.
    """
    tracker.stats.requestBegan()
    setattr(request, PROCESSING, monotonic() if tracker.timed else True)
    channel = request.channel
    tracker.used.add(channel)
    drain = tracker.drain
    if drain is not None:
        drain.requestArrived(request)
    return channel


ABORTED_STATUS = 499
"""
The status the access log shows for a request whose connection was lost
before its response was complete (the client went away, or the drain aborted
it), as nginx logs a request its client closed: whatever status the
application meant to send never arrived whole.
"""


def _ended(request: Any, stats: RequestStats, sent: bool) -> None:
    """
    C{request} was answered (C{sent}), or its connection closed before:
    count it once.
    """
    started = getattr(request, PROCESSING, False)
    if started:
        setattr(request, PROCESSING, False)
        length = getattr(request, "sentLength", 0)
        if started is True:  # not timed
            if sent:
                stats.completed += 1
                stats.bytesSent += length
            else:
                stats.responseAborted(length)
        elif sent:
            stats.responseSent(request.code, monotonic() - started, length)
        else:
            stats.responseAborted(length)


def logAborted(request: Any) -> None:
    """
    Write a request whose connection is gone before it finished to the
    access log with the status L{ABORTED_STATUS}, as Twisted logs only
    finished ones: every request processed (or cut by the drain) appears
    there, and none as answered that was not.
    """
    channel = getattr(request, "channel", None)
    factory = getattr(channel, "factory", None)
    if factory is not None:
        request.code = ABORTED_STATUS
        factory.log(request)


def _logUnfinished(request: Any) -> None:
    if getattr(request, PROCESSING, False) and not request.finished:
        logAborted(request)


def _trackedClass(cls: type, tracker: TrackingFactory) -> type:
    """
    A subclass of the connection class C{cls} whose instances leave
    C{tracker} when they are lost.
    """

    class Tracked(cls):
        # The same layout as cls, so that __class__ can be assigned.
        __slots__ = ()

        def connectionLost(self, reason: Failure) -> None:
            try:
                super().connectionLost(reason)
            finally:
                tracker._release(self)

    Tracked.__name__ = cls.__name__
    Tracked.__qualname__ = cls.__qualname__
    Tracked.__module__ = cls.__module__
    return Tracked


def providesAsBase(cls: type, base: type) -> None:
    """
    Declare that the class C{cls}, made here from the request class
    C{base}, provides what C{base} directly provides (zope.interface does
    not pass a class's own declarations on to its subclasses).

    Twisted asks C{INonQueuedRequestFactory.providedBy} of its request
    factory for every request it makes: the answer decides how the factory
    is called, and a subclass without a declaration of its own costs an
    C{AttributeError} inside zope.interface each time.
    """
    directlyProvides(cls, directlyProvidedBy(base))


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
    if tracker.timed:
        return _timedRequestClass(base, tracker)
    stats = tracker.stats
    used = tracker.used
    baseProcess = base.process  # type: ignore[attr-defined]
    baseFinish = base.finish  # type: ignore[attr-defined]
    baseConnectionLost = base.connectionLost  # type: ignore[attr-defined]

    # Every override costs on each request, so there are as few as can be,
    # written out rather than shared (a call, a setattr() or a super() costs
    # more than the counting itself; process counts as
    # RequestStats.requestBegan does): a request counts once it is processed
    # (its body has arrived) and ends once it is finished or its client is
    # gone.  The attribute's name is PROCESSING; no constructor of ours.
    class TrackedRequest(base):
        __slots__ = _slotted(base)

        def process(self) -> None:
            stats.started += 1
            self._txsdnotifyProcessing = True
            channel = self.channel
            used.add(channel)
            if tracker.drain is not None:
                tracker.drain.requestArrived(self)
            baseProcess(self)
            if channel.transport is None and self._txsdnotifyProcessing:
                tracker.switchedProtocols(self)

        def finish(self) -> None:
            baseFinish(self)
            try:
                processing = self._txsdnotifyProcessing
            except AttributeError:  # never processed (a health check)
                return
            if processing:
                self._txsdnotifyProcessing = False
                stats.completed += 1
                stats.bytesSent += self.sentLength

        def connectionLost(self, reason: Failure) -> None:
            if getattr(self, PROCESSING, False):
                _logUnfinished(self)
                _ended(self, stats, self.finished)
            baseConnectionLost(self, reason)

    TrackedRequest.__name__ = TrackedRequest.__qualname__ = "Tracked" + base.__name__
    TrackedRequest.__module__ = base.__module__
    providesAsBase(TrackedRequest, base)
    return TrackedRequest


def _timedRequestClass(base: type, tracker: TrackingFactory) -> type:
    """
    As L{_trackingRequestClass}, and each request is timed and counted by
    status code (L{RequestStats.responseSent}, written out): PROCESSING
    holds when processing began.
    """
    stats = tracker.stats
    # RequestStats never replaces these lists (it changes them in place).
    byCode, durations = stats.byCode, stats.durations
    used = tracker.used
    baseProcess = base.process  # type: ignore[attr-defined]
    baseFinish = base.finish  # type: ignore[attr-defined]
    baseConnectionLost = base.connectionLost  # type: ignore[attr-defined]

    class TimedRequest(base):
        __slots__ = _slotted(base)

        def process(self) -> None:
            stats.started += 1
            self._txsdnotifyProcessing = monotonic()
            channel = self.channel
            used.add(channel)
            if tracker.drain is not None:
                tracker.drain.requestArrived(self)
            baseProcess(self)
            if channel.transport is None and self._txsdnotifyProcessing:
                tracker.switchedProtocols(self)

        def finish(self) -> None:
            baseFinish(self)
            try:
                started = self._txsdnotifyProcessing
            except AttributeError:  # never processed (a health check)
                return
            if started:
                self._txsdnotifyProcessing = 0.0
                seconds = monotonic() - started
                stats.completed += 1
                stats.bytesSent += self.sentLength
                try:
                    byCode[self.code] += 1
                except IndexError:
                    byCode[0] += 1
                durations[
                    0
                    if seconds <= FIRST_BUCKET
                    else bisect_left(DURATION_BUCKETS, seconds)
                ] += 1
                stats.durationSum += seconds

        def connectionLost(self, reason: Failure) -> None:
            if getattr(self, PROCESSING, False):
                _logUnfinished(self)
                _ended(self, stats, self.finished)
            baseConnectionLost(self, reason)

    TimedRequest.__name__ = TimedRequest.__qualname__ = "Tracked" + base.__name__
    TimedRequest.__module__ = base.__module__
    providesAsBase(TimedRequest, base)
    return TimedRequest


def _trackingRequestCallable(
    base: Callable[..., Any], tracker: TrackingFactory
) -> Callable[..., Any]:
    stats = tracker.stats

    def makeRequest(*args: Any, **kwargs: Any) -> Any:
        request = base(*args, **kwargs)
        process = request.process

        def tracked() -> None:
            channel = _began(request, tracker)
            process()
            if channel.transport is None and isProcessing(request):
                tracker.switchedProtocols(request)

        def ended(result: object) -> None:
            lost = isinstance(result, Failure)
            if lost:
                _logUnfinished(request)
            _ended(request, stats, not lost)

        request.process = tracked
        request.notifyFinish().addBoth(ended)
        return request

    return makeRequest


def connectionKinds(tracker: TrackingFactory) -> tuple[int, int, int]:
    """
    The open connections of C{tracker} by kind: (HTTP/1.x, HTTP/2, taken
    over by another protocol such as a WebSocket).  Walks the connections:
    for a scrape now and then, not for every request.
    """
    upgraded = len(tracker.upgraded)
    http2 = 0
    for connection in tracker.connections:
        if isH2(channelOf(connection)):
            http2 += 1
    return len(tracker.connections) - http2 - upgraded, http2, upgraded
