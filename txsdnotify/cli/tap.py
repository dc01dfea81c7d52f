# -*- test-case-name: tests.test_twistd -*-
"""
The C{twistd sdweb} command line: every option of C{twistd web}, plus
C{--port}, C{--status-interval} and C{--drain-timeout}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import interfaces
from twisted.internet.endpoints import serverFromString
from twisted.python import usage
from twisted.web import static
from twisted.web import tap as webtap
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from txsdnotify.cli.appload import (
    LoadError,
    callApplicationCode,
    checkDottedName,
    loadApplication,
    usePaths,
)
from txsdnotify.cli.demo import DemoPage
from txsdnotify.cli.startup_checks import (
    checkPath,
    checkPortDescription,
    checkResourceScript,
)
from txsdnotify.metrics import MetricsUnavailable, checkAvailable, trackerGauges
from txsdnotify.service import HTTP_PARSERS, WebService
from txsdnotify.systemd.activation import (
    LISTEN_VARIABLES,
    InheritedSocket,
    inheritedSockets,
    storeEnabled,
    systemdDescriptions,
)
from txsdnotify.systemd.journal import journalStream
from txsdnotify.systemd.message import NotifyAddressError, parseAddress
from txsdnotify.systemd.notify import Notifier
from txsdnotify.web.accesslog import AccessLogError, AccessLogSite, checkAccessLog
from txsdnotify.web.tls import TLSSetupError, checkTLS, credentialPaths
from txsdnotify.workers.options import (
    checkWorkerOnlyOptions,
    checkWorkerOptions,
    megabytes,
    requestCount,
    workerTimeout,
)
from txsdnotify.wsgi.container import WSGIApplication
from txsdnotify.wsgi.http11 import Limits, available
from txsdnotify.wsgi.threads import DEFAULT_THREADS

__all__ = ["Options", "makeService", "makeSite"]


def _seconds(option: str) -> Callable[[str], float]:
    """
    A coercer for C{--option}: a finite number of seconds >= 0.
    """

    def coerce(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0 <= number < float("inf"):
            raise ValueError(
                f"--{option} wants a number of seconds >= 0, not {value!r}"
            )
        return number

    coerce.coerceDoc = "A number of seconds >= 0."  # type: ignore[attr-defined]
    return coerce


def _threadCount(value: str) -> int:
    """
    The coercer of C{--threads}: a whole number >= 1.
    """
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--threads wants a whole number >= 1, not {value!r}")
    return int(value)


def _workerCount(value: str) -> int:
    """
    The coercer of C{--workers}: a whole number >= 1.
    """
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--workers wants a whole number >= 1, not {value!r}")
    return int(value)


def _httpParser(value: str) -> str:
    """
    The coercer of C{--http-parser}.
    """
    if value not in HTTP_PARSERS:
        raise ValueError(
            f"--http-parser wants one of {', '.join(HTTP_PARSERS)}, not {value!r}"
        )
    return value


def _limit(option: str) -> Callable[[str], int]:
    """
    A coercer for C{--limit-*}: a whole number >= 0.
    """

    def coerce(value: str) -> int:
        if not value.isdigit():
            raise ValueError(f"--{option} wants a whole number >= 0, not {value!r}")
        return int(value)

    coerce.coerceDoc = "A whole number >= 0."  # type: ignore[attr-defined]
    return coerce


_DEFAULT_LIMITS = Limits()


def limitsOf(config: Mapping[str, Any]) -> Limits:
    """
    The request limits of the fast HTTP path that the options give.
    """
    return Limits(
        requestLine=config["limit-request-line"],
        requestFields=config["limit-request-fields"],
        requestFieldSize=config["limit-request-field_size"],
        requestBody=config["limit-request-body"],
    )


def healthPath(value: str) -> bytes:
    """
    The C{--health} path: absolute, ASCII, without a query.
    """
    if not value.startswith("/") or "?" in value or not value.isascii():
        raise ValueError(f"--health wants a path such as /healthz, not {value!r}")
    return value.encode("ascii")


healthPath.coerceDoc = "A path such as /healthz."  # type: ignore[attr-defined]


def metricsPath(value: str) -> bytes:
    """
    The C{--metrics} path: absolute, ASCII, without a query.
    """
    if not value.startswith("/") or "?" in value or not value.isascii():
        raise ValueError(f"--metrics wants a path such as /metrics, not {value!r}")
    return value.encode("ascii")


metricsPath.coerceDoc = "A path such as /metrics."  # type: ignore[attr-defined]


def portDescription(port: str) -> str:
    """
    A bare port number means TCP on every interface; anything else is an
    strports description, passed on as it is.
    """
    return f"tcp:{port}" if port.isdigit() else port


class Options(webtap.Options):
    """
    The options of C{twistd sdweb}.

    Usage errors end the process with one line on stderr instead of twistd's
    whole help text.

    @ivar environ: The environment to read C{NOTIFY_SOCKET} from.
    """

    synopsis = "[sdweb options]"
    longdesc = """\
Serve a twisted.web site as a systemd Type=notify service: READY=1 once every
port is bound, request figures in STATUS= (systemctl status), STOPPING=1 and a
drain of the requests in flight on SIGTERM, reload on SIGHUP, watchdog pings.
With no site given, serves a demo page; with no --port, serves the sockets
systemd passed (socket activation), or else tcp:8080."""

    optParameters = [
        [
            "status-interval",
            None,
            1.0,
            "Seconds between STATUS= updates; 0 sends only the ones at start and stop.",
            _seconds("status-interval"),
        ],
        [
            "drain-timeout",
            None,
            30.0,
            "Seconds to let requests in flight finish on stop before the rest"
            " are aborted.",
            _seconds("drain-timeout"),
        ],
        [
            "threads",
            None,
            DEFAULT_THREADS,
            "Threads the --wsgi application runs in.",
            _threadCount,
        ],
        [
            "http-parser",
            None,
            "auto",
            "How a --wsgi application's HTTP/1.1 is served: fast (sdweb's own"
            " protocol on httptools, pip install 'txsdnotify[fast]'), twisted"
            " (twisted.web), auto (fast where httptools is installed). TLS"
            " ports and other sites always use twisted.web.",
            _httpParser,
        ],
        [
            "limit-request-line",
            None,
            _DEFAULT_LIMITS.requestLine,
            "Fast HTTP path: most bytes of a request target (414 beyond), as"
            " gunicorn's.",
            _limit("limit-request-line"),
        ],
        [
            "limit-request-fields",
            None,
            _DEFAULT_LIMITS.requestFields,
            "Fast HTTP path: most request header fields (431 beyond).",
            _limit("limit-request-fields"),
        ],
        [
            "limit-request-field_size",
            None,
            _DEFAULT_LIMITS.requestFieldSize,
            "Fast HTTP path: most bytes of one header field (431 beyond).",
            _limit("limit-request-field_size"),
        ],
        [
            "limit-request-body",
            None,
            _DEFAULT_LIMITS.requestBody,
            "Fast HTTP path: most bytes of a request body (413 beyond); 0: no limit.",
            _limit("limit-request-body"),
        ],
        [
            "health",
            None,
            None,
            "Answer load balancers' health checks at this path (e.g. /healthz)"
            " before the site: 200 with JSON while ready, 503 while starting"
            " or stopping.",
            healthPath,
        ],
        ["health-port", None, None, "Also answer the health checks (only) here."],
        [
            "workers",
            None,
            1,
            "Serve from this many worker processes (one per core); this"
            " process keeps the sockets and speaks to systemd (see"
            " docs/workers.md).",
            _workerCount,
        ],
        [
            "worker-timeout",
            None,
            30.0,
            "With --workers: seconds a worker may go silent (its reactor"
            " blocked) before it is killed and replaced.",
            workerTimeout,
        ],
        [
            "max-requests",
            None,
            0,
            "With --workers: replace a worker after this many requests"
            " (gracefully: the new one serves before the old one drains);"
            " 0: never.",
            requestCount("max-requests"),
        ],
        [
            "max-requests-jitter",
            None,
            0,
            "With --max-requests: up to this many more, at random, per worker.",
            requestCount("max-requests-jitter"),
        ],
        [
            "max-worker-memory",
            None,
            0,
            "With --workers: replace a worker (gracefully) whose resident"
            " memory passes this many megabytes; 0: never.",
            megabytes,
        ],
        ["agent-port", None, None, "Answer HAProxy's agent-check here."],
        [
            "metrics",
            None,
            None,
            "Answer Prometheus scrapes at this path (e.g. /metrics) before"
            " the site; not counted, not logged (needs txsdnotify[metrics]).",
            metricsPath,
        ],
        [
            "metrics-port",
            None,
            None,
            "Answer Prometheus scrapes (only) here, at /metrics (or the"
            " --metrics path).",
        ],
        [
            "health-grace",
            None,
            0.0,
            "Seconds to go on serving after a stop began, health checks"
            " failing, before the ports close.",
            _seconds("health-grace"),
        ],
    ]

    optFlags = [
        [
            "fd-store",
            "",
            "Keep the TCP sockets sdweb binds in systemd's fd store (the unit"
            " needs FileDescriptorStoreMax=), so that a restart never closes a"
            " port. On by itself where systemd (>= 254) says the store is on.",
        ],
    ]

    checkOnly = False
    """
    Check the options without touching this machine: no application import,
    no path checks, no C{systemd:} sockets (the unit generator sets it).
    """

    inWorker = False
    """
    Whether these are the options of a worker process of C{--workers}, which
    loads the application and builds the site (the master only imports it,
    to fail start-up at once when it cannot be).
    """

    arguments: list[str] = []
    """
    The sdweb arguments as given, for the worker processes.
    """

    startDirectory = ""
    """
    The working directory before C{--chdir}, where the workers start.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        inherited: Sequence[InheritedSocket] | None = None,
    ) -> None:
        super().__init__()
        # Without an environment given, parseOptions takes a copy of the
        # process's and removes what children must not inherit.
        self._scrub = environ is None
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self._inherited = inherited
        self._application: tuple[str, str] | None = None
        self["pythonpath"] = []
        for name, doc in self.docs.items():
            if doc:
                self.docs[name] = " ".join(doc.split())

    @property
    def inherited(self) -> Sequence[InheritedSocket]:
        """
        The sockets systemd passed in (socket activation, fd store).
        """
        if self._inherited is None:
            self._inherited = inheritedSockets(environ=self.environ)
        return self._inherited

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse, and turn any usage error into a one-line exit.

        Before any option runs, take the process's environment for sdweb and
        remove what children and the application must not see.
        """
        if self._scrub:
            self.environ = scrubEnvironment()
            self._scrub = False
        self.arguments = list(sys.argv[1:] if options is None else options)
        self.startDirectory = os.getcwd()
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"twistd sdweb: {e} (see: twistd sdweb --help)") from None

    def opt_port(self, port: str) -> None:
        """
        Listen here: a port number (8080 means tcp:8080) or an strports
        description (tcp:8080:interface=127.0.0.1, unix:/run/web.sock,
        systemd:domain=INET:index=0, ssl:443:...). Repeat for more.
        [default: tcp:8080]
        """
        try:
            checkPortDescription(port)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["ports"].append(portDescription(port))

    opt_p = opt_port

    def opt_listen(self, port: str) -> None:
        """
        The same as --port.
        """
        self.opt_port(port)

    def opt_wsgi(self, name: str) -> None:
        """
        The dotted name of a WSGI application object to serve (module.app,
        or module:app as gunicorn writes it),
        imported once every option is read (after --chdir, --pythonpath), and served
        with sdweb's WSGI container (see --threads).
        """
        self._setApplication("--wsgi", name)

    def opt_class(self, className: str) -> None:
        """
        The dotted name of a Resource class with a zero-argument constructor to
        serve as the root.
        """
        self._setApplication("--class", className)

    def _setApplication(self, option: str, name: str) -> None:
        try:
            checkDottedName(name, option)
        except LoadError as e:
            raise usage.UsageError(str(e)) from None
        self._application = (option, name)
        self["root"] = None

    def opt_path(self, path: str) -> None:
        """
        A file or directory to serve as the root (.rpy, .epy and .cgi files
        in it run as scripts).
        """
        self._check(checkPath, os.path.abspath(path))
        super().opt_path(path)

    def opt_resource_script(self, name: str) -> None:
        """
        An .rpy file to be used as the root resource of the web server.
        """
        self._check(checkResourceScript, name)
        super().opt_resource_script(name)

    def opt_chdir(self, directory: str) -> None:
        """
        Change to this directory first (relative paths in later options, and
        the application's imports, start here).
        """
        if self.checkOnly:
            return
        try:
            os.chdir(directory)
        except OSError as e:
            raise usage.UsageError(f"--chdir {directory!r}: {e.strerror}") from None

    def opt_pythonpath(self, directories: str) -> None:
        """
        Directories (separated by commas) to put first on sys.path for the
        application; the working directory is always there.
        """
        self["pythonpath"].extend(d for d in directories.split(",") if d)

    def opt_notracebacks(self) -> None:
        """
        Refused: after sdweb, -n is twistd web's --notracebacks.
        """
        raise usage.UsageError(
            "-n after sdweb is not --nodaemon (it is twistd web's deprecated"
            " --notracebacks, and twistd would daemonise): write 'twistd -n sdweb"
            " ...'"
        )

    def opt_personal(self) -> None:
        """
        Refused.
        """
        raise usage.UsageError("--personal is not supported by sdweb")

    def getUsage(self, width: int | None = None) -> str:
        """
        The help, without the options sdweb refuses.
        """
        shown = self.longOpt
        self.longOpt = [o for o in shown if o not in ("notracebacks", "personal")]
        try:
            return super().getUsage(width)
        finally:
            self.longOpt = shown

    def _check(
        self, check: Callable[[str], None], value: str, always: bool = False
    ) -> None:
        if self.checkOnly and not always:
            return
        try:
            check(value)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def _loadApplication(self) -> None:
        """
        Import the application of --wsgi or --class, with the working
        directory and --pythonpath on sys.path.
        """
        if self.checkOnly:
            return
        usePaths([*self["pythonpath"], os.getcwd()])
        if self._application is None or self["root"] is not None:
            return
        option, name = self._application
        try:
            found = loadApplication(name, option)
            if option == "--wsgi":
                self["root"] = wsgiRoot(found, self["threads"])
            else:
                self["root"] = callApplicationCode(f"{option} {name!r}", found)
        except LoadError as e:
            raise SystemExit(f"twistd sdweb: {e}") from None

    def _checkApplication(self) -> None:
        """
        The master of C{--workers}: import the application of --wsgi or
        --class once, as one process would, so that one that cannot be
        imported ends start-up at once with the same line; the workers
        import it again (and build the root) themselves.
        """
        if self.checkOnly:
            return
        usePaths([*self["pythonpath"], os.getcwd()])
        if self._application is None:
            return
        option, name = self._application
        try:
            loadApplication(name, option)
        except LoadError as e:
            raise SystemExit(f"twistd sdweb: {e}") from None

    def postOptions(self) -> None:
        """
        Check what can be checked before start-up: the ports, C{NOTIFY_SOCKET}
        and that we stay in the foreground under systemd; log in the
        journal's format when our output goes to the journal.
        """
        self._useJournalLogging()
        if not self["ports"] and self["https"] is None:
            # Socket activation: serve what systemd passed, not tcp:8080.
            self["ports"].extend(systemdDescriptions(self.inherited))
        super().postOptions()
        from twisted.internet import reactor

        if self["workers"] > 1:
            checkWorkerOptions(self)
        checkWorkerOnlyOptions(self)
        if self["http-parser"] == "fast" and not available():
            raise usage.UsageError(
                "--http-parser fast needs httptools: pip install 'txsdnotify[fast]'"
            )

        for i, description in enumerate(self["ports"]):
            # --https adds its ssl: description only now.
            self._check(checkPortDescription, description, always=True)
            if self.checkOnly and description.startswith(("systemd:", "ssl:")):
                # The sockets, certificates and keys of the unit's machine.
                continue
            try:
                description = credentialPaths(description, self.environ)
                checkTLS(description)
            except TLSSetupError as e:
                raise SystemExit(f"twistd sdweb: {e}") from None
            self["ports"][i] = description
            try:
                serverFromString(reactor, description)
            except (IndexError, KeyError) as e:
                if not description.startswith("systemd:"):
                    raise usage.UsageError(f"bad --port {description!r}: {e}") from e
                raise usage.UsageError(
                    f"bad --port {description!r}: systemd passed no such socket"
                    f" ({len(self.inherited)} passed)"
                ) from e
            except (ValueError, TypeError) as e:
                raise usage.UsageError(f"bad --port {description!r}: {e}") from e
        if self["metrics"] is not None or self["metrics-port"] is not None:
            try:
                checkAvailable()
            except MetricsUnavailable as e:
                raise SystemExit(f"twistd sdweb: {e}") from None
        for option in ("health-port", "agent-port", "metrics-port"):
            if self[option] is not None:
                self[option] = portDescription(self[option])
                try:
                    serverFromString(reactor, self[option])
                except (IndexError, KeyError, ValueError, TypeError) as e:
                    raise usage.UsageError(
                        f"bad --{option} {self[option]!r}: {e}"
                    ) from e
        if self["logfile"] == "-":
            # The access lines go to twistd's log: the journal, under systemd.
            self["logfile"] = None
        if self["logfile"] and not self.checkOnly:
            try:
                checkAccessLog(self["logfile"])
            except AccessLogError as e:
                raise SystemExit(f"twistd sdweb: {e}") from None
        value = self.environ.get("NOTIFY_SOCKET")
        if value is not None:
            try:
                parseAddress(value)
            except NotifyAddressError as e:
                raise usage.UsageError(str(e)) from e
            parent = getattr(self, "parent", None)
            if parent is not None and not parent.get("nodaemon"):
                raise usage.UsageError(
                    "NOTIFY_SOCKET is set, so systemd waits for this process:"
                    " run in the foreground with twistd -n sdweb"
                )
        if self["workers"] == 1 or self.inWorker:
            self._loadApplication()
        else:
            self._checkApplication()

    def _useJournalLogging(self) -> None:
        """
        Under C{twistd -n} with no log option given, have twistd log with
        sdweb's observer: priority prefixes when the output goes to the
        journal (see L{txsdnotify.systemd.journal}), otherwise twistd's own
        format at less cost a line (L{txsdnotify.systemd.logtext}), which
        matters for the access log.  twistd builds its log observer after
        this runs, from the dotted name in C{--logger}.
        """
        parent = getattr(self, "parent", None)
        if parent is None or not parent.get("nodaemon"):
            return
        if parent.get("logger") or parent.get("logfile") or parent.get("syslog"):
            return
        if journalStream(self.environ) is not None:
            parent["logger"] = "txsdnotify.systemd.journal.observerFactory"
        else:
            # What twistd -n writes to standard output, at less cost a line.
            parent["logger"] = "txsdnotify.systemd.logtext.observerFactory"


SCRUBBED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", *LISTEN_VARIABLES)
"""
What the application and children (CGI scripts, subprocesses) must not see:
they must not speak for this service, nor take its sockets for theirs.
"""


def scrubEnvironment() -> dict[str, str]:
    """
    Remove L{SCRUBBED} from L{os.environ}; a copy of the environment as it
    was, for sdweb itself.
    """
    kept = dict(os.environ)
    for name in SCRUBBED:
        os.environ.pop(name, None)
    return kept


def wsgiRoot(application: Any, threads: int = DEFAULT_THREADS) -> WSGIApplication:
    """
    The resource serving a WSGI application: sdweb's own container, in at
    most C{threads} threads.
    """
    root = WSGIApplication(application)
    root.threads.size = threads
    return root


class _AddHeaders(Resource):
    """
    Adds the C{--add-header} headers to every response of the wrapped root.
    """

    def __init__(self, root: Resource, headers: list[tuple[str, str]]) -> None:
        super().__init__()
        self._root = root
        self._headers = headers

    def getChildWithDefault(self, name: bytes, request: Request) -> Any:
        for k, v in self._headers:
            request.responseHeaders.addRawHeader(k, v)
        return self._root.getChildWithDefault(name, request)


def threadsWaiting(application: WSGIApplication) -> Callable[[], str | None]:
    """
    A status figure: how many requests wait for a WSGI thread, shown only
    while some do (the pool is saturated).
    """
    threads = application.threads

    def figure() -> str | None:
        waiting = threads.waiting
        return f"Waiting for a thread: {waiting}" if waiting else None

    return figure


def countThreads(service: WebService, config: Options) -> None:
    """
    Have the metrics show the threads of a C{--wsgi} application.
    """
    root = config["root"]
    if service.metrics is not None and isinstance(root, WSGIApplication):
        service.metrics.gauges = trackerGauges(service.tracker, root.threads)


def makeSite(config: Options) -> Site:
    """
    The site that the options describe.
    """
    root = config["root"] or DemoPage()
    if config["indexes"] and isinstance(root, static.File):
        root.indexNames = config["indexes"]
    if config["extraHeaders"]:
        root = _AddHeaders(root, config["extraHeaders"])
    site = (
        AccessLogSite(root, logPath=config["logfile"])
        if config["logfile"]
        else Site(root)
    )
    if config["display-tracebacks"]:
        site.displayTracebacks = True
    return site


def makeService(config: Options) -> MultiService:
    """
    The service that C{twistd sdweb} runs.
    """
    if config["workers"] > 1:
        from txsdnotify.workers.master import makeMaster

        return makeMaster(config)
    site = makeSite(config)
    service = WebService(
        site,
        config["ports"],
        notifier=Notifier.fromEnvironment(config.environ),
        environ=config.environ,
        statusInterval=config["status-interval"],
        drainTimeout=config["drain-timeout"],
        fdStore=bool(config["fd-store"]) or storeEnabled(config.environ),
        inherited=config.inherited,
        # sdweb owns this process: what an earlier sdweb stored and no --port
        # wants any more would otherwise keep a port listening for nobody.
        dropStaleStored=True,
        healthPath=config["health"],
        healthPorts=[config["health-port"]] if config["health-port"] else [],
        agentPorts=[config["agent-port"]] if config["agent-port"] else [],
        healthGrace=config["health-grace"],
        metricsPath=config["metrics"],
        metricsPorts=[config["metrics-port"]] if config["metrics-port"] else [],
        httpParser=config["http-parser"],
        limits=limitsOf(config),
    )
    if isinstance(config["root"], WSGIApplication):
        service.statusLine.addFigure(threadsWaiting(config["root"]))
    countThreads(service, config)
    service.exitOnListenFailure = True
    if isinstance(config["root"], static.File):
        config["root"].registry.setComponent(interfaces.IServiceCollection, service)
    return service
