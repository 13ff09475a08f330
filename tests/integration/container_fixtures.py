"""Containers for integration tests: Podman's Docker-compatible API, a local registry, images.

Import the fixtures a test module needs (`from tests.integration.container_fixtures import
podman_api, local_registry, python_image`). Everything runs on this machine: the API on a unix
socket in a temporary dir, Debian's `docker-registry` on 127.0.0.1:<free port>, and a python3
base image built once with debootstrap (`zerodown.images.base.ensure_base_image`) and kept in
Podman's storage (no public registry is reachable, and tests never pull from the internet).
Every process started here is stopped at the end of the session, also when a test failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WEBAPP = REPO / "examples" / "webapp" / "app.py"
# The test base image: Debian bookworm (minbase) with python3, made with debootstrap.
# The fastapi preset's base packages: one debootstrap (~70 s) serves this image and the preset.
PYTHON_IMAGE = "localhost/zerodown-test/python-pip:bookworm"
_START_TIMEOUT = 30.0
# Pure-Python packages the sample web app needs, copied from this interpreter's site-packages.
_WEBAPP_PACKAGES = ("uvicorn", "h11", "click", "websockets")

needs_podman = pytest.mark.skipif(
    shutil.which("podman") is None, reason="podman is not installed (scripts/setup-system.sh)"
)


@dataclass(frozen=True)
class Registry:
    """A running local registry: `address` is host:port, as image references spell it."""

    address: str
    storage: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def manifest_digest(self, repository: str, tag: str) -> str:
        """The manifest digest the registry serves for `repository:tag` (Docker-Content-Digest)."""
        request = urllib.request.Request(
            f"{self.url}/v2/{repository}/manifests/{tag}",
            method="HEAD",
            headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json, "
                "application/vnd.docker.distribution.manifest.v2+json"
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])


@dataclass(frozen=True)
class PodmanApi:
    """A running `podman system service`: `url` for docker-py (`unix:///.../podman.sock`)."""

    url: str
    registry: Registry  # the local registry this service pushes to and pulls from over http

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A docker-py client on this service, closed when the block ends."""
        import docker

        client = docker.DockerClient(base_url=self.url, timeout=120)
        try:
            yield client
        finally:
            client.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(probe: Callable[[], bool], timeout: float, what: str) -> None:
    """Call `probe` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what} not ready within {timeout}s")
        time.sleep(0.05)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


@pytest.fixture(scope="session")
def local_registry() -> Iterator[Registry]:
    """Debian's `docker-registry` on 127.0.0.1:<free port>, its storage in a temporary dir."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (scripts/setup-system.sh)")
    root = Path(tempfile.mkdtemp(prefix="zd-reg-", dir="/tmp"))
    address = f"127.0.0.1:{free_port()}"
    config = root / "config.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {
                    "filesystem": {"rootdirectory": str(root / "storage")},
                    "delete": {"enabled": True},
                },
                "http": {"addr": address},
            }
        )
    )
    log = (root / "registry.log").open("wb")
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _http_ok(f"http://{address}/v2/"), _START_TIMEOUT, "docker-registry")
        yield Registry(address, root / "storage")
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def podman_api(local_registry: Registry) -> Iterator[PodmanApi]:
    """`podman system service` on a unix socket in a temporary dir; yields its URL and registry.

    Its registries.conf names the local registry as plain http, which Docker assumes for
    127.0.0.0/8 by itself.
    """
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup-system.sh)")
    root = Path(tempfile.mkdtemp(prefix="zd-pod-", dir="/tmp"))  # short: sun_path is 108 bytes
    sock = root / "podman.sock"
    registries = root / "registries.conf"
    registries.write_text(
        "unqualified-search-registries = []\n"
        f'[[registry]]\nlocation = "{local_registry.address}"\ninsecure = true\n'
    )
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries)}
    log = (root / "service.log").open("wb")
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time", "0", f"unix://{sock}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _ping(sock), _START_TIMEOUT, "podman system service")
        yield PodmanApi(f"unix://{sock}", local_registry)
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _ping(sock: Path) -> bool:
    """Whether the API on `sock` answers GET /_ping with 200."""
    with socket.socket(socket.AF_UNIX) as conn:
        try:
            conn.settimeout(2)
            conn.connect(str(sock))
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            return conn.recv(64).split(b" ", 2)[1:2] == [b"200"]
        except (OSError, IndexError):
            return False


@pytest.fixture(scope="session")
def python_image(podman_api: PodmanApi) -> str:
    """A local image with python3 (bookworm minbase), built once and kept in Podman's storage.

    Its packages are the fastapi preset's, so the rootfs zerodown caches serves both.
    """
    from zerodown.images.base import ensure_base_image
    from zerodown.images.presets import BASE_PACKAGES

    with podman_api.client() as client:
        ensure_base_image(client, PYTHON_IMAGE, packages=BASE_PACKAGES["fastapi"])
    return PYTHON_IMAGE


@dataclass(frozen=True)
class PushedImage:
    """An image in the local registry: `reference` is pinned by its manifest digest."""

    repository: str  # e.g. 127.0.0.1:5000/web
    tag: str
    digest: str  # sha256:... of the manifest, from the registry

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


def build_and_push(
    api: PodmanApi, context: Path, name: str, tag: str, *, dockerfile: str = "Dockerfile"
) -> PushedImage:
    """Build `context` through the Docker API, push it to the local registry, pin its digest."""
    repository = f"{api.registry.address}/{name}"
    archive = context.parent / f"{context.name}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(context, arcname=".")
    with api.client() as client, archive.open("rb") as fileobj:
        for chunk in client.api.build(
            fileobj=fileobj,
            custom_context=True,
            dockerfile=dockerfile,
            tag=f"{repository}:{tag}",
            rm=True,
            decode=True,
        ):
            if "error" in chunk:
                raise RuntimeError(f"build of {name}:{tag} failed: {chunk['error']}")
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise RuntimeError(f"push of {repository}:{tag} failed: {chunk['error']}")
    archive.unlink()
    return PushedImage(repository, tag, api.registry.manifest_digest(name, tag))


def webapp_context(base: str, into: Path) -> Path:
    """A build context: examples/webapp/app.py on `base`, uvicorn (pure Python) beside it."""
    import importlib

    context = into / "webapp-context"
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy(WEBAPP, context / "app.py")
    deps = context / "deps"
    for package in _WEBAPP_PACKAGES:
        module = importlib.import_module(package)
        source = Path(str(module.__file__)).parent
        shutil.copytree(source, deps / package, ignore=shutil.ignore_patterns("__pycache__"))
    (context / "Dockerfile").write_text(
        f"FROM {base}\n"
        "COPY . /app\n"
        "WORKDIR /app\n"
        "ENV PYTHONPATH=/app/deps PYTHONUNBUFFERED=1 HOST=0.0.0.0\n"
        'CMD ["python3", "app.py"]\n'
    )
    return context


@pytest.fixture(scope="session")
def webapp_image(
    podman_api: PodmanApi, python_image: str, tmp_path_factory: pytest.TempPathFactory
) -> PushedImage:
    """examples/webapp as an image in the local registry, pinned by its manifest digest."""
    context = webapp_context(python_image, tmp_path_factory.mktemp("webapp-image"))
    return build_and_push(podman_api, context, "zerodown-test/webapp", "v1")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def webapp_repo(
    root: Path, base: str, versions: tuple[str, ...] = ("v1", "v2", "bad")
) -> dict[str, str]:
    """A git repo at `root`: examples/webapp with a Dockerfile on `base`, one commit per version
    tagged with its name (VERSION holds it; `bad` also has FAIL_HEALTH: /health answers 503).
    Returns each tag's sha."""
    webapp_context(base, root.parent / f"{root.name}-ctx")
    shutil.copytree(root.parent / f"{root.name}-ctx" / "webapp-context", root)
    shutil.rmtree(root.parent / f"{root.name}-ctx")
    _git(root, "init", "-q", "-b", "main")
    shas = {}
    for version in versions:
        (root / "VERSION").write_text(version + "\n")
        if version == "bad":
            (root / "FAIL_HEALTH").write_text("1\n")
        _git(root, "add", "-A")
        _git(root, "commit", "-q", "-m", version)
        _git(root, "tag", version)
        shas[version] = _git(root, "rev-parse", "HEAD")
    return shas
