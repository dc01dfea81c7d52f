"""
The views (and URLconf) of the test Django site.
"""

from __future__ import annotations

import os

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    StreamingHttpResponse,
)
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"hello from django\n", content_type="text/plain")


@csrf_exempt
def echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body, content_type="application/octet-stream")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("n", "3"))
    return StreamingHttpResponse(f"line {i}\n".encode() for i in range(count))


def file(request: HttpRequest) -> FileResponse:
    return FileResponse(open(os.environ["DJANGOAPP_FILE"], "rb"))


urlpatterns = [
    path("", hello),
    path("echo", echo),
    path("stream", stream),
    path("file", file),
]
