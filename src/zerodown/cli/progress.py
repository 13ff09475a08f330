"""Live progress of a deployment in the terminal: one line per step, as it happens.

Without `--verbose`, repetitive events are summarised: the probes of a starting instance become
a "waiting for ... to become healthy" line when their result changes or every few seconds, and
a canary analysis is printed only when it says something new.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from zerodown.domain.events import DeploymentEvent, EventKind
from zerodown.refs import revision_label
from zerodown.secrets.masking import global_masker

PROBE_SUMMARY_EVERY = 5.0  # seconds between two "waiting for" lines of one instance
ANALYSIS_EVERY = 10.0  # seconds between two analysis lines of one step and verdict

_STYLE = {
    EventKind.STATE: "bold",
    EventKind.DECISION: "yellow",
    EventKind.BATCH_STARTED: "bold cyan",
    EventKind.BATCH_FINISHED: "cyan",
    EventKind.INSTANCE_HEALTHY: "green",
    EventKind.INSTANCE_FAILED: "bold red",
    EventKind.TRAFFIC_ADDED: "green",
    EventKind.ROLLBACK_STARTED: "bold red",
    EventKind.ROLLBACK_FINISHED: "bold yellow",
    EventKind.HOOK_OUTPUT: "dim",
}
_NAMES_REVISION = (EventKind.BUILD, EventKind.DECISION, EventKind.STEP)


@dataclass
class _HealthWait:
    """The probes of one starting instance, as far as the terminal has been told."""

    since: float  # the first probe's time
    probes: int = 0
    printed_at: float | None = None
    printed: tuple[str, bool] | None = None  # (last detail, start period running) last shown


class ConsoleProgress:
    """A `DeploymentObserver` that prints each event with the time since the deployment began.

    `ref`: the tag or branch the user deployed, so lines name the revision `v2 (1f03ba05)`.
    """

    def __init__(self, console: Console, *, verbose: bool = False, ref: str | None = None) -> None:
        self.console = console
        self.verbose = verbose
        self.ref = ref
        self.started = time.monotonic()
        # Per deployment (`serve` prints every deployment through one progress):
        self._sha: dict[str, str] = {}  # its release
        self._waits: dict[tuple[str, str], _HealthWait] = {}  # by (deployment, instance)
        self._analysis: dict[str, tuple[Any, Any, str, float]] = {}  # step, verdict, text, at

    async def on_event(self, event: DeploymentEvent) -> None:
        text = event.message if self.verbose else self._summary(event)
        if text is None:
            return
        style = _STYLE.get(event.kind, "")
        offset = time.monotonic() - self.started
        # masked again here: events from `zerodown serve` or a replayed history pass through too
        text = self._name_revision(event, global_masker().mask(text)).replace("[", "\\[")
        self.console.print(
            f"[dim]{offset:7.2f}s[/dim] [{style}]{text}[/{style}]"
            if style
            else f"[dim]{offset:7.2f}s[/dim] {text}",
            soft_wrap=True,
        )

    def _summary(self, event: DeploymentEvent) -> str | None:
        """The line to print for `event` without `--verbose`, or None to print nothing."""
        if event.kind is EventKind.HOOK_OUTPUT:
            return None
        if event.kind is EventKind.HEALTH_PROBE:
            return self._probe(event)
        if event.kind in (EventKind.INSTANCE_HEALTHY, EventKind.INSTANCE_FAILED):
            self._waits.pop((event.deployment_id, str(event.data.get("instance"))), None)
        if event.kind is EventKind.ANALYSIS:
            return self._analysed(event)
        if event.kind is not EventKind.INSTANCE_FAILED and "\n" in event.message:
            # a reason that carries an instance's last output: its instance_failed line showed it
            first = event.message.split("\n", 1)[0]
            return f"{first} (output above)"
        return event.message

    def _probe(self, event: DeploymentEvent) -> str | None:
        """A summary of a starting instance's probes when their result changed, or every
        PROBE_SUMMARY_EVERY seconds; passes, and "connection refused" while it boots, quietly."""
        data = event.data
        instance = str(data.get("instance"))
        wait = self._waits.setdefault((event.deployment_id, instance), _HealthWait(since=event.at))
        wait.probes += 1
        if data.get("ok", True):
            return None
        detail = str(data.get("detail", ""))
        period, left = _number(data.get("start_period")), _number(data.get("start_period_left"))
        shown = (detail, left > 0)
        booting = "refused" in detail and wait.printed is None  # expected while it starts
        changed = shown != wait.printed and not booting
        due = event.at - (wait.printed_at or wait.since) >= PROBE_SUMMARY_EVERY
        if not (changed or due):
            return None
        wait.printed_at, wait.printed = event.at, shown
        if left > 0:
            phase = (
                f"start period {period:g} s running ({left:.0f} s left, failures do not count); "
            )
        elif period > 0:
            phase = f"start period ({period:g} s) over; "
        else:
            phase = ""
        probes = f"{wait.probes} probe{'' if wait.probes == 1 else 's'}"
        return f"waiting for {instance} to become healthy: {phase}{probes}, last: {detail}"

    def _analysed(self, event: DeploymentEvent) -> str | None:
        """A canary analysis when its step or verdict changed, or its text changed and
        ANALYSIS_EVERY seconds passed; never the same line twice in a row."""
        step, verdict = event.data.get("step"), event.data.get("verdict")
        last = self._analysis.get(event.deployment_id)
        if last is not None and verdict != "fail" and (step, verdict) == last[:2]:
            repeated = event.message == last[2] or event.at - last[3] < ANALYSIS_EVERY
            if repeated:
                return None
        self._analysis[event.deployment_id] = (step, verdict, event.message, event.at)
        return event.message

    def _name_revision(self, event: DeploymentEvent, text: str) -> str:
        """`release 1f03ba05cafe ready` -> `release v2 (1f03ba05) ready` when the ref is known.

        Only the lines that announce the revision: the release, the plan, the traffic steps
        (a rollback's release is another sha; instance lines already name the revision).
        """
        sha = event.data.get("sha") if event.kind is EventKind.BUILD else None
        if isinstance(sha, str):  # the deployment's own release is the first one built
            self._sha.setdefault(event.deployment_id, sha)
        own = self._sha.get(event.deployment_id)
        if self.ref is None or own is None or event.kind not in _NAMES_REVISION:
            return text
        if event.kind is EventKind.BUILD and sha != own:
            return text
        if event.kind is EventKind.DECISION and "previous_revision" not in event.data:
            return text
        return text.replace(own[:12], revision_label(own, self.ref))


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
