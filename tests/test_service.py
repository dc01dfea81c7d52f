"""
Tests for txsdnotify.service.WebService in this process: a real reactor,
real TCP, treq as the client, and a real notification socket.
"""

from __future__ import annotations

import queue
import socket
from collections.abc import Generator, Iterator
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from txsdnotify.service import ListenError, ListenFailed, WebService
from txsdnotify.systemd.notify import Notifier
from txsdnotify.testing import NotifyReceiver
from txsdnotify.wsgi.container import WSGIApplication


class Controlled(Resource):
    """
    /wait answers only when the test says so; anything else answers at once.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Request] = []
        self.arrived: Deferred[Request] | None = None

    def render_GET(self, request: Request) -> Any:
        if request.path == b"/wait":
            self.waiting.append(request)
            if self.arrived is not None:
                d, self.arrived = self.arrived, None
                d.callback(request)
            return NOT_DONE_YET
        return b"hello"

    def nextArrival(self) -> Deferred[Request]:
        self.arrived = Deferred()
        return self.arrived

    def answer(self, body: bytes = b"done") -> None:
        request = self.waiting.pop(0)
        request.write(body)
        request.finish()


class ControlledWSGI(WSGIApplication):
    """
    L{Controlled} as a WSGI application: /wait holds its thread until the
    test answers; anything else answers at once.
    """

    def __init__(self) -> None:
        super().__init__(self._app, reactor=reactor)
        self.waiting: list[queue.Queue[bytes]] = []
        self.arrived: Deferred[object] | None = None

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/wait":
            box: queue.Queue[bytes] = queue.Queue()
            reactor.callFromThread(self._arrive, box)  # type: ignore[attr-defined]
            body = box.get(timeout=120)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [body]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    def _arrive(self, box: queue.Queue[bytes]) -> None:
        self.waiting.append(box)
        if self.arrived is not None:
            d, self.arrived = self.arrived, None
            d.callback(box)

    def nextArrival(self) -> Deferred[object]:
        self.arrived = Deferred()
        return self.arrived

    def answer(self, body: bytes = b"done") -> None:
        self.waiting.pop(0).put(body)


SERVED = ("resource", "wsgi-twisted", "wsgi-fast")
"""
What a drain test serves: a plain resource, or a WSGI application on each
HTTP path.
"""


@pytest.fixture(params=SERVED)
def served(request: pytest.FixtureRequest) -> tuple[Any, dict[str, Any]]:
    """
    A L{Controlled} resource or a L{ControlledWSGI} application, and the
    arguments of L{makeService} that serve it on its HTTP path.
    """
    if request.param == "resource":
        return Controlled(), {}
    parser = request.param.split("-")[1]
    return ControlledWSGI(), {"httpParser": parser}


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


@pytest.fixture
def live(receiver: NotifyReceiver) -> Iterator[NotifyReceiver]:
    receiver.startReading(reactor)
    yield receiver
    receiver.stopReading()


@pytest.fixture
def pool() -> Iterator[HTTPConnectionPool]:
    p = HTTPConnectionPool(reactor, persistent=True)
    p.retryAutomatically = False
    yield p
    pytest_twisted.blockon(p.closeCachedConnections())


def makeService(
    receiver: NotifyReceiver, resource: Resource | Site, **kwargs: Any
) -> WebService:
    """
    A service of C{resource} (or of a ready-made C{Site}) on a free port,
    notifying C{receiver}.
    """
    service = WebService(
        resource if isinstance(resource, Site) else Site(resource),
        kwargs.pop("endpoints", ["tcp:0:interface=127.0.0.1"]),
        notifier=Notifier.fromEnvironment(receiver.environ(), reactor=reactor),
        reactor=reactor,
        **kwargs,
    )
    return service


def portOf(service: WebService, index: int = 0) -> int:
    """
    The TCP port number of C{service}'s C{index}th listener.
    """
    address = service.ports[index].getHost()
    assert isinstance(address, (IPv4Address, IPv6Address))
    return address.port


def url(service: WebService, path: str = "/", index: int = 0) -> str:
    return f"http://127.0.0.1:{portOf(service, index)}{path}"


@pytest_twisted.inlineCallbacks
def readToEnd(
    client: socket.socket, timeout: float = 5.0
) -> Generator[Any, Any, bytes]:
    """
    Everything the server sends until it closes, read without blocking the
    reactor.
    """
    client.setblocking(False)
    data = b""
    deadline = reactor.seconds() + timeout
    while reactor.seconds() < deadline:
        try:
            chunk = client.recv(65536)
        except BlockingIOError:
            yield sleep(0.01)
            continue
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"connection still open after {timeout}s; got {data!r}")


def secondReady(receiver: NotifyReceiver) -> Deferred[dict[str, str]]:
    return receiver.waitFor(
        lambda m: "READY" in m and sum("READY" in x for x in receiver.messages) >= 2
    )


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest_twisted.inlineCallbacks
def test_readyOnlyOnceBound(live: NotifyReceiver) -> Generator[Any, Any, None]:
    service = makeService(live, Controlled())
    ready = live.waitFor("READY")
    service.privilegedStartService()
    service.startService()
    message = yield ready
    assert answers(portOf(service))
    assert message["MAINPID"].isdigit()
    assert message["STATUS"].startswith("Total requests: 0;")
    yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_statusCountsRequests(
    live: NotifyReceiver, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    service = makeService(live, Controlled(), statusInterval=0.05)
    service.startService()
    yield service.whenReady()
    for _ in range(7):
        response = yield treq.get(url(service), pool=pool)
        assert (yield response.content()) == b"hello"
    status = yield live.waitFor(lambda m: "Total requests: 7;" in m.get("STATUS", ""))
    assert "In flight: 0;" in status["STATUS"]
    assert "Connections: 1;" in status["STATUS"]
    assert service.tracker.stats.bytesSent == 7 * len(b"hello")
    yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_statusShowsInFlight(
    live: NotifyReceiver, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    resource = Controlled()
    service = makeService(live, resource, statusInterval=0.05)
    service.startService()
    yield service.whenReady()
    arrived = resource.nextArrival()
    pending = treq.get(url(service, "/wait"), pool=pool)
    yield arrived
    yield live.waitFor(lambda m: "In flight: 1;" in m.get("STATUS", ""))
    resource.answer()
    yield pending
    yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_stopDrainsRequestInFlight(live: NotifyReceiver) -> Generator[Any, Any, None]:
    resource = Controlled()
    service = makeService(live, resource)
    service.startService()
    yield service.whenReady()
    port = portOf(service)
    arrived = resource.nextArrival()
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
    yield arrived
    stopped = service.stopService()
    stopping = yield live.waitFor("STOPPING")
    assert "1 request(s) in flight" in stopping["STATUS"]
    yield sleep(0.1)
    assert not answers(port)
    assert not stopped.called
    resource.answer(b"finished")
    data = yield readToEnd(client)
    client.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in data
    assert data.endswith(b"8\r\nfinished\r\n0\r\n\r\n")
    yield stopped
    assert not service.tracker.connections
    final = yield live.waitFor(lambda m: m.get("STATUS", "").startswith("Stopped:"))
    assert "1 request(s) served" in final["STATUS"]


@pytest_twisted.inlineCallbacks
def test_idleKeepAliveClosedAtOnce(
    live: NotifyReceiver, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    service = makeService(live, Controlled(), drainGrace=5)
    service.startService()
    yield service.whenReady()
    response = yield treq.get(url(service), pool=pool)
    yield response.content()
    assert len(service.tracker.connections) == 1
    started = reactor.seconds()
    yield service.stopService()
    assert reactor.seconds() - started < 1
    assert not service.tracker.connections


@pytest_twisted.inlineCallbacks
def test_freshConnectionGetsGrace(live: NotifyReceiver) -> Generator[Any, Any, None]:
    service = makeService(live, Controlled(), drainGrace=2)
    service.startService()
    yield service.whenReady()
    client = socket.create_connection(("127.0.0.1", portOf(service)))
    client.settimeout(5)
    try:
        yield sleep(0.1)
        stopped = service.stopService()
        yield sleep(0.3)
        assert not stopped.called
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        yield stopped
        data = yield readToEnd(client)
    finally:
        client.close()
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in data
    assert data.endswith(b"hello")


@pytest_twisted.inlineCallbacks
def test_freshConnectionClosedAfterGrace(
    live: NotifyReceiver,
) -> Generator[Any, Any, None]:
    service = makeService(live, Controlled(), drainGrace=0.3)
    service.startService()
    yield service.whenReady()
    client = socket.create_connection(("127.0.0.1", portOf(service)))
    try:
        yield sleep(0.1)
        started = reactor.seconds()
        yield service.stopService()
        assert 0.25 < reactor.seconds() - started < 2
    finally:
        client.close()


@pytest_twisted.inlineCallbacks
def test_drainTimeoutAborts(
    live: NotifyReceiver, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    resource = Controlled()
    service = makeService(live, resource, drainTimeout=0.5)
    service.startService()
    yield service.whenReady()
    arrived = resource.nextArrival()
    pending = treq.get(url(service, "/wait"), pool=pool)
    pending.addErrback(lambda f: f.value)
    yield arrived
    started = reactor.seconds()
    yield service.stopService()
    assert 0.4 < reactor.seconds() - started < 3
    assert not service.tracker.connections
    assert service.drain is not None and service.drain.aborted == 1
    error = yield pending
    assert isinstance(error, Exception)
    final = yield live.waitFor(lambda m: m.get("STATUS", "").startswith("Stopped:"))
    assert "1 aborted" in final["STATUS"]


@pytest_twisted.inlineCallbacks
def test_statusCountsDownDuringDrain(
    live: NotifyReceiver, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    resource = Controlled()
    service = makeService(live, resource, statusInterval=0.05, drainTimeout=10)
    service.startService()
    yield service.whenReady()
    arrived = resource.nextArrival()
    pending = treq.get(url(service, "/wait"), pool=pool)
    yield arrived
    stopped = service.stopService()
    message = yield live.waitFor(lambda m: "s left" in m.get("STATUS", ""))
    assert message["STATUS"].startswith(
        "Stopping: draining 1 connection(s), 1 request(s) in flight"
    )
    resource.answer()
    yield pending
    yield stopped


def test_portInUse(receiver: NotifyReceiver) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        service = makeService(
            receiver, Controlled(), endpoints=[f"tcp:{port}:interface=127.0.0.1"]
        )
        with pytest.raises(ListenFailed) as caught:
            service.privilegedStartService()
    assert str(caught.value) == (
        f"sdweb: cannot listen on tcp:{port}:interface=127.0.0.1:"
        " Address already in use"
    )
    assert isinstance(caught.value, SystemExit)
    message = receiver.expect("ERRNO")
    assert message["ERRNO"] == "98"
    assert message["STATUS"].startswith("Failed: cannot listen on")
    assert "READY" not in str(receiver.receiveAvailable())


@pytest_twisted.inlineCallbacks
def test_oneOfTwoFails(live: NotifyReceiver) -> Generator[Any, Any, None]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        service = makeService(
            live,
            Controlled(),
            endpoints=["tcp:0:interface=127.0.0.1", f"tcp:{busy}:interface=127.0.0.1"],
        )
        with pytest.raises(ListenFailed):
            service.privilegedStartService()
    yield sleep(0.05)
    assert service.ports == []
    assert not service.tracker.connections


@pytest_twisted.inlineCallbacks
def test_whenReadyFailsWithoutTwistd(live: NotifyReceiver) -> Generator[Any, Any, None]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        service = makeService(
            live, Controlled(), endpoints=[f"tcp:{busy}:interface=127.0.0.1"]
        )
        ready = service.whenReady()
        service.startService()
        with pytest.raises(ListenError):
            yield ready
    message = yield live.waitFor("ERRNO")
    assert message["ERRNO"] == "98"


@pytest_twisted.inlineCallbacks
def test_customRequestFactories(
    live: NotifyReceiver, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    class MyRequest(Request):
        seen = 0

        def process(self) -> None:
            MyRequest.seen += 1
            super().process()

    def callableFactory(*args: Any, **kwargs: Any) -> Request:
        return Request(*args, **kwargs)

    for factory in (MyRequest, callableFactory):
        site = Site(Controlled(), requestFactory=factory)
        service = makeService(live, site)
        service.startService()
        yield service.whenReady()
        for _ in range(3):
            response = yield treq.get(url(service), pool=pool)
            assert (yield response.content()) == b"hello"
        stats = service.tracker.stats
        assert (stats.started, stats.completed) == (3, 3)
        assert site.requestFactory is factory
        yield service.stopService()
    assert MyRequest.seen == 3


def test_needsAnEndpoint() -> None:
    with pytest.raises(ValueError):
        WebService(Site(Resource()), [])


@pytest_twisted.inlineCallbacks
def test_reloadSequence(
    live: NotifyReceiver, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    service = makeService(live, Controlled(), statusInterval=0.05)
    calls: list[str] = []
    gate: Deferred[None] = Deferred()

    def slowHook() -> Deferred[None]:
        calls.append("slow")
        return gate

    service.addReloadHook(slowHook)
    service.startService()
    yield live.waitFor("READY")
    seen = len(live.messages)
    reloaded = service.reload()
    reloading = yield live.waitFor("RELOADING")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert calls == ["slow"]
    # Requests are served while a hook runs.
    response = yield treq.get(url(service), pool=pool)
    assert (yield response.content()) == b"hello"
    assert "READY" not in str(live.messages[seen:])
    gate.callback(None)
    yield reloaded
    yield secondReady(live)
    ready = [m for m in live.messages[seen:] if "READY" in m]
    assert len(ready) == 1
    assert ready[0]["STATUS"].startswith("Total requests: ")
    yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_failedReloadStillReady(live: NotifyReceiver) -> Generator[Any, Any, None]:
    service = makeService(live, Controlled(), statusInterval=0.05)

    def broken() -> None:
        raise ValueError("bad config")

    service.addReloadHook(broken, "load config")
    service.startService()
    yield live.waitFor("READY")
    seen = len(live.messages)
    yield service.reload()
    yield secondReady(live)
    ready = [m for m in live.messages[seen:] if "READY" in m]
    assert len(ready) == 1
    assert "Reload failed at " in ready[0]["STATUS"]
    assert "load config: bad config" in ready[0]["STATUS"]
    # The note stays on the status line until a reload succeeds.
    yield sleep(0.2)
    assert "Reload failed" in live.values("STATUS")[-1]
    yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_sighupReloads(live: NotifyReceiver) -> Generator[Any, Any, None]:
    import os
    import signal

    before = signal.getsignal(signal.SIGHUP)
    service = makeService(live, Controlled())
    service.startService()
    yield service.whenReady()
    assert signal.getsignal(signal.SIGHUP) != before
    os.kill(os.getpid(), signal.SIGHUP)
    yield live.waitFor("RELOADING")
    yield secondReady(live)
    yield service.stopService()
    # The handler that was there before is back.
    assert signal.getsignal(signal.SIGHUP) == before


@pytest_twisted.inlineCallbacks
def test_stoppingExtendsTimeout(live: NotifyReceiver) -> Generator[Any, Any, None]:
    service = makeService(live, Controlled(), drainTimeout=60)
    service.startService()
    yield service.whenReady()
    yield service.stopService()
    stopping = yield live.waitFor("STOPPING")
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) == 65_000_000


@pytest_twisted.inlineCallbacks
def test_watchdogPings(receiver: NotifyReceiver) -> Generator[Any, Any, None]:
    receiver.startReading(reactor)
    service = WebService(
        Site(Controlled()),
        ["tcp:0:interface=127.0.0.1"],
        environ={"NOTIFY_SOCKET": receiver.path, "WATCHDOG_USEC": "200000"},
        reactor=reactor,
    )
    service.startService()
    yield service.whenReady()
    yield sleep(0.55)
    pings = [m for m in receiver.messages if "WATCHDOG" in m]
    # Every 0.1 s; a loaded machine may delay a few, never add any.
    assert 3 <= len(pings) <= 8
    yield service.stopService()
    receiver.stopReading()


def test_noWatchdogWithoutEnvironment() -> None:
    service = WebService(Site(Controlled()), ["tcp:0"], environ={})
    assert service.watchdog is None
