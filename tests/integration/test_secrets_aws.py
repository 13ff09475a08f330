"""SSM Parameter Store and Secrets Manager backends against a real `moto_server` over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from zerodown.config.secrets import SecretSourceConfig
from zerodown.errors import SecretsError
from zerodown.secrets.aws_secretsmanager import SecretsManagerStore
from zerodown.secrets.aws_ssm import SsmSecretStore

MOTO = Path(sys.executable).parent / "moto_server"
REGION = "ap-northeast-2"
SECRET = "ssm-prod-db-pa55word"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = _free_port()
    server = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # another process: poll until it answers (bounded, ~20 s)
            try:
                httpx.get(f"{url}/moto-api/", timeout=0.5)
                break
            except httpx.TransportError:
                if server.poll() is not None:
                    raise RuntimeError("moto_server exited") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("moto_server did not start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Fake credentials; a fresh moto state per test."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    httpx.post(f"{moto_url}/moto-api/reset", timeout=5).raise_for_status()
    return moto_url


def _client(service: str, url: str) -> Any:
    return boto3.session.Session().client(  # type: ignore[call-overload]
        service, region_name=REGION, endpoint_url=url
    )


async def test_ssm_reads_a_path_recursively_with_decryption(aws: str) -> None:
    ssm = _client("ssm", aws)
    ssm.put_parameter(Name="/tpt-api/prod/db-password", Value=SECRET, Type="SecureString")
    ssm.put_parameter(Name="/tpt-api/prod/cache/redis.url", Value="redis://r:6379", Type="String")
    ssm.put_parameter(Name="/tpt-api/dev/db-password", Value="dev-only", Type="SecureString")
    config = SecretSourceConfig(
        backend="ssm", path="/tpt-api/{environment}/", region=REGION, endpoint_url=aws
    )
    store = SsmSecretStore(config)
    assert await store.values("prod") == {"DB_PASSWORD": SECRET, "REDIS_URL": "redis://r:6379"}
    assert await store.list("prod") == ("DB_PASSWORD", "REDIS_URL")
    assert await store.get("dev", "DB_PASSWORD") == "dev-only"


async def test_ssm_set_writes_a_secure_string_and_remove_deletes_it(aws: str) -> None:
    config = SecretSourceConfig(backend="ssm", path="/app/prod/", region=REGION, endpoint_url=aws)
    store = SsmSecretStore(config)
    await store.set("prod", "API_TOKEN", "tok-abcdef")
    stored = _client("ssm", aws).get_parameter(Name="/app/prod/API_TOKEN")["Parameter"]
    assert stored["Type"] == "SecureString"
    assert await store.get("prod", "API_TOKEN") == "tok-abcdef"
    await store.remove("prod", "API_TOKEN")
    assert await store.list("prod") == ()
    with pytest.raises(SecretsError, match="no secret API_TOKEN in ssm:/app/prod/"):
        await store.remove("prod", "API_TOKEN")


async def test_secrets_manager_expands_json_and_reads_plain_strings(aws: str) -> None:
    client = _client("secretsmanager", aws)
    document = {"username": "app", "password": SECRET, "port": 5432}
    client.create_secret(Name="tpt-api/prod/db", SecretString=json.dumps(document))
    client.create_secret(Name="tpt-api/prod/api-token", SecretString="plain-token-value")
    json_store = SecretsManagerStore(
        SecretSourceConfig(
            backend="secretsmanager",
            secret_id="tpt-api/{environment}/db",
            region=REGION,
            endpoint_url=aws,
            prefix="DB_",
        )
    )
    assert await json_store.values("prod") == {
        "DB_USERNAME": "app",
        "DB_PASSWORD": SECRET,
        "DB_PORT": "5432",
    }
    plain = SecretsManagerStore(
        SecretSourceConfig(
            backend="secretsmanager",
            secret_id="tpt-api/prod/api-token",
            region=REGION,
            endpoint_url=aws,
        )
    )
    assert await plain.values("prod") == {"API_TOKEN": "plain-token-value"}


async def test_secrets_manager_set_and_remove_keys_of_a_json_secret(aws: str) -> None:
    store = SecretsManagerStore(
        SecretSourceConfig(
            backend="secretsmanager", secret_id="app/prod", region=REGION, endpoint_url=aws
        )
    )
    with pytest.raises(SecretsError, match="there is no secret app/prod"):
        await store.values("prod")
    await store.set("prod", "DB_PASSWORD", SECRET)  # creates the secret
    await store.set("prod", "API_TOKEN", "tok-123456")
    assert await store.values("prod") == {"DB_PASSWORD": SECRET, "API_TOKEN": "tok-123456"}
    await store.remove("prod", "API_TOKEN")
    assert await store.list("prod") == ("DB_PASSWORD",)


async def test_an_unreachable_endpoint_is_a_secrets_error_with_advice(aws: str) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    config = SecretSourceConfig(backend="ssm", path="/app/prod/", region=REGION, endpoint_url=dead)
    with pytest.raises(SecretsError, match="did not answer") as caught:
        await SsmSecretStore(config).set("prod", "DB_PASSWORD", SECRET)
    assert SECRET not in str(caught.value)
