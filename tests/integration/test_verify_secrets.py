"""Smoke checks that send secrets: `Authorization: Bearer ${secret:API_TOKEN}` end to end.

Real router daemon, LocalRuntime instances of examples/webapp (its `/private` answers 200 only to
the bearer token whose SHA-256 is in PRIVATE_TOKEN_SHA256), the local encrypted secret store and
SQLite history, deployed through the control plane's own wiring (and once through the CLI). The
token is then searched for, literally and in its encodings, in every history row and CLI output.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.test_deploy_local import stack
from tests.integration.verify_fixtures import WEBAPP, VerifyStack, run_command, verify_stack

from zerodown.config.loader import LoadedConfig, load_config
from zerodown.config.secrets import SecretSourceConfig
from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import DeployRequest
from zerodown.secrets import open_secret_store
from zerodown.secrets.masking import encodings

__all__ = ["stack", "verify_stack"]  # the fixtures, imported so pytest finds them

pytestmark = [pytest.mark.timeout(180)]

RIGHT_TOKEN = "zd-right-7c41e9a2b5f8"
WRONG_TOKEN = "zd-wrong-3b8d02f6c1e4"
# Every form a value is masked in: raw, URL-quoted, base64, JSON-escaped.
NEEDLES = sorted({form for value in (RIGHT_TOKEN, WRONG_TOKEN) for form in encodings(value)})

PRIVATE = {
    "name": "private api",
    "path": "/private",
    "headers": {"Authorization": "Bearer ${secret:API_TOKEN}"},
    "via": "both",
    "expect_json": [{"path": "$.authorized", "equals": True}],
}
# /echo sends the body back: with a wrong token stored, the failure quotes what came back.
ECHO = {
    "name": "echo",
    "method": "POST",
    "path": "/echo",
    "body": {"token": "${secret:API_TOKEN}", "user": "${env:SMOKE_USER}"},
    "expect_json": [{"path": "$.token", "matches": "^zd-right-"}],
}


def _configure(verify_stack: VerifyStack, smoke: list[dict[str, Any]]) -> LoadedConfig:
    """zerodown.yml with these smoke checks; the app accepts only RIGHT_TOKEN (by its hash)."""
    loaded = verify_stack.write_config(run=run_command(WEBAPP), verify={"smoke": smoke})
    data = yaml.safe_load(loaded.path.read_text())
    data["services"]["api"]["env"] = {
        "PRIVATE_TOKEN_SHA256": hashlib.sha256(RIGHT_TOKEN.encode()).hexdigest(),
        "SMOKE_USER": "smoke",
    }
    loaded.path.write_text(yaml.safe_dump(data))
    return load_config(loaded.path, environ={})


async def _store_token(loaded: LoadedConfig, value: str) -> None:
    store = open_secret_store(
        SecretSourceConfig(backend="local"), state_dir=loaded.state_dir, root=loaded.root
    )
    await store.set("prod", "API_TOKEN", value)


async def _deploy(verify_stack: VerifyStack, loaded: LoadedConfig, rev: str) -> DeploymentRecord:
    """Deploy through the control plane's deployer: its secrets, masker and verifier."""
    plane = ControlPlane(loaded, verify_stack.runtime, verify_stack.router, verify_stack.store)
    return await plane.deployer().deploy(DeployRequest("api", "prod", rev, "test"))


def _zerodown(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zerodown", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _history_rows(database: Path) -> str:
    """Every row of every table of the history, as text."""
    connection = sqlite3.connect(database)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return "\n".join(
            repr(row) for table in tables for row in connection.execute(f'SELECT * FROM "{table}"')
        )
    finally:
        connection.close()


def _leaks(text: str) -> list[str]:
    return [needle for needle in NEEDLES if needle in text]


async def test_a_bearer_token_from_the_secret_store_passes_the_protected_check(
    verify_stack: VerifyStack,
) -> None:
    """The stored token reaches the app (directly and through the router); records show the
    placeholder, and the secrets were read for the checks with names only in the history."""
    loaded = _configure(verify_stack, [PRIVATE, ECHO])
    await _store_token(loaded, RIGHT_TOKEN)
    record = await _deploy(verify_stack, loaded, "v1")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    events = [e for _, e in await verify_stack.store.events(record.id)]
    checks = [e.data for e in events if e.kind is EventKind.VERIFY and "check" in e.data]
    private = [d for d in checks if d["check"] == "private api"]
    assert sorted(d["target"] for d in private)[-1] == "router" and len(private) == 2
    assert all(d["ok"] and d["status"] == 200 for d in checks)
    read = [e for e in events if e.data.get("placeholders")]
    assert len(read) == 1  # once per verification, not per check or target
    assert read[0].data["placeholders"] == ["${env:SMOKE_USER}", "${secret:API_TOKEN}"]
    assert not _leaks(repr([(e.message, e.data) for e in events]))


@pytest.mark.slow  # three `zerodown` subprocesses: about 10-20 s
async def test_a_wrong_stored_token_fails_rolls_back_and_leaks_nowhere(
    verify_stack: VerifyStack,
) -> None:
    """v1 passes with the right token; v2, deployed by the CLI with a wrong token stored, gets
    401 and an echo of the wrong token: rolled back to v1, and neither token is in the history
    rows, `deploy -v`, `history --json` or `status --json` output."""
    loaded = _configure(verify_stack, [PRIVATE, ECHO])
    await _store_token(loaded, RIGHT_TOKEN)
    v1 = await _deploy(verify_stack, loaded, "v1")
    assert v1.state is DeploymentState.SUCCEEDED, v1.reason
    await _store_token(loaded, WRONG_TOKEN)

    deployed = _zerodown(verify_stack.root, "deploy", "api", "--env", "prod", "-r", "v2", "-v")
    assert deployed.returncode == 1, deployed.stdout + deployed.stderr
    assert await verify_stack.running_revisions() == ["v1"]
    (v2,) = await verify_stack.store.list_deployments(service="api", environment="prod", limit=1)
    assert v2.state is DeploymentState.ROLLED_BACK
    assert "smoke check private api failed" in (v2.reason or "")
    assert "status 401, want 200" in (v2.reason or "")
    events = await verify_stack.verify_events(v2)
    echo = next(e.data for e in events if e.data.get("check") == "echo")
    assert echo["detail"] == "$.token is '****', which does not match /^zd-right-/"
    assert echo["path"] == "/echo"
    private = next(e.data for e in events if e.data.get("check") == "private api")
    assert private["path"] == "/private" and private["status"] == 401

    outputs = [deployed.stdout + deployed.stderr]
    for args in (("history", "--json"), ("status", "--json")):
        done = _zerodown(verify_stack.root, *args)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    history = json.loads(outputs[1])
    assert [h["state"] for h in history[:2]] == ["rolled_back", "succeeded"]
    for output in outputs:
        assert not _leaks(output), f"CLI output leaks a token:\n{output}"
    rows = _history_rows(loaded.state_dir / "history.db")
    assert "verify: read the secrets of prod" in rows and "private api" in rows  # rows were read
    assert not _leaks(rows), "the history database holds a token"


async def test_a_missing_secret_fails_naming_it_and_rolls_back(verify_stack: VerifyStack) -> None:
    """`${secret:LOGIN_PASSWORD}` is not in the store: nothing is sent, the reason names the
    check and the secret, and v1 serves again."""
    loaded = _configure(verify_stack, [{"path": "/health"}])
    v1 = await _deploy(verify_stack, loaded, "v1")
    assert v1.state is DeploymentState.SUCCEEDED, v1.reason
    login = {
        "name": "login",
        "method": "POST",
        "path": "/echo",
        "body": {"user": "smoke", "password": "${secret:LOGIN_PASSWORD}"},
    }
    loaded = _configure(verify_stack, [{"path": "/health"}, login])
    record = await _deploy(verify_stack, loaded, "v2")
    assert record.state is DeploymentState.ROLLED_BACK
    reason = record.reason or ""
    assert "smoke check login failed" in reason
    assert "secret LOGIN_PASSWORD does not exist in local:" in reason
    assert "`zerodown secrets set --env prod LOGIN_PASSWORD` adds it" in reason
    assert await verify_stack.running_revisions() == ["v1"]
    checks = [e.data for e in await verify_stack.verify_events(record) if e.data.get("check")]
    assert [c["check"] for c in checks] == ["GET /health", "login"]
    assert not checks[1]["ok"] and "status" not in checks[1]  # never sent
