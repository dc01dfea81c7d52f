"""
Tests for parts of txsdnotify.workers.master in-process: the watchdog gate
and what the options give the pool.  The master as a whole, with real
workers, is in test_workers.py and test_systemd_workers.py.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from txsdnotify.cli.tap import Options, makeService
from txsdnotify.systemd.lifecycle import Lifecycle
from txsdnotify.testing import MemoryNotifier
from txsdnotify.workers.master import WorkerMaster, _WatchdogGate
from txsdnotify.workers.pool import WorkerPool, WorkerProcess, WorkerState


def test_watchdogGate() -> None:
    """
    The master pings only while some worker answers (see
    L{WorkerPool.responsive}).
    """
    clock = Clock()
    notifier = MemoryNotifier(clock)
    lifecycle = Lifecycle(notifier)
    pool = WorkerPool(clock, count=1, sdwebArguments=[], environ={}, reportInterval=1.0)
    gate = _WatchdogGate(lifecycle, pool)
    assert not gate.watchdog()
    assert notifier.values("WATCHDOG") == []
    worker = WorkerProcess(pool, 0)
    pool.workers.append(worker)
    assert gate.watchdog()
    worker.state = WorkerState.READY
    clock.advance(3)
    assert gate.watchdog()
    clock.advance(0.5)
    assert not gate.watchdog()
    assert notifier.values("WATCHDOG") == ["1", "1"]


def parsed(*args: str) -> Options:
    config = Options(environ={})
    config.parseOptions(["--port", "tcp:0:interface=127.0.0.1", *args])
    return config


def test_optionsGivenToThePool() -> None:
    master = makeService(
        parsed(
            "--workers",
            "3",
            "--worker-timeout",
            "7.5",
            "--max-requests",
            "500",
            "--max-requests-jitter",
            "20",
            "--max-worker-memory",
            "300",
            "--drain-timeout",
            "8",
            "--status-interval",
            "0.5",
        )
    )
    assert isinstance(master, WorkerMaster)
    pool = master.pool
    assert pool.count == 3
    assert pool.workerTimeout == 7.5
    assert (pool.maxRequests, pool.maxRequestsJitter) == (500, 20)
    assert pool.maxMemory == 300 * 2**20
    assert pool.replacedIdleGrace == 4
    assert pool.reportInterval == 0.25


def test_poolDefaults() -> None:
    master = makeService(parsed("--workers", "2"))
    assert isinstance(master, WorkerMaster)
    pool = master.pool
    assert pool.workerTimeout == 30
    assert (pool.maxRequests, pool.maxRequestsJitter, pool.maxMemory) == (0, 0, 0)
    assert pool.replacedIdleGrace == 15
    assert pool.reportInterval == 0.5


def test_reportIntervalBounds() -> None:
    for interval, report in (("0", 1.0), ("0.01", 0.05), ("10", 1.0), ("1", 0.5)):
        master = makeService(parsed("--workers", "2", "--status-interval", interval))
        assert isinstance(master, WorkerMaster)
        assert master.pool.reportInterval == report, interval
