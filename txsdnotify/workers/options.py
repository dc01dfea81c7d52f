# -*- test-case-name: tests.test_workers -*-
"""
Which C{twistd sdweb} options go with C{--workers}.

The master binds the sockets and hands them to the workers, so only stream
sockets that a worker can adopt will do: TCP, UNIX, the ones systemd passes,
and TLS (bound as TCP by the master; each worker adds the TLS).  Anything
else is refused at start-up with one line rather than half working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage

__all__ = ["WORKER_PREFIXES", "checkWorkerOptions"]

WORKER_PREFIXES = ("tcp:", "tcp6:", "unix:", "systemd:", "ssl:")
"""
The endpoint types a master can share with its workers.
"""


def checkWorkerOptions(config: Mapping[str, Any]) -> None:
    """
    Refuse what C{--workers} cannot serve.

    @raise usage.UsageError: With the reason, in one line.
    """
    for description in config["ports"]:
        if not description.startswith(WORKER_PREFIXES):
            raise usage.UsageError(
                f"--port {description!r} does not work with --workers:"
                " only tcp:, tcp6:, unix:, ssl: and systemd: ports can be shared"
            )
