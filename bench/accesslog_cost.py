"""
What one access log line costs, measured in-process: the line as a site
writes it, through Twisted's logging, formatted and written to a file by
twistd's observer, as C{twistd -n sdweb} does without C{--logfile}.

Variants, interleaved (A B C ... C B A) over several rounds, each writing
the same combined-format line to its own file in a temporary directory:

  - A: before: the line written to C{twisted.python.log.logfile} (what
    Twisted's Site does without a log path), observed by twistd's
    C{textFileLogObserver};
  - B: the line written to sdweb's C{TwistdLog} (the same event, emitted
    directly), observed by twistd's C{textFileLogObserver}: what twistd's
    own C{--logfile} or a daemon's C{twistd.log} gets;
  - C: C{TwistdLog}, observed by sdweb's C{textObserver}: what
    C{twistd -n sdweb} does by default now;
  - D: C{TwistdLog}, observed by sdweb's journal observer (C{<6>} prefixes,
    under systemd);
  - E: sdweb's C{--logfile FILE} (the line appended to the file), for
    reference;
  - F: as C, but never flushed (the file's buffer writes 8 KiB at a time):
    the most that batching the lines of a reactor turn could save.

Every file is checked afterwards: A, B and C must hold the same lines but
for their timestamps' seconds.

    python bench/accesslog_cost.py [--rounds 7] [--lines 5000] [--out FILE]
    python bench/accesslog_cost.py --profile A   # cProfile of one variant

Instructions per line: C{--only KEY --lines N} writes N lines with one
variant (A to E) or runs one stage of A N times, nothing else; run it under
callgrind for two N and divide the difference:

    PYTHONHASHSEED=0 valgrind --tool=callgrind python bench/accesslog_cost.py \
        --only A --lines 1000        # and --lines 3000

The stages of A (of twistd's observer, on the event A emits): C{A-emit}
(the line written to C{log.logfile} with no observer: the event made and
published), C{A-observer} (twistd's observer: formatted, written, flushed),
C{A-time} (C{formatTime}), C{A-message} (C{formatEvent}: C{"{log_io}"}
through L{string.Formatter}), C{A-system} (the namespace and level),
C{A-write} (the formatted line written and flushed); and C{C-observer}
(sdweb's observer on the same event).  C{none} is the loop alone.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    formatEvent,
    formatTime,
    globalLogBeginner,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.logger._format import _formatSystem
from twisted.python import log

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import addOutArgument, markdownTable, versionLine, writeOut  # noqa: E402

from txsdnotify.systemd.journal import journalObserver  # noqa: E402
from txsdnotify.systemd.logtext import textObserver  # noqa: E402
from txsdnotify.web.accesslog import TWISTD_LOG, openAccessLog  # noqa: E402

LINE = (
    '"127.0.0.1" - - [02/Dec/2026:10:27:07 +0000] "GET /index.html?page=2'
    ' HTTP/1.1" 200 16 "http://example.com/" "Mozilla/5.0 (X11; Linux x86_64)"\n'
)


class Variant:
    """
    One way of writing an access line: C{write(line)} with C{observer}
    (if any) listening to Twisted's log.
    """

    def __init__(
        self,
        key: str,
        title: str,
        write: Callable[[str], object],
        observer: ILogObserver | None,
        path: Path,
    ) -> None:
        self.key = key
        self.title = title
        self.write = write
        self.observer = observer
        self.path = path
        self.perLine: list[float] = []

    def run(self, lines: int) -> float:
        """
        Write C{lines} lines; seconds per line.
        """
        if self.observer is not None:
            globalLogPublisher.addObserver(self.observer)
        write, line = self.write, LINE
        try:
            start = time.process_time()
            for _ in range(lines):
                write(line)
            return (time.process_time() - start) / lines
        finally:
            if self.observer is not None:
                globalLogPublisher.removeObserver(self.observer)


class _Unflushed:
    """
    A text file whose C{flush} does nothing.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.write = stream.write
        self.encoding = stream.encoding

    def flush(self) -> None:
        pass


def variants(base: Path) -> list[Variant]:
    """
    A to E, each writing its own file under C{base}.
    """
    files = {k: open(base / f"{k}.log", "w") for k in "ABCDF"}
    accessLog = openAccessLog(str(base / "E.log"))
    return [
        Variant(
            "A",
            "before: log.logfile, twistd's observer",
            log.logfile.write,
            textFileLogObserver(files["A"]),
            base / "A.log",
        ),
        Variant(
            "B",
            "TwistdLog, twistd's observer (twistd --logfile, daemon)",
            TWISTD_LOG.write,
            textFileLogObserver(files["B"]),
            base / "B.log",
        ),
        Variant(
            "C",
            "TwistdLog, sdweb's observer (twistd -n sdweb)",
            TWISTD_LOG.write,
            textObserver(files["C"]),
            base / "C.log",
        ),
        Variant(
            "D",
            "TwistdLog, sdweb's journal observer (under systemd)",
            TWISTD_LOG.write,
            journalObserver(files["D"]),
            base / "D.log",
        ),
        Variant("E", "sdweb --logfile FILE", accessLog.write, None, base / "E.log"),
        Variant(
            "F",
            "as C, never flushed (batching at best)",
            TWISTD_LOG.write,
            textObserver(cast(IO[str], _Unflushed(files["F"]))),
            base / "F.log",
        ),
    ]


def check(vs: list[Variant]) -> None:
    """
    A, B and C wrote the same lines but for the timestamps' seconds.
    """

    def shape(path: Path) -> set[str]:
        return {line[19:] for line in path.read_text().splitlines()}

    a, b, c = (shape(v.path) for v in vs[:3])
    expected = {"+0000 [twisted.python.log#info] " + LINE[:-1]}
    if not (len(a) == 1 and a == b == c):
        raise SystemExit(f"accesslog_cost: the lines differ: {a} {b} {c}")
    if a != expected and not next(iter(a)).endswith(LINE[:-1]):
        raise SystemExit(f"accesslog_cost: unexpected line {a}")


def runOnly(vs: list[Variant], key: str, count: int) -> None:
    """
    Run variant or stage C{key} C{count} times, for callgrind.
    """
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    log.logfile.write(LINE)
    globalLogPublisher.removeObserver(observer)
    (event,) = events
    twisted, ours = vs[0].observer, vs[2].observer
    assert isinstance(twisted, FileLogObserver) and ours is not None
    text = twisted.formatEvent(event)
    stream = open(vs[0].path, "a")
    stages: dict[str, Callable[[], object]] = {
        "none": lambda: None,
        "A-emit": lambda: log.logfile.write(LINE),
        "A-observer": lambda: twisted(event),
        "A-time": lambda: formatTime(event["log_time"]),
        "A-message": lambda: formatEvent(event),
        "A-system": lambda: _formatSystem(event),
        "A-write": lambda: (stream.write(text or ""), stream.flush()),
        "C-observer": lambda: ours(event),
    }
    if key in stages:
        run = stages[key]
        for _ in range(count):
            run()
    else:
        (v,) = [v for v in vs if v.key == key]
        v.run(count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--lines", type=int, default=5000, help="lines a run")
    parser.add_argument("--profile", metavar="VARIANT", help="cProfile one variant")
    parser.add_argument("--only", metavar="KEY", help="run one variant or stage")
    addOutArgument(parser)
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False)
    with tempfile.TemporaryDirectory(prefix="accesslog_cost-") as tmp:
        vs = variants(Path(tmp))
        if args.only:
            runOnly(vs, args.only, args.lines)
            return 0
        if args.profile:
            (v,) = [v for v in vs if v.key == args.profile]
            v.run(args.lines)
            profile = cProfile.Profile()
            profile.runcall(v.run, args.lines)
            pstats.Stats(profile).sort_stats("tottime").print_stats(20)
            return 0
        for v in vs:
            v.run(args.lines // 10)  # warm up
        for _ in range(args.rounds):
            for v in vs + vs[::-1]:
                v.perLine.append(v.run(args.lines))
        check(vs)
    reference = vs[0].perLine
    rows = []
    for v in vs:
        ratios = [x / a for x, a in zip(v.perLine, reference)]
        rows.append(
            [
                f"{v.key}: {v.title}",
                f"{statistics.median(v.perLine) * 1e6:.2f}",
                f"{statistics.median(ratios):.2f}",
            ]
        )
    table = markdownTable(["Variant", "µs per line (median)", "÷ A"], "lrr", rows)
    text = (
        table + f"\n{args.rounds} rounds of {args.lines} lines per variant,"
        " interleaved (A B C D E F F E D C B A), CPU time of the process; ratios"
        " are medians of the ratios of runs side by side; each line written"
        " and flushed to a file (but F). " + versionLine() + ".\n"
    )
    print(text)
    if args.out:
        writeOut(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
