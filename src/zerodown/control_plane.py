"""The control plane on one machine: config + local runtime + built-in router + history store.

The CLI (direct mode, as in CI) and `zerodown serve` both open one of these. Opening it makes sure
the router runs, opens the history, and finishes any deployment a crashed control plane left behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zerodown.config import LoadedConfig
from zerodown.config.routes import environment_listen, route_hosts, router_addresses
from zerodown.domain.events import DeploymentObserver
from zerodown.domain.records import DeploymentRecord
from zerodown.domain.routes import parse_route_name, route_name
from zerodown.engine.deployer import Deployer
from zerodown.engine.extensions import DeploymentGuard, EnvSource, Masker, Verifier
from zerodown.engine.recovery import recover_unfinished
from zerodown.errors import ConfigError
from zerodown.metrics.source import MetricsSource, metrics_source
from zerodown.routers.base import Router, RouteStatus, canonical_address
from zerodown.routers.registry import router_backend
from zerodown.runtimes.base import AdoptsOrphans, InstanceInfo, Runtime
from zerodown.runtimes.registry import open_runtime
from zerodown.store.base import HistoryStore
from zerodown.store.locking import why_holder_is_gone
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
    listen: tuple[str, ...] = ()  # where the router serves this environment

    @property
    def revision(self) -> str | None:
        return self.live.revision if self.live else None


@dataclass(frozen=True)
class Orphan:
    """A service in an environment that zerodown.yml no longer defines, still running."""

    service: str
    environment: str
    route: RouteStatus | None
    instances: tuple[InstanceInfo, ...]
    environment_defined: bool  # only the service left zerodown.yml

    @property
    def stop_command(self) -> str:
        """The command that stops it and nothing zerodown.yml still wants."""
        command = f"zerodown stop --env {self.environment}"
        return f"{command} --service {self.service}" if self.environment_defined else command


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


async def open_router(loaded: LoadedConfig) -> Router:
    """The router of this config (`router.backend`), running and listening on every
    environment's address (a running router that lacks one binds it, without a restart), its
    routes bound to them."""
    backend = router_backend(loaded.config.router)
    router = await backend.open(loaded.state_dir, router_addresses(loaded.config))
    await bind_routes_to_environments(router, loaded)
    return router


async def bind_routes_to_environments(router: Router, loaded: LoadedConfig) -> None:
    """Give routes already in the router the address and hosts their environment has now
    (routes from before per-environment addresses matched every address and collided)."""
    config = loaded.config
    for status in await router.status():
        service, environment = parse_route_name(status.route.service)
        if service not in config.services or environment not in config.environments:
            continue
        env = config.environments[environment]
        listen = tuple(canonical_address(a) for a in env.listen or ())
        hosts = route_hosts(config.services[service].hosts, env)
        if (status.route.listen, status.route.hosts) != (listen, hosts):
            await router.apply_route(replace(status.route, listen=listen, hosts=hosts))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells that a file changed: mtime, size and inode (editors replace files)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class ControlPlane:
    """Everything the engine needs, opened for one zerodown.yml."""

    def __init__(
        self, loaded: LoadedConfig, runtime: Runtime, router: Router, store: HistoryStore
    ) -> None:
        self.loaded = loaded
        self.runtime = runtime
        self.router = router
        self.store = store
        self._collector: Any = None
        self._warm_records: Any = None  # blue/green's warm windows, read from the history
        self._config_stamp: tuple[int, int, int] | None = _stamp(loaded.path)

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
        router = await open_router(loaded)
        runtime = open_runtime(loaded.config.runtime, state_dir)
        plane = cls(loaded, runtime, router, open_store(loaded.store_url))
        if recover:
            await plane.recover(observers)
            await plane.reap_expired_fleets()
        return plane

    async def refresh_config(self) -> LoadedConfig:
        """The config as zerodown.yml says now: `serve` runs for days, and each request must
        act on the file as it is, not as it was at start. Re-read only when the file changed;
        an invalid file raises ConfigError (the request is refused) and keeps the last good one."""
        path = self.loaded.path
        seen = _stamp(path)
        if seen == self._config_stamp:  # unchanged (or never a file: a config made in code)
            return self.loaded
        from zerodown.config import load_config

        loaded = load_config(path)
        if (loaded.state_dir, loaded.store_url) != (self.loaded.state_dir, self.loaded.store_url):
            raise ConfigError(
                "state_dir and store cannot change while zerodown serve runs: "
                "stop serve, then start it again",
                path=str(path),
                field="state_dir" if loaded.state_dir != self.loaded.state_dir else "store",
            )
        if loaded.config != self.loaded.config:
            # a new environment's address is bound now, before anything deploys to it
            self.router = await open_router(loaded)
            self.loaded = loaded
        self._config_stamp = seen
        return self.loaded

    async def recover(self, observers: Sequence[DeploymentObserver] = ()) -> None:
        """Finish or roll back every deployment whose process died (`kill -9`, a crash)."""
        from zerodown.secrets.env_source import SecretsEnvSource
        from zerodown.secrets.masking import global_masker

        if isinstance(self.runtime, AdoptsOrphans):  # apps whose supervisor died get a new one
            await self.runtime.adopt_orphans()
        await recover_unfinished(
            self.loaded,
            runtime=self.runtime,
            router=self.router,
            store=self.store,
            observers=observers,
            # instances restored after a crash need their secrets too
            env_sources=[SecretsEnvSource(self.loaded.state_dir, self.loaded.root)],
            masker=global_masker(),
        )

    async def reap_expired_fleets(self) -> list[str]:
        """Drain and stop blue fleets whose blue/green rollback window has passed (the window
        as the deployment recorded it in the history: a restarted control plane knows it)."""
        import time

        from zerodown.engine.strategies.blue_green import WarmRecords, reap_expired_blue

        if self._warm_records is None:
            self._warm_records = WarmRecords(self.store)
        records: WarmRecords = self._warm_records
        return await reap_expired_blue(self.router, self.runtime, records, now=time.time())

    @property
    def metrics(self) -> MetricsSource:
        """The request metrics of the routes (the router's own measurement today)."""
        return metrics_source(self.router)

    async def collect_metrics(self) -> int:
        """Roll the router's 10 s datapoints up into per-minute rows of the history."""
        from zerodown.metrics.rollup import MetricsCollector

        source = self.metrics
        if not source.measures:
            return 0  # a router that measures nothing has nothing to roll up
        if self._collector is None:
            self._collector = MetricsCollector(source, self.store)
        collector: MetricsCollector = self._collector
        return await collector.collect()

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
        # secrets: resolved per deployment into the instances' env; the masker hides their values
        from zerodown.secrets.env_source import SecretsEnvSource
        from zerodown.secrets.masking import global_masker, install_log_masking

        install_log_masking()  # zerodown's own log records are masked in this process too
        ext.masker = global_masker()
        ext.env_sources.append(SecretsEnvSource(self.loaded.state_dir, self.loaded.root))
        verify_configured = [s.verify for s in self.loaded.config.services.values()] + [
            e.verify for e in self.loaded.config.environments.values()
        ]
        if any(verify_configured):  # post-deploy verification (smoke, dependencies, log scan)
            from zerodown.verify.verifier import PostDeployVerifier

            # a fallback: each deployment's checks go to its environment's own address
            listen = self.loaded.config.router.listen[0]
            secrets = SecretsEnvSource(self.loaded.state_dir, self.loaded.root)  # ${secret:NAME}
            ext.verifiers.append(PostDeployVerifier(router_listen=listen, secrets=secrets))
        if self.loaded.config.notifications is not None:  # Slack / webhooks, in the background
            from zerodown.notifiers import deployment_notifier

            notifier = deployment_notifier(
                self, store=self.store, router=self.router, loaded=self.loaded, masker=ext.masker
            )
            ext.observers.extend([notifier] if notifier else [])
        if any(e.alarms for e in self.loaded.config.environments.values()):
            # alarms: judged on live router metrics during the deploy and its bake window
            from zerodown.alarms.bake import BakeWindow
            from zerodown.alarms.guard import AlarmGuard

            ext.guards.append(AlarmGuard(store=self.store))
            ext.verifiers.append(BakeWindow())  # last: it bakes what the other checks passed
        # release retention: after a successful deployment, old releases (venvs...) are deleted
        from zerodown.revisions import ReleaseRetention

        ext.observers.append(ReleaseRetention(self.loaded, self.store, self.runtime))
        services = self.loaded.config.services.values()
        if any(s.build is not None and s.build.image is not None for s in services):
            # images: `latest` / `dev-<timestamp>` moved after a successful deploy, then pruned
            from zerodown.images.lifecycle import ImageLifecycle

            ext.observers.append(ImageLifecycle(self.loaded, self.store, self.runtime))
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
                        route=routes.get(route_name(service, environment)),
                        instances=tuple(
                            i
                            for i in instances
                            if i.service == service and i.labels.get("environment") == environment
                        ),
                        last=history[0] if history else None,
                        live=live,
                        listen=environment_listen(self.loaded.config, environment),
                    )
                )
        return result

    async def orphans(self) -> list[Orphan]:
        """Instances and routes of services or environments zerodown.yml no longer defines:
        they keep running (the data plane never stops by itself) until `zerodown stop --env`."""
        config = self.loaded.config
        routes = {route.route.service: route for route in await self.router.status()}
        found: dict[tuple[str, str], list[InstanceInfo]] = {}
        for info in await self.runtime.list():
            key = (info.service, info.labels.get("environment", ""))
            if key[0] not in config.services or key[1] not in config.environments:
                found.setdefault(key, []).append(info)
        for name in routes:
            service, environment = parse_route_name(name)
            if service not in config.services or environment not in config.environments:
                found.setdefault((service, environment), [])
        return [
            Orphan(
                service,
                environment,
                routes.get(route_name(service, environment)),
                tuple(infos),
                environment_defined=environment in config.environments,
            )
            for (service, environment), infos in sorted(found.items())
        ]

    async def stop_environment(self, environment: str, service: str | None = None) -> int:
        """Stop the instances of one environment (of one service, or all) and remove its routes;
        the router and every other environment keep serving. How many instances stopped."""
        names = {service} if service is not None else set(self.loaded.config.services)
        if service is None:  # services that left zerodown.yml too
            names |= {info.service for info in await self.runtime.list()}
        for name in sorted(names):
            holder = await self.store.lock_holder(name, environment)
            if holder is not None and why_holder_is_gone(holder) is None:
                raise ConfigError(
                    f"{name}/{environment} is being deployed (deployment "
                    f"{holder.deployment_id[:8]}): abort it or wait, then stop"
                )
        for route in await self.router.status():
            route_service, route_env = parse_route_name(route.route.service)
            if route_env == environment and route_service in names:
                await self.router.remove_route(route.route.service)
        stopped = 0
        for info in await self.runtime.list():
            if info.service in names and info.labels.get("environment") == environment:
                await self.runtime.stop(info.instance_id)
                await self.runtime.remove(info.instance_id)
                stopped += 1
        return stopped

    async def stop_everything(self) -> int:
        """Stop every instance and the router (`zerodown stop`); return how many instances."""
        stopped = 0
        for route in await self.router.status():
            await self.router.remove_route(route.route.service)
        for info in await self.runtime.list():
            await self.runtime.stop(info.instance_id)
            await self.runtime.remove(info.instance_id)
            stopped += 1
        await router_backend(self.loaded.config.router).stop(self.loaded.state_dir)
        return stopped

    async def close(self) -> None:
        """Let notifications in flight finish (bounded), then release the history store."""
        if self.loaded.config.notifications is not None:
            from zerodown.notifiers import close_notifications

            await close_notifications(self, timeout=self.loaded.config.notifications.timeout)
        await self.store.close()
