"""
C{twistd -n sdweb --workers 2}: real master and worker processes, a real
notification socket playing systemd, real clients (and steady load from
another process).
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS, freePort, processEnv, waitUntil
from loadgen import steadyLoad

from txsdnotify.testing import NotifyReceiver
from txsdnotify.web.stats import RequestStats
from txsdnotify.workers.pool import backoff, workerEnvironment
from txsdnotify.workers.protocol import (
    LineDecoder,
    countsMessage,
    encode,
    statsFromMessage,
)

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


SERVED = {
    "resource": ["--class", "pidapp.Pid"],
    "wsgi-fast": ["--wsgi", "pidapp.wsgi", "--http-parser", "fast"],
}
"""
What the workers serve: a twisted.web resource, or the same as a WSGI
application on the fast HTTP path.
"""


@pytest.fixture(params=list(SERVED))
def served(request: pytest.FixtureRequest) -> list[str]:
    """
    The sdweb arguments of what the workers serve (L{SERVED}).
    """
    return SERVED[request.param]


def startWorkers(
    twistd: Any,
    receiver: NotifyReceiver,
    *args: str,
    workers: int = 2,
    served: list[str] = SERVED["resource"],
) -> tuple[Any, int]:
    port = freePort()
    server = twistd(
        [
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--workers",
            str(workers),
            *served,
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

    def servingPids(self, want: set[int] | int, seconds: float = 30) -> set[int]:
        """
        Ask until the answers came from C{want} (the pids, or how many), for
        at most C{seconds}: which worker accepts is the kernel's choice, and
        on a loaded machine one may win many times in a row.
        """
        seen: set[int] = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
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


def test_killedWorkerReplaced(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    server, port = startWorkers(twistd, receiver, "--status-interval", "0.2")
    master = server.process.pid
    workers = childPids(master)
    victim = min(workers)
    with steadyLoad(f"http://127.0.0.1:{port}/", tmp_path / "stop") as counts:
        Client(port).servingPids(workers)
        seen = len(receiver.receiveAvailable())
        os.kill(victim, signal.SIGKILL)
        message = receiver.expect(
            lambda m: (
                "1 replaced (last: worker " in m.get("STATUS", "")
                and "Workers: 2 ready" in m.get("STATUS", "")
            ),
            timeout=30,
            after=seen,
        )
        assert "killed by signal 9 (SIGKILL)" in message["STATUS"]
        now = childPids(master)
        assert len(now) == 2 and victim not in now
        # The new worker serves too.
        assert Client(port).servingPids(now) == now
    assert server.process.poll() is None
    ok, failed = int(counts["ok"]), int(counts["failed"])  # type: ignore[call-overload]
    assert ok > 50
    # Only what was in flight on the killed worker may fail.
    assert failed <= max(4, ok // 20), counts
    assert receiver.values("READY") == ["1"]
    assert receiver.values("STOPPING") == []


def test_reloadReplacesEveryWorker(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    server, port = startWorkers(twistd, receiver, "--status-interval", "0.2")
    master = server.process.pid
    before = childPids(master)
    with steadyLoad(f"http://127.0.0.1:{port}/", tmp_path / "stop") as counts:
        Client(port).servingPids(before)
        seen = len(receiver.receiveAvailable())
        server.process.send_signal(signal.SIGHUP)
        reloading = receiver.expect("RELOADING", "1", timeout=10, after=seen)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        ready = receiver.expect("READY", "1", timeout=60, after=seen)
        assert "Reload failed" not in ready["STATUS"]
        # The old workers drain and go; new ones serve.
        waitUntil(lambda: not childPids(master) & before, timeout=30)
        after = childPids(master)
        assert len(after) == 2
        assert Client(port).servingPids(after) == after
    assert server.process.pid == master and server.process.poll() is None
    assert int(counts["ok"]) > 50  # type: ignore[call-overload]
    assert counts["failed"] == 0, counts


def test_stopDrainsEveryWorker(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path, served: list[str]
) -> None:
    """
    Requests in flight on both workers at SIGTERM all complete.  Which
    worker accepts a connection is the kernel's choice: requests are opened
    until both workers are known (from the first line of each answer) to
    have one in flight.
    """
    server, port = startWorkers(
        twistd,
        receiver,
        "--status-interval",
        "0.2",
        "--drain-timeout",
        "30",
        served=served,
    )
    workers = childPids(server.process.pid)
    assert len(workers) == 2
    streams: list[tuple[http.client.HTTPConnection, http.client.HTTPResponse]] = []
    serving: set[int] = set()
    while serving != workers:
        assert len(streams) < 40, f"only {serving} of {workers} took a request"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", "/stream?s=3")
        response = connection.getresponse()
        serving.add(pidOf(response.readline()))
        streams.append((connection, response))
    count = len(streams)
    receiver.expect(lambda m: f"In flight: {count};" in m.get("STATUS", ""), timeout=20)
    seen = len(receiver.receiveAvailable())
    server.process.send_signal(signal.SIGTERM)
    stopping = receiver.expect("STOPPING", "1", timeout=10, after=seen)
    assert f"{count} request(s) in flight" in stopping["STATUS"]
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) >= 30_000_000
    for connection, response in streams:
        assert response.read() == b"done\n"
        connection.close()
    assert server.wait(60) == -signal.SIGTERM
    assert receiver.values("STATUS")[-1] == f"Stopped: {count} request(s) served"
    assert TRACEBACK not in server.output()
    fast = server.output().count("(WSGI on the fast HTTP/1.1 path)")
    assert fast == (2 if "fast" in served else 0)


def test_workersDyingAtStartFailTheService(
    twistd: Any, receiver: NotifyReceiver
) -> None:
    server = twistd(
        ["--port", f"tcp:{freePort()}:interface=127.0.0.1", "--workers", "2"]
        + ["--wsgi", "brokenapp.app"],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    assert server.wait(120) == 1
    failed = receiver.expect(lambda m: m.get("STATUS", "").startswith("Failed: "))
    assert "workers keep exiting at start (5 in a row)" in failed["STATUS"]
    assert "ZeroDivisionError" in failed["STATUS"] or "brokenapp" in failed["STATUS"]
    assert receiver.values("READY") == []
    assert TRACEBACK not in server.output().replace("brokenapp", "")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--workers", "0"], "--workers wants a whole number >= 1"),
        (["--workers", "two"], "--workers wants a whole number >= 1"),
        (["--workers", "2", "--health-port", "tcp:0"], "--health-port does not"),
        (["--workers", "2", "--port", "ssl:0"], "only tcp:, tcp6:, unix:"),
    ],
)
def test_badWorkerOptions(twistd: Any, args: list[str], words: str) -> None:
    server = twistd(args)
    assert server.wait(timeout=30) == 1
    lines = server.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert words in lines[0]


def test_lineProtocol() -> None:
    stats = RequestStats()
    stats.started, stats.completed, stats.bytesSent = 3, 2, 100
    data = encode("ready", pid=7) + countsMessage(stats) + b"junk\n" + b'{"kind"'
    decoder = LineDecoder()
    messages = list(decoder.feed(data))
    assert [m["kind"] for m in messages] == ["ready", "counts"]
    into = RequestStats()
    statsFromMessage(messages[1], into)
    assert (into.started, into.completed, into.bytesSent) == (3, 2, 100)
    assert [m["kind"] for m in decoder.feed(b':"x"}\n')] == ["x"]


def test_workerEnvironmentScrubbed() -> None:
    env = workerEnvironment(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1", "LISTEN_FDS": "1", "A": "b"}
    )
    assert env == {"A": "b"}
    assert backoff(0) == 0 and backoff(1) == 0.5 and backoff(10) == 10


def test_hungWorkerReplaced(twistd: Any, receiver: NotifyReceiver) -> None:
    server, port = startWorkers(twistd, receiver, "--status-interval", "0.2")
    master = server.process.pid
    workers = childPids(master)
    hung = min(workers)
    os.kill(hung, signal.SIGSTOP)
    message = receiver.expect(
        lambda m: (
            f"1 replaced (last: worker {hung} was killed by signal 9"
            in m.get("STATUS", "")
            and "Workers: 2 ready" in m.get("STATUS", "")
        ),
        timeout=30,
    )
    assert message
    now = childPids(master)
    assert len(now) == 2 and hung not in now
    assert f"worker {hung} silent for" in server.output()
    assert Client(port).servingPids(now) == now
    assert receiver.values("STOPPING") == []


def test_onlyTheMasterSpeaksToSystemd(twistd: Any, receiver: NotifyReceiver) -> None:
    port = freePort()
    server = twistd(
        ["--port", f"tcp:{port}:interface=127.0.0.1", "--workers", "2"]
        + ["--class", "pidapp.Pid"],
        processEnv(NOTIFY_SOCKET=receiver.path, WATCHDOG_USEC="2000000"),
    )
    receiver.expect("READY", timeout=60)
    master = server.process.pid
    workers = childPids(master)
    assert len(workers) == 2
    for pid in workers:
        names = {
            entry.split(b"=", 1)[0]
            for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        }
        assert not names & {b"NOTIFY_SOCKET", b"WATCHDOG_USEC", b"LISTEN_FDS"}
    seen = len(receiver.receiveAvailable())
    receiver.expect("WATCHDOG", "1", timeout=10, after=seen)
    for pid in workers:
        assert (
            f"[sdweb worker {pid}] sdweb ready: serving on the master's socket (fd 4)"
            in server.output()
        )


def test_secondSigtermForces(twistd: Any, receiver: NotifyReceiver) -> None:
    server, port = startWorkers(twistd, receiver, "--status-interval", "0.2")
    answers: list[bytes | Exception] = []

    def slow() -> None:
        try:
            answers.append(get(port, "/slow?s=60", timeout=60))
        except Exception as e:  # noqa: BLE001 - the expected outcome
            answers.append(e)

    client = threading.Thread(target=slow)
    client.start()
    receiver.expect(lambda m: "In flight: 1;" in m.get("STATUS", ""), timeout=20)
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", "1", timeout=10)
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STATUS", "Stopping now: aborting what is left", timeout=10)
    assert server.wait(30) == -signal.SIGTERM
    client.join(30)
    assert len(answers) == 1 and isinstance(answers[0], Exception)


def test_workersLeaveWithTheirMaster(twistd: Any, receiver: NotifyReceiver) -> None:
    server, port = startWorkers(twistd, receiver)
    workers = childPids(server.process.pid)
    assert len(workers) == 2
    server.process.kill()
    server.process.wait()
    waitUntil(lambda: not any(_alive(p) for p in workers), timeout=30)


def test_workersFollowChdir(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    env = processEnv(NOTIFY_SOCKET=receiver.path)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in env["PYTHONPATH"].split(os.pathsep) if p != str(APPS)
    )
    site = tmp_path / "site"
    site.mkdir()
    (site / "pidapp.py").write_text((APPS / "pidapp.py").read_text())
    port = freePort()
    # Relative to where twistd started: the workers start there too.
    server = twistd(
        ["--port", f"tcp:{port}:interface=127.0.0.1", "--workers", "2"]
        + ["--chdir", "site", "--class", "pidapp.Pid"],
        env,
    )
    receiver.expect("READY", timeout=60)
    workers = childPids(server.process.pid)
    assert Client(port).servingPids(workers) == workers


def test_portInUse(twistd: Any, receiver: NotifyReceiver) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = twistd(
            ["--port", f"tcp:{port}:interface=127.0.0.1", "--workers", "2"],
            processEnv(NOTIFY_SOCKET=receiver.path),
        )
        assert server.wait(timeout=30) == 1
    output = server.output()
    assert TRACEBACK not in output
    assert "started worker" not in output
    said = [line for line in output.splitlines() if "cannot listen" in line]
    assert len(said) == 1 and said[0].endswith("Address already in use")
    assert receiver.expect("ERRNO")["ERRNO"] == "98"
    assert receiver.values("READY") == []


def status(port: int, path: str) -> int:
    """
    The status code of GET C{path}, also for an error status.
    """
    try:
        get(port, path)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


def test_healthWithWorkers(
    twistd: Any, receiver: NotifyReceiver, served: list[str]
) -> None:
    """
    --health with workers: every worker answers with its own state, which
    follows the master's: 200 while serving; on SIGTERM, 503 for the health
    check at once while the site still serves for the grace.
    """
    import json

    server, port = startWorkers(
        twistd, receiver, "--health", "/healthz", "--health-grace", "30", served=served
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
        assert r.status == 200
        assert json.loads(r.read())["state"] == "ready"
    server.process.send_signal(signal.SIGTERM)
    stopping = receiver.expect("STOPPING", timeout=30)
    # systemd waits for the grace and the drain.
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) >= (30 + 30) * 1_000_000
    waitUntil(lambda: status(port, "/healthz") == 503, timeout=30)
    assert pidOf(get(port, "/")) in childPids(server.process.pid)
    server.process.send_signal(signal.SIGTERM)  # skip the grace
    assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    assert TRACEBACK not in server.output()
