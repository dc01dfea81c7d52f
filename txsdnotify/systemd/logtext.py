# -*- test-case-name: tests.test_logtext -*-
"""
twistd's log lines, the same text at a fraction of the cost per line.

Under C{twistd -n} the log goes to standard output, and under systemd from
there to the journal; without C{--logfile} the access log goes there too, a
line per request.  Twisted's L{textFileLogObserver} formats every event from
scratch: the time through C{strftime} and a time zone computed from the
timestamp, the message through L{string.Formatter}; that was most of the
~30 microseconds an access line cost.  L{classicText} writes exactly what
Twisted's L{formatEventAsClassicLogText} writes, with the timestamp made
once a second (L{TimeStamps}) and a short cut for events that are one line
of text (an access line, a C{print()}, a line written to
C{twisted.python.log.logfile}): their message is the text itself.
L{textObserver} is L{textFileLogObserver} with it.
"""

from __future__ import annotations

import sys
from typing import IO, Any, Callable, Optional

from twisted.logger import (
    FileLogObserver,
    LogEvent,
    LogLevel,
    formatEventAsClassicLogText,
    formatTime,
)

__all__ = ["TimeStamps", "classicText", "observerFactory", "textObserver", "textOf"]

_TEXT_FORMAT = "{log_io}"
"""
The format of an event that is a line of text: what
L{twisted.logger.LoggingFile} (C{print()}, C{twisted.python.log.logfile})
and sdweb's access log emit.
"""

_LEVEL = type(LogLevel.info)

_LAST_MICROSECOND = 0.999999
"""
A timestamp this close to the next second may be rounded up to it by
L{datetime.datetime.fromtimestamp}: not cached.
"""


class TimeStamps:
    """
    L{twisted.logger.formatTime} in the format twistd uses (RFC 3339),
    computed once a second: the text of the last second is kept.
    """

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1.0
        self._text = ""

    def __call__(self, when: Optional[float]) -> str:
        """
        The timestamp of C{when} (seconds since the epoch), C{"-"} for
        L{None}, as L{twisted.logger.formatTime} makes it.
        """
        if when is None:
            return "-"
        second = when // 1
        if when - second >= _LAST_MICROSECOND:
            return formatTime(when)
        if second != self._second:
            self._text = formatTime(when)
            self._second = second
        return self._text


def textOf(event: LogEvent) -> Optional[tuple[str, str]]:
    """
    The system (what twistd's log shows in brackets) and the message of an
    event that is a line of text, or L{None} for any other event, which
    must be formatted by Twisted.
    """
    if (
        event.get("log_format") != _TEXT_FORMAT
        or "log_failure" in event
        or "log_flattened" in event
    ):
        return None
    text = event.get("log_io")
    if type(text) is not str:
        return None
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        namespace = event.get("log_namespace", "-")
        if level is None:
            system = f"{namespace}#-"
        elif isinstance(level, _LEVEL):
            system = f"{namespace}#{level.name}"
        else:
            return None
    elif type(system) is not str:
        return None
    return system, text


def classicText(
    event: LogEvent, stamps: Callable[[Optional[float]], str]
) -> Optional[str]:
    """
    C{formatEventAsClassicLogText(event, stamps)}, with a short cut for an
    event that is a line of text (L{textOf}).
    """
    line = textOf(event)
    if line is None:
        return formatEventAsClassicLogText(event, stamps)
    system, text = line
    if not text:
        return None
    text = f"{stamps(event.get('log_time'))} [{system}] {text}"
    if "\n" in text:
        text = text.replace("\n", "\n\t")
    return text + "\n"


def textObserver(stream: IO[Any]) -> FileLogObserver:
    """
    What C{textFileLogObserver(stream)} writes (the format of twistd's log),
    at less cost per event.
    """
    stamps = TimeStamps()
    return FileLogObserver(stream, lambda event: classicText(event, stamps))


def observerFactory() -> FileLogObserver:
    """
    What C{twistd --logger txsdnotify.systemd.logtext.observerFactory}
    calls: twistd's log on standard output, as C{twistd -n} writes it.
    """
    return textObserver(sys.stdout)
