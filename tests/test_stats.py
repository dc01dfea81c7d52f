"""
Tests for txsdnotify.web.stats: counters, rates and the status line.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from txsdnotify.web.stats import RequestStats, StatusFigures, StatusSampler, formatBytes


def test_derivedCounts() -> None:
    stats = RequestStats()
    stats.started = 5
    stats.completed = 3
    stats.connectionsOpened = 4
    stats.connectionsClosed = 1
    assert stats.inFlight == 2
    assert stats.openConnections == 3


def test_ratesOverTheLastInterval() -> None:
    clock = Clock()
    stats = RequestStats()
    sampler = StatusSampler(stats, clock)
    stats.started = stats.completed = 20
    stats.bytesSent = 4000
    clock.advance(2)
    first = sampler.sample()
    assert first == StatusFigures(
        total=20,
        inFlight=0,
        connections=0,
        requestsPerSecond=10.0,
        bytesPerSecond=2000.0,
    )
    stats.started = 31
    stats.completed = 30
    clock.advance(5)
    second = sampler.sample()
    assert second.total == 30
    assert second.inFlight == 1
    assert second.requestsPerSecond == 2.0
    assert second.bytesPerSecond == 0.0


def test_noTimeElapsed() -> None:
    clock = Clock()
    sampler = StatusSampler(RequestStats(), clock)
    assert sampler.sample().requestsPerSecond == 0.0


def test_format() -> None:
    figures = StatusFigures(
        total=1234,
        inFlight=3,
        connections=17,
        requestsPerSecond=52.34,
        bytesPerSecond=1234567,
    )
    assert figures.format() == (
        "Total requests: 1234; In flight: 3; Connections: 17; Requests/sec: 52.3;"
        " Bytes served/sec: 1.2 MB"
    )


def test_formatBytes() -> None:
    assert formatBytes(0) == "0 B"
    assert formatBytes(999) == "999 B"
    assert formatBytes(1500) == "1.5 kB"
    assert formatBytes(150_000) == "150 kB"
    assert formatBytes(2.5e9) == "2.5 GB"
    assert formatBytes(5e12) == "5000 GB"


def test_freshCountersAreZero() -> None:
    stats = RequestStats()
    assert (
        stats.started,
        stats.completed,
        stats.bytesSent,
        stats.connectionsOpened,
        stats.connectionsClosed,
    ) == (0, 0, 0, 0, 0)
    assert (stats.inFlight, stats.openConnections) == (0, 0)


def test_ratesAreFractionsOfTheInterval() -> None:
    """
    Rates over the last interval only, not rounded: 7 requests and 601
    bytes in 2 s after an earlier reading.
    """
    clock = Clock()
    stats = RequestStats()
    sampler = StatusSampler(stats, clock)
    stats.completed, stats.bytesSent = 20, 4000
    clock.advance(1)
    sampler.sample()
    stats.completed, stats.bytesSent = 27, 4601
    clock.advance(2)
    figures = sampler.sample()
    assert (figures.requestsPerSecond, figures.bytesPerSecond) == (3.5, 300.5)


def test_shortIntervalStillHasRates() -> None:
    clock = Clock()
    stats = RequestStats()
    sampler = StatusSampler(stats, clock)
    stats.completed = 1
    clock.advance(0.5)
    assert sampler.sample().requestsPerSecond == 2.0


def test_clockSteppingBackGivesNoNegativeRates() -> None:
    """
    The reactor's clock is the wall clock: if it steps back, the rates
    are zero for that interval, never negative.
    """
    clock = Clock()
    clock.advance(100)
    stats = RequestStats()
    sampler = StatusSampler(stats, clock)
    stats.completed, stats.bytesSent = 5, 500
    clock.rightNow = 90
    figures = sampler.sample()
    assert (figures.requestsPerSecond, figures.bytesPerSecond) == (0.0, 0.0)


def rateText(value: float) -> str:
    figures = StatusFigures(
        total=0, inFlight=0, connections=0, requestsPerSecond=value, bytesPerSecond=0
    )
    return figures.format().split("Requests/sec: ")[1].split(";")[0]


def test_requestRateDigits() -> None:
    """
    One decimal below 100 requests/s, none from 100 on.
    """
    assert rateText(99.5) == "99.5"
    assert rateText(100) == "100"
    assert rateText(150) == "150"


def test_formatBytesBoundaries() -> None:
    assert formatBytes(1000) == "1.0 kB"
    assert formatBytes(99_500) == "99.5 kB"
    assert formatBytes(100_000) == "100 kB"
    assert formatBytes(999_999) == "1000 kB"
    assert formatBytes(1_000_000) == "1.0 MB"


def test_requestBeganAndEnded() -> None:
    """
    The two methods every HTTP path counts through.
    """
    stats = RequestStats()
    stats.requestBegan()
    stats.requestBegan()
    assert (stats.started, stats.inFlight) == (2, 2)
    stats.responseSent(200, 0.01, 1234)
    assert (stats.completed, stats.bytesSent, stats.inFlight) == (1, 1234, 1)
