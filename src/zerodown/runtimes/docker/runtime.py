"""`DockerRuntime`: instances as containers of an image pinned by digest (Runtime "docker").

The Docker daemon supervises the containers (restart policy `unless-stopped` or `no`), so they
outlive the control plane; a new `DockerRuntime` over the same state dir finds them again by
their labels (`containers`). Start publishes the app's port on a host port chosen here (kept
across restarts of the container), stop is SIGTERM, the stop timeout, then SIGKILL (the
daemon's `stop`), and output is the daemon's log of the container, masked when read.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from zerodown.config.runtime import DockerRuntimeConfig
from zerodown.errors import InstanceNotFound, RuntimeBackendError
from zerodown.runtimes.base import (
    ArtifactKind,
    ContainerImage,
    InstanceInfo,
    InstanceSpec,
    InstanceState,
)
from zerodown.runtimes.docker import containers as c
from zerodown.runtimes.docker.api import DockerApi
from zerodown.runtimes.docker.logstream import container_lines
from zerodown.runtimes.ports import RESERVATIONS
from zerodown.secrets.masking import SECRET_NAMES_ENV, SecretMasker

KEPT_EXITED = 5  # crashed containers kept per service after their instance was removed


class DockerRuntime:
    """Runs each instance as a container through the Docker Engine API (Docker or Podman)."""

    name = "docker"
    artifacts = frozenset({ArtifactKind.IMAGE})

    def __init__(self, settings: DockerRuntimeConfig, state_dir: Path) -> None:
        self.settings = settings
        self.prefix = settings.label_prefix
        self.scope = c.scope_of(state_dir)
        self.api = DockerApi(settings.url, settings.timeout)
        # Containers this runtime stopped: stopped on purpose whatever their exit code. Known to
        # this process only; after a restart, a non-zero exit reads as a crash.
        self._stopped: set[str] = set()

    # -- the seam ------------------------------------------------------------------------------

    async def start(self, spec: InstanceSpec) -> InstanceInfo:
        """Create and start the instance's container; return once the daemon says it runs."""
        image = spec.artifact
        if not isinstance(image, ContainerImage):
            raise RuntimeBackendError(
                f"the docker runtime runs images, not {image.kind} artifacts: build the "
                "service as an image (`build: {image: ...}`) or use `runtime: {backend: local}`"
            )
        name = c.container_name(self.scope, spec.instance_id)
        await self._clear_stopped(name, spec.instance_id)
        await self._ensure_image(image.reference)
        host = self.settings.publish_host if self.settings.network == "bridge" else "127.0.0.1"
        taken = {info.port for info in await self.list()}
        port = await asyncio.to_thread(RESERVATIONS.allocate, host, lambda: taken)
        try:
            container_id = await self.api.call(
                f"start {spec.instance_id}",
                lambda client: self._create_and_start(client, spec, image, name, host, port),
                instance=spec.instance_id,
            )
        finally:
            RESERVATIONS.release(host, port)  # the container's labels hold it now
        return await self._info(container_id, spec.instance_id)

    async def stop(self, instance_id: str, *, timeout: float | None = None) -> InstanceInfo:
        """SIGTERM, up to `timeout` (default: the spec's stop_timeout), then SIGKILL. Idempotent."""
        attrs = await self._inspect(instance_id)
        grace = c.stop_timeout_of(attrs, self.prefix, 10.0) if timeout is None else timeout
        if c.state_of(attrs, self._stopped) not in (InstanceState.STOPPED, InstanceState.FAILED):
            self._stopped.add(str(attrs["Id"]))
            await self.api.call(
                f"stop {instance_id}",
                lambda client: client.api.stop(attrs["Id"], timeout=max(0, round(grace))),
                instance=instance_id,
            )
        return await self._info(str(attrs["Id"]), instance_id)

    async def inspect(self, instance_id: str) -> InstanceInfo:
        """The instance's container as the daemon sees it now; `InstanceNotFound` if none."""
        return self._info_of(await self._inspect(instance_id))

    async def list(self, service: str | None = None) -> builtins.list[InstanceInfo]:
        """Every container of this state dir (by label), running or not, of one service or all."""
        return [
            self._info_of(attrs)
            for attrs in await self._all(service)
            if not c.is_exited(attrs, self.prefix, self.scope)
        ]

    async def remove(self, instance_id: str) -> None:
        """Remove a stopped instance's container; a crashed one is kept (renamed) for its output."""
        attrs = await self._inspect(instance_id)
        state = c.state_of(attrs, self._stopped)
        if state not in (InstanceState.STOPPED, InstanceState.FAILED):
            raise RuntimeBackendError(
                f"instance {instance_id!r} is {state}: stop it before removing it"
            )
        container_id = str(attrs["Id"])
        self._stopped.discard(container_id)
        if state is InstanceState.FAILED or attrs.get("RestartCount"):
            kept = c.exited_name(self.scope, instance_id, time.time())
            await self.api.call(
                f"keep the output of {instance_id}",
                lambda client: client.api.rename(container_id, kept),
                instance=instance_id,
            )
            await self._trim_exited(self._info_of(attrs).service)
            return
        await self.api.call(
            f"remove {instance_id}",
            lambda client: client.api.remove_container(container_id, v=True),
            instance=instance_id,
        )

    async def output_tail(
        self, instance_id: str, lines: int, *, max_bytes: int | None = None
    ) -> builtins.list[str]:
        """The container's last `lines` lines of output (of a kept crashed one too), masked."""
        if lines <= 0:
            return []
        attrs = await self._inspect_any(instance_id)
        found = [
            line
            async for line in container_lines(
                self.api,
                str(attrs["Id"]),
                since=None,
                follow=False,
                mask=_masker(attrs).mask,
                instance=instance_id,
                tail=lines,
            )
        ][-lines:]
        if max_bytes is not None:
            while found and sum(len(line) + 1 for line in found) > max_bytes:
                found.pop(0)
        return found

    async def list_exited(self, service: str | None = None) -> builtins.list[InstanceInfo]:
        """Kept crashed containers (their instances were removed), newest removal first."""
        kept = [a for a in await self._all(service) if c.is_exited(a, self.prefix, self.scope)]
        kept.sort(key=lambda a: str(a.get("Name", "")), reverse=True)  # names end in the time
        return [self._info_of(attrs) for attrs in kept]

    async def logs(
        self, instance_id: str, *, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        """The container's output lines since `since`, masked; `follow` until it stops."""
        attrs = await self._inspect_any(instance_id)
        async for line in container_lines(
            self.api,
            str(attrs["Id"]),
            since=since,
            follow=follow and not c.is_exited(attrs, self.prefix, self.scope),
            mask=_masker(attrs).mask,
            instance=instance_id,
        ):
            yield line

    def _info_of(self, attrs: Mapping[str, Any]) -> InstanceInfo:
        return c.info_of(attrs, self.prefix, self.scope, self._stopped)

    # -- starting ------------------------------------------------------------------------------

    def _create_and_start(
        self,
        client: Any,
        spec: InstanceSpec,
        image: ContainerImage,
        name: str,
        host: str,
        port: int,
    ) -> str:
        """Create the container (labels, env, limits, port) and start it; its id."""
        bridge = self.settings.network == "bridge"
        app_port = (spec.port or self.settings.container_port) if bridge else port
        env = {
            **spec.env,
            spec.port_env: str(app_port),
            "ZERODOWN_PORT": str(app_port),
            "ZERODOWN_SERVICE": spec.service,
            "ZERODOWN_REVISION": spec.revision,
            "ZERODOWN_INSTANCE": spec.instance_id,
        }
        labels = {
            **{self.prefix + k: v for k, v in spec.labels.items()},
            self.prefix + c.SCOPE: self.scope,
            self.prefix + c.SERVICE: spec.service,
            self.prefix + c.INSTANCE: spec.instance_id,
            self.prefix + c.REVISION: spec.revision,
            self.prefix + c.HOST: host,
            self.prefix + c.PORT: str(port),
            self.prefix + c.STOP_TIMEOUT: f"{spec.stop_timeout:g}",
        }
        host_config: dict[str, Any] = {
            "restart_policy": {"Name": spec.restart},
            "network_mode": "bridge" if bridge else "host",
        }
        if bridge:
            host_config["port_bindings"] = {app_port: (host, port)}
        if spec.memory_limit is not None:
            # Swap as large as the memory: the limit is the limit.
            host_config["mem_limit"] = spec.memory_limit
            host_config["memswap_limit"] = spec.memory_limit
        if self.settings.cpus is not None:
            host_config["nano_cpus"] = int(self.settings.cpus * 1e9)
        created = client.api.create_container(
            image.reference,
            command=["/bin/sh", "-c", image.command] if image.command else None,
            name=name,
            labels=labels,
            environment=env,
            ports=[app_port] if bridge else None,
            stop_signal="SIGTERM",
            stop_timeout=max(0, round(spec.stop_timeout)),
            host_config=client.api.create_host_config(**host_config),
            detach=True,
        )
        container_id = str(created["Id"])
        try:
            client.api.start(container_id)
        except Exception:
            client.api.remove_container(container_id, force=True)
            raise
        return container_id

    async def _ensure_image(self, reference: str) -> None:
        """Pull the pinned image as `settings.pull` says."""
        import docker.errors

        def present(client: Any) -> bool:
            try:
                client.api.inspect_image(reference)
            except docker.errors.ImageNotFound:
                return False
            return True

        pull = self.settings.pull
        if pull == "missing" and await self.api.call(f"look up {reference}", present):
            return
        if pull == "never":
            if await self.api.call(f"look up {reference}", present):
                return
            raise RuntimeBackendError(
                f"image {reference} is not on the Docker host and `runtime.pull` is never: "
                "pull it there, or set pull: missing"
            )
        await self.api.call(f"pull {reference}", lambda client: _pull(client, reference))

    async def _clear_stopped(self, name: str, instance_id: str) -> None:
        """Remove a stopped container of the same instance id (a restart of that id)."""
        import docker.errors

        def clear(client: Any) -> None:
            try:
                attrs = client.api.inspect_container(name)
            except docker.errors.NotFound:
                return
            state = c.state_of(attrs)
            if state not in (InstanceState.STOPPED, InstanceState.FAILED):
                raise RuntimeBackendError(
                    f"instance {instance_id!r} already exists and is {state}: stop it first "
                    "or choose another instance id"
                )
            client.api.remove_container(attrs["Id"], v=True)

        await self.api.call(f"start {instance_id}", clear, instance=instance_id)

    # -- reading -------------------------------------------------------------------------------

    async def _inspect(self, instance_id: str) -> Mapping[str, Any]:
        """Inspect data of the instance's (live, not kept) container."""
        name = c.container_name(self.scope, instance_id)
        attrs: Mapping[str, Any] = await self.api.call(
            f"inspect {instance_id}",
            lambda client: client.api.inspect_container(name),
            instance=instance_id,
        )
        return attrs

    async def _inspect_any(self, instance_id: str) -> Mapping[str, Any]:
        """The live container of the instance, else its newest kept crashed one."""
        try:
            return await self._inspect(instance_id)
        except InstanceNotFound:
            kept = [
                a
                for a in await self._all(None, instance_id)
                if c.is_exited(a, self.prefix, self.scope)
            ]
            if not kept:
                raise
            return max(kept, key=lambda a: str(a.get("Name", "")))

    async def _info(self, container_id: str, instance_id: str) -> InstanceInfo:
        attrs = await self.api.call(
            f"inspect {instance_id}",
            lambda client: client.api.inspect_container(container_id),
            instance=instance_id,
        )
        return self._info_of(attrs)

    async def _all(
        self, service: str | None, instance_id: str | None = None
    ) -> builtins.list[Mapping[str, Any]]:
        """Inspect data of every container of this scope (and service / instance)."""
        wanted = [f"{self.prefix}{c.SCOPE}={self.scope}"]
        if service is not None:
            wanted.append(f"{self.prefix}{c.SERVICE}={service}")
        if instance_id is not None:
            wanted.append(f"{self.prefix}{c.INSTANCE}={instance_id}")

        def read(client: Any) -> builtins.list[Mapping[str, Any]]:
            import docker.errors

            found = []
            for summary in client.api.containers(all=True, filters={"label": wanted}):
                try:
                    found.append(client.api.inspect_container(summary["Id"]))
                except docker.errors.NotFound:
                    continue  # removed meanwhile
            return found

        return await self.api.call("list containers", read)

    async def _trim_exited(self, service: str) -> None:
        """Remove the oldest kept crashed containers of `service` beyond KEPT_EXITED."""
        kept = [a for a in await self._all(service) if c.is_exited(a, self.prefix, self.scope)]
        kept.sort(key=lambda a: str(a.get("Name", "")), reverse=True)
        for attrs in kept[KEPT_EXITED:]:
            await self.api.call("remove a kept container", _remover(str(attrs["Id"])))


def _pull(client: Any, reference: str) -> None:
    """Pull `reference` (name@sha256:...), failing with the daemon's reason."""
    repository, _, digest = reference.partition("@")
    for chunk in client.api.pull(repository, tag=digest, stream=True, decode=True):
        if isinstance(chunk, dict) and chunk.get("error"):
            raise RuntimeBackendError(f"cannot pull {reference}: {chunk['error']}")


def _remover(container_id: str) -> Callable[[Any], None]:
    """A call that removes container `container_id` (with its anonymous volumes)."""
    return lambda client: client.api.remove_container(container_id, v=True)


def _masker(attrs: Mapping[str, Any]) -> SecretMasker:
    """Masks the values of the container's env variables that ZERODOWN_SECRET_NAMES names."""
    env = c.environment_of(attrs)
    names = [n for n in env.get(SECRET_NAMES_ENV, "").split(",") if n]
    return SecretMasker(env[name] for name in names if name in env)
