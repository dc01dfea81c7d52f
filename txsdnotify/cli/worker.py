# -*- test-case-name: tests.test_workers -*-
"""
The command line of one worker process of C{twistd -n sdweb --workers N}:
C{python -m txsdnotify.cli.worker --listen FD:FAMILY ... -- SDWEB-ARGUMENTS}.

It reads the sdweb options as C{twistd sdweb} would (ignoring the ports: it
serves the sockets the master passed), loads the application, and hands the
service to L{txsdnotify.workers.worker.runWorker}, which runs it.  A socket
named by C{--tls INDEX=DESCRIPTION} (the master's C{ssl:} port) is served
in TLS with that port's key and certificate.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from twisted.internet.interfaces import IStreamServerEndpoint

from txsdnotify.cli.tap import Options, countThreads, limitsOf, makeSite
from txsdnotify.metrics import newRegistry
from txsdnotify.service import WebService
from txsdnotify.systemd.notify import Notifier
from txsdnotify.web.tls import TLSServerEndpoint, TLSSetupError, checkTLS, serverContext
from txsdnotify.workers.worker import WorkerStartError, runWorker

__all__ = ["WorkerOptions", "main"]

IDLE_GRACE = 1.0
"""
Seconds a draining worker keeps an idle keep-alive connection open for one
more request.
"""

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
    parser.add_argument(
        "--tls",
        action="append",
        default=[],
        help="INDEX=DESCRIPTION: serve the INDEX-th --listen socket in TLS,"
        " as the ssl: port DESCRIPTION (repeatable)",
    )
    parser.add_argument("--report-interval", type=float, default=1.0)
    parser.add_argument("sdweb", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.sdweb[:1] == ["--"]:
        args.sdweb = args.sdweb[1:]
    return args


def withTLS(
    endpoints: list[IStreamServerEndpoint | str], specs: Sequence[str]
) -> list[IStreamServerEndpoint | str]:
    """
    C{endpoints}, those named in C{specs} (C{INDEX=DESCRIPTION}) served in
    TLS as the C{ssl:} port C{DESCRIPTION}.

    @raise WorkerStartError: The key or certificate cannot serve (say, they
        changed since the master checked them).
    """
    wrapped = list(endpoints)
    for spec in specs:
        index, description = spec.split("=", 1)
        endpoint = wrapped[int(index)]
        assert not isinstance(endpoint, str)
        try:
            checkTLS(description)
            context = serverContext(description)
        except TLSSetupError as e:
            raise WorkerStartError(f"twistd sdweb: {e}") from None
        wrapped[int(index)] = TLSServerEndpoint(endpoint, context)
    return wrapped


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
        endpoints = withTLS(endpoints, args.tls)
        # The master serves --metrics-port; a worker needs its figures (the
        # gauges it reports) whenever the master serves metrics.
        wantMetrics = config["metrics"] is not None or config["metrics-port"]
        service = WebService(
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
            metricsPath=config["metrics"],
            metricsRegistry=newRegistry() if wantMetrics else None,
            httpParser=config["http-parser"],
            limits=limitsOf(config),
        )
        countThreads(service, config)
        # The listening socket stays open for the other workers: a request
        # arriving on an idle keep-alive connection as this worker drains
        # is answered (with Connection: close) rather than cut off.
        service.idleGrace = IDLE_GRACE
        return service

    runWorker(args.listen, args.report_interval, makeService)


if __name__ == "__main__":
    main()
