"""
C{twistd -n sdweb --workers 2}: real master and worker processes, a real
notification socket playing systemd, real clients (and steady load from
another process).
"""

from __future__ import annotations

import os
import signal
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import freePort, processEnv, waitUntil
from loadgen import steadyLoad

from txsdnotify.stats import RequestStats
from txsdnotify.testing import NotifyReceiver
from txsdnotify.workerproto import LineDecoder, countsMessage, encode, statsFromMessage
from txsdnotify.workers import backoff, workerEnvironment

TRACEBACK = "Traceback (most recent call last)"


def get(port: int, path: str = "/", timeout: float = 30) -> bytes:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Connection": "close"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as r:
        assert r.status == 200
        return r.read()


def pidOf(body: bytes) -> int:
    assert body.startswith(b"pid "), body
    return int(body.split()[1])


def childPids(parent: int) -> set[int]:
    """
    The processes whose parent is C{parent}, from /proc.
    """
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(entry))
    return found


def startWorkers(
    twistd: Any, receiver: NotifyReceiver, *args: str, workers: int = 2
) -> tuple[Any, int]:
    port = freePort()
    server = twistd(
        [
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--workers",
            str(workers),
            "--class",
            "pidapp.Pid",
            *args,
        ],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=60)
    return server, port


class Client:
    """
    Counts the requests it makes.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.made = 0

    def pid(self, path: str = "/") -> int:
        self.made += 1
        return pidOf(get(self.port, path))

    def servingPids(self, want: set[int] | int, tries: int = 400) -> set[int]:
        """
        Ask until the answers came from C{want} (the pids, or how many).
        """
        seen: set[int] = set()
        for _ in range(tries):
            seen.add(self.pid())
            if (isinstance(want, int) and len(seen) >= want) or seen == want:
                break
        return seen


def test_twoWorkersOneFace(twistd: Any, receiver: NotifyReceiver) -> None:
    server, port = startWorkers(twistd, receiver, "--status-interval", "0.2")
    first = receiver.expect("READY")
    master = server.process.pid
    assert first["MAINPID"] == str(master)
    assert "Workers: 2 ready" in first["STATUS"]
    workers = childPids(master)
    assert len(workers) == 2
    client = Client(port)
    # The workers serve, not the master, and both of them do.
    assert client.servingPids(workers) == workers
    for _ in range(10):
        client.pid()
    # Every request, from both workers, in one line.
    message = receiver.expect(
        lambda m: m.get("STATUS", "").startswith(f"Total requests: {client.made};"),
        timeout=15,
    )
    assert "Workers: 2 ready" in message["STATUS"]
    server.process.send_signal(signal.SIGTERM)
    assert server.wait(60) == -signal.SIGTERM
    assert receiver.values("READY") == ["1"]
    # Workers never speak to systemd themselves.
    assert {m.get("MAINPID") for m in receiver.messages} == {None, str(master)}
    last = receiver.values("STATUS")[-1]
    assert last == f"Stopped: {client.made} request(s) served"
    assert TRACEBACK not in server.output()
    waitUntil(lambda: not any(_alive(p) for p in workers))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
