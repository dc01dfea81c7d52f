# -*- test-case-name: tests.test_unitfile -*-
"""
systemd unit files for C{twistd sdweb}, written from its options.

L{unitFiles} turns a L{UnitSpec} (what to serve, how, as whom) into the text
of a C{NAME.service} unit, plus a C{NAME.socket} unit when the service is
socket-activated, following docs/units.md and docs/activation.md: the right
C{Type=}, an C{ExecStart=} quoted for systemd, C{KillMode=mixed}, a
C{TimeoutStopSec=} above C{--drain-timeout}, the watchdog, the fd store and
the capability to bind a port below 1024.  Everything here is pure: C{python
-m txsdnotify unit} (L{txsdnotify.__main__}) does the printing and writing.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Union

from attrs import field, frozen

__all__ = [
    "ParsedOption",
    "SERVICE_TYPES",
    "UnitError",
    "UnitSpec",
    "bindsPrivilegedPort",
    "credentialPort",
    "defaultTwistd",
    "drainTimeout",
    "environmentLine",
    "execStart",
    "listeningPorts",
    "parseArguments",
    "portNumber",
    "quoteWord",
    "serviceUnit",
    "socketUnit",
    "unitFiles",
]

SERVICE_TYPES = ("notify", "notify-reload")
"""
The C{Type=} values sdweb supports; C{notify-reload} needs systemd 253.
"""

DEFAULT_DRAIN_TIMEOUT = 30.0
"""
sdweb's C{--drain-timeout} when none is given.
"""

STOP_MARGIN = 10.0
"""
Seconds C{TimeoutStopSec=} allows above C{--drain-timeout}.
"""

FD_STORE_MAX = 4
"""
C{FileDescriptorStoreMax=} for C{--fd-store} (more if there are more ports).
"""

CREDENTIAL_KEY = "tls.key"
"""
The credential name (C{LoadCredential=}) of C{--tls-key}.
"""

CREDENTIAL_CERT = "tls.crt"
"""
The credential name (C{LoadCredential=}) of C{--tls-cert}.
"""

ADDRESS_FAMILIES = ("AF_UNIX", "AF_INET", "AF_INET6")
"""
The socket address families sdweb needs: the notify socket and C{unix:}
ports, and TCP over IPv4 and IPv6.
"""

HARDENING: tuple[tuple[str, str], ...] = (
    (
        "ProtectSystem=strict",
        "The whole file system read-only (/usr, /etc, ...): it writes only in\n"
        "the directories below.  Relax: --writable DIR, --state-dir NAME,\n"
        "--logs-dir NAME.",
    ),
    (
        "ProtectHome=yes",
        "/home, /root and /run/user out of sight.  Relax: keep the venv and\n"
        "the site elsewhere (/opt, /srv); else ProtectHome=read-only.",
    ),
    (
        "PrivateTmp=yes",
        "A /tmp and /var/tmp of its own, emptied at each start.  Relax: never\n"
        "needed; share files through a --writable directory.",
    ),
    (
        "PrivateDevices=yes",
        "No physical devices (/dev has null, zero, random, ...).  Relax: only\n"
        "for an application using a device (then DeviceAllow= it).",
    ),
    (
        "PrivateMounts=yes",
        "Mount changes stay its own.  Relax: never needed.",
    ),
    (
        "ProtectKernelTunables=yes",
        "/proc/sys and /sys read-only: no kernel settings.  Relax: never\n"
        "needed by a web site.",
    ),
    (
        "ProtectKernelModules=yes",
        "No loading of kernel modules.  Relax: never needed.",
    ),
    (
        "ProtectKernelLogs=yes",
        "No reading of the kernel log.  Relax: never needed.",
    ),
    (
        "ProtectControlGroups=yes",
        "The cgroup tree read-only.  Relax: never needed.",
    ),
    ("ProtectClock=yes", "No setting of the clock.  Relax: never needed."),
    ("ProtectHostname=yes", "No changing of the host name.  Relax: never needed."),
    (
        "ProtectProc=invisible",
        "Other users' processes invisible in /proc.  Relax: only for an\n"
        "application that watches other processes.",
    ),
    (
        "ProcSubset=pid",
        "/proc shows processes only (no /proc/meminfo, /proc/stat).  Relax:\n"
        "for monitoring code that reads those (psutil's machine figures).",
    ),
    (
        "RestrictNamespaces=yes",
        "No new namespaces (containers, unshare).  Relax: never needed.",
    ),
    (
        "RestrictRealtime=yes",
        "No real-time scheduling.  Relax: never needed.",
    ),
    (
        "RestrictSUIDSGID=yes",
        "No making of set-user/group-ID files.  Relax: never needed.",
    ),
    (
        "LockPersonality=yes",
        "No switching of the execution domain.  Relax: never needed.",
    ),
    (
        "NoNewPrivileges=yes",
        "No gaining privileges through set-user-ID programs, for anything it\n"
        "runs.  Relax: for an application that runs one (Postfix's sendmail).",
    ),
    (
        "SystemCallArchitectures=native",
        "Native system calls only (no 32-bit ones).  Relax: never needed.",
    ),
    (
        "SystemCallFilter=@system-service",
        "Only the system calls of ordinary services; others fail with EPERM.\n"
        "Relax: add the group an application needs (systemd-analyze\n"
        "syscall-filter lists them).",
    ),
    (
        "SystemCallFilter=~@privileged @resources",
        "None of the privileged ones (mount, setuid, chown, ...) or those\n"
        "changing limits and priorities.  Relax: drop this line for an\n"
        "application that chowns files or renices itself.",
    ),
    (
        "SystemCallErrorNumber=EPERM",
        "A refused system call fails with EPERM instead of killing it.",
    ),
    (
        "UMask=0077",
        "Files it makes are its user's alone.  Relax: UMask=0027 and Group=\n"
        "for files another service must read.",
    ),
)
"""
The hardening lines every hardened unit gets, with the comment written
above each: what it forbids, and when to relax it.  L{serviceUnit} adds
those that depend on the unit (the user, capabilities, address families,
C{MemoryDenyWriteExecute=}, C{PrivateUsers=}).
"""

_SYSTEM_DIRECTORIES = (
    ("/var/lib/", "StateDirectory"),
    ("/var/log/", "LogsDirectory"),
    ("/var/cache/", "CacheDirectory"),
    ("/run/", "RuntimeDirectory"),
)
_HIDDEN_HOMES = ("/home", "/root", "/run/user")
_FAMILY = re.compile(r"AF_[A-Z0-9]+")
_DIRECTORY_NAME = re.compile(r"[A-Za-z0-9_.@+-]+(/[A-Za-z0-9_.@+-]+)*")

_PORT_OPTIONS = ("port", "listen", "https")
_NOT_FOR_A_UNIT = ("help", "version", "personal")

_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FD_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")
_SETTING = re.compile(r"[A-Za-z][A-Za-z0-9]*=.*")
# Words left bare in ExecStart= (after % and $ are doubled); anything else is
# double-quoted.
_BARE = re.compile(r"[A-Za-z0-9_@%$+=:,./~-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_C_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_STRPORTS = re.compile(r"(tcp6?|ssl|unix|systemd):", re.IGNORECASE)

EnvironmentInput = Union[Mapping[str, str], Iterable[Sequence[str]]]


class UnitError(ValueError):
    """
    The options cannot make a working unit; the message says why, in one
    line.
    """


def defaultTwistd() -> str:
    """
    The C{twistd} next to the running Python: the one of the current
    virtual environment.  Not resolved, so a virtualenv's C{bin/} is kept.
    """
    # abspath tidies "venv/../venv" away; it keeps the virtualenv's own
    # path, where resolving links would name the Python it was made from.
    return os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "twistd")


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _environmentPairs(value: EnvironmentInput) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    pairs = []
    for item in items:
        name, variable = item
        pairs.append((str(name), str(variable)))
    return tuple(pairs)


@frozen(kw_only=True)
class UnitSpec:
    """
    What a generated unit runs, and how.

    @ivar name: The unit's name without suffix: C{NAME.service} and
        C{NAME.socket}.
    @ivar description: C{Description=}.
    @ivar arguments: The options of C{twistd sdweb} (and of C{twistd web}),
        e.g. C{["--port", "8080", "--wsgi", "myapp.app"]}.
    @ivar twistd: The absolute path of C{twistd}; by default the one of the
        running Python (L{defaultTwistd}).
    @ivar workingDirectory: C{WorkingDirectory=}, an absolute path, or
        L{None} for none.
    @ivar user: C{User=}, or L{None}: C{DynamicUser=yes}, a user systemd
        makes up for the service at each start (never root).  C{root} runs
        as root, on purpose.
    @ivar group: C{Group=}, or L{None}.
    @ivar serviceType: C{notify} (C{ExecReload=} sends SIGHUP) or
        C{notify-reload} (systemd 253 sends it itself).
    @ivar watchdogSec: C{WatchdogSec=}; 0 for no watchdog.
    @ivar listen: C{ListenStream=} addresses of a C{.socket} unit (socket
        activation); the service then gets no C{--port}.
    @ivar fileDescriptorName: The socket unit's C{FileDescriptorName=}.
    @ivar fdStore: Keep the ports in systemd's fd store (C{--fd-store},
        C{FileDescriptorStoreMax=}); implied by C{--fd-store} in
        C{arguments}.
    @ivar environment: More C{Environment=} variables, as pairs or a
        mapping.
    @ivar serviceLines: Raw C{Key=value} lines appended to C{[Service]}.
    @ivar hardening: Sandbox the service (L{HARDENING}: C{ProtectSystem=strict},
        a system call filter, no capabilities, ...); C{False} writes none of
        it, for debugging.
    @ivar writable: More absolute paths the service may write
        (C{ReadWritePaths=}).
    @ivar stateDirectories: C{StateDirectory=} names (C{/var/lib/NAME},
        owned by the service's user); more are added for what sdweb writes
        there (L{writtenDirectories}).
    @ivar logsDirectories: C{LogsDirectory=} names (C{/var/log/NAME}).
    @ivar addressFamilies: More socket address families the application
        may use (C{AF_NETLINK}), above C{AF_UNIX AF_INET AF_INET6}.
    @ivar writeExecute: Allow memory both writable and executable (a JIT);
        without it, C{MemoryDenyWriteExecute=yes}, unless the unit serves
        TLS (pyOpenSSL's ALPN callback is made with cffi, which needs such
        memory).
    @ivar tlsKey: The absolute path of a TLS key handed to the service as
        a systemd credential (C{LoadCredential=}), with L{tlsCert}: the
        unit then serves HTTPS on L{tlsPort} from C{%d/tls.key}.
    @ivar tlsCert: The absolute path of the certificate (chain) for
        L{tlsKey}.
    @ivar tlsPort: The TCP port of that HTTPS listener.
    """

    name: str = "sdweb"
    description: str = "A Twisted web site (twistd sdweb)"
    arguments: tuple[str, ...] = field(default=(), converter=_strings)
    twistd: str = field(factory=defaultTwistd)
    workingDirectory: str | None = None
    user: str | None = None
    group: str | None = None
    serviceType: str = "notify"
    watchdogSec: float = 30
    listen: tuple[str, ...] = field(default=(), converter=_strings)
    fileDescriptorName: str = "web"
    fdStore: bool = False
    environment: tuple[tuple[str, str], ...] = field(
        default=(), converter=_environmentPairs
    )
    serviceLines: tuple[str, ...] = field(default=(), converter=_strings)
    hardening: bool = True
    writable: tuple[str, ...] = field(default=(), converter=_strings)
    stateDirectories: tuple[str, ...] = field(default=(), converter=_strings)
    logsDirectories: tuple[str, ...] = field(default=(), converter=_strings)
    addressFamilies: tuple[str, ...] = field(default=(), converter=_strings)
    writeExecute: bool = False
    tlsKey: str | None = None
    tlsCert: str | None = None
    tlsPort: int = 443


# -- systemd syntax ---------------------------------------------------------


def _escape(text: str, *, dollars: bool) -> str:
    """
    C{text} with backslashes, double quotes and control characters escaped,
    C{%} doubled (no specifier) and, if C{dollars}, C{$} doubled (no
    variable).
    """
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if dollars:
        text = text.replace("$", "$$")
    return _CONTROL.sub(
        lambda m: _C_ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text
    )


def quoteWord(word: str, *, dollars: bool = True) -> str:
    """
    One word of a command line (C{ExecStart=}) or of C{Environment=},
    taken literally by systemd: bare if it is plain, else in double quotes.

    @param dollars: Double C{$} too (command lines expand C{$VAR};
        C{Environment=} does not).
    """
    escaped = _escape(word, dollars=dollars)
    return escaped if _BARE.fullmatch(word) else f'"{escaped}"'


def _plainValue(setting: str, value: str) -> str:
    """
    A value taken as it is up to the end of the line (C{Description=},
    C{User=}, paths): C{%} doubled, line breaks refused.
    """
    if not value or _CONTROL.search(value):
        raise UnitError(f"{setting}= wants one line of text, not {value!r}")
    return value.replace("%", "%%")


def environmentLine(name: str, value: str) -> str:
    """
    The value of an C{Environment=} line setting C{name} to C{value}.
    """
    if not _ENV_NAME.fullmatch(name):
        raise UnitError(f"not an environment variable name: {name!r}")
    return quoteWord(f"{name}={value}", dollars=False)


# -- sdweb's arguments ------------------------------------------------------


@frozen
class ParsedOption:
    """
    One option of C{twistd sdweb}'s command line.

    @ivar name: Its long name (C{port} for C{-p} or C{--po}).
    @ivar value: Its argument, L{None} for a flag.
    @ivar words: The words it was written as (C{("-p", "80")}); empty for
        all but the last option of a cluster of short ones (C{-nl FILE}).
    @ivar raw: Whether C{words} are written into the unit as they are
        (they hold systemd specifiers, C{%d}), not quoted.
    """

    name: str
    value: str | None
    words: tuple[str, ...]
    raw: bool = False


@lru_cache(maxsize=1)
def _optionTable() -> tuple[dict[str, bool], dict[str, bool], dict[str, str]]:
    """
    sdweb's options as twistd parses them (with L{getopt}): short letter ->
    takes a value, long name -> takes a value, short letter -> long name.
    """
    from txsdnotify.cli.tap import Options

    options = Options()
    short: dict[str, bool] = {}
    letters = options.shortOpt
    for i, letter in enumerate(letters):
        if letter != ":":
            short[letter] = letters[i + 1 : i + 2] == ":"
    longs = {o.rstrip("="): o.endswith("=") for o in options.longOpt}
    return short, longs, dict(options.synonyms)


def _longOption(word: str, longs: Mapping[str, bool]) -> tuple[str, bool]:
    """
    The long option C{--word} names, as L{getopt} matches it (a unique
    prefix will do), and whether it takes a value.
    """
    if word in longs:
        return word, longs[word]
    matches = [name for name in longs if name.startswith(word)]
    if len(matches) != 1:
        problem = "is ambiguous" if matches else "is not an sdweb option"
        raise UnitError(f"--{word} {problem} (see: twistd sdweb --help)")
    return matches[0], longs[matches[0]]


def parseArguments(arguments: Sequence[str]) -> list[ParsedOption]:
    """
    Parse C{twistd sdweb} options the way twistd will, keeping how each was
    written.

    @raise UnitError: For an unknown option, a missing value or an
        argument that is not an option (sdweb takes none).
    """
    short, longs, synonyms = _optionTable()
    parsed = []
    words = list(arguments)
    while words:
        word = words.pop(0)
        if word.startswith("--") and word != "--":
            given, sep, inline = word[2:].partition("=")
            name, wantsValue = _longOption(given, longs)
            if sep and not wantsValue:
                raise UnitError(f"--{name} takes no value: {word!r}")
            if sep or not wantsValue:
                parsed.append(ParsedOption(name, inline if sep else None, (word,)))
                continue
            if not words:
                raise UnitError(f"--{name} wants a value")
            value = words.pop(0)
            parsed.append(ParsedOption(name, value, (word, value)))
        elif word.startswith("-") and len(word) > 1:
            # A cluster (-nl access.log): the last option of it carries the
            # words, so that they are written once.
            cluster = []
            letters = word[1:]
            written: tuple[str, ...] = (word,)
            for i, letter in enumerate(letters):
                if letter not in short:
                    raise UnitError(f"-{letter} is not an sdweb option ({word!r})")
                if not short[letter]:
                    cluster.append(ParsedOption(synonyms[letter], None, ()))
                    continue
                value = letters[i + 1 :]
                if not value:
                    if not words:
                        raise UnitError(f"-{letter} wants a value")
                    value = words.pop(0)
                    written = (word, value)
                cluster.append(ParsedOption(synonyms[letter], value, ()))
                break
            last = cluster.pop()
            parsed += [*cluster, ParsedOption(last.name, last.value, written)]
        else:
            raise UnitError(
                f"unexpected argument {word!r}: pass sdweb's options only"
                " (the unit runs 'twistd -n --pidfile= sdweb OPTIONS')"
            )
    for option in parsed:
        if option.name in _NOT_FOR_A_UNIT:
            raise UnitError(f"--{option.name} makes no sense in a unit")
    checkWithSdweb(arguments)
    return parsed


def checkWithSdweb(arguments: Sequence[str]) -> None:
    """
    Parse C{arguments} with sdweb's own option parser, as far as it can
    without the machine the unit runs on (no application import, no path
    checks, no C{systemd:} sockets): what sdweb would refuse at start-up,
    the unit must not be written for.

    @raise UnitError: With sdweb's one-line reason.
    """
    from twisted.python import usage

    from txsdnotify.cli.tap import Options

    options = Options(environ={}, inherited=())
    options.checkOnly = True
    try:
        # usage.Options' own parseOptions: the error, not sdweb's exit.
        usage.Options.parseOptions(options, list(arguments))
    except usage.UsageError as e:
        raise UnitError(f"sdweb would refuse these options: {e}") from None


def drainTimeout(options: Sequence[ParsedOption]) -> float:
    """
    The C{--drain-timeout} sdweb will use (the last one given counts).
    """
    return _secondsOption(options, "drain-timeout", DEFAULT_DRAIN_TIMEOUT)


def healthGrace(options: Sequence[ParsedOption]) -> float:
    """
    The C{--health-grace} sdweb will use (the last one given counts).
    """
    return _secondsOption(options, "health-grace", 0.0)


def _secondsOption(options: Sequence[ParsedOption], name: str, default: float) -> float:
    seconds = default
    for option in options:
        if option.name == name:
            try:
                seconds = float(option.value or "")
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds < math.inf:
                raise UnitError(
                    f"--{name} wants a number of seconds >= 0, not {option.value!r}"
                )
    return seconds


def listeningPorts(options: Sequence[ParsedOption]) -> list[str]:
    """
    The endpoint descriptions of C{--port}, C{--listen} and C{--https}
    (as sdweb reads them: C{8080} is C{tcp:8080}, C{--https 443} is SSL).
    """
    ports = []
    for option in options:
        value = option.value or ""
        if option.name == "https":
            ports.append(f"ssl:{value}")
        elif option.name in _PORT_OPTIONS:
            ports.append(f"tcp:{value}" if value.isdigit() else value)
    return ports


def portNumber(description: str) -> int | None:
    """
    The TCP port number an endpoint description binds (C{tcp:80},
    C{tcp6:port=443:interface=::}, C{ssl:443:privateKey=...}), or L{None}
    for any other kind (C{unix:}, C{systemd:}).
    """
    parts = re.split(r"(?<!\\):", description)
    if parts[0].lower() not in ("tcp", "tcp6", "ssl"):
        return None
    positional = [p for p in parts[1:] if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    port = keywords.get("port", positional[0] if positional else "")
    return int(port) if port.isdigit() else None


def bindsPrivilegedPort(ports: Sequence[str]) -> bool:
    """
    Whether one of the endpoint descriptions C{ports} binds a TCP port
    below 1024 (which needs C{CAP_NET_BIND_SERVICE}).
    """
    numbers = [portNumber(p) for p in ports]
    return any(n is not None and 0 < n < 1024 for n in numbers)


# -- the units --------------------------------------------------------------


@frozen
class _Plan:
    """
    What L{_plan} derived from a L{UnitSpec}, checked.
    """

    options: list[ParsedOption]
    drain: float
    grace: float
    fdStore: bool
    storeMax: int
    capability: bool
    bindsPrivileged: bool
    tls: bool
    directories: dict[str, list[str]]
    writable: list[str]


def _seconds(value: float) -> str:
    return f"{value:g}"


def _plan(spec: UnitSpec) -> _Plan:
    """
    Check C{spec} and derive what the units need from it.

    @raise UnitError: If the options cannot make a working unit.
    """
    if not _UNIT_NAME.fullmatch(spec.name):
        raise UnitError(f"not a unit name: {spec.name!r} (letters, digits, :_.-)")
    if spec.serviceType not in SERVICE_TYPES:
        raise UnitError(
            f"unknown type {spec.serviceType!r}: {' or '.join(SERVICE_TYPES)}"
        )
    if not 0 <= spec.watchdogSec < math.inf:
        raise UnitError(f"watchdog seconds must be >= 0, not {spec.watchdogSec!r}")
    if not spec.twistd.startswith("/"):
        raise UnitError(f"the twistd path must be absolute, not {spec.twistd!r}")
    if spec.workingDirectory is not None and not spec.workingDirectory.startswith("/"):
        raise UnitError(
            f"the working directory must be absolute, not {spec.workingDirectory!r}"
        )
    if not _FD_NAME.fullmatch(spec.fileDescriptorName):
        raise UnitError(f"not a file descriptor name: {spec.fileDescriptorName!r}")
    for address in spec.listen:
        if not address or any(c.isspace() for c in address):
            raise UnitError(f"not a socket address: {address!r}")
        if _STRPORTS.match(address):
            raise UnitError(
                f"a socket address is 8080, 127.0.0.1:8080, [::1]:8080 or"
                f" /run/myapp.sock, not {address!r}"
            )
    for line in spec.serviceLines:
        if not _SETTING.fullmatch(line):
            raise UnitError(f"not a Key=value line: {line!r}")
    _checkHardening(spec)
    arguments = list(spec.arguments)
    if spec.tlsKey is not None:
        arguments += ["--port", credentialPort(spec.tlsPort)]
    # sdweb's parser checks the credential port with the rest.
    options = parseArguments(arguments)
    if spec.tlsKey is not None:
        last = options.pop()
        options.append(ParsedOption(last.name, last.value, last.words, raw=True))
    ports = listeningPorts(options)
    activated = [p for p in ports if p.startswith("systemd:")]
    if spec.listen:
        bound = [p for p in ports if not p.startswith("systemd:")]
        if bound:
            raise UnitError(
                f"socket activation and --port {bound[0]} both given: systemd"
                " binds the socket, so drop --port (or select the socket with"
                f" --port systemd:domain=INET:name={spec.fileDescriptorName})"
            )
    elif activated:
        raise UnitError(
            f"--port {activated[0]} needs socket activation (a socket address)"
        )
    fdStore = spec.fdStore or any(o.name == "fd-store" for o in options)
    if fdStore and spec.listen:
        raise UnitError(
            "the fd store and socket activation both given: with socket"
            " activation systemd keeps the sockets already"
        )
    privileged = not spec.listen and bindsPrivilegedPort(listeningPorts(options))
    directories: dict[str, list[str]] = {
        "StateDirectory": list(spec.stateDirectories),
        "LogsDirectory": list(spec.logsDirectories),
        "CacheDirectory": [],
        "RuntimeDirectory": [],
    }
    writable = list(spec.writable)
    for path in writtenPaths(options, spec.workingDirectory):
        setting, name = writtenDirectory(path)
        if setting is None:
            if spec.hardening and name not in writable:
                writable.append(name)
        elif name not in directories[setting]:
            directories[setting].append(name)
    return _Plan(
        options=options,
        drain=drainTimeout(options),
        grace=healthGrace(options),
        fdStore=fdStore,
        storeMax=max(FD_STORE_MAX, len(ports)),
        capability=spec.user != "root" and privileged,
        bindsPrivileged=privileged,
        tls=any(p.lower().startswith("ssl") for p in listeningPorts(options)),
        directories=directories,
        writable=writable,
    )


def _checkHardening(spec: UnitSpec) -> None:
    """
    Check the hardening and credential settings of C{spec}.

    @raise UnitError: If one cannot make a working unit.
    """
    for path in spec.writable:
        if not path.startswith("/"):
            raise UnitError(f"--writable wants an absolute path, not {path!r}")
        _plainValue("ReadWritePaths", path)
    for option, names in (
        ("--state-dir", spec.stateDirectories),
        ("--logs-dir", spec.logsDirectories),
    ):
        for name in names:
            if not _DIRECTORY_NAME.fullmatch(name) or ".." in name.split("/"):
                raise UnitError(
                    f"{option} wants a directory name such as myapp, not {name!r}"
                )
    for family in spec.addressFamilies:
        if not _FAMILY.fullmatch(family):
            raise UnitError(f"not an address family: {family!r} (e.g. AF_NETLINK)")
    if (spec.tlsKey is None) != (spec.tlsCert is None):
        raise UnitError("--tls-key and --tls-cert go together")
    for option, credential in (
        ("--tls-key", spec.tlsKey),
        ("--tls-cert", spec.tlsCert),
    ):
        if credential is not None:
            if not credential.startswith("/") or ":" in credential:
                raise UnitError(
                    f"{option} wants an absolute path without ':', not {credential!r}"
                )
            _plainValue("LoadCredential", credential)
    if not 0 < spec.tlsPort < 65536:
        raise UnitError(f"--tls-port {spec.tlsPort} is not in 1-65535")
    if spec.hardening:
        for what, place in (
            ("twistd", spec.twistd),
            ("the working directory", spec.workingDirectory),
        ):
            hidden = place is not None and any(
                place == home or place.startswith(home + "/") for home in _HIDDEN_HOMES
            )
            if hidden:
                raise UnitError(
                    f"{what} {place} is under /home, /root or /run/user, which"
                    " ProtectHome=yes hides from the service: put it elsewhere"
                    " (/opt, /srv), or use --no-hardening"
                )


def credentialPort(port: int) -> str:
    """
    The C{--port} of C{--tls-key}: HTTPS on C{port} from the credentials,
    C{%d} being systemd's credentials directory (written unquoted: systemd
    expands it).
    """
    return f"ssl:{port}:privateKey=%d/{CREDENTIAL_KEY}:certKey=%d/{CREDENTIAL_CERT}"


def writtenPaths(
    options: Sequence[ParsedOption], workingDirectory: str | None
) -> list[str]:
    """
    The absolute paths sdweb writes, from its options: the C{--logfile}
    access log and the C{unix:} sockets it binds (relative ones are taken
    from C{workingDirectory}, and left out without one).
    """
    paths = []
    for option in options:
        value = option.value or ""
        if option.name == "logfile" and value not in ("", "-"):
            paths.append(value)
    for description in listeningPorts(options):
        kind, positional, keywords = _splitPort(description)
        if kind == "unix":
            address = keywords.get("address", positional[0] if positional else "")
            if address:
                paths.append(address)
    absolute = []
    for path in paths:
        if not path.startswith("/"):
            if workingDirectory is None:
                continue
            path = os.path.join(workingDirectory, path)
        absolute.append(os.path.normpath(path))
    return absolute


def writtenDirectory(path: str) -> tuple[str | None, str]:
    """
    Where the file C{path} that sdweb writes may be written: the setting
    that makes its directory (C{("LogsDirectory", "myapp")} for
    C{/var/log/myapp/access.log}), or C{(None, DIRECTORY)} for a directory
    that is not systemd's to make (C{ReadWritePaths=}).

    @raise UnitError: For a file right in C{/var/log}, C{/var/lib}, ...,
        which a service not running as root cannot write.
    """
    directory = os.path.dirname(path)
    for prefix, setting in _SYSTEM_DIRECTORIES:
        if (directory + "/").startswith(prefix):
            name = directory[len(prefix) :]
            if not name:
                raise UnitError(
                    f"{path} is right in {prefix.rstrip('/')}: put it in a"
                    f" directory of its own, {prefix}NAME/, which the unit makes"
                    f" for the service's user ({setting}=NAME)"
                )
            return setting, name
    return None, directory


def _splitPort(description: str) -> tuple[str, list[str], dict[str, str]]:
    parts = [re.sub(r"\\(.)", r"\1", p) for p in re.split(r"(?<!\\):", description)]
    kind = parts[0].lower()
    positional = [p for p in parts[1:] if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    return kind, positional, keywords


def execStart(twistd: str, options: Sequence[ParsedOption]) -> str:
    """
    The value of C{ExecStart=}: C{twistd -n --pidfile= sdweb} and the
    options, one per continued line, every word quoted for systemd.
    """
    lines = [" ".join(quoteWord(w) for w in [twistd, "-n", "--pidfile=", "sdweb"])]
    lines += [
        " ".join(w if option.raw else quoteWord(w) for w in option.words)
        for option in options
        if option.words
    ]
    return " \\\n    ".join(lines)


def _comment(text: str) -> list[str]:
    return [f"# {line}" if line else "#" for line in text.splitlines()]


def serviceUnit(spec: UnitSpec) -> str:
    """
    The text of C{NAME.service}.

    @raise UnitError: If the options cannot make a working unit.
    """
    plan = _plan(spec)
    options = list(plan.options)
    if plan.fdStore and not any(o.name == "fd-store" for o in options):
        options.insert(0, ParsedOption("fd-store", None, ("--fd-store",)))
    notifyReload = spec.serviceType == "notify-reload"
    enable = f"{spec.name}.socket" if spec.listen else spec.name
    out = _comment(
        f"{spec.name}.service: a twisted.web site, 'twistd sdweb' as a systemd\n"
        f"Type={spec.serviceType} service.  Written by 'python -m txsdnotify unit';\n"
        "docs/units.md of txsdnotify explains every line.\n"
        + ("Needs systemd >= 253 ('systemctl --version').\n" if notifyReload else "")
        + "Install: copy to /etc/systemd/system/, then\n"
        f"  systemctl daemon-reload && systemctl enable --now {enable}"
    )
    out += ["", "[Unit]", f"Description={_plainValue('Description', spec.description)}"]
    if spec.listen:
        out += [
            "# The socket unit binds the port(s) and hands them over.",
            f"Requires={spec.name}.socket",
            f"After={spec.name}.socket network.target",
        ]
    else:
        out += ["After=network.target"]
    out += [
        "",
        "[Service]",
        "# READY=1 comes once every port is bound: 'systemctl start' returns",
        "# when the site answers.",
        f"Type={spec.serviceType}",
    ]
    if notifyReload:
        out += [
            "# systemd sends it on 'systemctl reload' and waits for sdweb's",
            "# RELOADING=1 ... READY=1 (the default signal, written down).",
            "ReloadSignal=SIGHUP",
        ]
    out += [
        "# -n: stay in the foreground, systemd is the supervisor; --pidfile=:",
        "# no twistd.pid (systemd knows the PID).",
    ]
    if spec.listen and not listeningPorts(options):
        out += ["# No --port: sdweb serves every socket systemd passes."]
    out += [
        f"ExecStart={execStart(spec.twistd, options)}",
        "# Only twistd itself may send notifications.",
        "NotifyAccess=main",
        "# SIGTERM to twistd alone: it drains its own requests; what is left in",
        "# the cgroup afterwards gets SIGKILL.",
        "KillMode=mixed",
    ]
    if not notifyReload:
        out += [
            "# 'systemctl reload' reopens the --logfile access log and runs the",
            "# reload hooks (logrotate's postrotate).",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ]
    if spec.watchdogSec:
        out += [
            "# sdweb pings every WatchdogSec/2 from the reactor: a reactor blocked",
            "# for longer is killed (SIGABRT) and restarted.",
            f"WatchdogSec={_seconds(spec.watchdogSec)}",
        ]
    else:
        out += ["# No WatchdogSec=: a blocked reactor goes unnoticed."]
    out += [
        "# A traceback of every thread in the log when something kills it.",
        "Environment=PYTHONFAULTHANDLER=1",
    ]
    out += [f"Environment={environmentLine(k, v)}" for k, v in spec.environment]
    grace = f"--health-grace ({_seconds(plan.grace)} s), " if plan.grace else ""
    out += [
        f"# {grace}--drain-timeout ({_seconds(plan.drain)} s) plus"
        f" {_seconds(STOP_MARGIN)} s: requests in flight",
        "# finish before systemd kills anything.",
        f"TimeoutStopSec={_seconds(plan.grace + plan.drain + STOP_MARGIN)}",
        "# After a crash or a watchdog kill, not after 'systemctl stop'.",
        "Restart=on-failure",
        "RestartSec=2",
    ]
    if plan.fdStore:
        out += [
            "# --fd-store: the listening sockets outlive a restart in systemd,",
            "# so no connection is refused meanwhile.",
            f"FileDescriptorStoreMax={plan.storeMax}",
        ]
    out += _userLines(spec)
    if spec.workingDirectory is not None:
        out += [
            "# Where relative paths and the application's modules are found.",
            "WorkingDirectory="
            + _plainValue("WorkingDirectory", spec.workingDirectory),
        ]
    out += _directoryLines(spec, plan)
    if spec.tlsKey is not None and spec.tlsCert is not None:
        out += [
            "# The TLS key and certificate, handed over as credentials: systemd",
            "# copies them (root-only files may stay root-only) into a directory",
            "# only this service can read, %d in ExecStart=;",
            f"# --port ssl:{spec.tlsPort} reads them there.",
            f"LoadCredential={CREDENTIAL_KEY}:"
            + _plainValue("LoadCredential", spec.tlsKey),
            f"LoadCredential={CREDENTIAL_CERT}:"
            + _plainValue("LoadCredential", spec.tlsCert),
        ]
    if spec.hardening:
        out += _hardeningLines(spec, plan)
    elif plan.capability:
        out += [
            "# A port below 1024 as that user: just that right, and no other.",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        ]
    if spec.serviceLines:
        out += ["# Added as they were given."]
        out += list(spec.serviceLines)
    out += ["", "[Install]", "WantedBy=multi-user.target"]
    return "\n".join(out) + "\n"


def _userLines(spec: UnitSpec) -> list[str]:
    """
    C{DynamicUser=yes}, or C{User=}, and C{Group=}.
    """
    out = []
    if spec.user is None:
        out += [
            "# No user given: one systemd makes up at each start, never root;",
            "# it may write only in StateDirectory=, LogsDirectory=, /tmp.",
            "DynamicUser=yes",
        ]
    elif spec.user != "root":
        out += [
            "# A user of its own, never root.",
            f"User={_plainValue('User', spec.user)}",
        ]
    if spec.group is not None:
        out += [f"Group={_plainValue('Group', spec.group)}"]
    return out


_DIRECTORY_COMMENTS = {
    "StateDirectory": "/var/lib/{}",
    "LogsDirectory": "/var/log/{}",
    "CacheDirectory": "/var/cache/{}",
    "RuntimeDirectory": "/run/{} (removed when it stops)",
}


def _directoryLines(spec: UnitSpec, plan: _Plan) -> list[str]:
    """
    The directories systemd makes for the service's user, and
    C{ReadWritePaths=}.
    """
    out = []
    for setting, names in plan.directories.items():
        for name in names:
            where = _DIRECTORY_COMMENTS[setting].format(name)
            out += [
                f"# {where}, made by systemd and owned by the service's user:",
                "# the only place it writes, with ProtectSystem=strict.",
                f"{setting}={_plainValue(setting, name)}",
            ]
    for path in plan.writable:
        out += [
            "# Writable despite ProtectSystem=strict (--writable); it must be",
            "# writable by the service's user too.",
            f"ReadWritePaths={_plainValue('ReadWritePaths', path)}",
        ]
    return out


def _hardeningLines(spec: UnitSpec, plan: _Plan) -> list[str]:
    """
    The sandbox: L{HARDENING}, and what depends on the unit.
    """
    out = [
        "",
        "# -- The sandbox ('systemd-analyze security' rates it OK).  Each line",
        "# forbids one thing sdweb never does; relax one only if the",
        "# application needs it (docs/units.md has the table).",
    ]
    for line, comment in HARDENING:
        out += _comment(comment) + [line]
    if plan.bindsPrivileged:
        out += [
            "# A port below 1024: the right to bind it, and no other capability.",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        ]
        if plan.capability:
            out += ["AmbientCapabilities=CAP_NET_BIND_SERVICE"]
    else:
        out += [
            "# No capabilities at all, not even as root.  Relax: never needed (a",
            "# port below 1024 gets the one it needs by itself).",
            "CapabilityBoundingSet=",
        ]
    if spec.user is not None and spec.user != "root":
        out += [
            "# Its IPC objects (shared memory, semaphores) go when it stops.",
            "# Relax: never needed.",
            "RemoveIPC=yes",
        ]
    if not plan.bindsPrivileged:
        out += [
            "# A user namespace: it sees no other user than its own and root,",
            "# and has no capability on the host.  Relax: left out by itself",
            "# for a port below 1024 (that capability must count on the host).",
            "PrivateUsers=yes",
        ]
    families = list(ADDRESS_FAMILIES)
    families += [f for f in spec.addressFamilies if f not in families]
    out += [
        "# Sockets: AF_UNIX for the notify socket and unix: ports, AF_INET and",
        "# AF_INET6 for TCP and UDP, outgoing connections included.  Relax:",
        "# --allow-family AF_NETLINK (or another) for an application using it.",
        f"RestrictAddressFamilies={' '.join(families)}",
    ]
    if plan.tls:
        out += [
            "# No MemoryDenyWriteExecute=: TLS with ALPN (pyOpenSSL's cffi",
            "# callbacks) needs memory both writable and executable.",
        ]
    elif spec.writeExecute:
        out += ["# No MemoryDenyWriteExecute= (--allow-write-execute): a JIT needs it."]
    else:
        out += [
            "# No memory both writable and executable (no code injected at run",
            "# time).  Relax: --allow-write-execute for a JIT or cffi callbacks.",
            "MemoryDenyWriteExecute=yes",
        ]
    return out


def socketUnit(spec: UnitSpec) -> str:
    """
    The text of C{NAME.socket} for a socket-activated service.

    @raise UnitError: If C{spec} has no socket address, or cannot make a
        working unit.
    """
    _plan(spec)
    if not spec.listen:
        raise UnitError("no socket address: nothing to write a .socket unit for")
    out = _comment(
        f"{spec.name}.socket: socket activation for {spec.name}.service.  systemd\n"
        "binds the port(s) and starts the service on the first connection;\n"
        "restarts lose no connection (docs/activation.md of txsdnotify)."
    )
    out += [
        "",
        "[Unit]",
        f"Description={_plainValue('Description', spec.description)}, socket",
        "",
        "[Socket]",
    ]
    out += [f"ListenStream={address.replace('%', '%%')}" for address in spec.listen]
    out += [
        "# Shown in sdweb's log next to the address; --port",
        f"# systemd:domain=INET:name={spec.fileDescriptorName} selects it.",
        f"FileDescriptorName={spec.fileDescriptorName}",
        "",
        "[Install]",
        "WantedBy=sockets.target",
    ]
    return "\n".join(out) + "\n"


def unitFiles(spec: UnitSpec) -> dict[str, str]:
    """
    File name -> text: C{NAME.service}, and C{NAME.socket} with socket
    activation.

    @raise UnitError: If the options cannot make a working unit.
    """
    files = {f"{spec.name}.service": serviceUnit(spec)}
    if spec.listen:
        files[f"{spec.name}.socket"] = socketUnit(spec)
    return files
