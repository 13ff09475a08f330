"""The router's listening sockets: bound afresh, or passed from a running router (SCM_RIGHTS).

The new daemon asks the old one for `handoff` on the old one's control socket; the answer line
carries the old one's listening socket descriptors as ancillary data. Both processes then hold the
same kernel sockets, so the accept queue is shared: while both accept, and after the old one stops,
no connection is refused or reset. The connection stays open afterwards: `retire` goes over it, and
if it closes without `retire` the old daemon knows the successor failed and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerodown.errors import RouterError, RouterUnavailable

MAX_FDS = 64


def parse_listen(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RouterError(f"listen address {address!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def bind_listeners(addresses: Sequence[str], *, reuse_port: bool = False) -> list[socket.socket]:
    """Bind and listen on every address (SO_REUSEADDR, so a restart need not wait for TIME_WAIT).

    `reuse_port` adds SO_REUSEPORT: the workers of a router pool each bind the same address and
    the kernel spreads new connections across their sockets. Off by default, so a second router
    started by mistake on a taken address still fails instead of silently sharing it."""
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            host, port = parse_listen(address)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise RouterError(f"cannot listen on {address}: {exc.strerror}") from exc
            sock.listen(1024)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def socket_address(sock: socket.socket) -> str:
    """The `host:port` a listening socket is bound to."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def send_with_fds(
    sock: socket.socket, data: bytes, fds: Sequence[int], timeout: float = 5.0
) -> int:
    """Send `data` with `fds` attached; return how many bytes went (the rest is the caller's)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.send_fds(sock, [data], list(fds))
        except BlockingIOError:
            # Nonblocking socket with a full buffer: wait for room, but never forever.
            left = deadline - time.monotonic()
            if left <= 0:
                raise RouterError("the successor router does not read its handoff answer") from None
            select.select([], [sock], [], left)


@dataclass
class Handoff:
    """What a successor received: the listening sockets, the answer, and the open connection."""

    sockets: list[socket.socket]
    result: dict[str, Any]
    connection: socket.socket

    async def retire(self, timeout: float = 10.0) -> None:
        """Tell the old daemon to stop accepting, finish what it has, and exit."""
        reader, writer = await asyncio.open_unix_connection(sock=self.connection)
        try:
            writer.write(json.dumps({"id": 2, "op": "retire", "args": {}}).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
        answer = json.loads(line) if line else {}
        if not answer.get("ok"):
            raise RouterError(
                f"the old router refused to retire: {answer.get('error', 'no answer')}"
            )

    def abandon(self) -> None:
        """Give up: close the received sockets and the connection (the old daemon carries on)."""
        for sock in self.sockets:
            sock.close()
        self.connection.close()


def request_handoff(control_path: Path, timeout: float = 10.0) -> Handoff:
    """Ask the router on `control_path` for its listening sockets and state (blocking call)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(str(control_path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        conn.close()
        raise RouterUnavailable(
            f"no router answers on {control_path}: nothing to take over ({exc.strerror})"
        ) from exc
    try:
        conn.sendall(json.dumps({"id": 1, "op": "handoff", "args": {}}).encode() + b"\n")
        data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, MAX_FDS)
        sockets = [socket.socket(fileno=fd) for fd in fds]
        while not data.endswith(b"\n"):
            more = conn.recv(1 << 16)
            if not more:
                break
            data += more
    except (OSError, TimeoutError) as exc:
        conn.close()
        raise RouterError(f"handoff from the running router failed: {exc}") from exc
    try:
        answer = json.loads(data)
    except json.JSONDecodeError:
        answer = {"ok": False, "error": "the running router answered handoff with garbage"}
    if not answer.get("ok"):
        for sock in sockets:
            sock.close()
        conn.close()
        raise RouterError(f"the running router refused handoff: {answer.get('error')}")
    if not sockets:
        conn.close()
        raise RouterError("the running router handed off no listening sockets")
    conn.settimeout(None)
    conn.setblocking(False)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.setblocking(False)
    return Handoff(sockets=sockets, result=answer["result"], connection=conn)
