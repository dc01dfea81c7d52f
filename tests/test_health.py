"""
Health checks for load balancers over real ports, in this process: /healthz
through a whole lifecycle, the grace before the ports close, a health port
and HAProxy's agent-check; and the same options through a real twistd.  The
answers themselves, state by state, are in test_healthcheck.py.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from conftest import freePort, portAnswers, processEnv, waitUntil
from test_service import (
    Controlled,
    live,
    makeService,
    portOf,
    readToEnd,
    sleep,
    url,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.server import Site

from txsdnotify.service import WebService
from txsdnotify.systemd.lifecycle import State
from txsdnotify.systemd.notify import Notifier
from txsdnotify.testing import NotifyReceiver

__all__ = ["live"]


@pytest_twisted.inlineCallbacks
def fetch(service: WebService, path: str = "/healthz", index: int = 0) -> Any:
    """
    GET C{path}: the status code, and the JSON body when there is one.
    """
    response = yield treq.get(url(service, path, index), persistent=False)
    body = yield response.content()
    if response.headers.getRawHeaders(b"content-type") == [b"application/json"]:
        return response.code, json.loads(body)
    return response.code, body


@pytest_twisted.inlineCallbacks
def agentSays(service: WebService, index: int) -> Generator[Any, Any, bytes]:
    """
    What the agent-check port says to a new connection, until it closes.
    """
    port = portOf(service, index)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = yield readToEnd(s)
    return data


def rawGet(client: socket.socket, path: str) -> None:
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


@pytest_twisted.inlineCallbacks
def listening(service: WebService, timeout: float = 10.0) -> Generator[Any, Any, None]:
    """
    Wait until every listener of C{service} is bound (which, with a
    readiness condition held back, comes before READY=1).
    """
    deadline = reactor.seconds() + timeout
    while len(service.ports) < len(service.listeners):
        assert reactor.seconds() < deadline, "the ports were not bound"
        yield sleep(0.01)


@pytest_twisted.inlineCallbacks
def readResponse(
    client: socket.socket, timeout: float = 5.0
) -> Generator[Any, Any, tuple[bytes, bytes]]:
    """
    One whole response (its head, and its body of Content-Length bytes) on
    a connection that stays open, read without blocking the reactor.
    """
    client.setblocking(False)
    data = b""
    deadline = reactor.seconds() + timeout
    while True:
        head, found, body = data.partition(b"\r\n\r\n")
        if found:
            lengths = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if lengths and len(body) >= lengths[0]:
                return head, body
        assert reactor.seconds() < deadline, f"no whole response: {data!r}"
        try:
            chunk = client.recv(65536)
        except BlockingIOError:
            yield sleep(0.01)
            continue
        assert chunk, f"closed after {data!r}"
        data += chunk


@pytest_twisted.inlineCallbacks
def test_healthOverTheLifecycle(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    503 while starting, 200 with the figures once ready, 503 from the first
    moment of the stop while the site still serves for the grace, then the
    port closes; a request on a connection kept open hears "draining".
    """
    resource = Controlled()
    service = makeService(
        live, resource, healthPath=b"/healthz", healthGrace=2.0, drainTimeout=10
    )
    condition: Deferred[None] = Deferred()
    service.addReadinessCondition(condition)
    service.startService()
    yield listening(service)
    code, body = yield fetch(service)
    assert (code, body["state"]) == (503, "starting")

    condition.callback(None)
    yield service.whenReady()
    code, hello = yield fetch(service, "/")
    assert (code, hello) == (200, b"hello")
    code, body = yield fetch(service)
    assert code == 200
    assert body["state"] == "ready"
    assert body["requests"] == 1 and body["inFlight"] == 0
    assert body["connections"] == 1  # this very check
    assert body["uptime"] > 0

    keptOpen = socket.create_connection(("127.0.0.1", portOf(service)))
    rawGet(keptOpen, "/")
    head, hello = yield readResponse(keptOpen)
    assert head.startswith(b"HTTP/1.1 200 ") and hello == b"hello"
    stopped = service.stopService()
    started = reactor.seconds()
    stopping = yield live.waitFor("STOPPING")
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) == (2 + 10 + 5) * 1_000_000
    assert "failing health checks" in stopping["STATUS"]
    code, body = yield fetch(service)
    assert (code, body["state"]) == (503, "draining")
    code, hello = yield fetch(service, "/")
    assert (code, hello) == (200, b"hello")
    rawGet(keptOpen, "/healthz")
    head, body = yield readResponse(keptOpen)
    assert head.startswith(b"HTTP/1.1 503 ")
    assert json.loads(body)["state"] == "draining"
    assert reactor.seconds() - started < 2, "the grace ended before the checks"

    port = portOf(service)
    while service.drain is None:
        yield sleep(0.02)
    assert reactor.seconds() - started >= 2
    assert not portAnswers(port)
    yield stopped
    keptOpen.close()


@pytest_twisted.inlineCallbacks
def test_healthOnKeptOpenConnectionDuringDrain(
    live: NotifyReceiver,
) -> Generator[Any, Any, None]:
    """
    A health check on a keep-alive connection once the drain has begun:
    503, and the connection closes after it.
    """
    resource = Controlled()
    service = makeService(live, resource, healthPath=b"/healthz", drainTimeout=10)
    service.startService()
    yield service.whenReady()
    port = portOf(service)
    busy = socket.create_connection(("127.0.0.1", port))
    arrived = resource.nextArrival()
    rawGet(busy, "/wait")
    yield arrived
    client = socket.create_connection(("127.0.0.1", port))
    stopped = service.stopService()
    while service.drain is None:
        yield sleep(0.02)
    rawGet(client, "/healthz")
    data = yield readToEnd(client)
    assert data.startswith(b"HTTP/1.1 503 ")
    assert b"Connection: close" in data
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["state"] == "draining"
    resource.answer()
    yield stopped
    busy.close()
    client.close()


@pytest_twisted.inlineCallbacks
def test_reloadingStillHealthy(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    A reload goes on serving: 200, with the state shown.
    """
    service = makeService(live, Controlled(), healthPath=b"/healthz")
    hook: Deferred[None] = Deferred()
    service.addReloadHook(lambda: hook)
    service.startService()
    yield service.whenReady()
    reloaded = service.reload()
    code, body = yield fetch(service)
    assert (code, body["state"]) == (200, "reloading")
    hook.callback(None)
    yield reloaded
    yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_forceSkipsTheGrace(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    A second stop request during the grace ends it at once.
    """
    service = makeService(live, Controlled(), healthPath=b"/healthz", healthGrace=60)
    service.startService()
    yield service.whenReady()
    stopped = service.stopService()
    yield live.waitFor("STOPPING")
    started = reactor.seconds()
    service.force()
    yield stopped
    assert reactor.seconds() - started < 1
    assert service.lifecycle.state is State.STOPPED


@pytest_twisted.inlineCallbacks
def test_healthNotCountedNorLogged(
    live: NotifyReceiver, tmp_path: Path
) -> Generator[Any, Any, None]:
    """
    Health checks are not user traffic: not in the figures, not in the
    access log.
    """
    logPath = tmp_path / "access.log"
    service = WebService(
        Site(Controlled(), logPath=str(logPath)),
        ["tcp:0:interface=127.0.0.1"],
        notifier=Notifier.fromEnvironment(live.environ(), reactor=reactor),
        reactor=reactor,
        healthPath=b"/healthz",
    )
    service.startService()
    yield service.whenReady()
    for _ in range(3):
        code, _ = yield fetch(service)
        assert code == 200
    code, _ = yield fetch(service, "/counted")
    assert code == 200
    code, body = yield fetch(service)
    assert body["requests"] == 1
    stats = service.tracker.stats
    assert (stats.started, stats.completed) == (1, 1)
    assert service.statusLine.current().startswith("Total requests: 1;")
    yield service.stopService()
    lines = logPath.read_text().splitlines()
    assert len(lines) == 1 and "/counted" in lines[0], lines


@pytest_twisted.inlineCallbacks
def test_healthPortAndAgentPort(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    A port that answers only the health checks, and one that answers
    HAProxy's agent-check, each following the lifecycle.
    """
    service = makeService(
        live,
        Controlled(),
        healthPorts=["tcp:0:interface=127.0.0.1"],
        agentPorts=["tcp:0:interface=127.0.0.1"],
        healthGrace=30,
    )
    condition: Deferred[None] = Deferred()
    service.addReadinessCondition(condition)
    service.startService()
    yield listening(service)
    assert (yield agentSays(service, 2)) == b"drain\n"
    code, body = yield fetch(service, index=1)
    assert (code, body["state"]) == (503, "starting")

    condition.callback(None)
    yield service.whenReady()
    assert (yield agentSays(service, 2)) == b"up ready\n"
    code, body = yield fetch(service, index=1)
    assert (code, body["state"]) == (200, "ready")
    code, _ = yield fetch(service, "/other", index=1)
    assert code == 404
    # Without --health the application's port leaves /healthz to the site.
    code, hello = yield fetch(service, "/healthz", index=0)
    assert (code, hello) == (200, b"hello")

    stopped = service.stopService()
    yield live.waitFor("STOPPING")
    assert (yield agentSays(service, 2)) == b"drain\n"
    code, body = yield fetch(service, index=1)
    assert (code, body["state"]) == (503, "draining")
    service.force()
    yield stopped


def test_twistdHealthOptions(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    The options of twistd sdweb: /healthz on the port, a health port, an
    agent port, no access log lines for the checks, and the grace on SIGTERM.
    """
    import urllib.error
    import urllib.request

    port, healthPort, agentPort = freePort(), freePort(), freePort()
    server = twistd(
        [
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--health",
            "/healthz",
            "--health-port",
            f"tcp:{healthPort}:interface=127.0.0.1",
            "--agent-port",
            f"tcp:{agentPort}:interface=127.0.0.1",
            "--health-grace",
            "30",
            "--logfile",
            str(tmp_path / "access.log"),
        ],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=30)

    def get(port: int, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}{path}", timeout=30
            ) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def agent() -> bytes:
        with socket.create_connection(("127.0.0.1", agentPort), timeout=5) as s:
            return s.makefile("rb").read()

    assert get(port, "/healthz")[0] == 200
    assert get(healthPort, "/healthz")[0] == 200
    assert get(port, "/")[0] == 200
    assert agent() == b"up ready\n"
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", timeout=30)
    code, body = get(port, "/healthz")
    assert (code, json.loads(body)["state"]) == (503, "draining")
    assert get(port, "/")[0] == 200
    assert agent() == b"drain\n"
    server.process.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    waitUntil(lambda: not portAnswers(port))
    log = (tmp_path / "access.log").read_text()
    assert log.count('"GET / HTTP/1.1" 200') == 2, log
    assert "healthz" not in log, log


@pytest_twisted.inlineCallbacks
def test_skipHealthGrace(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    L{WebService.skipHealthGrace} during the grace closes the ports and
    drains at once; before a stop, the stop has no grace.
    """
    service = makeService(live, Controlled(), healthPath=b"/healthz", healthGrace=60)
    service.startService()
    yield service.whenReady()
    port = portOf(service)
    stopping = service.stopService()
    assert (yield fetch(service))[0] == 503
    assert portAnswers(port)
    started = reactor.seconds()
    service.skipHealthGrace()
    yield stopping
    assert reactor.seconds() - started < 5
    assert not portAnswers(port)

    other = makeService(live, Controlled(), healthPath=b"/healthz", healthGrace=60)
    other.startService()
    yield other.whenReady()
    other.skipHealthGrace()
    seen = len(live.values("STATUS"))
    started = reactor.seconds()
    yield other.stopService()
    assert reactor.seconds() - started < 5
    assert not [s for s in live.values("STATUS")[seen:] if "health checks" in s]


def test_healthRequestClassProvidesWhatItsBaseProvides() -> None:
    """
    The request class that answers health checks provides what the class it
    is made from provides.
    """
    from inmemory import checkProvidesAsBase

    from txsdnotify.health import healthRequestFactory

    unused: Any = None
    checkProvidesAsBase(
        lambda base: healthRequestFactory(base, unused, b"/healthz", None)
    )
