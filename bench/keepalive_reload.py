"""
Reloads of ``twistd -n sdweb --workers 2`` under keep-alive load: what each
kind of client sees.

    python bench/keepalive_reload.py [--client wrk|httpclient|haproxy]
        [--reloads 5] [--connections 16] [--http-parser fast|twisted]

The server serves tests/apps/pidapp.py's resource (``--class pidapp.Pid``,
on twisted.web), or with ``--http-parser`` the same as a WSGI application
(``--wsgi pidapp.wsgi``) on that HTTP path; a notification socket
stands in for systemd, so that each reload (SIGHUP) is waited for until
``READY=1``, and until the old workers are gone, before the next one.  The
clients keep their connections open (HTTP/1.1 keep-alive):

* ``wrk``: wrk, which does not retry; its socket errors and non-2xx answers
  are the failures;
* ``httpclient``: Python's http.client, one connection per thread, requests
  back to back, no retry (a request that fails is counted and the
  connection reopened); ``--think S`` waits up to S seconds, at random,
  between requests, so that connections are idle when a drain begins;
* ``haproxy``: wrk through a real HAProxy (which reuses its connections to
  the server, ``retries 3`` and ``retry-on conn-failure empty-response``,
  or its default with ``--retry-on default``); wrk's failures as above.

Prints one line: the client, the reloads, requests answered, failed, and
the first few errors.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from txsdnotify.testing import NotifyReceiver  # noqa: E402

HOST = "127.0.0.1"


def freePort() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def served(httpParser: str | None) -> list[str]:
    """
    What the workers serve: the resource, or the WSGI application on the
    HTTP path C{httpParser}.
    """
    if httpParser is None:
        return ["--class", "pidapp.Pid"]
    return ["--wsgi", "pidapp.wsgi", "--http-parser", httpParser]


def startServer(
    port: int, receiver: NotifyReceiver, log: Path, app: list[str]
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests" / "apps"), str(REPO)])
    env["NOTIFY_SOCKET"] = receiver.path
    twistd = Path(sys.executable).parent / "twistd"
    server = subprocess.Popen(
        [str(twistd), "-n", "--pidfile=", "sdweb", "--workers", "2"]
        + ["--port", f"tcp:{port}:interface={HOST}", *app],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    receiver.expect("READY", timeout=60)
    return server


def reload(server: subprocess.Popen[bytes], receiver: NotifyReceiver) -> None:
    old = children(server.pid)
    seen = len(receiver.receiveAvailable())
    server.send_signal(signal.SIGHUP)
    ready = receiver.expect("READY", "1", timeout=60, after=seen)
    if "Reload failed" in ready.get("STATUS", ""):
        raise SystemExit(f"reload failed: {ready['STATUS']}")
    deadline = time.monotonic() + 60
    while children(server.pid) & old and time.monotonic() < deadline:
        time.sleep(0.05)


class HTTPClientLoad:
    """
    Threads with one keep-alive connection each, requests back to back.
    """

    def __init__(self, port: int, threads: int, think: float) -> None:
        self.port = port
        self.think = think
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self) -> None:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=30)
        while not self._stop.is_set():
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                body = response.read()
                good = response.status == 200 and body.startswith(b"pid ")
                problem = f"status {response.status}"
            except Exception as e:  # noqa: BLE001 - every failure counts
                good, problem = False, f"{type(e).__name__}: {e}"
                connection.close()
            with self._lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    if len(self.errors) < 5:
                        self.errors.append(problem)
            if self.think:
                time.sleep(random.uniform(0, self.think))
        connection.close()


def startWrk(url: str, connections: int, seconds: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        stdout=subprocess.PIPE,
        text=True,
    )


def wrkCounts(output: str) -> tuple[int, int, str]:
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    failed = 0
    errors = re.search(r"Socket errors: (.*)", output)
    if errors:
        failed += sum(int(n) for n in re.findall(r"\d+", errors.group(1)))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        failed += int(non2xx.group(1))
    said = (errors.group(0) if errors else "") + (
        f" {non2xx.group(0)}" if non2xx else ""
    )
    return total, failed, said.strip()


def startHAProxy(
    tmp: Path, backend: int, retryOn: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = freePort()
    config = tmp / "haproxy.cfg"
    retry = f"    retry-on {retryOn}\n" if retryOn != "default" else ""
    config.write_text(
        f"""\
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
{retry}
frontend web
    bind {HOST}:{port}
    default_backend sdweb

backend sdweb
    server web 127.0.0.1:{backend}
"""
    )
    process = subprocess.Popen(
        ["haproxy", "-f", str(config), "-db"],
        stdout=open(tmp / "haproxy.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                break
        time.sleep(0.05)
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--client", choices=["wrk", "httpclient", "haproxy"], default="wrk"
    )
    parser.add_argument(
        "--retry-on",
        default="conn-failure empty-response",
        help="HAProxy's retry-on ('default': the line left out)",
    )
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="httpclient: wait up to this many seconds (at random) between requests",
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--http-parser",
        choices=["fast", "twisted"],
        default=None,
        help="serve pidapp.wsgi on this HTTP path (default: the pidapp.Pid resource)",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="keepalive-"))
    receiver = NotifyReceiver()
    port = freePort()
    app = served(args.http_parser)
    server = startServer(port, receiver, tmp / "twistd.log", app)
    haproxy = None
    try:
        target = port
        if args.client == "haproxy":
            haproxy, target = startHAProxy(tmp, port, args.retry_on)
        began = time.monotonic()
        if args.client == "httpclient":
            load = HTTPClientLoad(target, args.connections, args.think)
            load.start()
        else:
            # Long enough for the reloads; stopped once they are done.
            wrk = startWrk(f"http://{HOST}:{target}/", args.connections, 600)
        time.sleep(1)
        for _ in range(args.reloads):
            reload(server, receiver)
            time.sleep(0.5)
        if args.client == "httpclient":
            load.stop()
            ok, failed, said = load.ok, load.failed, "; ".join(load.errors)
        else:
            wrk.send_signal(signal.SIGINT)
            out, _ = wrk.communicate(timeout=30)
            total, failed, said = wrkCounts(out)
            ok = total - failed
        seconds = time.monotonic() - began
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait()
        server.terminate()
        server.wait(60)
        receiver.close()
    client = args.client
    if client == "haproxy":
        client += f" (retry-on {args.retry_on})"
    if args.think:
        client += f" (think up to {args.think:g} s)"
    print(
        f"{client} against {' '.join(app)}: {args.reloads} reloads in {seconds:.0f} s,"
        f" {args.connections} keep-alive connections: {ok} answered,"
        f" {failed} failed {said}"
    )


if __name__ == "__main__":
    main()
