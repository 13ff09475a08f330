"""The built-in proxy end to end: real example apps behind it, real sockets, real clients."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import websockets

from zerodown.routers.base import DrainResult, TargetHealth
from zerodown.routers.builtin.proxy import ProxySettings

from proxy_fixtures import (  # isort: skip - a sibling module, found through rootdir sys.path
    RunningProxy,
    WebApp,
    free_port,
    proxy,
    raw_request,
    read_response,
    start_proxy,
    wait_until,
    webapps,
)

__all__ = ["proxy", "webapps"]  # fixtures used by name

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def tiny_upstream(handler: Handler) -> tuple[asyncio.Server, int]:
    """A hand-written upstream for behaviour the example app cannot show."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def web(proxy: RunningProxy, webapps: list[WebApp]) -> AsyncIterator[RunningProxy]:
    """The proxy with route `web` -> example app `a`."""
    proxy.route()
    proxy.target("a", webapps[0].port)
    yield proxy


@pytest.fixture
async def client(web: RunningProxy) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as c:
        yield c


# -- relaying ----------------------------------------------------------------------------------


async def test_get_and_post_echo_with_a_1mb_streamed_body(
    web: RunningProxy, client: httpx.AsyncClient
) -> None:
    response = await client.get("/")
    assert response.status_code == 200 and response.json()["version"] == "a"

    body = os.urandom(1024 * 1024)
    sized = await client.post("/echo", content=body)
    assert sized.status_code == 200 and sized.content == body

    async def pieces() -> AsyncIterator[bytes]:  # no length: sent chunked
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    chunked = await client.post("/echo", content=pieces())
    assert chunked.status_code == 200 and chunked.content == body
    assert [c.status for c in web.observer.calls] == [200, 200, 200]


async def test_chunked_response_is_relayed_chunked(client: httpx.AsyncClient) -> None:
    response = await client.get("/chunked?count=5")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text == "".join(f"chunk {i}\n" for i in range(5))


async def test_sse_events_arrive_one_by_one_before_the_stream_ends(
    client: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    async with client.stream("GET", "/sse?count=4&interval=0.4") as response:
        assert response.headers["content-type"] == "text/event-stream"
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - started)
    total = time.monotonic() - started
    assert len(arrivals) == 4
    assert arrivals[0] < 0.8 < total  # the first event did not wait for the end
    assert arrivals[-1] - arrivals[0] > 0.8  # and the others came apart, as sent


async def test_websocket_echo_is_tunnelled_and_counted_in_flight(web: RunningProxy) -> None:
    target = web.table.targets("web")[0]
    async with websockets.connect(f"ws://127.0.0.1:{web.port}/ws") as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01" * 50_000)
        assert await ws.recv() == b"\x00\x01" * 50_000
        assert target.inflight == 1 and web.server.stats()["tunnels"] == 1
    await wait_until(lambda: target.inflight == 0)
    assert [c.status for c in web.observer.calls] == [101]


async def test_forwarded_headers_request_id_and_hop_by_hop(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/headers",
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Request-Id": "req-123",
            "Connection": "keep-alive, X-Secret",
            "X-Secret": "hop",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eA==",
        },
    )
    seen = response.json()["headers"]
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == client.base_url.netloc.decode()
    assert seen["x-request-id"] == "req-123" == response.headers["x-request-id"]
    assert not {"x-secret", "te", "proxy-authorization"} & set(seen)

    fresh = await client.get("/headers")
    generated = fresh.json()["headers"]["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert fresh.headers["x-request-id"] == generated


async def test_keep_alive_both_sides_reuses_one_upstream_connection(
    web: RunningProxy, client: httpx.AsyncClient
) -> None:
    pids = {(await client.get("/")).json()["pid"] for _ in range(20)}
    stats = web.server.stats()
    assert len(pids) == 1
    assert stats["client_connections"] == 1 and stats["upstream_connections"] == 1


async def test_pipelined_requests_are_answered_in_order(web: RunningProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    writer.write(
        b"GET /slow?seconds=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    )
    first, second, third = [await read_response(reader) for _ in range(3)]
    writer.close()
    assert json.loads(first[2])["slept"] == 0.3
    assert second[0] == 201
    assert third[2] == b"hello"


async def test_http10_client_gets_an_unchunked_body_then_close(web: RunningProxy) -> None:
    raw = await raw_request(web.port, b"GET /chunked?count=3 HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower()
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"


async def test_head_request_leaves_the_pooled_connection_usable(
    client: httpx.AsyncClient,
) -> None:
    head = await client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert (await client.get("/")).json()["version"] == "a"


# -- errors --------------------------------------------------------------------------------------


async def test_no_route_is_404_json(proxy: RunningProxy) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as c:
        response = await c.get("/nowhere", headers={"Host": "shop.test:8080"})
    assert response.status_code == 404
    assert response.json() == {"error": "no route", "host": "shop.test", "path": "/nowhere"}


async def test_no_eligible_target_is_503_json(web: RunningProxy, client: httpx.AsyncClient) -> None:
    web.table.set_health("web", "a", TargetHealth.UNHEALTHY)
    response = await client.get("/")
    assert response.status_code == 503
    assert response.json() == {"error": "no healthy target", "service": "web"}
    assert web.observer.calls[-1].status == 503 and web.observer.calls[-1].target is None


async def test_limits_give_413_and_431_without_contacting_the_target(webapps: list[WebApp]) -> None:
    running = await start_proxy(ProxySettings(max_body_bytes=1000, max_header_bytes=1024))
    try:
        running.route()
        target = running.target("a", webapps[0].port)
        async with httpx.AsyncClient(base_url=running.url) as c:
            too_big = await c.post("/echo", content=b"x" * 2000)
            assert too_big.status_code == 413
            big_head = await c.get("/", headers={"X-Big": "y" * 2000})
            assert big_head.status_code == 431
        assert running.server.stats()["upstream_connections"] == 0
        assert target.inflight == 0
    finally:
        await running.server.shutdown(2.0)


async def test_chunked_body_growing_past_the_limit_is_413() -> None:
    received = bytearray()

    async def whole_body_first(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        while chunk := await reader.read(65536):  # answers only after the whole body
            received.extend(chunk)
            if received.endswith(b"0\r\n\r\n"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        w.close()

    server, port = await tiny_upstream(whole_body_first)
    running = await start_proxy(ProxySettings(max_body_bytes=1000))
    try:
        running.route()
        running.target("t", port)

        async def growing() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"z" * 400

        async with httpx.AsyncClient(base_url=running.url) as c:
            response = await c.post("/", content=growing())
        assert response.status_code == 413
        assert response.headers["connection"] == "close"
        assert received.count(b"z") <= 1000  # never more than the limit went through
    finally:
        await running.server.shutdown(2.0)
        server.close()


async def test_bad_request_syntax_is_400_and_closes(web: RunningProxy) -> None:
    raw = await raw_request(web.port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400") and b"connection: close" in raw


async def test_response_header_timeout_is_504(webapps: list[WebApp]) -> None:
    running = await start_proxy(ProxySettings(response_timeout=0.5))
    try:
        running.route()
        running.target("a", webapps[0].port)
        async with httpx.AsyncClient(base_url=running.url) as c:
            started = time.monotonic()
            response = await c.get("/slow?seconds=3")
        assert response.status_code == 504 and time.monotonic() - started < 2.5
        assert running.observer.calls[-1].upstream_error
    finally:
        await running.server.shutdown(2.0)


async def test_target_closing_without_answer_is_502(proxy: RunningProxy) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server, port = await tiny_upstream(hang_up)
    async with server:
        proxy.route()
        proxy.target("rude", port)
        async with httpx.AsyncClient(base_url=proxy.url) as c:
            response = await c.get("/")
    assert response.status_code == 502 and response.json()["error"] == "bad gateway"


async def test_refused_only_target_is_502_and_marked_unhealthy(proxy: RunningProxy) -> None:
    proxy.route()
    dead = proxy.target("dead", free_port())
    async with httpx.AsyncClient(base_url=proxy.url) as c:
        response = await c.get("/")
    assert response.status_code == 502
    assert dead.health is TargetHealth.UNHEALTHY and dead.inflight == 0


async def test_refused_port_is_retried_on_another_target(
    proxy: RunningProxy, webapps: list[WebApp]
) -> None:
    proxy.route()
    dead = proxy.target("dead", free_port(), weight=1000)  # picked first
    proxy.target("a", webapps[0].port, weight=1)
    async with httpx.AsyncClient(base_url=proxy.url) as c:
        response = await c.get("/")
        assert response.status_code == 200 and response.json()["version"] == "a"
        assert dead.health is TargetHealth.UNHEALTHY
        assert all([(await c.get("/")).status_code == 200 for _ in range(5)])


async def test_pooled_connection_closed_by_target_is_retried_fresh(proxy: RunningProxy) -> None:
    """A target that drops a kept-alive connection on its second request must not cost a 502."""
    connections = 0

    async def once_per_connection(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request on this connection...
        w.close()  # ...is dropped unanswered, as a keep-alive timeout race would

    server, port = await tiny_upstream(once_per_connection)
    async with server:
        proxy.route()
        proxy.target("flaky", port)
        async with httpx.AsyncClient(base_url=proxy.url) as c:
            statuses = [(await c.get("/")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert connections == 3


async def test_target_dying_with_a_read_request_in_hand_is_retried_elsewhere(
    proxy: RunningProxy, webapps: list[WebApp]
) -> None:
    """A target killed after reading a GET (before answering) costs no 502: the request goes to
    another target once; a POST, which may have had an effect, gets the 502."""

    async def dies_on_request(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        w.transport.abort()  # as a SIGKILLed process: reset, no answer

    server, port = await tiny_upstream(dies_on_request)
    async with server:
        proxy.route()
        dying = proxy.target("dying", port, weight=1000)  # picked first
        proxy.target("a", webapps[0].port, weight=1)
        async with httpx.AsyncClient(base_url=proxy.url) as c:
            response = await c.get("/")
            assert response.status_code == 200 and response.json()["version"] == "a"
            assert dying.health is TargetHealth.UNHEALTHY
            proxy.table.set_health("web", "dying", TargetHealth.HEALTHY)  # back: now a POST
            posted = await c.post("/echo", content=b"x")
            assert posted.status_code == 502


# -- lifecycle -----------------------------------------------------------------------------------


async def test_shutdown_closes_idle_clients_and_lets_active_ones_finish(
    webapps: list[WebApp],
) -> None:
    running = await start_proxy()
    running.route()
    running.target("a", webapps[0].port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", running.port)
    idle_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(idle_reader))[0] == 200
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", running.port)
    busy_writer.write(b"GET /slow?seconds=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_until(lambda: running.server.stats()["active_requests"] == 1)

    shutdown = asyncio.create_task(running.server.shutdown(grace=10))
    assert await asyncio.wait_for(idle_reader.read(), 2) == b""  # closed at once
    status, headers, _ = await read_response(busy_reader)
    assert status == 200 and headers["connection"] == "close"
    assert await asyncio.wait_for(busy_reader.read(), 2) == b""
    await asyncio.wait_for(shutdown, 5)
    idle_writer.close()
    busy_writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", running.port)


async def test_stop_accepting_refuses_new_clients_but_serves_open_ones(
    web: RunningProxy, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/")).status_code == 200  # a kept-alive connection is open
    await web.server.stop_accepting()
    assert (await client.get("/")).status_code == 200
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", web.port)
    assert web.server.stats()["listening"] == 0


async def test_forced_drain_cuts_an_open_stream_and_counts_it(web: RunningProxy) -> None:
    target = web.table.targets("web")[0]
    async with (
        httpx.AsyncClient(base_url=web.url, timeout=10) as c,
        c.stream("GET", "/sse?count=100&interval=0.1") as response,
    ):
        lines = response.aiter_lines()
        assert (await anext(lines)).startswith("data:")
        result = await asyncio.wait_for(web.table.drain_target("web", "a", timeout=0.3), 5)
        with pytest.raises(httpx.HTTPError):  # the stream is cut, visibly unfinished
            async for _ in lines:
                pass
    assert (result.forced, result.finished) == (1, 0)
    assert target.inflight == 0 and web.table.targets("web") == []
    assert web.observer.calls[-1].upstream_error


async def test_client_leaving_mid_response_frees_the_target(web: RunningProxy) -> None:
    target = web.table.targets("web")[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    writer.write(b"GET /sse?count=100&interval=0.1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"data:")
    assert target.inflight == 1
    writer.close()
    await wait_until(lambda: target.inflight == 0)
    await wait_until(lambda: web.server.stats()["upstream_connections"] == 0)
    assert web.observer.calls[-1].status == 200


# -- the key test: drain under load ----------------------------------------------------------------


@pytest.mark.slow
async def test_drain_under_load_drops_nothing(proxy: RunningProxy, webapps: list[WebApp]) -> None:
    """50 closed-loop clients (10 % slow), a WebSocket and an SSE stream; add b, drain a."""
    loop = asyncio.get_running_loop()
    proxy.route(balance="least_inflight", drain_timeout=20.0)
    proxy.target("a", webapps[0].port)
    stop = asyncio.Event()
    drain_started = float("inf")
    done: list[tuple[float, int, str]] = []  # (started, status, version)
    failures: list[str] = []

    async def client_loop(worker: int) -> None:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=15) as c:
            for n in range(10_000):
                if stop.is_set():
                    return
                path = "/slow?seconds=2" if (n + worker) % 10 == 0 else "/"
                started = loop.time()
                try:
                    response = await c.get(path)
                    done.append((started, response.status_code, response.json()["version"]))
                except Exception as exc:  # every failure is a finding: record it
                    failures.append(f"{path}: {exc!r}")

    async def websocket() -> int:
        echoes = 0
        async with websockets.connect(f"ws://127.0.0.1:{proxy.port}/ws") as ws:
            while not stop.is_set():
                await ws.send(f"m{echoes}")
                assert await ws.recv() == f"m{echoes}"
                echoes += 1
                await asyncio.sleep(0.1)
        return echoes

    async def sse() -> list[str]:
        async with (
            httpx.AsyncClient(base_url=proxy.url, timeout=15) as c,
            c.stream("GET", "/sse?count=25&interval=0.2") as response,
        ):
            return [line async for line in response.aiter_lines() if line.startswith("data:")]

    async def scenario() -> tuple[DrainResult, int, list[str]]:
        nonlocal drain_started
        streams = (asyncio.create_task(websocket()), asyncio.create_task(sse()))
        clients = [asyncio.create_task(client_loop(i)) for i in range(50)]
        await wait_until(lambda: len(done) >= 200, timeout=10)  # load is flowing
        proxy.target("b", webapps[1].port)
        drain_started = loop.time()
        drain = asyncio.create_task(proxy.table.drain_target("web", "a"))
        await asyncio.sleep(3.0)  # load keeps running while a drains
        stop.set()
        await asyncio.gather(*clients)
        echoes, events = await streams[0], await streams[1]
        return await drain, echoes, events

    result, echoes, events = await asyncio.wait_for(scenario(), 30)

    assert failures == []
    assert all(status == 200 for _, status, _ in done), {s for _, s, _ in done}
    assert len(events) == 25 and all(e.endswith(" a") for e in events)  # the stream finished on a
    assert echoes >= 20
    assert result.forced == 0 and result.finished >= 3
    after = [version for started, _, version in done if started > drain_started + 0.01]
    assert after and set(after) == {"b"}  # nothing new went to the draining target
    assert [t.spec.target_id for t in proxy.table.targets("web")] == ["b"]
    print(f"\n{len(done)} requests ok ({len(done) - len(after)} before the drain): {result}")


# -- uvloop and throughput -------------------------------------------------------------------------


def test_relays_on_uvloop_too(webapps: list[WebApp]) -> None:
    """The daemon runs on uvloop, whose transports differ from asyncio's: relay, SSE, WebSocket."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        running = await start_proxy()
        running.route()
        running.target("a", webapps[0].port)
        try:
            async with httpx.AsyncClient(base_url=running.url, timeout=10) as c:
                assert (await c.get("/")).json()["version"] == "a"
                body = os.urandom(256 * 1024)
                assert (await c.post("/echo", content=body)).content == body
                sse = await c.get("/sse?count=3&interval=0.05")
                assert sse.text.count("data:") == 3
            async with websockets.connect(f"ws://127.0.0.1:{running.port}/ws") as ws:
                await ws.send("uv")
                assert await ws.recv() == "uv"
        finally:
            await running.server.shutdown(2.0)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario(), 20))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_print_throughput_through_the_proxy_vs_direct(webapps: list[WebApp]) -> None:
    """Measures (prints, does not assert) req/s with wrk, 50 connections, 3 s each, on uvloop."""
    uvloop = pytest.importorskip("uvloop")

    async def wrk(url: str) -> float:
        proc = await asyncio.create_subprocess_exec(
            "wrk", "-t1", "-c50", "-d3s", url, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        line = next(x for x in out.decode().splitlines() if x.startswith("Requests/sec"))
        return float(line.split()[1])

    async def scenario() -> tuple[float, float]:
        running = await start_proxy()
        running.route()
        running.target("a", webapps[0].port)
        try:
            direct = await wrk(f"http://127.0.0.1:{webapps[0].port}/")
            proxied = await wrk(running.url + "/")
        finally:
            await running.server.shutdown(2.0)
        return direct, proxied

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        direct, proxied = runner.run(asyncio.wait_for(scenario(), 30))
    print(f"\ndirect {direct:.0f} req/s, through the proxy {proxied:.0f} req/s")
    assert direct > 0 and proxied > 0
