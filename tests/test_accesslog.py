"""
The access log of a real C{twistd -n sdweb} under load from wrk, across a
stop: every request served is in it by the time the process exits.  A log
file that cannot be opened ends start-up in one line naming it; the log is
never rotated by size.  Without C{--logfile} the lines are in twistd's log,
as Twisted's Site writes them, the same on both HTTP paths, in order with
the other log lines, also at a forced stop, and in twistd's own
C{--logfile} when it has one.
"""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    HTTP_PARSERS,
    freePort,
    need,
    portAnswers,
    processEnv,
    twistdCommand,
    waitUntil,
)
from test_twistd import TRACEBACK, startServer

from txsdnotify.cli.tap import Options, makeSite
from txsdnotify.testing import NotifyReceiver
from txsdnotify.web.accesslog import openAccessLog


def totalRequests(status: str) -> int:
    """
    The count in a status line such as C{Total requests: 7; ...}.
    """
    found = re.search(r"Total requests: (\d+)", status)
    assert found, status
    return int(found.group(1))


def test_everyRequestLoggedAcrossStop(
    twistd: Any, receiver: NotifyReceiver, httpParser: str, tmp_path: Path
) -> None:
    wrk = need("wrk")
    log = tmp_path / "access.log"
    server, port = startServer(
        twistd,
        receiver,
        "--wsgi",
        "slowapp.wsgi",
        "--http-parser",
        httpParser,
        "--logfile",
        str(log),
        "--status-interval",
        "0.1",
    )
    load = subprocess.Popen(
        [wrk, "-t2", "-c200", "-d6s", f"http://127.0.0.1:{port}/slow?s=0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    receiver.expect(
        lambda m: (
            totalRequests(m.get("STATUS", "x: 0")) >= 300
            if "Total requests" in m.get("STATUS", "")
            else False
        ),
        timeout=30,
    )
    server.process.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == -signal.SIGTERM
    out, _ = load.communicate(timeout=60)
    served = re.search(r"(\d+) requests in", out)
    assert served, out
    final = receiver.values("STATUS")[-1]
    total = re.match(r"Stopped: (\d+) request\(s\) served", final)
    assert total, final
    lines = log.read_text().splitlines()
    # Every request the server counted is logged, and every response wrk
    # got was counted.
    assert len(lines) == int(total.group(1))
    assert len(lines) >= int(served.group(1))
    assert all('"GET /slow?s=0.05 HTTP/1.1" 200 ' in line for line in lines)
    assert TRACEBACK not in server.output()


@pytest.mark.parametrize("workers", [1, 2])
def test_unopenableLogfileOneLine(
    twistd: Any, receiver: NotifyReceiver, workers: int
) -> None:
    """
    --logfile in a directory that does not exist: start-up ends with one
    line naming the file, before any port is bound (nothing says a port
    failed, no ERRNO= for one).
    """
    port = freePort()
    server = twistd(
        [
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--workers",
            str(workers),
            "--logfile",
            "/nonexistent/x",
        ],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    assert server.wait(timeout=30) == 1
    lines = server.output().strip().splitlines()
    assert lines == [
        "twistd sdweb: cannot open the access log /nonexistent/x:"
        " No such file or directory"
    ]
    assert receiver.receiveAvailable() == []
    assert not portAnswers(port)


def test_accessLogNotRotatedBySize(tmp_path: Path) -> None:
    """
    3 MB of access log stay in the one file (Twisted's Site would have
    started access.log.1 at 1 MB): rotation is logrotate's, with a reload.
    """
    path = tmp_path / "access.log"
    config = Options(environ={})
    config.parseOptions(["--logfile", str(path)])
    site = makeSite(config)
    site.startFactory()
    line = "x" * 999 + "\n"
    for _ in range(3000):
        site.logFile.write(line)
    site.stopFactory()
    assert [p.name for p in tmp_path.iterdir()] == ["access.log"]
    assert path.stat().st_size == 3_000_000


def test_logfileDashMeansTwistdsLog(tmp_path: Path) -> None:
    """
    --logfile - writes no file named "-": the access lines go to twistd's
    log (the journal, under systemd), as without --logfile.
    """
    config = Options(environ={})
    config.parseOptions(["--logfile", "-"])
    site = makeSite(config)
    assert site.logPath is None
    assert type(site).__name__ == "Site"


def test_processesAppendToOneLog(tmp_path: Path) -> None:
    """
    Two access logs open on one file (two workers' sites) write every line,
    none over another's: the file is opened for appending.  This also fails
    if Twisted changes how L{LogFile} opens its file (C{_openFile}, C{_file}).
    """
    path = tmp_path / "access.log"
    path.write_bytes(b"old line\n")
    first, second = openAccessLog(str(path)), openAccessLog(str(path))
    for i in range(100):
        first.write(f"first {i}\n")
        second.write(f"second {i}\n")
    first.close()
    second.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 201
    assert lines[0] == "old line"
    assert sorted(lines[1:]) == sorted(
        [f"first {i}" for i in range(100)] + [f"second {i}" for i in range(100)]
    )


TWISTD_ACCESS_LINE = (
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[{system}\]"
    r' "127\.0\.0\.1" - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] (.*)'
)
"""
An access line in twistd's log (C{twistd -n}): twistd's timestamp, the
system Twisted's Site logs with, the combined format; the group is what
follows the date.
"""

REQUESTS = [
    ("/", {}),
    ("/block?s=0", {}),
    (
        '/missing?q="x"',
        {"Referer": "http://example.com/\\", "User-Agent": "agent \xe9"},
    ),
]

EXPECTED = [
    '"GET / HTTP/1.1" 200 6 "-" "-"',
    "wsgiapps: blocking now",
    '"GET /block?s=0 HTTP/1.1" 200 10 "-" "-"',
    '"GET /missing?q=\\"x\\" HTTP/1.1" 404 10 "http://example.com/\\\\" "agent \\xe9"',
]
"""
What twistd's log holds for L{REQUESTS}, in order, after the dates: the
application's own log line (from its thread, through C{wsgi.errors}) between
the access lines of the requests before and after it.
"""


ONE_PROCESS = r"twisted\.python\.log#info"
"""The system of an access line in one process's log."""

A_WORKER = r"sdweb worker \d+"
"""The system of a worker's access line in the master's log."""


def served(output: str, system: str = ONE_PROCESS) -> list[str]:
    """
    The access lines (after their date) and the application's lines in
    twistd's log C{output}, in order; an access line's system (in brackets)
    matches the pattern C{system}.
    """
    pattern = re.compile(TWISTD_ACCESS_LINE.replace("{system}", system))
    found = []
    for line in output.splitlines():
        access = pattern.fullmatch(line)
        if access:
            found.append(access.group(1))
        elif "wsgiapps:" in line:
            found.append(line[line.index("wsgiapps:") :])
        else:
            assert "twisted.python.log#" not in line, line
    return found


def request(port: int, path: str, headers: dict[str, str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        connection.getresponse().read()
    finally:
        connection.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_accessLinesInTwistdsLog(twistd: Any, workers: int) -> None:
    """
    Without --logfile, each request is a line of twistd's log (standard
    output under twistd -n) exactly as Twisted's Site writes it there, in
    order with the application's own log lines, and the same on both HTTP
    paths; with --workers 2, in the master's log, each worker's line under
    its own system.
    """
    logs = {}
    for parser in HTTP_PARSERS:
        fresh = NotifyReceiver()
        try:
            server, port = startServer(
                twistd,
                fresh,
                "--wsgi",
                "wsgiapps.app",
                "--http-parser",
                parser,
                "--workers",
                str(workers),
            )
            for path, headers in REQUESTS:
                request(port, path, headers)
            server.process.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == -signal.SIGTERM
        finally:
            fresh.close()
        system = ONE_PROCESS if workers == 1 else A_WORKER
        logs[parser] = served(server.output(), system)
        server.stop()
        server.log.rename(server.log.with_suffix(f".{parser}"))
    assert logs["fast"] == logs["twisted"] == EXPECTED


def test_accessLinesInTwistdsLogfile(tmp_path: Path, receiver: NotifyReceiver) -> None:
    """
    twistd's own --logfile (before the subcommand) gets the access lines, in
    twistd's format, and the standard output none.
    """
    port = freePort()
    log = tmp_path / "twistd.log"
    with open(tmp_path / "output", "wb") as out:
        server = subprocess.Popen(
            twistdCommand()
            + ["-n", "--pidfile=", "--logfile", str(log), "sdweb"]
            + ["--port", f"tcp:{port}:interface=127.0.0.1", "--wsgi", "wsgiapps.app"],
            env=processEnv(NOTIFY_SOCKET=receiver.path),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            receiver.expect("READY", timeout=30)
            for path, headers in REQUESTS:
                request(port, path, headers)
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == -signal.SIGTERM
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    assert served(log.read_text()) == EXPECTED
    assert "GET" not in (tmp_path / "output").read_text()


@pytest.mark.parametrize("parser", HTTP_PARSERS)
def test_accessLineAtForcedStop(
    twistd: Any, receiver: NotifyReceiver, parser: str
) -> None:
    """
    A request stuck in the application when a second SIGTERM forces the
    stop: the process exits without waiting for its thread, and the access
    line of the aborted request (499) is in twistd's log, after the others.
    """
    server, port = startServer(
        twistd,
        receiver,
        "--wsgi",
        "wsgiapps.app",
        "--http-parser",
        parser,
        "--drain-timeout",
        "60",
    )
    request(port, "/", {})
    stuck = socket.create_connection(("127.0.0.1", port), timeout=30)
    stuck.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
    waitUntil(lambda: "wsgiapps: blocking now" in server.output(), timeout=30)
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", timeout=10)
    server.process.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == -signal.SIGTERM
    stuck.close()
    assert "stop forced" in server.output()
    assert served(server.output()) == [
        '"GET / HTTP/1.1" 200 6 "-" "-"',
        "wsgiapps: blocking now",
        '"GET /block HTTP/1.1" 499 - "-" "-"',
    ]
