"""
docs/quickstart.md works as written: its application is served by the
command it shows, and its unit command writes docs/units/sdweb-hardened.service.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from conftest import ROOT, freePort, processEnv

from txsdnotify.testing import NotifyReceiver

QUICKSTART = (ROOT / "docs" / "quickstart.md").read_text()


def blocks(language: str) -> list[str]:
    """
    The fenced code blocks of the quick start in C{language}.
    """
    return re.findall(rf"^```{language}\n(.*?)^```", QUICKSTART, re.M | re.S)


def commands() -> list[list[str]]:
    """
    The shell commands of the quick start, continued lines joined,
    comments left out.
    """
    found = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                found.append(words)
    return found


def test_applicationServed(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    The myapp module of step 2, served by the command of step 2 (its
    --port changed to a free one), answers as the page says.
    """
    (source,) = [b for b in blocks("python") if "app = Flask" in b]
    (tmp_path / "myapp.py").write_text(source)
    (command,) = [
        c
        for c in commands()
        if c[:3] == [".venv/bin/twistd", "-n", "sdweb"] and "myapp:app" in c
    ]
    arguments = command[3:]
    port = freePort()
    arguments[arguments.index("--port") + 1] = f"tcp:{port}:interface=127.0.0.1"
    twistd(arguments, processEnv(NOTIFY_SOCKET=receiver.path))
    receiver.expect("READY", timeout=30)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
        assert r.read() == b"Hello from myapp\n"


def test_unitCommand() -> None:
    """
    Step 3's command (run with this checkout, twistd at the path it would
    have in /opt/myapp/.venv) prints docs/units/sdweb-hardened.service.
    """
    (command,) = [c for c in commands() if c[1:4] == ["-m", "txsdnotify", "unit"]]
    assert command[0] == "/opt/myapp/.venv/bin/python"
    redirect = command.index(">")
    assert command[redirect + 1] == "/etc/systemd/system/myapp.service"
    result = subprocess.run(
        [
            sys.executable,
            *command[1:4],
            "--twistd",
            "/opt/myapp/.venv/bin/twistd",
            *command[4:redirect],
        ],
        env=processEnv(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result
    expected = (ROOT / "docs" / "units" / "sdweb-hardened.service").read_text()
    assert result.stdout == expected
