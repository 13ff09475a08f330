"""HTTP/1.1 message heads for the built-in proxy: hop-by-hop filtering and head serialisation.

Header names and values stay bytes end to end: the proxy never decodes what it only forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from http import HTTPStatus
from typing import Any

Headers = list[tuple[bytes, bytes]]

# RFC 9110 7.6.1 plus the de-facto Proxy-Connection; framing headers are rewritten by the proxy.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}

LAST_CHUNK = b"0\r\n\r\n"


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Disable Nagle: asyncio only does it for sockets it created, not for passed-in listeners'
    accepted ones (their proto is 0), and head + body in two writes would then wait ~40 ms."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def reason(status: int) -> bytes:
    """The standard reason phrase of `status` (b"" for unknown codes)."""
    return _REASONS.get(status, b"")


def connection_tokens(headers: Headers) -> set[bytes]:
    """Lower-cased tokens of every Connection header (they name more hop-by-hop headers)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def host_without_port(host: bytes | None) -> str | None:
    """`example.com:8080` -> `example.com`; `[::1]:80` -> `::1`."""
    if not host:
        return None
    text = _HOSTS.get(host)
    if text is None:
        text = _strip_port(host.decode("latin-1").strip())
        if len(_HOSTS) >= _HOSTS_LIMIT:
            _HOSTS.clear()  # clients choose Host: keep the cache bounded
        _HOSTS[host] = text
    return text


# Host header -> host without port: a proxy sees the same few hosts over and over.
_HOSTS: dict[bytes, str] = {}
_HOSTS_LIMIT = 1024


def _strip_port(text: str) -> str:
    if text.startswith("["):
        end = text.find("]")
        return text[1:end] if end > 0 else text
    return text.split(":", 1)[0]


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (one copy of `data`, one write)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def json_response(
    status: int,
    body: dict[str, Any],
    *,
    request_id: bytes,
    close: bool,
    http10: bool = False,
) -> bytes:
    """A complete JSON response the proxy answers by itself (errors, no route, ...)."""
    payload = json.dumps(body).encode()
    connection = b"close" if close else (b"keep-alive" if http10 else b"")
    return b"".join(
        [
            b"HTTP/1.1 %d %b\r\n" % (status, reason(status)),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(payload),
            b"x-request-id: %b\r\n" % request_id,
            b"connection: %b\r\n" % connection if connection else b"",
            b"\r\n",
            payload,
        ]
    )
