"""
Tests for txsdnotify.workers.master in-process: a fake clock and a reactor
whose ports and spawned worker processes are played by the test (what the
workers report, how they end), so that every decision of the master is seen
without a real process or socket: what systemd is told, what the workers are
told, which ports close when, the exit status.  The master as a whole, with
real workers, is in test_workers.py and test_systemd_workers.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from test_pool import FakeProcess, Logged, ProcessReactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from txsdnotify.cli.tap import Options, makeService
from txsdnotify.service import _exit
from txsdnotify.systemd.activation import InheritedSocket, storeName
from txsdnotify.systemd.failures import ListenFailed
from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.systemd.watchdog import WatchdogService
from txsdnotify.testing import MemoryNotifier
from txsdnotify.workers.master import WorkerMaster, _WatchdogGate
from txsdnotify.workers.pool import WorkerPool, WorkerProcess, WorkerState
from txsdnotify.workers.protocol import FORCE_SIGNAL, LineDecoder, encode


class Process(FakeProcess):
    """
    A worker process played by the test, with the standard input the master
    writes to.
    """

    def writeToChild(self, fd: int, data: bytes) -> None:
        assert fd == 0
        self.write(data)

    def kinds(self) -> list[str]:
        """
        The kinds of the messages written to its standard input.
        """
        return [m["kind"] for m in LineDecoder().feed(self.written)]


class FakePort:
    """
    A listening port, as the master uses it.  It closes at the reactor's
    next turn, as Twisted's TCP ports do; until told not to, it would shut
    its socket down (see L{txsdnotify.listeners.keepOpenForSystemd}).
    """

    def __init__(
        self, reactor: Clock, number: int, factory: Any, fd: int, adopted: bool
    ) -> None:
        self.reactor = reactor
        self.number = number
        self.factory = factory
        self.fd = fd
        self.adopted = adopted
        self.socket = SimpleNamespace(family=socket.AF_INET)
        self.reading = True
        self.listening = True
        self._shouldShutdown = True

    def fileno(self) -> int:
        return self.fd

    def stopReading(self) -> None:
        self.reading = False

    def stopListening(self) -> Deferred[None]:
        self.reading = False
        closed: Deferred[None] = Deferred()

        def close() -> None:
            self.listening = False
            closed.callback(None)

        self.reactor.callLater(0, close)
        return closed

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self.number)


class MasterReactor(ProcessReactor):
    """
    A clock that spawns (fake) workers, binds (fake) ports and records how
    the process would end.
    """

    spawned: list[Process]  # type: ignore[assignment]
    processClass = Process

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakePort] = []
        self.refused: dict[int, BaseException] = {}
        self.triggers: list[tuple[str, str, Any, tuple[Any, ...]]] = []
        self.stops = 0
        self.nextFd = 40

    def _port(self, number: int, factory: Any, fd: int, adopted: bool) -> FakePort:
        port = FakePort(self, number, factory, fd, adopted)
        self.ports.append(port)
        return port

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> FakePort:
        if port in self.refused:
            raise self.refused[port]
        self.nextFd += 1
        return self._port(port, factory, self.nextFd, adopted=False)

    def adoptStreamPort(self, fd: int, family: int, factory: Any) -> FakePort:
        return self._port(0, factory, fd, adopted=True)

    def refuse(self, number: int) -> None:
        """
        Port C{number} is in use.
        """
        error = OSError(98, "Address already in use")
        self.refused[number] = CannotListenError("", number, error)

    def port(self, number: int) -> FakePort:
        [port] = [p for p in self.ports if p.number == number]
        return port

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)

    def addSystemEventTrigger(self, phase: str, event: str, f: Any, *args: Any) -> None:
        self.triggers.append((phase, event, f, args))

    def stop(self) -> None:
        self.stops += 1

    def exitStatus(self) -> int | None:
        """
        The status the process would exit with after shutdown, if set.
        """
        assert len(self.triggers) <= 1
        for phase, event, f, args in self.triggers:
            assert (phase, event, f) == ("after", "shutdown", _exit)
            return int(args[0])
        return None


@pytest.fixture(autouse=True)
def _restoreSignals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def master(
    count: int = 2,
    ports: tuple[str | Any, ...] = ("tcp:8080",),
    environ: dict[str, str] | None = None,
    notifier: MemoryNotifier | None = None,
    **kwargs: Any,
) -> tuple[WorkerMaster, MasterReactor, MemoryNotifier]:
    """
    A master of C{count} (fake) workers, not started.
    """
    reactor = MasterReactor()
    notifier = notifier or MemoryNotifier(reactor)
    pool = WorkerPool(
        reactor,
        count=count,
        sdwebArguments=["--class", "app.Root"],
        environ={},
        reportInterval=1.0,
    )
    built = WorkerMaster(
        list(ports),
        pool,
        notifier=notifier,
        reactor=reactor,
        environ=environ or {},
        **kwargs,
    )
    return built, reactor, notifier


def running(
    count: int = 2, **kwargs: Any
) -> tuple[WorkerMaster, MasterReactor, MemoryNotifier]:
    """
    A master whose workers all said they are ready.
    """
    m, reactor, notifier = master(count, **kwargs)
    m.privilegedStartService()
    m.startService()
    for process in list(reactor.spawned):
        process.ready()
    assert m.lifecycle.state is State.READY
    return m, reactor, notifier


def signalled(signum: int) -> None:
    """
    Call the handler the process has for C{signum}, as the signal would.
    """
    handler = signal.getsignal(signum)
    assert callable(handler)
    handler(signum, None)


def statuses(notifier: MemoryNotifier) -> list[str]:
    return notifier.values("STATUS")


def exitAll(reactor: MasterReactor, code: int = 0) -> None:
    for process in reactor.live():
        process.exit(code)


IDLE = "0 req; 0.0 req/s; 0 in flight; 0 conn; 0 B/s"


# Start-up.


def test_readyOnceEveryWorkerIsReady() -> None:
    """
    The master binds the ports and never reads them; it starts the workers
    on them; C{READY=1} (with C{MAINPID=}) once every worker is ready.
    """
    m, reactor, notifier = master()
    m.privilegedStartService()
    site = reactor.port(8080)
    assert not site.reading
    assert notifier.sent == []
    m.startService()
    first, second = reactor.spawned
    assert first.childFDs[4] == site.fd
    assert first.args[5:7] == ["--listen", f"4:{int(socket.AF_INET)}"]
    assert m.sockets() == [(site.fd, int(socket.AF_INET))]
    first.ready()
    assert notifier.sent == []
    with Logged() as log:
        second.ready()
    assert notifier.sent == [
        {"READY": "1", "MAINPID": str(os.getpid()), "STATUS": f"2/2 workers; {IDLE}"}
    ]
    assert "sdweb ready: 2 workers serving on tcp:8080 (127.0.0.1:8080)" in (
        log.texts()
    )


def test_connectionsRefused() -> None:
    """
    A connection the master accepts on the workers' ports after all (none
    should be: it never reads them) is closed at once.
    """
    m, reactor, notifier = running()
    factory = reactor.port(8080).factory
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.disconnecting


def test_statusLineEveryInterval() -> None:
    """
    While serving, the status line is sent every second (by default) when
    it changed: the workers first, then the summed figures.
    """
    m, reactor, notifier = running()
    first, second = reactor.spawned
    first.counts(started=5, completed=4, connectionsOpened=2)
    second.counts(started=2, completed=2, connectionsOpened=1)
    reactor.advance(0.99)
    assert len(notifier.sent) == 1
    reactor.advance(0.01)
    assert statuses(notifier)[-1] == (
        "2/2 workers; 6 req; 6.0 req/s; 1 in flight; 3 conn; 0 B/s"
    )


def test_statusLineInterval() -> None:
    m, reactor, notifier = running(statusInterval=5)
    reactor.spawned[0].counts(started=1, completed=1)
    reactor.advance(4.9)
    assert len(notifier.sent) == 1
    reactor.advance(0.1)
    assert statuses(notifier)[-1].startswith("2/2 workers; 1 req; ")


def test_replacedLastOnTheStatusLine() -> None:
    m, reactor, notifier = running()
    first = reactor.spawned[0]
    first.kill()
    reactor.advance(0)
    assert len(reactor.live()) == 2
    reactor.live()[-1].ready()
    reactor.advance(1)
    assert statuses(notifier)[-1] == (
        f"2/2 workers; {IDLE};"
        f" 1 replaced (last: worker {first.pid} was killed by signal 9 (SIGKILL))"
    )


def test_tlsPortsBoundPlain() -> None:
    """
    An C{ssl:} port is bound here as plain TCP; the workers are told to
    serve it in TLS (by its index).
    """
    tls = "ssl:8443:privateKey=k.pem:certKey=c.pem"
    m, reactor, notifier = master(ports=("tcp:8080", tls, "tcp:8081"))
    assert m.pool.workerArguments == ["--tls", f"1={tls}"]
    m.privilegedStartService()
    m.startService()
    assert "--tls" in reactor.spawned[0].args
    with Logged() as log:
        for process in reactor.spawned:
            process.ready()
    assert (
        "sdweb ready: 2 workers serving on tcp:8080 (127.0.0.1:8080),"
        f" {tls} (TLS in the workers) (127.0.0.1:8443), tcp:8081 (127.0.0.1:8081)"
    ) in log.texts()
    assert not reactor.port(8443).reading


def test_listenFailure() -> None:
    """
    A port that cannot be bound ends start-up with one line, and systemd is
    told why.
    """
    m, reactor, notifier = master(ports=("tcp:8080", "tcp:8081"))
    reactor.refuse(8081)
    with pytest.raises(ListenFailed) as caught:
        m.privilegedStartService()
    assert str(caught.value) == (
        "sdweb: cannot listen on tcp:8081: Address already in use"
    )
    assert m.lifecycle.state is State.FAILED
    assert notifier.values("ERRNO") == ["98"]


def test_metricsPortFailure() -> None:
    m, reactor, notifier = master(metricsPorts=["tcp:9100"])
    reactor.refuse(9100)
    with pytest.raises(ListenFailed) as caught:
        m.privilegedStartService()
    assert "tcp:9100" in str(caught.value)
    assert not reactor.port(8080).reading
    assert notifier.values("ERRNO") == ["98"]


GAVE_UP = "workers keep exiting at start (5 in a row): importing 'app' failed"


def failFiveTimes(reactor: MasterReactor) -> None:
    """
    The next five workers fail at start, each after the back-off.
    """
    for _ in range(5):
        reactor.advance(30)
        reactor.spawned[-1].fail("importing 'app' failed")
        reactor.spawned[-1].exit(1)


def stopNow(m: WorkerMaster, reactor: MasterReactor) -> None:
    """
    Stop C{m}, whose workers are all gone: done at the reactor's next turn.
    """
    d = m.stopService()
    reactor.advance(0)
    assert d.called


def test_startFailed() -> None:
    """
    Workers that keep exiting before they are ready end start-up: the
    reason to systemd, exit status 1, and no health grace or drain.
    """
    m, reactor, notifier = master(count=1, healthGrace=5)
    m.privilegedStartService()
    m.startService()
    with Logged() as log:
        failFiveTimes(reactor)
    assert statuses(notifier) == [f"Failed: {GAVE_UP}"]
    assert f"sdweb: {GAVE_UP}" in log.texts()
    assert reactor.stops == 1
    assert reactor.exitStatus() == 1
    stopNow(m, reactor)
    assert notifier.values("STOPPING") == []
    assert statuses(notifier) == [f"Failed: {GAVE_UP}"]
    assert m.lifecycle.state is State.STOPPED
    reactor.advance(10)
    assert len(notifier.sent) == 1
    assert reactor.stops == 1


def test_gaveUpWhileServing() -> None:
    """
    Once no worker serves and their replacements keep failing, the master
    stops the service: C{Failing: ...} on the status line, exit status 1.
    """
    m, reactor, notifier = running(count=1)
    reactor.spawned[0].kill()
    with Logged() as log:
        failFiveTimes(reactor)
    assert f"sdweb: {GAVE_UP}; stopping" in log.texts()
    assert reactor.stops == 1
    assert reactor.exitStatus() == 1
    stopNow(m, reactor)
    assert statuses(notifier)[-1] == (
        "Failing: workers keep exiting at start (5 in a row) (see the log);"
        " Stopped: 0 request(s) served"
    )
    assert reactor.stops == 1
    assert reactor.exitStatus() == 1


# Reload.


def test_reloadOneWorkerAtATime() -> None:
    """
    C{SIGHUP}: C{RELOADING=1}, a new worker in each place, each ready
    before the old one is told to drain, then C{READY=1}.
    """
    m, reactor, notifier = running()
    old1, old2 = reactor.spawned
    signalled(signal.SIGHUP)
    assert notifier.values("RELOADING") == ["1"]
    assert len(reactor.spawned) == 3
    new1 = reactor.spawned[2]
    assert not old1.stdinClosed
    new1.ready()
    assert old1.stdinClosed and not old2.stdinClosed
    new2 = reactor.spawned[3]
    new2.ready()
    assert old2.stdinClosed
    assert notifier.sent[-1] == {
        "READY": "1",
        "STATUS": f"2/2 workers, 2 stopping; {IDLE}",
    }


def test_reloadFailed() -> None:
    """
    A new worker that does not come up: C{READY=1} all the same, the old
    workers serve on, and the status line says so (in short).
    """
    m, reactor, notifier = running()
    signalled(signal.SIGHUP)
    reactor.spawned[2].fail("importing 'app' failed")
    reactor.spawned[2].exit(1)
    [text] = statuses(notifier)[-1:]
    assert notifier.sent[-1]["READY"] == "1"
    when = text.split("Reload failed at ")[1][:8]
    assert text == (
        f"2/2 workers; Reload failed at {when}: replacing the workers"
        f" (see the log); {IDLE}"
    )


def test_reloadTimeout() -> None:
    """
    A reload that does not finish in 120 s (by default) fails.
    """
    m, reactor, notifier = running()
    signalled(signal.SIGHUP)
    reactor.advance(119.9)
    assert notifier.values("READY") == ["1"]
    reactor.advance(0.1)
    assert notifier.values("READY") == ["1", "1"]
    assert "Reload failed at " in statuses(notifier)[-1]


# Stop.


def test_stop() -> None:
    """
    C{STOPPING=1} with the time the drain may take, the workers told the
    service stops and to drain, the ports closed at once, a countdown, and
    the served requests at the end.
    """
    m, reactor, notifier = running(healthPorts=["tcp:9000"])
    first, second = reactor.spawned
    first.counts(started=4, completed=3, connectionsOpened=2)
    with Logged() as log:
        d = m.stopService()
        assert notifier.sent[-1] == {
            "STOPPING": "1",
            "STATUS": "Stopping: 2 worker(s) draining, 1 request(s) in flight",
            "EXTEND_TIMEOUT_USEC": "35000000",
        }
        # The ports close first, then the workers drain.
        assert first.kinds() == ["stopping"] and not first.stdinClosed
        assert reactor.port(8080).listening and not reactor.port(8080).reading
        reactor.advance(0)
        assert first.stdinClosed and second.stdinClosed
        for number in (8080, 9000):
            port = reactor.port(number)
            assert not port.listening and port._shouldShutdown
        reactor.advance(1)
        assert notifier.sent[-1] == {
            "STATUS": "Stopping: draining 2 connection(s), 1 request(s) in flight,"
            " 29s left; Total requests: 3",
            "EXTEND_TIMEOUT_USEC": "34000000",
        }
        first.counts(started=4, completed=4, connectionsOpened=2, connectionsClosed=2)
        assert not d.called
        exitAll(reactor)
    assert d.called
    assert statuses(notifier)[-1] == "Stopped: 4 request(s) served"
    assert "sdweb Stopped: 4 request(s) served" in log.texts()
    assert reactor.exitStatus() is None and reactor.stops == 0
    assert reactor.getDelayedCalls() == []
    assert signal.getsignal(signal.SIGTERM) is not None
    assert m.lifecycle.state is State.STOPPED


def test_drainTimeout() -> None:
    """
    Workers still there once the drain is over are killed.
    """
    m, reactor, notifier = running(drainTimeout=10)
    m.stopService()
    reactor.advance(0)
    assert notifier.values("EXTEND_TIMEOUT_USEC") == ["15000000"]
    reactor.advance(12.4)
    assert [p.signals for p in reactor.spawned] == [[], []]
    reactor.advance(0.1)
    assert [p.signals for p in reactor.spawned] == [[signal.SIGKILL]] * 2


def test_abortedNotForced() -> None:
    """
    Requests lost with a worker that died during the stop are counted
    apart; the exit status is not changed.
    """
    m, reactor, notifier = running()
    first, second = reactor.spawned
    first.counts(started=2, completed=1)
    m.stopService()
    reactor.advance(0)
    first.kill()
    second.exit(0)
    assert statuses(notifier)[-1] == "Stopped: 1 request(s) served; 1 aborted"
    assert reactor.exitStatus() is None


def test_forcedWhileDraining() -> None:
    """
    A second C{SIGTERM} while the workers drain: C{FORCE_SIGNAL} to each,
    C{SIGKILL} 5 s later, and exit status 1 once requests were aborted.
    """
    m, reactor, notifier = running()
    first, second = reactor.spawned
    first.counts(started=2, completed=1)
    m.stopService()
    reactor.advance(0)
    calls = len(reactor.getDelayedCalls())
    signalled(signal.SIGTERM)
    assert statuses(notifier)[-1] == "Stopping now: aborting what is left"
    assert [p.signals for p in reactor.spawned] == [[FORCE_SIGNAL]] * 2
    assert first.kinds() == ["stopping"]
    # A third stops no more.
    signalled(signal.SIGTERM)
    assert [p.signals for p in reactor.spawned] == [[FORCE_SIGNAL]] * 2
    assert len(reactor.getDelayedCalls()) == calls + 1
    reactor.advance(4.9)
    assert [p.signals for p in reactor.spawned] == [[FORCE_SIGNAL]] * 2
    reactor.advance(0.1)
    assert [p.signals for p in reactor.spawned] == [[FORCE_SIGNAL, signal.SIGKILL]] * 2
    first.kill()
    second.kill()
    assert statuses(notifier)[-1] == (
        "Stopped: 1 request(s) served; stop forced, 1 aborted"
    )
    assert reactor.exitStatus() == 1 and reactor.stops == 0


def test_forcedInTheGrace() -> None:
    """
    A second C{SIGTERM} in the health grace: the workers hear it before
    they are told to drain, the grace ends; nothing aborted, no exit status.
    """
    m, reactor, notifier = running(healthGrace=1)
    first, second = reactor.spawned
    d = m.stopService()
    assert statuses(notifier)[-1] == (
        "Stopping: failing health checks, serving 1s more before the ports close"
    )
    reactor.advance(0)
    assert not first.stdinClosed
    signalled(signal.SIGTERM)
    assert first.kinds() == ["stopping", "force"]
    assert second.kinds() == ["stopping", "force"]
    assert [p.signals for p in reactor.spawned] == [[], []]
    reactor.advance(0)
    assert first.stdinClosed and second.stdinClosed
    exitAll(reactor)
    assert d.called
    assert statuses(notifier)[-1] == "Stopped: 0 request(s) served; stop forced"
    assert reactor.exitStatus() is None


def test_healthGrace() -> None:
    """
    With C{--health-grace}, the workers serve on (failing their health
    checks) and the ports stay open for the grace; then the drain.
    """
    m, reactor, notifier = running(healthGrace=5, healthPorts=["tcp:9000"])
    first, second = reactor.spawned
    with Logged() as log:
        m.stopService()
    assert notifier.sent[-1] == {
        "STOPPING": "1",
        "STATUS": "Stopping: failing health checks, serving 5s more before the"
        " ports close",
        "EXTEND_TIMEOUT_USEC": "40000000",
    }
    assert "sdweb stopping: failing health checks, serving 5s more" in log.texts()
    assert first.kinds() == ["stopping"] and not first.stdinClosed
    reactor.advance(4.9)
    assert reactor.port(8080).listening and reactor.port(9000).listening
    assert not first.stdinClosed
    reactor.advance(0.1)
    assert notifier.sent[-1] == {
        "STATUS": "Stopping: 2 worker(s) draining, 0 request(s) in flight",
        "EXTEND_TIMEOUT_USEC": "35000000",
    }
    reactor.advance(0)
    assert not reactor.port(8080).listening and not reactor.port(9000).listening
    assert first.stdinClosed and second.stdinClosed


def test_socketsSystemdHoldsCloseLast() -> None:
    """
    Sockets in the fd store (adopted from it, or bound and stored) stay
    open until the workers are gone, and are never shut down.
    """
    inherited = socket.socket()
    stored = InheritedSocket(
        os.dup(inherited.fileno()), 0, storeName("tcp:8080"), "INET"
    )
    inherited.close()
    m, reactor, notifier = running(
        ports=("tcp:8080", "tcp:8081"),
        inherited=[stored],
        fdStore=True,
        healthPorts=["tcp:9000"],
    )
    adopted, bound, health = reactor.ports
    assert adopted.adopted and not bound.adopted and health.number == 9000
    assert notifier.sent[0] == {"FDSTORE": "1", "FDNAME": storeName("tcp:8081")}
    assert notifier.sentFds[0] == [bound.fd]
    m.stopService()
    reactor.advance(0)
    assert not health.listening
    assert adopted.listening and bound.listening
    exitAll(reactor)
    reactor.advance(0)
    assert not adopted.listening and not bound.listening
    assert not adopted._shouldShutdown and not bound._shouldShutdown
    assert health._shouldShutdown


def test_staleStoredSockets() -> None:
    """
    With the fd store, a stored socket no port wants any more is dropped
    from the store; without it, the store is left alone.
    """
    for fdStore in (False, True):
        s = socket.socket()
        stale = InheritedSocket(os.dup(s.fileno()), 0, storeName("tcp:9999"), "INET")
        s.close()
        m, reactor, notifier = running(inherited=[stale], fdStore=fdStore)
        removed = notifier.values("FDSTOREREMOVE")
        if fdStore:
            assert removed == ["1"]
            with pytest.raises(OSError):
                os.fstat(stale.fd)
        else:
            assert removed == []
            os.close(stale.fd)


def test_undeliveredNotifications() -> None:
    """
    The stop waits 2 s at most for notifications systemd has not taken.
    """

    class Stuck(MemoryNotifier):
        def flush(self) -> Deferred[None]:
            return Deferred()

    reactor = Clock()
    m, reactor, notifier = running(notifier=Stuck(reactor))
    with Logged() as log:
        d = m.stopService()
        reactor.advance(0)
        exitAll(reactor)
        reactor.advance(1.9)
        assert not d.called
        reactor.advance(0.1)
    assert d.called
    assert "Some notifications could not be delivered before exit" in log.texts()


# Health, metrics and the watchdog.


def request(factory: Any, path: bytes) -> StringTransport:
    """
    A connection to C{factory} (a site) that asked for C{path}.
    """
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
    return transport


def get(factory: Any, path: bytes) -> bytes:
    """
    What C{factory} (a site) answers to C{GET path} at once.
    """
    return bytes(request(factory, path).value())


def agent(factory: Any) -> bytes:
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return bytes(transport.value())


def test_healthPorts() -> None:
    """
    The master answers the health and agent ports for the whole service:
    healthy while a worker is ready, with the count of ready workers.
    """
    m, reactor, notifier = master(
        count=1, healthPorts=["tcp:9000"], agentPorts=["tcp:9001"]
    )
    m.privilegedStartService()
    m.startService()
    site, health, agentPort = reactor.ports
    assert health.reading and agentPort.reading
    assert get(health.factory, b"/healthz").startswith(b"HTTP/1.1 503 ")
    assert agent(agentPort.factory) == b"drain\n"
    reactor.spawned[0].ready()
    answer = get(health.factory, b"/healthz")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["workers"] == 1
    assert agent(agentPort.factory) == b"up ready\n"
    reactor.spawned[0].kill()
    assert get(health.factory, b"/healthz").startswith(b"HTTP/1.1 503 ")
    assert agent(agentPort.factory) == b"drain\n"


def test_healthPath() -> None:
    m, reactor, notifier = running(healthPorts=["tcp:9000"], healthPath=b"/up")
    health = reactor.port(9000)
    assert get(health.factory, b"/up").startswith(b"HTTP/1.1 200 ")
    assert get(health.factory, b"/healthz").startswith(b"HTTP/1.1 404 ")


def test_metricsForAWorker() -> None:
    """
    A worker scraped on its ports asks the master, which asks every worker
    for its counters and answers with the sum of all.
    """
    m, reactor, notifier = running(metricsPath=b"/metrics")
    assert m.metrics is not None and m.metricsListeners == []
    assert m.metrics.workers is not None
    assert m.metrics.workers() == {
        "ready": 2,
        "replaced": 0,
        "recycled": 0,
        "failing": 0,
    }
    first, second = reactor.spawned
    first.say(encode("metrics", id=7))
    assert first.kinds() == ["report"] and second.kinds() == ["report"]
    first.counts(started=3, completed=1)
    assert first.kinds() == ["report"]
    second.counts(started=2)
    [answer] = list(LineDecoder().feed(first.written))[1:]
    assert answer["kind"] == "metrics" and answer["id"] == 7
    assert "\nsdweb_http_requests_in_flight 4.0\n" in answer["text"]
    assert second.kinds() == ["report"]


def test_metricsPort() -> None:
    """
    C{--metrics-port} is answered by the master, and closes with the other
    ports it alone holds.
    """
    m, reactor, notifier = running(metricsPorts=["tcp:9100"])
    assert m.metrics is not None
    port = reactor.port(9100)
    assert port.reading
    transport = request(port.factory, b"/metrics")
    assert transport.value() == b""
    for process in reactor.spawned:
        process.counts(started=2)
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    assert b"\nsdweb_http_requests_in_flight 4.0\n" in transport.value()
    m.stopService()
    reactor.advance(0)
    assert not port.listening


def test_noMetrics() -> None:
    m, reactor, notifier = running()
    assert m.metrics is None and m.pool.onMetrics is None


def test_watchdog() -> None:
    """
    With C{WATCHDOG_USEC}, the master pings while the workers answer, and
    no more once stopped.
    """
    m, reactor, notifier = running(environ={"WATCHDOG_USEC": "2000000"})
    reactor.advance(1)
    assert notifier.values("WATCHDOG") == ["1"]
    d = m.stopService()
    reactor.advance(0)
    exitAll(reactor)
    assert d.called and not m.running
    assert reactor.getDelayedCalls() == []
    reactor.advance(5)
    assert notifier.values("WATCHDOG") == ["1"]
    other, otherReactor, otherNotifier = running()
    otherReactor.advance(5)
    assert otherNotifier.values("WATCHDOG") == []


def test_watchdogGate() -> None:
    """
    The master pings only while some worker answers (see
    L{WorkerPool.responsive}).
    """
    clock = Clock()
    notifier = MemoryNotifier(clock)
    lifecycle = Lifecycle(notifier)
    pool = WorkerPool(clock, count=1, sdwebArguments=[], environ={}, reportInterval=1.0)
    gate = _WatchdogGate(lifecycle, pool)
    assert not gate.watchdog()
    assert notifier.values("WATCHDOG") == []
    worker = WorkerProcess(pool, 0)
    pool.workers.append(worker)
    assert gate.watchdog()
    worker.state = WorkerState.READY
    clock.advance(3)
    assert gate.watchdog()
    clock.advance(0.5)
    assert not gate.watchdog()
    assert notifier.values("WATCHDOG") == ["1", "1"]


def parsed(*args: str) -> Options:
    config = Options(environ={})
    config.parseOptions(["--port", "tcp:0:interface=127.0.0.1", *args])
    return config


def test_optionsGivenToThePool() -> None:
    master = makeService(
        parsed(
            "--workers",
            "3",
            "--worker-timeout",
            "7.5",
            "--max-requests",
            "500",
            "--max-requests-jitter",
            "20",
            "--max-worker-memory",
            "300",
            "--drain-timeout",
            "9",
            "--status-interval",
            "0.5",
        )
    )
    assert isinstance(master, WorkerMaster)
    pool = master.pool
    assert pool.count == 3
    assert pool.workerTimeout == 7.5
    assert (pool.maxRequests, pool.maxRequestsJitter) == (500, 20)
    assert pool.maxMemory == 300 * 2**20
    assert pool.replacedIdleGrace == 4.5
    assert pool.reportInterval == 0.25


def test_poolDefaults() -> None:
    master = makeService(parsed("--workers", "2"))
    assert isinstance(master, WorkerMaster)
    pool = master.pool
    assert pool.workerTimeout == 30
    assert (pool.maxRequests, pool.maxRequestsJitter, pool.maxMemory) == (0, 0, 0)
    assert pool.replacedIdleGrace == 15
    assert pool.reportInterval == 0.5
    # The workers start where sdweb was started (before any --chdir).
    assert pool.path == os.getcwd()


def test_reportIntervalBounds() -> None:
    for interval, report in (("0", 1.0), ("0.01", 0.05), ("10", 1.0), ("1", 0.5)):
        master = makeService(parsed("--workers", "2", "--status-interval", interval))
        assert isinstance(master, WorkerMaster)
        assert master.pool.reportInterval == report, interval


def test_optionsGivenToTheMaster() -> None:
    config = Options(
        environ={"NOTIFY_SOCKET": "/run/notify.sock", "WATCHDOG_USEC": "2000000"}
    )
    config.parseOptions(
        [
            *("--port", "tcp:0:interface=127.0.0.1", "--workers", "2"),
            *("--drain-timeout", "8", "--health-grace", "3"),
            *("--status-interval", "0.5", "--fd-store", "--health", "/up"),
            *("--health-port", "tcp:0", "--agent-port", "tcp:0"),
            *("--metrics", "/m", "--metrics-port", "tcp:0"),
        ]
    )
    m = makeService(config)
    assert isinstance(m, WorkerMaster)
    assert m.notifier.address == "/run/notify.sock"
    assert (m.drainTimeout, m.healthGrace, m.stopTimeout) == (8, 3, 11)
    assert m.statusLine.interval == 0.5
    assert m.listeners[0].storeName == storeName("tcp:0:interface=127.0.0.1")
    assert len(m.healthListeners) == 2 and len(m.metricsListeners) == 1
    assert m.metrics is not None
    assert [type(s) for s in m] == [WatchdogService]


def test_masterDefaults() -> None:
    m = makeService(parsed("--workers", "2"))
    assert isinstance(m, WorkerMaster)
    assert not m.notifier.enabled
    assert (m.drainTimeout, m.healthGrace, m.stopTimeout) == (30, 0, 30)
    assert m.statusLine.interval == 1
    assert m.listeners[0].storeName is None
    assert m.healthListeners == [] and m.metricsListeners == []
    assert m.metrics is None
    assert list(m) == []
    config = Options(environ={"FDSTORE": "4"})
    config.parseOptions(["--port", "tcp:0:interface=127.0.0.1", "--workers", "2"])
    stored = makeService(config)
    assert isinstance(stored, WorkerMaster)
    assert stored.listeners[0].storeName is not None
