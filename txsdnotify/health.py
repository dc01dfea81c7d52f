# -*- test-case-name: tests.test_healthcheck, tests.test_health -*-
"""
What a load balancer asks a server: may I send you requests?

L{Health} answers from the service's L{Lifecycle}: C{200} with a small JSON
body while it is ready (or reloading: a reload here never stops serving),
C{503} with the same body while it starts or stops.  It answers

  - on the application's own ports, at one path (C{--health /healthz}),
    before the site sees the request: L{healthRequestFactory} puts one
    comparison of the request path in front of the request class the
    tracking made, and health requests are neither counted in the figures
    nor written to the access log;
  - on a port of its own (C{--health-port}), through L{healthSite};
  - to HAProxy's C{agent-check} (C{--agent-port}), through L{AgentFactory}:
    one line (C{up ready}, C{drain}, C{stopped}) and the connection closes.

L{graceWait} is the pause between "health checks fail" and "the ports
close", which gives a balancer the time to notice before anything is
refused.  Nothing here knows systemd.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Site

from txsdnotify.listeners import Listener, planListeners
from txsdnotify.systemd.activation import InheritedSocket
from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.web.stats import RequestStats
from txsdnotify.web.tracking import providesAsBase

__all__ = [
    "AgentFactory",
    "Health",
    "agentAnswer",
    "graceWait",
    "healthListeners",
    "healthRequestFactory",
    "healthSite",
]

# The states in which a balancer may send requests: a reload of this
# single-process server goes on serving with the same ports and code.
SERVING = frozenset({State.READY, State.RELOADING})

# HAProxy agent-check words for each state (see HAProxy's "agent-check"):
# "ready" cancels a DRAIN or MAINT set earlier by the agent, "up" cancels a
# "down"; "drain" gives the server weight 0 while health checks go on.
_AGENT_WORDS = {
    State.STARTING: b"drain\n",
    State.READY: b"up ready\n",
    State.RELOADING: b"up ready\n",
    State.DRAINING: b"drain\n",
    State.FORCED: b"drain\n",
    State.FAILED: b"stopped#failed\n",
    State.STOPPED: b"stopped\n",
}


def agentAnswer(state: State) -> bytes:
    """
    The line HAProxy's C{agent-check} reads for C{state}.
    """
    return _AGENT_WORDS[state]


class Health:
    """
    The health of one service, as a load balancer reads it.

    @ivar lifecycle: Where the state comes from.
    @ivar stats: The request figures shown.
    @ivar clock: For the uptime.
    @ivar since: When (on C{clock}) the service was set up.
    @ivar stateOf: The state a balancer is told: the lifecycle's, unless
        something else decides (a worker of C{--workers} tells its
        service's state, not its own).
    @ivar canServe: Whether, in a serving state, something can serve (the
        master of C{--workers}: a worker is ready); L{None} for always.
    @ivar details: More fields for the body (the workers), or L{None}.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        stats: RequestStats,
        clock: IReactorTime,
        *,
        canServe: Callable[[], bool] | None = None,
        details: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.stats = stats
        self.clock = clock
        self.since = clock.seconds()
        self.stateOf: Callable[[], State] = lambda: lifecycle.state
        self.canServe = canServe
        self.details = details

    @property
    def serving(self) -> bool:
        """
        Whether a balancer may send requests now.
        """
        if self.stateOf() not in SERVING:
            return False
        return self.canServe is None or self.canServe()

    def agentLine(self) -> bytes:
        """
        The line HAProxy's C{agent-check} reads now: that of the state, or
        C{drain} while in a serving state nothing can serve.
        """
        state = self.stateOf()
        if state in SERVING and not self.serving:
            return b"drain\n"
        return agentAnswer(state)

    def report(self) -> dict[str, object]:
        """
        What the body says: the state, the uptime in seconds and the figures
        of the application's requests (health checks not included).
        """
        stats = self.stats
        extra = self.details() if self.details is not None else {}
        return {
            "state": self.stateOf().value,
            "uptime": round(self.clock.seconds() - self.since, 3),
            "requests": stats.completed,
            "inFlight": stats.inFlight,
            "connections": stats.openConnections,
            **extra,
        }

    def response(self) -> tuple[int, bytes]:
        """
        The status code and the JSON body of the answer now (what
        L{render} sets), for the fast HTTP path.
        """
        return (
            200 if self.serving else 503,
            json.dumps(self.report()).encode("ascii") + b"\n",
        )

    def render(self, request: Any) -> bytes:
        """
        Set C{request}'s code and headers; the body.
        """
        request.setResponseCode(200 if self.serving else 503)
        headers = request.responseHeaders
        headers.setRawHeaders(b"content-type", [b"application/json"])
        headers.setRawHeaders(b"cache-control", [b"no-store"])
        body = json.dumps(self.report()).encode("ascii") + b"\n"
        headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
        return body

    def answer(self, request: Any) -> None:
        """
        Answer C{request} in full, without the access log hearing of it.
        """
        body = self.render(request)
        if request.method != b"HEAD":
            request.write(body)
        _finishUnlogged(request)


def _finishUnlogged(request: Any) -> None:
    """
    Finish C{request} without an access log line: Twisted's
    C{Request.finish} logs through C{request.channel.factory.log} when the
    channel has a factory.  The one place that relies on it; the access log
    test of the health checks fails if Twisted changes it.
    """
    channel = request.channel
    factory = getattr(channel, "factory", None)
    if factory is None:
        request.finish()
        return
    channel.factory = None
    try:
        request.finish()
    finally:
        channel.factory = factory


def healthRequestFactory(
    base: Callable[..., Any], health: Health, path: bytes, tracker: Any
) -> Callable[..., Any]:
    """
    A request factory that makes what C{base} makes, except that a request
    for C{path} is answered by C{health} before anything else sees it.

    @param base: The request factory the tracking made (a class, as a rule).
    @param tracker: The L{txsdnotify.web.tracking.TrackingFactory}: a health
        request during a drain must close its connection like any other.
    """
    if isinstance(base, type):

        class HealthRequest(base):  # type: ignore[misc,valid-type]
            def process(self) -> None:
                if self.path == path:
                    _answerHealth(self, health, tracker)
                else:
                    super().process()

        HealthRequest.__name__ = HealthRequest.__qualname__ = base.__name__
        HealthRequest.__module__ = base.__module__
        providesAsBase(HealthRequest, base)
        return HealthRequest

    def makeRequest(*args: Any, **kwargs: Any) -> Any:
        request = base(*args, **kwargs)
        process = request.process

        def checked() -> None:
            if request.path == path:
                _answerHealth(request, health, tracker)
            else:
                process()

        request.process = checked
        return request

    return makeRequest


def _answerHealth(request: Any, health: Health, tracker: Any) -> None:
    # An idle keep-alive connection that only ever asked for its health is
    # closed at once by a drain, like any used one.
    tracker.used.add(request.channel)
    drain = tracker.drain
    if drain is not None:
        drain.requestArrived(request)
    health.answer(request)


class _HealthResource(Resource):
    """
    The health answer at one path, 404 elsewhere.
    """

    isLeaf = True

    def __init__(self, health: Health, path: bytes) -> None:
        super().__init__()
        self._health = health
        self._path = path

    def render(self, request: Any) -> bytes:
        if request.path != self._path:
            request.setResponseCode(404)
            return b""
        return self._health.render(request)


class _QuietSite(Site):
    """
    A site that writes no access log.
    """

    noisy = False

    def log(self, request: Any) -> None:
        """
        Nothing: health checks would drown the log.
        """


def healthSite(health: Health, path: bytes) -> Site:
    """
    A site answering only C{path}, with C{health}, for a port of its own.
    """
    return _QuietSite(_HealthResource(health, path))


class _AgentAnswer(Protocol):
    def connectionMade(self) -> None:
        factory = self.factory
        assert isinstance(factory, AgentFactory)
        assert self.transport is not None
        self.transport.write(factory.health.agentLine())
        self.transport.loseConnection()


class AgentFactory(Factory):
    """
    Answers HAProxy's C{agent-check}: one line for the current state, then
    the connection closes (whatever the agent sent is ignored).
    """

    protocol = _AgentAnswer
    noisy = False

    def __init__(self, health: Health) -> None:
        self.health = health


def graceWait(
    lifecycle: Lifecycle, clock: IReactorTime, seconds: float
) -> Deferred[bool]:
    """
    Wait C{seconds} on C{clock}, or less if the stop is forced meanwhile.

    @return: Fires with C{True} when the whole time passed, C{False} when
        the stop was forced (at once if it already is).
    """
    d: Deferred[bool] = Deferred()
    if lifecycle.state is State.FORCED or seconds <= 0:
        d.callback(seconds <= 0 and lifecycle.state is not State.FORCED)
        return d

    def end(passed: bool) -> None:
        if not d.called:
            d.callback(passed)

    call = clock.callLater(seconds, end, True)

    def ended(result: bool) -> bool:
        # Fired early (forced, or by whoever holds it): the timer goes.
        if call.active():
            call.cancel()
        return result

    d.addCallback(ended)

    def observe(old: State, new: State) -> None:
        if new is State.FORCED:
            end(False)

    lifecycle.observe(observe)
    return d


def healthListeners(
    health: Health,
    path: bytes,
    *,
    healthPorts: Sequence[str],
    agentPorts: Sequence[str],
    reactor: object,
    inherited: Sequence[InheritedSocket],
) -> list[Listener]:
    """
    The listeners of the health check ports (C{path} answered by C{health})
    and of the agent-check ports.  They are never kept in the fd store: a
    port that closes between two processes is what a balancer should see.
    """
    planned = []
    for descriptions, factory in (
        (healthPorts, healthSite(health, path)),
        (agentPorts, AgentFactory(health)),
    ):
        if not descriptions:
            continue
        listeners, _ = planListeners(
            descriptions, reactor=reactor, inherited=inherited, fdStore=False
        )
        for listener in listeners:
            listener.factory = factory
        planned.extend(listeners)
    return planned
