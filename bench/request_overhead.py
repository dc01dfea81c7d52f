"""
The per-request cost of sdweb's request tracking, measured in-process.

Requests are fed to a site through an in-memory transport, so neither the
network nor the other tenants of a shared machine blur the figure: what is
left is the Python work per request.  Three variants, interleaved (A B C C
B A ...) over several rounds:

  - A: a plain twisted.web Site;
  - B: the same Site behind txsdnotify's TrackingFactory (what sdweb
    listens with: counters, connection tracking, drain hooks);
  - C: as B, while a drain is in progress (the slow path, for reference:
    every response then says Connection: close);
  - D: as B, with health checks answered at /healthz (C{--health}): what an
    application request pays for the one path comparison in front of it.

For two resources that answer at once, so that the tracking's share is as
large as it gets: a leaf resource rendering 1 KiB, and a static.Data page
under a root resource (one child look-up more).  (A static.File answers
through a producer that needs the reactor; bench/compare_web.py measures it
over real sockets.)

    python bench/request_overhead.py [--rounds 7] [--requests 20000] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import Data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock  # noqa: E402

from txsdnotify.health import Health, healthRequestFactory  # noqa: E402
from txsdnotify.systemd.lifecycle import Lifecycle  # noqa: E402
from txsdnotify.testing import MemoryNotifier  # noqa: E402
from txsdnotify.web.tracking import TrackingFactory  # noqa: E402

REQUEST = b"GET /page.html HTTP/1.1\r\nHost: bench\r\n\r\n"
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class Page(Resource):
    """
    1 KiB from memory, at every path.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"x" * 1024


class _Draining:
    """
    A drain observer that does what the real one does per request.
    """

    def requestArrived(self, request: Request) -> None:
        request.channel.persistent = True  # keep the connection for the bench
        if not request.startedWriting:
            request.responseHeaders.setRawHeaders(b"connection", [b"keep-alive"])

    def connectionClosed(self, connection: object) -> None:
        pass


def perRequest(factory: IProtocolFactory, count: int) -> float:
    """
    Microseconds per request over C{count} requests on one connection.
    """
    connection = factory.buildProtocol(PEER)
    assert connection is not None
    transport = StringTransport()
    connection.makeConnection(transport)
    connection.dataReceived(REQUEST)
    assert transport.value().startswith(b"HTTP/1.1 200 OK"), transport.value()
    for _ in range(200):
        transport.clear()
        connection.dataReceived(REQUEST)
    transport.clear()
    started = time.perf_counter()
    for _ in range(count):
        connection.dataReceived(REQUEST)
        transport.clear()
    elapsed = time.perf_counter() - started
    connection.connectionLost(None)  # type: ignore[arg-type]
    return elapsed / count * 1e6


def variants(root: Callable[[], Resource]) -> dict[str, Callable[[], IProtocolFactory]]:
    def site() -> Site:
        s = Site(root(), logPath="/dev/null")
        s.startFactory()
        return s

    def tracked() -> TrackingFactory:
        return TrackingFactory(site())

    def draining() -> TrackingFactory:
        t = TrackingFactory(site())
        t.drain = _Draining()
        return t

    def withHealth() -> TrackingFactory:
        t = TrackingFactory(site())
        health = Health(Lifecycle(MemoryNotifier()), t.stats, Clock())
        t.answerFirst = lambda base: healthRequestFactory(base, health, b"/healthz", t)
        return t

    return {
        "A site": site,
        "B tracked": tracked,
        "C draining": draining,
        "D health": withHealth,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    def dataRoot() -> Resource:
        root = Resource()
        root.putChild(b"page.html", Data(b"y" * 1024, "text/html"))
        return root

    resources: dict[str, Callable[[], Resource]] = {
        "1 KiB leaf resource": Page,
        "1 KiB static.Data": dataRoot,
    }
    rows = []
    for label, root in resources.items():
        makers = variants(root)
        names = list(makers)
        times: dict[str, list[float]] = {n: [] for n in names}
        count = args.requests
        for r in range(args.rounds):
            order = names + names[::-1] if r % 2 == 0 else names[::-1] + names
            for name in order:
                times[name].append(perRequest(makers[name](), count))
        a = statistics.median(times["A site"])
        for name in names:
            m = statistics.median(times[name])
            rows.append((label, name, m, m - a, a / m))
            print(
                f"{label:20s} {name:12s} {m:8.2f} µs/request"
                f"  (+{m - a:5.2f} µs, site/this {a / m:.3f})"
            )
    python = sys.version.split()[0]
    from twisted import __version__ as twisted

    note = (
        f"\n{args.rounds} rounds, interleaved; medians of per-round µs/request."
        f" Python {python}, Twisted {twisted}."
    )
    print(note.strip())
    if args.out:
        lines = [
            "| Resource | Variant | µs per request | extra µs | plain / this |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {label} | {name} | {m:.2f} | {d:+.2f} | {r:.3f} |"
            for label, name, m, d, r in rows
        ]
        args.out.write_text("\n".join(lines) + "\n" + note + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
