"""
Documented behaviour of WebService in this process that nothing else
watched: connections waiting in the accept queue at stop are served, not
reset; a reload asked for while one runs runs once more after it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import pytest_twisted
from test_service import (
    Controlled,
    makeService,
    portOf,
    readToEnd,
    sleep,
)  # noqa: F401
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource

from txsdnotify.testing import NotifyReceiver


@pytest.fixture
def live(receiver: NotifyReceiver) -> Iterator[NotifyReceiver]:
    """
    The notification receiver, read by the reactor.
    """
    receiver.startReading(reactor)
    yield receiver
    receiver.stopReading()


@pytest_twisted.inlineCallbacks
def until(
    predicate: Callable[[], bool], timeout: float = 10.0
) -> Generator[Any, Any, None]:
    """
    Let the reactor run until C{predicate()} is true.
    """
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        yield sleep(0.01)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest_twisted.inlineCallbacks
def test_acceptQueueServedOnStop(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    Connections the kernel completed but the reactor has not accepted yet
    when the stop begins get their responses, not a reset.
    """
    service = makeService(live, Controlled())
    service.startService()
    yield service.whenReady()
    address = ("127.0.0.1", portOf(service))
    clients = []
    # No yield between connecting and stopping: the reactor never gets to
    # accept these, they wait in the listening socket's queue.
    for _ in range(3):
        client = socket.create_connection(address, timeout=5)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        clients.append(client)
    stopped = service.stopService()
    try:
        for client in clients:
            response = yield readToEnd(client, timeout=10)
            assert response.startswith(b"HTTP/1.1 200 OK"), response
            assert response.endswith(b"hello")
    finally:
        for client in clients:
            client.close()
    yield stopped
    assert service.tracker.stats.completed == 3


@pytest_twisted.inlineCallbacks
def test_reloadsAskedMeanwhileRunOnceMore(
    live: NotifyReceiver,
) -> Generator[Any, Any, None]:
    """
    Two reloads asked for while one runs: one more reload after it (not
    two, not none), and every caller's Deferred fires once that is done.
    """
    service = makeService(live, Resource())
    gates: list[Deferred[None]] = []

    def hook() -> Deferred[None]:
        gates.append(Deferred())
        return gates[-1]

    service.addReloadHook(hook, "slow")
    service.startService()
    yield service.whenReady()
    first = service.reload()
    second, third = service.reload(), service.reload()
    assert len(gates) == 1
    gates[0].callback(None)
    yield until(lambda: len(gates) == 2)
    # The second run is the one the later callers wait for.
    assert not second.called and not third.called
    gates[1].callback(None)
    yield first
    yield second
    yield third
    yield sleep(0.2)
    assert len(gates) == 2
    yield until(lambda: len(live.values("RELOADING")) == 2)
    # READY=1 at start, then after each of the two reloads.
    yield until(lambda: len(live.values("READY")) == 3)
    yield service.stopService()
