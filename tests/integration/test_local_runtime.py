"""LocalRuntime end to end: real supervisors, real apps, real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import pytest

from zerodown.errors import InstanceNotFound, RuntimeBackendError
from zerodown.runtimes.base import ContainerImage, InstanceState, Runtime
from zerodown.runtimes.local import LocalRuntime, procinfo
from zerodown.runtimes.local.supervisor import RestartBackoff, read_supervisor

from runtime_fixtures import (  # isort: skip - a sibling module, found through rootdir sys.path
    runtime,
    state_dir,
    alive_pids,
    eventually,
    files_under,
    get_root,
    shell_spec,
    webapp_spec,
)

__all__ = ["runtime", "state_dir"]  # the fixtures, shared through runtime_fixtures


def test_local_runtime_satisfies_the_runtime_protocol(state_dir: Path) -> None:
    assert isinstance(LocalRuntime(state_dir), Runtime)


def test_restart_backoff_doubles_to_the_cap_and_resets_after_a_long_run() -> None:
    backoff = RestartBackoff(first=0.5, cap=30.0, reset_after=30.0)
    delays = [backoff.delay_after(uptime=1.0) for _ in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.delay_after(uptime=31.0) == 0.5
    assert backoff.delay_after(uptime=1.0) == 1.0


async def test_two_instances_answer_on_distinct_ports_with_their_zerodown_env(
    runtime: LocalRuntime,
) -> None:
    first, second = await asyncio.gather(
        runtime.start(webapp_spec("web-1")), runtime.start(webapp_spec("web-2"))
    )
    assert first.port != second.port
    assert first.state == second.state == InstanceState.RUNNING
    for info in (first, second):
        body = await get_root(info.port)
        assert body["revision"] == f"rev-{info.instance_id}"
        assert body["instance"] == info.instance_id
    assert {i.instance_id for i in await runtime.list("web")} == {"web-1", "web-2"}
    assert await runtime.list("other") == []


_CONTROL_PLANE = """
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, {tests_dir!r})
from runtime_fixtures import webapp_spec
from zerodown.runtimes.local import LocalRuntime

async def main():
    runtime = LocalRuntime(Path(sys.argv[1]))
    infos = [await runtime.start(webapp_spec(f"cp-{{i}}")) for i in range(2)]
    print(json.dumps({{i.instance_id: i.pid for i in infos}}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.slow
async def test_instances_survive_control_plane_sigkill_and_are_readopted(
    runtime: LocalRuntime, state_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "control_plane.py"
    script.write_text(_CONTROL_PLANE.format(tests_dir=str(Path(__file__).parent)))
    control_plane = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(state_dir), stdout=asyncio.subprocess.PIPE
    )
    assert control_plane.stdout is not None
    line = await asyncio.wait_for(control_plane.stdout.readline(), 30)
    started: dict[str, int] = json.loads(line)
    control_plane.kill()
    assert await asyncio.wait_for(control_plane.wait(), 10) == -signal.SIGKILL

    adopter = LocalRuntime(state_dir)  # the restarted control plane
    infos = {info.instance_id: info for info in await adopter.list()}
    assert {k: (v.state, v.pid) for k, v in infos.items()} == {
        k: (InstanceState.RUNNING, pid) for k, pid in started.items()
    }
    assert all(info.labels["supervised"] == "true" for info in infos.values())
    for info in infos.values():
        assert (await get_root(info.port))["instance"] == info.instance_id

    supervisors = [read_supervisor(state_dir / "instances" / k) for k in infos]
    recorded = [*started.values(), *(s.pid for s in supervisors if s is not None)]
    assert len(recorded) == 4
    for instance_id in infos:
        stopped = await adopter.stop(instance_id)
        assert stopped.state == InstanceState.STOPPED
    assert alive_pids(recorded) == []


@pytest.mark.slow
async def test_supervisor_restarts_a_killed_app_while_no_control_plane_exists(
    state_dir: Path, runtime: LocalRuntime
) -> None:
    info = await LocalRuntime(state_dir).start(webapp_spec("crashy"))
    await get_root(info.port)
    assert info.pid is not None
    os.kill(info.pid, signal.SIGKILL)  # no runtime object watches it from here on

    observer = LocalRuntime(state_dir)

    async def restarted() -> bool:
        now = await observer.inspect("crashy")
        return now.state == InstanceState.RUNNING and now.pid not in (None, info.pid)

    await eventually(restarted, timeout=20)
    after = await observer.inspect("crashy")
    assert after.restarts == 1
    assert after.exit_code == -signal.SIGKILL
    assert (await get_root(after.port))["pid"] != info.pid


async def test_stop_escalates_to_sigkill_when_the_app_ignores_sigterm(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    spec = shell_spec("stubborn", "trap '' TERM; sleep 1000 & wait", tmp_path, stop_timeout=30.0)
    info = await runtime.start(spec)
    assert info.pid is not None
    began = time.monotonic()
    stopped = await runtime.stop("stubborn", timeout=0.5)
    elapsed = time.monotonic() - began
    assert stopped.state == InstanceState.STOPPED
    assert stopped.exit_code == -signal.SIGKILL
    assert 0.5 <= elapsed < 5.0
    assert alive_pids([info.pid]) == []


async def test_memory_limit_kills_an_app_that_allocates_more(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    command = f"exec {sys.executable} -c 'bytearray(600 * 1024 * 1024)'"
    spec = shell_spec("hungry", command, tmp_path, memory_limit=300 * 1024 * 1024, restart="no")
    await runtime.start(spec)

    async def exited() -> bool:
        return (await runtime.inspect("hungry")).state == InstanceState.STOPPED

    await eventually(exited, timeout=20)
    info = await runtime.inspect("hungry")
    assert info.exit_code not in (None, 0)
    assert "MemoryError" in "\n".join([line async for line in runtime.logs("hungry")])


async def test_restart_policy_no_records_the_exit_code_and_does_not_restart(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    await runtime.start(shell_spec("once", "echo bye; exit 3", tmp_path, restart="no"))

    async def exited() -> bool:
        return (await runtime.inspect("once")).state == InstanceState.STOPPED

    await eventually(exited, timeout=10)
    info = await runtime.inspect("once")
    assert (info.exit_code, info.restarts, info.pid) == (3, 0, None)
    assert [line async for line in runtime.logs("once")] == ["bye"]


async def test_env_values_reach_the_app_but_never_any_file_under_state_dir(
    runtime: LocalRuntime, state_dir: Path, tmp_path: Path
) -> None:
    secret = secrets.token_hex(16)
    seen = tmp_path / "seen"
    command = f'printf %s "$API_TOKEN" > {seen}; echo started; exec sleep 1000'
    spec = shell_spec("secretive", command, tmp_path, env={"API_TOKEN": secret})
    await runtime.start(spec)

    async def written() -> bool:
        return seen.exists() and seen.read_text() == secret

    await eventually(written, timeout=10)
    await runtime.stop("secretive")
    files = await asyncio.to_thread(files_under, state_dir)
    assert set(files) >= {"spec.json", "status.json", "supervisor.json", "output.log"}
    assert b"API_TOKEN" in files["spec.json"]  # the name is recorded, the value is not
    assert [name for name, content in files.items() if secret.encode() in content] == []
    mode = await asyncio.to_thread(lambda: (state_dir / "instances" / "secretive").stat().st_mode)
    assert mode & 0o777 == 0o700


async def test_app_whose_supervisor_was_killed_is_running_unsupervised_and_still_stoppable(
    runtime: LocalRuntime, state_dir: Path, tmp_path: Path
) -> None:
    info = await runtime.start(shell_spec("orphan", "exec sleep 1000", tmp_path))
    supervisor = read_supervisor(state_dir / "instances" / "orphan")
    assert supervisor is not None and info.pid is not None
    os.killpg(supervisor.pid, signal.SIGKILL)  # its whole group: the app is not in it

    async def supervisor_gone() -> bool:
        return not procinfo.is_alive(supervisor)

    await eventually(supervisor_gone, timeout=10)
    orphan = await runtime.inspect("orphan")
    assert (orphan.state, orphan.pid, orphan.labels["supervised"]) == (
        InstanceState.RUNNING,
        info.pid,
        "false",
    )
    stopped = await runtime.stop("orphan", timeout=1.0)
    assert stopped.state == InstanceState.STOPPED
    assert alive_pids([info.pid]) == []


async def test_app_output_goes_to_a_log_rotated_at_the_configured_size(
    state_dir: Path, tmp_path: Path
) -> None:
    runtime = LocalRuntime(state_dir, log_max_bytes=1000, log_backups=2)
    command = 'for i in $(seq 1 400); do echo "line $i"; done; exec sleep 1000'
    await runtime.start(shell_spec("chatty", command, tmp_path))
    log = runtime.log_file("chatty")

    async def fully_written() -> bool:  # output.log may be missing for a moment while rotating
        files = await asyncio.to_thread(files_under, log.parent)
        return any(content.endswith(b"line 400\n") for content in files.values())

    try:
        await eventually(fully_written, timeout=10)
        files = await asyncio.to_thread(files_under, log.parent)
    finally:
        await runtime.stop("chatty")
    assert set(files) == {"output.log", "output.log.1", "output.log.2"}
    assert all(0 < len(content) <= 1000 for content in files.values())
    kept = files["output.log.2"] + files["output.log.1"] + files["output.log"]
    everything = "".join(f"line {i}\n" for i in range(1, 401)).encode()
    assert everything.endswith(kept)


async def test_stop_is_idempotent_and_remove_refuses_a_running_instance(
    runtime: LocalRuntime, state_dir: Path, tmp_path: Path
) -> None:
    await runtime.start(shell_spec("tidy", "exec sleep 1000", tmp_path))
    with pytest.raises(RuntimeBackendError, match="stop it"):
        await runtime.remove("tidy")
    first = await runtime.stop("tidy")
    second = await runtime.stop("tidy")
    assert first.state == second.state == InstanceState.STOPPED
    await runtime.remove("tidy")
    assert not (state_dir / "instances" / "tidy").exists()
    with pytest.raises(InstanceNotFound):
        await runtime.inspect("tidy")


async def test_start_fails_with_the_supervisor_log_when_the_app_cannot_be_spawned(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    spec = shell_spec("nowhere", "true", tmp_path / "missing-workdir")
    with pytest.raises(RuntimeBackendError, match="missing-workdir"):
        await runtime.start(spec)
    assert (await runtime.inspect("nowhere")).state == InstanceState.FAILED


async def test_starting_an_instance_id_that_runs_is_refused(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    first = await runtime.start(shell_spec("twice", "exec sleep 1000", tmp_path))
    with pytest.raises(RuntimeBackendError, match="already exists"):
        await runtime.start(shell_spec("twice", "exec sleep 1000", tmp_path))
    still = await runtime.inspect("twice")
    assert (still.state, still.pid) == (InstanceState.RUNNING, first.pid)


async def test_logs_yield_history_then_follow_new_lines_until_the_instance_stops(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """Runtime.logs: the output so far, masked; `since` after the last write leaves it out;
    `follow` yields each line the app writes next and ends once the instance is stopped."""
    trigger = tmp_path / "go"
    command = (
        'echo "token $TOKEN"; echo first; '
        f"while [ ! -e {trigger} ]; do sleep 0.05; done; echo second; exec sleep 1000"
    )
    secret = "s3cret-" + secrets.token_hex(8)
    env = {"TOKEN": secret, "ZERODOWN_SECRET_NAMES": "TOKEN"}
    await runtime.start(shell_spec("talky", command, tmp_path, env=env))

    async def first_written() -> bool:
        return "first" in [line async for line in runtime.logs("talky")]

    await eventually(first_written, timeout=10)
    history = [line async for line in runtime.logs("talky")]
    assert history == ["token ****", "first"]
    later = time.time() + 3600
    assert [line async for line in runtime.logs("talky", since=later)] == []

    followed: list[str] = []

    async def follow() -> None:
        async for line in runtime.logs("talky", since=later, follow=True):
            followed.append(line)

    follower = asyncio.create_task(follow())
    try:
        trigger.touch()

        async def second_seen() -> bool:
            return followed == ["second"]

        await eventually(second_seen, timeout=10)
        await runtime.stop("talky", timeout=2)
        await asyncio.wait_for(follower, 10)  # ends by itself: the instance stopped
    finally:
        follower.cancel()


async def test_an_image_artifact_is_refused_with_what_to_use_instead(runtime: LocalRuntime) -> None:
    image = ContainerImage("127.0.0.1:5000/web@sha256:" + "a" * 64)
    with pytest.raises(RuntimeBackendError, match=r"runs release directories.*backend: docker"):
        await runtime.start(webapp_spec("img", artifact=image))
    assert await runtime.list() == []
