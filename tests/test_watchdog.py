"""
Tests for txsdnotify.systemd.watchdog: reading the environment, and pinging on time
(with a fake clock: nothing sleeps).
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from txsdnotify.systemd.watchdog import WatchdogService, watchdogInterval
from txsdnotify.testing import MemoryNotifier


class TestWatchdogInterval:
    def test_unset(self) -> None:
        assert watchdogInterval({}) is None

    def test_forThisProcess(self) -> None:
        assert watchdogInterval({"WATCHDOG_USEC": "3000000"}, pid=7) == 3.0
        assert (
            watchdogInterval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "7"}, pid=7)
            == 0.5
        )

    def test_forAnotherProcess(self) -> None:
        assert (
            watchdogInterval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "8"}, pid=7)
            is None
        )

    @pytest.mark.parametrize("value", ["", "0", "-5", "soon"])
    def test_nonsense(self, value: str) -> None:
        assert watchdogInterval({"WATCHDOG_USEC": value}) is None


def test_pingsAtHalfTheInterval() -> None:
    clock = Clock()
    notifier = MemoryNotifier(clock)
    service = WatchdogService(notifier, 2.0, clock=clock)
    service.startService()
    assert notifier.values("WATCHDOG") == ["1"]
    clock.advance(0.9)
    assert len(notifier.sent) == 1
    clock.advance(0.1)
    assert len(notifier.sent) == 2
    for _ in range(10):
        clock.advance(1.0)
    assert len(notifier.sent) == 12
    assert notifier.times[:4] == [0.0, 1.0, 2.0, 3.0]
    service.stopService()
    clock.advance(10)
    assert len(notifier.sent) == 12
