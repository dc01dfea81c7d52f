"""
Tests for txsdnotify.health in-process: what a load balancer is told in
each state of the lifecycle (the code, the JSON body, the headers and the
agent-check line), the grace on a fake clock, the master's aggregate, and
the answers over in-memory HTTP connections and listeners: no socket, no
reactor.  The same options through real ports and a real twistd are in
test_health.py.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from inmemory import PEER, Root, connect
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import Request, Site
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from txsdnotify.health import (
    AgentFactory,
    Health,
    agentAnswer,
    graceWait,
    healthListeners,
    healthRequestFactory,
    healthSite,
)
from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.testing import MemoryNotifier
from txsdnotify.web.drain import Drain
from txsdnotify.web.stats import RequestStats
from txsdnotify.web.tracking import TrackingFactory, channelOf

# How a lifecycle gets to each state, from STARTING.
ROUTES: dict[State, list[str]] = {
    State.STARTING: [],
    State.READY: ["ready"],
    State.RELOADING: ["ready", "reloading"],
    State.FAILED: ["failed"],
    State.DRAINING: ["ready", "draining"],
    State.FORCED: ["ready", "draining", "forced"],
    State.STOPPED: ["ready", "draining", "stopped"],
}

# What a balancer is told in each state: the code and the agent-check line.
ANSWERS: dict[State, tuple[int, bytes]] = {
    State.STARTING: (503, b"drain\n"),
    State.READY: (200, b"up ready\n"),
    State.RELOADING: (200, b"up ready\n"),
    State.FAILED: (503, b"stopped#failed\n"),
    State.DRAINING: (503, b"drain\n"),
    State.FORCED: (503, b"drain\n"),
    State.STOPPED: (503, b"stopped\n"),
}


def lifecycleIn(state: State) -> Lifecycle:
    """
    A lifecycle moved, by its own transitions, to C{state}.
    """
    lifecycle = Lifecycle(MemoryNotifier())
    for step in ROUTES[state]:
        if step == "failed":
            assert lifecycle.failed(Failure(OSError(98, "in use")))
        else:
            assert getattr(lifecycle, step)("status")
    assert lifecycle.state is state
    return lifecycle


def parse(data: bytes) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """
    The status code, the headers (names in lower case) and the body of one
    HTTP/1.1 response.
    """
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(status.split()[1]), headers, body


def ask(factory: Any, request: bytes) -> tuple[Any, StringTransport]:
    """
    A new in-memory connection from C{factory} that was sent C{request}.
    """
    connection = factory.buildProtocol(PEER)
    transport = StringTransport()
    connection.makeConnection(transport)
    connection.dataReceived(request)
    return connection, transport


def request(method: bytes, path: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, path)


class LoggedSite(Site):
    """
    A site whose access log is a list.
    """

    def __init__(self, resource: Any) -> None:
        super().__init__(resource, reactor=Clock())
        self.logged: list[bytes] = []

    def log(self, request: Any) -> None:
        self.logged.append(request.uri)


def serving(
    health: Health, site: Site | None = None, path: bytes = b"/healthz"
) -> TrackingFactory:
    """
    A tracking factory whose requests for C{path} C{health} answers first,
    as L{txsdnotify.service.WebService} sets it up.
    """
    tracker = TrackingFactory(site if site is not None else LoggedSite(Root()))
    tracker.answerFirst = lambda base: healthRequestFactory(base, health, path, tracker)
    return tracker


# Paths that are not the health path: before it, after it, below it.
OTHERS = [b"/", b"/health", b"/other", b"/healthz/more"]


def reachTheSite(
    tracker: TrackingFactory, connection: Any, transport: StringTransport
) -> tuple[int, list[bytes]]:
    """
    Send each of L{OTHERS} on C{connection}, which must reach the site:
    how many requests C{tracker} then counted, and what the site logged.
    """
    for path in OTHERS:
        transport.clear()
        connection.dataReceived(request(b"GET", path))
        assert parse(transport.value())[::2] == (200, b"ok"), path
    site = tracker.site
    assert isinstance(site, LoggedSite)
    return tracker.stats.started, site.logged


@pytest.mark.parametrize("state", list(State))
def test_answerOfEachState(state: State) -> None:
    """
    Each state of the lifecycle has its code (200 only while ready or
    reloading: a reload goes on serving), its name in the body and its
    agent-check line (C{drain} while starting or stopping, C{stopped} once
    stopped, with C{#failed} after a failed start).
    """
    health = Health(lifecycleIn(state), RequestStats(), Clock())
    code, line = ANSWERS[state]
    assert health.serving is (code == 200)
    assert agentAnswer(state) == line
    assert health.agentLine() == line
    fastCode, fastBody = health.response()
    assert (fastCode, json.loads(fastBody)["state"]) == (code, state.value)
    dummy = DummyRequest([b"healthz"])
    body = health.render(dummy)
    assert (dummy.responseCode, body) == (code, fastBody)


def test_stateFollowsTheLifecycle() -> None:
    """
    The answer is read at each request: the same L{Health} follows its
    lifecycle from start to stop.
    """
    lifecycle = Lifecycle(MemoryNotifier())
    health = Health(lifecycle, RequestStats(), Clock())
    seen = [(health.response()[0], health.agentLine())]
    lifecycle.ready("ok")
    seen.append((health.response()[0], health.agentLine()))
    lifecycle.draining("stopping")
    seen.append((health.response()[0], health.agentLine()))
    assert seen == [(503, b"drain\n"), (200, b"up ready\n"), (503, b"drain\n")]


def test_body() -> None:
    """
    The body is one line of JSON: the state, the uptime in seconds since
    the L{Health} was made (to the millisecond), and the application's
    requests done, in flight and its open connections.
    """
    clock = Clock()
    clock.advance(1000)
    stats = RequestStats()
    health = Health(lifecycleIn(State.READY), stats, clock)
    stats.started, stats.completed = 5, 3
    stats.connectionsOpened, stats.connectionsClosed = 4, 1
    clock.advance(2.34567)
    assert health.response() == (
        200,
        b'{"state": "ready", "uptime": 2.346, "requests": 3, "inFlight": 2,'
        b' "connections": 3}\n',
    )


def test_headers() -> None:
    """
    The answer is JSON that no cache keeps, with its length.
    """
    health = Health(lifecycleIn(State.DRAINING), RequestStats(), Clock())
    dummy = DummyRequest([b"healthz"])
    body = health.render(dummy)
    headers = dummy.responseHeaders
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert headers.getRawHeaders(b"cache-control") == [b"no-store"]
    assert headers.getRawHeaders(b"content-length") == [b"%d" % len(body)]
    assert len(body) > 50


@pytest.mark.parametrize("method", [b"GET", b"POST", b"HEAD"])
def test_answerWritesTheBodyExceptToHead(method: bytes) -> None:
    """
    L{Health.answer} answers in full: the body to every method but HEAD,
    and the request is finished.
    """
    health = Health(lifecycleIn(State.READY), RequestStats(), Clock())
    dummy = DummyRequest([b"healthz"])
    dummy.method = method
    dummy.channel = DummyChannel()  # type: ignore[attr-defined]
    health.answer(dummy)
    assert dummy.finished == 1
    written = b"".join(dummy.written)
    if method == b"HEAD":
        assert written == b""
    else:
        assert json.loads(written)["state"] == "ready"


def test_workersAggregate() -> None:
    """
    The master of C{--workers} tells whether a worker can serve and how
    many are ready: in a serving state without one, 503 and C{drain}; its
    details join the body.
    """
    lifecycle = lifecycleIn(State.READY)
    ready = [2]
    health = Health(
        lifecycle,
        RequestStats(),
        Clock(),
        canServe=lambda: ready[0] > 0,
        details=lambda: {"workers": ready[0]},
    )
    assert health.serving and health.agentLine() == b"up ready\n"
    assert health.report()["workers"] == 2
    ready[0] = 0
    code, body = health.response()
    assert (code, json.loads(body)) == (
        503,
        {
            "state": "ready",
            "uptime": 0,
            "requests": 0,
            "inFlight": 0,
            "connections": 0,
            "workers": 0,
        },
    )
    assert not health.serving and health.agentLine() == b"drain\n"
    ready[0] = 1
    lifecycle.draining("stopping")
    assert health.agentLine() == b"drain\n"
    lifecycle.stopped()
    assert health.agentLine() == b"stopped\n"
    assert "workers" not in Health(lifecycle, RequestStats(), Clock()).report()


def test_healthOfAnotherState() -> None:
    """
    What a balancer is told may come from elsewhere than the lifecycle (a
    worker tells its service's state, not its own).
    """
    lifecycle = lifecycleIn(State.DRAINING)
    health = Health(lifecycle, RequestStats(), Clock())
    health.stateOf = lambda: State.READY
    assert health.serving and health.report()["state"] == "ready"
    assert health.agentLine() == b"up ready\n"
    health.stateOf = lambda: State.STOPPED
    assert not health.serving and health.agentLine() == b"stopped\n"


def test_onTheSitePorts() -> None:
    """
    On the application's own ports the health path is answered before the
    site sees it (whatever its query string), neither counted nor written
    to the access log, with the headers of the answer; other paths (before
    it, after it, below it) reach the site as before.
    """
    lifecycle = lifecycleIn(State.READY)
    tracker = serving(Health(lifecycle, RequestStats(), Clock()))
    site = tracker.site
    assert isinstance(site, LoggedSite)
    connection, transport = ask(tracker, request(b"GET", b"/healthz"))
    code, headers, body = parse(transport.value())
    assert code == 200
    assert headers[b"content-type"] == [b"application/json"]
    assert headers[b"cache-control"] == [b"no-store"]
    assert headers[b"content-length"] == [b"%d" % len(body)]
    assert json.loads(body)["state"] == "ready"
    assert (tracker.stats.started, site.logged) == (0, [])

    transport.clear()
    connection.dataReceived(request(b"GET", b"/healthz?from=haproxy"))
    assert parse(transport.value())[0] == 200
    assert (tracker.stats.started, site.logged) == (0, [])
    assert reachTheSite(tracker, connection, transport) == (len(OTHERS), OTHERS)


def test_headOnTheSitePorts() -> None:
    """
    HEAD gets the headers, the length of the body included, and no body.
    """
    tracker = serving(Health(lifecycleIn(State.STARTING), RequestStats(), Clock()))
    _, transport = ask(tracker, request(b"HEAD", b"/healthz"))
    code, headers, body = parse(transport.value())
    assert code == 503
    assert int(headers[b"content-length"][0]) > 50
    assert body == b""


def test_healthMarksTheConnectionUsed() -> None:
    """
    A connection that asked only for its health counts as used: a drain
    closes it at once, as an idle keep-alive one (a fresh connection would
    have the grace).
    """
    tracker = serving(Health(lifecycleIn(State.READY), RequestStats(), Clock()))
    connection, transport = ask(tracker, request(b"GET", b"/healthz"))
    assert connection in tracker.connections
    assert tracker.used == {channelOf(connection)}
    clock = Clock()
    Drain(tracker, clock=clock, grace=5).start()
    assert transport.disconnecting


def test_healthDuringADrain() -> None:
    """
    A health request that arrives during a drain is answered, then its
    connection closes, as any request's would.
    """
    tracker = serving(Health(lifecycleIn(State.DRAINING), RequestStats(), Clock()))
    connection, transport = connect(tracker)
    Drain(tracker, clock=Clock(), grace=5).start()
    assert not transport.disconnecting
    connection.dataReceived(request(b"GET", b"/healthz"))
    code, headers, _ = parse(transport.value())
    assert (code, headers[b"connection"]) == (503, [b"close"])
    assert transport.disconnecting


def test_requestFactoryNotAClass() -> None:
    """
    A site whose request factory is a function, not a class, has its
    health answered first too.
    """
    site = LoggedSite(Root())
    site.requestFactory = lambda *a, **kw: Request(*a, **kw)  # type: ignore[assignment]
    tracker = serving(Health(lifecycleIn(State.READY), RequestStats(), Clock()), site)
    connection, transport = ask(tracker, request(b"GET", b"/healthz"))
    assert parse(transport.value())[0] == 200
    assert reachTheSite(tracker, connection, transport) == (len(OTHERS), OTHERS)


def test_requestClassKeepsItsName() -> None:
    """
    The request class that answers health checks first is named as the one
    it stands in for.
    """
    health = Health(lifecycleIn(State.READY), RequestStats(), Clock())
    tracker = TrackingFactory(Site(Root()))
    made = healthRequestFactory(Request, health, b"/healthz", tracker)
    assert isinstance(made, type) and issubclass(made, Request)
    assert (made.__name__, made.__qualname__, made.__module__) == (
        "Request",
        "Request",
        Request.__module__,
    )


def test_healthSite() -> None:
    """
    A health port answers its one path, 404 with an empty body elsewhere
    (below that path too), and logs nothing.
    """
    health = Health(lifecycleIn(State.RELOADING), RequestStats(), Clock())
    site = healthSite(health, b"/ping")
    site.reactor = Clock()
    connection, transport = ask(site, request(b"GET", b"/ping"))
    code, headers, body = parse(transport.value())
    assert (code, json.loads(body)["state"]) == (200, "reloading")
    assert headers[b"cache-control"] == [b"no-store"]
    for path in (b"/healthz", b"/ping/more", b"/"):
        transport.clear()
        connection.dataReceived(request(b"GET", path))
        assert parse(transport.value())[::2] == (404, b""), path


def test_healthPortsAreQuiet() -> None:
    """
    The health site and the agent's factory say nothing when they start or
    stop, and the health site writes no access log.
    """
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        health = Health(lifecycleIn(State.READY), RequestStats(), Clock())
        site = healthSite(health, b"/healthz")
        site.reactor = Clock()
        agent = AgentFactory(health)
        for factory in (site, agent):
            factory.doStart()
        _, transport = ask(site, request(b"GET", b"/healthz"))
        ask(agent, b"")
        for factory in (site, agent):
            factory.doStop()
    finally:
        globalLogPublisher.removeObserver(observer)
    assert events == []
    assert parse(transport.value())[0] == 200


@pytest.mark.parametrize("state", list(State))
def test_agentCheck(state: State) -> None:
    """
    The agent-check port writes the line of the state to each connection,
    then closes it.
    """
    factory = AgentFactory(Health(lifecycleIn(state), RequestStats(), Clock()))
    _, transport = ask(factory, b"anything\n")
    assert transport.value() == ANSWERS[state][1]
    assert transport.disconnecting


def test_agentCheckWithoutAWorker() -> None:
    """
    The master's agent port says C{drain} while no worker is ready.
    """
    health = Health(
        lifecycleIn(State.READY), RequestStats(), Clock(), canServe=lambda: False
    )
    _, transport = ask(AgentFactory(health), b"")
    assert transport.value() == b"drain\n"


def test_healthListeners() -> None:
    """
    The health ports serve the health path and the agent ports the
    agent-check, each with its own factory; none goes to the fd store.
    """
    reactor = MemoryReactor()
    health = Health(lifecycleIn(State.READY), RequestStats(), Clock())
    listeners = healthListeners(
        health,
        b"/ping",
        healthPorts=["tcp:8081", "tcp:8082"],
        agentPorts=["tcp:8083"],
        reactor=reactor,
        inherited=[],
    )
    assert [listener.label for listener in listeners] == [
        "tcp:8081",
        "tcp:8082",
        "tcp:8083",
    ]
    assert [(listener.storeName, listener.retained) for listener in listeners] == [
        (None, False)
    ] * 3
    site, same, agent = (listener.factory for listener in listeners)
    assert site is same and isinstance(site, Site)
    assert isinstance(agent, AgentFactory) and agent.health is health
    site.reactor = Clock()
    _, transport = ask(site, request(b"GET", b"/ping"))
    assert parse(transport.value())[0] == 200
    for listener in listeners:
        listener.endpoint.listen(listener.factory)
    assert [(port, factory) for port, factory, *_ in reactor.tcpServers] == [
        (8081, site),
        (8082, site),
        (8083, agent),
    ]


@pytest.mark.parametrize("which", ["healthPorts", "agentPorts"])
def test_healthListenersOfOneKind(which: str) -> None:
    """
    Health ports without agent ports, and the other way round.
    """
    health = Health(lifecycleIn(State.READY), RequestStats(), Clock())
    ports: dict[str, list[str]] = {"healthPorts": [], "agentPorts": []}
    ports[which] = ["tcp:8084"]
    listeners = healthListeners(
        health, b"/healthz", reactor=MemoryReactor(), inherited=[], **ports
    )
    assert [listener.label for listener in listeners] == ["tcp:8084"]
    assert isinstance(listeners[0].factory, AgentFactory) is (which == "agentPorts")
    assert (
        healthListeners(
            health,
            b"/healthz",
            healthPorts=[],
            agentPorts=[],
            reactor=MemoryReactor(),
            inherited=[],
        )
        == []
    )


def draining() -> Lifecycle:
    return lifecycleIn(State.DRAINING)


def test_graceWaitOnAClock() -> None:
    """
    The grace runs on the clock it is given, and a forced stop ends it.
    """
    clock = Clock()
    lifecycle = draining()
    waited = graceWait(lifecycle, clock, 6)
    clock.advance(5.9)
    assert not waited.called
    clock.advance(0.1)
    assert waited.result is True

    forced = graceWait(lifecycle, clock, 6)
    clock.advance(1)
    lifecycle.forced("now")
    assert forced.result is False
    assert not clock.getDelayedCalls()
    assert graceWait(lifecycle, clock, 6).result is False


def test_graceWaitEndedEarly() -> None:
    """
    Whoever holds the grace may end it early (a worker told to drain by
    its master): the timer goes, and nothing fires twice.
    """
    clock = Clock()
    lifecycle = draining()
    waited = graceWait(lifecycle, clock, 6)
    waited.callback(True)
    assert not clock.getDelayedCalls()
    clock.advance(10)
    lifecycle.forced("now")
    assert waited.result is True


@pytest.mark.parametrize("seconds", [0, -1])
def test_noGrace(seconds: float) -> None:
    """
    No grace (0, or less) has passed at once, on no timer; forced, it has
    not.
    """
    clock = Clock()
    lifecycle = draining()
    assert graceWait(lifecycle, clock, seconds).result is True
    lifecycle.forced("now")
    assert graceWait(lifecycle, clock, seconds).result is False
    assert not clock.getDelayedCalls()


def test_shortGraceWaits() -> None:
    """
    Even a grace below a second waits for its time.
    """
    clock = Clock()
    waited = graceWait(draining(), clock, 0.5)
    assert not waited.called
    clock.advance(0.5)
    assert waited.result is True


def test_onlyAForcedStopEndsTheGrace() -> None:
    """
    Other moves of the lifecycle meanwhile leave the grace running.
    """
    clock = Clock()
    lifecycle = lifecycleIn(State.READY)
    waited = graceWait(lifecycle, clock, 3)
    lifecycle.reloading()
    lifecycle.ready("again")
    lifecycle.draining("stopping")
    lifecycle.stopped()
    assert not waited.called
    clock.advance(3)
    assert waited.result is True
