"""
Tests for txsdnotify.reload: hooks in order, failures reported, not fatal;
reloads through a lifecycle, coalesced, never after the stop began.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from txsdnotify.reload import Reloader, ReloadHooks, reopenAccessLog
from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.testing import MemoryNotifier


def test_hooksRunInOrderAndWaitForDeferreds() -> None:
    clock = Clock()
    hooks = ReloadHooks(clock=clock)
    calls: list[str] = []
    gate: Deferred[None] = Deferred()

    def first() -> Deferred[None]:
        calls.append("first")
        return gate

    hooks.add(first)
    hooks.add(lambda: calls.append("second"), "second")
    result = hooks.run()
    assert calls == ["first"]
    gate.callback(None)
    assert calls == ["first", "second"]
    assert result.result == []


def test_failuresReportedAndTheRestStillRun() -> None:
    hooks = ReloadHooks(clock=Clock())
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("config file has a syntax error")

    hooks.add(broken)
    hooks.add(lambda: ran.append("after"), "after")
    failed: list[str] = []
    hooks.run().addCallback(failed.extend)
    assert failed == [
        "test_failuresReportedAndTheRestStillRun.<locals>.broken:"
        " config file has a syntax error"
    ]
    assert ran == ["after"]


def test_hookTimesOut() -> None:
    clock = Clock()
    hooks = ReloadHooks(clock=clock, timeout=5)
    hooks.add(Deferred, "stuck")
    failed: list[str] = []
    hooks.run().addCallback(failed.extend)
    assert failed == []
    clock.advance(5)
    assert len(failed) == 1
    assert failed[0].startswith("stuck: ")


def test_defaultTimeoutIsAMinute() -> None:
    clock = Clock()
    hooks = ReloadHooks(clock=clock)
    hooks.add(Deferred, "stuck")
    failed: list[str] = []
    hooks.run().addCallback(failed.extend)
    clock.advance(59.9)
    assert failed == []
    clock.advance(0.1)
    assert len(failed) == 1 and failed[0].startswith("stuck: ")


def test_reopenAccessLog(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    site = Site(Resource(), logPath=str(path))
    site.startFactory()
    try:
        site.logFile.write("before\n")
        path.rename(tmp_path / "access.log.1")
        reopenAccessLog(site)()
        site.logFile.write("after\n")
    finally:
        site.stopFactory()
    assert (tmp_path / "access.log.1").read_text() == "before\n"
    assert path.read_text() == "after\n"


def test_reopenWithoutLogIsHarmless(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A site without --logfile logs to twistd's log: reopening opens no file
    and leaves it that way, started or not.
    """
    monkeypatch.chdir(tmp_path)
    site = Site(Resource())
    reopenAccessLog(site)()
    site.startFactory()
    try:
        before = site.logFile
        reopenAccessLog(site)()
        assert site.logFile is before
    finally:
        site.stopFactory()
    assert list(tmp_path.iterdir()) == []


def test_failureWithoutMessageNamesTheException() -> None:
    """
    An exception with no message is named by its repr, and a hook with no
    qualified name by its own repr.
    """
    hooks = ReloadHooks(clock=Clock())

    def broken() -> None:
        raise ValueError()

    hooks.add(partial(broken))
    failed: list[str] = []
    hooks.run().addCallback(failed.extend)
    assert failed == [f"{partial(broken)!r}: ValueError()"]


def makeReloader(
    *hooks: Callable[[], object],
) -> tuple[Reloader, Lifecycle, MemoryNotifier, list[str | None]]:
    notifier = MemoryNotifier()
    lifecycle = Lifecycle(notifier)
    reloadHooks = ReloadHooks(clock=Clock())
    for i, hook in enumerate(hooks):
        reloadHooks.add(hook, f"hook{i}")
    notes: list[str | None] = []
    statuses = iter(f"serving {n}" for n in range(1, 100))
    reloader = Reloader(
        lifecycle, reloadHooks, status=lambda: next(statuses), onNote=notes.append
    )
    return reloader, lifecycle, notifier, notes


def kinds(notifier: MemoryNotifier) -> list[str]:
    """
    What each message said: READY, RELOADING or STOPPING (or STATUS).
    """
    return [
        next((k for k in ("READY", "RELOADING", "STOPPING") if k in m), "STATUS")
        for m in notifier.sent
    ]


def test_reloadSendsReloadingThenReady() -> None:
    ran: list[str] = []
    reloader, lifecycle, notifier, notes = makeReloader(lambda: ran.append("hook"))
    lifecycle.ready("up")
    done = reloader.reload()
    assert done.called and not reloader.running
    assert ran == ["hook"]
    assert kinds(notifier) == ["READY", "RELOADING", "READY"]
    assert notifier.sent[-1] == {"READY": "1", "STATUS": "serving 1"}
    assert notes == [None]
    assert lifecycle.state is State.READY


def test_reloadAskedDuringAReloadRunsOnceMoreAfterIt() -> None:
    """
    Two reloads asked for while one runs make one more reload after it, and
    every caller learns when all are done.
    """
    gates: list[Deferred[None]] = []

    def slow() -> Deferred[None]:
        gates.append(Deferred())
        return gates[-1]

    reloader, lifecycle, notifier, _ = makeReloader(slow)
    lifecycle.ready("up")
    first = reloader.reload()
    assert reloader.running and not first.called
    second = reloader.reload()
    third = reloader.reload()
    assert len(gates) == 1
    gates[0].callback(None)
    assert len(gates) == 2
    assert kinds(notifier) == ["READY", "RELOADING", "READY", "RELOADING"]
    assert not (first.called or second.called or third.called)
    gates[1].callback(None)
    assert kinds(notifier) == ["READY", "RELOADING", "READY", "RELOADING", "READY"]
    assert first.called and second.called and third.called
    assert not reloader.running
    # Idle again: the next reload runs at once, once.
    reloader.reload()
    assert len(gates) == 3 and reloader.running


def test_noReloadUnlessReady() -> None:
    ran: list[str] = []
    reloader, lifecycle, notifier, notes = makeReloader(lambda: ran.append("hook"))
    assert reloader.reload().called
    lifecycle.ready("up")
    lifecycle.draining("Stopping")
    assert reloader.reload().called
    assert ran == [] and notes == []
    assert kinds(notifier) == ["READY", "STOPPING"]
    assert not reloader.running


def test_reloadRunningWhenDrainingBeginsSendsNoReady() -> None:
    gate: Deferred[None] = Deferred()
    reloader, lifecycle, notifier, _ = makeReloader(lambda: gate)
    lifecycle.ready("up")
    done = reloader.reload()
    reloader.reload()  # asked for again: must not run once stopping
    lifecycle.draining("Stopping")
    gate.callback(None)
    assert done.called and not reloader.running
    assert kinds(notifier) == ["READY", "RELOADING", "STOPPING"]
    assert lifecycle.state is State.DRAINING


def test_failedReloadNotesItAndStillSendsReady() -> None:
    """
    A failing hook: READY=1 all the same, and a note with the time and the
    error for the status line, cleared by the next good reload.
    """
    broken = [True]

    def hook() -> None:
        if broken[0]:
            raise RuntimeError("bad config\nline 3")

    reloader, lifecycle, notifier, notes = makeReloader(hook)
    lifecycle.ready("up")
    reloader.reload()
    assert kinds(notifier) == ["READY", "RELOADING", "READY"]
    assert len(notes) == 1
    assert re.fullmatch(
        r"Reload failed at \d\d:\d\d:\d\d: hook0: bad config line 3", notes[0] or ""
    )
    broken[0] = False
    reloader.reload()
    assert notes[1:] == [None]
