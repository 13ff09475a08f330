"""`PostDeployVerifier`: the engine's `Verifier` for `verify:` (smoke, dependencies, log scan).

It runs once the new revision serves all traffic, records one VERIFY event per check and target
(with its numbers) and a summary, and raises `VerificationFailed` naming the first failed check,
which fails the deployment and rolls the fleet back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from zerodown.clock import Clock, SystemClock
from zerodown.config.routes import route_hosts
from zerodown.config.verify import LogScanConfig, SmokeCheck, VerifyConfig, merge_verify
from zerodown.domain.events import EventKind
from zerodown.engine.extensions import DeploymentContext
from zerodown.errors import VerificationFailed
from zerodown.runtimes.base import InstanceInfo, InstanceState
from zerodown.verify.dependencies import check_dependencies
from zerodown.verify.logscan import scan_logs
from zerodown.verify.placeholder_values import PlaceholderValues, SecretSource
from zerodown.verify.results import CheckResult, failure_reason, summarize
from zerodown.verify.smoke import SmokeTarget, router_target, run_smoke_check

USER_AGENT = "zerodown-verify"


class PostDeployVerifier:
    """Verifies a new revision with the checks its service and environment configure."""

    def __init__(
        self,
        *,
        router_listen: str | None = None,
        clock: Clock | None = None,
        secrets: SecretSource | None = None,
    ) -> None:
        self.router_listen = router_listen  # host:port of the router, for `via: router` checks
        self.clock = clock or SystemClock()
        self.secrets = secrets  # fills `${secret:NAME}` in smoke checks

    async def verify(self, ctx: DeploymentContext) -> None:
        """Run every configured check; raise `VerificationFailed` if any failed."""
        config = merge_verify(ctx.service.verify, ctx.environment.verify)
        if config is None or not config.enabled:
            return
        if ctx.record.kind == "rollback":
            # The restored revision passed verification when it went out; failing it now would
            # roll "back" to the very revision the user is rolling away from.
            await ctx.emit(
                EventKind.VERIFY,
                "verification skipped: a rollback restores a revision that was verified",
                {"summary": True, "ok": True, "skipped": True},
            )
            return
        started = self.clock.monotonic()
        results: list[CheckResult] = []
        error: VerificationFailed | None = None
        try:
            async with asyncio.timeout(config.timeout):
                await self._run(ctx, config, results)
        except TimeoutError:
            reason = f"verification did not finish within {config.timeout:g} s"
            error = VerificationFailed(reason, checks=("timeout",))
        except VerificationFailed as exc:
            error = exc
        failed = tuple(dict.fromkeys(r.check for r in results if not r.ok))
        if error is None and failed:
            error = VerificationFailed(failure_reason(results), checks=failed)
        stopped = None if error is None or failed else str(error)
        message, data = summarize(results, self.clock.monotonic() - started, error=stopped)
        await ctx.emit(EventKind.VERIFY, message, data)
        if error is not None:
            raise error

    async def _run(
        self, ctx: DeploymentContext, config: VerifyConfig, results: list[CheckResult]
    ) -> None:
        instances = [i for i in await ctx.new_instances() if i.state is InstanceState.RUNNING]
        if not instances:
            raise VerificationFailed("no running instance of the new revision to verify")
        targets = [SmokeTarget.of_instance(info) for info in instances]
        headers = {"User-Agent": USER_AGENT}
        values = PlaceholderValues(ctx, config.smoke, self.secrets)  # read when first needed
        # trust_env off: an HTTP(S)_PROXY in the environment must not carry loopback checks away.
        async with httpx.AsyncClient(trust_env=False, headers=headers) as client:
            for check in config.smoke:
                found = await self._smoke(ctx, check, targets, client, values)
                await self._record(ctx, results, found)
            if config.dependencies is not None:
                endpoint = ctx.service.health.path
                found = await check_dependencies(config.dependencies, endpoint, targets, client)
                await self._record(ctx, results, found)
        if config.log_scan is not None:
            if any(not r.ok for r in results):
                await ctx.emit(
                    EventKind.DECISION,
                    "log scan skipped: earlier checks already failed the verification",
                    {"skipped": "log_scan"},
                )
                return
            await self._scan(ctx, config.log_scan, instances, results)

    async def _smoke(
        self,
        ctx: DeploymentContext,
        check: SmokeCheck,
        targets: Sequence[SmokeTarget],
        client: httpx.AsyncClient,
        values: PlaceholderValues,
    ) -> list[CheckResult]:
        chosen = list(targets) if check.via in ("instances", "both") else []
        if check.via in ("router", "both"):
            # the environment's own router address and hosts (see zerodown.config.routes)
            listen = ctx.environment.listen[0] if ctx.environment.listen else self.router_listen
            if listen is None:
                why = "no router address is known to send it through"
                return [CheckResult(check.label, "smoke", "router", False, why)]
            chosen.append(router_target(listen, route_hosts(ctx.service.hosts, ctx.environment)))
        try:
            request = await values.request_for(check)
        except VerificationFailed as exc:  # a missing secret: nothing is sent
            where = chosen[0].name if len(chosen) == 1 else f"{len(chosen)} targets"
            return [values.mask(CheckResult(check.label, "smoke", where, False, str(exc)))]
        found = await asyncio.gather(
            *(run_smoke_check(check, target, client, self.clock, request) for target in chosen)
        )
        # A response may echo what was sent (a login API, /echo): no secret reaches a record.
        return [values.mask(result) for result in found]

    async def _scan(
        self,
        ctx: DeploymentContext,
        config: LogScanConfig,
        instances: Sequence[InstanceInfo],
        results: list[CheckResult],
    ) -> None:
        await ctx.emit(
            EventKind.DECISION,
            f"log scan: baking {config.window:g} s before counting error patterns",
            {"window_s": config.window},
        )
        since = ctx.record.started_at or ctx.record.created_at
        found = await scan_logs(config, ctx.runtime, instances, since=since, clock=self.clock)
        await self._record(ctx, results, found)

    async def _record(
        self, ctx: DeploymentContext, results: list[CheckResult], found: Sequence[CheckResult]
    ) -> None:
        for result in found:
            results.append(result)
            await ctx.emit(EventKind.VERIFY, result.message(), result.event_data())
