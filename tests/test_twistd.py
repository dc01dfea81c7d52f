"""
Real C{twistd -n sdweb} processes, a real notification socket playing
systemd, and real HTTP clients (curl and urllib) from outside.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    APPS,
    freePort,
    need,
    portAnswers,
    processEnv,
    twistdCommand,
    waitUntil,
)

from txsdnotify.testing import NotifyReceiver

TRACEBACK = "Traceback (most recent call last)"


def get(port: int, path: str = "/", timeout: float = 30) -> tuple[int, bytes, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read(), r.headers


def startServer(twistd: Any, receiver: NotifyReceiver, *args: str) -> tuple[Any, int]:
    port = freePort()
    server = twistd(
        ["--port", f"tcp:{port}:interface=127.0.0.1", *args],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=30)
    return server, port


def test_pluginListed() -> None:
    out = subprocess.run(
        twistdCommand() + ["--help"],
        env=processEnv(),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "sdweb" in out


def test_readyOnlyWhenPortAnswers(twistd: Any, receiver: NotifyReceiver) -> None:
    port = freePort()
    server = twistd(
        ["--port", str(port), "--status-interval", "0.2"],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    ready = receiver.expect("READY", timeout=30)
    # The port answers the moment READY arrives, not a moment later.
    assert portAnswers(port)
    assert ready["MAINPID"] == str(server.process.pid)
    assert ready["STATUS"].startswith("Total requests: 0;")
    status, body, _ = get(port)
    assert status == 200
    assert b"txsdnotify sdweb is serving" in body


def test_statusCountsRequests(twistd: Any, receiver: NotifyReceiver) -> None:
    server, port = startServer(twistd, receiver, "--status-interval", "0.1")
    for _ in range(5):
        assert get(port)[0] == 200
    message = receiver.expect(
        lambda m: "Total requests: 5;" in m.get("STATUS", ""), timeout=10
    )
    assert "In flight: 0;" in message["STATUS"]
    assert "Bytes served/sec:" in message["STATUS"]
    server.process.send_signal(signal.SIGTERM)
    assert server.wait() == -signal.SIGTERM


def test_statusIntervalZero(twistd: Any, receiver: NotifyReceiver) -> None:
    server, port = startServer(twistd, receiver, "--status-interval", "0")
    get(port)
    time.sleep(1.5)
    statuses = receiver.values("STATUS")
    assert len(statuses) == 1
    assert statuses[0].startswith("Total requests: 0;")


def test_sigtermDrainsSlowRequest(twistd: Any, receiver: NotifyReceiver) -> None:
    curl = need("curl")
    server, port = startServer(
        twistd, receiver, "--class", "slowapp.Slow", "--status-interval", "0.1"
    )
    client = subprocess.Popen(
        [curl, "-sS", "-i", "--max-time", "30", f"http://127.0.0.1:{port}/slow?s=2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    receiver.expect(lambda m: "In flight: 1;" in m.get("STATUS", ""), timeout=10)
    seen = len(receiver.messages)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    stopping = receiver.expect("STOPPING", "1", timeout=5, after=seen)
    assert time.monotonic() - signalled < 1.0
    assert "1 request(s) in flight" in stopping["STATUS"]
    waitUntil(lambda: not portAnswers(port), timeout=2)
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, err
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in out
    assert out.endswith(b"slow done\n")
    assert server.wait() == -signal.SIGTERM
    log = server.output()
    assert TRACEBACK not in log
    assert "Server Shut Down." in log
    assert receiver.values("STATUS")[-1].startswith("Stopped: 1 request(s) served")


def getDuringStop(
    server: Any, receiver: NotifyReceiver, port: int, path: str
) -> tuple[int, bytes, Any]:
    """
    GET C{path} and, once the request is in flight (the status line says
    so), SIGTERM the server; the response, and a clean exit.
    """
    result: dict[str, Any] = {}
    seen = len(receiver.receiveAvailable())
    thread = threading.Thread(target=lambda: result.setdefault("r", get(port, path)))
    thread.start()
    receiver.expect(
        lambda m: "In flight: 1;" in m.get("STATUS", ""), timeout=20, after=seen
    )
    server.process.send_signal(signal.SIGTERM)
    thread.join(30)
    assert server.wait() == -signal.SIGTERM
    assert TRACEBACK not in server.output()
    return result["r"]


def test_streamingResponseCompletesOnStop(
    twistd: Any, receiver: NotifyReceiver
) -> None:
    server, port = startServer(
        twistd, receiver, "--class", "slowapp.Slow", "--status-interval", "0.05"
    )
    status, body, _ = getDuringStop(server, receiver, port, "/stream?n=6&s=0.25")
    assert status == 200
    assert body == b"".join(b"chunk %d\n" % i for i in range(6))


def test_wsgiSlowCallDrains(
    twistd: Any, receiver: NotifyReceiver, httpParser: str
) -> None:
    server, port = startServer(
        twistd,
        receiver,
        "--wsgi",
        "slowapp.wsgi",
        "--http-parser",
        httpParser,
        "--status-interval",
        "0.05",
    )
    assert get(port)[1] == b"wsgi fast\n"
    status, body, _ = getDuringStop(server, receiver, port, "/slow?s=1.5")
    assert (status, body) == (200, b"wsgi slow done\n")


def test_flaskApp(twistd: Any, receiver: NotifyReceiver, httpParser: str) -> None:
    server, port = startServer(
        twistd,
        receiver,
        "--wsgi",
        "flaskapp.app",
        "--http-parser",
        httpParser,
        "--status-interval",
        "0.05",
    )
    assert get(port)[:2] == (200, b"hello from flask\n")
    assert get(port, "/stream?n=3")[1] == b"part 0\npart 1\npart 2\n"
    status, body, _ = getDuringStop(server, receiver, port, "/slow?s=1")
    assert (status, body) == (200, b"flask slow done\n")


def test_staticPathAndAccessLog(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("static index\n")
    (site / "data.txt").write_text("some data\n")
    log = tmp_path / "access.log"
    server, port = startServer(
        twistd,
        receiver,
        "--path",
        str(site),
        "--logfile",
        str(log),
        "--add-header",
        "X-Served-By: sdweb",
    )
    status, body, headers = get(port, "/data.txt")
    assert (status, body) == (200, b"some data\n")
    assert headers["X-Served-By"] == "sdweb"
    assert get(port, "/")[1] == b"static index\n"
    waitUntil(lambda: log.exists() and "GET /data.txt" in log.read_text())


def test_resourceScript(twistd: Any, receiver: NotifyReceiver) -> None:
    server, port = startServer(
        twistd, receiver, "--resource-script", str(APPS / "hello.rpy")
    )
    assert get(port, "/")[1] == b"hello from rpy\n"


def test_severalPorts(twistd: Any, receiver: NotifyReceiver) -> None:
    one, two = freePort(), freePort()
    twistd(
        [
            "--port",
            f"tcp:{one}:interface=127.0.0.1",
            "-p",
            f"tcp:{two}:interface=127.0.0.1",
        ],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=30)
    assert portAnswers(one) and portAnswers(two)


def test_portInUse(twistd: Any, receiver: NotifyReceiver) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = twistd(
            ["--port", f"tcp:{port}:interface=127.0.0.1"],
            processEnv(NOTIFY_SOCKET=receiver.path),
        )
        assert server.wait(timeout=30) == 1
    output = server.output()
    assert TRACEBACK not in output
    said = [line for line in output.splitlines() if "cannot listen" in line]
    assert len(said) == 1
    assert said[0].endswith(
        f"sdweb: cannot listen on tcp:{port}:interface=127.0.0.1:"
        " Address already in use"
    )
    message = receiver.expect("ERRNO")
    assert message["ERRNO"] == "98"
    assert "Address already in use" in message["STATUS"]
    assert receiver.values("READY") == []


@pytest.mark.parametrize(
    "args, words",
    [
        (["--status-interval", "abc"], "status-interval"),
        (["--drain-timeout", "-1"], "drain-timeout"),
        (["--port", "bogus:1234"], "bad --port 'bogus:1234'"),
        (["--nosuchoption"], "nosuchoption"),
        (["--port", "systemd:domain=INET:index=0"], "systemd passed no such socket"),
        (["--port", "systemd:domain=INET:name=web"], "systemd passed no such socket"),
        (["--wsgi", "no.such.module.app"], "no module named 'no'"),
        (["--class", "nosuchmodule.Thing"], "no module named 'nosuchmodule'"),
        (["--health", "healthz"], "--health wants a path"),
        (["--health-port", "bogus:1"], "bad --health-port 'bogus:1'"),
        (["--agent-port", "tcp:notaport"], "bad --agent-port"),
        (["--health-grace", "-1"], "health-grace"),
    ],
)
def test_badOptions(twistd: Any, args: list[str], words: str) -> None:
    server = twistd(args)
    assert server.wait(timeout=30) == 1
    lines = server.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("twistd sdweb: ")
    assert words in lines[0]


@pytest.mark.parametrize("value", ["relative/path", "", "vsock:2:99"])
def test_badNotifySocket(twistd: Any, value: str) -> None:
    server = twistd([], processEnv(NOTIFY_SOCKET=value))
    assert server.wait(timeout=30) == 1
    lines = server.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert "NOTIFY_SOCKET" in lines[0]


def test_daemonUnderSystemdRefused(receiver: NotifyReceiver, tmp_path: Path) -> None:
    done = subprocess.run(
        twistdCommand() + ["--pidfile=", "sdweb", "--port", str(freePort())],
        env=processEnv(NOTIFY_SOCKET=receiver.path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "twistd -n sdweb" in done.stderr
    assert receiver.receiveAvailable() == []
