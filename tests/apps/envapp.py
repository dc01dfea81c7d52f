"""
A WSGI application that reports the notification variables it saw in
os.environ when it was imported.
"""

import os

SEEN = sorted(
    name
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    if name in os.environ
)


def app(environ: object, start_response: object) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [("seen at import: " + ",".join(SEEN) + "\n").encode()]
