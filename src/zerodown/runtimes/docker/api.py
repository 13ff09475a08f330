"""`DockerApi`: docker-py's blocking calls run in threads, its errors turned into sentences.

Every call of the Docker runtime goes through `DockerApi.call`, which maps docker-py and
requests exceptions onto zerodown's error tree (`InstanceNotFound`, `RuntimeBackendError`) with
what to do about them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from zerodown.errors import InstanceNotFound, RuntimeBackendError

T = TypeVar("T")


class DockerApi:
    """One docker-py client for `url`, created on first use (docker is imported lazily)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The docker-py `DockerClient` (blocking: call it from a worker thread)."""
        with self._lock:
            if self._client is None:
                try:
                    import docker
                except ImportError as exc:
                    raise RuntimeBackendError(
                        "the docker runtime needs docker-py: pip install 'zerodown[docker]'"
                    ) from exc
                try:
                    self._client = docker.DockerClient(
                        base_url=self.url, timeout=int(self.timeout), version="auto"
                    )
                except Exception as exc:  # docker-py raises DockerException and requests errors
                    raise self._unreachable("connect", exc) from exc
            return self._client

    async def call(self, action: str, fn: Callable[[Any], T], *, instance: str = "") -> T:
        """Run `fn(client)` in a thread; docker errors come back as zerodown errors."""

        def run() -> T:
            client = self.client()
            try:
                return fn(client)
            except Exception as exc:
                raise self.translate(exc, action, instance) from exc

        return await asyncio.to_thread(run)

    def translate(self, exc: BaseException, action: str, instance: str = "") -> Exception:
        """The zerodown error for a docker-py/requests exception raised while doing `action`."""
        if isinstance(exc, InstanceNotFound | RuntimeBackendError):
            return exc
        import docker.errors
        import requests.exceptions

        if isinstance(exc, docker.errors.ImageNotFound):
            return RuntimeBackendError(
                f"cannot {action}: image not found ({_explanation(exc)}); check that it was "
                "pushed to the registry under this digest and that the daemon can reach it"
            )
        if isinstance(exc, docker.errors.NotFound):
            what = f"instance {instance!r}" if instance else "the object"
            return InstanceNotFound(f"no container for {what} ({_explanation(exc)})")
        if isinstance(exc, docker.errors.APIError):
            return RuntimeBackendError(f"the Docker API refused to {action}: {_explanation(exc)}")
        if isinstance(exc, requests.exceptions.ConnectionError | FileNotFoundError):
            return self._unreachable(action, exc)
        if isinstance(exc, requests.exceptions.Timeout):
            return RuntimeBackendError(
                f"the Docker API at {self.url} did not answer within {self.timeout:g} s while "
                f"trying to {action}: raise `runtime.timeout` or check the daemon"
            )
        if isinstance(exc, docker.errors.DockerException):
            return RuntimeBackendError(f"cannot {action} through {self.url}: {exc}")
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))

    def _unreachable(self, action: str, exc: BaseException) -> RuntimeBackendError:
        return RuntimeBackendError(
            f"cannot reach the Docker API at {self.url} to {action} ({_explanation(exc)}): "
            "start Docker (or `podman system service --time 0 unix:///path/to.sock`) and point "
            "`runtime.url` or $DOCKER_HOST at it"
        )

    def close(self) -> None:
        """Close the client's connections (a new call opens them again)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _explanation(exc: Any) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip()
