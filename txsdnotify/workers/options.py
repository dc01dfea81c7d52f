# -*- test-case-name: tests.test_workers -*-
"""
Which C{twistd sdweb} options go with C{--workers}.

The master binds plain sockets and hands them to the workers, so only
stream sockets that a worker can adopt as they are will do: TCP, UNIX and
the ones systemd passes.  TLS and the separate health and agent ports are
refused at start-up with one line rather than half working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage

__all__ = ["WORKER_PREFIXES", "checkWorkerOptions"]

WORKER_PREFIXES = ("tcp:", "tcp6:", "unix:", "systemd:")
"""
The endpoint types a master can share with its workers.
"""


def checkWorkerOptions(config: Mapping[str, Any]) -> None:
    """
    Refuse what C{--workers} cannot serve yet.

    @raise usage.UsageError: With the reason, in one line.
    """
    for option in ("https", "health-port", "agent-port"):
        if config.get(option) is not None:
            raise usage.UsageError(f"--{option} does not work with --workers yet")
    for description in config["ports"]:
        if not description.startswith(WORKER_PREFIXES):
            raise usage.UsageError(
                f"--port {description!r} does not work with --workers:"
                " only tcp:, tcp6:, unix: and systemd: ports can be shared"
            )
