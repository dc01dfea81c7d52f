# -*- test-case-name: tests.test_service -*-
"""
A twisted.web server that is a systemd C{Type=notify} service.

L{WebService} ties the parts together: it listens through a
L{TrackingFactory}, moves its L{Lifecycle} to ready once every listener is
bound (which sends C{READY=1}), keeps the status line current, reloads on
C{SIGHUP}, and on stop moves to draining (C{STOPPING=1}) and drains before
its L{Deferred} fires.  A second stop signal forces the stop.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from txsdnotify.health import Health, graceWait, healthListeners, healthRequestFactory
from txsdnotify.listeners import (
    addresses,
    listenAll,
    planListeners,
    stopListening,
    storeSockets,
)
from txsdnotify.metrics import (
    Metrics,
    MetricsPage,
    metricsListeners,
    metricsRequestFactory,
    trackerGauges,
)
from txsdnotify.ready import ReadinessCondition, ReadinessConditions
from txsdnotify.reload import Reloader, ReloadHook, ReloadHooks, reopenAccessLog
from txsdnotify.signals import SignalRouter
from txsdnotify.statusline import StatusLine
from txsdnotify.systemd.activation import InheritedSocket, inheritedSockets
from txsdnotify.systemd.failures import ListenError, ListenFailed, listenError
from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.systemd.notify import Notifier
from txsdnotify.systemd.watchdog import WatchdogService, watchdogInterval
from txsdnotify.threadexit import abandonBusyThreads
from txsdnotify.web.drain import Drain, DrainHook, DrainResult
from txsdnotify.web.tracking import TrackingFactory
from txsdnotify.wsgi.container import WSGIApplication
from txsdnotify.wsgi.http11 import HTTP11Factory, Limits, available

__all__ = [
    "HTTP_PARSERS",
    "ListenError",
    "ListenFailed",
    "WebService",
    "listenError",
]

HTTP_PARSERS = ("auto", "fast", "twisted")
"""
The values of L{WebService}'s C{httpParser}: C{fast} serves HTTP/1.1 with
sdweb's own protocol on httptools (a site whose root is a
L{WSGIApplication}, on ports without TLS), C{twisted} with twisted.web,
C{auto} with the fast one where it can (httptools installed).
"""

# The strports types whose connections the fast path may serve: the others
# (ssl:, and TLS endpoints of plugins) carry TLS and HTTP/2, Twisted's.
_PLAIN = frozenset({"tcp", "tcp6", "unix", "systemd"})


class WebService(MultiService):
    """
    Serves a L{Site} on one or more endpoints as a systemd notify service.

    Child services added to it start before it listens and stop after it
    has drained.  What systemd is told follows from one L{Lifecycle}
    (C{lifecycle.state}); this class only wires the parts together: the
    listeners, the tracking and the drain, the status line, reload and the
    signals.

    @ivar site: The site being served.
    @ivar notifier: Where notifications go.
    @ivar lifecycle: The service's state, and the only way to systemd.
    @ivar tracker: The factory that listens; its C{stats} are the figures.
    @ivar ports: The listening ports, once bound.
    @ivar drain: The drain, once stopping has begun.
    @ivar idleGrace: Seconds the drain keeps an idle keep-alive connection
        open for one more request (answered with C{Connection: close}); 0,
        the default, closes it at once.  A worker of C{--workers}, whose
        listening socket stays open for the others, sets it.
    """

    log = Logger()

    def __init__(
        self,
        site: Site,
        endpoints: Sequence[str | IStreamServerEndpoint],
        *,
        notifier: Notifier | None = None,
        reactor: Any = None,
        statusInterval: float = 1.0,
        drainTimeout: float = 30.0,
        drainGrace: float = 2.0,
        environ: Mapping[str, str] | None = None,
        reloadSignal: int | None = signal.SIGHUP,
        reloadTimeout: float = 60.0,
        fdStore: bool = False,
        inherited: Sequence[InheritedSocket] | None = None,
        dropStaleStored: bool | None = None,
        healthPath: bytes | None = None,
        healthPorts: Sequence[str] = (),
        agentPorts: Sequence[str] = (),
        healthGrace: float = 0.0,
        metricsPath: bytes | None = None,
        metricsPorts: Sequence[str] = (),
        metricsRegistry: Any = None,
        httpParser: str = "auto",
        limits: Limits | None = None,
    ) -> None:
        """
        @param site: Any twisted.web site; it is not changed.
        @param endpoints: Server endpoints, or strports descriptions of them
            (C{tcp:8080}, C{unix:/run/web.sock}, C{systemd:domain=INET:index=0}).
        @param notifier: The notification client; by default one for the
            C{NOTIFY_SOCKET} of this process.
        @param reactor: The reactor to listen and schedule with.
        @param statusInterval: Seconds between status updates; 0 sends none
            but the ones at start and stop.
        @param drainTimeout: Seconds the drain may take before the remaining
            connections are aborted.
        @param drainGrace: Seconds a connection accepted without a request
            yet may take to send one once stopping has begun.
        @param environ: Where to find C{NOTIFY_SOCKET} (unless a notifier is
            given) and C{WATCHDOG_USEC}/C{WATCHDOG_PID}; L{os.environ} by
            default.
        @param reloadSignal: The signal that triggers L{reload} (C{SIGHUP},
            as C{ExecReload=kill -HUP $MAINPID} and C{Type=notify-reload}
            send); L{None} installs no handler.
        @param reloadTimeout: Seconds one reload hook may take.
        @param fdStore: Keep the TCP sockets this service binds in systemd's
            fd store (the unit needs C{FileDescriptorStoreMax=}), and adopt
            the ones stored by the process before, so that a restart never
            closes a port.
        @param inherited: The sockets systemd passed in; read from the
            environment (through Twisted) by default.
        @param dropStaleStored: Drop from the fd store the sockets stored by
            an earlier process that no endpoint here wants; by default when
            C{fdStore} is on.  Only a service that owns the whole process's
            store may do that (C{twistd sdweb} does).
        @param healthPath: Answer health checks at this path (C{b"/healthz"})
            on the service's own ports, before the site (see
            L{txsdnotify.health}).
        @param healthPorts: Endpoints (strports) that answer only health
            checks, at C{healthPath} (C{/healthz} if not given).
        @param agentPorts: Endpoints (strports) that answer HAProxy's
            C{agent-check}.
        @param healthGrace: Seconds between the start of a stop (when health
            checks begin to fail) and the ports closing, serving as usual
            meanwhile, so that a balancer can take this server out first.
        @param metricsPath: Answer Prometheus scrapes at this path
            (C{b"/metrics"}) on the service's own ports, before the site
            (see L{txsdnotify.metrics}); needs C{prometheus_client}.
        @param metricsPorts: Endpoints (strports) that answer only the
            scrapes, at C{metricsPath} (C{/metrics} if not given).
        @param metricsRegistry: The C{prometheus_client} registry to serve
            there, with the service's figures added; a new one by default
            (L{metrics}C{.registry}).  Giving one turns the metrics on, to
            be served by the application as it likes.
        @param httpParser: One of L{HTTP_PARSERS}: whether a site whose root
            is a L{WSGIApplication} is served by the fast HTTP/1.1 path
            (L{txsdnotify.wsgi.http11}) on its ports without TLS.
        @param limits: What a request may be on the fast path.
        """
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        if not endpoints:
            raise ValueError("WebService needs at least one endpoint")
        self.reactor = reactor
        self.site = site
        if environ is None:
            environ = os.environ
        self.notifier = (
            notifier
            if notifier is not None
            else Notifier.fromEnvironment(environ, reactor=reactor)
        )
        self.lifecycle = Lifecycle(self.notifier)
        self.tracker = TrackingFactory(site)
        self.statusInterval = statusInterval
        self.drainTimeout = drainTimeout
        self.drainGrace = drainGrace
        self.idleGrace = 0.0
        self.exitOnListenFailure = False
        if inherited is None:
            inherited = inheritedSockets()
        self.fdStore = fdStore
        self.listeners, stale = planListeners(
            endpoints, reactor=reactor, inherited=inherited, fdStore=fdStore
        )
        if dropStaleStored is None:
            dropStaleStored = fdStore
        self._staleStored = stale if dropStaleStored else []
        self.health = Health(self.lifecycle, self.tracker.stats, reactor)
        self.healthGrace = healthGrace
        if healthPath is not None:
            path = healthPath
            self.tracker.answerFirst = lambda base: healthRequestFactory(
                base, self.health, path, self.tracker
            )
        self.fastPath: HTTP11Factory | None = None
        if _useFastPath(site, httpParser):
            self._serveFast(site, healthPath, limits or Limits())
        self.listeners += healthListeners(
            self.health,
            healthPath or b"/healthz",
            healthPorts=healthPorts,
            agentPorts=agentPorts,
            reactor=reactor,
            inherited=inherited,
        )
        self.metrics: Metrics | None = None
        self.metricsPage: MetricsPage | None = None
        if metricsPath is not None or metricsPorts or metricsRegistry is not None:
            self._setUpMetrics(
                metricsPath, metricsPorts, metricsRegistry, reactor, inherited
            )
        self.drain: Drain | None = None
        self._graceWait: Deferred[bool] | None = None
        self._drainHooks: list[DrainHook] = []
        self._listening: Deferred[None] | None = None
        self.statusLine = StatusLine(
            self.lifecycle, self.tracker.stats, clock=reactor, interval=statusInterval
        )
        self.conditions = ReadinessConditions()
        self.reloadHooks = ReloadHooks(clock=reactor, timeout=reloadTimeout)
        if site.logPath:
            self.reloadHooks.add(reopenAccessLog(site), "reopen access log")
        self.reloader = Reloader(
            self.lifecycle,
            self.reloadHooks,
            status=self.statusLine.current,
            onNote=self._setNote,
        )
        self.reloadSignal = reloadSignal
        self.signals = SignalRouter(
            reactor,
            reloadSignal=reloadSignal,
            onReload=self.reload,
            onForce=self._forceSignalled,
        )
        interval = watchdogInterval(environ)
        self.watchdog: WatchdogService | None = None
        if interval is not None:
            self.watchdog = WatchdogService(self.lifecycle, interval, clock=reactor)
            self.watchdog.setServiceParent(self)

    def _setUpMetrics(
        self,
        path: bytes | None,
        ports: Sequence[str],
        registry: Any,
        reactor: Any,
        inherited: Sequence[InheritedSocket],
    ) -> None:
        self.tracker.timed = True
        metrics = self.metrics = Metrics(
            self.lifecycle,
            self.tracker.stats,
            trackerGauges(self.tracker),
            registry=registry,
        )
        page = self.metricsPage = MetricsPage(metrics.render)
        if path is not None:
            tracker, earlier = self.tracker, self.tracker.answerFirst

            def answerFirst(base: Any) -> Any:
                if earlier is not None:
                    base = earlier(base)
                return metricsRequestFactory(base, page, path, tracker)

            tracker.answerFirst = answerFirst
        self.listeners += metricsListeners(
            page,
            path or b"/metrics",
            ports,
            reactor=reactor,
            inherited=inherited,
        )

    def _serveFast(self, site: Site, healthPath: bytes | None, limits: Limits) -> None:
        """
        Serve the WSGI site with the fast HTTP/1.1 path, except on the ports
        that carry TLS.
        """
        health = None if healthPath is None else (healthPath, self.health.response)
        self.fastPath = HTTP11Factory(
            site.resource,
            self.tracker,
            site,
            limits=limits,
            health=health,
            reactor=self.reactor,
        )
        self.tracker.connectionFactory = self.fastPath
        for listener in self.listeners:
            if isinstance(listener.endpoint, AdoptedStreamServerEndpoint):
                continue
            if listener.description.split(":", 1)[0] not in _PLAIN:
                listener.factory = self.tracker.siteOnly()

    # Start-up.

    def privilegedStartService(self) -> None:
        """
        Bind every listener now, before twistd drops privileges, and fail
        start-up with a one-line message if one cannot be bound.
        """
        self._refuseRestart()
        super().privilegedStartService()
        listening = self._startListening()
        outcome: list[object] = []

        def capture(result: object) -> object:
            outcome.append(result)
            return result

        listening.addBoth(capture)
        if outcome and isinstance(outcome[0], Failure):
            listening.addErrback(lambda _: None)
            error = outcome[0].value
            assert isinstance(error, ListenError)
            # Python prints the exit message itself (into twistd's log, which
            # has taken over stderr): logging it too would say it twice.
            self.lifecycle.failed(outcome[0])
            raise ListenFailed(f"sdweb: {error}")
        self._listening = listening

    def startService(self) -> None:
        """
        Start the children, listen (unless already bound), and become ready
        once every listener is bound and every readiness condition has fired.
        """
        self._refuseRestart()
        super().startService()
        # Before READY=1 can go out: systemd may signal as soon as it has.
        self.signals.serving()
        if self._listening is None:
            self._listening = self._startListening()
        self._listening.addCallback(lambda _: self.conditions.whenAll())
        self._listening.addCallback(lambda _: _whenRunning(self.reactor))
        self._listening.addCallbacks(self._becomeReady, self._startFailed)

    def _refuseRestart(self) -> None:
        if self.lifecycle.state is not State.STARTING:
            raise RuntimeError(
                "a WebService cannot be started again once it has stopped;"
                " make a new one"
            )

    def addReadinessCondition(self, condition: ReadinessCondition) -> None:
        """
        Hold C{READY=1} back until C{condition} has fired (a L{Deferred}) or
        succeeded (a callable, called at start-up).  If it fails, start-up
        fails as a listener would.  One that fires once stopping has begun
        sends nothing.
        """
        self.conditions.add(condition)

    def whenReady(self) -> Deferred[None]:
        """
        @return: A L{Deferred} that fires once C{READY=1} has been sent, or
            fails with a L{ListenError} (or what a readiness condition failed
            with), or with L{txsdnotify.systemd.lifecycle.StoppedBeforeReady}.
        """
        return self.lifecycle.whenReady()

    @property
    def ports(self) -> list[IListeningPort]:
        """
        The ports listening now.
        """
        return [lsn.port for lsn in self.listeners if lsn.port is not None]

    def _startListening(self) -> Deferred[None]:
        d = listenAll(self.listeners, self.tracker)
        d.addCallback(self._storeSockets)
        return d

    def _storeSockets(self, _: None) -> None:
        storeSockets(self.listeners, self._staleStored, self.notifier)
        self._staleStored = []

    def _becomeReady(self, _: None) -> None:
        if not self.lifecycle.ready(self.statusLine.current()):
            return
        self.log.info(
            "sdweb ready: serving on {addresses}{how}",
            addresses=", ".join(addresses(self.listeners)),
            how="" if self.fastPath is None else " (WSGI on the fast HTTP/1.1 path)",
        )
        self.statusLine.serving()

    def _startFailed(self, failure: Failure) -> None:
        error = failure.value
        assert error is not None
        if not self.lifecycle.failed(failure):
            return
        self.log.error("sdweb: {error}", error=str(error) or repr(error))
        if self.exitOnListenFailure:
            self.reactor.addSystemEventTrigger("after", "shutdown", _exit, 1)
            self.reactor.stop()

    def _setNote(self, note: str | None) -> None:
        self.statusLine.note = note

    # Reload.

    def addReloadHook(self, hook: ReloadHook, name: str | None = None) -> None:
        """
        Run C{hook()} on every reload (SIGHUP, or L{reload}), after the ones
        added before.  It may return a L{Deferred}; if it fails, the server
        goes on serving and the status says so.
        """
        self.reloadHooks.add(hook, name)

    def reload(self) -> Deferred[None]:
        """
        Send C{RELOADING=1} (with C{MONOTONIC_USEC}), run the reload hooks,
        then send C{READY=1}, whatever the hooks did.  A reload asked for
        while one runs runs once more after it; one asked for while stopping
        (or before ready) does nothing, and one still running when the stop
        begins never sends C{READY=1}.

        @return: Fires when the reload (and any asked for meanwhile) is done.
        """
        return self.reloader.reload()

    # Shutdown.

    def addDrainHook(self, hook: DrainHook) -> None:
        """
        Call C{hook(secondsLeft)} when the drain begins (the ports are
        closed, requests in flight are finishing): the place to end what only
        the application can end well, such as WebSockets (close code 1001,
        "going away") and event streams.  Its connections are aborted when
        C{secondsLeft} have passed.  It may return a L{Deferred}; the drain
        does not wait for it, only for the connections.
        """
        self._drainHooks.append(hook)

    def force(self) -> None:
        """
        Stop now: abort whatever the drain is still waiting for.  What a
        second C{SIGTERM} or C{SIGINT} does while stopping.
        """
        if not self.lifecycle.forced("Stopping now: aborting what is left"):
            return
        self.log.warn("sdweb: stop forced; aborting what is left")
        self.statusLine.stop()
        if self.drain is not None:
            self.drain.force()

    def _forceSignalled(self, signum: int) -> None:
        self.log.info(
            "Received {name} while stopping: stopping now",
            name=signal.Signals(signum).name,
        )
        self.force()

    def stopService(self) -> Deferred[None]:
        """
        Send C{STOPPING=1}, stop listening, drain, then stop the children.

        @return: Fires once every connection is gone, so that twistd's
            C{disconnectAll} finds nothing left to cut.
        """
        if not self.lifecycle.allows(State.DRAINING):
            # Start-up failed, or stopped already: nothing to drain.
            self.lifecycle.stopped()
            self.signals.restore()
            d = super().stopService()
            return d if d is not None else succeed(None)
        return Deferred.fromCoroutine(self._stop())

    async def _failHealthChecks(self) -> None:
        """
        Say C{STOPPING=1} (health checks fail from now on) and go on serving
        for L{healthGrace}, or until the stop is forced.
        """
        grace = self.healthGrace
        self.lifecycle.draining(
            f"Stopping: failing health checks, serving {grace:g}s more"
            " before the ports close",
            self.statusLine.extendUsec(grace + self.drainTimeout),
        )
        self.log.info(
            "sdweb stopping: failing health checks, serving {grace}s more",
            grace=grace,
        )
        self._graceWait = graceWait(self.lifecycle, self.reactor, grace)
        await self._graceWait
        self._graceWait = None

    def skipHealthGrace(self) -> None:
        """
        Serve no more of the health grace: a stop, begun or to come, closes
        the ports and drains at once (what a worker of C{--workers} does
        when its master says the drain begins).
        """
        self.healthGrace = 0.0
        waiting, self._graceWait = self._graceWait, None
        if waiting is not None and not waiting.called:
            waiting.callback(True)

    async def _stop(self) -> None:
        stats = self.tracker.stats
        # Before STOPPING=1 goes out: a second signal may follow at once.
        # Its handler acts from the reactor, after this step has run.
        self.signals.stopping()
        if self.healthGrace > 0:
            await self._failHealthChecks()
        else:
            self.lifecycle.draining(
                f"Stopping: draining {stats.openConnections} connection(s),"
                f" {stats.inFlight} request(s) in flight",
                self.statusLine.extendUsec(self.drainTimeout),
            )
        self.log.info(
            "sdweb stopping: draining {connections} connection(s),"
            " {inFlight} request(s) in flight",
            connections=stats.openConnections,
            inFlight=stats.inFlight,
        )
        self.statusLine.stop()
        self.tracker.holdSite()
        await stopListening(self.listeners)
        self.drain = Drain(
            self.tracker,
            clock=self.reactor,
            timeout=self.drainTimeout,
            grace=self.drainGrace,
            idleGrace=self.idleGrace,
            hooks=self._drainHooks,
        )
        drained = self.drain.start()
        if self.lifecycle.state is State.FORCED:
            self.drain.force()
        if not drained.called:
            self.statusLine.draining(self.drain)
        result: DrainResult = await drained
        self.statusLine.stop()
        self.tracker.releaseSite()
        await super().stopService()
        if result.aborted or result.forced:
            abandonBusyThreads(self.reactor)
        text = _stoppedText(stats.served, result)
        self.log.info("sdweb {text}", text=text)
        self.lifecycle.stopped(text)
        self.signals.restore()
        # Messages still waiting for room in the manager's queue would die
        # with the process; wait for them a little.
        flushed = self.notifier.flush()
        flushed.addTimeout(_FLUSH_WAIT, self.reactor)
        try:
            await flushed
        except Exception:
            self.log.warn("Some notifications could not be delivered before exit")


def _useFastPath(site: Site, httpParser: str) -> bool:
    """
    Whether C{site} is to be served by the fast HTTP/1.1 path.
    """
    if httpParser not in HTTP_PARSERS:
        raise ValueError(
            f"httpParser must be one of {HTTP_PARSERS}, not {httpParser!r}"
        )
    if httpParser == "twisted" or not isinstance(site.resource, WSGIApplication):
        return False
    if httpParser == "fast" and not available():
        raise ValueError(
            "the fast HTTP path needs httptools: pip install 'txsdnotify[fast]'"
        )
    return available()


def _whenRunning(reactor: Any) -> Deferred[None]:
    """
    Fires once C{reactor} runs: only then has it installed its handlers for
    C{SIGTERM} and C{SIGINT} (twistd starts the services before it runs the
    reactor), and systemd may stop the service as soon as it is ready.
    """
    d: Deferred[None] = Deferred()
    callWhenRunning = getattr(reactor, "callWhenRunning", None)
    if callWhenRunning is None:
        d.callback(None)
    else:
        callWhenRunning(d.callback, None)
    return d


def _stoppedText(completed: int, result: DrainResult) -> str:
    if result.forced:
        how = f"stop forced after {result.seconds:.1f}s"
    else:
        how = f"drained in {result.seconds:.1f}s"
    aborted = f", {result.aborted} aborted" if result.aborted else ""
    return f"Stopped: {completed} request(s) served; {how}{aborted}"


# Seconds a stop waits for notifications that the manager has not taken yet.
_FLUSH_WAIT = 2.0


def _exit(status: int) -> None:
    # A listener that failed after start-up cannot change twistd's exit
    # status any other way; by now the reactor has shut down cleanly.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
