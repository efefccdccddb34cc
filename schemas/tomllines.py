"""The line of a TOML document where a key path is written (``tomllib`` keeps no positions).

Good enough for error messages: table headers (``[a.b]``), arrays of tables (``[[a.b]]``, the
n-th one for index n) and ``key = value`` lines (dotted keys too) are followed; a path into an
inline table or array resolves to the line of the key that holds it.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_.\- ]+?))\s*=""")


def _split_key(text: str) -> list[str]:
    parts: list[str] = []
    for match in re.finditer(r""""([^"]*)"|'([^']*)'|([^.\s"']+)""", text):
        parts.append(next(group for group in match.groups() if group is not None))
    return parts


def _matched(path: list[str], want: list[str]) -> int:
    """len(path) if ``path`` is ``want`` with some parts left out (a union's tag), else 0."""
    at = 0
    for part in path:
        while at < len(want) and want[at] != part:
            at += 1
        if at == len(want):
            return 0
        at += 1
    return len(path)


def toml_line(text: str, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the longest prefix of ``loc`` written in ``text``; None if none is."""
    want = [str(part) for part in loc]
    table: list[str] = []
    counts: dict[tuple[str, ...], int] = {}
    best: tuple[int, int] | None = None  # (matched parts, line)
    in_multiline = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
            in_multiline = not in_multiline
            if not in_multiline:
                continue
        elif in_multiline:
            continue
        path: list[str]
        header = _HEADER.match(line)
        if header is not None:
            table = _split_key(header.group(2))
            if header.group(1) == "[[":
                index = counts.get(tuple(table), 0)
                counts[tuple(table)] = index + 1
                table = [*table, str(index)]
            path = table
        else:
            key = _KEY.match(line)
            if key is None:
                continue
            path = [*table, *_split_key(key.group(1))]
        matched = _matched(path, want)
        if matched and (best is None or matched > best[0]):
            best = (matched, number)
    return best[1] if best else None
