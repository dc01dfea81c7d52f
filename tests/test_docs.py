"""
The documentation works as written: its runnable examples run, and every
public name is documented.
"""

from __future__ import annotations

import re

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
    for path in sorted(DOCS.glob("*.md"))
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
    text = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    missing = [n for n in txsdnotify.__all__ if not re.search(rf"`{n}\b", text)]
    assert missing == []
