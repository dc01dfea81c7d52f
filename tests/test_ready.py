"""
Tests for txsdnotify.ready: READY=1 for any service tree once its listening
children are bound and its readiness conditions have fired.
"""

from __future__ import annotations

import socket
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.application import strports
from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Site

from txsdnotify.ready import NotifyService, ReadinessConditions
from txsdnotify.service import WebService
from txsdnotify.testing import MemoryNotifier, NotifyReceiver


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


def echoService(description: str) -> Service:
    return strports.service(description, Factory.forProtocol(Echo))


def test_conditionsFireTogether() -> None:
    conditions = ReadinessConditions()
    first: Deferred[str] = Deferred()
    calls: list[str] = []
    conditions.add(first)
    conditions.add(lambda: calls.append("called"))
    first.addCallback(lambda r: calls.append(f"own callback got {r}"))
    all = conditions.whenAll()
    assert calls == ["called"]
    assert not all.called
    first.callback("warm")
    assert all.called and all.result is None
    assert calls == ["called", "own callback got warm"]


def test_conditionFailure() -> None:
    conditions = ReadinessConditions()
    conditions.add(lambda: 1 / 0)
    failures: list[Any] = []
    conditions.whenAll().addErrback(failures.append)
    assert failures[0].check(ZeroDivisionError)


@pytest_twisted.inlineCallbacks
def test_readyAfterChildrenAndConditions(
    receiver: NotifyReceiver,
) -> Generator[Any, Any, None]:
    receiver.startReading(reactor)
    top = NotifyService(environ=receiver.environ(), status="Echo ready")
    echoService("tcp:0:interface=127.0.0.1").setServiceParent(top)
    pool: Deferred[None] = Deferred()
    top.addReadinessCondition(pool)
    top.privilegedStartService()
    top.startService()
    ready = top.whenReady()
    assert not ready.called
    pool.callback(None)
    yield ready
    message = yield receiver.waitFor("READY")
    assert message["STATUS"] == "Echo ready"
    yield top.stopService()
    stopping = yield receiver.waitFor("STOPPING")
    assert stopping["STOPPING"] == "1"
    receiver.stopReading()


@pytest_twisted.inlineCallbacks
def test_failedListenReported(receiver: NotifyReceiver) -> Generator[Any, Any, None]:
    receiver.startReading(reactor)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        top = NotifyService(environ=receiver.environ())
        service = strports.service(
            f"tcp:{port}:interface=127.0.0.1", Factory.forProtocol(Echo)
        )
        service._raiseSynchronously = False  # as a non-twistd caller would
        service.setServiceParent(top)
        top.startService()
        with pytest.raises(RuntimeError, match="did not start listening"):
            yield top.whenReady()
    message = yield receiver.waitFor("STATUS")
    assert message["STATUS"].startswith("Failed: ")
    assert "did not start listening" in message["STATUS"]
    assert "READY" not in str(receiver.messages)
    yield top.stopService()
    receiver.stopReading()


def quietWebService(notifier: MemoryNotifier) -> WebService:
    return WebService(
        Site(Resource()),
        ["tcp:0:interface=127.0.0.1"],
        notifier=notifier,
        environ={},
        reactor=reactor,
    )


@pytest_twisted.inlineCallbacks
def test_webServiceWaitsForConditions() -> Generator[Any, Any, None]:
    notifier = MemoryNotifier()
    web = quietWebService(notifier)
    warm: Deferred[None] = Deferred()
    web.addReadinessCondition(warm)
    web.startService()
    assert notifier.values("READY") == []
    warm.callback(None)
    yield web.whenReady()
    assert notifier.values("READY") == ["1"]
    yield web.stopService()


@pytest_twisted.inlineCallbacks
def test_webServiceConditionFails() -> Generator[Any, Any, None]:
    notifier = MemoryNotifier()
    web = quietWebService(notifier)
    web.addReadinessCondition(lambda: 1 / 0)
    web.startService()
    with pytest.raises(ZeroDivisionError):
        yield web.whenReady()
    assert notifier.values("READY") == []
    assert notifier.values("STATUS")[-1] == "Failed: division by zero"
    yield web.stopService()
