"""An image per revision: built once per git sha, pushed, pinned by the registry's digest.

`publish_revision` asks the registry for the tag `<sha>` first: a revision pushed before is not
rebuilt (a rollback re-resolves its digest in one HEAD). Otherwise it builds the release
directory through the Docker API (the service's Dockerfile, or a preset's), streams the build
output to `on_line` and to `<release>/.zerodown-image-build.log`, labels the image with the OCI
annotation keys (`org.opencontainers.image.revision/.source/.created`), pushes `<sha>`, adds
`vX.Y.Z` when a git tag names the commit, and records the pinned reference in
`<release>/.zerodown-image.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from zerodown.config.images import ImageBuildConfig, Preset, valid_tag
from zerodown.errors import BuildFailed
from zerodown.images.base import ensure_base_image, rootfs_key
from zerodown.images.presets import BASE_PACKAGES, GENERATED_DOCKERFILE, PresetContext, render
from zerodown.images.registry import ImageRegistry, open_registry, pinned_reference

if TYPE_CHECKING:
    import docker

IMAGE_RECORD = ".zerodown-image.json"
IMAGE_BUILD_LOG = ".zerodown-image-build.log"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_CREATED = "org.opencontainers.image.created"
LABEL_SERVICE = "io.zerodown.service"
_VERSION_TAG = re.compile(r"^v\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class PublishedImage:
    """A revision's image in the registry: `reference` is what instances run."""

    reference: str  # <address>/<repository>@sha256:...
    repository: str
    digest: str
    tags: tuple[str, ...]
    cached: bool  # the registry had it already: nothing was built
    seconds: float


def image_repository(service_name: str, image: ImageBuildConfig) -> str:
    """The repository a service's images go to (`repository:` or the service's name)."""
    return image.repository or service_name


def docker_client(image: ImageBuildConfig) -> docker.DockerClient:
    """A docker-py client on `engine` (or $DOCKER_HOST, or the default socket)."""
    try:
        import docker
    except ImportError:
        raise BuildFailed("image builds need docker-py: pip install 'zerodown[docker]'") from None
    url = image.engine or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        return docker.DockerClient(base_url=url, timeout=int(image.timeout))
    except docker.errors.DockerException as exc:
        raise BuildFailed(
            f"cannot reach the Docker API at {url}: {exc}; set build.image.engine"
        ) from exc


async def publish_revision(
    service_name: str,
    image: ImageBuildConfig,
    *,
    release_dir: Path,
    sha: str,
    version_tags: tuple[str, ...] = (),
    source: str | None = None,
    on_line: Callable[[str], None] | None = None,
    registry: ImageRegistry | None = None,
    client: docker.DockerClient | None = None,
) -> PublishedImage:
    """The pinned image of revision `sha`: from the registry if pushed before, else built,
    pushed and tagged. Raises BuildFailed or ImageRegistryError."""
    started = time.monotonic()
    repository = image_repository(service_name, image)
    own_registry = registry is None
    reg = registry if registry is not None else open_registry(image.registry)
    try:
        auth = await reg.login()
        digest = await reg.manifest_digest(repository, sha)
        cached = digest is not None
        if digest is None:
            if on_line is not None:
                on_line(f"building image {auth.address}/{repository}:{sha[:12]}")
            await reg.ensure_repository(repository)
            own_client = client is None
            engine = client if client is not None else docker_client(image)
            loop = asyncio.get_running_loop()
            # The build runs in a thread; its lines reach `on_line` on the event loop's thread
            # (a deployment's recorder queues events there).
            in_loop = None if on_line is None else _on_loop(loop, on_line)
            try:
                await asyncio.to_thread(
                    _build_and_push,
                    engine,
                    image,
                    service_name,
                    release_dir,
                    f"{auth.address}/{repository}",
                    sha,
                    source,
                    auth.auth_config(),
                    in_loop,
                )
            finally:
                if own_client:
                    engine.close()
            digest = await reg.manifest_digest(repository, sha)
            if digest is None:
                raise BuildFailed(
                    f"pushed {repository}:{sha[:12]} but the registry does not list it"
                )
        tags = [sha]
        for tag in version_tags:
            if valid_tag(tag) and await reg.manifest_digest(repository, tag) != digest:
                await reg.add_tag(repository, digest, tag)
            tags.append(tag)
        published = PublishedImage(
            pinned_reference(auth.address, repository, digest),
            repository,
            digest,
            tuple(tags),
            cached,
            time.monotonic() - started,
        )
    finally:
        if own_registry:
            await reg.aclose()
    await asyncio.to_thread(_record, release_dir, published)
    return published


def version_tags_of(git_tags: list[str]) -> tuple[str, ...]:
    """The `vX.Y.Z` tags among a commit's git tags."""
    return tuple(sorted(t for t in git_tags if _VERSION_TAG.fullmatch(t)))


def recorded_image(release_dir: Path) -> PublishedImage | None:
    """The image recorded with a release directory, if one was published from it."""
    try:
        data = json.loads((release_dir / IMAGE_RECORD).read_text())
        data["tags"] = tuple(data["tags"])
        return PublishedImage(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _record(release_dir: Path, published: PublishedImage) -> None:
    if release_dir.is_dir():
        tmp = release_dir / f"{IMAGE_RECORD}.tmp"
        tmp.write_text(json.dumps(asdict(published), indent=2) + "\n")
        tmp.replace(release_dir / IMAGE_RECORD)


def _build_and_push(
    client: docker.DockerClient,
    image: ImageBuildConfig,
    service_name: str,
    release_dir: Path,
    name: str,
    sha: str,
    source: str | None,
    auth_config: dict[str, str] | None,
    on_line: Callable[[str], None] | None,
) -> None:
    """Build `release_dir` as `<name>:<sha>` and push it (sync: docker-py)."""
    context = (release_dir / image.context).resolve()
    if not context.is_dir() or not context.is_relative_to(release_dir.resolve()):
        raise BuildFailed(
            f"build.image.context {image.context!r} is not a directory of the service"
        )
    with _build_log(release_dir, on_line) as out:
        dockerfile = _dockerfile(client, image, context, out)
        labels = {
            LABEL_REVISION: sha,
            LABEL_CREATED: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            LABEL_SERVICE: service_name,
        }
        if source:
            labels[LABEL_SOURCE] = source
        _stream(
            client.api.build(
                path=str(context),
                dockerfile=dockerfile,
                tag=f"{name}:{sha}",
                labels=labels,
                buildargs=dict(image.build_args),
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                timeout=int(image.timeout),
            ),
            out,
            f"build of {name}:{sha[:12]}",
        )
        out(f"pushing {name}:{sha[:12]}")
        _stream(
            client.api.push(name, tag=sha, auth_config=auth_config, stream=True, decode=True),
            out,
            f"push of {name}:{sha[:12]}",
        )


def _dockerfile(
    client: docker.DockerClient, image: ImageBuildConfig, context: Path, out: Callable[[str], None]
) -> str:
    """The Dockerfile to build with, relative to `context`: the service's or a preset's."""
    if image.dockerfile is not None:
        if not (context / image.dockerfile).is_file():
            raise BuildFailed(f"build.image.dockerfile {image.dockerfile!r} is not in the context")
        return image.dockerfile
    if image.preset is None:
        if (context / "Dockerfile").is_file():
            return "Dockerfile"
        raise BuildFailed(
            "the service has no Dockerfile: add one, or set build.image.preset "
            "(fastapi or spring-boot)"
        )
    base = image.base or _local_base(client, image, image.preset, out)
    text = render(image.preset, image, base=base, context=PresetContext.scan(context))
    (context / GENERATED_DOCKERFILE).write_text(text)
    out(f"Dockerfile from preset {image.preset} on {base}")
    return GENERATED_DOCKERFILE


def _local_base(
    client: docker.DockerClient, image: ImageBuildConfig, preset: Preset, out: Callable[[str], None]
) -> str:
    packages = image.base_packages or BASE_PACKAGES[preset]
    reference = local_base_reference(preset, packages)
    ensure_base_image(client, reference, packages=packages, mirror=image.mirror, on_line=out)
    return reference


def local_base_reference(preset: Preset, packages: Sequence[str]) -> str:
    """The name of the base zerodown builds for a preset: one per package set."""
    return f"localhost/zerodown/base-{preset}:{rootfs_key('bookworm', packages)}"


def _on_loop(
    loop: asyncio.AbstractEventLoop, on_line: Callable[[str], None]
) -> Callable[[str], None]:
    """`on_line`, called on `loop`'s thread whichever thread calls the result."""

    def call(line: str) -> None:
        loop.call_soon_threadsafe(on_line, line)

    return call


@contextlib.contextmanager
def _build_log(
    release_dir: Path, on_line: Callable[[str], None] | None
) -> Iterator[Callable[[str], None]]:
    """A line sink writing to the image build log and to `on_line`."""
    handle: IO[str] | None
    try:
        handle = (release_dir / IMAGE_BUILD_LOG).open("w", encoding="utf-8")
    except OSError:
        handle = None

    def out(line: str) -> None:
        if handle is not None:
            with contextlib.suppress(OSError):  # a full disk must not fail the build
                handle.write(line + "\n")
                handle.flush()
        if on_line is not None:
            on_line(line)

    try:
        yield out
    finally:
        if handle is not None:
            handle.close()


def _stream(chunks: Any, out: Callable[[str], None], what: str) -> None:
    """Pass a build/push JSON stream to `out`; BuildFailed on its first error."""
    import docker.errors

    tail: list[str] = []
    try:
        for chunk in chunks:
            if not isinstance(chunk, dict):
                continue
            if chunk.get("error") or chunk.get("errorDetail"):
                detail = chunk.get("error") or chunk["errorDetail"].get("message", "")
                last = "\n".join(f"  | {line}" for line in tail[-10:])
                raise BuildFailed(f"{what} failed: {str(detail).strip()}\n{last}".rstrip())
            text = chunk.get("stream")
            if text is None and chunk.get("status"):
                text = " ".join(str(chunk[k]) for k in ("status", "id") if chunk.get(k))
            for line in str(text or "").splitlines():
                if line.strip():
                    tail = [*tail[-19:], line]
                    out(line)
    except docker.errors.DockerException as exc:
        raise BuildFailed(f"{what} failed: {exc}") from exc
