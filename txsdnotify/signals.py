# -*- test-case-name: tests.test_signals -*-
"""
What the process's signals mean while a service runs and while it stops.

While serving, the reload signal (C{SIGHUP}) asks for a reload.  Once the
stop has begun, a second C{SIGTERM} or C{SIGINT} means "stop now" (as it
does for nginx, HAProxy and gunicorn) instead of Twisted's
C{ReactorNotRunning} traceback, and C{SIGHUP} is ignored with a line in the
log rather than killing the process mid-drain.  Every handler this module
installs is put back as it was when the service has stopped.

Handlers only hand the work to the reactor (C{callFromThread}, the one call
that is safe from a signal handler).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

__all__ = ["SignalRouter"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalRouter:
    """
    Installs and restores one service's signal handlers.

    @ivar reloadSignal: The signal that asks for a reload, or L{None}.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        reloadSignal: int | None,
        onReload: Callable[[], object],
        onForce: Callable[[int], object],
    ) -> None:
        """
        @param reactor: Where the work is handed (C{callFromThread}).
        @param reloadSignal: The reload signal; L{None} handles none.
        @param onReload: Called in the reactor thread on the reload signal.
        @param onForce: Called in the reactor thread, with the signal number,
            on a stop signal once stopping has begun.
        """
        self.reactor = reactor
        self.reloadSignal = reloadSignal
        self._onReload = onReload
        self._onForce = onForce
        self._saved: dict[int, Any] = {}
        self._stopping = False

    def _install(self, signum: int, handler: Callable[[int, Any], None]) -> None:
        try:
            previous = signal.signal(signum, handler)
        except ValueError:  # not the main thread
            self.log.warn(
                "Not handling signal {signal}: not the main thread", signal=signum
            )
            return
        self._saved.setdefault(signum, previous)

    def serving(self) -> None:
        """
        Handle the reload signal.
        """
        if self.reloadSignal is not None:
            self._install(self.reloadSignal, self._reloadSignalled)

    def stopping(self) -> None:
        """
        From now on a stop signal forces the stop, and the reload signal is
        ignored.
        """
        self._stopping = True
        for signum in _STOP_SIGNALS:
            # One the process ignores (SIGINT of a background job) stays so.
            if signal.getsignal(signum) is not signal.SIG_IGN:
                self._install(signum, self._stopSignalled)
        if self.reloadSignal is not None:
            self._install(self.reloadSignal, self._reloadSignalled)

    def restore(self) -> None:
        """
        Put back every handler replaced here.
        """
        saved, self._saved = self._saved, {}
        for signum, previous in saved.items():
            try:
                signal.signal(signum, previous)
            except (ValueError, TypeError):
                pass

    def _reloadSignalled(self, signum: int, frame: object) -> None:
        if self._stopping:
            self.reactor.callFromThread(self._ignoredReload, signum)
        else:
            self.reactor.callFromThread(self._onReload)

    def _ignoredReload(self, signum: int) -> None:
        self.log.info(
            "Ignoring {name}: the service is stopping",
            name=signal.Signals(signum).name,
        )

    def _stopSignalled(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self._onForce, signum)
