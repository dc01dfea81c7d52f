#!/usr/bin/env python3
"""
Compare bare ``twistd -n web`` with ``twistd -n sdweb`` serving the same file.

Usage::

    python bench/compare_web.py [--rounds N] [--duration S] [--connections C]
                                [--out FILE]

Both servers are started once and run for the whole benchmark, each on its
own port on 127.0.0.1, serving the same ~1 KiB file from a temporary
directory:

* A: ``twistd -n --pidfile= web --listen tcp:PORT:interface=127.0.0.1 --path DIR``
* B: ``twistd -n --pidfile= sdweb --port tcp:PORT:interface=127.0.0.1 --path DIR``
  with ``NOTIFY_SOCKET`` set to an ``AF_UNIX`` datagram socket that this script
  binds and reads all the time in a background thread, so that sdweb's
  readiness and its ``STATUS=`` loop (default ``--status-interval`` of 1 s) run
  exactly as under systemd.  The number of ``STATUS`` messages received is
  printed, to show that the loop really ran.

A is ready when its port answers ``GET`` with the file; B when it has sent
``READY=1`` and then its port answers.  Each server is warmed up with a 2 s
wrk run, then measured with ``wrk -t1 -cC -dSs --latency`` in blocks of four
runs in the order A B B A (``--rounds`` blocks, so each server gets
2 x N runs; the default of 3 blocks at 10 s takes about 2.5 minutes).  Around
every run the server's CPU time (utime + stime from ``/proc/PID/stat``) is
read, which gives CPU microseconds per request: on a shared, noisy machine
that is steadier than requests per second, since it hardly depends on how
much CPU the server was given.

The summary gives the median requests/s and CPU us/request of each server,
the ratios B/A, and whether the target "sdweb does at least 0.98 of what bare
twistd web does" is met by each measure (for CPU per request that means
A/B >= 0.98, i.e. B/A <= 1/0.98).  With ``--out FILE`` the summary is also
written to FILE as a small Markdown table.

Exit status: 0 when the benchmark ran (whether or not the target is met); 1 if
any request failed (non-2xx/3xx responses or socket errors reported by wrk);
2 if a server failed to start or died, or wrk could not be run.

Only the standard library is used.  When ``txsdnotify`` cannot be imported as
installed, the repository root (the parent of this script's folder) is put on
the servers' ``PYTHONPATH`` so that the ``sdweb`` plugin is found.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import (
    HOST,
    LABELS,
    BenchError,
    NotifyListener,
    Server,
    WrkResult,
    addOutArgument,
    describeExits,
    exitOnSigterm,
    makeServers,
    markdownTable,
    packageVersion,
    runWrk,
    serverEnvironment,
    startAndWait,
    stopServers,
    writeOut,
)

FILE_NAME = "page.html"
FILE_SIZE = 1024
TARGET = 0.98
WARMUP_SECONDS = 2
SETTLE_SECONDS = 1.0  # pause between runs
ORDER = "ABBA"


# --- The servers --------------------------------------------------------------


def httpGet(port: int, timeout: float = 2.0) -> tuple[int, bytes]:
    """
    C{GET} the file once: the status and the body.
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/" + FILE_NAME)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def servesFile(content: bytes) -> Callable[[Server], str | None]:
    """
    A readiness probe: the server answers C{GET} with the file.
    """

    def probe(server: Server) -> str | None:
        status, body = httpGet(server.port)
        if status == 200 and body == content:
            return None
        return f"HTTP {status}, {len(body)} bytes"

    return probe


# --- Measuring ----------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of a process so far (fields 14 and 15 of
    C{/proc/PID/stat}).
    """
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; the fields after it don't.
    rest = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])  # fields 14, 15
    return (utime + stime) / CLOCK_TICKS


@dataclass
class Run:
    """
    One measured wrk run against one server.
    """

    number: int
    block: int
    key: str
    wrk: WrkResult
    cpu: float  # seconds of server CPU during the run

    @property
    def cpuUsPerRequest(self) -> float:
        return self.cpu * 1e6 / self.wrk.requests if self.wrk.requests else float("nan")

    @property
    def cpuShare(self) -> float:
        """
        Server CPU time over wall time: how much of a core it got.
        """
        return self.cpu / self.wrk.seconds if self.wrk.seconds else float("nan")


def measure(server: Server, connections: int, duration: int) -> tuple[WrkResult, float]:
    """
    One wrk run with the server's CPU time read before and after.
    """
    assert server.proc is not None
    server.checkAlive()
    before = cpuSeconds(server.proc.pid)
    result = runWrk(server.url, connections, duration)
    # Let the server finish the last responses and connection closes.
    time.sleep(0.2)
    server.checkAlive()
    after = cpuSeconds(server.proc.pid)
    return result, after - before


# --- Reporting ----------------------------------------------------------------

ROW = "{:>3} {:>5} {:>2} {:<12} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8} {:>8} {:>6} {:>6}"
HEADER = ROW.format(
    "run", "block", "", "server", "req/s", "requests", "cpu s", "cpu%",
    "us/req", "p50 ms", "p99 ms", "non2xx", "sockerr",
)  # fmt: skip


def formatRun(run: Run) -> str:
    """
    One line of the per-run table.
    """
    w = run.wrk
    return ROW.format(
        run.number,
        run.block,
        run.key,
        LABELS[run.key],
        f"{w.rps:.1f}",
        w.requests,
        f"{run.cpu:.2f}",
        f"{run.cpuShare * 100:.0f}",
        f"{run.cpuUsPerRequest:.1f}",
        f"{w.p50ms:.2f}",
        f"{w.p99ms:.2f}",
        w.non2xx,
        sum(w.socketErrors.values()),
    )


@dataclass
class Summary:
    """
    The figures the benchmark is run for.
    """

    rpsA: float
    rpsB: float
    cpuA: float
    cpuB: float
    blockRps: list[float]
    blockCpu: list[float]

    @property
    def rpsRatio(self) -> float:
        return self.rpsB / self.rpsA

    @property
    def cpuRatio(self) -> float:
        """
        CPU per request of B over A: lower is better for B.
        """
        return self.cpuB / self.cpuA

    @property
    def rpsMet(self) -> bool:
        return self.rpsRatio >= TARGET

    @property
    def cpuMet(self) -> bool:
        # B does at least 0.98 of A's work per CPU second.
        return self.cpuA / self.cpuB >= TARGET


def summarize(runs: Sequence[Run], blocks: int) -> Summary:
    """
    Medians over all runs, and the paired ratios of each A B B A block.
    """

    def of(key: str, block: int | None = None) -> list[Run]:
        return [r for r in runs if r.key == key and (block is None or r.block == block)]

    blockRps, blockCpu = [], []
    for b in range(1, blocks + 1):
        a, bb = of("A", b), of("B", b)
        blockRps.append(
            statistics.fmean(r.wrk.rps for r in bb)
            / statistics.fmean(r.wrk.rps for r in a)
        )
        blockCpu.append(
            statistics.fmean(r.cpuUsPerRequest for r in bb)
            / statistics.fmean(r.cpuUsPerRequest for r in a)
        )
    return Summary(
        rpsA=statistics.median(r.wrk.rps for r in of("A")),
        rpsB=statistics.median(r.wrk.rps for r in of("B")),
        cpuA=statistics.median(r.cpuUsPerRequest for r in of("A")),
        cpuB=statistics.median(r.cpuUsPerRequest for r in of("B")),
        blockRps=blockRps,
        blockCpu=blockCpu,
    )


def yesNo(met: bool) -> str:
    return "MET" if met else "NOT met"


def printSummary(s: Summary, runs: Sequence[Run]) -> None:
    """
    The summary, for people.
    """
    n = sum(1 for r in runs if r.key == "A")
    print()
    print(f"Summary (medians of {n} runs each)")
    print(f"  median req/s            A {s.rpsA:10.1f}   B {s.rpsB:10.1f}")
    print(
        f"  ratio B/A req/s         {s.rpsRatio:.3f}"
        f"   (per A-B-B-A block: {', '.join(f'{x:.3f}' for x in s.blockRps)})"
    )
    print(f"  median CPU us/request   A {s.cpuA:10.1f}   B {s.cpuB:10.1f}")
    print(
        f"  ratio B/A CPU/request   {s.cpuRatio:.3f}"
        f"   (per A-B-B-A block: {', '.join(f'{x:.3f}' for x in s.blockCpu)})"
    )
    print(
        f"    i.e. sdweb serves {s.cpuA / s.cpuB:.3f} of bare web's requests"
        " per CPU second"
    )
    print(f"  target: sdweb at least {TARGET} of bare twistd web")
    print(f"    by req/s:            {yesNo(s.rpsMet)} ({s.rpsRatio:.3f} >= {TARGET}?)")
    print(
        f"    by CPU per request:  {yesNo(s.cpuMet)}"
        f" ({s.cpuA / s.cpuB:.3f} >= {TARGET}?, i.e. B/A {s.cpuRatio:.3f}"
        f" <= {1 / TARGET:.3f}?)"
    )


def markdown(s: Summary, runs: Sequence[Run], settings: str, versions: str) -> str:
    """
    The summary as a small Markdown table.
    """
    n = sum(1 for r in runs if r.key == "A")
    table = markdownTable(
        ["Measure (median)", "`twistd web`", "`twistd sdweb`", "sdweb / web",
         f"Target: sdweb ≥ {TARGET} of web"],
        "lrrrl",
        [
            ["Requests/s", f"{s.rpsA:.0f}", f"{s.rpsB:.0f}", f"{s.rpsRatio:.3f}",
             "met" if s.rpsMet else "not met"],
            ["CPU µs per request", f"{s.cpuA:.1f}", f"{s.cpuB:.1f}",
             f"{s.cpuRatio:.3f}",
             f"{'met' if s.cpuMet else 'not met'}"
             f" (requests per CPU second {s.cpuA / s.cpuB:.3f})"],
        ],
    )  # fmt: skip
    return (
        table + f"\n{n} runs of each server in A-B-B-A order; {settings}. {versions}.\n"
    )


def versions() -> dict[str, str]:
    """
    Python, Twisted and wrk versions, and the cores.
    """
    try:
        out = subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True, timeout=10
        ).stdout
        m = re.search(r"wrk (\S+)", out)
        wrk = m.group(1) if m else "?"
    except (OSError, subprocess.TimeoutExpired):
        wrk = "?"
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return {
        "python": platform.python_version(),
        "twisted": packageVersion("twisted"),
        "wrk": wrk,
        "cores": f"{cores} ({usable} usable by this process)",
        "kernel": platform.release(),
    }


def txsdnotifyOrigin(env: dict[str, str], cwd: Path) -> str:
    """
    Where the servers import txsdnotify from.
    """
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import txsdnotify; print(txsdnotify.__file__)"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "? (timed out)"
    return out.stdout.strip() or f"NOT IMPORTABLE: {out.stderr.strip()[-300:]}"


# --- Main ---------------------------------------------------------------------


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare bare `twistd web` with `twistd sdweb` using wrk.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="A-B-B-A blocks to run; each server gets 2 runs per block (default 3)",
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per wrk run (default 10)"
    )
    parser.add_argument(
        "--connections", type=int, default=10, help="wrk connections (default 10)"
    )
    addOutArgument(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--rounds, --duration and --connections must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    if shutil.which("wrk") is None:
        print("compare_web: wrk is not on PATH", file=sys.stderr)
        return 2
    exitOnSigterm()
    v = versions()
    blocks, duration, connections = args.rounds, args.duration, args.connections
    runsEach = 2 * blocks
    estimate = 4 * blocks * (duration + SETTLE_SECONDS + 0.3) + 2 * WARMUP_SECONDS + 5
    print(
        f"python {v['python']}, twisted {v['twisted']}, wrk {v['wrk']},"
        f" cores {v['cores']}, kernel {v['kernel']}"
    )
    print(
        f"wrk -t1 -c{connections} -d{duration}s --latency; {blocks} block(s) of"
        f" {'-'.join(ORDER)} = {runsEach} runs each; about {estimate / 60:.1f} min"
    )

    servers: list[Server] = []
    listener: NotifyListener | None = None
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="compare_web.") as tmp:
        base = Path(tmp)
        docroot = base / "docroot"
        docroot.mkdir()
        head = b"<!DOCTYPE html>\n<html><body><pre>\n"
        foot = b"</pre></body></html>\n"
        content = head + b"x" * (FILE_SIZE - len(head) - len(foot) - 1) + b"\n" + foot
        assert len(content) == FILE_SIZE
        (docroot / FILE_NAME).write_bytes(content)

        env, origin = serverEnvironment()
        print(f"txsdnotify: {txsdnotifyOrigin(env, base)} ({origin})")
        try:
            listener = NotifyListener(base / "notify.sock")
            listener.start()
            servers = makeServers(
                Server, base, env, listener.path, ["--path", str(docroot)],
                "/" + FILE_NAME,
            )  # fmt: skip
            a, b = servers
            for s in servers:
                print(f"{s.key}: {' '.join(s.argv)}")
            print(f"B: NOTIFY_SOCKET={listener.path}")
            answeredA, readyB = startAndWait(
                servers, listener, base, servesFile(content)
            )
            print(f"A ready: answers on {a.url} ({answeredA:.1f}s)")
            print(
                f"B ready: READY=1 after {readyB:.1f}s (MAINPID={listener.mainPid},"
                f" process {b.pid}), answers on {b.url}"
            )

            for s in servers:
                w = runWrk(s.url, connections, WARMUP_SECONDS)
                print(
                    f"warm-up {s.key}: {w.rps:.0f} req/s over {WARMUP_SECONDS}s"
                    + (f", {w.failed} failed" if w.failed else "")
                )
            statusBefore = listener.statusCount()

            print()
            print(HEADER)
            number = 0
            for block in range(1, blocks + 1):
                for key in ORDER:
                    server = a if key == "A" else b
                    time.sleep(SETTLE_SECONDS)
                    number += 1
                    result, cpu = measure(server, connections, duration)
                    run = Run(number, block, key, result, cpu)
                    runs.append(run)
                    print(formatRun(run), flush=True)
            statusDuring = listener.statusCount() - statusBefore
        except BenchError as e:
            print(f"\ncompare_web: FAILED: {e}", file=sys.stderr)
            return 2
        finally:
            codes = stopServers(servers, listener)

        assert listener is not None
        totalB = sum(r.wrk.requests for r in runs if r.key == "B")
        print()
        print(
            f"sdweb notifications: {listener.datagrams} datagram(s),"
            f" {listener.statusMessages} with STATUS= ({statusDuring} during the"
            f" measured runs), READY=1 {'yes' if listener.ready.is_set() else 'no'},"
            f" STOPPING=1 x{listener.stopping}"
        )
        print(f"  last STATUS: {listener.lastStatus}")
        print(f"  wrk counted {totalB} requests to B in the measured runs")
        print(describeExits(codes))

    summary = summarize(runs, blocks)
    printSummary(summary, runs)
    failed = sum(r.wrk.failed for r in runs)
    if failed:
        for r in runs:
            if r.wrk.failed:
                print(
                    f"  run {r.number} ({r.key}): {r.wrk.non2xx} non-2xx/3xx,"
                    f" socket errors {r.wrk.socketErrors}"
                )
    print(
        f"request failures: {failed} (non-2xx/3xx responses and socket errors"
        " over all measured runs)"
    )
    if args.out is not None:
        settings = (
            f"wrk -t1 -c{connections} -d{duration}s on {HOST}, a {FILE_SIZE}-byte"
            " static file, sdweb with a live NOTIFY_SOCKET and STATUS every 1 s"
        )
        vers = (
            f"Python {v['python']}, Twisted {v['twisted']}, wrk {v['wrk']},"
            f" {os.cpu_count()} cores"
        )
        writeOut(args.out, markdown(summary, runs, settings, vers))
    if failed:
        print(
            "compare_web: some requests failed; the figures are suspect",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
