"""A canary's progress and the dashboard's actions, read from its events: the step and its
weights per revision, waiting for promote, paused, and which buttons apply in each state."""

from __future__ import annotations

from zerodown.config.progressive import CanaryStep
from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.server.canary_progress import canary_progress, deployment_actions

STEPS = (CanaryStep(weight=20), CanaryStep(weight=50, pause=60.0))


def record(state: DeploymentState = DeploymentState.IN_PROGRESS) -> DeploymentRecord:
    return DeploymentRecord(
        "d1", "web", "prod", "new-sha", "canary", state, "me", 1000.0, previous_revision="old-sha"
    )


def step(number: int | str, weight: int, at: float = 1010.0) -> DeploymentEvent:
    return DeploymentEvent("d1", EventKind.STEP, "step", {"step": number, "weight": weight}, at)


def command(name: str) -> DeploymentEvent:
    return DeploymentEvent("d1", EventKind.STEP, name, {"step": 1, "command": name, "actor": "me"})


def analysis(verdict: str) -> DeploymentEvent:
    data = {"step": 1, "weight": 20, "verdict": verdict, "reason": f"{verdict}: 0 requests"}
    return DeploymentEvent("d1", EventKind.ANALYSIS, "analysis", data)


def test_a_step_without_pause_waits_for_promote_with_its_weights_per_revision() -> None:
    progress = canary_progress(record(), [step(1, 20), analysis("inconclusive")], STEPS)
    assert progress is not None
    assert progress["status"] == "step 1/2: waiting for promote"
    assert progress["waiting_for_promote"] and not progress["paused"]
    assert progress["weights"] == [
        {"revision": "new-sha", "percent": 20, "role": "canary"},
        {"revision": "old-sha", "percent": 80, "role": "baseline"},
    ]
    assert progress["analysis"] == {"verdict": "inconclusive", "reason": "inconclusive: 0 requests"}
    actions = deployment_actions(record(), progress, commands=True)
    assert actions == {
        "abort": True,
        "promote": True,
        "promote_full": True,
        "pause": True,
        "resume": False,
    }


def test_a_paused_step_offers_resume_not_pause_and_a_resume_undoes_it() -> None:
    paused = canary_progress(record(), [step(1, 20), command("pause")], STEPS)
    assert paused is not None and paused["paused"] and not paused["waiting_for_promote"]
    assert paused["status"] == "step 1/2: paused (resume to go on)"
    actions = deployment_actions(record(), paused, commands=True)
    assert (actions["pause"], actions["resume"], actions["promote"]) == (False, True, True)
    resumed = canary_progress(record(), [step(1, 20), command("pause"), command("resume")], STEPS)
    assert resumed is not None and resumed["waiting_for_promote"]


def test_a_timed_step_holds_until_its_end() -> None:
    progress = canary_progress(record(), [step(1, 20), step(2, 50, at=1100.0)], STEPS)
    assert progress is not None
    assert (progress["status"], progress["hold_ends_at"]) == ("step 2/2: holding 60 s", 1160.0)
    assert not progress["waiting_for_promote"]


def test_nothing_but_abort_applies_before_the_first_step_and_nothing_after_the_end() -> None:
    starting = canary_progress(record(), [], STEPS)
    assert starting is not None and starting["phase"] == "starting"
    assert deployment_actions(record(), starting, commands=True) == {
        "abort": True,
        "promote": False,
        "promote_full": False,
        "pause": False,
        "resume": False,
    }
    ended = record(DeploymentState.SUCCEEDED)
    done = canary_progress(ended, [step(1, 20), step("final", 100)], STEPS)
    assert done is not None and done["phase"] == "ended"
    assert done["weights"] == [{"revision": "new-sha", "percent": 100, "role": "canary"}]
    assert not any(deployment_actions(ended, done, commands=True).values())
    rolling_back = record(DeploymentState.ROLLING_BACK)
    back = canary_progress(rolling_back, [step(1, 20)], STEPS)
    assert not any(deployment_actions(rolling_back, back, commands=True).values())


def test_other_strategies_have_no_progress_and_only_abort_while_running() -> None:
    rolling = DeploymentRecord(
        "d2", "web", "prod", "sha", "rolling", DeploymentState.IN_PROGRESS, "me", 1.0
    )
    assert canary_progress(rolling, [step(1, 20)], STEPS) is None
    assert deployment_actions(rolling, None, commands=True) == {
        "abort": True,
        "promote": False,
        "promote_full": False,
        "pause": False,
        "resume": False,
    }
