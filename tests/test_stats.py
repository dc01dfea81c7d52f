"""
Tests for txsdnotify.stats: counters, rates and the status line.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from txsdnotify.stats import RequestStats, StatusFigures, StatusSampler, formatBytes


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
