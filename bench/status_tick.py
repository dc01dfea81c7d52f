#!/usr/bin/env python3
"""
The cost of one status tick with few and with many open connections.

Usage::

    python bench/status_tick.py [--small N] [--large N] [--ticks N]
                                [--rounds R] [--out FILE]

Two real L{txsdnotify.WebService}s run side by side in this process, on the
reactor, each serving the sdweb demo page on its own port on 127.0.0.1 and
each with a real L{txsdnotify.Notifier} sending to its own ``AF_UNIX``
datagram socket that this script binds in a temporary directory:

* A with ``--small`` (default 10) idle keep-alive HTTP connections;
* B with ``--large`` (default 10,000) of them.

The connections are plain blocking sockets opened by a separate client
process (this script, run with ``--client PORT COUNT``; one per service), one
after the other, each of which sends one real ``GET / HTTP/1.1`` request and
reads the whole response, then stays open: a used keep-alive connection, as a
browser leaves behind.  The client holds them until its stdin is closed.  A
separate process, because one process may not hold both ends of 10,000
connections: the hard ``RLIMIT_NOFILE`` can be 20000 and, in a container,
cannot be raised even by root.  Each side raises its soft limit (with the
resource module) as far as it needs.
Before measuring, the script checks from each service's ``RequestStats`` (and
from the ``Connections:`` figure of the ``STATUS=`` line its receiver got)
that the service sees exactly that many open connections and requests.

What is timed is ``WebService._statusTick()`` itself, called in a loop inside
one reactor callback and timed with ``time.perf_counter_ns``, in two variants:

* unchanged: the figures are the same as at the previous tick (an idle
  server), so the tick samples the statistics, formats the line, compares it
  and sends nothing;
* changed: before each tick the remembered last line is forgotten
  (``service._lastStatus = None``), so that every tick also sends its
  ``STATUS=`` through the Notifier, as a busy server's ticks do.

As in notify_cost.py, the receivers are read empty *between* chunks of ticks
(untimed), each chunk smaller than what the receiver's queue takes before a
send would block (``net.unix.max_dgram_qlen`` may be 10 here), so the
Notifier never has to queue; every ``STATUS=`` sent is counted at the
receiver.  A round times ``--ticks`` ticks (default 20000) of each service in
each variant, the two services side by side: a chunk of A's ticks, a chunk
of B's, then B's, A's, ... (A B B A), each round starting with the other
service, so that a burst of noise on the shared machine hits both.  The
summary
gives the median microseconds per tick of each service and the ratio B/A
(ratio of the medians, and the median of the per-round ratios): about 1.0
means the tick does not grow with the number of connections.  ``--out FILE``
also writes it as Markdown.

Exit status: 0 when the benchmark ran and every count matched; 1 if a count
did not match (connections, requests or notifications); 2 if it could not
run.  Only the standard library, Twisted and txsdnotify (from the repository
when it is not installed) are used.
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    HOST,
    BenchError,
    DatagramReceiver,
    addOutArgument,
    chunkSize,
    markdownTable,
    medianRatios,
    queueCapacity,
    timeInterleaved,
    useRepositoryTxsdnotify,
    versionLine,
    writeOut,
)

useRepositoryTxsdnotify()

from twisted.internet import reactor as _reactor  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402
from twisted.logger import (  # noqa: E402
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from txsdnotify import Notifier, WebService  # noqa: E402
from txsdnotify.cli.demo import DemoPage  # noqa: E402
from txsdnotify.web.tracking import channelOf  # noqa: E402

reactor: Any = _reactor
CONNECT_TIMEOUT = 10.0  # seconds for one client connect or response
SETUP_TIMEOUT = 120.0  # seconds to open all the connections of one service
CLIENT_EXIT_TIMEOUT = 15.0  # seconds for a client process to close and exit
COUNT_TIMEOUT = 10.0  # seconds for the stats to catch up with the clients
STOP_TIMEOUT = 30.0  # seconds for a service to stop (drain)
TOTAL_TIMEOUT = 600.0  # seconds for the whole benchmark
FD_MARGIN = 1024  # descriptors beyond both ends of every connection


class CountMismatch(Exception):
    """
    A count that should have matched did not: exit status 1.
    """


# --- The receivers -------------------------------------------------------------


class Receiver(DatagramReceiver):
    """
    A bound C{AF_UNIX} datagram socket standing in for the service manager:
    read by the reactor while it runs, and read empty on demand while the
    ticks are timed.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.datagrams = 0
        self.statusMessages = 0
        self.ready = False
        self.lastStatus: str | None = None

    def countStatus(self) -> int:
        """
        Read every datagram waiting now; how many carried C{STATUS=}.
        """
        status = 0
        for data in self.drain():
            self.datagrams += 1
            for line in data.split(b"\n"):
                if line.startswith(b"STATUS="):
                    status += 1
                    self.lastStatus = line[7:].decode("utf-8", "replace")
                elif line == b"READY=1":
                    self.ready = True
        self.statusMessages += status
        return status

    # IReadDescriptor, for the reactor.

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        self.countStatus()

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "Receiver"

    def close(self) -> None:
        reactor.removeReader(self)
        super().close()


# --- The clients ---------------------------------------------------------------


def readResponse(s: socket.socket) -> bytes:
    """
    Read one HTTP response with a C{Content-Length}; its head.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise BenchError(f"connection closed mid-response: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise BenchError(f"response without Content-Length: {head[:300]!r}")
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise BenchError("connection closed mid-body")
        body += chunk
    return head


def openIdleConnections(port: int, count: int) -> list[socket.socket]:
    """
    Open C{count} connections, make one keep-alive request on each and leave
    them open.  Runs in the client process.
    """
    request = (
        f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: status_tick\r\n\r\n"
    ).encode()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.create_connection((HOST, port), timeout=CONNECT_TIMEOUT)
            socks.append(s)
            s.sendall(request)
            head = readResponse(s)
            if not head.startswith(b"HTTP/1.1 200"):
                raise BenchError(f"unexpected response: {head[:200]!r}")
            if b"connection: close" in head.lower():
                raise BenchError("the server closed a keep-alive connection")
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def clientMain(port: int, count: int) -> int:
    """
    The client process: open the connections, say C{OPEN n} on stdout, hold
    them until stdin is closed.
    """
    try:
        raiseFileLimit(count + FD_MARGIN)
        socks = openIdleConnections(port, count)
    except (BenchError, OSError) as e:
        print(f"ERROR {e}", flush=True)
        return 1
    print(f"OPEN {len(socks)}", flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()
    return 0


class ClientProcess:
    """
    A client process holding one service's idle connections.
    """

    def __init__(self, port: int, count: int) -> None:
        self.count = count
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--client"]
            + [str(port), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def opened(self) -> int:
        """
        Wait for the client to report; how many connections it holds.
        """
        assert self.proc.stdout is not None
        reading = deferToThread(self.proc.stdout.readline)
        line = await reading.addTimeout(SETUP_TIMEOUT, reactor)
        if not line.startswith("OPEN "):
            raise BenchError(
                f"the client process failed: {line.strip() or 'no output'}"
                f" (exit status {self.proc.poll()})"
            )
        return int(line.split()[1])

    def close(self) -> None:
        """
        Have the client close its connections and exit; kill it if it won't.
        """
        proc = self.proc
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=CLIENT_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def raiseFileLimit(needed: int) -> str:
    """
    Make room for C{needed} descriptors; what was done.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return f"RLIMIT_NOFILE {soft} (enough for {needed})"
    newHard = hard if hard == resource.RLIM_INFINITY or hard >= needed else needed
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, newHard))
    except (ValueError, OSError) as e:
        raise BenchError(
            f"cannot raise RLIMIT_NOFILE from {soft}/{hard} to {needed}: {e}"
            " (run as root, or lower --large)"
        ) from None
    return f"RLIMIT_NOFILE raised from {soft}/{hard} to {needed}/{newHard}"


# --- The services ---------------------------------------------------------------


@dataclass
class Subject:
    """
    One service under test and what was measured on it.
    """

    key: str
    connections: int
    service: WebService
    receiver: Receiver
    client: ClientProcess | None = None
    unchanged: list[float] = field(default_factory=list)
    changed: list[float] = field(default_factory=list)
    ticks: int = 0
    sent: int = 0

    @property
    def port(self) -> int:
        address: Any = self.service.ports[0].getHost()
        return int(address.port)

    @property
    def label(self) -> str:
        return f"{self.connections} connections"


def makeSubject(key: str, connections: int, base: Path) -> Subject:
    """
    A WebService serving the demo page on a free port, notifying a receiver.
    """
    receiver = Receiver(base / f"notify-{key}.sock")
    reactor.addReader(receiver)
    service = WebService(
        Site(DemoPage()),
        [f"tcp:0:interface={HOST}:backlog=1024"],
        notifier=Notifier(str(receiver.path), reactor=reactor),
        reactor=reactor,
        # No status loop: the only ticks after READY=1 are the timed ones.
        statusInterval=0,
        drainTimeout=5.0,
        environ={},
        reloadSignal=None,
        inherited=[],
    )
    return Subject(key, connections, service, receiver)


async def waitFor(condition: Any, timeout: float, what: str) -> None:
    """
    Let the reactor run until C{condition()} holds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)


def verifyConnections(s: Subject) -> list[str]:
    """
    Check what the service sees against what the clients did; the problems.
    Walks the connections, which only this check (never a tick) does.
    """
    stats = s.service.tracker.stats
    tracked = s.service.tracker.connections
    used = sum(1 for c in tracked if channelOf(c) in s.service.tracker.used)
    print(
        f"  {s.key} ({s.label}): stats.openConnections={stats.openConnections},"
        f" connectionsOpened={stats.connectionsOpened},"
        f" requests completed={stats.completed}, in flight={stats.inFlight};"
        f" tracked connections={len(tracked)}, of them used keep-alive={used}"
    )
    problems = []
    if stats.openConnections != s.connections:
        problems.append(
            f"{s.key}: service sees {stats.openConnections} open connections,"
            f" expected {s.connections}"
        )
    if stats.completed != s.connections or used != s.connections:
        problems.append(
            f"{s.key}: {stats.completed} requests completed and {used} used"
            f" connections, expected {s.connections}"
        )
    return problems


# --- Measuring -----------------------------------------------------------------


def settle(s: Subject, changed: bool) -> None:
    """
    Read the receiver empty; for the unchanged variant, tick once so that the
    timed ticks find the line unchanged.
    """
    s.receiver.countStatus()
    if not changed:
        s.service._statusTick()
        s.receiver.countStatus()


def timeChunk(s: Subject, n: int, changed: bool) -> int:
    """
    Time C{n} status ticks of one service, then check what reached its
    receiver; nanoseconds.
    """
    service = s.service
    tick = service._statusTick
    clock = time.perf_counter_ns
    steps = range(n)
    if changed:
        start = clock()
        for _ in steps:
            service._lastStatus = None
            tick()
        elapsed = clock() - start
        s.sent += n
    else:
        start = clock()
        for _ in steps:
            tick()
        elapsed = clock() - start
    s.ticks += n
    got = s.receiver.countStatus()
    if got != (n if changed else 0):
        raise CountMismatch(
            f"{s.key}: {got} STATUS= message(s) arrived for {n}"
            f" {'changed' if changed else 'unchanged'} tick(s)"
        )
    if service.notifier.pending:
        raise CountMismatch(f"{s.key}: {service.notifier.pending} queued in Notifier")
    return elapsed


def timeRound(
    order: Sequence[Subject], ticks: int, chunk: int, changed: bool
) -> dict[str, float]:
    """
    Time C{ticks} ticks of every service, interleaved chunk by chunk with
    the order reversed after each chunk (A B B A ...); microseconds per tick
    by service.
    """
    for s in order:
        settle(s, changed)
    return timeInterleaved(order, ticks, chunk, lambda s, n: timeChunk(s, n, changed))


# --- Reporting -----------------------------------------------------------------


@dataclass
class Line:
    """
    One variant of the summary.
    """

    name: str
    a: float
    b: float
    ratio: float
    roundRatio: float


def summarize(a: Subject, b: Subject) -> list[Line]:
    lines = []
    for name in ("unchanged", "changed"):
        xa, xb = getattr(a, name), getattr(b, name)
        ratio, roundRatio = medianRatios(xb, xa)
        lines.append(
            Line(name, statistics.median(xa), statistics.median(xb), ratio, roundRatio)
        )
    return lines


VARIANTS = {
    "unchanged": "tick, figures unchanged (no send)",
    "changed": "tick, figures changed (one STATUS= sent)",
}


def markdown(a: Subject, b: Subject, lines: Sequence[Line], settings: str) -> str:
    table = markdownTable(
        ["Status tick (median µs)", a.label, b.label, "ratio"],
        "lrrr",
        [
            [VARIANTS[line.name], f"{line.a:.2f}", f"{line.b:.2f}",
             f"{line.roundRatio:.2f}"]
            for line in lines
        ],
    )  # fmt: skip
    return table + f"\n{settings}\n"


def versions() -> str:
    return versionLine(type(reactor).__name__)


# --- Main ----------------------------------------------------------------------


async def run(args: argparse.Namespace, base: Path) -> int:
    capacity = queueCapacity(base, b"STATUS=" + b"x" * 143)
    chunk = chunkSize(capacity)
    print(
        f"receivers: a non-reading receiver takes {capacity} datagram(s);"
        f" ticks are timed in chunks of {chunk}, the receiver read empty"
        " (untimed) between chunks"
    )
    subjects = [makeSubject("A", args.small, base), makeSubject("B", args.large, base)]
    a, b = subjects
    started: list[Subject] = []
    code = 0
    try:
        for s in subjects:
            s.service.startService()
            started.append(s)
        for s in subjects:
            await s.service.whenReady().addTimeout(COUNT_TIMEOUT, reactor)
            await waitFor(lambda s=s: s.receiver.ready, COUNT_TIMEOUT, "READY=1")
            print(
                f"{s.key}: WebService ready on {HOST}:{s.port}, READY=1 received"
                f" at {s.receiver.path}"
            )
        for s in subjects:
            began = time.monotonic()
            s.client = ClientProcess(s.port, s.connections)
            held = await s.client.opened()
            stats = s.service.tracker.stats
            await waitFor(
                lambda s=s, stats=stats: (
                    stats.openConnections == s.connections
                    and stats.completed == s.connections
                ),
                COUNT_TIMEOUT,
                f"{s.key} to count {s.connections} connections and requests",
            )
            print(
                f"{s.key}: client process {s.client.proc.pid} opened {held}"
                " keep-alive connection(s), one GET / each, in"
                f" {time.monotonic() - began:.1f}s"
            )
        # Let the last writes and log events settle.
        await deferLater(reactor, 0.5, lambda: None)
        print("what the services see:")
        problems = []
        for s in subjects:
            problems += verifyConnections(s)
            s.receiver.countStatus()
            s.service._statusTick()  # one real tick: the line systemd would show
            await deferLater(reactor, 0.05, lambda: None)
            s.receiver.countStatus()
            print(f"  {s.key} STATUS: {s.receiver.lastStatus}")
            expect = f"Connections: {s.connections};"
            if expect not in (s.receiver.lastStatus or ""):
                problems.append(f"{s.key}: STATUS does not say {expect!r}")
        if problems:
            raise CountMismatch("; ".join(problems))

        # Warm up both variants, untimed.
        for changed in (False, True):
            timeRound(subjects, chunk * 200, chunk, changed)
        for s in subjects:
            s.ticks = s.sent = 0
        print()
        print(
            f"{args.rounds} round(s) of {args.ticks} ticks per service and variant;"
            " timed in interleaved chunks of"
            f" {chunk}, A B B A ..., starting with A in odd rounds, B in even ones"
        )
        print("µs per tick")
        print(
            f"{'round':>5} {'order':>5}  {'A unchg':>8} {'B unchg':>8} {'B/A':>5}"
            f"  {'A chg':>8} {'B chg':>8} {'B/A':>5}"
        )
        for r in range(args.rounds):
            order = subjects if r % 2 == 0 else list(reversed(subjects))
            for changed in (False, True):
                perTick = timeRound(order, args.ticks, chunk, changed)
                for s in order:
                    (s.changed if changed else s.unchanged).append(perTick[s.key])
            print(
                f"{r + 1:>5} {''.join(s.key for s in order):>5}"
                f"  {a.unchanged[-1]:8.2f} {b.unchanged[-1]:8.2f}"
                f" {b.unchanged[-1] / a.unchanged[-1]:5.2f}"
                f"  {a.changed[-1]:8.2f} {b.changed[-1]:8.2f}"
                f" {b.changed[-1] / a.changed[-1]:5.2f}",
                flush=True,
            )
            # Let the reactor breathe between rounds.
            await deferLater(reactor, 0, lambda: None)

        print()
        print("after the timed ticks:")
        problems = []
        for s in subjects:
            problems += verifyConnections(s)
            print(
                f"    {s.key}: {s.ticks} timed ticks, {s.sent} of them sent STATUS=;"
                f" receiver got {s.receiver.statusMessages} STATUS= in all (with"
                " READY=1's, the check tick's and the warm-up's)"
            )
        if problems:
            raise CountMismatch("; ".join(problems))

        lines = summarize(a, b)
        print()
        print(f"Summary (medians of {args.rounds} rounds of {args.ticks} ticks)")
        print(f"  {'':<42} {'A':>9} {'B':>9}  {'B/A':>5} {'B/A rnd':>7}")
        print(f"  {'':<42} {a.connections:>9} {b.connections:>9}   (connections)")
        for line in lines:
            print(
                f"  {VARIANTS[line.name]:<42} {line.a:9.2f} {line.b:9.2f}"
                f"  {line.ratio:5.2f} {line.roundRatio:7.2f}   µs/tick"
            )
        print(
            "  B/A: ratio of the medians; B/A rnd: median of the per-round ratios"
            f" ({b.connections / a.connections:.0f}x the connections)"
        )
        if args.out is not None:
            settings = (
                f"`WebService._statusTick()` timed in-process ({args.rounds} rounds"
                f" of {args.ticks} ticks per service and variant, interleaved in chunks"
                f" of {chunk}, A B B A ...)"
                f" on two WebServices serving the demo page, with {a.connections}"
                f" and {b.connections} idle used keep-alive connections (checked"
                " from RequestStats and the STATUS line), each with a real Notifier"
                f" to a real AF_UNIX receiver; ratio: median of per-round B/A."
                f" {versions()}."
            )
            writeOut(args.out, markdown(a, b, lines, settings))
    except CountMismatch as e:
        print(f"\nstatus_tick: COUNT MISMATCH: {e}", file=sys.stderr)
        code = 1
    finally:
        for s in subjects:
            if s.client is not None:
                s.client.close()
                s.client = None
        for s in started:
            try:
                await Deferred.fromCoroutine(_stop(s)).addTimeout(STOP_TIMEOUT, reactor)
            except Exception as e:
                print(f"{s.key}: did not stop cleanly: {e!r}", file=sys.stderr)
        for s in subjects:
            s.receiver.close()
    return code


async def _stop(s: Subject) -> None:
    await s.service.stopService()


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time WebService's status tick with few and many connections.",
    )
    parser.add_argument(
        "--small", type=int, default=10, help="connections to A (default 10)"
    )
    parser.add_argument(
        "--large", type=int, default=10_000, help="connections to B (default 10000)"
    )
    parser.add_argument(
        "--ticks",
        type=int,
        default=20000,
        help="ticks per service, variant and round (default 20000)",
    )
    parser.add_argument("--rounds", type=int, default=8, help="rounds (default 8)")
    addOutArgument(parser)
    parser.add_argument(
        "--client", nargs=2, type=int, metavar=("PORT", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if min(args.small, args.large, args.ticks, args.rounds) < 1:
        parser.error("all counts must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    if args.client is not None:
        port, count = args.client
        return clientMain(port, count)
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )
    print(versions())
    try:
        print(raiseFileLimit(args.small + args.large + FD_MARGIN))
    except BenchError as e:
        print(f"status_tick: FAILED: {e}", file=sys.stderr)
        return 2
    outcome: list[int] = []

    with tempfile.TemporaryDirectory(prefix="status_tick.") as tmp:

        def finished(result: object) -> None:
            if isinstance(result, Failure):
                if result.check(BenchError):
                    print(f"\nstatus_tick: FAILED: {result.value}", file=sys.stderr)
                else:
                    print("\nstatus_tick: FAILED:", file=sys.stderr)
                    result.printTraceback(file=sys.stderr)
                outcome.append(2)
            else:
                assert isinstance(result, int)
                outcome.append(result)
            reactor.stop()

        def start() -> None:
            d = Deferred.fromCoroutine(run(args, Path(tmp)))
            d.addTimeout(TOTAL_TIMEOUT, reactor)
            d.addBoth(finished)

        reactor.callWhenRunning(start)
        reactor.run()
    return outcome[0] if outcome else 2


if __name__ == "__main__":
    sys.exit(main())
