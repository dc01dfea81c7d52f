"""
A WSGI application module that imports in the master of --workers (which
checks it) but fails in every worker process: workers that keep exiting
at start.
"""

import sys

if "txsdnotify.cli.worker" in sys.modules or sys.argv[0].endswith("worker.py"):
    raise RuntimeError("this application does not start in a worker")


def app(environ: object, start_response: object) -> list[bytes]:
    return [b"never\n"]
