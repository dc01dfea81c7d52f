# -*- test-case-name: tests.test_accesslog, tests.test_logtext -*-
"""
The access log (C{--logfile}) as a service under systemd wants it: one file
that sdweb never rotates by itself.

Twisted's L{Site} rotates its log file at 1 MB into an unbounded numbered
series (C{access.log.1}, C{.2}, ...).  Under systemd the log is rotated by
logrotate, which then reloads the service (C{systemctl reload}: the file is
reopened), or is not a file at all (the journal).  L{AccessLogSite} writes
one file and leaves its rotation to them; L{checkAccessLog} says in one line
why a log file cannot be opened, before any port is bound.

The file is opened for appending (C{O_APPEND}): with C{--workers N}, N
processes write the one file, and each line lands at its end.  Twisted's
L{LogFile} opens an existing file for writing at the offset it found, so
the workers wrote over each other's lines; L{AppendingLogFile} is the one
place that changes how Twisted opens it (C{LogFile._openFile}, C{._file}),
and C{tests/test_accesslog.py} fails if Twisted changes that.

Without C{--logfile} the lines go to twistd's log (standard output, the
journal under systemd, or twistd's own C{--logfile} or C{--syslog}), as
with Twisted's L{Site}, which writes them to
C{twisted.python.log.logfile}; L{TwistdLog} emits the very events that
writes, without splitting lines again (L{useTwistdLog}; see also
L{txsdnotify.systemd.logtext}, which formats them for twistd).
"""

from __future__ import annotations

from time import time
from typing import Any

from twisted.logger import Logger, LoggingFile, LogLevel
from twisted.python import log
from twisted.python.logfile import LogFile
from twisted.web.server import Site

__all__ = [
    "AccessLogError",
    "AccessLogSite",
    "AppendingLogFile",
    "TWISTD_LOG",
    "TwistdLog",
    "checkAccessLog",
    "openAccessLog",
    "useTwistdLog",
]


class AccessLogError(Exception):
    """
    The access log cannot be opened; the message says which file and why.
    """


class AppendingLogFile(LogFile):
    """
    A L{LogFile} whose file is opened in append mode: several processes can
    write it, each line going to its end.
    """

    def _openFile(self) -> None:
        # Twisted's: creates the file with its mode, and sets self.size.
        super()._openFile()
        self._file.close()
        self._file = open(self.path, "ab", 0)
        self.size = self._file.tell()


def openAccessLog(path: str) -> LogFile:
    """
    Open the access log file at C{path} for appending, never rotated by
    size.
    """
    return AppendingLogFile.fromFullPath(path, rotateLength=None)


def checkAccessLog(path: str) -> None:
    """
    Open the access log at C{path} once (creating it, as serving would).

    @raise AccessLogError: It cannot be opened.
    """
    try:
        openAccessLog(path).close()
    except OSError as e:
        raise AccessLogError(
            f"cannot open the access log {path}: {e.strerror or e}"
        ) from None


class TwistdLog:
    """
    An access log "file" whose lines go to twistd's log: each line written
    is the event C{twisted.python.log.logfile} emits for it (text
    C{"{log_io}"}, namespace C{twisted.python.log}, level info, the time),
    so that every observer shows it as before, in order with every other
    event.  Anything but one whole line goes to that file itself.
    """

    def __init__(self, logger: Logger | None = None) -> None:
        if logger is None:
            logger = Logger(namespace="twisted.python.log")
        self._logger = logger
        self._namespace = logger.namespace
        self._observer = logger.observer

    def write(self, line: Any) -> None:
        """
        Log C{line}, one line ending in a newline.
        """
        end = len(line) - 1
        if type(line) is str and end >= 0 and line.find("\n") == end:
            self._observer(
                {
                    "log_logger": self._logger,
                    "log_level": LogLevel.info,
                    "log_namespace": self._namespace,
                    "log_source": None,
                    "log_format": "{log_io}",
                    "log_time": time(),
                    "log_io": line[:-1],
                }
            )
        else:
            log.logfile.write(line)

    def flush(self) -> None:
        """
        Nothing waits here to be written.
        """

    def close(self) -> None:
        """
        Nothing to close: twistd's log stays open.
        """


TWISTD_LOG = TwistdLog()
"""
The access log of every site without a log file of its own.
"""


def useTwistdLog(site: Site) -> None:
    """
    Have a started C{site} that writes its access log to twistd's log (no
    C{logPath}: Twisted's L{Site} then writes to
    C{twisted.python.log.logfile}) write it through L{TWISTD_LOG}: the same
    lines, in the same place, at less cost.
    """
    try:
        current = site.logFile
    except AttributeError:  # not started
        return
    # Not after twisted.python.log.discardLogs(): the lines stay discarded.
    if current is log.logfile and isinstance(current, LoggingFile):
        site.logFile = TWISTD_LOG


class AccessLogSite(Site):
    """
    A L{Site} whose access log (C{logPath}) is one file, not rotated by size:
    reopen it (a reload does) after moving it away.
    """

    def _openLogFile(self, path: str) -> LogFile:  # type: ignore[override]
        return openAccessLog(path)
