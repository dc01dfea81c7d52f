#!/usr/bin/env python3
"""
Compare ``twistd -n sdweb --wsgi`` (on its fast HTTP/1.1 path and on
twisted.web's) with gunicorn, granian and uWSGI on the same WSGI
applications.

Usage::

    python bench/compare_wsgi.py [--rounds N] [--duration S] [--connections C]
                                 [--threads T] [--workers W] [--close]
                                 [--contenders fast,twisted,gunicorn,...]
                                 [--apps plain,flask,django] [--out FILE]

For each application of tests/apps (a plain WSGI hello, a Flask hello, a
Django view), every contender is started on its own port on 127.0.0.1:

* fast: ``twistd -n --pidfile= sdweb --port tcp:PORT:interface=127.0.0.1
  --wsgi APP --http-parser fast`` with ``NOTIFY_SOCKET`` read all the time by
  this script, as systemd would (so its ``STATUS=`` loop runs);
* fastlog: the same with its access log in a file (``--logfile``): without
  it sdweb writes every access log line to twistd's log (its standard
  output), as fast does;
* twisted: the same as fast with ``--http-parser twisted`` (sdweb before
  the fast path);
* gunicorn: ``gunicorn -w W -b 127.0.0.1:PORT APP`` (the default sync worker);
* granian: ``granian --interface wsgi --workers W`` (Rust; skipped with a
  message when not installed: ``pip install granian``);
* uwsgi: ``uwsgi --http11-socket 127.0.0.1:PORT --processes W`` (C; skipped
  with a message when not installed: ``pip install uwsgi``).

gunicorn's sync worker closes the connection after every response, as users
run it: wrk then reconnects for each request, while the others keep
connections alive; with ``--close`` wrk sends ``Connection: close`` to all,
so that all pay for a connection per request.  Each server is warmed up
(2 s of wrk), then measured with ``wrk -t1 -cC -dSs`` in blocks that run
every contender in order and then in reverse (A B C C B A: each pair is
measured side by side, as the machine's load changes).  Around every run the
CPU time of the server's process tree (utime + stime of the process and its
live children from ``/proc``, plus what it reaped) is read: CPU microseconds
per request is the figure to compare, as a ratio to sdweb's fast path,
round by round; requests/s is printed too.

Exit status: 0 when the benchmark ran; 1 if any request failed; 2 if a server
failed to start or died, or wrk or gunicorn is missing.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
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


@dataclass(frozen=True)
class Contender:
    """
    One kind of server: how to start it for an application.
    """

    key: str
    title: str
    command: Callable[[App, int, int, int, Path], list[str]]
    notify: bool = False  # sdweb: wait for READY=1

    def label(self, workers: int) -> str:
        return self.title.replace("W", str(workers))


def _binary(name: str) -> str | None:
    """
    A command of the running Python's environment, or on C{PATH}.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def _sdweb(
    parser: str, logfile: bool = False
) -> Callable[[App, int, int, int, Path], list[str]]:
    def command(
        app: App, port: int, workers: int, threads: int, base: Path
    ) -> list[str]:
        extra = ["--workers", str(workers)] if workers > 1 else []
        if logfile:
            extra += ["--logfile", str(base / f"access-{parser}-{app.dotted}.log")]
        return (
            twistdCommand()
            + ["-n", "--pidfile=", "sdweb", "--port", f"tcp:{port}:interface={HOST}"]
            + ["--wsgi", app.dotted, "--threads", str(threads), *extra]
            + ["--http-parser", parser]
        )

    return command


def _gunicorn(app: App, port: int, workers: int, threads: int, base: Path) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-w", str(workers)] + [
        "-b",
        f"{HOST}:{port}",
        "--log-level",
        "warning",
        app.gunicornName,
    ]


def _granian(app: App, port: int, workers: int, threads: int, base: Path) -> list[str]:
    binary = _binary("granian")
    assert binary is not None
    return [binary, "--interface", "wsgi", "--host", HOST, "--port", str(port)] + [
        "--workers",
        str(workers),
        "--no-ws",
        "--log-level",
        "warning",
        app.gunicornName,
    ]


def _uwsgi(app: App, port: int, workers: int, threads: int, base: Path) -> list[str]:
    binary = _binary("uwsgi")
    assert binary is not None
    return [
        binary,
        "--http11-socket",
        f"{HOST}:{port}",
        "--module",
        app.gunicornName,
    ] + [
        "--processes",
        str(workers),
        "--master",
        "--die-on-term",
        "--disable-logging",
        "--pythonpath",
        str(APPS),
    ]


CONTENDERS = {
    c.key: c
    for c in [
        Contender("fast", "sdweb --wsgi (fast path)", _sdweb("fast"), notify=True),
        Contender(
            "fastlog",
            "sdweb --wsgi (fast path) --logfile",
            _sdweb("fast", logfile=True),
            notify=True,
        ),
        Contender("twisted", "sdweb --wsgi (twisted.web)", _sdweb("twisted"), True),
        Contender("gunicorn", "gunicorn -w W", _gunicorn),
        Contender("granian", "granian --workers W", _granian),
        Contender("uwsgi", "uwsgi --processes W", _uwsgi),
    ]
}


def missing(key: str) -> str | None:
    """
    Why a contender cannot run here, or L{None}.
    """
    if key.startswith("fast") and importlib.util.find_spec("httptools") is None:
        return "httptools is not installed (pip install 'txsdnotify[fast]')"
    if key == "gunicorn" and packageVersion("gunicorn", "") == "":
        return "gunicorn is not installed (pip install gunicorn)"
    if key in ("granian", "uwsgi") and _binary(key) is None:
        return f"{key} is not installed (pip install {key})"
    return None


def benchApp(
    app: App,
    args: argparse.Namespace,
    base: Path,
    env: dict[str, str],
    contenders: Sequence[Contender],
) -> AppResult:
    """
    Start every contender for one application, measure, stop them.
    """
    workers = args.workers
    ports = freePorts(len(contenders))
    notify = base / f"notify-{app.dotted}.sock"
    listener = NotifyListener(notify)
    listener.start()
    servers = [
        Target(
            c.key,
            c.command(app, port, workers, args.threads, base),
            port,
            base / f"{c.key}-{app.dotted}.log",
            dict(env, NOTIFY_SOCKET=str(notify)) if c.notify else env,
            name=c.label(workers),
        )
        for c, port in zip(contenders, ports)
    ]
    result = AppResult(app)
    order = [s.key for s in servers]
    try:
        deadline = time.monotonic() + START_TIMEOUT
        probe = servesBody(app.body)
        for c, s in zip(contenders, servers):
            s.start(APPS)
            if c.notify:
                # One at a time: READY=1 comes from one notify socket.
                waitReady(s, listener, deadline)
        for s in servers:
            waitAnswers(s, probe, deadline)
            runWrk(s.url, args.connections, WARMUP_SECONDS, False, args.headers)
        byKey = {s.key: s for s in servers}
        for block in range(args.rounds):
            for key in order + order[::-1]:
                time.sleep(SETTLE_SECONDS)
                run = measure(byKey[key], args.connections, args.duration, args.headers)
                result.runs.append(run)
                print(
                    f"  {app.title:<17} block {block + 1} {byKey[key].label:<28}"
                    f" {run.wrk.rps:9.1f} req/s {run.cpuUs:8.1f} us/req"
                    f"  failed {run.wrk.failed}"
                )
    finally:
        for s in servers:
            s.stop()
        listener.close()
    return result


def report(
    results: Sequence[AppResult],
    args: argparse.Namespace,
    contenders: Sequence[Contender],
    skipped: Sequence[str],
) -> str:
    """
    The summary table (Markdown), also printed: each contender's median CPU
    per request and requests/s, and its CPU per request as a ratio to
    sdweb's fast path (the median of the ratios of the runs side by side).
    """
    reference = contenders[0].key
    rows = []
    for r in results:
        ref = [x.cpuUs for x in r.of(reference)]
        for c in contenders:
            rps, cpu = r.medians(c.key)
            ratio = (
                "1"
                if c.key == reference
                else f"{medianRatios([x.cpuUs for x in r.of(c.key)], ref)[1]:.2f}"
            )
            rows.append(
                [r.app.title, c.label(args.workers), f"{cpu:.0f}", ratio, f"{rps:.0f}"]
            )
    table = markdownTable(
        ["Application", "server", "µs CPU/req",
         f"CPU/req ÷ {contenders[0].label(args.workers)}", "req/s"],
        "llrrr",
        rows,
    )  # fmt: skip
    n = len(results[0].of(reference)) if results else 0
    return (
        table + f"\n{n} runs of each server per application, in blocks run in"
        " order and then in reverse; ratios are medians of the ratios of runs"
        f" side by side. wrk -t1 -c{args.connections} -d{args.duration}s;"
        f" sdweb --threads {args.threads}, --workers {args.workers}; "
        + (
            "every request with Connection: close (a connection per request for all). "
            if args.close
            else "keep-alive; gunicorn's sync worker closes the connection"
            " after every response. "
        )
        + "".join(f"Skipped: {why}. " for why in skipped)
        + versionLine(
            f"httptools {packageVersion('httptools')}",
            f"gunicorn {packageVersion('gunicorn')}",
            f"granian {packageVersion('granian')}",
            f"uWSGI {packageVersion('uwsgi')}",
            f"Flask {packageVersion('flask')}",
            f"Django {packageVersion('django')}",
        )
        + ".\n"
    )


APP_KEYS = {"plain": 0, "flask": 1, "django": 2}


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare `twistd sdweb --wsgi` with gunicorn, granian and"
        " uWSGI using wrk."
    )
    parser.add_argument("--rounds", type=int, default=1, help="blocks (1)")
    parser.add_argument("--duration", type=int, default=5, help="seconds a run (5)")
    parser.add_argument("--connections", type=int, default=8, help="wrk -c (8)")
    parser.add_argument("--threads", type=int, default=10, help="sdweb --threads")
    parser.add_argument("--workers", type=int, default=1, help="processes of each")
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help="comma-separated, the first is the reference"
        f" (default: {','.join(CONTENDERS)})",
    )
    parser.add_argument(
        "--apps",
        default="plain,flask,django",
        help="comma-separated: plain,flask,django",
    )
    parser.add_argument(
        "--close",
        action="store_true",
        help="send Connection: close to every server (a connection per request)",
    )
    addOutArgument(parser)
    args = parser.parse_args(argv)
    args.headers = ["Connection: close"] if args.close else []
    numbers = (args.rounds, args.duration, args.connections, args.threads, args.workers)
    if min(numbers) < 1:
        parser.error("every number must be at least 1")
    checkChoices(parser, args)
    return args


def checkChoices(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """
    Turn C{--contenders} and C{--apps} into lists of known keys (a usage
    error otherwise).
    """
    args.contenders = [k for k in args.contenders.split(",") if k]
    unknown = [k for k in args.contenders if k not in CONTENDERS]
    if unknown or not args.contenders:
        parser.error(f"--contenders: unknown {unknown}; known: {list(CONTENDERS)}")
    args.apps = [k for k in args.apps.split(",") if k]
    if not args.apps or any(k not in APP_KEYS for k in args.apps):
        parser.error(f"--apps: choose from {list(APP_KEYS)}")


@dataclass
class Setting:
    """
    What a run of the servers needs: the contenders that can run here, why
    the others cannot, and the servers' environment.
    """

    contenders: list[Contender]
    skipped: list[str]
    env: dict[str, str]


def prepare(keys: Sequence[str], program: str) -> Setting | None:
    """
    Check that wrk is there, choose the contenders of C{keys} that can run
    here (saying why the others cannot), stop on SIGTERM cleanly, and build
    the servers' environment (tests/apps on C{PYTHONPATH}); L{None} (after
    saying why) when wrk or the reference contender is missing.
    """
    if shutil.which("wrk") is None:
        print(f"{program}: wrk is not on PATH", file=sys.stderr)
        return None
    contenders, skipped = [], []
    for key in keys:
        why = missing(key)
        if why is None:
            contenders.append(CONTENDERS[key])
        else:
            print(f"{program}: skipping {key}: {why}", file=sys.stderr)
            skipped.append(f"{key}: {why}")
    if not contenders or contenders[0].key != keys[0]:
        print(f"{program}: the reference contender cannot run", file=sys.stderr)
        return None
    exitOnSigterm()
    env, origin = serverEnvironment()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(APPS), env.get("PYTHONPATH", "")) if p
    )
    print(f"txsdnotify: {origin}")
    return Setting(contenders, skipped, env)


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    setting = prepare(args.contenders, "compare_wsgi")
    if setting is None:
        return 2
    contenders, skipped, env = setting.contenders, setting.skipped, setting.env
    results = []
    with tempfile.TemporaryDirectory(prefix="compare_wsgi-") as tmp:
        try:
            for key in args.apps:
                app = APPLICATIONS[APP_KEYS[key]]
                results.append(benchApp(app, args, Path(tmp), env, contenders))
        except BenchError as e:
            print(f"compare_wsgi: {e}", file=sys.stderr)
            return 2
    text = report(results, args, contenders, skipped)
    return publish(text, args, sum(r.wrk.failed for res in results for r in res.runs))


def publish(text: str, args: argparse.Namespace, failed: int) -> int:
    """
    Print the report, write it to C{--out} if asked; the exit status: 1 if
    any request C{failed}, else 0.
    """
    print()
    print(text)
    if args.out:
        writeOut(args.out, text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
