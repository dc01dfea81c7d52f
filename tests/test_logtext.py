"""
Tests for txsdnotify.systemd.logtext and the access log's events: twistd's
log lines come out exactly as Twisted's own observers write them, for every
kind of event; the access log emits the very events Twisted's Site did.
"""

from __future__ import annotations

import io
from typing import Any, cast

import pytest
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.python import log
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from txsdnotify.systemd.journal import formatForJournal
from txsdnotify.systemd.logtext import TimeStamps, textObserver
from txsdnotify.web.accesslog import TWISTD_LOG, AccessLogSite, TwistdLog
from txsdnotify.web.tracking import TrackingFactory

ACCESS = (
    '"127.0.0.1" - - [02/Dec/2026:10:27:07 +0000] "GET /?a={b} HTTP/1.1" 200 16'
    ' "-" "Mozilla/5.0"'
)


def failure() -> Failure:
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        return Failure()


class Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text")


def textEvent(text: Any, **extra: Any) -> dict[str, Any]:
    """
    An event as C{twisted.python.log.logfile} emits it for a line.
    """
    return {
        "log_logger": Logger(namespace="twisted.python.log"),
        "log_level": LogLevel.info,
        "log_namespace": "twisted.python.log",
        "log_source": None,
        "log_format": "{log_io}",
        "log_time": 1796207287.25,
        "log_io": text,
        **extra,
    }


EVENTS = {
    "access line": textEvent(ACCESS),
    "non-ASCII line": textEvent("caf\xe9 \u2028 \x85 \x1c tab\there"),
    "line breaks": textEvent("one\ntwo\r\nthree"),
    "empty line": textEvent(""),
    "braces": textEvent("{log_io} {0} {"),
    "a worker's system": textEvent(ACCESS, log_system="sdweb worker 42"),
    "system not text": textEvent(ACCESS, log_system=42),
    "system unprintable": textEvent(ACCESS, log_system=Unprintable()),
    "system with a line break": textEvent("x", log_system="a\nb"),
    "no level": {**textEvent("x"), "log_level": None},
    "no namespace": {k: v for k, v in textEvent("x").items() if k != "log_namespace"},
    "namespace not text": textEvent("x", log_namespace=7),
    "no time": {k: v for k, v in textEvent("x").items() if k != "log_time"},
    "time None": textEvent("x", log_time=None),
    "time about to round up": textEvent("x", log_time=1796207287.9999996),
    "text not a string": textEvent(12),
    "bytes text": textEvent(b"bytes"),
    "bytes format": textEvent("x", log_format=b"{log_io}"),
    "with a failure": textEvent("x", log_failure=failure()),
    "flattened": textEvent("x", log_flattened={"log_io!:": "flat"}),
    "other format": {
        "log_format": "sdweb ready: serving on {addresses}",
        "addresses": "tcp:8080",
        "log_namespace": "txsdnotify.service.WebService",
        "log_level": LogLevel.info,
        "log_time": 1796207288.5,
    },
    "legacy log.msg": {
        "message": ("Site starting on 8080",),
        "log_format": "{log_text}",
        "log_text": "Site starting on 8080",
        "log_system": "-",
        "log_time": 1796207289.0,
        "isError": 0,
    },
    "unformattable": textEvent("x", log_format="{missing}"),
    "no format": {"log_time": 1796207290.0, "log_level": LogLevel.warn},
}


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_sameTextAsTwisted(name: str) -> None:
    """
    The text observer writes what Twisted's textFileLogObserver (what
    twistd -n writes) writes, for every kind of event.
    """
    event = EVENTS[name]
    ours, theirs = io.StringIO(), io.StringIO()
    textObserver(ours)(dict(event))
    textFileLogObserver(theirs)(dict(event))
    assert ours.getvalue() == theirs.getvalue()


def twistedJournalText(event: dict[str, Any]) -> str | None:
    """
    The journal's lines of C{event} formatted by Twisted alone: how
    formatForJournal made them before it had a short cut.
    """
    priorities = {
        LogLevel.debug: 7,
        LogLevel.info: 6,
        LogLevel.warn: 4,
        LogLevel.error: 3,
        LogLevel.critical: 2,
    }
    text = formatEventAsClassicLogText(event, formatTime=lambda _: "")
    if text is None:
        return None
    priority = priorities.get(event.get("log_level", LogLevel.info), 6)
    return "".join(f"<{priority}>{line}\n" for line in text.lstrip().splitlines())


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_journalSameTextAsTwisted(name: str) -> None:
    event = EVENTS[name]
    assert formatForJournal(dict(event)) == twistedJournalText(dict(event))


def test_accessLineShape() -> None:
    """
    An access line as twistd -n and the journal show it.
    """
    out = io.StringIO()
    textObserver(out)(textEvent(ACCESS))
    assert out.getvalue() == (
        f"{formatTime(1796207287.25)} [twisted.python.log#info] {ACCESS}\n"
    )
    assert formatForJournal(textEvent(ACCESS)) == (
        f"<6>[twisted.python.log#info] {ACCESS}\n"
    )


@pytest.mark.parametrize(
    "times",
    [
        [0.0, 0.5, 0.999, 1.0, 1.5, 59.9, 60.0, 3600.25],
        # Rounded up to the next second by datetime: never kept for the
        # second it is in.
        [1796207287.9999996, 1796207287.5, 1796207287.9999996],
        [1796207287.5, 1796207287.9999996, 1796207288.0],
        [1796207288.0, 1796207287.5, 1796207288.0],
        [None, 1.5, None],
    ],
)
def test_timeStamps(times: list[float | None]) -> None:
    """
    Each timestamp is exactly what formatTime makes, in any order.
    """
    stamps = TimeStamps()
    assert [stamps(t) for t in times] == [formatTime(t) for t in times]


def captured(write: Any, text: Any) -> list[dict[str, Any]]:
    """
    The events that C{write(text)} emits.
    """
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        write(text)
    finally:
        globalLogPublisher.removeObserver(observer)
    return events


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """
    An event without what differs between any two events: the logger object
    (its namespace is kept) and the time.
    """
    shown = {k: v for k, v in event.items() if k not in ("log_logger", "log_time")}
    shown["logger namespace"] = event["log_logger"].namespace
    return shown


@pytest.mark.parametrize("text", [ACCESS + "\n", "caf\xe9 \x1c\n", "\n"])
def test_twistdLogEmitsWhatLogfileDid(text: str) -> None:
    """
    A line written to TwistdLog is the event twisted.python.log.logfile
    emits for it (what Twisted's Site writes its access lines to).
    """
    ours = captured(TWISTD_LOG.write, text)
    theirs = captured(log.logfile.write, text)
    assert [comparable(e) for e in ours] == [comparable(e) for e in theirs]
    assert len(ours) == 1


@pytest.mark.parametrize("text", ["two\nlines\n", "", b"bytes\n"])
def test_twistdLogPassesTheRestOn(text: Any) -> None:
    """
    Anything but one whole line is written to twisted.python.log.logfile
    itself (which keeps a partial line until its end).
    """
    events: list[dict[str, Any]] = []
    publisher = LogPublisher(cast(ILogObserver, events.append))
    sink = TwistdLog(Logger(namespace="twisted.python.log", observer=publisher))
    ours = captured(sink.write, text)
    theirs = captured(log.logfile.write, text)
    assert events == []
    assert [comparable(e) for e in ours] == [comparable(e) for e in theirs]


def logFileOnceTracked(site: Site) -> Any:
    """
    The log file C{site} writes to once started through the tracking (as
    sdweb listens).
    """
    tracker = TrackingFactory(site)
    tracker.doStart()
    try:
        return site.logFile
    finally:
        tracker.doStop()


def test_trackedSiteWritesThroughTwistdLog(tmp_path: Any) -> None:
    """
    A site without a log file, started through the tracking, writes its
    access lines through TWISTD_LOG; a site with its own file keeps it.
    """
    assert logFileOnceTracked(Site(Resource())) is TWISTD_LOG
    own = AccessLogSite(Resource(), logPath=str(tmp_path / "access.log"))
    assert logFileOnceTracked(own) not in (TWISTD_LOG, log.logfile)


def test_discardedLogsStayDiscarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    After twisted.python.log.discardLogs(), a site's access lines are still
    discarded.
    """
    discarded = log.NullFile()
    monkeypatch.setattr(log, "logfile", discarded)
    assert logFileOnceTracked(Site(Resource())) is discarded
