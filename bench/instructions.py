"""
Instructions per request of `twistd sdweb` against bare `twistd web`,
counted by valgrind (callgrind), which counts instructions rather than
seconds: the figure does not depend on what the other tenants of a shared
machine are doing.

Each server runs under callgrind twice: once answering N requests and once
N + 1000 (the same 1 KiB static file, over keep-alive connections from a
client outside valgrind).  The difference between the two totals, divided
by 1000, is the cost of one request with start-up and shutdown taken out.
PYTHONHASHSEED is fixed, so that hash randomisation does not move the
figures between runs; what still varies (when the cyclic garbage collector
runs, how requests from the client's threads batch into reactor turns) is
why bench/tracking_instructions.py measures the tracking alone, in-process.  sdweb runs
with a live NOTIFY_SOCKET (a receiver that reads every datagram) and its
status line every second.

    python bench/instructions.py [--requests 2000] [--out FILE]

Needs valgrind (apt-get install valgrind).  Takes a few minutes: Python runs
about 50 times slower under callgrind.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
EXTRA = 1000


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver(threading.Thread):
    """
    A notification socket that reads (and counts) every datagram.
    """

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(path)
        self.socket.settimeout(0.5)
        self.messages: list[bytes] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.messages.append(self.socket.recv(4096))
            except socket.timeout:
                continue
            except OSError:
                return

    def ready(self) -> bool:
        return any(b"READY=1" in m for m in self.messages)


def waitForPort(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise SystemExit(f"instructions: nothing answers on port {port} after {timeout}s")


def load(port: int, count: int, connections: int = 4) -> None:
    """
    C{count} GETs of /page.html over C{connections} keep-alive connections.
    """
    errors: list[str] = []

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(n):
            conn.request("GET", "/page.html")
            response = conn.getresponse()
            if response.status != 200 or len(response.read()) != 1024:
                errors.append(f"status {response.status}")
        conn.close()

    share = [count // connections] * connections
    share[0] += count - sum(share)
    threads = [threading.Thread(target=worker, args=(n,)) for n in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"instructions: {len(errors)} failed requests: {errors[:3]}")


def countInstructions(
    kind: str,
    requests: int,
    work: Path,
    connections: int = 4,
    statusInterval: float = 1.0,
    logfile: bool = False,
) -> int:
    """
    Total instructions of one server run answering C{requests} requests;
    with C{logfile}, the server writes its access log to a file of its own.
    """
    port = freePort()
    out = work / f"callgrind.{kind}.{requests}"
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("NOTIFY_SOCKET", None)
    try:
        import txsdnotify  # noqa: F401
    except ImportError:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), env.get("PYTHONPATH")])
        )
    receiver = None
    if kind == "web":
        args = ["web", "--listen", f"tcp:{port}:interface=127.0.0.1"]
    else:
        args = ["sdweb", "--port", f"tcp:{port}:interface=127.0.0.1"]
        args += ["--status-interval", str(statusInterval)]
        notify = str(work / f"notify.{requests}.sock")
        receiver = Receiver(notify)
        receiver.start()
        env["NOTIFY_SOCKET"] = notify
    if logfile:
        args += ["--logfile", str(work / f"access.{kind}.{requests}.log")]
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        TWISTD,
        "-n",
        "--pidfile=",
        *args,
        "--path",
        str(work / "docroot"),
    ]
    log = open(work / f"{kind}.{requests}.log", "wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        waitForPort(port, 600)
        if receiver is not None:
            deadline = time.monotonic() + 60
            while not receiver.ready() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not receiver.ready():
                raise SystemExit("instructions: sdweb sent no READY=1")
        load(port, requests, connections)
        server.send_signal(signal.SIGTERM)
        server.wait(600)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if receiver is not None:
            receiver.running = False
    text = out.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if not found:
        raise SystemExit(f"instructions: no totals in {out}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--connections",
        type=int,
        default=4,
        help="keep-alive connections of the client (4); with 1, requests never"
        " batch into one reactor turn, which takes away one of the causes of"
        " run-to-run spread",
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=1.0,
        help="sdweb's --status-interval (1); the status line costs per second,"
        " and under valgrind a second holds 50 times fewer requests than at"
        " full speed: 0 leaves only what each request costs",
    )
    parser.add_argument(
        "--logfile",
        action="store_true",
        help="both servers write their access log to a file (--logfile), so"
        " that both do the same logging work: without it, each logs through"
        " twistd's log, and sdweb's access line there costs a sixth of web's",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="instructions-"))
    (work / "docroot").mkdir()
    (work / "docroot" / "page.html").write_bytes(b"x" * 1024)
    n = args.requests
    perRequest = {}
    for kind in ("web", "sdweb"):
        small = countInstructions(
            kind, n, work, args.connections, args.status_interval, args.logfile
        )
        large = countInstructions(
            kind, n + EXTRA, work, args.connections, args.status_interval, args.logfile
        )
        perRequest[kind] = (large - small) / EXTRA
        print(
            f"{kind:6s} {small:>15,} instructions for {n} requests,"
            f" {large:>15,} for {n + EXTRA}: {perRequest[kind]:,.0f} per request",
            flush=True,
        )
    ratio = perRequest["web"] / perRequest["sdweb"]
    extra = perRequest["sdweb"] - perRequest["web"]
    print(
        f"sdweb: {extra:+,.0f} instructions per request"
        f" ({perRequest['sdweb'] / perRequest['web']:.4f} of bare web's);"
        f" requests per instruction, sdweb / web: {ratio:.4f}"
        " (whole servers: see docs/benchmarks.md for why this cannot resolve 1 %;"
        " bench/tracking_instructions.py measures the tracking alone)"
    )
    if args.out:
        args.out.write_text(
            "| Server | Instructions per request | sdweb / web |\n"
            "|---|---:|---:|\n"
            f"| `twistd web` | {perRequest['web']:,.0f} | |\n"
            f"| `twistd sdweb` | {perRequest['sdweb']:,.0f} |"
            f" {perRequest['sdweb'] / perRequest['web']:.4f} |\n\n"
            f"valgrind callgrind; (instructions for {n + EXTRA} requests − for {n})"
            f" / {EXTRA}; PYTHONHASHSEED=0;"
            f" the same 1 KiB static file over {args.connections} keep-alive"
            " connection(s); sdweb with a live NOTIFY_SOCKET and"
            f" --status-interval {args.status_interval:g}. Requests per instruction,"
            f" sdweb / web: {ratio:.4f}.\n"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
