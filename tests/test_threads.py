"""
Tests for txsdnotify.wsgi.threads: how the pool hands jobs to its threads and
calls back to the reactor.  The reactor is a stand-in that records what it is
asked to do; the threads are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import provider

from txsdnotify.wsgi import threads
from txsdnotify.wsgi.threads import HOLD, STALL, RequestThreads

WAIT = 20.0  # seconds a test waits for a thread before failing


class FakeReactor:
    """
    Records C{callLater} and C{callFromThread}; C{callFromThread} runs the
    call at once (in the calling thread) when C{runNow} is set.
    """

    def __init__(self, runNow: bool = False) -> None:
        self.runNow = runNow
        self.later: list[tuple[float, Callable[[], object]]] = []
        self.wakeUps: list[Callable[[], object]] = []
        self._lock = threading.Lock()

    def callLater(self, delay: float, f: Callable[[], object]) -> None:
        with self._lock:
            self.later.append((delay, f))

    def callFromThread(self, f: Callable[[], object]) -> None:
        with self._lock:
            self.wakeUps.append(f)
        if self.runNow:
            f()

    def runLater(self, delay: float) -> None:
        """
        Run (once) the calls scheduled with C{delay}.
        """
        with self._lock:
            due = [f for d, f in self.later if d == delay]
            self.later = [(d, f) for d, f in self.later if d != delay]
        for f in due:
            f()


def test_callsKeepOrderAndShareWakeUps() -> None:
    """
    Calls from threads run in order, many per wake-up of the reactor; one
    that raises is logged and the others still run.
    """
    reactor = FakeReactor()
    pool = RequestThreads(1, reactor)
    errors: list[Any] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            errors.append(event["log_failure"].type)

    ran: list[int] = []
    for i in range(5):
        pool.callFromThread(ran.append, i)
    pool.callFromThread(lambda: 1 / 0)
    pool.callFromThread(ran.append, 5)
    assert len(reactor.wakeUps) == 1
    globalLogPublisher.addObserver(observe)
    try:
        reactor.wakeUps[0]()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert ran == [0, 1, 2, 3, 4, 5]
    assert errors == [ZeroDivisionError]
    pool.callFromThread(ran.append, 6)
    assert len(reactor.wakeUps) == 2


def test_jobsOfOneTurnWakeOneThreadAfterIt() -> None:
    """
    Jobs submitted in one turn of the reactor start no thread until the turn
    is over (a C{callLater(0)}), and then one thread runs them all.
    """
    reactor = FakeReactor()
    pool = RequestThreads(4, reactor)
    done = threading.Semaphore(0)
    names: list[str] = []

    def job() -> None:
        names.append(threading.current_thread().name)
        done.release()

    for _ in range(3):
        pool.submit(job)
    assert pool.threads == 0
    assert [d for d, _ in reactor.later] == [0]
    reactor.runLater(0)
    for _ in range(3):
        assert done.acquire(timeout=WAIT)
    assert pool.threads == 1
    assert len(set(names)) == 1
    pool.stop()


def test_responsesOfABatchShareOneWakeUp() -> None:
    """
    The last calls of jobs run back to back by one thread reach the reactor
    in one wake-up, in order, once the thread has no job left.
    """
    reactor = FakeReactor(runNow=True)
    pool = RequestThreads(1, reactor)
    ran: list[int] = []
    finished = threading.Event()

    def job(i: int) -> Callable[[], None]:
        def run() -> None:
            pool.callAfterJob(ran.append, i)
            if i == 4:
                pool.callAfterJob(finished.set)

        return run

    for i in range(5):
        pool.submit(job(i))
    reactor.runLater(0)
    assert finished.wait(WAIT)
    assert ran == [0, 1, 2, 3, 4]
    assert len(reactor.wakeUps) == 1
    pool.stop()


class Clock:
    """
    C{time.monotonic}, moved forward by C{ahead} seconds.
    """

    def __init__(self) -> None:
        self.ahead = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead


def test_heldResponseNotKeptByABlockedJob(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A response held while its thread runs the next job is sent on by the
    reactor's stall check when that job blocks.
    """
    clock = Clock()
    monkeypatch.setattr(threads, "time", clock)
    reactor = FakeReactor(runNow=True)
    pool = RequestThreads(1, reactor)
    sent = threading.Event()
    blocking = threading.Event()
    release = threading.Event()

    def quick() -> None:
        pool.callAfterJob(sent.set)

    def blocked() -> None:
        blocking.set()
        release.wait(WAIT)

    pool.submit(quick)
    pool.submit(blocked)
    reactor.runLater(0)  # the turn is over: a thread takes both jobs
    assert blocking.wait(WAIT)
    assert not sent.is_set()  # held: a job was waiting when it was made
    # The stall check (every STALL seconds while jobs wait or calls are
    # held) runs it once it is older than HOLD.
    assert [d for d, _ in reactor.later] == [STALL]
    reactor.runLater(STALL)
    assert not sent.is_set()  # not yet HOLD old
    clock.ahead = HOLD
    reactor.runLater(STALL)
    assert sent.is_set()
    release.set()
    pool.stop()


def test_heldResponsesGoOnceHOLDOld(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A thread that has held a response for L{HOLD} seconds hands it over
    before its next job, even while jobs still wait.
    """
    clock = Clock()
    monkeypatch.setattr(threads, "time", clock)
    reactor = FakeReactor(runNow=True)
    pool = RequestThreads(1, reactor)
    events: list[str] = []
    finished = threading.Event()

    def first() -> None:
        pool.callAfterJob(events.append, "a")

    def long() -> None:
        clock.ahead = HOLD  # this job took HOLD seconds
        pool.callAfterJob(events.append, "b")

    def last() -> None:
        events.append("last began")
        pool.callAfterJob(finished.set)

    for job in (first, long, last):
        pool.submit(job)
    reactor.runLater(0)
    assert finished.wait(WAIT)
    assert events == ["a", "b", "last began"]
    assert len(reactor.wakeUps) == 2
    pool.stop()


@pytest.mark.parametrize("size", [1, 3])
def test_stopEndsIdleThreads(size: int) -> None:
    """
    After L{RequestThreads.stop}, idle threads end and new jobs are dropped.
    """
    reactor = FakeReactor(runNow=True)
    pool = RequestThreads(size, reactor)
    done = threading.Event()
    pool.submit(done.set)
    reactor.runLater(0)
    assert done.wait(WAIT)
    pool.stop()
    reactor.later = []
    dropped = threading.Event()
    pool.submit(dropped.set)
    assert reactor.later == []
    for thread in pool._threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    assert not dropped.is_set()
