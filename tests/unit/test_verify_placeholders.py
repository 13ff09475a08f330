"""`${secret:NAME}` / `${env:NAME}` in smoke checks: parsing, config errors with their line,
filling in (secrets read once, only when needed) and masking of what comes back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.fakes import FakeRouter, FakeRuntime

from zerodown.cli import main
from zerodown.clock import FakeClock
from zerodown.config import parse_config
from zerodown.config.model import EnvironmentConfig, ServiceConfig
from zerodown.config.verify import SmokeCheck
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.extensions import DeploymentContext
from zerodown.errors import ConfigError, SecretsError, VerificationFailed
from zerodown.runtimes.base import InstanceSpec, ReleaseDirectory
from zerodown.verify.placeholder_values import PlaceholderValues
from zerodown.verify.placeholders import (
    Placeholder,
    PlaceholderKind,
    parse_template,
    placeholders_in,
    render,
)
from zerodown.verify.results import CheckResult
from zerodown.verify.smoke import SmokeRequest, SmokeTarget, run_smoke_check
from zerodown.verify.verifier import PostDeployVerifier

TOKEN = "tok-5f2c9a7e1b3d"  # the secret value no record may show
SECRET = Placeholder(PlaceholderKind.SECRET, "API_TOKEN")


def test_templates_split_into_literals_and_placeholders() -> None:
    assert parse_template("Bearer ${secret:API_TOKEN}") == ("Bearer ", SECRET)
    assert parse_template("${env:USER}:${secret:API_TOKEN}") == (
        Placeholder(PlaceholderKind.ENV, "USER"),
        ":",
        SECRET,
    )
    assert parse_template("plain $HOME {x}") == ("plain $HOME {x}",)
    assert parse_template("cost: $${price}") == ("cost: ", "${", "price}")
    assert str(SECRET) == "${secret:API_TOKEN}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("${secret:}", "${secret:} names nothing: write ${secret:NAME}"),
        ("${secrt:X}", "unknown placeholder ${secrt:X}: use ${secret:NAME} or ${env:NAME}"),
        ("${API_TOKEN}", "unknown placeholder ${API_TOKEN}"),
        ("${secret:api-token}", "'api-token' is not a variable name"),
        ("Bearer ${secret:API_TOKEN", "unclosed placeholder '${secret:API_TOKEN'"),
    ],
)
def test_malformed_placeholders_say_what_to_write(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_template(text)
    assert problem in str(caught.value)


def test_render_fills_strings_inside_mappings_and_lists_but_never_keys() -> None:
    body = {"user": "smoke", "${secret:API_TOKEN}": ["${secret:API_TOKEN}", 3, None], "n": 1}
    assert placeholders_in(body) == {SECRET}
    filled = render(body, lambda placeholder: TOKEN)
    assert filled == {"user": "smoke", "${secret:API_TOKEN}": [TOKEN, 3, None], "n": 1}
    assert render("a $${b}", lambda placeholder: "unused") == "a ${b}"


_YAML = """\
services:
  api:
    run: python app.py
    verify:
      smoke:
        - path: /health
        - name: login
          method: POST
          path: /api/login
          headers:
            Accept: application/json
            Authorization: "Bearer ${HEADER}"
          body: {user: smoke, password: "${BODY}"}
environments:
  prod: {}
"""


def _config(header: str = "${secret:API_TOKEN}", body: str = "${secret:PASSWORD}") -> str:
    return _YAML.replace("${HEADER}", header).replace("${BODY}", body)


def test_a_malformed_header_placeholder_is_a_config_error_on_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(header="${secrt:API_TOKEN}"), Path("zerodown.yml"), environ={})
    assert str(caught.value) == (
        "zerodown.yml:12: services.api.verify.smoke.1.headers.Authorization: unknown placeholder "
        "${secrt:API_TOKEN}: use ${secret:NAME} or ${env:NAME} (write $${ for a literal ${)"
    )


def test_a_malformed_body_placeholder_names_where_in_the_body() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(body="${secret:}"), Path("zerodown.yml"), environ={})
    assert caught.value.line == 13
    assert caught.value.field == "services.api.verify.smoke.1.body"
    assert "at $.password: ${secret:} names nothing" in str(caught.value)


def test_a_malformed_path_placeholder_is_refused_and_good_ones_load() -> None:
    bad = _YAML.replace("path: /api/login", "path: /api/${env:}")
    with pytest.raises(ConfigError, match=r"zerodown.yml:9: services.api.verify.smoke.1.path: "):
        parse_config(bad.replace("${HEADER}", "x").replace("${BODY}", "y"), Path("zerodown.yml"))
    loaded = parse_config(_config(), Path("zerodown.yml"), environ={})
    check = loaded.config.services["api"].verify.smoke[1]  # type: ignore[union-attr]
    assert check.headers["Authorization"] == "Bearer ${secret:API_TOKEN}"  # kept as configured


def test_zerodown_check_exits_2_with_one_line_for_a_malformed_placeholder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "zerodown.yml"
    config.write_text(_config(header="${secret:}"))
    with pytest.raises(SystemExit) as caught:
        main(["check", "--config", str(config)])
    assert caught.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert lines[0].endswith(
        "zerodown.yml:12: services.api.verify.smoke.1.headers.Authorization: ${secret:} names "
        "nothing: write ${secret:NAME}, e.g. ${secret:API_TOKEN}"
    )


class FakeSecrets:
    """A `SecretSource` that counts its reads."""

    def __init__(self, values: dict[str, str], *, error: str | None = None) -> None:
        self.values = values
        self.error = error
        self.reads = 0

    async def secret_values(self, ctx: DeploymentContext) -> tuple[dict[str, str], str]:
        self.reads += 1
        if self.error is not None:
            raise SecretsError(self.error)
        return dict(self.values), "local:prod"


class _Emitted:
    def __init__(self) -> None:
        self.events: list[tuple[EventKind, str, dict[str, Any]]] = []

    async def __call__(self, kind: EventKind, message: str, data: dict[str, Any] | None) -> None:
        self.events.append((kind, message, dict(data or {})))


async def _context(
    smoke: list[dict[str, Any]], *, env: dict[str, str] | None = None
) -> tuple[DeploymentContext, _Emitted]:
    verify = {"smoke": smoke}
    service = ServiceConfig.model_validate(
        {"run": "python app.py", "verify": verify, "env": env or {}}
    )
    record = DeploymentRecord(
        "d1", "api", "prod", "v2", "rolling", DeploymentState.IN_PROGRESS, "t", 1.0
    )
    runtime = FakeRuntime()
    labels = {"deployment": "d1", "environment": "prod"}
    spec = InstanceSpec("api", "v2", "api-1", ReleaseDirectory("true", "."), labels=labels)
    await runtime.start(spec)
    emitted = _Emitted()
    ctx = DeploymentContext(
        record, service, EnvironmentConfig(), "api.prod", runtime, FakeRouter(), emitted
    )
    return ctx, emitted


def _checks(ctx: DeploymentContext) -> tuple[SmokeCheck, ...]:
    assert ctx.service.verify is not None
    return ctx.service.verify.smoke


async def test_secrets_are_read_once_and_only_when_a_check_needs_them() -> None:
    ctx, emitted = await _context(
        [
            {"path": "/health"},
            {"path": "/a", "headers": {"Authorization": "Bearer ${secret:API_TOKEN}"}},
            {"path": "/b?user=${env:LOGIN}", "body": {"token": "${secret:API_TOKEN}"}},
        ],
        env={"LOGIN": "smoke"},
    )
    secrets = FakeSecrets({"API_TOKEN": TOKEN})
    values = PlaceholderValues(ctx, _checks(ctx), secrets)
    plain, first, second = _checks(ctx)
    assert (await values.request_for(plain)).path == "/health"
    assert secrets.reads == 0  # a check without placeholders reads nothing
    assert (await values.request_for(first)).headers == {"Authorization": f"Bearer {TOKEN}"}
    request = await values.request_for(second)
    assert (request.path, request.body) == ("/b?user=smoke", {"token": TOKEN})
    assert secrets.reads == 1
    assert TOKEN not in repr(request)
    ((kind, message, data),) = emitted.events  # names, never values
    assert kind is EventKind.DECISION and TOKEN not in message + json.dumps(data)
    assert data["placeholders"] == ["${env:LOGIN}", "${secret:API_TOKEN}"]


async def test_a_missing_secret_fails_naming_the_check_and_the_secret() -> None:
    ctx, _ = await _context([{"name": "login", "path": "/a", "body": "${secret:NOPE}"}])
    values = PlaceholderValues(ctx, _checks(ctx), FakeSecrets({"API_TOKEN": TOKEN}))
    with pytest.raises(VerificationFailed) as caught:
        await values.request_for(_checks(ctx)[0])
    assert caught.value.checks == ("login",)
    assert str(caught.value) == (
        "secret NOPE does not exist in local:prod: `zerodown secrets set --env prod NOPE` adds it"
    )


async def test_an_unreadable_store_fails_every_check_that_needs_it_after_one_read() -> None:
    ctx, _ = await _context(
        [{"name": "a", "path": "/${secret:X}"}, {"name": "b", "path": "/${env:X}"}]
    )
    secrets = FakeSecrets({}, error="ssm:/app/prod/ is not readable: AccessDenied")
    values = PlaceholderValues(ctx, _checks(ctx), secrets)
    for check in _checks(ctx):
        with pytest.raises(VerificationFailed, match="cannot read the secrets of prod: ssm"):
            await values.request_for(check)
    assert secrets.reads == 1


async def test_masking_hides_read_values_in_details_and_numbers() -> None:
    ctx, _ = await _context([{"path": "/a", "headers": {"X-Token": "${secret:API_TOKEN}"}}])
    values = PlaceholderValues(ctx, _checks(ctx), FakeSecrets({"API_TOKEN": TOKEN}))
    await values.request_for(_checks(ctx)[0])
    echoed = CheckResult(
        "login", "smoke", "api-1", False, f"$.token is {TOKEN!r}", {"seen": [TOKEN]}
    )
    masked = values.mask(echoed)
    assert masked.detail == "$.token is '****'" and masked.numbers == {"seen": ["****"]}


async def test_smoke_check_sends_the_filled_request_but_reports_the_configured_check() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    check = SmokeCheck.model_validate(
        {"path": "/p/${secret:API_TOKEN}", "headers": {"Authorization": "Bearer ${secret:X}"}}
    )
    request = SmokeRequest.of(check, lambda placeholder: TOKEN)
    target = SmokeTarget("api-1", "http://127.0.0.1:1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        result = await run_smoke_check(check, target, client, FakeClock(), request)
    assert seen[0].url.path == f"/p/{TOKEN}"
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert result.ok and result.check == "GET /p/${secret:API_TOKEN}"
    assert result.numbers["path"] == "/p/${secret:API_TOKEN}"


async def test_verifier_without_a_secret_store_fails_the_check_and_sends_nothing() -> None:
    ctx, emitted = await _context([{"name": "login", "path": "/", "body": "${secret:X}"}])
    with pytest.raises(VerificationFailed, match="smoke check login failed on api-1: "):
        await PostDeployVerifier(clock=FakeClock()).verify(ctx)
    data = emitted.events[0][2]
    assert not data["ok"] and "has no secret store" in data["detail"]
