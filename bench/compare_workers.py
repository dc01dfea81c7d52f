#!/usr/bin/env python3
"""
Compare ``twistd -n sdweb --workers 2 --wsgi`` with ``gunicorn -w 2`` (sync
workers) on the plain WSGI hello and the Flask hello.

Usage::

    python bench/compare_workers.py [--workers N] [--rounds N] [--duration S]
                                    [--connections C] [--threads T] [--close]
                                    [--out FILE]

The same method as bench/compare_wsgi.py (whose functions it uses): both
servers on their own port, warmed up, then measured with wrk in A B B A
order; CPU time is that of each server's whole process tree (master and
workers, and the workers it reaped), per request.  wrk runs on the same
machine: on a 2-core machine it takes a share of the cores the workers
would use, so the figures say how the two compare, not what either can do
on its own.

Exit status: 0 when the benchmark ran; 1 if any request failed; 2 if a server
failed to start or died, or wrk or gunicorn is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _common import (
    BenchError,
    exitOnSigterm,
    packageVersion,
    serverEnvironment,
    writeOut,
)
from compare_wsgi import APPLICATIONS, APPS, benchApp, parseArgs, report

COMPARED = ("wsgihello.app", "flaskapp.app")


def main(argv: Sequence[str] | None = None) -> int:
    workers = argparse.ArgumentParser(add_help=False)
    workers.add_argument("--workers", type=int, default=2)
    known, rest = workers.parse_known_args(argv)
    args = parseArgs(rest)
    if known.workers < 2:
        print("compare_workers: --workers wants 2 or more", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None or packageVersion("gunicorn", "") == "":
        print("compare_workers: needs wrk and gunicorn", file=sys.stderr)
        return 2
    exitOnSigterm()
    env, origin = serverEnvironment()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(APPS), env.get("PYTHONPATH", "")) if p
    )
    print(f"txsdnotify: {origin}; {known.workers} workers each; {os.cpu_count()} cores")
    results = []
    with tempfile.TemporaryDirectory(prefix="compare_workers-") as tmp:
        try:
            for app in APPLICATIONS:
                if app.dotted in COMPARED:
                    results.append(
                        benchApp(app, args, Path(tmp), env, workers=known.workers)
                    )
        except BenchError as e:
            print(f"compare_workers: {e}", file=sys.stderr)
            return 2
    text = (
        report(results, args).rstrip("\n")
        + f" sdweb --workers {known.workers} against gunicorn -w {known.workers};"
        f" wrk on the same {os.cpu_count()} cores.\n"
    )
    print()
    print(text)
    if args.out:
        writeOut(args.out, text)
    failed = sum(r.wrk.failed for res in results for r in res.runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
