"""The built-in router's data path: an asyncio HTTP/1.1 reverse proxy over a `RoutingTable`.

`ProxyServer` serves already-bound listening sockets (the daemon binds them, or receives them
from the router it replaces). Each accepted socket gets a `ClientConnection`, an asyncio Protocol
that parses requests with httptools and runs one `Exchange` at a time per connection. Bodies are
relayed as they arrive with flow control on both sides; nothing is buffered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import httptools

from zerodown.routers.base import canonical_address
from zerodown.routers.builtin.exchange import Exchange
from zerodown.routers.builtin.http import Headers, json_response, set_nodelay
from zerodown.routers.builtin.table import Route, RoutingTable, Target
from zerodown.routers.builtin.upstream import UpstreamConnection, close_idle_before

log = logging.getLogger("zerodown.router.proxy")

LINGER_SECONDS = 2.0  # how long a refused client may keep sending before it is cut


@dataclass(frozen=True)
class ProxySettings:
    """Limits and timeouts of the proxy (seconds and bytes)."""

    max_header_bytes: int = 64 * 1024  # request line + headers; larger: 431
    max_body_bytes: int = 100 * 1024 * 1024  # larger: 413
    connect_timeout: float = 5.0  # to a target; then retry elsewhere or 502
    response_timeout: float = 60.0  # request sent -> response head; then 504
    client_idle_timeout: float = 75.0  # keep-alive client with no request in progress
    upstream_idle_timeout: float = 30.0  # pooled connection unused this long is closed
    max_idle_per_target: int = 64  # pooled connections kept per target
    backlog: int = 1024  # listen() backlog of each socket


class ProxyObserver(Protocol):
    """Receives one call per request answered (and per tunnel closed), for metrics."""

    def on_response(
        self,
        route: Route,
        target: Target | None,
        status: int,
        seconds: float,
        upstream_error: bool,
    ) -> None:
        """`target` is None for local answers (503 no healthy target, 413, ...)."""
        ...


class _HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing an oversized head."""


class ClientConnection(asyncio.Protocol):
    """One client socket: parses requests in order and runs their exchanges one at a time."""

    # Reasons to stop reading from the client; reading resumes when none is left.
    PAUSE_UPSTREAM = 1  # the target's send buffer is full
    PAUSE_BUFFER = 2  # bytes are waiting for an upstream connection
    PAUSE_PIPELINE = 4  # a pipelined request waits for the one before it
    PAUSE_UPGRADE = 8  # an upgrade request waits for the target's answer
    PAUSE_DONE = 16  # the connection will close; read nothing more

    def __init__(self, server: ProxyServer, listener: str | None = None) -> None:
        self.server = server
        self.loop = server.loop
        self.listener = listener  # canonical host:port of the socket it was accepted on
        self.transport: asyncio.Transport | None = None
        self.client_ip = b"unknown"
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()  # [0] is active, the rest pipelined
        self.building: Exchange | None = None  # receives the body being parsed
        self.tunnel: Exchange | None = None
        self.closing = False
        self.closed = False
        self.write_paused = False
        self.idle_since = self.loop.time()
        self.lingering = False
        self.refused = False  # the parser failed: it cannot be fed again
        self._linger_timer: asyncio.TimerHandle | None = None
        self.pauses = 0  # PAUSE_* reasons set now; reading is paused while any is
        self._upgrade_rest = b""
        self._url = b""
        self._headers: Headers = []
        self._head_size = 0
        self._max_head_size = server.settings.max_header_bytes

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.client_ip = str(peer[0]).encode()
        self.server.clients.add(self)
        if self.server.closing:
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # the rest of a refused request: read only so the close is not a reset
        if self.tunnel is not None:
            self.tunnel.client_data(data)
            return
        if self.refused or (self.closing and not self.queue):
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_rest = data[exc.args[0] :]
            self.pause_reading(self.PAUSE_UPGRADE)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                limit = self.server.settings.max_header_bytes
                self._refuse(431, {"error": "request header fields too large", "limit": limit})
            else:
                log.exception("proxy bug while parsing a request", exc_info=exc.__context__)
                self._refuse(500, {"error": "internal proxy error"})
        except httptools.HttpParserError as exc:
            self._refuse(400, {"error": "bad request", "detail": str(exc)})

    def eof_received(self) -> bool | None:
        if self.lingering:
            return None
        if self.tunnel is not None:
            self.tunnel.client_eof()
            return True
        if self.queue:
            self.closing = True  # answer what was asked, then close
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self.server.clients.discard(self)
        if self.tunnel is not None:
            self.tunnel.client_lost()
        for exchange in list(self.queue):
            exchange.client_lost()
        self.queue.clear()
        self.server.client_gone()

    def pause_writing(self) -> None:
        self.write_paused = True
        exchange = self.tunnel or (self.queue[0] if self.queue else None)
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        exchange = self.tunnel or (self.queue[0] if self.queue else None)
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------------

    # No on_message_begin: each callback from httptools costs, so on_message_complete resets the
    # head state for the next message instead (after trailers, which on_header also sees).

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self._max_head_size:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._max_head_size:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        if self.closed:
            return
        parser = self.parser
        exchange = Exchange(
            self,
            parser.get_method(),
            self._url,
            self._headers,
            parser.should_keep_alive(),
            parser.should_upgrade(),
        )
        self.server.requests_total += 1
        self.building = exchange
        queue = self.queue
        queue.append(exchange)
        if len(queue) == 1:
            exchange.start()
        else:
            self.pause_reading(self.PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        if self.building is not None:
            self.building.request_body(body)

    def on_message_complete(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0
        building, self.building = self.building, None
        if building is not None:
            building.request_complete()

    # -- used by exchanges ---------------------------------------------------------------------

    def is_active(self, exchange: Exchange) -> bool:
        """Whether `exchange` is the one being answered now."""
        return bool(self.queue) and self.queue[0] is exchange

    def write(self, data: bytes) -> None:
        """Send bytes to the client (dropped once it is gone)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def write_eof(self) -> None:
        """Half-close towards the client (tunnels)."""
        if self.transport is not None and not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()

    def pause_reading(self, reason: int) -> None:
        """Stop reading for `reason` (a PAUSE_* flag)."""
        if not self.pauses and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.pauses |= reason

    def resume_reading(self, reason: int) -> None:
        """Drop `reason`; reading resumes when no reason is left."""
        if not self.pauses & reason:
            return
        self.pauses &= ~reason
        if not self.pauses and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def start_tunnel(self, exchange: Exchange) -> bytes:
        """Switch to a raw tunnel for `exchange`; returns client bytes read past its head."""
        self.tunnel = exchange
        self.queue.clear()
        self.building = None
        early, self._upgrade_rest = self._upgrade_rest, b""
        self.resume_reading(self.PAUSE_UPGRADE)
        return early

    def exchange_done(self, exchange: Exchange, *, close: bool) -> None:
        """`exchange` was answered: start the next pipelined one, go idle, or close."""
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        if self.pauses & (self.PAUSE_UPSTREAM | self.PAUSE_BUFFER):
            self.resume_reading(self.PAUSE_UPSTREAM | self.PAUSE_BUFFER)
        if close or self.closing:
            self.close()
            return
        if queue:
            if len(queue) == 1:
                self.resume_reading(self.PAUSE_PIPELINE)
            queue[0].start()
            return
        self.idle_since = self.loop.time()

    def close(self, *, linger: bool = False) -> None:
        """Close after flushing what was written; pipelined requests not started are dropped."""
        self.closing = True
        if self.transport is None or self.closed or self.lingering:
            return
        if linger or self.building is not None:
            self._linger()
            return
        self.pause_reading(self.PAUSE_DONE)
        self.transport.close()

    def _linger(self) -> None:
        # Closing while the client still sends makes the kernel answer with a reset, which can
        # destroy our error response before the client reads it. Send FIN, discard what comes,
        # and close when the client does (or after LINGER_SECONDS).
        assert self.transport is not None
        self.lingering = True
        if self.pauses:
            self.pauses = 0
            self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.abort)

    def abort(self) -> None:
        """Close at once."""
        self.closing = True
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close_if_idle(self) -> bool:
        """Shutdown: close now if nothing is in progress; otherwise close after the current one."""
        self.closing = True
        if not self.queue and self.tunnel is None:
            self.close()
            return True
        return False

    def _refuse(self, status: int, body: dict[str, object]) -> None:
        """The client broke the protocol: answer in turn if possible, then close."""
        if self.building is not None:
            self.building.fail_request(status, body)
            self.building = None
        elif not self.queue:
            self.write(json_response(status, body, request_id=b"-", close=True))
        self.closing = True
        self.refused = True
        if not self.queue:
            self.close(linger=True)


class ProxyServer:
    """Accepts clients on given sockets and relays their requests to the table's targets."""

    def __init__(
        self,
        table: RoutingTable,
        settings: ProxySettings | None = None,
        observer: ProxyObserver | None = None,
    ) -> None:
        self.table = table
        self.settings = settings if settings is not None else ProxySettings()
        self.observer = observer
        self.clients: set[ClientConnection] = set()
        self.upstreams: set[UpstreamConnection] = set()
        self.closing = False
        self.requests_total = 0
        self.upstream_errors = 0
        self._servers: list[asyncio.Server] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._no_clients = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the proxy runs on (set by `start`)."""
        assert self._loop is not None, "ProxyServer.start() was not called"
        return self._loop

    async def start(self, sockets: Sequence[socket.socket]) -> None:
        """Serve on already-bound listening sockets (asyncio closes them when serving stops)."""
        self._loop = asyncio.get_running_loop()
        for sock in sockets:
            await self.add_listener(sock)
        self._sweeper = self._loop.create_task(self._sweep_idle())

    async def add_listener(self, sock: socket.socket) -> None:
        """Serve on one more bound, listening socket; its connections know its address, so
        routes bound to that address match them."""
        sock.setblocking(False)
        host, port = sock.getsockname()[:2]
        address = canonical_address(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        server = await self.loop.create_server(
            lambda: ClientConnection(self, address), sock=sock, backlog=self.settings.backlog
        )
        self._servers.append(server)

    async def stop_accepting(self) -> None:
        """Stop accept() for a handoff; open connections keep being served."""
        for server in self._servers:
            server.close()
        self._servers.clear()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, close idle clients now, let active ones finish for up to `grace` s."""
        await self.stop_accepting()
        self.closing = True
        # An idle keep-alive client may be sending its next request right now; closing under it
        # resets that request. Let it come (it is answered with `Connection: close`) and close
        # only the connections that stay idle for the whole linger.
        linger = min(grace, 1.0)
        if linger > 0 and self.clients:
            self._no_clients.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(linger):
                    await self._no_clients.wait()
        for client in list(self.clients):
            client.close_if_idle()
        if self.clients:
            self._no_clients.clear()
            try:
                async with asyncio.timeout(grace):
                    await self._no_clients.wait()
            except TimeoutError:
                log.warning("shutdown grace of %gs over: cutting %d", grace, len(self.clients))
                for client in list(self.clients):
                    client.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for route in self.table.routes():
            for target in route.targets.values():
                target.close_idle()
        for conn in list(self.upstreams):
            conn.abort()

    def stats(self) -> dict[str, int]:
        """Counters for status output and tests."""
        active = sum(len(c.queue) for c in self.clients)
        tunnels = sum(1 for c in self.clients if c.tunnel is not None)
        idle = sum(len(t.idle) for r in self.table.routes() for t in r.targets.values())
        return {
            "client_connections": len(self.clients),
            "active_requests": active,
            "tunnels": tunnels,
            "upstream_connections": len(self.upstreams),
            "idle_upstream_connections": idle,
            "requests_total": self.requests_total,
            "upstream_errors": self.upstream_errors,
            "listening": len(self._servers),
        }

    # -- used by connections -------------------------------------------------------------------

    def observe(
        self, exchange: Exchange, *, upstream_error: bool, now: float | None = None
    ) -> None:
        """Report one answered request (or closed tunnel) to the observer; `now`: loop time."""
        if self.observer is None or exchange.route is None:
            return
        seconds = (self.loop.time() if now is None else now) - exchange.started
        try:
            self.observer.on_response(
                exchange.route, exchange.target, exchange.status, seconds, upstream_error
            )
        except Exception:  # a metrics bug must never break the data path
            log.exception("proxy observer failed")

    def count_upstream_error(self) -> None:
        """One more request answered 502/504 by the proxy."""
        self.upstream_errors += 1

    def client_gone(self) -> None:
        """A client connection closed; wakes `shutdown` when the last one goes."""
        if self.closing and not self.clients:
            self._no_clients.set()

    async def _sweep_idle(self) -> None:
        # One periodic sweep is cheaper than a timer per request on the hot path.
        settings = self.settings
        interval = max(0.05, min(1.0, settings.client_idle_timeout / 4))
        interval = min(interval, max(0.05, settings.upstream_idle_timeout / 4))
        interval = min(interval, max(0.05, settings.response_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            client_deadline = now - settings.client_idle_timeout
            for client in list(self.clients):
                if client.queue:
                    client.queue[0].check_deadline(now)
                elif client.tunnel is None and client.idle_since < client_deadline:
                    client.close()
            upstream_deadline = now - settings.upstream_idle_timeout
            for route in self.table.routes():
                for target in route.targets.values():
                    if target.idle:
                        close_idle_before(target, upstream_deadline)
