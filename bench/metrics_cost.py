"""
Instructions per request that the metrics' counting (status codes, the
duration histogram) adds to the request tracking, counted by valgrind
(callgrind) in-process.

The same Site and 1 KiB page as bench/tracking_instructions.py, fed through
an in-memory transport over one keep-alive connection, behind (A) the
tracking as it was before the metrics (txsdnotify/web/tracking.py at
--before, loaded from git), (B) the tracking of this checkout without
metrics and (C) with them (C{TrackingFactory.timed}, what C{--metrics} and
C{--metrics-port} turn on).  Each variant runs under callgrind for N and
N + 1000 requests; the difference divided by 1000 is the cost of one
request.  The cyclic garbage collector is off during the requests and
PYTHONHASHSEED is fixed, so that nothing but the tracking differs.

B and C run the same code up to the first request, so their difference at
the same N (total with metrics - total without, / N) is the cost of the
metrics' counting alone, with nothing of start-up or of the N + 1000 runs'
memory growth in it; that is the figure to read.

    python bench/metrics_cost.py [--requests 1000] [--before b17e2ee]

Under callgrind a request takes several milliseconds, longer than the
histogram's first bucket (1 ms), so every request takes the bisection path:
the figure is that of a slow request; a request finished within 1 ms skips
the bisection.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUEST = b"GET /page.html HTTP/1.1\r\nHost: bench\r\n\r\n"
EXTRA = 1000


def serve(tracking: str | None, count: int, timed: bool) -> None:
    """
    The measured program: C{count} requests through the tracking module at
    path C{tracking} (the current one if None), C{timed} or not.
    """
    sys.path.insert(0, str(ROOT))
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from twisted.web.static import Data

    if tracking is None:
        from txsdnotify.web import tracking as module
    else:
        spec = importlib.util.spec_from_file_location("before_tracking", tracking)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    root = Resource()
    root.putChild(b"page.html", Data(b"y" * 1024, "text/html"))
    site = Site(root, logPath=os.devnull)
    site.startFactory()
    factory = module.TrackingFactory(site)
    factory.timed = timed
    connection = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    connection.makeConnection(transport)
    gc.collect()
    gc.disable()
    for _ in range(count):
        connection.dataReceived(REQUEST)
        transport.clear()


def count(
    tracking: str | None, timed: bool, requests: int, work: Path, name: str
) -> int:
    out = work / f"callgrind.{name}.{requests}"
    command = [sys.executable, __file__, "--serve", "--requests", str(requests)]
    if tracking is not None:
        command += ["--tracking", tracking]
    if timed:
        command += ["--timed"]
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
        env=dict(os.environ, PYTHONHASHSEED="0"),
        check=True,
        capture_output=True,
    )
    found = re.search(
        r"^(?:summary|totals): (\d+)", out.read_text(errors="replace"), re.MULTILINE
    )
    assert found, f"no totals in {out}"
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--before", default="b17e2ee")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--tracking")
    parser.add_argument("--timed", action="store_true")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.tracking, args.requests, args.timed)
        return 0
    if shutil.which("valgrind") is None:
        print("metrics_cost: valgrind is not installed", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="metrics-cost-"))
    before = work / "tracking_before.py"
    before.write_bytes(
        subprocess.run(
            ["git", "show", f"{args.before}:txsdnotify/web/tracking.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
    )
    n = args.requests
    per: dict[str, float] = {}
    totals: dict[str, tuple[int, int]] = {}
    variants = (
        ("before", str(before), False),
        ("without metrics", None, False),
        ("with metrics", None, True),
    )
    for name, tracking, timed in variants:
        small = count(tracking, timed, n, work, name.replace(" ", "-"))
        large = count(tracking, timed, n + EXTRA, work, name.replace(" ", "-"))
        per[name] = (large - small) / EXTRA
        totals[name] = (small, large)
        print(f"{name:16s} {per[name]:>10,.0f} instructions per request")
    base = per["before"]
    for name in ("without metrics", "with metrics"):
        print(f"{name}: {per[name] - base:+,.0f} per request against before")
    for i, requests in enumerate((n, n + EXTRA)):
        extra = totals["with metrics"][i] - totals["without metrics"][i]
        print(
            f"with - without metrics, {requests} requests each:"
            f" {extra / requests:+,.0f} per request"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
