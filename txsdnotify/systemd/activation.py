# -*- test-case-name: tests.test_activation -*-
"""
Sockets that systemd hands over: socket activation and the fd store.

systemd passes listening sockets to a service as descriptors 3, 4, ... with
C{LISTEN_FDS}/C{LISTEN_FDNAMES}: those of its C{.socket} units and those the
service stored itself (C{FDSTORE=1}) before a restart.  This module says
which are which, names the ones we store, and decides for each configured
endpoint whether to adopt a stored socket or bind a new one.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence

from attrs import frozen
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.python.systemd import ListenFDs

__all__ = [
    "LISTEN_VARIABLES",
    "InheritedSocket",
    "adoptedEndpoint",
    "STORE_PREFIX",
    "inheritedSockets",
    "isStorable",
    "storeEnabled",
    "storeName",
    "systemdDescriptions",
]

LISTEN_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
"""
How systemd passes sockets; a service removes all three once it has read
them (as C{sd_listen_fds(1)} does), so that its children do not take the
sockets for theirs.  Twisted removes the first two when
C{twisted.internet.endpoints} is imported, and leaves C{LISTEN_FDNAMES}.
"""

STORE_PREFIX = "sdweb-"
"""
How the names of the sockets we keep in the fd store begin, so that they
are told apart from a C{.socket} unit's.
"""

_FAMILIES = {socket.AF_INET: "INET", socket.AF_INET6: "INET6", socket.AF_UNIX: "UNIX"}


@frozen
class InheritedSocket:
    """
    A listening socket passed in by systemd.

    @ivar fd: Its descriptor in this process.
    @ivar index: Its position among all the passed descriptors (what the
        C{systemd:index=} endpoint counts).
    @ivar name: Its name (C{FileDescriptorName=}, the socket unit's name, or
        the C{FDNAME=} it was stored under).
    @ivar family: C{INET}, C{INET6} or C{UNIX}; L{None} for anything else.
    """

    fd: int
    index: int
    name: str
    family: str | None

    @property
    def stored(self) -> bool:
        """
        Whether we put it in the fd store ourselves (rather than a C{.socket}
        unit passing it).
        """
        return self.name.startswith(STORE_PREFIX)


def _family(fd: int) -> str | None:
    try:
        probe = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        return _FAMILIES.get(probe.family)
    finally:
        probe.detach()


def inheritedSockets(
    listenFDs: ListenFDs | None = None, environ: Mapping[str, str] | None = None
) -> list[InheritedSocket]:
    """
    The sockets systemd passed to this process.

    @param listenFDs: What Twisted read of C{LISTEN_FDS}; by default the copy
        that C{twisted.internet.endpoints} took (and removed from the
        environment) when it was imported.
    @param environ: Where to read C{LISTEN_FDNAMES}, which Twisted leaves in
        place; L{os.environ} by default.
    """
    if listenFDs is None:
        listenFDs = _twistedListenFDs()
    descriptors = listenFDs.inheritedDescriptors()
    names = list(listenFDs.inheritedNamedDescriptors())
    if len(names) != len(descriptors):
        # Names can repeat (a .socket unit's name is the default for all of
        # its sockets), which the mapping above folds: read them again.
        if environ is None:
            environ = os.environ
        names = environ.get("LISTEN_FDNAMES", "").split(":")
    if len(names) != len(descriptors):
        names = ["unknown"] * len(descriptors)
    return [
        InheritedSocket(fd=fd, index=i, name=name, family=_family(fd))
        for i, (fd, name) in enumerate(zip(descriptors, names))
    ]


def _twistedListenFDs() -> ListenFDs:
    from twisted.internet import endpoints

    parser = getattr(endpoints, "_SystemdParser", None)
    found = getattr(parser, "_sddaemon", None)
    if isinstance(found, ListenFDs):
        return found
    return ListenFDs.fromEnvironment()


def systemdDescriptions(sockets: Sequence[InheritedSocket]) -> list[str]:
    """
    Endpoint descriptions for the sockets of C{.socket} units (not our own
    stored ones), for serving on all of them when no port was configured.
    """
    return [
        f"systemd:domain={s.family}:index={s.index}"
        for s in sockets
        if not s.stored and s.family is not None
    ]


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,@/+-]")


def storeName(description: str) -> str:
    """
    The stable C{FDNAME=} under which the socket for an endpoint
    description is stored: readable, without C{:}, at most 255 characters.
    """
    name = STORE_PREFIX + _UNSAFE.sub("_", description)
    return name[:255]


def isStorable(endpoint: IStreamServerEndpoint) -> bool:
    """
    Whether a socket bound for C{endpoint} can be kept in the fd store and
    adopted again: plain TCP.  (TLS would need wrapping again on adoption,
    and a UNIX socket's file is removed when Twisted stops listening.)
    """
    return isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint))


def storeEnabled(environ: Mapping[str, str] | None = None) -> bool:
    """
    Whether systemd said that this service has an fd store: C{FDSTORE=}
    (the store's size) is set by systemd 254 and later.
    """
    if environ is None:
        environ = os.environ
    try:
        return int(environ.get("FDSTORE", "0")) > 0
    except ValueError:
        return False


def adoptedEndpoint(
    reactor: object, inherited: InheritedSocket
) -> AdoptedStreamServerEndpoint:
    """
    An endpoint that listens on an inherited socket.
    """
    family = getattr(socket, "AF_" + (inherited.family or "INET"))
    return AdoptedStreamServerEndpoint(reactor, inherited.fd, family)
