# -*- test-case-name: tests.test_accesslog -*-
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
"""

from __future__ import annotations

from twisted.python.logfile import LogFile
from twisted.web.server import Site

__all__ = [
    "AccessLogError",
    "AccessLogSite",
    "AppendingLogFile",
    "checkAccessLog",
    "openAccessLog",
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


class AccessLogSite(Site):
    """
    A L{Site} whose access log (C{logPath}) is one file, not rotated by size:
    reopen it (a reload does) after moving it away.
    """

    def _openLogFile(self, path: str) -> LogFile:  # type: ignore[override]
        return openAccessLog(path)
