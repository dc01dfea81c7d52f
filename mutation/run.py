"""
Mutation testing of the core modules with cosmic-ray: ``make mutate``.

Each module is mutated in place, one mutant at a time, and only its own fast
in-process tests run against each mutant (with the checkout first on
``sys.path``, ahead of the installed copy).  A mutant the tests do not kill
survives; survivors that cannot be killed are listed, with the reason, in
``mutation/equivalent.txt`` and reported as such.  Prints the score per
module and exits non-zero when a survivor is not explained there.

    python mutation/run.py [module ...]
"""

from __future__ import annotations

import ast
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
EQUIVALENT = Path(__file__).resolve().parent / "equivalent.txt"

# Each core module and the fast tests that must kill its mutants.
MODULES: dict[str, list[str]] = {
    "systemd.lifecycle": ["test_lifecycle.py"],
    "statusline": ["test_statusline.py"],
    "web.drain": ["test_drain.py", "test_tracking.py"],
    "web.stats": ["test_stats.py"],
    "systemd.message": ["test_message.py"],
    "reload": ["test_reload.py"],
    "signals": ["test_signalrouter.py"],
    "workers.pool": ["test_pool.py"],
    "workers.protocol": ["test_protocol.py"],
    "health": ["test_healthcheck.py"],
    "workers.master": ["test_master.py"],
}

CONFIG = """\
[cosmic-ray]
module-path = "txsdnotify/{path}.py"
timeout = 30.0
excluded-modules = []
test-command = "env PYTHONPATH={root} {python} -m pytest -x -q -p no:cacheprovider \
-p no:randomly {tests}"

[cosmic-ray.distributor]
name = "local"
"""


def loadConfig(path: Path) -> dict:
    """
    A cosmic-ray configuration, as cosmic-ray reads it.
    """
    from cosmic_ray.config import load_config

    return load_config(str(path))


def tool(name: str) -> str:
    """
    A command of the venv running this script.
    """
    return str(Path(sys.executable).parent / name)


def equivalents() -> set[tuple[str, str, str, str]]:
    """
    The survivors explained as equivalent: C{(module, definition, operator,
    line)}, the line's source text stripped, so that the list survives edits
    elsewhere.
    """
    known = set()
    for line in EQUIVALENT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            module, definition, operator, text = line.split(" | ")[:4]
            known.add((module, definition, operator, text))
    return known


def annotationSpans(source: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """
    Where C{source}'s annotations are: with C{from __future__ import
    annotations} they are never evaluated, so a mutant there is no mutant.
    """
    spans = []
    for node in ast.walk(ast.parse(source.read_text())):
        found: list[ast.expr | None] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            arguments = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
            found += [arg.annotation for arg in arguments if arg is not None]
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        for n in found:
            if n is not None:
                end = (n.end_lineno or n.lineno, n.end_col_offset or 0)
                spans.append(((n.lineno, n.col_offset), end))
    return spans


def isKeywordMarker(lines: list[str], position: tuple[int, int]) -> bool:
    """
    Whether C{position} is the bare C{*} before keyword-only parameters,
    which cosmic-ray takes for a multiplication.
    """
    row, column = position
    text = lines[row - 1]
    return text[column : column + 1] == "*" and text[column + 1 :].lstrip()[:1] in (
        ",",
        "",
    )


def skipNonCode(db: Path, source: Path) -> int:
    """
    Mark the mutants that change no code as skipped: inside annotations, or
    of the keyword-only marker.  How many there were.
    """
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    assert "from __future__ import annotations" in source.read_text()
    spans = annotationSpans(source)
    lines = source.read_text().splitlines()
    skipped = 0
    with use_db(str(db), WorkDB.Mode.open) as work:
        for item in work.work_items:
            start = tuple(item.mutations[0].start_pos)
            if isKeywordMarker(lines, start) or any(
                low <= start < high for low, high in spans
            ):
                skipped += 1
                work.set_result(
                    item.job_id,
                    WorkResult(worker_outcome=WorkerOutcome.SKIPPED),
                )
    return skipped


def results(db: Path) -> Iterator[tuple[dict, dict | None]]:
    """
    Each mutation of the session and its result (L{None} if not run).
    """
    dump = subprocess.run(
        [tool("cosmic-ray"), "dump", str(db)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in dump.splitlines():
        item, result = json.loads(line)
        yield item["mutations"][0], result


def mutate(module: str) -> tuple[int, int, int, list[str], list[str]]:
    """
    Run every mutant of C{module}: killed, total, skipped (not code),
    explained survivors and unexplained ones.
    """
    source = ROOT / "txsdnotify" / f"{module.replace('.', '/')}.py"
    tests = " ".join(f"tests/{t}" for t in MODULES[module])
    config = WORK / f"{module}.toml"
    db = WORK / f"{module}.sqlite"
    config.write_text(
        CONFIG.format(
            path=module.replace(".", "/"), root=ROOT, python=sys.executable, tests=tests
        )
    )
    db.unlink(missing_ok=True)
    # Stale bytecode of an earlier mutant must never be what runs.
    shutil.rmtree(ROOT / "txsdnotify" / "__pycache__", ignore_errors=True)
    subprocess.run([tool("cosmic-ray"), "init", str(config), str(db)], check=True)
    skipped = skipNonCode(db, source)
    baseline = subprocess.run(
        [tool("cosmic-ray"), "baseline", str(config)], cwd=ROOT, capture_output=True
    )
    if baseline.returncode != 0:
        sys.exit(f"{module}: the tests fail without any mutant; fix them first")
    original = source.read_bytes()
    try:
        # The tests must see the mutated file, not an installed copy: a
        # module that cannot be imported must make them fail.
        source.write_bytes(original + b"\nraise ImportError('mutation canary')\n")
        command = shlex.split(loadConfig(config)["test-command"])
        canary = subprocess.run(command, cwd=ROOT, capture_output=True)
        source.write_bytes(original)
        if canary.returncode == 0:
            sys.exit(f"{module}: its tests pass with {source} broken: not mutating")
        subprocess.run(
            [tool("cosmic-ray"), "exec", str(config), str(db)], cwd=ROOT, check=True
        )
    finally:
        # cosmic-ray mutates in place: never leave a mutant behind.
        if source.read_bytes() != original:
            source.write_bytes(original)
    lines = source.read_text().splitlines()
    known = equivalents()
    killed = total = 0
    explained: list[str] = []
    unexplained: list[str] = []
    for mutation, result in results(db):
        if (result or {}).get("worker_outcome") == "skipped":
            continue
        total += 1
        outcome = (result or {}).get("test_outcome")
        if outcome == "killed":
            killed += 1
            continue
        row = mutation["start_pos"][0]
        text = lines[row - 1].strip()
        operator = mutation["operator_name"].removeprefix("core/")
        key = (module, mutation["definition_name"] or "-", operator, text)
        where = f"line {row}: {' | '.join(key)}"
        if outcome == "survived" and key in known:
            explained.append(where)
        else:
            unexplained.append(f"{where} [{outcome}]")
    return killed, total, skipped, explained, unexplained


def main(argv: list[str]) -> int:
    WORK.mkdir(exist_ok=True)
    names = argv or list(MODULES)
    summary = []
    failed = False
    for module in names:
        killed, total, skipped, explained, unexplained = mutate(module)
        for where in explained:
            print(f"  equivalent: {where}")
        for where in unexplained:
            print(f"  SURVIVED:   {where}")
        failed = failed or bool(unexplained)
        summary.append(
            f"{module:<12} killed {killed}/{total} ({100 * killed / total:.1f}%),"
            f" {len(explained)} equivalent, {len(unexplained)} unexplained"
            f" ({skipped} not code: skipped)"
        )
    print("\n".join(["", "Mutation score:", *summary]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
