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
"""

from __future__ import annotations

from twisted.python.logfile import LogFile
from twisted.web.server import Site

__all__ = ["AccessLogError", "AccessLogSite", "checkAccessLog", "openAccessLog"]


class AccessLogError(Exception):
    """
    The access log cannot be opened; the message says which file and why.
    """


def openAccessLog(path: str) -> LogFile:
    """
    Open the access log file at C{path} for appending, never rotated by
    size.
    """
    return LogFile.fromFullPath(path, rotateLength=None)


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
