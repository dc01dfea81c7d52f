# -*- test-case-name: tests.test_notify -*-
"""
An asynchronous client for systemd's notification protocol.

L{Notifier} sends C{KEY=VALUE} datagrams to C{NOTIFY_SOCKET} from the reactor
thread without ever blocking it.  It knows nothing of HTTP: services decide
what to say, this module only makes sure it gets said, in order.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFDSet, IWriteDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txsdnotify.systemd.message import NotifyAddressError, formatMessage, parseAddress

__all__ = ["Notifier", "monotonicUsec", "notifyNow"]

# Messages made only of these keys can be merged with a message of the same
# kind that is still waiting: only the latest value matters to the manager.
_COALESCABLE = frozenset({"STATUS", "WATCHDOG", "EXTEND_TIMEOUT_USEC"})

# The manager went away (daemon-reexec) and may be back at the same path: a
# fresh socket reaches it.
_RECONNECTABLE = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ENOENT,
        errno.ENOTCONN,
        errno.EPIPE,
        errno.ECONNRESET,
        errno.EDESTADDRREQ,
    }
)


def monotonicUsec() -> int:
    """
    C{CLOCK_MONOTONIC} in microseconds, as C{MONOTONIC_USEC=} wants it.
    """
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def notifyNow(
    fields: Mapping[str, object],
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 1.0,
) -> bool:
    """
    Send one notification synchronously, without a reactor: for scripts, and
    for the last words of a process that is about to exit.

    @param fields: The assignments to send (see L{formatMessage}).
    @param environ: Where to find C{NOTIFY_SOCKET}; L{os.environ} by default.
    @param timeout: The longest time to wait for room in the manager's queue.

    @return: C{True} if the datagram was sent; C{False} if C{NOTIFY_SOCKET} is
        unset or unusable or the send failed.
    """
    if environ is None:
        environ = os.environ
    value = environ.get("NOTIFY_SOCKET")
    if value is None:
        return False
    data = formatMessage(fields)
    try:
        address = parseAddress(value)
    except NotifyAddressError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        try:
            s.connect(address)
            s.send(data)
        except OSError:
            return False
    return True


class _Pending:
    """
    One message waiting to be sent, with our own copies of the descriptors
    that go with it.
    """

    __slots__ = ("fields", "data", "coalescable", "fds")

    def __init__(self, fields: dict[str, object], data: bytes, fds: list[int]) -> None:
        self.fields = fields
        self.data = data
        self.fds = fds
        self.coalescable = not fds and fields.keys() <= _COALESCABLE

    def merge(self, fields: Mapping[str, object]) -> None:
        self.fields.update(fields)
        self.data = formatMessage(self.fields)

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


@implementer(IWriteDescriptor)
class Notifier:
    """
    Sends notifications to the service manager from the reactor thread.

    Every call returns at once.  When the manager's queue is full the message
    waits in ours and goes out as soon as the socket is writable; waiting
    status updates are merged (the latest wins), while C{READY}, C{STOPPING},
    C{RELOADING}, C{ERRNO} and anything else keep their order and are never
    merged away.  Errors are logged once per kind and never raised into the
    caller, except L{ValueError} for a message that cannot be encoded.

    A L{Notifier} without an address (C{NOTIFY_SOCKET} unset) does nothing,
    cheaply.  Use it from the reactor thread only.
    """

    log = Logger()

    def __init__(
        self,
        address: str | bytes | None,
        *,
        reactor: IReactorFDSet | None = None,
    ) -> None:
        """
        @param address: An C{AF_UNIX} address as returned by
            L{txsdnotify.systemd.message.parseAddress}, or L{None} to disable.
        @param reactor: The reactor that watches the socket for room; the
            global one by default.
        """
        self.address = address
        self._reactor = reactor
        self._socket: socket.socket | None = None
        self._queue: deque[_Pending] = deque()
        self._writing = False
        self._loggedErrors: set[object] = set()
        self._flushWaiters: list[Deferred[None]] = []

    @classmethod
    def fromEnvironment(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        reactor: IReactorFDSet | None = None,
    ) -> Notifier:
        """
        A notifier for the C{NOTIFY_SOCKET} in C{environ} (L{os.environ} by
        default).  An unusable value is logged once as a warning and gives a
        disabled notifier, as an unset one does.
        """
        if environ is None:
            environ = os.environ
        value = environ.get("NOTIFY_SOCKET")
        if value is None:
            return cls(None, reactor=reactor)
        try:
            address = parseAddress(value)
        except NotifyAddressError as e:
            cls.log.warn("Not notifying systemd: {reason}", reason=str(e))
            return cls(None, reactor=reactor)
        return cls(address, reactor=reactor)

    @property
    def enabled(self) -> bool:
        """
        Whether notifications go anywhere.
        """
        return self.address is not None

    @property
    def pending(self) -> int:
        """
        How many messages are waiting for room in the manager's queue.
        """
        return len(self._queue)

    def notify(self, **fields: object) -> None:
        """
        Send C{fields} as one message, e.g. C{notify(READY=1, STATUS="up")}.

        @raise ValueError: See L{txsdnotify.systemd.message.formatMessage}.
        """
        self.send(fields)

    def send(self, fields: Mapping[str, object], *, fds: Sequence[int] = ()) -> None:
        """
        Send C{fields} as one message.

        @param fds: Descriptors to pass along (C{SCM_RIGHTS}), as C{FDSTORE=1}
            wants; they are duplicated, so the caller may close its own.

        @raise ValueError: See L{txsdnotify.systemd.message.formatMessage}.
        """
        if self.address is None:
            return
        data = formatMessage(fields)
        queue = self._queue
        if not queue:
            # The usual case: straight out, nothing kept.
            try:
                self._sendHead(data, list(fds))
                return
            except BlockingIOError:
                pass
            except OSError as e:
                self._logOnce(e.errno, e)
                return
        elif not fds:
            last = queue[-1]
            # Datagrams go out whole, so even the head can still be merged into.
            if last.coalescable and fields.keys() <= _COALESCABLE:
                last.merge(fields)
                return
        queue.append(_Pending(dict(fields), data, [os.dup(fd) for fd in fds]))
        self._startWriting()

    def storeFds(self, name: str, fds: Sequence[int]) -> None:
        """
        Keep C{fds} in the service manager's fd store under C{name}; they come
        back through C{LISTEN_FDS}/C{LISTEN_FDNAMES} at the next start.
        """
        self.send({"FDSTORE": 1, "FDNAME": name}, fds=fds)

    def removeStoredFds(self, name: str) -> None:
        """
        Drop the descriptors stored under C{name} from the fd store.
        """
        self.send({"FDSTOREREMOVE": 1, "FDNAME": name})

    def ready(self, status: str | None = None, **extra: object) -> None:
        """
        Tell the manager that start-up (or a reload) is complete.
        """
        self.send(_with({"READY": 1}, status, extra))

    def stopping(self, status: str | None = None, **extra: object) -> None:
        """
        Tell the manager that shutdown has begun.
        """
        self.send(_with({"STOPPING": 1}, status, extra))

    def reloading(self, status: str | None = None, **extra: object) -> None:
        """
        Tell the manager that a reload has begun (with C{MONOTONIC_USEC}, which
        C{Type=notify-reload} requires); L{ready} must follow.
        """
        self.send(
            _with({"RELOADING": 1, "MONOTONIC_USEC": monotonicUsec()}, status, extra)
        )

    def status(self, text: str) -> None:
        """
        Set the status line that C{systemctl status} shows.
        """
        self.send({"STATUS": text})

    def watchdog(self) -> None:
        """
        Tell the manager's watchdog that this process is alive.
        """
        self.send({"WATCHDOG": 1})

    def flush(self) -> Deferred[None]:
        """
        @return: A L{Deferred} that fires once every message sent so far has
            gone out (or been given up on).
        """
        if not self._queue:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._flushWaiters.append(d)
        return d

    def close(self) -> None:
        """
        Close the socket; messages still waiting are dropped.
        """
        self._stopWriting()
        for pending in self._queue:
            pending.release()
        self._queue.clear()
        self._closeSocket()
        self._fireFlushed()

    # Sending.

    def _connect(self) -> socket.socket:
        s = socket.socket(
            socket.AF_UNIX,
            socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
        )
        try:
            # A connected socket lets poll() tell us when the manager's queue
            # has room; an unconnected one always looks writable.
            assert self.address is not None
            s.connect(self.address)
        except OSError:
            s.close()
            raise
        self._socket = s
        return s

    def _closeSocket(self) -> None:
        # The reactor must forget the descriptor before it is closed (and
        # perhaps reused by the next socket).
        self._stopWriting()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _sendHead(self, data: bytes, fds: list[int]) -> None:
        """
        Send one datagram, reconnecting once if the manager went away and came
        back.  Raises what the send raises.
        """
        try:
            _sendOn(self._socket or self._connect(), data, fds)
        except OSError as e:
            if e.errno not in _RECONNECTABLE:
                raise
            self._closeSocket()
            _sendOn(self._connect(), data, fds)

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            head = queue[0]
            try:
                self._sendHead(head.data, head.fds)
            except BlockingIOError:
                self._startWriting()
                return
            except OSError as e:
                self._logOnce(e.errno, e)
            queue.popleft().release()
        self._stopWriting()
        self._fireFlushed()

    def _logOnce(self, kind: object, error: OSError) -> None:
        if kind in self._loggedErrors:
            return
        self._loggedErrors.add(kind)
        self.log.warn(
            "Cannot notify systemd at {address!r}: {error} (further errors of this"
            " kind are not logged)",
            address=self.address,
            error=os.strerror(error.errno) if error.errno else str(error),
        )

    def _fireFlushed(self) -> None:
        waiters, self._flushWaiters = self._flushWaiters, []
        for d in waiters:
            d.callback(None)

    def _getReactor(self) -> IReactorFDSet:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        assert self._reactor is not None
        return self._reactor

    def _startWriting(self) -> None:
        if not self._writing:
            self._writing = True
            self._getReactor().addWriter(self)

    def _stopWriting(self) -> None:
        if self._writing:
            self._writing = False
            self._getReactor().removeWriter(self)

    # IWriteDescriptor, so that the reactor tells us when there is room.

    def fileno(self) -> int:
        """
        The socket's descriptor, or -1 once it is closed.
        """
        return self._socket.fileno() if self._socket is not None else -1

    def doWrite(self) -> None:
        """
        The manager's queue has room again: send what waits.
        """
        self._drain()

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor gave up on our descriptor (it has already stopped
        watching it): reconnect and send what waits, so that no queued
        message and no L{flush} waiter is stranded.
        """
        self._writing = False
        self._closeSocket()
        self._drain()

    def logPrefix(self) -> str:
        """
        How the reactor names us in its logs.
        """
        return "Notifier"


def _sendOn(s: socket.socket, data: bytes, fds: list[int]) -> None:
    if fds:
        rights = array.array("i", fds)
        s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
    else:
        s.send(data)


def _with(
    fields: dict[str, object], status: str | None, extra: Mapping[str, Any]
) -> dict[str, object]:
    if status is not None:
        fields["STATUS"] = status
    fields.update(extra)
    return fields
