"""
Tests for txsdnotify.systemd.journal: priority prefixes when the output goes to the
journal, the usual format otherwise.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
from pathlib import Path

from conftest import freePort, processEnv, twistdCommand
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from txsdnotify.systemd.journal import formatForJournal, journalStream


def event(level: LogLevel, text: str, **extra: object) -> dict[str, object]:
    return {
        "log_level": level,
        "log_format": text,
        "log_namespace": "web",
        "log_time": 0,
        **extra,
    }


def test_priorities() -> None:
    assert formatForJournal(event(LogLevel.info, "hello")) == "<6>[web#info] hello\n"
    assert str(formatForJournal(event(LogLevel.warn, "careful"))).startswith("<4>")
    assert str(formatForJournal(event(LogLevel.error, "bad"))).startswith("<3>")
    assert str(formatForJournal(event(LogLevel.critical, "worse"))).startswith("<2>")
    assert str(formatForJournal(event(LogLevel.debug, "detail"))).startswith("<7>")


def test_everyTracebackLinePrefixed() -> None:
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        failure = Failure()
    text = formatForJournal(event(LogLevel.critical, "boom", log_failure=failure))
    assert text is not None
    lines = text.splitlines()
    assert len(lines) > 3
    assert all(line.startswith("<2>") for line in lines)
    assert "ZeroDivisionError" in text


def test_journalStreamMatches(tmp_path: Path) -> None:
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        status = os.fstat(err.fileno())
        value = f"{status.st_dev}:{status.st_ino}"
        assert journalStream({"JOURNAL_STREAM": value}, (err, out)) is err
        assert journalStream({"JOURNAL_STREAM": value}, (out,)) is None
        assert journalStream({}, (err, out)) is None
        assert journalStream({"JOURNAL_STREAM": "garbage"}, (err, out)) is None
        assert journalStream({"JOURNAL_STREAM": value}, (io.StringIO(),)) is None


def runTwistd(tmp_path: Path, args: list[str], journal: bool) -> str:
    out = tmp_path / f"output-{len(list(tmp_path.iterdir()))}"
    out.touch()
    status = out.stat()
    extra = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"} if journal else {}
    with open(out, "a") as stream:
        subprocess.run(
            twistdCommand() + ["-n", "--pidfile=", "sdweb", *args],
            env=processEnv(**extra),
            cwd=tmp_path,
            stdout=stream,
            stderr=subprocess.STDOUT,
            timeout=60,
        )
    return out.read_text()


def test_twistdUnderJournal(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        text = runTwistd(tmp_path, ["--port", f"tcp:{port}"], journal=True)
    lines = text.splitlines()
    assert lines[0].startswith("<6>[twisted.scripts._twistd_unix.UnixAppLogger#info]")
    assert all(line[:3] in {"<6>", "<3>", "<4>"} for line in lines), lines
    errors = [line for line in lines if line.startswith("<3>")]
    assert len(errors) == 1
    assert errors[0].endswith("Address already in use")


def test_usualFormatOtherwise(tmp_path: Path) -> None:
    text = runTwistd(tmp_path, ["--port", f"tcp:{freePort()}", "--bogus"], False)
    assert text.startswith("twistd sdweb: ")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        text = runTwistd(tmp_path, ["--port", f"tcp:{port}"], journal=False)
    assert "<6>" not in text and "<3>" not in text
    assert text.splitlines()[0][:4].isdigit()  # a timestamp


def test_logfileWins(tmp_path: Path) -> None:
    """
    With --logfile, twistd's log goes there in the usual format, even when
    the output is the journal's stream.
    """
    out = tmp_path / "output"
    out.touch()
    status = out.stat()
    log = tmp_path / "twistd.log"
    with socket.socket() as taken, open(out, "a") as stream:
        # A port in use: twistd starts, logs, and exits at once.
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        subprocess.run(
            twistdCommand()
            + ["-n", "--pidfile=", "--logfile", str(log), "sdweb"]
            + ["--port", f"tcp:{port}:interface=127.0.0.1"],
            env=processEnv(JOURNAL_STREAM=f"{status.st_dev}:{status.st_ino}"),
            cwd=tmp_path,
            stdout=stream,
            stderr=subprocess.STDOUT,
            timeout=60,
        )
    logged = log.read_text()
    assert "Address already in use" in logged
    assert "<6>" not in logged and "<3>" not in logged
    assert logged.splitlines()[0][:4].isdigit()  # a timestamp
    assert "<6>" not in out.read_text()
