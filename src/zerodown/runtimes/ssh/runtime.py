"""`SshRuntime`: instances as processes on a fleet of hosts, reached over SSH.

On each host an instance runs under the local runtime's detached supervisor, so it keeps
serving (and being restarted) when the SSH session ends or the control plane goes away. The
control plane copies zerodown's own package to a host once per version (`bundle`) and each
release directory once per revision, then runs every operation there through the host's
python3 (`remote`), one SSH connection per host (`connection.SshPool`). A new `SshRuntime` over
the same hosts finds every instance again by listing them. The host side stays up as one agent
per host (`agent`), so an operation is one round trip.

`instances: N` are spread over the hosts: each start goes to the host running the fewest
instances of that revision, then of that service. An instance listens on its host's address
(given in $HOST), which is what `InstanceInfo.host` says, so probes and the router reach it.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import shlex
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerodown.errors import InstanceNotFound, RuntimeBackendError
from zerodown.runtimes.base import (
    ArtifactKind,
    InstanceInfo,
    InstanceSpec,
    InstanceState,
    ReleaseDirectory,
)
from zerodown.runtimes.ssh.agent import HostAgent
from zerodown.runtimes.ssh.bundle import pack_release, release_name, zerodown_bundle
from zerodown.runtimes.ssh.connection import SshOptions, SshPool, SshTarget, quote

_MIN_PYTHON = (3, 11)
# Prepares a host: its root resolved (~ allowed), the dirs made, python3 checked (and its real
# path found: a wrapper such as pyenv's costs a quarter second per command), and whether
# zerodown is unpacked there already. Run as `python3 -c <this> <root> <bundle name>`.
_PREPARE = """
import json, os, sys
if sys.version_info < (3, 11):
    sys.exit(3)
root = os.path.abspath(os.path.expanduser(sys.argv[1]))
for sub in ("lib", "releases", "runtime"):
    os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)
os.chmod(root, 0o700)
have = os.path.isdir(os.path.join(root, "lib", sys.argv[2]))
print(json.dumps({"root": root, "bundle": have, "python": sys.executable}))
"""
# Unpacks the uploaded zip into lib/<bundle name>/ (a temp dir, then a rename), so the host's
# python3 caches compiled modules there instead of compiling the whole zip on every command.
_UNPACK = """
import os, shutil, sys, zipfile
archive, target = sys.argv[1], sys.argv[2]
partial = target + ".partial"
shutil.rmtree(partial, ignore_errors=True)
with zipfile.ZipFile(archive) as bundle:
    bundle.extractall(partial)
if not os.path.isdir(target):
    os.replace(partial, target)
shutil.rmtree(partial, ignore_errors=True)
os.unlink(archive)
"""
_START_WAIT = 30.0  # a start waits for the supervisor to spawn the app (15 s there) and more
_STOP_MARGIN = 15.0  # past the grace period: the supervisor's SIGKILL wait and the round trip
_ENDED = (InstanceState.STOPPED, InstanceState.FAILED)


@dataclass(frozen=True)
class RemoteHost:
    """One host of the fleet: how to reach it and where zerodown keeps its files there."""

    target: SshTarget
    root: str = "~/.zerodown"

    @property
    def address(self) -> str:
        """The host's address: instances listen on it and are reached at it."""
        return self.target.address


def info_from_json(data: dict[str, Any]) -> InstanceInfo:
    """An `InstanceInfo` from what `remote.info_json` wrote."""
    return InstanceInfo(**{**data, "state": InstanceState(data["state"])})


@dataclass
class _Placed:
    """What the control plane remembers of an instance: where it is and if it may still run."""

    host: RemoteHost
    service: str
    revision: str
    active: bool


class SshRuntime:
    """Runs release directories as processes on hosts over SSH (Runtime "ssh")."""

    name = "ssh"
    artifacts = frozenset({ArtifactKind.DIRECTORY})

    def __init__(
        self,
        hosts: Sequence[RemoteHost],
        options: SshOptions,
        *,
        python: str = "python3",
        pool: SshPool | None = None,
    ) -> None:
        if not hosts:
            raise RuntimeBackendError("the ssh runtime needs at least one host")
        addresses = [host.address for host in hosts]
        if len(set(addresses)) != len(addresses):
            raise RuntimeBackendError(f"a host is listed twice in {addresses}")
        self.hosts = list(hosts)
        self.options = options
        self.python = python
        self._pool = pool or SshPool(options)
        self._roots: dict[str, str] = {}  # address -> the host's resolved root
        self._pythons: dict[str, str] = {}  # address -> the host's python3, its real path
        self._releases: dict[tuple[str, str], str] = {}  # (address, release) -> its dir there
        self._packed: dict[str, Path] = {}  # release name -> its tarball here
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._agents: dict[str, HostAgent] = {}  # address -> its agent
        self._placed: dict[str, _Placed] = {}
        self._listed = False

    # -- the Runtime seam -------------------------------------------------------------------

    async def start(self, spec: InstanceSpec) -> InstanceInfo:
        """Place the instance on a host, copy its release there if needed, and start it."""
        release = spec.artifact
        if not isinstance(release, ReleaseDirectory):
            raise RuntimeBackendError(
                f"the ssh runtime runs release directories, not {release.kind} artifacts"
            )
        host = await self._place(spec)
        try:
            root = await self._prepare(host)
            workdir = await self._ensure_release(host, root, spec, release)
            env = {"HOST": host.address, **spec.env}
            request = {
                "op": "start",
                "spec": {
                    "service": spec.service,
                    "revision": spec.revision,
                    "instance_id": spec.instance_id,
                    "command": release.command,
                    "workdir": workdir,
                    "port_env": spec.port_env,
                    "port": spec.port,
                    "stop_timeout": spec.stop_timeout,
                    "memory_limit": spec.memory_limit,
                    "restart": spec.restart,
                    "labels": dict(spec.labels),
                },
                "env": env,  # over stdin: never in a command line or a file there
            }
            # Starts on one host may overlap: its one agent promises each port once.
            answer = await self._call(host, request, timeout=max(self._timeout, _START_WAIT))
            info = info_from_json(answer)
        except BaseException:
            self._placed.pop(spec.instance_id, None)
            raise
        self._remember(host, info)
        return info

    async def stop(self, instance_id: str, *, timeout: float | None = None) -> InstanceInfo:
        """Stop the instance on its host (SIGTERM, `timeout`, SIGKILL) and return it STOPPED."""
        host = await self._locate(instance_id)
        limit = max(self._timeout, (timeout if timeout is not None else 60.0) + _STOP_MARGIN)
        request = {"op": "stop", "instance_id": instance_id, "timeout": timeout}
        info = info_from_json(await self._call(host, request, timeout=limit))
        self._remember(host, info)
        return info

    async def inspect(self, instance_id: str) -> InstanceInfo:
        """Current state of one instance, as its host sees it."""
        host = await self._locate(instance_id)
        info = info_from_json(await self._call(host, {"op": "inspect", "instance_id": instance_id}))
        self._remember(host, info)
        return info

    async def list(self, service: str | None = None) -> list[InstanceInfo]:
        """Every instance on every host (an app found unsupervised there gets a new supervisor).

        A host that cannot be asked is an error naming it: its instances are not "gone".
        """
        answers = await self._on_every_host({"op": "list", "service": service})
        infos = []
        for host, answer in answers:
            for data in answer:
                info = info_from_json(data)
                self._remember(host, info)
                infos.append(info)
        if service is None:
            self._listed = True
        return infos

    async def remove(self, instance_id: str) -> None:
        """Forget a stopped instance on its host; running ones are refused."""
        host = await self._locate(instance_id)
        await self._call(host, {"op": "remove", "instance_id": instance_id})
        self._placed.pop(instance_id, None)

    async def output_tail(
        self, instance_id: str, lines: int, *, max_bytes: int | None = None
    ) -> builtins.list[str]:
        """The last `lines` lines of the instance's output (masked on its host)."""
        host = await self._locate(instance_id, exited=True)
        request = {"op": "output_tail", "instance_id": instance_id, "lines": lines}
        answer = await self._call(host, {**request, "max_bytes": max_bytes})
        return [str(line) for line in answer]

    async def list_exited(self, service: str | None = None) -> builtins.list[InstanceInfo]:
        """Removed instances that had crashed, whose output their hosts still keep."""
        answers = await self._on_every_host({"op": "list_exited", "service": service})
        return [info_from_json(data) for _, answer in answers for data in answer]

    async def logs(
        self, instance_id: str, *, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        """The instance's output lines, streamed from its host as they come."""
        host = await self._locate(instance_id, exited=True)
        agent, root = await self._agent(host)
        request = {"op": "logs", "instance_id": instance_id, "since": since, "follow": follow}
        async for line in agent.stream({**request, "root": root, "host": host.address}):
            yield line

    async def adopt_orphans(self) -> builtins.list[str]:
        """On every host, give each app that outlived its supervisor a new one."""
        answers = await self._on_every_host({"op": "adopt_orphans"})
        return [str(instance_id) for _, answer in answers for instance_id in answer]

    async def close(self) -> None:
        """Close the agents, SSH connections and local tarballs; the instances keep running."""
        agents, self._agents = list(self._agents.values()), {}
        for agent in agents:
            await agent.close()
        await self._pool.close()
        for path in self._packed.values():
            path.unlink(missing_ok=True)
        self._packed.clear()

    # -- placement ----------------------------------------------------------------------------

    async def _place(self, spec: InstanceSpec) -> RemoteHost:
        """The host running the fewest instances of the revision, then of the service (the
        first such, in order): a rolling deploy puts its new revision on every host, whichever
        old instance it stopped first."""
        if not self._listed:
            await self.list()  # after a restart: count what already runs before adding
        if spec.instance_id in self._placed and self._placed[spec.instance_id].active:
            return self._placed[spec.instance_id].host  # the runtime there refuses it, by name
        same_revision = {host.address: 0 for host in self.hosts}
        same_service = dict(same_revision)
        for placed in self._placed.values():
            if placed.active and placed.service == spec.service:
                address = placed.host.address
                same_service[address] = same_service.get(address, 0) + 1
                if placed.revision == spec.revision:
                    same_revision[address] = same_revision.get(address, 0) + 1
        host = min(self.hosts, key=lambda h: (same_revision[h.address], same_service[h.address]))
        self._placed[spec.instance_id] = _Placed(host, spec.service, spec.revision, active=True)
        return host

    def _remember(self, host: RemoteHost, info: InstanceInfo) -> None:
        active = info.state not in _ENDED
        self._placed[info.instance_id] = _Placed(host, info.service, info.revision, active)

    async def _locate(self, instance_id: str, *, exited: bool = False) -> RemoteHost:
        """The host that has the instance (asking every host if this control plane is new)."""
        placed = self._placed.get(instance_id)
        if placed is not None:
            return placed.host
        await self.list()
        placed = self._placed.get(instance_id)
        if placed is not None:
            return placed.host
        if exited:
            for host, answer in await self._on_every_host({"op": "list_exited"}):
                if any(data["instance_id"] == instance_id for data in answer):
                    return host
        names = ", ".join(host.target.name for host in self.hosts)
        raise InstanceNotFound(f"no instance {instance_id!r} on any host ({names})")

    # -- hosts --------------------------------------------------------------------------------

    @property
    def _timeout(self) -> float:
        return self.options.command_timeout

    def _lock(self, *key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _prepare(self, host: RemoteHost) -> str:
        """The host's root, made ready on first use: dirs, python3 checked, zerodown copied."""
        root = self._roots.get(host.address)
        if root is not None:
            return root
        async with self._lock("prepare", host.address):
            if host.address in self._roots:
                return self._roots[host.address]
            bundle = await asyncio.to_thread(zerodown_bundle)
            connection = await self._pool.connection(host.target)
            result = await connection.run(
                quote(self.python, "-c", _PREPARE, host.root, bundle.name), check=False
            )
            if result.exit_status != 0:
                raise RuntimeBackendError(_python_problem(host, self.python, result.exit_status))
            answer = json.loads(result.stdout.strip().splitlines()[-1])
            root = str(answer["root"])
            self._pythons[host.address] = str(answer["python"] or self.python)
            if not answer["bundle"]:
                lib = f"{root}/lib/{bundle.name}"
                await connection.upload(bundle.path, f"{lib}.zip")
                await connection.run(quote(self.python, "-c", _UNPACK, f"{lib}.zip", lib))
            self._roots[host.address] = root
            return root

    async def _ensure_release(
        self, host: RemoteHost, root: str, spec: InstanceSpec, release: ReleaseDirectory
    ) -> str:
        """The release's directory on `host`, uploaded and extracted once per host and revision."""
        name = release_name(spec.service, spec.revision, release.workdir)
        known = self._releases.get((host.address, name))
        if known is not None:
            return known
        async with self._lock("release", host.address, name):
            if (host.address, name) in self._releases:
                return self._releases[(host.address, name)]
            target = f"{root}/releases/{name}"
            # Asked through the agent: a command of its own costs a login shell on the host.
            if not await self._call(host, {"op": "has_release", "release": name}):
                connection = await self._pool.connection(host.target)
                archive = await self._packed_release(name, Path(release.workdir))
                await connection.upload(archive, f"{root}/releases/{name}.tar.gz")
                request = {"op": "extract", "archive": f"{name}.tar.gz", "release": name}
                await self._call(host, request)
            self._releases[(host.address, name)] = target
            return target

    async def _packed_release(self, name: str, workdir: Path) -> Path:
        """The release's tarball here, packed once for every host."""
        async with self._lock("pack", name):
            if name not in self._packed:
                try:
                    self._packed[name] = await asyncio.to_thread(pack_release, workdir)
                except OSError as exc:
                    raise RuntimeBackendError(
                        f"cannot pack the release directory {workdir}: {exc.strerror or exc}"
                    ) from exc
            return self._packed[name]

    def _agent_command(self, host: RemoteHost, root: str) -> str:
        lib = shlex.quote(f"{root}/lib/{zerodown_bundle().name}")
        python = self._pythons.get(host.address, self.python)
        return f"PYTHONPATH={lib} exec {quote(python, '-m', 'zerodown.runtimes.ssh.remote')}"

    async def _agent(self, host: RemoteHost) -> tuple[HostAgent, str]:
        """The host's running agent (started on first use, again after its channel ended)."""
        root = await self._prepare(host)
        async with self._lock("agent", host.address):
            agent = self._agents.get(host.address)
            if agent is None or agent.closed:
                connection = await self._pool.connection(host.target)
                agent = await HostAgent.open(connection, self._agent_command(host, root))
                self._agents[host.address] = agent
            return agent, root

    async def _call(
        self, host: RemoteHost, request: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Run one operation on `host` through its agent; its answer, or its error raised."""
        agent, root = await self._agent(host)
        payload = {**request, "root": root, "host": host.address}
        return await agent.call(payload, timeout=self._timeout if timeout is None else timeout)

    async def _on_every_host(
        self, request: dict[str, Any]
    ) -> builtins.list[tuple[RemoteHost, Any]]:
        """`request` on every host at once; any host's failure raises, naming every such host."""
        results = await asyncio.gather(
            *(self._call(host, request) for host in self.hosts), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure  # cancellation and the like are not a host's fault
        if failures:
            raise RuntimeBackendError("; ".join(str(f) for f in failures)) from failures[0]
        return list(zip(self.hosts, results, strict=True))


def _python_problem(host: RemoteHost, python: str, status: int) -> str:
    wanted = ".".join(map(str, _MIN_PYTHON))
    if status == 127:
        return f"host {host.target.name}: {python} is not installed: install Python {wanted}+"
    if status == 3:
        return f"host {host.target.name}: {python} is older than {wanted}: install {wanted}+"
    return (
        f"host {host.target.name}: cannot prepare {host.root} with {python} (exit {status}): "
        "check that the user may write there"
    )
