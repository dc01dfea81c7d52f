# -*- test-case-name: tests.test_workers -*-
"""
The command line of one worker process of C{twistd -n sdweb --workers N}:
C{python -m txsdnotify.cli.worker --listen FD:FAMILY ... -- SDWEB-ARGUMENTS}.

It reads the sdweb options as C{twistd sdweb} would (ignoring the ports: it
serves the sockets the master passed), loads the application, and hands the
service to L{txsdnotify.workers.worker.runWorker}, which runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from twisted.internet.interfaces import IStreamServerEndpoint

from txsdnotify.cli.tap import Options, limitsOf, makeSite
from txsdnotify.service import WebService
from txsdnotify.systemd.notify import Notifier
from txsdnotify.workers.worker import WorkerStartError, runWorker

__all__ = ["WorkerOptions", "main"]

MODULE = "txsdnotify.cli.worker"
"""
What the master runs with C{python -m}.
"""


class WorkerOptions(Options):
    """
    The sdweb options, as a worker reads them: the ports are the master's.
    """

    inWorker = True

    def opt_port(self, port: str) -> None:
        """
        Ignored: the worker serves the sockets it inherited.
        """

    opt_p = opt_port


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument(
        "--listen", action="append", default=[], help="FD:FAMILY (repeatable)"
    )
    parser.add_argument("--report-interval", type=float, default=1.0)
    parser.add_argument("sdweb", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.sdweb[:1] == ["--"]:
        args.sdweb = args.sdweb[1:]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run one worker until it is told to stop; exit 1 if it cannot start.
    """
    from twisted.internet import reactor

    args = _parse(sys.argv[1:] if argv is None else argv)

    def makeService(endpoints: list[IStreamServerEndpoint | str]) -> WebService:
        config = WorkerOptions(environ=dict(os.environ), inherited=[])
        try:
            config.parseOptions(args.sdweb)
        except SystemExit as e:
            raise WorkerStartError(
                str(e.code) if e.code is not None else "exited"
            ) from None
        return WebService(
            makeSite(config),
            endpoints,
            notifier=Notifier(None, reactor=reactor),
            reactor=reactor,
            environ={},
            statusInterval=0,
            drainTimeout=config["drain-timeout"],
            inherited=[],
            healthPath=config["health"],
            healthGrace=config["health-grace"],
            httpParser=config["http-parser"],
            limits=limitsOf(config),
        )

    runWorker(args.listen, args.report_interval, makeService)


if __name__ == "__main__":
    main()
