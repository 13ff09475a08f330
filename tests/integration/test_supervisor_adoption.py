"""An app outlives a SIGKILLed supervisor (serving, logging) and a new supervisor adopts it."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.processes import wait_exited

from zerodown.runtimes.base import InstanceState
from zerodown.runtimes.local import LocalRuntime, procinfo
from zerodown.runtimes.local.instance_files import StatusRecord, read_json, read_supervisor
from zerodown.runtimes.local.outputpipe import PIPE_SIZE, create_pipe

from runtime_fixtures import (  # isort: skip - a sibling module, found through rootdir sys.path
    runtime,
    state_dir,
    alive_pids,
    eventually,
    files_under,
    shell_spec,
)

__all__ = ["runtime", "state_dir"]  # the fixtures, shared through runtime_fixtures

# Prints one line per request (with the secret, which the log must mask) *before* answering, so
# a broken output pipe turns into a failed request. /burst prints 256 KiB: more than a default
# 64 KiB pipe buffer holds while nobody reads it.
_APP = """
import hashlib, http.server, json, os
TOKEN = os.environ["API_TOKEN"]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/burst":
            for i in range(256):
                print(f"burst {i:03d} " + "x" * 1010, flush=True)
        print(f"request {self.path} token={TOKEN}", flush=True)
        body = json.dumps({
            "pid": os.getpid(),
            "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

print("listening", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@dataclass
class Orphan:
    """An instance whose supervisor was SIGKILLed while its app kept running."""

    instance_id: str
    instance_dir: Path
    port: int
    app_pid: int
    dead_supervisor_pid: int
    token: str


async def get(client: httpx.AsyncClient, port: int, path: str) -> dict[str, object]:
    """GET `path`, asserting a 200; return the JSON body."""
    response = await client.get(f"http://127.0.0.1:{port}{path}")
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


async def start_and_orphan(runtime: LocalRuntime, tmp_path: Path, instance_id: str) -> Orphan:
    """Start the printing app, wait until it answers, then SIGKILL its supervisor."""
    app = tmp_path / "printing_app.py"
    app.write_text(_APP)
    token = secrets.token_hex(16)
    env = {"API_TOKEN": token, "ZERODOWN_SECRET_NAMES": "API_TOKEN"}
    spec = shell_spec(instance_id, f"exec {sys.executable} {app}", tmp_path, env=env)
    info = await runtime.start(spec)
    instance_dir = runtime.instances_dir / instance_id
    log = instance_dir / "logs" / "output.log"

    async def listening() -> bool:
        return log.exists() and b"listening" in log.read_bytes()

    await eventually(listening, timeout=20)
    supervisor = read_supervisor(instance_dir)
    assert supervisor is not None and info.pid is not None
    os.kill(supervisor.pid, signal.SIGKILL)
    assert await wait_exited(supervisor.pid)
    return Orphan(instance_id, instance_dir, info.port, info.pid, supervisor.pid, token)


async def adopt(runtime: LocalRuntime, orphan: Orphan) -> None:
    """Re-adopt through a fresh runtime (as a restarted control plane would) and check it."""
    assert await LocalRuntime(runtime.state_dir).adopt_orphans() == [orphan.instance_id]
    info = await runtime.inspect(orphan.instance_id)
    assert (info.state, info.pid, info.labels["supervised"]) == (
        InstanceState.RUNNING,
        orphan.app_pid,
        "true",
    )
    assert (read_json(orphan.instance_dir / "supervisor.json") or {}).get("adopted") is True


def output_log(orphan: Orphan) -> bytes:
    """What the app's log holds (these tests stay far below the size that rotates it)."""
    path = orphan.instance_dir / "logs" / "output.log"
    return path.read_bytes() if path.exists() else b""


def test_the_output_pipe_buffer_is_raised_to_one_mib() -> None:
    read_fd, write_fd = create_pipe()
    try:
        max_size = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        size = fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ)
        assert size == PIPE_SIZE or (size < PIPE_SIZE and max_size < PIPE_SIZE)
        assert not os.get_inheritable(read_fd) and not os.get_inheritable(write_fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_app_keeps_answering_and_printing_after_its_supervisor_was_sigkilled(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    orphan = await start_and_orphan(runtime, tmp_path, "unsupervised")
    async with httpx.AsyncClient(timeout=10.0) as client:
        bodies = [await get(client, orphan.port, f"/n-{i}") for i in range(200)]
        bodies.append(await get(client, orphan.port, "/burst"))  # 256 KiB nobody reads yet
    assert {body["pid"] for body in bodies} == {orphan.app_pid}  # never crashed, never restarted
    info = await runtime.inspect(orphan.instance_id)
    assert (info.state, info.pid, info.labels["supervised"]) == (
        InstanceState.RUNNING,
        orphan.app_pid,
        "false",
    )
    # Everything printed meanwhile waits in the pipe: the adopter logs it, errors included.
    await adopt(runtime, orphan)

    async def burst_logged() -> bool:
        return b"request /burst" in output_log(orphan)

    await eventually(burst_logged, timeout=10)
    text = output_log(orphan)
    assert b"Error" not in text and b"Traceback" not in text


async def test_adopted_app_logs_lines_from_before_and_after_adoption_with_secrets_masked(
    runtime: LocalRuntime, state_dir: Path, tmp_path: Path
) -> None:
    orphan = await start_and_orphan(runtime, tmp_path, "readopted")
    async with httpx.AsyncClient(timeout=10.0) as client:
        for i in range(20):
            await get(client, orphan.port, f"/unsupervised-{i}")
        await adopt(runtime, orphan)
        await get(client, orphan.port, "/adopted")

    async def both_logged() -> bool:
        return b"request /adopted" in output_log(orphan)

    await eventually(both_logged, timeout=10)
    lines = output_log(orphan).decode().splitlines()
    assert [line for line in lines if "unsupervised" in line] == [
        f"request /unsupervised-{i} token=****" for i in range(20)
    ]
    assert "request /adopted token=****" in lines
    files = await asyncio.to_thread(files_under, state_dir)
    assert [name for name, content in files.items() if orphan.token.encode() in content] == []
    assert (await runtime.inspect(orphan.instance_id)).labels["supervised"] == "true"


async def test_adopting_supervisor_restarts_the_app_with_the_same_environment(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    orphan = await start_and_orphan(runtime, tmp_path, "restarted")
    await adopt(runtime, orphan)
    os.kill(orphan.app_pid, signal.SIGKILL)
    assert await wait_exited(orphan.app_pid)

    async def restarted() -> bool:
        info = await runtime.inspect(orphan.instance_id)
        return info.state == InstanceState.RUNNING and info.pid not in (None, orphan.app_pid)

    await eventually(restarted, timeout=20)
    info = await runtime.inspect(orphan.instance_id)
    assert (info.restarts, info.exit_code) == (1, None)  # not its parent: the code is unknown
    async with httpx.AsyncClient(timeout=2.0) as client:

        async def answers() -> bool:
            try:
                body = await get(client, orphan.port, "/after-restart")
            except httpx.TransportError:
                return False
            assert body["pid"] == info.pid
            assert body["token_sha256"] == hashlib.sha256(orphan.token.encode()).hexdigest()
            return True

        await eventually(answers, timeout=20)

    async def logged() -> bool:
        return b"request /after-restart token=****" in output_log(orphan)

    await eventually(logged, timeout=10)


async def test_stopping_an_adopted_instance_leaves_no_process_behind(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    orphan = await start_and_orphan(runtime, tmp_path, "stopped")
    await adopt(runtime, orphan)
    adopter = read_supervisor(orphan.instance_dir)
    assert adopter is not None and adopter.pid != orphan.dead_supervisor_pid
    stopped = await runtime.stop(orphan.instance_id, timeout=2.0)
    assert stopped.state == InstanceState.STOPPED
    assert stopped.labels["supervised"] == "false"
    assert await wait_exited(orphan.app_pid) and await wait_exited(adopter.pid)
    assert alive_pids([orphan.app_pid, adopter.pid, orphan.dead_supervisor_pid]) == []
    status = StatusRecord.load(orphan.instance_dir)
    assert status is not None and status.state == InstanceState.STOPPED


async def test_two_adopters_at_once_leave_exactly_one_supervisor(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    orphan = await start_and_orphan(runtime, tmp_path, "contested")
    command = [sys.executable, "-m", "zerodown.runtimes.local.supervisor", "--adopt"]
    adopters = [
        await asyncio.create_subprocess_exec(
            *command,
            str(orphan.instance_dir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(2)
    ]
    done, pending = await asyncio.wait(
        [asyncio.create_task(a.wait()) for a in adopters],
        timeout=20,
        return_when=asyncio.FIRST_COMPLETED,
    )
    assert len(done) == len(pending) == 1  # the loser exits, the winner supervises
    assert next(iter(done)).result() == 0
    winner = read_supervisor(orphan.instance_dir)
    assert winner is not None and procinfo.is_alive(winner)
    assert winner.pid in {a.pid for a in adopters if a.returncode is None}
    await runtime.stop(orphan.instance_id, timeout=2.0)
    assert await asyncio.wait_for(asyncio.gather(*(a.wait() for a in adopters)), 10) == [0, 0]


async def test_an_app_whose_recorded_identity_does_not_match_is_never_adopted(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    orphan = await start_and_orphan(runtime, tmp_path, "foreign")
    status_file = orphan.instance_dir / "status.json"
    genuine = status_file.read_text()
    forged = json.loads(genuine)
    forged["app_start_ticks"] += 1  # same pid, another start time: another process
    status_file.write_text(json.dumps(forged))
    try:
        assert await LocalRuntime(runtime.state_dir).adopt_orphans() == []
        supervisor = read_supervisor(orphan.instance_dir)
        assert supervisor is not None and supervisor.pid == orphan.dead_supervisor_pid
    finally:
        status_file.write_text(genuine)  # so that the fixture can stop the real app


async def test_stop_racing_an_adoption_started_by_list_stops_the_app_for_good(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    orphan = await start_and_orphan(runtime, tmp_path, "raced")
    listed = await runtime.list()  # launches an adopter in the background
    assert [i.labels["supervised"] for i in listed] == ["false"]
    stopped = await runtime.stop(orphan.instance_id, timeout=2.0)
    assert stopped.state == InstanceState.STOPPED
    assert await wait_exited(orphan.app_pid)
    supervisor = read_supervisor(orphan.instance_dir)
    if supervisor is not None:
        assert await wait_exited(supervisor.pid)
    assert (await runtime.inspect(orphan.instance_id)).state == InstanceState.STOPPED
    assert alive_pids([orphan.app_pid]) == []


async def test_an_adopted_app_is_adopted_again_when_its_second_supervisor_dies(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    orphan = await start_and_orphan(runtime, tmp_path, "twice")
    await adopt(runtime, orphan)
    adopter = read_supervisor(orphan.instance_dir)
    assert adopter is not None
    os.kill(adopter.pid, signal.SIGKILL)
    assert await wait_exited(adopter.pid)
    async with httpx.AsyncClient(timeout=10.0) as client:
        await get(client, orphan.port, "/between")
        await adopt(runtime, orphan)
        await get(client, orphan.port, "/again")

    async def logged() -> bool:
        return b"request /again token=****" in output_log(orphan)

    await eventually(logged, timeout=10)
    assert b"request /between token=****" in output_log(orphan)
