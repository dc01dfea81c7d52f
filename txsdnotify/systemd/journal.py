# -*- test-case-name: tests.test_journal, tests.test_logtext -*-
"""
Log lines for the systemd journal: C{<N>} priority prefixes, no timestamps.

When a service's standard error (or output) is connected to the journal,
systemd sets C{JOURNAL_STREAM} to that stream's device and inode.  Lines
that start with C{<3>} (error), C{<4>} (warning), C{<6>} (info) are then
stored with that priority, so C{journalctl -p err -u web} finds the errors;
the journal adds its own timestamps.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import IO

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
)

from txsdnotify.systemd.logtext import classicText

__all__ = ["journalObserver", "journalStream", "observerFactory", "formatForJournal"]

_PRIORITIES = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}


def journalStream(
    environ: Mapping[str, str] | None = None,
    streams: tuple[IO[str] | None, ...] | None = None,
) -> IO[str] | None:
    """
    The stream among C{streams} (standard error, then standard output, as
    they were when the process started) that C{JOURNAL_STREAM} says is
    connected to the journal, if any.
    """
    if environ is None:
        environ = os.environ
    value = environ.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not (sep and device.isdigit() and inode.isdigit()):
        return None
    if streams is None:
        streams = (sys.__stderr__, sys.__stdout__)
    for stream in streams:
        if stream is None:
            continue
        try:
            status = os.fstat(stream.fileno())
        except (OSError, ValueError):
            continue
        if (status.st_dev, status.st_ino) == (int(device), int(inode)):
            return stream
    return None


def _noTime(when: float | None) -> str:
    return ""


def formatForJournal(event: LogEvent) -> str | None:
    """
    One event as journal lines: every line (a traceback has several) starts
    with the event's priority, and there is no timestamp.
    """
    text = classicText(event, _noTime)
    if text is None:
        return None
    priority = _PRIORITIES.get(event.get("log_level", LogLevel.info), 6)
    body = text.lstrip()
    return "".join(f"<{priority}>{line}\n" for line in body.splitlines())


def journalObserver(stream: IO[str]) -> ILogObserver:
    """
    An observer that writes L{formatForJournal} lines to C{stream}.
    """
    return FileLogObserver(stream, formatForJournal)


def observerFactory() -> ILogObserver:
    """
    What C{twistd --logger txsdnotify.systemd.journal.observerFactory} calls: journal
    lines on the stream connected to the journal (standard error by
    default).
    """
    stream = journalStream() or sys.__stderr__
    assert stream is not None
    return journalObserver(stream)
