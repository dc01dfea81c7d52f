"""
The access log of a real C{twistd -n sdweb} under load from wrk, across a
stop: every request served is in it by the time the process exits.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from conftest import need
from test_twistd import TRACEBACK, startServer

from txsdnotify.testing import NotifyReceiver


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
