# -*- test-case-name: tests.test_reload -*-
"""
What a reload does: a list of hooks run one after the other.

The service sends C{RELOADING=1} before and C{READY=1} after; this module
only runs the hooks and says which failed.  A failing hook does not stop the
ones after it: a reload that half works still reopens the log files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

__all__ = ["ReloadHooks", "reopenAccessLog"]

ReloadHook = Callable[[], Any]


def _name(hook: ReloadHook) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)


class ReloadHooks:
    """
    Hooks to run on reload, in the order they were added.
    """

    log = Logger()

    def __init__(self, *, clock: IReactorTime, timeout: float = 60.0) -> None:
        """
        @param clock: Times the hooks.
        @param timeout: Seconds one hook may take before it counts as failed.
        """
        self.clock = clock
        self.timeout = timeout
        self._hooks: list[tuple[str, ReloadHook]] = []

    def add(self, hook: ReloadHook, name: str | None = None) -> None:
        """
        Run C{hook()} on every reload; it may return a L{Deferred}.

        @param name: How failures name it; its qualified name by default.
        """
        self._hooks.append((name or _name(hook), hook))

    def run(self) -> Deferred[list[str]]:
        """
        Run every hook, one after the other.

        @return: Fires with one line per failed hook (C{"name: error"}); an
            empty list when all succeeded.  Never fails.
        """
        return Deferred.fromCoroutine(self._run())

    async def _run(self) -> list[str]:
        failed: list[str] = []
        for name, hook in self._hooks:
            d = maybeDeferred(hook)
            d.addTimeout(self.timeout, self.clock)
            try:
                await d
            except Exception:
                failure = Failure()
                self.log.failure("Reload hook {name} failed", failure, name=name)
                reason = failure.getErrorMessage() or repr(failure.value)
                failed.append(f"{name}: {reason}")
        return failed


def reopenAccessLog(site: Site) -> Callable[[], None]:
    """
    A hook that reopens C{site}'s access log (C{--logfile}), so that
    logrotate can move it away and signal a reload.
    """

    def reopenAccessLog() -> None:
        path = site.logPath
        try:
            old = site.logFile
        except AttributeError:  # not started, or logging to twistd's log
            return
        if not path:
            return
        site.logFile = site._openLogFile(path)
        old.close()

    return reopenAccessLog
