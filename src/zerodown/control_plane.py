"""The control plane on one machine: config + local runtime + built-in router + history store.

The CLI (direct mode, as in CI) and `zerodown serve` both open one of these. Opening it makes sure
the router runs, opens the history, and finishes any deployment a crashed control plane left behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from zerodown.config import LoadedConfig
from zerodown.engine.deployer import Deployer
from zerodown.engine.events import DeploymentObserver
from zerodown.engine.extensions import DeploymentGuard, EnvSource, Masker, Verifier
from zerodown.engine.recovery import recover_unfinished
from zerodown.errors import ConfigError
from zerodown.routers.base import Router, RouteStatus
from zerodown.routers.builtin.client import BuiltinRouter, ensure_router, stop_router
from zerodown.runtimes.base import InstanceInfo, Runtime
from zerodown.runtimes.local import LocalRuntime
from zerodown.store.base import DeploymentRecord, HistoryStore
from zerodown.store.sql import open_store


@dataclass
class Extensions:
    """The extension points a deployment gets (see `zerodown.engine.extensions`)."""

    observers: list[DeploymentObserver] = field(default_factory=list)
    env_sources: list[EnvSource] = field(default_factory=list)
    guards: list[DeploymentGuard] = field(default_factory=list)
    verifiers: list[Verifier] = field(default_factory=list)
    masker: Masker | None = None


@dataclass(frozen=True)
class FleetStatus:
    """One service in one environment, as the router, the runtime and the history see it."""

    service: str
    environment: str
    route: RouteStatus | None
    instances: tuple[InstanceInfo, ...]
    last: DeploymentRecord | None  # the newest deployment
    live: DeploymentRecord | None  # the newest successful one

    @property
    def revision(self) -> str | None:
        return self.live.revision if self.live else None


def check_target(loaded: LoadedConfig, service: str, environment: str) -> None:
    """Raise `ConfigError` unless the service and environment exist (before anything starts)."""
    config = loaded.config
    if service not in config.services:
        known = ", ".join(sorted(config.services))
        raise ConfigError(
            f"unknown service {service!r}: zerodown.yml defines {known}",
            path=str(loaded.path),
            field="services",
        )
    if environment not in config.environments:
        known = ", ".join(sorted(config.environments))
        raise ConfigError(
            f"unknown environment {environment!r}: zerodown.yml defines {known}",
            path=str(loaded.path),
            field="environments",
        )


class ControlPlane:
    """Everything the engine needs, opened for one zerodown.yml."""

    def __init__(
        self, loaded: LoadedConfig, runtime: Runtime, router: Router, store: HistoryStore
    ) -> None:
        self.loaded = loaded
        self.runtime = runtime
        self.router = router
        self.store = store

    @classmethod
    async def open(
        cls,
        loaded: LoadedConfig,
        *,
        observers: Sequence[DeploymentObserver] = (),
        recover: bool = True,
    ) -> ControlPlane:
        """Start the router if needed, open the history, recover unfinished deployments."""
        state_dir = loaded.state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await ensure_router(state_dir, list(loaded.config.router.listen))
        plane = cls(
            loaded, LocalRuntime(state_dir), BuiltinRouter(state_dir), open_store(loaded.store_url)
        )
        if recover:
            await recover_unfinished(
                loaded,
                runtime=plane.runtime,
                router=plane.router,
                store=plane.store,
                observers=observers,
            )
        return plane

    def deployer(self, observers: Sequence[DeploymentObserver] = ()) -> Deployer:
        """A deployer bound to this control plane, with every feature's extensions."""
        ext = self.extensions()
        return Deployer(
            self.loaded,
            runtime=self.runtime,
            router=self.router,
            store=self.store,
            observers=[*observers, *ext.observers],
            env_sources=ext.env_sources,
            guards=ext.guards,
            verifiers=ext.verifiers,
            masker=ext.masker,
        )

    def extensions(self) -> Extensions:
        """What the configured features add to deployments (secrets, alarms, verification,
        notifications). Each feature adds itself below, in the order they should run."""
        ext = Extensions()
        return ext

    async def status(self) -> list[FleetStatus]:
        """Every service x environment of the config."""
        routes = {route.route.service: route for route in await self.router.status()}
        instances = await self.runtime.list()
        result = []
        for service in self.loaded.config.services:
            for environment in self.loaded.config.environments:
                history = await self.store.list_deployments(
                    service=service, environment=environment, limit=1
                )
                live = await self.store.last_successful(service, environment)
                result.append(
                    FleetStatus(
                        service=service,
                        environment=environment,
                        route=routes.get(f"{service}.{environment}"),
                        instances=tuple(
                            i
                            for i in instances
                            if i.service == service and i.labels.get("environment") == environment
                        ),
                        last=history[0] if history else None,
                        live=live,
                    )
                )
        return result

    async def stop_everything(self) -> int:
        """Stop every instance and the router (`zerodown stop`); return how many instances."""
        stopped = 0
        for route in await self.router.status():
            await self.router.remove_route(route.route.service)
        for info in await self.runtime.list():
            await self.runtime.stop(info.instance_id)
            await self.runtime.remove(info.instance_id)
            stopped += 1
        await stop_router(self.loaded.state_dir)
        return stopped

    async def close(self) -> None:
        """Release the history store."""
        await self.store.close()
