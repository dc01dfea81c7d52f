"""
A WSGI application that reports the systemd variables (notification,
watchdog, socket activation) it saw in os.environ when it was imported, and
those a child process it starts sees.
"""

import os
import subprocess
import sys

NAMES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)
SEEN = sorted(name for name in NAMES if name in os.environ)
CHILD = f"import os; print(','.join(n for n in {NAMES!r} if n in os.environ))"


def app(environ: object, start_response: object) -> list[bytes]:
    child = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
    ).stdout.strip()
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [f"at import: {','.join(SEEN)}; child: {child}\n".encode()]
