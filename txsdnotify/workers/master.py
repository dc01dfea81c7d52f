# -*- test-case-name: tests.test_workers -*-
"""
The master of C{twistd -n sdweb --workers N}: one face to systemd for N
worker processes.

The master binds the listening sockets (from C{--port}, socket activation or
the fd store) and never accepts on them; it starts the workers of a
L{WorkerPool} on them and is the only process that speaks to systemd,
through one L{Lifecycle}: C{READY=1} once every worker is ready, one status
line with the summed figures and the workers' state, C{RELOADING=1} while
the workers are replaced one at a time, C{STOPPING=1} while they drain, and
the watchdog pinged only while every worker reports.
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

from txsdnotify.listeners import (
    addresses,
    keepOpenForSystemd,
    listenAll,
    planListeners,
    storeSockets,
)
from txsdnotify.reload import Reloader, ReloadHooks
from txsdnotify.service import _exit, _whenRunning
from txsdnotify.signals import SignalRouter
from txsdnotify.statusline import EXIT_MARGIN, StatusLine
from txsdnotify.systemd.activation import InheritedSocket, storeEnabled
from txsdnotify.systemd.failures import ListenError, ListenFailed
from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.systemd.notify import Notifier
from txsdnotify.systemd.watchdog import WatchdogService, watchdogInterval
from txsdnotify.workers.pool import WorkerPool, currentEnvironment

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
    ) -> None:
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
        self.listeners, stale = planListeners(
            endpoints, reactor=reactor, inherited=inherited, fdStore=fdStore
        )
        self._staleStored = stale if fdStore else []
        self.statusLine = StatusLine(
            self.lifecycle, pool.stats, clock=reactor, interval=statusInterval
        )
        self.statusLine.addFigure(pool.figure)
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
        interval = watchdogInterval(environ)
        if interval is not None:
            gate = _WatchdogGate(self.lifecycle, pool)
            WatchdogService(gate, interval, clock=reactor).setServiceParent(self)

    # Start-up.

    def privilegedStartService(self) -> None:
        """
        Bind every socket now, and fail with one line if one cannot be.
        """
        super().privilegedStartService()
        listening = listenAll(self.listeners, Factory.forProtocol(_Refuse))
        outcome: list[object] = []
        listening.addBoth(outcome.append)
        if outcome and isinstance(outcome[0], Failure):
            error = outcome[0].value
            assert isinstance(error, ListenError)
            self.lifecycle.failed(outcome[0])
            raise ListenFailed(f"sdweb: {error}")
        self._holdSockets()

    def _holdSockets(self) -> None:
        # The workers accept; this process only keeps the sockets open.
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
        self.pool.signalAll(signal.SIGTERM)
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
        draining = self.lifecycle.draining(
            f"Stopping: {len(pool.live())} worker(s) draining,"
            f" {pool.stats.inFlight} request(s) in flight",
            self.statusLine.extendUsec(self.stopTimeout),
        )
        self.statusLine.stop()
        if draining:
            deadline = self.reactor.seconds() + self.stopTimeout
            self.statusLine.draining(_DrainProgress(pool, deadline))
        late = self.reactor.callLater(
            self.stopTimeout + EXIT_MARGIN / 2, pool.signalAll, signal.SIGKILL
        )
        await pool.stop()
        if late.active():
            late.cancel()
        self.statusLine.stop()
        await self._closeSockets()
        await super().stopService()
        if self.lifecycle.state is not State.FAILED:
            note = f"{self.statusLine.note}; " if self.statusLine.note else ""
            text = f"{note}Stopped: {pool.stats.completed} request(s) served"
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

    def _closeSockets(self) -> Deferred[Any]:
        closing = []
        for listener in self.listeners:
            port, listener.port = listener.port, None
            if port is None:
                continue
            if listener.retained:
                keepOpenForSystemd(port)
            closing.append(maybeDeferred(port.stopListening))
        return DeferredList(closing)


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
    )
