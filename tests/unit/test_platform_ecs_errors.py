"""AWS errors at the ECS platform's seam: one sentence a user can act on, naming the action
(botocore Stubber answers; nothing is sent), and botocore's own retries for throttling."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from zerodown.errors import PlatformError
from zerodown.platforms.ecs.client import RETRIES, BotoApi, Throttled


def _stubbed(code: str, message: str = "") -> tuple[BotoApi, Stubber]:
    client = boto3.client(
        "ecs", region_name="ap-northeast-2", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stub = Stubber(client)
    stub.add_client_error("update_service", service_error_code=code, service_message=message)
    stub.activate()
    return BotoApi(region="ap-northeast-2", endpoint_url=None, clients={"ecs": client}), stub


async def _update(api: BotoApi) -> Any:
    return await api.call("ecs", "update_service", cluster="gaekdam", service="ai")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "AccessDeniedException",
            "access denied to ecs:UpdateService: allow the action ecs:UpdateService",
        ),
        ("ClusterNotFoundException", "check `platform.cluster` and `platform.region`"),
        ("ServiceNotFoundException", "no active service for ecs:UpdateService"),
        ("ServiceNotActiveException", "check `platform.service`"),
        ("ExpiredTokenException", "AWS refused the credentials for ecs:UpdateService"),
        ("InvalidParameterException", "ECS refused ecs:UpdateService: InvalidParameterException"),
    ],
)
async def test_client_errors_become_one_sentence_naming_the_action(
    code: str, expected: str
) -> None:
    """Each AWS error code is one PlatformError line naming ecs:UpdateService and the fix."""
    api, _ = _stubbed(code, "User: arn:aws:sts::1:assumed-role/ci is not authorized")
    with pytest.raises(PlatformError) as caught:
        await _update(api)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)
    assert type(caught.value).__module__ == "zerodown.errors"  # the tree's own type


async def test_throttling_left_after_botocores_retries_is_throttled() -> None:
    """ThrottlingException arrives as Throttled (the follower retries it on its own clock),
    after botocore's standard retry mode made its attempts."""
    api, _ = _stubbed("ThrottlingException", "Rate exceeded")
    with pytest.raises(Throttled) as caught:
        await _update(api)
    assert "throttled ecs:UpdateService after 5 attempts" in str(caught.value)
    assert RETRIES == {"mode": "standard", "total_max_attempts": 5}
    real = BotoApi(region="ap-northeast-2", endpoint_url="http://127.0.0.1:9")
    assert real.client("ecs").meta.config.retries == RETRIES


async def test_no_credentials_says_how_to_give_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, no profile, no role: the sentence lists the ways to give credentials."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    api = BotoApi(region="ap-northeast-2", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(PlatformError) as caught:
        await _update(api)
    assert str(caught.value).startswith("cannot call ecs:UpdateService: no AWS credentials")


async def test_an_html_error_page_is_left_out_of_the_sentence() -> None:
    """An HTTP 500 whose body is an HTML page (moto, a proxy) gives the code alone."""
    api, _ = _stubbed("500", "<!doctype html>\n<html lang=en>\n<title>500 Internal</title>")
    with pytest.raises(PlatformError) as caught:
        await _update(api)
    assert str(caught.value) == "ECS refused ecs:UpdateService: 500"
