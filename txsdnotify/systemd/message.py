# -*- test-case-name: tests.test_message -*-
"""
Building notification datagrams and parsing C{NOTIFY_SOCKET} addresses.

Pure functions with no I/O, so that everything a hostile status text or a
strange environment can do is decided here and tested without sockets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

__all__ = [
    "MAX_DATAGRAM",
    "NotifyAddressError",
    "formatMessage",
    "parseAddress",
    "sanitizeStatus",
]

MAX_DATAGRAM = 4096
"""
The largest datagram the service manager reads (PIPE_BUF); a longer one is
dropped whole, so we never send one.
"""

# sun_path is 108 bytes; a filesystem path needs its terminating NUL, an
# abstract name does not.
_MAX_PATH = 107
_MAX_ABSTRACT = 108

_KEY = re.compile(r"[A-Z0-9_]+\Z")
_ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"


class NotifyAddressError(ValueError):
    """
    C{NOTIFY_SOCKET} holds something that is not a usable address.
    """


def parseAddress(value: str) -> str | bytes:
    """
    Turn the value of C{NOTIFY_SOCKET} into an C{AF_UNIX} address.

    @param value: An absolute path (C{/run/...}) or an abstract socket name
        (C{@name}).

    @return: The path as given, or the abstract name as bytes starting with a
        NUL byte.

    @raise NotifyAddressError: For an empty, relative, over-long or
        unsupported (C{vsock:}) address.
    """
    if not value:
        raise NotifyAddressError("NOTIFY_SOCKET is set but empty")
    if value.startswith("@"):
        abstract = b"\0" + os.fsencode(value[1:])
        if len(abstract) > _MAX_ABSTRACT:
            raise NotifyAddressError(
                f"NOTIFY_SOCKET abstract name is too long ({len(abstract)} bytes,"
                f" at most {_MAX_ABSTRACT})"
            )
        return abstract
    if value.startswith("/"):
        if len(os.fsencode(value)) > _MAX_PATH:
            raise NotifyAddressError(
                f"NOTIFY_SOCKET path is too long ({len(os.fsencode(value))} bytes,"
                f" at most {_MAX_PATH}): {value!r}"
            )
        return value
    if value.startswith("vsock:"):
        raise NotifyAddressError(
            f"NOTIFY_SOCKET={value!r}: vsock addresses are not supported"
        )
    raise NotifyAddressError(
        f"NOTIFY_SOCKET={value!r} is neither an absolute path nor an @abstract name"
    )


def sanitizeStatus(text: str) -> str:
    """
    Make any text fit on one C{STATUS=} line: line breaks and NUL bytes become
    spaces.  Use it for texts that come from elsewhere (exception messages),
    since L{formatMessage} refuses them rather than guessing.
    """
    return " ".join(text.replace("\0", " ").split())


def _valueText(value: object) -> str:
    if value is True:
        return "1"
    if value is False:
        return "0"
    return str(value)


def _truncateUTF8(text: str, budget: int) -> str:
    """
    The longest prefix of C{text} whose UTF-8 form, with an ellipsis added,
    is at most C{budget} bytes; cut on a character boundary.
    """
    marker = _ELLIPSIS.encode("utf-8")
    room = budget - len(marker)
    if room <= 0:
        return ""
    cut = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
    return cut + _ELLIPSIS


def formatMessage(fields: Mapping[str, object]) -> bytes:
    """
    Encode one notification as a datagram of C{KEY=VALUE} lines.

    @param fields: Keys of C{[A-Z0-9_]+}; values are turned into text
        (C{True} is C{1}).  Order is kept.

    @return: At most L{MAX_DATAGRAM} bytes; a C{STATUS} too long to fit is
        shortened (on a UTF-8 character boundary, ending with an ellipsis).

    @raise ValueError: For a bad key, a value with a line break or NUL byte
        (which could smuggle in another assignment, such as C{READY=1}), no
        fields at all, or a message that is too long without a C{STATUS} to
        shorten.
    """
    if not fields:
        raise ValueError("a notification needs at least one field")
    texts: dict[str, str] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"bad notification key {key!r}: must match [A-Z0-9_]+")
        text = _valueText(value)
        if "\n" in text or "\r" in text or "\0" in text:
            raise ValueError(
                f"notification value for {key} contains a line break or NUL byte"
            )
        texts[key] = text
    data = "\n".join(f"{k}={v}" for k, v in texts.items()).encode("utf-8", "replace")
    if len(data) <= MAX_DATAGRAM:
        return data
    if "STATUS" not in texts:
        raise ValueError(f"notification is {len(data)} bytes, more than {MAX_DATAGRAM}")
    status = texts["STATUS"].encode("utf-8", "replace")
    budget = len(status) - (len(data) - MAX_DATAGRAM)
    texts["STATUS"] = _truncateUTF8(texts["STATUS"], budget)
    data = "\n".join(f"{k}={v}" for k, v in texts.items()).encode("utf-8", "replace")
    if len(data) > MAX_DATAGRAM:
        raise ValueError(
            f"notification is more than {MAX_DATAGRAM} bytes even without its status"
        )
    return data
