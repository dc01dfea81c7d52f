"""
C{twistd -n sdweb --workers 2}: real master and worker processes, a real
notification socket playing systemd, real clients (and steady load from
another process).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS, freePort, portAnswers, processEnv, waitUntil
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

# The master's status line while serving: the workers first, then the
# request figures.
STATUS = (
    r"2/2 workers; [\d,]+ req; [\d.]+ req/s; \d+ in flight; \d+ conn;"
    r" [\d.]+ (B|kB|MB|GB)/s"
)


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
    # Most important first, and short.
    assert re.fullmatch(STATUS, first["STATUS"]), first["STATUS"]
    workers = childPids(master)
    assert len(workers) == 2
    client = Client(port)
    # The workers serve, not the master, and both of them do.
    assert client.servingPids(workers) == workers
    for _ in range(10):
        client.pid()
    # Every request, from both workers, in one line.
    message = receiver.expect(
        lambda m: m.get("STATUS", "").startswith(f"2/2 workers; {client.made} req;"),
        timeout=15,
    )
    assert re.fullmatch(STATUS, message["STATUS"]), message["STATUS"]
    assert len(message["STATUS"]) < 100
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
                and m.get("STATUS", "").startswith("2/2 workers")
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
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    Requests in flight on both workers at SIGTERM all complete.  Which
    worker accepts a connection is the kernel's choice: requests are opened
    until both workers are known (from the first line of each answer) to
    have one in flight.
    """
    server, port = startWorkers(
        twistd, receiver, "--status-interval", "0.2", "--drain-timeout", "30"
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
    receiver.expect(
        lambda m: f"; {count} in flight;" in m.get("STATUS", ""), timeout=20
    )
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


def test_workersDyingAtStartFailTheService(
    twistd: Any, receiver: NotifyReceiver
) -> None:
    """
    An application that the master imports but no worker can: the workers
    keep exiting at start, and the service fails.
    """
    server = twistd(
        ["--port", f"tcp:{freePort()}:interface=127.0.0.1", "--workers", "2"]
        + ["--wsgi", "workeronlyfails.app"],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    assert server.wait(120) == 1
    failed = receiver.expect(lambda m: m.get("STATUS", "").startswith("Failed: "))
    assert "workers keep exiting at start (5 in a row)" in failed["STATUS"]
    assert "does not start in a worker" in failed["STATUS"]
    assert receiver.values("READY") == []


@pytest.mark.parametrize(
    "app, first",
    [
        (
            "nosuch.app",
            "twistd sdweb: --wsgi 'nosuch.app': no module named 'nosuch'",
        ),
        (
            "brokenapp.app",
            "twistd sdweb: --wsgi 'brokenapp.app': importing 'brokenapp' failed:",
        ),
    ],
)
def test_brokenApplicationFailsStartAtOnce(
    twistd: Any, receiver: NotifyReceiver, app: str, first: str
) -> None:
    """
    The master imports the application before any worker starts: one that
    cannot be imported ends start-up at once with the lines one process
    prints, no worker is started, and it takes no longer than one process
    takes to fail the same way (about 1 s on an idle machine; a loaded
    machine slows both alike).
    """

    def fails(*args: str) -> tuple[float, Any]:
        started = time.monotonic()
        server = twistd(
            ["--port", f"tcp:{freePort()}:interface=127.0.0.1", *args]
            + ["--wsgi", app],
            processEnv(NOTIFY_SOCKET=receiver.path),
        )
        assert server.wait(30) == 1
        return time.monotonic() - started, server

    single, alone = fails()
    elapsed, server = fails("--workers", "2")
    output = server.output()
    lines = output.strip().splitlines()
    assert lines == alone.output().strip().splitlines()
    assert lines[0].startswith(first), lines
    if app == "nosuch.app":
        assert len(lines) == 1, lines
    assert "started worker" not in output
    assert TRACEBACK not in output
    # As one process: nothing for systemd but the exit status.
    assert receiver.receiveAvailable() == []
    print(f"{app}: one process {single:.2f}s, --workers 2 {elapsed:.2f}s")
    assert elapsed < single + 1.0, (single, elapsed)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--workers", "0"], "--workers wants a whole number >= 1"),
        (["--workers", "two"], "--workers wants a whole number >= 1"),
        (["--workers", "2", "--port", "ssl:0"], "cannot read TLS key file"),
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
            and m.get("STATUS", "").startswith("2/2 workers")
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


@pytest.mark.parametrize("grace", ["0", "30"])
def test_secondSigtermForces(twistd: Any, receiver: NotifyReceiver, grace: str) -> None:
    """
    A second SIGTERM, during the drain or during the health grace, has the
    workers abort what is left at once (not after their own grace, nor the
    master's SIGKILL 5 s later); the last status line and the exit status
    say so.
    """
    server, port = startWorkers(
        twistd, receiver, "--status-interval", "0.2", "--health-grace", grace
    )
    answers: list[bytes | Exception] = []

    def slow() -> None:
        try:
            answers.append(get(port, "/slow?s=60", timeout=60))
        except Exception as e:  # noqa: BLE001 - the expected outcome
            answers.append(e)

    client = threading.Thread(target=slow)
    client.start()
    receiver.expect(lambda m: "; 1 in flight;" in m.get("STATUS", ""), timeout=20)
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", "1", timeout=10)
    forced = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STATUS", "Stopping now: aborting what is left", timeout=10)
    # The exit status and the last status line say what happened; the
    # aborted request is not counted as served.
    assert server.wait(30) == 1
    assert time.monotonic() - forced < 5.0
    client.join(30)
    assert len(answers) == 1 and isinstance(answers[0], Exception)
    served = len([a for a in answers if isinstance(a, bytes)])
    assert served == 0
    assert receiver.values("STATUS")[-1] == (
        "Stopped: 0 request(s) served; stop forced, 1 aborted"
    )


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


def healthOfEachWorker(
    port: int, workers: set[int], seconds: float = 30
) -> dict[int, int]:
    """
    Each worker's answer to C{/healthz}: on one keep-alive connection (one
    worker), C{/} says which worker it is, then C{/healthz} is asked; new
    connections until every worker in C{workers} has answered.
    """
    found: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    while set(found) != workers and time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/")
            pid = pidOf(connection.getresponse().read())
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            found.setdefault(pid, response.status)
        finally:
            connection.close()
    assert set(found) == workers, (found, workers)
    return found


def test_healthWithWorkers(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    --health with workers: every worker answers with the service's state:
    200 from each while serving; on SIGTERM, 503 from each at once while the
    site still serves for the grace.
    """
    import json

    server, port = startWorkers(
        twistd, receiver, "--health", "/healthz", "--health-grace", "30"
    )
    workers = childPids(server.process.pid)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
        assert r.status == 200
        assert json.loads(r.read())["state"] == "ready"
    assert healthOfEachWorker(port, workers) == dict.fromkeys(workers, 200)
    server.process.send_signal(signal.SIGTERM)
    stopping = receiver.expect("STOPPING", timeout=30)
    # systemd waits for the grace and the drain.
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) >= (30 + 30) * 1_000_000
    # The master tells the workers over their pipes: a moment.
    waitUntil(
        lambda: set(healthOfEachWorker(port, workers).values()) == {503}, timeout=10
    )
    assert pidOf(get(port, "/")) in workers
    server.process.send_signal(signal.SIGTERM)  # skip the grace
    assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    assert TRACEBACK not in server.output()


def healthPortStatus(port: int) -> tuple[int, dict[str, Any]]:
    """
    The status and JSON body of GET /healthz on a health port.
    """
    import json

    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/healthz", timeout=30
        ) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def agentLine(port: int) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        data = b""
        while chunk := s.recv(100):
            data += chunk
    return data


def test_healthAndAgentPortsWithWorkers(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    --health-port and --agent-port with two workers, answered by the master
    for the whole service: 200 / "up ready" while serving and through a
    reload; on SIGTERM, 503 / "drain" at once while the workers serve on
    through the grace; the ports close when the drain starts.
    """
    healthPort, agentPort = freePort(), freePort()
    server, port = startWorkers(
        twistd,
        receiver,
        "--health-port",
        f"tcp:{healthPort}:interface=127.0.0.1",
        "--agent-port",
        f"tcp:{agentPort}:interface=127.0.0.1",
        "--health-grace",
        "3",
        "--status-interval",
        "0.2",
    )
    status, body = healthPortStatus(healthPort)
    assert (status, body["state"], body["workers"]) == (200, "ready", 2)
    assert agentLine(agentPort) == b"up ready\n"
    seen = len(receiver.receiveAvailable())
    server.process.send_signal(signal.SIGHUP)
    receiver.expect("RELOADING", "1", timeout=10, after=seen)
    during: set[int] = set()
    while not any(m.get("READY") == "1" for m in receiver.messages[seen:]):
        during.add(healthPortStatus(healthPort)[0])
        assert agentLine(agentPort) == b"up ready\n"
        receiver.receiveAvailable()
    assert during == {200}, during
    slow = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    slow.request("GET", "/slow?s=8")
    waitUntil(lambda: healthPortStatus(healthPort)[1]["inFlight"] == 1, timeout=20)
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", timeout=30)
    status, body = healthPortStatus(healthPort)
    assert (status, body["state"]) == (503, "draining")
    assert agentLine(agentPort) == b"drain\n"
    assert pidOf(get(port, "/")) in childPids(server.process.pid)
    # After the grace, the drain: every port closes, the slow request
    # finishes.
    waitUntil(lambda: not portAnswers(healthPort), timeout=20)
    assert not portAnswers(agentPort) and not portAnswers(port)
    assert server.process.poll() is None
    response = slow.getresponse()
    assert response.status == 200 and response.read().startswith(b"pid ")
    assert server.wait(timeout=60) == -signal.SIGTERM
    assert TRACEBACK not in server.output()


def curlPid(port: int, *options: str, path: str = "/") -> tuple[int, str]:
    """
    GET C{path} over TLS with curl: the pid that answered, and the HTTP
    version curl spoke.
    """
    from test_tls import curl

    out, err = curl(port, path, *options).communicate(timeout=60)
    body, _, last = out.rpartition(b"\n")
    code, version = last.decode().split()
    assert code == "200", (out, err)
    return pidOf(body.strip()), version


def startTLSWorkers(
    twistd: Any, receiver: NotifyReceiver, ports: list[str], *args: str
) -> Any:
    server = twistd(
        [*ports, "--workers", "2", "--class", "pidapp.Pid", *args],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=60)
    return server


@pytest.mark.parametrize("how", ["ssl", "https"])
def test_tlsAndHTTP2ThroughWorkers(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path, how: str
) -> None:
    """
    An C{ssl:} port (or C{--https}) with two workers: curl with its default
    ALPN (which picks HTTP/2), with C{--http2} and with C{--http1.1} reaches
    both workers; the master never serves.
    """
    from test_tls import makeCertificate

    key, cert = makeCertificate(tmp_path)
    port = freePort()
    if how == "ssl":
        ports = ["--port", f"ssl:{port}:privateKey={key}:certKey={cert}"]
    else:
        ports = [
            "--https",
            str(port),
            "--privkey",
            str(key),
            "--certificate",
            str(cert),
        ]
    server = startTLSWorkers(twistd, receiver, ports)
    workers = childPids(server.process.pid)
    assert len(workers) == 2
    for options, version in [((), "2"), (("--http2",), "2"), (("--http1.1",), "1.1")]:
        seen: set[int] = set()
        deadline = time.monotonic() + 30
        while seen != workers and time.monotonic() < deadline:
            pid, spoken = curlPid(port, *options)
            assert spoken == version
            seen.add(pid)
        assert seen == workers, (options, seen, workers)
    server.process.send_signal(signal.SIGTERM)
    assert server.wait(60) == -signal.SIGTERM
    assert TRACEBACK not in server.output()


def test_http2DrainsWithGoAwayInWorkers(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    SIGTERM to the master while curl waits on an HTTP/2 stream served by a
    worker: curl hears GOAWAY, the response arrives whole.
    """
    from test_tls import curl, makeCertificate

    key, cert = makeCertificate(tmp_path)
    port = freePort()
    server = startTLSWorkers(
        twistd,
        receiver,
        ["--port", f"ssl:{port}:privateKey={key}:certKey={cert}"],
        "--status-interval",
        "0.1",
    )
    client = curl(port, "/slow?s=2", "--http2", "-v")
    receiver.expect(lambda m: "; 1 in flight;" in m.get("STATUS", ""), timeout=20)
    server.process.send_signal(signal.SIGTERM)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    body, _, last = out.rpartition(b"\n")
    assert body.startswith(b"pid ") and last == b"200 2", out
    assert b"GOAWAY" in err
    assert server.wait(60) == -signal.SIGTERM
    assert receiver.values("STATUS")[-1] == "Stopped: 1 request(s) served"


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing-key", "cannot read TLS key file {dir}/nokey.pem: No such file"),
        ("mismatch", "TLS certificate {dir}/other.crt does not go with the key"),
    ],
)
def test_badTLSPortWithWorkersOneLine(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path, case: str, words: str
) -> None:
    """
    The master checks the key and certificate before any worker starts,
    with the one-line errors of one process.
    """
    from test_tls import makeCertificate

    key, cert = makeCertificate(tmp_path)
    options = {
        "missing-key": f"privateKey={tmp_path}/nokey.pem:certKey={cert}",
        "mismatch": f"privateKey={key}:certKey={makeCertificate(tmp_path, 'other')[1]}",
    }[case]
    server = twistd(
        ["--workers", "2", "--port", f"ssl:{freePort()}:{options}"],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    assert server.wait(timeout=30) == 1
    lines = server.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("twistd sdweb: " + words.format(dir=tmp_path)), lines


def refusedWithin(port: int, seconds: float) -> float:
    """
    How long until a new connection to C{port} is refused (at most
    C{seconds}, else the test fails).
    """
    import socket

    started = time.monotonic()
    while time.monotonic() - started < seconds:
        with socket.socket() as s:
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", port))
            except ConnectionRefusedError:
                return time.monotonic() - started
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"port {port} still accepted after {seconds}s")


def test_stopRefusesNewConnectionsAtOnce(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    SIGTERM with a slow request in flight: the master closes its socket
    when the drain starts and the workers theirs, so a new connection is
    refused within a second, as with one process, while the slow request
    still completes.
    """
    server, port = startWorkers(
        twistd, receiver, "--status-interval", "0.2", "--drain-timeout", "30"
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/slow?s=4")
    receiver.expect(lambda m: "; 1 in flight;" in m.get("STATUS", ""), timeout=20)
    seen = len(receiver.receiveAvailable())
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", "1", timeout=10, after=seen)
    assert refusedWithin(port, 1.0) < 1.0
    response = connection.getresponse()
    assert response.status == 200 and response.read().startswith(b"pid ")
    assert server.wait(60) == -signal.SIGTERM
    assert receiver.values("STATUS")[-1] == "Stopped: 1 request(s) served"


def test_reloadWaitsForALongRequest(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    A request that takes longer than the heartbeat limit, in flight on an
    old worker when a reload replaces it: the old worker drains and goes on
    reporting (its counts, its heartbeat), so it is not killed as hung, and
    the request gets its answer.
    """
    server, port = startWorkers(twistd, receiver, "--status-interval", "0.2")
    before = childPids(server.process.pid)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/slow?s=7")
    receiver.expect(lambda m: "; 1 in flight;" in m.get("STATUS", ""), timeout=20)
    seen = len(receiver.receiveAvailable())
    server.process.send_signal(signal.SIGHUP)
    receiver.expect("READY", "1", timeout=60, after=seen)
    # The draining worker's request is still counted as in flight.
    receiver.expect(
        lambda m: "; 1 in flight;" in m.get("STATUS", ""), timeout=10, after=seen
    )
    response = connection.getresponse()
    assert response.status == 200
    assert pidOf(response.read()) in before
    assert "silent for" not in server.output()
    assert server.process.poll() is None
