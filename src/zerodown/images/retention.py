"""Image retention: the seeds' lifecycle policy, never touching a digest still in use.

The default policy (configurable per service, `build.image.retention`):
- `latest` is kept;
- release images (tagged, without a `dev-` tag or with a `vX.Y.Z` tag): the newest 10 are kept;
- dev images (a `dev-<timestamp>` tag and no version tag) go after 30 days;
- untagged images go after 7 days (ECR; a v2 registry cannot list untagged manifests).
Whatever the rules say, a digest is kept when a running instance runs it, or when it is the
revision live in an environment, its rollback target, or that of an unfinished deployment
(read from the history store and the runtime). The plan says why for every image, so a dry run
lists what would go and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zerodown.config.images import ImageRetentionConfig
from zerodown.images.registry import ImageRegistry, StoredImage

if TYPE_CHECKING:
    from zerodown.runtimes.base import Runtime
    from zerodown.store.base import HistoryStore

DAY = 86400.0
_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class ImageVerdict:
    """What retention does with one image, and why."""

    image: StoredImage
    keep: bool
    reason: str


def is_dev_image(image: StoredImage) -> bool:
    """Tagged `dev-<timestamp>` and carrying no version tag."""
    return any(t.startswith("dev-") for t in image.tags) and not any(
        _VERSION.fullmatch(t) for t in image.tags
    )


def plan_image_prune(
    images: Sequence[StoredImage],
    *,
    policy: ImageRetentionConfig,
    protected: Mapping[str, str],
    now: float,
) -> list[ImageVerdict]:
    """A verdict for every image (newest first): keep or delete, with the rule that decided."""
    newest = sorted(images, key=lambda i: (i.created or 0.0, i.digest), reverse=True)
    releases = [i for i in newest if i.tags and not is_dev_image(i) and "latest" not in i.tags]
    last = {i.digest for i in releases[: policy.keep_last]}
    verdicts = []
    for image in newest:
        age = None if image.created is None else (now - image.created) / DAY
        if image.digest in protected:
            verdicts.append(ImageVerdict(image, True, f"in use: {protected[image.digest]}"))
        elif "latest" in image.tags:
            verdicts.append(ImageVerdict(image, True, "tagged latest"))
        elif not image.tags:
            verdicts.append(_by_age(image, age, policy.untagged_days, "untagged"))
        elif is_dev_image(image):
            verdicts.append(_by_age(image, age, policy.dev_days, "dev image"))
        elif image.digest in last:
            verdicts.append(ImageVerdict(image, True, f"one of the last {policy.keep_last}"))
        else:
            verdicts.append(
                ImageVerdict(image, False, f"older than the last {policy.keep_last} images")
            )
    return verdicts


def _by_age(image: StoredImage, age: float | None, limit: float, what: str) -> ImageVerdict:
    if age is None:
        return ImageVerdict(image, True, f"{what} of unknown age")
    if age >= limit:
        return ImageVerdict(image, False, f"{what} {age:.1f} days old (policy: {limit:g} days)")
    return ImageVerdict(image, True, f"{what} {age:.1f} days old (kept {limit:g} days)")


async def protected_digests(
    service_name: str,
    images: Iterable[StoredImage],
    *,
    environments: Iterable[str],
    store: HistoryStore,
    runtime: Runtime,
) -> dict[str, str]:
    """Digests retention must keep, each with why: run by an instance, or the live, rollback
    or rolling-out revision of an environment (found by its `<sha>` tag)."""
    by_tag = {tag: image.digest for image in images for tag in image.tags}
    keep: dict[str, str] = {}

    def protect(sha: str | None, why: str) -> None:
        if sha and sha in by_tag:
            keep.setdefault(by_tag[sha], why)

    for info in await runtime.list(service_name):
        if info.image and "@" in info.image:
            keep.setdefault(info.image.rsplit("@", 1)[1], f"run by instance {info.instance_id}")
        protect(info.revision, f"revision of instance {info.instance_id}")
    for environment in environments:
        live = await store.last_successful(service_name, environment)
        if live is not None:
            protect(live.revision, f"live in {environment}")
            protect(live.previous_revision, f"rollback target in {environment}")
    for record in await store.unfinished():
        if record.service == service_name:
            protect(record.revision, f"being deployed to {record.environment}")
            protect(record.previous_revision, f"rollback target of {record.id}")
    return keep


async def prune_images(
    registry: ImageRegistry,
    repository: str,
    verdicts: Sequence[ImageVerdict],
    *,
    dry_run: bool = False,
) -> list[ImageVerdict]:
    """Delete every image a verdict condemns (unless `dry_run`); return those verdicts."""
    doomed = [v for v in verdicts if not v.keep]
    if not dry_run:
        for verdict in doomed:
            await registry.delete(repository, verdict.image.digest)
    return doomed
