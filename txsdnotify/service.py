# -*- test-case-name: tests.test_service -*-
"""
A twisted.web server that is a systemd C{Type=notify} service.

L{WebService} ties the parts together: it listens through a
L{TrackingFactory}, tells the manager C{READY=1} once every listener is
bound, keeps C{STATUS=} current from the request statistics, and on stop
says C{STOPPING=1} and drains before its L{Deferred} fires.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from .activation import InheritedSocket, inheritedSockets
from .drain import Drain, DrainResult
from .listeners import acceptWaiting, keepOpenForSystemd, planListeners
from .message import sanitizeStatus
from .notify import Notifier, monotonicUsec
from .ready import ReadinessCondition, ReadinessConditions, errnoOf, failureFields
from .reload import ReloadHook, ReloadHooks, reopenAccessLog
from .stats import StatusSampler
from .tracking import TrackingFactory
from .watchdog import WatchdogService, watchdogInterval

__all__ = ["ListenError", "ListenFailed", "WebService"]


class ListenError(Exception):
    """
    A listener could not be set up.

    @ivar description: The endpoint, as the user gave it.
    @ivar errno: The operating system's error number, if there is one.
    @ivar reason: Why, in a few words.
    """

    def __init__(self, description: str, errno: int | None, reason: str) -> None:
        super().__init__(description, errno, reason)
        self.description = description
        self.errno = errno
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot listen on {self.description}: {self.reason}"


class ListenFailed(SystemExit, Exception):
    """
    Raised out of twistd's start-up when a listener cannot be set up.

    A L{SystemExit}, so that Python prints just its one-line message and
    exits 1 instead of a traceback; an L{Exception} as well, so that twistd's
    start-up still catches it on the way out and removes its pid file.
    """


def listenError(description: str, failure: Failure) -> ListenError:
    """
    Make a L{ListenError} of whatever an endpoint's C{listen} failed with.
    """
    error = failure.value
    if isinstance(error, ListenError):
        return error
    assert error is not None
    number = errnoOf(error)
    if number is not None:
        reason = os.strerror(number)
    elif isinstance(error, CannotListenError):
        reason = str(error.socketError)
    else:
        reason = str(error) or type(error).__name__
    return ListenError(description, number, sanitizeStatus(reason))


class WebService(MultiService):
    """
    Serves a L{Site} on one or more endpoints as a systemd notify service.

    Child services added to it start before it listens and stop after it
    has drained.

    @ivar site: The site being served.
    @ivar notifier: Where notifications go.
    @ivar tracker: The factory that listens; its C{stats} are the figures.
    @ivar ports: The listening ports, once bound.
    @ivar drain: The drain, once stopping has begun.
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
        self.tracker = TrackingFactory(site)
        self.statusInterval = statusInterval
        self.drainTimeout = drainTimeout
        self.drainGrace = drainGrace
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
        self.drain: Drain | None = None
        self._listening: Deferred[None] | None = None
        # False until start-up has ended; then None (ready) or the failure.
        self._startOutcome: Failure | None | bool = False
        self._readyWaiters: list[Deferred[None]] = []
        self._sampler = StatusSampler(self.tracker.stats, reactor)
        self._lastStatus: str | None = None
        self._statusLoop = LoopingCall(self._statusTick)
        self._statusLoop.clock = reactor
        self._statusNote: str | None = None
        self.reloadSignal = reloadSignal
        self._previousHandler: Any = None
        self._reloading: Deferred[None] | None = None
        self._reloadAgain = False
        self.conditions = ReadinessConditions()
        self.reloadHooks = ReloadHooks(clock=reactor, timeout=reloadTimeout)
        if site.logPath:
            self.reloadHooks.add(reopenAccessLog(site), "reopen access log")
        interval = watchdogInterval(environ)
        self.watchdog: WatchdogService | None = None
        if interval is not None:
            self.watchdog = WatchdogService(self.notifier, interval, clock=reactor)
            self.watchdog.setServiceParent(self)

    # Start-up.

    def privilegedStartService(self) -> None:
        """
        Bind every listener now, before twistd drops privileges, and fail
        start-up with a one-line message if one cannot be bound.
        """
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
            self._notifyListenError(error)
            raise ListenFailed(f"sdweb: {error}")
        self._listening = listening

    def startService(self) -> None:
        """
        Start the children, listen (unless already bound), and send
        C{READY=1} once every listener is bound.
        """
        super().startService()
        if self._listening is None:
            self._listening = self._startListening()
        self._listening.addCallback(lambda _: self.conditions.whenAll())
        self._listening.addCallbacks(self._becomeReady, self._startFailed)
        if self.reloadSignal is not None:
            try:
                self._previousHandler = signal.signal(self.reloadSignal, self._onSignal)
            except ValueError:  # not the main thread: reload() still works
                self.log.warn(
                    "Not handling signal {signal}: not the main thread",
                    signal=self.reloadSignal,
                )

    def _onSignal(self, signum: int, frame: object) -> None:
        # A signal handler may run in the middle of anything the reactor
        # does; callFromThread is the one call that is safe from there.
        self.reactor.callFromThread(self.reload)

    def addReadinessCondition(self, condition: ReadinessCondition) -> None:
        """
        Hold C{READY=1} back until C{condition} has fired (a L{Deferred}) or
        succeeded (a callable, called at start-up): a warm database pool, a
        loaded cache.  If it fails, start-up fails as a listener would.
        """
        self.conditions.add(condition)

    def whenReady(self) -> Deferred[None]:
        """
        @return: A L{Deferred} that fires once C{READY=1} has been sent, or
            fails with a L{ListenError} (or what a readiness condition
            failed with).
        """
        if self._startOutcome is None:
            return succeed(None)
        if isinstance(self._startOutcome, Failure):
            return fail(self._startOutcome)
        d: Deferred[None] = Deferred()
        self._readyWaiters.append(d)
        return d

    @property
    def ports(self) -> list[IListeningPort]:
        """
        The ports listening now.
        """
        return [lsn.port for lsn in self.listeners if lsn.port is not None]

    def _startListening(self) -> Deferred[None]:
        attempts = [
            maybeDeferred(listener.endpoint.listen, self.tracker)
            for listener in self.listeners
        ]
        return DeferredList(attempts, consumeErrors=True).addCallback(self._listened)

    def _listened(self, results: list[tuple[bool, Any]]) -> None:
        failures = []
        for (ok, result), listener in zip(results, self.listeners):
            if ok:
                listener.port = result
            else:
                failures.append(listenError(listener.description, result))
        if failures:
            # The failure is reported at once, while twistd can still exit
            # with it; the ports that did bind close in the background.
            for listener in self.listeners:
                if listener.port is not None:
                    maybeDeferred(listener.port.stopListening)
                    listener.port = None
            raise failures[0]
        self._updateStore()

    def _updateStore(self) -> None:
        """
        Hand the sockets we bound to the fd store; drop the stored ones that
        are no longer configured.
        """
        for listener in self.listeners:
            port = listener.port
            if listener.storeName is None or listener.retained or port is None:
                continue
            # Storable ports are TCP ports, which have a descriptor.
            fileno = port.fileno()  # type: ignore[attr-defined]
            self.notifier.storeFds(listener.storeName, [fileno])
            keepOpenForSystemd(port)
            listener.retained = self.notifier.enabled
        for stale in self._staleStored:
            self.log.info(
                "Dropping {name} from the fd store: no longer configured",
                name=stale.name,
            )
            self.notifier.removeStoredFds(stale.name)
            os.close(stale.fd)
        self._staleStored = []

    def _becomeReady(self, _: None) -> None:
        if not self.running:
            return
        self._startOutcome = None
        text = self._sampler.sample().format()
        self._lastStatus = text
        self.notifier.send({"READY": 1, "MAINPID": os.getpid(), "STATUS": text})
        self.log.info(
            "sdweb ready: serving on {addresses}",
            addresses=", ".join(self._addresses()),
        )
        if self.statusInterval > 0:
            self._statusLoop.start(self.statusInterval, now=False)
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            d.callback(None)

    def _addresses(self) -> list[str]:
        shown = []
        for listener in self.listeners:
            if listener.port is None:
                continue
            address = listener.port.getHost()
            host = getattr(address, "host", None)
            number = getattr(address, "port", None)
            if host is not None and number is not None:
                shown.append(f"{listener.label} ({host}:{number})")
            else:
                shown.append(listener.label)
        return shown

    def _notifyListenError(self, error: BaseException) -> None:
        self.notifier.send(failureFields(error))

    def _startFailed(self, failure: Failure) -> None:
        error = failure.value
        assert error is not None
        self.log.error("sdweb: {error}", error=str(error) or repr(error))
        self._notifyListenError(error)
        self._startOutcome = failure
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            d.errback(failure)
        if self.exitOnListenFailure:
            self.reactor.addSystemEventTrigger("after", "shutdown", _exit, 1)
            self.reactor.stop()

    # Status.

    def _statusTick(self) -> None:
        if not self.notifier.enabled:
            return
        if self.drain is not None:
            self.notifier.send(
                {"STATUS": self._drainStatus(self.drain), **self._extendTimeout()}
            )
            return
        text = self._figures()
        if text != self._lastStatus:
            self._lastStatus = text
            self.notifier.status(text)

    def _figures(self) -> str:
        text = self._sampler.sample().format()
        if self._statusNote:
            text = f"{self._statusNote}; {text}"
        return text

    def _extendTimeout(self) -> dict[str, object]:
        """
        Ask for time until the drain's deadline, plus a margin for aborting
        and exiting: a stop timeout shorter than --drain-timeout must not cut
        the drain short, and a hung process must still be killed.
        """
        if self.drain is None or self.drain.started is None:
            left = self.drainTimeout
        else:
            left = max(0.0, self.drain.deadline - self.reactor.seconds())
        return {"EXTEND_TIMEOUT_USEC": int((left + _EXIT_MARGIN) * 1_000_000)}

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
        while one runs runs once more after it.

        @return: Fires when the reload (and any asked for meanwhile) is done.
        """
        if not self.running or self.drain is not None:
            return succeed(None)
        if self._reloading is not None:
            self._reloadAgain = True
            d: Deferred[None] = Deferred()
            self._reloading.addBoth(lambda _: d.callback(None))
            return d
        d = Deferred.fromCoroutine(self._reload())
        # Hooks that finish at once finish the whole reload before this line:
        # only a reload still running may make the next one wait.
        if not d.called:
            self._reloading = d
        return d

    async def _reload(self) -> None:
        try:
            while True:
                self._reloadAgain = False
                await self._reloadOnce()
                if not self._reloadAgain:
                    break
        finally:
            self._reloading = None

    async def _reloadOnce(self) -> None:
        self.log.info("sdweb reloading")
        self.notifier.send(
            {"RELOADING": 1, "MONOTONIC_USEC": monotonicUsec(), "STATUS": "Reloading"}
        )
        failed = await self.reloadHooks.run()
        if failed:
            when = time.strftime("%H:%M:%S")
            self._statusNote = sanitizeStatus(
                f"Reload failed at {when}: {'; '.join(failed)}"
            )
            self.log.error("sdweb {note}", note=self._statusNote)
        else:
            self._statusNote = None
            self.log.info("sdweb reloaded")
        text = self._figures()
        self._lastStatus = text
        if self.drain is None:
            self.notifier.send({"READY": 1, "STATUS": text})

    def _drainStatus(self, drain: Drain) -> str:
        stats = self.tracker.stats
        left = max(0.0, drain.deadline - self.reactor.seconds())
        return (
            f"Stopping: draining {drain.remaining} connection(s),"
            f" {stats.inFlight} request(s) in flight, {left:.0f}s left;"
            f" Total requests: {stats.completed}"
        )

    # Shutdown.

    def stopService(self) -> Deferred[None]:
        """
        Send C{STOPPING=1}, stop listening, drain, then stop the children.

        @return: Fires once every connection is gone, so that twistd's
            C{disconnectAll} finds nothing left to cut.
        """
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.reloadSignal is not None and self._previousHandler is not None:
            signal.signal(self.reloadSignal, self._previousHandler)
            self._previousHandler = None
        stats = self.tracker.stats
        self.notifier.send(
            {
                "STOPPING": 1,
                "STATUS": (
                    f"Stopping: draining {stats.openConnections} connection(s),"
                    f" {stats.inFlight} request(s) in flight"
                ),
                **self._extendTimeout(),
            }
        )
        self.log.info(
            "sdweb stopping: draining {connections} connection(s),"
            " {inFlight} request(s) in flight",
            connections=stats.openConnections,
            inFlight=stats.inFlight,
        )
        if self._statusLoop.running:
            self._statusLoop.stop()
        stopping = []
        for listener in self.listeners:
            port, listener.port = listener.port, None
            if port is None:
                continue
            if not listener.retained:
                # Nobody else holds this socket: what waits in its queue
                # would be reset when it closes, so serve it here.
                acceptWaiting(port)
            stopping.append(maybeDeferred(port.stopListening))
        await DeferredList(stopping)
        self.drain = Drain(
            self.tracker,
            clock=self.reactor,
            timeout=self.drainTimeout,
            grace=self.drainGrace,
        )
        drained = self.drain.start()
        if not drained.called:
            # The countdown moves in seconds; EXTEND_TIMEOUT_USEC wants
            # renewing well within its margin.
            self._statusLoop.start(1.0, now=False)
        result: DrainResult = await drained
        if self._statusLoop.running:
            self._statusLoop.stop()
        await super().stopService()
        aborted = f", {result.aborted} aborted" if result.aborted else ""
        text = (
            f"Stopped: {stats.completed} request(s) served;"
            f" drained in {result.seconds:.1f}s{aborted}"
        )
        self.log.info("sdweb {text}", text=text)
        self.notifier.status(text)
        # Messages still waiting for room in the manager's queue would die
        # with the process; wait for them a little.
        flushed = self.notifier.flush()
        flushed.addTimeout(_FLUSH_WAIT, self.reactor)
        try:
            await flushed
        except Exception:
            self.log.warn("Some notifications could not be delivered before exit")


# Seconds beyond the drain's deadline that the stop may take: aborting the
# remaining connections and twistd's own shutdown.
_EXIT_MARGIN = 5.0

# Seconds a stop waits for notifications that the manager has not taken yet.
_FLUSH_WAIT = 2.0


def _exit(status: int) -> None:
    # A listener that failed after start-up cannot change twistd's exit
    # status any other way; by now the reactor has shut down cleanly.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
