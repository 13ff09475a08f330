"""A base image built locally, once: a Debian rootfs made by debootstrap, imported as an image.

No public image registry is reachable from the machines zerodown runs on, so the presets' base
images either come from the config (`base:`) or are made here: `debootstrap --variant=minbase
--include=<packages>` into a rootfs, packed as a tarball cached under
`~/.cache/zerodown/base/<suite>-<key>.tar` (keyed by suite and packages), and imported through the
Docker API. Two processes asking for the same base at once are serialised by an flock; the
second finds the image (or at least the tarball) made by the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zerodown.errors import BuildFailed

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

_IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{64}")

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITE = "bookworm"
# debootstrap of bookworm minbase + python3 takes ~40 s here; a mirror that stalls must not hang.
_DEBOOTSTRAP_TIMEOUT = 1200.0
# Where Debian puts it when root's PATH lacks the sbin dirs (e.g. `su` without `-`).
_DEBOOTSTRAP_FALLBACKS = ("/usr/sbin/debootstrap", "/sbin/debootstrap")
# What an imported rootfs lacks compared with a pulled image: a PATH and a shell to start.
_IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/sh"]',
)


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/zerodown/base` (or `~/.cache/zerodown/base`)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "zerodown" / "base"


def rootfs_key(suite: str, packages: Sequence[str]) -> str:
    """The cache key of a rootfs: the suite plus a short hash of the sorted package set."""
    digest = hashlib.sha256("\n".join(sorted(set(packages))).encode()).hexdigest()[:12]
    return f"{suite}-{digest}"


def ensure_base_image(
    client: docker.DockerClient,
    reference: str,
    *,
    packages: Sequence[str] = ("python3",),
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    cache_dir: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """The id of image `reference`, made from a debootstrapped Debian rootfs if it is missing.

    Sync (docker-py and debootstrap are): call it through `asyncio.to_thread`. Raises BuildFailed
    with a sentence saying what to install or configure.
    """
    existing = _image_id(client, reference)
    if existing is not None:
        return existing
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = rootfs_key(suite, packages)
    with _flock(cache / f"{key}.lock"):
        # Another process may have imported it while this one waited for the lock.
        existing = _image_id(client, reference)
        if existing is not None:
            return existing
        tarball = cache / f"{key}.tar"
        if not tarball.exists():
            _debootstrap_tarball(tarball, packages=packages, suite=suite, mirror=mirror, on=on_line)
        return _import_tarball(client, tarball, reference)


def _image_id(client: docker.DockerClient, reference: str) -> str | None:
    import docker.errors

    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise BuildFailed(f"cannot look up image {reference}: {exc}") from exc
    return str(image.id)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _debootstrap_tarball(
    tarball: Path,
    *,
    packages: Sequence[str],
    suite: str,
    mirror: str,
    on: Callable[[str], None] | None,
) -> None:
    """debootstrap into a temp dir next to `tarball`, pack it, rename it into place."""
    program = shutil.which("debootstrap") or next(
        (p for p in _DEBOOTSTRAP_FALLBACKS if Path(p).exists()), None
    )
    if program is None:
        raise BuildFailed(
            "building a base image needs debootstrap: install it (apt-get install debootstrap)"
            " or set `base:` to an image you have"
        )
    if os.geteuid() != 0:
        raise BuildFailed(
            "building a base image with debootstrap needs root: run it once as root, or set"
            " `base:` to an image you have"
        )
    work = Path(tempfile.mkdtemp(prefix=f".{tarball.stem}-", dir=tarball.parent))
    rootfs = work / "rootfs"
    try:
        command = [program, "--variant=minbase"]
        if packages:
            command.append("--include=" + ",".join(packages))
        command += [suite, str(rootfs), mirror]
        log.info("building base rootfs: %s", " ".join(command))
        _run_streaming(command, on)
        # Nothing of the build host's apt state or caches belongs in the image.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = work / "rootfs.tar"
        with tarfile.open(partial, "w") as tar:
            for entry in sorted(rootfs.iterdir()):
                tar.add(entry, arcname=entry.name)
        partial.rename(tarball)
    finally:
        _remove_tree(work)


def _run_streaming(command: list[str], on: Callable[[str], None] | None) -> None:
    """Run `command`, passing each output line to `on`; killed after _DEBOOTSTRAP_TIMEOUT."""
    tail: list[str] = []
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
    ) as proc:
        # A stalled mirror leaves the output pipe open and silent: a timer kills the process.
        watchdog = threading.Timer(_DEBOOTSTRAP_TIMEOUT, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout or ():
                tail = [*tail[-19:], line.rstrip("\n")]
                if on is not None:
                    on(tail[-1])
            code = proc.wait()
        finally:
            timed_out = not watchdog.is_alive()
            watchdog.cancel()
    if code != 0 and timed_out:
        raise BuildFailed(f"debootstrap ran past {_DEBOOTSTRAP_TIMEOUT:.0f} s and was stopped")
    if code != 0:
        detail = "\n".join(tail[-5:])
        raise BuildFailed(
            f"debootstrap exited {code} (is the mirror reachable? set `mirror:`):\n{detail}"
        )


def _remove_tree(path: Path) -> None:
    """Remove a debootstrap work dir, but never through a /proc or /sys it left mounted."""
    mounted = _mounts_under(path)
    for point in sorted(mounted, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if _mounts_under(path):
        log.warning("leaving %s: something is still mounted under it", path)
        return
    shutil.rmtree(path, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    return [p for p in points if p.startswith(prefix)]


def _import_tarball(client: docker.DockerClient, tarball: Path, reference: str) -> str:
    import docker.errors
    from docker.utils import parse_repository_tag

    repository, tag = parse_repository_tag(reference)
    try:
        with tarball.open("rb") as data:
            # POST /images/create?fromSrc=- with the tarball as the body. Podman's compat API
            # ignores `tag` there (it names the image `:latest`), so the id it reports is tagged
            # explicitly afterwards, as on Docker.
            reply = client.api.import_image_from_data(
                data, repository=repository, changes=list(_IMPORT_CHANGES)
            )
        image_id = _imported_id(reply)
        if image_id is None:
            raise BuildFailed(f"importing {tarball} as {reference}: no image id in {reply!r:.200}")
        client.api.tag(image_id, repository, tag or "latest")
        if tag and tag != "latest":
            _drop_stray_latest(client, repository, image_id)
    except docker.errors.DockerException as exc:
        raise BuildFailed(f"cannot import {tarball} as {reference}: {exc}") from exc
    found = _image_id(client, reference)
    if found is None:
        raise BuildFailed(f"importing {tarball} as {reference} left no image of that name")
    return found


def _drop_stray_latest(client: docker.DockerClient, repository: str, image_id: str) -> None:
    """Untag `<repository>:latest` that podman's import made, when it names the new image."""
    import docker.errors

    if _image_id(client, f"{repository}:latest") == image_id:
        with contextlib.suppress(docker.errors.DockerException):
            client.api.remove_image(f"{repository}:latest", noprune=True)


def _imported_id(reply: object) -> str | None:
    """The image id in an import's reply: JSON status lines whose last names the image."""
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    ids: list[str] = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if not isinstance(item, dict):
            continue
        for key in ("id", "status"):
            value = item.get(key)
            if isinstance(value, str) and _IMAGE_ID.fullmatch(value):
                ids.append(value)
                break
    return ids[-1] if ids else None
