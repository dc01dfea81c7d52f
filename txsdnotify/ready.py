# -*- test-case-name: tests.test_ready -*-
"""
Readiness for any Twisted server, not only a web one.

L{NotifyService} is a L{MultiService} that tells systemd C{READY=1} once
every child has started listening and every readiness condition the
application added ("the database pool is warm") has fired, and
C{STOPPING=1} before its children stop.  L{ReadinessConditions} is the part
it shares with L{txsdnotify.service.WebService}.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Union

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txsdnotify.systemd.failures import errnoOf, failureFields
from txsdnotify.systemd.lifecycle import Lifecycle
from txsdnotify.systemd.notify import Notifier
from txsdnotify.systemd.watchdog import WatchdogService, watchdogInterval

__all__ = [
    "NotifyService",
    "ReadinessCondition",
    "ReadinessConditions",
    "errnoOf",
    "failureFields",
]

ReadinessCondition = Union["Deferred[Any]", Callable[[], Any]]
"""
A L{Deferred}, or a callable called at start-up that may return one.
"""


class ReadinessConditions:
    """
    What must have happened, beyond listening, before a service is ready.
    """

    def __init__(self) -> None:
        self._conditions: list[ReadinessCondition] = []

    def add(self, condition: ReadinessCondition) -> None:
        """
        Add a L{Deferred} that must fire, or a callable to call at start-up
        whose result (maybe a L{Deferred}) must succeed.
        """
        self._conditions.append(condition)

    def whenAll(self) -> Deferred[None]:
        """
        Start the callables; fire once every condition has, or fail with the
        first failure.
        """
        waiting: list[Deferred[Any]] = []
        for condition in self._conditions:
            if isinstance(condition, Deferred):
                d: Deferred[Any] = Deferred()
                # Chain a copy, so that the application's own Deferred keeps
                # its result for its own callbacks.
                condition.addBoth(_passOn, d)
                waiting.append(d)
            else:
                waiting.append(maybeDeferred(condition))
        if not waiting:
            return succeed(None)
        return gatherResults(waiting, consumeErrors=True).addCallbacks(
            lambda _: None, _firstError
        )


def _passOn(result: object, d: Deferred[Any]) -> object:
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)
    return result


def _firstError(failure: Failure) -> Failure:
    inner = getattr(failure.value, "subFailure", None)
    return inner if isinstance(inner, Failure) else failure


def childReady(child: IService) -> Deferred[Any]:
    """
    A L{Deferred} that fires once C{child} is ready: its C{whenReady()} if it
    has one, the port of a C{StreamServerEndpointService} (C{strports}),
    otherwise at once.
    """
    whenReady = getattr(child, "whenReady", None)
    if callable(whenReady):
        return whenReady()
    # StreamServerEndpointService keeps its listen() result here; there is
    # no public way to wait for it.
    waiting = getattr(child, "_waitingForPort", None)
    if isinstance(waiting, Deferred):
        d: Deferred[Any] = Deferred()
        waiting.addBoth(_portOrFailure, d, child)
        return d
    return succeed(None)


def _portOrFailure(result: object, d: Deferred[Any], child: IService) -> object:
    # The service logs a failure to listen and carries on with None.
    if result is None:
        endpoint = getattr(child, "endpoint", child)
        d.errback(RuntimeError(f"{endpoint!r} did not start listening (see the log)"))
    else:
        _passOn(result, d)
    return result


class NotifyService(MultiService):
    """
    Tells systemd when a service tree of any kind is ready and stopping.

    Add the application's services as children (C{strports.service(...)},
    a database pool, ...).  C{READY=1} goes out once every child is ready
    (see L{childReady}) and every readiness condition has fired; if one
    fails, the status says why (with C{ERRNO=} where there is one) and no
    C{READY=1} is sent.  With C{WatchdogSec=}, it also pings the watchdog.
    """

    log = Logger()

    def __init__(
        self,
        *,
        notifier: Notifier | None = None,
        environ: Mapping[str, str] | None = None,
        reactor: Any = None,
        status: str = "Ready",
    ) -> None:
        """
        @param notifier: The notification client; by default one for the
            C{NOTIFY_SOCKET} in C{environ}.
        @param environ: Where to find C{NOTIFY_SOCKET} and the watchdog's
            settings; L{os.environ} by default.
        @param reactor: Schedules the watchdog pings.
        @param status: The status text sent with C{READY=1}.
        """
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        if environ is None:
            environ = os.environ
        self.reactor = reactor
        self.notifier = (
            notifier
            if notifier is not None
            else Notifier.fromEnvironment(environ, reactor=reactor)
        )
        self.readyStatus = status
        self.lifecycle = Lifecycle(self.notifier)
        self.conditions = ReadinessConditions()
        interval = watchdogInterval(environ)
        if interval is not None:
            WatchdogService(self.lifecycle, interval, clock=reactor).setServiceParent(
                self
            )

    def addReadinessCondition(self, condition: ReadinessCondition) -> None:
        """
        Hold C{READY=1} back until C{condition} has fired (a L{Deferred}) or
        succeeded (a callable, called at start-up).
        """
        self.conditions.add(condition)

    def whenReady(self) -> Deferred[None]:
        """
        @return: Fires once C{READY=1} was sent, or fails with what kept it
            from being sent.
        """
        return self.lifecycle.whenReady()

    def startService(self) -> None:
        """
        Start the children, then wait for them and the conditions.
        """
        super().startService()
        waiting = [childReady(child) for child in self]
        waiting.append(self.conditions.whenAll())
        gatherResults(waiting, consumeErrors=True).addCallbacks(
            self._becomeReady, self._failed
        )

    def _becomeReady(self, _: object) -> None:
        if self.lifecycle.ready(self.readyStatus):
            self.log.info("Ready: told systemd READY=1")

    def _failed(self, failure: Failure) -> None:
        failure = _firstError(failure)
        if self.lifecycle.failed(failure):
            self.log.failure("Not ready", failure)

    def stopService(self) -> Deferred[None]:
        """
        Send C{STOPPING=1}, then stop the children.
        """
        self.lifecycle.draining("Stopping")
        d = maybeDeferred(super().stopService)
        d.addBoth(self._stopped)
        return d

    def _stopped(self, result: object) -> object:
        self.lifecycle.stopped()
        return result
