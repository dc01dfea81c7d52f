"""
A steady stream of HTTP requests from a separate process, for the
zero-downtime tests: each request on a new connection (Connection: close),
or with --keep-alive on one kept-open connection per thread (http.client,
which does not retry: a request that fails is counted and the connection
opened again), from several threads, until a stop file appears or the time
is up.  Prints one JSON line: {"ok": N, "failed": N, "errors": [first few]}.

    python loadgen.py URL --stop-file PATH [--threads 4] [--max-seconds 120]
        [--keep-alive]

Tests run it with L{steadyLoad}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit


@contextmanager
def steadyLoad(
    url: str,
    stopFile: Path,
    threads: int = 4,
    maxSeconds: float = 120,
    keepAlive: bool = False,
) -> Iterator[dict[str, object]]:
    """
    Run this load from a separate process for the duration of the C{with}
    block; the dict it gives is filled with the counts when the block ends.
    """
    load = subprocess.Popen(
        [
            sys.executable,
            __file__,
            url,
            "--stop-file",
            str(stopFile),
            "--threads",
            str(threads),
            "--max-seconds",
            str(maxSeconds),
            *(["--keep-alive"] if keepAlive else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    counts: dict[str, object] = {}
    try:
        yield counts
    finally:
        stopFile.touch()
        out, _ = load.communicate(timeout=60)
        counts.update(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--keep-alive", action="store_true")
    args = parser.parse_args()
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []
    deadline = time.monotonic() + args.max_seconds

    headers = {} if args.keep_alive else {"Connection": "close"}

    def worker() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=20)
        while time.monotonic() < deadline and not os.path.exists(args.stop_file):
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                if not args.keep_alive:
                    connection.close()
                good = response.status == 200 and body != b""
                problem = f"status {response.status}"
            except Exception as e:  # noqa: BLE001 - every failure counts
                good, problem = False, f"{type(e).__name__}: {e}"
                connection.close()
            with lock:
                if good:
                    counts["ok"] += 1
                else:
                    counts["failed"] += 1
                    if len(errors) < 10:
                        errors.append(problem)

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({**counts, "errors": errors}), flush=True)


if __name__ == "__main__":
    main()
