"""
Start-up errors end C{twistd sdweb} in one line, with exit status 1, no
traceback and no READY=1: checked while the options are parsed.
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import freePort, processEnv, twistdCommand
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from txsdnotify.cli.startup_checks import (
    checkPortDescription,
    splitDescription,
)
from txsdnotify.ready import errnoOf, failureFields
from txsdnotify.systemd.failures import resolverReason
from txsdnotify.testing import NotifyReceiver

TRACEBACK = "Traceback (most recent call last)"


def oneLineExit(server: Any) -> str:
    """
    The process exits 1 having printed exactly one line; that line.
    """
    assert server.wait(timeout=30) == 1
    lines = server.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("twistd sdweb: ")
    return lines[0]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--path", "/nonexistent"], "--path '/nonexistent': no such file"),
        (["--resource-script", "missing.rpy"], "'missing.rpy': no such file"),
        (["--port", "80808"], "port 80808 is not in 0-65535"),
        (["--port", "tcp:65536:interface=127.0.0.1"], "port 65536 is not in"),
        (["--port", "ssl:port=99999:privateKey=k.pem"], "port 99999 is not in"),
        (["--listen", "tcp6:70000"], "port 70000 is not in"),
        (["--https", "70000"], "port 70000 is not in"),
        (
            ["--port", "tcp:8080:interface=999.1.1.1"],
            "interface '999.1.1.1' is not an IP address",
        ),
        (["--personal"], "--personal is not supported"),
        (["--notracebacks"], "write 'twistd -n sdweb ...'"),
        (["--chdir", "/nonexistent"], "--chdir '/nonexistent'"),
    ],
)
def test_refusedAtParse(
    twistd: Any, receiver: NotifyReceiver, args: list[str], words: str
) -> None:
    server = twistd(args, processEnv(NOTIFY_SOCKET=receiver.path))
    assert words in oneLineExit(server)
    assert receiver.receiveAvailable() == []


def test_dashNAfterSdwebRefused(receiver: NotifyReceiver, tmp_path: Path) -> None:
    """
    C{twistd sdweb -n} would daemonise (-n is twistd web's --notracebacks
    there): refused, saying what to write.
    """
    port = freePort()
    done = subprocess.run(
        twistdCommand() + ["--pidfile=", "sdweb", "-n", "--port", str(port)],
        env=processEnv(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "twistd sdweb: -n after sdweb is not --nodaemon (it is twistd web's"
        " deprecated --notracebacks, and twistd would daemonise): write"
        " 'twistd -n sdweb ...' (see: twistd sdweb --help)"
    ]


def test_helpHasNoRefusedOptionsAndNoSpaceRuns() -> None:
    out = subprocess.run(
        twistdCommand() + ["sdweb", "--help"],
        env=processEnv(),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "--chdir" in out and "--pythonpath" in out
    assert "--personal" not in out
    assert "--notracebacks" not in out
    # Each option's text starts in column 28 (twistd's layout), or after an
    # option too long for it (--limit-request-field_size=, gunicorn's name).
    for line in out.splitlines():
        text = re.sub(r"^[a-z_-]*=\s+", "", line[28:].strip())
        assert "  " not in text, line
    assert "0 sends only the ones at start and stop" in " ".join(out.split())


@pytest.mark.parametrize(
    "description",
    ["0", "65535", "tcp:8080", "tcp:port=1:interface=127.0.0.1", "ssl:443:k=v"]
    + ["tcp:80:interface=\\:\\:1", "tcp:80:interface=localhost", "unix:/x:mode=99999"],
)
def test_goodDescriptions(description: str) -> None:
    checkPortDescription(description)


def test_splitDescription() -> None:
    assert splitDescription("tcp:80:interface=\\:\\:1") == [
        "tcp",
        "80",
        "interface=::1",
    ]


def resolverFailure() -> Failure:
    """
    A real listen failure on an interface the resolver does not know.
    """
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="999.1.1.1")
    failures: list[Failure] = []
    endpoint.listen(Factory()).addErrback(failures.append)
    assert len(failures) == 1
    return failures[0]


def test_resolverErrorWords() -> None:
    failure = resolverFailure()
    error = failure.value
    assert isinstance(error, CannotListenError)
    assert isinstance(error.socketError, socket.gaierror)
    assert error.socketError.errno is not None and error.socketError.errno < 0
    reason = resolverReason(error)
    assert reason is not None
    assert reason.startswith("cannot resolve interface '999.1.1.1' (")
    assert reason.endswith(")") and "Unknown error" not in reason


def test_resolverErrorSendsNoErrno() -> None:
    """
    systemd rejects a negative ERRNO=: a resolver error sends none.
    """
    error = resolverFailure().value
    assert error is not None
    assert errnoOf(error) is None
    assert "ERRNO" not in failureFields(error)


def test_otherErrorsAreNotResolverErrors() -> None:
    error = CannotListenError("127.0.0.1", 80, OSError(98, "Address already in use"))
    assert resolverReason(error) is None
    assert errnoOf(error) == 98


def test_unresolvableInterface(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    An interface name the resolver does not know (refused by the resolver
    library at once, no DNS query): one line in words, no ERRNO= (systemd
    rejects the negative resolver numbers), no READY=1.
    """
    description = "tcp:0:interface=bad name"
    server = twistd(["--port", description], processEnv(NOTIFY_SOCKET=receiver.path))
    assert server.wait(timeout=30) == 1
    output = server.output()
    assert TRACEBACK not in output
    said = [line for line in output.splitlines() if "cannot listen" in line]
    assert len(said) == 1, output
    assert said[0].endswith(
        f"sdweb: cannot listen on {description}: cannot resolve interface"
        " 'bad name' (Name or service not known)"
    )
    failed = receiver.expect("STATUS")
    assert failed["STATUS"].startswith("Failed: cannot listen on")
    assert "ERRNO" not in failed
    assert receiver.values("READY") == []
