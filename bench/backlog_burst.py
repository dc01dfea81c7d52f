#!/usr/bin/env python3
"""
A burst of new connections against bare ``twistd -n web`` (listen backlog
50, Twisted's default) and ``twistd -n sdweb`` (1024, capped by
``net.core.somaxconn``), serving the same small file.

Usage::

    python bench/backlog_burst.py [--clients N] [--rounds R]

Each run opens N non-blocking connections at once (default 2000), sends one
``GET`` on each as soon as it is connected, and counts the responses that
arrive within 1 s, within 3 s and in all: a connection whose SYN the
kernel dropped because the accept queue was full waits for it to be sent
again (after 1 s, then 3 s, 7 s, 15 s).  Every response is waited for (up to 20 s), so
that no run leaves work behind for the next.  Runs alternate A B B A (R
blocks), after one uncounted burst each.  The process
and the servers each need N file descriptors: the soft limit is raised to
the hard one (``ulimit -Hn``), which must allow twice N.
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import select
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _common import (
    HOST,
    BenchError,
    NotifyListener,
    Server,
    makeServers,
    serverEnvironment,
    startAndWait,
    stopServers,
)

PATIENCE = 20.0  # seconds a burst may take in all
REQUEST = b"GET /f.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def answers(server: Server) -> str | None:
    """
    A readiness probe: the server answers C{GET /f.txt}.
    """
    conn = http.client.HTTPConnection(HOST, server.port, timeout=5)
    try:
        conn.request("GET", "/f.txt")
        status = conn.getresponse().status
    finally:
        conn.close()
    return None if status == 200 else f"HTTP {status}"


def burst(port: int, clients: int) -> list[float]:
    """
    Connect C{clients} times at once; the seconds each answered one took.
    """
    poller = select.epoll()
    socks: dict[int, socket.socket] = {}
    started = time.monotonic()
    for _ in range(clients):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((HOST, port))
        socks[s.fileno()] = s
        poller.register(s.fileno(), select.EPOLLOUT)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    try:
        done = 0
        while done < clients and time.monotonic() - started < PATIENCE:
            for fd, events in poller.poll(0.05):
                s = socks[fd]
                try:
                    if events & select.EPOLLIN:
                        if s.recv(65536).startswith(b"HTTP/1.1 200"):
                            latencies.append(time.monotonic() - started)
                        poller.unregister(fd)
                        done += 1
                    elif events & select.EPOLLOUT:
                        error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if error:
                            raise OSError(error, os.strerror(error))
                        s.send(REQUEST)
                        poller.modify(fd, select.EPOLLIN)
                except OSError as e:
                    errors[e.strerror] = errors.get(e.strerror, 0) + 1
                    poller.unregister(fd)
                    done += 1
    finally:
        poller.close()
        for s in socks.values():
            s.close()
    if errors:
        print(f"  errors: {errors}")
    return latencies


def describe(latencies: list[float]) -> str:
    """
    How many were answered within 1 s, 3 s, and in all.
    """
    within = [sum(1 for t in latencies if t < limit) for limit in (1.0, 3.0)]
    return f"{within[0]} within 1 s, {within[1]} within 3 s, {len(latencies)} in all"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    # The servers inherit this limit: one too low for the burst would make
    # them fail with EMFILE rather than show their backlog.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * args.clients + 256:
        print(f"backlog_burst: ulimit -Hn {hard} is too low", file=sys.stderr)
        return 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results: dict[str, list[list[float]]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="backlog_burst.") as tmp:
        base = Path(tmp)
        (base / "docroot").mkdir()
        (base / "docroot" / "f.txt").write_text("hello\n")
        env, _ = serverEnvironment()
        listener = NotifyListener(base / "notify.sock")
        listener.start()
        servers = makeServers(
            Server, base, env, listener.path, ["--path", str(base / "docroot")]
        )
        try:
            startAndWait(servers, listener, base, answers)
            for server in servers:  # warm-up, not counted
                burst(server.port, args.clients)
            for _ in range(args.rounds):
                for key in "ABBA":
                    server = servers[0] if key == "A" else servers[1]
                    time.sleep(1.0)
                    latencies = burst(server.port, args.clients)
                    results[key].append(latencies)
                    print(f"{key} ({server.label}): {describe(latencies)}")
        except BenchError as e:
            print(f"backlog_burst: FAILED: {e}", file=sys.stderr)
            return 2
        finally:
            stopServers(servers, listener)
    print(f"all runs, of {args.clients} clients each, answered:")
    for key, label in (("A", "twistd web (backlog 50)"), ("B", "sdweb")):
        print(f"  {label}: " + "; ".join(describe(r) for r in results[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
