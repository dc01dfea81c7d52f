# -*- test-case-name: tests.test_pool, tests.test_workers -*-
"""
A pool of worker processes serving the sockets their master holds.

L{WorkerPool} starts the workers (C{python -m txsdnotify.cli.worker}) with the
listening sockets as inherited descriptors, reads what they report, sums
their counters, replaces a worker that dies (with a back-off), kills one
that stops reporting for longer than the worker timeout, recycles one
that served its requests or outgrew its memory (the new one ready before
the old one drains), replaces them one at a time on reload and stops them
all.  A place whose workers keep exiting before they are ready is retried
with a growing back-off while the others serve; the pool gives up only
once no worker can serve.  Nothing here knows systemd: the master service
reads the pool.
"""

from __future__ import annotations

import enum
import os
import random
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from txsdnotify.web.stats import RequestStats
from txsdnotify.workers.protocol import (
    CONTROL_FD,
    LineDecoder,
    drainMessage,
    encode,
    gaugesFromMessage,
    statsFromMessage,
)

__all__ = [
    "WorkerPool",
    "WorkerProcess",
    "WorkersFailed",
    "WorkerState",
    "backoff",
    "residentBytes",
]

FIRST_SOCKET_FD = CONTROL_FD + 1
"""
The descriptor of a worker's first listening socket; the others follow.
"""

BACKOFF_CAP = 30.0
"""
The longest wait, in seconds, before a place whose workers keep failing to
start is tried again.
"""

MAX_REASON = 120
"""
The most characters of a worker's failure the status line shows (the log
has all of it).
"""


class WorkersFailed(Exception):
    """
    Workers keep exiting before they are ready.
    """


class WorkerState(enum.Enum):
    """
    Where one worker is in its life.
    """

    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    EXITED = "exited"


def describeExit(reason: Failure) -> str:
    """
    How a process ended, in words: C{exited with status 1}, C{was killed by
    signal 9 (SIGKILL)}.
    """
    error = reason.value
    if isinstance(error, ProcessTerminated) and error.signal is not None:
        try:
            name = f" ({signal.Signals(error.signal).name})"
        except ValueError:
            name = ""
        return f"was killed by signal {error.signal}{name}"
    code = getattr(error, "exitCode", None)
    return f"exited with status {code}"


class WorkerProcess(ProcessProtocol):
    """
    One worker, as its master sees it.

    @ivar state: Its L{WorkerState}.
    @ivar stats: Its counters, as last reported.
    @ivar gauges: Its gauges (open connections by kind, WSGI threads), as
        last reported.
    @ivar lastHeard: When it last said something (its heartbeat).
    @ivar reason: Why it could not start, if it said.
    @ivar pid: Its process id.
    @ivar slot: Which of the pool's places it fills (which sockets it
        serves, when each place has its own).
    @ivar ready: Fires when it is ready; fails if it exits first.
    @ivar listening: Whether its standard input is open (it hears what
        L{send} writes).
    @ivar requestLimit: After how many requests it is recycled (L{None}:
        never).
    @ivar recycleAfter: When (on the pool's clock) it may be recycled: later
        after a replacement failed to start.
    @ivar recycling: Whether a worker to take its place is starting.
    """

    log = Logger()

    def __init__(self, pool: WorkerPool, slot: int) -> None:
        self.pool = pool
        self.slot = slot
        self.state = WorkerState.STARTING
        self.stats = RequestStats()
        self.gauges: dict[str, int] = {}
        self.lastHeard = pool.clock.seconds()
        self.reason: str | None = None
        self.pid: int | None = None
        self.ready: Deferred[None] = Deferred()
        self.requestLimit: int | None = None
        self.recycleAfter = 0.0
        self.recycling = False
        self._decoder = LineDecoder()
        self._reported: list[Deferred[None]] = []
        self.listening = True

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Read its messages.
        """
        if childFD != CONTROL_FD:
            return
        self.lastHeard = self.pool.clock.seconds()
        for message in self._decoder.feed(data):
            kind = message["kind"]
            if kind == "counts":
                statsFromMessage(message, self.stats)
                self.gauges = gaugesFromMessage(message)
                reported, self._reported = self._reported, []
                for d in reported:
                    if not d.called:  # not timed out
                        d.callback(None)
            elif kind == "metrics":
                asked = message.get("id")
                if isinstance(asked, int) and self.pool.onMetrics is not None:
                    self.pool.onMetrics(self, asked)
            elif kind == "ready" and self.state is WorkerState.STARTING:
                self.state = WorkerState.READY
                self.pool.becameReady(self)
                self.ready.callback(None)
            elif kind == "failed":
                self.reason = str(message.get("reason", ""))[:200] or None
        self.pool.changed()

    def send(self, message: bytes) -> None:
        """
        Write C{message} to its standard input, while that is open.
        """
        if self.transport is not None and self.listening:
            try:
                self.transport.writeToChild(0, message)
            except (KeyError, OSError):
                pass

    def report(self) -> Deferred[None]:
        """
        Ask for its counters now.

        @return: Fires once they have arrived (never, if it does not answer:
            add a timeout).
        """
        d: Deferred[None] = Deferred()
        self._reported.append(d)
        self.send(encode("report"))
        return d

    def stop(self, idleGrace: float | None = None) -> None:
        """
        Have it drain and exit: close its standard input.

        @param idleGrace: Seconds its drain keeps idle keep-alive
            connections open for one more request, if not its own default.
        """
        if self.state is WorkerState.EXITED:
            return
        if self.state is not WorkerState.STARTING:
            self.state = WorkerState.STOPPING
        self.listening = False
        if self.transport is not None:
            if idleGrace is not None:
                self.transport.write(drainMessage(idleGrace))
            self.transport.closeStdin()

    def signal(self, signum: int) -> None:
        """
        Send it a signal, if it still runs.
        """
        if self.transport is None or self.state is WorkerState.EXITED:
            return
        try:
            self.transport.signalProcess(signum)
        except (ProcessExitedAlready, OSError):
            pass

    def processEnded(self, reason: Failure) -> None:
        """
        It is gone: tell the pool.
        """
        wasReady = self.state is not WorkerState.STARTING
        self.state = WorkerState.EXITED
        reported, self._reported = self._reported, []
        for d in reported:
            if not d.called:
                d.callback(None)
        self.listening = False
        how = describeExit(reason)
        if not self.ready.called:
            self.ready.errback(WorkersFailed(self.reason or f"a worker {how}"))
            self.ready.addErrback(lambda _: None)
        self.pool.ended(self, how, wasReady)


class WorkerPool:
    """
    The worker processes of one master.

    @ivar workers: The workers serving (or starting to, to serve), one per
        place.
    @ivar candidates: New workers starting to take an old one's place (on
        reload or recycling).
    @ivar leaving: Workers draining.
    @ivar stats: The counters of all workers, past and present, summed.
    @ivar replaced: How many workers died and were replaced.
    @ivar recycled: How many workers were replaced on purpose (a reload,
        C{--max-requests}, C{--max-worker-memory}), the new one ready before
        the old one drained.
    @ivar onMetrics: Called with a worker and the id of its question when
        the worker asks for the metrics (a scrape on its ports).
    @ivar lastExit: How the last unexpected exit went, in words.
    @ivar startFailures: For each place, how many of its workers exited
        before they were ready, in a row.
    @ivar failing: For each place whose workers keep failing to start, the
        last reason (L{None} for the others).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        count: int,
        sdwebArguments: Sequence[str],
        environ: dict[str, str],
        path: str | None = None,
        reportInterval: float = 1.0,
        workerTimeout: float = 30.0,
        startTimeout: float = 60.0,
        maxStartFailures: int = 5,
        maxRequests: int = 0,
        maxRequestsJitter: int = 0,
        maxMemory: int = 0,
        memoryOf: Callable[[int], int | None] | None = None,
        randint: Callable[[int, int], int] = random.randint,
        replacedIdleGrace: float = 15.0,
        onGiveUp: Callable[[str], object] = lambda reason: None,
    ) -> None:
        """
        @param count: How many workers serve.
        @param sdwebArguments: The C{twistd sdweb} arguments the workers read.
        @param environ: The workers' environment (without systemd's
            variables: only the master speaks to systemd).
        @param path: The workers' working directory.
        @param reportInterval: Seconds between the workers' reports.
        @param workerTimeout: Seconds a ready worker may go without a report
            (its reactor blocked) before it is killed and replaced.
        @param startTimeout: Seconds a worker may take to become ready.
        @param maxStartFailures: Exits before ready, in a row, after which
            the pool gives up, once no worker can serve.
        @param maxRequests: Recycle a worker after this many requests (0:
            never).
        @param maxRequestsJitter: Up to this many more, at random, so that
            workers are not all recycled at once.
        @param maxMemory: Recycle a worker whose resident memory passes this
            many bytes (0: never).
        @param memoryOf: A process's resident memory in bytes, by pid
            (default: L{residentBytes}).
        @param randint: Picks the jitter, as L{random.randint}.
        @param replacedIdleGrace: Seconds a worker being replaced (reload,
            recycling) keeps its idle keep-alive connections open for one
            more request, answered with C{Connection: close}: the listening
            socket stays open, so the client's next connection reaches the
            new worker.
        @param onGiveUp: Called with the reason once the pool gives up while
            serving (a failed L{start} says it otherwise).
        """
        self.reactor = reactor
        self.clock = reactor
        self.count = count
        self.sdwebArguments = list(sdwebArguments)
        self.environ = environ
        self.path = path
        self.reportInterval = reportInterval
        self.workerTimeout = workerTimeout
        # Late by this much, a ready worker does not count as answering
        # (for the watchdog) though it is not killed yet.
        self.quietLimit = min(2 * reportInterval + 1.0, workerTimeout)
        self.startTimeout = startTimeout
        self.maxStartFailures = maxStartFailures
        self.maxRequests = maxRequests
        self.maxRequestsJitter = maxRequestsJitter
        self.maxMemory = maxMemory
        self.memoryOf = residentBytes if memoryOf is None else memoryOf
        self.randint = randint
        self.replacedIdleGrace = replacedIdleGrace
        self.onGiveUp = onGiveUp
        self.workerArguments: list[str] = []
        self.workers: list[WorkerProcess] = []
        self.leaving: list[WorkerProcess] = []
        self.candidates: list[WorkerProcess] = []
        self.stats = RequestStats()
        self.replaced = 0
        self.recycled = 0
        self.onMetrics: Callable[[WorkerProcess, int], object] | None = None
        self.lastExit: str | None = None
        self.startFailures = [0] * count
        self.failing: list[str | None] = [None] * count
        self.stopping = False
        self._gaveUp = False
        self._reloading = False
        self._recycles = 0
        self._recyclesOver: list[Deferred[None]] = []
        self._sockets: list[list[tuple[int, int]]] = []
        self._past = RequestStats()
        self._pending: list[IDelayedCall] = []
        self._started: Deferred[None] | None = None
        self._exited: list[Deferred[None]] = []
        self._check = LoopingCall(self._watch)
        self._check.clock = reactor

    # Starting and replacing.

    def start(self, sockets: Sequence[Sequence[tuple[int, int]]]) -> Deferred[None]:
        """
        Start the workers: the one in place C{i} on C{sockets[i]}
        (descriptor, address family), one list for each of L{count} places.

        @return: Fires once all are ready; fails with L{WorkersFailed} if
            they keep exiting first.
        """
        self._sockets = [list(slot) for slot in sockets]
        self._started = Deferred()
        started = self._started
        for slot in range(self.count):
            self.workers.append(self._spawn(slot))
        self._check.start(self.reportInterval, now=False)
        return started

    def _command(self, slot: int) -> list[str]:
        command = [sys.executable, "-m", "txsdnotify.cli.worker"]
        command += ["--report-interval", repr(self.reportInterval)]
        for i, (_, family) in enumerate(self._sockets[slot]):
            command += ["--listen", f"{FIRST_SOCKET_FD + i}:{family}"]
        return [*command, *self.workerArguments, "--", *self.sdwebArguments]

    def _spawn(self, slot: int) -> WorkerProcess:
        worker = WorkerProcess(self, slot)
        if self.maxRequests > 0:
            worker.requestLimit = self.maxRequests + self.randint(
                0, self.maxRequestsJitter
            )
        childFDs: dict[int, int | str] = {0: "w", 1: 1, 2: 2, CONTROL_FD: "r"}
        for i, (fd, _) in enumerate(self._sockets[slot]):
            childFDs[FIRST_SOCKET_FD + i] = fd
        self.reactor.spawnProcess(
            worker,
            sys.executable,
            self._command(slot),
            env=self.environ,
            path=self.path,
            childFDs=childFDs,
        )
        worker.pid = worker.transport.pid  # type: ignore[union-attr]
        self.log.info("sdweb: started worker {pid}", pid=worker.pid)
        late = self.clock.callLater(self.startTimeout, self._startTimedOut, worker)
        worker.ready.addBoth(lambda result: _cancel(late, result))
        return worker

    def _startTimedOut(self, worker: WorkerProcess) -> None:
        if worker.state is WorkerState.STARTING:
            self.log.error(
                "sdweb: worker {pid} not ready after {s}s; killing it",
                pid=worker.pid,
                s=self.startTimeout,
            )
            worker.reason = f"a worker was not ready after {self.startTimeout:g}s"
            worker.signal(signal.SIGKILL)

    def becameReady(self, worker: WorkerProcess) -> None:
        """
        A worker said it is ready: its place starts well again.
        """
        self.log.info("sdweb: worker {pid} ready", pid=worker.pid)
        self.startFailures[worker.slot] = 0
        self.failing[worker.slot] = None

    def ended(self, worker: WorkerProcess, how: str, wasReady: bool) -> None:
        """
        A worker exited: keep its counts, replace it if it was serving.
        """
        self._retire(worker)
        serving = worker in self.workers
        for group in (self.workers, self.leaving, self.candidates):
            if worker in group:
                group.remove(worker)
        if serving and not self.stopping:
            self._unexpectedExit(worker, how, wasReady)
        self.changed()
        if not self.live():
            exited, self._exited = self._exited, []
            for d in exited:
                d.callback(None)

    def _unexpectedExit(self, worker: WorkerProcess, how: str, wasReady: bool) -> None:
        slot = worker.slot
        if wasReady:
            self.replaced += 1
            self.lastExit = f"worker {worker.pid} {how}"
            self.log.error("sdweb: a worker {how}; replacing it", how=how)
            delay = 0.0
        else:
            failures = self.startFailures[slot] = self.startFailures[slot] + 1
            reason = worker.reason or f"a worker {how} before it was ready"
            self.failing[slot] = reason
            self.log.error("sdweb: {reason} ({n} in a row)", reason=reason, n=failures)
            most = max(self.startFailures)
            worst = slot if failures == most else self.startFailures.index(most)
            if most >= self.maxStartFailures and not self._canServe():
                self._giveUp(
                    f"workers keep exiting at start ({most} in a row):"
                    f" {self.failing[worst]}"
                )
                return
            delay = backoff(failures)
        self._pending.append(self.clock.callLater(delay, self._refill, slot))

    def _canServe(self) -> bool:
        """
        Whether some worker serves, or is starting to.
        """
        return any(w.state is not WorkerState.EXITED for w in self.workers)

    def _refill(self, slot: int) -> None:
        """
        Start a worker in place C{slot}, unless it is taken again.
        """
        self._pending = [c for c in self._pending if c.active()]
        if self.stopping or self._gaveUp:
            return
        if any(w.slot == slot for w in self.workers):
            return
        self.workers.append(self._spawn(slot))
        self.changed()

    def _giveUp(self, reason: str) -> None:
        self._gaveUp = True
        started, self._started = self._started, None
        if started is not None and not started.called:
            started.errback(WorkersFailed(reason))
        else:
            self.onGiveUp(reason)

    def changed(self) -> None:
        """
        Something was reported: sum the counters, see if all are ready.
        """
        self.stats.setToSum([self._past, *(w.stats for w in self.live())])
        started = self._started
        if (
            started is not None
            and not started.called
            and self.readyCount() >= self.count
        ):
            self._started = None
            started.callback(None)

    def _retire(self, worker: WorkerProcess) -> None:
        """
        Keep what a worker that exited did (its last report: no counter
        goes backwards); what was in flight on it was aborted, and its
        connections are closed.
        """
        past, mine = self._past, worker.stats
        lost, stillOpen = mine.inFlight, mine.openConnections
        past.add(mine)
        past.aborted += lost
        past.connectionsClosed += stillOpen
        worker.stats = RequestStats()
        worker.gauges = {}

    # What the master reads.

    def live(self) -> list[WorkerProcess]:
        """
        Every worker process that has not exited.
        """
        return [*self.workers, *self.candidates, *self.leaving]

    def refresh(self, timeout: float = 2.0) -> Deferred[None]:
        """
        Have every worker report its counters now, and sum them.

        @return: Fires once all have (or C{timeout} seconds have passed:
            the sum then has the last counts of the slow ones).
        """
        waits = []
        for worker in self.live():
            if worker.state is WorkerState.STARTING:
                continue
            d = worker.report()
            d.addTimeout(timeout, self.clock)
            waits.append(d)
        done = DeferredList(waits, consumeErrors=True)
        done.addCallback(lambda _: self.changed())
        return done  # type: ignore[return-value]

    def gauges(self) -> dict[str, int]:
        """
        The gauges every live worker reported, summed.
        """
        total: dict[str, int] = {}
        for worker in self.live():
            for name, value in worker.gauges.items():
                total[name] = total.get(name, 0) + value
        return total

    def failingPlaces(self) -> int:
        """
        How many places have workers that keep exiting before they are
        ready.
        """
        return sum(reason is not None for reason in self.failing)

    def readyCount(self) -> int:
        """
        How many serving workers are ready.
        """
        return sum(w.state is WorkerState.READY for w in self.workers)

    def responsive(self) -> bool:
        """
        Whether the workers, as a whole, answer: some worker is starting, or
        some ready worker has reported lately.  A single worker blocked for
        a while is the worker timeout's business, not the watchdog's.
        """
        now = self.clock.seconds()
        return any(
            w.state is WorkerState.STARTING
            or (w.state is WorkerState.READY and now - w.lastHeard <= self.quietLimit)
            for w in self.workers
        )

    def figure(self) -> str:
        """
        The workers' state, first on the status line: C{2/2 workers}, with
        those starting and stopping, and a place whose workers keep failing
        to start.
        """
        ready = self.readyCount()
        text = f"{ready}/{self.count} workers"
        starting = sum(
            w.state is WorkerState.STARTING for w in self.workers + self.candidates
        )
        if starting:
            text += f", {starting} starting"
        if self.leaving:
            text += f", {len(self.leaving)} stopping"
        reasons = [r for r in self.failing if r is not None]
        if reasons:
            if ready < self.count:
                text += f"; degraded: {ready} of {self.count} workers"
            text += f"; replacement failing: {shorten(reasons[-1])}"
        return text

    def history(self) -> str | None:
        """
        The replacements, last on the status line: C{1 replaced (last:
        worker 4242 was killed by signal 9 (SIGKILL)); 2 recycled}; L{None}
        if none.
        """
        parts = []
        if self.replaced:
            parts.append(f"{self.replaced} replaced (last: {self.lastExit})")
        if self.recycled:
            parts.append(f"{self.recycled} recycled")
        return "; ".join(parts) or None

    def _watch(self) -> None:
        """
        Every report interval: kill the workers gone silent, recycle one
        that served its requests or outgrew its memory.
        """
        now = self.clock.seconds()
        for worker in self.live():
            if worker.state is WorkerState.STARTING:
                continue
            if now - worker.lastHeard > self.workerTimeout:
                self.log.error(
                    "sdweb: worker {pid} silent for {s:.0f}s; killing it",
                    pid=worker.pid,
                    s=now - worker.lastHeard,
                )
                worker.lastHeard = now
                worker.signal(signal.SIGKILL)
        if self._reloading or self.stopping:
            # A reload replaces them all anyway.
            return
        for worker in list(self.workers):
            why = None if worker.recycling else self._worn(worker, now)
            if why is not None:
                self._recycle(worker, why)

    def _worn(self, worker: WorkerProcess, now: float) -> str | None:
        """
        Why C{worker} is due to be recycled, if it is.
        """
        if worker.state is not WorkerState.READY or now < worker.recycleAfter:
            return None
        limit = worker.requestLimit
        if limit is not None and worker.stats.completed >= limit:
            return f"served {worker.stats.completed} requests"
        if self.maxMemory > 0 and worker.pid is not None:
            rss = self.memoryOf(worker.pid)
            if rss is not None and rss > self.maxMemory:
                return f"uses {rss // 2**20} MB"
        return None

    def _recycle(self, old: WorkerProcess, why: str) -> None:
        self.log.info("sdweb: worker {pid} {why}; replacing it", pid=old.pid, why=why)
        old.recycling = True
        self._recycles += 1
        replacing = Deferred.fromCoroutine(self._replace(old))
        replacing.addCallbacks(self._recycled, self._recycleFailed, errbackArgs=(old,))
        replacing.addBoth(self._recycleOver, old)

    def _recycleOver(self, result: object, old: WorkerProcess) -> object:
        old.recycling = False
        self._recycles -= 1
        if not self._recycles:
            waiting, self._recyclesOver = self._recyclesOver, []
            for d in waiting:
                d.callback(None)
        return result

    def _whenRecyclesOver(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self._recycles:
            self._recyclesOver.append(d)
        else:
            d.callback(None)
        return d

    def _recycled(self, _: None) -> None:
        self.recycled += 1
        self.changed()

    def _recycleFailed(self, failure: Failure, old: WorkerProcess) -> None:
        failure.trap(WorkersFailed)
        slot = old.slot
        failures = self.startFailures[slot] = self.startFailures[slot] + 1
        self.failing[slot] = failure.getErrorMessage()
        old.recycleAfter = self.clock.seconds() + backoff(failures)
        self.log.error(
            "sdweb: the worker to take over from worker {pid} failed: {reason};"
            " worker {pid} serves on",
            pid=old.pid,
            reason=failure.getErrorMessage(),
        )
        self.changed()

    async def _replace(self, old: WorkerProcess) -> None:
        """
        Start a worker in C{old}'s place; once it is ready, have C{old}
        drain.  Fails with L{WorkersFailed} if the new one exits first.
        """
        new = self._spawn(old.slot)
        self.candidates.append(new)
        self.changed()
        await new.ready
        self.candidates.remove(new)
        if self.stopping:
            self.leaving.append(new)
            new.stop()
            return
        if old in self.workers:
            self.workers.remove(old)
            self.workers.append(new)
            self.leaving.append(old)
            self.log.info(
                "sdweb: worker {new} took over; worker {old} drains",
                new=new.pid,
                old=old.pid,
            )
            old.stop(self.replacedIdleGrace)
        elif any(w.slot == old.slot for w in self.workers):
            # The old one died meanwhile and was replaced already.
            self.leaving.append(new)
            new.stop()
        else:
            self.workers.append(new)
        self.changed()

    # Reload and stop.

    def replaceAll(self) -> Deferred[None]:
        """
        Replace every worker, one at a time: each new one is ready before
        the old one is told to drain.  If a new one does not come up, the
        old ones that are left keep serving and this fails.
        """
        return Deferred.fromCoroutine(self._replaceAll())

    async def _replaceAll(self) -> None:
        self._reloading = True
        try:
            # A worker started before the reload would run the old code.
            await self._whenRecyclesOver()
            for old in list(self.workers):
                if old not in self.workers or self.stopping:
                    continue
                await self._replace(old)
        finally:
            self._reloading = False

    def stop(self) -> Deferred[None]:
        """
        Have every worker drain and exit.

        @return: Fires once all have exited.
        """
        self.stopping = True
        for call in self._pending:
            if call.active():
                call.cancel()
        self._pending = []
        if self._check.running:
            self._check.stop()
        for worker in self.live():
            worker.stop()
        return self.whenAllExited()

    def whenAllExited(self) -> Deferred[None]:
        """
        Fires once no worker process is left.
        """
        d: Deferred[None] = Deferred()
        if not self.live():
            d.callback(None)
        else:
            self._exited.append(d)
        return d

    def tellAll(self, message: bytes) -> None:
        """
        Write C{message} to every worker that still listens.
        """
        for worker in self.live():
            worker.send(message)

    def signalAll(self, signum: int) -> None:
        """
        Send every worker C{signum}.
        """
        for worker in self.live():
            worker.signal(signum)


def backoff(failures: int) -> float:
    """
    Seconds to wait before starting a worker again after C{failures} exits
    before ready in a row, in its place: none after a worker that had
    served, then 0.5, 1, 2, ... up to L{BACKOFF_CAP}.
    """
    if failures <= 0:
        return 0.0
    return float(min(0.5 * 2 ** min(failures - 1, 16), BACKOFF_CAP))


def shorten(reason: str) -> str:
    """
    A reason cut to L{MAX_REASON} characters for the status line.
    """
    if len(reason) <= MAX_REASON:
        return reason
    return reason[: MAX_REASON - 3] + "..."


def residentBytes(pid: int) -> int | None:
    """
    The resident memory of process C{pid} in bytes, from
    C{/proc/PID/statm}; L{None} if it cannot be read.
    """
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def _cancel(call: IDelayedCall, result: object) -> object:
    if call.active():
        call.cancel()
    return result


def workerEnvironment(environ: dict[str, str]) -> dict[str, str]:
    """
    The workers' environment: the master's, without what only the master
    may use (C{NOTIFY_SOCKET}, C{WATCHDOG_*}, C{LISTEN_*}, C{FDSTORE}).
    """
    return {
        k: v
        for k, v in environ.items()
        if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_", "FDSTORE"))
    }


def currentEnvironment() -> dict[str, str]:
    """
    L{workerEnvironment} of this process's environment.
    """
    return workerEnvironment(dict(os.environ))
