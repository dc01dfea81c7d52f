# -*- test-case-name: tests.test_wsgi -*-
"""
The threads WSGI applications run in.

A fixed number of daemon threads take jobs from one queue.  They are started
on first use, from the reactor thread, and told to end when the reactor
shuts down; being daemon threads, one stuck in application code never keeps
the process from exiting.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

__all__ = ["DEFAULT_THREADS", "RequestThreads"]

DEFAULT_THREADS = 10
"""
Like Twisted's own reactor thread pool: enough for applications that wait on
a database or another service, few enough that threads holding the GIL do
not slow each other down much.
"""

_log = Logger()


class RequestThreads:
    """
    A fixed set of daemon threads running jobs in the order they came.

    @ivar size: How many threads there are once started.
    """

    def __init__(self, size: int = DEFAULT_THREADS, name: str = "sdweb-wsgi") -> None:
        if size < 1:
            raise ValueError(f"a thread pool needs at least 1 thread, not {size}")
        self.size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], object] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._stopped = False

    @property
    def waiting(self) -> int:
        """
        How many jobs (requests) wait for a free thread right now; O(1).
        Above 0 means every thread is busy.
        """
        return self._jobs.qsize()

    @property
    def started(self) -> bool:
        """
        Whether the threads run.
        """
        return bool(self._threads)

    def start(self, reactor: IReactorCore | None = None) -> None:
        """
        Start the threads; with a reactor, also have them end when it shuts
        down.
        """
        if self._threads or self._stopped:
            return
        for i in range(self.size):
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if reactor is not None:
            reactor.addSystemEventTrigger("after", "shutdown", self.stop)

    def submit(self, job: Callable[[], object]) -> None:
        """
        Run C{job()} in a thread (call from the reactor thread); starts
        the threads on first use.  C{job} handles its own errors.
        """
        if not self._threads:
            self.start()
        self._jobs.put(job)

    def stop(self) -> None:
        """
        Tell every thread to end once it is done with its current job; does
        not wait for them.  Jobs still waiting are dropped.
        """
        self._stopped = True
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        get = self._jobs.get
        while True:
            job = get()
            if job is None:
                return
            try:
                job()
            except BaseException:
                _log.failure("Unhandled error in a WSGI thread")
            del job
