"""
Signals as operators send them to a real C{twistd -n sdweb}: a second stop
signal, a reload during a stop, reload and stop at once.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    APPS,
    freePort,
    killTree,
    need,
    processEnv,
    twistdCommand,
    waitUntil,
)
from test_twistd import TRACEBACK, startServer

from txsdnotify.testing import NotifyReceiver

CLEAN = (0, -signal.SIGTERM, -signal.SIGINT)
SLOW_RELOAD = APPS / "slowreload.tac"


def curlInFlight(
    receiver: NotifyReceiver, port: int, path: str
) -> subprocess.Popen[bytes]:
    """
    Start curl on C{path} and wait until the status says it is in flight.
    """
    curl = need("curl")
    seen = len(receiver.receiveAvailable())
    client = subprocess.Popen(
        [curl, "-sS", "-i", "--max-time", "60", f"http://127.0.0.1:{port}{path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    receiver.expect(
        lambda m: "In flight: 1;" in m.get("STATUS", ""), timeout=20, after=seen
    )
    return client


@pytest.mark.parametrize(
    "first,second",
    [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGINT)],
)
def test_secondSignalStopsNow(
    twistd: Any, receiver: NotifyReceiver, first: int, second: int
) -> None:
    """
    A second SIGTERM (or Ctrl-C) during a 20 s drain ends it within 2 s,
    cleanly, and says so.
    """
    server, port = startServer(
        twistd,
        receiver,
        "--class",
        "slowapp.Slow",
        "--status-interval",
        "0.1",
        "--drain-timeout",
        "60",
    )
    client = curlInFlight(receiver, port, "/slow?s=20")
    server.process.send_signal(first)
    receiver.expect("STOPPING", timeout=10)
    signalled = time.monotonic()
    server.process.send_signal(second)
    status = server.wait(timeout=10)
    assert time.monotonic() - signalled < 2.0
    assert status in CLEAN
    client.communicate(timeout=10)
    log = server.output()
    assert TRACEBACK not in log
    assert "ReactorNotRunning" not in log
    assert "stop forced" in log
    statuses = receiver.values("STATUS")
    assert any(s.startswith("Stopping now") for s in statuses)
    assert statuses[-1].startswith("Stopped:") and "stop forced" in statuses[-1]
    # The request the forced stop aborted was not served.
    assert statuses[-1].startswith("Stopped: 0 request(s) served;")
    assert statuses[-1].endswith(", 1 aborted")


def test_secondSignalDoesNotWaitForThreads(
    twistd: Any, receiver: NotifyReceiver, httpParser: str
) -> None:
    """
    A WSGI request stuck in its thread for 30 s: a forced stop does not wait
    for it (Twisted's shutdown would join the thread).
    """
    server, port = startServer(
        twistd,
        receiver,
        "--wsgi",
        "slowapp.wsgi",
        "--http-parser",
        httpParser,
        "--status-interval",
        "0.1",
        "--drain-timeout",
        "60",
    )
    client = curlInFlight(receiver, port, "/slow?s=30")
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", timeout=10)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    status = server.wait(timeout=15)
    assert time.monotonic() - signalled < 5.0
    assert status in CLEAN
    client.kill()
    client.communicate()
    assert TRACEBACK not in server.output()


def test_reloadSignalDuringDrainIgnored(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    SIGHUP during a drain (logrotate's postrotate meeting a stop) neither
    kills the process nor reloads: the request in flight gets its 200.
    """
    server, port = startServer(
        twistd, receiver, "--class", "slowapp.Slow", "--status-interval", "0.1"
    )
    client = curlInFlight(receiver, port, "/slow?s=2")
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", timeout=10)
    server.process.send_signal(signal.SIGHUP)
    waitUntil(lambda: "Ignoring SIGHUP" in server.output(), timeout=10)
    out, err = client.communicate(timeout=30)
    assert out.startswith(b"HTTP/1.1 200 OK"), err
    assert out.endswith(b"slow done\n")
    assert server.wait() == -signal.SIGTERM
    assert "RELOADING" not in [k for m in receiver.messages for k in m]


def test_reloadAndStopTogether(tmp_path: Path) -> None:
    """
    SIGHUP and SIGTERM sent together, 20 times over, to a service whose
    reload has an asynchronous step (a reload hook taking 0.3 s) and whose
    stop is held by a silent connection for the 1 s grace: the stop begins
    while the reload runs and the reload ends during the stop, every time,
    and yet no READY=1 (or RELOADING=1) follows STOPPING=1, and the exit is
    clean.
    """
    for _ in range(20):
        fresh = NotifyReceiver()
        output = tmp_path / "twistd.out"
        port = freePort()
        with open(output, "wb") as out:
            server = subprocess.Popen(
                [*twistdCommand(), "-n", "--pidfile=", "-y", str(SLOW_RELOAD)],
                env=processEnv(NOTIFY_SOCKET=fresh.path, PORT=str(port)),
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        silent = None
        try:
            fresh.expect("READY", timeout=30)
            silent = socket.create_connection(("127.0.0.1", port), timeout=30)
            fresh.expect(lambda m: "Connections: 1;" in m.get("STATUS", ""))
            server.send_signal(signal.SIGHUP)
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == -signal.SIGTERM
            fresh.receiveAvailable()
            order = [
                k
                for m in fresh.messages
                for k in m
                if k in ("READY", "RELOADING", "STOPPING")
            ]
            log = output.read_text()
            # The window: the reload began, and was still running when the
            # stop began.
            assert order[:3] == ["READY", "RELOADING", "STOPPING"], order
            assert log.index("sdweb stopping") < log.index("slow reload hook done")
            assert order[3:] == [], order
            assert TRACEBACK not in log
        finally:
            if silent is not None:
                silent.close()
            killTree(server.pid)
            server.wait()
            fresh.close()


def test_statusShowsThreadsWaiting(
    twistd: Any, receiver: NotifyReceiver, httpParser: str
) -> None:
    """
    A saturated WSGI pool shows in the status line: how many requests wait
    for a thread.
    """
    curl = need("curl")
    server, port = startServer(
        twistd,
        receiver,
        "--wsgi",
        "slowapp.wsgi",
        "--http-parser",
        httpParser,
        "--threads",
        "1",
        "--status-interval",
        "0.1",
    )
    clients = [
        subprocess.Popen(
            [curl, "-sS", "--max-time", "60", f"http://127.0.0.1:{port}/slow?s=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    receiver.expect(
        lambda m: "Waiting for a thread: 2" in m.get("STATUS", ""), timeout=20
    )
    for c in clients:
        out, _ = c.communicate(timeout=60)
        assert out == b"wsgi slow done\n"
    receiver.expect(
        lambda m: (
            "Total requests: 3;" in m.get("STATUS", "")
            and "Waiting" not in m.get("STATUS", "")
        ),
        timeout=20,
    )
    server.process.send_signal(signal.SIGTERM)
    assert server.wait() == -signal.SIGTERM
