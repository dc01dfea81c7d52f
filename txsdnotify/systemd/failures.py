# -*- test-case-name: tests.test_service -*-
"""
What went wrong at start-up: one line for people, and what systemd is told.

A listener that cannot be set up is a L{ListenError} (C{cannot listen on
tcp:8080: Address already in use}); L{failureFields} turns any start-up
failure into C{STATUS=Failed: ...} with C{ERRNO=} where the operating system
gave a reason.
"""

from __future__ import annotations

import os
import socket

from twisted.internet.error import CannotListenError
from twisted.python.failure import Failure

from txsdnotify.systemd.message import sanitizeStatus

__all__ = [
    "ListenError",
    "ListenFailed",
    "errnoOf",
    "failureFields",
    "listenError",
    "resolverReason",
]


class ListenError(Exception):
    """
    A listener could not be set up.

    @ivar description: The endpoint, as the user gave it.
    @ivar errno: The operating system's error number, if there is one.
    @ivar reason: Why, in a few words.
    """

    def __init__(self, description: str, errno: int | None, reason: str) -> None:
        super().__init__(description, errno, reason)
        self.description = description
        self.errno = errno
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot listen on {self.description}: {self.reason}"


class ListenFailed(SystemExit, Exception):
    """
    Raised out of twistd's start-up when a listener cannot be set up.

    A L{SystemExit}, so that Python prints just its one-line message and
    exits 1 instead of a traceback; an L{Exception} as well, so that twistd's
    start-up still catches it on the way out and removes its pid file.
    """


def listenError(description: str, failure: Failure) -> ListenError:
    """
    Make a L{ListenError} of whatever an endpoint's C{listen} failed with.
    """
    error = failure.value
    if isinstance(error, ListenError):
        return error
    assert error is not None
    number = errnoOf(error)
    resolver = resolverReason(error)
    if resolver is not None:
        reason = resolver
    elif number is not None:
        reason = os.strerror(number)
    elif isinstance(error, CannotListenError):
        reason = str(error.socketError)
    else:
        reason = str(error) or type(error).__name__
    return ListenError(description, number, sanitizeStatus(reason))


def failureFields(error: BaseException) -> dict[str, object]:
    """
    What to tell the manager when start-up failed: C{STATUS=Failed: ...}, and
    C{ERRNO=} where the operating system gave a reason.
    """
    reason = sanitizeStatus(str(error) or repr(error))
    fields: dict[str, object] = {"STATUS": f"Failed: {reason}"}
    number = errnoOf(error)
    if number is not None:
        fields["ERRNO"] = number
    return fields


def errnoOf(error: BaseException | None) -> int | None:
    """
    The operating system's error number behind C{error}, if any (a
    C{CannotListenError} keeps it in its C{socketError}).  Only a positive
    number is one: resolver errors (C{socket.gaierror}) have negative ones,
    which systemd rejects in C{ERRNO=}.
    """
    if error is None:
        return None
    own = getattr(error, "errno", None)
    if isinstance(own, int) and own > 0:
        return own
    for candidate in (getattr(error, "socketError", None), error, error.__cause__):
        if isinstance(candidate, OSError) and isinstance(candidate.errno, int):
            if candidate.errno > 0:
                return candidate.errno
    return None


def _resolverError(error: BaseException) -> socket.gaierror | None:
    for candidate in (getattr(error, "socketError", None), error, error.__cause__):
        if isinstance(candidate, socket.gaierror):
            return candidate
    return None


def resolverReason(error: BaseException) -> str | None:
    """
    If a listener failed because its interface could not be resolved (a
    C{socket.gaierror}, whose error numbers are negative and no C{ERRNO=}),
    the reason in words: C{cannot resolve interface '999.1.1.1' (Name or
    service not known)}; otherwise L{None}.
    """
    found = _resolverError(error)
    if found is None:
        return None
    words = found.strerror or str(found)
    interface = getattr(error, "interface", None)
    if interface:
        return f"cannot resolve interface {interface!r} ({words})"
    return f"cannot resolve the address ({words})"
