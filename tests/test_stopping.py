"""
The stop as an operator meets it, in this process: nothing contradicts
STOPPING=1, a forced stop, drain hooks, pipelined and half-sent requests,
the accept queue, connections that switched protocols, the access log.
"""

from __future__ import annotations

import socket
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from test_service import (
    Controlled,
    ControlledWSGI,
    live,
    makeService,
    portOf,
    readToEnd,
    served,
    sleep,
    url,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from txsdnotify.service import WebService
from txsdnotify.systemd.lifecycle import State, StoppedBeforeReady
from txsdnotify.testing import NotifyReceiver

__all__ = ["live", "served"]


def keys(receiver: NotifyReceiver) -> list[str]:
    """
    The lifecycle keys received, in order.
    """
    wanted = ("READY", "RELOADING", "STOPPING")
    return [k for m in receiver.messages for k in m if k in wanted]


@pytest_twisted.inlineCallbacks
def drainStarted(service: WebService) -> Generator[Any, Any, None]:
    """
    Wait until the ports are closed and the drain has begun.
    """
    while service.drain is None:
        yield sleep(0.01)


def connectTo(service: WebService) -> socket.socket:
    return socket.create_connection(("127.0.0.1", portOf(service)))


WAIT = b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest_twisted.inlineCallbacks
def requestInFlight(
    service: WebService, resource: Controlled | ControlledWSGI, data: bytes = WAIT
) -> Generator[Any, Any, socket.socket]:
    """
    Send C{data} on a new connection and wait until the resource holds the
    request; the client's socket.
    """
    arrived = resource.nextArrival()
    client = connectTo(service)
    client.sendall(data)
    yield arrived
    return client


@pytest_twisted.inlineCallbacks
def test_reloadRunningAtStopSendsNoReady(
    live: NotifyReceiver,
) -> Generator[Any, Any, None]:
    """
    A reload hook still running when the stop begins: its end sends no
    READY=1 after STOPPING=1.
    """
    service = makeService(live, Controlled())
    hook: Deferred[None] = Deferred()
    service.addReloadHook(lambda: hook)
    service.startService()
    yield service.whenReady()
    reloaded = service.reload()
    yield live.waitFor("RELOADING")
    yield service.stopService()
    hook.callback(None)
    yield reloaded
    yield sleep(0.05)
    assert keys(live) == ["READY", "RELOADING", "STOPPING"]
    assert service.lifecycle.state is State.STOPPED


@pytest_twisted.inlineCallbacks
def test_readinessConditionFiringDuringStop(
    live: NotifyReceiver,
) -> Generator[Any, Any, None]:
    """
    A readiness condition that fires only once the stop began sends no
    READY=1, and whenReady() settles (it fails) instead of waiting for ever.
    """
    service = makeService(live, Controlled())
    condition: Deferred[None] = Deferred()
    service.addReadinessCondition(condition)
    service.startService()
    waiting = service.whenReady()
    yield sleep(0.05)
    yield service.stopService()
    condition.callback(None)
    with pytest.raises(StoppedBeforeReady):
        yield waiting
    yield sleep(0.05)
    assert keys(live) == ["STOPPING"]


@pytest_twisted.inlineCallbacks
def test_noRestart(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    A stopped service refuses to start again (it would say READY=1 with no
    port bound).
    """
    service = makeService(live, Controlled())
    service.startService()
    yield service.whenReady()
    yield service.stopService()
    with pytest.raises(RuntimeError, match="cannot be started again"):
        service.startService()
    assert keys(live) == ["READY", "STOPPING"]


@pytest_twisted.inlineCallbacks
def test_forceAbortsAtOnce(
    live: NotifyReceiver, served: tuple[Any, dict[str, Any]]
) -> Generator[Any, Any, None]:
    resource, options = served
    service = makeService(live, resource, **options, drainTimeout=60)
    service.startService()
    yield service.whenReady()
    client = yield requestInFlight(service, resource)
    stopped = service.stopService()
    yield live.waitFor("STOPPING")
    started = reactor.seconds()
    service.force()
    yield stopped
    assert reactor.seconds() - started < 2  # not the 60 s drain timeout
    forced = yield live.waitFor(
        lambda m: m.get("STATUS", "").startswith("Stopping now")
    )
    assert "READY" not in forced
    final = yield live.waitFor(lambda m: m.get("STATUS", "").startswith("Stopped:"))
    assert "stop forced" in final["STATUS"] and "1 aborted" in final["STATUS"]
    client.close()


@pytest_twisted.inlineCallbacks
def test_forceBeforeStopDoesNothing(live: NotifyReceiver) -> Generator[Any, Any, None]:
    service = makeService(live, Controlled())
    service.startService()
    yield service.whenReady()
    service.force()
    assert service.lifecycle.state is State.READY
    yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_drainHookToldSecondsLeft(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    A drain hook hears of the drain once the ports are closed, with the time
    left; a connection it ends ends the drain at once.
    """
    resource = Controlled()
    service = makeService(live, resource, drainTimeout=30)
    told: list[tuple[float, int]] = []

    def hook(left: float) -> None:
        told.append((left, len(service.ports)))
        request = resource.waiting.pop()
        request.write(b"bye")
        request.finish()

    def failing(left: float) -> None:
        raise RuntimeError("a broken hook")

    service.addDrainHook(failing)
    service.addDrainHook(hook)
    service.startService()
    yield service.whenReady()
    client = yield requestInFlight(service, resource)
    started = reactor.seconds()
    yield service.stopService()
    assert reactor.seconds() - started < 5  # not the 30 s drain timeout
    assert told == [(30, 0)]
    data = yield readToEnd(client)
    assert data.endswith(b"bye\r\n0\r\n\r\n")
    client.close()


@pytest_twisted.inlineCallbacks
def test_pipelinedRequestsAllAnswered(
    live: NotifyReceiver,
    served: tuple[Any, dict[str, Any]],
) -> Generator[Any, Any, None]:
    """
    Three requests pipelined before the stop: all three are answered, and
    only the last says Connection: close.
    """
    resource, options = served
    service = makeService(live, resource, **options)
    service.startService()
    yield service.whenReady()
    client = yield requestInFlight(
        service,
        resource,
        WAIT
        + b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    yield sleep(0.1)  # the other two are in the server's buffer by now
    stopped = service.stopService()
    yield drainStarted(service)
    resource.answer(b"one")
    data = yield readToEnd(client)
    yield stopped
    client.close()
    responses = data.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(responses) == 3
    assert [b"Connection: close" in r for r in responses] == [False, False, True]
    assert service.tracker.stats.completed == 3


@pytest_twisted.inlineCallbacks
def test_halfSentRequestGetsOnlyTheGrace(
    live: NotifyReceiver,
    served: tuple[Any, dict[str, Any]],
) -> Generator[Any, Any, None]:
    """
    A client still trickling its headers when the stop begins waits no
    longer than the grace, while a request in flight completes.
    """
    resource, options = served
    service = makeService(live, resource, **options, drainGrace=0.5, drainTimeout=30)
    service.startService()
    yield service.whenReady()
    busy = yield requestInFlight(service, resource)
    slow = [connectTo(service) for _ in range(20)]
    for s in slow:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    yield sleep(0.2)
    assert service.tracker.stats.inFlight == 1
    started = reactor.seconds()
    stopped = service.stopService()
    yield live.waitFor("STOPPING")
    while len(service.tracker.connections) > 1:
        yield sleep(0.05)
        assert reactor.seconds() - started < 5, "slow clients held the stop"
    assert reactor.seconds() - started >= 0.4
    resource.answer(b"done")
    data = yield readToEnd(busy)
    yield stopped
    assert data.startswith(b"HTTP/1.1 200 OK")
    for s in [busy, *slow]:
        s.close()


@pytest_twisted.inlineCallbacks
def test_acceptQueueServedOnStop(
    live: NotifyReceiver, served: tuple[Any, dict[str, Any]]
) -> Generator[Any, Any, None]:
    """
    Connections still waiting in the listen queue when the stop begins are
    accepted and served, with --fd-store too (whether systemd kept a copy
    cannot be known).
    """
    for fdStore in (False, True):
        service = makeService(live, served[0], fdStore=fdStore, **served[1])
        service.startService()
        yield service.whenReady()
        # Connected by the kernel, not yet accepted: the reactor has not run.
        client = connectTo(service)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        stopped = service.stopService()
        data = yield readToEnd(client)
        yield stopped
        client.close()
        assert data.startswith(b"HTTP/1.1 200 OK"), (fdStore, data)


@pytest_twisted.inlineCallbacks
def test_callableRequestFactoryDrains(
    live: NotifyReceiver,
) -> Generator[Any, Any, None]:
    """
    A site whose request factory is a plain function gets the drain's
    Connection: close too.
    """
    resource = Controlled()

    def factory(*args: Any, **kwargs: Any) -> Request:
        return Request(*args, **kwargs)

    service = makeService(live, Site(resource, requestFactory=factory))
    service.startService()
    yield service.whenReady()
    client = yield requestInFlight(service, resource)
    assert service.tracker.stats.inFlight == 1
    stopped = service.stopService()
    yield drainStarted(service)
    resource.answer(b"late")
    data = yield readToEnd(client)
    yield stopped
    client.close()
    assert b"\r\nConnection: close\r\n" in data


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Upgrade(Resource):
    """
    Switches the connection to an echo protocol, as autobahn's
    WebSocketResource does: the HTTP channel loses its transport.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> Any:
        request.setResponseCode(101)
        request.setHeader(b"upgrade", b"echo")
        request.setHeader(b"connection", b"Upgrade")
        request.write(b"")
        protocol = Echo()
        # The TCP connection itself: its protocol is in no interface.
        transport: Any
        transport, request.channel.transport = request.channel.transport, None
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return NOT_DONE_YET


@pytest_twisted.inlineCallbacks
def test_switchedProtocolsTracked(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    Connections taken over by another protocol count while open and are
    released when they close; at the drain timeout they are aborted without
    waiting any longer.
    """
    service = makeService(live, Upgrade(), drainTimeout=0.5)
    service.startService()
    yield service.whenReady()
    stats = service.tracker.stats
    clients = []
    for _ in range(5):
        c = connectTo(service)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        clients.append(c)
    while len(service.tracker.upgraded) < 5:
        yield sleep(0.02)
    assert (stats.inFlight, stats.openConnections) == (0, 5)
    for c in clients[:3]:
        c.close()
    while stats.openConnections > 2:
        yield sleep(0.02)
    assert len(service.tracker.connections) == 2
    assert len(service.tracker.upgraded) == 2
    started = reactor.seconds()
    yield service.stopService()
    # The drain timeout (0.5 s), and not the extra second the drain allows
    # connections that never report their loss.
    assert reactor.seconds() - started < 0.5 + 0.9
    assert service.drain is not None and service.drain.aborted == 2
    assert stats.openConnections == 0
    for c in clients[3:]:
        c.close()


@pytest_twisted.inlineCallbacks
def test_accessLogWritesEveryRequest(
    live: NotifyReceiver, tmp_path: Path
) -> Generator[Any, Any, None]:
    """
    Requests finished during the drain are logged (the site's log stays open
    until the drain ends), and so is one whose client left before it was
    answered.
    """
    resource = Controlled()
    log = tmp_path / "access.log"
    service = makeService(live, Site(resource, logPath=str(log)))
    service.startService()
    yield service.whenReady()
    gone = yield requestInFlight(
        service, resource, b"GET /wait?gone HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    gone.close()
    while resource.waiting[0].channel is not None:
        yield sleep(0.02)
    resource.waiting.pop()
    client = yield requestInFlight(
        service, resource, b"GET /wait?drained HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    stopped = service.stopService()
    yield drainStarted(service)
    resource.answer()
    yield readToEnd(client)
    yield stopped
    client.close()
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert "/wait?gone" in lines[0] and "/wait?drained" in lines[1]


def test_urlHelper() -> None:
    # test_service's helpers are shared here; keep their import honest.
    assert callable(url)


@pytest_twisted.inlineCallbacks
def test_idleKeepAliveClosedAtOnce(
    live: NotifyReceiver, served: tuple[Any, dict[str, Any]]
) -> Generator[Any, Any, None]:
    """
    A keep-alive connection that has been answered and is idle closes as
    soon as the drain begins, not after the grace.
    """
    resource, options = served
    service = makeService(live, resource, drainGrace=30, **options)
    service.startService()
    yield service.whenReady()
    client = connectTo(service)
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    client.setblocking(False)
    data = b""
    while not data.endswith(b"hello"):
        try:
            data += client.recv(65536)
        except BlockingIOError:
            yield sleep(0.01)
    started = reactor.seconds()
    stopped = service.stopService()
    rest = yield readToEnd(client)
    yield stopped
    assert rest == b""
    assert reactor.seconds() - started < 10  # not the 30 s grace
    client.close()
