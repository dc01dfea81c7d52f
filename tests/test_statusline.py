"""
Tests for txsdnotify.statusline with a fake clock: what the status line says
while serving and while draining, and when it says it.
"""

from __future__ import annotations

from attrs import define
from twisted.internet.task import Clock

from txsdnotify.statusline import EXIT_MARGIN, StatusLine
from txsdnotify.systemd.lifecycle import Lifecycle
from txsdnotify.testing import MemoryNotifier
from txsdnotify.web.stats import RequestStats

IDLE = (
    "Total requests: 0; In flight: 0; Connections: 0; Requests/sec: 0.0;"
    " Bytes served/sec: 0 B"
)


@define
class FakeDrain:
    """
    A drain in progress, as the status line reads it.
    """

    remaining: int
    deadline: float


def make(
    interval: float = 10.0,
) -> tuple[StatusLine, Lifecycle, MemoryNotifier, RequestStats, Clock]:
    clock = Clock()
    notifier = MemoryNotifier(clock)
    lifecycle = Lifecycle(notifier)
    stats = RequestStats()
    line = StatusLine(lifecycle, stats, clock=clock, interval=interval)
    return line, lifecycle, notifier, stats, clock


def statuses(notifier: MemoryNotifier) -> list[str]:
    return notifier.values("STATUS")


def test_servingTicksOnlyWhenChanged() -> None:
    """
    Every interval the line is sampled; it goes out only when it differs
    from the last one sent.
    """
    line, lifecycle, notifier, stats, clock = make(interval=10)
    lifecycle.ready(line.current())
    line.serving()
    clock.advance(9.9)
    assert len(notifier.sent) == 1
    clock.advance(0.1)
    assert len(notifier.sent) == 1  # unchanged: nothing sent
    stats.started = stats.completed = 30
    stats.bytesSent = 1500
    clock.advance(10)
    assert notifier.sent[-1] == {
        "STATUS": "Total requests: 30; In flight: 0; Connections: 0;"
        " Requests/sec: 3.0; Bytes served/sec: 150 B"
    }
    assert notifier.times[-1] == 20
    clock.advance(10)
    # The rates fell to zero: that is a change too.
    assert statuses(notifier)[-1].endswith("Requests/sec: 0.0; Bytes served/sec: 0 B")
    count = len(notifier.sent)
    clock.advance(10)
    assert len(notifier.sent) == count


def test_servingFirstTickComparesWithTheReadyLine() -> None:
    """
    The line sent with READY=1 counts as sent: the first tick sends nothing
    if nothing changed since.
    """
    line, lifecycle, notifier, _, clock = make(interval=1)
    lifecycle.ready(line.current())
    line.serving()
    clock.advance(1)
    assert statuses(notifier) == [IDLE]


def test_noTicksUnlessReady() -> None:
    """
    Before READY=1 and during a reload the loop sends nothing.
    """
    line, lifecycle, notifier, stats, clock = make(interval=1)
    line.serving()
    stats.completed = 5
    clock.advance(1)
    assert notifier.sent == []
    lifecycle.ready("up")
    lifecycle.reloading()
    count = len(notifier.sent)
    stats.completed = 6
    clock.advance(1)
    assert len(notifier.sent) == count


def test_disabledNotifierNeverSamples() -> None:
    """
    With nowhere to send, the tick does not even sample (the rates keep
    their interval).
    """
    line, lifecycle, notifier, stats, clock = make(interval=1)
    lifecycle.ready("up")
    notifier.address = None
    line.serving()
    stats.completed = 4
    clock.advance(1)
    assert len(notifier.sent) == 1
    notifier.address = "memory"
    clock.advance(1)
    assert statuses(notifier)[-1].startswith("Total requests: 4;")
    assert "Requests/sec: 2.0;" in statuses(notifier)[-1]


def test_intervalZeroSendsNothing() -> None:
    line, lifecycle, notifier, stats, clock = make(interval=0)
    lifecycle.ready("up")
    line.serving()
    stats.completed = 3
    clock.advance(100)
    assert len(notifier.sent) == 1
    assert clock.getDelayedCalls() == []


def test_servingAgainRestartsTheLoop() -> None:
    """
    A second serving() (after a reload) replaces the loop, with no error.
    """
    line, lifecycle, notifier, stats, clock = make(interval=5)
    lifecycle.ready("up")
    line.serving()
    clock.advance(3)
    line.serving()
    stats.completed = 1
    clock.advance(4)
    assert len(notifier.sent) == 1
    clock.advance(1)
    assert len(notifier.sent) == 2 and notifier.times[-1] == 8
    assert len(clock.getDelayedCalls()) == 1


def test_noteAndFigures() -> None:
    """
    The note comes first, the figures that have something to say last.
    """
    line, *_ = make()
    line.addFigure(lambda: "Waiting for a thread: 4")
    line.addFigure(lambda: None)
    line.addFigure(lambda: "")
    line.addFigure(lambda: "Upgraded: 2")
    assert line.current() == f"{IDLE}; Waiting for a thread: 4; Upgraded: 2"
    line.note = "Reload failed at 12:00:00: boom"
    assert line.current() == (
        f"Reload failed at 12:00:00: boom; {IDLE}; Waiting for a thread: 4; Upgraded: 2"
    )
    line.note = ""
    assert line.current().startswith("Total requests: 0;")


def test_noteChangeIsSentOnTheNextTick() -> None:
    line, lifecycle, notifier, _, clock = make(interval=1)
    lifecycle.ready(line.current())
    line.serving()
    line.note = "Reload failed"
    clock.advance(1)
    assert statuses(notifier)[-1] == f"Reload failed; {IDLE}"


def test_drainingCountsDownWithExtensions() -> None:
    """
    While draining, every second: the connections left, the requests in
    flight, the seconds left, and EXTEND_TIMEOUT_USEC for what the drain
    still needs plus the exit margin.
    """
    line, lifecycle, notifier, stats, clock = make(interval=0)
    lifecycle.ready("up")
    clock.advance(100)
    drain = FakeDrain(remaining=3, deadline=130.0)
    stats.started, stats.completed = 12, 10
    lifecycle.draining(line.drainText(drain), line.extendUsec(30))
    line.draining(drain)
    assert notifier.sent[-1]["STATUS"] == (
        "Stopping: draining 3 connection(s), 2 request(s) in flight, 30s left;"
        " Total requests: 10"
    )
    assert notifier.sent[-1]["EXTEND_TIMEOUT_USEC"] == "35000000"
    clock.advance(0.9)
    assert len(notifier.sent) == 2
    clock.advance(0.1)
    assert notifier.sent[-1] == {
        "STATUS": "Stopping: draining 3 connection(s), 2 request(s) in flight,"
        " 29s left; Total requests: 10",
        "EXTEND_TIMEOUT_USEC": str(int((29 + EXIT_MARGIN) * 1_000_000)),
    }
    drain.remaining = 1
    stats.completed = 12
    clock.advance(1)
    assert notifier.sent[-1]["STATUS"].startswith(
        "Stopping: draining 1 connection(s), 0 request(s) in flight, 28s left;"
    )
    # Unchanged lines are sent too: each one carries the extension.
    count = len(notifier.sent)
    clock.advance(1)
    assert len(notifier.sent) == count + 1


def test_drainingPastTheDeadline() -> None:
    """
    Past the deadline (the abort still under way), the line says 0s left
    and asks for the exit margin only.
    """
    line, lifecycle, notifier, _, clock = make()
    lifecycle.ready("up")
    drain = FakeDrain(remaining=1, deadline=2.0)
    lifecycle.draining("Stopping")
    line.draining(drain)
    clock.advance(5)
    assert notifier.sent[-1] == {
        "STATUS": "Stopping: draining 1 connection(s), 0 request(s) in flight,"
        " 0s left; Total requests: 0",
        "EXTEND_TIMEOUT_USEC": str(int(EXIT_MARGIN * 1_000_000)),
    }


def test_noTickAfterTheForcedStop() -> None:
    """
    Once the stop is forced, its status ("Stopping now") is the last before
    "Stopped": no countdown and no more time asked for, and the loop ends.
    """
    line, lifecycle, notifier, _, clock = make()
    lifecycle.ready("up")
    drain = FakeDrain(remaining=1, deadline=30.0)
    lifecycle.draining("Stopping")
    line.draining(drain)
    clock.advance(1)
    assert "EXTEND_TIMEOUT_USEC" in notifier.sent[-1]
    lifecycle.forced("Stopping now")
    count = len(notifier.sent)
    clock.advance(5)
    assert len(notifier.sent) == count
    assert notifier.sent[-1] == {"STATUS": "Stopping now"}
    assert clock.getDelayedCalls() == []


def test_drainTickNeedsAStoppingState() -> None:
    """
    A drain given while the lifecycle is still ready (or already stopped)
    sends nothing on its own.
    """
    line, lifecycle, notifier, stats, clock = make()
    lifecycle.ready(line.current())
    line.draining(FakeDrain(remaining=1, deadline=10.0))
    clock.advance(1)
    assert len(notifier.sent) == 1
    lifecycle.draining("Stopping")
    lifecycle.stopped("Stopped")
    count = len(notifier.sent)
    clock.advance(1)
    assert len(notifier.sent) == count


def test_drainingReplacesTheServingLoop() -> None:
    line, lifecycle, notifier, _, clock = make(interval=10)
    lifecycle.ready("up")
    line.serving()
    lifecycle.draining("Stopping")
    line.draining(FakeDrain(remaining=1, deadline=100.0))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1)
    assert notifier.times[-1] == 1


def test_stop() -> None:
    line, lifecycle, notifier, stats, clock = make(interval=1)
    lifecycle.ready("up")
    line.serving()
    line.stop()
    line.stop()  # twice is fine
    stats.completed = 1
    clock.advance(5)
    assert len(notifier.sent) == 1
    assert clock.getDelayedCalls() == []


def test_extendUsec() -> None:
    line, *_ = make()
    assert line.extendUsec(1.5) == 6_500_000
    assert line.extendUsec(-3) == 5_000_000


def test_negativeIntervalSendsNothing() -> None:
    line, lifecycle, notifier, stats, clock = make(interval=-1)
    lifecycle.ready("up")
    line.serving()
    stats.completed = 3
    clock.advance(100)
    assert len(notifier.sent) == 1


def test_shortNote() -> None:
    """
    A long note (a failed reload with its reason) is cut at a ": " within
    60 characters and points at the log; a short one stays whole.
    """
    from txsdnotify.statusline import shortNote

    long = (
        "Reload failed at 12:00:01: replacing the workers: twistd sdweb:"
        " --wsgi 'app.wsgi': importing 'app' failed: ZeroDivisionError"
    )
    assert shortNote(long) == (
        "Reload failed at 12:00:01: replacing the workers (see the log)"
    )
    assert shortNote("Reload failed at 12:00:01: boom") == (
        "Reload failed at 12:00:01: boom"
    )
    assert shortNote("x" * 70) == "x" * 60 + " (see the log)"


def test_layout() -> None:
    """
    A layout puts the line together: the default one as one process has
    it, another (the master of --workers) its own way.
    """
    from txsdnotify.web.stats import StatusFigures

    line, lifecycle, notifier, stats, clock = make()
    line.addFigure(lambda: "Waiting for a thread: 4")
    line.note = "Reload failed"
    assert line.current() == f"Reload failed; {IDLE}; Waiting for a thread: 4"

    def layout(figures: StatusFigures, extras: list[str], note: str | None) -> str:
        return "; ".join(["2/2 workers", figures.short(), *extras, note or ""])

    line.layout = layout
    stats.started = stats.completed = 1234
    assert line.current() == (
        "2/2 workers; 1,234 req; 0.0 req/s; 0 in flight; 0 conn; 0 B/s;"
        " Waiting for a thread: 4; Reload failed"
    )
