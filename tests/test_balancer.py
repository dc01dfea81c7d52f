"""
Two sdweb backends under the real (private) systemd user manager, behind a
real HAProxy that checks GET /healthz: restarting one backend after the
other under a steady load loses no request when the health grace covers
HAProxy's checks, and loses some when there is no grace.  And HAProxy's
agent-check, answered by --agent-port, drains a stopping server at once.
"""

from __future__ import annotations

import csv
import io
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import freePort, need, processEnv, waitUntil
from loadgen import steadyLoad
from systemd_harness import (
    UserManager,
    units,  # noqa: F401
    user_manager,  # noqa: F401
)
from test_systemd_activation import serviceUnit, unitLog

from txsdnotify.testing import NotifyReceiver

# HAProxy checks every 200 ms and takes a server out after 2 failed checks:
# it notices a failing health check within inter * (fall + 1) = 0.6 s.
CHECKS = "inter 200ms fall 2 rise 1"
GRACE = "1.5"


class HAProxy:
    """
    A real HAProxy in the foreground, on loopback, with an admin socket.
    """

    def __init__(
        self,
        tmp_path: Path,
        backends: list[int],
        checks: str = CHECKS,
        extra: str = "",
        defaults: str = "",
    ) -> None:
        self.port = freePort()
        self.socket = tmp_path / "haproxy.sock"
        servers = "\n".join(
            f"    server web{i} 127.0.0.1:{port} check {extra}"
            for i, port in enumerate(backends)
        )
        config = tmp_path / "haproxy.cfg"
        # No retries and no redispatch: a request sent to a closed port
        # fails, rather than being hidden by a retry (see docs/balancer.md).
        config.write_text(
            f"""\
global
    stats socket {self.socket} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 0
{defaults}

frontend web
    bind 127.0.0.1:{self.port}
    default_backend sdweb

backend sdweb
    balance roundrobin
    option httpchk GET /healthz
    default-server {checks}
{servers}
"""
        )
        self.log = open(tmp_path / "haproxy.log", "wb")
        self.process = subprocess.Popen(
            [need("haproxy"), "-f", str(config), "-db"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def states(self, column: str = "status") -> dict[str, str]:
        """
        Server name -> its state (C{UP}, C{DOWN}, C{DRAIN (agent)}, ...),
        or another C{column} of C{show stat}.
        """
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(self.socket))
                s.sendall(b"show stat\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return {}
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {
            row["svname"]: row[column]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def waitUp(self, server: str, timeout: float = 30) -> None:
        waitUntil(lambda: self.states().get(server) == "UP", timeout=timeout)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def haproxyFactory(tmp_path: Path) -> Iterator[Callable[..., HAProxy]]:
    started: list[HAProxy] = []

    def start(backends: list[int], **kwargs: str) -> HAProxy:
        h = HAProxy(tmp_path, backends, **kwargs)
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


def restartBehindHAProxy(
    user_manager: UserManager,
    units: list[str],
    tmp_path: Path,
    haproxyFactory: Callable[..., HAProxy],
    grace: str,
) -> dict[str, Any]:
    """
    Two backends with C{--health-grace grace}; a steady load through
    HAProxy while each is restarted in turn; the load's counts.
    """
    need("haproxy")
    ports = [freePort(), freePort()]
    services = []
    for port in ports:
        service = user_manager.unique_name("balanced")
        user_manager.write_unit(
            service,
            serviceUnit(
                tmp_path,
                [
                    "--port",
                    f"tcp:{port}:interface=127.0.0.1",
                    "--health",
                    "/healthz",
                    "--health-grace",
                    grace,
                ],
            ),
        )
        units.append(service)
        user_manager.systemctl("start", service)
        services.append(service)
    haproxy = haproxyFactory(ports)
    for i in range(len(ports)):
        haproxy.waitUp(f"web{i}")
    url = f"http://127.0.0.1:{haproxy.port}/"
    with steadyLoad(url, tmp_path / "stop-load", maxSeconds=60) as counts:
        time.sleep(0.5)  # the load under way before the first restart
        for i, service in enumerate(services):
            user_manager.systemctl("restart", service, timeout=60)
            haproxy.waitUp(f"web{i}")
    counts["log"] = unitLog(tmp_path)
    return counts


def test_graceLosesNoRequest(
    user_manager: UserManager,
    units: list[str],
    tmp_path: Path,
    haproxyFactory: Callable[..., HAProxy],
) -> None:
    counts = restartBehindHAProxy(user_manager, units, tmp_path, haproxyFactory, GRACE)
    log = counts.pop("log")
    print("restarts behind HAProxy with a grace:", counts)
    assert counts["failed"] == 0, (counts, log)
    assert counts["ok"] > 100, counts
    assert "failing health checks, serving 1.5s more" in str(log)


def test_noGraceLosesRequests(
    user_manager: UserManager,
    units: list[str],
    tmp_path: Path,
    haproxyFactory: Callable[..., HAProxy],
) -> None:
    """
    The same without a grace: the port closes before HAProxy has noticed,
    and the requests it still sends there fail.  The grace is what makes
    the difference.
    """
    counts = restartBehindHAProxy(user_manager, units, tmp_path, haproxyFactory, "0")
    counts.pop("log")
    print("restarts behind HAProxy without a grace:", counts)
    assert counts["failed"] > 0, counts
    assert counts["ok"] > 100, counts


@pytest.mark.parametrize("workers", ["1", "2"])
def test_agentCheckDrainsAtOnce(
    twistd: Any,
    receiver: NotifyReceiver,
    haproxyFactory: Callable[..., HAProxy],
    workers: str,
) -> None:
    """
    With --agent-port, HAProxy puts the server in DRAIN within an
    agent-inter of the stop, long before its slow health checks would
    notice; a new process says "up ready" and it is back.  The same with
    --workers 2, where the master answers the agent.
    """
    need("haproxy")
    port, agentPort = freePort(), freePort()
    args = [
        "--workers",
        workers,
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
        "--health",
        "/healthz",
        "--agent-port",
        f"tcp:{agentPort}:interface=127.0.0.1",
        "--health-grace",
        "60",
    ]
    server = twistd(args, processEnv(NOTIFY_SOCKET=receiver.path))
    receiver.expect("READY", timeout=30)
    haproxy = haproxyFactory(
        [port],
        checks="inter 5s fall 3 rise 1",
        extra=f"agent-check agent-port {agentPort} agent-inter 200ms",
    )
    haproxy.waitUp("web0")
    # HAProxy spreads the first checks over the check interval.
    waitUntil(lambda: haproxy.states("agent_status").get("web0") == "L7OK", timeout=15)
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", timeout=30)
    # A failing health check would make it DOWN, and take 15 s.
    waitUntil(lambda: haproxy.states().get("web0") == "DRAIN (agent)", timeout=10)
    server.process.send_signal(signal.SIGTERM)
    server.wait()
    receiver.receiveAvailable()
    twistd(args, processEnv(NOTIFY_SOCKET=receiver.path))
    receiver.expect("READY", timeout=30)
    haproxy.waitUp("web0")


class StateWatch:
    """
    Reads HAProxy's state of one server every 50 ms in a thread, and keeps
    every state seen.
    """

    def __init__(self, haproxy: HAProxy, server: str) -> None:
        import threading

        self.seen: list[str] = []
        self.why: list[str] = []
        self._stop = threading.Event()

        def watch() -> None:
            while not self._stop.is_set():
                state = haproxy.states().get(server)
                if state is not None and (not self.seen or self.seen[-1] != state):
                    self.seen.append(state)
                    if state != "UP":
                        self.why.append(
                            f"{haproxy.states('check_status').get(server)}"
                            f" {haproxy.states('last_chk').get(server)}"
                        )
                self._stop.wait(0.05)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


def test_workersReloadUnderLoadStaysUp(
    twistd: Any,
    receiver: NotifyReceiver,
    tmp_path: Path,
    haproxyFactory: Callable[..., HAProxy],
) -> None:
    """
    One --workers 2 backend with --health /healthz and a health grace,
    behind HAProxy checking every 200 ms (DOWN after 2 failed checks): 3
    reloads under a steady load through HAProxy.  A reload replaces the
    workers, it does not stop the service: the backend is never DOWN (not
    in HAProxy's state, read every 50 ms, nor in its count of UP to DOWN
    transitions), no health check fails, and no request fails.
    """
    need("haproxy")
    port = freePort()
    server = twistd(
        [
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--workers",
            "2",
            "--class",
            "pidapp.Pid",
            "--health",
            "/healthz",
            "--health-grace",
            GRACE,
        ],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=60)
    # A check may take up to 2 s (by default, up to "inter"): what is
    # tested is what the checks answer, not how fast a loaded machine is.
    haproxy = haproxyFactory([port], defaults="    timeout check 2s")
    haproxy.waitUp("web0")
    watch = StateWatch(haproxy, "web0")
    url = f"http://127.0.0.1:{haproxy.port}/"
    try:
        with steadyLoad(url, tmp_path / "stop-load", maxSeconds=120) as counts:
            time.sleep(0.5)  # the load under way before the first reload
            for _ in range(3):
                seen = len(receiver.receiveAvailable())
                server.process.send_signal(signal.SIGHUP)
                receiver.expect("RELOADING", "1", timeout=10, after=seen)
                ready = receiver.expect("READY", "1", timeout=60, after=seen)
                assert "Reload failed" not in ready["STATUS"]
            # Checks of the last drain are seen too.
            time.sleep(1.0)
    finally:
        states = watch.stop()
    print("reloads behind HAProxy:", counts, states, watch.why)
    # Never DOWN, no check failed.
    assert states == ["UP"], (states, watch.why)
    # A replaced worker drains at once: the grace is for a stop of the
    # service.
    assert "failing health checks" not in server.output()
    assert haproxy.states("chkdown") == {"web0": "0"}
    assert counts["failed"] == 0, counts
    assert int(counts["ok"]) > 100, counts  # type: ignore[call-overload]
