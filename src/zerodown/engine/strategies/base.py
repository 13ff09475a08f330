"""The `Strategy` seam, the context a strategy runs in, and the steps strategies share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from zerodown.config.model import StrategyConfig
from zerodown.domain.events import EventKind
from zerodown.engine.commands import CommandInbox
from zerodown.engine.extensions import DeploymentContext, Verifier
from zerodown.engine.fleet import Fleet, FleetMember, ReleaseSource, run_all
from zerodown.engine.plan import min_healthy_for, plan_batches
from zerodown.errors import ConfigError
from zerodown.metrics.source import MetricsSource


class HookRunning(Protocol):
    """What a strategy needs of `zerodown.engine.hooks.HookRunner`."""

    def has(self, name: str) -> bool:
        """Whether the hook is configured."""
        ...

    def per_instance(self, name: str) -> bool:
        """Whether the hook runs once per instance (else once per batch)."""
        ...

    async def run(
        self, name: str, *, instance: str | None = None, extra_env: Mapping[str, str] = ...
    ) -> None:
        """Run the hook (a no-op when not configured); raise HookFailed when it fails."""
        ...


@dataclass
class StrategyContext:
    """Everything one strategy run needs: the fleet, the new release, hooks and the plan."""

    fleet: Fleet
    release: ReleaseSource
    hooks: HookRunning
    config: StrategyConfig
    wanted: int  # instances the fleet should have at the end
    old: list[FleetMember] = field(default_factory=list)  # the live fleet before the deploy
    # What progressive strategies (blue-green, canary) also use; others ignore them.
    deployment: DeploymentContext | None = None  # for verifiers run against a preview
    verifiers: Sequence[Verifier] = ()
    commands: CommandInbox | None = None  # promote / pause / resume sent from any process
    metrics: MetricsSource | None = None  # per-revision measurements (canary analysis)

    def take_old(self, count: int) -> list[FleetMember]:
        """Remove and return up to `count` old instances, those serving no traffic first."""
        self.old.sort(key=lambda m: (m.serving, m.instance_id))
        taken, self.old = self.old[:count], self.old[count:]
        return taken

    async def batches(self, *, surge: bool) -> list[int]:
        """Batch sizes over `wanted` (see `plan_batches` and `min_healthy_for`).

        With nothing live there is no traffic to protect: every instance starts in one batch.
        """
        if not self.old and self.wanted > 0:
            await self.fleet.sink.emit(
                EventKind.DECISION,
                f"nothing runs yet: starting all {self.wanted} instance(s) in one batch",
                {"batches": [self.wanted]},
            )
            return [self.wanted]
        return plan_batches(self.wanted, self.config.batch, min_healthy_for(self.config), surge)

    async def hook(
        self, name: str, members: Sequence[FleetMember] | Sequence[str], batch: str
    ) -> None:
        """Run hook `name` for a batch: once per instance, concurrently (CodeDeploy's way), or
        once for the whole batch when its scope is `batch`.

        Every run sees ZERODOWN_BATCH ("2/4") and ZERODOWN_TARGETS (the batch's host:port list);
        a per-instance run also sees ZERODOWN_INSTANCE and, once the instance listens,
        ZERODOWN_TARGET. With no instances a per-instance hook has nothing to run on (the
        ApplicationStop of a first deploy, as in CodeDeploy).
        """
        if not self.hooks.has(name):
            return
        ids = [m if isinstance(m, str) else m.instance_id for m in members]
        addresses = {
            m.instance_id: f"{m.host}:{m.port}"
            for m in members
            if isinstance(m, FleetMember) and m.port
        }
        env = {"ZERODOWN_BATCH": batch, "ZERODOWN_TARGETS": ",".join(addresses.values())}
        if not self.hooks.per_instance(name):
            await self.hooks.run(name, instance=",".join(ids) or None, extra_env=env)
            return
        await run_all(
            self.hooks.run(
                name,
                instance=instance_id,
                extra_env={**env, "ZERODOWN_TARGET": addresses.get(instance_id, "")},
            )
            for instance_id in ids
        )


class Strategy(Protocol):
    """How a deployment replaces the old fleet with instances of the new release."""

    name: str

    async def run(self, ctx: StrategyContext) -> None:
        """Replace the fleet; raise on the first failure (the deployer rolls back)."""
        ...


_REGISTRY: dict[str, Callable[[], Strategy]] = {}


def register(kind: str) -> Callable[[Callable[[], Strategy]], Callable[[], Strategy]]:
    """Class decorator: make a strategy available under `strategy.type: <kind>`."""

    def add(factory: Callable[[], Strategy]) -> Callable[[], Strategy]:
        _REGISTRY[kind] = factory
        return factory

    return add


def strategy_for(config: StrategyConfig) -> Strategy:
    """The strategy `config.type` names (every built-in one registers on import of the package)."""
    try:
        return _REGISTRY[config.type]()
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(
            f"unknown strategy {config.type!r}: use one of {known}", field="strategy.type"
        ) from None


class BatchTimer:
    """Emits BATCH_STARTED / BATCH_FINISHED for one batch and measures it."""

    def __init__(self, ctx: StrategyContext, number: int, of: int, ids: Sequence[str]) -> None:
        self.ctx, self.number, self.of, self.ids = ctx, number, of, list(ids)
        self.started = 0.0

    @property
    def label(self) -> str:
        """ "2/4": for messages and ZERODOWN_BATCH."""
        return f"{self.number}/{self.of}"

    async def start(self) -> BatchTimer:
        """Record the batch's start."""
        self.started = self.ctx.fleet.clock.monotonic()
        await self.ctx.fleet.sink.emit(
            EventKind.BATCH_STARTED,
            f"batch {self.label}: {len(self.ids)} new instance(s)",
            {"batch": self.number, "of": self.of, "instances": self.ids},
        )
        return self

    async def finish(self, ok: bool, *, retiring: Sequence[FleetMember] = ()) -> None:
        """Record the batch's end and how long it took; `retiring`: its old instances, which
        drain after it (with surge, while the next batch starts)."""
        seconds = self.ctx.fleet.clock.monotonic() - self.started
        then = f"; {len(retiring)} old instance(s) drain now" if retiring else ""
        await self.ctx.fleet.sink.emit(
            EventKind.BATCH_FINISHED,
            f"batch {self.label} {'finished' if ok else 'failed'} in {seconds:.2f} s{then}",
            {
                "batch": self.number,
                "ok": ok,
                "seconds": seconds,
                "retiring": [m.instance_id for m in retiring],
            },
        )


async def start_new(
    ctx: StrategyContext, ids: Sequence[str], batch: str, *, start_hook_first: bool
) -> list[FleetMember]:
    """Launch the batch's new instances, run ApplicationStart, wait until all are healthy.

    `start_hook_first`: ApplicationStart runs just before the launch (in-place) instead of just
    after it. Launches and health waits run in parallel within the batch.
    """
    if start_hook_first:
        await ctx.hook("ApplicationStart", ids, batch)
    members = await run_all(ctx.fleet.launch(ctx.release, i) for i in ids)
    if not start_hook_first:
        await ctx.hook("ApplicationStart", members, batch)
    await run_all(ctx.fleet.await_healthy(m) for m in members)
    await ctx.hook("ValidateService", members, batch)
    return members


async def admit_all(ctx: StrategyContext, members: Sequence[FleetMember], batch: str) -> None:
    """BeforeAllowTraffic, admit every member, AfterAllowTraffic."""
    await ctx.hook("BeforeAllowTraffic", members, batch)
    await run_all(ctx.fleet.admit(m) for m in members)
    await ctx.hook("AfterAllowTraffic", members, batch)


async def retire_all(ctx: StrategyContext, members: Sequence[FleetMember]) -> None:
    """Drain and stop members in parallel."""
    await run_all(ctx.fleet.retire(m) for m in members)


async def install(ctx: StrategyContext, ids: Sequence[str], batch: str) -> None:
    """BeforeInstall, Install, AfterInstall: the release is already prepared, hooks still run."""
    await ctx.hook("BeforeInstall", ids, batch)
    await ctx.hook("Install", ids, batch)
    await ctx.hook("AfterInstall", ids, batch)
