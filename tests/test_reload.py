"""
Tests for txsdnotify.reload: hooks in order, failures reported, not fatal.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from txsdnotify.reload import ReloadHooks, reopenAccessLog


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
