#!/usr/bin/env python3
"""
Memory of an idle ``twistd -n sdweb`` against an idle bare ``twistd -n web``.

Usage::

    python bench/memory.py [--requests N] [--wrk-seconds S] [--samples K]
                           [--out FILE]

Two servers run side by side, each on its own port on 127.0.0.1, each serving
its default page (sdweb its demo page, web Twisted's ``demo.Test``):

* A: ``twistd -n --pidfile= web --listen tcp:PORT:interface=127.0.0.1``
* B: ``twistd -n --pidfile= sdweb --port tcp:PORT:interface=127.0.0.1``, with
  ``NOTIFY_SOCKET`` set to an ``AF_UNIX`` datagram socket that this script
  binds and reads all the time in a background thread, as systemd would, so
  that its ``STATUS=`` loop runs (default ``--status-interval`` of 1 s).

A is ready when its port answers ``GET /``; B once it has sent ``READY=1``
and then its port answers.  Both are started once beforehand and stopped
again, only to compile bytecode: the servers run with ``PYTHONPYCACHEPREFIX``
set to a temporary directory (so that nothing is written into the source
tree), and without that first start B would be measured compiling
txsdnotify from source while A loads Twisted's ready-made ``.pyc`` files.

Memory is read from ``/proc/PID/status`` (``VmRSS``, and ``VmHWM``, the peak
RSS so far) and ``/proc/PID/smaps_rollup`` (``Pss``, and USS =
``Private_Clean`` + ``Private_Dirty``: what the process alone holds) at
three points, each after the servers have been idle for ``SETTLE_SECONDS``
(during which sdweb sends its status ticks), as the median of ``--samples``
readings taken alternately A B B A ...:

1. after start;
2. after ``--requests`` requests (default 2000) to each, made with urllib
   (a new connection each), in blocks of 250 in the order A B B A ...;
3. after ``--wrk-seconds`` (default 5) of ``wrk -t1 -c50`` against each,
   A then B, if wrk is installed (``--wrk-seconds 0`` skips this).

The summary gives each figure for both servers, the difference and the ratio
sdweb / web; ``--out FILE`` also writes it as Markdown.  It also shows how
many ``STATUS=`` messages sdweb sent and its last status line.

Exit status: 0 when the benchmark ran; 1 if a request failed; 2 if a server
failed to start or died.  Only the standard library is used.  When
``txsdnotify`` cannot be imported as installed, the repository root (the
parent of this script's folder) is put on the servers' ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # seconds for a server to become ready
STOP_TIMEOUT = 15.0  # seconds a server gets to exit on SIGTERM
REQUEST_TIMEOUT = 5.0  # seconds for one request
SETTLE_SECONDS = 3.0  # idle time before each reading (sdweb ticks every 1 s)
BLOCK = 250  # requests per block in the A B B A order
WRK_CONNECTIONS = 50
METRICS = ("VmRSS", "VmHWM", "Pss", "USS")
LABELS = {"A": "twistd web", "B": "twistd sdweb"}


class BenchError(Exception):
    """
    Something that makes the benchmark meaningless: exit status 2.
    """


# --- The notification socket --------------------------------------------------


class NotifyListener:
    """
    Binds an C{AF_UNIX} datagram socket and reads it in a background thread,
    as systemd would, counting what sdweb sends.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.ready = threading.Event()
        self.datagrams = 0
        self.statusMessages = 0
        self.lastStatus: str | None = None
        self.mainPid: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def reset(self) -> None:
        """
        Forget what arrived so far (the bytecode warm-up start).
        """
        with self._lock:
            self.ready.clear()
            self.datagrams = self.statusMessages = 0
            self.lastStatus = None
            self.mainPid = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields: dict[str, str] = {}
            for line in data.decode("utf-8", "replace").split("\n"):
                key, sep, value = line.partition("=")
                if sep:
                    fields[key] = value
            with self._lock:
                self.datagrams += 1
                if "STATUS" in fields:
                    self.statusMessages += 1
                    self.lastStatus = fields["STATUS"]
                if fields.get("READY") == "1":
                    if fields.get("MAINPID", "").isdigit():
                        self.mainPid = int(fields["MAINPID"])
                    self.ready.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.sock.close()


# --- The servers ---------------------------------------------------------------


@dataclass
class Server:
    """
    One twistd process under test.
    """

    key: str
    argv: list[str]
    port: int
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    readings: dict[str, list[dict[str, int]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, cwd: Path) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def checkAlive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise BenchError(
                f"{self.key} ({self.label}) exited with status {code}.\n"
                f"  command: {' '.join(self.argv)}\n"
                f"  last lines of its output ({self.log}):\n{tail(self.log)}"
            )

    def stop(self) -> int | None:
        """
        SIGTERM, then SIGKILL if it does not exit in time; the exit status.
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return proc.returncode


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"    (cannot read: {e})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def freePorts(n: int) -> list[int]:
    """
    Distinct TCP ports on 127.0.0.1 that nothing listens on right now.
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def twistdCommand() -> list[str]:
    """
    twistd run by this very interpreter, so that the process measured is
    Python itself (no shell or pyenv shim in between).
    """
    script = Path(sys.executable).parent / "twistd"
    if script.is_file():
        return [sys.executable, str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd';"
        " run()",
    ]


def serverEnvironment(pycache: Path) -> tuple[dict[str, str], str]:
    """
    The environment for both servers, and where txsdnotify comes from.
    """
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if importlib.util.find_spec("txsdnotify") is not None:
        return env, "installed"
    parts = [str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env, f"PYTHONPATH={REPO_ROOT}"


def makeServers(base: Path, env: dict[str, str], notify: Path) -> list[Server]:
    portA, portB = freePorts(2)
    twistd = twistdCommand()
    a = Server(
        "A",
        twistd + ["-n", "--pidfile=", "web",
                  "--listen", f"tcp:{portA}:interface={HOST}"],
        portA,
        base / "web.log",
        env,
    )  # fmt: skip
    b = Server(
        "B",
        twistd + ["-n", "--pidfile=", "sdweb",
                  "--port", f"tcp:{portB}:interface={HOST}"],
        portB,
        base / "sdweb.log",
        dict(env, NOTIFY_SOCKET=str(notify)),
    )  # fmt: skip
    return [a, b]


def httpGet(url: str) -> int:
    """
    One C{GET} on a new connection; the body's length.
    """
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT) as response:
        body = response.read()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
    return len(body)


def waitAnswers(server: Server, deadline: float) -> None:
    last: object = None
    while time.monotonic() < deadline:
        server.checkAlive()
        try:
            httpGet(server.url)
            return
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise BenchError(
        f"{server.key} ({server.label}) did not answer on {server.url} within"
        f" {START_TIMEOUT:.0f}s (last: {last}).\n  last lines of its output"
        f" ({server.log}):\n{tail(server.log)}"
    )


def startAndWait(
    servers: Sequence[Server], listener: NotifyListener, cwd: Path
) -> None:
    """
    Start both servers and wait until they are ready.
    """
    a, b = servers
    for s in servers:
        s.start(cwd)
    deadline = time.monotonic() + START_TIMEOUT
    waitAnswers(a, deadline)
    while not listener.ready.wait(0.1):
        b.checkAlive()
        if time.monotonic() >= deadline:
            raise BenchError(
                f"B ({b.label}) sent no READY=1 within {START_TIMEOUT:.0f}s.\n"
                f"  last lines of its output ({b.log}):\n{tail(b.log)}"
            )
    waitAnswers(b, deadline)
    if listener.mainPid != b.pid:
        raise BenchError(f"READY=1 said MAINPID={listener.mainPid}, not {b.pid}")


def describeExit(code: int | None) -> str:
    """
    An exit status for people.  twistd stops cleanly on SIGTERM and then
    re-raises the signal, so "exited by SIGTERM" is the normal outcome.
    """
    if code is None:
        return "not started"
    if code < 0:
        return f"exited by {signal.Signals(-code).name}"
    return f"exit status {code}"


# --- Memory ---------------------------------------------------------------------


def readMemory(pid: int) -> dict[str, int]:
    """
    VmRSS, VmHWM, Pss and USS of a process, in kB.
    """
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    rollup: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m:
                rollup[m.group(1)] = int(m.group(2))
    values["Pss"] = rollup["Pss"]
    values["USS"] = (
        rollup["Private_Clean"]
        + rollup["Private_Dirty"]
        + rollup.get("Private_Hugetlb", 0)
    )
    return values


def measureStage(servers: Sequence[Server], stage: str, samples: int) -> None:
    """
    Let the servers idle, then read both C{samples} times, A B B A ...
    """
    time.sleep(SETTLE_SECONDS)
    for i in range(samples):
        order = servers if i % 2 == 0 else list(reversed(servers))
        for s in order:
            s.checkAlive()
            s.readings.setdefault(stage, []).append(readMemory(s.pid))
        time.sleep(0.1)


def medianOf(server: Server, stage: str, metric: str) -> float:
    return statistics.median(r[metric] for r in server.readings[stage])


# --- Load -----------------------------------------------------------------------


def requestBlocks(servers: Sequence[Server], count: int) -> dict[str, int]:
    """
    C{count} urllib requests to each server, in blocks of L{BLOCK}, A B B A...
    The failures per server.
    """
    failures = {s.key: 0 for s in servers}
    done = {s.key: 0 for s in servers}
    blocks = -(-count // BLOCK)
    for i in range(blocks):
        order = servers if i % 2 == 0 else list(reversed(servers))
        for s in order:
            n = min(BLOCK, count - done[s.key])
            for _ in range(n):
                try:
                    httpGet(s.url)
                except OSError:
                    failures[s.key] += 1
            done[s.key] += n
    return failures


def runWrk(url: str, seconds: int) -> tuple[int, int]:
    """
    One wrk run; the requests made and the errors it reported.
    """
    argv = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", url]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from None
    if done.returncode != 0:
        raise BenchError(f"wrk failed: {' '.join(argv)}\n{done.stdout}{done.stderr}")
    total = re.search(r"(\d+) requests in", done.stdout)
    errors = sum(
        int(x)
        for x in re.findall(
            r"(?:Non-2xx or 3xx responses:\s+|connect |read |write |timeout )(\d+)",
            done.stdout,
        )
    )
    return (int(total.group(1)) if total else 0), errors


# --- Reporting ------------------------------------------------------------------


def mib(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def table(
    servers: Sequence[Server], stages: Sequence[tuple[str, str]]
) -> list[tuple[str, str, float, float]]:
    """
    (stage, metric, A, B) for every stage and metric.
    """
    a, b = servers
    return [
        (title, metric, medianOf(a, stage, metric), medianOf(b, stage, metric))
        for stage, title in stages
        for metric in METRICS
    ]


def markdown(rows: Sequence[tuple[str, str, float, float]], settings: str) -> str:
    text = (
        "| Stage | Measure | `twistd web` MiB | `twistd sdweb` MiB | sdweb − web MiB"
        " | sdweb / web |\n"
        "|---|---|---:|---:|---:|---:|\n"
    )
    for title, metric, va, vb in rows:
        text += (
            f"| {title} | {metric} | {mib(va)} | {mib(vb)} | {mib(vb - va)}"
            f" | {vb / va:.3f} |\n"
        )
    return text + f"\n{settings}\n"


def versions() -> str:
    try:
        twisted = importlib.metadata.version("twisted")
    except importlib.metadata.PackageNotFoundError:
        twisted = "?"
    return (
        f"Python {platform.python_version()}, Twisted {twisted},"
        f" kernel {platform.release()}, {os.cpu_count()} cores"
    )


# --- Main -----------------------------------------------------------------------


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Memory of idle `twistd web` and `twistd sdweb`, side by side.",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=2000,
        help="urllib requests to each server (default 2000)",
    )
    parser.add_argument(
        "--wrk-seconds",
        type=int,
        default=5,
        help=f"seconds of wrk -c{WRK_CONNECTIONS} per server after that; 0 skips"
        " (default 5)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=5,
        help="readings per server and stage (default 5)",
    )
    parser.add_argument(
        "--out", type=Path, help="also write the summary as Markdown here"
    )
    args = parser.parse_args(argv)
    if args.requests < 0 or args.wrk_seconds < 0 or args.samples < 1:
        parser.error("counts must not be negative, --samples at least 1")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    signal.signal(signal.SIGTERM, _terminate)
    useWrk = args.wrk_seconds > 0 and shutil.which("wrk") is not None
    print(versions())
    if args.wrk_seconds > 0 and not useWrk:
        print("wrk is not installed: the wrk stage is skipped")
    stages = [("start", "idle after start")]
    if args.requests:
        stages.append(("requests", f"idle after {args.requests} requests"))
    if useWrk:
        stages.append(
            ("wrk", f"idle after {args.wrk_seconds}s of wrk -c{WRK_CONNECTIONS}")
        )

    servers: list[Server] = []
    listener: NotifyListener | None = None
    failed = 0
    with tempfile.TemporaryDirectory(prefix="memory.") as tmp:
        base = Path(tmp)
        env, origin = serverEnvironment(base / "pycache")
        print(f"txsdnotify for the servers: {origin}")
        try:
            listener = NotifyListener(base / "notify.sock")
            listener.start()

            began = time.monotonic()
            servers = makeServers(base, env, listener.path)
            try:
                startAndWait(servers, listener, base)
            finally:
                for s in servers:
                    s.stop()
            print(
                "bytecode warm-up: both servers started and stopped once"
                f" ({time.monotonic() - began:.1f}s)"
            )
            # The warm-up's last datagrams are read before the count restarts.
            time.sleep(0.5)
            listener.reset()

            servers = makeServers(base, env, listener.path)
            for s in servers:
                print(f"{s.key}: {' '.join(s.argv)}")
            print(f"B: NOTIFY_SOCKET={listener.path}")
            began = time.monotonic()
            startAndWait(servers, listener, base)
            a, b = servers
            print(
                f"both ready in {time.monotonic() - began:.1f}s: A pid {a.pid} on"
                f" {a.url}; B pid {b.pid} (READY=1, MAINPID={listener.mainPid})"
                f" on {b.url}"
            )

            measureStage(servers, "start", args.samples)
            if args.requests:
                began = time.monotonic()
                failures = requestBlocks(servers, args.requests)
                failed += sum(failures.values())
                print(
                    f"{args.requests} urllib requests to each in blocks of {BLOCK}"
                    f" (A B B A ...) in {time.monotonic() - began:.1f}s; failures:"
                    f" A {failures['A']}, B {failures['B']}"
                )
                measureStage(servers, "requests", args.samples)
            if useWrk:
                for s in servers:
                    total, errors = runWrk(s.url, args.wrk_seconds)
                    failed += errors
                    print(
                        f"wrk -t1 -c{WRK_CONNECTIONS} -d{args.wrk_seconds}s on"
                        f" {s.key}: {total} requests, {errors} errors"
                    )
                measureStage(servers, "wrk", args.samples)
        except BenchError as e:
            print(f"\nmemory: FAILED: {e}", file=sys.stderr)
            return 2
        finally:
            codes = {s.key: s.stop() for s in servers}
            time.sleep(0.3)
            if listener is not None:
                listener.close()
        assert listener is not None
        print(
            f"sdweb sent {listener.datagrams} datagram(s), {listener.statusMessages}"
            f" with STATUS=; last: {listener.lastStatus}"
        )
        print(
            "servers stopped on SIGTERM: "
            + ", ".join(f"{k} {describeExit(c)}" for k, c in codes.items())
        )

    rows = table(servers, stages)
    print()
    print(f"Summary (MiB, median of {args.samples} readings per stage)")
    print(
        f"  {'stage':<32} {'measure':<6} {'web':>8} {'sdweb':>8} {'diff':>7}"
        f" {'ratio':>6}"
    )
    for title, metric, va, vb in rows:
        print(
            f"  {title:<32} {metric:<6} {mib(va):>8} {mib(vb):>8}"
            f" {mib(vb - va):>7} {vb / va:6.3f}"
        )
    print("  ratio: sdweb / web; USS = Private_Clean + Private_Dirty (smaps_rollup)")
    print(f"request failures: {failed}")
    if args.out is not None:
        settings = (
            f"Two idle servers side by side on {HOST}, each serving its default"
            " page; sdweb with a live NOTIFY_SOCKET and its status tick every 1 s"
            " (a STATUS= is sent when the line changes). Medians"
            f" of {args.samples} readings of /proc/PID/status and smaps_rollup per"
            f" stage, taken after {SETTLE_SECONDS:.0f}s idle; requests by urllib"
            f" (a new connection each) in blocks of {BLOCK}, A B B A."
            f" {versions()}."
        )
        args.out.write_text(markdown(rows, settings), encoding="utf-8")
        print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
