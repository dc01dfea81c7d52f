"""
Instructions per request that sdweb's request tracking adds, counted by
valgrind (callgrind) in-process, so that nothing but the tracking differs.

Requests for a 1 KiB page are fed through an in-memory transport over one
keep-alive connection to (A) a plain twisted.web Site and (B) the same Site
behind txsdnotify's TrackingFactory.  Each variant runs under callgrind
twice, answering N and N + 1000 requests; the difference divided by 1000 is
the cost of one request with start-up taken out.  PYTHONHASHSEED is fixed,
so that two runs of the same variant count the same.

    python bench/tracking_instructions.py [--requests 2000] [--out FILE]

Why this and not only bench/instructions.py: a whole twistd under callgrind
also counts what varies from run to run (hash seeds, when the cyclic garbage
collector happens to run, how requests from 4 client threads batch into
reactor turns), which is of the same size as the tracking itself.
"""

from __future__ import annotations

import argparse
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


def serve(variant: str, count: int) -> None:
    """
    The measured program: C{count} requests to one variant.
    """
    sys.path.insert(0, str(ROOT))
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from twisted.web.static import Data

    from txsdnotify.web.tracking import TrackingFactory

    root = Resource()
    root.putChild(b"page.html", Data(b"y" * 1024, "text/html"))
    site = Site(root, logPath=os.devnull)
    site.startFactory()
    factory = site if variant == "site" else TrackingFactory(site)
    connection = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    connection.makeConnection(transport)
    for _ in range(count):
        connection.dataReceived(REQUEST)
        transport.clear()


def count(variant: str, requests: int, work: Path) -> int:
    out = work / f"callgrind.{variant}.{requests}"
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--serve",
            variant,
            "--requests",
            str(requests),
        ],
        env=env,
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
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--serve", choices=("site", "tracked"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.requests)
        return 0
    if shutil.which("valgrind") is None:
        print("tracking_instructions: valgrind is not installed", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="tracking-"))
    n = args.requests
    per: dict[str, float] = {}
    for variant in ("site", "tracked"):
        small = count(variant, n, work)
        large = count(variant, n + EXTRA, work)
        per[variant] = (large - small) / EXTRA
        print(f"{variant:8s} {per[variant]:>10,.0f} instructions per request")
    extra = per["tracked"] - per["site"]
    share = extra / per["site"]
    line = (
        f"tracking: {extra:+,.0f} instructions per request,"
        f" {share:+.2%} of a plain Site's {per['site']:,.0f}"
    )
    print(line)
    if args.out:
        args.out.write_text(
            "| Variant | Instructions per request |\n|---|---:|\n"
            f"| plain `Site` | {per['site']:,.0f} |\n"
            f"| `Site` behind `TrackingFactory` | {per['tracked']:,.0f} |\n\n"
            f"{line}. valgrind callgrind, in-process, 1 KiB static.Data over one"
            f" keep-alive connection; (N + {EXTRA} − N) / {EXTRA}, N = {n},"
            " PYTHONHASHSEED=0.\n"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
