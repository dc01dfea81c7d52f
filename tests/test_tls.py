"""
Real C{twistd -n sdweb} processes serving TLS, with curl (HTTP/1.1 and
HTTP/2 over ALPN) and a frame-level HTTP/2 client: the handshake, the drain
of HTTP/2 connections (GOAWAY, streams finishing, abort at the timeout) and
the one-line start-up errors of a bad C{ssl:} port.
"""

from __future__ import annotations

import datetime
import http.client
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import freePort, need, processEnv
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from hpack import Decoder
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
)

from txsdnotify.testing import NotifyReceiver
from txsdnotify.web.descriptions import splitDescription
from txsdnotify.web.tls import (
    TLSSetupError,
    credentialPaths,
    endTLSWait,
    isTLS,
    waitsForTLSClose,
)

TRACEBACK = "Traceback (most recent call last)"


def makeCertificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """
    A fresh self-signed certificate for 127.0.0.1, and its key, as PEM files.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    keyFile, certFile = directory / f"{name}.key", directory / f"{name}.crt"
    keyFile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certFile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return keyFile, certFile


@pytest.fixture
def pem(tmp_path: Path) -> tuple[Path, Path]:
    return makeCertificate(tmp_path)


def startTLS(
    twistd: Any, receiver: NotifyReceiver, pem: tuple[Path, Path], *args: str
) -> tuple[Any, int]:
    port = freePort()
    key, cert = pem
    server = twistd(
        [
            "--port",
            f"ssl:{port}:privateKey={key}:certKey={cert}:interface=127.0.0.1",
            "--class",
            "slowapp.Slow",
            "--status-interval",
            "0.1",
            *args,
        ],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    try:
        receiver.expect("READY", timeout=60)
    except AssertionError:
        raise AssertionError(server.output()) from None
    return server, port


def curlWithHTTP2() -> str:
    """
    curl, which must speak HTTP/2 (Debian's does, through nghttp2).
    """
    path = need("curl")
    features = subprocess.run(
        [path, "-V"], capture_output=True, text=True, check=True
    ).stdout
    assert "HTTP2" in features.split(), f"this curl has no HTTP/2:\n{features}"
    return path


def curl(port: int, path: str, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            curlWithHTTP2(),
            "-sS",
            "-k",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code} %{http_version}",
            *options,
            f"https://127.0.0.1:{port}{path}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_curlWithALPN(
    twistd: Any, receiver: NotifyReceiver, pem: tuple[Path, Path]
) -> None:
    """
    curl offers ALPN by default: the handshake succeeds, and picks HTTP/2 or
    HTTP/1.1 as asked.  Finished HTTP/2 connections leave the count.
    """
    server, port = startTLS(twistd, receiver, pem)
    for options, version in [((), "2"), (("--http2",), "2"), (("--http1.1",), "1.1")]:
        out, err = curl(port, "/", *options).communicate(timeout=60)
        assert out == b"fast\n\n200 " + version.encode(), err
    receiver.expect(
        lambda m: (
            "Total requests: 3; In flight: 0; Connections: 0;" in m.get("STATUS", "")
        ),
        timeout=10,
    )
    server.process.send_signal(signal.SIGTERM)
    assert server.wait() == -signal.SIGTERM
    assert TRACEBACK not in server.output()


def test_h2StreamFinishesAfterGoAway(
    twistd: Any, receiver: NotifyReceiver, pem: tuple[Path, Path]
) -> None:
    """
    SIGTERM while curl waits on an HTTP/2 stream: curl hears GOAWAY, the
    response arrives whole, the server exits cleanly once it has.
    """
    server, port = startTLS(twistd, receiver, pem)
    client = curl(port, "/slow?s=2", "--http2", "-v")
    receiver.expect(lambda m: "In flight: 1;" in m.get("STATUS", ""), timeout=20)
    server.process.send_signal(signal.SIGTERM)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert out == b"slow done\n\n200 2"
    assert b"GOAWAY" in err
    assert server.wait() == -signal.SIGTERM
    assert TRACEBACK not in server.output()
    assert receiver.values("STATUS")[-1].startswith("Stopped: 1 request(s) served")


def test_h2AbortAtDrainTimeout(
    twistd: Any, receiver: NotifyReceiver, pem: tuple[Path, Path]
) -> None:
    """
    An HTTP/2 stream still running at the drain timeout is aborted, and the
    process exits then; an HTTP/2 connection that ended before counts for
    nothing.
    """
    server, port = startTLS(twistd, receiver, pem, "--drain-timeout", "1")
    assert curl(port, "/", "--http2").communicate(timeout=60)[0] == b"fast\n\n200 2"
    client = curl(port, "/slow?s=60", "--http2")
    receiver.expect(lambda m: "In flight: 1;" in m.get("STATUS", ""), timeout=20)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == -signal.SIGTERM
    assert time.monotonic() - signalled < 1 + 6
    client.communicate(timeout=30)
    assert client.returncode != 0
    log = server.output()
    assert TRACEBACK not in log
    # The fast request was served; the aborted one was not.
    last = receiver.values("STATUS")[-1]
    assert last.startswith("Stopped: 1 request(s) served;"), last
    assert last.endswith(", 1 aborted")


class H2Client:
    """
    A frame-level HTTP/2 client over TLS.  The C{h2} library, as a client,
    stops at the first GOAWAY, so the frames it receives are read here.
    """

    def __init__(self, port: int) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock = context.wrap_socket(raw)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = H2Connection(H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.buffer = b""
        self.headers = Decoder()

    def get(self, path: str, stream: int = 1) -> None:
        self.conn.send_headers(
            stream,
            [
                (":method", "GET"),
                (":path", path),
                (":scheme", "https"),
                (":authority", "127.0.0.1"),
            ],
            end_stream=True,
        )
        self.sock.sendall(self.conn.data_to_send())

    def frames(self, until: type | None = None) -> list[Any]:
        """
        Every frame until the server closes the connection; then close our
        end too, as a client does.  With C{until}, only until a frame of
        that type has come, and the connection stays open.
        """
        frames: list[Any] = []
        while True:
            while len(self.buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
                if len(self.buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
                self.buffer = self.buffer[9 + length :]
                if isinstance(frame, HeadersFrame):
                    # An attribute of ours on hyperframe's frame.
                    frame.decoded = dict(  # type: ignore[attr-defined]
                        self.headers.decode(frame.data)
                    )
                frames.append(frame)
                if until is not None and isinstance(frame, until):
                    return frames
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLEOFError, ConnectionResetError):
                data = b""
            if not data:
                self.sock.close()
                return frames
            self.buffer += data


def test_h2GoAwayBeforeResponse(
    twistd: Any, receiver: NotifyReceiver, pem: tuple[Path, Path]
) -> None:
    """
    The GOAWAY goes out when the drain starts, naming the stream in flight as
    the last one served; that stream's response follows, then a closing
    GOAWAY, then the connection closes.  An idle HTTP/2 connection is told
    GOAWAY and closed at once, not after the grace.
    """
    server, port = startTLS(twistd, receiver, pem)
    busy, idle = H2Client(port), H2Client(port)
    busy.get("/slow?s=2")
    receiver.expect(lambda m: "In flight: 1;" in m.get("STATUS", ""), timeout=20)
    server.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    idleFrames = idle.frames()
    assert time.monotonic() - started < 1.5  # the grace is 2 s
    goAways = [f for f in idleFrames if isinstance(f, GoAwayFrame)]
    assert [(f.last_stream_id, f.error_code) for f in goAways][:1] == [(0, 0)]

    frames: list[Any] = [
        f
        for f in busy.frames()
        if isinstance(f, (GoAwayFrame, HeadersFrame, DataFrame)) and f.stream_id < 2
    ]
    kinds = [type(f).__name__ for f in frames]
    assert kinds[0] == "GoAwayFrame" and kinds[-1] == "GoAwayFrame", kinds
    assert frames[0].last_stream_id == 1 and frames[0].error_code == 0
    response = frames[1:-1]
    assert response[0].decoded[":status"] == "200"
    assert b"".join(f.data for f in response if isinstance(f, DataFrame)) == (
        b"slow done\n"
    )
    assert "END_STREAM" in response[-1].flags
    assert server.wait() == -signal.SIGTERM
    assert TRACEBACK not in server.output()


def test_h2StreamAfterGoAwayRefused(
    twistd: Any, receiver: NotifyReceiver, pem: tuple[Path, Path]
) -> None:
    """
    A stream opened on a draining HTTP/2 connection after the server's
    GOAWAY (above its last-stream-id) is reset with REFUSED_STREAM, not
    served; the stream in flight gets its answer.
    """
    server, port = startTLS(twistd, receiver, pem)
    client = H2Client(port)
    client.get("/slow?s=2")
    receiver.expect(lambda m: "In flight: 1;" in m.get("STATUS", ""), timeout=20)
    server.process.send_signal(signal.SIGTERM)
    early = client.frames(until=GoAwayFrame)
    client.get("/", stream=3)
    late = client.frames()
    resets = [
        (f.stream_id, f.error_code) for f in late if isinstance(f, RstStreamFrame)
    ]
    assert resets == [(3, ErrorCodes.REFUSED_STREAM)]
    answered = {f.stream_id for f in early + late if isinstance(f, HeadersFrame)}
    assert answered == {1}
    assert b"".join(f.data for f in late if isinstance(f, DataFrame)) == (
        b"slow done\n"
    )
    assert server.wait() == -signal.SIGTERM
    assert receiver.values("STATUS")[-1].startswith("Stopped: 1 request(s) served")


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.parametrize("workers", [1, 2])
def test_silentTLSClientsDoNotHoldTheStop(
    twistd: Any, receiver: NotifyReceiver, pem: tuple[Path, Path], workers: int
) -> None:
    """
    TLS clients that never answer close_notify nor close: an idle
    keep-alive C{http.client.HTTPSConnection}, a client idle after its
    handshake, an idle HTTP/2 connection, a request in flight whose client
    keeps its socket.  With --drain-timeout 30 the stop takes under 5 s
    (the grace, 2 s, for their close_notify), not the 30 s: in one process
    and with --workers 2 (each worker adds the TLS).
    """
    server, port = startTLS(
        twistd, receiver, pem, "--drain-timeout", "30", "--workers", str(workers)
    )
    keepAlive = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=60, context=unverified()
    )
    keepAlive.request("GET", "/")
    assert keepAlive.getresponse().read() == b"fast\n"
    handshaken = unverified().wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=60)
    )
    idleH2 = H2Client(port)
    busy = unverified().wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=60)
    )
    busy.sendall(b"GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    receiver.expect(
        lambda m: (
            "In flight: 1; Connections: 4;" in m.get("STATUS", "")
            or "; 1 in flight; 4 conn;" in m.get("STATUS", "")
        ),
        timeout=20,
    )
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == -signal.SIGTERM
    assert time.monotonic() - signalled < 5
    assert TRACEBACK not in server.output()
    final = receiver.values("STATUS")[-1]
    assert final.startswith("Stopped: 2 request(s) served"), final
    assert "aborted" not in final
    for sock in (keepAlive.sock, handshaken, idleH2.sock, busy):
        sock.close()


def encryptedKey(directory: Path) -> tuple[Path, Path]:
    key, cert = makeCertificate(directory, "locked")
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    key.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return key, cert


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing-key", "cannot read TLS key file {dir}/nokey.pem: No such file"),
        ("missing-cert", "cannot read TLS certificate file {dir}/nocert.pem: No such"),
        ("mismatch", "TLS certificate {dir}/other.crt does not go with the key"),
        ("garbage-key", "TLS key file {dir}/garbage.pem holds no PEM private key"),
        ("garbage-cert", "TLS certificate file {dir}/garbage.pem holds no PEM"),
        ("encrypted", "TLS key file {dir}/locked.key is protected by a passphrase"),
        ("method", "unknown sslmethod 'NOPE'"),
    ],
)
def test_badTLSPortOneLine(
    twistd: Any, tmp_path: Path, pem: tuple[Path, Path], case: str, words: str
) -> None:
    key, cert = pem
    (tmp_path / "garbage.pem").write_text("not a PEM file\n")
    options = {
        "missing-key": f"privateKey={tmp_path}/nokey.pem:certKey={cert}",
        "missing-cert": f"privateKey={key}:certKey={tmp_path}/nocert.pem",
        "mismatch": f"privateKey={key}:certKey={makeCertificate(tmp_path, 'other')[1]}",
        "garbage-key": f"privateKey={tmp_path}/garbage.pem:certKey={cert}",
        "garbage-cert": f"privateKey={key}:certKey={tmp_path}/garbage.pem",
        "encrypted": "privateKey={}:certKey={}".format(*encryptedKey(tmp_path)),
        "method": f"privateKey={key}:certKey={cert}:sslmethod=NOPE",
    }[case]
    server = twistd(["--port", f"ssl:{freePort()}:{options}"])
    assert server.wait(timeout=30) == 1
    lines = server.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("twistd sdweb: " + words.format(dir=tmp_path)), lines


def test_noPyOpenSSLOneLine(
    twistd: Any, tmp_path: Path, pem: tuple[Path, Path]
) -> None:
    """
    Without pyOpenSSL (an C{OpenSSL} package that cannot be imported stands
    in for it), an C{ssl:} port is refused in one line that says what to
    install.
    """
    fake = tmp_path / "nossl" / "OpenSSL"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'OpenSSL'\", name='OpenSSL')\n"
    )
    env = processEnv()
    env["PYTHONPATH"] = f"{fake.parent}:{env['PYTHONPATH']}"
    key, cert = pem
    server = twistd(
        ["--port", f"ssl:{freePort()}:privateKey={key}:certKey={cert}"], env
    )
    assert server.wait(timeout=30) == 1
    lines = server.output().strip().splitlines()
    assert lines == [
        "twistd sdweb: ssl: needs pyOpenSSL: pip install 'txsdnotify[tls]'"
    ]


# -- keys as systemd credentials ------------------------------------------------


def credentials(tmp_path: Path) -> Path:
    """
    A credentials directory, as systemd makes one for LoadCredential=, at
    a path with a colon (escaped in a description).
    """
    directory = tmp_path / "credentials:site"
    directory.mkdir()
    makeCertificate(directory, "tls")
    return directory


@pytest.mark.parametrize(
    "description",
    [
        "ssl:443:privateKey=tls.key:certKey=tls.crt",
        "ssl:443:tls.key:tls.crt",
        "ssl:port=443:certKey=tls.crt:privateKey=tls.key:interface=127.0.0.1",
    ],
)
def test_credentialPaths(tmp_path: Path, description: str) -> None:
    """
    Relative key and certificate files are taken from
    $CREDENTIALS_DIRECTORY (escaped for the description); the rest is left
    as it was.
    """
    directory = credentials(tmp_path)
    escaped = str(directory).replace(":", "\\:")
    resolved = credentialPaths(description, {"CREDENTIALS_DIRECTORY": str(directory)})
    expected = description.replace("tls.key", f"{escaped}/tls.key").replace(
        "tls.crt", f"{escaped}/tls.crt"
    )
    assert resolved == expected
    kind, positional, options = splitDescription(resolved)
    files = set(options.values()) | set(positional)
    assert {str(directory / "tls.key"), str(directory / "tls.crt")} <= files


@pytest.mark.parametrize(
    ("description", "environ"),
    [
        ("ssl:443:privateKey=/etc/k.pem:certKey=/etc/c.pem", True),
        ("tcp:443:interface=tls.key", True),
        ("ssl:443", True),
    ],
)
def test_credentialPathsUnchanged(
    tmp_path: Path, description: str, environ: bool
) -> None:
    """
    Absolute paths, descriptions without files, other kinds of port, and
    everything outside a unit with credentials are left alone.
    """
    env = {"CREDENTIALS_DIRECTORY": str(credentials(tmp_path))} if environ else {}
    assert credentialPaths(description, env) == description


def test_credentialPathsWorkingDirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A relative file that is no credential but is in the working directory
    stays relative to it.
    """
    directory = credentials(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local.pem").write_text("x")
    description = "ssl:443:privateKey=local.pem:certKey=tls.crt"
    assert credentialPaths(
        description, {"CREDENTIALS_DIRECTORY": str(directory)}
    ) == description.replace("tls.crt", str(directory).replace(":", "\\:") + "/tls.crt")


def test_credentialMissing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A relative file found neither among the credentials nor in the working
    directory: one line naming the credential and the LoadCredential= line
    the unit needs.
    """
    monkeypatch.chdir(tmp_path)
    directory = credentials(tmp_path)
    with pytest.raises(TLSSetupError) as raised:
        credentialPaths(
            "ssl:443:privateKey=site.key:certKey=tls.crt",
            {"CREDENTIALS_DIRECTORY": str(directory)},
        )
    assert str(raised.value) == (
        f"TLS key credential 'site.key' is missing from $CREDENTIALS_DIRECTORY"
        f" ({directory}): the unit needs LoadCredential=site.key:/path/of/the/file"
    )
    with pytest.raises(TLSSetupError) as raised:
        credentialPaths("ssl:443:privateKey=site.key:certKey=tls.crt", {})
    assert str(raised.value) == (
        "TLS key file site.key: no such file, and no credentials"
        " ($CREDENTIALS_DIRECTORY is not set; a unit hands one over with"
        " LoadCredential=site.key:/path/of/the/file)"
    )


def test_twistdServesCredentials(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    twistd sdweb under a unit with credentials: --port names the key and
    certificate by their credential names, and HTTPS with ALPN works; a
    missing credential ends start-up with one line.
    """
    directory = credentials(tmp_path)
    port = freePort()
    env = processEnv(NOTIFY_SOCKET=receiver.path, CREDENTIALS_DIRECTORY=str(directory))
    server = twistd(
        [
            "--port",
            f"ssl:{port}:privateKey=tls.key:certKey=tls.crt:interface=127.0.0.1",
            "--class",
            "slowapp.Slow",
        ],
        env,
    )
    receiver.expect("READY", timeout=30)
    out, err = curl(port, "/").communicate(timeout=60)
    assert out == b"fast\n\n200 2", err
    server.process.send_signal(signal.SIGTERM)
    assert server.wait() == -signal.SIGTERM

    missing = twistd(
        ["--port", f"ssl:{freePort()}:privateKey=gone.key:certKey=tls.crt"],
        processEnv(CREDENTIALS_DIRECTORY=str(directory)),
    )
    assert missing.wait(timeout=30) == 1
    assert missing.output().strip().splitlines() == [
        f"twistd sdweb: TLS key credential 'gone.key' is missing from"
        f" $CREDENTIALS_DIRECTORY ({directory}): the unit needs"
        " LoadCredential=gone.key:/path/of/the/file"
    ]


def test_tlsLayerInternalsStillThere(pem: tuple[Path, Path]) -> None:
    """
    What txsdnotify.web.tls reads of Twisted's TLS layer (its producer and
    its buffer of application data), so that a change in Twisted fails here
    first; and what it does with them.
    """
    from twisted.internet.address import IPv4Address
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.ssl import DefaultOpenSSLContextFactory
    from twisted.internet.testing import StringTransport
    from twisted.protocols.tls import TLSMemoryBIOFactory

    key, cert = pem
    factory = TLSMemoryBIOFactory(
        DefaultOpenSSLContextFactory(str(key), str(cert)),
        False,
        Factory.forProtocol(Protocol),
    )
    tls: Any = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    under = StringTransport()
    tls.makeConnection(under)
    assert isTLS(tls) and not isTLS(under)
    assert tls._producer is None and tls._appSendBuffer == []
    assert tls.connected and not tls.disconnecting
    assert not waitsForTLSClose(tls)
    # What loseConnection sets once the handshake is done and all is sent.
    tls.disconnecting = True
    assert waitsForTLSClose(tls)
    tls._appSendBuffer.append(b"pending")
    assert not waitsForTLSClose(tls)
    tls._appSendBuffer.clear()
    endTLSWait(tls)
    assert under.disconnecting


@pytest.mark.parametrize(
    "description, plain",
    [
        ("ssl:443:privateKey=k.pem:certKey=c.pem", "tcp:443"),
        ("ssl:port=8443:privateKey=k.pem:certKey=c.pem", "tcp:8443"),
        (
            "ssl:0:privateKey=k.pem:interface=127.0.0.1:backlog=10",
            "tcp:0:interface=127.0.0.1:backlog=10",
        ),
        (
            "ssl:0:k.pem:c.pem:TLS_METHOD:\\:\\:1:100",
            "tcp:0:interface=\\:\\:1:backlog=100",
        ),
        ("tcp:80", "tcp:80"),
    ],
)
def test_plainDescription(description: str, plain: str) -> None:
    """
    The TCP port under an C{ssl:} port, as the master of C{--workers} binds
    it: same port, interface and backlog.
    """
    from txsdnotify.web.tls import plainDescription

    assert plainDescription(description) == plain


def test_serverContextServes(pem: tuple[Path, Path]) -> None:
    """
    The context built for a worker holds the port's certificate and key.
    """
    from OpenSSL import SSL

    from txsdnotify.web.tls import serverContext

    key, cert = pem
    options = serverContext(f"ssl:0:privateKey={key}:certKey={cert}")
    context = options.getContext()
    assert isinstance(context, SSL.Context)
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    assert options.certificate.digest("sha256").replace(b":", b"").lower() == (
        loaded.fingerprint(hashes.SHA256()).hex().encode()
    )
