"""Where `SshRuntime` starts instances, with the hosts' side faked (no SSH)."""

from __future__ import annotations

from typing import Any

from zerodown.runtimes.base import InstanceInfo, InstanceSpec, InstanceState, ReleaseDirectory
from zerodown.runtimes.ssh.connection import SshOptions, SshTarget
from zerodown.runtimes.ssh.remote import info_json
from zerodown.runtimes.ssh.runtime import RemoteHost, SshRuntime

ADDRESSES = ("10.0.0.2", "10.0.0.3", "10.0.0.4")


class FakeHostsRuntime(SshRuntime):
    """An SshRuntime whose hosts answer from memory: what each host runs, by instance id."""

    def __init__(self) -> None:
        hosts = [RemoteHost(SshTarget(address)) for address in ADDRESSES]
        super().__init__(hosts, SshOptions(user="deploy"))
        self.running: dict[str, dict[str, InstanceInfo]] = {a: {} for a in ADDRESSES}

    async def _prepare(self, host: RemoteHost) -> str:
        return "/srv/zd"

    async def _ensure_release(self, host: RemoteHost, root: str, *args: Any) -> str:
        return f"{root}/releases/r"

    async def _call(
        self, host: RemoteHost, request: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        there = self.running[host.address]
        if request["op"] == "list":
            return [info_json(info) for info in there.values()]
        if request["op"] == "start":
            spec = request["spec"]
            info = InstanceInfo(
                spec["instance_id"],
                spec["service"],
                spec["revision"],
                host.address,
                8000,
                InstanceState.RUNNING,
            )
            there[info.instance_id] = info
            return info_json(info)
        if request["op"] == "stop":
            info = there[request["instance_id"]]
            there[info.instance_id] = InstanceInfo(
                info.instance_id,
                info.service,
                info.revision,
                info.host,
                8000,
                InstanceState.STOPPED,
            )
            return info_json(there[info.instance_id])
        raise AssertionError(request)


def spec(instance_id: str, revision: str) -> InstanceSpec:
    return InstanceSpec("api", revision, instance_id, ReleaseDirectory("run", "/src"))


async def test_a_rolling_surge_puts_the_new_revision_on_every_host() -> None:
    """v1 on three hosts; v2 replaces them one by one, starting each new one before stopping
    an old one (surge), the old ones stopped in an order that is not the hosts' order: every
    host ends with one v2 (counting only the service would put two v2 on the first host)."""
    runtime = FakeHostsRuntime()
    v1 = [await runtime.start(spec(f"v1-{n}", "v1")) for n in range(3)]
    assert [info.host for info in v1] == list(ADDRESSES)
    placed = []
    for n, old in enumerate(["v1-1", "v1-0", "v1-2"]):
        placed.append((await runtime.start(spec(f"v2-{n}", "v2"))).host)
        await runtime.stop(old)
    assert sorted(placed) == list(ADDRESSES)


async def test_a_new_control_plane_counts_what_runs_before_placing() -> None:
    """After a restart the runtime lists the hosts first: a new instance goes to the host that
    runs none of the service, not to the first host."""
    runtime = FakeHostsRuntime()
    for address, instance_id in ((ADDRESSES[0], "a"), (ADDRESSES[2], "c")):
        runtime.running[address][instance_id] = InstanceInfo(
            instance_id, "api", "v1", address, 8000, InstanceState.RUNNING
        )
    assert (await runtime.start(spec("b", "v1"))).host == ADDRESSES[1]
