# -*- test-case-name: tests.test_threadexit -*-
"""
Exiting without waiting for application threads that will not finish.

Twisted's reactor joins its thread pool while it shuts down.  A WSGI request
still running in a pool thread when the drain gave up (or a forced stop) is
joined too: the process waits for the application, however long it takes,
and a thread that then hands its response to the reactor waits for a reactor
that is itself waiting for the thread, so neither moves.  After an aborted
or forced stop, L{abandonBusyThreads} takes the pool's join out of the
shutdown and ends the process once the reactor has shut down instead.

This is the one place that relies on how Twisted's reactor arranges its
thread pool's shutdown (C{reactor.threadpool}, C{threadpoolShutdownID}, the
pool's C{working}); C{tests/test_threadexit.py} fails if that changes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.logger import Logger

__all__ = ["abandonBusyThreads", "busyThreads"]

log = Logger()


def busyThreads(reactor: Any) -> int:
    """
    How many of the reactor's pool threads are running something now.
    """
    pool = getattr(reactor, "threadpool", None)
    if pool is None:
        return 0
    return len(pool.working)


def abandonBusyThreads(reactor: Any, status: int = 0) -> int:
    """
    If the reactor's pool threads are busy, do not join them on shutdown:
    exit with C{status} once the reactor has shut down.

    @return: How many threads are left behind.
    """
    busy = busyThreads(reactor)
    trigger = getattr(reactor, "threadpoolShutdownID", None)
    if not busy or trigger is None:
        return 0
    reactor.removeSystemEventTrigger(trigger)
    reactor.threadpoolShutdownID = None
    log.warn(
        "Not waiting for {count} application thread(s) still running",
        count=busy,
    )
    reactor.addSystemEventTrigger("after", "shutdown", _exitNow, status)
    return busy


def _exitNow(status: int) -> None:
    # The reactor has shut down; Python's own exit would join the threads.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
