# -*- test-case-name: tests.test_reload -*-
"""
What a reload does: a list of hooks run one after the other.

The service sends C{RELOADING=1} before and C{READY=1} after; this module
only runs the hooks and says which failed.  A failing hook does not stop the
ones after it: a reload that half works still reopens the log files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.systemd.message import sanitizeStatus

__all__ = ["ReloadHooks", "Reloader", "reopenAccessLog"]

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


class Reloader:
    """
    Runs reloads through a L{Lifecycle}: C{RELOADING=1}, the hooks, then
    C{READY=1}, whatever the hooks did.  A reload asked for while one runs
    runs once more after it; one asked for while stopping does nothing, and
    one still running when the stop begins never sends C{READY=1}.
    """

    log = Logger()

    def __init__(
        self,
        lifecycle: Lifecycle,
        hooks: ReloadHooks,
        *,
        status: Callable[[], str],
        onNote: Callable[[str | None], None],
    ) -> None:
        """
        @param status: The status line to send with C{READY=1}.
        @param onNote: Told the failure note to show in the status line
            (L{None} once a reload succeeds).
        """
        self.lifecycle = lifecycle
        self.hooks = hooks
        self._status = status
        self._onNote = onNote
        self._running: Deferred[None] | None = None
        self._again = False

    @property
    def running(self) -> bool:
        """
        Whether a reload is in progress.
        """
        return self._running is not None

    def reload(self) -> Deferred[None]:
        """
        Reload now, or once more after the reload in progress.

        @return: Fires when the reload (and any asked for meanwhile) is done.
        """
        if self._running is not None:
            self._again = True
            d: Deferred[None] = Deferred()
            self._running.addBoth(lambda _: d.callback(None))
            return d
        if self.lifecycle.state is not State.READY:
            return succeed(None)
        d = Deferred.fromCoroutine(self._reload())
        # Hooks that finish at once finish the whole reload before this line:
        # only a reload still running may make the next one wait.
        if not d.called:
            self._running = d
        return d

    async def _reload(self) -> None:
        try:
            while self.lifecycle.reloading():
                self._again = False
                await self._runHooks()
                self.lifecycle.ready(self._status())
                if not self._again:
                    break
        finally:
            self._running = None

    async def _runHooks(self) -> None:
        self.log.info("sdweb reloading")
        failed = await self.hooks.run()
        if failed:
            when = time.strftime("%H:%M:%S")
            note = sanitizeStatus(f"Reload failed at {when}: {'; '.join(failed)}")
            self._onNote(note)
            self.log.error("sdweb {note}", note=note)
        else:
            self._onNote(None)
            self.log.info("sdweb reloaded")
