"""
Tests for txsdnotify.cli.unitfile and C{python -m txsdnotify unit}: the text of
the generated units, the command line, C{systemd-analyze verify}, and the
generated units running under the private systemd user manager.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import attrs
import pytest
from conftest import freePort, need, portAnswers, processEnv, twistdCommand
from systemd_harness import (
    BUILDS,
    INSTALLED,
    SYSTEMD_254,
    UserManager,
    exec_line,
)

from txsdnotify.cli.unitfile import (
    UnitError,
    UnitSpec,
    defaultTwistd,
    environmentLine,
    execStart,
    parseArguments,
    portNumber,
    quoteWord,
    serviceUnit,
    socketUnit,
    unitFiles,
)

TWISTD = "/opt/site/.venv/bin/twistd"
START_TIMEOUT = 60


def settings(text: str, section: str = "Service") -> list[tuple[str, str]]:
    """
    The C{Key=value} lines of C{[section]}, comments left out and continued
    lines joined (as systemd does: backslash-newline becomes a space).
    """
    pairs = []
    current = ""
    for line in re.sub(r" *\\\n *", " ", text).splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


def setting(text: str, key: str, section: str = "Service") -> list[str]:
    """
    Every value of C{key} in C{[section]}.
    """
    return [v for k, v in settings(text, section) if k == key]


def service(*arguments: str, **kwargs: object) -> str:
    kwargs.setdefault("twistd", TWISTD)
    return serviceUnit(UnitSpec(arguments=arguments, **kwargs))  # type: ignore[arg-type]


# -- quoting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "quoted"),
    [
        ("--port", "--port"),
        ("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.1"),
        ("--pidfile=", "--pidfile="),
        ("", '""'),
        ("100%", "100%%"),
        ("%h", "%%h"),
        ("$HOME", "$$HOME"),
        ("${HOME}", '"$${HOME}"'),
        ("my site", '"my site"'),
        ("X-Cost: $5", '"X-Cost: $$5"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("it's", '"it\'s"'),
        ("back\\slash", '"back\\\\slash"'),
        ("two\nlines\ttab", '"two\\nlines\\ttab"'),
        ("bell\x07", '"bell\\x07"'),
        (";", '";"'),
        ("ünïcode", '"ünïcode"'),
    ],
)
def test_quoteWord(word: str, quoted: str) -> None:
    """
    A word is left bare when plain; otherwise double-quoted with backslash,
    quote and control characters escaped; C{%} and C{$} are always doubled.
    """
    assert quoteWord(word) == quoted


def test_quoteWordEnvironment() -> None:
    """
    C{Environment=} expands no variables: C{$} stays single.
    """
    assert quoteWord("A=$x 100%", dollars=False) == '"A=$x 100%%"'
    assert environmentLine("PATH", "/a b:$PATH") == '"PATH=/a b:$PATH"'
    assert environmentLine("N", "1") == "N=1"
    with pytest.raises(UnitError, match="not an environment variable name"):
        environmentLine("1A", "x")


def test_execStart() -> None:
    """
    C{twistd -n --pidfile= sdweb}, then one option (with its value) per
    continued line, quoted.
    """
    options = parseArguments(
        ["--port", "8080", "-l", "/var/log/a b.log", "--display-tracebacks"]
    )
    assert execStart("/v/bin/twistd", options) == (
        "/v/bin/twistd -n --pidfile= sdweb \\\n"
        "    --port 8080 \\\n"
        '    -l "/var/log/a b.log" \\\n'
        "    --display-tracebacks"
    )
    assert execStart("/my venv/twistd", []) == '"/my venv/twistd" -n --pidfile= sdweb'


def test_execStartQuoting() -> None:
    """
    C{%}, C{$}, spaces and quotes in sdweb's arguments reach twistd
    literally; C{ExecReload=} keeps its C{$MAINPID}.
    """
    text = service("--add-header", 'X-Note: 100% "$5"', "--path", "/srv/my site")
    [line] = setting(text, "ExecStart")
    assert line == (
        f"{TWISTD} -n --pidfile= sdweb"
        ' --add-header "X-Note: 100%% \\"$$5\\""'
        ' --path "/srv/my site"'
    )
    assert setting(text, "ExecReload") == ["/bin/kill -HUP $MAINPID"]


# -- sdweb's arguments ----------------------------------------------------


def test_parseArguments() -> None:
    """
    Long options (with C{=} or abbreviated), short ones (clustered, with the
    value attached) are read as twistd reads them, and keep their spelling.
    """
    parsed = parseArguments(
        ["-up", "80", "--drain=5", "--wsgi", "a.b", "-lx.log", "--fd-store"]
    )
    assert [(o.name, o.value, o.words) for o in parsed] == [
        ("user", None, ()),
        ("port", "80", ("-up", "80")),
        ("drain-timeout", "5", ("--drain=5",)),
        ("wsgi", "a.b", ("--wsgi", "a.b")),
        ("logfile", "x.log", ("-lx.log",)),
        ("fd-store", None, ("--fd-store",)),
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--prot", "80"], "--prot is not an sdweb option"),
        (["--p", "80"], "--p is ambiguous"),
        (["-x"], "-x is not an sdweb option"),
        (["--port"], "--port wants a value"),
        (["-p"], "-p wants a value"),
        (["--fd-store=yes"], "--fd-store takes no value"),
        (["sdweb", "--port", "80"], "unexpected argument 'sdweb'"),
        (["--port", "80", "extra"], "unexpected argument 'extra'"),
        (["--help"], "--help makes no sense in a unit"),
        (["--drain-timeout", "-1"], "--drain-timeout wants a number of seconds"),
        (["--drain-timeout", "soon"], "--drain-timeout wants a number of seconds"),
        (["--health-grace", "-2"], "--health-grace wants a number of seconds"),
    ],
)
def test_badArguments(arguments: list[str], message: str) -> None:
    with pytest.raises(UnitError) as e:
        service(*arguments)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("description", "number"),
    [
        ("tcp:80", 80),
        ("tcp:port=443:interface=127.0.0.1", 443),
        ("tcp6:8080:interface=\\:\\:1", 8080),
        ("ssl:443:privateKey=/k.pem", 443),
        ("ssl:privateKey=/k.pem:port=8443", 8443),
        ("unix:/run/site.sock", None),
        ("systemd:domain=INET:index=0", None),
        ("tcp:interface=127.0.0.1", None),
    ],
)
def test_portNumber(description: str, number: int | None) -> None:
    assert portNumber(description) == number


# -- the service unit ---------------------------------------------------------


def test_notify() -> None:
    """
    The default unit: Type=notify with everything docs/units.md asks for.
    """
    text = service("--port", "8080", "--wsgi", "myapp.app", hardening=False)
    assert settings(text, "Unit") == [
        ("Description", "A Twisted web site (twistd sdweb)"),
        ("After", "network.target"),
    ]
    assert settings(text) == [
        ("Type", "notify"),
        (
            "ExecStart",
            f"{TWISTD} -n --pidfile= sdweb --port 8080 --wsgi myapp.app",
        ),
        ("NotifyAccess", "main"),
        ("KillMode", "mixed"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("WatchdogSec", "30"),
        ("Environment", "PYTHONFAULTHANDLER=1"),
        ("TimeoutStopSec", "40"),
        ("Restart", "on-failure"),
        ("RestartSec", "2"),
        ("DynamicUser", "yes"),
    ]
    assert settings(text, "Install") == [("WantedBy", "multi-user.target")]
    # Settings are explained.
    lines = text.splitlines()
    assert lines[0].startswith("# sdweb.service: ")
    assert lines[lines.index("KillMode=mixed") - 2].startswith("# SIGTERM to twistd")


HARDENED = [
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("PrivateMounts", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectProc", "invisible"),
    ("ProcSubset", "pid"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("NoNewPrivileges", "yes"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallFilter", "~@privileged @resources"),
    ("SystemCallErrorNumber", "EPERM"),
    ("UMask", "0077"),
]


def test_hardenedByDefault() -> None:
    """
    By default the unit is sandboxed: the unhardened unit's lines, then the
    sandbox, each line of it under a comment.
    """
    plain = settings(service("--port", "8080", hardening=False))
    text = service("--port", "8080")
    assert settings(text) == [
        *plain,
        *HARDENED,
        ("CapabilityBoundingSet", ""),
        ("PrivateUsers", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("MemoryDenyWriteExecute", "yes"),
    ]
    lines = text.splitlines()
    start = lines.index("ProtectSystem=strict")
    for i, line in enumerate(lines[start:], start):
        if line == "":
            break
        if not line.startswith("#"):
            assert lines[i - 1].startswith("# "), (i, line)


def test_hardeningTable() -> None:
    """
    docs/units.md's table has a row for every sandbox directive a unit may
    get (the default one, with --user, with a port below 1024).
    """
    docs = (Path(__file__).resolve().parent.parent / "docs" / "units.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\| `([A-Za-z]+)=", docs, re.M)}
    sandbox = set()
    for arguments, user in (([], None), ([], "site"), (["--port", "80"], None)):
        hardened = settings(service(*arguments, user=user))
        plain = settings(service(*arguments, user=user, hardening=False))
        sandbox |= {k for k, _ in hardened} - {k for k, _ in plain}
    assert "ProtectSystem" in sandbox and "RemoveIPC" in sandbox
    assert sandbox - rows == set()


def test_noHardening() -> None:
    """
    --no-hardening writes none of the sandbox.
    """
    text = service("--port", "8080", hardening=False)
    keys = {k for k, _ in settings(text)}
    assert not keys & {k for k, _ in HARDENED}
    assert not keys & {
        "PrivateUsers",
        "RestrictAddressFamilies",
        "CapabilityBoundingSet",
    }


def test_relaxing() -> None:
    """
    Each relaxing option maps to its directive.
    """
    text = service(
        writable=["/srv/site/uploads", "/srv/100%"],
        stateDirectories=["site"],
        logsDirectories=["site", "site/audit"],
        addressFamilies=["AF_NETLINK", "AF_INET"],
        writeExecute=True,
    )
    assert setting(text, "ReadWritePaths") == ["/srv/site/uploads", "/srv/100%%"]
    assert setting(text, "StateDirectory") == ["site"]
    assert setting(text, "LogsDirectory") == ["site", "site/audit"]
    assert setting(text, "RestrictAddressFamilies") == [
        "AF_UNIX AF_INET AF_INET6 AF_NETLINK"
    ]
    assert setting(text, "MemoryDenyWriteExecute") == []
    assert "ProtectSystem=strict" in text


@pytest.mark.parametrize(
    ("arguments", "workingDirectory", "expected"),
    [
        (["--logfile", "/var/log/myapp/access.log"], None, ("LogsDirectory", "myapp")),
        (["--logfile", "/var/lib/myapp/a/x.log"], None, ("StateDirectory", "myapp/a")),
        (["--logfile", "/var/cache/myapp/x.log"], None, ("CacheDirectory", "myapp")),
        (["--port", "unix:/run/myapp/web.sock"], None, ("RuntimeDirectory", "myapp")),
        (
            ["--port", "unix:address=/run/myapp/web.sock:mode=660"],
            None,
            ("RuntimeDirectory", "myapp"),
        ),
        (
            ["--logfile", "/srv/site/logs/a.log"],
            None,
            ("ReadWritePaths", "/srv/site/logs"),
        ),
        (
            ["--logfile", "logs/a.log"],
            "/srv/site",
            ("ReadWritePaths", "/srv/site/logs"),
        ),
        (["--logfile", "../../var/log/x/a.log"], "/srv/site", ("LogsDirectory", "x")),
        (["--logfile", "logs/a.log"], None, None),
        (["--logfile", "-"], None, None),
    ],
)
def test_writtenDirectories(
    arguments: list[str],
    workingDirectory: str | None,
    expected: tuple[str, str] | None,
) -> None:
    """
    A --logfile or unix: socket under /var/log/NAME, /var/lib/NAME,
    /var/cache/NAME or /run/NAME gets the directory made for the service's
    user; elsewhere, ReadWritePaths=.  Without the sandbox, no
    ReadWritePaths= (nothing is read-only), but the directories still.
    """
    keys = ["LogsDirectory", "StateDirectory", "CacheDirectory", "RuntimeDirectory"]
    keys.append("ReadWritePaths")
    for hardening in (True, False):
        text = service(
            *arguments, workingDirectory=workingDirectory, hardening=hardening
        )
        found = [(k, v) for k, v in settings(text) if k in keys]
        wanted = [expected] if expected else []
        if not hardening and expected and expected[0] == "ReadWritePaths":
            wanted = []
        assert found == wanted, text


@pytest.mark.parametrize("path", ["/var/log/access.log", "/run/site.sock"])
def test_writtenRightInSystemDirectory(path: str) -> None:
    """
    A file right in /var/log or /run cannot be written by the service's
    user: refused, with where to put it.
    """
    option = "--logfile" if path.endswith(".log") else "--port"
    value = path if option == "--logfile" else f"unix:{path}"
    with pytest.raises(UnitError, match="put it in a directory of its own"):
        service(option, value)


def test_tlsCredentials() -> None:
    """
    --tls-key/--tls-cert: LoadCredential= lines and an ssl: port reading
    them through %d (not escaped: systemd expands it); a port below 1024
    gets its capability, and no PrivateUsers=.
    """
    text = service(
        "--port",
        "8080",
        tlsKey="/etc/ssl/private/site.key",
        tlsCert="/etc/ssl/site.crt",
    )
    assert setting(text, "LoadCredential") == [
        "tls.key:/etc/ssl/private/site.key",
        "tls.crt:/etc/ssl/site.crt",
    ]
    assert setting(text, "ExecStart") == [
        f"{TWISTD} -n --pidfile= sdweb --port 8080"
        " --port ssl:443:privateKey=%d/tls.key:certKey=%d/tls.crt"
    ]
    assert setting(text, "CapabilityBoundingSet") == ["CAP_NET_BIND_SERVICE"]
    assert setting(text, "AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"]
    assert setting(text, "PrivateUsers") == []
    text = service(tlsKey="/k", tlsCert="/c", tlsPort=8443)
    assert "--port ssl:8443:privateKey=%d/tls.key:certKey=%d/tls.crt" in text
    assert setting(text, "PrivateUsers") == ["yes"]
    assert setting(text, "CapabilityBoundingSet") == [""]


@pytest.mark.parametrize(
    "arguments",
    [
        ["--port", "ssl:8443:privateKey=/k:certKey=/c"],
        ["--https", "8443", "-k", "/k", "-c", "/c"],
    ],
)
def test_noMemoryDenyWriteExecuteWithTLS(arguments: list[str]) -> None:
    """
    A unit serving TLS gets no MemoryDenyWriteExecute=: pyOpenSSL's ALPN
    callback is made by cffi, which needs memory both writable and
    executable (tests/test_systemd_hardened.py shows it failing).
    """
    assert setting(service(*arguments), "MemoryDenyWriteExecute") == []
    assert setting(service(tlsKey="/k", tlsCert="/c"), "MemoryDenyWriteExecute") == []
    assert setting(service("--port", "8443"), "MemoryDenyWriteExecute") == ["yes"]


def test_docsHardenedUnit() -> None:
    """
    docs/units/sdweb-hardened.service is what the generator writes for the
    quick start's site (docs/quickstart.md, step 3).
    """
    path = Path(__file__).resolve().parent.parent / "docs/units/sdweb-hardened.service"
    assert path.read_text() == serviceUnit(
        UnitSpec(
            name="myapp",
            twistd="/opt/myapp/.venv/bin/twistd",
            workingDirectory="/opt/myapp",
            arguments=[
                "--port",
                "8080",
                "--wsgi",
                "myapp:app",
                "--logfile",
                "/var/log/myapp/access.log",
            ],
        )
    )


def test_notifyReload() -> None:
    """
    notify-reload: systemd sends SIGHUP itself, so no ExecReload=; the
    header says it needs systemd 253.
    """
    text = service("--port", "8080", serviceType="notify-reload")
    assert setting(text, "Type") == ["notify-reload"]
    assert setting(text, "ReloadSignal") == ["SIGHUP"]
    assert setting(text, "ExecReload") == []
    assert "systemd >= 253" in text
    assert setting(text, "KillMode") == ["mixed"]
    assert setting(text, "NotifyAccess") == ["main"]


@pytest.mark.parametrize(("watchdog", "lines"), [(30, ["30"]), (2.5, ["2.5"]), (0, [])])
def test_watchdog(watchdog: float, lines: list[str]) -> None:
    """
    WatchdogSec= as asked; 0 means none.
    """
    assert setting(service(watchdogSec=watchdog), "WatchdogSec") == lines


def test_badWatchdog() -> None:
    with pytest.raises(UnitError, match="watchdog"):
        service(watchdogSec=-1)


@pytest.mark.parametrize(
    ("arguments", "timeout"),
    [
        ([], "40"),
        (["--drain-timeout", "5"], "15"),
        (["--drain-timeout=2.5"], "12.5"),
        (["--drain", "8"], "18"),
        (["--drain-timeout", "8", "--drain-timeout", "0"], "10"),
        (["--health-grace", "8", "--drain-timeout", "5"], "23"),
    ],
)
def test_timeoutStopSec(arguments: list[str], timeout: str) -> None:
    """
    TimeoutStopSec= is sdweb's --health-grace (0 by default) plus its
    --drain-timeout (30 s by default) plus 10 s.
    """
    assert setting(service(*arguments), "TimeoutStopSec") == [timeout]


def test_socketActivation() -> None:
    """
    With socket addresses: a .socket unit with FileDescriptorName=, and a
    service that requires it and binds no port itself.
    """
    spec = UnitSpec(
        name="site",
        arguments=["--wsgi", "myapp.app"],
        twistd=TWISTD,
        listen=["80", "[::1]:8080", "/run/site.sock"],
        user="www-data",
    )
    files = unitFiles(spec)
    assert list(files) == ["site.service", "site.socket"]
    text = files["site.service"]
    assert setting(text, "Requires", "Unit") == ["site.socket"]
    assert setting(text, "After", "Unit") == ["site.socket network.target"]
    assert setting(text, "ExecStart") == [
        f"{TWISTD} -n --pidfile= sdweb --wsgi myapp.app"
    ]
    # systemd binds port 80: no capability needed, where sdweb binding it
    # itself as the same user would need one.
    assert setting(text, "AmbientCapabilities") == []
    alone = serviceUnit(
        UnitSpec(arguments=["--port", "80"], twistd=TWISTD, user="www-data")
    )
    assert setting(alone, "AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"]
    assert "enable --now site.socket" in text
    socket = files["site.socket"]
    assert socket == socketUnit(spec)
    assert settings(socket, "Socket") == [
        ("ListenStream", "80"),
        ("ListenStream", "[::1]:8080"),
        ("ListenStream", "/run/site.sock"),
        ("FileDescriptorName", "web"),
    ]
    assert settings(socket, "Install") == [("WantedBy", "sockets.target")]
    assert setting(socket, "Description", "Unit") == [
        "A Twisted web site (twistd sdweb), socket"
    ]


def test_socketActivationSelected() -> None:
    """
    A --port systemd:... selecting the socket by name goes with it.
    """
    text = service(
        "--port",
        "systemd:domain=INET:name=site",
        listen=["8080"],
        fileDescriptorName="site",
    )
    assert setting(text, "ExecStart") == [
        f"{TWISTD} -n --pidfile= sdweb --port systemd:domain=INET:name=site"
    ]


@pytest.mark.parametrize(
    ("arguments", "kwargs", "message"),
    [
        (["--port", "8080"], {"listen": ["8080"]}, "--port tcp:8080 both given"),
        (["-p", "unix:/x"], {"listen": ["8080"]}, "--port unix:/x both given"),
        (["--https", "443"], {"listen": ["443"]}, "--port ssl:443 both given"),
        (["--port", "systemd:domain=INET:index=0"], {}, "needs socket activation"),
        ([], {"listen": ["8080"], "fdStore": True}, "fd store and socket"),
        (["--fd-store"], {"listen": ["8080"]}, "fd store and socket"),
        ([], {"listen": ["tcp:8080"]}, "not 'tcp:8080'"),
        ([], {"listen": ["80 81"]}, "not a socket address"),
        ([], {"listen": ["80"], "fileDescriptorName": "a:b"}, "descriptor name"),
        ([], {"serviceType": "simple"}, "unknown type 'simple'"),
        ([], {"name": "my site"}, "not a unit name"),
        ([], {"twistd": "twistd"}, "must be absolute"),
        ([], {"workingDirectory": "site"}, "must be absolute"),
        ([], {"description": "two\nlines"}, "Description= wants one line"),
        ([], {"user": ""}, "User= wants one line"),
        ([], {"serviceLines": ["[Unit]"]}, "not a Key=value line"),
    ],
)
def test_badSpec(arguments: list[str], kwargs: dict[str, object], message: str) -> None:
    """
    What cannot make a working unit is refused, with a one-line reason.
    """
    with pytest.raises(UnitError) as e:
        service(*arguments, **kwargs)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_socketUnitWithoutAddress() -> None:
    with pytest.raises(UnitError, match="no socket address"):
        socketUnit(UnitSpec(twistd=TWISTD))
    assert list(unitFiles(UnitSpec(twistd=TWISTD))) == ["sdweb.service"]


def test_fdStore() -> None:
    """
    The fd store: --fd-store for sdweb (once) and FileDescriptorStoreMax=.
    """
    text = service("--port", "8080", fdStore=True)
    assert setting(text, "ExecStart") == [
        f"{TWISTD} -n --pidfile= sdweb --fd-store --port 8080"
    ]
    assert setting(text, "FileDescriptorStoreMax") == ["4"]
    text = service("--port", "8080", "--fd-store", fdStore=True)
    assert setting(text, "ExecStart")[0].count("--fd-store") == 1
    # --fd-store among the arguments is enough.
    assert setting(service("--fd-store"), "FileDescriptorStoreMax") == ["4"]
    ports = [w for n in range(5) for w in ("-p", str(8080 + n))]
    assert setting(service(*ports, fdStore=True), "FileDescriptorStoreMax") == ["5"]
    assert setting(service(), "FileDescriptorStoreMax") == []


@pytest.mark.parametrize(
    ("arguments", "user", "capability"),
    [
        (["--port", "80"], "site", True),
        (["-p80"], "site", True),
        (["--listen", "tcp:443:interface=127.0.0.1"], "site", True),
        (["--port", "tcp6:port=1023"], "site", True),
        (["--https", "443", "-c", "/c.pem", "-k", "/k.pem"], "site", True),
        (["--port", "8080", "--port", "80"], "site", True),
        (["--port", "1024"], "site", False),
        (["--port", "8080"], "site", False),
        (["--port", "unix:/run/site/web.sock"], "site", False),
        ([], "site", False),
        (["--port", "80"], None, True),
        (["--port", "80"], "root", False),
    ],
)
def test_capabilities(arguments: list[str], user: str | None, capability: bool) -> None:
    """
    A User= (or the DynamicUser= of a unit without one) binding a port below
    1024 itself gets CAP_NET_BIND_SERVICE, and no other capability; root
    needs none.
    """
    text = service(*arguments, user=user, hardening=False)
    expected = ["CAP_NET_BIND_SERVICE"] if capability else []
    assert setting(text, "AmbientCapabilities") == expected
    assert setting(text, "CapabilityBoundingSet") == expected
    # Hardened: root keeps just that capability too, and every other unit
    # none at all; PrivateUsers= only where no capability is needed.
    text = service(*arguments, user=user)
    privileged = capability or (user == "root" and "80" in arguments)
    assert setting(text, "AmbientCapabilities") == expected
    assert setting(text, "CapabilityBoundingSet") == (
        ["CAP_NET_BIND_SERVICE"] if privileged else [""]
    )
    assert setting(text, "PrivateUsers") == ([] if privileged else ["yes"])
    assert setting(text, "User") == ([user] if user and user != "root" else [])
    assert setting(text, "DynamicUser") == ([] if user else ["yes"])


def test_userGroupDirectoryEnvironment() -> None:
    """
    User=, Group=, WorkingDirectory=, Environment= (after
    PYTHONFAULTHANDLER=1, so they may override it) and raw lines, last in
    [Service]; C{%} doubled everywhere.
    """
    text = service(
        hardening=False,
        description="Site at 100%",
        user="site",
        group="www-data",
        workingDirectory="/srv/100%/site",
        environment={"DJANGO_SETTINGS_MODULE": "site.prod", "NOTE": 'a "b" $c 5%'},
        serviceLines=["StandardOutput=append:/var/log/x.log", "Nice=5"],
    )
    assert setting(text, "Description", "Unit") == ["Site at 100%%"]
    assert setting(text, "Environment") == [
        "PYTHONFAULTHANDLER=1",
        "DJANGO_SETTINGS_MODULE=site.prod",
        '"NOTE=a \\"b\\" $c 5%%"',
    ]
    assert settings(text)[-5:] == [
        ("User", "site"),
        ("Group", "www-data"),
        ("WorkingDirectory", "/srv/100%%/site"),
        ("StandardOutput", "append:/var/log/x.log"),
        ("Nice", "5"),
    ]
    assert UnitSpec(environment=[("A", "1")]).environment == (("A", "1"),)


def test_defaultTwistd() -> None:
    """
    By default, the twistd next to this Python (its virtualenv).
    """
    # sys.executable as Python was started (tests/../.venv/bin/python),
    # tidied but not resolved.
    assert defaultTwistd() == str(
        Path(os.path.abspath(sys.executable)).parent / "twistd"
    )
    assert UnitSpec().twistd == defaultTwistd()


# -- the command line -------------------------------------------------------


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """
    C{python -m txsdnotify ARGS}.
    """
    return subprocess.run(
        [sys.executable, "-m", "txsdnotify", *args],
        env=processEnv(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cliHelp() -> None:
    result = cli("--help")
    assert result.returncode == 0, result
    assert re.search(r"^\s+unit\s+print the systemd unit", result.stdout, re.M)
    result = cli("unit", "--help")
    assert result.returncode == 0, result
    for option in ("--socket", "--fd-store", "--env", "--service-line", "--output-dir"):
        assert option in result.stdout


def test_cliPrintsService(tmp_path: Path) -> None:
    """
    The service unit on stdout, as L{serviceUnit} writes it; the working
    directory is the current one by default.
    """
    result = cli(
        "unit",
        "--twistd",
        TWISTD,
        "--user",
        "site",
        "--env",
        "A=x=1",
        "--",
        "--port",
        "80",
        "--add-header",
        "X-A: 100% $5",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result
    assert result.stdout == serviceUnit(
        UnitSpec(
            arguments=["--port", "80", "--add-header", "X-A: 100% $5"],
            twistd=TWISTD,
            user="site",
            environment={"A": "x=1"},
            workingDirectory=str(tmp_path),
        )
    )
    if not os.path.exists(TWISTD):
        assert result.stderr == (
            f"python -m txsdnotify unit: warning: no {TWISTD} (see --twistd)\n"
        )


def test_cliPrintsSocketToo(tmp_path: Path) -> None:
    """
    With --socket, the service then the socket unit after a header line.
    """
    result = cli(
        "unit",
        "--name",
        "site.service",
        "--working-directory",
        "",
        "--type",
        "notify-reload",
        "--watchdog",
        "0",
        "--socket",
        "8080",
        "--fd-name",
        "site",
        "--",
        "--wsgi",
        "myapp.app",
    )
    assert result.returncode == 0, result
    files = unitFiles(
        UnitSpec(
            name="site",
            arguments=["--wsgi", "myapp.app"],
            serviceType="notify-reload",
            watchdogSec=0,
            listen=["8080"],
            fileDescriptorName="site",
        )
    )
    assert result.stdout == (
        files["site.service"] + "\n# ---- site.socket ----\n" + files["site.socket"]
    )


def test_cliOutputDir(tmp_path: Path) -> None:
    """
    --output-dir writes NAME.service and NAME.socket; it overwrites only
    with --force.
    """
    args = ["unit", "--name", "site", "--socket", "8080", "--output-dir", str(tmp_path)]
    result = cli(*args)
    assert result.returncode == 0, result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.service", "site.socket"]
    assert result.stdout.splitlines() == [
        f"wrote {tmp_path / 'site.service'}",
        f"wrote {tmp_path / 'site.socket'}",
    ]
    assert "ListenStream=8080" in (tmp_path / "site.socket").read_text()
    (tmp_path / "site.socket").write_text("old")
    result = cli(*args)
    assert result.returncode == 1
    assert result.stderr == (
        f"python -m txsdnotify unit: error: {tmp_path / 'site.service'} exists"
        " (--force overwrites)\n"
    )
    assert (tmp_path / "site.socket").read_text() == "old"
    assert cli(*args, "--force").returncode == 0
    assert "ListenStream=8080" in (tmp_path / "site.socket").read_text()


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        ([], 2, "the following arguments are required: COMMAND"),
        (["nonsense"], 2, "invalid choice: 'nonsense'"),
        (["unit", "--type", "simple"], 2, "argument --type: invalid choice"),
        (["unit", "--watchdog", "-1"], 2, "not a number of seconds >= 0: '-1'"),
        (["unit", "--watchdog", "x"], 2, "not a number of seconds >= 0: 'x'"),
        (["unit", "--env", "NOVALUE"], 2, "not NAME=VALUE"),
        (["unit", "--port", "80"], 2, "sdweb's options go after --"),
        (["unit", "--socket", "80", "--", "--port", "80"], 1, "both given"),
        (["unit", "--", "--port", "80", "--name", "x"], 1, "generator's --name goes"),
        (["unit", "--", "--prot", "80"], 1, "--prot is not an sdweb option"),
        (["unit", "--", "--drain-timeout", "-5"], 1, "--drain-timeout wants"),
        (["unit", "--name", "a b"], 1, "not a unit name"),
        (["unit", "--env", "1X=y"], 1, "not an environment variable name"),
        (["unit", "--service-line", "Nice"], 1, "not a Key=value line"),
        (["unit", "--output-dir", "/nonexistent/dir"], 1, "No such file"),
        (
            ["unit", "--", "--status-interval", "soon"],
            1,
            "sdweb would refuse these options: Parameter type enforcement failed:"
            " --status-interval wants a number of seconds >= 0, not 'soon'",
        ),
        (["unit", "--", "--port", "80808"], 1, "port 80808 is not in 0-65535"),
        (["unit", "--", "-n"], 1, "write 'twistd -n sdweb ...'"),
        (["unit", "--", "--wsgi", "json"], 1, "sdweb would refuse"),
        (["unit", "--writable", "rel"], 1, "--writable wants an absolute path"),
        (["unit", "--state-dir", "../x"], 1, "--state-dir wants a directory name"),
        (["unit", "--logs-dir", "/var/log/x"], 1, "--logs-dir wants a directory"),
        (["unit", "--allow-family", "NETLINK"], 1, "not an address family"),
        (["unit", "--tls-key", "/k"], 1, "--tls-key and --tls-cert go together"),
        (["unit", "--tls-key", "k", "--tls-cert", "/c"], 1, "wants an absolute"),
        (
            ["unit", "--tls-key", "/k", "--tls-cert", "/c", "--tls-port", "0"],
            1,
            "not in",
        ),
        (["unit", "--working-directory", "/root/site"], 1, "ProtectHome=yes hides"),
        (["unit", "--twistd", "/home/me/.venv/bin/twistd"], 1, "ProtectHome=yes"),
        (["unit", "--", "--logfile", "/var/log/a.log"], 1, "a directory of its own"),
    ],
)
def test_cliErrors(args: list[str], status: int, message: str) -> None:
    """
    Bad input: one line on stderr, no traceback, nothing on stdout.
    """
    result = cli(*args)
    assert result.returncode == status, result
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("python -m txsdnotify")
    assert message in result.stderr


def test_cliWarnsNotifyReloadOnOldSystemd() -> None:
    """
    Type=notify-reload on a systemd older than 253 is written, with a
    warning.
    """
    result = cli("unit", "--type", "notify-reload")
    assert result.returncode == 0, result
    assert "Type=notify-reload" in result.stdout
    warned = "warning: Type=notify-reload needs systemd >= 253" in result.stderr
    assert warned == (systemdVersion() < 253), result.stderr
    assert "notify-reload" not in cli("unit").stderr


# -- systemd-analyze verify ---------------------------------------------------


def systemdVersion() -> int:
    out = subprocess.run(
        [need("systemctl"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[1])


VERIFIED = {
    "default": {},
    "everything": {
        "arguments": [
            "--port",
            "80",
            "--port",
            "tcp:8080:interface=127.0.0.1",
            "--add-header",
            'X-Note: 100% "$5" \\o/',
            "--path",
            "/srv/my site",
            "--drain-timeout",
            "2.5",
        ],
        "description": 'Site at 100% ("quoted")',
        "user": "site",
        "group": "site",
        "workingDirectory": "/srv/site",
        "watchdogSec": 2.5,
        "fdStore": True,
        "environment": {"A": 'b c$ "q" 100%', "B": "\\n"},
        "serviceLines": ["StandardOutput=append:/var/log/%N.log", "Nice=5"],
    },
    "no watchdog": {"watchdogSec": 0},
    "hardened, relaxed": {
        "arguments": ["--logfile", "/var/log/site/access.log", "--port", "443"],
        "writable": ["/srv/uploads"],
        "stateDirectories": ["site"],
        "addressFamilies": ["AF_NETLINK"],
        "tlsKey": "/etc/ssl/private/site.key",
        "tlsCert": "/etc/ssl/site.crt",
        "tlsPort": 8443,
    },
    "socket": {"listen": ["127.0.0.1:8080", "[::1]:8080", "/run/site.sock"]},
    "socket, selected": {
        "listen": ["80"],
        "arguments": ["--port", "systemd:domain=INET:name=site"],
        "fileDescriptorName": "site",
    },
}


@pytest.mark.parametrize("case", list(VERIFIED))
def test_systemdAnalyzeVerify(case: str, tmp_path: Path) -> None:
    """
    systemd-analyze verify finds nothing to say about the generated units
    (it also checks that the real twistd exists).
    """
    analyze = need("systemd-analyze")
    spec = UnitSpec(name="site", twistd=twistdCommand()[0], **VERIFIED[case])  # type: ignore[arg-type]
    paths = []
    for name, text in unitFiles(spec).items():
        path = tmp_path / name
        path.write_text(text)
        paths.append(str(path))
    result = subprocess.run(
        [analyze, "verify", *paths], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), (
        result,
        unitFiles(spec),
    )


SCORED = {
    "default": {},
    "user": {"user": "site", "group": "site"},
    "port 80": {"arguments": ["--port", "80"]},
    "TLS credentials": {"tlsKey": "/etc/ssl/private/site.key", "tlsCert": "/etc/c"},
    "workers, logs, state": {
        "arguments": ["--workers", "2", "--logfile", "/var/log/site/access.log"],
        "stateDirectories": ["site"],
        "writable": ["/srv/uploads"],
    },
    "socket activation": {"listen": ["80"]},
}


def exposure(build: str, path: Path) -> tuple[float, str]:
    """
    C{systemd-analyze security --offline=true PATH} of the systemd
    C{build} (L{BUILDS}): the overall exposure and its word (OK, EXPOSED).
    """
    systemd = BUILDS[build]()
    if systemd.missing is not None or systemd.analyze is None:
        message = f"systemd-analyze of systemd {build}: {systemd.missing}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        systemd.command(systemd.analyze, "security", "--offline=true", str(path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", result.stdout)
    assert found, result
    return float(found.group(1)), found.group(2)


@pytest.mark.parametrize("build", [INSTALLED, SYSTEMD_254])
@pytest.mark.parametrize("case", list(SCORED))
def test_exposureScore(build: str, case: str, tmp_path: Path) -> None:
    """
    The generated units are rated "OK" (at most 2.0) by systemd-analyze
    security on systemd 252 and 254; without the sandbox, "EXPOSED" (which
    shows that the check has teeth).
    """
    spec = UnitSpec(name="site", twistd=twistdCommand()[0], **SCORED[case])  # type: ignore[arg-type]
    path = tmp_path / "site.service"
    path.write_text(serviceUnit(spec))
    score, word = exposure(build, path)
    assert score <= 2.0 and word == "OK", (score, word, path.read_text())
    path.write_text(serviceUnit(attrs.evolve(spec, hardening=False)))
    score, word = exposure(build, path)
    assert score > 2.0 and word != "OK", (score, word)


def test_systemdAnalyzeVerifyNotifyReload(tmp_path: Path) -> None:
    """
    Type=notify-reload is verified where systemd knows it (>= 253); older
    ones warn about it, which shows that the check has teeth.
    """
    analyze = need("systemd-analyze")
    path = tmp_path / "site.service"
    path.write_text(
        serviceUnit(UnitSpec(twistd=twistdCommand()[0], serviceType="notify-reload"))
    )
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    if systemdVersion() >= 253:
        assert (result.returncode, result.stderr) == (0, ""), result
    else:
        assert "Failed to parse service type, ignoring: notify-reload" in result.stderr
        assert "Unknown key 'ReloadSignal'" in result.stderr


# -- under the private systemd user manager -----------------------------------


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.status, r.read()


def forTests(directory: Path, log: Path, results: Path) -> list[str]:
    """
    Generator options that make a unit run under the private manager: the
    checkout and tests/apps importable, output and the end captured.
    """
    recorder = exec_line(
        [
            "/bin/sh",
            "-c",
            'echo "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" >> "$1"',
            "sh",
            str(results),
        ]
    )
    # The private manager is a user manager: no DynamicUser= there.
    # The sandbox is tested in tests/test_systemd_hardened.py.
    return [
        "--no-hardening",
        "--user",
        "root",
        "--working-directory",
        str(directory),
        "--env",
        f"PYTHONPATH={processEnv()['PYTHONPATH']}",
        "--service-line",
        f"StandardOutput=append:{str(log).replace('%', '%%')}",
        "--service-line",
        "StandardError=inherit",
        "--service-line",
        f"TimeoutStartSec={START_TIMEOUT}",
        "--service-line",
        f"ExecStopPost={recorder}",
    ]


def waitForText(path: Path, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path} within {timeout}s:\n{content}")


DUMPER = """\
import json, os, socket, sys, time

with open(os.environ["DUMP"], "w") as f:
    json.dump(
        {
            "argv": sys.argv[1:],
            "cwd": os.getcwd(),
            "env": {k: os.environ.get(k) for k in ("A", "B", "PYTHONFAULTHANDLER")},
        },
        f,
    )
address = os.environ["NOTIFY_SOCKET"]
if address.startswith("@"):
    address = "\\0" + address[1:]
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
    s.sendto(b"READY=1", address)
time.sleep(600)
"""


def test_quotingUnderSystemd(
    user_manager: UserManager,  # noqa: F811
    units: list[str],
    tmp_path: Path,
) -> None:
    """
    What systemd itself makes of the generated quoting: a stand-in for
    twistd (at a path with a space) records the argv, working directory
    and environment it was started with; they are exactly what was asked.
    """
    bin_dir = tmp_path / "my bin"
    bin_dir.mkdir()
    dumper = bin_dir / "twistd"
    dumper.write_text(f"#!{sys.executable}\n{DUMPER}")
    dumper.chmod(0o755)
    work = tmp_path / "work 100% $HOME"
    work.mkdir()
    dump = tmp_path / "dump.json"
    arguments = [
        "--add-header",
        'X-Note: 100% "$5" ${HOME} \\o/ it\'s',
        "--path",
        "/srv/my site",
        "--logfile",
        "%h/x.log",
        "--add-header",
        "Tab:\tend",
    ]
    name = user_manager.unique_name("quoting")
    result = cli(
        "unit",
        "--name",
        name,
        "--description",
        'Quoting 100% "ok"',
        "--twistd",
        str(dumper),
        "--no-hardening",
        "--user",
        "root",
        "--working-directory",
        str(work),
        "--env",
        f"DUMP={dump}",
        "--env",
        'A=b c$ "q" 100% \\back',
        "--env",
        "B=$HOME",
        "--",
        *arguments,
    )
    assert result.returncode == 0, result
    units.append(name)
    user_manager.write_unit(name, result.stdout)
    user_manager.systemctl("start", name, timeout=START_TIMEOUT)
    assert user_manager.show(name, "Description", "ActiveState") == {
        "Description": 'Quoting 100% "ok"',
        "ActiveState": "active",
    }
    assert json.loads(dump.read_text()) == {
        "argv": ["-n", "--pidfile=", "sdweb", *arguments],
        "cwd": str(work),
        "env": {"A": 'b c$ "q" 100% \\back', "B": "$HOME", "PYTHONFAULTHANDLER": "1"},
    }


def test_generatedUnitRuns(
    user_manager: UserManager,  # noqa: F811
    units: list[str],
    tmp_path: Path,
) -> None:
    """
    A generated notify unit with the real twistd: start returns once the
    port answers, reload reloads in the same process, stop is clean.
    """
    port = freePort()
    log = tmp_path / "unit.log"
    results = tmp_path / "results"
    name = user_manager.unique_name("generated")
    result = cli(
        "unit",
        "--name",
        name,
        *forTests(tmp_path, log, results),
        "--",
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
        "--class",
        "slowapp.Slow",
        "--drain-timeout",
        "5",
    )
    assert result.returncode == 0, result
    units.append(name)
    user_manager.write_unit(name, result.stdout)

    user_manager.systemctl("start", name, timeout=START_TIMEOUT)
    assert portAnswers(port), log.read_text()
    props = user_manager.show(
        name,
        "ActiveState",
        "Type",
        "NotifyAccess",
        "KillMode",
        "Restart",
        "WatchdogUSec",
        "TimeoutStopUSec",
        "MainPID",
        "StatusText",
    )
    pid = props.pop("MainPID")
    assert props.pop("StatusText").startswith("Total requests: 0;")
    assert props == {
        "ActiveState": "active",
        "Type": "notify",
        "NotifyAccess": "main",
        "KillMode": "mixed",
        "Restart": "on-failure",
        "WatchdogUSec": "30s",
        "TimeoutStopUSec": "15s",
    }
    assert get(port) == (200, b"fast\n")

    user_manager.systemctl("reload", name)
    waitForText(log, "sdweb reloaded")
    assert user_manager.show(name, "MainPID", "ActiveState") == {
        "MainPID": pid,
        "ActiveState": "active",
    }
    assert get(port, "/after-reload") == (200, b"fast\n")

    began = time.monotonic()
    user_manager.systemctl("stop", name, timeout=60)
    took = time.monotonic() - began
    assert took < 10, took
    assert user_manager.show(name, "ActiveState") == {"ActiveState": "inactive"}
    assert results.read_text().splitlines() == ["success killed TERM"]
    assert not portAnswers(port)
    output = log.read_text()
    assert "sdweb Stopped: " in output
    assert "Traceback" not in output


def test_generatedSocketPair(
    user_manager: UserManager,  # noqa: F811
    units: list[str],
    tmp_path: Path,
) -> None:
    """
    A generated .socket + .service pair, written by --output-dir: starting
    the socket starts nothing else; the first connection starts the service
    and is answered.
    """
    port = freePort()
    log = tmp_path / "unit.log"
    results = tmp_path / "results"
    name = user_manager.unique_name("pair", suffix="")
    result = cli(
        "unit",
        "--name",
        name,
        "--socket",
        f"127.0.0.1:{port}",
        "--output-dir",
        str(user_manager.unit_dir),
        *forTests(tmp_path, log, results),
        "--",
        "--class",
        "slowapp.Slow",
    )
    assert result.returncode == 0, result
    service, socket = f"{name}.service", f"{name}.socket"
    units.extend([service, socket])
    user_manager.systemctl("daemon-reload")

    user_manager.systemctl("start", socket)
    assert user_manager.show(socket, "ActiveState") == {"ActiveState": "active"}
    assert user_manager.show(service, "ActiveState") == {"ActiveState": "inactive"}
    assert get(port) == (200, b"fast\n")
    user_manager.wait_for(service, "ActiveState", "active", timeout=START_TIMEOUT)
    output = waitForText(log, "[web]")
    assert f"127.0.0.1:{port}" in output

    user_manager.systemctl("stop", service, timeout=60)
    assert results.read_text().splitlines() == ["success killed TERM"]
    # The socket stays, and starts the service again.
    assert get(port, "/again") == (200, b"fast\n")
    user_manager.wait_for(service, "ActiveState", "active", timeout=START_TIMEOUT)
    assert os.path.exists(user_manager.unit_dir / socket)
