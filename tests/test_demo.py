"""
The demo page C{twistd -n sdweb} serves when given nothing else.
"""

from __future__ import annotations

import http.client
from typing import Any

from conftest import freePort, processEnv, waitUntil

from txsdnotify.testing import NotifyReceiver


def request(port: int, method: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, "/")
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_headAnswersQuietly(twistd: Any, receiver: NotifyReceiver) -> None:
    """
    HEAD gets GET's headers and no body, and logs no warning.
    """
    port = freePort()
    server = twistd(
        ["--port", f"tcp:{port}:interface=127.0.0.1"],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=30)
    status, getHeaders, page = request(port, "GET")
    assert status == 200 and page
    status, headHeaders, nothing = request(port, "HEAD")
    assert (status, nothing) == (200, b"")
    assert headHeaders["Content-Length"] == str(len(page))
    assert headHeaders["Content-Type"] == getHeaders["Content-Type"]
    # The access log line of the HEAD request comes after any warning.
    waitUntil(lambda: '"HEAD / HTTP/1.1"' in server.output(), timeout=10)
    assert "message body" not in server.output()
