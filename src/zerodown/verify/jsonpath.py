"""A small JSONPath subset for assertions: `$`, dotted keys, `[index]` and `['quoted key']`.

`$.data.token`, `$.items[0].id`, `$.components.db.status`, `$['key.with.dots']`. Nothing else
(no wildcards, filters or slices): an assertion names one value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_STEP = re.compile(
    r"""\.(?P<key>[^.\[\]'"]+)"""
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\[(?P<q>['"])(?P<quoted>.*?)(?P=q)\]"""
)

Step = str | int


class _Missing:
    """The value at a path that does not resolve (distinct from JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class JsonPath:
    """A parsed path; `find` walks a decoded JSON document along it."""

    text: str
    steps: tuple[Step, ...]

    def find(self, document: Any) -> Any:
        """The value at this path, or `MISSING` when a key or index is absent."""
        value = document
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(value, list) or not -len(value) <= step < len(value):
                    return MISSING
                value = value[step]
            else:
                if not isinstance(value, dict) or step not in value:
                    return MISSING
                value = value[step]
        return value

    def __str__(self) -> str:
        return self.text


def parse_json_path(text: str) -> JsonPath:
    """Parse `$.a.b[0]` (the leading `$` is optional); ValueError names what is wrong."""
    rest = text.strip()
    if rest.startswith("$"):
        rest = rest[1:]
    elif rest and not rest.startswith((".", "[")):
        rest = "." + rest  # `data.token` reads as `$.data.token`
    steps: list[Step] = []
    position = 0
    while position < len(rest):
        match = _STEP.match(rest, position)
        if match is None:
            raise ValueError(
                f"JSON path {text!r}: cannot read {rest[position:]!r} "
                "(use $.key.other[0] or $['key.with.dots'])"
            )
        if match.group("index") is not None:
            steps.append(int(match.group("index")))
        elif match.group("quoted") is not None:
            steps.append(match.group("quoted"))
        else:
            steps.append(match.group("key"))
        position = match.end()
    return JsonPath(text.strip(), tuple(steps))


def json_equal(value: Any, expected: Any) -> bool:
    """Equality as JSON means it: `true` is not `1` (Python's `True == 1` must not pass)."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    return bool(value == expected)
