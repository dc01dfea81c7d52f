# -*- test-case-name: tests.test_workers -*-
"""
Which C{twistd sdweb} options go with C{--workers}.

The master binds the sockets and hands them to the workers, so only stream
sockets that a worker can adopt will do: TCP, UNIX, the ones systemd passes,
and TLS (bound as TCP by the master; each worker adds the TLS).  Anything
else is refused at start-up with one line rather than half working.

The options that only the master reads (how long a worker may go silent,
when a worker is recycled) are coerced here, each bad value refused with
one line, and refused without C{--workers}: a single process has no worker
to replace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.python import usage

__all__ = [
    "WORKER_ONLY",
    "WORKER_PREFIXES",
    "checkWorkerOnlyOptions",
    "checkWorkerOptions",
    "megabytes",
    "requestCount",
    "workerTimeout",
]

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


WORKER_ONLY = {
    "worker-timeout": 30.0,
    "max-requests": 0,
    "max-requests-jitter": 0,
    "max-worker-memory": 0,
}
"""
The options of the workers' master, and their defaults.
"""


def _wholeNumber(option: str, value: str, low: int) -> int:
    if not value.isdigit() or int(value) < low:
        raise ValueError(f"--{option} wants a whole number >= {low}, not {value!r}")
    return int(value)


def workerTimeout(value: str) -> float:
    """
    The coercer of C{--worker-timeout}: a number of seconds > 0.
    """
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number < float("inf"):
        raise ValueError(
            f"--worker-timeout wants a number of seconds > 0, not {value!r}"
        )
    return number


workerTimeout.coerceDoc = "Seconds > 0."  # type: ignore[attr-defined]


def requestCount(option: str) -> Callable[[str], int]:
    """
    A coercer for C{--option}: a whole number >= 0 (0: never).
    """

    def coerce(value: str) -> int:
        return _wholeNumber(option, value, 0)

    coerce.coerceDoc = "A whole number >= 0 (0: off)."  # type: ignore[attr-defined]
    return coerce


def megabytes(value: str) -> int:
    """
    The coercer of C{--max-worker-memory}: whole megabytes (MiB) >= 0, as
    bytes.
    """
    return _wholeNumber("max-worker-memory", value, 0) * 2**20


megabytes.coerceDoc = "Megabytes (MiB), 0: off."  # type: ignore[attr-defined]


def checkWorkerOnlyOptions(config: Mapping[str, Any]) -> None:
    """
    Refuse the master's options without C{--workers}.

    @raise usage.UsageError: With the reason, in one line.
    """
    if config["workers"] > 1:
        return
    for option, default in WORKER_ONLY.items():
        if config[option] != default:
            raise usage.UsageError(
                f"--{option} needs --workers N (N >= 2): a single process"
                " has no worker to replace"
            )
