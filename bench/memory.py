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
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    HOST,
    BenchError,
    NotifyListener,
    Server,
    addOutArgument,
    describeExits,
    exitOnSigterm,
    makeServers,
    markdownTable,
    runWrk,
    serverEnvironment,
    startAndWait,
    stopServers,
    versionLine,
    writeOut,
)

REQUEST_TIMEOUT = 5.0  # seconds for one request
SETTLE_SECONDS = 3.0  # idle time before each reading (sdweb ticks every 1 s)
BLOCK = 250  # requests per block in the A B B A order
WRK_CONNECTIONS = 50
METRICS = ("VmRSS", "VmHWM", "Pss", "USS")


# --- The servers ---------------------------------------------------------------


@dataclass
class MemoryServer(Server):
    """
    One twistd process under test, with its memory readings by stage.
    """

    readings: dict[str, list[dict[str, int]]] = field(default_factory=dict)


def httpGet(url: str) -> int:
    """
    One C{GET} on a new connection; the body's length.
    """
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT) as response:
        body = response.read()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
    return len(body)


def answers(server: Server) -> str | None:
    """
    A readiness probe: the server answers C{GET /} (else L{OSError}).
    """
    httpGet(server.url)
    return None


def startBoth(servers: Sequence[Server], listener: NotifyListener, cwd: Path) -> None:
    """
    Start both servers and wait until they are ready.
    """
    startAndWait(servers, listener, cwd, answers)
    b = servers[1]
    if listener.mainPid != b.pid:
        raise BenchError(f"READY=1 said MAINPID={listener.mainPid}, not {b.pid}")


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


def measureStage(servers: Sequence[MemoryServer], stage: str, samples: int) -> None:
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


def medianOf(server: MemoryServer, stage: str, metric: str) -> float:
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


# --- Reporting ------------------------------------------------------------------


def mib(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def table(
    servers: Sequence[MemoryServer], stages: Sequence[tuple[str, str]]
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
    table = markdownTable(
        ["Stage", "Measure", "`twistd web` MiB", "`twistd sdweb` MiB",
         "sdweb − web MiB", "sdweb / web"],
        "llrrrr",
        [
            [title, metric, mib(va), mib(vb), mib(vb - va), f"{vb / va:.3f}"]
            for title, metric, va, vb in rows
        ],
    )  # fmt: skip
    return table + f"\n{settings}\n"


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
    addOutArgument(parser)
    args = parser.parse_args(argv)
    if args.requests < 0 or args.wrk_seconds < 0 or args.samples < 1:
        parser.error("counts must not be negative, --samples at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    exitOnSigterm()
    useWrk = args.wrk_seconds > 0 and shutil.which("wrk") is not None
    print(versionLine())
    if args.wrk_seconds > 0 and not useWrk:
        print("wrk is not installed: the wrk stage is skipped")
    stages = [("start", "idle after start")]
    if args.requests:
        stages.append(("requests", f"idle after {args.requests} requests"))
    if useWrk:
        stages.append(
            ("wrk", f"idle after {args.wrk_seconds}s of wrk -c{WRK_CONNECTIONS}")
        )

    servers: list[MemoryServer] = []
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
            servers = makeServers(MemoryServer, base, env, listener.path)
            try:
                startBoth(servers, listener, base)
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

            servers = makeServers(MemoryServer, base, env, listener.path)
            for s in servers:
                print(f"{s.key}: {' '.join(s.argv)}")
            print(f"B: NOTIFY_SOCKET={listener.path}")
            began = time.monotonic()
            startBoth(servers, listener, base)
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
                    w = runWrk(s.url, WRK_CONNECTIONS, args.wrk_seconds, latency=False)
                    failed += w.failed
                    print(
                        f"wrk -t1 -c{WRK_CONNECTIONS} -d{args.wrk_seconds}s on"
                        f" {s.key}: {w.requests} requests, {w.failed} errors"
                    )
                measureStage(servers, "wrk", args.samples)
        except BenchError as e:
            print(f"\nmemory: FAILED: {e}", file=sys.stderr)
            return 2
        finally:
            codes = stopServers(servers, listener)
        assert listener is not None
        print(
            f"sdweb sent {listener.datagrams} datagram(s), {listener.statusMessages}"
            f" with STATUS=; last: {listener.lastStatus}"
        )
        print(describeExits(codes))

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
            f" {versionLine()}."
        )
        writeOut(args.out, markdown(rows, settings))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
