"""
The examples in docs/examples run as the docs say: a .tac file, a Klein app
with a readiness condition and a reload hook, a WSGI app with its own thread
pool, and an application's own twistd plugin.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import ROOT, freePort, portAnswers, processEnv, twistdCommand

from txsdnotify.testing import NotifyReceiver

EXAMPLES = ROOT / "docs" / "examples"


def run(args: list[str], receiver: NotifyReceiver, tmp_path: Path, **env: str) -> Any:
    log = open(tmp_path / "twistd.out", "wb")
    process = subprocess.Popen(
        twistdCommand() + ["-n", "--pidfile=", *args],
        env=processEnv(NOTIFY_SOCKET=receiver.path, **env),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process


def get(port: int, path: str = "/") -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.read()


def stop(process: Any, tmp_path: Path, tracebacks: int = 0) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == -signal.SIGTERM
    log = (tmp_path / "twistd.out").read_text()
    assert log.count("Traceback (most recent call last)") == tracebacks, log


def test_webTac(receiver: NotifyReceiver, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("static\n")
    port = freePort()
    process = run(
        ["-y", str(EXAMPLES / "web.tac")],
        receiver,
        tmp_path,
        PORT=str(port),
        ROOT=str(tmp_path / "www"),
    )
    try:
        receiver.expect("READY", timeout=30)
        assert get(port) == b"static\n"
    finally:
        stop(process, tmp_path)


def test_kleinTac(receiver: NotifyReceiver, tmp_path: Path) -> None:
    greeting = tmp_path / "greeting.txt"
    port = freePort()
    process = run(
        ["-y", str(EXAMPLES / "klein_app.tac")],
        receiver,
        tmp_path,
        PORT=str(port),
        GREETING_FILE=str(greeting),
    )
    try:
        # The port is bound before the cache is warm; READY=1 waits for both.
        receiver.expect("READY", timeout=30)
        assert get(port) == b"hello\n"
        greeting.write_text("bonjour")
        seen = len(receiver.receiveAvailable())
        process.send_signal(signal.SIGHUP)
        receiver.expect("RELOADING", timeout=10, after=seen)
        ready = receiver.expect("READY", timeout=10, after=seen)
        assert "Reload failed" not in ready["STATUS"]
        assert get(port) == b"bonjour\n"
        greeting.unlink()
        seen = len(receiver.receiveAvailable())
        process.send_signal(signal.SIGHUP)
        ready = receiver.expect("READY", timeout=10, after=seen)
        assert "Reload failed" in ready["STATUS"]
        assert "reload greeting" in ready["STATUS"]
        assert get(port) == b"bonjour\n"
    finally:
        # The failed hook's traceback is logged, for its author.
        stop(process, tmp_path, tracebacks=1)


def test_wsgiTac(receiver: NotifyReceiver, tmp_path: Path) -> None:
    port = freePort()
    process = run(
        ["-y", str(EXAMPLES / "wsgi.tac")], receiver, tmp_path, PORT=str(port)
    )
    try:
        receiver.expect("READY", timeout=30)
        assert get(port) == b"hello from flask\n"
    finally:
        stop(process, tmp_path)


def test_ownPlugin(receiver: NotifyReceiver, tmp_path: Path) -> None:
    port = freePort()
    env = processEnv()
    pythonpath = os.pathsep.join([str(EXAMPLES / "plugin"), env["PYTHONPATH"]])
    process = run(
        ["myapp", "--port", f"tcp:{port}:interface=127.0.0.1"],
        receiver,
        tmp_path,
        PYTHONPATH=pythonpath,
    )
    try:
        receiver.expect("READY", timeout=30)
        assert portAnswers(port)
        assert get(port) == b"myapp is running\n"
    finally:
        stop(process, tmp_path)


def wsConnect(port: int) -> socket.socket:
    """
    A WebSocket client handshake on /ws, done by hand: the server is the
    real autobahn.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16))
    s.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s


def wsFrame(opcode: int, payload: bytes) -> bytes:
    """
    One masked client frame (payload under 126 bytes).
    """
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def wsReadFrame(s: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            assert chunk, "connection closed mid-frame"
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", exactly(2))[0]
    return first & 0x0F, exactly(length)


def status(receiver: NotifyReceiver, text: str) -> dict[str, str]:
    return receiver.expect(lambda m: text in m.get("STATUS", ""), timeout=20)


def test_websocketTac(receiver: NotifyReceiver, tmp_path: Path) -> None:
    """
    Real autobahn WebSockets: 20 opened and closed leave the figures at 0;
    5 open at SIGTERM are closed with 1001 by the drain hook, and the stop
    takes well under a second, not the drain timeout.
    """
    port = freePort()
    process = run(
        ["-y", str(EXAMPLES / "websocket.tac")], receiver, tmp_path, PORT=str(port)
    )
    try:
        receiver.expect("READY", timeout=30)
        sockets = [wsConnect(port) for _ in range(20)]
        for s in sockets:
            s.sendall(wsFrame(0x1, b"ping"))
            assert wsReadFrame(s) == (0x1, b"ping")
        status(receiver, "In flight: 0; Connections: 20;")
        for s in sockets:
            s.sendall(wsFrame(0x8, struct.pack("!H", 1000)))
            assert wsReadFrame(s)[0] == 0x8
            s.close()
        status(receiver, "Total requests: 20; In flight: 0; Connections: 0;")
        sockets = [wsConnect(port) for _ in range(5)]
        stream = socket.create_connection(("127.0.0.1", port), timeout=30)
        stream.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        status(receiver, "In flight: 1; Connections: 6;")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        events = b""
        while not events.endswith(b"0\r\n\r\n"):
            chunk = stream.recv(65536)
            assert chunk, events
            events += chunk
        assert b"event: bye" in events
        stream.close()
        for s in sockets:
            opcode, payload = wsReadFrame(s)
            assert opcode == 0x8
            assert struct.unpack("!H", payload[:2])[0] == 1001
            s.sendall(wsFrame(0x8, payload[:2]))
        assert process.wait(30) == -signal.SIGTERM
        # The process is gone in a few seconds even on a loaded machine, not
        # after the 30 s drain timeout; the drain itself, timed by the
        # server, took under a second.
        assert time.monotonic() - started < 10
        for s in sockets:
            s.close()
        final = receiver.values("STATUS")[-1]
        assert final.startswith("Stopped: 26 request(s) served; drained in")
        assert "aborted" not in final
        drained = re.search(r"drained in ([0-9.]+)s", final)
        assert drained and float(drained.group(1)) < 1.0, final
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
