# -*- test-case-name: tests.test_watchdog -*-
"""
Keeping systemd's watchdog fed from the reactor.

The pings come from a L{LoopingCall} on the reactor itself, so a reactor
that is stuck (a handler that never returns) stops them and systemd restarts
the service, which is the point.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["Pinger", "WatchdogService", "watchdogInterval"]


class Pinger(Protocol):
    """
    What the watchdog pings through: a L{txsdnotify.systemd.notify.Notifier}, or a
    L{txsdnotify.systemd.lifecycle.Lifecycle} (which stops the pings once the
    service has stopped).
    """

    def watchdog(self) -> object:
        """
        Send C{WATCHDOG=1}.
        """


log = Logger()


def watchdogInterval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """
    The watchdog timeout (C{WatchdogSec=}) that systemd set for this process.

    @param environ: Where to find C{WATCHDOG_USEC} and C{WATCHDOG_PID};
        L{os.environ} by default.
    @param pid: This process's id; L{os.getpid} by default.

    @return: Seconds, or L{None} when there is no watchdog for this process
        (unset, not a positive number, or C{WATCHDOG_PID} names another
        process).
    """
    if environ is None:
        environ = os.environ
    value = environ.get("WATCHDOG_USEC")
    if value is None:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(value)
    except ValueError:
        usec = 0
    if usec <= 0:
        log.warn("Ignoring WATCHDOG_USEC={value!r}: not a positive number", value=value)
        return None
    return usec / 1_000_000


class WatchdogService(Service):
    """
    Sends C{WATCHDOG=1} every half of the watchdog timeout while running.

    @ivar interval: The watchdog timeout, in seconds; pings go out twice as
        often.
    """

    def __init__(
        self, notifier: Pinger, interval: float, *, clock: IReactorTime | None = None
    ) -> None:
        """
        @param notifier: What the pings go through.
        @param interval: The watchdog timeout (C{WatchdogSec=}), in seconds.
        @param clock: Schedules the pings; the reactor by default.
        """
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.notifier = notifier
        self.interval = interval
        self._loop = LoopingCall(notifier.watchdog)
        self._loop.clock = clock

    def startService(self) -> None:
        """
        Ping now, then every half interval.
        """
        super().startService()
        self._loop.start(self.interval / 2, now=True)

    def stopService(self) -> None:
        """
        Stop pinging.
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()
