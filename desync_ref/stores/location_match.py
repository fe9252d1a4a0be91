"""Which config entry applies to a location: desync ``locationMatch`` (``cmd/desync/location.go``).

Spec: ``spec/http.md`` ("Config file"). Config keys are Go ``path.Match`` glob patterns;
URLs are compared without a trailing ``/``, paths after being made absolute. Used by the
config file's ``store-options`` and by the backends that look up their own credential
sections (``oci-credentials``).
"""

from __future__ import annotations

import os
import re
from typing import Final

# One step of a path.Match pattern: a star, or a test of one character.
_GlobToken = re.Pattern[str] | None  # None is a star; a pattern matches exactly one character
_ANY_BUT_SLASH: Final = re.compile("[^/]")


def _glob_tokens(pattern: str) -> list[_GlobToken] | None:
    """Go's ``path.Match`` syntax as tokens; None for a malformed pattern (Go's
    ErrBadPattern, which matches nothing)."""
    out: list[_GlobToken] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if not out or out[-1] is not None:  # "**" matches what "*" does
                out.append(None)
        elif ch == "?":
            out.append(_ANY_BUT_SLASH)
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.compile(re.escape(pattern[i])))
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                return None
            body = pattern[i + 1:end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            try:
                out.append(re.compile("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]"))
            except re.error:
                return None
            i = end
        else:
            out.append(re.compile(re.escape(ch)))
        i += 1
    return out


def _glob_match(tokens: list[_GlobToken], text: str) -> bool:
    """Whether ``text`` matches, by stepping the set of reachable token positions once per
    character: O(len(tokens) * len(text)), where a regex with many stars backtracks
    exponentially on a near miss (a hostile config key would hang every command)."""
    def closure(states: set[int]) -> set[int]:
        more = set(states)
        for i in sorted(states):
            while i < len(tokens) and tokens[i] is None:
                i += 1
                more.add(i)
        return more

    states = closure({0})
    for ch in text:
        step: set[int] = set()
        for i in states:
            if i == len(tokens):
                continue
            token = tokens[i]
            if token is None:
                if ch != "/":
                    step.add(i)
            elif token.fullmatch(ch):
                step.add(i + 1)
        if not step:
            return False
        states = closure(step)
    return len(tokens) in states


def _glob(pattern: str, text: str) -> bool:
    tokens = _glob_tokens(pattern)
    return tokens is not None and _glob_match(tokens, text)


def location_match(pattern: str, location: str) -> bool:
    """desync ``locationMatch``: URLs by path.Match without a trailing ``/``, paths made absolute."""
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", location)
    if scheme and len(scheme.group(1)) > 1:
        return _glob(pattern.removesuffix("/"), location.removesuffix("/"))
    return _glob(os.path.abspath(pattern), os.path.abspath(location))
