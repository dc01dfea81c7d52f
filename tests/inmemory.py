"""
HTTP connections over an in-memory transport, for tests of the tracking and
the drain: no sockets, no reactor; twisted.web's, or the fast HTTP/1.1
path's (L{fastTracker}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.iweb import INonQueuedRequestFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import provider

from txsdnotify.web.tracking import TrackingFactory
from txsdnotify.wsgi.container import WSGIApplication
from txsdnotify.wsgi.http11 import HTTP11Factory

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"


class Root(Resource):
    """
    /hold is answered only when a test finishes it (see C{held}); anything
    else gets C{body} at once.  A POST is answered with the length of its
    body.
    """

    isLeaf = True

    def __init__(self, body: bytes = b"ok") -> None:
        super().__init__()
        self.body = body
        self.held: list[Request] = []

    def render_GET(self, request: Request) -> Any:
        if request.path == b"/hold":
            self.held.append(request)
            return NOT_DONE_YET
        return self.body

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        return b"got %d" % len(request.content.read())


def connect(tracker: TrackingFactory) -> tuple[Any, StringTransport]:
    """
    A new connection to C{tracker}, and its transport.
    """
    connection = tracker.buildProtocol(PEER)
    assert connection is not None
    transport = StringTransport()
    connection.makeConnection(transport)
    return connection, transport


class InlineReactor(Clock):
    """
    A fake clock that also stands in for the reactor of a WSGI container:
    what the container's threads hand to the reactor runs at once.
    """

    def callFromThread(self, f: Callable[..., object], *args: Any, **kw: Any) -> None:
        """
        Run C{f} now.
        """
        f(*args, **kw)

    def addSystemEventTrigger(self, *args: Any, **kw: Any) -> None:
        """
        Never shuts down: nothing to trigger.
        """


class InlineThreads:
    """
    A WSGI container's threads that run each request at once, in the caller.
    """

    def submit(self, job: Callable[[], object]) -> None:
        """
        Run C{job} now.
        """
        job()

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:
        """
        Call C{f(*args)} now: the request's thread is the caller's.
        """
        f(*args)

    callAfterJob = callFromThread

    def stop(self) -> None:
        """
        Nothing to stop.
        """


def hello(
    environ: dict[str, Any], start_response: Callable[..., object]
) -> list[bytes]:
    """
    A WSGI application answering C{ok}, as L{Root} does.
    """
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def fastTracker(clock: InlineReactor) -> TrackingFactory:
    """
    A tracker whose connections are the fast HTTP/1.1 path's, serving
    L{hello} (as C{WebService} sets it up), scheduled by C{clock}.
    """
    container = WSGIApplication(hello, InlineThreads(), clock)  # type: ignore[arg-type]
    site = Site(container)
    tracker = TrackingFactory(site)
    tracker.connectionFactory = HTTP11Factory(container, tracker, site, reactor=clock)
    return tracker


@provider(INonQueuedRequestFactory)
class NonQueued(Request):
    """
    A request class that Twisted calls with the channel alone.
    """

    def __init__(self, channel: Any) -> None:
        super().__init__(channel)


def checkProvidesAsBase(make: Callable[[type], Any]) -> None:
    """
    The request class C{make} makes from a request class provides what that
    class provides, by a declaration of its own (as Twisted's L{Request}
    has one): Twisted asks C{INonQueuedRequestFactory} of it for every
    request.
    """
    assert INonQueuedRequestFactory.providedBy(make(NonQueued))
    plain = make(Request)
    assert not INonQueuedRequestFactory.providedBy(plain)
    assert "__provides__" in vars(plain)
