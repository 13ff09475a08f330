"""The router daemon's control protocol: newline-delimited JSON over a unix socket.

A request is one line `{"id": n, "op": "...", "args": {...}}`; its answer is one line
`{"id": n, "ok": true, "result": ...}` or `{"id": n, "ok": false, "error": "one sentence"}`.
Requests on one connection are answered in order; connections are served concurrently, so a
long `drain_target` on one connection never blocks a `status` on another. Authentication is the
socket file's mode (0600): whoever may open it may steer the router.

`handoff` is the one answer that carries file descriptors (the listening sockets, by SCM_RIGHTS);
see `zerodown.routers.builtin.handoff`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from zerodown.errors import RouterError
from zerodown.routers.base import (
    DrainResult,
    RouteSpec,
    RouteStatus,
    TargetHealth,
    TargetSpec,
    TargetStatus,
)
from zerodown.routers.builtin.handoff import send_with_fds

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 4 * 1024 * 1024  # a status of a few thousand targets fits; a runaway line does not
OPS = frozenset(
    {
        "ping",
        "listen",
        "apply_route",
        "remove_route",
        "add_target",
        "set_pool_weights",
        "drain_target",
        "status",
        "events",
        "metrics",
        "handoff",
        "retire",
    }
)
# Ops that change the table: their answer waits until state.json holds the change.
MUTATING_OPS = frozenset(
    {"apply_route", "remove_route", "add_target", "set_pool_weights", "drain_target"}
)


class ProtocolError(RouterError):
    """A control message that does not follow the protocol (bad JSON, missing op, bad args)."""


@dataclass(frozen=True)
class ControlRequest:
    """One decoded request line."""

    id: int | str | None
    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class FdReply:
    """A result to be sent together with file descriptors (SCM_RIGHTS) in one message."""

    result: Any
    fds: Sequence[int]


@dataclass
class ControlChannel:
    """One client connection, as seen by the op dispatcher (it may wait for it to close)."""

    number: int
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class ControlOps(Protocol):
    """What the control server dispatches to (the daemon's `ops.RouterOps`)."""

    async def call(self, op: str, args: dict[str, Any], channel: ControlChannel) -> Any:
        """Run one op; return a JSON-ready result (or an FdReply), raise RouterError to refuse."""
        ...


# -- framing ------------------------------------------------------------------------------------


def encode_message(message: dict[str, Any]) -> bytes:
    """One protocol line: compact JSON and a newline."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode_request(line: bytes) -> ControlRequest:
    """Parse one request line, or raise ProtocolError saying what is wrong with it."""
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"request is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("request must be a JSON object")
    request_id = data.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, int | str)
    ):
        raise ProtocolError("request id must be a number or a string")
    op = data.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError(f"unknown op {op!r}; known ops: {', '.join(sorted(OPS))}")
    args = data.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError("args must be a JSON object")
    return ControlRequest(id=request_id, op=op, args=args)


def request_id_of(line: bytes) -> int | str | None:
    """The id of a request line that failed to decode, if it has a usable one (for the answer)."""
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("id"), int | str):
        value = data["id"]
        return None if isinstance(value, bool) else value
    return None


def ok_message(request_id: int | str | None, result: Any) -> dict[str, Any]:
    """The answer to a request that succeeded."""
    return {"id": request_id, "ok": True, "result": result}


def error_message(
    request_id: int | str | None, error: str, *, retry: bool = False
) -> dict[str, Any]:
    """The answer to a refused request; `retry` tells the client to try again shortly."""
    message: dict[str, Any] = {"id": request_id, "ok": False, "error": error}
    if retry:
        message["retry"] = True
    return message


# -- serialisation of the router's answers -----------------------------------------------------


def drain_result_to_dict(result: DrainResult) -> dict[str, Any]:
    """A JSON-ready DrainResult."""
    return {
        "target_id": result.target_id,
        "seconds": result.seconds,
        "finished": result.finished,
        "forced": result.forced,
    }


def drain_result_from_dict(data: dict[str, Any]) -> DrainResult:
    """The inverse of `drain_result_to_dict`."""
    return DrainResult(
        target_id=str(data["target_id"]),
        seconds=float(data["seconds"]),
        finished=int(data["finished"]),
        forced=int(data["forced"]),
    )


def route_status_to_dict(status: RouteStatus) -> dict[str, Any]:
    """A JSON-ready RouteStatus (the route, its pool weights, then each target with health,
    draining, inflight)."""
    return {
        "route": status.route.to_dict(),
        "pools": dict(status.pools),
        "targets": [
            {
                "spec": t.spec.to_dict(),
                "health": t.health.value,
                "draining": t.draining,
                "inflight": t.inflight,
            }
            for t in status.targets
        ],
    }


def route_status_from_dict(data: dict[str, Any]) -> RouteStatus:
    """The inverse of `route_status_to_dict`."""
    return RouteStatus(
        route=RouteSpec.from_dict(data["route"]),
        targets=tuple(
            TargetStatus(
                spec=TargetSpec.from_dict(t["spec"]),
                health=TargetHealth(t["health"]),
                draining=bool(t["draining"]),
                inflight=int(t["inflight"]),
            )
            for t in data["targets"]
        ),
        pools={str(k): int(v) for k, v in dict(data.get("pools") or {}).items()},
    )


# -- server ---------------------------------------------------------------------------------


class ControlServer:
    """Serves the control protocol on a unix socket and dispatches each request to `ops`."""

    def __init__(self, ops: ControlOps) -> None:
        self._ops = ops
        self._servers: list[asyncio.Server] = []  # more than one after `start` again (rebind)
        self._path: Path | None = None
        self._inode: int | None = None
        self._channels = 0
        self._busy: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self, path: Path, *, replace: bool = False) -> None:
        """Listen on `path` (mode 0600). `replace`: bind beside it and atomically take its place
        (how a new daemon takes over from a running one without a moment of no socket).
        Calling it again binds anew (connections to the earlier socket are still served)."""
        bind_path = path.with_name(f".{path.name}.{os.getpid()}") if replace else path
        with contextlib.suppress(FileNotFoundError):
            bind_path.unlink()
        # The umask makes the socket 0600 from birth, so no other user can race the chmod.
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(
                self._serve, path=str(bind_path), limit=MAX_LINE_BYTES
            )
        finally:
            os.umask(old_umask)
        self._servers.append(server)
        os.chmod(bind_path, 0o600)
        if replace:
            os.replace(bind_path, path)
        self._path = path
        self._inode = os.stat(path).st_ino

    @property
    def path(self) -> Path | None:
        """Where this server listens (None before start)."""
        return self._path

    def owns_path(self) -> bool:
        """True while the socket file at `path` is still this server's (not a successor's)."""
        if self._path is None or self._inode is None:
            return False
        try:
            return self._path.stat().st_ino == self._inode
        except FileNotFoundError:
            return False

    async def close(self, *, unlink: bool = True, grace: float = 5.0) -> None:
        """Stop accepting; let requests in progress finish (up to `grace`); close the rest."""
        if not self._servers:
            return
        if unlink and self.owns_path():
            assert self._path is not None
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=grace)
        for writer in list(self._connections):
            writer.close()
        for server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._channels += 1
        channel = ControlChannel(number=self._channels)
        self._connections.add(writer)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return  # the client hung up (possibly mid-line): nothing to answer
                except asyncio.LimitOverrunError:
                    writer.write(
                        encode_message(
                            error_message(None, f"request longer than {MAX_LINE_BYTES} bytes")
                        )
                    )
                    await writer.drain()
                    return  # the framing is lost: close the connection
                if not line.strip():
                    continue
                task = asyncio.current_task()
                assert task is not None
                self._busy.add(task)
                try:
                    await self._answer(line, writer, channel)
                finally:
                    self._busy.discard(task)
        except (ConnectionError, BrokenPipeError):
            return
        finally:
            self._connections.discard(writer)
            channel.closed.set()
            writer.close()

    async def _answer(
        self, line: bytes, writer: asyncio.StreamWriter, channel: ControlChannel
    ) -> None:
        try:
            request = decode_request(line)
        except ProtocolError as exc:
            writer.write(encode_message(error_message(request_id_of(line), str(exc))))
            await writer.drain()
            return
        try:
            result = await self._ops.call(request.op, request.args, channel)
        except RetryLater as exc:
            answer = error_message(request.id, str(exc), retry=True)
        except RouterError as exc:
            answer = error_message(request.id, str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            answer = error_message(request.id, f"bad args for {request.op}: {_describe(exc)}")
        except Exception as exc:  # a bug must not take the router down with it
            log.exception("control op %s failed", request.op)
            answer = error_message(request.id, f"internal error in {request.op}: {exc!r}")
        else:
            if isinstance(result, FdReply):
                await _send_fd_reply(
                    writer, encode_message(ok_message(request.id, result.result)), result.fds
                )
                return
            answer = ok_message(request.id, result)
        writer.write(encode_message(answer))
        await writer.drain()


class RetryLater(RouterError):
    """The daemon cannot take this request now but a moment later it (or its successor) can."""


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}"
    return str(exc) or type(exc).__name__


async def _send_fd_reply(writer: asyncio.StreamWriter, data: bytes, fds: Sequence[int]) -> None:
    """Send `data` with `fds` attached to its first byte, bypassing the transport's buffer."""
    await writer.drain()
    transport = writer.transport
    # Anything still queued in the transport would be overtaken by the raw send below.
    for _ in range(200):
        if transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.005)
    raw = transport.get_extra_info("socket")
    # asyncio hands out a restricted view of its socket; a dup() is a full socket on the same
    # connection (the O_NONBLOCK flag is shared, so a short send just returns fewer bytes).
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    try:
        sent = send_with_fds(sock, data, fds)
    finally:
        sock.close()
    if sent < len(data):
        writer.write(data[sent:])
        await writer.drain()
