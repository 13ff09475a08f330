"""Image registries: tags, manifest digests, listing and deletes, chosen by `registry.kind`.

    ImageRegistry (Protocol)
    ├── PlainRegistry   the Docker Registry HTTP API v2 (Distribution, Debian's docker-registry)
    └── EcrRegistry     Amazon ECR through boto3 (login token, describe/put/batch-delete image)

A deploy runs `<address>/<repository>@<digest>` where the digest is the registry's manifest
digest (`Docker-Content-Digest` of `HEAD /v2/<name>/manifests/<tag>`, or ECR's imageDigest),
never a mutable tag and never `docker inspect .Id` (the config digest, which cannot be pulled).
Extra tags are written by the registry API (the manifest PUT again under another tag), so moving
`latest` needs no engine. Every foreign error becomes an ImageRegistryError with a sentence.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import httpx

from zerodown.config.images import EcrRegistryConfig, PlainRegistryConfig, RegistryConfig
from zerodown.errors import ImageRegistryError

T = TypeVar("T")

# Every manifest kind a single-platform or multi-platform push may produce.
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_ACCEPT = ", ".join(MANIFEST_TYPES)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass(frozen=True)
class StoredImage:
    """One manifest in a repository: its digest, the tags on it and when it was made."""

    digest: str
    tags: tuple[str, ...]
    created: float | None  # unix seconds: the image config's `created` (ECR: imagePushedAt)


@dataclass(frozen=True)
class PushAuth:
    """What the engine needs to push: the registry address and (optional) credentials."""

    address: str
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        masked = "***" if self.password else None
        return f"PushAuth(address={self.address!r}, username={self.username!r}, password={masked})"

    def auth_config(self) -> dict[str, str] | None:
        """docker-py's `auth_config` for push, or None when anonymous."""
        if self.username is None or self.password is None:
            return None
        return {"username": self.username, "password": self.password}


class ImageRegistry(Protocol):
    """A registry zerodown pushes revisions to, pins them from and prunes."""

    async def login(self) -> PushAuth:
        """The address images are named under, and credentials for the engine's push."""
        ...

    async def ensure_repository(self, repository: str) -> None:
        """Create `repository` where the registry needs that before a push (ECR)."""
        ...

    async def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The manifest digest `repository:tag` names, or None when the tag does not exist."""
        ...

    async def add_tag(self, repository: str, digest: str, tag: str) -> None:
        """Point `tag` at the manifest `digest` (moving it if it named another)."""
        ...

    async def list_images(self, repository: str) -> list[StoredImage]:
        """Every manifest the registry can list in `repository`, with its tags."""
        ...

    async def delete(self, repository: str, digest: str) -> None:
        """Delete the manifest `digest` (and so every tag on it)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def open_registry(config: RegistryConfig) -> ImageRegistry:
    """The registry backend `config.kind` names (boto3 loads only for ECR)."""
    if isinstance(config, EcrRegistryConfig):
        return EcrRegistry(config)
    return PlainRegistry(config)


def pinned_reference(address: str, repository: str, digest: str) -> str:
    """`<address>/<repository>@sha256:...`: what a deploy runs."""
    if not _DIGEST.fullmatch(digest):
        raise ImageRegistryError(f"{digest!r} is not a sha256 manifest digest")
    return f"{address}/{repository}@{digest}"


def is_loopback(address: str) -> bool:
    """Whether host[:port] names this machine (plain http is allowed there)."""
    if address.startswith("["):  # [v6]:port
        host = address[1:].split("]", 1)[0]
    else:
        host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PlainRegistry:
    """The Docker Registry HTTP API v2 over httpx (https, or http when insecure/loopback)."""

    def __init__(
        self, config: PlainRegistryConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        scheme = "http" if config.insecure or is_loopback(config.address) else "https"
        self.base_url = f"{scheme}://{config.address}"
        self._basic: httpx.BasicAuth | None = None
        self._bearer: str | None = None  # a token from the registry's auth service, if it uses one
        self._password: str | None = None
        if config.username is not None:
            self._password = os.environ.get(config.password_env or "", "")
            if config.password_env and not self._password:
                raise ImageRegistryError(
                    f"registry {config.address}: environment variable {config.password_env} "
                    "(registry.password_env) is empty: export the registry password there"
                )
            self._basic = httpx.BasicAuth(config.username, self._password)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=_TIMEOUT, transport=transport
        )

    async def login(self) -> PushAuth:
        """Check the API answers (GET /v2/) and return the address and credentials."""
        response = await self._request("GET", "/v2/", doing="reach the registry API")
        self._check(response, "reach the registry API", ok=(200,))
        return PushAuth(self.config.address, self.config.username, self._password)

    async def ensure_repository(self, repository: str) -> None:
        """Nothing to do: a v2 registry makes a repository on the first push."""

    async def manifest_digest(self, repository: str, tag: str) -> str | None:
        """`Docker-Content-Digest` of HEAD /v2/<name>/manifests/<tag> (None on 404)."""
        path = f"/v2/{repository}/manifests/{tag}"
        doing = f"read the digest of {repository}:{tag}"
        response = await self._request("HEAD", path, doing=doing, headers={"Accept": _ACCEPT})
        if response.status_code == 404:
            return None
        self._check(response, doing, ok=(200,))
        digest = response.headers.get("Docker-Content-Digest")
        if digest is None:  # some registries answer HEAD without it: the GET body's hash is it
            body = await self._request("GET", path, doing=doing, headers={"Accept": _ACCEPT})
            self._check(body, doing, ok=(200,))
            digest = "sha256:" + hashlib.sha256(body.content).hexdigest()
        return str(digest)

    async def add_tag(self, repository: str, digest: str, tag: str) -> None:
        """GET the manifest by digest, PUT the same bytes under `tag`."""
        doing = f"tag {repository}@{digest[:19]} as {tag}"
        manifest, media_type = await self._manifest(repository, digest, doing)
        response = await self._request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            doing=doing,
            headers={"Content-Type": media_type},
            content=manifest,
        )
        self._check(response, doing, ok=(201, 200))

    async def list_images(self, repository: str) -> list[StoredImage]:
        """Every tagged manifest (a v2 registry cannot list untagged ones), with its tags."""
        tags = await self._tags(repository)
        by_digest: dict[str, list[str]] = {}
        for tag in tags:
            digest = await self.manifest_digest(repository, tag)
            if digest is not None:
                by_digest.setdefault(digest, []).append(tag)
        images = []
        for digest, names in by_digest.items():
            created = await self._created(repository, digest)
            images.append(StoredImage(digest, tuple(sorted(names)), created))
        return images

    async def delete(self, repository: str, digest: str) -> None:
        """DELETE /v2/<name>/manifests/<digest>."""
        doing = f"delete {repository}@{digest}"
        response = await self._request(
            "DELETE", f"/v2/{repository}/manifests/{digest}", doing=doing
        )
        if response.status_code == 404:
            return  # gone already
        if response.status_code == 405:
            raise ImageRegistryError(
                f"registry {self.config.address} refused to {doing}: deletes are disabled "
                "(Distribution: set storage.delete.enabled: true in its config)"
            )
        self._check(response, doing, ok=(202, 200))

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def _tags(self, repository: str) -> list[str]:
        doing = f"list the tags of {repository}"
        tags: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list?n=1000"
        while url is not None:
            response = await self._request("GET", url, doing=doing)
            if response.status_code == 404:
                return tags  # no such repository yet: nothing pushed
            self._check(response, doing, ok=(200,))
            tags.extend(response.json().get("tags") or [])
            url = _next_link(response.headers.get("Link"))
        return tags

    async def _manifest(self, repository: str, digest: str, doing: str) -> tuple[bytes, str]:
        response = await self._request(
            "GET", f"/v2/{repository}/manifests/{digest}", doing=doing, headers={"Accept": _ACCEPT}
        )
        self._check(response, doing, ok=(200,))
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            media_type = str(json.loads(response.content).get("mediaType") or MANIFEST_TYPES[0])
        return response.content, media_type

    async def _created(self, repository: str, digest: str) -> float | None:
        """The image config's `created` time (None for a multi-platform index)."""
        doing = f"read the config of {repository}@{digest[:19]}"
        manifest, _ = await self._manifest(repository, digest, doing)
        config = json.loads(manifest).get("config")
        if not isinstance(config, dict) or "digest" not in config:
            return None
        response = await self._request(
            "GET", f"/v2/{repository}/blobs/{config['digest']}", doing=doing
        )
        self._check(response, doing, ok=(200,))
        return parse_time(response.json().get("created"))

    async def _request(self, method: str, url: str, *, doing: str, **kwargs: Any) -> httpx.Response:
        """One API call; on a Bearer challenge (Harbor, GHCR, GitLab, Docker Hub) it gets a
        token from the registry's auth service (with the basic credentials, if any) and
        retries once."""
        response = await self._send(method, url, doing, kwargs)
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code == 401 and challenge.lower().startswith("bearer "):
            self._bearer = await self._token(challenge, doing)
            response = await self._send(method, url, doing, kwargs)
        return response

    async def _send(
        self, method: str, url: str, doing: str, kwargs: dict[str, Any]
    ) -> httpx.Response:
        auth: httpx.Auth | None = self._basic
        headers = dict(kwargs.get("headers") or {})
        if self._bearer is not None:
            auth = None
            headers["Authorization"] = f"Bearer {self._bearer}"
        try:
            return await self._http.request(
                method, url, **{**kwargs, "headers": headers}, auth=auth
            )
        except httpx.HTTPError as exc:
            raise ImageRegistryError(
                f"cannot {doing}: registry {self.base_url} is unreachable ({exc}); check "
                "registry.address (and registry.insecure for a plain-http registry)"
            ) from exc

    async def _token(self, challenge: str, doing: str) -> str:
        """A token for the challenge's realm, service and scope."""
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = fields.pop("realm", None)
        if realm is None:
            raise ImageRegistryError(
                f"registry {self.config.address}: Bearer challenge without realm"
            )
        try:
            response = await self._http.get(
                realm, params=fields, auth=self._basic or httpx.USE_CLIENT_DEFAULT
            )
        except httpx.HTTPError as exc:
            raise ImageRegistryError(
                f"cannot {doing}: the registry's auth service {realm} is unreachable ({exc})"
            ) from exc
        if response.status_code != 200:
            raise ImageRegistryError(
                f"registry {self.config.address} refused to {doing}: its auth service {realm} "
                f"answered HTTP {response.status_code}; check registry.username and password_env"
            )
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ImageRegistryError(f"the auth service {realm} gave no token")
        return token

    def _check(self, response: httpx.Response, doing: str, *, ok: tuple[int, ...]) -> None:
        if response.status_code in ok:
            return
        if response.status_code == 401:
            raise ImageRegistryError(
                f"registry {self.config.address} refused to {doing}: unauthorized; set "
                "registry.username and registry.password_env"
            )
        detail = response.text.strip()[:200] if response.content else ""
        raise ImageRegistryError(
            f"registry {self.config.address} refused to {doing}: HTTP {response.status_code} "
            f"{detail}".rstrip()
        )


def _next_link(header: str | None) -> str | None:
    """The path in a `Link: </v2/...>; rel="next"` header (tag list pagination)."""
    if not header:
        return None
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', header)
    return match.group(1) if match else None


def parse_time(value: object) -> float | None:
    """Unix seconds of an RFC 3339 time (nanosecond fractions allowed), or None."""
    if isinstance(value, datetime):
        return value.timestamp()
    if not isinstance(value, str) or not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class EcrRegistry:
    """Amazon ECR through boto3, each call in a worker thread, errors as ImageRegistryError."""

    def __init__(self, config: EcrRegistryConfig) -> None:
        self.config = config
        self._client: Any = None

    async def login(self) -> PushAuth:
        """`get_authorization_token`: the registry's address and a 12-hour push password."""
        reply = await self._call("log in", lambda c: c.get_authorization_token(**self._ids()))
        data = reply["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        address = str(data["proxyEndpoint"]).removeprefix("https://").removeprefix("http://")
        return PushAuth(address.rstrip("/"), user, password)

    async def ensure_repository(self, repository: str) -> None:
        """Create the repository (IMMUTABLE tags off: `latest` moves) unless it exists."""
        if not self.config.create_repository:
            return

        def run(client: Any) -> None:
            try:
                client.describe_repositories(repositoryNames=[repository], **self._id())
            except client.exceptions.RepositoryNotFoundException:
                client.create_repository(repositoryName=repository, **self._id())

        await self._call(f"create repository {repository}", run)

    async def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The imageDigest ECR reports for `repository:tag` (its manifest digest)."""
        reply = await self._call(
            f"read the digest of {repository}:{tag}",
            lambda c: c.batch_get_image(
                repositoryName=repository,
                imageIds=[{"imageTag": tag}],
                acceptedMediaTypes=list(MANIFEST_TYPES),
                **self._id(),
            ),
        )
        images = reply.get("images") or []
        return str(images[0]["imageId"]["imageDigest"]) if images else None

    async def add_tag(self, repository: str, digest: str, tag: str) -> None:
        """`put_image` of the digest's manifest under `tag` (the same manifest twice is fine)."""

        def run(client: Any) -> None:
            found = client.batch_get_image(
                repositoryName=repository,
                imageIds=[{"imageDigest": digest}],
                acceptedMediaTypes=list(MANIFEST_TYPES),
                **self._id(),
            )["images"]
            if not found:
                raise ImageRegistryError(f"ECR has no image {repository}@{digest}")
            extra = {}
            if found[0].get("imageManifestMediaType"):
                extra["imageManifestMediaType"] = found[0]["imageManifestMediaType"]
            # ImageAlreadyExists: that tag names this digest already.
            with contextlib.suppress(client.exceptions.ImageAlreadyExistsException):
                client.put_image(
                    repositoryName=repository,
                    imageManifest=found[0]["imageManifest"],
                    imageTag=tag,
                    **extra,
                    **self._id(),
                )

        await self._call(f"tag {repository}@{digest[:19]} as {tag}", run)

    async def list_images(self, repository: str) -> list[StoredImage]:
        """`describe_images`, every page: digests, tags (untagged too) and push times."""

        def run(client: Any) -> list[StoredImage]:
            images = []
            pages = client.get_paginator("describe_images").paginate(
                repositoryName=repository, **self._id()
            )
            for page in pages:
                for item in page.get("imageDetails", []):
                    images.append(
                        StoredImage(
                            str(item["imageDigest"]),
                            tuple(sorted(item.get("imageTags") or ())),
                            parse_time(item.get("imagePushedAt")),
                        )
                    )
            return images

        try:
            return await self._call(f"list the images of {repository}", run)
        except ImageRegistryError as exc:
            if "RepositoryNotFoundException" in str(exc):
                return []
            raise

    async def delete(self, repository: str, digest: str) -> None:
        """`batch_delete_image` of one digest."""
        reply = await self._call(
            f"delete {repository}@{digest}",
            lambda c: c.batch_delete_image(
                repositoryName=repository, imageIds=[{"imageDigest": digest}], **self._id()
            ),
        )
        failures = [f for f in reply.get("failures", []) if f.get("failureCode") != "ImageNotFound"]
        if failures:
            raise ImageRegistryError(
                f"ECR refused to delete {repository}@{digest}: {failures[0].get('failureReason')}"
            )

    async def aclose(self) -> None:
        """Nothing to close (boto3 pools its own connections)."""

    def _id(self) -> dict[str, str]:
        return {"registryId": self.config.registry_id} if self.config.registry_id else {}

    def _ids(self) -> dict[str, list[str]]:
        return {"registryIds": [self.config.registry_id]} if self.config.registry_id else {}

    async def _call(self, doing: str, fn: Callable[[Any], T]) -> T:
        def run() -> T:
            return fn(self._make())

        try:
            return await asyncio.to_thread(run)
        except ImageRegistryError:
            raise
        except Exception as exc:
            code = _aws_error_code(exc)
            advice = {
                "AccessDeniedException": "grant this identity ECR access (IAM)",
                "UnrecognizedClientException": "the AWS credentials are not valid",
                "ExpiredTokenException": "the AWS session expired: log in again",
                "RepositoryNotFoundException": "create the repository (create_repository: true)",
            }.get(code or "", "check registry.region and the AWS credentials")
            raise ImageRegistryError(f"ECR: cannot {doing}: {code or exc}; {advice}") from exc

    def _make(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise ImageRegistryError(
                    "the ecr registry needs boto3: pip install 'zerodown[aws]'"
                ) from None
            self._client = boto3.session.Session().client(
                "ecr",
                region_name=self.config.region,
                endpoint_url=self.config.endpoint_url,
                config=Config(retries={"max_attempts": 2, "mode": "standard"}),
            )
        return self._client


def _aws_error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None
