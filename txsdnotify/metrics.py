# -*- test-case-name: tests.test_metrics -*-
"""
The service's figures for Prometheus: C{--metrics /metrics} and
C{--metrics-port}.

L{Metrics} reads the same L{RequestStats} as the status line and the health
check (one source of truth), the L{Lifecycle} and a few gauges read when
scraped (open connections by kind, WSGI threads, workers), and exposes them
in the Prometheus text format through C{prometheus_client}'s registry and
exposition code.  Nothing is done per request here: the counters are plain
integers the tracking bumps, and a scrape turns them into metric families.

An application adds its own metrics to L{Metrics.registry}; they are served
at the same endpoint.

The endpoint answers

  - on the application's own ports, at one path, before the site sees the
    request (L{metricsRequestFactory}): neither counted in the figures nor
    written to the access log, like the health check;
  - on a port of its own (L{metricsListeners}), which is what an operator
    wants: the figures are not for the public.

With C{--workers}, the master makes one L{Metrics} from the sum of every
worker's counters (see L{txsdnotify.workers}); a worker asked on its own
ports passes the question on to the master.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from txsdnotify.health import _finishUnlogged, _QuietSite
from txsdnotify.listeners import Listener, planListeners
from txsdnotify.systemd.activation import InheritedSocket
from txsdnotify.systemd.lifecycle import Lifecycle, State
from txsdnotify.web.stats import DURATION_BUCKETS, RequestStats
from txsdnotify.web.tracking import (
    TrackingFactory,
    connectionKinds,
    providesAsBase,
)

__all__ = [
    "CONNECTION_KINDS",
    "Metrics",
    "MetricsPage",
    "MetricsUnavailable",
    "WorkerFigures",
    "checkAvailable",
    "metricsListeners",
    "metricsRequestFactory",
    "newRegistry",
    "trackerGauges",
]

PREFIX = "sdweb"

CONNECTION_KINDS = ("http1", "http2", "upgraded")
"""
The gauges of open connections, in the order of
L{txsdnotify.web.tracking.connectionKinds}, as named in L{Metrics.gauges}.
"""

_KIND_LABELS = {"http1": "http/1.1", "http2": "h2", "upgraded": "upgraded"}

INSTALL_HINT = "pip install 'txsdnotify[metrics]'"


class MetricsUnavailable(Exception):
    """
    C{prometheus_client} is not installed.
    """

    def __str__(self) -> str:
        return f"metrics need prometheus_client: {INSTALL_HINT}"


def checkAvailable() -> None:
    """
    @raise MetricsUnavailable: If C{prometheus_client} cannot be imported.
    """
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MetricsUnavailable() from None


def newRegistry() -> Any:
    """
    A new, empty C{prometheus_client.CollectorRegistry}.

    @raise MetricsUnavailable: Without C{prometheus_client}.
    """
    checkAvailable()
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


WorkerFigures = Mapping[str, int]
"""
What a master adds about its workers: C{ready}, C{replaced},
C{recycled}, C{failing}.
"""

Gauges = Callable[[], Mapping[str, int]]


def trackerGauges(tracker: TrackingFactory, threads: Any = None) -> Gauges:
    """
    The gauges of one process: its open connections by kind (a walk over
    them, once per scrape), and, for a C{--wsgi} application, the threads
    busy and the requests waiting for one (C{threads} is its
    L{txsdnotify.wsgi.threads.RequestThreads}).
    """

    def gauges() -> dict[str, int]:
        found = dict(zip(CONNECTION_KINDS, connectionKinds(tracker)))
        if threads is not None:
            found["threadsBusy"] = threads.busy
            found["threadsWaiting"] = threads.waiting
        return found

    return gauges


class Metrics:
    """
    The figures of one service, as Prometheus reads them.

    @ivar registry: The C{prometheus_client} registry served: sdweb's
        figures, and whatever the application registers in it.
    @ivar stats: The request counters (the ones the status line reads).
    @ivar lifecycle: Where the state comes from.
    @ivar gauges: Called at each scrape: the open connections by kind
        (L{CONNECTION_KINDS}) and, if known, C{threadsBusy} and
        C{threadsWaiting}.
    @ivar workers: Called at each scrape by a master: L{WorkerFigures}.
    @ivar refresh: Called before each scrape (a master has its workers
        report afresh); may return a L{Deferred}.
    @ivar startTime: When the service started (seconds since the epoch).
    @ivar reloads: Reloads begun.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        stats: RequestStats,
        gauges: Gauges,
        *,
        registry: Any = None,
        startTime: float | None = None,
    ) -> None:
        """
        @param registry: A C{prometheus_client.CollectorRegistry} to serve
            (sdweb's figures are added to it); a new one by default.
        @raise MetricsUnavailable: Without C{prometheus_client}.
        """
        self.lifecycle = lifecycle
        self.stats = stats
        self.gauges = gauges
        self.workers: Callable[[], WorkerFigures] | None = None
        self.refresh: Callable[[], object] | None = None
        self.startTime = time.time() if startTime is None else startTime
        self.reloads = 0
        lifecycle.observe(self._observe)
        self.registry = registry if registry is not None else newRegistry()
        self.registry.register(_Collector(self))

    def _observe(self, old: State, new: State) -> None:
        if new is State.RELOADING:
            self.reloads += 1

    def exposition(self) -> bytes:
        """
        Everything in L{registry}, in the Prometheus text format, now.
        """
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    def render(self) -> Deferred[bytes]:
        """
        L{refresh}, then L{exposition}.
        """
        if self.refresh is None:
            return succeed(self.exposition())
        d: Deferred[Any] = maybeDeferred(self.refresh)
        return d.addCallback(lambda _: self.exposition())


class _Collector:
    """
    sdweb's metric families, made at each scrape from L{Metrics}.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        metrics = self._metrics
        stats = metrics.stats
        name = f"{PREFIX}_http"

        requests = CounterMetricFamily(
            f"{name}_requests",
            "HTTP requests whose response was sent, by status code.",
            labels=["code"],
        )
        for code, count in enumerate(stats.byCode):
            if count:
                requests.add_metric([str(code) if code else "other"], count)
        yield requests

        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(DURATION_BUCKETS, stats.durations):
            cumulative += count
            buckets.append((_floatText(bound), cumulative))
        buckets.append(("+Inf", cumulative + stats.durations[-1]))
        yield HistogramMetricFamily(
            f"{name}_request_duration_seconds",
            "Seconds from a request's arrival to its response being sent.",
            buckets=buckets,
            sum_value=stats.durationSum,
        )
        yield CounterMetricFamily(
            f"{name}_requests_aborted",
            "HTTP requests whose connection closed before their response was"
            " finished: aborted by the drain, or the client went away.",
            value=stats.aborted,
        )
        yield CounterMetricFamily(
            f"{name}_response_bytes",
            "Response body bytes sent.",
            value=stats.bytesSent,
        )
        yield GaugeMetricFamily(
            f"{name}_requests_in_flight",
            "HTTP requests received and not yet answered.",
            value=stats.inFlight,
        )
        yield CounterMetricFamily(
            f"{name}_connections_accepted",
            "Connections accepted.",
            value=stats.connectionsOpened,
        )
        gauges = metrics.gauges()
        connections = GaugeMetricFamily(
            f"{name}_connections",
            "Connections open now, by kind.",
            labels=["kind"],
        )
        for kind in CONNECTION_KINDS:
            connections.add_metric([_KIND_LABELS[kind]], gauges.get(kind, 0))
        yield connections

        state = GaugeMetricFamily(
            f"{PREFIX}_state",
            "The service's lifecycle state: 1 for the state it is in.",
            labels=["state"],
        )
        current = metrics.lifecycle.state
        for each in State:
            state.add_metric([each.value], 1 if each is current else 0)
        yield state
        yield GaugeMetricFamily(
            f"{PREFIX}_start_time_seconds",
            "When the service started, in seconds since the epoch.",
            value=metrics.startTime,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_reloads", "Reloads begun.", value=metrics.reloads
        )

        if "threadsBusy" in gauges:
            yield GaugeMetricFamily(
                f"{PREFIX}_wsgi_threads_busy",
                "WSGI threads running a request (or about to take one).",
                value=gauges["threadsBusy"],
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_wsgi_requests_waiting",
                "WSGI requests waiting for a thread.",
                value=gauges.get("threadsWaiting", 0),
            )

        if metrics.workers is not None:
            workers = metrics.workers()
            yield GaugeMetricFamily(
                f"{PREFIX}_workers_ready",
                "Worker processes ready and serving.",
                value=workers.get("ready", 0),
            )
            yield CounterMetricFamily(
                f"{PREFIX}_workers_replaced",
                "Worker processes that died while serving and were replaced.",
                value=workers.get("replaced", 0),
            )
            yield CounterMetricFamily(
                f"{PREFIX}_workers_recycled",
                "Worker processes replaced on purpose, the new one ready"
                " before the old one drained (a reload).",
                value=workers.get("recycled", 0),
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_workers_failing",
                "Worker places whose worker keeps exiting before it is ready.",
                value=workers.get("failing", 0),
            )


def _floatText(value: float) -> str:
    # prometheus_client writes le="0.005", as the Go client does.
    return repr(float(value))


CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
"""
The content type of the Prometheus text format.
"""


class MetricsPage:
    """
    Answers a scrape with what C{exposition} returns.

    @ivar exposition: Returns the body, or a L{Deferred} of it (a worker
        asks its master).
    """

    def __init__(self, exposition: Callable[[], Deferred[bytes] | bytes]) -> None:
        self.exposition = exposition

    def answer(self, request: Any, logged: bool = False) -> None:
        """
        Answer C{request} in full (without an access log line unless
        C{logged}); 503 if the figures cannot be had.
        """
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = maybeDeferred(self.exposition)

        def send(body: bytes) -> None:
            if gone:
                return
            headers = request.responseHeaders
            headers.setRawHeaders(b"content-type", [CONTENT_TYPE])
            headers.setRawHeaders(b"cache-control", [b"no-store"])
            headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
            if request.method != b"HEAD":
                request.write(body)
            _finish(request, logged)

        def failed(failure: Failure) -> None:
            if gone:
                return
            request.setResponseCode(503)
            body = f"metrics unavailable: {failure.getErrorMessage()}\n".encode()
            request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain"])
            request.write(body)
            _finish(request, logged)

        d.addCallbacks(send, failed)


def _finish(request: Any, logged: bool) -> None:
    if logged:
        request.finish()
    else:
        _finishUnlogged(request)


def metricsRequestFactory(
    base: Callable[..., Any], page: MetricsPage, path: bytes, tracker: Any
) -> Callable[..., Any]:
    """
    A request factory that makes what C{base} makes, except that a request
    for C{path} is answered by C{page} before anything else sees it: not
    counted, not logged.
    """
    if isinstance(base, type):

        class MetricsRequest(base):  # type: ignore[misc,valid-type]
            def process(self) -> None:
                if self.path == path:
                    _answerMetrics(self, page, tracker)
                else:
                    super().process()

        MetricsRequest.__name__ = MetricsRequest.__qualname__ = base.__name__
        MetricsRequest.__module__ = base.__module__
        providesAsBase(MetricsRequest, base)
        return MetricsRequest

    def makeRequest(*args: Any, **kwargs: Any) -> Any:
        request = base(*args, **kwargs)
        process = request.process

        def checked() -> None:
            if request.path == path:
                _answerMetrics(request, page, tracker)
            else:
                process()

        request.process = checked
        return request

    return makeRequest


def _answerMetrics(request: Any, page: MetricsPage, tracker: Any) -> None:
    tracker.used.add(request.channel)
    drain = tracker.drain
    if drain is not None:
        drain.requestArrived(request)
    page.answer(request)


class _MetricsResource(Resource):
    """
    The metrics at one path, 404 elsewhere.
    """

    isLeaf = True

    def __init__(self, page: MetricsPage, path: bytes) -> None:
        super().__init__()
        self._page = page
        self._path = path

    def render(self, request: Any) -> Any:
        if request.path != self._path:
            request.setResponseCode(404)
            return b""
        self._page.answer(request, logged=True)
        return NOT_DONE_YET


def metricsSite(page: MetricsPage, path: bytes) -> Site:
    """
    A site answering only C{path}, with C{page}, for a port of its own;
    it writes no access log.
    """
    return _QuietSite(_MetricsResource(page, path))


def metricsListeners(
    page: MetricsPage,
    path: bytes,
    ports: Sequence[str],
    *,
    reactor: object,
    inherited: Sequence[InheritedSocket],
) -> list[Listener]:
    """
    The listeners of the metrics ports (C{path} answered by C{page}); never
    kept in the fd store.
    """
    if not ports:
        return []
    listeners, _ = planListeners(
        ports, reactor=reactor, inherited=inherited, fdStore=False
    )
    site = metricsSite(page, path)
    for listener in listeners:
        listener.factory = site
    return listeners
