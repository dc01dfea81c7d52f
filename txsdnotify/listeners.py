# -*- test-case-name: tests.test_activation -*-
"""
The listening sockets of a service: where each comes from and what becomes
of it on stop.

A configured endpoint either binds a new socket, or (with the fd store)
adopts the socket that an earlier process of the same service stored under
the same name, so that the port never closes across a restart.  A socket
that systemd holds a copy of (from a C{.socket} unit or from the fd store)
is left to systemd on stop, with the connections waiting in its queue; one
that only we hold has its queue accepted and served before it closes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from attrs import define
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.logger import Logger

from txsdnotify.systemd.activation import (
    InheritedSocket,
    adoptedEndpoint,
    isStorable,
    storeName,
)
from txsdnotify.systemd.failures import listenError
from txsdnotify.systemd.notify import Notifier
from txsdnotify.web.backlog import withBacklog

__all__ = [
    "Listener",
    "acceptWaiting",
    "addresses",
    "keepOpenForSystemd",
    "listenAll",
    "planListeners",
    "stopListening",
    "storeSockets",
]

log = Logger()


@define
class Listener:
    """
    One listening socket of a service.

    @ivar description: The endpoint as configured (an strports description,
        or the repr of an endpoint object).
    @ivar endpoint: What listens.
    @ivar label: How logs name it, with systemd's name for it if it has one.
    @ivar storeName: The C{FDNAME=} it is kept under in the fd store, if it
        is (or is to be) kept there.
    @ivar retained: Whether systemd holds a copy of the socket.
    @ivar port: The port, once listening.
    @ivar factory: What it listens with, if not the service's own factory
        (a health check port).
    """

    description: str
    endpoint: IStreamServerEndpoint
    label: str
    storeName: str | None = None
    retained: bool = False
    port: IListeningPort | None = None
    factory: IProtocolFactory | None = None


def _systemdName(description: str, inherited: Sequence[InheritedSocket]) -> str | None:
    options = dict(
        part.split("=", 1) for part in description.split(":")[1:] if "=" in part
    )
    if "name" in options:
        return options["name"]
    index = options.get("index", "")
    if index.isdigit() and int(index) < len(inherited):
        return inherited[int(index)].name
    return None


def planListeners(
    endpoints: Sequence[str | IStreamServerEndpoint],
    *,
    reactor: object,
    inherited: Sequence[InheritedSocket],
    fdStore: bool,
) -> tuple[list[Listener], list[InheritedSocket]]:
    """
    Decide how each configured endpoint listens.

    @param inherited: The sockets systemd passed in.
    @param fdStore: Whether sockets we bind go to the fd store (and stored
        ones are adopted).

    @return: The listeners, and the stored sockets that no configured
        endpoint wants any more (to be dropped from the store).
    """
    stored = {s.name: s for s in inherited if s.stored}
    listeners = []
    for endpoint in endpoints:
        if not isinstance(endpoint, str):
            listeners.append(
                Listener(
                    repr(endpoint),
                    endpoint,
                    repr(endpoint),
                    retained=isinstance(endpoint, AdoptedStreamServerEndpoint),
                )
            )
            continue
        if endpoint.startswith("systemd:"):
            name = _systemdName(endpoint, inherited)
            label = f"{endpoint} [{name}]" if name else endpoint
            listeners.append(
                Listener(
                    endpoint,
                    serverFromString(reactor, endpoint),
                    label,
                    retained=True,
                )
            )
            continue
        parsed = serverFromString(reactor, withBacklog(endpoint))
        name = storeName(endpoint)
        if fdStore and name in stored:
            listeners.append(
                Listener(
                    endpoint,
                    adoptedEndpoint(reactor, stored.pop(name)),
                    f"{endpoint} [{name}, from the fd store]",
                    storeName=name,
                    retained=True,
                )
            )
        elif fdStore and isStorable(parsed):
            listeners.append(Listener(endpoint, parsed, endpoint, storeName=name))
        else:
            listeners.append(Listener(endpoint, parsed, endpoint))
    return listeners, list(stored.values())


def keepOpenForSystemd(port: IListeningPort) -> None:
    """
    Make C{port} close only our descriptor when it stops listening.

    A TCP port that Twisted bound itself calls C{shutdown(2)} on its socket
    when it stops, which would kill the copy in systemd's fd store too;
    sockets it adopted are spared, and so must this one be.
    """
    if hasattr(port, "_shouldShutdown"):
        port._shouldShutdown = False


def acceptWaiting(port: IListeningPort) -> None:
    """
    Accept the connections waiting in C{port}'s queue, so that they are
    served rather than reset when the socket closes.
    """
    doRead = getattr(port, "doRead", None)
    if doRead is not None and getattr(port, "connected", False):
        doRead()


def listenAll(
    listeners: Sequence[Listener], factory: IProtocolFactory
) -> Deferred[None]:
    """
    Listen on every listener with C{factory}.

    @return: Fires once all are listening; fails with the first
        L{txsdnotify.systemd.failures.ListenError}, after closing those that did bind.
    """
    attempts = [
        maybeDeferred(listener.endpoint.listen, listener.factory or factory)
        for listener in listeners
    ]

    def listened(results: list[tuple[bool, Any]]) -> None:
        failures = []
        for (ok, result), listener in zip(results, listeners):
            if ok:
                listener.port = result
            else:
                failures.append(listenError(listener.description, result))
        if failures:
            # The failure is reported at once, while twistd can still exit
            # with it; the ports that did bind close in the background.
            for listener in listeners:
                if listener.port is not None:
                    maybeDeferred(listener.port.stopListening)
                    listener.port = None
            raise failures[0]

    return DeferredList(attempts, consumeErrors=True).addCallback(listened)


def storeSockets(
    listeners: Sequence[Listener], stale: Sequence[InheritedSocket], notifier: Notifier
) -> None:
    """
    Hand the sockets we bound to the fd store; drop the stored ones that are
    no longer configured (C{stale}).
    """
    for listener in listeners:
        port = listener.port
        if listener.storeName is None or listener.retained or port is None:
            continue
        # Storable ports are TCP ports, which have a descriptor.
        fileno = port.fileno()  # type: ignore[attr-defined]
        notifier.storeFds(listener.storeName, [fileno])
        keepOpenForSystemd(port)
        listener.retained = notifier.enabled
    for socket in stale:
        log.info(
            "Dropping {name} from the fd store: no longer configured",
            name=socket.name,
        )
        notifier.removeStoredFds(socket.name)
        os.close(socket.fd)


def stopListening(listeners: Sequence[Listener]) -> Deferred[Any]:
    """
    Stop every listener.  The connections waiting in each socket's queue are
    accepted first and served by the drain: a socket that only we hold would
    reset them when it closes, and one that systemd also holds (a C{.socket}
    unit, the fd store; whether the store really took it cannot be known)
    loses nothing by their being served here.
    """
    stopping = []
    for listener in listeners:
        port, listener.port = listener.port, None
        if port is None:
            continue
        acceptWaiting(port)
        stopping.append(maybeDeferred(port.stopListening))
    return DeferredList(stopping)


def addresses(listeners: Sequence[Listener]) -> list[str]:
    """
    How the log names the listeners that are listening, with their address.
    """
    shown = []
    for listener in listeners:
        if listener.port is None:
            continue
        address = listener.port.getHost()
        host = getattr(address, "host", None)
        number = getattr(address, "port", None)
        if host is not None and number is not None:
            shown.append(f"{listener.label} ({host}:{number})")
        else:
            shown.append(listener.label)
    return shown
