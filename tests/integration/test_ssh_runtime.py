"""The ssh runtime against three real sshd "hosts" on 127.0.0.2-4 (see `ssh_fixtures`).

Instances are real processes started over SSH under zerodown's supervisor on each host, run by
the host's python3 from a release directory the runtime uploaded there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.integration.ssh_fixtures import (
    HOST_ADDRESSES,
    SshHosts,
    children_of,
    ssh_fleet,
    ssh_hosts,
)

from zerodown.config.loader import load_config
from zerodown.config.router import BuiltinRouterConfig
from zerodown.domain.events import DeploymentState
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.errors import InstanceNotFound, RuntimeBackendError
from zerodown.loadgen import LoadSpec, run_load
from zerodown.routers.registry import router_backend
from zerodown.runtimes.base import InstanceInfo, InstanceSpec, InstanceState, ReleaseDirectory
from zerodown.runtimes.ssh.connection import SshOptions, SshPool, SshTarget
from zerodown.runtimes.ssh.runtime import RemoteHost, SshRuntime
from zerodown.store.sql import open_store

__all__ = ["ssh_fleet", "ssh_hosts"]  # fixtures, used by name

APP = """\
import http.server, json, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({
            "revision": os.environ.get("ZERODOWN_REVISION"),
            "instance": os.environ.get("ZERODOWN_INSTANCE"),
            "token": os.environ.get("API_TOKEN"),
            "pid": os.getpid(),
            "cwd": os.getcwd(),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
address = (os.environ["HOST"], int(os.environ["PORT"]))
print("listening on %s:%d" % address, flush=True)
http.server.ThreadingHTTPServer(address, Handler).serve_forever()
"""


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A release directory holding a stdlib-only web app (run by the host's python3)."""
    directory = tmp_path / "release"
    directory.mkdir()
    (directory / "app.py").write_text(APP)
    return directory


def spec(instance_id: str, release: Path, **overrides: Any) -> InstanceSpec:
    """One instance of service `web`, revision `r1`, running the release's app."""
    fields: dict[str, Any] = {
        "service": "web",
        "revision": "r1",
        "instance_id": instance_id,
        "artifact": ReleaseDirectory("python3 app.py", str(release)),
        "stop_timeout": 5.0,
    }
    fields.update(overrides)
    return InstanceSpec(**fields)


def runtime_for(fleet: SshHosts, **options: Any) -> SshRuntime:
    """A runtime over the three hosts, each keeping its files in its own state dir."""
    settings: dict[str, Any] = {
        "user": fleet.user,
        "key": fleet.key,
        "known_hosts": fleet.known_hosts,
        "connect_timeout": 5.0,
        "command_timeout": 30.0,
    }
    settings.update(options)
    hosts = [RemoteHost(SshTarget(h.address, h.port), str(h.state_dir)) for h in fleet.hosts]
    return SshRuntime(hosts, SshOptions(**settings))


@pytest.fixture
async def make_runtime(ssh_fleet: SshHosts) -> AsyncIterator[Callable[..., SshRuntime]]:
    """Opens runtimes over the fleet; at the end every instance is stopped and removed."""
    opened: list[SshRuntime] = []

    def factory(**options: Any) -> SshRuntime:
        runtime = runtime_for(ssh_fleet, **options)
        opened.append(runtime)
        return runtime

    try:
        yield factory
    finally:
        for runtime in opened:
            await runtime.close()
        ssh_fleet.ensure_running()
        cleaner = runtime_for(ssh_fleet)
        try:

            async def clean(instance_id: str) -> None:
                await cleaner.stop(instance_id, timeout=2.0)
                await cleaner.remove(instance_id)

            await asyncio.gather(*(clean(info.instance_id) for info in await cleaner.list()))
        finally:
            await cleaner.close()


async def get(info: InstanceInfo, timeout: float = 20.0) -> dict[str, Any]:
    """GET / at the instance's address, retrying (bounded) until its app listens."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                response = await client.get(f"http://{info.address}/")
                body: dict[str, Any] = response.json()
                return body
            except httpx.TransportError:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.05)  # a process on the host: only its port tells it listens


def running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, never reaped by this machine's init, is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def files_holding(root: Path, needle: bytes) -> list[Path]:
    """Every regular file under `root` whose bytes contain `needle`."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    ]


def command_lines_holding(needle: bytes) -> list[int]:
    """Pids of the processes whose command line contains `needle`."""
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
async def test_instances_are_spread_over_hosts_listen_there_and_stop(
    make_runtime: Callable[..., SshRuntime], release: Path, ssh_fleet: SshHosts
) -> None:
    """Four instances land on 127.0.0.2, .3, .4, .2; each serves on its host's address only;
    the release is uploaded once per host; list() sees them; stop() stops them."""
    runtime = make_runtime()
    infos = [await runtime.start(spec(f"web-{n}", release)) for n in range(4)]
    assert [info.host for info in infos] == ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]
    for info in infos:
        assert info.state == InstanceState.RUNNING
        body = await get(info)
        assert body["instance"] == info.instance_id
        assert body["revision"] == "r1"
        host = ssh_fleet.by_address(info.host)
        assert Path(body["cwd"]).is_relative_to(host.state_dir / "releases")
        with pytest.raises(httpx.ConnectError):  # bound to the host's address, not 127.0.0.1
            async with httpx.AsyncClient(timeout=2.0) as client:
                await client.get(f"http://127.0.0.1:{info.port}/")
    for host in ssh_fleet.hosts:
        releases = [p for p in (host.state_dir / "releases").iterdir() if p.is_dir()]
        assert len(releases) == 1, releases
    listed = {info.instance_id: info for info in await runtime.list("web")}
    assert set(listed) == {f"web-{n}" for n in range(4)}
    assert {info.state for info in listed.values()} == {InstanceState.RUNNING}
    stopped = await runtime.stop("web-1")
    assert stopped.state == InstanceState.STOPPED
    assert stopped.host == "127.0.0.3"
    await runtime.remove("web-1")
    with pytest.raises(InstanceNotFound, match="web-1"):
        await runtime.inspect("web-1")
    # The freed host is the emptiest again: the next instance goes there.
    assert (await runtime.start(spec("web-4", release))).host == "127.0.0.3"


async def test_secret_env_reaches_the_app_and_no_remote_file(
    make_runtime: Callable[..., SshRuntime], release: Path, ssh_fleet: SshHosts
) -> None:
    """A secret in the spec's env is the app's $API_TOKEN; no file under the hosts' dirs and
    no process's command line holds it."""
    token = "tok-" + secrets.token_hex(16)
    runtime = make_runtime()
    info = await runtime.start(spec("web-secret", release, env={"API_TOKEN": token}))
    assert (await get(info))["token"] == token
    needle = token.encode()
    assert await asyncio.to_thread(files_holding, ssh_fleet.root, needle) == []
    assert await asyncio.to_thread(command_lines_holding, needle) == []


async def test_unknown_or_changed_host_key_is_refused_naming_the_host(
    make_runtime: Callable[..., SshRuntime], release: Path, ssh_fleet: SshHosts, tmp_path: Path
) -> None:
    """A known_hosts file without the host, or with another key for it, refuses the connection
    in one sentence that names the host and says how to add its key."""
    empty = tmp_path / "known_hosts.empty"
    empty.write_text("")
    first, second = ssh_fleet.hosts[:2]
    changed = tmp_path / "known_hosts.changed"
    changed.write_text(f"[{first.address}]:{first.port} {second.host_public_key}\n")
    for known_hosts in (empty, changed):
        runtime = make_runtime(known_hosts=known_hosts)
        with pytest.raises(RuntimeBackendError) as caught:
            await runtime.start(spec("web-key", release))
        message = str(caught.value)
        assert f"host {first.address}:{first.port}" in message
        assert "host key is unknown or changed" in message
        assert f"ssh-keyscan -p {first.port} {first.address} >> {known_hosts}" in message


@pytest.mark.slow
async def test_a_stopped_sshd_is_an_error_naming_its_host(
    make_runtime: Callable[..., SshRuntime], release: Path, ssh_fleet: SshHosts
) -> None:
    """With one host's sshd (and its connections) stopped, list() and inspect() of an
    instance there fail naming that host; the other hosts' instances are untouched."""
    runtime = make_runtime()
    infos = [await runtime.start(spec(f"web-{n}", release)) for n in range(3)]
    down = ssh_fleet.by_address("127.0.0.3")
    down.stop()
    with pytest.raises(RuntimeBackendError) as caught:
        await runtime.list()
    assert f"host 127.0.0.3:{down.port}" in str(caught.value)
    assert "127.0.0.2" not in str(caught.value)
    assert "127.0.0.4" not in str(caught.value)
    with pytest.raises(RuntimeBackendError, match=f"host 127.0.0.3:{down.port} cannot be reached"):
        await runtime.inspect("web-1")
    assert (await runtime.inspect("web-0")).state == InstanceState.RUNNING
    # The instance on the unreachable host keeps serving: only its control path is gone.
    assert (await get(infos[1]))["instance"] == "web-1"
    down.start()
    assert (await runtime.inspect("web-1")).state == InstanceState.RUNNING


@pytest.mark.slow
async def test_an_instance_outlives_the_runtime_and_is_found_again(
    make_runtime: Callable[..., SshRuntime], release: Path
) -> None:
    """The runtime object (the control plane's side) closes its connections and goes away; the
    instance keeps serving, and a new runtime lists it (same pid), reads its output and stops
    it."""
    first = make_runtime()
    info = await first.start(spec("web-kept", release))
    pid = (await get(info))["pid"]
    await first.close()
    del first
    assert (await get(info))["pid"] == pid
    second = make_runtime()
    listed = await second.list()
    assert [(i.instance_id, i.host, i.port, i.pid) for i in listed] == [
        ("web-kept", info.host, info.port, info.pid)
    ]
    assert listed[0].labels["supervised"] == "true"
    banner = f"listening on {info.host}:{info.port}"
    assert [line async for line in second.logs("web-kept")] == [banner]
    assert await second.output_tail("web-kept", 5) == [banner]
    assert (await second.stop("web-kept")).state == InstanceState.STOPPED
    assert not running(pid)  # stopped for real on its host (the hosts share this machine)


# -- the connections themselves ---------------------------------------------------------------


def options_for(fleet: SshHosts, **overrides: Any) -> SshOptions:
    """Login settings for the fleet's hosts."""
    settings: dict[str, Any] = {"user": fleet.user, "key": fleet.key}
    settings.update(known_hosts=fleet.known_hosts, connect_timeout=5.0, command_timeout=10.0)
    settings.update(overrides)
    return SshOptions(**settings)


@pytest.fixture
async def pool(ssh_fleet: SshHosts) -> AsyncIterator[SshPool]:
    """A connection pool over the fleet, closed at the end."""
    opened = SshPool(options_for(ssh_fleet))
    try:
        yield opened
    finally:
        await opened.close()


async def test_one_connection_per_host_is_reused_by_concurrent_commands(
    pool: SshPool, ssh_fleet: SshHosts
) -> None:
    """Twelve commands at once on one host share one connection (one sshd process serves it),
    more than sshd's 10 sessions per connection, so the pool queues the rest."""
    host = ssh_fleet.hosts[0]
    assert host.process is not None
    before = set(children_of(host.process.pid))  # connections of earlier tests, closing
    target = SshTarget(host.address, host.port)
    results = await asyncio.gather(*(pool.run(target, f"echo {n}") for n in range(12)))
    assert [r.stdout.strip() for r in results] == [str(n) for n in range(12)]
    assert await pool.connection(target) is await pool.connection(target)
    assert len(set(children_of(host.process.pid)) - before) == 1


async def test_a_command_past_its_timeout_fails_naming_the_host(
    pool: SshPool, ssh_fleet: SshHosts
) -> None:
    """`sleep 30` with a 0.5 s timeout fails within seconds, naming the host and the command."""
    host = ssh_fleet.hosts[1]
    started = time.monotonic()
    with pytest.raises(RuntimeBackendError) as caught:
        await pool.run(SshTarget(host.address, host.port), "sleep 30", timeout=0.5)
    assert time.monotonic() - started < 10
    assert str(caught.value) == (
        f"host {host.address}:{host.port}: `sleep 30` ran past its 0.5s timeout "
        "(runtime.command_timeout)"
    )


async def test_output_is_streamed_line_by_line_and_input_goes_over_stdin(
    pool: SshPool, ssh_fleet: SshHosts
) -> None:
    """The first line arrives while the command still runs; stdin reaches it (not argv); a
    non-zero exit after the output raises with the end of its stderr."""
    host = ssh_fleet.hosts[2]
    connection = await pool.connection(SshTarget(host.address, host.port))
    command = "read secret; echo got-$secret; sleep 1; echo done; echo broken >&2; exit 3"
    seen: list[tuple[str, float]] = []
    started = time.monotonic()
    with pytest.raises(RuntimeBackendError, match="exited with 3: broken"):
        async for line in connection.stream(command, input="s3cret\n", timeout=20):
            seen.append((line, time.monotonic() - started))
    assert [line for line, _ in seen] == ["got-s3cret", "done"]
    assert seen[1][1] - seen[0][1] >= 0.9  # the first line did not wait for the second


async def test_a_refused_login_names_the_host_and_user(ssh_fleet: SshHosts, tmp_path: Path) -> None:
    """A key the host does not authorize is refused in a sentence naming host, user and key."""
    other = tmp_path / "other_key"
    keygen = await asyncio.create_subprocess_exec(
        *("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)),
        stdin=subprocess.DEVNULL,
    )
    assert await keygen.wait() == 0
    refused = SshPool(options_for(ssh_fleet, key=other))
    host = ssh_fleet.hosts[0]
    try:
        with pytest.raises(RuntimeBackendError) as caught:
            await refused.run(SshTarget(host.address, host.port), "true")
    finally:
        await refused.close()
    assert str(caught.value).startswith(
        f"host {host.address}:{host.port}: user {ssh_fleet.user!r} was refused with key {other}"
    )


@pytest.mark.slow
async def test_an_app_whose_supervisor_died_on_its_host_is_adopted(
    make_runtime: Callable[..., SshRuntime], release: Path, ssh_fleet: SshHosts
) -> None:
    """kill -9 of the supervisor on the host leaves the app serving; adopt_orphans() over SSH
    gives it a new supervisor there, which then stops it on request."""
    runtime = make_runtime()
    info = await runtime.start(spec("web-orphan", release))
    instance_dir = ssh_fleet.by_address(info.host).state_dir / "runtime/instances/web-orphan"
    recorded = await asyncio.to_thread((instance_dir / "supervisor.json").read_text)
    supervisor = json.loads(recorded)["pid"]
    os.kill(supervisor, signal.SIGKILL)
    await eventually_not_running(supervisor)
    assert (await runtime.inspect("web-orphan")).labels["supervised"] == "false"
    assert (await get(info))["instance"] == "web-orphan"  # still serving, unsupervised
    assert await runtime.adopt_orphans() == ["web-orphan"]
    adopted = await runtime.inspect("web-orphan")
    assert adopted.labels["supervised"] == "true"
    assert adopted.pid == info.pid
    assert (await runtime.stop("web-orphan")).state == InstanceState.STOPPED
    assert not running(info.pid or 0)


async def eventually_not_running(pid: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until process `pid` is gone: a killed process vanishes in milliseconds."""
    deadline = time.monotonic() + timeout
    while running(pid):
        assert time.monotonic() < deadline, f"pid {pid} still runs after {timeout}s"
        await asyncio.sleep(0.02)


def agents_under(root: Path) -> list[int]:
    """Pids of zerodown's host-side agents whose copy of zerodown lies under `root`."""
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if not entry.name.isdigit() or b"ssh.remote" not in (entry / "cmdline").read_bytes():
                continue
            if f"PYTHONPATH={root}".encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
    return pids


async def test_one_agent_per_host_serves_every_request_and_exits_with_its_channel(
    make_runtime: Callable[..., SshRuntime], release: Path, ssh_fleet: SshHosts
) -> None:
    """Twenty operations on three hosts run in three agent processes (one per host, kept up);
    once the runtime closes its connections, every agent exits, and the instance stays."""
    before = await asyncio.to_thread(agents_under, ssh_fleet.root)
    runtime = make_runtime()
    info = await runtime.start(spec("web-agent", release))
    await asyncio.gather(*(runtime.inspect("web-agent") for _ in range(10)))
    await asyncio.gather(*(runtime.list() for _ in range(9)))
    agents = set(await asyncio.to_thread(agents_under, ssh_fleet.root)) - set(before)
    assert len(agents) == 3
    await runtime.close()
    deadline = time.monotonic() + 10
    while set(await asyncio.to_thread(agents_under, ssh_fleet.root)) & agents:
        assert time.monotonic() < deadline, "an agent outlived its SSH channel"
        await asyncio.sleep(0.05)
    assert (await get(info))["instance"] == "web-agent"


async def test_without_a_key_file_the_ssh_agent_logs_in(
    ssh_fleet: SshHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`key: none` logs in with the keys of the agent at $SSH_AUTH_SOCK (the session's key,
    added to a real ssh-agent); without the agent the same login is refused."""
    socket_path = tmp_path / "agent.sock"
    agent = await asyncio.create_subprocess_exec(
        "ssh-agent", "-D", "-a", str(socket_path), stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():  # ssh-agent is another process: its socket tells
            assert time.monotonic() < deadline, "ssh-agent did not start"
            await asyncio.sleep(0.02)
        add = await asyncio.create_subprocess_exec(
            "ssh-add", "-q", str(ssh_fleet.key), env={"SSH_AUTH_SOCK": str(socket_path)}
        )
        assert await add.wait() == 0
        host = ssh_fleet.hosts[0]
        target = SshTarget(host.address, host.port)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        pool = SshPool(options_for(ssh_fleet, key=None))
        try:
            assert (await pool.run(target, "echo via-agent")).stdout == "via-agent\n"
        finally:
            await pool.close()
        monkeypatch.delenv("SSH_AUTH_SOCK")
        without = SshPool(options_for(ssh_fleet, key=None))
        try:
            with pytest.raises(RuntimeBackendError, match="the keys of the ssh agent"):
                await without.run(target, "true")
        finally:
            await without.close()
    finally:
        agent.terminate()
        await agent.wait()


# -- the engine on the ssh runtime ------------------------------------------------------------

WEBAPP = Path(__file__).resolve().parents[2] / "examples" / "webapp"


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_rolling_deploy_over_three_hosts_fails_no_request(
    make_runtime: Callable[..., SshRuntime],
) -> None:
    """The deployer on the ssh runtime behind the built-in router: v1 on 3 hosts, then v2 under
    30 closed-loop clients: 0 failed requests, and every host runs v2 after."""
    # A short path: the router's control socket must fit in sun_path (108 bytes).
    tmp_path = Path(tempfile.mkdtemp(prefix="zd-sd-", dir="/tmp"))
    state = tmp_path / "state"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        listen = [f"127.0.0.1:{probe.getsockname()[1]}"]
    health = {"path": "/health", "healthy_threshold": 1, "unhealthy_threshold": 2}
    health.update(interval=0.1, start_interval=0.1, timeout=2, deadline=30)
    service = {"workdir": str(WEBAPP), "run": f"exec {sys.executable} app.py", "instances": 3}
    service.update(drain_timeout=5, stop_timeout=5, health=health)
    data = {
        "state_dir": "state",
        "router": {"backend": "builtin", "listen": listen},
        "services": {"api": service},
        "environments": {"prod": {"strategy": {}}},
    }
    (tmp_path / "zerodown.yml").write_text(yaml.safe_dump(data))
    loaded = load_config(tmp_path / "zerodown.yml", environ={})
    backend = router_backend(BuiltinRouterConfig(listen=listen))
    router = await backend.open(state, listen)
    store = open_store(f"sqlite:///{state / 'history.db'}")
    runtime = make_runtime()
    try:
        deployer = Deployer(loaded, runtime=runtime, router=router, store=store)
        first = await deployer.deploy(DeployRequest("api", "prod", "v1", "test"))
        assert first.state is DeploymentState.SUCCEEDED, first.reason
        assert sorted(i.host for i in await runtime.list("api")) == list(HOST_ADDRESSES)
        stop = asyncio.Event()
        spec = LoadSpec(url=f"http://{listen[0]}", connections=30, max_seconds=60, timeout=15)
        load = asyncio.ensure_future(run_load(spec, stop))
        try:
            second = await deployer.deploy(DeployRequest("api", "prod", "v2", "test"))
        finally:
            stop.set()
            report = await load
        assert second.state is DeploymentState.SUCCEEDED, second.reason
        assert report.sent > 100
        assert report.failed == 0, report.failures.most_common(3)
        assert set(report.versions) == {"v1", "v2"}
        running = [(i.host, i.revision) for i in await runtime.list("api") if i.state == "running"]
        assert sorted(running) == [(address, "v2") for address in HOST_ADDRESSES]
    finally:
        await backend.stop(state)
        await store.close()
        shutil.rmtree(tmp_path, ignore_errors=True)


async def test_commands_past_their_timeout_leave_no_session_open(
    pool: SshPool, ssh_fleet: SshHosts
) -> None:
    """Eleven timed-out commands in a row (sshd allows 10 sessions per connection) leave the
    connection usable: each one's channel is closed, and its remote command ends."""
    host = ssh_fleet.hosts[1]
    target = SshTarget(host.address, host.port)
    for _ in range(11):
        with pytest.raises(RuntimeBackendError, match="timeout"):
            await pool.run(target, "sleep 30", timeout=0.2)
    assert (await pool.run(target, "echo still-open")).stdout == "still-open\n"


async def test_instances_started_at_once_get_distinct_ports_and_all_serve(
    make_runtime: Callable[..., SshRuntime], release: Path
) -> None:
    """Six starts at once (two per host, as a batch does) run in parallel on each host's agent:
    six distinct addresses, each serving its own instance."""
    runtime = make_runtime()
    await runtime.list()  # connect and prepare the hosts first: the starts are what overlap
    infos = await asyncio.gather(*(runtime.start(spec(f"web-p{n}", release)) for n in range(6)))
    assert len({info.address for info in infos}) == 6
    assert sorted(info.host for info in infos) == sorted(HOST_ADDRESSES * 2)
    bodies = await asyncio.gather(*(get(info) for info in infos))
    assert [body["instance"] for body in bodies] == [info.instance_id for info in infos]


async def test_a_host_that_never_answers_fails_within_connect_timeout(
    ssh_fleet: SshHosts,
) -> None:
    """A port that accepts but never speaks SSH: the connection fails after connect_timeout
    (0.5 s here), naming the host and the setting."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # keep it open and say nothing

    server = await asyncio.start_server(hold, "127.0.0.5", 0)
    port = server.sockets[0].getsockname()[1]
    silent = SshPool(options_for(ssh_fleet, connect_timeout=0.5))
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeBackendError) as caught:
            await silent.run(SshTarget("127.0.0.5", port), "true")
        assert time.monotonic() - started < 5
    finally:
        await silent.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert str(caught.value).startswith(f"host 127.0.0.5:{port} did not answer SSH within 0.5s")
    assert "runtime.connect_timeout" in str(caught.value)
