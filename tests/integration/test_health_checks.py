"""Probes and the start wait against real servers and processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.processes import wait_exited

from zerodown.errors import HealthCheckFailed
from zerodown.health import HealthCheckSpec, ProbeResult, probe, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]
WEBAPP = ROOT / "examples" / "webapp" / "app.py"
UP = json.dumps({"status": "UP", "components": {"db": {"status": "UP"}}}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(spec_path: str = "/health", **changes: Any) -> HealthCheckSpec:
    values: dict[str, Any] = {"kind": "http", "path": spec_path, "timeout": 2.0}
    values.update(changes)
    return HealthCheckSpec(**values)


def response(status: int, body: bytes, headers: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{headers}"
    return head.encode() + b"\r\n" + body


class RawServer:
    """An asyncio TCP server that records each request head and answers with fixed bytes.

    `answer=None` makes it hang (never answer) until the test ends.
    """

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.requests: list[str] = []
        self.port = 0
        self._stop = asyncio.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head.decode("latin-1"))
            if self.answer is None:
                await asyncio.wait_for(self._stop.wait(), timeout=30)
            else:
                writer.write(self.answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the probe hung up first, which is its right
        finally:
            writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RawServer]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._stop.set()
            server.close()
            await server.wait_closed()


async def probe_raw(answer: bytes | None, spec: HealthCheckSpec) -> tuple[ProbeResult, list[str]]:
    server = RawServer(answer)
    async with server.running():
        result = await probe(spec, "127.0.0.1", server.port)
    return result, server.requests


# --- HTTP against hand-made servers ---------------------------------------------------------


async def test_http_probe_sends_get_with_host_user_agent_and_connection_close() -> None:
    result, requests = await probe_raw(response(200, b"", "Content-Length: 0\r\n"), http())
    assert result.ok and result.detail == "HTTP 200" and result.status_code == 200
    lines = requests[0].split("\r\n")
    port = lines[1].rsplit(":", 1)[1]
    assert lines[0] == "GET /health HTTP/1.1"
    assert lines[1] == f"Host: 127.0.0.1:{port}"
    assert "Connection: close" in lines
    assert "User-Agent: zerodown-health" in lines


async def test_http_probe_uses_the_configured_host_header() -> None:
    spec = http(host_header="api.example.com")
    _, requests = await probe_raw(response(200, b"", "Content-Length: 0\r\n"), spec)
    assert "\r\nHost: api.example.com\r\n" in requests[0]


async def test_http_probe_fails_on_a_status_outside_the_accepted_ones() -> None:
    result, _ = await probe_raw(response(503, b"{}", "Content-Length: 2\r\n"), http())
    assert not result.ok
    assert result.detail == "HTTP 503"
    assert result.status_code == 503
    spec = http(statuses=(200, 503))
    accepted, _ = await probe_raw(response(503, b"{}", "Content-Length: 2\r\n"), spec)
    assert accepted.ok


async def test_http_probe_reads_a_chunked_json_body_with_extensions_and_trailers() -> None:
    chunks = [UP[:10], UP[10:25], UP[25:]]
    body = b"".join(f"{len(c):x};ext=1\r\n".encode() + c + b"\r\n" for c in chunks)
    answer = response(200, body + b"0\r\nX-Trailer: 1\r\n\r\n", "Transfer-Encoding: chunked\r\n")
    spec = http(json_fields={"status": "UP", "components.db.status": "UP"})
    result, _ = await probe_raw(answer, spec)
    assert result.ok, result.detail


async def test_http_probe_reads_a_close_delimited_json_body() -> None:
    result, _ = await probe_raw(response(200, UP), http(json_fields={"status": "UP"}))
    assert result.ok, result.detail


async def test_http_probe_names_the_field_and_values_when_json_does_not_match() -> None:
    down = json.dumps({"status": "DOWN"}).encode()
    answer = response(200, down, f"Content-Length: {len(down)}\r\n")
    result, _ = await probe_raw(answer, http(json_fields={"status": "UP"}))
    assert not result.ok
    assert result.detail == "status is 'DOWN', want 'UP'"
    missing, _ = await probe_raw(answer, http(json_fields={"components.db.status": "UP"}))
    assert missing.detail == "components.db.status is missing, want 'UP'"


async def test_http_probe_fails_a_non_json_body_when_fields_are_checked() -> None:
    answer = response(200, b"<html>ok</html>", "Content-Length: 15\r\n")
    result, _ = await probe_raw(answer, http(json_fields={"status": "UP"}))
    assert not result.ok
    assert result.detail == "HTTP 200 but the body is not JSON"
    unchecked, _ = await probe_raw(answer, http())
    assert unchecked.ok  # without json_fields the body is not even read


async def test_http_probe_refuses_bodies_over_one_megabyte() -> None:
    big = b" " * (1024 * 1024 + 10)
    spec = http(json_fields={"status": "UP"})
    declared, _ = await probe_raw(response(200, big, f"Content-Length: {len(big)}\r\n"), spec)
    assert declared.detail == "response body is larger than 1 MB"
    undeclared, _ = await probe_raw(response(200, big), spec)
    assert undeclared.detail == "response body is larger than 1 MB"


async def test_http_probe_times_out_on_a_server_that_never_answers() -> None:
    started = time.monotonic()
    result, requests = await probe_raw(None, http(timeout=0.3))
    assert not result.ok
    assert result.detail == "timed out after 0.3 s"
    assert len(requests) == 1
    assert 0.25 <= result.seconds < 1.5
    assert time.monotonic() - started < 3.0


async def test_http_probe_reports_a_connection_closed_without_a_response() -> None:
    result, _ = await probe_raw(b"", http())
    assert not result.ok
    assert result.detail == "connection closed without a response"


async def test_http_and_tcp_probes_report_connection_refused() -> None:
    port = free_port()
    for spec in (http(), HealthCheckSpec(kind="tcp", timeout=2.0)):
        result = await probe(spec, "127.0.0.1", port)
        assert not result.ok
        assert result.detail == "connection refused"
        assert result.status_code is None


async def test_tcp_probe_passes_when_something_accepts() -> None:
    server = RawServer(b"")
    async with server.running():
        result = await probe(HealthCheckSpec(kind="tcp", timeout=2.0), "127.0.0.1", server.port)
    assert result.ok
    assert result.detail == "connected"
    assert result.at > 1_600_000_000


# --- command --------------------------------------------------------------------------------


def command(cmd: str, timeout: float = 5.0) -> HealthCheckSpec:
    return HealthCheckSpec(kind="command", command=cmd, timeout=timeout)


async def test_command_probe_exit_zero_passes_with_last_line_and_target_env() -> None:
    spec = command('echo starting; echo "up on $HEALTH_HOST:$HEALTH_PORT  "')
    result = await probe(spec, "127.0.0.1", 4321)
    assert result.ok
    assert result.detail == "up on 127.0.0.1:4321"


async def test_command_probe_nonzero_exit_fails_with_output_or_exit_code() -> None:
    result = await probe(command("echo 'db unreachable' >&2; exit 1"), "127.0.0.1", 1)
    assert not result.ok
    assert result.detail == "db unreachable"
    silent = await probe(command("exit 3"), "127.0.0.1", 1)
    assert not silent.ok and silent.detail == "exit code 3"


async def test_command_probe_kills_the_whole_command_at_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    spec = command(f"sleep 30 & echo $! > {pidfile}; wait", timeout=0.5)
    result = await probe(spec, "127.0.0.1", 1)
    assert not result.ok
    assert result.detail == "timed out after 0.5 s"
    assert result.seconds < 3.0
    child = int(pidfile.read_text())
    assert await wait_exited(child), "the command's child outlived the timeout"


# --- the example web app --------------------------------------------------------------------


@contextmanager
def webapp(**env: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    if not WEBAPP.exists():
        pytest.skip("examples/webapp/app.py is not there yet")
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), **env}
    process = subprocess.Popen(
        [sys.executable, str(WEBAPP)],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def alive_of(process: subprocess.Popen[bytes]) -> Any:
    async def alive() -> int | None:
        return process.poll()

    return alive


def starting(**changes: Any) -> HealthCheckSpec:
    values: dict[str, Any] = {
        "path": "/actuator/health",
        "json_fields": {"status": "UP"},
        "timeout": 2.0,
        "interval": 0.1,
        "healthy_threshold": 2,
        "unhealthy_threshold": 3,
        "start_period": 0.0,
        "deadline": 30.0,
    }
    values.update(changes)
    return HealthCheckSpec(**values)


async def test_wait_until_healthy_passes_on_a_slow_booting_webapp_without_lag() -> None:
    """A 1 s boot: the wait ends right after the deciding probe, a boot plus about one interval."""
    results: list[tuple[float, ProbeResult]] = []
    with webapp(BOOT_SECONDS="1") as (process, port):
        started = time.monotonic()
        report = await wait_until_healthy(
            starting(start_period=30.0),
            "127.0.0.1",
            port,
            alive=alive_of(process),
            on_result=lambda r: results.append((time.monotonic(), r)),
        )
        returned = time.monotonic()
    assert report.healthy
    assert report.last is not None and report.last.detail == "HTTP 200"
    assert report.probes >= 3  # refused while booting, then two passes
    assert results[0][1].detail == "connection refused"
    assert returned - results[-1][0] < 0.05  # returned within a few ms of the passing probe
    assert 1.0 <= returned - started < 10.0


async def listening(port: int) -> None:
    """Wait (bounded) until something accepts connections on the port."""
    spec = HealthCheckSpec(kind="tcp", timeout=1.0)
    for _ in range(300):
        if (await probe(spec, "127.0.0.1", port)).ok:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after 15 s")


async def test_wait_until_healthy_fails_a_webapp_whose_health_is_down() -> None:
    with webapp(FAIL_HEALTH="1") as (process, port):
        await listening(port)
        with pytest.raises(HealthCheckFailed) as caught:
            await wait_until_healthy(starting(), "127.0.0.1", port, alive=alive_of(process))
    assert str(caught.value) == (
        "unhealthy threshold reached: 3 consecutive failures, last: HTTP 503"
    )


async def test_wait_until_healthy_fails_fast_when_the_webapp_exits_during_start() -> None:
    with webapp(PORT="not-a-port") as (process, port), pytest.raises(HealthCheckFailed) as caught:
        await wait_until_healthy(
            starting(start_period=30.0), "127.0.0.1", port, alive=alive_of(process)
        )
    assert str(caught.value) == "process exited with code 1 during start"
