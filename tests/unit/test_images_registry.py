"""PlainRegistry's HTTP against a registry double (httpx.MockTransport): token auth, pagination,
digests when HEAD omits them, and the sentences of its refusals. The real-registry paths run in
tests/integration/test_images_retention.py and test_images_build.py."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest

from zerodown.config.images import PlainRegistryConfig
from zerodown.errors import ImageRegistryError
from zerodown.images.registry import PlainRegistry

MANIFEST = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "c" * 64}}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
V2_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


class TokenRegistry:
    """A registry that wants `Bearer good` and an auth service that wants basic u:p."""

    def __init__(self, *, head_digest: bool = True, deletes: bool = True) -> None:
        self.head_digest = head_digest
        self.deletes = deletes
        self.token_requests: list[httpx.Request] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            self.token_requests.append(request)
            basic = "Basic " + base64.b64encode(b"u:p").decode()
            if request.headers.get("Authorization") != basic:
                return httpx.Response(401)
            return httpx.Response(200, json={"token": "good"})
        self.requests.append(request)
        if request.headers.get("Authorization") != "Bearer good":
            challenge = (
                'Bearer realm="https://auth.example/token",service="reg.example",'
                'scope="repository:web:pull,push"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        path = request.url.path
        if path == "/v2/web/tags/list":
            if request.url.params.get("last") == "t2":
                return httpx.Response(200, json={"tags": ["t3"]})
            link = '</v2/web/tags/list?n=2&last=t2>; rel="next"'
            return httpx.Response(200, json={"tags": ["t1", "t2"]}, headers={"Link": link})
        if path.startswith("/v2/web/manifests/"):
            if request.method == "DELETE":
                return httpx.Response(202 if self.deletes else 405)
            headers = {"Content-Type": V2_TYPE}
            if self.head_digest:
                headers["Docker-Content-Digest"] = DIGEST
            body = b"" if request.method == "HEAD" else MANIFEST
            return httpx.Response(200, headers=headers, content=body)
        if path.startswith("/v2/web/blobs/"):
            return httpx.Response(200, json={"created": "2026-12-01T00:00:00Z"})
        return httpx.Response(404)


def registry(double: TokenRegistry, monkeypatch: pytest.MonkeyPatch) -> PlainRegistry:
    monkeypatch.setenv("REG_PASSWORD", "p")
    config = PlainRegistryConfig(address="reg.example", username="u", password_env="REG_PASSWORD")
    return PlainRegistry(config, transport=httpx.MockTransport(double))


async def test_a_bearer_challenge_gets_one_token_with_the_basic_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    double = TokenRegistry()
    client = registry(double, monkeypatch)
    assert await client.manifest_digest("web", "t1") == DIGEST
    images = await client.list_images("web")  # paginated: t1, t2 on page 1, t3 on page 2
    await client.aclose()
    assert [i.tags for i in images] == [("t1", "t2", "t3")]
    assert images[0].created == 1796083200.0
    assert len(double.token_requests) == 1
    params = double.token_requests[0].url.params
    assert (params["service"], params["scope"]) == ("reg.example", "repository:web:pull,push")
    assert double.requests[0].url.scheme == "https"  # not loopback, not insecure


async def test_a_digest_missing_from_head_is_the_hash_of_the_manifest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = registry(TokenRegistry(head_digest=False), monkeypatch)
    assert await client.manifest_digest("web", "t1") == DIGEST
    await client.aclose()


async def test_deletes_disabled_say_which_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    client = registry(TokenRegistry(deletes=False), monkeypatch)
    with pytest.raises(ImageRegistryError, match=r"storage\.delete\.enabled: true"):
        await client.delete("web", DIGEST)
    await client.aclose()


async def test_wrong_credentials_name_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    double = TokenRegistry()
    monkeypatch.setenv("REG_PASSWORD", "wrong")
    config = PlainRegistryConfig(address="reg.example", username="u", password_env="REG_PASSWORD")
    client = PlainRegistry(config, transport=httpx.MockTransport(double))
    with pytest.raises(ImageRegistryError, match=r"answered HTTP 401; check registry\.username"):
        await client.login()
    await client.aclose()


def test_an_empty_password_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REG_PASSWORD", raising=False)
    config = PlainRegistryConfig(address="reg.example", username="u", password_env="REG_PASSWORD")
    with pytest.raises(ImageRegistryError, match=r"REG_PASSWORD .* is empty"):
        PlainRegistry(config)
