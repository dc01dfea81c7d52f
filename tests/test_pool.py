"""
Tests for txsdnotify.workers.pool in-process: a fake clock and a reactor
whose spawned processes are played by the test (what they report, how they
end), so that every decision of the pool is seen without a real worker.
The real workers are in test_workers.py.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, cast

import pytest
from twisted.internet.error import (
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure

from txsdnotify.web.stats import RequestStats
from txsdnotify.workers.pool import (
    BACKOFF_CAP,
    MAX_REASON,
    WorkerPool,
    WorkerProcess,
    WorkersFailed,
    WorkerState,
    backoff,
    currentEnvironment,
    describeExit,
    residentBytes,
    shorten,
    workerEnvironment,
)
from txsdnotify.workers.protocol import (
    LineDecoder,
    countsMessage,
    encode,
    idleGraceFrom,
)


class FakeProcess:
    """
    A spawned worker, played by the test.
    """

    def __init__(
        self,
        protocol: WorkerProcess,
        pid: int,
        args: list[str],
        env: Any,
        path: Any,
        childFDs: Any,
    ) -> None:
        self.protocol = protocol
        self.pid = pid
        self.args = args
        self.env = env
        self.path = path
        self.childFDs = childFDs
        self.written = b""
        self.stdinClosed = False
        self.signals: list[int] = []
        self.gone = False
        self.refuse: BaseException | None = None

    # The transport, as the pool uses it.

    def write(self, data: bytes) -> None:
        assert not self.stdinClosed
        self.written += data

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def signalProcess(self, signum: int) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.signals.append(signum)

    # What the test has the worker do.

    def say(self, data: bytes) -> None:
        self.protocol.childDataReceived(3, data)

    def ready(self) -> None:
        self.say(encode("ready", pid=self.pid))

    def counts(self, **values: int) -> None:
        stats = RequestStats()
        for name, value in values.items():
            setattr(stats, name, value)
        self.say(countsMessage(stats))

    def fail(self, reason: str) -> None:
        self.say(encode("failed", reason=reason))

    def exit(self, code: int = 1) -> None:
        self.gone = True
        reason = ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code)
        self.protocol.processEnded(Failure(reason))

    def kill(self, signum: int = signal.SIGKILL) -> None:
        self.gone = True
        self.protocol.processEnded(Failure(ProcessTerminated(signal=signum)))

    def drainMessages(self) -> list[dict[str, Any]]:
        return list(LineDecoder().feed(self.written))


class ProcessReactor(Clock):
    """
    A clock that also spawns (fake) processes.
    """

    processClass = FakeProcess

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[FakeProcess] = []
        self.nextPid = 100

    def spawnProcess(
        self,
        protocol: ProcessProtocol,
        executable: str,
        args: list[str],
        env: Any = None,
        path: Any = None,
        childFDs: Any = None,
    ) -> FakeProcess:
        assert isinstance(protocol, WorkerProcess)
        assert executable == sys.executable
        self.nextPid += 1
        process = self.processClass(protocol, self.nextPid, args, env, path, childFDs)
        self.spawned.append(process)
        protocol.makeConnection(process)
        return process

    def live(self) -> list[FakeProcess]:
        return [p for p in self.spawned if not p.gone]


SOCKETS = [[(7, 2), (8, 10)], [(7, 2), (8, 10)]]


def makePool(count: int = 2, **kwargs: Any) -> tuple[WorkerPool, ProcessReactor]:
    reactor = ProcessReactor()
    kwargs.setdefault("reportInterval", 1.0)
    pool = WorkerPool(
        reactor,
        count=count,
        sdwebArguments=["--workers", str(count), "--class", "app.Root"],
        environ={"A": "b"},
        path="/srv",
        **kwargs,
    )
    return pool, reactor


def started(
    count: int = 2, **kwargs: Any
) -> tuple[WorkerPool, ProcessReactor, list[FakeProcess]]:
    """
    A pool whose workers all said they are ready.
    """
    pool, reactor = makePool(count, **kwargs)
    done = pool.start(SOCKETS[:1] * count)
    workers = list(reactor.spawned)
    for worker in workers:
        worker.ready()
    assert done.called and done.result is None
    return pool, reactor, workers


class Logged:
    """
    Collects the log events while in a C{with} block.
    """

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

        self._observer = cast(ILogObserver, self.events.append)

    def __enter__(self) -> Logged:
        globalLogPublisher.addObserver(self._observer)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self._observer)

    def texts(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events]


def test_defaults() -> None:
    pool = WorkerPool(Clock(), count=2, sdwebArguments=[], environ={})
    assert (pool.reportInterval, pool.workerTimeout, pool.startTimeout) == (
        1.0,
        30.0,
        60.0,
    )
    assert (pool.maxStartFailures, pool.maxRequests, pool.maxMemory) == (5, 0, 0)
    assert (pool.maxRequestsJitter, pool.replacedIdleGrace) == (0, 15.0)
    assert pool.quietLimit == 3.0
    assert pool.memoryOf is residentBytes


# Starting.


def test_startSpawnsEachWorkerWithItsSockets() -> None:
    pool, reactor = makePool(reportInterval=0.25)
    with Logged() as log:
        done = pool.start([[(7, 2), (8, 10)], [(9, 1)]])
        first, second = reactor.spawned
        assert not done.called
        first.ready()
        assert not done.called
        second.ready()
    assert first.args == [
        sys.executable,
        "-m",
        "txsdnotify.cli.worker",
        "--report-interval",
        "0.25",
        "--listen",
        "4:2",
        "--listen",
        "5:10",
        "--",
        "--workers",
        "2",
        "--class",
        "app.Root",
    ]
    assert first.childFDs == {0: "w", 1: 1, 2: 2, 3: "r", 4: 7, 5: 8}
    assert second.args[5:8] == ["--listen", "4:1", "--"]
    other, otherReactor = makePool(count=1)
    other.start([[(20 + i, 2) for i in range(5)]])
    [many] = otherReactor.spawned
    assert many.args[6:16:2] == ["4:2", "5:2", "6:2", "7:2", "8:2"]
    assert [many.childFDs[fd] for fd in range(4, 9)] == [20, 21, 22, 23, 24]
    assert second.childFDs == {0: "w", 1: 1, 2: 2, 3: "r", 4: 9}
    assert (first.env, first.path) == ({"A": "b"}, "/srv")
    assert [w.pid for w in pool.workers] == [first.pid, second.pid]
    assert [w.slot for w in pool.workers] == [0, 1]
    assert f"sdweb: started worker {first.pid}" in log.texts()
    assert done.called and done.result is None
    assert pool.readyCount() == 2
    assert f"sdweb: worker {second.pid} ready" in log.texts()


def test_notReadyInTimeIsKilled() -> None:
    pool, reactor = makePool(startTimeout=10)
    pool.start(SOCKETS)
    slow, quick = reactor.spawned
    quick.ready()
    reactor.advance(9.9)
    assert slow.signals == []
    reactor.advance(0.1)
    assert slow.signals == [signal.SIGKILL]
    assert quick.signals == []
    slow.kill()
    # It counts as a start failure, with that reason.
    assert pool.failing[0] == "a worker was not ready after 10s"
    assert pool.startFailures == [1, 0]


def test_readyInTimeIsNotKilled() -> None:
    pool, reactor = makePool(startTimeout=10, workerTimeout=1000)
    pool.start(SOCKETS)
    for worker in reactor.spawned:
        worker.ready()
    reactor.advance(100)
    assert all(w.signals == [] for w in reactor.spawned)


def test_messagesOnOtherDescriptorsIgnored() -> None:
    pool, reactor = makePool()
    pool.start(SOCKETS)
    worker = reactor.spawned[0]
    reactor.advance(5)
    worker.protocol.childDataReceived(1, encode("ready", pid=1))
    worker.protocol.childDataReceived(4, encode("ready", pid=1))
    assert pool.workers[0].state is WorkerState.STARTING
    assert pool.workers[0].lastHeard == 0
    worker.say(b"junk\n")
    assert pool.workers[0].lastHeard == 5
    worker.say(encode("zzz"))
    assert pool.workers[0].state is WorkerState.STARTING


def test_readyOnlyOnce() -> None:
    pool, reactor, (first, _) = started()
    first.protocol.stop()
    first.ready()
    assert first.protocol.state is WorkerState.STOPPING


def test_failedReasonKeptShort() -> None:
    pool, reactor = makePool()
    pool.start(SOCKETS)
    worker = reactor.spawned[0]
    worker.fail("x" * 300)
    assert worker.protocol.reason == "x" * 200
    worker.counts()
    worker.say(encode("zzz", reason="other"))
    worker.say(encode("aaa", reason="other", completed=5))
    assert worker.protocol.reason == "x" * 200
    assert worker.protocol.stats.completed == 0
    worker.fail("")
    assert worker.protocol.reason is None


def test_startFailsWhenWorkersKeepExiting() -> None:
    pool, reactor = makePool(maxStartFailures=3)
    done = pool.start(SOCKETS)
    outcome: list[Any] = []
    done.addBoth(outcome.append)
    a, b = reactor.spawned
    a.fail("twistd sdweb: --class 'app.Root': importing 'app' failed")
    a.exit(1)
    b.exit(1)
    assert pool.startFailures == [1, 1]
    assert len(reactor.live()) == 0
    reactor.advance(0.5)
    assert len(reactor.live()) == 2
    for p in reactor.live():
        p.exit(1)
    assert pool.startFailures == [2, 2]
    reactor.advance(0.9)
    assert len(reactor.live()) == 0
    reactor.advance(0.1)
    c, d = reactor.live()
    c.exit(1)
    assert outcome == []
    d.fail("broken")
    d.exit(1)
    [failure] = outcome
    assert failure.check(WorkersFailed)
    assert failure.getErrorMessage() == (
        "workers keep exiting at start (3 in a row): broken"
    )
    reactor.advance(60)
    assert reactor.live() == []


def test_exitReasonWithoutWord() -> None:
    pool, reactor = makePool(count=1, maxStartFailures=1)
    done = pool.start(SOCKETS[:1])
    outcome: list[Any] = []
    done.addBoth(outcome.append)
    reactor.spawned[0].kill(signal.SIGSEGV)
    assert outcome[0].getErrorMessage() == (
        "workers keep exiting at start (1 in a row): a worker was killed by"
        " signal 11 (SIGSEGV) before it was ready"
    )


# A worker dies while serving.


def test_deadWorkerReplacedAtOnce() -> None:
    pool, reactor, (first, second) = started()
    with Logged() as log:
        first.kill()
    assert pool.replaced == 1
    assert pool.lastExit == f"worker {first.pid} was killed by signal 9 (SIGKILL)"
    assert "sdweb: a worker was killed by signal 9 (SIGKILL); replacing it" in (
        log.texts()
    )
    assert len(reactor.spawned) == 2
    reactor.advance(0)
    third = reactor.spawned[2]
    assert third.protocol.slot == 0
    assert [w.slot for w in pool.workers] == [1, 0]
    assert pool.figure() == "1/2 workers, 1 starting"
    assert pool.history() == (
        f"1 replaced (last: worker {first.pid} was killed by signal 9 (SIGKILL))"
    )
    third.ready()
    assert pool.readyCount() == 2


def test_degradedWhileAnotherServes() -> None:
    """
    A place whose workers keep failing is retried with a growing back-off,
    up to the cap, for as long as another worker serves: no give-up.
    """
    given: list[str] = []
    pool, reactor, (first, second) = started(onGiveUp=given.append)
    first.kill()
    for failures in range(1, 10):
        reactor.advance(backoff(failures - 1) if failures > 1 else 0)
        current = reactor.live()
        assert len(current) == 2, failures
        assert reactor.spawned[-1].protocol.slot == 0
        reactor.spawned[-1].fail("importing 'app' failed")
        reactor.spawned[-1].exit(1)
        assert pool.startFailures == [failures, 0]
        reactor.advance(backoff(failures) - 0.01)
        assert len(reactor.live()) == 1
    assert given == []
    assert pool.figure() == (
        "1/2 workers; degraded: 1 of 2 workers; replacement failing:"
        " importing 'app' failed"
    )
    assert pool.history() == (
        f"1 replaced (last: worker {first.pid} was killed by signal 9 (SIGKILL))"
    )
    reactor.advance(0.01)
    reactor.spawned[-1].ready()
    assert pool.startFailures == [0, 0]
    assert pool.failing == [None, None]
    assert pool.figure() == "2/2 workers"
    assert str(pool.history()).endswith("(SIGKILL))")


def test_figureShowsTheLastPlaceFailing() -> None:
    pool, reactor, (first, second, third) = started(3)
    first.kill()
    second.kill()
    reactor.advance(0)
    reactor.spawned[3].fail("first reason")
    reactor.spawned[3].exit(1)
    reactor.spawned[4].fail("second reason")
    reactor.spawned[4].exit(1)
    assert pool.figure().endswith(
        "; degraded: 1 of 3 workers; replacement failing: second reason"
    )


def test_giveUpOnceNoWorkerCanServe() -> None:
    given: list[str] = []
    pool, reactor, (first, second) = started(onGiveUp=given.append, maxStartFailures=2)
    first.kill()
    reactor.advance(0)
    reactor.spawned[-1].exit(1)
    reactor.advance(0.5)
    reactor.spawned[-1].exit(1)
    reactor.advance(1)
    reactor.spawned[-1].fail("broken")
    reactor.spawned[-1].exit(1)
    assert pool.startFailures == [3, 0]
    assert given == []
    # The last worker that served dies; its replacement is starting: no
    # give-up yet (it may serve).
    second.kill()
    assert given == []
    reactor.advance(0)
    replacement = reactor.spawned[-1]
    assert replacement.protocol.slot == 1
    replacement.exit(1)
    assert given == ["workers keep exiting at start (3 in a row): broken"]
    reactor.advance(100)
    assert reactor.live() == []


def test_noGiveUpWhileAnotherStarts() -> None:
    given: list[str] = []
    pool, reactor = makePool(onGiveUp=given.append, maxStartFailures=1)
    done = pool.start(SOCKETS)
    outcome: list[Any] = []
    done.addBoth(outcome.append)
    a, b = reactor.spawned
    a.exit(1)
    assert outcome == []
    b.exit(1)
    assert len(outcome) == 1 and given == []


def test_stoppingWorkerThatExitsIsNotReplaced() -> None:
    pool, reactor, (first, second) = started()
    pool.stop()
    first.exit(0)
    reactor.advance(10)
    assert len(reactor.spawned) == 2
    assert pool.replaced == 0


# Counts.


def test_countsSummedAndKept() -> None:
    pool, reactor, (first, second) = started()
    first.counts(
        started=5,
        completed=4,
        bytesSent=100,
        connectionsOpened=3,
        connectionsClosed=2,
    )
    second.counts(started=1, completed=1, bytesSent=10, connectionsOpened=1)
    stats = pool.stats
    assert (stats.started, stats.completed, stats.bytesSent) == (6, 5, 110)
    assert (stats.connectionsOpened, stats.connectionsClosed) == (4, 2)
    first.kill()
    # What was in flight on it is aborted; what it did stays.
    assert (stats.started, stats.completed, stats.bytesSent) == (6, 5, 110)
    assert (stats.aborted, stats.inFlight) == (1, 0)
    assert (stats.connectionsOpened, stats.connectionsClosed) == (4, 3)
    assert first.protocol.stats.completed == 0


# Silence, recycling.


def test_silentWorkerKilledAfterTheTimeout() -> None:
    pool, reactor, (first, second) = started(workerTimeout=5)
    reactor.advance(1)
    first.counts()
    second.counts()
    with Logged() as log:
        for _ in range(5):
            reactor.advance(1)
            second.counts()
        assert first.signals == []
        reactor.advance(1)
        second.counts()
    assert first.signals == [signal.SIGKILL]
    assert second.signals == []
    assert f"sdweb: worker {first.pid} silent for 6s; killing it" in log.texts()
    # Not again at once.
    reactor.advance(1)
    assert first.signals == [signal.SIGKILL]


def test_silentDrainingWorkerKilledToo() -> None:
    pool, reactor, (first, second) = started(workerTimeout=5)
    pool.replaceAll()
    a = reactor.spawned[2]
    a.ready()
    b = reactor.spawned[3]
    # live(): second, a (serving), b (starting), first (draining, silent).
    for _ in range(6):
        reactor.advance(1)
        second.counts()
        a.counts()
    assert first.signals == [signal.SIGKILL]
    assert b.signals == []


def test_startingWorkerNotTakenForSilent() -> None:
    pool, reactor = makePool(workerTimeout=2, startTimeout=60)
    pool.start(SOCKETS)
    reactor.advance(10)
    assert all(p.signals == [] for p in reactor.spawned)


def test_responsive() -> None:
    pool, reactor = makePool(reportInterval=1, workerTimeout=30)
    assert pool.quietLimit == 3
    assert not pool.responsive()
    pool.start(SOCKETS)
    assert pool.responsive()
    first, second = reactor.spawned
    first.ready()
    second.ready()
    reactor.advance(3)
    assert pool.responsive()
    reactor.advance(0.5)
    assert not pool.responsive()
    second.counts()
    assert pool.responsive()
    second.protocol.stop()
    assert not pool.responsive()


def test_quietLimitNoLongerThanTheTimeout() -> None:
    pool, _ = makePool(reportInterval=1, workerTimeout=2)
    assert pool.quietLimit == 2
    pool, _ = makePool(reportInterval=0.5, workerTimeout=30)
    assert pool.quietLimit == 2


def test_recycledAfterMaxRequests() -> None:
    picks: list[tuple[int, int]] = []

    def randint(low: int, high: int) -> int:
        picks.append((low, high))
        return 7

    pool, reactor, (first, second) = started(
        maxRequests=100, maxRequestsJitter=10, randint=randint, replacedIdleGrace=12
    )
    assert picks == [(0, 10), (0, 10)]
    assert first.protocol.requestLimit == 107
    first.counts(completed=106)
    reactor.advance(1)
    assert len(reactor.spawned) == 2
    with Logged() as log:
        first.counts(completed=107)
        reactor.advance(1)
    assert f"sdweb: worker {first.pid} served 107 requests; replacing it" in (
        log.texts()
    )
    new = reactor.spawned[-1]
    assert new.protocol.slot == 0 and new.protocol in pool.candidates
    assert pool.figure() == "2/2 workers, 1 starting"
    reactor.advance(1)
    # One replacement per worker at a time.
    assert len(reactor.spawned) == 3
    assert not first.stdinClosed
    with Logged() as log:
        new.ready()
    assert first.stdinClosed
    assert [idleGraceFrom(m) for m in first.drainMessages()] == [12]
    assert f"sdweb: worker {new.pid} took over; worker {first.pid} drains" in (
        log.texts()
    )
    assert pool.workers == [second.protocol, new.protocol]
    assert pool.leaving == [first.protocol]
    assert pool.recycled == 1
    assert pool.figure() == "2/2 workers, 1 stopping"
    assert pool.history() == "1 recycled"
    first.exit(0)
    assert pool.replaced == 0 and pool.leaving == []


def test_recycledPastTheLimit() -> None:
    pool, reactor, (first, second) = started(maxRequests=1)
    assert first.protocol.requestLimit == 1
    first.counts(completed=0)
    reactor.advance(1)
    assert len(reactor.spawned) == 2
    first.counts(completed=5)
    reactor.advance(1)
    assert len(reactor.spawned) == 3


def test_noRecyclingWithoutALimit() -> None:
    pool, reactor, (first, second) = started(memoryOf=lambda pid: 2**40)
    assert first.protocol.requestLimit is None
    first.counts(completed=10**9)
    reactor.advance(10)
    assert len(reactor.spawned) == 2


def test_recycledAboveMaxMemory() -> None:
    sizes = {101: 50 * 2**20 - 1, 102: 50 * 2**20, 103: 50 * 2**20 + 1}
    pool, reactor, (first, second, third) = started(
        3, maxMemory=50 * 2**20, memoryOf=sizes.get
    )
    with Logged() as log:
        reactor.advance(1)
    assert f"sdweb: worker {third.pid} uses 50 MB; replacing it" in log.texts()
    assert [p.protocol.slot for p in reactor.spawned] == [0, 1, 2, 2]
    sizes.clear()
    reactor.advance(1)
    assert len(reactor.spawned) == 4
    pool, reactor, _ = started(maxMemory=1, memoryOf=lambda pid: 2)
    reactor.advance(1)
    assert len(reactor.spawned) == 4


def test_failedRecyclingKeepsTheOldWorker() -> None:
    pool, reactor, (first, second) = started(maxRequests=10)
    first.counts(completed=10)
    reactor.advance(1)
    new = reactor.spawned[-1]
    with Logged() as log:
        new.fail("broken")
        new.exit(1)
    assert pool.workers == [first.protocol, second.protocol]
    assert not first.stdinClosed
    assert pool.startFailures == [1, 0]
    assert pool.failing == ["broken", None]
    assert pool.recycled == 0
    assert pool.figure() == "2/2 workers; replacement failing: broken"
    assert any("serves on" in t for t in log.texts())
    # The next try waits for the back-off.
    assert first.protocol.recycleAfter == reactor.seconds() + 0.5


def test_failedRecyclingBacksOff() -> None:
    pool, reactor, (first, second) = started(maxRequests=10, reportInterval=0.25)
    first.counts(completed=10)
    reactor.advance(0.25)
    assert len(reactor.spawned) == 3
    reactor.spawned[-1].exit(1)
    reactor.advance(0.25)
    assert len(reactor.spawned) == 3
    reactor.advance(0.25)
    assert len(reactor.spawned) == 4
    reactor.spawned[-1].exit(1)
    assert pool.startFailures == [2, 0]
    for _ in range(3):
        reactor.advance(0.25)
        first.counts(completed=10)
        second.counts()
        assert len(reactor.spawned) == 4
    reactor.advance(0.25)
    assert len(reactor.spawned) == 5


def test_recyclingFromTheFirstLook() -> None:
    pool, reactor, (first, second) = started(maxRequests=10, reportInterval=0.25)
    first.counts(completed=10)
    reactor.advance(0.25)
    assert len(reactor.spawned) == 3


def test_noRecyclingWhileStopping() -> None:
    pool, reactor, (first, second) = started(maxRequests=10)
    first.counts(completed=10)
    pool.stop()
    reactor.advance(10)
    assert len(reactor.spawned) == 2


def test_recyclingStoppedMidway() -> None:
    pool, reactor, (first, second) = started(maxRequests=10)
    first.counts(completed=10)
    reactor.advance(1)
    new = reactor.spawned[-1]
    pool.stop()
    new.ready()
    assert new.stdinClosed and new.protocol in pool.leaving
    assert pool.workers == [first.protocol, second.protocol]


def test_recycledWorkerDiedMeanwhile() -> None:
    pool, reactor, (first, second) = started(maxRequests=10)
    first.counts(completed=10)
    reactor.advance(1)
    new = reactor.spawned[-1]
    first.kill()
    reactor.advance(0)
    refill = reactor.spawned[-1]
    assert refill is not new and refill.protocol.slot == 0
    new.ready()
    # Its place is taken: the extra one goes.
    assert new.stdinClosed
    assert pool.workers == [second.protocol, refill.protocol]


def test_recycledWorkerDiedAndNotYetReplaced() -> None:
    pool, reactor, (first, second) = started(maxRequests=10)
    first.counts(completed=10)
    reactor.advance(1)
    new = reactor.spawned[-1]
    first.kill()
    new.ready()
    assert not new.stdinClosed
    assert pool.workers == [second.protocol, new.protocol]
    reactor.advance(0)
    assert len(reactor.spawned) == 3


def test_recycledWorkerOfALaterPlaceDied() -> None:
    pool, reactor, (first, second) = started(maxRequests=10)
    second.counts(completed=10)
    reactor.advance(1)
    new = reactor.spawned[-1]
    assert new.protocol.slot == 1
    second.kill()
    new.ready()
    assert not new.stdinClosed
    assert pool.workers == [first.protocol, new.protocol]


# Reload.


def test_replaceAllOneAtATime() -> None:
    pool, reactor, (first, second) = started(replacedIdleGrace=9)
    done = pool.replaceAll()
    assert len(reactor.spawned) == 3
    a = reactor.spawned[2]
    assert a.protocol.slot == 0
    assert pool.figure() == "2/2 workers, 1 starting"
    assert not first.stdinClosed and not second.stdinClosed
    a.ready()
    assert first.stdinClosed and not second.stdinClosed
    assert [idleGraceFrom(m) for m in first.drainMessages()] == [9]
    assert len(reactor.spawned) == 4
    b = reactor.spawned[3]
    assert b.protocol.slot == 1
    assert not done.called
    b.ready()
    assert second.stdinClosed
    assert done.called and done.result is None
    assert pool.workers == [a.protocol, b.protocol]
    assert pool.recycled == 0


def test_replaceAllFailsAndKeepsTheOldOnes() -> None:
    pool, reactor, (first, second) = started()
    done = pool.replaceAll()
    outcome: list[Any] = []
    done.addBoth(outcome.append)
    a = reactor.spawned[2]
    a.ready()
    b = reactor.spawned[3]
    b.fail("broken")
    b.exit(1)
    [failure] = outcome
    assert failure.check(WorkersFailed) and failure.getErrorMessage() == "broken"
    assert pool.workers == [second.protocol, a.protocol]
    assert not second.stdinClosed
    # A failed candidate is no start failure of its place.
    assert pool.startFailures == [0, 0]
    reactor.advance(10)
    assert len(reactor.spawned) == 4


def test_replaceAllWaitsForARecycling() -> None:
    pool, reactor, (first, second) = started(maxRequests=10)
    first.counts(completed=10)
    reactor.advance(1)
    recycling = reactor.spawned[2]
    done = pool.replaceAll()
    assert len(reactor.spawned) == 3
    second.counts(completed=10)
    reactor.advance(1)
    # No recycling during a reload.
    assert len(reactor.spawned) == 3
    recycling.ready()
    assert len(reactor.spawned) == 4
    reactor.spawned[3].ready()
    reactor.spawned[4].ready()
    assert done.called
    assert pool.workers == [reactor.spawned[3].protocol, reactor.spawned[4].protocol]
    assert pool.recycled == 1
    reactor.spawned[4].counts(completed=10)
    reactor.advance(1)
    assert len(reactor.spawned) == 6


def test_replaceAllStoppedMidway() -> None:
    pool, reactor, (first, second) = started()
    done = pool.replaceAll()
    a = reactor.spawned[2]
    pool.stop()
    a.ready()
    assert a.stdinClosed
    assert done.called
    assert len(reactor.spawned) == 3


def test_replaceAllSkipsAWorkerGoneMeanwhile() -> None:
    pool, reactor, (first, second) = started()
    done = pool.replaceAll()
    second.kill()
    reactor.advance(0)
    # Started after the reload began: it runs the new code already.
    refill = reactor.spawned[3]
    assert refill.protocol.slot == 1
    reactor.spawned[2].ready()
    assert done.called
    assert len(reactor.spawned) == 4
    refill.ready()
    assert pool.workers == [refill.protocol, reactor.spawned[2].protocol]


def test_replaceAllGoesOnAfterAWorkerGone() -> None:
    pool, reactor, (first, second, third) = started(3)
    done = pool.replaceAll()
    second.kill()
    reactor.advance(0)
    reactor.spawned[3].ready()  # first's replacement
    reactor.spawned[4].ready()  # second's refill
    new = reactor.spawned[5]
    assert new.protocol.slot == 2
    new.ready()
    assert done.called and third.stdinClosed


# Stop.


def test_stopDrainsEveryWorker() -> None:
    pool, reactor, (first, second) = started()
    first.kill()
    reactor.advance(0)
    pending = pool.stop()
    assert pool.stopping
    assert all(p.stdinClosed for p in reactor.live())
    assert all(p.written == b"" for p in reactor.spawned)
    assert not pending.called
    reactor.live()[0].exit(0)
    assert not pending.called
    later = pool.whenAllExited()
    reactor.live()[0].exit(0)
    assert pending.called and later.called
    assert pool.whenAllExited().called


def test_stopCancelsARefill() -> None:
    pool, reactor, (first, second) = started()
    first.exit(1)
    assert len(reactor.getDelayedCalls()) == 2
    pool.stop()
    # Neither the refill nor the watch is left.
    assert reactor.getDelayedCalls() == []
    reactor.advance(10)
    assert len(reactor.spawned) == 2


def test_stopBeforeReadyLeavesStarting() -> None:
    pool, reactor = makePool()
    pool.start(SOCKETS)
    pool.stop()
    assert pool.workers[0].state is WorkerState.STARTING
    assert reactor.spawned[0].stdinClosed


def test_stopAfterExitDoesNothing() -> None:
    pool, reactor, (first, second) = started()
    first.kill()
    first.stdinClosed = False
    first.protocol.stop()
    assert not first.stdinClosed
    first.protocol.signal(signal.SIGTERM)
    assert first.signals == []


def test_signalAll() -> None:
    pool, reactor, (first, second) = started()
    pool.signalAll(signal.SIGTERM)
    assert first.signals == second.signals == [signal.SIGTERM]
    first.refuse = ProcessExitedAlready()
    second.refuse = OSError("gone")
    pool.signalAll(signal.SIGKILL)


def test_signalWithoutTransport() -> None:
    pool, _ = makePool()
    worker = WorkerProcess(pool, 0)
    worker.signal(signal.SIGTERM)
    worker.stop()
    assert worker.state is WorkerState.STARTING


# The helpers.


def test_describeExit() -> None:
    assert describeExit(Failure(ProcessTerminated(exitCode=3))) == (
        "exited with status 3"
    )
    assert describeExit(Failure(ProcessDone(0))) == "exited with status 0"
    assert describeExit(Failure(ProcessTerminated(signal=15))) == (
        "was killed by signal 15 (SIGTERM)"
    )
    assert describeExit(Failure(ProcessTerminated(signal=200))) == (
        "was killed by signal 200"
    )


def test_backoff() -> None:
    assert [backoff(n) for n in range(-1, 9)] == [0, 0, 0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff(10**6) == BACKOFF_CAP == 30


def test_shorten() -> None:
    assert MAX_REASON == 120
    assert shorten("x" * MAX_REASON) == "x" * MAX_REASON
    cut = shorten("y" * (MAX_REASON + 1))
    assert cut == "y" * (MAX_REASON - 3) + "..." and len(cut) == MAX_REASON


def test_residentBytes() -> None:
    size = residentBytes(os.getpid())
    pages = int(open("/proc/self/statm").read().split()[1])
    assert size is not None
    page = os.sysconf("SC_PAGE_SIZE")
    assert abs(size - pages * page) < 2 * 2**20
    assert size % page == 0 and size > 2**20
    assert residentBytes(2**30) is None


def test_workerEnvironment() -> None:
    env = workerEnvironment(
        {
            "NOTIFY_SOCKET": "/x",
            "WATCHDOG_USEC": "1",
            "LISTEN_FDS": "1",
            "FDSTORE": "16",
            "A": "b",
            "XNOTIFY_SOCKET": "kept",
        }
    )
    assert env == {"A": "b", "XNOTIFY_SOCKET": "kept"}


def test_currentEnvironment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FDSTORE", "1")
    monkeypatch.setenv("SDWEB_TEST_KEPT", "yes")
    env = currentEnvironment()
    assert "FDSTORE" not in env and env["SDWEB_TEST_KEPT"] == "yes"
