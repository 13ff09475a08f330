"""Connections from the proxy to targets, and each target's keep-alive pool.

An `UpstreamConnection` is an asyncio Protocol that parses responses with httptools and hands
every event to the `UpstreamListener` it currently serves (the proxy's exchange). Between
exchanges it sits in `Target.idle`; if the target closes it there, it leaves the pool at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol, cast

import httptools

from zerodown.routers.builtin.http import Headers, set_nodelay
from zerodown.routers.builtin.table import Target


class UpstreamListener(Protocol):
    """What an upstream connection reports to the exchange it serves."""

    def response_head(self, status: int, reason: bytes, headers: Headers, keep_alive: bool) -> None:
        """The response head (also each 1xx interim head) was parsed."""
        ...

    def response_body(self, data: bytes) -> None:
        """A piece of the (de-chunked) response body arrived."""
        ...

    def response_complete(self) -> None:
        """The response (or a 1xx interim response) ended."""
        ...

    def flush(self) -> None:
        """One read from the upstream was parsed: pass on what it produced."""
        ...

    def response_invalid(self, reason: str) -> None:
        """The upstream sent something that is not HTTP/1.1; the connection is being closed."""
        ...

    def upstream_upgraded(self, rest: bytes) -> None:
        """The upstream switched protocols; `rest` are the first tunnel bytes after its head."""
        ...

    def tunnel_data(self, data: bytes) -> None:
        """Raw tunnel bytes from the upstream."""
        ...

    def tunnel_eof(self) -> None:
        """The upstream half-closed the tunnel."""
        ...

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The connection closed while serving this listener."""
        ...

    def upstream_write_paused(self) -> None:
        """The upstream's send buffer is full: stop reading from the client."""
        ...

    def upstream_write_resumed(self) -> None:
        """The upstream's send buffer drained: read from the client again."""
        ...


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a target, serving one exchange at a time."""

    def __init__(self, target: Target, live: set[UpstreamConnection]) -> None:
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.listener: UpstreamListener | None = None
        self.closed = False
        self.reused = False  # taken from the pool: it may have been closed under us
        self.response_bytes = 0  # of the current exchange; 0 makes a reused conn retryable
        self.idle_since = 0.0
        self.tunnel = False
        self.reading_paused = False
        self._live = live  # the proxy's open upstream connections, for stats and shutdown
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._headers: Headers = []
        self._new_parser = False

    def __repr__(self) -> str:
        return f"UpstreamConnection({self.target.spec.address} reused={self.reused})"

    # -- used by the proxy ---------------------------------------------------------------------

    def attach(self, listener: UpstreamListener) -> None:
        """Serve `listener` from now on (fresh or taken from the pool)."""
        self.listener = listener
        self.response_bytes = 0

    def write(self, data: bytes) -> None:
        """Send bytes to the target."""
        assert self.transport is not None
        self.transport.write(data)

    def pause_reading(self) -> None:
        """Stop reading from the target (the client is slow)."""
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the target again."""
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def expect_no_body(self) -> None:
        """The response to HEAD has a head only; start a fresh parser for the next response."""
        self._new_parser = True

    def close(self) -> None:
        """Close after sending what is buffered."""
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping buffers."""
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def write_eof(self) -> None:
        """Half-close the tunnel towards the target."""
        if self.transport is not None and not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self._live.add(self)

    def data_received(self, data: bytes) -> None:
        listener = self.listener
        if listener is None:
            self.abort()  # bytes on an idle connection: its framing can no longer be trusted
            return
        if self.tunnel:
            listener.tunnel_data(data)
            return
        self.response_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tunnel = True
            listener.upstream_upgraded(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            self.abort()
            listener.response_invalid(f"invalid response from {self.target.spec.address}: {exc}")
        if self.listener is listener:  # a finished exchange has let go and flushed already
            listener.flush()
        if self._new_parser:
            self._new_parser = False
            self._parser = httptools.HttpResponseParser(self)

    def eof_received(self) -> bool | None:
        if self.tunnel and self.listener is not None:
            self.listener.tunnel_eof()
            return True  # keep the other direction open until the client closes too
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.upstream_lost(self)
        else:
            with contextlib.suppress(ValueError):  # not pooled (yet)
                self.target.idle.remove(self)
        self._live.discard(self)

    def pause_writing(self) -> None:
        if self.listener is not None:
            self.listener.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.listener is not None:
            self.listener.upstream_write_resumed()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        headers, self._headers = self._headers, []
        reason, self._reason = self._reason, b""
        if self.listener is not None:
            status = self._parser.get_status_code()
            self.listener.response_head(status, reason, headers, self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.listener is not None:
            self.listener.response_body(body)

    def on_message_complete(self) -> None:
        if self.listener is not None:
            self.listener.response_complete()


def take_idle(target: Target) -> UpstreamConnection | None:
    """The most recently used live pooled connection to `target`, or None."""
    idle = target.idle
    while idle:
        conn = idle.pop()
        if isinstance(conn, UpstreamConnection) and not conn.closed:
            assert conn.transport is not None
            if not conn.transport.is_closing():
                conn.reused = True
                return conn
    return None


def put_idle(conn: UpstreamConnection, now: float, max_idle: int) -> None:
    """Pool `conn` after a complete exchange, or close it when it cannot be reused."""
    conn.listener = None
    target = conn.target
    if conn.closed or target.draining or target.retired or len(target.idle) >= max_idle:
        conn.close()
        return
    if conn.reading_paused:
        conn.resume_reading()  # an idle conn must read, or a close by the target goes unseen
    conn.idle_since = now
    target.idle.append(conn)


def close_idle_before(target: Target, deadline: float) -> None:
    """Close pooled connections to `target` idle since before `deadline` (oldest are left)."""
    idle = target.idle
    while idle:
        conn = idle[0]
        if isinstance(conn, UpstreamConnection) and conn.idle_since >= deadline:
            return
        idle.popleft().close()


async def open_connection(
    target: Target, timeout: float, live: set[UpstreamConnection]
) -> UpstreamConnection:
    """Connect to `target`; raises OSError or TimeoutError."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, conn = await loop.create_connection(
            lambda: UpstreamConnection(target, live), target.spec.host, target.spec.port
        )
    return conn
