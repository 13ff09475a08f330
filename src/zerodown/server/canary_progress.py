"""Where a deployment stands, read from its events: a canary's step, its traffic per revision,
whether it waits for a promote or is paused, and which of the dashboard's actions apply now.

A pure function of the record, its events and the configured steps, so the API answers it for
any deployment (running here, in another process, or long over) and tests need no engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zerodown.config.progressive import CanaryStep
from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord

# States in which `abort` can still change the outcome (rolling back is already the undo).
ABORTABLE = (DeploymentState.PENDING, DeploymentState.IN_PROGRESS)


def deployment_actions(
    record: DeploymentRecord, progress: dict[str, Any] | None, *, commands: bool
) -> dict[str, bool]:
    """Which buttons of a deployment's page apply now; `commands`: the server can steer."""
    holding = progress is not None and progress["phase"] == "step"
    paused = holding and bool(progress and progress["paused"])
    steer = commands and holding and record.state is DeploymentState.IN_PROGRESS
    return {
        "abort": record.state in ABORTABLE,
        "promote": steer,
        "promote_full": steer,
        "pause": steer and not paused,
        "resume": steer and paused,
    }


def canary_progress(
    record: DeploymentRecord,
    events: Sequence[DeploymentEvent],
    steps: Sequence[CanaryStep],
) -> dict[str, Any] | None:
    """The canary's phase, step, weights per revision and hold; None for other strategies.

    Phases: `starting` (before the first step), `step` (holding one), `complete` (100 % on the
    new revision), `no_baseline` (nothing served: the whole fleet started at once), `ended`.
    """
    if record.strategy != "canary":
        return None
    held = [s for s in steps if s.weight < 100]
    phase, step, weight, began = "starting", None, 0, None
    paused = False
    analysis: dict[str, Any] | None = None
    for event in events:
        data = event.data
        if event.kind is EventKind.DECISION and data.get("strategy") == "canary":
            phase, weight = "no_baseline", 100
        elif event.kind is EventKind.STEP and "command" in data:
            if data["command"] == "pause":
                paused = True
            elif data["command"] == "resume":
                paused = False
        elif event.kind is EventKind.STEP and data.get("step") == "final":
            phase, weight, analysis = "complete", 100, None
        elif event.kind is EventKind.STEP and isinstance(data.get("step"), int):
            phase, step, weight, began = "step", data["step"], int(data["weight"]), event.at
            analysis = None
        elif event.kind is EventKind.ANALYSIS and data.get("step") == step:
            analysis = {"verdict": data.get("verdict"), "reason": data.get("reason")}
    if record.state.terminal or record.state is DeploymentState.ROLLING_BACK:
        phase = "ended" if record.state.terminal else "rolling_back"
    config = held[step - 1] if step is not None and 0 < step <= len(held) else None
    hold = None if config is None else config.pause
    waiting = phase == "step" and config is not None and hold is None and not paused
    weights = [{"revision": record.revision, "percent": weight, "role": "canary"}]
    if weight < 100 and record.previous_revision:
        baseline = {"revision": record.previous_revision, "percent": 100 - weight}
        weights.append({**baseline, "role": "baseline"})
    return {
        "phase": phase,
        "step": step,
        "steps": len(held),
        "weight": weight,
        "weights": weights,
        "paused": paused,
        "waiting_for_promote": waiting,
        "hold_seconds": hold,
        "hold_ends_at": None if hold is None or began is None else began + hold,
        "analysis": analysis,
        "status": _status(phase, step, len(held), paused, waiting, hold),
    }


def _status(
    phase: str, step: int | None, steps: int, paused: bool, waiting: bool, hold: float | None
) -> str:
    if phase == "step":
        where = f"step {step}/{steps}" if steps else f"step {step}"
        if paused:
            return f"{where}: paused (resume to go on)"
        if waiting:
            return f"{where}: waiting for promote"
        return f"{where}: holding {hold:g} s" if hold is not None else f"{where}: holding"
    return {
        "starting": "starting the canary instances",
        "complete": "100 % on the new revision",
        "no_baseline": "nothing served before: the whole fleet started at once",
        "rolling_back": "rolling back",
    }.get(phase, "ended")
