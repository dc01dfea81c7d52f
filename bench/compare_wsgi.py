#!/usr/bin/env python3
"""
Compare ``twistd -n sdweb --wsgi`` with ``gunicorn -w 1`` (sync worker) on
the same WSGI applications.

Usage::

    python bench/compare_wsgi.py [--rounds N] [--duration S] [--connections C]
                                 [--threads T] [--close] [--out FILE]

For each application of tests/apps (a plain WSGI hello, a Flask hello, a
Django view), both servers are started on their own port on 127.0.0.1:

* A: ``twistd -n --pidfile= sdweb --port tcp:PORT:interface=127.0.0.1
  --wsgi APP`` with ``NOTIFY_SOCKET`` read all the time by this script, as
  systemd would (so its ``STATUS=`` loop runs);
* B: ``gunicorn -w 1 -b 127.0.0.1:PORT APP`` (the default sync worker).

gunicorn's sync worker closes the connection after every response, as users
run it: wrk then reconnects for each request, while sdweb keeps connections
alive; with ``--close`` wrk sends ``Connection: close`` to both, so that both
pay for a connection per request.  Each server is warmed up (2 s of wrk), then
measured with ``wrk -t1 -cC -dSs`` in blocks of four runs in the order A B B A.
Around every run the CPU time of the server's process tree (utime + stime of the process
and its live children from ``/proc``, plus what it reaped) is read: CPU
microseconds per request is the figure to compare; requests/s is printed too.

Exit status: 0 when the benchmark ran; 1 if any request failed; 2 if a server
failed to start or died, or wrk or gunicorn is missing.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    HOST,
    REPO_ROOT,
    START_TIMEOUT,
    BenchError,
    NotifyListener,
    Server,
    WrkResult,
    addOutArgument,
    exitOnSigterm,
    freePorts,
    markdownTable,
    medianRatios,
    packageVersion,
    runWrk,
    serverEnvironment,
    twistdCommand,
    versionLine,
    waitAnswers,
    waitReady,
    writeOut,
)

APPS = REPO_ROOT / "tests" / "apps"
WARMUP_SECONDS = 2
SETTLE_SECONDS = 0.5
ORDER = "ABBA"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class App:
    """
    One application both servers serve.
    """

    title: str
    dotted: str  # module.attribute, as --wsgi takes it
    body: bytes

    @property
    def gunicornName(self) -> str:
        module, _, attribute = self.dotted.rpartition(".")
        return f"{module}:{attribute}"


APPLICATIONS = [
    App("plain WSGI hello", "wsgihello.app", b"hello from wsgi\n"),
    App("Flask hello", "flaskapp.app", b"hello from flask\n"),
    App("Django view", "djangoapp.wsgi.application", b"hello from django\n"),
]


@dataclass
class Target(Server):
    """
    One server process, named for the reports.
    """

    name: str = ""

    @property
    def label(self) -> str:  # type: ignore[override]
        return self.name


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; the fields after it don't.
    return stat[stat.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return found


def treeCpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of a process, its live descendants and the
    children it reaped (fields 14-17 of C{/proc/PID/stat}).
    """
    rest = _stat(pid)
    ticks = sum(int(x) for x in rest[11:15])
    for child in _children(pid):
        try:
            ticks += round(treeCpuSeconds(child) * CLOCK_TICKS)
        except (OSError, ValueError):
            pass
    return ticks / CLOCK_TICKS


def servesBody(body: bytes) -> Callable[[Server], str | None]:
    """
    A readiness probe: C{GET /} answers 200 with C{body}.
    """

    def probe(server: Server) -> str | None:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=2)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            got = (response.status, response.read())
        finally:
            conn.close()
        return None if got == (200, body) else f"HTTP {got[0]}, {got[1][:60]!r}"

    return probe


@dataclass
class Run:
    """
    One measured wrk run.
    """

    key: str
    wrk: WrkResult
    cpu: float

    @property
    def cpuUs(self) -> float:
        return self.cpu * 1e6 / self.wrk.requests if self.wrk.requests else float("nan")


@dataclass
class AppResult:
    """
    The runs of both servers on one application.
    """

    app: App
    runs: list[Run] = field(default_factory=list)

    def of(self, key: str) -> list[Run]:
        return [r for r in self.runs if r.key == key]

    def medians(self, key: str) -> tuple[float, float]:
        runs = self.of(key)
        return (
            statistics.median(r.wrk.rps for r in runs),
            statistics.median(r.cpuUs for r in runs),
        )


def measure(
    server: Target, connections: int, duration: int, headers: Sequence[str]
) -> Run:
    """
    One wrk run, with the server tree's CPU time read around it.
    """
    server.checkAlive()
    before = treeCpuSeconds(server.pid)
    result = runWrk(server.url, connections, duration, False, headers)
    time.sleep(0.2)  # the last responses and closes
    server.checkAlive()
    return Run(server.key, result, treeCpuSeconds(server.pid) - before)


def benchApp(
    app: App,
    args: argparse.Namespace,
    base: Path,
    env: dict[str, str],
    workers: int = 1,
) -> AppResult:
    """
    Start both servers for one application (with C{workers} processes
    each), measure, stop them.
    """
    extra = ["--workers", str(workers)] if workers > 1 else []
    portA, portB = freePorts(2)
    notify = base / f"notify-{app.dotted}.sock"
    listener = NotifyListener(notify)
    listener.start()
    gunicorn = [sys.executable, "-m", "gunicorn"]
    servers = [
        Target(
            "A",
            twistdCommand()
            + ["-n", "--pidfile=", "sdweb", "--port", f"tcp:{portA}:interface={HOST}"]
            + ["--wsgi", app.dotted, "--threads", str(args.threads), *extra],
            portA,
            base / f"sdweb-{app.dotted}.log",
            dict(env, NOTIFY_SOCKET=str(notify)),
            name=" ".join(["sdweb --wsgi", *extra]),
        ),
        Target(
            "B",
            gunicorn
            + ["-w", str(workers), "-b", f"{HOST}:{portB}", "--log-level", "warning"]
            + [app.gunicornName],
            portB,
            base / f"gunicorn-{app.dotted}.log",
            env,
            name=f"gunicorn -w {workers}",
        ),
    ]
    result = AppResult(app)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        for s in servers:
            s.start(APPS)
        waitReady(servers[0], listener, deadline)
        probe = servesBody(app.body)
        for s in servers:
            waitAnswers(s, probe, deadline)
            runWrk(s.url, args.connections, WARMUP_SECONDS, False, args.headers)
        byKey = {s.key: s for s in servers}
        for block in range(args.rounds):
            for key in ORDER:
                time.sleep(SETTLE_SECONDS)
                run = measure(byKey[key], args.connections, args.duration, args.headers)
                result.runs.append(run)
                print(
                    f"  {app.title:<17} block {block + 1} {key} {byKey[key].label:<14}"
                    f" {run.wrk.rps:9.1f} req/s {run.cpuUs:8.1f} us/req"
                    f"  failed {run.wrk.failed}"
                )
    finally:
        for s in servers:
            s.stop()
        listener.close()
    return result


def report(results: Sequence[AppResult], args: argparse.Namespace) -> str:
    """
    The summary table (Markdown), also printed.
    """
    rows = []
    for r in results:
        rpsA, cpuA = r.medians("A")
        rpsB, cpuB = r.medians("B")
        cpuRatio, cpuPerRound = medianRatios(
            [x.cpuUs for x in r.of("A")], [x.cpuUs for x in r.of("B")]
        )
        rows.append(
            [
                r.app.title,
                f"{cpuA:.0f}",
                f"{cpuB:.0f}",
                f"{cpuRatio:.2f} ({cpuPerRound:.2f})",
                f"{rpsA:.0f}",
                f"{rpsB:.0f}",
                f"{rpsA / rpsB:.2f}",
            ]
        )
    table = markdownTable(
        ["Application", "sdweb µs CPU/req", "gunicorn µs CPU/req",
         "sdweb / gunicorn CPU (per-round)", "sdweb req/s", "gunicorn req/s",
         "sdweb / gunicorn req/s"],
        "lrrrrrr",
        rows,
    )  # fmt: skip
    n = len(results[0].of("A")) if results else 0
    return (
        table + f"\n{n} runs of each server per application in A-B-B-A order;"
        f" wrk -t1 -c{args.connections} -d{args.duration}s; sdweb --threads"
        f" {args.threads}, "
        + (
            "every request with Connection: close (a connection per request for both). "
            if args.close
            else "keep-alive; gunicorn sync worker, which closes the connection"
            " after every response. "
        )
        + versionLine(
            f"gunicorn {packageVersion('gunicorn')}",
            f"Flask {packageVersion('flask')}",
            f"Django {packageVersion('django')}",
        )
        + ".\n"
    )


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare `twistd sdweb --wsgi` with `gunicorn -w 1` using wrk."
    )
    parser.add_argument("--rounds", type=int, default=1, help="A-B-B-A blocks (1)")
    parser.add_argument("--duration", type=int, default=5, help="seconds a run (5)")
    parser.add_argument("--connections", type=int, default=8, help="wrk -c (8)")
    parser.add_argument("--threads", type=int, default=10, help="sdweb --threads")
    parser.add_argument(
        "--close",
        action="store_true",
        help="send Connection: close to both servers (a connection per request)",
    )
    addOutArgument(parser)
    args = parser.parse_args(argv)
    args.headers = ["Connection: close"] if args.close else []
    if min(args.rounds, args.duration, args.connections, args.threads) < 1:
        parser.error("every number must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    for tool in ("wrk",):
        if shutil.which(tool) is None:
            print(f"compare_wsgi: {tool} is not on PATH", file=sys.stderr)
            return 2
    if packageVersion("gunicorn", "") == "":
        print("compare_wsgi: gunicorn is not installed", file=sys.stderr)
        return 2
    exitOnSigterm()
    env, origin = serverEnvironment()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(APPS), env.get("PYTHONPATH", "")) if p
    )
    print(f"txsdnotify: {origin}")
    results = []
    with tempfile.TemporaryDirectory(prefix="compare_wsgi-") as tmp:
        try:
            for app in APPLICATIONS:
                results.append(benchApp(app, args, Path(tmp), env))
        except BenchError as e:
            print(f"compare_wsgi: {e}", file=sys.stderr)
            return 2
    text = report(results, args)
    print()
    print(text)
    if args.out:
        writeOut(args.out, text)
    failed = sum(r.wrk.failed for res in results for r in res.runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
