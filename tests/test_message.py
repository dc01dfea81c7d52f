"""
Tests for txsdnotify.systemd.message: datagram building and NOTIFY_SOCKET parsing.
"""

from __future__ import annotations

import pytest

from txsdnotify.systemd.message import (
    MAX_DATAGRAM,
    NotifyAddressError,
    formatMessage,
    parseAddress,
    sanitizeStatus,
)
from txsdnotify.testing import parseMessage


class TestParseAddress:
    def test_absolutePath(self) -> None:
        assert parseAddress("/run/systemd/notify") == "/run/systemd/notify"

    def test_abstract(self) -> None:
        assert parseAddress("@/org/freedesktop/systemd1/notify/123") == (
            b"\0/org/freedesktop/systemd1/notify/123"
        )

    @pytest.mark.parametrize(
        "value, words",
        [
            ("", "empty"),
            ("relative/notify", "neither an absolute path"),
            ("notify", "neither an absolute path"),
            ("/" + "x" * 107, "too long"),
            ("@" + "x" * 108, "too long"),
            ("vsock:2:1234", "vsock"),
        ],
    )
    def test_refused(self, value: str, words: str) -> None:
        with pytest.raises(NotifyAddressError, match=words):
            parseAddress(value)

    def test_longestPath(self) -> None:
        value = "/" + "x" * 106
        assert parseAddress(value) == value

    def test_longestAbstract(self) -> None:
        assert parseAddress("@" + "x" * 107) == b"\0" + b"x" * 107


class TestFormatMessage:
    def test_fieldsInOrder(self) -> None:
        assert formatMessage({"READY": 1, "STATUS": "up", "MAINPID": 42}) == (
            b"READY=1\nSTATUS=up\nMAINPID=42"
        )

    def test_booleans(self) -> None:
        assert formatMessage({"READY": True}) == b"READY=1"
        assert formatMessage({"X_OFF": False}) == b"X_OFF=0"

    def test_numbersAsWritten(self) -> None:
        """
        Only booleans become 1 and 0: numbers equal to them keep their form.
        """
        assert formatMessage({"X_A": 1.0, "X_B": 0.0, "X_C": 0}) == (
            b"X_A=1.0\nX_B=0.0\nX_C=0"
        )

    def test_emptyStatusClears(self) -> None:
        assert formatMessage({"STATUS": ""}) == b"STATUS="

    @pytest.mark.parametrize("key", ["ready", "READY=1", "", "STA TUS", "X-Y", "É"])
    def test_badKey(self, key: str) -> None:
        with pytest.raises(ValueError, match="bad notification key"):
            formatMessage({key: "1"})

    @pytest.mark.parametrize(
        "status",
        [
            "ok\nREADY=1",
            "ok\rMAINPID=1",
            "ok\0READY=1",
            "\nMAINPID=1\nSTOPPING=1",
        ],
    )
    def test_hostileStatusCannotInject(self, status: str) -> None:
        with pytest.raises(ValueError, match="line break or NUL"):
            formatMessage({"STATUS": status})

    def test_noFields(self) -> None:
        with pytest.raises(ValueError):
            formatMessage({})

    def test_longStatusShortened(self) -> None:
        data = formatMessage({"READY": 1, "STATUS": "x" * 10000})
        assert len(data) == MAX_DATAGRAM  # as much of the status as fits
        message = parseMessage(data)
        assert message["READY"] == "1"
        assert message["STATUS"].startswith("xxx")
        assert message["STATUS"].endswith("\N{HORIZONTAL ELLIPSIS}")

    @pytest.mark.parametrize("length", [4090, 5000, 8200, 20000])
    def test_shortenedToTheLimit(self, length: int) -> None:
        """
        However much too long, a status is cut to fill the datagram exactly.
        """
        assert len(formatMessage({"STATUS": "x" * length})) == MAX_DATAGRAM

    @pytest.mark.parametrize("char", ["é", "€", "😀"])
    def test_shortenedOnCharacterBoundary(self, char: str) -> None:
        for extra in range(4):
            data = formatMessage({"STATUS": "a" * extra + char * 3000})
            assert len(data) <= MAX_DATAGRAM
            text = data.decode("utf-8")  # raises if cut inside a character
            assert text.startswith("STATUS=")

    def test_statusThatFitsIsKept(self) -> None:
        status = "y" * (MAX_DATAGRAM - len("STATUS="))
        assert formatMessage({"STATUS": status}) == b"STATUS=" + status.encode()

    def test_tooLongWithoutStatus(self) -> None:
        with pytest.raises(ValueError, match="more than"):
            formatMessage({"X_BIG": "z" * 5000})

    def test_tooLongEvenWithoutTheStatus(self) -> None:
        with pytest.raises(ValueError, match="even without its status"):
            formatMessage({"X_BIG": "z" * 5000, "STATUS": "s"})

    def test_theLimitIsPipeBuf(self) -> None:
        assert len(formatMessage({"X_BIG": "z" * 4090})) == 4096
        with pytest.raises(ValueError, match="4097 bytes, more than 4096"):
            formatMessage({"X_BIG": "z" * 4091})

    @pytest.mark.parametrize(
        "big, status",
        [
            (4078, "s\N{HORIZONTAL ELLIPSIS}"),  # room for one character
            (4079, ""),  # for the ellipsis alone: emptied
            (4080, ""),  # not even for the ellipsis
            (4082, ""),
        ],
    )
    def test_statusCrowdedOut(self, big: int, status: str) -> None:
        """
        Other fields leave the status little room: what is left of it.
        """
        data = formatMessage({"X_BIG": "z" * big, "STATUS": "s" * 100})
        assert parseMessage(data)["STATUS"] == status
        assert len(data) <= MAX_DATAGRAM


def test_sanitizeStatus() -> None:
    assert sanitizeStatus("bad\nthing\0 happened\r\n  twice") == (
        "bad thing happened twice"
    )
    formatMessage({"STATUS": sanitizeStatus("a\nREADY=1")})
