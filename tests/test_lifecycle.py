"""
Tests for txsdnotify.systemd.lifecycle: every transition, what it tells systemd, and
that no state sends what it forbids.
"""

from __future__ import annotations

import pytest
from twisted.python.failure import Failure

from txsdnotify.systemd.lifecycle import ALLOWED, Lifecycle, State, StoppedBeforeReady
from txsdnotify.testing import MemoryNotifier


def make() -> tuple[Lifecycle, MemoryNotifier]:
    notifier = MemoryNotifier()
    return Lifecycle(notifier), notifier


def moveTo(lifecycle: Lifecycle, state: State) -> None:
    """
    Walk C{lifecycle} to C{state} by allowed transitions.
    """
    paths = {
        State.STARTING: [],
        State.READY: [lambda: lifecycle.ready("up")],
        State.RELOADING: [lambda: lifecycle.ready("up"), lifecycle.reloading],
        State.FAILED: [lambda: lifecycle.failed(Failure(OSError(98, "in use")))],
        State.DRAINING: [
            lambda: lifecycle.ready("up"),
            lambda: lifecycle.draining("x"),
        ],
        State.FORCED: [
            lambda: lifecycle.ready("up"),
            lambda: lifecycle.draining("x"),
            lambda: lifecycle.forced("now"),
        ],
        State.STOPPED: [
            lambda: lifecycle.ready("up"),
            lambda: lifecycle.draining("x"),
            lambda: lifecycle.stopped("done"),
        ],
    }
    for step in paths[state]:
        assert step()
    assert lifecycle.state is state


def transition(lifecycle: Lifecycle, to: State) -> bool:
    calls = {
        State.READY: lambda: lifecycle.ready("up"),
        State.RELOADING: lifecycle.reloading,
        State.FAILED: lambda: lifecycle.failed(Failure(ValueError("bad"))),
        State.DRAINING: lambda: lifecycle.draining("stopping"),
        State.FORCED: lambda: lifecycle.forced("now"),
        State.STOPPED: lambda: lifecycle.stopped("done"),
    }
    return calls[to]()


@pytest.mark.parametrize("start", list(State))
@pytest.mark.parametrize("to", [s for s in State if s is not State.STARTING])
def test_onlyAllowedTransitionsSend(start: State, to: State) -> None:
    """
    From every state, each transition either happens and sends, or is refused
    and sends nothing.
    """
    lifecycle, notifier = make()
    moveTo(lifecycle, start)
    before = len(notifier.sent)
    moved = transition(lifecycle, to)
    assert moved == (to in ALLOWED[start])
    if moved:
        assert lifecycle.state is to
        assert len(notifier.sent) == before + 1
    else:
        assert lifecycle.state is start
        assert len(notifier.sent) == before


def test_theTransitionTable() -> None:
    """
    The table itself: nothing leads back to starting, nothing leaves stopped,
    and nothing after STOPPING=1 leads to ready or reloading.
    """
    for state, targets in ALLOWED.items():
        assert State.STARTING not in targets
        if state.stopping:
            assert not targets & {State.READY, State.RELOADING}
    assert ALLOWED[State.STOPPED] == frozenset()


@pytest.mark.parametrize(
    "state,stopping",
    [
        (State.STARTING, False),
        (State.READY, False),
        (State.RELOADING, False),
        (State.FAILED, True),
        (State.DRAINING, True),
        (State.FORCED, True),
        (State.STOPPED, True),
    ],
)
def test_stoppingStates(state: State, stopping: bool) -> None:
    assert state.stopping is stopping


def test_firstReadyCarriesMainPid() -> None:
    import os

    lifecycle, notifier = make()
    lifecycle.ready("Total requests: 0")
    lifecycle.reloading()
    lifecycle.ready("Total requests: 1")
    first, reloading, second = notifier.sent
    assert first == {
        "READY": "1",
        "MAINPID": str(os.getpid()),
        "STATUS": "Total requests: 0",
    }
    assert reloading["RELOADING"] == "1"
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert second == {"READY": "1", "STATUS": "Total requests: 1"}


def test_drainingSendsStoppingAndExtension() -> None:
    lifecycle, notifier = make()
    lifecycle.ready("up")
    lifecycle.draining("Stopping: draining 2", 35_000_000)
    assert notifier.sent[-1] == {
        "STOPPING": "1",
        "STATUS": "Stopping: draining 2",
        "EXTEND_TIMEOUT_USEC": "35000000",
    }


def test_failedSendsErrno() -> None:
    lifecycle, notifier = make()
    lifecycle.failed(Failure(OSError(98, "Address already in use")))
    assert notifier.sent[-1]["ERRNO"] == "98"
    assert notifier.sent[-1]["STATUS"].startswith("Failed: ")


def test_statusExtendsOnlyOutsideReady() -> None:
    """
    EXTEND_TIMEOUT_USEC goes with a status while a phase with a timeout
    runs (stopping), never while ready (there is no timeout to extend), and
    nothing goes out once stopped.
    """
    lifecycle, notifier = make()
    lifecycle.ready("up")
    assert lifecycle.status("serving", 1_000_000) is True
    assert notifier.sent[-1] == {"STATUS": "serving"}
    lifecycle.draining("stopping")
    assert lifecycle.status("draining", 2_000_000) is True
    assert notifier.sent[-1] == {"STATUS": "draining", "EXTEND_TIMEOUT_USEC": "2000000"}
    lifecycle.stopped("done")
    count = len(notifier.sent)
    assert not lifecycle.status("late")
    assert not lifecycle.watchdog()
    assert len(notifier.sent) == count


def test_watchdogWhileDraining() -> None:
    """
    A long drain is not a hang: the watchdog is fed until the end.
    """
    lifecycle, notifier = make()
    lifecycle.ready("up")
    lifecycle.draining("stopping")
    lifecycle.forced("now")
    assert lifecycle.watchdog()
    assert notifier.sent[-1] == {"WATCHDOG": "1"}


def test_whenReadySucceeds() -> None:
    lifecycle, _ = make()
    early = lifecycle.whenReady()
    lifecycle.ready("up")
    results: list[object] = []
    early.addBoth(results.append)
    lifecycle.whenReady().addBoth(results.append)
    lifecycle.draining("bye")
    lifecycle.whenReady().addBoth(results.append)
    assert results == [None, None, None]


def test_whenReadyFailsWhenStoppedBeforeReady() -> None:
    """
    A service stopped while a readiness condition was still pending: the
    waiters learn it, rather than waiting for ever.
    """
    lifecycle, notifier = make()
    waiting = lifecycle.whenReady()
    lifecycle.draining("stopping")
    failures: list[Failure] = []
    waiting.addErrback(failures.append)
    assert failures and failures[0].check(StoppedBeforeReady)
    assert str(failures[0].value) == "stopped before it was ready"
    # The condition fires now: nothing more is sent.
    assert not lifecycle.ready("late")
    assert "READY" not in [k for m in notifier.sent for k in m]


def test_whenReadyFailsWithStartFailure() -> None:
    lifecycle, _ = make()
    waiting = lifecycle.whenReady()
    lifecycle.failed(Failure(OSError(98, "in use")))
    lifecycle.stopped()
    seen: list[Failure] = []
    waiting.addErrback(seen.append)
    later = lifecycle.whenReady()
    later.addErrback(seen.append)
    assert [f.type for f in seen] == [OSError, OSError]


def test_observers() -> None:
    lifecycle, _ = make()
    seen: list[tuple[State, State]] = []
    lifecycle.observe(lambda old, new: seen.append((old, new)))
    lifecycle.ready("up")
    lifecycle.ready("again")  # refused: not observed
    lifecycle.draining("bye")
    assert seen == [(State.STARTING, State.READY), (State.READY, State.DRAINING)]
