# -*- test-case-name: tests.test_channels -*-
"""
A site's connections built, from the start, as instances of a subclass of
their own class.

The request tracking must hear when a connection is lost, so its
connections are instances of a subclass (see
L{txsdnotify.web.tracking.TrackingFactory}).  Assigning C{__class__} to an
object that exists costs on every later attribute access: CPython 3.11 then
gives it a real C{__dict__} in place of its inline values.  So the tracking
has the site build its connections as instances of the subclass from the
start, where it knows how a site's C{protocol} builds them.

Twisted's L{Site} builds each connection with a private function,
C{twisted.web.http._genericHTTPChannelProtocolFactory}, which returns
C{_GenericHTTPChannelProtocol(HTTPChannel())} (a proxy that can switch to
HTTP/2 after ALPN).  This module is the one place that knows it;
C{tests/test_channels.py} fails if Twisted changes it.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.web.http import (
    HTTPChannel,
    _GenericHTTPChannelProtocol,
    _genericHTTPChannelProtocolFactory,
)

__all__ = ["builderAs"]


def builderAs(
    protocol: object, subclassOf: Callable[[type], type]
) -> Callable[[], Any] | None:
    """
    What builds the connections that a site's C{protocol} builds, as
    instances of C{subclassOf(their class)}, called as a site calls its
    C{protocol} (with no arguments).

    @param protocol: A site's C{protocol}: Twisted's default (which a site
        holds as a bound method), or a protocol class.
    @param subclassOf: Makes the subclass of a connection class.
    @return: L{None} if it cannot be known before a connection is built
        (any other callable).
    """
    if getattr(protocol, "__func__", protocol) is _genericHTTPChannelProtocolFactory:
        generic = subclassOf(_GenericHTTPChannelProtocol)

        def build() -> Any:
            return generic(HTTPChannel())

        return build
    if isinstance(protocol, type):
        return subclassOf(protocol)
    return None
