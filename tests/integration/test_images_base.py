"""ensure_base_image against a real Podman API: a rootfs imported as an image, made once.

The fast tests put a fake `debootstrap` on PATH (it writes a tiny rootfs and counts its runs);
the slow one runs the real debootstrap against the Debian mirror (~1 min).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.container_fixtures import PodmanApi, wait_for

from zerodown.images.base import DEFAULT_MIRROR, default_cache_dir, ensure_base_image, rootfs_key
from zerodown.images.presets import BASE_PACKAGES

DEBIAN_MIRROR = os.environ.get("ZERODOWN_DEBIAN_MIRROR", DEFAULT_MIRROR)

# A debootstrap stand-in: `debootstrap [opts] SUITE TARGET MIRROR`; waits for $FAKE_GO if set.
FAKE_DEBOOTSTRAP = """#!/bin/sh
for last; do :; done
target=$(eval echo \\${$(($# - 1))})
echo run >> "$FAKE_COUNT"
touch "$FAKE_STARTED"
n=0
while [ -n "$FAKE_GO" ] && [ ! -e "$FAKE_GO" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done
mkdir -p "$target/etc"
echo "$*" > "$target/etc/made-by"
"""


@pytest.fixture
def reference(podman_api: PodmanApi) -> Iterator[str]:
    """A fresh image reference, removed (with the stray tags an import made) afterwards."""
    ref = f"localhost/zerodown-test/base-{uuid.uuid4().hex[:8]}:t"
    yield ref
    with podman_api.client() as client:
        for name in (ref, ref.rsplit(":", 1)[0] + ":latest"):
            with contextlib.suppress(Exception):  # best effort: what the test may have made
                client.images.remove(name, force=True)


@pytest.fixture
def fake_debootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake debootstrap first on PATH; returns the dir holding its run counter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "debootstrap"
    script.write_text(FAKE_DEBOOTSTRAP)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_COUNT", str(tmp_path / "count"))
    monkeypatch.setenv("FAKE_STARTED", str(tmp_path / "started"))
    return tmp_path


def _read_file(client: object, reference: str, path: str) -> str:
    container = client.containers.create(reference, ["/bin/true"])  # type: ignore[attr-defined]
    try:
        chunks, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(Path(path).name)
            assert member is not None
            return member.read().decode()
    finally:
        container.remove(force=True)


def test_rootfs_is_imported_as_the_reference_and_reused(
    podman_api: PodmanApi, reference: str, fake_debootstrap: Path
) -> None:
    """The image carries the rootfs; a second call reuses image and tarball (no second run)."""
    cache = fake_debootstrap / "cache"
    with podman_api.client() as client:
        first = ensure_base_image(client, reference, packages=("python3", "curl"), cache_dir=cache)
        assert client.images.get(reference).id == first
        made_by = _read_file(client, reference, "/etc/made-by")
        assert "--variant=minbase --include=python3,curl bookworm" in made_by
        assert (
            ensure_base_image(client, reference, packages=("python3", "curl"), cache_dir=cache)
            == first
        )
        # Gone from the engine, the image comes back from the cached tarball.
        client.images.remove(reference, force=True)
        again = ensure_base_image(client, reference, packages=("python3", "curl"), cache_dir=cache)
        assert client.images.get(reference).id == again
    assert (fake_debootstrap / "count").read_text().splitlines() == ["run"]


def test_two_processes_at_once_build_once(
    podman_api: PodmanApi, reference: str, fake_debootstrap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second process waits on the flock while the first builds, then reuses its image."""
    go = fake_debootstrap / "go"
    monkeypatch.setenv("FAKE_GO", str(go))
    code = (
        "import sys, docker; from pathlib import Path;"
        "from zerodown.images.base import ensure_base_image;"
        f"c = docker.DockerClient(base_url={podman_api.url!r});"
        f"cache = Path({str(fake_debootstrap / 'cache')!r});"
        f"print(ensure_base_image(c, {reference!r}, cache_dir=cache))"
    )
    procs: list[subprocess.Popen[str]] = []
    try:
        first = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        procs.append(first)
        wait_for((fake_debootstrap / "started").exists, 30, "the first build")
        second = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        procs.append(second)
        wait_for(lambda: _waits_on_flock(second.pid), 30, "the second process blocking on the lock")
        go.touch()
        out = [p.communicate(timeout=60)[0].strip() for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert [p.returncode for p in procs] == [0, 0]
    assert out[0] == out[1] and out[0].startswith("sha256:")
    assert (fake_debootstrap / "count").read_text().splitlines() == ["run"]


def _waits_on_flock(pid: int) -> bool:
    """Whether `pid` is blocked waiting for an flock (a `->` line of /proc/locks)."""
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and f" {pid} " in line for line in lines)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_debootstrap_makes_a_python_base(podman_api: PodmanApi, reference: str) -> None:
    """bookworm minbase + python3 from the Debian mirror: the image runs python3.

    The default cache and the fastapi preset's packages are used, so a session that made that
    base already (the container fixtures' python_image, the preset) imports its rootfs instead of
    a second ~70 s debootstrap.
    """
    packages = BASE_PACKAGES["fastapi"]
    lines: list[str] = []
    cached = (default_cache_dir() / f"{rootfs_key('bookworm', list(packages))}.tar").exists()
    started = time.monotonic()
    with podman_api.client() as client:
        image_id = ensure_base_image(
            client, reference, packages=packages, mirror=DEBIAN_MIRROR, on_line=lines.append
        )
        out = client.containers.run(reference, ["python3", "-c", "print(6 * 7)"], remove=True)
        assert client.images.get(reference).id == image_id
    assert out == b"42\n"
    if not cached:  # debootstrap ran: its output was streamed
        assert any("Base system installed successfully" in line for line in lines)
    print(f"base image ready in {time.monotonic() - started:.1f} s (rootfs cached: {cached})")
