"""One request through the proxy: route, pick, relay both ways, retry, or answer locally.

An `Exchange` is created by the client connection when a request head is parsed. It becomes
active when it reaches the head of that connection's queue (pipelined requests wait their
turn), then either answers by itself (404, 503, 413, ...) or relays to a target through an
`UpstreamConnection`, and on a `101` turns into a raw byte tunnel. It is the handle the target
counts as in flight, so a forced drain can `abort()` it.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from zerodown.routers.base import STICKY_COOKIE
from zerodown.routers.builtin.http import (
    HOP_BY_HOP,
    LAST_CHUNK,
    Headers,
    chunk,
    connection_tokens,
    host_without_port,
    json_response,
    reason,
)
from zerodown.routers.builtin.table import Route, Target
from zerodown.routers.builtin.upstream import (
    UpstreamConnection,
    open_connection,
    put_idle,
    take_idle,
)

if TYPE_CHECKING:
    from zerodown.routers.builtin.proxy import ClientConnection

# Request bytes kept to resend when a pooled connection turns out dead; larger bodies are not
# retried (the client has already streamed them through).
REPLAY_LIMIT = 64 * 1024
# Request bytes buffered while no upstream is attached before the client is paused.
PENDING_LIMIT = 64 * 1024

_FORWARDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"}
)
# Request headers never forwarded as received: hop-by-hop ones and those the proxy sets itself.
_REQUEST_DROP = HOP_BY_HOP | _FORWARDED
# Response headers never relayed as received (x-request-id is the proxy's own).
_RESPONSE_DROP = HOP_BY_HOP | {b"x-request-id"}
# Response headers that need a second look; every other one is relayed as it is.
_RESPONSE_SPECIAL = _RESPONSE_DROP | {b"content-length"}
# Connection values that name no header outside HOP_BY_HOP: the common case needs no token set.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"upgrade", b"keep-alive, upgrade"})
_FORWARDED_WITH_HOST = (
    b"x-forwarded-for: %b\r\nx-forwarded-proto: http\r\nx-forwarded-host: %b\r\n"
    b"x-request-id: %b\r\n"
)
_FORWARDED_NO_HOST = b"x-forwarded-for: %b\r\nx-forwarded-proto: http\r\nx-request-id: %b\r\n"
_NO_BODY_STATUSES = frozenset({204, 304})
# Safe to send twice (RFC 9110 9.2.2 lists PUT and DELETE too; like nginx, only the read-only ones).
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_NOT_PREVIEW = frozenset({b"", b"0", b"false", b"no"})  # header values that do not ask for preview
_STICKY = STICKY_COOKIE.encode("ascii")
_COOKIE_SAFE = re.compile(r"[A-Za-z0-9._-]{1,128}")  # revisions that fit a cookie value as-is


def sticky_revision(cookie: bytes) -> str | None:
    """The revision a Cookie header's `zerodown_rev` names, if any."""
    for part in cookie.split(b";"):
        name, _, value = part.strip().partition(b"=")
        if name == _STICKY and value:
            text = value.decode("latin-1")
            return text if _COOKIE_SAFE.fullmatch(text) else None
    return None


# Bits a random 128-bit number keeps, and those it gets, to be a UUID4: version 4, RFC 4122 variant.
_UUID4_KEEP = ((1 << 128) - 1) & ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
_IDS_PER_BLOCK = 64
_BLOCK_KEEP = sum(_UUID4_KEEP << (128 * i) for i in range(_IDS_PER_BLOCK))
_BLOCK_SET = sum(_UUID4_SET << (128 * i) for i in range(_IDS_PER_BLOCK))
_BLOCK_FORMAT = b"%%0%dx" % (32 * _IDS_PER_BLOCK)


def random_request_ids() -> Iterator[bytes]:
    """Endless random UUID4s as 32 hex digits (`random` suffices for ids, uuid4 is 5x dearer).

    Made a block at a time: one big random number, masked and formatted once, costs a fraction
    per id of what it costs for each id alone, and ids are made for every request."""
    getrandbits = random.getrandbits
    width = 32 * _IDS_PER_BLOCK
    while True:
        block = _BLOCK_FORMAT % ((getrandbits(128 * _IDS_PER_BLOCK) & _BLOCK_KEEP) | _BLOCK_SET)
        for start in range(0, width, 32):
            yield block[start : start + 32]


new_request_id: Callable[[], bytes] = random_request_ids().__next__
"""The next random UUID4 as 32 hex digits."""


def _head_lines_named_by_connection(
    status: int, reason_: bytes, headers: Headers
) -> tuple[list[bytes], bool, bool]:
    """Response head lines (and has-length, chunked) when Connection names extra headers."""
    drop = connection_tokens(headers) | _RESPONSE_DROP
    lines = [b"HTTP/1.1 %d %b\r\n" % (status, reason_ or reason(status))]
    has_length = chunked = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            has_length = True
        elif lname == b"transfer-encoding":
            chunked = True
        elif status == 101 and lname == b"upgrade":
            lines.append(b"%b: %b\r\n" % (name, value))
            continue
        if lname not in drop:
            lines.append(b"%b: %b\r\n" % (name, value))
    return lines, has_length, chunked


class Exchange:
    """A request and its response, from head parsed to last byte relayed (or tunnel closed)."""

    __slots__ = (
        "client",
        "close_client",
        "connect_retried",
        "connect_task",
        "deadline",
        "eofs",
        "finished",
        "http10",
        "interim",
        "keep_alive",
        "last_sent",
        "local",
        "method",
        "out",
        "peer_retried",
        "pending",
        "pending_size",
        "preview",
        "replay",
        "replay_size",
        "req_bytes",
        "req_chunked",
        "req_complete",
        "request_id",
        "resp_chunked",
        "resp_started",
        "route",
        "server",
        "stale_retried",
        "started",
        "status",
        "sticky_rev",
        "target",
        "tried",
        "tunnel_open",
        "until_close",
        "upgrade",
        "upstream",
        "upstream_keep_alive",
        "url",
    )

    def __init__(
        self,
        client: ClientConnection,
        method: bytes,
        url: bytes,
        headers: Headers,
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.client = client
        self.server = client.server
        self.method = method
        self.url = url
        self.http10 = False  # an HTTP/1.0 client; _prepare finds out
        self.keep_alive = keep_alive and not upgrade  # a refused upgrade leaves the parser stuck
        self.upgrade = False
        self.preview = False  # carries the route's preview header: preview targets only
        self.sticky_rev: str | None = None  # the revision its sticky cookie names
        self.started = client.loop.time()
        self.route: Route | None = None
        self.target: Target | None = None
        self.upstream: UpstreamConnection | None = None
        self.tried: list[Target] = []
        self.connect_task: asyncio.Task[None] | None = None
        self.deadline = 0.0  # when the response head is due (0: not waiting); see proxy sweep
        self.local: tuple[int, dict[str, Any]] | None = None
        self.finished = False
        # request side
        self.req_chunked = False
        self.req_complete = False
        self.req_bytes = 0
        self.last_sent = self.started
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] | None = None
        self.replay_size = 0
        self.stale_retried = False
        self.peer_retried = False
        self.connect_retried = False
        # response side
        self.status = 0
        self.resp_started = False
        self.resp_chunked = False
        self.until_close = False
        self.upstream_keep_alive = False
        self.interim = False
        self.close_client = False
        self.tunnel_open = False
        self.eofs = 0
        self.out: list[bytes] = []  # response bytes of one upstream read, written in one go
        self.request_id = self._prepare(headers, keep_alive, upgrade)

    def __repr__(self) -> str:
        return f"Exchange({self.method.decode()} {self.url[:60]!r} -> {self.target})"

    # -- request head --------------------------------------------------------------------------

    def _prepare(self, headers: Headers, keep_alive: bool, upgrade: bool) -> bytes:
        """Find the route and build the upstream head; decides local answers early.

        One pass both reads the headers the proxy acts on and serialises the ones it forwards;
        only a Connection header naming extra hop-by-hop headers costs a second pass.
        """
        host = request_id = forwarded_for = upgrade_to = cookie = None
        previews: list[bytes] | None = None
        preview_names = self.server.table.preview_headers
        length = -1
        extra_tokens = False  # a Connection header names headers beyond the standard ones
        has_connection = False  # a Connection or Proxy-Connection header (llhttp reads both)
        lines = [b"%b %b HTTP/1.1\r\n" % (self.method, self.url)]
        append = lines.append
        for name, value in headers:
            lname = name.lower()
            if lname not in _REQUEST_DROP:
                lines += (name, b": ", value, b"\r\n")  # cheaper than formatting each line
                if lname == b"host":
                    host = value
                elif lname == b"content-length":
                    length = int(value) if value.isdigit() else 0  # httptools has validated it
                elif lname == b"cookie":
                    cookie = value if cookie is None else cookie + b"; " + value
                elif lname in preview_names and value.strip() not in _NOT_PREVIEW:
                    previews = [lname] if previews is None else [*previews, lname]
            elif lname == b"x-request-id":
                request_id = value
            elif lname == b"x-forwarded-for":
                forwarded_for = value
            elif lname == b"transfer-encoding":
                self.req_chunked = b"chunked" in value.lower()
            elif lname == b"upgrade":
                upgrade_to = value
            else:
                if lname == b"connection" or lname == b"proxy-connection":
                    has_connection = True
                    if lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                        extra_tokens = True
                if lname in preview_names and value.strip() not in _NOT_PREVIEW:
                    previews = [lname] if previews is None else [*previews, lname]
        # llhttp keeps an HTTP/1.0 connection alive only for a keep-alive token in one of those
        # headers, so keep-alive without them means 1.1 or later: the version string (slow to
        # get from httptools) is asked for only when the answer is not known already.
        if not keep_alive or has_connection:
            self.http10 = self.client.parser.get_http_version() == "1.0"
        if not request_id:
            request_id = new_request_id()
        path, _, _ = self.url.partition(b"?")
        path_text = path.decode("latin-1")
        host_text = host_without_port(host)
        settings = self.server.settings
        self.route = route = self.server.table.match(host_text, path_text, self.client.listener)
        if route is None:
            self.local = (404, {"error": "no route", "host": host_text, "path": path_text})
            return request_id
        self.preview = previews is not None and route.preview_header in previews
        if cookie is not None and route.spec.sticky:
            self.sticky_rev = sticky_revision(cookie)
        if length > settings.max_body_bytes:
            limit = settings.max_body_bytes
            self.local = (413, {"error": "request body too large", "limit": limit})
            return request_id
        # h2c cannot cross us (we speak HTTP/1.1 upstream); any other protocol is tunnelled.
        if upgrade and upgrade_to and upgrade_to.lower() != b"h2c":
            self.upgrade = True  # (False since __init__)
        if extra_tokens:
            drop = connection_tokens(headers) | _REQUEST_DROP
            del lines[1:]
            lines.extend(b"%b: %b\r\n" % (n, v) for n, v in headers if n.lower() not in drop)
        client_ip = self.client.client_ip
        if forwarded_for:
            client_ip = b"%b, %b" % (forwarded_for, client_ip)
        if host:
            append(_FORWARDED_WITH_HOST % (client_ip, host, request_id))
        else:
            append(_FORWARDED_NO_HOST % (client_ip, request_id))
        if self.req_chunked:
            append(b"transfer-encoding: chunked\r\n")
        if self.upgrade:
            assert upgrade_to is not None
            append(b"connection: upgrade\r\nupgrade: %b\r\n" % upgrade_to)
        append(b"\r\n")
        head = b"".join(lines)
        self.pending.append(head)
        self.pending_size = len(head)
        return request_id

    # -- request body (from the client parser) -------------------------------------------------

    def request_body(self, data: bytes) -> None:
        """A piece of the request body arrived from the client."""
        self.req_bytes += len(data)
        if self.req_bytes > self.server.settings.max_body_bytes:
            limit = self.server.settings.max_body_bytes
            self.fail_request(413, {"error": "request body too large", "limit": limit})
            return
        self._send(chunk(data) if self.req_chunked else data)

    def request_complete(self) -> None:
        """The request ended (for chunked bodies: the last chunk arrived)."""
        self.req_complete = True
        if self.req_chunked:
            self._send(LAST_CHUNK)

    def fail_request(self, status: int, body: dict[str, Any]) -> None:
        """The request turned bad mid-way (too large, bad framing): answer if still possible."""
        if self.finished:
            return
        self.keep_alive = False
        if not self.client.is_active(self):
            self.local = (status, body)  # answered in turn when it becomes active
            return
        self._fail(status, body, upstream_error=False)

    def _send(self, data: bytes) -> None:
        if self.finished or self.local is not None:
            return
        self.last_sent = self.client.loop.time()
        upstream = self.upstream
        if upstream is not None:
            upstream.write(data)
            if self.replay is not None:
                self.replay.append(data)
                self.replay_size += len(data)
                if self.replay_size > REPLAY_LIMIT:
                    self.replay = None
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > PENDING_LIMIT:
            self.client.pause_reading(self.client.PAUSE_BUFFER)

    # -- activation ----------------------------------------------------------------------------

    def start(self) -> None:
        """Become the connection's active exchange: answer locally or go upstream."""
        if self.local is not None:
            self._answer_local(*self.local)
            return
        route = self.route
        assert route is not None
        target = route.pick(preview=self.preview, revision=self.sticky_rev)
        if target is None:
            error = "no healthy preview target" if self.preview else "no healthy target"
            self._answer_local(503, {"error": error, "service": route.spec.service})
            return
        self._use(target)

    def _use(self, target: Target) -> None:
        self.target = target
        self.tried.append(target)
        target.begin(self)
        conn = take_idle(target)
        if conn is not None:
            self._attach(conn)
        else:
            self._connect(target)

    def _connect(self, target: Target) -> None:
        self.connect_task = self.client.loop.create_task(self._connect_then_attach(target))

    async def _connect_then_attach(self, target: Target) -> None:
        try:
            timeout = self.server.settings.connect_timeout
            conn = await open_connection(target, timeout, self.server.upstreams)
        except (OSError, TimeoutError) as exc:
            self.connect_task = None
            if not self.finished:
                self._connect_failed(target, exc)
            return
        self.connect_task = None
        if self.finished:
            conn.close()
            return
        self._attach(conn)

    def _connect_failed(self, target: Target, exc: BaseException) -> None:
        self.server.table.report_connect_failure(target)
        target.end(self)
        route = self.route
        assert route is not None
        if not self.connect_retried:
            self.connect_retried = True
            other = route.pick(exclude=self.tried, preview=self.preview, revision=self.sticky_rev)
            if other is not None:
                self._use(other)
                return
        detail = f"cannot connect to {target.spec.address}: {exc or type(exc).__name__}"
        self._fail(502, {"error": "bad gateway", "detail": detail}, upstream_error=True)

    def _attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.attach(self)
        client = self.client
        if client.write_paused:
            conn.pause_reading()
        pending = self.pending
        conn.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if conn.reused or (self.method in _IDEMPOTENT and not self.upgrade):
            self.replay, self.replay_size = pending, self.pending_size
        self.pending = []
        self.pending_size = 0
        if client.pauses & client.PAUSE_BUFFER:
            client.resume_reading(client.PAUSE_BUFFER)
        if self.tunnel_open:
            return
        # _arm_timer, inlined: this runs for every request.
        self.deadline = client.loop.time() + self.server.settings.response_timeout

    def _arm_timer(self, delay: float) -> None:
        # A deadline the proxy's periodic sweep checks: cheaper than a timer per request.
        self.deadline = self.client.loop.time() + delay

    def check_deadline(self, now: float) -> None:
        """Called by the proxy's sweep: answer 504 if the response head is overdue."""
        if not self.deadline or now < self.deadline:
            return
        self.deadline = 0.0
        timeout = self.server.settings.response_timeout
        idle = now - self.last_sent
        if not self.req_complete and idle < timeout:
            self._arm_timer(timeout - idle)  # the client is still uploading: not the target's fault
            return
        detail = f"no response head within {timeout:g} s"
        self._fail(504, {"error": "gateway timeout", "detail": detail}, upstream_error=True)

    # -- response (UpstreamListener) -----------------------------------------------------------

    def response_head(
        self, status: int, reason_: bytes, headers: Headers, keep_alive: bool
    ) -> None:
        """Relay the response head, rewriting hop-by-hop and framing headers."""
        if self.finished:
            return
        self.deadline = 0.0
        if 100 <= status < 200 and status != 101:
            self.interim = True
            if not self.http10:
                self.out.append(self._head(status, reason_, headers, True))
            self._arm_timer(self.server.settings.response_timeout)
            return
        self.status = status
        self.replay = None
        self.upstream_keep_alive = keep_alive
        if status == 101:
            if not self.upgrade:
                body = {"error": "bad gateway", "detail": "unexpected 101 from the target"}
                self._fail(502, body, upstream_error=True)
                return
            self.out.append(self._head(status, reason_, headers, True))
            self.resp_started = True
            return
        self.out.append(self._head(status, reason_, headers, False))
        self.resp_started = True
        if self.method == b"HEAD":
            assert self.upstream is not None
            self.upstream.expect_no_body()
            self._complete()

    def _head(self, status: int, reason_: bytes, headers: Headers, interim: bool) -> bytes:
        lines = [b"HTTP/1.1 %d %b\r\n" % (status, reason_ or reason(status))]
        append = lines.append
        has_length = chunked = False
        for name, value in headers:
            lname = name.lower()
            if lname not in _RESPONSE_SPECIAL:
                lines += (name, b": ", value, b"\r\n")  # cheaper than formatting each line
            elif lname == b"content-length":
                has_length = True
                lines += (name, b": ", value, b"\r\n")
            elif lname == b"transfer-encoding":
                chunked = True
            elif lname == b"upgrade":
                if status == 101:
                    append(b"%b: %b\r\n" % (name, value))
            elif lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                lines, has_length, chunked = _head_lines_named_by_connection(
                    status, reason_, headers
                )
                break
        lines += (b"x-request-id: ", self.request_id, b"\r\n")
        if not interim and status != 101 and self.route is not None and self.route.spec.sticky:
            self._add_sticky_cookie(lines)
        if status == 101:
            lines.append(b"connection: upgrade\r\n\r\n")
            return b"".join(lines)
        if interim:
            lines.append(b"\r\n")
            return b"".join(lines)
        has_body = self.method != b"HEAD" and status not in _NO_BODY_STATUSES
        if has_body and not has_length:
            self.until_close = not chunked
            if self.http10:
                self.keep_alive = False  # no chunked for 1.0: the close ends the body
            else:
                self.resp_chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
        if not self.req_complete:
            self.keep_alive = False  # the rest of the request body is not worth reading
        self.close_client = not self.keep_alive or self.client.closing or self.server.closing
        if self.close_client:
            lines.append(b"connection: close\r\n")
        elif self.http10:
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def _add_sticky_cookie(self, lines: list[bytes]) -> None:
        """Sticky routes: tell a client which revision served it (unless it knows already)."""
        route, target = self.route, self.target
        if route is None or target is None or not route.spec.sticky or target.preview:
            return
        revision = target.spec.revision
        if revision and revision != self.sticky_rev and _COOKIE_SAFE.fullmatch(revision):
            lines.append(
                b"set-cookie: %b=%b; Path=/; HttpOnly; SameSite=Lax\r\n"
                % (_STICKY, revision.encode("ascii"))
            )

    def response_body(self, data: bytes) -> None:
        """Relay a piece of the response body as it arrives."""
        if self.finished or not data:
            return
        self.out.append(chunk(data) if self.resp_chunked else data)

    def flush(self) -> None:
        """Write what one upstream read produced: head and body leave in one send."""
        out = self.out
        if out:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def response_complete(self) -> None:
        """The response ended: finish, pooling the upstream connection if it can be reused."""
        if self.interim:
            self.interim = False
            return
        if self.finished or not self.resp_started or self.status == 101:
            return  # a 101 ends its head-only message just before the tunnel starts
        if self.resp_chunked:
            self.out.append(LAST_CHUNK)
        self._complete()

    def response_invalid(self, reason_: str) -> None:
        """The target sent garbage; it has been aborted."""
        self.upstream = None
        self._fail(502, {"error": "bad gateway", "detail": reason_}, upstream_error=True)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The upstream connection closed under this exchange."""
        if self.finished:
            return
        self.upstream = None
        if self.tunnel_open:
            self.client.close()
            self._end_tunnel()
            return
        if self.resp_started and self.until_close:
            if self.resp_chunked:
                self.out.append(LAST_CHUNK)
            self._complete()
            return
        if (
            conn.reused
            and conn.response_bytes == 0
            and self.replay is not None
            and not self.stale_retried
        ):
            # A pooled connection the target closed while we were sending: not the client's
            # fault, the target never saw a whole request. Resend on a fresh connection.
            self.stale_retried = True
            self.pending, self.pending_size = self.replay, self.replay_size
            self.replay = None
            self.deadline = 0.0
            assert self.target is not None
            self._connect(self.target)
            return
        if (
            conn.response_bytes == 0
            and self.replay is not None
            and not self.peer_retried
            and self.method in _IDEMPOTENT
            and self._retry_elsewhere(conn)
        ):
            return
        detail = f"{conn.target.spec.address} closed the connection"
        self._fail(502, {"error": "bad gateway", "detail": detail}, upstream_error=True)

    def _retry_elsewhere(self, conn: UpstreamConnection) -> bool:
        """The target died with a read-only request in hand and before answering (killed,
        crashed): send the request once more, to another eligible target, if there is one."""
        self.peer_retried = True
        self.server.table.report_connect_failure(conn.target)
        route = self.route
        if route is None or self.replay is None:
            return False
        other = route.pick(exclude=self.tried, preview=self.preview, revision=self.sticky_rev)
        if other is None:
            return False
        conn.target.end(self)
        self.pending, self.pending_size = self.replay, self.replay_size
        self.replay = None
        self.deadline = 0.0
        self._use(other)
        return True

    def upstream_write_paused(self) -> None:
        """The target reads slower than the client sends."""
        self.client.pause_reading(self.client.PAUSE_UPSTREAM)

    def upstream_write_resumed(self) -> None:
        """The target caught up."""
        self.client.resume_reading(self.client.PAUSE_UPSTREAM)

    # -- tunnel --------------------------------------------------------------------------------

    def upstream_upgraded(self, rest: bytes) -> None:
        """The target switched protocols: from now on both sides are a raw byte pipe."""
        if self.finished:
            return
        self.tunnel_open = True
        self.flush()
        early = self.client.start_tunnel(self)
        if early:
            self.client_data(early)
        if rest:
            self.client.write(rest)

    def client_data(self, data: bytes) -> None:
        """Tunnel bytes from the client."""
        if self.upstream is not None:
            self.upstream.write(data)

    def tunnel_data(self, data: bytes) -> None:
        """Tunnel bytes from the target."""
        self.client.write(data)

    def tunnel_eof(self) -> None:
        """The target half-closed the tunnel."""
        self.client.write_eof()
        self._count_eof()

    def client_eof(self) -> None:
        """The client half-closed the tunnel."""
        if self.upstream is not None:
            self.upstream.write_eof()
        self._count_eof()

    def _count_eof(self) -> None:
        self.eofs += 1
        if self.eofs >= 2:
            if self.upstream is not None:
                self.upstream.close()
            self.client.close()

    def _end_tunnel(self) -> None:
        self.finished = True
        self.tunnel_open = False
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.listener = None
            upstream.close()
        if self.target is not None:
            self.target.end(self)
        self.server.observe(self, upstream_error=False)

    # -- endings -------------------------------------------------------------------------------

    def _complete(self) -> None:
        client, server = self.client, self.server
        out = self.out
        if out:  # flush() and client.write(), inlined: this runs for every request
            transport = client.transport
            if transport is not None and not client.closed:
                transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        self.finished = True
        now = client.loop.time()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            if self.upstream_keep_alive and self.req_complete and not self.until_close:
                put_idle(upstream, now, server.settings.max_idle_per_target)
            else:
                upstream.listener = None
                upstream.close()
        if self.target is not None:
            self.target.end(self)
        server.observe(self, upstream_error=False, now=now)
        client.exchange_done(self, close=self.close_client)

    def _answer_local(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.finished = True
        close = (
            not self.keep_alive
            or not self.req_complete
            or self.client.closing
            or self.server.closing
        )
        data = json_response(
            status, body, request_id=self.request_id, close=close, http10=self.http10
        )
        self.client.write(data)
        self.server.observe(self, upstream_error=False)
        self.client.exchange_done(self, close=close)

    def _fail(self, status: int, body: dict[str, Any], *, upstream_error: bool) -> None:
        """End with an error: an error response if no response byte went out, else a cut."""
        if self.finished:
            return
        self.flush()
        self._release_upstream()
        if self.resp_started:
            self.finished = True
            if self.target is not None:
                self.target.end(self)
            self.server.observe(self, upstream_error=upstream_error)
            self.client.exchange_done(self, close=True)
            return
        if self.target is not None:
            self.target.end(self)
        self.keep_alive = self.keep_alive and self.req_complete and not self.tunnel_open
        self.local = None
        if upstream_error:
            self.server.count_upstream_error()
        self.status = status
        self.finished = True
        close = not self.keep_alive or self.client.closing or self.server.closing
        self.client.write(
            json_response(status, body, request_id=self.request_id, close=close, http10=self.http10)
        )
        self.server.observe(self, upstream_error=upstream_error)
        self.client.exchange_done(self, close=close)

    def _release_upstream(self) -> None:
        self.deadline = 0.0
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.listener = None
            upstream.abort()

    def client_lost(self) -> None:
        """The client went away: drop the upstream side (never pool a half-used connection)."""
        if self.finished:
            return
        if self.tunnel_open:
            self._end_tunnel()
            return
        self.finished = True
        self._release_upstream()
        if self.target is not None:
            self.target.end(self)
        if self.status == 0 and self.target is not None:
            self.status = 499  # nginx's "client closed request"
        if self.target is not None or self.resp_started:
            self.server.observe(self, upstream_error=False)

    def abort(self) -> None:
        """Forced drain: cut this exchange now (a 502 if nothing was sent yet)."""
        if self.finished:
            return
        if self.tunnel_open:
            self.client.abort()
            self._end_tunnel()
            return
        body = {"error": "bad gateway", "detail": "target drained before it answered"}
        self._fail(502, body, upstream_error=True)
