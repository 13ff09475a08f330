"""`DeploymentNotifier`: a `DeploymentObserver` that tells people how deployments go.

It turns a deployment's STATE events into started / succeeded / failed / rolled-back
notifications and ALARM events into alarm notifications, with what the seeds' Slack messages
show: environment, service, revision (short sha and commit message), actor, duration, instances
healthy (`2/2`), error count, verification, the reason, and a link to the deployment's page.
Everything else it sees only counts (instances, failures). Events arrive already masked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.domain.routes import route_name
from zerodown.notifiers.base import Notification, NotificationKind, Severity
from zerodown.notifiers.dispatcher import NotificationDispatcher
from zerodown.routers.base import Router
from zerodown.store.base import HistoryStore

log = logging.getLogger(__name__)

ALARM_KIND = "alarm"  # EventKind.ALARM (added by the alarms feature), matched by value
VERIFY_KIND = "verify"  # EventKind.VERIFY (added by the verification feature)

_BY_STATE: dict[str, tuple[NotificationKind, Severity]] = {
    DeploymentState.IN_PROGRESS.value: (NotificationKind.DEPLOYMENT_STARTED, Severity.INFO),
    DeploymentState.SUCCEEDED.value: (NotificationKind.DEPLOYMENT_SUCCEEDED, Severity.INFO),
    # The fleet is back on a good revision: a warning. Failed: it may be broken: critical.
    DeploymentState.ROLLED_BACK.value: (NotificationKind.DEPLOYMENT_ROLLED_BACK, Severity.WARNING),
    DeploymentState.FAILED.value: (NotificationKind.DEPLOYMENT_FAILED, Severity.CRITICAL),
}
_ALARM_SEVERITY = {"ALARM": Severity.CRITICAL, "OK": Severity.INFO}


def describe_duration(seconds: float) -> str:
    """`28m 45s`, `1h 02m`, `12.3s`: as people read a deployment's duration."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def describe_revision(record: DeploymentRecord) -> str:
    """Short sha and the first line of the commit message."""
    short = record.revision[:12]
    message = (record.commit_message or "").strip().splitlines()
    return f"`{short}` {message[0][:120]}" if message else f"`{short}`"


@dataclass
class _Progress:
    """What one running deployment's events said so far."""

    revisions: dict[str, str] = field(default_factory=dict)  # instance -> revision
    healthy: set[str] = field(default_factory=set)
    errors: int = 0
    verification: str | None = None


class DeploymentNotifier:
    """Observes deployments and dispatches a notification at each state that matters."""

    def __init__(
        self,
        dispatcher: NotificationDispatcher,
        store: HistoryStore,
        *,
        dashboard_url: str,
        wanted_instances: Mapping[str, int] | None = None,
        router: Router | None = None,
        settle_timeout: float | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.store = store
        self.dashboard_url = dashboard_url.rstrip("/")
        self.wanted_instances = dict(wanted_instances or {})
        self.router = router
        # At the end of a deployment wait this long for messages in flight, so a CLI process
        # does not exit before its last one leaves; None: never wait.
        self.settle_timeout = settle_timeout
        self._progress: dict[str, _Progress] = {}

    async def on_event(self, event: DeploymentEvent) -> None:
        """Count what matters, and notify on state changes and alarms."""
        progress = self._progress.setdefault(event.deployment_id, _Progress())
        self._count(progress, event)
        if event.kind == ALARM_KIND:
            await self.dispatcher.dispatch(await self._alarm(event))
            return
        if event.kind != EventKind.STATE or event.data.get("to") not in _BY_STATE:
            return
        to = str(event.data["to"])
        record = await self.store.get_deployment(event.deployment_id)
        await self.dispatcher.dispatch(await self._state_notification(to, record, progress))
        if DeploymentState(to).terminal:
            self._progress.pop(event.deployment_id, None)
            if self.settle_timeout:
                await self.dispatcher.flush(self.settle_timeout)

    def link(self, deployment_id: str) -> str:
        """The dashboard page of a deployment."""
        return f"{self.dashboard_url}/deployments/{deployment_id}"

    # -- building notifications ---------------------------------------------------------------

    async def _state_notification(
        self, to: str, record: DeploymentRecord, progress: _Progress
    ) -> Notification:
        kind, severity = _BY_STATE[to]
        what = "rollback" if record.kind == "rollback" else "deployment"
        service, env = record.service, record.environment
        titles = {
            NotificationKind.DEPLOYMENT_STARTED: f"{service}: {what} to {env} started",
            NotificationKind.DEPLOYMENT_SUCCEEDED: f"{service}: {what} to {env} succeeded",
            NotificationKind.DEPLOYMENT_FAILED: f"{service}: {what} to {env} failed",
            NotificationKind.DEPLOYMENT_ROLLED_BACK: f"{service}: {what} to {env} rolled back",
        }
        fields = {
            "Environment": env,
            "Service": service,
            "Revision": describe_revision(record),
            "Actor": record.actor,
        }
        if kind is NotificationKind.DEPLOYMENT_STARTED:
            fields["Strategy"] = record.strategy
            if record.previous_revision:
                fields["Replaces"] = f"`{record.previous_revision[:12]}`"
            text = f"{record.actor} is deploying {describe_revision(record)}."
        else:
            if record.duration is not None:
                fields["Duration"] = describe_duration(record.duration)
            instances = await self._instances(record, to, progress)
            if instances:
                fields["Instances"] = instances
            fields["Errors"] = str(progress.errors)
            if progress.verification:
                fields["Verification"] = progress.verification
            if kind is NotificationKind.DEPLOYMENT_SUCCEEDED:
                text = f"{describe_revision(record)} is live in {env}."
            else:
                text = record.reason or "no reason was recorded"
        return Notification(
            kind=kind.value,
            severity=severity,
            environment=env,
            service=service,
            title=titles[kind],
            text=text,
            fields=fields,
            link=self.link(record.id),
            deployment_id=record.id,
        )

    async def _alarm(self, event: DeploymentEvent) -> Notification:
        data = event.data
        alarm = str(data.get("alarm", "alarm"))
        new_state = str(data.get("new_state", "ALARM"))
        given = data.get("severity")
        if given in {s.value for s in Severity}:
            severity = Severity(str(given))
        else:
            severity = _ALARM_SEVERITY.get(new_state.upper(), Severity.WARNING)
        try:
            record: DeploymentRecord | None = await self.store.get_deployment(event.deployment_id)
        except Exception:  # an alarm still goes out when the history cannot be read
            log.warning("no record for alarm event of %s", event.deployment_id)
            record = None
        fields = {"Alarm": alarm, "State": f"{data.get('old_state', '?')} → {new_state}"}
        for label, key in (("Value", "value"), ("Threshold", "threshold")):
            if data.get(key) is not None:
                fields[label] = str(data[key])
        if record is not None:
            fields["Revision"] = describe_revision(record)
        return Notification(
            kind=NotificationKind.ALARM.value,
            severity=severity,
            environment=record.environment if record else None,
            service=record.service if record else None,
            title=f"{alarm} is {new_state}",
            text=str(data.get("reason") or event.message),
            fields=fields,
            link=self.link(event.deployment_id),
            deployment_id=event.deployment_id,
        )

    async def _instances(self, record: DeploymentRecord, to: str, progress: _Progress) -> str:
        """`2/2 healthy`: healthy targets of the route now, out of the instances wanted."""
        wanted = self.wanted_instances.get(record.service)
        healthy: int | None = None
        if self.router is not None:
            route = route_name(record.service, record.environment)
            try:
                statuses = await self.router.status(route)
                healthy = sum(s.healthy_count for s in statuses if s.route.service == route)
            except Exception as exc:  # the counts are a courtesy: never fail the message
                log.info("cannot count healthy targets of %s: %s", route, exc)
        if healthy is None:
            live = record.revision if to == DeploymentState.SUCCEEDED else record.previous_revision
            healthy = sum(1 for i in progress.healthy if progress.revisions.get(i) == live)
        return f"{healthy}/{wanted} healthy" if wanted else f"{healthy} healthy"

    @staticmethod
    def _count(progress: _Progress, event: DeploymentEvent) -> None:
        data = event.data
        instance = str(data.get("instance", ""))
        if event.kind == EventKind.INSTANCE_STARTING:
            progress.revisions[instance] = str(data.get("revision", ""))
        elif event.kind == EventKind.INSTANCE_HEALTHY:
            progress.healthy.add(instance)
        elif event.kind == EventKind.INSTANCE_FAILED:
            progress.errors += 1
            progress.healthy.discard(instance)
        elif event.kind == EventKind.INSTANCE_STOPPED:
            progress.healthy.discard(instance)
        elif event.kind == EventKind.HOOK_FINISHED and data.get("ok") is False:
            progress.errors += 1
        elif event.kind == VERIFY_KIND:
            if data.get("summary"):
                passed, failed = int(data.get("passed", 0)), int(data.get("failed", 0))
                progress.verification = f"{passed}/{passed + failed} checks passed"
            elif data.get("ok") is False:
                progress.errors += 1
