"""The control plane's end of zerodown's host side (`remote`): one process per host, kept up.

A `HostAgent` is `python3 -m zerodown.runtimes.ssh.remote` running on a host over one SSH
channel of the host's pooled connection. Requests go to it as JSON lines and are answered by
id, several at once, so an operation costs one round trip instead of a login shell and a Python
start each (half a second on a host whose shell profile starts pyenv). It ends when its channel
does; the runtime then opens a new one, and instances never notice: they are not its children.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from zerodown.errors import InstanceNotFound, RuntimeBackendError

if TYPE_CHECKING:
    import asyncssh

    from zerodown.runtimes.ssh.connection import SshConnection


def remote_error(host: str, answer: dict[str, Any]) -> RuntimeBackendError:
    """The error an agent's `{"error": ..., "kind": ...}` answer stands for, naming the host."""
    message = f"host {host}: {answer['error']}"
    if answer.get("kind") == "InstanceNotFound":
        return InstanceNotFound(message)
    return RuntimeBackendError(message)


class HostAgent:
    """zerodown's host side on one host, answering requests by id over one SSH channel."""

    def __init__(self, host: str, process: asyncssh.SSHClientProcess[str]) -> None:
        self.host = host  # how errors name the host
        self._process = process
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._streams: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._ended: RuntimeBackendError | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, connection: SshConnection, command: str) -> HostAgent:
        """Start `command` (the agent) on the connection's host."""
        return cls(connection.target.name, await connection.open_process(command))

    @property
    def closed(self) -> bool:
        """Whether the agent's channel ended (a new agent is needed)."""
        return self._ended is not None

    async def call(self, request: dict[str, Any], *, timeout: float) -> Any:
        """Send one request and wait up to `timeout` for its answer (raised if an error)."""
        number = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[number] = answer
        try:
            self._send(number, request)
            async with asyncio.timeout(timeout):
                message = await answer
        except TimeoutError as exc:
            raise RuntimeBackendError(
                f"host {self.host}: {request['op']} got no answer within {timeout:g}s "
                "(runtime.command_timeout); it may still finish there"
            ) from exc
        finally:
            self._pending.pop(number, None)
        if "error" in message:
            raise remote_error(self.host, message)
        return message.get("ok")

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[str]:
        """Send one `logs` request and yield its lines until its end (or an error, raised)."""
        number = next(self._ids)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._streams[number] = queue
        ended = False
        try:
            self._send(number, request)
            while True:
                message = await queue.get()
                if "line" in message:
                    yield str(message["line"])
                    continue
                ended = True
                if "error" in message:
                    raise remote_error(self.host, message)
                return
        finally:
            self._streams.pop(number, None)
            if not ended and self._ended is None:  # the caller stopped reading: stop the host too
                with contextlib.suppress(RuntimeBackendError):
                    self._send(next(self._ids), {"op": "cancel", "request": number})

    async def close(self) -> None:
        """End the agent (its stdin closes; requests under way finish there)."""
        with contextlib.suppress(Exception):  # it is going away either way
            self._process.stdin.write_eof()
        self._process.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def _send(self, number: int, request: dict[str, Any]) -> None:
        if self._ended is not None:
            raise self._ended
        try:
            self._process.stdin.write(json.dumps({**request, "id": number}) + "\n")
        except (OSError, RuntimeError) as exc:  # the channel closed under us
            raise RuntimeBackendError(
                f"host {self.host}: the SSH channel to zerodown's agent closed ({exc})"
            ) from exc

    async def _read(self) -> None:
        """Hand each answer line to the request waiting for it; fail them all at the end."""
        reason = "its SSH connection closed"
        try:
            while line := await self._process.stdout.readline():
                try:
                    message = json.loads(line)
                    number = message.pop("id")
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue  # not an answer (something else printed): nobody waits for it
                if number in self._streams:
                    self._streams[number].put_nowait(message)
                elif (answer := self._pending.get(number)) is not None and not answer.done():
                    answer.set_result(message)
        except Exception as exc:  # asyncssh or OS errors: the channel is gone either way
            reason = f"its SSH connection failed: {exc}"
        finally:
            status = self._process.exit_status
            if status not in (None, 0):
                reason = f"it exited with {status}"
            self._ended = RuntimeBackendError(
                f"host {self.host}: zerodown's agent stopped ({reason}); check sshd and "
                "python3 there"
            )
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(self._ended)
            for queue in self._streams.values():
                queue.put_nowait({"error": str(self._ended).split(": ", 1)[1]})
