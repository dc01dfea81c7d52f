"""
Tests for txsdnotify.web.backlog and txsdnotify.web.descriptions: the listen backlog
sdweb asks for, down to what C{ss -ltn} shows for a real process.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import freePort, need
from test_twistd import startServer

from txsdnotify.testing import NotifyReceiver
from txsdnotify.web.backlog import DEFAULT_BACKLOG, defaultBacklog, withBacklog
from txsdnotify.web.descriptions import splitDescription


def test_splitDescription() -> None:
    assert splitDescription(r"SSL:443:privateKey=a\:b.pem:x") == (
        "ssl",
        ["443", "x"],
        {"privateKey": "a:b.pem"},
    )


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:80", "tcp:80:backlog=77"),
        ("tcp6:80:interface=\\:\\:1", "tcp6:80:interface=\\:\\:1:backlog=77"),
        ("ssl:443:privateKey=k.pem", "ssl:443:privateKey=k.pem:backlog=77"),
        ("unix:/run/web.sock", "unix:/run/web.sock:backlog=77"),
        ("tcp:80:backlog=5", "tcp:80:backlog=5"),
        ("tcp:80:127.0.0.1:5", "tcp:80:127.0.0.1:5"),  # positional backlog
        ("tcp6:80:5", "tcp6:80:5"),
        ("unix:/s:0660:5", "unix:/s:0660:5"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_withBacklog(description: str, expected: str) -> None:
    assert withBacklog(description, 77) == expected


def test_defaultBacklogCappedBySomaxconn(tmp_path: Path) -> None:
    limit = tmp_path / "somaxconn"
    limit.write_text("128\n")
    assert defaultBacklog(str(limit)) == 128
    limit.write_text("65535\n")
    assert defaultBacklog(str(limit)) == DEFAULT_BACKLOG
    assert defaultBacklog(str(tmp_path / "missing")) == DEFAULT_BACKLOG


def listenQueue(port: int) -> int:
    """
    The backlog of the socket listening on 127.0.0.1:port: C{ss -ltn} shows
    it as Send-Q.
    """
    out = subprocess.run(
        [need("ss"), "-ltnH", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == "LISTEN", out
    return int(out[2])


def test_realProcessBacklog(twistd: Any, receiver: NotifyReceiver) -> None:
    given = freePort()
    _, default = startServer(
        twistd, receiver, "--port", f"tcp:{given}:interface=127.0.0.1:backlog=7"
    )
    assert listenQueue(default) == defaultBacklog() > 50
    assert listenQueue(given) == 7
