"""publish stage: record the revision in the artifact store with its tags (sha, vX.Y.Z from
git, `latest` or `dev-<timestamp>`); deploys always pin the sha."""

from __future__ import annotations

import time
from dataclasses import dataclass

from zerodown.config.pipeline import PRODUCTION_NAMES
from zerodown.pipeline.artifacts import ArtifactStore, revision_tags
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import RunRecord
from zerodown.pipeline.stages.build import BuiltArtifact
from zerodown.store.pipeline_schema import ArtifactRow


@dataclass(frozen=True)
class Published:
    """What publish recorded."""

    revision: str
    digest: str
    location: str
    tags: list[str]


async def publish_revision(
    history: PipelineHistory,
    store: ArtifactStore,
    run: RunRecord,
    built: BuiltArtifact | None,
    *,
    git_tags: list[str],
    now: float,
) -> Published:
    """Put the build's archive in the store (if the run built one; else the revision is the git
    commit itself) and record it with its tags."""
    if built is not None:
        stored = await store.put(built.archive, built.digest)
        digest, location, size = stored.digest, stored.location, stored.size
    else:
        digest, location, size = f"git:{run.sha}", "", 0
    dev = run.environment is not None and run.environment not in PRODUCTION_NAMES
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    tags = revision_tags(run.sha, git_tags=git_tags, dev=dev, now_stamp=stamp)
    row = ArtifactRow(
        revision=run.sha,
        digest=digest,
        location=location,
        size=size,
        run_id=run.id,
        branch=run.branch,
        environment=run.environment,
        created_at=now,
    )
    await history.save_artifact(row, tags, now=now)
    return Published(run.sha, digest, location, tags)
