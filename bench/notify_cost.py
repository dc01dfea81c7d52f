#!/usr/bin/env python3
"""
The cost of sending one sd_notify message: ours against the usual clients.

Usage::

    python bench/notify_cost.py [--install] [--messages N] [--rounds R]
                                [--size BYTES] [--out FILE]

One ``STATUS=...`` datagram of ``--size`` bytes (default 100) is sent, again
and again, to a real ``AF_UNIX`` ``SOCK_DGRAM`` socket that this script binds
in a temporary directory, with ``NOTIFY_SOCKET`` pointing at it, by:

* A ``txsdnotify.Notifier.send({"STATUS": ...})``: ours, the asynchronous
  client; one non-blocking connected socket, kept open;
* B ``txsdnotify.notifyNow({"STATUS": ...})``: ours, one synchronous call that
  opens, connects and closes a socket each time;
* C ``sdnotify.SystemdNotifier().notify("STATUS=...")`` from PyPI (one
  notifier made once: a blocking connected socket, kept open; each call is
  a ``sendall`` of the encoded string, with no checks);
* D ``systemd.daemon.notify("STATUS=...")`` from systemd-python, i.e.
  libsystemd's ``sd_notify()`` (a new socket for every message);
* F a bare ``socket.send(bytes)`` of the ready-made datagram on a connected
  socket: not a client, the floor that any Python client pays.

C and D are third-party packages and are not installed at import.  With
``--install`` the script first runs (each step may fail; the benchmark goes
on with what it has)::

    apt-get install -y libsystemd-dev pkg-config gcc   # as root, for D's build
    python -m pip install sdnotify
    python -m pip install systemd-python

A package that cannot be imported is reported with the reason and left out.

Draining.  The receiver is drained *between batches*, not by a thread: this
machine's ``net.unix.max_dgram_qlen`` may be as low as the kernel's default
of 10 (systemd raises it to 512 at boot), and a reading thread would compete
for the GIL with the sender being timed.  So the script first measures how
many datagrams the receiver's queue takes before a send would block (its
capacity), and then times sends in chunks smaller than that, reading the
queue empty (untimed) after each chunk.  The queue is therefore never full:
no client ever waits, and ``Notifier`` never has to queue or merge a message.
After every chunk each datagram is checked (count and exact bytes), so every
message is accounted for; ``Notifier.pending`` must stay 0.

Timing.  A batch is ``--messages`` sends (default 20000) of one client, timed
with ``time.perf_counter_ns`` around every chunk and summed.  Each round runs
one batch of every client, side by side: a chunk of each client in turn, the
order reversed after every chunk (A B C D F F D C B A ...) and each round
starting from the other end, so that on a shared, noisy machine a burst of
noise hits all clients alike.  The summary gives, per client, the median over the
rounds of microseconds per message, and the ratio to A: both the ratio of the
medians and the median of the per-round ratios (steadier when the machine's
speed changes between rounds).  ``--out FILE`` also writes the summary as
Markdown.

Exit status: 0 when every message arrived; 1 if any was lost or garbled; 2 if
the benchmark could not run.  Only the standard library is used, plus
txsdnotify (from the repository when not installed) and the two packages
above when present.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    BenchError,
    DatagramReceiver,
    addOutArgument,
    chunkSize,
    medianRatios,
    packageVersion,
    queueCapacity,
    timeInterleaved,
    useRepositoryTxsdnotify,
    writeOut,
)

useRepositoryTxsdnotify()

from txsdnotify import Notifier, notifyNow  # noqa: E402

INSTALL_TIMEOUT = 600.0  # seconds for one apt-get or pip step


# --- Installing the other clients ---------------------------------------------


def runStep(argv: list[str]) -> bool:
    """
    Run one install command, showing it and the end of its output.
    """
    print(f"$ {' '.join(argv)}", flush=True)
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"  failed: {e}")
        return False
    lines = (done.stdout + done.stderr).strip().splitlines()
    for line in lines[-3:]:
        print(f"  {line}")
    if done.returncode != 0:
        print(f"  failed with status {done.returncode}")
    return done.returncode == 0


def install() -> None:
    """
    Install sdnotify and systemd-python (and what the latter's build needs).
    """
    packages = ["libsystemd-dev", "pkg-config", "gcc"]
    if shutil.which("apt-get") is None:
        print(f"no apt-get: install {' '.join(packages)} by other means")
    elif os.geteuid() != 0:
        print(f"not root: cannot apt-get install {' '.join(packages)}")
    else:
        aptEnv = ["env", "DEBIAN_FRONTEND=noninteractive"]
        argv = aptEnv + ["apt-get", "install", "-y", "-q"] + packages
        if not runStep(argv):
            # A fresh machine may not have package lists yet.
            runStep(aptEnv + ["apt-get", "update", "-q"])
            runStep(argv)
    for package in ("sdnotify", "systemd-python"):
        runStep([sys.executable, "-m", "pip", "install", "-q", package])
    importlib.invalidate_caches()


# --- The receiver -------------------------------------------------------------


class Receiver(DatagramReceiver):
    """
    A bound C{AF_UNIX} datagram socket, read empty on demand.

    @ivar expected: What every datagram should be.
    """

    def __init__(self, path: Path, expected: bytes) -> None:
        super().__init__(path)
        self.expected = expected


def readSysctl(name: str) -> str:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return "?"


# --- The clients --------------------------------------------------------------


@dataclass
class Client:
    """
    One way of sending the message, ready to be called.
    """

    key: str
    label: str
    send: Callable[[], object]
    check: Callable[[], str | None] = lambda: None  # a problem, or None
    close: Callable[[], None] = lambda: None
    sent: int = 0
    received: int = 0
    garbled: int = 0
    usPerMessage: list[float] = field(default_factory=list)


def makeClients(
    address: str, text: str, message: bytes
) -> tuple[list[Client], list[str]]:
    """
    The clients that can run here, and why the others cannot.
    """
    clients: list[Client] = []
    missing: list[str] = []

    notifier = Notifier(address)
    fields = {"STATUS": text}
    ours = notifier.send

    def notifierProblem() -> str | None:
        if notifier.pending:
            return f"{notifier.pending} message(s) queued in Notifier"
        return None

    clients.append(
        Client(
            "A",
            "txsdnotify Notifier.send",
            lambda: ours(fields),
            notifierProblem,
            notifier.close,
        )
    )
    clients.append(Client("B", "txsdnotify notifyNow", lambda: notifyNow(fields)))

    statusLine = "STATUS=" + text
    try:
        sdnotify = importlib.import_module("sdnotify")
    except ImportError as e:
        missing.append(
            f"C sdnotify: cannot import it ({e}); run with --install"
            " (pip install sdnotify)"
        )
    else:
        n = sdnotify.SystemdNotifier()
        if n.socket is None:
            missing.append("C sdnotify: it found no NOTIFY_SOCKET")
        else:
            notify = n.notify
            clients.append(
                Client(
                    "C",
                    "sdnotify SystemdNotifier.notify",
                    lambda: notify(statusLine),
                    close=n.socket.close,
                )
            )
    try:
        daemon = importlib.import_module("systemd.daemon")
    except ImportError as e:
        missing.append(
            f"D libsystemd: cannot import systemd.daemon ({e}); run with --install"
            " (apt-get install libsystemd-dev pkg-config gcc;"
            " pip install systemd-python)"
        )
    else:
        sdNotify = daemon.notify
        clients.append(
            Client(
                "D",
                "libsystemd sd_notify (systemd-python)",
                lambda: sdNotify(statusLine),
            )
        )

    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    raw.connect(address)
    rawSend = raw.send
    clients.append(
        Client(
            "F",
            "floor: socket.send(bytes)",
            lambda: rawSend(message),
            close=raw.close,
        )
    )
    return clients, missing


# --- Measuring ----------------------------------------------------------------


def timeChunk(client: Client, receiver: Receiver, n: int) -> int:
    """
    Time C{n} sends of one client, then read the receiver empty and check
    what arrived; nanoseconds.
    """
    send = client.send
    clock = time.perf_counter_ns
    steps = range(n)
    start = clock()
    for _ in steps:
        send()
    elapsed = clock() - start
    client.sent += n
    got = receiver.drain()
    client.received += len(got)
    client.garbled += sum(1 for d in got if d != receiver.expected)
    problem = client.check()
    if problem is not None:
        raise BenchError(f"{client.key} ({client.label}): {problem}")
    return elapsed


def timeRound(
    order: Sequence[Client], receiver: Receiver, messages: int, chunk: int
) -> dict[str, float]:
    """
    Send C{messages} messages with every client, interleaved chunk by chunk
    with the order reversed after each chunk (A B ... B A ...), so that the
    clients are measured side by side; microseconds per message by client.
    """
    return timeInterleaved(
        order, messages, chunk, lambda c, n: timeChunk(c, receiver, n)
    )


# --- Reporting ----------------------------------------------------------------


@dataclass
class Row:
    """
    The summary of one client.
    """

    client: Client
    median: float
    low: float
    high: float
    ratioOfMedians: float
    medianRatio: float


def summarize(clients: Sequence[Client]) -> list[Row]:
    """
    Medians per client and the ratios to A (ours, Notifier.send).
    """
    ours = next(c for c in clients if c.key == "A")
    rows = []
    for c in clients:
        ratioOfMedians, medianRatio = medianRatios(c.usPerMessage, ours.usPerMessage)
        rows.append(
            Row(
                c,
                statistics.median(c.usPerMessage),
                min(c.usPerMessage),
                max(c.usPerMessage),
                ratioOfMedians,
                medianRatio,
            )
        )
    return rows


def versions() -> dict[str, str]:
    """
    Versions of what is measured.
    """

    def dist(name: str) -> str:
        return packageVersion(name, "not installed")

    libsystemd = "?"
    try:
        out = subprocess.run(
            ["pkg-config", "--modversion", "libsystemd"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            libsystemd = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "python": platform.python_version(),
        "twisted": dist("twisted"),
        "sdnotify": dist("sdnotify"),
        "systemd-python": dist("systemd-python"),
        "libsystemd": libsystemd,
        "kernel": platform.release(),
        "cores": str(os.cpu_count()),
    }


def markdown(
    rows: Sequence[Row],
    missing: Sequence[str],
    settings: str,
    vers: dict[str, str],
) -> str:
    """
    The summary as a small Markdown table.
    """
    lines = [
        "| Client | µs per message (median) | min – max | × ours (Notifier.send)"
        " | messages checked |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = r.client
        lines.append(
            f"| {c.key}: {c.label} | {r.median:.2f} | {r.low:.2f} – {r.high:.2f}"
            f" | {r.medianRatio:.2f} | {c.received}/{c.sent} |"
        )
    text = "\n".join(lines) + "\n\n"
    for m in missing:
        text += f"Not measured: {m}.\n\n"
    text += (
        f"{settings}. Ratio: median of the per-round ratios to A."
        f" Python {vers['python']}, sdnotify {vers['sdnotify']},"
        f" systemd-python {vers['systemd-python']} (libsystemd"
        f" {vers['libsystemd']}), kernel {vers['kernel']}, {vers['cores']} cores.\n"
    )
    return text


# --- Main ---------------------------------------------------------------------


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time one sd_notify message: txsdnotify, sdnotify, libsystemd.",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="first apt-get/pip install sdnotify and systemd-python",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=20000,
        help="messages per batch (default 20000)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=8,
        help="rounds; each runs one batch of every client (default 8)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=100,
        help="bytes per datagram, STATUS= included (default 100)",
    )
    addOutArgument(parser)
    args = parser.parse_args(argv)
    if args.messages < 1 or args.rounds < 1 or args.size < 8:
        parser.error("--messages and --rounds must be >= 1, --size >= 8")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    if args.install:
        install()
    vers = versions()
    print(
        f"python {vers['python']}, twisted {vers['twisted']},"
        f" sdnotify {vers['sdnotify']}, systemd-python {vers['systemd-python']}"
        f" (libsystemd {vers['libsystemd']}), kernel {vers['kernel']},"
        f" cores {vers['cores']}"
    )
    text = ("Total requests: 1234; In flight: 3; Connections: 17; " * 4)[
        : args.size - len("STATUS=")
    ]
    message = b"STATUS=" + text.encode()
    assert len(message) == args.size

    clients: list[Client] = []
    with tempfile.TemporaryDirectory(prefix="notify_cost.") as tmp:
        base = Path(tmp)
        receiver = Receiver(base / "notify.sock", message)
        oldEnv = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = str(receiver.path)
        try:
            capacity = queueCapacity(base, message)
            chunk = chunkSize(capacity)
            print(
                f"receiver {receiver.path}: net.unix.max_dgram_qlen="
                f"{readSysctl('net.unix.max_dgram_qlen')}, a non-reading receiver"
                f" takes {capacity} datagram(s) of {len(message)} bytes from one"
                f" socket; sends are timed in chunks of {chunk}, the receiver is"
                " read empty (untimed) between chunks"
            )
            clients, missing = makeClients(str(receiver.path), text, message)
            for m in missing:
                print(f"NOT MEASURED: {m}")
            # Warm up: one chunk each, checked like the rest.
            timeRound(clients, receiver, chunk * 100, chunk)
            for c in clients:
                c.sent = c.received = c.garbled = 0
            keys = [c.key for c in clients]
            print(
                f"{args.rounds} round(s) of {args.messages} messages per client;"
                f" timed in interleaved chunks of {chunk}, order"
                f" {' '.join(keys)} {' '.join(reversed(keys))} ..., each round"
                " starting from the other end"
            )
            print()
            print("µs per message")
            print(f"{'round':>5}  " + "  ".join(f"{k:>7}" for k in keys))
            for r in range(args.rounds):
                order = clients if r % 2 == 0 else list(reversed(clients))
                perMessage = timeRound(order, receiver, args.messages, chunk)
                for c in order:
                    c.usPerMessage.append(perMessage[c.key])
                print(
                    f"{r + 1:>5}  "
                    + "  ".join(f"{c.usPerMessage[-1]:7.2f}" for c in clients),
                    flush=True,
                )
        except BenchError as e:
            print(f"\nnotify_cost: FAILED: {e}", file=sys.stderr)
            return 2
        finally:
            for c in clients:
                c.close()
            receiver.close()
            if oldEnv is None:
                os.environ.pop("NOTIFY_SOCKET", None)
            else:
                os.environ["NOTIFY_SOCKET"] = oldEnv

    rows = summarize(clients)
    print()
    print(f"Summary (medians of {args.rounds} rounds of {args.messages} messages)")
    print(
        f"  {'client':<40} {'µs/msg':>7} {'min':>7} {'max':>7}"
        f" {'x A':>6} {'x A/rnd':>7}  arrived"
    )
    lost = 0
    for row in rows:
        c = row.client
        lost += c.sent - c.received + c.garbled
        ok = "all" if c.received == c.sent and not c.garbled else "MISSING"
        print(
            f"  {c.key} {c.label:<38} {row.median:7.2f} {row.low:7.2f}"
            f" {row.high:7.2f} {row.ratioOfMedians:6.2f} {row.medianRatio:7.2f}"
            f"  {c.received}/{c.sent} {ok}"
            + (f", {c.garbled} garbled" if c.garbled else "")
        )
    print(
        "  x A: ratio of the medians to A (ours, Notifier.send);"
        " x A/rnd: median of the per-round ratios"
    )
    for m in missing:
        print(f"  not measured: {m}")
    if args.out is not None:
        settings = (
            f"{args.rounds} rounds of {args.messages} `STATUS=` messages of"
            f" {len(message)} bytes per client; sends timed in chunks of {chunk},"
            " the clients interleaved chunk by chunk (A B … B A …), with the"
            " receiver (a real AF_UNIX datagram socket) read empty between chunks,"
            " every message checked"
        )
        writeOut(args.out, markdown(rows, missing, settings, vers))
    if lost:
        print(f"notify_cost: {lost} message(s) lost or garbled", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
