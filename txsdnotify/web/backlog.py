# -*- test-case-name: tests.test_backlog -*-
"""
A production listen backlog for the ports sdweb binds.

Twisted listens with a backlog of 50: under a burst of a few hundred new
connections the kernel's accept queue overflows and clients wait for SYN
retransmissions or fail.  Unless a description says C{backlog=}, sdweb asks
for L{DEFAULT_BACKLOG}, capped by C{net.core.somaxconn} (the kernel caps it
there anyway; asking for no more keeps C{ss -ltn} truthful).
"""

from __future__ import annotations

from txsdnotify.web.descriptions import splitDescription

__all__ = ["DEFAULT_BACKLOG", "defaultBacklog", "withBacklog"]

DEFAULT_BACKLOG = 1024

SOMAXCONN = "/proc/sys/net/core/somaxconn"

# The endpoint kinds whose Twisted parsers take backlog=, and the place of
# the backlog among their positional fields (a description that fills it
# already has one).
_BACKLOG_FIELD = {"tcp": 2, "tcp6": 1, "ssl": 5, "unix": 2}


def defaultBacklog(somaxconn: str = SOMAXCONN) -> int:
    """
    L{DEFAULT_BACKLOG}, or the kernel's C{somaxconn} if that is lower.
    """
    try:
        with open(somaxconn) as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return DEFAULT_BACKLOG
    return max(1, min(DEFAULT_BACKLOG, limit))


def withBacklog(description: str, backlog: int | None = None) -> str:
    """
    C{description} with C{backlog=} added if it is a TCP, TLS or UNIX
    socket description without one.

    @param backlog: The backlog to add; L{defaultBacklog} by default.
    """
    kind, positional, options = splitDescription(description)
    field = _BACKLOG_FIELD.get(kind)
    if field is None or "backlog" in options or len(positional) > field:
        return description
    if backlog is None:
        backlog = defaultBacklog()
    return f"{description}:backlog={backlog}"
