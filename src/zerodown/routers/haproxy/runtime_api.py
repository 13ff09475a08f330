"""The HAProxy Runtime API and master CLI, with HAProxy's errors translated at the seam.

A session sends `prompt`, then its commands, then `quit` on one connection: HAProxy runs them in
order, one after the other, and answers each after a `> ` prompt. Every command that changes
something answers with nothing or with a known sentence; any other answer is HAProxy refusing it,
raised as RouterError with HAProxy's words and, when we know it, what to do about it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from zerodown.errors import RouterError, RouterUnavailable

TIMEOUT = 10.0
_READ_LIMIT = 16 * 1024 * 1024  # `show stat` of a big configuration
# What a successful command that changes something may answer (HAProxy 2.4 .. 3.x).
_SUCCESS_PREFIXES = (
    "New server registered.",
    "Server deleted.",
    "IP changed from",
    "no need to change",
    "port changed from",
    "Health check",  # "Health check status ..." informational answers of `set server health`
)
# HAProxy's message -> what the user can do (matched on a lowercase substring).
_HINTS = (
    (
        "dynamic load balancing",
        "is the backend's balance dynamic (`balance: least_inflight` or `round_robin`)?",
    ),
    (
        "no such server",
        "HAProxy does not have this server: zerodown's state and HAProxy's differ; "
        "`zerodown router restart` rewrites the configuration from zerodown's state",
    ),
    ("no such backend", "apply the route first (HAProxy has no backend of that name)"),
    ("already exists", "a server of that name exists: drain the target before adding it again"),
    (
        "only servers in maintenance",
        "the server still has connections; drain it first and retry",
    ),
    ("permission denied", "the Runtime API socket needs `level admin` in haproxy.cfg"),
    ("not within 0 and 256", "HAProxy weights are 0..256"),
    ("unknown command", "this HAProxy is too old for zerodown's commands (2.4 or newer needed)"),
)


def translate(command: str, answer: str) -> RouterError:
    """HAProxy's refusal of `command` as a sentence a user can act on."""
    message = " ".join(answer.split()) or "(no answer)"
    if message.lower().startswith("unknown command"):
        message = "unknown command"
    hint = next((h for key, h in _HINTS if key in message.lower()), "")
    return RouterError(f"HAProxy refused `{command}`: {message}" + (f"; {hint}" if hint else ""))


def is_success(command: str, answer: str) -> bool:
    """Whether a command's answer means it was done (`show` commands answer with data)."""
    text = answer.strip()
    if command.startswith(("show ", "@")):
        return not text.lower().startswith(("unknown command", "permission denied", "no such"))
    return not text or text.startswith(_SUCCESS_PREFIXES)


@dataclass(frozen=True)
class SocketAddress:
    """A unix socket path or a TCP host:port."""

    unix: str | None = None
    tcp: str | None = None

    def __str__(self) -> str:
        return self.unix or self.tcp or "?"

    async def connect(self, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a connection; RouterUnavailable when nothing listens."""
        try:
            if self.unix is not None:
                opening = asyncio.open_unix_connection(self.unix, limit=_READ_LIMIT)
            else:
                host, _, port = str(self.tcp).rpartition(":")
                opening = asyncio.open_connection(host.strip("[]"), int(port), limit=_READ_LIMIT)
            return await asyncio.wait_for(opening, timeout)
        except (FileNotFoundError, ConnectionRefusedError, TimeoutError, OSError) as exc:
            raise RouterUnavailable(
                f"no HAProxy answers on {self}: start it with `zerodown router start`"
            ) from exc


class RuntimeApi:
    """A client of one HAProxy socket (the Runtime API, or the master CLI)."""

    def __init__(self, address: SocketAddress, *, timeout: float = TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout

    async def session(self, commands: Sequence[str], *, check: bool = True) -> list[str]:
        """Run `commands` in order on one connection; their answers. With `check`, the first
        refused command raises RouterError (the commands before it were done)."""
        if not commands:
            return []
        for command in commands:
            if "\n" in command or ";" in command:
                raise RouterError(f"one HAProxy command per line, without `;`: {command!r}")
        reader, writer = await self.address.connect(self.timeout)
        try:
            payload = "prompt\n" + "".join(f"{c}\n" for c in commands) + "quit\n"
            writer.write(payload.encode())
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), self.timeout)
        except TimeoutError as exc:
            raise RouterError(
                f"HAProxy on {self.address} did not answer `{commands[0]}` within "
                f"{self.timeout:.0f} s"
            ) from exc
        except ConnectionError as exc:
            raise RouterUnavailable(
                f"HAProxy on {self.address} closed the connection during `{commands[0]}`"
            ) from exc
        finally:
            writer.close()
        answers = _split_answers(raw.decode(errors="replace"), len(commands))
        if check:
            for command, answer in zip(commands, answers, strict=True):
                if not is_success(command, answer):
                    raise translate(command, answer)
        return answers

    async def run(self, command: str, *, check: bool = True) -> str:
        """One command's answer."""
        return (await self.session([command], check=check))[0]

    async def run_once(self, command: str, *, check: bool = True) -> str:
        """One command without the prompt: the connection is half-closed after it and HAProxy
        answers until it closes (the master CLI, whose prompt is `master> `; its `reload`
        closes the connection without an answer)."""
        reader, writer = await self.address.connect(self.timeout)
        try:
            writer.write(f"{command}\n".encode())
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            raw = await asyncio.wait_for(reader.read(), self.timeout)
        except TimeoutError as exc:
            raise RouterError(
                f"HAProxy on {self.address} did not answer `{command}` within {self.timeout:.0f} s"
            ) from exc
        except ConnectionError:
            raw = b""  # the master re-executes itself: the connection goes with the old image
        finally:
            writer.close()
        answer = raw.decode(errors="replace")
        if check and not is_success(command, answer):
            raise translate(command, answer)
        return answer


def _split_answers(text: str, count: int) -> list[str]:
    # "\n> " opens each answer: the first chunk answers `prompt`, the last one `quit`.
    parts = text.split("\n> ")
    answers = [p.rstrip("\n") for p in parts[1 : count + 1]]
    if len(answers) < count:
        # HAProxy closed early (e.g. the worker stopped): the missing answers are empty, and
        # a checked session reports the first of them as refused.
        answers += ["(HAProxy closed the connection)"] * (count - len(answers))
    return answers
