"""Notifications to a real HTTP receiver on 127.0.0.1: Slack payloads that re-parse as Block Kit,
webhook signatures that verify, a delivery log in a real SQLite history, a receiver that hangs or
answers 500 costing a deployment at most the configured timeout, and `zerodown notify test`."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import ActionsBlock, Block, HeaderBlock
from tests.integration.notify_fixtures import Received, receiver
from tests.unit.fakes import Harness, make_loaded

from zerodown.config.notifications import NotificationsConfig
from zerodown.domain.events import DeploymentState
from zerodown.notifiers.base import ReferenceResolver
from zerodown.notifiers.deployment import DeploymentNotifier
from zerodown.notifiers.dispatcher import NotificationDispatcher, dispatcher_from_config
from zerodown.notifiers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from zerodown.store.deliveries import SqlDeliveryLog
from zerodown.store.sql import SqlHistoryStore, open_store

HOOK_KEY = "test-signing-key-0123456789"
KINDS = [
    "deployment_started",
    "deployment_succeeded",
    "deployment_started",
    "deployment_rolled_back",
]


def _dispatcher(
    slack_url: str, hook_url: str, store: SqlHistoryStore, **settings: Any
) -> NotificationDispatcher:
    config = NotificationsConfig.model_validate(
        {
            "dashboard_url": "http://127.0.0.1:8686",
            "channels": {
                "prod-deployments": {"type": "slack", "url": slack_url, "name": "#prod-deploys"},
                "audit": {"type": "webhook", "url": hook_url, "secret": "${env:ZD_HOOK_KEY}"},
            },
            "routes": [
                {"channel": "prod-deployments", "environments": ["prod"]},
                {"channel": "audit"},
            ],
            **settings,
        }
    )
    return dispatcher_from_config(
        config,
        delivery_log=SqlDeliveryLog(store.engine),
        resolver=ReferenceResolver(environ={"ZD_HOOK_KEY": HOOK_KEY}),
    )


def _with_notifier(harness: Harness, dispatcher: NotificationDispatcher, settle: float) -> None:
    notifier = DeploymentNotifier(
        dispatcher,
        harness.store,
        dashboard_url="http://127.0.0.1:8686",
        wanted_instances={"api": 2},
        router=harness.router,
        settle_timeout=settle,
    )
    harness.deployer = harness.make_deployer(harness.loaded, observers=[notifier])


def _check_slack(request: Received) -> str:
    """Re-parse the blocks with slack_sdk; return the header text."""
    payload = request.json()
    assert payload["text"]
    blocks = [Block.parse(block) for block in payload["blocks"]]
    for block in blocks:
        assert block is not None
        block.validate_json()
    header = blocks[0]
    assert isinstance(header, HeaderBlock)
    actions = blocks[-1]
    assert isinstance(actions, ActionsBlock)
    assert actions.elements[0].to_dict()["url"].startswith("http://127.0.0.1:8686/deployments/")
    return str(header.to_dict()["text"]["text"])


async def test_every_deployment_notification_reaches_slack_and_the_signed_webhook(
    tmp_path: Path,
) -> None:
    """v1 succeeds, v2 fails its health check: 4 notifications on each channel, Slack blocks
    valid, webhook bodies signed with the secret, one ok delivery row per message."""
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    async with receiver() as server:
        dispatcher = _dispatcher(server.url("/slack"), server.url("/hook"), store)
        harness = Harness(make_loaded(tmp_path, instances=2))
        _with_notifier(harness, dispatcher, settle=5.0)
        first = await harness.deploy("v1")
        harness.prober.unhealthy.add("v2")
        second = await harness.deploy("v2")
        assert second.state is DeploymentState.ROLLED_BACK
        await dispatcher.flush(5.0)
        requests = await server.wait_for(8)
        await dispatcher.aclose()
    slack = [r for r in requests if r.path == "/slack"]
    hooks = [r for r in requests if r.path == "/hook"]
    headers = [_check_slack(r) for r in slack]
    assert [h.split(" ", 1)[1] for h in headers] == [
        "api: deployment to prod started",
        "api: deployment to prod succeeded",
        "api: deployment to prod started",
        "api: deployment to prod rolled back",
    ]
    bodies = []
    for request in hooks:
        assert verify_signature(HOOK_KEY, request.body, request.headers[SIGNATURE_HEADER.lower()])
        assert not verify_signature(
            "wrong", request.body, request.headers[SIGNATURE_HEADER.lower()]
        )
        body = request.json()
        assert str(body["timestamp"]) == request.headers[TIMESTAMP_HEADER.lower()]
        bodies.append(body)
    assert [b["kind"] for b in bodies] == KINDS
    assert bodies[-1]["deployment_id"] == second.id
    assert "rolled back to v1" in bodies[-1]["text"]
    assert bodies[-1]["fields"]["Instances"] == "2/2 healthy"
    rows = await SqlDeliveryLog(store.engine).list()
    assert len(rows) == 8 and all(row.ok and row.attempt == 1 for row in rows)
    assert {row.deployment_id for row in rows} == {first.id, second.id}
    assert {row.channel for row in rows} == {"prod-deployments", "audit"}
    await store.close()


async def _timed_deploy(harness: Harness) -> tuple[float, Any]:
    started = time.monotonic()
    record = await harness.deploy("v2")
    return time.monotonic() - started, record


@pytest.mark.parametrize("mode", ["hang", "fail"])
async def test_a_receiver_that_hangs_or_fails_costs_a_deployment_at_most_the_timeout(
    tmp_path: Path, mode: Any
) -> None:
    """Same deployment with no notifier and with a broken receiver: it still succeeds, its
    recorded duration does not grow, its wall time grows by at most the timeout (plus
    scheduling slack); every attempt is in the delivery log."""
    timeout, slack_seconds = 0.5, 0.5
    baseline = Harness(make_loaded(tmp_path / "a", instances=2))
    await baseline.deploy("v1")
    base_wall, base_record = await _timed_deploy(baseline)

    store = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    async with receiver(mode) as server:
        dispatcher = _dispatcher(
            server.url("/slack"),
            server.url("/hook"),
            store,
            timeout=timeout,
            retries=2,
            backoff=0.05,
        )
        harness = Harness(make_loaded(tmp_path / "b", instances=2))
        await harness.deploy("v1")
        _with_notifier(harness, dispatcher, settle=timeout)
        wall, record = await _timed_deploy(harness)
        assert record.state is DeploymentState.SUCCEEDED
        assert wall - base_wall <= timeout + slack_seconds
        assert record.duration <= base_record.duration + slack_seconds
        assert await dispatcher.flush(10.0) == 0  # the retries run out in the background
        await dispatcher.aclose()
    rows = await SqlDeliveryLog(store.engine).list()
    by_message: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        assert not row.ok
        by_message.setdefault((row.notification_id, row.channel), []).append(row.attempt)
        if mode == "fail":
            assert row.status_code == 500 and row.error == f"{row.channel}: HTTP 500 boom"
        else:
            assert row.error == f"{row.channel}: no answer within 0.5 s"
    assert len(by_message) == 4  # started + succeeded on two channels
    assert all(sorted(attempts) == [1, 2, 3] for attempts in by_message.values())
    await store.close()


# -- zerodown notify test -------------------------------------------------------------------------


def _write_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "zerodown.yml"
    config.write_text(
        "services:\n"
        "  api: {run: python app.py}\n"
        "notifications:\n"
        "  backoff: 50ms\n"
        "  channels:\n"
        "    ok: {type: slack, url: '${env:ZD_SLACK_URL}', name: '#prod-deployments'}\n"
        "    broken: {type: webhook, url: '${env:ZD_BROKEN_URL}', secret: '${env:ZD_KEY}'}\n"
    )
    return config


async def _cli(config: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zerodown",
        "notify",
        "test",
        "-c",
        str(config),
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


@pytest.mark.slow  # two CLI processes
async def test_notify_test_sends_to_a_channel_and_a_failure_exits_1_without_the_url(
    tmp_path: Path,
) -> None:
    config = _write_config(tmp_path / "project")
    async with receiver("ok") as good, receiver("fail") as bad:
        env = {
            "ZD_SLACK_URL": good.url("/T000/B000/secret-token"),
            "ZD_BROKEN_URL": bad.url("/private-path"),
            "ZD_KEY": HOOK_KEY,
        }
        code, output = await _cli(config, env, "--channel", "ok")
        assert code == 0, output
        assert "sent a test message to #prod-deployments" in output
        [request] = await good.wait_for(1)
        assert "zerodown test message for ok" in _check_slack_test(request)

        code, output = await _cli(config, env, "--channel", "broken", "--retries", "1")
        assert code == 1, output
        assert "HTTP 500" in output
        assert "private-path" not in output and str(bad.port) not in output
        assert len(await bad.wait_for(2)) == 2  # one retry
    store = open_store(f"sqlite:///{tmp_path / 'project' / '.zerodown' / 'history.db'}")
    rows = await SqlDeliveryLog(store.engine).list()
    assert [(r.channel, r.attempt, r.ok) for r in rows] == [
        ("ok", 1, True),
        ("broken", 1, False),
        ("broken", 2, False),
    ]
    await store.close()


def _check_slack_test(request: Received) -> str:
    """The test message's blocks re-parse; the header text."""
    blocks = [Block.parse(block) for block in request.json()["blocks"]]
    for block in blocks:
        assert block is not None
        block.validate_json()
    header = blocks[0]
    assert isinstance(header, HeaderBlock)
    return str(header.to_dict()["text"]["text"])


# -- the real stack -------------------------------------------------------------------------------


async def _zerodown(repo: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zerodown",
        *args,
        cwd=repo,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(180):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


@pytest.mark.slow  # real router, real instances, a CLI deploy of v1 and of the broken v3
@pytest.mark.timeout(300)
async def test_cli_deploys_on_the_real_stack_notify_before_the_process_exits(
    tmp_path: Path,
) -> None:
    """`zerodown deploy` of v1 then of v3 (broken health): the webhook receiver has all four
    signed messages when each CLI process has exited, with the commit message and 2/2."""
    from zerodown.demo import make_repository

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    repo = make_repository(tmp_path, port)
    config = repo / "zerodown.yml"
    config.write_text(
        config.read_text()
        + "notifications:\n"
        + "  dashboard_url: https://deploy.example.com\n"
        + "  channels:\n"
        + "    audit: {type: webhook, url: '${env:ZD_HOOK_URL}', secret: '${env:ZD_KEY}'}\n"
        + "  routes: [{channel: audit, environments: [prod]}]\n"
    )
    async with receiver("ok") as server:
        env = {"ZD_HOOK_URL": server.url("/hook"), "ZD_KEY": HOOK_KEY}
        try:
            code, output = await _zerodown(repo, env, "deploy", "web", "--env", "prod", "-r", "v1")
            assert code == 0, output
            assert [r.json()["kind"] for r in server.requests] == KINDS[:2]
            code, output = await _zerodown(repo, env, "deploy", "web", "--env", "prod", "-r", "v3")
            assert code == 1, output
        finally:
            await _zerodown(repo, env, "stop")
    bodies = [r.json() for r in server.requests]
    assert [b["kind"] for b in bodies] == KINDS
    assert all(
        verify_signature(HOOK_KEY, r.body, r.headers[SIGNATURE_HEADER.lower()])
        for r in server.requests
    )
    succeeded, rolled_back = bodies[1], bodies[3]
    assert succeeded["fields"]["Instances"] == "2/2 healthy"
    assert "v3: new checkout flow" in rolled_back["fields"]["Revision"]
    assert rolled_back["fields"]["Instances"] == "2/2 healthy"
    assert (
        rolled_back["link"]
        == f"https://deploy.example.com/deployments/{rolled_back['deployment_id']}"
    )
