#!/usr/bin/env python3
"""
Latency under many keep-alive connections: sdweb's fast HTTP/1.1 path
against ``--http-parser twisted`` (sdweb before the fast path), with
gunicorn and granian for reference.

Usage::

    python bench/latency_connections.py [--rounds N] [--duration S]
                                        [--connections C] [--threads T]
                                        [--contenders fast,twisted,...]
                                        [--apps plain,flask] [--out FILE]

Each run starts its server afresh (so that no run inherits another's
connections or warmed-up state), waits for it (C{READY=1} for sdweb), warms
it up with 2 s of the same load, then measures it with
``wrk -t1 -cC -dSs --latency`` (1000 connections by default) and stops it.
The contenders run in blocks, in order and then in reverse (A B B A), and
the report gives each one's median p50 and p99 latency and requests/s, and
its p99 as a ratio to the first contender's, the median of the ratios of
the runs side by side.  The soft limit on open files (C{RLIMIT_NOFILE}) is
raised to the hard limit first; the servers and wrk inherit it.  The
contenders are those of bench/compare_wsgi.py (whose functions this uses).

Exit status: 0 when the benchmark ran; 1 if any request failed; 2 if a server
failed to start or died, or wrk is missing.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import (
    START_TIMEOUT,
    BenchError,
    NotifyListener,
    WrkResult,
    addOutArgument,
    freePorts,
    markdownTable,
    medianRatios,
    packageVersion,
    runWrk,
    versionLine,
    waitAnswers,
    waitReady,
)
from compare_wsgi import (
    APP_KEYS,
    APPLICATIONS,
    APPS,
    CONTENDERS,
    App,
    Contender,
    Target,
    checkChoices,
    prepare,
    publish,
    servesBody,
    treeCpuSeconds,
)

WARMUP_SECONDS = 2
WRK_TIMEOUT = 10  # seconds: a slower answer is an error, left out of the latencies


@dataclass
class LatencyRun:
    """
    One measured run of one contender.
    """

    key: str
    wrk: WrkResult
    cpuUs: float


def raiseFileLimit(wanted: int) -> int:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit; the soft limit now.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def measureFresh(
    contender: Contender,
    app: App,
    args: argparse.Namespace,
    base: Path,
    env: dict[str, str],
    run: int,
) -> LatencyRun:
    """
    Start the contender, warm it up, measure one run, stop it.
    """
    (port,) = freePorts(1)
    notify = base / f"notify-{contender.key}-{app.dotted}-{run}.sock"
    listener = NotifyListener(notify)
    listener.start()
    server = Target(
        contender.key,
        contender.command(app, port, 1, args.threads, base),
        port,
        base / f"{contender.key}-{app.dotted}-{run}.log",
        dict(env, NOTIFY_SOCKET=str(notify)) if contender.notify else env,
        name=contender.label(1),
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        server.start(APPS)
        if contender.notify:
            waitReady(server, listener, deadline)
        waitAnswers(server, servesBody(app.body), deadline)
        runWrk(server.url, args.connections, WARMUP_SECONDS, False)
        server.checkAlive()
        before = treeCpuSeconds(server.pid)
        result = runWrk(
            server.url, args.connections, args.duration, True, timeout=WRK_TIMEOUT
        )
        server.checkAlive()
        cpu = treeCpuSeconds(server.pid) - before
    finally:
        server.stop()
        listener.close()
    perRequest = cpu * 1e6 / result.requests if result.requests else float("nan")
    return LatencyRun(contender.key, result, perRequest)


def report(
    results: dict[str, list[LatencyRun]],
    args: argparse.Namespace,
    contenders: Sequence[Contender],
    skipped: Sequence[str],
) -> str:
    """
    The summary table (Markdown), also printed.
    """
    reference = contenders[0].key
    rows = []
    for title, runs in results.items():
        ref = [r.wrk.p99ms for r in runs if r.key == reference]
        for c in contenders:
            mine = [r for r in runs if r.key == c.key]
            ratio = (
                "1"
                if c.key == reference
                else f"{medianRatios([r.wrk.p99ms for r in mine], ref)[1]:.2f}"
            )
            rows.append(
                [
                    title,
                    c.label(1),
                    f"{statistics.median(r.wrk.p50ms for r in mine):.1f}",
                    f"{statistics.median(r.wrk.p99ms for r in mine):.1f}",
                    ratio,
                    f"{statistics.median(r.wrk.rps for r in mine):.0f}",
                    f"{statistics.median(r.cpuUs for r in mine):.0f}",
                    str(sum(r.wrk.failed for r in mine)),
                ]
            )
    table = markdownTable(
        ["Application", "server", "p50 ms", "p99 ms",
         f"p99 ÷ {contenders[0].label(1)}", "req/s", "µs CPU/req", "errors"],
        "llrrrrrr",
        rows,
    )  # fmt: skip
    n = args.rounds * 2
    return (
        table + f"\n{n} runs of each server per application, each on a freshly"
        " started server (2 s of warm-up), in blocks run in order and then in"
        " reverse; medians, and the p99 ratio is the median of the ratios of"
        f" runs side by side. wrk -t1 -c{args.connections} -d{args.duration}s"
        f" --latency --timeout {WRK_TIMEOUT}s (a slower answer counts as an"
        " error), keep-alive (gunicorn's sync worker closes the connection"
        f" after every response); sdweb --threads {args.threads}; open files"
        f" limit {args.nofile}. "
        + "".join(f"Skipped: {why}. " for why in skipped)
        + versionLine(
            f"httptools {packageVersion('httptools')}",
            f"gunicorn {packageVersion('gunicorn')}",
            f"granian {packageVersion('granian')}",
            f"Flask {packageVersion('flask')}",
        )
        + ".\n"
    )


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="p50/p99 latency at many keep-alive connections, with wrk."
    )
    parser.add_argument("--rounds", type=int, default=2, help="blocks (2)")
    parser.add_argument("--duration", type=int, default=10, help="seconds a run (10)")
    parser.add_argument("--connections", type=int, default=1000, help="wrk -c (1000)")
    parser.add_argument("--threads", type=int, default=10, help="sdweb --threads")
    parser.add_argument(
        "--contenders",
        default="fast,twisted,gunicorn,granian",
        help="comma-separated, the first is the reference"
        f" (known: {','.join(CONTENDERS)})",
    )
    parser.add_argument("--apps", default="plain", help="comma-separated: plain,flask")
    addOutArgument(parser)
    args = parser.parse_args(argv)
    if min(args.rounds, args.duration, args.connections, args.threads) < 1:
        parser.error("every number must be at least 1")
    checkChoices(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    args.nofile = raiseFileLimit(args.connections + 1024)
    if args.nofile < args.connections + 64:
        print(
            f"latency_connections: only {args.nofile} open files allowed",
            file=sys.stderr,
        )
        return 2
    print(f"open files limit {args.nofile}")
    setting = prepare(args.contenders, "latency_connections")
    if setting is None:
        return 2
    contenders, skipped, env = setting.contenders, setting.skipped, setting.env
    results: dict[str, list[LatencyRun]] = {}
    with tempfile.TemporaryDirectory(prefix="latency_connections-") as tmp:
        try:
            for key in args.apps:
                app = APPLICATIONS[APP_KEYS[key]]
                runs = results[app.title] = []
                for block in range(args.rounds):
                    for c in contenders + contenders[::-1]:
                        run = measureFresh(c, app, args, Path(tmp), env, len(runs))
                        runs.append(run)
                        print(
                            f"  {app.title:<17} block {block + 1} {c.label(1):<28}"
                            f" p50 {run.wrk.p50ms:8.1f} ms p99 {run.wrk.p99ms:8.1f} ms"
                            f" {run.wrk.rps:8.0f} req/s {run.cpuUs:6.0f} us/req"
                            f" errors {run.wrk.failed}"
                        )
        except BenchError as e:
            print(f"latency_connections: {e}", file=sys.stderr)
            return 2
    text = report(results, args, contenders, skipped)
    return publish(text, args, sum(r.wrk.failed for rs in results.values() for r in rs))


if __name__ == "__main__":
    sys.exit(main())
