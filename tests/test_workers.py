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
from txsdnotify.workers.pool import backoff, workerEnvironment

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
    # Only what was in flight on the killed worker may fail: the load has
    # one request in flight per client thread (4), each ended by a reset.
    assert failed <= 4, counts
    for error in counts["errors"]:  # type: ignore[attr-defined]
        assert "status" not in error, counts
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
        mark = len(server.output().splitlines())
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
    # One at a time: an old worker begins to drain (its own log line) only
    # after the master heard one more new worker say it is ready.
    steps = []
    for line in server.output().splitlines()[mark:]:
        steps += [("ready", p) for p in after if f"sdweb: worker {p} ready" in line]
        steps += [
            ("drains", p)
            for p in before
            if f"[sdweb worker {p}] sdweb stopping" in line
        ]
    assert sorted(steps) == sorted(
        [("ready", p) for p in after] + [("drains", p) for p in before]
    ), steps
    newReady = oldDraining = 0
    for kind, _ in steps:
        newReady += kind == "ready"
        oldDraining += kind == "drains"
        assert oldDraining <= newReady, steps


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
    fast = server.output().count("(WSGI on the fast HTTP/1.1 path)")
    assert fast == (2 if "fast" in served else 0)


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
        (["--workers", "2", "--worker-timeout", "0"], "--worker-timeout wants"),
        (["--workers", "2", "--worker-timeout", "soon"], "--worker-timeout wants"),
        (["--workers", "2", "--max-requests", "-1"], "--max-requests wants"),
        (["--workers", "2", "--max-requests-jitter", "x"], "--max-requests-jitter"),
        (["--workers", "2", "--max-worker-memory", "1.5"], "--max-worker-memory"),
        (["--max-requests", "1000"], "--max-requests needs --workers N"),
        (["--worker-timeout", "5"], "--worker-timeout needs --workers N"),
        (["--max-worker-memory", "500"], "--max-worker-memory needs --workers"),
    ],
)
def test_badWorkerOptions(twistd: Any, args: list[str], words: str) -> None:
    server = twistd(args)
    assert server.wait(timeout=30) == 1
    lines = server.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert words in lines[0]


def test_workerEnvironmentScrubbed() -> None:
    env = workerEnvironment(
        {
            "NOTIFY_SOCKET": "/x",
            "WATCHDOG_USEC": "1",
            "WATCHDOG_PID": "1",
            "LISTEN_FDS": "1",
            "LISTEN_PID": "1",
            "FDSTORE": "16",
            "A": "b",
        }
    )
    assert env == {"A": "b"}


def test_backoff() -> None:
    assert [backoff(n) for n in range(9)] == [0, 0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff(1000) == 30


def test_hungWorkerReplaced(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    A worker that stops (SIGSTOP: nothing runs in it) is killed once it has
    been silent for --worker-timeout, not before and not much later.
    """
    server, port = startWorkers(
        twistd, receiver, "--status-interval", "0.2", "--worker-timeout", "2"
    )
    master = server.process.pid
    workers = childPids(master)
    hung = min(workers)
    os.kill(hung, signal.SIGSTOP)
    stopped = time.monotonic()
    waitUntil(lambda: hung not in childPids(master), timeout=30, interval=0.02)
    took = time.monotonic() - stopped
    # Its last report may have come up to one report interval (0.1 s)
    # before the SIGSTOP; the master looks every interval.
    assert 1.8 <= took <= 4.5, took
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
        processEnv(NOTIFY_SOCKET=receiver.path, WATCHDOG_USEC="2000000", FDSTORE="16"),
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
        assert names & {b"PATH", b"PYTHONPATH"} == {b"PATH", b"PYTHONPATH"}
        assert not names & {
            b"NOTIFY_SOCKET",
            b"WATCHDOG_USEC",
            b"LISTEN_FDS",
            b"FDSTORE",
        }
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
    try:
        assert server.wait(30) == 1
        assert time.monotonic() - forced < 5.0
    except AssertionError:
        raise AssertionError(server.output()) from None
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


def test_healthWithWorkers(
    twistd: Any, receiver: NotifyReceiver, served: list[str]
) -> None:
    """
    --health with workers: every worker answers with the service's state:
    200 from each while serving; on SIGTERM, 503 from each at once while the
    site still serves for the grace.
    """
    import json

    server, port = startWorkers(
        twistd, receiver, "--health", "/healthz", "--health-grace", "30", served=served
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


def flipApp(tmp_path: Path) -> tuple[Path, Path]:
    """
    A copy of pidapp, as C{flipapp}, in a folder of its own (to be put on
    --pythonpath), that a test can break before a reload.
    """
    site = tmp_path / "site"
    site.mkdir()
    app = site / "flipapp.py"
    app.write_text((APPS / "pidapp.py").read_text())
    return site, app


def test_brokenReloadKeepsOldWorkersAndBacksOff(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    A reload into code that no longer imports keeps the old workers; a
    worker that dies afterwards is restarted with a growing back-off while
    the other serves (degraded, not failed); once no worker can serve, the
    service gives up.
    """
    site, app = flipApp(tmp_path)
    server, port = startWorkers(
        twistd,
        receiver,
        "--status-interval",
        "0.2",
        "--pythonpath",
        str(site),
        "--class",
        "flipapp.Pid",
    )
    master = server.process.pid
    before = childPids(master)
    assert len(before) == 2
    app.write_text("raise RuntimeError('flipapp is broken now')\n")
    seen = len(receiver.receiveAvailable())
    server.process.send_signal(signal.SIGHUP)
    ready = receiver.expect("READY", "1", timeout=60, after=seen)
    assert "Reload failed" in ready["STATUS"]
    # The old workers, and only they, serve on.
    assert childPids(master) == before
    assert Client(port).servingPids(before) == before

    victim, survivor = sorted(before)
    started = server.output().count("sdweb: started worker")
    seen = len(receiver.receiveAvailable())
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    degraded = receiver.expect(
        lambda m: (
            "degraded: 1 of 2 workers; replacement failing: " in m.get("STATUS", "")
        ),
        timeout=30,
        after=seen,
    )
    assert "flipapp" in degraded["STATUS"]
    # The survivor answers every request meanwhile.
    while time.monotonic() < killed + 20:
        assert pidOf(get(port)) == survivor
        time.sleep(0.1)
    attempts = server.output().count("sdweb: started worker") - started
    # 0.5, 1, 2, 4, 8 s apart (plus each import): not once a second.
    assert 2 <= attempts <= 6, attempts
    assert receiver.values("STOPPING") == []
    assert server.process.poll() is None

    os.kill(survivor, signal.SIGKILL)
    failing = receiver.expect(
        lambda m: m.get("STATUS", "").startswith("Failing: "), timeout=60
    )
    assert "workers keep exiting at start" in failing["STATUS"]
    receiver.expect("STOPPING", "1", timeout=30)
    assert server.wait(60) == 1


def test_slowRenderOutlivesTheDefaultTimeout(
    twistd: Any, receiver: NotifyReceiver
) -> None:
    """
    A worker blocked for 6 s in a synchronous render is not taken for hung
    (the default --worker-timeout is 30 s): the request is answered.
    """
    server, port = startWorkers(twistd, receiver, "--status-interval", "0.2")
    workers = childPids(server.process.pid)
    began = time.monotonic()
    assert pidOf(get(port, "/block?s=6", timeout=60)) in workers
    assert time.monotonic() - began >= 6
    assert childPids(server.process.pid) == workers
    assert "silent for" not in server.output()


def test_workerTimeoutKillsABlockedWorker(
    twistd: Any, receiver: NotifyReceiver
) -> None:
    """
    With --worker-timeout 2, the same render is cut short: the worker is
    killed and replaced.
    """
    server, port = startWorkers(
        twistd, receiver, "--status-interval", "0.2", "--worker-timeout", "2"
    )
    master = server.process.pid
    workers = childPids(master)
    began = time.monotonic()
    with pytest.raises((OSError, http.client.HTTPException)):
        get(port, "/block?s=6", timeout=60)
    assert time.monotonic() - began < 6
    message = receiver.expect(
        lambda m: (
            "1 replaced (last: worker " in m.get("STATUS", "")
            and "killed by signal 9" in m.get("STATUS", "")
            and m.get("STATUS", "").startswith("2/2 workers")
        ),
        timeout=30,
    )
    assert message
    now = childPids(master)
    assert len(now) == 2 and len(now & workers) == 1
    assert "silent for" in server.output()


def test_maxRequestsRecyclesWorkers(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    --max-requests 1000 under 20 s of load: the workers are replaced (each
    new one ready before the old one drains) and no request fails.
    """
    server, port = startWorkers(
        twistd,
        receiver,
        "--status-interval",
        "0.2",
        "--max-requests",
        "1000",
        "--max-requests-jitter",
        "100",
    )
    master = server.process.pid
    first = childPids(master)
    with steadyLoad(f"http://127.0.0.1:{port}/", tmp_path / "stop") as counts:
        loaded = time.monotonic()
        while time.monotonic() < loaded + 20:
            time.sleep(0.2)
        now = childPids(master)
    ok, failed = int(counts["ok"]), int(counts["failed"])  # type: ignore[call-overload]
    assert failed == 0, counts
    assert ok > 2200, counts
    # Two serve; a third and a fourth if a recycling is under way.
    assert 2 <= len(now) <= 4 and not now & first
    output = server.output()
    served = [
        int(line.split(" served ")[1].split()[0])
        for line in output.splitlines()
        if " requests; replacing it" in line
    ]
    assert len(served) >= 2
    assert all(1000 <= n <= 1100 + 200 for n in served), served
    assert "took over; worker" in output
    assert receiver.values("STOPPING") == []
    assert TRACEBACK not in output


def test_maxWorkerMemoryRecyclesALeakingWorker(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    A worker whose resident memory passes --max-worker-memory is replaced
    the same way, losing nothing.
    """
    port = freePort()
    server = twistd(
        ["--port", f"tcp:{port}:interface=127.0.0.1", "--workers", "2"]
        + ["--class", "leakapp.Leak", "--status-interval", "0.2"]
        + ["--max-worker-memory", "80"],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=60)
    master = server.process.pid
    first = childPids(master)
    with steadyLoad(
        f"http://127.0.0.1:{port}/", tmp_path / "stop", threads=2
    ) as counts:
        recycled = receiver.expect(
            lambda m: "; 2 recycled" in m.get("STATUS", ""), timeout=90
        )
    assert recycled
    ok, failed = int(counts["ok"]), int(counts["failed"])  # type: ignore[call-overload]
    assert failed == 0, counts
    assert ok > 100, counts
    assert childPids(master) != first
    assert " MB; replacing it" in server.output()
    assert receiver.values("STOPPING") == []


def test_watchdogOnlyWhileWorkersAnswer(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    The master pings the watchdog only while its workers answer: with every
    worker stopped (SIGSTOP) the pings stop, though the master's own reactor
    runs on; they come back with the workers.
    """
    port = freePort()
    server = twistd(
        ["--port", f"tcp:{port}:interface=127.0.0.1", "--workers", "2"]
        + ["--class", "pidapp.Pid", "--status-interval", "0.2"]
        + ["--worker-timeout", "120"],
        processEnv(NOTIFY_SOCKET=receiver.path, WATCHDOG_USEC="1000000"),
    )
    receiver.expect("READY", timeout=60)
    receiver.expect("WATCHDOG", "1", timeout=10, after=len(receiver.messages))
    workers = childPids(server.process.pid)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        # Reports are 0.1 s apart; a worker late by 2 x 0.1 + 1 s no longer
        # counts as answering.  Pings go every 0.5 s.
        while time.monotonic() < stopped + 2.5:
            time.sleep(0.1)
        quiet = len(receiver.receiveAvailable())
        while time.monotonic() < stopped + 6:
            time.sleep(0.1)
        pinged = [m for m in receiver.receiveAvailable()[quiet:] if "WATCHDOG" in m]
        assert pinged == [], pinged
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    receiver.expect("WATCHDOG", "1", timeout=10, after=len(receiver.messages))
    assert childPids(server.process.pid) == workers


def test_forcedStopKillsAStuckWorker(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    A second SIGTERM has the workers abort what is left; one that cannot
    (blocked in a render) is killed 5 s later, not at the drain timeout.
    """
    server, port = startWorkers(
        twistd, receiver, "--status-interval", "0.2", "--worker-timeout", "120"
    )
    workers = childPids(server.process.pid)
    mark = tmp_path / "blocked"
    answers: list[bytes | Exception] = []

    def blocked() -> None:
        try:
            answers.append(get(port, f"/block?s=90&mark={mark}", timeout=120))
        except Exception as e:  # noqa: BLE001 - the expected outcome
            answers.append(e)

    client = threading.Thread(target=blocked)
    client.start()
    waitUntil(mark.exists, timeout=30)
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", "1", timeout=10)
    server.process.send_signal(signal.SIGTERM)
    forced = time.monotonic()
    receiver.expect("STATUS", "Stopping now: aborting what is left", timeout=10)
    server.wait(60)
    took = time.monotonic() - forced
    assert 4 <= took <= 15, took
    assert not any(_alive(p) for p in workers)
    client.join(30)
    assert len(answers) == 1 and isinstance(answers[0], Exception)


def test_reloadsUnderKeepAliveLoseNothing(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path, served: list[str]
) -> None:
    """
    Reloads under keep-alive load from clients that do not retry
    (http.client, requests back to back on kept-open connections): a
    request arriving on an idle connection of a draining worker is answered
    with Connection: close, so none fails.
    """
    server, port = startWorkers(
        twistd, receiver, "--status-interval", "0.2", served=served
    )
    master = server.process.pid
    with steadyLoad(
        f"http://127.0.0.1:{port}/", tmp_path / "stop", threads=8, keepAlive=True
    ) as counts:
        Client(port).servingPids(childPids(master))
        for _ in range(3):
            before = childPids(master)
            seen = len(receiver.receiveAvailable())
            server.process.send_signal(signal.SIGHUP)
            ready = receiver.expect("READY", "1", timeout=60, after=seen)
            assert "Reload failed" not in ready["STATUS"]
            waitUntil(lambda old=before: not childPids(master) & old, timeout=30)
    ok, failed = int(counts["ok"]), int(counts["failed"])  # type: ignore[call-overload]
    assert ok > 500, counts
    assert failed == 0, counts


def keptAliveOnOneWorker(
    port: int, count: int
) -> tuple[int, list[http.client.HTTPConnection]]:
    """
    C{count} keep-alive connections, each answered once, all by one worker
    (which worker accepts is the kernel's choice): its pid and them.
    """
    byWorker: dict[int, list[http.client.HTTPConnection]] = {}
    for _ in range(100):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/")
        response = connection.getresponse()
        pid = pidOf(response.read())
        assert not response.will_close
        mine = byWorker.setdefault(pid, [])
        mine.append(connection)
        if len(mine) == count:
            for other in byWorker.values():
                if other is not mine:
                    for each in other:
                        each.close()
            return pid, mine
    raise AssertionError(f"no worker took {count} of 100 connections")


def test_replacedWorkerAnswersAnIdleKeepAliveConnection(
    twistd: Any, receiver: NotifyReceiver, served: list[str]
) -> None:
    """
    A worker being replaced keeps its idle keep-alive connections open for
    half the drain timeout (15 s here): a request sent on one 3 s after the
    worker began to drain is answered, with Connection: close, by that
    worker, which then closes the connection (at once, not when the idle
    grace ends); one left idle is closed when the idle grace ends (not at
    the drain timeout).
    """
    server, port = startWorkers(
        twistd, receiver, "--drain-timeout", "30", served=served
    )
    mine, (connection, idle) = keptAliveOnOneWorker(port, 2)
    # Copies of the sockets, which see the worker close them.
    closing, idleClosing = connection.sock.dup(), idle.sock.dup()
    try:
        server.process.send_signal(signal.SIGHUP)
        waitUntil(lambda: f"; worker {mine} drains" in server.output(), timeout=60)
        drains = time.monotonic()
        # Longer than a stop's idle grace (1 s).
        time.sleep(3)
        connection.request("GET", "/")
        response = connection.getresponse()
        assert pidOf(response.read()) == mine
        assert response.getheader("Connection") == "close"
        closing.settimeout(8)
        assert closing.recv(1) == b""
        idleClosing.settimeout(60)
        assert idleClosing.recv(1) == b""
        closed = time.monotonic() - drains
        assert 13 <= closed <= 27, closed
    finally:
        for each in (connection, idle, closing, idleClosing):
            each.close()
    waitUntil(lambda: mine not in childPids(server.process.pid), timeout=30)


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
