"""ImageLifecycle as a deployment observer, with an in-memory registry and store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.fakes import MemoryStore

from zerodown.config import parse_config
from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.errors import ImageRegistryError
from zerodown.images.lifecycle import ImageLifecycle
from zerodown.images.registry import PushAuth, StoredImage

CONFIG = """\
services:
  web:
    source: {repo: .}
    run: unused
    build:
      image:
        registry: {address: 127.0.0.1:5000}
        retention: {enabled: %s}
  plain: {run: python app.py, path_prefix: /plain}
environments: {dev: {}, prod: {}}
"""
NOW = 1_800_000_000.0


class MemoryRegistry:
    """Tags -> digests of one repository; `fail` makes every call raise."""

    def __init__(self, tags: dict[str, str]) -> None:
        self.tags = dict(tags)
        self.deleted: list[str] = []
        self.fail = False

    async def login(self) -> PushAuth:
        return PushAuth("127.0.0.1:5000")

    async def ensure_repository(self, repository: str) -> None:
        pass

    async def manifest_digest(self, repository: str, tag: str) -> str | None:
        if self.fail:
            raise ImageRegistryError("registry 127.0.0.1:5000 is unreachable")
        return self.tags.get(tag)

    async def add_tag(self, repository: str, digest: str, tag: str) -> None:
        self.tags[tag] = digest

    async def list_images(self, repository: str) -> list[StoredImage]:
        digests: dict[str, list[str]] = {}
        for tag, digest in self.tags.items():
            digests.setdefault(digest, []).append(tag)
        return [StoredImage(d, tuple(sorted(t)), NOW) for d, t in digests.items()]

    async def delete(self, repository: str, digest: str) -> None:
        self.deleted.append(digest)
        self.tags = {t: d for t, d in self.tags.items() if d != digest}

    async def aclose(self) -> None:
        pass


class NoInstances:
    async def list(self, service: str | None = None) -> list[Any]:
        return []


def setup(retention: bool = True) -> tuple[ImageLifecycle, MemoryStore, MemoryRegistry]:
    loaded = parse_config(CONFIG % str(retention).lower(), Path("/srv/zerodown.yml"), environ={})
    store = MemoryStore()
    registry = MemoryRegistry({"a" * 40: "sha256:aa", "b" * 40: "sha256:bb"})
    lifecycle = ImageLifecycle(
        loaded,
        store,  # type: ignore[arg-type]
        NoInstances(),  # type: ignore[arg-type]
        now=lambda: NOW,
        registry_factory=lambda config: registry,
    )
    return lifecycle, store, registry


async def succeed(lifecycle: ImageLifecycle, store: MemoryStore, env: str, sha: str) -> None:
    record = DeploymentRecord(
        f"d-{env}-{sha[0]}", "web", env, sha, "rolling", DeploymentState.SUCCEEDED, "t", NOW
    )
    await store.create_deployment(record)
    event = DeploymentEvent(record.id, EventKind.STATE, "done", {"to": "succeeded"})
    await lifecycle.on_event(event)


async def test_a_prod_success_moves_latest_and_a_dev_success_adds_a_dev_tag() -> None:
    lifecycle, store, registry = setup()
    await succeed(lifecycle, store, "prod", "a" * 40)
    assert registry.tags["latest"] == "sha256:aa"
    await succeed(lifecycle, store, "prod", "b" * 40)
    assert registry.tags["latest"] == "sha256:bb"  # moved
    await succeed(lifecycle, store, "dev", "a" * 40)
    assert registry.tags["dev-20270115080000"] == "sha256:aa"
    assert registry.deleted == []  # both are live somewhere: retention keeps them


async def test_other_events_and_failed_deployments_change_nothing() -> None:
    lifecycle, store, registry = setup()
    record = DeploymentRecord(
        "d1", "web", "prod", "a" * 40, "rolling", DeploymentState.FAILED, "t", NOW
    )
    await store.create_deployment(record)
    await lifecycle.on_event(DeploymentEvent("d1", EventKind.STATE, "x", {"to": "failed"}))
    await lifecycle.on_event(DeploymentEvent("d1", EventKind.BUILD, "x", {"sha": "a" * 40}))
    assert "latest" not in registry.tags


async def test_a_registry_failure_is_logged_never_raised_into_the_deployment(caplog: Any) -> None:
    lifecycle, store, registry = setup()
    registry.fail = True
    await succeed(lifecycle, store, "prod", "a" * 40)
    assert "unreachable" in caplog.text


async def test_services_without_image_builds_are_left_alone() -> None:
    lifecycle, _, _ = setup()
    record = DeploymentRecord(
        "d2", "plain", "prod", "c" * 40, "rolling", DeploymentState.SUCCEEDED, "t", NOW
    )
    assert await lifecycle.after_deploy(record) == []
    assert lifecycle.image_services() == ["web"]
