"""
The drain through real C{twistd -n sdweb} processes, one and C{--workers 2}:
an upload still arriving at C{SIGTERM} is in flight (it gets its answer
within the drain timeout, and is cut, logged and counted at it), while
clients that never finish their request head are closed at the grace.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any

import pytest
from conftest import freePort, processEnv, waitUntil

from txsdnotify.testing import NotifyReceiver

TRACEBACK = "Traceback (most recent call last)"
MB = 1_000_000


def startServer(
    twistd: Any, receiver: NotifyReceiver, workers: int, *args: str
) -> tuple[Any, int]:
    port = freePort()
    server = twistd(
        [
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--class",
            "slowapp.Slow",
            "--workers",
            str(workers),
            "--status-interval",
            "0.1",
            *args,
        ],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=60)
    return server, port


class Upload(threading.Thread):
    """
    A POST of C{total} bytes sent at C{rate} bytes a second, then the
    response read to the end.

    @ivar sent: Body bytes sent so far.
    @ivar cut: When (C{time.monotonic()}) the server cut the upload, if it
        did.
    @ivar response: What the server answered.
    """

    def __init__(self, port: int, total: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.total = total
        self.rate = rate
        self.sent = 0
        self.cut: float | None = None
        self.response = b""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total
        )

    def run(self) -> None:
        chunk = b"x" * 100_000
        began = time.monotonic()
        try:
            while self.sent < self.total:
                # Paced, not synchronised: the rate the test is about.
                time.sleep(max(0.0, began + self.sent / self.rate - time.monotonic()))
                self.sock.sendall(chunk[: self.total - self.sent])
                self.sent += min(len(chunk), self.total - self.sent)
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.response += data
        except OSError:
            self.cut = time.monotonic()
        finally:
            self.sock.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_uploadAcrossSigtermAnswered(
    twistd: Any, receiver: NotifyReceiver, workers: int
) -> None:
    """
    100 MB at 10 MB/s, SIGTERM 2 s in, --drain-timeout 30: the upload goes
    on arriving (for 8 s, four times the grace) and gets its 200.
    """
    server, port = startServer(twistd, receiver, workers, "--drain-timeout", "30")
    upload = Upload(port, 100 * MB, 10 * MB)
    upload.start()
    waitUntil(lambda: upload.sent >= 20 * MB, timeout=30)
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", timeout=10)
    upload.join(timeout=60)
    assert upload.cut is None, f"cut after {upload.sent} bytes"
    assert upload.response.startswith(b"HTTP/1.1 200 OK"), upload.response
    assert b"\r\nConnection: close\r\n" in upload.response
    assert upload.response.endswith(b"got 100000000 bytes\n")
    assert server.wait(timeout=30) == -signal.SIGTERM
    assert TRACEBACK not in server.output()
    assert receiver.values("STATUS")[-1].startswith("Stopped: 1 request(s) served")


@pytest.mark.parametrize("workers", [1, 2])
def test_uploadCutAtTheDrainTimeout(
    twistd: Any, receiver: NotifyReceiver, workers: int
) -> None:
    """
    The same upload with --drain-timeout 5 is cut about 5 s after the
    signal, and the cut is logged and counted as aborted, not served.
    """
    server, port = startServer(twistd, receiver, workers, "--drain-timeout", "5")
    upload = Upload(port, 100 * MB, 10 * MB)
    upload.start()
    waitUntil(lambda: upload.sent >= 20 * MB, timeout=30)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    upload.join(timeout=60)
    assert upload.cut is not None, upload.response
    assert 4.5 < upload.cut - signalled < 5 + 3
    assert upload.sent < 100 * MB
    assert server.wait(timeout=30) == -signal.SIGTERM
    log = server.output()
    assert TRACEBACK not in log
    assert (
        "Drain timeout (5s) passed: aborting 1 connection(s) with a request body"
        " still arriving" in log
    )
    final = receiver.values("STATUS")[-1]
    assert final.startswith("Stopped: 0 request(s) served")
    # One process: "...; drained in 5.0s, 1 aborted"; the workers' master:
    # "...; 1 aborted".
    assert final.endswith((", 1 aborted", "; 1 aborted")), final


def test_slowlorisClosedAtTheGrace(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    50 clients trickling their headers (a line every 0.5 s) are closed at
    the 2 s grace, logged and counted, while a request in flight finishes.
    """
    server, port = startServer(twistd, receiver, 1, "--drain-timeout", "30")
    slow = [
        socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(50)
    ]
    for s in slow:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    closed: dict[socket.socket, float] = {}
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set() and len(closed) < len(slow):
            for s in slow:
                if s in closed:
                    continue
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    closed[s] = time.monotonic()
            stop.wait(0.5)

    # Headers are on their way before the stop: the server has them all.
    receiver.expect(lambda m: "Connections: 50;" in m.get("STATUS", ""), timeout=20)
    trickler = threading.Thread(target=trickle, daemon=True)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    trickler.start()
    try:
        assert server.wait(timeout=30) == -signal.SIGTERM
        waitUntil(lambda: len(closed) == len(slow), timeout=10)
    finally:
        stop.set()
        for s in slow:
            s.close()
    assert min(closed.values()) - signalled > 1.5
    assert max(closed.values()) - signalled < 2 + 3
    log = server.output()
    assert (
        "Grace (2s) passed: aborting 50 connection(s) with a request head still"
        " arriving" in log
    )
    assert receiver.values("STATUS")[-1].endswith(", 50 aborted")
