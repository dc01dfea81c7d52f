# -*- test-case-name: tests.test_startup_checks -*-
"""
What C{twistd sdweb} can check while it parses its options, before anything
starts: port numbers and numeric interfaces in C{--port} descriptions, that
C{--path} and C{--resource-script} exist.
"""

from __future__ import annotations

import ipaddress
import os
import re

__all__ = [
    "checkPath",
    "checkPortDescription",
    "checkResourceScript",
    "splitDescription",
]

_NUMERIC_V4 = re.compile(r"[0-9.]+")
_PORT_TYPES = ("tcp", "tcp6", "ssl", "ssl6")
"""
The strports types whose first argument (or C{port=}) is a TCP port.
"""


def splitDescription(description: str) -> list[str]:
    """
    Split an strports description at the colons that are not escaped with a
    backslash, unescaping the parts (C{tcp:80:interface=\\:\\:1} is
    C{["tcp", "80", "interface=::1"]}).
    """
    parts = [""]
    escaped = False
    for character in description:
        if escaped:
            parts[-1] += character
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == ":":
            parts.append("")
        else:
            parts[-1] += character
    return parts


def _checkPortNumber(value: str, description: str) -> None:
    if value.isdigit() and not 0 <= int(value) <= 65535:
        raise ValueError(f"bad --port {description!r}: port {value} is not in 0-65535")


def _checkInterface(value: str, description: str) -> None:
    try:
        if ":" in value:
            ipaddress.IPv6Address(value.split("%", 1)[0])
        elif _NUMERIC_V4.fullmatch(value):
            ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(
            f"bad --port {description!r}: interface {value!r} is not an IP address"
        ) from None


def checkPortDescription(description: str) -> None:
    """
    Check what can be checked of a listening description without binding:
    a port number must be in 0-65535, a numeric C{interface=} must be an IP
    address.  Host names are left to the resolver, at start-up.

    @raise ValueError: With one line saying what is wrong.
    """
    if description.isdigit():
        _checkPortNumber(description, description)
        return
    kind, *arguments = splitDescription(description)
    if kind.lower() not in _PORT_TYPES:
        return
    positional = [a for a in arguments if "=" not in a]
    keywords = dict(a.split("=", 1) for a in arguments if "=" in a)
    port = keywords.get("port", positional[0] if positional else None)
    if port is not None:
        _checkPortNumber(port, description)
    interface = keywords.get("interface")
    if interface is None and kind.lower() == "tcp" and len(positional) > 1:
        interface = positional[1]
    if interface:
        _checkInterface(interface, description)


def checkPath(path: str) -> None:
    """
    C{--path}: the file or directory to serve must exist.

    @raise ValueError: With one line saying what is wrong.
    """
    if not os.path.exists(path):
        raise ValueError(f"--path {path!r}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise ValueError(f"--path {path!r}: not readable")


def checkResourceScript(path: str) -> None:
    """
    C{--resource-script}: the script must be a readable file.

    @raise ValueError: With one line saying what is wrong.
    """
    if not os.path.isfile(path):
        raise ValueError(f"--resource-script {path!r}: no such file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"--resource-script {path!r}: not readable")
