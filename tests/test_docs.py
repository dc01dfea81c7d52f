"""
The documentation works as written: its runnable examples run, every public
name is documented, and no command in any file under docs/ serves an
application that can never be imported.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from conftest import ROOT

import txsdnotify

DOCS = ROOT / "docs"


def pythonBlocks(text: str) -> list[str]:
    """
    The fenced C{python} code blocks of a Markdown text, dedented.
    """
    blocks = []
    for match in re.finditer(r"^( *)```python\n(.*?)^\1```", text, re.M | re.S):
        indent = len(match.group(1))
        blocks.append(
            "".join(line[indent:] for line in match.group(2).splitlines(True))
        )
    return blocks


def selfContained(block: str) -> bool:
    """
    Whether a block imports what it uses and asserts something: those are
    meant to be run as they are.
    """
    return block.lstrip().startswith(("from ", "import ")) and "assert " in block


RUNNABLE = [
    pytest.param(block, id=f"{path.name}-{n}")
    for path in sorted(DOCS.rglob("*.md"))
    for n, block in enumerate(pythonBlocks(path.read_text()))
    if selfContained(block)
]


def test_someExamplesAreRunnable() -> None:
    """
    The MemoryNotifier example of docs/library.md, at least, is found.
    """
    assert any("MemoryNotifier" in str(p.values[0]) for p in RUNNABLE)


@pytest.mark.parametrize("block", RUNNABLE)
def test_exampleRuns(block: str) -> None:
    exec(compile(block, "<docs example>", "exec"), {})


def test_everyPublicNameDocumented() -> None:
    """
    Every name in C{txsdnotify.__all__} is named (as code) in docs/.
    """
    text = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    missing = [n for n in txsdnotify.__all__ if not re.search(rf"`{n}\b", text)]
    assert missing == []


# Modules of the standard library an application module can never be named
# after (Python imports the standard one first); the full list on 3.10+.
STDLIB: frozenset[str] = frozenset(getattr(sys, "stdlib_module_names", ())) | {
    "site",
    "os",
    "sys",
    "json",
    "http",
    "email",
    "test",
    "code",
    "types",
}

APPLICATION = re.compile(r"--(?:wsgi|class)[= ]+([A-Za-z_][\w.]*)")


def docFiles() -> list[Path]:
    """
    Every text file under docs/, in every folder.
    """
    found = []
    for path in sorted(DOCS.rglob("*")):
        if path.is_file():
            try:
                path.read_text()
            except UnicodeDecodeError:
                continue
            found.append(path)
    return found


def commandText(path: Path) -> str:
    """
    The text of C{path} that is meant to be run: the fenced code blocks of
    a Markdown file (prose may name a wrong command to warn against it), the
    whole of any other file (units, examples).
    """
    text = path.read_text()
    if path.suffix != ".md":
        return text
    return "\n".join(re.findall(r"^ *```[^\n]*\n(.*?)^ *```", text, re.M | re.S))


def test_docFilesFoundInEveryFolder() -> None:
    """
    The scan reaches the units and the examples, not only docs/*.md.
    """
    folders = {p.parent.relative_to(DOCS).as_posix() for p in docFiles()}
    assert {".", "units", "examples", "examples/plugin/myapp"} <= folders


@pytest.mark.parametrize("path", docFiles(), ids=lambda p: str(p.relative_to(DOCS)))
def test_noApplicationNamedAfterTheStandardLibrary(path: Path) -> None:
    """
    No C{--wsgi}/C{--class} in a command of any file under docs/ names a
    module of the standard library (C{site.app} can never be the user's).
    """
    wrong = [
        name
        for name in APPLICATION.findall(commandText(path))
        if name.split(".")[0] in STDLIB
    ]
    assert wrong == []
