"""
The plainest WSGI application: a fixed greeting (bench/compare_wsgi.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BODY = b"hello from wsgi\n"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
    )
    return [BODY]
