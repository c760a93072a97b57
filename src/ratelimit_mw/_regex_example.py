"""A string a regular expression matches, made up from its parse tree: a path for a
route's pattern, so rules can be compared with routes (the drift check, the CLI).

Best effort: the common constructs of route patterns (literals, classes, repeats,
groups, alternatives, anchors); anything else gives ``None``. What is made up is
checked against the pattern before it is returned.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any

__all__ = ["example_of"]

# The parser behind `re`: "sre_parse" until 3.11 (deprecated from then on, with a warning
# on import), "re._parser" after.
_parser: Any = importlib.import_module(
    "re._parser" if sys.version_info >= (3, 11) else "sre_parse")
_constants: Any = importlib.import_module(
    "re._constants" if sys.version_info >= (3, 11) else "sre_constants")

#: Characters tried, in order, where a class or ``.`` allows many: digits first, as
#: most route parameters are ids.
_PREFERRED = "1a0A-_.~x"


def example_of(pattern: str) -> str | None:
    """A string *pattern* fully matches, or ``None`` when none could be made up.

    >>> example_of(r"[0-9]{4}/(?P<slug>[-a-z]+)")
    '1111/a'
    """
    try:
        tree = _parser.parse(pattern)
        text = _emit(tree)
    except (re.error, _UnsupportedError, RecursionError):
        return None
    if text is None or re.fullmatch(pattern, text) is None:
        return None
    return text


class _UnsupportedError(Exception):
    pass


def _emit(items: Any) -> str | None:
    out = []
    for op, arg in items:
        piece = _one(op, arg)
        if piece is None:
            return None
        out.append(piece)
    return "".join(out)


def _one(op: Any, arg: Any) -> str | None:
    c = _constants
    if op is c.LITERAL:
        return chr(arg)
    if op is c.NOT_LITERAL:
        return next(char for char in _PREFERRED if ord(char) != arg)
    if op is c.ANY:
        return "a"
    if op is c.IN:
        return _in(arg)
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
        low, high, sub = arg
        # One repetition where none is allowed: an empty parameter is rarely routable.
        count = low if low > 0 else min(1, high)
        body = _emit(sub)
        return None if body is None else body * count
    if op is c.SUBPATTERN:
        return _emit(arg[-1])
    if op is c.BRANCH:
        for option in arg[1]:
            text = _emit(option)
            if text is not None:
                return text
        return None
    if op is c.AT:
        return ""
    if op in (getattr(c, "ATOMIC_GROUP", None),):
        return _emit(arg)
    raise _UnsupportedError(op)


def _in(members: Any) -> str | None:
    c = _constants
    if members and members[0][0] is c.NEGATE:
        excluded = members[1:]
        for char in _PREFERRED:
            if not any(_member_has(op, arg, char) for op, arg in excluded):
                return char
        return None
    for char in _PREFERRED:
        if any(_member_has(op, arg, char) for op, arg in members):
            return char
    op, arg = members[0]
    if op is c.LITERAL:
        return chr(arg)
    if op is c.RANGE:
        return chr(arg[0])
    return None


def _member_has(op: Any, arg: Any, char: str) -> bool:
    c = _constants
    if op is c.LITERAL:
        return chr(arg) == char
    if op is c.RANGE:
        return bool(arg[0] <= ord(char) <= arg[1])
    if op is c.CATEGORY:
        probe = {c.CATEGORY_DIGIT: r"\d", c.CATEGORY_NOT_DIGIT: r"\D",
                 c.CATEGORY_WORD: r"\w", c.CATEGORY_NOT_WORD: r"\W",
                 c.CATEGORY_SPACE: r"\s", c.CATEGORY_NOT_SPACE: r"\S"}.get(arg)
        return probe is not None and re.fullmatch(probe, char) is not None
    return False
