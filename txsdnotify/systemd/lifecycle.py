# -*- test-case-name: tests.test_lifecycle -*-
"""
The one place that decides what the service manager is told.

A service moves through these states::

    starting --> ready <--> reloading
        |          |            |
        v          v            v
      failed    draining ----> forced
        |          |            |
        +------> stopped <------+

L{Lifecycle} holds the state and sends the notification that goes with each
transition (C{READY=1}, C{RELOADING=1}, C{STOPPING=1}, ...).  A transition the
current state does not allow sends nothing and returns C{False}: signals and
Deferreds arrive in any order, and a late C{READY=1} after C{STOPPING=1} is
exactly what must never reach systemd.  After C{STOPPING=1} only C{STATUS=},
C{EXTEND_TIMEOUT_USEC=} and watchdog pings go out.

Nothing here knows HTTP: the web service, the status loop, reload, readiness
conditions, the watchdog and health checks all read and move the state
through one L{Lifecycle}.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txsdnotify.systemd.failures import failureFields
from txsdnotify.systemd.notify import Notifier, monotonicUsec

__all__ = ["Lifecycle", "State", "StoppedBeforeReady"]


class State(enum.Enum):
    """
    Where a service is in its life.
    """

    STARTING = "starting"
    READY = "ready"
    RELOADING = "reloading"
    FAILED = "failed"
    DRAINING = "draining"
    FORCED = "forced"
    STOPPED = "stopped"

    @property
    def stopping(self) -> bool:
        """
        Whether C{STOPPING=1} has been sent (or start-up failed): nothing but
        status and timeout extensions may follow.
        """
        return self in _STOPPING


_STOPPING = frozenset({State.FAILED, State.DRAINING, State.FORCED, State.STOPPED})

# The transitions allowed, from each state.
ALLOWED: Mapping[State, frozenset[State]] = {
    State.STARTING: frozenset({State.READY, State.FAILED, State.DRAINING}),
    State.READY: frozenset({State.RELOADING, State.DRAINING}),
    State.RELOADING: frozenset({State.READY, State.DRAINING}),
    State.FAILED: frozenset({State.STOPPED}),
    State.DRAINING: frozenset({State.FORCED, State.STOPPED}),
    State.FORCED: frozenset({State.STOPPED}),
    State.STOPPED: frozenset(),
}

Observer = Callable[[State, State], None]


class StoppedBeforeReady(Exception):
    """
    The service began stopping before it was ever ready.
    """

    def __str__(self) -> str:
        return "stopped before it was ready"


class Lifecycle:
    """
    The state of one service and what systemd has been told of it.

    @ivar state: The current L{State}.
    @ivar notifier: Where notifications go.
    """

    log = Logger()

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.state = State.STARTING
        self._observers: list[Observer] = []
        self._readyWaiters: list[Deferred[None]] = []
        self._startOutcome: Failure | None = None
        self._settled = False

    def observe(self, observer: Observer) -> None:
        """
        Call C{observer(old, new)} after every transition.
        """
        self._observers.append(observer)

    def allows(self, new: State) -> bool:
        """
        Whether the current state may move to C{new}.
        """
        return new in ALLOWED[self.state]

    def _move(self, new: State, fields: Mapping[str, object] | None) -> bool:
        old = self.state
        if new not in ALLOWED[old]:
            self.log.debug("Ignoring {new} while {old}", new=new.value, old=old.value)
            return False
        self.state = new
        if fields:
            self.notifier.send(fields)
        for observer in list(self._observers):
            observer(old, new)
        return True

    # Transitions.

    def ready(self, status: str) -> bool:
        """
        Start-up or a reload finished: C{READY=1} (with C{MAINPID=} the first
        time).
        """
        first = self.state is State.STARTING
        fields: dict[str, object] = {"READY": 1}
        if first:
            fields["MAINPID"] = os.getpid()
        fields["STATUS"] = status
        if not self._move(State.READY, fields):
            return False
        self._settle(None)
        return True

    def failed(self, failure: Failure) -> bool:
        """
        Start-up failed: C{STATUS=Failed: ...} and C{ERRNO=} where there is one.
        """
        error = failure.value
        assert error is not None
        if not self._move(State.FAILED, failureFields(error)):
            return False
        self._settle(failure)
        return True

    def reloading(self, status: str = "Reloading") -> bool:
        """
        A reload began: C{RELOADING=1} with C{MONOTONIC_USEC=}, which
        C{Type=notify-reload} requires.
        """
        return self._move(
            State.RELOADING,
            {"RELOADING": 1, "MONOTONIC_USEC": monotonicUsec(), "STATUS": status},
        )

    def draining(self, status: str, extendUsec: int | None = None) -> bool:
        """
        Shutdown began: C{STOPPING=1}, and more time if C{extendUsec} says so.
        """
        fields: dict[str, object] = {"STOPPING": 1, "STATUS": status}
        if extendUsec is not None:
            fields["EXTEND_TIMEOUT_USEC"] = extendUsec
        if not self._move(State.DRAINING, fields):
            return False
        self._settle(Failure(StoppedBeforeReady()))
        return True

    def forced(self, status: str) -> bool:
        """
        A second stop request: what is left is being aborted.
        """
        return self._move(State.FORCED, {"STATUS": status})

    def stopped(self, status: str | None = None) -> bool:
        """
        Shutdown finished; the last status line, if any.
        """
        fields = {"STATUS": status} if status is not None else None
        if not self._move(State.STOPPED, fields):
            return False
        self._settle(Failure(StoppedBeforeReady()))
        return True

    # What may be said in a state, without changing it.

    def status(self, text: str, extendUsec: int | None = None) -> bool:
        """
        Set the status line, with more time for the current phase if
        C{extendUsec} is given (only while starting, reloading or stopping).
        """
        if self.state is State.STOPPED:
            return False
        fields: dict[str, object] = {"STATUS": text}
        if extendUsec is not None and self.state is not State.READY:
            fields["EXTEND_TIMEOUT_USEC"] = extendUsec
        self.notifier.send(fields)
        return True

    def watchdog(self) -> bool:
        """
        Ping the watchdog, in every state but stopped: a long drain must not
        be mistaken for a hang.
        """
        if self.state is State.STOPPED:
            return False
        self.notifier.watchdog()
        return True

    # Waiting for readiness.

    def whenReady(self) -> Deferred[None]:
        """
        @return: Fires once the service was first ready; fails with why
            start-up failed, or L{StoppedBeforeReady}.
        """
        if not self._settled:
            d: Deferred[None] = Deferred()
            self._readyWaiters.append(d)
            return d
        if self._startOutcome is None:
            return succeed(None)
        return fail(self._startOutcome)

    def _settle(self, outcome: Failure | None) -> None:
        """
        Settle start-up, once: ready (C{None}) or why not.
        """
        if self._settled:
            return
        self._settled = True
        self._startOutcome = outcome
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            if outcome is None:
                d.callback(None)
            else:
                d.errback(outcome)
