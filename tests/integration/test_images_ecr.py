"""The `ecr` registry kind against a real `moto_server` over HTTP, for the calls moto has.

moto has no layer uploads, so nothing is pushed here: images are put as manifests
(`put_image`), and moto's digests are its own (sha256 of the joined layer digests), which is
why the digests below are always read back from moto, never computed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from tests.integration.test_secrets_aws import REGION, aws, moto_url

from zerodown.config.images import EcrRegistryConfig, ImageRetentionConfig
from zerodown.errors import ImageRegistryError
from zerodown.images.registry import EcrRegistry
from zerodown.images.retention import plan_image_prune

__all__ = ["aws", "moto_url"]


def manifest(layer: str) -> str:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 2,
                "digest": "sha256:" + "c" * 64,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 1,
                    "digest": "sha256:" + layer * 64,
                }
            ],
        }
    )


def ecr(url: str) -> Any:
    return boto3.session.Session().client(  # type: ignore[call-overload]
        "ecr", region_name=REGION, endpoint_url=url
    )


@pytest.fixture
def registry(aws: str) -> EcrRegistry:
    return EcrRegistry(EcrRegistryConfig(kind="ecr", region=REGION, endpoint_url=aws))


async def test_login_gives_the_registry_address_and_a_masked_push_password(
    registry: EcrRegistry,
) -> None:
    auth = await registry.login()
    assert auth.address.endswith(f".dkr.ecr.{REGION}.amazonaws.com")
    assert auth.username == "AWS" and auth.password
    assert auth.password not in repr(auth)
    assert auth.auth_config() == {"username": "AWS", "password": auth.password}


async def test_repository_is_created_once(registry: EcrRegistry, aws: str) -> None:
    await registry.ensure_repository("team/web")
    await registry.ensure_repository("team/web")  # exists: describe, no second create
    names = [r["repositoryName"] for r in ecr(aws).describe_repositories()["repositories"]]
    assert names == ["team/web"]


async def test_digests_tags_listing_and_deletes(registry: EcrRegistry, aws: str) -> None:
    await registry.ensure_repository("web")
    client = ecr(aws)
    client.put_image(repositoryName="web", imageManifest=manifest("a"), imageTag="a" * 40)
    client.put_image(repositoryName="web", imageManifest=manifest("b"), imageTag="b" * 40)
    client.put_image(repositoryName="web", imageManifest=manifest("d"))  # untagged
    details = {
        tuple(d.get("imageTags", ())): d["imageDigest"]
        for d in client.describe_images(repositoryName="web")["imageDetails"]
    }
    first, second = details[("a" * 40,)], details[("b" * 40,)]

    assert await registry.manifest_digest("web", "a" * 40) == first
    assert await registry.manifest_digest("web", "nope") is None
    await registry.add_tag("web", second, "latest")
    await registry.add_tag("web", second, "latest")  # the same tag twice is fine
    images = {image.digest: image for image in await registry.list_images("web")}
    assert images[second].tags == ("b" * 40, "latest")
    assert images[details[()]].tags == ()
    assert all(abs(time.time() - (i.created or 0)) < 600 for i in images.values())
    verdicts = plan_image_prune(
        list(images.values()),
        policy=ImageRetentionConfig(),
        protected={},
        now=time.time() + 8 * 86400,
    )
    untagged = next(v for v in verdicts if not v.image.tags)
    assert not untagged.keep and untagged.reason.startswith("untagged 8.0 days old")

    await registry.delete("web", first)
    assert first not in {image.digest for image in await registry.list_images("web")}
    assert await registry.list_images("missing") == []


async def test_errors_name_the_call_and_what_to_do(registry: EcrRegistry) -> None:
    with pytest.raises(ImageRegistryError, match="ECR: cannot tag missing@sha256:"):
        await registry.add_tag("missing", "sha256:" + "e" * 64, "latest")
