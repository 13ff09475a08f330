"""plan_image_prune: the seeds' lifecycle policy, decided per image with its reason."""

from __future__ import annotations

from datetime import UTC, datetime

from zerodown.config.images import ImageRetentionConfig
from zerodown.images.registry import StoredImage, is_loopback, parse_time
from zerodown.images.retention import plan_image_prune

DAY = 86400.0
NOW = 1_800_000_000.0


def img(name: str, days_old: float | None, *tags: str) -> StoredImage:
    created = None if days_old is None else NOW - days_old * DAY
    return StoredImage(f"sha256:{name}", tuple(tags), created)


def plan(images: list[StoredImage], **policy: float) -> dict[str, tuple[bool, str]]:
    verdicts = plan_image_prune(
        images,
        policy=ImageRetentionConfig(**policy),
        protected={"sha256:used": "live in prod"},
        now=NOW,
    )
    return {v.image.digest.removeprefix("sha256:"): (v.keep, v.reason) for v in verdicts}


def test_last_n_release_images_are_kept_latest_and_in_use_always() -> None:
    images = [img(f"r{i}", 20 - i, f"sha{i}") for i in range(5)]
    images += [img("old-latest", 99, "latest"), img("used", 98, "shaU")]
    got = plan(images, keep_last=3)
    assert {d for d, (keep, _) in got.items() if not keep} == {"r0", "r1"}
    assert got["r0"] == (False, "older than the last 3 images")
    assert got["r4"] == (True, "one of the last 3")
    assert got["old-latest"] == (True, "tagged latest")
    assert got["used"] == (True, "in use: live in prod")


def test_untagged_after_7_days_dev_after_30_by_default() -> None:
    images = [
        img("untagged-new", 6.9),
        img("untagged-old", 7.0),
        img("dev-new", 29, "sha1", "dev-20260101000000"),
        img("dev-old", 31, "sha2", "dev-20251201000000"),
        img("dev-released", 90, "sha3", "dev-20250101000000", "v1.0.0"),  # a version: a release
        img("unknown-age", None),
    ]
    got = plan(images)
    assert got["untagged-new"][0] and not got["untagged-old"][0]
    assert got["untagged-old"][1] == "untagged 7.0 days old (policy: 7 days)"
    assert got["dev-new"] == (True, "dev image 29.0 days old (kept 30 days)")
    assert got["dev-old"] == (False, "dev image 31.0 days old (policy: 30 days)")
    assert got["dev-released"] == (True, "one of the last 10")
    assert got["unknown-age"] == (True, "untagged of unknown age")


def test_dev_images_do_not_count_towards_the_last_n() -> None:
    images = [img(f"dev{i}", 1, f"dev-{i}") for i in range(5)] + [img("r", 50, "sha")]
    assert plan(images, keep_last=1)["r"] == (True, "one of the last 1")


def test_registry_helpers() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost:80") and is_loopback("[::1]:5")
    assert not is_loopback("registry.example.com:5000") and not is_loopback("10.0.0.1")
    assert parse_time("2026-12-02T00:29:18.123456789Z") == parse_time("2026-12-02T00:29:18.123456Z")
    assert (
        parse_time("2026-12-02T00:29:18Z")
        == datetime(2026, 12, 2, 0, 29, 18, tzinfo=UTC).timestamp()
    )
    assert parse_time("not a time") is None and parse_time(None) is None
