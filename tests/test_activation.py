"""
Tests for txsdnotify.systemd.activation and txsdnotify.listeners: telling stored
sockets from socket-activated ones, naming, and planning the listeners.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from twisted.internet import reactor
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.python.systemd import ListenFDs

from txsdnotify.listeners import planListeners
from txsdnotify.systemd.activation import (
    InheritedSocket,
    inheritedSockets,
    isStorable,
    storeEnabled,
    storeName,
    systemdDescriptions,
)


@pytest.fixture
def listening() -> Iterator[list[socket.socket]]:
    sockets = [
        socket.socket(socket.AF_INET),
        socket.socket(socket.AF_INET6),
        socket.socket(socket.AF_UNIX),
    ]
    yield sockets
    for s in sockets:
        s.close()


def test_inheritedSockets(listening: list[socket.socket]) -> None:
    fds = [s.fileno() for s in listening]
    found = inheritedSockets(ListenFDs(fds, ("web", "web6", "sdweb-tcp_80")))
    assert found == [
        InheritedSocket(fd=fds[0], index=0, name="web", family="INET"),
        InheritedSocket(fd=fds[1], index=1, name="web6", family="INET6"),
        InheritedSocket(fd=fds[2], index=2, name="sdweb-tcp_80", family="UNIX"),
    ]
    assert [s.stored for s in found] == [False, False, True]


def test_repeatedNamesReadFromEnvironment(listening: list[socket.socket]) -> None:
    fds = [s.fileno() for s in listening[:2]]
    found = inheritedSockets(
        ListenFDs(fds, ("web.socket", "web.socket")),
        environ={"LISTEN_FDNAMES": "web.socket:web.socket"},
    )
    assert [s.name for s in found] == ["web.socket", "web.socket"]


def test_nothingInherited() -> None:
    assert inheritedSockets(ListenFDs([], ())) == []


def test_systemdDescriptions() -> None:
    sockets = [
        InheritedSocket(3, 0, "web", "INET"),
        InheritedSocket(4, 1, "sdweb-tcp_8080", "INET"),
        InheritedSocket(5, 2, "admin", "INET6"),
        InheritedSocket(6, 3, "odd", None),
    ]
    assert systemdDescriptions(sockets) == [
        "systemd:domain=INET:index=0",
        "systemd:domain=INET6:index=2",
    ]


@pytest.mark.parametrize(
    "description, name",
    [
        ("tcp:8080", "sdweb-tcp_8080"),
        ("tcp:8080:interface=127.0.0.1", "sdweb-tcp_8080_interface=127.0.0.1"),
        ("tcp6:443:interface=\\:\\:1", "sdweb-tcp6_443_interface=____1"),
    ],
)
def test_storeName(description: str, name: str) -> None:
    assert storeName(description) == name


@pytest.mark.parametrize(
    "description",
    [
        "tcp:8080:interface=\\:\\:1",
        "unix:/run/caf\u00e9 bar.sock",
        "unix:/run/a\tb\x7f\x00c",
        "unix:/" + "x" * 400,
        "unix:/" + "\u00e9" * 200,
    ],
)
def test_storeNameIsAValidFdName(description: str) -> None:
    """
    Whatever the description, the name is one systemd takes for FDNAME=:
    printable ASCII, no colon, at most 255 characters.
    """
    name = storeName(description)
    assert name.startswith("sdweb-")
    assert ":" not in name and len(name) <= 255
    assert all(32 < ord(c) < 127 for c in name), name


def test_storeNameLength() -> None:
    assert len(storeName("unix:/" + "x" * 400)) == 255


def test_storeEnabled() -> None:
    assert storeEnabled({"FDSTORE": "4"})
    assert not storeEnabled({"FDSTORE": "0"})
    assert not storeEnabled({})
    assert not storeEnabled({"FDSTORE": "many"})


def test_isStorable() -> None:
    from twisted.internet.endpoints import serverFromString

    assert isStorable(serverFromString(reactor, "tcp:0"))
    assert isStorable(serverFromString(reactor, "tcp6:0"))
    assert not isStorable(serverFromString(reactor, "unix:/tmp/x.sock"))


def test_planWithStore(listening: list[socket.socket]) -> None:
    stored = os.dup(listening[0].fileno())
    stale = os.dup(listening[1].fileno())
    inherited = [
        InheritedSocket(3, 0, "web", "INET"),
        InheritedSocket(stored, 1, "sdweb-tcp_8080", "INET"),
        InheritedSocket(stale, 2, "sdweb-tcp_9090", "INET6"),
    ]
    try:
        listeners, dropped = planListeners(
            [
                "tcp:8080",
                "tcp:8081",
                "unix:/tmp/sdweb-test.sock",
            ],
            reactor=reactor,
            inherited=inherited,
            fdStore=True,
        )
        adopted, fresh, unix = listeners
        assert isinstance(adopted.endpoint, AdoptedStreamServerEndpoint)
        assert adopted.retained and adopted.storeName == "sdweb-tcp_8080"
        assert "from the fd store" in adopted.label
        assert not fresh.retained and fresh.storeName == "sdweb-tcp_8081"
        assert unix.storeName is None and not unix.retained
        assert dropped == [inherited[2]]
    finally:
        os.close(stored)
        os.close(stale)


def test_planWithoutStore() -> None:
    inherited = [InheritedSocket(3, 0, "sdweb-tcp_8080", "INET")]
    listeners, dropped = planListeners(
        ["tcp:8080"], reactor=reactor, inherited=inherited, fdStore=False
    )
    assert listeners[0].storeName is None
    assert not isinstance(listeners[0].endpoint, AdoptedStreamServerEndpoint)
    assert dropped == inherited
