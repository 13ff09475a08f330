"""The sample web app zerodown deploys in its demo, tests and benchmarks.

A pure ASGI app served by uvicorn, configured by environment variables:
    PORT            port to listen on (zerodown assigns it)
    BOOT_SECONDS    seconds to wait before listening (simulates a slow boot), default 0
    FAIL_HEALTH     "1": /health answers 503 {"status": "DOWN"}
    ERROR_RATE      fraction of `/` requests answered 500, default 0
    EXTRA_LATENCY_MS added to every `/` request, default 0
    APP_VERSION     shown by `/` (else the VERSION file beside this script, else ZERODOWN_REVISION)
    PRIVATE_TOKEN_SHA256  hex SHA-256 of the bearer token `/private` accepts (unset: none)

Endpoints: GET / ; GET /health, /actuator/health ; GET /slow?seconds=2 ;
GET /sse?count=5&interval=0.2 ; GET /chunked?count=5 ; POST /echo ; GET /headers ;
GET /status/<code> ; GET /private (200 with the right bearer token, else 401) ;
WebSocket /ws (echo).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_HERE = Path(__file__).resolve().parent


def _version() -> str:
    if os.environ.get("APP_VERSION"):
        return os.environ["APP_VERSION"]
    version_file = _HERE / "VERSION"
    if version_file.exists():
        return version_file.read_text().strip()
    return os.environ.get("ZERODOWN_REVISION", "dev")


VERSION = _version()
FAIL_HEALTH = os.environ.get("FAIL_HEALTH") == "1" or (_HERE / "FAIL_HEALTH").exists()
ERROR_RATE = float(os.environ.get("ERROR_RATE", "0") or 0)
EXTRA_LATENCY = float(os.environ.get("EXTRA_LATENCY_MS", "0") or 0) / 1000


async def _send_json(send: Send, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode()
    return {k: v[-1] for k, v in parse_qs(raw).items()}


async def _websocket(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def _stream(send: Send, content_type: bytes, chunks: int, interval: float, sse: bool) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache")],
        }
    )
    for i in range(chunks):
        body = f"data: {i} {VERSION}\n\n" if sse else f"chunk {i}\n"
        await send({"type": "http.response.body", "body": body.encode(), "more_body": True})
        if interval:
            await asyncio.sleep(interval)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    path: str = scope["path"]
    query = _query(scope)
    if path in ("/health", "/actuator/health"):
        if FAIL_HEALTH:
            await _send_json(send, 503, {"status": "DOWN", "version": VERSION})
        else:
            await _send_json(send, 200, {"status": "UP", "version": VERSION})
    elif path == "/slow":
        await asyncio.sleep(float(query.get("seconds", "2")))
        await _send_json(send, 200, {"slept": float(query.get("seconds", "2")), "version": VERSION})
    elif path == "/sse":
        count, interval = int(query.get("count", "5")), float(query.get("interval", "0.2"))
        await _stream(send, b"text/event-stream", count, interval, sse=True)
    elif path == "/chunked":
        count, interval = int(query.get("count", "5")), float(query.get("interval", "0"))
        await _stream(send, b"text/plain", count, interval, sse=False)
    elif path == "/echo":
        await _echo(receive, send)
    elif path == "/headers":
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        client = scope.get("client")
        await _send_json(send, 200, {"headers": headers, "client": client and client[0]})
    elif path.startswith("/status/"):
        await _send_json(send, int(path.rsplit("/", 1)[1]), {"version": VERSION})
    elif path == "/private":
        ok = _authorized(dict(scope["headers"]).get(b"authorization", b""))
        await _send_json(send, 200 if ok else 401, {"authorized": ok})
    else:
        if EXTRA_LATENCY:
            await asyncio.sleep(EXTRA_LATENCY)
        if ERROR_RATE and random.random() < ERROR_RATE:
            await _send_json(send, 500, {"error": "injected", "version": VERSION})
            return
        await _send_json(
            send,
            200,
            {
                "version": VERSION,
                "revision": os.environ.get("ZERODOWN_REVISION", ""),
                "instance": os.environ.get("ZERODOWN_INSTANCE", ""),
                "pid": os.getpid(),
            },
        )


def _authorized(header: bytes) -> bool:
    # Only a hash in the environment: the token itself need not appear anywhere but the request.
    expected = os.environ.get("PRIVATE_TOKEN_SHA256", "")
    scheme, _, token = header.partition(b" ")
    if not expected or scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(hashlib.sha256(token).hexdigest(), expected.lower())


async def _echo(receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    while True:
        message = await receive()
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if body:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if not more:
            break
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def main() -> None:
    """Boot (optionally slowly), then serve on 127.0.0.1:$PORT until SIGTERM."""
    import uvicorn

    boot = float(os.environ.get("BOOT_SECONDS", "0") or 0)
    if boot:
        time.sleep(boot)
    port = int(os.environ.get("PORT", "8000"))
    host = os.environ.get("HOST", "127.0.0.1")
    print(f"webapp {VERSION} listening on {host}:{port}", flush=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=os.environ.get("LOG_LEVEL", "warning"),
        timeout_graceful_shutdown=int(os.environ.get("GRACEFUL_SECONDS", "30")),
        ws="websockets-sansio" if "websockets-sansio" in _ws_impls() else "auto",
    )
    sys.exit(0)


def _ws_impls() -> set[str]:
    try:
        from uvicorn.config import WS_PROTOCOLS

        return set(WS_PROTOCOLS)
    except ImportError:  # older uvicorn
        return set()


if __name__ == "__main__":
    main()
