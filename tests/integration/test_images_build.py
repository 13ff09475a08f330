"""Image builds per revision against Podman's Docker API and a real local registry.

A FastAPI service without a Dockerfile is built from the `fastapi` preset on the base zerodown
builds locally (debootstrap, cached across runs), pushed, and pinned by the registry's manifest
digest; an unchanged revision is a cache hit, a revision with unchanged dependencies reuses the
dependency layer.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from benchmarks.sample_images import commit_all, fastapi_service, git, init_repo
from tests.integration.container_fixtures import PodmanApi, wait_for

from zerodown.config.model import ServiceConfig
from zerodown.errors import BuildFailed
from zerodown.images.build import IMAGE_BUILD_LOG, IMAGE_RECORD, LABEL_REVISION, LABEL_SOURCE
from zerodown.revisions import Release, prepare_release

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass
class Service:
    """A FastAPI service in a git repository, configured to build an image per revision."""

    root: Path
    repo: Path
    state_dir: Path
    config: ServiceConfig
    first: str  # tagged v1.0.0


@pytest.fixture(scope="module")
def service(podman_api: PodmanApi, tmp_path_factory: pytest.TempPathFactory) -> Service:
    root = tmp_path_factory.mktemp("image-build")
    repo = init_repo(root / "repo")
    fastapi_service(repo / "web")
    first = commit_all(repo, "v1")
    git(repo, "tag", "v1.0.0", first)
    config = ServiceConfig.model_validate(
        {
            "source": {"repo": "repo", "path": "web"},
            "run": "unused: the image's CMD runs",
            "build": {
                "image": {
                    "preset": "fastapi",
                    "repository": f"zerodown-test/web-{root.name[-6:].lower()}",
                    "registry": {"address": podman_api.registry.address},
                    "engine": podman_api.url,
                }
            },
        }
    )
    return Service(root, repo, root / "state", config, first)


async def prepare(service: Service, revision: str, lines: list[str]) -> Release:
    return await prepare_release(
        "web",
        service.config,
        root=service.root,
        state_dir=service.state_dir,
        revision=revision,
        on_line=lines.append,
    )


@pytest.fixture
def started(podman_api: PodmanApi) -> Iterator[list[object]]:
    """Containers a test starts, removed at its end (also when it failed)."""
    containers: list[object] = []
    yield containers
    with podman_api.client() as client:
        for container in containers:
            client.api.remove_container(container, force=True)


def registry_config(api: PodmanApi, repository: str, digest: str) -> dict[str, Any]:
    """The `config` of an image's config blob, read from the registry."""
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    request = urllib.request.Request(
        f"{api.registry.url}/v2/{repository}/manifests/{digest}", headers={"Accept": accept}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        blob = json.loads(response.read())["config"]["digest"]
    with urllib.request.urlopen(f"{api.registry.url}/v2/{repository}/blobs/{blob}") as response:
        return dict(json.loads(response.read())["config"])


def _get(url: str) -> dict[str, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return dict(json.loads(response.read()))
    except OSError:
        return None


async def test_preset_image_is_pushed_pinned_by_the_registry_digest_and_runs_hardened(
    service: Service, podman_api: PodmanApi, started: list[object]
) -> None:
    lines: list[str] = []
    release = await prepare(service, "v1.0.0", lines)
    repository = service.config.build.image.repository  # type: ignore[union-attr]
    registry = podman_api.registry
    digest = registry.manifest_digest(repository, service.first)
    # Pinned by the manifest digest the registry serves, for both tags.
    assert release.image == f"{registry.address}/{repository}@{digest}"
    assert registry.manifest_digest(repository, "v1.0.0") == digest
    assert not release.cached
    # Build output streamed and kept with the revision, the pinned reference recorded there.
    assert any("Dockerfile from preset fastapi" in line for line in lines)
    log = (release.path / IMAGE_BUILD_LOG).read_text()
    assert "COPY requirements.txt" in log and "pushing" in log
    assert json.loads((release.path / IMAGE_RECORD).read_text())["reference"] == release.image
    # The image config as the registry serves it (Podman's inspect leaves out Healthcheck).
    config = registry_config(podman_api, repository, digest)
    assert config["Labels"][LABEL_REVISION] == service.first
    assert config["Labels"][LABEL_SOURCE] == str(service.repo)
    assert config["User"] == "1001:1001"
    assert "/health" in " ".join(config["Healthcheck"]["Test"])
    with podman_api.client() as client:
        client.images.pull(release.image)  # the pinned reference pulls
        container = client.api.create_container(
            release.image,
            environment={"PORT": "8000"},
            host_config=client.api.create_host_config(port_bindings={8000: ("127.0.0.1", None)}),
            ports=[8000],
        )
        started.append(container["Id"])
        client.api.start(container["Id"])
        port = client.api.port(container["Id"], 8000)[0]["HostPort"]
    answers: list[dict[str, str]] = []

    def answered() -> bool:
        got = _get(f"http://127.0.0.1:{port}/")
        if got is not None:
            answers.append(got)
        return got is not None

    wait_for(answered, 60, "the app in the container")
    assert answers[-1] == {"version": "v1", "uid": "1001"}  # non-root


async def test_an_unchanged_revision_is_a_cache_hit(service: Service) -> None:
    first = await prepare(service, service.first, [])
    lines: list[str] = []
    started = time.monotonic()
    again = await prepare(service, service.first, lines)
    assert again.cached
    assert again.image == first.image
    assert not any("STEP" in line or "building image" in line for line in lines)
    assert time.monotonic() - started < 10


async def test_new_revision_with_unchanged_dependencies_reuses_the_dependency_layer(
    service: Service, podman_api: PodmanApi
) -> None:
    await prepare(service, service.first, [])
    main = service.repo / "web" / "main.py"
    main.write_text(main.read_text().replace('"v1"', '"v2"'))
    second = commit_all(service.repo, "v2: code only")
    lines: list[str] = []
    release = await prepare(service, second, lines)
    assert not release.cached
    repository = service.config.build.image.repository  # type: ignore[union-attr]
    assert release.image.endswith(  # type: ignore[union-attr]
        "@" + podman_api.registry.manifest_digest(repository, second)
    )
    pip_step = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert "Using cache" in lines[pip_step + 1], lines[pip_step : pip_step + 3]


async def test_a_recorded_digest_is_used_when_the_registry_is_unreachable(
    service: Service,
) -> None:
    """A rollback target still resolves when the registry is down: its digest never changes."""
    first = await prepare(service, service.first, [])
    image = service.config.build.image  # type: ignore[union-attr]
    down = image.model_copy(  # type: ignore[union-attr]
        update={"registry": image.registry.model_copy(update={"address": "127.0.0.1:9"})}  # type: ignore[union-attr]
    )
    offline = Service(
        service.root,
        service.repo,
        service.state_dir,
        service.config.model_copy(
            update={"build": service.config.build.model_copy(update={"image": down})}  # type: ignore[union-attr]
        ),
        service.first,
    )
    lines: list[str] = []
    release = await prepare(offline, service.first, lines)
    assert release.image == first.image
    assert any("unreachable" in line and "using the digest recorded" in line for line in lines)


async def test_a_failing_dockerfile_step_fails_the_prepare_with_its_output(
    podman_api: PodmanApi, python_image: str, tmp_path: Path
) -> None:
    """The service's own Dockerfile is used; a failing step names itself and its last lines."""
    repo = init_repo(tmp_path / "repo")
    (repo / "Dockerfile").write_text(f"FROM {python_image}\nRUN echo about to fail && exit 3\n")
    sha = commit_all(repo, "broken image")
    config = ServiceConfig.model_validate(
        {
            "source": {"repo": "repo"},
            "run": "unused",
            "build": {
                "image": {
                    "repository": "zerodown-test/broken",
                    "registry": {"address": podman_api.registry.address},
                    "engine": podman_api.url,
                }
            },
        }
    )
    with pytest.raises(BuildFailed) as failed:
        await prepare_release(
            "broken", config, root=tmp_path, state_dir=tmp_path / "state", revision=sha
        )
    message = str(failed.value)
    assert message.startswith(f"build of {podman_api.registry.address}/zerodown-test/broken:")
    assert "exit status 3" in message or "exit code: 3" in message, message
    assert "about to fail" in message
    with pytest.raises(urllib.error.HTTPError, match="404"):  # nothing was pushed
        podman_api.registry.manifest_digest("zerodown-test/broken", sha)
