"""
Tests for txsdnotify.systemd.notify against a real AF_UNIX datagram receiver.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import capturedLogs

from txsdnotify.systemd.notify import Notifier, monotonicUsec, notifyNow
from txsdnotify.testing import MemoryNotifier, NotifyReceiver


@pytest.fixture
def notifier(receiver: NotifyReceiver) -> Iterator[Notifier]:
    n = Notifier.fromEnvironment(receiver.environ(), reactor=reactor)
    yield n
    n.close()


def fillQueue(notifier: Notifier) -> int:
    """
    Send numbered X_FILL messages until the receiver's queue is full;
    return how many went out.
    """
    sent = 0
    while notifier.pending == 0:
        notifier.send({"X_FILL": sent})
        sent += 1
        assert sent < 10000, "the queue never filled"
    return sent - 1


class TestDisabled:
    def test_unset(self) -> None:
        """
        Without NOTIFY_SOCKET, notifying is a silent no-op: no socket is
        opened, nothing is logged, nothing waits.
        """
        descriptors = len(os.listdir("/proc/self/fd"))
        with capturedLogs() as events:
            n = Notifier.fromEnvironment({})
            n.notify(READY=1)
            n.status("anything")
        assert not n.enabled
        assert n.pending == 0
        assert list(events) == []
        assert len(os.listdir("/proc/self/fd")) == descriptors

    @pytest.mark.parametrize("value", ["", "relative/sock", "vsock:1:2"])
    def test_badAddressWarnsOnceAndDoesNothing(self, value: str) -> None:
        with capturedLogs() as events:
            n = Notifier.fromEnvironment({"NOTIFY_SOCKET": value})
            n.notify(READY=1)
            n.notify(READY=1)
        assert not n.enabled
        warnings = [e for e in events if e["log_level"].name == "warn"]
        assert len(warnings) == 1
        assert "Not notifying systemd" in warnings[0]["log_format"]


class TestSending:
    def test_messagesArriveInOrder(
        self, notifier: Notifier, receiver: NotifyReceiver
    ) -> None:
        notifier.ready(status="up", MAINPID=123)
        notifier.status("busy")
        notifier.stopping()
        receiver.expect("STOPPING")
        assert receiver.messages == [
            {"READY": "1", "STATUS": "up", "MAINPID": "123"},
            {"STATUS": "busy"},
            {"STOPPING": "1"},
        ]

    def test_reloadingCarriesMonotonicTime(
        self, notifier: Notifier, receiver: NotifyReceiver
    ) -> None:
        before = monotonicUsec()
        notifier.reloading(status="reloading")
        message = receiver.expect("RELOADING")
        assert before <= int(message["MONOTONIC_USEC"]) <= monotonicUsec()

    def test_abstractAddress(self) -> None:
        import socket

        name = f"txsdnotify-test-{os.getpid()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(b"\0" + name.encode())
            s.settimeout(5)
            n = Notifier.fromEnvironment({"NOTIFY_SOCKET": "@" + name})
            n.notify(READY=1)
            assert s.recv(4096) == b"READY=1"
            n.close()

    def test_invalidFieldsRaise(self, notifier: Notifier) -> None:
        with pytest.raises(ValueError):
            notifier.status("x\nREADY=1")
        assert notifier.pending == 0

    def test_reconnectsAfterManagerReexec(
        self, notifier: Notifier, receiver: NotifyReceiver
    ) -> None:
        notifier.status("one")
        receiver.expect("STATUS", "one")
        receiver.rebind()
        notifier.status("two")
        assert receiver.expect("STATUS", "two", timeout=5) == {"STATUS": "two"}

    def test_errorsLoggedOncePerKind(self, tmp_path: object) -> None:
        n = Notifier(os.path.join(str(tmp_path), "missing.sock"), reactor=reactor)
        with capturedLogs() as events:
            for _ in range(5):
                n.notify(READY=1)
                n.status("x")
        assert n.pending == 0
        warnings = [e for e in events if e["log_level"].name == "warn"]
        assert len(warnings) == 1
        assert "No such file or directory" in warnings[0]["error"]


class TestBackpressure:
    """
    A manager that does not read: the socket's queue fills and EAGAIN comes.
    """

    def test_queuesWithoutBlocking(
        self, notifier: Notifier, receiver: NotifyReceiver
    ) -> None:
        sent = fillQueue(notifier)
        assert sent >= 1
        assert notifier.pending == 1
        notifier.ready()
        notifier.status("a")
        notifier.status("b")
        assert notifier.pending == 3

    @pytest_twisted.inlineCallbacks
    def test_statusesCoalesceImportantOnesKeepOrder(
        self, notifier: Notifier, receiver: NotifyReceiver
    ) -> Iterator[object]:
        sent = fillQueue(notifier)
        notifier.status("s1")
        notifier.status("s2")
        notifier.notify(READY=1)
        notifier.status("s3")
        notifier.watchdog()
        notifier.status("s4")
        notifier.notify(ERRNO=5)
        notifier.notify(STOPPING=1)
        notifier.status("s5")
        notifier.status("s6")
        flushed = notifier.flush()
        assert not flushed.called
        receiver.startReading(reactor)
        yield flushed
        assert notifier.pending == 0
        receiver.receiveAvailable()
        fills = [m for m in receiver.messages if "X_FILL" in m]
        assert [int(m["X_FILL"]) for m in fills] == list(range(sent + 1))
        rest = [m for m in receiver.messages if "X_FILL" not in m]
        # Runs of status and watchdog updates merge, the latest value
        # winning; everything else keeps its place.
        assert rest == [
            {"STATUS": "s2"},
            {"READY": "1"},
            {"STATUS": "s4", "WATCHDOG": "1"},
            {"ERRNO": "5"},
            {"STOPPING": "1"},
            {"STATUS": "s6"},
        ]

    @pytest_twisted.inlineCallbacks
    def test_connectionLostStrandsNothing(
        self, notifier: Notifier, receiver: NotifyReceiver
    ) -> Iterator[object]:
        """
        The reactor drops our descriptor while messages wait: they still go
        out, in order, the flush waiter fires, and sending goes on.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        sent = fillQueue(notifier)
        notifier.notify(READY=1)
        flushed = notifier.flush()
        reactor.removeWriter(notifier)
        notifier.connectionLost(Failure(ConnectionLost()))
        notifier.notify(STOPPING=1)
        receiver.startReading(reactor)
        yield flushed
        yield receiver.waitFor("STOPPING")
        assert notifier.pending == 0
        keys = [k for m in receiver.messages for k in m if k != "X_FILL"]
        assert keys == ["READY", "STOPPING"]
        assert len([m for m in receiver.messages if "X_FILL" in m]) == sent + 1


def test_notifyNow(receiver: NotifyReceiver) -> None:
    assert notifyNow({"READY": 1, "STATUS": "sync"}, environ=receiver.environ())
    assert receiver.expect("READY") == {"READY": "1", "STATUS": "sync"}


def test_notifyNowWithoutSocket(tmp_path: object) -> None:
    assert not notifyNow({"READY": 1}, environ={})
    assert not notifyNow({"READY": 1}, environ={"NOTIFY_SOCKET": "relative"})
    missing = os.path.join(str(tmp_path), "nope.sock")
    assert not notifyNow({"READY": 1}, environ={"NOTIFY_SOCKET": missing})


def test_memoryNotifier() -> None:
    n = MemoryNotifier()
    n.ready(status="up")
    n.status("two")
    assert n.sent == [{"READY": "1", "STATUS": "up"}, {"STATUS": "two"}]
    assert n.values("STATUS") == ["up", "two"]
    with pytest.raises(ValueError):
        n.status("a\nb")
