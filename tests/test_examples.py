"""
The examples in docs/examples run as the docs say: a .tac file, a Klein app
with a readiness condition and a reload hook, a WSGI app with its own thread
pool, and an application's own twistd plugin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from conftest import ROOT, freePort, portAnswers, processEnv, twistdCommand

from txsdnotify.testing import NotifyReceiver

EXAMPLES = ROOT / "docs" / "examples"


def run(args: list[str], receiver: NotifyReceiver, tmp_path: Path, **env: str) -> Any:
    log = open(tmp_path / "twistd.out", "wb")
    process = subprocess.Popen(
        twistdCommand() + ["-n", "--pidfile=", *args],
        env=processEnv(NOTIFY_SOCKET=receiver.path, **env),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process


def get(port: int, path: str = "/") -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.read()


def stop(process: Any, tmp_path: Path, tracebacks: int = 0) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == -signal.SIGTERM
    log = (tmp_path / "twistd.out").read_text()
    assert log.count("Traceback (most recent call last)") == tracebacks, log


def test_webTac(receiver: NotifyReceiver, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("static\n")
    port = freePort()
    process = run(
        ["-y", str(EXAMPLES / "web.tac")],
        receiver,
        tmp_path,
        PORT=str(port),
        ROOT=str(tmp_path / "www"),
    )
    try:
        receiver.expect("READY", timeout=30)
        assert get(port) == b"static\n"
    finally:
        stop(process, tmp_path)


def test_kleinTac(receiver: NotifyReceiver, tmp_path: Path) -> None:
    greeting = tmp_path / "greeting.txt"
    port = freePort()
    process = run(
        ["-y", str(EXAMPLES / "klein_app.tac")],
        receiver,
        tmp_path,
        PORT=str(port),
        GREETING_FILE=str(greeting),
    )
    try:
        # The port is bound before the cache is warm; READY=1 waits for both.
        receiver.expect("READY", timeout=30)
        assert get(port) == b"hello\n"
        greeting.write_text("bonjour")
        seen = len(receiver.receiveAvailable())
        process.send_signal(signal.SIGHUP)
        receiver.expect("RELOADING", timeout=10, after=seen)
        ready = receiver.expect("READY", timeout=10, after=seen)
        assert "Reload failed" not in ready["STATUS"]
        assert get(port) == b"bonjour\n"
        greeting.unlink()
        seen = len(receiver.receiveAvailable())
        process.send_signal(signal.SIGHUP)
        ready = receiver.expect("READY", timeout=10, after=seen)
        assert "Reload failed" in ready["STATUS"]
        assert "reload greeting" in ready["STATUS"]
        assert get(port) == b"bonjour\n"
    finally:
        # The failed hook's traceback is logged, for its author.
        stop(process, tmp_path, tracebacks=1)


def test_wsgiTac(receiver: NotifyReceiver, tmp_path: Path) -> None:
    port = freePort()
    process = run(
        ["-y", str(EXAMPLES / "wsgi.tac")], receiver, tmp_path, PORT=str(port)
    )
    try:
        receiver.expect("READY", timeout=30)
        assert get(port) == b"hello from flask\n"
    finally:
        stop(process, tmp_path)


def test_ownPlugin(receiver: NotifyReceiver, tmp_path: Path) -> None:
    port = freePort()
    env = processEnv()
    pythonpath = os.pathsep.join([str(EXAMPLES / "plugin"), env["PYTHONPATH"]])
    process = run(
        ["myapp", "--port", f"tcp:{port}:interface=127.0.0.1"],
        receiver,
        tmp_path,
        PYTHONPATH=pythonpath,
    )
    try:
        receiver.expect("READY", timeout=30)
        assert portAnswers(port)
        assert get(port) == b"myapp is running\n"
    finally:
        stop(process, tmp_path)
