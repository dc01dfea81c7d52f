"""
Tests for txsdnotify.signals in this process: real signals sent to
ourselves, handled through the real reactor, and the handlers put back.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Generator, Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, Logger

from txsdnotify.signals import SignalRouter

HANDLED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


def installed(signum: int) -> object:
    """
    The handler of C{signum} now (typed loosely, so that comparing it with a
    L{Sentinel} does not narrow the sentinel's type).
    """
    return signal.getsignal(signum)


class Sentinel:
    """
    The handler in place before each test: records what reaches it, so
    that a signal the router failed to catch does not kill the tests.
    """

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, signum: int, frame: object) -> None:
        self.seen.append(signum)


@pytest.fixture
def sentinel() -> Iterator[Sentinel]:
    # The reactor installs its own handlers when it starts: start it first.
    pytest_twisted.blockon(deferLater(reactor, 0, lambda: None))
    handler = Sentinel()
    saved = {s: signal.signal(s, handler) for s in HANDLED}
    try:
        yield handler
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


class Calls:
    """
    What the router called, each call firing a Deferred.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.threads: list[threading.Thread] = []
        self._next: Deferred[None] = Deferred()

    def next(self) -> Deferred[None]:
        return self._next

    def record(self, what: str, arg: object = None) -> None:
        self.calls.append((what, arg))
        self.threads.append(threading.current_thread())
        d, self._next = self._next, Deferred()
        d.callback(None)


def router(calls: Calls, reloadSignal: int | None = signal.SIGHUP) -> SignalRouter:
    r = SignalRouter(
        reactor,
        reloadSignal=reloadSignal,
        onReload=lambda: calls.record("reload"),
        onForce=lambda signum: calls.record("force", signum),
    )
    r.log = Logger(
        observer=cast(ILogObserver, lambda event: calls.record("log", event))
    )
    return r


@pytest_twisted.inlineCallbacks
def test_reloadSignalWhileServing(sentinel: Sentinel) -> Generator[Any, Any, None]:
    calls = Calls()
    r = router(calls)
    r.serving()
    assert installed(signal.SIGTERM) is sentinel
    d = calls.next()
    os.kill(os.getpid(), signal.SIGHUP)
    # Handed to the reactor, not called in the handler.
    assert calls.calls == []
    yield d
    assert calls.calls == [("reload", None)]
    assert calls.threads == [threading.main_thread()]
    assert sentinel.seen == []
    r.restore()
    assert installed(signal.SIGHUP) is sentinel


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopSignalWhileStoppingForces(
    sentinel: Sentinel, signum: int
) -> Generator[Any, Any, None]:
    calls = Calls()
    r = router(calls)
    r.serving()
    r.stopping()
    d = calls.next()
    os.kill(os.getpid(), signum)
    yield d
    assert calls.calls == [("force", signum)]
    assert sentinel.seen == []
    r.restore()
    assert [signal.getsignal(s) for s in HANDLED] == [sentinel] * 3


@pytest_twisted.inlineCallbacks
def test_reloadSignalWhileStoppingIgnored(
    sentinel: Sentinel,
) -> Generator[Any, Any, None]:
    """
    SIGHUP during the stop reloads nothing and says so in the log; the
    handler put back is the one from before serving, not the router's own.
    """
    calls = Calls()
    r = router(calls)
    r.serving()
    r.stopping()
    d = calls.next()
    os.kill(os.getpid(), signal.SIGHUP)
    yield d
    [(what, event)] = calls.calls
    assert what == "log"
    assert isinstance(event, dict)
    assert event["log_format"] == "Ignoring {name}: the service is stopping"
    assert event["name"] == "SIGHUP"
    assert sentinel.seen == []
    r.restore()
    assert installed(signal.SIGHUP) is sentinel


def test_noReloadSignal(sentinel: Sentinel) -> None:
    """
    With no reload signal, serving installs nothing and stopping only the
    stop signals.
    """
    r = router(Calls(), reloadSignal=None)
    r.serving()
    assert [signal.getsignal(s) for s in HANDLED] == [sentinel] * 3
    r.stopping()
    assert installed(signal.SIGHUP) is sentinel
    assert signal.getsignal(signal.SIGTERM) is not sentinel
    assert signal.getsignal(signal.SIGINT) is not sentinel
    r.restore()
    assert [signal.getsignal(s) for s in HANDLED] == [sentinel] * 3


def test_outsideTheMainThread(sentinel: Sentinel) -> None:
    """
    Off the main thread no handler can be installed or put back: a warning,
    no exception, and nothing to restore later.
    """
    calls = Calls()
    r = router(calls)
    errors: list[BaseException] = []

    def inThread(step: Any) -> None:
        def run() -> None:
            try:
                step()
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        t.join()

    inThread(r.serving)
    assert installed(signal.SIGHUP) is sentinel
    [(what, event)] = calls.calls
    assert isinstance(event, dict)
    assert event["log_format"].startswith("Not handling signal {signal}")
    assert event["signal"] == signal.SIGHUP
    r.serving()
    inThread(r.restore)
    assert errors == []
    # The restore off the main thread forgot what it could not put back.
    r.restore()
    assert signal.getsignal(signal.SIGHUP) is not sentinel


def test_ignoredStopSignalStaysIgnored(sentinel: Sentinel) -> None:
    """
    A stop signal the process ignores (SIGINT of a job started in the
    background) is not handled while stopping either.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    r = router(Calls())
    r.stopping()
    assert installed(signal.SIGINT) is signal.SIG_IGN
    assert installed(signal.SIGTERM) is not sentinel
    r.restore()
    assert installed(signal.SIGINT) is signal.SIG_IGN
