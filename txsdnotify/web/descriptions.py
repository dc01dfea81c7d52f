# -*- test-case-name: tests.test_backlog -*-
"""
Reading strports endpoint descriptions (C{ssl:443:privateKey=key.pem}) the
way Twisted does: fields split at C{:} unless escaped with a backslash,
C{name=value} fields being options.
"""

from __future__ import annotations

import re

__all__ = ["splitDescription"]

_SEPARATOR = re.compile(r"(?<!\\):")
_ESCAPE = re.compile(r"\\(.)")


def splitDescription(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    The parts of an endpoint description.

    @return: Its kind (C{tcp}, C{ssl}, ...; lower-cased), its positional
        fields after the kind, and its options, all unescaped.
    """
    kind, *fields = _SEPARATOR.split(description)
    positional: list[str] = []
    options: dict[str, str] = {}
    for field in fields:
        name, equals, value = field.partition("=")
        if equals and not name.endswith("\\"):
            options[_ESCAPE.sub(r"\1", name)] = _ESCAPE.sub(r"\1", value)
        else:
            positional.append(_ESCAPE.sub(r"\1", field))
    return kind.lower(), positional, options
