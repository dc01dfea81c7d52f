"""
Prometheus metrics (C{--metrics}, C{--metrics-port}): the counters behind
them, the exposition through a real twistd in one process and with
C{--workers 2}, C{promtool check metrics}, and a real Prometheus server
scraping.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from conftest import (
    APPS,
    freePort,
    killTree,
    need,
    processEnv,
    waitUntil,
)
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from test_service import live, makeService, portOf
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web.resource import Resource

from txsdnotify.metrics import Metrics
from txsdnotify.service import WebService
from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.testing import MemoryNotifier, NotifyReceiver
from txsdnotify.web.stats import DURATION_BUCKETS, RequestStats
from txsdnotify.workers.protocol import (
    countsMessage,
    gaugesFromMessage,
    statsFromMessage,
)

__all__ = ["live"]

TRACEBACK = "Traceback (most recent call last)"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """
    Every sample of an exposition: (name, labels) to value.
    """
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return samples


def total(samples: Samples, name: str) -> float:
    """
    The sum of the samples called C{name}, whatever their labels.
    """
    return sum(v for (n, _), v in samples.items() if n == name)


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def scrape(port: int, path: str = "/metrics") -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text: str = response.read().decode()
        return text


def requests(port: int, count: int, *, perConnection: int = 5) -> set[int]:
    """
    Make C{count} requests, two in five to /missing (404), the rest to /
    (200), C{perConnection} on each connection, and a health check and a
    scrape on every connection too; the pids that answered.
    """
    pids: set[int] = set()
    made = 0
    while made < count:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(min(perConnection, count - made)):
                missing = made % 5 in (1, 3)
                connection.request("GET", "/missing" if missing else "/")
                response = connection.getresponse()
                body = response.read()
                assert response.status == (404 if missing else 200)
                pids.add(int(body.split()[1]))
                made += 1
            for path in ("/healthz", "/metrics"):
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                assert response.status == 200, path
        finally:
            connection.close()
    return pids


def serve(
    twistd: Any, receiver: NotifyReceiver, *args: str, workers: int = 1
) -> tuple[Any, int, int]:
    """
    A twistd serving L{codesapp}, with --metrics /metrics, a --metrics-port
    and --health /healthz; its site port and its metrics port.
    """
    port, metricsPort = freePort(), freePort()
    server = twistd(
        [
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--metrics",
            "/metrics",
            "--metrics-port",
            f"tcp:{metricsPort}:interface=127.0.0.1",
            "--health",
            "/healthz",
            "--workers",
            str(workers),
            *args,
        ],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=60)
    return server, port, metricsPort


def healthRequests(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
        count: int = json.loads(r.read())["requests"]
        return count


# The counters and what goes over the workers' pipe.


def test_responseSentCounted() -> None:
    """
    A response is counted once, by its status code and in its duration
    bucket (upper bounds inclusive); codes of 1000 and more at 0.
    """
    stats = RequestStats()
    stats.started = 6
    stats.responseSent(200, DURATION_BUCKETS[0], 10)
    stats.responseSent(404, DURATION_BUCKETS[0] * 1.01, 5)
    stats.responseSent(503, 3600.0, 0)
    stats.responseSent(999, 0.0, 0)
    stats.responseSent(1000, 0.0, 0)
    stats.responseSent(200, DURATION_BUCKETS[4], 0)
    assert stats.completed == 6
    assert {c: n for c, n in enumerate(stats.byCode) if n} == {
        0: 1,
        200: 2,
        404: 1,
        503: 1,
        999: 1,
    }
    assert stats.durations[0] == 3
    assert stats.durations[1] == 1
    assert stats.durations[4] == 1
    assert stats.durations[-1] == 1
    assert sum(stats.durations) == 6
    assert stats.durationSum == pytest.approx(
        3600 + 2.01 * DURATION_BUCKETS[0] + DURATION_BUCKETS[4]
    )
    assert stats.bytesSent == 15
    assert stats.inFlight == 0


def test_abortedNotServed() -> None:
    stats = RequestStats()
    stats.started = 2
    stats.responseAborted(7)
    assert (stats.completed, stats.aborted, stats.inFlight) == (0, 1, 1)
    assert stats.bytesSent == 7
    assert sum(stats.byCode) == sum(stats.durations) == 0


def test_sums() -> None:
    a, b = RequestStats(), RequestStats()
    a.started = 3
    a.responseSent(200, 0.1, 1)
    b.started = 1
    b.responseSent(500, 0.2, 2)
    b.responseAborted(0)
    into = RequestStats()
    into.started = 99
    into.setToSum([a, b])
    assert (into.started, into.completed, into.aborted) == (4, 2, 1)
    assert (into.byCode[200], into.byCode[500], sum(into.byCode)) == (1, 1, 2)
    assert sum(into.durations) == 2
    assert into.durationSum == pytest.approx(0.3)
    assert into.bytesSent == 3
    # The parts are not changed.
    assert a.completed == 1 and b.aborted == 1


def test_countsOverThePipe() -> None:
    stats = RequestStats()
    stats.started = 4
    stats.responseSent(200, 0.02, 100)
    stats.responseSent(404, 7.0, 1)
    stats.responseAborted(3)
    message = json.loads(countsMessage(stats, {"http1": 2, "threadsBusy": 1}))
    into = RequestStats()
    statsFromMessage(message, into)
    for name in RequestStats.__slots__:
        assert getattr(into, name) == getattr(stats, name), name
    assert gaugesFromMessage(message) == {"http1": 2, "threadsBusy": 1}
    # Lists of the wrong shape are ignored.
    statsFromMessage({"byCode": {"200": -1}, "durations": ["x"] * 14}, into)
    statsFromMessage({"byCode": {"1000": 1}, "durations": [1, 2]}, into)
    assert into.byCode == stats.byCode and into.durations == stats.durations
    assert gaugesFromMessage({"gauges": {"a": -1, "b": True, "c": 3}}) == {"c": 3}


def test_collector() -> None:
    """
    The families made from the counters and the lifecycle; reloads counted
    as the lifecycle moves; an application's own metric in the same
    registry.
    """
    lifecycle = Lifecycle(MemoryNotifier())
    stats = RequestStats()
    stats.started = 3
    stats.responseSent(200, 0.003, 10)
    stats.responseSent(404, 0.3, 20)
    stats.connectionsOpened = 4
    metrics = Metrics(
        lifecycle,
        stats,
        lambda: {"http1": 1, "http2": 2, "upgraded": 3},
        startTime=1234.5,
    )
    mine = Counter("myapp_things", "Things.", registry=metrics.registry)
    mine.inc(7)
    lifecycle.ready("ok")
    lifecycle.reloading()
    lifecycle.ready("ok")
    samples = parse(metrics.exposition().decode())
    assert one(samples, "sdweb_http_requests_total", code="200") == 1
    assert one(samples, "sdweb_http_requests_total", code="404") == 1
    assert total(samples, "sdweb_http_requests_total") == 2
    assert one(samples, "sdweb_http_request_duration_seconds_bucket", le="0.0025") == 0
    assert one(samples, "sdweb_http_request_duration_seconds_bucket", le="0.005") == 1
    assert one(samples, "sdweb_http_request_duration_seconds_bucket", le="0.25") == 1
    assert one(samples, "sdweb_http_request_duration_seconds_bucket", le="0.5") == 2
    assert one(samples, "sdweb_http_request_duration_seconds_bucket", le="+Inf") == 2
    assert (
        one(
            samples,
            "sdweb_http_request_duration_seconds_count",
        )
        == 2
    )
    assert one(samples, "sdweb_http_request_duration_seconds_sum") == pytest.approx(
        0.303
    )
    assert one(samples, "sdweb_http_requests_in_flight") == 1
    assert one(samples, "sdweb_http_response_bytes_total") == 30
    assert one(samples, "sdweb_http_connections", kind="h2") == 2
    assert one(samples, "sdweb_http_connections", kind="upgraded") == 3
    assert one(samples, "sdweb_state", state="ready") == 1
    assert total(samples, "sdweb_state") == 1
    assert one(samples, "sdweb_start_time_seconds") == 1234.5
    assert one(samples, "sdweb_reloads_total") == 1
    assert one(samples, "myapp_things_total") == 7
    assert ("sdweb_workers_ready", ()) not in samples
    assert ("sdweb_wsgi_threads_busy", ()) not in samples
    lifecycle.draining("stopping")
    samples = parse(metrics.exposition().decode())
    assert one(samples, "sdweb_state", state="draining") == 1
    assert one(samples, "sdweb_state", state="ready") == 0


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello"


@pytest_twisted.inlineCallbacks
def test_libraryRegistry(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    An application that builds its WebService itself passes its own
    registry: its metrics and sdweb's are served together, on the site's
    port, uncounted.
    """
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    orders = Counter("shop_orders", "Orders taken.", registry=registry)
    service: WebService = makeService(
        live, _Hello(), metricsPath=b"/metrics", metricsRegistry=registry
    )
    service.startService()
    try:
        yield service.whenReady()
        assert service.metrics is not None
        assert service.metrics.registry is registry
        orders.inc(3)
        base = f"http://127.0.0.1:{portOf(service)}"
        for _ in range(4):
            response = yield treq.get(base + "/", persistent=False)
            yield response.content()
        held = socket.create_connection(("127.0.0.1", portOf(service)))
        yield deferLater(reactor, 0.2, lambda: None)
        response = yield treq.get(base + "/metrics", persistent=False)
        body = yield response.content()
        held.close()
        samples = parse(body.decode())
        # The one held open and the scrape's own.
        assert one(samples, "sdweb_http_connections", kind="http/1.1") == 2
        assert one(samples, "sdweb_http_connections", kind="h2") == 0
        assert one(samples, "shop_orders_total") == 3
        assert total(samples, "sdweb_http_requests_total") == 4
        assert service.tracker.stats.completed == 4
    finally:
        yield service.stopService()


def test_missingPrometheusClient(twistd: Any, tmp_path: Path) -> None:
    """
    Without prometheus_client, --metrics ends start-up with one line.
    """
    env = processEnv()
    env["PYTHONPATH"] = os.pathsep.join([str(APPS / "noprometheus"), env["PYTHONPATH"]])
    server = twistd(["--port", f"tcp:{freePort()}", "--metrics", "/metrics"], env)
    assert server.wait(60) != 0
    output = server.output()
    assert output.strip().splitlines() == [
        "twistd sdweb: metrics need prometheus_client:"
        " pip install 'txsdnotify[metrics]'"
    ], output


# Through real twistd processes.


@pytest.mark.parametrize("workers", [1, 2])
def test_exactCounts(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path, workers: int
) -> None:
    """
    After exactly 500 requests (200s and 404s; with workers, reaching both),
    the request counter's samples sum to 500 and the histogram's count is
    500, on the site's port and on the metrics port; the status line, the
    health check and the access log say 500 too: scrapes and health checks
    are neither counted nor logged.
    """
    server, port, metricsPort = serve(
        twistd,
        receiver,
        "--class",
        "codesapp.Codes",
        "--logfile",
        str(tmp_path / "access.log"),
        "--status-interval",
        "0.2",
        workers=workers,
    )
    # A connection each with workers: which worker accepts is the kernel's
    # choice, and more connections give both their turn.
    pids = requests(port, 500, perConnection=5 if workers == 1 else 1)
    assert len(pids) == workers
    for text in (scrape(port), scrape(metricsPort), scrape(port)):
        samples = parse(text)
        assert total(samples, "sdweb_http_requests_total") == 500
        assert one(samples, "sdweb_http_requests_total", code="200") == 300
        assert one(samples, "sdweb_http_requests_total", code="404") == 200
        assert one(samples, "sdweb_http_request_duration_seconds_count") == 500
        assert (
            one(samples, "sdweb_http_request_duration_seconds_bucket", le="+Inf") == 500
        )
        assert one(samples, "sdweb_http_requests_aborted_total") == 0
        assert one(samples, "sdweb_http_requests_in_flight") == 0
        if workers > 1:
            assert one(samples, "sdweb_workers_ready") == workers
    receiver.expect(
        lambda m: (
            m.get("STATUS", "").startswith("Total requests: 500;")
            or "; 500 req;" in m.get("STATUS", "")
        ),
        timeout=30,
    )
    if workers == 1:
        # With workers, each answers from its own figures.
        assert healthRequests(port) == 500
    server.process.send_signal(signal.SIGTERM)
    server.wait(60)
    assert receiver.values("STATUS")[-1].startswith("Stopped: 500 request(s) served")
    lines = (tmp_path / "access.log").read_text().splitlines()
    # With workers too: each appends to the one file.
    assert len(lines) == 500
    assert not [line for line in lines if "/metrics" in line or "/healthz" in line]
    assert TRACEBACK not in server.output()


@pytest.mark.parametrize("workers", [1, 2])
def test_promtool(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path, workers: int
) -> None:
    """
    promtool finds nothing wrong with what is served (a WSGI application,
    so that the thread figures are there too).
    """
    promtool = need("promtool")
    server, port, metricsPort = serve(
        twistd, receiver, "--wsgi", "wsgihello.app", workers=workers
    )
    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read()
    text = scrape(metricsPort)
    assert "sdweb_wsgi_threads_busy" in text
    assert ("sdweb_workers_ready" in text) == (workers > 1)
    # The WSGI request went through the fast HTTP/1.1 path: timed too.
    samples = parse(text)
    assert one(samples, "sdweb_http_request_duration_seconds_count") == 1
    assert one(samples, "sdweb_http_requests_total", code="200") == 1
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b"")
    # promtool does find problems: a counter without _total.
    bad = text.replace("sdweb_reloads_total", "sdweb_reloads")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=bad.encode(), capture_output=True
    )
    assert checked.returncode != 0 or checked.stdout or checked.stderr
    server.process.send_signal(signal.SIGTERM)
    server.wait(60)


def test_killedWorkerCountsKept(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    A worker killed with -9 does not make any counter go backwards: the
    master keeps what it last heard from it (and a scrape asks every worker
    first, so that is everything it answered).
    """
    server, port, metricsPort = serve(
        twistd, receiver, "--class", "codesapp.Codes", workers=2
    )
    master = server.process.pid
    pids = requests(port, 100, perConnection=1)
    assert len(pids) == 2
    before = parse(scrape(metricsPort))
    assert total(before, "sdweb_http_requests_total") == 100
    os.kill(min(pids), signal.SIGKILL)

    def replaced() -> bool:
        samples = parse(scrape(metricsPort))
        return (
            one(samples, "sdweb_workers_replaced_total") == 1
            and one(samples, "sdweb_workers_ready") == 2
        )

    waitUntil(replaced, timeout=60, interval=0.2)
    after = parse(scrape(metricsPort))
    counters = [
        key
        for key in before
        if key[0].endswith(("_total", "_bucket", "_count", "_sum"))
        and not key[0].startswith("sdweb_workers")
    ]
    assert len(counters) > 20
    for key in counters:
        assert after[key] >= before[key], key
    assert total(after, "sdweb_http_requests_total") == 100
    assert one(after, "sdweb_http_request_duration_seconds_count") == 100
    requests(port, 10, perConnection=1)
    assert total(parse(scrape(metricsPort)), "sdweb_http_requests_total") == 110
    assert server.process.poll() is None and server.process.pid == master


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """
    Start a real Prometheus server scraping a target every second:
    C{prometheus(target)}; its port.  Killed at the end.
    """
    binary = need("prometheus")
    started: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> int:
        port = freePort()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: sdweb\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        log = open(tmp_path / "prometheus.log", "wb")
        started.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        )
        log.close()
        return port

    yield start
    for process in started:
        killTree(process.pid)
        process.wait()


def query(port: int, promql: str) -> float | None:
    """
    The value of an instant query's single result, or None while there is
    none (or Prometheus does not answer yet).
    """
    address = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
        {"query": promql}
    )
    try:
        with urllib.request.urlopen(address, timeout=10) as response:
            answer = json.loads(response.read())
    except OSError:
        return None
    results = answer["data"]["result"]
    if len(results) != 1:
        return None
    return float(results[0]["value"][1])


def test_prometheusScrapes(
    twistd: Any, receiver: NotifyReceiver, prometheus: Any, tmp_path: Path
) -> None:
    """
    A real Prometheus server scrapes --metrics-port of a master with two
    workers: the target is up, and its HTTP API returns the counter value
    that clients made.
    """
    server, port, metricsPort = serve(
        twistd, receiver, "--class", "codesapp.Codes", workers=2
    )
    promPort = prometheus(f"127.0.0.1:{metricsPort}")
    requests(port, 37, perConnection=1)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        up = query(promPort, 'up{job="sdweb"}')
        served = query(promPort, 'sum(sdweb_http_requests_total{job="sdweb"})')
        if up == 1 and served == 37:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(
            f"up={up} served={served}:\n"
            + (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]
        )
    assert query(promPort, 'sdweb_workers_ready{job="sdweb"}') == 2
    assert total(parse(scrape(metricsPort)), "sdweb_http_requests_total") == 37
    server.process.send_signal(signal.SIGTERM)
    server.wait(60)


def test_stateDuringStop(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    The state gauge follows the lifecycle: ready, then draining while the
    health grace runs (the metrics port still answers).
    """
    server, port, metricsPort = serve(
        twistd, receiver, "--class", "codesapp.Codes", "--health-grace", "30"
    )
    assert one(parse(scrape(metricsPort)), "sdweb_state", state="ready") == 1
    server.process.send_signal(signal.SIGTERM)
    receiver.expect("STOPPING", timeout=30)
    assert one(parse(scrape(port)), "sdweb_state", state="draining") == 1
    assert one(parse(scrape(metricsPort)), "sdweb_state", state="draining") == 1
    server.process.send_signal(signal.SIGTERM)
    server.wait(60)
    assert State.DRAINING.value == "draining"


def test_metricsRequestClassProvidesWhatItsBaseProvides() -> None:
    """
    The request class that answers scrapes provides what the class it
    is made from provides.
    """
    from inmemory import checkProvidesAsBase

    from txsdnotify.metrics import metricsRequestFactory

    unused: Any = None
    checkProvidesAsBase(
        lambda base: metricsRequestFactory(base, unused, b"/metrics", None)
    )
