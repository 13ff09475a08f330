"""`EcsPlatform`: ECS runs the rolling update; zerodown registers the revision, follows its own
deployment and rolls back to the task definition it recorded.

deploy:   describe_services (the running task definition ARN = the rollback target)
          -> describe_task_definition(include=TAGS) -> register_task_definition (whitelist, tags,
          one image replaced, pinned by digest) -> update_service (circuit breaker with rollback,
          alarms) -> follow our PRIMARY deployment id (`rollout.RolloutFollower`).
rollback: update_service back to the recorded ARN; zerodown never deregisters a revision.
A `zerodown rollback` deploys the ARN the earlier deployment of that revision registered.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from zerodown.clock import Clock
from zerodown.config.platform import DIGEST_REF, EcsPlatformConfig, check_digest_ref
from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.errors import AlarmTriggered, DeploymentAborted, PlatformError, VerificationFailed
from zerodown.platforms.ecs.client import AwsApi, BotoApi
from zerodown.platforms.ecs.rollout import RolloutFailed, RolloutFollower, derive_budget
from zerodown.platforms.ecs.service_deployments import ServiceDeploymentWatch
from zerodown.platforms.ecs.taskdef import register_input, short_name

if TYPE_CHECKING:
    from zerodown.engine.run import DeploymentRun

TASK_DEFINITION = "task_definition"  # event data key: the ARN a deployment registered
ECS_ROLLING = ("rolling", "all-at-once")  # both are ECS's rolling update (min/max percent)
CLOCK_SKEW = 300.0  # ListServiceDeployments looks this far back (our clock may be behind)


def platform(settings: EcsPlatformConfig, environment: str, *, clock: Clock) -> EcsPlatform:
    """The registry's entry point: the ECS platform of `environment`, over boto3."""
    target = settings.for_environment(environment)
    api = BotoApi(region=target.region, endpoint_url=target.endpoint_url)
    return EcsPlatform(target, api, clock=clock)


def trigger_of(cause: BaseException) -> str:
    """What made a deployment fail, in the words the record uses."""
    if isinstance(cause, RolloutFailed):
        return cause.trigger
    if isinstance(cause, AlarmTriggered):
        return "alarm"
    if isinstance(cause, VerificationFailed):
        return "smoke check"
    if isinstance(cause, DeploymentAborted | asyncio.CancelledError):
        return "user"
    return "error"


class EcsPlatform:
    """One deployment of one ECS service (a new instance per deployment: it keeps the ARNs)."""

    kind = "ecs"

    def __init__(self, settings: EcsPlatformConfig, api: AwsApi, *, clock: Clock) -> None:
        self.settings = settings
        self.api = api
        self.clock = clock
        self.running_arn: str | None = None  # recorded before anything changes: rollback target
        self.deployed_arn: str | None = None
        self.deployment_id: str | None = None  # set once update_service was called
        self.follower = RolloutFollower(
            api,
            settings.cluster,
            settings.service,
            clock,
            settings.poll_interval,
            on_event=self._on_service_event,
            on_progress=self._on_progress,
            on_throttled=self._on_throttled,
            on_notice=self._on_notice,
        )
        self._run: DeploymentRun | None = None
        self.failure: PlatformError | None = None

    # -- the Platform seam ----------------------------------------------------------------------

    async def roll_out(self, run: DeploymentRun) -> None:
        """Register (or, for a `zerodown rollback`, look up) the revision, update the service,
        follow our deployment until it completes."""
        try:
            await self._roll_out(run)
        except PlatformError as exc:
            if type(exc) is PlatformError:
                raise
            self.failure = exc  # what ended it (a RolloutFailed names its trigger)
            raise PlatformError(str(exc)) from exc  # the error tree's own type, for the record

    async def _roll_out(self, run: DeploymentRun) -> None:
        self._run = run
        strategy = run.environment.strategy.type
        if strategy not in ECS_ROLLING:
            raise PlatformError(
                f"environment {run.record.environment} asks for a {strategy} deployment, which "
                "the ecs platform does not run yet: use `strategy: {type: rolling}` (ECS's "
                "rolling update) for services on ECS"
            )
        service = await self.follower.describe()
        self.running_arn = str(service["taskDefinition"])
        await self.follower.remember_events()
        record = run.record
        last = await run.services.store.last_successful(record.service, record.environment)
        desired = int(service.get("desiredCount", 0))
        await run.note_previous(last.revision if last else None, desired)
        await run.emit(
            EventKind.DECISION,
            f"ecs: {self.settings.service} in {self.settings.cluster} runs "
            f"{short_name(self.running_arn)}: the rollback target",
            {"platform": "ecs", "rollback_task_definition": self.running_arn},
        )
        if run.record.kind == "rollback":
            arn = await self._recorded_arn(run)
        else:
            arn = await self._register(run, await self._image(run))
        self.deployed_arn = arn
        task = (await self.api.call("ecs", "describe_task_definition", taskDefinition=arn))[
            "taskDefinition"
        ]
        budget = await derive_budget(
            self.api, service, task, self.settings.container, self.settings.start_allowance
        )
        timeout = self.settings.timeout or budget.seconds
        since = datetime.fromtimestamp(self.clock.time() - CLOCK_SKEW, tz=UTC)
        why = "platform.timeout" if self.settings.timeout else budget.describe()
        updated = await self.api.call("ecs", "update_service", **self._update_input(arn))
        self.deployment_id = primary_id(updated["service"])
        await run.emit(
            EventKind.DECISION,
            f"ecs: updated {self.settings.service} to {short_name(arn)}; following deployment "
            f"{self.deployment_id}, for at most {timeout:.0f} s ({why})",
            {
                "platform": "ecs",
                "ecs_deployment": self.deployment_id,
                TASK_DEFINITION: arn,
                "timeout": timeout,
                "budget": {**budget.parts, "waves": budget.waves},
            },
        )
        watch = ServiceDeploymentWatch(
            self.api, self.settings.cluster, self.settings.service, arn, since
        )
        final = await self.follower.follow(self.deployment_id, timeout, watch)
        await run.emit(
            EventKind.DECISION,
            f"ecs: deployment {self.deployment_id} COMPLETED: {final.get('runningCount')} task(s) "
            f"of {short_name(arn)} running",
            {"platform": "ecs", "ecs_deployment": self.deployment_id, "rollout": "COMPLETED"},
        )

    async def fail(self, run: DeploymentRun, reason: str, cause: BaseException) -> None:
        """Put the service back on the recorded task definition (unless nothing was changed, or
        auto_rollback is off and ECS did not roll back itself); the record names the trigger."""
        if isinstance(cause, PlatformError) and self.failure is not None:
            cause = self.failure
        trigger = trigger_of(cause)
        by_ecs = isinstance(cause, RolloutFailed) and cause.rolled_back_by_ecs
        await run.emit(
            EventKind.DECISION,
            f"deployment failed ({trigger}): {reason}",
            {
                "reason": reason,
                "trigger": trigger,
                "auto_rollback": run.environment.auto_rollback,
                "rollback_task_definition": self.running_arn,
            },
        )
        if self.deployment_id is None or self.running_arn is None:
            if run.state is DeploymentState.IN_PROGRESS:
                await run.transition(
                    DeploymentState.FAILED, reason=f"{reason}; nothing was changed"
                )
            return
        if not run.environment.auto_rollback and not by_ecs:
            await run.transition(
                DeploymentState.FAILED,
                reason=f"{reason}; auto_rollback is off for {run.record.environment}: ECS was "
                f"left on {short_name(self.deployed_arn or '?')}",
            )
            return
        target = short_name(self.running_arn)
        if run.state is not DeploymentState.ROLLING_BACK:  # a recovered one may be already
            await run.transition(DeploymentState.ROLLING_BACK, reason=reason)
        started = self.clock.monotonic()
        await run.emit(
            EventKind.ROLLBACK_STARTED,
            f"rolling back to {target} ({trigger})",
            {"to_task_definition": self.running_arn, "trigger": trigger, "reason": reason},
        )
        try:
            now = str((await self.follower.describe())["taskDefinition"])
            if now != self.running_arn:
                await self.api.call(
                    "ecs",
                    "update_service",
                    cluster=self.settings.cluster,
                    service=self.settings.service,
                    taskDefinition=self.running_arn,
                )
        except PlatformError as exc:
            await run.transition(
                DeploymentState.FAILED,
                reason=f"{reason}; the rollback to {target} failed too: {exc}",
            )
            return
        seconds = self.clock.monotonic() - started
        how = "ECS had rolled back already" if now == self.running_arn else "update_service"
        await run.emit(
            EventKind.ROLLBACK_FINISHED,
            f"rollback finished in {seconds:.2f} s: {self.settings.service} is on {target} ({how})",
            {"to_task_definition": self.running_arn, "trigger": trigger, "seconds": seconds},
        )
        await run.transition(
            DeploymentState.ROLLED_BACK,
            reason=f"{reason}; rolled back to {target} (trigger: {trigger})",
        )

    async def recover(self, run: DeploymentRun, reason: str) -> None:
        """End a deployment whose control plane died: succeeded if our recorded deployment
        COMPLETED, failed if ECS was never updated, else back to the recorded task definition."""
        self._run = run
        recorded: dict[str, str] = {}
        for _, event in await run.services.store.events(run.record.id):
            for key in ("rollback_task_definition", "ecs_deployment", TASK_DEFINITION):
                if event.data.get(key):
                    recorded.setdefault(key, str(event.data[key]))
        self.running_arn = recorded.get("rollback_task_definition")
        self.deployment_id = recorded.get("ecs_deployment")
        self.deployed_arn = recorded.get(TASK_DEFINITION)
        if self.running_arn is None:
            await self._end_unchanged(run, reason)
            return
        service = await self.follower.describe()
        ours = next(
            (d for d in service.get("deployments", []) if d.get("id") == self.deployment_id),
            None,
        )
        completed = ours is not None and (ours.get("rolloutState"), ours.get("status")) == (
            "COMPLETED",
            "PRIMARY",
        )
        if completed and run.state is DeploymentState.IN_PROGRESS:
            await run.transition(
                DeploymentState.SUCCEEDED, reason="completed after a control-plane crash"
            )
            return
        if self.deployment_id is None:
            if service.get("taskDefinition") == self.running_arn:
                await self._end_unchanged(run, reason)
                return
            self.deployment_id = primary_id(service)  # updated; the id was never recorded
        self.failure = RolloutFailed(
            reason, trigger="control-plane crash", rolled_back_by_ecs=False
        )
        await self.fail(run, reason, self.failure)

    async def _end_unchanged(self, run: DeploymentRun, reason: str) -> None:
        await run.transition(DeploymentState.FAILED, reason=f"{reason}; ECS was not changed")

    # -- the steps -------------------------------------------------------------------------------

    async def _image(self, run: DeploymentRun) -> str:
        """The image of this release: the one it built, else `platform.image`, else the
        revision itself when it is a digest reference; a tag is refused."""
        service = run.service
        if service.source is not None or service.build is not None:
            release = await run.prepare(run.record.revision)
            if release.image:
                return check_pinned(release.image)
        if self.settings.image:
            return self.settings.image
        if DIGEST_REF.match(run.record.revision):
            return run.record.revision
        raise PlatformError(
            f"service {run.record.service} has no image to deploy to ECS: give it "
            "`build.image` (zerodown builds and pins it), or `platform.image` / --revision as "
            "repo@sha256:... (a tag is refused: ECS would resolve it again on every scale-out)"
        )

    async def _register(self, run: DeploymentRun, image: str) -> str:
        assert self.running_arn is not None
        described = await self.api.call(
            "ecs", "describe_task_definition", taskDefinition=self.running_arn, include=["TAGS"]
        )
        allowed = self.api.input_members("ecs", "register_task_definition")
        payload = register_input(described, allowed, container=self.settings.container, image=image)
        registered = await self.api.call("ecs", "register_task_definition", **payload)
        arn = str(registered["taskDefinition"]["taskDefinitionArn"])
        await run.emit(
            EventKind.DECISION,
            f"ecs: registered {short_name(arn)} from {short_name(self.running_arn)}: "
            f"container {self.settings.container} -> {image}",
            {"platform": "ecs", "registered": arn, "image": image, "from": self.running_arn},
        )
        return arn

    async def _recorded_arn(self, run: DeploymentRun) -> str:
        """The task definition the newest successful deployment of this revision ran."""
        store = run.services.store
        for record in await store.list_deployments(
            service=run.record.service, environment=run.record.environment, limit=200
        ):
            if record.state is not DeploymentState.SUCCEEDED:
                continue
            if record.revision != run.record.revision:
                continue
            for _, event in reversed(await store.events(record.id)):
                arn = event.data.get(TASK_DEFINITION)
                if arn:
                    return str(arn)
        raise PlatformError(
            f"no task definition recorded for {run.record.revision[:12]} of "
            f"{run.record.service} in {run.record.environment}: deploy it instead of rolling back"
        )

    def _update_input(self, arn: str) -> dict[str, Any]:
        config: dict[str, Any] = {
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        }
        if self.settings.alarms:
            config["alarms"] = {
                "alarmNames": list(self.settings.alarms),
                "enable": True,
                "rollback": True,
            }
        return {
            "cluster": self.settings.cluster,
            "service": self.settings.service,
            "taskDefinition": arn,
            "deploymentConfiguration": config,
        }

    # -- what the follower reports ---------------------------------------------------------------

    async def _on_service_event(self, event: dict[str, Any]) -> None:
        assert self._run is not None
        at = event.get("createdAt")
        stamp = float(at.timestamp()) if at is not None else self.clock.time()
        await self._run.record_event(
            DeploymentEvent(
                self._run.record.id,
                EventKind.DECISION,
                f"ecs: {event.get('message', '')}",
                {"platform": "ecs", "ecs_event": str(event.get("id"))},
                at=stamp,
            )
        )

    async def _on_progress(self, deployment: dict[str, Any]) -> None:
        assert self._run is not None
        await self._run.emit(
            EventKind.DECISION,
            f"ecs: deployment {deployment.get('id')} {deployment.get('rolloutState')}, "
            f"{deployment.get('runningCount', 0)}/{deployment.get('desiredCount', 0)} running, "
            f"{deployment.get('failedTasks', 0)} failed",
            {
                "platform": "ecs",
                "ecs_deployment": deployment.get("id"),
                "rollout": deployment.get("rolloutState"),
                "running": deployment.get("runningCount", 0),
                "failed": deployment.get("failedTasks", 0),
            },
        )

    async def _on_notice(self, message: str) -> None:
        assert self._run is not None
        await self._run.emit(EventKind.DECISION, message, {"platform": "ecs"})

    async def _on_throttled(self, interval: float) -> None:
        assert self._run is not None
        await self._run.emit(
            EventKind.DECISION,
            f"ecs: AWS throttled DescribeServices; next look in {interval:.0f} s",
            {"platform": "ecs", "throttled": True, "interval": interval},
        )


def check_pinned(image: str) -> str:
    """`image` when pinned by digest, else PlatformError with the sentence."""
    try:
        return check_digest_ref(image)
    except ValueError as exc:
        raise PlatformError(str(exc)) from None


def primary_id(service: dict[str, Any]) -> str:
    """The id of the PRIMARY deployment UpdateService answered with."""
    for deployment in service.get("deployments", []):
        if deployment.get("status") == "PRIMARY":
            return str(deployment["id"])
    raise PlatformError("ECS answered UpdateService without a PRIMARY deployment")
