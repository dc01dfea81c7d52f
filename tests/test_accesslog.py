"""
The access log of a real C{twistd -n sdweb} under load from wrk, across a
stop: every request served is in it by the time the process exits.  A log
file that cannot be opened ends start-up in one line naming it; the log is
never rotated by size.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import freePort, need, portAnswers, processEnv
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
