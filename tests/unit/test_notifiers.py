"""Notifications on fakes: Slack blocks, routing, retries with backoff, timeouts, the delivery
log, config checks, secret references, and the DeploymentNotifier on a Deployer over fakes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from slack_sdk.models.blocks import ActionsBlock, Block, HeaderBlock, SectionBlock
from tests.unit.fakes import Harness, make_loaded

from zerodown.cli.app import app
from zerodown.clock import FakeClock
from zerodown.config.notifications import NotificationsConfig
from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentEvent
from zerodown.errors import ConfigError, NotificationFailed
from zerodown.notifiers.base import DeliveryAttempt, Notification, ReferenceResolver, Severity
from zerodown.notifiers.deployment import DeploymentNotifier, describe_duration
from zerodown.notifiers.dispatcher import NotificationDispatcher, Route
from zerodown.notifiers.slack import slack_payload
from zerodown.notifiers.webhook import sign, verify_signature


class RecordingNotifier:
    """A Notifier that keeps what it was sent; fails the first `failures` sends."""

    def __init__(self, failures: int = 0, *, hang: bool = False) -> None:
        self.sent: list[Notification] = []
        self.calls = 0
        self.failures = failures
        self.hang = hang

    async def send(self, notification: Notification) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.calls <= self.failures:
            raise NotificationFailed(f"down (call {self.calls})")
        self.sent.append(notification)


class ListLog:
    """A DeliveryLog in a list."""

    def __init__(self) -> None:
        self.attempts: list[DeliveryAttempt] = []

    async def record(self, attempt: DeliveryAttempt) -> None:
        self.attempts.append(attempt)


def note(kind: str = "deployment_failed", **kw: Any) -> Notification:
    values: dict[str, Any] = {
        "kind": kind,
        "severity": Severity.CRITICAL,
        "environment": "prod",
        "service": "api",
        "title": "api: deployment to prod failed",
        "text": "health check failed <script> & more",
        "fields": {"Revision": "`abc123` fix login", "Instances": "2/2 healthy"},
        "link": "http://127.0.0.1:8686/deployments/d1",
        "deployment_id": "d1",
    }
    values.update(kw)
    return Notification(**values)


# -- Slack ---------------------------------------------------------------------------------------


def test_slack_payload_reparses_as_blocks_with_header_fields_context_and_button() -> None:
    """Every block re-parses with slack_sdk's models, validates, and carries the content."""
    payload = slack_payload(note())
    blocks = [Block.parse(b) for b in payload["blocks"]]
    assert [b.type for b in blocks if b] == ["header", "section", "section", "context", "actions"]
    for block in blocks:
        assert block is not None
        block.validate_json()
    header, text, grid, _, actions = blocks
    assert isinstance(header, HeaderBlock) and "failed" in header.to_dict()["text"]["text"]
    assert (
        isinstance(text, SectionBlock) and "&lt;script&gt; &amp;" in text.to_dict()["text"]["text"]
    )
    assert isinstance(grid, SectionBlock) and len(grid.fields) == 2
    assert isinstance(actions, ActionsBlock)
    assert actions.elements[0].to_dict()["url"] == "http://127.0.0.1:8686/deployments/d1"
    assert payload["text"].endswith("api: deployment to prod failed")


def test_slack_payload_cuts_long_texts_and_splits_many_fields_to_stay_valid() -> None:
    """A huge reason and 25 fields still make a message Slack's limits accept."""
    fields = {f"label {i}": "v" * 3000 for i in range(25)}
    payload = slack_payload(note(title="t" * 500, text="x" * 10_000, fields=fields))
    blocks = [Block.parse(b) for b in payload["blocks"]]
    for block in blocks:
        assert block is not None
        block.validate_json()
    grids = [b for b in blocks if isinstance(b, SectionBlock) and b.fields]
    assert [len(g.fields) for g in grids] == [10, 10, 5]


# -- webhook signature ---------------------------------------------------------------------------


def test_webhook_signature_verifies_only_with_the_same_secret_and_body() -> None:
    body = b'{"kind":"test"}'
    header = sign("s3cret", body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature("s3cret", body, header)
    assert not verify_signature("other", body, header)
    assert not verify_signature("s3cret", body + b" ", header)
    assert not verify_signature("s3cret", body, None)


# -- routing -------------------------------------------------------------------------------------


def test_routes_pick_channels_by_kind_environment_and_minimum_severity() -> None:
    """The seeds' three channels: deployments (info), alerts (critical), monitoring (warning)."""
    channels = {name: RecordingNotifier() for name in ("deploys", "alerts", "monitoring", "dev")}
    dispatcher = NotificationDispatcher(
        channels,
        [
            Route(
                "deploys",
                kinds=frozenset({"deployment_started", "deployment_succeeded"}),
                environments=frozenset({"prod"}),
            ),
            Route(
                "alerts",
                kinds=frozenset({"deployment_failed", "alarm"}),
                environments=frozenset({"prod"}),
                min_severity=Severity.CRITICAL,
            ),
            Route("monitoring", kinds=frozenset({"alarm"}), min_severity=Severity.WARNING),
            Route("dev", environments=frozenset({"dev"})),
        ],
    )
    started = note("deployment_started", severity=Severity.INFO)
    assert dispatcher.channels_for(started) == ["deploys"]
    assert dispatcher.channels_for(note("deployment_failed")) == ["alerts"]
    assert dispatcher.channels_for(note("alarm")) == ["alerts", "monitoring"]
    assert dispatcher.channels_for(note("alarm", severity=Severity.WARNING)) == ["monitoring"]
    assert dispatcher.channels_for(note("alarm", severity=Severity.INFO)) == []
    assert dispatcher.channels_for(note("deployment_failed", environment="dev")) == ["dev"]
    with pytest.raises(ValueError, match="unknown channels: nope"):
        NotificationDispatcher(channels, [Route("nope")])


# -- delivery: background, retries, timeout, log -------------------------------------------------


async def test_dispatch_returns_at_once_and_retries_with_exponential_backoff() -> None:
    """Two failures then success: three attempts logged, sleeps of 1 then 2 s (jitter at max)."""
    clock = FakeClock()
    flaky = RecordingNotifier(failures=2)
    delivery_log = ListLog()
    dispatcher = NotificationDispatcher(
        {"alerts": flaky},
        [Route("alerts")],
        retries=3,
        backoff=1.0,
        delivery_log=delivery_log,
        clock=clock,
        jitter=lambda: 1.0,
    )
    await dispatcher.dispatch(note())
    assert dispatcher.pending == 1  # dispatch did not wait for the delivery
    await clock.settle()
    assert clock.next_wake() == pytest.approx(clock.monotonic() + 1.0)
    await clock.advance(1.0)
    assert clock.next_wake() == pytest.approx(clock.monotonic() + 2.0)
    await clock.advance(2.0)
    assert await dispatcher.flush(1.0) == 0
    assert [(a.attempt, a.ok) for a in delivery_log.attempts] == [(1, False), (2, False), (3, True)]
    assert delivery_log.attempts[0].error == "down (call 1)"
    assert len(flaky.sent) == 1


async def test_jitter_keeps_each_wait_between_half_and_all_of_the_backoff() -> None:
    dispatcher = NotificationDispatcher({}, [], backoff=2.0, jitter=lambda: 0.0)
    assert [dispatcher._delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    dispatcher.jitter = lambda: 1.0
    assert [dispatcher._delay(n) for n in (1, 2, 3, 10)] == [2.0, 4.0, 8.0, 60.0]


async def test_an_attempt_that_hangs_is_cut_at_the_timeout_and_logged() -> None:
    """No retries, a 50 ms timeout: one failed attempt saying it got no answer."""
    delivery_log = ListLog()
    dispatcher = NotificationDispatcher(
        {"alerts": RecordingNotifier(hang=True)},
        [Route("alerts")],
        timeout=0.05,
        retries=0,
        delivery_log=delivery_log,
    )
    assert await dispatcher.deliver(note(), "alerts") is False
    [attempt] = delivery_log.attempts
    assert not attempt.ok and attempt.error == "alerts: no answer within 0.05 s"


async def test_aclose_cancels_what_is_still_in_flight() -> None:
    dispatcher = NotificationDispatcher({"a": RecordingNotifier(hang=True)}, [Route("a")])
    await dispatcher.dispatch(note())
    assert await dispatcher.flush(0.01) == 1
    await dispatcher.aclose()
    assert dispatcher.pending == 0


async def test_a_notifier_bug_or_a_failing_log_never_reaches_the_caller() -> None:
    class Broken:
        async def send(self, notification: Notification) -> None:
            raise KeyError("bug")

    class BrokenLog:
        async def record(self, attempt: DeliveryAttempt) -> None:
            raise OSError("disk full")

    dispatcher = NotificationDispatcher(
        {"a": Broken()}, [Route("a")], retries=0, delivery_log=BrokenLog()
    )
    assert await dispatcher.deliver(note(), "a") is False


async def test_masker_hides_secrets_in_what_is_sent_and_in_logged_errors() -> None:
    class Masker:
        def mask(self, text: str) -> str:
            return text.replace("hunter2", "****")

    sink = RecordingNotifier(failures=1)
    delivery_log = ListLog()
    sink.failures = 1
    dispatcher = NotificationDispatcher(
        {"a": sink},
        [Route("a")],
        retries=1,
        backoff=0.0,
        delivery_log=delivery_log,
        masker=Masker(),
    )
    leaked = note(text="password hunter2", fields={"Reason": "hunter2 rejected"})
    await dispatcher.deliver(leaked, "a")
    [sent] = sink.sent
    assert "hunter2" not in sent.text + str(sent.fields)
    assert all("hunter2" not in (a.error or "") for a in delivery_log.attempts)


# -- config and secret references ----------------------------------------------------------------


def _config(**kw: Any) -> NotificationsConfig:
    return NotificationsConfig.model_validate(kw)


def test_config_refuses_plain_webhook_secrets_and_routes_to_unknown_channels() -> None:
    hook = {"type": "webhook", "url": "https://example.com/h"}
    with pytest.raises(ValidationError, match=r"must be \$\{secret:NAME\}"):
        _config(channels={"h": {**hook, "secret": "plain-key"}})
    with pytest.raises(ValidationError, match="needs `secret:`"):
        _config(channels={"h": hook})
    with pytest.raises(ValidationError, match="unknown channel 'x'"):
        _config(channels={"h": {**hook, "secret": "${env:K}"}}, routes=[{"channel": "x"}])
    ok = _config(
        channels={"h": {**hook, "secret": "${secret:HOOK_KEY}"}},
        routes=[{"channel": "h", "kinds": ["alarm"], "min_severity": "warning"}],
        timeout="2s",
    )
    assert ok.timeout == 2.0 and "url" not in repr(ok.channels["h"])


async def test_references_resolve_from_env_and_the_secret_store_and_fail_clearly() -> None:
    async def lookup(name: str) -> str | None:
        return {"HOOK": "from-store"}.get(name)

    resolver = ReferenceResolver(secret_lookup=lookup, environ={"URL": "https://x"})
    assert await resolver.resolve("${env:URL}", what="a: url") == "https://x"
    assert await resolver.resolve("${secret:HOOK}", what="a: secret") == "from-store"
    assert await resolver.resolve("https://plain", what="a: url") == "https://plain"
    with pytest.raises(NotificationFailed, match="a: url: environment variable NOPE is not set"):
        await resolver.resolve("${env:NOPE}", what="a: url")
    with pytest.raises(NotificationFailed, match="secret MISSING is not in the secret store"):
        await resolver.resolve("${secret:MISSING}", what="a: secret")


# -- DeploymentNotifier ---------------------------------------------------------------------------


def _notified(harness: Harness, sink: RecordingNotifier) -> DeploymentNotifier:
    dispatcher = NotificationDispatcher({"all": sink}, [Route("all")], retries=0)
    notifier = DeploymentNotifier(
        dispatcher,
        harness.store,
        dashboard_url="http://dash:8686/",
        wanted_instances={"api": 2},
        router=harness.router,
        settle_timeout=1.0,
    )
    harness.deployer = harness.make_deployer(harness.loaded, observers=[notifier])
    return notifier


async def test_a_successful_deployment_notifies_started_then_succeeded_with_its_facts(
    tmp_path: Path,
) -> None:
    harness = Harness(make_loaded(tmp_path, instances=2))
    sink = RecordingNotifier()
    _notified(harness, sink)
    record = await harness.deploy("v1")
    started, succeeded = sink.sent
    assert (started.kind, succeeded.kind) == ("deployment_started", "deployment_succeeded")
    assert started.severity is Severity.INFO and succeeded.severity is Severity.INFO
    assert succeeded.fields["Instances"] == "2/2 healthy"
    assert succeeded.fields["Errors"] == "0"
    assert succeeded.fields["Actor"] == "test" and "Duration" in succeeded.fields
    assert succeeded.fields["Revision"].startswith("`v1`")
    assert succeeded.link == f"http://dash:8686/deployments/{record.id}"
    assert (succeeded.environment, succeeded.service) == ("prod", "api")


async def test_a_rolled_back_deployment_notifies_the_reason_and_counts_errors(
    tmp_path: Path,
) -> None:
    harness = Harness(make_loaded(tmp_path, instances=2))
    await harness.deploy("v1")
    sink = RecordingNotifier()
    _notified(harness, sink)
    harness.prober.unhealthy.add("v2")
    record = await harness.deploy("v2")
    last = sink.sent[-1]
    assert last.kind == "deployment_rolled_back" and last.severity is Severity.WARNING
    assert last.text == record.reason and "rolled back to v1" in last.text
    assert int(last.fields["Errors"]) >= 1
    assert last.fields["Instances"] == "2/2 healthy"  # v1 serves everywhere again


async def test_alarm_events_become_alarm_notifications_by_state(tmp_path: Path) -> None:
    harness = Harness(make_loaded(tmp_path, instances=1))
    record = await harness.deploy("v1")
    sink = RecordingNotifier()
    notifier = _notified(harness, sink)
    data = {
        "alarm": "HealthyHostCount",
        "old_state": "OK",
        "new_state": "ALARM",
        "reason": "< 1 for 1 minute",
        "value": 0,
        "threshold": 1,
    }
    await notifier.on_event(DeploymentEvent(record.id, "alarm", "alarm", data))  # type: ignore[arg-type]
    await notifier.on_event(
        DeploymentEvent(record.id, "alarm", "ok", {**data, "new_state": "OK"})  # type: ignore[arg-type]
    )
    await notifier.dispatcher.flush(1.0)
    critical, cleared = sink.sent
    assert critical.kind == "alarm" and critical.severity is Severity.CRITICAL
    assert critical.title == "HealthyHostCount is ALARM" and critical.text == "< 1 for 1 minute"
    assert critical.fields["Value"] == "0" and critical.environment == "prod"
    assert cleared.severity is Severity.INFO


def test_durations_read_like_the_seeds() -> None:
    assert [describe_duration(s) for s in (12.34, 1725, 3725)] == ["12.3s", "28m 45s", "1h 02m"]


async def test_control_plane_adds_the_notifier_only_when_notifications_are_configured(
    tmp_path: Path,
) -> None:
    harness = Harness(make_loaded(tmp_path))
    plane = ControlPlane(harness.loaded, harness.runtime, harness.router, harness.store)
    assert not any(isinstance(o, DeploymentNotifier) for o in plane.extensions().observers)
    config = harness.loaded.config.model_copy(
        update={
            "notifications": _config(
                channels={"s": {"type": "slack", "url": "${env:SLACK_URL}"}},
                routes=[{"channel": "s"}],
            )
        }
    )
    plane = ControlPlane(
        replace(harness.loaded, config=config), harness.runtime, harness.router, harness.store
    )
    observers = plane.extensions().observers
    notifiers = [o for o in observers if isinstance(o, DeploymentNotifier)]
    assert len(notifiers) == 1
    assert plane.extensions().observers.count(notifiers[0]) == 1  # one per plane, reused


def test_notify_test_names_the_channels_when_asked_for_an_unknown_one(tmp_path: Path) -> None:
    """A ConfigError (exit code 2) that lists what zerodown.yml defines; nothing is sent."""
    (tmp_path / "zerodown.yml").write_text(
        "services:\n  api: {run: python app.py}\n"
        "notifications:\n  channels:\n    ops: {type: slack, url: 'https://hooks.example'}\n"
    )
    with pytest.raises(ConfigError, match=r"no channel 'nope'.*\(ops\)") as caught:
        app(
            ["notify", "test", "--channel", "nope", "-c", str(tmp_path / "zerodown.yml")],
            standalone_mode=False,
        )
    assert caught.value.exit_code == 2


async def test_close_notifications_cancels_deliveries_in_flight_and_forgets_the_plane(
    tmp_path: Path,
) -> None:
    from zerodown.notifiers import close_notifications, deployment_notifier

    harness = Harness(make_loaded(tmp_path))
    settings = _config(channels={"s": {"type": "slack", "url": "https://x"}}, routes=[])
    loaded = replace(
        harness.loaded, config=harness.loaded.config.model_copy(update={"notifications": settings})
    )
    plane = object.__new__(ControlPlane)
    notifier = deployment_notifier(
        plane, store=harness.store, router=None, loaded=loaded, masker=None
    )
    assert notifier is not None
    notifier.dispatcher.channels["s"] = RecordingNotifier(hang=True)
    notifier.dispatcher.routes = [Route("s")]
    await notifier.dispatcher.dispatch(note())
    await close_notifications(plane, timeout=0.01)
    assert notifier.dispatcher.pending == 0
    assert (
        deployment_notifier(plane, store=harness.store, router=None, loaded=loaded) is not notifier
    )
