# -*- test-case-name: tests.test_notify -*-
"""
Helpers for testing what a service tells systemd.

  - L{NotifyReceiver}: a real C{AF_UNIX} datagram socket in a temporary
    directory that plays the service manager.  Give a process its
    L{NotifyReceiver.environ}, then wait for messages: with Deferreds from the
    reactor (trial, pytest-twisted) or blocking (a test that drives a
    subprocess).
  - L{MemoryNotifier}: a L{Notifier} that records instead of sending, for
    unit tests.
"""

from __future__ import annotations

import array
import os
import select
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from txsdnotify.systemd.message import MAX_DATAGRAM, formatMessage
from txsdnotify.systemd.notify import Notifier

__all__ = ["MemoryNotifier", "Message", "NotifyReceiver", "parseMessage"]

Message = dict[str, str]
"""
One notification, as a mapping of its assignments.
"""

Matcher = Callable[[Message], bool]

# More than a service ever passes in one message.
_MAX_FDS = 64


def parseMessage(data: bytes) -> Message:
    """
    The assignments of one datagram, the way the manager reads them.
    """
    message: Message = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep:
            message[key] = value
    return message


def _matcher(key: str | Matcher, value: str | None) -> Matcher:
    if callable(key):
        return key
    if value is None:
        return lambda m: key in m
    return lambda m: m.get(key) == value


@implementer(IReadDescriptor)
class NotifyReceiver:
    """
    A real notification socket that records every message it receives.

    @ivar path: The socket's path.
    @ivar messages: Every message received, in order.
    @ivar datagrams: The same, as the raw bytes.
    @ivar fds: The descriptors that came with each message (C{FDSTORE=1}),
        now open in this process; L{close} closes them.
    """

    def __init__(self, directory: str | None = None) -> None:
        """
        @param directory: Where to make the socket; a new temporary directory
            (removed by L{close}) by default.
        """
        self._ownDirectory = directory is None
        self.directory = (
            tempfile.mkdtemp(prefix="notify-") if directory is None else directory
        )
        self.path = os.path.join(self.directory, "notify.sock")
        self.messages: list[Message] = []
        self.datagrams: list[bytes] = []
        self.fds: list[list[int]] = []
        self._reactor: IReactorFDSet | None = None
        self._waiters: list[tuple[Matcher, Deferred[Message]]] = []
        self._socket = self._bind()

    def _bind(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        s.bind(self.path)
        s.setblocking(False)
        return s

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """
        An environment with C{NOTIFY_SOCKET} pointing here, on top of C{base}.
        """
        env = dict(base if base is not None else {})
        env["NOTIFY_SOCKET"] = self.path
        return env

    # Receiving.

    def _readAll(self) -> None:
        room = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
        while True:
            try:
                data, ancillary, _, _ = self._socket.recvmsg(MAX_DATAGRAM + 1, room)
            except BlockingIOError:
                return
            fds = array.array("i")
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % fds.itemsize
                    fds.frombytes(payload[:usable])
            self._record(data, list(fds))

    def _record(self, data: bytes, fds: list[int]) -> None:
        message = parseMessage(data)
        self.datagrams.append(data)
        self.fds.append(fds)
        self.messages.append(message)
        still = []
        for match, d in self._waiters:
            if match(message):
                d.callback(message)
            else:
                still.append((match, d))
        self._waiters = still

    def startReading(self, reactor: IReactorFDSet | None = None) -> None:
        """
        Receive from the reactor from now on, for L{waitFor}.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        assert reactor is not None
        self._reactor = reactor
        reactor.addReader(self)

    def stopReading(self) -> None:
        """
        Stop receiving: the queue fills up, as with a manager that is busy.
        """
        if self._reactor is not None:
            self._reactor.removeReader(self)
            self._reactor = None

    def waitFor(
        self, key: str | Matcher, value: str | None = None
    ) -> Deferred[Message]:
        """
        The first message, received already or to come, that has C{key} (set
        to C{value}, if given), or for which C{key} (a callable) is true.
        Needs L{startReading}.
        """
        match = _matcher(key, value)
        for message in self.messages:
            if match(message):
                d: Deferred[Message] = Deferred()
                d.callback(message)
                return d
        d = Deferred()
        self._waiters.append((match, d))
        return d

    def expect(
        self,
        key: str | Matcher,
        value: str | None = None,
        *,
        timeout: float = 10.0,
        after: int = 0,
    ) -> Message:
        """
        Block until a message matching C{key}/C{value} (see L{waitFor}) is
        received, for tests without a running reactor.

        @param after: Only look at messages from this index on.
        @raise AssertionError: If none comes within C{timeout} seconds.
        """
        match = _matcher(key, value)
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            self._readAll()
            for message in self.messages[seen:]:
                if match(message):
                    return message
            seen = max(seen, len(self.messages))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no notification matching {key!r}={value!r} within {timeout}s;"
                    f" received: {self.messages!r}"
                )
            select.select([self._socket], [], [], left)

    def receiveAvailable(self) -> list[Message]:
        """
        Read whatever is queued now, without waiting; return everything so far.
        """
        self._readAll()
        return self.messages

    def values(self, key: str) -> list[str]:
        """
        Every value C{key} was given, in order.
        """
        self._readAll()
        return [m[key] for m in self.messages if key in m]

    def rebind(self) -> None:
        """
        Close the socket and bind a new one at the same path, as the manager
        does across C{systemctl daemon-reexec}.
        """
        reactor = self._reactor
        self.stopReading()
        self._socket.close()
        os.unlink(self.path)
        self._socket = self._bind()
        if reactor is not None:
            self.startReading(reactor)

    def close(self) -> None:
        """
        Stop receiving, close the descriptors received, and remove the socket
        (and its directory, if ours).
        """
        self.stopReading()
        self._socket.close()
        for fds in self.fds:
            for fd in fds:
                os.close(fd)
        self.fds = []
        if self._ownDirectory:
            shutil.rmtree(self.directory, ignore_errors=True)
        elif os.path.exists(self.path):
            os.unlink(self.path)

    # IReadDescriptor.

    def fileno(self) -> int:
        """
        The socket's descriptor.
        """
        return self._socket.fileno()

    def doRead(self) -> None:
        """
        Datagrams arrived.
        """
        self._readAll()

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor dropped us.
        """
        self._reactor = None

    def logPrefix(self) -> str:
        """
        How the reactor names us.
        """
        return "NotifyReceiver"


class MemoryNotifier(Notifier):
    """
    A L{Notifier} that keeps what it is told in L{sent} instead of sending
    it, after checking it as a real one would.

    Give it the same L{Clock} as the service under test and L{times} says
    when each message was sent, e.g. that watchdog pings come every
    C{WatchdogSec/2}, without sleeping.

    @ivar sent: The messages, as the manager would read them.
    @ivar sentFds: The descriptors that came with each message.
    @ivar times: When each message was sent, on the clock.
    """

    def __init__(self, clock: IReactorTime | None = None) -> None:
        super().__init__("memory")
        self.clock = clock
        self.sent: list[Message] = []
        self.sentFds: list[list[int]] = []
        self.times: list[float] = []

    def send(self, fields: Mapping[str, object], *, fds: Sequence[int] = ()) -> None:
        """
        Record C{fields} as the manager would read them (and the descriptors,
        in L{sentFds}); raise L{ValueError} where a real one would.
        """
        self.sent.append(parseMessage(formatMessage(fields)))
        self.sentFds.append(list(fds))
        self.times.append(self.clock.seconds() if self.clock is not None else 0.0)

    def values(self, key: str) -> list[str]:
        """
        Every value C{key} was given, in order.
        """
        return [m[key] for m in self.sent if key in m]
