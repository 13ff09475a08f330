"""ensure_base_image without a container engine: reuse, cache keys, and its refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import pytest

from zerodown.errors import BuildFailed
from zerodown.images import base
from zerodown.images.base import ensure_base_image, rootfs_key


class FakeImages:
    """client.images with a fixed set of references."""

    def __init__(self, known: dict[str, str]) -> None:
        self.known = known

    def get(self, reference: str) -> Any:
        if reference not in self.known:
            raise docker.errors.ImageNotFound(reference)
        return type("Image", (), {"id": self.known[reference]})()


class FakeClient:
    def __init__(self, known: dict[str, str] | None = None) -> None:
        self.images = FakeImages(known or {})


def test_an_existing_image_is_returned_without_building(tmp_path: Path) -> None:
    client: Any = FakeClient({"localhost/base:1": "sha256:" + "a" * 64})
    got = ensure_base_image(client, "localhost/base:1", cache_dir=tmp_path / "cache")
    assert got == "sha256:" + "a" * 64
    assert not (tmp_path / "cache").exists()  # nothing was prepared


def test_cache_key_depends_on_suite_and_package_set_not_order() -> None:
    assert rootfs_key("bookworm", ["python3", "curl"]) == rootfs_key(
        "bookworm", ["curl", "python3"]
    )
    assert rootfs_key("bookworm", ["python3"]) != rootfs_key("bookworm", ["python3", "curl"])
    assert rootfs_key("bookworm", ["python3"]) != rootfs_key("trixie", ["python3"])


def test_missing_debootstrap_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(base, "_DEBOOTSTRAP_FALLBACKS", ())
    with pytest.raises(BuildFailed, match="apt-get install debootstrap"):
        ensure_base_image(FakeClient(), "localhost/base:1", cache_dir=tmp_path)  # type: ignore[arg-type]


def test_not_root_is_refused_before_debootstrap_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "ran"
    fake = tmp_path / "bin" / "debootstrap"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ntouch {ran}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setattr(base.os, "geteuid", lambda: 1000)
    with pytest.raises(BuildFailed, match="needs root"):
        ensure_base_image(FakeClient(), "localhost/base:1", cache_dir=tmp_path)  # type: ignore[arg-type]
    assert not ran.exists()


def test_a_failing_debootstrap_names_its_exit_code_and_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "debootstrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'E: Failed getting release file'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setattr(base.os, "geteuid", lambda: 0)
    with pytest.raises(BuildFailed, match=r"exited 1 .*\n.*Failed getting release file"):
        ensure_base_image(FakeClient(), "localhost/base:1", cache_dir=tmp_path / "c")  # type: ignore[arg-type]
    assert list((tmp_path / "c").glob("*.tar")) == []  # no half tarball is cached
    assert [p.name for p in (tmp_path / "c").iterdir()] == [
        f"{rootfs_key('bookworm', ['python3'])}.lock"
    ]
