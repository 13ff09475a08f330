"""Image retention and tag moves against Debian's docker-registry on 127.0.0.1.

15 revisions are published straight through the registry API (each its own manifest, its
image config `created` 3 days apart, so the age rules can be seen without waiting); the history
store records prod and dev deployments; a fake runtime reports one instance running an old
digest. Prune must keep exactly what the default policy says plus the in-use digests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from benchmarks.sample_images import push_synthetic_image
from tests.integration.container_fixtures import Registry
from typer.testing import CliRunner

from zerodown.config import LoadedConfig, load_config
from zerodown.config.images import PlainRegistryConfig
from zerodown.domain.events import DeploymentState
from zerodown.domain.records import DeploymentRecord
from zerodown.images.lifecycle import ImageLifecycle
from zerodown.images.registry import PlainRegistry
from zerodown.runtimes.base import InstanceInfo, InstanceState
from zerodown.store.sql import SqlHistoryStore, open_store

DAY = 86400.0
NOW = time.time()


def sha(i: int) -> str:
    return f"{i:x}".rjust(40, "a")


@dataclass
class Published:
    """The 15 revisions: digests by index, and the loaded config naming the registry."""

    digests: list[str]
    loaded: LoadedConfig
    repository: str


class OneInstanceRuntime:
    """A runtime whose only instance runs revision 0 pinned by digest (only `list` is used)."""

    def __init__(self, image: str) -> None:
        self.image = image

    async def list(self, service: str | None = None) -> list[InstanceInfo]:
        return [
            InstanceInfo(
                "web-old-1", "web", sha(0), "127.0.0.1", 1, InstanceState.RUNNING, image=self.image
            )
        ]


@pytest.fixture
def published(local_registry: Registry, tmp_path: Path) -> Iterator[Published]:
    repository = f"zerodown-test/retention-{tmp_path.name[-8:].lower().strip('_-')}"
    tags: dict[int, list[str]] = {i: [sha(i)] for i in range(15)}
    tags[3].append("v1.0.0")
    tags[9].append("v1.1.0")
    tags[4].append("dev-20261101000000")  # a dev image, 33 days old
    tags[13].append("dev-20261130000000")  # a dev image, 6 days old
    tags[11].append("latest")
    digests = [
        push_synthetic_image(
            local_registry.url,
            repository,
            tags[i],
            created=NOW - (15 - i) * 3 * DAY,  # r0: 45 days old ... r14: 3 days old
            payload=f"revision {i}".encode(),
        )
        for i in range(15)
    ]
    config = tmp_path / "zerodown.yml"
    config.write_text(
        "services:\n"
        "  web:\n"
        "    source: {repo: .}\n"
        "    run: unused\n"
        "    build:\n"
        "      image:\n"
        f"        repository: {repository}\n"
        f"        registry: {{address: '{local_registry.address}'}}\n"
        "environments:\n"
        "  dev: {}\n"
        "  prod: {}\n"
    )
    yield Published(digests, load_config(config), repository)


@pytest.fixture
def history(published: Published) -> None:
    """History: prod runs revision 11 (rolled forward from 2), dev runs 13."""

    async def record() -> None:
        store = open_store(published.loaded.store_url)
        try:
            for number, (environment, live, previous) in enumerate(
                [("prod", 11, 2), ("dev", 13, 12)]
            ):
                await store.create_deployment(
                    DeploymentRecord(
                        id=f"d{number}",
                        service="web",
                        environment=environment,
                        revision=sha(live),
                        strategy="rolling",
                        state=DeploymentState.SUCCEEDED,
                        actor="test",
                        created_at=NOW - 60,
                        previous_revision=sha(previous),
                        finished_at=NOW - 30,
                    )
                )
        finally:
            await store.close()

    asyncio.run(record())


@pytest.fixture
async def store(published: Published, history: None) -> AsyncIterator[SqlHistoryStore]:
    """The history store of `published`'s config, with `history` recorded."""
    opened = open_store(published.loaded.store_url)
    yield opened
    await opened.close()


def pinned(registry: Registry, published: Published, number: int) -> str:
    return f"{registry.address}/{published.repository}@{published.digests[number]}"


def plain(registry: Registry) -> PlainRegistry:
    return PlainRegistry(PlainRegistryConfig(address=registry.address))


async def registry_digests(registry: Registry, repository: str) -> set[str]:
    client = plain(registry)
    try:
        return {image.digest for image in await client.list_images(repository)}
    finally:
        await client.aclose()


async def test_prune_keeps_the_policy_and_the_in_use_digests(
    published: Published, store: SqlHistoryStore, local_registry: Registry
) -> None:
    """15 revisions: r1 (beyond the last 10) and r4 (a 33-day-old dev image) go; r0 (run by an
    instance) and r2 (prod's rollback target) stay although the rules alone would drop r0."""
    runtime = OneInstanceRuntime(
        f"{local_registry.address}/{published.repository}@{published.digests[0]}"
    )
    lifecycle = ImageLifecycle(published.loaded, store, runtime)  # type: ignore[arg-type]

    dry = await lifecycle.prune("web", dry_run=True)
    reasons = {published.digests.index(v.image.digest): (v.keep, v.reason) for v in dry}
    assert len(reasons) == 15
    assert {i for i, (keep, _) in reasons.items() if not keep} == {1, 4}
    assert reasons[1][1] == "older than the last 10 images"
    assert reasons[4][1].startswith("dev image 33.0 days old")
    assert reasons[0] == (True, "in use: run by instance web-old-1")
    assert reasons[2] == (True, "in use: rollback target in prod")
    assert reasons[11] == (True, "in use: live in prod")
    assert reasons[13] == (True, "in use: live in dev")
    assert reasons[14] == (True, "one of the last 10")
    assert await registry_digests(local_registry, published.repository) == set(published.digests)

    await lifecycle.prune("web")
    left = await registry_digests(local_registry, published.repository)
    assert left == set(published.digests) - {published.digests[1], published.digests[4]}


def test_cli_dry_run_lists_what_would_go_and_why_and_deletes_nothing(
    published: Published, history: None, local_registry: Registry
) -> None:
    from zerodown.cli.app import app

    result = CliRunner().invoke(
        app, ["images", "prune", "--dry-run", "--service", "web", "-c", str(published.loaded.path)]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    doomed = [line for line in lines if ": would delete " in line]
    # No instance runs here (local runtime): r0 is not protected by one this time.
    assert len(doomed) == 3, result.output
    assert any(published.digests[4][:19] in line and "dev image" in line for line in doomed)
    assert any("in use: rollback target in prod" in line for line in lines)
    assert lines[-1] == "would delete 3 image(s)"
    assert asyncio.run(registry_digests(local_registry, published.repository)) == set(
        published.digests
    )


def test_cli_refuses_an_unknown_service_with_exit_code_2(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    from zerodown.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["images", "prune", "--service", "api", "-c", str(published.loaded.path)])
    assert exited.value.code == 2
    assert "--service api: no such service; zerodown.yml defines web" in capsys.readouterr().err


async def test_successful_deploys_move_latest_in_prod_and_add_dev_tags_elsewhere(
    published: Published, store: SqlHistoryStore, local_registry: Registry
) -> None:
    runtime = OneInstanceRuntime(
        f"{local_registry.address}/{published.repository}@{published.digests[0]}"
    )
    now = 1764633600.0  # 2025-12-02 00:00:00 UTC
    lifecycle = ImageLifecycle(published.loaded, store, runtime, now=lambda: now)  # type: ignore[arg-type]
    record = await store.get_deployment("d0")
    prod = DeploymentRecord(**{**record.__dict__, "id": "d9", "revision": sha(14)})
    dev = DeploymentRecord(
        **{**record.__dict__, "id": "d8", "environment": "dev", "revision": sha(12)}
    )

    assert await lifecycle.after_deploy(prod) == ["latest"]
    assert await lifecycle.after_deploy(dev) == ["dev-20251202000000"]

    client = plain(local_registry)
    try:
        assert await client.manifest_digest(published.repository, "latest") == published.digests[14]
        assert (
            await client.manifest_digest(published.repository, "dev-20251202000000")
            == (published.digests[12])
        )
    finally:
        await client.aclose()
