# -*- test-case-name: tests.test_workers -*-
"""
One worker process of C{twistd -n sdweb --workers N}.

The master starts it as C{python -m txsdnotify.cli.worker --listen FD:FAMILY
... -- SDWEB-ARGUMENTS}; that command line (L{txsdnotify.cli.worker}) reads
the sdweb options and builds the service, and L{runWorker} here runs it: it
adopts the inherited sockets and serves them with a L{WebService} whose
notifier goes nowhere.  It tells the master, over descriptor L{CONTROL_FD},
when it is ready and its request counters every interval (and at once when
the master asks, before a scrape); on C{SIGTERM} it drains as C{twistd
sdweb} does.  When its standard input closes (the master is gone) it stops.
A scrape of C{--metrics} on its ports is answered with the text the master
makes from every worker's figures.

The master writes to its standard input: C{stopping} when the whole
service begins to stop (the health checks fail from then on, while it
serves on through the master's health grace), C{force} when the stop is
forced (what is left is aborted once the drain begins).  When its standard input
closes, it drains at once: the master has closed its sockets (the service
stops), is replacing it (the service serves on, so its health checks still
pass), or is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.application.app import startApplication
from twisted.application.service import Application
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.stdio import StandardIO
from twisted.internet.task import LoopingCall
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    globalLogBeginner,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from txsdnotify.service import WebService
from txsdnotify.systemd.journal import journalObserver, journalStream
from txsdnotify.systemd.lifecycle import State
from txsdnotify.systemd.logtext import textObserver
from txsdnotify.workers.protocol import (
    CONTROL_FD,
    FORCE_SIGNAL,
    LineDecoder,
    countsMessage,
    encode,
    idleGraceFrom,
)

__all__ = [
    "MasterLink",
    "WorkerStartError",
    "adoptedEndpoints",
    "runWorker",
    "workerObserver",
]

log = Logger()

MAX_METRICS = 4 * 1024 * 1024
"""
The longest message from the master (metrics text) a worker accepts.
"""

METRICS_TIMEOUT = 10.0
"""
Seconds a worker waits for the master's metrics before it answers 503.
"""


@implementer(IHalfCloseableProtocol)
class MasterLink(Protocol):
    """
    The worker's end of the pipes to its master: messages go out on
    L{CONTROL_FD}; the master closes our standard input to have us stop
    (draining), and it closes too when the master is gone.  Before closing
    it, the master may say how long to keep idle keep-alive connections
    (a C{drain} message), given to C{onIdleGrace}.  Half-closeable: once our
    standard input has closed, the reports (the counts and the heartbeat)
    still go out while the worker drains.
    """

    def __init__(
        self,
        onClosed: Callable[[], object],
        onMessage: Callable[[str], object] = lambda kind: None,
        onIdleGrace: Callable[[float], object] = lambda seconds: None,
    ) -> None:
        self._onClosed = onClosed
        self._onMessage = onMessage
        self._onIdleGrace = onIdleGrace
        self._decoder = LineDecoder(maxLine=MAX_METRICS)
        self._asked: dict[int, Deferred[bytes]] = {}
        self._nextId = 0
        self.onReport: Callable[[], object] = lambda: None

    def dataReceived(self, data: bytes) -> None:
        """
        The master's messages, one per line: C{report} (send the counters
        now), C{metrics} (the answer to L{askMetrics}), C{drain} (the idle
        grace, to C{onIdleGrace}); any other kind goes to C{onMessage}.
        """
        for message in self._decoder.feed(data):
            kind = message["kind"]
            seconds = idleGraceFrom(message)
            if seconds is not None:
                self._onIdleGrace(seconds)
            elif kind == "report":
                self.onReport()
            elif kind == "metrics":
                d = self._asked.pop(message.get("id"), None)  # type: ignore[arg-type]
                text = message.get("text")
                if d is not None and isinstance(text, str):
                    d.callback(text.encode("utf-8"))
            else:
                self._onMessage(kind)

    def askMetrics(
        self, clock: Any, timeout: float = METRICS_TIMEOUT
    ) -> Deferred[bytes]:
        """
        Ask the master for the metrics of every worker.

        @return: Fires with the text; fails after C{timeout} seconds.
        """
        self._nextId += 1
        asked = self._nextId
        d: Deferred[bytes] = Deferred(lambda _: self._forget(asked))
        self._asked[asked] = d
        self.send(encode("metrics", id=asked))
        return d.addTimeout(timeout, clock)

    def _forget(self, asked: int) -> None:
        self._asked.pop(asked, None)

    def send(self, message: bytes) -> None:
        """
        Send one message, if the master still listens.
        """
        if self.transport is not None:
            self.transport.write(message)

    def readConnectionLost(self) -> None:
        """
        Standard input closed: the master wants us to stop, or is gone.
        """
        self._onClosed()

    def writeConnectionLost(self) -> None:
        """
        The master no longer reads our messages (it is gone).
        """

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Both ends closed.
        """
        self._onClosed()


class _StopOnce:
    """
    Stops the reactor (which drains the service) unless the service is
    stopping already: a C{SIGTERM} from systemd and the master's word may
    both arrive, and only a second C{SIGTERM} means "force".

    @ivar serviceStopping: Whether the whole service is stopping (the
        master said so, or this worker was sent C{SIGTERM}): then its health
        checks fail.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.service: WebService | None = None
        self.serviceStopping = False
        self.idleGrace: float | None = None
        self._done = False
        self._forcePending = False

    def setIdleGrace(self, seconds: float) -> None:
        """
        The master said how long the drain keeps idle keep-alive
        connections open.
        """
        self.idleGrace = seconds

    def __call__(self) -> None:
        """
        The master closed our standard input: drain now, without a grace.
        """
        if self.service is not None:
            self.service.skipHealthGrace()
        self._stop()

    def message(self, kind: str) -> None:
        """
        A message from the master.
        """
        if kind == "stopping":
            self.serviceStopping = True
        elif kind == "force":
            self._force()

    def healthState(self) -> State:
        """
        The state this worker's health checks tell: the service's.  A worker
        draining because it is replaced says C{ready}, since the service
        serves on; once the service stops, C{draining}.
        """
        assert self.service is not None
        state = self.service.lifecycle.state
        if state in (State.READY, State.RELOADING, State.DRAINING):
            return State.DRAINING if self.serviceStopping else State.READY
        return state

    def _stop(self) -> None:
        service = self.service
        if self._done or (service is not None and service.lifecycle.state.stopping):
            return
        self._done = True
        if service is not None and self.idleGrace is not None:
            service.idleGrace = self.idleGrace
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def _signalledStop(self) -> None:
        self.serviceStopping = True
        if not self._done:
            self._stop()
        else:
            self._force()

    def _force(self) -> None:
        """
        Abort what is left: now if the drain has begun, else once it has.
        """
        self.serviceStopping = True
        service = self.service
        if service is None or self._forcePending:
            return
        self._forcePending = True
        if service.lifecycle.state.stopping:
            service.force()
            return

        def draining(old: State, new: State) -> None:
            if new is State.DRAINING:
                service.force()

        service.lifecycle.observe(draining)

    def handleSignals(self) -> None:
        """
        Route C{SIGTERM} and C{SIGINT} here instead of to Twisted's handler
        (which would stop the reactor a second time when the master's word
        came first).  Once the drain has begun, the service's own handlers
        take over: a second signal forces the stop.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._signalled)
        signal.signal(FORCE_SIGNAL, self._forceSignalled)

    def _signalled(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self._signalledStop)

    def _forceSignalled(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self._force)


class InheritedEndpoint(AdoptedStreamServerEndpoint):
    """
    A socket the master passed, named so in the log.
    """

    def __repr__(self) -> str:
        return f"the master's socket (fd {self.fileno})"


def adoptedEndpoints(
    reactor: Any, specs: Sequence[str]
) -> list[IStreamServerEndpoint | str]:
    """
    Endpoints for the inherited sockets, given as C{FD:FAMILY} (the
    family's number, e.g. C{4:2} for an C{AF_INET} socket at descriptor 4).
    """
    endpoints: list[IStreamServerEndpoint | str] = []
    for spec in specs:
        fd, family = (int(part) for part in spec.split(":"))
        endpoints.append(InheritedEndpoint(reactor, fd, socket.AddressFamily(family)))
    return endpoints


def _beginLogging() -> None:
    stream = journalStream()
    observer = (
        journalObserver(stream) if stream is not None else textObserver(sys.stderr)
    )
    globalLogBeginner.beginLoggingTo(
        [workerObserver(observer, os.getpid())], redirectStandardIO=False
    )


def workerObserver(observer: ILogObserver, pid: int) -> ILogObserver:
    """
    An observer passing events on to C{observer}, each tagged with the
    worker's pid (as the log's "system": C{[sdweb worker 4242]}), so that
    the lines of N workers in one log can be told apart.
    """
    system = f"sdweb worker {pid}"

    def tagged(event: LogEvent) -> None:
        observer({**event, "log_system": system})

    return cast(ILogObserver, tagged)


class WorkerStartError(Exception):
    """
    The worker cannot start: its options or its application are wrong.  The
    message (its first line) is what the master reports.
    """


def runWorker(
    listen: Sequence[str],
    reportInterval: float,
    makeService: Callable[[list[IStreamServerEndpoint | str]], WebService],
) -> None:
    """
    Run one worker until it is told to stop; exit 1 if it cannot start.

    @param listen: The inherited sockets, as C{FD:FAMILY}.
    @param reportInterval: Seconds between the counters sent to the master.
    @param makeService: Builds the worker's service for the inherited
        endpoints; raises L{WorkerStartError} when it cannot.
    """
    from twisted.internet import reactor

    _beginLogging()
    stop = _StopOnce(reactor)
    link = MasterLink(stop, stop.message, stop.setIdleGrace)
    StandardIO(link, stdin=0, stdout=CONTROL_FD, reactor=reactor)  # type: ignore[call-arg]
    try:
        service = makeService(adoptedEndpoints(reactor, listen))
    except WorkerStartError as e:
        reason = str(e)
        print(reason, file=sys.stderr, flush=True)
        os.write(CONTROL_FD, encode("failed", reason=reason.splitlines()[0]))
        os._exit(1)
    service.exitOnListenFailure = True
    stop.service = service
    service.health.stateOf = stop.healthState
    stats = service.tracker.stats
    metrics = service.metrics

    def counts() -> bytes:
        return countsMessage(stats, metrics.gauges() if metrics else None)

    def sendCounts() -> None:
        link.send(counts())

    link.onReport = sendCounts
    if service.metricsPage is not None:
        service.metricsPage.exposition = lambda: link.askMetrics(reactor)
    report = LoopingCall(sendCounts)
    report.clock = reactor

    def ready(_: None) -> None:
        link.send(encode("ready", pid=os.getpid()))
        report.start(reportInterval, now=True)

    service.whenReady().addCallbacks(ready, lambda _: None)
    application = Application("sdweb-worker")
    service.setServiceParent(application)
    startApplication(application, False)
    reactor.callWhenRunning(stop.handleSignals)
    reactor.run()
    try:
        os.write(CONTROL_FD, counts())
    except OSError:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
