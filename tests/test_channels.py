"""
Tests for txsdnotify.web.channels: building a site's connections as
instances of a subclass from the start; and the Twisted internals it relies
on, so that a change in Twisted fails here first.
"""

from __future__ import annotations

from typing import Any

from inmemory import Root
from twisted.web.http import (
    HTTPChannel,
    _GenericHTTPChannelProtocol,
    _genericHTTPChannelProtocolFactory,
)
from twisted.web.server import Site

from txsdnotify.web.channels import builderAs


def subclass(cls: type) -> type:
    return type("Sub" + cls.__name__, (cls,), {})


def test_twistedInternalsStillThere() -> None:
    """
    A Site builds its connections with Twisted's private factory function,
    which makes an HTTP/1.1 channel behind the proxy that can switch to
    HTTP/2.
    """
    site = Site(Root())
    protocol: Any = site.protocol
    assert protocol.__func__ is _genericHTTPChannelProtocolFactory
    built = site.protocol()
    assert type(built) is _GenericHTTPChannelProtocol
    assert type(built._channel) is HTTPChannel


def test_buildsTwistedsDefaultAsSubclass() -> None:
    """
    What a site's default protocol builds, built as an instance of the
    subclass.
    """
    build = builderAs(Site(Root()).protocol, subclass)
    assert build is not None
    built = build()
    assert type(built).__name__ == "Sub_GenericHTTPChannelProtocol"
    assert isinstance(built, _GenericHTTPChannelProtocol)
    assert type(built._channel) is HTTPChannel
    assert build()._channel is not built._channel


def test_buildsAProtocolClassAsSubclass() -> None:
    """
    A protocol class is subclassed, and the subclass called as the class
    would be.
    """

    class Channel(HTTPChannel):
        pass

    build = builderAs(Channel, subclass)
    assert build is not None
    built = build()
    assert type(built).__name__ == "SubChannel" and isinstance(built, Channel)


def test_anyOtherCallableUnknown() -> None:
    """
    What another callable builds is known only once it has built it.
    """
    assert builderAs(lambda: HTTPChannel(), subclass) is None
