"""Published revisions: the `ArtifactStore` seam (a local directory today), tags, and the
retention policy `zerodown artifacts prune` applies.

Retention (the seeds'): `latest` and the newest N revisions always stay; a revision with a
version tag (vX.Y.Z) stays; a dev build (`dev-<timestamp>`) goes after 30 days; any other
(only its sha) after 7 days. A revision that is deployed, or is the rollback target of a
deployed one, is never deleted, whatever its age.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from zerodown.config.pipeline import RetentionConfig

VERSION_TAG = re.compile(r"^v\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
DAY = 86400.0


@dataclass(frozen=True)
class StoredArtifact:
    """Where an artifact landed in an artifact store."""

    digest: str
    location: str
    size: int


class ArtifactStore(Protocol):
    """Keeps published artifacts by content digest (local dir; S3/ECR later)."""

    async def put(self, archive: Path, digest: str) -> StoredArtifact:
        """Store `archive` under `digest` (a no-op when it is there already)."""
        ...

    async def delete(self, location: str) -> None:
        """Remove a stored artifact; a missing one is fine."""
        ...


class LocalArtifactStore:
    """Artifacts as files `<root>/<digest>.tar.gz`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, archive: Path, digest: str) -> StoredArtifact:
        """Copy `archive` in under its digest, unless an identical one is there already."""
        target = self.root / f"{digest.replace(':', '-')}.tar.gz"

        def copy() -> StoredArtifact:
            self.root.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                partial = target.with_suffix(".partial")
                shutil.copyfile(archive, partial)
                partial.replace(target)
            return StoredArtifact(digest, str(target), target.stat().st_size)

        return await asyncio.to_thread(copy)

    async def delete(self, location: str) -> None:
        """Remove the file at `location` if it lies in this store."""
        path = Path(location)
        if path.parent.resolve() == self.root.resolve():
            await asyncio.to_thread(path.unlink, True)


@dataclass(frozen=True)
class ArtifactInfo:
    """What retention needs to know of a published revision."""

    revision: str
    created_at: float
    tags: tuple[str, ...]
    location: str = ""


def revision_tags(sha: str, *, git_tags: Iterable[str], dev: bool, now_stamp: str) -> list[str]:
    """The tags a publish gives a revision: its sha, then vX.Y.Z git tags at it, then
    `dev-<timestamp>` (dev builds) or `latest` (the others; convenience only, deploys pin the
    sha)."""
    tags = [sha, *sorted(t for t in git_tags if VERSION_TAG.match(t))]
    tags.append(f"dev-{now_stamp}" if dev else "latest")
    return tags


def plan_prune(
    artifacts: Sequence[ArtifactInfo],
    *,
    protected: Iterable[str],
    policy: RetentionConfig,
    now: float,
) -> list[tuple[ArtifactInfo, str]]:
    """The revisions to delete, each with the reason; everything else is kept."""
    keep = set(protected)
    newest = sorted(artifacts, key=lambda a: a.created_at, reverse=True)
    keep.update(a.revision for a in newest[: policy.keep_last])
    doomed = []
    for artifact in newest:
        if artifact.revision in keep or "latest" in artifact.tags:
            continue
        if any(VERSION_TAG.match(tag) for tag in artifact.tags):
            continue
        age_days = (now - artifact.created_at) / DAY
        dev = any(tag.startswith("dev-") for tag in artifact.tags)
        limit = policy.dev_days if dev else policy.untagged_days
        if age_days > limit:
            what = "dev build" if dev else "untagged"
            doomed.append((artifact, f"{what}, {age_days:.0f} days old (kept {limit:g} days)"))
    return doomed
