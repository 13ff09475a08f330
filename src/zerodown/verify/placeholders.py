"""`${secret:NAME}` and `${env:NAME}` in a smoke check's path, headers and body.

A login check needs credentials that do not belong in zerodown.yml: the check names them and the
verifier fills them in just before sending. Parsing lives here, free of the engine, so that
`zerodown.config.verify` refuses a malformed placeholder when the file is loaded. `$${` stands
for a literal `${`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # the secret stores' variable names
# `$${` (a literal), a whole `${...}`, or a `${` that never closes.
_TOKEN = re.compile(r"\$\$\{|\$\{(?P<inner>[^{}]*)\}|\$\{")
_HINT = "use ${secret:NAME} or ${env:NAME} (write $${ for a literal ${)"


class PlaceholderKind(StrEnum):
    """Where a placeholder's value comes from."""

    SECRET = "secret"  # the environment's secret stores
    ENV = "env"  # the new instances' environment (config env, secrets, ZERODOWN_*)


@dataclass(frozen=True, order=True)
class Placeholder:
    """One `${kind:NAME}` reference; its text is what records show instead of the value."""

    kind: PlaceholderKind
    name: str

    def __str__(self) -> str:
        return f"${{{self.kind}:{self.name}}}"


Part = str | Placeholder


def parse_template(text: str) -> tuple[Part, ...]:
    """`text` as literal pieces and placeholders; ValueError says what is wrong and what to do."""
    parts: list[Part] = []
    position = 0
    for match in _TOKEN.finditer(text):
        parts.append(text[position : match.start()])
        position = match.end()
        if match.group(0) == "$${":
            parts.append("${")
            continue
        inner = match.group("inner")
        if inner is None:
            raise ValueError(f"unclosed placeholder {text[match.start() :]!r}: {_HINT}")
        parts.append(_placeholder(inner))
    parts.append(text[position:])
    return tuple(part for part in parts if part != "")


def _placeholder(inner: str) -> Placeholder:
    kind, colon, name = inner.partition(":")
    shown = f"${{{inner}}}"
    if not colon or kind not in {member.value for member in PlaceholderKind}:
        raise ValueError(f"unknown placeholder {shown}: {_HINT}")
    if not name:
        raise ValueError(
            f"{shown} names nothing: write ${{{kind}:NAME}}, e.g. ${{{kind}:API_TOKEN}}"
        )
    if not NAME.match(name):
        raise ValueError(
            f"{shown}: {name!r} is not a variable name (letters, digits and '_', not starting "
            "with a digit, e.g. API_TOKEN)"
        )
    return Placeholder(PlaceholderKind(kind), name)


def check_template(text: str) -> str:
    """`text` unchanged if its placeholders are well formed (a pydantic validator)."""
    parse_template(text)
    return text


def check_body_templates(body: Any) -> Any:
    """`body` unchanged if every string in it is a well-formed template; ValueError names where
    the bad one is (`$.user.password`)."""
    for where, text in _strings(body, "$"):
        try:
            parse_template(text)
        except ValueError as exc:
            raise ValueError(f"at {where}: {exc}" if where != "$" else str(exc)) from None
    return body


def placeholders_in(value: Any) -> set[Placeholder]:
    """Every placeholder in a string, or in the strings of a mapping / list (keys stay literal)."""
    found: set[Placeholder] = set()
    for _, text in _strings(value, "$"):
        found.update(part for part in parse_template(text) if isinstance(part, Placeholder))
    return found


def render(value: Any, lookup: Callable[[Placeholder], str]) -> Any:
    """`value` with each placeholder replaced by `lookup(placeholder)` and `$${` by `${`."""
    if isinstance(value, str):
        parts = parse_template(value)
        return "".join(part if isinstance(part, str) else lookup(part) for part in parts)
    if isinstance(value, dict):
        return {key: render(item, lookup) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item, lookup) for item in value]
    return value


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")
