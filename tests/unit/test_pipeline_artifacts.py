"""Artifact tags and retention: latest + last N, untagged 7 days, dev 30 days, never what is
deployed or the rollback target."""

from __future__ import annotations

from zerodown.config.pipeline import RetentionConfig
from zerodown.pipeline.artifacts import ArtifactInfo, plan_prune, revision_tags

DAY = 86400.0
NOW = 1_000 * DAY


def _artifact(n: int, age_days: float, *tags: str) -> ArtifactInfo:
    sha = f"{n:040x}"
    return ArtifactInfo(sha, NOW - age_days * DAY, (sha, *tags))


def test_tags_are_sha_version_tags_and_latest_or_dev() -> None:
    sha = "c" * 40
    prod = revision_tags(sha, git_tags=["v1.2.3", "nightly"], dev=False, now_stamp="20260101")
    dev = revision_tags(sha, git_tags=[], dev=True, now_stamp="20260101120000")
    assert prod == [sha, "v1.2.3", "latest"]
    assert dev == [sha, "dev-20260101120000"]


def test_retention_keeps_the_newest_latest_versions_and_protected() -> None:
    policy = RetentionConfig(keep_last=2)
    artifacts = [
        _artifact(1, 0.5),  # newest: kept
        _artifact(2, 1),  # second newest: kept
        _artifact(3, 3),  # untagged, 3 days: kept (< 7)
        _artifact(4, 8),  # untagged, 8 days: deleted
        _artifact(5, 20, "dev-20250101"),  # dev, 20 days: kept (< 30)
        _artifact(6, 40, "dev-20241201"),  # dev, 40 days: deleted
        _artifact(7, 90, "v1.0.0"),  # a release: kept
        _artifact(8, 90, "latest"),  # latest: kept
        _artifact(9, 60),  # deployed (protected): kept
        _artifact(10, 61),  # rollback target (protected): kept
    ]
    protected = {artifacts[8].revision, artifacts[9].revision}
    doomed = plan_prune(artifacts, protected=protected, policy=policy, now=NOW)
    assert [a.revision for a, _ in doomed] == [artifacts[3].revision, artifacts[5].revision]
    reasons = [why for _, why in doomed]
    assert reasons[0].startswith("untagged, 8 days") and reasons[1].startswith("dev build, 40")


def test_the_last_ten_are_kept_whatever_their_age() -> None:
    artifacts = [_artifact(n, 100 + n) for n in range(12)]
    doomed = plan_prune(artifacts, protected=set(), policy=RetentionConfig(), now=NOW)
    assert sorted(a.revision for a, _ in doomed) == [artifacts[10].revision, artifacts[11].revision]
