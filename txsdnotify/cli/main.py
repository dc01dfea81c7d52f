# -*- test-case-name: tests.test_unitfile -*-
"""
C{python -m txsdnotify unit [options] -- [sdweb options]}: print (or write)
the systemd units for C{twistd sdweb}; L{txsdnotify.cli.unitfile} has the logic,
and C{txsdnotify/__main__.py} calls L{main}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from txsdnotify.cli.unitfile import (
    SERVICE_TYPES,
    UnitError,
    UnitSpec,
    defaultTwistd,
    unitFiles,
)

PROG = "python -m txsdnotify"


class _Parser(argparse.ArgumentParser):
    """
    Usage errors in one line (not the whole usage text), status 2.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {value!r}")
    return seconds


def _variable(value: str) -> tuple[str, str]:
    name, sep, content = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {value!r}")
    return name, content


def _parsers() -> tuple[_Parser, _Parser]:
    """
    The top-level parser and that of the C{unit} subcommand.
    """
    top = _Parser(prog=PROG, description="Tools for twistd sdweb.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    unit = commands.add_parser(
        "unit",
        help="print the systemd unit(s) for twistd sdweb with the given options",
        usage=f"{PROG} unit [options] -- [sdweb options]",
        description="Print the systemd .service unit (and .socket unit, with"
        " --socket) running 'twistd -n --pidfile= sdweb' with the sdweb"
        " options given after --, e.g.: "
        f"{PROG} unit --user myapp -- --port 80 --wsgi myapp.app",
    )
    add = unit.add_argument
    add("--name", default="sdweb", help="unit name: NAME.service (default: sdweb)")
    add("--description", default="A Twisted web site (twistd sdweb)")
    add(
        "--twistd",
        default=defaultTwistd(),
        help="path of twistd (default: the one of this Python, %(default)s)",
    )
    add(
        "--working-directory",
        metavar="DIR",
        help="WorkingDirectory= (default: the current directory; '' for none)",
    )
    add(
        "--user",
        help="User= (a port below 1024 then gets CAP_NET_BIND_SERVICE); without"
        " it, DynamicUser=yes (a user made up at each start, never root);"
        " 'root' runs as root",
    )
    add("--group", help="Group=")
    add(
        "--type",
        choices=SERVICE_TYPES,
        default="notify",
        help="notify (default) or notify-reload (systemd >= 253)",
    )
    add(
        "--watchdog",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="WatchdogSec= (default 30; 0: no watchdog)",
    )
    add(
        "--socket",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="socket activation: a ListenStream= address (8080, 127.0.0.1:8080,"
        " /run/myapp.sock) of a NAME.socket unit; repeatable",
    )
    add("--fd-name", default="web", help="FileDescriptorName= of the socket unit")
    add("--fd-store", action="store_true", help="keep the ports in systemd's fd store")
    add(
        "--env",
        action="append",
        default=[],
        type=_variable,
        metavar="NAME=VALUE",
        help="an Environment= variable; repeatable",
    )
    add(
        "--service-line",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a raw line for [Service], e.g. StandardOutput=append:/x; repeatable",
    )
    add(
        "--no-hardening",
        action="store_true",
        help="write no sandbox (ProtectSystem=, SystemCallFilter=, ...), for"
        " debugging; the unit is then rated EXPOSED",
    )
    add(
        "--writable",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory the service may write (ReadWritePaths=); repeatable",
    )
    add(
        "--state-dir",
        action="append",
        default=[],
        metavar="NAME",
        help="StateDirectory=NAME: /var/lib/NAME, owned by the service's user;"
        " repeatable (made by itself for a --logfile or unix: socket there)",
    )
    add(
        "--logs-dir",
        action="append",
        default=[],
        metavar="NAME",
        help="LogsDirectory=NAME: /var/log/NAME, owned by the service's user;"
        " repeatable (made by itself for a --logfile there)",
    )
    add(
        "--allow-family",
        action="append",
        default=[],
        metavar="AF_NAME",
        help="one more socket address family the application uses (e.g."
        " AF_NETLINK), above AF_UNIX AF_INET AF_INET6; repeatable",
    )
    add(
        "--allow-write-execute",
        action="store_true",
        help="no MemoryDenyWriteExecute= (for an application with a JIT)",
    )
    add(
        "--tls-key",
        metavar="PATH",
        help="serve HTTPS with this key, handed over as a systemd credential"
        " (LoadCredential=): it may stay readable by root only",
    )
    add("--tls-cert", metavar="PATH", help="the certificate (chain) for --tls-key")
    add(
        "--tls-port",
        type=int,
        default=443,
        metavar="PORT",
        help="the port of --tls-key's HTTPS listener (default 443)",
    )
    add("--output-dir", metavar="DIR", help="write NAME.service (NAME.socket) here")
    add("--force", action="store_true", help="overwrite files in --output-dir")
    return top, unit


def systemdVersion() -> int | None:
    """
    The version of this machine's systemd (C{systemctl --version}), if it
    has one.
    """
    try:
        out = subprocess.run(
            ["systemctl", "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        return int(out.split()[1])
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line C{argv} (without the program name); the exit
    status.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    split = words.index("--") if "--" in words else len(words)
    top, unit = _parsers()
    args, extra = top.parse_known_args(words[:split])
    if extra:
        unit.error(
            f"unrecognized arguments: {' '.join(extra)} (sdweb's options go after --)"
        )
    directory = args.working_directory
    if directory is None:
        directory = os.getcwd()
    spec = UnitSpec(
        name=args.name.removesuffix(".service"),
        description=args.description,
        arguments=words[split + 1 :],
        twistd=os.path.abspath(args.twistd),
        workingDirectory=os.path.abspath(directory) if directory else None,
        user=args.user,
        group=args.group,
        serviceType=args.type,
        watchdogSec=args.watchdog,
        listen=args.socket,
        fileDescriptorName=args.fd_name,
        fdStore=args.fd_store,
        environment=args.env,
        serviceLines=args.service_line,
        hardening=not args.no_hardening,
        writable=args.writable,
        stateDirectories=args.state_dir,
        logsDirectories=args.logs_dir,
        addressFamilies=args.allow_family,
        writeExecute=args.allow_write_execute,
        tlsKey=args.tls_key,
        tlsCert=args.tls_cert,
        tlsPort=args.tls_port,
    )
    try:
        files = unitFiles(spec)
    except UnitError as e:
        ours = {o for action in unit._actions for o in action.option_strings}
        misplaced = [w for w in spec.arguments if w.partition("=")[0] in ours]
        hint = f" (the generator's {misplaced[0]} goes before --)" if misplaced else ""
        print(f"{unit.prog}: error: {e}{hint}", file=sys.stderr)
        return 1
    version = systemdVersion()
    if spec.serviceType == "notify-reload" and version is not None and version < 253:
        print(
            f"{unit.prog}: warning: Type=notify-reload needs systemd >= 253, this"
            f" is systemd {version} (use --type notify where the unit will run on"
            " it)",
            file=sys.stderr,
        )
    if not os.access(spec.twistd, os.X_OK):
        print(f"{unit.prog}: warning: no {spec.twistd} (see --twistd)", file=sys.stderr)
    if args.output_dir is None:
        texts = [files.pop(f"{spec.name}.service")]
        texts += [f"# ---- {name} ----\n{text}" for name, text in files.items()]
        sys.stdout.write("\n".join(texts))
        return 0
    paths = {Path(args.output_dir) / name: text for name, text in files.items()}
    existing = [str(path) for path in paths if path.exists()]
    if existing and not args.force:
        print(
            f"{unit.prog}: error: {existing[0]} exists (--force overwrites)",
            file=sys.stderr,
        )
        return 1
    try:
        for path, text in paths.items():
            path.write_text(text)
            print(f"wrote {path}")
    except OSError as e:
        print(f"{unit.prog}: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 1
    return 0
