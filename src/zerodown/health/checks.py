"""Health probes: one HTTP, TCP or command check against one target, never raising for its failures.

The HTTP probe speaks HTTP/1.1 over plain asyncio streams (it runs inside the router process, where
a client library would be one more thing to load and to keep from pooling connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from zerodown.health.spec import HealthCheckSpec

BODY_LIMIT = 1024 * 1024  # the most of a response body an HTTP probe reads
OUTPUT_TAIL = 64 * 1024  # the most of a command's output a command probe keeps
USER_AGENT = "zerodown-health"
_PRINTABLE = "".join(chr(c) for c in range(33, 127))


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe: pass or fail, a short sentence why, and when and how long."""

    ok: bool
    detail: str
    seconds: float
    at: float  # unix time the probe started
    status_code: int | None = None


Prober = Callable[[HealthCheckSpec, str, int], Awaitable[ProbeResult]]


class _BadTarget(Exception):
    """A target answered in a way that fails the check; the message is the probe's detail."""

    def __init__(self, detail: str, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


async def probe(spec: HealthCheckSpec, host: str, port: int) -> ProbeResult:
    """Run the check `spec` describes against host:port, bounded by `spec.timeout`."""
    at = time.time()
    started = time.monotonic()
    ok, detail, status = False, "", None
    try:
        if spec.kind == "http":
            ok, detail, status = await _probe_http(spec, host, port)
        elif spec.kind == "tcp":
            ok, detail = await _probe_tcp(spec, host, port)
        elif spec.kind == "command":
            ok, detail = await _probe_command(spec, host, port)
        else:
            detail = f"unknown check kind {spec.kind!r}"
    except _BadTarget as exc:
        detail, status = exc.detail, exc.status_code
    except TimeoutError:
        # TimeoutError is an OSError too: it must be caught before the connection errors below.
        detail = f"timed out after {format_seconds(spec.timeout)} s"
    except OSError as exc:
        detail = describe_connection_error(exc, host)
    return ProbeResult(ok, detail, time.monotonic() - started, at, status)


def format_seconds(seconds: float) -> str:
    """Seconds for a sentence: '2.0', '0.25', '60' only when whole and large ('60 s deadline')."""
    if seconds >= 10 and seconds == int(seconds):
        return str(int(seconds))
    return f"{seconds:.1f}" if round(seconds, 1) == seconds else f"{seconds:g}"


def describe_connection_error(exc: OSError, host: str) -> str:
    """A short sentence for a failed connection."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {host!r}"
    # With several addresses (localhost: ::1 and 127.0.0.1) asyncio raises a plain OSError
    # "Multiple exceptions: ..." without errno, so the text is the only clue left.
    if (
        isinstance(exc, ConnectionRefusedError)
        or exc.errno == errno.ECONNREFUSED
        or "Connection refused" in str(exc)
    ):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the target"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by the target"
    return f"connection failed: {exc.strerror or exc}"


# --- HTTP -----------------------------------------------------------------------------------


async def _probe_http(spec: HealthCheckSpec, host: str, port: int) -> tuple[bool, str, int | None]:
    writer: asyncio.StreamWriter | None = None
    clean = False
    try:
        async with asyncio.timeout(spec.timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(_request(spec, host, port))
            await writer.drain()
            status, headers = await _read_head(reader)
            if status not in spec.statuses:
                raise _BadTarget(f"HTTP {status}", status)
            if spec.json_fields:
                body = await _read_body(reader, headers, status)
                _check_json(body, spec.json_fields, status)
            clean = True
            return True, f"HTTP {status}", status
    except asyncio.IncompleteReadError as exc:
        what = "without a response" if not exc.partial else "before the response ended"
        raise _BadTarget(f"connection closed {what}") from exc
    except asyncio.LimitOverrunError as exc:
        raise _BadTarget("response head too large") from exc
    finally:
        if writer is not None:
            _close(writer, graceful=clean)


def _request(spec: HealthCheckSpec, host: str, port: int) -> bytes:
    path = spec.path if spec.path.startswith("/") else "/" + spec.path
    path = quote(path, safe=_PRINTABLE)
    host_header = spec.host_header or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host_header}",
        "Connection: close",
        f"User-Agent: {USER_AGENT}",
        "Accept: */*",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and headers (lower-case names) of the final response, skipping 1xx interim ones."""
    for _ in range(10):  # a server sending endless 1xx responses is broken
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise _BadTarget(f"not an HTTP response: {lines[0][:60]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if not 100 <= status < 200 or status == 101:
            return status, headers
    raise _BadTarget("too many interim (1xx) responses")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], status: int) -> bytes:
    if 100 <= status < 200 or status in (204, 304):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError as exc:
            raise _BadTarget("bad Content-Length", status) from exc
        if length > BODY_LIMIT:
            raise _BadTarget("response body is larger than 1 MB", status)
        return await reader.readexactly(length)
    # Close-delimited: the server ends the body by closing (we asked for Connection: close).
    body = await reader.read(BODY_LIMIT + 1)
    while len(body) <= BODY_LIMIT and (chunk := await reader.read(BODY_LIMIT + 1 - len(body))):
        body += chunk
    if len(body) > BODY_LIMIT:
        raise _BadTarget("response body is larger than 1 MB", status)
    return body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _BadTarget("bad chunk size in chunked body") from exc
        if size == 0:
            return bytes(body)  # trailers, if any, are not needed: the connection closes
        if len(body) + size > BODY_LIMIT:
            raise _BadTarget("response body is larger than 1 MB")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _check_json(body: bytes, fields: dict[str, Any], status: int) -> None:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadTarget(f"HTTP {status} but the body is not JSON", status) from exc
    for path, want in fields.items():
        found, value = _lookup(document, path)
        if not found:
            raise _BadTarget(f"{path} is missing, want {want!r}", status)
        if not _same_json_value(value, want):
            raise _BadTarget(f"{path} is {value!r}, want {want!r}", status)


def _lookup(document: Any, path: str) -> tuple[bool, Any]:
    """Follow a dotted path (`components.db.status`, list items by index) through JSON."""
    value = document
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return False, None
    return True, value


def _same_json_value(got: Any, want: Any) -> bool:
    # Python says True == 1; JSON says a boolean is not a number.
    if isinstance(got, bool) or isinstance(want, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    return bool(got == want)


def _close(writer: asyncio.StreamWriter, *, graceful: bool) -> None:
    # A failed or timed-out probe may leave unread data or a stuck peer: reset instead of waiting.
    if graceful:
        writer.close()
    else:
        writer.transport.abort()


# --- TCP ------------------------------------------------------------------------------------


async def _probe_tcp(spec: HealthCheckSpec, host: str, port: int) -> tuple[bool, str]:
    async with asyncio.timeout(spec.timeout):
        _, writer = await asyncio.open_connection(host, port)
    writer.close()
    return True, "connected"


# --- command --------------------------------------------------------------------------------


async def _probe_command(spec: HealthCheckSpec, host: str, port: int) -> tuple[bool, str]:
    if not spec.command:
        return False, "command check has no command"
    env = dict(os.environ, HEALTH_HOST=host, HEALTH_PORT=str(port))
    try:
        process = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            spec.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, so a timeout kills its children too
        )
    except OSError as exc:
        return False, f"cannot run the command: {exc.strerror or exc}"
    try:
        async with asyncio.timeout(spec.timeout):
            assert process.stdout is not None  # we asked for a pipe
            output = await _read_tail(process.stdout)
            code = await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    last = _last_line(output)
    if code == 0:
        return True, last or "exit code 0"
    return False, last or f"exit code {code}"


async def _read_tail(stream: asyncio.StreamReader) -> bytes:
    tail = b""
    while chunk := await stream.read(OUTPUT_TAIL):
        tail = (tail + chunk)[-OUTPUT_TAIL:]
    return tail


def _last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:200] if lines else ""
