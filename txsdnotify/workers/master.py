# -*- test-case-name: tests.test_master,tests.test_workers -*-
"""
The master of C{twistd -n sdweb --workers N}: one face to systemd for N
worker processes.

The master binds the listening sockets (from C{--port}, socket activation or
the fd store) and never accepts on them; it starts the workers of a
L{WorkerPool} on them and is the only process that speaks to systemd,
through one L{Lifecycle}: C{READY=1} once every worker is ready, one status
line with the summed figures and the workers' state, C{RELOADING=1} while
the workers are replaced one at a time, C{STOPPING=1} while they drain, and
the watchdog pinged only while every worker reports.  It answers
C{--metrics-port} itself, from the sum of every worker's counters, and the
workers pass C{--metrics} scrapes on their ports to it.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from txsdnotify.health import Health, graceWait, healthListeners
from txsdnotify.listeners import (
    Listener,
    addresses,
    keepOpenForSystemd,
    listenAll,
    planListeners,
    storeSockets,
)
from txsdnotify.metrics import Metrics, MetricsPage, metricsListeners
from txsdnotify.reload import Reloader, ReloadHooks
from txsdnotify.service import _exit, _whenRunning
from txsdnotify.signals import SignalRouter
from txsdnotify.statusline import EXIT_MARGIN, StatusLine, shortNote
from txsdnotify.systemd.activation import InheritedSocket, storeEnabled
from txsdnotify.systemd.failures import ListenError, ListenFailed
from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.systemd.notify import Notifier
from txsdnotify.systemd.watchdog import WatchdogService, watchdogInterval
from txsdnotify.web.stats import StatusFigures
from txsdnotify.web.tls import isSSLPort, plainDescription
from txsdnotify.workers.pool import WorkerPool, WorkerProcess, currentEnvironment
from txsdnotify.workers.protocol import FORCE_SIGNAL, encode

__all__ = ["WorkerMaster", "makeMaster"]

FORCE_WAIT = 5.0
"""
Seconds the workers get to abort what is left once a stop is forced, before
they are killed.
"""


class _Refuse(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class _DrainProgress:
    """
    The workers' drain, as the status line reads it.
    """

    def __init__(self, pool: WorkerPool, deadline: float) -> None:
        self.pool = pool
        self.deadline = deadline

    @property
    def remaining(self) -> int:
        return self.pool.stats.openConnections


class _WatchdogGate:
    """
    Pings the watchdog only while every worker reports.
    """

    def __init__(self, lifecycle: Lifecycle, pool: WorkerPool) -> None:
        self.lifecycle = lifecycle
        self.pool = pool

    def watchdog(self) -> bool:
        if not self.pool.responsive():
            return False
        return self.lifecycle.watchdog()


class WorkerMaster(MultiService):
    """
    Holds the sockets, runs the workers and speaks for them to systemd.

    @ivar lifecycle: The service's state, and the only way to systemd.
    @ivar pool: The workers.
    @ivar statusLine: The summed figures and the workers' state.
    """

    log = Logger()

    def __init__(
        self,
        endpoints: Sequence[str | IStreamServerEndpoint],
        pool: WorkerPool,
        *,
        notifier: Notifier,
        reactor: Any,
        environ: Mapping[str, str],
        statusInterval: float = 1.0,
        drainTimeout: float = 30.0,
        healthGrace: float = 0.0,
        reloadTimeout: float = 120.0,
        fdStore: bool = False,
        inherited: Sequence[InheritedSocket] = (),
        healthPath: bytes | None = None,
        healthPorts: Sequence[str] = (),
        agentPorts: Sequence[str] = (),
        metricsPath: bytes | None = None,
        metricsPorts: Sequence[str] = (),
    ) -> None:
        """
        @param endpoints: Where the workers serve: strports descriptions or
            endpoints; an C{ssl:} port is bound here as plain TCP and each
            worker serves it in TLS.
        @param healthPath: The path the C{--health-port} ports answer.
        @param healthPorts: Ports (strports) that this process answers the
            health checks on, for the whole service.
        @param agentPorts: Ports (strports) that this process answers
            HAProxy's C{agent-check} on.
        """
        super().__init__()
        self.reactor = reactor
        self.pool = pool
        pool.onGiveUp = self._gaveUp
        self.notifier = notifier
        self.lifecycle = Lifecycle(notifier)
        self.drainTimeout = drainTimeout
        # The workers serve on for --health-grace before they drain: the
        # stop may take both.
        self.stopTimeout = healthGrace + drainTimeout
        self.healthGrace = healthGrace
        plain: list[str | IStreamServerEndpoint] = []
        for index, endpoint in enumerate(endpoints):
            if isinstance(endpoint, str) and isSSLPort(endpoint):
                # Bound here as TCP; each worker adds the TLS.
                pool.workerArguments += ["--tls", f"{index}={endpoint}"]
                endpoint = plainDescription(endpoint)
            plain.append(endpoint)
        self.listeners, stale = planListeners(
            plain, reactor=reactor, inherited=inherited, fdStore=fdStore
        )
        for listener, endpoint in zip(self.listeners, endpoints):
            if isinstance(endpoint, str) and isSSLPort(endpoint):
                listener.label = f"{endpoint} (TLS in the workers)"
        self.health = Health(
            self.lifecycle,
            pool.stats,
            reactor,
            canServe=lambda: pool.readyCount() > 0,
            details=lambda: {"workers": pool.readyCount()},
        )
        self.healthListeners: list[Listener] = healthListeners(
            self.health,
            healthPath or b"/healthz",
            healthPorts=healthPorts,
            agentPorts=agentPorts,
            reactor=reactor,
            inherited=inherited,
        )
        self._staleStored = stale if fdStore else []
        self.statusLine = StatusLine(
            self.lifecycle,
            pool.stats,
            clock=reactor,
            interval=statusInterval,
            layout=self._layout,
        )
        self.reloadHooks = ReloadHooks(clock=reactor, timeout=reloadTimeout)
        self.reloadHooks.add(pool.replaceAll, "replacing the workers")
        self.reloader = Reloader(
            self.lifecycle,
            self.reloadHooks,
            status=self.statusLine.current,
            onNote=self._setNote,
        )
        self.signals = SignalRouter(
            reactor,
            reloadSignal=signal.SIGHUP,
            onReload=self.reload,
            onForce=self._forceSignalled,
        )
        self._exitStatus: int | None = None
        self._listening: Deferred[None] | None = None
        self.metrics: Metrics | None = None
        self.metricsListeners: list[Listener] = []
        if metricsPath is not None or metricsPorts:
            self._setUpMetrics(metricsPath, metricsPorts, inherited)
        interval = watchdogInterval(environ)
        if interval is not None:
            gate = _WatchdogGate(self.lifecycle, pool)
            WatchdogService(gate, interval, clock=reactor).setServiceParent(self)

    def _setUpMetrics(
        self,
        path: bytes | None,
        ports: Sequence[str],
        inherited: Sequence[InheritedSocket],
    ) -> None:
        pool = self.pool
        metrics = self.metrics = Metrics(self.lifecycle, pool.stats, pool.gauges)
        metrics.workers = lambda: {
            "ready": pool.readyCount(),
            "replaced": pool.replaced,
            "recycled": pool.recycled,
            "failing": pool.failingPlaces(),
        }
        metrics.refresh = pool.refresh
        page = MetricsPage(metrics.render)
        self.metricsListeners = metricsListeners(
            page, path or b"/metrics", ports, reactor=self.reactor, inherited=inherited
        )
        pool.onMetrics = self._answerWorker

    def _answerWorker(self, worker: WorkerProcess, asked: int) -> None:
        """
        A worker was scraped on its ports: send it the metrics of all.
        """
        assert self.metrics is not None
        d = self.metrics.render()
        d.addCallback(
            lambda body: worker.send(encode("metrics", id=asked, text=body.decode()))
        )
        d.addErrback(lambda f: self.log.failure("sdweb: metrics failed", f))

    # Start-up.

    def privilegedStartService(self) -> None:
        """
        Bind every socket now, and fail with one line if one cannot be.
        """
        super().privilegedStartService()
        _listenNow(
            self.lifecycle,
            [*self.listeners, *self.healthListeners],
            Factory.forProtocol(_Refuse),
        )
        self._holdSockets()
        _listenNow(self.lifecycle, self.metricsListeners, Factory.forProtocol(_Refuse))

    def _holdSockets(self) -> None:
        # The workers accept; this process only keeps the sockets open (and
        # answers the health and agent ports itself).
        for listener in self.listeners:
            if listener.port is not None:
                listener.port.stopReading()  # type: ignore[attr-defined]

    def sockets(self) -> list[tuple[int, int]]:
        """
        The listening sockets: (descriptor, address family).
        """
        found = []
        for listener in self.listeners:
            port: Any = listener.port
            if port is not None:
                found.append((port.fileno(), int(port.socket.family)))
        return found

    def startService(self) -> None:
        """
        Start the workers; C{READY=1} once all are ready.
        """
        super().startService()
        self.signals.serving()
        storeSockets(self.listeners, self._staleStored, self.notifier)
        self._staleStored = []
        started = self.pool.start([self.sockets()] * self.pool.count)
        started.addCallback(lambda _: _whenRunning(self.reactor))
        started.addCallbacks(self._becomeReady, self._startFailed)

    def _becomeReady(self, _: None) -> None:
        if not self.lifecycle.ready(self.statusLine.current()):
            return
        self.log.info(
            "sdweb ready: {n} workers serving on {addresses}",
            n=self.pool.readyCount(),
            addresses=", ".join(addresses(self.listeners)),
        )
        self.statusLine.serving()

    def _startFailed(self, failure: Failure) -> None:
        if not self.lifecycle.failed(failure):
            return
        self.log.error("sdweb: {error}", error=failure.getErrorMessage())
        self._stopWith(1)

    def _gaveUp(self, reason: str) -> None:
        self.log.error("sdweb: {reason}; stopping", reason=reason)
        self._setNote(f"Failing: {reason}")
        self._stopWith(1)

    def _stopWith(self, status: int) -> None:
        if self._exitStatus is None:
            self._exitStatus = status
            self.reactor.addSystemEventTrigger("after", "shutdown", _exit, status)
            self.reactor.stop()

    def _setNote(self, note: str | None) -> None:
        self.statusLine.note = note

    def _layout(
        self, figures: StatusFigures, extras: list[str], note: str | None
    ) -> str:
        """
        The status line, most important first and short, so that
        C{systemctl status} cuts off the least: C{2/2 workers; 1,234 req;
        52.3 req/s; 3 in flight; 8 conn; 21.7 kB/s}, a short form of a note
        (a failed reload: the whole of it is in the log) after the workers,
        and the replacements last.
        """
        parts = [self.pool.figure()]
        if note:
            parts.append(shortNote(note))
        parts += [figures.short(), *extras]
        history = self.pool.history()
        if history:
            parts.append(history)
        return "; ".join(parts)

    # Reload.

    def reload(self) -> Deferred[None]:
        """
        C{RELOADING=1}, replace the workers one at a time, C{READY=1}.
        """
        return self.reloader.reload()

    # Shutdown.

    def _forceSignalled(self, signum: int) -> None:
        if not self.lifecycle.forced("Stopping now: aborting what is left"):
            return
        self.log.warn("sdweb: stop forced; the workers abort what is left")
        # Those still in the health grace hear it before they are told to
        # drain; those whose standard input is closed already are sent
        # FORCE_SIGNAL (not SIGTERM: a worker that has not yet read the end
        # of its standard input would take a SIGTERM for the first stop).
        force = encode("force")
        for worker in self.pool.live():
            if worker.listening:
                worker.send(force)
            else:
                worker.signal(FORCE_SIGNAL)
        self.reactor.callLater(FORCE_WAIT, self.pool.signalAll, signal.SIGKILL)

    def stopService(self) -> Deferred[None]:
        """
        C{STOPPING=1}, have every worker drain, wait for all, close the
        sockets.
        """
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.signals.stopping()
        pool = self.pool
        # Every worker fails its health checks from now on, and serves on.
        pool.tellAll(encode("stopping"))
        grace = self.healthGrace
        if grace > 0:
            draining = self.lifecycle.draining(
                f"Stopping: failing health checks, serving {grace:g}s more"
                " before the ports close",
                self.statusLine.extendUsec(self.stopTimeout),
            )
            if draining:
                # Not after a failed start: nothing was served.
                self.log.info(
                    "sdweb stopping: failing health checks, serving {grace}s more",
                    grace=grace,
                )
                await graceWait(self.lifecycle, self.reactor, grace)
                self.lifecycle.status(
                    self._stoppingText(),
                    self.statusLine.extendUsec(self.drainTimeout),
                )
        else:
            draining = self.lifecycle.draining(
                self._stoppingText(), self.statusLine.extendUsec(self.stopTimeout)
            )
        self.statusLine.stop()
        # New connections are refused from now on, as by one process: the
        # workers close theirs as soon as they are told to drain.
        await self._closeSockets(retained=False)
        if draining:
            deadline = self.reactor.seconds() + self.drainTimeout
            self.statusLine.draining(_DrainProgress(pool, deadline))
        late = self.reactor.callLater(
            self.drainTimeout + EXIT_MARGIN / 2, pool.signalAll, signal.SIGKILL
        )
        await pool.stop()
        if late.active():
            late.cancel()
        self.statusLine.stop()
        await self._closeSockets(retained=True)
        await super().stopService()
        if self.lifecycle.state is not State.FAILED:
            text = self._stoppedText()
            self.log.info("sdweb {text}", text=text)
            self.lifecycle.stopped(text)
        else:
            self.lifecycle.stopped()
        self.signals.restore()
        flushed = self.notifier.flush()
        flushed.addTimeout(2.0, self.reactor)
        try:
            await flushed
        except Exception:
            self.log.warn("Some notifications could not be delivered before exit")

    def _stoppingText(self) -> str:
        pool = self.pool
        return (
            f"Stopping: {len(pool.live())} worker(s) draining,"
            f" {pool.stats.inFlight} request(s) in flight"
        )

    def _stoppedText(self) -> str:
        """
        The last status line; a forced stop that aborted requests also makes
        the exit status 1.
        """
        stats = self.pool.stats
        note = self.statusLine.note
        note = f"{shortNote(note)}; " if note else ""
        text = f"{note}Stopped: {stats.served} request(s) served"
        forced = self.lifecycle.state is State.FORCED
        if forced:
            text += "; stop forced"
        if stats.aborted:
            text += f"{',' if forced else ';'} {stats.aborted} aborted"
            if forced:
                self._exitAfterShutdown(1)
        return text

    def _exitAfterShutdown(self, status: int) -> None:
        if self._exitStatus is None:
            self._exitStatus = status
            self.reactor.addSystemEventTrigger("after", "shutdown", _exit, status)

    def _closeSockets(self, *, retained: bool) -> Deferred[Any]:
        """
        Close our sockets: those that only we hold (and the health and agent
        ports), or those that systemd holds a copy of (the fd store, socket
        activation), which stay open until the workers are gone.
        """
        closing = []
        for listener in [
            *self.listeners,
            *self.healthListeners,
            *self.metricsListeners,
        ]:
            port = listener.port
            if port is None or listener.retained is not retained:
                continue
            listener.port = None
            if listener.retained:
                keepOpenForSystemd(port)
            closing.append(maybeDeferred(port.stopListening))
        return DeferredList(closing)


def _listenNow(
    lifecycle: Lifecycle, listeners: Sequence[Listener], factory: Factory
) -> None:
    """
    Bind C{listeners} now (with their own factory, or C{factory}); fail
    with one line if one cannot be bound.
    """
    failed: list[Failure] = []
    listenAll(listeners, factory).addErrback(failed.append)
    for failure in failed:
        error = failure.value
        assert isinstance(error, ListenError)
        lifecycle.failed(failure)
        raise ListenFailed(f"sdweb: {error}")


def makeMaster(config: Any) -> WorkerMaster:
    """
    The master that C{twistd sdweb --workers N} runs, from its options.
    """
    from twisted.internet import reactor

    statusInterval = config["status-interval"]
    # Twice per status update, so that every update has news from every
    # worker; at least once a second, as the heartbeat.
    report = min(max(statusInterval / 2, 0.05), 1.0) if statusInterval > 0 else 1.0
    pool = WorkerPool(
        reactor,
        count=config["workers"],
        sdwebArguments=config.arguments,
        environ=currentEnvironment(),
        path=config.startDirectory or None,
        reportInterval=report,
        workerTimeout=config["worker-timeout"],
        maxRequests=config["max-requests"],
        maxRequestsJitter=config["max-requests-jitter"],
        maxMemory=config["max-worker-memory"],
        # A replaced worker keeps idle keep-alive connections for half its
        # drain: a client idle that long gets its next request answered.
        replacedIdleGrace=config["drain-timeout"] / 2,
    )
    return WorkerMaster(
        config["ports"],
        pool,
        notifier=Notifier.fromEnvironment(config.environ),
        reactor=reactor,
        environ=config.environ,
        statusInterval=statusInterval,
        drainTimeout=config["drain-timeout"],
        healthGrace=config["health-grace"],
        fdStore=bool(config["fd-store"]) or storeEnabled(config.environ),
        inherited=config.inherited,
        healthPath=config["health"],
        healthPorts=[config["health-port"]] if config["health-port"] else [],
        agentPorts=[config["agent-port"]] if config["agent-port"] else [],
        metricsPath=config["metrics"],
        metricsPorts=[config["metrics-port"]] if config["metrics-port"] else [],
    )
