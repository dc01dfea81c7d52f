# -*- test-case-name: tests.test_wsgi -*-
"""
The flusher: one daemon thread that sends on what a WSGI response has
buffered when its application then keeps the server waiting.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from twisted.logger import Logger

__all__ = ["FLUSH_DELAY", "Flushable", "Flusher"]

FLUSH_DELAY = 0.02
"""
Seconds a buffered block may wait for the application's next one before it
is sent on its own (the application is slow: a long poll, a stream).
"""

_IDLE_POLLS = 50  # polls with nothing to watch before the flusher sleeps

_log = Logger(namespace="txsdnotify.wsgi.container")


class Flushable(Protocol):
    """
    A response the flusher watches.
    """

    buffer: list[bytes]
    since: float

    def flushIfSlow(self, now: float) -> None:
        """
        Send what waits longer than L{FLUSH_DELAY} (called with the
        flusher's lock held).
        """


class Flusher:
    """
    One daemon thread that sends what a response has buffered when its
    application then keeps the server waiting (L{FLUSH_DELAY}).

    A watched response changes its buffer only with L{lock} held.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        self._watched: dict[Flushable, None] = {}
        self._thread: threading.Thread | None = None
        self._sleeping = False

    def watch(self, response: Flushable) -> threading.Lock:
        """
        Watch a response from now on; the lock it must now use.
        """
        with self.lock:
            if response.buffer:
                response.since = time.monotonic()
            if self._sleeping:
                self._wake.notify()
            self._watched[response] = None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sdweb-wsgi-flush", daemon=True
                )
                self._thread.start()
        return self.lock

    def unwatch(self, response: Flushable) -> None:
        """
        Stop watching (call with L{lock} held).
        """
        self._watched.pop(response, None)

    def _run(self) -> None:
        wait = self._wake.wait
        idle = 0
        with self.lock:
            while True:
                if self._watched:
                    idle = 0
                else:
                    # Under load, responses come and go: keep polling, for
                    # waking this thread up for each would cost more.
                    idle += 1
                    if idle > _IDLE_POLLS:
                        self._sleeping = True
                        wait()
                        self._sleeping = False
                        idle = 0
                        continue
                wait(FLUSH_DELAY / 2)
                now = time.monotonic()
                for response in list(self._watched):
                    try:
                        response.flushIfSlow(now)
                    except Exception:
                        _log.failure("Error flushing a WSGI response")
