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

Other pools that run application code (the WSGI container's) are made
known with L{watchPool}.

This is the one place that relies on how Twisted's reactor arranges its
thread pool's shutdown (C{reactor.threadpool}, C{threadpoolShutdownID}, the
pool's C{working}); C{tests/test_threadexit.py} fails if that changes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.logger import Logger

__all__ = ["abandonBusyThreads", "busyThreads", "watchPool"]

log = Logger()

_pools: list[Any] = []


def watchPool(pool: Any) -> None:
    """
    Count C{pool}'s busy threads (its C{working}) in L{busyThreads} too.
    """
    if pool not in _pools:
        _pools.append(pool)


def busyThreads(reactor: Any) -> int:
    """
    How many threads of the reactor's pool, and of the pools made known with
    L{watchPool}, are running something now.
    """
    pools = [getattr(reactor, "threadpool", None), *_pools]
    return sum(len(pool.working) for pool in pools if pool is not None)


def abandonBusyThreads(reactor: Any, status: int = 0) -> int:
    """
    If pool threads are busy, do not join them on shutdown: exit with
    C{status} once the reactor has closed its connections, before the pools
    are joined.

    @return: How many threads are left behind.
    """
    busy = busyThreads(reactor)
    if not busy:
        return 0
    trigger = getattr(reactor, "threadpoolShutdownID", None)
    if trigger is not None:
        reactor.removeSystemEventTrigger(trigger)
        reactor.threadpoolShutdownID = None
    log.warn(
        "Not waiting for {count} application thread(s) still running",
        count=busy,
    )
    reactor.addSystemEventTrigger("during", "shutdown", _exitNow, status)
    return busy


def _exitNow(status: int) -> None:
    # Python's own exit, and the pools' shutdown triggers, would join the
    # threads.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
