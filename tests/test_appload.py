"""
C{--wsgi} and C{--class}: the application is imported once every option is
read, from the working directory, C{--chdir} and C{--pythonpath}, with the
notification variables already gone; when it cannot be, one line says why,
and an error in the application's own code shows its frames only.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS, freePort, killTree, processEnv, twistdCommand

from txsdnotify.cli.appload import LoadError, loadApplication, usePaths
from txsdnotify.testing import NotifyReceiver

TRACEBACK = "Traceback (most recent call last)"

APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%s\\n"]
"""


def writeApp(directory: Path, module: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(APP % text)


def body(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
        return r.read()


def serve(twistd: Any, receiver: NotifyReceiver, *args: str, **env: str) -> int:
    port = freePort()
    twistd(
        ["--port", f"tcp:{port}:interface=127.0.0.1", *args],
        processEnv(NOTIFY_SOCKET=receiver.path, **env),
    )
    receiver.expect("READY", timeout=30)
    return port


@pytest.mark.parametrize(
    "dotted, words",
    [
        ("nosuchmodule.app", "no module named 'nosuchmodule'"),
        ("json.nosuch", "'json' has no attribute 'nosuch'"),
        ("os.path.nosuch", "'os.path' has no attribute 'nosuch'"),
        ("os.sep", "not callable (a str)"),
        ("json", "wants module.attribute or module:attribute"),
        ("nosuchmodule:app", "no module named 'nosuchmodule'"),
        ("json:nosuch", "'json' has no attribute 'nosuch'"),
        ("os:path.nosuch", "'os.path' has no attribute 'nosuch'"),
        ("json:", "wants module.attribute or module:attribute"),
        ("a:b:c", "wants module.attribute or module:attribute"),
        (
            "myapp:create_app()",
            "wants module.attribute or module:attribute (a call such as"
            " create_app() is not supported: make the application at import"
            " time, app = create_app())",
        ),
    ],
)
def test_loadErrors(dotted: str, words: str) -> None:
    with pytest.raises(LoadError) as caught:
        loadApplication(dotted)
    assert str(caught.value) == f"--wsgi {dotted!r}: {words}"


def test_loads() -> None:
    import json

    assert loadApplication("json.dumps") is json.dumps
    # gunicorn's spelling: the module, a colon, the attribute.
    assert loadApplication("json:dumps") is json.dumps
    assert loadApplication("os.path:join") is __import__("os").path.join
    assert loadApplication("os:path.join") is __import__("os").path.join
    assert loadApplication("os.path.join", "--class") is __import__("os").path.join


def test_errorInApplicationShowsItsFramesOnly() -> None:
    usePaths([str(APPS)])
    sys.modules.pop("brokenapp", None)
    with pytest.raises(LoadError) as caught:
        loadApplication("brokenapp.app")
    lines = str(caught.value).splitlines()
    assert lines[0] == (
        "--wsgi 'brokenapp.app': importing 'brokenapp' failed:"
        " ZeroDivisionError: integer division or modulo by zero"
    )
    frames = [line for line in lines if line.startswith("  File ")]
    assert [f.rsplit(" in ", 1)[1] for f in frames] == ["<module>", "_configure"]
    assert all("brokenapp.py" in f for f in frames)
    assert lines[-1].startswith("ZeroDivisionError")


def test_missingDependencyIsTheApplicationsError(tmp_path: Path) -> None:
    """
    A module the application imports is missing: that is an error in the
    application (with its frames), not "no such module".
    """
    (tmp_path / "needsdep.py").write_text("import no_such_dependency_xyz\napp = 1\n")
    usePaths([str(tmp_path)])
    with pytest.raises(LoadError) as caught:
        loadApplication("needsdep.app")
    text = str(caught.value)
    assert text.startswith("--wsgi 'needsdep.app': importing 'needsdep' failed:")
    assert "No module named 'no_such_dependency_xyz'" in text
    assert "needsdep.py" in text


def test_brokenApplicationExits(twistd: Any, receiver: NotifyReceiver) -> None:
    server = twistd(
        ["--wsgi", "brokenapp.app"], processEnv(NOTIFY_SOCKET=receiver.path)
    )
    assert server.wait(timeout=30) == 1
    out = server.output()
    assert out.startswith(
        "twistd sdweb: --wsgi 'brokenapp.app': importing 'brokenapp' failed:"
    )
    assert TRACEBACK not in out
    assert "/twisted/" not in out and "txsdnotify" not in out
    assert len(out.splitlines()) < 10
    assert receiver.receiveAvailable() == []


@pytest.mark.parametrize(
    "options",
    [
        ["--wsgi", "myapp.app"],
        ["--wsgi", "myapp:app"],
        ["--wsgi", "myapp:app", "--workers", "2"],
    ],
)
def test_workingDirectoryImportable(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path, options: list[str]
) -> None:
    """
    The application is imported from the working directory, named as
    twistd web does (module.app) or as gunicorn does (module:app), by one
    process or by the workers.
    """
    writeApp(tmp_path, "myapp", "from the working directory")
    port = serve(twistd, receiver, *options)
    assert body(port) == b"from the working directory\n"


def test_chdirAndPythonpathAfterWsgi(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    --chdir and --pythonpath given after --wsgi still apply to its import.
    """
    writeApp(tmp_path / "elsewhere", "chdirapp", "after chdir")
    writeApp(tmp_path / "lib", "pathapp", "from pythonpath")
    port = serve(
        twistd,
        receiver,
        "--wsgi",
        "chdirapp.app",
        "--chdir",
        str(tmp_path / "elsewhere"),
    )
    assert body(port) == b"after chdir\n"
    receiver.messages.clear()
    port = serve(
        twistd, receiver, "--wsgi", "pathapp.app", "--pythonpath", str(tmp_path / "lib")
    )
    assert body(port) == b"from pythonpath\n"


def test_applicationNeverSeesNotifyVariables(
    twistd: Any, receiver: NotifyReceiver
) -> None:
    """
    The notification variables are gone before the application is imported
    (so its children do not inherit them either), and sdweb still notifies
    and pings the watchdog (it kept its own copy).
    """
    port = serve(
        twistd,
        receiver,
        "--wsgi",
        "envapp.app",
        WATCHDOG_USEC="2000000",
    )
    assert body(port) == b"at import: ; child: \n"
    receiver.expect("WATCHDOG", "1", timeout=10)


# Starts twistd as systemd does a socket-activated service: the socket at
# descriptor 3, LISTEN_PID the pid of the process that runs.
ACTIVATE = """
import os, sys
fd = int(os.environ.pop("TEST_LISTEN_FD"))
os.dup2(fd, 3)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_applicationNeverSeesListenVariables(
    receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    Socket activated (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES set): sdweb
    serves the socket, and neither the application nor its children see any
    of the three, as sd_listen_fds(3) removes them.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    env = processEnv(
        NOTIFY_SOCKET=receiver.path,
        LISTEN_FDS="1",
        LISTEN_FDNAMES="web.socket",
        TEST_LISTEN_FD=str(listener.fileno()),
    )
    server = subprocess.Popen(
        [sys.executable, "-c", ACTIVATE, *twistdCommand()]
        + ["-n", "--pidfile=", "sdweb", "--wsgi", "envapp.app"],
        env=env,
        cwd=tmp_path,
        pass_fds=[listener.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    listener.close()
    try:
        receiver.expect("READY", timeout=30)
        assert body(port) == b"at import: ; child: \n"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == -signal.SIGTERM
    finally:
        killTree(server.pid)
        server.wait()
        assert server.stdout is not None
        server.stdout.close()


def test_classConstructorErrorShowsItsFramesOnly(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    --class: an error in the resource's constructor is the application's,
    shown with its frames only.
    """
    (tmp_path / "badroot.py").write_text(
        "from twisted.web.resource import Resource\n"
        "class Root(Resource):\n"
        "    def __init__(self):\n"
        "        raise RuntimeError('no config')\n"
    )
    server = twistd(
        ["--class", "badroot.Root"], processEnv(NOTIFY_SOCKET=receiver.path)
    )
    assert server.wait(timeout=30) == 1
    lines = server.output().splitlines()
    assert lines[0] == (
        "twistd sdweb: --class 'badroot.Root' failed: RuntimeError: no config"
    )
    assert TRACEBACK not in server.output()
    frames = [line for line in lines if line.startswith("  File ")]
    assert len(frames) == 1 and "badroot.py" in frames[0]
    assert receiver.receiveAvailable() == []
