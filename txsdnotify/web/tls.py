# -*- test-case-name: tests.test_tls -*-
"""
TLS ports: checking an C{ssl:} port before start-up, and ending a TLS
connection whose peer does not answer C{close_notify}.

L{checkTLS} says what is wrong with a port in one line rather than in a
traceback from deep inside Twisted: no pyOpenSSL, a key or certificate file
that cannot be read or is not PEM, an encrypted key (nobody can type its
passphrase under systemd), a certificate that does not go with the key, an
unknown C{sslmethod}.

Closing a TLS connection sends C{close_notify}, and Twisted's TLS layer then
waits for the peer's before it closes the TCP connection: a client that
stays silent holds it open.  L{waitsForTLSClose} tells such a connection,
and L{endTLSWait} closes the TCP connection under it (what was written still
goes out first).  The Twisted internals this reads
(C{TLSMemoryBIOProtocol._producer}, C{._appSendBuffer}) are read only here;
C{tests/test_tls.py} fails if Twisted changes them.

With C{--workers}, the master binds an C{ssl:} port as the plain TCP socket
of L{plainDescription} and each worker serves what it accepts there in TLS:
L{TLSServerEndpoint} around the inherited socket, with the key and
certificate of L{serverContext}, as Twisted's own C{listenSSL} does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

from txsdnotify.web.descriptions import splitDescription

__all__ = [
    "TLSServerEndpoint",
    "TLSSetupError",
    "checkTLS",
    "credentialPaths",
    "endTLSWait",
    "isSSLPort",
    "isTLS",
    "plainDescription",
    "serverContext",
    "waitsForTLSClose",
]

_TLSLayer: type | None
try:
    from twisted.protocols.tls import TLSMemoryBIOProtocol as _TLSLayer
except ImportError:  # no pyOpenSSL: no TLS connections either
    _TLSLayer = None

INSTALL_HINT = "ssl: needs pyOpenSSL: pip install 'txsdnotify[tls]'"

# The positional arguments of Twisted's ssl: parser, after the port.
_SSL_POSITIONAL = (
    "privateKey",
    "certKey",
    "sslmethod",
    "interface",
    "backlog",
    "extraCertChain",
    "dhParameters",
)


# The options of an ssl: port naming files, and what they hold.
_FILES = {
    "privateKey": "key",
    "certKey": "certificate",
    "extraCertChain": "certificate chain",
    "dhParameters": "DH parameters",
}
_SEPARATOR = re.compile(r"(?<!\\):")
_UNESCAPE = re.compile(r"\\(.)")


class TLSSetupError(Exception):
    """
    An C{ssl:} port cannot serve; the message says why, in one line.
    """


def checkTLS(description: str) -> None:
    """
    Check the C{ssl:} strports description C{description} (any other kind
    passes) as far as can be done before listening.

    @raise TLSSetupError: What is wrong with it.
    """
    kind, positional, options = splitDescription(description)
    if kind != "ssl":
        return
    for name, value in zip(_SSL_POSITIONAL, positional[1:]):
        options.setdefault(name, value)
    try:
        from OpenSSL import SSL, crypto
        from twisted.internet import ssl
    except ImportError:
        raise TLSSetupError(INSTALL_HINT) from None
    keyFile = options.get("privateKey", "server.pem")
    certFile = options.get("certKey", keyFile)
    keyPEM = _read(keyFile, "key")
    certPEM = _read(certFile, "certificate")
    for option, what in (
        ("extraCertChain", "certificate chain"),
        ("dhParameters", "DH parameters"),
    ):
        if option in options:
            _read(options[option], what)
    if b"ENCRYPTED" in keyPEM:
        raise TLSSetupError(
            f"TLS key file {keyFile} is protected by a passphrase, which nobody"
            f" can type at start-up: store it decrypted"
            f" (openssl pkey -in {keyFile} -out plain.pem)"
        )
    try:
        certificate = ssl.Certificate.loadPEM(certPEM)
    except crypto.Error as e:
        raise TLSSetupError(
            f"TLS certificate file {certFile} holds no PEM certificate ({_reason(e)})"
        ) from None
    try:
        key = ssl.KeyPair.load(keyPEM, crypto.FILETYPE_PEM)
    except crypto.Error as e:
        raise TLSSetupError(
            f"TLS key file {keyFile} holds no PEM private key ({_reason(e)})"
        ) from None
    if not certificate.getPublicKey().matches(key):
        raise TLSSetupError(
            f"TLS certificate {certFile} does not go with the key {keyFile}"
        )
    method = options.get("sslmethod")
    if method is not None and not (method.endswith("_METHOD") and hasattr(SSL, method)):
        raise TLSSetupError(f"unknown sslmethod {method!r} (e.g. TLS_METHOD)")


def credentialPaths(description: str, environ: Mapping[str, str]) -> str:
    """
    C{description} with each key or certificate file of an C{ssl:} port
    that is given as a relative path taken from systemd's credentials
    (C{$CREDENTIALS_DIRECTORY}, C{LoadCredential=NAME:PATH}): a file of
    that name there, else in the working directory.

    @raise TLSSetupError: If such a file is in neither place.
    """
    fields = _SEPARATOR.split(description)
    if fields[0].lower() != "ssl":
        return description
    directory = environ.get("CREDENTIALS_DIRECTORY")
    positional = 0
    for i, field in enumerate(fields[1:], 1):
        name, equals, value = field.partition("=")
        if equals and not name.endswith("\\"):
            option = _UNESCAPE.sub(r"\1", name)
        else:
            # The first positional field is the port.
            option = _SSL_POSITIONAL[positional - 1] if positional else ""
            value = field
            positional += 1
        if option not in _FILES:
            continue
        path = _UNESCAPE.sub(r"\1", value)
        found = _credential(path, _FILES[option], directory)
        if found != path:
            escaped = re.sub(r"([\\:=])", r"\\\1", found)
            fields[i] = f"{name}={escaped}" if equals else escaped
    return ":".join(fields)


def _credential(path: str, what: str, directory: str | None) -> str:
    if os.path.isabs(path) or not path:
        return path
    if directory is not None and os.path.exists(os.path.join(directory, path)):
        return os.path.join(directory, path)
    if os.path.exists(path):
        return path
    needs = f"LoadCredential={path}:/path/of/the/file"
    if directory is None:
        raise TLSSetupError(
            f"TLS {what} file {path}: no such file, and no credentials"
            f" ($CREDENTIALS_DIRECTORY is not set; a unit hands one over with"
            f" {needs})"
        )
    raise TLSSetupError(
        f"TLS {what} credential {path!r} is missing from $CREDENTIALS_DIRECTORY"
        f" ({directory}): the unit needs {needs}"
    )


def isSSLPort(description: str) -> bool:
    """
    Whether C{description} is an C{ssl:} port.
    """
    return splitDescription(description)[0] == "ssl"


def _sslOptions(description: str) -> dict[str, str]:
    _, positional, options = splitDescription(description)
    for name, value in zip(("port", *_SSL_POSITIONAL), positional):
        options.setdefault(name, value)
    return options


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def plainDescription(description: str) -> str:
    """
    The TCP port under the C{ssl:} port C{description}: the same port,
    interface and backlog, no TLS (C{ssl:443:privateKey=k.pem} is
    C{tcp:443}).  Any other description is returned as it is.
    """
    if not isSSLPort(description):
        return description
    options = _sslOptions(description)
    plain = f"tcp:{_escape(options.get('port', ''))}"
    for name in ("interface", "backlog"):
        if name in options:
            plain += f":{name}={_escape(options[name])}"
    return plain


_PEM_CERTIFICATE = re.compile(
    rb"(-----BEGIN CERTIFICATE-----\n.+?\n-----END CERTIFICATE-----)", re.DOTALL
)


def serverContext(description: str) -> Any:
    """
    The TLS context of the C{ssl:} port C{description}, built as Twisted
    builds it for C{listenSSL} (key, certificate, C{sslmethod},
    C{extraCertChain}, C{dhParameters}).  Check the description with
    L{checkTLS} first: this raises whatever OpenSSL raises.

    @return: A L{twisted.internet.ssl.CertificateOptions}.
    """
    from OpenSSL import SSL
    from twisted.internet import ssl

    options = _sslOptions(description)
    keyFile = options.get("privateKey", "server.pem")
    certFile = options.get("certKey", keyFile)
    certificate = ssl.PrivateCertificate.loadPEM(
        _read(certFile, "certificate") + b"\n" + _read(keyFile, "key")
    )
    extra: dict[str, Any] = {}
    if "sslmethod" in options:
        extra["method"] = getattr(SSL, options["sslmethod"])
    if "extraCertChain" in options:
        chain = _read(options["extraCertChain"], "certificate chain")
        extra["extraCertChain"] = [
            ssl.Certificate.loadPEM(pem).original
            for pem in _PEM_CERTIFICATE.findall(chain)
        ]
    if "dhParameters" in options:
        from twisted.python.filepath import FilePath

        extra["dhParameters"] = ssl.DiffieHellmanParameters.fromFile(
            FilePath(options["dhParameters"])
        )
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        **extra,
    )


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    Listens on another endpoint (a socket a worker inherited) and serves
    every connection it accepts in TLS, as C{listenSSL} does: ALPN offers
    what the factory's C{acceptableProtocols()} names.
    """

    def __init__(self, wrapped: IStreamServerEndpoint, contextFactory: Any) -> None:
        self.wrapped = wrapped
        self.contextFactory = contextFactory

    def listen(self, factory: IProtocolFactory) -> Any:
        """
        Listen on the wrapped endpoint with C{factory} behind TLS.

        @return: A L{Deferred} firing with the L{IListeningPort}.
        """
        # Imported here: without pyOpenSSL, importing it fails.
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self.wrapped.listen(
            TLSMemoryBIOFactory(self.contextFactory, False, factory)
        )

    def __repr__(self) -> str:
        return f"{self.wrapped!r} in TLS"


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSSetupError(
            f"cannot read TLS {what} file {path}: {e.strerror}"
        ) from None


def _reason(error: Exception) -> str:
    """
    The last reason in an OpenSSL error, in words.
    """
    details = error.args[0] if error.args else None
    if isinstance(details, list) and details:
        return str(details[-1][-1])
    return str(error)


def isTLS(transport: object) -> bool:
    """
    Whether C{transport} (a connection's transport) is Twisted's TLS layer.
    """
    return _TLSLayer is not None and isinstance(transport, _TLSLayer)


def waitsForTLSClose(transport: Any) -> bool:
    """
    Whether C{transport} is a TLS layer that is closing, has sent (or is
    sending) its C{close_notify} with nothing of the application's left to
    send, and still waits for the peer's answer.
    """
    return (
        isTLS(transport)
        and transport.disconnecting
        and transport.connected
        and transport._producer is None
        and not transport._appSendBuffer
    )


def endTLSWait(transport: Any) -> None:
    """
    Stop waiting for the peer's C{close_notify}: close the TCP connection
    under the TLS layer C{transport}, once what is buffered has gone out.
    """
    under = getattr(transport, "transport", None)
    if under is not None:
        under.loseConnection()
