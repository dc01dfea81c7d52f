"""
Tests for txsdnotify.threadexit: the Twisted internals it relies on are
still there, and busy pool threads are counted.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool

from txsdnotify.threadexit import abandonBusyThreads, busyThreads, watchPool


def test_twistedStillArrangesItsPoolSo() -> None:
    """
    Fails loudly if Twisted changes what threadexit relies on: the reactor's
    pool and the id of its shutdown trigger, and a pool's C{working}.
    """
    # The reactor's pool attributes are in none of its interfaces.
    threaded: Any = reactor
    pool = threaded.getThreadPool()
    assert threaded.threadpool is pool
    assert threaded.threadpoolShutdownID is not None
    assert isinstance(pool.working, list)


def test_busyThreadsCounted() -> None:
    pool = ThreadPool(1, 2, "test")
    pool.start()
    release = threading.Event()
    started = threading.Event()

    def work() -> None:
        started.set()
        release.wait(10)

    try:
        watchPool(pool)
        before = busyThreads(reactor)
        pool.callInThread(work)
        assert started.wait(10)
        assert busyThreads(reactor) == before + 1
    finally:
        release.set()
        pool.stop()


class FakeReactor:
    threadpool = None
    threadpoolShutdownID = None

    def __init__(self) -> None:
        self.triggers: list[tuple[str, str]] = []

    def addSystemEventTrigger(self, phase: str, event: str, *a: object) -> None:
        self.triggers.append((phase, event))


def test_nothingBusyNothingChanged() -> None:
    fake = FakeReactor()
    assert abandonBusyThreads(fake) == 0
    assert fake.triggers == []
