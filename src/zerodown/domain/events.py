"""What a deployment records: its states, and one event for every step and decision.

Observers (the history writer, the CLI's live progress, later the notifier and the dashboard stream)
implement `DeploymentObserver`; nothing is called by string name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from zerodown.errors import IllegalTransition


class DeploymentState(StrEnum):
    """Where a deployment is. Terminal: succeeded, rolled_back, failed."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"  # failed, and the fleet is back on the previous revision
    FAILED = "failed"  # failed with nothing to roll back to (first deploy) or rollback failed

    @property
    def terminal(self) -> bool:
        return self in (self.SUCCEEDED, self.ROLLED_BACK, self.FAILED)


TRANSITIONS: dict[DeploymentState, frozenset[DeploymentState]] = {
    DeploymentState.PENDING: frozenset({DeploymentState.IN_PROGRESS, DeploymentState.FAILED}),
    DeploymentState.IN_PROGRESS: frozenset(
        {DeploymentState.SUCCEEDED, DeploymentState.ROLLING_BACK, DeploymentState.FAILED}
    ),
    DeploymentState.ROLLING_BACK: frozenset({DeploymentState.ROLLED_BACK, DeploymentState.FAILED}),
    DeploymentState.SUCCEEDED: frozenset(),
    DeploymentState.ROLLED_BACK: frozenset(),
    DeploymentState.FAILED: frozenset(),
}


def check_transition(current: DeploymentState, wanted: DeploymentState) -> None:
    """Raise `IllegalTransition` unless the table allows `current -> wanted`."""
    if wanted not in TRANSITIONS[current]:
        raise IllegalTransition("deployment", current.value, wanted.value)


class EventKind(StrEnum):
    """Every kind of thing a deployment records."""

    STATE = "state"  # the deployment changed state; data: {from, to}
    DECISION = "decision"  # the engine decided something; message says what and why
    BUILD = "build"  # revision resolved/exported/built; data: {sha, cached, seconds}
    BUILD_OUTPUT = "build_output"  # one line of the build command's output; data: {line}
    BATCH_STARTED = "batch_started"  # data: {batch, of, instances: [ids]}
    BATCH_FINISHED = "batch_finished"  # data: {batch, ok, seconds}
    INSTANCE_STARTING = "instance_starting"  # data: {instance, revision, port}
    INSTANCE_HEALTHY = "instance_healthy"  # data: {instance, seconds, probes}
    INSTANCE_FAILED = "instance_failed"  # data: {instance, reason}
    HEALTH_PROBE = "health_probe"  # data: {instance, ok, detail, seconds, status_code,
    # start_period, start_period_left} (failures within the start period do not count)
    TRAFFIC_ADDED = "traffic_added"  # data: {instance}
    DRAIN_STARTED = "drain_started"  # data: {instance}
    DRAIN_FINISHED = "drain_finished"  # data: {instance, seconds, finished, forced}
    INSTANCE_STOPPED = "instance_stopped"  # data: {instance, exit_code}
    HOOK_STARTED = "hook_started"  # data: {hook, instance, command}
    HOOK_OUTPUT = "hook_output"  # data: {hook, instance, line}
    HOOK_FINISHED = "hook_finished"  # data: {hook, instance, exit_code, seconds, ok}
    ROLLBACK_STARTED = "rollback_started"  # data: {to_revision, reason}
    ROLLBACK_FINISHED = "rollback_finished"  # data: {to_revision, seconds}
    ALARM = "alarm"  # an alarm changed state; data: {alarm, old_state, new_state, reason, value,
    # threshold, metric, statistic, datapoints}
    VERIFY = "verify"  # one post-deploy check: {check, kind, target, ok, detail, ...numbers};
    # the summary: {summary: true, ok, passed, failed, failures: [check names], seconds}
    ANALYSIS = "analysis"  # a canary analysis verdict; data: {verdict, step, weight, canary,
    # baseline, checks, missing, reason} (see zerodown.engine.analysis)
    STEP = "step"  # a progressive traffic change or command; data: {step, weight, command, ...}


@dataclass(frozen=True)
class DeploymentEvent:
    """One recorded step or decision of a deployment."""

    deployment_id: str
    kind: EventKind
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


class DeploymentObserver(Protocol):
    """Receives every event of a deployment, in order, as it happens."""

    async def on_event(self, event: DeploymentEvent) -> None: ...
