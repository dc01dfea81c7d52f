# -*- test-case-name: tests.test_threads -*-
"""
The threads WSGI applications run in.

Up to L{RequestThreads.size} daemon threads take jobs from one queue, in
order.  Threads are woken sparingly: with the GIL, two threads running
Python code are slower than one, so a job that arrives while a thread is
busy waits for it, unless no job has started for L{STALL} seconds (the busy
threads are blocked: on a database, in C{time.sleep}) and then one more
thread is woken (started, up to the limit).  Threads are daemon threads: one
stuck in application code never keeps the process from exiting.

The GIL makes every hand-off between the reactor and a thread cost CPU
(futex calls, context switches, caches refilled), so both directions are
batched.  The jobs the reactor submits in one turn wake a thread only once
that turn is over (C{callLater(0)}): the reactor parses every request that
arrived without the thread taking the GIL from it at each system call.  And
a job's last call to the reactor (L{RequestThreads.callAfterJob}: its
response) waits while its thread runs the jobs already waiting, for at most
about L{HOLD} seconds (the reactor's stall check sends it on if the next job
blocks): the responses of a batch go back in one wake-up of the reactor.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

__all__ = ["DEFAULT_THREADS", "HOLD", "STALL", "RequestThreads"]

DEFAULT_THREADS = 10
"""
Like Twisted's own reactor thread pool: enough for applications that wait on
a database or another service; more threads running Python code only share
one GIL.
"""

STALL = 0.002
"""
Seconds without a job starting, while jobs wait, after which one more thread
is woken.
"""

HOLD = 0.001
"""
Seconds a finished response may wait in its thread while the thread runs
the next jobs waiting, so that the responses of several go to the reactor in
one hand-off.
"""

_log = Logger()


class RequestThreads:
    """
    A pool of daemon threads running jobs in the order they came.

    Call L{submit} from the reactor thread only; L{callFromThread} and
    L{callAfterJob} hand calls back to it.

    @ivar size: The most threads there will be (read when a thread is about
        to be started, so it may be changed before the first job).
    """

    def __init__(
        self, size: int = DEFAULT_THREADS, reactor: Any = None, name: str = "sdweb-wsgi"
    ) -> None:
        if size < 1:
            raise ValueError(f"a thread pool needs at least 1 thread, not {size}")
        self.size = size
        self._reactor = reactor
        self._name = name
        self._lock = threading.Lock()
        self._jobs: collections.deque[Callable[[], object]] = collections.deque()
        self._idle: list[threading.Lock] = []  # a locked lock per idle thread
        self._threads: list[threading.Thread] = []
        self._running = 0  # threads awake (running a job or about to take one)
        self._lastStart = 0.0  # when a thread last took a job
        self._checkPending = False
        self._stopping = False
        self._wakePending = False
        # Calls to run in the reactor, in order (see callFromThread).
        self._calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self._callsScheduled = False
        self._heldSince = 0.0  # when the oldest call held back was made

    @property
    def waiting(self) -> int:
        """
        How many jobs (requests) wait for a thread right now; O(1).
        """
        return len(self._jobs)

    @property
    def busy(self) -> int:
        """
        How many threads are awake: running a job, or about to take the next
        one; O(1).
        """
        return self._running

    @property
    def threads(self) -> int:
        """
        How many threads have been started so far.
        """
        return len(self._threads)

    def submit(self, job: Callable[[], object]) -> None:
        """
        Run C{job()} in a thread.  C{job} handles its own errors.
        """
        with self._lock:
            if self._stopping:
                return
            self._jobs.append(job)
            if self._running == 0:
                if not self._wakePending:
                    self._wakePending = True
                    self._callLater(0, self._wakeLater)
                return
            if time.monotonic() - self._lastStart >= STALL:
                self._wakeOne()
            if not self._checkPending:
                self._scheduleCheck()

    def stop(self) -> None:
        """
        Drop the jobs still waiting and have every thread end once it is done
        with its current job; does not wait for them.
        """
        with self._lock:
            self._stopping = True
            self._jobs.clear()
            idle, self._idle = self._idle, []
        for wakeup in idle:
            wakeup.release()

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:
        """
        Call C{f(*args)} in the reactor thread, after the calls before it;
        from any thread.  The calls of many threads share one wake-up of the
        reactor.
        """
        with self._lock:
            self._calls.append((f, args))
            if self._callsScheduled:
                return
            self._callsScheduled = True
            self._heldSince = 0.0
        self._reactorCallFromThread(self._runCalls)

    def callAfterJob(self, f: Callable[..., object], *args: Any) -> None:
        """
        As L{callFromThread}, for the last call of a job: it may wait while
        this thread runs the jobs waiting, for at most about L{HOLD} seconds,
        so that their calls share the hand-off.
        """
        with self._lock:
            self._calls.append((f, args))
            if not self._callsScheduled and not self._heldSince:
                self._heldSince = time.monotonic()

    def _reactorCallFromThread(self, f: Callable[[], object]) -> None:
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        reactor.callFromThread(f)

    def _callLater(self, delay: float, f: Callable[[], object]) -> None:
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        reactor.callLater(delay, f)

    def _runCalls(self) -> None:
        """
        Run the calls handed over (in the reactor thread).
        """
        lock = self._lock
        while True:
            with lock:
                calls = self._calls
                if not calls:
                    self._callsScheduled = False
                    return
                self._calls = []
                self._heldSince = 0.0
            for f, args in calls:
                try:
                    f(*args)
                except Exception:
                    _log.failure("Error in a WSGI response")

    def _wakeLater(self) -> None:
        """
        The reactor's turn is over: wake a thread for the jobs it submitted.
        """
        with self._lock:
            self._wakePending = False
            if self._jobs and self._running == 0 and not self._stopping:
                self._wakeOne()
            if self._jobs and not self._checkPending:
                self._scheduleCheck()

    def _scheduleCheck(self) -> None:
        self._checkPending = True
        self._callLater(STALL, self._check)

    def _check(self) -> None:
        """
        While jobs wait: wake one more thread whenever none took a job for
        L{STALL} seconds.
        """
        run = False
        with self._lock:
            self._checkPending = False
            if self._stopping or not (self._jobs or self._heldSince):
                return
            now = time.monotonic()
            if self._heldSince and now - self._heldSince >= HOLD:
                run = not self._callsScheduled
                self._callsScheduled = True
            if self._jobs and now - self._lastStart >= STALL:
                self._wakeOne()
            self._scheduleCheck()
        if run:
            self._runCalls()

    def _wakeOne(self) -> None:
        """
        Wake an idle thread, or start one (with the lock held).  Waking
        counts as a start: the job taken next is not stalled yet.
        """
        self._lastStart = time.monotonic()
        if self._idle:
            self._running += 1
            self._idle.pop().release()
        elif len(self._threads) < self.size:
            self._running += 1
            wakeup = threading.Lock()
            wakeup.acquire()
            thread = threading.Thread(
                target=self._work,
                args=(wakeup,),
                name=f"{self._name}-{len(self._threads)}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _work(self, wakeup: threading.Lock) -> None:
        lock, jobs = self._lock, self._jobs
        monotonic = time.monotonic
        while True:
            wake = False
            with lock:
                held = self._heldSince
                if held and (not jobs or monotonic() - held >= HOLD):
                    self._heldSince = 0.0
                    if not self._callsScheduled:
                        self._callsScheduled = wake = True
                if jobs:
                    job: Callable[[], object] | None = jobs.popleft()
                    self._lastStart = monotonic()
                else:
                    job = None
                    self._running -= 1
                    if self._stopping:
                        return
                    self._idle.append(wakeup)
            if wake:
                self._reactorCallFromThread(self._runCalls)
            if job is None:
                wakeup.acquire()
                if self._stopping:
                    return
                continue
            try:
                job()
            except BaseException:
                _log.failure("Unhandled error in a WSGI thread")
            job = None
